//! # pvabi-mock — the in-process reference backend of pvabi
//!
//! A complete, deterministic pvabi host that runs in the test process: guest RAM is an
//! ordinary `vm-memory` mapping, each guest vCPU is a host thread running guest code natively,
//! and calls cross an **in-process gate** with the same register encoding as a hardware gate.
//! It is the reference model the conformance suite is checked against, and the tool that lets
//! a guest-kernel author unit-test paravirtual code with plain `cargo test`.
//!
//! It offers a deterministic virtual clock (tests advance it; when every vCPU waits, it jumps
//! to the next deadline), fault injection ([`Faults`]: make a call fail with a status N times
//! or always, drop or delay events, deliberate spec violations through [`Quirks`]), and a call
//! trace ([`TraceEntry`]).
//!
//! ## The in-process gate (spec `GATE-7`)
//! ```text
//! unsafe extern "C" fn mock_gate(ctx: usize, regs: *mut MockRegs)
//! #[repr(C)] struct MockRegs { rax: u64, args: [u64; 6] }   // 56 bytes
//! ```
//! On entry `rax` is the call id and `args` are RDI, RSI, R8, R9, R10, R11; on return `rax`
//! holds the status sign-extended and `args[0]` the value. `ctx` is [`BootCtx::gate_ctx`].
//! This is exactly `pvabi_guest`'s `InProcessFn` / `InProcessRegs`, so a guest built on
//! `pvabi-guest` uses `InProcessGate::new(boot.gate_fn, boot.gate_ctx)`.
//! The gate must be called from a vCPU thread of the mock (a thread the mock started, or
//! inside [`Mock::call_as`]); from any other thread it answers FAILED.
//!
//! ## Guest memory and pointers
//! Guest RAM is one mapping of [`MockConfig::ram_size`] bytes at GPA 0, at host address
//! [`BootCtx::host_base`]. Guest code translates its pointers with `gpa = ptr - host_base`
//! (pvabi-guest's `Translate::Offset`), so every buffer it hands to the host must live in
//! guest RAM. The memory map has a LOADER range `[0, 0x10000)` (boot info, memory map,
//! command line) and RAM `[0x10000, ram_size)`; [`BootCtx::scratch_gpa`] names a RAM area
//! (from 1 MiB up) that the host never touches on its own.
//!
//! ## vCPUs and guest functions
//! Guest code runs as host functions. VCPU.START's `entry` and EVENT.SET_UPCALL's callback
//! address must be values returned by [`Mock::register_fn`] (a `extern "C" fn(u64, u64)`,
//! whose address is the value) or [`Mock::register_closure`] (a token address); any other
//! address makes VCPU.START fail with INVALID_PARAM, because the mock never calls an address
//! it cannot prove is a function. A started vCPU runs `entry(arg, vcpu_id)` on a new thread
//! (the `stack` argument is accepted and unused). When the function returns, the vCPU stops.
//!
//! * VCPU.BLOCK parks the thread until an event, kick or deadline (virtual time).
//! * POWER.SHUTDOWN and VCPU.STOP do not return: the calling thread parks for good (it is
//!   detached; it holds only the mock's shared state). [`Mock::wait`] reports the end.
//! * Upcalls are delivered at call boundaries (`EVT-11`), at most one per call, on the
//!   vCPU's thread, before the gate returns: in CALLBACK mode the registered function is
//!   called as `f(frame_gpa, vcpu)` with `upcall_mask` set (it may call VCPU.UPCALL_RETURN,
//!   which then returns SUCCESS, or simply return: the mock ends the callback either way; the
//!   saved frame is all zeros, as there are no interrupted registers in-process); in VECTOR
//!   mode the handler set with [`Mock::on_vector`] is called as `f(vector, vcpu)`, never nested
//!   (calls it makes deliver no further vector upcall), and is called again at later
//!   boundaries while `upcall_pending` stays set (level-triggered: the handler clears it).
//!   A vCPU that makes no call receives no upcall; a guest using pvabi-guest's in-process
//!   gate typically leaves the mode NONE and dispatches pending ports itself.
//! * After POWER.SHUTDOWN, any call by another vCPU never returns (`PWR-2`).
//! * pvabi-guest's upcall entry keeps process-wide state (a bare-metal guest owns its
//!   address space), so at most one in-process guest that installs it may run per process at
//!   a time: tests that run several such guests concurrently must serialise them.
//!
//! ## The shared-ring gate (spec `RING-*`)
//! In-process a guest cannot write the ring's doorbell (an `out`), so the mock polls the
//! registered ring itself. When BASE.RING_REGISTER succeeds, the mock sets the ring's
//! `host_polling` word before the call returns (`RING-4`: the guest then posts without a
//! doorbell) and a poller thread, started with the first registration, serves the ring through
//! [`Vm::process_ring`]: it spins for 1 ms after the last sign of activity (requests run,
//! a registration), watching the guest-written counters without a lock, then sleeps between
//! looks (growing from 20 µs to 200 µs while the ring stays idle); it sleeps for good while no
//! ring is registered, and ends when the run ends or the mock is dropped. Every call through the
//! in-process gate also serves the ring first, as a doorbell would, so a guest that makes calls
//! while it waits sees its requests run without depending on the poller's timing.
//! BASE.RING_UNREGISTER clears `host_polling` before it returns; the mock writes nothing into
//! the ring afterwards (`RING-7`). pvabi-guest's `Pvabi::register_ring` therefore works on the
//! mock.
//!
//! ## With pvabi-guest
//! A guest built on `pvabi-guest` wraps the gate as
//! `InProcessGate::new(transmute::<GateFn, InProcessFn>(boot.gate_fn), boot.gate_ctx)` (the types
//! differ only in the name of the register struct, whose layouts are identical: 56 bytes,
//! `rax` at 0, `args` at 8), discovers with `boot.boot_info_gpa`, and translates pointers with
//! `Translate::Offset { host_base: boot.host_base, len: boot.ram_len }`.
//!
//! ## Example: unit-testing paravirtual code
//! ```
//! use pvabi::{call, Regs};
//! use pvabi_mock::{BootCtx, Mock, MockConfig, RunEnd};
//!
//! // "Guest code": a function that only talks to the host through the gate.
//! fn guest_main(boot: BootCtx) {
//!     let hello = b"hello from the guest";
//!     let gpa = boot.scratch_gpa;
//!     // The guest owns the scratch area; write the message there and pass its GPA.
//!     boot.write(gpa, hello);
//!     boot.call(Regs::new(call::CONSOLE_WRITE, [gpa, hello.len() as u64, 0, 0, 0, 0]));
//!     boot.call(Regs::new(call::POWER_SHUTDOWN, [0, 7, 0, 0, 0, 0]));
//! }
//!
//! let mock = Mock::new(MockConfig::default()).unwrap();
//! mock.start(guest_main);
//! let end = mock.wait();
//! assert_eq!(end, RunEnd::Shutdown { reason: pvabi::power::ShutdownReason::POWEROFF, code: 7 });
//! assert_eq!(mock.vm().take_console_output(), b"hello from the guest");
//! assert!(mock.trace().iter().any(|t| t.call == call::CONSOLE_WRITE.0 as u64));
//! ```
#![deny(unsafe_code)]

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pvabi::base::backend_id;
use pvabi::discovery::{ExecMode, Features, GateKind};
use pvabi::memory::{MemKind, MemMapEntry};
use pvabi::power::ShutdownReason;
use pvabi::ring::RingHeader;
use pvabi::{CallId, Regs, Ret, Status};
use pvabi_host::{
    CallHook, ClockParams, ConfigError, EventAction, GuestRam, Outcome, Platform, Quirks, Upcall,
    Vm, VmConfig,
};

/// The register file of the in-process gate: identical to `pvabi_guest::InProcessRegs`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct MockRegs {
    /// RAX: call id in, status (sign-extended) out.
    pub rax: u64,
    /// RDI, RSI, R8, R9, R10, R11 in; `args[0]` is the value out.
    pub args: [u64; 6],
}

const _: () = assert!(std::mem::size_of::<MockRegs>() == 56);
const _: () = assert!(std::mem::offset_of!(MockRegs, args) == 8);

/// The in-process gate function type (identical to `pvabi_guest::InProcessFn`).
pub type GateFn = unsafe extern "C" fn(ctx: usize, regs: *mut MockRegs);

/// A guest function: a vCPU entry `f(arg, vcpu)` or an upcall callback `f(frame_gpa, vcpu)`.
pub type GuestFn = extern "C" fn(u64, u64);

/// GPA of the boot handoff the mock writes.
pub const BOOT_INFO_GPA: u64 = 0x1000;
/// End of the LOADER range (start of RAM).
pub const LOADER_END: u64 = 0x1_0000;
/// Start of the scratch area offered to the guest.
pub const SCRATCH_GPA: u64 = 0x10_0000;

/// How to build a [`Mock`].
#[derive(Clone, Debug)]
pub struct MockConfig {
    /// Number of vCPUs (1..=16).
    pub vcpus: u32,
    /// Bytes of guest RAM (at least 2 MiB).
    pub ram_size: usize,
    /// Whether HARNESS is offered.
    pub harness: bool,
    /// Feature bits (default: every feature pvabi-host implements).
    pub features: Features,
    /// Command line bytes placed in the boot handoff.
    pub cmdline: Vec<u8>,
    /// Initial system time in ns.
    pub start_time_ns: u64,
    /// Wall-clock ns since the epoch at system time 0.
    pub wallclock_epoch_ns: u64,
    /// When every vCPU is blocked or stopped, jump the virtual clock to the next deadline.
    pub auto_advance: bool,
    /// Fault injection and deliberate spec violations.
    pub faults: Faults,
    /// Copy the guest's console output to the test's stderr as it is written.
    pub console_echo: bool,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            vcpus: 1,
            ram_size: 16 << 20,
            harness: false,
            features: VmConfig::ALL_FEATURES,
            cmdline: Vec::new(),
            start_time_ns: 1_000_000,
            wallclock_epoch_ns: 1_700_000_000_000_000_000,
            auto_advance: true,
            faults: Faults::default(),
            console_echo: false,
        }
    }
}

/// One fault-injection rule for calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallFault {
    /// The call id to intercept.
    pub call: CallId,
    /// Only calls from this vCPU (None: any).
    pub vcpu: Option<u32>,
    /// The status to answer with (the call does not run).
    pub status: Status,
    /// How many more times (None: always).
    pub times: Option<u32>,
}

/// One fault-injection rule for events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventFault {
    /// The port (None: any).
    pub port: Option<u32>,
    /// Drop the event, or delay it by this many ns of system time.
    pub delay_ns: Option<u64>,
    /// How many more times (None: always).
    pub times: Option<u32>,
}

/// Fault injection: calls that fail, events lost or late, and deliberate spec violations
/// (the "broken host" variants the conformance suite must catch).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Call rules, first match wins.
    pub calls: Vec<CallFault>,
    /// Event rules, first match wins.
    pub events: Vec<EventFault>,
    /// Deliberate violations implemented by pvabi-host (permissions ignored, clock version
    /// left even, events without upcalls, no transaction conflicts, short console counts).
    pub quirks: Quirks,
}

/// One traced call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceEntry {
    /// Sequence number (0, 1, ...).
    pub seq: u64,
    /// The calling vCPU.
    pub vcpu: u32,
    /// RAX as the guest passed it.
    pub call: u64,
    /// The six argument registers.
    pub args: [u64; 6],
    /// What happened.
    pub outcome: Outcome,
    /// Whether a fault rule answered the call.
    pub injected: bool,
    /// Virtual system time at completion.
    pub time_ns: u64,
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunEnd {
    /// POWER.SHUTDOWN.
    Shutdown {
        /// The reason.
        reason: ShutdownReason,
        /// The guest's code.
        code: u64,
    },
    /// Every vCPU stopped or returned from its entry without a shutdown.
    AllStopped,
    /// Guest code (an entry, a callback or a vector handler) panicked on this vCPU.
    GuestPanicked {
        /// The vCPU whose code panicked.
        vcpu: u32,
    },
}

/// What the boot vCPU's function receives (the in-process form of the boot handoff).
#[derive(Clone, Copy, Debug)]
pub struct BootCtx {
    /// GPA of the [`pvabi::BootInfo`] (the value of RDI at a real boot).
    pub boot_info_gpa: u64,
    /// This vCPU's id.
    pub vcpu: u32,
    /// The in-process gate function.
    pub gate_fn: GateFn,
    /// The context word for the gate.
    pub gate_ctx: usize,
    /// Host address of GPA 0.
    pub host_base: usize,
    /// Bytes of guest RAM mapped at `host_base`.
    pub ram_len: usize,
    /// A RAM area the guest may use freely.
    pub scratch_gpa: u64,
    /// Length of the scratch area.
    pub scratch_len: u64,
}

impl BootCtx {
    /// Makes a call through the in-process gate (convenience for guests written directly
    /// against the register convention).
    pub fn call(&self, regs: Regs) -> Ret {
        gate_call(self.gate_ctx, regs)
    }

    /// Copies bytes into guest RAM at `gpa` through the mock's registry (a stand-in for the
    /// guest's own stores, for guests written without pointers).
    ///
    /// # Panics
    ///
    /// If the range is outside guest RAM or the mock is gone (test-side misuse).
    pub fn write(&self, gpa: u64, data: &[u8]) {
        let inner = lookup(self.gate_ctx).expect("mock alive");
        inner.ram.write_bytes(gpa, data).expect("inside guest RAM");
    }

    /// Copies bytes out of guest RAM at `gpa`.
    ///
    /// # Panics
    ///
    /// If the range is outside guest RAM or the mock is gone (test-side misuse).
    pub fn read(&self, gpa: u64, len: usize) -> Vec<u8> {
        let inner = lookup(self.gate_ctx).expect("mock alive");
        let mut b = vec![0u8; len];
        inner.ram.read_into(gpa, &mut b).expect("inside guest RAM");
        b
    }
}

// -------------------------------------------------------------------------------------------
// Shared state
// -------------------------------------------------------------------------------------------

type GuestClosure = Arc<dyn Fn(u64, u64) + Send + Sync>;
type VectorHandler = Arc<dyn Fn(u8, u32) + Send + Sync>;

struct Slot {
    notified: Mutex<bool>,
    cv: Condvar,
}

struct Inner {
    id: usize,
    cfg: MockConfig,
    ram: GuestRam,
    vm: OnceLock<Arc<Vm>>,
    clock: Arc<AtomicU64>,
    slots: Vec<Slot>,
    funcs: Mutex<HashMap<u64, GuestClosure>>,
    next_token: AtomicU64,
    vector: Mutex<Option<VectorHandler>>,
    faults: Mutex<Faults>,
    trace: Mutex<VecDeque<TraceEntry>>,
    seq: AtomicU64,
    end: Mutex<Option<RunEnd>>,
    end_cv: Condvar,
    live_threads: Mutex<u32>,
    ring: Arc<RingServer>,
}

/// How long the poller keeps spinning after the last sign of ring activity.
const RING_HOT: Duration = Duration::from_millis(1);
/// Spins between two looks at the clock, and between two `process_ring` calls when the
/// guest-written counters did not move.
const RING_SPINS_PER_LOOK: u32 = 64;
/// First pause of an idle poller.
const RING_MIN_PAUSE: Duration = Duration::from_micros(20);
/// Longest pause of an idle poller.
const RING_MAX_PAUSE: Duration = Duration::from_micros(200);

/// The in-process server of the shared-ring gate (see the crate docs).
struct RingServer {
    /// Held across every top-level call that can register or unregister a ring
    /// (BASE.RING_REGISTER, BASE.RING_UNREGISTER, MULTICALL.EXECUTE), so that the bookkeeping
    /// below follows the host's registrations in their order. Ring requests cannot register.
    serial: Mutex<()>,
    state: Mutex<RingState>,
    /// Wakes the poller: a registration, an unregistration or the end.
    cv: Condvar,
    /// Whether a ring is registered (read at every gate call without a lock).
    active: AtomicBool,
    /// Bumped when a gate call served requests or a ring was registered: the guest is using
    /// the ring, so the poller spins again.
    activity: AtomicU64,
}

#[derive(Default)]
struct RingState {
    /// GPA of the registered ring.
    gpa: Option<u64>,
    /// The run ended or the mock was dropped: no poller runs any more.
    stopped: bool,
    /// The poller thread, once started.
    poller: Option<JoinHandle<()>>,
}

impl RingServer {
    fn new() -> Self {
        Self {
            serial: Mutex::new(()),
            state: Mutex::new(RingState::default()),
            cv: Condvar::new(),
            active: AtomicBool::new(false),
            activity: AtomicU64::new(0),
        }
    }

    /// Ends the poller (if any) and returns its handle to join.
    fn stop(&self) -> Option<JoinHandle<()>> {
        let mut st = lock(&self.state);
        st.stopped = true;
        self.cv.notify_all();
        st.poller.take()
    }
}

/// The guest-written counters the poller watches: `req_prod` (new requests) and `cmp_cons`
/// (completion slots freed, which may let stalled requests run). Read lock-free from guest
/// memory; a stale or failed read only costs one extra or one later `process_ring`.
fn ring_counters(ram: &GuestRam, gpa: u64) -> Option<(u32, u32)> {
    let prod = ram.load_u32(gpa + RingHeader::REQ_PROD as u64, Ordering::Acquire);
    let cons = ram.load_u32(gpa + RingHeader::CMP_CONS as u64, Ordering::Acquire);
    prod.ok().zip(cons.ok())
}

/// The poller thread: serves the registered ring until the mock ends.
///
/// After any sign of activity (requests it ran, requests a gate call ran, a registration) it
/// spins for [`RING_HOT`], calling `process_ring` whenever the guest-written counters move
/// (and every [`RING_SPINS_PER_LOOK`] spins anyway); then it sleeps between looks, from
/// [`RING_MIN_PAUSE`] growing to [`RING_MAX_PAUSE`]; without a ring it sleeps until one is
/// registered. It holds the mock only while it serves the ring, and never holds the ring
/// state's lock then (the host's lock is taken first by the hook that records
/// registrations).
fn ring_poller(server: Arc<RingServer>, inner: Weak<Inner>, ram: GuestRam) {
    let mut last_work = Instant::now();
    let mut seen_activity = u64::MAX;
    let mut seen_counters = None;
    let mut spins = 0u32;
    let mut naps = 0u32;
    loop {
        let gpa = {
            let mut st = lock(&server.state);
            while st.gpa.is_none() && !st.stopped {
                st = server.cv.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            if st.stopped {
                return;
            }
            st.gpa
        };
        let Some(gpa) = gpa else { continue };
        let activity = server.activity.load(Ordering::SeqCst);
        let counters = ring_counters(&ram, gpa);
        spins = spins.wrapping_add(1);
        let look = spins % RING_SPINS_PER_LOOK == 0;
        let fresh = activity != seen_activity;
        if fresh || counters != seen_counters || look {
            seen_activity = activity;
            seen_counters = counters;
            let Some(me) = inner.upgrade() else {
                return;
            };
            let ran = me.vm().process_ring();
            drop(me);
            if ran > 0 || fresh {
                last_work = Instant::now();
                naps = 0;
                continue;
            }
        }
        if !look || last_work.elapsed() < RING_HOT {
            std::hint::spin_loop();
            continue;
        }
        // Idle: sleep, longer each time, until the guest shows activity again.
        naps = naps.saturating_add(1);
        let pause = RING_MIN_PAUSE
            .saturating_mul(1 << naps.min(8))
            .min(RING_MAX_PAUSE);
        let st = lock(&server.state);
        if st.stopped || st.gpa.is_none() {
            continue;
        }
        // Woken early by an unregistration or the end.
        let _ = server.cv.wait_timeout(st, pause);
        // Look once more right after the nap.
        spins = RING_SPINS_PER_LOOK - 1;
    }
}

/// What a vCPU thread does after a call.
enum Step {
    Return(Ret),
    /// The call does not return (STOP, SHUTDOWN): park the thread for good.
    Park,
}

/// Parks the calling thread for good, holding no reference to any mock.
fn park_forever() -> ! {
    static PARK: (Mutex<()>, Condvar) = (Mutex::new(()), Condvar::new());
    let mut g = lock(&PARK.0);
    loop {
        g = PARK.1.wait(g).unwrap_or_else(|e| e.into_inner());
    }
}

thread_local! {
    /// Set by the hook's `before` when a fault rule answered the call; read by `after`.
    static INJECTED: Cell<bool> = const { Cell::new(false) };
    /// Set while this thread runs a VECTOR-mode upcall handler.
    static IN_VECTOR: Cell<bool> = const { Cell::new(false) };
}

/// Most trace entries kept (oldest dropped first).
pub const TRACE_LIMIT: usize = 100_000;

static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

fn registry() -> &'static Mutex<BTreeMap<usize, Weak<Inner>>> {
    static R: OnceLock<Mutex<BTreeMap<usize, Weak<Inner>>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(BTreeMap::new()))
}

fn lookup(ctx: usize) -> Option<Arc<Inner>> {
    lock(registry()).get(&ctx).and_then(Weak::upgrade)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

thread_local! {
    /// (mock id, vCPU id) of the vCPU this thread runs, if any.
    static CURRENT: Cell<Option<(usize, u32)>> = const { Cell::new(None) };
}

struct MockPlatform {
    inner: Weak<Inner>,
    clock: Arc<AtomicU64>,
    epoch: u64,
}

impl Platform for MockPlatform {
    fn now_ns(&self) -> u64 {
        self.clock.load(Ordering::SeqCst)
    }
    fn wallclock_epoch_ns(&self) -> u64 {
        self.epoch
    }
    fn clock_params(&self) -> ClockParams {
        // tsc_to_system_mul = 0: the TSC term is zero and `system_time` is authoritative.
        ClockParams {
            tsc_timestamp: 0,
            system_time: self.now_ns(),
            tsc_to_system_mul: 0,
            tsc_shift: 0,
            flags: pvabi::clock::ClockPage::FLAG_TSC_STABLE,
        }
    }
    fn start_vcpu(&self, vcpu: u32, entry: u64, _stack: u64, arg: u64) -> Result<(), Status> {
        let inner = self.inner.upgrade().ok_or(Status::FAILED)?;
        let f = lock(&inner.funcs)
            .get(&entry)
            .cloned()
            .ok_or(Status::INVALID_PARAM)?;
        inner.spawn_vcpu(vcpu, move || f(arg, vcpu as u64))
    }
    fn notify(&self, vcpu: u32) {
        if let Some(inner) = self.inner.upgrade() {
            if let Some(s) = inner.slots.get(vcpu as usize) {
                *lock(&s.notified) = true;
                s.cv.notify_all();
            }
        }
    }
    fn yield_vcpu(&self, _vcpu: u32) {
        std::thread::yield_now();
    }
    fn deadline_changed(&self, _deadline_ns: u64) {
        // Virtual time: deadlines are reached when the clock is advanced.
    }
    fn advance_clock(&self, ns: u64) -> Result<(), Status> {
        self.clock.fetch_add(ns, Ordering::SeqCst);
        Ok(())
    }
}

struct MockHook {
    inner: Weak<Inner>,
}

impl CallHook for MockHook {
    fn before(&self, vcpu: u32, regs: &Regs) -> Option<Ret> {
        let inner = self.inner.upgrade()?;
        let mut f = lock(&inner.faults);
        let rule = f.calls.iter_mut().find(|r| {
            r.call.0 as u64 == regs.rax
                && r.vcpu.is_none_or(|v| v == vcpu)
                && r.times.is_none_or(|t| t > 0)
        })?;
        if let Some(t) = rule.times.as_mut() {
            *t -= 1;
        }
        INJECTED.with(|c| c.set(true));
        Some(Ret::err(rule.status))
    }

    fn after(&self, vcpu: u32, regs: &Regs, outcome: &Outcome) {
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        let injected = INJECTED.with(|c| c.replace(false));
        if !injected && matches!(outcome, Outcome::Return(r) if r.status.is_success()) {
            if regs.rax == u64::from(pvabi::call::BASE_RING_REGISTER.0) {
                inner.ring_registered(regs.args[0]);
            } else if regs.rax == u64::from(pvabi::call::BASE_RING_UNREGISTER.0) {
                inner.ring_unregistered();
            }
        }
        inner.record(vcpu, regs, *outcome, injected);
    }

    fn event(&self, port: u32) -> EventAction {
        let Some(inner) = self.inner.upgrade() else {
            return EventAction::Deliver;
        };
        let mut f = lock(&inner.faults);
        let Some(rule) = f
            .events
            .iter_mut()
            .find(|r| r.port.is_none_or(|p| p == port) && r.times.is_none_or(|t| t > 0))
        else {
            return EventAction::Deliver;
        };
        if let Some(t) = rule.times.as_mut() {
            *t -= 1;
        }
        match rule.delay_ns {
            None => EventAction::Drop,
            Some(ns) => EventAction::Delay(ns),
        }
    }
}

impl Inner {
    fn vm(&self) -> &Arc<Vm> {
        // Set in `Mock::new` before any `Inner` method can run.
        self.vm.get().expect("vm initialised")
    }

    /// A BASE.RING_REGISTER of the ring at `gpa` succeeded (the host checked the ring lies
    /// in RAM): start serving it and tell the guest it needs no doorbell. Runs before the
    /// call returns to the guest, possibly under the host's lock (a multicall entry).
    fn ring_registered(self: &Arc<Self>, gpa: u64) {
        let mut st = lock(&self.ring.state);
        st.gpa = Some(gpa);
        // Gate calls serve the ring from now on in any case.
        self.ring.active.store(true, Ordering::SeqCst);
        self.ring.activity.fetch_add(1, Ordering::SeqCst);
        if st.poller.is_none() && !st.stopped {
            let (server, weak) = (Arc::clone(&self.ring), Arc::downgrade(self));
            let ram = self.ram.clone();
            if let Ok(h) = std::thread::Builder::new()
                .name(format!("pvabi-ring{}", self.id))
                .spawn(move || ring_poller(server, weak, ram))
            {
                st.poller = Some(h);
            }
        }
        // Only a running poller makes the host poll: without one (it could not be started,
        // or the run has ended) `host_polling` stays 0, as the guest zeroed it.
        if st.poller.is_some() && !st.stopped {
            // A failed store could only mean the ring is not in RAM, which registration
            // excluded.
            let _ = self
                .ram
                .store_u32(gpa + RingHeader::HOST_POLLING as u64, 1, Ordering::SeqCst);
        }
        self.ring.cv.notify_all();
    }

    /// A BASE.RING_UNREGISTER succeeded: stop serving and clear `host_polling`, before the
    /// call returns (nothing writes the ring afterwards: the host's own state has no ring).
    fn ring_unregistered(&self) {
        let mut st = lock(&self.ring.state);
        self.ring.active.store(false, Ordering::SeqCst);
        if let Some(gpa) = st.gpa.take() {
            let _ = self
                .ram
                .store_u32(gpa + RingHeader::HOST_POLLING as u64, 0, Ordering::SeqCst);
        }
        self.ring.cv.notify_all();
    }

    fn record(&self, vcpu: u32, regs: &Regs, outcome: Outcome, injected: bool) {
        // The number is taken under the trace lock, so the trace stays in sequence order
        // when vCPUs finish calls at the same time.
        let mut t = lock(&self.trace);
        let seq = self.seq.fetch_add(1, Ordering::SeqCst);
        if t.len() >= TRACE_LIMIT {
            t.pop_front();
        }
        t.push_back(TraceEntry {
            seq,
            vcpu,
            call: regs.rax,
            args: regs.args,
            outcome,
            injected,
            time_ns: self.clock.load(Ordering::SeqCst),
        });
    }

    fn spawn_vcpu(
        self: &Arc<Self>,
        vcpu: u32,
        body: impl FnOnce() + Send + 'static,
    ) -> Result<(), Status> {
        // The thread holds only a weak reference to the mock while guest code runs, so that a
        // thread parked for good keeps none of the mock's state alive. It does keep the guest
        // RAM mapping: guest code on this thread dereferences raw pointers into it (guest
        // memory is ordinary host memory in-process), so the mapping must outlive the thread
        // even when the mock is dropped first (a vCPU still running, or parked after another
        // vCPU shut the guest down). The mapping is freed when the last such thread ends.
        let weak = Arc::downgrade(self);
        let ram_alive = self.ram.clone();
        let id = self.id;
        *lock(&self.live_threads) += 1;
        let r = std::thread::Builder::new()
            .name(format!("pvabi-mock-vcpu{vcpu}"))
            .spawn(move || {
                let _ram_alive = ram_alive;
                CURRENT.with(|c| c.set(Some((id, vcpu))));
                if let Some(me) = weak.upgrade() {
                    me.vm().vcpu_started(vcpu);
                } else {
                    return;
                }
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).is_err() {
                    if let Some(me) = weak.upgrade() {
                        me.finish(RunEnd::GuestPanicked { vcpu });
                        me.thread_done();
                    }
                    return;
                }
                // The entry returned: the vCPU stops (the last one ends the run).
                if let Some(me) = weak.upgrade() {
                    let _ = me
                        .vm()
                        .handle_call(vcpu, &Regs::new(pvabi::call::VCPU_STOP, [0; 6]));
                    me.idle_check();
                    me.thread_done();
                }
            });
        if r.is_err() {
            *lock(&self.live_threads) -= 1;
            return Err(Status::FAILED);
        }
        Ok(())
    }

    /// Guest code panicked inside the gate (a handler or callback): the panic must not unwind
    /// through the `extern "C"` gate, so the run ends and the thread parks for good.
    fn guest_panicked(&self, vcpu: u32) -> ! {
        self.finish(RunEnd::GuestPanicked { vcpu });
        park_forever()
    }

    fn thread_done(&self) {
        let mut n = lock(&self.live_threads);
        *n = n.saturating_sub(1);
        if *n == 0 {
            self.finish(RunEnd::AllStopped);
        }
    }

    fn finish(&self, end: RunEnd) {
        // No vCPU runs guest code any more: the ring needs no poller (gate calls made with
        // [`Mock::call_as`] still serve it). Stopped before the end is published, so that a
        // waiter sees it stopped. The thread ends by itself; it is not joined here, as this
        // may run on a thread the poller waits for.
        if matches!(end, RunEnd::Shutdown { .. } | RunEnd::AllStopped) {
            drop(self.ring.stop());
        }
        let mut e = lock(&self.end);
        if e.is_none() {
            *e = Some(end);
        }
        self.end_cv.notify_all();
    }

    /// Runs one call of `vcpu` on the current thread, following the [`Outcome`] protocol.
    fn call(self: &Arc<Self>, vcpu: u32, regs: &Regs) -> Step {
        // Requests the guest published run first, as if it had written the doorbell.
        if self.ring.active.load(Ordering::SeqCst) && self.vm().process_ring() > 0 {
            self.ring.activity.fetch_add(1, Ordering::SeqCst);
        }
        let registers = [
            pvabi::call::BASE_RING_REGISTER,
            pvabi::call::BASE_RING_UNREGISTER,
            pvabi::call::MULTICALL_EXECUTE,
        ]
        .iter()
        .any(|c| u64::from(c.0) == regs.rax);
        let serial = registers.then(|| lock(&self.ring.serial));
        let out = self.vm().handle_call(vcpu, regs);
        drop(serial);
        let ret = match out {
            Outcome::Return(r) => r,
            Outcome::Block { .. } => {
                self.idle_check();
                self.wait_block(vcpu)
            }
            Outcome::Stop => {
                // The others may all be waiting now: let virtual time move on.
                self.idle_check();
                self.thread_done();
                return Step::Park;
            }
            Outcome::Shutdown { reason, code } => {
                self.finish(RunEnd::Shutdown { reason, code });
                return Step::Park;
            }
            // In-process there are no registers to restore: the callback function returns.
            Outcome::UpcallReturn(_) => Ret::ok(0),
        };
        self.deliver_upcalls(vcpu);
        Step::Return(ret)
    }

    fn wait_block(&self, vcpu: u32) -> Ret {
        let Some(slot) = self.slots.get(vcpu as usize) else {
            return Ret::err(Status::FAILED);
        };
        loop {
            if let Some(r) = self.vm().finish_block(vcpu) {
                return r;
            }
            // Woken for nothing (or about to wait): this vCPU may be the last one that could
            // have moved virtual time on.
            self.idle_check();
            let mut n = lock(&slot.notified);
            while !*n {
                n = slot.cv.wait(n).unwrap_or_else(|e| e.into_inner());
            }
            *n = false;
        }
    }

    /// With auto-advance, when no vCPU can run, jumps virtual time to the next deadline.
    fn idle_check(&self) {
        if !self.cfg.auto_advance {
            return;
        }
        let vm = self.vm();
        // A BLOCKED vCPU that has been notified but whose thread has not yet run again is
        // runnable: jumping time now would let deadlines pass that it would have met.
        let all_idle = (0..self.cfg.vcpus).all(|v| match vm.vcpu_state(v) {
            Some(pvabi::vcpu::VcpuState::STOPPED) => true,
            Some(pvabi::vcpu::VcpuState::BLOCKED) => self
                .slots
                .get(v as usize)
                .is_some_and(|s| !*lock(&s.notified)),
            _ => false,
        });
        if !all_idle {
            return;
        }
        if let Some(d) = vm.next_deadline() {
            self.clock.fetch_max(d, Ordering::SeqCst);
            vm.poll_timers();
        }
    }

    /// Delivers at most one upcall at this call boundary (`EVT-11`).
    fn deliver_upcalls(self: &Arc<Self>, vcpu: u32) {
        // A vector handler runs "with interrupts off": no nested vector delivery (the
        // interrupt gate clears IF on real hardware).
        if IN_VECTOR.with(|c| c.get()) {
            return;
        }
        match self.vm().take_upcall(vcpu) {
            None => {}
            Some(Upcall::Vector(v)) => {
                let h = lock(&self.vector).clone();
                if let Some(h) = h {
                    IN_VECTOR.with(|c| c.set(true));
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h(v, vcpu)));
                    IN_VECTOR.with(|c| c.set(false));
                    if r.is_err() {
                        self.guest_panicked(vcpu);
                    }
                }
            }
            Some(Upcall::Callback { target }) => {
                let f = lock(&self.funcs).get(&target).cloned();
                // In-process there is no interrupted register state to save; the frame is
                // zero (canonical) and the callback returns normally.
                let frame = pvabi::event::UpcallFrame::default();
                if let Ok(entry) = self.vm().enter_callback(vcpu, &frame) {
                    if let Some(f) = f {
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            f(entry.rdi, entry.rsi)
                        }));
                        if r.is_err() {
                            self.guest_panicked(vcpu);
                        }
                    }
                    // Ends the callback unless the guest already did with VCPU.UPCALL_RETURN.
                    let _ = self.vm().leave_callback(vcpu);
                }
            }
        }
    }
}

fn gate_call(ctx: usize, regs: Regs) -> Ret {
    let Some(inner) = lookup(ctx) else {
        return Ret::err(Status::FAILED);
    };
    let Some((id, vcpu)) = CURRENT.with(|c| c.get()) else {
        return Ret::err(Status::FAILED);
    };
    if id != ctx {
        return Ret::err(Status::FAILED);
    }
    // After POWER.SHUTDOWN no vCPU runs another guest instruction (PWR-2): a call made
    // afterwards never returns.
    if matches!(*lock(&inner.end), Some(RunEnd::Shutdown { .. })) {
        drop(inner);
        park_forever();
    }
    let step = inner.call(vcpu, &regs);
    drop(inner);
    match step {
        Step::Return(r) => r,
        Step::Park => park_forever(),
    }
}

/// The in-process gate (see the crate docs for the contract).
///
/// # Safety
///
/// `regs` must be valid for reads and writes of one [`MockRegs`] for the duration of the call
/// and not accessed through any other path meanwhile (null is tolerated and ignored).
#[allow(unsafe_code)]
pub unsafe extern "C" fn mock_gate(ctx: usize, regs: *mut MockRegs) {
    if regs.is_null() {
        return;
    }
    // SAFETY: `regs` is non-null (checked above) and, by this function's contract, valid for
    // reads of one `MockRegs` and not aliased during the call. `MockRegs` is plain old data,
    // so any bit pattern is a valid value.
    let r = unsafe { regs.read() };
    let ret = gate_call(
        ctx,
        Regs {
            rax: r.rax,
            args: r.args,
        },
    );
    let mut out = r;
    out.rax = ret.status.to_reg();
    out.args[0] = ret.value;
    // SAFETY: as above, `regs` is valid for writes of one `MockRegs` and exclusively ours for
    // the duration of the call.
    unsafe { regs.write(out) };
}

// -------------------------------------------------------------------------------------------
// The public handle
// -------------------------------------------------------------------------------------------

/// An in-process pvabi host with one guest.
///
/// Dropping it leaves parked vCPU threads (those that stopped or shut down) parked; threads
/// still running guest code keep running, and every call they make from then on fails with
/// FAILED. Drop a mock only after [`Mock::wait`] reported the end of the run.
pub struct Mock {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Mock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mock")
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        lock(registry()).remove(&self.inner.id);
        if let Some(poller) = self.inner.ring.stop() {
            // It wakes at once (the stop notifies it) and finishes at most the one
            // `process_ring` it is in.
            let _ = poller.join();
        }
    }
}

impl Mock {
    /// Creates the host, guest RAM, the memory map and the boot handoff.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for a vCPU count outside 1..=16 or RAM below 2 MiB.
    pub fn new(cfg: MockConfig) -> Result<Self, ConfigError> {
        if cfg.ram_size < (2 << 20) {
            return Err(ConfigError::Memory(
                "mock RAM must be at least 2 MiB".into(),
            ));
        }
        let ram = GuestRam::from_ranges(&[(0, cfg.ram_size)])?;
        let id = NEXT_ID.fetch_add(1, Ordering::SeqCst);
        let clock = Arc::new(AtomicU64::new(cfg.start_time_ns));
        let mut vm_error = None;
        let inner = Arc::new_cyclic(|weak: &Weak<Inner>| {
            let mut vc = VmConfig::new(cfg.vcpus);
            vc.memory_map = vec![
                MemMapEntry {
                    base: 0,
                    length: LOADER_END,
                    kind: MemKind::LOADER.0,
                    _reserved: 0,
                },
                MemMapEntry {
                    base: LOADER_END,
                    length: cfg.ram_size as u64 - LOADER_END,
                    kind: MemKind::RAM.0,
                    _reserved: 0,
                },
            ];
            vc.backend_id = backend_id::MOCK;
            vc.backend_version = 1;
            vc.features = cfg.features;
            vc.gate_kind = GateKind::INPROCESS;
            vc.gate_param = id as u64;
            vc.exec_mode = ExecMode::INPROCESS;
            vc.harness = cfg.harness;
            vc.quirks = cfg.faults.quirks;
            vc.hook = Some(Arc::new(MockHook {
                inner: weak.clone(),
            }));
            if cfg.console_echo {
                vc.console_sink = Some(Arc::new(|b: &[u8]| {
                    eprint!("{}", String::from_utf8_lossy(b));
                }));
            }
            let platform = Arc::new(MockPlatform {
                inner: weak.clone(),
                clock: Arc::clone(&clock),
                epoch: cfg.wallclock_epoch_ns,
            });
            let vm = OnceLock::new();
            match Vm::new(vc, ram.clone(), platform) {
                Ok(v) => {
                    let _ = vm.set(Arc::new(v));
                }
                Err(e) => vm_error = Some(e),
            }
            Inner {
                id,
                cfg: cfg.clone(),
                ram: ram.clone(),
                vm,
                clock: Arc::clone(&clock),
                slots: (0..cfg.vcpus.min(pvabi::MAX_VCPUS))
                    .map(|_| Slot {
                        notified: Mutex::new(false),
                        cv: Condvar::new(),
                    })
                    .collect(),
                funcs: Mutex::new(HashMap::new()),
                next_token: AtomicU64::new(0x7f00_0000_0000),
                vector: Mutex::new(None),
                faults: Mutex::new(cfg.faults.clone()),
                trace: Mutex::new(VecDeque::new()),
                seq: AtomicU64::new(0),
                end: Mutex::new(None),
                end_cv: Condvar::new(),
                live_threads: Mutex::new(0),
                ring: Arc::new(RingServer::new()),
            }
        });
        if let Some(e) = vm_error {
            return Err(e);
        }
        let mock = Mock { inner };
        lock(registry()).insert(id, Arc::downgrade(&mock.inner));
        mock.inner
            .vm()
            .write_boot_handoff(BOOT_INFO_GPA, &cfg.cmdline)
            .map_err(|e| ConfigError::Memory(e.to_string()))?;
        Ok(mock)
    }

    /// The host-side [`Vm`] (store as host, inject events, console output, reports,
    /// shutdown state, grants, balloon).
    pub fn vm(&self) -> &Arc<Vm> {
        self.inner.vm()
    }

    /// Guest RAM.
    pub fn ram(&self) -> &GuestRam {
        &self.inner.ram
    }

    /// The gate function guest code calls.
    pub fn gate_fn(&self) -> GateFn {
        mock_gate
    }

    /// The gate's context word.
    pub fn gate_ctx(&self) -> usize {
        self.inner.id
    }

    /// The boot context for vCPU `vcpu`.
    pub fn boot_ctx(&self, vcpu: u32) -> BootCtx {
        BootCtx {
            boot_info_gpa: BOOT_INFO_GPA,
            vcpu,
            gate_fn: mock_gate,
            gate_ctx: self.inner.id,
            host_base: self
                .inner
                .ram
                .host_address(0)
                .map(|p| p as usize)
                .unwrap_or(0),
            ram_len: self.inner.cfg.ram_size,
            scratch_gpa: SCRATCH_GPA,
            scratch_len: self.inner.cfg.ram_size as u64 - SCRATCH_GPA,
        }
    }

    /// Registers a guest function; returns the address to pass as VCPU.START `entry` or as a
    /// callback target (its own address).
    pub fn register_fn(&self, f: GuestFn) -> u64 {
        let addr = f as usize as u64;
        lock(&self.inner.funcs).insert(addr, Arc::new(move |a, b| f(a, b)));
        addr
    }

    /// Registers a closure as a guest function; returns a token address (canonical, never a
    /// real function) to pass as VCPU.START `entry` or as a callback target.
    pub fn register_closure(&self, f: impl Fn(u64, u64) + Send + Sync + 'static) -> u64 {
        let token = self.inner.next_token.fetch_add(16, Ordering::SeqCst);
        lock(&self.inner.funcs).insert(token, Arc::new(f));
        token
    }

    /// Sets the handler called for VECTOR-mode upcalls: `f(vector, vcpu)`.
    pub fn on_vector(&self, f: impl Fn(u8, u32) + Send + Sync + 'static) {
        *lock(&self.inner.vector) = Some(Arc::new(f));
    }

    /// Starts the boot vCPU on a new thread running `f(boot_ctx)`.
    pub fn start(&self, f: impl FnOnce(BootCtx) + Send + 'static) {
        let ctx = self.boot_ctx(self.vm().config().boot_vcpu);
        let _ = self.inner.spawn_vcpu(ctx.vcpu, move || f(ctx));
    }

    /// Runs one call as vCPU `vcpu` on the calling thread (blocking in VCPU.BLOCK, delivering
    /// upcalls), for host-side tests that drive the guest side themselves.
    ///
    /// Calls that do not return (POWER.SHUTDOWN, VCPU.STOP succeeding) would park the calling
    /// thread for good; they are refused here with FAILED instead of being run.
    pub fn call_as(&self, vcpu: u32, regs: Regs) -> Ret {
        if regs.rax == pvabi::call::POWER_SHUTDOWN.0 as u64
            || regs.rax == pvabi::call::VCPU_STOP.0 as u64
        {
            return Ret::err(Status::FAILED);
        }
        let prev = CURRENT.with(|c| c.replace(Some((self.inner.id, vcpu))));
        let r = match self.inner.call(vcpu, &regs) {
            Step::Return(r) => r,
            Step::Park => Ret::err(Status::FAILED),
        };
        CURRENT.with(|c| c.set(prev));
        r
    }

    /// Advances the virtual clock by `ns`, refreshes clock pages, fires due timers and ends
    /// due waits.
    pub fn advance(&self, ns: u64) {
        self.inner.clock.fetch_add(ns, Ordering::SeqCst);
        self.vm().poll_timers();
    }

    /// Current virtual system time in ns.
    pub fn now_ns(&self) -> u64 {
        self.inner.clock.load(Ordering::SeqCst)
    }

    /// Waits for the run to end (shutdown, or every vCPU stopped).
    pub fn wait(&self) -> RunEnd {
        let mut e = lock(&self.inner.end);
        loop {
            if let Some(end) = *e {
                return end;
            }
            e = self.inner.end_cv.wait(e).unwrap_or_else(|x| x.into_inner());
        }
    }

    /// Waits at most `timeout` for the run to end.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<RunEnd> {
        let e = lock(&self.inner.end);
        let (e, _) = self
            .inner
            .end_cv
            .wait_timeout_while(e, timeout, |e| e.is_none())
            .unwrap_or_else(|x| x.into_inner());
        *e
    }

    /// How the run ended, if it has.
    pub fn ended(&self) -> Option<RunEnd> {
        *lock(&self.inner.end)
    }

    /// A copy of the call trace (oldest first).
    pub fn trace(&self) -> Vec<TraceEntry> {
        lock(&self.inner.trace).iter().cloned().collect()
    }

    /// Empties the call trace.
    pub fn clear_trace(&self) {
        lock(&self.inner.trace).clear();
    }

    /// Makes `call` fail with `status` (`times` more times, or always) without running it.
    pub fn fail_call(&self, call: CallId, status: Status, times: Option<u32>) {
        lock(&self.inner.faults).calls.push(CallFault {
            call,
            vcpu: None,
            status,
            times,
        });
    }

    /// Drops events on `port` (None: any) `times` more times (None: always).
    pub fn drop_events(&self, port: Option<u32>, times: Option<u32>) {
        lock(&self.inner.faults).events.push(EventFault {
            port,
            delay_ns: None,
            times,
        });
    }

    /// Delays events on `port` (None: any) by `ns` of system time, `times` more times.
    pub fn delay_events(&self, port: Option<u32>, ns: u64, times: Option<u32>) {
        lock(&self.inner.faults).events.push(EventFault {
            port,
            delay_ns: Some(ns),
            times,
        });
    }

    /// Removes every call and event fault rule (quirks stay: they are fixed at creation).
    pub fn clear_faults(&self) {
        let mut f = lock(&self.inner.faults);
        f.calls.clear();
        f.events.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvabi::ring::{RingCompletion, RingRequest};
    use pvabi::{call, ABI_VERSION};
    use std::time::Instant;

    const RING: u64 = SCRATCH_GPA;
    const ORDER: u32 = 2;

    fn load(m: &Mock, off: usize) -> u32 {
        m.ram()
            .load_u32(RING + off as u64, Ordering::SeqCst)
            .expect("ring in RAM")
    }

    /// Publishes request `seq` (counter value) as the guest would, without a doorbell.
    fn post(m: &Mock, seq: u32, cookie: u32, id: CallId) {
        let slot = RING + RingHeader::SIZE as u64 + u64::from(seq % 4) * RingRequest::SIZE as u64;
        let req = RingRequest {
            cookie,
            call_id: id.0,
            ..RingRequest::default()
        };
        m.ram().write_obj(slot, &req).expect("slot in RAM");
        m.ram()
            .store_u32(
                RING + RingHeader::REQ_PROD as u64,
                seq + 1,
                Ordering::SeqCst,
            )
            .expect("ring in RAM");
    }

    fn completion(m: &Mock, seq: u32) -> RingCompletion {
        let at = RING
            + RingHeader::SIZE as u64
            + 4 * RingRequest::SIZE as u64
            + u64::from(seq % 4) * RingCompletion::SIZE as u64;
        m.ram().read_obj(at).expect("slot in RAM")
    }

    /// Waits (bounded, generously) until `cmp_prod` reaches `n` with no call made meanwhile.
    fn served(m: &Mock, n: u32) -> bool {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            if load(m, RingHeader::CMP_PROD) == n {
                return true;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        false
    }

    fn register(m: &Mock) {
        let hdr = RingHeader {
            magic: RingHeader::MAGIC,
            order: ORDER,
            ..RingHeader::default()
        };
        m.ram().write_obj(RING, &hdr).expect("ring in RAM");
        let r = m.call_as(
            0,
            Regs::new(
                call::BASE_RING_REGISTER,
                [RING, u64::from(ORDER), 0, 0, 0, 0],
            ),
        );
        assert_eq!(r.status, Status::SUCCESS);
    }

    /// The poller threads of the mock with this id that still exist.
    fn pollers(id: usize) -> usize {
        let name = format!("pvabi-ring{id}");
        std::fs::read_dir("/proc/self/task")
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|t| {
                        std::fs::read_to_string(t.path().join("comm"))
                            .is_ok_and(|c| c.trim_end() == name)
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    #[test]
    fn a_registered_ring_is_polled_without_a_doorbell() {
        let m = Mock::new(MockConfig::default()).unwrap();
        assert_eq!(pollers(m.inner.id), 0, "no poller before a ring exists");
        register(&m);
        assert_eq!(load(&m, RingHeader::HOST_POLLING), 1, "host_polling set");
        // No call is made while waiting: the poller thread serves the requests.
        post(&m, 0, 0x11, call::BASE_GET_VCPU_COUNT);
        assert!(served(&m, 1), "the request was not served");
        let c = completion(&m, 0);
        assert_eq!((c.cookie, c.status, c.value), (0x11, 0, 1));
        m.ram()
            .store_u32(RING + RingHeader::CMP_CONS as u64, 1, Ordering::SeqCst)
            .unwrap();
        post(&m, 1, 0x12, call::BASE_GET_ABI_VERSION);
        assert!(served(&m, 2), "the second request was not served");
        let c = completion(&m, 1);
        assert_eq!(
            (c.cookie, c.status, c.value),
            (0x12, 0, u64::from(ABI_VERSION.to_u32()))
        );
        // The requests ran as calls of the ring owner and are in the trace.
        assert!(m
            .trace()
            .iter()
            .any(|t| t.call == u64::from(call::BASE_GET_ABI_VERSION.0) && t.vcpu == 0));
        let r = m.call_as(0, Regs::new(call::BASE_RING_UNREGISTER, [0; 6]));
        assert_eq!(r.status, Status::SUCCESS);
        assert_eq!(
            load(&m, RingHeader::HOST_POLLING),
            0,
            "host_polling cleared"
        );
        // RING-7: nothing is consumed after unregistration, by the poller or at a call.
        post(&m, 2, 0x13, call::BASE_GET_VCPU_COUNT);
        std::thread::sleep(Duration::from_millis(20));
        let _ = m.call_as(0, Regs::new(call::BASE_GET_VCPU_ID, [0; 6]));
        assert_eq!(load(&m, RingHeader::CMP_PROD), 2);
        assert_eq!(load(&m, RingHeader::REQ_CONS), 2);
        // Registered again, the same poller serves it.
        register(&m);
        assert_eq!(load(&m, RingHeader::HOST_POLLING), 1);
        assert_eq!(pollers(m.inner.id), 1, "one poller per mock");
        let id = m.inner.id;
        drop(m);
        assert_eq!(pollers(id), 0, "the poller ended with the mock");
    }

    #[test]
    fn a_gate_call_serves_the_ring_first() {
        let m = Mock::new(MockConfig::default()).unwrap();
        // End the run first (the boot vCPU returns at once): no poller runs after the end, so
        // only gate calls can serve the ring.
        m.start(|_| {});
        assert_eq!(m.wait(), RunEnd::AllStopped);
        register(&m);
        assert_eq!(
            load(&m, RingHeader::HOST_POLLING),
            0,
            "no poller, no polling"
        );
        assert_eq!(pollers(m.inner.id), 0);
        post(&m, 0, 0x21, call::BASE_GET_VCPU_ID);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(load(&m, RingHeader::CMP_PROD), 0, "nothing served it yet");
        let r = m.call_as(0, Regs::new(call::BASE_GET_VCPU_COUNT, [0; 6]));
        assert_eq!(r.status, Status::SUCCESS);
        assert_eq!(load(&m, RingHeader::CMP_PROD), 1, "served by the call");
        let c = completion(&m, 0);
        assert_eq!((c.cookie, c.status, c.value), (0x21, 0, 0));
    }

    #[test]
    fn an_injected_success_registers_nothing() {
        let m = Mock::new(MockConfig::default()).unwrap();
        m.fail_call(call::BASE_RING_REGISTER, Status::SUCCESS, Some(1));
        let hdr = RingHeader {
            magic: RingHeader::MAGIC,
            order: ORDER,
            ..RingHeader::default()
        };
        m.ram().write_obj(RING, &hdr).unwrap();
        let r = m.call_as(
            0,
            Regs::new(
                call::BASE_RING_REGISTER,
                [RING, u64::from(ORDER), 0, 0, 0, 0],
            ),
        );
        assert_eq!(r.status, Status::SUCCESS);
        assert_eq!(load(&m, RingHeader::HOST_POLLING), 0);
        assert_eq!(pollers(m.inner.id), 0);
    }
}
