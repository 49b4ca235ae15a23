//! EVENT cases (spec chapter 8, `EVT-*`), and the suite's shared event page.
//!
//! The suite registers one event page for the whole run ([`shared_events`], kept in
//! [`crate::Shared::events`]); the statuses an unregistered guest gets (`EVT-17`) and the
//! registration's own failures (`EVT-1`, `EVT-22`) are checked in fresh guests by the
//! terminal cases.

use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering::SeqCst};

use pvabi::discovery::Features;
use pvabi::event::{EventPage, NUM_PORTS};
use pvabi::{call, Status};
use pvabi_guest::event::{EventChannels, Port};
use pvabi_guest::shared::EventPageShared;
use pvabi_guest::upcall::{self, UpcallInfo};
use pvabi_guest::Pvabi;

use crate::chapters::vcpu::expect_st;
use crate::chapters::vcpu::{
    now, start_worker, stopped_vcpu, wait_for, Mailbox, OP_CALL, OP_CUSTOM, POLL_NS, WAIT_NS,
};
use crate::{Case, Ctx, ExpectedEnd, GuestEntry, TerminalCase};

/// The suite's event page: registers it on first use (recording a failure if the host
/// refuses) and keeps it in [`crate::Shared::events`] for every later case.
pub fn shared_events(c: &mut Ctx<'_>) -> Option<EventChannels> {
    if let Some(e) = c.shared.events {
        return Some(e);
    }
    let page = c.alloc(EventPageShared::new())?;
    let page: &'static EventPageShared = page;
    let ev = c.expect_ok(
        c.pv.event_register_page(page),
        "EVENT.REGISTER_PAGE of the suite's event page",
    )?;
    c.shared.events = Some(ev);
    Some(ev)
}

/// The GPA of the suite's event page.
fn page_gpa(c: &Ctx<'_>, ev: &EventChannels) -> u64 {
    c.pv.translate().gpa_of_ref(ev.page()).unwrap_or(u64::MAX)
}

/// Clears vCPU `v`'s selector and `upcall_pending`.
pub fn quiet(ev: &EventChannels, v: u32) {
    if let Some(i) = ev.page().vcpu.get(v as usize) {
        i.selector.store(0, SeqCst);
        i.upcall_pending.store(0, SeqCst);
    }
}

fn selector(ev: &EventChannels, v: u32) -> u64 {
    ev.page()
        .vcpu
        .get(v as usize)
        .map_or(0, |i| i.selector.load(SeqCst))
}

fn upcall_pending(ev: &EventChannels, v: u32) -> u32 {
    ev.page()
        .vcpu
        .get(v as usize)
        .map_or(0, |i| i.upcall_pending.load(SeqCst))
}

fn upcall_mask(ev: &EventChannels, v: u32) -> u32 {
    ev.page()
        .vcpu
        .get(v as usize)
        .map_or(0, |i| i.upcall_mask.load(SeqCst))
}

fn set_mask_bit(ev: &EventChannels, p: Port) {
    let (w, b) = p.word_bit();
    if let Some(m) = ev.page().mask.get(w) {
        m.fetch_or(b, SeqCst);
    }
}

fn set_pending_bit(ev: &EventChannels, p: Port) {
    let (w, b) = p.word_bit();
    if let Some(m) = ev.page().pending.get(w) {
        m.fetch_or(b, SeqCst);
    }
}

fn me(c: &Ctx<'_>) -> u32 {
    c.pv.vcpu_id().unwrap_or(0)
}

/// The chapter's cases.
pub const CASES: &[Case] = &[
    Case {
        name: "event::shared_page_registered_once",
        clauses: "EVT-1,EVT-22",
        run: shared_page_registered_once,
    },
    Case {
        name: "event::alloc_lowest_port_and_layout",
        clauses: "EVT-2,EVT-3",
        run: alloc_lowest_port_and_layout,
    },
    Case {
        name: "event::alloc_until_no_space",
        clauses: "EVT-3",
        run: alloc_until_no_space,
    },
    Case {
        name: "event::bind_vcpu",
        clauses: "EVT-4,EVT-23",
        run: bind_vcpu,
    },
    Case {
        name: "event::close_clears_and_cancels",
        clauses: "EVT-5",
        run: close,
    },
    Case {
        name: "event::bad_and_unallocated_ports",
        clauses: "EVT-16,EVT-28",
        run: bad_and_unallocated_ports,
    },
    Case {
        name: "event::send_and_coalesce",
        clauses: "EVT-6,EVT-7",
        run: send_and_coalesce,
    },
    Case {
        name: "event::mask",
        clauses: "EVT-8",
        run: mask,
    },
    Case {
        name: "event::unmask",
        clauses: "EVT-9",
        run: unmask,
    },
    Case {
        name: "event::host_state_not_in_page",
        clauses: "EVT-18,EVT-21",
        run: host_state_not_in_page,
    },
    Case {
        name: "event::atomic_bit_updates",
        clauses: "EVT-18",
        run: atomic_bit_updates,
    },
    Case {
        name: "event::raise_of_closed_port_changes_nothing",
        clauses: "EVT-19",
        run: raise_of_closed_port,
    },
    Case {
        name: "event::raise_to_stopped_vcpu",
        clauses: "EVT-20",
        run: crate::chapters::vcpu::raise_to_stopped_vcpu,
    },
    Case {
        name: "event::events_between_vcpus",
        clauses: "EVT-7,VCPU-14",
        run: events_between_vcpus,
    },
    Case {
        name: "event::set_upcall_arguments",
        clauses: "EVT-10,EVT-24,EVT-25,EVT-26",
        run: set_upcall_arguments,
    },
    Case {
        name: "event::upcall_return_outside_upcall",
        clauses: "EVT-15",
        run: upcall_return_outside_upcall,
    },
    Case {
        name: "event::callback_upcall_delivery",
        clauses: "EVT-11",
        run: callback_delivery,
    },
    Case {
        name: "event::callback_upcall_frame_and_return",
        clauses: "EVT-12,EVT-14,EVT-21,EVT-27",
        run: callback_frame_and_return,
    },
    Case {
        name: "event::vector_upcall",
        clauses: "EVT-10,EVT-13",
        run: vector_upcall,
    },
];

/// The chapter's terminal cases (each ends the guest; see [`crate::TerminalCase`]).
pub const TERMINAL: &[TerminalCase] = &[
    TerminalCase {
        name: "event::calls_need_a_page",
        clauses: "EVT-17",
        run: calls_need_a_page,
        expect: POWEROFF_0,
    },
    TerminalCase {
        name: "event::registration",
        clauses: "EVT-1,EVT-22",
        run: registration,
        expect: POWEROFF_0,
    },
    TerminalCase {
        name: "event::inject_and_upcall_return_before_page",
        clauses: "EVT-15,HAR-3",
        run: before_page_inject_and_upcall_return,
        expect: POWEROFF_0,
    },
];

/// The end of the EVENT terminal cases: a clean power-off.
const POWEROFF_0: ExpectedEnd = ExpectedEnd {
    reason: pvabi::power::ShutdownReason::POWEROFF,
    code: 0,
    crash: None,
};

/// Guest functions this chapter's cases pass as vCPU entries or callbacks (the callback
/// target in-process is `pvabi_guest::upcall::in_process_callback`, which the runner
/// registers itself; the cases' own vCPUs use the VCPU chapter's worker).
pub const FUNCTIONS: &[GuestEntry] = &[];

fn shared_page_registered_once(c: &mut Ctx<'_>) {
    let Some(ev) = shared_events(c) else { return };
    let gpa = page_gpa(c, &ev);
    c.check(
        gpa % 4096 == 0,
        format_args!("the suite's event page is at {gpa:#x}"),
    );
    let r = c.raw(call::EVENT_REGISTER_PAGE, [gpa, 0, 0, 0, 0, 0]);
    expect_st(
        c,
        r,
        Status::ALREADY,
        "EVENT.REGISTER_PAGE of the same page again",
    );
    if let Some(other) = c.buf(4096, 4096) {
        let g = c.gpa(other);
        let r = c.raw(call::EVENT_REGISTER_PAGE, [g, 0, 0, 0, 0, 0]);
        expect_st(
            c,
            r,
            Status::ALREADY,
            "EVENT.REGISTER_PAGE of a second page",
        );
    }
    // The registered page is the one the host uses: EVENT.MASK shows in it.
    if let Some(p) = c.expect_ok(c.pv.event_alloc(), "EVENT.ALLOC") {
        c.expect_ok(c.pv.event_mask(p), "EVENT.MASK");
        c.check(
            ev.is_masked(p),
            format_args!("EVENT.MASK did not show in the registered page"),
        );
        let _ = c.pv.event_unmask(p);
        ev.clear_pending(p);
        quiet(&ev, me(c));
        let _ = c.pv.event_close(p);
    }
}

fn alloc_lowest_port_and_layout(c: &mut Ctx<'_>) {
    let Some(ev) = shared_events(c) else { return };
    let me = me(c);
    let mut mine = [0u64; 16];
    let mut last = 0u32;
    let mut high = None;
    // Allocate until a port of word 1 or above comes back; ALLOC hands out the lowest free
    // port, so with nobody freeing meanwhile the ports come in increasing order.
    for _ in 0..200 {
        let Some(p) = c.expect_ok(c.pv.event_alloc(), "EVENT.ALLOC") else {
            break;
        };
        c.check(
            p.0 > last,
            format_args!(
                "EVENT.ALLOC gave {} after {last} (not the lowest free port)",
                p.0
            ),
        );
        last = p.0;
        let (w, b) = p.word_bit();
        if let Some(m) = mine.get_mut(w) {
            *m |= b;
        }
        if p.0 >= 64 {
            high = Some(p);
            break;
        }
    }
    // Free one in the middle, dirty its bits in the page, allocate again: the same port,
    // with pending and mask clear.
    let mid = Port(last.saturating_sub(3).max(1));
    let (mw, mb) = mid.word_bit();
    if mine.get(mw).is_some_and(|m| m & mb != 0) {
        c.expect_ok(c.pv.event_close(mid), "EVENT.CLOSE");
        set_pending_bit(&ev, mid);
        set_mask_bit(&ev, mid);
        if let Some(p) = c.expect_ok(c.pv.event_alloc(), "EVENT.ALLOC after a close") {
            c.check(
                p == mid,
                format_args!("EVENT.ALLOC gave {} after port {} was freed", p.0, mid.0),
            );
            c.check(
                !ev.is_pending(p) && !ev.is_masked(p),
                format_args!("a newly allocated port has pending or mask bits set"),
            );
            // Bound to the calling vCPU: binding it there again is ALREADY.
            let r = c.raw(call::EVENT_BIND_VCPU, [p.arg(), u64::from(me), 0, 0, 0, 0]);
            expect_st(
                c,
                r,
                Status::ALREADY,
                "EVENT.BIND_VCPU of a new port to the allocating vCPU (it must be bound there)",
            );
        }
    }
    // Layout: a port of word >= 1 bound to another vCPU sets bit p % 64 of word p / 64 and
    // that vCPU's selector bit p / 64 in its record at 256 + 192 * v.
    if let Some(p) = high {
        let n = c.pv.info().vcpu_count;
        let v = if n > 1 { n - 1 } else { me };
        if v != me {
            c.expect_ok(c.pv.event_bind_vcpu(p, v), "EVENT.BIND_VCPU");
        }
        quiet(&ev, v);
        quiet(&ev, me);
        let (w, b) = (p.0 as usize / 64, 1u64 << (p.0 % 64));
        let words = |m: &[core::sync::atomic::AtomicU64]| -> [u64; 16] {
            core::array::from_fn(|i| m.get(i).map_or(0, |x| x.load(SeqCst)))
        };
        // EVENT.MASK sets exactly bit p % 64 of mask word p / 64.
        let before = words(&ev.page().mask);
        c.expect_ok(c.pv.event_mask(p), "EVENT.MASK");
        let after = words(&ev.page().mask);
        let changed: [u64; 16] = core::array::from_fn(|i| before[i] ^ after[i]);
        c.check(
            changed
                .iter()
                .enumerate()
                .all(|(i, x)| *x == if i == w { b } else { 0 }),
            format_args!(
                "EVENT.MASK of port {} is not bit {} of mask word {w}",
                p.0,
                p.0 % 64
            ),
        );
        c.expect_ok(c.pv.event_unmask(p), "EVENT.UNMASK");
        // A send sets bit p % 64 of pending word p / 64 (whether it sets one at all is
        // EVT-6's business).
        let before = words(&ev.page().pending);
        c.expect_ok(c.pv.event_send(p), "EVENT.SEND");
        let after = words(&ev.page().pending);
        let changed: [u64; 16] = core::array::from_fn(|i| before[i] ^ after[i]);
        c.check(
            changed.iter().all(|x| *x == 0)
                || changed
                    .iter()
                    .enumerate()
                    .all(|(i, x)| *x == if i == w { b } else { 0 }),
            format_args!("port {} is not bit {} of pending word {w}", p.0, p.0 % 64),
        );
        // Whether a send sets selector bits at all is EVT-7's business; where it sets them
        // is this layout's.
        let others = (0..c.pv.info().vcpu_count)
            .filter(|x| *x != v)
            .any(|x| selector(&ev, x) != 0);
        c.check(
            !others && (selector(&ev, v) == 0 || selector(&ev, v) == 1 << w),
            format_args!(
                "vCPU {v}'s record (offset {}) has selector {:#x}, upcall_pending {}",
                EventPage::vcpu_offset(v),
                selector(&ev, v),
                upcall_pending(&ev, v)
            ),
        );
        if v != me {
            c.check(
                upcall_pending(&ev, me) == 0,
                format_args!("a send to vCPU {v}'s port touched vCPU {me}'s record"),
            );
        }
        ev.clear_pending(p);
        quiet(&ev, v);
    }
    close_all(c, &mine);
}

fn close_all(c: &mut Ctx<'_>, mine: &[u64; 16]) {
    for (w, bits) in mine.iter().enumerate() {
        let mut bits = *bits;
        while bits != 0 {
            let i = bits.trailing_zeros();
            bits &= !(1 << i);
            let p = Port(w as u32 * 64 + i);
            if let Some(ev) = c.shared.events {
                ev.clear_pending(p);
            }
            let _ = c.pv.event_close(p);
        }
    }
}

fn alloc_until_no_space(c: &mut Ctx<'_>) {
    let Some(ev) = shared_events(c) else { return };
    let mut mine = [0u64; 16];
    let mut count = 0u32;
    let mut refused = None;
    for _ in 0..NUM_PORTS + 4 {
        match c.pv.event_alloc() {
            Ok(p) => {
                let (w, b) = p.word_bit();
                if let Some(m) = mine.get_mut(w) {
                    *m |= b;
                }
                count += 1;
            }
            Err(s) => {
                refused = Some(s);
                break;
            }
        }
    }
    c.check(
        refused == Some(Status::NO_SPACE),
        format_args!("after {count} more ports EVENT.ALLOC gave {refused:?}, not NO_SPACE"),
    );
    c.check(
        count < NUM_PORTS,
        format_args!("EVENT.ALLOC handed out {count} ports (at most 1023 exist)"),
    );
    close_all(c, &mine);
    quiet(&ev, me(c));
    // Afterwards allocation works again.
    if let Some(p) = c.expect_ok(c.pv.event_alloc(), "EVENT.ALLOC after freeing") {
        let _ = c.pv.event_close(p);
    }
}

fn bind_vcpu(c: &mut Ctx<'_>) {
    let Some(ev) = shared_events(c) else { return };
    let me = me(c);
    let n = c.pv.info().vcpu_count;
    let Some(p) = c.expect_ok(c.pv.event_alloc(), "EVENT.ALLOC") else {
        return;
    };
    let r = c.raw(call::EVENT_BIND_VCPU, [p.arg(), u64::from(me), 0, 0, 0, 0]);
    expect_st(
        c,
        r,
        Status::ALREADY,
        "EVENT.BIND_VCPU to the vCPU it is bound to",
    );
    for bad in [u64::from(n), 16, 1 << 32, u64::MAX] {
        let r = c.raw(call::EVENT_BIND_VCPU, [p.arg(), bad, 0, 0, 0, 0]);
        expect_st(
            c,
            r,
            Status::INVALID_PARAM,
            "EVENT.BIND_VCPU to a vCPU >= vcpu_count",
        );
    }
    if n > 1 {
        let v = n - 1;
        c.expect_ok(
            c.pv.event_bind_vcpu(p, v),
            "EVENT.BIND_VCPU to another vCPU",
        );
        let r = c.raw(call::EVENT_BIND_VCPU, [p.arg(), u64::from(v), 0, 0, 0, 0]);
        expect_st(
            c,
            r,
            Status::ALREADY,
            "EVENT.BIND_VCPU twice to the same vCPU",
        );
        quiet(&ev, v);
        quiet(&ev, me);
        c.expect_ok(c.pv.event_send(p), "EVENT.SEND");
        let (w, _) = p.word_bit();
        // Whether a send sets selector bits at all is EVT-7's business; if it does, it
        // must do it for the vCPU the port is bound to now, never for the old one.
        let delivered = selector(&ev, v) | selector(&ev, me) != 0;
        c.check(
            !delivered || selector(&ev, v) & (1 << w) != 0,
            format_args!("after EVENT.BIND_VCPU the delivery did not go to vCPU {v}"),
        );
        c.check(
            upcall_pending(&ev, me) == 0 && selector(&ev, me) == 0,
            format_args!("after binding elsewhere the old vCPU {me} still got the event"),
        );
        quiet(&ev, v);
        // Bound to v: binding to v again is ALREADY; bind back.
        c.expect_ok(c.pv.event_bind_vcpu(p, me), "EVENT.BIND_VCPU back");
        let r = c.raw(call::EVENT_BIND_VCPU, [p.arg(), u64::from(me), 0, 0, 0, 0]);
        expect_st(c, r, Status::ALREADY, "EVENT.BIND_VCPU back twice");
    }
    ev.clear_pending(p);
    quiet(&ev, me);
    let _ = c.pv.event_close(p);
}

fn close(c: &mut Ctx<'_>) {
    let Some(ev) = shared_events(c) else { return };
    let me = me(c);
    let Some(p) = c.expect_ok(c.pv.event_alloc(), "EVENT.ALLOC") else {
        return;
    };
    // Close clears the pending bit (set here by the guest itself, so that this does not
    // depend on sends working); a second close is NOT_FOUND.
    set_pending_bit(&ev, p);
    c.expect_ok(c.pv.event_close(p), "EVENT.CLOSE");
    c.check(
        !ev.is_pending(p),
        format_args!("EVENT.CLOSE left the port's pending bit set"),
    );
    c.expect_err(c.pv.event_close(p), Status::NOT_FOUND, "second EVENT.CLOSE");
    quiet(&ev, me);
    // Close cancels a timer armed with the port: reallocated, the port is not raised at the
    // old deadline.
    if c.pv.info().features.contains(Features::TIMER) {
        let Some(q) = c.expect_ok(c.pv.event_alloc(), "EVENT.ALLOC") else {
            return;
        };
        let d = now(&c.pv) + 5 * POLL_NS;
        c.expect_ok(c.pv.set_timer(d, q), "CLOCK.SET_TIMER");
        c.expect_ok(c.pv.event_close(q), "EVENT.CLOSE of a port with a timer");
        let Some(q2) = c.expect_ok(c.pv.event_alloc(), "EVENT.ALLOC") else {
            return;
        };
        let pv = c.pv;
        let passed = wait_for(c, WAIT_NS, || now(&pv) > d + 2 * POLL_NS);
        c.check(
            passed,
            format_args!("system time did not pass the deadline"),
        );
        c.check(
            !ev.is_pending(q2),
            format_args!(
                "a timer armed with a closed port still fired (port {})",
                q2.0
            ),
        );
        let _ = c.pv.cancel_timer(q2);
        let _ = c.pv.event_close(q2);
        quiet(&ev, me);
    }
}

fn bad_and_unallocated_ports(c: &mut Ctx<'_>) {
    let Some(ev) = shared_events(c) else { return };
    let me = u64::from(me(c));
    let calls = [
        (call::EVENT_BIND_VCPU, "EVENT.BIND_VCPU"),
        (call::EVENT_CLOSE, "EVENT.CLOSE"),
        (call::EVENT_SEND, "EVENT.SEND"),
        (call::EVENT_MASK, "EVENT.MASK"),
        (call::EVENT_UNMASK, "EVENT.UNMASK"),
    ];
    for bad in [0, u64::from(NUM_PORTS), 4096, 1 << 32, u64::MAX] {
        for (id, what) in calls {
            let r = c.raw(id, [bad, me, 0, 0, 0, 0]);
            expect_st(c, r, Status::INVALID_PARAM, what);
        }
    }
    // An in-range port that is not allocated: allocate and close one to be sure.
    let Some(p) = c.expect_ok(c.pv.event_alloc(), "EVENT.ALLOC") else {
        return;
    };
    c.expect_ok(c.pv.event_close(p), "EVENT.CLOSE");
    for (id, what) in calls {
        if id == call::EVENT_CLOSE {
            continue;
        }
        let r = c.raw(id, [p.arg(), me, 0, 0, 0, 0]);
        expect_st(c, r, Status::NOT_FOUND, what);
    }
    c.check(
        !ev.is_pending(p) && !ev.is_masked(p),
        format_args!("calls on an unallocated port changed its bits"),
    );
    let r = c.raw(call::EVENT_SEND, [u64::from(NUM_PORTS - 1), 0, 0, 0, 0, 0]);
    if r.status != Status::SUCCESS {
        expect_st(
            c,
            r,
            Status::NOT_FOUND,
            "EVENT.SEND to port 1023 (not allocated)",
        );
    }
}

/// A port of the calling vCPU for one of the send/mask/unmask cases, with the vCPU's record
/// quiet.
fn fresh_port(c: &mut Ctx<'_>) -> Option<(EventChannels, u32, Port)> {
    let ev = shared_events(c)?;
    let me = me(c);
    let p = c.expect_ok(c.pv.event_alloc(), "EVENT.ALLOC")?;
    quiet(&ev, me);
    Some((ev, me, p))
}

fn done_with_port(c: &mut Ctx<'_>, ev: &EventChannels, me: u32, p: Port) {
    ev.clear_pending(p);
    quiet(ev, me);
    let _ = c.pv.event_close(p);
}

fn send_and_coalesce(c: &mut Ctx<'_>) {
    let Some((ev, me, p)) = fresh_port(c) else {
        return;
    };
    let (w, _) = p.word_bit();
    // Send: pending, selector bit p / 64 and upcall_pending.
    let r = c.raw(call::EVENT_SEND, [p.arg(), 0, 0, 0, 0, 0]);
    c.check(
        r.status == Status::SUCCESS && r.value == 0,
        format_args!("EVENT.SEND returned ({:?}, {})", r.status, r.value),
    );
    c.check(
        ev.is_pending(p),
        format_args!("EVENT.SEND did not set pending"),
    );
    c.check(
        selector(&ev, me) & (1 << w) != 0 && upcall_pending(&ev, me) != 0,
        format_args!("EVENT.SEND to an unmasked port did not set selector and upcall_pending"),
    );
    // Coalescing: a send to a pending port changes nothing.
    quiet(&ev, me);
    c.expect_ok(c.pv.event_send(p), "EVENT.SEND to a pending port");
    c.check(
        ev.is_pending(p) && selector(&ev, me) == 0 && upcall_pending(&ev, me) == 0,
        format_args!("a send to an already pending port changed the page"),
    );
    done_with_port(c, &ev, me, p);
}

fn mask(c: &mut Ctx<'_>) {
    let Some((ev, me, p)) = fresh_port(c) else {
        return;
    };
    // Mask: the bit is set, a send sets only pending.
    c.expect_ok(c.pv.event_mask(p), "EVENT.MASK");
    c.check(
        ev.is_masked(p),
        format_args!("EVENT.MASK did not set the mask bit"),
    );
    c.expect_ok(c.pv.event_send(p), "EVENT.SEND to a masked port");
    c.check(
        selector(&ev, me) == 0 && upcall_pending(&ev, me) == 0,
        format_args!("a send to a masked port set more than its pending bit"),
    );
    // The same for a mask bit the guest set directly in the page.
    let _ = c.pv.event_unmask(p);
    ev.clear_pending(p);
    quiet(&ev, me);
    set_mask_bit(&ev, p);
    c.expect_ok(
        c.pv.event_send(p),
        "EVENT.SEND to a port masked in the page",
    );
    c.check(
        selector(&ev, me) == 0 && upcall_pending(&ev, me) == 0,
        format_args!("a mask bit the guest set in the page was ignored"),
    );
    let _ = c.pv.event_unmask(p);
    done_with_port(c, &ev, me, p);
}

fn unmask(c: &mut Ctx<'_>) {
    let Some((ev, me, p)) = fresh_port(c) else {
        return;
    };
    let (w, _) = p.word_bit();
    // Unmask with pending set: delivered now.
    c.expect_ok(c.pv.event_mask(p), "EVENT.MASK");
    c.expect_ok(c.pv.event_send(p), "EVENT.SEND to a masked port");
    quiet(&ev, me);
    c.expect_ok(c.pv.event_unmask(p), "EVENT.UNMASK");
    c.check(
        !ev.is_masked(p),
        format_args!("EVENT.UNMASK did not clear the mask bit"),
    );
    c.check(
        selector(&ev, me) & (1 << w) != 0 && upcall_pending(&ev, me) != 0,
        format_args!("EVENT.UNMASK of a pending port did not deliver it"),
    );
    quiet(&ev, me);
    ev.clear_pending(p);
    // Unmask without pending: nothing delivered.
    c.expect_ok(c.pv.event_mask(p), "EVENT.MASK");
    c.expect_ok(c.pv.event_unmask(p), "EVENT.UNMASK");
    c.check(
        selector(&ev, me) == 0 && upcall_pending(&ev, me) == 0,
        format_args!("EVENT.UNMASK of a port that is not pending delivered something"),
    );
    // A mask bit the guest set in the page: EVENT.UNMASK clears it and delivers.
    set_mask_bit(&ev, p);
    c.expect_ok(
        c.pv.event_send(p),
        "EVENT.SEND to a port masked in the page",
    );
    quiet(&ev, me);
    c.expect_ok(c.pv.event_unmask(p), "EVENT.UNMASK");
    c.check(
        !ev.is_masked(p) && upcall_pending(&ev, me) != 0,
        format_args!("EVENT.UNMASK of a guest-masked pending port did not deliver it"),
    );
    done_with_port(c, &ev, me, p);
}

fn host_state_not_in_page(c: &mut Ctx<'_>) {
    let Some(ev) = shared_events(c) else { return };
    let me = me(c);
    let Some(p) = c.expect_ok(c.pv.event_alloc(), "EVENT.ALLOC") else {
        return;
    };
    let Some(q) = c.expect_ok(c.pv.event_alloc(), "EVENT.ALLOC") else {
        let _ = c.pv.event_close(p);
        return;
    };
    c.expect_ok(c.pv.event_close(q), "EVENT.CLOSE");
    // The guest scribbles over the page: pending bits of a free port, selectors and
    // upcall flags of every vCPU, the frames.
    set_pending_bit(&ev, q);
    let n = c.pv.info().vcpu_count;
    for (v, i) in ev.page().vcpu.iter().enumerate() {
        if v as u32 >= n {
            break;
        }
        for f in &i.frame {
            f.store(0x5A5A_5A5A_5A5A_5A5A, SeqCst);
        }
    }
    // The host's state is its own: the freed port stays free, the allocated one bound.
    let r = c.raw(call::EVENT_SEND, [u64::from(q.0), 0, 0, 0, 0, 0]);
    expect_st(
        c,
        r,
        Status::NOT_FOUND,
        "EVENT.SEND to a free port whose pending bit the guest set",
    );
    let r = c.raw(call::EVENT_BIND_VCPU, [p.arg(), u64::from(me), 0, 0, 0, 0]);
    expect_st(
        c,
        r,
        Status::ALREADY,
        "EVENT.BIND_VCPU to its vCPU after guest writes to the page (the binding must not change)",
    );
    quiet(&ev, me);
    ev.clear_pending(p);
    if let Some(r) = c.expect_ok(c.pv.event_alloc(), "EVENT.ALLOC") {
        c.check(
            r == q && !ev.is_pending(r),
            format_args!(
                "EVENT.ALLOC after guest writes gave port {} (want {})",
                r.0, q.0
            ),
        );
        let _ = c.pv.event_close(r);
    }
    for i in ev.page().vcpu.iter() {
        for f in &i.frame {
            f.store(0, SeqCst);
        }
    }
    ev.clear_pending(q);
    let _ = c.pv.event_close(p);
}

/// Worker side of `event::atomic_bit_updates`: sets bits 40..64 of pending word `aux[0]`,
/// one at a time with atomic ORs, while the boot vCPU makes the host update the same word.
fn set_bits_slowly(mb: &Mailbox) {
    let Some(ev) = mb.events else { return };
    let w = usize::try_from(mb.aux[0].load(SeqCst)).unwrap_or(0);
    let Some(word) = ev.page().pending.get(w) else {
        return;
    };
    for bit in 40..64 {
        word.fetch_or(1 << bit, SeqCst);
        for _ in 0..2000 {
            core::hint::spin_loop();
        }
    }
}

fn atomic_bit_updates(c: &mut Ctx<'_>) {
    let Some(ev) = shared_events(c) else { return };
    if !crate::chapters::vcpu::need_vcpus(c, 2) {
        return;
    }
    let Some(v) = stopped_vcpu(c) else {
        c.skip(format_args!("no STOPPED secondary vCPU to start"));
        return;
    };
    let me = me(c);
    // A port in word 0 below bit 40 (ports are handed out lowest first).
    let Some(p) = c.expect_ok(c.pv.event_alloc(), "EVENT.ALLOC") else {
        return;
    };
    if p.0 >= 40 {
        let _ = c.pv.event_close(p);
        c.skip(format_args!("port {} is not below 40 (ports in use)", p.0));
        return;
    }
    let Some(w) = start_worker(c, v, Some(set_bits_slowly)) else {
        let _ = c.pv.event_close(p);
        return;
    };
    w.mb.aux[0].store(0, SeqCst);
    let seq = w.post_kick(c, OP_CUSTOM);
    let running = crate::chapters::vcpu::spin_wait(c, || w.mb.executing.load(SeqCst) == seq);
    c.check(
        running,
        format_args!("the worker did not start setting bits"),
    );
    // While the worker sets bits, the host sets and the guest clears port p's bit.
    let mut sends = 0u32;
    for _ in 0..4000 {
        if w.mb.ack.load(SeqCst) == seq {
            break;
        }
        if c.pv.event_send(p).is_ok() {
            sends += 1;
        }
        ev.clear_pending(p);
        let _ = c.pv.event_mask(p);
        let _ = c.pv.event_unmask(p);
    }
    let done = w.wait(c, seq).is_some();
    c.check(done, format_args!("the worker did not finish setting bits"));
    let word = ev.page().pending.first().map_or(0, |x| x.load(SeqCst));
    let want = !((1u64 << 40) - 1);
    c.check(
        word & want == want,
        format_args!(
            "pending word 0 is {word:#x} after {sends} sends: a guest-set bit was lost (non-atomic host update)"
        ),
    );
    if let Some(x) = ev.page().pending.first() {
        x.fetch_and(!want, SeqCst);
    }
    ev.clear_pending(p);
    quiet(&ev, me);
    w.finish(c);
    let _ = c.pv.event_close(p);
}

/// The store node the EVENT and HARNESS cases write under.
const STORE_TOP: &[u8] = b"conformance";

/// Whether the store node `conformance` (the EVENT and HARNESS cases write under it) exists now (`None` if that cannot be told).
pub fn store_top_exists(c: &mut Ctx<'_>) -> Option<bool> {
    let path = c.buf(STORE_TOP.len(), 1)?;
    path.copy_from_slice(STORE_TOP);
    match c.pv.store_read_len(path, None) {
        Ok(_) | Err(Status::DENIED) => Some(true),
        Err(Status::NOT_FOUND) => Some(false),
        Err(_) => None,
    }
}

/// Removes the store node `conformance` if it did not exist before the case (`existed`), so the case
/// leaves the store as it found it.
pub fn remove_store_top(c: &mut Ctx<'_>, existed: Option<bool>) {
    if existed != Some(false) {
        return;
    }
    if let Some(path) = c.buf(STORE_TOP.len(), 1) {
        path.copy_from_slice(STORE_TOP);
        let _ = c.pv.store_remove(path, None);
    }
}

fn raise_of_closed_port(c: &mut Ctx<'_>) {
    let Some(ev) = shared_events(c) else { return };
    let me = me(c);
    let top = store_top_exists(c);
    let Some(path) = c.buf(24, 1) else { return };
    path.copy_from_slice(b"conformance/evt19/watch0");
    let path: &'static [u8] = path;
    let Some(val) = c.buf(1, 1) else { return };
    val[0] = b'x';
    let val: &'static [u8] = val;
    let Some(p) = c.expect_ok(c.pv.event_alloc(), "EVENT.ALLOC") else {
        return;
    };
    let Some(watch) = c.expect_ok(c.pv.store_watch(path, p), "STORE.WATCH") else {
        let _ = c.pv.event_close(p);
        return;
    };
    c.expect_ok(c.pv.event_close(p), "EVENT.CLOSE of the watch's port");
    quiet(&ev, me);
    let before: [u64; 16] =
        core::array::from_fn(|i| ev.page().pending.get(i).map_or(0, |x| x.load(SeqCst)));
    // The write fires the watch, which raises the closed port: nothing may change.
    c.expect_ok(
        c.pv.store_write(path, val, None),
        "STORE.WRITE of the watched node",
    );
    let after: [u64; 16] =
        core::array::from_fn(|i| ev.page().pending.get(i).map_or(0, |x| x.load(SeqCst)));
    c.check(
        before == after && selector(&ev, me) == 0 && upcall_pending(&ev, me) == 0,
        format_args!("a watch raising a closed port changed the event page"),
    );
    let _ = c.pv.store_unwatch(watch);
    if let Some(parent) = c.buf(17, 1) {
        parent.copy_from_slice(b"conformance/evt19");
        let _ = c.pv.store_remove(parent, None);
    }
    remove_store_top(c, top);
}

fn events_between_vcpus(c: &mut Ctx<'_>) {
    let Some(ev) = shared_events(c) else { return };
    if !crate::chapters::vcpu::need_vcpus(c, 2) {
        return;
    }
    let Some(v) = stopped_vcpu(c) else {
        c.skip(format_args!("no STOPPED secondary vCPU to start"));
        return;
    };
    let me = me(c);
    let Some(to_worker) = c.expect_ok(c.pv.event_alloc(), "EVENT.ALLOC") else {
        return;
    };
    let Some(to_boot) = c.expect_ok(c.pv.event_alloc(), "EVENT.ALLOC") else {
        let _ = c.pv.event_close(to_worker);
        return;
    };
    let Some(w) = start_worker(c, v, None) else {
        let _ = c.pv.event_close(to_worker);
        let _ = c.pv.event_close(to_boot);
        return;
    };
    c.expect_ok(c.pv.event_bind_vcpu(to_worker, v), "EVENT.BIND_VCPU");
    // The worker blocks with its upcall_mask set; a send to its port must still wake it.
    if let Some(i) = ev.page().vcpu.get(v as usize) {
        i.upcall_mask.store(1, SeqCst);
        i.upcall_pending.store(0, SeqCst);
    }
    let seq = w.post(OP_CALL, call::VCPU_BLOCK, [0; 6]);
    if w.wait_blocked(c, seq) {
        c.expect_ok(
            c.pv.event_send(to_worker),
            "EVENT.SEND to the worker's port",
        );
        match w.wait(c, seq) {
            Some(r) => {
                expect_st(c, r, Status::SUCCESS, "VCPU.BLOCK woken by an event");
            }
            None => {
                c.check(
                    false,
                    format_args!("a send did not wake a blocked vCPU whose upcall_mask is set"),
                );
            }
        }
    }
    c.check(
        ev.is_pending(to_worker),
        format_args!("the worker's port is not pending"),
    );
    if let Some(i) = ev.page().vcpu.get(v as usize) {
        i.upcall_mask.store(0, SeqCst);
    }
    ev.clear_pending(to_worker);
    quiet(&ev, v);
    // The worker sends to the boot vCPU's port while the boot vCPU blocks.
    quiet(&ev, me);
    let seq = w.post(OP_CALL, call::EVENT_SEND, [to_boot.arg(), 0, 0, 0, 0, 0]);
    let deadline = now(&c.pv) + WAIT_NS;
    let mut woke = false;
    for _ in 0..1000 {
        if ev.is_pending(to_boot) {
            woke = true;
            break;
        }
        let r = c.raw(call::VCPU_BLOCK, [deadline, 0, 0, 0, 0, 0]);
        if r.status == Status::TIMED_OUT {
            break;
        }
    }
    c.check(
        woke && now(&c.pv) < deadline,
        format_args!("an event sent by vCPU {v} did not wake the blocked vCPU {me}"),
    );
    c.check(
        selector(&ev, me) != 0,
        format_args!("an event sent by another vCPU did not set this vCPU's selector"),
    );
    if let Some(r) = w.wait(c, seq) {
        expect_st(c, r, Status::SUCCESS, "the worker's EVENT.SEND");
    }
    ev.clear_pending(to_boot);
    quiet(&ev, me);
    w.finish(c);
    let _ = c.pv.event_close(to_worker);
    let _ = c.pv.event_close(to_boot);
}

fn set_upcall_arguments(c: &mut Ctx<'_>) {
    let Some(_ev) = shared_events(c) else { return };
    let f = c.pv.info().features;
    // NONE ignores the target.
    for t in [0, 5, u64::MAX] {
        let r = c.raw(call::EVENT_SET_UPCALL, [0, t, 0, 0, 0, 0]);
        expect_st(c, r, Status::SUCCESS, "EVENT.SET_UPCALL(NONE, any target)");
    }
    for mode in [3, 0xFFFF_FFFF, 1 << 32, u64::MAX] {
        let r = c.raw(call::EVENT_SET_UPCALL, [mode, 40, 0, 0, 0, 0]);
        expect_st(
            c,
            r,
            Status::INVALID_PARAM,
            "EVENT.SET_UPCALL with an unknown mode",
        );
    }
    if f.contains(Features::UPCALL_VECTOR) {
        for t in [0, 31, 256, 1 << 40] {
            let r = c.raw(call::EVENT_SET_UPCALL, [1, t, 0, 0, 0, 0]);
            expect_st(
                c,
                r,
                Status::INVALID_PARAM,
                "EVENT.SET_UPCALL(VECTOR) outside 32..=255",
            );
        }
    } else {
        let r = c.raw(call::EVENT_SET_UPCALL, [1, 40, 0, 0, 0, 0]);
        expect_st(
            c,
            r,
            Status::NOT_SUPPORTED,
            "EVENT.SET_UPCALL(VECTOR) without the UPCALL_VECTOR feature",
        );
    }
    if f.contains(Features::UPCALL_CALLBACK) {
        for t in [
            0x0000_8000_0000_0000,
            0xFFFF_7FFF_FFFF_0000,
            0x0123_4567_89AB_CDEF,
        ] {
            let r = c.raw(call::EVENT_SET_UPCALL, [2, t, 0, 0, 0, 0]);
            expect_st(
                c,
                r,
                Status::INVALID_PARAM,
                "EVENT.SET_UPCALL(CALLBACK) with a non-canonical target",
            );
        }
    } else {
        let r = c.raw(call::EVENT_SET_UPCALL, [2, 0x1000, 0, 0, 0, 0]);
        expect_st(
            c,
            r,
            Status::NOT_SUPPORTED,
            "EVENT.SET_UPCALL(CALLBACK) without the UPCALL_CALLBACK feature",
        );
    }
    // The valid modes are accepted where this environment can take them (nothing is
    // pending meanwhile, so nothing is delivered).
    let me = me(c);
    if let Some(ev) = c.shared.events {
        quiet(&ev, me);
        upcall::install(&c.pv, &ev, handler);
        if f.contains(Features::UPCALL_CALLBACK) && c.platform.callback_upcalls() {
            c.expect_ok(c.pv.set_upcall_callback(), "EVENT.SET_UPCALL(CALLBACK)");
        }
        if let (true, Some(v)) = (
            f.contains(Features::UPCALL_VECTOR),
            c.platform.upcall_vector(),
        ) {
            c.expect_ok(c.pv.set_upcall_vector(v), "EVENT.SET_UPCALL(VECTOR)");
        }
        c.expect_ok(c.pv.set_upcall_none(), "EVENT.SET_UPCALL(NONE)");
        upcall::uninstall();
    }
    c.expect_ok(c.pv.set_upcall_none(), "EVENT.SET_UPCALL(NONE)");
}

fn upcall_return_outside_upcall(c: &mut Ctx<'_>) {
    let Some(_ev) = shared_events(c) else { return };
    c.expect_ok(c.pv.set_upcall_none(), "EVENT.SET_UPCALL(NONE)");
    let r = c.raw(call::VCPU_UPCALL_RETURN, [0; 6]);
    expect_st(c, r, Status::BAD_STATE, "VCPU.UPCALL_RETURN in mode NONE");
}

// State the upcall handler records (the handler is a plain function the shim calls).
static UP_COUNT: AtomicU32 = AtomicU32::new(0);
static UP_PORT: AtomicU32 = AtomicU32::new(0);
static UP_VCPU: AtomicU32 = AtomicU32::new(u32::MAX);
static UP_FRAME: AtomicU64 = AtomicU64::new(0);
static UP_MODE: AtomicU32 = AtomicU32::new(u32::MAX);
static UP_MASK: AtomicU32 = AtomicU32::new(0);
static UP_FRAME_RIP: AtomicU64 = AtomicU64::new(0);
static UP_FRAME_RSP: AtomicU64 = AtomicU64::new(0);
static UP_FRAME_RESERVED: AtomicU64 = AtomicU64::new(0);
/// Set to make the next callback try VCPU.UPCALL_RETURN with a non-canonical saved RIP.
static UP_TRY_BAD_RETURN: AtomicU32 = AtomicU32::new(0);
static UP_BAD_RETURN_STATUS: AtomicU64 = AtomicU64::new(0);
static UP_MASK_AFTER_BAD_RETURN: AtomicU32 = AtomicU32::new(0);
static UP_PV: AtomicPtr<Pvabi> = AtomicPtr::new(core::ptr::null_mut());

fn handler(port: Port, info: &UpcallInfo) {
    UP_COUNT.fetch_add(1, SeqCst);
    UP_PORT.store(port.0, SeqCst);
    UP_VCPU.store(info.vcpu, SeqCst);
    UP_FRAME.store(info.frame_gpa.unwrap_or(0), SeqCst);
    UP_MODE.store(info.mode.0, SeqCst);
    let Some(page) = upcall::installed_events() else {
        return;
    };
    let Some(rec) = page.vcpu.get(info.vcpu as usize) else {
        return;
    };
    UP_MASK.store(rec.upcall_mask.load(SeqCst), SeqCst);
    let f = rec.frame();
    UP_FRAME_RIP.store(f.rip, SeqCst);
    UP_FRAME_RSP.store(f.rsp, SeqCst);
    let reserved = rec
        .frame
        .iter()
        .skip(12)
        .fold(0u64, |a, x| a | x.load(SeqCst));
    UP_FRAME_RESERVED.store(reserved, SeqCst);
    if UP_TRY_BAD_RETURN.swap(0, SeqCst) != 0 {
        let pv = UP_PV.load(SeqCst);
        if pv.is_null() {
            return;
        }
        // SAFETY: `UP_PV` holds null or a pointer made from a `&'static Pvabi` that the case
        // moved into the never-freed arena and never writes again; it is non-null here.
        let pv: &Pvabi = unsafe { &*pv };
        let Some(rip) = rec.frame.first() else {
            return;
        };
        let saved = rip.load(SeqCst);
        rip.store(0x0000_8000_0000_0000, SeqCst);
        // SAFETY: VCPU.UPCALL_RETURN names no guest memory. With the non-canonical saved RIP
        // a conforming host refuses it and returns; a host that accepted it would resume at
        // the saved frame, which is the host's failure the case exists to detect.
        let r = unsafe { pv.call_unchecked(call::VCPU_UPCALL_RETURN, [0; 6]) };
        rip.store(saved, SeqCst);
        UP_BAD_RETURN_STATUS.store(r.status.to_reg(), SeqCst);
        UP_MASK_AFTER_BAD_RETURN.store(rec.upcall_mask.load(SeqCst), SeqCst);
    }
}

fn reset_handler_state() {
    UP_COUNT.store(0, SeqCst);
    UP_PORT.store(0, SeqCst);
    UP_VCPU.store(u32::MAX, SeqCst);
    UP_FRAME.store(0, SeqCst);
    UP_MODE.store(u32::MAX, SeqCst);
    UP_MASK.store(0, SeqCst);
    UP_TRY_BAD_RETURN.store(0, SeqCst);
    UP_BAD_RETURN_STATUS.store(0, SeqCst);
}

fn callback_delivery(c: &mut Ctx<'_>) {
    callback_upcall(c, false);
}

fn callback_frame_and_return(c: &mut Ctx<'_>) {
    callback_upcall(c, true);
}

/// The callback-upcall scenario; `frame_part` selects what is judged: the delivery rules
/// (`EVT-11`) or, given that an upcall was delivered, the frame and the return (`EVT-12`,
/// `EVT-14`, `EVT-21`, `EVT-27`).
fn callback_upcall(c: &mut Ctx<'_>, frame_part: bool) {
    if !c.pv.info().features.contains(Features::UPCALL_CALLBACK) {
        c.skip(format_args!("the host does not offer UPCALL_CALLBACK"));
        return;
    }
    if !c.platform.callback_upcalls() {
        c.skip(format_args!(
            "callback upcalls cannot be taken in this environment ({})",
            c.platform.name()
        ));
        return;
    }
    let Some(ev) = shared_events(c) else { return };
    let me = me(c);
    let Some(pvs) = c.alloc(c.pv) else { return };
    UP_PV.store(pvs, SeqCst);
    reset_handler_state();
    let Some(p) = c.expect_ok(c.pv.event_alloc(), "EVENT.ALLOC") else {
        return;
    };
    quiet(&ev, me);
    if let Some(i) = ev.page().vcpu.get(me as usize) {
        i.upcall_mask.store(0, SeqCst);
        // Scribbled reserved words of the frame: the host writes them as zero (EVT-21).
        for f in i.frame.iter().skip(12) {
            f.store(0xA5A5_A5A5_A5A5_A5A5, SeqCst);
        }
    }
    upcall::install(&c.pv, &ev, handler);
    // Mode CALLBACK, nothing delivered yet: VCPU.UPCALL_RETURN is BAD_STATE.
    if c.expect_ok(c.pv.set_upcall_callback(), "EVENT.SET_UPCALL(CALLBACK)")
        .is_some()
    {
        let r = c.raw(call::VCPU_UPCALL_RETURN, [0; 6]);
        expect_st(
            c,
            r,
            Status::BAD_STATE,
            "VCPU.UPCALL_RETURN in mode CALLBACK with no upcall delivered",
        );
        // 1. A send delivers one callback upcall before the vCPU continues.
        UP_TRY_BAD_RETURN.store(1, SeqCst);
        c.expect_ok(c.pv.event_send(p), "EVENT.SEND");
        let _ = c.pv.vcpu_yield();
        let delivered = UP_COUNT.load(SeqCst) > 0;
        if frame_part && !delivered {
            c.skip(format_args!(
                "no callback upcall was delivered (see EVT-11), so there is no frame to check"
            ));
        }
        c.check(
            frame_part || (UP_COUNT.load(SeqCst) == 1 && UP_PORT.load(SeqCst) == p.0),
            format_args!(
                "after a send the handler ran {} times (port {})",
                UP_COUNT.load(SeqCst),
                UP_PORT.load(SeqCst)
            ),
        );
        let frame_gpa = page_gpa(c, &ev)
            + EventPage::vcpu_offset(me) as u64
            + pvabi::event::vcpu_info::FRAME as u64;
        if frame_part && delivered {
            c.check(
                UP_VCPU.load(SeqCst) == me && UP_FRAME.load(SeqCst) == frame_gpa,
                format_args!(
                "the callback got RSI {} and RDI {:#x}; want {me} and the frame at {frame_gpa:#x}",
                UP_VCPU.load(SeqCst),
                UP_FRAME.load(SeqCst)
            ),
            );
            c.check(
                UP_MASK.load(SeqCst) == 1,
                format_args!(
                    "upcall_mask was {} inside the callback, not 1",
                    UP_MASK.load(SeqCst)
                ),
            );
            c.check(
                UP_COUNT.load(SeqCst) == 0 || UP_FRAME_RESERVED.load(SeqCst) == 0,
                format_args!("the host left the frame's reserved words nonzero"),
            );
            if !c.platform.in_process() {
                let (rip, rsp) = (UP_FRAME_RIP.load(SeqCst), UP_FRAME_RSP.load(SeqCst));
                c.check(
                    rip != 0 && rsp != 0,
                    format_args!("the saved frame has RIP {rip:#x}, RSP {rsp:#x}"),
                );
            }
            // EVT-27: the non-canonical RIP was refused, leaving the vCPU in the upcall.
            c.check(
                crate::chapters::vcpu::st(UP_BAD_RETURN_STATUS.load(SeqCst))
                    == Status::INVALID_PARAM,
                format_args!(
                    "VCPU.UPCALL_RETURN with a non-canonical saved RIP gave {:?}",
                    crate::chapters::vcpu::st(UP_BAD_RETURN_STATUS.load(SeqCst))
                ),
            );
            c.check(
                UP_MASK_AFTER_BAD_RETURN.load(SeqCst) == 1,
                format_args!("a refused VCPU.UPCALL_RETURN cleared upcall_mask"),
            );
            // EVT-14: the return cleared upcall_mask and resumed here.
            c.check(
                upcall_mask(&ev, me) == 0,
                format_args!(
                    "after the upcall returned upcall_mask is {}",
                    upcall_mask(&ev, me)
                ),
            );
            c.check(
                !ev.is_pending(p),
                format_args!("the handler did not consume the event"),
            );
        }
        if !frame_part {
            // 2. upcall_mask set by the guest: a send is not delivered; once the guest clears
            // the mask, the host delivers at the return of the next call (EVT-11).
            if let Some(i) = ev.page().vcpu.get(me as usize) {
                i.upcall_mask.store(1, SeqCst);
            }
            let n0 = UP_COUNT.load(SeqCst);
            c.expect_ok(c.pv.event_send(p), "EVENT.SEND with upcall_mask set");
            let _ = c.pv.vcpu_yield();
            c.check(
                UP_COUNT.load(SeqCst) == n0,
                format_args!("an upcall was delivered while upcall_mask was set"),
            );
            c.check(
            upcall_pending(&ev, me) != 0 && upcall_mask(&ev, me) == 1,
            format_args!(
                "with upcall_mask set: upcall_pending {}, upcall_mask {} (the host must not touch the mask)",
                upcall_pending(&ev, me),
                upcall_mask(&ev, me)
            ),
        );
            if let Some(i) = ev.page().vcpu.get(me as usize) {
                i.upcall_mask.store(0, SeqCst);
            }
            let _ = c.pv.time_ns();
            c.check(
                UP_COUNT.load(SeqCst) == n0 + 1,
                format_args!(
                "after the guest cleared upcall_mask the next call's return delivered {} upcalls",
                UP_COUNT.load(SeqCst) - n0
            ),
            );
            // 3. Mode NONE again: a send is not delivered.
            c.expect_ok(c.pv.set_upcall_none(), "EVENT.SET_UPCALL(NONE)");
            let n1 = UP_COUNT.load(SeqCst);
            c.expect_ok(c.pv.event_send(p), "EVENT.SEND in mode NONE");
            let _ = c.pv.vcpu_yield();
            c.check(
                UP_COUNT.load(SeqCst) == n1,
                format_args!("an upcall was delivered in mode NONE"),
            );
        }
        let r = c.raw(call::VCPU_UPCALL_RETURN, [0; 6]);
        expect_st(c, r, Status::BAD_STATE, "VCPU.UPCALL_RETURN in mode NONE");
    }
    let _ = c.pv.set_upcall_none();
    upcall::uninstall();
    ev.clear_pending(p);
    quiet(&ev, me);
    if let Some(i) = ev.page().vcpu.get(me as usize) {
        i.upcall_mask.store(0, SeqCst);
    }
    let _ = c.pv.event_close(p);
}

fn vector_upcall(c: &mut Ctx<'_>) {
    if !c.pv.info().features.contains(Features::UPCALL_VECTOR) {
        c.skip(format_args!("the host does not offer UPCALL_VECTOR"));
        return;
    }
    let Some(vector) = c.platform.upcall_vector() else {
        c.skip(format_args!(
            "no interrupt vector can be taken in this environment ({})",
            c.platform.name()
        ));
        return;
    };
    let Some(ev) = shared_events(c) else { return };
    let me = me(c);
    reset_handler_state();
    let Some(p) = c.expect_ok(c.pv.event_alloc(), "EVENT.ALLOC") else {
        return;
    };
    quiet(&ev, me);
    upcall::install(&c.pv, &ev, handler);
    if c.expect_ok(c.pv.set_upcall_vector(vector), "EVENT.SET_UPCALL(VECTOR)")
        .is_some()
    {
        c.expect_ok(c.pv.event_send(p), "EVENT.SEND");
        let pv = c.pv;
        let got = wait_for(c, WAIT_NS, || UP_COUNT.load(SeqCst) > 0);
        let _ = pv.vcpu_yield();
        c.check(
            got && UP_COUNT.load(SeqCst) == 1 && UP_PORT.load(SeqCst) == p.0,
            format_args!(
                "a send in VECTOR mode ran the handler {} times",
                UP_COUNT.load(SeqCst)
            ),
        );
        c.check(
            UP_MODE.load(SeqCst) == pvabi::event::UpcallMode::VECTOR.0,
            format_args!("the upcall did not arrive through the vector"),
        );
    }
    let _ = c.pv.set_upcall_none();
    upcall::uninstall();
    ev.clear_pending(p);
    quiet(&ev, me);
    let _ = c.pv.event_close(p);
}

fn calls_need_a_page(c: &mut Ctx<'_>) {
    let pv = c.pv;
    let me = u64::from(me(c));
    let f = pv.info().features;
    // EVT-17: every call that needs the event page is BAD_STATE without one.
    let r = c.raw(call::EVENT_ALLOC, [0; 6]);
    expect_st(c, r, Status::BAD_STATE, "EVENT.ALLOC without an event page");
    for (id, what) in [
        (
            call::EVENT_BIND_VCPU,
            "EVENT.BIND_VCPU without an event page",
        ),
        (call::EVENT_CLOSE, "EVENT.CLOSE without an event page"),
        (call::EVENT_SEND, "EVENT.SEND without an event page"),
        (call::EVENT_MASK, "EVENT.MASK without an event page"),
        (call::EVENT_UNMASK, "EVENT.UNMASK without an event page"),
    ] {
        let r = c.raw(id, [1, me, 0, 0, 0, 0]);
        expect_st(c, r, Status::BAD_STATE, what);
    }
    if f.contains(Features::UPCALL_VECTOR) {
        let r = c.raw(call::EVENT_SET_UPCALL, [1, 40, 0, 0, 0, 0]);
        expect_st(
            c,
            r,
            Status::BAD_STATE,
            "EVENT.SET_UPCALL(VECTOR) without an event page",
        );
    }
    if f.contains(Features::UPCALL_CALLBACK) {
        let target = pvabi_guest::upcall::in_process_callback as GuestEntry as usize as u64;
        let r = c.raw(call::EVENT_SET_UPCALL, [2, target, 0, 0, 0, 0]);
        expect_st(
            c,
            r,
            Status::BAD_STATE,
            "EVENT.SET_UPCALL(CALLBACK) without an event page",
        );
    }
    c.report_before_end();
    pv.power_off(0);
}

fn registration(c: &mut Ctx<'_>) {
    let pv = c.pv;
    // EVT-1: bad addresses are INVALID_ADDRESS.
    let Some(page) = c.alloc(EventPageShared::new()) else {
        return;
    };
    let page: &'static EventPageShared = page;
    let gpa = pv.translate().gpa_of_ref(page).unwrap_or(u64::MAX);
    let end = c.ram_end();
    for (a, what) in [
        (gpa + 8, "EVENT.REGISTER_PAGE misaligned by 8"),
        (gpa + 2048, "EVENT.REGISTER_PAGE misaligned by 2048"),
        ((end + 4095) & !4095, "EVENT.REGISTER_PAGE beyond guest RAM"),
        (1 << 52, "EVENT.REGISTER_PAGE far beyond guest RAM"),
        (!4095u64, "EVENT.REGISTER_PAGE wrapping the address space"),
    ] {
        let r = c.raw(call::EVENT_REGISTER_PAGE, [a, 0, 0, 0, 0, 0]);
        expect_st(c, r, Status::INVALID_ADDRESS, what);
    }
    let r = c.raw(call::EVENT_ALLOC, [0; 6]);
    expect_st(
        c,
        r,
        Status::BAD_STATE,
        "EVENT.ALLOC after refused registrations (no page may have been taken)",
    );
    if let Some(ev) = c.expect_ok(pv.event_register_page(page), "EVENT.REGISTER_PAGE") {
        let r = c.raw(call::EVENT_REGISTER_PAGE, [gpa, 0, 0, 0, 0, 0]);
        expect_st(c, r, Status::ALREADY, "EVENT.REGISTER_PAGE again");
        if let Some(other) = c.buf(4096, 4096) {
            let g = c.gpa(other);
            let r = c.raw(call::EVENT_REGISTER_PAGE, [g, 0, 0, 0, 0, 0]);
            expect_st(
                c,
                r,
                Status::ALREADY,
                "EVENT.REGISTER_PAGE of a second page",
            );
        }
        if let Some(p) = c.expect_ok(pv.event_alloc(), "EVENT.ALLOC after registration") {
            c.expect_ok(pv.event_mask(p), "EVENT.MASK");
            c.check(
                ev.is_masked(p),
                format_args!("the registered page does not show EVENT.MASK"),
            );
        }
    }
    c.report_before_end();
    pv.power_off(0);
}

fn before_page_inject_and_upcall_return(c: &mut Ctx<'_>) {
    let pv = c.pv;
    let me = u64::from(me(c));
    // HAR-3: an injection fails as EVENT.SEND would.
    let r = c.raw(call::HARNESS_INJECT_EVENT, [1, 0, 0, 0, 0, 0]);
    expect_st(
        c,
        r,
        Status::BAD_STATE,
        "HARNESS.INJECT_EVENT without an event page",
    );
    // EVT-15: no upcall to return from.
    let r = c.raw(call::VCPU_UPCALL_RETURN, [0; 6]);
    expect_st(c, r, Status::BAD_STATE, "VCPU.UPCALL_RETURN at guest start");
    let Some(page) = c.alloc(EventPageShared::new()) else {
        return;
    };
    let page: &'static EventPageShared = page;
    if let Some(ev) = c.expect_ok(pv.event_register_page(page), "EVENT.REGISTER_PAGE") {
        if let Some(p) = c.expect_ok(pv.event_alloc(), "EVENT.ALLOC") {
            // HAR-3 positive: an injection raises like a send.
            quiet(&ev, me as u32);
            c.expect_ok(pv.event_send(p), "EVENT.SEND");
            let by_send = ev.is_pending(p);
            ev.clear_pending(p);
            quiet(&ev, me as u32);
            c.expect_ok(pv.harness_inject_event(p), "HARNESS.INJECT_EVENT");
            c.check(
                ev.is_pending(p) == by_send,
                format_args!("HARNESS.INJECT_EVENT did not raise the port as EVENT.SEND did"),
            );
        }
    }
    c.report_before_end();
    pv.power_off(0);
}
