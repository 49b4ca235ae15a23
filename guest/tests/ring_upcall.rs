//! The shared-ring gate against a fake polling host (batches, wrap-around, hostile
//! completions, a host that never answers) and upcall dispatch through the installed handler.
#![allow(unsafe_code)]
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::std_instead_of_core
)]

mod common;

use common::*;
use core::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use pvabi::call;
use pvabi::event::UpcallMode;
use pvabi::ring::RingHeader;
use pvabi::{CallId, Regs, Ret, Status};
use pvabi_guest::event::Port;
use pvabi_guest::shared::{EventPageShared, RingShared};
use pvabi_guest::upcall::{self, UpcallInfo};
use pvabi_guest::Gate;
use std::sync::Mutex;

fn a32(f: &Fake, gpa: u64) -> &'static AtomicU32 {
    assert!(gpa % 4 == 0 && (gpa as usize) + 4 <= f.len);
    // SAFETY: aligned, inside the leaked RAM block (lives forever); every access to ring
    // memory, guest side and this host side, is atomic.
    unsafe { &*((f.base + gpa as usize) as *const AtomicU32) }
}

fn a64(f: &Fake, gpa: u64) -> &'static AtomicU64 {
    assert!(gpa % 8 == 0 && (gpa as usize) + 8 <= f.len);
    // SAFETY: as for `a32`.
    unsafe { &*((f.base + gpa as usize) as *const AtomicU64) }
}

/// How the fake ring host misbehaves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Good,
    Silent,
    TooMany,
    WrongCookie,
}

/// Serves the ring at `gpa` (order `order`) until `stop`: value = arg0 * 2 + call function.
fn serve(f: &'static Fake, gpa: u64, order: u32, mode: Mode, stop: &'static AtomicBool) {
    let n = 1u32 << order;
    let req_prod = a32(f, gpa + 8);
    let req_cons = a32(f, gpa + 12);
    let cmp_prod = a32(f, gpa + 16);
    let mut cons = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let prod = req_prod.load(Ordering::Acquire);
        while cons != prod {
            let slot = gpa + 64 + 64 * u64::from(cons % n);
            let cookie = a32(f, slot).load(Ordering::Relaxed);
            let id = a32(f, slot + 4).load(Ordering::Relaxed);
            let a0 = a64(f, slot + 8).load(Ordering::Relaxed);
            let c = gpa + 64 + 64 * u64::from(n) + 24 * u64::from(cons % n);
            let cookie = if mode == Mode::WrongCookie {
                cookie.wrapping_add(1000)
            } else {
                cookie
            };
            a32(f, c).store(cookie, Ordering::Relaxed);
            // SAFETY: as for `a32` (8-aligned: 64 + 64n + 24k with 24k multiple of 8).
            let status = unsafe { &*((f.base + c as usize + 8) as *const AtomicI64) };
            status.store(
                if id == call::VCPU_KICK.0 { -4 } else { 0 },
                Ordering::Relaxed,
            );
            a64(f, c + 16).store(a0 * 2 + u64::from(id & 0xffff), Ordering::Relaxed);
            cons = cons.wrapping_add(1);
            req_cons.store(cons, Ordering::Release);
            if mode == Mode::Silent {
                continue;
            }
            let bump = if mode == Mode::TooMany { 100 } else { 1 };
            cmp_prod.fetch_add(bump, Ordering::Release);
        }
        std::hint::spin_loop();
    }
}

fn ring_setup(
    mode: Mode,
    polling: bool,
    port: u64,
) -> (
    pvabi_guest::Pvabi,
    &'static Fake,
    &'static RingShared<4>,
    &'static AtomicBool,
) {
    let stop: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
    let (pv, f, arena) = setup(Box::new(move |fake, id, args| match CallId(id) {
        call::BASE_RING_REGISTER => {
            let gpa = args[0];
            assert_eq!(gpa % 4096, 0);
            assert_eq!(a32(fake, gpa).load(Ordering::SeqCst), RingHeader::MAGIC);
            assert_eq!(a32(fake, gpa + 4).load(Ordering::SeqCst) as u64, args[1]);
            if polling {
                a32(fake, gpa + 24).store(1, Ordering::SeqCst);
                let fake: &'static Fake =
                    // SAFETY: `fake` is the leaked `Fake` of this test (address stable, lives
                    // forever); only its shared methods are used.
                    unsafe { &*(fake as *const Fake) };
                let order = args[1] as u32;
                std::thread::spawn(move || serve(fake, gpa, order, mode, stop));
            }
            ok(port)
        }
        call::BASE_RING_UNREGISTER => ok(0),
        _ => ok(1),
    }));
    let ring: &'static RingShared<4> = arena.alloc(RingShared::new()).unwrap();
    (pv, f, ring, stop)
}

#[test]
fn ring_gate_runs_batches_in_order_and_bypasses_blocking_calls() {
    let (pv, f, ring, stop) = ring_setup(Mode::Good, true, 0x600);
    let pr = pv.register_ring(ring).unwrap();
    let Gate::Ring(rg) = pr.gate() else {
        panic!("not a ring gate")
    };
    assert_eq!((rg.doorbell_port(), rg.slots()), (0x600, 4));
    // Ten calls through four slots: wrap-around and chunking.
    let calls: Vec<Regs> = (0..10)
        .map(|i| Regs::new(call::EVENT_SEND, [i, 0, 0, 0, 0, 0]))
        .collect();
    let mut out = vec![Ret::err(Status::FAILED); 10];
    rg.call_batch(&calls, &mut out).unwrap();
    for (i, r) in out.iter().enumerate() {
        assert_eq!(*r, Ret::ok(i as u64 * 2 + 5), "entry {i}");
    }
    // Wrappers go through the ring (the fake log sees none of them) ...
    f.clear();
    assert_eq!(pr.vcpu_yield(), Ok(()));
    assert_eq!(pr.vcpu_kick(1), Err(Status::DENIED));
    assert!(f.calls().is_empty(), "{:?}", f.calls());
    // ... except those RING-6 forbids, which take the register gate.
    let _ = pr.vcpu_block(None);
    let _ = pr.shutdown(pvabi::power::ShutdownReason::POWEROFF, 0);
    assert_eq!(
        f.calls().iter().map(|c| CallId(c.0)).collect::<Vec<_>>(),
        [call::VCPU_BLOCK, call::POWER_SHUTDOWN]
    );
    assert_eq!(
        rg.call_batch(&[Regs::new(call::VCPU_STOP, [0; 6])], &mut out),
        Err(Status::INVALID_PARAM)
    );
    assert_eq!(pr.register_ring(ring).map(drop), Err(Status::INVALID_PARAM));
    let back = pr.unregister_ring().unwrap();
    assert!(matches!(back.gate(), Gate::Register(_)));
    stop.store(true, Ordering::Relaxed);
}

#[test]
fn ring_gate_survives_hostile_hosts() {
    for (mode, want) in [
        (Mode::Silent, Status::TIMED_OUT),
        (Mode::TooMany, Status::FAILED),
        (Mode::WrongCookie, Status::FAILED),
    ] {
        let (pv, _, ring, stop) = ring_setup(mode, true, 0x600);
        let pr = pv.register_ring(ring).unwrap();
        let Gate::Ring(rg) = pr.gate() else { panic!() };
        let rg = rg.with_spin_limit(1 << 20);
        let pr = pr.with_gate(Gate::Ring(rg));
        assert_eq!(pr.vcpu_yield(), Err(want));
        // The ring is now inconsistent: later calls fail fast instead of corrupting it.
        assert_eq!(pr.vcpu_yield(), Err(Status::FAILED));
        stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn ring_registration_checks_the_host_answer() {
    // In-process the doorbell cannot be rung: a host that does not poll is refused.
    let (pv, f, ring, _) = ring_setup(Mode::Good, false, 0x600);
    assert_eq!(pv.register_ring(ring).map(drop), Err(Status::NOT_SUPPORTED));
    assert_eq!(f.calls().last().unwrap().0, call::BASE_RING_UNREGISTER.0);
    // A doorbell "port" above 16 bits cannot be right.
    let (pv, f, ring, stop) = ring_setup(Mode::Good, true, 1 << 16);
    assert_eq!(pv.register_ring(ring).map(drop), Err(Status::FAILED));
    assert_eq!(f.calls().last().unwrap().0, call::BASE_RING_UNREGISTER.0);
    stop.store(true, Ordering::Relaxed);
}

#[test]
fn concurrent_producers_get_busy_not_corruption() {
    let (pv, _, ring, stop) = ring_setup(Mode::Good, true, 0x600);
    let pr = pv.register_ring(ring).unwrap();
    let ok_calls = AtomicU32::new(0);
    let busy = AtomicU32::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for i in 0..500u64 {
                    match pr.call_scalar(call::EVENT_SEND, [i, 0, 0, 0, 0, 0]) {
                        Ok(v) => {
                            assert_eq!(v, i * 2 + 5);
                            ok_calls.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(Status::BUSY) => {
                            busy.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            });
        }
    });
    assert_eq!(
        ok_calls.load(Ordering::Relaxed) + busy.load(Ordering::Relaxed),
        2000
    );
    assert!(ok_calls.load(Ordering::Relaxed) > 0);
    stop.store(true, Ordering::Relaxed);
}

static SEEN: Mutex<Vec<(u32, UpcallInfo)>> = Mutex::new(Vec::new());

fn record(port: Port, info: &UpcallInfo) {
    SEEN.lock().unwrap().push((port.0, *info));
}

#[test]
fn upcall_dispatch_uses_the_installed_handler() {
    let (pv, f, arena) = setup(Box::new(|_, _, _| ok(0)));
    let page: &'static EventPageShared = arena.alloc(EventPageShared::new()).unwrap();
    let ev = pv.event_register_page(page).unwrap();
    // No handler yet: callback mode is refused without a call.
    f.clear();
    upcall::uninstall();
    assert_eq!(pv.set_upcall_callback(), Err(Status::BAD_STATE));
    assert!(f.calls().is_empty());
    assert_eq!(upcall::dispatch_pending(0), 0);
    upcall::install(&pv, &ev, record);
    assert!(upcall::is_installed());
    // The in-process gate names the Rust callback, not the asm entry.
    pv.set_upcall_callback().unwrap();
    assert_eq!(
        f.calls()[0],
        (
            call::EVENT_SET_UPCALL.0,
            [
                u64::from(UpcallMode::CALLBACK.0),
                upcall::in_process_callback as *const () as usize as u64,
                0,
                0,
                0,
                0
            ]
        )
    );
    page.pending[0].store(1 << 7, Ordering::SeqCst);
    page.vcpu[1].selector.store(1, Ordering::SeqCst);
    assert_eq!(upcall::dispatch_pending(1), 1);
    page.pending[2].store(1 << 1, Ordering::SeqCst);
    page.vcpu[3].selector.store(1 << 2, Ordering::SeqCst);
    upcall::in_process_callback(0x5000, 3);
    // Hostile vCPU ids from a host: nothing dispatched, no panic.
    page.pending[0].store(1 << 9, Ordering::SeqCst);
    upcall::in_process_callback(0x5000, u64::MAX);
    assert_eq!(upcall::dispatch_pending(4), 0);
    let seen = SEEN.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            (
                7,
                UpcallInfo {
                    vcpu: 1,
                    mode: UpcallMode::NONE,
                    frame_gpa: None
                }
            ),
            (
                129,
                UpcallInfo {
                    vcpu: 3,
                    mode: UpcallMode::CALLBACK,
                    frame_gpa: Some(0x5000)
                }
            )
        ]
    );
    assert_eq!(
        upcall::installed_events().map(|p| p as *const _),
        Some(page as *const _)
    );
    assert!(upcall::vector_entry_address() != 0 && upcall::callback_entry_address() != 0);
    // Without a handler events are still acknowledged (no upcall storm), not dispatched.
    upcall::uninstall();
    assert!(!upcall::is_installed());
    page.pending[0].store(1 << 11, Ordering::SeqCst);
    page.vcpu[0].selector.store(1, Ordering::SeqCst);
    page.vcpu[0].upcall_pending.store(1, Ordering::SeqCst);
    assert_eq!(upcall::dispatch_pending(0), 1);
    assert_eq!(page.pending[0].load(Ordering::SeqCst) & (1 << 11), 0);
    assert_eq!(page.vcpu[0].upcall_pending.load(Ordering::SeqCst), 0);
    assert_eq!(
        SEEN.lock().unwrap().len(),
        2,
        "no dispatch without a handler"
    );
}
