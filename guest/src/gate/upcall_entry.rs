//! Upcall entry code (being filled in).
