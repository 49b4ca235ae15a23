//! STORE cases (see the spec chapter with the clause prefix of this module's cases).

use crate::{Case, GuestEntry};

/// The chapter's cases.
pub const CASES: &[Case] = &[];

/// Guest functions this chapter's cases pass as vCPU entries or callbacks.
pub const FUNCTIONS: &[GuestEntry] = &[];
