//! A fake in-process host for the shim's tests: guest RAM is a leaked, page-aligned heap
//! block; the gate records every call and answers through a closure the test supplies.
#![allow(unsafe_code, dead_code)]
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::std_instead_of_core
)]

use pvabi::discovery::ExecMode;
use pvabi::{BootInfo, Features, GateKind, Status};
use pvabi_guest::{GuestArena, InProcessGate, InProcessRegs, PhysReader, Pvabi, Translate};
use std::sync::Mutex;
use zerocopy::IntoBytes;

/// Bytes of fake guest RAM.
pub const RAM: usize = 4 << 20;
/// Where the boot info goes.
pub const BOOT_GPA: u64 = 0x1000;
/// Start of the arena the tests allocate shared areas from.
pub const ARENA_GPA: u64 = 0x10_0000;

/// A call as the host saw it.
pub type Seen = (u32, [u64; 6]);

/// What the closure answers: `Some((rax, value))`, or `None` for the default answer.
pub type Answer = dyn Fn(&Fake, u32, [u64; 6]) -> Option<(u64, u64)> + Send + Sync;

pub struct Fake {
    pub base: usize,
    pub len: usize,
    pub log: Mutex<Vec<Seen>>,
    pub answer: Box<Answer>,
}

pub fn ok(v: u64) -> Option<(u64, u64)> {
    Some((0, v))
}

pub fn err(s: Status) -> Option<(u64, u64)> {
    Some((s.to_reg(), 0))
}

impl Fake {
    /// Copies bytes into fake RAM (the host's side of a call).
    pub fn write(&self, gpa: u64, data: &[u8]) {
        assert!(gpa as usize + data.len() <= self.len);
        // SAFETY: the range is inside the leaked RAM block (asserted), which lives for the
        // rest of the process; the guest side only holds atomics or buffers lent for the
        // call in progress there.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                (self.base + gpa as usize) as *mut u8,
                data.len(),
            )
        }
    }

    /// Copies bytes out of fake RAM.
    pub fn read(&self, gpa: u64, len: usize) -> Vec<u8> {
        assert!(gpa as usize + len <= self.len);
        let mut v = vec![0u8; len];
        // SAFETY: as in `write`, the range is inside the leaked RAM block.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (self.base + gpa as usize) as *const u8,
                v.as_mut_ptr(),
                len,
            )
        }
        v
    }

    pub fn calls(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.log.lock().unwrap().clear();
    }
}

/// # Safety
///
/// `ctx` is the address of a leaked `Fake`; `regs` is valid (the shim's contract).
unsafe extern "C" fn fake_gate(ctx: usize, regs: *mut InProcessRegs) {
    // SAFETY: `ctx` is the address of a leaked (hence 'static) `Fake`.
    let fake = unsafe { &*(ctx as *const Fake) };
    // SAFETY: the shim passes a valid, exclusive pointer for the duration of the call.
    let r = unsafe { &mut *regs };
    let id = r.rax as u32;
    fake.log.lock().unwrap().push((id, r.args));
    let (rax, v) = (fake.answer)(fake, id, r.args).unwrap_or_else(|| default_answer(id, r.args));
    r.rax = rax;
    r.args[0] = v;
}

fn default_answer(id: u32, args: [u64; 6]) -> (u64, u64) {
    use pvabi::call::*;
    match pvabi::CallId(id) {
        BASE_PROBE_SERVICE => (
            0,
            u64::from(pvabi::call::function_count(pvabi::ServiceId(
                args[0] as u16,
            ))),
        ),
        BASE_GET_ABI_VERSION => (0, pvabi::ABI_VERSION.to_u32() as u64),
        BASE_GET_VCPU_ID => (0, 0),
        BASE_GET_VCPU_COUNT => (0, 4),
        BASE_GET_FEATURES => (0, 0),
        BASE_GET_BACKEND_ID => (0, 1),
        _ => (Status::NOT_SUPPORTED.to_reg(), 0),
    }
}

/// Leaks a zeroed, page-aligned RAM block and a `Fake` answering with `answer`.
pub fn fake(answer: Box<Answer>) -> &'static Fake {
    let layout = std::alloc::Layout::from_size_align(RAM, 4096).unwrap();
    // SAFETY: the layout has nonzero size.
    let base = unsafe { std::alloc::alloc_zeroed(layout) };
    assert!(!base.is_null());
    Box::leak(Box::new(Fake {
        base: base as usize,
        len: RAM,
        log: Mutex::new(Vec::new()),
        answer,
    }))
}

pub fn gate(f: &'static Fake) -> InProcessGate {
    // SAFETY: `fake_gate` is sound for any registers given the address of a leaked `Fake`,
    // and it touches fake RAM only within bounds (asserted).
    unsafe { InProcessGate::new(fake_gate, f as *const Fake as usize) }
}

pub fn phys(f: &'static Fake) -> PhysReader {
    // SAFETY: the whole leaked block is mapped and readable for the rest of the process.
    unsafe {
        PhysReader::new(Translate::Offset {
            host_base: f.base,
            len: f.len,
        })
    }
}

/// An arena over fake RAM from `ARENA_GPA` up.
pub fn arena(f: &'static Fake) -> &'static GuestArena {
    // SAFETY: `[ARENA_GPA, RAM)` of the leaked block is valid for reads and writes for the
    // rest of the process and only handed out through this arena (the fake host writes it
    // only on behalf of calls, like a real host).
    Box::leak(Box::new(unsafe {
        GuestArena::new(f.base + ARENA_GPA as usize, RAM - ARENA_GPA as usize)
    }))
}

/// A valid boot info naming the in-process gate.
pub fn boot_info(vcpus: u32) -> BootInfo {
    BootInfo {
        magic: BootInfo::MAGIC,
        abi_version: pvabi::ABI_VERSION.to_u32(),
        size: 128,
        gate_kind: GateKind::INPROCESS.0,
        gate_param: 0,
        features: (Features::all() - Features::HARNESS).bits(),
        vcpu_count: vcpus,
        boot_vcpu: 0,
        mem_map_gpa: 0x2000,
        mem_map_entries: 2,
        exec_mode: ExecMode::INPROCESS.0,
        cmdline_gpa: 0,
        cmdline_len: 0,
        backend_id: 1,
        mem_size: RAM as u64,
        _reserved: [0; 6],
    }
}

/// A fake host, its RAM holding a valid boot info and memory map, and a discovered handle.
pub fn setup(answer: Box<Answer>) -> (Pvabi, &'static Fake, &'static GuestArena) {
    let f = fake(answer);
    f.write(BOOT_GPA, boot_info(4).as_bytes());
    let map = [
        pvabi::memory::MemMapEntry {
            base: 0,
            length: 0x10000,
            kind: pvabi::memory::MemKind::LOADER.0,
            _reserved: 0,
        },
        pvabi::memory::MemMapEntry {
            base: 0x10000,
            length: RAM as u64 - 0x10000,
            kind: pvabi::memory::MemKind::RAM.0,
            _reserved: 0,
        },
    ];
    f.write(0x2000, map.as_bytes());
    let pv = Pvabi::discover_in_process(gate(f), BOOT_GPA, &phys(f)).expect("discovery");
    f.clear();
    (pv, f, arena(f))
}
