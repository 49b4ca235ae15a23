//! Certifying the Xen backend: the suite runs in an unprivileged domU of a real Xen hypervisor,
//! over the Xen transport (spec appendix B), served by the pvabi-xen backend in dom0.
//!
//! The set-up is the project's own: `scripts/xen/setup.sh` installs Xen 4.17, a Debian dom0
//! kernel and QEMU, and `scripts/xen/run-in-dom0.sh` boots Xen under QEMU (TCG) with a dom0
//! that runs one program. That program is pvabi-xen's `xen-certify` binary, built statically
//! by this runner with cargo (pvabi-xen is GPL-3.0-only, so this crate runs it rather than
//! linking it): in dom0 it serves the transport with HARNESS enabled and boots the domU that
//! runs the suite, then prints the HARNESS records it received as `XENREPORT` lines, which
//! this module turns back into records.
//!
//! The guest side is the suite in a Linux process of the domU, its calls carried by the
//! transport's ring (the suite's `xen-ring` platform): the ring is the transport's only gate, so
//! cases that need a call the ring refuses (`RING-6`) are reported skipped, as are those that
//! need what a one-vCPU guest without upcalls cannot do.

use std::path::{Path, PathBuf};
use std::process::Command;

use pvabi_host::lines::decode_field;
use pvabi_host::Report as HostRecord;

use crate::backend::{Availability, Certifiable, RunError, SuiteRun};
use crate::records::records_from_host;
use crate::report::{CaseOutcome, CaseRecord};

/// xenstored's configuration for a pvabi backend: a guest's STORE holds up to 1024 nodes
/// (`STORE-19`), and REMOVE of its whole subtree checks and removes them in one transaction,
/// beyond xenstored's default of 1024 nodes accessed per transaction.
pub const XENSTORED_ARGS: &[&str] = &["-Q", "transaction-nodes=8192"];

/// How long the whole Xen run (boot, domU, suite) may take.
pub const XEN_TIMEOUT_SECS: u64 = 900;

/// The Xen backend, certified inside Xen booted under QEMU.
#[derive(Clone, Debug, Default)]
pub struct XenBackend {
    /// Only run cases whose name starts with this.
    pub filter: Option<String>,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tail(bytes: &[u8], lines: usize) -> String {
    let s = String::from_utf8_lossy(bytes);
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Parses the `XENREPORT` lines of a run; other lines are ignored, malformed ones are
/// returned as problems.
pub fn parse_reports(stdout: &str) -> (Vec<HostRecord>, Vec<String>) {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for line in stdout.lines() {
        let Some(rest) = line.strip_prefix("XENREPORT ") else {
            continue;
        };
        let parsed = HostRecord::from_line(rest);
        match parsed {
            Some(r) => out.push(r),
            None => problems.push(format!("malformed record line: {line}")),
        }
    }
    (out, problems)
}

impl XenBackend {
    fn setup(&self) -> Result<(), String> {
        if !cfg!(all(target_arch = "x86_64", target_os = "linux")) {
            return Err("the Xen set-up needs an x86_64 Linux host".into());
        }
        let out = Command::new("bash")
            .arg(workspace_root().join("scripts/xen/setup.sh"))
            .env("PVABI_XEN_NO_INSTALL", "1")
            .output()
            .map_err(|e| format!("cannot run scripts/xen/setup.sh: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "the Xen set-up is missing (run scripts/xen/setup.sh): {}",
                tail(&out.stderr, 2)
            ))
        }
    }

    /// Builds the static `xen-certify` payload and returns its path.
    fn build_payload(&self) -> Result<PathBuf, RunError> {
        let target_dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target"))
            .join("xen-payload");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .current_dir(workspace_root())
            .args([
                "build",
                "--release",
                "-p",
                "pvabi-xen",
                "--bin",
                "xen-certify",
                "--target",
                "x86_64-unknown-linux-gnu",
            ])
            .env("CARGO_TARGET_DIR", &target_dir)
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .env("CARGO_PROFILE_RELEASE_DEBUG", "0")
            .env("CARGO_PROFILE_RELEASE_STRIP", "symbols")
            .output()
            .map_err(|e| RunError::Backend(format!("cannot run cargo: {e}")))?;
        if !out.status.success() {
            return Err(RunError::Backend(format!(
                "building the static xen-certify failed:\n{}",
                tail(&out.stderr, 20)
            )));
        }
        Ok(target_dir.join("x86_64-unknown-linux-gnu/release/xen-certify"))
    }
}

impl Certifiable for XenBackend {
    fn name(&self) -> String {
        "xen".into()
    }
    fn mode(&self) -> String {
        "xen-ring".into()
    }
    fn availability(&self) -> Availability {
        match self.setup() {
            Ok(()) => Availability::Available,
            Err(why) => Availability::Unavailable(why),
        }
    }
    fn run_suite(&self) -> Result<SuiteRun, RunError> {
        let bin = self.build_payload()?;
        let mut cmd = Command::new("bash");
        cmd.arg(workspace_root().join("scripts/xen/run-in-dom0.sh"))
            .args(["--timeout", &XEN_TIMEOUT_SECS.to_string()]);
        for a in XENSTORED_ARGS {
            cmd.args(["--xenstored-arg", a]);
        }
        cmd.arg(&bin).args(["--role", "dom0"]);
        if let Some(f) = &self.filter {
            cmd.args(["--filter", f]);
        }
        let out = cmd
            .output()
            .map_err(|e| RunError::Backend(format!("cannot run run-in-dom0.sh: {e}")))?;
        match out.status.code() {
            Some(124) => return Err(RunError::Timeout(XEN_TIMEOUT_SECS)),
            Some(125) => {
                return Err(RunError::Backend(format!(
                    "dom0 did not run the payload:\n{}",
                    tail(&out.stderr, 20)
                )))
            }
            _ => {}
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let (records, mut problems) = parse_reports(&stdout);
        let mut run = records_from_host(records);
        // The cases that end the guest (POWER.SHUTDOWN, VCPU.STOP, faults) cannot run here:
        // the ring refuses the calls that end a guest (RING-6), and on Xen the guest ends
        // itself with SCHEDOP_shutdown, outside pvabi.
        for case in crate::records::terminal_cases(self.filter.as_deref()) {
            run.cases.push(CaseRecord {
                name: case.name.to_string(),
                clauses: crate::records::terminal_clauses(case),
                outcome: CaseOutcome::Skipped,
                detail: "a case that ends the guest: the transport's only gate, the ring, \
                         cannot carry the calls that end a guest (RING-6)"
                    .into(),
            });
        }
        for line in stdout.lines() {
            if let Some(fact) = line.strip_prefix("XENCERT ") {
                let mut kv = fact.splitn(2, ' ');
                let (k, v) = (kv.next().unwrap_or(""), kv.next().unwrap_or(""));
                let suspect = matches!(k, "backend_error" | "domu_error" | "domu_stderr")
                    || (k == "domu_exit" && v != "0");
                if suspect {
                    let v = decode_field(v).unwrap_or_else(|| v.to_string());
                    problems.push(format!("{k}: {v}"));
                }
            }
        }
        if !out.status.success() {
            problems.push(format!(
                "the dom0 payload exited with {:?}: {}",
                out.status.code(),
                tail(&out.stderr, 5)
            ));
        }
        run.problems.extend(problems);
        Ok(run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvabi::harness::Outcome;

    #[test]
    fn report_lines_round_trip() {
        let line = "XENREPORT 1 0 424153452d312c424153452d32 626173653a3a78 -\n\
                    XENREPORT 3 0 - - -\nnoise\nXENREPORT 2 zz - - -";
        let (r, p) = parse_reports(line);
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(r[0].outcome, Outcome::FAILED);
        assert_eq!(r[0].clauses, vec!["BASE-1", "BASE-2"]);
        assert_eq!(r[0].name, "base::x");
        assert_eq!(r[0].detail, "");
        assert_eq!(r[1].outcome, Outcome::END);
        assert!(r[1].clauses.is_empty());
        assert_eq!(p.len(), 1, "{p:?}");
    }
}
