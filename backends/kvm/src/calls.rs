//! Serving calls that arrive at the gate.
//!
//! [`Services`] is what the exit loop needs from a call server. [`Builtin`] serves the calls
//! that only the VMM can serve (vCPU life cycle, console, power, clock reads, identity); the
//! stateful services (store, events, grants, ...) come from the shared host machinery.

use pvabi::call::{self, CallId};
use pvabi::discovery::Features;
use pvabi::gate::{Regs, Ret};
use pvabi::power::ShutdownReason;
use pvabi::Status;
use vm_memory::{Bytes, GuestAddress};

use crate::vmm::{Action, Shared};
use crate::{ExitStatus, Mode};

/// Where upcalls of one vCPU go.
#[allow(dead_code)] // Vector and Callback come from the host-services adapter
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UpcallTarget {
    /// No upcalls registered.
    None,
    /// Interrupt on this vector (ring 0).
    Vector(u8),
    /// Callback at this address (PV ring 3).
    Callback(u64),
}

/// A call server for the exit loop.
pub(crate) trait Services: Send + Sync {
    /// Feature bits to advertise in this mode.
    fn features(&self, mode: Mode) -> Features;
    /// Serves one call of vCPU `vcpu`.
    fn call(&self, sh: &Shared, vcpu: u32, regs: &Regs) -> Action;
    /// Whether vCPU `vcpu` has an event that ends VCPU.BLOCK.
    fn event_pending(&self, vcpu: u32) -> bool;
    /// Where upcalls of `vcpu` go.
    fn upcall_target(&self, vcpu: u32) -> UpcallTarget;
    /// Whether an upcall should be delivered to `vcpu` now (pending and not masked).
    fn upcall_due(&self, sh: &Shared, vcpu: u32) -> bool;
    /// Saves `frame` for a callback upcall of `vcpu` and masks upcalls; returns the frame's GPA.
    fn save_frame(&self, sh: &Shared, vcpu: u32, frame: &pvabi::event::UpcallFrame) -> Option<u64>;
}

/// The calls the VMM itself serves, with nothing else behind them.
#[derive(Debug, Default)]
pub(crate) struct Builtin;

/// Serves the VMM's own calls; `None` for calls it does not serve.
pub(crate) fn vmm_call(sh: &Shared, vcpu: u32, regs: &Regs) -> Option<Action> {
    let Some(id) = CallId::from_reg(regs.rax) else {
        return Some(Action::Return(Ret::err(Status::NOT_SUPPORTED)));
    };
    let [a0, a1, a2, a3, _, _] = regs.args;
    let ret = |r: Ret| Some(Action::Return(r));
    match id {
        call::BASE_GET_ABI_VERSION => ret(Ret::ok(u64::from(pvabi::ABI_VERSION.to_u32()))),
        call::BASE_GET_BACKEND_ID => ret(Ret::ok(u64::from(pvabi::discovery::backend_id::KVM))),
        call::BASE_GET_BACKEND_VERSION => ret(Ret::ok(crate::BACKEND_VERSION)),
        call::BASE_GET_VCPU_ID => ret(Ret::ok(u64::from(vcpu))),
        call::BASE_GET_VCPU_COUNT => ret(Ret::ok(u64::from(sh.vcpus))),
        call::CONSOLE_WRITE_BYTE => {
            if a0 > 0xFF {
                return ret(Ret::err(Status::INVALID_PARAM));
            }
            sh.console_write(&[a0 as u8]);
            ret(Ret::ok(0))
        }
        call::CONSOLE_WRITE => {
            if a1 > pvabi::console::MAX_TRANSFER {
                return ret(Ret::err(Status::INVALID_PARAM));
            }
            let mut buf = vec![0u8; a1 as usize];
            if a0.checked_add(a1).is_none()
                || sh.mem.read_slice(&mut buf, GuestAddress(a0)).is_err()
            {
                return ret(Ret::err(Status::INVALID_ADDRESS));
            }
            sh.console_write(&buf);
            ret(Ret::ok(a1))
        }
        call::CLOCK_GET_TIME => ret(Ret::ok(sh.now_ns())),
        call::VCPU_YIELD => {
            std::thread::yield_now();
            ret(Ret::ok(0))
        }
        call::VCPU_BLOCK => Some(Action::Block(Ret::ok(0), a0)),
        call::VCPU_KICK => {
            if a0 >= u64::from(sh.vcpus) {
                return ret(Ret::err(Status::INVALID_PARAM));
            }
            sh.kick(a0 as u32);
            ret(Ret::ok(0))
        }
        call::VCPU_START => ret(sh.start_vcpu(a0, a1, a2, a3)),
        call::VCPU_STOP => Some(Action::Stop),
        call::VCPU_GET_STATUS => ret(match sh.vcpu_status(a0) {
            Some(s) => Ret::ok(u64::from(s.0)),
            None => Ret::err(Status::INVALID_PARAM),
        }),
        call::POWER_SHUTDOWN => {
            let reason = ShutdownReason(u32::try_from(a0).unwrap_or(u32::MAX));
            if a0 > u64::from(ShutdownReason::CRASH.0) {
                return ret(Ret::err(Status::INVALID_PARAM));
            }
            sh.finish(Ok(ExitStatus {
                reason: reason.0,
                code: a1,
                vcpu,
            }));
            Some(Action::Shutdown)
        }
        _ => None,
    }
}

impl Services for Builtin {
    fn features(&self, _mode: Mode) -> Features {
        Features::empty()
    }

    fn call(&self, sh: &Shared, vcpu: u32, regs: &Regs) -> Action {
        vmm_call(sh, vcpu, regs).unwrap_or(Action::Return(Ret::err(Status::NOT_SUPPORTED)))
    }

    fn event_pending(&self, _vcpu: u32) -> bool {
        false
    }

    fn upcall_target(&self, _vcpu: u32) -> UpcallTarget {
        UpcallTarget::None
    }

    fn upcall_due(&self, _sh: &Shared, _vcpu: u32) -> bool {
        false
    }

    fn save_frame(
        &self,
        _sh: &Shared,
        _vcpu: u32,
        _frame: &pvabi::event::UpcallFrame,
    ) -> Option<u64> {
        None
    }
}
