//! Upcall entry code and the small global state it needs (spec `EVT-10`..`EVT-14`).
//!
//! Two assembly entries are defined with `global_asm!` (no naked functions):
//!
//! * `pvabi_upcall_vector_entry` — an interrupt handler for ring-0 guests (vector mode). Point
//!   an IDT gate (interrupt gate, so IF is cleared) at it. It saves the caller-saved registers
//!   and the x87/SSE state (`fxsave64`), calls [`crate::upcall::dispatch_pending`] for the
//!   current vCPU, restores and `iretq`s. It sends no EOI: with an in-kernel local APIC the
//!   guest's handler must EOI; with a VMM that injects the vector directly none is needed.
//!   The interrupted code must not use a red zone (kernel code is built without one).
//! * `pvabi_upcall_callback_entry` — the callback target for fully paravirtual ring-3 guests.
//!   The host enters it with RDI = frame GPA, RSI = vCPU id and RSP = (interrupted RSP − 128)
//!   rounded down to 16, minus 8, the interrupted context saved in the event page. It saves
//!   the x87/SSE state, calls the Rust dispatcher, restores it, and issues
//!   VCPU.UPCALL_RETURN through the installed register gate, which resumes the saved context
//!   and never returns. If the host returns from it anyway, the shim reports a crash with
//!   POWER.SHUTDOWN(CRASH) and spins.
//!
//! * `pvabi_vcpu_return_trap` — the return address [`crate::Pvabi::vcpu_start`] puts on a new
//!   vCPU's stack: if the entry function returns, the vCPU stops (VCPU.STOP, or a power-off
//!   when it is the last one).
//!
//! Neither entry can work through the in-process gate (guest code there is a host thread); an
//! in-process guest calls [`crate::upcall::dispatch_pending`] itself.

use super::{InProcessFn, InProcessGate, Kind, RegisterGate};
use crate::shared::EventPageShared;
use crate::upcall::{PortHandler, UpcallInfo};
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use pvabi::{GateKind, Regs};

static GATE_KIND: AtomicU32 = AtomicU32::new(0);
static GATE_PARAM: AtomicU64 = AtomicU64::new(0);
static INPROC_FN: AtomicUsize = AtomicUsize::new(0);
static INPROC_CTX: AtomicUsize = AtomicUsize::new(0);
static EVENTS: AtomicPtr<EventPageShared> = AtomicPtr::new(core::ptr::null_mut());
static HANDLER: AtomicUsize = AtomicUsize::new(0);
static VCPU_COUNT: AtomicU32 = AtomicU32::new(0);
static EXIT_GATE_KIND: AtomicU32 = AtomicU32::new(0);
static EXIT_GATE_PARAM: AtomicU64 = AtomicU64::new(0);

/// Remembers the (hardware) gate a started vCPU uses to stop when its entry returns.
pub(crate) fn remember_exit_gate(gate: RegisterGate) {
    if gate.can_ring_doorbell() {
        EXIT_GATE_PARAM.store(gate.param(), Ordering::Relaxed);
        EXIT_GATE_KIND.store(gate.kind().0, Ordering::Release);
    }
}

/// Rebuilds a hardware register gate stored as (kind, param). Only values stored from a
/// `RegisterGate` of that kind reach here, so the type invariant carries over.
fn hardware_gate(kind: GateKind, param: u64) -> Option<RegisterGate> {
    Some(match kind {
        GateKind::IOPORT => RegisterGate(Kind::IoPort(u16::try_from(param).ok()?)),
        GateKind::MMIO => RegisterGate(Kind::Mmio(usize::try_from(param).ok()?)),
        GateKind::VMCALL => RegisterGate(Kind::Vmcall),
        GateKind::VMMCALL => RegisterGate(Kind::Vmmcall),
        _ => return None,
    })
}

/// Where a started vCPU goes when its entry function returns (its stack's return address):
/// VCPU.STOP, or POWER.SHUTDOWN(POWEROFF, 0) when it is the last running vCPU.
extern "C" fn vcpu_returned() -> ! {
    let kind = GateKind(EXIT_GATE_KIND.load(Ordering::Acquire));
    if let Some(g) = hardware_gate(kind, EXIT_GATE_PARAM.load(Ordering::Relaxed)) {
        let _ = g.call(&Regs::new(pvabi::call::VCPU_STOP, [0; 6]));
        let _ = g.call(&Regs::new(
            pvabi::call::POWER_SHUTDOWN,
            [
                u64::from(pvabi::power::ShutdownReason::POWEROFF.0),
                0,
                0,
                0,
                0,
                0,
            ],
        ));
    }
    loop {
        core::hint::spin_loop();
    }
}

/// Publishes the gate, event page and handler the entries use. The gate and the vCPU count
/// are written first, then the event page (release), then the handler (release); readers
/// load the handler, then the page (acquire), so whatever they see was published whole.
/// Meant to be called once, before upcalls are enabled; calling it again while upcalls are
/// being taken may let one upcall see the old handler.
pub(crate) fn install(
    gate: RegisterGate,
    events: &'static EventPageShared,
    handler: PortHandler,
    vcpu_count: u32,
) {
    HANDLER.store(0, Ordering::Release);
    GATE_KIND.store(gate.kind().0, Ordering::Relaxed);
    GATE_PARAM.store(gate.param(), Ordering::Relaxed);
    if let Some(g) = gate.as_in_process() {
        INPROC_FN.store(g.func() as usize, Ordering::Relaxed);
        INPROC_CTX.store(g.ctx(), Ordering::Relaxed);
    }
    VCPU_COUNT.store(vcpu_count, Ordering::Relaxed);
    EVENTS.store(
        events as *const EventPageShared as *mut EventPageShared,
        Ordering::Release,
    );
    HANDLER.store(handler as usize, Ordering::Release);
}

/// Removes the handler; the gate and event page stay, so the entries still acknowledge
/// events and return from callbacks.
pub(crate) fn uninstall() {
    HANDLER.store(0, Ordering::Release);
}

/// What the entries need, read from the globals.
pub(crate) struct Installed {
    pub(crate) gate: RegisterGate,
    pub(crate) events: &'static EventPageShared,
    pub(crate) handler: Option<PortHandler>,
    pub(crate) vcpu_count: u32,
}

/// The published state, if [`install`] ran.
pub(crate) fn installed() -> Option<Installed> {
    let h = HANDLER.load(Ordering::Acquire);
    let ev = EVENTS.load(Ordering::Acquire);
    // SAFETY: `EVENTS` is null until `install` stores a pointer made from a
    // `&'static EventPageShared` (`as_ref` maps null to `None`), so a non-null value is
    // aligned and valid for shared access forever; `EventPageShared` is made of atomics, so
    // shared references to it are fine while the host writes it.
    let events: &'static EventPageShared = unsafe { ev.as_ref() }?;
    let handler = if h == 0 {
        None
    } else {
        // SAFETY: `HANDLER` is only ever written by `install`, with `handler as usize` for a
        // valid `PortHandler` (a safe `fn` pointer, never null), or with 0, excluded here. A
        // `fn` pointer and `usize` have the same size, and the value is such a pointer.
        Some(unsafe { core::mem::transmute::<usize, PortHandler>(h) })
    };
    let kind = GateKind(GATE_KIND.load(Ordering::Relaxed));
    let param = GATE_PARAM.load(Ordering::Relaxed);
    let gate = match kind {
        GateKind::INPROCESS => {
            let f = INPROC_FN.load(Ordering::Relaxed);
            if f == 0 {
                return None;
            }
            // SAFETY: `INPROC_FN` is only written by `install`, from `g.func() as usize` of a
            // valid `InProcessGate` (non-null `InProcessFn`), checked nonzero above; sizes
            // match.
            let func = unsafe { core::mem::transmute::<usize, InProcessFn>(f) };
            // SAFETY: the pair (func, ctx) is the one of an `InProcessGate` whose creator
            // promised `InProcessGate::new`'s contract; re-wrapping it restores that gate.
            RegisterGate(Kind::InProcess(unsafe {
                InProcessGate::new(func, INPROC_CTX.load(Ordering::Relaxed))
            }))
        }
        _ => hardware_gate(kind, param)?,
    };
    // A hardware gate here is a copy of the `RegisterGate` given to `install`, so its
    // invariant holds.
    Some(Installed {
        gate,
        events,
        handler,
        vcpu_count: VCPU_COUNT.load(Ordering::Relaxed),
    })
}

/// Called by `pvabi_upcall_vector_entry` with the interrupted state saved.
extern "C" fn vector_dispatch() {
    crate::upcall::dispatch_from_vector();
}

/// The gate kind and parameter the callback entry uses for VCPU.UPCALL_RETURN, returned in
/// RAX:RDX (SysV: a 16-byte struct of integers).
#[repr(C)]
struct ReturnGate {
    kind: u64,
    param: u64,
}

/// Called by `pvabi_upcall_callback_entry`: dispatch, then tell the entry how to return.
extern "C" fn callback_dispatch(frame_gpa: u64, vcpu: u64) -> ReturnGate {
    let info = UpcallInfo {
        vcpu: u32::try_from(vcpu).unwrap_or(u32::MAX),
        mode: pvabi::event::UpcallMode::CALLBACK,
        frame_gpa: Some(frame_gpa),
    };
    crate::upcall::dispatch_with(&info);
    match installed() {
        Some(i) if i.gate.can_ring_doorbell() => ReturnGate {
            kind: u64::from(i.gate.kind().0),
            param: i.gate.param(),
        },
        _ => ReturnGate { kind: 0, param: 0 },
    }
}

/// Called by the callback entry when VCPU.UPCALL_RETURN returned (`status` in RDI): the saved
/// context cannot be resumed, so report a crash and stop.
extern "C" fn upcall_return_failed(status: u64) -> ! {
    if let Some(i) = installed() {
        let _ = i.gate.call(&Regs::new(
            pvabi::call::POWER_SHUTDOWN,
            [
                u64::from(pvabi::power::ShutdownReason::CRASH.0),
                status,
                0,
                0,
                0,
                0,
            ],
        ));
    }
    loop {
        core::hint::spin_loop();
    }
}

core::arch::global_asm!(
    ".pushsection .text.pvabi_upcall,\"ax\",@progbits",
    // ---- vector mode (ring 0): an interrupt gate points here --------------------------
    ".globl pvabi_upcall_vector_entry",
    ".type pvabi_upcall_vector_entry,@function",
    ".p2align 4",
    "pvabi_upcall_vector_entry:",
    // The CPU pushed SS, RSP, RFLAGS, CS, RIP after aligning RSP to 16: RSP = 8 (mod 16).
    "push rax",
    "push rcx",
    "push rdx",
    "push rsi",
    "push rdi",
    "push r8",
    "push r9",
    "push r10",
    "push r11",
    // 9 pushes: RSP = 0 (mod 16), as fxsave64 and the call need.
    "sub rsp, 512",
    "fxsave64 [rsp]",
    "cld",
    "call {vector}",
    "fxrstor64 [rsp]",
    "add rsp, 512",
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
    ".size pvabi_upcall_vector_entry, . - pvabi_upcall_vector_entry",
    // ---- callback mode (ring 3, fully paravirtual) --------------------------------------
    ".globl pvabi_upcall_callback_entry",
    ".type pvabi_upcall_callback_entry,@function",
    ".p2align 4",
    "pvabi_upcall_callback_entry:",
    // RSP = 8 (mod 16) on entry (spec EVT-12); RDI = frame GPA, RSI = vCPU id. Every
    // caller-saved GPR of the interrupted context is in the frame; callee-saved ones are
    // preserved by the Rust code; x87/SSE state is saved here.
    "sub rsp, 520",
    "fxsave64 [rsp]",
    "cld",
    "call {callback}",
    "fxrstor64 [rsp]",
    // RAX = gate kind, RDX = gate parameter.
    "mov r11, rax",
    "mov eax, {upcall_return}",
    "cmp r11, {ioport}",
    "je 2f",
    "cmp r11, {mmio}",
    "je 3f",
    "cmp r11, {vmcall}",
    "je 4f",
    "cmp r11, {vmmcall}",
    "je 5f",
    "mov rax, -13",
    "jmp 6f",
    "2:",
    "out dx, eax",
    "jmp 6f",
    "3:",
    "mov dword ptr [rdx], eax",
    "jmp 6f",
    "4:",
    "vmcall",
    "jmp 6f",
    "5:",
    "vmmcall",
    "6:",
    // VCPU.UPCALL_RETURN came back: RAX = status. RSP is still 0 (mod 16).
    "mov rdi, rax",
    "call {failed}",
    "ud2",
    ".size pvabi_upcall_callback_entry, . - pvabi_upcall_callback_entry",
    // ---- return address of a started vCPU's entry function ------------------------------
    ".globl pvabi_vcpu_return_trap",
    ".type pvabi_vcpu_return_trap,@function",
    ".p2align 4",
    "pvabi_vcpu_return_trap:",
    "and rsp, -16",
    "call {returned}",
    "ud2",
    ".size pvabi_vcpu_return_trap, . - pvabi_vcpu_return_trap",
    ".popsection",
    vector = sym vector_dispatch,
    callback = sym callback_dispatch,
    failed = sym upcall_return_failed,
    returned = sym vcpu_returned,
    upcall_return = const pvabi::call::VCPU_UPCALL_RETURN.0,
    ioport = const GateKind::IOPORT.0,
    mmio = const GateKind::MMIO.0,
    vmcall = const GateKind::VMCALL.0,
    vmmcall = const GateKind::VMMCALL.0,
);

extern "C" {
    fn pvabi_upcall_vector_entry();
    fn pvabi_upcall_callback_entry();
    fn pvabi_vcpu_return_trap();
}

/// Address of `pvabi_vcpu_return_trap`, the return address placed on a started vCPU's stack.
pub fn vcpu_return_trap_address() -> usize {
    pvabi_vcpu_return_trap as *const () as usize
}

/// Address of `pvabi_upcall_vector_entry`, for an IDT interrupt gate (vector mode).
pub fn vector_entry_address() -> usize {
    pvabi_upcall_vector_entry as *const () as usize
}

/// Address of `pvabi_upcall_callback_entry`, the EVENT.SET_UPCALL(CALLBACK) target.
pub fn callback_entry_address() -> usize {
    pvabi_upcall_callback_entry as *const () as usize
}
