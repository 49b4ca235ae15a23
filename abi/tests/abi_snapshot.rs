//! The ABI snapshot: `spec/abi-v1.lock` lists every number the ABI fixes (version, call ids,
//! statuses, services, feature bits, gate kinds, CPUID and named constants, and every layout's
//! size, alignment and field offsets and sizes). This test regenerates the text from the crate and
//! fails when it differs from the committed file, so no ABI number changes unnoticed.
//!
//! With `PVABI_BLESS=1` in the environment the test writes the file instead of comparing.

// A test panics by design when a check fails.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use std::path::PathBuf;

fn lock_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../spec/abi-v1.lock")
}

/// A line diff (longest common subsequence) of `old` against `new`: lines only in `old` are
/// prefixed `-`, lines only in `new` `+`, each with its line number in its own text.
fn diff_lines(old: &str, new: &str) -> Vec<String> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    // lcs[i][j]: length of the LCS of a[i..] and b[j..].
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push(format!("+{:>4}: {}", j + 1, b[j]));
            j += 1;
        } else {
            out.push(format!("-{:>4}: {}", i + 1, a[i]));
            i += 1;
        }
    }
    out
}

/// Compares the committed snapshot with the text generated from the crate.
///
/// # Errors
///
/// Returns the message to fail with: the differing lines and how to proceed.
fn compare(committed: &str, generated: &str) -> Result<(), String> {
    if committed == generated {
        return Ok(());
    }
    let diff = diff_lines(committed, generated);
    Err(format!(
        "spec/abi-v1.lock differs from the pvabi crate ({} line(s); `-` committed, `+` crate):\n{}\n\n\
         If the ABI change is intended, regenerate the snapshot with\n    \
         PVABI_BLESS=1 cargo test -p pvabi --test abi_snapshot\n\
         and bump the ABI version (abi/src/version.rs): a new minor version when lines were only \
         added, a new major version for any other change (spec VER-4, VER-5, VER-9).",
        diff.len(),
        if diff.is_empty() {
            "(only whitespace or line endings differ)".to_string()
        } else {
            diff.join("\n")
        }
    ))
}

#[test]
fn snapshot_matches_crate() {
    let generated = common::snapshot_text(&common::model());
    let path = lock_path();
    if std::env::var_os("PVABI_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &generated)
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        eprintln!("wrote {}", path.display());
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "read {}: {e}; generate it with PVABI_BLESS=1 cargo test -p pvabi --test abi_snapshot",
            path.display()
        )
    });
    if let Err(msg) = compare(&committed, &generated) {
        panic!("{msg}");
    }
}

#[test]
fn snapshot_covers_every_table_of_the_crate() {
    let m = common::model();
    let text = common::snapshot_text(&m);
    let count = |prefix: &str| text.lines().filter(|l| l.starts_with(prefix)).count();
    assert_eq!(count("call "), pvabi::call::CALLS.len());
    assert_eq!(count("status "), pvabi::Status::ALL.len());
    assert_eq!(count("layout "), pvabi::layout::LAYOUTS.len());
    let fields: usize = pvabi::layout::LAYOUTS.iter().map(|l| l.fields.len()).sum();
    assert_eq!(count("field "), fields);
    assert_eq!(count("feature "), pvabi::Features::all().iter().count());
    assert_eq!(count("service "), pvabi::ServiceId::V1.len() + 1);
    assert!(text.contains("abi_version 1.0\n"));
    assert!(text.contains("const discovery::BootInfo::MAGIC 0x49425650\n"));
    assert!(text.contains("call 0x00010000 CONSOLE.WRITE args=2 returns=yes\n"));
    assert!(text.contains("field ClockPage.system_time offset=16 size=8\n"));
}

#[test]
fn one_changed_field_is_detected_and_explained() {
    let generated = common::snapshot_text(&common::model());
    assert_eq!(compare(&generated, &generated), Ok(()));

    // The crate moved one field: the committed file still has the old offset.
    let line = "field RingCompletion.status offset=8 size=8";
    assert!(generated.contains(line));
    let mutated = generated.replacen(line, "field RingCompletion.status offset=16 size=8", 1);
    let msg = compare(&generated, &mutated).unwrap_err();
    assert!(msg.contains("- "), "{msg}");
    assert!(
        msg.contains(": field RingCompletion.status offset=8 size=8"),
        "{msg}"
    );
    assert!(
        msg.contains(": field RingCompletion.status offset=16 size=8"),
        "{msg}"
    );
    assert!(
        msg.contains("PVABI_BLESS=1 cargo test -p pvabi --test abi_snapshot"),
        "{msg}"
    );
    assert!(msg.contains("bump the ABI version"), "{msg}");
    assert!(
        msg.contains("1 line(s)") || msg.contains("2 line(s)"),
        "{msg}"
    );

    // A changed model (not text) is detected too: change a call's argument count.
    let mut m = common::model();
    if let Some(c) = m.calls.iter_mut().find(|c| c.name == "VCPU.START") {
        c.args = 5;
    }
    let msg = compare(&generated, &common::snapshot_text(&m)).unwrap_err();
    assert!(
        msg.contains("call 0x00030003 VCPU.START args=5 returns=yes"),
        "{msg}"
    );
}

#[test]
fn diff_marks_added_and_removed_lines() {
    let d = diff_lines("a\nb\nc\n", "a\nc\nd\n");
    assert_eq!(d, vec!["-   2: b".to_string(), "+   3: d".to_string()]);
    assert!(diff_lines("x\n", "x\n").is_empty());
}
