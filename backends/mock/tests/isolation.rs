//! Isolation between two mock guests in one process: guest A, running on its own vCPU
//! threads, uses every service with guest B's identifiers (ports, grant references, watch
//! and transaction ids, store paths including escapes, vCPU ids, B's registered guest
//! functions, B's gate context, GPAs that exist only in B) and B's state is unchanged.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pvabi::call::*;
use pvabi::event::UpcallMode;
use pvabi::grant::GrantEntry;
use pvabi::harness::GRANT_ACCESS_READ;
use pvabi::power::ShutdownReason;
use pvabi::store::GuestAccess;
use pvabi::{CallId, Regs, Ret, Status};
use pvabi_mock::{BootCtx, Mock, MockConfig, RunEnd};

const EV: u64 = 0x20_0000;
const GNT: u64 = 0x20_1000;
const SHARED: u64 = 0x20_2000;
const BUF: u64 = 0x21_0000;
/// Only B's RAM (8 MiB) reaches this; A has 4 MiB.
const B_HIGH: u64 = 0x70_0000;

fn mock(ram: usize, vcpus: u32) -> Mock {
    Mock::new(MockConfig {
        vcpus,
        ram_size: ram,
        harness: true,
        ..MockConfig::default()
    })
    .expect("mock")
}

fn call(m: &Mock, id: CallId, args: &[u64]) -> Ret {
    let mut a = [0u64; 6];
    a[..args.len()].copy_from_slice(args);
    m.call_as(0, Regs::new(id, a))
}

fn ok(m: &Mock, id: CallId, args: &[u64]) -> u64 {
    let r = call(m, id, args);
    assert_eq!(r.status, Status::SUCCESS, "{id:?} {args:x?}");
    r.value
}

fn put(m: &Mock, gpa: u64, b: &[u8]) -> (u64, u64) {
    m.ram().write_bytes(gpa, b).expect("put");
    (gpa, b.len() as u64)
}

fn ram_of(m: &Mock) -> Vec<u8> {
    let mut v = vec![0; m.ram().size() as usize];
    m.ram().read_into(0, &mut v).expect("ram");
    v
}

fn tree(m: &Mock) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![String::new()];
    while let Some(p) = todo.pop() {
        for c in m.vm().store_list(&p).expect("list") {
            let full = if p.is_empty() { c } else { format!("{p}/{c}") };
            out.push((full.clone(), m.vm().store_read(&full).expect("read")));
            todo.push(full);
        }
    }
    out.sort();
    out
}

#[derive(Clone, Copy)]
struct Ids {
    ports: [u64; 2],
    watch: u64,
    txn: u64,
    grant: u64,
    entry: u64,
    closure: u64,
    gate: BootCtx,
}

fn populate(b: &Mock, called: Arc<AtomicBool>) -> Ids {
    ok(b, EVENT_REGISTER_PAGE, &[EV]);
    let p1 = ok(b, EVENT_ALLOC, &[]);
    let p2 = ok(b, EVENT_ALLOC, &[]);
    let (sp, sl) = put(b, BUF, b"secret/key");
    put(b, BUF + 0x100, b"b-value");
    ok(b, STORE_WRITE, &[sp, sl, BUF + 0x100, 7, 0]);
    b.vm()
        .store_write("host/only", b"h", GuestAccess::NONE)
        .expect("host");
    let (wp, wl) = put(b, BUF + 0x200, b"secret");
    let watch = ok(b, STORE_WATCH, &[wp, wl, p1]);
    let (op, ol) = put(b, BUF + 0x280, b"secret/other");
    ok(b, STORE_WRITE, &[op, ol, BUF + 0x100, 1, 0]);
    let txn = ok(b, STORE_TXN_START, &[]);
    let (tp, tl) = put(b, BUF + 0x300, b"secret/in-txn");
    ok(b, STORE_WRITE, &[tp, tl, BUF + 0x100, 7, txn]);
    let e = GrantEntry {
        flags: GrantEntry::FLAG_VALID,
        _reserved: 0,
        domid: GrantEntry::DOMID_HOST,
        gfn: SHARED / 4096,
    };
    b.ram().write_obj(GNT + 16, &e).expect("grant");
    ok(b, GRANT_SETUP_TABLE, &[GNT, 8]);
    put(b, SHARED, b"shared with the host only");
    put(b, B_HIGH, b"B's data above A's RAM");
    let c2 = called.clone();
    let closure = b.register_closure(move |_, _| c2.store(true, Ordering::SeqCst));
    extern "C" fn entry(_: u64, _: u64) {}
    let entry = b.register_fn(entry);
    Ids {
        ports: [p1, p2],
        watch,
        txn,
        grant: 1,
        entry,
        closure,
        gate: b.boot_ctx(0),
    }
}

/// What A does, on A's own vCPU thread. Returns a failure description, if any.
fn attack(g: BootCtx, ids: Ids) -> Result<(), String> {
    let c = |id: CallId, args: &[u64]| {
        let mut a = [0u64; 6];
        a[..args.len()].copy_from_slice(args);
        g.call(Regs::new(id, a))
    };
    let expect = |what: &str, r: Ret, s: Status| {
        if r.status == s {
            Ok(())
        } else {
            Err(format!("{what}: {r:?}, expected {s:?}"))
        }
    };
    // B's gate context from A's thread.
    let r = ids.gate.call(Regs::new(BASE_GET_VCPU_COUNT, [0; 6]));
    expect("B's gate from A's vCPU", r, Status::FAILED)?;
    let (sp, sl) = (BUF, 10u64);
    g.write(BUF, b"secret/key");
    let r = ids.gate.call(Regs::new(STORE_REMOVE, [sp, sl, 0, 0, 0, 0]));
    expect("B's gate STORE.REMOVE", r, Status::FAILED)?;
    // Addresses only B has.
    let end = g.ram_len as u64;
    for gpa in [end, B_HIGH, u64::MAX - 8] {
        for (id, args) in [
            (CONSOLE_WRITE, vec![gpa, 8]),
            (STORE_READ, vec![gpa, 6, BUF, 64, 0]),
            (STORE_WRITE, vec![BUF, 1, gpa, 8, 0]),
            (EVENT_REGISTER_PAGE, vec![gpa & !4095]),
            (GRANT_SETUP_TABLE, vec![gpa & !15, 4]),
            (MULTICALL_EXECUTE, vec![gpa & !7, 1]),
            (HARNESS_CONSOLE_READBACK, vec![gpa, 8]),
        ] {
            let r = c(id, &args);
            if r.status == Status::SUCCESS {
                return Err(format!("{id:?} at {gpa:#x} succeeded in A"));
            }
        }
    }
    // B's ports, after registering A's own page.
    expect(
        "A's event page",
        c(EVENT_REGISTER_PAGE, &[EV]),
        Status::SUCCESS,
    )?;
    for p in ids.ports {
        for id in [
            EVENT_SEND,
            EVENT_MASK,
            EVENT_UNMASK,
            EVENT_CLOSE,
            HARNESS_INJECT_EVENT,
        ] {
            expect(&format!("{id:?} {p}"), c(id, &[p]), Status::NOT_FOUND)?;
        }
    }
    // B's ids, paths and grant.
    expect("unwatch", c(STORE_UNWATCH, &[ids.watch]), Status::NOT_FOUND)?;
    expect("commit", c(STORE_TXN_COMMIT, &[ids.txn]), Status::NOT_FOUND)?;
    expect("abort", c(STORE_TXN_ABORT, &[ids.txn]), Status::NOT_FOUND)?;
    expect(
        "watch next",
        c(STORE_WATCH_NEXT, &[BUF, 64]),
        Status::NOT_FOUND,
    )?;
    for p in [&b"secret/key"[..], b"host/only", b"secret/in-txn"] {
        g.write(BUF, p);
        let r = c(STORE_READ, &[BUF, p.len() as u64, BUF + 0x800, 64, 0]);
        expect("read B's path", r, Status::NOT_FOUND)?;
        let r = c(STORE_READ, &[BUF, p.len() as u64, BUF + 0x800, 64, ids.txn]);
        expect("read in B's txn", r, Status::NOT_FOUND)?;
    }
    for p in [
        &b"../secret"[..],
        b"/secret/key",
        b"..",
        b"/",
        b"a/../../secret",
    ] {
        g.write(BUF, p);
        let r = c(STORE_READ, &[BUF, p.len() as u64, BUF + 0x800, 64, 0]);
        expect("escaping path", r, Status::INVALID_PARAM)?;
        let r = c(STORE_WRITE, &[BUF, p.len() as u64, BUF, 1, 0]);
        expect("escaping write", r, Status::INVALID_PARAM)?;
    }
    let r = c(HARNESS_GRANT_ACCESS, &[ids.grant, 0, GRANT_ACCESS_READ]);
    expect("B's grant", r, Status::BAD_STATE)?;
    // vCPUs and guest functions of B.
    expect("kick", c(VCPU_KICK, &[2]), Status::INVALID_PARAM)?;
    let r = c(VCPU_START, &[1, ids.entry, 0x1000, 0]);
    if r.status == Status::SUCCESS {
        return Err("A started a vCPU at B's entry".into());
    }
    // B's callback token as A's upcall target: A's event reaches no function of B.
    let r = c(
        EVENT_SET_UPCALL,
        &[UpcallMode::CALLBACK.0 as u64, ids.closure],
    );
    expect("A's own upcall mode", r, Status::SUCCESS)?;
    let p = c(EVENT_ALLOC, &[]);
    expect("A's own port", p, Status::SUCCESS)?;
    expect("A's own send", c(EVENT_SEND, &[p.value]), Status::SUCCESS)?;
    expect(
        "call boundary",
        c(BASE_GET_ABI_VERSION, &[]),
        Status::SUCCESS,
    )?;
    Ok(())
}

#[test]
fn two_mock_guests_cannot_reach_each_other() {
    let called = Arc::new(AtomicBool::new(false));
    let b = mock(8 << 20, 4);
    let ids = populate(&b, called.clone());
    let before = (
        ram_of(&b),
        tree(&b),
        b.vm().console_history(),
        b.trace().len(),
    );
    let ports_before: Vec<_> = (0..1024).map(|p| b.vm().port_binding(p)).collect();

    let a = mock(4 << 20, 2);
    let result = Arc::new(std::sync::Mutex::new(None));
    let r2 = result.clone();
    a.start(move |g| {
        let r = attack(g, ids);
        *r2.lock().expect("result") = Some(r);
        g.call(Regs::new(POWER_SHUTDOWN, [0; 6]));
    });
    let end = a.wait_timeout(Duration::from_secs(60));
    assert_eq!(
        end,
        Some(RunEnd::Shutdown {
            reason: ShutdownReason::POWEROFF,
            code: 0
        })
    );
    let r = result.lock().expect("result").take().expect("guest ran");
    r.unwrap_or_else(|e| panic!("A reached B: {e}"));

    assert!(ram_of(&b) == before.0, "B's RAM changed");
    assert_eq!(tree(&b), before.1, "B's store changed");
    assert_eq!(b.vm().console_history(), before.2, "B's console changed");
    assert_eq!(b.trace().len(), before.3, "calls were made on B");
    let ports_after: Vec<_> = (0..1024).map(|p| b.vm().port_binding(p)).collect();
    assert_eq!(ports_before, ports_after, "B's ports changed");
    assert!(
        !called.load(Ordering::SeqCst),
        "B's guest function ran for A"
    );
    assert!(b.ended().is_none(), "B ended");
    // B still works with its own identifiers.
    assert_eq!(ok(&b, STORE_WATCH_NEXT, &[BUF + 0x2000, 64]), 16 + 12);
    ok(&b, STORE_TXN_COMMIT, &[ids.txn]);
    let mut g = [0u8; 6];
    b.vm()
        .grant_read(ids.grant as u32, 0, &mut g)
        .expect("grant");
    assert_eq!(&g, b"shared");
    ok(&b, EVENT_SEND, &[ids.ports[1]]);
    ok(&b, STORE_UNWATCH, &[ids.watch]);
}
