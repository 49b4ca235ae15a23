//! Kicking a vCPU thread out of `KVM_RUN` with a signal and `kvm_run.immediate_exit`.
//!
//! Each vCPU thread publishes its `kvm_run` mapping in a thread-local. The kick signal's
//! handler runs on the target thread and sets `immediate_exit` there, so a kick that arrives
//! just before the thread enters `KVM_RUN` still makes `KVM_RUN` return at once with `EINTR`
//! (no lost wake-up), and one that arrives inside `KVM_RUN` interrupts it.

use std::cell::Cell;
use std::sync::OnceLock;

use kvm_bindings::kvm_run;
use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

thread_local! {
    /// This thread's `kvm_run` mapping, or null when the thread runs no vCPU.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

/// The real-time signal used for kicks (`SIGRTMIN + 2`).
pub fn kick_signal() -> libc::c_int {
    SIGRTMIN() + 2
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // `try_with` cannot fail on a const-initialised thread-local without destructor before
    // thread teardown; during teardown it returns Err and we do nothing.
    let _ = KVM_RUN.try_with(|p| {
        let run = p.get();
        if !run.is_null() {
            // SAFETY: `run` was published by `set_thread_kvm_run` on this very thread from a
            // live `VcpuFd`'s mapping of `kvm_run`, and is withdrawn (`clear_thread_kvm_run`)
            // before that `VcpuFd` is dropped, so it points at mapped, writable memory. The
            // handler runs on the owning thread, so the only other accesses are the kernel's
            // (inside KVM_RUN, which is interrupted) and the interrupted thread's own single-byte
            // stores of the same field, which a one-byte volatile store cannot tear.
            unsafe { std::ptr::addr_of_mut!((*run).immediate_exit).write_volatile(1) };
        }
    });
}

/// Installs the process-wide kick handler (once).
///
/// # Errors
///
/// The `sigaction` error, as a string.
pub fn install() -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        register_signal_handler(kick_signal(), on_kick).map_err(|e| format!("sigaction: {e}"))
    })
    .clone()
}

/// Publishes this thread's `kvm_run` for the kick handler.
pub fn set_thread_kvm_run(run: *mut kvm_run) {
    KVM_RUN.with(|p| p.set(run));
}

/// Withdraws this thread's `kvm_run` (before the `VcpuFd` is dropped).
pub fn clear_thread_kvm_run() {
    KVM_RUN.with(|p| p.set(std::ptr::null_mut()));
}

/// Sends the kick signal to thread `t`.
///
/// # Safety
///
/// `t` must be a live (not yet joined or detached-and-exited) thread of this process.
pub unsafe fn signal_thread(t: libc::pthread_t) {
    // SAFETY: the caller guarantees `t` is a live thread; the signal number is a valid
    // real-time signal with our handler installed. The return value (ESRCH at worst) is
    // not needed: a thread that is gone needs no kick.
    unsafe {
        libc::pthread_kill(t, kick_signal());
    }
}
