//! Probes this machine's KVM: capabilities, and what an exit and a gate call cost in each
//! execution mode (measured with the `tests/guests/basic` guest).
//!
//! `cargo run --release -p pvabi-kvm --example probe [N]`
//!
//! Costs are differences between runs with N and with 0 iterations, so VM set-up cancels out;
//! compare them as ratios (gate call vs bare exit, ioctl registers vs synced registers).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvm_ioctls::{Cap, Kvm};
use pvabi_kvm::{ConsoleSink, Mode, RunConfig};

fn run(elf: &Path, mode: Mode, cmd: &str, sync_regs: bool) -> Duration {
    let cfg = RunConfig {
        mem_mib: 16,
        cmdline: cmd.into(),
        mode,
        console: ConsoleSink::Capture(Arc::new(Mutex::new(Vec::new()))),
        sync_regs,
        ..Default::default()
    };
    let t = Instant::now();
    match pvabi_kvm::run_elf(elf, cfg) {
        Ok(st) if st.code == 0 => t.elapsed(),
        other => panic!("{cmd} in {mode:?}: {other:?}"),
    }
}

/// Best of 3 (the machine is shared).
fn best(elf: &Path, mode: Mode, cmd: &str, sync_regs: bool) -> Duration {
    (0..3)
        .map(|_| run(elf, mode, cmd, sync_regs))
        .min()
        .unwrap_or_default()
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let kvm = match Kvm::new() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("SKIP: probe: /dev/kvm {e}");
            return;
        }
    };
    let sync = kvm.check_extension_raw(u64::from(kvm_bindings::KVM_CAP_SYNC_REGS) as _);
    println!("KVM_CAP_SYNC_REGS mask: {sync:#x}");
    for (name, cap) in [
        ("IOEVENTFD", Cap::Ioeventfd),
        ("IRQFD", Cap::Irqfd),
        ("IRQCHIP", Cap::Irqchip),
        ("IMMEDIATE_EXIT", Cap::ImmediateExit),
        ("X86_USER_SPACE_MSR", Cap::X86UserSpaceMsr),
    ] {
        println!("KVM_CAP_{name}: {}", kvm.check_extension(cap));
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guests/basic");
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/tmp/kvm-guests");
    let elf = pvabi_image_build::GuestBuild::new(dir, target)
        .emit_rerun_if_changed(false)
        .build()
        .unwrap_or_else(|e| panic!("building the probe guest: {e}"));
    for mode in [Mode::Ring0, Mode::PvRing3] {
        let base = best(&elf, mode, "exit 0", true);
        let per = |d: Duration| d.saturating_sub(base).as_secs_f64() * 1e6 / n as f64;
        let null = per(best(&elf, mode, &format!("outloop {n}"), true));
        let gate = per(best(&elf, mode, &format!("gateloop {n}"), true));
        let gate_ioctl = per(best(&elf, mode, &format!("gateloop {n}"), false));
        println!(
            "{mode:?}: VM set-up to power-off {:.2} ms; per bare exit {null:.2} us; per gate call \
             {gate:.2} us ({:.2} bare exits) with synced registers, {gate_ioctl:.2} us ({:.2} bare \
             exits) with register ioctls",
            base.as_secs_f64() * 1e3,
            gate / null,
            gate_ioctl / null
        );
    }
}
