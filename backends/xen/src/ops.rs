//! The xenstore operations the Xen backend needs, as a trait, so that the logic built on them
//! (the pvabi STORE mapping, domain discovery) is tested without Xen.

use std::time::Duration;

use crate::error::Result;
use crate::perms::Perm;

/// A xenstore transaction id; [`TxnId::NONE`] means "outside any transaction".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxnId(pub u32);

impl TxnId {
    /// No transaction.
    pub const NONE: TxnId = TxnId(0);
}

/// A watch event: `path` changed (or was named by a special event such as `@releaseDomain`), and
/// `token` is the one the watch was registered with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    /// The path that changed.
    pub path: String,
    /// The watch's token.
    pub token: String,
}

/// Xenstore operations. Paths are absolute (`/local/domain/3/data`) or relative to the
/// connection's domain home, as xenstored resolves them.
///
/// # Errors
///
/// Every operation returns [`Error::Xenstored`](crate::Error::Xenstored) with xenstored's error
/// name when xenstored refuses it, and the other [`Error`](crate::Error) variants for client-side
/// failures; [`status_for`](crate::status_for) maps both onto pvabi statuses.
pub trait XenStoreOps {
    /// Reads a node's value.
    fn read(&mut self, txn: TxnId, path: &str) -> Result<Vec<u8>>;
    /// Writes a node's value, creating the node and missing parents.
    fn write(&mut self, txn: TxnId, path: &str, value: &[u8]) -> Result<()>;
    /// Creates a node with an empty value (no error when it exists).
    fn mkdir(&mut self, txn: TxnId, path: &str) -> Result<()>;
    /// The names of a node's children.
    fn directory(&mut self, txn: TxnId, path: &str) -> Result<Vec<String>>;
    /// Removes a node and its subtree.
    fn remove(&mut self, txn: TxnId, path: &str) -> Result<()>;
    /// A node's permission list (owner entry first).
    fn get_perms(&mut self, txn: TxnId, path: &str) -> Result<Vec<Perm>>;
    /// Replaces a node's permission list (owner entry first).
    fn set_perms(&mut self, txn: TxnId, path: &str, perms: &[Perm]) -> Result<()>;
    /// Registers a watch on `path` and its subtree. xenstored fires one event for `path` at once.
    fn watch(&mut self, path: &str, token: &str) -> Result<()>;
    /// Removes the watch registered with this path and token.
    fn unwatch(&mut self, path: &str, token: &str) -> Result<()>;
    /// The next watch event: queued ones first, else waits up to `timeout` (`None`: forever).
    /// `Ok(None)` when the timeout passed without an event.
    fn next_watch_event(&mut self, timeout: Option<Duration>) -> Result<Option<WatchEvent>>;
    /// Starts a transaction.
    fn transaction_start(&mut self) -> Result<TxnId>;
    /// Ends a transaction: commits it when `commit`, else aborts it. A commit that conflicted
    /// with a concurrent change fails with `EAGAIN` and changes nothing.
    fn transaction_end(&mut self, txn: TxnId, commit: bool) -> Result<()>;
}
