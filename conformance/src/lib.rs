//! pvabi conformance suite runner and certification reports
