//! Hostile test guest for pvabi-kvm: misbehaviour chosen by the command line in the BootInfo
//! (random call storms, scribbling over shared pages, vCPU start/stop storms, store quota and
//! watch floods, running off the end of RAM, endless loops). Scenarios that should end cleanly
//! power off with 0, or with a code naming the first check that failed.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};

use pvabi::call::{self, CallId, CALLS};
use pvabi::gate::DEFAULT_IOPORT;
use pvabi::BootInfo;
use pvabi_image_rt as _;

/// One gate call with every argument register; returns (status register, value register).
fn gate6(id: u64, a: [u64; 6]) -> (u64, u64) {
    let status: u64;
    let value: u64;
    // SAFETY: `out dx, eax` to the gate port is the pvabi call instruction; the host changes
    // only RAX and RDI (declared), and writes memory only at addresses we pass, which are
    // scratch buffers or outside RAM.
    unsafe {
        core::arch::asm!(
            "out dx, eax",
            inout("rax") id => status,
            inout("rdi") a[0] => value,
            in("rsi") a[1],
            in("r8") a[2],
            in("r9") a[3],
            in("r10") a[4],
            in("r11") a[5],
            in("dx") DEFAULT_IOPORT,
            options(nostack)
        );
    }
    (status, value)
}

fn gate(id: CallId, a0: u64, a1: u64, a2: u64, a3: u64) -> (u64, u64) {
    gate6(u64::from(id.0), [a0, a1, a2, a3, 0, 0])
}

fn poweroff(code: u64) -> ! {
    gate(call::POWER_SHUTDOWN, 0, code, 0, 0);
    loop {
        core::hint::spin_loop();
    }
}

fn write(s: &[u8]) {
    gate(call::CONSOLE_WRITE, s.as_ptr() as u64, s.len() as u64, 0, 0);
}

/// Writes `name=value\n` to the console.
fn report(name: &[u8], v: u64) {
    // A fresh line first: a storm may have left the console mid-line.
    let mut buf = [0u8; 64];
    buf[0] = b'\n';
    let mut n = 1;
    for &b in name.iter().take(40) {
        buf[n] = b;
        n += 1;
    }
    buf[n] = b'=';
    n += 1;
    n = decimal_into(&mut buf, n, v);
    buf[n] = b'\n';
    n += 1;
    write(&buf[..n]);
}

/// Writes `v` in decimal into `buf` at `n`; returns the index after its last digit.
fn decimal_into(buf: &mut [u8], mut n: usize, v: u64) -> usize {
    let mut digits = [0u8; 20];
    let mut d = 0;
    let mut x = v;
    loop {
        digits[d] = b'0' + (x % 10) as u8;
        d += 1;
        x /= 10;
        if x == 0 {
            break;
        }
    }
    while d > 0 {
        d -= 1;
        buf[n] = digits[d];
        n += 1;
    }
    n
}

fn parse_u64(s: &[u8]) -> u64 {
    let mut v: u64 = 0;
    for &b in s {
        if b.is_ascii_digit() {
            v = v.wrapping_mul(10).wrapping_add(u64::from(b - b'0'));
        }
    }
    v
}

/// True when `s` is SUCCESS or one of the statuses the spec names (-1..=-13).
fn spec_status(s: u64) -> bool {
    let v = s as i64;
    (-13..=0).contains(&v)
}

const NO_SPACE: u64 = (-5i64) as u64;

fn now() -> u64 {
    gate(call::CLOCK_GET_TIME, 0, 0, 0, 0).1
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// Scratch memory the host may write at random offsets.
#[repr(C, align(4096))]
struct Scratch([u8; 65536]);
static mut SCRATCH: Scratch = Scratch([0; 65536]);

/// A multicall array filled with sanitised random entries.
#[repr(C, align(8))]
struct McArray([u64; 9 * 16]);
static mut MC: McArray = McArray([0; 9 * 16]);

#[repr(C, align(16))]
struct Stacks([[u8; 8192]; 16]);
static mut STACKS: Stacks = Stacks([[0; 8192]; 16]);

fn stack_top(v: u64) -> u64 {
    core::ptr::addr_of_mut!(STACKS) as u64 + (v % 16) * 8192 + 8192 - 8
}

struct Env {
    mem_size: u64,
    scratch: u64,
    rng: XorShift,
}

impl Env {
    /// A guest address: in the scratch buffer, straddling or beyond the end of RAM, far away
    /// or non-canonical. Never the image, stacks, page tables or other loader structures.
    fn addr(&mut self) -> u64 {
        let r = self.rng.next();
        match r % 8 {
            0..=2 => self.scratch + (r >> 8) % 65536,
            3 => self.scratch + ((r >> 8) % 16) * 4096,
            4 => self.mem_size - 1 - (r >> 8) % 4096,
            5 => self.mem_size + (r >> 8) % (1 << 32),
            6 => 1 << 63 | r >> 4,
            _ => (r >> 8) | 1 << 47,
        }
    }

    fn len(&mut self) -> u64 {
        let r = self.rng.next();
        match r % 4 {
            0 => (r >> 8) % 64,
            1 => (r >> 8) % 8192,
            2 => (r >> 8) % 70000,
            _ => r >> 2,
        }
    }

    fn arg(&mut self) -> u64 {
        let r = self.rng.next();
        match r % 4 {
            0 => (r >> 8) % 8,
            1 => self.addr(),
            2 => self.len(),
            _ => self.rng.next(),
        }
    }

    /// A call id: from the v1 table (most of the time) or beyond it.
    fn id(&mut self) -> u64 {
        let r = self.rng.next();
        match r % 8 {
            0..=4 => u64::from(CALLS[((r >> 8) % CALLS.len() as u64) as usize].id.0),
            5 => (r >> 8) & 0xFFFF_FFFF,
            6 => (((r >> 8) % 16) << 16) | ((r >> 16) % 32),
            _ => r,
        }
    }

    /// Random registers for `id`, with the arguments that would end or wedge this guest on
    /// purpose (shutdown, stop, blocking forever, upcalls into garbage) made harmless.
    /// Returns None for calls that must not be made at all.
    fn args(&mut self, id: u64) -> Option<[u64; 6]> {
        let mut a = [0u64; 6];
        for x in a.iter_mut() {
            *x = self.arg();
        }
        let id32 = if id >> 32 == 0 { Some(id as u32) } else { None };
        match id32.map(CallId) {
            Some(call::POWER_SHUTDOWN) | Some(call::VCPU_STOP) => return None,
            Some(call::VCPU_BLOCK) => {
                // A deadline in the past or under 1 ms ahead; never BLOCK_FOREVER.
                let t = now();
                a[0] = if a[1] & 1 == 0 {
                    1 + a[2] % t.max(1)
                } else {
                    t + a[2] % 1_000_000
                };
            }
            Some(call::EVENT_SET_UPCALL) => {
                // Only "no upcalls" or invalid modes: a real upcall target would be garbage.
                a[0] = if a[0] & 1 == 0 { 0 } else { 3 + a[1] % 100 };
            }
            Some(call::MULTICALL_EXECUTE) => {
                let n = (a[1] % 17) as usize;
                let mc = core::ptr::addr_of_mut!(MC);
                for i in 0..n.min(16) {
                    let eid = self.id();
                    let nested = eid == u64::from(call::MULTICALL_EXECUTE.0);
                    let ea = if nested { None } else { self.args(eid) };
                    let (eid, ea) = match ea {
                        Some(ea) if eid >> 32 == 0 => (eid, ea),
                        _ => (0, [0; 6]),
                    };
                    let flags = self.rng.next() & 1;
                    // SAFETY: single writer (this vCPU), in bounds (i < 16 entries of 9 words).
                    unsafe {
                        (*mc).0[i * 9] = eid | flags << 32;
                        for (k, v) in ea.iter().enumerate() {
                            (*mc).0[i * 9 + 1 + k] = *v;
                        }
                        (*mc).0[i * 9 + 7] = 0;
                        (*mc).0[i * 9 + 8] = 0;
                    }
                }
                if a[2] & 3 != 0 {
                    a[0] = mc as u64;
                    a[1] = n as u64;
                }
            }
            _ => {}
        }
        Some(a)
    }
}

fn storm(bi: &BootInfo, rest: &[u8]) -> ! {
    let mut words = rest.split(|&b| b == b' ');
    let seed = parse_u64(words.next().unwrap_or(b"1")).max(1);
    let n = parse_u64(words.next().unwrap_or(b"1000"));
    let mut env = Env {
        mem_size: bi.mem_size,
        scratch: core::ptr::addr_of_mut!(SCRATCH) as u64,
        rng: XorShift(seed),
    };
    let mut bad = 0;
    let mut made = 0;
    let mut ok = 0;
    for _ in 0..n {
        let id = env.id();
        let Some(a) = env.args(id) else { continue };
        let (s, _) = gate6(id, a);
        made += 1;
        if s == 0 {
            ok += 1;
        }
        if !spec_status(s) {
            if bad == 0 {
                report(b"first_bad_id", id);
                report(b"first_bad_status", s);
            }
            bad += 1;
        }
    }
    report(b"calls", made);
    report(b"succeeded", ok);
    report(b"bad_status", bad);
    poweroff(bad)
}

// ---- shared pages scribbled while the host writes them -------------------------------------

#[repr(C, align(4096))]
struct Page([AtomicU64; 512]);
static CLOCK_PAGE: Page = Page([const { AtomicU64::new(0) }; 512]);
static EVENT_PAGE: Page = Page([const { AtomicU64::new(0) }; 512]);
static STOP: AtomicU64 = AtomicU64::new(0);
static SCRIBBLES: AtomicU64 = AtomicU64::new(0);
static AP_BAD: AtomicU64 = AtomicU64::new(0);

extern "C" fn scribbler(seed: u64, _id: u64) -> ! {
    let mut rng = XorShift(seed | 1);
    // This vCPU registers the same clock page: two host writers plus this guest writer.
    let (s, _) = gate(
        call::CLOCK_REGISTER_PAGE,
        core::ptr::addr_of!(CLOCK_PAGE) as u64,
        0,
        0,
        0,
    );
    if s != 0 {
        AP_BAD.fetch_add(1, Ordering::SeqCst);
    }
    while STOP.load(Ordering::SeqCst) == 0 {
        for _ in 0..64 {
            let r = rng.next();
            let w = (r % 512) as usize;
            if r & 1 << 40 == 0 {
                CLOCK_PAGE.0[w].store(rng.next(), Ordering::Relaxed);
            } else {
                EVENT_PAGE.0[w].store(rng.next(), Ordering::Relaxed);
            }
        }
        SCRIBBLES.fetch_add(64, Ordering::Relaxed);
        if rng.next().is_multiple_of(16) {
            let (s, _) = gate(call::CLOCK_GET_TIME, 0, 0, 0, 0);
            if s != 0 {
                AP_BAD.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    gate(call::VCPU_STOP, 0, 0, 0, 0);
    poweroff(0xA9)
}

/// The system time from a consistent snapshot of CLOCK_PAGE (pvclock seqlock).
fn clock_page_time() -> u64 {
    loop {
        let w = |i: usize| CLOCK_PAGE.0[i].load(Ordering::SeqCst);
        let v1 = w(0) & 0xFFFF_FFFF;
        let (w1, w2, w3) = (w(1), w(2), w(3));
        // SAFETY: RDTSC is allowed in both execution modes (CR4.TSD is clear).
        let tsc = unsafe { core::arch::x86_64::_rdtsc() };
        let v2 = w(0) & 0xFFFF_FFFF;
        if v1 != v2 || v1 & 1 != 0 {
            continue;
        }
        let page = pvabi::clock::ClockPage {
            version: v1 as u32,
            _reserved0: 0,
            tsc_timestamp: w1,
            system_time: w2,
            tsc_to_system_mul: w3 as u32,
            tsc_shift: (w3 >> 32) as u8 as i8,
            flags: (w3 >> 40) as u8,
            _reserved1: [0; 2],
        };
        return page.time_at(tsc);
    }
}

fn wait_stopped(v: u64) -> bool {
    let start = now();
    loop {
        let (s, st) = gate(call::VCPU_GET_STATUS, v, 0, 0, 0);
        if s == 0 && st == 0 {
            return true;
        }
        if now() - start > 5_000_000_000 {
            return false;
        }
        gate(call::VCPU_YIELD, 0, 0, 0, 0);
    }
}

fn scribble(rest: &[u8]) -> ! {
    let n = parse_u64(rest).max(1);
    let clock = core::ptr::addr_of!(CLOCK_PAGE) as u64;
    let evpage = core::ptr::addr_of!(EVENT_PAGE) as u64;
    if gate(call::CLOCK_REGISTER_PAGE, clock, 0, 0, 0).0 != 0 {
        poweroff(0x101);
    }
    if gate(call::EVENT_REGISTER_PAGE, evpage, 0, 0, 0).0 != 0 {
        poweroff(0x102);
    }
    let (s, port) = gate(call::EVENT_ALLOC, 0, 0, 0, 0);
    if s != 0 {
        poweroff(0x103);
    }
    let (s, _) = gate(
        call::VCPU_START,
        1,
        scribbler as *const () as u64,
        stack_top(1),
        0x1234_5678,
    );
    if s != 0 {
        poweroff(0x104);
    }
    while SCRIBBLES.load(Ordering::SeqCst) == 0 {
        gate(call::VCPU_YIELD, 0, 0, 0, 0);
    }
    let mut bad = 0u64;
    let mut check = |s: u64| {
        if !spec_status(s) {
            bad += 1;
        }
    };
    for i in 0..n {
        // Each of these makes the host write the clock page or the event page.
        check(gate(call::CLOCK_REGISTER_PAGE, clock, 0, 0, 0).0);
        check(gate(call::EVENT_SEND, port, 0, 0, 0).0);
        check(gate(call::EVENT_MASK, port, 0, 0, 0).0);
        check(gate(call::EVENT_UNMASK, port, 0, 0, 0).0);
        check(gate(call::EVENT_SEND, port + i % 3, 0, 0, 0).0);
        let t = now();
        check(gate(call::CLOCK_SET_TIMER, t + 10_000, port, 0, 0).0);
        if i % 8 == 0 {
            // Re-register the event page (ALREADY or SUCCESS) and poll the clock.
            check(gate(call::EVENT_REGISTER_PAGE, evpage, 0, 0, 0).0);
            check(gate(call::VCPU_BLOCK, t + 50_000, 0, 0, 0).0);
        }
    }
    STOP.store(1, Ordering::SeqCst);
    if !wait_stopped(1) {
        poweroff(0x105);
    }
    // With the scribbler gone, a fresh registration gives a consistent clock page again.
    gate(call::CLOCK_UNREGISTER_PAGE, 0, 0, 0, 0);
    if gate(call::CLOCK_REGISTER_PAGE, clock, 0, 0, 0).0 != 0 {
        poweroff(0x106);
    }
    let t0 = now();
    let paged = clock_page_time();
    let t1 = now();
    report(b"clock_page_ns", paged);
    report(b"get_time_ns", t0);
    if paged + 1_000_000_000 < t0 || paged > t1 + 1_000_000_000 {
        poweroff(0x107);
    }
    report(b"scribbled_words", SCRIBBLES.load(Ordering::SeqCst));
    report(b"bad_status", bad);
    poweroff(bad + AP_BAD.load(Ordering::SeqCst))
}

// ---- vCPU start/stop storm -------------------------------------------------------------------

static STARTED: AtomicU64 = AtomicU64::new(0);

extern "C" fn ap_once(_arg: u64, _id: u64) -> ! {
    STARTED.fetch_add(1, Ordering::SeqCst);
    gate(call::VCPU_STOP, 0, 0, 0, 0);
    poweroff(0xAA)
}

fn startstop(bi: &BootInfo, rest: &[u8]) -> ! {
    let n = parse_u64(rest);
    let aps = u64::from(bi.vcpu_count).saturating_sub(1);
    if aps == 0 {
        poweroff(0x201);
    }
    let entry = ap_once as *const () as u64;
    let mut starts = 0u64;
    let mut refused = 0u64;
    let mut bad = 0u64;
    for i in 0..n {
        let v = 1 + i % aps;
        if i >= aps && !wait_stopped(v) {
            poweroff(0x202);
        }
        let (s, _) = gate(call::VCPU_START, v, entry, stack_top(v), i);
        if s == 0 {
            starts += 1;
        } else {
            bad += 1;
        }
        // Start it again at once: refused while it runs, or a fresh start if it already
        // stopped; either way a spec'd status.
        if i % 4 == 0 {
            if wait_stopped(v) {
                let (s, _) = gate(call::VCPU_START, v, entry, stack_top(v), i);
                if s == 0 {
                    starts += 1;
                } else {
                    bad += 1;
                }
            } else {
                poweroff(0x203);
            }
            // Starting a running vCPU (vCPU 0, ourselves) is refused.
            let (s, _) = gate(call::VCPU_START, 0, entry, stack_top(0), i);
            if s != 0 && spec_status(s) {
                refused += 1;
            } else {
                bad += 1;
            }
        }
    }
    for v in 1..=aps {
        if !wait_stopped(v) {
            poweroff(0x204);
        }
    }
    report(b"starts", starts);
    report(b"ran", STARTED.load(Ordering::SeqCst));
    report(b"refused", refused);
    report(b"bad", bad);
    if STARTED.load(Ordering::SeqCst) != starts {
        poweroff(0x205);
    }
    poweroff(bad)
}

// ---- store quota and watch flood ---------------------------------------------------------------

fn path_into(buf: &mut [u8; 32], prefix: &[u8], i: u64) -> usize {
    let mut n = 0;
    for &b in prefix {
        buf[n] = b;
        n += 1;
    }
    decimal_into(buf, n, i)
}

fn store_write(path: &[u8], val: &[u8]) -> u64 {
    gate6(
        u64::from(call::STORE_WRITE.0),
        [
            path.as_ptr() as u64,
            path.len() as u64,
            val.as_ptr() as u64,
            val.len() as u64,
            0,
            0,
        ],
    )
    .0
}

fn store(rest: &[u8]) -> ! {
    let writes = parse_u64(rest).max(1);
    let evpage = core::ptr::addr_of!(EVENT_PAGE) as u64;
    if gate(call::EVENT_REGISTER_PAGE, evpage, 0, 0, 0).0 != 0 {
        poweroff(0x301);
    }
    let (s, port) = gate(call::EVENT_ALLOC, 0, 0, 0, 0);
    if s != 0 {
        poweroff(0x302);
    }
    // Watches until the table is full.
    let w = b"w";
    let mut watches = 0u64;
    let last = loop {
        let (s, _) = gate(call::STORE_WATCH, w.as_ptr() as u64, 1, port, 0);
        if s != 0 {
            break s;
        }
        watches += 1;
        if watches > 10_000 {
            poweroff(0x303);
        }
    };
    report(b"watches", watches);
    if last != NO_SPACE || watches > u64::from(pvabi::store::MAX_WATCHES) {
        poweroff(0x304);
    }
    // The flood: every write fires every watch.
    let mut p = [0u8; 32];
    for i in 0..writes {
        let n = path_into(&mut p, b"w/k", i % 7);
        if store_write(&p[..n], b"x") != 0 {
            poweroff(0x305);
        }
    }
    // Drain the queue.
    let scratch = core::ptr::addr_of_mut!(SCRATCH) as u64;
    let mut delivered = 0u64;
    let mut dropped = 0u64;
    loop {
        let (s, len) = gate(call::STORE_WATCH_NEXT, scratch, 512, 0, 0);
        if s != 0 {
            break;
        }
        if len < 16 {
            poweroff(0x306);
        }
        // SAFETY: the host wrote `len` >= 16 bytes at the start of SCRATCH; bytes 8..12 are
        // the `dropped` field of the WatchEvent header.
        let d = unsafe { core::ptr::read_volatile((scratch + 8) as *const u32) };
        dropped += u64::from(d);
        delivered += 1;
        if delivered > 100_000 {
            poweroff(0x307);
        }
    }
    report(b"delivered", delivered);
    report(b"dropped", dropped);
    if delivered == 0 || delivered > u64::from(pvabi::store::MAX_WATCH_EVENTS) {
        poweroff(0x308);
    }
    // Fill the store to its quota.
    let mut entries = 0u64;
    let last = loop {
        let n = path_into(&mut p, b"q/", entries);
        let s = store_write(&p[..n], b"value");
        if s != 0 {
            break s;
        }
        entries += 1;
        if entries > 100_000 {
            poweroff(0x309);
        }
    };
    report(b"entries", entries);
    if last != NO_SPACE || entries > u64::from(pvabi::store::MAX_ENTRIES) {
        poweroff(0x30A);
    }
    // An oversized value is NO_SPACE too.
    let big = gate6(
        u64::from(call::STORE_WRITE.0),
        [
            b"w/k0".as_ptr() as u64,
            4,
            scratch,
            pvabi::store::MAX_VALUE + 1,
            0,
            0,
        ],
    )
    .0;
    if big != NO_SPACE {
        poweroff(0x30B);
    }
    // Removing one entry makes room for one more.
    let n = path_into(&mut p, b"q/", 0);
    if gate(call::STORE_REMOVE, p.as_ptr() as u64, n as u64, 0, 0).0 != 0 {
        poweroff(0x30C);
    }
    let n = path_into(&mut p, b"r", 0);
    if store_write(&p[..n], b"again") != 0 {
        poweroff(0x30D);
    }
    poweroff(0)
}

// ---- running off the end of RAM ----------------------------------------------------------------

static RUNOFF_ENTRY: AtomicU64 = AtomicU64::new(0);

fn plant_nops(mem_size: u64) -> u64 {
    let at = mem_size - 16;
    for k in 0..16 {
        // SAFETY: the top 16 bytes of RAM are free (above the image, unused by the loader)
        // and identity mapped; nothing else uses them in this scenario.
        unsafe { core::ptr::write_volatile((at + k) as *mut u8, 0x90) };
    }
    at
}

fn runoff(bi: &BootInfo, rest: &[u8]) -> ! {
    let at = plant_nops(bi.mem_size);
    RUNOFF_ENTRY.store(at, Ordering::SeqCst);
    match rest {
        b"read" => {
            // Reads beyond the last RAM byte; then a read straddling it.
            // SAFETY: identity-mapped addresses outside RAM: the host answers the access.
            let v = unsafe { core::ptr::read_volatile(bi.mem_size as *const u64) };
            // SAFETY: as above; 4 bytes of RAM then 4 bytes beyond.
            let w = unsafe { core::ptr::read_volatile((bi.mem_size - 4) as *const u32) };
            // SAFETY: a write beyond RAM goes nowhere.
            unsafe { core::ptr::write_volatile((bi.mem_size + 64) as *mut u64, 0x1234) };
            report(b"beyond", v);
            report(b"last", u64::from(w));
            poweroff(u64::from(v == u64::MAX))
        }
        b"jump1" => {
            // vCPU 1 starts in the last bytes of RAM and slides off the end.
            let (s, _) = gate(call::VCPU_START, 1, at, stack_top(1), 0);
            if s != 0 {
                poweroff(0x401);
            }
            loop {
                gate(call::VCPU_BLOCK, now() + 10_000_000, 0, 0, 0);
            }
        }
        _ => {
            // SAFETY: deliberately jumps into the last 16 bytes of RAM (NOPs) and runs off
            // the end; the VM is expected to end there.
            unsafe { core::arch::asm!("jmp {}", in(reg) at, options(noreturn)) }
        }
    }
}

// ---- endless loop ----------------------------------------------------------------------------

extern "C" fn ap_spin(_arg: u64, _id: u64) -> ! {
    loop {
        core::hint::spin_loop();
    }
}

fn spin(bi: &BootInfo) -> ! {
    for v in 1..u64::from(bi.vcpu_count) {
        gate(
            call::VCPU_START,
            v,
            ap_spin as *const () as u64,
            stack_top(v),
            0,
        );
    }
    if bi.exec_mode == 0 {
        // SAFETY: ring 0: no interrupts from here on, so nothing but the watchdog ends this.
        unsafe { core::arch::asm!("cli", options(nostack, nomem)) };
    }
    loop {
        core::hint::spin_loop();
    }
}

/// Entry of the boot vCPU: RDI = BootInfo GPA.
#[no_mangle]
#[link_section = ".text._start"]
pub extern "C" fn _start(boot_info: u64) -> ! {
    // SAFETY: the loader passes the GPA of a BootInfo in identity-mapped RAM, 8-byte aligned.
    let bi: BootInfo = unsafe { core::ptr::read_volatile(boot_info as *const BootInfo) };
    // SAFETY: the loader wrote `cmdline_len` bytes at `cmdline_gpa`, identity mapped.
    let cmd = unsafe {
        core::slice::from_raw_parts(bi.cmdline_gpa as *const u8, bi.cmdline_len as usize)
    };
    let (verb, rest) = match cmd.iter().position(|&b| b == b' ') {
        Some(i) => (&cmd[..i], &cmd[i + 1..]),
        None => (cmd, &cmd[cmd.len()..]),
    };
    match verb {
        b"ok" => {
            let (s, v) = gate(call::BASE_GET_ABI_VERSION, 0, 0, 0, 0);
            poweroff(if s == 0 && v == u64::from(pvabi::ABI_VERSION.to_u32()) {
                0
            } else {
                1
            })
        }
        b"storm" => storm(&bi, rest),
        b"scribble" => scribble(rest),
        b"startstop" => startstop(&bi, rest),
        b"store" => store(rest),
        b"runoff" => runoff(&bi, rest),
        b"spin" => spin(&bi),
        _ => {
            write(b"unknown command\n");
            poweroff(255)
        }
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    poweroff(0xbad)
}
