//! GRANT service (spec chapter 10, `GNT-*`): a table in guest memory saying which pages the
//! host side may access.
//!
//! The guest declares a [`GrantTableShared`] `static`, registers it with
//! [`Pvabi::grant_setup_table`], and grants pages through the returned [`Grants`]. A page the
//! host may *write* must be a [`SharedPage`] (atomics), so host writes never race with Rust
//! references to plain data; a read-only grant may name an ordinary [`Page`].
//!
//! Entries are claimed lock-free: a free entry (flags 0) is taken with a compare-exchange to
//! a reserved flag bit the host treats as invalid (`GNT-4`), filled, then published with a
//! release store of the valid flags. Revoking stores 0; the host re-reads the entry at every
//! mapping (`GNT-5`).

use crate::memory::Page;
use crate::shared::{GrantEntryShared, GrantTableShared};
use crate::Pvabi;
use core::sync::atomic::{AtomicU64, Ordering};
use pvabi::call;
use pvabi::grant::{GrantEntry, MAX_ENTRIES};
use pvabi::{Status, PAGE_SIZE};

/// A page the host may write (page-aligned atomics).
#[derive(Debug)]
#[repr(C, align(4096))]
pub struct SharedPage(pub [AtomicU64; 512]);

impl SharedPage {
    /// A zeroed page.
    pub const fn new() -> Self {
        Self([const { AtomicU64::new(0) }; 512])
    }

    /// Byte `i` of the page (little-endian words), `None` past the end.
    pub fn byte(&self, i: usize) -> Option<u8> {
        let w = self.0.get(i / 8)?.load(Ordering::Acquire);
        w.to_le_bytes().get(i % 8).copied()
    }
}

impl Default for SharedPage {
    fn default() -> Self {
        Self::new()
    }
}

/// A grant reference: the index of an entry in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct GrantRef(pub u32);

/// Reserved flag bit marking an entry claimed but not yet published (invalid to the host).
const CLAIMED: u16 = 1 << 15;

/// A registered grant table.
#[derive(Clone, Copy, Debug)]
pub struct Grants {
    entries: &'static [GrantEntryShared],
    translate: crate::Translate,
}

impl Grants {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn grant_gfn(&self, gfn: u64, domid: u32, readonly: bool) -> Result<GrantRef, Status> {
        // Reference 0 is usable like any other; the table is scanned from the start.
        for (i, e) in self.entries.iter().enumerate() {
            if e.flags
                .compare_exchange(0, CLAIMED, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                e.domid.store(domid, Ordering::Relaxed);
                e.gfn.store(gfn, Ordering::Relaxed);
                let flags = GrantEntry::FLAG_VALID
                    | if readonly {
                        GrantEntry::FLAG_READONLY
                    } else {
                        0
                    };
                e.flags.store(flags, Ordering::Release);
                return u32::try_from(i).map(GrantRef).map_err(|_| Status::NO_SPACE);
            }
        }
        Err(Status::NO_SPACE)
    }

    fn gfn_of<T>(&self, page: &T) -> Result<u64, Status> {
        let gpa = self.translate.gpa_of_ref(page)?;
        if gpa % PAGE_SIZE != 0 {
            return Err(Status::INVALID_ADDRESS);
        }
        Ok(gpa / PAGE_SIZE)
    }

    /// Grants `domid` read and write access to `page`.
    ///
    /// # Errors
    ///
    /// `INVALID_ADDRESS` if the page does not translate; `NO_SPACE` if the table is full.
    pub fn grant_shared(
        &self,
        page: &'static SharedPage,
        domid: u32,
        readonly: bool,
    ) -> Result<GrantRef, Status> {
        self.grant_gfn(self.gfn_of(page)?, domid, readonly)
    }

    /// Grants `domid` read-only access to `page`.
    ///
    /// # Errors
    ///
    /// `INVALID_ADDRESS` if the page does not translate; `NO_SPACE` if the table is full.
    pub fn grant_readonly(&self, page: &'static Page, domid: u32) -> Result<GrantRef, Status> {
        self.grant_gfn(self.gfn_of(page)?, domid, true)
    }

    /// Revokes a grant (the entry becomes free).
    ///
    /// # Errors
    ///
    /// `NOT_FOUND` for a reference past the table or an entry that is not granted.
    pub fn revoke(&self, r: GrantRef) -> Result<(), Status> {
        let e = self.entries.get(r.0 as usize).ok_or(Status::NOT_FOUND)?;
        let f = e.flags.load(Ordering::Acquire);
        if f & GrantEntry::FLAG_VALID == 0 {
            return Err(Status::NOT_FOUND);
        }
        e.flags
            .compare_exchange(f, 0, Ordering::AcqRel, Ordering::Relaxed)
            .map(drop)
            .map_err(|_| Status::BUSY)
    }

    /// The entry as the host would read it now.
    pub fn entry(&self, r: GrantRef) -> Option<GrantEntry> {
        let e = self.entries.get(r.0 as usize)?;
        Some(GrantEntry {
            flags: e.flags.load(Ordering::Acquire),
            _reserved: 0,
            domid: e.domid.load(Ordering::Relaxed),
            gfn: e.gfn.load(Ordering::Relaxed),
        })
    }
}

impl Pvabi {
    /// GRANT.SETUP_TABLE (`GNT-1`): registers `table`.
    ///
    /// # Errors
    ///
    /// `INVALID_PARAM` for an empty table or one above [`MAX_ENTRIES`], `INVALID_ADDRESS` if
    /// it does not translate (not sent); the host's status.
    pub fn grant_setup_table<const N: usize>(
        &self,
        table: &'static GrantTableShared<N>,
    ) -> Result<Grants, Status> {
        if N == 0 || N as u64 > MAX_ENTRIES {
            return Err(Status::INVALID_PARAM);
        }
        let gpa = self.gpa_ref(table)?;
        self.call2(call::GRANT_SETUP_TABLE, gpa, N as u64)?;
        Ok(Grants {
            entries: &table.entries,
            translate: self.translate(),
        })
    }

    /// GRANT.QUERY (`GNT-3`): the most entries the host accepts.
    ///
    /// # Errors
    ///
    /// The host's status.
    pub fn grant_query(&self) -> Result<u64, Status> {
        self.call0(call::GRANT_QUERY)
    }
}
