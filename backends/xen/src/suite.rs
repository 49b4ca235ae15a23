//! Running the conformance suite over the Xen transport: the guest side of a certification run.
//!
//! The suite (`pvabi-conformance-suite`) runs in this process, as it runs in-process on the
//! mock, with an in-process gate that carries each call over the transport's ring
//! ([`Frontend::call`]); guest-physical addresses are the window's (the window starts at guest
//! frame 0, so GPA `g` is byte `g` of the window mapping). The backend in the other domain keeps
//! the HARNESS records; the runner collects them there.

use std::sync::Mutex;

use pvabi::Status;
use pvabi_guest::{GuestArena, InProcessGate, InProcessRegs, PhysReader, Pvabi, Translate};

use crate::frontend::{Frontend, FrontendError};
use crate::ops::XenStoreOps;
use crate::sys::PAGE_SIZE;

/// Something that carries one call over a transport and returns its status and value.
pub trait RingCaller: Send {
    /// Runs one call.
    ///
    /// # Errors
    ///
    /// When the transport fails (no completion, protocol error).
    fn ring_call(&mut self, call_id: u32, args: [u64; 6]) -> Result<(Status, u64), FrontendError>;
}

impl<X: XenStoreOps + Send> RingCaller for Frontend<X> {
    fn ring_call(&mut self, call_id: u32, args: [u64; 6]) -> Result<(Status, u64), FrontendError> {
        self.call(call_id, args)
    }
}

struct GateCtx {
    caller: Mutex<Box<dyn RingCaller>>,
}

/// The in-process gate function: one ring call per gate call.
///
/// # Safety
///
/// `ctx` is the address of a live [`GateCtx`] and `regs` is valid for reads and writes of one
/// [`InProcessRegs`] for the call (the [`pvabi_guest::InProcessFn`] contract).
unsafe extern "C" fn ring_gate(ctx: usize, regs: *mut InProcessRegs) {
    // SAFETY: by this function's contract `ctx` is the address of a `GateCtx` that outlives
    // the call (it lives on `run_suite_over`'s stack for the whole suite run) and is only
    // shared, never mutated outside its mutex.
    let g = unsafe { &*(ctx as *const GateCtx) };
    // SAFETY: by the `InProcessFn` contract `regs` is valid for reads and writes of one
    // `InProcessRegs` for the duration of this call and not aliased during it.
    let r = unsafe { &mut *regs };
    let mut caller = g.caller.lock().unwrap_or_else(|p| p.into_inner());
    // A ring request carries a 32-bit call id; an id with bits above 31 names no call and
    // is answered as the register gate answers an unknown id.
    let (status, value) = match u32::try_from(r.rax) {
        Ok(id) => match caller.ring_call(id, r.args) {
            // RING-6: the only gate of this transport cannot carry the call.
            Ok(v) if pvabi_guest::ring::bypasses_ring(pvabi::CallId(id)) => {
                pvabi_conformance_suite::gate_cannot_carry(pvabi::CallId(id));
                v
            }
            Ok(v) => v,
            Err(_) => (Status::FAILED, 0),
        },
        Err(_) => (Status::NOT_SUPPORTED, 0),
    };
    r.rax = status.0 as i64 as u64;
    r.args[0] = value;
}

struct RingPlatform;

impl pvabi_conformance_suite::Platform for RingPlatform {
    fn name(&self) -> &'static str {
        "xen-ring"
    }
    fn boot_info_gpa(&self) -> u64 {
        0
    }
    fn in_process(&self) -> bool {
        true
    }
    fn upcall_vector(&self) -> Option<u8> {
        None
    }
    fn callback_upcalls(&self) -> bool {
        false
    }
}

/// How a suite run over the ring went on the guest side (the records are the backend's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingSuiteSummary {
    /// Cases that passed.
    pub passed: u32,
    /// Cases that failed.
    pub failed: u32,
    /// Cases skipped.
    pub skipped: u32,
    /// Records that could not be reported.
    pub unreported: u32,
}

/// Runs the suite (cases whose name starts with `filter`) over a connected frontend whose
/// window starts at guest frame 0, using the window's pages from `arena_offset` on as the
/// suite's scratch memory.
///
/// # Errors
///
/// When the window does not start at frame 0, the arena does not fit, or discovery over the
/// ring fails.
pub fn run_suite_over<X: XenStoreOps + Send + 'static>(
    frontend: Frontend<X>,
    arena_offset: u64,
    filter: Option<&str>,
) -> Result<RingSuiteSummary, String> {
    let regions = frontend.window().regions();
    let (base, len) = match regions.as_slice() {
        [(0, len)] => (0u64, *len),
        other => return Err(format!("the window must start at frame 0: {other:?}")),
    };
    if arena_offset % PAGE_SIZE as u64 != 0 || arena_offset >= len {
        return Err(format!("arena offset {arena_offset:#x} outside the window"));
    }
    let host_base = frontend
        .window()
        .host_address(base)
        .map_err(|s| format!("window mapping: {s}"))? as usize;
    // The window mapping lives as long as `frontend`, which `ctx` owns until this function
    // returns; everything below that uses the mapping ends before then.
    let ctx = GateCtx {
        caller: Mutex::new(Box::new(frontend)),
    };
    // SAFETY: `ring_gate` is sound for every register value as long as its context is a live
    // `GateCtx`, which `ctx` is for the rest of this function, and the gate is dropped with
    // the `Pvabi` handle before `ctx` (both are locals declared after it).
    let gate = unsafe { InProcessGate::new(ring_gate, &ctx as *const GateCtx as usize) };
    // SAFETY: the window is mapped at `host_base` for `len` bytes while `ctx` (which owns the
    // frontend and with it the mapping) lives, which outlives `phys`.
    let phys = unsafe {
        PhysReader::new(Translate::Offset {
            host_base,
            len: len as usize,
        })
    };
    let pv = Pvabi::discover_in_process(gate, 0, &phys)
        .map_err(|e| format!("discovery over the ring: {e:?}"))?;
    // SAFETY: the window's bytes from `arena_offset` to its end are used by nothing but the
    // suite (the frontend keeps the ring and its own buffers below `arena_offset`), and they
    // stay mapped while `ctx` lives, which outlives `arena`.
    let arena = unsafe {
        GuestArena::new(
            host_base + arena_offset as usize,
            (len - arena_offset) as usize,
        )
    };
    let sum = pvabi_conformance_suite::run_suite(pv, &RingPlatform, &arena, filter);
    Ok(RingSuiteSummary {
        passed: sum.passed,
        failed: sum.failed,
        skipped: sum.skipped,
        unreported: sum.unreported,
    })
}
