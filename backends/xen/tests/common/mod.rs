//! What the tests against real Xen share: the set-up check, static payload builds, running a
//! payload in dom0 under QEMU, and the typed check lines payloads print.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn tail(bytes: &[u8], lines: usize) -> String {
    let s = String::from_utf8_lossy(bytes);
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Runs `scripts/xen/setup.sh` without installing anything; `Err(reason)` when the set-up is not
/// there.
pub fn setup() -> Result<(), String> {
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

/// Builds a statically linked binary of pvabi-xen (it runs in dom0's and domUs' initramfs)
/// and returns its path.
pub fn build_payload(name: &str) -> PathBuf {
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
            name,
            "--target",
            "x86_64-unknown-linux-gnu",
        ])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "0")
        .env("CARGO_PROFILE_RELEASE_STRIP", "symbols")
        .output()
        .expect("run cargo build for a static binary");
    assert!(
        out.status.success(),
        "building the static {name} failed:\n{}",
        tail(&out.stderr, 30)
    );
    target_dir
        .join("x86_64-unknown-linux-gnu/release")
        .join(name)
}

/// Runs the binary in dom0 with extra xenstored arguments.
pub fn run_in_dom0(bin: &Path, xenstored_args: &[&str], args: &[&str]) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg(workspace_root().join("scripts/xen/run-in-dom0.sh"))
        .args(["--timeout", "240"]);
    for a in xenstored_args {
        cmd.args(["--xenstored-arg", a]);
    }
    cmd.arg(bin).args(args);
    cmd.output().expect("run scripts/xen/run-in-dom0.sh")
}

/// Parses `<prefix> <name> PASS|FAIL <detail>` lines; a name seen twice is an error.
pub fn checks(stdout: &str, prefix: &str) -> BTreeMap<String, (bool, String)> {
    checks_words(stdout, &format!("{prefix} "), "PASS", "FAIL")
}

/// Parses `<prefix><name> <pass>|<fail> <detail>` lines; a name seen twice is an error.
pub fn checks_words(
    stdout: &str,
    prefix: &str,
    pass: &str,
    fail: &str,
) -> BTreeMap<String, (bool, String)> {
    let mut m = BTreeMap::new();
    for line in stdout.lines() {
        let Some(rest) = line.strip_prefix(prefix) else {
            continue;
        };
        let mut parts = rest.splitn(3, ' ');
        let name = parts.next().unwrap_or_default().to_string();
        let verdict = parts.next().unwrap_or_default();
        let detail = parts.next().unwrap_or_default().to_string();
        assert!(
            verdict == pass || verdict == fail,
            "malformed check line: {line}"
        );
        let old = m.insert(name.clone(), (verdict == pass, detail));
        assert!(old.is_none(), "check {name} reported twice");
    }
    m
}

/// Asserts that every check in `found` passed and that each of `required` ran.
pub fn assert_all_passed(kind: &str, found: &BTreeMap<String, (bool, String)>, required: &[&str]) {
    let failed: Vec<_> = found
        .iter()
        .filter(|(_, (pass, _))| !pass)
        .map(|(n, (_, d))| format!("{n}: {d}"))
        .collect();
    assert!(
        failed.is_empty(),
        "{kind} checks failed under real Xen:\n{}",
        failed.join("\n")
    );
    for name in required {
        assert!(found.contains_key(*name), "{kind} check {name} did not run");
    }
}

/// Asserts a payload run of `run_in_dom0`: dom0 ran it in time, every `<prefix>` check passed,
/// each of `required` ran, the `<summary> passed=N failed=0` line counts them, and it exited 0.
pub fn assert_payload_run(out: &Output, prefix: &str, summary: &str, required: &[&str]) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}{stderr}");
    let code = out.status.code();
    assert_ne!(code, Some(125), "dom0 did not run the checks:\n{stderr}");
    assert_ne!(code, Some(124), "the Xen VM timed out:\n{stderr}");
    let found = checks(&stdout, prefix);
    assert_all_passed(prefix, &found, required);
    assert!(
        stdout
            .lines()
            .any(|l| l == format!("{summary} passed={} failed=0", found.len())),
        "summary line missing or inconsistent"
    );
    assert_eq!(code, Some(0), "the payload's exit status");
}
