//! A minimal xenstore client over the shared ring page (`io/xs_wire.h`): the page holds a
//! 1024-byte request ring and a 1024-byte response ring with free-running `u32` indices;
//! messages are a 16-byte header (`type`, `req_id`, `tx_id`, `len`, little-endian) and `len`
//! payload bytes (at most 4096). One request is outstanding at a time; waiting polls.

use super::hypercall::{idle_or_time_out, Doorbell};
use super::{ErrName, XenError};
use core::sync::atomic::{fence, AtomicU32, AtomicU8, Ordering};

/// `XS_DIRECTORY`.
pub const XS_DIRECTORY: u32 = 1;
/// `XS_READ`.
pub const XS_READ: u32 = 2;
/// `XS_WATCH`.
pub const XS_WATCH: u32 = 4;
/// `XS_WRITE`.
pub const XS_WRITE: u32 = 11;
/// `XS_MKDIR`.
pub const XS_MKDIR: u32 = 12;
/// `XS_RM`.
pub const XS_RM: u32 = 13;
/// `XS_WATCH_EVENT`.
pub const XS_WATCH_EVENT: u32 = 15;
/// `XS_ERROR`.
pub const XS_ERROR: u32 = 16;
/// Bytes of each ring (`XENSTORE_RING_SIZE`).
pub const RING_SIZE: usize = 1024;
/// Largest payload of a message (`XENSTORE_PAYLOAD_MAX`).
pub const PAYLOAD_MAX: usize = 4096;
/// Size of the message header (`struct xsd_sockmsg`).
pub const HEADER_SIZE: usize = 16;

/// `struct xenstore_domain_interface` as atomics (the page at `HVM_PARAM_STORE_PFN`).
#[derive(Debug)]
#[repr(C)]
pub struct XsInterface {
    /// Requests to xenstored.
    pub req: [AtomicU8; RING_SIZE],
    /// Replies and watch events from xenstored.
    pub rsp: [AtomicU8; RING_SIZE],
    /// Request bytes consumed (xenstored).
    pub req_cons: AtomicU32,
    /// Request bytes produced (guest).
    pub req_prod: AtomicU32,
    /// Response bytes consumed (guest).
    pub rsp_cons: AtomicU32,
    /// Response bytes produced (xenstored).
    pub rsp_prod: AtomicU32,
    /// Features xenstored offers.
    pub server_features: AtomicU32,
    /// Connection state.
    pub connection: AtomicU32,
    /// Error state.
    pub error: AtomicU32,
}

impl XsInterface {
    /// An all-zero interface (for tests and static storage).
    pub const fn new() -> Self {
        Self {
            req: [const { AtomicU8::new(0) }; RING_SIZE],
            rsp: [const { AtomicU8::new(0) }; RING_SIZE],
            req_cons: AtomicU32::new(0),
            req_prod: AtomicU32::new(0),
            rsp_cons: AtomicU32::new(0),
            rsp_prod: AtomicU32::new(0),
            server_features: AtomicU32::new(0),
            connection: AtomicU32::new(0),
            error: AtomicU32::new(0),
        }
    }
}

impl Default for XsInterface {
    fn default() -> Self {
        Self::new()
    }
}

const _: () = {
    assert!(core::mem::offset_of!(XsInterface, rsp) == 1024);
    assert!(core::mem::offset_of!(XsInterface, req_cons) == 2048);
    assert!(core::mem::offset_of!(XsInterface, req_prod) == 2052);
    assert!(core::mem::offset_of!(XsInterface, rsp_cons) == 2056);
    assert!(core::mem::offset_of!(XsInterface, rsp_prod) == 2060);
    assert!(core::mem::offset_of!(XsInterface, server_features) == 2064);
    assert!(core::mem::offset_of!(XsInterface, connection) == 2068);
    assert!(core::mem::offset_of!(XsInterface, error) == 2072);
};

/// A message header (`struct xsd_sockmsg`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsgHeader {
    /// `XS_*` type.
    pub ty: u32,
    /// Request id, echoed in the reply.
    pub req_id: u32,
    /// Transaction id (0: none).
    pub tx_id: u32,
    /// Payload length.
    pub len: u32,
}

impl MsgHeader {
    /// The 16 wire bytes.
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        let words = [self.ty, self.req_id, self.tx_id, self.len];
        for (chunk, w) in b.chunks_exact_mut(4).zip(words) {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        b
    }

    /// The header of 16 wire bytes.
    pub fn decode(b: &[u8; HEADER_SIZE]) -> Self {
        let mut w = [0u32; 4];
        for (d, chunk) in w.iter_mut().zip(b.chunks_exact(4)) {
            let mut x = [0u8; 4];
            x.copy_from_slice(chunk);
            *d = u32::from_le_bytes(x);
        }
        let [ty, req_id, tx_id, len] = w;
        Self {
            ty,
            req_id,
            tx_id,
            len,
        }
    }
}

/// Payload length of a request made of `parts` (their bytes, concatenated).
///
/// # Errors
///
/// [`XenError::TooLong`] above [`PAYLOAD_MAX`].
pub fn payload_len(parts: &[&[u8]]) -> Result<u32, XenError> {
    let n = parts.iter().try_fold(0usize, |a, p| a.checked_add(p.len()));
    match n {
        Some(n) if n <= PAYLOAD_MAX => Ok(n as u32),
        _ => Err(XenError::TooLong),
    }
}

/// A xenstore client on a ring page.
pub struct XsClient<'a, D: Doorbell> {
    intf: &'a XsInterface,
    bell: D,
    next_id: u32,
    spin_limit: u64,
}

impl<'a, D: Doorbell> XsClient<'a, D> {
    /// A client on `intf`, notifying xenstored with `bell`, giving up after `spin_limit` idle
    /// polls per wait.
    pub fn new(intf: &'a XsInterface, bell: D, spin_limit: u64) -> Self {
        Self {
            intf,
            bell,
            next_id: 1,
            spin_limit,
        }
    }

    /// The doorbell.
    pub fn doorbell(&self) -> &D {
        &self.bell
    }

    fn write_all(&mut self, mut data: &[u8]) -> Result<(), XenError> {
        let i = self.intf;
        let mut spins = 0u64;
        while !data.is_empty() {
            let cons = i.req_cons.load(Ordering::Acquire);
            let prod = i.req_prod.load(Ordering::Relaxed);
            let used = prod.wrapping_sub(cons) as usize;
            if used > RING_SIZE {
                return Err(XenError::Protocol);
            }
            let n = (RING_SIZE - used).min(data.len());
            if n == 0 {
                idle_or_time_out(&self.bell, &mut spins, self.spin_limit)?;
                continue;
            }
            let (now, rest) = data.split_at(n);
            for (k, &b) in now.iter().enumerate() {
                let idx = prod.wrapping_add(k as u32) as usize % RING_SIZE;
                if let Some(slot) = i.req.get(idx) {
                    slot.store(b, Ordering::Relaxed);
                }
            }
            // xenstored must see the bytes before the index that publishes them.
            fence(Ordering::Release);
            i.req_prod
                .store(prod.wrapping_add(n as u32), Ordering::Release);
            self.bell.notify()?;
            data = rest;
        }
        Ok(())
    }

    /// Reads `want` response bytes into `out`, or discards them when `out` is `None`.
    fn read_exact(&mut self, mut out: Option<&mut [u8]>, mut want: usize) -> Result<(), XenError> {
        let i = self.intf;
        let mut spins = 0u64;
        let mut at = 0usize;
        while want > 0 {
            let prod = i.rsp_prod.load(Ordering::Acquire);
            let cons = i.rsp_cons.load(Ordering::Relaxed);
            let avail = prod.wrapping_sub(cons) as usize;
            if avail > RING_SIZE {
                return Err(XenError::Protocol);
            }
            let n = avail.min(want);
            if n == 0 {
                idle_or_time_out(&self.bell, &mut spins, self.spin_limit)?;
                continue;
            }
            for k in 0..n {
                let idx = cons.wrapping_add(k as u32) as usize % RING_SIZE;
                let b = i.rsp.get(idx).map_or(0, |s| s.load(Ordering::Relaxed));
                if let Some(o) = out.as_deref_mut().and_then(|o| o.get_mut(at + k)) {
                    *o = b;
                }
            }
            // Finish reading the bytes before handing their space back.
            fence(Ordering::AcqRel);
            i.rsp_cons
                .store(cons.wrapping_add(n as u32), Ordering::Release);
            self.bell.notify()?;
            at += n;
            want -= n;
        }
        Ok(())
    }

    /// Sends one request of type `ty` whose payload is `parts` concatenated and waits for its
    /// reply, skipping watch events; copies the reply's payload into `out` and returns its
    /// length.
    ///
    /// # Errors
    ///
    /// [`XenError::Store`] for an `XS_ERROR` reply; [`XenError::TooLong`] for a request above
    /// [`PAYLOAD_MAX`] or a reply longer than `out` (the reply is consumed);
    /// [`XenError::Protocol`] for a reply of another id or type or impossible ring indices;
    /// [`XenError::TimedOut`]; the doorbell's error.
    pub fn request(&mut self, ty: u32, parts: &[&[u8]], out: &mut [u8]) -> Result<usize, XenError> {
        let len = payload_len(parts)?;
        let req_id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let h = MsgHeader {
            ty,
            req_id,
            tx_id: 0,
            len,
        };
        self.write_all(&h.encode())?;
        for p in parts {
            self.write_all(p)?;
        }
        loop {
            let mut hb = [0u8; HEADER_SIZE];
            self.read_exact(Some(&mut hb), HEADER_SIZE)?;
            let r = MsgHeader::decode(&hb);
            let n = r.len as usize;
            if n > PAYLOAD_MAX {
                return Err(XenError::Protocol);
            }
            if r.ty == XS_WATCH_EVENT {
                self.read_exact(None, n)?;
                continue;
            }
            if r.req_id != req_id {
                return Err(XenError::Protocol);
            }
            if r.ty == XS_ERROR {
                let mut e = [0u8; 16];
                let keep = n.min(e.len());
                self.read_exact(e.get_mut(..keep), keep)?;
                self.read_exact(None, n - keep)?;
                return Err(XenError::Store(ErrName::new(
                    e.get(..keep).unwrap_or_default(),
                )));
            }
            if r.ty != ty {
                self.read_exact(None, n)?;
                return Err(XenError::Protocol);
            }
            if n > out.len() {
                self.read_exact(None, n)?;
                return Err(XenError::TooLong);
            }
            self.read_exact(out.get_mut(..n), n)?;
            return Ok(n);
        }
    }

    /// `XS_READ` of `path` into `out`; returns the value's length.
    ///
    /// # Errors
    ///
    /// As [`XsClient::request`] (`Store("ENOENT")` for a missing node, `Store("EACCES")` for
    /// one this domain may not read).
    pub fn read(&mut self, path: &str, out: &mut [u8]) -> Result<usize, XenError> {
        self.request(XS_READ, &[path.as_bytes(), b"\0"], out)
    }

    /// `XS_WRITE` of `value` to `path`.
    ///
    /// # Errors
    ///
    /// As [`XsClient::request`].
    pub fn write(&mut self, path: &str, value: &[u8]) -> Result<(), XenError> {
        let mut ok = [0u8; 8];
        self.request(XS_WRITE, &[path.as_bytes(), b"\0", value], &mut ok)
            .map(|_| ())
    }

    /// `XS_READ` of `path` as a decimal (`XEN-3` syntax).
    ///
    /// # Errors
    ///
    /// As [`XsClient::read`], and [`XenError::BadValue`] for a value that is not a decimal.
    pub fn read_u64(&mut self, path: &str) -> Result<u64, XenError> {
        let mut b = [0u8; 24];
        let n = self.read(path, &mut b).map_err(|e| match e {
            XenError::TooLong => XenError::BadValue,
            e => e,
        })?;
        super::parse_decimal(b.get(..n).unwrap_or_default())
    }

    /// `XS_WRITE` of `value` in decimal to `path`.
    ///
    /// # Errors
    ///
    /// As [`XsClient::write`].
    pub fn write_u64(&mut self, path: &str, value: u64) -> Result<(), XenError> {
        let v: super::StrBuf<24> = super::format(format_args!("{value}"))?;
        self.write(path, v.as_bytes())
    }
}

#[cfg(test)]
// In tests a panic is the failure report.
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    extern crate std;
    use super::*;
    use core::cell::RefCell;
    use std::string::String;
    use std::vec::Vec;

    /// A xenstored stand-in for the ring protocol: on every notification it consumes whole
    /// requests and answers READ/WRITE from a list, optionally with a watch event first and
    /// in small pieces (to exercise partial reads).
    struct FakeStore<'a> {
        intf: &'a XsInterface,
        nodes: RefCell<Vec<(String, Vec<u8>)>>,
        inbox: RefCell<Vec<u8>>,
        outbox: RefCell<Vec<u8>>,
        chunk: usize,
        event_first: bool,
        notified: RefCell<u32>,
    }

    impl FakeStore<'_> {
        fn pump(&self) {
            let i = self.intf;
            // Consume requests.
            let prod = i.req_prod.load(Ordering::Acquire);
            let mut cons = i.req_cons.load(Ordering::Relaxed);
            while cons != prod {
                let b = i.req[cons as usize % RING_SIZE].load(Ordering::Relaxed);
                self.inbox.borrow_mut().push(b);
                cons = cons.wrapping_add(1);
            }
            i.req_cons.store(cons, Ordering::Release);
            loop {
                let inbox = self.inbox.borrow().clone();
                if inbox.len() < HEADER_SIZE {
                    break;
                }
                let h = MsgHeader::decode(inbox[..HEADER_SIZE].try_into().unwrap());
                let end = HEADER_SIZE + h.len as usize;
                if inbox.len() < end {
                    break;
                }
                let body = &inbox[HEADER_SIZE..end];
                let nul = body.iter().position(|&b| b == 0).unwrap();
                let path = String::from_utf8(body[..nul].to_vec()).unwrap();
                let (ty, reply): (u32, Vec<u8>) = match h.ty {
                    XS_WRITE => {
                        let v = body[nul + 1..].to_vec();
                        let mut n = self.nodes.borrow_mut();
                        n.retain(|(p, _)| *p != path);
                        n.push((path, v));
                        (XS_WRITE, b"OK\0".to_vec())
                    }
                    XS_READ => match self.nodes.borrow().iter().find(|(p, _)| *p == path) {
                        Some((_, v)) => (XS_READ, v.clone()),
                        None => (XS_ERROR, b"ENOENT\0".to_vec()),
                    },
                    _ => (XS_ERROR, b"EINVAL\0".to_vec()),
                };
                let mut out = self.outbox.borrow_mut();
                if self.event_first {
                    let ev = b"some/path\0tok\0";
                    out.extend(
                        MsgHeader {
                            ty: XS_WATCH_EVENT,
                            req_id: 0,
                            tx_id: 0,
                            len: ev.len() as u32,
                        }
                        .encode(),
                    );
                    out.extend(ev);
                }
                out.extend(
                    MsgHeader {
                        ty,
                        req_id: h.req_id,
                        tx_id: 0,
                        len: reply.len() as u32,
                    }
                    .encode(),
                );
                out.extend(reply);
                self.inbox.borrow_mut().drain(..end);
            }
            // Produce replies, at most `chunk` bytes per pump and never more than fits.
            let mut out = self.outbox.borrow_mut();
            let cons = i.rsp_cons.load(Ordering::Acquire);
            let mut prod = i.rsp_prod.load(Ordering::Relaxed);
            let room = RING_SIZE - prod.wrapping_sub(cons) as usize;
            let n = room.min(self.chunk).min(out.len());
            for b in out.drain(..n) {
                i.rsp[prod as usize % RING_SIZE].store(b, Ordering::Relaxed);
                prod = prod.wrapping_add(1);
            }
            i.rsp_prod.store(prod, Ordering::Release);
        }
    }

    impl Doorbell for &FakeStore<'_> {
        fn notify(&self) -> Result<(), XenError> {
            *self.notified.borrow_mut() += 1;
            Ok(())
        }
        fn idle(&self) {
            self.pump();
        }
    }

    fn fake(intf: &XsInterface, chunk: usize, event_first: bool) -> FakeStore<'_> {
        FakeStore {
            intf,
            nodes: RefCell::new(Vec::new()),
            inbox: RefCell::new(Vec::new()),
            outbox: RefCell::new(Vec::new()),
            chunk,
            event_first,
            notified: RefCell::new(0),
        }
    }

    #[test]
    fn header_round_trip_is_little_endian() {
        let h = MsgHeader {
            ty: XS_WRITE,
            req_id: 0x0102_0304,
            tx_id: 0,
            len: 9,
        };
        let b = h.encode();
        assert_eq!(&b[..8], &[11, 0, 0, 0, 4, 3, 2, 1]);
        assert_eq!(MsgHeader::decode(&b), h);
        assert_eq!(payload_len(&[b"abc", b"\0", b"de"]), Ok(6));
        let big = [0u8; PAYLOAD_MAX];
        assert_eq!(payload_len(&[&big, b"x"]), Err(XenError::TooLong));
    }

    #[test]
    fn write_read_round_trip_through_the_ring_with_wraparound() {
        let intf = std::boxed::Box::new(XsInterface::new());
        // Start the indices near the u32 wrap to cover free-running arithmetic.
        for c in [
            &intf.req_cons,
            &intf.req_prod,
            &intf.rsp_cons,
            &intf.rsp_prod,
        ] {
            c.store(u32::MAX - 20, Ordering::Relaxed);
        }
        for (chunk, event_first) in [(4096, false), (7, true)] {
            let store = fake(&intf, chunk, event_first);
            let mut xs = XsClient::new(&intf, &store, 10_000);
            let long = [b'v'; 1500]; // longer than one ring: written in pieces
            for round in 0..5u64 {
                xs.write("device/pvabi/0/state", b"3").unwrap();
                xs.write("data/long", &long).unwrap();
                xs.write_u64("data/n", round * 1000).unwrap();
                let mut out = [0u8; 2048];
                let n = xs.read("device/pvabi/0/state", &mut out).unwrap();
                assert_eq!(&out[..n], b"3");
                let n = xs.read("data/long", &mut out).unwrap();
                assert_eq!(&out[..n], &long[..]);
                assert_eq!(xs.read_u64("data/n"), Ok(round * 1000));
            }
            let mut out = [0u8; 16];
            assert!(matches!(
                xs.read("missing", &mut out),
                Err(XenError::Store(e)) if e.as_str() == "ENOENT"
            ));
            // A reply longer than the buffer is consumed and reported.
            assert_eq!(xs.read("data/long", &mut out), Err(XenError::TooLong));
            // The client stays in step afterwards.
            assert_eq!(xs.read_u64("data/n"), Ok(4000));
            xs.write("data/bad", b"012").unwrap();
            assert_eq!(xs.read_u64("data/bad"), Err(XenError::BadValue));
            assert!(*store.notified.borrow() > 0);
        }
    }

    #[test]
    fn silent_store_times_out_and_bad_indices_are_protocol_errors() {
        struct Silent;
        impl Doorbell for Silent {
            fn notify(&self) -> Result<(), XenError> {
                Ok(())
            }
            fn idle(&self) {}
        }
        let intf = std::boxed::Box::new(XsInterface::new());
        let mut xs = XsClient::new(&intf, Silent, 100);
        let mut out = [0u8; 8];
        assert_eq!(xs.read("x", &mut out), Err(XenError::TimedOut));
        intf.rsp_prod.store(5000, Ordering::Relaxed);
        assert_eq!(xs.read("x", &mut out), Err(XenError::Protocol));
    }
}
