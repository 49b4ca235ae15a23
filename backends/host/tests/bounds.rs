//! Resource bounds (spec `SEC-11`, `STORE-19`, `SEC-16`): every per-guest table is driven to
//! its documented limit, the spec'd status is checked at the limit, and repeated fill/free
//! cycles leave the table exactly as large as before (nothing accumulates).

mod common;

use std::collections::BTreeSet;

use common::*;
use pvabi::call::*;
use pvabi::event::NUM_PORTS;
use pvabi::grant::GrantEntry;
use pvabi::harness::{ReportHeader, GRANT_ACCESS_READ};
use pvabi::multicall::MulticallEntry;
use pvabi::ring::RingHeader;
use pvabi::store::{
    GuestAccess, MAX_ENTRIES, MAX_PATH, MAX_TRANSACTIONS, MAX_VALUE, MAX_WATCHES, MAX_WATCH_EVENTS,
};
use pvabi::{Status, PAGE_SIZE};
use pvabi_host::vm::MAX_REPORTS;
use pvabi_host::VmConfig;

const EV: u64 = 0x8000;
const BUF: u64 = 0x1_0000;
const VAL: u64 = 0x4_0000;

fn nodes(f: &Fx) -> usize {
    let mut n = 0;
    let mut todo = vec![String::new()];
    while let Some(p) = todo.pop() {
        for c in f.vm.store_list(&p).expect("list") {
            n += 1;
            todo.push(if p.is_empty() { c } else { format!("{p}/{c}") });
        }
    }
    n
}

fn path(f: &Fx, p: &str) -> (u64, u64) {
    f.put(BUF, p.as_bytes());
    (BUF, p.len() as u64)
}

fn ports(f: &Fx) -> usize {
    (0..NUM_PORTS)
        .filter(|p| f.vm.port_binding(*p).is_some())
        .count()
}

#[test]
fn store_nodes_values_and_paths() {
    let f = fixture(1);
    for cycle in 0..3 {
        for i in 0..MAX_ENTRIES {
            let (p, l) = path(&f, &format!("n{i}"));
            f.ok(0, STORE_WRITE, &[p, l, VAL, 0, 0]);
        }
        assert_eq!(nodes(&f), MAX_ENTRIES as usize, "cycle {cycle}");
        let (p, l) = path(&f, "one-more");
        assert_eq!(f.err(0, STORE_WRITE, &[p, l, VAL, 0, 0]), Status::NO_SPACE);
        // Creating ancestors counts too; overwriting does not.
        let (p, l) = path(&f, "n1/child");
        assert_eq!(f.err(0, STORE_WRITE, &[p, l, VAL, 0, 0]), Status::NO_SPACE);
        let (p, l) = path(&f, "n1");
        f.ok(0, STORE_WRITE, &[p, l, VAL, 3, 0]);
        // A transaction cannot exceed the quota either, at write or at commit.
        let t = f.ok(0, STORE_TXN_START, &[]);
        let (p, l) = path(&f, "in-txn");
        assert_eq!(f.err(0, STORE_WRITE, &[p, l, VAL, 0, t]), Status::NO_SPACE);
        f.ok(0, STORE_TXN_ABORT, &[t]);
        assert_eq!(nodes(&f), MAX_ENTRIES as usize);
        // Free everything; the quota is whole again.
        for i in 0..MAX_ENTRIES {
            let (p, l) = path(&f, &format!("n{i}"));
            f.ok(0, STORE_REMOVE, &[p, l, 0]);
        }
        assert_eq!(nodes(&f), 0);
    }
    // Host-written nodes count against the guest's quota (STORE-19).
    for i in 0..MAX_ENTRIES / 2 {
        f.vm.store_write(&format!("h{i}"), b"", GuestAccess::READ_WRITE)
            .expect("host");
    }
    for i in 0..MAX_ENTRIES / 2 {
        let (p, l) = path(&f, &format!("g{i}"));
        f.ok(0, STORE_WRITE, &[p, l, VAL, 0, 0]);
    }
    let (p, l) = path(&f, "g-extra");
    assert_eq!(f.err(0, STORE_WRITE, &[p, l, VAL, 0, 0]), Status::NO_SPACE);
    // Values: 4096 bytes accepted, 4097 refused, for the guest and for host writes.
    let (p, l) = path(&f, "g0");
    f.ok(0, STORE_WRITE, &[p, l, VAL, MAX_VALUE, 0]);
    assert_eq!(
        f.err(0, STORE_WRITE, &[p, l, VAL, MAX_VALUE + 1, 0]),
        Status::NO_SPACE
    );
    assert_eq!(
        f.err(0, HARNESS_STORE_HOST_WRITE, &[p, l, VAL, MAX_VALUE + 1, 3]),
        Status::NO_SPACE
    );
    assert!(f
        .vm
        .store_write("g0", &vec![0; MAX_VALUE as usize + 1], GuestAccess::READ)
        .is_err());
    assert_eq!(
        f.vm.store_read("g0").expect("read").len(),
        MAX_VALUE as usize
    );
    // Paths: 256 bytes accepted, 257 refused.
    let long = "p".repeat(MAX_PATH as usize);
    let (p, l) = path(&f, &long);
    assert_eq!(f.err(0, STORE_READ, &[p, l, VAL, 16, 0]), Status::NOT_FOUND);
    let longer = "p".repeat(MAX_PATH as usize + 1);
    let (p, l) = path(&f, &longer);
    assert_eq!(
        f.err(0, STORE_READ, &[p, l, VAL, 16, 0]),
        Status::INVALID_PARAM
    );
}

#[test]
fn watches_and_the_watch_event_queue() {
    let f = fixture(1);
    let port = f.events(EV, 0);
    let (p, l) = path(&f, "w");
    for cycle in 0..3 {
        let mut ids = BTreeSet::new();
        for _ in 0..MAX_WATCHES {
            assert!(
                ids.insert(f.ok(0, STORE_WATCH, &[p, l, port])),
                "duplicate id"
            );
        }
        assert_eq!(
            f.err(0, STORE_WATCH, &[p, l, port]),
            Status::NO_SPACE,
            "cycle {cycle}"
        );
        for id in &ids {
            f.ok(0, STORE_UNWATCH, &[*id]);
        }
        assert_eq!(
            f.err(0, STORE_UNWATCH, &[*ids.first().expect("one")]),
            Status::NOT_FOUND
        );
    }
    // The queue: MAX_WATCH_EVENTS kept, the rest dropped and counted.
    let w = f.ok(0, STORE_WATCH, &[p, l, port]);
    for cycle in 0..2 {
        let extra = 37;
        for _ in 0..MAX_WATCH_EVENTS + extra {
            f.ok(0, STORE_WRITE, &[p, l, VAL, 0, 0]);
        }
        let mut got = 0;
        let mut dropped = Vec::new();
        loop {
            let r = f.call(0, STORE_WATCH_NEXT, &[VAL, 64]);
            if r.status == Status::NOT_FOUND {
                break;
            }
            assert_eq!(r.status, Status::SUCCESS);
            let d = f.u32_at(VAL + 8);
            dropped.push(d);
            got += 1;
        }
        assert_eq!(got, MAX_WATCH_EVENTS, "cycle {cycle}: events kept");
        assert_eq!(dropped[0], extra, "cycle {cycle}: dropped count");
        assert!(
            dropped[1..].iter().all(|d| *d == 0),
            "dropped reported once"
        );
    }
    // Unwatching discards that watch's queued events.
    for _ in 0..10 {
        f.ok(0, STORE_WRITE, &[p, l, VAL, 0, 0]);
    }
    f.ok(0, STORE_UNWATCH, &[w]);
    assert_eq!(f.err(0, STORE_WATCH_NEXT, &[VAL, 64]), Status::NOT_FOUND);
}

#[test]
fn transactions() {
    let f = fixture(1);
    let (p, l) = path(&f, "t");
    for cycle in 0..4 {
        let mut ids = BTreeSet::new();
        for _ in 0..MAX_TRANSACTIONS {
            let t = f.ok(0, STORE_TXN_START, &[]);
            assert!(ids.insert(t), "txn id reused while open");
            f.ok(0, STORE_WRITE, &[p, l, VAL, 8, t]);
        }
        assert_eq!(
            f.err(0, STORE_TXN_START, &[]),
            Status::NO_SPACE,
            "cycle {cycle}"
        );
        // End them every way: abort, commit, conflicting commit.
        for (i, t) in ids.iter().enumerate() {
            let r = if i % 2 == 0 {
                f.call(0, STORE_TXN_ABORT, &[*t])
            } else {
                f.call(0, STORE_TXN_COMMIT, &[*t])
            };
            assert!(
                r.status == Status::SUCCESS || r.status == Status::CONFLICT,
                "{r:?}"
            );
            assert_eq!(f.err(0, STORE_TXN_ABORT, &[*t]), Status::NOT_FOUND);
        }
    }
}

#[test]
fn event_channels() {
    let f = fixture(2);
    f.ok(0, EVENT_REGISTER_PAGE, &[EV]);
    for cycle in 0..3 {
        let mut all = BTreeSet::new();
        for i in 0..NUM_PORTS - 1 {
            all.insert(f.ok(i % 2, EVENT_ALLOC, &[]));
        }
        assert_eq!(all.len(), NUM_PORTS as usize - 1);
        assert!(!all.contains(&0));
        assert_eq!(
            f.err(0, EVENT_ALLOC, &[]),
            Status::NO_SPACE,
            "cycle {cycle}"
        );
        assert_eq!(ports(&f), NUM_PORTS as usize - 1);
        for p in &all {
            f.ok(0, EVENT_CLOSE, &[*p]);
        }
        assert_eq!(ports(&f), 0);
    }
}

#[test]
fn grant_table() {
    let f = fixture(1);
    assert_eq!(f.ok(0, GRANT_QUERY, &[]), pvabi::grant::MAX_ENTRIES);
    let max = pvabi::grant::MAX_ENTRIES;
    let table = RAM2; // 64 KiB of entries fit in the second region
    f.ok(0, GRANT_SETUP_TABLE, &[table, max]);
    assert_eq!(
        f.err(0, GRANT_SETUP_TABLE, &[table, max + 1]),
        Status::INVALID_PARAM
    );
    // The last entry works; the first reference beyond the table is refused.
    let e = GrantEntry {
        flags: GrantEntry::FLAG_VALID,
        _reserved: 0,
        domid: GrantEntry::DOMID_HOST,
        gfn: 0x3,
    };
    f.ram
        .write_obj(table + (max - 1) * GrantEntry::SIZE as u64, &e)
        .expect("entry");
    f.ok(0, HARNESS_GRANT_ACCESS, &[max - 1, 0, GRANT_ACCESS_READ]);
    assert_eq!(
        f.err(0, HARNESS_GRANT_ACCESS, &[max, 0, GRANT_ACCESS_READ]),
        Status::INVALID_PARAM
    );
    assert!(f.vm.grant_map(max as u32, false).is_err());
    // A table that does not fit in RAM is refused whole.
    assert_eq!(
        f.err(0, GRANT_SETUP_TABLE, &[RAM2_END - 16, 2]),
        Status::INVALID_ADDRESS
    );
    // Re-registering replaces the table (the host keeps one (gpa, entries) pair).
    for _ in 0..100 {
        f.ok(0, GRANT_SETUP_TABLE, &[table, max]);
    }
    f.ok(0, GRANT_SETUP_TABLE, &[0, 0]);
    assert_eq!(
        f.err(0, HARNESS_GRANT_ACCESS, &[0, 0, GRANT_ACCESS_READ]),
        Status::BAD_STATE
    );
}

#[test]
fn timers_one_per_vcpu() {
    let f = fixture(4);
    f.ok(0, EVENT_REGISTER_PAGE, &[EV]);
    let port = f.ok(0, EVENT_ALLOC, &[]);
    // Arming again replaces: after 1000 SET_TIMER calls on each vCPU, one deadline each.
    for v in 0..4u32 {
        for i in 0..1000u64 {
            f.ok(v, CLOCK_SET_TIMER, &[1_000_000 + i * 10 + v as u64, port]);
        }
    }
    assert_eq!(f.vm.next_deadline(), Some(1_000_000 + 999 * 10));
    // Firing everything raises the port once per vCPU timer at most (pending is one bit),
    // and nothing stays armed.
    f.set_now(u64::MAX / 2);
    f.vm.poll_timers();
    assert_eq!(f.vm.next_deadline(), None);
    // Cancelling leaves nothing either.
    f.ok(0, CLOCK_SET_TIMER, &[u64::MAX - 1, port]);
    f.ok(0, CLOCK_SET_TIMER, &[pvabi::clock::TIMER_CANCEL, 0]);
    assert_eq!(f.vm.next_deadline(), None);
    // Closing the port disarms timers that would raise it.
    f.ok(1, CLOCK_SET_TIMER, &[u64::MAX - 1, port]);
    f.ok(0, EVENT_CLOSE, &[port]);
    assert_eq!(f.vm.next_deadline(), None);
}

#[test]
fn console_buffers() {
    let mut cfg = VmConfig::new(1);
    cfg.harness = true;
    cfg.console_history = 1000;
    cfg.console_input_limit = 3000;
    let f = fixture_with(cfg);
    // Transfers: 4096 bytes per call.
    let max = pvabi::console::MAX_TRANSFER;
    assert_eq!(f.ok(0, CONSOLE_WRITE, &[BUF, max]), max);
    assert_eq!(
        f.err(0, CONSOLE_WRITE, &[BUF, max + 1]),
        Status::INVALID_PARAM
    );
    assert_eq!(
        f.err(0, CONSOLE_READ, &[BUF, max + 1]),
        Status::INVALID_PARAM
    );
    // History stays at its configured size however much is written.
    for _ in 0..600 {
        f.ok(0, CONSOLE_WRITE, &[BUF, max]);
    }
    assert_eq!(f.vm.console_history().len(), 1000);
    // Output not yet taken by the backend is bounded (1 MiB here): 2.4 MiB were written.
    let new = f.vm.take_console_output();
    assert!(
        new.len() <= 1 << 20,
        "{} bytes of untaken output",
        new.len()
    );
    assert!(f.vm.take_console_output().is_empty());
    // Input: the limit is enforced for the host and through HARNESS.
    f.vm.console_input(&[b'x'; 3000]).expect("up to the limit");
    assert!(f.vm.console_input(b"y").is_err());
    assert_eq!(f.err(0, HARNESS_CONSOLE_INPUT, &[BUF, 1]), Status::NO_SPACE);
    for _ in 0..3 {
        assert_eq!(f.ok(0, CONSOLE_READ, &[BUF, 1000]), 1000);
    }
    assert_eq!(f.ok(0, CONSOLE_READ, &[BUF, 1000]), 0);
    // Draining frees the whole limit again.
    f.ok(0, HARNESS_CONSOLE_INPUT, &[BUF, 3000]);
    assert_eq!(f.err(0, HARNESS_CONSOLE_INPUT, &[BUF, 1]), Status::NO_SPACE);
}

#[test]
fn report_records() {
    let f = fixture(1);
    let mut rec = Vec::new();
    for w in [ReportHeader::MAGIC, 0, 5, 1, 0, 0] {
        rec.extend_from_slice(&w.to_le_bytes());
    }
    rec.extend_from_slice(b"EVT-1n");
    f.put(BUF, &rec);
    let len = rec.len() as u64;
    assert_eq!(
        f.err(0, HARNESS_REPORT, &[BUF, ReportHeader::MAX_RECORD + 1]),
        Status::INVALID_PARAM
    );
    for cycle in 0..2 {
        for _ in 0..MAX_REPORTS {
            f.ok(0, HARNESS_REPORT, &[BUF, len]);
        }
        assert_eq!(
            f.err(0, HARNESS_REPORT, &[BUF, len]),
            Status::NO_SPACE,
            "cycle {cycle}"
        );
        assert_eq!(f.vm.take_reports().len(), MAX_REPORTS);
        assert!(f.vm.take_reports().is_empty());
    }
}

#[test]
fn batches_rings_and_balloon_calls() {
    let f = fixture(1);
    // Multicall: 256 entries run, 257 refused before any runs.
    let e = MulticallEntry {
        call_id: BASE_GET_ABI_VERSION.0,
        ..MulticallEntry::default()
    };
    for i in 0..257u64 {
        f.ram
            .write_obj(BUF + i * MulticallEntry::SIZE as u64, &e)
            .expect("entry");
    }
    assert_eq!(f.ok(0, MULTICALL_EXECUTE, &[BUF, 256]), 256);
    assert_eq!(
        f.err(0, MULTICALL_EXECUTE, &[BUF, 257]),
        Status::INVALID_PARAM
    );
    // Ring: order 8 at most; at most one ring's worth of requests per doorbell.
    let hdr = RingHeader {
        magic: RingHeader::MAGIC,
        order: 9,
        ..RingHeader::default()
    };
    f.ram.write_obj(RAM2, &hdr).expect("ring");
    assert_eq!(
        f.err(0, BASE_RING_REGISTER, &[RAM2, 9]),
        Status::INVALID_PARAM
    );
    let hdr = RingHeader {
        magic: RingHeader::MAGIC,
        order: 2,
        req_prod: 1000,
        ..RingHeader::default()
    };
    f.ram.write_obj(RAM2, &hdr).expect("ring");
    f.ok(0, BASE_RING_REGISTER, &[RAM2, 2]);
    // A producer index claiming more than the ring holds runs nothing.
    assert_eq!(f.vm.process_ring(), 0);
    f.ram
        .store_u32(
            RAM2 + RingHeader::REQ_PROD as u64,
            4,
            std::sync::atomic::Ordering::SeqCst,
        )
        .expect("prod");
    assert_eq!(f.vm.process_ring(), 4);
    // Four more published, but the guest consumed no completion: the ring is full.
    let prod = RAM2 + RingHeader::REQ_PROD as u64;
    let cons = RAM2 + RingHeader::CMP_CONS as u64;
    use std::sync::atomic::Ordering::SeqCst;
    f.ram.store_u32(prod, 8, SeqCst).expect("prod");
    assert_eq!(f.vm.process_ring(), 0);
    f.ram.store_u32(cons, 4, SeqCst).expect("cons");
    assert_eq!(f.vm.process_ring(), 4);
    // Balloon: at most 2^20 pages per call.
    assert_eq!(
        f.err(
            0,
            MEMORY_BALLOON_RELEASE,
            &[0, pvabi::memory::MAX_BALLOON_PAGES_PER_CALL + 1]
        ),
        Status::INVALID_PARAM
    );
    assert_eq!(
        f.err(0, MEMORY_BALLOON_RELEASE, &[PAGE_SIZE, 0]),
        Status::INVALID_PARAM
    );
}
