//! The shared-ring gate (spec chapter "Gates", `RING-*`; layouts in [`pvabi::ring`]).
//!
//! The guest registers a [`RingShared`] with BASE.RING_REGISTER; afterwards calls are posted
//! as requests in the ring, the doorbell port the host returned is written (unless the host
//! sets `host_polling`), and the shim waits for the completions. [`RingGate::call_batch`]
//! posts many calls with one doorbell, the point of the ring.
//!
//! ## Single producer
//! A ring has one producer at a time. The shim enforces it with a guest-private flag next to
//! the ring: a call made while another caller (another vCPU, or an interrupt handler on this
//! one) is using the same ring returns `Err(BUSY)` instead of corrupting the ring. Give each
//! vCPU its own ring if several post concurrently.
//!
//! ## The ring owner
//! There is one ring per guest, and its calls run on behalf of the vCPU that registered it
//! (spec "The shared-ring gate"): a call about "the calling vCPU" made through the ring acts
//! on the owner. Use the ring from its owner; other vCPUs keep a handle on the register gate
//! ([`Pvabi::gate`] of the handle discovery returned).
//!
//! ## Calls that bypass the ring
//! The calls a host must not run from a ring (`RING-6`) — POWER.SHUTDOWN, VCPU.STOP,
//! VCPU.UPCALL_RETURN, VCPU.BLOCK, MULTICALL.EXECUTE, BASE.RING_REGISTER and
//! BASE.RING_UNREGISTER — go through the register gate below the ring.
//! On the Xen transport (spec appendix B, [`crate::xen::connect`]) the ring is the only gate:
//! the register gate below it is [`RegisterGate::none`], so those calls fail with
//! INVALID_PARAM, and the doorbell is an event channel.
//!
//! ## Waiting
//! The shim spins (with `spin_loop` hints) until the host completes the requests, at most
//! `spin_limit` iterations. If the host never answers, the call returns `Err(TIMED_OUT)`
//! and the ring is left marked inconsistent (requests outstanding): later calls return
//! `Err(FAILED)` until it is unregistered. A host that reports more completions than
//! requests, or a cookie the shim did not post, also gets `Err(FAILED)`.

use crate::gate::RegisterGate;
use crate::shared::{RingCompletionShared, RingHeaderShared, RingRequestShared, RingShared};
use crate::xen::hypercall::{Doorbell, EventChannel};
use crate::{Gate, Pvabi};
use core::sync::atomic::{fence, AtomicBool, AtomicU32, Ordering};
use pvabi::call::{self, CallId};
use pvabi::ring::RingHeader;
use pvabi::{Regs, Ret, Status};

/// Default number of spin iterations before a ring wait gives up.
pub const DEFAULT_SPIN_LIMIT: u64 = 1 << 32;

/// A registered ring, used as a gate (cheap to copy; all copies share the ring).
#[derive(Clone, Copy, Debug)]
pub struct RingGate {
    base: RegisterGate,
    header: &'static RingHeaderShared,
    requests: &'static [RingRequestShared],
    completions: &'static [RingCompletionShared],
    busy: &'static AtomicBool,
    consumed: &'static AtomicU32,
    doorbell: u16,
    spin_limit: u64,
    /// Set on the Xen transport: the doorbell is this event channel (`XEN-6`) instead of an
    /// `out` to `doorbell`, and waits yield the vCPU.
    xen: Option<EventChannel>,
}

/// Writes the ring header of `RING-2` (magic, order, zeroed counters) into `ring` and resets
/// the guest-private consumption count, before the ring is registered (`BASE.RING_REGISTER`)
/// or published in a handshake (`XEN-2`).
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
    ring.consumed.store(0, Ordering::Relaxed);
    fence(Ordering::Release);
}

/// Whether a call goes through the register gate even when a ring is registered.
pub fn bypasses_ring(id: CallId) -> bool {
    matches!(
        id,
        call::VCPU_UPCALL_RETURN
            | call::VCPU_STOP
            | call::VCPU_BLOCK
            | call::POWER_SHUTDOWN
            | call::MULTICALL_EXECUTE
            | call::BASE_RING_REGISTER
            | call::BASE_RING_UNREGISTER
    )
}

impl RingGate {
    /// The register gate below the ring.
    pub fn base(&self) -> RegisterGate {
        self.base
    }

    /// The doorbell port the host returned (0 on the Xen transport, whose doorbell is
    /// [`RingGate::event_channel`]).
    pub fn doorbell_port(&self) -> u16 {
        self.doorbell
    }

    /// The event channel that is the doorbell on the Xen transport (spec appendix B,
    /// `XEN-6`), or `None` for a ring registered with BASE.RING_REGISTER.
    pub fn event_channel(&self) -> Option<EventChannel> {
        self.xen
    }

    /// A gate on `ring`, which the Xen handshake registered (`XEN-5`), notifying `channel`.
    /// Its register gate is [`RegisterGate::none`], so the calls `RING-6` keeps off the ring
    /// fail with INVALID_PARAM. The ring's guest-private counters are reset; the header must
    /// have been written as `RING-2` says before the handshake published it.
    pub(crate) fn xen<const SLOTS: usize>(
        ring: &'static RingShared<SLOTS>,
        channel: EventChannel,
        spin_limit: u64,
    ) -> Self {
        ring.consumed.store(0, Ordering::Relaxed);
        Self {
            base: RegisterGate::none(),
            header: &ring.header,
            requests: &ring.requests,
            completions: &ring.completions,
            busy: &ring.busy,
            consumed: &ring.consumed,
            doorbell: 0,
            spin_limit,
            xen: Some(channel),
        }
    }

    /// Number of slots.
    pub fn slots(&self) -> usize {
        self.requests.len()
    }

    /// This gate with another spin limit.
    pub fn with_spin_limit(mut self, spin_limit: u64) -> Self {
        self.spin_limit = spin_limit;
        self
    }

    pub(crate) fn call(&self, regs: &Regs) -> Ret {
        let id = CallId(regs.rax as u32);
        if regs.rax >> 32 == 0 && bypasses_ring(id) {
            return self.base.call(regs);
        }
        let mut out = [Ret::err(Status::FAILED)];
        match self.call_batch(core::slice::from_ref(regs), &mut out) {
            Ok(()) => {
                let [r] = out;
                r
            }
            Err(s) => Ret::err(s),
        }
    }

    /// Posts `calls` (in chunks of at most [`RingGate::slots`]), ringing the doorbell once per
    /// chunk, and stores each call's (status, value) in `out` at the same index.
    ///
    /// # Errors
    ///
    /// `INVALID_PARAM` if `out` is shorter than `calls`, a call id has bits above 31 or is
    /// one that must bypass the ring; `BUSY` if another caller is using the ring;
    /// `NOT_SUPPORTED` if the host neither polls nor can be rung from here; `TIMED_OUT` after
    /// the spin limit; `FAILED` if the ring is inconsistent or the host's completions are.
    pub fn call_batch(&self, calls: &[Regs], out: &mut [Ret]) -> Result<(), Status> {
        if out.len() < calls.len() {
            return Err(Status::INVALID_PARAM);
        }
        if calls
            .iter()
            .any(|r| r.rax >> 32 != 0 || bypasses_ring(CallId(r.rax as u32)))
        {
            return Err(Status::INVALID_PARAM);
        }
        if self
            .busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(Status::BUSY);
        }
        let mut result = Ok(());
        let n = self.slots().max(1);
        for (chunk, out_chunk) in calls.chunks(n).zip(out.chunks_mut(n)) {
            result = self.run_chunk(chunk, out_chunk);
            if result.is_err() {
                break;
            }
        }
        self.busy.store(false, Ordering::Release);
        result
    }

    fn run_chunk(&self, calls: &[Regs], out: &mut [Ret]) -> Result<(), Status> {
        let mask = self.slots().wrapping_sub(1);
        let h = self.header;
        let prod = h.req_prod.load(Ordering::Relaxed);
        let cons = self.consumed.load(Ordering::Relaxed);
        // Every earlier call was completed and consumed before its caller returned, so the
        // two guest-owned counters agree unless an earlier wait gave up.
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
        // The completions of the previous chunk are consumed: tell the host with these
        // requests (RING-2; RING-9 only needs `cmp_cons` current when the host completes
        // the requests published after it).
        h.cmp_cons.store(cons, Ordering::Relaxed);
        h.req_prod.store(prod.wrapping_add(k), Ordering::Release);
        // Order the producer store before the `host_polling` load (a store-load pair).
        fence(Ordering::SeqCst);
        if h.host_polling.load(Ordering::Acquire) == 0 {
            if let Some(ch) = self.xen {
                // XEN-6. A failed notification leaves the requests posted, as a wait that
                // gives up does: later calls get FAILED.
                ch.notify().map_err(|_| Status::FAILED)?;
            } else {
                if !self.base.can_ring_doorbell() {
                    // Requests are posted but the host cannot be told: the ring stays
                    // inconsistent until the host picks them up or the ring is unregistered.
                    return Err(Status::NOT_SUPPORTED);
                }
                self.base.doorbell(self.doorbell);
            }
        }
        let mut done = 0u32;
        let mut spins = 0u64;
        while done < k {
            let avail = h.cmp_prod.load(Ordering::Acquire).wrapping_sub(cons);
            if avail > k {
                return Err(Status::FAILED);
            }
            if avail <= done {
                spins = spins.saturating_add(1);
                if spins >= self.spin_limit {
                    return Err(Status::TIMED_OUT);
                }
                match self.xen {
                    // The backend runs in another domain, maybe on this physical CPU.
                    Some(ch) => ch.idle(),
                    None => core::hint::spin_loop(),
                }
                continue;
            }
            while done < avail {
                let seq = cons.wrapping_add(done);
                let c = self
                    .completions
                    .get(seq as usize & mask)
                    .ok_or(Status::FAILED)?;
                let idx = c.cookie.load(Ordering::Relaxed).wrapping_sub(prod) as usize;
                let status = c.status.load(Ordering::Relaxed);
                let value = c.value.load(Ordering::Relaxed);
                let slot = out.get_mut(idx).filter(|_| idx < k as usize);
                match slot {
                    Some(o) => {
                        *o = Ret {
                            status: pvabi::Status::from_reg(status as u64),
                            value,
                        }
                    }
                    None => return Err(Status::FAILED),
                }
                done += 1;
            }
        }
        self.consumed.store(cons.wrapping_add(k), Ordering::Relaxed);
        Ok(())
    }
}

impl Pvabi {
    /// Registers `ring` with BASE.RING_REGISTER (`RING-1`) and returns a handle whose calls go
    /// through it. The ring's header is initialised (magic, order, counters zero) first.
    ///
    /// # Errors
    ///
    /// `INVALID_ADDRESS` if the ring does not translate; `INVALID_PARAM` if a ring is already
    /// the current gate; the host's status; `FAILED` if the doorbell port it returns is above
    /// 0xFFFF; `NOT_SUPPORTED` if the host does not poll and the doorbell cannot be rung from
    /// here (the in-process gate). In the last two cases the ring is unregistered again.
    pub fn register_ring<const SLOTS: usize>(
        &self,
        ring: &'static RingShared<SLOTS>,
    ) -> Result<Pvabi, Status> {
        let base = match self.gate() {
            Gate::Register(g) => g,
            Gate::Ring(_) => return Err(Status::INVALID_PARAM),
        };
        let order = RingShared::<SLOTS>::ORDER;
        let gpa = self
            .translate()
            .gpa_of(ring as *const _ as usize, RingShared::<SLOTS>::SHARED_BYTES)?;
        let h = &ring.header;
        init_header(ring);
        let port = base
            .call(&Regs::new(
                call::BASE_RING_REGISTER,
                [gpa, u64::from(order), 0, 0, 0, 0],
            ))
            .into_result()?;
        let unregister = || {
            let _ = base.call(&Regs::new(call::BASE_RING_UNREGISTER, [0; 6]));
        };
        let Ok(doorbell) = u16::try_from(port) else {
            unregister();
            return Err(Status::FAILED);
        };
        if !base.can_ring_doorbell() && h.host_polling.load(Ordering::Acquire) == 0 {
            unregister();
            return Err(Status::NOT_SUPPORTED);
        }
        let gate = RingGate {
            base,
            header: h,
            requests: &ring.requests,
            completions: &ring.completions,
            busy: &ring.busy,
            consumed: &ring.consumed,
            doorbell,
            spin_limit: DEFAULT_SPIN_LIMIT,
            xen: None,
        };
        Ok(self.with_gate(Gate::Ring(gate)))
    }

    /// BASE.RING_UNREGISTER (`RING-7`) and a handle back on the register gate.
    ///
    /// # Errors
    ///
    /// The host's status (the handle is not changed then).
    pub fn unregister_ring(&self) -> Result<Pvabi, Status> {
        let base = self.gate().register_gate();
        base.call(&Regs::new(call::BASE_RING_UNREGISTER, [0; 6]))
            .into_result()?;
        Ok(self.with_gate(Gate::Register(base)))
    }
}
