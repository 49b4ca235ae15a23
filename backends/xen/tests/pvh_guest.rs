//! The guest side of the Xen transport (spec appendix B) in a bare-metal PVH kernel under a
//! real Xen: builds `tests/guests/pvh` and the static `pvh-check` dom0 program, appends the
//! kernel to the program, runs it in the dom0 of Xen booted under QEMU
//! (`scripts/xen/run-in-dom0.sh`), and asserts every line both report.
//!
//! The kernel boots three times in one Xen run:
//! - `refused`: `pvh-check` plays the backend's first part of the handshake, validates the
//!   guest's keys (`XEN-3`) and grants (mapped through /dev/xen/gntdev: the index page and the
//!   ring header), then refuses (`XEN-4`); the kernel must report exactly that refusal;
//! - `backend`: the pvabi-xen backend serves the kernel, which connects with
//!   `Pvabi::connect_xen` (the handshake, then discovery by BASE calls over the ring) and makes
//!   its calls through the typed `Pvabi` API over the ring with the event-channel doorbell:
//!   BASE.GET_ABI_VERSION, a batch, CONSOLE.WRITE inside the window (its text must reach the
//!   backend), STORE.WRITE and READ (dom0 must find the value in the kernel's xenstore subtree,
//!   `XEN-10`), CONSOLE.WRITE outside the window (INVALID_ADDRESS, `XEN-7`) and the calls the
//!   ring refuses (VCPU.BLOCK, POWER.SHUTDOWN: INVALID_PARAM at once, `RING-6`);
//! - `invalid`: the kernel publishes a ring order above the backend's limit (command line
//!   `bad-ring-order`); the pvabi-xen backend must refuse without connecting (`XEN-3`, `XEN-4`)
//!   and the kernel must report the backend's reason.
//!
//! In both, the kernel's own steps (`PVH-CHECK`: Xen detection, hypercall page, PV console,
//! xenstore read/write/ENOENT/EACCES, grant-table mapping, event channels, the handshake) must
//! pass.
//!
//! Needs the set-up of `scripts/xen/setup.sh`. Without it the test says `SKIP: ... because
//! ...` on stderr and passes.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{
    assert_all_passed, build_payload, checks_words, run_in_dom0, setup, tail, workspace_root,
};

/// Steps the PVH kernel must report as passed.
const GUEST_REQUIRED: &[&str] = &[
    "start_info",
    "xen_detect",
    "hypercall_page",
    "pv_console",
    "store_params",
    "xenstore_read_domid",
    "xenstore_write_read",
    "xenstore_enoent",
    "xenstore_eacces",
    "grant_table_map",
    "evtchn_alloc_unbound",
    "handshake_backend_initwait",
    "handshake_grant_window",
    "handshake_event_channel",
    "handshake_layout",
    "handshake_initialised",
];

/// Further steps the kernel must report as passed when the pvabi-xen backend serves it.
const GUEST_RING_REQUIRED: &[&str] = &[
    "pvabi_discover",
    "ring_get_abi_version",
    "ring_batch",
    "ring_console_write",
    "pvabi_store_write_read",
    "ring_outside_window_refused",
    "pvabi_refused_calls",
    "handshake_closed",
];

/// Checks the dom0 program must report as passed in every scenario.
const DOM0_REQUIRED: &[&str] = &[
    "domain_created",
    "backend_initwait",
    "domain_unpaused",
    "guest_initialised",
    "pvh_run_exit",
];

/// Further dom0 checks per scenario.
const DOM0_SCENARIO_REQUIRED: &[(&str, &[&str])] = &[
    (
        "refused",
        &["guest_keys", "window_granted", "backend_closed"],
    ),
    (
        "backend",
        &[
            "guest_keys",
            "window_granted",
            "backend_connected",
            "backend_closed",
            "console_through_ring",
            "store_through_ring",
        ],
    ),
    ("invalid", &["guest_keys_rejected", "backend_refused"]),
];

fn target_root() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Builds the PVH kernel (its own linker script with the Xen ELF note) and returns its path.
fn build_kernel() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guests/pvh");
    let target_dir = target_root().join("xen-pvh");
    let flags = [
        "-Crelocation-model=static".to_string(),
        "-Cno-redzone=yes".into(),
        "-Clink-arg=-nostdlib".into(),
        "-Clink-arg=-static".into(),
        "-Clink-arg=-no-pie".into(),
        "-Clink-arg=-Wl,--build-id=none".into(),
        format!("-Clink-arg=-T{}", dir.join("link.ld").display()),
    ]
    .join("\x1f");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(&dir)
        .args([
            "build",
            "--release",
            "--target",
            "x86_64-unknown-linux-gnu",
            "--target-dir",
        ])
        .arg(&target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env("CARGO_ENCODED_RUSTFLAGS", flags)
        .output()
        .expect("run cargo build for the PVH kernel");
    assert!(
        out.status.success(),
        "building the PVH kernel failed:\n{}",
        tail(&out.stderr, 30)
    );
    target_dir.join("x86_64-unknown-linux-gnu/release/xen-pvh-guest")
}

/// `program` with `kernel` appended as `pvh-check` expects it: the image, its length
/// (`u64` little-endian), `PVHIMAGE`.
fn bundle(program: &Path, kernel: &Path) -> PathBuf {
    let mut bytes = std::fs::read(program).expect("read pvh-check");
    let image = std::fs::read(kernel).expect("read the PVH kernel");
    bytes.extend_from_slice(&image);
    bytes.extend_from_slice(&(image.len() as u64).to_le_bytes());
    bytes.extend_from_slice(b"PVHIMAGE");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pvh-check-bundle");
    std::fs::write(&out, bytes).expect("write the bundle");
    out
}

/// The PVH kernel under real Xen: refused by `pvh-check` after the first part of the
/// handshake, served by the pvabi-xen backend, and refused by that backend for a ring order
/// above its limit.
#[test]
fn pvh_guest_under_real_xen() {
    if let Err(why) = setup() {
        eprintln!("SKIP: pvh_guest_under_real_xen because {why}");
        return;
    }
    let kernel = build_kernel();
    let program = build_payload("pvh-check");
    let payload = bundle(&program, &kernel);
    let out = run_in_dom0(&payload, &[], &["refused", "backend", "invalid"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}{stderr}");
    let code = out.status.code();
    assert_ne!(code, Some(125), "dom0 did not run pvh-check:\n{stderr}");
    assert_ne!(code, Some(124), "the Xen VM timed out:\n{stderr}");

    for (scenario, dom0_extra) in DOM0_SCENARIO_REQUIRED {
        // The kernel's lines come back from its console log, relayed as
        // `PVH-LOG <scenario> <line>`.
        let log = |line: &str| format!("PVH-LOG {scenario} {line}");
        let guest = checks_words(&stdout, &log("PVH-CHECK "), "ok", "fail");
        let dom0 = checks_words(&stdout, &format!("DOM0-CHECK {scenario}."), "ok", "fail");
        let mut guest_required = GUEST_REQUIRED.to_vec();
        let mut dom0_required = DOM0_REQUIRED.to_vec();
        dom0_required.extend(*dom0_extra);
        let connect = match *scenario {
            "backend" => {
                guest_required.extend(GUEST_RING_REQUIRED);
                log("PVH-CONNECT connected")
            }
            "refused" => log("PVH-CONNECT refused error=pvh-check: no ring backend in this run"),
            _ => {
                // The kernel must report the reason the pvabi-xen backend gave.
                let why = dom0
                    .get("backend_refused")
                    .and_then(|(_, d)| d.strip_prefix("reason="))
                    .unwrap_or("<no reason reported>");
                log(&format!("PVH-CONNECT refused error={why}"))
            }
        };
        assert_all_passed(&format!("{scenario}: PVH kernel"), &guest, &guest_required);
        assert_all_passed(&format!("{scenario}: dom0"), &dom0, &dom0_required);
        assert!(
            stdout.lines().any(|l| l == log("PVH-BEGIN")),
            "{scenario}: the kernel's console log did not start with PVH-BEGIN"
        );
        assert!(
            stdout.lines().any(|l| l == connect),
            "{scenario}: the kernel did not report {connect:?}"
        );
        assert!(
            stdout.lines().any(|l| l == log("PVH-DONE")),
            "{scenario}: the kernel did not finish"
        );
    }
    assert_eq!(code, Some(0), "pvh-check exit status");
}
