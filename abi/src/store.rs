//! STORE service (spec chapter 11, clauses `STORE-*`): a hierarchical configuration store.
//!
//! Paths are relative to the guest's own subtree: `a/b/c`, components of `[A-Za-z0-9_.-]`,
//! neither `.` nor `..`, no empty component, no leading or trailing `/` (spec `STORE-1`). The empty
//! path names the subtree's root for LIST only. Values are bytes. Nodes the host wrote carry a
//! guest access ([`GuestAccess`]); nodes the guest wrote are the guest's.
//!
//! LIST returns the child names, each followed by a NUL byte (spec `STORE-7`). WATCH_NEXT writes
//! a [`WatchEvent`] header followed by the path that changed (spec `STORE-13`).

use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub use crate::call::{
    STORE_LIST, STORE_READ, STORE_REMOVE, STORE_TXN_ABORT, STORE_TXN_COMMIT, STORE_TXN_START,
    STORE_UNWATCH, STORE_WATCH, STORE_WATCH_NEXT, STORE_WRITE,
};

/// Longest path in bytes (spec `STORE-1`).
pub const MAX_PATH: u64 = 256;
/// Longest value in bytes (spec `STORE-19`); longer is NO_SPACE.
pub const MAX_VALUE: u64 = 4096;
/// Most nodes a guest's subtree may hold, host-written included (spec `STORE-19`).
pub const MAX_ENTRIES: u32 = 1024;
/// Most watches a guest may hold (spec `STORE-19`).
pub const MAX_WATCHES: u32 = 64;
/// Most transactions open at once per guest (spec `STORE-19`).
pub const MAX_TRANSACTIONS: u32 = 16;
/// Most undelivered watch events queued per guest; more are dropped and counted (`STORE-14`).
pub const MAX_WATCH_EVENTS: u32 = 256;
/// The `txn` argument meaning "no transaction" (spec `STORE-15`).
pub const NO_TXN: u64 = 0;

/// What the guest may do with a host-written node (spec `STORE-2`). An open type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct GuestAccess(pub u32);

impl GuestAccess {
    /// The guest may neither read nor change the node: READ, LIST, WRITE and REMOVE give DENIED.
    pub const NONE: GuestAccess = GuestAccess(0);
    /// The guest may read.
    pub const READ: GuestAccess = GuestAccess(1);
    /// The guest may read and write.
    pub const READ_WRITE: GuestAccess = GuestAccess(3);
}

/// Header of a watch event as STORE.WATCH_NEXT writes it (spec `STORE-13`), 16 bytes; the path
/// (relative to the guest's subtree, `path_len` bytes) follows it.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct WatchEvent {
    /// The watch id WATCH returned.
    pub watch_id: u32,
    /// Length of the path that follows.
    pub path_len: u32,
    /// Events dropped for this guest since the previous WATCH_NEXT (queue overflow).
    pub dropped: u32,
    /// Reserved, zero.
    pub _reserved: u32,
}

impl WatchEvent {
    /// Size in bytes.
    pub const SIZE: usize = 16;
}

/// Whether `b` may appear in a path component (spec `STORE-1`).
pub const fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.'
}

/// Checks a guest path against spec `STORE-1`. `allow_root` admits the empty path.
pub fn valid_path(path: &[u8], allow_root: bool) -> bool {
    if path.is_empty() {
        return allow_root;
    }
    if path.len() as u64 > MAX_PATH {
        return false;
    }
    path.split(|b| *b == b'/')
        .all(|c| !c.is_empty() && c != b"." && c != b".." && c.iter().all(|b| is_path_byte(*b)))
}

const_assert_eq!(core::mem::size_of::<WatchEvent>(), WatchEvent::SIZE);
const_assert_eq!(core::mem::offset_of!(WatchEvent, watch_id), 0);
const_assert_eq!(core::mem::offset_of!(WatchEvent, path_len), 4);
const_assert_eq!(core::mem::offset_of!(WatchEvent, dropped), 8);
const_assert_eq!(core::mem::offset_of!(WatchEvent, _reserved), 12);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_rules() {
        assert!(valid_path(b"a/b-c/d_e.f", false));
        assert!(valid_path(b"", true));
        for bad in [
            &b""[..],
            b"/a",
            b"a/",
            b"a//b",
            b"..",
            b"a/../b",
            b"a b",
            b"a/./b",
            b"\xff",
        ] {
            assert!(!valid_path(bad, false), "{bad:?}");
        }
        let long = [b'a'; 257];
        assert!(!valid_path(&long, false));
    }
}
