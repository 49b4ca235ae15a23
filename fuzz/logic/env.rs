//! What every target shares: a deterministic platform, the guest RAM layout, a call recorder
//! (a [`CallHook`] that sees every call, nested ones included, and derives which guest bytes
//! each call may write), and the status checks of the calling convention.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use pvabi::call;
use pvabi::clock::ClockPage;
use pvabi::grant::GrantEntry;
use pvabi::harness::GRANT_ACCESS_READ;
use pvabi::memory::MemMapEntry;
use pvabi::multicall::MulticallEntry;
use pvabi::ring::RingHeader;
use pvabi::vcpu::StealTime;
use pvabi::{CallId, Regs, Ret, Status, PAGE_SIZE};
use pvabi_host::{CallHook, ClockParams, GuestRam, Outcome, Platform};

/// Guest RAM region A: `[0, 0x8000)`.
pub const RAM_A: (u64, u64) = (0, 0x8000);
/// Guest RAM region B: `[0x10000, 0x12000)`; the hole `[0x8000, 0x10000)` is not RAM.
pub const RAM_B: (u64, u64) = (0x1_0000, 0x2000);
/// The regions, in address order.
pub const REGIONS: [(u64, u64); 2] = [RAM_A, RAM_B];

/// Plain guest RAM with the fuzzing layout (the fuzz binaries use a guarded mapping instead).
///
/// # Panics
///
/// If the mapping cannot be created.
pub fn plain_ram() -> GuestRam {
    GuestRam::from_ranges(&[(RAM_A.0, RAM_A.1 as usize), (RAM_B.0, RAM_B.1 as usize)])
        .expect("guest RAM")
}

/// Zeroes every region.
pub fn clear_ram(ram: &GuestRam) {
    for (b, l) in ram.regions() {
        ram.zero(b, l).expect("zero own RAM");
    }
}

/// A copy of every byte of guest RAM, regions concatenated.
pub fn snapshot(ram: &GuestRam) -> Vec<u8> {
    let mut out = Vec::new();
    for (b, l) in ram.regions() {
        let start = out.len();
        out.resize(start + l as usize, 0);
        ram.read_into(b, &mut out[start..]).expect("read own RAM");
    }
    out
}

/// The guest-physical addresses whose bytes differ between two snapshots.
pub fn changed(ram: &GuestRam, before: &[u8], after: &[u8]) -> Vec<u64> {
    let mut out = Vec::new();
    if before == after {
        return out;
    }
    let mut off = 0usize;
    for (b, l) in ram.regions() {
        let l = l as usize;
        for i in 0..l {
            if before.get(off + i) != after.get(off + i) {
                out.push(b + i as u64);
            }
        }
        off += l;
    }
    out
}

/// Whether `gpa` lies in one of the `(base, len)` areas.
pub fn covered(areas: &[(u64, u64)], gpa: u64) -> bool {
    areas.iter().any(|(b, l)| gpa >= *b && (gpa - *b) < *l)
}

/// A platform with a settable clock that never blocks.
#[derive(Default)]
pub struct FuzzPlatform {
    /// System time in ns.
    pub now: AtomicU64,
    /// Whether VCPU.START fails in the backend.
    pub fail_start: AtomicBool,
}

impl FuzzPlatform {
    /// A platform at system time 1000 ns.
    pub fn new(fail_start: bool) -> Arc<Self> {
        let p = Self::default();
        p.now.store(1_000, Ordering::SeqCst);
        p.fail_start.store(fail_start, Ordering::SeqCst);
        Arc::new(p)
    }
}

impl Platform for FuzzPlatform {
    fn now_ns(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }
    fn wallclock_epoch_ns(&self) -> u64 {
        1_700_000_000_000_000_000
    }
    fn clock_params(&self) -> ClockParams {
        ClockParams {
            system_time: self.now_ns(),
            ..ClockParams::default()
        }
    }
    fn start_vcpu(&self, _: u32, _: u64, _: u64, _: u64) -> Result<(), Status> {
        if self.fail_start.load(Ordering::SeqCst) {
            Err(Status::FAILED)
        } else {
            Ok(())
        }
    }
    fn notify(&self, _: u32) {}
    fn yield_vcpu(&self, _: u32) {}
    fn deadline_changed(&self, _: u64) {}
    fn advance_clock(&self, ns: u64) -> Result<(), Status> {
        let now = self.now.load(Ordering::SeqCst);
        self.now.store(now.saturating_add(ns), Ordering::SeqCst);
        Ok(())
    }
}

/// The areas the host writes on its own, as registered by successful calls.
#[derive(Clone, Debug, Default)]
pub struct Areas {
    /// EVENT.REGISTER_PAGE.
    pub event_page: Option<u64>,
    /// CLOCK.REGISTER_PAGE per vCPU.
    pub clock: [Option<u64>; 16],
    /// VCPU.REGISTER_STEAL_TIME per vCPU.
    pub steal: [Option<u64>; 16],
    /// BASE.RING_REGISTER: (gpa, bytes).
    pub ring: Option<(u64, u64)>,
    /// GRANT.SETUP_TABLE: (gpa, entries).
    pub grant: Option<(u64, u64)>,
}

impl Areas {
    /// `(gpa, len)` of every area the host may write at any time.
    pub fn shared(&self) -> Vec<(u64, u64)> {
        let mut v = Vec::new();
        if let Some(p) = self.event_page {
            v.push((p, PAGE_SIZE));
        }
        if let Some(r) = self.ring {
            v.push(r);
        }
        for c in self.clock.iter().flatten() {
            v.push((*c, ClockPage::SIZE as u64));
        }
        for s in self.steal.iter().flatten() {
            v.push((*s, StealTime::SIZE as u64));
        }
        v
    }

    fn reset_vcpu(&mut self, v: u64) {
        if let Some(c) = self.clock.get_mut(v as usize) {
            *c = None;
        }
        if let Some(s) = self.steal.get_mut(v as usize) {
            *s = None;
        }
    }
}

/// One call the host ran (top level, multicall entry or ring request), in order.
#[derive(Clone, Debug)]
pub struct Rec {
    /// The calling vCPU.
    pub vcpu: u32,
    /// The registers.
    pub regs: Regs,
    /// What happened.
    pub outcome: Outcome,
}

impl Rec {
    /// Whether the call succeeded (a call that did not return counts as success).
    pub fn ok(&self) -> bool {
        match self.outcome {
            Outcome::Return(r) => r.status.is_success(),
            _ => true,
        }
    }

    /// The return pair, if the call returned.
    pub fn ret(&self) -> Option<Ret> {
        match self.outcome {
            Outcome::Return(r) => Some(r),
            _ => None,
        }
    }

    /// Whether RAX names `id`.
    pub fn is(&self, id: CallId) -> bool {
        self.regs.rax == id.0 as u64
    }
}

#[derive(Default)]
struct RecState {
    areas: Areas,
    records: Vec<Rec>,
    allowed: Vec<(u64, u64)>,
    grant_page: Option<u64>,
}

/// A [`CallHook`] that records every call and the guest bytes it may write.
pub struct Recorder {
    ram: GuestRam,
    st: Mutex<RecState>,
}

impl Recorder {
    /// A recorder reading grant entries from `ram`.
    pub fn new(ram: GuestRam) -> Arc<Self> {
        Arc::new(Self {
            ram,
            st: Mutex::new(RecState::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RecState> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The calls recorded since the previous take, and the areas they may have written
    /// (their output buffers and the shared areas registered before or during them).
    pub fn take(&self) -> (Vec<Rec>, Vec<(u64, u64)>) {
        let mut st = self.lock();
        let mut allowed = std::mem::take(&mut st.allowed);
        allowed.extend(st.areas.shared());
        (std::mem::take(&mut st.records), allowed)
    }

    /// The shared areas as registered now.
    pub fn areas(&self) -> Areas {
        self.lock().areas.clone()
    }

    /// Adds the current shared areas to the allowed set (call before an action).
    pub fn begin(&self) {
        let mut st = self.lock();
        let shared = st.areas.shared();
        st.allowed.extend(shared);
    }
}

impl CallHook for Recorder {
    fn before(&self, _vcpu: u32, regs: &Regs) -> Option<Ret> {
        if regs.rax == call::HARNESS_GRANT_ACCESS.0 as u64 && regs.args[2] != GRANT_ACCESS_READ {
            // The page the entry names as the host reads it now (the write may change it).
            let mut st = self.lock();
            st.grant_page = None;
            if let Some((table, entries)) = st.areas.grant {
                if regs.args[0] < entries {
                    let at = table + regs.args[0] * GrantEntry::SIZE as u64;
                    if let Ok(e) = self.ram.read_obj::<GrantEntry>(at) {
                        st.grant_page = e.gfn.checked_mul(PAGE_SIZE);
                    }
                }
            }
        }
        None
    }

    fn after(&self, vcpu: u32, regs: &Regs, outcome: &Outcome) {
        let rec = Rec {
            vcpu,
            regs: *regs,
            outcome: *outcome,
        };
        let mut st = self.lock();
        if rec.ok() {
            let [a0, a1, a2, ..] = regs.args;
            let value = rec.ret().map(|r| r.value).unwrap_or(0);
            let id = regs.rax;
            let is = |c: CallId| id == c.0 as u64;
            if is(call::CONSOLE_READ) {
                st.allowed.push((a0, a1));
            } else if is(call::STORE_READ)
                || is(call::STORE_LIST)
                || is(call::HARNESS_STORE_HOST_READ)
            {
                st.allowed.push((a2, value));
            } else if is(call::STORE_WATCH_NEXT) || is(call::HARNESS_CONSOLE_READBACK) {
                st.allowed.push((a0, value));
            } else if is(call::MEMORY_GET_MAP) {
                st.allowed
                    .push((a0, a1.min(value).saturating_mul(MemMapEntry::SIZE as u64)));
            } else if is(call::MEMORY_BALLOON_RECLAIM) {
                st.allowed.push((a0, a1.saturating_mul(PAGE_SIZE)));
            } else if is(call::MULTICALL_EXECUTE) {
                for i in 0..value {
                    st.allowed
                        .push((a0 + i * MulticallEntry::SIZE as u64 + 56, 16));
                }
            } else if is(call::HARNESS_GRANT_ACCESS) && a2 != GRANT_ACCESS_READ {
                if let Some(p) = st.grant_page.take() {
                    st.allowed.push((p, PAGE_SIZE));
                }
            } else if is(call::CLOCK_REGISTER_PAGE) {
                if let Some(c) = st.areas.clock.get_mut(vcpu as usize) {
                    *c = Some(a0);
                }
            } else if is(call::CLOCK_UNREGISTER_PAGE) {
                if let Some(c) = st.areas.clock.get_mut(vcpu as usize) {
                    *c = None;
                }
            } else if is(call::VCPU_REGISTER_STEAL_TIME) {
                if let Some(c) = st.areas.steal.get_mut(vcpu as usize) {
                    *c = Some(a0);
                }
            } else if is(call::EVENT_REGISTER_PAGE) {
                st.areas.event_page = Some(a0);
            } else if is(call::BASE_RING_REGISTER) {
                st.areas.ring = Some((a0, RingHeader::ring_bytes(a1 as u32)));
            } else if is(call::BASE_RING_UNREGISTER) {
                st.areas.ring = None;
            } else if is(call::GRANT_SETUP_TABLE) {
                st.areas.grant = if a1 == 0 { None } else { Some((a0, a1)) };
            } else if is(call::VCPU_START) {
                st.areas.reset_vcpu(a0);
            } else if is(call::VCPU_STOP) {
                st.areas.reset_vcpu(vcpu as u64);
            }
            // Areas registered by this call may be written by later effects of the action.
            let shared = st.areas.shared();
            st.allowed.extend(shared);
        }
        st.records.push(rec);
    }
}

/// Checks one return pair against the calling convention (`CONV-6`, `CONV-11`): a status
/// ABI v1 defines, value 0 on failure except BUFFER_TOO_SMALL's needed size.
///
/// # Panics
///
/// On a violation (that is the fuzzer's crash report).
pub fn check_ret(what: &str, r: Ret) {
    assert!(
        Status::ALL.contains(&r.status),
        "{what}: status {:?} is not an ABI v1 status",
        r.status
    );
    if r.status == Status::BUFFER_TOO_SMALL {
        assert!(r.value > 0, "{what}: BUFFER_TOO_SMALL without a size");
    } else if !r.status.is_success() {
        assert_eq!(
            r.value, 0,
            "{what}: failed with value {:#x} (CONV-11)",
            r.value
        );
    }
}

/// A call id of a v1 call picked by `sel`, or (rarely) an arbitrary RAX value.
pub fn pick_call(sel: u8, raw: u64) -> u64 {
    let calls = pvabi::call::CALLS;
    if sel < 240 {
        calls
            .get(sel as usize % calls.len())
            .map(|c| c.id.0 as u64)
            .unwrap_or(0)
    } else {
        match sel {
            240 => raw,
            241 => raw & 0xffff_ffff,
            242 => (raw & 0x1f) | ((raw >> 8) & 0x1f) << 16,
            _ => (raw & 0xff) | (((raw >> 8) & 0xff) << 16),
        }
    }
}

/// An argument value drawn from the classes that matter (addresses in, at the edge of and
/// outside RAM, ports, lengths, small numbers) or any value.
pub fn pick_arg(input: &mut crate::logic::input::Input<'_>, recent: &[u64]) -> u64 {
    const EDGES: [u64; 16] = [
        0,
        RAM_A.1 - 1,
        RAM_A.1,
        RAM_A.1 - 8,
        RAM_B.0,
        RAM_B.0 + RAM_B.1 - 1,
        RAM_B.0 + RAM_B.1,
        RAM_B.0 - 8,
        u64::MAX,
        u64::MAX - 7,
        1 << 63,
        0x7fff_ffff_ffff,
        0xffff_8000_0000_0000,
        u32::MAX as u64,
        1 << 32,
        pvabi::event::NUM_PORTS as u64,
    ];
    const LENS: [u64; 16] = [
        0, 1, 2, 8, 16, 24, 64, 72, 255, 256, 257, 4095, 4096, 4097, 0x8000, 0x12000,
    ];
    match input.u8() % 16 {
        0 | 1 => input.u8() as u64,
        2 => input.u16() as u64 % RAM_A.1,
        3 => (input.u16() as u64 & !7) % RAM_A.1,
        4 => RAM_B.0 + input.u16() as u64 % RAM_B.1,
        5 => (input.u8() as u64 % 20) * PAGE_SIZE,
        6 => EDGES[input.u8() as usize % EDGES.len()],
        7 => input.u16() as u64 % 1030,
        8 => LENS[input.u8() as usize % LENS.len()],
        9 | 10 => {
            let i = input.u8() as usize;
            if recent.is_empty() {
                1
            } else {
                recent[i % recent.len()]
            }
        }
        11 => input.u64(),
        12 => input.u8() as u64 % 5,
        13 => input.u16() as u64,
        _ => input.u8() as u64 % 8,
    }
}
