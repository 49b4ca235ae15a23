//! Memory intrinsics for bare-metal pvabi guest images.
//!
//! On `x86_64-unknown-linux-gnu` the compiler expects `memcpy`, `memmove`, `memset`, `memcmp`
//! and `bcmp` from the C library, which a guest image (linked with `-nostdlib`) does not have.
//! A guest links this crate (`extern crate pvabi_image_rt;` or `use pvabi_image_rt as _;`) to
//! get them. `#![no_builtins]` keeps the compiler from turning these loops back into calls to
//! themselves.
#![no_std]
#![no_builtins]
#![deny(missing_docs)]

/// Copies `n` bytes from `src` to `dst` (regions must not overlap).
///
/// # Safety
///
/// `dst` must be valid for `n` bytes of writes and `src` for `n` bytes of reads, and the two
/// regions must not overlap (the C contract of `memcpy`).
#[no_mangle]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: `rep movsb` copies RCX bytes from [RSI] to [RDI] upwards (DF is clear per the
    // SysV ABI at every call boundary); the caller guarantees both ranges are valid and
    // disjoint. RDI, RSI, RCX are declared clobbered.
    unsafe {
        core::arch::asm!(
            "rep movsb",
            inout("rcx") n => _,
            inout("rdi") dst => _,
            inout("rsi") src => _,
            options(nostack, preserves_flags)
        );
    }
    dst
}

/// Copies `n` bytes from `src` to `dst`; the regions may overlap.
///
/// # Safety
///
/// `dst` must be valid for `n` bytes of writes and `src` for `n` bytes of reads.
#[no_mangle]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize) <= (src as usize) || (dst as usize) >= (src as usize).wrapping_add(n) {
        let mut i = 0;
        while i < n {
            // SAFETY: i < n, so both offsets are inside the ranges the caller guarantees;
            // copying upwards is correct when dst is below src or the ranges are disjoint.
            unsafe { *dst.add(i) = *src.add(i) };
            i += 1;
        }
    } else {
        let mut i = n;
        while i > 0 {
            i -= 1;
            // SAFETY: i < n as above; copying downwards is correct when dst is above src.
            unsafe { *dst.add(i) = *src.add(i) };
        }
    }
    dst
}

/// Sets `n` bytes at `dst` to the low byte of `c`.
///
/// # Safety
///
/// `dst` must be valid for `n` bytes of writes.
#[no_mangle]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: `rep stosb` stores AL into RCX bytes from [RDI] upwards (DF clear per the SysV
    // ABI); the caller guarantees the range is valid. RDI and RCX are declared clobbered.
    unsafe {
        core::arch::asm!(
            "rep stosb",
            inout("rcx") n => _,
            inout("rdi") dst => _,
            in("al") c as u8,
            options(nostack, preserves_flags)
        );
    }
    dst
}

/// Compares `n` bytes; returns <0, 0 or >0 like C's `memcmp`.
///
/// # Safety
///
/// `a` and `b` must be valid for `n` bytes of reads.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: i < n, inside both ranges the caller guarantees.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

/// Returns 0 when `n` bytes are equal, nonzero otherwise.
///
/// # Safety
///
/// `a` and `b` must be valid for `n` bytes of reads.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the caller's guarantee is exactly memcmp's.
    unsafe { memcmp(a, b, n) }
}

/// Unwinding personality routine. The precompiled `core` of a `-gnu` target references it;
/// guest images are built with `panic = "abort"` and never unwind, so it is never called.
#[no_mangle]
pub extern "C" fn rust_eh_personality() {}
