//! CONSOLE service (spec chapter 5, clauses `CONS-*`): a byte stream from the guest to the host
//! and back.

pub use crate::call::{CONSOLE_READ, CONSOLE_WRITE, CONSOLE_WRITE_BYTE};

/// Largest length one CONSOLE.WRITE or CONSOLE.READ accepts (spec `CONS-2`); longer is
/// INVALID_PARAM.
pub const MAX_TRANSFER: u64 = 4096;
