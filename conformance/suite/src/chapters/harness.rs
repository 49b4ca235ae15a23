//! HARNESS cases (spec appendix A, `HAR-*`), run in the shared guest like every other
//! chapter. `HAR-12` (a runner ignores records after `END`) concerns the runner alone and
//! cannot be observed from inside the guest; the runner's own tests cover it.

use core::sync::atomic::Ordering::SeqCst;

use pvabi::discovery::Features;
use pvabi::grant::GrantEntry;
use pvabi::harness::{Outcome, ReportHeader, GRANT_ACCESS_READ};
use pvabi::store::GuestAccess;
use pvabi::{call, CallId, ServiceId, Status};
use pvabi_guest::grant::SharedPage;
use pvabi_guest::harness::{encode_record, Record};
use pvabi_guest::memory::Page;
use pvabi_guest::shared::GrantTableShared;

use crate::chapters::clock::RawClockPage;
use crate::chapters::event::{quiet, shared_events};
use crate::chapters::vcpu::expect_st;
use crate::chapters::vcpu::{now, spin_wait, start_worker, stopped_vcpu, OP_CALL};
use crate::{Case, Ctx};

/// The chapter's cases.
pub const CASES: &[Case] = &[
    Case {
        name: "harness::present_with_ten_functions",
        clauses: "HAR-1",
        run: present_with_ten_functions,
    },
    Case {
        name: "harness::report_validation",
        clauses: "HAR-2",
        run: report_validation,
    },
    Case {
        name: "harness::inject_event",
        clauses: "HAR-3",
        run: inject_event,
    },
    Case {
        name: "harness::store_host_write_and_read",
        clauses: "HAR-4,HAR-5,HAR-14",
        run: store_host_write_and_read,
    },
    Case {
        name: "harness::console_readback",
        clauses: "HAR-6",
        run: console_readback,
    },
    Case {
        name: "harness::console_input",
        clauses: "HAR-7,HAR-19",
        run: console_input,
    },
    Case {
        name: "harness::clock_read",
        clauses: "HAR-9",
        run: clock_read,
    },
    Case {
        name: "harness::clock_advance",
        clauses: "HAR-8",
        run: clock_advance_and_read,
    },
    Case {
        name: "harness::grant_access",
        clauses: "HAR-10,HAR-15,HAR-16,HAR-17,HAR-18",
        run: grant_access,
    },
    Case {
        name: "harness::balloon_check",
        clauses: "HAR-11",
        run: balloon_check,
    },
];

fn present_with_ten_functions(c: &mut Ctx<'_>) {
    let pv = c.pv;
    if let Some(f) = c.expect_ok(pv.get_features(), "BASE.GET_FEATURES") {
        c.check(
            f.contains(Features::HARNESS) && f.bits() & (1 << 63) != 0,
            format_args!("the HARNESS feature bit 63 is clear while HARNESS answers"),
        );
    }
    let r = c.raw(call::BASE_PROBE_SERVICE, [0x7F00, 0, 0, 0, 0, 0]);
    c.check(
        r.status == Status::SUCCESS && r.value == 10,
        format_args!("BASE.PROBE_SERVICE(0x7F00) = ({:?}, {})", r.status, r.value),
    );
    // Every one of the ten functions is implemented: with harmless invalid arguments none
    // answers NOT_SUPPORTED. (Function 10 does not exist.)
    let args: [[u64; 6]; 10] = [
        [0, 1, 0, 0, 0, 0],           // REPORT: len below 24
        [0, 0, 0, 0, 0, 0],           // INJECT_EVENT: port 0
        [0, 0, 0, 0, 7, 0],           // STORE_HOST_WRITE: bad access
        [0, 0, 0, 0, 0, 0],           // STORE_HOST_READ: empty path
        [0, 0, 0, 0, 0, 0],           // CONSOLE_READBACK: nothing
        [0, 0, 0, 0, 0, 0],           // CONSOLE_INPUT: nothing
        [0, 0, 0, 0, 0, 0],           // CLOCK_ADVANCE: 0 ns
        [0, 0, 0, 0, 0, 0],           // CLOCK_READ
        [u64::MAX, 4096, 0, 0, 0, 0], // GRANT_ACCESS: bad offset
        [1, 0, 0, 0, 0, 0],           // BALLOON_CHECK: misaligned
    ];
    for (f, a) in args.iter().enumerate() {
        let r = c.raw(CallId::new(ServiceId::HARNESS, f as u16), *a);
        c.check(
            r.status != Status::NOT_SUPPORTED || f == 6,
            format_args!("HARNESS function {f} answers NOT_SUPPORTED"),
        );
    }
    let r = c.raw(CallId::new(ServiceId::HARNESS, 10), [0; 6]);
    expect_st(
        c,
        r,
        Status::NOT_SUPPORTED,
        "HARNESS function 10 (does not exist)",
    );
}

fn header(b: &mut [u8], magic: u32, outcome: u32, cl: u32, nl: u32, dl: u32) {
    let h = ReportHeader {
        magic,
        outcome,
        clauses_len: cl,
        name_len: nl,
        detail_len: dl,
        _reserved: 0,
    };
    let bytes = zerocopy_bytes(&h);
    if let Some(d) = b.get_mut(..ReportHeader::SIZE) {
        d.copy_from_slice(&bytes);
    }
}

fn zerocopy_bytes(h: &ReportHeader) -> [u8; 24] {
    let mut out = [0u8; 24];
    for (i, v) in [
        h.magic,
        h.outcome,
        h.clauses_len,
        h.name_len,
        h.detail_len,
        h._reserved,
    ]
    .iter()
    .enumerate()
    {
        if let Some(d) = out.get_mut(i * 4..i * 4 + 4) {
            d.copy_from_slice(&v.to_le_bytes());
        }
    }
    out
}

fn report_validation(c: &mut Ctx<'_>) {
    let Some(buf) = c.buf(4096 + 64, 8) else {
        return;
    };
    let gpa = c.gpa(buf);
    // A valid probe record (no clause cited) is accepted; bytes after the detail ignored.
    let probe = Record {
        outcome: Outcome::SKIPPED,
        clauses: b"",
        name: b"harness::report_validation::probe",
        detail: b"a record sent by harness::report_validation to check HARNESS.REPORT; it cites no clause",
    };
    let n = match encode_record(&probe, buf) {
        Ok(n) => n,
        Err(e) => {
            c.check(false, format_args!("cannot encode a record: {e:?}"));
            return;
        }
    };
    let r = c.raw(call::HARNESS_REPORT, [gpa, n as u64, 0, 0, 0, 0]);
    c.check(
        r.status == Status::SUCCESS && r.value == 0,
        format_args!(
            "HARNESS.REPORT of a valid record gave ({:?}, {})",
            r.status, r.value
        ),
    );
    if let Some(tail) = buf.get_mut(n..n + 16) {
        tail.fill(0xFF);
    }
    let r = c.raw(call::HARNESS_REPORT, [gpa, n as u64 + 16, 0, 0, 0, 0]);
    expect_st(
        c,
        r,
        Status::SUCCESS,
        "HARNESS.REPORT with bytes after the detail",
    );
    // A record whose clause list has spaces and empty items: the runner trims and drops
    // them, so HAR-13 counts as checked only when it does.
    let parsed = Record {
        outcome: Outcome::PASSED,
        clauses: b" HAR-13 , ,",
        name: b"harness::clause_list_is_trimmed",
        detail: b"",
    };
    if let Ok(n2) = encode_record(&parsed, buf) {
        let r = c.raw(call::HARNESS_REPORT, [gpa, n2 as u64, 0, 0, 0, 0]);
        expect_st(
            c,
            r,
            Status::SUCCESS,
            "HARNESS.REPORT with spaces in the clause list",
        );
    }
    // Malformed records: every one INVALID_PARAM.
    let name = b"harness::bad";
    let bad = |c: &mut Ctx<'_>, buf: &mut [u8], len: u64, what: &str| {
        let r = c.raw(call::HARNESS_REPORT, [gpa, len, 0, 0, 0, 0]);
        expect_st(c, r, Status::INVALID_PARAM, what);
        buf.fill(0);
    };
    let fill = |buf: &mut [u8]| {
        if let Some(d) = buf.get_mut(24..24 + name.len()) {
            d.copy_from_slice(name);
        }
    };
    let nl = name.len() as u32;
    let good_len = 24 + u64::from(nl);
    for len in [0, 8, 23] {
        header(buf, ReportHeader::MAGIC, 0, 0, 0, 0);
        bad(c, buf, len, "HARNESS.REPORT with len below 24");
    }
    for len in [4097, 1 << 20, u64::MAX] {
        header(buf, ReportHeader::MAGIC, 0, 0, nl, 0);
        fill(buf);
        bad(c, buf, len, "HARNESS.REPORT with len above 4096");
    }
    header(buf, 0x5052_5651, 0, 0, nl, 0);
    fill(buf);
    bad(c, buf, good_len, "HARNESS.REPORT with a bad magic");
    for outcome in [4, 0xFFFF_FFFF] {
        header(buf, ReportHeader::MAGIC, outcome, 0, nl, 0);
        fill(buf);
        bad(c, buf, good_len, "HARNESS.REPORT with an unknown outcome");
    }
    header(buf, ReportHeader::MAGIC, 0, 0, nl, 1);
    fill(buf);
    bad(
        c,
        buf,
        good_len,
        "HARNESS.REPORT whose lengths exceed len - 24",
    );
    header(buf, ReportHeader::MAGIC, 0, u32::MAX, u32::MAX, 2);
    fill(buf);
    bad(
        c,
        buf,
        4096,
        "HARNESS.REPORT whose lengths overflow when added",
    );
    header(buf, ReportHeader::MAGIC, 0, 0, nl, 0);
    fill(buf);
    if let Some(b) = buf.get_mut(26) {
        *b = 0xFF;
    }
    bad(
        c,
        buf,
        good_len,
        "HARNESS.REPORT with a name that is not UTF-8",
    );
    header(buf, ReportHeader::MAGIC, 0, 2, nl, 0);
    if let Some(d) = buf.get_mut(24..26) {
        d.copy_from_slice(&[0xC3, 0x28]);
    }
    if let Some(d) = buf.get_mut(26..26 + name.len()) {
        d.copy_from_slice(name);
    }
    bad(
        c,
        buf,
        good_len + 2,
        "HARNESS.REPORT with a clause list that is not UTF-8",
    );
    header(buf, ReportHeader::MAGIC, 1, 0, nl, 1);
    fill(buf);
    if let Some(b) = buf.get_mut(24 + name.len()) {
        *b = 0x80;
    }
    bad(
        c,
        buf,
        good_len + 1,
        "HARNESS.REPORT with a detail that is not UTF-8",
    );
}

fn inject_event(c: &mut Ctx<'_>) {
    let Some(ev) = shared_events(c) else { return };
    let pv = c.pv;
    let me = pv.vcpu_id().unwrap_or(0);
    let Some(p) = c.expect_ok(pv.event_alloc(), "EVENT.ALLOC") else {
        return;
    };
    // What a raise leaves in the page: the port's pending bit, the vCPU's selector and
    // upcall_pending.
    let state = |ev: &pvabi_guest::event::EventChannels| {
        let rec = ev.page().vcpu.get(me as usize);
        (
            ev.is_pending(p),
            rec.map_or(0, |i| i.selector.load(SeqCst)),
            rec.map_or(0, |i| i.upcall_pending.load(SeqCst)),
        )
    };
    // An injection raises the port exactly as EVENT.SEND does: unmasked, then masked.
    for masked in [false, true] {
        if masked {
            c.expect_ok(pv.event_mask(p), "EVENT.MASK");
        }
        ev.clear_pending(p);
        quiet(&ev, me);
        c.expect_ok(pv.event_send(p), "EVENT.SEND");
        let by_send = state(&ev);
        ev.clear_pending(p);
        quiet(&ev, me);
        let r = c.raw(call::HARNESS_INJECT_EVENT, [p.arg(), 0, 0, 0, 0, 0]);
        c.check(
            r.status == Status::SUCCESS && r.value == 0,
            format_args!("HARNESS.INJECT_EVENT gave ({:?}, {})", r.status, r.value),
        );
        let by_inject = state(&ev);
        c.check(
            by_inject == by_send,
            format_args!(
                "HARNESS.INJECT_EVENT (masked: {masked}) left (pending, selector, upcall_pending) = {by_inject:?}, EVENT.SEND {by_send:?}"
            ),
        );
    }
    let _ = pv.event_unmask(p);
    ev.clear_pending(p);
    quiet(&ev, me);
    // Fails as EVENT.SEND fails.
    for bad in [0, 1024, 1 << 32] {
        let r = c.raw(call::HARNESS_INJECT_EVENT, [bad, 0, 0, 0, 0, 0]);
        expect_st(
            c,
            r,
            Status::INVALID_PARAM,
            "HARNESS.INJECT_EVENT of port 0 or >= 1024",
        );
    }
    c.expect_ok(pv.event_close(p), "EVENT.CLOSE");
    let r = c.raw(call::HARNESS_INJECT_EVENT, [p.arg(), 0, 0, 0, 0, 0]);
    expect_st(
        c,
        r,
        Status::NOT_FOUND,
        "HARNESS.INJECT_EVENT of an unallocated port",
    );
    c.check(
        !ev.is_pending(p),
        format_args!("an injection into an unallocated port set its pending bit"),
    );
}

/// A byte string copied into guest RAM.
fn text(c: &mut Ctx<'_>, s: &[u8]) -> Option<&'static mut [u8]> {
    let b = c.buf(s.len().max(1), 1)?;
    if let Some(d) = b.get_mut(..s.len()) {
        d.copy_from_slice(s);
    }
    b.get_mut(..s.len())
}

fn store_host_write_and_read(c: &mut Ctx<'_>) {
    let pv = c.pv;
    let top = crate::chapters::event::store_top_exists(c);
    let (Some(p_rw), Some(p_none), Some(p_ro), Some(root)) = (
        text(c, b"conformance/har/rw"),
        text(c, b"conformance/har/none"),
        text(c, b"conformance/har/ro"),
        text(c, b"conformance/har"),
    ) else {
        return;
    };
    let (Some(v1), Some(v2), Some(out)) = (text(c, b"host-value"), text(c, b"v2"), c.buf(64, 8))
    else {
        return;
    };
    let (p_rw, p_none, p_ro): (&[u8], &[u8], &[u8]) = (p_rw, p_none, p_ro);
    // READ_WRITE: the guest reads what the host wrote; the host reads it back.
    c.expect_ok(
        pv.harness_store_host_write(p_rw, v1, GuestAccess::READ_WRITE),
        "HARNESS.STORE_HOST_WRITE(READ_WRITE)",
    );
    if let Some(n) = c.expect_ok(pv.store_read(p_rw, out, None), "STORE.READ of a host node") {
        c.check(
            out.get(..n) == Some(b"host-value".as_slice()),
            format_args!("the guest read {:?}", out.get(..n)),
        );
    }
    out.fill(0);
    if let Some(n) = c.expect_ok(
        pv.harness_store_host_read(p_rw, out),
        "HARNESS.STORE_HOST_READ",
    ) {
        c.check(
            out.get(..n) == Some(b"host-value".as_slice()),
            format_args!("the host read {:?}", out.get(..n)),
        );
    }
    // NONE: the host reads it anyway (whether the guest is denied is STORE-2's business).
    c.expect_ok(
        pv.harness_store_host_write(p_none, v1, GuestAccess::NONE),
        "HARNESS.STORE_HOST_WRITE(NONE)",
    );
    if let Some(n) = c.expect_ok(
        pv.harness_store_host_read(p_none, out),
        "HARNESS.STORE_HOST_READ of an access-NONE node",
    ) {
        c.check(
            n == 10 && out.get(..n) == Some(b"host-value".as_slice()),
            format_args!("host read {:?} of an access-NONE node", out.get(..n)),
        );
    }
    // READ: the guest reads it.
    c.expect_ok(
        pv.harness_store_host_write(p_ro, v1, GuestAccess::READ),
        "HARNESS.STORE_HOST_WRITE(READ)",
    );
    c.expect_ok(
        pv.store_read(p_ro, out, None),
        "guest STORE.READ of an access-READ node",
    );
    // Host reads ignore open transactions; host writes are outside them (visible at once to
    // a read outside the transaction).
    if pv.info().features.contains(Features::STORE_TXN) {
        if let Some(t) = c.expect_ok(pv.store_txn_start(), "STORE.TXN_START") {
            c.expect_ok(
                pv.store_read(p_rw, out, Some(t)),
                "STORE.READ in a transaction",
            );
            c.expect_ok(
                pv.store_write(p_rw, v2, Some(t)),
                "STORE.WRITE in a transaction",
            );
            out.fill(0);
            if let Some(n) = c.expect_ok(
                pv.harness_store_host_read(p_rw, out),
                "HARNESS.STORE_HOST_READ during a transaction",
            ) {
                c.check(
                    out.get(..n) == Some(b"host-value".as_slice()),
                    format_args!("the host saw an uncommitted transaction's value"),
                );
            }
            if let Some(v3) = text(c, b"host-again") {
                c.expect_ok(
                    pv.harness_store_host_write(p_rw, v3, GuestAccess::READ_WRITE),
                    "HARNESS.STORE_HOST_WRITE during a transaction",
                );
                out.fill(0);
                if let Some(n) = c.expect_ok(
                    pv.store_read(p_rw, out, None),
                    "STORE.READ outside the transaction",
                ) {
                    c.check(
                        out.get(..n) == Some(b"host-again".as_slice()),
                        format_args!(
                            "a host write during a guest transaction is not visible outside it ({:?})",
                            out.get(..n)
                        ),
                    );
                }
            }
            let _ = pv.store_txn_abort(t);
        }
    }
    // Host writes fire watches.
    if let Some(ev) = shared_events(c) {
        let me = pv.vcpu_id().unwrap_or(0);
        if let Some(port) = c.expect_ok(pv.event_alloc(), "EVENT.ALLOC") {
            let wbuf = c.buf(512, 8);
            if let (Some(wid), Some(wbuf)) =
                (c.expect_ok(pv.store_watch(p_rw, port), "STORE.WATCH"), wbuf)
            {
                // Drop events queued by earlier cases, then expect one for this write (the
                // queued event, not the port's raise, which is EVT's business).
                for _ in 0..300 {
                    if !matches!(pv.store_watch_next(wbuf), Ok(Some(_))) {
                        break;
                    }
                }
                c.expect_ok(
                    pv.harness_store_host_write(p_rw, v2, GuestAccess::READ_WRITE),
                    "HARNESS.STORE_HOST_WRITE of a watched node",
                );
                let mut fired = false;
                for _ in 0..300 {
                    match pv.store_watch_next(wbuf) {
                        Ok(Some(w)) => fired |= w.watch == wid && w.path == p_rw,
                        _ => break,
                    }
                }
                c.check(
                    fired,
                    format_args!("a host write did not fire the node's watch"),
                );
                let _ = pv.store_unwatch(wid);
            }
            ev.clear_pending(port);
            quiet(&ev, me);
            let _ = pv.event_close(port);
        }
    }
    // Lengths and errors as STORE.READ.
    if let Some(small) = c.buf(3, 1) {
        let g = c.gpa(small);
        let r = c.raw(
            call::HARNESS_STORE_HOST_READ,
            [c.gpa(p_none), p_none.len() as u64, g, 3, 0, 0],
        );
        c.check(
            r.status == Status::BUFFER_TOO_SMALL && r.value == 10,
            format_args!(
                "HARNESS.STORE_HOST_READ into 3 bytes gave ({:?}, {}), want (BUFFER_TOO_SMALL, 10)",
                r.status, r.value
            ),
        );
    }
    if let Some(missing) = text(c, b"conformance/har/missing") {
        c.expect_err(
            pv.harness_store_host_read(missing, out),
            Status::NOT_FOUND,
            "HARNESS.STORE_HOST_READ of a missing node",
        );
    }
    let og = c.gpa(out);
    for bad in [
        b"/conformance/har".as_slice(),
        b"conformance//har",
        b"conformance/har/",
        b"conformance/../har",
        b"conformance/h ar",
    ] {
        let Some(bp) = text(c, bad) else { return };
        let (g, l) = (c.gpa(bp), bp.len() as u64);
        let r = c.raw(call::HARNESS_STORE_HOST_READ, [g, l, og, 64, 0, 0]);
        expect_st(
            c,
            r,
            Status::INVALID_PARAM,
            "HARNESS.STORE_HOST_READ of a bad path",
        );
        let r = c.raw(call::HARNESS_STORE_HOST_WRITE, [g, l, c.gpa(v1), 2, 3, 0]);
        expect_st(
            c,
            r,
            Status::INVALID_PARAM,
            "HARNESS.STORE_HOST_WRITE of a bad path",
        );
    }
    // Empty path, and a path_len over 256 whatever the address.
    let far = c.ram_end() + (1 << 20);
    for (g, l) in [(c.gpa(p_rw), 0), (far, 257), (u64::MAX, 4096)] {
        let r = c.raw(call::HARNESS_STORE_HOST_READ, [g, l, og, 64, 0, 0]);
        expect_st(
            c,
            r,
            Status::INVALID_PARAM,
            "HARNESS.STORE_HOST_READ path_len 0 or > 256",
        );
        let r = c.raw(call::HARNESS_STORE_HOST_WRITE, [g, l, c.gpa(v1), 2, 3, 0]);
        expect_st(
            c,
            r,
            Status::INVALID_PARAM,
            "HARNESS.STORE_HOST_WRITE path_len 0 or > 256",
        );
    }
    // Access values other than 0, 1, 3.
    for acc in [2, 4, 0xFF, u64::MAX] {
        let r = c.raw(
            call::HARNESS_STORE_HOST_WRITE,
            [c.gpa(p_rw), p_rw.len() as u64, c.gpa(v1), 2, acc, 0],
        );
        expect_st(
            c,
            r,
            Status::INVALID_PARAM,
            "HARNESS.STORE_HOST_WRITE with access 2/4/...",
        );
    }
    // HAR-14: a value above 4096 bytes is NO_SPACE; 4096 is fine.
    if let Some(big) = c.buf(4097, 8) {
        let (bg, pg) = (c.gpa(big), c.gpa(p_rw));
        let r = c.raw(
            call::HARNESS_STORE_HOST_WRITE,
            [pg, p_rw.len() as u64, bg, 4097, 3, 0],
        );
        expect_st(
            c,
            r,
            Status::NO_SPACE,
            "HARNESS.STORE_HOST_WRITE of 4097 bytes",
        );
        let r = c.raw(
            call::HARNESS_STORE_HOST_WRITE,
            [pg, p_rw.len() as u64, bg, 4096, 3, 0],
        );
        expect_st(
            c,
            r,
            Status::SUCCESS,
            "HARNESS.STORE_HOST_WRITE of 4096 bytes",
        );
    }
    // Clean up: make every node guest-writable, then remove the subtree.
    for p in [p_rw, p_none, p_ro] {
        let _ = pv.harness_store_host_write(p, v1, GuestAccess::READ_WRITE);
    }
    c.expect_ok(
        pv.store_remove(root, None),
        "STORE.REMOVE of the case's subtree",
    );
    let _ = c.pv.harness_store_host_read(root, out);
    crate::chapters::event::remove_store_top(c, top);
}

fn console_write(c: &mut Ctx<'_>, bytes: &[u8]) -> bool {
    let Some(b) = text(c, bytes) else {
        return false;
    };
    let r = c.raw(call::CONSOLE_WRITE, [c.gpa(b), b.len() as u64, 0, 0, 0, 0]);
    r.status == Status::SUCCESS
}

fn console_readback(c: &mut Ctx<'_>) {
    let pv = c.pv;
    let marker = b"[harness::console_readback marker 7Q2]\n";
    if !console_write(c, marker) {
        c.check(false, format_args!("CONSOLE.WRITE failed"));
        return;
    }
    let Some(buf) = c.buf(4096, 8) else { return };
    let n = marker.len();
    for _ in 0..2 {
        buf.fill(0);
        if let Some(got) = c.expect_ok(
            pv.harness_console_readback(buf.get_mut(..n).unwrap_or(&mut [])),
            "HARNESS.CONSOLE_READBACK",
        ) {
            c.check(
                got == n && buf.get(..n) == Some(marker.as_slice()),
                format_args!("readback of {n} bytes gave {got} bytes, not the newest output"),
            );
        }
    }
    // The whole retained window ends with the newest byte.
    buf.fill(0);
    if let Some(got) = c.expect_ok(
        pv.harness_console_readback(buf),
        "HARNESS.CONSOLE_READBACK(4096)",
    ) {
        c.check(
            got >= n && buf.get(got - n..got) == Some(marker.as_slice()),
            format_args!("a 4096-byte readback ({got} bytes) does not end with the newest output"),
        );
    }
    // A 4096-byte burst is retained whole.
    let Some(burst) = c.buf(4096, 8) else { return };
    for (i, b) in burst.iter_mut().enumerate() {
        *b = b'a' + (i % 26) as u8;
    }
    if let Some(last) = burst.last_mut() {
        *last = b'\n';
    }
    // One call; the count it returns is CONS-2's business, the bytes are what matters here.
    let r = c.raw(
        call::CONSOLE_WRITE,
        [c.gpa(burst), burst.len() as u64, 0, 0, 0, 0],
    );
    c.check(
        r.status == Status::SUCCESS,
        format_args!("CONSOLE.WRITE of 4096 bytes gave {:?}", r.status),
    );
    buf.fill(0);
    if let Some(got) = c.expect_ok(
        pv.harness_console_readback(buf),
        "HARNESS.CONSOLE_READBACK(4096)",
    ) {
        c.check(
            got == 4096 && buf.get(..) == Some(&burst[..]),
            format_args!("after 4096 bytes of output the readback gave {got} bytes that differ"),
        );
    }
    let g = c.gpa(buf);
    let r = c.raw(call::HARNESS_CONSOLE_READBACK, [g, 4097, 0, 0, 0, 0]);
    expect_st(
        c,
        r,
        Status::INVALID_PARAM,
        "HARNESS.CONSOLE_READBACK of 4097 bytes",
    );
    let r = c.raw(call::HARNESS_CONSOLE_READBACK, [g, 0, 0, 0, 0, 0]);
    c.check(
        r.status == Status::SUCCESS && r.value == 0,
        format_args!(
            "HARNESS.CONSOLE_READBACK of 0 bytes gave ({:?}, {})",
            r.status, r.value
        ),
    );
}

/// Reads and discards queued console input (at most 1 MiB).
fn drain_input(c: &mut Ctx<'_>, buf: &mut [u8]) -> usize {
    let mut total = 0usize;
    for _ in 0..256 {
        let r = c.raw(
            call::CONSOLE_READ,
            [c.gpa(buf), buf.len() as u64, 0, 0, 0, 0],
        );
        if r.status != Status::SUCCESS || r.value == 0 {
            break;
        }
        total += r.value as usize;
    }
    total
}

fn console_input(c: &mut Ctx<'_>) {
    let pv = c.pv;
    let Some(rd) = c.buf(4096, 8) else { return };
    drain_input(c, rd);
    let Some(msg) = text(c, b"input for the guest 123") else {
        return;
    };
    c.expect_ok(pv.harness_console_input(msg), "HARNESS.CONSOLE_INPUT");
    let r = c.raw(call::CONSOLE_READ, [c.gpa(rd), 4096, 0, 0, 0, 0]);
    c.check(
        r.status == Status::SUCCESS
            && r.value == msg.len() as u64
            && rd.get(..msg.len()) == Some(&msg[..]),
        format_args!(
            "CONSOLE.READ after HARNESS.CONSOLE_INPUT gave ({:?}, {})",
            r.status, r.value
        ),
    );
    let Some(big) = c.buf(4097, 8) else { return };
    for (i, b) in big.iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    let r = c.raw(call::HARNESS_CONSOLE_INPUT, [c.gpa(big), 4097, 0, 0, 0, 0]);
    expect_st(
        c,
        r,
        Status::INVALID_PARAM,
        "HARNESS.CONSOLE_INPUT of 4097 bytes",
    );
    // At least 4096 bytes can be queued; fill until NO_SPACE and check nothing of the refused
    // chunk was queued.
    let chunk = big.get(..4096).unwrap_or(&[]);
    let mut queued = 0usize;
    let mut refused = false;
    for i in 0..64 {
        let r = c.raw(
            call::HARNESS_CONSOLE_INPUT,
            [c.gpa(chunk), 4096, 0, 0, 0, 0],
        );
        if r.status == Status::SUCCESS {
            queued += 4096;
            continue;
        }
        c.check(
            i > 0,
            format_args!(
                "the host cannot queue 4096 bytes of console input ({:?})",
                r.status
            ),
        );
        expect_st(
            c,
            r,
            Status::NO_SPACE,
            "HARNESS.CONSOLE_INPUT into a full queue",
        );
        refused = true;
        break;
    }
    // Take the rest: exactly what was accepted comes out, in order.
    let mut total = 0usize;
    let mut in_order = true;
    for _ in 0..(queued / 4096 + 4) {
        let r = c.raw(call::CONSOLE_READ, [c.gpa(rd), 4096, 0, 0, 0, 0]);
        if r.status != Status::SUCCESS || r.value == 0 {
            break;
        }
        let n = r.value as usize;
        for (j, b) in rd.iter().take(n).enumerate() {
            if *b != ((total + j) % 4096 % 251) as u8 {
                in_order = false;
            }
        }
        total += n;
    }
    c.check(
        total == queued && in_order,
        format_args!(
            "{queued} bytes were accepted, {total} came out (in order: {in_order}); a refused input must queue nothing"
        ),
    );
    if refused {
        let one = big.get(..1).unwrap_or(&[]);
        c.expect_ok(
            pv.harness_console_input(one),
            "HARNESS.CONSOLE_INPUT after draining",
        );
        drain_input(c, rd);
    }
}

fn clock_read(c: &mut Ctx<'_>) {
    let pv = c.pv;
    // HAR-9: the same clock as CLOCK.GET_TIME.
    for _ in 0..5 {
        let a = now(&pv);
        let h = c.expect_ok(pv.harness_clock_read(), "HARNESS.CLOCK_READ");
        let b = now(&pv);
        if let Some(h) = h {
            c.check(
                a <= h && h <= b,
                format_args!("HARNESS.CLOCK_READ {h} is not between GET_TIME {a} and {b}"),
            );
        }
    }
}

fn clock_advance_and_read(c: &mut Ctx<'_>) {
    let pv = c.pv;
    // HAR-8: a virtual clock moves by exactly what is asked; a real one says NOT_SUPPORTED.
    let t0 = pv.harness_clock_read().unwrap_or(0);
    match pv.harness_clock_advance(0) {
        Err(Status::NOT_SUPPORTED) => {
            let r = pv.harness_clock_advance(1_000_000);
            c.expect_err(
                r,
                Status::NOT_SUPPORTED,
                "HARNESS.CLOCK_ADVANCE on a real clock",
            );
            return;
        }
        r => {
            c.expect_ok(r, "HARNESS.CLOCK_ADVANCE(0)");
        }
    }
    let page = if pv.info().features.contains(Features::CLOCK_PAGE) {
        c.alloc(RawClockPage::new()).map(|p| &*p)
    } else {
        None
    };
    let page = page.filter(|p| {
        let g = pv.translate().gpa_of_ref(*p).unwrap_or(u64::MAX);
        c.raw(call::CLOCK_REGISTER_PAGE, [g, 0, 0, 0, 0, 0]).status == Status::SUCCESS
    });
    let ev = shared_events(c);
    let timers = pv.info().features.contains(Features::TIMER);
    let port = if timers {
        ev.and_then(|_| pv.event_alloc().ok())
    } else {
        None
    };
    let me = pv.vcpu_id().unwrap_or(0);
    let t0 = t0.max(now(&pv));
    if let (Some(p), Some(ev)) = (port, ev) {
        quiet(&ev, me);
        c.expect_ok(pv.set_timer(t0 + 500_000, p), "CLOCK.SET_TIMER");
    }
    let v0 = page.map_or(0, |p| p.version());
    let r = c.raw(call::HARNESS_CLOCK_ADVANCE, [1_000_000, 0, 0, 0, 0, 0]);
    c.check(
        r.status == Status::SUCCESS && r.value == 0,
        format_args!(
            "HARNESS.CLOCK_ADVANCE(1 ms) gave ({:?}, {})",
            r.status, r.value
        ),
    );
    let t1 = now(&pv);
    c.check(
        t1 >= t0 + 1_000_000,
        format_args!("after advancing 1 ms from {t0} the time is {t1}"),
    );
    if let Some(p) = page {
        let f = p.fields();
        c.check(
            f.version > v0 && f.version & 1 == 0 && f.system_time >= t0 + 1_000_000,
            format_args!(
                "HARNESS.CLOCK_ADVANCE did not update the clock page (version {v0} -> {}, time {})",
                f.version, f.system_time
            ),
        );
        let _ = pv.clock_unregister_page();
    }
    if let (Some(p), Some(ev)) = (port, ev) {
        c.check(
            ev.is_pending(p),
            format_args!("HARNESS.CLOCK_ADVANCE past a timer's deadline did not fire it"),
        );
        let _ = pv.cancel_timer(p);
        ev.clear_pending(p);
        quiet(&ev, me);
        let _ = pv.event_close(p);
    }
    // A BLOCK on another vCPU whose deadline the advance passes ends with TIMED_OUT. This
    // vCPU waits with VCPU.YIELD, not BLOCK, so that only the advance can move the clock.
    if c.pv.info().vcpu_count < 2 {
        return;
    }
    let Some(v) = stopped_vcpu(c) else { return };
    let Some(w) = start_worker(c, v, None) else {
        return;
    };
    let d = now(&pv) + 1_000_000_000;
    let seq = w.post(OP_CALL, call::VCPU_BLOCK, [d, 0, 0, 0, 0, 0]);
    if w.wait_blocked(c, seq) {
        let t = now(&pv);
        c.expect_ok(
            pv.harness_clock_advance(d.saturating_sub(t) + 1_000_000),
            "HARNESS.CLOCK_ADVANCE past a blocked vCPU's deadline",
        );
        let ended = spin_wait(c, || w.mb.ack.load(SeqCst) == seq);
        let st = crate::chapters::vcpu::st(w.mb.status.load(SeqCst));
        c.check(
            ended && st == Status::TIMED_OUT,
            format_args!(
                "HARNESS.CLOCK_ADVANCE past its deadline did not end vCPU {v}'s VCPU.BLOCK with TIMED_OUT (ended {ended}, {st:?})"
            ),
        );
    }
    w.finish(c);
}

fn grant_access(c: &mut Ctx<'_>) {
    let pv = c.pv;
    if !pv.info().features.contains(Features::GRANT) {
        c.skip(format_args!("the host does not set the GRANT feature"));
        return;
    }
    // No table: BAD_STATE (any table another case left is removed first; the host keeps at
    // most one).
    let _ = c.raw(call::GRANT_SETUP_TABLE, [0, 0, 0, 0, 0, 0]);
    let r = c.raw(
        call::HARNESS_GRANT_ACCESS,
        [0, 0, GRANT_ACCESS_READ, 0, 0, 0],
    );
    expect_st(
        c,
        r,
        Status::BAD_STATE,
        "HARNESS.GRANT_ACCESS without a grant table",
    );
    let (Some(table), Some(page)) = (
        c.alloc(GrantTableShared::<8>::new()),
        c.alloc(SharedPage::new()),
    ) else {
        return;
    };
    let (table, page): (&'static GrantTableShared<8>, &'static SharedPage) = (table, page);
    let Some(grants) = c.expect_ok(pv.grant_setup_table(table), "GRANT.SETUP_TABLE") else {
        return;
    };
    let gfn = pv.translate().gpa_of_ref(page).unwrap_or(0) / 4096;
    let end_gfn = c.ram_end().div_ceil(4096);
    let set = |i: usize, flags: u16, domid: u32, gfn: u64| {
        if let Some(e) = table.entries.get(i) {
            e.domid.store(domid, SeqCst);
            e.gfn.store(gfn, SeqCst);
            e.flags.store(flags, SeqCst);
        }
    };
    let host = GrantEntry::DOMID_HOST;
    let (valid, ro) = (GrantEntry::FLAG_VALID, GrantEntry::FLAG_READONLY);
    set(0, valid, host, gfn);
    set(1, valid | ro, host, gfn);
    set(2, 0, host, gfn);
    set(3, valid, host ^ 1, gfn);
    set(4, valid | 0x8000, host, gfn);
    set(5, valid, host, end_gfn + 16);
    set(6, valid, host, u64::MAX / 2);
    set(7, valid, host, u64::MAX);
    if let Some(w) = page.0.first() {
        w.store(0x0807_0605_0403_0201, SeqCst);
    }
    let acc = |c: &mut Ctx<'_>, r: u64, off: u64, w: u64| {
        c.raw(call::HARNESS_GRANT_ACCESS, [r, off, w, 0, 0, 0])
    };
    // Reads and writes through a valid entry.
    let r = acc(c, 0, 5, GRANT_ACCESS_READ);
    c.check(
        r.status == Status::SUCCESS && r.value == 6,
        format_args!(
            "HARNESS.GRANT_ACCESS read of byte 5 gave ({:?}, {})",
            r.status, r.value
        ),
    );
    let r = acc(c, 0, 6, 0xAB);
    c.check(
        r.status == Status::SUCCESS && r.value == 0 && page.byte(6) == Some(0xAB),
        format_args!(
            "HARNESS.GRANT_ACCESS write of byte 6 gave ({:?}, {}), page byte {:?}",
            r.status,
            r.value,
            page.byte(6)
        ),
    );
    let r = acc(c, 1, 6, GRANT_ACCESS_READ);
    c.check(
        r.status == Status::SUCCESS && r.value == 0xAB,
        format_args!(
            "read through a read-only grant gave ({:?}, {})",
            r.status, r.value
        ),
    );
    // HAR-10 bad arguments.
    for (off, w, what) in [
        (4096, GRANT_ACCESS_READ, "offset 4096"),
        (u64::MAX, GRANT_ACCESS_READ, "offset u64::MAX"),
        (0, 256, "write value 256"),
        (0, u64::MAX - 1, "write value u64::MAX - 1"),
    ] {
        let r = acc(c, 0, off, w);
        expect_st(c, r, Status::INVALID_PARAM, what);
    }
    // HAR-16: reference past the table.
    for gref in [8, 9, 1 << 32, u64::MAX - 1] {
        let r = acc(c, gref, 0, GRANT_ACCESS_READ);
        expect_st(
            c,
            r,
            Status::INVALID_PARAM,
            "HARNESS.GRANT_ACCESS of a ref past the table",
        );
    }
    // HAR-17: entries that do not grant.
    for (gref, w, what) in [
        (1, 0x11, "write through a read-only grant"),
        (2, GRANT_ACCESS_READ, "entry without FLAG_VALID"),
        (3, GRANT_ACCESS_READ, "entry for another domain"),
        (4, GRANT_ACCESS_READ, "entry with an unknown flag"),
    ] {
        let r = acc(c, gref, 0, w);
        expect_st(c, r, Status::DENIED, what);
    }
    c.check(
        page.byte(0) == Some(1),
        format_args!("a refused write changed the page"),
    );
    // HAR-18: granted pages outside guest RAM.
    for (gref, what) in [
        (5, "granted page beyond guest RAM"),
        (6, "granted page far beyond guest RAM"),
        (7, "gfn * 4096 overflows"),
    ] {
        let r = acc(c, gref, 0, GRANT_ACCESS_READ);
        expect_st(c, r, Status::INVALID_ADDRESS, what);
    }
    let _ = grants;
    for e in &table.entries {
        e.flags.store(0, SeqCst);
    }
    let r = c.raw(call::GRANT_SETUP_TABLE, [0, 0, 0, 0, 0, 0]);
    expect_st(
        c,
        r,
        Status::SUCCESS,
        "GRANT.SETUP_TABLE(0, 0) removes the table",
    );
    let r = acc(c, 0, 0, GRANT_ACCESS_READ);
    expect_st(
        c,
        r,
        Status::BAD_STATE,
        "HARNESS.GRANT_ACCESS after the table was removed",
    );
}

fn balloon_check(c: &mut Ctx<'_>) {
    let pv = c.pv;
    let end = c.ram_end();
    let Some(pages) = c.alloc([Page::new()]) else {
        return;
    };
    let gpa = pv.translate().gpa_of_ref(pages).unwrap_or(u64::MAX);
    for (a, what) in [
        (gpa, "a page in use"),
        ((end + 4095) & !4095, "the first page beyond RAM"),
        (1 << 52, "a page far beyond RAM"),
    ] {
        let r = c.raw(call::HARNESS_BALLOON_CHECK, [a, 0, 0, 0, 0, 0]);
        c.check(
            r.status == Status::SUCCESS && r.value == 0,
            format_args!(
                "HARNESS.BALLOON_CHECK of {what} gave ({:?}, {})",
                r.status, r.value
            ),
        );
    }
    for a in [gpa + 1, gpa + 8, gpa + 2048] {
        let r = c.raw(call::HARNESS_BALLOON_CHECK, [a, 0, 0, 0, 0, 0]);
        expect_st(
            c,
            r,
            Status::INVALID_ADDRESS,
            "HARNESS.BALLOON_CHECK of a misaligned gpa",
        );
    }
    if !pv.info().features.contains(Features::BALLOON) {
        return;
    }
    let Some(b) = c.expect_ok(
        pv.balloon_release(pages.as_mut_slice()),
        "MEMORY.BALLOON_RELEASE",
    ) else {
        return;
    };
    let r = c.raw(call::HARNESS_BALLOON_CHECK, [gpa, 0, 0, 0, 0, 0]);
    c.check(
        r.status == Status::SUCCESS && r.value == 1,
        format_args!(
            "HARNESS.BALLOON_CHECK of a released page gave ({:?}, {})",
            r.status, r.value
        ),
    );
    match pv.balloon_reclaim(b) {
        Ok(_) => {
            let r = c.raw(call::HARNESS_BALLOON_CHECK, [gpa, 0, 0, 0, 0, 0]);
            c.check(
                r.status == Status::SUCCESS && r.value == 0,
                format_args!(
                    "HARNESS.BALLOON_CHECK of a reclaimed page gave ({:?}, {})",
                    r.status, r.value
                ),
            );
        }
        Err((s, _)) => {
            c.check(false, format_args!("MEMORY.BALLOON_RECLAIM failed: {s:?}"));
        }
    }
}
