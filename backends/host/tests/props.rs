//! Property tests: the store and event channels against simple models.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use proptest::prelude::*;
use pvabi::call::*;
use pvabi::event::EventPage;
use pvabi::Status;
use pvabi_host::store::{Actor, Store};

// ------------------------------------------------------------------------------- store

/// The model: a map of path -> value where writing creates ancestors with empty values.
#[derive(Clone, Debug, Default, PartialEq)]
struct Model(BTreeMap<String, Vec<u8>>);

impl Model {
    fn write(&mut self, p: &str, v: &[u8]) {
        let mut acc = String::new();
        for c in p.split('/') {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(c);
            self.0.entry(acc.clone()).or_default();
        }
        self.0.insert(p.to_string(), v.to_vec());
    }
    fn remove(&mut self, p: &str) -> bool {
        if !self.0.contains_key(p) {
            return false;
        }
        let pre = format!("{p}/");
        self.0.retain(|k, _| k != p && !k.starts_with(&pre));
        true
    }
    fn list(&self, p: &str) -> Option<Vec<u8>> {
        if !p.is_empty() && !self.0.contains_key(p) {
            return None;
        }
        let pre = if p.is_empty() {
            String::new()
        } else {
            format!("{p}/")
        };
        let mut out = Vec::new();
        for k in self.0.keys() {
            if let Some(rest) = k.strip_prefix(&pre) {
                if !rest.is_empty() && !rest.contains('/') {
                    out.extend_from_slice(rest.as_bytes());
                    out.push(0);
                }
            }
        }
        Some(out)
    }
}

#[derive(Clone, Debug)]
enum SOp {
    Write(String, Vec<u8>),
    Remove(String),
    Read(String),
    List(String),
}

fn path() -> impl Strategy<Value = String> {
    proptest::collection::vec(prop_oneof![Just("a"), Just("b"), Just("c-1")], 1..4)
        .prop_map(|v| v.join("/"))
}

fn sop() -> impl Strategy<Value = SOp> {
    prop_oneof![
        (path(), proptest::collection::vec(any::<u8>(), 0..4)).prop_map(|(p, v)| SOp::Write(p, v)),
        path().prop_map(SOp::Remove),
        path().prop_map(SOp::Read),
        prop_oneof![path(), Just(String::new())].prop_map(SOp::List),
    ]
}

fn apply(s: &mut Store, m: &mut Model, op: &SOp, txn: u32) -> Result<(), TestCaseError> {
    match op {
        SOp::Write(p, v) => {
            prop_assert_eq!(s.write(Actor::Guest, p.as_bytes(), v, txn), Ok(()));
            m.write(p, v);
        }
        SOp::Remove(p) => {
            let r = s.remove(Actor::Guest, p.as_bytes(), txn);
            prop_assert_eq!(r.is_ok(), m.remove(p));
            if r.is_err() {
                prop_assert_eq!(r, Err(Status::NOT_FOUND));
            }
        }
        SOp::Read(p) => {
            let r = s.read(Actor::Guest, p.as_bytes(), txn);
            prop_assert_eq!(r, m.0.get(p).cloned().ok_or(Status::NOT_FOUND));
        }
        SOp::List(p) => {
            let r = s.list(Actor::Guest, p.as_bytes(), txn);
            prop_assert_eq!(r, m.list(p).ok_or(Status::NOT_FOUND));
        }
    }
    Ok(())
}

fn check_same(s: &mut Store, m: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(s.len(), m.0.len());
    for (k, v) in &m.0 {
        prop_assert_eq!(s.read(Actor::Guest, k.as_bytes(), 0), Ok(v.clone()));
    }
    Ok(())
}

/// Whether an operation on `op`'s path could depend on a change of `other`: the same node, an
/// ancestor or a descendant (the root is everyone's ancestor).
fn touches(op: &SOp, other: &str) -> bool {
    let p = match op {
        SOp::Write(p, _) | SOp::Read(p) | SOp::Remove(p) | SOp::List(p) => p.as_str(),
    };
    let below = |a: &str, b: &str| a.is_empty() || a == b || b.starts_with(&format!("{a}/"));
    below(p, other) || below(other, p)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model(ops in proptest::collection::vec(sop(), 0..40)) {
        let mut s = Store::default();
        let mut m = Model::default();
        for op in &ops {
            apply(&mut s, &mut m, op, 0)?;
        }
        check_same(&mut s, &m)?;
    }

    #[test]
    fn transactions_are_serializable(
        before in proptest::collection::vec(sop(), 0..10),
        inside in proptest::collection::vec(sop(), 1..8),
        outside in proptest::collection::vec(sop(), 0..4),
    ) {
        let mut s = Store::default();
        let mut m = Model::default();
        for op in &before {
            apply(&mut s, &mut m, op, 0)?;
        }
        let t = s.txn_start().map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        // Inside the transaction: the snapshot plus its own changes.
        let mut mt = m.clone();
        for op in &inside {
            apply(&mut s, &mut mt, op, t)?;
        }
        // Concurrent changes outside.
        let mut changed = BTreeSet::new();
        for op in &outside {
            if let SOp::Write(p, _) | SOp::Remove(p) = op {
                let old = m.clone();
                apply(&mut s, &mut m, op, 0)?;
                if old.0.contains_key(p) || m.0.contains_key(p) {
                    changed.insert(p.clone());
                }
                // Implicitly created ancestors and removed descendants changed too.
                for k in old.0.keys().chain(m.0.keys()) {
                    if old.0.get(k) != m.0.get(k) {
                        changed.insert(k.clone());
                    }
                }
            }
        }
        let r = s.txn_commit(t);
        let conflict_possible = changed.iter().any(|c| inside.iter().any(|op| touches(op, c)));
        match r {
            Ok(()) => {
                // Serialisable: outside changes, then the transaction's writes.
                let mut expect = m.clone();
                for op in &inside {
                    match op {
                        SOp::Write(p, v) => expect.write(p, v),
                        SOp::Remove(p) => { expect.remove(p); }
                        _ => {}
                    }
                }
                check_same(&mut s, &expect)?;
            }
            Err(e) => {
                prop_assert_eq!(e, Status::CONFLICT);
                prop_assert!(conflict_possible, "conflict without a related concurrent change");
                check_same(&mut s, &m)?;
            }
        }
        if !conflict_possible {
            prop_assert!(r.is_ok(), "conflict though no related node changed");
        }
        prop_assert_eq!(s.open_transactions(), 0);
    }
}

// ------------------------------------------------------------------------------ events

#[derive(Clone, Debug)]
enum EOp {
    Alloc(u32),
    Close(u64),
    Send(u64),
    Mask(u64),
    Unmask(u64),
    Bind(u64, u64),
    /// The guest clears a pending bit and its vCPU's upcall_pending, as a handler would.
    Ack(u64),
}

fn eop() -> impl Strategy<Value = EOp> {
    let port = prop_oneof![1u64..8, 60u64..70, Just(0u64), Just(1023), Just(1024)];
    prop_oneof![
        (0u32..2).prop_map(EOp::Alloc),
        port.clone().prop_map(EOp::Close),
        port.clone().prop_map(EOp::Send),
        port.clone().prop_map(EOp::Mask),
        port.clone().prop_map(EOp::Unmask),
        (port.clone(), 0u64..3).prop_map(|(p, v)| EOp::Bind(p, v)),
        port.prop_map(EOp::Ack),
    ]
}

#[derive(Default)]
struct EModel {
    bound: BTreeMap<u64, u32>,
    pending: BTreeSet<u64>,
    mask: BTreeSet<u64>,
    selector: [u64; 2],
    upcall: [u32; 2],
}

impl EModel {
    fn check(&self, p: u64) -> Result<u32, Status> {
        if p == 0 || p >= 1024 {
            return Err(Status::INVALID_PARAM);
        }
        self.bound.get(&p).copied().ok_or(Status::NOT_FOUND)
    }
    fn deliver(&mut self, p: u64) {
        let v = self.bound[&p] as usize;
        self.selector[v] |= 1 << (p / 64);
        self.upcall[v] = 1;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn event_channels_match_model(ops in proptest::collection::vec(eop(), 0..60)) {
        let f = fixture(2);
        f.ok(0, EVENT_REGISTER_PAGE, &[0x8000]);
        let ev = 0x8000u64;
        let mut m = EModel::default();
        for op in &ops {
            match *op {
                EOp::Alloc(v) => {
                    let expect = (1..1024u64).find(|p| !m.bound.contains_key(p)).expect("free");
                    prop_assert_eq!(f.ok(v, EVENT_ALLOC, &[]), expect);
                    m.bound.insert(expect, v);
                    m.pending.remove(&expect);
                    m.mask.remove(&expect);
                }
                EOp::Close(p) => {
                    let r = f.call(0, EVENT_CLOSE, &[p]);
                    match m.check(p) {
                        Ok(_) => {
                            prop_assert_eq!(r.status, Status::SUCCESS);
                            m.bound.remove(&p);
                            m.pending.remove(&p);
                        }
                        Err(e) => prop_assert_eq!(r.status, e),
                    }
                }
                EOp::Send(p) => {
                    let r = f.call(0, EVENT_SEND, &[p]);
                    match m.check(p) {
                        Ok(_) => {
                            prop_assert_eq!(r.status, Status::SUCCESS);
                            if m.pending.insert(p) && !m.mask.contains(&p) {
                                m.deliver(p);
                            }
                        }
                        Err(e) => prop_assert_eq!(r.status, e),
                    }
                }
                EOp::Mask(p) => {
                    let r = f.call(0, EVENT_MASK, &[p]);
                    match m.check(p) {
                        Ok(_) => {
                            prop_assert_eq!(r.status, Status::SUCCESS);
                            m.mask.insert(p);
                        }
                        Err(e) => prop_assert_eq!(r.status, e),
                    }
                }
                EOp::Unmask(p) => {
                    let r = f.call(0, EVENT_UNMASK, &[p]);
                    match m.check(p) {
                        Ok(_) => {
                            prop_assert_eq!(r.status, Status::SUCCESS);
                            m.mask.remove(&p);
                            if m.pending.contains(&p) {
                                m.deliver(p);
                            }
                        }
                        Err(e) => prop_assert_eq!(r.status, e),
                    }
                }
                EOp::Bind(p, v) => {
                    let r = f.call(0, EVENT_BIND_VCPU, &[p, v]);
                    match m.check(p) {
                        Err(e) => prop_assert_eq!(r.status, e),
                        Ok(_) if v >= 2 => prop_assert_eq!(r.status, Status::INVALID_PARAM),
                        Ok(cur) if cur as u64 == v => prop_assert_eq!(r.status, Status::ALREADY),
                        Ok(_) => {
                            prop_assert_eq!(r.status, Status::SUCCESS);
                            m.bound.insert(p, v as u32);
                        }
                    }
                }
                EOp::Ack(p) => {
                    if p > 0 && p < 1024 {
                        f.ram.fetch_and_u64(ev + (p / 64) * 8, !(1 << (p % 64))).expect("ack");
                        m.pending.remove(&p);
                        if let Some(&v) = m.bound.get(&p) {
                            let at = ev + EventPage::vcpu_offset(v) as u64 + 8;
                            f.ram.store_u32(at, 0, std::sync::atomic::Ordering::SeqCst).expect("ack");
                            m.upcall[v as usize] = 0;
                        }
                    }
                }
            }
            // The page matches the model after every step.
            for w in 0..16u64 {
                let pend: u64 = m.pending.iter().filter(|p| *p / 64 == w).map(|p| 1 << (p % 64)).sum();
                let mask: u64 = m.mask.iter().filter(|p| *p / 64 == w).map(|p| 1 << (p % 64)).sum();
                prop_assert_eq!(f.u64_at(ev + w * 8), pend, "pending word {}", w);
                prop_assert_eq!(f.u64_at(ev + 128 + w * 8), mask, "mask word {}", w);
            }
            for v in 0..2u32 {
                let info = ev + EventPage::vcpu_offset(v) as u64;
                prop_assert_eq!(f.u64_at(info), m.selector[v as usize]);
                prop_assert_eq!(f.u32_at(info + 8), m.upcall[v as usize]);
            }
        }
    }
}
