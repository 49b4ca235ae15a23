#![no_main]
//! Store operation sequences against a model.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pvabi_fuzz::logic::store::run(data);
});
