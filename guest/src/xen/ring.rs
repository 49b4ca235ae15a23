//! The shared-ring gate on the Xen transport: the ring of [`pvabi::ring`] in the granted window,
//! with an event channel as the doorbell (`XEN-6`) instead of an I/O port.
//!
//! Same protocol as [`crate::ring::RingGate`]: requests are written, `req_prod` is advanced
//! (release), the doorbell is notified unless the host set `host_polling`, and the completions
//! are awaited by polling and matched by cookie. [`XenRing::call_batch`] posts many calls with
//! one notification. One caller at a time (`&mut self`).

use super::hypercall::Doorbell;
use super::XenError;
use crate::ring::bypasses_ring;
use crate::shared::{RingCompletionShared, RingHeaderShared, RingRequestShared, RingShared};
use core::sync::atomic::{fence, Ordering};
use pvabi::call::CallId;
use pvabi::ring::RingHeader;
use pvabi::{Regs, Ret, Status};

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

    /// Number of slots.
    pub fn slots(&self) -> usize {
        self.requests.len()
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
        let mut out = [Ret::err(Status::FAILED)];
        match self.call_batch(&[Regs::new(id, args)], &mut out) {
            Ok(()) => {
                let [r] = out;
                r
            }
            Err(s) => Ret::err(s),
        }
    }

    /// Posts `calls` in chunks of at most [`XenRing::slots`], notifying once per chunk, and
    /// stores each call's (status, value) in `out` at the same index. Completions may arrive
    /// in any order; they are matched by cookie.
    ///
    /// # Errors
    ///
    /// `INVALID_PARAM` if `out` is shorter than `calls`, a call id has bits above 31 or must
    /// bypass the ring; `TIMED_OUT` after the spin limit; `FAILED` if the ring is unusable
    /// after an earlier failure, the host's completions are inconsistent (too many, unknown or
    /// repeated cookies) or the notification failed. After `TIMED_OUT` or `FAILED` the ring
    /// stays unusable.
    pub fn call_batch(&mut self, calls: &[Regs], out: &mut [Ret]) -> Result<(), Status> {
        if out.len() < calls.len()
            || calls
                .iter()
                .any(|r| r.rax >> 32 != 0 || bypasses_ring(CallId(r.rax as u32)))
        {
            return Err(Status::INVALID_PARAM);
        }
        if self.broken {
            return Err(Status::FAILED);
        }
        let n = self.slots().max(1);
        for (chunk, out_chunk) in calls.chunks(n).zip(out.chunks_mut(n)) {
            if let Err(s) = self.run_chunk(chunk, out_chunk) {
                self.broken = true;
                return Err(s);
            }
        }
        Ok(())
    }

    fn run_chunk(&mut self, calls: &[Regs], out: &mut [Ret]) -> Result<(), Status> {
        let h = self.header;
        let mask = self.requests.len().wrapping_sub(1);
        let prod = h.req_prod.load(Ordering::Relaxed);
        let cons = h.cmp_cons.load(Ordering::Relaxed);
        if prod != cons {
            return Err(Status::FAILED);
        }
        let k = calls.len() as u32;
        for (i, r) in calls.iter().enumerate() {
            let seq = prod.wrapping_add(i as u32);
            let slot = self
                .requests
                .get(seq as usize & mask)
                .ok_or(Status::FAILED)?;
            slot.cookie.store(seq, Ordering::Relaxed);
            slot.call_id.store(r.rax as u32, Ordering::Relaxed);
            for (a, v) in slot.args.iter().zip(r.args) {
                a.store(v, Ordering::Relaxed);
            }
        }
        h.req_prod.store(prod.wrapping_add(k), Ordering::Release);
        // Order the producer store before the `host_polling` load (a store-load pair).
        fence(Ordering::SeqCst);
        if h.host_polling.load(Ordering::Acquire) == 0 {
            self.bell.notify().map_err(|_| Status::FAILED)?;
        }
        // At most 256 slots (RING-1): one bit per call of the chunk.
        let mut seen = [0u64; 4];
        let mut done = 0u32;
        let mut spins = 0u64;
        while done < k {
            let avail = h.cmp_prod.load(Ordering::Acquire).wrapping_sub(cons);
            if avail > k {
                return Err(Status::FAILED);
            }
            if avail <= done {
                spins += 1;
                if spins > self.spin_limit {
                    return Err(Status::TIMED_OUT);
                }
                self.bell.idle();
                continue;
            }
            while done < avail {
                let c = self
                    .completions
                    .get(cons.wrapping_add(done) as usize & mask)
                    .ok_or(Status::FAILED)?;
                let idx = c.cookie.load(Ordering::Relaxed).wrapping_sub(prod) as usize;
                if idx >= k as usize {
                    return Err(Status::FAILED);
                }
                let word = seen.get_mut(idx / 64).ok_or(Status::FAILED)?;
                if *word & (1 << (idx % 64)) != 0 {
                    return Err(Status::FAILED);
                }
                *word |= 1 << (idx % 64);
                let o = out.get_mut(idx).ok_or(Status::FAILED)?;
                *o = Ret {
                    status: Status::from_reg(c.status.load(Ordering::Relaxed) as u64),
                    value: c.value.load(Ordering::Relaxed),
                };
                done += 1;
            }
        }
        h.cmp_cons.store(cons.wrapping_add(k), Ordering::Release);
        Ok(())
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

    /// Completes all posted requests at once, in reverse order, with value `2 * arg0`;
    /// `dup` repeats the first cookie instead.
    struct Reverse<'a> {
        ring: &'a RingShared<4>,
        rung: Cell<u32>,
        dup: bool,
    }
    impl Doorbell for &Reverse<'_> {
        fn notify(&self) -> Result<(), XenError> {
            self.rung.set(self.rung.get() + 1);
            Ok(())
        }
        fn idle(&self) {
            let h = &self.ring.header;
            let prod = h.req_prod.load(Ordering::Acquire);
            let first = h.req_cons.load(Ordering::Relaxed);
            let n = prod.wrapping_sub(first);
            let mut cp = h.cmp_prod.load(Ordering::Relaxed);
            for j in (0..n).rev() {
                let r = &self.ring.requests[first.wrapping_add(j) as usize % 4];
                let c = &self.ring.completions[cp as usize % 4];
                let cookie = if self.dup {
                    first
                } else {
                    r.cookie.load(Ordering::Relaxed)
                };
                c.cookie.store(cookie, Ordering::Relaxed);
                c.status.store(0, Ordering::Relaxed);
                c.value
                    .store(2 * r.args[0].load(Ordering::Relaxed), Ordering::Relaxed);
                cp = cp.wrapping_add(1);
            }
            h.req_cons.store(prod, Ordering::Release);
            h.cmp_prod.store(cp, Ordering::Release);
        }
    }

    #[test]
    fn batches_are_chunked_and_matched_by_cookie() {
        let ring = std::boxed::Box::new(RingShared::<4>::new());
        init_header(&ring);
        let host = Reverse {
            ring: &ring,
            rung: Cell::new(0),
            dup: false,
        };
        let mut r = XenRing::new(&ring, &host, 1000);
        let calls: std::vec::Vec<Regs> = (0..10u64)
            .map(|i| Regs::new(call::BASE_GET_ABI_VERSION, [i, 0, 0, 0, 0, 0]))
            .collect();
        let mut out = [Ret::err(Status::FAILED); 10];
        r.call_batch(&calls, &mut out).unwrap();
        for (i, o) in out.iter().enumerate() {
            assert_eq!((o.status, o.value), (Status::SUCCESS, 2 * i as u64));
        }
        assert_eq!(host.rung.get(), 3, "one notification per chunk of 4");
        let mut short = [Ret::err(Status::FAILED); 2];
        assert_eq!(
            r.call_batch(&calls[..3], &mut short),
            Err(Status::INVALID_PARAM)
        );
        let bypass = [Regs::new(call::VCPU_BLOCK, [0; 6])];
        assert_eq!(r.call_batch(&bypass, &mut out), Err(Status::INVALID_PARAM));

        let ring = std::boxed::Box::new(RingShared::<4>::new());
        init_header(&ring);
        let dup = Reverse {
            ring: &ring,
            rung: Cell::new(0),
            dup: true,
        };
        let mut r = XenRing::new(&ring, &dup, 1000);
        assert_eq!(r.call_batch(&calls[..2], &mut out), Err(Status::FAILED));
        assert_eq!(
            r.call(call::BASE_GET_ABI_VERSION, [0; 6]).status,
            Status::FAILED
        );
    }
}
