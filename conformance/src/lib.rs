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

pub use backend::{certify, Availability, Certifiable, Certification, RunError, SuiteRun};
pub use kvm::{image_path, KvmBackend};
pub use mock::MockBackend;
pub use report::{CaseOutcome, CaseRecord, ClauseResult, ClauseStatus, Report, Summary};
pub use spec::{clauses, Clause};

/// The backends besides the mock that this build knows (KVM in both execution modes, ...),
/// each of which reports itself unavailable, with the reason, where it cannot run.
pub fn hardware_backends() -> Vec<Box<dyn Certifiable>> {
    vec![
        Box::new(kvm::KvmBackend::new(pvabi_kvm::Mode::Ring0)),
        Box::new(kvm::KvmBackend::new(pvabi_kvm::Mode::PvRing3)),
    ]
}

/// The Xen backend as the certification runner sees it.
///
/// Certifying Xen needs the conformance image running as a Xen guest with the pvabi-xen
/// backend serving it in dom0 (see `backends/xen` and `scripts/xen/`); until that path exists
/// the backend reports itself unavailable with the reason, so nothing passes silently.
#[derive(Clone, Debug, Default)]
pub struct XenBackend;

impl Certifiable for XenBackend {
    fn name(&self) -> String {
        "xen".into()
    }
    fn mode(&self) -> String {
        "pvh".into()
    }
    fn availability(&self) -> Availability {
        Availability::Unavailable(
            "no Xen guest runner yet: the conformance image does not boot as a Xen PVH/HVM domU \
             with the pvabi-xen backend in dom0 (see the Xen issue)"
                .into(),
        )
    }
    fn run_suite(&self) -> Result<SuiteRun, RunError> {
        Err(RunError::Backend(
            "the Xen guest runner does not exist yet".into(),
        ))
    }
}
