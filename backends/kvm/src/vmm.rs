//! The VMM: VM set-up, vCPU threads, the exit loop and the I/O-port gate.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs, kvm_userspace_memory_region, CpuId};
use kvm_ioctls::{Kvm, SyncReg, VcpuExit, VcpuFd, VmFd};
use pvabi::discovery::{ExecMode, Features, GateKind};
use pvabi::gate::{Regs, Ret};
use pvabi::vcpu::VcpuState;
use pvabi::{BootInfo, Status};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use zerocopy::{FromZeros, IntoBytes};

use crate::layout::*;
use crate::{kick, ConsoleSink, Error, ExitStatus, Mode, RegDump, RunConfig};

/// CPUID leaf where this VMM puts the pvabi signature (next to KVM's own at `0x4000_0000`).
pub const CPUID_BASE: u32 = 0x4000_0100;

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

/// What a call does to the calling vCPU besides returning.
#[derive(Debug)]
pub(crate) enum Action {
    /// Write the return pair and resume.
    Return(Ret),
    /// Write the return pair, then sleep until an event, a kick or `deadline_ns` (0: none).
    Block(Ret, u64),
    /// The vCPU stops (VCPU.STOP); it may be started again.
    Stop,
    /// The VM ends (POWER.SHUTDOWN).
    Shutdown,
    /// Resume the context saved by a callback upcall (VCPU.UPCALL_RETURN).
    #[allow(dead_code)] // produced by the host-services adapter
    UpcallReturn(pvabi::event::UpcallFrame),
}

/// A pending VCPU.START.
#[derive(Clone, Copy, Debug)]
struct StartReq {
    entry: u64,
    stack: u64,
    arg: u64,
}

#[derive(Debug)]
struct SlotState {
    status: VcpuState,
    start: Option<StartReq>,
    /// A wake-up for a blocked (or about to block) vCPU.
    wake: bool,
    /// The thread's handle while it is alive and may be signalled.
    thread: Option<libc::pthread_t>,
}

/// Per-vCPU shared state.
#[derive(Debug)]
pub(crate) struct Slot {
    state: Mutex<SlotState>,
    cv: Condvar,
    /// An upcall should be delivered to this vCPU.
    pub(crate) upcall: AtomicBool,
}

/// State shared by the vCPU threads and the thread that runs the VM.
pub(crate) struct Shared {
    pub(crate) mem: GuestMemoryMmap,
    pub(crate) mode: Mode,
    pub(crate) vcpus: u32,
    pub(crate) slots: Vec<Slot>,
    pub(crate) started: Instant,
    pub(crate) mem_size: u64,
    console: Mutex<Box<dyn Write + Send>>,
    outcome: Mutex<Option<Result<ExitStatus, Error>>>,
    outcome_cv: Condvar,
    stopping: AtomicBool,
    /// Total exits seen, for the watchdog.
    exits: AtomicU64,
    #[allow(dead_code)] // read by the clock service of the host-services adapter
    pub(crate) tsc_khz: u32,
    pub(crate) services: Box<dyn crate::calls::Services>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means a vCPU thread panicked; the data is plain state and still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Nanoseconds since the VM was created (CLOCK_MONOTONIC).
    pub(crate) fn now_ns(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Ends the VM with `r` unless it has already ended.
    pub(crate) fn finish(&self, r: Result<ExitStatus, Error>) {
        let mut o = lock(&self.outcome);
        if o.is_none() {
            *o = Some(r);
        }
        self.stopping.store(true, Ordering::SeqCst);
        self.outcome_cv.notify_all();
        drop(o);
        for v in 0..self.vcpus {
            self.kick(v);
        }
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Wakes vCPU `v`: out of VCPU.BLOCK / HLT, and out of `KVM_RUN` so it looks at pending
    /// upcalls. Unknown ids are ignored.
    pub(crate) fn kick(&self, v: u32) {
        let Some(slot) = self.slots.get(v as usize) else {
            return;
        };
        let st = lock(&slot.state);
        let mut st = st;
        st.wake = true;
        if let Some(t) = st.thread {
            // SAFETY: `thread` is Some only while the vCPU thread is alive: the thread sets
            // it at start and clears it, under this same lock, before it returns; we hold the
            // lock, so the thread cannot have exited.
            unsafe { kick::signal_thread(t) };
        }
        slot.cv.notify_all();
    }

    /// Marks an upcall pending for `v` and kicks it.
    #[allow(dead_code)] // called by the event service of the host-services adapter
    pub(crate) fn raise_upcall(&self, v: u32) {
        if let Some(slot) = self.slots.get(v as usize) {
            slot.upcall.store(true, Ordering::SeqCst);
            self.kick(v);
        }
    }

    /// Writes console bytes.
    pub(crate) fn console_write(&self, bytes: &[u8]) {
        let mut c = lock(&self.console);
        // Console output is best effort: a closed stdout must not end the guest.
        let _ = c.write_all(bytes);
        let _ = c.flush();
    }

    /// VCPU.START: validates and queues the start of a stopped vCPU.
    pub(crate) fn start_vcpu(&self, v: u64, entry: u64, stack: u64, arg: u64) -> Ret {
        let Some(slot) = usize::try_from(v).ok().and_then(|i| self.slots.get(i)) else {
            return Ret::err(Status::INVALID_PARAM);
        };
        if !self.mapped(entry) || !self.mapped(stack.saturating_sub(8)) {
            return Ret::err(Status::INVALID_ADDRESS);
        }
        let mut st = lock(&slot.state);
        if st.status != VcpuState::STOPPED {
            return Ret::err(Status::ALREADY);
        }
        st.status = VcpuState::START_PENDING;
        st.start = Some(StartReq { entry, stack, arg });
        slot.cv.notify_all();
        Ret::ok(0)
    }

    /// VCPU.GET_STATUS.
    pub(crate) fn vcpu_status(&self, v: u64) -> Option<VcpuState> {
        let slot = usize::try_from(v).ok().and_then(|i| self.slots.get(i))?;
        Some(lock(&slot.state).status)
    }

    /// Whether `gpa` is guest RAM (identity mapped, so also a valid guest virtual address).
    pub(crate) fn mapped(&self, gpa: u64) -> bool {
        gpa < self.mem_size && self.mem.check_address(GuestAddress(gpa)).is_some()
    }
}

/// A VM ready to run.
pub(crate) struct Machine {
    shared: Arc<Shared>,
    vcpu_fds: Vec<VcpuFd>,
    entry: u64,
    cpuid: CpuId,
    _vm: VmFd,
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
        services: Box<dyn crate::calls::Services>,
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

        let vm = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
        let mem_len = usize::try_from(mem_size)
            .map_err(|_| Error::Config("memory size does not fit usize".into()))?;
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), mem_len)])
            .map_err(|e| Error::Memory(e.to_string()))?;
        for (slot, region) in mem.iter().enumerate() {
            use vm_memory::GuestMemoryRegion;
            let host = mem
                .get_host_address(region.start_addr())
                .map_err(|e| Error::Memory(e.to_string()))?;
            let r = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: 0,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: host as u64,
            };
            // SAFETY: `userspace_addr..+memory_size` is the live anonymous mapping of `region`,
            // owned by `mem`, which `Shared` keeps alive longer than the VM fd (`Machine`
            // drops `_vm` before... and the vCPU threads are joined before `Shared` can be
            // dropped); slots do not overlap (one region per slot).
            unsafe { vm.set_user_memory_region(r) }
                .map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))?;
        }

        let image_end = crate::loader::load_elf(&mem, image, mem_size)?;
        let entry = image_end.1;
        let image_end = image_end.0;

        let user = cfg.mode == Mode::PvRing3;
        write_page_tables(&mem, user).map_err(|e| Error::Memory(e.to_string()))?;
        write_gdt(&mem).map_err(|e| Error::Memory(e.to_string()))?;

        let map = memory_map(mem_size, image_end);
        let mut bi = BootInfo::new_zeroed();
        bi.magic = BootInfo::MAGIC;
        bi.abi_version = pvabi::ABI_VERSION.to_u32();
        bi.size = BootInfo::SIZE as u32;
        bi.gate_kind = GateKind::IOPORT.0;
        bi.gate_param = u64::from(pvabi::gate::DEFAULT_IOPORT);
        bi.features = services.features(cfg.mode).bits();
        bi.vcpu_count = cfg.vcpus;
        bi.boot_vcpu = 0;
        bi.mem_map_gpa = MEM_MAP_GPA;
        bi.mem_map_entries = map.len() as u32;
        bi.exec_mode = match cfg.mode {
            Mode::Ring0 => ExecMode::RING0.0,
            Mode::PvRing3 => ExecMode::PV_RING3.0,
        };
        bi.cmdline_gpa = CMDLINE_GPA;
        bi.cmdline_len = cfg.cmdline.len() as u32;
        bi.backend_id = pvabi::discovery::backend_id::KVM;
        bi.mem_size = mem_size;
        let w = |b: &[u8], a: u64| {
            mem.write_slice(b, GuestAddress(a))
                .map_err(|e| Error::Memory(e.to_string()))
        };
        w(bi.as_bytes(), BOOT_INFO_GPA)?;
        w(map.as_slice().as_bytes(), MEM_MAP_GPA)?;
        w(cfg.cmdline.as_bytes(), CMDLINE_GPA)?;

        // Not needed on AMD or for long-mode guests on most hosts; harmless where unsupported.
        let _ = vm.set_tss_address(0xfffb_d000);

        let mut cpuid = kvm
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
        add_pvabi_leaves(&mut cpuid, services.features(cfg.mode), cfg.vcpus)?;

        let mut vcpu_fds = Vec::new();
        for id in 0..cfg.vcpus {
            vcpu_fds.push(
                vm.create_vcpu(u64::from(id))
                    .map_err(kvm_err("KVM_CREATE_VCPU"))?,
            );
        }
        let tsc_khz = vcpu_fds
            .first()
            .and_then(|v| v.get_tsc_khz().ok())
            .unwrap_or(0);

        let console: Box<dyn Write + Send> = match &cfg.console {
            ConsoleSink::Stdout => Box::new(std::io::stdout()),
            ConsoleSink::File(p) => Box::new(File::create(p).map_err(|e| Error::Console {
                path: p.clone(),
                source: e,
            })?),
            ConsoleSink::Capture(buf) => Box::new(CaptureWriter(buf.clone())),
        };

        let slots = (0..cfg.vcpus)
            .map(|i| Slot {
                state: Mutex::new(SlotState {
                    status: if i == 0 {
                        VcpuState::RUNNING
                    } else {
                        VcpuState::STOPPED
                    },
                    start: None,
                    wake: false,
                    thread: None,
                }),
                cv: Condvar::new(),
                upcall: AtomicBool::new(false),
            })
            .collect();
        let shared = Arc::new(Shared {
            mem,
            mode: cfg.mode,
            vcpus: cfg.vcpus,
            slots,
            started: Instant::now(),
            mem_size,
            console: Mutex::new(console),
            outcome: Mutex::new(None),
            outcome_cv: Condvar::new(),
            stopping: AtomicBool::new(false),
            exits: AtomicU64::new(0),
            tsc_khz,
            services,
        });
        Ok(Self {
            shared,
            vcpu_fds,
            entry,
            cpuid,
            _vm: vm,
            watchdog: cfg.watchdog,
        })
    }

    /// Runs the VM until it ends; returns its outcome.
    pub(crate) fn run(self) -> Result<ExitStatus, Error> {
        let Machine {
            shared,
            vcpu_fds,
            entry,
            cpuid,
            _vm,
            watchdog,
        } = self;
        let mut handles = Vec::new();
        for (id, fd) in vcpu_fds.into_iter().enumerate() {
            let sh = shared.clone();
            let cpuid = cpuid.clone();
            let id = id as u32;
            let h = std::thread::Builder::new()
                .name(format!("vcpu{id}"))
                .spawn(move || vcpu_thread(sh, fd, id, entry, cpuid));
            match h {
                Ok(h) => handles.push(h),
                Err(e) => {
                    shared.finish(Err(Error::Thread(e)));
                    break;
                }
            }
        }
        // Wait for the outcome, checking the watchdog.
        {
            let mut o = lock(&shared.outcome);
            let mut last_exits = shared.exits.load(Ordering::SeqCst);
            let mut last_change = Instant::now();
            while o.is_none() {
                let wait = watchdog.unwrap_or(Duration::from_secs(3600));
                let (g, _) = shared
                    .outcome_cv
                    .wait_timeout(o, wait.min(Duration::from_millis(200)))
                    .unwrap_or_else(|e| e.into_inner());
                o = g;
                if o.is_some() {
                    break;
                }
                let now = shared.exits.load(Ordering::SeqCst);
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
        shared.stopping.store(true, Ordering::SeqCst);
        for v in 0..shared.vcpus {
            shared.kick(v);
        }
        let mut dumps = Vec::new();
        for h in handles {
            match h.join() {
                Ok(Some(d)) => dumps.push(d),
                Ok(None) => {}
                Err(_) => {
                    shared.finish(Err(Error::Config("a vCPU thread panicked".into())));
                }
            }
        }
        let mut o = lock(&shared.outcome);
        let mut r = o
            .take()
            .unwrap_or(Err(Error::Config("VM ended without outcome".into())));
        if let Err(Error::Watchdog { vcpus, .. }) = &mut r {
            *vcpus = dumps;
        }
        r
    }
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
            [f as u32, (f >> 32) as u32, vcpus, 0],
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
fn setup_vcpu(fd: &VcpuFd, mode: Mode, cpuid: &CpuId, id: u32, req: StartReq) -> Result<(), Error> {
    fd.set_cpuid2(&vcpu_cpuid(cpuid.clone(), id))
        .map_err(kvm_err("KVM_SET_CPUID2"))?;
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
        base: TSS_GPA,
        limit: TSS_LIMIT as u32,
        selector: SEL_TSS,
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

/// Waits until vCPU `id` is started (or the VM stops); returns the start request.
fn wait_for_start(sh: &Shared, id: u32) -> Option<StartReq> {
    let slot = sh.slots.get(id as usize)?;
    let mut st = lock(&slot.state);
    loop {
        if sh.stopping() {
            return None;
        }
        if let Some(s) = st.start.take() {
            st.status = VcpuState::RUNNING;
            return Some(s);
        }
        st = slot.cv.wait(st).unwrap_or_else(|e| e.into_inner());
    }
}

/// Sleeps until a wake-up, a pending upcall, the deadline (ns since VM start, 0 = none) or the
/// end of the VM.
fn block(sh: &Shared, id: u32, deadline_ns: u64) {
    let Some(slot) = sh.slots.get(id as usize) else {
        return;
    };
    let mut st = lock(&slot.state);
    let prev = st.status;
    st.status = VcpuState::BLOCKED;
    loop {
        if st.wake || sh.stopping() || slot.upcall.load(Ordering::SeqCst) {
            break;
        }
        if sh.services.event_pending(id) {
            break;
        }
        if deadline_ns != 0 {
            let now = sh.now_ns();
            if now >= deadline_ns {
                break;
            }
            let (g, _) = slot
                .cv
                .wait_timeout(st, Duration::from_nanos(deadline_ns - now))
                .unwrap_or_else(|e| e.into_inner());
            st = g;
        } else {
            st = slot.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
    st.wake = false;
    st.status = prev;
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
    sh: Arc<Shared>,
    mut fd: VcpuFd,
    id: u32,
    entry: u64,
    cpuid: CpuId,
) -> Option<RegDump> {
    let run_ptr: *mut kvm_bindings::kvm_run = fd.get_kvm_run();
    kick::set_thread_kvm_run(run_ptr);
    if let Some(slot) = sh.slots.get(id as usize) {
        // SAFETY: pthread_self has no preconditions.
        lock(&slot.state).thread = Some(unsafe { libc::pthread_self() });
    }
    let r = vcpu_main(&sh, &mut fd, id, entry, &cpuid);
    if let Some(slot) = sh.slots.get(id as usize) {
        let mut st = lock(&slot.state);
        st.thread = None;
        st.status = VcpuState::STOPPED;
    }
    kick::clear_thread_kvm_run();
    match r {
        Ok(d) => d,
        Err(e) => {
            sh.finish(Err(e));
            None
        }
    }
}

fn vcpu_main(
    sh: &Shared,
    fd: &mut VcpuFd,
    id: u32,
    entry: u64,
    cpuid: &CpuId,
) -> Result<Option<RegDump>, Error> {
    let gate = pvabi::gate::DEFAULT_IOPORT;
    let null = pvabi::gate::NULL_IOPORT;
    let mut start = if id == 0 {
        Some(StartReq {
            entry,
            stack: BOOT_STACK_TOP - 8,
            arg: BOOT_INFO_GPA,
        })
    } else {
        None
    };
    'life: loop {
        let req = match start.take() {
            Some(r) => r,
            None => match wait_for_start(sh, id) {
                Some(r) => r,
                None => return Ok(None),
            },
        };
        setup_vcpu(fd, sh.mode, cpuid, id, req)?;
        fd.set_sync_valid_reg(SyncReg::Register);
        loop {
            if sh.stopping() {
                fd.set_kvm_immediate_exit(0);
                return Ok(Some(dump(fd, id)));
            }
            if sh.mode == Mode::Ring0 {
                crate::upcall::ring0_prepare(sh, fd, id)?;
            } else if crate::upcall::pv_pending(sh, id) {
                crate::upcall::pv_deliver(sh, fd, id)?;
            }
            let exit = fd.run();
            sh.exits.fetch_add(1, Ordering::Relaxed);
            match exit {
                Ok(VcpuExit::IoOut(port, data)) => {
                    if port == gate && data.len() == usize::from(pvabi::gate::IOPORT_GATE_WIDTH) {
                        let r = fd.sync_regs().regs;
                        let call = Regs {
                            rax: r.rax,
                            args: [r.rdi, r.rsi, r.r8, r.r9, r.r10, r.r11],
                        };
                        match sh.services.call(sh, id, &call) {
                            Action::Return(ret) => write_ret(fd, ret),
                            Action::Block(ret, deadline) => {
                                write_ret(fd, ret);
                                block(sh, id, deadline);
                            }
                            Action::Stop => {
                                complete_pending_io(fd, id)?;
                                if let Some(slot) = sh.slots.get(id as usize) {
                                    let mut st = lock(&slot.state);
                                    st.status = VcpuState::STOPPED;
                                }
                                continue 'life;
                            }
                            Action::Shutdown => return Ok(None),
                            Action::UpcallReturn(frame) => {
                                complete_pending_io(fd, id)?;
                                crate::upcall::restore_frame(fd, &frame, sh.mode);
                                if let Some(slot) = sh.slots.get(id as usize) {
                                    // More events may be pending: look again before entry.
                                    slot.upcall.store(true, Ordering::SeqCst);
                                }
                            }
                        }
                    } else if port == null {
                        // The benchmark baseline: a bare exit.
                    }
                    // Writes to other ports go nowhere, as on a machine without that device.
                }
                Ok(VcpuExit::IoIn(_, data)) => data.fill(0xFF),
                Ok(VcpuExit::MmioRead(_, data)) => data.fill(0xFF),
                Ok(VcpuExit::MmioWrite(..)) => {}
                Ok(VcpuExit::Hlt) => {
                    // Ring 0: HLT waits for the next upcall, like VCPU.BLOCK without deadline.
                    block(sh, id, 0);
                }
                Ok(VcpuExit::IrqWindowOpen) | Ok(VcpuExit::Intr) => {}
                Ok(VcpuExit::Shutdown) => {
                    return Err(Error::TripleFault {
                        regs: Box::new(dump(fd, id)),
                    })
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

/// Writes the return pair into the synced registers (RAX = status, RDI = value).
fn write_ret(fd: &mut VcpuFd, ret: Ret) {
    let regs = &mut fd.sync_regs_mut().regs;
    regs.rax = ret.status.to_reg();
    regs.rdi = ret.value;
    fd.set_sync_dirty_reg(SyncReg::Register);
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
