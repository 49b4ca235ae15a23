//! MULTICALL (spec chapter 13): batches of calls with per-entry results, stop-on-error,
//! entries that may not run, array limits and hostile array addresses.
//!
//! Each entry starts with a sentinel in `status` and `value`, so the cases see which entries
//! the host wrote. Store nodes the entries create live below `cf_mc` and are removed.

use pvabi::call::{self, CallId};
use pvabi::discovery::Features;
use pvabi::multicall::{MulticallEntry, MAX_ENTRIES};
use pvabi::power::ShutdownReason;
use pvabi::{ServiceId, Status};

use super::store::{expect, gpa, has, host_alive, ram_top, Scratch, Show};
use crate::{Case, Ctx};

/// The chapter's cases.
pub const CASES: &[Case] = &[
    Case {
        name: "multicall::batch_results",
        clauses: "MC-1",
        run: batch_results,
    },
    Case {
        name: "multicall::unknown_call_ids",
        clauses: "MC-7",
        run: unknown_call_ids,
    },
    Case {
        name: "multicall::stop_on_error",
        clauses: "MC-3",
        run: stop_on_error,
    },
    Case {
        name: "multicall::entries_not_allowed",
        clauses: "MC-4",
        run: entries_not_allowed,
    },
    Case {
        name: "multicall::unknown_entry_flags",
        clauses: "MC-8",
        run: unknown_entry_flags,
    },
    Case {
        name: "multicall::count_limits",
        clauses: "MC-5",
        run: count_limits,
    },
    Case {
        name: "multicall::array_bad_addresses",
        clauses: "MC-2",
        run: array_bad_addresses,
    },
    Case {
        name: "multicall::array_copied_once",
        clauses: "MC-2,SEC-6",
        run: array_copied_once,
    },
    Case {
        name: "multicall::feature_absent",
        clauses: "MC-6",
        run: feature_absent,
    },
];

/// What an entry's `status` and `value` hold until the host writes them.
pub(crate) const SENTINEL: u64 = 0x5EA1_5EA1_5EA1_5EA1;

pub(crate) fn entry(id: CallId, args: [u64; 6], flags: u32) -> MulticallEntry {
    MulticallEntry {
        call_id: id.0,
        flags,
        args,
        status: SENTINEL as i64,
        value: SENTINEL,
    }
}

/// A copy of the array as the host left it (read volatile: the host wrote it behind the
/// guest's back).
pub(crate) fn snapshot<const N: usize>(a: &[MulticallEntry; N]) -> [MulticallEntry; N] {
    // SAFETY: `a` is a valid, aligned reference to an initialised array of plain integers;
    // any bit pattern the host wrote is a valid `MulticallEntry`.
    unsafe { core::ptr::read_volatile(a) }
}

/// Runs `count` entries of `a`; returns the raw return.
pub(crate) fn execute<const N: usize>(
    c: &Ctx<'_>,
    a: &[MulticallEntry; N],
    count: u64,
) -> pvabi::Ret {
    let g = c.pv.translate().gpa_of_ref(a).unwrap_or(u64::MAX);
    c.raw(call::MULTICALL_EXECUTE, [g, count, 0, 0, 0, 0])
}

fn status_of(s: Status) -> i64 {
    i64::from(s.0)
}

fn supported(c: &mut Ctx<'_>) -> bool {
    if has(c, Features::MULTICALL) {
        true
    } else {
        c.skip(format_args!(
            "the host does not set the MULTICALL feature bit"
        ));
        false
    }
}

fn expect_entry(c: &mut Ctx<'_>, e: &MulticallEntry, i: usize, st: Status, value: Option<u64>) {
    c.check(
        e.status == status_of(st) && value.is_none_or(|v| v == e.value),
        format_args!(
            "entry {i} (call {:#x}): expected {st:?} ({}) value {value:?}, got status {} value {:#x}",
            e.call_id,
            status_of(st),
            e.status,
            e.value
        ),
    );
}

fn expect_unwritten(c: &mut Ctx<'_>, e: &MulticallEntry, i: usize, what: &str) {
    c.check(
        e.status == SENTINEL as i64 && e.value == SENTINEL,
        format_args!(
            "{what}: entry {i} was written (status {} value {:#x})",
            e.status, e.value
        ),
    );
}

fn store_missing(c: &mut Ctx<'_>, s: &mut Scratch, path: &[u8], what: &str) {
    let p = s.put(path);
    let r = c.raw(call::STORE_READ, [gpa(c, p), p.len() as u64, 0, 0, 0, 0]);
    c.check(
        r.status == Status::NOT_FOUND,
        format_args!("{what}: store node {} exists ({:?})", Show(path), r.status),
    );
}

fn store_cleanup(c: &mut Ctx<'_>, s: &mut Scratch) {
    let p = s.put(b"cf_mc");
    let _ = c.raw(call::STORE_REMOVE, [gpa(c, p), p.len() as u64, 0, 0, 0, 0]);
}

fn batch_results(c: &mut Ctx<'_>) {
    if !supported(c) {
        return;
    }
    let Some(mut s) = Scratch::new(c, 4096) else {
        return;
    };
    store_cleanup(c, &mut s);
    let path = s.put(b"cf_mc/a");
    let (pg, pl) = (gpa(c, path), path.len() as u64);
    let val = s.put(b"v");
    let out = s.take(16);
    out.fill(0xAA);
    let direct = |c: &Ctx<'_>, id: CallId, a0: u64| c.raw(id, [a0, 0, 0, 0, 0, 0]);
    let abi = direct(c, call::BASE_GET_ABI_VERSION, 0);
    let probe = direct(c, call::BASE_PROBE_SERVICE, u64::from(ServiceId::STORE.0));
    let vid = direct(c, call::BASE_GET_VCPU_ID, 0);
    let vcount = direct(c, call::BASE_GET_VCPU_COUNT, 0);
    let backend = direct(c, call::BASE_GET_BACKEND_ID, 0);
    let Some(a) = c.alloc([
        entry(call::BASE_GET_ABI_VERSION, [0; 6], 0),
        entry(
            call::BASE_PROBE_SERVICE,
            [u64::from(ServiceId::STORE.0), 0, 0, 0, 0, 0],
            0,
        ),
        entry(call::BASE_GET_BACKEND_ID, [0; 6], 0),
        entry(call::BASE_PROBE_SERVICE, [0x7E00, 0, 0, 0, 0, 0], 0),
        entry(call::STORE_WRITE, [pg, pl, gpa(c, val), 1, 0, 0], 0),
        entry(call::STORE_READ, [pg, pl, gpa(c, out), 16, 0, 0], 0),
        entry(call::VCPU_KICK, [u64::MAX, 0, 0, 0, 0, 0], 0),
        entry(call::BASE_GET_VCPU_ID, [0; 6], 0),
        entry(call::BASE_GET_VCPU_COUNT, [0; 6], 0),
    ]) else {
        return;
    };
    let r = execute(c, a, 9);
    c.check(
        r.status == Status::SUCCESS && r.value == 9,
        format_args!("MC-1 EXECUTE of 9 entries: {:?} {}", r.status, r.value),
    );
    let e = snapshot(a);
    let [e0, e1, e2, e3, e4, e5, e6, e7, e8] = &e;
    expect_entry(c, e0, 0, abi.status, Some(abi.value));
    expect_entry(c, e1, 1, probe.status, Some(probe.value));
    expect_entry(c, e2, 2, backend.status, Some(backend.value));
    expect_entry(c, e3, 3, Status::SUCCESS, Some(0));
    // Calls naming guest memory run as through a register gate, in order.
    expect_entry(c, e4, 4, Status::SUCCESS, Some(0));
    expect_entry(c, e5, 5, Status::SUCCESS, Some(1));
    c.check(
        out.first() == Some(&b'v'),
        format_args!(
            "MC-1 STORE.READ entry did not fill its buffer: {:?}",
            out.first()
        ),
    );
    // A failing entry in the middle (without STOP_ON_ERROR) does not stop the rest.
    expect_entry(c, e6, 6, Status::INVALID_PARAM, Some(0));
    expect_entry(c, e7, 7, vid.status, Some(vid.value));
    expect_entry(c, e8, 8, vcount.status, Some(vcount.value));
    // The host wrote only status and value.
    c.check(
        e0.call_id == call::BASE_GET_ABI_VERSION.0 && e4.args == [pg, pl, gpa(c, val), 1, 0, 0],
        format_args!("MC-1 the host changed an entry's call id or arguments"),
    );
    store_cleanup(c, &mut s);
}

fn stop_on_error(c: &mut Ctx<'_>) {
    if !supported(c) {
        return;
    }
    let Some(mut s) = Scratch::new(c, 4096) else {
        return;
    };
    store_cleanup(c, &mut s);
    let missing = s.put(b"cf_mc/missing");
    let made = s.put(b"cf_mc/s");
    let val = s.put(b"x");
    let stop = MulticallEntry::FLAG_STOP_ON_ERROR;
    let Some(a) = c.alloc([
        entry(call::BASE_GET_ABI_VERSION, [0; 6], stop),
        entry(call::VCPU_KICK, [u64::MAX, 0, 0, 0, 0, 0], 0),
        entry(
            call::STORE_READ,
            [gpa(c, missing), missing.len() as u64, 0, 0, 0, 0],
            stop,
        ),
        entry(
            call::STORE_WRITE,
            [gpa(c, made), made.len() as u64, gpa(c, val), 1, 0, 0],
            0,
        ),
        entry(call::BASE_GET_VCPU_ID, [0; 6], stop),
    ]) else {
        return;
    };
    let r = execute(c, a, 5);
    c.check(
        r.status == Status::SUCCESS && r.value == 3,
        format_args!(
            "MC-3 EXECUTE stopping at entry 2: expected SUCCESS 3 (entries run), got {:?} {}",
            r.status, r.value
        ),
    );
    let e = snapshot(a);
    let [e0, e1, e2, e3, e4] = &e;
    expect_entry(c, e0, 0, Status::SUCCESS, None);
    expect_entry(c, e1, 1, Status::INVALID_PARAM, Some(0));
    expect_entry(c, e2, 2, Status::NOT_FOUND, Some(0));
    expect_unwritten(c, e3, 3, "MC-3 after a STOP_ON_ERROR failure");
    expect_unwritten(c, e4, 4, "MC-3 after a STOP_ON_ERROR failure");
    store_missing(c, &mut s, b"cf_mc/s", "MC-3 an entry after the stop ran");
    // Run again without the stop flag: everything runs.
    let mut a2 = snapshot(a);
    for e in a2.iter_mut() {
        e.flags = 0;
        e.status = SENTINEL as i64;
        e.value = SENTINEL;
    }
    let Some(a2) = c.alloc(a2) else { return };
    let r = execute(c, a2, 5);
    c.check(
        r.status == Status::SUCCESS && r.value == 5,
        format_args!(
            "MC-1 the same entries without STOP_ON_ERROR: expected SUCCESS 5, got {:?} {}",
            r.status, r.value
        ),
    );
    let e = snapshot(a2);
    if let Some(e3) = e.get(3) {
        expect_entry(c, e3, 3, Status::SUCCESS, Some(0));
    }
    store_cleanup(c, &mut s);
}

fn unknown_call_ids(c: &mut Ctx<'_>) {
    if !supported(c) {
        return;
    }
    let abi = c.raw(call::BASE_GET_ABI_VERSION, [0; 6]);
    let Some(a) = c.alloc([
        entry(CallId::new(ServiceId::BASE, 0x7fff), [0; 6], 0),
        entry(CallId::new(ServiceId(0x7E00), 0), [1; 6], 0),
        entry(CallId::new(ServiceId(0x8123), 5), [u64::MAX; 6], 0),
        entry(CallId(u32::MAX), [0; 6], 0),
        entry(CallId::new(ServiceId::MULTICALL, 1), [0; 6], 0),
        entry(call::BASE_GET_ABI_VERSION, [0; 6], 0),
    ]) else {
        return;
    };
    let r = execute(c, a, 6);
    c.check(
        r.status == Status::SUCCESS && r.value == 6,
        format_args!(
            "MC-7 EXECUTE: expected SUCCESS 6, got {:?} {}",
            r.status, r.value
        ),
    );
    let e = snapshot(a);
    for (i, e) in e.iter().enumerate().take(5) {
        expect_entry(c, e, i, Status::NOT_SUPPORTED, Some(0));
    }
    if let Some(last) = e.get(5) {
        expect_entry(c, last, 5, abi.status, Some(abi.value));
    }
}

fn unknown_entry_flags(c: &mut Ctx<'_>) {
    if !supported(c) {
        return;
    }
    let Some(mut s) = Scratch::new(c, 4096) else {
        return;
    };
    store_cleanup(c, &mut s);
    let path = s.put(b"cf_mc/flag");
    let val = s.put(b"x");
    let fw = [gpa(c, path), path.len() as u64, gpa(c, val), 1, 0, 0];
    let Some(a) = c.alloc([
        entry(call::STORE_WRITE, fw, 1 << 1),
        entry(call::STORE_WRITE, fw, 0x8000_0000),
        entry(call::STORE_WRITE, fw, 0xFFFF_FFFE),
        entry(call::BASE_GET_ABI_VERSION, [0; 6], 1 << 4),
        entry(call::BASE_GET_VCPU_ID, [0; 6], 0),
    ]) else {
        return;
    };
    let r = execute(c, a, 5);
    c.check(
        r.status == Status::SUCCESS && r.value == 5,
        format_args!(
            "MC-8 EXECUTE: expected SUCCESS 5, got {:?} {}",
            r.status, r.value
        ),
    );
    let e = snapshot(a);
    for (i, e) in e.iter().enumerate().take(4) {
        expect_entry(c, e, i, Status::INVALID_PARAM, Some(0));
    }
    if let Some(last) = e.get(4) {
        expect_entry(c, last, 4, Status::SUCCESS, None);
    }
    store_missing(
        c,
        &mut s,
        b"cf_mc/flag",
        "MC-8 an entry with unknown flags ran",
    );
    store_cleanup(c, &mut s);
}

fn entries_not_allowed(c: &mut Ctx<'_>) {
    if !supported(c) {
        return;
    }
    let Some(mut s) = Scratch::new(c, 4096) else {
        return;
    };
    store_cleanup(c, &mut s);
    let nested_path = s.put(b"cf_mc/nested");
    let val = s.put(b"x");
    let Some(nested) = c.alloc([entry(
        call::STORE_WRITE,
        [
            gpa(c, nested_path),
            nested_path.len() as u64,
            gpa(c, val),
            1,
            0,
            0,
        ],
        0,
    )]) else {
        return;
    };
    let ng = c.pv.translate().gpa_of_ref(nested).unwrap_or(u64::MAX);
    let Some(a) = c.alloc([
        entry(call::VCPU_BLOCK, [1, 0, 0, 0, 0, 0], 0),
        entry(call::VCPU_UPCALL_RETURN, [0; 6], 0),
        entry(call::MULTICALL_EXECUTE, [ng, 1, 0, 0, 0, 0], 0),
        entry(call::VCPU_STOP, [0; 6], 0),
        entry(
            call::POWER_SHUTDOWN,
            [u64::from(ShutdownReason::POWEROFF.0), 0x4D43, 0, 0, 0, 0],
            0,
        ),
        entry(call::BASE_GET_ABI_VERSION, [0; 6], 0),
    ]) else {
        return;
    };
    let r = execute(c, a, 6);
    c.check(
        r.status == Status::SUCCESS && r.value == 6,
        format_args!(
            "MC-4 EXECUTE: expected SUCCESS 6, got {:?} {}",
            r.status, r.value
        ),
    );
    let e = snapshot(a);
    for (i, e) in e.iter().enumerate().take(5) {
        expect_entry(c, e, i, Status::INVALID_PARAM, Some(0));
    }
    if let Some(last) = e.get(5) {
        expect_entry(c, last, 5, Status::SUCCESS, None);
    }
    let n = snapshot(nested);
    if let Some(n0) = n.first() {
        expect_unwritten(c, n0, 0, "MC-4 a nested MULTICALL.EXECUTE ran its array");
    }
    store_missing(c, &mut s, b"cf_mc/nested", "MC-4 a nested MULTICALL ran");
    store_missing(
        c,
        &mut s,
        b"cf_mc/flag",
        "MC-8 an entry with unknown flags ran",
    );
    host_alive(c, "entries that may not run");
    store_cleanup(c, &mut s);
}

/// A STORE.WRITE entry creating `cf_mc/lim` (to see whether an entry ran).
fn lim_entry(c: &mut Ctx<'_>, s: &mut Scratch) -> MulticallEntry {
    store_cleanup(c, s);
    let path = s.put(b"cf_mc/lim");
    let val = s.put(b"x");
    entry(
        call::STORE_WRITE,
        [gpa(c, path), path.len() as u64, gpa(c, val), 1, 0, 0],
        0,
    )
}

fn count_limits(c: &mut Ctx<'_>) {
    if !supported(c) {
        return;
    }
    let Some(mut s) = Scratch::new(c, 4096) else {
        return;
    };
    let w = lim_entry(c, &mut s);
    // MC-5: more than 256 entries: INVALID_PARAM, nothing runs.
    let Some(big) = c.alloc([w; MAX_ENTRIES as usize + 1]) else {
        return;
    };
    for n in [MAX_ENTRIES + 1, 1 << 32, u64::MAX / 72 + 1, u64::MAX] {
        let r = execute(c, big, n);
        c.check(
            r.status == Status::INVALID_PARAM,
            format_args!(
                "MC-5 EXECUTE with count {n}: expected INVALID_PARAM, got {:?}",
                r.status
            ),
        );
    }
    let e = snapshot(big);
    if let Some(e0) = e.first() {
        expect_unwritten(c, e0, 0, "MC-5 a refused EXECUTE");
    }
    store_missing(
        c,
        &mut s,
        b"cf_mc/lim",
        "MC-5 a refused EXECUTE ran an entry",
    );
    // count = 0 succeeds with 0 whatever the address.
    for g in [u64::MAX, 3, ram_top(c)] {
        let r = c.raw(call::MULTICALL_EXECUTE, [g, 0, 0, 0, 0, 0]);
        c.check(
            r.status == Status::SUCCESS && r.value == 0,
            format_args!(
                "MC-5 EXECUTE with count 0 at {g:#x}: expected SUCCESS 0, got {:?} {}",
                r.status, r.value
            ),
        );
    }
    // An array of exactly 256 entries is accepted.
    let Some(max) = c.alloc([entry(call::BASE_GET_VCPU_ID, [0; 6], 0); MAX_ENTRIES as usize])
    else {
        return;
    };
    let r = execute(c, max, MAX_ENTRIES);
    c.check(
        r.status == Status::SUCCESS && r.value == MAX_ENTRIES,
        format_args!("MC-5 EXECUTE of 256 entries: {:?} {}", r.status, r.value),
    );
    store_cleanup(c, &mut s);
}

fn array_bad_addresses(c: &mut Ctx<'_>) {
    if !supported(c) {
        return;
    }
    let Some(mut s) = Scratch::new(c, 4096) else {
        return;
    };
    let w = lim_entry(c, &mut s);
    // MC-2: a misaligned array (the entry itself is well-formed) runs nothing.
    let raw = s.take(2 * MulticallEntry::SIZE + 16);
    let bytes = encode(&w);
    if let Some(d) = raw.get_mut(4..4 + MulticallEntry::SIZE) {
        d.copy_from_slice(&bytes);
    }
    let rg = gpa(c, raw);
    for off in [4u64, 1, 2] {
        let r = c.raw(call::MULTICALL_EXECUTE, [rg + off, 1, 0, 0, 0, 0]);
        c.check(
            r.status == Status::INVALID_ADDRESS,
            format_args!(
                "MC-2 EXECUTE of an array at gpa+{off}: expected INVALID_ADDRESS, got {:?}",
                r.status
            ),
        );
    }
    store_missing(
        c,
        &mut s,
        b"cf_mc/lim",
        "MC-2 a misaligned EXECUTE ran an entry",
    );
    // MC-2: arrays outside guest RAM, straddling its end, or wrapping.
    let top = ram_top(c) & !7;
    for (g, n, what) in [
        (top, 1u64, "beyond RAM"),
        (top + 0x100_0000, 256, "far beyond RAM"),
        (top - 72, 2, "straddling the end of RAM"),
        (top - 8, 1, "straddling the end of RAM"),
        (!7u64, 1, "wrapping"),
        (u64::MAX - 71 - 7, 2, "wrapping"),
    ] {
        let r = c.raw(call::MULTICALL_EXECUTE, [g & !7, n, 0, 0, 0, 0]);
        c.check(
            r.status == Status::INVALID_ADDRESS,
            format_args!(
                "MC-2 EXECUTE of an array {what} ({g:#x}, {n}): expected INVALID_ADDRESS, got {:?}",
                r.status
            ),
        );
    }
    host_alive(c, "hostile multicall arrays");
    store_cleanup(c, &mut s);
}

fn encode(e: &MulticallEntry) -> [u8; MulticallEntry::SIZE] {
    let mut b = [0u8; MulticallEntry::SIZE];
    let mut at = 0;
    let mut put = |x: &[u8]| {
        if let Some(d) = b.get_mut(at..at + x.len()) {
            d.copy_from_slice(x);
        }
        at += x.len();
    };
    put(&e.call_id.to_le_bytes());
    put(&e.flags.to_le_bytes());
    for a in e.args {
        put(&a.to_le_bytes());
    }
    put(&e.status.to_le_bytes());
    put(&e.value.to_le_bytes());
    b
}

fn array_copied_once(c: &mut Ctx<'_>) {
    if !supported(c) {
        return;
    }
    let Some(mut s) = Scratch::new(c, 4096) else {
        return;
    };
    store_cleanup(c, &mut s);
    // A node whose value is the first 8 bytes of an entry for an unknown call.
    let path = s.put(b"cf_mc/cp");
    let unknown = CallId::new(ServiceId::BASE, 0x7fff).0;
    let mut v = [0u8; 8];
    if let Some(d) = v.get_mut(..4) {
        d.copy_from_slice(&unknown.to_le_bytes());
    }
    let val = s.put(&v);
    let r = c.raw(
        call::STORE_WRITE,
        [gpa(c, path), path.len() as u64, gpa(c, val), 8, 0, 0],
    );
    if !expect(c, r, Status::SUCCESS, "STORE.WRITE cf_mc/cp") {
        return;
    }
    let probe = c.raw(
        call::BASE_PROBE_SERVICE,
        [u64::from(ServiceId::STORE.0), 0, 0, 0, 0, 0],
    );
    let Some(a) = c.alloc([
        entry(call::STORE_READ, [0; 6], 0),
        entry(
            call::BASE_PROBE_SERVICE,
            [u64::from(ServiceId::STORE.0), 0, 0, 0, 0, 0],
            0,
        ),
    ]) else {
        return;
    };
    // Entry 0 reads the node over entry 1's call id and flags.
    let e1 = c.pv.translate().gpa_of_ref(&a[1]).unwrap_or(u64::MAX);
    a[0].args = [gpa(c, path), path.len() as u64, e1, 8, 0, 0];
    let r = execute(c, a, 2);
    c.check(
        r.status == Status::SUCCESS && r.value == 2,
        format_args!("EXECUTE: {:?} {}", r.status, r.value),
    );
    let e = snapshot(a);
    let [e0, e1] = &e;
    expect_entry(c, e0, 0, Status::SUCCESS, Some(8));
    c.check(
        e1.call_id == unknown,
        format_args!(
            "entry 0 did not overwrite entry 1's call id ({:#x})",
            e1.call_id
        ),
    );
    // MC-2 / SEC-6: entry 1 ran from the host's copy, as PROBE_SERVICE.
    c.check(
        e1.status == status_of(probe.status) && e1.value == probe.value,
        format_args!(
            "MC-2/SEC-6 entry 1 did not run from the copy taken before the first entry: status \
             {} value {} (PROBE_SERVICE gives {:?} {})",
            e1.status, e1.value, probe.status, probe.value
        ),
    );
    store_cleanup(c, &mut s);
}

fn feature_absent(c: &mut Ctx<'_>) {
    if has(c, Features::MULTICALL) {
        c.skip(format_args!(
            "the host sets MULTICALL; MC-6 concerns hosts without it"
        ));
        return;
    }
    let Some(a) = c.alloc([entry(call::BASE_GET_ABI_VERSION, [0; 6], 0)]) else {
        return;
    };
    let r = execute(c, a, 1);
    expect(c, r, Status::NOT_SUPPORTED, "MC-6 MULTICALL.EXECUTE");
    let e = snapshot(a);
    if let Some(e0) = e.first() {
        expect_unwritten(c, e0, 0, "MC-6 an unsupported EXECUTE");
    }
}
