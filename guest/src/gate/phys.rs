//! Reading guest-physical memory the host hands over (the boot info, the memory map, the
//! command line) through the translation hook.

use crate::Translate;
use zerocopy::{FromBytes, IntoBytes};

/// Reads guest-physical memory through a [`Translate`] with volatile byte copies.
///
/// # Invariants
///
/// Every range that `translate.addr_of` accepts is mapped, readable memory (see
/// [`PhysReader::new`]), and if the host names an MMIO gate, `translate.mmio_addr` of it is
/// mapped to the gate page.
#[derive(Clone, Copy, Debug)]
pub struct PhysReader {
    translate: Translate,
}

impl PhysReader {
    /// Creates a reader.
    ///
    /// # Safety
    ///
    /// For as long as the reader (or a [`crate::Pvabi`] discovered with it) exists:
    /// * every guest-physical range that `translate.addr_of` accepts must be mapped and
    ///   readable at the address it returns. For [`Translate::Identity`] that means the
    ///   structures the loader placed (the boot info and the memory map it names), and, once
    ///   discovery narrowed the reader to [`Translate::IdentityBounded`] (up to the end of the
    ///   highest RAM or LOADER range of that map), everything below that end that the guest
    ///   hands to the shim; for [`Translate::Offset`] the whole mapping
    ///   `[host_base, host_base + len)`;
    /// * if discovery finds the MMIO gate, its trigger address as `translate.mmio_addr`
    ///   returns it must be mapped (uncached) to the host's gate page.
    ///
    /// The reader only reads (volatile, byte by byte), so memory the host or other vCPUs
    /// change concurrently is fine.
    pub const unsafe fn new(translate: Translate) -> Self {
        Self { translate }
    }

    /// The translation this reader uses.
    #[inline]
    pub fn translate(&self) -> Translate {
        self.translate
    }

    /// This reader narrowed to RAM `[0, ram_len)` when it is an unbounded identity reader.
    /// Narrowing only shrinks the set of ranges read, so the invariant still holds.
    pub fn bounded(&self, ram_len: u64) -> PhysReader {
        PhysReader {
            translate: self.translate.bounded(ram_len),
        }
    }

    /// Copies `out.len()` bytes from guest-physical `gpa`; `None` (and `out` unspecified) if
    /// the range does not translate. A zero-length read succeeds.
    pub fn read_bytes(&self, gpa: u64, out: &mut [u8]) -> Option<()> {
        if out.is_empty() {
            return Some(());
        }
        let base = self.translate.addr_of(gpa, out.len() as u64)?;
        for (i, slot) in out.iter_mut().enumerate() {
            let p = core::ptr::with_exposed_provenance::<u8>(base.wrapping_add(i));
            // SAFETY: `addr_of` accepted `[gpa, gpa + out.len())`, so by the type invariant
            // `[base, base + out.len())` is mapped readable memory, and `base + i` lies in it
            // (i < out.len(), and `addr_of` checked the end does not overflow). A `u8` read
            // has no alignment requirement; the read is volatile, so concurrent changes by the
            // host yield some byte value, never a torn Rust object.
            *slot = unsafe { core::ptr::read_volatile(p) };
        }
        Some(())
    }

    /// Reads one `T` (any bit pattern valid) from guest-physical `gpa`, unaligned.
    pub fn read<T: FromBytes + IntoBytes>(&self, gpa: u64) -> Option<T> {
        let mut v = T::new_zeroed();
        self.read_bytes(gpa, v.as_mut_bytes())?;
        Some(v)
    }

    /// Where the MMIO gate's trigger word at `gpa` is mapped, per the invariant.
    pub(crate) fn mmio_addr(&self, gpa: u64) -> Option<usize> {
        self.translate.mmio_addr(gpa)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_inside_and_refuses_outside_an_offset_mapping() {
        let ram: [u8; 16] = core::array::from_fn(|i| i as u8);
        // SAFETY: the whole `ram` array is mapped and readable for the reader's lifetime.
        let r = unsafe {
            PhysReader::new(Translate::Offset {
                host_base: ram.as_ptr() as usize,
                len: ram.len(),
            })
        };
        assert_eq!(r.read::<u32>(1), Some(u32::from_le_bytes([1, 2, 3, 4])));
        assert_eq!(r.read::<u64>(9), None);
        assert_eq!(r.read::<u64>(u64::MAX - 2), None);
        let mut b = [0u8; 0];
        assert_eq!(r.read_bytes(100, &mut b), Some(()));
    }
}
