//! Runs a guest ELF under KVM and prints how it ended (a debugging aid; `pvabi run` is the
//! tool for users).
//!
//! `cargo run -p pvabi-kvm --example run -- GUEST.elf [--vcpus N] [--mem MIB] [--pv]
//! [--harness] [--watchdog SECS] [--cmdline STR]`

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use pvabi_kvm::{Mode, RunConfig};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut cfg = RunConfig {
        vcpus: 2,
        ..Default::default()
    };
    let mut elf = None;
    while let Some(a) = args.next() {
        let mut num = |what: &str| -> u64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{what} needs a number"))
        };
        match a.as_str() {
            "--vcpus" => cfg.vcpus = num("--vcpus") as u32,
            "--mem" => cfg.mem_mib = num("--mem"),
            "--watchdog" => cfg.watchdog = Some(Duration::from_secs(num("--watchdog"))),
            "--pv" => cfg.mode = Mode::PvRing3,
            "--harness" => cfg.harness = true,
            "--cmdline" => cfg.cmdline = args.next().unwrap_or_default(),
            _ => elf = Some(PathBuf::from(a)),
        }
    }
    let Some(elf) = elf else {
        eprintln!(
            "usage: run GUEST.elf [--vcpus N] [--mem MIB] [--pv] [--harness] [--cmdline STR]"
        );
        return ExitCode::from(2);
    };
    let t = std::time::Instant::now();
    match pvabi_kvm::run(&elf, &cfg) {
        Ok(out) => {
            for r in &out.reports {
                println!(
                    "report: {:?} {} [{}] {}",
                    r.outcome,
                    r.name,
                    r.clauses.join(","),
                    r.detail
                );
            }
            eprintln!(
                "guest shut down: reason {} code {} (vCPU {}) after {:?}; {} reports",
                out.status.reason,
                out.status.code,
                out.status.vcpu,
                t.elapsed(),
                out.reports.len()
            );
            if let Some(c) = out.crash {
                eprintln!(
                    "crash report: code {} rip {:#x}: {}",
                    c.code, c.rip, c.message
                );
            }
            ExitCode::from(u8::try_from(out.status.code).unwrap_or(255))
        }
        Err(e) => {
            eprintln!("error after {:?}: {e}", t.elapsed());
            ExitCode::FAILURE
        }
    }
}
