//! # pvabi-xen — the Xen backend of pvabi (dom0 side)
//!
//! Licensed GPL-3.0-only because it uses `xenstore-rs`, which is. No other crate of the
//! workspace depends on it (only the CLI may, behind its `xen` feature), so the MIT/Apache-2.0
//! crates stay free of it.
//!
//! This part holds the xenstore side:
//! - [`XenStoreOps`]: the xenstore operations the backend needs, a trait so that what is built
//!   on it is tested without Xen;
//! - [`XenStore`]: the full client over xenstored's unix socket or `/dev/xen/xenbus`, on the
//!   [wire protocol](wire) (read, write, mkdir, directory, remove, permissions, watches,
//!   transactions);
//! - [`XsRs`]: the subset `xenstore-rs` 0.8 offers (read, write, directory, remove);
//! - [`status_for`]: the one mapping of xenstore failures onto pvabi statuses;
//! - [`GuestStore`]: the pvabi STORE service of one guest on its xenstore subtree.
//!
//! The `xenstore-conformance` binary checks these against a real xenstored; the integration test
//! `tests/real_xenstored.rs` runs it inside a Xen dom0 booted under QEMU by
//! `scripts/xen/run-in-dom0.sh`.

mod client;
pub mod encode;
mod error;
pub mod frontend;
mod ops;
mod perms;
pub mod status_map;
mod store;
pub mod suite;
pub mod sys;
pub mod testing;
pub mod transport;
pub mod wire;
mod xsrs;

pub use client::{Transport, XenStore, DEFAULT_SOCKET, XENBUS_DEVICE};
pub use error::{Error, Result, XsErrno};
pub use ops::{TxnId, WatchEvent, XenStoreOps};
pub use perms::{Access, Perm};
pub use status_map::{status_for, status_for_errno};
pub use store::GuestStore;
pub use xsrs::{error_from_xenstore_rs, XsRs};
