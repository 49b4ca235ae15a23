//! Target `store`: sequences of store operations (guest and host, live and inside
//! transactions, watches and their event queue) against a model written from the documented
//! semantics of `pvabi_host::store`.
//!
//! Checked after every operation: the result equals the model's (values, listings, access
//! denials, quotas, NOT_FOUND for unknown transactions and watches), the node count and each
//! node's owner equal the model's, the ports raised and the watch event queue (ids, paths,
//! dropped count) equal the model's. For transactions: reads inside see the snapshot plus the
//! transaction's own changes; a commit reports CONFLICT only when a node the transaction
//! depended on changed since it started, never otherwise; a successful commit is
//! serialisable (every read, listing and refused write the transaction observed gives the same
//! answer against the live store at commit time, and its writes and removals then apply);
//! a failed commit changes nothing.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use pvabi::store::{
    valid_path, GuestAccess, MAX_ENTRIES, MAX_TRANSACTIONS, MAX_VALUE, MAX_WATCHES,
    MAX_WATCH_EVENTS,
};
use pvabi::Status;
use pvabi_host::store::{Actor, Owner, Store};
use pvabi_host::Quirks;

use super::input::Input;

type Tree = BTreeMap<Vec<u8>, (Vec<u8>, Owner)>;

fn parent(p: &[u8]) -> &[u8] {
    match p.iter().rposition(|b| *b == b'/') {
        Some(i) => &p[..i],
        None => &[],
    }
}

fn below(p: &[u8], anc: &[u8]) -> bool {
    anc.is_empty() || p == anc || (p.starts_with(anc) && p.get(anc.len()) == Some(&b'/'))
}

fn can_read(o: Owner) -> bool {
    match o {
        Owner::Guest => true,
        Owner::Host(a) => a.0 & 1 != 0,
    }
}

fn can_write(o: Owner) -> bool {
    match o {
        Owner::Guest => true,
        Owner::Host(a) => a.0 & 2 != 0,
    }
}

fn descendants(t: &Tree, p: &[u8]) -> Vec<Vec<u8>> {
    t.keys()
        .filter(|k| k.as_slice() != p && below(k, p))
        .cloned()
        .collect()
}

/// Model read.
fn m_read(t: &Tree, guest: bool, p: &[u8]) -> Result<Vec<u8>, Status> {
    if !valid_path(p, false) {
        return Err(Status::INVALID_PARAM);
    }
    let (v, o) = t.get(p).ok_or(Status::NOT_FOUND)?;
    if guest && !can_read(*o) {
        return Err(Status::DENIED);
    }
    Ok(v.clone())
}

/// Model list.
fn m_list(t: &Tree, guest: bool, p: &[u8]) -> Result<Vec<u8>, Status> {
    if !valid_path(p, true) {
        return Err(Status::INVALID_PARAM);
    }
    if !p.is_empty() {
        let (_, o) = t.get(p).ok_or(Status::NOT_FOUND)?;
        if guest && !can_read(*o) {
            return Err(Status::DENIED);
        }
    }
    let mut names: Vec<&[u8]> = t
        .keys()
        .filter(|k| !k.is_empty() && k.as_slice() != p && parent(k) == p)
        .map(|k| {
            if p.is_empty() {
                &k[..]
            } else {
                &k[p.len() + 1..]
            }
        })
        .collect();
    names.sort();
    let mut out = Vec::new();
    for n in names {
        out.extend_from_slice(n);
        out.push(0);
    }
    Ok(out)
}

/// Model write; returns the nodes created.
fn m_write(t: &mut Tree, actor: Actor, p: &[u8], v: &[u8]) -> Result<Vec<Vec<u8>>, Status> {
    if !valid_path(p, false) {
        return Err(Status::INVALID_PARAM);
    }
    if v.len() as u64 > MAX_VALUE {
        return Err(Status::NO_SPACE);
    }
    let guest = actor == Actor::Guest;
    let owner = match actor {
        Actor::Guest => Owner::Guest,
        Actor::Host(a) => Owner::Host(a),
    };
    let mut created = Vec::new();
    if let Some((_, o)) = t.get(p) {
        if guest && !can_write(*o) {
            return Err(Status::DENIED);
        }
    } else {
        created.push(p.to_vec());
        let mut a = parent(p);
        while !a.is_empty() && !t.contains_key(a) {
            created.push(a.to_vec());
            a = parent(a);
        }
        if guest {
            if let Some((_, o)) = t.get(a) {
                if !can_write(*o) {
                    return Err(Status::DENIED);
                }
            }
            if t.len() + created.len() > MAX_ENTRIES as usize {
                return Err(Status::NO_SPACE);
            }
        }
        for c in &created {
            t.insert(c.clone(), (Vec::new(), owner));
        }
    }
    let e = t.get_mut(p).expect("just ensured");
    e.0 = v.to_vec();
    if !guest {
        e.1 = owner;
    }
    Ok(created)
}

/// Model remove; returns the nodes removed.
fn m_remove(t: &mut Tree, guest: bool, p: &[u8]) -> Result<Vec<Vec<u8>>, Status> {
    if !valid_path(p, false) {
        return Err(Status::INVALID_PARAM);
    }
    let (_, o) = t.get(p).ok_or(Status::NOT_FOUND)?;
    let desc = descendants(t, p);
    if guest && (!can_write(*o) || desc.iter().any(|d| !can_write(t[d].1))) {
        return Err(Status::DENIED);
    }
    for d in &desc {
        t.remove(d);
    }
    t.remove(p);
    let mut all = desc;
    all.push(p.to_vec());
    Ok(all)
}

/// What a transaction observed, in order.
#[derive(Clone, Debug)]
enum Obs {
    Read(Vec<u8>, Result<Vec<u8>, Status>),
    List(Vec<u8>, Result<Vec<u8>, Status>),
    Write(Vec<u8>, Vec<u8>, Result<(), Status>),
    Remove(Vec<u8>, Result<(), Status>),
}

#[derive(Clone, Debug)]
struct MTxn {
    view: Tree,
    obs: Vec<Obs>,
    /// Paths the transaction depends on, and whether their set of children matters.
    deps: BTreeMap<Vec<u8>, bool>,
    /// Paths whose value or existence changed in the live store since the start.
    changed: BTreeSet<Vec<u8>>,
    /// Paths whose set of children changed in the live store since the start.
    kids_changed: BTreeSet<Vec<u8>>,
}

impl MTxn {
    fn dep(&mut self, p: &[u8], kids: bool) {
        *self.deps.entry(p.to_vec()).or_insert(false) |= kids;
    }
}

struct Model {
    live: Tree,
    watches: BTreeMap<u32, (Vec<u8>, u32)>,
    queue: VecDeque<(u32, Vec<u8>)>,
    dropped: u32,
    raised: Vec<u32>,
    txns: BTreeMap<u32, MTxn>,
}

impl Model {
    fn fire(&mut self, changed: &[u8], removed: bool) {
        for (id, (w, port)) in &self.watches {
            if below(changed, w) || (removed && below(w, changed)) {
                if self.queue.len() >= MAX_WATCH_EVENTS as usize {
                    self.dropped = self.dropped.saturating_add(1);
                } else {
                    self.queue.push_back((*id, changed.to_vec()));
                }
                self.raised.push(*port);
            }
        }
    }

    /// Records a live change for every open transaction.
    fn live_changed(&mut self, written: Option<&[u8]>, created: &[Vec<u8>], removed: &[Vec<u8>]) {
        for t in self.txns.values_mut() {
            if let Some(w) = written {
                t.changed.insert(w.to_vec());
            }
            for c in created.iter().chain(removed) {
                t.changed.insert(c.clone());
                t.kids_changed.insert(parent(c).to_vec());
            }
        }
    }
}

fn path(input: &mut Input<'_>) -> Vec<u8> {
    const PARTS: [&[u8]; 6] = [b"a", b"b", b"c", b"d-1", b"e.2", b"f_3"];
    let sel = input.u8();
    if sel >= 240 {
        // Malformed: the classes the ABI rejects.
        return match sel {
            240 => b"".to_vec(),
            241 => b"/a".to_vec(),
            242 => b"a/".to_vec(),
            243 => b"a//b".to_vec(),
            244 => b"a/../b".to_vec(),
            245 => b"./a".to_vec(),
            246 => vec![b'a'; 257],
            247 => vec![b'a'; 256],
            248 => b"a/b\0".to_vec(),
            249 => b"a b".to_vec(),
            _ => input.bytes(8).to_vec(),
        };
    }
    let depth = 1 + sel as usize % 4;
    let mut p = Vec::new();
    for i in 0..depth {
        if i > 0 {
            p.push(b'/');
        }
        p.extend_from_slice(PARTS[input.u8() as usize % PARTS.len()]);
    }
    p
}

fn value(input: &mut Input<'_>) -> Vec<u8> {
    match input.u8() {
        250 => vec![7; MAX_VALUE as usize],
        251 => vec![8; MAX_VALUE as usize + 1],
        n => input.bytes(n as usize % 12).to_vec(),
    }
}

fn access(input: &mut Input<'_>) -> GuestAccess {
    [
        GuestAccess::NONE,
        GuestAccess::READ,
        GuestAccess::READ_WRITE,
    ][input.u8() as usize % 3]
}

fn txn_sel(input: &mut Input<'_>, m: &Model) -> u32 {
    let s = input.u8();
    if s < 110 {
        0
    } else if s < 250 && !m.txns.is_empty() {
        *m.txns
            .keys()
            .nth(s as usize % m.txns.len())
            .expect("nonempty")
    } else {
        s as u32 % 40
    }
}

/// Runs one input of the `store` target.
///
/// # Panics
///
/// When the store and the model disagree.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let mut s = Store::new(Quirks::empty());
    let mut m = Model {
        live: Tree::new(),
        watches: BTreeMap::new(),
        queue: VecDeque::new(),
        dropped: 0,
        raised: Vec::new(),
        txns: BTreeMap::new(),
    };
    let mut steps = 0;
    while !input.is_empty() && steps < 200 {
        steps += 1;
        step(&mut input, &mut s, &mut m);
        // Whole-state checks.
        assert_eq!(s.len(), m.live.len(), "node count");
        assert_eq!(
            s.take_raised(),
            std::mem::take(&mut m.raised),
            "ports raised"
        );
        assert_eq!(s.queued_events(), m.queue.len(), "queued watch events");
        assert_eq!(
            s.peek_event().map(|e| (e.watch_id, e.path, e.dropped)),
            m.queue.front().map(|(w, p)| (*w, p.clone(), m.dropped)),
            "next watch event"
        );
        assert_eq!(s.open_transactions(), m.txns.len(), "open transactions");
        assert!(m.watches.len() <= MAX_WATCHES as usize);
        assert!(m.txns.len() <= MAX_TRANSACTIONS as usize);
    }
    for (k, (v, o)) in &m.live {
        assert_eq!(
            s.owner(k),
            Some(*o),
            "owner of {:?}",
            String::from_utf8_lossy(k)
        );
        assert_eq!(
            s.read(Actor::Host(GuestAccess::READ_WRITE), k, 0).as_ref(),
            Ok(v)
        );
    }
}

fn step(input: &mut Input<'_>, s: &mut Store, m: &mut Model) {
    let op = input.u8() % 14;
    match op {
        0..=2 => {
            let host = op == 2;
            let p = path(input);
            let v = value(input);
            let actor = if host {
                Actor::Host(access(input))
            } else {
                Actor::Guest
            };
            let txn = if host { 0 } else { txn_sel(input, m) };
            let r = s.write(actor, &p, &v, txn);
            if txn == 0 {
                let mr = m_write(&mut m.live, actor, &p, &v);
                assert_eq!(r, mr.as_ref().map(|_| ()).map_err(|e| *e), "write {p:?}");
                if let Ok(created) = mr {
                    m.live_changed(Some(&p), &created, &[]);
                    m.fire(&p, false);
                }
            } else {
                txn_write(m, txn, &p, &v, r);
            }
        }
        3 | 4 => {
            let p = if op == 4 && input.u8() < 40 {
                Vec::new()
            } else {
                path(input)
            };
            let txn = txn_sel(input, m);
            let r = if op == 3 {
                s.read(Actor::Guest, &p, txn)
            } else {
                s.list(Actor::Guest, &p, txn)
            };
            let valid = valid_path(&p, op == 4);
            let expect = if txn == 0 {
                if op == 3 {
                    m_read(&m.live, true, &p)
                } else {
                    m_list(&m.live, true, &p)
                }
            } else if !valid {
                Err(Status::INVALID_PARAM)
            } else if let Some(t) = m.txns.get_mut(&txn) {
                t.dep(&p, op == 4);
                let e = if op == 3 {
                    m_read(&t.view, true, &p)
                } else {
                    m_list(&t.view, true, &p)
                };
                t.obs.push(if op == 3 {
                    Obs::Read(p.clone(), e.clone())
                } else {
                    Obs::List(p.clone(), e.clone())
                });
                e
            } else {
                Err(Status::NOT_FOUND)
            };
            assert_eq!(r, expect, "read/list {p:?} txn {txn}");
        }
        5 | 6 => {
            let host = op == 6;
            let p = path(input);
            let txn = if host { 0 } else { txn_sel(input, m) };
            let actor = if host {
                Actor::Host(GuestAccess::READ_WRITE)
            } else {
                Actor::Guest
            };
            let r = s.remove(actor, &p, txn);
            if txn == 0 {
                let mr = m_remove(&mut m.live, !host, &p);
                assert_eq!(r, mr.as_ref().map(|_| ()).map_err(|e| *e), "remove {p:?}");
                if let Ok(removed) = mr {
                    m.live_changed(None, &[], &removed);
                    m.fire(&p, true);
                }
            } else if !valid_path(&p, false) {
                assert_eq!(r, Err(Status::INVALID_PARAM));
            } else if let Some(t) = m.txns.get_mut(&txn) {
                t.dep(&p, true);
                for d in descendants(&t.view, &p) {
                    t.dep(&d, true);
                }
                let e = m_remove(&mut t.view, true, &p).map(|_| ());
                t.obs.push(Obs::Remove(p.clone(), e));
                assert_eq!(r, e, "txn remove {p:?}");
            } else {
                assert_eq!(r, Err(Status::NOT_FOUND));
            }
        }
        7 => {
            let p = path(input);
            let port = input.u16() as u32;
            let r = s.watch(&p, port);
            if !valid_path(&p, false) {
                assert_eq!(r, Err(Status::INVALID_PARAM));
            } else if m.watches.len() >= MAX_WATCHES as usize {
                assert_eq!(r, Err(Status::NO_SPACE));
            } else {
                let id = r.expect("watch below the limit");
                assert!(
                    !m.watches.contains_key(&id),
                    "watch id {id} reused while live"
                );
                m.watches.insert(id, (p, port));
            }
        }
        8 => {
            let sel = input.u8();
            let id = if sel < 200 && !m.watches.is_empty() {
                *m.watches
                    .keys()
                    .nth(sel as usize % m.watches.len())
                    .expect("nonempty")
            } else {
                sel as u32
            };
            let r = s.unwatch(id);
            if m.watches.remove(&id).is_some() {
                assert_eq!(r, Ok(()));
                m.queue.retain(|(w, _)| *w != id);
            } else {
                assert_eq!(r, Err(Status::NOT_FOUND));
            }
        }
        9 => {
            s.pop_event();
            if m.queue.pop_front().is_some() {
                m.dropped = 0;
            }
        }
        10 => {
            let r = s.txn_start();
            if m.txns.len() >= MAX_TRANSACTIONS as usize {
                assert_eq!(r, Err(Status::NO_SPACE));
            } else {
                let id = r.expect("txn below the limit");
                assert_ne!(id, 0);
                assert!(!m.txns.contains_key(&id), "txn id {id} reused while open");
                m.txns.insert(
                    id,
                    MTxn {
                        view: m.live.clone(),
                        obs: Vec::new(),
                        deps: BTreeMap::new(),
                        changed: BTreeSet::new(),
                        kids_changed: BTreeSet::new(),
                    },
                );
            }
        }
        11 => {
            let txn = txn_sel(input, m);
            if input.u8() & 1 == 0 {
                let r = s.txn_abort(txn);
                assert_eq!(r.is_ok(), m.txns.remove(&txn).is_some(), "abort {txn}");
                if r.is_err() {
                    assert_eq!(r, Err(Status::NOT_FOUND));
                }
            } else {
                commit(s, m, txn);
            }
        }
        12 => {
            // Fill towards the node quota quickly.
            let n = input.u8() as usize * 4;
            let tag = input.u8() % 4;
            for i in 0..n {
                let p = format!("q{tag}/n{i}").into_bytes();
                let r = s.write(Actor::Guest, &p, b"", 0);
                let mr = m_write(&mut m.live, Actor::Guest, &p, b"");
                assert_eq!(r, mr.as_ref().map(|_| ()).map_err(|e| *e), "fill {i}");
                if let Ok(created) = mr {
                    m.live_changed(Some(&p), &created, &[]);
                    m.fire(&p, false);
                }
                if r.is_err() {
                    break;
                }
            }
        }
        _ => {
            // Host removes a whole fill subtree.
            let p = format!("q{}", input.u8() % 4).into_bytes();
            let r = s.remove(Actor::Host(GuestAccess::READ_WRITE), &p, 0);
            let mr = m_remove(&mut m.live, false, &p);
            assert_eq!(r, mr.as_ref().map(|_| ()).map_err(|e| *e));
            if let Ok(removed) = mr {
                m.live_changed(None, &[], &removed);
                m.fire(&p, true);
            }
        }
    }
}

fn txn_write(m: &mut Model, txn: u32, p: &[u8], v: &[u8], r: Result<(), Status>) {
    if !valid_path(p, false) {
        assert_eq!(r, Err(Status::INVALID_PARAM));
        return;
    }
    if v.len() as u64 > MAX_VALUE {
        assert_eq!(r, Err(Status::NO_SPACE));
        return;
    }
    let Some(t) = m.txns.get_mut(&txn) else {
        assert_eq!(r, Err(Status::NOT_FOUND), "write in unknown txn {txn}");
        return;
    };
    let mut a = p;
    loop {
        t.dep(a, false);
        if a.is_empty() {
            break;
        }
        a = parent(a);
    }
    let e = m_write(&mut t.view, Actor::Guest, p, v).map(|_| ());
    assert_eq!(r, e, "txn write {p:?}");
    t.obs.push(Obs::Write(p.to_vec(), v.to_vec(), e));
}

fn commit(s: &mut Store, m: &mut Model, txn: u32) {
    let r = s.txn_commit(txn);
    let Some(t) = m.txns.remove(&txn) else {
        assert_eq!(r, Err(Status::NOT_FOUND), "commit of unknown txn {txn}");
        return;
    };
    let related = t
        .deps
        .iter()
        .any(|(p, kids)| t.changed.contains(p) || (*kids && t.kids_changed.contains(p)));
    if r == Err(Status::CONFLICT) {
        assert!(
            related,
            "CONFLICT though nothing the transaction used changed"
        );
        return;
    }
    // Replay the transaction against the live model: observations must hold (serialisable),
    // its writes and removals apply.
    let mut live = m.live.clone();
    let mut applied: Vec<(Vec<u8>, bool, Vec<Vec<u8>>)> = Vec::new();
    let mut failure = None;
    for o in &t.obs {
        match o {
            Obs::Read(p, seen) => {
                assert_eq!(&m_read(&live, true, p), seen, "read {p:?} not serialisable");
            }
            Obs::List(p, seen) => {
                assert_eq!(&m_list(&live, true, p), seen, "list {p:?} not serialisable");
            }
            Obs::Write(p, v, seen) => {
                // A write refused for the quota inside the transaction says nothing about
                // the store's contents: it is neither replayed nor checked.
                if *seen == Err(Status::NO_SPACE) {
                    continue;
                }
                // The model mutates only on success, so no copy is needed; a refused write
                // that would now succeed fails the assertion below.
                let now = m_write(&mut live, Actor::Guest, p, v);
                match (seen, now) {
                    (Ok(()), Ok(created)) => {
                        applied.push((p.clone(), false, created));
                    }
                    (Ok(()), Err(e)) => {
                        failure.get_or_insert(e);
                    }
                    (Err(e), now) => assert_eq!(
                        Err(*e),
                        now.map(|_| ()),
                        "refused write {p:?} not serialisable"
                    ),
                }
            }
            Obs::Remove(p, seen) => {
                let now = m_remove(&mut live, true, p);
                match (seen, now) {
                    (Ok(()), Ok(removed)) => {
                        applied.push((p.clone(), true, removed));
                    }
                    (Ok(()), Err(e)) => {
                        failure.get_or_insert(e);
                    }
                    (Err(e), now) => assert_eq!(
                        Err(*e),
                        now.map(|_| ()),
                        "refused remove {p:?} not serialisable"
                    ),
                }
            }
        }
        if failure.is_some() {
            break;
        }
    }
    if let Some(e) = failure {
        assert_eq!(r, Err(e), "commit result vs replay");
        return;
    }
    assert_eq!(r, Ok(()), "commit result vs replay");
    m.live = live;
    for (p, removed, nodes) in applied {
        if removed {
            m.live_changed(None, &[], &nodes);
        } else {
            m.live_changed(Some(&p), &nodes, &[]);
        }
        m.fire(&p, removed);
    }
}
