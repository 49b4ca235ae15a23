//! Target `dispatch`: arbitrary gate registers and guest-memory contents against a
//! pvabi-host [`Vm`], several calls and host actions per input, with invariants checked
//! after every step.
//!
//! Invariants:
//! * every return (top level, multicall entry, ring request, finished block) carries an ABI
//!   v1 status and value 0 on failure except BUFFER_TOO_SMALL's size (`CONV-6`, `CONV-11`);
//!   an id that does not decode, a HARNESS call without HARNESS, or a call whose feature is
//!   not offered gets NOT_SUPPORTED; a call not allowed in a batch gets INVALID_PARAM there;
//! * guest RAM: a failed call changes no byte (`CONV-13`); a successful call or host action
//!   changes only its output buffers (as the recorder derives them from the registers and
//!   the returned length) and the areas the guest registered for the host to write (event
//!   page, clock pages, steal-time records, ring); the fuzz binaries surround each RAM
//!   region with inaccessible pages, so any access outside RAM faults;
//! * a failed store call leaves the store tree unchanged;
//! * host state against a model: allocated ports and their vCPUs, live watch ids (at most
//!   `MAX_WATCHES`, NO_SPACE exactly at the limit), open transactions (at most
//!   `MAX_TRANSACTIONS`, NO_SPACE exactly at the limit, NOT_FOUND exactly for unknown ids),
//!   store node count within `MAX_ENTRIES` while only the guest writes, console history
//!   within its configured size.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use pvabi::call::{self, ServiceId};
use pvabi::discovery::Features;
use pvabi::event::NUM_PORTS;
use pvabi::grant::GrantEntry;
use pvabi::harness::ReportHeader;
use pvabi::multicall::MulticallEntry;
use pvabi::ring::{RingHeader, RingRequest};
use pvabi::store::{GuestAccess, MAX_ENTRIES, MAX_TRANSACTIONS, MAX_WATCHES};
use pvabi::vcpu::VcpuState;
use pvabi::{CallId, Regs, Ret, Status, PAGE_SIZE};
use pvabi_host::{Call, GuestRam, Outcome, Upcall, Vm, VmConfig};
use zerocopy::IntoBytes;

use super::env::{
    changed, check_ret, clear_ram, covered, pick_arg, pick_call, snapshot, FuzzPlatform, Rec,
    Recorder, RAM_A, RAM_B,
};
use super::input::Input;

/// Most steps one input runs.
const MAX_STEPS: usize = 96;

/// The store tree as the host sees it: every (path, value), in order.
pub fn store_tree(vm: &Vm) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![String::new()];
    while let Some(p) = todo.pop() {
        for c in vm.store_list(&p).unwrap_or_default() {
            let full = if p.is_empty() { c } else { format!("{p}/{c}") };
            let v = vm
                .store_read(&full)
                .expect("listed node readable by the host");
            out.push((full.clone(), v));
            todo.push(full);
        }
    }
    out.sort();
    out
}

/// The feature a call needs to be offered, if any.
fn feature_of(id: u64) -> Option<Features> {
    let is = |c: CallId| id == c.0 as u64;
    if is(call::GRANT_SETUP_TABLE) || is(call::GRANT_QUERY) {
        Some(Features::GRANT)
    } else if is(call::MULTICALL_EXECUTE) {
        Some(Features::MULTICALL)
    } else if is(call::BASE_RING_REGISTER) || is(call::BASE_RING_UNREGISTER) {
        Some(Features::RING_GATE)
    } else if is(call::CLOCK_REGISTER_PAGE) || is(call::CLOCK_UNREGISTER_PAGE) {
        Some(Features::CLOCK_PAGE)
    } else if is(call::CLOCK_SET_TIMER) {
        Some(Features::TIMER)
    } else if is(call::VCPU_REGISTER_STEAL_TIME) {
        Some(Features::STEAL_TIME)
    } else if is(call::MEMORY_BALLOON_RELEASE)
        || is(call::MEMORY_BALLOON_RECLAIM)
        || is(call::MEMORY_BALLOON_QUERY)
    {
        Some(Features::BALLOON)
    } else if is(call::STORE_TXN_START) || is(call::STORE_TXN_COMMIT) || is(call::STORE_TXN_ABORT) {
        Some(Features::STORE_TXN)
    } else if is(call::POWER_REGISTER_CRASH_BUFFER) {
        Some(Features::CRASH_BUFFER)
    } else {
        None
    }
}

/// Where a call came from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Origin {
    Top,
    Multicall,
    Ring,
}

thread_local! {
    /// When set, counts each call id's results (successes, failures) as [`Model`] sees them.
    pub static STATS: std::cell::RefCell<Option<BTreeMap<u64, (u64, u64)>>> =
        const { std::cell::RefCell::new(None) };
}

/// The host-state model.
struct Model {
    vcpus: u32,
    harness: bool,
    features: Features,
    event_page: bool,
    ports: BTreeMap<u32, u32>,
    watches: BTreeSet<u32>,
    txns: BTreeSet<u32>,
    host_wrote: bool,
    recent: Vec<u64>,
}

impl Model {
    fn remember(&mut self, v: u64) {
        if self.recent.len() >= 16 {
            self.recent.remove(0);
        }
        self.recent.push(v);
    }

    /// Checks one recorded call and updates the model.
    fn apply(&mut self, rec: &Rec, origin: Origin) {
        let what = format!("{origin:?} call {:#x} {:x?}", rec.regs.rax, rec.regs.args);
        STATS.with(|s| {
            if let Some(m) = s.borrow_mut().as_mut() {
                let e = m.entry(rec.regs.rax).or_default();
                if rec.ok() {
                    e.0 += 1;
                } else {
                    e.1 += 1;
                }
            }
        });
        let Some(r) = rec.ret() else {
            return;
        };
        check_ret(&what, r);
        let id = rec.regs.rax;
        let [a0, a1, ..] = rec.regs.args;
        let decoded = Call::decode(&rec.regs);
        let Ok(c) = decoded else {
            assert_eq!(r, Ret::err(Status::NOT_SUPPORTED), "{what}: undecodable id");
            return;
        };
        if origin != Origin::Top
            && (!c.allowed_in_batch()
                || (origin == Origin::Ring
                    && matches!(c, Call::RingRegister { .. } | Call::RingUnregister)))
        {
            assert_eq!(
                r,
                Ret::err(Status::INVALID_PARAM),
                "{what}: not allowed in a batch"
            );
            return;
        }
        if c.is_harness() && !self.harness {
            assert_eq!(
                r,
                Ret::err(Status::NOT_SUPPORTED),
                "{what}: HARNESS not offered"
            );
            return;
        }
        if let Some(f) = feature_of(id) {
            if !self.features.contains(f) {
                assert_eq!(r, Ret::err(Status::NOT_SUPPORTED), "{what}: feature off");
                return;
            }
        }
        let ok = r.status.is_success();
        if ok {
            self.remember(r.value);
        }

        let valid_port = |p: u64| p != 0 && p < NUM_PORTS as u64;
        let is = |x: CallId| id == x.0 as u64;
        if is(call::EVENT_REGISTER_PAGE) && ok {
            assert!(!self.event_page, "{what}: second event page accepted");
            self.event_page = true;
        } else if is(call::EVENT_ALLOC) {
            if ok {
                let p = u32::try_from(r.value).expect("port fits");
                assert!(valid_port(r.value), "{what}: port {p} out of range");
                assert!(self.event_page, "{what}: alloc without event page");
                assert!(
                    self.ports.insert(p, rec.vcpu).is_none(),
                    "{what}: port {p} allocated twice"
                );
            } else if r.status == Status::NO_SPACE {
                assert_eq!(
                    self.ports.len(),
                    NUM_PORTS as usize - 1,
                    "{what}: early NO_SPACE"
                );
            } else {
                assert_eq!(r.status, Status::BAD_STATE, "{what}");
                assert!(!self.event_page, "{what}: BAD_STATE with an event page");
            }
        } else if is(call::EVENT_CLOSE)
            || is(call::EVENT_SEND)
            || is(call::EVENT_MASK)
            || is(call::EVENT_UNMASK)
            || is(call::EVENT_BIND_VCPU)
        {
            if self.event_page && valid_port(a0) {
                let known = self.ports.get(&(a0 as u32)).copied();
                if known.is_none() {
                    assert_eq!(r.status, Status::NOT_FOUND, "{what}: unallocated port");
                } else if is(call::EVENT_BIND_VCPU) {
                    if a1 >= self.vcpus as u64 {
                        assert_eq!(r.status, Status::INVALID_PARAM, "{what}");
                    } else if known == Some(a1 as u32) {
                        assert_eq!(r.status, Status::ALREADY, "{what}");
                    } else {
                        assert!(ok, "{what}: bind of an allocated port failed");
                    }
                } else {
                    assert!(ok, "{what}: allocated port refused");
                }
            } else {
                assert!(
                    !ok,
                    "{what}: accepted without event page or with a bad port"
                );
            }
            if ok && is(call::EVENT_CLOSE) {
                self.ports.remove(&(a0 as u32));
            }
            if ok && is(call::EVENT_BIND_VCPU) {
                self.ports.insert(a0 as u32, a1 as u32);
            }
        } else if is(call::STORE_WATCH) {
            if ok {
                let w = u32::try_from(r.value).expect("watch id fits");
                assert!(
                    self.watches.insert(w),
                    "{what}: watch id {w} reused while live"
                );
                assert!(
                    self.watches.len() <= MAX_WATCHES as usize,
                    "{what}: too many watches"
                );
            } else if r.status == Status::NO_SPACE {
                assert_eq!(
                    self.watches.len(),
                    MAX_WATCHES as usize,
                    "{what}: early NO_SPACE"
                );
            }
        } else if is(call::STORE_UNWATCH) {
            let live = u32::try_from(a0).is_ok_and(|w| self.watches.contains(&w));
            assert_eq!(ok, live, "{what}: unwatch result vs model");
            if ok {
                self.watches.remove(&(a0 as u32));
            } else if u32::try_from(a0).is_ok() {
                assert_eq!(r.status, Status::NOT_FOUND, "{what}");
            }
        } else if is(call::STORE_TXN_START) {
            if ok {
                let t = u32::try_from(r.value).expect("txn id fits");
                assert_ne!(t, 0, "{what}: txn id 0");
                assert!(self.txns.insert(t), "{what}: txn id {t} reused while open");
                assert!(
                    self.txns.len() <= MAX_TRANSACTIONS as usize,
                    "{what}: too many txns"
                );
            } else {
                assert_eq!(r.status, Status::NO_SPACE, "{what}");
                assert_eq!(
                    self.txns.len(),
                    MAX_TRANSACTIONS as usize,
                    "{what}: early NO_SPACE"
                );
            }
        } else if is(call::STORE_TXN_COMMIT) || is(call::STORE_TXN_ABORT) {
            match u32::try_from(a0) {
                Ok(0) | Err(_) => assert_eq!(r.status, Status::INVALID_PARAM, "{what}"),
                Ok(t) => {
                    if self.txns.remove(&t) {
                        let fine: &[Status] = if is(call::STORE_TXN_ABORT) {
                            &[Status::SUCCESS]
                        } else {
                            &[
                                Status::SUCCESS,
                                Status::CONFLICT,
                                Status::NO_SPACE,
                                Status::DENIED,
                            ]
                        };
                        assert!(
                            fine.contains(&r.status),
                            "{what}: open txn ended with {r:?}"
                        );
                    } else {
                        assert_eq!(r.status, Status::NOT_FOUND, "{what}: unknown txn");
                    }
                }
            }
        } else if is(call::HARNESS_STORE_HOST_WRITE) && ok {
            self.host_wrote = true;
        }
    }
}

/// Writes `data` into guest RAM at `gpa`, clipped to the region it starts in.
fn poke(ram: &GuestRam, gpa: u64, data: &[u8]) {
    for (b, l) in ram.regions() {
        if gpa >= b && gpa < b + l {
            let room = (b + l - gpa) as usize;
            let n = data.len().min(room);
            ram.write_bytes(gpa, &data[..n]).expect("poke inside RAM");
        }
    }
}

/// A GPA inside one of the regions.
fn ram_gpa(input: &mut Input<'_>) -> u64 {
    let off = input.u16() as u64;
    if input.u8() & 3 == 0 {
        RAM_B.0 + off % RAM_B.1
    } else {
        RAM_A.0 + off % RAM_A.1
    }
}

/// A store path, mostly valid, sometimes with `..`, `.`, empty components, leading or
/// trailing slashes, invalid bytes or overlong.
pub fn store_path(input: &mut Input<'_>) -> Vec<u8> {
    const PARTS: [&[u8]; 14] = [
        b"a", b"b", b"c", b"..", b".", b"", b"x_1", b"dev-0", b"\0", b"%", b"A.b", b"0", b"d", b"e",
    ];
    let n = 1 + input.u8() as usize % 5;
    let mut p = Vec::new();
    let lead = input.u8();
    if lead == 0xff {
        p.push(b'/');
    }
    for i in 0..n {
        if i > 0 {
            p.push(b'/');
        }
        let k = input.u8() as usize;
        p.extend_from_slice(PARTS[k % PARTS.len()]);
    }
    if lead == 0xfe {
        p.push(b'/');
    }
    if lead == 0xfd {
        p.resize(300, b'z');
    }
    p
}

/// Runs one input of the `dispatch` target against guest RAM `ram` (cleared first).
///
/// # Panics
///
/// When an invariant is violated.
pub fn run(data: &[u8], ram: &GuestRam) {
    clear_ram(ram);
    let mut input = Input::new(data);
    let c0 = input.u8();
    let c1 = input.u8();
    let vcpus = 1 + (c0 % 4) as u32;
    let harness = c0 & 0x80 == 0;
    let platform = FuzzPlatform::new(c0 & 0x40 != 0);
    let mut cfg = VmConfig::new(vcpus);
    cfg.harness = harness;
    if c1 & 1 != 0 {
        cfg.features = VmConfig::ALL_FEATURES - Features::from_bits_truncate(input.u16() as u64);
    }
    cfg.console_history = 1 + (c1 as usize >> 1) * 64;
    cfg.console_input_limit = 1 + (c1 as usize >> 1) * 64;
    let rec = Recorder::new(ram.clone());
    cfg.hook = Some(rec.clone());
    let vm = Vm::new(cfg, ram.clone(), platform.clone()).expect("valid config");
    let features = vm.features();
    let mut m = Model {
        vcpus,
        harness,
        features,
        event_page: false,
        ports: BTreeMap::new(),
        watches: BTreeSet::new(),
        txns: BTreeSet::new(),
        host_wrote: false,
        recent: Vec::new(),
    };
    let mut steps = 0;
    while !input.is_empty() && steps < MAX_STEPS {
        steps += 1;
        let op = input.u8() % 10;
        match op {
            5 => {
                let gpa = ram_gpa(&mut input);
                let n = input.u8() as usize % 72;
                let bytes = input.bytes(n);
                poke(ram, gpa, bytes);
            }
            6 => structured(&mut input, ram, &rec, &m.recent),
            7 => {
                if host_action(&mut input, &vm, ram, &rec, &platform, &mut m) {
                    break;
                }
            }
            _ => {
                if gate_call(&mut input, &vm, ram, &rec, &mut m) {
                    break;
                }
            }
        }
    }
    // Host state against the model.
    for p in 0..NUM_PORTS {
        assert_eq!(
            vm.port_binding(p),
            m.ports.get(&p).copied(),
            "port {p} binding vs model"
        );
    }
    let nodes = store_tree(&vm).len();
    if !m.host_wrote {
        assert!(nodes <= MAX_ENTRIES as usize, "{nodes} store nodes");
    }
    assert!(vm.console_history().len() <= vm.config().console_history);
}

/// One gate call. Returns true when the guest shut down.
fn gate_call(
    input: &mut Input<'_>,
    vm: &Vm,
    ram: &GuestRam,
    rec: &Recorder,
    m: &mut Model,
) -> bool {
    let vsel = input.u8();
    let v = if vsel == 0xff {
        m.vcpus
    } else {
        vsel as u32 % m.vcpus
    };
    let sel = input.u8();
    let raw = if sel >= 240 { input.u64() } else { 0 };
    let rax = pick_call(sel, raw);
    let mut args = [0u64; 6];
    for a in &mut args {
        *a = pick_arg(input, &m.recent);
    }
    let regs = Regs { rax, args };
    if v >= m.vcpus {
        assert_eq!(
            vm.handle_call(v, &regs),
            Outcome::Return(Ret::err(Status::FAILED)),
            "call from a vCPU outside the VM"
        );
        assert!(rec.take().0.is_empty());
        return false;
    }
    match vm.vcpu_state(v) {
        Some(VcpuState::RUNNING) => {}
        Some(VcpuState::BLOCKED) => {
            if let Some(r) = vm.finish_block(v) {
                check_ret("finish_block", r);
            }
            return false;
        }
        Some(VcpuState::START_PENDING) => {
            vm.vcpu_started(v);
            return false;
        }
        _ => return false,
    }
    let store_call = (rax >> 16) == ServiceId::STORE.0 as u64
        || rax == call::MULTICALL_EXECUTE.0 as u64
        || rax == call::HARNESS_STORE_HOST_WRITE.0 as u64;
    let tree_before = store_call.then(|| store_tree(vm));
    let before = snapshot(ram);
    rec.begin();
    let out = vm.handle_call(v, &regs);
    let (recs, allowed) = rec.take();
    let after = snapshot(ram);
    let top = recs.last().expect("the top-level call is recorded");
    assert_eq!(top.regs, regs);
    assert_eq!(top.outcome, out);
    let n = recs.len();
    for (i, r) in recs.iter().enumerate() {
        m.apply(
            r,
            if i + 1 == n {
                Origin::Top
            } else {
                Origin::Multicall
            },
        );
    }
    let diff = changed(ram, &before, &after);
    if top.ok() {
        for g in &diff {
            assert!(
                covered(&allowed, *g),
                "call {rax:#x} {args:x?} wrote GPA {g:#x} outside its buffers and shared areas"
            );
        }
    } else {
        assert!(
            diff.is_empty(),
            "failed call {rax:#x} {args:x?} -> {out:?} changed guest RAM at {:#x?} (CONV-13)",
            &diff[..diff.len().min(8)]
        );
        if let Some(t) = tree_before {
            assert_eq!(t, store_tree(vm), "failed call {rax:#x} changed the store");
        }
    }
    matches!(out, Outcome::Shutdown { .. })
}

/// Guest-side writes of whole structures the host reads: multicall arrays, grant entries,
/// store paths, rings and requests, report records, event-page words.
fn structured(input: &mut Input<'_>, ram: &GuestRam, rec: &Recorder, recent: &[u64]) {
    let areas = rec.areas();
    match input.u8() % 6 {
        0 => {
            let gpa = (input.u16() as u64 & !7) % RAM_A.1;
            let n = 1 + input.u8() as u64 % 8;
            for i in 0..n {
                let sel = input.u8();
                let raw = if sel >= 240 { input.u64() } else { 0 };
                let f = input.u8();
                let mut e = MulticallEntry {
                    call_id: pick_call(sel, raw) as u32,
                    flags: if f < 200 { (f & 1) as u32 } else { f as u32 },
                    ..MulticallEntry::default()
                };
                for a in &mut e.args {
                    *a = pick_arg(input, recent);
                }
                let _ = ram.write_obj(gpa + i * MulticallEntry::SIZE as u64, &e);
            }
        }
        1 => {
            let table = match areas.grant {
                Some((t, _)) if input.u8() & 1 == 0 => t,
                _ => (input.u16() as u64 & !15) % RAM_A.1,
            };
            let idx = input.u8() as u64;
            let fl = input.u8();
            let e = GrantEntry {
                flags: (fl & 7) as u16,
                _reserved: 0,
                domid: if fl & 0x80 == 0 { 0 } else { input.u8() as u32 },
                gfn: match input.u8() % 4 {
                    0 => input.u64(),
                    _ => input.u8() as u64 % 20,
                },
            };
            let _ = ram.write_obj(table + idx * GrantEntry::SIZE as u64, &e);
        }
        2 => {
            let gpa = ram_gpa(input);
            let p = store_path(input);
            poke(ram, gpa, &p);
        }
        3 => {
            let base = match areas.ring {
                Some((r, _)) if input.u8() & 1 == 0 => r,
                _ => (input.u8() as u64 % 8) * PAGE_SIZE,
            };
            let order = input.u8() as u32 % 10;
            let hdr = RingHeader {
                magic: if input.u8() < 250 {
                    RingHeader::MAGIC
                } else {
                    input.u32()
                },
                order,
                req_prod: input.u8() as u32,
                req_cons: 0,
                cmp_prod: 0,
                cmp_cons: input.u8() as u32,
                ..RingHeader::default()
            };
            let _ = ram.write_obj(base, &hdr);
            let n = input.u8() as u64 % 6;
            for i in 0..n {
                let sel = input.u8();
                let raw = if sel >= 240 { input.u64() } else { 0 };
                let mut req = RingRequest {
                    cookie: i as u32,
                    call_id: pick_call(sel, raw) as u32,
                    ..RingRequest::default()
                };
                for a in &mut req.args {
                    *a = pick_arg(input, recent);
                }
                let at = base + RingHeader::SIZE as u64 + i * RingRequest::SIZE as u64;
                let _ = ram.write_obj(at, &req);
            }
        }
        4 => {
            let gpa = ram_gpa(input);
            let n = input.u8() as usize % 48;
            let text = input.bytes(n).to_vec();
            let hdr = ReportHeader {
                magic: if input.u8() < 240 {
                    ReportHeader::MAGIC
                } else {
                    0
                },
                outcome: input.u8() as u32 % 5,
                clauses_len: input.u8() as u32 % 20,
                name_len: input.u8() as u32 % 20,
                detail_len: input.u8() as u32 % 20,
                _reserved: 0,
            };
            let mut b = hdr.as_bytes().to_vec();
            b.extend_from_slice(&text);
            poke(ram, gpa, &b);
        }
        _ => {
            let page = areas.event_page.unwrap_or(0);
            let off = (input.u16() as u64 % PAGE_SIZE) & !7;
            let v = input.u64();
            let _ = ram.write_bytes(page + off, &v.to_le_bytes());
        }
    }
}

/// One host-side action. Returns true when the guest shut down.
fn host_action(
    input: &mut Input<'_>,
    vm: &Vm,
    ram: &GuestRam,
    rec: &Recorder,
    platform: &Arc<FuzzPlatform>,
    m: &mut Model,
) -> bool {
    let before = snapshot(ram);
    rec.begin();
    let sub = input.u8() % 12;
    let v = input.u8() as u32 % m.vcpus;
    match sub {
        0 => {
            let ns = input.u32() as u64;
            let now = platform.now.load(Ordering::SeqCst);
            platform.now.store(now.saturating_add(ns), Ordering::SeqCst);
            vm.poll_timers();
        }
        1 => vm.poll_timers(),
        2 => {
            vm.process_ring();
        }
        3 => {
            let p = pick_arg(input, &m.recent) as u32;
            let r = vm.inject_event(p);
            let expect = m.event_page && p != 0 && m.ports.contains_key(&p);
            assert_eq!(r.is_ok(), expect, "inject_event({p}) -> {r:?}");
        }
        4 => {
            let p = store_path(input);
            let n = input.u8() as usize % 16;
            let val = input.bytes(n).to_vec();
            let access = [
                GuestAccess::NONE,
                GuestAccess::READ,
                GuestAccess::READ_WRITE,
            ][input.u8() as usize % 3];
            let ps = String::from_utf8_lossy(&p).into_owned();
            if vm.store_write(&ps, &val, access).is_ok() {
                m.host_wrote = true;
            }
        }
        5 => {
            if let Some(Upcall::Callback { .. }) = vm.take_upcall(v) {
                let frame = pvabi::event::UpcallFrame {
                    rip: input.u64(),
                    rsp: input.u64(),
                    rflags: input.u64(),
                    ..Default::default()
                };
                vm.enter_callback(v, &frame)
                    .expect("callback entry after take_upcall said so");
            }
        }
        6 => {
            if let Err(s) = vm.leave_callback(v) {
                assert!(Status::ALL.contains(&s));
            }
        }
        7 => {
            let n = input.u8() as usize;
            let b = input.bytes(n).to_vec();
            let _ = vm.console_input(&b);
        }
        8 => {
            let _ = vm.take_console_output();
            let _ = vm.take_reports();
        }
        9 => {
            let p = store_path(input);
            let _ = vm.store_remove(&String::from_utf8_lossy(&p));
        }
        10 => {
            vm.add_steal_time(v, input.u16() as u64);
            vm.refresh_clock_pages();
        }
        _ => {
            let gref = pick_arg(input, &m.recent) as u32;
            let mut b = [0u8; 8];
            let off = input.u16() as u64 % (PAGE_SIZE + 8);
            let _ = vm.grant_read(gref, off, &mut b);
            let _ = vm.grant_map(gref, input.u8() & 1 == 0);
        }
    }
    let (recs, allowed) = rec.take();
    for r in &recs {
        m.apply(r, Origin::Ring);
    }
    let after = snapshot(ram);
    for g in changed(ram, &before, &after) {
        assert!(
            covered(&allowed, g),
            "host action {sub} wrote GPA {g:#x} outside the guest's shared areas"
        );
    }
    vm.shutdown_state().is_some()
}
