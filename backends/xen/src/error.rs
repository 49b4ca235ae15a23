//! Errors of the xenstore client: xenstored's own error names ([`XsErrno`]) and the client's
//! failures ([`Error`]).

use std::fmt;
use std::io;

/// An error name xenstored sent in an `XS_ERROR` reply (the wire carries the name, e.g.
/// `"ENOENT"`, not a number). Open: a name this crate does not know is kept in
/// [`XsErrno::Unknown`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum XsErrno {
    /// `ENOENT`: the node (or a transaction, watch or domain named in the request) does not exist.
    Enoent,
    /// `EACCES`: the connection's domain lacks the permission the request needs.
    Eacces,
    /// `EPERM`: the request is reserved to a privileged connection.
    Eperm,
    /// `EROFS`: the connection is read-only.
    Erofs,
    /// `EEXIST`: the node or watch exists already.
    Eexist,
    /// `EISDIR`: the request needs a leaf but names a directory.
    Eisdir,
    /// `EAGAIN`: a transaction conflicted with a concurrent change and was not applied.
    Eagain,
    /// `ENOSPC`: a per-domain quota (nodes, watches, transactions) is exhausted.
    Enospc,
    /// `E2BIG`: a value, path, permission list or message exceeds a size limit.
    E2big,
    /// `EQUOTA`: a quota is exhausted (oxenstored's name).
    Equota,
    /// `ENOMEM`: xenstored ran out of memory or the domain's memory quota is exhausted.
    Enomem,
    /// `EINVAL`: a malformed request (bad path, bad permission string, bad argument count).
    Einval,
    /// `ENOTEMPTY`: the node has children.
    Enotempty,
    /// `EBUSY`: xenstored is busy (e.g. a live update is in progress).
    Ebusy,
    /// `EISCONN`: the domain is connected already.
    Eisconn,
    /// `ENOSYS`: the request type is not implemented.
    Enosys,
    /// `EIO`: an internal xenstored failure.
    Eio,
    /// Any other name, kept verbatim.
    Unknown(Box<str>),
}

impl XsErrno {
    /// Parses the name xenstored sent (without its trailing NUL).
    pub fn from_name(name: &str) -> XsErrno {
        match name {
            "ENOENT" => XsErrno::Enoent,
            "EACCES" => XsErrno::Eacces,
            "EPERM" => XsErrno::Eperm,
            "EROFS" => XsErrno::Erofs,
            "EEXIST" => XsErrno::Eexist,
            "EISDIR" => XsErrno::Eisdir,
            "EAGAIN" => XsErrno::Eagain,
            "ENOSPC" => XsErrno::Enospc,
            "E2BIG" => XsErrno::E2big,
            "EQUOTA" => XsErrno::Equota,
            "ENOMEM" => XsErrno::Enomem,
            "EINVAL" => XsErrno::Einval,
            "ENOTEMPTY" => XsErrno::Enotempty,
            "EBUSY" => XsErrno::Ebusy,
            "EISCONN" => XsErrno::Eisconn,
            "ENOSYS" => XsErrno::Enosys,
            "EIO" => XsErrno::Eio,
            other => XsErrno::Unknown(other.into()),
        }
    }

    /// The name for a Linux errno value, for the errors the Linux xenbus device reports as the
    /// `errno` of `write(2)` instead of an `XS_ERROR` reply (it handles WATCH and UNWATCH in the
    /// kernel). `None` for a value that is no xenstored error.
    pub fn from_os_error(code: i32) -> Option<XsErrno> {
        Some(match code {
            libc::ENOENT => XsErrno::Enoent,
            libc::EACCES => XsErrno::Eacces,
            libc::EPERM => XsErrno::Eperm,
            libc::EROFS => XsErrno::Erofs,
            libc::EEXIST => XsErrno::Eexist,
            libc::EISDIR => XsErrno::Eisdir,
            libc::EAGAIN => XsErrno::Eagain,
            libc::ENOSPC => XsErrno::Enospc,
            libc::E2BIG => XsErrno::E2big,
            libc::ENOMEM => XsErrno::Enomem,
            libc::EINVAL => XsErrno::Einval,
            libc::ENOTEMPTY => XsErrno::Enotempty,
            libc::EBUSY => XsErrno::Ebusy,
            libc::EISCONN => XsErrno::Eisconn,
            libc::ENOSYS => XsErrno::Enosys,
            libc::EIO => XsErrno::Eio,
            _ => return None,
        })
    }

    /// The name as xenstored spells it.
    pub fn name(&self) -> &str {
        match self {
            XsErrno::Enoent => "ENOENT",
            XsErrno::Eacces => "EACCES",
            XsErrno::Eperm => "EPERM",
            XsErrno::Erofs => "EROFS",
            XsErrno::Eexist => "EEXIST",
            XsErrno::Eisdir => "EISDIR",
            XsErrno::Eagain => "EAGAIN",
            XsErrno::Enospc => "ENOSPC",
            XsErrno::E2big => "E2BIG",
            XsErrno::Equota => "EQUOTA",
            XsErrno::Enomem => "ENOMEM",
            XsErrno::Einval => "EINVAL",
            XsErrno::Enotempty => "ENOTEMPTY",
            XsErrno::Ebusy => "EBUSY",
            XsErrno::Eisconn => "EISCONN",
            XsErrno::Enosys => "ENOSYS",
            XsErrno::Eio => "EIO",
            XsErrno::Unknown(name) => name,
        }
    }
}

impl fmt::Display for XsErrno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A failed xenstore operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// xenstored answered with an `XS_ERROR` reply.
    #[error("xenstored refused the request: {0}")]
    Xenstored(XsErrno),
    /// Reading from or writing to the connection failed.
    #[error("xenstore connection failed")]
    Io(#[from] io::Error),
    /// xenstored's reply broke the protocol (wrong type or request id, oversized, malformed).
    #[error("xenstore protocol violation: {0}")]
    Protocol(String),
    /// The request would exceed the protocol's payload limit of
    /// [`PAYLOAD_MAX`](crate::wire::PAYLOAD_MAX) bytes; it was not sent.
    #[error("request payload of {len} bytes exceeds the xenstore limit")]
    PayloadTooLarge {
        /// The payload length that was asked for.
        len: usize,
    },
    /// An argument cannot be put on the wire (a path or token with a NUL byte, an empty path).
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// The implementation behind the [`XenStoreOps`](crate::XenStoreOps) object does not offer
    /// this operation.
    #[error("operation not supported by this xenstore implementation: {0}")]
    Unsupported(&'static str),
}

impl Error {
    /// The xenstored error name, when xenstored refused the request.
    pub fn xs_errno(&self) -> Option<&XsErrno> {
        match self {
            Error::Xenstored(e) => Some(e),
            _ => None,
        }
    }
}

/// Result of a xenstore operation.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in [
            "ENOENT",
            "EACCES",
            "EPERM",
            "EROFS",
            "EEXIST",
            "EISDIR",
            "EAGAIN",
            "ENOSPC",
            "E2BIG",
            "EQUOTA",
            "ENOMEM",
            "EINVAL",
            "ENOTEMPTY",
            "EBUSY",
            "EISCONN",
            "ENOSYS",
            "EIO",
            "EWHATEVER",
        ] {
            let e = XsErrno::from_name(name);
            assert_eq!(e.name(), name);
            assert_eq!(e.to_string(), name);
        }
        assert_eq!(
            XsErrno::from_name("EWHATEVER"),
            XsErrno::Unknown("EWHATEVER".into())
        );
    }

    #[test]
    fn os_errors() {
        assert_eq!(XsErrno::from_os_error(libc::E2BIG), Some(XsErrno::E2big));
        assert_eq!(XsErrno::from_os_error(libc::ENOSPC), Some(XsErrno::Enospc));
        assert_eq!(XsErrno::from_os_error(libc::EEXIST), Some(XsErrno::Eexist));
        assert_eq!(XsErrno::from_os_error(libc::EPIPE), None);
    }
}
