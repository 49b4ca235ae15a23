//! VCPU service (spec chapter 7, `VCPU-*`): yield, block, kick, start/stop/status of
//! secondary vCPUs. Steal time is registered in [`crate::clock`]; VCPU.UPCALL_RETURN is issued
//! by the callback entry ([`crate::upcall`]).

use crate::{base::to_u32, Pvabi};
use pvabi::call;
use pvabi::vcpu::{VcpuState, BLOCK_FOREVER};
use pvabi::Status;

/// Entry point of a started vCPU: called with RDI = `arg` and RSI = the vCPU id (`VCPU-7`),
/// on the stack given to [`Pvabi::vcpu_start`], in the boot vCPU's mode and address space.
/// If it returns, the vCPU stops: on bare metal through the shim's return trap (VCPU.STOP, or
/// POWER.SHUTDOWN(POWEROFF, 0) for the last running vCPU); in-process the mock stops it.
/// This is the mock's guest-function type too (`pvabi_mock::GuestFn`), so an in-process guest
/// registers the same function with the mock.
pub type VcpuEntry = extern "C" fn(arg: u64, vcpu_id: u64);

/// A stack for a secondary vCPU (16-byte aligned).
#[derive(Debug)]
#[repr(C, align(16))]
pub struct VcpuStack<const N: usize>(pub [u8; N]);

impl<const N: usize> VcpuStack<N> {
    /// A zeroed stack.
    pub const fn new() -> Self {
        Self([0; N])
    }
}

impl<const N: usize> Default for VcpuStack<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// Smallest stack [`Pvabi::vcpu_start`] accepts.
pub const MIN_STACK: usize = 256;

/// Why VCPU.BLOCK returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// An event (or a kick) woke the vCPU.
    Event,
    /// The deadline passed (the host answered TIMED_OUT).
    Deadline,
}

impl Pvabi {
    /// VCPU.YIELD (`VCPU-2`).
    ///
    /// # Errors
    ///
    /// The host's status.
    pub fn vcpu_yield(&self) -> Result<(), Status> {
        self.call0(call::VCPU_YIELD).map(drop)
    }

    /// VCPU.BLOCK (`VCPU-3`): wait for an event, a kick, or system time `deadline_ns`
    /// (`None` = no deadline).
    ///
    /// # Errors
    ///
    /// The host's status other than TIMED_OUT (which is `Ok(Wake::Deadline)`); `INVALID_PARAM`
    /// for `Some(0)` (0 means "forever" on the wire; not sent).
    pub fn vcpu_block(&self, deadline_ns: Option<u64>) -> Result<Wake, Status> {
        let arg = match deadline_ns {
            None => BLOCK_FOREVER,
            Some(BLOCK_FOREVER) => return Err(Status::INVALID_PARAM),
            Some(d) => d,
        };
        match self.call1(call::VCPU_BLOCK, arg) {
            Ok(_) => Ok(Wake::Event),
            Err(Status::TIMED_OUT) => Ok(Wake::Deadline),
            Err(e) => Err(e),
        }
    }

    /// VCPU.KICK (`VCPU-5`): wake `vcpu` if it is blocked.
    ///
    /// # Errors
    ///
    /// The host's status.
    pub fn vcpu_kick(&self, vcpu: u32) -> Result<(), Status> {
        self.call1(call::VCPU_KICK, u64::from(vcpu)).map(drop)
    }

    /// VCPU.START (`VCPU-6`): start `vcpu` at `entry` with `arg`, on `stack` (which the new
    /// vCPU owns from now on). RSP is the stack's 16-byte aligned top minus 8, holding the
    /// address of the shim's return trap, as after a `call`. `entry` and the stack are passed
    /// as addresses in the guest's address space (the new vCPU shares it, `VCPU-7`); an
    /// in-process host ignores the stack and needs `entry` registered with it.
    ///
    /// # Errors
    ///
    /// `INVALID_PARAM` for a stack below [`MIN_STACK`] bytes or a vCPU id not below the vCPU
    /// count (not sent); the host's status (the stack is then lost).
    pub fn vcpu_start<const N: usize>(
        &self,
        vcpu: u32,
        entry: VcpuEntry,
        stack: &'static mut VcpuStack<N>,
        arg: u64,
    ) -> Result<(), Status> {
        if N < MIN_STACK || vcpu >= self.info().vcpu_count {
            return Err(Status::INVALID_PARAM);
        }
        let base = stack.0.as_mut_ptr() as usize;
        let top = base.checked_add(N).ok_or(Status::INVALID_PARAM)? & !15;
        let rsp = top.checked_sub(8).ok_or(Status::INVALID_PARAM)?;
        // The return address of the entry function: the shim's trap, which stops the vCPU.
        let trap = crate::gate::upcall_entry::vcpu_return_trap_address() as u64;
        let off = rsp - base;
        stack
            .0
            .get_mut(off..off + 8)
            .ok_or(Status::INVALID_PARAM)?
            .copy_from_slice(&trap.to_le_bytes());
        crate::gate::upcall_entry::remember_exit_gate(self.gate().register_gate());
        self.call(
            call::VCPU_START,
            [
                u64::from(vcpu),
                entry as usize as u64,
                rsp as u64,
                arg,
                0,
                0,
            ],
        )
        .map(drop)
    }

    /// VCPU.STOP (`VCPU-9`): stops the calling vCPU. Returns only if the host refused, with
    /// its status.
    pub fn vcpu_stop(&self) -> Status {
        match self.call0(call::VCPU_STOP) {
            Ok(_) => Status::FAILED,
            Err(s) => s,
        }
    }

    /// VCPU.GET_STATUS (`VCPU-10`). Unknown states are returned as they are (open type).
    ///
    /// # Errors
    ///
    /// The host's status; `FAILED` if the value has bits above 31.
    pub fn vcpu_status(&self, vcpu: u32) -> Result<VcpuState, Status> {
        self.call1(call::VCPU_GET_STATUS, u64::from(vcpu))
            .and_then(to_u32)
            .map(VcpuState)
    }
}
