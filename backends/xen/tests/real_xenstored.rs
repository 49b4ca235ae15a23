//! The xenstore clients against a real xenstored: builds the static `xenstore-conformance`
//! binary, runs it in the dom0 of a real Xen hypervisor booted under QEMU
//! (`scripts/xen/run-in-dom0.sh`) and in an unprivileged domU created there, and asserts that
//! every check it reports passed.
//!
//! Needs the set-up of `scripts/xen/setup.sh` (CI runs it before the tests). Without it the test
//! says `SKIP: ... because ...` on stderr and passes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Checks the run must report as passed: privileged ones in dom0, then the unprivileged domU's.
const REQUIRED: &[&str] = &[
    "write_read_binary",
    "read_missing",
    "directory",
    "remove",
    "watch_events",
    "transaction_commit",
    "transaction_abort",
    "transaction_conflict",
    "permissions_round_trip",
    "invalid_requests",
    "domain_path",
    "xenstore_rs_cross_check",
    "xenbus_device",
    "guest_store_mapping",
    "domu_identity",
    "domu_permission_denied",
    "domu_own_subtree",
    "domu_quota_entries",
    "domu_quota_entry_size",
    "domu_quota_watches",
    "domu_quota_transactions",
    "domu_completed",
    "denied_requests_changed_nothing",
];

/// xenstored's per-domain quotas for the run: small, so that an unprivileged domain exhausts
/// them quickly. Passed both to xenstored and to the checks.
const QUOTAS: &[(&str, &str, &str)] = &[
    ("--entry-nb", "--quota-entries", "64"),
    ("--entry-size", "--quota-entry-size", "2048"),
    ("--watch-nb", "--quota-watches", "16"),
    ("--transaction", "--quota-transactions", "4"),
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tail(bytes: &[u8], lines: usize) -> String {
    let s = String::from_utf8_lossy(bytes);
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Runs `scripts/xen/setup.sh` without installing anything; `Err(reason)` when the set-up is not
/// there.
fn setup() -> Result<(), String> {
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
            "scripts/xen/setup.sh (without installing) failed: {}",
            tail(&out.stderr, 3)
        ))
    }
}

/// Builds the statically linked conformance binary and returns its path.
fn build_payload() -> PathBuf {
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
            "xenstore-conformance",
            "--target",
            "x86_64-unknown-linux-gnu",
        ])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "0")
        .env("CARGO_PROFILE_RELEASE_STRIP", "symbols")
        .output()
        .expect("run cargo build for the static conformance binary");
    assert!(
        out.status.success(),
        "building the static xenstore-conformance failed:\n{}",
        tail(&out.stderr, 30)
    );
    target_dir.join("x86_64-unknown-linux-gnu/release/xenstore-conformance")
}

/// Runs the binary in dom0 with extra xenstored arguments.
fn run_in_dom0(bin: &Path, xenstored_args: &[&str], args: &[&str]) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg(workspace_root().join("scripts/xen/run-in-dom0.sh"))
        .args(["--timeout", "240"]);
    for a in xenstored_args {
        cmd.args(["--xenstored-arg", a]);
    }
    cmd.arg(bin).args(args);
    cmd.output().expect("run scripts/xen/run-in-dom0.sh")
}

/// Parses `XSCHECK <name> PASS|FAIL <detail>` lines; a name seen twice is an error.
fn checks(stdout: &str) -> BTreeMap<String, (bool, String)> {
    let mut m = BTreeMap::new();
    for line in stdout.lines() {
        let Some(rest) = line.strip_prefix("XSCHECK ") else {
            continue;
        };
        let mut parts = rest.splitn(3, ' ');
        let name = parts.next().unwrap_or_default().to_string();
        let verdict = parts.next().unwrap_or_default();
        let detail = parts.next().unwrap_or_default().to_string();
        assert!(
            verdict == "PASS" || verdict == "FAIL",
            "malformed check line: {line}"
        );
        let old = m.insert(name.clone(), (verdict == "PASS", detail));
        assert!(old.is_none(), "check {name} reported twice");
    }
    m
}

/// Privileged checks in dom0 (socket and xenbus device), then permission denial and quota
/// exhaustion as an unprivileged PV domU that `xl` creates.
#[test]
fn real_xenstored_in_xen_dom0() {
    if let Err(why) = setup() {
        eprintln!("SKIP: real_xenstored_in_xen_dom0 because {why}");
        return;
    }
    let bin = build_payload();
    let mut xenstored_args = Vec::new();
    let mut args = vec!["--role", "all"];
    for (xenstored_opt, check_opt, value) in QUOTAS {
        xenstored_args.extend([*xenstored_opt, *value]);
        args.extend([*check_opt, *value]);
    }
    let out = run_in_dom0(&bin, &xenstored_args, &args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}{stderr}");
    let code = out.status.code();
    assert_ne!(code, Some(125), "dom0 did not run the checks:\n{stderr}");
    assert_ne!(code, Some(124), "the Xen VM timed out:\n{stderr}");

    let found = checks(&stdout);
    let failed: Vec<_> = found
        .iter()
        .filter(|(_, (pass, _))| !pass)
        .map(|(n, (_, d))| format!("{n}: {d}"))
        .collect();
    assert!(
        failed.is_empty(),
        "checks failed against real xenstored:\n{}",
        failed.join("\n")
    );
    for name in REQUIRED {
        assert!(found.contains_key(*name), "check {name} did not run");
    }
    assert!(
        stdout
            .lines()
            .any(|l| l == format!("XSSUMMARY passed={} failed=0", found.len())),
        "summary line missing or inconsistent"
    );
    assert_eq!(code, Some(0), "xenstore-conformance exit status");
}
