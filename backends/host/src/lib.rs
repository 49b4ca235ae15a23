//! # pvabi-host — shared host machinery of pvabi
//!
//! Everything a pvabi backend would otherwise write again: decoding gate registers into a
//! typed [`Call`], dispatch, bounds-checked guest-memory access through rust-vmm's `vm-memory`
//! ([`GuestRam`]), and the stateful services (console, clock pages and timers, vCPU state
//! machine, event channels and upcalls, memory map and balloon, grant table, the configuration
//! store with permissions, quotas, watches and transactions, power, multicall, the shared-ring
//! gate and the HARNESS service). A backend supplies only what its hypervisor alone can do,
//! through the [`Platform`] trait.
//!
//! ## How a backend uses it
//! 1. Create guest RAM ([`GuestRam::from_ranges`]) and a [`Vm`] from a [`VmConfig`] and the
//!    backend's [`Platform`]. Write the boot handoff with [`Vm::write_boot_handoff`] and start
//!    the boot vCPU with RDI = its address.
//! 2. On every gate exit of vCPU `v`, build a [`pvabi::Regs`] from RAX and the six argument
//!    registers and call [`Vm::handle_call`]; act on the [`Outcome`]:
//!    * `Return(ret)`: RAX = `ret.status.to_reg()`, RDI = `ret.value`, resume.
//!    * `Block { .. }`: sleep the vCPU until [`Platform::notify`] names it, then
//!      [`Vm::finish_block`]; when that yields a `Ret`, complete the call with it.
//!    * `Stop`: stop running the vCPU. `Shutdown { .. }`: stop the guest.
//!    * `UpcallReturn(frame)`: load the frame's registers and resume there.
//! 3. Before resuming a vCPU (and whenever [`Platform::notify`] names it) call
//!    [`Vm::take_upcall`]: inject the vector, or for a callback call [`Vm::enter_callback`]
//!    with the interrupted registers and resume at the returned entry.
//! 4. Call [`Vm::poll_timers`] when the deadline given to [`Platform::deadline_changed`] is
//!    reached, [`Vm::process_ring`] on a ring doorbell, and [`Vm::vcpu_started`] when a
//!    vCPU started through [`Platform::start_vcpu`] begins to run.
//!
//! ## Limits (all enforced; exhausting one gives the guest NO_SPACE or INVALID_PARAM)
//! * Transfers: CONSOLE.WRITE/READ and HARNESS console calls 4096 bytes; HARNESS.REPORT
//!   records 4096 bytes, at most [`vm::MAX_REPORTS`] kept; console input
//!   [`VmConfig::console_input_limit`], console history [`VmConfig::console_history`].
//! * Store (`STORE-19`): paths 256 bytes, values 4096 bytes, 1024 nodes, 64 watches, 16 open
//!   transactions, 256 queued watch events (further ones dropped and counted).
//! * Event ports `1..1024`; one timer per vCPU; grant tables up to 4096 entries; multicall
//!   256 entries; one shared ring per guest of at most 2^8 slots, at most one ring's worth of
//!   requests per [`Vm::process_ring`]; balloon calls up to 2^20 pages.
//!
//! ## Choices where the specification leaves room
//! * A VCPU.START inside a multicall or ring request reports SUCCESS once the vCPU is
//!   START_PENDING; if the backend then fails to start it, it goes back to STOPPED (the
//!   register-gate VCPU.START reports the backend's status).
//! * [`Vm::take_upcall`] is level-triggered; the `Vm` also notifies the calling vCPU when an
//!   upcall is deliverable at the end of a call, so a backend that only looks when notified
//!   still meets `EVT-11`.
//! * VCPU.UPCALL_RETURN hands back the saved frame with RFLAGS reduced to
//!   [`vm::UPCALL_RFLAGS_FROM_GUEST`]; the backend merges them into the vCPU's RFLAGS.
//! * Store nodes created as ancestors by a host write get the access of the node written.
//!
//! The guest is untrusted: no guest value can make this crate panic, every guest address and
//! length is validated, each guest structure is copied in once and validated as a copy, and no
//! Rust reference into guest memory is formed (atomics go through vm-memory's atomic views).
//!
//! ## Example
//! ```
//! use std::sync::Arc;
//! use pvabi::{call, Regs, Status};
//! use pvabi_host::{ClockParams, GuestRam, Outcome, Platform, Vm, VmConfig};
//!
//! struct Fixed;
//! impl Platform for Fixed {
//!     fn now_ns(&self) -> u64 { 1_000 }
//!     fn wallclock_epoch_ns(&self) -> u64 { 0 }
//!     fn clock_params(&self) -> ClockParams { ClockParams { system_time: 1_000, ..Default::default() } }
//!     fn start_vcpu(&self, _: u32, _: u64, _: u64, _: u64) -> Result<(), Status> { Err(Status::FAILED) }
//!     fn notify(&self, _: u32) {}
//!     fn yield_vcpu(&self, _: u32) {}
//!     fn deadline_changed(&self, _: u64) {}
//!     fn advance_clock(&self, _: u64) -> Result<(), Status> { Err(Status::NOT_SUPPORTED) }
//! }
//!
//! let ram = GuestRam::from_ranges(&[(0, 1 << 20)]).unwrap();
//! let vm = Vm::new(VmConfig::new(1), ram.clone(), Arc::new(Fixed)).unwrap();
//! ram.write_bytes(0x1000, b"hi").unwrap();
//! let out = vm.handle_call(0, &Regs::new(call::CONSOLE_WRITE, [0x1000, 2, 0, 0, 0, 0]));
//! assert_eq!(out, Outcome::Return(pvabi::Ret::ok(2)));
//! assert_eq!(vm.take_console_output(), b"hi");
//! let bad = vm.handle_call(0, &Regs::new(call::CONSOLE_WRITE, [u64::MAX, 2, 0, 0, 0, 0]));
//! assert_eq!(bad, Outcome::Return(pvabi::Ret::err(Status::INVALID_ADDRESS)));
//! ```
#![deny(unsafe_code)]

pub mod balloon;
pub mod decode;
pub mod error;
pub mod events;
pub mod lines;
pub mod mem;
pub mod platform;
pub mod store;
pub mod vm;

pub use decode::{encode_ret, Call};
pub use error::{ConfigError, HostError};
pub use mem::GuestRam;
pub use platform::{CallHook, ClockParams, EventAction, Platform, Quirks};
pub use store::{StoreService, WatchFired};
pub use vm::{
    CallbackEntry, ConsoleSink, CrashReport, GrantMapping, Outcome, Report, ShutdownInfo, Upcall,
    Vm, VmConfig,
};
