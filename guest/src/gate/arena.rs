//! A bump arena over a range of guest RAM, for guests (in particular in-process ones, whose
//! stacks and statics are not in guest RAM) that need shared areas and buffers the host can
//! address.

use core::sync::atomic::{AtomicUsize, Ordering};

/// Hands out non-overlapping, never-freed pieces of one memory range.
///
/// # Invariants
///
/// `[next, end)` is memory valid for reads and writes for the rest of the program that
/// nothing but this arena hands out; `next` only grows, so pieces never overlap.
#[derive(Debug)]
pub struct GuestArena {
    next: AtomicUsize,
    end: usize,
}

impl GuestArena {
    /// An arena over `[base, base + len)`.
    ///
    /// # Safety
    ///
    /// The range must be memory valid for reads and writes (mapped, writable) for the rest of
    /// the program, and must not be accessed other than through references this arena returns
    /// (the host accessing it as guest memory on behalf of calls is expected). It may be
    /// uninitialised. `base + len` must not overflow.
    pub const unsafe fn new(base: usize, len: usize) -> Self {
        Self {
            next: AtomicUsize::new(base),
            end: base.wrapping_add(len),
        }
    }

    /// Bytes not handed out yet.
    pub fn remaining(&self) -> usize {
        self.end.saturating_sub(self.next.load(Ordering::Relaxed))
    }

    fn carve(&self, size: usize, align: usize) -> Option<usize> {
        let align = align.max(1);
        if !align.is_power_of_two() {
            return None;
        }
        let mut cur = self.next.load(Ordering::Relaxed);
        loop {
            let start = cur.checked_add(align - 1)? & !(align - 1);
            let stop = start.checked_add(size)?;
            if stop > self.end {
                return None;
            }
            match self
                .next
                .compare_exchange_weak(cur, stop, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Some(start),
                Err(now) => cur = now,
            }
        }
    }

    /// Moves `value` into the arena; `None` when it does not fit.
    pub fn alloc<T>(&self, value: T) -> Option<&'static mut T> {
        let at = self.carve(core::mem::size_of::<T>(), core::mem::align_of::<T>())?;
        let p = core::ptr::with_exposed_provenance_mut::<T>(at);
        // SAFETY: `carve` returned `size_of::<T>()` bytes at an address aligned for `T`,
        // inside the arena's range (invariant: valid for reads and writes for the rest of the
        // program) and handed out to no one else (`next` moved past them atomically). Writing
        // `value` initialises them, after which a unique `&'static mut T` is sound.
        unsafe {
            p.write(value);
            Some(&mut *p)
        }
    }

    /// `len` zeroed bytes aligned to `align` (a power of two); `None` when they do not fit.
    pub fn alloc_bytes(&self, len: usize, align: usize) -> Option<&'static mut [u8]> {
        let at = self.carve(len, align)?;
        let p = core::ptr::with_exposed_provenance_mut::<u8>(at);
        // SAFETY: `carve` returned `len` bytes inside the arena's range, valid for writes for
        // the rest of the program and handed out to no one else; `write_bytes` initialises
        // them, so a unique `&'static mut [u8]` of `len` bytes is sound (`len` bytes fit, so
        // `len <= isize::MAX`).
        unsafe {
            p.write_bytes(0, len);
            Some(core::slice::from_raw_parts_mut(p, len))
        }
    }
}
