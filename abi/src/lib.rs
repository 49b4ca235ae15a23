//! # pvabi — the hypervisor-neutral paravirtualization ABI
//!
//! This crate is the contract between a guest kernel and any hypervisor that implements pvabi.
//! It holds only definitions: call ids, the register convention, status codes, feature bits,
//! discovery constants and every shared-memory layout. It is `#![no_std]`, uses no allocator and
//! contains no `unsafe` code, so guest kernels of any licence can link it.
//!
//! The normative text is the specification in the repository's `spec/` folder. Each module here
//! mirrors one chapter of it and every item names the clause ids it implements. A test keeps the
//! spec's tables and this crate from drifting apart, and `spec/abi-v1.lock` pins every number.
//!
//! All multi-byte values in shared memory are little-endian (spec clause `CONV-9`); x86_64 is the
//! first architecture and the only one defined in ABI version 1.0.
//!
//! ```
//! use pvabi::{call, Status};
//! let id = call::CONSOLE_WRITE;
//! assert_eq!(id.service(), pvabi::ServiceId::CONSOLE);
//! assert_eq!(Status::from_reg(Status::NOT_SUPPORTED.to_reg()), Status::NOT_SUPPORTED);
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod base;
pub mod call;
pub mod clock;
pub mod console;
pub mod discovery;
pub mod event;
pub mod gate;
pub mod grant;
pub mod harness;
pub mod layout;
pub mod memory;
pub mod multicall;
pub mod power;
pub mod ring;
pub mod status;
pub mod store;
pub mod vcpu;
pub mod version;

mod golden;

pub use call::{CallId, ServiceId};
pub use discovery::{BootInfo, Features, GateKind};
pub use gate::{Regs, Ret};
pub use status::Status;
pub use version::{AbiVersion, ABI_VERSION};

/// Size of a guest page in bytes (spec `CONV-10`). Page-granular arguments use this size.
pub const PAGE_SIZE: u64 = 4096;

/// Largest number of vCPUs one guest can have in ABI v1 (spec `VCPU-1`).
pub const MAX_VCPUS: u32 = 16;
