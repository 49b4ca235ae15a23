//! `pvabi-bench-guest`: the guest side of `pvabi bench`.
//!
//! Every run first writes one byte (`S`) with a hand-made CONSOLE.WRITE through the I/O-port
//! gate, before anything else (no discovery): the host times VM start to this first call and
//! first output. What follows depends on the boot command line:
//!
//! * `start`: power off right after discovery.
//! * `peer rounds=R n=N`: R rounds of N bare `out` instructions to
//!   [`pvabi::gate::NULL_IOPORT`], the loop the QEMU peer runs too; one result line per round.
//! * `bench rounds=R n=N`: R rounds; in each round every variant runs once, in a fixed order
//!   (variants interleaved), its iterations timed with `rdtsc` around the whole batch.
//!
//! Both loops run one more round first, which is not reported (warm-up).
//!
//! Result lines are `pvabi-bench <name> <ops> <tsc-ticks>`; the last line is
//! `pvabi-bench end`. The host converts ticks with the guest TSC frequency it got from
//! `KVM_GET_TSC_KHZ`. The guest powers off with 0, or prints `pvabi-bench error <what>` and
//! powers off with 1.
#![no_std]
#![no_main]

use core::fmt::Write;

use pvabi::call;
use pvabi::discovery::ExecMode;
use pvabi_guest::multicall::Multicall;
use pvabi_guest::shared::{ClockPageShared, EventPageShared, RingShared};
use pvabi_guest::{PhysReader, Pvabi, Translate};
use pvabi_image_rt as _;

static FIRST: [u8; 1] = *b"S";
static LINE64: [u8; 64] = *b"~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~\n";
static EVENTS: EventPageShared = EventPageShared::new();
static CLOCK: ClockPageShared = ClockPageShared::new();
static RING: RingShared<16> = RingShared::new();

/// Guest-only operations (no exit) run this many times more often per round in PV ring 3
/// (natively executed) so a batch lasts long enough to time; ring-0 code is emulated here.
const FAST_MULT_PV: u64 = 100;
/// Ring calls need a host thread polling on another CPU; on a loaded host a batch can take
/// far longer than its median, so they run fewer times than the other guest-only operations.
const RING_MULT_PV: u64 = 20;

fn tsc() -> u64 {
    // SAFETY: RDTSC only reads the time-stamp counter; the host leaves CR4.TSD clear, so it
    // is allowed at any privilege level.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// CONSOLE.WRITE of `FIRST` through the default port gate, with no discovery before it.
fn first_output() {
    let gpa = FIRST.as_ptr() as u64;
    // SAFETY: `out dx, eax` on the port gate of pvabi-kvm (the only host this image is for);
    // the image is identity mapped, so the static's address is its guest-physical address and
    // the host only reads the one byte it names. Registers of the convention are operands or
    // clobbers; no stack use.
    unsafe {
        core::arch::asm!(
            "out dx, eax",
            inout("rax") u64::from(call::CONSOLE_WRITE.0) => _,
            inout("rdi") gpa => _,
            inout("rsi") 1u64 => _,
            inout("dx") pvabi::gate::DEFAULT_IOPORT => _,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
            options(nostack),
        );
    }
}

/// `n` bare exits: `out` to the null port in a three-instruction loop.
fn raw_exits(n: u64) {
    if n == 0 {
        return;
    }
    // SAFETY: `out` to the null port, which pvabi hosts ignore (GATE-8); RCX and flags are
    // the only state changed; no memory or stack use.
    unsafe {
        core::arch::asm!(
            "2:",
            "out dx, eax",
            "dec rcx",
            "jnz 2b",
            inout("rcx") n => _,
            in("dx") pvabi::gate::NULL_IOPORT,
            in("eax") 0u32,
            options(nomem, nostack),
        );
    }
}

/// `n` BASE.GET_ABI_VERSION calls in the smallest loop the register convention allows: one
/// `mov` more than [`raw_exits`].
fn min_null_calls(n: u64) {
    if n == 0 {
        return;
    }
    // SAFETY: `out dx, eax` on the pvabi port gate with a call that names no memory; the
    // host writes RAX and RDI (declared clobbered) and may, against the convention, change
    // the other argument registers, which are declared clobbered too. No stack use.
    unsafe {
        core::arch::asm!(
            "2:",
            "mov eax, {id:e}",
            "out dx, eax",
            "dec rcx",
            "jnz 2b",
            id = in(reg) call::BASE_GET_ABI_VERSION.0,
            inout("rcx") n => _,
            in("dx") pvabi::gate::DEFAULT_IOPORT,
            out("rax") _, out("rdi") _, out("rsi") _,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
            options(nomem, nostack),
        );
    }
}

fn power_off(code: u64) -> ! {
    // SAFETY: POWER.SHUTDOWN (reason POWEROFF = 0) through the port gate; it does not return
    // on a conforming host, and the loop below covers one that does.
    unsafe {
        core::arch::asm!(
            "out dx, eax",
            inout("rax") u64::from(call::POWER_SHUTDOWN.0) => _,
            inout("rdi") 0u64 => _,
            inout("rsi") code => _,
            inout("dx") pvabi::gate::DEFAULT_IOPORT => _,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
            options(nostack),
        );
    }
    loop {
        core::hint::spin_loop();
    }
}

/// `key=value` from the command line.
fn arg(cmdline: &[u8], key: &[u8], default: u64) -> u64 {
    for word in cmdline.split(|b| *b == b' ') {
        if let Some(v) = word
            .strip_prefix(key)
            .and_then(|rest| rest.strip_prefix(b"="))
        {
            let mut n = 0u64;
            for d in v {
                if !d.is_ascii_digit() {
                    return default;
                }
                n = n.saturating_mul(10).saturating_add(u64::from(d - b'0'));
            }
            return n;
        }
    }
    default
}

struct Out(Pvabi);

/// An [`Out`] that reports nothing when its flag is set.
struct Quiet<'a>(&'a Out, bool);

trait Report {
    fn result(&self, name: &str, ops: u64, ticks: u64);
}

impl Report for Out {
    fn result(&self, name: &str, ops: u64, ticks: u64) {
        let _ = writeln!(self.0.console(), "pvabi-bench {name} {ops} {ticks}");
    }
}

impl Report for Quiet<'_> {
    fn result(&self, name: &str, ops: u64, ticks: u64) {
        if !self.1 {
            self.0.result(name, ops, ticks);
        }
    }
}

impl Out {
    fn fail(&self, what: &str, e: impl core::fmt::Debug) -> ! {
        let _ = writeln!(self.0.console(), "pvabi-bench error {what}: {e:?}");
        power_off(1)
    }
}

/// Times `ops` runs of `f` (which performs `per` operations each) and reports
/// `ops * per` operations.
fn timed(out: &impl Report, name: &str, ops: u64, per: u64, mut f: impl FnMut()) {
    let t0 = tsc();
    for _ in 0..ops {
        f();
    }
    let t1 = tsc();
    out.result(name, ops * per, t1.wrapping_sub(t0));
}

fn peer(out: &Out, rounds: u64, n: u64) {
    // Round 0 warms up and is not reported (the QEMU peer's first round is dropped too).
    for round in 0..=rounds {
        let t0 = tsc();
        raw_exits(n);
        let t1 = tsc();
        Quiet(out, round == 0).result("peer_exit", n, t1.wrapping_sub(t0));
    }
}

fn bench(out: &Out, rounds: u64, n: u64) {
    let pv = out.0;
    let fast = if pv.info().exec_mode == Some(ExecMode::RING0) {
        1
    } else {
        FAST_MULT_PV
    };
    let key = b"bench/key";
    if let Err(e) = pv.store_write(key, b"0123456789abcdef", None) {
        out.fail("STORE.WRITE", e);
    }
    let events = match pv.event_register_page(&EVENTS) {
        Ok(e) => e,
        Err(e) => out.fail("EVENT.REGISTER_PAGE", e),
    };
    let port = match pv.event_alloc() {
        Ok(p) => p,
        Err(e) => out.fail("EVENT.ALLOC", e),
    };
    // A new port is bound to the vCPU that allocated it (EVT-3); bind again only if not.
    match pv.event_bind_vcpu(port, 0) {
        Ok(()) | Err(pvabi::Status::ALREADY) => {}
        Err(e) => out.fail("EVENT.BIND_VCPU", e),
    }
    let clock = match pv.clock_register_page(&CLOCK) {
        Ok(c) => c,
        Err(e) => out.fail("CLOCK.REGISTER_PAGE", e),
    };
    let mut mc = Multicall::<64>::new();
    for _ in 0..64 {
        if let Err(e) = mc.push(call::BASE_GET_ABI_VERSION, [0; 6], false) {
            out.fail("multicall push", e);
        }
    }
    let ring = match pv.register_ring(&RING) {
        Ok(r) => r,
        Err(e) => out.fail("BASE.RING_REGISTER", e),
    };
    // Check every variant once before timing anything.
    if let Err(e) = ring.abi_version() {
        out.fail("ring call", e);
    }
    if let Err(e) = mc.execute(&pv) {
        out.fail("MULTICALL.EXECUTE", e);
    }
    if mc.result(63) != Some(Ok(u64::from(pvabi::ABI_VERSION.to_u32()))) {
        out.fail("multicall result", mc.result(63));
    }
    if let Err(e) = clock.now_ns() {
        out.fail("clock page", e);
    }
    let mut buf = [0u8; 32];
    if pv.store_read(key, &mut buf, None) != Ok(16) {
        out.fail("STORE.READ", pv.store_read(key, &mut buf, None));
    }
    if let Err(e) = pv.event_send(port) {
        out.fail("EVENT.SEND", e);
    }
    let con = pv.console();
    // Round 0 warms caches and the host's lazily built state up; it is not reported.
    for round in 0..=rounds {
        let out = &Quiet(out, round == 0);
        timed(out, "raw_exit", 1, n, || raw_exits(n));
        timed(out, "null_call", n, 1, || {
            let _ = core::hint::black_box(pv.abi_version());
        });
        timed(out, "null_call_min", 1, n, || min_null_calls(n));
        timed(out, "console_write_64B", n, 1, || {
            let _ = core::hint::black_box(con.write(&LINE64));
        });
        timed(out, "store_read", n, 1, || {
            let _ = core::hint::black_box(pv.store_read(key, &mut buf, None));
        });
        timed(out, "event_send_to_self", n, 1, || {
            let _ = core::hint::black_box(pv.event_send(port));
        });
        timed(out, "clock_read", n * fast, 1, || {
            let _ = core::hint::black_box(clock.now_ns());
        });
        timed(out, "multicall_64", n.div_ceil(8), 64, || {
            let _ = core::hint::black_box(mc.execute(&pv));
        });
        timed(out, "ring_null_call", n * fast.min(RING_MULT_PV), 1, || {
            let _ = core::hint::black_box(ring.abi_version());
        });
        let _ = events.clear_pending(port);
    }
    if let Err(e) = ring.unregister_ring() {
        out.fail("BASE.RING_UNREGISTER", e);
    }
}

fn kernel_main(boot_info_gpa: u64) -> ! {
    first_output();
    // SAFETY: pvabi-kvm identity-maps all guest RAM, which `Translate::Identity` requires.
    let phys = unsafe { PhysReader::new(Translate::Identity) };
    let Ok(pv) = Pvabi::discover(boot_info_gpa, &phys) else {
        power_off(2);
    };
    let mut line = [0u8; 256];
    let len = pv.boot_cmdline(&mut line).unwrap_or(0);
    let cmdline = line.get(..len).unwrap_or(&[]);
    let out = Out(pv);
    let rounds = arg(cmdline, b"rounds", 11);
    let n = arg(cmdline, b"n", 200);
    if cmdline.starts_with(b"peer") {
        peer(&out, rounds, n);
    } else if cmdline.starts_with(b"bench") {
        bench(&out, rounds, n);
    }
    let _ = writeln!(out.0.console(), "pvabi-bench end");
    power_off(0)
}

/// Entry of the boot vCPU: RDI = BootInfo GPA, RSP = a loader stack.
#[no_mangle]
#[link_section = ".text._start"]
pub extern "C" fn _start(boot_info_gpa: u64) -> ! {
    kernel_main(boot_info_gpa)
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    power_off(3)
}
