//! # pvabi-guest — the guest-side shim of pvabi
//!
//! Guest kernels link this crate to talk to any hypervisor that implements pvabi. It is
//! `#![no_std]`, uses no allocator and builds for bare metal (x86_64, any ring, `panic=abort`).
//!
//! * **Discovery** ([`Pvabi::discover`], spec chapter "Discovery"): the boot-info handoff
//!   first (validated: alignment, magic, size, version), then the CPUID scan of
//!   `0x4000_0000..=0x4000_FF00` for the signature; the ABI version check; service probing
//!   with BASE.PROBE_SERVICE; feature bits. The result is a [`Pvabi`] handle — small and
//!   `Copy` — that the guest keeps and passes around; there is no hidden global state except
//!   what the upcall entry needs ([`upcall`]).
//! * **Gates** ([`gate`]): I/O port, MMIO, `vmcall`, `vmmcall`, the in-process gate of the mock
//!   ([`InProcessFn`], [`InProcessRegs`]) and the shared-ring gate ([`ring`]). All `unsafe`
//!   code of the crate is in [`gate`] and [`xen`] (hypercalls); every other module is
//!   compiled with `deny(unsafe_code)`.
//! * **Typed wrappers** for every v1 service: [`console`], [`clock`], [`vcpu`], [`event`],
//!   [`memory`], [`grant`], [`store`], [`power`], [`multicall`] and, for certification,
//!   [`harness`]. They return `Result<T, pvabi::Status>`. Guest memory is passed as Rust
//!   references that the shim translates to guest-physical addresses with the
//!   [`Translate`] hook; if translation fails the wrapper returns
//!   `Err(Status::INVALID_ADDRESS)` without calling the host.
//! * **Shared areas** ([`shared`]): the event page, clock pages, ring, grant table and crash
//!   buffer as `#[repr(C)]` types made of atomics with the ABI's exact layout, so the host
//!   may change them at any time without undefined behaviour on the guest side.
//!
//! ## The in-process gate (model hosts such as `pvabi-mock`)
//! A host that runs guest code as its own threads is entered through a function:
//!
//! ```text
//! pub type InProcessFn = unsafe extern "C" fn(ctx: usize, regs: *mut InProcessRegs);
//! #[repr(C)] pub struct InProcessRegs { pub rax: u64, pub args: [u64; 6] }   // 56 bytes
//! ```
//!
//! `rax` carries the call id in and the status (sign-extended) out; `args` are RDI, RSI, R8,
//! R9, R10, R11 in, and `args[0]` (RDI) is the value out — the hardware register convention
//! in memory. Wrap the host's function with [`InProcessGate::new`], translate pointers with
//! [`Translate::Offset`], discover with [`Pvabi::discover_in_process`], and place shared areas
//! and buffers in guest RAM with a [`GuestArena`]. Upcalls reach an in-process guest at call
//! boundaries through [`upcall::in_process_callback`] (register it with the host) or by
//! polling with [`upcall::dispatch_pending`].
//!
//! ## Upcalls
//! Ring-0 guests point an IDT gate at `pvabi_upcall_vector_entry`; fully paravirtual ring-3
//! guests let the host enter `pvabi_upcall_callback_entry`, which returns with
//! VCPU.UPCALL_RETURN. Both scan the event page and call the handler given to
//! [`upcall::install`] once per pending port.
//!
//! ## Host answers are not trusted blindly
//! A malformed status register decodes as [`pvabi::Status::FAILED`]; values that cannot be
//! right (a length larger than the buffer, a port out of range, a count beyond the table) are
//! reported as errors instead of being used; nothing in the shim panics on a host answer.
//!
//! ## Example: a bare-metal guest
//! ```no_run
//! use core::fmt::Write;
//! use pvabi_guest::{PhysReader, Pvabi, Translate};
//!
//! fn kernel_main(boot_info_gpa: u64) {
//!     // SAFETY: the kernel runs with identity page tables covering RAM and the MMIO gate
//!     // page, as the loader set them up.
//!     let phys = unsafe { PhysReader::new(Translate::Identity) };
//!     let Ok(pv) = Pvabi::discover(boot_info_gpa, &phys) else { return };
//!     let _ = writeln!(pv.console(), "hello from vCPU {:?}", pv.vcpu_id());
//!     pv.power_off(0);
//! }
//! ```
#![no_std]
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod base;
#[cfg(feature = "capi")]
pub mod capi;
pub mod clock;
pub mod console;
pub mod discovery;
pub mod event;
#[allow(unsafe_code)]
pub mod gate;
pub mod grant;
#[cfg(feature = "harness")]
pub mod harness;
pub mod memory;
pub mod multicall;
pub mod power;
pub mod ring;
pub mod shared;
pub mod store;
pub mod translate;
pub mod upcall;
pub mod vcpu;
#[allow(unsafe_code)]
pub mod xen;

pub use discovery::{DiscoverError, DiscoverOptions, DiscoverySource, HostInfo};
pub use gate::arena::{GuestArena, TakeOnce};
pub use gate::phys::PhysReader;
pub use gate::{InProcessFn, InProcessGate, InProcessRegs, RegisterGate};
pub use pvabi;
pub use pvabi::Status;
pub use translate::Translate;

use pvabi::{CallId, Regs, Ret};

/// How calls currently reach the host: one register gate, or the shared ring on top of one.
#[derive(Clone, Copy, Debug)]
pub enum Gate {
    /// Calls go through a register gate, one crossing per call.
    Register(RegisterGate),
    /// Calls go through a shared ring; the register gate below it rings the doorbell and
    /// carries the calls that cannot go through a ring (see [`ring::RingGate`]).
    Ring(ring::RingGate),
}

impl Gate {
    /// The register gate (for a ring gate, the one below the ring).
    pub fn register_gate(&self) -> RegisterGate {
        match self {
            Gate::Register(g) => *g,
            Gate::Ring(r) => r.base(),
        }
    }

    /// One call from raw entry registers through any gate; returns the raw RAX and RDI. Out
    /// of line: [`Pvabi`]'s call path inlines the I/O-port gate and comes here for the rest.
    #[cold]
    #[inline(never)]
    #[allow(clippy::too_many_arguments)] // the seven registers of the convention, in registers
    fn call_raw_slow(
        &self,
        rax: u64,
        a0: u64,
        a1: u64,
        a2: u64,
        a3: u64,
        a4: u64,
        a5: u64,
    ) -> (u64, u64) {
        let args = [a0, a1, a2, a3, a4, a5];
        match self {
            Gate::Register(g) => g.call_raw(rax, args),
            Gate::Ring(r) => {
                let ret = r.call(&Regs { rax, args });
                (ret.status.to_reg(), ret.value)
            }
        }
    }
}

/// Decodes the status register (`CONV-5`, `CONV-6`): SUCCESS only for 0, the value then;
/// otherwise the status, [`Status::FAILED`] for a register that is not a sign-extended
/// 32-bit integer (as [`Status::from_reg`]).
#[inline(always)]
fn result_of(rax: u64, rdi: u64) -> Result<u64, Status> {
    if rax == 0 {
        Ok(rdi)
    } else {
        Err(Status::from_reg(rax))
    }
}

/// The handle a guest keeps after discovery: the gate, the translation hook and what the
/// host said about itself. Cheap to copy; every service wrapper is a method on it or takes it.
///
/// # Examples
///
/// In-process against a model host (the test supplies the host function):
/// ```
/// use pvabi_guest::{InProcessGate, InProcessRegs, PhysReader, Pvabi, Translate};
///
/// unsafe extern "C" fn host(_ctx: usize, regs: *mut InProcessRegs) {
///     // SAFETY: the shim passes a valid, exclusive pointer for the duration of the call.
///     let r = unsafe { &mut *regs };
///     r.args[0] = match r.rax as u32 {
///         0x0000_0000 => 0x0001_0000, // BASE.GET_ABI_VERSION -> 1.0
///         0x0000_0006 => 2,           // BASE.GET_VCPU_COUNT
///         0x0000_0003 => 1,           // BASE.PROBE_SERVICE -> present
///         _ => 0,
///     };
///     r.rax = 0;
/// }
/// let ram = [0u8; 4096];
/// // SAFETY: `ram` is mapped and readable while the reader lives.
/// let phys = unsafe {
///     PhysReader::new(Translate::Offset { host_base: ram.as_ptr() as usize, len: ram.len() })
/// };
/// // SAFETY: `host` is sound for any registers and touches no memory.
/// let gate = unsafe { InProcessGate::new(host, 0) };
/// let pv = Pvabi::discover_in_process(gate, 0, &phys).unwrap();
/// assert_eq!(pv.info().vcpu_count, 2);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Pvabi {
    gate: Gate,
    /// `gate`'s port when it is the I/O-port register gate (kept in step with `gate`).
    port_gate: gate::PortGate,
    phys: PhysReader,
    info: HostInfo,
}

impl Pvabi {
    pub(crate) fn from_parts(gate: Gate, phys: PhysReader, info: HostInfo) -> Self {
        Self {
            gate,
            port_gate: gate::PortGate::of(&gate),
            phys,
            info,
        }
    }

    /// What discovery learned about the host.
    pub fn info(&self) -> &HostInfo {
        &self.info
    }

    /// The gate calls go through.
    pub fn gate(&self) -> Gate {
        self.gate
    }

    /// The translation hook.
    #[inline]
    pub fn translate(&self) -> Translate {
        self.phys.translate()
    }

    /// The guest-physical memory reader discovery was given (narrowed to RAM when known).
    pub fn phys(&self) -> &PhysReader {
        &self.phys
    }

    /// This handle with calls routed through `gate` instead (e.g. after registering a ring).
    pub fn with_gate(mut self, gate: Gate) -> Self {
        self.gate = gate;
        self.port_gate = gate::PortGate::of(&gate);
        self
    }

    /// The GPA of a byte slice, or `Err(INVALID_ADDRESS)` (see [`Translate::gpa_of`]).
    pub(crate) fn gpa(&self, s: &[u8]) -> Result<u64, Status> {
        self.phys.translate().gpa_of_slice(s)
    }

    /// The GPA of a typed value, or `Err(INVALID_ADDRESS)`.
    pub(crate) fn gpa_ref<T>(&self, r: &T) -> Result<u64, Status> {
        self.phys.translate().gpa_of_ref(r)
    }

    /// One call through the current gate (crate-internal; see [`RegisterGate::call`] for
    /// the discipline on guest-physical arguments).
    #[inline(always)]
    pub(crate) fn call(&self, id: CallId, args: [u64; 6]) -> Result<u64, Status> {
        let (rax, rdi) = self.call_raw(u64::from(id.0), args);
        result_of(rax, rdi)
    }

    /// The raw (status, value) of one call (crate-internal).
    #[inline(always)]
    pub(crate) fn call_ret(&self, id: CallId, args: [u64; 6]) -> Ret {
        let (rax, rdi) = self.call_raw(u64::from(id.0), args);
        Ret {
            status: Status::from_reg(rax),
            value: rdi,
        }
    }

    #[inline(always)]
    pub(crate) fn call0(&self, id: CallId) -> Result<u64, Status> {
        self.call(id, [0; 6])
    }

    #[inline(always)]
    pub(crate) fn call1(&self, id: CallId, a0: u64) -> Result<u64, Status> {
        self.call(id, [a0, 0, 0, 0, 0, 0])
    }

    #[inline(always)]
    pub(crate) fn call2(&self, id: CallId, a0: u64, a1: u64) -> Result<u64, Status> {
        self.call(id, [a0, a1, 0, 0, 0, 0])
    }

    /// Makes a call whose arguments name no guest memory (e.g. EVENT.SEND). The shim checks
    /// the call's table entry: calls with memory arguments are refused.
    ///
    /// # Errors
    ///
    /// `INVALID_PARAM` for a call known to take guest addresses or not to return; otherwise
    /// the host's status.
    #[inline]
    pub fn call_scalar(&self, id: CallId, args: [u64; 6]) -> Result<u64, Status> {
        if !base::is_scalar_call(id) {
            return Err(Status::INVALID_PARAM);
        }
        self.call(id, args)
    }
}

// The handle is shared between vCPUs (threads in-process): it must stay `Send + Sync + Copy`.
const _: () = {
    const fn assert_shareable<T: Send + Sync + Copy>() {}
    assert_shareable::<Pvabi>();
};

#[cfg(test)]
mod tests {
    use super::*;

    /// The call path's status decode agrees with `Status::from_reg` + `into_result` on every
    /// kind of status register: SUCCESS, known and unknown errors, reserved positive values,
    /// and registers that are not sign-extended 32-bit values.
    #[test]
    fn result_of_matches_status_decoding() {
        let regs = [
            0u64,
            1,
            Status::NOT_SUPPORTED.to_reg(),
            Status::FAILED.to_reg(),
            (-1000i64) as u64,
            i32::MIN as i64 as u64,
            i32::MAX as u64,
            0x8000_0000,
            0xFFFF_FFFF,
            1 << 32,
            u64::MAX << 31,
            u64::MAX,
        ];
        for rax in regs {
            for rdi in [0, 7, u64::MAX] {
                assert_eq!(
                    result_of(rax, rdi),
                    Status::from_reg(rax).into_result(rdi),
                    "rax {rax:#x} rdi {rdi:#x}"
                );
            }
        }
        assert_eq!(result_of(0x8000_0000, 5), Err(Status::FAILED));
        assert_eq!(result_of(0, 5), Ok(5));
    }
}
