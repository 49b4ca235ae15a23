//! EVENT service (spec chapter 8, `EVT-*`; layouts in [`pvabi::event`]): event channels with
//! pending and mask bitmaps in a guest page, per-vCPU binding, and the upcall mask.
//!
//! The guest declares an [`EventPageShared`] `static` (page-aligned, atomics) and registers it
//! with [`Pvabi::event_register_page`], which returns the [`EventChannels`] view used to scan
//! and acknowledge pending events. Upcall delivery (vector or callback) is set up in
//! [`crate::upcall`].
//!
//! ## Scanning (spec `EVT-7`, `EVT-11`)
//! [`EventChannels::scan`] clears the vCPU's `upcall_pending`, takes its `selector` (atomic
//! swap with 0), and for each selected word takes the pending, unmasked bits, clearing each
//! with an atomic `fetch_and` before calling the handler, so an event is handled at most once
//! per send even when several vCPUs scan. Ports bound to other vCPUs that share a selected
//! word are handled too: binding decides which vCPU is notified, not which may consume.
//!
//! `upcall_mask` is the guest's "interrupts off" for upcalls: [`EventChannels::mask_upcalls`]
//! and [`EventChannels::unmask_upcalls`] (the latter says whether an upcall became pending
//! meanwhile, so the caller can scan).

use crate::shared::{EventPageShared, VcpuEventShared};
use crate::{base::to_u32, Pvabi};
use core::sync::atomic::Ordering;
use pvabi::call;
use pvabi::event::{UpcallMode, MIN_UPCALL_VECTOR, NUM_PORTS};
use pvabi::Status;

/// An event-channel port (`1..NUM_PORTS`; port 0 is never allocated, spec `EVT-2`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(transparent)]
pub struct Port(pub u32);

impl Port {
    /// The port as a call argument.
    pub const fn arg(self) -> u64 {
        self.0 as u64
    }

    /// Whether the port number is in the valid range `1..NUM_PORTS`.
    pub const fn is_valid(self) -> bool {
        self.0 != 0 && self.0 < NUM_PORTS
    }

    /// Word index and bit mask of the port in the bitmaps.
    pub const fn word_bit(self) -> (usize, u64) {
        ((self.0 / 64) as usize, 1u64 << (self.0 % 64))
    }
}

/// The registered event page: scanning, acknowledging, the upcall mask.
#[derive(Clone, Copy, Debug)]
pub struct EventChannels {
    page: &'static EventPageShared,
}

impl EventChannels {
    /// A view of `page` without registering it (e.g. in an upcall handler, or in tests).
    pub const fn from_page(page: &'static EventPageShared) -> Self {
        Self { page }
    }

    /// The page.
    pub fn page(&self) -> &'static EventPageShared {
        self.page
    }

    fn vcpu(&self, vcpu: u32) -> Option<&'static VcpuEventShared> {
        self.page.vcpu.get(vcpu as usize)
    }

    /// Whether `port` is pending.
    pub fn is_pending(&self, port: Port) -> bool {
        let (w, b) = port.word_bit();
        self.page
            .pending
            .get(w)
            .is_some_and(|p| p.load(Ordering::Acquire) & b != 0)
    }

    /// Whether `port` is masked in the page.
    pub fn is_masked(&self, port: Port) -> bool {
        let (w, b) = port.word_bit();
        self.page
            .mask
            .get(w)
            .is_some_and(|p| p.load(Ordering::Acquire) & b != 0)
    }

    /// Clears `port`'s pending bit; returns whether it was set (acknowledge, spec `EVT-7`).
    pub fn clear_pending(&self, port: Port) -> bool {
        let (w, b) = port.word_bit();
        self.page
            .pending
            .get(w)
            .is_some_and(|p| p.fetch_and(!b, Ordering::AcqRel) & b != 0)
    }

    /// Handles the pending, unmasked ports of word `w`; returns how many.
    fn scan_word(&self, w: usize, handler: &mut dyn FnMut(Port)) -> usize {
        let (Some(pending), Some(mask)) = (self.page.pending.get(w), self.page.mask.get(w)) else {
            return 0;
        };
        let mut n = 0;
        let mut bits = pending.load(Ordering::Acquire) & !mask.load(Ordering::Acquire);
        while bits != 0 {
            let bit = bits.trailing_zeros();
            let b = 1u64 << bit;
            bits &= !b;
            let port = Port((w as u32) * 64 + bit);
            // Clear first, then handle: a send after the clear sets the bit again and is
            // seen by the next scan. Port 0 is never allocated; a host setting it is ignored.
            if pending.fetch_and(!b, Ordering::AcqRel) & b != 0 && port.0 != 0 {
                handler(port);
                n += 1;
            }
        }
        n
    }

    /// Scans the events signalled to vCPU `vcpu` (its selector) and calls `handler` once per
    /// pending, unmasked port, clearing each pending bit atomically first. Returns the number
    /// handled; an out-of-range `vcpu` handles nothing.
    pub fn scan(&self, vcpu: u32, mut handler: impl FnMut(Port)) -> usize {
        let Some(v) = self.vcpu(vcpu) else { return 0 };
        let mut n = 0;
        // Repeat while the host raises more during the scan (bounded: each round consumes).
        for _ in 0..4 {
            v.upcall_pending.store(0, Ordering::Release);
            let mut sel = v.selector.swap(0, Ordering::AcqRel);
            if sel == 0 {
                break;
            }
            while sel != 0 {
                let w = sel.trailing_zeros() as usize;
                sel &= !(1u64 << w);
                n += self.scan_word(w, &mut handler);
            }
        }
        n
    }

    /// Scans every word of the pending bitmap regardless of selectors (for guests that poll
    /// instead of taking upcalls). Returns the number handled.
    pub fn scan_all(&self, mut handler: impl FnMut(Port)) -> usize {
        (0..self.page.pending.len())
            .map(|w| self.scan_word(w, &mut handler))
            .sum()
    }

    /// Sets vCPU `vcpu`'s `upcall_mask` ("interrupts off"); returns whether it was already
    /// set, or `None` for an out-of-range vCPU.
    pub fn mask_upcalls(&self, vcpu: u32) -> Option<bool> {
        self.vcpu(vcpu)
            .map(|v| v.upcall_mask.swap(1, Ordering::AcqRel) != 0)
    }

    /// Clears vCPU `vcpu`'s `upcall_mask`; returns whether an upcall is pending (the caller
    /// should then scan, as no upcall was delivered while masked), or `None` for an
    /// out-of-range vCPU.
    pub fn unmask_upcalls(&self, vcpu: u32) -> Option<bool> {
        self.vcpu(vcpu).map(|v| {
            v.upcall_mask.store(0, Ordering::Release);
            core::sync::atomic::fence(Ordering::SeqCst);
            v.upcall_pending.load(Ordering::Acquire) != 0
        })
    }

    /// Whether vCPU `vcpu` has an upcall pending.
    pub fn upcall_pending(&self, vcpu: u32) -> bool {
        self.vcpu(vcpu)
            .is_some_and(|v| v.upcall_pending.load(Ordering::Acquire) != 0)
    }

    /// The frame the latest callback upcall saved for `vcpu`.
    pub fn frame(&self, vcpu: u32) -> Option<pvabi::event::UpcallFrame> {
        self.vcpu(vcpu).map(VcpuEventShared::frame)
    }
}

fn port_arg(port: Port) -> Result<u64, Status> {
    if port.is_valid() {
        Ok(port.arg())
    } else {
        Err(Status::INVALID_PARAM)
    }
}

impl Pvabi {
    /// EVENT.REGISTER_PAGE (`EVT-1`): zeroes the guest's event page (as `EVT-1` requires of
    /// the guest) and registers it.
    ///
    /// # Errors
    ///
    /// `INVALID_ADDRESS` if the page does not translate (not sent); the host's status.
    pub fn event_register_page(
        &self,
        page: &'static EventPageShared,
    ) -> Result<EventChannels, Status> {
        let gpa = self.gpa_ref(page)?;
        page.clear();
        self.call1(call::EVENT_REGISTER_PAGE, gpa)?;
        Ok(EventChannels::from_page(page))
    }

    /// EVENT.ALLOC (`EVT-3`): a new port.
    ///
    /// # Errors
    ///
    /// The host's status; `FAILED` if the host returns a port outside `1..NUM_PORTS`.
    pub fn event_alloc(&self) -> Result<Port, Status> {
        let p = Port(self.call0(call::EVENT_ALLOC).and_then(to_u32)?);
        if p.is_valid() {
            Ok(p)
        } else {
            Err(Status::FAILED)
        }
    }

    /// EVENT.BIND_VCPU (`EVT-4`): deliver `port` to `vcpu`.
    ///
    /// # Errors
    ///
    /// `INVALID_PARAM` for a port outside `1..NUM_PORTS` (not sent); the host's status.
    pub fn event_bind_vcpu(&self, port: Port, vcpu: u32) -> Result<(), Status> {
        self.call2(call::EVENT_BIND_VCPU, port_arg(port)?, u64::from(vcpu))
            .map(drop)
    }

    /// EVENT.CLOSE (`EVT-5`).
    ///
    /// # Errors
    ///
    /// `INVALID_PARAM` for a port outside `1..NUM_PORTS` (not sent); the host's status.
    pub fn event_close(&self, port: Port) -> Result<(), Status> {
        self.call1(call::EVENT_CLOSE, port_arg(port)?).map(drop)
    }

    /// EVENT.SEND (`EVT-6`).
    ///
    /// # Errors
    ///
    /// `INVALID_PARAM` for a port outside `1..NUM_PORTS` (not sent); the host's status.
    pub fn event_send(&self, port: Port) -> Result<(), Status> {
        self.call1(call::EVENT_SEND, port_arg(port)?).map(drop)
    }

    /// EVENT.MASK (`EVT-8`).
    ///
    /// # Errors
    ///
    /// `INVALID_PARAM` for a port outside `1..NUM_PORTS` (not sent); the host's status.
    pub fn event_mask(&self, port: Port) -> Result<(), Status> {
        self.call1(call::EVENT_MASK, port_arg(port)?).map(drop)
    }

    /// EVENT.UNMASK (`EVT-9`): a pending port is delivered on unmask.
    ///
    /// # Errors
    ///
    /// `INVALID_PARAM` for a port outside `1..NUM_PORTS` (not sent); the host's status.
    pub fn event_unmask(&self, port: Port) -> Result<(), Status> {
        self.call1(call::EVENT_UNMASK, port_arg(port)?).map(drop)
    }

    /// EVENT.SET_UPCALL(NONE) (`EVT-10`): no upcalls for the calling vCPU; it polls.
    ///
    /// # Errors
    ///
    /// The host's status.
    pub fn set_upcall_none(&self) -> Result<(), Status> {
        self.call2(call::EVENT_SET_UPCALL, u64::from(UpcallMode::NONE.0), 0)
            .map(drop)
    }

    /// EVENT.SET_UPCALL(VECTOR, vector) (`EVT-10`) for the calling vCPU (ring-0 guests). The
    /// guest's IDT entry for `vector` should point at
    /// [`crate::upcall::vector_entry_address`] (or its own stub calling
    /// [`crate::upcall::dispatch_pending`]).
    ///
    /// # Errors
    ///
    /// `INVALID_PARAM` for a vector below 32 (not sent); the host's status.
    pub fn set_upcall_vector(&self, vector: u8) -> Result<(), Status> {
        if u64::from(vector) < MIN_UPCALL_VECTOR {
            return Err(Status::INVALID_PARAM);
        }
        self.call2(
            call::EVENT_SET_UPCALL,
            u64::from(UpcallMode::VECTOR.0),
            u64::from(vector),
        )
        .map(drop)
    }

    /// EVENT.SET_UPCALL(CALLBACK, entry) (`EVT-10`, `EVT-12`) for the calling vCPU, with the
    /// shim's callback entry `pvabi_upcall_callback_entry` as the target (for the in-process
    /// gate: [`crate::upcall::in_process_callback`]). Install a handler with
    /// [`crate::upcall::install`] first.
    ///
    /// # Errors
    ///
    /// `BAD_STATE` if no handler is installed (not sent); the host's status.
    pub fn set_upcall_callback(&self) -> Result<(), Status> {
        if !crate::upcall::is_installed() {
            return Err(Status::BAD_STATE);
        }
        let target = if self.gate().register_gate().as_in_process().is_some() {
            crate::upcall::in_process_callback as *const () as usize
        } else {
            crate::upcall::callback_entry_address()
        };
        self.call2(
            call::EVENT_SET_UPCALL,
            u64::from(UpcallMode::CALLBACK.0),
            target as u64,
        )
        .map(drop)
    }
}
