//! The shared-ring gate on the Xen transport: the ring of [`pvabi::ring`] in the granted window,
//! with an event channel as the doorbell (`XEN-6`) instead of an I/O port.
//!
//! Same protocol as [`crate::ring::RingGate`]: requests are written, `req_prod` is advanced
//! (release), the doorbell is notified unless the host set `host_polling`, and the completions
//! are awaited by polling. One caller at a time (`&mut self`).

use super::hypercall::Doorbell;
use super::XenError;
use crate::ring::bypasses_ring;
use crate::shared::{RingCompletionShared, RingHeaderShared, RingRequestShared, RingShared};
use core::sync::atomic::{fence, Ordering};
use pvabi::call::CallId;
use pvabi::ring::RingHeader;
use pvabi::{Ret, Status};

/// Writes the ring header of `RING-2` (magic, order, zeroed counters) into `ring`.
pub fn init_header<const SLOTS: usize>(ring: &RingShared<SLOTS>) {
    let h = &ring.header;
    h.magic.store(RingHeader::MAGIC, Ordering::Relaxed);
    h.order.store(RingShared::<SLOTS>::ORDER, Ordering::Relaxed);
    for c in [
        &h.req_prod,
        &h.req_cons,
        &h.cmp_prod,
        &h.cmp_cons,
        &h.host_polling,
    ] {
        c.store(0, Ordering::Relaxed);
    }
    fence(Ordering::Release);
}

/// A ring client whose doorbell is a [`Doorbell`] (an event channel on Xen).
pub struct XenRing<'a, D: Doorbell> {
    header: &'a RingHeaderShared,
    requests: &'a [RingRequestShared],
    completions: &'a [RingCompletionShared],
    bell: D,
    spin_limit: u64,
    broken: bool,
}

impl<'a, D: Doorbell> XenRing<'a, D> {
    /// A client on `ring` (its header written with [`init_header`] and registered by the
    /// handshake), notifying with `bell`, waiting at most `spin_limit` idle polls per call.
    pub fn new<const SLOTS: usize>(ring: &'a RingShared<SLOTS>, bell: D, spin_limit: u64) -> Self {
        Self {
            header: &ring.header,
            requests: &ring.requests,
            completions: &ring.completions,
            bell,
            spin_limit,
            broken: false,
        }
    }

    /// One call through the ring; returns the host's (status, value).
    ///
    /// # Errors
    ///
    /// `Ret::err(INVALID_PARAM)` for a call that must bypass the ring (`RING-6`: there is no
    /// register gate on this transport); `TIMED_OUT` when the host does not complete it (the
    /// ring is then unusable: later calls get `FAILED`); `FAILED` for completions that do not
    /// match, or a failed notification.
    pub fn call(&mut self, id: CallId, args: [u64; 6]) -> Ret {
        if bypasses_ring(id) {
            return Ret::err(Status::INVALID_PARAM);
        }
        if self.broken {
            return Ret::err(Status::FAILED);
        }
        match self.call_inner(id, args) {
            Ok(r) => r,
            Err(s) => {
                self.broken = true;
                Ret::err(s)
            }
        }
    }

    fn call_inner(&mut self, id: CallId, args: [u64; 6]) -> Result<Ret, Status> {
        let h = self.header;
        let mask = self.requests.len().wrapping_sub(1);
        let prod = h.req_prod.load(Ordering::Relaxed);
        let cons = h.cmp_cons.load(Ordering::Relaxed);
        if prod != cons {
            return Err(Status::FAILED);
        }
        let slot = self
            .requests
            .get(prod as usize & mask)
            .ok_or(Status::FAILED)?;
        slot.cookie.store(prod, Ordering::Relaxed);
        slot.call_id.store(id.0, Ordering::Relaxed);
        for (a, v) in slot.args.iter().zip(args) {
            a.store(v, Ordering::Relaxed);
        }
        h.req_prod.store(prod.wrapping_add(1), Ordering::Release);
        fence(Ordering::SeqCst);
        if h.host_polling.load(Ordering::Acquire) == 0 {
            self.bell.notify().map_err(|_| Status::FAILED)?;
        }
        let mut spins = 0u64;
        loop {
            let avail = h.cmp_prod.load(Ordering::Acquire).wrapping_sub(cons);
            match avail {
                0 => {
                    spins += 1;
                    if spins > self.spin_limit {
                        return Err(Status::TIMED_OUT);
                    }
                    self.bell.idle();
                }
                1 => break,
                _ => return Err(Status::FAILED),
            }
        }
        let c = self
            .completions
            .get(cons as usize & mask)
            .ok_or(Status::FAILED)?;
        if c.cookie.load(Ordering::Relaxed) != prod {
            return Err(Status::FAILED);
        }
        let ret = Ret {
            status: Status::from_reg(c.status.load(Ordering::Relaxed) as u64),
            value: c.value.load(Ordering::Relaxed),
        };
        h.cmp_cons.store(cons.wrapping_add(1), Ordering::Release);
        Ok(ret)
    }
}

impl From<XenError> for Status {
    fn from(e: XenError) -> Self {
        match e {
            XenError::TimedOut => Status::TIMED_OUT,
            XenError::TooLong => Status::INVALID_PARAM,
            _ => Status::FAILED,
        }
    }
}

#[cfg(test)]
// In tests a panic is the failure report.
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    extern crate std;
    use super::*;
    use core::cell::Cell;
    use pvabi::call;

    /// A host stand-in: on each idle poll, runs every posted request (GET_ABI_VERSION answers
    /// 0x10000, anything else NOT_SUPPORTED) unless told to stay silent.
    struct Host<'a> {
        ring: &'a RingShared<4>,
        rung: Cell<u32>,
        silent: bool,
        bad_cookie: bool,
    }
    impl Doorbell for &Host<'_> {
        fn notify(&self) -> Result<(), XenError> {
            self.rung.set(self.rung.get() + 1);
            Ok(())
        }
        fn idle(&self) {
            if self.silent {
                return;
            }
            let h = &self.ring.header;
            let prod = h.req_prod.load(Ordering::Acquire);
            let mut rc = h.req_cons.load(Ordering::Relaxed);
            while rc != prod {
                let r = &self.ring.requests[rc as usize % 4];
                let c = &self.ring.completions[h.cmp_prod.load(Ordering::Relaxed) as usize % 4];
                let cookie = r.cookie.load(Ordering::Relaxed);
                c.cookie.store(
                    if self.bad_cookie { cookie ^ 1 } else { cookie },
                    Ordering::Relaxed,
                );
                if r.call_id.load(Ordering::Relaxed) == call::BASE_GET_ABI_VERSION.0 {
                    c.status.store(0, Ordering::Relaxed);
                    c.value.store(0x1_0000, Ordering::Relaxed);
                } else {
                    c.status
                        .store(i64::from(Status::NOT_SUPPORTED.0), Ordering::Relaxed);
                }
                rc = rc.wrapping_add(1);
                h.req_cons.store(rc, Ordering::Release);
                h.cmp_prod.fetch_add(1, Ordering::Release);
            }
        }
    }

    #[test]
    fn calls_complete_and_failures_are_sticky() {
        let ring = std::boxed::Box::new(RingShared::<4>::new());
        init_header(&ring);
        assert_eq!(ring.header.magic.load(Ordering::Relaxed), RingHeader::MAGIC);
        assert_eq!(ring.header.order.load(Ordering::Relaxed), 2);
        let host = Host {
            ring: &ring,
            rung: Cell::new(0),
            silent: false,
            bad_cookie: false,
        };
        let mut r = XenRing::new(&ring, &host, 1000);
        for _ in 0..10 {
            let ret = r.call(call::BASE_GET_ABI_VERSION, [0; 6]);
            assert_eq!((ret.status, ret.value), (Status::SUCCESS, 0x1_0000));
        }
        assert_eq!(host.rung.get(), 10);
        assert_eq!(
            r.call(call::BASE_PROBE_SERVICE, [0; 6]).status,
            Status::NOT_SUPPORTED
        );
        assert_eq!(
            r.call(call::POWER_SHUTDOWN, [0; 6]).status,
            Status::INVALID_PARAM
        );
        // Host polling: no notification.
        ring.header.host_polling.store(1, Ordering::Relaxed);
        let before = host.rung.get();
        assert_eq!(
            r.call(call::BASE_GET_ABI_VERSION, [0; 6]).status,
            Status::SUCCESS
        );
        assert_eq!(host.rung.get(), before);

        let silent = Host {
            ring: &ring,
            rung: Cell::new(0),
            silent: true,
            bad_cookie: false,
        };
        let mut r = XenRing::new(&ring, &silent, 10);
        assert_eq!(
            r.call(call::BASE_GET_ABI_VERSION, [0; 6]).status,
            Status::TIMED_OUT
        );
        assert_eq!(
            r.call(call::BASE_GET_ABI_VERSION, [0; 6]).status,
            Status::FAILED
        );

        let ring = std::boxed::Box::new(RingShared::<4>::new());
        init_header(&ring);
        let liar = Host {
            ring: &ring,
            rung: Cell::new(0),
            silent: false,
            bad_cookie: true,
        };
        let mut r = XenRing::new(&ring, &liar, 10);
        assert_eq!(
            r.call(call::BASE_GET_ABI_VERSION, [0; 6]).status,
            Status::FAILED
        );
    }
}
