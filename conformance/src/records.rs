//! Turning the host's HARNESS records into case records.

use pvabi::harness::Outcome;
use pvabi_host::Report as HostRecord;

use crate::backend::SuiteRun;
use crate::report::{CaseOutcome, CaseRecord};

/// Converts the records a `pvabi-host` Vm collected into a suite run.
pub fn records_from_host(records: Vec<HostRecord>) -> SuiteRun {
    let mut run = SuiteRun::default();
    for r in records {
        let outcome = match r.outcome {
            Outcome::PASSED => CaseOutcome::Passed,
            Outcome::FAILED => CaseOutcome::Failed,
            Outcome::SKIPPED => CaseOutcome::Skipped,
            Outcome::END => {
                run.finished = true;
                continue;
            }
            _ if run.finished => continue,
            other => {
                run.problems.push(format!(
                    "record {} has an unknown outcome {other:?}",
                    r.name
                ));
                continue;
            }
        };
        if run.finished {
            // Spec HAR-12: records after the first END record are ignored.
            continue;
        }
        run.cases.push(CaseRecord {
            name: r.name,
            clauses: r.clauses,
            outcome,
            detail: r.detail,
        });
    }
    run
}

impl SuiteRun {
    /// Merges the run of one features-off case (a guest with optional features cleared) into
    /// this run: its records get [`crate::mock::FEATURES_OFF_SUFFIX`] appended, and a run that
    /// reported no case or no END record is a problem.
    pub fn merge_features_off(&mut self, case: &str, off: SuiteRun) {
        if off.cases.is_empty() {
            self.problems.push(format!(
                "the features-off run of {case} reported no case: the suite has no such case"
            ));
        }
        if !off.finished {
            self.problems.push(format!(
                "the features-off run of {case} did not report its END record"
            ));
        }
        self.problems.extend(
            off.problems
                .into_iter()
                .map(|p| format!("features-off run of {case}: {p}")),
        );
        self.cases.extend(off.cases.into_iter().map(|mut c| {
            c.name.push_str(crate::mock::FEATURES_OFF_SUFFIX);
            c
        }));
    }
}

/// How a guest running a terminal case ended, as the host observed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    /// POWER.SHUTDOWN (or an equivalent end the backend maps onto it).
    Shutdown {
        /// The reason.
        reason: pvabi::power::ShutdownReason,
        /// The code.
        code: u64,
        /// The crash report read from the registered buffer: (code, message).
        crash: Option<(u64, String)>,
    },
    /// The guest did not end in time.
    Hung,
    /// Anything else (described).
    Other(String),
}

/// The suite's terminal cases whose name starts with `filter` (all of them without one).
pub fn terminal_cases(
    filter: Option<&str>,
) -> impl Iterator<Item = &'static pvabi_conformance_suite::TerminalCase> + '_ {
    pvabi_conformance_suite::terminal_cases()
        .filter(move |c| filter.is_none_or(|f| c.name.starts_with(f)))
}

/// The clause ids a terminal case cites.
pub fn terminal_clauses(case: &pvabi_conformance_suite::TerminalCase) -> Vec<String> {
    case.clauses
        .split(',')
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect()
}

/// The verdict on a terminal case from how the guest ended.
pub fn judge_terminal(
    case: &pvabi_conformance_suite::TerminalCase,
    observed: &Observed,
) -> CaseRecord {
    let exp = case.expect;
    let verdict: Result<(), String> = match observed {
        Observed::Shutdown {
            reason,
            code,
            crash,
        } => {
            if *reason != exp.reason || *code != exp.code {
                Err(format!(
                    "expected shutdown reason {} code {}, observed reason {} code {}",
                    exp.reason.0, exp.code, reason.0, code
                ))
            } else {
                match (exp.crash, crash) {
                    (None, _) => Ok(()),
                    (Some((c, m)), Some((oc, om))) if c == *oc && m == om => Ok(()),
                    (Some((c, m)), got) => Err(format!(
                        "expected crash report ({c}, {m:?}), host read {got:?}"
                    )),
                }
            }
        }
        Observed::Hung => Err("the guest did not end".into()),
        Observed::Other(s) => Err(format!("the guest ended unexpectedly: {s}")),
    };
    CaseRecord {
        name: case.name.to_string(),
        clauses: terminal_clauses(case),
        outcome: if verdict.is_ok() {
            CaseOutcome::Passed
        } else {
            CaseOutcome::Failed
        },
        detail: verdict
            .err()
            .unwrap_or_else(|| "observed by the host".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str, outcome: Outcome) -> HostRecord {
        HostRecord {
            outcome,
            clauses: vec!["A-1".into()],
            name: name.into(),
            detail: String::new(),
            vcpu: 0,
        }
    }

    #[test]
    fn records_after_end_are_ignored_and_end_marks_completion() {
        let run = records_from_host(vec![
            rec("a", Outcome::PASSED),
            rec("", Outcome::END),
            rec("late", Outcome::FAILED),
            rec("odd", Outcome(77)),
        ]);
        assert!(run.finished);
        assert_eq!(run.cases.len(), 1);
        assert_eq!(run.cases[0].name, "a");
        assert!(run.problems.is_empty(), "{:?}", run.problems);
        let unfinished = records_from_host(vec![rec("a", Outcome::PASSED), rec("b", Outcome(9))]);
        assert!(!unfinished.finished);
        assert_eq!(unfinished.problems.len(), 1);
    }
}
