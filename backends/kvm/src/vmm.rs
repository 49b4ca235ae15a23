//! The VMM: VM set-up, vCPU threads, the exit loop and the I/O-port gate.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs, kvm_userspace_memory_region, CpuId};
use kvm_ioctls::{Kvm, SyncReg, VcpuExit, VcpuFd, VmFd};
use pvabi::discovery::{ExecMode, Features, GateKind};
use pvabi::gate::{Regs, Ret};
use pvabi::Status;
use pvabi_host::{ClockParams, GuestRam, Outcome, Upcall, Vm, VmConfig};
use vm_memory::GuestMemoryBackend;

use crate::layout::*;
use crate::{kick, ConsoleSink, Error, ExitStatus, Mode, RegDump, RunConfig, RunOutput};

/// CPUID leaf where this VMM puts the pvabi signature (next to KVM's own at `0x4000_0000`).
pub const CPUID_BASE: u32 = 0x4000_0100;

/// I/O port of the shared-ring gate's doorbell (what BASE.RING_REGISTER returns).
pub const RING_DOORBELL_PORT: u16 = 0x0512;

const CR0_PE: u64 = 1 << 0;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const RFLAGS_RESERVED: u64 = 1 << 1;
const RFLAGS_IF: u64 = 1 << 9;
const RFLAGS_IOPL3: u64 = 3 << 12;
const MSR_IA32_TSC: u32 = 0x10;

/// A pending VCPU.START.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StartReq {
    entry: u64,
    stack: u64,
    arg: u64,
}

#[derive(Debug, Default)]
struct SlotState {
    /// A start request not yet taken by the vCPU thread.
    start: Option<StartReq>,
    /// A wake-up for a sleeping (or about to sleep) vCPU thread.
    wake: bool,
    /// The thread's handle while it is alive and may be signalled.
    thread: Option<libc::pthread_t>,
    /// The thread's kernel id (for its scheduler statistics), once it started.
    tid: Option<i32>,
    /// The thread's run delay (ns spent runnable but not running) already reported as steal.
    steal_seen: u64,
}

/// Per-vCPU state shared between the vCPU thread and everyone who wakes it.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    state: Mutex<SlotState>,
    cv: Condvar,
    /// The host machinery asked this vCPU to look at upcalls ([`pvabi_host::Platform::notify`]).
    pub(crate) upcall: AtomicBool,
}

/// How the run ended, before the host's records are collected.
type Outcome0 = Result<ExitStatus, Error>;

/// The VMM state every thread shares (no reference to the [`Vm`], which holds the platform
/// that holds this).
pub(crate) struct Core {
    pub(crate) mode: Mode,
    pub(crate) vcpus: u32,
    pub(crate) slots: Vec<Slot>,
    started: Instant,
    /// Wall-clock ns since the UNIX epoch at `started`.
    pub(crate) epoch_ns: u64,
    console: Mutex<Box<dyn Write + Send>>,
    outcome: Mutex<Option<Outcome0>>,
    outcome_cv: Condvar,
    stopping: AtomicBool,
    /// Total exits seen, for the watchdog.
    exits: AtomicU64,
    /// Registers travel through `kvm_run` (`KVM_CAP_SYNC_REGS`) instead of ioctls.
    pub(crate) sync_regs: bool,
    /// Guest TSC frequency in Hz (KVM_GET_TSC_KHZ).
    tsc_hz: u64,
    /// Guest TSC minus host TSC, sampled at creation.
    tsc_offset: i64,
    /// Earliest timer deadline (system-time ns), 0 for none.
    deadline: Mutex<u64>,
    deadline_cv: Condvar,
    /// The shared-ring gate's doorbell and poller.
    pub(crate) ring: Arc<crate::ring::RingPoller>,
    /// When [`crate::run`] was called.
    t0: Instant,
    /// When the first call reached the I/O-port gate.
    first_call: OnceLock<Instant>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means a thread panicked; the data is plain state and still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn host_tsc() -> u64 {
    // SAFETY: RDTSC has no preconditions on x86_64 (it is not disabled for user space on
    // Linux); it only reads the time-stamp counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

impl Core {
    /// Nanoseconds since the VM was created (CLOCK_MONOTONIC through `Instant`).
    pub(crate) fn now_ns(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// pvclock parameters: the guest TSC now and the system time now, and the scale of the
    /// guest TSC frequency.
    pub(crate) fn clock_params(&self) -> ClockParams {
        let tsc = host_tsc().wrapping_add_signed(self.tsc_offset);
        let now = self.now_ns();
        let (mul, shift) = pvabi::clock::scale_for_hz(self.tsc_hz);
        ClockParams {
            tsc_timestamp: tsc,
            system_time: now,
            tsc_to_system_mul: mul,
            tsc_shift: shift,
            flags: pvabi::clock::ClockPage::FLAG_TSC_STABLE,
        }
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Ends the VM with `r` unless it has already ended, and wakes every thread.
    pub(crate) fn finish(&self, r: Outcome0) {
        let mut o = lock(&self.outcome);
        if o.is_none() {
            *o = Some(r);
        }
        self.stopping.store(true, Ordering::SeqCst);
        self.outcome_cv.notify_all();
        drop(o);
        self.wake_all();
    }

    fn wake_all(&self) {
        for v in 0..self.vcpus {
            self.kick(v);
        }
        self.deadline_cv.notify_all();
        self.ring.ring_doorbell();
    }

    /// Wakes vCPU `v`: out of a sleep (VCPU.BLOCK, HLT, waiting for START) and out of
    /// `KVM_RUN`. Unknown ids are ignored.
    pub(crate) fn kick(&self, v: u32) {
        let Some(slot) = self.slots.get(v as usize) else {
            return;
        };
        let mut st = lock(&slot.state);
        st.wake = true;
        if let Some(t) = st.thread {
            // SAFETY: pthread_self and pthread_equal have no preconditions.
            let own = unsafe { libc::pthread_equal(t, libc::pthread_self()) } != 0;
            if !own {
                // SAFETY: `thread` is Some only while the vCPU thread is alive: the thread
                // sets it at start and clears it under this same lock before it returns; we
                // hold the lock, so the thread has not exited. A thread never kicks itself
                // out of KVM_RUN (it is not in it), so its own id is skipped.
                unsafe { kick::signal_thread(t) };
            }
        }
        slot.cv.notify_all();
    }

    /// [`pvabi_host::Platform::notify`]: look at upcalls and block results.
    pub(crate) fn notify(&self, v: u32) {
        if let Some(slot) = self.slots.get(v as usize) {
            slot.upcall.store(true, Ordering::SeqCst);
            self.kick(v);
        }
    }

    /// [`pvabi_host::Platform::start_vcpu`]: hands the start request to the vCPU's thread.
    pub(crate) fn queue_start(
        &self,
        v: u32,
        entry: u64,
        stack: u64,
        arg: u64,
    ) -> Result<(), Status> {
        let slot = self.slots.get(v as usize).ok_or(Status::INVALID_PARAM)?;
        if self.stopping() {
            return Err(Status::FAILED);
        }
        let mut st = lock(&slot.state);
        st.start = Some(StartReq { entry, stack, arg });
        slot.cv.notify_all();
        Ok(())
    }

    /// Writes console bytes (best effort: a closed output must not end the guest).
    pub(crate) fn console_write(&self, bytes: &[u8]) {
        let mut c = lock(&self.console);
        let _ = c.write_all(bytes);
        let _ = c.flush();
    }

    /// [`pvabi_host::Platform::deadline_changed`].
    pub(crate) fn set_deadline(&self, d: u64) {
        if d == 0 {
            return;
        }
        let mut cur = lock(&self.deadline);
        *cur = if *cur == 0 { d } else { (*cur).min(d) };
        self.deadline_cv.notify_all();
    }

    /// After a poll: the deadline becomes the earlier of `next` and any set meanwhile.
    pub(crate) fn merge_deadline(&self, next: u64) {
        let mut cur = lock(&self.deadline);
        *cur = match (*cur, next) {
            (0, n) => n,
            (c, 0) => c,
            (c, n) => c.min(n),
        };
    }

    /// Waits until the deadline is reached (then consumes it and returns `Some`), at most
    /// `max`; returns `None` on timeout or stop.
    pub(crate) fn wait_deadline(&self, max: Duration) -> Option<()> {
        let mut cur = lock(&self.deadline);
        let t0 = Instant::now();
        loop {
            if self.stopping() {
                return None;
            }
            let now = self.now_ns();
            if *cur != 0 && now >= *cur {
                *cur = 0;
                return Some(());
            }
            let waited = t0.elapsed();
            if waited >= max {
                return None;
            }
            let mut wait = max - waited;
            if *cur != 0 {
                wait = wait.min(Duration::from_nanos(*cur - now));
            }
            cur = self
                .deadline_cv
                .wait_timeout(cur, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Steal time per vCPU since the last call: the growth of each vCPU thread's run delay
    /// (time runnable but waiting for a host CPU), from `/proc/self/task/<tid>/schedstat`.
    pub(crate) fn take_steal(&self) -> Vec<(u32, u64)> {
        let mut out = Vec::new();
        for (v, slot) in self.slots.iter().enumerate() {
            let mut st = lock(&slot.state);
            let Some(now) = st.tid.and_then(run_delay_ns) else {
                continue;
            };
            let d = now.saturating_sub(st.steal_seen);
            st.steal_seen = now;
            if d > 0 {
                out.push((v as u32, d));
            }
        }
        out
    }

    /// Sleeps until a wake-up (or the VM stops), then consumes it.
    fn wait_wake(&self, id: u32) {
        let Some(slot) = self.slots.get(id as usize) else {
            return;
        };
        let mut st = lock(&slot.state);
        while !st.wake && !self.stopping() {
            st = slot.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.wake = false;
    }

    /// Waits until vCPU `id` is started (or the VM stops); returns the start request.
    fn wait_for_start(&self, id: u32) -> Option<StartReq> {
        let slot = self.slots.get(id as usize)?;
        let mut st = lock(&slot.state);
        loop {
            if self.stopping() {
                return None;
            }
            if let Some(s) = st.start.take() {
                return Some(s);
            }
            st = slot.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// A VM ready to run.
pub(crate) struct Machine {
    core: Arc<Core>,
    vm: Arc<Vm>,
    vcpu_fds: Vec<VcpuFd>,
    entry: u64,
    cpuid: CpuId,
    boot_info_gpa: u64,
    // Dropped after the vCPU fds (field order), which KVM requires for a clean teardown.
    _vm_fd: VmFd,
    watchdog: Option<Duration>,
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Error {
    move |e| Error::Kvm { what, source: e }
}

impl Machine {
    /// Creates the VM, loads the image and writes the boot structures.
    pub(crate) fn new(
        kvm: &Kvm,
        image: &Path,
        cfg: &RunConfig,
        t0: Instant,
    ) -> Result<Self, Error> {
        if cfg.vcpus == 0 || cfg.vcpus > pvabi::MAX_VCPUS {
            return Err(Error::Config(format!(
                "vcpus must be 1..={}, not {}",
                pvabi::MAX_VCPUS,
                cfg.vcpus
            )));
        }
        let mem_size = cfg
            .mem_mib
            .checked_mul(1 << 20)
            .filter(|m| (MIN_MEM..=MAX_MEM).contains(m))
            .ok_or_else(|| {
                Error::Config(format!(
                    "memory must be {}..={} MiB, not {}",
                    MIN_MEM >> 20,
                    MAX_MEM >> 20,
                    cfg.mem_mib
                ))
            })?;
        if cfg.cmdline.len() > CMDLINE_MAX {
            return Err(Error::Config(format!(
                "command line longer than {CMDLINE_MAX} bytes"
            )));
        }
        kick::install().map_err(Error::Signal)?;
        if !kvm.check_extension(kvm_ioctls::Cap::ImmediateExit) {
            return Err(Error::Config(
                "KVM lacks KVM_CAP_IMMEDIATE_EXIT, which kicking vCPUs needs".into(),
            ));
        }
        let sync_regs = cfg.sync_regs
            && kvm.check_extension_raw(u64::from(kvm_bindings::KVM_CAP_SYNC_REGS) as _)
                & (kvm_bindings::KVM_SYNC_X86_REGS as i32)
                != 0;

        let vm_fd = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
        let mem_len = usize::try_from(mem_size)
            .map_err(|_| Error::Config("memory size does not fit usize".into()))?;
        let ram =
            GuestRam::from_ranges(&[(0, mem_len)]).map_err(|e| Error::Memory(e.to_string()))?;
        for (slot, region) in ram.memory().iter().enumerate() {
            use vm_memory::GuestMemoryRegion;
            let host = ram
                .memory()
                .get_host_address(region.start_addr())
                .map_err(|e| Error::Memory(e.to_string()))?;
            let r = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: 0,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: host as u64,
            };
            // SAFETY: `userspace_addr..+memory_size` is the live anonymous mapping of
            // `region`, owned by `ram`; the `Vm` keeps a clone of `ram` and outlives the VM fd
            // (the vCPU threads are joined and `Machine` drops `_vm_fd` while `ram` is still
            // referenced by the `Vm` it owns); one region per slot, so slots do not overlap.
            unsafe { vm_fd.set_user_memory_region(r) }
                .map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))?;
        }

        let (image_end, entry) = crate::loader::load_elf(ram.memory(), image, mem_size)?;
        let user = cfg.mode == Mode::PvRing3;
        write_page_tables(ram.memory(), user).map_err(|e| Error::Memory(e.to_string()))?;
        write_gdt(ram.memory()).map_err(|e| Error::Memory(e.to_string()))?;

        // Not needed on AMD or for long-mode guests on most hosts; harmless where unsupported.
        let _ = vm_fd.set_tss_address(0xfffb_d000);

        let mut vcpu_fds = Vec::new();
        for id in 0..cfg.vcpus {
            vcpu_fds.push(
                vm_fd
                    .create_vcpu(u64::from(id))
                    .map_err(kvm_err("KVM_CREATE_VCPU"))?,
            );
        }
        let first = vcpu_fds
            .first()
            .ok_or_else(|| Error::Config("no vCPU".into()))?;
        let tsc_khz = first.get_tsc_khz().map_err(kvm_err("KVM_GET_TSC_KHZ"))?;
        let tsc_offset = guest_tsc_offset(first)?;
        let ring = crate::ring::RingPoller::new(cfg.ring_poll, |fd| {
            vm_fd
                .register_ioevent(
                    fd,
                    &kvm_ioctls::IoEventAddress::Pio(u64::from(RING_DOORBELL_PORT)),
                    kvm_ioctls::NoDatamatch,
                )
                .is_ok()
        })
        .map_err(|e| Error::Config(format!("ring doorbell eventfd: {e}")))?;

        let console: Box<dyn Write + Send> = match &cfg.console {
            ConsoleSink::Stdout => Box::new(std::io::stdout()),
            ConsoleSink::File(p) => Box::new(File::create(p).map_err(|e| Error::Console {
                path: p.clone(),
                source: e,
            })?),
            ConsoleSink::Capture(buf) => Box::new(CaptureWriter(buf.clone())),
        };
        let epoch_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let core = Arc::new(Core {
            mode: cfg.mode,
            vcpus: cfg.vcpus,
            slots: (0..cfg.vcpus).map(|_| Slot::default()).collect(),
            started: Instant::now(),
            epoch_ns,
            console: Mutex::new(console),
            outcome: Mutex::new(None),
            outcome_cv: Condvar::new(),
            stopping: AtomicBool::new(false),
            exits: AtomicU64::new(0),
            sync_regs,
            tsc_hz: u64::from(tsc_khz) * 1000,
            tsc_offset,
            deadline: Mutex::new(0),
            deadline_cv: Condvar::new(),
            ring: Arc::new(ring),
            t0,
            first_call: OnceLock::new(),
        });

        let mut vmc = VmConfig::new(cfg.vcpus);
        vmc.memory_map = memory_map(mem_size, image_end);
        vmc.backend_id = pvabi::discovery::backend_id::KVM;
        vmc.backend_version = crate::BACKEND_VERSION;
        vmc.features = match cfg.mode {
            // Ring 3 has no IDT to take an interrupt through: callbacks only.
            Mode::PvRing3 => VmConfig::ALL_FEATURES.difference(Features::UPCALL_VECTOR),
            Mode::Ring0 => VmConfig::ALL_FEATURES,
        }
        .difference(cfg.features_off);
        vmc.gate_kind = GateKind::IOPORT;
        vmc.gate_param = u64::from(pvabi::gate::DEFAULT_IOPORT);
        vmc.exec_mode = match cfg.mode {
            Mode::Ring0 => ExecMode::RING0,
            Mode::PvRing3 => ExecMode::PV_RING3,
        };
        vmc.harness = cfg.harness;
        vmc.ring_doorbell = u64::from(RING_DOORBELL_PORT);
        let sink_core = core.clone();
        vmc.console_sink = Some(Arc::new(move |b: &[u8]| sink_core.console_write(b)));
        let platform = Arc::new(crate::platform::KvmPlatform(core.clone()));
        let vm = Arc::new(Vm::new(vmc, ram, platform).map_err(|e| Error::Config(e.to_string()))?);
        let boot_info_gpa = vm
            .write_boot_handoff(BOOT_INFO_GPA, cfg.cmdline.as_bytes())
            .map_err(|e| Error::Memory(format!("boot info: {e}")))?;

        let mut cpuid = kvm
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
        add_pvabi_leaves(&mut cpuid, vm.features(), cfg.vcpus)?;

        Ok(Self {
            core,
            vm,
            vcpu_fds,
            entry,
            cpuid,
            boot_info_gpa,
            _vm_fd: vm_fd,
            watchdog: cfg.watchdog,
        })
    }

    /// Runs the VM until it ends; returns its outcome.
    pub(crate) fn run(self) -> Result<RunOutput, Error> {
        let Machine {
            core,
            vm,
            vcpu_fds,
            entry,
            cpuid,
            boot_info_gpa,
            _vm_fd,
            watchdog,
        } = self;
        let mut handles = Vec::new();
        for (id, fd) in vcpu_fds.into_iter().enumerate() {
            let (c, v, cpuid) = (core.clone(), vm.clone(), cpuid.clone());
            let id = id as u32;
            let boot = (id == 0).then_some(StartReq {
                entry,
                stack: BOOT_STACK_TOP - 8,
                arg: boot_info_gpa,
            });
            let h = std::thread::Builder::new()
                .name(format!("vcpu{id}"))
                .spawn(move || vcpu_thread(c, v, fd, id, boot, cpuid));
            match h {
                Ok(h) => handles.push(h),
                Err(e) => {
                    core.finish(Err(Error::Thread(e)));
                    break;
                }
            }
        }
        let timer = {
            let (c, v) = (core.clone(), vm.clone());
            std::thread::Builder::new()
                .name("pvabi-timers".into())
                .spawn(move || crate::platform::timer_thread(c, v))
        };
        let timer = match timer {
            Ok(t) => Some(t),
            Err(e) => {
                core.finish(Err(Error::Thread(e)));
                None
            }
        };
        let poller = {
            let (c, v, p) = (core.clone(), vm.clone(), core.ring.clone());
            std::thread::Builder::new()
                .name("pvabi-ring".into())
                .spawn(move || crate::ring::poller_thread(c, v, p))
        };
        let poller = match poller {
            Ok(t) => Some(t),
            Err(e) => {
                core.finish(Err(Error::Thread(e)));
                None
            }
        };
        // Wait for the outcome, checking the watchdog.
        {
            let mut o = lock(&core.outcome);
            let mut last_exits = core.exits.load(Ordering::SeqCst);
            let mut last_change = Instant::now();
            while o.is_none() {
                o = core
                    .outcome_cv
                    .wait_timeout(o, Duration::from_millis(100))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                if o.is_some() {
                    break;
                }
                let now = core.exits.load(Ordering::SeqCst);
                if now != last_exits {
                    last_exits = now;
                    last_change = Instant::now();
                } else if let Some(w) = watchdog {
                    if last_change.elapsed() >= w {
                        *o = Some(Err(Error::Watchdog {
                            after: w,
                            vcpus: Vec::new(),
                        }));
                    }
                }
            }
        }
        core.stopping.store(true, Ordering::SeqCst);
        core.wake_all();
        let mut dumps = Vec::new();
        for h in handles {
            match h.join() {
                Ok(Some(d)) => dumps.push(d),
                Ok(None) => {}
                Err(_) => core.finish(Err(Error::Config("a vCPU thread panicked".into()))),
            }
        }
        if let Some(t) = timer {
            let _ = t.join();
        }
        if let Some(t) = poller {
            let _ = t.join();
        }
        let r = lock(&core.outcome)
            .take()
            .unwrap_or(Err(Error::Config("VM ended without outcome".into())));
        match r {
            Ok(status) => Ok(RunOutput {
                status,
                crash: vm.shutdown_state().and_then(|s| s.crash),
                reports: vm.take_reports(),
                console: vm.console_history(),
                first_call: core.first_call.get().map(|t| t.duration_since(core.t0)),
                tsc_khz: u32::try_from(core.tsc_hz / 1000).unwrap_or(u32::MAX),
                ring_doorbell_in_kernel: core.ring.in_kernel,
            }),
            Err(Error::Watchdog { after, .. }) => Err(Error::Watchdog {
                after,
                vcpus: dumps,
            }),
            Err(e) => Err(e),
        }
    }
}

/// The run delay in ns of thread `tid` of this process (second field of its `schedstat`).
fn run_delay_ns(tid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    parse_run_delay(&text)
}

/// The second field of a `schedstat` line.
pub(crate) fn parse_run_delay(text: &str) -> Option<u64> {
    text.split_whitespace().nth(1)?.parse().ok()
}

/// Guest TSC minus host TSC, read through `MSR_IA32_TSC` of a vCPU.
fn guest_tsc_offset(fd: &VcpuFd) -> Result<i64, Error> {
    let mut msrs = kvm_bindings::Msrs::from_entries(&[kvm_bindings::kvm_msr_entry {
        index: MSR_IA32_TSC,
        ..Default::default()
    }])
    .map_err(|_| Error::Config("MSR list".into()))?;
    let before = host_tsc();
    let n = fd.get_msrs(&mut msrs).map_err(kvm_err("KVM_GET_MSRS"))?;
    let after = host_tsc();
    let guest = msrs.as_slice().first().map(|e| e.data).filter(|_| n == 1);
    let host_mid = before / 2 + after / 2;
    Ok(guest.map_or(0, |g| g.wrapping_sub(host_mid) as i64))
}

/// Writes the pvabi discovery leaves into `cpuid`.
fn add_pvabi_leaves(cpuid: &mut CpuId, features: Features, vcpus: u32) -> Result<(), Error> {
    let sig = pvabi::discovery::cpuid_signature_regs();
    let (p_lo, p_hi) = pvabi::discovery::split_u64(u64::from(pvabi::gate::DEFAULT_IOPORT));
    let f = features.bits();
    let leaves = [
        (
            CPUID_BASE,
            [
                CPUID_BASE + pvabi::discovery::CPUID_LEAF_FEATURES,
                sig[0],
                sig[1],
                sig[2],
            ],
        ),
        (
            CPUID_BASE + pvabi::discovery::CPUID_LEAF_GATE,
            [pvabi::ABI_VERSION.to_u32(), GateKind::IOPORT.0, p_lo, p_hi],
        ),
        (
            CPUID_BASE + pvabi::discovery::CPUID_LEAF_FEATURES,
            [
                f as u32,
                (f >> 32) as u32,
                vcpus,
                pvabi::base::backend_id::KVM,
            ],
        ),
    ];
    for (function, [eax, ebx, ecx, edx]) in leaves {
        cpuid
            .push(kvm_bindings::kvm_cpuid_entry2 {
                function,
                index: 0,
                flags: 0,
                eax,
                ebx,
                ecx,
                edx,
                padding: [0; 3],
            })
            .map_err(|_| Error::Config("CPUID table full".into()))?;
    }
    Ok(())
}

/// Per-vCPU CPUID: initial APIC id in leaf 1 EBX[31:24] and leaf 0xB EDX.
fn vcpu_cpuid(mut cpuid: CpuId, id: u32) -> CpuId {
    for e in cpuid.as_mut_slice() {
        match e.function {
            1 => e.ebx = (e.ebx & 0x00FF_FFFF) | (id << 24),
            0xB | 0x1F => e.edx = id,
            _ => {}
        }
    }
    cpuid
}

fn segment(mode: Mode, code: bool) -> kvm_segment {
    let user = mode == Mode::PvRing3;
    let (selector, type_) = match (user, code) {
        (false, true) => (SEL_KCODE, 0xB),
        (false, false) => (SEL_KDATA, 0x3),
        (true, true) => (SEL_UCODE, 0xB),
        (true, false) => (SEL_UDATA, 0x3),
    };
    kvm_segment {
        base: 0,
        limit: 0xFFFF_FFFF,
        selector,
        type_,
        present: 1,
        dpl: if user { 3 } else { 0 },
        db: u8::from(!code),
        s: 1,
        l: u8::from(code),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Puts `fd` into 64-bit mode at the request's entry with RSP = its stack, RDI = its argument
/// and RSI = the vCPU id.
fn setup_vcpu(fd: &VcpuFd, mode: Mode, id: u32, req: StartReq) -> Result<(), Error> {
    let mut s: kvm_sregs = fd.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
    let code = segment(mode, true);
    let data = segment(mode, false);
    s.cs = code;
    s.ds = data;
    s.es = data;
    s.fs = data;
    s.gs = data;
    s.ss = data;
    s.tr = kvm_segment {
        base: tss_gpa(id),
        limit: TSS_LIMIT as u32,
        selector: tss_selector(id),
        type_: 0xB,
        present: 1,
        dpl: 0,
        db: 0,
        s: 0,
        l: 0,
        g: 0,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    s.ldt = kvm_segment {
        unusable: 1,
        type_: 2,
        present: 0,
        ..Default::default()
    };
    s.gdt.base = GDT_GPA;
    s.gdt.limit = (GDT_ENTRIES * 8 - 1) as u16;
    // No IDT: an exception before the guest installs its own is a triple fault, which the
    // VMM reports with the registers.
    s.idt.base = 0;
    s.idt.limit = 0;
    s.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
    s.cr3 = PML4_GPA;
    s.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
    s.efer = EFER_LME | EFER_LMA;
    fd.set_sregs(&s).map_err(kvm_err("KVM_SET_SREGS"))?;
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    fd.set_fpu(&fpu).map_err(kvm_err("KVM_SET_FPU"))?;
    let rflags = match mode {
        Mode::Ring0 => RFLAGS_RESERVED,
        Mode::PvRing3 => RFLAGS_RESERVED | RFLAGS_IF | RFLAGS_IOPL3,
    };
    let regs = kvm_regs {
        rip: req.entry,
        rsp: req.stack,
        rdi: req.arg,
        rsi: u64::from(id),
        rflags,
        ..Default::default()
    };
    fd.set_regs(&regs).map_err(kvm_err("KVM_SET_REGS"))?;
    Ok(())
}

/// Register dump of a vCPU, best effort.
fn dump(fd: &VcpuFd, id: u32) -> RegDump {
    RegDump {
        vcpu: id,
        regs: fd.get_regs().ok(),
        sregs: fd.get_sregs().ok(),
    }
}

/// Completes a pending port-I/O exit without entering the guest (`immediate_exit`), so that
/// registers can be replaced afterwards without KVM skipping an instruction in the new context.
pub(crate) fn complete_pending_io(fd: &mut VcpuFd, id: u32) -> Result<(), Error> {
    fd.set_kvm_immediate_exit(1);
    let r = fd.run();
    let r = match r {
        Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Ok(()),
        Err(e) => Err(Error::Kvm {
            what: "KVM_RUN",
            source: e,
        }),
        Ok(exit) => Err(Error::UnexpectedExit {
            exit: format!("{exit:?} while completing port I/O"),
            regs: Box::new(RegDump {
                vcpu: id,
                regs: None,
                sregs: None,
            }),
        }),
    };
    fd.set_kvm_immediate_exit(0);
    r
}

/// The body of one vCPU thread. Returns a register dump when it ended because the VM was
/// stopped from outside (for the watchdog's report).
fn vcpu_thread(
    core: Arc<Core>,
    vm: Arc<Vm>,
    mut fd: VcpuFd,
    id: u32,
    boot: Option<StartReq>,
    cpuid: CpuId,
) -> Option<RegDump> {
    let run_ptr: *mut kvm_bindings::kvm_run = fd.get_kvm_run();
    kick::set_thread_kvm_run(run_ptr);
    if let Some(slot) = core.slots.get(id as usize) {
        let mut st = lock(&slot.state);
        // SAFETY: pthread_self and gettid have no preconditions.
        st.thread = Some(unsafe { libc::pthread_self() });
        // SAFETY: as above.
        st.tid = Some(unsafe { libc::gettid() });
        st.steal_seen = st.tid.and_then(run_delay_ns).unwrap_or(0);
    }
    let r = vcpu_main(&core, &vm, &mut fd, id, boot, &cpuid);
    if let Some(slot) = core.slots.get(id as usize) {
        lock(&slot.state).thread = None;
    }
    kick::clear_thread_kvm_run();
    match r {
        Ok(d) => d,
        Err(e) => {
            core.finish(Err(e));
            None
        }
    }
}

/// Takes a due upcall for `id` and prepares its delivery: a vector to inject (returned in
/// `pending_irq`) or, for a callback, the callback context set up in the registers now.
fn take_upcall(
    core: &Core,
    vm: &Vm,
    fd: &mut VcpuFd,
    id: u32,
    pending_irq: &mut Option<u8>,
) -> Result<(), Error> {
    let Some(slot) = core.slots.get(id as usize) else {
        return Ok(());
    };
    if !slot.upcall.swap(false, Ordering::SeqCst) {
        return Ok(());
    }
    match vm.take_upcall(id) {
        Some(Upcall::Vector(v)) => *pending_irq = Some(v),
        Some(Upcall::Callback { .. }) => crate::upcall::enter_callback(vm, fd, core.sync_regs, id)?,
        None => {}
    }
    Ok(())
}

fn vcpu_main(
    core: &Core,
    vm: &Vm,
    fd: &mut VcpuFd,
    id: u32,
    boot: Option<StartReq>,
    cpuid: &CpuId,
) -> Result<Option<RegDump>, Error> {
    let gate = pvabi::gate::DEFAULT_IOPORT;
    // KVM refuses CPUID changes once a vCPU has run: set it once, before any start.
    fd.set_cpuid2(&vcpu_cpuid(cpuid.clone(), id))
        .map_err(kvm_err("KVM_SET_CPUID2"))?;
    let mut start = boot;
    'life: loop {
        let req = match start.take() {
            Some(r) => r,
            None => match core.wait_for_start(id) {
                Some(r) => r,
                None => return Ok(None),
            },
        };
        setup_vcpu(fd, core.mode, id, req)?;
        if core.sync_regs {
            fd.set_sync_valid_reg(SyncReg::Register);
        }
        vm.vcpu_started(id);
        let mut pending_irq: Option<u8> = None;
        loop {
            if core.stopping() {
                fd.set_kvm_immediate_exit(0);
                return Ok(Some(dump(fd, id)));
            }
            take_upcall(core, vm, fd, id, &mut pending_irq)?;
            if let Some(v) = pending_irq {
                if crate::upcall::inject_irq(fd, v)? {
                    pending_irq = None;
                }
            }
            let exit = fd.run();
            core.exits.fetch_add(1, Ordering::Relaxed);
            match exit {
                Ok(VcpuExit::IoOut(port, data)) => {
                    if port == gate && data.len() == usize::from(pvabi::gate::IOPORT_GATE_WIDTH) {
                        let r = get_regs(fd, core.sync_regs)?;
                        let call = Regs {
                            rax: r.rax,
                            args: [r.rdi, r.rsi, r.r8, r.r9, r.r10, r.r11],
                        };
                        if core.first_call.get().is_none() {
                            let _ = core.first_call.set(Instant::now());
                        }
                        match vm.handle_call(id, &call) {
                            Outcome::Return(ret) => {
                                if ret.status == Status::SUCCESS {
                                    note_ring_call(core, &call);
                                }
                                write_ret(fd, core.sync_regs, ret)?
                            }
                            Outcome::Block { .. } => loop {
                                if let Some(ret) = vm.finish_block(id) {
                                    write_ret(fd, core.sync_regs, ret)?;
                                    break;
                                }
                                if core.stopping() {
                                    break;
                                }
                                core.wait_wake(id);
                            },
                            Outcome::Stop => {
                                complete_pending_io(fd, id)?;
                                continue 'life;
                            }
                            Outcome::Shutdown { reason, code } => {
                                core.finish(Ok(ExitStatus {
                                    reason: reason.0,
                                    code,
                                    vcpu: id,
                                }));
                                return Ok(None);
                            }
                            Outcome::UpcallReturn(frame) => {
                                complete_pending_io(fd, id)?;
                                crate::upcall::restore_frame(
                                    fd,
                                    core.sync_regs,
                                    &frame,
                                    core.mode,
                                )?;
                                if let Some(slot) = core.slots.get(id as usize) {
                                    // More events may be pending: look again before entry.
                                    slot.upcall.store(true, Ordering::SeqCst);
                                }
                            }
                        }
                    } else if port == RING_DOORBELL_PORT {
                        // Only without the ioeventfd: serve the ring now, then let the
                        // poller look for the requests that follow.
                        vm.process_ring();
                        core.ring.ring_doorbell();
                    }
                    // The null port is the benchmark baseline (a bare exit); writes to other
                    // ports go nowhere, as on a machine without that device.
                }
                Ok(VcpuExit::IoIn(_, data)) => data.fill(0xFF),
                Ok(VcpuExit::MmioRead(_, data)) => data.fill(0xFF),
                Ok(VcpuExit::MmioWrite(..)) => {}
                Ok(VcpuExit::Hlt) => {
                    // Ring 0: HLT waits for the next notification (an upcall, a kick).
                    let pending = core
                        .slots
                        .get(id as usize)
                        .is_some_and(|s| s.upcall.load(Ordering::SeqCst));
                    if !pending {
                        core.wait_wake(id);
                    }
                }
                Ok(VcpuExit::IrqWindowOpen) | Ok(VcpuExit::Intr) => {}
                Ok(VcpuExit::Shutdown) => {
                    return Err(Error::TripleFault {
                        regs: Box::new(dump(fd, id)),
                    })
                }
                Ok(VcpuExit::InternalError) => {
                    if emulate_sse(fd, core.sync_regs, vm.ram().memory())? {
                        continue;
                    }
                    let exit = internal_error_text(fd);
                    return Err(Error::UnexpectedExit {
                        exit,
                        regs: Box::new(dump(fd, id)),
                    });
                }
                Ok(other) => {
                    let exit = format!("{other:?}");
                    return Err(Error::UnexpectedExit {
                        exit,
                        regs: Box::new(dump(fd, id)),
                    });
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    // Kicked: look at the stop flag and pending upcalls at the top.
                    fd.set_kvm_immediate_exit(0);
                }
                Err(e) => {
                    return Err(Error::Kvm {
                        what: "KVM_RUN",
                        source: e,
                    })
                }
            }
        }
    }
}

/// The instruction bytes KVM reports with an emulation failure, if it reported them.
fn emulation_failure_bytes(fd: &mut VcpuFd) -> Option<Vec<u8>> {
    const KVM_INTERNAL_ERROR_EMULATION: u32 = 1;
    const FLAG_INSTRUCTION_BYTES: u64 = 1;
    let run = fd.get_kvm_run();
    // SAFETY: called only for KVM_EXIT_INTERNAL_ERROR, for which the kernel fills the
    // `internal` member of the union; every bit pattern is valid for its integer fields.
    let internal = unsafe { run.__bindgen_anon_1.internal };
    if internal.suberror != KVM_INTERNAL_ERROR_EMULATION || internal.ndata < 2 {
        return None;
    }
    if internal.data.first().copied()? & FLAG_INSTRUCTION_BYTES == 0 {
        return None;
    }
    // data[1..] holds `u8 insn_size; u8 insn_bytes[15]` (struct kvm_run, emulation_failure).
    let raw: Vec<u8> = internal
        .data
        .iter()
        .skip(1)
        .take(2)
        .flat_map(|w| w.to_le_bytes())
        .collect();
    let len = usize::from(*raw.first()?).min(15);
    raw.get(1..1 + len).map(<[u8]>::to_vec)
}

/// How many further SSE instructions one emulation failure may perform before the guest is
/// entered again (see [`emulate_sse`]).
const SSE_RUN_AHEAD: usize = 32;

/// Guest memory by guest-virtual address for the SSE emulation: `KVM_TRANSLATE` per page
/// (identity where the host does not offer it), remembered for the rest of one emulation like
/// a TLB (a CPU, too, may use a stale translation until the guest flushes it), then
/// bounds-checked vm-memory access.
struct VcpuMemory<'a> {
    fd: &'a VcpuFd,
    mem: &'a vm_memory::GuestMemoryMmap,
    /// (guest-virtual page, guest-physical page) pairs already translated.
    tlb: Vec<(u64, u64)>,
}

impl<'a> VcpuMemory<'a> {
    fn new(fd: &'a VcpuFd, mem: &'a vm_memory::GuestMemoryMmap) -> Self {
        Self {
            fd,
            mem,
            tlb: Vec::new(),
        }
    }

    fn gpa(&mut self, gva: u64) -> Option<u64> {
        let page = gva & !4095;
        if let Some(&(_, p)) = self.tlb.iter().find(|(v, _)| *v == page) {
            return Some(p | (gva & 4095));
        }
        let gpa = match self.fd.translate_gva(page) {
            Ok(t) if t.valid != 0 => t.physical_address & !4095,
            Ok(_) => return None,
            Err(_) => page,
        };
        self.tlb.push((page, gpa));
        Some(gpa | (gva & 4095))
    }

    /// Runs `f(mem, gpa, offset, len)` for each page-bounded piece of `gva..gva+len`.
    fn pieces(
        &mut self,
        gva: u64,
        len: usize,
        mut f: impl FnMut(&vm_memory::GuestMemoryMmap, u64, usize, usize) -> bool,
    ) -> bool {
        let mut off = 0;
        while off < len {
            let a = gva.wrapping_add(off as u64);
            let n = ((4096 - (a & 4095)) as usize).min(len - off);
            match self.gpa(a) {
                Some(g) if f(self.mem, g, off, n) => off += n,
                _ => return false,
            }
        }
        true
    }
}

impl crate::sse::Memory for VcpuMemory<'_> {
    fn read(&mut self, gva: u64, buf: &mut [u8]) -> bool {
        use vm_memory::Bytes;
        let len = buf.len();
        self.pieces(gva, len, |mem, g, off, n| {
            buf.get_mut(off..off + n)
                .is_some_and(|b| mem.read_slice(b, vm_memory::GuestAddress(g)).is_ok())
        })
    }

    fn write(&mut self, gva: u64, data: &[u8]) -> bool {
        use vm_memory::Bytes;
        self.pieces(gva, data.len(), |mem, g, off, n| {
            data.get(off..off + n)
                .is_some_and(|b| mem.write_slice(b, vm_memory::GuestAddress(g)).is_ok())
        })
    }
}

/// Performs an SSE instruction KVM's emulator failed on (see [`crate::sse`]) and steps past
/// it; false when it is not one of those (or an operand is not accessible).
///
/// Compiled code tends to use these instructions in runs (zeroing a register, then storing
/// it several times), and on a host that emulates ring 0 every one of them costs an exit to
/// this VMM plus FPU and translation ioctls. So after the failing instruction this performs
/// the SSE instructions that follow it too (up to [`SSE_RUN_AHEAD`]), in order, as the CPU
/// would, and stops before the first one it does not implement; the FPU state is read once
/// and written back once, only if it changed.
///
/// # Errors
///
/// [`Error::Kvm`] when the FPU state cannot be read or written.
fn emulate_sse(
    fd: &mut VcpuFd,
    sync: bool,
    mem: &vm_memory::GuestMemoryMmap,
) -> Result<bool, Error> {
    let Some(reported) = emulation_failure_bytes(fd) else {
        return Ok(false);
    };
    let mut regs = get_regs(fd, sync)?;
    let mut vmem = VcpuMemory::new(fd, mem);
    // KVM's copy stops at a page boundary; read the instruction from guest memory instead
    // when it can be read whole.
    let mut fetched = [0u8; 15];
    let bytes = if crate::sse::Memory::read(&mut vmem, regs.rip, &mut fetched) {
        &fetched[..]
    } else {
        &reported[..]
    };
    let Some(insn) = crate::sse::decode(bytes) else {
        return Ok(false);
    };
    let before = fd.get_fpu().map_err(kvm_err("KVM_GET_FPU"))?;
    let mut fpu = before;
    let next = regs.rip.wrapping_add(insn.len as u64);
    if !crate::sse::execute(&insn, next, &mut regs, &mut fpu, &mut vmem) {
        return Ok(false);
    }
    regs.rip = next;
    for _ in 0..SSE_RUN_AHEAD {
        let mut b = [0u8; 15];
        if !crate::sse::Memory::read(&mut vmem, regs.rip, &mut b) {
            break;
        }
        let Some(insn) = crate::sse::decode(&b) else {
            break;
        };
        let next = regs.rip.wrapping_add(insn.len as u64);
        // On copies: an instruction that cannot be performed leaves no trace, and the guest
        // runs into it itself (and, if it really cannot be done, ends with the error).
        let (mut r, mut f) = (regs, fpu);
        if !crate::sse::execute(&insn, next, &mut r, &mut f, &mut vmem) {
            break;
        }
        regs = r;
        fpu = f;
        regs.rip = next;
    }
    if fpu.xmm != before.xmm || fpu.mxcsr != before.mxcsr {
        fd.set_fpu(&fpu).map_err(kvm_err("KVM_SET_FPU"))?;
    }
    put_regs(fd, sync, &regs)?;
    Ok(true)
}

/// Describes a `KVM_EXIT_INTERNAL_ERROR`: its suberror and data words (for an emulation
/// failure, KVM's flags, the instruction length and the instruction bytes).
fn internal_error_text(fd: &mut VcpuFd) -> String {
    let run = fd.get_kvm_run();
    // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, for which the kernel fills the
    // `internal` member of the union; every bit pattern is a valid value of its integer
    // fields.
    let internal = unsafe { run.__bindgen_anon_1.internal };
    let n = (internal.ndata as usize).min(internal.data.len());
    let data: Vec<String> = internal
        .data
        .iter()
        .take(n)
        .map(|d| format!("{d:#x}"))
        .collect();
    let what = match internal.suberror {
        1 => "emulation failure (an instruction KVM's emulator does not implement)",
        2 => "simultaneous exceptions",
        3 => "delivery event failed",
        _ => "internal error",
    };
    format!(
        "InternalError: {what} (suberror {}, data [{}])",
        internal.suberror,
        data.join(", ")
    )
}

/// The vCPU's general registers after an exit: from `kvm_run` with `KVM_CAP_SYNC_REGS` (no
/// ioctl), else `KVM_GET_REGS`.
///
/// # Errors
///
/// [`Error::Kvm`] when `KVM_GET_REGS` fails.
pub(crate) fn get_regs(fd: &VcpuFd, sync: bool) -> Result<kvm_regs, Error> {
    if sync {
        Ok(fd.sync_regs().regs)
    } else {
        fd.get_regs().map_err(kvm_err("KVM_GET_REGS"))
    }
}

/// Sets the vCPU's general registers for the next entry: through `kvm_run` (marked dirty)
/// with `KVM_CAP_SYNC_REGS`, else `KVM_SET_REGS`.
///
/// # Errors
///
/// [`Error::Kvm`] when `KVM_SET_REGS` fails.
pub(crate) fn put_regs(fd: &mut VcpuFd, sync: bool, regs: &kvm_regs) -> Result<(), Error> {
    if sync {
        fd.sync_regs_mut().regs = *regs;
        fd.set_sync_dirty_reg(SyncReg::Register);
        Ok(())
    } else {
        fd.set_regs(regs).map_err(kvm_err("KVM_SET_REGS"))
    }
}

/// Tells the ring poller about a successful BASE.RING_REGISTER or BASE.RING_UNREGISTER (made
/// through the register gate, the only way they can be made), before the guest sees it return.
fn note_ring_call(core: &Core, call: &Regs) {
    if call.rax == u64::from(pvabi::call::BASE_RING_REGISTER.0) {
        core.ring.registered(call.args[0]);
    } else if call.rax == u64::from(pvabi::call::BASE_RING_UNREGISTER.0) {
        core.ring.unregistered();
    }
}

/// Writes the return pair (RAX = status, RDI = value).
fn write_ret(fd: &mut VcpuFd, sync: bool, ret: Ret) -> Result<(), Error> {
    let mut regs = get_regs(fd, sync)?;
    regs.rax = ret.status.to_reg();
    regs.rdi = ret.value;
    put_regs(fd, sync, &regs)
}

/// A `Write` into a shared buffer (for tests and the conformance runner).
struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_delay_is_the_second_schedstat_field() {
        assert_eq!(parse_run_delay("671121 41683 2\n"), Some(41683));
        assert_eq!(parse_run_delay("671121"), None);
        assert_eq!(parse_run_delay(""), None);
        // This very thread has a schedstat file.
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        assert!(run_delay_ns(tid).is_some());
    }
}
