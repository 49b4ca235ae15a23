//! Upcalls: how the host tells a vCPU that events are pending (spec `EVT-10`..`EVT-14`).
//!
//! 1. Declare an [`crate::shared::EventPageShared`] `static`, register it
//!    ([`Pvabi::event_register_page`]), and [`install`] a [`PortHandler`]: the shim keeps the
//!    gate, the page and the handler in a few atomics, the only global state it has, because
//!    the entry code has nothing else to go on.
//! 2. Choose the mode per vCPU:
//!    * **Vector** (ring-0 guests): point an IDT interrupt gate at [`vector_entry_address`]
//!      (`pvabi_upcall_vector_entry`) and call [`Pvabi::set_upcall_vector`]. The entry saves
//!      registers and SSE state, asks BASE.GET_VCPU_ID which vCPU it runs on, scans and
//!      dispatches, and `iretq`s. A kernel with its own interrupt stubs calls
//!      [`dispatch_pending`] from them instead.
//!    * **Callback** (fully paravirtual ring-3 guests): call [`Pvabi::set_upcall_callback`];
//!      the host enters `pvabi_upcall_callback_entry` with the frame GPA and vCPU id, the shim
//!      scans and dispatches, then VCPU.UPCALL_RETURN resumes the interrupted context.
//!    * **None**: poll with [`dispatch_pending`] (e.g. after VCPU.BLOCK). This is also how an
//!      in-process guest (the mock) handles events, as no entry can interrupt a host thread.
//!
//! VCPU.UPCALL_RETURN has no safe wrapper: resuming another context from Rust code would
//! abandon the caller's stack frames (and with them pinned values); the callback entry issues
//! it only after the Rust dispatcher has returned. Guests with their own callback code use
//! [`Pvabi::call_unchecked`].
//!
//! The handler runs with upcalls masked for that vCPU (callback mode: the host set
//! `upcall_mask`; vector mode: IF is clear in an interrupt gate). It must not block.

use crate::event::{EventChannels, Port};
use crate::gate::upcall_entry;
use crate::shared::EventPageShared;
use crate::Pvabi;
use pvabi::event::UpcallMode;
use pvabi::Regs;

pub use crate::gate::upcall_entry::{callback_entry_address, vector_entry_address};

/// Where an upcall came from, given to the [`PortHandler`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpcallInfo {
    /// The vCPU the upcall is for.
    pub vcpu: u32,
    /// The delivery mode ([`UpcallMode::NONE`] for a polled dispatch).
    pub mode: UpcallMode,
    /// The GPA of the saved frame, in callback mode.
    pub frame_gpa: Option<u64>,
}

/// The guest's per-port handler, called once per pending, unmasked port found by a scan.
pub type PortHandler = fn(port: Port, info: &UpcallInfo);

/// Publishes `pv`'s register gate, the event page and `handler` for the upcall entries.
/// Call it once, before enabling upcalls on any vCPU; calling it again replaces them.
pub fn install(pv: &Pvabi, events: &EventChannels, handler: PortHandler) {
    upcall_entry::install(
        pv.gate().register_gate(),
        events.page(),
        handler,
        pv.info().vcpu_count,
    );
}

/// Removes the handler; later upcalls are acknowledged (pending bits cleared) but not
/// dispatched, and callback upcalls still return.
pub fn uninstall() {
    upcall_entry::uninstall();
}

/// Whether a handler is installed.
pub fn is_installed() -> bool {
    upcall_entry::installed().is_some_and(|i| i.handler.is_some())
}

/// Scans vCPU `vcpu`'s pending events and calls the installed handler per port; returns the
/// number handled (0 when [`install`] never ran; without a handler, events are only
/// acknowledged).
pub fn dispatch_pending(vcpu: u32) -> usize {
    dispatch_with(&UpcallInfo {
        vcpu,
        mode: UpcallMode::NONE,
        frame_gpa: None,
    })
}

/// The installed event page, if any.
pub fn installed_events() -> Option<&'static EventPageShared> {
    upcall_entry::installed().map(|i| i.events)
}

pub(crate) fn dispatch_with(info: &UpcallInfo) -> usize {
    let Some(inst) = upcall_entry::installed() else {
        return 0;
    };
    if info.vcpu >= inst.vcpu_count {
        return 0;
    }
    let ev = EventChannels::from_page(inst.events);
    match inst.handler {
        Some(h) => ev.scan(info.vcpu, |port| h(port, info)),
        // Acknowledge without dispatching, so the host does not upcall again at once.
        None => ev.scan(info.vcpu, |_| {}),
    }
}

/// Body of the vector entry: find the current vCPU, then scan and dispatch.
pub(crate) fn dispatch_from_vector() {
    let Some(inst) = upcall_entry::installed() else {
        return;
    };
    let vcpu = inst
        .gate
        .call(&Regs::new(pvabi::call::BASE_GET_VCPU_ID, [0; 6]))
        .into_result()
        .ok()
        .and_then(|v| u32::try_from(v).ok());
    if let Some(vcpu) = vcpu {
        dispatch_with(&UpcallInfo {
            vcpu,
            mode: UpcallMode::VECTOR,
            frame_gpa: None,
        });
    }
}

/// The callback target for in-process guests: a model host (the mock) calls it as
/// `f(frame_gpa, vcpu)` at a call boundary on the vCPU's thread. It scans and dispatches like
/// the callback entry and returns (the host ends the callback). Register it with the mock's
/// function registry; [`Pvabi::set_upcall_callback`] names it when the gate is in-process.
pub extern "C" fn in_process_callback(frame_gpa: u64, vcpu: u64) {
    dispatch_with(&UpcallInfo {
        vcpu: u32::try_from(vcpu).unwrap_or(u32::MAX),
        mode: UpcallMode::CALLBACK,
        frame_gpa: Some(frame_gpa),
    });
}
