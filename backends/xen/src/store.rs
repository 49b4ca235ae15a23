//! [`GuestStore`]: the pvabi STORE service of one guest (spec chapter 11) mapped onto that
//! guest's xenstore subtree, on any [`XenStoreOps`].
//!
//! What the mapping does, by clause:
//! - paths (`STORE-1`, `STORE-24`) are checked with [`pvabi::store::valid_path`] and joined to
//!   the subtree root, so no guest path reaches outside it (`STORE-20`);
//! - values longer than [`MAX_VALUE`] are NO_SPACE before anything is sent (`STORE-6`);
//! - LIST returns the child names in ascending byte order, each followed by a NUL (`STORE-7`);
//! - REMOVE of a missing node is NOT_FOUND (`STORE-8`), although xenstored acknowledges the
//!   removal of a missing node whose parent exists: the mapping checks existence first, inside
//!   the caller's transaction or one of its own;
//! - WATCH (`STORE-10`) swallows the event xenstored fires when a watch is registered, and
//!   events are queued per guest with the drop count of `STORE-14`; their paths are made
//!   relative to the subtree;
//! - transaction ids are the guest's own nonzero `u32` (`STORE-9`, `STORE-15`, `STORE-31`),
//!   translated to xenstored's;
//! - every xenstored refusal becomes a status through [`status_for`] (so `EAGAIN` at commit is
//!   CONFLICT, `STORE-16`).
//!
//! The guest-side counts of `STORE-19` for watches and transactions are enforced here.
//!
//! Known differences from the spec, to be settled with it:
//! - xenstored's message limit is 4096 bytes for path and value together, so a value close to
//!   [`MAX_VALUE`] that the spec admits fails with NO_SPACE;
//! - the node quota of `STORE-19` and the guest access of host-written nodes (`STORE-2`) are
//!   xenstored's permissions and quotas only on the guest domain's own connection; over a
//!   privileged dom0 connection xenstored checks neither, and this type does not add them.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use pvabi::store::{
    valid_path, WatchEvent, MAX_TRANSACTIONS, MAX_VALUE, MAX_WATCHES, MAX_WATCH_EVENTS,
};
use pvabi::Status;

use crate::error::{Error, XsErrno};
use crate::ops::{TxnId, XenStoreOps};
use crate::status_map::status_for;

/// Highest event port a watch may name (`STORE-32`: the port must be below 1024).
const PORT_LIMIT: u32 = 1024;
/// How often the mapping retries its own transaction when xenstored reports a conflict.
const OWN_TXN_RETRIES: u32 = 8;

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
/// let mut store = GuestStore::new(xs, "/local/domain/3/pvabi");
/// store.write(b"config/mode", b"fast", 0).expect("write");
/// assert_eq!(store.read(b"config/mode", 0).expect("read"), b"fast");
/// # Ok::<(), pvabi_xen::Error>(())
/// ```
pub struct GuestStore<S: XenStoreOps> {
    xs: S,
    root: String,
    txns: BTreeMap<u32, TxnId>,
    next_txn: u32,
    watches: BTreeMap<u32, Watch>,
    next_watch: u32,
    events: VecDeque<(u32, Vec<u8>)>,
    dropped: u32,
}

impl<S: XenStoreOps> GuestStore<S> {
    /// The STORE service of the guest whose subtree is the absolute xenstore path `root`
    /// (without a trailing `/`).
    pub fn new(xs: S, root: impl Into<String>) -> GuestStore<S> {
        let mut root = root.into();
        while root.len() > 1 && root.ends_with('/') {
            root.pop();
        }
        GuestStore {
            xs,
            root,
            txns: BTreeMap::new(),
            next_txn: 1,
            watches: BTreeMap::new(),
            next_watch: 1,
            events: VecDeque::new(),
            dropped: 0,
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
        } else if self.root == "/" {
            format!("/{rel}")
        } else {
            format!("{}/{rel}", self.root)
        })
    }

    /// The xenstored transaction of a guest `txn` argument (`STORE-9`, `STORE-31`).
    fn txn(&self, txn: u64) -> Result<TxnId, Status> {
        if txn == 0 {
            return Ok(TxnId::NONE);
        }
        let id = u32::try_from(txn).map_err(|_| Status::INVALID_PARAM)?;
        self.txns.get(&id).copied().ok_or(Status::NOT_FOUND)
    }

    /// STORE.READ: the node's value (`STORE-3`, `STORE-28`).
    ///
    /// # Errors
    ///
    /// INVALID_PARAM for a bad path or `txn`, NOT_FOUND for a missing node or unknown `txn`, and
    /// xenstored's refusals through [`status_for`].
    pub fn read(&mut self, path: &[u8], txn: u64) -> Result<Vec<u8>, Status> {
        let abs = self.abs(path, false)?;
        let t = self.txn(txn)?;
        self.xs.read(t, &abs).map_err(|e| status_for(&e))
    }

    /// STORE.WRITE: sets the node's value, creating it and its ancestors (`STORE-5`, `STORE-6`).
    ///
    /// # Errors
    ///
    /// NO_SPACE for a value over [`MAX_VALUE`] or over xenstored's message limit, the path and
    /// `txn` errors of [`GuestStore::read`], and xenstored's refusals through [`status_for`].
    pub fn write(&mut self, path: &[u8], value: &[u8], txn: u64) -> Result<(), Status> {
        let abs = self.abs(path, false)?;
        let t = self.txn(txn)?;
        if value.len() as u64 > MAX_VALUE {
            return Err(Status::NO_SPACE);
        }
        self.xs.write(t, &abs, value).map_err(|e| status_for(&e))
    }

    /// STORE.LIST: the child names in ascending byte order, each followed by a NUL (`STORE-7`,
    /// `STORE-30`). The empty path lists the subtree root.
    ///
    /// # Errors
    ///
    /// As [`GuestStore::read`].
    pub fn list(&mut self, path: &[u8], txn: u64) -> Result<Vec<u8>, Status> {
        let abs = self.abs(path, true)?;
        let t = self.txn(txn)?;
        let mut names = self.xs.directory(t, &abs).map_err(|e| status_for(&e))?;
        names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let mut out = Vec::with_capacity(names.iter().map(|n| n.len() + 1).sum());
        for n in names {
            out.extend_from_slice(n.as_bytes());
            out.push(0);
        }
        Ok(out)
    }

    /// STORE.REMOVE: removes the node and its subtree; a missing node is NOT_FOUND (`STORE-8`).
    ///
    /// # Errors
    ///
    /// As [`GuestStore::read`]; CONFLICT or BUSY when xenstored kept reporting conflicts for the
    /// mapping's own transaction.
    pub fn remove(&mut self, path: &[u8], txn: u64) -> Result<(), Status> {
        let abs = self.abs(path, false)?;
        let t = self.txn(txn)?;
        if t != TxnId::NONE {
            return remove_existing(&mut self.xs, t, &abs).map_err(|e| status_for(&e));
        }
        // Existence check and removal in one xenstored transaction of the mapping's own.
        for _ in 0..OWN_TXN_RETRIES {
            let own = self.xs.transaction_start().map_err(|e| status_for(&e))?;
            if let Err(e) = remove_existing(&mut self.xs, own, &abs) {
                let _ = self.xs.transaction_end(own, false);
                return Err(status_for(&e));
            }
            match self.xs.transaction_end(own, true) {
                Ok(()) => return Ok(()),
                Err(Error::Xenstored(XsErrno::Eagain)) => continue,
                Err(e) => return Err(status_for(&e)),
            }
        }
        Err(Status::BUSY)
    }

    /// STORE.WATCH: registers a watch on the path (which need not exist) raising `port`, and
    /// returns its nonzero id (`STORE-10`, `STORE-32`, `STORE-34`). Whether `port` is allocated
    /// (`STORE-33`) is the event service's to check before calling this.
    ///
    /// # Errors
    ///
    /// INVALID_PARAM for a bad path or a port of 0 or not below 1024, NO_SPACE when the guest
    /// holds [`MAX_WATCHES`] watches, and xenstored's refusals through [`status_for`].
    pub fn watch(&mut self, path: &[u8], port: u32) -> Result<u32, Status> {
        let abs = self.abs(path, true)?;
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
        let mut ports = Vec::new();
        while let Some(ev) = self
            .xs
            .next_watch_event(Some(Duration::ZERO))
            .map_err(|e| status_for(&e))?
        {
            let Some((&id, w)) = self.watches.iter_mut().find(|(_, w)| w.token == ev.token) else {
                // A watch already removed.
                continue;
            };
            if w.initial_pending && ev.path == w.abs {
                w.initial_pending = false;
                continue;
            }
            let prefix = self.root.strip_suffix('/').unwrap_or(&self.root);
            let rel = if ev.path == self.root {
                Vec::new()
            } else if let Some(r) = ev
                .path
                .strip_prefix(prefix)
                .and_then(|r| r.strip_prefix('/'))
            {
                r.as_bytes().to_vec()
            } else {
                // Not inside the guest's subtree: never shown (`STORE-20`).
                continue;
            };
            ports.push(w.port);
            if self.events.len() as u64 >= u64::from(MAX_WATCH_EVENTS) {
                self.dropped = self.dropped.saturating_add(1);
            } else {
                self.events.push_back((id, rel));
            }
        }
        Ok(ports)
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
        let id = loop {
            let id = self.next_txn;
            self.next_txn = self.next_txn.wrapping_add(1).max(1);
            if !self.txns.contains_key(&id) {
                break id;
            }
        };
        self.txns.insert(id, t);
        Ok(id)
    }

    fn end(&mut self, txn: u64, commit: bool) -> Result<(), Status> {
        if txn == 0 {
            return Err(Status::INVALID_PARAM);
        }
        let id = u32::try_from(txn).map_err(|_| Status::INVALID_PARAM)?;
        let t = self.txns.remove(&id).ok_or(Status::NOT_FOUND)?;
        self.xs
            .transaction_end(t, commit)
            .map_err(|e| status_for(&e))
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

        fn fire(&mut self, path: &str) {
            for (w, token) in &self.watches {
                if path == w
                    || path.starts_with(&format!("{w}/"))
                    || w.starts_with(&format!("{path}/"))
                {
                    self.events.push_back(XsEvent {
                        path: path.into(),
                        token: token.clone(),
                    });
                }
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
        fn get_perms(&mut self, _t: TxnId, _path: &str) -> crate::Result<Vec<Perm>> {
            Err(Error::Unsupported("perms in the fake"))
        }
        fn set_perms(&mut self, _t: TxnId, _path: &str, _p: &[Perm]) -> crate::Result<()> {
            Err(Error::Unsupported("perms in the fake"))
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

    fn store() -> GuestStore<Fake> {
        GuestStore::new(Fake::with_root(ROOT), format!("{ROOT}/"))
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
        let mut s = GuestStore::new(Fake::with_root("/"), "/");
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
        // The root can be watched; its own path is the empty relative path.
        let r = s.watch(b"", 2).unwrap();
        s.poll_events().unwrap();
        s.write(b"z", b"1", 0).unwrap();
        assert_eq!(s.poll_events().unwrap(), vec![2]);
        assert_eq!(s.watch_next().unwrap().1, b"z");
        s.unwatch(r).unwrap();
    }
}
