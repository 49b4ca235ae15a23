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

/// A `static` whose contents can be borrowed mutably exactly once, for the rest of the
/// program: a way to hand a stack, a page or a multicall buffer to the shim as
/// `&'static mut T` without `static mut`.
///
/// # Examples
///
/// ```
/// use pvabi_guest::gate::arena::TakeOnce;
/// use pvabi_guest::vcpu::VcpuStack;
/// static STACK: TakeOnce<VcpuStack<4096>> = TakeOnce::new(VcpuStack::new());
/// let s: &'static mut VcpuStack<4096> = STACK.take().unwrap();
/// assert_eq!(s.0.len(), 4096);
/// assert!(STACK.take().is_none());
/// ```
///
/// # Invariants
///
/// `value` is accessed only through the single `&'static mut T` that the one `take` which
/// flipped `taken` from false to true returned.
#[derive(Debug)]
pub struct TakeOnce<T> {
    taken: core::sync::atomic::AtomicBool,
    value: core::cell::UnsafeCell<T>,
}

// SAFETY: the only access to `value` is the unique `&mut T` handed out once (type invariant),
// which may be sent to and used on another thread when `T: Send`; `taken` is atomic.
unsafe impl<T: Send> Sync for TakeOnce<T> {}

impl<T> TakeOnce<T> {
    /// Wraps `value`.
    pub const fn new(value: T) -> Self {
        Self {
            taken: core::sync::atomic::AtomicBool::new(false),
            value: core::cell::UnsafeCell::new(value),
        }
    }

    /// The contents, mutably, the first time; `None` ever after.
    // The `taken` flag makes the returned borrow unique, which is what the lint asks about.
    #[allow(clippy::mut_from_ref)]
    pub fn take(&'static self) -> Option<&'static mut T> {
        if self.taken.swap(true, Ordering::AcqRel) {
            return None;
        }
        // SAFETY: this call flipped `taken` from false to true, which happens once in the
        // program, so no other reference to `value` exists or will be made (type invariant);
        // `self` is `'static`, so the borrow may be too.
        Some(unsafe { &mut *self.value.get() })
    }
}
