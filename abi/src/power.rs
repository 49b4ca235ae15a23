//! POWER service (spec chapter 12, clauses `PWR-*`): shutdown with a reason, and a crash report
//! buffer the host reads when the guest crashes.

use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub use crate::call::{POWER_REGISTER_CRASH_BUFFER, POWER_SHUTDOWN};

/// Why the guest shuts down (spec `PWR-1`). An open type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct ShutdownReason(pub u32);

impl ShutdownReason {
    /// Power off; the code is the guest's exit status.
    pub const POWEROFF: ShutdownReason = ShutdownReason(0);
    /// Reboot.
    pub const REBOOT: ShutdownReason = ShutdownReason(1);
    /// Crash; the host reads the crash buffer, if one is registered.
    pub const CRASH: ShutdownReason = ShutdownReason(2);
}

/// Header at the start of a registered crash buffer (spec `PWR-5`), 32 bytes; `message_len`
/// bytes of UTF-8 text follow it.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct CrashHeader {
    /// [`CrashHeader::MAGIC`] once the guest has written a report.
    pub magic: u32,
    /// Length of the message that follows the header.
    pub message_len: u32,
    /// Guest-defined crash code.
    pub code: u64,
    /// Guest RIP of the crash site, or 0.
    pub rip: u64,
    /// Reserved, zero.
    pub _reserved: u64,
}

impl CrashHeader {
    /// `"PVCR"` little-endian.
    pub const MAGIC: u32 = u32::from_le_bytes(*b"PVCR");
    /// Size in bytes.
    pub const SIZE: usize = 32;
    /// Largest crash buffer a host reads (spec `PWR-4`).
    pub const MAX_BUFFER: u64 = 4096;
}

const_assert_eq!(core::mem::size_of::<CrashHeader>(), CrashHeader::SIZE);
const_assert_eq!(core::mem::offset_of!(CrashHeader, magic), 0);
const_assert_eq!(core::mem::offset_of!(CrashHeader, message_len), 4);
const_assert_eq!(core::mem::offset_of!(CrashHeader, code), 8);
const_assert_eq!(core::mem::offset_of!(CrashHeader, rip), 16);
const_assert_eq!(core::mem::offset_of!(CrashHeader, _reserved), 24);
