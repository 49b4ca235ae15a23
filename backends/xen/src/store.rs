//! [`GuestStore`]: the pvabi STORE service of one guest (spec chapter 11) mapped onto that
//! guest's xenstore subtree, on any [`XenStoreOps`].
//!
//! What the mapping does, by clause:
//! - paths (`STORE-1`, `STORE-24`) are checked with [`pvabi::store::valid_path`] and joined to
//!   the subtree root, so no guest path reaches outside it (`STORE-20`); only LIST takes the
//!   empty path;
//! - values longer than [`MAX_VALUE`] are NO_SPACE before anything is sent (`STORE-6`);
//! - guest access (`STORE-2`, `STORE-25` to `STORE-27`) lives in xenstore permissions: a
//!   host-written node is owned by the backend domain and lists the guest domain with `n`, `r`
//!   or `b` (`NONE`, `READ`, `READ_WRITE`); nodes a guest write creates inherit the permissions
//!   of their nearest existing ancestor, which is the guest's own (the subtree root is owned by
//!   the guest) or a `READ_WRITE` host node (the same access as ownership). The backend's
//!   connection is privileged, so xenstored checks nothing for it: the mapping reads the
//!   permissions and applies xenstored's rule for the guest domain itself, on the node for
//!   READ, LIST, WRITE and REMOVE, on the nearest existing ancestor for a WRITE that creates,
//!   and on every node of the subtree for REMOVE;
//! - the node quota (`STORE-19`, `STORE-29`): a guest WRITE that creates nodes is NO_SPACE,
//!   creating nothing, when the nodes it creates would take the subtree past [`MAX_ENTRIES`];
//!   host writes are not refused for it. The mapping knows the subtree's nodes from one walk at
//!   its first creating WRITE and, after that, from a watch of its own on the root: each event
//!   (a change by anyone) has the node's existence asked again. A guest transaction counts its
//!   own creations, and its commit is CONFLICT when others created nodes meanwhile so that the
//!   quota would be passed;
//! - WRITE and REMOVE outside a guest transaction run the checks and the change in one xenstored
//!   transaction of the mapping's own (retried when xenstored reports a conflict), so a check
//!   and the change it allows are atomic;
//! - LIST returns the child names in ascending byte order, each followed by a NUL (`STORE-7`);
//! - REMOVE of a missing node is NOT_FOUND (`STORE-8`), although xenstored acknowledges the
//!   removal of a missing node whose parent exists;
//! - WATCH (`STORE-10`) swallows the event xenstored fires when a watch is registered, and
//!   events are queued per guest with the drop count of `STORE-14`; their paths are made
//!   relative to the subtree. For a removal the mapping made, the watches inside the removed
//!   subtree get an event naming the removed node as `STORE-11` says, queued by the mapping
//!   (xenstored names the watched path instead, and 4.17 fires only for watched nodes that
//!   existed), and xenstored's events for them are dropped;
//! - transaction ids are the guest's own nonzero `u32` (`STORE-9`, `STORE-15`, `STORE-31`),
//!   translated to xenstored's;
//! - every xenstored refusal becomes a status through [`status_for`] (so `EAGAIN` at commit is
//!   CONFLICT, `STORE-16`).
//!
//! The guest-side counts of `STORE-19` for watches and transactions are enforced here.
//!
//! Known differences from the spec on a real xenstored:
//! - xenstored's message limit is 4096 bytes for path and value together, so a value close to
//!   [`MAX_VALUE`] that the spec admits fails with NO_SPACE;
//! - xenstored (C, 4.9 and later) gives a transaction the node as it is when the transaction
//!   first accesses it, not as it was at its start (`STORE-17`): a node another writer changed
//!   between TXN_START and the transaction's first access reads with the new value and does not
//!   make the commit conflict;
//! - a removal of an ancestor of a watched path made by another xenstore client (not through
//!   this mapping) is reported with the watched path, as xenstored names it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use pvabi::store::{
    valid_path, GuestAccess, WatchEvent, MAX_ENTRIES, MAX_TRANSACTIONS, MAX_VALUE, MAX_WATCHES,
    MAX_WATCH_EVENTS,
};
use pvabi::Status;

use crate::error::{Error, XsErrno};
use crate::ops::{TxnId, XenStoreOps};
use crate::perms::{Access, Perm};
use crate::status_map::status_for;

/// Highest event port a watch may name (`STORE-32`: the port must be below 1024).
const PORT_LIMIT: u32 = 1024;
/// How often the mapping retries its own transaction when xenstored reports a conflict.
const OWN_TXN_RETRIES: u32 = 8;
/// The token of the mapping's own watch on the subtree root, which keeps the node count.
const QUOTA_TOKEN: &str = "pvabi-quota";

#[derive(Debug)]
struct Watch {
    /// The absolute xenstore path watched.
    abs: String,
    token: String,
    port: u32,
    /// xenstored's registration event for `abs` has not been seen yet.
    initial_pending: bool,
}

/// One guest's STORE service on its xenstore subtree.
///
/// # Examples
///
/// ```no_run
/// use pvabi_xen::{GuestStore, XenStore};
/// let xs = XenStore::open_default()?;
/// // Guest domain 3, served by a backend in domain 0.
/// let mut store = GuestStore::new(xs, "/local/domain/3/pvabi", 3, 0);
/// store.write(b"config/mode", b"fast", 0).expect("write");
/// assert_eq!(store.read(b"config/mode", 0).expect("read"), b"fast");
/// # Ok::<(), pvabi_xen::Error>(())
/// ```
pub struct GuestStore<S: XenStoreOps> {
    xs: S,
    root: String,
    guest: u32,
    backend: u32,
    txns: BTreeMap<u32, Txn>,
    next_txn: u32,
    watches: BTreeMap<u32, Watch>,
    next_watch: u32,
    events: VecDeque<(u32, Vec<u8>)>,
    dropped: u32,
    /// Absolute paths this mapping removed whose watch events have not been polled yet.
    removed: Vec<String>,
    /// The nodes of the subtree (root excluded), for the node quota: walked once, then kept up
    /// to date from a watch on the root; `None` until the first WRITE that creates.
    nodes: Option<BTreeSet<String>>,
    /// Ports of watch events taken from xenstored and not yet returned by `poll_events`.
    pending_ports: Vec<u32>,
}

/// A guest transaction: xenstored's id, the nodes it removed (for the events at commit) and
/// how many it created (for the node quota), and what makes its view the store as it was at
/// TXN_START (`STORE-17`).
#[derive(Debug)]
struct Txn {
    id: TxnId,
    removed: Vec<String>,
    created: u64,
    /// The nodes of the subtree at TXN_START (each one accessed in xenstored's transaction
    /// then, so that xenstored keeps its value as of then and a later change by anyone else is
    /// a conflict at commit) plus the ones this transaction created, minus the ones it removed.
    visible: BTreeSet<String>,
    /// A node this transaction touched was created by someone else after TXN_START: xenstored
    /// cannot see that as a conflict, so the commit reports CONFLICT itself (`STORE-16`).
    doomed: bool,
}

impl<S: XenStoreOps> GuestStore<S> {
    /// The STORE service of guest domain `guest` whose subtree is the absolute xenstore path
    /// `root` (without a trailing `/`), served by a backend in domain `backend`, which owns the
    /// nodes the host writes.
    pub fn new(xs: S, root: impl Into<String>, guest: u32, backend: u32) -> GuestStore<S> {
        let mut root = root.into();
        while root.len() > 1 && root.ends_with('/') {
            root.pop();
        }
        GuestStore {
            xs,
            root,
            guest,
            backend,
            txns: BTreeMap::new(),
            next_txn: 1,
            watches: BTreeMap::new(),
            next_watch: 1,
            events: VecDeque::new(),
            dropped: 0,
            removed: Vec::new(),
            nodes: None,
            pending_ports: Vec::new(),
        }
    }

    /// The xenstore connection.
    pub fn xenstore(&mut self) -> &mut S {
        &mut self.xs
    }

    /// The absolute xenstore path of a guest path; the empty path is the root.
    fn abs(&self, path: &[u8], allow_root: bool) -> Result<String, Status> {
        if !valid_path(path, allow_root) {
            return Err(Status::INVALID_PARAM);
        }
        // valid_path admits ASCII only.
        let rel = std::str::from_utf8(path).map_err(|_| Status::INVALID_PARAM)?;
        Ok(if rel.is_empty() {
            self.root.clone()
        } else {
            join(&self.root, rel)
        })
    }

    /// The xenstored transaction of a guest `txn` argument (`STORE-9`, `STORE-31`).
    fn txn(&self, txn: u64) -> Result<TxnId, Status> {
        if txn == 0 {
            return Ok(TxnId::NONE);
        }
        let id = u32::try_from(txn).map_err(|_| Status::INVALID_PARAM)?;
        self.txns.get(&id).map(|t| t.id).ok_or(Status::NOT_FOUND)
    }

    /// Whether xenstored would let the guest domain read (or write, `write`) a node with
    /// `perms`: the owner may do anything, another domain has its own entry's access, else the
    /// owner entry's.
    fn guest_may(&self, perms: &[Perm], write: bool) -> bool {
        let Some(owner) = perms.first() else {
            return false;
        };
        if owner.domid == self.guest {
            return true;
        }
        let access = perms[1..]
            .iter()
            .find(|p| p.domid == self.guest)
            .map_or(owner.access, |p| p.access);
        match access {
            Access::Both => true,
            Access::Read => !write,
            Access::Write => write,
            Access::None => false,
        }
    }

    /// A node's permissions in transaction `t`; `None` when it does not exist.
    fn perms(&mut self, t: TxnId, abs: &str) -> Result<Option<Vec<Perm>>, Status> {
        let now = match self.xs.get_perms(t, abs) {
            Ok(p) => Some(p),
            Err(Error::Xenstored(XsErrno::Enoent)) => None,
            Err(e) => return Err(status_for(&e)),
        };
        // Inside a guest transaction a node that did not exist at TXN_START (and that the
        // transaction did not create) is missing, whatever xenstored shows (STORE-17).
        if t != TxnId::NONE && now.is_some() && abs != self.root {
            if let Some(g) = self.txns.values_mut().find(|g| g.id == t) {
                if !g.visible.contains(abs) {
                    g.doomed = true;
                    return Ok(None);
                }
            }
        }
        Ok(now)
    }

    /// Records in guest transaction `t` (if it is one) that `abs` and its missing ancestors
    /// now exist (`created`) or that `abs` and its subtree are gone.
    fn txn_saw(&mut self, t: TxnId, abs: &str, created: bool) {
        let root = self.root.clone();
        let Some(g) = self.txns.values_mut().find(|g| g.id == t) else {
            return;
        };
        if created {
            let mut p = abs;
            while strictly_below(p, &root) {
                g.visible.insert(p.to_string());
                p = parent(p);
            }
        } else {
            let prefix = format!("{abs}/");
            g.visible.retain(|k| k != abs && !k.starts_with(&prefix));
        }
    }

    /// The absolute paths of the children of `abs` in transaction `t` (none when it is gone).
    fn children(&mut self, t: TxnId, abs: &str) -> Result<Vec<String>, Status> {
        match self.xs.directory(t, abs) {
            Ok(names) => Ok(names.iter().map(|n| join(abs, n)).collect()),
            Err(Error::Xenstored(XsErrno::Enoent)) => Ok(Vec::new()),
            Err(e) => Err(status_for(&e)),
        }
    }

    /// The nodes strictly below `abs` in transaction `t`, parents before children.
    fn subtree(&mut self, t: TxnId, abs: &str) -> Result<Vec<String>, Status> {
        let mut out = Vec::new();
        let mut todo = vec![abs.to_string()];
        while let Some(p) = todo.pop() {
            let kids = self.children(t, &p)?;
            out.extend(kids.iter().cloned());
            todo.extend(kids);
        }
        Ok(out)
    }

    /// Runs `f` in the guest's transaction `txn`, or, for 0, in a transaction of the mapping's
    /// own that it commits (retrying on conflict).
    fn in_txn<T>(
        &mut self,
        txn: u64,
        mut f: impl FnMut(&mut Self, TxnId) -> Result<T, Status>,
    ) -> Result<T, Status> {
        let t = self.txn(txn)?;
        if t != TxnId::NONE {
            return f(self, t);
        }
        for _ in 0..OWN_TXN_RETRIES {
            let own = self.xs.transaction_start().map_err(|e| status_for(&e))?;
            let r = match f(self, own) {
                Ok(r) => r,
                Err(e) => {
                    let _ = self.xs.transaction_end(own, false);
                    return Err(e);
                }
            };
            match self.xs.transaction_end(own, true) {
                Ok(()) => return Ok(r),
                Err(Error::Xenstored(XsErrno::Eagain)) => continue,
                Err(e) => return Err(status_for(&e)),
            }
        }
        Err(Status::BUSY)
    }

    /// STORE.READ: the node's value (`STORE-2`, `STORE-3`, `STORE-28`).
    ///
    /// # Errors
    ///
    /// INVALID_PARAM for a bad path or `txn`, NOT_FOUND for a missing node or unknown `txn`,
    /// DENIED for a host node the guest may not read, and xenstored's refusals through
    /// [`status_for`].
    pub fn read(&mut self, path: &[u8], txn: u64) -> Result<Vec<u8>, Status> {
        let abs = self.abs(path, false)?;
        let t = self.txn(txn)?;
        let perms = self.perms(t, &abs)?.ok_or(Status::NOT_FOUND)?;
        if !self.guest_may(&perms, false) {
            return Err(Status::DENIED);
        }
        self.xs.read(t, &abs).map_err(|e| status_for(&e))
    }

    /// STORE.WRITE: sets the node's value, creating it and its ancestors (`STORE-5`, `STORE-6`,
    /// `STORE-25`, `STORE-26`, `STORE-29`).
    ///
    /// # Errors
    ///
    /// NO_SPACE for a value over [`MAX_VALUE`] or over xenstored's message limit, or when the
    /// nodes it would create pass [`MAX_ENTRIES`]; DENIED when the node, or for a new node its
    /// nearest existing ancestor, is a host node without `READ_WRITE`; the path and `txn`
    /// errors of [`GuestStore::read`]; BUSY when xenstored kept reporting conflicts for the
    /// mapping's own transaction; xenstored's refusals through [`status_for`].
    pub fn write(&mut self, path: &[u8], value: &[u8], txn: u64) -> Result<(), Status> {
        let abs = self.abs(path, false)?;
        self.txn(txn)?;
        if value.len() as u64 > MAX_VALUE {
            return Err(Status::NO_SPACE);
        }
        let pending = match u32::try_from(txn).ok().and_then(|id| self.txns.get(&id)) {
            Some(t) if txn != 0 => t.created,
            _ => 0,
        };
        let created = self.in_txn(txn, |s, t| {
            let created = s.check_guest_write(t, &abs, pending)?;
            s.xs.write(t, &abs, value).map_err(|e| status_for(&e))?;
            s.txn_saw(t, &abs, true);
            Ok(created)
        })?;
        if let Some(t) = u32::try_from(txn)
            .ok()
            .and_then(|id| self.txns.get_mut(&id))
        {
            if txn != 0 {
                t.created += created;
            }
        }
        Ok(())
    }

    /// The checks of a guest WRITE of `abs` in transaction `t`: access, and the node quota when
    /// it creates nodes (`pending`: nodes the guest transaction created before). Returns how
    /// many nodes the write creates.
    fn check_guest_write(&mut self, t: TxnId, abs: &str, pending: u64) -> Result<u64, Status> {
        if let Some(p) = self.perms(t, abs)? {
            return if self.guest_may(&p, true) {
                Ok(0)
            } else {
                Err(Status::DENIED)
            };
        }
        // A new node: the nearest existing ancestor decides; the root is the guest's.
        let mut created = 1u64;
        let mut cur = parent(abs).to_string();
        while cur != self.root && cur.len() > self.root.len() {
            match self.perms(t, &cur)? {
                Some(p) if self.guest_may(&p, true) => break,
                Some(_) => return Err(Status::DENIED),
                None => {
                    created += 1;
                    cur = parent(&cur).to_string();
                }
            }
        }
        if self.node_count()? + pending + created > u64::from(MAX_ENTRIES) {
            return Err(Status::NO_SPACE);
        }
        Ok(created)
    }

    /// The number of nodes in the subtree, root excluded (`STORE-19`), as the watch on the root
    /// has reported them so far.
    fn node_count(&mut self) -> Result<u64, Status> {
        if self.nodes.is_none() {
            let root = self.root.clone();
            self.xs
                .watch(&root, QUOTA_TOKEN)
                .map_err(|e| status_for(&e))?;
            // Changes between the registration and the walk come as events and are applied
            // again, which changes nothing.
            let all = self.subtree(TxnId::NONE, &root)?;
            self.nodes = Some(all.into_iter().collect());
        }
        self.drain()?;
        Ok(self.nodes.as_ref().map_or(0, |n| n.len() as u64))
    }

    /// Applies one event of the root watch to the node set: `abs` was written, created or
    /// removed (by anyone); its existence is asked again.
    fn track(&mut self, abs: &str) -> Result<(), Status> {
        if self.nodes.is_none() {
            return Ok(());
        }
        let root = self.root.clone();
        if abs == root {
            if self.perms(TxnId::NONE, abs)?.is_none() {
                if let Some(n) = self.nodes.as_mut() {
                    n.clear();
                }
            }
            return Ok(());
        }
        if !strictly_below(abs, &root) {
            return Ok(());
        }
        let exists = self.perms(TxnId::NONE, abs)?.is_some();
        let prefix = format!("{abs}/");
        let had_below = self.nodes.as_ref().is_some_and(|n| {
            n.range(prefix.clone()..)
                .next()
                .is_some_and(|k| k.starts_with(&prefix))
        });
        // A node that exists but had nodes below it may have been removed and created again:
        // its subtree is walked anew.
        let below = if exists && had_below {
            Some(self.subtree(TxnId::NONE, abs)?)
        } else {
            None
        };
        let Some(n) = self.nodes.as_mut() else {
            return Ok(());
        };
        if !exists || below.is_some() {
            n.retain(|k| !k.starts_with(&prefix));
        }
        if !exists {
            n.remove(abs);
            return Ok(());
        }
        n.extend(below.into_iter().flatten());
        let mut p = abs;
        while strictly_below(p, &root) {
            n.insert(p.to_string());
            p = parent(p);
        }
        Ok(())
    }

    /// STORE.LIST: the child names in ascending byte order, each followed by a NUL (`STORE-2`,
    /// `STORE-7`, `STORE-30`). The empty path lists the subtree root, which always exists.
    ///
    /// # Errors
    ///
    /// As [`GuestStore::read`].
    pub fn list(&mut self, path: &[u8], txn: u64) -> Result<Vec<u8>, Status> {
        let abs = self.abs(path, true)?;
        let t = self.txn(txn)?;
        let is_root = abs == self.root;
        if !is_root {
            let perms = self.perms(t, &abs)?.ok_or(Status::NOT_FOUND)?;
            if !self.guest_may(&perms, false) {
                return Err(Status::DENIED);
            }
        }
        let mut names = match self.xs.directory(t, &abs) {
            Err(Error::Xenstored(XsErrno::Enoent)) if is_root => Vec::new(),
            r => r.map_err(|e| status_for(&e))?,
        };
        // In a guest transaction, children created by others after TXN_START are not there
        // (STORE-17); seeing them dooms the commit (STORE-16).
        if let Some(g) = self
            .txns
            .values_mut()
            .find(|g| g.id == t && t != TxnId::NONE)
        {
            let before = names.len();
            names.retain(|n| g.visible.contains(&join(&abs, n)));
            if names.len() != before {
                g.doomed = true;
            }
        }
        Ok(nul_list(names))
    }

    /// STORE.REMOVE: removes the node and its subtree; a missing node is NOT_FOUND (`STORE-8`,
    /// `STORE-25`, `STORE-27`).
    ///
    /// # Errors
    ///
    /// As [`GuestStore::read`]; DENIED, removing nothing, when the node or any node below it is
    /// a host node without `READ_WRITE`; BUSY when xenstored kept reporting conflicts for the
    /// mapping's own transaction.
    pub fn remove(&mut self, path: &[u8], txn: u64) -> Result<(), Status> {
        let abs = self.abs(path, false)?;
        self.txn(txn)?;
        self.in_txn(txn, |s, t| {
            let p = s.perms(t, &abs)?.ok_or(Status::NOT_FOUND)?;
            if !s.guest_may(&p, true) {
                return Err(Status::DENIED);
            }
            for d in s.subtree(t, &abs)? {
                if let Some(p) = s.perms(t, &d)? {
                    if !s.guest_may(&p, true) {
                        return Err(Status::DENIED);
                    }
                }
            }
            s.xs.remove(t, &abs).map_err(|e| status_for(&e))?;
            s.txn_saw(t, &abs, false);
            Ok(())
        })?;
        match u32::try_from(txn)
            .ok()
            .and_then(|id| self.txns.get_mut(&id))
        {
            Some(t) if txn != 0 => t.removed.push(abs),
            _ => self.removed_node(abs),
        }
        Ok(())
    }

    /// Queues the events of a removal this mapping made for the watches inside the removed
    /// subtree, naming the removed node (`STORE-11`), whether or not the watched node existed.
    /// xenstored's own events for those watches (which name the watched path, and depending on
    /// the version fire only for nodes that existed) are dropped when they arrive.
    fn removed_node(&mut self, abs: String) {
        let Some(rel) = self.rel(&abs) else { return };
        for (&id, w) in &self.watches {
            if strictly_below(&w.abs, &abs) {
                self.pending_ports.push(w.port);
                if self.events.len() as u64 >= u64::from(MAX_WATCH_EVENTS) {
                    self.dropped = self.dropped.saturating_add(1);
                } else {
                    self.events.push_back((id, rel.clone()));
                }
            }
        }
        self.removed.push(abs);
    }

    /// The guest path of an absolute path inside the subtree (empty for the root).
    fn rel(&self, abs: &str) -> Option<Vec<u8>> {
        let prefix = self.root.strip_suffix('/').unwrap_or(&self.root);
        if abs == self.root {
            Some(Vec::new())
        } else {
            abs.strip_prefix(prefix)
                .and_then(|r| r.strip_prefix('/'))
                .map(|r| r.as_bytes().to_vec())
        }
    }

    /// A host write (`HAR-4`): sets the node's value outside any transaction, without guest
    /// access checks or the node quota, and makes it a host node with guest access `access`
    /// (owned by the backend domain, the guest domain listed with `n`, `r` or `b`). Missing
    /// ancestors it creates inherit their nearest existing ancestor's permissions.
    ///
    /// # Errors
    ///
    /// INVALID_PARAM for a bad path or an `access` other than NONE, READ and READ_WRITE,
    /// NO_SPACE for a value over [`MAX_VALUE`] (`HAR-14`), BUSY when xenstored kept reporting
    /// conflicts, and xenstored's refusals through [`status_for`].
    pub fn host_write(
        &mut self,
        path: &[u8],
        value: &[u8],
        access: GuestAccess,
    ) -> Result<(), Status> {
        let abs = self.abs(path, false)?;
        let letter = match access {
            GuestAccess::NONE => Access::None,
            GuestAccess::READ => Access::Read,
            GuestAccess::READ_WRITE => Access::Both,
            _ => return Err(Status::INVALID_PARAM),
        };
        if value.len() as u64 > MAX_VALUE {
            return Err(Status::NO_SPACE);
        }
        let perms = [
            Perm::new(self.backend, Access::None),
            Perm::new(self.guest, letter),
        ];
        // One transaction: xenstored fires one event for the node at the commit.
        self.in_txn(0, |s, t| {
            s.xs.write(t, &abs, value).map_err(|e| status_for(&e))?;
            s.xs.set_perms(t, &abs, &perms).map_err(|e| status_for(&e))
        })
    }

    /// A host read (`HAR-5`): the node's value, ignoring guest access and open transactions.
    ///
    /// # Errors
    ///
    /// INVALID_PARAM for a bad path, NOT_FOUND for a missing node, xenstored's refusals through
    /// [`status_for`].
    pub fn host_read(&mut self, path: &[u8]) -> Result<Vec<u8>, Status> {
        let abs = self.abs(path, false)?;
        self.xs.read(TxnId::NONE, &abs).map_err(|e| status_for(&e))
    }

    /// A host removal: the node and its subtree, ignoring guest access.
    ///
    /// # Errors
    ///
    /// INVALID_PARAM for a bad path, NOT_FOUND for a missing node, BUSY when xenstored kept
    /// reporting conflicts, xenstored's refusals through [`status_for`].
    pub fn host_remove(&mut self, path: &[u8]) -> Result<(), Status> {
        let abs = self.abs(path, false)?;
        self.in_txn(0, |s, t| {
            remove_existing(&mut s.xs, t, &abs).map_err(|e| status_for(&e))
        })?;
        self.removed_node(abs);
        Ok(())
    }

    /// A host listing, ignoring guest access: as [`GuestStore::list`] writes it.
    ///
    /// # Errors
    ///
    /// INVALID_PARAM for a bad path, NOT_FOUND for a missing node, xenstored's refusals through
    /// [`status_for`].
    pub fn host_list(&mut self, path: &[u8]) -> Result<Vec<u8>, Status> {
        let abs = self.abs(path, true)?;
        let names = match self.xs.directory(TxnId::NONE, &abs) {
            Err(Error::Xenstored(XsErrno::Enoent)) if abs == self.root => Vec::new(),
            r => r.map_err(|e| status_for(&e))?,
        };
        Ok(nul_list(names))
    }

    /// STORE.WATCH: registers a watch on the path (which need not exist) raising `port`, and
    /// returns its nonzero id (`STORE-10`, `STORE-24`, `STORE-32`, `STORE-34`). Whether `port`
    /// is allocated (`STORE-33`) is the event service's to check before calling this.
    ///
    /// # Errors
    ///
    /// INVALID_PARAM for a bad or empty path or a port of 0 or not below 1024, NO_SPACE when the
    /// guest holds [`MAX_WATCHES`] watches, and xenstored's refusals through [`status_for`].
    pub fn watch(&mut self, path: &[u8], port: u32) -> Result<u32, Status> {
        let abs = self.abs(path, false)?;
        if port == 0 || port >= PORT_LIMIT {
            return Err(Status::INVALID_PARAM);
        }
        if self.watches.len() as u64 >= u64::from(MAX_WATCHES) {
            return Err(Status::NO_SPACE);
        }
        let id = self.next_free_watch_id();
        let token = format!("pvabi-w{id}");
        self.xs.watch(&abs, &token).map_err(|e| status_for(&e))?;
        self.watches.insert(
            id,
            Watch {
                abs,
                token,
                port,
                initial_pending: true,
            },
        );
        Ok(id)
    }

    fn next_free_watch_id(&mut self) -> u32 {
        loop {
            let id = self.next_watch;
            self.next_watch = self.next_watch.wrapping_add(1).max(1);
            if !self.watches.contains_key(&id) {
                return id;
            }
        }
    }

    /// STORE.UNWATCH: removes the watch and discards its queued events (`STORE-12`).
    ///
    /// # Errors
    ///
    /// NOT_FOUND for an id that is not one of the guest's watches; xenstored's refusals through
    /// [`status_for`].
    pub fn unwatch(&mut self, id: u32) -> Result<(), Status> {
        let w = self.watches.remove(&id).ok_or(Status::NOT_FOUND)?;
        self.events.retain(|(wid, _)| *wid != id);
        self.xs
            .unwatch(&w.abs, &w.token)
            .map_err(|e| status_for(&e))
    }

    /// Moves the watch events xenstored has sent into the guest's queue and returns the ports
    /// to raise, one per event (`STORE-11`, `STORE-14`: dropped events still raise).
    ///
    /// # Errors
    ///
    /// FAILED when reading from xenstored fails.
    pub fn poll_events(&mut self) -> Result<Vec<u32>, Status> {
        self.drain()?;
        // xenstored sends the events of a change before its reply: those of the removals made
        // so far have all been seen.
        self.removed.clear();
        Ok(std::mem::take(&mut self.pending_ports))
    }

    /// Takes the watch events xenstored has sent: the root watch's update the node set, the
    /// guest's are queued and their ports kept for [`GuestStore::poll_events`].
    fn drain(&mut self) -> Result<(), Status> {
        while let Some(ev) = self
            .xs
            .next_watch_event(Some(Duration::ZERO))
            .map_err(|e| status_for(&e))?
        {
            if ev.token == QUOTA_TOKEN {
                self.track(&ev.path)?;
                continue;
            }
            let Some((&id, w)) = self.watches.iter_mut().find(|(_, w)| w.token == ev.token) else {
                // A watch already removed.
                continue;
            };
            if w.initial_pending && ev.path == w.abs {
                w.initial_pending = false;
                continue;
            }
            // A removal this mapping made has queued its own events for the watches inside the
            // removed subtree: xenstored's, which name the watched path, are dropped.
            if ev.path == w.abs && self.removed.iter().any(|r| strictly_below(&w.abs, r)) {
                continue;
            }
            let (port, path) = (w.port, ev.path);
            let Some(rel) = self.rel(&path) else {
                // Not inside the guest's subtree: never shown (`STORE-20`).
                continue;
            };
            self.pending_ports.push(port);
            if self.events.len() as u64 >= u64::from(MAX_WATCH_EVENTS) {
                self.dropped = self.dropped.saturating_add(1);
            } else {
                self.events.push_back((id, rel));
            }
        }
        Ok(())
    }

    /// The oldest queued event without removing it, as STORE.WATCH_NEXT would write it.
    pub fn peek_event(&self) -> Option<(WatchEvent, &[u8])> {
        self.events.front().map(|(id, path)| {
            (
                WatchEvent {
                    watch_id: *id,
                    // Paths are at most a xenstore message long.
                    path_len: path.len() as u32,
                    dropped: self.dropped,
                    _reserved: 0,
                },
                path.as_slice(),
            )
        })
    }

    /// STORE.WATCH_NEXT: removes and returns the oldest queued event with the drop count, which
    /// then restarts from zero (`STORE-13`, `STORE-14`).
    ///
    /// # Errors
    ///
    /// NOT_FOUND when no event is queued.
    pub fn watch_next(&mut self) -> Result<(WatchEvent, Vec<u8>), Status> {
        let (header, _) = self.peek_event().ok_or(Status::NOT_FOUND)?;
        let (_, path) = self.events.pop_front().ok_or(Status::NOT_FOUND)?;
        self.dropped = 0;
        Ok((header, path))
    }

    /// STORE.TXN_START: a new nonzero transaction id (`STORE-15`).
    ///
    /// # Errors
    ///
    /// NO_SPACE when the guest has [`MAX_TRANSACTIONS`] open, and xenstored's refusals through
    /// [`status_for`].
    pub fn txn_start(&mut self) -> Result<u32, Status> {
        if self.txns.len() as u64 >= u64::from(MAX_TRANSACTIONS) {
            return Err(Status::NO_SPACE);
        }
        let t = self.xs.transaction_start().map_err(|e| status_for(&e))?;
        // Access every node of the subtree now (STORE-16, STORE-17).
        let root = self.root.clone();
        let visible = match self.snapshot(t, &root) {
            Ok(v) => v,
            Err(e) => {
                let _ = self.xs.transaction_end(t, false);
                return Err(e);
            }
        };
        let id = loop {
            let id = self.next_txn;
            self.next_txn = self.next_txn.wrapping_add(1).max(1);
            if !self.txns.contains_key(&id) {
                break id;
            }
        };
        self.txns.insert(
            id,
            Txn {
                id: t,
                removed: Vec::new(),
                created: 0,
                visible,
                doomed: false,
            },
        );
        Ok(id)
    }

    /// The nodes of the subtree at `root` in xenstored transaction `t`, each accessed there.
    fn snapshot(&mut self, t: TxnId, root: &str) -> Result<BTreeSet<String>, Status> {
        let nodes = self.subtree(t, root)?;
        for n in &nodes {
            match self.xs.get_perms(t, n) {
                Ok(_) | Err(Error::Xenstored(XsErrno::Enoent)) => {}
                Err(e) => return Err(status_for(&e)),
            }
        }
        Ok(nodes.into_iter().collect())
    }

    fn end(&mut self, txn: u64, commit: bool) -> Result<(), Status> {
        if txn == 0 {
            return Err(Status::INVALID_PARAM);
        }
        let id = u32::try_from(txn).map_err(|_| Status::INVALID_PARAM)?;
        let t = self.txns.remove(&id).ok_or(Status::NOT_FOUND)?;
        // A node it used was created by someone else after TXN_START (STORE-16).
        if commit && t.doomed {
            let _ = self.xs.transaction_end(t.id, false);
            return Err(Status::CONFLICT);
        }
        // The node quota again at the commit: nodes created by others since the transaction's
        // writes were checked are changes of the subtree, a CONFLICT (`STORE-17` allows it).
        if commit && t.created > 0 {
            let room = match self.node_count() {
                Ok(n) => n + t.created <= u64::from(MAX_ENTRIES),
                Err(e) => {
                    let _ = self.xs.transaction_end(t.id, false);
                    return Err(e);
                }
            };
            if !room {
                let _ = self.xs.transaction_end(t.id, false);
                return Err(Status::CONFLICT);
            }
        }
        self.xs
            .transaction_end(t.id, commit)
            .map_err(|e| status_for(&e))?;
        if commit {
            for r in t.removed {
                self.removed_node(r);
            }
        }
        Ok(())
    }

    /// STORE.TXN_COMMIT: applies the transaction atomically and ends it; CONFLICT when xenstored
    /// found a concurrent change (`STORE-16`, `STORE-37`).
    ///
    /// # Errors
    ///
    /// INVALID_PARAM for 0 or an id above `u32::MAX`, NOT_FOUND for an id that is not open,
    /// CONFLICT, and xenstored's other refusals through [`status_for`]. The transaction has ended
    /// in every case but the first two.
    pub fn txn_commit(&mut self, txn: u64) -> Result<(), Status> {
        self.end(txn, true)
    }

    /// STORE.TXN_ABORT: discards the transaction's changes and ends it (`STORE-18`).
    ///
    /// # Errors
    ///
    /// As [`GuestStore::txn_commit`], without CONFLICT.
    pub fn txn_abort(&mut self, txn: u64) -> Result<(), Status> {
        self.end(txn, false)
    }
}

/// `path` joined below the absolute path `base`.
fn join(base: &str, name: &str) -> String {
    if base == "/" {
        format!("/{name}")
    } else {
        format!("{base}/{name}")
    }
}

/// The parent of an absolute path (`/` for a top-level node).
fn parent(abs: &str) -> &str {
    match abs.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &abs[..i],
    }
}

/// `path` lies strictly below the absolute path `base`.
fn strictly_below(path: &str, base: &str) -> bool {
    path.len() > base.len()
        && path.starts_with(base)
        && (base == "/" || path.as_bytes().get(base.len()) == Some(&b'/'))
}

/// Child names sorted in ascending byte order, each followed by a NUL (`STORE-7`).
fn nul_list(mut names: Vec<String>) -> Vec<u8> {
    names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let mut out = Vec::with_capacity(names.iter().map(|n| n.len() + 1).sum());
    for n in names {
        out.extend_from_slice(n.as_bytes());
        out.push(0);
    }
    out
}

/// Removes `abs` in transaction `t`, ENOENT when it does not exist.
fn remove_existing(xs: &mut impl XenStoreOps, t: TxnId, abs: &str) -> crate::Result<()> {
    xs.read(t, abs)?;
    xs.remove(t, abs)
}

/// The Xen transport's STORE (`XEN-10`): a guest's STORE calls, checked by the `Vm`, run on its
/// xenstore subtree.
impl<S: XenStoreOps + Send> pvabi_host::StoreService for GuestStore<S> {
    fn read(&mut self, path: &[u8], txn: u32) -> Result<Vec<u8>, Status> {
        GuestStore::read(self, path, u64::from(txn))
    }
    fn write(&mut self, path: &[u8], value: &[u8], txn: u32) -> Result<(), Status> {
        GuestStore::write(self, path, value, u64::from(txn))
    }
    fn list(&mut self, path: &[u8], txn: u32) -> Result<Vec<u8>, Status> {
        GuestStore::list(self, path, u64::from(txn))
    }
    fn remove(&mut self, path: &[u8], txn: u32) -> Result<(), Status> {
        GuestStore::remove(self, path, u64::from(txn))
    }
    fn watch(&mut self, path: &[u8], port: u32) -> Result<u32, Status> {
        GuestStore::watch(self, path, port)
    }
    fn unwatch(&mut self, id: u32) -> Result<(), Status> {
        GuestStore::unwatch(self, id)
    }
    fn peek_event(&self) -> Option<pvabi_host::WatchFired> {
        GuestStore::peek_event(self).map(|(h, path)| pvabi_host::WatchFired {
            watch_id: h.watch_id,
            path: path.to_vec(),
            dropped: h.dropped,
        })
    }
    fn pop_event(&mut self) {
        let _ = self.watch_next();
    }
    fn poll_events(&mut self) -> Result<Vec<u32>, Status> {
        GuestStore::poll_events(self)
    }
    fn txn_start(&mut self) -> Result<u32, Status> {
        GuestStore::txn_start(self)
    }
    fn txn_commit(&mut self, txn: u32) -> Result<(), Status> {
        GuestStore::txn_commit(self, u64::from(txn))
    }
    fn txn_abort(&mut self, txn: u32) -> Result<(), Status> {
        GuestStore::txn_abort(self, u64::from(txn))
    }
    fn host_write(&mut self, path: &[u8], value: &[u8], access: GuestAccess) -> Result<(), Status> {
        GuestStore::host_write(self, path, value, access)
    }
    fn host_read(&mut self, path: &[u8]) -> Result<Vec<u8>, Status> {
        GuestStore::host_read(self, path)
    }
    fn host_remove(&mut self, path: &[u8]) -> Result<(), Status> {
        GuestStore::host_remove(self, path)
    }
    fn host_list(&mut self, path: &[u8]) -> Result<Vec<u8>, Status> {
        GuestStore::host_list(self, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::WatchEvent as XsEvent;
    use crate::perms::Perm;
    use std::collections::BTreeSet;

    /// A change made in a transaction: the path and its new value, `None` for a removal.
    type PendingChange = (String, Option<Vec<u8>>);

    /// A small in-memory model of xenstored: nodes, watches with the registration event,
    /// transactions applied at commit (with an injectable conflict), and error injection.
    #[derive(Default)]
    struct Fake {
        nodes: BTreeMap<String, Vec<u8>>,
        /// Permissions set explicitly (not transactional); other nodes are the guest's.
        perms: BTreeMap<String, Vec<Perm>>,
        watches: BTreeSet<(String, String)>,
        events: VecDeque<XsEvent>,
        txns: BTreeMap<u32, Vec<PendingChange>>,
        next_txn: u32,
        conflict_next_commit: bool,
        fail_next: Option<XsErrno>,
        calls: Vec<&'static str>,
    }

    impl Fake {
        fn with_root(root: &str) -> Fake {
            let mut f = Fake::default();
            f.nodes.insert(root.into(), Vec::new());
            f
        }

        fn injected(&mut self, call: &'static str) -> crate::Result<()> {
            self.calls.push(call);
            match self.fail_next.take() {
                Some(e) => Err(Error::Xenstored(e)),
                None => Ok(()),
            }
        }

        /// As xenstored: a change fires the watches on the node and above naming it; a
        /// removal fires those below naming the watched path.
        fn fire(&mut self, path: &str) {
            for (w, token) in &self.watches {
                let name = if path == w || path.starts_with(&format!("{w}/")) {
                    path
                } else if w.starts_with(&format!("{path}/")) {
                    w.as_str()
                } else {
                    continue;
                };
                self.events.push_back(XsEvent {
                    path: name.into(),
                    token: token.clone(),
                });
            }
        }

        fn apply(&mut self, path: &str, value: Option<Vec<u8>>) {
            match value {
                Some(v) => {
                    let mut p = path.to_string();
                    while let Some(i) = p.rfind('/') {
                        p.truncate(i);
                        if p.is_empty() {
                            break;
                        }
                        self.nodes.entry(p.clone()).or_default();
                    }
                    self.nodes.insert(path.into(), v);
                }
                None => {
                    let prefix = format!("{path}/");
                    self.nodes
                        .retain(|k, _| k != path && !k.starts_with(&prefix));
                }
            }
            self.fire(path);
        }

        /// The value as transaction `t` sees it.
        fn view(&self, t: TxnId, path: &str) -> Option<Vec<u8>> {
            if let Some(ops) = self.txns.get(&t.0) {
                for (p, v) in ops.iter().rev() {
                    if p == path {
                        return v.clone();
                    }
                    if v.is_none() && path.starts_with(&format!("{p}/")) {
                        return None;
                    }
                }
            }
            self.nodes.get(path).cloned()
        }
    }

    impl XenStoreOps for Fake {
        fn read(&mut self, t: TxnId, path: &str) -> crate::Result<Vec<u8>> {
            self.injected("read")?;
            self.view(t, path).ok_or(Error::Xenstored(XsErrno::Enoent))
        }
        fn write(&mut self, t: TxnId, path: &str, value: &[u8]) -> crate::Result<()> {
            self.injected("write")?;
            match self.txns.get_mut(&t.0) {
                Some(ops) => ops.push((path.into(), Some(value.to_vec()))),
                None if t == TxnId::NONE => self.apply(path, Some(value.to_vec())),
                None => return Err(Error::Xenstored(XsErrno::Enoent)),
            }
            Ok(())
        }
        fn mkdir(&mut self, t: TxnId, path: &str) -> crate::Result<()> {
            self.write(t, path, b"")
        }
        fn directory(&mut self, t: TxnId, path: &str) -> crate::Result<Vec<String>> {
            self.injected("directory")?;
            self.view(t, path)
                .ok_or(Error::Xenstored(XsErrno::Enoent))?;
            let prefix = format!("{path}/");
            Ok(self
                .nodes
                .keys()
                .filter_map(|k| k.strip_prefix(&prefix))
                .filter(|r| !r.contains('/'))
                .map(String::from)
                .rev()
                .collect())
        }
        fn remove(&mut self, t: TxnId, path: &str) -> crate::Result<()> {
            self.injected("remove")?;
            // xenstored: a missing node whose parent exists is removed "successfully".
            match self.txns.get_mut(&t.0) {
                Some(ops) => ops.push((path.into(), None)),
                None => self.apply(path, None),
            }
            Ok(())
        }
        fn get_perms(&mut self, t: TxnId, path: &str) -> crate::Result<Vec<Perm>> {
            self.injected("get_perms")?;
            self.view(t, path)
                .ok_or(Error::Xenstored(XsErrno::Enoent))?;
            Ok(self
                .perms
                .get(path)
                .cloned()
                .unwrap_or_else(|| vec![Perm::new(GUEST, crate::Access::None)]))
        }
        fn set_perms(&mut self, _t: TxnId, path: &str, p: &[Perm]) -> crate::Result<()> {
            self.injected("set_perms")?;
            self.perms.insert(path.into(), p.to_vec());
            Ok(())
        }
        fn watch(&mut self, path: &str, token: &str) -> crate::Result<()> {
            self.injected("watch")?;
            if !self.watches.insert((path.into(), token.into())) {
                return Err(Error::Xenstored(XsErrno::Eexist));
            }
            self.events.push_back(XsEvent {
                path: path.into(),
                token: token.into(),
            });
            Ok(())
        }
        fn unwatch(&mut self, path: &str, token: &str) -> crate::Result<()> {
            self.injected("unwatch")?;
            if self.watches.remove(&(path.into(), token.into())) {
                Ok(())
            } else {
                Err(Error::Xenstored(XsErrno::Enoent))
            }
        }
        fn next_watch_event(&mut self, _t: Option<Duration>) -> crate::Result<Option<XsEvent>> {
            Ok(self.events.pop_front())
        }
        fn transaction_start(&mut self) -> crate::Result<TxnId> {
            self.injected("transaction_start")?;
            self.next_txn += 1;
            self.txns.insert(self.next_txn, Vec::new());
            Ok(TxnId(self.next_txn))
        }
        fn transaction_end(&mut self, t: TxnId, commit: bool) -> crate::Result<()> {
            self.injected("transaction_end")?;
            let ops = self
                .txns
                .remove(&t.0)
                .ok_or(Error::Xenstored(XsErrno::Enoent))?;
            if commit {
                if std::mem::take(&mut self.conflict_next_commit) {
                    return Err(Error::Xenstored(XsErrno::Eagain));
                }
                for (p, v) in ops {
                    self.apply(&p, v);
                }
            }
            Ok(())
        }
    }

    const ROOT: &str = "/local/domain/7/pvabi";
    const GUEST: u32 = 7;

    fn store() -> GuestStore<Fake> {
        GuestStore::new(Fake::with_root(ROOT), format!("{ROOT}/"), GUEST, 0)
    }

    #[test]
    fn paths_stay_inside_the_subtree() {
        let mut s = store();
        s.write(b"a/b", b"v", 0).unwrap();
        assert!(s.xs.nodes.contains_key(&format!("{ROOT}/a/b")));
        for bad in [
            &b"/etc"[..],
            b"../x",
            b"a/../../x",
            b"a//b",
            b"",
            b"a b",
            b"@introduceDomain",
        ] {
            assert_eq!(s.write(bad, b"v", 0), Err(Status::INVALID_PARAM), "{bad:?}");
            assert_eq!(s.read(bad, 0), Err(Status::INVALID_PARAM), "{bad:?}");
        }
        assert_eq!(s.read(&[b'a'; 257], 0), Err(Status::INVALID_PARAM));
        // The root is listable, not readable.
        assert_eq!(s.list(b"", 0).unwrap(), b"a\0");
        assert_eq!(s.read(b"", 0), Err(Status::INVALID_PARAM));
    }

    #[test]
    fn root_of_the_whole_store() {
        let mut s = GuestStore::new(Fake::with_root("/"), "/", GUEST, 0);
        s.write(b"a/b", b"v", 0).unwrap();
        assert!(s.xs.nodes.contains_key("/a/b"));
        let id = s.watch(b"a", 4).unwrap();
        s.poll_events().unwrap();
        s.write(b"a/c", b"v", 0).unwrap();
        assert_eq!(s.poll_events().unwrap(), vec![4]);
        assert_eq!(s.watch_next().unwrap().1, b"a/c");
        s.unwatch(id).unwrap();
    }

    #[test]
    fn read_write_list_remove() {
        let mut s = store();
        assert_eq!(s.read(b"x", 0), Err(Status::NOT_FOUND));
        s.write(b"x", b"", 0).unwrap();
        assert_eq!(s.read(b"x", 0).unwrap(), b"");
        for n in ["d/c", "d/a", "d/b.1", "d/B"] {
            s.write(n.as_bytes(), b"1", 0).unwrap();
        }
        assert_eq!(s.list(b"d", 0).unwrap(), b"B\0a\0b.1\0c\0");
        assert_eq!(s.list(b"d/a", 0).unwrap(), b"");
        assert_eq!(s.list(b"nope", 0), Err(Status::NOT_FOUND));
        // A missing node is NOT_FOUND although xenstored would acknowledge it.
        assert_eq!(s.remove(b"d/zz", 0), Err(Status::NOT_FOUND));
        s.remove(b"d", 0).unwrap();
        assert_eq!(s.read(b"d/a", 0), Err(Status::NOT_FOUND));
        assert_eq!(s.remove(b"d", 0), Err(Status::NOT_FOUND));
        assert!(s.xs.txns.is_empty(), "own transactions are ended");
    }

    #[test]
    fn value_limit_and_xenstored_refusals() {
        let mut s = store();
        assert_eq!(s.write(b"v", &[0; 4097], 0), Err(Status::NO_SPACE));
        assert!(!s.xs.calls.contains(&"write"), "refused before sending");
        s.xs.fail_next = Some(XsErrno::Eacces);
        assert_eq!(s.read(b"v", 0), Err(Status::DENIED));
        s.xs.fail_next = Some(XsErrno::Enospc);
        assert_eq!(s.write(b"v", b"1", 0), Err(Status::NO_SPACE));
        s.xs.fail_next = Some(XsErrno::E2big);
        assert_eq!(s.write(b"v", b"1", 0), Err(Status::NO_SPACE));
        s.xs.fail_next = Some(XsErrno::Eio);
        assert_eq!(s.list(b"", 0), Err(Status::FAILED));
    }

    #[test]
    fn transactions() {
        let mut s = store();
        assert_eq!(s.txn_commit(0), Err(Status::INVALID_PARAM));
        assert_eq!(s.txn_abort(1 << 32), Err(Status::INVALID_PARAM));
        assert_eq!(s.read(b"x", 1 << 32), Err(Status::INVALID_PARAM));
        assert_eq!(s.read(b"x", 5), Err(Status::NOT_FOUND));
        assert_eq!(s.txn_commit(5), Err(Status::NOT_FOUND));

        let t = s.txn_start().unwrap();
        assert_ne!(t, 0);
        s.write(b"x", b"1", u64::from(t)).unwrap();
        assert_eq!(s.read(b"x", u64::from(t)).unwrap(), b"1");
        assert_eq!(s.read(b"x", 0), Err(Status::NOT_FOUND));
        assert_eq!(s.remove(b"missing", u64::from(t)), Err(Status::NOT_FOUND));
        s.txn_commit(u64::from(t)).unwrap();
        assert_eq!(s.read(b"x", 0).unwrap(), b"1");
        assert_eq!(s.txn_commit(u64::from(t)), Err(Status::NOT_FOUND));

        let t = s.txn_start().unwrap();
        s.write(b"x", b"2", u64::from(t)).unwrap();
        s.xs.conflict_next_commit = true;
        assert_eq!(s.txn_commit(u64::from(t)), Err(Status::CONFLICT));
        assert_eq!(s.read(b"x", 0).unwrap(), b"1");
        assert_eq!(
            s.txn_abort(u64::from(t)),
            Err(Status::NOT_FOUND),
            "ended by the conflict"
        );

        let t = s.txn_start().unwrap();
        s.write(b"y", b"1", u64::from(t)).unwrap();
        s.txn_abort(u64::from(t)).unwrap();
        assert_eq!(s.read(b"y", 0), Err(Status::NOT_FOUND));

        let open: Vec<u32> = (0..MAX_TRANSACTIONS)
            .map(|_| s.txn_start().unwrap())
            .collect();
        assert_eq!(s.txn_start(), Err(Status::NO_SPACE));
        for t in open {
            s.txn_abort(u64::from(t)).unwrap();
        }
        // REMOVE outside a transaction retries its own one on conflict.
        s.xs.conflict_next_commit = true;
        s.remove(b"x", 0).unwrap();
        assert_eq!(s.read(b"x", 0), Err(Status::NOT_FOUND));
    }

    #[test]
    fn watches_and_events() {
        let mut s = store();
        assert_eq!(s.watch(b"w", 0), Err(Status::INVALID_PARAM));
        assert_eq!(s.watch(b"w", 1024), Err(Status::INVALID_PARAM));
        assert_eq!(s.watch(b"../w", 3), Err(Status::INVALID_PARAM));
        let id = s.watch(b"w", 3).unwrap();
        assert_ne!(id, 0);
        // The registration event is not shown (STORE-10).
        assert_eq!(s.poll_events().unwrap(), Vec::<u32>::new());
        assert_eq!(s.watch_next(), Err(Status::NOT_FOUND));
        s.write(b"w/c", b"1", 0).unwrap();
        s.write(b"other", b"1", 0).unwrap();
        assert_eq!(s.poll_events().unwrap(), vec![3]);
        let (h, path) = s.watch_next().unwrap();
        assert_eq!((h.watch_id, h.path_len, h.dropped), (id, 3, 0));
        assert_eq!(path, b"w/c");
        // Events outside the subtree are never shown.
        s.xs.events.push_back(XsEvent {
            path: "/local/domain/8/secret".into(),
            token: format!("pvabi-w{id}"),
        });
        assert!(s.poll_events().unwrap().is_empty());
        // Queue overflow: dropped events still raise and are counted.
        for _ in 0..MAX_WATCH_EVENTS + 3 {
            s.write(b"w", b"1", 0).unwrap();
        }
        assert_eq!(s.poll_events().unwrap().len() as u32, MAX_WATCH_EVENTS + 3);
        assert_eq!(s.peek_event().unwrap().0.dropped, 3);
        assert_eq!(s.watch_next().unwrap().0.dropped, 3);
        assert_eq!(s.watch_next().unwrap().0.dropped, 0);
        // UNWATCH discards the queue.
        s.unwatch(id).unwrap();
        assert_eq!(s.watch_next(), Err(Status::NOT_FOUND));
        assert_eq!(s.unwatch(id), Err(Status::NOT_FOUND));
        // The watch count limit.
        let ids: Vec<u32> = (0..MAX_WATCHES)
            .map(|_| s.watch(b"w", 1).unwrap())
            .collect();
        assert_eq!(s.watch(b"w", 1), Err(Status::NO_SPACE));
        for i in ids {
            s.unwatch(i).unwrap();
        }
        // A refusal by xenstored leaves nothing registered.
        s.xs.fail_next = Some(XsErrno::E2big);
        assert_eq!(s.watch(b"w", 1), Err(Status::NO_SPACE));
        assert!(s.watches.is_empty());
        // The empty path is LIST's only (STORE-24).
        assert_eq!(s.watch(b"", 2), Err(Status::INVALID_PARAM));
        assert!(s.watches.is_empty());
    }
}

/// The chapter 11 rules of the mapping over [`crate::testing::MemXenStore`], which keeps
/// permissions, isolates transactions and fires watches as xenstored does.
#[cfg(test)]
mod mem_tests {
    use super::*;
    use crate::testing::MemXenStore;

    const GUEST: u32 = 5;
    const ROOT: &str = "/local/domain/5/pvabi";

    /// The store, and the guest's STORE on its subtree as the transport sets it up (the root
    /// owned by the guest).
    fn world() -> (MemXenStore, GuestStore<MemXenStore>) {
        let xs = MemXenStore::new(&[0, GUEST]);
        let mut dom0 = xs.connect(0);
        dom0.mkdir(TxnId::NONE, ROOT).expect("root");
        dom0.set_perms(TxnId::NONE, ROOT, &[Perm::new(GUEST, Access::None)])
            .expect("root perms");
        let g = GuestStore::new(xs.connect(0), ROOT, GUEST, 0);
        (xs, g)
    }

    fn abs(p: &str) -> String {
        format!("{ROOT}/{p}")
    }

    #[test]
    fn guest_access_lives_in_xenstore_permissions() {
        let (xs, mut g) = world();
        g.write(b"acc", b"", 0).expect("guest node");
        g.host_write(b"acc/none", b"secret", GuestAccess::NONE)
            .expect("host");
        g.host_write(b"acc/ro", b"r", GuestAccess::READ)
            .expect("host");
        g.host_write(b"acc/rw", b"w", GuestAccess::READ_WRITE)
            .expect("host");
        g.host_write(b"acc/sub/deep", b"d", GuestAccess::NONE)
            .expect("host");
        let mut dom0 = xs.connect(0);
        let perms = |dom0: &mut MemXenStore, p: &str| dom0.get_perms(TxnId::NONE, &abs(p)).unwrap();
        assert_eq!(
            perms(&mut dom0, "acc/ro"),
            vec![Perm::new(0, Access::None), Perm::new(GUEST, Access::Read)]
        );
        assert_eq!(
            perms(&mut dom0, "acc"),
            vec![Perm::new(GUEST, Access::None)]
        );
        // STORE-2.
        assert_eq!(g.read(b"acc/none", 0), Err(Status::DENIED));
        assert_eq!(g.list(b"acc/none", 0), Err(Status::DENIED));
        assert_eq!(g.read(b"acc/ro", 0), Ok(b"r".to_vec()));
        assert_eq!(g.list(b"acc/ro", 0), Ok(Vec::new()));
        // STORE-25.
        assert_eq!(g.write(b"acc/ro", b"x", 0), Err(Status::DENIED));
        assert_eq!(g.write(b"acc/none", b"x", 0), Err(Status::DENIED));
        assert_eq!(g.remove(b"acc/ro", 0), Err(Status::DENIED));
        assert_eq!(g.remove(b"acc/none", 0), Err(Status::DENIED));
        // STORE-26: the nearest existing ancestor decides; nothing is created.
        for p in ["acc/ro/c", "acc/none/a/b", "acc/sub/deep/x"] {
            assert_eq!(g.write(p.as_bytes(), b"x", 0), Err(Status::DENIED), "{p}");
        }
        assert_eq!(g.host_read(b"acc/none/a"), Err(Status::NOT_FOUND));
        // STORE-5: a guest write to a READ_WRITE host node keeps its ownership.
        g.write(b"acc/rw", b"g", 0).expect("rw");
        assert_eq!(
            perms(&mut dom0, "acc/rw"),
            vec![Perm::new(0, Access::None), Perm::new(GUEST, Access::Both)]
        );
        g.write(b"acc/rw/c", b"g", 0).expect("below rw");
        g.write(b"acc/mine", b"m", 0).expect("mine");
        // STORE-27: one node of the subtree without READ_WRITE denies it all.
        assert_eq!(g.remove(b"acc", 0), Err(Status::DENIED));
        assert_eq!(g.remove(b"acc/sub", 0), Err(Status::DENIED));
        assert_eq!(g.host_read(b"acc/mine"), Ok(b"m".to_vec()));
        assert_eq!(g.host_read(b"acc/sub/deep"), Ok(b"d".to_vec()));
        // HAR-5: the host ignores guest access.
        assert_eq!(g.host_read(b"acc/none"), Ok(b"secret".to_vec()));
        assert_eq!(
            g.host_list(b"acc"),
            Ok(b"mine\0none\0ro\0rw\0sub\0".to_vec())
        );
        // The guest's own xenstore connection meets the same access from xenstored.
        let mut own = xs.connect(GUEST);
        assert!(matches!(
            own.read(TxnId::NONE, &abs("acc/none")),
            Err(Error::Xenstored(XsErrno::Eacces))
        ));
        assert_eq!(own.read(TxnId::NONE, &abs("acc/ro")).unwrap(), b"r");
        assert!(own.write(TxnId::NONE, &abs("acc/ro"), b"x").is_err());
        own.write(TxnId::NONE, &abs("acc/rw"), b"own").expect("rw");
        // Handing the host nodes over lets the guest remove the subtree.
        for p in ["acc/none", "acc/ro", "acc/sub/deep"] {
            g.host_write(p.as_bytes(), b"", GuestAccess::READ_WRITE)
                .expect("host");
        }
        g.remove(b"acc", 0).expect("remove");
        assert_eq!(g.list(b"", 0), Ok(Vec::new()));
        // HAR-4, HAR-14.
        assert_eq!(
            g.host_write(b"x", b"", GuestAccess(2)),
            Err(Status::INVALID_PARAM)
        );
        assert_eq!(
            g.host_write(b"", b"", GuestAccess::READ),
            Err(Status::INVALID_PARAM)
        );
        assert_eq!(
            g.host_write(b"x", &[0; 4097], GuestAccess::READ),
            Err(Status::NO_SPACE)
        );
        assert_eq!(g.host_remove(b"x"), Err(Status::NOT_FOUND));
    }

    #[test]
    fn node_quota() {
        let (_xs, mut g) = world();
        g.host_write(b"h", b"", GuestAccess::READ_WRITE)
            .expect("host");
        for i in 1..MAX_ENTRIES - 1 {
            g.write(format!("q/n{i}").as_bytes(), b"", 0)
                .unwrap_or_else(|e| panic!("node {i}: {e}"));
        }
        // h, q and 1022 nodes below q: 1024.
        assert_eq!(g.write(b"q/more", b"", 0), Err(Status::NO_SPACE));
        assert_eq!(g.write(b"new/leaf", b"", 0), Err(Status::NO_SPACE));
        assert_eq!(g.host_read(b"new"), Err(Status::NOT_FOUND));
        let t = u64::from(g.txn_start().expect("txn"));
        assert_eq!(g.write(b"q/more", b"", t), Err(Status::NO_SPACE));
        g.txn_abort(t).expect("abort");
        g.write(b"q/n1", b"overwrite", 0).expect("overwrite");
        g.host_write(b"host/beyond", b"", GuestAccess::READ_WRITE)
            .expect("host writes ignore the node quota");
        g.remove(b"host", 0).expect("remove");
        g.remove(b"q/n1", 0).expect("remove");
        g.write(b"q/again", b"", 0).expect("room again");
    }

    #[test]
    fn node_count_follows_other_writers() {
        let (xs, mut g) = world();
        let mut other = xs.connect(0);
        g.write(b"a/b/c", b"", 0).expect("write");
        assert_eq!(g.node_count(), Ok(3));
        // Another client creates (with an ancestor), removes, and replaces a subtree.
        other.write(TxnId::NONE, &abs("x/y"), b"").expect("write");
        assert_eq!(g.node_count(), Ok(5));
        other.remove(TxnId::NONE, &abs("a/b")).expect("remove");
        assert_eq!(g.node_count(), Ok(3));
        g.write(b"x/y/1", b"", 0).expect("write");
        g.write(b"x/y/2", b"", 0).expect("write");
        other.remove(TxnId::NONE, &abs("x")).expect("remove");
        other.write(TxnId::NONE, &abs("x/z"), b"").expect("write");
        assert_eq!(g.node_count(), Ok(3), "a, x, x/z");
        // The quota at the commit counts what others created meanwhile.
        for i in 4..MAX_ENTRIES - 1 {
            g.write(format!("f/{i}").as_bytes(), b"", 0)
                .unwrap_or_else(|e| panic!("node {i}: {e}"));
        }
        assert_eq!(g.node_count(), Ok(u64::from(MAX_ENTRIES) - 1));
        let t = u64::from(g.txn_start().expect("txn"));
        g.write(b"last", b"", t).expect("one node left");
        assert_eq!(g.write(b"more", b"", t), Err(Status::NO_SPACE));
        other.write(TxnId::NONE, &abs("host"), b"").expect("write");
        assert_eq!(g.txn_commit(t), Err(Status::CONFLICT));
        assert_eq!(g.host_read(b"last"), Err(Status::NOT_FOUND));
    }

    #[test]
    fn watch_events_name_the_changed_node() {
        let (xs, mut g) = world();
        let w = g.watch(b"a", 3).expect("watch");
        // STORE-10: no event at registration.
        assert_eq!(g.poll_events(), Ok(Vec::new()));
        // One event for a write that creates ancestors, none for the ancestors.
        g.write(b"a/b/c", b"1", 0).expect("write");
        assert_eq!(g.poll_events(), Ok(vec![3]));
        assert_eq!(g.watch_next().map(|e| e.1), Ok(b"a/b/c".to_vec()));
        // A host write fires once (its permissions change is in the same transaction).
        g.host_write(b"a/h", b"", GuestAccess::READ).expect("host");
        assert_eq!(g.poll_events(), Ok(vec![3]));
        assert_eq!(g.watch_next().map(|e| e.1), Ok(b"a/h".to_vec()));
        // A write by another xenstore client fires too.
        xs.connect(0)
            .write(TxnId::NONE, &abs("a/b"), b"x")
            .expect("write");
        assert_eq!(g.poll_events(), Ok(vec![3]));
        assert_eq!(g.watch_next().map(|e| e.1), Ok(b"a/b".to_vec()));
        // A removal fires the watches inside the removed subtree, naming the removed node.
        let inner = g.watch(b"a/b/c/d", 4).expect("watch");
        g.host_write(b"a/h", b"", GuestAccess::READ_WRITE)
            .expect("host");
        assert_eq!(g.poll_events(), Ok(vec![3]));
        let _ = g.watch_next();
        g.remove(b"a", 0).expect("remove");
        let mut ports = g.poll_events().expect("poll");
        ports.sort_unstable();
        assert_eq!(ports, vec![3, 4]);
        let mut seen = Vec::new();
        while let Ok((h, p)) = g.watch_next() {
            seen.push((h.watch_id, p));
        }
        seen.sort();
        assert_eq!(seen, vec![(w, b"a".to_vec()), (inner, b"a".to_vec())]);
        // A transaction fires at its commit, once per node.
        let t = u64::from(g.txn_start().expect("txn"));
        g.write(b"a/x", b"1", t).expect("write");
        g.write(b"a/x", b"2", t).expect("write");
        g.write(b"a/y", b"1", t).expect("write");
        assert_eq!(g.poll_events(), Ok(Vec::new()));
        g.txn_commit(t).expect("commit");
        assert_eq!(g.poll_events(), Ok(vec![3, 3]));
        g.unwatch(w).expect("unwatch");
        g.unwatch(inner).expect("unwatch");
    }

    #[test]
    fn transactions_are_isolated_and_conflict() {
        let (xs, mut g) = world();
        g.write(b"n", b"0", 0).expect("write");
        let t = u64::from(g.txn_start().expect("txn"));
        // STORE-17: the store as at TXN_START plus the transaction's own changes.
        g.host_write(b"n", b"1", GuestAccess::READ_WRITE)
            .expect("host");
        g.write(b"late", b"", 0).expect("write");
        assert_eq!(g.read(b"n", t), Ok(b"0".to_vec()));
        assert_eq!(g.read(b"late", t), Err(Status::NOT_FOUND));
        g.write(b"mine", b"m", t).expect("write");
        assert_eq!(g.read(b"mine", 0), Err(Status::NOT_FOUND));
        assert_eq!(g.list(b"", t), Ok(b"mine\0n\0".to_vec()));
        // STORE-16: a node it read changed since: CONFLICT, nothing applied, ended.
        assert_eq!(g.txn_commit(t), Err(Status::CONFLICT));
        assert_eq!(g.read(b"mine", 0), Err(Status::NOT_FOUND));
        assert_eq!(g.txn_abort(t), Err(Status::NOT_FOUND));
        // Without a concurrent change the commit applies everything.
        let t = u64::from(g.txn_start().expect("txn"));
        g.write(b"a/b", b"1", t).expect("write");
        g.remove(b"late", t).expect("remove");
        g.txn_commit(t).expect("commit");
        assert_eq!(g.host_read(b"a/b"), Ok(b"1".to_vec()));
        assert_eq!(g.host_read(b"late"), Err(Status::NOT_FOUND));
        // A missing node that appears conflicts.
        let t = u64::from(g.txn_start().expect("txn"));
        assert_eq!(g.read(b"z", t), Err(Status::NOT_FOUND));
        g.write(b"other", b"", t).expect("write");
        xs.connect(0)
            .write(TxnId::NONE, &abs("z"), b"")
            .expect("write");
        assert_eq!(g.txn_commit(t), Err(Status::CONFLICT));
        assert_eq!(g.host_read(b"other"), Err(Status::NOT_FOUND));
        // STORE-18.
        let t = u64::from(g.txn_start().expect("txn"));
        g.remove(b"n", t).expect("remove");
        g.txn_abort(t).expect("abort");
        assert_eq!(g.read(b"n", 0), Ok(b"1".to_vec()));
    }
}
