//! The service wrappers against a fake in-process host that records calls and gives canned,
//! sometimes hostile, answers. Each test checks what reaches the host (call ids, GPAs,
//! lengths) and how the shim decodes what comes back; none may panic inside the shim.
#![allow(unsafe_code)]
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::std_instead_of_core
)]

mod common;

use common::*;
use core::fmt::Write as _;
use core::sync::atomic::Ordering;
use pvabi::call;
#[cfg(feature = "harness")]
use pvabi::harness::{Outcome, ReportHeader};
use pvabi::memory::MemMapEntry;
use pvabi::power::{CrashHeader, ShutdownReason};
use pvabi::store::WatchEvent;
use pvabi::vcpu::VcpuState;
use pvabi::{CallId, Status};
use pvabi_guest::event::{EventChannels, Port};
use pvabi_guest::grant::SharedPage;
#[cfg(feature = "harness")]
use pvabi_guest::harness::{encode_record, Record};
use pvabi_guest::memory::Page;
use pvabi_guest::multicall::Multicall;
use pvabi_guest::shared::*;
use pvabi_guest::vcpu::{VcpuStack, Wake};
use std::sync::atomic::AtomicU32;
use zerocopy::{FromBytes, IntoBytes};

fn ids(f: &Fake) -> Vec<CallId> {
    f.calls().iter().map(|c| CallId(c.0)).collect()
}

fn gpa_of<T: ?Sized>(f: &Fake, r: &T) -> u64 {
    (r as *const T as *const u8 as usize - f.base) as u64
}

#[test]
fn buffers_outside_guest_ram_are_refused_without_a_call() {
    let (pv, f, _) = setup(Box::new(|_, _, _| ok(0)));
    let outside = [0u8; 16];
    let mut out = [0u8; 16];
    assert_eq!(pv.console().write(&outside), Err(Status::INVALID_ADDRESS));
    assert_eq!(pv.console().read(&mut out), Err(Status::INVALID_ADDRESS));
    assert_eq!(
        pv.store_write(b"a", &outside, None),
        Err(Status::INVALID_ADDRESS)
    );
    assert_eq!(
        pv.store_read(b"a", &mut out, None),
        Err(Status::INVALID_ADDRESS)
    );
    let mut map = [MemMapEntry::default(); 2];
    assert_eq!(
        pv.memory_map(&mut map).map(|m| m.total),
        Err(Status::INVALID_ADDRESS)
    );
    static PAGE: EventPageShared = EventPageShared::new();
    assert_eq!(
        pv.event_register_page(&PAGE).map(drop),
        Err(Status::INVALID_ADDRESS)
    );
    static CLK: ClockPageShared = ClockPageShared::new();
    assert_eq!(
        pv.clock_register_page(&CLK).map(drop),
        Err(Status::INVALID_ADDRESS)
    );
    let mut mc: Multicall<2> = Multicall::new();
    mc.push(call::VCPU_YIELD, [0; 6], false).unwrap();
    assert_eq!(mc.execute(&pv), Err(Status::INVALID_ADDRESS));
    assert!(f.calls().is_empty(), "{:?}", f.calls());
}

#[test]
fn console_writes_chunks_and_falls_back_to_write_byte() {
    let (pv, f, arena) = setup(Box::new(|_, id, args| match CallId(id) {
        // Accept at most 1000 bytes per write (a partial write the shim must continue).
        call::CONSOLE_WRITE => ok(args[1].min(1000)),
        call::CONSOLE_WRITE_BYTE => ok(1),
        _ => None,
    }));
    let buf = arena.alloc_bytes(5000, 1).unwrap();
    buf.fill(b'x');
    pv.console().write_all(buf).unwrap();
    let lens: Vec<u64> = f.calls().iter().map(|c| c.1[1]).collect();
    assert_eq!(lens, [4096, 4000, 3000, 2000, 1000]);
    assert!(f.calls().iter().all(|c| c.0 == call::CONSOLE_WRITE.0));
    assert_eq!(f.calls()[0].1[0], gpa_of(f, &buf[0]));
    // A string outside guest RAM goes byte by byte.
    f.clear();
    write!(pv.console(), "hi{}", 7).unwrap();
    assert_eq!(
        f.calls(),
        vec![
            (call::CONSOLE_WRITE_BYTE.0, [b'h' as u64, 0, 0, 0, 0, 0]),
            (call::CONSOLE_WRITE_BYTE.0, [b'i' as u64, 0, 0, 0, 0, 0]),
            (call::CONSOLE_WRITE_BYTE.0, [b'7' as u64, 0, 0, 0, 0, 0]),
        ]
    );
    // ... or through a bounce buffer in guest RAM.
    f.clear();
    let bounce = arena.alloc_bytes(64, 1).unwrap();
    let bounce_gpa = gpa_of(f, &bounce[0]);
    let mut c = pv.console().with_bounce(bounce);
    write!(c, "hello").unwrap();
    assert_eq!(ids(f), [call::CONSOLE_WRITE]);
    assert_eq!(f.calls()[0].1[..2], [bounce_gpa, 5]);
    assert_eq!(f.read(bounce_gpa, 5), b"hello");
}

#[test]
fn console_hostile_counts() {
    // More bytes "written" than offered: FAILED; nothing ever accepted: BUSY (no endless loop).
    let (pv, _, arena) = setup(Box::new(|_, id, args| match CallId(id) {
        call::CONSOLE_WRITE if args[1] == 3 => ok(4),
        call::CONSOLE_WRITE => ok(0),
        call::CONSOLE_READ => ok(args[1] + 1),
        _ => None,
    }));
    let b = arena.alloc_bytes(8, 1).unwrap();
    assert_eq!(pv.console().write(&b[..3]), Err(Status::FAILED));
    assert_eq!(pv.console().write_all(&b[..5]), Err(Status::BUSY));
    assert_eq!(pv.console().read(b), Err(Status::FAILED));
}

#[test]
fn malformed_and_unknown_statuses_are_errors() {
    let (pv, _, _) = setup(Box::new(|_, id, _| match CallId(id) {
        call::VCPU_YIELD => Some((1 << 40, 0)),
        call::VCPU_KICK => Some((5, 0)),
        call::BASE_GET_VCPU_ID => ok(9),
        call::BASE_GET_VCPU_COUNT => ok(0),
        call::BASE_PROBE_SERVICE => ok(0x1_0000),
        call::VCPU_GET_STATUS => ok(77),
        _ => None,
    }));
    assert_eq!(pv.vcpu_yield(), Err(Status::FAILED));
    assert_eq!(pv.vcpu_kick(1), Err(Status(5)));
    // vCPU id not below the count (4), count 0, probe count above 16 bits.
    assert_eq!(pv.vcpu_id(), Err(Status::FAILED));
    assert_eq!(pv.vcpu_count(), Err(Status::FAILED));
    assert_eq!(
        pv.probe_service(pvabi::ServiceId::CONSOLE),
        Err(Status::FAILED)
    );
    // Unknown states pass through as the open type they are.
    assert_eq!(pv.vcpu_status(1), Ok(VcpuState(77)));
}

#[test]
fn events_alloc_range_and_port_checks() {
    let answers = std::sync::Mutex::new(vec![0u64, 1024, 1 << 40, 5]);
    let (pv, f, _) = setup(Box::new(move |_, id, _| match CallId(id) {
        call::EVENT_ALLOC => ok(answers.lock().unwrap().remove(0)),
        _ => ok(0),
    }));
    assert_eq!(pv.event_alloc(), Err(Status::FAILED));
    assert_eq!(pv.event_alloc(), Err(Status::FAILED));
    assert_eq!(pv.event_alloc(), Err(Status::FAILED));
    assert_eq!(pv.event_alloc(), Ok(Port(5)));
    f.clear();
    for p in [Port(0), Port(1024), Port(u32::MAX)] {
        assert_eq!(pv.event_send(p), Err(Status::INVALID_PARAM));
        assert_eq!(pv.event_mask(p), Err(Status::INVALID_PARAM));
        assert_eq!(pv.event_bind_vcpu(p, 0), Err(Status::INVALID_PARAM));
    }
    assert_eq!(pv.set_upcall_vector(31), Err(Status::INVALID_PARAM));
    assert_eq!(pv.set_timer(0, Port(3)), Err(Status::INVALID_PARAM));
    assert!(f.calls().is_empty());
    pv.event_send(Port(5)).unwrap();
    pv.event_bind_vcpu(Port(5), 3).unwrap();
    pv.set_upcall_vector(48).unwrap();
    pv.set_timer(99, Port(5)).unwrap();
    pv.cancel_timer(Port(5)).unwrap();
    assert_eq!(
        f.calls(),
        vec![
            (call::EVENT_SEND.0, [5, 0, 0, 0, 0, 0]),
            (call::EVENT_BIND_VCPU.0, [5, 3, 0, 0, 0, 0]),
            (call::EVENT_SET_UPCALL.0, [1, 48, 0, 0, 0, 0]),
            (call::CLOCK_SET_TIMER.0, [99, 5, 0, 0, 0, 0]),
            (call::CLOCK_SET_TIMER.0, [0, 5, 0, 0, 0, 0]),
        ]
    );
}

#[test]
fn event_scan_clears_and_dispatches_unmasked_ports() {
    let (pv, f, arena) = setup(Box::new(|_, _, _| ok(0)));
    let page: &'static EventPageShared = arena.alloc(EventPageShared::new()).unwrap();
    let ev = pv.event_register_page(page).unwrap();
    assert_eq!(
        f.calls()[0],
        (
            call::EVENT_REGISTER_PAGE.0,
            [gpa_of(f, page), 0, 0, 0, 0, 0]
        )
    );
    assert_eq!(gpa_of(f, page) % 4096, 0);
    // Host side: ports 3, 64 and 700 pending; 64 masked; port 0 set by a buggy host.
    page.pending[0].store((1 << 3) | 1, Ordering::SeqCst);
    page.pending[1].store(1, Ordering::SeqCst);
    page.pending[10].store(1 << (700 % 64), Ordering::SeqCst);
    page.mask[1].store(1, Ordering::SeqCst);
    page.vcpu[2]
        .selector
        .store((1 << 0) | (1 << 1) | (1 << 10), Ordering::SeqCst);
    page.vcpu[2].upcall_pending.store(1, Ordering::SeqCst);
    let mut seen = vec![];
    assert_eq!(ev.scan(2, |p| seen.push(p)), 2);
    assert_eq!(seen, [Port(3), Port(700)]);
    assert!(!ev.is_pending(Port(3)) && !ev.is_pending(Port(700)));
    assert!(ev.is_pending(Port(64)), "masked port stays pending");
    assert_eq!(page.vcpu[2].selector.load(Ordering::SeqCst), 0);
    assert_eq!(page.vcpu[2].upcall_pending.load(Ordering::SeqCst), 0);
    // Nothing twice; an out-of-range vCPU scans nothing.
    assert_eq!(ev.scan(2, |_| panic!("again")), 0);
    assert_eq!(ev.scan(16, |_| panic!("vcpu 16")), 0);
    assert_eq!(ev.scan(u32::MAX, |_| panic!("vcpu max")), 0);
    // Unmasking locally is the host's job (EVT-9); scan_all sees everything unmasked.
    page.mask[1].store(0, Ordering::SeqCst);
    let mut all = vec![];
    assert_eq!(ev.scan_all(|p| all.push(p)), 1);
    assert_eq!(all, [Port(64)]);
    // The upcall mask is the guest's "interrupts off".
    assert_eq!(ev.mask_upcalls(1), Some(false));
    assert_eq!(ev.mask_upcalls(1), Some(true));
    page.vcpu[1].upcall_pending.store(1, Ordering::SeqCst);
    assert_eq!(ev.unmask_upcalls(1), Some(true));
    assert_eq!(ev.unmask_upcalls(99), None);
    assert!(!ev.clear_pending(Port(9)));
}

#[test]
fn scan_hands_each_event_to_exactly_one_of_several_scanners() {
    let (pv, _, arena) = setup(Box::new(|_, _, _| ok(0)));
    let page: &'static EventPageShared = arena.alloc(EventPageShared::new()).unwrap();
    let ev = pv.event_register_page(page).unwrap();
    static HANDLED: AtomicU32 = AtomicU32::new(0);
    let rounds = 2000u32;
    std::thread::scope(|s| {
        let scanners: Vec<_> = (0..3)
            .map(|v| {
                s.spawn(move || {
                    let ev = EventChannels::from_page(ev.page());
                    let mut n = 0;
                    while HANDLED.load(Ordering::SeqCst) < rounds {
                        n += ev.scan_all(|_| {
                            HANDLED.fetch_add(1, Ordering::SeqCst);
                        });
                        let _ = v;
                    }
                    n
                })
            })
            .collect();
        // The "host": raise port 5 again each time it has been consumed.
        let mut raised = 0;
        while raised < rounds {
            if page.pending[0].fetch_or(1 << 5, Ordering::SeqCst) & (1 << 5) == 0 {
                raised += 1;
            }
            std::hint::spin_loop();
        }
        let total: usize = scanners.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total as u32, HANDLED.load(Ordering::SeqCst));
    });
    assert_eq!(HANDLED.load(Ordering::SeqCst), rounds);
}

#[test]
fn clock_seqlock_never_returns_a_torn_snapshot() {
    let (pv, f, arena) = setup(Box::new(|_, _, _| ok(0)));
    let page: &'static ClockPageShared = arena.alloc(ClockPageShared::new()).unwrap();
    let clock = pv.clock_register_page(page).unwrap();
    assert_eq!(f.calls()[0].1[0] % 32, 0);
    assert_eq!(clock.snapshot(), Err(Status::BAD_STATE), "never written");
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            // The host: odd, write fields derived from one counter k, even.
            let mut k = 1u64;
            while !stop.load(Ordering::Relaxed) {
                let v = page.version.load(Ordering::Relaxed);
                page.version.store(v + 1, Ordering::Relaxed);
                std::sync::atomic::fence(Ordering::Release);
                page.tsc_timestamp.store(k, Ordering::Relaxed);
                page.system_time.store(k * 1000, Ordering::Relaxed);
                page.tsc_to_system_mul.store(k as u32, Ordering::Relaxed);
                page.version.store(v + 2, Ordering::Release);
                k += 1;
            }
        });
        let mut last = 0;
        for _ in 0..20_000 {
            if let Ok(snap) = clock.snapshot() {
                assert_eq!(snap.version % 2, 0);
                assert_eq!(snap.system_time, snap.tsc_timestamp * 1000, "torn read");
                assert_eq!(u64::from(snap.tsc_to_system_mul), snap.tsc_timestamp);
                assert!(snap.system_time >= last);
                last = snap.system_time;
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    // A host stuck with an odd version: BUSY, not a hang.
    page.version.store(7, Ordering::SeqCst);
    assert_eq!(clock.snapshot(), Err(Status::BUSY));
    // TSC conversion goes through ClockPage::time_at.
    page.version.store(8, Ordering::SeqCst);
    page.tsc_timestamp.store(100, Ordering::SeqCst);
    page.system_time.store(5_000, Ordering::SeqCst);
    page.tsc_to_system_mul.store(1 << 31, Ordering::SeqCst); // 0.5 ns per tick
    page.tsc_shift.store(1, Ordering::SeqCst); // then x2: 1 ns per tick
    assert_eq!(clock.ns_at(1100), Ok(6_000));
    assert!(clock.now_ns().unwrap() > 6_000);
}

#[test]
fn store_wrappers_pass_paths_and_check_lengths() {
    let (pv, f, arena) = setup(Box::new(|fake, id, args| match CallId(id) {
        call::STORE_READ if args[3] == 0 => Some((Status::BUFFER_TOO_SMALL.to_reg(), 42)),
        call::STORE_READ => {
            fake.write(args[2], b"val");
            ok(3)
        }
        call::STORE_LIST => {
            fake.write(args[2], b"a\0bb\0c");
            ok(6)
        }
        call::STORE_WATCH => ok(9),
        call::STORE_WATCH_NEXT => {
            let hdr = WatchEvent {
                watch_id: 9,
                path_len: 3,
                dropped: 2,
                _reserved: 0,
            };
            fake.write(args[0], hdr.as_bytes());
            fake.write(args[0] + 16, b"x/y");
            ok(19)
        }
        call::STORE_TXN_START => ok(77),
        _ => ok(0),
    }));
    let path = arena.alloc_bytes(8, 1).unwrap();
    path[..5].copy_from_slice(b"dev/a");
    let path: &[u8] = &path[..5];
    let buf = arena.alloc_bytes(64, 1).unwrap();
    assert_eq!(pv.store_read(path, buf, None), Ok(3));
    assert_eq!(&buf[..3], b"val");
    let c = f.calls()[0];
    assert_eq!(c.0, call::STORE_READ.0);
    assert_eq!(c.1, [gpa_of(f, &path[0]), 5, gpa_of(f, &buf[0]), 64, 0, 0]);
    assert_eq!(pv.store_read_len(path, None), Ok(42));
    let t = pv.store_txn_start().unwrap();
    pv.store_write(path, &buf[..3], Some(t)).unwrap();
    assert_eq!(f.calls().last().unwrap().1[4], 77);
    let names: Vec<&[u8]> = pv.store_list(b"", buf, None).unwrap().collect();
    assert_eq!(names, [&b"a"[..], b"bb", b"c"]);
    let w = pv.store_watch(path, Port(4)).unwrap();
    assert_eq!(w.0, 9);
    let ev = pv.store_watch_next(buf).unwrap().unwrap();
    assert_eq!((ev.watch.0, ev.path, ev.dropped), (9, &b"x/y"[..], 2));
}

#[test]
fn store_hostile_answers() {
    let (pv, _, arena) = setup(Box::new(|fake, id, args| match CallId(id) {
        call::STORE_READ => ok(args[3] + 1),
        call::STORE_LIST => ok(u64::MAX),
        call::STORE_WATCH => ok(0),
        call::STORE_WATCH_NEXT if args[1] == 64 => {
            let hdr = WatchEvent {
                watch_id: 1,
                path_len: 1000,
                dropped: 0,
                _reserved: 0,
            };
            fake.write(args[0], hdr.as_bytes());
            ok(20)
        }
        call::STORE_WATCH_NEXT if args[1] == 32 => ok(8),
        call::STORE_WATCH_NEXT => Some((Status::NOT_FOUND.to_reg(), 0)),
        call::STORE_TXN_START => ok(1 << 32),
        _ => ok(0),
    }));
    let buf = arena.alloc_bytes(64, 1).unwrap();
    // A path outside guest RAM is refused; an empty one names no memory and is sent (GPA 0).
    assert_eq!(pv.store_read(b"a", buf, None), Err(Status::INVALID_ADDRESS));
    assert_eq!(pv.store_read(b"", buf, None), Err(Status::FAILED));
    let (p, b) = buf.split_at_mut(8);
    p[0] = b'a';
    assert_eq!(pv.store_read(&p[..1], b, None), Err(Status::FAILED));
    assert_eq!(
        pv.store_list(&p[..1], b, None).map(drop),
        Err(Status::FAILED)
    );
    assert_eq!(pv.store_watch(&p[..1], Port(1)), Err(Status::FAILED));
    assert_eq!(pv.store_txn_start(), Err(Status::FAILED));
    let buf = arena.alloc_bytes(64, 1).unwrap();
    assert_eq!(pv.store_watch_next(buf).map(drop), Err(Status::FAILED));
    assert_eq!(
        pv.store_watch_next(&mut buf[..32]).map(drop),
        Err(Status::FAILED)
    );
    assert_eq!(
        pv.store_watch_next(&mut buf[..16]).map(|e| e.is_none()),
        Ok(true)
    );
}

#[test]
fn store_transaction_retries_on_conflict() {
    let commits = AtomicU32::new(0);
    let (pv, f, _) = setup(Box::new(move |_, id, _| match CallId(id) {
        call::STORE_TXN_START => ok(5),
        call::STORE_TXN_COMMIT if commits.fetch_add(1, Ordering::SeqCst) < 2 => {
            Some((Status::CONFLICT.to_reg(), 0))
        }
        _ => ok(0),
    }));
    let mut runs = 0;
    assert_eq!(
        pv.store_transaction(|_, t| {
            runs += 1;
            Ok(t.0)
        }),
        Ok(5)
    );
    assert_eq!(runs, 3);
    let n_commits = ids(f)
        .iter()
        .filter(|c| **c == call::STORE_TXN_COMMIT)
        .count();
    assert_eq!(n_commits, 3);
    // A failing body aborts.
    f.clear();
    assert_eq!(
        pv.store_transaction(|_, _| -> Result<(), Status> { Err(Status::DENIED) }),
        Err(Status::DENIED)
    );
    assert_eq!(ids(f), [call::STORE_TXN_START, call::STORE_TXN_ABORT]);
}

#[test]
fn multicall_builder_and_results() {
    let (pv, f, arena) = setup(Box::new(|fake, id, args| match CallId(id) {
        call::MULTICALL_EXECUTE => {
            // Run two of three entries: write status/value into them.
            let n = args[1] as usize;
            let mut entries = <[MulticallEntry2]>::ref_from_bytes(&fake.read(args[0], 72 * n))
                .unwrap()
                .to_vec();
            entries[0].status = 0;
            entries[0].value = 11;
            entries[1].status = Status::DENIED.to_reg() as i64;
            fake.write(args[0], entries.as_bytes());
            ok(2)
        }
        _ => None,
    }));
    type MulticallEntry2 = pvabi::multicall::MulticallEntry;
    let mc: &mut Multicall<4> = arena.alloc(Multicall::new()).unwrap();
    assert_eq!(
        mc.push(call::CONSOLE_WRITE, [0; 6], false),
        Err(Status::INVALID_PARAM)
    );
    assert_eq!(
        mc.push(call::POWER_SHUTDOWN, [0; 6], false),
        Err(Status::INVALID_PARAM)
    );
    mc.push(call::EVENT_SEND, [3, 0, 0, 0, 0, 0], false)
        .unwrap();
    mc.push(call::VCPU_KICK, [1, 0, 0, 0, 0, 0], true).unwrap();
    mc.push(call::VCPU_YIELD, [0; 6], false).unwrap();
    assert_eq!(mc.execute(&pv), Ok(2));
    assert_eq!(f.calls()[0].1[1], 3);
    assert_eq!(f.calls()[0].1[0] % 8, 0);
    assert_eq!(mc.result(0), Some(Ok(11)));
    assert_eq!(mc.result(1), Some(Err(Status::DENIED)));
    assert_eq!(mc.result(2), None);
    assert_eq!(mc.result(99), None);
    mc.push(call::VCPU_YIELD, [0; 6], false).unwrap();
    assert_eq!(
        mc.push(call::VCPU_YIELD, [0; 6], false),
        Err(Status::NO_SPACE)
    );
}

#[test]
fn multicall_hostile_count() {
    let (pv, _, arena) = setup(Box::new(|_, _, _| ok(3)));
    let mc: &mut Multicall<4> = arena.alloc(Multicall::new()).unwrap();
    mc.push(call::VCPU_YIELD, [0; 6], false).unwrap();
    assert_eq!(mc.execute(&pv), Err(Status::FAILED));
    assert_eq!(mc.result(0), None);
}

#[test]
fn memory_map_and_balloon() {
    let (pv, f, arena) = setup(Box::new(|fake, id, args| match CallId(id) {
        call::MEMORY_GET_MAP => {
            let e = MemMapEntry {
                base: 0x10000,
                length: 0x1000,
                kind: 1,
                _reserved: 0,
            };
            fake.write(args[0], e.as_bytes());
            ok(5)
        }
        call::MEMORY_BALLOON_RECLAIM => Some((Status::BAD_STATE.to_reg(), 0)),
        _ => ok(0),
    }));
    let buf = arena.alloc([MemMapEntry::default(); 1]).unwrap();
    let m = pv.memory_map(buf).unwrap();
    assert_eq!((m.entries.len(), m.total), (1, 5));
    assert_eq!(m.ram().count(), 1);
    let boot: Vec<_> = pv.boot_memory_map().collect();
    assert_eq!(boot.len(), 2);
    assert_eq!(boot[1].base, 0x10000);
    let pages: &'static mut [Page; 2] = arena.alloc([Page::new(), Page::new()]).unwrap();
    let gpa = gpa_of(f, &pages[0]);
    let b = pv.balloon_release(pages).unwrap();
    assert_eq!((b.gpa(), b.pages()), (gpa, 2));
    assert_eq!(f.calls().last().unwrap().1[..2], [gpa, 2]);
    let (s, b) = pv.balloon_reclaim(b).unwrap_err();
    assert_eq!(s, Status::BAD_STATE);
    assert_eq!(b.pages(), 2, "pages come back with the error");
    assert_eq!(
        pv.balloon_release(&mut []).map(drop),
        Err(Status::INVALID_PARAM)
    );
}

#[test]
fn boot_memory_map_with_a_bogus_count_stays_bounded() {
    let f = fake(Box::new(|_, _, _| None));
    let mut bi = boot_info(1);
    bi.mem_map_gpa = RAM as u64 - 48; // two entries fit, the rest is outside RAM
    bi.mem_map_entries = u32::MAX;
    f.write(BOOT_GPA, bi.as_bytes());
    let pv = pvabi_guest::Pvabi::discover_in_process(gate(f), BOOT_GPA, &phys(f)).unwrap();
    assert_eq!(pv.boot_memory_map().count(), 2);
}

#[test]
fn grants_claim_publish_and_revoke() {
    let (pv, f, arena) = setup(Box::new(|_, _, _| ok(0)));
    let table: &'static GrantTableShared<2> = arena.alloc(GrantTableShared::new()).unwrap();
    let g = pv.grant_setup_table(table).unwrap();
    assert_eq!(f.calls()[0].1[..2], [gpa_of(f, table), 2]);
    let shared: &'static SharedPage = arena.alloc(SharedPage::new()).unwrap();
    let page: &'static Page = arena.alloc(Page::new()).unwrap();
    let r0 = g.grant_shared(shared, 0, false).unwrap();
    let r1 = g.grant_readonly(page, 7).unwrap();
    assert_eq!(g.grant_readonly(page, 7), Err(Status::NO_SPACE));
    let e0 = g.entry(r0).unwrap();
    assert_eq!(e0.flags, pvabi::grant::GrantEntry::FLAG_VALID);
    assert_eq!(e0.gfn * 4096, gpa_of(f, shared));
    let e1 = g.entry(r1).unwrap();
    assert_eq!(
        e1.flags,
        pvabi::grant::GrantEntry::FLAG_VALID | pvabi::grant::GrantEntry::FLAG_READONLY
    );
    assert_eq!(e1.domid, 7);
    g.revoke(r0).unwrap();
    assert_eq!(g.revoke(r0), Err(Status::NOT_FOUND));
    assert_eq!(
        g.revoke(pvabi_guest::grant::GrantRef(5)),
        Err(Status::NOT_FOUND)
    );
    assert_eq!(g.entry(r0).unwrap().flags, 0);
    assert_eq!(
        g.grant_shared(shared, 0, true),
        Ok(r0),
        "freed entry reused"
    );
    // A page outside guest RAM cannot be granted.
    static OUT: SharedPage = SharedPage::new();
    g.revoke(r0).unwrap();
    assert_eq!(g.grant_shared(&OUT, 0, false), Err(Status::INVALID_ADDRESS));
}

#[test]
fn crash_report_and_power() {
    let (pv, f, arena) = setup(Box::new(|_, _, _| ok(0)));
    let area: &'static CrashAreaShared<64> = arena.alloc(CrashAreaShared::new()).unwrap();
    pv.register_crash_area(area).unwrap();
    assert_eq!(f.calls()[0].1[..2], [gpa_of(f, area), 96]);
    let long = [b'z'; 100];
    // A host that returns from SHUTDOWN gets its status reported back (FAILED for "success").
    assert_eq!(pv.crash(area, 0xdead, 0x1234, &long), Status::FAILED);
    let hdr = CrashHeader::read_from_bytes(&f.read(gpa_of(f, area), 32)).unwrap();
    assert_eq!(hdr.magic, CrashHeader::MAGIC);
    assert_eq!((hdr.message_len, hdr.code, hdr.rip), (64, 0xdead, 0x1234));
    assert_eq!(
        f.calls().last().unwrap(),
        &(
            call::POWER_SHUTDOWN.0,
            [u64::from(ShutdownReason::CRASH.0), 0xdead, 0, 0, 0, 0]
        )
    );
    let (pv, f, _) = setup(Box::new(|_, _, _| err(Status::INVALID_PARAM)));
    assert_eq!(pv.power_off(3), Status::INVALID_PARAM);
    assert_eq!(f.calls()[0].1[..2], [0, 3]);
}

#[test]
fn vcpu_start_block_and_stop() {
    let (pv, f, arena) = setup(Box::new(|_, id, args| match CallId(id) {
        call::VCPU_BLOCK if args[0] == 10 => err(Status::TIMED_OUT),
        _ => ok(0),
    }));
    extern "C" fn entry(_arg: u64, _vcpu: u64) {}
    let stack: &'static mut VcpuStack<4096> = arena.alloc(VcpuStack::new()).unwrap();
    let base = stack.0.as_ptr() as u64;
    pv.vcpu_start(3, entry, stack, 0xabc).unwrap();
    let c = f.calls()[0];
    assert_eq!(c.0, call::VCPU_START.0);
    assert_eq!(c.1[0], 3);
    assert_eq!(c.1[1], entry as *const () as usize as u64);
    assert_eq!(c.1[2], base + 4096 - 8);
    assert_eq!((c.1[2] + 8) % 16, 0, "RSP as after a call");
    assert_eq!(c.1[3], 0xabc);
    // The return address on the new stack is the shim's trap.
    let ret = u64::from_le_bytes(f.read(c.1[2] - f.base as u64, 8).try_into().unwrap());
    assert_eq!(
        ret,
        pvabi_guest::gate::upcall_entry::vcpu_return_trap_address() as u64
    );
    let small: &'static mut VcpuStack<64> = arena.alloc(VcpuStack::new()).unwrap();
    assert_eq!(
        pv.vcpu_start(1, entry, small, 0),
        Err(Status::INVALID_PARAM)
    );
    let s2: &'static mut VcpuStack<4096> = arena.alloc(VcpuStack::new()).unwrap();
    assert_eq!(pv.vcpu_start(4, entry, s2, 0), Err(Status::INVALID_PARAM));
    assert_eq!(pv.vcpu_block(Some(10)), Ok(Wake::Deadline));
    assert_eq!(pv.vcpu_block(None), Ok(Wake::Event));
    assert_eq!(pv.vcpu_block(Some(0)), Err(Status::INVALID_PARAM));
    assert_eq!(pv.vcpu_stop(), Status::FAILED);
}

#[cfg(feature = "harness")]
#[test]
fn harness_record_encoding_and_calls() {
    let mut out = [0u8; 64];
    let n = encode_record(
        &Record {
            outcome: Outcome::FAILED,
            clauses: b"A-1",
            name: b"nm",
            detail: &[b'd'; 100],
        },
        &mut out,
    )
    .unwrap();
    assert_eq!(n, 64, "detail truncated to fit");
    let hdr = ReportHeader::read_from_bytes(&out[..24]).unwrap();
    assert_eq!(
        (
            hdr.magic,
            hdr.outcome,
            hdr.clauses_len,
            hdr.name_len,
            hdr.detail_len
        ),
        (ReportHeader::MAGIC, 1, 3, 2, 35)
    );
    assert_eq!(&out[24..29], b"A-1nm");
    assert_eq!(
        encode_record(
            &Record {
                outcome: Outcome::PASSED,
                clauses: &[b'c'; 50],
                name: b"n",
                detail: b""
            },
            &mut out
        ),
        Err(Status::INVALID_PARAM)
    );
    let (pv, f, arena) = setup(Box::new(|_, id, _| match CallId(id) {
        call::HARNESS_GRANT_ACCESS => ok(300),
        call::HARNESS_BALLOON_CHECK => ok(2),
        _ => ok(0),
    }));
    let scratch = arena.alloc_bytes(256, 8).unwrap();
    let sg = gpa_of(f, &scratch[0]);
    pv.harness_report(
        &Record {
            outcome: Outcome::PASSED,
            clauses: b"BASE-1",
            name: b"case",
            detail: b"ok",
        },
        scratch,
    )
    .unwrap();
    assert_eq!(f.calls()[0], (call::HARNESS_REPORT.0, [sg, 36, 0, 0, 0, 0]));
    assert_eq!(
        pv.harness_grant_access(pvabi_guest::grant::GrantRef(0), 0, None),
        Err(Status::FAILED)
    );
    assert_eq!(pv.harness_balloon_check(0x10000), Err(Status::FAILED));
}

#[test]
fn call_scalar_refuses_memory_calls() {
    let (pv, f, _) = setup(Box::new(|_, _, _| ok(1)));
    for id in [
        call::CONSOLE_WRITE,
        call::STORE_READ,
        call::VCPU_START,
        call::POWER_SHUTDOWN,
        call::EVENT_SET_UPCALL,
        call::BASE_RING_REGISTER,
        CallId(0x8000_0001),
    ] {
        assert_eq!(
            pv.call_scalar(id, [0; 6]),
            Err(Status::INVALID_PARAM),
            "{id:?}"
        );
    }
    assert!(f.calls().is_empty());
    assert_eq!(pv.call_scalar(call::EVENT_SEND, [9, 0, 0, 0, 0, 0]), Ok(1));
}
