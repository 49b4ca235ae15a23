//! MEMORY (spec chapter 9): the memory map and the balloon.
//!
//! Balloon cases release pages of the suite's own arena and reclaim them before they end;
//! HARNESS.BALLOON_CHECK shows the host's bookkeeping page by page. Each case checks one
//! clause, so a host that breaks one rule fails that clause only.

use pvabi::call;
use pvabi::discovery::Features;
use pvabi::memory::{MemKind, MemMapEntry, MAX_BALLOON_PAGES_PER_CALL};
use pvabi::{Status, PAGE_SIZE};

use super::store::{expect, gpa, has, host_alive, ram_top, Scratch};
use crate::{Case, Ctx};

/// The chapter's cases.
pub const CASES: &[Case] = &[
    Case {
        name: "memory::get_map",
        clauses: "MEM-1",
        run: get_map,
    },
    Case {
        name: "memory::map_shape",
        clauses: "MEM-2",
        run: map_shape,
    },
    Case {
        name: "memory::get_map_bad_buffers",
        clauses: "MEM-3",
        run: get_map_bad_buffers,
    },
    Case {
        name: "memory::map_fixed_across_balloon",
        clauses: "MEM-3",
        run: map_fixed_across_balloon,
    },
    Case {
        name: "memory::balloon_release",
        clauses: "MEM-4,MEM-8",
        run: balloon_release,
    },
    Case {
        name: "memory::balloon_reclaim",
        clauses: "MEM-6",
        run: balloon_reclaim,
    },
    Case {
        name: "memory::balloon_release_already",
        clauses: "MEM-12",
        run: balloon_release_already,
    },
    Case {
        name: "memory::balloon_reclaim_not_released",
        clauses: "MEM-13",
        run: balloon_reclaim_not_released,
    },
    Case {
        name: "memory::balloon_release_bad_addresses",
        clauses: "MEM-4",
        run: balloon_release_bad_addresses,
    },
    Case {
        name: "memory::balloon_reclaim_bad_addresses",
        clauses: "MEM-6",
        run: balloon_reclaim_bad_addresses,
    },
    Case {
        name: "memory::balloon_page_counts",
        clauses: "MEM-5",
        run: balloon_page_counts,
    },
    Case {
        name: "memory::balloon_shared_area",
        clauses: "MEM-9",
        run: balloon_shared_area,
    },
    Case {
        name: "memory::released_page_named_in_a_call",
        clauses: "MEM-11",
        run: released_page_named_in_a_call,
    },
    Case {
        name: "memory::released_page_contents",
        clauses: "MEM-10",
        run: released_page_contents,
    },
    Case {
        name: "memory::balloon_feature_absent",
        clauses: "MEM-7",
        run: balloon_feature_absent,
    },
];

const PAGE: u64 = PAGE_SIZE;

/// Entries a map buffer of these cases holds.
const CAP: usize = 64;

fn entry_at(b: &[u8], i: usize) -> MemMapEntry {
    let u64_at = |o: usize| {
        let mut x = [0u8; 8];
        if let Some(s) = b.get(o..o + 8) {
            x.copy_from_slice(s);
        }
        u64::from_le_bytes(x)
    };
    let o = i * MemMapEntry::SIZE;
    MemMapEntry {
        base: u64_at(o),
        length: u64_at(o + 8),
        kind: u64_at(o + 16) as u32,
        _reserved: (u64_at(o + 16) >> 32) as u32,
    }
}

/// GET_MAP into a fresh buffer of [`CAP`] entries: (buffer, total), or `None` (recorded).
fn read_map(c: &mut Ctx<'_>, s: &mut Scratch) -> Option<(&'static [u8], u64)> {
    let buf = s.take(CAP * MemMapEntry::SIZE);
    let r = c.raw(call::MEMORY_GET_MAP, [gpa(c, buf), CAP as u64, 0, 0, 0, 0]);
    let ok = c.check(
        r.status == Status::SUCCESS && r.value >= 1 && r.value <= CAP as u64,
        format_args!("MEMORY.GET_MAP: {:?} total {}", r.status, r.value),
    );
    let buf: &'static [u8] = buf;
    ok.then_some((buf, r.value))
}

fn get_map(c: &mut Ctx<'_>) {
    let Some(mut s) = Scratch::new(c, 16 * 1024) else {
        return;
    };
    let Some((buf, total)) = read_map(c, &mut s) else {
        return;
    };
    let n = total as usize;
    // The same entries as the boot info's map.
    if c.pv.info().boot_info.is_some() {
        let mut boot_n = 0usize;
        for (i, b) in c.pv.boot_memory_map().enumerate() {
            boot_n += 1;
            let e = entry_at(buf, i);
            c.check(
                i >= n || e == b,
                format_args!("MEM-1 entry {i}: GET_MAP {e:?}, boot info {b:?}"),
            );
        }
        c.check(
            n == boot_n,
            format_args!("MEM-1 GET_MAP has {n} entries, the boot info's map {boot_n}"),
        );
    }
    // max_entries = 0 writes nothing and needs no buffer; the total comes back.
    let r = c.raw(call::MEMORY_GET_MAP, [u64::MAX - 7, 0, 0, 0, 0, 0]);
    c.check(
        r.status == Status::SUCCESS && r.value == total,
        format_args!(
            "MEM-1 GET_MAP with max_entries 0: expected SUCCESS {total}, got {:?} {}",
            r.status, r.value
        ),
    );
    // A buffer of one entry gets exactly the first one, and the total.
    let one = s.take(3 * MemMapEntry::SIZE);
    one.fill(0xAA);
    let r = c.raw(call::MEMORY_GET_MAP, [gpa(c, one), 1, 0, 0, 0, 0]);
    c.check(
        r.status == Status::SUCCESS && r.value == total,
        format_args!(
            "MEM-1 GET_MAP with max_entries 1: expected SUCCESS {total}, got {:?} {}",
            r.status, r.value
        ),
    );
    c.check(
        entry_at(one, 0) == entry_at(buf, 0)
            && one
                .get(MemMapEntry::SIZE..)
                .is_some_and(|t| t.iter().all(|b| *b == 0xAA)),
        format_args!("MEM-1 GET_MAP with max_entries 1 wrote other than the first entry"),
    );
    // A buffer of exactly `total` entries.
    let exact = s.take(n * MemMapEntry::SIZE);
    let r = c.raw(call::MEMORY_GET_MAP, [gpa(c, exact), total, 0, 0, 0, 0]);
    c.check(
        r.status == Status::SUCCESS && r.value == total && buf.get(..exact.len()) == Some(&*exact),
        format_args!(
            "MEM-1 GET_MAP into an exact buffer: {:?} {}",
            r.status, r.value
        ),
    );
}

fn map_shape(c: &mut Ctx<'_>) {
    let Some(mut s) = Scratch::new(c, 4096) else {
        return;
    };
    let Some((buf, total)) = read_map(c, &mut s) else {
        return;
    };
    // Sorted, non-overlapping, page-granular, nonzero, known kinds, reserved zero.
    let mut prev_end = 0u64;
    let mut ram = 0usize;
    for i in 0..total as usize {
        let e = entry_at(buf, i);
        let end = e.base.checked_add(e.length);
        c.check(
            e.base % PAGE == 0 && e.length % PAGE == 0 && e.length != 0 && end.is_some(),
            format_args!("MEM-2 entry {i} not page-granular or empty: {e:?}"),
        );
        c.check(
            i == 0 || e.base >= prev_end,
            format_args!("MEM-2 entry {i} unsorted or overlapping (previous end {prev_end:#x})"),
        );
        c.check(
            (1..=4).contains(&e.kind),
            format_args!("MEM-2 entry {i} has kind {}", e.kind),
        );
        c.check(
            e._reserved == 0,
            format_args!("MEM-2 entry {i} reserved field {}", e._reserved),
        );
        if MemKind(e.kind) == MemKind::RAM {
            ram += 1;
        }
        prev_end = end.unwrap_or(u64::MAX);
    }
    c.check(ram > 0, format_args!("MEM-2 the map has no RAM range"));
}

fn get_map_bad_buffers(c: &mut Ctx<'_>) {
    let r = c.raw(call::MEMORY_GET_MAP, [0, 0, 0, 0, 0, 0]);
    let total = r.value;
    let top = ram_top(c);
    for (g, m, what) in [
        (top, 1u64, "beyond RAM"),
        (top + 0x100_0000, total, "far beyond RAM"),
        (top - 8, total.max(2), "straddling the end of RAM"),
        (u64::MAX - 23, total, "wrapping"),
        (!7u64, total, "wrapping"),
    ] {
        let r = c.raw(call::MEMORY_GET_MAP, [g, m, 0, 0, 0, 0]);
        c.check(
            r.status == Status::INVALID_ADDRESS,
            format_args!(
                "MEM-3 GET_MAP into a buffer {what} ({g:#x}, {m}): expected INVALID_ADDRESS, got \
                 {:?}",
                r.status
            ),
        );
    }
    host_alive(c, "hostile GET_MAP buffers");
}

fn map_fixed_across_balloon(c: &mut Ctx<'_>) {
    let Some(mut s) = Scratch::new(c, 8 * 1024) else {
        return;
    };
    let Some((before, _)) = read_map(c, &mut s) else {
        return;
    };
    let Some((again, _)) = read_map(c, &mut s) else {
        return;
    };
    c.check(
        again == before,
        format_args!("MEM-3 the map changed between two GET_MAP calls"),
    );
    if has(c, Features::BALLOON) {
        let Some(pages) = c.buf(2 * PAGE as usize, PAGE as usize) else {
            return;
        };
        let g = gpa(c, pages);
        let r = c.raw(call::MEMORY_BALLOON_RELEASE, [g, 2, 0, 0, 0, 0]);
        if expect(c, r, Status::SUCCESS, "BALLOON_RELEASE") {
            if let Some((after, _)) = read_map(c, &mut s) {
                c.check(
                    after == before,
                    format_args!("MEM-3 the memory map changed after BALLOON_RELEASE"),
                );
            }
            let r = c.raw(call::MEMORY_BALLOON_RECLAIM, [g, 2, 0, 0, 0, 0]);
            expect(c, r, Status::SUCCESS, "BALLOON_RECLAIM");
        }
    }
}

fn balloon_supported(c: &mut Ctx<'_>) -> bool {
    if has(c, Features::BALLOON) {
        true
    } else {
        c.skip(format_args!(
            "the host does not set the BALLOON feature bit"
        ));
        false
    }
}

fn query(c: &mut Ctx<'_>) -> u64 {
    let r = c.raw(call::MEMORY_BALLOON_QUERY, [0; 6]);
    c.check(
        r.status == Status::SUCCESS,
        format_args!("BALLOON_QUERY: {:?}", r.status),
    );
    r.value
}

fn released(c: &Ctx<'_>, g: u64) -> Option<bool> {
    let r = c.raw(call::HARNESS_BALLOON_CHECK, [g, 0, 0, 0, 0, 0]);
    match (r.status, r.value) {
        (Status::SUCCESS, 0) => Some(false),
        (Status::SUCCESS, 1) => Some(true),
        _ => None,
    }
}

/// `n` pages of the arena filled with 0x5A: (pages, gpa).
fn pages(c: &mut Ctx<'_>, n: usize) -> Option<(&'static mut [u8], u64)> {
    let p = c.buf(n * PAGE as usize, PAGE as usize)?;
    p.fill(0x5A);
    let g = gpa(c, p);
    Some((p, g))
}

/// Reclaims whatever of `n` pages at `g` is still released (cleanup, unchecked).
fn reclaim_all(c: &mut Ctx<'_>, g: u64, n: u64) {
    for i in 0..n {
        if released(c, g + i * PAGE) == Some(true) {
            let _ = c.raw(call::MEMORY_BALLOON_RECLAIM, [g + i * PAGE, 1, 0, 0, 0, 0]);
        }
    }
}

fn balloon_release(c: &mut Ctx<'_>) {
    if !balloon_supported(c) {
        return;
    }
    let Some((_, g)) = pages(c, 6) else { return };
    let q0 = query(c);
    let r = c.raw(call::MEMORY_BALLOON_RELEASE, [g, 4, 0, 0, 0, 0]);
    if !expect(c, r, Status::SUCCESS, "MEM-4 BALLOON_RELEASE of 4 pages") {
        return;
    }
    let q1 = query(c);
    c.check(
        q1 == q0 + 4,
        format_args!("MEM-8 BALLOON_QUERY after releasing 4 pages: {q1}, before {q0}"),
    );
    for i in 0..6u64 {
        let want = i < 4;
        let got = released(c, g + i * PAGE);
        c.check(
            got == Some(want),
            format_args!("MEM-4 page {i}: host bookkeeping released={got:?}, expected {want}"),
        );
    }
    let r = c.raw(call::MEMORY_BALLOON_RELEASE, [g + 5 * PAGE, 1, 0, 0, 0, 0]);
    expect(
        c,
        r,
        Status::SUCCESS,
        "MEM-4 BALLOON_RELEASE of one more page",
    );
    let q2 = query(c);
    c.check(
        q2 == q0 + 5,
        format_args!("MEM-8 BALLOON_QUERY after releasing 5 pages: {q2}, before {q0}"),
    );
    reclaim_all(c, g, 6);
    let q3 = query(c);
    c.check(
        q3 == q0,
        format_args!("MEM-8 BALLOON_QUERY after reclaiming everything: {q3}, expected {q0}"),
    );
}

fn balloon_reclaim(c: &mut Ctx<'_>) {
    if !balloon_supported(c) {
        return;
    }
    let Some((p, g)) = pages(c, 5) else { return };
    let r = c.raw(call::MEMORY_BALLOON_RELEASE, [g, 4, 0, 0, 0, 0]);
    if !expect(c, r, Status::SUCCESS, "BALLOON_RELEASE of 4 pages") {
        return;
    }
    // Part of the range, then the rest.
    let r = c.raw(call::MEMORY_BALLOON_RECLAIM, [g + PAGE, 2, 0, 0, 0, 0]);
    expect(c, r, Status::SUCCESS, "MEM-6 BALLOON_RECLAIM of pages 1..3");
    c.check(
        released(c, g) == Some(true)
            && released(c, g + PAGE) == Some(false)
            && released(c, g + 2 * PAGE) == Some(false)
            && released(c, g + 3 * PAGE) == Some(true),
        format_args!("MEM-6 bookkeeping after a partial reclaim"),
    );
    let r = c.raw(call::MEMORY_BALLOON_RECLAIM, [g, 1, 0, 0, 0, 0]);
    expect(c, r, Status::SUCCESS, "MEM-6 BALLOON_RECLAIM of page 0");
    let r = c.raw(call::MEMORY_BALLOON_RECLAIM, [g + 3 * PAGE, 1, 0, 0, 0, 0]);
    expect(c, r, Status::SUCCESS, "MEM-6 BALLOON_RECLAIM of page 3");
    for i in 0..4u64 {
        c.check(
            released(c, g + i * PAGE) == Some(false),
            format_args!("MEM-6 page {i} still released after reclaim"),
        );
    }
    // Reclaimed pages read as zero; the page never released kept its contents.
    let zero = p.get(..4 * PAGE as usize).is_some_and(|p| {
        p.iter().all(|b| {
            // SAFETY: `b` is a valid reference to a byte of this case's buffer; the volatile
            // read only keeps the compiler from assuming the host left it unchanged.
            unsafe { core::ptr::read_volatile(b) == 0 }
        })
    });
    c.check(
        zero,
        format_args!("MEM-6 reclaimed pages do not read as zero"),
    );
    let kept = p.get(4 * PAGE as usize..).is_some_and(|p| {
        p.iter().all(|b| {
            // SAFETY: as above.
            unsafe { core::ptr::read_volatile(b) == 0x5A }
        })
    });
    c.check(kept, format_args!("MEM-6 a page never released changed"));
}

fn balloon_release_already(c: &mut Ctx<'_>) {
    if !balloon_supported(c) {
        return;
    }
    let Some((_, g)) = pages(c, 6) else { return };
    let r = c.raw(call::MEMORY_BALLOON_RELEASE, [g, 4, 0, 0, 0, 0]);
    if !expect(c, r, Status::SUCCESS, "BALLOON_RELEASE of pages 0..4") {
        return;
    }
    let q1 = query(c);
    for (first, n) in [(0u64, 1u64), (3, 2), (2, 1), (0, 4), (3, 3)] {
        let r = c.raw(
            call::MEMORY_BALLOON_RELEASE,
            [g + first * PAGE, n, 0, 0, 0, 0],
        );
        c.check(
            r.status == Status::ALREADY,
            format_args!(
                "MEM-12 BALLOON_RELEASE of pages {first}..{}: expected ALREADY, got {:?}",
                first + n,
                r.status
            ),
        );
    }
    c.check(
        released(c, g + 4 * PAGE) == Some(false) && released(c, g + 5 * PAGE) == Some(false),
        format_args!("MEM-12 a refused release released pages 4 or 5"),
    );
    let q2 = query(c);
    c.check(
        q2 == q1,
        format_args!("MEM-12 refused releases changed the count: {q1} -> {q2}"),
    );
    reclaim_all(c, g, 6);
}

fn balloon_reclaim_not_released(c: &mut Ctx<'_>) {
    if !balloon_supported(c) {
        return;
    }
    let Some((_, g)) = pages(c, 6) else { return };
    let r = c.raw(call::MEMORY_BALLOON_RECLAIM, [g, 1, 0, 0, 0, 0]);
    expect(
        c,
        r,
        Status::BAD_STATE,
        "MEM-13 BALLOON_RECLAIM of a page never released",
    );
    let r = c.raw(call::MEMORY_BALLOON_RELEASE, [g, 4, 0, 0, 0, 0]);
    if !expect(c, r, Status::SUCCESS, "BALLOON_RELEASE of pages 0..4") {
        return;
    }
    let q1 = query(c);
    for (first, n) in [(3u64, 2u64), (4, 1), (5, 1), (0, 6)] {
        let r = c.raw(
            call::MEMORY_BALLOON_RECLAIM,
            [g + first * PAGE, n, 0, 0, 0, 0],
        );
        c.check(
            r.status == Status::BAD_STATE,
            format_args!(
                "MEM-13 BALLOON_RECLAIM of pages {first}..{}: expected BAD_STATE, got {:?}",
                first + n,
                r.status
            ),
        );
    }
    c.check(
        (0..4u64).all(|i| released(c, g + i * PAGE) == Some(true)),
        format_args!("MEM-13 a refused reclaim reclaimed a page"),
    );
    let q2 = query(c);
    c.check(
        q2 == q1,
        format_args!("MEM-13 refused reclaims changed the count: {q1} -> {q2}"),
    );
    let r = c.raw(call::MEMORY_BALLOON_RECLAIM, [g, 4, 0, 0, 0, 0]);
    expect(c, r, Status::SUCCESS, "BALLOON_RECLAIM of pages 0..4");
    let r = c.raw(call::MEMORY_BALLOON_RECLAIM, [g, 1, 0, 0, 0, 0]);
    expect(c, r, Status::BAD_STATE, "MEM-13 a second reclaim");
}

/// Bad (gpa, pages) ranges for the balloon calls: misaligned, outside RAM, straddling its
/// end, wrapping, more pages than RAM holds, and a page of a non-RAM range of the map.
fn bad_ranges(c: &mut Ctx<'_>, g: u64) -> [(u64, u64, &'static str); 7] {
    let top = ram_top(c);
    let mut bad: [(u64, u64, &str); 7] = [
        (g + 8, 1, "a misaligned gpa"),
        (g + 2048, 1, "a misaligned gpa"),
        (top, 1, "a page beyond RAM"),
        (top - PAGE, 2, "pages straddling the end of RAM"),
        (!(PAGE - 1), 2, "a range that wraps"),
        (g, (top - g) / PAGE + 1, "more pages than RAM holds"),
        (0, 0, ""),
    ];
    if let Some(b) =
        c.pv.boot_memory_map()
            .find(|e| MemKind(e.kind) != MemKind::RAM)
    {
        bad[6] = (b.base, 1, "a page of a non-RAM range");
    }
    bad
}

fn balloon_release_bad_addresses(c: &mut Ctx<'_>) {
    if !balloon_supported(c) {
        return;
    }
    let Some((_, g)) = pages(c, 2) else { return };
    let q0 = query(c);
    for (a, n, what) in bad_ranges(c, g) {
        if what.is_empty() || n > MAX_BALLOON_PAGES_PER_CALL {
            continue;
        }
        let r = c.raw(call::MEMORY_BALLOON_RELEASE, [a, n, 0, 0, 0, 0]);
        if r.status == Status::SUCCESS {
            // Undo a wrong acceptance so the guest keeps working.
            let _ = c.raw(call::MEMORY_BALLOON_RECLAIM, [a, n, 0, 0, 0, 0]);
        }
        c.check(
            r.status == Status::INVALID_ADDRESS,
            format_args!(
                "MEM-4 BALLOON_RELEASE with {what} ({a:#x}, {n}): expected INVALID_ADDRESS, got {:?}",
                r.status
            ),
        );
    }
    let q1 = query(c);
    c.check(
        q1 == q0 && released(c, g) == Some(false),
        format_args!("MEM-4 refused releases released pages ({q0} -> {q1})"),
    );
    host_alive(c, "hostile BALLOON_RELEASE ranges");
}

fn balloon_reclaim_bad_addresses(c: &mut Ctx<'_>) {
    if !balloon_supported(c) {
        return;
    }
    let Some((_, g)) = pages(c, 2) else { return };
    let r = c.raw(call::MEMORY_BALLOON_RELEASE, [g, 2, 0, 0, 0, 0]);
    if !expect(c, r, Status::SUCCESS, "BALLOON_RELEASE") {
        return;
    }
    let q0 = query(c);
    for (a, n, what) in bad_ranges(c, g) {
        if what.is_empty() || n > MAX_BALLOON_PAGES_PER_CALL {
            continue;
        }
        let r = c.raw(call::MEMORY_BALLOON_RECLAIM, [a, n, 0, 0, 0, 0]);
        c.check(
            r.status == Status::INVALID_ADDRESS,
            format_args!(
                "MEM-6 BALLOON_RECLAIM with {what} ({a:#x}, {n}): expected INVALID_ADDRESS, got {:?}",
                r.status
            ),
        );
    }
    let q1 = query(c);
    c.check(
        q1 == q0 && released(c, g) == Some(true),
        format_args!("MEM-6 refused reclaims changed the balloon ({q0} -> {q1})"),
    );
    reclaim_all(c, g, 2);
    host_alive(c, "hostile BALLOON_RECLAIM ranges");
}

fn balloon_page_counts(c: &mut Ctx<'_>) {
    if !balloon_supported(c) {
        return;
    }
    let Some((_, g)) = pages(c, 1) else { return };
    let q0 = query(c);
    for (id, name) in [
        (call::MEMORY_BALLOON_RELEASE, "BALLOON_RELEASE"),
        (call::MEMORY_BALLOON_RECLAIM, "BALLOON_RECLAIM"),
    ] {
        for n in [0, MAX_BALLOON_PAGES_PER_CALL + 1, 1 << 40, u64::MAX] {
            let r = c.raw(id, [g, n, 0, 0, 0, 0]);
            if id == call::MEMORY_BALLOON_RELEASE && r.status == Status::SUCCESS {
                let _ = c.raw(call::MEMORY_BALLOON_RECLAIM, [g, n, 0, 0, 0, 0]);
            }
            c.check(
                r.status == Status::INVALID_PARAM,
                format_args!(
                    "MEM-5 {name} with {n} pages: expected INVALID_PARAM, got {:?}",
                    r.status
                ),
            );
        }
    }
    let q1 = query(c);
    c.check(
        q1 == q0 && released(c, g) == Some(false),
        format_args!("MEM-5 refused calls changed the balloon ({q0} -> {q1})"),
    );
}

fn balloon_shared_area(c: &mut Ctx<'_>) {
    if !balloon_supported(c) {
        return;
    }
    let mut checked = false;
    let q0 = query(c);
    // The event page, when the suite registered one.
    if let Some(ev) = c.shared.events {
        let g = c.pv.translate().gpa_of_ref(ev.page()).unwrap_or(u64::MAX);
        let r = c.raw(call::MEMORY_BALLOON_RELEASE, [g, 1, 0, 0, 0, 0]);
        if r.status == Status::SUCCESS {
            let _ = c.raw(call::MEMORY_BALLOON_RECLAIM, [g, 1, 0, 0, 0, 0]);
        }
        expect(
            c,
            r,
            Status::BAD_STATE,
            "MEM-9 BALLOON_RELEASE of the event page",
        );
        checked = true;
    }
    // A grant table, when GRANT is offered: the table page and a range that covers it.
    if has(c, Features::GRANT) {
        let Some(pages) = c.buf(3 * PAGE as usize, PAGE as usize) else {
            return;
        };
        let g = gpa(c, pages);
        let table = g + PAGE;
        let r = c.raw(call::GRANT_SETUP_TABLE, [table, 4, 0, 0, 0, 0]);
        if expect(c, r, Status::SUCCESS, "GRANT.SETUP_TABLE") {
            for (a, n, what) in [(table, 1u64, "the table page"), (g, 3, "a range over it")] {
                let r = c.raw(call::MEMORY_BALLOON_RELEASE, [a, n, 0, 0, 0, 0]);
                if r.status == Status::SUCCESS {
                    let _ = c.raw(call::MEMORY_BALLOON_RECLAIM, [a, n, 0, 0, 0, 0]);
                }
                c.check(
                    r.status == Status::BAD_STATE,
                    format_args!(
                        "MEM-9 BALLOON_RELEASE of {what} of the grant table: expected BAD_STATE, \
                         got {:?}",
                        r.status
                    ),
                );
            }
            c.check(
                released(c, g) == Some(false) && released(c, table) == Some(false),
                format_args!("MEM-9 a refused release released a page"),
            );
            let r = c.raw(call::GRANT_SETUP_TABLE, [0, 0, 0, 0, 0, 0]);
            expect(c, r, Status::SUCCESS, "GRANT.SETUP_TABLE(0, 0)");
            // Once the table is gone, the page may be released.
            let r = c.raw(call::MEMORY_BALLOON_RELEASE, [table, 1, 0, 0, 0, 0]);
            if expect(
                c,
                r,
                Status::SUCCESS,
                "BALLOON_RELEASE after removing the table",
            ) {
                let r = c.raw(call::MEMORY_BALLOON_RECLAIM, [table, 1, 0, 0, 0, 0]);
                expect(c, r, Status::SUCCESS, "BALLOON_RECLAIM");
            }
        }
        checked = true;
    }
    // A crash buffer, when CRASH_BUFFER is offered.
    if has(c, Features::CRASH_BUFFER) {
        let Some(page) = c.buf(PAGE as usize, PAGE as usize) else {
            return;
        };
        let g = gpa(c, page);
        let r = c.raw(call::POWER_REGISTER_CRASH_BUFFER, [g + 64, 256, 0, 0, 0, 0]);
        if expect(c, r, Status::SUCCESS, "POWER.REGISTER_CRASH_BUFFER") {
            let r = c.raw(call::MEMORY_BALLOON_RELEASE, [g, 1, 0, 0, 0, 0]);
            if r.status == Status::SUCCESS {
                let _ = c.raw(call::MEMORY_BALLOON_RECLAIM, [g, 1, 0, 0, 0, 0]);
            }
            expect(
                c,
                r,
                Status::BAD_STATE,
                "MEM-9 BALLOON_RELEASE of the page holding the crash buffer",
            );
            let r = c.raw(call::POWER_REGISTER_CRASH_BUFFER, [0; 6]);
            expect(c, r, Status::SUCCESS, "POWER.REGISTER_CRASH_BUFFER(0, 0)");
        }
        checked = true;
    }
    let q1 = query(c);
    c.check(
        q1 == q0,
        format_args!("MEM-9 BALLOON_QUERY changed: {q0} -> {q1}"),
    );
    if !checked {
        c.skip(format_args!(
            "no shared area to release (no event page, no GRANT, no CRASH_BUFFER)"
        ));
    }
}

fn released_page_named_in_a_call(c: &mut Ctx<'_>) {
    if !balloon_supported(c) {
        return;
    }
    let Some(mut s) = Scratch::new(c, 4096) else {
        return;
    };
    let Some(page) = c.buf(PAGE as usize, PAGE as usize) else {
        return;
    };
    page.fill(0x5A);
    let g = gpa(c, page);
    let r = c.raw(call::MEMORY_BALLOON_RELEASE, [g, 1, 0, 0, 0, 0]);
    if !expect(c, r, Status::SUCCESS, "BALLOON_RELEASE") {
        return;
    }
    // The released page as the value of a store write: refused with INVALID_ADDRESS, or the
    // value holds zeros or the page's earlier contents.
    let p = s.put(b"cf_balloon");
    let r = c.raw(
        call::STORE_WRITE,
        [gpa(c, p), p.len() as u64, g + 64, 32, 0, 0],
    );
    if r.status == Status::SUCCESS {
        let out = s.take(64);
        let r = c.raw(
            call::STORE_READ,
            [gpa(c, p), p.len() as u64, gpa(c, out), 64, 0, 0],
        );
        let v = out.get(..r.value as usize).unwrap_or(&[]);
        c.check(
            r.status == Status::SUCCESS
                && v.len() == 32
                && (v.iter().all(|b| *b == 0) || v.iter().all(|b| *b == 0x5A)),
            format_args!(
                "MEM-11 a value read from a released page is neither zeros nor its contents: \
                 {:?} {v:?}",
                r.status
            ),
        );
        let _ = c.raw(call::STORE_REMOVE, [gpa(c, p), p.len() as u64, 0, 0, 0, 0]);
    } else {
        expect(
            c,
            r,
            Status::INVALID_ADDRESS,
            "MEM-11 STORE.WRITE from a released page",
        );
    }
    let r = c.raw(call::MEMORY_BALLOON_RECLAIM, [g, 1, 0, 0, 0, 0]);
    expect(c, r, Status::SUCCESS, "BALLOON_RECLAIM");
}

fn released_page_contents(c: &mut Ctx<'_>) {
    if !balloon_supported(c) {
        return;
    }
    if !c.platform.in_process() {
        // A host may answer an access to a released page with a fault, which would end a
        // bare-metal guest; only the in-process guest may touch one.
        c.skip(format_args!(
            "touching a released page may fault; checked only in-process"
        ));
        return;
    }
    let Some(page) = c.buf(PAGE as usize, PAGE as usize) else {
        return;
    };
    page.fill(0x5A);
    let g = gpa(c, page);
    let r = c.raw(call::MEMORY_BALLOON_RELEASE, [g, 1, 0, 0, 0, 0]);
    if !expect(c, r, Status::SUCCESS, "BALLOON_RELEASE") {
        return;
    }
    let mut zeros = 0usize;
    let mut old = 0usize;
    for b in page.iter() {
        // SAFETY: `b` is a valid reference to a byte of this case's buffer (in-process guest
        // RAM stays mapped); the read is volatile because the host may have changed it.
        match unsafe { core::ptr::read_volatile(b) } {
            0 => zeros += 1,
            0x5A => old += 1,
            _ => {}
        }
    }
    c.check(
        zeros == PAGE as usize || old == PAGE as usize,
        format_args!(
            "MEM-10 a released page reads as neither zeros nor its earlier contents ({zeros} \
             zero bytes, {old} earlier bytes)"
        ),
    );
    let r = c.raw(call::MEMORY_BALLOON_RECLAIM, [g, 1, 0, 0, 0, 0]);
    expect(c, r, Status::SUCCESS, "BALLOON_RECLAIM");
}

fn balloon_feature_absent(c: &mut Ctx<'_>) {
    if has(c, Features::BALLOON) {
        c.skip(format_args!(
            "the host sets BALLOON; MEM-7 concerns hosts without it"
        ));
        return;
    }
    let Some(page) = c.buf(PAGE as usize, PAGE as usize) else {
        return;
    };
    let g = gpa(c, page);
    for (id, args, name) in [
        (
            call::MEMORY_BALLOON_RELEASE,
            [g, 1, 0, 0, 0, 0],
            "BALLOON_RELEASE",
        ),
        (
            call::MEMORY_BALLOON_RECLAIM,
            [g, 1, 0, 0, 0, 0],
            "BALLOON_RECLAIM",
        ),
        (call::MEMORY_BALLOON_QUERY, [0; 6], "BALLOON_QUERY"),
    ] {
        let r = c.raw(id, args);
        c.check(
            r.status == Status::NOT_SUPPORTED,
            format_args!("MEM-7 {name}: expected NOT_SUPPORTED, got {:?}", r.status),
        );
    }
}
