//! Test guest for pvabi-kvm: raw gate calls through `out dx, eax`, behaviour chosen by the
//! command line in the BootInfo. Each test ends with POWER.SHUTDOWN and a code the host test
//! checks.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};

use pvabi::call::{self, CallId};
use pvabi::gate::{DEFAULT_IOPORT, NULL_IOPORT};
use pvabi::BootInfo;
use pvabi_image_rt as _;

/// One gate call; returns (status register, value register).
fn gate(id: CallId, a0: u64, a1: u64, a2: u64, a3: u64) -> (u64, u64) {
    let status: u64;
    let value: u64;
    // SAFETY: `out dx, eax` to the gate port is the pvabi call instruction; the host changes
    // only RAX and RDI (declared), and reads memory only through addresses we pass.
    unsafe {
        core::arch::asm!(
            "out dx, eax",
            inout("rax") u64::from(id.0) => status,
            inout("rdi") a0 => value,
            in("rsi") a1,
            in("r8") a2,
            in("r9") a3,
            in("r10") 0u64,
            in("r11") 0u64,
            in("dx") DEFAULT_IOPORT,
            options(nostack)
        );
    }
    (status, value)
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

fn parse_u64(s: &[u8]) -> u64 {
    let mut v: u64 = 0;
    for &b in s {
        if b.is_ascii_digit() {
            v = v.wrapping_mul(10).wrapping_add(u64::from(b - b'0'));
        }
    }
    v
}

static AP_DONE: AtomicU64 = AtomicU64::new(0);
/// Bit v set: vCPU v ran its entry (the "smpall" test).
static RAN: AtomicU64 = AtomicU64::new(0);

#[repr(C, align(16))]
struct Stacks([[u8; 8192]; 16]);
static mut STACKS: Stacks = Stacks([[0; 8192]; 16]);

extern "C" fn ap_count(arg: u64, id: u64) -> ! {
    if arg == 0x5EED {
        RAN.fetch_or(1 << id, Ordering::SeqCst);
    }
    gate(call::VCPU_STOP, 0, 0, 0, 0);
    poweroff(98)
}

/// The steal-time record (spec `VCPU-11`): steal ns at 0, version at 8.
#[repr(C, align(64))]
struct StealRec {
    steal: AtomicU64,
    version: AtomicU64,
    _rest: [AtomicU64; 6],
}
static STEAL: StealRec = StealRec {
    steal: AtomicU64::new(0),
    version: AtomicU64::new(0),
    _rest: [const { AtomicU64::new(0) }; 6],
};
static SPIN_STOP: AtomicU64 = AtomicU64::new(0);

extern "C" fn ap_spin(_arg: u64, _id: u64) -> ! {
    while SPIN_STOP.load(Ordering::SeqCst) == 0 {
        core::hint::spin_loop();
    }
    gate(call::VCPU_STOP, 0, 0, 0, 0);
    poweroff(97)
}

#[repr(C, align(8))]
struct CrashBuf([u8; 256]);
static mut CRASH_BUF: CrashBuf = CrashBuf([0; 256]);

// ---- events -------------------------------------------------------------------------------

/// The event page (4 KiB, page aligned), seen as atomics: the host changes it at any time.
#[repr(C, align(4096))]
struct EventPage([AtomicU64; 512]);
static EVENT_PAGE: EventPage = EventPage([const { AtomicU64::new(0) }; 512]);
/// Upcalls taken.
static UPCALLS: AtomicU64 = AtomicU64::new(0);
/// Pending bits of word 0 seen by the upcall handler.
static SEEN: AtomicU64 = AtomicU64::new(0);
const UPCALL_VECTOR: u8 = 0x40;

/// Word index of vCPU 0's `selector` / `upcall_pending|upcall_mask` in the page.
const VCPU0_SELECTOR: usize = 256 / 8;
const VCPU0_PENDING_MASK: usize = 256 / 8 + 1;

/// Common upcall work: clear upcall_pending, collect and clear pending bits of word 0.
fn handle_events() {
    let page = &EVENT_PAGE.0;
    // upcall_pending is the low 32 bits of this word; upcall_mask the high ones.
    page[VCPU0_PENDING_MASK].fetch_and(!0xFFFF_FFFF, Ordering::SeqCst);
    page[VCPU0_SELECTOR].store(0, Ordering::SeqCst);
    let bits = page[0].swap(0, Ordering::SeqCst);
    SEEN.fetch_or(bits, Ordering::SeqCst);
    UPCALLS.fetch_add(1, Ordering::SeqCst);
}

/// Ring 0: the interrupt handler body, called from the assembly stub.
#[no_mangle]
extern "C" fn upcall_isr_body() {
    handle_events();
}

core::arch::global_asm!(
    ".global upcall_isr",
    "upcall_isr:",
    "push rax",
    "push rcx",
    "push rdx",
    "push rsi",
    "push rdi",
    "push r8",
    "push r9",
    "push r10",
    "push r11",
    "mov rbp, rsp",
    "and rsp, -16",
    "call upcall_isr_body",
    "mov rsp, rbp",
    "pop r11",
    "pop r10",
    "pop r9",
    "pop r8",
    "pop rdi",
    "pop rsi",
    "pop rdx",
    "pop rcx",
    "pop rax",
    "iretq",
);

extern "C" {
    fn upcall_isr();
}

/// The "badframe" test: the callback corrupts the saved frame before returning.
static CORRUPT_FRAME: AtomicU64 = AtomicU64::new(0);

/// PV ring 3: the callback (RSP + 8 aligned to 16, RDI = frame GPA, RSI = vCPU id).
extern "C" fn on_callback(frame: u64, _vcpu: u64) -> ! {
    handle_events();
    let bad = CORRUPT_FRAME.load(Ordering::SeqCst);
    if bad != 0 {
        // SAFETY: RDI is the GPA of this vCPU's frame in our own (identity-mapped) event page;
        // offsets 0 (rip) and 16 (rflags) are inside it.
        unsafe {
            core::ptr::write_volatile(frame as *mut u64, bad);
            core::ptr::write_volatile((frame + 16) as *mut u64, u64::MAX);
        }
    }
    let (s, _) = gate(call::VCPU_UPCALL_RETURN, 0, 0, 0, 0);
    poweroff(0xdead00 | (s & 0xff))
}

#[repr(C, align(16))]
struct Idt([u64; 512]);
static mut IDT: Idt = Idt([0; 512]);

fn install_idt() {
    let h = upcall_isr as *const () as u64;
    // Interrupt gate on IST1 (the loader's per-vCPU interrupt stack).
    let lo = (h & 0xFFFF) | (0x08 << 16) | (1 << 32) | (0x8E00 << 32) | ((h >> 16) & 0xFFFF) << 48;
    let hi = h >> 32;
    let idt = core::ptr::addr_of_mut!(IDT);
    // SAFETY: single vCPU writes its own static IDT before loading it; in bounds
    // (vector 0x40 < 256, two words per entry).
    unsafe {
        (*idt).0[usize::from(UPCALL_VECTOR) * 2] = lo;
        (*idt).0[usize::from(UPCALL_VECTOR) * 2 + 1] = hi;
    }
    #[repr(C, packed)]
    struct Ptr {
        limit: u16,
        base: u64,
    }
    let p = Ptr {
        limit: (256 * 16 - 1) as u16,
        base: idt as u64,
    };
    // SAFETY: ring 0; loads a valid IDT whose only present entry points at `upcall_isr`.
    unsafe { core::arch::asm!("lidt [{}]", in(reg) &p, options(nostack)) };
}

fn wait_upcalls(n: u64, ring0: bool) {
    let (_, start) = gate(call::CLOCK_GET_TIME, 0, 0, 0, 0);
    while UPCALLS.load(Ordering::SeqCst) < n {
        if ring0 {
            // SAFETY: ring 0 with IF = 1: sleep until the next interrupt.
            unsafe { core::arch::asm!("hlt", options(nostack, nomem)) };
        }
        let (_, now) = gate(call::CLOCK_GET_TIME, 0, 0, 0, 0);
        if now - start > 2_000_000_000 {
            poweroff(0xEEE0 + n);
        }
    }
}

fn events(ring0: bool) -> ! {
    let page = core::ptr::addr_of!(EVENT_PAGE) as u64;
    let (s, _) = gate(call::EVENT_REGISTER_PAGE, page, 0, 0, 0);
    if s != 0 {
        poweroff(0x100 | (s & 0xff));
    }
    let (s, _) = if ring0 {
        install_idt();
        gate(call::EVENT_SET_UPCALL, 1, u64::from(UPCALL_VECTOR), 0, 0)
    } else {
        gate(
            call::EVENT_SET_UPCALL,
            2,
            on_callback as *const () as u64,
            0,
            0,
        )
    };
    if s != 0 {
        poweroff(0x200 | (s & 0xff));
    }
    let (s, port) = gate(call::EVENT_ALLOC, 0, 0, 0, 0);
    if s != 0 || port == 0 || port >= 64 {
        poweroff(0x300 | (s & 0xff));
    }
    if ring0 {
        // SAFETY: ring 0; the IDT handles the upcall vector.
        unsafe { core::arch::asm!("sti", options(nostack, nomem)) };
    }
    // 1. An event sent to ourselves arrives as an upcall.
    gate(call::EVENT_SEND, port, 0, 0, 0);
    wait_upcalls(1, ring0);
    // 2. A timer raises the port and ends VCPU.BLOCK.
    let (_, now) = gate(call::CLOCK_GET_TIME, 0, 0, 0, 0);
    let (s, _) = gate(call::CLOCK_SET_TIMER, now + 2_000_000, port, 0, 0);
    if s != 0 {
        poweroff(0x400 | (s & 0xff));
    }
    let (s, _) = gate(call::VCPU_BLOCK, now + 3_000_000_000, 0, 0, 0);
    let (_, after) = gate(call::CLOCK_GET_TIME, 0, 0, 0, 0);
    wait_upcalls(2, ring0);
    let woke_early = u64::from(s == 0 && after - now < 1_000_000_000);
    poweroff(
        UPCALLS.load(Ordering::SeqCst)
            | woke_early << 8
            | (SEEN.load(Ordering::SeqCst) >> port & 1) << 9,
    )
}

#[repr(C, align(16))]
struct Stack([u8; 16384]);
static mut AP_STACK: Stack = Stack([0; 16384]);

extern "C" fn ap_entry(arg: u64, id: u64) -> ! {
    AP_DONE.store(arg + id, Ordering::SeqCst);
    gate(call::VCPU_KICK, 0, 0, 0, 0);
    gate(call::VCPU_STOP, 0, 0, 0, 0);
    poweroff(99)
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
        b"exit" => poweroff(parse_u64(rest)),
        b"outloop" => {
            let n = parse_u64(rest);
            for _ in 0..n {
                // SAFETY: a write to the null port only exits to the host, which ignores it.
                unsafe {
                    core::arch::asm!("out dx, eax", in("dx") NULL_IOPORT, in("eax") 0u32,
                                     options(nostack, nomem))
                };
            }
            poweroff(0)
        }
        b"gateloop" => {
            let n = parse_u64(rest);
            let mut bad = 0;
            for i in 0..n {
                // RDI goes in as i and must come back as the version.
                let (s, v) = gate(call::BASE_GET_ABI_VERSION, i, 0, 0, 0);
                if s != 0 || v != u64::from(pvabi::ABI_VERSION.to_u32()) {
                    bad += 1;
                }
            }
            poweroff(bad)
        }
        b"version" => {
            let (s, v) = gate(call::BASE_GET_ABI_VERSION, 0, 0, 0, 0);
            poweroff(if s == 0 { v } else { 0xdead })
        }
        b"unknown" => {
            // An unknown call and a call id with high bits set are NOT_SUPPORTED (-1).
            let (s1, _) = gate(CallId(0x7777_0001), 0, 0, 0, 0);
            let status: u64;
            // SAFETY: as in `gate`, with a 64-bit RAX whose high half is nonzero.
            unsafe {
                core::arch::asm!("out dx, eax", inout("rax") 1u64 << 40 => status,
                                 inout("rdi") 0u64 => _, in("dx") DEFAULT_IOPORT, options(nostack));
            }
            poweroff(u64::from(s1 == u64::MAX) + 2 * u64::from(status == u64::MAX))
        }
        b"console" => {
            write(b"hello from the guest");
            gate(call::CONSOLE_WRITE_BYTE, u64::from(b'\n'), 0, 0, 0);
            // A bad buffer is INVALID_ADDRESS (-3), not a fault.
            let (s, _) = gate(call::CONSOLE_WRITE, 1 << 46, 16, 0, 0);
            poweroff(if s == (-3i64) as u64 { 0 } else { 1 })
        }
        b"bootinfo" => {
            let mut code = 0;
            if bi.magic != BootInfo::MAGIC {
                code |= 1;
            }
            if bi.vcpu_count != parse_u64(rest) as u32 {
                code |= 2;
            }
            if bi.gate_param != u64::from(DEFAULT_IOPORT) || bi.gate_kind != 1 {
                code |= 4;
            }
            if bi.mem_map_entries == 0 || bi.mem_size == 0 {
                code |= 8;
            }
            poweroff(code | u64::from(bi.exec_mode) << 8 | (bi.mem_size >> 20) << 16)
        }
        b"cpuid" => {
            let r = core::arch::x86_64::__cpuid(0x4000_0100);
            let sig = pvabi::discovery::cpuid_signature_regs();
            let ok = r.ebx == sig[0] && r.ecx == sig[1] && r.edx == sig[2];
            let g = core::arch::x86_64::__cpuid(0x4000_0101);
            poweroff(u64::from(ok) | (u64::from(g.ecx) << 8))
        }
        b"triple" => {
            // SAFETY: deliberately raises #UD with no IDT: a triple fault the host reports.
            unsafe { core::arch::asm!("ud2", options(nostack, nomem)) };
            poweroff(1)
        }
        b"events" => events(bi.exec_mode == 0),
        b"badframe" => {
            // Resume at an unmapped (canonical) RIP with every RFLAGS bit set: the guest
            // faults with no IDT, and the VM ends with an error; the host stays up.
            CORRUPT_FRAME.store(0x7FFF_0000_0000, Ordering::SeqCst);
            events(false)
        }
        b"badframe2" => {
            // A non-canonical RIP is refused: UPCALL_RETURN returns INVALID_PARAM.
            CORRUPT_FRAME.store(0x8000_0000_0000_0000, Ordering::SeqCst);
            events(false)
        }
        b"smpall" => {
            // Start every other vCPU; each marks itself and stops.
            let n = u64::from(bi.vcpu_count);
            for v in 1..n {
                let base = core::ptr::addr_of_mut!(STACKS) as u64 + v * 8192;
                let (s, _) = gate(
                    call::VCPU_START,
                    v,
                    ap_count as *const () as u64,
                    base + 8192 - 8,
                    0x5EED,
                );
                if s != 0 {
                    poweroff(0x100 | (s & 0xff));
                }
            }
            let want = ((1u64 << n) - 1) & !1;
            let (_, start) = gate(call::CLOCK_GET_TIME, 0, 0, 0, 0);
            while RAN.load(Ordering::SeqCst) != want {
                let (_, now) = gate(call::CLOCK_GET_TIME, 0, 0, 0, 0);
                if now - start > 5_000_000_000 {
                    poweroff(0x200);
                }
                gate(call::VCPU_YIELD, 0, 0, 0, 0);
            }
            // Starting a vCPU id beyond the count is INVALID_PARAM (-2).
            let (s, _) = gate(call::VCPU_START, n, ap_count as *const () as u64, 0x8000, 0);
            poweroff(RAN.load(Ordering::SeqCst) | u64::from(s == (-2i64) as u64) << 32)
        }
        b"steal" => {
            // Every other vCPU spins until told to stop; vCPU 0 spins 500 ms with a steal-time
            // record registered, then reports the steal it saw (in µs).
            let n = u64::from(bi.vcpu_count);
            for v in 1..n {
                let base = core::ptr::addr_of_mut!(STACKS) as u64 + v * 8192;
                gate(
                    call::VCPU_START,
                    v,
                    ap_spin as *const () as u64,
                    base + 8192 - 8,
                    0,
                );
            }
            let rec = core::ptr::addr_of!(STEAL) as u64;
            let (s, _) = gate(call::VCPU_REGISTER_STEAL_TIME, rec, 0, 0, 0);
            if s != 0 {
                poweroff(0x100 | (s & 0xff));
            }
            let (_, start) = gate(call::CLOCK_GET_TIME, 0, 0, 0, 0);
            loop {
                let (_, now) = gate(call::CLOCK_GET_TIME, 0, 0, 0, 0);
                if now - start > 500_000_000 {
                    break;
                }
                for _ in 0..10_000 {
                    core::hint::spin_loop();
                }
            }
            SPIN_STOP.store(1, Ordering::SeqCst);
            let steal = loop {
                let v1 = STEAL.version.load(Ordering::SeqCst);
                let st = STEAL.steal.load(Ordering::SeqCst);
                let v2 = STEAL.version.load(Ordering::SeqCst);
                if v1 == v2 && v1 & 1 == 0 {
                    break st;
                }
            };
            poweroff(steal / 1000)
        }
        b"crash" => {
            // A crash report in a registered buffer, then POWER.SHUTDOWN(CRASH, 77).
            let buf = core::ptr::addr_of_mut!(CRASH_BUF);
            let msg = b"guest gave up";
            // SAFETY: the only access to CRASH_BUF, on the only running vCPU; in bounds
            // (32-byte header + 13 bytes of message < 256).
            unsafe {
                let b = &mut (*buf).0;
                b[0..4].copy_from_slice(&pvabi::power::CrashHeader::MAGIC.to_le_bytes());
                b[4..8].copy_from_slice(&(msg.len() as u32).to_le_bytes());
                b[8..16].copy_from_slice(&5u64.to_le_bytes());
                b[32..32 + msg.len()].copy_from_slice(msg);
            }
            let (s, _) = gate(call::POWER_REGISTER_CRASH_BUFFER, buf as u64, 256, 0, 0);
            if s != 0 {
                poweroff(0x100 | (s & 0xff));
            }
            gate(call::POWER_SHUTDOWN, 2, 77, 0, 0);
            poweroff(1)
        }
        b"sleep" => {
            // VCPU.BLOCK without a deadline and nothing that could wake it.
            gate(call::VCPU_BLOCK, 0, 0, 0, 0);
            poweroff(1)
        }
        b"hang" => loop {
            core::hint::spin_loop();
        },
        b"smp" => {
            let top = core::ptr::addr_of_mut!(AP_STACK) as u64 + 16384 - 8;
            let mut results = [0u64; 2];
            // Start vCPU 1, let it stop, then start it again (a stopped vCPU can restart).
            for (round, arg) in [0x1000u64, 0x2000].into_iter().enumerate() {
                AP_DONE.store(0, Ordering::SeqCst);
                let (s, _) = gate(call::VCPU_START, 1, ap_entry as *const () as u64, top, arg);
                if s != 0 {
                    poweroff(0x100 | (s & 0xff));
                }
                loop {
                    let v = AP_DONE.load(Ordering::SeqCst);
                    if v != 0 {
                        // Wait until it has stopped.
                        loop {
                            let (_, st) = gate(call::VCPU_GET_STATUS, 1, 0, 0, 0);
                            if st == 0 {
                                break;
                            }
                            gate(call::VCPU_YIELD, 0, 0, 0, 0);
                        }
                        results[round] = v;
                        break;
                    }
                    // Sleep until kicked (or 1 s passes).
                    let (_, now) = gate(call::CLOCK_GET_TIME, 0, 0, 0, 0);
                    gate(call::VCPU_BLOCK, now + 1_000_000_000, 0, 0, 0);
                }
            }
            poweroff(results[0] | results[1] << 16)
        }
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
