//! MEMORY service (spec chapter 9, `MEM-*`): the memory map and the balloon.
//!
//! The map comes either from the boot info ([`Pvabi::boot_memory_map`], read through the
//! [`crate::PhysReader`]) or from MEMORY.GET_MAP into a caller's buffer
//! ([`Pvabi::memory_map`]). Ballooning hands whole pages ([`Page`]) to the host: the shim takes
//! the `&'static mut` borrow, so the guest cannot touch a released page until it is reclaimed.

use crate::Pvabi;
use pvabi::call;
use pvabi::memory::{MemKind, MemMapEntry, MAX_BALLOON_PAGES_PER_CALL};
use pvabi::{Status, PAGE_SIZE};

/// Most boot-info map entries [`Pvabi::boot_memory_map`] walks (a guard against a bogus count).
pub const MAX_BOOT_MAP_ENTRIES: u32 = 4096;

/// One guest page, page-aligned.
#[derive(Debug)]
#[repr(C, align(4096))]
pub struct Page(pub [u8; 4096]);

impl Page {
    /// A zeroed page.
    pub const fn new() -> Self {
        Self([0; 4096])
    }
}

impl Default for Page {
    fn default() -> Self {
        Self::new()
    }
}

/// The memory map MEMORY.GET_MAP wrote: the entries that fit, and the host's total.
#[derive(Debug)]
pub struct MemoryMap<'a> {
    /// The entries written (at most the buffer's length).
    pub entries: &'a [MemMapEntry],
    /// How many entries the host has in all (more than `entries.len()` if the buffer was
    /// too small).
    pub total: u64,
}

impl MemoryMap<'_> {
    /// The RAM ranges.
    pub fn ram(&self) -> impl Iterator<Item = &MemMapEntry> {
        self.entries
            .iter()
            .filter(|e| MemKind(e.kind) == MemKind::RAM)
    }
}

/// Iterator over the boot info's memory map; yields nothing past an unreadable entry.
#[derive(Clone, Debug)]
pub struct BootMemoryMap {
    phys: crate::PhysReader,
    gpa: u64,
    next: u32,
    count: u32,
}

impl Iterator for BootMemoryMap {
    type Item = MemMapEntry;

    fn next(&mut self) -> Option<MemMapEntry> {
        if self.next >= self.count {
            return None;
        }
        let off = u64::from(self.next).checked_mul(MemMapEntry::SIZE as u64)?;
        let e = self.phys.read::<MemMapEntry>(self.gpa.checked_add(off)?);
        self.next = if e.is_some() {
            self.next + 1
        } else {
            self.count
        };
        e
    }
}

/// Pages handed to the host by [`Pvabi::balloon_release`]; give them back to
/// [`Pvabi::balloon_reclaim`] to use them again.
#[derive(Debug)]
#[must_use = "released pages are lost unless reclaimed"]
pub struct Ballooned {
    pages: &'static mut [Page],
    gpa: u64,
}

impl Ballooned {
    /// GPA of the first page.
    pub fn gpa(&self) -> u64 {
        self.gpa
    }

    /// Number of pages.
    pub fn pages(&self) -> usize {
        self.pages.len()
    }
}

impl Pvabi {
    /// The memory map of the boot info (empty without boot info). Entries are read through
    /// the [`crate::PhysReader`] one at a time; at most [`MAX_BOOT_MAP_ENTRIES`].
    pub fn boot_memory_map(&self) -> BootMemoryMap {
        let (gpa, count) = self
            .info()
            .boot_info
            .map(|b| (b.mem_map_gpa, b.mem_map_entries.min(MAX_BOOT_MAP_ENTRIES)))
            .unwrap_or((0, 0));
        BootMemoryMap {
            phys: *self.phys(),
            gpa,
            next: 0,
            count,
        }
    }

    /// Copies the boot info's command line (`DISC-11`) into `out`; returns the bytes copied
    /// (at most `out.len()`), 0 without boot info or command line, `None` if the host's
    /// address does not translate.
    pub fn boot_cmdline(&self, out: &mut [u8]) -> Option<usize> {
        let Some(bi) = self.info().boot_info else {
            return Some(0);
        };
        let n = (bi.cmdline_len as usize).min(out.len());
        let dst = out.get_mut(..n)?;
        self.phys().read_bytes(bi.cmdline_gpa, dst)?;
        Some(n)
    }

    /// MEMORY.GET_MAP (`MEM-1`) into `buf`.
    ///
    /// # Errors
    ///
    /// `INVALID_ADDRESS` if `buf` does not translate (not sent); the host's status.
    pub fn memory_map<'a>(&self, buf: &'a mut [MemMapEntry]) -> Result<MemoryMap<'a>, Status> {
        let len = buf.len();
        let gpa = self
            .translate()
            .gpa_of(buf.as_ptr() as usize, len.saturating_mul(MemMapEntry::SIZE))?;
        let total = self.call2(call::MEMORY_GET_MAP, gpa, len as u64)?;
        let n = usize::try_from(total).unwrap_or(usize::MAX).min(len);
        let entries: &'a [MemMapEntry] = buf.get(..n).unwrap_or(&[]);
        Ok(MemoryMap { entries, total })
    }

    /// MEMORY.BALLOON_RELEASE (`MEM-4`): gives `pages` to the host.
    ///
    /// # Errors
    ///
    /// `INVALID_PARAM` for an empty slice or one above the per-call limit, `INVALID_ADDRESS`
    /// if it does not translate (not sent); the host's status (the pages are then lost to
    /// the guest: they may be partially released).
    pub fn balloon_release(&self, pages: &'static mut [Page]) -> Result<Ballooned, Status> {
        let n = pages.len() as u64;
        if n == 0 || n > MAX_BALLOON_PAGES_PER_CALL {
            return Err(Status::INVALID_PARAM);
        }
        let gpa = self.translate().gpa_of(
            pages.as_ptr() as usize,
            pages.len().saturating_mul(PAGE_SIZE as usize),
        )?;
        self.call2(call::MEMORY_BALLOON_RELEASE, gpa, n)?;
        Ok(Ballooned { pages, gpa })
    }

    /// MEMORY.BALLOON_RECLAIM (`MEM-6`): takes the pages back (their contents are
    /// unspecified, typically zero).
    ///
    /// # Errors
    ///
    /// The host's status, with the pages still released.
    pub fn balloon_reclaim(
        &self,
        b: Ballooned,
    ) -> Result<&'static mut [Page], (Status, Ballooned)> {
        match self.call2(call::MEMORY_BALLOON_RECLAIM, b.gpa, b.pages.len() as u64) {
            Ok(_) => Ok(b.pages),
            Err(s) => Err((s, b)),
        }
    }

    /// MEMORY.BALLOON_QUERY (`MEM-8`): pages currently released.
    ///
    /// # Errors
    ///
    /// The host's status.
    pub fn balloon_query(&self) -> Result<u64, Status> {
        self.call0(call::MEMORY_BALLOON_QUERY)
    }
}
