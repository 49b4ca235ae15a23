//! GRANT (spec chapter 10): the grant table and host access through grant references,
//! exercised with HARNESS.GRANT_ACCESS (the host reading or writing one byte of a granted
//! page as `DOMID_HOST`).
//!
//! Each case removes its table (`GRANT.SETUP_TABLE(0, 0)`) before it ends.

use core::sync::atomic::Ordering;

use pvabi::call;
use pvabi::discovery::Features;
use pvabi::grant::{GrantEntry, MAX_ENTRIES};
use pvabi::harness::GRANT_ACCESS_READ;
use pvabi::{Ret, Status, PAGE_SIZE};
use pvabi_guest::grant::SharedPage;
use pvabi_guest::shared::GrantTableShared;

use super::store::{expect, gpa, has, host_alive, ram_top};
use crate::{Case, Ctx};

/// The chapter's cases.
pub const CASES: &[Case] = &[
    Case {
        name: "grant::query",
        clauses: "GNT-3",
        run: query,
    },
    Case {
        name: "grant::setup_replace_remove",
        clauses: "GNT-1",
        run: setup_replace_remove,
    },
    Case {
        name: "grant::setup_bad_addresses",
        clauses: "GNT-10",
        run: setup_bad_addresses,
    },
    Case {
        name: "grant::setup_does_not_read_entries",
        clauses: "GNT-9",
        run: setup_does_not_read_entries,
    },
    Case {
        name: "grant::entry_layout",
        clauses: "GNT-2",
        run: entry_layout,
    },
    Case {
        name: "grant::refused_accesses",
        clauses: "GNT-6",
        run: refused_accesses,
    },
    Case {
        name: "grant::unknown_flags",
        clauses: "GNT-4",
        run: unknown_flags,
    },
    Case {
        name: "grant::entry_read_at_every_access",
        clauses: "GNT-5",
        run: entry_read_at_every_access,
    },
    Case {
        name: "grant::page_bounds",
        clauses: "GNT-7",
        run: page_bounds,
    },
    Case {
        name: "grant::feature_absent",
        clauses: "GNT-8",
        run: feature_absent,
    },
];

const VALID: u16 = GrantEntry::FLAG_VALID;
const RO: u16 = GrantEntry::FLAG_READONLY;

fn set<const N: usize>(t: &GrantTableShared<N>, i: usize, flags: u16, domid: u32, gfn: u64) {
    if let Some(e) = t.entries.get(i) {
        e.flags.store(0, Ordering::Release);
        e.domid.store(domid, Ordering::Relaxed);
        e.gfn.store(gfn, Ordering::Relaxed);
        e.flags.store(flags, Ordering::Release);
    }
}

fn access(c: &Ctx<'_>, gref: u64, offset: u64, write: Option<u8>) -> Ret {
    c.raw(
        call::HARNESS_GRANT_ACCESS,
        [
            gref,
            offset,
            write.map_or(GRANT_ACCESS_READ, u64::from),
            0,
            0,
            0,
        ],
    )
}

fn expect_byte(c: &mut Ctx<'_>, gref: u64, offset: u64, byte: u8, what: &str) {
    let r = access(c, gref, offset, None);
    c.check(
        r.status == Status::SUCCESS && r.value == u64::from(byte),
        format_args!(
            "{what}: host read of ref {gref} offset {offset}: expected {byte:#x}, got {:?} {:#x}",
            r.status, r.value
        ),
    );
}

fn expect_refused(c: &mut Ctx<'_>, gref: u64, write: Option<u8>, want: Status, what: &str) {
    let r = access(c, gref, 0, write);
    c.check(
        r.status == want,
        format_args!(
            "{what}: host {} through ref {gref}: expected {want:?}, got {:?}",
            if write.is_some() { "write" } else { "read" },
            r.status
        ),
    );
}

fn gfn_of(c: &Ctx<'_>, p: &SharedPage) -> u64 {
    c.pv.translate().gpa_of_ref(p).unwrap_or(u64::MAX) / PAGE_SIZE
}

fn supported(c: &mut Ctx<'_>) -> bool {
    if has(c, Features::GRANT) {
        true
    } else {
        c.skip(format_args!("the host does not set the GRANT feature bit"));
        false
    }
}

fn remove_table(c: &mut Ctx<'_>) {
    let r = c.raw(call::GRANT_SETUP_TABLE, [0, 0, 0, 0, 0, 0]);
    expect(c, r, Status::SUCCESS, "GRANT.SETUP_TABLE(0, 0)");
}

/// GRANT.QUERY's value, or `None` (recorded).
fn max_entries(c: &mut Ctx<'_>) -> Option<u64> {
    let r = c.raw(call::GRANT_QUERY, [0; 6]);
    c.check(
        r.status == Status::SUCCESS && (1..=MAX_ENTRIES).contains(&r.value),
        format_args!("GRANT.QUERY: {:?} {}", r.status, r.value),
    )
    .then_some(r.value)
}

/// A registered table of 8 entries: entry 0 grants `rw` (byte 5 = 0x11) writable, entry 1
/// grants `ro` (byte 0 = 0x33) read-only, both to `DOMID_HOST`.
struct Setup {
    t: &'static GrantTableShared<8>,
    rw: &'static SharedPage,
    ro: &'static SharedPage,
    grw: u64,
    gro: u64,
}

fn setup(c: &mut Ctx<'_>) -> Option<Setup> {
    let t = c.alloc(GrantTableShared::<8>::new())?;
    let rw = c.alloc(SharedPage::new())?;
    let ro = c.alloc(SharedPage::new())?;
    let (t, rw, ro): (&'static _, &'static SharedPage, &'static SharedPage) = (t, rw, ro);
    rw.0[0].store(0x11 << 40, Ordering::Release);
    ro.0[0].store(0x33, Ordering::Release);
    let (grw, gro) = (gfn_of(c, rw), gfn_of(c, ro));
    set(t, 0, VALID, GrantEntry::DOMID_HOST, grw);
    set(t, 1, VALID | RO, GrantEntry::DOMID_HOST, gro);
    let tg = c.pv.translate().gpa_of_ref(t).unwrap_or(u64::MAX);
    let r = c.raw(call::GRANT_SETUP_TABLE, [tg, 8, 0, 0, 0, 0]);
    expect(c, r, Status::SUCCESS, "GRANT.SETUP_TABLE").then_some(Setup {
        t,
        rw,
        ro,
        grw,
        gro,
    })
}

fn query(c: &mut Ctx<'_>) {
    if !supported(c) {
        return;
    }
    let Some(max) = max_entries(c) else { return };
    // The largest table the host says it accepts is accepted.
    let Some(big) = c.buf(max as usize * GrantEntry::SIZE, 4096) else {
        return;
    };
    let r = c.raw(call::GRANT_SETUP_TABLE, [gpa(c, big), max, 0, 0, 0, 0]);
    expect(
        c,
        r,
        Status::SUCCESS,
        "GNT-3 SETUP_TABLE with GRANT.QUERY entries",
    );
    remove_table(c);
    let r = c.raw(call::GRANT_QUERY, [0; 6]);
    c.check(
        r.status == Status::SUCCESS && r.value == max,
        format_args!(
            "GNT-3 GRANT.QUERY changed: {max} then {:?} {}",
            r.status, r.value
        ),
    );
}

fn setup_replace_remove(c: &mut Ctx<'_>) {
    if !supported(c) {
        return;
    }
    let Some(max) = max_entries(c) else { return };
    // No table yet (cases leave none behind).
    expect_refused(c, 0, None, Status::BAD_STATE, "no table");
    let (Some(a), Some(b), Some(pa), Some(pb)) = (
        c.alloc(GrantTableShared::<4>::new()),
        c.alloc(GrantTableShared::<2>::new()),
        c.alloc(SharedPage::new()),
        c.alloc(SharedPage::new()),
    ) else {
        return;
    };
    pa.0[0].store(0x11, Ordering::Release);
    pb.0[0].store(0x22, Ordering::Release);
    set(a, 1, VALID, GrantEntry::DOMID_HOST, gfn_of(c, pa));
    set(a, 3, VALID, GrantEntry::DOMID_HOST, gfn_of(c, pa));
    set(b, 1, VALID, GrantEntry::DOMID_HOST, gfn_of(c, pb));
    let ag = c.pv.translate().gpa_of_ref(a).unwrap_or(u64::MAX);
    let bg = c.pv.translate().gpa_of_ref(b).unwrap_or(u64::MAX);
    // More entries than GRANT.QUERY allows: INVALID_PARAM, no table.
    for n in [max + 1, MAX_ENTRIES + 1, 1 << 60, u64::MAX] {
        let r = c.raw(call::GRANT_SETUP_TABLE, [ag, n, 0, 0, 0, 0]);
        if r.status == Status::SUCCESS {
            remove_table(c);
        }
        c.check(
            r.status == Status::INVALID_PARAM,
            format_args!(
                "GNT-1 SETUP_TABLE with {n} entries (max {max}): expected INVALID_PARAM, got {:?}",
                r.status
            ),
        );
    }
    expect_refused(
        c,
        0,
        None,
        Status::BAD_STATE,
        "GNT-1 refused SETUP_TABLE set a table",
    );
    // Table A, then table B replaces it.
    let r = c.raw(call::GRANT_SETUP_TABLE, [ag, 4, 0, 0, 0, 0]);
    expect(c, r, Status::SUCCESS, "GNT-1 SETUP_TABLE of table A");
    expect_byte(c, 1, 0, 0x11, "GNT-1 table A");
    expect_byte(c, 3, 0, 0x11, "GNT-1 table A");
    let r = c.raw(call::GRANT_SETUP_TABLE, [bg, 2, 0, 0, 0, 0]);
    expect(c, r, Status::SUCCESS, "GNT-1 SETUP_TABLE of table B");
    expect_byte(c, 1, 0, 0x22, "GNT-1 table B replaced table A");
    expect_refused(
        c,
        3,
        None,
        Status::INVALID_PARAM,
        "GNT-1 ref 3 is beyond table B",
    );
    // A refused setup keeps the current table.
    let r = c.raw(call::GRANT_SETUP_TABLE, [bg, max + 1, 0, 0, 0, 0]);
    expect(
        c,
        r,
        Status::INVALID_PARAM,
        "GNT-1 SETUP_TABLE above the maximum",
    );
    expect_byte(c, 1, 0, 0x22, "GNT-1 a refused SETUP_TABLE kept table B");
    // entries = 0 removes the table, whatever table_gpa is.
    let r = c.raw(call::GRANT_SETUP_TABLE, [u64::MAX, 0, 0, 0, 0, 0]);
    expect(c, r, Status::SUCCESS, "GNT-1 SETUP_TABLE(u64::MAX, 0)");
    expect_refused(c, 1, None, Status::BAD_STATE, "GNT-1 the table was removed");
    let r = c.raw(call::GRANT_SETUP_TABLE, [3, 0, 0, 0, 0, 0]);
    expect(
        c,
        r,
        Status::SUCCESS,
        "GNT-1 SETUP_TABLE(3, 0) without a table",
    );
}

fn setup_bad_addresses(c: &mut Ctx<'_>) {
    if !supported(c) {
        return;
    }
    let Some(max) = max_entries(c) else { return };
    let Some(buf) = c.buf(64, 4096) else { return };
    let bg = gpa(c, buf);
    let top = ram_top(c);
    for (g, n, what) in [
        (bg + 8, 1u64, "8-byte aligned"),
        (bg + 1, 1, "unaligned"),
        (bg + 4, 2.min(max), "4-byte aligned"),
        (top, 1, "beyond RAM"),
        (top + (1 << 32), 1, "far beyond RAM"),
        (top - 16, 2.min(max), "straddling the end of RAM"),
        (!15u64, 1, "wrapping"),
        (u64::MAX - 31, 2.min(max), "wrapping"),
    ] {
        if what.starts_with("straddling") && n < 2 {
            continue;
        }
        let r = c.raw(call::GRANT_SETUP_TABLE, [g, n, 0, 0, 0, 0]);
        if r.status == Status::SUCCESS {
            remove_table(c);
        }
        c.check(
            r.status == Status::INVALID_ADDRESS,
            format_args!(
                "GNT-10 SETUP_TABLE at a table {what} ({g:#x}, {n}): expected INVALID_ADDRESS, \
                 got {:?}",
                r.status
            ),
        );
    }
    expect_refused(
        c,
        0,
        None,
        Status::BAD_STATE,
        "GNT-10 refused SETUP_TABLE set a table",
    );
    host_alive(c, "hostile SETUP_TABLE addresses");
}

fn setup_does_not_read_entries(c: &mut Ctx<'_>) {
    if !supported(c) {
        return;
    }
    let (Some(a), Some(pa)) = (
        c.alloc(GrantTableShared::<4>::new()),
        c.alloc(SharedPage::new()),
    ) else {
        return;
    };
    pa.0[0].store(0x11, Ordering::Release);
    // Entries full of garbage are accepted at setup; they matter only at access time.
    for i in [0usize, 2, 3] {
        set(a, i, 0xFFFF, u32::MAX, u64::MAX);
    }
    let ag = c.pv.translate().gpa_of_ref(a).unwrap_or(u64::MAX);
    let r = c.raw(call::GRANT_SETUP_TABLE, [ag, 4, 0, 0, 0, 0]);
    expect(
        c,
        r,
        Status::SUCCESS,
        "GNT-9 SETUP_TABLE of entries holding garbage",
    );
    // An entry filled in after setup is used.
    set(a, 1, VALID, GrantEntry::DOMID_HOST, gfn_of(c, pa));
    expect_byte(c, 1, 0, 0x11, "GNT-9 an entry written after SETUP_TABLE");
    remove_table(c);
}

fn entry_layout(c: &mut Ctx<'_>) {
    if !supported(c) {
        return;
    }
    let Some(g) = setup(c) else { return };
    // flags, domid and gfn where the layout puts them: the host finds the page.
    expect_byte(c, 0, 5, 0x11, "GNT-2 read through a writable grant");
    let r = access(c, 0, 6, Some(0x77));
    c.check(
        r.status == Status::SUCCESS && r.value == 0 && g.rw.byte(6) == Some(0x77),
        format_args!(
            "GNT-2 host write through a writable grant: {:?} {}, byte now {:?}",
            r.status,
            r.value,
            g.rw.byte(6)
        ),
    );
    expect_byte(c, 0, 6, 0x77, "GNT-2 read back the written byte");
    expect_byte(c, 1, 0, 0x33, "GNT-2 read through a read-only grant");
    // Entry 7, the last of the table, to another page.
    set(g.t, 7, VALID, GrantEntry::DOMID_HOST, g.gro);
    expect_byte(c, 7, 0, 0x33, "GNT-2 the last entry of the table");
    remove_table(c);
}

fn refused_accesses(c: &mut Ctx<'_>) {
    if !supported(c) {
        return;
    }
    let Some(g) = setup(c) else { return };
    // A write through a read-only grant is refused and changes nothing.
    expect_refused(
        c,
        1,
        Some(0x44),
        Status::DENIED,
        "GNT-6 write through a read-only grant",
    );
    c.check(
        g.ro.byte(0) == Some(0x33),
        format_args!("GNT-6 a refused write changed the page: {:?}", g.ro.byte(0)),
    );
    // Entries for other domains, empty entries.
    set(g.t, 2, VALID, 1, g.grw);
    set(g.t, 3, VALID, u32::MAX, g.grw);
    expect_refused(c, 2, None, Status::DENIED, "GNT-6 entry for domain 1");
    expect_refused(c, 2, Some(1), Status::DENIED, "GNT-6 entry for domain 1");
    expect_refused(
        c,
        3,
        None,
        Status::DENIED,
        "GNT-6 entry for domain 0xFFFFFFFF",
    );
    expect_refused(c, 4, None, Status::DENIED, "GNT-6 an empty entry");
    // References past the table.
    for gref in [8u64, 9, 4096, u64::from(u32::MAX), 1 << 32, u64::MAX] {
        expect_refused(
            c,
            gref,
            None,
            Status::INVALID_PARAM,
            "GNT-6 a reference past the table",
        );
    }
    c.check(
        g.rw.byte(0) == Some(0),
        format_args!("GNT-6 refused accesses wrote the page"),
    );
    // No table.
    remove_table(c);
    expect_refused(c, 0, None, Status::BAD_STATE, "GNT-6 no table");
    host_alive(c, "refused grant accesses");
}

fn unknown_flags(c: &mut Ctx<'_>) {
    if !supported(c) {
        return;
    }
    let Some(g) = setup(c) else { return };
    for flags in [VALID | 4, VALID | 0x8000, VALID | RO | 0x100, RO, 0xFFFF, 0] {
        set(g.t, 5, flags, GrantEntry::DOMID_HOST, g.grw);
        let r = access(c, 5, 0, None);
        c.check(
            r.status == Status::DENIED,
            format_args!(
                "GNT-4 entry with flags {flags:#x}: expected DENIED, got {:?}",
                r.status
            ),
        );
    }
    set(g.t, 5, VALID, GrantEntry::DOMID_HOST, g.grw);
    expect_byte(c, 5, 5, 0x11, "GNT-4 the same entry with only FLAG_VALID");
    set(g.t, 5, VALID | RO, GrantEntry::DOMID_HOST, g.grw);
    expect_byte(
        c,
        5,
        5,
        0x11,
        "GNT-4 the same entry with FLAG_VALID | FLAG_READONLY",
    );
    remove_table(c);
}

fn entry_read_at_every_access(c: &mut Ctx<'_>) {
    if !supported(c) {
        return;
    }
    let Some(g) = setup(c) else { return };
    expect_byte(c, 0, 5, 0x11, "GNT-5 before revoking");
    // Revoke, re-grant, point elsewhere, make read-only: each is seen at the next access.
    set(g.t, 0, 0, GrantEntry::DOMID_HOST, g.grw);
    expect_refused(c, 0, None, Status::DENIED, "GNT-5 a revoked grant");
    expect_refused(c, 0, Some(1), Status::DENIED, "GNT-5 a revoked grant");
    c.check(
        g.rw.byte(0) == Some(0),
        format_args!("GNT-5 a write through a revoked grant reached the page"),
    );
    set(g.t, 0, VALID, GrantEntry::DOMID_HOST, g.grw);
    expect_byte(c, 0, 5, 0x11, "GNT-5 granted again");
    set(g.t, 0, VALID, GrantEntry::DOMID_HOST, g.gro);
    expect_byte(c, 0, 0, 0x33, "GNT-5 the entry now names the other page");
    set(g.t, 0, VALID | RO, GrantEntry::DOMID_HOST, g.grw);
    expect_refused(
        c,
        0,
        Some(1),
        Status::DENIED,
        "GNT-5 the grant became read-only",
    );
    expect_byte(c, 0, 5, 0x11, "GNT-5 read after the grant became read-only");
    set(g.t, 0, VALID, 7, g.grw);
    expect_refused(
        c,
        0,
        None,
        Status::DENIED,
        "GNT-5 the grant moved to domain 7",
    );
    remove_table(c);
}

fn page_bounds(c: &mut Ctx<'_>) {
    if !supported(c) {
        return;
    }
    let Some(g) = setup(c) else { return };
    // The last byte of the page, and nothing beyond it.
    let r = access(c, 0, 4095, Some(0xEE));
    c.check(
        r.status == Status::SUCCESS && g.rw.byte(4095) == Some(0xEE),
        format_args!("GNT-7 host write of byte 4095: {:?}", r.status),
    );
    expect_byte(c, 0, 4095, 0xEE, "GNT-7 host read of byte 4095");
    for off in [4096u64, 4097, 1 << 32, u64::MAX] {
        for w in [None, Some(1)] {
            let r = access(c, 0, off, w);
            c.check(
                r.status == Status::INVALID_PARAM,
                format_args!(
                    "GNT-7 host access at offset {off:#x}: expected INVALID_PARAM, got {:?}",
                    r.status
                ),
            );
        }
    }
    // Pages outside guest RAM.
    let top_gfn = ram_top(c).div_ceil(PAGE_SIZE);
    for gfn in [
        top_gfn,
        top_gfn + 0x10_0000,
        u64::MAX / PAGE_SIZE + 1,
        u64::MAX,
    ] {
        set(g.t, 6, VALID, GrantEntry::DOMID_HOST, gfn);
        for w in [None, Some(0)] {
            let r = access(c, 6, 0, w);
            c.check(
                r.status == Status::INVALID_ADDRESS,
                format_args!(
                    "GNT-7 access to gfn {gfn:#x} outside guest RAM: expected INVALID_ADDRESS, \
                     got {:?}",
                    r.status
                ),
            );
        }
    }
    remove_table(c);
    host_alive(c, "grant accesses outside the page");
}

fn feature_absent(c: &mut Ctx<'_>) {
    if has(c, Features::GRANT) {
        c.skip(format_args!(
            "the host sets GRANT; GNT-8 concerns hosts without it"
        ));
        return;
    }
    for (id, name) in [
        (call::GRANT_SETUP_TABLE, "SETUP_TABLE"),
        (call::GRANT_QUERY, "QUERY"),
    ] {
        let r = c.raw(id, [0; 6]);
        c.check(
            r.status == Status::NOT_SUPPORTED,
            format_args!(
                "GNT-8 GRANT.{name}: expected NOT_SUPPORTED, got {:?}",
                r.status
            ),
        );
    }
}
