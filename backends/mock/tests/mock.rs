//! The mock as a whole: guests written against the register convention, running on vCPU
//! threads through the in-process gate.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pvabi::call::*;
use pvabi::event::EventPage;
use pvabi::power::ShutdownReason;
use pvabi::{BootInfo, CallId, GateKind, Regs, Ret, Status};
use pvabi_mock::{BootCtx, Mock, MockConfig, MockRegs, RunEnd};
use zerocopy::FromBytes;

/// Generous bound so a broken mock fails the test instead of hanging it.
const LIMIT: Duration = Duration::from_secs(60);

const EV: u64 = 0x20_0000; // event page inside the scratch area
const BUF: u64 = 0x21_0000;

/// Guest-side helpers: a failing call reports a crash with the line number.
#[derive(Clone, Copy)]
struct G(BootCtx);

impl G {
    fn c(&self, id: CallId, args: &[u64]) -> Ret {
        let mut a = [0u64; 6];
        a.iter_mut().zip(args).for_each(|(d, s)| *d = *s);
        self.0.call(Regs::new(id, a))
    }
    #[track_caller]
    fn ok(&self, id: CallId, args: &[u64]) -> u64 {
        let r = self.c(id, args);
        if r.status != Status::SUCCESS {
            self.fail(&format!("{id:?} {args:x?} -> {:?}", r.status));
        }
        r.value
    }
    #[track_caller]
    fn expect(&self, cond: bool, what: &str) {
        if !cond {
            self.fail(what);
        }
    }
    #[track_caller]
    fn fail(&self, what: &str) -> ! {
        let line = std::panic::Location::caller().line() as u64;
        let msg = format!("FAIL line {line}: {what}\n");
        self.0.write(BUF + 0x8000, msg.as_bytes());
        self.c(CONSOLE_WRITE, &[BUF + 0x8000, msg.len() as u64]);
        self.c(POWER_SHUTDOWN, &[ShutdownReason::CRASH.0 as u64, line]);
        unreachable!("shutdown returned")
    }
    fn u64_at(&self, gpa: u64) -> u64 {
        u64::from_le_bytes(self.0.read(gpa, 8).try_into().expect("8 bytes"))
    }
    fn u32_at(&self, gpa: u64) -> u32 {
        u32::from_le_bytes(self.0.read(gpa, 4).try_into().expect("4 bytes"))
    }
    fn put_u32(&self, gpa: u64, v: u32) {
        self.0.write(gpa, &v.to_le_bytes());
    }
    fn info(&self, v: u32) -> u64 {
        EV + EventPage::vcpu_offset(v) as u64
    }
    fn poweroff(&self) -> ! {
        self.c(POWER_SHUTDOWN, &[0, 0]);
        unreachable!("shutdown returned")
    }
}

fn run(mock: &Mock, f: impl FnOnce(G) + Send + 'static) {
    mock.start(move |b| f(G(b)));
    let end = mock.wait_timeout(LIMIT);
    let out = String::from_utf8_lossy(&mock.vm().console_history()).into_owned();
    assert_eq!(
        end,
        Some(RunEnd::Shutdown {
            reason: ShutdownReason::POWEROFF,
            code: 0
        }),
        "console:\n{out}"
    );
}

fn mock(vcpus: u32) -> Mock {
    Mock::new(MockConfig {
        vcpus,
        harness: true,
        ..MockConfig::default()
    })
    .expect("mock")
}

#[test]
fn boot_info_describes_the_mock() {
    let m = mock(2);
    let b = m.boot_ctx(0);
    let mut raw = vec![0u8; 128];
    m.ram().read_into(b.boot_info_gpa, &mut raw).expect("read");
    let bi = BootInfo::read_from_bytes(&raw).expect("layout");
    assert_eq!(bi.magic, BootInfo::MAGIC);
    assert_eq!(bi.gate_kind, GateKind::INPROCESS.0);
    assert_eq!(bi.vcpu_count, 2);
    assert_eq!(bi.backend_id, pvabi::base::backend_id::MOCK);
    assert_eq!(bi.mem_map_entries, 2);
    assert_eq!(bi.mem_size, 16 << 20);
    assert_eq!(bi.features, m.vm().features().bits());
    assert_ne!(b.host_base, 0);
    assert_eq!(b.host_base, m.ram().host_address(0).expect("base") as usize);
}

#[test]
fn gate_refuses_foreign_threads_and_tolerates_null() {
    let m = mock(1);
    // Not a vCPU thread of this mock.
    assert_eq!(
        m.boot_ctx(0).call(Regs::new(BASE_GET_ABI_VERSION, [0; 6])),
        Ret::err(Status::FAILED)
    );
    let mut r = MockRegs {
        rax: BASE_GET_VCPU_COUNT.0 as u64,
        args: [0; 6],
    };
    // SAFETY: `r` is a valid, exclusive MockRegs for the duration of the call.
    unsafe { (m.gate_fn())(m.gate_ctx(), &mut r) };
    assert_eq!(Status::from_reg(r.rax), Status::FAILED);
    // SAFETY: null is documented as ignored.
    unsafe { (m.gate_fn())(m.gate_ctx(), std::ptr::null_mut()) };
    // call_as makes the calling thread a vCPU for one call.
    assert_eq!(
        m.call_as(0, Regs::new(BASE_GET_VCPU_COUNT, [0; 6])),
        Ret::ok(1)
    );
    assert_eq!(
        m.call_as(0, Regs::new(POWER_SHUTDOWN, [0; 6])),
        Ret::err(Status::FAILED)
    );
}

#[test]
fn vcpus_events_between_them_and_stop() {
    let m = Arc::new(mock(3));
    let woke = Arc::new(AtomicU64::new(0));
    let w2 = Arc::clone(&woke);
    let m2 = Arc::clone(&m);
    let entry = m.register_closure(move |port, vcpu| {
        let g = G(m2.boot_ctx(vcpu as u32));
        // Wait for the event on our port, then report and stop.
        while g.c(VCPU_BLOCK, &[0]).status != Status::SUCCESS {}
        g.expect(g.u64_at(EV) & (1 << port) != 0, "pending bit set");
        w2.fetch_add(1 << (8 * vcpu), Ordering::SeqCst);
        g.c(VCPU_STOP, &[]);
    });
    run(&m, move |g| {
        g.ok(EVENT_REGISTER_PAGE, &[EV]);
        let mut ports = [0u64; 3];
        for v in 1..3u64 {
            let p = g.ok(EVENT_ALLOC, &[]);
            g.ok(EVENT_BIND_VCPU, &[p, v]);
            g.ok(VCPU_START, &[v, entry, 0x1000, p]);
            ports[v as usize] = p;
        }
        g.expect(
            g.c(VCPU_START, &[1, entry, 0x1000, 0]).status == Status::ALREADY,
            "ALREADY",
        );
        // Wait until both are blocked, then wake them.
        for v in 1..3u64 {
            while g.ok(VCPU_GET_STATUS, &[v]) != 3 {
                g.ok(VCPU_YIELD, &[]);
            }
            g.ok(EVENT_SEND, &[ports[v as usize]]);
        }
        for v in 1..3u64 {
            while g.ok(VCPU_GET_STATUS, &[v]) != 0 {
                g.ok(VCPU_YIELD, &[]);
            }
        }
        g.expect(
            g.c(VCPU_STOP, &[]).status == Status::BAD_STATE,
            "last vCPU cannot stop",
        );
        g.poweroff();
    });
    assert_eq!(woke.load(Ordering::SeqCst), (1 << 8) | (1 << 16));
    let trace = m.trace();
    assert!(trace
        .iter()
        .any(|t| t.vcpu == 2 && t.call == VCPU_BLOCK.0 as u64));
    assert!(trace.windows(2).all(|w| w[0].seq < w[1].seq));
}

#[test]
fn start_with_an_unregistered_entry_is_refused() {
    let m = mock(2);
    run(&m, |g| {
        let r = g.c(VCPU_START, &[1, 0x4000_0000, 0x1000, 0]);
        g.expect(r.status == Status::INVALID_PARAM, "unregistered entry");
        g.expect(g.ok(VCPU_GET_STATUS, &[1]) == 0, "still STOPPED");
        g.poweroff();
    });
}

#[test]
fn timer_and_block_deadline_with_virtual_time() {
    let m = mock(1);
    let start = m.now_ns();
    run(&m, move |g| {
        g.ok(EVENT_REGISTER_PAGE, &[EV]);
        let p = g.ok(EVENT_ALLOC, &[]);
        let now = g.ok(CLOCK_GET_TIME, &[]);
        g.ok(CLOCK_REGISTER_PAGE, &[BUF]);
        g.expect(g.u64_at(BUF + 16) == now, "clock page system_time");
        g.expect(
            g.u32_at(BUF + 24) == 0,
            "mul 0: system_time is authoritative",
        );
        // Timer in 1 ms; block without deadline: the idle mock jumps to the deadline.
        g.ok(CLOCK_SET_TIMER, &[now + 1_000_000, p]);
        g.ok(VCPU_BLOCK, &[0]);
        g.expect(g.u64_at(EV) & (1 << p) != 0, "timer raised the port");
        let t = g.ok(CLOCK_GET_TIME, &[]);
        g.expect(t == now + 1_000_000, "time jumped exactly to the deadline");
        g.expect(g.u64_at(BUF + 16) == t, "clock page refreshed");
        // A block deadline with nothing pending: TIMED_OUT at the deadline.
        g.put_u32(g.info(0) + 8, 0);
        let r = g.c(VCPU_BLOCK, &[t + 500]);
        g.expect(r.status == Status::TIMED_OUT, "TIMED_OUT");
        g.expect(g.ok(CLOCK_GET_TIME, &[]) == t + 500, "deadline reached");
        // HARNESS.CLOCK_ADVANCE moves the virtual clock.
        g.ok(HARNESS_CLOCK_ADVANCE, &[7]);
        g.expect(g.ok(HARNESS_CLOCK_READ, &[]) == t + 507, "advanced");
        g.poweroff();
    });
    assert_eq!(m.now_ns(), start + 1_000_000 + 507);
}

#[test]
fn host_advances_time_for_a_guest_waiting_on_the_host() {
    let m = Arc::new(
        Mock::new(MockConfig {
            auto_advance: false,
            ..MockConfig::default()
        })
        .expect("mock"),
    );
    let m2 = Arc::clone(&m);
    m.start(move |b| {
        let g = G(b);
        let now = g.ok(CLOCK_GET_TIME, &[]);
        let r = g.c(VCPU_BLOCK, &[now + 10_000]);
        g.expect(r.status == Status::TIMED_OUT, "timed out");
        g.expect(
            g.ok(CLOCK_GET_TIME, &[]) >= now + 10_000,
            "not before the deadline",
        );
        g.poweroff();
    });
    while m2.vm().vcpu_state(0) != Some(pvabi::vcpu::VcpuState::BLOCKED) {
        std::thread::yield_now();
    }
    m.advance(9_999);
    assert_eq!(m.ended(), None, "still blocked before the deadline");
    assert_eq!(m.vm().vcpu_state(0), Some(pvabi::vcpu::VcpuState::BLOCKED));
    m.advance(1);
    assert_eq!(
        m.wait_timeout(LIMIT),
        Some(RunEnd::Shutdown {
            reason: ShutdownReason::POWEROFF,
            code: 0
        })
    );
}

#[test]
fn watch_fires_on_a_host_write_and_transaction_conflicts() {
    let m = Arc::new(mock(1));
    let m2 = Arc::clone(&m);
    let ready = Arc::new(AtomicBool::new(false));
    let r2 = Arc::clone(&ready);
    m.start(move |b| {
        let g = G(b);
        g.ok(EVENT_REGISTER_PAGE, &[EV]);
        let p = g.ok(EVENT_ALLOC, &[]);
        g.0.write(BUF, b"backend/state");
        let w = g.ok(STORE_WATCH, &[BUF, 7, p]);
        r2.store(true, Ordering::SeqCst);
        g.ok(VCPU_BLOCK, &[0]);
        let n = g.ok(STORE_WATCH_NEXT, &[BUF + 0x100, 64]);
        g.expect(n == 16 + 13, "event size");
        g.expect(g.u32_at(BUF + 0x100) == w as u32, "watch id");
        g.expect(g.0.read(BUF + 0x110, 13) == b"backend/state", "path");
        // A transaction that read the node conflicts with a host write.
        let t = g.ok(STORE_TXN_START, &[]);
        g.ok(STORE_READ, &[BUF, 13, BUF + 0x200, 64, t]);
        g.0.write(BUF + 0x300, b"me");
        g.ok(STORE_WRITE, &[BUF, 7, BUF + 0x300, 2, t]);
        g.0.write(BUF + 0x400, b"4");
        g.ok(HARNESS_STORE_HOST_WRITE, &[BUF, 13, BUF + 0x400, 1, 3]);
        g.expect(
            g.c(STORE_TXN_COMMIT, &[t]).status == Status::CONFLICT,
            "CONFLICT",
        );
        g.poweroff();
    });
    while !ready.load(Ordering::SeqCst)
        || m2.vm().vcpu_state(0) != Some(pvabi::vcpu::VcpuState::BLOCKED)
    {
        std::thread::yield_now();
    }
    m.vm()
        .store_write("backend/state", b"3", pvabi::store::GuestAccess::READ_WRITE)
        .expect("host");
    assert_eq!(
        m.wait_timeout(LIMIT),
        Some(RunEnd::Shutdown {
            reason: ShutdownReason::POWEROFF,
            code: 0
        }),
        "{}",
        String::from_utf8_lossy(&m.vm().console_history())
    );
    assert_eq!(m.vm().store_read("backend/state").expect("read"), b"4");
    assert!(m.vm().store_read("backend").is_ok());
}

#[test]
fn multicall_from_a_guest() {
    let m = mock(1);
    run(&m, |g| {
        g.0.write(BUF, b"ab");
        let mut arr = Vec::new();
        for (id, a0, a1) in [
            (CONSOLE_WRITE, BUF, 2u64),
            (BASE_GET_VCPU_ID, 0, 0),
            (VCPU_STOP, 0, 0),
        ] {
            arr.extend_from_slice(&id.0.to_le_bytes());
            arr.extend_from_slice(&0u32.to_le_bytes());
            for a in [a0, a1, 0, 0, 0, 0] {
                arr.extend_from_slice(&a.to_le_bytes());
            }
            arr.extend_from_slice(&[0; 16]);
        }
        g.0.write(BUF + 0x100, &arr);
        g.expect(g.ok(MULTICALL_EXECUTE, &[BUF + 0x100, 3]) == 3, "three ran");
        g.expect(g.u64_at(BUF + 0x100 + 64) == 2, "first value");
        g.expect(
            g.u64_at(BUF + 0x100 + 2 * 72 + 56) as i64 == -2,
            "STOP refused",
        );
        g.poweroff();
    });
    assert_eq!(m.vm().take_console_output(), b"ab");
    // Nested calls are traced too.
    assert!(m.trace().iter().any(|t| t.call == CONSOLE_WRITE.0 as u64));
}

#[test]
fn fault_injection_calls_and_events() {
    let m = mock(1);
    m.fail_call(CONSOLE_WRITE_BYTE, Status::BUSY, Some(2));
    m.drop_events(None, Some(1));
    m.delay_events(None, 5_000, Some(1));
    run(&m, |g| {
        g.expect(
            g.c(CONSOLE_WRITE_BYTE, &[b'x' as u64]).status == Status::BUSY,
            "busy 1",
        );
        g.expect(
            g.c(CONSOLE_WRITE_BYTE, &[b'x' as u64]).status == Status::BUSY,
            "busy 2",
        );
        g.ok(CONSOLE_WRITE_BYTE, &[b'y' as u64]);
        g.ok(EVENT_REGISTER_PAGE, &[EV]);
        let p = g.ok(EVENT_ALLOC, &[]);
        g.ok(EVENT_SEND, &[p]);
        g.expect(g.u64_at(EV) == 0, "first event dropped");
        let now = g.ok(CLOCK_GET_TIME, &[]);
        g.ok(EVENT_SEND, &[p]);
        g.expect(g.u64_at(EV) == 0, "second event delayed");
        g.ok(VCPU_BLOCK, &[0]);
        g.expect(g.u64_at(EV) == 1 << p, "delivered after the delay");
        g.expect(g.ok(CLOCK_GET_TIME, &[]) == now + 5_000, "at the delay");
        g.poweroff();
    });
    assert_eq!(m.vm().take_console_output(), b"y");
    let injected: Vec<_> = m.trace().into_iter().filter(|t| t.injected).collect();
    assert_eq!(injected.len(), 2);
    assert!(injected
        .iter()
        .all(|t| t.call == CONSOLE_WRITE_BYTE.0 as u64));
}

#[test]
fn callback_and_vector_upcalls() {
    let m = Arc::new(mock(1));
    let seen = Arc::new(AtomicU64::new(0));
    let s2 = Arc::clone(&seen);
    let m2 = Arc::clone(&m);
    let cb = m.register_closure(move |frame_gpa, vcpu| {
        let g = G(m2.boot_ctx(vcpu as u32));
        g.expect(frame_gpa == g.info(0) + 64, "frame GPA");
        g.expect(
            g.u32_at(g.info(0) + 12) == 1,
            "upcall_mask set during the callback",
        );
        // Acknowledge like a guest handler, then return through UPCALL_RETURN.
        g.put_u32(g.info(0) + 8, 0);
        s2.fetch_add(1, Ordering::SeqCst);
        g.ok(VCPU_UPCALL_RETURN, &[]);
    });
    let s3 = Arc::clone(&seen);
    let m3 = Arc::clone(&m);
    m.on_vector(move |vector, vcpu| {
        let g = G(m3.boot_ctx(vcpu));
        g.put_u32(g.info(0) + 8, 0);
        s3.fetch_add(1000 + vector as u64, Ordering::SeqCst);
        // A call from the handler does not nest another vector upcall.
        g.ok(BASE_GET_VCPU_ID, &[]);
    });
    let s4 = Arc::clone(&seen);
    run(&m, move |g| {
        g.ok(EVENT_REGISTER_PAGE, &[EV]);
        let p = g.ok(EVENT_ALLOC, &[]);
        g.ok(EVENT_SET_UPCALL, &[2, cb]);
        g.ok(EVENT_SEND, &[p]); // the callback runs before this call returns
        g.expect(s4.load(Ordering::SeqCst) == 1, "callback ran once");
        g.expect(g.u32_at(g.info(0) + 12) == 0, "mask cleared after return");
        g.expect(
            g.c(VCPU_UPCALL_RETURN, &[]).status == Status::BAD_STATE,
            "not in a callback",
        );
        g.ok(EVENT_SET_UPCALL, &[1, 0x40]);
        g.0.write(EV, &0u64.to_le_bytes());
        g.ok(EVENT_SEND, &[p]);
        g.expect(
            s4.load(Ordering::SeqCst) == 1 + 1000 + 0x40,
            "vector handler ran once",
        );
        g.poweroff();
    });
}

#[test]
fn broken_host_variants_through_quirks() {
    use pvabi_host::Quirks;
    let m = Mock::new(MockConfig {
        faults: pvabi_mock::Faults {
            quirks: Quirks::STORE_IGNORES_PERMISSIONS | Quirks::CONSOLE_SHORT_COUNT,
            ..Default::default()
        },
        ..MockConfig::default()
    })
    .expect("mock");
    m.vm()
        .store_write("secret", b"s", pvabi::store::GuestAccess::NONE)
        .expect("host");
    run(&m, |g| {
        g.0.write(BUF, b"secret");
        g.expect(
            g.ok(STORE_READ, &[BUF, 6, BUF + 0x100, 8, 0]) == 1,
            "broken store reads NONE",
        );
        g.expect(g.ok(CONSOLE_WRITE, &[BUF, 6]) == 5, "broken console count");
        g.poweroff();
    });
}

#[test]
fn guest_panic_and_crash_are_reported() {
    let m = mock(1);
    m.start(|_| panic!("guest bug"));
    assert_eq!(
        m.wait_timeout(LIMIT),
        Some(RunEnd::GuestPanicked { vcpu: 0 })
    );

    let m = mock(1);
    m.start(|b| {
        let g = G(b);
        g.ok(POWER_REGISTER_CRASH_BUFFER, &[BUF, 64]);
        let mut hdr = Vec::new();
        hdr.extend_from_slice(b"PVCR");
        hdr.extend_from_slice(&4u32.to_le_bytes());
        hdr.extend_from_slice(&[0; 24]);
        hdr.extend_from_slice(b"oops");
        g.0.write(BUF, &hdr);
        g.c(POWER_SHUTDOWN, &[2, 99]);
    });
    assert_eq!(
        m.wait_timeout(LIMIT),
        Some(RunEnd::Shutdown {
            reason: ShutdownReason::CRASH,
            code: 99
        })
    );
    let s = m.vm().shutdown_state().expect("state");
    assert_eq!(s.crash.expect("report").message, "oops");
}

#[test]
fn no_call_returns_after_shutdown() {
    let m = Arc::new(mock(2));
    let spins = Arc::new(AtomicU64::new(0));
    let sp = Arc::clone(&spins);
    let m2 = Arc::clone(&m);
    let entry = m.register_closure(move |_, vcpu| {
        let g = G(m2.boot_ctx(vcpu as u32));
        loop {
            g.c(BASE_GET_VCPU_ID, &[]);
            sp.fetch_add(1, Ordering::SeqCst);
        }
    });
    let sp2 = Arc::clone(&spins);
    run(&m, move |g| {
        g.ok(VCPU_START, &[1, entry, 0, 0]);
        while sp2.load(Ordering::SeqCst) < 10 {
            g.ok(VCPU_YIELD, &[]);
        }
        g.poweroff();
    });
    let before = spins.load(Ordering::SeqCst);
    for _ in 0..1000 {
        std::thread::yield_now();
    }
    // At most the call in flight at the shutdown completes.
    assert!(spins.load(Ordering::SeqCst) <= before + 1);
}

#[test]
fn virtual_time_moves_on_when_the_last_runner_stops() {
    let m = Arc::new(mock(2));
    let m2 = Arc::clone(&m);
    // vCPU 1 just stops; the boot vCPU waits for a deadline meanwhile.
    let entry = m.register_closure(move |_, vcpu| {
        let g = G(m2.boot_ctx(vcpu as u32));
        while g.ok(VCPU_GET_STATUS, &[0]) != 3 {
            g.ok(VCPU_YIELD, &[]);
        }
        g.c(VCPU_STOP, &[]);
    });
    run(&m, move |g| {
        g.ok(VCPU_START, &[1, entry, 0, 0]);
        let now = g.ok(CLOCK_GET_TIME, &[]);
        let r = g.c(VCPU_BLOCK, &[now + 1_000]);
        g.expect(
            r.status == Status::TIMED_OUT,
            "timed out once vCPU 1 stopped",
        );
        g.poweroff();
    });
}
