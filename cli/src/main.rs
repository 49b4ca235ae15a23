//! The `pvabi` command-line tool: certify backends against the specification, run guest
//! kernels on KVM, list the specification's clauses.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use conformance::{certify, Certifiable, Certification, KvmBackend, MockBackend, Report};

mod bench;

/// pvabi: a hypervisor-neutral paravirtualization ABI.
#[derive(Parser, Debug)]
#[command(name = "pvabi", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum BackendArg {
    Mock,
    Kvm,
    Xen,
    All,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ModeArg {
    Ring0,
    Pv,
    Both,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
    Junit,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Certify backends: run the conformance suite and report every clause of the spec.
    Certify {
        /// Which backend (default: every backend available on this machine).
        #[arg(long, value_enum)]
        backend: Option<BackendArg>,
        /// KVM execution mode(s) to certify.
        #[arg(long, value_enum, default_value_t = ModeArg::Both)]
        mode: ModeArg,
        /// Report format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Write the report here instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
        /// Only run cases whose name starts with this prefix (e.g. `store::`).
        #[arg(long)]
        filter: Option<String>,
    },
    /// Run a guest kernel built against pvabi-guest on KVM; the exit status is the guest's.
    Run {
        /// The guest ELF image.
        elf: PathBuf,
        /// Number of vCPUs.
        #[arg(long, default_value_t = 1)]
        vcpus: u32,
        /// Guest RAM in MiB.
        #[arg(long, default_value_t = 64)]
        mem: u64,
        /// Command line handed to the guest.
        #[arg(long, default_value = "")]
        cmdline: String,
        /// Run fully paravirtual in ring 3 (upcalls by callback).
        #[arg(long)]
        pv: bool,
        /// End the VM when no vCPU exits for this many seconds (0: never).
        #[arg(long, default_value_t = 0)]
        watchdog: u64,
    },
    /// Measure what calls cost, as ratios to a bare exit in the same run, beside QEMU.
    Bench {
        /// Run the guests fully paravirtual in ring 3 instead of ring 0.
        #[arg(long)]
        pv: bool,
        /// Also write the results as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Fewer repetitions (a quick check, noisier figures).
        #[arg(long)]
        quick: bool,
    },
    /// List the specification's clause ids with their text.
    Spec {
        /// Only clauses whose id starts with this prefix (e.g. `STORE`).
        #[arg(long)]
        prefix: Option<String>,
    },
}

fn backends(
    which: Option<BackendArg>,
    mode: ModeArg,
    filter: Option<String>,
) -> Vec<Box<dyn Certifiable>> {
    let mut v: Vec<Box<dyn Certifiable>> = Vec::new();
    let all = matches!(which, None | Some(BackendArg::All));
    if all || which == Some(BackendArg::Mock) {
        v.push(Box::new(MockBackend {
            filter: filter.clone(),
            ..MockBackend::default()
        }));
    }
    if all || which == Some(BackendArg::Kvm) {
        if matches!(mode, ModeArg::Ring0 | ModeArg::Both) {
            v.push(Box::new(KvmBackend {
                mode: pvabi_kvm::Mode::Ring0,
                filter: filter.clone(),
            }));
        }
        if matches!(mode, ModeArg::Pv | ModeArg::Both) {
            v.push(Box::new(KvmBackend {
                mode: pvabi_kvm::Mode::PvRing3,
                filter: filter.clone(),
            }));
        }
    }
    if all || which == Some(BackendArg::Xen) {
        v.push(Box::new(conformance::XenBackend { filter }));
    }
    v
}

/// Prints one line per spec chapter (clause prefix) with its verdict counts.
fn progress(r: &Report) {
    let mut chapters: Vec<(String, [usize; 4])> = Vec::new();
    for c in &r.clauses {
        let prefix = c.id.split('-').next().unwrap_or("?").to_string();
        let idx = match c.status {
            conformance::ClauseStatus::Passed => 0,
            conformance::ClauseStatus::Failed => 1,
            conformance::ClauseStatus::Skipped => 2,
            conformance::ClauseStatus::Untested => 3,
        };
        match chapters.iter_mut().find(|(p, _)| *p == prefix) {
            Some((_, n)) => n[idx] += 1,
            None => {
                let mut n = [0; 4];
                n[idx] = 1;
                chapters.push((prefix, n));
            }
        }
    }
    for (p, n) in chapters {
        eprintln!(
            "  {}/{} {:<6} passed {:>3}  failed {:>3}  skipped {:>3}  untested {:>3}",
            r.backend, r.mode, p, n[0], n[1], n[2], n[3]
        );
    }
}

fn cmd_certify(
    backend: Option<BackendArg>,
    mode: ModeArg,
    format: Format,
    output: Option<PathBuf>,
    filter: Option<String>,
) -> ExitCode {
    let explicit = matches!(
        backend,
        Some(BackendArg::Mock | BackendArg::Kvm | BackendArg::Xen)
    );
    let tty = std::io::stderr().is_terminal();
    let mut reports: Vec<Report> = Vec::new();
    let mut unavailable = false;
    for b in backends(backend, mode, filter) {
        if tty {
            eprintln!("certifying {} ({}) ...", b.name(), b.mode());
        }
        match certify(b.as_ref()) {
            Certification::Ran(r) => {
                if tty {
                    progress(&r);
                }
                eprintln!(
                    "{} ({}): passed {} failed {} skipped {} untested {} => {}",
                    r.backend,
                    r.mode,
                    r.summary.passed,
                    r.summary.failed,
                    r.summary.skipped,
                    r.summary.untested,
                    if r.is_pass() {
                        "CERTIFIED"
                    } else {
                        "NOT CERTIFIED"
                    }
                );
                reports.push(*r);
            }
            Certification::Skipped { backend, reason } => {
                eprintln!(
                    "SKIPPED: backend {backend} cannot be certified on this machine: {reason}"
                );
                unavailable = true;
            }
        }
    }
    let text = match format {
        Format::Text => reports
            .iter()
            .map(Report::to_text)
            .collect::<Vec<_>>()
            .join("\n"),
        Format::Json => {
            if reports.len() == 1 {
                reports.first().map(Report::to_json).unwrap_or_default()
            } else {
                serde_json::to_string_pretty(&reports).unwrap_or_default()
            }
        }
        Format::Junit => reports
            .iter()
            .map(Report::to_junit)
            .collect::<Vec<_>>()
            .join("\n"),
    };
    match output {
        Some(path) => {
            if let Err(e) = std::fs::write(&path, text) {
                eprintln!("pvabi: cannot write {}: {e}", path.display());
                return ExitCode::from(2);
            }
        }
        None => println!("{text}"),
    }
    if reports.iter().any(|r| !r.is_pass()) {
        ExitCode::FAILURE
    } else if reports.is_empty() || (explicit && unavailable) {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

fn cmd_run(
    elf: PathBuf,
    vcpus: u32,
    mem: u64,
    cmdline: String,
    pv: bool,
    watchdog: u64,
) -> ExitCode {
    let cfg = pvabi_kvm::RunConfig {
        vcpus,
        mem_mib: mem,
        cmdline,
        mode: if pv {
            pvabi_kvm::Mode::PvRing3
        } else {
            pvabi_kvm::Mode::Ring0
        },
        watchdog: (watchdog > 0).then(|| std::time::Duration::from_secs(watchdog)),
        ..pvabi_kvm::RunConfig::default()
    };
    match pvabi_kvm::run(&elf, &cfg) {
        Ok(out) => {
            if let Some(c) = &out.crash {
                eprintln!(
                    "pvabi: guest crashed: code {:#x} at rip {:#x}: {}",
                    c.code, c.rip, c.message
                );
            }
            let reason = pvabi::power::ShutdownReason(out.status.reason);
            if reason == pvabi::power::ShutdownReason::POWEROFF {
                ExitCode::from(u8::try_from(out.status.code).unwrap_or(u8::MAX))
            } else {
                eprintln!(
                    "pvabi: guest shut down with reason {} code {}",
                    out.status.reason, out.status.code
                );
                if reason == pvabi::power::ShutdownReason::REBOOT {
                    ExitCode::from(3)
                } else {
                    ExitCode::from(4)
                }
            }
        }
        Err(e) => {
            eprintln!("pvabi: {e}");
            ExitCode::from(125)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Certify {
            backend,
            mode,
            format,
            output,
            filter,
        } => cmd_certify(backend, mode, format, output, filter),
        Command::Run {
            elf,
            vcpus,
            mem,
            cmdline,
            pv,
            watchdog,
        } => cmd_run(elf, vcpus, mem, cmdline, pv, watchdog),
        Command::Bench { pv, json, quick } => bench::run(&bench::Options { pv, json, quick }),
        Command::Spec { prefix } => {
            let all = conformance::clauses();
            let mut n = 0usize;
            for c in all
                .iter()
                .filter(|c| prefix.as_deref().is_none_or(|p| c.prefix() == p))
            {
                println!("{:<10} {}", c.id, c.text);
                n += 1;
            }
            eprintln!("{n} clauses");
            if n == 0 {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
    }
}
