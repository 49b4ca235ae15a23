//! `pvabi-guest-capi`: the C ABI of `pvabi-guest` ([`pvabi_guest::capi`]) as a static
//! library, `libpvabi_guest_capi.a`, for guest kernels written in C.
//!
//! A C kernel includes `guest/include/pvabi.h` (constants, layouts, inline gates) and
//! `guest/include/pvabi_shim.h` (the prototypes of the `pvabi_*` functions) and links this
//! library. The library is freestanding: it needs no C library, only `memcpy`, `memmove`,
//! `memset`, `memcmp` and `bcmp`, which a kernel provides anyway. It also exports the shim's
//! upcall entries (`pvabi_upcall_vector_entry`, `pvabi_upcall_callback_entry`) and the return
//! trap of started vCPUs.
//!
//! A panic in the shim (none is expected: the shim does not panic on host answers) shuts the
//! guest down with reason CRASH and code `0x434e4150` ("PANC"), or spins when no handle was
//! discovered.
#![no_std]

pub use pvabi_guest::capi;
use pvabi_guest::pvabi::power::ShutdownReason;

/// Crash code of a panic inside the shim: "PANC" little-endian.
const PANIC_CODE: u64 = u32::from_le_bytes(*b"PANC") as u64;

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    let _ = capi::pvabi_shutdown(ShutdownReason::CRASH.0, PANIC_CODE);
    loop {
        core::hint::spin_loop();
    }
}
