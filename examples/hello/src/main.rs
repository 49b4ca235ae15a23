//! `pvabi-hello`: a minimal guest kernel written against `pvabi-guest`.
//!
//! It discovers the host through the boot-info handoff, prints through CONSOLE, reads the
//! clock (its clock page and CLOCK.GET_TIME), starts vCPU 1 with VCPU.START, exchanges an event
//! with it in each direction (upcalls by interrupt vector in ring 0, by callback in PV ring 3),
//! writes and reads back a STORE key, and powers off with 0 — or prints what failed and powers
//! off with 1. On success its last line is `hello: all checks passed`.
//!
//! It runs on any pvabi host that loads bare-metal images the way `pvabi-kvm` does (identity
//! mapped, entered at `_start` with RDI = the BootInfo address).
#![no_std]
#![no_main]

use core::fmt::Write;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use pvabi::discovery::ExecMode;
use pvabi::vcpu::VcpuState;
use pvabi_guest::event::Port;
use pvabi_guest::shared::{ClockPageShared, EventPageShared};
use pvabi_guest::upcall::{self, UpcallInfo};
use pvabi_guest::vcpu::VcpuStack;
use pvabi_guest::{PhysReader, Pvabi, Translate};
use pvabi_image_rt as _;

/// The vector upcalls use in ring 0.
const UPCALL_VECTOR: u8 = 0x40;
/// How long any wait may take before the kernel gives up.
const WAIT_NS: u64 = 5_000_000_000;

static EVENTS: EventPageShared = EventPageShared::new();
static CLOCK: ClockPageShared = ClockPageShared::new();
static mut AP_STACK: VcpuStack<32768> = VcpuStack::new();

/// Port bound to vCPU 0 (vCPU 1 sends on it) and port bound to vCPU 1 (vCPU 0 sends on it).
static PORT_TO_0: AtomicU32 = AtomicU32::new(0);
static PORT_TO_1: AtomicU32 = AtomicU32::new(0);
/// Bit `p` of `GOT[v]`: port `p` was delivered to vCPU `v` by an upcall.
static GOT: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// The IDT (ring 0 only): 256 16-byte gates, all absent but the upcall vector.
#[repr(C, align(16))]
struct Idt([AtomicU64; 512]);
static IDT: Idt = Idt([const { AtomicU64::new(0) }; 512]);

/// Runs for every pending port an upcall finds (on the vCPU it is bound to).
fn on_port(port: Port, info: &UpcallInfo) {
    if let (Some(got), true) = (GOT.get(info.vcpu as usize), port.0 < 64) {
        got.fetch_or(1 << port.0, Ordering::SeqCst);
    }
}

fn fail(pv: &Pvabi, what: &str, err: impl core::fmt::Debug) -> ! {
    let _ = writeln!(pv.console(), "hello: FAILED: {what}: {err:?}");
    pv.power_off(1);
    loop {
        core::hint::spin_loop();
    }
}

/// Loads the IDT with the shim's vector entry at `UPCALL_VECTOR` (ring 0 only).
fn load_idt() {
    let handler = upcall::vector_entry_address() as u64;
    let cs: u16;
    // SAFETY: reads the code-segment selector; no memory or flags touched.
    unsafe {
        core::arch::asm!("mov {0:x}, cs", out(reg) cs, options(nomem, nostack, preserves_flags))
    };
    // A 64-bit interrupt gate: present, DPL 0, type 0xE, on IST1 (the KVM loader gives every
    // vCPU an interrupt stack there), so an upcall never writes below the interrupted RSP.
    let lo = (handler & 0xFFFF)
        | (u64::from(cs) << 16)
        | (1u64 << 32)
        | (0x8E00u64 << 32)
        | ((handler >> 16) & 0xFFFF) << 48;
    let v = usize::from(UPCALL_VECTOR) * 2;
    if let (Some(a), Some(b)) = (IDT.0.get(v), IDT.0.get(v + 1)) {
        a.store(lo, Ordering::SeqCst);
        b.store(handler >> 32, Ordering::SeqCst);
    }
    #[repr(C, packed)]
    struct Ptr {
        limit: u16,
        base: u64,
    }
    let p = Ptr {
        limit: (256 * 16 - 1) as u16,
        base: core::ptr::addr_of!(IDT) as u64,
    };
    // SAFETY: ring 0; the table is a static that lives forever, every absent gate faults
    // cleanly (to a triple fault the VMM reports), the present one points at the shim's entry.
    unsafe { core::arch::asm!("lidt [{}]", in(reg) &p, options(nostack, preserves_flags)) };
}

/// Chooses this vCPU's upcall mode from the execution mode and enables upcalls.
fn enable_upcalls(pv: &Pvabi) {
    if pv.info().exec_mode == Some(ExecMode::RING0) {
        load_idt();
        if let Err(e) = pv.set_upcall_vector(UPCALL_VECTOR) {
            fail(pv, "EVENT.SET_UPCALL(VECTOR)", e);
        }
        // SAFETY: ring 0 with an IDT that handles the only vector the host injects.
        unsafe { core::arch::asm!("sti", options(nomem, nostack)) };
    } else if let Err(e) = pv.set_upcall_callback() {
        fail(pv, "EVENT.SET_UPCALL(CALLBACK)", e);
    }
}

/// Blocks until `cond` holds (an upcall sets it) or `WAIT_NS` pass.
fn wait_until(pv: &Pvabi, what: &str, cond: impl Fn() -> bool) {
    let start = pv.time_ns().unwrap_or(0);
    while !cond() {
        let now = pv.time_ns().unwrap_or(u64::MAX);
        if now.saturating_sub(start) > WAIT_NS {
            fail(pv, what, "timed out");
        }
        // Events end the block early; the deadline only bounds a lost wake-up.
        let _ = pv.vcpu_block(Some(now + 10_000_000));
    }
}

fn discover(boot_info_gpa: u64) -> Pvabi {
    // SAFETY: the loader identity-maps all guest RAM (and nothing this kernel dereferences
    // lies outside it), which is what `Translate::Identity` requires.
    let phys = unsafe { PhysReader::new(Translate::Identity) };
    match Pvabi::discover(boot_info_gpa, &phys) {
        Ok(pv) => pv,
        // Without a gate there is no console and no power-off: stop here.
        Err(_) => loop {
            core::hint::spin_loop();
        },
    }
}

/// vCPU 1: enables upcalls, tells vCPU 0 it runs, waits for vCPU 0's answer, then returns
/// (the shim's return trap stops the vCPU).
extern "C" fn ap_main(boot_info_gpa: u64, vcpu: u64) {
    let pv = discover(boot_info_gpa);
    enable_upcalls(&pv);
    let to0 = Port(PORT_TO_0.load(Ordering::SeqCst));
    let to1 = PORT_TO_1.load(Ordering::SeqCst);
    if let Err(e) = pv.event_send(to0) {
        fail(&pv, "vCPU 1: EVENT.SEND", e);
    }
    wait_until(&pv, "vCPU 1: event from vCPU 0", || {
        GOT[1].load(Ordering::SeqCst) & (1 << to1) != 0
    });
    let _ = writeln!(
        pv.console(),
        "hello: vCPU {vcpu} got port {to1} from vCPU 0"
    );
}

fn kernel_main(boot_info_gpa: u64) -> ! {
    let pv = discover(boot_info_gpa);
    let info = *pv.info();
    let mut con = pv.console();
    let mode = if info.exec_mode == Some(ExecMode::RING0) {
        "ring 0"
    } else {
        "PV ring 3"
    };
    let _ = writeln!(
        con,
        "hello: pvabi {}.{} on backend {:#x}, {} vCPUs, {mode}",
        info.version.major,
        info.version.minor,
        info.backend_id.unwrap_or(0),
        info.vcpu_count
    );

    // BASE: the version through the gate must be the one discovery reported.
    let version = pv
        .abi_version()
        .unwrap_or_else(|e| fail(&pv, "BASE.GET_ABI_VERSION", e));
    if version != info.version {
        fail(&pv, "BASE.GET_ABI_VERSION", version);
    }
    let _ = writeln!(
        con,
        "hello: BASE.GET_ABI_VERSION = {}.{}",
        version.major, version.minor
    );

    // CLOCK: the clock page and the call must agree to within a second.
    let clock = pv
        .clock_register_page(&CLOCK)
        .unwrap_or_else(|e| fail(&pv, "CLOCK.REGISTER_PAGE", e));
    let page_ns = clock
        .now_ns()
        .unwrap_or_else(|e| fail(&pv, "clock page", e));
    let call_ns = pv
        .time_ns()
        .unwrap_or_else(|e| fail(&pv, "CLOCK.GET_TIME", e));
    if page_ns.abs_diff(call_ns) > 1_000_000_000 {
        fail(&pv, "clock page vs CLOCK.GET_TIME", (page_ns, call_ns));
    }
    let _ = writeln!(con, "hello: clock {call_ns} ns (page {page_ns} ns)");

    // EVENT: a port for each direction, upcalls on.
    let events = pv
        .event_register_page(&EVENTS)
        .unwrap_or_else(|e| fail(&pv, "EVENT.REGISTER_PAGE", e));
    upcall::install(&pv, &events, on_port);
    let to0 = pv
        .event_alloc()
        .unwrap_or_else(|e| fail(&pv, "EVENT.ALLOC", e));
    let to1 = pv
        .event_alloc()
        .unwrap_or_else(|e| fail(&pv, "EVENT.ALLOC", e));
    if to0.0 >= 64 || to1.0 >= 64 {
        fail(&pv, "port numbers", (to0, to1));
    }
    if let Err(e) = pv.event_bind_vcpu(to1, 1) {
        fail(&pv, "EVENT.BIND_VCPU", e);
    }
    PORT_TO_0.store(to0.0, Ordering::SeqCst);
    PORT_TO_1.store(to1.0, Ordering::SeqCst);
    enable_upcalls(&pv);

    // VCPU: start vCPU 1 and exchange events with it.
    if info.vcpu_count < 2 {
        fail(&pv, "needs 2 vCPUs", info.vcpu_count);
    }
    // SAFETY: the only reference ever made to AP_STACK; vCPU 1 owns it from here on.
    let stack = unsafe { &mut *core::ptr::addr_of_mut!(AP_STACK) };
    if let Err(e) = pv.vcpu_start(1, ap_main, stack, boot_info_gpa) {
        fail(&pv, "VCPU.START", e);
    }
    wait_until(&pv, "event from vCPU 1", || {
        GOT[0].load(Ordering::SeqCst) & (1 << to0.0) != 0
    });
    let _ = writeln!(con, "hello: vCPU 0 got port {} from vCPU 1", to0.0);
    if let Err(e) = pv.event_send(to1) {
        fail(&pv, "EVENT.SEND", e);
    }
    wait_until(&pv, "vCPU 1 to stop", || {
        pv.vcpu_status(1) == Ok(VcpuState::STOPPED)
    });

    // STORE: write a key and read it back.
    let key = b"hello/greeting";
    if let Err(e) = pv.store_write(key, b"world", None) {
        fail(&pv, "STORE.WRITE", e);
    }
    let mut buf = [0u8; 16];
    let n = pv
        .store_read(key, &mut buf, None)
        .unwrap_or_else(|e| fail(&pv, "STORE.READ", e));
    if buf.get(..n) != Some(b"world".as_slice()) {
        fail(&pv, "STORE.READ value", buf.get(..n));
    }
    let _ = writeln!(con, "hello: store hello/greeting = world");

    let _ = writeln!(con, "hello: all checks passed");
    pv.power_off(0);
    loop {
        core::hint::spin_loop();
    }
}

/// Entry of the boot vCPU: RDI = BootInfo GPA, RSP = a loader stack.
#[no_mangle]
#[link_section = ".text._start"]
pub extern "C" fn _start(boot_info_gpa: u64) -> ! {
    kernel_main(boot_info_gpa)
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    // No console without a handle: loop; the VMM's watchdog (if any) reports the registers.
    loop {
        core::hint::spin_loop();
    }
}
