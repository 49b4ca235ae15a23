//! The hypercall page and typed hypercalls of an HVM/PVH guest (x86_64, ring 0).
//!
//! Xen fills a guest page with one 32-byte stub per hypercall when the guest writes the page's
//! guest-physical address to the MSR that CPUID leaf `base + 2` names; hypercall `n` is a
//! `call` to `page + 32 * n` with the arguments in RDI, RSI, RDX, R10, R8 and the result in RAX
//! (a negative `errno` on failure).

use super::abi::{self, hypercall as nr};
use super::{XenCpuid, XenError};

/// An installed hypercall page.
///
/// # Invariants
///
/// `page` is the address of a 4 KiB page, mapped executable at that address, that Xen filled
/// with hypercall stubs (see [`Hypercalls::install`]); nothing else writes it.
#[derive(Clone, Copy, Debug)]
pub struct Hypercalls {
    page: usize,
}

/// The result of a hypercall: `Ok` for a non-negative RAX, else the `errno` value.
fn check(rax: i64) -> Result<u64, XenError> {
    if rax < 0 {
        Err(XenError::Hypercall(rax))
    } else {
        Ok(rax as u64)
    }
}

impl Hypercalls {
    /// Installs the hypercall page: writes `page_gpa` to the MSR `xen` names
    /// ([`XenCpuid::hypercall_msr`]), after which Xen has filled the page.
    ///
    /// # Errors
    ///
    /// [`XenError::NotXen`] if `xen` names no hypercall page (zero pages).
    ///
    /// # Safety
    ///
    /// * The code runs in ring 0 of an HVM or PVH guest of the Xen that `xen` describes (the
    ///   `wrmsr` faults elsewhere).
    /// * `page` is the address, in the current address space, of a 4096-byte aligned page that
    ///   is mapped writable and executable, whose guest-physical address is `page_gpa`, and that
    ///   nothing else uses for as long as the returned value (or a copy) exists: Xen overwrites
    ///   it.
    pub unsafe fn install(xen: &XenCpuid, page: *mut u8, page_gpa: u64) -> Result<Self, XenError> {
        if xen.hypercall_pages == 0 {
            return Err(XenError::NotXen);
        }
        // SAFETY: ring 0 on Xen (caller's contract), so `wrmsr` to the hypercall MSR Xen names is
        // defined: it makes Xen write stubs into the page at `page_gpa`, which the caller
        // guarantees is a page reserved for this purpose. No Rust-visible memory other than that
        // page changes.
        unsafe {
            core::arch::asm!(
                "wrmsr",
                in("ecx") xen.hypercall_msr,
                in("eax") page_gpa as u32,
                in("edx") (page_gpa >> 32) as u32,
                options(nostack, preserves_flags)
            );
        }
        Ok(Self {
            page: page as usize,
        })
    }

    /// Raw hypercall `n` with up to five arguments; returns RAX as a signed value.
    ///
    /// # Safety
    ///
    /// The arguments must be valid for hypercall `n` as Xen's public headers define it: every
    /// pointer argument points to memory of the size and layout the hypercall reads and writes,
    /// mapped at that address and guest-physically identical (this is an HVM guest: Xen
    /// translates the linear address through the guest's page tables), and the hypercall's
    /// effect (e.g. remapping a guest frame) must not invalidate memory Rust code relies on.
    pub unsafe fn raw(&self, n: u32, a: [u64; 5]) -> i64 {
        let entry = self.page + 32 * n as usize;
        let rax: i64;
        // SAFETY: `entry` is the stub of hypercall `n` in the page Xen filled (type invariant);
        // the stub is `mov $n, %eax; vmcall/vmmcall; ret` and returns with the result in RAX.
        // Xen may change the argument registers (debug builds scramble them), so they are
        // declared clobbered; the call uses the stack (no `nostack`). Memory effects are the
        // hypercall's, covered by the caller's contract.
        unsafe {
            core::arch::asm!(
                "call {entry}",
                entry = in(reg) entry,
                inlateout("rdi") a[0] => _,
                inlateout("rsi") a[1] => _,
                inlateout("rdx") a[2] => _,
                inlateout("r10") a[3] => _,
                inlateout("r8") a[4] => _,
                lateout("rax") rax,
                lateout("rcx") _,
                lateout("r11") _,
            );
        }
        rax
    }

    /// A value for tests that never make a hypercall (a hypercall through it would jump to
    /// address 0).
    #[cfg(test)]
    pub(crate) const fn unusable() -> Self {
        Self { page: 0 }
    }

    /// `HYPERVISOR_memory_op(XENMEM_add_to_physmap)` with `XENMAPSPACE_grant_table`: maps
    /// grant-table frame `idx` (version 1 table) at guest frame `gpfn`. The RAM page that was
    /// at `gpfn` is replaced.
    ///
    /// # Errors
    ///
    /// [`XenError::Hypercall`] with Xen's `errno`.
    ///
    /// # Safety
    ///
    /// No Rust object may live in the frame `gpfn` (its contents become the grant table).
    pub unsafe fn map_grant_table_frame(&self, idx: u64, gpfn: u64) -> Result<(), XenError> {
        let mut arg = abi::XenAddToPhysmap {
            domid: abi::DOMID_SELF,
            size: 0,
            space: abi::XENMAPSPACE_GRANT_TABLE,
            idx,
            gpfn,
        };
        let p = &mut arg as *mut abi::XenAddToPhysmap as u64;
        // SAFETY: `p` points to a live `xen_add_to_physmap` of the header's layout; the caller
        // guarantees the frame that changes holds no Rust object.
        check(unsafe { self.raw(nr::MEMORY_OP, [abi::XENMEM_ADD_TO_PHYSMAP, p, 0, 0, 0]) })
            .map(|_| ())
    }

    /// `HYPERVISOR_event_channel_op(EVTCHNOP_alloc_unbound)`: a new port of this domain that
    /// domain `remote` may bind.
    ///
    /// # Errors
    ///
    /// [`XenError::Hypercall`] with Xen's `errno`.
    pub fn evtchn_alloc_unbound(&self, remote: u16) -> Result<u32, XenError> {
        let mut arg = abi::EvtchnAllocUnbound {
            dom: abi::DOMID_SELF,
            remote_dom: remote,
            port: 0,
        };
        let p = &mut arg as *mut abi::EvtchnAllocUnbound as u64;
        // SAFETY: `p` points to a live `evtchn_alloc_unbound`; the hypercall writes only its
        // `port` field.
        check(unsafe {
            self.raw(
                nr::EVENT_CHANNEL_OP,
                [abi::EVTCHNOP_ALLOC_UNBOUND, p, 0, 0, 0],
            )
        })?;
        Ok(arg.port)
    }

    /// `HYPERVISOR_event_channel_op(EVTCHNOP_send)`: notifies the other end of `port`.
    ///
    /// # Errors
    ///
    /// [`XenError::Hypercall`] with Xen's `errno`.
    pub fn evtchn_send(&self, port: u32) -> Result<(), XenError> {
        let mut arg = abi::EvtchnSend { port };
        let p = &mut arg as *mut abi::EvtchnSend as u64;
        // SAFETY: `p` points to a live `evtchn_send`, which the hypercall only reads.
        check(unsafe { self.raw(nr::EVENT_CHANNEL_OP, [abi::EVTCHNOP_SEND, p, 0, 0, 0]) })
            .map(|_| ())
    }

    /// `HYPERVISOR_hvm_op(HVMOP_get_param)` of this domain.
    ///
    /// # Errors
    ///
    /// [`XenError::Hypercall`] with Xen's `errno`.
    pub fn hvm_get_param(&self, index: u32) -> Result<u64, XenError> {
        let mut arg = abi::XenHvmParam {
            domid: abi::DOMID_SELF,
            _pad: 0,
            index,
            value: 0,
        };
        let p = &mut arg as *mut abi::XenHvmParam as u64;
        // SAFETY: `p` points to a live `xen_hvm_param`; the hypercall writes only `value`.
        check(unsafe { self.raw(nr::HVM_OP, [abi::HVMOP_GET_PARAM, p, 0, 0, 0]) })?;
        Ok(arg.value)
    }

    /// `HYPERVISOR_sched_op(SCHEDOP_yield)`: lets other vCPUs (e.g. dom0's xenstored) run.
    pub fn yield_now(&self) {
        // SAFETY: SCHEDOP_yield takes no argument memory.
        let _ = unsafe { self.raw(nr::SCHED_OP, [abi::SCHEDOP_YIELD, 0, 0, 0, 0]) };
    }

    /// `HYPERVISOR_sched_op(SCHEDOP_shutdown)` with `reason` (e.g.
    /// [`abi::SHUTDOWN_POWEROFF`]). Returns only if Xen refused.
    ///
    /// # Errors
    ///
    /// [`XenError::Hypercall`] with Xen's `errno`.
    pub fn shutdown(&self, reason: u32) -> Result<(), XenError> {
        let mut arg: u32 = reason;
        let p = &mut arg as *mut u32 as u64;
        // SAFETY: `p` points to a live `sched_shutdown` (one `unsigned int`), only read.
        check(unsafe { self.raw(nr::SCHED_OP, [abi::SCHEDOP_SHUTDOWN, p, 0, 0, 0]) }).map(|_| ())
    }
}

/// A notifier for an event channel and a way to wait: what the xenstore and ring clients need
/// from the hypervisor, so that they can be tested without one.
pub trait Doorbell {
    /// Notifies the other end of the channel.
    ///
    /// # Errors
    ///
    /// The hypervisor's error.
    fn notify(&self) -> Result<(), XenError>;

    /// Called between polls while waiting for the other side (e.g. yields the vCPU).
    fn idle(&self);
}

/// One idle poll of a bounded wait: counts it in `spins` and lets `bell` idle, or gives up
/// with [`XenError::TimedOut`] once `spins` passes `limit`.
pub(crate) fn idle_or_time_out(
    bell: &impl Doorbell,
    spins: &mut u64,
    limit: u64,
) -> Result<(), XenError> {
    *spins += 1;
    if *spins > limit {
        return Err(XenError::TimedOut);
    }
    bell.idle();
    Ok(())
}

/// [`Doorbell`] on a Xen event channel: `EVTCHNOP_send` on `port`, `SCHEDOP_yield` to wait.
#[derive(Clone, Copy, Debug)]
pub struct EventChannel {
    /// The hypercalls.
    pub hc: Hypercalls,
    /// The local port.
    pub port: u32,
}

impl Doorbell for EventChannel {
    fn notify(&self) -> Result<(), XenError> {
        self.hc.evtchn_send(self.port)
    }

    fn idle(&self) {
        self.hc.yield_now();
    }
}
