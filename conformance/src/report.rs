//! Certification reports: results of conformance cases turned into a verdict per spec clause,
//! written as a text table, JSON or JUnit XML.
//!
//! JSON shape (stable; fields are only ever added):
//! `{"backend": "mock", "abi_version": "1.0", "mode": "...", "summary": {"passed": N, "failed": N,
//! "skipped": N, "untested": N}, "clauses": [{"id": "BASE-1", "status": "passed", "detail": "..."}],
//! "cases": [...]}`

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::spec::{clause_sort_key, Clause};

/// The outcome of one conformance case, as reported by the suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaseOutcome {
    /// Every cited clause held.
    Passed,
    /// A cited clause did not hold.
    Failed,
    /// The case could not run on this backend.
    Skipped,
}

/// One case's typed result record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseRecord {
    /// The case's name, e.g. `console::write_rejects_bad_address`.
    pub name: String,
    /// The clause ids the case checks.
    pub clauses: Vec<String>,
    /// Its outcome.
    pub outcome: CaseOutcome,
    /// Why it failed or was skipped (empty when it passed, or a note).
    pub detail: String,
}

/// A clause's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClauseStatus {
    /// Every case citing the clause passed (at least one ran).
    Passed,
    /// A case citing the clause failed.
    Failed,
    /// Every case citing the clause was skipped.
    Skipped,
    /// No case cites the clause.
    Untested,
}

impl ClauseStatus {
    /// The lowercase name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ClauseStatus::Passed => "passed",
            ClauseStatus::Failed => "failed",
            ClauseStatus::Skipped => "skipped",
            ClauseStatus::Untested => "untested",
        }
    }
}

/// A clause's line in the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClauseResult {
    /// The clause id.
    pub id: String,
    /// The verdict.
    pub status: ClauseStatus,
    /// Which cases decided it and why.
    pub detail: String,
}

/// Counts per verdict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Clauses passed.
    pub passed: usize,
    /// Clauses failed.
    pub failed: usize,
    /// Clauses skipped.
    pub skipped: usize,
    /// Clauses no case checks.
    pub untested: usize,
}

/// A certification report for one backend in one execution mode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Backend name: `mock`, `kvm`, `xen` or a vendor's.
    pub backend: String,
    /// ABI version certified, `major.minor`.
    pub abi_version: String,
    /// Execution mode the suite ran in (e.g. `in-process`, `ring0`, `pv-ring3`).
    pub mode: String,
    /// Counts.
    pub summary: Summary,
    /// One line per clause of the spec, in spec order.
    pub clauses: Vec<ClauseResult>,
    /// The case records the verdicts were computed from.
    pub cases: Vec<CaseRecord>,
    /// Problems with the run itself (a case citing an unknown clause, a suite that did not
    /// finish). A report with problems is not a pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

impl Report {
    /// Computes verdicts for every clause of `spec` from `cases`.
    ///
    /// A clause is failed if any case citing it failed, passed if none failed and at least one
    /// passed, skipped if every citing case was skipped, untested if none cites it. Cases that
    /// cite ids missing from the spec are listed in `problems`.
    pub fn build(
        backend: &str,
        mode: &str,
        spec: &[Clause],
        cases: Vec<CaseRecord>,
        mut problems: Vec<String>,
    ) -> Report {
        let mut by_clause: BTreeMap<&str, Vec<&CaseRecord>> = BTreeMap::new();
        for c in &cases {
            for id in &c.clauses {
                if spec.iter().any(|s| &s.id == id) {
                    by_clause.entry(id.as_str()).or_default().push(c);
                } else {
                    problems.push(format!(
                        "case {} cites {id}, which the spec does not define",
                        c.name
                    ));
                }
            }
        }
        let mut summary = Summary::default();
        let mut clauses = Vec::with_capacity(spec.len());
        for s in spec {
            let citing = by_clause
                .get(s.id.as_str())
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let failed: Vec<&&CaseRecord> = citing
                .iter()
                .filter(|c| c.outcome == CaseOutcome::Failed)
                .collect();
            let passed: Vec<&&CaseRecord> = citing
                .iter()
                .filter(|c| c.outcome == CaseOutcome::Passed)
                .collect();
            let (status, detail) = if !failed.is_empty() {
                let d = failed
                    .iter()
                    .map(|c| format!("{}: {}", c.name, c.detail))
                    .collect::<Vec<_>>()
                    .join("; ");
                (ClauseStatus::Failed, d)
            } else if !passed.is_empty() {
                let d = passed
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                (ClauseStatus::Passed, d)
            } else if !citing.is_empty() {
                let d = citing
                    .iter()
                    .map(|c| format!("{}: {}", c.name, c.detail))
                    .collect::<Vec<_>>()
                    .join("; ");
                (ClauseStatus::Skipped, d)
            } else {
                (
                    ClauseStatus::Untested,
                    "no conformance case checks this clause".to_string(),
                )
            };
            match status {
                ClauseStatus::Passed => summary.passed += 1,
                ClauseStatus::Failed => summary.failed += 1,
                ClauseStatus::Skipped => summary.skipped += 1,
                ClauseStatus::Untested => summary.untested += 1,
            }
            clauses.push(ClauseResult {
                id: s.id.clone(),
                status,
                detail,
            });
        }
        Report {
            backend: backend.to_string(),
            abi_version: pvabi::ABI_VERSION.to_string(),
            mode: mode.to_string(),
            summary,
            clauses,
            cases,
            problems,
        }
    }

    /// Whether the backend is certified: no clause failed and the run had no problems.
    pub fn is_pass(&self) -> bool {
        self.summary.failed == 0 && self.problems.is_empty()
    }

    /// The clause ids with the given verdict, in spec order.
    pub fn ids_with(&self, status: ClauseStatus) -> Vec<&str> {
        self.clauses
            .iter()
            .filter(|c| c.status == status)
            .map(|c| c.id.as_str())
            .collect()
    }

    /// The report as pretty JSON in the documented shape.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// The report as a table a person reads.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "pvabi certification: backend {} ({}), ABI {}",
            self.backend, self.mode, self.abi_version
        );
        let _ = writeln!(
            s,
            "passed {}  failed {}  skipped {}  untested {}  => {}",
            self.summary.passed,
            self.summary.failed,
            self.summary.skipped,
            self.summary.untested,
            if self.is_pass() {
                "CERTIFIED"
            } else {
                "NOT CERTIFIED"
            }
        );
        for p in &self.problems {
            let _ = writeln!(s, "PROBLEM: {p}");
        }
        let _ = writeln!(s, "{:<10} {:<9} detail", "clause", "status");
        let mut rows: Vec<&ClauseResult> = self.clauses.iter().collect();
        rows.sort_by_key(|c| (c.status != ClauseStatus::Failed, clause_sort_key(&c.id)));
        for c in rows {
            let mut d = c.detail.replace('\n', " ");
            if d.len() > 100 {
                let mut cut = 100;
                while !d.is_char_boundary(cut) {
                    cut -= 1;
                }
                d.truncate(cut);
                d.push_str("...");
            }
            let _ = writeln!(s, "{:<10} {:<9} {}", c.id, c.status.as_str(), d);
        }
        s
    }

    /// The report as JUnit XML: one test suite, one test case per clause.
    pub fn to_junit(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
        let _ = writeln!(
            s,
            r#"<testsuites name="pvabi-conformance" tests="{}" failures="{}" skipped="{}">"#,
            self.clauses.len(),
            self.summary.failed,
            self.summary.skipped + self.summary.untested
        );
        let _ = writeln!(
            s,
            r#"  <testsuite name="{}" tests="{}" failures="{}" skipped="{}" errors="{}">"#,
            xml_escape(&format!("{} ({})", self.backend, self.mode)),
            self.clauses.len(),
            self.summary.failed,
            self.summary.skipped + self.summary.untested,
            self.problems.len()
        );
        for c in &self.clauses {
            let _ = write!(
                s,
                r#"    <testcase classname="pvabi.{}" name="{}""#,
                xml_escape(&self.backend),
                xml_escape(&c.id)
            );
            match c.status {
                ClauseStatus::Passed => {
                    let _ = writeln!(s, "/>");
                }
                ClauseStatus::Failed => {
                    let _ = writeln!(
                        s,
                        ">\n      <failure message=\"{}\"/>\n    </testcase>",
                        xml_escape(&c.detail)
                    );
                }
                ClauseStatus::Skipped | ClauseStatus::Untested => {
                    let _ = writeln!(
                        s,
                        ">\n      <skipped message=\"{}: {}\"/>\n    </testcase>",
                        c.status.as_str(),
                        xml_escape(&c.detail)
                    );
                }
            }
        }
        for p in &self.problems {
            let _ = writeln!(
                s,
                "    <testcase classname=\"pvabi.{}\" name=\"run\">\n      <error message=\"{}\"/>\n    </testcase>",
                xml_escape(&self.backend),
                xml_escape(p)
            );
        }
        let _ = writeln!(s, "  </testsuite>\n</testsuites>");
        s
    }
}

/// Escapes text for an XML attribute.
fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\t' => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clause(id: &str) -> Clause {
        Clause {
            id: id.into(),
            text: "t".into(),
            chapter: "c".into(),
        }
    }

    fn case(name: &str, clauses: &[&str], outcome: CaseOutcome) -> CaseRecord {
        CaseRecord {
            name: name.into(),
            clauses: clauses.iter().map(|s| s.to_string()).collect(),
            outcome,
            detail: format!("{name} detail"),
        }
    }

    #[test]
    fn verdicts_follow_the_rules() {
        let spec = [clause("A-1"), clause("A-2"), clause("A-3"), clause("A-4")];
        let cases = vec![
            case("p", &["A-1", "A-2"], CaseOutcome::Passed),
            case("f", &["A-2"], CaseOutcome::Failed),
            case("s", &["A-3"], CaseOutcome::Skipped),
            case("x", &["Z-9"], CaseOutcome::Passed),
        ];
        let r = Report::build("mock", "in-process", &spec, cases, Vec::new());
        assert_eq!(r.ids_with(ClauseStatus::Passed), ["A-1"]);
        assert_eq!(r.ids_with(ClauseStatus::Failed), ["A-2"]);
        assert_eq!(r.ids_with(ClauseStatus::Skipped), ["A-3"]);
        assert_eq!(r.ids_with(ClauseStatus::Untested), ["A-4"]);
        assert_eq!(
            r.summary,
            Summary {
                passed: 1,
                failed: 1,
                skipped: 1,
                untested: 1
            }
        );
        assert_eq!(r.problems.len(), 1, "unknown clause Z-9 is a problem");
        assert!(!r.is_pass());
        assert!(r.clauses[1].detail.contains("f detail"));
    }

    #[test]
    fn json_has_the_documented_shape_and_junit_is_escaped() {
        let spec = [clause("A-1")];
        let r = Report::build(
            "mock",
            "in-process",
            &spec,
            vec![case("p<&>", &["A-1"], CaseOutcome::Failed)],
            Vec::new(),
        );
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).expect("valid JSON");
        assert_eq!(v["backend"], "mock");
        assert_eq!(v["abi_version"], "1.0");
        assert_eq!(v["summary"]["failed"], 1);
        assert_eq!(v["summary"]["untested"], 0);
        assert_eq!(v["clauses"][0]["id"], "A-1");
        assert_eq!(v["clauses"][0]["status"], "failed");
        assert!(v["clauses"][0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("p<&>")));
        let x = r.to_junit();
        assert!(x.contains("p&lt;&amp;&gt;"));
        assert!(!x.contains("p<&>"));
        assert!(x.contains("<failure"));
        assert!(r.to_text().contains("NOT CERTIFIED"));
    }
}
