//! The configuration store of one guest (spec chapter 11, `STORE-*`): a hierarchical tree of
//! byte values with per-node guest access, quotas, watches and optimistic transactions.
//!
//! This module is independent of guest memory: the [`crate::Vm`] copies paths and values in,
//! calls [`Store`], copies results out, and raises the event ports [`Store::take_raised`] names.
//!
//! ## Semantics implemented (where spec/ is silent these are this crate's choices)
//! * Paths are checked with [`pvabi::store::valid_path`]; the empty path is the subtree root
//!   and is accepted by LIST only. Writing `a/b/c` creates missing ancestors with empty values,
//!   owned like the node written.
//! * Guest access: nodes the guest created are the guest's (full access). A host-written node
//!   carries a [`GuestAccess`]: READ needs bit 0, WRITE and REMOVE need bit 1 (on the node and,
//!   for REMOVE, on every descendant), creating a node needs write access to its nearest
//!   existing ancestor (the root is always writable), LIST needs read access to the node.
//!   Violations give DENIED. The host may do anything.
//! * Quotas (`STORE-19`): [`MAX_ENTRIES`] nodes (host-written included; the root does not
//!   count) and [`MAX_VALUE`] bytes per value for guest writes: NO_SPACE. [`MAX_WATCHES`]
//!   watches and [`MAX_TRANSACTIONS`] open transactions: NO_SPACE.
//! * Watches: a watch on `w` fires on every change (write or remove, by guest or host, or a
//!   committed transaction) of `w` or a node below it, and on the removal of an ancestor of
//!   `w`. Each firing queues `(watch id, changed path)` and raises the watch's port. At most
//!   [`MAX_WATCH_EVENTS`] events queue; further ones are dropped and counted (`STORE-14`).
//! * Transactions: reads see a snapshot taken at TXN_START plus the transaction's own
//!   changes. Every node the transaction read, listed, wrote or removed (and each ancestor a
//!   write may create) is stamped with its state in the snapshot; TXN_COMMIT fails with CONFLICT
//!   when any stamped node changed since (value, creation, removal or set of children), and
//!   otherwise applies the transaction's operations atomically. A commit or a failed commit ends
//!   the transaction. Unknown transaction ids give NOT_FOUND.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use pvabi::store::{
    valid_path, GuestAccess, MAX_ENTRIES, MAX_TRANSACTIONS, MAX_VALUE, MAX_WATCHES,
    MAX_WATCH_EVENTS,
};
use pvabi::Status;

use crate::platform::Quirks;

/// Who owns a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// Created by the guest: full guest access.
    Guest,
    /// Written by the host, with this guest access.
    Host(GuestAccess),
}

impl Owner {
    fn guest_can_read(self) -> bool {
        match self {
            Owner::Guest => true,
            Owner::Host(a) => a.0 & GuestAccess::READ.0 != 0,
        }
    }
    fn guest_can_write(self) -> bool {
        match self {
            Owner::Guest => true,
            Owner::Host(a) => a.0 & 2 != 0,
        }
    }
}

/// Who performs a store operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Actor {
    /// The guest, subject to access, quotas and value limits.
    Guest,
    /// The host; its writes mark nodes with the given guest access.
    Host(GuestAccess),
}

#[derive(Clone, Debug)]
struct Node {
    value: Arc<[u8]>,
    owner: Owner,
    /// Generation of the last change of this node's value or of its creation.
    gen: u64,
    /// Generation of the last change of its set of children.
    child_gen: u64,
}

type Tree = BTreeMap<Vec<u8>, Node>;
/// A node's state for conflict detection: absent, or (gen, child_gen).
type Stamp = Option<(u64, u64)>;

#[derive(Clone, Debug)]
enum Op {
    Write(Vec<u8>, Arc<[u8]>),
    Remove(Vec<u8>),
}

#[derive(Debug)]
struct Txn {
    base: Tree,
    work: Tree,
    /// Node state in `base` at first access, and whether its set of children matters.
    stamps: BTreeMap<Vec<u8>, (Stamp, bool)>,
    ops: Vec<Op>,
}

impl Txn {
    fn touch(&mut self, p: &[u8], children: bool) {
        let base = &self.base;
        let e = self
            .stamps
            .entry(p.to_vec())
            .or_insert_with(|| (stamp(base, p), false));
        e.1 |= children;
    }
}

/// Whether a node still has the state a transaction saw.
fn unchanged(tree: &Tree, p: &[u8], seen: Stamp, children: bool) -> bool {
    match (stamp(tree, p), seen) {
        (None, None) => true,
        (Some((g, c)), Some((sg, sc))) => g == sg && (!children || c == sc),
        _ => false,
    }
}

#[derive(Clone, Debug)]
struct Watch {
    path: Vec<u8>,
    port: u32,
}

/// One queued watch event: what STORE.WATCH_NEXT returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchFired {
    /// The watch id.
    pub watch_id: u32,
    /// The path that changed, relative to the guest's subtree.
    pub path: Vec<u8>,
    /// Events dropped since the previous WATCH_NEXT.
    pub dropped: u32,
}

/// A guest's STORE service kept outside the [`crate::Vm`] (for example the Xen backend's
/// mapping onto the guest's xenstore subtree), as [`crate::VmConfig::store_service`].
///
/// The `Vm` decodes and checks each STORE call's registers and guest buffers as for its own
/// store, then calls these methods with the path bytes read from the guest (not yet checked
/// against `STORE-1`: an implementation checks them) and a transaction id (0: none). Each
/// method returns the statuses chapter 11 names for the call.
pub trait StoreService: Send {
    /// STORE.READ: the node's value.
    ///
    /// # Errors
    ///
    /// A chapter 11 status.
    fn read(&mut self, path: &[u8], txn: u32) -> Result<Vec<u8>, Status>;
    /// STORE.WRITE.
    ///
    /// # Errors
    ///
    /// A chapter 11 status.
    fn write(&mut self, path: &[u8], value: &[u8], txn: u32) -> Result<(), Status>;
    /// STORE.LIST: child names, ascending, each followed by a NUL.
    ///
    /// # Errors
    ///
    /// A chapter 11 status.
    fn list(&mut self, path: &[u8], txn: u32) -> Result<Vec<u8>, Status>;
    /// STORE.REMOVE.
    ///
    /// # Errors
    ///
    /// A chapter 11 status.
    fn remove(&mut self, path: &[u8], txn: u32) -> Result<(), Status>;
    /// STORE.WATCH raising `port`: the watch id.
    ///
    /// # Errors
    ///
    /// A chapter 11 status.
    fn watch(&mut self, path: &[u8], port: u32) -> Result<u32, Status>;
    /// STORE.UNWATCH.
    ///
    /// # Errors
    ///
    /// A chapter 11 status.
    fn unwatch(&mut self, id: u32) -> Result<(), Status>;
    /// The oldest queued watch event, not removed.
    fn peek_event(&self) -> Option<WatchFired>;
    /// Removes the oldest queued event (after it was delivered).
    fn pop_event(&mut self);
    /// Collects changes that happened since the last call; returns the ports to raise, one per
    /// event.
    ///
    /// # Errors
    ///
    /// FAILED when the service cannot be reached.
    fn poll_events(&mut self) -> Result<Vec<u32>, Status>;
    /// STORE.TXN_START: a nonzero id.
    ///
    /// # Errors
    ///
    /// A chapter 11 status.
    fn txn_start(&mut self) -> Result<u32, Status>;
    /// STORE.TXN_COMMIT.
    ///
    /// # Errors
    ///
    /// A chapter 11 status (CONFLICT when it conflicted).
    fn txn_commit(&mut self, txn: u32) -> Result<(), Status>;
    /// STORE.TXN_ABORT.
    ///
    /// # Errors
    ///
    /// A chapter 11 status.
    fn txn_abort(&mut self, txn: u32) -> Result<(), Status>;
    /// A host write (`HARNESS.STORE_HOST_WRITE`, `HAR-4`, and [`crate::Vm::store_write`]):
    /// sets the node's value outside any transaction, ignoring guest access and the node quota,
    /// creating missing ancestors, records `access` as the node's guest access and fires
    /// watches (`STORE-11`). The path is not yet checked against `STORE-1`/`STORE-24`.
    ///
    /// # Errors
    ///
    /// INVALID_PARAM for a bad path, NO_SPACE for a value over `MAX_VALUE` (`HAR-14`), and the
    /// service's own failures.
    fn host_write(&mut self, path: &[u8], value: &[u8], access: GuestAccess) -> Result<(), Status>;
    /// A host read (`HARNESS.STORE_HOST_READ`, `HAR-5`, and [`crate::Vm::store_read`]): the
    /// node's value as the host sees it, ignoring guest access and open transactions.
    ///
    /// # Errors
    ///
    /// INVALID_PARAM for a bad path, NOT_FOUND for a missing node.
    fn host_read(&mut self, path: &[u8]) -> Result<Vec<u8>, Status>;
    /// A host removal ([`crate::Vm::store_remove`]): removes the node and its subtree, ignoring
    /// guest access, and fires watches.
    ///
    /// # Errors
    ///
    /// INVALID_PARAM for a bad path, NOT_FOUND for a missing node.
    fn host_remove(&mut self, path: &[u8]) -> Result<(), Status>;
    /// A host listing ([`crate::Vm::store_list`]): child names as STORE.LIST writes them,
    /// ignoring guest access; the empty path is the root.
    ///
    /// # Errors
    ///
    /// INVALID_PARAM for a bad path, NOT_FOUND for a missing node.
    fn host_list(&mut self, path: &[u8]) -> Result<Vec<u8>, Status>;
}

/// One guest's store.
#[derive(Debug)]
pub struct Store {
    tree: Tree,
    gen: u64,
    watches: BTreeMap<u32, Watch>,
    next_watch: u32,
    queue: VecDeque<(u32, Vec<u8>)>,
    dropped: u32,
    txns: BTreeMap<u32, Txn>,
    next_txn: u32,
    raised: Vec<u32>,
    quirks: Quirks,
}

fn parent_of(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => path.get(..i).unwrap_or(&[]),
        None => &[],
    }
}

/// Whether `p` is `anc` or below it.
fn is_at_or_below(p: &[u8], anc: &[u8]) -> bool {
    if anc.is_empty() {
        return true;
    }
    p == anc || (p.starts_with(anc) && p.get(anc.len()) == Some(&b'/'))
}

fn stamp(tree: &Tree, p: &[u8]) -> Stamp {
    tree.get(p).map(|n| (n.gen, n.child_gen))
}

fn descendants(tree: &Tree, p: &[u8]) -> Vec<Vec<u8>> {
    let mut prefix = p.to_vec();
    prefix.push(b'/');
    tree.range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .map(|(k, _)| k.clone())
        .collect()
}

fn check_path(path: &[u8], allow_root: bool) -> Result<(), Status> {
    if valid_path(path, allow_root) {
        Ok(())
    } else {
        Err(Status::INVALID_PARAM)
    }
}

impl Default for Store {
    fn default() -> Self {
        Self::new(Quirks::empty())
    }
}

impl Store {
    /// An empty store (only the root).
    pub fn new(quirks: Quirks) -> Self {
        let mut tree = Tree::new();
        tree.insert(
            Vec::new(),
            Node {
                value: Arc::from(&[][..]),
                owner: Owner::Guest,
                gen: 0,
                child_gen: 0,
            },
        );
        Self {
            tree,
            gen: 0,
            watches: BTreeMap::new(),
            next_watch: 1,
            queue: VecDeque::new(),
            dropped: 0,
            txns: BTreeMap::new(),
            next_txn: 1,
            raised: Vec::new(),
            quirks,
        }
    }

    /// Number of nodes (the root excluded).
    pub fn len(&self) -> usize {
        self.tree.len().saturating_sub(1)
    }

    /// Whether the store holds no node besides the root.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Event ports to raise because watches fired since the last call.
    pub fn take_raised(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.raised)
    }

    fn perms(&self, actor: Actor) -> bool {
        actor == Actor::Guest && !self.quirks.contains(Quirks::STORE_IGNORES_PERMISSIONS)
    }

    fn txn_mut(&mut self, txn: u32) -> Result<&mut Txn, Status> {
        self.txns.get_mut(&txn).ok_or(Status::NOT_FOUND)
    }

    /// Reads a node's value. `txn` 0 is no transaction.
    ///
    /// # Errors
    ///
    /// INVALID_PARAM (bad path), NOT_FOUND (no node, unknown txn), DENIED (no read access).
    pub fn read(&mut self, actor: Actor, path: &[u8], txn: u32) -> Result<Vec<u8>, Status> {
        check_path(path, false)?;
        let perms = self.perms(actor);
        let tree = if txn == 0 {
            &self.tree
        } else {
            let t = self.txn_mut(txn)?;
            t.touch(path, false);
            &t.work
        };
        let node = tree.get(path).ok_or(Status::NOT_FOUND)?;
        if perms && !node.owner.guest_can_read() {
            return Err(Status::DENIED);
        }
        Ok(node.value.to_vec())
    }

    /// Lists the children of a node: each name followed by a NUL byte (`STORE-7`), in byte
    /// order. The empty path is the root.
    ///
    /// # Errors
    ///
    /// INVALID_PARAM, NOT_FOUND, DENIED as for [`Store::read`].
    pub fn list(&mut self, actor: Actor, path: &[u8], txn: u32) -> Result<Vec<u8>, Status> {
        check_path(path, true)?;
        let perms = self.perms(actor);
        let tree = if txn == 0 {
            &self.tree
        } else {
            let t = self.txn_mut(txn)?;
            t.touch(path, true);
            &t.work
        };
        let node = tree.get(path).ok_or(Status::NOT_FOUND)?;
        if perms && !node.owner.guest_can_read() {
            return Err(Status::DENIED);
        }
        let mut out = Vec::new();
        let skip = if path.is_empty() { 0 } else { path.len() + 1 };
        let kids: Vec<Vec<u8>> = if path.is_empty() {
            tree.keys().filter(|k| !k.is_empty()).cloned().collect()
        } else {
            descendants(tree, path)
        };
        for k in kids {
            let rest = k.get(skip..).unwrap_or(&[]);
            if !rest.is_empty() && !rest.contains(&b'/') {
                out.extend_from_slice(rest);
                out.push(0);
            }
        }
        Ok(out)
    }

    /// Writes a node, creating missing ancestors.
    ///
    /// # Errors
    ///
    /// INVALID_PARAM (bad path), NO_SPACE (value too long, node quota), DENIED (access),
    /// NOT_FOUND (unknown txn).
    pub fn write(
        &mut self,
        actor: Actor,
        path: &[u8],
        value: &[u8],
        txn: u32,
    ) -> Result<(), Status> {
        check_path(path, false)?;
        // Value size applies to host writes too (STORE-19); the node quota only to the guest.
        if value.len() as u64 > MAX_VALUE {
            return Err(Status::NO_SPACE);
        }
        let perms = self.perms(actor);
        let value: Arc<[u8]> = Arc::from(value);
        if txn == 0 {
            self.gen += 1;
            let gen = self.gen;
            apply_write(&mut self.tree, actor, perms, path, value, gen)?;
            self.fire(path, false);
            Ok(())
        } else {
            self.gen += 1;
            let gen = self.gen;
            let t = self.txn_mut(txn)?;
            let mut p: &[u8] = path;
            loop {
                t.touch(p, false);
                if p.is_empty() {
                    break;
                }
                p = parent_of(p);
            }
            apply_write(&mut t.work, actor, perms, path, value.clone(), gen)?;
            t.ops.push(Op::Write(path.to_vec(), value));
            Ok(())
        }
    }

    /// Removes a node and everything below it.
    ///
    /// # Errors
    ///
    /// INVALID_PARAM (bad path), NOT_FOUND (no node, unknown txn), DENIED (access).
    pub fn remove(&mut self, actor: Actor, path: &[u8], txn: u32) -> Result<(), Status> {
        check_path(path, false)?;
        let perms = self.perms(actor);
        self.gen += 1;
        let gen = self.gen;
        if txn == 0 {
            apply_remove(&mut self.tree, perms, path, gen)?;
            self.fire(path, true);
            Ok(())
        } else {
            let t = self.txn_mut(txn)?;
            // The node's own stamp covers its parent's existence; its subtree is stamped
            // with children so that a concurrent creation below it conflicts.
            t.touch(path, true);
            for d in descendants(&t.work, path) {
                t.touch(&d, true);
            }
            apply_remove(&mut t.work, perms, path, gen)?;
            t.ops.push(Op::Remove(path.to_vec()));
            Ok(())
        }
    }

    /// Registers a watch on `path` raising `port`; returns its id.
    ///
    /// # Errors
    ///
    /// INVALID_PARAM (bad path), NO_SPACE (more than [`MAX_WATCHES`]).
    pub fn watch(&mut self, path: &[u8], port: u32) -> Result<u32, Status> {
        check_path(path, false)?;
        if self.watches.len() as u32 >= MAX_WATCHES {
            return Err(Status::NO_SPACE);
        }
        // Ids are nonzero and never those of a live watch, also once the counter wraps.
        let mut id = self.next_watch.max(1);
        while self.watches.contains_key(&id) {
            id = id.wrapping_add(1).max(1);
        }
        self.next_watch = id.wrapping_add(1).max(1);
        self.watches.insert(
            id,
            Watch {
                path: path.to_vec(),
                port,
            },
        );
        Ok(id)
    }

    /// Removes a watch and its queued events.
    ///
    /// # Errors
    ///
    /// NOT_FOUND for an unknown id.
    pub fn unwatch(&mut self, id: u32) -> Result<(), Status> {
        self.watches.remove(&id).ok_or(Status::NOT_FOUND)?;
        self.queue.retain(|(w, _)| *w != id);
        Ok(())
    }

    /// The next queued watch event, without removing it.
    pub fn peek_event(&self) -> Option<WatchFired> {
        self.queue.front().map(|(w, p)| WatchFired {
            watch_id: *w,
            path: p.clone(),
            dropped: self.dropped,
        })
    }

    /// Removes the next queued watch event (after [`Store::peek_event`] was delivered) and
    /// resets the dropped counter.
    pub fn pop_event(&mut self) {
        if self.queue.pop_front().is_some() {
            self.dropped = 0;
        }
    }

    /// Number of queued watch events.
    pub fn queued_events(&self) -> usize {
        self.queue.len()
    }

    /// Starts a transaction; returns its nonzero id.
    ///
    /// # Errors
    ///
    /// NO_SPACE with [`MAX_TRANSACTIONS`] open.
    pub fn txn_start(&mut self) -> Result<u32, Status> {
        if self.txns.len() as u32 >= MAX_TRANSACTIONS {
            return Err(Status::NO_SPACE);
        }
        let mut id = self.next_txn;
        while id == 0 || self.txns.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        self.next_txn = id.wrapping_add(1);
        self.txns.insert(
            id,
            Txn {
                base: self.tree.clone(),
                work: self.tree.clone(),
                stamps: BTreeMap::new(),
                ops: Vec::new(),
            },
        );
        Ok(id)
    }

    /// Ends a transaction without applying it.
    ///
    /// # Errors
    ///
    /// NOT_FOUND for an unknown id.
    pub fn txn_abort(&mut self, txn: u32) -> Result<(), Status> {
        self.txns.remove(&txn).map(|_| ()).ok_or(Status::NOT_FOUND)
    }

    /// Commits a transaction atomically, or fails with CONFLICT; either way it ends.
    ///
    /// # Errors
    ///
    /// NOT_FOUND (unknown id), CONFLICT (a node it used changed), NO_SPACE or DENIED when the
    /// operations no longer fit the live store (nothing is applied then).
    pub fn txn_commit(&mut self, txn: u32) -> Result<(), Status> {
        let t = self.txns.remove(&txn).ok_or(Status::NOT_FOUND)?;
        if !self.quirks.contains(Quirks::STORE_NO_CONFLICT)
            && t.stamps
                .iter()
                .any(|(p, (s, c))| !unchanged(&self.tree, p, *s, *c))
        {
            return Err(Status::CONFLICT);
        }
        let perms = self.perms(Actor::Guest);
        let mut live = self.tree.clone();
        let mut fired = Vec::new();
        for op in &t.ops {
            self.gen += 1;
            match op {
                Op::Write(p, v) => {
                    apply_write(&mut live, Actor::Guest, perms, p, v.clone(), self.gen)?;
                    fired.push((p.clone(), false));
                }
                Op::Remove(p) => {
                    apply_remove(&mut live, perms, p, self.gen)?;
                    fired.push((p.clone(), true));
                }
            }
        }
        self.tree = live;
        for (p, removed) in fired {
            self.fire(&p, removed);
        }
        Ok(())
    }

    /// Number of open transactions.
    pub fn open_transactions(&self) -> usize {
        self.txns.len()
    }

    /// The owner of a node, if it exists (host view).
    pub fn owner(&self, path: &[u8]) -> Option<Owner> {
        self.tree.get(path).map(|n| n.owner)
    }

    fn fire(&mut self, changed: &[u8], removed: bool) {
        let hits: Vec<(u32, u32)> = self
            .watches
            .iter()
            .filter(|(_, w)| {
                is_at_or_below(changed, &w.path) || (removed && is_at_or_below(&w.path, changed))
            })
            .map(|(id, w)| (*id, w.port))
            .collect();
        for (id, port) in hits {
            if self.queue.len() as u32 >= MAX_WATCH_EVENTS {
                self.dropped = self.dropped.saturating_add(1);
            } else {
                self.queue.push_back((id, changed.to_vec()));
            }
            self.raised.push(port);
        }
    }
}

fn apply_write(
    tree: &mut Tree,
    actor: Actor,
    perms: bool,
    path: &[u8],
    value: Arc<[u8]>,
    gen: u64,
) -> Result<(), Status> {
    let owner = match actor {
        Actor::Guest => Owner::Guest,
        Actor::Host(a) => Owner::Host(a),
    };
    if let Some(n) = tree.get(path) {
        if perms && !n.owner.guest_can_write() {
            return Err(Status::DENIED);
        }
    } else {
        // Missing ancestors, nearest first.
        let mut missing = vec![path.to_vec()];
        let mut p = parent_of(path);
        while !p.is_empty() && !tree.contains_key(p) {
            missing.push(p.to_vec());
            p = parent_of(p);
        }
        let anc = tree.get(p).ok_or(Status::FAILED)?;
        if perms && !anc.owner.guest_can_write() {
            return Err(Status::DENIED);
        }
        if actor == Actor::Guest
            && tree.len().saturating_sub(1) + missing.len() > MAX_ENTRIES as usize
        {
            return Err(Status::NO_SPACE);
        }
        for m in missing.iter().rev() {
            let parent = parent_of(m).to_vec();
            if let Some(pn) = tree.get_mut(&parent) {
                pn.child_gen = gen;
            }
            tree.insert(
                m.clone(),
                Node {
                    value: Arc::from(&[][..]),
                    owner,
                    gen,
                    child_gen: gen,
                },
            );
        }
    }
    let n = tree.get_mut(path).ok_or(Status::FAILED)?;
    if matches!(actor, Actor::Host(_)) {
        n.owner = owner;
    }
    n.value = value;
    n.gen = gen;
    Ok(())
}

fn apply_remove(tree: &mut Tree, perms: bool, path: &[u8], gen: u64) -> Result<(), Status> {
    let n = tree.get(path).ok_or(Status::NOT_FOUND)?;
    let desc = descendants(tree, path);
    if perms
        && (!n.owner.guest_can_write()
            || desc
                .iter()
                .any(|d| tree.get(d).is_some_and(|x| !x.owner.guest_can_write())))
    {
        return Err(Status::DENIED);
    }
    for d in desc {
        tree.remove(&d);
    }
    tree.remove(path);
    if let Some(pn) = tree.get_mut(parent_of(path)) {
        pn.child_gen = gen;
    }
    Ok(())
}

/// The Vm's own store as the guest's [`StoreService`]: guest calls act as [`Actor::Guest`],
/// host calls as the host with full access (a host write gives the node the guest access it
/// names).
impl StoreService for Store {
    fn read(&mut self, path: &[u8], txn: u32) -> Result<Vec<u8>, Status> {
        Store::read(self, Actor::Guest, path, txn)
    }
    fn write(&mut self, path: &[u8], value: &[u8], txn: u32) -> Result<(), Status> {
        Store::write(self, Actor::Guest, path, value, txn)
    }
    fn list(&mut self, path: &[u8], txn: u32) -> Result<Vec<u8>, Status> {
        Store::list(self, Actor::Guest, path, txn)
    }
    fn remove(&mut self, path: &[u8], txn: u32) -> Result<(), Status> {
        Store::remove(self, Actor::Guest, path, txn)
    }
    fn watch(&mut self, path: &[u8], port: u32) -> Result<u32, Status> {
        Store::watch(self, path, port)
    }
    fn unwatch(&mut self, id: u32) -> Result<(), Status> {
        Store::unwatch(self, id)
    }
    fn peek_event(&self) -> Option<WatchFired> {
        Store::peek_event(self)
    }
    fn pop_event(&mut self) {
        Store::pop_event(self)
    }
    fn poll_events(&mut self) -> Result<Vec<u32>, Status> {
        Ok(self.take_raised())
    }
    fn txn_start(&mut self) -> Result<u32, Status> {
        Store::txn_start(self)
    }
    fn txn_commit(&mut self, txn: u32) -> Result<(), Status> {
        Store::txn_commit(self, txn)
    }
    fn txn_abort(&mut self, txn: u32) -> Result<(), Status> {
        Store::txn_abort(self, txn)
    }
    fn host_write(&mut self, path: &[u8], value: &[u8], access: GuestAccess) -> Result<(), Status> {
        Store::write(self, Actor::Host(access), path, value, 0)
    }
    fn host_read(&mut self, path: &[u8]) -> Result<Vec<u8>, Status> {
        Store::read(self, Actor::Host(GuestAccess::READ_WRITE), path, 0)
    }
    fn host_remove(&mut self, path: &[u8]) -> Result<(), Status> {
        Store::remove(self, Actor::Host(GuestAccess::READ_WRITE), path, 0)
    }
    fn host_list(&mut self, path: &[u8]) -> Result<Vec<u8>, Status> {
        Store::list(self, Actor::Host(GuestAccess::READ_WRITE), path, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: Actor = Actor::Guest;
    const HR: Actor = Actor::Host(GuestAccess::READ);
    const HN: Actor = Actor::Host(GuestAccess::NONE);
    const HRW: Actor = Actor::Host(GuestAccess::READ_WRITE);

    #[test]
    fn read_write_list_remove() {
        let mut s = Store::default();
        assert_eq!(s.read(G, b"a", 0), Err(Status::NOT_FOUND));
        s.write(G, b"a/b/c", b"1", 0).expect("write");
        assert_eq!(s.len(), 3);
        assert_eq!(s.read(G, b"a/b/c", 0), Ok(b"1".to_vec()));
        assert_eq!(s.read(G, b"a/b", 0), Ok(Vec::new()));
        s.write(G, b"a/x", b"2", 0).expect("write");
        assert_eq!(s.list(G, b"a", 0), Ok(b"b\0x\0".to_vec()));
        assert_eq!(s.list(G, b"", 0), Ok(b"a\0".to_vec()));
        s.remove(G, b"a/b", 0).expect("remove");
        assert_eq!(s.read(G, b"a/b/c", 0), Err(Status::NOT_FOUND));
        assert_eq!(s.remove(G, b"a/b", 0), Err(Status::NOT_FOUND));
        assert_eq!(s.read(G, b"", 0), Err(Status::INVALID_PARAM));
        assert_eq!(s.write(G, b"a/../b", b"", 0), Err(Status::INVALID_PARAM));
        assert_eq!(s.remove(G, b"", 0), Err(Status::INVALID_PARAM));
    }

    #[test]
    fn permissions() {
        let mut s = Store::default();
        s.write(HN, b"secret", b"s", 0).expect("host");
        s.write(HR, b"ro", b"r", 0).expect("host");
        s.write(HRW, b"rw", b"w", 0).expect("host");
        assert_eq!(s.read(G, b"secret", 0), Err(Status::DENIED));
        assert_eq!(s.list(G, b"secret", 0), Err(Status::DENIED));
        assert_eq!(s.read(G, b"ro", 0), Ok(b"r".to_vec()));
        assert_eq!(s.write(G, b"ro", b"x", 0), Err(Status::DENIED));
        assert_eq!(s.write(G, b"ro/child", b"x", 0), Err(Status::DENIED));
        assert_eq!(s.remove(G, b"ro", 0), Err(Status::DENIED));
        s.write(G, b"rw", b"x", 0).expect("rw");
        s.write(G, b"rw/child", b"x", 0).expect("rw child");
        s.write(HN, b"rw/child/locked", b"", 0).expect("host");
        assert_eq!(s.remove(G, b"rw", 0), Err(Status::DENIED));
        assert_eq!(s.read(HN, b"secret", 0), Ok(b"s".to_vec()));
        assert_eq!(s.owner(b"rw"), Some(Owner::Host(GuestAccess::READ_WRITE)));
        let mut q = Store::new(Quirks::STORE_IGNORES_PERMISSIONS);
        q.write(HN, b"secret", b"s", 0).expect("host");
        assert_eq!(q.read(G, b"secret", 0), Ok(b"s".to_vec()));
    }

    #[test]
    fn quotas() {
        let mut s = Store::default();
        let big = vec![0u8; MAX_VALUE as usize + 1];
        assert_eq!(s.write(G, b"v", &big, 0), Err(Status::NO_SPACE));
        s.write(G, b"v", &big[1..], 0).expect("max value");
        for i in 1..MAX_ENTRIES {
            s.write(G, format!("n{i}").as_bytes(), b"", 0)
                .expect("fill");
        }
        assert_eq!(s.len(), MAX_ENTRIES as usize);
        assert_eq!(s.write(G, b"more", b"", 0), Err(Status::NO_SPACE));
        assert_eq!(s.write(G, b"v/deep", b"", 0), Err(Status::NO_SPACE));
        s.write(G, b"n1", b"overwrite ok", 0).expect("overwrite");
        for i in 0..MAX_WATCHES {
            s.watch(b"n1", i).expect("watch");
        }
        assert_eq!(s.watch(b"n1", 1), Err(Status::NO_SPACE));
        for _ in 0..MAX_TRANSACTIONS {
            s.txn_start().expect("txn");
        }
        assert_eq!(s.txn_start(), Err(Status::NO_SPACE));
    }

    #[test]
    fn watches_fire_queue_and_drop() {
        let mut s = Store::default();
        let w = s.watch(b"a", 7).expect("watch");
        s.write(G, b"b", b"", 0).expect("w");
        assert!(s.take_raised().is_empty());
        s.write(HRW, b"a/c", b"", 0).expect("w");
        assert_eq!(s.take_raised(), vec![7]);
        assert_eq!(
            s.peek_event().map(|e| (e.watch_id, e.path)),
            Some((w, b"a/c".to_vec()))
        );
        s.pop_event();
        assert_eq!(s.peek_event(), None);
        let w2 = s.watch(b"x/y", 9).expect("watch");
        s.write(G, b"x/y/z", b"", 0).expect("w");
        s.remove(G, b"x", 0).expect("rm");
        assert_eq!(s.take_raised(), vec![9, 9]);
        assert_eq!(s.queued_events(), 2);
        s.unwatch(w2).expect("unwatch");
        assert_eq!(s.queued_events(), 0);
        assert_eq!(s.unwatch(w2), Err(Status::NOT_FOUND));
        for _ in 0..MAX_WATCH_EVENTS + 3 {
            s.write(G, b"a", b"", 0).expect("w");
        }
        assert_eq!(s.queued_events(), MAX_WATCH_EVENTS as usize);
        assert_eq!(s.peek_event().map(|e| e.dropped), Some(3));
        s.pop_event();
        assert_eq!(s.peek_event().map(|e| e.dropped), Some(0));
    }

    #[test]
    fn watch_ids_stay_unique_when_the_counter_wraps() {
        let mut s = Store::default();
        let first = s.watch(b"a", 1).expect("watch");
        assert_eq!(first, 1);
        // As after 2^32 - 2 further WATCH/UNWATCH pairs.
        s.next_watch = u32::MAX;
        let last = s.watch(b"b", 2).expect("watch");
        assert_eq!(last, u32::MAX);
        let wrapped = s.watch(b"c", 3).expect("watch");
        assert_ne!(wrapped, 0);
        assert_ne!(wrapped, first, "a live watch id was handed out again");
        s.unwatch(first)
            .expect("the first watch is still registered");
        s.unwatch(last).expect("live");
        s.unwatch(wrapped).expect("live");
    }

    #[test]
    fn transactions_commit_and_conflict() {
        let mut s = Store::default();
        s.write(G, b"a", b"0", 0).expect("w");
        let t = s.txn_start().expect("t");
        assert_eq!(s.read(G, b"a", t), Ok(b"0".to_vec()));
        s.write(G, b"b", b"1", t).expect("w");
        assert_eq!(s.read(G, b"b", 0), Err(Status::NOT_FOUND));
        assert_eq!(s.read(G, b"b", t), Ok(b"1".to_vec()));
        s.txn_commit(t).expect("commit");
        assert_eq!(s.read(G, b"b", 0), Ok(b"1".to_vec()));
        assert_eq!(s.txn_commit(t), Err(Status::NOT_FOUND));

        // Conflict: a node read in the transaction changes outside it.
        let t = s.txn_start().expect("t");
        let _ = s.read(G, b"a", t);
        s.write(G, b"c", b"2", t).expect("w");
        s.write(HRW, b"a", b"host", 0).expect("host");
        assert_eq!(s.txn_commit(t), Err(Status::CONFLICT));
        assert_eq!(s.read(G, b"c", 0), Err(Status::NOT_FOUND));

        // No conflict: an unrelated node changes.
        let t = s.txn_start().expect("t");
        let _ = s.read(G, b"a", t);
        s.write(G, b"unrelated", b"", 0).expect("w");
        s.write(G, b"d", b"", t).expect("w");
        assert_eq!(s.txn_commit(t), Ok(()));

        // Conflict on creation of a child of a listed node.
        let t = s.txn_start().expect("t");
        let _ = s.list(G, b"", t);
        s.write(G, b"new", b"", 0).expect("w");
        assert_eq!(s.txn_commit(t), Err(Status::CONFLICT));

        // Abort.
        let t = s.txn_start().expect("t");
        s.remove(G, b"a", t).expect("rm");
        s.txn_abort(t).expect("abort");
        assert_eq!(s.read(G, b"a", 0), Ok(b"host".to_vec()));
        assert_eq!(s.txn_abort(t), Err(Status::NOT_FOUND));
        assert_eq!(s.read(G, b"a", 99), Err(Status::NOT_FOUND));
    }
}
