//! Grant table version 1 (`grant_table.h`): 8-byte entries `{ flags: u16, domid: u16, frame:
//! u32 }`; a grant is published by writing `domid` and `frame`, a write barrier, then `flags`.

use super::abi::{GNTTAB_NR_RESERVED_ENTRIES, GTF_PERMIT_ACCESS, GTF_READONLY};
use super::XenError;
use core::sync::atomic::{fence, AtomicU16, AtomicU32, Ordering};

/// One version-1 grant entry (`grant_entry_v1_t`) as atomics: Xen and the granted domain may
/// change `flags` at any time (`GTF_reading`/`GTF_writing`).
#[derive(Debug)]
#[repr(C)]
pub struct GrantEntryV1 {
    /// `GTF_*` flags.
    pub flags: AtomicU16,
    /// The domain granted access.
    pub domid: AtomicU16,
    /// The guest frame granted.
    pub frame: AtomicU32,
}

impl GrantEntryV1 {
    /// An empty entry.
    pub const fn new() -> Self {
        Self {
            flags: AtomicU16::new(0),
            domid: AtomicU16::new(0),
            frame: AtomicU32::new(0),
        }
    }
}

impl Default for GrantEntryV1 {
    fn default() -> Self {
        Self::new()
    }
}

const _: () = assert!(core::mem::size_of::<GrantEntryV1>() == 8);

/// Entries in one 4 KiB grant-table frame.
pub const ENTRIES_PER_FRAME: usize = 4096 / 8;

/// A mapped grant table (one or more frames, version 1).
#[derive(Clone, Copy, Debug)]
pub struct GrantTable<'a> {
    entries: &'a [GrantEntryV1],
}

impl<'a> GrantTable<'a> {
    /// A table over `entries` (the mapped frames, or an in-memory table in tests).
    pub fn new(entries: &'a [GrantEntryV1]) -> Self {
        Self { entries }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Grants `domid` access to guest frame `frame` through reference `gref`: writes `domid`
    /// and `frame`, a release fence, then `flags` (`GTF_permit_access`, plus `GTF_readonly`
    /// when `readonly`).
    ///
    /// # Errors
    ///
    /// [`XenError::BadGrantRef`] if `gref` is reserved (below 8) or outside the table;
    /// [`XenError::Layout`] if `frame` does not fit the 32-bit v1 field.
    pub fn grant(&self, gref: u32, domid: u16, frame: u64, readonly: bool) -> Result<(), XenError> {
        if gref < GNTTAB_NR_RESERVED_ENTRIES {
            return Err(XenError::BadGrantRef);
        }
        let e = self
            .entries
            .get(gref as usize)
            .ok_or(XenError::BadGrantRef)?;
        let frame = u32::try_from(frame).map_err(|_| XenError::Layout)?;
        e.domid.store(domid, Ordering::Relaxed);
        e.frame.store(frame, Ordering::Relaxed);
        // The grantee must see domid and frame before the flags that make the entry valid.
        fence(Ordering::Release);
        let flags = GTF_PERMIT_ACCESS | if readonly { GTF_READONLY } else { 0 };
        e.flags.store(flags, Ordering::Release);
        Ok(())
    }

    /// The entry `gref` as (flags, domid, frame), for checks.
    pub fn entry(&self, gref: u32) -> Option<(u16, u16, u32)> {
        let e = self.entries.get(gref as usize)?;
        Some((
            e.flags.load(Ordering::Acquire),
            e.domid.load(Ordering::Relaxed),
            e.frame.load(Ordering::Relaxed),
        ))
    }
}

#[cfg(test)]
// In tests a panic is the failure report.
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn grant_writes_v1_entry_and_refuses_reserved_refs() {
        let table: [GrantEntryV1; 16] = [const { GrantEntryV1::new() }; 16];
        let gt = GrantTable::new(&table);
        assert_eq!(gt.grant(3, 0, 5, false), Err(XenError::BadGrantRef));
        assert_eq!(gt.grant(16, 0, 5, false), Err(XenError::BadGrantRef));
        assert_eq!(gt.grant(9, 0, 1 << 32, false), Err(XenError::Layout));
        gt.grant(8, 0, 0x1234, false).unwrap();
        gt.grant(9, 7, 0x1235, true).unwrap();
        assert_eq!(gt.entry(8), Some((GTF_PERMIT_ACCESS, 0, 0x1234)));
        assert_eq!(
            gt.entry(9),
            Some((GTF_PERMIT_ACCESS | GTF_READONLY, 7, 0x1235))
        );
        assert_eq!(gt.entry(10), Some((0, 0, 0)));
    }
}
