//! # conformance — certify a pvabi backend against the specification
//!
//! The conformance suite runs *inside the guest* (the no_std crate in `conformance/suite`) and
//! reports typed result records over the HARNESS service (spec appendix A). This crate is the
//! host side: it runs the suite against each backend available on the machine, collects the
//! records and turns them into a certification report in which every clause id of the
//! specification is passed, failed, skipped or untested.

pub mod backend;
pub mod kvm;
pub mod mock;
pub mod records;
pub mod report;
pub mod spec;
pub mod xen;

pub use backend::{certify, Availability, Certifiable, Certification, RunError, SuiteRun};
pub use kvm::{image_path, KvmBackend};
pub use mock::MockBackend;
pub use report::{CaseOutcome, CaseRecord, ClauseResult, ClauseStatus, Report, Summary};
pub use spec::{clauses, Clause};
pub use xen::XenBackend;

/// The backends besides the mock that this build knows (KVM in both execution modes, ...),
/// each of which reports itself unavailable, with the reason, where it cannot run.
pub fn hardware_backends() -> Vec<Box<dyn Certifiable>> {
    vec![
        Box::new(kvm::KvmBackend::new(pvabi_kvm::Mode::Ring0)),
        Box::new(kvm::KvmBackend::new(pvabi_kvm::Mode::PvRing3)),
    ]
}
