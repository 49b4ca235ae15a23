#![no_main]
//! MULTICALL.EXECUTE against entry-by-entry execution on a twin guest.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pvabi_fuzz::logic::multicall::run(data, pvabi_fuzz::ram(0), pvabi_fuzz::ram(1));
});
