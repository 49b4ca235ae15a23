//! KVM backend of pvabi: a VMM on `/dev/kvm` that loads a bare-metal guest ELF, runs it in
//! 64-bit long mode on N vCPU threads and serves the pvabi I/O-port gate.
//!
//! # Boot state
//!
//! The guest image is loaded at the physical addresses of its `PT_LOAD` segments (all at or
//! above 1 MiB). Every vCPU starts in 64-bit mode with paging on, the low 4 GiB identity mapped
//! with 2 MiB pages, a flat GDT and no IDT (an exception before the guest installs an IDT is a
//! triple fault, which ends the VM with an error). The boot vCPU enters the ELF entry with
//! RDI = guest-physical address of the [`pvabi::BootInfo`] (spec `DISC-2`), RSI = 0 and
//! RSP = a 64 KiB loader stack with RSP + 8 aligned to 16 (as right after a `call`).
//! Secondary vCPUs start through VCPU.START with RSP = `stack` exactly as given, RDI = `arg`,
//! RSI = vCPU id (spec `VCPU-7`). Each vCPU has its own TSS whose IST1 (and RSP0) point at a
//! 16 KiB interrupt stack of its own, so ring-0 guests can take upcalls on IST1 and never
//! write below the interrupted RSP. [`layout`] lists where everything is.
//!
//! Two execution modes ([`Mode`]):
//! * [`Mode::Ring0`]: CPL 0, RFLAGS.IF = 0; the guest owns its IDT; upcalls are interrupts on
//!   the vector the guest registers with EVENT.SET_UPCALL; HLT waits for the next upcall.
//! * [`Mode::PvRing3`]: CPL 3 (every page-table level has the U bit, code and data segments
//!   have DPL 3), RFLAGS.IF = 1 and IOPL = 3, so `out` still reaches the VMM; privileged
//!   instructions fault. Upcalls are callbacks with a saved frame (spec `EVT-12`). On nested
//!   hosts ring-3 guest code runs natively while ring-0 code may be emulated instruction by
//!   instruction, so this mode is much faster there.
//!
//! CPUID carries the pvabi signature at leaf [`CPUID_BASE`] (with the version/gate and
//! feature leaves after it), but guests should prefer the BootInfo: in ring 3 on a nested host,
//! CPUID may be answered by the outer hypervisor.
//!
//! # The gate
//!
//! `out dx, eax` with DX = [`pvabi::gate::DEFAULT_IOPORT`] is a call in the register
//! convention of `pvabi::gate`. Registers are read from and written to `kvm_run`'s synced
//! registers (`KVM_CAP_SYNC_REGS`), so a call costs one exit and no register ioctl. Writes to
//! [`pvabi::gate::NULL_IOPORT`] are ignored (a bare exit, the benchmark baseline).
//!
//! The shared-ring gate's doorbell ([`RING_DOORBELL_PORT`]) is an ioeventfd where KVM offers
//! one (no exit to user space): it wakes a poller thread that serves the ring and then polls
//! it with `host_polling` set for [`RunConfig::ring_poll`] after the last request, so a guest
//! that keeps posting needs no doorbell at all.
//!
//! # Nested hosts
//!
//! Where KVM executes guest ring-0 code with its instruction emulator (as nested KVM with
//! `kvm_pvm` does), SSE instructions the emulator lacks end `KVM_RUN` with an emulation
//! failure. The VMM performs the SSE2 integer and move instructions compiled Rust uses
//! (`xorps`, `pxor`, `movd`, `pshufd`, `pinsrw`, ... register and memory forms) itself and
//! resumes the guest; floating-point arithmetic is not emulated and ends the VM with an error
//! that names the instruction bytes.
//!
//! # Errors from the guest
//!
//! A triple fault, an exit the VMM does not expect, or (with a watchdog) a VM without any exit
//! for the watchdog period ends the run with an [`Error`] naming the vCPU and its registers.
//! The host never panics on guest input.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod kick;
pub mod layout;
mod loader;
mod platform;
mod ring;
mod sse;
mod upcall;
mod vmm;

pub use pvabi_host::{CrashReport, Report};
pub use vmm::{CPUID_BASE, RING_DOORBELL_PORT};

/// The value of BASE.GET_BACKEND_VERSION: `major << 32 | minor << 16 | patch` of this crate.
pub const BACKEND_VERSION: u64 = 1 << 16;

/// Default of [`RunConfig::ring_poll`].
pub const DEFAULT_RING_POLL: Duration = Duration::from_micros(200);

/// How the guest runs (see the crate documentation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Ring 0 with the guest's own IDT; upcalls by vector.
    #[default]
    Ring0,
    /// Fully paravirtual ring 3; upcalls by callback.
    PvRing3,
}

/// Where the guest's console output goes.
#[derive(Clone, Debug, Default)]
pub enum ConsoleSink {
    /// Standard output of this process.
    #[default]
    Stdout,
    /// A file, created or truncated.
    File(PathBuf),
    /// An in-memory buffer (tests, the conformance runner).
    Capture(Arc<Mutex<Vec<u8>>>),
}

/// How to run a guest.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Number of vCPUs, `1..=pvabi::MAX_VCPUS`.
    pub vcpus: u32,
    /// Guest RAM in MiB (2..=3072).
    pub mem_mib: u64,
    /// Command line handed to the guest through the BootInfo (at most 4096 bytes).
    pub cmdline: String,
    /// Execution mode.
    pub mode: Mode,
    /// Console output.
    pub console: ConsoleSink,
    /// End the VM with [`Error::Watchdog`] when no vCPU exits for this long.
    pub watchdog: Option<Duration>,
    /// Offer the HARNESS service (certification runs only).
    pub harness: bool,
    /// Move gate registers through `kvm_run` when KVM offers `KVM_CAP_SYNC_REGS` (the
    /// default); `false` uses `KVM_GET_REGS`/`KVM_SET_REGS` on every call (for comparisons).
    pub sync_regs: bool,
    /// How long the shared-ring gate's poller keeps polling the ring (with `host_polling`
    /// set, so the guest needs no doorbell) after the last request; zero serves only what
    /// each doorbell announces. The poller burns a host CPU while it polls.
    pub ring_poll: Duration,
    /// Optional feature bits this VM does not offer (certification of how a host without
    /// them answers, e.g. spec `STORE-36`); the mode's own restrictions always apply.
    pub features_off: pvabi::Features,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            vcpus: 1,
            mem_mib: 64,
            cmdline: String::new(),
            mode: Mode::Ring0,
            console: ConsoleSink::Stdout,
            watchdog: None,
            harness: false,
            sync_regs: true,
            ring_poll: DEFAULT_RING_POLL,
            features_off: pvabi::Features::empty(),
        }
    }
}

/// How a guest ended: its POWER.SHUTDOWN call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitStatus {
    /// The shutdown reason (`pvabi::power::ShutdownReason` value).
    pub reason: u32,
    /// The guest's code (its exit status for POWEROFF).
    pub code: u64,
    /// The vCPU that called POWER.SHUTDOWN.
    pub vcpu: u32,
}

/// Everything a finished run left behind.
#[derive(Clone, Debug)]
pub struct RunOutput {
    /// How the guest shut down.
    pub status: ExitStatus,
    /// The crash report, for a CRASH shutdown with a registered crash buffer.
    pub crash: Option<CrashReport>,
    /// Conformance result records the guest sent through HARNESS.REPORT.
    pub reports: Vec<Report>,
    /// The most recent console output (up to 64 KiB).
    pub console: Vec<u8>,
    /// Time from the call of [`run`] (before `/dev/kvm` is opened) to the first call that
    /// reached the I/O-port gate: VM creation, image load, vCPU set-up and the guest's first
    /// instructions. `None` if the guest made no call.
    pub first_call: Option<Duration>,
    /// The guest's TSC frequency in kHz (`KVM_GET_TSC_KHZ`), to convert guest TSC readings.
    pub tsc_khz: u32,
    /// Whether the ring doorbell was an in-kernel ioeventfd (else each doorbell exited to
    /// user space).
    pub ring_doorbell_in_kernel: bool,
}

/// The registers of a vCPU when something went wrong.
#[derive(Clone, Debug)]
pub struct RegDump {
    /// vCPU id.
    pub vcpu: u32,
    /// General registers, if they could be read.
    pub regs: Option<kvm_bindings::kvm_regs>,
    /// Special registers, if they could be read.
    pub sregs: Option<kvm_bindings::kvm_sregs>,
}

impl std::fmt::Display for RegDump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "vCPU {}", self.vcpu)?;
        if let Some(r) = &self.regs {
            write!(
                f,
                ": rip={:#x} rsp={:#x} rflags={:#x} rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} \
                 rsi={:#x} rdi={:#x} rbp={:#x} r8={:#x} r9={:#x} r10={:#x} r11={:#x} r12={:#x} \
                 r13={:#x} r14={:#x} r15={:#x}",
                r.rip,
                r.rsp,
                r.rflags,
                r.rax,
                r.rbx,
                r.rcx,
                r.rdx,
                r.rsi,
                r.rdi,
                r.rbp,
                r.r8,
                r.r9,
                r.r10,
                r.r11,
                r.r12,
                r.r13,
                r.r14,
                r.r15
            )?;
        }
        if let Some(s) = &self.sregs {
            write!(
                f,
                " cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x} cs={:#x} ss={:#x}",
                s.cr0, s.cr2, s.cr3, s.cr4, s.efer, s.cs.selector, s.ss.selector
            )?;
        }
        Ok(())
    }
}

/// Why a VM could not be run or ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `/dev/kvm` cannot be opened.
    #[error("/dev/kvm is not usable: {0}")]
    NoKvm(#[source] kvm_ioctls::Error),
    /// A KVM ioctl failed.
    #[error("{what} failed: {source}")]
    Kvm {
        /// The ioctl.
        what: &'static str,
        /// The error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Guest memory could not be set up.
    #[error("guest memory: {0}")]
    Memory(String),
    /// The guest image cannot be loaded.
    #[error("guest image {path}: {why}")]
    Image {
        /// The image file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The console file cannot be created.
    #[error("console file {path}: {source}")]
    Console {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The kick signal handler cannot be installed.
    #[error("signal set-up: {0}")]
    Signal(String),
    /// A vCPU thread cannot be started.
    #[error("cannot start a vCPU thread: {0}")]
    Thread(#[source] std::io::Error),
    /// The guest triple-faulted (KVM shutdown exit).
    #[error("triple fault on {regs}")]
    TripleFault {
        /// Registers of the faulting vCPU.
        regs: Box<RegDump>,
    },
    /// KVM reported an exit this VMM does not handle.
    #[error("unexpected exit {exit} on {regs}")]
    UnexpectedExit {
        /// The exit, as KVM reported it.
        exit: String,
        /// Registers of the vCPU.
        regs: Box<RegDump>,
    },
    /// No vCPU exited for the watchdog period.
    #[error("watchdog: no progress for {after:?}; {}", .vcpus.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("; "))]
    Watchdog {
        /// The watchdog period.
        after: Duration,
        /// Registers of every vCPU that was running.
        vcpus: Vec<RegDump>,
    },
}

/// Checks that `/dev/kvm` can be opened and a VM created.
///
/// # Errors
///
/// [`Error::NoKvm`] with the reason.
pub fn kvm_usable() -> Result<(), Error> {
    let kvm = kvm_ioctls::Kvm::new().map_err(Error::NoKvm)?;
    kvm.create_vm().map_err(Error::NoKvm)?;
    Ok(())
}

/// Runs the guest ELF at `path` until it shuts down.
///
/// # Errors
///
/// [`Error::NoKvm`] without a usable `/dev/kvm`; [`Error::Config`] / [`Error::Image`] for a
/// bad configuration or image; [`Error::TripleFault`], [`Error::UnexpectedExit`],
/// [`Error::Watchdog`] when the guest fails; [`Error::Kvm`] when KVM itself fails.
///
/// # Examples
///
/// ```no_run
/// let st = pvabi_kvm::run_elf(
///     std::path::Path::new("hello.elf"),
///     pvabi_kvm::RunConfig { vcpus: 2, ..Default::default() },
/// )?;
/// std::process::exit(st.code as i32);
/// # Ok::<(), pvabi_kvm::Error>(())
/// ```
pub fn run_elf(path: &Path, cfg: RunConfig) -> Result<ExitStatus, Error> {
    run(path, &cfg).map(|o| o.status)
}

/// Runs the guest ELF at `path` until it shuts down and returns everything it left: the exit
/// status, a crash report, HARNESS result records and the recent console output.
///
/// # Errors
///
/// As [`run_elf`].
pub fn run(path: &Path, cfg: &RunConfig) -> Result<RunOutput, Error> {
    let t0 = std::time::Instant::now();
    let kvm = kvm_ioctls::Kvm::new().map_err(Error::NoKvm)?;
    let m = vmm::Machine::new(&kvm, path, cfg, t0)?;
    m.run()
}
