//! The translation hook: from a guest pointer to the guest-physical address (GPA) the host sees,
//! and back.
//!
//! Every wrapper that hands guest memory to the host (a buffer, a shared page) turns the Rust
//! reference into a GPA through a [`Translate`]. If the range does not translate — it lies
//! outside the guest RAM the hook knows, or its end overflows — the wrapper returns
//! `Err(Status::INVALID_ADDRESS)` without calling the host.

use pvabi::Status;

/// How guest pointers map to guest-physical addresses.
///
/// * A simple bare-metal guest runs with identity page tables: [`Translate::Identity`], or
///   [`Translate::IdentityBounded`] once the end of RAM is known (discovery narrows
///   `Identity` to the end of the highest RAM or LOADER range of the boot info's memory map).
///   The bound is one interval: a hole in the map below it (device space) is not refused.
/// * An in-process guest (the mock) sees guest RAM as an ordinary host mapping starting at
///   `host_base`: [`Translate::Offset`], GPA = pointer − `host_base`.
///
/// # Examples
///
/// ```
/// use pvabi_guest::Translate;
/// let ram = [0u8; 64];
/// let t = Translate::Offset { host_base: ram.as_ptr() as usize, len: ram.len() };
/// assert_eq!(t.gpa_of_slice(&ram[8..16]), Ok(8));
/// assert!(t.gpa_of_slice(&[1u8, 2, 3]).is_err()); // not inside guest RAM
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Translate {
    /// GPA = pointer value; the extent of RAM is not known, so only overflow is checked.
    Identity,
    /// GPA = pointer value, and guest RAM is `[0, ram_len)`.
    IdentityBounded {
        /// Bytes of guest RAM starting at GPA 0.
        ram_len: u64,
    },
    /// Guest RAM is the mapping `[host_base, host_base + len)`; GPA = pointer − `host_base`.
    Offset {
        /// Address at which GPA 0 is mapped.
        host_base: usize,
        /// Bytes of guest RAM mapped there.
        len: usize,
    },
}

impl Translate {
    /// The GPA of the `len` bytes at pointer value `addr`.
    ///
    /// A zero-length range translates to GPA 0 whatever its (possibly dangling) pointer: the
    /// host accesses no byte of it.
    ///
    /// # Errors
    ///
    /// [`Status::INVALID_ADDRESS`] if the range is not entirely inside the guest RAM this hook
    /// knows, or `addr + len` overflows.
    #[inline]
    pub fn gpa_of(&self, addr: usize, len: usize) -> Result<u64, Status> {
        if len == 0 {
            return Ok(0);
        }
        let end = addr.checked_add(len).ok_or(Status::INVALID_ADDRESS)?;
        match *self {
            Translate::Identity => Ok(addr as u64),
            Translate::IdentityBounded { ram_len } => {
                if (end as u64) <= ram_len {
                    Ok(addr as u64)
                } else {
                    Err(Status::INVALID_ADDRESS)
                }
            }
            Translate::Offset {
                host_base,
                len: ram,
            } => {
                let ram_end = host_base.checked_add(ram).ok_or(Status::INVALID_ADDRESS)?;
                if addr >= host_base && end <= ram_end {
                    Ok((addr - host_base) as u64)
                } else {
                    Err(Status::INVALID_ADDRESS)
                }
            }
        }
    }

    /// The GPA of a byte slice.
    ///
    /// # Errors
    ///
    /// As [`Translate::gpa_of`].
    pub fn gpa_of_slice(&self, s: &[u8]) -> Result<u64, Status> {
        self.gpa_of(s.as_ptr() as usize, s.len())
    }

    /// The GPA of a typed value.
    ///
    /// # Errors
    ///
    /// As [`Translate::gpa_of`].
    pub fn gpa_of_ref<T>(&self, r: &T) -> Result<u64, Status> {
        self.gpa_of(r as *const T as usize, core::mem::size_of::<T>())
    }

    /// The pointer value at which the `len` bytes at `gpa` are mapped, if the whole range is in
    /// the guest RAM this hook knows. Zero-length ranges are refused (there is nothing to map).
    pub fn addr_of(&self, gpa: u64, len: u64) -> Option<usize> {
        if len == 0 {
            return None;
        }
        let end = gpa.checked_add(len)?;
        match *self {
            Translate::Identity => {
                // The range must be addressable as a pointer.
                usize::try_from(end).ok()?;
                usize::try_from(gpa).ok()
            }
            Translate::IdentityBounded { ram_len } => {
                if end <= ram_len {
                    usize::try_from(end).ok()?;
                    usize::try_from(gpa).ok()
                } else {
                    None
                }
            }
            Translate::Offset {
                host_base,
                len: ram,
            } => {
                if end > ram as u64 {
                    return None;
                }
                let off = usize::try_from(gpa).ok()?;
                host_base.checked_add(off)
            }
        }
    }

    /// The pointer value of a device address (the MMIO gate), which lies outside RAM: identity
    /// for identity-mapped guests; an in-process guest has no device space.
    pub fn mmio_addr(&self, gpa: u64) -> Option<usize> {
        match *self {
            Translate::Identity | Translate::IdentityBounded { .. } => {
                gpa.checked_add(4)?;
                usize::try_from(gpa).ok()
            }
            Translate::Offset { .. } => None,
        }
    }

    /// Narrows [`Translate::Identity`] to [`Translate::IdentityBounded`] once the RAM size is
    /// known; other variants are returned unchanged.
    pub fn bounded(self, ram_len: u64) -> Translate {
        match self {
            Translate::Identity if ram_len != 0 => Translate::IdentityBounded { ram_len },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_translation_checks_both_ends() {
        let t = Translate::Offset {
            host_base: 0x1000,
            len: 0x100,
        };
        assert_eq!(t.gpa_of(0x1000, 0x100), Ok(0));
        assert_eq!(t.gpa_of(0x10ff, 1), Ok(0xff));
        assert_eq!(t.gpa_of(0x10ff, 2), Err(Status::INVALID_ADDRESS));
        assert_eq!(t.gpa_of(0xfff, 1), Err(Status::INVALID_ADDRESS));
        assert_eq!(t.gpa_of(usize::MAX, 2), Err(Status::INVALID_ADDRESS));
        assert_eq!(t.gpa_of(0, 0), Ok(0));
        assert_eq!(t.addr_of(0x10, 0x10), Some(0x1010));
        assert_eq!(t.addr_of(0xf0, 0x11), None);
        assert_eq!(t.addr_of(u64::MAX, 2), None);
        assert_eq!(t.mmio_addr(0xfee0_0000), None);
    }

    #[test]
    fn identity_translation() {
        let t = Translate::Identity;
        assert_eq!(t.gpa_of(0x5000, 8), Ok(0x5000));
        assert_eq!(t.gpa_of(usize::MAX - 3, 8), Err(Status::INVALID_ADDRESS));
        let b = t.bounded(0x6000);
        assert_eq!(b, Translate::IdentityBounded { ram_len: 0x6000 });
        assert_eq!(b.gpa_of(0x5ff8, 8), Ok(0x5ff8));
        assert_eq!(b.gpa_of(0x5ff9, 8), Err(Status::INVALID_ADDRESS));
        assert_eq!(b.addr_of(0x5ff9, 8), None);
        assert_eq!(b.mmio_addr(0xfedf_f000), Some(0xfedf_f000));
        assert_eq!(Translate::Identity.bounded(0), Translate::Identity);
    }
}
