//! HARNESS service (spec appendix A, clauses `HAR-*`): present only while a backend is being
//! certified. Through it a conformance case asks the host for what only the host can do or see,
//! and reports its typed results.
//!
//! A result record is a [`ReportHeader`] followed by `clauses_len` bytes of clause ids
//! (comma-separated, e.g. `BASE-1,BASE-2`), then `name_len` bytes of the case name, then
//! `detail_len` bytes of detail text (UTF-8).

use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub use crate::call::{
    HARNESS_BALLOON_CHECK, HARNESS_CLOCK_ADVANCE, HARNESS_CLOCK_READ, HARNESS_CONSOLE_INPUT,
    HARNESS_CONSOLE_READBACK, HARNESS_GRANT_ACCESS, HARNESS_INJECT_EVENT, HARNESS_REPORT,
    HARNESS_STORE_HOST_READ, HARNESS_STORE_HOST_WRITE,
};

/// The outcome of one case (spec `HAR-2`). An open type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct Outcome(pub u32);

impl Outcome {
    /// Every clause the case cites held.
    pub const PASSED: Outcome = Outcome(0);
    /// A cited clause did not hold; the detail says why.
    pub const FAILED: Outcome = Outcome(1);
    /// The case could not run here; the detail says why.
    pub const SKIPPED: Outcome = Outcome(2);
    /// The suite finished: no more records follow. Clauses and name are empty.
    pub const END: Outcome = Outcome(3);
}

/// Header of a result record (spec `HAR-2`), 24 bytes.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct ReportHeader {
    /// [`ReportHeader::MAGIC`].
    pub magic: u32,
    /// An [`Outcome`] value.
    pub outcome: u32,
    /// Length of the clause-id list.
    pub clauses_len: u32,
    /// Length of the case name.
    pub name_len: u32,
    /// Length of the detail text.
    pub detail_len: u32,
    /// Reserved, zero.
    pub _reserved: u32,
}

impl ReportHeader {
    /// `"PVRP"` little-endian.
    pub const MAGIC: u32 = u32::from_le_bytes(*b"PVRP");
    /// Size in bytes.
    pub const SIZE: usize = 24;
    /// Largest record the host accepts (spec `HAR-2`).
    pub const MAX_RECORD: u64 = 4096;
}

/// HARNESS.GRANT_ACCESS third argument meaning "read, don't write" (spec `HAR-10`).
pub const GRANT_ACCESS_READ: u64 = u64::MAX;

const_assert_eq!(core::mem::size_of::<ReportHeader>(), ReportHeader::SIZE);
const_assert_eq!(core::mem::offset_of!(ReportHeader, magic), 0);
const_assert_eq!(core::mem::offset_of!(ReportHeader, outcome), 4);
const_assert_eq!(core::mem::offset_of!(ReportHeader, clauses_len), 8);
const_assert_eq!(core::mem::offset_of!(ReportHeader, name_len), 12);
const_assert_eq!(core::mem::offset_of!(ReportHeader, detail_len), 16);
const_assert_eq!(core::mem::offset_of!(ReportHeader, _reserved), 20);
