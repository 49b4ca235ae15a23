//! What a backend implements to be certified, and the certification driver.
//!
//! A vendor certifies their own backend from their own crate by implementing [`Certifiable`]
//! (run the conformance suite on your hypervisor with HARNESS enabled, return the records the
//! guest reported) and calling [`certify`], or with the [`certify_backend!`](crate::certify_backend)
//! macro, which writes the `#[test]` for them.
//!
//! ```no_run
//! use conformance::{Availability, Certifiable, RunError, SuiteRun};
//!
//! struct MyHypervisor;
//!
//! impl Certifiable for MyHypervisor {
//!     fn name(&self) -> String { "my-hv".into() }
//!     fn mode(&self) -> String { "ring0".into() }
//!     fn availability(&self) -> Availability { Availability::Available }
//!     fn run_suite(&self) -> Result<SuiteRun, RunError> {
//!         // Boot `conformance::image_path()` on your hypervisor with HARNESS enabled and
//!         // return the records HARNESS.REPORT received, in order.
//!         Err(RunError::Backend("not wired up yet".into()))
//!     }
//! }
//!
//! conformance::certify_backend!(my_hv_is_certified, MyHypervisor);
//! ```

use crate::report::{CaseRecord, Report};
use crate::spec::clauses;

/// Whether a backend can run on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Availability {
    /// It can run here.
    Available,
    /// It cannot run here; the reason says why (printed loudly, never a silent pass).
    Unavailable(String),
}

/// Why a suite run produced no usable records.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The backend failed to start or run the guest.
    #[error("backend error: {0}")]
    Backend(String),
    /// The guest did not finish the suite in time.
    #[error("the suite did not finish within {0} s")]
    Timeout(u64),
}

/// A backend that can be certified.
pub trait Certifiable {
    /// The backend's name in reports (`mock`, `kvm`, `xen`, a vendor's).
    fn name(&self) -> String;
    /// The execution mode the suite runs in (`in-process`, `ring0`, `pv-ring3`, ...).
    fn mode(&self) -> String;
    /// Whether the backend can run here.
    fn availability(&self) -> Availability;
    /// Runs the whole suite with HARNESS enabled and returns the case records in order. The
    /// run must end with the suite's END record; a run without it is reported as a problem.
    ///
    /// # Errors
    ///
    /// When the backend could not run the guest at all.
    fn run_suite(&self) -> Result<SuiteRun, RunError>;
}

/// What a suite run returned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SuiteRun {
    /// The case records, in the order they were reported.
    pub cases: Vec<CaseRecord>,
    /// Whether the END record arrived.
    pub finished: bool,
    /// Anything the backend noticed that makes the run suspect (a guest crash, console
    /// noise, a timeout after some records).
    pub problems: Vec<String>,
}

/// The outcome of trying to certify one backend.
#[derive(Debug)]
pub enum Certification {
    /// The suite ran; the report says how it went.
    Ran(Box<Report>),
    /// The backend is not available here.
    Skipped {
        /// Backend name.
        backend: String,
        /// Why.
        reason: String,
    },
}

/// Runs the suite on `backend` and builds its report against the embedded specification.
pub fn certify(backend: &dyn Certifiable) -> Certification {
    if let Availability::Unavailable(reason) = backend.availability() {
        return Certification::Skipped {
            backend: backend.name(),
            reason,
        };
    }
    let spec = clauses();
    let (cases, mut problems) = match backend.run_suite() {
        Ok(run) => {
            let mut p = run.problems;
            if !run.finished {
                p.push("the suite did not report its END record: the run is incomplete".into());
            }
            (run.cases, p)
        }
        Err(e) => (Vec::new(), vec![e.to_string()]),
    };
    if cases.is_empty() && problems.is_empty() {
        problems.push("the suite reported no case".into());
    }
    problems.dedup();
    Certification::Ran(Box::new(Report::build(
        &backend.name(),
        &backend.mode(),
        &spec,
        cases,
        problems,
    )))
}

/// Writes a `#[test]` that certifies a backend and fails unless every clause passed or was
/// skipped with a reason; prints the text report. A backend unavailable here is reported as
/// skipped on standard error, loudly.
#[macro_export]
macro_rules! certify_backend {
    ($test_name:ident, $backend:expr) => {
        #[test]
        fn $test_name() {
            match $crate::certify(&$backend) {
                $crate::Certification::Ran(report) => {
                    println!("{}", report.to_text());
                    assert!(
                        report.is_pass(),
                        "backend {} is not certified: {} clause(s) failed, problems: {:?}",
                        report.backend,
                        report.summary.failed,
                        report.problems
                    );
                }
                $crate::Certification::Skipped { backend, reason } => {
                    eprintln!("SKIP: backend {backend} not certified here: {reason}");
                }
            }
        }
    };
}
