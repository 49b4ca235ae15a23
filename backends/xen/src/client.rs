//! [`XenStore`]: a xenstore client over xenstored's unix socket or the `/dev/xen/xenbus` device,
//! speaking the [wire protocol](crate::wire) with transactions, watches and permissions.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, Result, XsErrno};
use crate::ops::{TxnId, WatchEvent, XenStoreOps};
use crate::perms::Perm;
use crate::wire::{self, Message, MsgType};

/// xenstored's socket path when `XENSTORED_PATH` does not name another.
pub const DEFAULT_SOCKET: &str = "/run/xenstored/socket";
/// The xenbus device of a Linux domain.
pub const XENBUS_DEVICE: &str = "/dev/xen/xenbus";

/// A byte stream to xenstored that can wait for input with a timeout.
pub trait Transport: Read + Write {
    /// Waits until input is available or `timeout` passes (`None`: forever). Returns whether
    /// input is available.
    ///
    /// # Errors
    ///
    /// The I/O error of the wait.
    fn wait_readable(&mut self, timeout: Option<Duration>) -> io::Result<bool>;
}

/// Waits for `fd` to become readable with poll(2).
fn poll_readable(fd: &impl AsRawFd, timeout: Option<Duration>) -> io::Result<bool> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let ms: libc::c_int = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                // Round up so that a short timeout still waits.
                let ms = left
                    .as_millis()
                    .saturating_add(u128::from(left.subsec_nanos() % 1_000_000 != 0));
                libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
            }
        };
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is a valid, initialised pollfd that lives across the call, and the count
        // passed is 1, the number of entries it points to; poll(2) only writes `revents`.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if rc > 0 {
            return Ok(true);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(false);
        }
    }
}

impl Transport for UnixStream {
    fn wait_readable(&mut self, timeout: Option<Duration>) -> io::Result<bool> {
        poll_readable(self, timeout)
    }
}

impl Transport for File {
    fn wait_readable(&mut self, timeout: Option<Duration>) -> io::Result<bool> {
        poll_readable(self, timeout)
    }
}

/// A xenstore connection.
///
/// Requests are answered in order; watch events that arrive while a reply is awaited are queued
/// and handed out by [`XenStoreOps::next_watch_event`]. After an [`Error::Io`] or
/// [`Error::Protocol`] the connection may be out of step with xenstored: drop it and connect
/// again.
///
/// # Examples
///
/// ```no_run
/// use pvabi_xen::{TxnId, XenStore, XenStoreOps};
/// let mut xs = XenStore::open_default()?;
/// xs.write(TxnId::NONE, "/local/domain/0/data/x", b"1")?;
/// assert_eq!(xs.read(TxnId::NONE, "/local/domain/0/data/x")?, b"1");
/// # Ok::<(), pvabi_xen::Error>(())
/// ```
pub struct XenStore<T: Transport = Box<dyn Transport + Send>> {
    transport: T,
    next_req_id: u32,
    events: VecDeque<WatchEvent>,
    /// The transport is a Linux xenbus device, which reports some of xenstored's refusals as the
    /// errno of the write.
    errno_on_write: bool,
}

impl XenStore {
    /// Connects to xenstored's unix socket at `path`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the socket cannot be connected.
    pub fn open_socket(path: impl AsRef<Path>) -> Result<XenStore> {
        let s = UnixStream::connect(path)?;
        Ok(XenStore::with_transport(Box::new(s)))
    }

    /// Opens the xenbus device at `path` (normally [`XENBUS_DEVICE`]).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the device cannot be opened.
    pub fn open_device(path: impl AsRef<Path>) -> Result<XenStore> {
        let f = File::options().read(true).write(true).open(path)?;
        let mut xs = XenStore::with_transport(Box::new(f) as Box<dyn Transport + Send>);
        xs.errno_on_write = true;
        Ok(xs)
    }

    /// Connects the way the Xen tools do: the socket named by `XENSTORED_PATH` or
    /// [`DEFAULT_SOCKET`], else the [`XENBUS_DEVICE`].
    ///
    /// # Errors
    ///
    /// The device's [`Error::Io`] when neither can be opened.
    pub fn open_default() -> Result<XenStore> {
        let sock = std::env::var("XENSTORED_PATH").unwrap_or_else(|_| DEFAULT_SOCKET.into());
        match XenStore::open_socket(&sock) {
            Ok(xs) => Ok(xs),
            Err(_) => XenStore::open_device(XENBUS_DEVICE),
        }
    }
}

impl<T: Transport> XenStore<T> {
    /// A client over an already open transport.
    pub fn with_transport(transport: T) -> XenStore<T> {
        XenStore {
            transport,
            next_req_id: 1,
            events: VecDeque::new(),
            errno_on_write: false,
        }
    }

    /// Sends one request and returns the payload of its reply, queueing watch events that come
    /// first.
    ///
    /// # Errors
    ///
    /// [`Error::Xenstored`] for an `XS_ERROR` reply, [`Error::Protocol`] for a reply of another
    /// type or request id, the errors of [`wire::write_message`] and [`wire::read_message`].
    pub fn request(&mut self, msg_type: MsgType, txn: TxnId, payload: &[u8]) -> Result<Vec<u8>> {
        let req_id = self.next_req_id;
        self.next_req_id = self.next_req_id.wrapping_add(1).max(1);
        match wire::write_message(&mut self.transport, msg_type, req_id, txn.0, payload) {
            Ok(()) => {}
            // The Linux xenbus device handles WATCH and UNWATCH in the kernel and reports
            // xenstored's refusal as the write's errno.
            Err(Error::Io(e)) if self.errno_on_write => {
                return Err(match e.raw_os_error().and_then(XsErrno::from_os_error) {
                    Some(errno) => Error::Xenstored(errno),
                    None => Error::Io(e),
                });
            }
            Err(e) => return Err(e),
        }
        loop {
            let Message { header, payload } = wire::read_message(&mut self.transport)?;
            if header.msg_type == MsgType::WATCH_EVENT {
                self.queue_event(&payload)?;
                continue;
            }
            if header.req_id != req_id {
                return Err(Error::Protocol(format!(
                    "reply for request {} while awaiting {req_id}",
                    header.req_id
                )));
            }
            if header.msg_type == MsgType::ERROR {
                return Err(Error::Xenstored(XsErrno::from_name(&wire::one_string(
                    &payload,
                )?)));
            }
            if header.msg_type != msg_type {
                return Err(Error::Protocol(format!(
                    "reply of type {} to a request of type {}",
                    header.msg_type.0, msg_type.0
                )));
            }
            return Ok(payload);
        }
    }

    fn queue_event(&mut self, payload: &[u8]) -> Result<()> {
        let mut parts = wire::split_strings(payload)?.into_iter();
        match (parts.next(), parts.next()) {
            (Some(path), Some(token)) => {
                self.events.push_back(WatchEvent { path, token });
                Ok(())
            }
            _ => Err(Error::Protocol("watch event without path and token".into())),
        }
    }

    /// Checks that a path can be put on the wire.
    fn path<'a>(&self, path: &'a str) -> Result<&'a str> {
        if path.is_empty() {
            return Err(Error::InvalidArgument("empty path"));
        }
        Ok(path)
    }

    /// `XS_DIRECTORY_PART`: a directory too large for one reply, read from successive
    /// offsets; restarted when the directory changes in between (its generation count moves).
    fn directory_in_parts(&mut self, txn: TxnId, path: &str) -> Result<Vec<String>> {
        const RESTARTS: u32 = 8;
        let p = self.path(path)?.to_string();
        'restart: for _ in 0..RESTARTS {
            let mut names = Vec::new();
            let mut offset = 0usize;
            let mut generation: Option<String> = None;
            loop {
                let off = offset.to_string();
                let req = wire::payload(&[&p, &off], b"")?;
                let r = self.request(MsgType::DIRECTORY_PART, txn, &req)?;
                // `<generation>\0<name>\0...<name>\0` and, on the last part, one more `\0`.
                let mut parts = r.split(|b| *b == 0);
                let gen = parts
                    .next()
                    .map(|g| String::from_utf8_lossy(g).into_owned())
                    .ok_or_else(|| Error::Protocol("empty XS_DIRECTORY_PART reply".into()))?;
                match &generation {
                    Some(g) if *g != gen => continue 'restart,
                    _ => generation = Some(gen),
                }
                let body = &r[r.iter().position(|b| *b == 0).map_or(r.len(), |i| i + 1)..];
                let last = body.is_empty() || body.ends_with(&[0, 0]) || body == [0];
                let mut got = 0usize;
                for n in body.split(|b| *b == 0).filter(|n| !n.is_empty()) {
                    got += n.len() + 1;
                    names.push(String::from_utf8(n.to_vec()).map_err(|_| {
                        Error::Protocol("name in XS_DIRECTORY_PART reply is not UTF-8".into())
                    })?);
                }
                if last || got == 0 {
                    return Ok(names);
                }
                offset += got;
            }
        }
        Err(Error::Xenstored(XsErrno::Eagain))
    }

    /// `XS_GET_DOMAIN_PATH`: the home path of `domid` (`/local/domain/<domid>`).
    ///
    /// # Errors
    ///
    /// As [`XenStore::request`].
    pub fn get_domain_path(&mut self, domid: u32) -> Result<String> {
        let p = wire::payload(&[&domid.to_string()], b"")?;
        let r = self.request(MsgType::GET_DOMAIN_PATH, TxnId::NONE, &p)?;
        wire::one_string(&r)
    }
}

impl<T: Transport> XenStoreOps for XenStore<T> {
    fn read(&mut self, txn: TxnId, path: &str) -> Result<Vec<u8>> {
        let p = wire::payload(&[self.path(path)?], b"")?;
        self.request(MsgType::READ, txn, &p)
    }

    fn write(&mut self, txn: TxnId, path: &str, value: &[u8]) -> Result<()> {
        let p = wire::payload(&[self.path(path)?], value)?;
        self.request(MsgType::WRITE, txn, &p).map(drop)
    }

    fn mkdir(&mut self, txn: TxnId, path: &str) -> Result<()> {
        let p = wire::payload(&[self.path(path)?], b"")?;
        self.request(MsgType::MKDIR, txn, &p).map(drop)
    }

    fn directory(&mut self, txn: TxnId, path: &str) -> Result<Vec<String>> {
        let p = wire::payload(&[self.path(path)?], b"")?;
        match self.request(MsgType::DIRECTORY, txn, &p) {
            Ok(r) => wire::split_strings(&r),
            // The names do not fit in one reply: read them in parts.
            Err(Error::Xenstored(XsErrno::E2big)) => self.directory_in_parts(txn, path),
            Err(e) => Err(e),
        }
    }

    fn remove(&mut self, txn: TxnId, path: &str) -> Result<()> {
        let p = wire::payload(&[self.path(path)?], b"")?;
        self.request(MsgType::RM, txn, &p).map(drop)
    }

    fn get_perms(&mut self, txn: TxnId, path: &str) -> Result<Vec<Perm>> {
        let p = wire::payload(&[self.path(path)?], b"")?;
        let r = self.request(MsgType::GET_PERMS, txn, &p)?;
        wire::split_strings(&r)?.iter().map(|s| s.parse()).collect()
    }

    fn set_perms(&mut self, txn: TxnId, path: &str, perms: &[Perm]) -> Result<()> {
        if perms.is_empty() {
            return Err(Error::InvalidArgument(
                "a permission list needs an owner entry",
            ));
        }
        let entries: Vec<String> = perms.iter().map(Perm::to_string).collect();
        let mut strings = vec![self.path(path)?];
        strings.extend(entries.iter().map(String::as_str));
        let p = wire::payload(&strings, b"")?;
        self.request(MsgType::SET_PERMS, txn, &p).map(drop)
    }

    fn watch(&mut self, path: &str, token: &str) -> Result<()> {
        let p = wire::payload(&[self.path(path)?, token], b"")?;
        self.request(MsgType::WATCH, TxnId::NONE, &p).map(drop)
    }

    fn unwatch(&mut self, path: &str, token: &str) -> Result<()> {
        let p = wire::payload(&[self.path(path)?, token], b"")?;
        self.request(MsgType::UNWATCH, TxnId::NONE, &p).map(drop)
    }

    fn next_watch_event(&mut self, timeout: Option<Duration>) -> Result<Option<WatchEvent>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(e) = self.events.pop_front() {
                return Ok(Some(e));
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if !self.transport.wait_readable(left)? {
                return Ok(None);
            }
            let Message { header, payload } = wire::read_message(&mut self.transport)?;
            if header.msg_type != MsgType::WATCH_EVENT {
                return Err(Error::Protocol(format!(
                    "unsolicited message of type {}",
                    header.msg_type.0
                )));
            }
            self.queue_event(&payload)?;
        }
    }

    fn transaction_start(&mut self) -> Result<TxnId> {
        let r = self.request(MsgType::TRANSACTION_START, TxnId::NONE, b"\0")?;
        let s = wire::one_string(&r)?;
        match s.parse::<u32>() {
            Ok(id) if id != 0 => Ok(TxnId(id)),
            _ => Err(Error::Protocol(format!("bad transaction id {s:?}"))),
        }
    }

    fn transaction_end(&mut self, txn: TxnId, commit: bool) -> Result<()> {
        if txn == TxnId::NONE {
            return Err(Error::InvalidArgument("no transaction to end"));
        }
        let p: &[u8] = if commit { b"T\0" } else { b"F\0" };
        self.request(MsgType::TRANSACTION_END, txn, p).map(drop)
    }
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn wait_readable(&mut self, timeout: Option<Duration>) -> io::Result<bool> {
        (**self).wait_readable(timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perms::Access;
    use crate::wire::Header;

    /// A transport with scripted replies; records what the client wrote.
    #[derive(Default)]
    struct Scripted {
        input: VecDeque<u8>,
        output: Vec<u8>,
        /// When set, writes fail with this errno.
        write_errno: Option<i32>,
    }

    impl Scripted {
        fn reply(&mut self, msg_type: MsgType, req_id: u32, payload: &[u8]) {
            let h = Header {
                msg_type,
                req_id,
                tx_id: 0,
                len: payload.len() as u32,
            };
            self.input.extend(h.encode());
            self.input.extend(payload);
        }
    }

    impl Read for Scripted {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl Write for Scripted {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            match self.write_errno {
                Some(e) => Err(io::Error::from_raw_os_error(e)),
                None => self.output.write(buf),
            }
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Transport for Scripted {
        fn wait_readable(&mut self, _timeout: Option<Duration>) -> io::Result<bool> {
            Ok(!self.input.is_empty())
        }
    }

    fn sent(xs: &XenStore<Scripted>) -> Vec<Message> {
        let mut out = xs.transport.output.as_slice();
        let mut v = Vec::new();
        while !out.is_empty() {
            v.push(wire::read_message(&mut out).unwrap());
        }
        v
    }

    #[test]
    fn requests_carry_type_txn_and_payload() {
        let mut t = Scripted::default();
        t.reply(MsgType::WRITE, 1, b"OK\0");
        t.reply(MsgType::READ, 2, b"v\xff");
        t.reply(MsgType::DIRECTORY, 3, b"a\0b\0");
        t.reply(MsgType::SET_PERMS, 4, b"OK\0");
        t.reply(MsgType::GET_PERMS, 5, b"n0\0r7\0");
        t.reply(MsgType::TRANSACTION_START, 6, b"42\0");
        t.reply(MsgType::TRANSACTION_END, 7, b"OK\0");
        let mut xs = XenStore::with_transport(t);
        xs.write(TxnId(5), "/a", b"v\xff").unwrap();
        assert_eq!(xs.read(TxnId::NONE, "/a").unwrap(), b"v\xff");
        assert_eq!(xs.directory(TxnId::NONE, "/").unwrap(), ["a", "b"]);
        let perms = [Perm::new(0, Access::None), Perm::new(7, Access::Read)];
        xs.set_perms(TxnId::NONE, "/a", &perms).unwrap();
        assert_eq!(xs.get_perms(TxnId::NONE, "/a").unwrap(), perms);
        let txn = xs.transaction_start().unwrap();
        assert_eq!(txn, TxnId(42));
        xs.transaction_end(txn, true).unwrap();

        let s = sent(&xs);
        assert_eq!(s.len(), 7);
        assert_eq!(s[0].header.msg_type, MsgType::WRITE);
        assert_eq!(s[0].header.tx_id, 5);
        assert_eq!(s[0].payload, b"/a\0v\xff");
        assert_eq!(s[1].payload, b"/a\0");
        assert_eq!(s[3].payload, b"/a\0n0\0r7\0");
        assert_eq!(s[5].payload, b"\0");
        assert_eq!(s[6].header.tx_id, 42);
        assert_eq!(s[6].payload, b"T\0");
        for (i, m) in s.iter().enumerate() {
            assert_eq!(m.header.req_id, i as u32 + 1);
        }
    }

    #[test]
    fn errors_and_protocol_violations() {
        let mut t = Scripted::default();
        t.reply(MsgType::ERROR, 1, b"ENOENT\0");
        t.reply(MsgType::ERROR, 2, b"EAGAIN\0");
        t.reply(MsgType::READ, 99, b"x");
        let mut xs = XenStore::with_transport(t);
        assert!(matches!(
            xs.read(TxnId::NONE, "/missing"),
            Err(Error::Xenstored(XsErrno::Enoent))
        ));
        assert!(matches!(
            xs.transaction_end(TxnId(3), true),
            Err(Error::Xenstored(XsErrno::Eagain))
        ));
        assert!(matches!(
            xs.read(TxnId::NONE, "/x"),
            Err(Error::Protocol(_))
        ));
        // Reply of the wrong type.
        let mut t = Scripted::default();
        t.reply(MsgType::DIRECTORY, 1, b"");
        let mut xs = XenStore::with_transport(t);
        assert!(matches!(
            xs.read(TxnId::NONE, "/x"),
            Err(Error::Protocol(_))
        ));
        // Connection closed.
        let mut xs = XenStore::with_transport(Scripted::default());
        assert!(matches!(xs.read(TxnId::NONE, "/x"), Err(Error::Io(_))));
        // Client-side refusals send nothing.
        assert!(matches!(
            xs.read(TxnId::NONE, ""),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            xs.write(TxnId::NONE, "/x", &[0; 5000]),
            Err(Error::PayloadTooLarge { .. })
        ));
        assert!(matches!(
            xs.transaction_end(TxnId::NONE, true),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            xs.set_perms(TxnId::NONE, "/x", &[]),
            Err(Error::InvalidArgument(_))
        ));
        assert_eq!(xs.transport.output.len(), HEADER_LEN_OF_ONE_READ);
    }

    /// The one READ of "/x" that reached the transport in `errors_and_protocol_violations`.
    const HEADER_LEN_OF_ONE_READ: usize = wire::HEADER_SIZE + 3;

    #[test]
    fn watch_events_are_queued_across_replies() {
        let mut t = Scripted::default();
        t.reply(MsgType::WATCH_EVENT, 0, b"/w\0tok\0");
        t.reply(MsgType::WATCH, 1, b"OK\0");
        t.reply(MsgType::WATCH_EVENT, 0, b"/w/c\0tok\0");
        t.reply(MsgType::WRITE, 2, b"OK\0");
        let mut xs = XenStore::with_transport(t);
        xs.watch("/w", "tok").unwrap();
        xs.write(TxnId::NONE, "/w/c", b"1").unwrap();
        let e1 = xs.next_watch_event(Some(Duration::ZERO)).unwrap().unwrap();
        let e2 = xs.next_watch_event(Some(Duration::ZERO)).unwrap().unwrap();
        assert_eq!((e1.path.as_str(), e1.token.as_str()), ("/w", "tok"));
        assert_eq!(e2.path, "/w/c");
        assert_eq!(xs.next_watch_event(Some(Duration::ZERO)).unwrap(), None);
        // An event read while waiting.
        xs.transport.reply(MsgType::WATCH_EVENT, 0, b"/w/d\0tok\0");
        assert_eq!(xs.next_watch_event(None).unwrap().unwrap().path, "/w/d");
        // A malformed event.
        xs.transport.reply(MsgType::WATCH_EVENT, 0, b"/w/d\0");
        assert!(matches!(xs.next_watch_event(None), Err(Error::Protocol(_))));
        // A reply nobody asked for.
        xs.transport.reply(MsgType::READ, 7, b"");
        assert!(matches!(xs.next_watch_event(None), Err(Error::Protocol(_))));
    }

    #[test]
    fn device_write_errnos_are_xenstored_errors() {
        let t = Scripted {
            write_errno: Some(libc::E2BIG),
            ..Scripted::default()
        };
        let mut xs = XenStore::with_transport(t);
        // A socket: the errno is an I/O failure.
        assert!(matches!(xs.watch("/w", "t"), Err(Error::Io(_))));
        // The xenbus device: it is xenstored's refusal.
        xs.errno_on_write = true;
        assert!(matches!(
            xs.watch("/w", "t"),
            Err(Error::Xenstored(XsErrno::E2big))
        ));
        xs.transport.write_errno = Some(libc::EPIPE);
        assert!(matches!(xs.watch("/w", "t"), Err(Error::Io(_))));
    }

    #[test]
    fn bad_transaction_ids_are_protocol_errors() {
        for bad in [&b"0\0"[..], b"x\0", b"\0"] {
            let mut t = Scripted::default();
            t.reply(MsgType::TRANSACTION_START, 1, bad);
            let mut xs = XenStore::with_transport(t);
            assert!(matches!(xs.transaction_start(), Err(Error::Protocol(_))));
        }
    }

    #[test]
    fn poll_times_out_and_sees_input() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        assert!(!a.wait_readable(Some(Duration::from_millis(1))).unwrap());
        b.write_all(b"x").unwrap();
        assert!(a.wait_readable(Some(Duration::from_millis(1000))).unwrap());
        assert!(a.wait_readable(None).unwrap());
    }
}
