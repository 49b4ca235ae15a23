//! In-memory stand-ins for xenstore, grant tables and event channels, so that the transport's
//! handshake and ring run in ordinary tests, both sides in one process.
//!
//! They model what the transport relies on and no more: [`MemXenStore`] keeps nodes with
//! permission lists and enforces them for unprivileged connections, isolates transactions with
//! xenstored's conflict rule and fires watches as xenstored does (its documentation lists what
//! it models); [`MemGrants`] is a shared memory file whose pages
//! a guest grants and a backend maps (only runs of consecutive pages map); [`MemEvtchn`] connects
//! unbound ports to the domain they were allocated for.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::File;
use std::io;
use std::os::fd::FromRawFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{FileOffset, MmapRegion};

use crate::error::{Error, Result, XsErrno};
use crate::frontend::{GrantAllocator, UnboundChannel};
use crate::ops::{TxnId, WatchEvent, XenStoreOps};
use crate::perms::{Access, Perm};
use crate::sys::PAGE_SIZE;
use crate::transport::{EventChannel, GrantMapper};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One node: value, permission list (owner entry first) and the generation of its last change
/// (value, permissions, or set of children), as xenstored keeps them.
#[derive(Clone, Debug)]
struct Node {
    value: Vec<u8>,
    perms: Vec<Perm>,
    gen: u64,
}

type Nodes = BTreeMap<String, Node>;

/// An open transaction: the store as it was at its start (`base`), that store plus its own
/// changes (`view`), the nodes it accessed (for the conflict rule) and the nodes whose changes
/// fire watches at commit (`fire`: path and whether it was a removal).
#[derive(Debug)]
struct MemTxn {
    conn: u64,
    start_gen: u64,
    base: Nodes,
    view: Nodes,
    accessed: BTreeSet<String>,
    modified: BTreeSet<String>,
    fire: Vec<(String, bool)>,
}

#[derive(Debug)]
struct MemWatch {
    conn: u64,
    domid: u32,
    path: String,
    token: String,
}

/// Most undelivered watch events one connection keeps; further ones are dropped (a connection
/// that registers watches and never reads its events cannot exhaust memory).
const MAX_QUEUED_EVENTS: usize = 1 << 16;

#[derive(Debug, Default)]
struct XsState {
    nodes: Nodes,
    gen: u64,
    txns: BTreeMap<u32, MemTxn>,
    next_txn: u32,
    watches: Vec<MemWatch>,
    queues: BTreeMap<u64, VecDeque<WatchEvent>>,
    next_conn: u64,
}

type Shared = Arc<(Mutex<XsState>, Condvar)>;

/// A connection's identity; the last handle of a connection to go removes its watches, queued
/// events and open transactions, as xenstored does when a connection closes.
#[derive(Debug)]
struct ConnGuard {
    id: u64,
    shared: Shared,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut st = lock(&self.shared.0);
        let id = self.id;
        st.watches.retain(|w| w.conn != id);
        st.queues.remove(&id);
        st.txns.retain(|_, t| t.conn != id);
    }
}

/// A xenstore in memory; [`MemXenStore::connect`] gives one connection per domain.
///
/// What it models of xenstored (C xenstored 4.17 as far as the pvabi backend relies on it):
/// - nodes with values and permission lists; unprivileged connections (domain id not 0) are
///   checked against them (owner: full access; others: their entry, else the owner entry's
///   access); a new node, and each missing ancestor a write creates, inherits the permissions
///   of its nearest existing ancestor, owned by the writer when the writer is unprivileged;
/// - every change bumps a generation stamped on the node changed and, for a creation or a
///   removal, on its parent (whose set of children changed);
/// - transactions: reads see the store as it was at the start plus the transaction's own
///   changes; a commit fails with `EAGAIN`, applying nothing, when any node the transaction
///   accessed (read, listed, asked the permissions of, wrote, created, removed, or found
///   missing) changed after the transaction started; changes made in a transaction are invisible
///   to others until the commit;
/// - watches: registering one queues an event for the watched path at once; each write,
///   permission change or removal of a node fires every watch on that node or an ancestor,
///   naming the node, and a removal also fires, for each node it deletes below the removed one,
///   the watches exactly on that node, naming it (as xenstored 4.17 does: a watch inside the
///   subtree on a node that did not exist gets nothing); a write fires for the node written only, not for the ancestors it
///   creates; a transaction fires at commit, once per node it changed; unprivileged
///   connections only see events of nodes they may read; `destroy_domain` fires
///   `@releaseDomain`.
///
/// Not modelled: quotas, the message size limit, special paths other than `@releaseDomain`
/// and `@introduceDomain` as watch names. [`XenStoreOps::next_watch_event`] waits at most
/// 10 ms, whatever the timeout, so that a caller polling it never blocks long.
#[derive(Clone, Debug)]
pub struct MemXenStore {
    shared: Shared,
    conn: Arc<ConnGuard>,
    domid: u32,
}

impl Default for MemXenStore {
    fn default() -> MemXenStore {
        let shared: Shared = Arc::new((Mutex::new(XsState::default()), Condvar::new()));
        MemXenStore::with_conn(shared, 0)
    }
}

impl MemXenStore {
    /// An empty store with `/local/domain/<d>` for each of `domains` (owned by that domain) and
    /// a privileged connection as domain 0.
    pub fn new(domains: &[u32]) -> MemXenStore {
        let s = MemXenStore::default();
        {
            let mut st = lock(&s.shared.0);
            for p in ["/", "/local", "/local/domain"] {
                st.nodes.insert(
                    p.into(),
                    Node {
                        value: Vec::new(),
                        perms: vec![Perm::new(0, Access::Read)],
                        gen: 0,
                    },
                );
            }
            for d in domains {
                st.nodes.insert(
                    format!("/local/domain/{d}"),
                    Node {
                        value: Vec::new(),
                        perms: vec![Perm::new(*d, Access::None)],
                        gen: 0,
                    },
                );
            }
        }
        s
    }

    fn with_conn(shared: Shared, domid: u32) -> MemXenStore {
        let id = {
            let mut st = lock(&shared.0);
            st.next_conn += 1;
            let id = st.next_conn;
            st.queues.insert(id, VecDeque::new());
            id
        };
        MemXenStore {
            conn: Arc::new(ConnGuard {
                id,
                shared: shared.clone(),
            }),
            shared,
            domid,
        }
    }

    /// Another connection to the same store, as domain `domid` (0 is privileged).
    pub fn connect(&self, domid: u32) -> MemXenStore {
        MemXenStore::with_conn(self.shared.clone(), domid)
    }

    /// Removes a domain's whole subtree (the domain was destroyed) and fires `@releaseDomain`.
    pub fn destroy_domain(&self, domid: u32) {
        let p = format!("/local/domain/{domid}");
        let mut st = lock(&self.shared.0);
        st.gen += 1;
        let gen = st.gen;
        let gone = remove_tree(&mut st.nodes, &p, gen);
        let deleted: Vec<String> = gone.into_iter().filter(|g| *g != p).collect();
        fire(&mut st, &p, &deleted);
        fire(&mut st, "@releaseDomain", &[]);
        self.shared.1.notify_all();
    }

    fn abs(&self, path: &str) -> Result<String> {
        if path.is_empty() || (path.len() > 1 && path.ends_with('/')) || path.contains("//") {
            return Err(Error::Xenstored(XsErrno::Einval));
        }
        Ok(if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/local/domain/{}/{path}", self.domid)
        })
    }

    fn lock(&self) -> MutexGuard<'_, XsState> {
        lock(&self.shared.0)
    }

    /// The transaction `txn` of this connection: `Ok(None)` outside any transaction.
    fn txn_of<'a>(&self, st: &'a mut XsState, txn: TxnId) -> Result<Option<&'a mut MemTxn>> {
        if txn == TxnId::NONE {
            return Ok(None);
        }
        match st.txns.get_mut(&txn.0) {
            Some(t) if t.conn == self.conn.id => Ok(Some(t)),
            _ => Err(Error::Xenstored(XsErrno::Enoent)),
        }
    }
}

/// Whether domain `domid` may read (or write, `want_write`) a node with `perms`.
fn allowed(domid: u32, perms: &[Perm], want_write: bool) -> bool {
    if domid == 0 {
        return true;
    }
    let Some(owner) = perms.first() else {
        return false;
    };
    if owner.domid == domid {
        return true;
    }
    let access = perms[1..]
        .iter()
        .find(|p| p.domid == domid)
        .map_or(owner.access, |p| p.access);
    match access {
        Access::Both => true,
        Access::Read => !want_write,
        Access::Write => want_write,
        Access::None => false,
    }
}

fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// `path` is `base` or below it.
fn at_or_below(path: &str, base: &str) -> bool {
    path == base
        || (path.starts_with(base)
            && (base.ends_with('/') || path.as_bytes().get(base.len()) == Some(&b'/')))
}

/// The nodes strictly below `path`.
fn below(nodes: &Nodes, path: &str) -> Vec<String> {
    let prefix = if path.ends_with('/') {
        path.to_string()
    } else {
        format!("{path}/")
    };
    nodes
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .map(|(k, _)| k.clone())
        .collect()
}

/// Removes `path` and its subtree; stamps the parent. Returns the removed paths.
fn remove_tree(nodes: &mut Nodes, path: &str, gen: u64) -> Vec<String> {
    let mut gone = below(nodes, path);
    if nodes.remove(path).is_some() {
        gone.push(path.to_string());
    }
    for d in &gone {
        nodes.remove(d);
    }
    if let Some(pn) = nodes.get_mut(parent(path)) {
        pn.gen = gen;
    }
    gone
}

/// Queues the events of a change of `path` (a removal when `removed`) for every watch it fires.
fn fire(st: &mut XsState, path: &str, deleted: &[String]) {
    // As xenstored 4.17 deletes a subtree: each deleted node below, deepest first, fires the
    // watches exactly on it; then the node removed (or written) fires those on it and above.
    for d in deleted.iter().rev() {
        fire_one(st, d, true);
    }
    fire_one(st, path, false);
}

/// Queues the events of a change of `path`: for the watches on `path` alone when `exact`, else
/// for those on `path` or an ancestor.
fn fire_one(st: &mut XsState, path: &str, exact: bool) {
    let special = path.starts_with('@');
    let mut hits = Vec::new();
    for w in &st.watches {
        let hit = if special || exact {
            w.path == path
        } else {
            at_or_below(path, &w.path)
        };
        let name = hit.then(|| path.to_string());
        let Some(name) = name else { continue };
        // Unprivileged watchers see only what they may read (as it is, or as it was).
        if w.domid != 0 && !special {
            let perms = perms_for(&st.nodes, &name);
            if !allowed(w.domid, &perms, false) {
                continue;
            }
        }
        hits.push((
            w.conn,
            WatchEvent {
                path: name,
                token: w.token.clone(),
            },
        ));
    }
    for (conn, ev) in hits {
        if let Some(q) = st.queues.get_mut(&conn) {
            if q.len() < MAX_QUEUED_EVENTS {
                q.push_back(ev);
            }
        }
    }
}

/// The permissions that decide an access to `path`: its own, or its nearest existing
/// ancestor's for a node that does not exist.
fn perms_for(nodes: &Nodes, path: &str) -> Vec<Perm> {
    let mut p = path;
    loop {
        if let Some(n) = nodes.get(p) {
            return n.perms.clone();
        }
        if p == "/" {
            return vec![Perm::new(0, Access::None)];
        }
        p = parent(p);
    }
}

/// The outcome of a change on one tree: the nodes it changed (created, written, removed, or
/// whose children changed) and those it looked at.
#[derive(Default)]
struct Touched {
    accessed: Vec<String>,
    modified: Vec<String>,
    /// For a removal, the nodes deleted below the node removed.
    deleted: Vec<String>,
}

/// Writes `path` in `nodes` as domain `domid`, creating missing ancestors.
fn do_write(nodes: &mut Nodes, domid: u32, path: &str, value: &[u8], gen: u64) -> Result<Touched> {
    let mut t = Touched::default();
    let perms = perms_for(nodes, path);
    t.accessed.push(path.to_string());
    if !allowed(domid, &perms, true) {
        return Err(Error::Xenstored(XsErrno::Eacces));
    }
    if let Some(n) = nodes.get_mut(path) {
        n.value = value.to_vec();
        n.gen = gen;
        t.modified.push(path.to_string());
        return Ok(t);
    }
    let mut inherited = perms;
    if domid != 0 {
        if let Some(o) = inherited.first_mut() {
            o.domid = domid;
        }
    }
    let mut missing = vec![path.to_string()];
    let mut q = parent(path).to_string();
    while !nodes.contains_key(&q) {
        missing.push(q.clone());
        if q == "/" {
            break;
        }
        q = parent(&q).to_string();
    }
    // `q` exists: its set of children changes.
    if let Some(pn) = nodes.get_mut(&q) {
        pn.gen = gen;
        t.accessed.push(q.clone());
        t.modified.push(q);
    }
    for (i, m) in missing.iter().enumerate() {
        nodes.insert(
            m.clone(),
            Node {
                value: if i == 0 { value.to_vec() } else { Vec::new() },
                perms: inherited.clone(),
                gen,
            },
        );
        t.accessed.push(m.clone());
        t.modified.push(m.clone());
    }
    Ok(t)
}

/// Removes `path` in `nodes` as domain `domid`. A missing node whose parent exists is removed
/// successfully, as xenstored 4.17 does; one whose parent is missing is `ENOENT`.
fn do_remove(nodes: &mut Nodes, domid: u32, path: &str, gen: u64) -> Result<(Touched, bool)> {
    let mut t = Touched::default();
    t.accessed.push(path.to_string());
    let Some(n) = nodes.get(path) else {
        t.accessed.push(parent(path).to_string());
        return if nodes.contains_key(parent(path)) {
            Ok((t, false))
        } else {
            Err(Error::Xenstored(XsErrno::Enoent))
        };
    };
    if !allowed(domid, &n.perms, true) {
        return Err(Error::Xenstored(XsErrno::Eacces));
    }
    let gone = remove_tree(nodes, path, gen);
    let p = parent(path).to_string();
    t.accessed.push(p.clone());
    t.modified.push(p);
    t.accessed.extend(gone.iter().cloned());
    t.modified.extend(gone.iter().cloned());
    t.deleted = gone.into_iter().filter(|g| g != path).collect();
    Ok((t, true))
}

impl MemXenStore {
    /// Reads the node `path` for `f` (ENOENT when missing, EACCES when not readable), in the
    /// transaction's view or the live store, recording the access in a transaction.
    fn inspect<T>(
        &mut self,
        txn: TxnId,
        path: &str,
        f: impl FnOnce(&Nodes, &Node, &str) -> T,
    ) -> Result<T> {
        let p = self.abs(path)?;
        let domid = self.domid;
        let mut st = self.lock();
        let st = &mut *st;
        let nodes = match self.txn_of(st, txn)? {
            Some(t) => {
                t.accessed.insert(p.clone());
                &t.view
            }
            None => &st.nodes,
        };
        let n = nodes.get(&p).ok_or(Error::Xenstored(XsErrno::Enoent))?;
        if !allowed(domid, &n.perms, false) {
            return Err(Error::Xenstored(XsErrno::Eacces));
        }
        Ok(f(nodes, n, &p))
    }

    /// Applies a change: in the transaction's view (recorded for the commit) or the live store
    /// (firing watches at once).
    fn change(
        &mut self,
        txn: TxnId,
        path: &str,
        removal: bool,
        f: impl FnOnce(&mut Nodes, u32, &str, u64) -> Result<(Touched, bool)>,
    ) -> Result<()> {
        let p = self.abs(path)?;
        let domid = self.domid;
        let mut st = self.lock();
        let st = &mut *st;
        if let Some(t) = self.txn_of(st, txn)? {
            // Generations inside a view are not compared; the commit stamps the real ones.
            let r = f(&mut t.view, domid, &p, 0);
            let (touched, fires) = match r {
                Ok(x) => x,
                Err(e) => {
                    t.accessed.insert(p.clone());
                    return Err(e);
                }
            };
            t.accessed.extend(touched.accessed);
            t.modified.extend(touched.modified);
            if fires && !t.fire.iter().any(|(q, _)| *q == p) {
                t.fire.push((p, removal));
            } else if fires && removal {
                for e in t.fire.iter_mut().filter(|(q, _)| *q == p) {
                    e.1 = true;
                }
            }
            return Ok(());
        }
        st.gen += 1;
        let gen = st.gen;
        let (touched, fires) = f(&mut st.nodes, domid, &p, gen)?;
        if fires {
            fire(st, &p, &touched.deleted);
            self.shared.1.notify_all();
        }
        Ok(())
    }
}

impl XenStoreOps for MemXenStore {
    fn read(&mut self, txn: TxnId, path: &str) -> Result<Vec<u8>> {
        self.inspect(txn, path, |_, n, _| n.value.clone())
    }
    fn write(&mut self, txn: TxnId, path: &str, value: &[u8]) -> Result<()> {
        self.change(txn, path, false, |nodes, domid, p, gen| {
            do_write(nodes, domid, p, value, gen).map(|t| (t, true))
        })
    }
    fn mkdir(&mut self, txn: TxnId, path: &str) -> Result<()> {
        match self.read(txn, path) {
            Ok(_) => Ok(()),
            Err(Error::Xenstored(XsErrno::Enoent)) => self.write(txn, path, b""),
            Err(e) => Err(e),
        }
    }
    fn directory(&mut self, txn: TxnId, path: &str) -> Result<Vec<String>> {
        self.inspect(txn, path, |nodes, _, p| {
            let prefix = if p.ends_with('/') {
                p.to_string()
            } else {
                format!("{p}/")
            };
            below(nodes, p)
                .into_iter()
                .filter_map(|k| {
                    k.strip_prefix(&prefix)
                        .filter(|r| !r.contains('/'))
                        .map(String::from)
                })
                .collect()
        })
    }
    fn remove(&mut self, txn: TxnId, path: &str) -> Result<()> {
        self.change(txn, path, true, do_remove)
    }
    fn get_perms(&mut self, txn: TxnId, path: &str) -> Result<Vec<Perm>> {
        self.inspect(txn, path, |_, n, _| n.perms.clone())
    }
    fn set_perms(&mut self, txn: TxnId, path: &str, perms: &[Perm]) -> Result<()> {
        if perms.is_empty() {
            return Err(Error::Xenstored(XsErrno::Einval));
        }
        let perms = perms.to_vec();
        self.change(txn, path, false, move |nodes, domid, p, gen| {
            let n = nodes.get_mut(p).ok_or(Error::Xenstored(XsErrno::Enoent))?;
            let owner = n.perms.first().map(|o| o.domid);
            if domid != 0 && owner != Some(domid) {
                return Err(Error::Xenstored(XsErrno::Eacces));
            }
            n.perms = perms;
            n.gen = gen;
            let t = Touched {
                accessed: vec![p.to_string()],
                modified: vec![p.to_string()],
                deleted: Vec::new(),
            };
            Ok((t, true))
        })
    }
    fn watch(&mut self, path: &str, token: &str) -> Result<()> {
        let p = if path.starts_with('@') {
            path.to_string()
        } else {
            self.abs(path)?
        };
        let (conn, domid) = (self.conn.id, self.domid);
        let mut st = self.lock();
        if st
            .watches
            .iter()
            .any(|w| w.conn == conn && w.path == p && w.token == token)
        {
            return Err(Error::Xenstored(XsErrno::Eexist));
        }
        st.watches.push(MemWatch {
            conn,
            domid,
            path: p.clone(),
            token: token.to_string(),
        });
        if let Some(q) = st.queues.get_mut(&conn) {
            q.push_back(WatchEvent {
                path: p,
                token: token.to_string(),
            });
        }
        self.shared.1.notify_all();
        Ok(())
    }
    fn unwatch(&mut self, path: &str, token: &str) -> Result<()> {
        let p = if path.starts_with('@') {
            path.to_string()
        } else {
            self.abs(path)?
        };
        let conn = self.conn.id;
        let mut st = self.lock();
        let before = st.watches.len();
        st.watches
            .retain(|w| !(w.conn == conn && w.path == p && w.token == token));
        if st.watches.len() == before {
            return Err(Error::Xenstored(XsErrno::Enoent));
        }
        Ok(())
    }
    fn next_watch_event(&mut self, timeout: Option<Duration>) -> Result<Option<WatchEvent>> {
        let wait = timeout
            .unwrap_or(Duration::from_millis(10))
            .min(Duration::from_millis(10));
        let deadline = Instant::now() + wait;
        let conn = self.conn.id;
        let mut st = self.lock();
        loop {
            if let Some(ev) = st.queues.get_mut(&conn).and_then(VecDeque::pop_front) {
                return Ok(Some(ev));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            st = self
                .shared
                .1
                .wait_timeout(st, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }
    fn transaction_start(&mut self) -> Result<TxnId> {
        let conn = self.conn.id;
        let mut st = self.lock();
        let mut id = st.next_txn.max(1);
        while st.txns.contains_key(&id) {
            id = id.wrapping_add(1).max(1);
        }
        st.next_txn = id.wrapping_add(1).max(1);
        let t = MemTxn {
            conn,
            start_gen: st.gen,
            base: st.nodes.clone(),
            view: st.nodes.clone(),
            accessed: BTreeSet::new(),
            modified: BTreeSet::new(),
            fire: Vec::new(),
        };
        st.txns.insert(id, t);
        Ok(TxnId(id))
    }
    fn transaction_end(&mut self, txn: TxnId, commit: bool) -> Result<()> {
        let conn = self.conn.id;
        let mut st = self.lock();
        let st = &mut *st;
        let t = match st.txns.get(&txn.0) {
            Some(t) if t.conn == conn && txn != TxnId::NONE => st.txns.remove(&txn.0),
            _ => None,
        }
        .ok_or(Error::Xenstored(XsErrno::Enoent))?;
        if !commit {
            return Ok(());
        }
        // xenstored's rule: a node the transaction accessed changed after it started.
        let conflict = t.accessed.iter().any(|p| match st.nodes.get(p) {
            Some(n) => n.gen > t.start_gen || !t.base.contains_key(p),
            None => t.base.contains_key(p),
        });
        if conflict {
            return Err(Error::Xenstored(XsErrno::Eagain));
        }
        // The nodes each removal deletes below the node removed, as they are before the commit.
        let deleted: Vec<Vec<String>> = t
            .fire
            .iter()
            .map(|(p, removed)| {
                if *removed {
                    below(&st.nodes, p)
                } else {
                    Vec::new()
                }
            })
            .collect();
        st.gen += 1;
        let gen = st.gen;
        for p in &t.modified {
            match t.view.get(p) {
                Some(n) => {
                    st.nodes.insert(p.clone(), Node { gen, ..n.clone() });
                }
                None => {
                    st.nodes.remove(p);
                }
            }
        }
        for ((p, _), d) in t.fire.iter().zip(&deleted) {
            fire(st, p, d);
        }
        self.shared.1.notify_all();
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
struct GrantEntry {
    granter: u32,
    grantee: u32,
    page: usize,
}

#[derive(Debug)]
struct GrantTable {
    entries: BTreeMap<u32, GrantEntry>,
    next_ref: u32,
    next_page: usize,
}

/// A shared memory file standing for guests' RAM, with a grant table over its pages. The
/// handle returned by [`MemGrants::as_domain`] grants as that domain; [`GrantMapper::map`]
/// maps as domain 0.
#[derive(Debug, Clone)]
pub struct MemGrants {
    file: Arc<File>,
    pages: usize,
    table: Arc<Mutex<GrantTable>>,
    domid: u32,
}

impl MemGrants {
    /// A memory of `pages` pages.
    ///
    /// # Errors
    ///
    /// The OS error of `memfd_create` or `ftruncate`.
    pub fn new(pages: usize) -> io::Result<MemGrants> {
        // SAFETY: the name is a valid NUL-terminated C string and the flags are valid; the
        // result is checked before use.
        let fd = unsafe { libc::memfd_create(c"pvabi-xen-grants".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by memfd_create, is open, and nothing else owns it.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len((pages * PAGE_SIZE) as u64)?;
        Ok(MemGrants {
            file: Arc::new(file),
            pages,
            table: Arc::new(Mutex::new(GrantTable {
                entries: BTreeMap::new(),
                next_ref: 8,
                next_page: 0,
            })),
            domid: 0,
        })
    }

    /// The same memory and table, granting as domain `domid`.
    pub fn as_domain(&self, domid: u32) -> MemGrants {
        MemGrants {
            domid,
            ..self.clone()
        }
    }

    /// Ends a grant (the guest revoked it); mappings made before stay, as with Xen.
    pub fn revoke(&self, gref: u32) {
        lock(&self.table).entries.remove(&gref);
    }

    fn map_pages(&self, first: usize, count: usize, writable: bool) -> io::Result<MmapRegion<()>> {
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        MmapRegionBuilder::new(count * PAGE_SIZE)
            .with_file_offset(FileOffset::from_arc(
                self.file.clone(),
                (first * PAGE_SIZE) as u64,
            ))
            .with_mmap_prot(prot)
            .with_mmap_flags(libc::MAP_SHARED)
            .build()
            .map_err(|e| io::Error::other(e.to_string()))
    }
}

impl GrantAllocator for MemGrants {
    fn grant(&self, grantee: u32, count: usize) -> io::Result<(Vec<u32>, MmapRegion<()>)> {
        let (first, refs) = {
            let mut t = lock(&self.table);
            if count == 0 || t.next_page + count > self.pages {
                return Err(io::Error::new(io::ErrorKind::OutOfMemory, "no pages left"));
            }
            let first = t.next_page;
            t.next_page += count;
            let mut refs = Vec::with_capacity(count);
            for i in 0..count {
                let r = t.next_ref;
                t.next_ref += 1;
                t.entries.insert(
                    r,
                    GrantEntry {
                        granter: self.domid,
                        grantee,
                        page: first + i,
                    },
                );
                refs.push(r);
            }
            (first, refs)
        };
        Ok((refs, self.map_pages(first, count, true)?))
    }
}

impl GrantMapper for MemGrants {
    fn map(&self, domid: u32, refs: &[u32], writable: bool) -> io::Result<MmapRegion<()>> {
        let t = lock(&self.table);
        let mut first = None;
        for (i, r) in refs.iter().enumerate() {
            let e = t
                .entries
                .get(r)
                .filter(|e| e.granter == domid && e.grantee == self.domid)
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("ref {r} is not a grant of domain {domid}"),
                    )
                })?;
            let f = *first.get_or_insert(e.page);
            if e.page != f + i {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "MemGrants maps only consecutive pages",
                ));
            }
        }
        let first = first.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no refs"))?;
        drop(t);
        self.map_pages(first, refs.len(), writable)
    }
}

#[derive(Debug)]
struct Port {
    handle: u64,
    domid: u32,
    /// `Err(remote domain)` while unbound, `Ok(remote port)` once bound.
    peer: std::result::Result<u32, u32>,
}

#[derive(Debug, Default)]
struct Bus {
    ports: BTreeMap<u32, Port>,
    next_port: u32,
    next_handle: u64,
    queues: BTreeMap<u64, VecDeque<u32>>,
}

/// Event channels in memory. Port numbers are global here (Xen's are per domain), which the
/// transport never relies on.
#[derive(Debug, Clone)]
pub struct MemEvtchn {
    bus: Arc<(Mutex<Bus>, Condvar)>,
    handle: u64,
    domid: u32,
}

impl Default for MemEvtchn {
    fn default() -> Self {
        MemEvtchn {
            bus: Arc::new((Mutex::new(Bus::default()), Condvar::new())),
            handle: 0,
            domid: 0,
        }
    }
}

impl MemEvtchn {
    /// A new handle on the same bus, for domain `domid`.
    pub fn open(&self, domid: u32) -> MemEvtchn {
        let mut b = lock(&self.bus.0);
        b.next_handle += 1;
        let h = b.next_handle;
        b.queues.insert(h, VecDeque::new());
        MemEvtchn {
            bus: self.bus.clone(),
            handle: h,
            domid,
        }
    }

    /// How many ports are bound or unbound on the bus (for leak checks).
    pub fn port_count(&self) -> usize {
        lock(&self.bus.0).ports.len()
    }
}

impl Drop for MemEvtchn {
    fn drop(&mut self) {
        if self.handle == 0 {
            return;
        }
        let mut b = lock(&self.bus.0);
        let h = self.handle;
        b.ports.retain(|_, p| p.handle != h);
        b.queues.remove(&h);
    }
}

impl UnboundChannel for MemEvtchn {
    fn alloc_unbound(&self, remote_domain: u32) -> io::Result<u32> {
        let mut b = lock(&self.bus.0);
        b.next_port += 1;
        let p = b.next_port;
        b.ports.insert(
            p,
            Port {
                handle: self.handle,
                domid: self.domid,
                peer: Err(remote_domain),
            },
        );
        Ok(p)
    }
}

impl EventChannel for MemEvtchn {
    fn bind_interdomain(&self, domid: u32, remote_port: u32) -> io::Result<u32> {
        let mut b = lock(&self.bus.0);
        match b.ports.get(&remote_port) {
            Some(p) if p.domid == domid && p.peer == Err(self.domid) => {}
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("port {remote_port} of domain {domid} is not unbound for us"),
                ))
            }
        }
        b.next_port += 1;
        let local = b.next_port;
        b.ports.insert(
            local,
            Port {
                handle: self.handle,
                domid: self.domid,
                peer: Ok(remote_port),
            },
        );
        if let Some(p) = b.ports.get_mut(&remote_port) {
            p.peer = Ok(local);
        }
        Ok(local)
    }
    fn notify(&self, local_port: u32) -> io::Result<()> {
        let mut b = lock(&self.bus.0);
        let remote = match b.ports.get(&local_port) {
            Some(p) if p.handle == self.handle => p.peer,
            _ => return Err(io::Error::new(io::ErrorKind::InvalidInput, "not our port")),
        };
        let Ok(remote) = remote else {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "port unbound"));
        };
        if let Some(h) = b.ports.get(&remote).map(|p| p.handle) {
            if let Some(q) = b.queues.get_mut(&h) {
                if !q.contains(&remote) {
                    q.push_back(remote);
                }
            }
        }
        self.bus.1.notify_all();
        Ok(())
    }
    fn wait(&self, timeout: Duration) -> io::Result<Option<u32>> {
        let deadline = Instant::now() + timeout;
        let mut b = lock(&self.bus.0);
        loop {
            if let Some(p) = b.queues.get_mut(&self.handle).and_then(VecDeque::pop_front) {
                return Ok(Some(p));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            b = self
                .bus
                .1
                .wait_timeout(b, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(path: &str, token: &str) -> Option<WatchEvent> {
        Some(WatchEvent {
            path: path.into(),
            token: token.into(),
        })
    }

    fn next(xs: &mut MemXenStore) -> Option<WatchEvent> {
        xs.next_watch_event(Some(Duration::ZERO)).expect("event")
    }

    #[test]
    fn watches_fire_as_xenstored_fires_them() {
        let s = MemXenStore::new(&[0, 5]);
        let mut a = s.connect(0);
        let mut b = s.connect(0);
        a.watch("/local/domain/5/w", "t").expect("watch");
        assert_eq!(next(&mut a), ev("/local/domain/5/w", "t"), "registration");
        assert_eq!(next(&mut a), None);
        assert!(matches!(
            a.watch("/local/domain/5/w", "t"),
            Err(Error::Xenstored(XsErrno::Eexist))
        ));
        let _ = next(&mut a);
        // A creating write fires for the node written only.
        b.write(TxnId::NONE, "/local/domain/5/w/x/y", b"1")
            .expect("write");
        assert_eq!(next(&mut a), ev("/local/domain/5/w/x/y", "t"));
        assert_eq!(next(&mut a), None);
        b.write(TxnId::NONE, "/local/domain/5/other", b"1")
            .expect("write");
        assert_eq!(next(&mut a), None);
        // Removing an ancestor fires the watches on the deleted nodes, naming each, deepest
        // first; a watch on a node that did not exist gets nothing.
        a.watch("/local/domain/5/w/x/y", "u").expect("watch");
        a.watch("/local/domain/5/w/x/missing", "v").expect("watch");
        let _ = next(&mut a);
        let _ = next(&mut a);
        b.remove(TxnId::NONE, "/local/domain/5/w/x")
            .expect("remove");
        assert_eq!(next(&mut a), ev("/local/domain/5/w/x/y", "u"));
        assert_eq!(next(&mut a), ev("/local/domain/5/w/x", "t"));
        assert_eq!(next(&mut a), None);
        // Unprivileged watchers see only nodes they may read.
        let mut d5 = s.connect(5);
        d5.watch("/local/domain/5", "g").expect("watch");
        let _ = next(&mut d5);
        b.write(TxnId::NONE, "/local/domain/5/w/secret", b"s")
            .expect("write");
        b.set_perms(
            TxnId::NONE,
            "/local/domain/5/w/secret",
            &[Perm::new(0, Access::None)],
        )
        .expect("perms");
        b.write(TxnId::NONE, "/local/domain/5/w/secret", b"t")
            .expect("write");
        assert_eq!(next(&mut d5), ev("/local/domain/5/w/secret", "g"));
        assert_eq!(next(&mut d5), None, "unreadable node's events hidden");
        // A connection that goes away takes its watches with it.
        drop(a);
        assert_eq!(lock(&s.shared.0).watches.len(), 1);
        s.destroy_domain(7);
    }

    #[test]
    fn transactions_are_isolated_and_conflict() {
        let s = MemXenStore::new(&[0]);
        let mut a = s.connect(0);
        let mut b = s.connect(0);
        a.write(TxnId::NONE, "/n", b"0").expect("write");
        a.watch("/n", "t").expect("watch");
        let _ = next(&mut a);
        let t = a.transaction_start().expect("start");
        b.write(TxnId::NONE, "/n", b"1").expect("write");
        let _ = next(&mut a);
        assert_eq!(a.read(t, "/n").expect("read"), b"0", "the start's snapshot");
        a.write(t, "/n/c", b"x").expect("write");
        a.write(t, "/n/c", b"y").expect("write");
        assert!(b.read(TxnId::NONE, "/n/c").is_err(), "invisible outside");
        assert!(matches!(
            a.transaction_end(t, true),
            Err(Error::Xenstored(XsErrno::Eagain))
        ));
        assert!(b.read(TxnId::NONE, "/n/c").is_err(), "nothing applied");
        assert!(a.transaction_end(t, true).is_err(), "ended");
        assert_eq!(next(&mut a), None);
        // No concurrent change: applied at once, one event per node at the commit.
        let t = a.transaction_start().expect("start");
        a.write(t, "/n/c", b"x").expect("write");
        a.write(t, "/n/c", b"y").expect("write");
        assert_eq!(next(&mut a), None);
        assert!(b.transaction_end(t, true).is_err(), "another connection's");
        a.transaction_end(t, true).expect("commit");
        assert_eq!(b.read(TxnId::NONE, "/n/c").expect("read"), b"y");
        assert_eq!(next(&mut a), ev("/n/c", "t"));
        assert_eq!(next(&mut a), None);
        // A removal in a transaction, aborted.
        let t = a.transaction_start().expect("start");
        a.remove(t, "/n").expect("remove");
        assert!(a.read(t, "/n/c").is_err());
        a.transaction_end(t, false).expect("abort");
        assert_eq!(a.read(TxnId::NONE, "/n/c").expect("read"), b"y");
        // A listed node that gains a child conflicts.
        let t = a.transaction_start().expect("start");
        a.directory(t, "/n").expect("list");
        b.write(TxnId::NONE, "/n/d", b"").expect("write");
        a.write(t, "/elsewhere", b"").expect("write");
        assert!(a.transaction_end(t, true).is_err());
        assert!(a.read(TxnId::NONE, "/elsewhere").is_err());
    }
}
