//! Helpers shared by the KVM integration tests: building guest images and skipping loudly
//! where `/dev/kvm` is not usable.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use pvabi_kvm::{ConsoleSink, Error, ExitStatus, Mode, RunConfig};

/// Returns true when `/dev/kvm` is usable; otherwise prints `SKIP: <test>: /dev/kvm <reason>`.
pub fn kvm_or_skip(test: &str) -> bool {
    match pvabi_kvm::kvm_usable() {
        Ok(()) => true,
        Err(Error::NoKvm(why)) => {
            eprintln!("SKIP: {test}: /dev/kvm is not usable: {why}");
            false
        }
        Err(e) => {
            eprintln!("SKIP: {test}: /dev/kvm is not usable: {e}");
            false
        }
    }
}

/// Builds (once per test binary) the guest crate `tests/guests/<name>` and returns its ELF.
pub fn guest(name: &'static str) -> PathBuf {
    static BUILT: OnceLock<Mutex<Vec<(&'static str, PathBuf)>>> = OnceLock::new();
    let built = BUILT.get_or_init(|| Mutex::new(Vec::new()));
    let mut b = built.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = b.iter().find(|(n, _)| *n == name) {
        return p.clone();
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/guests")
        .join(name);
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kvm-guests");
    let elf = pvabi_image_build::GuestBuild::new(dir, target)
        .emit_rerun_if_changed(false)
        .build()
        .unwrap_or_else(|e| panic!("building guest {name}: {e}"));
    b.push((name, elf.clone()));
    elf
}

/// Runs `elf` with `cmdline` and a 20 s watchdog; returns the outcome and the console output.
pub fn run(
    elf: &Path,
    mode: Mode,
    vcpus: u32,
    cmdline: &str,
) -> (Result<ExitStatus, Error>, String) {
    run_with_watchdog(elf, mode, vcpus, cmdline, Duration::from_secs(20))
}

/// [`run`] with another watchdog period.
pub fn run_with_watchdog(
    elf: &Path,
    mode: Mode,
    vcpus: u32,
    cmdline: &str,
    watchdog: Duration,
) -> (Result<ExitStatus, Error>, String) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let cfg = RunConfig {
        vcpus,
        mem_mib: 16,
        cmdline: cmdline.to_owned(),
        mode,
        console: ConsoleSink::Capture(buf.clone()),
        watchdog: Some(watchdog),
        harness: false,
        sync_regs: true,
        ..Default::default()
    };
    let r = pvabi_kvm::run_elf(elf, cfg);
    let out = String::from_utf8_lossy(&buf.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    (r, out)
}

/// Runs `elf` with `cmdline` without `KVM_CAP_SYNC_REGS` (registers by ioctl).
pub fn run_without_sync_regs(elf: &Path, mode: Mode, cmdline: &str) -> Result<ExitStatus, Error> {
    let cfg = RunConfig {
        mem_mib: 16,
        cmdline: cmdline.to_owned(),
        mode,
        console: ConsoleSink::Capture(Arc::new(Mutex::new(Vec::new()))),
        watchdog: Some(Duration::from_secs(20)),
        sync_regs: false,
        ..Default::default()
    };
    pvabi_kvm::run_elf(elf, cfg)
}

/// Both execution modes.
pub const MODES: [Mode; 2] = [Mode::Ring0, Mode::PvRing3];
