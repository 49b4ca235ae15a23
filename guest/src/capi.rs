//! The C ABI of the shim: `extern "C"` functions, prefix `pvabi_`, for kernels written in C.
//!
//! Built into a static library by the `pvabi-guest-capi` crate (`guest/capi`); the prototypes
//! are in `guest/include/pvabi_shim.h`, next to the generated `pvabi.h` whose constants and
//! layouts they use.
//!
//! # Conventions
//!
//! * **Statuses.** Every function returns an `int64_t`: negative values are the ABI's status
//!   codes (`PVABI_STATUS_*`, spec "Conventions"), the host's or one the shim chose before
//!   sending anything (documented per function); zero or a positive value is success, and for
//!   the functions that say so the positive value is the result (a port, a length, a count).
//!   Results that may use all 64 bits (times, feature bits) are written through an
//!   `uint64_t *` out-parameter instead.
//! * **The handle.** [`pvabi_init`] discovers the host once and keeps the handle in a static
//!   that every other function reads; before it succeeded they return
//!   `PVABI_STATUS_BAD_STATE` without calling the host. The handle is shared by all vCPUs;
//!   per-vCPU state (clock page, upcall mode) is per vCPU as the spec says.
//! * **Pointers.** The kernel runs with identity page tables (pointer value = guest-physical
//!   address, as the bare-metal loader sets them up); discovery bounds that identity to the
//!   RAM of the boot memory map, so a buffer outside RAM is refused with
//!   `PVABI_STATUS_INVALID_ADDRESS` before the host sees it. A null pointer with a nonzero
//!   length, or a misaligned shared area, is `PVABI_STATUS_INVALID_PARAM`. The shim never
//!   forms a Rust reference to memory the host writes except to the shared areas, which it
//!   reads and writes as atomics ([`crate::shared`]); buffers the host fills are only passed
//!   to the host by address.
//! * **Upcalls.** A ring-0 kernel points an IDT gate at [`pvabi_upcall_vector_entry_address`]
//!   and calls [`pvabi_event_set_upcall_vector`]; a paravirtual ring-3 kernel calls
//!   [`pvabi_event_set_upcall_callback`]. Both need [`pvabi_upcall_install`] first.
//!
//! Functions that take pointers are `unsafe` in Rust terms; their `# Safety` sections are
//! the C caller's obligations.
#![allow(unsafe_code)]

use core::cell::UnsafeCell;
use core::ffi::c_char;
use core::mem::MaybeUninit;
use core::sync::atomic::{fence, AtomicPtr, AtomicU32, AtomicU8, AtomicUsize, Ordering};

use pvabi::call::{self, CallId};
use pvabi::discovery::ExecMode;
use pvabi::memory::{MemMapEntry, MAX_BALLOON_PAGES_PER_CALL};
use pvabi::multicall::{MulticallEntry, MAX_ENTRIES as MAX_MULTICALL};
use pvabi::power::{CrashHeader, ShutdownReason};
use pvabi::{ServiceId, Status, PAGE_SIZE};

use crate::event::{EventChannels, Port};
use crate::shared::{ClockPageShared, EventPageShared, GrantEntryShared, StealTimeShared};
use crate::upcall::UpcallInfo;
use crate::vcpu::MIN_STACK;
use crate::{clock::Clock, DiscoverError, PhysReader, Pvabi, Translate};

/// Entry point of a vCPU started with [`pvabi_vcpu_start`]:
/// `void entry(uint64_t arg, uint64_t vcpu_id)` (`pvabi_vcpu_entry_fn` in C).
pub type CVcpuEntry = crate::vcpu::VcpuEntry;

/// The kernel's upcall handler, called once per pending, unmasked port:
/// `void handler(uint32_t port, uint32_t vcpu)` (`pvabi_port_handler_fn` in C).
pub type CPortHandler = extern "C" fn(port: u32, vcpu: u32);

// ---------------------------------------------------------------------------------------------
// State

const EMPTY: u8 = 0;
const WRITING: u8 = 1;
const READY: u8 = 2;

/// The discovered handle, written once.
///
/// # Invariants
///
/// `value` is written only by the one [`HandleCell::set`] that moved `state` from `EMPTY` to
/// `WRITING`, before it stores `READY` (release); `state` never leaves `READY`, so once a
/// reader sees `READY` (acquire) `value` is initialised and never written again.
struct HandleCell {
    state: AtomicU8,
    value: UnsafeCell<MaybeUninit<Pvabi>>,
}

// SAFETY: `value` is written once, before `READY` is published, and only read after `READY`
// is observed (type invariant); `Pvabi` is `Send + Sync + Copy` (asserted at the crate root).
unsafe impl Sync for HandleCell {}

impl HandleCell {
    const fn new() -> Self {
        Self {
            state: AtomicU8::new(EMPTY),
            value: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    fn get(&self) -> Option<Pvabi> {
        if self.state.load(Ordering::Acquire) != READY {
            return None;
        }
        // SAFETY: `READY` was observed with acquire ordering, so the write of `value` that
        // happened before it was published is visible and `value` is initialised; it is never
        // written again (type invariant), so this read races with nothing.
        Some(unsafe { self.value.get().cast::<Pvabi>().read() })
    }

    fn set(&self, pv: Pvabi) -> Result<(), Status> {
        if self
            .state
            .compare_exchange(EMPTY, WRITING, Ordering::Acquire, Ordering::Acquire)
            .is_err()
        {
            return Err(Status::ALREADY);
        }
        // SAFETY: this call won the only EMPTY -> WRITING transition, so no other writer
        // exists, and readers do not read `value` before `READY` (type invariant).
        unsafe { self.value.get().write(MaybeUninit::new(pv)) };
        self.state.store(READY, Ordering::Release);
        Ok(())
    }
}

static HANDLE: HandleCell = HandleCell::new();
/// The event page given to [`pvabi_event_register_page`] (null before).
static EVENT_PAGE: AtomicPtr<EventPageShared> = AtomicPtr::new(core::ptr::null_mut());
/// The C upcall handler as a function-pointer value (0 = none).
static C_HANDLER: AtomicUsize = AtomicUsize::new(0);
/// The crash area given to [`pvabi_crash_register_buffer`] and its length.
static CRASH_AREA: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());
static CRASH_LEN: AtomicUsize = AtomicUsize::new(0);

fn handle() -> Result<Pvabi, Status> {
    HANDLE.get().ok_or(Status::BAD_STATE)
}

// ---------------------------------------------------------------------------------------------
// Return-value helpers

fn code(s: Status) -> i64 {
    i64::from(s.0)
}

fn unit(r: Result<(), Status>) -> i64 {
    match r {
        Ok(()) => 0,
        Err(s) => code(s),
    }
}

fn value(r: Result<u64, Status>) -> i64 {
    match r {
        Ok(v) => i64::try_from(v).unwrap_or(code(Status::FAILED)),
        Err(s) => code(s),
    }
}

/// Checks an out-parameter: non-null and aligned.
fn check_out(out: *mut u64) -> Result<(), Status> {
    if out.is_null() || !out.is_aligned() {
        Err(Status::INVALID_PARAM)
    } else {
        Ok(())
    }
}

/// Writes `r`'s value through `out` (checked with [`check_out`] first) or returns its status.
///
/// # Safety
///
/// `out` must be null or valid for a write of a `u64`.
unsafe fn put(out: *mut u64, r: Result<u64, Status>) -> i64 {
    if let Err(s) = check_out(out) {
        return code(s);
    }
    match r {
        Ok(v) => {
            // SAFETY: non-null and aligned (checked above), valid for a write (caller).
            unsafe { out.write(v) };
            0
        }
        Err(s) => code(s),
    }
}

/// The GPA of `len` bytes at `ptr`: `INVALID_PARAM` for null with a nonzero length, otherwise
/// the handle's translation (`INVALID_ADDRESS` outside RAM). Zero-length ranges are GPA 0.
fn gpa_of(pv: &Pvabi, ptr: *const u8, len: usize) -> Result<u64, Status> {
    if len == 0 {
        return Ok(0);
    }
    if ptr.is_null() {
        return Err(Status::INVALID_PARAM);
    }
    pv.translate().gpa_of(ptr as usize, len)
}

/// A C byte range the host only reads, as a slice (empty for length 0).
///
/// # Safety
///
/// When `len > 0` and `ptr` is non-null, `ptr` must be valid for reads of `len` bytes that
/// nothing writes while the returned slice is used.
unsafe fn in_slice<'a>(ptr: *const u8, len: usize) -> Result<&'a [u8], Status> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(Status::INVALID_PARAM);
    }
    // SAFETY: non-null, valid for `len` bytes of reads and not written meanwhile (caller);
    // `u8` has no alignment or validity requirement.
    Ok(unsafe { core::slice::from_raw_parts(ptr, len) })
}

// ---------------------------------------------------------------------------------------------
// Discovery and BASE

/// Discovers the host (boot info at `boot_info_gpa`, 0 = none, then the CPUID scan) and keeps
/// the handle for every other function (spec chapter "Discovery").
///
/// Returns 0, or `PVABI_STATUS_ALREADY` when a handle is already kept (a secondary vCPU may
/// call it too; the first handle stays). Failure statuses: `NOT_FOUND` (no host),
/// `INVALID_PARAM` (an unusable boot info), `NOT_SUPPORTED` (an incompatible ABI version or a
/// gate this shim cannot use), `FAILED` (a host answer out of range) or a BASE call's status.
///
/// # Safety
///
/// The kernel must run with identity page tables that map all guest RAM (pointer value =
/// guest-physical address), as the bare-metal loader sets them up, for as long as any
/// `pvabi_` function is used; if the host names the MMIO gate, its page must be mapped
/// (uncached) at its guest-physical address.
#[no_mangle]
pub unsafe extern "C" fn pvabi_init(boot_info_gpa: u64) -> i64 {
    if HANDLE.get().is_some() {
        return code(Status::ALREADY);
    }
    // SAFETY: identity mapping of all RAM and the MMIO gate page is this function's own
    // precondition, which is what `Translate::Identity` requires of the reader.
    let phys = unsafe { PhysReader::new(Translate::Identity) };
    match Pvabi::discover(boot_info_gpa, &phys) {
        Ok(pv) => unit(HANDLE.set(pv)),
        Err(e) => code(discover_status(e)),
    }
}

fn discover_status(e: DiscoverError) -> Status {
    match e {
        DiscoverError::NotFound => Status::NOT_FOUND,
        DiscoverError::Incompatible { .. } | DiscoverError::GateUnusable { .. } => {
            Status::NOT_SUPPORTED
        }
        DiscoverError::Call(s) => s,
        DiscoverError::BadAnswer => Status::FAILED,
        _ => Status::INVALID_PARAM,
    }
}

/// Whether [`pvabi_init`] has succeeded: 1 or 0.
#[no_mangle]
pub extern "C" fn pvabi_is_ready() -> i64 {
    i64::from(HANDLE.get().is_some())
}

/// The number of vCPUs discovery found (1..=`PVABI_MAX_VCPUS`), or `BAD_STATE` before
/// [`pvabi_init`].
#[no_mangle]
pub extern "C" fn pvabi_info_vcpu_count() -> i64 {
    value(handle().map(|pv| u64::from(pv.info().vcpu_count)))
}

/// The execution mode from the boot info (`PVABI_EXEC_MODE_*`); `NOT_FOUND` when discovery
/// used CPUID only; `BAD_STATE` before [`pvabi_init`].
#[no_mangle]
pub extern "C" fn pvabi_info_exec_mode() -> i64 {
    value(handle().and_then(|pv| {
        pv.info()
            .exec_mode
            .map(|ExecMode(m)| u64::from(m))
            .ok_or(Status::NOT_FOUND)
    }))
}

/// Writes the feature bits discovery found (`PVABI_FEATURE_*`) to `*out`.
///
/// # Errors
///
/// `INVALID_PARAM` for a null or misaligned `out`; `BAD_STATE` before [`pvabi_init`].
///
/// # Safety
///
/// `out` must be null or valid for writing a `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn pvabi_info_features(out: *mut u64) -> i64 {
    // SAFETY: forwarded precondition on `out`.
    unsafe { put(out, handle().map(|pv| pv.info().features.bits())) }
}

/// The function count BASE.PROBE_SERVICE reported for service `svc` at discovery (0 =
/// absent); `BAD_STATE` before [`pvabi_init`].
#[no_mangle]
pub extern "C" fn pvabi_info_service_functions(svc: u32) -> i64 {
    let Ok(svc) = u16::try_from(svc) else {
        return code(Status::INVALID_PARAM);
    };
    value(handle().map(|pv| u64::from(pv.info().functions(ServiceId(svc)))))
}

/// Copies the boot command line (`DISC-11`) into `buf` (at most `len` bytes, no NUL added);
/// returns the bytes copied (0 without one).
///
/// # Errors
///
/// `INVALID_PARAM` for a null `buf` with a nonzero `len`; `INVALID_ADDRESS` if the host's
/// command-line address is not in RAM; `BAD_STATE` before [`pvabi_init`].
///
/// # Safety
///
/// `buf` must be valid for writes of `len` bytes that nothing else accesses during the call.
#[no_mangle]
pub unsafe extern "C" fn pvabi_boot_cmdline(buf: *mut u8, len: usize) -> i64 {
    let pv = match handle() {
        Ok(pv) => pv,
        Err(s) => return code(s),
    };
    let out: &mut [u8] = if len == 0 {
        &mut []
    } else if buf.is_null() {
        return code(Status::INVALID_PARAM);
    } else {
        // SAFETY: non-null, valid for `len` bytes of writes and not accessed by anything
        // else during the call (caller); the host does not write it (the shim copies into
        // it), and `u8` has no alignment or validity requirement.
        unsafe { core::slice::from_raw_parts_mut(buf, len) }
    };
    value(
        pv.boot_cmdline(out)
            .map(|n| n as u64)
            .ok_or(Status::INVALID_ADDRESS),
    )
}

/// BASE.GET_ABI_VERSION (`BASE-1`): `major << 16 | minor`.
#[no_mangle]
pub extern "C" fn pvabi_abi_version() -> i64 {
    value(
        handle()
            .and_then(|pv| pv.abi_version())
            .map(|v| u64::from(v.to_u32())),
    )
}

/// BASE.GET_BACKEND_ID (`BASE-3`): `PVABI_BACKEND_*`.
#[no_mangle]
pub extern "C" fn pvabi_backend_id() -> i64 {
    value(handle().and_then(|pv| pv.backend_id()).map(u64::from))
}

/// BASE.GET_BACKEND_VERSION (`BASE-4`) into `*out`.
///
/// # Errors
///
/// `INVALID_PARAM` for a null or misaligned `out`; the host's status.
///
/// # Safety
///
/// `out` must be null or valid for writing a `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn pvabi_backend_version(out: *mut u64) -> i64 {
    if let Err(s) = check_out(out) {
        return code(s);
    }
    // SAFETY: forwarded precondition on `out`.
    unsafe { put(out, handle().and_then(|pv| pv.backend_version())) }
}

/// BASE.PROBE_SERVICE (`BASE-5`): the service's function count, 0 when absent.
#[no_mangle]
pub extern "C" fn pvabi_probe_service(svc: u32) -> i64 {
    let Ok(svc) = u16::try_from(svc) else {
        return code(Status::INVALID_PARAM);
    };
    value(
        handle()
            .and_then(|pv| pv.probe_service(ServiceId(svc)))
            .map(u64::from),
    )
}

/// BASE.GET_FEATURES (`BASE-7`) into `*out`.
///
/// # Errors
///
/// `INVALID_PARAM` for a null or misaligned `out`; the host's status.
///
/// # Safety
///
/// `out` must be null or valid for writing a `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn pvabi_get_features(out: *mut u64) -> i64 {
    if let Err(s) = check_out(out) {
        return code(s);
    }
    // SAFETY: forwarded precondition on `out`.
    unsafe {
        put(
            out,
            handle().and_then(|pv| pv.get_features()).map(|f| f.bits()),
        )
    }
}

/// BASE.GET_VCPU_ID (`BASE-8`): the calling vCPU's id.
#[no_mangle]
pub extern "C" fn pvabi_vcpu_id() -> i64 {
    value(handle().and_then(|pv| pv.vcpu_id()).map(u64::from))
}

/// BASE.GET_VCPU_COUNT (`BASE-9`).
#[no_mangle]
pub extern "C" fn pvabi_vcpu_count() -> i64 {
    value(handle().and_then(|pv| pv.vcpu_count()).map(u64::from))
}

/// Makes a call whose arguments name no guest memory (the calls `pvabi_guest` calls scalar:
/// BASE queries, EVENT.SEND, CLOCK.GET_TIME, ...); the value goes to `*value_out` when it is
/// not null.
///
/// # Errors
///
/// `INVALID_PARAM` for a call that takes guest addresses or does not return (not sent), or
/// a misaligned `value_out`; the host's status.
///
/// # Safety
///
/// `value_out` must be null or valid for writing a `uint64_t`.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn pvabi_call_scalar(
    call_id: u32,
    a0: u64,
    a1: u64,
    a2: u64,
    a3: u64,
    a4: u64,
    a5: u64,
    value_out: *mut u64,
) -> i64 {
    if !value_out.is_null() && !value_out.is_aligned() {
        return code(Status::INVALID_PARAM);
    }
    let r = handle().and_then(|pv| pv.call_scalar(CallId(call_id), [a0, a1, a2, a3, a4, a5]));
    match r {
        Ok(v) => {
            if !value_out.is_null() {
                // SAFETY: non-null and aligned (checked above), valid for a write (caller).
                unsafe { value_out.write(v) };
            }
            0
        }
        Err(s) => code(s),
    }
}

// ---------------------------------------------------------------------------------------------
// CONSOLE

/// Writes all `len` bytes at `buf` to the console (CONSOLE.WRITE in chunks, `CONS-1`);
/// returns `len`.
///
/// # Errors
///
/// `INVALID_PARAM` for a null `buf` with a nonzero `len`; the host's status; `BUSY` if the
/// host keeps accepting nothing.
///
/// # Safety
///
/// `buf` must be valid for reads of `len` bytes that nothing writes during the call.
#[no_mangle]
pub unsafe extern "C" fn pvabi_console_write(buf: *const u8, len: usize) -> i64 {
    // SAFETY: forwarded precondition on `buf` and `len`.
    let bytes = match unsafe { in_slice(buf, len) } {
        Ok(b) => b,
        Err(s) => return code(s),
    };
    let r = handle().and_then(|pv| pv.console().write_all(bytes));
    value(r.map(|()| len as u64))
}

/// Writes the NUL-terminated string `s` to the console; returns its length.
///
/// # Errors
///
/// `INVALID_PARAM` for a null `s`; as [`pvabi_console_write`].
///
/// # Safety
///
/// `s` must be null or point to a NUL-terminated string that nothing writes during the call.
#[no_mangle]
pub unsafe extern "C" fn pvabi_console_puts(s: *const c_char) -> i64 {
    if s.is_null() {
        return code(Status::INVALID_PARAM);
    }
    let mut len = 0usize;
    // SAFETY: `s` is non-null and NUL-terminated (caller), so every byte up to and including
    // the terminator is readable; the loop stops at the terminator. (Volatile reads keep the
    // compiler from turning the loop into a `strlen` call: the library needs nothing from a C
    // library but the memory functions.)
    while unsafe { s.add(len).read_volatile() } != 0 {
        len += 1;
    }
    // SAFETY: the `len` bytes before the terminator are readable and not written meanwhile
    // (caller).
    let bytes = match unsafe { in_slice(s.cast::<u8>(), len) } {
        Ok(b) => b,
        Err(st) => return code(st),
    };
    let r = handle().and_then(|pv| pv.console().write_all(bytes));
    value(r.map(|()| bytes.len() as u64))
}

/// CONSOLE.WRITE_BYTE (`CONS-3`).
#[no_mangle]
pub extern "C" fn pvabi_console_write_byte(b: u8) -> i64 {
    unit(handle().and_then(|pv| pv.console().write_byte(b)))
}

/// CONSOLE.READ (`CONS-4`) of at most `len` (and `PVABI_CONSOLE_MAX_TRANSFER`) bytes into
/// `buf`; returns the bytes read (0 when there is no input).
///
/// # Errors
///
/// `INVALID_PARAM` for a null `buf` with a nonzero `len`; `INVALID_ADDRESS` if `buf` is not
/// in RAM (not sent); the host's status; `FAILED` if the host claims more bytes than asked.
///
/// # Safety
///
/// `buf` must be valid for writes of `len` bytes that nothing else accesses during the call
/// (the host writes them).
#[no_mangle]
pub unsafe extern "C" fn pvabi_console_read(buf: *mut u8, len: usize) -> i64 {
    let len = len.min(pvabi::console::MAX_TRANSFER as usize);
    let r = handle().and_then(|pv| {
        let gpa = gpa_of(&pv, buf, len)?;
        let n = pv.call2(call::CONSOLE_READ, gpa, len as u64)?;
        if n > len as u64 {
            return Err(Status::FAILED);
        }
        Ok(n)
    });
    value(r)
}

// ---------------------------------------------------------------------------------------------
// CLOCK

/// Checks a shared-area pointer: non-null and aligned to `T`.
fn check_area<T>(p: *const T) -> Result<(), Status> {
    if p.is_null() || !p.is_aligned() {
        Err(Status::INVALID_PARAM)
    } else {
        Ok(())
    }
}

/// CLOCK.REGISTER_PAGE (`CLK-1`) of `page` for the calling vCPU.
///
/// # Errors
///
/// `INVALID_PARAM` for a null page or one not 32-byte aligned; `INVALID_ADDRESS` if it is not
/// in RAM (not sent); the host's status.
///
/// # Safety
///
/// `page` must be null or point to a `struct pvabi_clock_page` that stays valid for as long as
/// the registration lasts and that the kernel accesses only with atomic (or volatile)
/// operations while the host writes it.
#[no_mangle]
pub unsafe extern "C" fn pvabi_clock_register_page(page: *mut ClockPageShared) -> i64 {
    if let Err(s) = check_area(page) {
        return code(s);
    }
    // SAFETY: non-null and aligned (checked); valid for the registration's lifetime, which the
    // caller guarantees for as long as the shim can reach it, and made of atomics only, so a
    // shared reference tolerates the host's concurrent writes.
    let page: &'static ClockPageShared = unsafe { &*page };
    unit(handle().and_then(|pv| pv.clock_register_page(page).map(drop)))
}

/// CLOCK.UNREGISTER_PAGE (`CLK-5`) for the calling vCPU.
#[no_mangle]
pub extern "C" fn pvabi_clock_unregister_page() -> i64 {
    unit(handle().and_then(|pv| pv.clock_unregister_page()))
}

/// Reads system time in ns from a registered clock page (seqlock protocol, RDTSC) into
/// `*out`. Needs no handle.
///
/// # Errors
///
/// `INVALID_PARAM` for a null or misaligned `page` or `out`; `BAD_STATE` while the host has
/// never written the page; `BUSY` if the page never reads consistently.
///
/// # Safety
///
/// As [`pvabi_clock_register_page`] for `page`; `out` must be null or valid for writing a
/// `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn pvabi_clock_read_ns(page: *const ClockPageShared, out: *mut u64) -> i64 {
    if let Err(s) = check_area(page) {
        return code(s);
    }
    // SAFETY: non-null and aligned (checked), valid (caller), atomics only (see
    // `pvabi_clock_register_page`).
    let page: &'static ClockPageShared = unsafe { &*page };
    // SAFETY: forwarded precondition on `out`.
    unsafe { put(out, Clock::from_page(page).now_ns()) }
}

/// CLOCK.GET_TIME (`CLK-7`): system time in ns, from the host, into `*out`.
///
/// # Errors
///
/// `INVALID_PARAM` for a null or misaligned `out`; the host's status.
///
/// # Safety
///
/// `out` must be null or valid for writing a `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn pvabi_clock_get_time(out: *mut u64) -> i64 {
    if let Err(s) = check_out(out) {
        return code(s);
    }
    // SAFETY: forwarded precondition on `out`.
    unsafe { put(out, handle().and_then(|pv| pv.time_ns())) }
}

/// CLOCK.GET_WALLCLOCK (`CLK-6`): ns since the UNIX epoch at system time 0, into `*out`.
///
/// # Errors
///
/// `INVALID_PARAM` for a null or misaligned `out`; the host's status.
///
/// # Safety
///
/// `out` must be null or valid for writing a `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn pvabi_clock_get_wallclock(out: *mut u64) -> i64 {
    if let Err(s) = check_out(out) {
        return code(s);
    }
    // SAFETY: forwarded precondition on `out`.
    unsafe { put(out, handle().and_then(|pv| pv.wallclock_base_ns())) }
}

/// CLOCK.SET_TIMER (`CLK-8`): raise `port` at system time `deadline_ns` (one-shot).
///
/// # Errors
///
/// `INVALID_PARAM` for deadline 0 (use [`pvabi_timer_cancel`]) or an invalid port (not
/// sent); the host's status.
#[no_mangle]
pub extern "C" fn pvabi_timer_set(deadline_ns: u64, port: u32) -> i64 {
    unit(handle().and_then(|pv| pv.set_timer(deadline_ns, Port(port))))
}

/// CLOCK.SET_TIMER with deadline 0: cancels the timer on `port`.
#[no_mangle]
pub extern "C" fn pvabi_timer_cancel(port: u32) -> i64 {
    unit(handle().and_then(|pv| pv.cancel_timer(Port(port))))
}

/// VCPU.REGISTER_STEAL_TIME (`VCPU-11`) of `rec` for the calling vCPU.
///
/// # Errors
///
/// `INVALID_PARAM` for a null record or one not 64-byte aligned; `INVALID_ADDRESS` if it is
/// not in RAM (not sent); the host's status.
///
/// # Safety
///
/// `rec` must be null or point to a `struct pvabi_steal_time` that stays valid while
/// registered and that the kernel accesses only atomically while the host writes it.
#[no_mangle]
pub unsafe extern "C" fn pvabi_steal_time_register(rec: *mut StealTimeShared) -> i64 {
    if let Err(s) = check_area(rec) {
        return code(s);
    }
    // SAFETY: non-null and aligned (checked), valid while registered (caller), atomics only.
    let rec: &'static StealTimeShared = unsafe { &*rec };
    unit(handle().and_then(|pv| pv.register_steal_time(rec)))
}

// ---------------------------------------------------------------------------------------------
// VCPU

/// VCPU.YIELD (`VCPU-2`).
#[no_mangle]
pub extern "C" fn pvabi_vcpu_yield() -> i64 {
    unit(handle().and_then(|pv| pv.vcpu_yield()))
}

/// VCPU.BLOCK (`VCPU-3`) until an event, a kick or system time `deadline_ns`
/// (`PVABI_VCPU_BLOCK_FOREVER`, 0, for none). Returns 0 when woken, `PVABI_STATUS_TIMED_OUT`
/// when the deadline passed, or another host status.
#[no_mangle]
pub extern "C" fn pvabi_vcpu_block(deadline_ns: u64) -> i64 {
    value(handle().and_then(|pv| pv.call1(call::VCPU_BLOCK, deadline_ns).map(|_| 0)))
}

/// VCPU.KICK (`VCPU-5`): wake `vcpu` if it is blocked.
#[no_mangle]
pub extern "C" fn pvabi_vcpu_kick(vcpu: u32) -> i64 {
    unit(handle().and_then(|pv| pv.vcpu_kick(vcpu)))
}

/// VCPU.START (`VCPU-6`): starts `vcpu` at `entry(arg, vcpu)` on the stack
/// `[stack, stack + stack_len)`, which the new vCPU owns from then on. The stack gets the
/// shim's return trap as return address, so a returning `entry` stops the vCPU (VCPU.STOP,
/// or power-off with 0 for the last running vCPU).
///
/// # Errors
///
/// `INVALID_PARAM` for a null `entry` or `stack`, a stack below 256 bytes or a vCPU id not
/// below the vCPU count (not sent); the host's status.
///
/// # Safety
///
/// `stack` must be valid for writes of `stack_len` bytes and belong to the new vCPU alone
/// from this call on; `entry` must be safe to run on that vCPU with that stack in the
/// kernel's address space.
#[no_mangle]
pub unsafe extern "C" fn pvabi_vcpu_start(
    vcpu: u32,
    entry: Option<CVcpuEntry>,
    stack: *mut u8,
    stack_len: usize,
    arg: u64,
) -> i64 {
    let pv = match handle() {
        Ok(pv) => pv,
        Err(s) => return code(s),
    };
    let Some(entry) = entry else {
        return code(Status::INVALID_PARAM);
    };
    if stack.is_null() || stack_len < MIN_STACK || vcpu >= pv.info().vcpu_count {
        return code(Status::INVALID_PARAM);
    }
    let base = stack as usize;
    let Some(top) = base.checked_add(stack_len).map(|t| t & !15) else {
        return code(Status::INVALID_PARAM);
    };
    // `top - 8 >= base` because the stack is at least MIN_STACK (> 23) bytes long.
    let off = top - 8 - base;
    let trap = crate::gate::upcall_entry::vcpu_return_trap_address() as u64;
    // SAFETY: `off + 8 <= stack_len` (the top was rounded down, then 8 subtracted), so the
    // write stays inside the stack, which is valid for writes and owned by the caller until
    // the vCPU starts (caller); unaligned writes have no alignment requirement.
    unsafe { stack.add(off).cast::<u64>().write_unaligned(trap) };
    crate::gate::upcall_entry::remember_exit_gate(pv.gate().register_gate());
    let rsp = (base + off) as u64;
    unit(
        pv.call(
            call::VCPU_START,
            [u64::from(vcpu), entry as usize as u64, rsp, arg, 0, 0],
        )
        .map(drop),
    )
}

/// VCPU.STOP (`VCPU-9`): stops the calling vCPU. Returns only if the host refused, with its
/// status.
#[no_mangle]
pub extern "C" fn pvabi_vcpu_stop() -> i64 {
    match handle() {
        Ok(pv) => code(pv.vcpu_stop()),
        Err(s) => code(s),
    }
}

/// VCPU.GET_STATUS (`VCPU-10`): `PVABI_VCPU_STATE_*` of `vcpu`.
#[no_mangle]
pub extern "C" fn pvabi_vcpu_status(vcpu: u32) -> i64 {
    value(
        handle()
            .and_then(|pv| pv.vcpu_status(vcpu))
            .map(|s| u64::from(s.0)),
    )
}

// ---------------------------------------------------------------------------------------------
// EVENT

/// The registered event page, or `BAD_STATE`.
fn events() -> Result<EventChannels, Status> {
    let p = EVENT_PAGE.load(Ordering::Acquire);
    if p.is_null() {
        return Err(Status::BAD_STATE);
    }
    // SAFETY: only `pvabi_event_register_page` stores here, a non-null, aligned pointer to
    // a page its caller keeps valid for the rest of the program and accesses only atomically;
    // the page is made of atomics, so a shared reference tolerates the host's writes.
    Ok(EventChannels::from_page(unsafe { &*p }))
}

fn valid_port(port: u32) -> Result<Port, Status> {
    let p = Port(port);
    if p.is_valid() {
        Ok(p)
    } else {
        Err(Status::INVALID_PARAM)
    }
}

/// EVENT.REGISTER_PAGE (`EVT-1`): zeroes `page` and registers it; the shim keeps it for the
/// pending-bit and upcall functions below.
///
/// # Errors
///
/// `INVALID_PARAM` for a null page or one not 4096-byte aligned; `INVALID_ADDRESS` if it is
/// not in RAM (not sent); the host's status.
///
/// # Safety
///
/// `page` must be null or point to a `struct pvabi_event_page` that stays valid for the rest
/// of the program and that the kernel accesses only atomically from now on.
#[no_mangle]
pub unsafe extern "C" fn pvabi_event_register_page(page: *mut EventPageShared) -> i64 {
    if let Err(s) = check_area(page) {
        return code(s);
    }
    // SAFETY: non-null and aligned (checked), valid for the rest of the program and
    // accessed only atomically (caller); it is made of atomics.
    let r: &'static EventPageShared = unsafe { &*page };
    let res = handle().and_then(|pv| pv.event_register_page(r));
    if res.is_ok() {
        EVENT_PAGE.store(page, Ordering::Release);
    }
    unit(res.map(drop))
}

/// EVENT.ALLOC (`EVT-3`): returns a new port (1..`PVABI_EVENT_NUM_PORTS`-1).
#[no_mangle]
pub extern "C" fn pvabi_event_alloc() -> i64 {
    value(handle().and_then(|pv| pv.event_alloc()).map(|p| p.arg()))
}

/// EVENT.BIND_VCPU (`EVT-4`): deliver `port` to `vcpu`.
#[no_mangle]
pub extern "C" fn pvabi_event_bind_vcpu(port: u32, vcpu: u32) -> i64 {
    unit(handle().and_then(|pv| pv.event_bind_vcpu(Port(port), vcpu)))
}

/// EVENT.CLOSE (`EVT-5`).
#[no_mangle]
pub extern "C" fn pvabi_event_close(port: u32) -> i64 {
    unit(handle().and_then(|pv| pv.event_close(Port(port))))
}

/// EVENT.SEND (`EVT-6`).
#[no_mangle]
pub extern "C" fn pvabi_event_send(port: u32) -> i64 {
    unit(handle().and_then(|pv| pv.event_send(Port(port))))
}

/// EVENT.MASK (`EVT-8`).
#[no_mangle]
pub extern "C" fn pvabi_event_mask(port: u32) -> i64 {
    unit(handle().and_then(|pv| pv.event_mask(Port(port))))
}

/// EVENT.UNMASK (`EVT-9`): a pending port is delivered on unmask.
#[no_mangle]
pub extern "C" fn pvabi_event_unmask(port: u32) -> i64 {
    unit(handle().and_then(|pv| pv.event_unmask(Port(port))))
}

/// Whether `port` is pending in the registered event page: 1 or 0.
///
/// # Errors
///
/// `INVALID_PARAM` for an invalid port; `BAD_STATE` before [`pvabi_event_register_page`].
#[no_mangle]
pub extern "C" fn pvabi_event_is_pending(port: u32) -> i64 {
    let r = valid_port(port).and_then(|p| Ok(u64::from(events()?.is_pending(p))));
    value(r)
}

/// Clears `port`'s pending bit (acknowledge, `EVT-7`); returns 1 if it was set, 0 if not.
///
/// # Errors
///
/// As [`pvabi_event_is_pending`].
#[no_mangle]
pub extern "C" fn pvabi_event_clear_pending(port: u32) -> i64 {
    let r = valid_port(port).and_then(|p| Ok(u64::from(events()?.clear_pending(p))));
    value(r)
}

/// EVENT.SET_UPCALL(NONE) (`EVT-10`): no upcalls for the calling vCPU; it polls.
#[no_mangle]
pub extern "C" fn pvabi_event_set_upcall_none() -> i64 {
    unit(handle().and_then(|pv| pv.set_upcall_none()))
}

/// EVENT.SET_UPCALL(VECTOR, `vector`) (`EVT-10`) for the calling vCPU (ring 0): point the
/// IDT gate of `vector` at [`pvabi_upcall_vector_entry_address`] first.
///
/// # Errors
///
/// `INVALID_PARAM` for a vector below 32 (not sent); the host's status.
#[no_mangle]
pub extern "C" fn pvabi_event_set_upcall_vector(vector: u8) -> i64 {
    unit(handle().and_then(|pv| pv.set_upcall_vector(vector)))
}

/// EVENT.SET_UPCALL(CALLBACK) (`EVT-10`, `EVT-12`) for the calling vCPU (paravirtual ring 3),
/// with the shim's callback entry as the target.
///
/// # Errors
///
/// `BAD_STATE` before [`pvabi_upcall_install`] (not sent); the host's status.
#[no_mangle]
pub extern "C" fn pvabi_event_set_upcall_callback() -> i64 {
    unit(handle().and_then(|pv| pv.set_upcall_callback()))
}

/// Calls the C handler kept by [`pvabi_upcall_install`].
fn c_trampoline(port: Port, info: &UpcallInfo) {
    let raw = C_HANDLER.load(Ordering::Acquire);
    if raw == 0 {
        return;
    }
    // SAFETY: `C_HANDLER` holds 0 (handled above) or the address of a `CPortHandler` that
    // `pvabi_upcall_install` stored from a non-null function pointer of exactly this type;
    // function pointers and `usize` have the same size on the supported targets.
    let f = unsafe { core::mem::transmute::<usize, CPortHandler>(raw) };
    f(port.0, info.vcpu);
}

/// Installs `handler` for upcalls (replacing any earlier one): the shim's vector and callback
/// entries scan the registered event page and call `handler(port, vcpu)` once per pending,
/// unmasked port, clearing its pending bit first. Call it once before enabling upcalls.
///
/// # Errors
///
/// `INVALID_PARAM` for a null handler; `BAD_STATE` before [`pvabi_init`] or
/// [`pvabi_event_register_page`].
#[no_mangle]
pub extern "C" fn pvabi_upcall_install(handler: Option<CPortHandler>) -> i64 {
    let Some(handler) = handler else {
        return code(Status::INVALID_PARAM);
    };
    let r = handle().and_then(|pv| {
        let ev = events()?;
        C_HANDLER.store(handler as usize, Ordering::Release);
        crate::upcall::install(&pv, &ev, c_trampoline);
        Ok(())
    });
    unit(r)
}

/// Scans vCPU `vcpu`'s pending events and calls the installed handler per port (for kernels
/// that poll); returns the number handled.
#[no_mangle]
pub extern "C" fn pvabi_upcall_dispatch_pending(vcpu: u32) -> i64 {
    value(Ok(crate::upcall::dispatch_pending(vcpu) as u64))
}

/// The address of the shim's interrupt entry (`pvabi_upcall_vector_entry`), for the IDT gate
/// of the upcall vector (ring 0).
#[no_mangle]
pub extern "C" fn pvabi_upcall_vector_entry_address() -> u64 {
    crate::upcall::vector_entry_address() as u64
}

// ---------------------------------------------------------------------------------------------
// MEMORY and GRANT

/// MEMORY.GET_MAP (`MEM-1`) into `entries` (room for `count`); returns the host's total number
/// of entries (the first `min(total, count)` were written).
///
/// # Errors
///
/// `INVALID_PARAM` for a null or misaligned `entries` with a nonzero `count`;
/// `INVALID_ADDRESS` if the array is not in RAM (not sent); the host's status.
///
/// # Safety
///
/// `entries` must be valid for writes of `count` entries that nothing else accesses during
/// the call (the host writes them).
#[no_mangle]
pub unsafe extern "C" fn pvabi_memory_get_map(entries: *mut MemMapEntry, count: usize) -> i64 {
    if count != 0 && !entries.is_aligned() {
        return code(Status::INVALID_PARAM);
    }
    let r = handle().and_then(|pv| {
        let bytes = count
            .checked_mul(MemMapEntry::SIZE)
            .ok_or(Status::INVALID_PARAM)?;
        let gpa = gpa_of(&pv, entries.cast(), bytes)?;
        pv.call2(call::MEMORY_GET_MAP, gpa, count as u64)
    });
    value(r)
}

fn page_range(pv: &Pvabi, pages: *const u8, count: u64) -> Result<u64, Status> {
    if count == 0 || count > MAX_BALLOON_PAGES_PER_CALL || pages.is_null() {
        return Err(Status::INVALID_PARAM);
    }
    if (pages as usize) % (PAGE_SIZE as usize) != 0 {
        return Err(Status::INVALID_PARAM);
    }
    let len = usize::try_from(count)
        .ok()
        .and_then(|c| c.checked_mul(PAGE_SIZE as usize))
        .ok_or(Status::INVALID_PARAM)?;
    gpa_of(pv, pages, len)
}

/// MEMORY.BALLOON_RELEASE (`MEM-4`): gives the `count` pages at `pages` to the host.
///
/// # Errors
///
/// `INVALID_PARAM` for a null or not page-aligned `pages` or a count of 0 or above the
/// per-call limit; `INVALID_ADDRESS` outside RAM (not sent); the host's status (the pages may
/// then be partially released).
///
/// # Safety
///
/// The kernel must not access the pages until [`pvabi_balloon_reclaim`] returned them.
#[no_mangle]
pub unsafe extern "C" fn pvabi_balloon_release(pages: *mut u8, count: u64) -> i64 {
    let r = handle().and_then(|pv| {
        let gpa = page_range(&pv, pages, count)?;
        pv.call2(call::MEMORY_BALLOON_RELEASE, gpa, count).map(drop)
    });
    unit(r)
}

/// MEMORY.BALLOON_RECLAIM (`MEM-6`): takes the `count` pages at `pages` back (contents
/// unspecified).
///
/// # Errors
///
/// As [`pvabi_balloon_release`].
///
/// # Safety
///
/// The pages must have been released with [`pvabi_balloon_release`] and not be accessed
/// during the call.
#[no_mangle]
pub unsafe extern "C" fn pvabi_balloon_reclaim(pages: *mut u8, count: u64) -> i64 {
    let r = handle().and_then(|pv| {
        let gpa = page_range(&pv, pages, count)?;
        pv.call2(call::MEMORY_BALLOON_RECLAIM, gpa, count).map(drop)
    });
    unit(r)
}

/// MEMORY.BALLOON_QUERY (`MEM-8`): pages currently released.
#[no_mangle]
pub extern "C" fn pvabi_balloon_query() -> i64 {
    value(handle().and_then(|pv| pv.balloon_query()))
}

/// GRANT.SETUP_TABLE (`GNT-1`): registers the `count` entries at `table` (the kernel fills
/// entries with atomic stores, `flags` last).
///
/// # Errors
///
/// `INVALID_PARAM` for a null or misaligned table or a count of 0 or above
/// `PVABI_GRANT_MAX_ENTRIES`; `INVALID_ADDRESS` outside RAM (not sent); the host's status.
///
/// # Safety
///
/// `table` must stay valid while registered and be accessed by the kernel only atomically.
#[no_mangle]
pub unsafe extern "C" fn pvabi_grant_setup_table(table: *mut GrantEntryShared, count: u32) -> i64 {
    if let Err(s) = check_area(table) {
        return code(s);
    }
    if count == 0 || u64::from(count) > pvabi::grant::MAX_ENTRIES {
        return code(Status::INVALID_PARAM);
    }
    let r = handle().and_then(|pv| {
        let len = (count as usize)
            .checked_mul(core::mem::size_of::<GrantEntryShared>())
            .ok_or(Status::INVALID_PARAM)?;
        let gpa = gpa_of(&pv, table.cast(), len)?;
        pv.call2(call::GRANT_SETUP_TABLE, gpa, u64::from(count))
            .map(drop)
    });
    unit(r)
}

/// GRANT.QUERY (`GNT-3`): the most entries the host accepts.
#[no_mangle]
pub extern "C" fn pvabi_grant_query() -> i64 {
    value(handle().and_then(|pv| pv.grant_query()))
}

// ---------------------------------------------------------------------------------------------
// STORE

/// STORE.READ (`STORE-3`) of the `path_len`-byte path at `path` into `buf` (room for
/// `buf_len`), in transaction `txn_id` (`PVABI_STORE_NO_TXN` for none); returns the value's
/// length.
///
/// # Errors
///
/// `INVALID_PARAM` for a null pointer with a nonzero length; `INVALID_ADDRESS` outside RAM
/// (not sent); the host's status (`BUFFER_TOO_SMALL`: see [`pvabi_store_read_len`]); `FAILED`
/// if the host claims more bytes than fit.
///
/// # Safety
///
/// `path` must be valid for reads of `path_len` bytes and `buf` for writes of `buf_len` bytes
/// (the host writes them), neither accessed by anything else during the call.
#[no_mangle]
pub unsafe extern "C" fn pvabi_store_read(
    path: *const u8,
    path_len: usize,
    buf: *mut u8,
    buf_len: usize,
    txn_id: u64,
) -> i64 {
    let r = handle().and_then(|pv| {
        let p = gpa_of(&pv, path, path_len)?;
        let b = gpa_of(&pv, buf, buf_len)?;
        let n = pv.call(
            call::STORE_READ,
            [p, path_len as u64, b, buf_len as u64, txn_id, 0],
        )?;
        if n > buf_len as u64 {
            return Err(Status::FAILED);
        }
        Ok(n)
    });
    value(r)
}

/// The length of the value at `path` (STORE.READ with an empty buffer).
///
/// # Errors
///
/// As [`pvabi_store_read`], except that `BUFFER_TOO_SMALL` is the answer, not an error.
///
/// # Safety
///
/// `path` must be valid for reads of `path_len` bytes that nothing writes during the call.
#[no_mangle]
pub unsafe extern "C" fn pvabi_store_read_len(
    path: *const u8,
    path_len: usize,
    txn_id: u64,
) -> i64 {
    // SAFETY: forwarded precondition on `path`.
    let path = match unsafe { in_slice(path, path_len) } {
        Ok(p) => p,
        Err(s) => return code(s),
    };
    value(handle().and_then(|pv| pv.store_read_len(path, opt_txn(txn_id))))
}

fn opt_txn(t: u64) -> Option<crate::store::Txn> {
    (t != pvabi::store::NO_TXN).then_some(crate::store::Txn(t))
}

/// STORE.WRITE (`STORE-5`) of `value_len` bytes at `value` to `path`.
///
/// # Errors
///
/// `INVALID_PARAM` for a null pointer with a nonzero length; `INVALID_ADDRESS` outside RAM
/// (not sent); the host's status.
///
/// # Safety
///
/// `path` and `value` must be valid for reads of their lengths, not written during the call.
#[no_mangle]
pub unsafe extern "C" fn pvabi_store_write(
    path: *const u8,
    path_len: usize,
    value_ptr: *const u8,
    value_len: usize,
    txn_id: u64,
) -> i64 {
    // SAFETY: forwarded preconditions on both ranges.
    let (p, v) = match unsafe { (in_slice(path, path_len), in_slice(value_ptr, value_len)) } {
        (Ok(p), Ok(v)) => (p, v),
        (Err(s), _) | (_, Err(s)) => return code(s),
    };
    unit(handle().and_then(|pv| pv.store_write(p, v, opt_txn(txn_id))))
}

/// STORE.LIST (`STORE-7`) of `path`'s children into `buf` as NUL-terminated names; returns the
/// bytes written.
///
/// # Errors
///
/// As [`pvabi_store_read`].
///
/// # Safety
///
/// As [`pvabi_store_read`].
#[no_mangle]
pub unsafe extern "C" fn pvabi_store_list(
    path: *const u8,
    path_len: usize,
    buf: *mut u8,
    buf_len: usize,
    txn_id: u64,
) -> i64 {
    let r = handle().and_then(|pv| {
        let p = gpa_of(&pv, path, path_len)?;
        let b = gpa_of(&pv, buf, buf_len)?;
        let n = pv.call(
            call::STORE_LIST,
            [p, path_len as u64, b, buf_len as u64, txn_id, 0],
        )?;
        if n > buf_len as u64 {
            return Err(Status::FAILED);
        }
        Ok(n)
    });
    value(r)
}

/// STORE.REMOVE (`STORE-8`) of `path` and everything below it.
///
/// # Errors
///
/// As [`pvabi_store_write`].
///
/// # Safety
///
/// `path` must be valid for reads of `path_len` bytes that nothing writes during the call.
#[no_mangle]
pub unsafe extern "C" fn pvabi_store_remove(path: *const u8, path_len: usize, txn_id: u64) -> i64 {
    // SAFETY: forwarded precondition on `path`.
    let p = match unsafe { in_slice(path, path_len) } {
        Ok(p) => p,
        Err(s) => return code(s),
    };
    unit(handle().and_then(|pv| pv.store_remove(p, opt_txn(txn_id))))
}

/// STORE.WATCH (`STORE-10`): raise `port` when `path` or anything below it changes; returns
/// the watch id.
///
/// # Errors
///
/// As [`pvabi_store_write`]; `FAILED` for a host watch id of 0 or above 32 bits.
///
/// # Safety
///
/// `path` must be valid for reads of `path_len` bytes that nothing writes during the call.
#[no_mangle]
pub unsafe extern "C" fn pvabi_store_watch(path: *const u8, path_len: usize, port: u32) -> i64 {
    // SAFETY: forwarded precondition on `path`.
    let p = match unsafe { in_slice(path, path_len) } {
        Ok(p) => p,
        Err(s) => return code(s),
    };
    value(
        handle()
            .and_then(|pv| pv.store_watch(p, Port(port)))
            .map(|w| u64::from(w.0)),
    )
}

/// STORE.UNWATCH (`STORE-12`).
#[no_mangle]
pub extern "C" fn pvabi_store_unwatch(watch_id: u32) -> i64 {
    unit(handle().and_then(|pv| pv.store_unwatch(crate::store::WatchId(watch_id))))
}

/// STORE.WATCH_NEXT (`STORE-13`) into `buf`: a `struct pvabi_watch_event` followed by the
/// path; returns the bytes written, 0 when the queue is empty.
///
/// # Errors
///
/// `INVALID_PARAM` for a null `buf` with a nonzero length; `INVALID_ADDRESS` outside RAM (not
/// sent); the host's status (`BUFFER_TOO_SMALL` when the event does not fit); `FAILED` if the
/// host claims more bytes than fit.
///
/// # Safety
///
/// `buf` must be valid for writes of `buf_len` bytes that nothing else accesses during the
/// call (the host writes them).
#[no_mangle]
pub unsafe extern "C" fn pvabi_store_watch_next(buf: *mut u8, buf_len: usize) -> i64 {
    let r = handle().and_then(|pv| {
        let b = gpa_of(&pv, buf, buf_len)?;
        match pv.call2(call::STORE_WATCH_NEXT, b, buf_len as u64) {
            Ok(n) if n <= buf_len as u64 => Ok(n),
            Ok(_) => Err(Status::FAILED),
            Err(Status::NOT_FOUND) => Ok(0),
            Err(e) => Err(e),
        }
    });
    value(r)
}

/// STORE.TXN_START (`STORE-15`): returns the transaction id (never 0).
#[no_mangle]
pub extern "C" fn pvabi_store_txn_start() -> i64 {
    value(handle().and_then(|pv| pv.store_txn_start()).map(|t| t.0))
}

/// STORE.TXN_COMMIT (`STORE-16`): `PVABI_STATUS_CONFLICT` if a concurrent change won
/// (nothing was applied).
#[no_mangle]
pub extern "C" fn pvabi_store_txn_commit(txn_id: u64) -> i64 {
    unit(handle().and_then(|pv| pv.store_txn_commit(crate::store::Txn(txn_id))))
}

/// STORE.TXN_ABORT (`STORE-18`).
#[no_mangle]
pub extern "C" fn pvabi_store_txn_abort(txn_id: u64) -> i64 {
    unit(handle().and_then(|pv| pv.store_txn_abort(crate::store::Txn(txn_id))))
}

// ---------------------------------------------------------------------------------------------
// POWER

/// POWER.SHUTDOWN (`PWR-1`) with `reason` (`PVABI_SHUTDOWN_*`) and `exit_code`. Returns only if
/// the host refused, with its status.
#[no_mangle]
pub extern "C" fn pvabi_shutdown(reason: u32, exit_code: u64) -> i64 {
    match handle() {
        Ok(pv) => code(pv.shutdown(ShutdownReason(reason), exit_code)),
        Err(s) => code(s),
    }
}

/// Powers off with exit code `exit_code` (POWER.SHUTDOWN(POWEROFF)). Returns only if the host
/// refused, with its status.
#[no_mangle]
pub extern "C" fn pvabi_power_off(exit_code: u64) -> i64 {
    pvabi_shutdown(ShutdownReason::POWEROFF.0, exit_code)
}

/// Reboots (POWER.SHUTDOWN(REBOOT)). Returns only if the host refused, with its status.
#[no_mangle]
pub extern "C" fn pvabi_reboot() -> i64 {
    pvabi_shutdown(ShutdownReason::REBOOT.0, 0)
}

/// POWER.REGISTER_CRASH_BUFFER (`PWR-4`) of the `len` bytes at `area` (a
/// `struct pvabi_crash_header` then the message); the shim keeps it for [`pvabi_crash`].
///
/// # Errors
///
/// `INVALID_PARAM` for a null or not 8-byte aligned area, or a length below the header or
/// above `PVABI_CRASH_MAX_BUFFER`; `INVALID_ADDRESS` outside RAM (not sent); the host's
/// status.
///
/// # Safety
///
/// `area` must stay valid for writes of `len` bytes for the rest of the program, written
/// only through [`pvabi_crash`].
#[no_mangle]
pub unsafe extern "C" fn pvabi_crash_register_buffer(area: *mut u8, len: usize) -> i64 {
    if area.is_null()
        || (area as usize) % 8 != 0
        || len < CrashHeader::SIZE
        || len as u64 > CrashHeader::MAX_BUFFER
    {
        return code(Status::INVALID_PARAM);
    }
    let r = handle().and_then(|pv| {
        let gpa = gpa_of(&pv, area, len)?;
        pv.call2(call::POWER_REGISTER_CRASH_BUFFER, gpa, len as u64)
            .map(drop)
    });
    if r.is_ok() {
        CRASH_LEN.store(len, Ordering::Relaxed);
        CRASH_AREA.store(area, Ordering::Release);
    }
    unit(r)
}

/// Writes a crash report (`crash_code`, `rip`, the `msg_len` bytes at `msg`, truncated to fit)
/// into the registered crash buffer, if any, and shuts down with reason CRASH. Returns only
/// if the host refused, with its status.
///
/// # Safety
///
/// `msg` must be valid for reads of `msg_len` bytes that nothing writes during the call; no
/// other vCPU may crash at the same time.
#[no_mangle]
pub unsafe extern "C" fn pvabi_crash(
    crash_code: u64,
    rip: u64,
    msg: *const u8,
    msg_len: usize,
) -> i64 {
    let area = CRASH_AREA.load(Ordering::Acquire);
    if !area.is_null() {
        // SAFETY: forwarded precondition on `msg`; a bad message only loses the text.
        let msg = unsafe { in_slice(msg, msg_len) }.unwrap_or(&[]);
        let cap = CRASH_LEN.load(Ordering::Relaxed) - CrashHeader::SIZE;
        let n = msg.len().min(cap);
        // SAFETY: `area` was registered by `pvabi_crash_register_buffer`: non-null, 8-byte
        // aligned, at least `CrashHeader::SIZE` bytes, valid for writes of its length for the
        // rest of the program and written only here (its caller's promise), and one crash
        // runs at a time (ours). Offsets 0, 4, 8 and 16 are the header's magic, message_len,
        // code and rip (the ABI's layout), and the message of `n <= len - SIZE` bytes fits
        // after it. Magic is written last with release ordering through an atomic view of an
        // aligned `u32`, so the host never sees a half-written report as complete.
        unsafe {
            let magic = AtomicU32::from_ptr(area.cast::<u32>());
            magic.store(0, Ordering::Release);
            core::ptr::copy_nonoverlapping(msg.as_ptr(), area.add(CrashHeader::SIZE), n);
            area.add(4).cast::<u32>().write_volatile(n as u32);
            area.add(8).cast::<u64>().write_volatile(crash_code);
            area.add(16).cast::<u64>().write_volatile(rip);
            fence(Ordering::Release);
            magic.store(CrashHeader::MAGIC, Ordering::Release);
        }
    }
    pvabi_shutdown(ShutdownReason::CRASH.0, crash_code)
}

// ---------------------------------------------------------------------------------------------
// MULTICALL

/// MULTICALL.EXECUTE (`MC-1`) of the `count` entries at `entries` (the kernel fills `call_id`,
/// `flags` and `args`; the shim zeroes `status` and `value`, which the host fills); returns
/// how many ran.
///
/// # Errors
///
/// `INVALID_PARAM` for a null or misaligned array, a count of 0 or above
/// `PVABI_MULTICALL_MAX_ENTRIES`, or an entry whose call takes guest addresses or does not
/// return; `INVALID_ADDRESS` outside RAM (all not sent); the host's status; `FAILED` if the
/// host claims more entries ran than there are.
///
/// # Safety
///
/// `entries` must be valid for reads and writes of `count` entries that nothing else accesses
/// during the call (the host writes them).
#[no_mangle]
pub unsafe extern "C" fn pvabi_multicall(entries: *mut MulticallEntry, count: usize) -> i64 {
    if let Err(s) = check_area(entries) {
        return code(s);
    }
    if count == 0 || count as u64 > MAX_MULTICALL {
        return code(Status::INVALID_PARAM);
    }
    let pv = match handle() {
        Ok(pv) => pv,
        Err(s) => return code(s),
    };
    for i in 0..count {
        // SAFETY: `i < count`, so entry `i` is inside the array, which is non-null, aligned
        // (checked) and valid for reads and writes and not accessed by others (caller); the
        // fields are plain integers, accessed through raw pointers without references.
        let id = unsafe {
            let e = entries.add(i);
            core::ptr::addr_of_mut!((*e).status).write(0);
            core::ptr::addr_of_mut!((*e).value).write(0);
            core::ptr::addr_of!((*e).call_id).read()
        };
        if !crate::base::is_scalar_call(CallId(id)) {
            return code(Status::INVALID_PARAM);
        }
    }
    let r = count
        .checked_mul(MulticallEntry::SIZE)
        .ok_or(Status::INVALID_PARAM)
        .and_then(|len| gpa_of(&pv, entries.cast(), len))
        .and_then(|gpa| pv.call2(call::MULTICALL_EXECUTE, gpa, count as u64))
        .and_then(|ran| {
            if ran > count as u64 {
                Err(Status::FAILED)
            } else {
                Ok(ran)
            }
        });
    value(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Nothing in this test binary calls `pvabi_init` (it needs a bare-metal host), so the
    // handle stays empty: every function that needs it must refuse without calling a gate.
    #[test]
    fn everything_is_bad_state_before_init() {
        let bad = code(Status::BAD_STATE);
        let mut v = 0u64;
        assert_eq!(pvabi_is_ready(), 0);
        assert_eq!(pvabi_info_vcpu_count(), bad);
        assert_eq!(pvabi_abi_version(), bad);
        assert_eq!(pvabi_event_alloc(), bad);
        assert_eq!(pvabi_event_send(1), bad);
        assert_eq!(pvabi_store_txn_start(), bad);
        assert_eq!(pvabi_power_off(0), bad);
        // SAFETY: `v` is a live, aligned u64.
        assert_eq!(unsafe { pvabi_clock_get_time(&mut v) }, bad);
        let msg = b"x";
        // SAFETY: `msg` is readable for its length.
        assert_eq!(unsafe { pvabi_console_write(msg.as_ptr(), msg.len()) }, bad);
        // SAFETY: both ranges are readable for their lengths.
        let r = unsafe { pvabi_store_write(msg.as_ptr(), 1, msg.as_ptr(), 1, 0) };
        assert_eq!(r, bad);
        assert_eq!(pvabi_upcall_install(None), code(Status::INVALID_PARAM));
        assert_eq!(pvabi_event_is_pending(5), bad);
    }

    #[test]
    fn pointers_are_checked_before_anything_else() {
        let inval = code(Status::INVALID_PARAM);
        // SAFETY: null pointers are what is being tested; the functions must not use them.
        unsafe {
            assert_eq!(pvabi_clock_register_page(core::ptr::null_mut()), inval);
            assert_eq!(pvabi_event_register_page(core::ptr::null_mut()), inval);
            assert_eq!(pvabi_clock_get_time(core::ptr::null_mut()), inval);
            assert_eq!(pvabi_console_puts(core::ptr::null()), inval);
            assert_eq!(pvabi_console_write(core::ptr::null(), 3), inval);
            assert_eq!(pvabi_multicall(core::ptr::null_mut(), 1), inval);
            assert_eq!(
                pvabi_crash_register_buffer(core::ptr::null_mut(), 64),
                inval
            );
        }
        let misaligned = [0u64; 8];
        let p = (misaligned.as_ptr() as usize + 4) as *mut ClockPageShared;
        // SAFETY: the pointer is misaligned on purpose and must be refused before use.
        assert_eq!(unsafe { pvabi_clock_register_page(p) }, inval);
        assert_eq!(pvabi_event_is_pending(0), inval);
        assert_eq!(pvabi_event_clear_pending(pvabi::event::NUM_PORTS), inval);
    }

    #[test]
    fn clock_page_reads_follow_the_seqlock() {
        static PAGE: ClockPageShared = ClockPageShared::new();
        let mut ns = 0u64;
        // SAFETY: `PAGE` is a static of atomics; `ns` is a live, aligned u64.
        let r = unsafe { pvabi_clock_read_ns(&PAGE, &mut ns) };
        assert_eq!(
            r,
            code(Status::BAD_STATE),
            "a never-written page has no time"
        );
        PAGE.system_time.store(1_000, Ordering::Relaxed);
        PAGE.tsc_timestamp
            .store(crate::gate::rdtsc(), Ordering::Relaxed);
        PAGE.tsc_to_system_mul.store(1 << 31, Ordering::Relaxed);
        PAGE.version.store(2, Ordering::Release);
        // SAFETY: as above.
        assert_eq!(unsafe { pvabi_clock_read_ns(&PAGE, &mut ns) }, 0);
        assert!(ns >= 1_000, "{ns}");
        PAGE.version.store(3, Ordering::Release);
        // SAFETY: as above. An odd version forever is a host stuck mid-update.
        let r = unsafe { pvabi_clock_read_ns(&PAGE, &mut ns) };
        assert_eq!(r, code(Status::BUSY));
    }

    #[test]
    fn handle_cell_is_written_once() {
        let cell = HandleCell::new();
        assert!(cell.get().is_none());
        let ram = [0u8; 64];
        // SAFETY: `ram` is mapped and readable while the reader lives.
        let phys = unsafe {
            PhysReader::new(Translate::Offset {
                host_base: ram.as_ptr() as usize,
                len: ram.len(),
            })
        };
        let info = crate::HostInfo {
            source: crate::DiscoverySource::InProcess,
            version: pvabi::ABI_VERSION,
            gate_kind: pvabi::GateKind::NONE,
            gate_param: 0,
            features: pvabi::Features::empty(),
            vcpu_count: 3,
            boot_vcpu: None,
            backend_id: None,
            exec_mode: None,
            boot_info: None,
            service_functions: [0; crate::discovery::PROBED_SERVICES],
        };
        extern "C" fn never(_ctx: usize, _regs: *mut crate::InProcessRegs) {}
        // SAFETY: `never` touches nothing; the handle is never used to call.
        let gate = unsafe { crate::InProcessGate::new(never, 0) };
        let pv = Pvabi::from_parts(
            crate::Gate::Register(crate::RegisterGate::in_process(gate)),
            phys,
            info,
        );
        assert_eq!(cell.set(pv), Ok(()));
        assert_eq!(cell.get().map(|p| p.info().vcpu_count), Some(3));
        assert_eq!(cell.set(pv), Err(Status::ALREADY));
    }

    #[test]
    fn discovery_errors_map_to_statuses() {
        assert_eq!(discover_status(DiscoverError::NotFound), Status::NOT_FOUND);
        assert_eq!(
            discover_status(DiscoverError::BootInfoBadMagic(1)),
            Status::INVALID_PARAM
        );
        assert_eq!(
            discover_status(DiscoverError::Call(Status::DENIED)),
            Status::DENIED
        );
        assert_eq!(discover_status(DiscoverError::BadAnswer), Status::FAILED);
    }
}
