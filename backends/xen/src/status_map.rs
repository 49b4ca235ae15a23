//! The mapping of xenstore failures onto pvabi statuses, used wherever the Xen backend serves a
//! pvabi call (the STORE service first) from xenstored's answer.
//!
//! | xenstore failure | pvabi status | why |
//! |---|---|---|
//! | `ENOENT` | `NOT_FOUND` | the node, transaction or watch does not exist |
//! | `EACCES`, `EPERM`, `EROFS` | `DENIED` | xenstored's permissions refuse it |
//! | `EEXIST`, `EISCONN` | `ALREADY` | the object is already in the requested state |
//! | `EAGAIN` | `CONFLICT` | a transaction conflicted and was not applied |
//! | `ENOSPC`, `EQUOTA`, `E2BIG`, `ENOMEM` | `NO_SPACE` | a quota or size limit is exhausted |
//! | `EINVAL`, `EISDIR` | `INVALID_PARAM` | the request is malformed |
//! | `ENOTEMPTY` | `BAD_STATE` | the node's state does not allow it |
//! | `EBUSY` | `BUSY` | try again later |
//! | `ENOSYS` | `NOT_SUPPORTED` | xenstored does not implement it |
//! | `EIO`, any other name | `FAILED` | a host-side failure the guest cannot act on |
//! | payload over 4096 bytes (not sent) | `NO_SPACE` | the same limit xenstored reports as `E2BIG` |
//! | argument not encodable (NUL byte) | `INVALID_PARAM` | malformed request |
//! | implementation lacks the operation | `NOT_SUPPORTED` | |
//! | connection I/O failure, protocol violation | `FAILED` | host-side failure |

use pvabi::Status;

use crate::error::{Error, XsErrno};

/// The pvabi status for a xenstored error name (the table in the [module docs](self)).
pub fn status_for_errno(errno: &XsErrno) -> Status {
    match errno {
        XsErrno::Enoent => Status::NOT_FOUND,
        XsErrno::Eacces | XsErrno::Eperm | XsErrno::Erofs => Status::DENIED,
        XsErrno::Eexist | XsErrno::Eisconn => Status::ALREADY,
        XsErrno::Eagain => Status::CONFLICT,
        XsErrno::Enospc | XsErrno::Equota | XsErrno::E2big | XsErrno::Enomem => Status::NO_SPACE,
        XsErrno::Einval | XsErrno::Eisdir => Status::INVALID_PARAM,
        XsErrno::Enotempty => Status::BAD_STATE,
        XsErrno::Ebusy => Status::BUSY,
        XsErrno::Enosys => Status::NOT_SUPPORTED,
        XsErrno::Eio | XsErrno::Unknown(_) => Status::FAILED,
    }
}

/// The pvabi status for any failure of a xenstore operation (the table in the
/// [module docs](self)).
///
/// # Examples
///
/// ```
/// use pvabi::Status;
/// use pvabi_xen::{status_for, Error, XsErrno};
/// assert_eq!(status_for(&Error::Xenstored(XsErrno::Eagain)), Status::CONFLICT);
/// assert_eq!(status_for(&Error::PayloadTooLarge { len: 5000 }), Status::NO_SPACE);
/// ```
pub fn status_for(err: &Error) -> Status {
    match err {
        Error::Xenstored(errno) => status_for_errno(errno),
        Error::PayloadTooLarge { .. } => Status::NO_SPACE,
        Error::InvalidArgument(_) => Status::INVALID_PARAM,
        Error::Unsupported(_) => Status::NOT_SUPPORTED,
        Error::Io(_) | Error::Protocol(_) => Status::FAILED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_table() {
        let table: &[(&str, Status)] = &[
            ("ENOENT", Status::NOT_FOUND),
            ("EACCES", Status::DENIED),
            ("EPERM", Status::DENIED),
            ("EROFS", Status::DENIED),
            ("EEXIST", Status::ALREADY),
            ("EISCONN", Status::ALREADY),
            ("EAGAIN", Status::CONFLICT),
            ("ENOSPC", Status::NO_SPACE),
            ("EQUOTA", Status::NO_SPACE),
            ("E2BIG", Status::NO_SPACE),
            ("ENOMEM", Status::NO_SPACE),
            ("EINVAL", Status::INVALID_PARAM),
            ("EISDIR", Status::INVALID_PARAM),
            ("ENOTEMPTY", Status::BAD_STATE),
            ("EBUSY", Status::BUSY),
            ("ENOSYS", Status::NOT_SUPPORTED),
            ("EIO", Status::FAILED),
            ("ESOMETHINGNEW", Status::FAILED),
        ];
        for (name, status) in table {
            let e = Error::Xenstored(XsErrno::from_name(name));
            assert_eq!(status_for(&e), *status, "{name}");
        }
    }

    #[test]
    fn client_side_failures() {
        assert_eq!(
            status_for(&Error::PayloadTooLarge { len: 4097 }),
            Status::NO_SPACE
        );
        assert_eq!(
            status_for(&Error::InvalidArgument("nul")),
            Status::INVALID_PARAM
        );
        assert_eq!(
            status_for(&Error::Unsupported("watch")),
            Status::NOT_SUPPORTED
        );
        assert_eq!(
            status_for(&Error::Io(std::io::ErrorKind::BrokenPipe.into())),
            Status::FAILED
        );
        assert_eq!(status_for(&Error::Protocol("x".into())), Status::FAILED);
        // Never SUCCESS for a failure.
        assert!(!status_for(&Error::Xenstored(XsErrno::Unknown("".into()))).is_success());
    }
}
