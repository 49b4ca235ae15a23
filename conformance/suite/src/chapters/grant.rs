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
        name: "grant::setup_table",
        clauses: "GNT-1,GNT-3,GNT-9,GNT-10",
        run: setup_table,
    },
    Case {
        name: "grant::host_access",
        clauses: "GNT-2,GNT-4,GNT-5,GNT-6,GNT-7",
        run: host_access,
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
    expect(
        c,
        r,
        Status::SUCCESS,
        "GNT-1 GRANT.SETUP_TABLE(0, 0) removes the table",
    );
}

fn setup_table(c: &mut Ctx<'_>) {
    if !supported(c) {
        return;
    }
    let r = c.raw(call::GRANT_QUERY, [0; 6]);
    let max = r.value;
    if !c.check(
        r.status == Status::SUCCESS && (1..=MAX_ENTRIES).contains(&max),
        format_args!("GNT-3 GRANT.QUERY: {:?} {max}", r.status),
    ) {
        return;
    }
    // No table yet (cases leave none behind).
    expect_refused(c, 0, None, Status::BAD_STATE, "no table");
    let Some(big) = c.buf((max as usize + 1) * GrantEntry::SIZE, 4096) else {
        return;
    };
    let bg = gpa(c, big);
    // GNT-1: more entries than GRANT.QUERY allows.
    for n in [max + 1, MAX_ENTRIES + 1, 1 << 60, u64::MAX] {
        let r = c.raw(call::GRANT_SETUP_TABLE, [bg, n, 0, 0, 0, 0]);
        c.check(
            r.status == Status::INVALID_PARAM,
            format_args!(
                "GNT-1 SETUP_TABLE with {n} entries (max {max}): expected INVALID_PARAM, got {:?}",
                r.status
            ),
        );
    }
    // GNT-10: misaligned or outside guest RAM.
    let top = ram_top(c);
    for (g, n, what) in [
        (bg + 8, 1u64, "8-byte aligned"),
        (bg + 1, 1, "unaligned"),
        (top, 1, "beyond RAM"),
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
        "refused SETUP_TABLE calls set a table",
    );

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
    // GNT-9: entries full of garbage are accepted at setup; they matter only on access.
    for i in [0usize, 2, 3] {
        set(a, i, 0xFFFF, u32::MAX, u64::MAX);
    }
    set(a, 1, VALID, GrantEntry::DOMID_HOST, gfn_of(c, pa));
    let ag = c.pv.translate().gpa_of_ref(a).unwrap_or(u64::MAX);
    let r = c.raw(call::GRANT_SETUP_TABLE, [ag, 4, 0, 0, 0, 0]);
    expect(
        c,
        r,
        Status::SUCCESS,
        "GNT-9 SETUP_TABLE of entries holding garbage",
    );
    expect_refused(
        c,
        0,
        None,
        Status::DENIED,
        "GNT-9 garbage entry grants nothing",
    );
    expect_byte(c, 1, 0, 0x11, "GNT-1 table A");
    expect_refused(
        c,
        3,
        None,
        Status::DENIED,
        "GNT-9 garbage entry grants nothing",
    );

    // GNT-1: a new table replaces the old one.
    set(b, 1, VALID, GrantEntry::DOMID_HOST, gfn_of(c, pb));
    let bgpa = c.pv.translate().gpa_of_ref(b).unwrap_or(u64::MAX);
    let r = c.raw(call::GRANT_SETUP_TABLE, [bgpa, 2, 0, 0, 0, 0]);
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
    let r = c.raw(call::GRANT_SETUP_TABLE, [bgpa, max + 1, 0, 0, 0, 0]);
    expect(
        c,
        r,
        Status::INVALID_PARAM,
        "GNT-1 SETUP_TABLE above the maximum",
    );
    let r = c.raw(call::GRANT_SETUP_TABLE, [bgpa + 8, 2, 0, 0, 0, 0]);
    expect(
        c,
        r,
        Status::INVALID_ADDRESS,
        "GNT-10 misaligned SETUP_TABLE",
    );
    expect_byte(c, 1, 0, 0x22, "GNT-1 a refused SETUP_TABLE kept table B");
    // GNT-1: entries = 0 removes the table, whatever table_gpa is.
    let r = c.raw(call::GRANT_SETUP_TABLE, [u64::MAX, 0, 0, 0, 0, 0]);
    expect(c, r, Status::SUCCESS, "GNT-1 SETUP_TABLE(u64::MAX, 0)");
    expect_refused(c, 1, None, Status::BAD_STATE, "GNT-1 the table was removed");
    // The largest table the host accepts.
    let r = c.raw(call::GRANT_SETUP_TABLE, [bg, max, 0, 0, 0, 0]);
    expect(
        c,
        r,
        Status::SUCCESS,
        "GNT-3 SETUP_TABLE with GRANT.QUERY entries",
    );
    remove_table(c);
    host_alive(c, "hostile SETUP_TABLE calls");
}

fn host_access(c: &mut Ctx<'_>) {
    if !supported(c) {
        return;
    }
    let (Some(t), Some(rw), Some(ro)) = (
        c.alloc(GrantTableShared::<8>::new()),
        c.alloc(SharedPage::new()),
        c.alloc(SharedPage::new()),
    ) else {
        return;
    };
    rw.0[0].store(0x11 << 40, Ordering::Release);
    ro.0[0].store(0x33, Ordering::Release);
    let (grw, gro) = (gfn_of(c, rw), gfn_of(c, ro));
    set(t, 0, VALID, GrantEntry::DOMID_HOST, grw);
    set(t, 1, VALID | RO, GrantEntry::DOMID_HOST, gro);
    let tg = c.pv.translate().gpa_of_ref(t).unwrap_or(u64::MAX);
    let r = c.raw(call::GRANT_SETUP_TABLE, [tg, 8, 0, 0, 0, 0]);
    if !expect(c, r, Status::SUCCESS, "GRANT.SETUP_TABLE") {
        return;
    }
    // GNT-2: flags, domid and gfn where the layout puts them: the host finds the page.
    expect_byte(c, 0, 5, 0x11, "GNT-2 read through a writable grant");
    let r = access(c, 0, 6, Some(0x77));
    c.check(
        r.status == Status::SUCCESS && r.value == 0 && rw.byte(6) == Some(0x77),
        format_args!(
            "GNT-2 host write through a writable grant: {:?} {}, byte now {:?}",
            r.status,
            r.value,
            rw.byte(6)
        ),
    );
    // GNT-7: the last byte of the page, and nothing beyond it.
    let r = access(c, 0, 4095, Some(0xEE));
    c.check(
        r.status == Status::SUCCESS && rw.byte(4095) == Some(0xEE),
        format_args!("GNT-7 host write of byte 4095: {:?}", r.status),
    );
    for off in [4096u64, 1 << 32, u64::MAX] {
        let r = access(c, 0, off, None);
        c.check(
            r.status == Status::INVALID_PARAM,
            format_args!(
                "GNT-7 host read at offset {off:#x}: expected INVALID_PARAM, got {:?}",
                r.status
            ),
        );
    }
    // GNT-6: a write through a read-only grant is refused and changes nothing.
    expect_byte(c, 1, 0, 0x33, "GNT-6 read through a read-only grant");
    expect_refused(
        c,
        1,
        Some(0x44),
        Status::DENIED,
        "GNT-6 write through a read-only grant",
    );
    c.check(
        ro.byte(0) == Some(0x33),
        format_args!("GNT-6 a refused write changed the page: {:?}", ro.byte(0)),
    );
    // GNT-6: an entry for another domain; references past the table; empty entries.
    set(t, 2, VALID, 1, grw);
    set(t, 3, VALID, u32::MAX, grw);
    expect_refused(c, 2, None, Status::DENIED, "GNT-6 entry for domain 1");
    expect_refused(
        c,
        3,
        None,
        Status::DENIED,
        "GNT-6 entry for domain 0xFFFFFFFF",
    );
    expect_refused(c, 4, None, Status::DENIED, "GNT-6 an empty entry");
    for gref in [8u64, 9, 4096, u64::from(u32::MAX), 1 << 32, u64::MAX] {
        expect_refused(
            c,
            gref,
            None,
            Status::INVALID_PARAM,
            "GNT-6 a reference past the table",
        );
    }
    // GNT-4: unknown flag bits, or READONLY without VALID, grant nothing.
    for flags in [VALID | 4, VALID | 0x8000, VALID | RO | 0x100, RO, 0xFFFF] {
        set(t, 5, flags, GrantEntry::DOMID_HOST, grw);
        let r = access(c, 5, 0, None);
        c.check(
            r.status == Status::DENIED,
            format_args!(
                "GNT-4 entry with flags {flags:#x}: expected DENIED, got {:?}",
                r.status
            ),
        );
    }
    set(t, 5, VALID, GrantEntry::DOMID_HOST, grw);
    expect_byte(c, 5, 5, 0x11, "GNT-4 the same entry with only FLAG_VALID");
    // GNT-5: the entry is read at every access: revoke, re-grant, point elsewhere.
    set(t, 0, 0, GrantEntry::DOMID_HOST, grw);
    expect_refused(c, 0, None, Status::DENIED, "GNT-5 a revoked grant");
    expect_refused(c, 0, Some(1), Status::DENIED, "GNT-5 a revoked grant");
    set(t, 0, VALID, GrantEntry::DOMID_HOST, gro);
    expect_byte(c, 0, 0, 0x33, "GNT-5 the entry now names the other page");
    set(t, 0, VALID | RO, GrantEntry::DOMID_HOST, grw);
    expect_refused(
        c,
        0,
        Some(1),
        Status::DENIED,
        "GNT-5 the grant became read-only",
    );
    expect_byte(c, 0, 6, 0x77, "GNT-5 read after the grant became read-only");
    // GNT-7: pages outside guest RAM.
    let top_gfn = ram_top(c).div_ceil(PAGE_SIZE);
    for gfn in [
        top_gfn,
        top_gfn + 0x10_0000,
        u64::MAX / PAGE_SIZE + 1,
        u64::MAX,
    ] {
        set(t, 6, VALID, GrantEntry::DOMID_HOST, gfn);
        let r = access(c, 6, 0, None);
        c.check(
            r.status == Status::INVALID_ADDRESS,
            format_args!(
                "GNT-7 read of gfn {gfn:#x} outside guest RAM: expected INVALID_ADDRESS, got {:?}",
                r.status
            ),
        );
        let r = access(c, 6, 0, Some(0));
        c.check(
            r.status == Status::INVALID_ADDRESS,
            format_args!(
                "GNT-7 write of gfn {gfn:#x} outside guest RAM: expected INVALID_ADDRESS, got {:?}",
                r.status
            ),
        );
    }
    remove_table(c);
    expect_refused(c, 1, None, Status::BAD_STATE, "GNT-6 no table");
    host_alive(c, "hostile grant entries");
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
