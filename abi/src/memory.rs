//! MEMORY service (spec chapter 9, clauses `MEM-*`): the guest memory map and the balloon.

use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub use crate::call::{
    MEMORY_BALLOON_QUERY, MEMORY_BALLOON_RECLAIM, MEMORY_BALLOON_RELEASE, MEMORY_GET_MAP,
};

/// Kind of a memory-map range (spec `MEM-2`). An open type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(transparent)]
pub struct MemKind(pub u32);

impl MemKind {
    /// Ordinary RAM the guest may use.
    pub const RAM: MemKind = MemKind(1);
    /// Reserved: not to be used.
    pub const RESERVED: MemKind = MemKind(2);
    /// Holds what the loader placed (image, boot info, page tables): RAM once the guest is done
    /// with it.
    pub const LOADER: MemKind = MemKind(3);
    /// The MMIO gate page or other device space.
    pub const MMIO: MemKind = MemKind(4);
}

/// One memory-map entry (spec `MEM-2`), 24 bytes.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct MemMapEntry {
    /// First guest-physical address.
    pub base: u64,
    /// Length in bytes.
    pub length: u64,
    /// A [`MemKind`] value.
    pub kind: u32,
    /// Reserved, zero.
    pub _reserved: u32,
}

impl MemMapEntry {
    /// Size in bytes.
    pub const SIZE: usize = 24;
}

/// Largest page count one balloon call accepts (spec `MEM-5`).
pub const MAX_BALLOON_PAGES_PER_CALL: u64 = 1 << 20;

const_assert_eq!(core::mem::size_of::<MemMapEntry>(), MemMapEntry::SIZE);
const_assert_eq!(core::mem::offset_of!(MemMapEntry, base), 0);
const_assert_eq!(core::mem::offset_of!(MemMapEntry, length), 8);
const_assert_eq!(core::mem::offset_of!(MemMapEntry, kind), 16);
const_assert_eq!(core::mem::offset_of!(MemMapEntry, _reserved), 20);
