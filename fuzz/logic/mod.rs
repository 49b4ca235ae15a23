//! The bodies of the fuzz targets, shared by the cargo-fuzz binaries (`fuzz/fuzz_targets`)
//! and the stable smoke test (`backends/host/tests/fuzz_smoke.rs`), so both run the same
//! checks.

pub mod dispatch;
pub mod env;
pub mod input;
pub mod multicall;
pub mod seeds;
pub mod store;
