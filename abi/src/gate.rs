//! Gates and the register convention (spec chapter "Calling convention", clauses `CONV-*`,
//! and chapter "Gates", clauses `GATE-*`).
//!
//! One register assignment serves every gate on x86_64 (spec `CONV-8`):
//!
//! | register | on entry            | on return                    |
//! |----------|---------------------|------------------------------|
//! | RAX      | call id (bits 31..0)| status (sign-extended)       |
//! | RDI      | argument 0          | value                        |
//! | RSI      | argument 1          | preserved                    |
//! | R8       | argument 2          | preserved                    |
//! | R9       | argument 3          | preserved                    |
//! | R10      | argument 4          | preserved                    |
//! | R11      | argument 5          | preserved                    |
//! | RDX      | gate parameter (the I/O port for the port gate) | preserved |
//!
//! All other registers are preserved. RDX is left free so that `out dx, eax` can name the port.

/// The registers of one call as the host sees them at the gate (spec `CONV-8`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Regs {
    /// RAX: the call id in bits 31..0; bits 63..32 must be zero.
    pub rax: u64,
    /// Arguments 0..5 in order: RDI, RSI, R8, R9, R10, R11.
    pub args: [u64; 6],
}

impl Regs {
    /// Builds the entry registers of a call.
    pub const fn new(call: crate::CallId, args: [u64; 6]) -> Self {
        Self {
            rax: call.0 as u64,
            args,
        }
    }
}

/// The return pair of a call (spec `CONV-5`): RAX = status, RDI = value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ret {
    /// The status, written to RAX sign-extended.
    pub status: crate::Status,
    /// The value, written to RDI. Zero when the status is an error unless a function says
    /// otherwise (BUFFER_TOO_SMALL carries the size needed).
    pub value: u64,
}

impl Ret {
    /// A successful return with `value`.
    pub const fn ok(value: u64) -> Self {
        Self {
            status: crate::Status::SUCCESS,
            value,
        }
    }

    /// A failed return with value 0.
    pub const fn err(status: crate::Status) -> Self {
        Self { status, value: 0 }
    }

    /// Converts to a `Result`.
    ///
    /// # Errors
    ///
    /// Returns the status when it is not SUCCESS.
    pub const fn into_result(self) -> Result<u64, crate::Status> {
        self.status.into_result(self.value)
    }
}

/// Names of the argument registers in order, as the spec writes them.
pub const ARG_REGISTERS: [&str; 6] = ["RDI", "RSI", "R8", "R9", "R10", "R11"];

/// Width in bytes of the access that triggers the I/O-port gate: `out dx, eax` (spec `GATE-2`).
pub const IOPORT_GATE_WIDTH: u8 = 4;

/// Default I/O port of the port gate when a host has no reason to choose another (`GATE-3`).
pub const DEFAULT_IOPORT: u16 = 0x0510;

/// Default guest-physical address of the MMIO gate's trigger word (`GATE-5`).
pub const DEFAULT_MMIO_GATE: u64 = 0xFEE0_0000 - 0x1000;

/// I/O port a guest may write to for nothing at all (a bare exit): hosts ignore writes to it.
/// Benchmarks use it as the baseline (`GATE-8`).
pub const NULL_IOPORT: u16 = 0x0511;
