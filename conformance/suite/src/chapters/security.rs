//! SECURITY cases (see the spec chapter with the clause prefix of this module's cases).

use crate::{Case, GuestEntry, TerminalCase};

/// The chapter's cases.
pub const CASES: &[Case] = &[];

/// The chapter's terminal cases (each ends the guest; see [`crate::TerminalCase`]).
pub const TERMINAL: &[TerminalCase] = &[];
/// Guest functions this chapter's cases pass as vCPU entries or callbacks.
pub const FUNCTIONS: &[GuestEntry] = &[];
