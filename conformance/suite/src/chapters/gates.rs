//! GATES (spec chapter 3, `GATE-*`): the gate discovery named, the I/O-port, MMIO, `vmcall`
//! and in-process gates, the null port, registers across a call, and malformed calls that
//! must come back as statuses.
//!
//! The cases cross the gate themselves (`cross`) instead of going through the shim, so that
//! they see every register the host could disturb and can load values the shim never sends
//! (RAX with bits above 31, sentinels in registers the convention does not use).

use core::arch::asm;

use pvabi::gate::{DEFAULT_IOPORT, DEFAULT_MMIO_GATE, NULL_IOPORT};
use pvabi::memory::{MemKind, MemMapEntry};
use pvabi::{call, CallId, GateKind, ServiceId, Status};
use pvabi_guest::InProcessRegs;

use crate::{Case, Ctx};

/// The chapter's cases.
pub const CASES: &[Case] = &[
    Case {
        name: "gates::discovered_gate",
        clauses: "GATE-1,GATE-7",
        run: discovered_gate,
    },
    Case {
        name: "gates::ioport",
        clauses: "GATE-2",
        run: ioport,
    },
    Case {
        name: "gates::default_port",
        clauses: "GATE-3",
        run: default_port,
    },
    Case {
        name: "gates::mmio",
        clauses: "GATE-4",
        run: mmio,
    },
    Case {
        name: "gates::default_mmio_address",
        clauses: "GATE-5",
        run: default_mmio_address,
    },
    Case {
        name: "gates::vmcall",
        clauses: "GATE-6",
        run: vmcall,
    },
    Case {
        name: "gates::null_port",
        clauses: "GATE-8",
        run: null_port,
    },
    Case {
        name: "gates::registers_preserved",
        clauses: "GATE-9,CONV-8",
        run: registers_preserved,
    },
    Case {
        name: "gates::malformed_calls_return",
        clauses: "GATE-10",
        run: malformed_calls_return,
    },
];

/// Sentinels loaded into registers a call must not change.
const SENTINEL: [u64; 8] = [
    0x5e17_0001_a5a5_0f0f,
    0x5e17_0002_5a5a_f0f0,
    0x5e17_0003_c3c3_3c3c,
    0x5e17_0004_9696_6969,
    0x5e17_0005_0123_4567,
    0x5e17_0006_89ab_cdef,
    0x5e17_0007_fedc_ba98,
    0x5e17_0008_7654_3210,
];

/// RFLAGS bits a call must keep: CF, PF, AF, ZF, SF, DF, OF.
const FLAGS_MASK: u64 = 0x0cd5;

/// Most registers one crossing reports on.
const MAX_KEPT: usize = 16;

/// What one raw crossing of the gate observed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Crossing {
    /// RAX after the call (the status register), as the host left it.
    pub rax: u64,
    /// RDI after the call (the value register).
    pub rdi: u64,
    /// (register, value before, value after) for every register the call must preserve.
    pub kept: [(&'static str, u64, u64); MAX_KEPT],
    /// How many entries of `kept` are filled.
    pub kept_len: usize,
}

impl Crossing {
    fn new(rax: u64, rdi: u64) -> Self {
        Self {
            rax,
            rdi,
            kept: [("", 0, 0); MAX_KEPT],
            kept_len: 0,
        }
    }

    fn keep(&mut self, name: &'static str, before: u64, after: u64) {
        if let Some(slot) = self.kept.get_mut(self.kept_len) {
            *slot = (name, before, after);
            self.kept_len += 1;
        }
    }

    /// The first preserved register whose value changed.
    pub fn changed(&self) -> Option<(&'static str, u64, u64)> {
        self.kept
            .iter()
            .take(self.kept_len)
            .copied()
            .find(|(name, before, after)| {
                if *name == "RFLAGS" {
                    (before ^ after) & FLAGS_MASK != 0
                } else {
                    before != after
                }
            })
    }
}

/// One hardware crossing in two passes (Rust reserves RBX and RBP, so they are swapped in by
/// hand, and there are not enough registers to watch all of them at once).
macro_rules! hw_cross {
    ($insn:literal, $rax:expr, $args:expr, $rdx:expr) => {{
        let [a0, a1, a2, a3, a4, a5] = $args;
        let s = SENTINEL;
        let (mut rax1, mut rdi1) = ($rax, a0);
        let (rsi, r8, r9, r10, r11, rdx, rcx, r12, r13, fb, fa): (
            u64,
            u64,
            u64,
            u64,
            u64,
            u64,
            u64,
            u64,
            u64,
            u64,
            u64,
        );
        // SAFETY: the gate kind and parameter come from discovery (the host's own handoff),
        // so the instruction traps to the pvabi host: `out` to its port, a 4-byte store to
        // its MMIO trigger word (mapped by the translation discovery was given, which
        // promises the gate page), or `vmcall`/`vmmcall` that it intercepts. The host changes
        // at most the registers listed as outputs here and the guest memory the arguments
        // name, which by `cross`'s contract is none of this program's. Every register the
        // template touches is an operand; the flags are clobbered (no `preserves_flags`), and
        // the `pushfq`/`pop` pairs use the stack, which the compiler makes available because
        // `nostack` is not given.
        unsafe {
            asm!(
                "xor {fb:e}, {fb:e}",
                "stc",
                "pushfq",
                "pop {fb}",
                $insn,
                "pushfq",
                "pop {fa}",
                fb = out(reg) fb,
                fa = out(reg) fa,
                inout("rax") rax1,
                inout("rdi") rdi1,
                inout("rsi") a1 => rsi,
                inout("r8") a2 => r8,
                inout("r9") a3 => r9,
                inout("r10") a4 => r10,
                inout("r11") a5 => r11,
                inout("rdx") $rdx => rdx,
                inout("rcx") s[0] => rcx,
                inout("r12") s[1] => r12,
                inout("r13") s[2] => r13,
            );
        }
        let mut x = Crossing::new(rax1, rdi1);
        x.keep("RSI", a1, rsi);
        x.keep("R8", a2, r8);
        x.keep("R9", a3, r9);
        x.keep("R10", a4, r10);
        x.keep("R11", a5, r11);
        x.keep("RDX", $rdx, rdx);
        x.keep("RCX", s[0], rcx);
        x.keep("R12", s[1], r12);
        x.keep("R13", s[2], r13);
        x.keep("RFLAGS", fb, fa);
        // The second pass repeats the call (callers make calls without side effects or
        // calls that must fail without effect) and watches RBX, RBP, R14 and R15.
        let (mut rax2, rbx, rbp, r14, r15): (u64, u64, u64, u64, u64);
        rax2 = $rax;
        // SAFETY: as for the first pass. RBX and RBP are swapped with operand registers
        // around the gate instruction and swapped back right after it, so the compiler's
        // values in them are intact when the block ends; nothing between the swaps uses the
        // stack or the frame pointer.
        unsafe {
            asm!(
                "xchg {b}, rbx",
                "xchg {p}, rbp",
                $insn,
                "xchg {p}, rbp",
                "xchg {b}, rbx",
                b = inout(reg) s[3] => rbx,
                p = inout(reg) s[4] => rbp,
                inout("rax") rax2,
                inout("rdi") a0 => _,
                inout("rsi") a1 => _,
                inout("r8") a2 => _,
                inout("r9") a3 => _,
                inout("r10") a4 => _,
                inout("r11") a5 => _,
                inout("rdx") $rdx => _,
                inout("r14") s[5] => r14,
                inout("r15") s[6] => r15,
            );
        }
        let _ = rax2;
        x.keep("RBX", s[3], rbx);
        x.keep("RBP", s[4], rbp);
        x.keep("R14", s[5], r14);
        x.keep("R15", s[6], r15);
        x
    }};
}

/// Crosses the discovered register gate once with `rax` (all 64 bits, unchecked) and `args`,
/// recording RAX, RDI and every register the convention says the host preserves.
///
/// Callers pass only calls whose arguments name no guest memory (or name addresses outside
/// guest RAM), so that the host touches no memory of this program. `None` when the gate is
/// one this function cannot cross by hand.
pub(crate) fn cross(c: &Ctx<'_>, rax: u64, args: [u64; 6]) -> Option<Crossing> {
    let g = c.pv.gate().register_gate();
    if let Some(ip) = g.as_in_process() {
        let mut r = InProcessRegs { rax, args };
        // SAFETY: `InProcessGate::new`'s contract (upheld by whoever built the handle this
        // suite runs on) makes `func(ctx, regs)` sound for any register values; `&mut r` is a
        // valid, exclusive pointer to one `InProcessRegs` for the duration of the call. The
        // arguments name no memory of this program (this function's contract), so the host
        // accesses none.
        unsafe { (ip.func())(ip.ctx(), &mut r) };
        let [rdi, a1, a2, a3, a4, a5] = r.args;
        let mut x = Crossing::new(r.rax, rdi);
        for (name, before, after) in [
            ("RSI", args[1], a1),
            ("R8", args[2], a2),
            ("R9", args[3], a3),
            ("R10", args[4], a4),
            ("R11", args[5], a5),
        ] {
            x.keep(name, before, after);
        }
        return Some(x);
    }
    let kind = g.kind();
    let rdx = match kind {
        GateKind::IOPORT | GateKind::MMIO => g.param(),
        GateKind::VMCALL | GateKind::VMMCALL => 0,
        _ => return None,
    };
    Some(match kind {
        GateKind::IOPORT => hw_cross!("out dx, eax", rax, args, rdx),
        GateKind::MMIO => hw_cross!("mov dword ptr [rdx], eax", rax, args, rdx),
        GateKind::VMCALL => hw_cross!("vmcall", rax, args, rdx),
        _ => hw_cross!("vmmcall", rax, args, rdx),
    })
}

/// Whether this environment can execute raw port I/O to the gate's host.
fn hardware_ioport(c: &Ctx<'_>) -> Option<u16> {
    let g = c.pv.gate().register_gate();
    if c.platform.in_process() || g.kind() != GateKind::IOPORT {
        return None;
    }
    u16::try_from(g.param()).ok()
}

fn discovered_gate(c: &mut Ctx<'_>) {
    let info = *c.pv.info();
    let g = c.pv.gate().register_gate();
    c.check(
        g.kind() == info.gate_kind,
        format_args!(
            "the shim calls through gate kind {} but discovery named {}",
            g.kind().0,
            info.gate_kind.0
        ),
    );
    if let Some(bi) = info.boot_info {
        c.check(
            bi.gate_kind == info.gate_kind.0 && bi.gate_param == info.gate_param,
            format_args!(
                "boot info gate {}/{:#x} differs from the gate in use {}/{:#x}",
                bi.gate_kind, bi.gate_param, info.gate_kind.0, info.gate_param
            ),
        );
    }
    c.check(
        info.gate_kind.name().is_some() && info.gate_kind != GateKind::NONE,
        format_args!("gate kind {} is not a v1 gate", info.gate_kind.0),
    );
    if c.platform.in_process() {
        c.check(
            info.gate_kind == GateKind::INPROCESS,
            format_args!(
                "an in-process guest was given gate kind {}",
                info.gate_kind.0
            ),
        );
    }
    // GATE-1 / GATE-7: the same calls give the same answers through the shim's path and a
    // hand-made crossing of the same gate, with the same register encoding.
    let Some(v) = c.expect_ok(c.pv.abi_version(), "BASE.GET_ABI_VERSION") else {
        return;
    };
    let calls: [(CallId, [u64; 6]); 4] = [
        (call::BASE_GET_ABI_VERSION, [0; 6]),
        (call::BASE_GET_VCPU_COUNT, [0; 6]),
        (call::BASE_PROBE_SERVICE, [1, 0, 0, 0, 0, 0]),
        (call::BASE_PROBE_SERVICE, [0x1_0000, 0, 0, 0, 0, 0]),
    ];
    for (id, args) in calls {
        let via_shim = c.raw(id, args);
        let Some(x) = cross(c, u64::from(id.0), args) else {
            c.skip(format_args!(
                "gate kind {} cannot be crossed by hand here",
                g.kind().0
            ));
            return;
        };
        c.check(
            x.rax == via_shim.status.to_reg() && x.rdi == via_shim.value,
            format_args!(
                "call {:#x}: crossing the gate by hand gave ({:#x}, {:#x}), the shim ({:?}, {:#x})",
                id.0, x.rax, x.rdi, via_shim.status, via_shim.value
            ),
        );
    }
    c.check(
        v.major == pvabi::ABI_VERSION.major,
        format_args!("host ABI version {v} through gate {}", g.kind().0),
    );
}

fn ioport(c: &mut Ctx<'_>) {
    let g = c.pv.gate().register_gate();
    if g.kind() != GateKind::IOPORT {
        c.skip(format_args!(
            "the host offers gate kind {}, not IOPORT",
            g.kind().0
        ));
        return;
    }
    let param = c.pv.info().gate_param;
    c.check(
        param >> 16 == 0,
        format_args!("IOPORT gate parameter {param:#x} has bits above 15"),
    );
    let Some(port) = hardware_ioport(c) else {
        c.skip(format_args!("port I/O cannot be executed here"));
        return;
    };
    // Accesses other than 4-byte writes are not calls: 1- and 2-byte writes with a call id
    // in RAX leave RAX and RDI alone, and a 4-byte read returns all ones.
    let sent_rdi = SENTINEL[7];
    let (mut rax_b, mut rdi_b, mut rax_w, mut rdi_w) = (
        u64::from(call::BASE_GET_ABI_VERSION.0),
        sent_rdi,
        u64::from(call::BASE_GET_ABI_VERSION.0),
        sent_rdi,
    );
    // SAFETY: `port` is the pvabi gate port discovery named (boot info or CPUID of this
    // host) and port I/O is permitted in this environment (not in-process). A byte or word
    // write is not a call (GATE-2), and a conforming host changes nothing; a host that
    // wrongly runs it as BASE.GET_ABI_VERSION changes only RAX and RDI, both operands here.
    // No memory is named and no stack is used.
    unsafe {
        asm!(
            "out dx, al",
            inout("rax") rax_b,
            inout("rdi") rdi_b,
            in("dx") port,
            options(nostack, nomem),
        );
        asm!(
            "out dx, ax",
            inout("rax") rax_w,
            inout("rdi") rdi_w,
            in("dx") port,
            options(nostack, nomem),
        );
    }
    c.check(
        rax_b == u64::from(call::BASE_GET_ABI_VERSION.0) && rdi_b == sent_rdi,
        format_args!(
            "a 1-byte write to the gate port was served as a call (RAX {rax_b:#x}, RDI {rdi_b:#x})"
        ),
    );
    c.check(
        rax_w == u64::from(call::BASE_GET_ABI_VERSION.0) && rdi_w == sent_rdi,
        format_args!(
            "a 2-byte write to the gate port was served as a call (RAX {rax_w:#x}, RDI {rdi_w:#x})"
        ),
    );
    let read: u32;
    // SAFETY: as above: reading the host's gate port names no memory; the host answers the
    // read in EAX only.
    unsafe {
        asm!("in eax, dx", out("eax") read, in("dx") port, options(nostack, nomem));
    }
    c.check(
        read == u32::MAX,
        format_args!("a 4-byte read of the gate port returned {read:#x}, not all ones"),
    );
    // The 4-byte write is a call.
    if let Some(x) = cross(c, u64::from(call::BASE_GET_ABI_VERSION.0), [0; 6]) {
        c.check(
            x.rax == 0 && x.rdi == u64::from(pvabi::ABI_VERSION.to_u32()),
            format_args!(
                "out dx, eax of BASE.GET_ABI_VERSION returned ({:#x}, {:#x})",
                x.rax, x.rdi
            ),
        );
    }
}

fn default_port(c: &mut Ctx<'_>) {
    let info = *c.pv.info();
    if info.gate_kind != GateKind::IOPORT {
        c.skip(format_args!(
            "the host offers gate kind {}, not IOPORT",
            info.gate_kind.0
        ));
        return;
    }
    c.check(
        info.gate_param == u64::from(DEFAULT_IOPORT),
        format_args!(
            "IOPORT gate on port {:#x}, not the default {DEFAULT_IOPORT:#x} (a SHOULD: a host with a reason may differ)",
            info.gate_param
        ),
    );
}

fn default_mmio_address(c: &mut Ctx<'_>) {
    let info = *c.pv.info();
    if info.gate_kind != GateKind::MMIO {
        c.skip(format_args!(
            "the host offers gate kind {}, not MMIO",
            info.gate_kind.0
        ));
        return;
    }
    c.check(
        info.gate_param == DEFAULT_MMIO_GATE,
        format_args!(
            "MMIO gate at {:#x}, not the default {DEFAULT_MMIO_GATE:#x} (a SHOULD: a host with a reason may differ)",
            info.gate_param
        ),
    );
}

fn mmio(c: &mut Ctx<'_>) {
    let info = *c.pv.info();
    if info.gate_kind != GateKind::MMIO {
        c.skip(format_args!(
            "the host offers gate kind {}, not MMIO",
            info.gate_kind.0
        ));
        return;
    }
    let gpa = info.gate_param;
    c.check(
        gpa % 4 == 0,
        format_args!("MMIO gate address {gpa:#x} is not 4-byte aligned"),
    );
    let in_mmio = c.pv.boot_memory_map().any(|e: MemMapEntry| {
        MemKind(e.kind) == MemKind::MMIO
            && gpa >= e.base
            && gpa
                .checked_add(4)
                .is_some_and(|end| end - e.base <= e.length)
    });
    c.check(
        in_mmio,
        format_args!("MMIO gate address {gpa:#x} is not inside an MMIO range of the memory map"),
    );
    let addr = c.pv.gate().register_gate().param();
    if c.platform.in_process() || addr == 0 {
        c.skip(format_args!("the MMIO gate cannot be accessed here"));
        return;
    }
    let read: u32;
    let (mut rax_b, mut rdi_b) = (u64::from(call::BASE_GET_ABI_VERSION.0), SENTINEL[7]);
    // SAFETY: `addr` is where discovery's translation maps the host's MMIO gate page (the
    // `PhysReader` contract promises the mapping), 4-byte aligned (checked by the shim when
    // it built the gate). A 4-byte read and a 1-byte write there trap to the host and touch
    // no guest RAM; a host that wrongly serves the byte write as a call changes only RAX
    // and RDI, both operands. No stack is used.
    unsafe {
        asm!(
            "mov eax, dword ptr [{a}]",
            a = in(reg) addr,
            out("eax") read,
            options(nostack),
        );
        asm!(
            "mov byte ptr [{a}], al",
            a = in(reg) addr,
            inout("rax") rax_b,
            inout("rdi") rdi_b,
            options(nostack),
        );
    }
    c.check(
        read == u32::MAX,
        format_args!("a read of the MMIO gate returned {read:#x}, not all ones"),
    );
    c.check(
        rax_b == u64::from(call::BASE_GET_ABI_VERSION.0) && rdi_b == SENTINEL[7],
        format_args!("a 1-byte write to the MMIO gate was served as a call"),
    );
}

/// The CPU vendor string from CPUID leaf 0.
fn cpu_vendor() -> [u8; 12] {
    let [_, b, c, d] = pvabi_guest::discovery::native_cpuid(0);
    let mut v = [0u8; 12];
    for (dst, src) in v.chunks_mut(4).zip([b, d, c]) {
        dst.copy_from_slice(&src.to_le_bytes());
    }
    v
}

fn vmcall(c: &mut Ctx<'_>) {
    let info = *c.pv.info();
    if info.gate_kind != GateKind::VMCALL && info.gate_kind != GateKind::VMMCALL {
        c.skip(format_args!(
            "the host offers gate kind {}, not VMCALL/VMMCALL",
            info.gate_kind.0
        ));
        return;
    }
    c.check(
        info.gate_param == 0,
        format_args!(
            "VMCALL/VMMCALL gate parameter is {:#x}, not 0",
            info.gate_param
        ),
    );
    let vendor = cpu_vendor();
    let want = match &vendor {
        b"GenuineIntel" => Some(GateKind::VMCALL),
        b"AuthenticAMD" | b"HygonGenuine" => Some(GateKind::VMMCALL),
        _ => None,
    };
    if let Some(want) = want {
        c.check(
            info.gate_kind == want,
            format_args!(
                "gate kind {} announced on a CPU whose vendor wants {}",
                info.gate_kind.0, want.0
            ),
        );
    }
    let v = c.pv.abi_version();
    c.expect_ok(v, "BASE.GET_ABI_VERSION through the announced instruction");
}

fn null_port(c: &mut Ctx<'_>) {
    let Some(_) = hardware_ioport(c) else {
        let (kind, env) = (c.pv.info().gate_kind.0, c.platform.name());
        c.skip(format_args!(
            "no IOPORT gate reachable by port I/O here (gate kind {kind}, {env})"
        ));
        return;
    };
    let (mut rax, mut rdi) = (u64::from(call::BASE_GET_ABI_VERSION.0), SENTINEL[7]);
    // SAFETY: discovery found an IOPORT gate, so a pvabi host runs this guest and owns the
    // null port, which GATE-8 says it ignores; port I/O is permitted here (not in-process).
    // A host that wrongly serves the write as a call changes only RAX and RDI, both
    // operands. No memory, no stack.
    unsafe {
        asm!(
            "out dx, eax",
            inout("rax") rax,
            inout("rdi") rdi,
            in("dx") NULL_IOPORT,
            options(nostack, nomem),
        );
    }
    c.check(
        rax == u64::from(call::BASE_GET_ABI_VERSION.0) && rdi == SENTINEL[7],
        format_args!("a write to the null port was served as a call (RAX {rax:#x}, RDI {rdi:#x})"),
    );
    c.expect_ok(c.pv.abi_version(), "a call after a null-port write");
}

fn registers_preserved(c: &mut Ctx<'_>) {
    let calls: [(u64, [u64; 6], &str); 4] = [
        (
            u64::from(call::BASE_GET_ABI_VERSION.0),
            [SENTINEL[7], 0, 0, 0, 0, 0],
            "BASE.GET_ABI_VERSION",
        ),
        (
            u64::from(call::BASE_PROBE_SERVICE.0),
            [
                1,
                SENTINEL[0],
                SENTINEL[1],
                SENTINEL[2],
                SENTINEL[3],
                SENTINEL[4],
            ],
            "BASE.PROBE_SERVICE with junk in unused argument registers",
        ),
        (
            u64::from(CallId::new(ServiceId(0x7eff), 3).0),
            [
                SENTINEL[5],
                SENTINEL[6],
                SENTINEL[7],
                SENTINEL[0],
                SENTINEL[1],
                SENTINEL[2],
            ],
            "an unknown service",
        ),
        (
            u64::from(call::BASE_PROBE_SERVICE.0),
            [
                u64::MAX,
                SENTINEL[3],
                SENTINEL[4],
                SENTINEL[5],
                SENTINEL[6],
                SENTINEL[7],
            ],
            "BASE.PROBE_SERVICE(u64::MAX) (fails)",
        ),
    ];
    for (rax, args, what) in calls {
        let Some(x) = cross(c, rax, args) else {
            let kind = c.pv.info().gate_kind.0;
            c.skip(format_args!(
                "gate kind {kind} cannot be crossed by hand here"
            ));
            return;
        };
        let changed = x.changed();
        c.check(
            changed.is_none(),
            format_args!("{what}: register (name, before, after) changed: {changed:x?}"),
        );
    }
}

fn malformed_calls_return(c: &mut Ctx<'_>) {
    let Ok(me) = c.pv.vcpu_id() else {
        c.check(false, format_args!("BASE.GET_VCPU_ID failed"));
        return;
    };
    let end = c.ram_end();
    let bad: [(CallId, [u64; 6], Status); 6] = [
        (CallId(0xffff_ffff), [u64::MAX; 6], Status::NOT_SUPPORTED),
        (
            CallId::new(ServiceId::BASE, 0xffff),
            [0; 6],
            Status::NOT_SUPPORTED,
        ),
        (
            call::BASE_PROBE_SERVICE,
            [u64::MAX, 0, 0, 0, 0, 0],
            Status::INVALID_PARAM,
        ),
        (
            call::CONSOLE_WRITE,
            [end.saturating_add(0x10_0000), 16, 0, 0, 0, 0],
            Status::INVALID_ADDRESS,
        ),
        (
            call::CONSOLE_WRITE,
            [u64::MAX - 7, 64, 0, 0, 0, 0],
            Status::INVALID_ADDRESS,
        ),
        (
            call::CONSOLE_WRITE_BYTE,
            [1 << 63, 0, 0, 0, 0, 0],
            Status::INVALID_PARAM,
        ),
    ];
    for (id, args, want) in bad {
        let r = c.raw(id, args);
        c.expect_status(r, want, "a malformed call");
        // The guest is still running on the same vCPU, with no upcall or fault taken: the
        // next call answers normally.
        let again = c.pv.vcpu_id();
        c.check(
            again == Ok(me),
            format_args!(
                "after malformed call {:#x}: BASE.GET_VCPU_ID {again:?}",
                id.0
            ),
        );
    }
    if let Some(x) = cross(c, 1 << 40, [0; 6]) {
        c.check(
            x.rax == Status::NOT_SUPPORTED.to_reg(),
            format_args!("RAX with bit 40 set answered {:#x}", x.rax),
        );
    }
}
