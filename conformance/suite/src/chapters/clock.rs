//! CLOCK cases (spec chapter 6, `CLK-*`).
//!
//! Clock pages are read two ways: through pvabi-guest's [`ClockPageShared`] and
//! [`pvabi_guest::clock::Clock`] (the guest side of the seqlock protocol), and through
//! [`RawClockPage`], four atomic words with the same layout, so that the reserved bytes and
//! the version can be looked at (and scribbled on) directly.

use core::sync::atomic::{fence, AtomicU64, Ordering::SeqCst};

use pvabi::clock::ClockPage;
use pvabi::discovery::Features;
use pvabi::{call, Status};
use pvabi_guest::clock::Clock;
use pvabi_guest::gate::rdtsc;
use pvabi_guest::shared::ClockPageShared;

use crate::chapters::event::{quiet, shared_events};
use crate::chapters::vcpu::expect_st;
use crate::chapters::vcpu::{
    need_vcpus, now, spin_wait, start_worker, stopped_vcpu, wait_for, Mailbox, OP_CUSTOM,
    OP_REGISTER_CLOCK, POLL_NS, WAIT_NS,
};
use crate::{Case, Ctx, ExpectedEnd, GuestEntry, TerminalCase};

/// A clock page as four atomic words (the `ClockPage` layout, 32-byte aligned).
#[derive(Debug)]
#[repr(C, align(32))]
pub struct RawClockPage {
    /// Words 0..4 of the page, little-endian.
    pub w: [AtomicU64; 4],
}

impl RawClockPage {
    /// A zeroed page.
    pub const fn new() -> Self {
        Self {
            w: [const { AtomicU64::new(0) }; 4],
        }
    }

    fn word(&self, i: usize) -> u64 {
        self.w.get(i).map_or(0, |x| x.load(SeqCst))
    }

    /// The current version field.
    pub fn version(&self) -> u32 {
        self.word(0) as u32
    }

    /// Overwrites the version field (as a guest scribbling on the page), keeping the rest.
    pub fn set_version(&self, v: u32) {
        if let Some(w) = self.w.first() {
            let old = w.load(SeqCst);
            w.store((old & !0xFFFF_FFFF) | u64::from(v), SeqCst);
        }
    }

    /// The page's fields as they are now (not a consistent snapshot).
    pub fn fields(&self) -> ClockPage {
        let (w0, w1, w2, w3) = (self.word(0), self.word(1), self.word(2), self.word(3));
        ClockPage {
            version: w0 as u32,
            _reserved0: (w0 >> 32) as u32,
            tsc_timestamp: w1,
            system_time: w2,
            tsc_to_system_mul: w3 as u32,
            tsc_shift: (w3 >> 32) as u8 as i8,
            flags: (w3 >> 40) as u8,
            _reserved1: [(w3 >> 48) as u8, (w3 >> 56) as u8],
        }
    }

    /// A consistent snapshot with the seqlock protocol (`None` after many failed tries).
    pub fn snapshot(&self) -> Option<ClockPage> {
        for _ in 0..100_000 {
            let v1 = self.word(0) as u32;
            if v1 & 1 != 0 {
                core::hint::spin_loop();
                continue;
            }
            let f = self.fields();
            fence(SeqCst);
            if self.word(0) as u32 == v1 {
                return Some(ClockPage { version: v1, ..f });
            }
        }
        None
    }
}

impl Default for RawClockPage {
    fn default() -> Self {
        Self::new()
    }
}

/// The chapter's cases.
pub const CASES: &[Case] = &[
    Case {
        name: "clock::features_match_service",
        clauses: "CLK-11",
        run: features_match_service,
    },
    Case {
        name: "clock::register_page_bad_address",
        clauses: "CLK-1",
        run: register_page_bad_address,
    },
    Case {
        name: "clock::page_contents",
        clauses: "CLK-1,CLK-12",
        run: page_contents,
    },
    Case {
        name: "clock::page_time",
        clauses: "CLK-3",
        run: page_time,
    },
    Case {
        name: "clock::version_from_host_counter",
        clauses: "CLK-2",
        run: version_from_host_counter,
    },
    Case {
        name: "clock::replace_and_unregister",
        clauses: "CLK-1,CLK-5",
        run: replace_and_unregister,
    },
    Case {
        name: "clock::seqlock_under_concurrent_updates",
        clauses: "CLK-2",
        run: seqlock_under_concurrent_updates,
    },
    Case {
        name: "clock::get_time_across_vcpus",
        clauses: "CLK-7",
        run: get_time_across_vcpus,
    },
    Case {
        name: "clock::page_time_across_vcpus",
        clauses: "CLK-4",
        run: page_time_across_vcpus,
    },
    Case {
        name: "clock::wallclock",
        clauses: "CLK-6",
        run: wallclock,
    },
    Case {
        name: "clock::get_time_monotonic",
        clauses: "CLK-7",
        run: get_time_monotonic,
    },
    Case {
        name: "clock::timer_fires_once_at_deadline",
        clauses: "CLK-8,CLK-10",
        run: timer_fires_once_at_deadline,
    },
    Case {
        name: "clock::timer_replace_and_cancel",
        clauses: "CLK-8,CLK-10",
        run: timer_replace_and_cancel,
    },
    Case {
        name: "clock::timer_bad_ports",
        clauses: "CLK-9,CLK-14",
        run: timer_bad_ports,
    },
];

/// The chapter's terminal case (listed with the VCPU chapter's terminal cases, as the chapter
/// table has no CLOCK entry for them).
pub const FRESH_GUEST: TerminalCase = TerminalCase {
    name: "clock::fresh_guest",
    clauses: "CLK-13,CLK-15",
    run: fresh_guest,
    expect: ExpectedEnd {
        reason: pvabi::power::ShutdownReason::POWEROFF,
        code: 0,
        crash: None,
    },
};

/// Guest functions this chapter's cases pass as vCPU entries or callbacks (its second-vCPU
/// work runs on the VCPU chapter's worker).
pub const FUNCTIONS: &[GuestEntry] = &[];

fn has(c: &Ctx<'_>, f: Features) -> bool {
    c.pv.info().features.contains(f)
}

/// Skips the case unless the host keeps clock pages.
fn need_pages(c: &mut Ctx<'_>) -> bool {
    if !has(c, Features::CLOCK_PAGE) {
        c.skip(format_args!("the host does not set the CLOCK_PAGE feature"));
        return false;
    }
    true
}

/// Skips the case unless the host has timers.
fn need_timer(c: &mut Ctx<'_>) -> bool {
    if !has(c, Features::TIMER) {
        c.skip(format_args!("the host does not set the TIMER feature"));
        return false;
    }
    true
}

fn raw_page(c: &mut Ctx<'_>) -> Option<(&'static RawClockPage, u64)> {
    let p: &'static RawClockPage = c.alloc(RawClockPage::new())?;
    let gpa = c.pv.translate().gpa_of_ref(p).unwrap_or(u64::MAX);
    Some((p, gpa))
}

fn features_match_service(c: &mut Ctx<'_>) {
    let Some((page, gpa)) = raw_page(c) else {
        return;
    };
    let r = c.raw(call::CLOCK_REGISTER_PAGE, [gpa, 0, 0, 0, 0, 0]);
    if has(c, Features::CLOCK_PAGE) {
        expect_st(
            c,
            r,
            Status::SUCCESS,
            "CLOCK.REGISTER_PAGE with CLOCK_PAGE set",
        );
        let r = c.raw(call::CLOCK_UNREGISTER_PAGE, [0; 6]);
        expect_st(
            c,
            r,
            Status::SUCCESS,
            "CLOCK.UNREGISTER_PAGE with CLOCK_PAGE set",
        );
    } else {
        expect_st(
            c,
            r,
            Status::NOT_SUPPORTED,
            "CLOCK.REGISTER_PAGE without the CLOCK_PAGE feature",
        );
        let r = c.raw(call::CLOCK_UNREGISTER_PAGE, [0; 6]);
        expect_st(
            c,
            r,
            Status::NOT_SUPPORTED,
            "CLOCK.UNREGISTER_PAGE without the CLOCK_PAGE feature",
        );
        c.check(
            page.version() == 0,
            format_args!("a host without CLOCK_PAGE wrote the page"),
        );
    }
    if !has(c, Features::TIMER) {
        let r = c.raw(call::CLOCK_SET_TIMER, [now(&c.pv) + POLL_NS, 1, 0, 0, 0, 0]);
        expect_st(
            c,
            r,
            Status::NOT_SUPPORTED,
            "CLOCK.SET_TIMER without the TIMER feature",
        );
    } else if let Some(ev) = shared_events(c) {
        // With TIMER set the call is served (a cancel always succeeds).
        let r = c.raw(call::CLOCK_SET_TIMER, [0, 0, 0, 0, 0, 0]);
        expect_st(c, r, Status::SUCCESS, "CLOCK.SET_TIMER(0) with TIMER set");
        let _ = ev;
    }
}

fn register_page_bad_address(c: &mut Ctx<'_>) {
    if !need_pages(c) {
        return;
    }
    let Some((page, gpa)) = raw_page(c) else {
        return;
    };
    let end = c.ram_end();
    for (a, what) in [
        (gpa + 8, "CLOCK.REGISTER_PAGE misaligned by 8"),
        (gpa + 16, "CLOCK.REGISTER_PAGE misaligned by 16"),
        (gpa + 1, "CLOCK.REGISTER_PAGE misaligned by 1"),
        (
            (end + 31) & !31,
            "CLOCK.REGISTER_PAGE at the end of guest RAM",
        ),
        (1 << 52, "CLOCK.REGISTER_PAGE far beyond guest RAM"),
        (!31u64, "CLOCK.REGISTER_PAGE wrapping the address space"),
    ] {
        let r = c.raw(call::CLOCK_REGISTER_PAGE, [a, 0, 0, 0, 0, 0]);
        expect_st(c, r, Status::INVALID_ADDRESS, what);
    }
    c.check(
        page.version() == 0,
        format_args!("a refused registration wrote the page"),
    );
}

fn page_contents(c: &mut Ctx<'_>) {
    if !need_pages(c) {
        return;
    }
    let pv = c.pv;
    // Registration writes a complete, consistent page before it returns.
    let Some((raw, gpa)) = raw_page(c) else {
        return;
    };
    // Garbage in every byte the host must write as zero.
    for w in &raw.w {
        w.store(u64::MAX, SeqCst);
    }
    raw.set_version(0);
    let r = c.raw(call::CLOCK_REGISTER_PAGE, [gpa, 0, 0, 0, 0, 0]);
    if !expect_st(c, r, Status::SUCCESS, "CLOCK.REGISTER_PAGE") {
        return;
    }
    let f = raw.fields();
    c.check(
        f.version != 0 && f.version & 1 == 0,
        format_args!("after registration the version is {}", f.version),
    );
    c.check(
        f._reserved0 == 0 && f._reserved1 == [0, 0],
        format_args!(
            "reserved fields are {:#x}, {:?} (must be zero)",
            f._reserved0, f._reserved1
        ),
    );
    c.check(
        f.flags & !ClockPage::FLAG_TSC_STABLE == 0,
        format_args!("flags {:#x} has bits other than TSC_STABLE", f.flags),
    );
    let _ = pv.clock_unregister_page();
}

fn page_time(c: &mut Ctx<'_>) {
    if !need_pages(c) {
        return;
    }
    let pv = c.pv;
    let Some((raw, gpa)) = raw_page(c) else {
        return;
    };
    let r = c.raw(call::CLOCK_REGISTER_PAGE, [gpa, 0, 0, 0, 0, 0]);
    if !expect_st(c, r, Status::SUCCESS, "CLOCK.REGISTER_PAGE") {
        return;
    }
    // The time computed from the page is system time within 1 ms, and does not go back.
    let mut last = 0u64;
    for _ in 0..20 {
        let before = now(&pv);
        let Some(s) = raw.snapshot() else {
            c.check(
                false,
                format_args!("no consistent snapshot of the clock page"),
            );
            break;
        };
        let t = s.time_at(rdtsc());
        let after = now(&pv);
        c.check(
            t + 1_000_000 >= before && t <= after + 1_000_000,
            format_args!("page time {t} is not within 1 ms of GET_TIME [{before}, {after}]"),
        );
        c.check(
            t >= last,
            format_args!("page time went back from {last} to {t}"),
        );
        last = t;
        let _ = pv.vcpu_yield();
    }
    let _ = pv.clock_unregister_page();
    // The same through the shim's seqlock reader.
    let Some(page) = c.alloc(ClockPageShared::new()) else {
        return;
    };
    let page: &'static ClockPageShared = page;
    if let Some(clock) = c.expect_ok(pv.clock_register_page(page), "CLOCK.REGISTER_PAGE") {
        let before = now(&pv);
        match clock.now_ns() {
            Ok(t) => {
                let after = now(&pv);
                c.check(
                    t + 1_000_000 >= before && t <= after + 1_000_000,
                    format_args!("Clock::now_ns {t} not within 1 ms of [{before}, {after}]"),
                );
            }
            Err(e) => {
                c.check(
                    false,
                    format_args!("seqlock read of the clock page failed: {e:?}"),
                );
            }
        }
        let _ = pv.clock_unregister_page();
    }
}

fn version_from_host_counter(c: &mut Ctx<'_>) {
    if !need_pages(c) {
        return;
    }
    let pv = c.pv;
    let Some((raw, gpa)) = raw_page(c) else {
        return;
    };
    let r = c.raw(call::CLOCK_REGISTER_PAGE, [gpa, 0, 0, 0, 0, 0]);
    if !expect_st(c, r, Status::SUCCESS, "CLOCK.REGISTER_PAGE") {
        return;
    }
    let v1 = raw.version();
    // The guest scribbles a large even version; the host's next update must come from its
    // own counter (v1 + 2 per update), never from this copy.
    raw.set_version(v1.wrapping_add(1000));
    match pv.harness_clock_advance(1000) {
        Ok(()) => {
            let v2 = raw.version();
            c.check(
                v2 & 1 == 0,
                format_args!("after an update the version is odd ({v2})"),
            );
            c.check(
                v2 > v1 && v2 < v1.wrapping_add(1000),
                format_args!(
                    "version went {v1} -> {v2} after the guest wrote {}: not from the host's own counter",
                    v1.wrapping_add(1000)
                ),
            );
            let t = raw.snapshot().map(|s| s.time_at(rdtsc()));
            let n = now(&pv);
            c.check(
                t.is_some_and(|t| t + 1_000_000 >= n),
                format_args!("after HARNESS.CLOCK_ADVANCE the page says {t:?}, GET_TIME {n}"),
            );
            // Versions of one registration never go back.
            let mut last = v2;
            for _ in 0..20 {
                let _ = pv.harness_clock_advance(100);
                let v = raw.version();
                c.check(
                    v >= last && v & 1 == 0,
                    format_args!("version went from {last} to {v}"),
                );
                last = v;
            }
        }
        Err(Status::NOT_SUPPORTED) => {
            raw.set_version(v1);
            c.skip(format_args!(
                "the host's clock is real (HARNESS.CLOCK_ADVANCE is NOT_SUPPORTED): no update can be forced"
            ));
        }
        Err(e) => {
            c.check(false, format_args!("HARNESS.CLOCK_ADVANCE failed: {e:?}"));
        }
    }
    let _ = pv.clock_unregister_page();
}

fn replace_and_unregister(c: &mut Ctx<'_>) {
    if !need_pages(c) {
        return;
    }
    let pv = c.pv;
    // No page: NOT_FOUND (make sure first).
    let _ = pv.clock_unregister_page();
    c.expect_err(
        pv.clock_unregister_page(),
        Status::NOT_FOUND,
        "CLOCK.UNREGISTER_PAGE without a page",
    );
    let (Some((a, ga)), Some((b, gb))) = (raw_page(c), raw_page(c)) else {
        return;
    };
    let r = c.raw(call::CLOCK_REGISTER_PAGE, [ga, 0, 0, 0, 0, 0]);
    expect_st(c, r, Status::SUCCESS, "CLOCK.REGISTER_PAGE(A)");
    let r = c.raw(call::CLOCK_REGISTER_PAGE, [gb, 0, 0, 0, 0, 0]);
    expect_st(c, r, Status::SUCCESS, "CLOCK.REGISTER_PAGE(B) replacing A");
    c.check(
        b.version() != 0 && b.version() & 1 == 0,
        format_args!("page B was not written on registration"),
    );
    let advance = pv.harness_clock_advance(1000);
    // A was replaced: the host stops writing it.
    a.set_version(0x7000_0000);
    if advance.is_ok() {
        let vb = b.version();
        let _ = pv.harness_clock_advance(1000);
        c.check(
            a.version() == 0x7000_0000,
            format_args!("the host still writes a replaced clock page"),
        );
        c.check(
            b.version() > vb,
            format_args!("the replacing page is not updated"),
        );
    }
    c.expect_ok(pv.clock_unregister_page(), "CLOCK.UNREGISTER_PAGE");
    b.set_version(0x7100_0000);
    if advance.is_ok() {
        let _ = pv.harness_clock_advance(1000);
        c.check(
            b.version() == 0x7100_0000,
            format_args!("the host still writes an unregistered clock page"),
        );
    }
    c.expect_err(
        pv.clock_unregister_page(),
        Status::NOT_FOUND,
        "second CLOCK.UNREGISTER_PAGE",
    );
}

/// Version changes a concurrent reader must have seen before "never odd" counts as evidence
/// that the host skips the odd phase of the seqlock.
const MANY_UPDATES: u64 = 1000;

/// Worker side of `clock::seqlock_under_concurrent_updates`: takes seqlock snapshots of the
/// page at `aux[0]` until `aux[7]` is set; counts snapshots in `aux[3]`, odd versions seen
/// in `aux[4]`, version changes between consecutive snapshots in `aux[1]`, and
/// inconsistencies in `aux[2]` (the same version with different contents,
/// a version going back, or time going back), with the first bad pair in `aux[5]`/`aux[6]`.
fn read_clock_concurrently(mb: &Mailbox) {
    let a = usize::try_from(mb.aux[0].load(SeqCst)).unwrap_or(0);
    if a == 0 || a % core::mem::align_of::<RawClockPage>() != 0 {
        mb.aux[2].store(u64::MAX, SeqCst);
        return;
    }
    // SAFETY: the boot vCPU stores in `aux[0]` only the address of a `RawClockPage` it moved
    // into the never-freed arena; it is made of atomics, so a shared reference is sound.
    let page: &RawClockPage = unsafe { &*core::ptr::with_exposed_provenance::<RawClockPage>(a) };
    let (mut snaps, mut odd, mut bad, mut changes) = (0u64, 0u64, 0u64, 0u64);
    let mut last: Option<ClockPage> = None;
    for i in 0..200_000_000u32 {
        if i % 1024 == 0 {
            if mb.aux[7].load(SeqCst) != 0 {
                break;
            }
            mb.aux[1].store(changes, SeqCst);
            mb.aux[4].store(odd, SeqCst);
        }
        let v1 = page.word(0) as u32;
        if v1 & 1 != 0 {
            odd += 1;
            continue;
        }
        let f = page.fields();
        fence(SeqCst);
        if page.word(0) as u32 != v1 {
            continue;
        }
        let s = ClockPage { version: v1, ..f };
        snaps += 1;
        if last.is_some_and(|l| l.version != s.version) {
            changes += 1;
        }
        if let Some(l) = last {
            let wrong = (l.version == s.version && l != s)
                || s.version < l.version
                || (s.version > l.version && s.system_time < l.system_time);
            if wrong {
                if bad == 0 {
                    mb.aux[5].store(
                        u64::from(l.version) << 32 | l.system_time & 0xFFFF_FFFF,
                        SeqCst,
                    );
                    mb.aux[6].store(
                        u64::from(s.version) << 32 | s.system_time & 0xFFFF_FFFF,
                        SeqCst,
                    );
                }
                bad += 1;
            }
        }
        last = Some(s);
    }
    mb.aux[1].store(changes, SeqCst);
    mb.aux[2].store(bad, SeqCst);
    mb.aux[3].store(snaps, SeqCst);
    mb.aux[4].store(odd, SeqCst);
}

fn seqlock_under_concurrent_updates(c: &mut Ctx<'_>) {
    if !need_pages(c) || !need_vcpus(c, 2) {
        return;
    }
    let Some(v) = stopped_vcpu(c) else {
        c.skip(format_args!("no STOPPED secondary vCPU to start"));
        return;
    };
    let pv = c.pv;
    let Some((raw, gpa)) = raw_page(c) else {
        return;
    };
    let r = c.raw(call::CLOCK_REGISTER_PAGE, [gpa, 0, 0, 0, 0, 0]);
    if !expect_st(c, r, Status::SUCCESS, "CLOCK.REGISTER_PAGE") {
        return;
    }
    let Some(w) = start_worker(c, v, Some(read_clock_concurrently)) else {
        let _ = pv.clock_unregister_page();
        return;
    };
    w.mb.aux[0].store(raw as *const RawClockPage as usize as u64, SeqCst);
    let seq = w.post_kick(c, OP_CUSTOM);
    let running = spin_wait(c, || w.mb.executing.load(SeqCst) == seq);
    c.check(running, format_args!("the reader did not start"));
    // Force page updates while the other vCPU reads (virtual clock) until it has watched
    // enough of them, or let a real clock's host update the page as it does. The two vCPUs
    // only overlap when the machine runs them at the same time, so keep going (bounded)
    // until the reader saw many version changes.
    let mut updates = 0u32;
    let mut real_clock = false;
    for i in 0..1_000_000u32 {
        if real_clock {
            if i >= 3000 {
                break;
            }
            let _ = pv.vcpu_yield();
            continue;
        }
        match pv.harness_clock_advance(1) {
            Ok(()) => updates += 1,
            Err(_) => real_clock = true,
        }
        if i % 64 == 0 {
            let (seen, odd) = (w.mb.aux[1].load(SeqCst), w.mb.aux[4].load(SeqCst));
            if (seen >= MANY_UPDATES && odd > 0) || seen >= 4 * MANY_UPDATES {
                break;
            }
        }
    }
    w.mb.aux[7].store(1, SeqCst);
    let done = w.wait(c, seq).is_some();
    c.check(done, format_args!("the reader did not finish"));
    let (bad, snaps, odd) = (
        w.mb.aux[2].load(SeqCst),
        w.mb.aux[3].load(SeqCst),
        w.mb.aux[4].load(SeqCst),
    );
    c.check(
        bad == 0,
        format_args!(
            "{bad} inconsistent seqlock snapshots in {snaps} (odd versions seen {odd}, {updates} updates; first pair {:#x} -> {:#x}): the version was not odd while the host wrote",
            w.mb.aux[5].load(SeqCst),
            w.mb.aux[6].load(SeqCst)
        ),
    );
    c.check(
        snaps > 0,
        format_args!("the reader took no consistent snapshot"),
    );
    // A reader that watched many updates and never once saw an odd version: the host does
    // not make the version odd while it writes (the updates are forced with
    // HARNESS.CLOCK_ADVANCE, each one is a write of the page).
    let changes = w.mb.aux[1].load(SeqCst);
    c.check(
        changes < MANY_UPDATES || odd > 0,
        format_args!(
            "the reader saw the version change {changes} times during {updates} forced updates and never saw it odd: the host does not make the version odd while it writes the page"
        ),
    );
    if bad == 0 && odd == 0 && changes < MANY_UPDATES && !real_clock {
        // Neither a torn snapshot nor an odd version nor enough changes to conclude: the two
        // vCPUs did not run at the same time often enough (a busy machine). Say so instead of
        // passing a clause nothing showed.
        c.skip(format_args!(
            "inconclusive: the reader saw only {changes} version changes in {updates} forced updates (fewer than {MANY_UPDATES}) and no odd version; the vCPUs did not overlap enough"
        ));
    }
    let f = raw.fields();
    c.check(
        f.version & 1 == 0,
        format_args!("the version is odd ({}) after the updates", f.version),
    );
    w.finish(c);
    let _ = pv.clock_unregister_page();
}

/// Worker side of `clock::time_across_vcpus`: reads its own clock page (registered with
/// OP_REGISTER_CLOCK, address in `aux[0]`) and GET_TIME; stores them in `aux[1]`, `aux[2]`,
/// and whether its page says TSC_STABLE in `aux[3]`.
fn sample_time(mb: &Mailbox) {
    let a = usize::try_from(mb.aux[0].load(SeqCst)).unwrap_or(0);
    if a == 0 || a % core::mem::align_of::<ClockPageShared>() != 0 {
        return;
    }
    // SAFETY: `aux[0]` holds the address of a `ClockPageShared` (atomics) in the never-freed
    // arena, stored by the boot vCPU.
    let page: &'static ClockPageShared =
        unsafe { &*core::ptr::with_exposed_provenance::<ClockPageShared>(a) };
    let clock = Clock::from_page(page);
    let t = clock.now_ns().unwrap_or(u64::MAX);
    let g = mb.pv.time_ns().unwrap_or(u64::MAX);
    let stable = clock.tsc_stable().unwrap_or(false);
    mb.aux[1].store(t, SeqCst);
    mb.aux[2].store(g, SeqCst);
    mb.aux[3].store(u64::from(stable), SeqCst);
}

fn get_time_across_vcpus(c: &mut Ctx<'_>) {
    time_across_vcpus(c, false);
}

fn page_time_across_vcpus(c: &mut Ctx<'_>) {
    if !need_pages(c) {
        return;
    }
    time_across_vcpus(c, true);
}

/// Times taken on a second vCPU, then here: GET_TIME (`CLK-7`) or, with `pages`, the time
/// computed from each vCPU's own clock page when the host says TSC_STABLE (`CLK-4`).
fn time_across_vcpus(c: &mut Ctx<'_>, pages: bool) {
    if !need_vcpus(c, 2) {
        return;
    }
    let Some(v) = stopped_vcpu(c) else {
        c.skip(format_args!("no STOPPED secondary vCPU to start"));
        return;
    };
    let pv = c.pv;
    let Some(mine) = c.alloc(ClockPageShared::new()) else {
        return;
    };
    let mine: &'static ClockPageShared = mine;
    let Some(theirs) = c.alloc(ClockPageShared::new()) else {
        return;
    };
    let theirs: &'static ClockPageShared = theirs;
    let Some(w) = start_worker(c, v, Some(sample_time)) else {
        return;
    };
    let clock = if pages {
        w.mb.aux[0].store(theirs as *const ClockPageShared as usize as u64, SeqCst);
        let seq = w.post(OP_REGISTER_CLOCK, pvabi::CallId(0), [0; 6]);
        if let Some(r) = w.wait(c, seq) {
            expect_st(c, r, Status::SUCCESS, "the worker's CLOCK.REGISTER_PAGE");
        }
        c.expect_ok(pv.clock_register_page(mine), "CLOCK.REGISTER_PAGE")
    } else {
        None
    };
    let mut compared = false;
    for _ in 0..3 {
        if pages {
            w.custom(c);
        } else if let Some(r) = w.call(c, call::CLOCK_GET_TIME, [0; 6]) {
            w.mb.aux[2].store(r.value, SeqCst);
        }
        // The worker's call completed before this one: GET_TIME does not go back.
        let g = now(&pv);
        let gw = w.mb.aux[2].load(SeqCst);
        c.check(
            pages || g >= gw,
            format_args!("GET_TIME on vCPU {v} gave {gw}, then here {g}"),
        );
        if let Some(clock) = clock {
            let t = clock.now_ns().unwrap_or(0);
            let tw = w.mb.aux[1].load(SeqCst);
            if w.mb.aux[3].load(SeqCst) != 0 && clock.tsc_stable().unwrap_or(false) {
                compared = true;
                c.check(
                    t >= tw,
                    format_args!(
                        "with TSC_STABLE the page time went back across vCPUs: {tw} on vCPU {v} (its GET_TIME {gw}), then {t} here (GET_TIME {g})"
                    ),
                );
            }
        }
        let _ = pv.vcpu_yield();
    }
    w.finish(c);
    if clock.is_some() {
        let _ = pv.clock_unregister_page();
    }
    if pages && !compared {
        c.skip(format_args!(
            "the host does not set FLAG_TSC_STABLE: times of different vCPUs' pages need not be ordered"
        ));
    }
}

fn wallclock(c: &mut Ctx<'_>) {
    let pv = c.pv;
    let Some(base) = c.expect_ok(pv.wallclock_base_ns(), "CLOCK.GET_WALLCLOCK") else {
        return;
    };
    let t = now(&pv);
    let wall = base.saturating_add(t);
    // 2020-01-01 and 2200-01-01 in ns since the epoch: a UTC time in ns, not s or us.
    const Y2020: u64 = 1_577_836_800 * 1_000_000_000;
    const Y2200: u64 = 7_258_118_400 * 1_000_000_000;
    c.check(
        (Y2020..Y2200).contains(&wall),
        format_args!("wall clock now = {base} + {t} ns is not a UTC time between 2020 and 2200"),
    );
    if let Some(b2) = c.expect_ok(pv.wallclock_base_ns(), "CLOCK.GET_WALLCLOCK") {
        let diff = b2.abs_diff(base);
        c.check(
            diff < 60_000_000_000,
            format_args!("the wall clock at system time 0 moved by {diff} ns between two calls"),
        );
    }
}

fn get_time_monotonic(c: &mut Ctx<'_>) {
    let pv = c.pv;
    let mut last = 0u64;
    for i in 0..200 {
        let r = c.raw(call::CLOCK_GET_TIME, [0; 6]);
        if !expect_st(c, r, Status::SUCCESS, "CLOCK.GET_TIME") {
            return;
        }
        c.check(
            r.value >= last,
            format_args!("GET_TIME went back from {last} to {} (call {i})", r.value),
        );
        last = r.value;
        if i % 50 == 0 {
            let _ = block_a_little(&pv);
        }
    }
}

fn block_a_little(pv: &pvabi_guest::Pvabi) -> Result<u64, Status> {
    pv.call_scalar(call::VCPU_BLOCK, [now(pv) + POLL_NS / 10, 0, 0, 0, 0, 0])
}

fn timer_fires_once_at_deadline(c: &mut Ctx<'_>) {
    if !need_timer(c) {
        return;
    }
    let Some(ev) = shared_events(c) else { return };
    let pv = c.pv;
    let me = pv.vcpu_id().unwrap_or(0);
    let Some(p) = c.expect_ok(pv.event_alloc(), "EVENT.ALLOC") else {
        return;
    };
    quiet(&ev, me);
    let d = now(&pv) + 5 * POLL_NS;
    let r = c.raw(call::CLOCK_SET_TIMER, [d, p.arg(), 0, 0, 0, 0]);
    c.check(
        r.status == Status::SUCCESS && r.value == 0,
        format_args!("CLOCK.SET_TIMER returned ({:?}, {})", r.status, r.value),
    );
    // Never before the deadline: whenever the bit is seen, GET_TIME is at least the deadline.
    if ev.is_pending(p) {
        let t = now(&pv);
        c.check(t >= d, format_args!("the timer fired at {t}, before {d}"));
    }
    let fired = wait_for(c, WAIT_NS, || ev.is_pending(p));
    let t = now(&pv);
    c.check(
        fired,
        format_args!("the timer did not fire within 2 s of its deadline"),
    );
    c.check(
        !fired || t >= d,
        format_args!("the port became pending at {t}, before the deadline {d}"),
    );
    // At most once per arming.
    ev.clear_pending(p);
    quiet(&ev, me);
    let later = t + 10 * POLL_NS;
    let passed = wait_for(c, WAIT_NS, || now(&pv) >= later);
    c.check(passed, format_args!("system time did not move on"));
    c.check(
        !ev.is_pending(p),
        format_args!("a one-shot timer fired a second time"),
    );
    // A deadline at or before now fires at once.
    for d in [1, now(&pv)] {
        ev.clear_pending(p);
        c.expect_ok(pv.set_timer(d, p), "CLOCK.SET_TIMER with a passed deadline");
        c.check(
            ev.is_pending(p),
            format_args!("a timer with the passed deadline {d} did not fire at once"),
        );
    }
    let _ = pv.cancel_timer(p);
    ev.clear_pending(p);
    quiet(&ev, me);
    let _ = pv.event_close(p);
}

fn timer_replace_and_cancel(c: &mut Ctx<'_>) {
    if !need_timer(c) {
        return;
    }
    let Some(ev) = shared_events(c) else { return };
    let pv = c.pv;
    let me = pv.vcpu_id().unwrap_or(0);
    let Some(p) = c.expect_ok(pv.event_alloc(), "EVENT.ALLOC") else {
        return;
    };
    quiet(&ev, me);
    // Replace: armed at d1, re-armed at a later d2: nothing at d1, the port at d2.
    let t = now(&pv);
    let (d1, d2) = (t + 3 * POLL_NS, t + 30 * POLL_NS);
    c.expect_ok(pv.set_timer(d1, p), "CLOCK.SET_TIMER(d1)");
    c.expect_ok(pv.set_timer(d2, p), "CLOCK.SET_TIMER(d2) replacing it");
    let mid = d1 + 5 * POLL_NS;
    let _ = wait_for(c, WAIT_NS, || ev.is_pending(p) || now(&pv) >= mid);
    let early = ev.is_pending(p);
    let at = now(&pv);
    c.check(
        !early || at >= d2,
        format_args!("the replaced deadline still fired (pending at {at}, new deadline {d2})"),
    );
    let fired = wait_for(c, WAIT_NS, || ev.is_pending(p));
    let t2 = now(&pv);
    c.check(
        fired && t2 >= d2,
        format_args!("the replacing timer fired: {fired} at {t2} (deadline {d2})"),
    );
    ev.clear_pending(p);
    quiet(&ev, me);
    // Cancel: deadline 0 (port ignored) succeeds armed or not; nothing fires.
    let d = now(&pv) + 3 * POLL_NS;
    c.expect_ok(pv.set_timer(d, p), "CLOCK.SET_TIMER");
    for port in [p.arg(), 0, 5000, u64::MAX] {
        let r = c.raw(call::CLOCK_SET_TIMER, [0, port, 0, 0, 0, 0]);
        expect_st(
            c,
            r,
            Status::SUCCESS,
            "CLOCK.SET_TIMER(0, any port) cancels",
        );
    }
    let end = d + 5 * POLL_NS;
    let passed = wait_for(c, WAIT_NS, || now(&pv) >= end);
    c.check(passed, format_args!("system time did not move on"));
    c.check(!ev.is_pending(p), format_args!("a cancelled timer fired"));
    ev.clear_pending(p);
    quiet(&ev, me);
    let _ = pv.event_close(p);
}

fn timer_bad_ports(c: &mut Ctx<'_>) {
    if !need_timer(c) {
        return;
    }
    let Some(ev) = shared_events(c) else { return };
    let pv = c.pv;
    let d = now(&pv) + 1_000 * POLL_NS;
    for port in [0, 1024, 4096, 1 << 32, u64::MAX] {
        let r = c.raw(call::CLOCK_SET_TIMER, [d, port, 0, 0, 0, 0]);
        expect_st(
            c,
            r,
            Status::INVALID_PARAM,
            "CLOCK.SET_TIMER with port 0 or >= 1024",
        );
    }
    let Some(p) = c.expect_ok(pv.event_alloc(), "EVENT.ALLOC") else {
        return;
    };
    c.expect_ok(pv.event_close(p), "EVENT.CLOSE");
    let r = c.raw(call::CLOCK_SET_TIMER, [d, p.arg(), 0, 0, 0, 0]);
    expect_st(
        c,
        r,
        Status::NOT_FOUND,
        "CLOCK.SET_TIMER with an unallocated port",
    );
    let _ = pv.cancel_timer(p);
    ev.clear_pending(p);
}

fn fresh_guest(c: &mut Ctx<'_>) {
    let pv = c.pv;
    // CLK-13: system time starts at most 1 s before the first instruction; this call comes
    // a short time after it (allowance: 1 s more).
    let t = now(&pv);
    c.check(
        t <= 2_000_000_000,
        format_args!("system time is {t} ns at the start of a fresh guest"),
    );
    // CLK-15: no event page yet.
    if has(c, Features::TIMER) {
        let r = c.raw(call::CLOCK_SET_TIMER, [t + POLL_NS, 1, 0, 0, 0, 0]);
        expect_st(
            c,
            r,
            Status::BAD_STATE,
            "CLOCK.SET_TIMER without an event page",
        );
        let r = c.raw(call::CLOCK_SET_TIMER, [0, 1, 0, 0, 0, 0]);
        expect_st(
            c,
            r,
            Status::SUCCESS,
            "CLOCK.SET_TIMER(0) without an event page (a cancel always succeeds)",
        );
    }
    c.report_before_end();
    pv.power_off(0);
}
