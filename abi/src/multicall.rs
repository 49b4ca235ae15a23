//! MULTICALL service (spec chapter 13, clauses `MC-*`): an array of calls in guest memory run
//! in order with one gate crossing, each entry's (status, value) written back into it.
//!
//! Calls that do not return (POWER.SHUTDOWN, VCPU.STOP, VCPU.UPCALL_RETURN), VCPU.BLOCK and
//! MULTICALL itself are not allowed in an entry: that entry gets INVALID_PARAM (spec `MC-4`).

use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub use crate::call::MULTICALL_EXECUTE;

/// One multicall entry (spec `MC-2`), 72 bytes, 8-byte aligned.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct MulticallEntry {
    /// The call id.
    pub call_id: u32,
    /// [`MulticallEntry::FLAG_STOP_ON_ERROR`]; other bits reserved, zero.
    pub flags: u32,
    /// Arguments 0..5.
    pub args: [u64; 6],
    /// Written by the host: the status, sign-extended.
    pub status: i64,
    /// Written by the host: the value.
    pub value: u64,
}

impl MulticallEntry {
    /// Size in bytes.
    pub const SIZE: usize = 72;
    /// Required alignment of the array's guest-physical address (spec `MC-2`).
    pub const ALIGN: u64 = 8;
    /// Stop after this entry if it fails (spec `MC-3`).
    pub const FLAG_STOP_ON_ERROR: u32 = 1 << 0;
}

/// Most entries one MULTICALL.EXECUTE accepts (spec `MC-5`).
pub const MAX_ENTRIES: u64 = 256;

const_assert_eq!(core::mem::size_of::<MulticallEntry>(), MulticallEntry::SIZE);
const_assert_eq!(core::mem::offset_of!(MulticallEntry, call_id), 0);
const_assert_eq!(core::mem::offset_of!(MulticallEntry, flags), 4);
const_assert_eq!(core::mem::offset_of!(MulticallEntry, args), 8);
const_assert_eq!(core::mem::offset_of!(MulticallEntry, status), 56);
const_assert_eq!(core::mem::offset_of!(MulticallEntry, value), 64);
