//! The pvabi conformance suite as a bare-metal guest image.
//!
//! Entered at `_start` with RDI = the BootInfo GPA (spec `DISC-2`), identity mapped, in ring 0
//! or PV ring 3. It discovers the host, takes the guest RAM the memory map names as the suite's
//! arena, and runs the suite (or, with `terminal=<case>` on the command line, one terminal case),
//! reporting through HARNESS. Command line words: `filter=<case-name-prefix>`,
//! `terminal=<case-name>`.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};

use pvabi::discovery::ExecMode;
use pvabi::memory::{MemKind, MemMapEntry};
use pvabi_conformance_suite::Platform;
use pvabi_guest::{GuestArena, PhysReader, Pvabi, Translate};
use pvabi_image_rt as _;

/// The vector upcalls use in ring 0.
const UPCALL_VECTOR: u8 = 0x40;
/// Most memory-map entries read.
const MAX_MAP: usize = 16;

/// The IDT (ring 0 only): 256 16-byte gates, all absent but the upcall vector.
#[repr(C, align(16))]
struct Idt([AtomicU64; 512]);
static IDT: Idt = Idt([const { AtomicU64::new(0) }; 512]);

extern "C" {
    static __image_end: u8;
}

/// Fills the IDT's upcall gate (once) and loads the IDT on this vCPU (ring 0 only).
fn load_idt() {
    let handler = pvabi_guest::upcall::vector_entry_address() as u64;
    let cs: u16;
    // SAFETY: reads the code-segment selector; touches no memory or flags.
    unsafe {
        core::arch::asm!("mov {0:x}, cs", out(reg) cs, options(nomem, nostack, preserves_flags))
    };
    // A 64-bit interrupt gate: present, DPL 0, type 0xE.
    let lo = (handler & 0xFFFF)
        | (u64::from(cs) << 16)
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
    // SAFETY: ring 0 (the caller checked the execution mode); the table is a static that
    // lives forever; every absent gate faults cleanly into a triple fault the VMM reports; the
    // present one points at the shim's vector entry, which saves and restores all it uses.
    unsafe { core::arch::asm!("lidt [{}]", in(reg) &p, options(nostack, preserves_flags)) };
    // SAFETY: ring 0 with an IDT that handles the only vector the host injects.
    unsafe { core::arch::asm!("sti", options(nomem, nostack)) };
}

struct BareMetal {
    boot_info_gpa: u64,
    ring0: bool,
}

impl Platform for BareMetal {
    fn name(&self) -> &'static str {
        if self.ring0 {
            "ring0"
        } else {
            "pv-ring3"
        }
    }
    fn boot_info_gpa(&self) -> u64 {
        self.boot_info_gpa
    }
    fn in_process(&self) -> bool {
        false
    }
    fn upcall_vector(&self) -> Option<u8> {
        self.ring0.then_some(UPCALL_VECTOR)
    }
    fn callback_upcalls(&self) -> bool {
        true
    }
    fn vcpu_prologue_fn(&self) -> Option<fn()> {
        self.ring0.then_some(load_idt as fn())
    }
}

fn halt_forever() -> ! {
    loop {
        core::hint::spin_loop();
    }
}

/// The command line word `key=value`'s value.
fn arg<'a>(cmdline: &'a [u8], key: &[u8]) -> Option<&'a str> {
    cmdline
        .split(|b| *b == b' ')
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix(b"=")))
        .and_then(|v| core::str::from_utf8(v).ok())
}

fn kernel_main(boot_info_gpa: u64) -> ! {
    // SAFETY: the loader identity-maps all guest RAM, which `Translate::Identity` requires.
    let phys = unsafe { PhysReader::new(Translate::Identity) };
    let Ok(pv) = Pvabi::discover(boot_info_gpa, &phys) else {
        halt_forever()
    };
    let Some(bi) = pv.info().boot_info else {
        halt_forever()
    };
    let ring0 = bi.exec_mode == ExecMode::RING0.0;
    if ring0 {
        load_idt();
    }
    // The arena: the RAM range of the memory map that starts at the image's end.
    // Only the address of the linker-script symbol `__image_end` is taken.
    let image_end = core::ptr::addr_of!(__image_end) as u64;
    let mut arena_range = None;
    let n = (bi.mem_map_entries as usize).min(MAX_MAP);
    for i in 0..n {
        let Some(gpa) = bi.mem_map_gpa.checked_add((i * MemMapEntry::SIZE) as u64) else {
            break;
        };
        let Some(entry) = phys.read::<MemMapEntry>(gpa) else {
            break;
        };
        if entry.kind == MemKind::RAM.0 && entry.base >= image_end {
            arena_range = Some((entry.base, entry.length));
        }
    }
    let Some((base, len)) = arena_range else {
        let _ = pv.power_off(2);
        halt_forever()
    };
    let (Ok(base), Ok(len)) = (usize::try_from(base), usize::try_from(len)) else {
        halt_forever()
    };
    // SAFETY: `[base, base + len)` is RAM the memory map gives the guest, above the image (so no
    // static, stack or loader structure lies in it: the loader stack and tables are below 1 MiB),
    // identity mapped for the whole run, and used by nothing but this arena.
    let arena = unsafe { GuestArena::new(base, len) };
    let platform = BareMetal {
        boot_info_gpa,
        ring0,
    };
    let mut cmd = [0u8; 256];
    let cl = (bi.cmdline_len as usize).min(cmd.len());
    let read_ok = cmd
        .get_mut(..cl)
        .and_then(|c| phys.read_bytes(bi.cmdline_gpa, c))
        .is_some();
    let cmdline: &[u8] = if read_ok {
        cmd.get(..cl).unwrap_or(&[])
    } else {
        &[]
    };
    if let Some(name) = arg(cmdline, b"terminal") {
        pvabi_conformance_suite::run_terminal(pv, &platform, &arena, name);
        // The case did not end the guest: end it so the host notices.
        let _ = pv.power_off(3);
        halt_forever()
    }
    pvabi_conformance_suite::run_suite(pv, &platform, &arena, arg(cmdline, b"filter"));
    let _ = pv.power_off(0);
    halt_forever()
}

/// Entry of the boot vCPU: RDI = BootInfo GPA, RSP = a loader stack.
#[no_mangle]
#[link_section = ".text._start"]
pub extern "C" fn _start(boot_info_gpa: u64) -> ! {
    kernel_main(boot_info_gpa)
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    halt_forever()
}
