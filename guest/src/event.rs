//! Service wrapper (being filled in).
