//! GRANT cases (see the spec chapter with the clause prefix of this module's cases).

use crate::Case;

/// The chapter's cases.
pub const CASES: &[Case] = &[];
