//! Isolation between two guests in one process: guest A uses every service with guest B's
//! identifiers (ports, grant references, watch ids, transaction ids, store paths, vCPU ids)
//! and with guest-physical addresses that exist only in B, and B's whole state is unchanged
//! afterwards; B then still works as before.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::TestPlatform;
use pvabi::call::*;
use pvabi::grant::GrantEntry;
use pvabi::harness::GRANT_ACCESS_READ;
use pvabi::multicall::MulticallEntry;
use pvabi::ring::RingHeader;
use pvabi::store::GuestAccess;
use pvabi::{CallId, Regs, Ret, Status};
use pvabi_host::{GuestRam, Outcome, Vm, VmConfig};

const EV: u64 = 0x8000;
const GNT: u64 = 0x9000;
const SHARED: u64 = 0xA000;
const RING: u64 = 0xC000;
const CLK: u64 = 0xB000;
const BUF: u64 = 0x1_0000;
/// B's RAM reaches 4 MiB, A's only 1 MiB: B keeps data above A's end.
const B_HIGH: u64 = 0x30_0000;

struct Guest {
    vm: Arc<Vm>,
    ram: GuestRam,
    p: Arc<TestPlatform>,
}

fn guest(ram_size: usize, vcpus: u32) -> Guest {
    let ram = GuestRam::from_ranges(&[(0, ram_size)]).expect("ram");
    let p = Arc::new(TestPlatform::default());
    p.now.store(1_000, Ordering::SeqCst);
    p.virtual_clock.store(true, Ordering::SeqCst);
    let mut cfg = VmConfig::new(vcpus);
    cfg.harness = true;
    let vm = Arc::new(Vm::new(cfg, ram.clone(), p.clone()).expect("vm"));
    Guest { vm, ram, p }
}

impl Guest {
    fn call(&self, id: CallId, args: &[u64]) -> Ret {
        let mut a = [0u64; 6];
        a[..args.len()].copy_from_slice(args);
        match self.vm.handle_call(0, &Regs::new(id, a)) {
            Outcome::Return(r) => r,
            o => panic!("{id:?} did not return: {o:?}"),
        }
    }
    fn ok(&self, id: CallId, args: &[u64]) -> u64 {
        let r = self.call(id, args);
        assert_eq!(r.status, Status::SUCCESS, "{id:?} {args:x?}");
        r.value
    }
    fn put(&self, gpa: u64, b: &[u8]) {
        self.ram.write_bytes(gpa, b).expect("put");
    }
    fn ram_bytes(&self) -> Vec<u8> {
        let mut v = vec![0; self.ram.size() as usize];
        self.ram.read_into(0, &mut v).expect("ram");
        v
    }
    /// A path at BUF + off; returns (gpa, len).
    fn path(&self, off: u64, p: &[u8]) -> (u64, u64) {
        self.put(BUF + off, p);
        (BUF + off, p.len() as u64)
    }
}

/// Everything of a guest's state visible to the host.
#[derive(Debug, PartialEq)]
struct Seen {
    ram: Vec<u8>,
    store: Vec<(String, Vec<u8>)>,
    ports: Vec<Option<u32>>,
    console: Vec<u8>,
    vcpus: Vec<Option<pvabi::vcpu::VcpuState>>,
    time: u64,
}

fn store_tree(vm: &Vm) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![String::new()];
    while let Some(p) = todo.pop() {
        for c in vm.store_list(&p).expect("list") {
            let full = if p.is_empty() { c } else { format!("{p}/{c}") };
            out.push((full.clone(), vm.store_read(&full).expect("read")));
            todo.push(full);
        }
    }
    out.sort();
    out
}

fn seen(g: &Guest) -> Seen {
    Seen {
        ram: g.ram_bytes(),
        store: store_tree(&g.vm),
        ports: (0..1024).map(|p| g.vm.port_binding(p)).collect(),
        console: g.vm.console_history(),
        vcpus: (0..4).map(|v| g.vm.vcpu_state(v)).collect(),
        time: g.p.now.load(Ordering::SeqCst),
    }
}

/// B's identifiers, as a hostile A would guess them.
struct Ids {
    ports: Vec<u64>,
    watch: u64,
    txn: u64,
    grant: u64,
}

/// Gives B state of every kind: event page and ports, store nodes (guest and host written),
/// a watch, an open transaction, a grant table granting the host a page, a clock page, a
/// ring, console output and input, and data above A's RAM.
fn populate(b: &Guest) -> Ids {
    b.ok(EVENT_REGISTER_PAGE, &[EV]);
    let p1 = b.ok(EVENT_ALLOC, &[]);
    let p2 = b.ok(EVENT_ALLOC, &[]);
    b.ok(EVENT_MASK, &[p2]);
    let (sp, sl) = b.path(0, b"secret/key");
    b.put(BUF + 0x100, b"b-value");
    b.ok(STORE_WRITE, &[sp, sl, BUF + 0x100, 7, 0]);
    b.vm.store_write("host/only", b"h", GuestAccess::NONE)
        .expect("host write");
    let (wp, wl) = b.path(0x200, b"secret");
    let watch = b.ok(STORE_WATCH, &[wp, wl, p1]);
    // One watch event queued for B, from B's own write.
    let (op, ol) = b.path(0x280, b"secret/other");
    b.ok(STORE_WRITE, &[op, ol, BUF + 0x100, 1, 0]);
    let txn = b.ok(STORE_TXN_START, &[]);
    let (tp, tl) = b.path(0x300, b"secret/in-txn");
    b.ok(STORE_WRITE, &[tp, tl, BUF + 0x100, 7, txn]);
    let e = GrantEntry {
        flags: GrantEntry::FLAG_VALID,
        _reserved: 0,
        domid: GrantEntry::DOMID_HOST,
        gfn: SHARED / 4096,
    };
    b.ram.write_obj(GNT + 16, &e).expect("grant");
    b.ok(GRANT_SETUP_TABLE, &[GNT, 8]);
    b.put(SHARED, b"shared with the host only");
    b.ok(CLOCK_REGISTER_PAGE, &[CLK]);
    let hdr = RingHeader {
        magic: RingHeader::MAGIC,
        order: 0,
        ..RingHeader::default()
    };
    b.ram.write_obj(RING, &hdr).expect("ring");
    b.ok(BASE_RING_REGISTER, &[RING, 0]);
    b.put(BUF + 0x400, b"b console");
    b.ok(CONSOLE_WRITE, &[BUF + 0x400, 9]);
    b.vm.console_input(b"input for b").expect("input");
    b.put(B_HIGH, b"B's data above A's RAM");
    Ids {
        ports: vec![p1, p2],
        watch,
        txn,
        grant: 1,
    }
}

/// Guest A tries every service with B's identifiers and addresses. A has its own event
/// page (so port checks are reached) but no grant table, ring or watches of its own.
fn attack(a: &Guest, ids: &Ids) {
    let a_end = a.ram.size();
    // Addresses that are RAM only in B.
    for gpa in [a_end, B_HIGH, EV + a_end, u64::MAX - 8] {
        if gpa < a_end {
            continue;
        }
        for (id, args) in [
            (CONSOLE_WRITE, vec![gpa, 8]),
            (CONSOLE_READ, vec![gpa, 8]),
            (CLOCK_REGISTER_PAGE, vec![gpa & !63]),
            (EVENT_REGISTER_PAGE, vec![gpa & !4095]),
            (VCPU_REGISTER_STEAL_TIME, vec![gpa & !63]),
            (MEMORY_GET_MAP, vec![gpa, 4]),
            (MEMORY_BALLOON_RELEASE, vec![gpa & !4095, 1]),
            (GRANT_SETUP_TABLE, vec![gpa & !15, 4]),
            (STORE_READ, vec![gpa, 6, BUF, 64, 0]),
            (STORE_WRITE, vec![BUF, 1, gpa, 8, 0]),
            (STORE_WATCH_NEXT, vec![gpa, 64]),
            (MULTICALL_EXECUTE, vec![gpa & !7, 1]),
            (BASE_RING_REGISTER, vec![gpa & !4095, 0]),
            (POWER_REGISTER_CRASH_BUFFER, vec![gpa & !7, 64]),
            (HARNESS_REPORT, vec![gpa, 64]),
            (HARNESS_CONSOLE_READBACK, vec![gpa, 8]),
            (HARNESS_CONSOLE_INPUT, vec![gpa, 8]),
        ] {
            let r = a.call(id, &args);
            assert_ne!(
                r.status,
                Status::SUCCESS,
                "{id:?} at {gpa:#x} succeeded in A"
            );
        }
    }
    // B's ports: A has an event page of its own but never allocated them.
    a.ok(EVENT_REGISTER_PAGE, &[EV]);
    for &p in &ids.ports {
        for id in [
            EVENT_SEND,
            EVENT_MASK,
            EVENT_UNMASK,
            EVENT_CLOSE,
            HARNESS_INJECT_EVENT,
        ] {
            assert_eq!(
                a.call(id, &[p]).status,
                Status::NOT_FOUND,
                "{id:?} port {p}"
            );
        }
        assert_eq!(a.call(EVENT_BIND_VCPU, &[p, 0]).status, Status::NOT_FOUND);
        assert_eq!(
            a.call(CLOCK_SET_TIMER, &[5_000, p]).status,
            Status::NOT_FOUND
        );
        let (wp, wl) = a.path(0, b"secret");
        assert_eq!(a.call(STORE_WATCH, &[wp, wl, p]).status, Status::NOT_FOUND);
    }
    // B's watch and transaction ids.
    assert_eq!(
        a.call(STORE_UNWATCH, &[ids.watch]).status,
        Status::NOT_FOUND
    );
    assert_eq!(
        a.call(STORE_TXN_COMMIT, &[ids.txn]).status,
        Status::NOT_FOUND
    );
    assert_eq!(
        a.call(STORE_TXN_ABORT, &[ids.txn]).status,
        Status::NOT_FOUND
    );
    let (sp, sl) = a.path(0, b"secret/key");
    assert_eq!(
        a.call(STORE_READ, &[sp, sl, BUF + 0x800, 64, ids.txn])
            .status,
        Status::NOT_FOUND
    );
    assert_eq!(
        a.call(STORE_WRITE, &[sp, sl, BUF, 1, ids.txn]).status,
        Status::NOT_FOUND
    );
    assert_eq!(
        a.call(STORE_WATCH_NEXT, &[BUF, 64]).status,
        Status::NOT_FOUND
    );
    // B's store paths, plain and escaping: A's store is its own; escapes are malformed.
    for p in [
        &b"secret/key"[..],
        b"secret",
        b"host/only",
        b"secret/in-txn",
    ] {
        let (gp, gl) = a.path(0x100, p);
        assert_eq!(
            a.call(STORE_READ, &[gp, gl, BUF + 0x800, 64, 0]).status,
            Status::NOT_FOUND
        );
        assert_eq!(a.call(STORE_REMOVE, &[gp, gl, 0]).status, Status::NOT_FOUND);
        assert_eq!(
            a.call(HARNESS_STORE_HOST_READ, &[gp, gl, BUF + 0x800, 64])
                .status,
            Status::NOT_FOUND
        );
    }
    for p in [
        &b"../secret/key"[..],
        b"/secret/key",
        b"..",
        b"/",
        b"a/../../secret",
        b"./secret",
        b"secret/./key",
        b"\\secret",
        b"secret//key",
        b"~/secret",
    ] {
        let (gp, gl) = a.path(0x100, p);
        for (id, args) in [
            (STORE_READ, vec![gp, gl, BUF + 0x800, 64, 0]),
            (STORE_WRITE, vec![gp, gl, BUF, 1, 0]),
            (STORE_LIST, vec![gp, gl, BUF + 0x800, 64, 0]),
            (STORE_REMOVE, vec![gp, gl, 0]),
            (STORE_WATCH, vec![gp, gl, 1]),
            (HARNESS_STORE_HOST_WRITE, vec![gp, gl, BUF, 1, 3]),
            (HARNESS_STORE_HOST_READ, vec![gp, gl, BUF + 0x800, 64]),
        ] {
            let r = a.call(id, &args);
            assert!(
                r.status == Status::INVALID_PARAM || r.status == Status::NOT_FOUND,
                "{id:?} {:?} -> {r:?}",
                String::from_utf8_lossy(p)
            );
        }
    }
    // A's listing of its root shows none of B's nodes.
    let (rp, _) = a.path(0x100, b"");
    let n = a.ok(STORE_LIST, &[rp, 0, BUF + 0x800, 256, 0]);
    assert_eq!(n, 0, "A's store root lists B's nodes");
    // B's grant reference: A has no table; with a table of its own, the entry is A's memory.
    assert_eq!(
        a.call(HARNESS_GRANT_ACCESS, &[ids.grant, 0, GRANT_ACCESS_READ])
            .status,
        Status::BAD_STATE
    );
    a.ok(GRANT_SETUP_TABLE, &[GNT, 8]);
    assert_eq!(
        a.call(HARNESS_GRANT_ACCESS, &[ids.grant, 0, 0x41]).status,
        Status::DENIED
    );
    assert!(a.vm.grant_map(ids.grant as u32, false).is_err());
    // vCPU ids only B has.
    for v in [1u64, 3] {
        if v < a.vm.config().vcpu_count as u64 {
            continue;
        }
        assert_eq!(a.call(VCPU_KICK, &[v]).status, Status::INVALID_PARAM);
        assert_eq!(a.call(VCPU_GET_STATUS, &[v]).status, Status::INVALID_PARAM);
        assert_eq!(
            a.call(VCPU_START, &[v, 0x1000, 0x2000, 0]).status,
            Status::INVALID_PARAM
        );
    }
    // Ring, console, clock and balloon of A's own: none of it reaches B.
    assert_eq!(a.call(BASE_RING_UNREGISTER, &[]).status, Status::NOT_FOUND);
    assert_eq!(a.call(CLOCK_UNREGISTER_PAGE, &[]).status, Status::NOT_FOUND);
    assert_eq!(
        a.ok(CONSOLE_READ, &[BUF, 64]),
        0,
        "A read B's console input"
    );
    let n = a.ok(HARNESS_CONSOLE_READBACK, &[BUF + 0x800, 64]);
    assert_eq!(n, 0, "A read back B's console output");
    a.put(BUF, b"a console");
    a.ok(CONSOLE_WRITE, &[BUF, 9]);
    a.ok(CLOCK_REGISTER_PAGE, &[CLK]);
    a.ok(HARNESS_CLOCK_ADVANCE, &[1_000_000]);
    a.ok(MEMORY_BALLOON_RELEASE, &[0x2_0000, 4]);
    // A's own state changes, with identical names and numbers, stay in A.
    let p = a.ok(EVENT_ALLOC, &[]);
    assert_eq!(p, ids.ports[0], "A's first port has B's number");
    a.ok(EVENT_SEND, &[p]);
    a.put(BUF + 0x100, b"secret/key");
    a.ok(STORE_WRITE, &[BUF + 0x100, 10, BUF, 4, 0]);
    let t = a.ok(STORE_TXN_START, &[]);
    assert_eq!(t, ids.txn, "A's first transaction has B's number");
    a.ok(STORE_WRITE, &[BUF + 0x100, 6, BUF, 4, t]);
    a.ok(STORE_TXN_COMMIT, &[t]);
    let w = a.ok(STORE_WATCH, &[BUF + 0x100, 6, p]);
    assert_eq!(w, ids.watch, "A's first watch has B's number");
    a.ok(STORE_UNWATCH, &[w]);
    // A multicall of the same attempts.
    let entries = [
        (EVENT_SEND, [ids.ports[1], 0, 0, 0, 0, 0]),
        (STORE_TXN_ABORT, [ids.txn, 0, 0, 0, 0, 0]),
        (CONSOLE_WRITE, [a_end, 8, 0, 0, 0, 0]),
        (STORE_UNWATCH, [ids.watch, 0, 0, 0, 0, 0]),
    ];
    for (i, (id, args)) in entries.iter().enumerate() {
        let e = MulticallEntry {
            call_id: id.0,
            flags: 0,
            args: *args,
            status: 0,
            value: 0,
        };
        a.ram
            .write_obj(BUF + 0x1000 + i as u64 * 72, &e)
            .expect("entry");
    }
    assert_eq!(a.ok(MULTICALL_EXECUTE, &[BUF + 0x1000, 4]), 4);
    for i in 0..4u64 {
        let st: i64 = a.ram.read_obj(BUF + 0x1000 + i * 72 + 56).expect("status");
        assert_ne!(st, 0, "multicall entry {i} succeeded");
    }
}

fn check_isolated(a: &Guest, b: &Guest, ids: &Ids) {
    let before = seen(b);
    attack(a, ids);
    a.vm.poll_timers();
    let after = seen(b);
    assert!(before.ram == after.ram, "B's RAM changed");
    assert_eq!(before.store, after.store, "B's store changed");
    assert_eq!(before.ports, after.ports, "B's ports changed");
    assert_eq!(before.console, after.console, "B's console changed");
    assert_eq!(before.vcpus, after.vcpus, "B's vCPUs changed");
    assert_eq!(before.time, after.time, "B's clock moved");
    assert!(b.vm.take_reports().is_empty());
    // B's own identifiers still work for B.
    b.ram.store_u64(EV, 0, Ordering::SeqCst).expect("ack");
    b.ok(EVENT_SEND, &[ids.ports[0]]);
    assert_ne!(b.ram.load_u64(EV, Ordering::SeqCst).expect("pending"), 0);
    assert_eq!(b.ok(STORE_WATCH_NEXT, &[BUF + 0x2000, 64]), 16 + 12);
    let mut g = [0u8; 6];
    b.vm.grant_read(ids.grant as u32, 0, &mut g).expect("grant");
    assert_eq!(&g, b"shared");
    b.ok(STORE_TXN_COMMIT, &[ids.txn]);
    assert_eq!(
        b.vm.store_read("secret/in-txn").expect("committed"),
        b"b-value"
    );
    assert_eq!(b.ok(CONSOLE_READ, &[BUF + 0x2000, 64]), 11);
    b.ok(STORE_UNWATCH, &[ids.watch]);
    assert_eq!(b.ok(BASE_GET_VCPU_COUNT, &[]), 4);
}

#[test]
fn two_vms_cannot_reach_each_other() {
    let b = guest(4 << 20, 4);
    let ids = populate(&b);
    let a = guest(1 << 20, 1);
    check_isolated(&a, &b, &ids);
}

#[test]
fn isolation_with_identical_layouts() {
    // Same RAM size and vCPU count: every GPA and number of B is also valid in A, so only
    // the per-guest tables separate them.
    let b = guest(4 << 20, 4);
    let ids = populate(&b);
    let a = guest(4 << 20, 4);
    check_isolated(&a, &b, &ids);
    // A now has state of its own; B (already attacked) attacks back with A's numbers, which
    // are B's own numbers: B's calls act on B only.
    let before = seen(&a);
    let pb = b.ok(EVENT_ALLOC, &[]);
    b.ok(EVENT_SEND, &[pb]);
    b.vm.store_write("b-only", b"1", GuestAccess::READ)
        .expect("host write");
    assert!(a.vm.store_read("b-only").is_err());
    assert!(before.ram == seen(&a).ram, "B's calls changed A's RAM");
    assert_eq!(before.store, seen(&a).store);
    assert_eq!(before.ports, seen(&a).ports);
}
