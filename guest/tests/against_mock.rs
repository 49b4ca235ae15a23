//! A guest written only against `pvabi-guest`, run in-process on the mock with three vCPUs.
//! It uses every v1 service: discovery, console, clock page and timer, event channels between
//! vCPUs with callback upcalls, vCPU start/kick/status/block/stop, the store with a watch
//! firing and a transaction conflict, a multicall, grants, the memory map and balloon, steal
//! time, the crash buffer, HARNESS, and ends with a clean power off.
//!
//! The guest records every failed check and powers off with the number of failures as its exit
//! code; the host side asserts code 0 and inspects the mock's trace, console and reports.
#![allow(unsafe_code)]
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::std_instead_of_core
)]

use core::fmt::Write as _;
use core::sync::atomic::{AtomicBool, Ordering};
use pvabi::harness::Outcome;
use pvabi::memory::MemMapEntry;
use pvabi::power::ShutdownReason;
use pvabi::store::GuestAccess;
use pvabi::vcpu::VcpuState;
use pvabi::{call, Features, ServiceId, Status};
use pvabi_guest::event::Port;
use pvabi_guest::grant::{GrantRef, SharedPage};
use pvabi_guest::harness::Record;
use pvabi_guest::memory::Page;
use pvabi_guest::multicall::Multicall;
use pvabi_guest::shared::*;
use pvabi_guest::upcall::{self, UpcallInfo};
use pvabi_guest::vcpu::{VcpuStack, Wake};
use pvabi_guest::{GuestArena, InProcessFn, InProcessGate, PhysReader, Pvabi, Translate};
use pvabi_mock::{BootCtx, Mock, MockConfig, RunEnd};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

static FAILURES: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// (port, vCPU) of every event the upcall handler saw.
static SEEN: Mutex<Vec<(u32, u32)>> = Mutex::new(Vec::new());
static PV: OnceLock<Pvabi> = OnceLock::new();
static PORTS: OnceLock<(Port, Port)> = OnceLock::new();
static SLEEPER_WOKE: AtomicBool = AtomicBool::new(false);

macro_rules! check {
    ($cond:expr, $($msg:tt)*) => {
        if !$cond {
            FAILURES
                .lock()
                .unwrap()
                .push(format!("{}:{}: {}", file!(), line!(), format!($($msg)*)));
        }
    };
}

fn on_event(port: Port, info: &UpcallInfo) {
    SEEN.lock().unwrap().push((port.0, info.vcpu));
}

fn seen(port: Port, vcpu: u32) -> bool {
    SEEN.lock().unwrap().contains(&(port.0, vcpu))
}

/// Blocks until the handler has seen `port` on `vcpu` (bounded).
fn wait_for(pv: &Pvabi, port: Port, vcpu: u32) -> bool {
    for _ in 0..1000 {
        if seen(port, vcpu) {
            return true;
        }
        let _ = pv.vcpu_block(None);
    }
    seen(port, vcpu)
}

/// vCPU 1: takes upcalls by callback, waits for the event vCPU 0 sends, answers on vCPU 0's
/// port, and returns (which stops it).
extern "C" fn responder(_arg: u64, vcpu: u64) {
    let pv = *PV.get().unwrap();
    let (p0, p1) = *PORTS.get().unwrap();
    check!(vcpu == 1, "responder runs as vCPU {vcpu}");
    check!(pv.vcpu_id() == Ok(1), "BASE.GET_VCPU_ID on vCPU 1");
    check!(
        pv.set_upcall_callback().is_ok(),
        "callback upcalls on vCPU 1"
    );
    check!(wait_for(&pv, p1, 1), "vCPU 1 got the event from vCPU 0");
    check!(pv.event_send(p0).is_ok(), "vCPU 1 answers");
}

/// vCPU 2: polls (no upcalls), blocks until kicked, then returns.
extern "C" fn sleeper(_arg: u64, _vcpu: u64) {
    let pv = *PV.get().unwrap();
    let _ = pv.set_upcall_none();
    let w = pv.vcpu_block(None);
    check!(w == Ok(Wake::Event), "sleeper woke with {w:?}");
    SLEEPER_WOKE.store(true, Ordering::SeqCst);
}

fn guest(boot: BootCtx) {
    // --- discovery (boot info from the mock, in-process gate) ---------------------------
    // SAFETY: the mock's guest RAM is mapped at `host_base` for `ram_len` bytes for as long
    // as the mock lives, which outlives this guest run (the test waits for the end).
    let phys = unsafe {
        PhysReader::new(Translate::Offset {
            host_base: boot.host_base,
            len: boot.ram_len,
        })
    };
    // SAFETY: `pvabi_mock::MockRegs` and `pvabi_guest::InProcessRegs` are both
    // `#[repr(C)] { rax: u64, args: [u64; 6] }` (56 bytes, args at 8, asserted by both
    // crates), so the two function pointer types have the same ABI.
    let gate_fn: InProcessFn = unsafe { core::mem::transmute(boot.gate_fn) };
    // SAFETY: the mock's gate is sound for any registers from its vCPU threads, and checks
    // every guest address against its own mapping.
    let gate = unsafe { InProcessGate::new(gate_fn, boot.gate_ctx) };
    let pv = match Pvabi::discover_in_process(gate, boot.boot_info_gpa, &phys) {
        Ok(pv) => pv,
        Err(e) => {
            check!(false, "discovery: {e}");
            return;
        }
    };
    PV.set(pv).unwrap();
    let info = *pv.info();
    check!(info.vcpu_count == 3, "vcpu_count {}", info.vcpu_count);
    check!(
        info.backend_id == Some(1),
        "backend id {:?}",
        info.backend_id
    );
    check!(info.has_features(Features::HARNESS), "harness offered");
    for s in ServiceId::V1 {
        check!(info.has_service(s), "service {s:?} probed present");
    }
    check!(
        pv.abi_version() == Ok(pvabi::ABI_VERSION),
        "BASE.GET_ABI_VERSION"
    );
    check!(pv.vcpu_count() == Ok(3), "BASE.GET_VCPU_COUNT");
    check!(pv.vcpu_id() == Ok(0), "BASE.GET_VCPU_ID");
    check!(pv.get_features() == Ok(info.features), "BASE.GET_FEATURES");
    check!(pv.backend_version().is_ok(), "BASE.GET_BACKEND_VERSION");
    check!(
        pv.probe_service(ServiceId(0x1234)) == Ok(0),
        "reserved service absent"
    );

    // SAFETY: the scratch area is guest RAM the host never touches on its own; this guest
    // hands it out only through this arena, and the mapping outlives the run.
    let arena: &'static GuestArena = Box::leak(Box::new(unsafe {
        GuestArena::new(
            boot.host_base + boot.scratch_gpa as usize,
            boot.scratch_len as usize,
        )
    }));

    // --- console ----------------------------------------------------------------------
    let msg = arena.alloc_bytes(6, 1).unwrap();
    msg.copy_from_slice(b"hello ");
    check!(pv.console().write(msg) == Ok(6), "CONSOLE.WRITE");
    check!(
        writeln!(pv.console(), "from vCPU {}", 0).is_ok(),
        "fmt::Write"
    );

    // --- clock ------------------------------------------------------------------------
    let clk: &'static ClockPageShared = arena.alloc(ClockPageShared::new()).unwrap();
    let clock = pv.clock_register_page(clk).unwrap();
    let t0 = pv.time_ns().unwrap();
    let tp = clock.now_ns();
    check!(
        tp.is_ok_and(|t| t <= pv.time_ns().unwrap() && t >= t0),
        "clock page {tp:?} vs {t0}"
    );
    check!(pv.wallclock_base_ns().is_ok_and(|w| w > 0), "wall clock");
    let st: &'static StealTimeShared = arena.alloc(StealTimeShared::new()).unwrap();
    check!(pv.register_steal_time(st).is_ok(), "steal time");
    check!(
        pvabi_guest::clock::read_steal_time(st).is_ok(),
        "steal time read"
    );

    // --- events and upcalls -------------------------------------------------------------
    let page: &'static EventPageShared = arena.alloc(EventPageShared::new()).unwrap();
    let ev = pv.event_register_page(page).unwrap();
    upcall::install(&pv, &ev, on_event);
    check!(
        pv.set_upcall_callback().is_ok(),
        "callback upcalls on vCPU 0"
    );

    // --- a timer --------------------------------------------------------------------------
    let tport = pv.event_alloc().unwrap();
    let deadline = pv.time_ns().unwrap() + 5_000_000;
    check!(pv.set_timer(deadline, tport).is_ok(), "CLOCK.SET_TIMER");
    check!(wait_for(&pv, tport, 0), "timer event delivered");
    check!(pv.time_ns().unwrap() >= deadline, "timer not early");
    check!(
        clock.now_ns().is_ok_and(|t| t >= deadline),
        "clock page advanced"
    );

    // --- several vCPUs, events between them --------------------------------------------------
    let p0 = pv.event_alloc().unwrap();
    let p1 = pv.event_alloc().unwrap();
    check!(pv.event_bind_vcpu(p1, 1).is_ok(), "EVENT.BIND_VCPU");
    PORTS.set((p0, p1)).unwrap();
    check!(
        pv.vcpu_status(1) == Ok(VcpuState::STOPPED),
        "vCPU 1 stopped before start"
    );
    let s1: &'static mut VcpuStack<4096> = arena.alloc(VcpuStack::new()).unwrap();
    check!(pv.vcpu_start(1, responder, s1, 0).is_ok(), "VCPU.START 1");
    check!(pv.event_send(p1).is_ok(), "EVENT.SEND to vCPU 1");
    check!(wait_for(&pv, p0, 0), "answer from vCPU 1");
    let s2: &'static mut VcpuStack<4096> = arena.alloc(VcpuStack::new()).unwrap();
    check!(pv.vcpu_start(2, sleeper, s2, 0).is_ok(), "VCPU.START 2");
    let mut blocked = false;
    for _ in 0..100_000 {
        if pv.vcpu_status(2) == Ok(VcpuState::BLOCKED) {
            blocked = true;
            break;
        }
        let _ = pv.vcpu_yield();
    }
    check!(blocked, "vCPU 2 reached BLOCKED");
    check!(pv.vcpu_kick(2).is_ok(), "VCPU.KICK");
    let mut stopped = false;
    for _ in 0..100_000 {
        if pv.vcpu_status(2) == Ok(VcpuState::STOPPED)
            && pv.vcpu_status(1) == Ok(VcpuState::STOPPED)
        {
            stopped = true;
            break;
        }
        let _ = pv.vcpu_yield();
    }
    check!(
        stopped && SLEEPER_WOKE.load(Ordering::SeqCst),
        "vCPUs 1 and 2 stopped after their work"
    );
    // Masking: a masked port stays pending without an upcall, unmask delivers.
    check!(pv.event_mask(p0).is_ok(), "EVENT.MASK");
    SEEN.lock().unwrap().clear();
    check!(pv.event_send(p0).is_ok(), "send to masked port");
    check!(
        !seen(p0, 0) && ev.is_pending(p0),
        "masked: pending, not delivered"
    );
    check!(pv.event_unmask(p0).is_ok(), "EVENT.UNMASK");
    check!(wait_for(&pv, p0, 0), "delivered on unmask");
    check!(pv.event_close(p1).is_ok(), "EVENT.CLOSE");
    check!(pv.event_send(p1) == Err(Status::NOT_FOUND), "closed port");

    // --- store: values, list, watch, transactions ----------------------------------------
    let b = arena.alloc_bytes(512, 8).unwrap();
    let (paths, buf) = b.split_at_mut(256);
    let mut put = |at: usize, s: &[u8]| -> (usize, usize) {
        paths[at..at + s.len()].copy_from_slice(s);
        (at, at + s.len())
    };
    let r_ab = put(0, b"cfg/a");
    let r_cfg = put(8, b"cfg");
    let r_w = put(16, b"watched");
    let r_wa = put(32, b"watched/a");
    let r_x = put(48, b"cfg/x");
    let r_v = put(64, b"v1v2v3");
    let paths: &[u8] = paths;
    let p = |r: (usize, usize)| &paths[r.0..r.1];
    check!(
        pv.store_write(p(r_ab), &p(r_v)[..2], None).is_ok(),
        "STORE.WRITE"
    );
    check!(
        pv.store_read(p(r_ab), buf, None) == Ok(2) && &buf[..2] == b"v1",
        "STORE.READ"
    );
    check!(
        pv.store_read_len(p(r_ab), None) == Ok(0) || pv.store_read_len(p(r_ab), None) == Ok(2),
        "read len"
    );
    check!(
        pv.store_write(p(r_x), &p(r_v)[2..4], None).is_ok(),
        "write cfg/x"
    );
    let names: Vec<Vec<u8>> = pv
        .store_list(p(r_cfg), buf, None)
        .map(|n| n.map(<[u8]>::to_vec).collect())
        .unwrap_or_default();
    check!(
        names == [b"a".to_vec(), b"x".to_vec()],
        "STORE.LIST {names:?}"
    );
    let wport = pv.event_alloc().unwrap();
    let watch = pv.store_watch(p(r_w), wport);
    check!(watch.is_ok(), "STORE.WATCH");
    check!(
        pv.store_write(p(r_wa), &p(r_v)[..2], None).is_ok(),
        "write under the watch"
    );
    check!(wait_for(&pv, wport, 0), "watch fired its port");
    match pv.store_watch_next(buf) {
        Ok(Some(e)) => {
            check!(
                Ok(e.watch) == watch && e.path == b"watched/a",
                "watch event {:?}",
                e.path
            )
        }
        other => check!(false, "WATCH_NEXT: {other:?}"),
    }
    check!(
        pv.store_watch_next(buf).map(|e| e.is_none()) == Ok(true),
        "queue drained"
    );
    check!(pv.store_unwatch(watch.unwrap()).is_ok(), "STORE.UNWATCH");
    // A transaction conflict: read in a transaction, change outside, commit.
    let t = pv.store_txn_start().unwrap();
    check!(pv.store_read(p(r_x), buf, Some(t)).is_ok(), "read in txn");
    check!(
        pv.store_write(p(r_x), &p(r_v)[4..6], None).is_ok(),
        "write outside txn"
    );
    check!(
        pv.store_write(p(r_x), &p(r_v)[..2], Some(t)).is_ok(),
        "write in txn"
    );
    check!(
        pv.store_txn_commit(t) == Err(Status::CONFLICT),
        "commit conflicts"
    );
    check!(
        pv.store_read(p(r_x), buf, None) == Ok(2) && &buf[..2] == b"v3",
        "conflict applied nothing"
    );
    let mut first = true;
    let r = pv.store_transaction(|pv, t| {
        pv.store_read(p(r_x), buf, Some(t))?;
        if first {
            first = false;
            // Someone else changes the node meanwhile: the helper retries.
            pv.store_write(p(r_x), &p(r_v)[..2], None)?;
        }
        pv.store_write(p(r_x), &p(r_v)[2..4], Some(t))
    });
    check!(r.is_ok(), "transaction helper retried to success: {r:?}");
    check!(
        pv.store_read(p(r_x), buf, None) == Ok(2) && &buf[..2] == b"v2",
        "committed"
    );
    let t = pv.store_txn_start().unwrap();
    check!(pv.store_txn_abort(t).is_ok(), "STORE.TXN_ABORT");
    check!(pv.store_remove(p(r_ab), None).is_ok(), "STORE.REMOVE");
    check!(
        pv.store_read(p(r_ab), buf, None) == Err(Status::NOT_FOUND),
        "removed"
    );

    // --- multicall --------------------------------------------------------------------------
    let mc: &mut Multicall<4> = arena.alloc(Multicall::new()).unwrap();
    mc.push(call::BASE_GET_VCPU_COUNT, [0; 6], false).unwrap();
    mc.push(call::EVENT_SEND, [0, 0, 0, 0, 0, 0], false)
        .unwrap();
    mc.push(call::VCPU_BLOCK, [0; 6], false).unwrap();
    mc.push(call::CLOCK_GET_TIME, [0; 6], false).unwrap();
    check!(mc.execute(&pv) == Ok(4), "MULTICALL.EXECUTE");
    check!(mc.result(0) == Some(Ok(3)), "entry 0 {:?}", mc.result(0));
    check!(
        mc.result(1) == Some(Err(Status::INVALID_PARAM)),
        "entry 1 {:?}",
        mc.result(1)
    );
    check!(
        mc.result(2) == Some(Err(Status::INVALID_PARAM)),
        "BLOCK refused in a multicall"
    );
    check!(mc.result(3).is_some_and(|r| r.is_ok()), "entry 3");

    // --- grants -----------------------------------------------------------------------------
    check!(pv.grant_query().is_ok_and(|n| n >= 4), "GRANT.QUERY");
    let table: &'static GrantTableShared<4> = arena.alloc(GrantTableShared::new()).unwrap();
    let grants = pv.grant_setup_table(table).unwrap();
    let shared: &'static SharedPage = arena.alloc(SharedPage::new()).unwrap();
    let gref = grants.grant_shared(shared, 0, false).unwrap();
    check!(
        pv.harness_grant_access(gref, 10, Some(0x5a)) == Ok(0),
        "host writes through the grant"
    );
    check!(
        shared.byte(10) == Some(0x5a),
        "the write landed in the page"
    );
    check!(grants.revoke(gref).is_ok(), "revoke");
    check!(
        pv.harness_grant_access(gref, 10, None).is_err(),
        "revoked grant refused"
    );
    check!(
        pv.harness_grant_access(GrantRef(99), 0, None).is_err(),
        "ref past the table"
    );

    // --- memory map and balloon ------------------------------------------------------------
    let mm = arena.alloc([MemMapEntry::default(); 4]).unwrap();
    let map = pv.memory_map(mm).unwrap();
    check!(map.total == 2 && map.ram().count() == 1, "MEMORY.GET_MAP");
    check!(pv.boot_memory_map().count() == 2, "boot memory map");
    let mut cl = [0u8; 64];
    let n = pv.boot_cmdline(&mut cl);
    check!(
        n == Some(11) && &cl[..11] == b"console=pv1",
        "command line {n:?}"
    );
    let pages: &'static mut [Page; 2] = arena.alloc([Page::new(), Page::new()]).unwrap();
    let ballooned = pv.balloon_release(pages).unwrap();
    check!(pv.balloon_query() == Ok(2), "BALLOON_QUERY after release");
    check!(
        pv.harness_balloon_check(ballooned.gpa()) == Ok(true),
        "host sees it released"
    );
    match pv.balloon_reclaim(ballooned) {
        Ok(p) => check!(
            p.iter().all(|pg| pg.0.iter().all(|b| *b == 0)),
            "reclaimed pages read zero"
        ),
        Err((s, _)) => check!(false, "reclaim {s}"),
    }
    check!(pv.balloon_query() == Ok(0), "BALLOON_QUERY after reclaim");

    // --- crash buffer, console input, harness ---------------------------------------------
    let crash: &'static CrashAreaShared<256> = arena.alloc(CrashAreaShared::new()).unwrap();
    check!(
        pv.register_crash_area(crash).is_ok(),
        "POWER.REGISTER_CRASH_BUFFER"
    );
    let io = arena.alloc_bytes(64, 8).unwrap();
    io[..3].copy_from_slice(b"abc");
    check!(
        pv.harness_console_input(&io[..3]).is_ok(),
        "HARNESS.CONSOLE_INPUT"
    );
    let (_, inbuf) = io.split_at_mut(8);
    check!(
        pv.console().read(inbuf) == Ok(3) && &inbuf[..3] == b"abc",
        "CONSOLE.READ"
    );
    let rb = arena.alloc_bytes(256, 8).unwrap();
    let n = pv.harness_console_readback(rb).unwrap_or(0);
    check!(
        rb[..n].windows(6).any(|w| w == b"hello "),
        "console readback"
    );
    let hw = arena.alloc_bytes(32, 8).unwrap();
    hw[..6].copy_from_slice(b"hostkv");
    hw[8..10].copy_from_slice(b"hv");
    let (hp, hv) = (&hw[..6], &hw[8..10]);
    check!(
        pv.harness_store_host_write(hp, hv, GuestAccess::READ)
            .is_ok(),
        "host write"
    );
    check!(
        pv.store_read(hp, buf, None) == Ok(2),
        "guest reads the host node"
    );
    check!(
        pv.store_write(hp, hv, None) == Err(Status::DENIED),
        "read-only host node"
    );
    check!(
        pv.harness_store_host_read(hp, buf) == Ok(2),
        "HARNESS.STORE_HOST_READ"
    );
    let before = pv.harness_clock_read().unwrap_or(0);
    check!(
        pv.harness_clock_advance(1_000).is_ok(),
        "HARNESS.CLOCK_ADVANCE"
    );
    check!(
        pv.harness_clock_read().unwrap_or(0) >= before + 1_000,
        "virtual clock advanced"
    );
    SEEN.lock().unwrap().clear();
    check!(pv.harness_inject_event(p0).is_ok(), "HARNESS.INJECT_EVENT");
    check!(wait_for(&pv, p0, 0), "injected event delivered");
    let scratch = arena.alloc_bytes(256, 8).unwrap();
    let failures = FAILURES.lock().unwrap().len();
    check!(
        pv.harness_report(
            &Record {
                outcome: if failures == 0 {
                    Outcome::PASSED
                } else {
                    Outcome::FAILED
                },
                clauses: b"BASE-1,EVT-7",
                name: b"against_mock",
                detail: b"every v1 service",
            },
            scratch,
        )
        .is_ok(),
        "HARNESS.REPORT"
    );
    check!(pv.clock_unregister_page().is_ok(), "CLOCK.UNREGISTER_PAGE");

    // --- clean power off -------------------------------------------------------------------
    let code = FAILURES.lock().unwrap().len() as u64;
    let s = pv.shutdown(ShutdownReason::POWEROFF, code);
    check!(false, "POWER.SHUTDOWN returned {s}");
}

#[test]
fn a_guest_uses_every_v1_service_on_the_mock() {
    let mock = Mock::new(MockConfig {
        vcpus: 3,
        harness: true,
        cmdline: b"console=pv1".to_vec(),
        ..MockConfig::default()
    })
    .unwrap();
    // In-process guest functions must be registered with the mock before they are used.
    mock.register_fn(upcall::in_process_callback);
    mock.register_fn(responder);
    mock.register_fn(sleeper);
    mock.start(guest);
    let end = mock.wait_timeout(Duration::from_secs(120));
    let failures = FAILURES.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "guest checks failed:\n{}",
        failures.join("\n")
    );
    assert_eq!(
        end,
        Some(RunEnd::Shutdown {
            reason: ShutdownReason::POWEROFF,
            code: 0
        })
    );
    let console = mock.vm().console_history();
    assert!(
        console.windows(17).any(|w| w == b"hello from vCPU 0"),
        "{}",
        String::from_utf8_lossy(&console)
    );
    let trace = mock.trace();
    for svc in ServiceId::V1.iter().chain([&ServiceId::HARNESS]) {
        assert!(
            trace.iter().any(|t| (t.call >> 16) as u16 == svc.0),
            "no call of {svc:?} in the trace"
        );
    }
    assert!(trace.iter().any(|t| t.vcpu == 1) && trace.iter().any(|t| t.vcpu == 2));
    let reports = mock.vm().take_reports();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].name, "against_mock");
}
