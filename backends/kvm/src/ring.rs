//! The VMM side of the shared-ring gate (spec `RING-*`): a poller thread woken by the ring's
//! doorbell, which then polls the ring for a bounded time.
//!
//! The doorbell port ([`crate::RING_DOORBELL_PORT`]) is an ioeventfd where KVM offers it: the
//! guest's `out` is completed inside the kernel, which signals an eventfd, and no exit reaches
//! user space. Where the ioeventfd cannot be registered the vCPU thread sees the exit and
//! signals the same eventfd itself (after serving the ring once, as before).
//!
//! Woken, the poller sets the ring's `host_polling` word (spec `RING-4`), so the guest posts
//! further requests without ringing, and serves the ring (through
//! [`pvabi_host::Vm::process_ring`], which runs each call exactly like the register gate and
//! writes its completion) until no request has arrived for the configured poll period. Then
//! it clears `host_polling`, issues a full fence and serves the ring once more: a request the
//! guest published after its own fence, while it still saw `host_polling` set, is served by
//! that last look (the guest orders its `req_prod` store before its `host_polling` load, the
//! poller orders its `host_polling` store before its `req_prod` load, so at least one of the
//! two sees the other's write). With a poll period of zero the poller serves what each
//! doorbell announces and never sets `host_polling`.
//!
//! The poller writes `host_polling` only while the ring is registered: the vCPU thread
//! records a successful BASE.RING_REGISTER and removes the record on BASE.RING_UNREGISTER
//! before the guest sees the call return, under the lock the poller holds while writing.

use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pvabi::ring::RingHeader;
use pvabi_host::Vm;
use vmm_sys_util::eventfd::EventFd;

use crate::vmm::Core;

/// [`RingPoller::ring_gpa`] without a ring.
const NO_RING: u64 = u64::MAX;

/// How many empty polls pass between two looks at the clock.
const CLOCK_EVERY: u32 = 64;

/// State shared between the vCPU threads (which record ring registration and may ring the
/// doorbell by hand) and the poller thread.
#[derive(Debug)]
pub(crate) struct RingPoller {
    /// Guest-physical address of the registered ring's header, if one is registered.
    ring: Mutex<Option<u64>>,
    /// The same address for lock-free reads ([`NO_RING`] for none): the poll loop only reads
    /// guest memory through it, which is harmless even for a ring just unregistered.
    ring_gpa: AtomicU64,
    /// The doorbell: the ioeventfd of the doorbell port, or signalled by a vCPU thread.
    doorbell: EventFd,
    /// Whether `doorbell` is registered with KVM as the port's ioeventfd.
    pub(crate) in_kernel: bool,
    /// How long to keep polling after the last request.
    period: Duration,
}

impl RingPoller {
    /// A poller with its doorbell eventfd; `register` tries to make it the port's ioeventfd
    /// (returns whether it succeeded).
    ///
    /// # Errors
    ///
    /// The error of `eventfd(2)`.
    pub(crate) fn new(
        period: Duration,
        register: impl FnOnce(&EventFd) -> bool,
    ) -> std::io::Result<Self> {
        let doorbell = EventFd::new(libc::EFD_CLOEXEC)?;
        let in_kernel = register(&doorbell);
        Ok(Self {
            ring: Mutex::new(None),
            ring_gpa: AtomicU64::new(NO_RING),
            doorbell,
            in_kernel,
            period,
        })
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Option<u64>> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a successful BASE.RING_REGISTER of the ring at `gpa`.
    pub(crate) fn registered(&self, gpa: u64) {
        let mut r = self.ring();
        *r = Some(gpa);
        self.ring_gpa.store(gpa, Ordering::SeqCst);
    }

    /// Records a successful BASE.RING_UNREGISTER; after this returns the poller does not
    /// write into the old ring any more.
    pub(crate) fn unregistered(&self) {
        let mut r = self.ring();
        *r = None;
        self.ring_gpa.store(NO_RING, Ordering::SeqCst);
    }

    /// Wakes the poller (a doorbell the vCPU thread saw, or the VM stopping).
    pub(crate) fn ring_doorbell(&self) {
        let _ = self.doorbell.write(1);
    }

    /// Writes `host_polling` of the registered ring (nothing without one).
    fn set_polling(&self, vm: &Vm, on: bool) {
        let ring = self.ring();
        if let Some(gpa) = *ring {
            // A ring that was registered is in RAM (the host checked its whole range); a
            // failed store could only mean it is not, and then there is nothing to tell.
            let _ = vm.ram().store_u32(
                gpa + RingHeader::HOST_POLLING as u64,
                u32::from(on),
                Ordering::SeqCst,
            );
        }
    }

    /// The registered ring's `req_prod`, if a ring is registered and the word readable.
    fn req_prod(&self, vm: &Vm) -> Option<u32> {
        let gpa = self.ring_gpa.load(Ordering::Acquire);
        if gpa == NO_RING {
            return None;
        }
        vm.ram()
            .load_u32(gpa + RingHeader::REQ_PROD as u64, Ordering::Acquire)
            .ok()
    }

    /// Serves the ring until no request came for the poll period.
    fn poll(&self, core: &Core, vm: &Vm) {
        if self.period.is_zero() {
            vm.process_ring();
            return;
        }
        self.set_polling(vm, true);
        fence(Ordering::SeqCst);
        let mut last = Instant::now();
        // Polls since the last work.
        let mut idle = 0u32;
        let mut seen = None;
        while !core.stopping() {
            // Serve the ring when `req_prod` moved, and every CLOCK_EVERY polls anyway (a
            // full completion ring or the one-ring's-worth limit may have held requests
            // back); otherwise a poll is one lock-free load that writes nothing the guest
            // reads.
            let prod = self.req_prod(vm);
            idle = idle.wrapping_add(1);
            if prod != seen || prod.is_none() || idle % CLOCK_EVERY == 0 {
                seen = prod;
                if vm.process_ring() > 0 {
                    idle = 0;
                    continue;
                }
            }
            if idle % CLOCK_EVERY == 0 {
                std::hint::spin_loop();
                let now = Instant::now();
                if idle == CLOCK_EVERY {
                    // The first clock look after work: the idle period starts here.
                    last = now;
                } else if now.duration_since(last) >= self.period {
                    break;
                }
            }
        }
        self.set_polling(vm, false);
        fence(Ordering::SeqCst);
        vm.process_ring();
    }
}

/// The poller thread: waits for the doorbell, polls, until the VM stops.
pub(crate) fn poller_thread(core: Arc<Core>, vm: Arc<Vm>, poller: Arc<RingPoller>) {
    loop {
        if core.stopping() {
            return;
        }
        // Blocks until the doorbell (or a stop, which signals it too) increments the counter.
        if poller.doorbell.read().is_err() {
            return;
        }
        if core.stopping() {
            return;
        }
        poller.poll(&core, &vm);
    }
}
