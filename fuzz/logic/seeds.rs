//! Seed inputs built with the targets' own encoding, so that the seed corpus reaches the
//! success paths (event page and ports, store nodes, transactions, grants, multicall arrays,
//! a ring, clock pages, reports) and the fuzzer mutates from there.

use pvabi::call::{self, CallId};
use pvabi::grant::GrantEntry;
use pvabi::harness::ReportHeader;

use super::input::Enc;

fn idx(id: CallId) -> u8 {
    call::CALLS
        .iter()
        .position(|c| c.id == id)
        .expect("v1 call") as u8
}

/// A gate call from vCPU 0 with raw arguments (dispatch encoding).
fn dcall(e: &mut Enc, id: CallId, args: [u64; 6]) {
    e.u8(0).u8(0).u8(idx(id));
    for a in args {
        e.u8(11).u64(a);
    }
}

/// A guest write of `data` at `gpa` in region A (dispatch encoding).
fn dpoke(e: &mut Enc, gpa: u16, data: &[u8]) {
    e.u8(5).u16(gpa).u8(1).u8(data.len() as u8).bytes(data);
}

/// Seeds of the `dispatch` target.
pub fn dispatch() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    // Events: page, two ports, send, mask, unmask, bind, close; a watch.
    let mut e = Enc::default();
    e.u8(0x01).u8(0);
    dcall(&mut e, call::EVENT_REGISTER_PAGE, [0x1000, 0, 0, 0, 0, 0]);
    dcall(&mut e, call::EVENT_ALLOC, [0; 6]);
    dcall(&mut e, call::EVENT_ALLOC, [0; 6]);
    dcall(&mut e, call::EVENT_SEND, [1, 0, 0, 0, 0, 0]);
    dcall(&mut e, call::EVENT_MASK, [2, 0, 0, 0, 0, 0]);
    dcall(&mut e, call::EVENT_SEND, [2, 0, 0, 0, 0, 0]);
    dcall(&mut e, call::EVENT_UNMASK, [2, 0, 0, 0, 0, 0]);
    dcall(&mut e, call::EVENT_BIND_VCPU, [2, 1, 0, 0, 0, 0]);
    dcall(&mut e, call::EVENT_CLOSE, [1, 0, 0, 0, 0, 0]);
    dcall(&mut e, call::EVENT_SET_UPCALL, [2, 0x4000, 0, 0, 0, 0]);
    e.u8(7).u8(5).u8(0);
    out.push(e.0);
    // Store: write, read, list, watch, watch_next, transaction.
    let mut e = Enc::default();
    e.u8(0x00).u8(0);
    dcall(&mut e, call::EVENT_REGISTER_PAGE, [0x1000, 0, 0, 0, 0, 0]);
    dcall(&mut e, call::EVENT_ALLOC, [0; 6]);
    dpoke(&mut e, 0x2000, b"dev/a/b");
    dpoke(&mut e, 0x2100, b"value");
    dcall(&mut e, call::STORE_WATCH, [0x2000, 3, 1, 0, 0, 0]);
    dcall(&mut e, call::STORE_WRITE, [0x2000, 7, 0x2100, 5, 0, 0]);
    dcall(&mut e, call::STORE_READ, [0x2000, 7, 0x3000, 64, 0, 0]);
    dcall(&mut e, call::STORE_LIST, [0x2000, 5, 0x3000, 2, 0, 0]);
    dcall(&mut e, call::STORE_WATCH_NEXT, [0x3100, 64, 0, 0, 0, 0]);
    dcall(&mut e, call::STORE_TXN_START, [0; 6]);
    dcall(&mut e, call::STORE_WRITE, [0x2000, 5, 0x2100, 5, 1, 0]);
    dcall(&mut e, call::STORE_TXN_COMMIT, [1, 0, 0, 0, 0, 0]);
    dcall(&mut e, call::STORE_REMOVE, [0x2000, 3, 0, 0, 0, 0]);
    dcall(
        &mut e,
        call::HARNESS_STORE_HOST_WRITE,
        [0x2000, 3, 0x2100, 5, 1, 0],
    );
    dcall(&mut e, call::STORE_WRITE, [0x2000, 3, 0x2100, 5, 0, 0]);
    out.push(e.0);
    // Grants: a table, an entry, host access through HARNESS.
    let mut e = Enc::default();
    e.u8(0x00).u8(0);
    let g = GrantEntry {
        flags: GrantEntry::FLAG_VALID,
        _reserved: 0,
        domid: 0,
        gfn: 5,
    };
    let mut gb = Vec::new();
    gb.extend_from_slice(&g.flags.to_le_bytes());
    gb.extend_from_slice(&[0, 0]);
    gb.extend_from_slice(&g.domid.to_le_bytes());
    gb.extend_from_slice(&g.gfn.to_le_bytes());
    dpoke(&mut e, 0x4010, &gb);
    dcall(&mut e, call::GRANT_SETUP_TABLE, [0x4000, 4, 0, 0, 0, 0]);
    dcall(&mut e, call::GRANT_QUERY, [0; 6]);
    dcall(&mut e, call::HARNESS_GRANT_ACCESS, [1, 8, 0x5a, 0, 0, 0]);
    dcall(
        &mut e,
        call::HARNESS_GRANT_ACCESS,
        [1, 8, u64::MAX, 0, 0, 0],
    );
    e.u8(7).u8(11).u8(0).u8(11).u64(1).u16(0).u8(0);
    out.push(e.0);
    // Multicall: an array written by the structured op, then executed.
    let mut e = Enc::default();
    e.u8(0x00).u8(0);
    e.u8(6).u8(0).u16(0x5000).u8(3);
    for id in [
        call::BASE_GET_ABI_VERSION,
        call::CONSOLE_WRITE_BYTE,
        call::EVENT_ALLOC,
    ] {
        e.u8(idx(id)).u8(0);
        for _ in 0..6 {
            e.u8(0).u8(65);
        }
    }
    dcall(&mut e, call::MULTICALL_EXECUTE, [0x5000, 3, 0, 0, 0, 0]);
    out.push(e.0);
    // Ring: header and a request, registration, doorbell.
    let mut e = Enc::default();
    e.u8(0x00).u8(0);
    // Ring at page 2, order 0, magic, req_prod 1, cmp_cons 0, one request.
    e.u8(6).u8(3).u8(2).u8(0).u8(0).u8(1).u8(0).u8(1);
    e.u8(idx(call::BASE_GET_VCPU_COUNT));
    for _ in 0..6 {
        e.u8(0).u8(0);
    }
    dcall(&mut e, call::BASE_RING_REGISTER, [0x2000, 0, 0, 0, 0, 0]);
    e.u8(7).u8(2).u8(0);
    out.push(e.0);
    // Clock, timer, block, steal time, balloon, memory map, console.
    let mut e = Enc::default();
    e.u8(0x01).u8(0);
    dcall(&mut e, call::EVENT_REGISTER_PAGE, [0x1000, 0, 0, 0, 0, 0]);
    dcall(&mut e, call::EVENT_ALLOC, [0; 6]);
    dcall(&mut e, call::CLOCK_REGISTER_PAGE, [0x2000, 0, 0, 0, 0, 0]);
    dcall(
        &mut e,
        call::VCPU_REGISTER_STEAL_TIME,
        [0x2040, 0, 0, 0, 0, 0],
    );
    dcall(&mut e, call::CLOCK_SET_TIMER, [5000, 1, 0, 0, 0, 0]);
    e.u8(7).u8(0).u8(0).u32(10_000);
    dcall(&mut e, call::VCPU_START, [1, 0x1000, 0x2000, 0, 0, 0]);
    dcall(&mut e, call::MEMORY_GET_MAP, [0x3000, 4, 0, 0, 0, 0]);
    dcall(
        &mut e,
        call::MEMORY_BALLOON_RELEASE,
        [0x6000, 1, 0, 0, 0, 0],
    );
    dcall(
        &mut e,
        call::MEMORY_BALLOON_RECLAIM,
        [0x6000, 1, 0, 0, 0, 0],
    );
    dpoke(&mut e, 0x3800, b"hello");
    dcall(&mut e, call::CONSOLE_WRITE, [0x3800, 5, 0, 0, 0, 0]);
    dcall(
        &mut e,
        call::HARNESS_CONSOLE_READBACK,
        [0x3900, 16, 0, 0, 0, 0],
    );
    dcall(&mut e, call::HARNESS_CONSOLE_INPUT, [0x3800, 5, 0, 0, 0, 0]);
    dcall(&mut e, call::CONSOLE_READ, [0x3a00, 8, 0, 0, 0, 0]);
    dcall(&mut e, call::VCPU_BLOCK, [20_000, 0, 0, 0, 0, 0]);
    out.push(e.0);
    // A report record.
    let mut e = Enc::default();
    e.u8(0x00).u8(0);
    let mut rec = Vec::new();
    for w in [ReportHeader::MAGIC, 0, 5, 4, 2, 0] {
        rec.extend_from_slice(&w.to_le_bytes());
    }
    rec.extend_from_slice(b"EVT-1nameok");
    dpoke(&mut e, 0x3000, &rec);
    dcall(
        &mut e,
        call::HARNESS_REPORT,
        [0x3000, rec.len() as u64, 0, 0, 0, 0],
    );
    dcall(
        &mut e,
        call::POWER_REGISTER_CRASH_BUFFER,
        [0x3000, 64, 0, 0, 0, 0],
    );
    dcall(&mut e, call::POWER_SHUTDOWN, [2, 7, 0, 0, 0, 0]);
    out.push(e.0);
    out
}

/// Seeds of the `store` target.
pub fn store() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    // Writes, reads, lists, a watch, host nodes with each access, removal.
    let mut e = Enc::default();
    e.u8(7).u8(0).u16(5); // watch "a"
    e.u8(0).u8(1).u8(0).u8(1).u8(3).bytes(b"xyz").u8(0); // write a/b
    e.u8(2).u8(1).u8(2).u8(0).u8(1).bytes(b"h").u8(0); // host write c/a, NONE
    e.u8(3).u8(1).u8(2).u8(0).u8(0); // read c/a: DENIED
    e.u8(4).u8(50).u8(0).u8(0).u8(0); // list a
    e.u8(5).u8(0).u8(0).u8(0); // remove a
    e.u8(9);
    out.push(e.0);
    // Transactions: start two, write in one, conflict the other, commit both.
    let mut e = Enc::default();
    e.u8(0).u8(0).u8(0).u8(1).u8(1).u8(0); // write a
    e.u8(10).u8(10);
    e.u8(3).u8(0).u8(0).u8(250); // read a in txn
    e.u8(0).u8(1).u8(1).u8(2).u8(1).u8(9).u8(250); // write b/c in txn
    e.u8(0).u8(0).u8(0).u8(2).u8(5).u8(6).u8(0); // live write a
    e.u8(11).u8(250).u8(1);
    e.u8(11).u8(251).u8(1);
    out.push(e.0);
    // Quota: fill, hit the limit, host removes.
    let mut e = Enc::default();
    e.u8(12).u8(255).u8(0);
    e.u8(12).u8(10).u8(1);
    e.u8(0).u8(0).u8(0).u8(251);
    e.u8(13).u8(0);
    out.push(e.0);
    out
}

/// Seeds of the `multicall` target.
pub fn multicall() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let raw = |e: &mut Enc, v: u64| {
        e.u8(11).u64(v);
    };
    let mut e = Enc::default();
    e.u8(0x01);
    // Prelude: event page.
    e.u8(1).u8(idx(call::EVENT_REGISTER_PAGE));
    raw(&mut e, 0x1000);
    for _ in 0..5 {
        raw(&mut e, 0);
    }
    // Array of four at 0x3000: alloc, send 1, store write, shutdown (refused in a batch).
    e.u8(2).u8(0).u16(0x3000).u8(4);
    let entries: [(CallId, u8, [u64; 6]); 4] = [
        (call::EVENT_ALLOC, 0, [0; 6]),
        (call::EVENT_SEND, 1, [1, 0, 0, 0, 0, 0]),
        (call::CONSOLE_WRITE_BYTE, 0, [65, 0, 0, 0, 0, 0]),
        (call::POWER_SHUTDOWN, 1, [0; 6]),
    ];
    for (id, f, args) in entries {
        e.u8(idx(id)).u8(f);
        for a in args {
            raw(&mut e, a);
        }
    }
    e.u8(0);
    out.push(e.0);
    let mut e = Enc::default();
    e.u8(0x00);
    e.u8(2).u8(0).u16(0x3004).u8(1).u8(0).u8(0);
    for _ in 0..6 {
        e.u8(0).u8(0);
    }
    e.u8(0);
    e.u8(2).u8(0).u16(0x7ff8).u8(2).u8(0).u8(0);
    for _ in 0..12 {
        e.u8(0).u8(0);
    }
    e.u8(240);
    out.push(e.0);
    out
}
