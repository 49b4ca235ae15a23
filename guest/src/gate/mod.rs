//! Gates: how a call crosses into the hypervisor (spec chapter "Gates", `GATE-*`, and the
//! register convention `CONV-8`, see [`pvabi::gate`]).
//!
//! This module holds every `unsafe` block of the crate: the gate instructions, the in-process
//! gate's function call, volatile reads of guest-physical memory ([`phys`]), the upcall entry
//! code ([`upcall_entry`]) and the two ways to obtain `&'static mut` guest memory without
//! `static mut` ([`arena`]). Every other module is checked with `deny(unsafe_code)`.
//!
//! ## Register convention (x86_64, `CONV-8`)
//! RAX = call id on entry, status (sign-extended) on return; RDI, RSI, R8, R9, R10, R11 =
//! arguments 0..5; RDI = value on return; RDX = gate parameter (the I/O port for the port gate,
//! the trigger address for the MMIO gate). Rust reserves RBX on x86_64 (LLVM uses it as a base
//! pointer), which is why the convention never names it.
//!
//! The convention says the host preserves RSI, R8..R11 and RDX. The asm blocks below still
//! declare them clobbered (`=> _`): the shim does not stake the guest's memory safety on the
//! host keeping that promise, and the cost is a few register moves.
//!
//! ## The call path
//! A wrapper's call through the I/O-port gate is inlined down to the `out`: the handle keeps
//! the port in one word beside its gate, so a call is one comparison, the argument registers
//! loaded straight from the wrapper's values (no register file in memory, no SSE stores), the
//! `out`, and a status test on RAX. Every other gate (MMIO, `vmcall`, `vmmcall`, in-process,
//! the ring) is one out-of-line call away.
//!
//! ## The in-process gate (`GATE-7`)
//! A model host that runs guest code on its own threads (the mock) is entered through a plain
//! function call: [`InProcessFn`] with a context word and a pointer to [`InProcessRegs`], the
//! same register file as the hardware gates (`rax` = call id in, status out; `args[0..6]` =
//! RDI, RSI, R8, R9, R10, R11; value out in `args[0]`).

pub mod arena;
pub mod phys;
pub mod upcall_entry;

use core::arch::asm;
use pvabi::{CallId, GateKind, Regs, Ret, Status};

/// Function a model host (the mock) provides as its in-process gate.
///
/// The host reads the call from `*regs` and writes the answer back into it, mirroring the
/// hardware register convention: on entry `rax` holds the call id and `args` the six argument
/// registers (RDI, RSI, R8, R9, R10, R11); on return `rax` holds the status, sign-extended, and
/// `args[0]` (RDI) the value. `ctx` is the host's context word, passed back unchanged.
///
/// # Safety
///
/// The shim calls it with a `regs` pointer that is valid for reads and writes of one
/// [`InProcessRegs`] for the duration of the call, and with the `ctx` given to
/// [`InProcessGate::new`]; the function must not keep the pointer after returning.
pub type InProcessFn = unsafe extern "C" fn(ctx: usize, regs: *mut InProcessRegs);

/// The register file an [`InProcessFn`] reads and writes (`#[repr(C)]`, 56 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct InProcessRegs {
    /// RAX: call id on entry (bits 31..0), status (sign-extended) on return.
    pub rax: u64,
    /// RDI, RSI, R8, R9, R10, R11 on entry; `args[0]` (RDI) is the value on return.
    pub args: [u64; 6],
}

static_assertions::const_assert_eq!(core::mem::size_of::<InProcessRegs>(), 56);
static_assertions::const_assert_eq!(core::mem::offset_of!(InProcessRegs, args), 8);

/// An in-process gate: a host function and its context word.
///
/// # Invariants
///
/// Calling `func(ctx, regs)` with a valid `regs` pointer is sound for every call id and every
/// argument value (guaranteed by the caller of [`InProcessGate::new`]).
#[derive(Clone, Copy)]
pub struct InProcessGate {
    func: InProcessFn,
    ctx: usize,
}

impl InProcessGate {
    /// Wraps a host's gate function and context.
    ///
    /// # Safety
    ///
    /// For as long as any copy of this gate (or a [`crate::Pvabi`] made from it) exists,
    /// `func(ctx, regs)` must be sound to call from any thread with any register values, and
    /// any guest-physical address the host dereferences on behalf of a call must be checked by
    /// the host against its own guest-memory mapping (the guest is untrusted).
    pub const unsafe fn new(func: InProcessFn, ctx: usize) -> Self {
        Self { func, ctx }
    }

    /// The host function.
    pub fn func(&self) -> InProcessFn {
        self.func
    }

    /// The host's context word.
    pub fn ctx(&self) -> usize {
        self.ctx
    }

    fn call_raw(&self, rax: u64, args: [u64; 6]) -> (u64, u64) {
        let mut r = InProcessRegs { rax, args };
        // SAFETY: `&mut r` is a valid, exclusive pointer to an `InProcessRegs` that lives
        // across the call and is not used through any other path until the call returns; the
        // struct invariant (from `InProcessGate::new`'s contract) makes calling `func` with
        // `ctx` and any register values sound.
        unsafe { (self.func)(self.ctx, &mut r) };
        let [value, ..] = r.args;
        (r.rax, value)
    }
}

impl core::fmt::Debug for InProcessGate {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("InProcessGate")
            .field("func", &(self.func as usize as *const ()))
            .field("ctx", &self.ctx)
            .finish()
    }
}

/// A register gate: one instruction (or the in-process call) per call.
///
/// # Invariants
///
/// A hardware variant exists only if discovery (or the caller of an `unsafe` constructor)
/// established that the hypervisor running this code answers pvabi calls through it: the
/// port is the host's pvabi port, the MMIO address is mapped to the host's trigger page, and
/// `vmcall`/`vmmcall` are intercepted by a pvabi host.
#[derive(Clone, Copy, Debug)]
pub struct RegisterGate(Kind);

#[derive(Clone, Copy, Debug)]
enum Kind {
    IoPort(u16),
    Mmio(usize),
    Vmcall,
    Vmmcall,
    InProcess(InProcessGate),
    /// No register gate (the Xen transport, where the ring is the only gate): every call
    /// fails with INVALID_PARAM, the status `RING-6` gives the calls a ring refuses.
    None,
}

impl RegisterGate {
    /// The I/O-port gate on `port` (`GATE-2`).
    ///
    /// # Safety
    ///
    /// `port` must be the pvabi gate port of the hypervisor running this code, and the code
    /// must be allowed to execute `out` (ring 0, or IOPL/the I/O bitmap permitting it).
    pub const unsafe fn io_port(port: u16) -> Self {
        Self(Kind::IoPort(port))
    }

    /// The MMIO gate whose trigger word is mapped at virtual address `addr` (`GATE-4`).
    ///
    /// # Safety
    ///
    /// `addr` must be 4-byte aligned and mapped (uncached) to the host's MMIO gate page, so
    /// that a 32-bit store to it traps to the host and touches no guest RAM.
    pub const unsafe fn mmio(addr: usize) -> Self {
        Self(Kind::Mmio(addr))
    }

    /// The `vmcall` gate (`GATE-6`, Intel VMX).
    ///
    /// # Safety
    ///
    /// A pvabi host must intercept `vmcall` on this CPU.
    pub const unsafe fn vmcall() -> Self {
        Self(Kind::Vmcall)
    }

    /// The `vmmcall` gate (`GATE-6`, AMD SVM).
    ///
    /// # Safety
    ///
    /// A pvabi host must intercept `vmmcall` on this CPU.
    pub const unsafe fn vmmcall() -> Self {
        Self(Kind::Vmmcall)
    }

    /// The in-process gate of a model host (`GATE-7`).
    pub const fn in_process(gate: InProcessGate) -> Self {
        Self(Kind::InProcess(gate))
    }

    /// No register gate: what [`crate::Gate::register_gate`] returns on a transport whose only
    /// gate is a ring (the Xen transport, spec appendix B). Every call through it fails with
    /// INVALID_PARAM without leaving the guest; [`RegisterGate::kind`] says
    /// [`GateKind::NONE`].
    pub const fn none() -> Self {
        Self(Kind::None)
    }

    /// Builds the gate discovery names. The kind and parameter come from the host's own
    /// handoff (boot info or the CPUID signature leaves), the only authority on the gate, which
    /// is what the hardware variants' invariant requires; `mmio_addr` is where the caller's
    /// translation maps the MMIO trigger (a promise of [`phys::PhysReader::new`]).
    pub(crate) fn from_discovery(
        kind: GateKind,
        param: u64,
        mmio_addr: Option<usize>,
        in_process: Option<InProcessGate>,
    ) -> Option<Self> {
        match kind {
            GateKind::IOPORT => u16::try_from(param).ok().map(|p| Self(Kind::IoPort(p))),
            GateKind::MMIO => match mmio_addr {
                Some(a) if a % 4 == 0 => Some(Self(Kind::Mmio(a))),
                _ => None,
            },
            GateKind::VMCALL => Some(Self(Kind::Vmcall)),
            GateKind::VMMCALL => Some(Self(Kind::Vmmcall)),
            GateKind::INPROCESS => in_process.map(|g| Self(Kind::InProcess(g))),
            _ => None,
        }
    }

    /// The kind of this gate as discovery names it.
    pub fn kind(&self) -> GateKind {
        match self.0 {
            Kind::IoPort(_) => GateKind::IOPORT,
            Kind::Mmio(_) => GateKind::MMIO,
            Kind::Vmcall => GateKind::VMCALL,
            Kind::Vmmcall => GateKind::VMMCALL,
            Kind::InProcess(_) => GateKind::INPROCESS,
            Kind::None => GateKind::NONE,
        }
    }

    /// The gate parameter: the port, the MMIO trigger address, or 0.
    pub fn param(&self) -> u64 {
        match self.0 {
            Kind::IoPort(p) => u64::from(p),
            Kind::Mmio(a) => a as u64,
            _ => 0,
        }
    }

    /// The in-process gate, if this is one.
    pub fn as_in_process(&self) -> Option<InProcessGate> {
        match self.0 {
            Kind::InProcess(g) => Some(g),
            _ => None,
        }
    }

    /// Whether `out` instructions reach the host (so a ring doorbell can be rung). False for
    /// the in-process gate, whose guest code runs as an ordinary host thread, and for
    /// [`RegisterGate::none`].
    pub fn can_ring_doorbell(&self) -> bool {
        !matches!(self.0, Kind::InProcess(_) | Kind::None)
    }

    /// Makes one call (crate-internal, safe signature).
    ///
    /// Callers in this crate pass guest-physical addresses only when they were derived from a
    /// live Rust borrow of the named memory (through [`crate::Translate`]) that outlives the
    /// call and permits the access the call makes, or from a `'static` shared area whose
    /// fields are atomics. This is the crate's internal discipline that the public wrappers
    /// uphold; external callers use [`RegisterGate::call_unchecked`].
    #[inline(always)]
    pub(crate) fn call(&self, regs: &Regs) -> Ret {
        let (rax, rdi) = self.call_raw(regs.rax, regs.args);
        Ret {
            status: Status::from_reg(rax),
            value: rdi,
        }
    }

    /// Makes one call from raw entry registers and returns the raw RAX and RDI the host left
    /// (same discipline as [`RegisterGate::call`]).
    ///
    /// The I/O-port gate is inlined into the caller: the arguments go straight into their
    /// registers and the answer comes straight out of RAX and RDI, with no register file in
    /// memory. Every other gate is one out-of-line call away.
    #[inline(always)]
    pub(crate) fn call_raw(&self, rax: u64, args: [u64; 6]) -> (u64, u64) {
        let [a0, a1, a2, a3, a4, a5] = args;
        match self.0 {
            // SAFETY: the type invariant says `port` is the pvabi port of the hypervisor
            // running this code and that `out` is permitted, which is `port_call`'s contract.
            Kind::IoPort(port) => unsafe { port_call(port, rax, a0, a1, a2, a3, a4, a5) },
            _ => self.call_raw_other(rax, a0, a1, a2, a3, a4, a5),
        }
    }

    /// [`RegisterGate::call_raw`] for every gate but the I/O-port gate, out of line so that
    /// the port gate's call sites stay a few instructions long.
    #[inline(never)]
    #[allow(clippy::too_many_arguments)] // the seven registers of the convention, in registers
    fn call_raw_other(
        &self,
        rax: u64,
        a0: u64,
        a1: u64,
        a2: u64,
        a3: u64,
        a4: u64,
        a5: u64,
    ) -> (u64, u64) {
        match self.0 {
            Kind::InProcess(g) => g.call_raw(rax, [a0, a1, a2, a3, a4, a5]),
            Kind::None => (Status::INVALID_PARAM.to_reg(), 0),
            // SAFETY: as in `call_raw`.
            Kind::IoPort(port) => unsafe { port_call(port, rax, a0, a1, a2, a3, a4, a5) },
            Kind::Mmio(addr) => {
                let mut rax = rax;
                let mut rdi = a0;
                // SAFETY: the type invariant says `addr` is 4-byte aligned and mapped to the
                // host's MMIO gate page, so the 32-bit store traps to the host and writes no
                // guest RAM. The host then acts as for the port gate: only the listed
                // registers change, and only memory the caller borrowed for the call (no
                // `nomem`, so the compiler assumes memory may change). No stack use.
                unsafe {
                    asm!(
                        "mov dword ptr [rdx], eax",
                        inout("rax") rax,
                        inout("rdi") rdi,
                        inout("rsi") a1 => _,
                        inout("r8") a2 => _,
                        inout("r9") a3 => _,
                        inout("r10") a4 => _,
                        inout("r11") a5 => _,
                        inout("rdx") addr => _,
                        options(nostack),
                    );
                }
                (rax, rdi)
            }
            Kind::Vmcall => {
                let mut rax = rax;
                let mut rdi = a0;
                // SAFETY: the type invariant says a pvabi host intercepts `vmcall` here; it
                // changes only the listed registers and memory the caller borrowed for the
                // call (no `nomem`). RDX carries no parameter for this gate and is zeroed.
                unsafe {
                    asm!(
                        "vmcall",
                        inout("rax") rax,
                        inout("rdi") rdi,
                        inout("rsi") a1 => _,
                        inout("r8") a2 => _,
                        inout("r9") a3 => _,
                        inout("r10") a4 => _,
                        inout("r11") a5 => _,
                        inout("rdx") 0u64 => _,
                        options(nostack),
                    );
                }
                (rax, rdi)
            }
            Kind::Vmmcall => {
                let mut rax = rax;
                let mut rdi = a0;
                // SAFETY: as for `vmcall`: a pvabi host intercepts `vmmcall` (type
                // invariant), and only the listed registers and caller-borrowed memory change.
                unsafe {
                    asm!(
                        "vmmcall",
                        inout("rax") rax,
                        inout("rdi") rdi,
                        inout("rsi") a1 => _,
                        inout("r8") a2 => _,
                        inout("r9") a3 => _,
                        inout("r10") a4 => _,
                        inout("r11") a5 => _,
                        inout("rdx") 0u64 => _,
                        options(nostack),
                    );
                }
                (rax, rdi)
            }
        }
    }

    /// Writes the ring doorbell (`RING-4`: an `out` of any width and value to `port`). The
    /// shim uses a 1-byte `out dx, al`: a wider access would also need permission for the
    /// ports above the doorbell, which a ring-3 guest's I/O bitmap need not grant. Does
    /// nothing for the in-process gate (see [`RegisterGate::can_ring_doorbell`]).
    pub(crate) fn doorbell(&self, port: u16) {
        if !self.can_ring_doorbell() {
            return;
        }
        // SAFETY: a hardware gate exists only under a pvabi host (type invariant), and `port`
        // is the doorbell port that host returned from BASE.RING_REGISTER; the write carries
        // no memory operand, uses no stack, and changes no register (flags assumed clobbered).
        unsafe {
            asm!(
                "out dx, al",
                in("al") 0u8,
                in("dx") port,
                options(nostack, nomem),
            );
        }
    }

    /// Makes one raw call through this gate.
    ///
    /// # Safety
    ///
    /// Every guest-physical address among the arguments must name memory that the host may
    /// access as the call's definition says (read and/or write) for the duration of the call
    /// (and, for registrations, until unregistered), and that no live Rust reference
    /// conflicts with (a `&T` to memory the host writes, or any reference to memory the host
    /// keeps using after the call, unless the memory is atomics or `UnsafeCell`).
    #[inline]
    pub unsafe fn call_unchecked(&self, call: CallId, args: [u64; 6]) -> Ret {
        self.call(&Regs::new(call, args))
    }
}

/// The port of an I/O-port register gate, or none, in one word that the call path tests with
/// one comparison (no enum dispatch between a call and its `out`).
///
/// # Invariants
///
/// The word holds a value up to `0xFFFF` only if it is the port of a [`RegisterGate`] of the
/// I/O-port kind (whose own invariant then holds for it); otherwise it is [`PortGate::NONE`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct PortGate(u32);

impl PortGate {
    /// No I/O-port gate.
    const NONE: u32 = 0x1_0000;

    /// The port of `gate` when calls go straight through an I/O-port register gate.
    pub(crate) fn of(gate: &crate::Gate) -> Self {
        match gate {
            crate::Gate::Register(RegisterGate(Kind::IoPort(port))) => Self(u32::from(*port)),
            _ => Self(Self::NONE),
        }
    }
}

impl crate::Pvabi {
    /// One call from raw entry registers through this handle's gate; returns the raw RAX and
    /// RDI (same discipline as [`RegisterGate::call`]). The I/O-port gate is inlined down to
    /// the `out`, with the arguments straight in their registers; other gates are one call
    /// away.
    #[inline(always)]
    pub(crate) fn call_raw(&self, rax: u64, args: [u64; 6]) -> (u64, u64) {
        let [a0, a1, a2, a3, a4, a5] = args;
        match u16::try_from(self.port_gate.0) {
            // SAFETY: `PortGate`'s invariant: a value that fits 16 bits is the port of an
            // I/O-port `RegisterGate`, whose invariant is `port_call`'s contract on the port;
            // the caller keeps the discipline on guest-physical arguments.
            Ok(port) => unsafe { port_call(port, rax, a0, a1, a2, a3, a4, a5) },
            Err(_) => self.gate.call_raw_slow(rax, a0, a1, a2, a3, a4, a5),
        }
    }
}

/// One call through the I/O-port gate: `out dx, eax` on `port` with the registers of `CONV-8`;
/// returns the RAX (status) and RDI (value) the host left.
///
/// # Safety
///
/// `port` must be the pvabi gate port of the hypervisor running this code, the code must be
/// allowed to execute `out` to it, and every guest-physical address among the arguments must
/// name memory the host may access as the call defines, with no conflicting live Rust
/// reference, for the duration of the call (the contract of [`RegisterGate::io_port`] and
/// [`RegisterGate::call_unchecked`]).
#[inline(always)]
#[allow(clippy::too_many_arguments)] // the seven registers of the convention, in registers
unsafe fn port_call(
    port: u16,
    rax: u64,
    a0: u64,
    a1: u64,
    a2: u64,
    a3: u64,
    a4: u64,
    a5: u64,
) -> (u64, u64) {
    let mut rax = rax;
    let mut rdi = a0;
    // SAFETY: by this function's contract `port` is the pvabi port of the hypervisor running
    // us and `out` is permitted. `out dx, eax` traps to the host, which reads and writes only
    // the registers of the convention (all listed here as operands or clobbers) and the guest
    // memory the call's arguments name; by this function's contract such memory may be
    // accessed for the call, and no `nomem`/`readonly` option lets the compiler cache it
    // across the instruction. The instruction does not use the stack (`nostack`); flags are
    // treated as clobbered (the default).
    unsafe {
        asm!(
            "out dx, eax",
            inout("rax") rax,
            inout("rdi") rdi,
            inout("rsi") a1 => _,
            inout("r8") a2 => _,
            inout("r9") a3 => _,
            inout("r10") a4 => _,
            inout("r11") a5 => _,
            inout("rdx") u64::from(port) => _,
            options(nostack),
        );
    }
    (rax, rdi)
}

/// Reads the time-stamp counter.
///
/// In a ring-3 guest whose CR4.TSD is set this faults; the clock service needs RDTSC.
pub fn rdtsc() -> u64 {
    // SAFETY: `rdtsc` reads a counter; it touches no memory and no register besides its
    // outputs (handled by the intrinsic). The intrinsic is `unsafe` only for target-feature
    // reasons; RDTSC is part of the x86_64 baseline.
    unsafe { core::arch::x86_64::_rdtsc() }
}

impl crate::Pvabi {
    /// Makes any call with raw arguments through the current gate: an escape hatch for
    /// vendor services and calls this crate does not wrap.
    ///
    /// # Safety
    ///
    /// As [`RegisterGate::call_unchecked`]: every guest-physical address among the arguments
    /// must name memory the host may access as the call defines, with no conflicting live
    /// Rust reference, for the duration of the call (or until unregistered); a code address
    /// (VCPU.START, EVENT.SET_UPCALL) must be a valid entry point for how the host enters it.
    #[inline]
    pub unsafe fn call_unchecked(&self, id: CallId, args: [u64; 6]) -> Ret {
        self.call_ret(id, args)
    }
}
