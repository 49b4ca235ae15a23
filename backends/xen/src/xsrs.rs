//! [`XsRs`]: the [`XenStoreOps`] subset that the `xenstore-rs` crate's blocking client offers.
//!
//! `xenstore-rs` 0.8's blocking client (`xenstore_rs::unix::XsUnix`) has read, write, directory
//! and rm outside transactions, with string values; it has no transactions, watches or
//! permissions. This adapter offers exactly that subset and answers the rest with
//! [`Error::Unsupported`]; [`XenStore`](crate::XenStore) is the full client.

use std::io;
use std::time::Duration;

use xenstore_rs::unix::XsUnix;
use xenstore_rs::Xs;

use crate::error::{Error, Result, XsErrno};
use crate::ops::{TxnId, WatchEvent, XenStoreOps};
use crate::perms::Perm;

/// The prefix of the message xenstore-rs gives an `XS_ERROR` reply, followed by the name.
const XS_ERROR_PREFIX: &str = "XS interface error ";

/// A xenstore connection through `xenstore-rs`.
pub struct XsRs(XsUnix);

impl XsRs {
    /// Connects as `xenstore-rs` does: the socket named by `XENSTORED_PATH` or
    /// `/run/xenstored/socket`, else `/dev/xen/xenbus`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when neither can be opened.
    pub fn open() -> Result<XsRs> {
        Ok(XsRs(XsUnix::new()?))
    }
}

/// Recovers xenstored's error name from an error of `xenstore-rs` (which keeps it only in the
/// message text); other errors stay I/O errors.
pub fn error_from_xenstore_rs(e: io::Error) -> Error {
    let name = e
        .get_ref()
        .map(ToString::to_string)
        .and_then(|m| m.strip_prefix(XS_ERROR_PREFIX).map(str::to_owned));
    match name {
        Some(name) => Error::Xenstored(XsErrno::from_name(&name)),
        None => Error::Io(e),
    }
}

fn no_txn(txn: TxnId) -> Result<()> {
    if txn == TxnId::NONE {
        Ok(())
    } else {
        Err(Error::Unsupported("transactions (xenstore-rs 0.8)"))
    }
}

impl XenStoreOps for XsRs {
    fn read(&mut self, txn: TxnId, path: &str) -> Result<Vec<u8>> {
        no_txn(txn)?;
        let v = self.0.read(path).map_err(error_from_xenstore_rs)?;
        Ok(v.as_bytes().to_vec())
    }

    fn write(&mut self, txn: TxnId, path: &str, value: &[u8]) -> Result<()> {
        no_txn(txn)?;
        let v = std::str::from_utf8(value)
            .map_err(|_| Error::Unsupported("non-UTF-8 values (xenstore-rs 0.8)"))?;
        if path.contains('\0') || v.contains('\0') {
            return Err(Error::InvalidArgument("string contains a NUL byte"));
        }
        self.0.write(path, v).map_err(error_from_xenstore_rs)
    }

    fn mkdir(&mut self, _txn: TxnId, _path: &str) -> Result<()> {
        Err(Error::Unsupported("mkdir (xenstore-rs 0.8)"))
    }

    fn directory(&mut self, txn: TxnId, path: &str) -> Result<Vec<String>> {
        no_txn(txn)?;
        let names = self.0.directory(path).map_err(error_from_xenstore_rs)?;
        Ok(names.into_iter().map(String::from).collect())
    }

    fn remove(&mut self, txn: TxnId, path: &str) -> Result<()> {
        no_txn(txn)?;
        self.0.rm(path).map_err(error_from_xenstore_rs)
    }

    fn get_perms(&mut self, _txn: TxnId, _path: &str) -> Result<Vec<Perm>> {
        Err(Error::Unsupported("permissions (xenstore-rs 0.8)"))
    }

    fn set_perms(&mut self, _txn: TxnId, _path: &str, _perms: &[Perm]) -> Result<()> {
        Err(Error::Unsupported("permissions (xenstore-rs 0.8)"))
    }

    fn watch(&mut self, _path: &str, _token: &str) -> Result<()> {
        Err(Error::Unsupported("blocking watches (xenstore-rs 0.8)"))
    }

    fn unwatch(&mut self, _path: &str, _token: &str) -> Result<()> {
        Err(Error::Unsupported("blocking watches (xenstore-rs 0.8)"))
    }

    fn next_watch_event(&mut self, _timeout: Option<Duration>) -> Result<Option<WatchEvent>> {
        Err(Error::Unsupported("blocking watches (xenstore-rs 0.8)"))
    }

    fn transaction_start(&mut self) -> Result<TxnId> {
        Err(Error::Unsupported("transactions (xenstore-rs 0.8)"))
    }

    fn transaction_end(&mut self, _txn: TxnId, _commit: bool) -> Result<()> {
        Err(Error::Unsupported("transactions (xenstore-rs 0.8)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_are_recovered() {
        let e = io::Error::new(io::ErrorKind::NotFound, "XS interface error ENOENT");
        assert!(matches!(
            error_from_xenstore_rs(e),
            Error::Xenstored(XsErrno::Enoent)
        ));
        let e = io::Error::other("XS interface error EQUOTA");
        assert!(matches!(
            error_from_xenstore_rs(e),
            Error::Xenstored(XsErrno::Equota)
        ));
        let e = io::Error::from(io::ErrorKind::BrokenPipe);
        assert!(matches!(error_from_xenstore_rs(e), Error::Io(_)));
    }
}
