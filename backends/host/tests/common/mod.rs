//! Shared test fixture: a controllable platform and helpers.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use pvabi::{CallId, Regs, Ret, Status};
use pvabi_host::{ClockParams, GuestRam, Outcome, Platform, Vm, VmConfig};

/// A platform whose clock the test sets and which records what the Vm asked of it.
#[derive(Default)]
pub struct TestPlatform {
    pub now: AtomicU64,
    pub virtual_clock: AtomicBool,
    pub fail_start: AtomicBool,
    pub notified: Mutex<Vec<u32>>,
    pub started: Mutex<Vec<(u32, u64, u64, u64)>>,
    pub deadlines: Mutex<Vec<u64>>,
}

impl Platform for TestPlatform {
    fn now_ns(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }
    fn wallclock_epoch_ns(&self) -> u64 {
        1_600_000_000_000_000_000
    }
    fn clock_params(&self) -> ClockParams {
        ClockParams {
            tsc_timestamp: 0,
            system_time: self.now_ns(),
            tsc_to_system_mul: 0,
            tsc_shift: 0,
            flags: 0xff,
        }
    }
    fn start_vcpu(&self, vcpu: u32, entry: u64, stack: u64, arg: u64) -> Result<(), Status> {
        if self.fail_start.load(Ordering::SeqCst) {
            return Err(Status::FAILED);
        }
        self.started.lock().unwrap().push((vcpu, entry, stack, arg));
        Ok(())
    }
    fn notify(&self, vcpu: u32) {
        self.notified.lock().unwrap().push(vcpu);
    }
    fn yield_vcpu(&self, _vcpu: u32) {}
    fn deadline_changed(&self, d: u64) {
        self.deadlines.lock().unwrap().push(d);
    }
    fn advance_clock(&self, ns: u64) -> Result<(), Status> {
        if !self.virtual_clock.load(Ordering::SeqCst) {
            return Err(Status::NOT_SUPPORTED);
        }
        self.now.fetch_add(ns, Ordering::SeqCst);
        Ok(())
    }
}

/// RAM: [0, 1 MiB) and [2 MiB, 3 MiB), a hole between.
pub const RAM1_END: u64 = 1 << 20;
pub const RAM2: u64 = 2 << 20;
pub const RAM2_END: u64 = 3 << 20;

pub struct Fx {
    pub vm: Arc<Vm>,
    pub ram: GuestRam,
    pub p: Arc<TestPlatform>,
}

pub fn fixture_with(mut cfg: VmConfig) -> Fx {
    let ram = GuestRam::from_ranges(&[(0, RAM1_END as usize), (RAM2, (RAM2_END - RAM2) as usize)])
        .expect("ram");
    let p = Arc::new(TestPlatform::default());
    p.now.store(1_000, Ordering::SeqCst);
    if cfg.memory_map.is_empty() {
        cfg.memory_map = Vec::new();
    }
    let vm = Arc::new(Vm::new(cfg, ram.clone(), p.clone()).expect("vm"));
    Fx { vm, ram, p }
}

pub fn fixture(vcpus: u32) -> Fx {
    let mut cfg = VmConfig::new(vcpus);
    cfg.harness = true;
    fixture_with(cfg)
}

impl Fx {
    /// Runs a call that must return.
    pub fn call(&self, v: u32, id: CallId, args: &[u64]) -> Ret {
        let mut a = [0u64; 6];
        for (d, s) in a.iter_mut().zip(args) {
            *d = *s;
        }
        match self.vm.handle_call(v, &Regs::new(id, a)) {
            Outcome::Return(r) => r,
            o => panic!("{id:?} did not return: {o:?}"),
        }
    }

    pub fn ok(&self, v: u32, id: CallId, args: &[u64]) -> u64 {
        let r = self.call(v, id, args);
        assert_eq!(r.status, Status::SUCCESS, "{id:?} {args:x?}");
        r.value
    }

    pub fn err(&self, v: u32, id: CallId, args: &[u64]) -> Status {
        let r = self.call(v, id, args);
        assert_ne!(
            r.status,
            Status::SUCCESS,
            "{id:?} {args:x?} unexpectedly succeeded"
        );
        assert_eq!(r.value, 0, "failed call must return value 0 (CONV-11)");
        r.status
    }

    pub fn outcome(&self, v: u32, id: CallId, args: &[u64]) -> Outcome {
        let mut a = [0u64; 6];
        for (d, s) in a.iter_mut().zip(args) {
            *d = *s;
        }
        self.vm.handle_call(v, &Regs::new(id, a))
    }

    pub fn put(&self, gpa: u64, data: &[u8]) {
        self.ram.write_bytes(gpa, data).expect("put");
    }

    pub fn get(&self, gpa: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0; len];
        self.ram.read_into(gpa, &mut b).expect("get");
        b
    }

    pub fn u64_at(&self, gpa: u64) -> u64 {
        self.ram.load_u64(gpa, Ordering::SeqCst).expect("u64")
    }

    pub fn u32_at(&self, gpa: u64) -> u32 {
        self.ram.load_u32(gpa, Ordering::SeqCst).expect("u32")
    }

    pub fn set_now(&self, ns: u64) {
        self.p.now.store(ns, Ordering::SeqCst);
    }

    /// Registers an event page at `gpa` and returns a fresh port bound to vCPU `v`.
    pub fn events(&self, gpa: u64, v: u32) -> u64 {
        self.ok(0, pvabi::call::EVENT_REGISTER_PAGE, &[gpa]);
        self.ok(v, pvabi::call::EVENT_ALLOC, &[])
    }

    pub fn take_notified(&self) -> Vec<u32> {
        std::mem::take(&mut *self.p.notified.lock().unwrap())
    }
}

/// Hostile (gpa, len) pairs for a buffer the call must read or write: outside RAM,
/// straddling the end of a region, straddling the hole, overflowing.
pub fn hostile_ranges(len: u64) -> Vec<(u64, u64)> {
    vec![
        (RAM2_END, len.max(1)),
        (RAM1_END - 1, len.max(2)),
        (RAM2_END - 1, len.max(2)),
        (u64::MAX - 1, len.max(4)),
        (u64::MAX, len.max(1)),
        (0x10, u64::MAX),
    ]
}

/// Hostile addresses for a buffer of a fixed `len` bytes (the length is not the attack).
pub fn hostile_gpas(len: u64) -> Vec<u64> {
    hostile_ranges(len)
        .into_iter()
        .filter(|(_, l)| *l != u64::MAX)
        .map(|(g, _)| g)
        .collect()
}
