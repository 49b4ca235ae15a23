//! GRANT service (spec chapter 10, clauses `GNT-*`): a table in guest memory in which the guest
//! says which of its pages the host side (a backend, another domain) may access, and how.
//!
//! The host reads an entry only when it is asked to map a grant reference (the index of the
//! entry); it maps nothing that is not granted, never writes through a read-only grant, and
//! re-reads the entry at every mapping (the guest may revoke at any time, spec `GNT-5`).

use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub use crate::call::{GRANT_QUERY, GRANT_SETUP_TABLE};

/// One grant entry (spec `GNT-2`), 16 bytes.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct GrantEntry {
    /// [`GrantEntry::FLAG_VALID`], [`GrantEntry::FLAG_READONLY`]; other bits reserved, zero.
    pub flags: u16,
    /// Reserved, zero.
    pub _reserved: u16,
    /// Domain the grant is for: [`GrantEntry::DOMID_HOST`] for the host side itself.
    pub domid: u32,
    /// Guest frame number (guest-physical address / 4096) of the granted page.
    pub gfn: u64,
}

impl GrantEntry {
    /// Size in bytes.
    pub const SIZE: usize = 16;
    /// The entry grants access.
    pub const FLAG_VALID: u16 = 1 << 0;
    /// The grant is read-only.
    pub const FLAG_READONLY: u16 = 1 << 1;
    /// Flags defined by ABI v1; any other set bit makes the entry invalid (spec `GNT-4`).
    pub const FLAGS_KNOWN: u16 = Self::FLAG_VALID | Self::FLAG_READONLY;
    /// The domain id of the host side.
    pub const DOMID_HOST: u32 = 0;
}

/// Largest number of grant entries a host accepts in ABI v1 (spec `GNT-3`).
pub const MAX_ENTRIES: u64 = 4096;

const_assert_eq!(core::mem::size_of::<GrantEntry>(), GrantEntry::SIZE);
const_assert_eq!(core::mem::offset_of!(GrantEntry, flags), 0);
const_assert_eq!(core::mem::offset_of!(GrantEntry, _reserved), 2);
const_assert_eq!(core::mem::offset_of!(GrantEntry, domid), 4);
const_assert_eq!(core::mem::offset_of!(GrantEntry, gfn), 8);
