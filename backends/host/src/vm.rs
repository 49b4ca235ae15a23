//! The per-guest [`Vm`]: configuration, dispatch of every v1 call, the stateful services and
//! the host-side API a backend and tests use.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use pvabi::call::{function_count, ServiceId};
use pvabi::clock::ClockPage;
use pvabi::discovery::{BootInfo, ExecMode, Features, GateKind};
use pvabi::event::{vcpu_info, EventPage, UpcallFrame, UpcallMode, MIN_UPCALL_VECTOR, RED_ZONE};
use pvabi::grant::GrantEntry;
use pvabi::harness::{Outcome as ReportOutcome, ReportHeader, GRANT_ACCESS_READ};
use pvabi::memory::{MemKind, MemMapEntry, MAX_BALLOON_PAGES_PER_CALL};
use pvabi::multicall::MulticallEntry;
use pvabi::power::{CrashHeader, ShutdownReason};
use pvabi::ring::{RingCompletion, RingHeader, RingRequest};
use pvabi::store::{GuestAccess, WatchEvent, MAX_PATH, MAX_VALUE, NO_TXN};
use pvabi::vcpu::{StealTime, VcpuState, BLOCK_FOREVER};
use pvabi::{Regs, Ret, Status, ABI_VERSION, MAX_VCPUS, PAGE_SIZE};

use crate::balloon::FrameSet;
use crate::decode::Call;
use crate::error::{ConfigError, HostError};
use crate::events::{port_arg, Ports};
use crate::mem::GuestRam;
use crate::platform::{CallHook, EventAction, Platform, Quirks};
use crate::store::{Store, StoreService};

/// Most HARNESS result records kept until [`Vm::take_reports`] (SEC-11); more get NO_SPACE.
pub const MAX_REPORTS: usize = 100_000;

/// A console output sink: called with each chunk the guest writes, in order, outside the
/// `Vm`'s locks.
pub type ConsoleSink = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// Everything a [`Vm`] is created from.
#[derive(Clone)]
pub struct VmConfig {
    /// Number of vCPUs, `1..=pvabi::MAX_VCPUS`.
    pub vcpu_count: u32,
    /// The vCPU that boots (RUNNING at creation; all others STOPPED).
    pub boot_vcpu: u32,
    /// The memory map MEMORY.GET_MAP returns. Empty: one RAM entry per guest RAM region.
    pub memory_map: Vec<MemMapEntry>,
    /// BASE.GET_BACKEND_ID (`BASE-3`), e.g. `pvabi::base::backend_id::MOCK`.
    pub backend_id: u32,
    /// BASE.GET_BACKEND_VERSION (`BASE-4`).
    pub backend_version: u64,
    /// Feature bits offered. The `HARNESS` bit is ignored here: [`VmConfig::harness`] decides.
    pub features: Features,
    /// Gate kind announced in the boot info.
    pub gate_kind: GateKind,
    /// Gate parameter announced in the boot info.
    pub gate_param: u64,
    /// Execution mode announced in the boot info.
    pub exec_mode: ExecMode,
    /// Whether the HARNESS service is offered (certification only).
    pub harness: bool,
    /// The doorbell I/O port BASE.RING_REGISTER returns.
    pub ring_doorbell: u64,
    /// Bytes of recent console output kept for HARNESS.CONSOLE_READBACK and
    /// [`Vm::console_history`].
    pub console_history: usize,
    /// Most bytes of console input queued (`CONS-8`); more are refused.
    pub console_input_limit: usize,
    /// Deliberate violations of the spec (conformance-suite testing only).
    pub quirks: Quirks,
    /// Call observer / fault injector.
    pub hook: Option<Arc<dyn CallHook>>,
    /// Console output sink.
    pub console_sink: Option<ConsoleSink>,
    /// Serves the guest's STORE calls instead of the `Vm`'s own store (the `Vm` still checks
    /// each call's registers and buffers). The host-side store API and HARNESS keep using the
    /// `Vm`'s own store.
    pub store_service: Option<Arc<Mutex<dyn StoreService>>>,
}

impl std::fmt::Debug for VmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmConfig")
            .field("vcpu_count", &self.vcpu_count)
            .field("boot_vcpu", &self.boot_vcpu)
            .field("memory_map", &self.memory_map)
            .field("backend_id", &self.backend_id)
            .field("features", &self.features)
            .field("gate_kind", &self.gate_kind)
            .field("harness", &self.harness)
            .field("quirks", &self.quirks)
            .finish_non_exhaustive()
    }
}

impl VmConfig {
    /// Every feature this crate implements.
    pub const ALL_FEATURES: Features = Features::CLOCK_PAGE
        .union(Features::TIMER)
        .union(Features::STEAL_TIME)
        .union(Features::UPCALL_VECTOR)
        .union(Features::UPCALL_CALLBACK)
        .union(Features::BALLOON)
        .union(Features::GRANT)
        .union(Features::STORE_TXN)
        .union(Features::MULTICALL)
        .union(Features::RING_GATE)
        .union(Features::CRASH_BUFFER);

    /// A configuration with `vcpu_count` vCPUs, every feature, the I/O-port gate on the
    /// default port, ring-0 execution, no HARNESS, and the default limits.
    pub fn new(vcpu_count: u32) -> Self {
        Self {
            vcpu_count,
            boot_vcpu: 0,
            memory_map: Vec::new(),
            backend_id: 0x8000_0000,
            backend_version: 0,
            features: Self::ALL_FEATURES,
            gate_kind: GateKind::IOPORT,
            gate_param: pvabi::gate::DEFAULT_IOPORT as u64,
            exec_mode: ExecMode::RING0,
            harness: false,
            ring_doorbell: 0x0512,
            console_history: 64 * 1024,
            console_input_limit: 64 * 1024,
            quirks: Quirks::empty(),
            hook: None,
            console_sink: None,
            store_service: None,
        }
    }
}

/// What a backend does after [`Vm::handle_call`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Write the status to RAX (sign-extended) and the value to RDI and resume the guest.
    Return(Ret),
    /// VCPU.BLOCK: the vCPU is BLOCKED. Sleep it until [`Platform::notify`] for it, then call
    /// [`Vm::finish_block`]; repeat until that returns the `Ret` to complete the call with.
    /// `deadline_ns` is informational (0 = none): [`Vm::poll_timers`] ends a due wait.
    Block {
        /// The deadline in system-time ns, 0 for none.
        deadline_ns: u64,
    },
    /// VCPU.STOP: the vCPU is STOPPED; stop running it (it may be started again).
    Stop,
    /// POWER.SHUTDOWN: the guest is finished; stop every vCPU.
    Shutdown {
        /// The reason.
        reason: ShutdownReason,
        /// The guest's code.
        code: u64,
    },
    /// VCPU.UPCALL_RETURN: restore these registers (sanitise RFLAGS as the execution mode
    /// requires) and resume the guest there.
    UpcallReturn(UpcallFrame),
}

/// An upcall the backend must deliver to a vCPU now (from [`Vm::take_upcall`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upcall {
    /// Inject an external interrupt on this vector.
    Vector(u8),
    /// Enter the callback: call [`Vm::enter_callback`] with the interrupted registers.
    Callback {
        /// The registered callback address.
        target: u64,
    },
}

/// Where a callback upcall resumes the vCPU (spec `EVT-12`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallbackEntry {
    /// New RIP: the callback address.
    pub rip: u64,
    /// New RSP: (interrupted RSP − 128) rounded down to 16, then − 8.
    pub rsp: u64,
    /// New RDI: the frame's guest-physical address.
    pub rdi: u64,
    /// New RSI: the vCPU id.
    pub rsi: u64,
}

/// How the guest shut down, as the host recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShutdownInfo {
    /// The reason.
    pub reason: ShutdownReason,
    /// The code.
    pub code: u64,
    /// The vCPU that asked.
    pub vcpu: u32,
    /// For CRASH with a registered buffer holding a report: the report.
    pub crash: Option<CrashReport>,
}

/// A crash report read from the guest's crash buffer (spec `PWR-5`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrashReport {
    /// Guest-defined crash code.
    pub code: u64,
    /// Crash-site RIP, or 0.
    pub rip: u64,
    /// The message (lossy UTF-8).
    pub message: String,
}

/// One conformance result record (spec `HAR-2`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The outcome.
    pub outcome: ReportOutcome,
    /// Clause ids, split at commas.
    pub clauses: Vec<String>,
    /// Case name.
    pub name: String,
    /// Detail text.
    pub detail: String,
    /// The vCPU that reported.
    pub vcpu: u32,
}

/// Result of a host-side grant lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantMapping {
    /// Guest-physical address of the granted page.
    pub gpa: u64,
    /// Whether the grant is read-only.
    pub readonly: bool,
}

#[derive(Clone, Debug)]
struct VcpuSt {
    state: VcpuState,
    kick: bool,
    block_deadline: u64,
    block_result: Option<Ret>,
    timer: Option<(u64, u32)>,
    clock_page: Option<u64>,
    clock_version: u32,
    steal: Option<u64>,
    steal_version: u32,
    steal_ns: u64,
    upcall_mode: UpcallMode,
    upcall_target: u64,
    in_callback: bool,
}

impl VcpuSt {
    fn new(state: VcpuState) -> Self {
        Self {
            state,
            kick: false,
            block_deadline: 0,
            block_result: None,
            timer: None,
            clock_page: None,
            clock_version: 0,
            steal: None,
            steal_version: 0,
            steal_ns: 0,
            upcall_mode: UpcallMode::NONE,
            upcall_target: 0,
            in_callback: false,
        }
    }

    /// Per-vCPU state at creation or start (`VCPU-8`).
    fn reset(&mut self, state: VcpuState) {
        *self = Self::new(state);
    }
}

#[derive(Clone, Copy, Debug)]
struct RingSt {
    gpa: u64,
    order: u32,
    owner: u32,
    req_cons: u32,
    cmp_prod: u32,
}

struct State {
    vcpus: Vec<VcpuSt>,
    event_page: Option<u64>,
    ports: Ports,
    console_history: VecDeque<u8>,
    console_new: Vec<u8>,
    console_in: VecDeque<u8>,
    store: Store,
    balloon: FrameSet,
    grant: Option<(u64, u64)>,
    crash_buf: Option<(u64, u64)>,
    shutdown: Option<ShutdownInfo>,
    reports: Vec<Report>,
    delayed: Vec<(u64, u32)>,
    ring: Option<RingSt>,
}

/// Effects collected under the state lock and carried out after it is released.
#[derive(Default)]
struct Fx {
    notify: u32,
    deadline: bool,
    sink: Vec<u8>,
    starts: Vec<(u32, u64, u64, u64)>,
}

/// A call's failure: a status, and for BUFFER_TOO_SMALL the size needed (`CONV-11`).
struct Fail(Ret);

impl From<Status> for Fail {
    fn from(s: Status) -> Self {
        Fail(Ret::err(s))
    }
}

fn too_small(needed: usize) -> Fail {
    Fail(Ret {
        status: Status::BUFFER_TOO_SMALL,
        value: needed as u64,
    })
}

type CallResult = Result<u64, Fail>;

enum Flow {
    Value(u64),
    Out(Outcome),
}

/// RFLAGS bits VCPU.UPCALL_RETURN takes from the saved frame (spec `EVT-14`): CF, PF, AF,
/// ZF, SF, DF, OF. The backend keeps every other bit of the vCPU's current RFLAGS.
pub const UPCALL_RFLAGS_FROM_GUEST: u64 = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x400 | 0x800;

fn is_canonical(a: u64) -> bool {
    let top = a >> 47;
    top == 0 || top == (1 << 17) - 1
}

/// A guest: the stateful services of pvabi, shared by all vCPU threads of a backend.
///
/// Create it with [`Vm::new`], hand each vCPU's calls to [`Vm::handle_call`], and follow the
/// protocol of [`Outcome`], [`Vm::take_upcall`] and [`Vm::poll_timers`].
///
/// # Locking
///
/// One internal mutex guards all service state, so each call is atomic with respect to others
/// (`CONV-18`). [`Platform::start_vcpu`], [`Platform::notify`], [`Platform::yield_vcpu`],
/// [`Platform::deadline_changed`], the console sink and top-level [`CallHook`] methods are
/// called with it released. [`Platform::now_ns`], [`Platform::clock_params`],
/// [`Platform::wallclock_epoch_ns`] and [`Platform::advance_clock`] are called with it held
/// and must not call into the `Vm`.
pub struct Vm {
    cfg: VmConfig,
    features: Features,
    memory_map: Vec<MemMapEntry>,
    ram: GuestRam,
    platform: Arc<dyn Platform>,
    state: Mutex<State>,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Vm {
    /// Creates a guest from a configuration, its RAM and the backend's platform.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for a vCPU count outside `1..=16`, a boot vCPU not below it, or a
    /// memory map that is unsorted, overlapping, or has RAM/LOADER entries not backed by `ram`.
    pub fn new(
        cfg: VmConfig,
        ram: GuestRam,
        platform: Arc<dyn Platform>,
    ) -> Result<Self, ConfigError> {
        if cfg.vcpu_count == 0 || cfg.vcpu_count > MAX_VCPUS {
            return Err(ConfigError::VcpuCount(cfg.vcpu_count));
        }
        if cfg.boot_vcpu >= cfg.vcpu_count {
            return Err(ConfigError::BootVcpu(cfg.boot_vcpu));
        }
        let memory_map = if cfg.memory_map.is_empty() {
            ram.regions()
                .into_iter()
                .map(|(base, length)| MemMapEntry {
                    base,
                    length,
                    kind: MemKind::RAM.0,
                    _reserved: 0,
                })
                .collect()
        } else {
            cfg.memory_map.clone()
        };
        let mut prev_end = 0u64;
        for (index, e) in memory_map.iter().enumerate() {
            let end = e.base.checked_add(e.length).ok_or(ConfigError::MemoryMap {
                index,
                why: "base + length overflows",
            })?;
            if e.length == 0 {
                return Err(ConfigError::MemoryMap {
                    index,
                    why: "empty",
                });
            }
            if e.base % PAGE_SIZE != 0 || e.length % PAGE_SIZE != 0 {
                return Err(ConfigError::MemoryMap {
                    index,
                    why: "not page-granular",
                });
            }
            if index > 0 && e.base < prev_end {
                return Err(ConfigError::MemoryMap {
                    index,
                    why: "unsorted or overlapping",
                });
            }
            prev_end = end;
            if (e.kind == MemKind::RAM.0 || e.kind == MemKind::LOADER.0)
                && ram.check_range(e.base, e.length).is_err()
            {
                return Err(ConfigError::MemoryMap {
                    index,
                    why: "not backed by guest RAM",
                });
            }
        }
        let mut features = cfg.features & VmConfig::ALL_FEATURES;
        if cfg.harness {
            features |= Features::HARNESS;
        }
        let vcpus = (0..cfg.vcpu_count)
            .map(|v| {
                VcpuSt::new(if v == cfg.boot_vcpu {
                    VcpuState::RUNNING
                } else {
                    VcpuState::STOPPED
                })
            })
            .collect();
        let state = State {
            vcpus,
            event_page: None,
            ports: Ports::default(),
            console_history: VecDeque::new(),
            console_new: Vec::new(),
            console_in: VecDeque::new(),
            store: Store::new(cfg.quirks),
            balloon: FrameSet::new(),
            grant: None,
            crash_buf: None,
            shutdown: None,
            reports: Vec::new(),
            delayed: Vec::new(),
            ring: None,
        };
        Ok(Self {
            cfg,
            features,
            memory_map,
            ram,
            platform,
            state: Mutex::new(state),
        })
    }

    /// The configuration this guest was created from.
    pub fn config(&self) -> &VmConfig {
        &self.cfg
    }

    /// The feature bits offered (`HARNESS` included when enabled).
    pub fn features(&self) -> Features {
        self.features
    }

    /// Guest RAM.
    pub fn ram(&self) -> &GuestRam {
        &self.ram
    }

    /// The memory map MEMORY.GET_MAP returns.
    pub fn memory_map(&self) -> &[MemMapEntry] {
        &self.memory_map
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The boot info this guest's loader hands over (spec `DISC-2`..`DISC-13`), with the
    /// given locations of the memory-map array and command line.
    pub fn boot_info(&self, mem_map_gpa: u64, cmdline_gpa: u64, cmdline_len: u32) -> BootInfo {
        let mem_size = self
            .memory_map
            .iter()
            .filter(|e| e.kind == MemKind::RAM.0 || e.kind == MemKind::LOADER.0)
            .map(|e| e.length)
            .sum();
        BootInfo {
            magic: BootInfo::MAGIC,
            abi_version: ABI_VERSION.to_u32(),
            size: BootInfo::SIZE as u32,
            gate_kind: self.cfg.gate_kind.0,
            gate_param: self.cfg.gate_param,
            features: self.features.bits(),
            vcpu_count: self.cfg.vcpu_count,
            boot_vcpu: self.cfg.boot_vcpu,
            mem_map_gpa,
            mem_map_entries: self.memory_map.len() as u32,
            exec_mode: self.cfg.exec_mode.0,
            cmdline_gpa: if cmdline_len == 0 { 0 } else { cmdline_gpa },
            cmdline_len,
            backend_id: self.cfg.backend_id,
            mem_size,
            _reserved: [0; 6],
        }
    }

    /// Writes the boot handoff at `gpa` (8-byte aligned, in a LOADER range per `DISC-14`):
    /// the [`BootInfo`], then the memory-map array, then the command line. Returns the boot
    /// info's GPA (= `gpa`), which the loader puts in the boot vCPU's RDI.
    ///
    /// # Errors
    ///
    /// [`HostError::Status`] with INVALID_ADDRESS when `gpa` is misaligned or the handoff does
    /// not fit in guest RAM.
    pub fn write_boot_handoff(&self, gpa: u64, cmdline: &[u8]) -> Result<u64, HostError> {
        GuestRam::check_align(gpa, BootInfo::ALIGN)?;
        let map_gpa = gpa
            .checked_add(BootInfo::SIZE as u64)
            .ok_or(Status::INVALID_ADDRESS)?;
        let map_len = (self.memory_map.len() * MemMapEntry::SIZE) as u64;
        let cmd_gpa = map_gpa
            .checked_add(map_len)
            .ok_or(Status::INVALID_ADDRESS)?;
        let cmd_len = u32::try_from(cmdline.len()).map_err(|_| Status::INVALID_PARAM)?;
        self.ram
            .check_range(gpa, BootInfo::SIZE as u64 + map_len + cmd_len as u64)?;
        let bi = self.boot_info(map_gpa, cmd_gpa, cmd_len);
        self.ram.write_obj(gpa, &bi)?;
        for (i, e) in self.memory_map.iter().enumerate() {
            self.ram
                .write_obj(map_gpa + (i * MemMapEntry::SIZE) as u64, e)?;
        }
        self.ram.write_bytes(cmd_gpa, cmdline)?;
        Ok(gpa)
    }

    // ---------------------------------------------------------------------------------------
    // Dispatch
    // ---------------------------------------------------------------------------------------

    /// Runs one call made by vCPU `vcpu` through a register gate.
    ///
    /// Never panics on any register value. A `vcpu` not below the vCPU count (a backend bug)
    /// gets FAILED.
    pub fn handle_call(&self, vcpu: u32, regs: &Regs) -> Outcome {
        if vcpu >= self.cfg.vcpu_count {
            return Outcome::Return(Ret::err(Status::FAILED));
        }
        if let Some(h) = &self.cfg.hook {
            if let Some(r) = h.before(vcpu, regs) {
                let o = Outcome::Return(r);
                h.after(vcpu, regs, &o);
                return o;
            }
        }
        let mut fx = Fx::default();
        let (out, start) = {
            let mut st = self.lock();
            let call = Call::decode(regs);
            let start = matches!(call, Ok(Call::VcpuStart { .. }));
            let out = self.run(&mut st, &mut fx, vcpu, call);
            // Re-evaluate delivery before the call returns (EVT-11): a backend that looks
            // for upcalls when notified sees this one too.
            if matches!(out, Outcome::Return(_)) && self.upcall_ready(&st, vcpu).is_some() {
                fx.notify |= 1 << vcpu;
            }
            (out, start)
        };
        let failed_start = self.flush(fx);
        let out = match (start, failed_start, out) {
            (true, Some(s), Outcome::Return(_)) => Outcome::Return(Ret::err(s)),
            (_, _, o) => o,
        };
        if let Some(h) = &self.cfg.hook {
            h.after(vcpu, regs, &out);
        }
        out
    }

    /// Carries out deferred effects; returns the status of a failed vCPU start, if any.
    fn flush(&self, fx: Fx) -> Option<Status> {
        let mut failed = None;
        for (v, entry, stack, arg) in fx.starts {
            if let Err(s) = self.platform.start_vcpu(v, entry, stack, arg) {
                let mut st = self.lock();
                if let Some(vc) = st.vcpus.get_mut(v as usize) {
                    vc.reset(VcpuState::STOPPED);
                }
                failed = Some(s);
            }
        }
        if !fx.sink.is_empty() {
            if let Some(sink) = &self.cfg.console_sink {
                sink(&fx.sink);
            }
        }
        for v in 0..self.cfg.vcpu_count {
            if fx.notify & (1 << v) != 0 {
                self.platform.notify(v);
            }
        }
        if fx.deadline {
            if let Some(d) = self.next_deadline() {
                self.platform.deadline_changed(d);
            }
        }
        failed
    }

    fn run(&self, st: &mut State, fx: &mut Fx, v: u32, call: Result<Call, Status>) -> Outcome {
        let call = match call {
            Ok(c) => c,
            Err(s) => return Outcome::Return(Ret::err(s)),
        };
        if !self.offered(&call) {
            return Outcome::Return(Ret::err(Status::NOT_SUPPORTED));
        }
        match self.exec(st, fx, v, call) {
            Ok(Flow::Value(x)) => Outcome::Return(Ret::ok(x)),
            Ok(Flow::Out(o)) => o,
            Err(Fail(r)) => Outcome::Return(Ret {
                status: r.status,
                value: r.value,
            }),
        }
    }

    /// A call inside a batch (multicall entry, ring request): never one that does not return.
    fn run_nested(&self, st: &mut State, fx: &mut Fx, v: u32, regs: &Regs, ring: bool) -> Ret {
        if let Some(h) = &self.cfg.hook {
            if let Some(r) = h.before(v, regs) {
                h.after(v, regs, &Outcome::Return(r));
                return r;
            }
        }
        let call = Call::decode(regs);
        let ret = match call {
            Ok(c)
                if !c.allowed_in_batch()
                    || (ring && matches!(c, Call::RingRegister { .. } | Call::RingUnregister)) =>
            {
                Ret::err(Status::INVALID_PARAM)
            }
            other => match self.run(st, fx, v, other) {
                Outcome::Return(r) => r,
                _ => Ret::err(Status::FAILED),
            },
        };
        if let Some(h) = &self.cfg.hook {
            h.after(v, regs, &Outcome::Return(ret));
        }
        ret
    }

    fn has(&self, f: Features) -> bool {
        self.features.contains(f)
    }

    fn service_offered(&self, s: ServiceId) -> bool {
        match s {
            ServiceId::HARNESS => self.cfg.harness,
            ServiceId::GRANT => self.has(Features::GRANT),
            ServiceId::MULTICALL => self.has(Features::MULTICALL),
            s => ServiceId::V1.contains(&s),
        }
    }

    /// Whether this host offers a decoded call (`CONV-7`, `BASE-11`).
    fn offered(&self, c: &Call) -> bool {
        if c.is_harness() {
            return self.cfg.harness;
        }
        match c {
            Call::GrantSetupTable { .. } | Call::GrantQuery => self.has(Features::GRANT),
            Call::MulticallExecute { .. } => self.has(Features::MULTICALL),
            Call::RingRegister { .. } | Call::RingUnregister => self.has(Features::RING_GATE),
            Call::ClockRegisterPage { .. } | Call::ClockUnregisterPage => {
                self.has(Features::CLOCK_PAGE)
            }
            Call::ClockSetTimer { .. } => self.has(Features::TIMER),
            Call::VcpuRegisterStealTime { .. } => self.has(Features::STEAL_TIME),
            Call::BalloonRelease { .. } | Call::BalloonReclaim { .. } | Call::BalloonQuery => {
                self.has(Features::BALLOON)
            }
            Call::StoreTxnStart | Call::StoreTxnCommit { .. } | Call::StoreTxnAbort { .. } => {
                self.has(Features::STORE_TXN)
            }
            Call::PowerRegisterCrashBuffer { .. } => self.has(Features::CRASH_BUFFER),
            _ => true,
        }
    }

    fn vcpu_arg(&self, v: u64) -> Result<u32, Status> {
        if v < self.cfg.vcpu_count as u64 {
            Ok(v as u32)
        } else {
            Err(Status::INVALID_PARAM)
        }
    }

    fn exec(&self, st: &mut State, fx: &mut Fx, v: u32, call: Call) -> Result<Flow, Fail> {
        let val = |x: u64| -> Result<Flow, Fail> { Ok(Flow::Value(x)) };
        match call {
            // BASE
            Call::GetAbiVersion => val(ABI_VERSION.to_u32() as u64),
            Call::GetBackendId => val(self.cfg.backend_id as u64),
            Call::GetBackendVersion => val(self.cfg.backend_version),
            Call::ProbeService { service } => {
                let s = u16::try_from(service).map_err(|_| Status::INVALID_PARAM)?;
                let s = ServiceId(s);
                val(if self.service_offered(s) {
                    function_count(s) as u64
                } else {
                    0
                })
            }
            Call::GetFeatures => val(self.features.bits()),
            Call::GetVcpuId => val(v as u64),
            Call::GetVcpuCount => val(self.cfg.vcpu_count as u64),
            Call::RingRegister { ring_gpa, order } => {
                self.ring_register(st, v, ring_gpa, order).map(Flow::Value)
            }
            Call::RingUnregister => {
                st.ring.take().ok_or(Status::NOT_FOUND)?;
                val(0)
            }
            // CONSOLE
            Call::ConsoleWrite { buf_gpa, len } => {
                if len > pvabi::console::MAX_TRANSFER {
                    return Err(Status::INVALID_PARAM.into());
                }
                let data = self
                    .ram
                    .read_bytes(buf_gpa, len, pvabi::console::MAX_TRANSFER)?;
                self.console_out(st, fx, &data);
                let n = if self.cfg.quirks.contains(Quirks::CONSOLE_SHORT_COUNT) {
                    len.saturating_sub(1)
                } else {
                    len
                };
                val(n)
            }
            Call::ConsoleWriteByte { byte } => {
                let b = u8::try_from(byte).map_err(|_| Status::INVALID_PARAM)?;
                self.console_out(st, fx, &[b]);
                val(1)
            }
            Call::ConsoleRead { buf_gpa, len } => {
                if len > pvabi::console::MAX_TRANSFER {
                    return Err(Status::INVALID_PARAM.into());
                }
                // The whole buffer is checked even when nothing is queued (CONS-5).
                self.ram.check_range(buf_gpa, len)?;
                let n = (len as usize).min(st.console_in.len());
                let data: Vec<u8> = st.console_in.iter().take(n).copied().collect();
                self.ram.write_bytes(buf_gpa, &data)?;
                st.console_in.drain(..n);
                val(n as u64)
            }
            // CLOCK
            Call::ClockRegisterPage { page_gpa } => {
                GuestRam::check_align(page_gpa, ClockPage::ALIGN)?;
                self.ram.check_range(page_gpa, ClockPage::SIZE as u64)?;
                let vc = st.vcpus.get_mut(v as usize).ok_or(Status::FAILED)?;
                vc.clock_page = Some(page_gpa);
                self.write_clock_page(vc);
                val(0)
            }
            Call::ClockUnregisterPage => {
                let vc = st.vcpus.get_mut(v as usize).ok_or(Status::FAILED)?;
                vc.clock_page.take().ok_or(Status::NOT_FOUND)?;
                val(0)
            }
            Call::ClockGetWallclock => val(self.platform.wallclock_epoch_ns()),
            Call::ClockGetTime => val(self.platform.now_ns()),
            Call::ClockSetTimer { deadline_ns, port } => {
                if deadline_ns == pvabi::clock::TIMER_CANCEL {
                    if let Some(vc) = st.vcpus.get_mut(v as usize) {
                        vc.timer = None;
                    }
                    fx.deadline = true;
                    return val(0);
                }
                let port = port_arg(port)?;
                st.event_page.ok_or(Status::BAD_STATE)?;
                st.ports.bound(port)?;
                if let Some(vc) = st.vcpus.get_mut(v as usize) {
                    vc.timer = Some((deadline_ns, port));
                }
                if deadline_ns <= self.platform.now_ns() {
                    if let Some(vc) = st.vcpus.get_mut(v as usize) {
                        vc.timer = None;
                    }
                    self.raise(st, fx, port);
                }
                fx.deadline = true;
                val(0)
            }
            // VCPU
            Call::VcpuYield => {
                self.platform.yield_vcpu(v);
                val(0)
            }
            Call::VcpuBlock { deadline_ns } => self.block(st, fx, v, deadline_ns),
            Call::VcpuKick { vcpu } => {
                let t = self.vcpu_arg(vcpu)?;
                let vc = st.vcpus.get_mut(t as usize).ok_or(Status::FAILED)?;
                if vc.state == VcpuState::STOPPED {
                    return Err(Status::BAD_STATE.into());
                }
                if vc.state == VcpuState::BLOCKED {
                    Self::wake(vc, fx, t, Ret::ok(0));
                } else {
                    vc.kick = true;
                }
                val(0)
            }
            Call::VcpuStart {
                vcpu,
                entry,
                stack,
                arg,
            } => {
                let t = self.vcpu_arg(vcpu)?;
                let vc = st.vcpus.get_mut(t as usize).ok_or(Status::FAILED)?;
                if vc.state != VcpuState::STOPPED {
                    return Err(Status::ALREADY.into());
                }
                if !is_canonical(entry) || !is_canonical(stack) {
                    return Err(Status::INVALID_PARAM.into());
                }
                vc.reset(VcpuState::START_PENDING);
                fx.starts.push((t, entry, stack, arg));
                val(0)
            }
            Call::VcpuStop => {
                let others_running = st
                    .vcpus
                    .iter()
                    .enumerate()
                    .any(|(i, x)| i != v as usize && x.state != VcpuState::STOPPED);
                if !others_running {
                    return Err(Status::BAD_STATE.into());
                }
                if let Some(vc) = st.vcpus.get_mut(v as usize) {
                    vc.reset(VcpuState::STOPPED);
                }
                fx.deadline = true;
                Ok(Flow::Out(Outcome::Stop))
            }
            Call::VcpuGetStatus { vcpu } => {
                let t = self.vcpu_arg(vcpu)?;
                if t == v {
                    return val(VcpuState::RUNNING.0 as u64);
                }
                val(st
                    .vcpus
                    .get(t as usize)
                    .map(|x| x.state.0 as u64)
                    .unwrap_or(0))
            }
            Call::VcpuRegisterStealTime { record_gpa } => {
                GuestRam::check_align(record_gpa, StealTime::ALIGN)?;
                self.ram.check_range(record_gpa, StealTime::SIZE as u64)?;
                let vc = st.vcpus.get_mut(v as usize).ok_or(Status::FAILED)?;
                vc.steal = Some(record_gpa);
                self.write_steal(vc);
                val(0)
            }
            Call::VcpuUpcallReturn => {
                let page = st.event_page.ok_or(Status::BAD_STATE)?;
                let vc = st.vcpus.get_mut(v as usize).ok_or(Status::FAILED)?;
                if !vc.in_callback || vc.upcall_mode != UpcallMode::CALLBACK {
                    return Err(Status::BAD_STATE.into());
                }
                let info = page + EventPage::vcpu_offset(v) as u64;
                // The frame as the page holds it now, copied once (EVT-14, SEC-6).
                let mut frame: UpcallFrame = self.ram.read_obj(info + vcpu_info::FRAME as u64)?;
                if !is_canonical(frame.rip) || !is_canonical(frame.rsp) {
                    return Err(Status::INVALID_PARAM.into());
                }
                frame.rflags &= UPCALL_RFLAGS_FROM_GUEST;
                frame._reserved = [0; 4];
                self.ram
                    .store_u32(info + vcpu_info::UPCALL_MASK as u64, 0, Ordering::SeqCst)?;
                vc.in_callback = false;
                // Delivery is re-evaluated by the backend (take_upcall) before resuming.
                fx.notify |= 1 << v;
                Ok(Flow::Out(Outcome::UpcallReturn(frame)))
            }
            // EVENT
            Call::EventRegisterPage { page_gpa } => {
                GuestRam::check_align(page_gpa, PAGE_SIZE)?;
                self.ram.check_range(page_gpa, PAGE_SIZE)?;
                if st.event_page.is_some() {
                    return Err(Status::ALREADY.into());
                }
                st.event_page = Some(page_gpa);
                val(0)
            }
            Call::EventSetUpcall { mode, target } => {
                let mode = UpcallMode(u32::try_from(mode).map_err(|_| Status::INVALID_PARAM)?);
                match mode {
                    UpcallMode::NONE => {}
                    UpcallMode::VECTOR => {
                        if !self.has(Features::UPCALL_VECTOR) {
                            return Err(Status::NOT_SUPPORTED.into());
                        }
                        if !(MIN_UPCALL_VECTOR..=255).contains(&target) {
                            return Err(Status::INVALID_PARAM.into());
                        }
                    }
                    UpcallMode::CALLBACK => {
                        if !self.has(Features::UPCALL_CALLBACK) {
                            return Err(Status::NOT_SUPPORTED.into());
                        }
                        if !is_canonical(target) {
                            return Err(Status::INVALID_PARAM.into());
                        }
                    }
                    _ => return Err(Status::INVALID_PARAM.into()),
                }
                if mode != UpcallMode::NONE && st.event_page.is_none() {
                    return Err(Status::BAD_STATE.into());
                }
                let vc = st.vcpus.get_mut(v as usize).ok_or(Status::FAILED)?;
                vc.upcall_mode = mode;
                vc.upcall_target = if mode == UpcallMode::NONE { 0 } else { target };
                if mode != UpcallMode::NONE {
                    fx.notify |= 1 << v;
                }
                val(0)
            }
            Call::EventAlloc => {
                let page = st.event_page.ok_or(Status::BAD_STATE)?;
                let port = st.ports.alloc(v)?;
                // A fresh port starts with its pending and mask bits clear (EVT-3).
                let (w, b) = ((port / 64) as u64, 1u64 << (port % 64));
                let cleared = self
                    .ram
                    .fetch_and_u64(page + EventPage::PENDING_OFFSET as u64 + w * 8, !b)
                    .and_then(|_| {
                        self.ram
                            .fetch_and_u64(page + EventPage::MASK_OFFSET as u64 + w * 8, !b)
                    });
                if let Err(e) = cleared {
                    let _ = st.ports.close(port);
                    return Err(e.into());
                }
                val(port as u64)
            }
            Call::EventBindVcpu { port, vcpu } => {
                st.event_page.ok_or(Status::BAD_STATE)?;
                let port = port_arg(port)?;
                let cur = st.ports.bound(port)?;
                let t = self.vcpu_arg(vcpu)?;
                if cur == t {
                    return Err(Status::ALREADY.into());
                }
                st.ports.bind(port, t)?;
                val(0)
            }
            Call::EventClose { port } => {
                let page = st.event_page.ok_or(Status::BAD_STATE)?;
                let port = port_arg(port)?;
                st.ports.close(port)?;
                {
                    let (w, b) = ((port / 64) as u64, 1u64 << (port % 64));
                    self.ram
                        .fetch_and_u64(page + EventPage::PENDING_OFFSET as u64 + w * 8, !b)?;
                }
                for vc in &mut st.vcpus {
                    if vc.timer.is_some_and(|(_, p)| p == port) {
                        vc.timer = None;
                    }
                }
                st.delayed.retain(|(_, p)| *p != port);
                val(0)
            }
            Call::EventSend { port } => {
                st.event_page.ok_or(Status::BAD_STATE)?;
                let port = port_arg(port)?;
                st.ports.bound(port)?;
                self.raise(st, fx, port);
                val(0)
            }
            Call::EventMask { port } => {
                let page = st.event_page.ok_or(Status::BAD_STATE)?;
                let port = port_arg(port)?;
                st.ports.bound(port)?;
                let (w, b) = ((port / 64) as u64, 1u64 << (port % 64));
                self.ram
                    .fetch_or_u64(page + EventPage::MASK_OFFSET as u64 + w * 8, b)?;
                val(0)
            }
            Call::EventUnmask { port } => {
                let page = st.event_page.ok_or(Status::BAD_STATE)?;
                let port = port_arg(port)?;
                let target = st.ports.bound(port)?;
                let (w, b) = ((port / 64) as u64, 1u64 << (port % 64));
                self.ram
                    .fetch_and_u64(page + EventPage::MASK_OFFSET as u64 + w * 8, !b)?;
                let pending = self.ram.load_u64(page + w * 8, Ordering::SeqCst)?;
                if pending & b != 0 {
                    self.mark_upcall(st, fx, page, target, w);
                }
                val(0)
            }
            // MEMORY
            Call::MemoryGetMap {
                buf_gpa,
                max_entries,
            } => {
                let total = self.memory_map.len();
                let n = usize::try_from(max_entries)
                    .unwrap_or(usize::MAX)
                    .min(total);
                let bytes = (n * MemMapEntry::SIZE) as u64;
                self.ram.check_range(buf_gpa, bytes)?;
                for (i, e) in self.memory_map.iter().take(n).enumerate() {
                    self.ram
                        .write_obj(buf_gpa + (i * MemMapEntry::SIZE) as u64, e)?;
                }
                val(total as u64)
            }
            Call::BalloonRelease { gpa, pages } => {
                let (s, e) = self.balloon_range(gpa, pages)?;
                if st.balloon.overlaps(s, e) {
                    return Err(Status::ALREADY.into());
                }
                if Self::shared_areas(st).any(|(a, l)| a < e * PAGE_SIZE && s * PAGE_SIZE < a + l) {
                    return Err(Status::BAD_STATE.into());
                }
                st.balloon.insert(s, e);
                val(0)
            }
            Call::BalloonReclaim { gpa, pages } => {
                let (s, e) = self.balloon_range(gpa, pages)?;
                if !st.balloon.covers(s, e) {
                    return Err(Status::BAD_STATE.into());
                }
                self.ram.zero(gpa, pages * PAGE_SIZE)?;
                st.balloon.remove(s, e);
                val(0)
            }
            Call::BalloonQuery => val(st.balloon.len()),
            // GRANT
            Call::GrantSetupTable { table_gpa, entries } => {
                if entries > pvabi::grant::MAX_ENTRIES {
                    return Err(Status::INVALID_PARAM.into());
                }
                if entries == 0 {
                    st.grant = None;
                    return val(0);
                }
                GuestRam::check_align(table_gpa, GrantEntry::SIZE as u64)?;
                self.ram
                    .check_range(table_gpa, entries * GrantEntry::SIZE as u64)?;
                st.grant = Some((table_gpa, entries));
                val(0)
            }
            Call::GrantQuery => val(pvabi::grant::MAX_ENTRIES),
            // STORE
            Call::StoreRead {
                path_gpa,
                path_len,
                buf_gpa,
                buf_len,
                txn,
            } => {
                let path = self.path_in(path_gpa, path_len)?;
                let txn = self.txn_arg(txn)?;
                let value = self.store_op(&mut st.store, |s| s.read(&path, txn))?;
                self.copy_out_sized(buf_gpa, buf_len, &value)
            }
            Call::StoreWrite {
                path_gpa,
                path_len,
                val_gpa,
                val_len,
                txn,
            } => {
                let path = self.path_in(path_gpa, path_len)?;
                if val_len > MAX_VALUE {
                    return Err(Status::NO_SPACE.into());
                }
                let value = self.ram.read_bytes(val_gpa, val_len, MAX_VALUE)?;
                let txn = self.txn_arg(txn)?;
                self.store_op(&mut st.store, |s| s.write(&path, &value, txn))?;
                self.raise_store(st, fx);
                val(0)
            }
            Call::StoreList {
                path_gpa,
                path_len,
                buf_gpa,
                buf_len,
                txn,
            } => {
                let path = self.path_in(path_gpa, path_len)?;
                let txn = self.txn_arg(txn)?;
                let names = self.store_op(&mut st.store, |s| s.list(&path, txn))?;
                self.copy_out_sized(buf_gpa, buf_len, &names)
            }
            Call::StoreRemove {
                path_gpa,
                path_len,
                txn,
            } => {
                let path = self.path_in(path_gpa, path_len)?;
                let txn = self.txn_arg(txn)?;
                self.store_op(&mut st.store, |s| s.remove(&path, txn))?;
                self.raise_store(st, fx);
                val(0)
            }
            Call::StoreWatch {
                path_gpa,
                path_len,
                port,
            } => {
                let path = self.path_in(path_gpa, path_len)?;
                let port = port_arg(port)?;
                st.ports.bound(port)?;
                let id = self.store_op(&mut st.store, |s| s.watch(&path, port))?;
                val(id as u64)
            }
            Call::StoreUnwatch { watch_id } => {
                let id = u32::try_from(watch_id).map_err(|_| Status::INVALID_PARAM)?;
                self.store_op(&mut st.store, |s| s.unwatch(id))?;
                val(0)
            }
            Call::StoreWatchNext { buf_gpa, buf_len } => {
                let ev = self
                    .store_op(&mut st.store, |s| s.peek_event())
                    .ok_or(Status::NOT_FOUND)?;
                let hdr = WatchEvent {
                    watch_id: ev.watch_id,
                    path_len: ev.path.len() as u32,
                    dropped: ev.dropped,
                    _reserved: 0,
                };
                let mut bytes = hdr.as_bytes_vec();
                bytes.extend_from_slice(&ev.path);
                let r = self.copy_out_sized(buf_gpa, buf_len, &bytes)?;
                self.store_op(&mut st.store, |s| s.pop_event());
                Ok(r)
            }
            Call::StoreTxnStart => val(self.store_op(&mut st.store, |s| s.txn_start())? as u64),
            Call::StoreTxnCommit { txn } => {
                let t = self.txn_id(txn)?;
                let r = self.store_op(&mut st.store, |s| s.txn_commit(t));
                self.raise_store(st, fx);
                r?;
                val(0)
            }
            Call::StoreTxnAbort { txn } => {
                let t = self.txn_id(txn)?;
                self.store_op(&mut st.store, |s| s.txn_abort(t))?;
                val(0)
            }
            // POWER
            Call::PowerShutdown { reason, code } => {
                let r = ShutdownReason(u32::try_from(reason).map_err(|_| Status::INVALID_PARAM)?);
                if ![
                    ShutdownReason::POWEROFF,
                    ShutdownReason::REBOOT,
                    ShutdownReason::CRASH,
                ]
                .contains(&r)
                {
                    return Err(Status::INVALID_PARAM.into());
                }
                let crash = if r == ShutdownReason::CRASH {
                    self.read_crash(st)
                } else {
                    None
                };
                if st.shutdown.is_none() {
                    st.shutdown = Some(ShutdownInfo {
                        reason: r,
                        code,
                        vcpu: v,
                        crash,
                    });
                }
                Ok(Flow::Out(Outcome::Shutdown { reason: r, code }))
            }
            Call::PowerRegisterCrashBuffer { buf_gpa, len } => {
                if len == 0 {
                    st.crash_buf = None;
                    return val(0);
                }
                if len < CrashHeader::SIZE as u64 || len > CrashHeader::MAX_BUFFER {
                    return Err(Status::INVALID_PARAM.into());
                }
                GuestRam::check_align(buf_gpa, 8)?;
                self.ram.check_range(buf_gpa, len)?;
                st.crash_buf = Some((buf_gpa, len));
                val(0)
            }
            // MULTICALL
            Call::MulticallExecute { array_gpa, count } => {
                self.multicall(st, fx, v, array_gpa, count).map(Flow::Value)
            }
            // HARNESS
            Call::HarnessReport { record_gpa, len } => {
                let rep = self.read_report(record_gpa, len, v)?;
                if st.reports.len() >= MAX_REPORTS {
                    return Err(Status::NO_SPACE.into());
                }
                st.reports.push(rep);
                val(0)
            }
            Call::HarnessInjectEvent { port } => {
                st.event_page.ok_or(Status::BAD_STATE)?;
                let port = port_arg(port)?;
                st.ports.bound(port)?;
                self.raise(st, fx, port);
                val(0)
            }
            Call::HarnessStoreHostWrite {
                path_gpa,
                path_len,
                val_gpa,
                val_len,
                access,
            } => {
                let path = self.path_in(path_gpa, path_len)?;
                let access = match access {
                    0 => GuestAccess::NONE,
                    1 => GuestAccess::READ,
                    3 => GuestAccess::READ_WRITE,
                    _ => return Err(Status::INVALID_PARAM.into()),
                };
                if val_len > MAX_VALUE {
                    return Err(Status::NO_SPACE.into());
                }
                let value = self.ram.read_bytes(val_gpa, val_len, MAX_VALUE)?;
                self.store_op(&mut st.store, |s| s.host_write(&path, &value, access))?;
                self.raise_store(st, fx);
                val(0)
            }
            Call::HarnessStoreHostRead {
                path_gpa,
                path_len,
                buf_gpa,
                buf_len,
            } => {
                let path = self.path_in(path_gpa, path_len)?;
                let value = self.store_op(&mut st.store, |s| s.host_read(&path))?;
                self.copy_out_sized(buf_gpa, buf_len, &value)
            }
            Call::HarnessConsoleReadback { buf_gpa, len } => {
                if len > pvabi::console::MAX_TRANSFER {
                    return Err(Status::INVALID_PARAM.into());
                }
                self.ram.check_range(buf_gpa, len)?;
                let n = (len as usize).min(st.console_history.len());
                let skip = st.console_history.len() - n;
                let data: Vec<u8> = st.console_history.iter().skip(skip).copied().collect();
                self.ram.write_bytes(buf_gpa, &data)?;
                val(n as u64)
            }
            Call::HarnessConsoleInput { buf_gpa, len } => {
                let data = self
                    .ram
                    .read_bytes(buf_gpa, len, pvabi::console::MAX_TRANSFER)?;
                if st.console_in.len() + data.len() > self.cfg.console_input_limit {
                    return Err(Status::NO_SPACE.into());
                }
                st.console_in.extend(data);
                val(0)
            }
            Call::HarnessClockAdvance { ns } => {
                self.platform.advance_clock(ns)?;
                self.time_changed_locked(st, fx);
                val(0)
            }
            Call::HarnessClockRead => val(self.platform.now_ns()),
            Call::HarnessGrantAccess {
                grant_ref,
                offset,
                write,
            } => {
                if offset >= PAGE_SIZE {
                    return Err(Status::INVALID_PARAM.into());
                }
                let wr = if write == GRANT_ACCESS_READ {
                    None
                } else {
                    Some(u8::try_from(write).map_err(|_| Status::INVALID_PARAM)?)
                };
                let gref = u32::try_from(grant_ref).map_err(|_| Status::INVALID_PARAM)?;
                let m = self.grant_lookup(st, gref, wr.is_some())?;
                match wr {
                    None => {
                        let mut b = [0u8; 1];
                        self.ram.read_into(m.gpa + offset, &mut b)?;
                        val(b[0] as u64)
                    }
                    Some(b) => {
                        self.ram.write_bytes(m.gpa + offset, &[b])?;
                        val(0)
                    }
                }
            }
            Call::HarnessBalloonCheck { gpa } => {
                GuestRam::check_align(gpa, PAGE_SIZE)?;
                val(st.balloon.contains(gpa / PAGE_SIZE) as u64)
            }
        }
    }

    // ---------------------------------------------------------------------------------------
    // Helpers for calls
    // ---------------------------------------------------------------------------------------

    /// Runs `f` on the guest's STORE service: the configured [`VmConfig::store_service`]
    /// (locked; a poisoned lock is taken over, the service keeping its state consistent per
    /// call), or the `Vm`'s own store.
    fn store_op<T>(&self, own: &mut Store, f: impl FnOnce(&mut dyn StoreService) -> T) -> T {
        match &self.cfg.store_service {
            Some(m) => f(&mut *m.lock().unwrap_or_else(|p| p.into_inner())),
            None => f(own),
        }
    }

    /// Collects changes of a [`VmConfig::store_service`] store that happened outside the guest's
    /// calls (other writers) and raises the ports of the watches they fired. A backend with a
    /// store service calls this periodically; without one it does nothing.
    pub fn poll_store_events(&self) {
        if self.cfg.store_service.is_none() {
            return;
        }
        let mut fx = Fx::default();
        {
            let mut st = self.lock();
            self.raise_store(&mut st, &mut fx);
        }
        self.flush(fx);
    }

    fn path_in(&self, gpa: u64, len: u64) -> Result<Vec<u8>, Status> {
        if len == 0 {
            return Ok(Vec::new());
        }
        self.ram.read_bytes(gpa, len, MAX_PATH)
    }

    fn txn_arg(&self, txn: u64) -> Result<u32, Status> {
        if txn != NO_TXN && !self.has(Features::STORE_TXN) {
            return Err(Status::NOT_SUPPORTED);
        }
        u32::try_from(txn).map_err(|_| Status::INVALID_PARAM)
    }

    fn txn_id(&self, txn: u64) -> Result<u32, Status> {
        match u32::try_from(txn) {
            Ok(0) | Err(_) => Err(Status::INVALID_PARAM),
            Ok(t) => Ok(t),
        }
    }

    /// Copies `data` out to a guest buffer of `buf_len` bytes; BUFFER_TOO_SMALL with the size
    /// needed when it does not fit. Returns the length.
    fn copy_out_sized(&self, buf_gpa: u64, buf_len: u64, data: &[u8]) -> Result<Flow, Fail> {
        // The whole named buffer must be guest RAM (STORE-4), whatever fits in it.
        self.ram.check_range(buf_gpa, buf_len)?;
        if (data.len() as u64) > buf_len {
            return Err(too_small(data.len()));
        }
        self.ram.write_bytes(buf_gpa, data)?;
        Ok(Flow::Value(data.len() as u64))
    }

    fn console_out(&self, st: &mut State, fx: &mut Fx, data: &[u8]) {
        st.console_history.extend(data.iter().copied());
        let over = st
            .console_history
            .len()
            .saturating_sub(self.cfg.console_history);
        st.console_history.drain(..over);
        st.console_new.extend_from_slice(data);
        let over = st
            .console_new
            .len()
            .saturating_sub(self.cfg.console_history.max(1 << 20));
        st.console_new.drain(..over);
        fx.sink.extend_from_slice(data);
    }

    fn balloon_range(&self, gpa: u64, pages: u64) -> Result<(u64, u64), Status> {
        if pages == 0 || pages > MAX_BALLOON_PAGES_PER_CALL {
            return Err(Status::INVALID_PARAM);
        }
        GuestRam::check_align(gpa, PAGE_SIZE)?;
        let len = pages * PAGE_SIZE;
        let end = gpa.checked_add(len).ok_or(Status::INVALID_ADDRESS)?;
        // Every page in RAM ranges of the map, which may be adjacent (the map is sorted).
        let mut covered = gpa;
        for e in self.memory_map.iter().filter(|e| e.kind == MemKind::RAM.0) {
            if e.base <= covered && covered < e.base.saturating_add(e.length) {
                covered = e.base.saturating_add(e.length);
            }
        }
        if covered < end {
            return Err(Status::INVALID_ADDRESS);
        }
        self.ram.check_range(gpa, len)?;
        Ok((gpa / PAGE_SIZE, end / PAGE_SIZE))
    }

    /// Areas the host writes on its own (MEM-9): event page, clock pages, steal-time records,
    /// the ring.
    fn shared_areas(st: &State) -> impl Iterator<Item = (u64, u64)> + '_ {
        let ev = st.event_page.map(|p| (p, PAGE_SIZE));
        let ring = st.ring.map(|r| (r.gpa, RingHeader::ring_bytes(r.order)));
        let grant = st
            .grant
            .map(|(gpa, entries)| (gpa, entries * GrantEntry::SIZE as u64));
        let crash = st.crash_buf;
        let per_vcpu = st.vcpus.iter().flat_map(|v| {
            [
                v.clock_page.map(|p| (p, ClockPage::SIZE as u64)),
                v.steal.map(|p| (p, StealTime::SIZE as u64)),
            ]
        });
        // Every shared area of spec chapter 9: clock pages, steal-time records, the event
        // page, the grant table, the ring and the crash buffer.
        ev.into_iter()
            .chain(ring)
            .chain(grant)
            .chain(crash)
            .chain(per_vcpu.flatten())
    }

    fn raise_store(&self, st: &mut State, fx: &mut Fx) {
        let raised = self
            .store_op(&mut st.store, |s| s.poll_events())
            .unwrap_or_default();
        for p in raised {
            if st.ports.bound(p).is_ok() {
                self.raise(st, fx, p);
            }
        }
    }

    /// Raises a port (send, timer, watch, injection), consulting the hook.
    fn raise(&self, st: &mut State, fx: &mut Fx, port: u32) {
        if let Some(h) = &self.cfg.hook {
            match h.event(port) {
                EventAction::Deliver => {}
                EventAction::Drop => return,
                EventAction::Delay(ns) => {
                    st.delayed
                        .push((self.platform.now_ns().saturating_add(ns), port));
                    fx.deadline = true;
                    return;
                }
            }
        }
        self.deliver(st, fx, port);
    }

    /// Sets the pending bit and, if unmasked, the selector and upcall (`EVT-6`, `EVT-7`).
    fn deliver(&self, st: &mut State, fx: &mut Fx, port: u32) {
        let (Some(page), Ok(target)) = (st.event_page, st.ports.bound(port)) else {
            return;
        };
        let (w, b) = ((port / 64) as u64, 1u64 << (port % 64));

        let Ok(old) = self
            .ram
            .fetch_or_u64(page + EventPage::PENDING_OFFSET as u64 + w * 8, b)
        else {
            return;
        };
        if old & b != 0 {
            return;
        }
        let mask = self
            .ram
            .load_u64(
                page + EventPage::MASK_OFFSET as u64 + w * 8,
                Ordering::SeqCst,
            )
            .unwrap_or(u64::MAX);
        if mask & b == 0 {
            self.mark_upcall(st, fx, page, target, w);
        }
    }

    fn mark_upcall(&self, st: &mut State, fx: &mut Fx, page: u64, v: u32, word: u64) {
        if self.cfg.quirks.contains(Quirks::EVENT_NO_UPCALL) {
            return;
        }
        let info = page + EventPage::vcpu_offset(v) as u64;
        let _ = self
            .ram
            .fetch_or_u64(info + vcpu_info::SELECTOR as u64, 1 << word);
        let _ = self
            .ram
            .store_u32(info + vcpu_info::UPCALL_PENDING as u64, 1, Ordering::SeqCst);
        if let Some(vc) = st.vcpus.get_mut(v as usize) {
            // Wake it whatever its upcall_mask (EVT-7, VCPU-14).
            if vc.state == VcpuState::BLOCKED {
                Self::wake(vc, fx, v, Ret::ok(0));
            }
        }
        fx.notify |= 1 << v;
    }

    fn wake(vc: &mut VcpuSt, fx: &mut Fx, v: u32, ret: Ret) {
        vc.state = VcpuState::RUNNING;
        vc.block_result = Some(ret);
        vc.block_deadline = 0;
        vc.kick = false;
        fx.notify |= 1 << v;
        fx.deadline = true;
    }

    fn block(&self, st: &mut State, fx: &mut Fx, v: u32, deadline: u64) -> Result<Flow, Fail> {
        let pending = match st.event_page {
            Some(page) => {
                let info = page + EventPage::vcpu_offset(v) as u64;
                self.ram
                    .load_u32(info + vcpu_info::UPCALL_PENDING as u64, Ordering::SeqCst)?
                    != 0
            }
            None => false,
        };
        let vc = st.vcpus.get_mut(v as usize).ok_or(Status::FAILED)?;
        if vc.kick || pending {
            vc.kick = false;
            return Ok(Flow::Value(0));
        }
        if deadline != BLOCK_FOREVER && deadline <= self.platform.now_ns() {
            return Err(Status::TIMED_OUT.into());
        }
        vc.state = VcpuState::BLOCKED;
        vc.block_deadline = deadline;
        vc.block_result = None;
        fx.deadline = deadline != BLOCK_FOREVER;
        Ok(Flow::Out(Outcome::Block {
            deadline_ns: deadline,
        }))
    }

    fn write_clock_page(&self, vc: &mut VcpuSt) {
        let Some(gpa) = vc.clock_page else { return };
        let p = self.platform.clock_params();
        let even = self.cfg.quirks.contains(Quirks::CLOCK_VERSION_EVEN);
        vc.clock_version = vc.clock_version.wrapping_add(if even { 2 } else { 1 });
        let _ = self.ram.store_u32(gpa, vc.clock_version, Ordering::SeqCst);
        let page = ClockPage {
            version: vc.clock_version,
            _reserved0: 0,
            tsc_timestamp: p.tsc_timestamp,
            system_time: p.system_time,
            tsc_to_system_mul: p.tsc_to_system_mul,
            tsc_shift: p.tsc_shift,
            flags: p.flags & ClockPage::FLAG_TSC_STABLE,
            _reserved1: [0; 2],
        };
        let _ = self
            .ram
            .write_bytes(gpa + 4, page.as_bytes().get(4..).unwrap_or(&[]));
        if !even {
            vc.clock_version = vc.clock_version.wrapping_add(1);
        }
        let _ = self.ram.store_u32(gpa, vc.clock_version, Ordering::SeqCst);
    }

    fn write_steal(&self, vc: &mut VcpuSt) {
        let Some(gpa) = vc.steal else { return };
        vc.steal_version = vc.steal_version.wrapping_add(1);
        let _ = self
            .ram
            .store_u32(gpa + 8, vc.steal_version, Ordering::SeqCst);
        let rec = StealTime {
            steal: vc.steal_ns,
            version: vc.steal_version,
            ..Default::default()
        };
        let _ = self
            .ram
            .write_bytes(gpa, rec.as_bytes().get(..8).unwrap_or(&[]));
        let _ = self
            .ram
            .write_bytes(gpa + 12, rec.as_bytes().get(12..).unwrap_or(&[]));
        vc.steal_version = vc.steal_version.wrapping_add(1);
        let _ = self
            .ram
            .store_u32(gpa + 8, vc.steal_version, Ordering::SeqCst);
    }

    fn ring_register(&self, st: &mut State, v: u32, gpa: u64, order: u64) -> CallResult {
        if order > RingHeader::MAX_ORDER as u64 {
            return Err(Status::INVALID_PARAM.into());
        }
        let order = order as u32;
        GuestRam::check_align(gpa, PAGE_SIZE)?;
        self.ram.check_range(gpa, RingHeader::ring_bytes(order))?;
        let hdr: RingHeader = self.ram.read_obj(gpa)?;
        if hdr.magic != RingHeader::MAGIC || hdr.order != order {
            return Err(Status::INVALID_PARAM.into());
        }
        if st.ring.is_some() {
            return Err(Status::ALREADY.into());
        }
        st.ring = Some(RingSt {
            gpa,
            order,
            owner: v,
            req_cons: 0,
            cmp_prod: 0,
        });
        Ok(self.cfg.ring_doorbell)
    }

    fn multicall(&self, st: &mut State, fx: &mut Fx, v: u32, gpa: u64, count: u64) -> CallResult {
        if count > pvabi::multicall::MAX_ENTRIES {
            return Err(Status::INVALID_PARAM.into());
        }
        if count == 0 {
            return Ok(0);
        }
        GuestRam::check_align(gpa, MulticallEntry::ALIGN)?;
        let bytes = count * MulticallEntry::SIZE as u64;
        self.ram.check_range(gpa, bytes)?;
        // Copy every entry in once, then run.
        let mut entries = Vec::with_capacity(count as usize);
        for i in 0..count {
            entries.push(
                self.ram
                    .read_obj::<MulticallEntry>(gpa + i * MulticallEntry::SIZE as u64)?,
            );
        }
        let mut done = 0u64;
        for (i, e) in entries.iter().enumerate() {
            let ret = if e.flags & !MulticallEntry::FLAG_STOP_ON_ERROR != 0 {
                Ret::err(Status::INVALID_PARAM)
            } else {
                let regs = Regs {
                    rax: e.call_id as u64,
                    args: e.args,
                };
                self.run_nested(st, fx, v, &regs, false)
            };
            let at = gpa + (i * MulticallEntry::SIZE) as u64 + 56;
            let mut out = [0u8; 16];
            out[..8].copy_from_slice(&(ret.status.to_reg()).to_le_bytes());
            out[8..].copy_from_slice(&ret.value.to_le_bytes());
            self.ram.write_bytes(at, &out)?;
            done += 1;
            if !ret.status.is_success() && e.flags & MulticallEntry::FLAG_STOP_ON_ERROR != 0 {
                break;
            }
        }
        Ok(done)
    }

    fn read_crash(&self, st: &State) -> Option<CrashReport> {
        let (gpa, len) = st.crash_buf?;
        let hdr: CrashHeader = self.ram.read_obj(gpa).ok()?;
        if hdr.magic != CrashHeader::MAGIC {
            return None;
        }
        let max = len - CrashHeader::SIZE as u64;
        let n = (hdr.message_len as u64).min(max);
        let msg = self
            .ram
            .read_bytes(gpa + CrashHeader::SIZE as u64, n, max)
            .ok()?;
        Some(CrashReport {
            code: hdr.code,
            rip: hdr.rip,
            message: String::from_utf8_lossy(&msg).into_owned(),
        })
    }

    fn read_report(&self, gpa: u64, len: u64, v: u32) -> Result<Report, Status> {
        if len < ReportHeader::SIZE as u64 || len > ReportHeader::MAX_RECORD {
            return Err(Status::INVALID_PARAM);
        }
        let bytes = self.ram.read_bytes(gpa, len, ReportHeader::MAX_RECORD)?;
        let (hb, rest) = bytes.split_at(ReportHeader::SIZE);
        let hdr = ReportHeader::read_from_bytes(hb).map_err(|_| Status::INVALID_PARAM)?;
        let outcome = ReportOutcome(hdr.outcome);
        if hdr.magic != ReportHeader::MAGIC
            || ![
                ReportOutcome::PASSED,
                ReportOutcome::FAILED,
                ReportOutcome::SKIPPED,
                ReportOutcome::END,
            ]
            .contains(&outcome)
        {
            return Err(Status::INVALID_PARAM);
        }
        let (c, n, d) = (
            hdr.clauses_len as usize,
            hdr.name_len as usize,
            hdr.detail_len as usize,
        );
        let total = c
            .checked_add(n)
            .and_then(|x| x.checked_add(d))
            .ok_or(Status::INVALID_PARAM)?;
        if total > rest.len() {
            return Err(Status::INVALID_PARAM);
        }
        let text = |a: usize, b: usize| -> Result<String, Status> {
            let s = rest.get(a..b).ok_or(Status::INVALID_PARAM)?;
            String::from_utf8(s.to_vec()).map_err(|_| Status::INVALID_PARAM)
        };
        let clauses = text(0, c)?;
        Ok(Report {
            outcome,
            clauses: clauses
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            name: text(c, c + n)?,
            detail: text(c + n, total)?,
            vcpu: v,
        })
    }

    fn grant_lookup(&self, st: &State, gref: u32, write: bool) -> Result<GrantMapping, Status> {
        let (table, entries) = st.grant.ok_or(Status::BAD_STATE)?;
        if gref as u64 >= entries {
            return Err(Status::INVALID_PARAM);
        }
        // Re-read the entry at every access: the guest may revoke at any time (`GNT-5`).
        let e: GrantEntry = self
            .ram
            .read_obj(table + gref as u64 * GrantEntry::SIZE as u64)?;
        if e.flags & GrantEntry::FLAG_VALID == 0 || e.flags & !GrantEntry::FLAGS_KNOWN != 0 {
            return Err(Status::DENIED);
        }
        if e.domid != GrantEntry::DOMID_HOST {
            return Err(Status::DENIED);
        }
        let readonly = e.flags & GrantEntry::FLAG_READONLY != 0;
        if write && readonly {
            return Err(Status::DENIED);
        }
        let gpa = e
            .gfn
            .checked_mul(PAGE_SIZE)
            .ok_or(Status::INVALID_ADDRESS)?;
        self.ram.check_range(gpa, PAGE_SIZE)?;
        Ok(GrantMapping { gpa, readonly })
    }

    fn time_changed_locked(&self, st: &mut State, fx: &mut Fx) {
        for vc in st.vcpus.iter_mut() {
            self.write_clock_page(vc);
        }
        let now = self.platform.now_ns();
        let n = st.vcpus.len();
        for i in 0..n {
            let Some(vc) = st.vcpus.get_mut(i) else {
                continue;
            };
            if vc.state == VcpuState::BLOCKED && vc.block_deadline != 0 && vc.block_deadline <= now
            {
                Self::wake(vc, fx, i as u32, Ret::err(Status::TIMED_OUT));
            }
            let due = vc.timer.filter(|(d, _)| *d <= now);
            if let Some((_, port)) = due {
                vc.timer = None;
                self.raise(st, fx, port);
            }
        }
        let (due, keep): (Vec<_>, Vec<_>) = st.delayed.drain(..).partition(|(d, _)| *d <= now);
        st.delayed = keep;
        for (_, port) in due {
            self.deliver(st, fx, port);
        }
        fx.deadline = true;
    }

    // ---------------------------------------------------------------------------------------
    // Backend protocol
    // ---------------------------------------------------------------------------------------

    /// The backend began running a started vCPU's entry: START_PENDING becomes RUNNING.
    pub fn vcpu_started(&self, vcpu: u32) {
        let mut st = self.lock();
        if let Some(vc) = st.vcpus.get_mut(vcpu as usize) {
            if vc.state == VcpuState::START_PENDING {
                vc.state = VcpuState::RUNNING;
            }
        }
    }

    /// The state of a vCPU, or `None` for an id outside the VM.
    pub fn vcpu_state(&self, vcpu: u32) -> Option<VcpuState> {
        self.lock().vcpus.get(vcpu as usize).map(|v| v.state)
    }

    /// For a vCPU that got [`Outcome::Block`]: `Some(ret)` once the wait ended (SUCCESS after
    /// an event or kick, TIMED_OUT at the deadline) — complete the call with it; `None` while
    /// it still waits.
    pub fn finish_block(&self, vcpu: u32) -> Option<Ret> {
        let mut st = self.lock();
        let vc = st.vcpus.get_mut(vcpu as usize)?;
        if let Some(r) = vc.block_result.take() {
            return Some(r);
        }
        if vc.state == VcpuState::BLOCKED {
            None
        } else {
            Some(Ret::ok(0))
        }
    }

    /// Whether an upcall must be delivered to `vcpu` now, and how (`EVT-11`): the level
    /// condition `upcall_pending != 0 && upcall_mask == 0 && mode != NONE`, for a RUNNING vCPU
    /// not inside a callback. Call it before resuming the vCPU after every call and after
    /// [`Platform::notify`]. It is level-triggered: for VECTOR mode the backend must not
    /// inject the vector again while an earlier injection is undelivered (`EVT-13`).
    pub fn take_upcall(&self, vcpu: u32) -> Option<Upcall> {
        let st = self.lock();
        self.upcall_ready(&st, vcpu)
    }

    /// The level condition of `EVT-11` for one vCPU.
    fn upcall_ready(&self, st: &State, vcpu: u32) -> Option<Upcall> {
        let page = st.event_page?;
        let vc = st.vcpus.get(vcpu as usize)?;
        if vc.upcall_mode == UpcallMode::NONE
            || vc.in_callback
            || vc.state != VcpuState::RUNNING
            || self.cfg.quirks.contains(Quirks::EVENT_NO_UPCALL)
        {
            return None;
        }
        let info = page + EventPage::vcpu_offset(vcpu) as u64;
        let pending = self
            .ram
            .load_u32(info + vcpu_info::UPCALL_PENDING as u64, Ordering::SeqCst)
            .ok()?;
        let masked = self
            .ram
            .load_u32(info + vcpu_info::UPCALL_MASK as u64, Ordering::SeqCst)
            .ok()?;
        if pending == 0 || masked != 0 {
            return None;
        }
        match vc.upcall_mode {
            UpcallMode::VECTOR => Some(Upcall::Vector(vc.upcall_target as u8)),
            UpcallMode::CALLBACK => Some(Upcall::Callback {
                target: vc.upcall_target,
            }),
            _ => None,
        }
    }

    /// Enters a callback upcall (spec `EVT-12`): saves `interrupted` as the vCPU's frame in
    /// the event page, sets `upcall_mask`, and returns the registers to resume at.
    ///
    /// # Errors
    ///
    /// BAD_STATE when no event page is registered or the vCPU is not in callback mode;
    /// INVALID_ADDRESS if the event page cannot be written.
    pub fn enter_callback(
        &self,
        vcpu: u32,
        interrupted: &UpcallFrame,
    ) -> Result<CallbackEntry, Status> {
        let mut st = self.lock();
        let page = st.event_page.ok_or(Status::BAD_STATE)?;
        let vc = st.vcpus.get_mut(vcpu as usize).ok_or(Status::BAD_STATE)?;
        if vc.upcall_mode != UpcallMode::CALLBACK {
            return Err(Status::BAD_STATE);
        }
        let info = page + EventPage::vcpu_offset(vcpu) as u64;
        let mut frame = *interrupted;
        frame._reserved = [0; 4];
        self.ram.write_obj(info + vcpu_info::FRAME as u64, &frame)?;
        self.ram
            .store_u32(info + vcpu_info::UPCALL_MASK as u64, 1, Ordering::SeqCst)?;
        vc.in_callback = true;
        let rsp = (interrupted.rsp.wrapping_sub(RED_ZONE) & !15).wrapping_sub(8);
        Ok(CallbackEntry {
            rip: vc.upcall_target,
            rsp,
            rdi: info + vcpu_info::FRAME as u64,
            rsi: vcpu as u64,
        })
    }

    /// Ends a callback upcall as VCPU.UPCALL_RETURN would (restores nothing in registers:
    /// returns the saved frame), for backends whose callbacks return normally (in-process).
    ///
    /// # Errors
    ///
    /// BAD_STATE when the vCPU is not inside a callback.
    pub fn leave_callback(&self, vcpu: u32) -> Result<UpcallFrame, Status> {
        let mut fx = Fx::default();
        let r = {
            let mut st = self.lock();
            match self.exec(&mut st, &mut fx, vcpu, Call::VcpuUpcallReturn) {
                Ok(Flow::Out(Outcome::UpcallReturn(f))) => Ok(f),
                Ok(_) => Err(Status::FAILED),
                Err(Fail(r)) => Err(r.status),
            }
        };
        self.flush(fx);
        r
    }

    /// Fires due timers, ends due VCPU.BLOCK waits, delivers due delayed events and refreshes
    /// the clock pages. Call it when [`Platform::deadline_changed`]'s deadline is reached or a
    /// virtual clock moved.
    pub fn poll_timers(&self) {
        let mut fx = Fx::default();
        {
            let mut st = self.lock();
            self.time_changed_locked(&mut st, &mut fx);
        }
        self.flush(fx);
    }

    /// The earliest armed timer, block deadline or delayed event, in system-time ns.
    pub fn next_deadline(&self) -> Option<u64> {
        let st = self.lock();
        let timers = st.vcpus.iter().filter_map(|v| v.timer.map(|(d, _)| d));
        let blocks = st
            .vcpus
            .iter()
            .filter(|v| v.state == VcpuState::BLOCKED && v.block_deadline != 0)
            .map(|v| v.block_deadline);
        let delayed = st.delayed.iter().map(|(d, _)| *d);
        timers.chain(blocks).chain(delayed).min()
    }

    /// Rewrites every registered clock page from [`Platform::clock_params`] (seqlock
    /// protocol). A backend calls it when its clock parameters change.
    pub fn refresh_clock_pages(&self) {
        let mut st = self.lock();
        for vc in st.vcpus.iter_mut() {
            self.write_clock_page(vc);
        }
    }

    /// Adds `ns` of steal time to a vCPU and rewrites its steal-time record.
    pub fn add_steal_time(&self, vcpu: u32, ns: u64) {
        let mut st = self.lock();
        if let Some(vc) = st.vcpus.get_mut(vcpu as usize) {
            vc.steal_ns = vc.steal_ns.saturating_add(ns);
            self.write_steal(vc);
        }
    }

    /// The doorbell of the shared-ring gate was written (or the backend polls): runs every
    /// published request in order as calls of the ring's owner vCPU and writes completions
    /// (spec `RING-4`..`RING-9`). Returns how many requests ran.
    pub fn process_ring(&self) -> usize {
        let mut fx = Fx::default();
        let n = {
            let mut st = self.lock();
            self.process_ring_locked(&mut st, &mut fx)
        };
        self.flush(fx);
        n
    }

    fn process_ring_locked(&self, st: &mut State, fx: &mut Fx) -> usize {
        let Some(mut r) = st.ring else { return 0 };
        let slots = 1u32 << r.order;
        let mut ran = 0;
        // At most one ring's worth per doorbell (SEC-16).
        while ran < slots as usize {
            let Ok(req_prod) = self
                .ram
                .load_u32(r.gpa + RingHeader::REQ_PROD as u64, Ordering::Acquire)
            else {
                break;
            };
            let avail = req_prod.wrapping_sub(r.req_cons);
            if avail == 0 || avail > slots {
                break;
            }
            let Ok(cmp_cons) = self
                .ram
                .load_u32(r.gpa + RingHeader::CMP_CONS as u64, Ordering::Acquire)
            else {
                break;
            };
            if r.cmp_prod.wrapping_sub(cmp_cons) >= slots {
                break;
            }
            let slot = (r.req_cons % slots) as u64;
            let req_gpa = r.gpa + RingHeader::SIZE as u64 + slot * RingRequest::SIZE as u64;
            let Ok(req) = self.ram.read_obj::<RingRequest>(req_gpa) else {
                break;
            };
            // `req_cons` is published with the completion below: the header's cache line then
            // changes hands once per request instead of twice while the guest polls it.
            r.req_cons = r.req_cons.wrapping_add(1);
            st.ring = Some(r);
            let regs = Regs {
                rax: req.call_id as u64,
                args: req.args,
            };
            let ret = self.run_nested(st, fx, r.owner, &regs, true);
            // The request may have been a (refused) unregister; stop if the ring went away.
            if st.ring.is_none() {
                break;
            }
            let cslot = (r.cmp_prod % slots) as u64;
            let cmp_gpa = r.gpa
                + RingHeader::SIZE as u64
                + slots as u64 * RingRequest::SIZE as u64
                + cslot * RingCompletion::SIZE as u64;
            let c = RingCompletion {
                cookie: req.cookie,
                _reserved: 0,
                status: ret.status.0 as i64,
                value: ret.value,
            };
            let _ = self.ram.write_obj(cmp_gpa, &c);
            let _ = self.ram.store_u32(
                r.gpa + RingHeader::REQ_CONS as u64,
                r.req_cons,
                Ordering::Relaxed,
            );
            r.cmp_prod = r.cmp_prod.wrapping_add(1);
            let _ = self.ram.store_u32(
                r.gpa + RingHeader::CMP_PROD as u64,
                r.cmp_prod,
                Ordering::Release,
            );
            st.ring = Some(r);
            ran += 1;
        }
        ran
    }

    // ---------------------------------------------------------------------------------------
    // Host-side API
    // ---------------------------------------------------------------------------------------

    /// Writes a store node as the host with the given guest access; fires watches. With a
    /// [`VmConfig::store_service`] the write goes to the service ([`StoreService::host_write`]).
    ///
    /// # Errors
    ///
    /// [`HostError::Status`] with INVALID_PARAM for a malformed path.
    pub fn store_write(
        &self,
        path: &str,
        value: &[u8],
        access: GuestAccess,
    ) -> Result<(), HostError> {
        let mut fx = Fx::default();
        {
            let mut st = self.lock();
            self.store_op(&mut st.store, |s| {
                s.host_write(path.as_bytes(), value, access)
            })?;
            self.raise_store(&mut st, &mut fx);
        }
        self.flush(fx);
        Ok(())
    }

    /// Reads a store node as the host (no access checks), from the
    /// [`VmConfig::store_service`] when one is configured.
    ///
    /// # Errors
    ///
    /// [`HostError::Status`] with NOT_FOUND or INVALID_PARAM.
    pub fn store_read(&self, path: &str) -> Result<Vec<u8>, HostError> {
        let mut st = self.lock();
        Ok(self.store_op(&mut st.store, |s| s.host_read(path.as_bytes()))?)
    }

    /// Removes a store subtree as the host; fires watches. Goes to the
    /// [`VmConfig::store_service`] when one is configured.
    ///
    /// # Errors
    ///
    /// [`HostError::Status`] with NOT_FOUND or INVALID_PARAM.
    pub fn store_remove(&self, path: &str) -> Result<(), HostError> {
        let mut fx = Fx::default();
        {
            let mut st = self.lock();
            self.store_op(&mut st.store, |s| s.host_remove(path.as_bytes()))?;
            self.raise_store(&mut st, &mut fx);
        }
        self.flush(fx);
        Ok(())
    }

    /// Lists a store node's children as the host, from the [`VmConfig::store_service`] when
    /// one is configured.
    ///
    /// # Errors
    ///
    /// [`HostError::Status`] with NOT_FOUND or INVALID_PARAM.
    pub fn store_list(&self, path: &str) -> Result<Vec<String>, HostError> {
        let raw = {
            let mut st = self.lock();
            self.store_op(&mut st.store, |s| s.host_list(path.as_bytes()))?
        };
        Ok(raw
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect())
    }

    /// Raises an allocated event port from the host side (as HARNESS.INJECT_EVENT).
    ///
    /// # Errors
    ///
    /// [`HostError::Status`]: INVALID_PARAM (range), NOT_FOUND (not allocated), BAD_STATE (no
    /// event page).
    pub fn inject_event(&self, port: u32) -> Result<(), HostError> {
        let mut fx = Fx::default();
        {
            let mut st = self.lock();
            st.ports.bound(port)?;
            if st.event_page.is_none() {
                return Err(Status::BAD_STATE.into());
            }
            self.raise(&mut st, &mut fx, port);
        }
        self.flush(fx);
        Ok(())
    }

    /// Queues console input for CONSOLE.READ.
    ///
    /// # Errors
    ///
    /// [`HostError::Status`] with NO_SPACE when the input limit would be exceeded (nothing is
    /// queued then).
    pub fn console_input(&self, data: &[u8]) -> Result<(), HostError> {
        let mut st = self.lock();
        if st.console_in.len() + data.len() > self.cfg.console_input_limit {
            return Err(Status::NO_SPACE.into());
        }
        st.console_in.extend(data.iter().copied());
        Ok(())
    }

    /// Takes the console output written since the previous call.
    pub fn take_console_output(&self) -> Vec<u8> {
        std::mem::take(&mut self.lock().console_new)
    }

    /// The most recent console output (up to [`VmConfig::console_history`] bytes).
    pub fn console_history(&self) -> Vec<u8> {
        self.lock().console_history.iter().copied().collect()
    }

    /// Takes the HARNESS result records reported so far.
    pub fn take_reports(&self) -> Vec<Report> {
        std::mem::take(&mut self.lock().reports)
    }

    /// How the guest shut down, once it has.
    pub fn shutdown_state(&self) -> Option<ShutdownInfo> {
        self.lock().shutdown.clone()
    }

    /// Looks up a grant reference for host access (spec `GNT-4`, `GNT-5`), re-reading the
    /// entry.
    ///
    /// # Errors
    ///
    /// [`HostError::Status`]: BAD_STATE (no table), INVALID_PARAM (ref beyond the table),
    /// DENIED (not valid, not for the host, read-only for a write), INVALID_ADDRESS (frame
    /// not in RAM).
    pub fn grant_map(&self, gref: u32, write: bool) -> Result<GrantMapping, HostError> {
        let st = self.lock();
        Ok(self.grant_lookup(&st, gref, write)?)
    }

    /// Reads `buf.len()` bytes at `offset` of a granted page.
    ///
    /// # Errors
    ///
    /// As [`Vm::grant_map`]; INVALID_PARAM when the range leaves the page.
    pub fn grant_read(&self, gref: u32, offset: u64, buf: &mut [u8]) -> Result<(), HostError> {
        let st = self.lock();
        let m = self.grant_lookup(&st, gref, false)?;
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|e| e > PAGE_SIZE)
        {
            return Err(Status::INVALID_PARAM.into());
        }
        Ok(self.ram.read_into(m.gpa + offset, buf)?)
    }

    /// Writes `data` at `offset` of a writable granted page.
    ///
    /// # Errors
    ///
    /// As [`Vm::grant_read`].
    pub fn grant_write(&self, gref: u32, offset: u64, data: &[u8]) -> Result<(), HostError> {
        let st = self.lock();
        let m = self.grant_lookup(&st, gref, true)?;
        if offset
            .checked_add(data.len() as u64)
            .is_none_or(|e| e > PAGE_SIZE)
        {
            return Err(Status::INVALID_PARAM.into());
        }
        Ok(self.ram.write_bytes(m.gpa + offset, data)?)
    }

    /// Whether the page at `gpa` is currently released to the balloon.
    pub fn balloon_released(&self, gpa: u64) -> bool {
        self.lock().balloon.contains(gpa / PAGE_SIZE)
    }

    /// The registered event page, if any.
    pub fn event_page(&self) -> Option<u64> {
        self.lock().event_page
    }

    /// The vCPU a port is bound to, if allocated.
    pub fn port_binding(&self, port: u32) -> Option<u32> {
        self.lock().ports.bound(port).ok()
    }
}

trait AsBytesVec {
    fn as_bytes_vec(&self) -> Vec<u8>;
}

impl<T: IntoBytes + Immutable> AsBytesVec for T {
    fn as_bytes_vec(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
}

use zerocopy::{FromBytes, Immutable, IntoBytes};
