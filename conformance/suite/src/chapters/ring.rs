//! THE SHARED-RING GATE (spec chapter 3, `RING-*`): registration rules, the header's
//! ownership, calls through the ring, refused requests, the host's own counters, stalls and
//! unregistration.
//!
//! The cases drive the ring by hand (`Ring`): they write requests, counters and the doorbell
//! themselves, so that they can also write what the shim never would. Running requests needs
//! a doorbell (an `out` to the port the host returned) or a host that polls; an in-process
//! guest has neither unless the host sets `host_polling`, and those cases are skipped there.

use core::arch::asm;
use core::sync::atomic::{fence, Ordering};

use pvabi::ring::RingHeader;
use pvabi::{call, CallId, Features, ServiceId, Status};
use pvabi_guest::shared::RingShared;

use super::console::{marker_then, tail_is};
use super::conv::{ring_pages, write_ring_header};
use crate::{Case, Ctx};

/// The chapter's cases.
pub const CASES: &[Case] = &[
    Case {
        name: "ring::not_without_feature",
        clauses: "RING-10",
        run: not_without_feature,
    },
    Case {
        name: "ring::register_orders",
        clauses: "RING-1",
        run: register_orders,
    },
    Case {
        name: "ring::register_bad_address",
        clauses: "RING-11",
        run: register_bad_address,
    },
    Case {
        name: "ring::register_bad_header",
        clauses: "RING-12",
        run: register_bad_header,
    },
    Case {
        name: "ring::register_twice",
        clauses: "RING-13",
        run: register_twice,
    },
    Case {
        name: "ring::header_fields",
        clauses: "RING-2",
        run: header_fields,
    },
    Case {
        name: "ring::calls_through_ring",
        clauses: "RING-3,RING-4,RING-5,GATE-1",
        run: calls_through_ring,
    },
    Case {
        name: "ring::refused_requests",
        clauses: "RING-6",
        run: refused_requests,
    },
    Case {
        name: "ring::host_keeps_counters",
        clauses: "RING-8",
        run: host_keeps_counters,
    },
    Case {
        name: "ring::stalls",
        clauses: "RING-9",
        run: stalls,
    },
    Case {
        name: "ring::unregister_stops",
        clauses: "RING-7",
        run: unregister_stops,
    },
];

/// Slots of the rings the cases register.
const SLOTS: usize = 4;
const ORDER: u32 = 2;

/// A ring driven by hand.
struct Ring {
    shared: &'static RingShared<SLOTS>,
    gpa: u64,
    /// The doorbell port, when `out` reaches the host from here.
    doorbell: Option<u16>,
    /// Requests this driver has published.
    posted: u32,
    /// Bytes of the doorbell `out` (1, 2 or 4; RING-4 allows any width).
    width: u8,
}

impl Ring {
    /// Allocates a ring with a valid, zeroed header (not registered).
    fn new(c: &mut Ctx<'_>) -> Option<Ring> {
        let shared: &'static RingShared<SLOTS> = c.alloc(RingShared::<SLOTS>::new())?;
        let gpa =
            c.pv.translate()
                .gpa_of(
                    shared as *const RingShared<SLOTS> as usize,
                    RingShared::<SLOTS>::SHARED_BYTES,
                )
                .ok()?;
        let h = &shared.header;
        h.magic.store(RingHeader::MAGIC, Ordering::Relaxed);
        h.order.store(ORDER, Ordering::Relaxed);
        fence(Ordering::Release);
        Some(Ring {
            shared,
            gpa,
            doorbell: None,
            posted: 0,
            width: 1,
        })
    }

    /// BASE.RING_REGISTER of this ring.
    fn register(&mut self, c: &mut Ctx<'_>) -> bool {
        let r = c.raw(
            call::BASE_RING_REGISTER,
            [self.gpa, u64::from(ORDER), 0, 0, 0, 0],
        );
        if let Err(e) = r.into_result() {
            // Registration itself is ring::register_rules' business; here it is a
            // precondition.
            c.skip(format_args!(
                "BASE.RING_REGISTER of a valid ring failed ({e:?}), so the ring cannot be exercised"
            ));
            return false;
        }
        let port = u16::try_from(r.value).ok();
        c.check(
            port.is_some(),
            format_args!("doorbell port {:#x} does not fit 16 bits", r.value),
        );
        if !c.platform.in_process() {
            self.doorbell = port;
        }
        true
    }

    /// Whether requests can be run here: a doorbell, or a host that polls.
    fn drivable(&self) -> bool {
        self.doorbell.is_some() || self.shared.header.host_polling.load(Ordering::Acquire) != 0
    }

    /// Writes request `seq` into its slot (not published).
    fn write(&self, seq: u32, cookie: u32, id: CallId, args: [u64; 6]) {
        if let Some(slot) = self.shared.requests.get(seq as usize % SLOTS) {
            slot.cookie.store(cookie, Ordering::Relaxed);
            slot.call_id.store(id.0, Ordering::Relaxed);
            for (a, v) in slot.args.iter().zip(args) {
                a.store(v, Ordering::Relaxed);
            }
        }
    }

    /// Publishes `req_prod = prod` and rings the doorbell unless the host polls.
    fn publish(&self, prod: u32) {
        self.shared.header.req_prod.store(prod, Ordering::Release);
        fence(Ordering::SeqCst);
        if self.shared.header.host_polling.load(Ordering::Acquire) == 0 {
            self.ring_doorbell();
        }
    }

    fn ring_doorbell(&self) {
        let Some(port) = self.doorbell else {
            return;
        };
        // SAFETY (all three): `port` is the doorbell port the pvabi host returned from
        // BASE.RING_REGISTER, and port I/O reaches the host from here (not in-process). The
        // write names no memory of this program; the host may write the ring, which is
        // atomics read afterwards (no `nomem`, so the compiler assumes memory changes). No
        // stack use.
        match self.width {
            // SAFETY: see above.
            1 => unsafe { asm!("out dx, al", in("dx") port, in("al") 0u8, options(nostack)) },
            // SAFETY: see above.
            2 => unsafe { asm!("out dx, ax", in("dx") port, in("ax") 0u16, options(nostack)) },
            // SAFETY: see above.
            _ => unsafe { asm!("out dx, eax", in("dx") port, in("eax") 0u32, options(nostack)) },
        }
    }

    /// Posts `calls` as the next requests (cookies `cookie0 + i`) with one doorbell.
    fn post(&mut self, calls: &[(CallId, [u64; 6])], cookie0: u32) {
        for (i, (id, args)) in calls.iter().enumerate() {
            let seq = self.posted.wrapping_add(i as u32);
            self.write(seq, cookie0.wrapping_add(i as u32), *id, *args);
        }
        self.posted = self.posted.wrapping_add(calls.len() as u32);
        self.publish(self.posted);
    }

    /// Waits (bounded) until `cmp_prod` reaches `target`; false on timeout.
    fn wait(&self, c: &Ctx<'_>, target: u32) -> bool {
        for i in 0..200_000u32 {
            let p = self.shared.header.cmp_prod.load(Ordering::Acquire);
            if p.wrapping_sub(target) as i32 >= 0 {
                return true;
            }
            if i % 1000 == 999 {
                let _ = c.pv.vcpu_yield();
            }
            core::hint::spin_loop();
        }
        false
    }

    /// Lets a host that is about to act have some time, then returns `cmp_prod`.
    fn settle(&self, c: &Ctx<'_>) -> u32 {
        for _ in 0..20 {
            let _ = c.pv.vcpu_yield();
        }
        self.shared.header.cmp_prod.load(Ordering::Acquire)
    }

    /// The completion for counter value `seq`: (cookie, status, value).
    fn completion(&self, seq: u32) -> (u32, i64, u64) {
        match self.shared.completions.get(seq as usize % SLOTS) {
            Some(s) => (
                s.cookie.load(Ordering::Relaxed),
                s.status.load(Ordering::Relaxed),
                s.value.load(Ordering::Relaxed),
            ),
            None => (0, 0, 0),
        }
    }

    /// Marks completions up to `cons` consumed.
    fn consume(&self, cons: u32) {
        self.shared.header.cmp_cons.store(cons, Ordering::Release);
    }

    fn unregister(&self, c: &mut Ctx<'_>) {
        let r = c.raw(call::BASE_RING_UNREGISTER, [0; 6]);
        c.expect_ok(r.into_result(), "BASE.RING_UNREGISTER");
    }
}

/// Whether a 4-byte `out` to the doorbell port cannot fault here: in ring 0, or with
/// RFLAGS.IOPL = 3. In PV ring 3 with a lower IOPL the CPU checks the TSS I/O bitmap for
/// the four ports `port..port + 4`, which the guest cannot see; a fault there would end the
/// whole run rather than fail one check, so the 4-byte width is left out then.
fn wide_doorbell_safe(c: &Ctx<'_>) -> bool {
    if c.platform.name() != "pv-ring3" {
        return true;
    }
    let flags: u64;
    // SAFETY: `pushfq; pop` reads RFLAGS into a register; it uses 8 bytes of stack below RSP
    // (available: no `nostack`), touches no other memory and changes no flags.
    unsafe {
        asm!("pushfq", "pop {f}", f = out(reg) flags, options(preserves_flags));
    }
    (flags >> 12) & 3 == 3
}

/// A registered ring that can run requests here, or a skip with the reason.
fn drivable_ring(c: &mut Ctx<'_>) -> Option<Ring> {
    if !c.pv.info().features.contains(Features::RING_GATE) {
        c.skip(format_args!("the host does not set RING_GATE"));
        return None;
    }
    let mut ring = Ring::new(c)?;
    if !ring.register(c) {
        return None;
    }
    if !ring.drivable() {
        ring.unregister(c);
        let env = c.platform.name();
        c.skip(format_args!(
            "{env}: no doorbell can be written from here and the host does not poll the ring (host_polling = 0)"
        ));
        return None;
    }
    Some(ring)
}

/// Whether the host sets RING_GATE; a skip naming `what` otherwise.
fn ring_gate(c: &mut Ctx<'_>, what: &str) -> bool {
    if c.pv.info().features.contains(Features::RING_GATE) {
        return true;
    }
    c.skip(format_args!(
        "the host does not set RING_GATE, so {what} cannot be checked"
    ));
    false
}

/// `pages` fresh pages with a ring header (`magic`, `order`) at the start; their GPA.
fn header_area(
    c: &mut Ctx<'_>,
    pages: usize,
    magic: u32,
    order: u32,
) -> Option<(u64, &'static mut [u8])> {
    let area = ring_pages(c, pages)?;
    write_ring_header(area, magic, order);
    Some((c.gpa(area), area))
}

fn not_without_feature(c: &mut Ctx<'_>) {
    let set = c.pv.info().features.contains(Features::RING_GATE);
    let u = c.raw(call::BASE_RING_UNREGISTER, [0; 6]);
    let Some((gpa, _)) = header_area(c, 1, RingHeader::MAGIC, 0) else {
        return;
    };
    if set {
        // Served: neither answer is NOT_SUPPORTED (the bit is consistent with the calls).
        c.check(
            u.status != Status::NOT_SUPPORTED,
            format_args!("RING_GATE set, BASE.RING_UNREGISTER answered NOT_SUPPORTED"),
        );
        let r = c.raw(call::BASE_RING_REGISTER, [gpa, 0, 0, 0, 0, 0]);
        c.check(
            r.status != Status::NOT_SUPPORTED,
            format_args!("RING_GATE set, BASE.RING_REGISTER answered NOT_SUPPORTED"),
        );
        if r.status.is_success() {
            let _ = c.raw(call::BASE_RING_UNREGISTER, [0; 6]);
        }
    } else {
        c.check(
            u.status == Status::NOT_SUPPORTED && u.value == 0,
            format_args!("RING_GATE clear, BASE.RING_UNREGISTER answered {u:?}"),
        );
        let r = c.raw(call::BASE_RING_REGISTER, [gpa, 0, 0, 0, 0, 0]);
        c.check(
            r.status == Status::NOT_SUPPORTED && r.value == 0,
            format_args!("RING_GATE clear, BASE.RING_REGISTER answered {r:?}"),
        );
    }
}

fn register_orders(c: &mut Ctx<'_>) {
    if !ring_gate(c, "BASE.RING_REGISTER's orders") {
        return;
    }
    // Order 9 ring: 64 + 512 * 88 bytes fit in 12 pages.
    let Some((gpa, area)) = header_area(c, 12, RingHeader::MAGIC, 9) else {
        return;
    };
    for order in [9u64, 32, 1 << 32, u64::MAX] {
        let r = c.raw(call::BASE_RING_REGISTER, [gpa, order, 0, 0, 0, 0]);
        c.check(
            r.status == Status::INVALID_PARAM && r.value == 0,
            format_args!("BASE.RING_REGISTER order {order:#x}: {r:?}"),
        );
    }
    // Orders 0 and 8 register; the value is an I/O port.
    for order in [0u32, 8] {
        write_ring_header(area, RingHeader::MAGIC, order);
        let r = c.raw(
            call::BASE_RING_REGISTER,
            [gpa, u64::from(order), 0, 0, 0, 0],
        );
        if c.expect_ok(r.into_result(), "BASE.RING_REGISTER of a valid ring")
            .is_some()
        {
            c.check(
                r.value <= 0xffff,
                format_args!("doorbell port {:#x} is not an I/O port", r.value),
            );
            let u = c.raw(call::BASE_RING_UNREGISTER, [0; 6]);
            c.expect_ok(u.into_result(), "BASE.RING_UNREGISTER");
        }
    }
}

fn register_bad_address(c: &mut Ctx<'_>) {
    if !ring_gate(c, "BASE.RING_REGISTER's address checks") {
        return;
    }
    let Some((gpa, area)) = header_area(c, 2, RingHeader::MAGIC, 0) else {
        return;
    };
    // A valid header 64 bytes into the page: misaligned.
    if let Some(mis) = area.get_mut(64..) {
        write_ring_header(mis, RingHeader::MAGIC, 0);
    }
    let r = c.raw(call::BASE_RING_REGISTER, [gpa + 64, 0, 0, 0, 0, 0]);
    c.expect_status(
        r,
        Status::INVALID_ADDRESS,
        "BASE.RING_REGISTER 64 bytes into a page",
    );
    let far = c.ram_end().saturating_add(0x10_0000) & !0xfff;
    let r = c.raw(call::BASE_RING_REGISTER, [far, 0, 0, 0, 0, 0]);
    c.expect_status(r, Status::INVALID_ADDRESS, "BASE.RING_REGISTER outside RAM");
    let r = c.raw(call::BASE_RING_REGISTER, [!0xfff, 8, 0, 0, 0, 0]);
    c.expect_status(
        r,
        Status::INVALID_ADDRESS,
        "BASE.RING_REGISTER whose ring wraps the address space",
    );
}

fn register_bad_header(c: &mut Ctx<'_>) {
    if !ring_gate(c, "BASE.RING_REGISTER's header checks") {
        return;
    }
    let Some((gpa, area)) = header_area(c, 1, RingHeader::MAGIC ^ 0x20, 1) else {
        return;
    };
    let r = c.raw(call::BASE_RING_REGISTER, [gpa, 1, 0, 0, 0, 0]);
    c.expect_status(
        r,
        Status::INVALID_PARAM,
        "BASE.RING_REGISTER with a wrong magic",
    );
    write_ring_header(area, RingHeader::MAGIC, 2);
    let r = c.raw(call::BASE_RING_REGISTER, [gpa, 1, 0, 0, 0, 0]);
    c.expect_status(
        r,
        Status::INVALID_PARAM,
        "BASE.RING_REGISTER with header order 2, argument 1",
    );
}

fn register_twice(c: &mut Ctx<'_>) {
    if !ring_gate(c, "a second registration") {
        return;
    }
    let Some(mut ring) = Ring::new(c) else {
        return;
    };
    if !ring.register(c) {
        return;
    }
    let again = c.raw(
        call::BASE_RING_REGISTER,
        [ring.gpa, u64::from(ORDER), 0, 0, 0, 0],
    );
    c.expect_status(
        again,
        Status::ALREADY,
        "a second BASE.RING_REGISTER of the same ring",
    );
    if let Some((ogpa, _)) = header_area(c, 1, RingHeader::MAGIC, 0) {
        let again = c.raw(call::BASE_RING_REGISTER, [ogpa, 0, 0, 0, 0, 0]);
        c.expect_status(
            again,
            Status::ALREADY,
            "BASE.RING_REGISTER of a second ring",
        );
    }
    ring.unregister(c);
}

fn header_fields(c: &mut Ctx<'_>) {
    if !c.pv.info().features.contains(Features::RING_GATE) {
        c.skip(format_args!("the host does not set RING_GATE"));
        return;
    }
    let Some(mut ring) = Ring::new(c) else {
        return;
    };
    if !ring.register(c) {
        return;
    }
    let h = &ring.shared.header;
    // The host writes only req_cons, cmp_prod and host_polling.
    let guest = |h: &pvabi_guest::shared::RingHeaderShared| {
        [
            h.magic.load(Ordering::Acquire),
            h.order.load(Ordering::Acquire),
            h.req_prod.load(Ordering::Acquire),
            h.cmp_cons.load(Ordering::Acquire),
        ]
    };
    let before = guest(h);
    let mut ran = false;
    if ring.drivable() {
        ring.post(&[(call::BASE_GET_VCPU_COUNT, [0; 6])], 7);
        ran = ring.wait(c, 1);
        c.check(ran, format_args!("the host did not complete a request"));
        ring.consume(1);
    }
    let after = guest(h);
    let want = if ran {
        [before[0], before[1], 1, 1]
    } else {
        before
    };
    c.check(
        after == want,
        format_args!("guest-written fields {before:?} became {after:?}"),
    );
    let (rc, cp) = (
        h.req_cons.load(Ordering::Acquire),
        h.cmp_prod.load(Ordering::Acquire),
    );
    let n = u32::from(ran);
    c.check(
        rc == n && cp == n,
        format_args!("req_cons {rc}, cmp_prod {cp} after {n} requests"),
    );
    ring.unregister(c);
    let after = guest(h);
    c.check(
        after == want,
        format_args!("guest-written fields changed at unregistration: {after:?}"),
    );
}

fn calls_through_ring(c: &mut Ctx<'_>) {
    let Some(mut ring) = drivable_ring(c) else {
        return;
    };
    let unknown = CallId::new(ServiceId::BASE, 0x7fff);
    let calls: [(CallId, [u64; 6]); 4] = [
        (call::BASE_GET_ABI_VERSION, [0; 6]),
        (call::BASE_PROBE_SERVICE, [0x1_0000, 0, 0, 0, 0, 0]),
        (unknown, [0; 6]),
        (call::BASE_GET_VCPU_ID, [0; 6]),
    ];
    // RING-4: one doorbell for all four (or none if the host polls).
    ring.post(&calls, 0xc0de_0000);
    if !c.check(
        ring.wait(c, 4),
        format_args!(
            "the host completed {} of 4 requests",
            ring.shared.header.cmp_prod.load(Ordering::Acquire)
        ),
    ) {
        ring.unregister(c);
        return;
    }
    // RING-3 / RING-5 / GATE-1: each completion carries the cookie, the status
    // sign-extended and the value the register gate gives for the same call.
    for (i, (id, args)) in calls.iter().enumerate() {
        let (cookie, status, value) = ring.completion(i as u32);
        let direct = c.raw(*id, *args);
        c.check(
            cookie == 0xc0de_0000 + i as u32,
            format_args!("completion {i}: cookie {cookie:#x}"),
        );
        c.check(
            status == i64::from(direct.status.0) && value == direct.value,
            format_args!(
                "call {:#x}: ring ({status}, {value:#x}), register gate ({:?}, {:#x})",
                id.0, direct.status, direct.value
            ),
        );
    }
    ring.consume(4);
    // Counters wrap the slots (i mod 4) and requests run in counter order.
    let Some(mark) = marker_then(c, b'R') else {
        ring.unregister(c);
        return;
    };
    let bytes = *b"ring-order";
    for (k, chunk) in bytes.chunks(3).enumerate() {
        let mut batch = [(call::CONSOLE_WRITE_BYTE, [0u64; 6]); 3];
        for (slot, b) in batch.iter_mut().zip(chunk) {
            slot.1[0] = u64::from(*b);
        }
        let batch = batch.get(..chunk.len()).unwrap_or(&[]);
        let start = ring.posted;
        // Doorbells of every width: 1, 2, 4, 1 bytes (4 only where it cannot fault, see
        // `wide_doorbell_safe`).
        ring.width = match [1, 2, 4, 1][k % 4] {
            4 if !wide_doorbell_safe(c) => 2,
            w => w,
        };
        ring.post(batch, 0x100 * (k as u32 + 1));
        let end = ring.posted;
        if !c.check(ring.wait(c, end), format_args!("batch {k} not completed")) {
            break;
        }
        for seq in start..end {
            let (cookie, status, value) = ring.completion(seq);
            c.check(
                cookie == 0x100 * (k as u32 + 1) + (seq - start) && status == 0 && value == 1,
                format_args!(
                    "completion {seq} (slot {}): ({cookie:#x}, {status}, {value})",
                    seq as usize % SLOTS
                ),
            );
        }
        ring.consume(end);
    }
    let _ = mark;
    tail_is(c, &bytes, "after CONSOLE.WRITE_BYTEs through the ring");
    ring.unregister(c);
}

fn refused_requests(c: &mut Ctx<'_>) {
    let Some(mut ring) = drivable_ring(c) else {
        return;
    };
    // POWER.SHUTDOWN and VCPU.STOP are left out: a host that wrongly ran them would end
    // the run instead of failing this case.
    let refused: [(CallId, [u64; 6]); 5] = [
        (
            call::BASE_RING_REGISTER,
            [ring.gpa, u64::from(ORDER), 0, 0, 0, 0],
        ),
        (call::BASE_RING_UNREGISTER, [0; 6]),
        (call::MULTICALL_EXECUTE, [0, 0, 0, 0, 0, 0]),
        (call::VCPU_BLOCK, [1, 0, 0, 0, 0, 0]),
        (call::VCPU_UPCALL_RETURN, [0; 6]),
    ];
    for (i, (id, args)) in refused.iter().enumerate() {
        let seq = ring.posted;
        ring.post(core::slice::from_ref(&(*id, *args)), 0x600 + i as u32);
        if !c.check(
            ring.wait(c, seq + 1),
            format_args!("no completion for refused request {:#x}", id.0),
        ) {
            break;
        }
        let (cookie, status, value) = ring.completion(seq);
        c.check(
            cookie == 0x600 + i as u32
                && status == i64::from(Status::INVALID_PARAM.0)
                && value == 0,
            format_args!(
                "ring request {:#x}: completion ({cookie:#x}, {status}, {value:#x}), want INVALID_PARAM",
                id.0
            ),
        );
        ring.consume(seq + 1);
    }
    // The ring is still registered (the unregister request was not run).
    let r = c.raw(
        call::BASE_RING_REGISTER,
        [ring.gpa, u64::from(ORDER), 0, 0, 0, 0],
    );
    c.expect_status(
        r,
        Status::ALREADY,
        "BASE.RING_REGISTER after the refused requests",
    );
    ring.unregister(c);
}

fn host_keeps_counters(c: &mut Ctx<'_>) {
    let Some(mut ring) = drivable_ring(c) else {
        return;
    };
    ring.post(&[(call::BASE_GET_VCPU_COUNT, [0; 6]); 3], 0x800);
    if !c.check(ring.wait(c, 3), format_args!("3 requests not completed")) {
        ring.unregister(c);
        return;
    }
    ring.consume(3);
    // Scribble over the host-owned counters; the host must go on from its own copies.
    let h = &ring.shared.header;
    h.req_cons.store(0x77, Ordering::Release);
    h.cmp_prod.store(0x99, Ordering::Release);
    ring.post(&[(call::BASE_GET_ABI_VERSION, [0; 6])], 0x900);
    let mut done = false;
    for i in 0..200_000u32 {
        if h.cmp_prod.load(Ordering::Acquire) == 4 {
            done = true;
            break;
        }
        // As `Ring::wait`: a call now and then lets a host that serves rings at calls (or
        // needs the CPU this vCPU spins on) make progress.
        if i % 1000 == 999 {
            let _ = c.pv.vcpu_yield();
        }
        core::hint::spin_loop();
    }
    let (rc, cp) = (
        h.req_cons.load(Ordering::Acquire),
        h.cmp_prod.load(Ordering::Acquire),
    );
    c.check(
        done && rc == 4,
        format_args!("after scribbling, req_cons {rc} and cmp_prod {cp}, want 4 and 4"),
    );
    let (cookie, status, value) = ring.completion(3);
    c.check(
        cookie == 0x900 && status == 0 && value == u64::from(pvabi::ABI_VERSION.to_u32()),
        format_args!("completion in slot 3: ({cookie:#x}, {status}, {value:#x})"),
    );
    ring.consume(4);
    ring.unregister(c);
}

fn stalls(c: &mut Ctx<'_>) {
    let Some(mut ring) = drivable_ring(c) else {
        return;
    };
    let Some(mark) = marker_then(c, b'S') else {
        ring.unregister(c);
        return;
    };
    let h = &ring.shared.header;
    // More requests published than slots: nothing runs.
    for i in 0..SLOTS as u32 + 1 {
        ring.write(
            i,
            0xa00 + i,
            call::CONSOLE_WRITE_BYTE,
            [u64::from(b'x'), 0, 0, 0, 0, 0],
        );
    }
    ring.publish(SLOTS as u32 + 1);
    let cp = ring.settle(c);
    c.check(
        cp == 0 && h.req_cons.load(Ordering::Acquire) == 0,
        format_args!("with req_prod 5 on a 4-slot ring the host ran requests (cmp_prod {cp})"),
    );
    tail_is(c, &mark, "after publishing more requests than slots");
    // Fixed: the guest takes the extra request back; the four run.
    for i in 0..SLOTS as u32 {
        ring.write(i, 0xb00 + i, call::BASE_GET_VCPU_COUNT, [0; 6]);
    }
    ring.posted = SLOTS as u32;
    ring.publish(ring.posted);
    if !c.check(
        ring.wait(c, SLOTS as u32),
        format_args!("after fixing req_prod the host did not run the 4 requests"),
    ) {
        ring.unregister(c);
        return;
    }
    // Completions not consumed (cmp_cons 0, cmp_prod 4): the next request must wait.
    ring.post(
        &[(call::CONSOLE_WRITE_BYTE, [u64::from(b'y'), 0, 0, 0, 0, 0])],
        0xc00,
    );
    let cp = ring.settle(c);
    c.check(
        cp == SLOTS as u32,
        format_args!("with every completion slot full the host wrote a completion (cmp_prod {cp})"),
    );
    tail_is(c, &mark, "while the completion slots are full");
    // Consumed: it runs.
    ring.consume(SLOTS as u32);
    ring.ring_doorbell();
    let ok = ring.wait(c, SLOTS as u32 + 1);
    c.check(
        ok,
        format_args!("after the guest consumed the completions the request did not run"),
    );
    if ok {
        tail_is(c, b"y", "after the stalled request ran");
    }
    ring.consume(ring.posted);
    ring.unregister(c);
}

fn unregister_stops(c: &mut Ctx<'_>) {
    if !ring_gate(c, "unregistration") {
        return;
    }
    let r = c.raw(call::BASE_RING_UNREGISTER, [0; 6]);
    c.expect_status(r, Status::NOT_FOUND, "BASE.RING_UNREGISTER with no ring");
    let Some(mut ring) = Ring::new(c) else {
        return;
    };
    if !ring.register(c) {
        return;
    }
    let drivable = ring.drivable();
    let r = c.raw(call::BASE_RING_UNREGISTER, [0; 6]);
    if c.expect_ok(r.into_result(), "BASE.RING_UNREGISTER")
        .is_none()
    {
        return;
    }
    let r = c.raw(call::BASE_RING_UNREGISTER, [0; 6]);
    c.expect_status(r, Status::NOT_FOUND, "a second BASE.RING_UNREGISTER");
    if !drivable {
        return;
    }
    // The doorbell is ignored and the ring memory left alone from now on.
    let Some(mark) = marker_then(c, b'U') else {
        return;
    };
    ring.post(
        &[(call::CONSOLE_WRITE_BYTE, [u64::from(b'u'), 0, 0, 0, 0, 0])],
        0xd00,
    );
    let cp = ring.settle(c);
    let h = &ring.shared.header;
    c.check(
        cp == 0 && h.req_cons.load(Ordering::Acquire) == 0,
        format_args!("after unregistration the host consumed a request (cmp_prod {cp})"),
    );
    tail_is(c, &mark, "after a doorbell on an unregistered ring");
}
