//! `pvabi bench`: the cost of pvabi calls against the floor (a bare exit to the VMM) and
//! against QEMU, measured side by side in one run.
//!
//! # What runs
//!
//! 1. **Start-up**, repeated and interleaved: a VM of the bench guest (`benches/guest`) in
//!    this process, timed from the call of [`pvabi_kvm::run`] to the first call reaching
//!    the gate (`vm_start_to_first_call`); then `pvabi run` of the same guest as a child
//!    process and QEMU booting its peer guest as a child process, each timed from the spawn
//!    to the first byte of guest output on the child's standard output
//!    (`start_to_first_output`). Both guests then run the same loop of bare `out`
//!    instructions, reported per round (`peer_exit`).
//! 2. **The bench VM**: the bench guest in `bench` mode runs every variant once per round,
//!    rounds repeated, each batch timed by the guest with `rdtsc`; the host converts ticks
//!    with the guest TSC frequency (`KVM_GET_TSC_KHZ`).
//! 3. **In-process**: the mock's in-process gate and a plain function call, interleaved,
//!    timed with the host clock.
//!
//! Every figure is the median over rounds, and its ratio to the median of `raw_exit` from
//! the same bench VM. Nothing is compared against numbers from another run.
//!
//! # The QEMU peer
//!
//! QEMU boots a 32-bit protected-mode multiboot image (the "a.out kludge" header, so QEMU's
//! own `-kernel` loader takes it) that this module assembles at run time: it writes `S` to
//! COM1, then runs rounds of `out dx, eax` to an unassigned port, each round timed with
//! `rdtsc` and sent as 8 raw bytes on COM1, and exits through `isa-debug-exit`. With `--pv`
//! it first enters long mode and drops to 64-bit ring 3 (its own GDT, page tables and TSS,
//! whose I/O permission bitmap opens its ports; `iretq`), as the pvabi guest runs in PV
//! ring 3; otherwise it stays in 32-bit ring 0. The pvabi peer guest is a long-mode image in
//! the execution mode of the run. QEMU runs with
//! `-accel kvm` when that works on this machine, else with TCG, and says which. The machine
//! is `microvm` (qboot firmware), QEMU's fastest-starting x86 machine: with `pc` SeaBIOS
//! runs first, which on a nested host where ring-0 code is emulated takes seconds.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Path of the bench guest image, set by the build script (empty when it was not built).
const GUEST_ELF: &str = env!("PVABI_BENCH_GUEST_ELF");
/// Why the bench guest image was not built (empty when it was).
const GUEST_ERROR: &str = env!("PVABI_BENCH_GUEST_ERROR");

/// The unassigned I/O port the QEMU peer's loop writes to (QEMU's PC machine puts nothing
/// there; pvabi's null port 0x511 is QEMU's fw_cfg data port).
const QEMU_NULL_PORT: u16 = 0x05F0;
/// `isa-debug-exit` port of the QEMU peer.
const QEMU_EXIT_PORT: u16 = 0xF4;
/// How long a QEMU probe (one round of one exit) may take.
const PROBE_LIMIT: Duration = Duration::from_secs(5);
/// How long a QEMU peer run may take.
const RUN_LIMIT: Duration = Duration::from_secs(30);

/// Options of `pvabi bench`.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Run the guests fully paravirtual in ring 3 instead of ring 0.
    pub pv: bool,
    /// Write the results as JSON here.
    pub json: Option<PathBuf>,
    /// Fewer rounds and iterations (seconds instead of tens of seconds; noisier).
    pub quick: bool,
}

/// How much to measure.
#[derive(Clone, Copy, Debug, Serialize)]
struct Plan {
    /// Rounds of the bench VM (each runs every variant once).
    rounds: u64,
    /// Base iteration count of a variant per round.
    n: u64,
    /// Start-up repetitions (each: one in-process VM, one `pvabi run`, one QEMU).
    starts: u64,
    /// Rounds of the peer loop per peer run.
    peer_rounds: u64,
    /// Exits per peer round.
    peer_n: u64,
    /// Calls per round of the in-process measurements.
    mock_n: u64,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                rounds: 3,
                n: 40,
                starts: 2,
                peer_rounds: 3,
                peer_n: 100,
                mock_n: 10_000,
            }
        } else {
            Self {
                rounds: 31,
                n: 200,
                starts: 11,
                peer_rounds: 5,
                peer_n: 400,
                mock_n: 200_000,
            }
        }
    }
}

/// One measured figure.
#[derive(Clone, Debug, Serialize)]
struct Figure {
    name: String,
    /// Execution mode the figure was measured in.
    mode: String,
    /// Who measured: `guest-rdtsc` or `host-clock`.
    timing: &'static str,
    /// Median per operation, ns.
    median_ns: f64,
    min_ns: f64,
    max_ns: f64,
    samples: usize,
    /// `median_ns / raw_exit.median_ns` of the same run.
    ratio_to_raw_exit: f64,
    /// The target, as a ratio to raw_exit, if there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    target_ratio_max: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_met: Option<bool>,
    note: String,
}

/// A pvabi/QEMU comparison.
#[derive(Clone, Debug, Serialize)]
struct PeerRatio {
    name: String,
    pvabi_mode: String,
    qemu_mode: String,
    pvabi_median_ns: f64,
    qemu_median_ns: f64,
    /// pvabi / QEMU.
    ratio: f64,
    target_ratio_max: f64,
    target_met: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
struct QemuReport {
    available: bool,
    /// Why QEMU figures are missing, when they are.
    #[serde(skip_serializing_if = "Option::is_none")]
    skipped_because: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    binary: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    accel: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    guest: Option<String>,
    /// Why the peer runs in another mode or accelerator than asked, if it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    fallback: Option<String>,
    ratios: Vec<PeerRatio>,
    figures: Vec<Figure>,
}

#[derive(Clone, Debug, Serialize)]
struct BenchReport {
    /// Format version of this JSON.
    format: u32,
    machine: Machine,
    mode: String,
    quick: bool,
    plan: Plan,
    tsc_khz: u32,
    ring_doorbell: &'static str,
    raw_exit_ns: f64,
    figures: Vec<Figure>,
    qemu: QemuReport,
    elapsed_s: f64,
}

#[derive(Clone, Debug, Serialize)]
struct Machine {
    cpus: usize,
    kernel: String,
    kvm_module: String,
    cpu_model: String,
    /// `/proc/loadavg` when the run started and when it ended: these machines are shared,
    /// and polling figures (the ring) suffer most when other work takes the CPUs.
    loadavg_start: String,
    loadavg_end: String,
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn machine() -> Machine {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu_model = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let mut kvm_modules: Vec<String> = std::fs::read_dir("/sys/module")
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|m| m.starts_with("kvm"))
                .collect()
        })
        .unwrap_or_default();
    kvm_modules.sort();
    let kvm_module = kvm_modules.join(",");
    Machine {
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
        kvm_module,
        cpu_model,
        loadavg_start: String::new(),
        loadavg_end: loadavg(),
    }
}

/// Median, min and max of `v` (not empty).
fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let med = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    (med, s[0], s[n - 1])
}

/// Result lines `pvabi-bench <name> <ops> <ticks>` of the bench guest, as ns per op.
fn parse_guest(text: &str, ns_per_tick: f64) -> Vec<(String, f64)> {
    text.lines()
        .filter_map(|l| {
            // The guest's first output byte (`S`) has no newline of its own.
            let at = l.find("pvabi-bench ")?;
            let mut w = l.get(at + "pvabi-bench ".len()..)?.split_whitespace();
            let name = w.next()?;
            let ops: f64 = w.next()?.parse::<u64>().ok()? as f64;
            let ticks: f64 = w.next()?.parse::<u64>().ok()? as f64;
            (ops > 0.0).then(|| (name.to_string(), ticks * ns_per_tick / ops))
        })
        .collect()
}

fn samples_of(v: &[(String, f64)], name: &str) -> Vec<f64> {
    v.iter()
        .filter(|(n, _)| n == name)
        .map(|(_, x)| *x)
        .collect()
}

fn mode_name(mode: pvabi_kvm::Mode) -> &'static str {
    match mode {
        pvabi_kvm::Mode::Ring0 => "kvm ring0",
        pvabi_kvm::Mode::PvRing3 => "kvm pv-ring3",
    }
}

/// Runs `pvabi bench`.
pub fn run(opts: &Options) -> ExitCode {
    let started = Instant::now();
    let plan = Plan::new(opts.quick);
    let mode = if opts.pv {
        pvabi_kvm::Mode::PvRing3
    } else {
        pvabi_kvm::Mode::Ring0
    };
    if let Err(e) = pvabi_kvm::kvm_usable() {
        eprintln!("pvabi bench: SKIP: KVM figures cannot be measured because {e}");
        return ExitCode::from(2);
    }
    if GUEST_ELF.is_empty() {
        eprintln!("pvabi bench: the bench guest image was not built: {GUEST_ERROR}");
        return ExitCode::from(2);
    }
    let elf = PathBuf::from(GUEST_ELF);
    match measure(&elf, mode, plan, opts, started) {
        Ok(report) => {
            if let Some(path) = &opts.json {
                let text = match serde_json::to_string_pretty(&report) {
                    Ok(t) => t,
                    Err(e) => {
                        eprintln!("pvabi bench: cannot encode JSON: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                if let Err(e) = std::fs::write(path, text) {
                    eprintln!("pvabi bench: cannot write {}: {e}", path.display());
                    return ExitCode::from(2);
                }
            }
            print_report(&report);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pvabi bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Targets from the performance requirements, as ratios to raw_exit.
fn target_for(name: &str, mode: pvabi_kvm::Mode) -> Option<f64> {
    match name {
        "null_call" => Some(1.10),
        "clock_read" => Some(0.01),
        "multicall_64" => Some(0.05),
        "ring_null_call" if mode == pvabi_kvm::Mode::PvRing3 => Some(0.01),
        _ => None,
    }
}

fn note_for(name: &str) -> &'static str {
    match name {
        "raw_exit" => "bare `out` to the null port (the baseline)",
        "null_call" => "BASE.GET_ABI_VERSION through pvabi-guest's I/O-port gate",
        "null_call_min" => {
            "BASE.GET_ABI_VERSION in a hand-written loop (one `mov` more than raw_exit)"
        }
        "console_write_64B" => "CONSOLE.WRITE of 64 bytes",
        "store_read" => "STORE.READ of a 16-byte value",
        "event_send_to_self" => "EVENT.SEND on a port bound to the sender",
        "clock_read" => "pvclock read of the clock page, no exit",
        "multicall_64" => "per call, 64 BASE.GET_ABI_VERSION in one MULTICALL.EXECUTE",
        "ring_null_call" => "BASE.GET_ABI_VERSION through the shared-ring gate, per call",
        _ => "",
    }
}

fn measure(
    elf: &Path,
    mode: pvabi_kvm::Mode,
    plan: Plan,
    opts: &Options,
    started: Instant,
) -> Result<BenchReport, String> {
    let mname = mode_name(mode).to_string();
    let load_at_start = loadavg();
    let qemu = Qemu::find(mode == pvabi_kvm::Mode::PvRing3);
    if let Err(why) = &qemu {
        eprintln!();
        eprintln!("!!! pvabi bench: QEMU peer SKIPPED: {why}");
        eprintln!("!!! run scripts/qemu/install.sh to install it; pvabi/QEMU ratios are missing");
        eprintln!();
    }

    // 1. Start-up and the peer loop, interleaved.
    let mut first_call = Vec::new();
    let mut pvabi_first_out = Vec::new();
    let mut pvabi_peer = Vec::new();
    let mut qemu_first_out = Vec::new();
    let mut qemu_peer_ticks = Vec::new();
    let mut qemu_err = None;
    let mut tsc_khz = 0;
    let peer_cmd = format!("peer rounds={} n={}", plan.peer_rounds, plan.peer_n);
    for _ in 0..plan.starts {
        let (out, _) = run_vm(elf, mode, "start")?;
        let t = out
            .first_call
            .ok_or("the bench guest made no call in start mode")?;
        first_call.push(t.as_secs_f64() * 1e9);
        tsc_khz = out.tsc_khz;

        let (t, text) = spawn_first_output(
            pvabi_run_command(elf, mode, &peer_cmd)?,
            Duration::from_secs(60),
        )?;
        pvabi_first_out.push(t.as_secs_f64() * 1e9);
        pvabi_peer.extend(
            parse_guest(&String::from_utf8_lossy(&text), 1.0)
                .into_iter()
                .filter(|(n, _)| n == "peer_exit")
                .map(|(_, ticks)| ticks),
        );
        if let Ok(q) = &qemu {
            match q.run(plan.peer_rounds, plan.peer_n, RUN_LIMIT) {
                Ok((t, ticks)) => {
                    qemu_first_out.push(t.as_secs_f64() * 1e9);
                    qemu_peer_ticks.extend(ticks);
                }
                Err(e) => qemu_err = Some(e),
            }
        }
    }
    if tsc_khz == 0 {
        return Err("KVM reported a TSC frequency of 0".into());
    }
    let ns_per_tick = 1e6 / f64::from(tsc_khz);

    // 2. The bench VM.
    let cmd = format!("bench rounds={} n={}", plan.rounds, plan.n);
    let (out, console) = run_vm(elf, mode, &cmd)?;
    let text = String::from_utf8_lossy(&console).into_owned();
    if let Some(l) = text.lines().find(|l| l.starts_with("pvabi-bench error")) {
        return Err(format!("bench guest: {l}"));
    }
    if !text.contains("pvabi-bench end") {
        return Err("the bench guest's output is incomplete".into());
    }
    let results = parse_guest(&text, ns_per_tick);
    let raw = samples_of(&results, "raw_exit");
    if raw.is_empty() {
        return Err("no raw_exit samples".into());
    }
    let (raw_med, _, _) = stats(&raw);
    let mut figures = Vec::new();
    let mut push = |name: &str, mode: &str, timing: &'static str, v: &[f64], note: String| {
        if v.is_empty() {
            return;
        }
        let (med, min, max) = stats(v);
        let ratio = med / raw_med;
        let target = if mode == mname {
            let m = if opts.pv {
                pvabi_kvm::Mode::PvRing3
            } else {
                pvabi_kvm::Mode::Ring0
            };
            target_for(name, m)
        } else {
            None
        };
        figures.push(Figure {
            name: name.to_string(),
            mode: mode.to_string(),
            timing,
            median_ns: med,
            min_ns: min,
            max_ns: max,
            samples: v.len(),
            ratio_to_raw_exit: ratio,
            target_ratio_max: target,
            target_met: target.map(|t| ratio <= t),
            note,
        });
    };
    for name in [
        "raw_exit",
        "null_call",
        "null_call_min",
        "console_write_64B",
        "store_read",
        "event_send_to_self",
        "clock_read",
        "multicall_64",
        "ring_null_call",
    ] {
        let v = samples_of(&results, name);
        if v.is_empty() {
            return Err(format!("no samples of {name}"));
        }
        push(name, &mname, "guest-rdtsc", &v, note_for(name).to_string());
    }

    // 3. In-process: the mock's gate beside a plain function call.
    let (mock, plain) = mock_calls(plan)?;
    push(
        "mock_null_call",
        "mock in-process",
        "host-clock",
        &mock,
        "BASE.GET_ABI_VERSION through the mock's in-process gate (a function call)".into(),
    );
    push(
        "plain_fn_call",
        "host native",
        "host-clock",
        &plain,
        "an `extern \"C\"` call through a function pointer, for scale".into(),
    );
    let lines = line_round_trips(plan);
    push(
        "line_round_trip",
        "host native",
        "host-clock",
        &lines,
        "two host threads passing a counter back and forth through two cache lines: the \
         floor under any shared-memory round trip between two CPUs, ring_null_call's included"
            .into(),
    );
    push(
        "vm_start_to_first_call",
        &mname,
        "host-clock",
        &first_call,
        "VM creation, image load, vCPU set-up, first guest call (in this process)".into(),
    );
    let pvabi_peer_ns: Vec<f64> = pvabi_peer
        .iter()
        .map(|ticks_per_exit| ticks_per_exit * ns_per_tick)
        .collect();
    push(
        "peer_exit",
        &format!("{mname} (pvabi run)"),
        "guest-rdtsc",
        &pvabi_peer_ns,
        "the QEMU peer's loop (bare `out`) in a `pvabi run` child process".into(),
    );
    push(
        "start_to_first_output",
        &format!("{mname} (pvabi run)"),
        "host-clock",
        &pvabi_first_out,
        "spawn of `pvabi run` to the guest's first byte on its standard output".into(),
    );

    // QEMU.
    let mut qr = QemuReport::default();
    match (&qemu, qemu_err) {
        (Err(why), _) => qr.skipped_because = Some(why.clone()),
        (Ok(_), Some(e)) if qemu_first_out.is_empty() => {
            eprintln!("!!! pvabi bench: QEMU peer FAILED: {e}");
            qr.skipped_because = Some(e);
        }
        (Ok(q), _) => {
            qr.available = true;
            qr.binary = Some(q.binary.clone());
            qr.version = Some(q.version.clone());
            qr.accel = Some(q.accel.clone());
            qr.fallback = q.note.clone();
            let ring = if q.ring3 {
                "entering long mode, the loop in 64-bit ring 3 (I/O bitmap in its TSS)"
            } else {
                "the loop in 32-bit ring 0"
            };
            qr.guest = Some(format!(
                "multiboot image via QEMU's -kernel loader (machine microvm), {ring}, \
                 `out dx, eax` to port {QEMU_NULL_PORT:#x}"
            ));
            let qmode = format!(
                "qemu {} {}",
                q.accel,
                if q.ring3 {
                    "ring3 64-bit"
                } else {
                    "ring0 32-bit"
                }
            );
            let qexit: Vec<f64> = qemu_peer_ticks
                .iter()
                .map(|t| *t as f64 * ns_per_tick / plan.peer_n as f64)
                .collect();
            for (name, v, timing) in [
                ("peer_exit", &qexit, "guest-rdtsc"),
                ("start_to_first_output", &qemu_first_out, "host-clock"),
            ] {
                if v.is_empty() {
                    continue;
                }
                let (med, min, max) = stats(v);
                qr.figures.push(Figure {
                    name: name.to_string(),
                    mode: qmode.clone(),
                    timing,
                    median_ns: med,
                    min_ns: min,
                    max_ns: max,
                    samples: v.len(),
                    ratio_to_raw_exit: med / raw_med,
                    target_ratio_max: None,
                    target_met: None,
                    note: if name == "peer_exit" {
                        "bare `out` loop in QEMU".into()
                    } else {
                        "spawn of qemu-system-x86_64 to the guest's first byte on COM1".into()
                    },
                });
            }
            for (name, pv, qv, target) in [
                ("per_exit", &pvabi_peer_ns, &qexit, 0.8),
                (
                    "start_to_first_output",
                    &pvabi_first_out,
                    &qemu_first_out,
                    0.2,
                ),
            ] {
                if pv.is_empty() || qv.is_empty() {
                    continue;
                }
                let (p, _, _) = stats(pv);
                let (q, _, _) = stats(qv);
                qr.ratios.push(PeerRatio {
                    name: name.to_string(),
                    pvabi_mode: format!("{mname} (pvabi run)"),
                    qemu_mode: qmode.clone(),
                    pvabi_median_ns: p,
                    qemu_median_ns: q,
                    ratio: p / q,
                    target_ratio_max: target,
                    target_met: p / q <= target,
                });
            }
        }
    }

    let mut machine = machine();
    machine.loadavg_start = load_at_start;
    Ok(BenchReport {
        format: 1,
        machine,
        mode: mname,
        quick: opts.quick,
        plan,
        tsc_khz,
        ring_doorbell: if out.ring_doorbell_in_kernel {
            "ioeventfd"
        } else {
            "exit to user space"
        },
        raw_exit_ns: raw_med,
        figures,
        qemu: qr,
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}

/// Runs the bench guest in this process with `cmdline`; returns how it ended and all its
/// console output (`RunOutput::console` keeps only the most recent 64 KiB).
fn run_vm(
    elf: &Path,
    mode: pvabi_kvm::Mode,
    cmdline: &str,
) -> Result<(pvabi_kvm::RunOutput, Vec<u8>), String> {
    let capture = Arc::new(Mutex::new(Vec::new()));
    let cfg = pvabi_kvm::RunConfig {
        vcpus: 1,
        mem_mib: 16,
        cmdline: cmdline.to_string(),
        mode,
        console: pvabi_kvm::ConsoleSink::Capture(capture.clone()),
        watchdog: Some(Duration::from_secs(30)),
        ..pvabi_kvm::RunConfig::default()
    };
    let out = pvabi_kvm::run(elf, &cfg).map_err(|e| format!("bench VM ({cmdline}): {e}"))?;
    let console = std::mem::take(&mut *capture.lock().unwrap_or_else(|e| e.into_inner()));
    if out.status.code != 0 {
        return Err(format!(
            "bench guest ({cmdline}) powered off with {}: {}",
            out.status.code,
            String::from_utf8_lossy(&console)
                .lines()
                .filter(|l| l.starts_with("pvabi-bench error"))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    Ok((out, console))
}

fn pvabi_run_command(elf: &Path, mode: pvabi_kvm::Mode, cmdline: &str) -> Result<Command, String> {
    let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
    let mut c = Command::new(exe);
    c.arg("run")
        .arg(elf)
        .arg("--vcpus")
        .arg("1")
        .arg("--mem")
        .arg("16")
        .arg("--cmdline")
        .arg(cmdline);
    if mode == pvabi_kvm::Mode::PvRing3 {
        c.arg("--pv");
    }
    Ok(c)
}

/// Spawns `cmd` and returns the time from the spawn to the first byte on its standard output,
/// and everything it wrote there; a child still running after `limit` is killed (an error).
fn spawn_first_output(mut cmd: Command, limit: Duration) -> Result<(Duration, Vec<u8>), String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t0 = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("spawn {cmd:?}: {e}"))?;
    let mut stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let mut stderr = child.stderr.take().ok_or("no stderr pipe")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut first = [0u8; 1];
        let got = stdout.read(&mut first);
        let t = t0.elapsed();
        let mut all = Vec::new();
        if matches!(got, Ok(1)) {
            all.push(first[0]);
            let _ = stdout.read_to_end(&mut all);
        }
        let mut err = String::new();
        let _ = stderr.read_to_string(&mut err);
        let _ = tx.send((t, all, err));
    });
    let got = rx.recv_timeout(limit);
    let timed_out = got.is_err();
    if timed_out {
        // Ours, still running: end it; its pipes close and the reader finishes.
        let _ = child.kill();
    }
    let status = child.wait().map_err(|e| format!("wait: {e}"))?;
    let (t, all, err) = match got {
        Ok(r) => r,
        Err(_) => rx
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| format!("{:?} hung and its output did not close", cmd.get_program()))?,
    };
    let _ = reader.join();
    if timed_out {
        return Err(format!(
            "{:?} did not finish within {limit:?} (killed; it wrote {} bytes)",
            cmd.get_program(),
            all.len()
        ));
    }
    if all.is_empty() {
        return Err(format!(
            "{:?} wrote nothing ({status}): {}",
            cmd.get_program(),
            err.trim()
        ));
    }
    Ok((t, all))
}

/// The mock's in-process gate and a plain function call, ns per call, interleaved rounds.
fn mock_calls(plan: Plan) -> Result<(Vec<f64>, Vec<f64>), String> {
    extern "C" fn plain(ctx: usize, regs: *mut u64) {
        std::hint::black_box((ctx, regs));
    }
    let mock = pvabi_mock::Mock::new(pvabi_mock::MockConfig::default())
        .map_err(|e| format!("mock: {e}"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    let rounds = plan.rounds;
    let n = plan.mock_n;
    mock.start(move |boot| {
        let regs = pvabi::Regs::new(pvabi::call::BASE_GET_ABI_VERSION, [0; 6]);
        let f: extern "C" fn(usize, *mut u64) = std::hint::black_box(plain);
        let mut word = 0u64;
        let (mut m, mut p) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let t = Instant::now();
            for _ in 0..n {
                std::hint::black_box(boot.call(std::hint::black_box(regs)));
            }
            m.push(t.elapsed().as_secs_f64() * 1e9 / n as f64);
            let t = Instant::now();
            for _ in 0..n {
                f(std::hint::black_box(0), &mut word);
            }
            p.push(t.elapsed().as_secs_f64() * 1e9 / n as f64);
        }
        let _ = tx.send((m, p));
        boot.call(pvabi::Regs::new(pvabi::call::POWER_SHUTDOWN, [0; 6]));
    });
    let r = rx
        .recv_timeout(Duration::from_secs(60))
        .map_err(|e| format!("mock guest: {e}"))?;
    let _ = mock.wait_timeout(Duration::from_secs(5));
    Ok(r)
}

/// Two threads passing a counter back and forth, each writing its own cache line and spinning
/// on the other's, as the shared ring's guest and host do with requests and completions: ns
/// per round trip, one sample per round. Measured right after the bench VM, because how long
/// a line takes to cross between two CPUs changes with where the machine's CPUs sit.
fn line_round_trips(plan: Plan) -> Vec<f64> {
    #[repr(align(128))]
    struct Line(AtomicU64);
    /// Spins between two yields, so that one CPU for both threads still makes progress.
    const SPINS: u32 = 1 << 14;
    fn wait_for(line: &Line, value: u64) {
        let mut spins = 0u32;
        while line.0.load(Ordering::Acquire) != value {
            spins += 1;
            if spins == SPINS {
                spins = 0;
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
    let n = (plan.mock_n / 10).max(1);
    let rounds = plan.rounds;
    let lines = Arc::new([Line(AtomicU64::new(0)), Line(AtomicU64::new(0))]);
    let peer = Arc::clone(&lines);
    let echo = std::thread::spawn(move || {
        for i in 1..=rounds * n {
            wait_for(&peer[0], i);
            peer[1].0.store(i, Ordering::Release);
        }
    });
    let mut v = Vec::new();
    let mut i = 0u64;
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..n {
            i += 1;
            lines[0].0.store(i, Ordering::Release);
            wait_for(&lines[1], i);
        }
        v.push(t.elapsed().as_secs_f64() * 1e9 / n as f64);
    }
    let _ = echo.join();
    v
}

/// QEMU, found on this machine.
struct Qemu {
    binary: String,
    /// The peer guest drops to 64-bit ring 3 first.
    ring3: bool,
    /// Why the peer runs other than asked (ring 0 for ring 3, TCG for KVM).
    note: Option<String>,
    version: String,
    accel: String,
    image: PathBuf,
}

impl Qemu {
    fn find(ring3: bool) -> Result<Self, String> {
        let binary = "qemu-system-x86_64".to_string();
        let v = Command::new(&binary)
            .arg("--version")
            .output()
            .map_err(|e| format!("{binary} is not installed or cannot run ({e})"))?;
        let version = String::from_utf8_lossy(&v.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        let image =
            std::env::temp_dir().join(format!("pvabi-bench-qemu-{}.bin", std::process::id()));
        let mut q = Self {
            binary,
            ring3,
            note: None,
            version,
            accel: "kvm".into(),
            image,
        };
        // KVM in the requested ring first; a ring-3 peer falls back to ring 0 under KVM before
        // TCG (TCG times are no comparison for exits at all, and say so).
        let mut tries = vec![("kvm", ring3)];
        if ring3 {
            tries.push(("kvm", false));
        }
        tries.push(("tcg", ring3));
        let mut failures = Vec::new();
        for (accel, r3) in tries {
            q.accel = accel.into();
            q.ring3 = r3;
            match q.run(1, 1, PROBE_LIMIT) {
                Ok(_) => {
                    if !failures.is_empty() {
                        q.note = Some(failures.join("; "));
                        eprintln!(
                            "!!! pvabi bench: QEMU peer runs with -accel {accel} in {}: {}",
                            if r3 { "ring 3" } else { "ring 0" },
                            failures.join("; ")
                        );
                    }
                    return Ok(q);
                }
                Err(e) => failures.push(format!(
                    "-accel {accel} {} failed: {e}",
                    if r3 { "ring 3" } else { "ring 0" }
                )),
            }
        }
        Err(format!(
            "QEMU does not run the peer: {}",
            failures.join("; ")
        ))
    }

    /// Boots the peer image; returns the time to its first output and its per-round ticks.
    fn run(&self, rounds: u64, n: u64, limit: Duration) -> Result<(Duration, Vec<u64>), String> {
        // One more round than reported: the first warms up, as in the pvabi peer.
        std::fs::write(
            &self.image,
            peer_image(rounds as u32 + 1, n as u32, self.ring3),
        )
        .map_err(|e| format!("cannot write {}: {e}", self.image.display()))?;
        let mut c = Command::new(&self.binary);
        c.args(["-accel", &self.accel])
            .args([
                "-M",
                "microvm",
                "-m",
                "16",
                "-nodefaults",
                "-no-user-config",
            ])
            .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
            .args(["-no-reboot", "-device"])
            .arg(format!(
                "isa-debug-exit,iobase={QEMU_EXIT_PORT:#x},iosize=4"
            ))
            .arg("-kernel")
            .arg(&self.image);
        let (t, out) = spawn_first_output(c, limit)?;
        if out.first() != Some(&b'S') {
            return Err(format!("unexpected first output {:?}", out.first()));
        }
        let body = out.get(1..).unwrap_or(&[]);
        if body.len() < (rounds as usize + 1) * 8 {
            return Err(format!(
                "QEMU guest wrote {} result bytes, expected {}",
                body.len(),
                (rounds + 1) * 8
            ));
        }
        let ticks = body
            .chunks_exact(8)
            .skip(1)
            .take(rounds as usize)
            .map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                u64::from_le_bytes(b)
            })
            .collect();
        Ok((t, ticks))
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.image);
    }
}

/// The QEMU peer guest: a multiboot (a.out kludge) image loaded at 1 MiB, 32-bit protected
/// mode, ring 0. It writes `S` to COM1, runs `rounds` rounds of `n` `out dx, eax` to
/// [`QEMU_NULL_PORT`] with `rdtsc` around each, sends each round's ticks as 8 little-endian
/// bytes to COM1, and exits through `isa-debug-exit`.
///
/// With `ring3` it runs the loop as the pvabi guest does in PV ring 3: it enters long mode
/// (its own GDT, identity-mapped first 2 MiB as a user page, EFER.LME, paging), loads a
/// 64-bit TSS whose I/O permission bitmap opens its three ports, and drops to 64-bit ring 3
/// (`iretq`) with IOPL 3. `kvm_pvm` runs ring 3 natively but drops IOPL 3 there, so the
/// bitmap is what lets `out` reach QEMU (pvabi-kvm opens its ports the same way); a legacy
/// 32-bit ring 3 does not run at all under `kvm_pvm`.
fn peer_image(rounds: u32, n: u32, ring3: bool) -> Vec<u8> {
    const LOAD: u32 = 0x10_0000;
    /// Where the GDT pointer, the GDT and the TSS sit in the image.
    const GDTR: u32 = LOAD + 0x1F0;
    const GDT: u32 = LOAD + 0x200;
    const TSS: u32 = LOAD + 0x240;
    /// Page tables (4 KiB aligned): PML4, PDPT, PD.
    const PML4: u32 = LOAD + 0x1000;
    /// Size of the 64-bit TSS without the bitmap; the bitmap follows it.
    const TSS_SIZE: u32 = 104;
    /// Bitmap bytes: every port up to the highest the peer uses.
    const IOMAP_LEN: u32 = QEMU_NULL_PORT as u32 / 8 + 1;
    /// Ring-3 stack top (in RAM, below the image).
    const STACK: u32 = 0x9_0000;
    const MAGIC: u32 = 0x1BAD_B002;
    const FLAGS: u32 = 1 << 16;
    let mut img = Vec::new();
    for w in [
        MAGIC,
        FLAGS,
        0u32.wrapping_sub(MAGIC.wrapping_add(FLAGS)),
        LOAD,      // header_addr
        LOAD,      // load_addr
        0,         // load_end_addr: the whole file
        0,         // bss_end_addr: no bss
        LOAD + 32, // entry_addr: right after this header
    ] {
        img.extend_from_slice(&w.to_le_bytes());
    }
    let com1 = 0x3F8u16.to_le_bytes();
    let mut code: Vec<u8> = Vec::new();
    code.extend([0x66, 0xBA, com1[0], com1[1]]); // mov dx, 0x3f8
    code.extend([0xB0, b'S', 0xEE]); // mov al, 'S'; out dx, al
                                     // `dec ecx` / `dec edi`: one byte in 32-bit code, a REX prefix in 64-bit code.
    let (dec_ecx, dec_edi): (&[u8], &[u8]) = if ring3 {
        (&[0xFF, 0xC9], &[0xFF, 0xCF])
    } else {
        (&[0x49], &[0x4F])
    };
    if ring3 {
        code.extend([0x0F, 0x01, 0x15]); // lgdt [GDTR]
        code.extend(GDTR.to_le_bytes());
        code.push(0xB8); // mov eax, PML4
        code.extend(PML4.to_le_bytes());
        code.extend([0x0F, 0x22, 0xD8]); // mov cr3, eax
        code.extend([0x0F, 0x20, 0xE0, 0x83, 0xC8, 0x20, 0x0F, 0x22, 0xE0]); // cr4 |= PAE
        code.extend([0xB9, 0x80, 0x00, 0x00, 0xC0]); // mov ecx, EFER
        code.extend([0x0F, 0x32, 0x0D, 0x00, 0x01, 0x00, 0x00, 0x0F, 0x30]); // EFER |= LME
        code.extend([0x0F, 0x20, 0xC0, 0x0D]); // mov eax, cr0; or eax, PG | PE
        code.extend(0x8000_0001u32.to_le_bytes());
        code.extend([0x0F, 0x22, 0xC0]); // mov cr0, eax
        let long_entry = LOAD + 32 + code.len() as u32 + 7;
        code.push(0xEA); // jmp far 0x08:long_entry
        code.extend(long_entry.to_le_bytes());
        code.extend([0x08, 0x00]);
        // 64-bit, ring 0.
        code.extend([0x66, 0xB8, 0x28, 0x00]); // mov ax, 0x28 (the TSS)
        code.extend([0x0F, 0x00, 0xD8]); // ltr ax
        code.push(0xBC); // mov esp, STACK
        code.extend(STACK.to_le_bytes());
        code.extend([0x6A, 0x23]); // push user data selector (SS)
        code.push(0x68); // push RSP
        code.extend(STACK.to_le_bytes());
        code.push(0x68); // push RFLAGS: IOPL 3, IF 0
        code.extend(0x3002u32.to_le_bytes());
        code.extend([0x6A, 0x1B]); // push user code selector (CS)
        let user_entry = LOAD + 32 + code.len() as u32 + 7;
        code.push(0x68); // push RIP: right after the iretq
        code.extend(user_entry.to_le_bytes());
        code.extend([0x48, 0xCF]); // iretq
    }
    code.push(0xBF); // mov edi, rounds
    code.extend(rounds.to_le_bytes());
    let round = code.len();
    code.extend([0x0F, 0x31, 0x89, 0xC6, 0x89, 0xD5]); // rdtsc; mov esi, eax; mov ebp, edx
    code.push(0xB9); // mov ecx, n
    code.extend(n.to_le_bytes());
    let p = QEMU_NULL_PORT.to_le_bytes();
    code.extend([0x66, 0xBA, p[0], p[1]]); // mov dx, port
    code.extend([0x31, 0xC0]); // xor eax, eax
                               // 1: out dx, eax; dec ecx; jnz 1b
    code.push(0xEF);
    code.extend(dec_ecx);
    code.extend([0x75, (-(dec_ecx.len() as i8) - 3) as u8]);
    code.extend([0x0F, 0x31, 0x29, 0xF0, 0x19, 0xEA]); // rdtsc; sub eax, esi; sbb edx, ebp
    code.extend([0x89, 0xD3]); // mov ebx, edx
    code.extend([0x66, 0xBA, com1[0], com1[1]]); // mov dx, 0x3f8
    for half in 0..2 {
        if half == 1 {
            code.extend([0x89, 0xD8]); // mov eax, ebx
        }
        code.extend([0xB9, 4, 0, 0, 0]); // mov ecx, 4
                                         // 2: out dx, al; shr eax, 8; dec ecx; jnz 2b
        code.extend([0xEE, 0xC1, 0xE8, 0x08]);
        code.extend(dec_ecx);
        code.extend([0x75, (-(dec_ecx.len() as i8) - 6) as u8]);
    }
    code.extend(dec_edi);
    let rel = round as i64 - (code.len() as i64 + 6);
    code.extend([0x0F, 0x85]); // jnz round
    code.extend((rel as i32).to_le_bytes());
    let e = QEMU_EXIT_PORT.to_le_bytes();
    code.extend([0x66, 0xBA, e[0], e[1], 0x31, 0xC0, 0xEF]); // mov dx, 0xf4; xor eax, eax; out
                                                             // hlt (ring 0) or a plain loop (ring 3, where hlt faults); never reached, QEMU has exited.
    code.extend([0xF4, 0xEB, 0xFD]);
    img.extend(code);
    if ring3 {
        img.resize((GDTR - LOAD) as usize, 0);
        img.extend((7u16 * 8 - 1).to_le_bytes());
        img.extend(GDT.to_le_bytes());
        img.resize((GDT - LOAD) as usize, 0);
        // 0x28: 64-bit available TSS (16 bytes), DPL 0, byte granular, limit covering the
        // bitmap and the 0xFF byte that must follow it; its base is below 4 GiB.
        let limit = u64::from(TSS_SIZE + IOMAP_LEN);
        let base = u64::from(TSS);
        let tss = (limit & 0xFFFF)
            | (base & 0xFF_FFFF) << 16
            | 0x89 << 40
            | ((limit >> 16) & 0xF) << 48
            | (base >> 24) << 56;
        for d in [
            0u64,
            0x00AF_9A00_0000_FFFF, // 0x08: 64-bit code, DPL 0
            0x00CF_9200_0000_FFFF, // 0x10: data, DPL 0
            0x00AF_FA00_0000_FFFF, // 0x18: 64-bit code, DPL 3
            0x00CF_F200_0000_FFFF, // 0x20: data, DPL 3
            tss,                   // 0x28: TSS, low half
            0,                     // 0x30: TSS, high half (base bits 63..32)
        ] {
            img.extend(d.to_le_bytes());
        }
        img.resize((TSS - LOAD) as usize, 0);
        let mut t = vec![0u8; TSS_SIZE as usize];
        t[4..8].copy_from_slice(&STACK.to_le_bytes()); // RSP0
        t[102..104].copy_from_slice(&(TSS_SIZE as u16).to_le_bytes()); // I/O map base
        let mut map = vec![0xFFu8; IOMAP_LEN as usize + 1];
        // `out dx, al` to COM1, `out dx, eax` to the null port and the exit port (4 ports each).
        let open = [(0x3F8u16, 1u16), (QEMU_NULL_PORT, 4), (QEMU_EXIT_PORT, 4)];
        for (first, width) in open {
            for port in first..first + width {
                if let Some(b) = map.get_mut(usize::from(port / 8)) {
                    *b &= !(1 << (port % 8));
                }
            }
        }
        t.extend(map);
        img.extend(t);
        // PML4[0] -> PDPT, PDPT[0] -> PD, PD[0]: a 2 MiB page at 0; all present, writable,
        // user.
        for (table, entry) in [
            (PML4, PML4 + 0x1000 + 7),
            (PML4 + 0x1000, PML4 + 0x2000 + 7),
        ] {
            img.resize((table - LOAD) as usize, 0);
            img.extend(u64::from(entry).to_le_bytes());
        }
        img.resize((PML4 + 0x2000 - LOAD) as usize, 0);
        img.extend(0x87u64.to_le_bytes());
        img.resize((PML4 + 0x3000 - LOAD) as usize, 0);
    }
    img
}

fn print_report(r: &BenchReport) {
    println!(
        "pvabi bench: {} | {} CPUs, kernel {}, modules {} | TSC {} kHz | ring doorbell: {} | \
         load {} -> {}",
        r.mode,
        r.machine.cpus,
        r.machine.kernel,
        r.machine.kvm_module,
        r.tsc_khz,
        r.ring_doorbell,
        r.machine.loadavg_start,
        r.machine.loadavg_end
    );
    println!(
        "{:<24} {:<26} {:<12} {:>12} {:>10} {:>8}  target",
        "figure", "mode", "timing", "median", "x raw_exit", "samples"
    );
    for f in r.figures.iter().chain(r.qemu.figures.iter()) {
        let target = match (f.target_ratio_max, f.target_met) {
            (Some(t), Some(true)) => format!("<= {t} met"),
            (Some(t), Some(false)) => format!("<= {t} MISSED"),
            _ => String::new(),
        };
        println!(
            "{:<24} {:<26} {:<12} {:>12} {:>10} {:>8}  {}",
            f.name,
            f.mode,
            f.timing,
            human_ns(f.median_ns),
            format_ratio(f.ratio_to_raw_exit),
            f.samples,
            target
        );
    }
    let median = |name: &str| {
        r.figures
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.median_ns)
    };
    if let (Some(ring), Some(line), Some(raw)) = (
        median("ring_null_call"),
        median("line_round_trip"),
        median("raw_exit"),
    ) {
        println!(
            "ring_null_call / line_round_trip (the two-CPU floor under a ring round trip) = \
             {:.2}; line_round_trip / raw_exit = {}",
            ring / line,
            format_ratio(line / raw).trim()
        );
    }
    if r.qemu.available {
        println!(
            "QEMU peer: {} ({}), {}",
            r.qemu.version.as_deref().unwrap_or("?"),
            r.qemu.accel.as_deref().unwrap_or("?"),
            r.qemu.guest.as_deref().unwrap_or("")
        );
        if let Some(f) = &r.qemu.fallback {
            println!("QEMU peer fallback: {f}");
        }
        for p in &r.qemu.ratios {
            println!(
                "pvabi/QEMU {:<22} {:>10} / {:>10} = {:.3}  (target <= {}: {})",
                p.name,
                human_ns(p.pvabi_median_ns),
                human_ns(p.qemu_median_ns),
                p.ratio,
                p.target_ratio_max,
                if p.target_met { "met" } else { "MISSED" }
            );
        }
    } else {
        println!(
            "QEMU peer: SKIPPED: {}",
            r.qemu.skipped_because.as_deref().unwrap_or("unknown")
        );
    }
    println!("elapsed {:.1} s", r.elapsed_s);
}

fn human_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.3} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} us", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

fn format_ratio(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}")
    } else if r >= 0.1 {
        format!("{r:.3}")
    } else {
        format!("{r:.5}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(stats(&[3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
        assert_eq!(stats(&[4.0, 1.0, 2.0, 3.0]), (2.5, 1.0, 4.0));
    }

    #[test]
    fn guest_lines_become_ns_per_op() {
        let text = "S\npvabi-bench raw_exit 100 2000\n~~~~\npvabi-bench x 0 5\nnoise\n";
        let v = parse_guest(text, 0.5);
        assert_eq!(v, vec![("raw_exit".to_string(), 10.0)]);
    }

    #[test]
    fn peer_image_has_a_valid_multiboot_header_and_a_closed_loop() {
        let img = peer_image(3, 7, false);
        let w = |i: usize| u32::from_le_bytes([img[i], img[i + 1], img[i + 2], img[i + 3]]);
        assert_eq!(w(0), 0x1BAD_B002);
        assert_eq!(w(0).wrapping_add(w(4)).wrapping_add(w(8)), 0);
        assert_eq!(w(28), 0x10_0020);
        // The round count and the loop count are where the code loads them.
        assert_eq!(w(32 + 8), 3);
        assert!(img.windows(5).any(|x| x == [0xB9, 7, 0, 0, 0]));
        // The backward jump lands on the round's rdtsc.
        let jnz = img.windows(2).rposition(|x| x == [0x0F, 0x85]).unwrap();
        let rel = i32::from_le_bytes([img[jnz + 2], img[jnz + 3], img[jnz + 4], img[jnz + 5]]);
        let target = (jnz as i64 + 6 + i64::from(rel)) as usize;
        assert_eq!(&img[target..target + 2], &[0x0F, 0x31]);
    }

    #[test]
    fn ring3_peer_irets_to_its_own_user_segments() {
        let img = peer_image(1, 1, true);
        // The pushed RIP is the instruction right after the iretq.
        let iret = img.windows(2).position(|b| b == [0x48, 0xCF]).unwrap();
        let rip = u32::from_le_bytes([img[iret - 4], img[iret - 3], img[iret - 2], img[iret - 1]]);
        assert_eq!(rip as usize, 0x10_0000 + iret + 2);
        // The far jump lands right after itself, in 64-bit code.
        let jmp = img.iter().position(|b| *b == 0xEA).unwrap();
        let dest = u32::from_le_bytes([img[jmp + 1], img[jmp + 2], img[jmp + 3], img[jmp + 4]]);
        assert_eq!(dest as usize, 0x10_0000 + jmp + 7);
        // PML4 -> PDPT -> PD -> a 2 MiB user page at 0.
        let q = |i: usize| u64::from_le_bytes(img[i..i + 8].try_into().unwrap());
        assert_eq!(q(0x1000), 0x10_2007);
        assert_eq!(q(0x2000), 0x10_3007);
        assert_eq!(q(0x3000), 0x87);
        // The GDT has a DPL-3 code segment at selector 0x18.
        let d = u64::from_le_bytes(img[0x218..0x220].try_into().unwrap());
        assert_eq!((d >> 45) & 3, 3);
        assert_eq!(img[0x1F0], 55);
        // The TSS descriptor at 0x28 points at the TSS, whose bitmap opens the null port.
        let t = u64::from_le_bytes(img[0x228..0x230].try_into().unwrap());
        assert_eq!((t >> 16) & 0xFF_FFFF | (t >> 56) << 24, 0x10_0240);
        assert_eq!((t >> 40) & 0xFF, 0x89);
        let iomap = 0x240 + usize::from(u16::from_le_bytes([img[0x240 + 102], img[0x240 + 103]]));
        let bit = |port: u16| img[iomap + usize::from(port / 8)] >> (port % 8) & 1;
        assert_eq!(bit(QEMU_NULL_PORT), 0);
        assert_eq!(bit(QEMU_NULL_PORT + 3), 0);
        assert_eq!(bit(0x3F8), 0);
        assert_eq!(bit(QEMU_EXIT_PORT), 0);
        assert_eq!(bit(0x3F9), 1);
        assert_eq!(bit(0x511), 1);
        // The byte after the bitmap, which the TSS limit includes, is all ones.
        assert_eq!(img[iomap + usize::from(QEMU_NULL_PORT / 8) + 1], 0xFF);
    }
}
