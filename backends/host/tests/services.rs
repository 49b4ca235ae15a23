//! Per-service tests of the Vm through its dispatch entry, positive and negative, including a
//! hostile value for every guest-supplied address and length.

mod common;

use common::*;
use pvabi::call::*;
use pvabi::event::{vcpu_info, EventPage, UpcallFrame};
use pvabi::{Features, Regs, Status};
use pvabi_host::{Outcome, Upcall, VmConfig};

const EV: u64 = 0x8000; // event page
const BUF: u64 = 0x2_0000; // scratch buffers

fn info(v: u32) -> u64 {
    EV + EventPage::vcpu_offset(v) as u64
}

// --------------------------------------------------------------------------------- BASE

#[test]
fn base_identity_probe_and_features() {
    let f = fixture(3);
    assert_eq!(f.ok(0, BASE_GET_ABI_VERSION, &[]), 0x0001_0000);
    assert_eq!(f.ok(0, BASE_GET_BACKEND_ID, &[]), 0x8000_0000);
    assert_eq!(f.ok(2, BASE_GET_VCPU_ID, &[]), 2);
    assert_eq!(f.ok(0, BASE_GET_VCPU_COUNT, &[]), 3);
    assert_eq!(f.ok(0, BASE_PROBE_SERVICE, &[0]), 9);
    assert_eq!(f.ok(0, BASE_PROBE_SERVICE, &[7]), 10);
    assert_eq!(f.ok(0, BASE_PROBE_SERVICE, &[0x7F00]), 10);
    assert_eq!(f.ok(0, BASE_PROBE_SERVICE, &[0x1234]), 0);
    assert_eq!(f.ok(0, BASE_PROBE_SERVICE, &[0x8000]), 0);
    assert_eq!(
        f.err(0, BASE_PROBE_SERVICE, &[0x1_0000]),
        Status::INVALID_PARAM
    );
    assert_eq!(
        f.err(0, BASE_PROBE_SERVICE, &[u64::MAX]),
        Status::INVALID_PARAM
    );
    let feats = Features::from_bits_retain(f.ok(0, BASE_GET_FEATURES, &[]));
    assert!(feats.contains(Features::HARNESS | VmConfig::ALL_FEATURES));
    // A backend bug (vCPU id outside the VM) is refused, not a panic.
    assert_eq!(
        f.vm.handle_call(9, &Regs::new(BASE_GET_VCPU_ID, [0; 6])),
        Outcome::Return(pvabi::Ret::err(Status::FAILED))
    );
}

#[test]
fn unknown_calls_and_absent_services_are_not_supported() {
    let mut cfg = VmConfig::new(1);
    cfg.features = Features::empty();
    let f = fixture_with(cfg);
    for rax in [
        0x0000_0009u64,
        0x000A_0000,
        0x7F00_0000,
        0x8000_0000,
        1 << 32,
        u64::MAX,
    ] {
        let r = f.vm.handle_call(0, &Regs { rax, args: [0; 6] });
        assert_eq!(
            r,
            Outcome::Return(pvabi::Ret::err(Status::NOT_SUPPORTED)),
            "{rax:#x}"
        );
    }
    // Feature-gated functions (BASE-11, CLK-11, VCPU-13, RING-10, ...).
    for (id, args) in [
        (CLOCK_REGISTER_PAGE, [0x1000u64, 0]),
        (CLOCK_UNREGISTER_PAGE, [0, 0]),
        (CLOCK_SET_TIMER, [1, 1]),
        (VCPU_REGISTER_STEAL_TIME, [0x1000, 0]),
        (BASE_RING_REGISTER, [0x1000, 0]),
        (BASE_RING_UNREGISTER, [0, 0]),
        (MEMORY_BALLOON_RELEASE, [RAM2, 1]),
        (MEMORY_BALLOON_QUERY, [0, 0]),
        (GRANT_QUERY, [0, 0]),
        (MULTICALL_EXECUTE, [0x1000, 0]),
        (STORE_TXN_START, [0, 0]),
        (POWER_REGISTER_CRASH_BUFFER, [0x1000, 64]),
        (HARNESS_CLOCK_READ, [0, 0]),
    ] {
        assert_eq!(f.err(0, id, &args), Status::NOT_SUPPORTED, "{id:?}");
    }
    assert_eq!(f.ok(0, BASE_PROBE_SERVICE, &[6]), 0);
    assert_eq!(f.ok(0, BASE_PROBE_SERVICE, &[9]), 0);
    assert_eq!(f.ok(0, BASE_PROBE_SERVICE, &[0x7F00]), 0);
    assert_eq!(f.ok(0, BASE_GET_FEATURES, &[]), 0);
}

// ------------------------------------------------------------------------------ CONSOLE

#[test]
fn console_write_read_and_hostile_buffers() {
    let f = fixture(1);
    f.put(BUF, b"hello");
    assert_eq!(f.ok(0, CONSOLE_WRITE, &[BUF, 5]), 5);
    assert_eq!(f.ok(0, CONSOLE_WRITE_BYTE, &[b'!' as u64]), 1);
    assert_eq!(
        f.err(0, CONSOLE_WRITE_BYTE, &[0x100]),
        Status::INVALID_PARAM
    );
    assert_eq!(f.vm.take_console_output(), b"hello!");
    assert_eq!(
        f.ok(0, CONSOLE_WRITE, &[u64::MAX, 0]),
        0,
        "len 0 never checks the address"
    );
    assert_eq!(f.err(0, CONSOLE_WRITE, &[BUF, 4097]), Status::INVALID_PARAM);
    assert_eq!(f.err(0, CONSOLE_READ, &[BUF, 4097]), Status::INVALID_PARAM);
    for (gpa, len) in hostile_ranges(16) {
        let s = f.err(0, CONSOLE_WRITE, &[gpa, len]);
        assert!(s == Status::INVALID_ADDRESS || (len > 4096 && s == Status::INVALID_PARAM));
    }
    assert!(
        f.vm.take_console_output().is_empty(),
        "failed writes write nothing"
    );

    assert_eq!(f.ok(0, CONSOLE_READ, &[BUF, 16]), 0);
    f.vm.console_input(b"abcdef").expect("input");
    // A failed read consumes nothing (CONS-5, CONS-8).
    for (gpa, len) in hostile_ranges(4) {
        let _ = f.err(0, CONSOLE_READ, &[gpa, len]);
    }
    assert_eq!(f.ok(0, CONSOLE_READ, &[BUF, 4]), 4);
    assert_eq!(f.get(BUF, 4), b"abcd");
    assert_eq!(f.ok(0, CONSOLE_READ, &[BUF, 16]), 2);
    assert_eq!(f.get(BUF, 2), b"ef");
    // Input is bounded.
    assert!(f.vm.console_input(&vec![0; 64 * 1024 + 1]).is_err());
}

// -------------------------------------------------------------------------------- CLOCK

#[test]
fn clock_page_seqlock_wallclock_and_hostile_pages() {
    let f = fixture(2);
    let page = 0x3000u64;
    f.set_now(5_000);
    assert_eq!(f.ok(0, CLOCK_REGISTER_PAGE, &[page]), 0);
    let v1 = f.u32_at(page);
    assert_eq!(v1 % 2, 0, "version even after the write");
    assert_ne!(v1, 0);
    assert_eq!(f.u64_at(page + 16), 5_000);
    assert_eq!(
        f.get(page + 29, 1),
        [1],
        "only FLAG_TSC_STABLE kept (CLK-12)"
    );
    f.set_now(9_000);
    f.vm.refresh_clock_pages();
    assert_eq!(f.u32_at(page), v1 + 2);
    assert_eq!(f.u64_at(page + 16), 9_000);
    // The guest scribbling on the version does not affect the host's counter (CLK-2).
    f.ram
        .store_u32(page, 1001, std::sync::atomic::Ordering::SeqCst)
        .expect("store");
    f.vm.refresh_clock_pages();
    assert_eq!(f.u32_at(page), v1 + 4);
    assert_eq!(f.ok(0, CLOCK_UNREGISTER_PAGE, &[]), 0);
    assert_eq!(f.err(0, CLOCK_UNREGISTER_PAGE, &[]), Status::NOT_FOUND);
    assert_eq!(f.err(1, CLOCK_UNREGISTER_PAGE, &[]), Status::NOT_FOUND);
    assert_eq!(
        f.err(0, CLOCK_REGISTER_PAGE, &[page + 8]),
        Status::INVALID_ADDRESS
    );
    for gpa in [
        RAM1_END - 16,
        RAM1_END,
        RAM2_END - 16,
        u64::MAX - 31,
        !31u64,
    ] {
        assert_eq!(
            f.err(0, CLOCK_REGISTER_PAGE, &[gpa]),
            Status::INVALID_ADDRESS,
            "{gpa:#x}"
        );
    }
    assert_eq!(f.ok(0, CLOCK_GET_TIME, &[]), 9_000);
    assert_eq!(f.ok(0, CLOCK_GET_WALLCLOCK, &[]), 1_600_000_000_000_000_000);
}

#[test]
fn timers_fire_at_the_deadline_once() {
    let f = fixture(1);
    assert_eq!(
        f.err(0, CLOCK_SET_TIMER, &[5_000, 1]),
        Status::BAD_STATE,
        "no event page (CLK-9)"
    );
    let port = f.events(EV, 0);
    assert_eq!(
        f.err(0, CLOCK_SET_TIMER, &[5_000, 0]),
        Status::INVALID_PARAM
    );
    assert_eq!(
        f.err(0, CLOCK_SET_TIMER, &[5_000, 1024]),
        Status::INVALID_PARAM
    );
    assert_eq!(
        f.err(0, CLOCK_SET_TIMER, &[5_000, u64::MAX]),
        Status::INVALID_PARAM
    );
    assert_eq!(
        f.err(0, CLOCK_SET_TIMER, &[5_000, port + 1]),
        Status::NOT_FOUND
    );
    assert_eq!(
        f.ok(0, CLOCK_SET_TIMER, &[0, 999_999]),
        0,
        "cancel ignores the port"
    );
    f.ok(0, CLOCK_SET_TIMER, &[5_000, port]);
    assert_eq!(f.vm.next_deadline(), Some(5_000));
    f.set_now(4_999);
    f.vm.poll_timers();
    assert_eq!(f.u64_at(EV) & (1 << port), 0, "not before the deadline");
    f.set_now(5_000);
    f.vm.poll_timers();
    assert_ne!(f.u64_at(EV) & (1 << port), 0);
    assert_eq!(f.vm.next_deadline(), None, "one-shot");
    // Clear and re-arm in the past: fires at once.
    f.ram.fetch_and_u64(EV, 0).expect("clear");
    f.ok(0, CLOCK_SET_TIMER, &[10, port]);
    assert_ne!(f.u64_at(EV) & (1 << port), 0);
    // Cancel.
    f.ram.fetch_and_u64(EV, 0).expect("clear");
    f.ok(0, CLOCK_SET_TIMER, &[50_000, port]);
    f.ok(0, CLOCK_SET_TIMER, &[0, 0]);
    f.set_now(60_000);
    f.vm.poll_timers();
    assert_eq!(f.u64_at(EV) & (1 << port), 0);
}

// --------------------------------------------------------------------------------- VCPU

#[test]
fn vcpu_start_status_stop() {
    let f = fixture(3);
    assert_eq!(f.ok(0, VCPU_GET_STATUS, &[0]), 1);
    assert_eq!(f.ok(0, VCPU_GET_STATUS, &[1]), 0);
    assert_eq!(f.err(0, VCPU_GET_STATUS, &[3]), Status::INVALID_PARAM);
    assert_eq!(
        f.err(0, VCPU_GET_STATUS, &[u64::MAX]),
        Status::INVALID_PARAM
    );
    assert_eq!(
        f.err(0, VCPU_START, &[0, 0x1000, 0x2000, 7]),
        Status::ALREADY
    );
    assert_eq!(
        f.err(0, VCPU_START, &[3, 0x1000, 0x2000, 7]),
        Status::INVALID_PARAM
    );
    assert_eq!(
        f.err(0, VCPU_START, &[1, 1 << 47, 0x2000, 7]),
        Status::INVALID_PARAM
    );
    assert_eq!(
        f.err(0, VCPU_START, &[1, 0x1000, 0x0001_0000_0000_0000, 7]),
        Status::INVALID_PARAM
    );
    f.ok(0, VCPU_START, &[1, 0x1000, 0xffff_8000_0000_2000, 7]);
    assert_eq!(
        f.p.started.lock().unwrap().as_slice(),
        &[(1, 0x1000, 0xffff_8000_0000_2000, 7)]
    );
    assert_eq!(f.ok(0, VCPU_GET_STATUS, &[1]), 2, "START_PENDING");
    assert_eq!(
        f.err(0, VCPU_START, &[1, 0x1000, 0x2000, 7]),
        Status::ALREADY
    );
    f.vm.vcpu_started(1);
    assert_eq!(f.ok(0, VCPU_GET_STATUS, &[1]), 1);
    assert_eq!(f.ok(1, VCPU_GET_STATUS, &[1]), 1);
    // A failing platform start reports the status and leaves the vCPU STOPPED.
    f.p.fail_start
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        f.err(0, VCPU_START, &[2, 0x1000, 0x2000, 7]),
        Status::FAILED
    );
    assert_eq!(f.ok(0, VCPU_GET_STATUS, &[2]), 0);
    // Stop: allowed while another vCPU runs, refused for the last one (VCPU-9).
    assert_eq!(f.outcome(1, VCPU_STOP, &[]), Outcome::Stop);
    assert_eq!(f.ok(0, VCPU_GET_STATUS, &[1]), 0);
    assert_eq!(f.err(0, VCPU_STOP, &[]), Status::BAD_STATE);
    assert_eq!(f.err(0, VCPU_KICK, &[1]), Status::BAD_STATE);
    assert_eq!(f.err(0, VCPU_KICK, &[3]), Status::INVALID_PARAM);
    assert_eq!(f.ok(0, VCPU_YIELD, &[]), 0);
}

#[test]
fn vcpu_block_kick_deadline_and_event() {
    let f = fixture(2);
    f.ok(0, VCPU_START, &[1, 0x1000, 0x2000, 0]);
    f.vm.vcpu_started(1);
    // A pending kick makes BLOCK return at once and is consumed; kicks do not accumulate.
    f.ok(0, VCPU_KICK, &[1]);
    f.ok(0, VCPU_KICK, &[1]);
    assert_eq!(f.ok(1, VCPU_BLOCK, &[0]), 0);
    assert_eq!(
        f.outcome(1, VCPU_BLOCK, &[0]),
        Outcome::Block { deadline_ns: 0 }
    );
    assert_eq!(f.ok(0, VCPU_GET_STATUS, &[1]), 3, "BLOCKED");
    assert_eq!(f.vm.finish_block(1), None);
    f.take_notified();
    f.ok(0, VCPU_KICK, &[1]);
    assert!(f.take_notified().contains(&1));
    assert_eq!(f.vm.finish_block(1), Some(pvabi::Ret::ok(0)));
    // Deadline in the past: TIMED_OUT at once (VCPU-4).
    assert_eq!(f.err(1, VCPU_BLOCK, &[500]), Status::TIMED_OUT);
    // Deadline reached while blocked.
    assert_eq!(
        f.outcome(1, VCPU_BLOCK, &[2_000]),
        Outcome::Block { deadline_ns: 2_000 }
    );
    assert_eq!(f.vm.next_deadline(), Some(2_000));
    f.set_now(2_000);
    f.vm.poll_timers();
    assert_eq!(
        f.vm.finish_block(1),
        Some(pvabi::Ret::err(Status::TIMED_OUT))
    );
    // An event to a port bound to it ends the wait (VCPU-14); pending upcall returns at once.
    let port = f.events(EV, 1);
    assert_eq!(
        f.outcome(1, VCPU_BLOCK, &[0]),
        Outcome::Block { deadline_ns: 0 }
    );
    f.ok(0, EVENT_SEND, &[port]);
    assert_eq!(f.vm.finish_block(1), Some(pvabi::Ret::ok(0)));
    assert_eq!(f.u32_at(info(1) + vcpu_info::UPCALL_PENDING as u64), 1);
    assert_eq!(f.ok(1, VCPU_BLOCK, &[0]), 0);
}

#[test]
fn steal_time_record() {
    let f = fixture(1);
    let rec = 0x4000u64;
    assert_eq!(
        f.err(0, VCPU_REGISTER_STEAL_TIME, &[rec + 32]),
        Status::INVALID_ADDRESS
    );
    for gpa in [RAM1_END, RAM2_END, !63u64] {
        assert_eq!(
            f.err(0, VCPU_REGISTER_STEAL_TIME, &[gpa]),
            Status::INVALID_ADDRESS
        );
    }
    f.ok(0, VCPU_REGISTER_STEAL_TIME, &[rec]);
    let v = f.u32_at(rec + 8);
    assert_eq!(v % 2, 0);
    f.vm.add_steal_time(0, 77);
    assert_eq!(f.u64_at(rec), 77);
    assert_eq!(f.u32_at(rec + 8), v + 2);
}

// -------------------------------------------------------------------------------- EVENT

#[test]
fn event_channels_pending_mask_selector() {
    let f = fixture(2);
    // Without an event page (EVT-17).
    assert_eq!(f.err(0, EVENT_ALLOC, &[]), Status::BAD_STATE);
    for id in [EVENT_SEND, EVENT_MASK, EVENT_UNMASK, EVENT_CLOSE] {
        assert_eq!(f.err(0, id, &[1]), Status::BAD_STATE, "{id:?}");
    }
    assert_eq!(f.err(0, EVENT_BIND_VCPU, &[1, 0]), Status::BAD_STATE);
    assert_eq!(f.err(0, EVENT_SET_UPCALL, &[2, 0x1000]), Status::BAD_STATE);
    assert_eq!(f.ok(0, EVENT_SET_UPCALL, &[0, 0]), 0);
    // The guest left garbage in the page: ALLOC clears the new port's bits (EVT-3).
    f.put(EV, &u64::MAX.to_le_bytes());
    f.put(EV + 128, &u64::MAX.to_le_bytes());
    assert_eq!(
        f.err(0, EVENT_REGISTER_PAGE, &[EV + 8]),
        Status::INVALID_ADDRESS
    );
    for gpa in [RAM1_END, RAM2_END, !4095u64] {
        assert_eq!(
            f.err(0, EVENT_REGISTER_PAGE, &[gpa]),
            Status::INVALID_ADDRESS
        );
    }
    f.ok(0, EVENT_REGISTER_PAGE, &[EV]);
    assert_eq!(f.err(0, EVENT_REGISTER_PAGE, &[EV]), Status::ALREADY);
    let p1 = f.ok(0, EVENT_ALLOC, &[]);
    let p2 = f.ok(0, EVENT_ALLOC, &[]);
    assert_eq!((p1, p2), (1, 2), "port 0 is never allocated");
    assert_eq!(f.u64_at(EV), !0b110);
    assert_eq!(f.u64_at(EV + 128), !0b110);
    f.put(EV, &0u64.to_le_bytes());
    f.put(EV + 128, &0u64.to_le_bytes());
    assert_eq!(f.err(0, EVENT_BIND_VCPU, &[p1, 0]), Status::ALREADY);
    for bad in [0u64, 1024, 1 << 32, u64::MAX] {
        assert_eq!(f.err(0, EVENT_SEND, &[bad]), Status::INVALID_PARAM);
        assert_eq!(f.err(0, EVENT_MASK, &[bad]), Status::INVALID_PARAM);
        assert_eq!(f.err(0, EVENT_CLOSE, &[bad]), Status::INVALID_PARAM);
    }
    assert_eq!(f.err(0, EVENT_SEND, &[3]), Status::NOT_FOUND);
    assert_eq!(f.err(0, EVENT_BIND_VCPU, &[p1, 2]), Status::INVALID_PARAM);
    f.ok(0, EVENT_BIND_VCPU, &[p2, 1]);
    // Unmasked send: pending, selector and upcall_pending of the bound vCPU.
    f.ok(0, EVENT_SEND, &[p2]);
    assert_eq!(f.u64_at(EV), 1 << p2);
    assert_eq!(f.u64_at(info(1)), 1);
    assert_eq!(f.u32_at(info(1) + 8), 1);
    assert_eq!(f.u64_at(info(0)), 0);
    // Masked send: pending only; unmask delivers.
    f.ok(0, EVENT_MASK, &[p1]);
    assert_eq!(f.u64_at(EV + 128), 1 << p1);
    f.ok(0, EVENT_SEND, &[p1]);
    assert_eq!(f.u64_at(EV) & (1 << p1), 1 << p1);
    assert_eq!(f.u32_at(info(0) + 8), 0);
    f.ok(0, EVENT_UNMASK, &[p1]);
    assert_eq!(f.u64_at(EV + 128), 0);
    assert_eq!(f.u32_at(info(0) + 8), 1);
    // Close clears the pending bit; the port is then unknown.
    f.ok(0, EVENT_CLOSE, &[p1]);
    assert_eq!(f.u64_at(EV) & (1 << p1), 0);
    assert_eq!(f.err(0, EVENT_SEND, &[p1]), Status::NOT_FOUND);
    assert_eq!(f.err(0, EVENT_CLOSE, &[p1]), Status::NOT_FOUND);
    // A high port lands in a later word.
    let mut last = 0;
    while let pvabi::Ret {
        status: Status::SUCCESS,
        value,
    } = f.call(0, EVENT_ALLOC, &[])
    {
        last = value;
    }
    assert_eq!(last, 1023);
    assert_eq!(f.err(0, EVENT_ALLOC, &[]), Status::NO_SPACE);
    f.ok(0, EVENT_SEND, &[1023]);
    assert_eq!(f.u64_at(EV + 15 * 8), 1 << 63);
    assert_eq!(f.u64_at(info(0)) & (1 << 15), 1 << 15);
}

#[test]
fn upcalls_vector_and_callback_frames() {
    let f = fixture(1);
    assert_eq!(f.err(0, EVENT_SET_UPCALL, &[1, 40]), Status::BAD_STATE);
    let port = f.events(EV, 0);
    assert_eq!(f.err(0, EVENT_SET_UPCALL, &[1, 31]), Status::INVALID_PARAM);
    assert_eq!(f.err(0, EVENT_SET_UPCALL, &[1, 256]), Status::INVALID_PARAM);
    assert_eq!(f.err(0, EVENT_SET_UPCALL, &[3, 0]), Status::INVALID_PARAM);
    assert_eq!(
        f.err(0, EVENT_SET_UPCALL, &[1 << 32 | 1, 40]),
        Status::INVALID_PARAM
    );
    assert_eq!(
        f.err(0, EVENT_SET_UPCALL, &[2, 1 << 47]),
        Status::INVALID_PARAM
    );
    f.ok(0, EVENT_SET_UPCALL, &[1, 40]);
    assert_eq!(f.vm.take_upcall(0), None, "nothing pending yet");
    f.ok(0, EVENT_SEND, &[port]);
    assert_eq!(f.vm.take_upcall(0), Some(Upcall::Vector(40)));
    assert_eq!(
        f.vm.take_upcall(0),
        Some(Upcall::Vector(40)),
        "level-triggered (EVT-11)"
    );
    f.ram
        .store_u32(info(0) + 12, 1, std::sync::atomic::Ordering::SeqCst)
        .expect("mask");
    assert_eq!(f.vm.take_upcall(0), None, "upcall_mask set");
    f.ram
        .store_u32(info(0) + 12, 0, std::sync::atomic::Ordering::SeqCst)
        .expect("unmask");
    f.ram
        .store_u32(info(0) + 8, 0, std::sync::atomic::Ordering::SeqCst)
        .expect("ack");
    assert_eq!(f.vm.take_upcall(0), None, "guest cleared upcall_pending");

    // Callback mode: frame saved, mask set, stack computed (EVT-12), return restores (EVT-14).
    f.ok(0, EVENT_SET_UPCALL, &[2, 0x40_0000]);
    f.ram
        .store_u32(info(0) + 8, 0, std::sync::atomic::Ordering::SeqCst)
        .expect("ack");
    f.ram.fetch_and_u64(EV, 0).expect("ack");
    f.ok(0, EVENT_SEND, &[port]);
    assert_eq!(
        f.vm.take_upcall(0),
        Some(Upcall::Callback { target: 0x40_0000 })
    );
    let frame = UpcallFrame {
        rip: 0x1234,
        rsp: 0x9_0007,
        rflags: 0x3202 | 0xCD5,
        rax: 5,
        r11: 11,
        ..Default::default()
    };
    let e = f.vm.enter_callback(0, &frame).expect("enter");
    assert_eq!(e.rip, 0x40_0000);
    assert_eq!(e.rsp, ((0x9_0007 - 128) & !15) - 8);
    assert_eq!(e.rdi, info(0) + vcpu_info::FRAME as u64);
    assert_eq!(e.rsi, 0);
    assert_eq!(f.u32_at(info(0) + 12), 1, "upcall_mask set");
    // While masked no further upcall.
    f.ok(0, EVENT_SEND, &[port]);
    assert_eq!(f.vm.take_upcall(0), None);
    // A non-canonical RIP in the frame is refused, leaving the vCPU in the upcall (EVT-15).
    let frame_gpa = info(0) + vcpu_info::FRAME as u64;
    f.put(frame_gpa, &(1u64 << 63).to_le_bytes());
    assert_eq!(f.err(0, VCPU_UPCALL_RETURN, &[]), Status::INVALID_PARAM);
    assert_eq!(f.u32_at(info(0) + 12), 1);
    f.put(frame_gpa, &0x1234u64.to_le_bytes());
    match f.outcome(0, VCPU_UPCALL_RETURN, &[]) {
        Outcome::UpcallReturn(fr) => {
            // Only the status flags and DF come from the frame (EVT-14).
            assert_eq!(fr.rflags, 0xCD5);
            assert_eq!(
                UpcallFrame {
                    rflags: frame.rflags,
                    ..fr
                },
                frame
            );
        }
        o => panic!("{o:?}"),
    }
    assert_eq!(f.u32_at(info(0) + 12), 0);
    assert_eq!(f.err(0, VCPU_UPCALL_RETURN, &[]), Status::BAD_STATE);
}

// ------------------------------------------------------------------------------- MEMORY

#[test]
fn memory_map_and_balloon() {
    let f = fixture(1);
    assert_eq!(f.ok(0, MEMORY_GET_MAP, &[BUF, 0]), 2);
    assert_eq!(
        f.ok(0, MEMORY_GET_MAP, &[u64::MAX, 0]),
        2,
        "nothing written, nothing checked"
    );
    assert_eq!(f.ok(0, MEMORY_GET_MAP, &[BUF, 1]), 2);
    assert_eq!(f.u64_at(BUF), 0);
    assert_eq!(f.u64_at(BUF + 8), RAM1_END);
    assert_eq!(f.u64_at(BUF + 24), 0, "only max_entries written");
    assert_eq!(f.ok(0, MEMORY_GET_MAP, &[BUF, u64::MAX]), 2);
    assert_eq!(f.u64_at(BUF + 24), RAM2);
    for gpa in hostile_gpas(48) {
        assert_eq!(f.err(0, MEMORY_GET_MAP, &[gpa, 2]), Status::INVALID_ADDRESS);
    }

    assert_eq!(f.ok(0, MEMORY_BALLOON_QUERY, &[]), 0);
    assert_eq!(
        f.err(0, MEMORY_BALLOON_RELEASE, &[RAM2 + 1, 1]),
        Status::INVALID_ADDRESS
    );
    assert_eq!(
        f.err(0, MEMORY_BALLOON_RELEASE, &[RAM2, 0]),
        Status::INVALID_PARAM
    );
    assert_eq!(
        f.err(0, MEMORY_BALLOON_RELEASE, &[RAM2, (1 << 20) + 1]),
        Status::INVALID_PARAM
    );
    assert_eq!(
        f.err(0, MEMORY_BALLOON_RELEASE, &[RAM1_END - 4096, 2]),
        Status::INVALID_ADDRESS
    );
    assert_eq!(
        f.err(0, MEMORY_BALLOON_RELEASE, &[RAM2_END, 1]),
        Status::INVALID_ADDRESS
    );
    assert_eq!(
        f.err(0, MEMORY_BALLOON_RELEASE, &[!4095u64, 2]),
        Status::INVALID_ADDRESS
    );
    f.put(RAM2 + 4096, b"data");
    f.ok(0, MEMORY_BALLOON_RELEASE, &[RAM2, 4]);
    assert_eq!(f.ok(0, MEMORY_BALLOON_QUERY, &[]), 4);
    assert_eq!(
        f.err(0, MEMORY_BALLOON_RELEASE, &[RAM2 + 3 * 4096, 2]),
        Status::ALREADY
    );
    assert!(f.vm.balloon_released(RAM2 + 4096));
    assert_eq!(f.ok(0, HARNESS_BALLOON_CHECK, &[RAM2 + 4096]), 1);
    assert_eq!(
        f.err(0, HARNESS_BALLOON_CHECK, &[RAM2 + 1]),
        Status::INVALID_ADDRESS
    );
    assert_eq!(
        f.err(0, MEMORY_BALLOON_RECLAIM, &[RAM2, 5]),
        Status::BAD_STATE
    );
    f.ok(0, MEMORY_BALLOON_RECLAIM, &[RAM2, 2]);
    assert_eq!(
        f.get(RAM2 + 4096, 4),
        [0; 4],
        "reclaimed pages read as zero"
    );
    assert_eq!(f.ok(0, MEMORY_BALLOON_QUERY, &[]), 2);
    assert_eq!(f.ok(0, HARNESS_BALLOON_CHECK, &[RAM2 + 4096]), 0);
}

// -------------------------------------------------------------------------------- GRANT

fn grant_entry(flags: u16, domid: u32, gfn: u64) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&flags.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&domid.to_le_bytes());
    b.extend_from_slice(&gfn.to_le_bytes());
    b
}

#[test]
fn grant_table_access_checks() {
    let f = fixture(1);
    let table = 0x5000u64;
    assert_eq!(f.ok(0, GRANT_QUERY, &[]), 4096);
    assert_eq!(
        f.err(0, GRANT_SETUP_TABLE, &[table, 4097]),
        Status::INVALID_PARAM
    );
    assert_eq!(
        f.err(0, GRANT_SETUP_TABLE, &[table + 8, 4]),
        Status::INVALID_ADDRESS
    );
    assert_eq!(
        f.err(0, GRANT_SETUP_TABLE, &[RAM1_END - 16, 4]),
        Status::INVALID_ADDRESS
    );
    assert_eq!(
        f.err(0, GRANT_SETUP_TABLE, &[!15u64, 4]),
        Status::INVALID_ADDRESS
    );
    assert!(f.vm.grant_map(0, false).is_err(), "no table");
    f.ok(0, GRANT_SETUP_TABLE, &[table, 4]);
    let page = 0x6000u64;
    f.put(page, b"granted!");
    f.put(table, &grant_entry(1, 0, page / 4096)); // rw
    f.put(table + 16, &grant_entry(3, 0, page / 4096)); // ro
    f.put(table + 32, &grant_entry(1 | 4, 0, page / 4096)); // unknown flag
    f.put(table + 48, &grant_entry(1, 5, page / 4096)); // other domain
    let mut b = [0u8; 8];
    f.vm.grant_read(0, 0, &mut b).expect("read");
    assert_eq!(&b, b"granted!");
    f.vm.grant_write(0, 0, b"G").expect("write");
    assert_eq!(f.get(page, 1), b"G");
    f.vm.grant_read(1, 0, &mut b).expect("ro read");
    assert!(f.vm.grant_write(1, 0, b"x").is_err());
    assert!(f.vm.grant_map(2, false).is_err());
    assert!(f.vm.grant_map(3, false).is_err());
    assert!(f.vm.grant_map(4, false).is_err(), "beyond the table");
    assert!(f.vm.grant_read(0, 4090, &mut b).is_err(), "leaves the page");
    assert!(f.vm.grant_read(0, u64::MAX, &mut b).is_err());
    // Revocation is seen at the next access (GNT-5).
    f.put(table, &grant_entry(0, 0, page / 4096));
    assert!(f.vm.grant_read(0, 0, &mut b).is_err());
    // A frame outside RAM.
    f.put(table, &grant_entry(1, 0, RAM1_END / 4096));
    assert!(f.vm.grant_map(0, false).is_err());
    f.put(table, &grant_entry(1, 0, u64::MAX));
    assert!(f.vm.grant_map(0, false).is_err());
    // HARNESS.GRANT_ACCESS.
    f.put(table, &grant_entry(1, 0, page / 4096));
    assert_eq!(
        f.ok(0, HARNESS_GRANT_ACCESS, &[0, 1, u64::MAX]),
        b'r' as u64
    );
    f.ok(0, HARNESS_GRANT_ACCESS, &[0, 1, b'R' as u64]);
    assert_eq!(f.get(page, 2), b"GR");
    assert_eq!(
        f.err(0, HARNESS_GRANT_ACCESS, &[1, 1, b'x' as u64]),
        Status::DENIED
    );
    assert_eq!(
        f.err(0, HARNESS_GRANT_ACCESS, &[0, 4096, u64::MAX]),
        Status::INVALID_PARAM
    );
    assert_eq!(
        f.err(0, HARNESS_GRANT_ACCESS, &[0, 0, 256]),
        Status::INVALID_PARAM
    );
    assert_eq!(
        f.err(0, HARNESS_GRANT_ACCESS, &[9, 0, u64::MAX]),
        Status::INVALID_PARAM
    );
}

// -------------------------------------------------------------------------------- STORE

#[test]
fn store_through_calls() {
    let f = fixture(1);
    let port = f.events(EV, 0);
    let path = BUF;
    let val = BUF + 0x400;
    let out = BUF + 0x800;
    f.put(path, b"device/vif");
    f.put(val, b"up");
    assert_eq!(
        f.err(0, STORE_READ, &[path, 10, out, 64, 0]),
        Status::NOT_FOUND
    );
    f.ok(0, STORE_WRITE, &[path, 10, val, 2, 0]);
    assert_eq!(f.ok(0, STORE_READ, &[path, 10, out, 64, 0]), 2);
    assert_eq!(f.get(out, 2), b"up");
    // Buffer too small: the size needed in the value (CONV-11).
    let r = f.call(0, STORE_READ, &[path, 10, out, 1, 0]);
    assert_eq!((r.status, r.value), (Status::BUFFER_TOO_SMALL, 2));
    assert_eq!(f.ok(0, STORE_LIST, &[path, 6, out, 64, 0]), 4);
    assert_eq!(f.get(out, 4), b"vif\0");
    assert_eq!(
        f.ok(0, STORE_LIST, &[0, 0, out, 64, 0]),
        7,
        "empty path lists the root"
    );
    // Hostile paths and values.
    assert_eq!(
        f.err(0, STORE_READ, &[path, 257, out, 64, 0]),
        Status::INVALID_PARAM
    );
    assert_eq!(
        f.err(0, STORE_READ, &[path, 0, out, 64, 0]),
        Status::INVALID_PARAM
    );
    f.put(path + 0x100, b"a/../b");
    assert_eq!(
        f.err(0, STORE_READ, &[path + 0x100, 6, out, 64, 0]),
        Status::INVALID_PARAM
    );
    for (gpa, len) in hostile_ranges(8) {
        let s = f.err(0, STORE_READ, &[gpa, len, out, 64, 0]);
        assert!(s == Status::INVALID_ADDRESS || (len > 256 && s == Status::INVALID_PARAM));
        let s = f.err(0, STORE_WRITE, &[path, 10, gpa, len, 0]);
        assert!(s == Status::INVALID_ADDRESS || (len > 4096 && s == Status::NO_SPACE));
    }
    for gpa in hostile_gpas(2) {
        assert_eq!(
            f.err(0, STORE_READ, &[path, 10, gpa, 2, 0]),
            Status::INVALID_ADDRESS
        );
        assert_eq!(
            f.err(0, STORE_LIST, &[path, 6, gpa, 64, 0]),
            Status::INVALID_ADDRESS
        );
        assert_eq!(f.err(0, STORE_WATCH, &[gpa, 6, 1]), Status::INVALID_ADDRESS);
        assert_eq!(
            f.err(0, STORE_REMOVE, &[gpa, 6, 0]),
            Status::INVALID_ADDRESS
        );
    }
    assert_eq!(
        f.err(0, STORE_WRITE, &[path, 10, val, 4097, 0]),
        Status::NO_SPACE
    );
    assert_eq!(
        f.err(0, STORE_READ, &[path, 10, out, 64, 77]),
        Status::NOT_FOUND
    );
    assert_eq!(
        f.err(0, STORE_READ, &[path, 10, out, 64, 1 << 32]),
        Status::INVALID_PARAM
    );
    // Host-written nodes and permissions.
    f.vm.store_write("secret", b"s", pvabi::store::GuestAccess::NONE)
        .expect("host");
    f.put(path + 0x200, b"secret");
    assert_eq!(
        f.err(0, STORE_READ, &[path + 0x200, 6, out, 64, 0]),
        Status::DENIED
    );
    assert_eq!(
        f.err(0, STORE_REMOVE, &[path + 0x200, 6, 0]),
        Status::DENIED
    );
    // Watch: the port is raised and WATCH_NEXT returns header + path.
    assert_eq!(f.err(0, STORE_WATCH, &[path, 6, 0]), Status::INVALID_PARAM);
    assert_eq!(
        f.err(0, STORE_WATCH, &[path, 6, port + 1]),
        Status::NOT_FOUND
    );
    let w = f.ok(0, STORE_WATCH, &[path, 6, port]);
    assert_eq!(f.err(0, STORE_WATCH_NEXT, &[out, 64]), Status::NOT_FOUND);
    f.vm.store_write("device/vif/mac", b"00:11", pvabi::store::GuestAccess::READ)
        .expect("w");
    assert_ne!(f.u64_at(EV) & (1 << port), 0);
    let r = f.call(0, STORE_WATCH_NEXT, &[out, 4]);
    assert_eq!((r.status, r.value), (Status::BUFFER_TOO_SMALL, 16 + 14));
    for gpa in hostile_gpas(30) {
        assert_eq!(
            f.err(0, STORE_WATCH_NEXT, &[gpa, 64]),
            Status::INVALID_ADDRESS
        );
    }
    assert_eq!(f.ok(0, STORE_WATCH_NEXT, &[out, 64]), 30);
    assert_eq!(f.u32_at(out), w as u32);
    assert_eq!(f.u32_at(out + 4), 14);
    assert_eq!(f.get(out + 16, 14), b"device/vif/mac");
    assert_eq!(f.err(0, STORE_WATCH_NEXT, &[out, 64]), Status::NOT_FOUND);
    f.ok(0, STORE_UNWATCH, &[w]);
    assert_eq!(f.err(0, STORE_UNWATCH, &[w]), Status::NOT_FOUND);
    assert_eq!(f.err(0, STORE_UNWATCH, &[u64::MAX]), Status::INVALID_PARAM);
    // Transactions: a conflict.
    let t = f.ok(0, STORE_TXN_START, &[]);
    assert_eq!(f.ok(0, STORE_READ, &[path, 10, out, 64, t]), 2);
    f.ok(0, STORE_WRITE, &[path, 10, val, 1, t]);
    f.vm.store_write("device/vif", b"host", pvabi::store::GuestAccess::READ_WRITE)
        .expect("w");
    assert_eq!(f.err(0, STORE_TXN_COMMIT, &[t]), Status::CONFLICT);
    assert_eq!(f.vm.store_read("device/vif").expect("r"), b"host");
    assert_eq!(f.err(0, STORE_TXN_COMMIT, &[t]), Status::NOT_FOUND);
    assert_eq!(f.err(0, STORE_TXN_COMMIT, &[0]), Status::INVALID_PARAM);
    let t = f.ok(0, STORE_TXN_START, &[]);
    f.ok(0, STORE_WRITE, &[path, 10, val, 1, t]);
    f.ok(0, STORE_TXN_COMMIT, &[t]);
    assert_eq!(f.vm.store_read("device/vif").expect("r"), b"u");
    let t = f.ok(0, STORE_TXN_START, &[]);
    f.ok(0, STORE_TXN_ABORT, &[t]);
    assert_eq!(f.err(0, STORE_TXN_ABORT, &[t]), Status::NOT_FOUND);
    // A host-written READ node below blocks the guest's removal of the subtree.
    assert_eq!(f.err(0, STORE_REMOVE, &[path, 6, 0]), Status::DENIED);
    f.vm.store_remove("device/vif/mac").expect("host remove");
    f.ok(0, STORE_REMOVE, &[path, 6, 0]);
    assert_eq!(
        f.vm.store_list("").expect("list"),
        vec!["secret".to_string()]
    );
}

// -------------------------------------------------------------------------------- POWER

#[test]
fn power_shutdown_and_crash_buffer() {
    let f = fixture(1);
    assert_eq!(f.err(0, POWER_SHUTDOWN, &[3, 0]), Status::INVALID_PARAM);
    assert_eq!(
        f.err(0, POWER_SHUTDOWN, &[1 << 32, 0]),
        Status::INVALID_PARAM
    );
    let buf = 0x7000u64;
    assert_eq!(
        f.err(0, POWER_REGISTER_CRASH_BUFFER, &[buf, 31]),
        Status::INVALID_PARAM
    );
    assert_eq!(
        f.err(0, POWER_REGISTER_CRASH_BUFFER, &[buf, 4097]),
        Status::INVALID_PARAM
    );
    assert_eq!(
        f.err(0, POWER_REGISTER_CRASH_BUFFER, &[buf + 4, 64]),
        Status::INVALID_ADDRESS
    );
    for gpa in [RAM1_END - 32, !7u64, RAM2_END - 8] {
        assert_eq!(
            f.err(0, POWER_REGISTER_CRASH_BUFFER, &[gpa, 64]),
            Status::INVALID_ADDRESS
        );
    }
    f.ok(0, POWER_REGISTER_CRASH_BUFFER, &[buf, 64]);
    let mut hdr = Vec::new();
    hdr.extend_from_slice(b"PVCR");
    hdr.extend_from_slice(&1000u32.to_le_bytes()); // longer than the buffer: clamped
    hdr.extend_from_slice(&42u64.to_le_bytes());
    hdr.extend_from_slice(&0x1234u64.to_le_bytes());
    hdr.extend_from_slice(&0u64.to_le_bytes());
    f.put(buf, &hdr);
    f.put(buf + 32, b"panicked at the disco, really!!");
    assert_eq!(
        f.outcome(0, POWER_SHUTDOWN, &[2, 9]),
        Outcome::Shutdown {
            reason: pvabi::power::ShutdownReason::CRASH,
            code: 9
        }
    );
    let s = f.vm.shutdown_state().expect("shut down");
    let c = s.crash.expect("crash report");
    assert_eq!((c.code, c.rip), (42, 0x1234));
    assert_eq!(c.message.len(), 32);
    assert!(c.message.starts_with("panicked"));
}

// ---------------------------------------------------------------------------- MULTICALL

fn mc_entry(id: pvabi::CallId, flags: u32, args: [u64; 6]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&id.0.to_le_bytes());
    b.extend_from_slice(&flags.to_le_bytes());
    for a in args {
        b.extend_from_slice(&a.to_le_bytes());
    }
    b.extend_from_slice(&[0xAA; 16]);
    b
}

#[test]
fn multicall_runs_in_order_and_writes_results() {
    let f = fixture(1);
    let arr = 0x9000u64;
    f.put(BUF, b"xyz");
    let mut b = Vec::new();
    b.extend(mc_entry(CONSOLE_WRITE, 0, [BUF, 3, 0, 0, 0, 0]));
    b.extend(mc_entry(BASE_GET_VCPU_COUNT, 0, [0; 6]));
    b.extend(mc_entry(VCPU_BLOCK, 0, [0; 6]));
    b.extend(mc_entry(POWER_SHUTDOWN, 0, [0; 6]));
    b.extend(mc_entry(MULTICALL_EXECUTE, 0, [arr, 1, 0, 0, 0, 0]));
    b.extend(mc_entry(pvabi::CallId(0x0001_0077), 0, [0; 6]));
    b.extend(mc_entry(BASE_GET_VCPU_ID, 2, [0; 6])); // reserved flag bit
    b.extend(mc_entry(CONSOLE_WRITE_BYTE, 1, [0x1000, 0, 0, 0, 0, 0])); // fails, stop
    b.extend(mc_entry(
        CONSOLE_WRITE_BYTE,
        0,
        [b'!' as u64, 0, 0, 0, 0, 0],
    )); // not run
    f.put(arr, &b);
    assert_eq!(f.ok(0, MULTICALL_EXECUTE, &[arr, 9]), 8);
    let res = |i: u64| {
        (
            f.u64_at(arr + i * 72 + 56) as i64,
            f.u64_at(arr + i * 72 + 64),
        )
    };
    assert_eq!(res(0), (0, 3));
    assert_eq!(res(1), (0, 1));
    assert_eq!(res(2).0, Status::INVALID_PARAM.0 as i64);
    assert_eq!(res(3).0, Status::INVALID_PARAM.0 as i64);
    assert_eq!(res(4).0, Status::INVALID_PARAM.0 as i64);
    assert_eq!(res(5).0, Status::NOT_SUPPORTED.0 as i64);
    assert_eq!(res(6).0, Status::INVALID_PARAM.0 as i64);
    assert_eq!(res(7).0, Status::INVALID_PARAM.0 as i64);
    assert_eq!(
        f.get(arr + 8 * 72 + 56, 16),
        [0xAA; 16],
        "entry after STOP_ON_ERROR untouched"
    );
    assert_eq!(f.vm.take_console_output(), b"xyz");
    assert_eq!(f.ok(0, MULTICALL_EXECUTE, &[u64::MAX, 0]), 0);
    assert_eq!(
        f.err(0, MULTICALL_EXECUTE, &[arr, 257]),
        Status::INVALID_PARAM
    );
    assert_eq!(
        f.err(0, MULTICALL_EXECUTE, &[arr + 4, 1]),
        Status::INVALID_ADDRESS
    );
    for gpa in [RAM1_END - 72, RAM1_END, !7u64, RAM2_END - 8] {
        assert_eq!(
            f.err(0, MULTICALL_EXECUTE, &[gpa, 2]),
            Status::INVALID_ADDRESS,
            "{gpa:#x}"
        );
    }
}

// --------------------------------------------------------------------------------- RING

#[test]
fn ring_gate_register_process_and_limits() {
    let f = fixture(1);
    let ring = 0xA000u64;
    let order = 2u32;
    let mut hdr = vec![0u8; 64];
    hdr[..4].copy_from_slice(b"PVRG");
    hdr[4..8].copy_from_slice(&order.to_le_bytes());
    f.put(ring, &hdr);
    assert_eq!(
        f.err(0, BASE_RING_REGISTER, &[ring, 9]),
        Status::INVALID_PARAM
    );
    assert_eq!(
        f.err(0, BASE_RING_REGISTER, &[ring, 3]),
        Status::INVALID_PARAM,
        "order mismatch"
    );
    assert_eq!(
        f.err(0, BASE_RING_REGISTER, &[ring + 64, 2]),
        Status::INVALID_ADDRESS
    );
    assert_eq!(
        f.err(0, BASE_RING_REGISTER, &[RAM1_END - 4096, 8]),
        Status::INVALID_ADDRESS
    );
    assert_eq!(
        f.err(0, BASE_RING_REGISTER, &[!4095u64, 0]),
        Status::INVALID_ADDRESS
    );
    assert_eq!(
        f.err(0, BASE_RING_REGISTER, &[0xB000, 2]),
        Status::INVALID_PARAM,
        "no magic"
    );
    assert_eq!(f.err(0, BASE_RING_UNREGISTER, &[]), Status::NOT_FOUND);
    assert_eq!(f.ok(0, BASE_RING_REGISTER, &[ring, 2]), 0x0512);
    assert_eq!(f.err(0, BASE_RING_REGISTER, &[ring, 2]), Status::ALREADY);
    let req = |i: u64, cookie: u32, id: pvabi::CallId, a0: u64| {
        let mut b = Vec::new();
        b.extend_from_slice(&cookie.to_le_bytes());
        b.extend_from_slice(&id.0.to_le_bytes());
        b.extend_from_slice(&a0.to_le_bytes());
        b.extend_from_slice(&[0; 48]);
        f.put(ring + 64 + (i % 4) * 64, &b);
    };
    let cmp = |i: u64| ring + 64 + 4 * 64 + (i % 4) * 24;
    req(0, 11, CONSOLE_WRITE_BYTE, b'a' as u64);
    req(1, 12, BASE_GET_VCPU_COUNT, 0);
    req(2, 13, VCPU_BLOCK, 0);
    f.ram
        .store_u32(ring + 8, 3, std::sync::atomic::Ordering::SeqCst)
        .expect("prod");
    assert_eq!(f.vm.process_ring(), 3);
    assert_eq!(f.u32_at(ring + 12), 3, "req_cons");
    assert_eq!(f.u32_at(ring + 16), 3, "cmp_prod");
    assert_eq!(f.u32_at(cmp(0)), 11);
    assert_eq!(f.u64_at(cmp(1) + 16), 1);
    assert_eq!(f.u64_at(cmp(2) + 8) as i64, Status::INVALID_PARAM.0 as i64);
    assert_eq!(f.vm.take_console_output(), b"a");
    // Completion ring full (cmp_cons not advanced): nothing runs.
    req(3, 14, CONSOLE_WRITE_BYTE, b'b' as u64);
    req(4, 15, CONSOLE_WRITE_BYTE, b'c' as u64);
    f.ram
        .store_u32(ring + 8, 5, std::sync::atomic::Ordering::SeqCst)
        .expect("prod");
    assert_eq!(f.vm.process_ring(), 1);
    f.ram
        .store_u32(ring + 20, 3, std::sync::atomic::Ordering::SeqCst)
        .expect("cons");
    assert_eq!(f.vm.process_ring(), 1);
    // A bogus producer index (more than 2^order ahead): the host stops (RING-9).
    f.ram
        .store_u32(ring + 8, 1000, std::sync::atomic::Ordering::SeqCst)
        .expect("prod");
    f.ram
        .store_u32(ring + 20, 5, std::sync::atomic::Ordering::SeqCst)
        .expect("cons");
    assert_eq!(f.vm.process_ring(), 0);
    assert_eq!(f.vm.take_console_output(), b"bc");
    f.ok(0, BASE_RING_UNREGISTER, &[]);
    assert_eq!(f.vm.process_ring(), 0);
}

// ------------------------------------------------------------------------------ HARNESS

fn report(outcome: u32, clauses: &str, name: &str, detail: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(b"PVRP");
    for v in [
        outcome,
        clauses.len() as u32,
        name.len() as u32,
        detail.len() as u32,
        0,
    ] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(clauses.as_bytes());
    b.extend_from_slice(name.as_bytes());
    b.extend_from_slice(detail);
    b
}

#[test]
fn harness_reports_and_host_services() {
    let f = fixture(1);
    let r = report(0, "BASE-1,BASE-2", "base_version", b"ok");
    f.put(BUF, &r);
    f.ok(0, HARNESS_REPORT, &[BUF, r.len() as u64]);
    let reps = f.vm.take_reports();
    assert_eq!(reps.len(), 1);
    assert_eq!(reps[0].clauses, vec!["BASE-1", "BASE-2"]);
    assert_eq!(reps[0].name, "base_version");
    assert_eq!(reps[0].detail, "ok");
    for bad in [
        report(9, "", "x", b""),
        report(0, "A-1", "x", &[0xff]),
        {
            let mut b = report(0, "", "x", b"");
            b[0] = b'X';
            b
        },
        {
            let mut b = report(0, "", "x", b"");
            b[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
            b
        },
    ] {
        f.put(BUF, &bad);
        assert_eq!(
            f.err(0, HARNESS_REPORT, &[BUF, bad.len() as u64]),
            Status::INVALID_PARAM
        );
    }
    assert_eq!(f.err(0, HARNESS_REPORT, &[BUF, 10]), Status::INVALID_PARAM);
    assert_eq!(
        f.err(0, HARNESS_REPORT, &[BUF, 4097]),
        Status::INVALID_PARAM
    );
    for gpa in hostile_gpas(64) {
        assert_eq!(
            f.err(0, HARNESS_REPORT, &[gpa, 64]),
            Status::INVALID_ADDRESS
        );
    }
    assert!(f.vm.take_reports().is_empty());

    // Host store write/read.
    f.put(BUF, b"cfg/nameval");
    assert_eq!(
        f.err(0, HARNESS_STORE_HOST_WRITE, &[BUF, 8, BUF + 8, 3, 2]),
        Status::INVALID_PARAM
    );
    f.ok(0, HARNESS_STORE_HOST_WRITE, &[BUF, 8, BUF + 8, 3, 1]);
    assert_eq!(f.vm.store_read("cfg/name").expect("r"), b"val");
    assert_eq!(f.err(0, STORE_WRITE, &[BUF, 8, BUF, 1, 0]), Status::DENIED);
    assert_eq!(
        f.ok(0, HARNESS_STORE_HOST_READ, &[BUF, 8, BUF + 0x100, 16]),
        3
    );
    let r = f.call(0, HARNESS_STORE_HOST_READ, &[BUF, 8, BUF + 0x100, 1]);
    assert_eq!((r.status, r.value), (Status::BUFFER_TOO_SMALL, 3));

    // Console readback and input.
    f.ok(0, CONSOLE_WRITE_BYTE, &[b'q' as u64]);
    assert_eq!(f.ok(0, HARNESS_CONSOLE_READBACK, &[BUF, 16]), 1);
    assert_eq!(f.get(BUF, 1), b"q");
    f.put(BUF, b"in");
    f.ok(0, HARNESS_CONSOLE_INPUT, &[BUF, 2]);
    assert_eq!(f.ok(0, CONSOLE_READ, &[BUF + 8, 8]), 2);
    for (gpa, len) in hostile_ranges(4) {
        assert!(f.err(0, HARNESS_CONSOLE_INPUT, &[gpa, len]) != Status::SUCCESS);
    }

    // Clock advance: NOT_SUPPORTED on a real clock, advances a virtual one.
    assert_eq!(
        f.err(0, HARNESS_CLOCK_ADVANCE, &[10]),
        Status::NOT_SUPPORTED
    );
    f.p.virtual_clock
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let t0 = f.ok(0, HARNESS_CLOCK_READ, &[]);
    f.ok(0, HARNESS_CLOCK_ADVANCE, &[10]);
    assert_eq!(f.ok(0, HARNESS_CLOCK_READ, &[]), t0 + 10);

    // Inject.
    assert_eq!(f.err(0, HARNESS_INJECT_EVENT, &[1]), Status::BAD_STATE);
    let port = f.events(EV, 0);
    assert_eq!(
        f.err(0, HARNESS_INJECT_EVENT, &[port + 1]),
        Status::NOT_FOUND
    );
    f.ok(0, HARNESS_INJECT_EVENT, &[port]);
    assert_ne!(f.u64_at(EV) & (1 << port), 0);
    assert_eq!(f.err(0, HARNESS_INJECT_EVENT, &[0]), Status::INVALID_PARAM);
}

// ------------------------------------------------------------------ more edge behaviour

#[test]
fn configuration_errors() {
    use pvabi::memory::{MemKind, MemMapEntry};
    use pvabi_host::{ConfigError, GuestRam, Vm};
    let ram = GuestRam::from_ranges(&[(0, 1 << 20)]).expect("ram");
    let p = std::sync::Arc::new(TestPlatform::default());
    let mk = |cfg: VmConfig| Vm::new(cfg, ram.clone(), p.clone()).map(|_| ());
    assert_eq!(mk(VmConfig::new(0)), Err(ConfigError::VcpuCount(0)));
    assert_eq!(mk(VmConfig::new(17)), Err(ConfigError::VcpuCount(17)));
    let mut c = VmConfig::new(2);
    c.boot_vcpu = 2;
    assert_eq!(mk(c), Err(ConfigError::BootVcpu(2)));
    let e = |base: u64, length: u64, kind: MemKind| MemMapEntry {
        base,
        length,
        kind: kind.0,
        _reserved: 0,
    };
    for map in [
        vec![e(0, 0x2000, MemKind::RAM), e(0x1000, 0x1000, MemKind::RAM)],
        vec![
            e(0, 0x1000, MemKind::RAM),
            e(0x2000_0000, 0x1000, MemKind::RAM),
        ],
        vec![e(0, 0x1800, MemKind::RAM)],
        vec![e(0, 0, MemKind::RAM)],
        vec![e(!0xfffu64, 0x2000, MemKind::MMIO)],
    ] {
        let mut c = VmConfig::new(1);
        c.memory_map = map.clone();
        assert!(
            matches!(mk(c), Err(ConfigError::MemoryMap { .. })),
            "{map:?}"
        );
    }
    let mut c = VmConfig::new(1);
    c.memory_map = vec![
        e(0, 0x1000, MemKind::LOADER),
        e(0x1000, 0xF_F000, MemKind::RAM),
        e(0xFEDF_F000, 0x1000, MemKind::MMIO),
    ];
    assert_eq!(mk(c), Ok(()));
}

#[test]
fn boot_handoff_layout_and_hostile_location() {
    let f = fixture(2);
    assert!(f.vm.write_boot_handoff(0x1004, b"").is_err());
    assert!(f.vm.write_boot_handoff(RAM1_END - 64, b"").is_err());
    assert!(f.vm.write_boot_handoff(!7u64, b"x").is_err());
    assert_eq!(f.vm.write_boot_handoff(0x1000, b"console=pv"), Ok(0x1000));
    let bi: pvabi::BootInfo = f.ram.read_obj(0x1000).expect("bi");
    assert_eq!(bi.magic, pvabi::BootInfo::MAGIC);
    assert_eq!(bi.vcpu_count, 2);
    assert_eq!(bi.mem_map_entries, 2);
    assert_eq!(bi.mem_size, RAM1_END + (RAM2_END - RAM2));
    assert_eq!(bi.features, f.ok(0, BASE_GET_FEATURES, &[]));
    assert_eq!(
        f.get(bi.cmdline_gpa, bi.cmdline_len as usize),
        b"console=pv"
    );
    let e: pvabi::memory::MemMapEntry = f.ram.read_obj(bi.mem_map_gpa + 24).expect("entry");
    assert_eq!((e.base, e.length), (RAM2, RAM2_END - RAM2));
}

#[test]
fn console_read_checks_the_buffer_even_when_empty() {
    let f = fixture(1);
    for (gpa, len) in hostile_ranges(8) {
        let s = f.err(0, CONSOLE_READ, &[gpa, len]);
        assert!(s == Status::INVALID_ADDRESS || (len > 4096 && s == Status::INVALID_PARAM));
        let s = f.err(0, HARNESS_CONSOLE_READBACK, &[gpa, len]);
        assert!(s == Status::INVALID_ADDRESS || (len > 4096 && s == Status::INVALID_PARAM));
    }
    assert_eq!(f.ok(0, CONSOLE_READ, &[u64::MAX, 0]), 0);
}

#[test]
fn store_result_buffers_are_checked_whole() {
    let f = fixture(1);
    f.vm.store_write("k", b"v", pvabi::store::GuestAccess::READ)
        .expect("host");
    f.put(BUF, b"k");
    // Big enough for the value but running off the end of RAM (STORE-4).
    assert_eq!(
        f.err(0, STORE_READ, &[BUF, 1, RAM1_END - 1, 16, 0]),
        Status::INVALID_ADDRESS
    );
    assert_eq!(
        f.err(0, STORE_LIST, &[0, 0, RAM2_END - 1, 16, 0]),
        Status::INVALID_ADDRESS
    );
    assert_eq!(f.ok(0, STORE_READ, &[BUF, 1, RAM1_END - 1, 1, 0]), 1);
    // Host value size limit applies to host writes too (STORE-19).
    assert!(f
        .vm
        .store_write("big", &[0; 4097], pvabi::store::GuestAccess::READ)
        .is_err());
}

#[test]
fn balloon_refuses_shared_areas() {
    let f = fixture(1);
    let ev = RAM2 + 0x3000;
    f.ok(0, EVENT_REGISTER_PAGE, &[ev]);
    assert_eq!(
        f.err(0, MEMORY_BALLOON_RELEASE, &[RAM2, 8]),
        Status::BAD_STATE
    );
    assert_eq!(f.ok(0, MEMORY_BALLOON_QUERY, &[]), 0, "nothing changed");
    f.ok(0, CLOCK_REGISTER_PAGE, &[RAM2 + 0x5020]);
    assert_eq!(
        f.err(0, MEMORY_BALLOON_RELEASE, &[RAM2 + 0x5000, 1]),
        Status::BAD_STATE
    );
    f.ok(0, MEMORY_BALLOON_RELEASE, &[RAM2, 3]);
    f.ok(0, MEMORY_BALLOON_RELEASE, &[RAM2 + 0x4000, 1]);
}

#[test]
fn masked_sends_do_not_wake_and_stopped_vcpus_get_no_upcall() {
    let f = fixture(2);
    let p = f.events(EV, 0);
    f.ok(0, EVENT_BIND_VCPU, &[p, 1]);
    f.ok(0, VCPU_START, &[1, 0x1000, 0x2000, 0]);
    f.vm.vcpu_started(1);
    f.ok(1, EVENT_SET_UPCALL, &[1, 0x40]);
    f.ok(0, EVENT_MASK, &[p]);
    assert_eq!(
        f.outcome(1, VCPU_BLOCK, &[0]),
        Outcome::Block { deadline_ns: 0 }
    );
    f.ok(0, EVENT_SEND, &[p]);
    assert_eq!(f.vm.finish_block(1), None, "masked: still blocked");
    f.ok(0, EVENT_UNMASK, &[p]);
    assert_eq!(f.vm.finish_block(1), Some(pvabi::Ret::ok(0)));
    assert_eq!(f.vm.take_upcall(1), Some(Upcall::Vector(0x40)));
    // Stopped: bits are set, nothing is delivered; VCPU-8 resets the mode at the next start.
    assert_eq!(f.outcome(1, VCPU_STOP, &[]), Outcome::Stop);
    f.ram
        .store_u32(info(1) + 8, 0, std::sync::atomic::Ordering::SeqCst)
        .expect("clear");
    f.ram.fetch_and_u64(EV, 0).expect("clear");
    f.ok(0, EVENT_SEND, &[p]);
    assert_eq!(f.u32_at(info(1) + 8), 1, "EVT-20 sets upcall_pending");
    assert_eq!(f.vm.take_upcall(1), None);
    f.ok(0, VCPU_START, &[1, 0x1000, 0x2000, 0]);
    f.vm.vcpu_started(1);
    assert_eq!(f.vm.take_upcall(1), None, "mode NONE after a restart");
    assert_eq!(
        f.vm.port_binding(p as u32),
        Some(1),
        "binding survives a stop"
    );
}

#[test]
fn closed_ports_cancel_timers_and_silence_watches() {
    let f = fixture(1);
    let p = f.events(EV, 0);
    f.ok(0, CLOCK_SET_TIMER, &[50_000, p]);
    f.put(BUF, b"w");
    let w = f.ok(0, STORE_WATCH, &[BUF, 1, p]);
    f.ok(0, EVENT_CLOSE, &[p]);
    assert_eq!(f.vm.next_deadline(), None, "EVT-5 cancels the timer");
    f.vm.store_write("w", b"", pvabi::store::GuestAccess::READ_WRITE)
        .expect("host");
    assert_eq!(f.u64_at(EV), 0, "STORE-22: raises nothing");
    assert_eq!(
        f.ok(0, STORE_WATCH_NEXT, &[BUF + 0x100, 64]),
        17,
        "still queued"
    );
    f.ok(0, STORE_UNWATCH, &[w]);
}

#[test]
fn quirks_break_what_they_say() {
    use pvabi_host::Quirks;
    let mut cfg = VmConfig::new(1);
    cfg.quirks = Quirks::EVENT_NO_UPCALL | Quirks::STORE_NO_CONFLICT;
    let f = fixture_with(cfg);
    let p = f.events(EV, 0);
    f.ok(0, EVENT_SET_UPCALL, &[1, 0x40]);
    f.ok(0, EVENT_SEND, &[p]);
    assert_eq!(f.u64_at(EV), 1 << p);
    assert_eq!(f.u32_at(info(0) + 8), 0, "no upcall_pending");
    assert_eq!(f.vm.take_upcall(0), None);
    f.put(BUF, b"a");
    f.ok(0, STORE_WRITE, &[BUF, 1, BUF, 1, 0]);
    let t = f.ok(0, STORE_TXN_START, &[]);
    f.ok(0, STORE_READ, &[BUF, 1, BUF + 0x100, 8, t]);
    f.vm.store_write("a", b"h", pvabi::store::GuestAccess::READ_WRITE)
        .expect("host");
    f.ok(0, STORE_TXN_COMMIT, &[t]);
}

#[test]
fn every_returning_call_re_evaluates_delivery() {
    let f = fixture(1);
    let p = f.events(EV, 0);
    f.ok(0, EVENT_SET_UPCALL, &[1, 0x40]);
    f.ok(0, EVENT_SEND, &[p]);
    f.take_notified();
    f.ok(0, BASE_GET_VCPU_ID, &[]);
    assert_eq!(
        f.take_notified(),
        vec![0],
        "upcall still deliverable: notified (EVT-11)"
    );
    f.ram
        .store_u32(info(0) + 8, 0, std::sync::atomic::Ordering::SeqCst)
        .expect("ack");
    f.ok(0, BASE_GET_VCPU_ID, &[]);
    assert!(f.take_notified().is_empty());
}

#[test]
fn every_path_and_buffer_argument_rejects_hostile_ranges() {
    let f = fixture(1);
    f.events(EV, 0);
    f.put(BUF, b"good/path");
    let (pg, pl) = (BUF, 9u64);
    let out = BUF + 0x100;
    // (call, args with the hostile (gpa, len) spliced in at index i)
    let cases: Vec<(pvabi::CallId, [u64; 5], usize)> = vec![
        (STORE_READ, [0, 0, out, 64, 0], 0),
        (STORE_WRITE, [0, 0, out, 1, 0], 0),
        (STORE_LIST, [0, 0, out, 64, 0], 0),
        (STORE_REMOVE, [0, 0, 0, 0, 0], 0),
        (STORE_WATCH, [0, 0, 1, 0, 0], 0),
        (STORE_LIST, [pg, pl, 0, 0, 0], 2),
        (HARNESS_STORE_HOST_WRITE, [0, 0, out, 1, 3], 0),
        (HARNESS_STORE_HOST_WRITE, [pg, pl, 0, 0, 3], 2),
        (HARNESS_STORE_HOST_READ, [0, 0, out, 64, 0], 0),
        (HARNESS_STORE_HOST_READ, [pg, pl, 0, 0, 0], 2),
    ];
    f.vm.store_write("good/path", b"v", pvabi::store::GuestAccess::READ_WRITE)
        .expect("w");
    for (id, args, i) in cases {
        for (gpa, len) in hostile_ranges(9) {
            let mut a = args;
            a[i] = gpa;
            a[i + 1] = len;
            let s = f.err(0, id, &a);
            let too_long = (i == 0 && len > 256) || (i == 2 && len > 4096);
            assert!(
                s == Status::INVALID_ADDRESS
                    || (too_long && (s == Status::INVALID_PARAM || s == Status::NO_SPACE)),
                "{id:?} {a:x?} -> {s:?}"
            );
        }
    }
    assert_eq!(
        f.vm.store_list("good").expect("list"),
        vec!["path".to_string()],
        "nothing changed"
    );
    for gpa in [RAM1_END - 4096, RAM2_END, !4095u64, RAM2 + 1] {
        assert_eq!(
            f.err(0, MEMORY_BALLOON_RECLAIM, &[gpa, 2]),
            Status::INVALID_ADDRESS,
            "{gpa:#x}"
        );
    }
    assert_eq!(
        f.err(0, MEMORY_BALLOON_RECLAIM, &[RAM2, 0]),
        Status::INVALID_PARAM
    );
}

#[test]
fn balloon_ranges_may_span_adjacent_ram_entries_only() {
    use pvabi::memory::{MemKind, MemMapEntry};
    let e = |base: u64, length: u64, kind: MemKind| MemMapEntry {
        base,
        length,
        kind: kind.0,
        _reserved: 0,
    };
    let mut cfg = VmConfig::new(1);
    cfg.memory_map = vec![
        e(0, 0x10000, MemKind::LOADER),
        e(0x10000, 0x70000, MemKind::RAM),
        e(0x80000, 0x80000, MemKind::RAM),
    ];
    let f = fixture_with(cfg);
    f.ok(0, MEMORY_BALLOON_RELEASE, &[0x7F000, 2]);
    assert_eq!(
        f.err(0, MEMORY_BALLOON_RELEASE, &[0xF000, 2]),
        Status::INVALID_ADDRESS,
        "LOADER"
    );
    assert_eq!(
        f.err(0, MEMORY_BALLOON_RELEASE, &[0xFF000, 2]),
        Status::INVALID_ADDRESS,
        "end"
    );
}
