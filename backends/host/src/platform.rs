//! What a backend supplies: the [`Platform`] trait (what only the hypervisor can do), the
//! optional [`CallHook`] (tracing and fault injection), and [`Quirks`] (deliberate
//! non-conformance, for testing the conformance suite).

use pvabi::{Regs, Ret, Status};

use crate::vm::Outcome;

/// The pvclock parameters a backend's clock has at one instant (spec `CLK-1`..`CLK-3`).
///
/// The [`crate::Vm`] copies them into every registered clock page with the seqlock protocol.
/// A virtual clock (the mock) sets `tsc_to_system_mul = 0`, so `system_time` alone is the
/// time (the TSC term scales to zero).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockParams {
    /// TSC value at `system_time`.
    pub tsc_timestamp: u64,
    /// System time in ns at `tsc_timestamp`.
    pub system_time: u64,
    /// TSC-to-ns multiplier (32.32 fraction).
    pub tsc_to_system_mul: u32,
    /// TSC pre-shift.
    pub tsc_shift: i8,
    /// Page flags (`ClockPage::FLAG_TSC_STABLE`).
    pub flags: u8,
}

/// The hypervisor-specific part of a backend: running vCPUs, waking them, the host clock.
///
/// The [`crate::Vm`] calls these methods **without holding any of its locks**, so an
/// implementation may call back into the `Vm` (for example from a thread it wakes).
/// Methods must not block for long: they run on the calling vCPU's thread.
///
/// A backend usually needs the `Vm` inside its `Platform` (to run started vCPUs); since the
/// `Vm` is created from the `Platform`, keep a `Weak<Vm>` or a channel set after creation.
pub trait Platform: Send + Sync {
    /// Current system time in ns (monotonic; the same clock the clock pages describe).
    fn now_ns(&self) -> u64;

    /// Wall-clock time in ns since the UNIX epoch at system time 0 (spec `CLK-6`).
    fn wallclock_epoch_ns(&self) -> u64;

    /// The current pvclock parameters.
    fn clock_params(&self) -> ClockParams;

    /// Starts vCPU `vcpu` at `entry` with RSP = `stack`, RDI = `arg`, RSI = `vcpu`
    /// (spec `VCPU-7`). The vCPU is START_PENDING when this is called; the backend calls
    /// [`crate::Vm::vcpu_started`] when it begins running `entry`.
    ///
    /// # Errors
    ///
    /// A status for the guest (e.g. [`Status::FAILED`] when no thread could be created); the
    /// vCPU then goes back to STOPPED.
    fn start_vcpu(&self, vcpu: u32, entry: u64, stack: u64, arg: u64) -> Result<(), Status>;

    /// Something changed for `vcpu` that its thread must look at: an upcall may be pending
    /// ([`crate::Vm::take_upcall`]) or a VCPU.BLOCK ended ([`crate::Vm::finish_block`]).
    /// Must interrupt a running vCPU (e.g. an IPI/immediate exit) or wake a sleeping one.
    fn notify(&self, vcpu: u32);

    /// VCPU.YIELD from `vcpu`: give up the physical CPU briefly (may do nothing).
    fn yield_vcpu(&self, vcpu: u32);

    /// The earliest timer or block deadline may have changed to `deadline_ns` (system time).
    /// The backend must call [`crate::Vm::poll_timers`] at or after that time. A virtual clock
    /// calls `poll_timers` when it advances and may ignore this.
    fn deadline_changed(&self, deadline_ns: u64);

    /// HARNESS.CLOCK_ADVANCE: advance a virtual clock by `ns` (spec `HAR-8`).
    ///
    /// The `Vm` then refreshes clock pages and fires due timers itself.
    ///
    /// # Errors
    ///
    /// [`Status::NOT_SUPPORTED`] for a real clock.
    fn advance_clock(&self, ns: u64) -> Result<(), Status>;
}

/// What happens to one raised event, as decided by a [`CallHook`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventAction {
    /// Deliver normally.
    Deliver,
    /// Lose it (a broken host, for testing).
    Drop,
    /// Deliver once system time reaches now + the given ns (at a [`crate::Vm::poll_timers`]).
    Delay(u64),
}

/// Observes and may alter calls and events, for call traces and fault injection.
///
/// Every method has a neutral default. Hooks run for every call, including each multicall
/// entry and ring request, with the `Vm`'s locks released for `before`/`after` of top-level
/// calls. Nested calls (multicall entries, ring requests) invoke the hook while the `Vm` holds
/// its state lock: hooks must not call back into the `Vm`.
pub trait CallHook: Send + Sync {
    /// Called before a call runs; returning `Some(ret)` answers it with `ret` without running it.
    fn before(&self, vcpu: u32, regs: &Regs) -> Option<Ret> {
        let _ = (vcpu, regs);
        None
    }

    /// Called after a call ran (or was answered by `before`).
    fn after(&self, vcpu: u32, regs: &Regs, outcome: &Outcome) {
        let _ = (vcpu, regs, outcome);
    }

    /// Called when an event on `port` is raised (guest send, timer, watch, injection).
    fn event(&self, port: u32) -> EventAction {
        let _ = port;
        EventAction::Deliver
    }
}

bitflags::bitflags! {
    /// Deliberate violations of the specification, for testing that the conformance suite
    /// catches them. Never set outside such tests.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct Quirks: u32 {
        /// The store ignores guest access of host-written nodes.
        const STORE_IGNORES_PERMISSIONS = 1 << 0;
        /// The clock page writer leaves `version` even while writing.
        const CLOCK_VERSION_EVEN = 1 << 1;
        /// EVENT.SEND sets the pending bit but never raises an upcall or wakes the vCPU.
        const EVENT_NO_UPCALL = 1 << 2;
        /// STORE.TXN_COMMIT never reports CONFLICT (last writer wins).
        const STORE_NO_CONFLICT = 1 << 3;
        /// CONSOLE.WRITE reports one byte fewer than it wrote.
        const CONSOLE_SHORT_COUNT = 1 << 4;
    }
}
