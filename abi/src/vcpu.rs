//! VCPU service (spec chapter 7, clauses `VCPU-*`): yield, block, kick, start/stop/status of
//! secondary vCPUs (like the SBI's HSM extension), the steal-time record, and the return from a
//! callback upcall.
//!
//! A vCPU started with VCPU.START begins at `entry` with RSP = `stack`, RDI = `arg`, RSI = its
//! vCPU id, in the same execution mode and address space as the boot vCPU (spec `VCPU-7`).

use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub use crate::call::{
    VCPU_BLOCK, VCPU_GET_STATUS, VCPU_KICK, VCPU_REGISTER_STEAL_TIME, VCPU_START, VCPU_STOP,
    VCPU_UPCALL_RETURN, VCPU_YIELD,
};

/// A vCPU's state as VCPU.GET_STATUS reports it (spec `VCPU-10`). An open type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct VcpuState(pub u32);

impl VcpuState {
    /// Not running; VCPU.START may start it.
    pub const STOPPED: VcpuState = VcpuState(0);
    /// Running (or runnable).
    pub const RUNNING: VcpuState = VcpuState(1);
    /// Started but not yet running its entry.
    pub const START_PENDING: VcpuState = VcpuState(2);
    /// Waiting in VCPU.BLOCK.
    pub const BLOCKED: VcpuState = VcpuState(3);
}

/// VCPU.BLOCK deadline meaning "no deadline" (spec `VCPU-3`).
pub const BLOCK_FOREVER: u64 = 0;

/// The steal-time record (KVM's `kvm_steal_time` layout; spec `VCPU-11`), 64 bytes, 64-byte
/// aligned, updated with the same odd/even `version` protocol as the clock page.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct StealTime {
    /// Total ns this vCPU was runnable but not running.
    pub steal: u64,
    /// Seqlock version: odd while the host writes.
    pub version: u32,
    /// Reserved flags, zero.
    pub flags: u32,
    /// Nonzero while the vCPU is preempted.
    pub preempted: u8,
    /// Reserved, zero.
    pub _reserved0: [u8; 3],
    /// Reserved, zero.
    pub _reserved1: [u32; 11],
}

impl StealTime {
    /// Size in bytes.
    pub const SIZE: usize = 64;
    /// Required alignment of its guest-physical address.
    pub const ALIGN: u64 = 64;
}

const_assert_eq!(core::mem::size_of::<StealTime>(), StealTime::SIZE);
const_assert_eq!(core::mem::offset_of!(StealTime, steal), 0);
const_assert_eq!(core::mem::offset_of!(StealTime, version), 8);
const_assert_eq!(core::mem::offset_of!(StealTime, flags), 12);
const_assert_eq!(core::mem::offset_of!(StealTime, preempted), 16);
const_assert_eq!(core::mem::offset_of!(StealTime, _reserved0), 17);
const_assert_eq!(core::mem::offset_of!(StealTime, _reserved1), 20);
