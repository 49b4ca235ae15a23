#![no_main]
//! Arbitrary gate registers and guest memory against a pvabi-host `Vm`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pvabi_fuzz::logic::dispatch::run(data, pvabi_fuzz::ram(0));
});
