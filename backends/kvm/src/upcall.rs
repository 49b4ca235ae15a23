//! Delivering upcalls: interrupts on a vector (ring 0) and callbacks with a saved frame (PV
//! ring 3, spec `EVT-12`..`EVT-14`).

use kvm_bindings::kvm_interrupt;
use kvm_ioctls::VcpuFd;
use pvabi::event::UpcallFrame;
use pvabi_host::Vm;
use vmm_sys_util::ioctl::ioctl_with_ref;
use vmm_sys_util::ioctl_iow_nr;

use crate::Error;

const KVMIO: u32 = 0xAE;
ioctl_iow_nr!(KVM_INTERRUPT, KVMIO, 0x86, kvm_interrupt);

/// RFLAGS bits a guest may restore through VCPU.UPCALL_RETURN: CF, PF, AF, ZF, SF, DF, OF, AC.
const RFLAGS_GUEST_MASK: u64 = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x400 | 0x800 | 0x4_0000;
/// RFLAGS bits always set in PV ring 3: reserved bit 1, IF, IOPL = 3.
const RFLAGS_PV_FIXED: u64 = 0x2 | 0x200 | 0x3000;

/// Ring 0: injects an interrupt on `vector` if the guest can take one now (returns true), or
/// asks KVM for an interrupt-window exit (returns false; try again after the next exit).
///
/// # Errors
///
/// [`Error::Kvm`] when `KVM_INTERRUPT` fails.
pub(crate) fn inject_irq(fd: &mut VcpuFd, vector: u8) -> Result<bool, Error> {
    let run = fd.get_kvm_run();
    if run.ready_for_interrupt_injection == 0 || run.if_flag == 0 {
        run.request_interrupt_window = 1;
        return Ok(false);
    }
    run.request_interrupt_window = 0;
    let irq = kvm_interrupt {
        irq: u32::from(vector),
    };
    // SAFETY: `fd` is a vCPU fd; KVM_INTERRUPT reads one `kvm_interrupt` from the pointer,
    // which is a live local of exactly that type; the return value is checked.
    let r = unsafe { ioctl_with_ref(&*fd, KVM_INTERRUPT(), &irq) };
    if r < 0 {
        return Err(Error::Kvm {
            what: "KVM_INTERRUPT",
            source: kvm_ioctls::Error::last(),
        });
    }
    Ok(true)
}

/// Callback mode: saves the interrupted context through the host machinery (which writes the
/// frame into the event page and masks upcalls) and enters the callback (spec `EVT-12`).
///
/// # Errors
///
/// What completing a pending port I/O returns.
pub(crate) fn enter_callback(vm: &Vm, fd: &mut VcpuFd, sync: bool, id: u32) -> Result<(), Error> {
    crate::vmm::complete_pending_io(fd, id)?;
    let r = crate::vmm::get_regs(fd, sync)?;
    let frame = UpcallFrame {
        rip: r.rip,
        rsp: r.rsp,
        rflags: r.rflags,
        rax: r.rax,
        rcx: r.rcx,
        rdx: r.rdx,
        rsi: r.rsi,
        rdi: r.rdi,
        r8: r.r8,
        r9: r.r9,
        r10: r.r10,
        r11: r.r11,
        _reserved: [0; 4],
    };
    // BAD_STATE (the guest switched upcall mode meanwhile) or an unwritable event page: the
    // upcall is not delivered and the guest keeps running where it was.
    if let Ok(e) = vm.enter_callback(id, &frame) {
        let mut regs = r;
        regs.rip = e.rip;
        regs.rsp = e.rsp;
        regs.rdi = e.rdi;
        regs.rsi = e.rsi;
        crate::vmm::put_regs(fd, sync, &regs)?;
    }
    Ok(())
}

/// Restores the context saved by a callback upcall (VCPU.UPCALL_RETURN); RFLAGS takes only the
/// status flags from the frame (in PV ring 3 IF and IOPL stay as the loader set them; in ring 0
/// IF stays as the vCPU has it).
///
/// # Errors
///
/// [`Error::Kvm`] when the registers cannot be read or written.
pub(crate) fn restore_frame(
    fd: &mut VcpuFd,
    sync: bool,
    f: &UpcallFrame,
    mode: crate::Mode,
) -> Result<(), Error> {
    let mut regs = crate::vmm::get_regs(fd, sync)?;
    // Only the status flags come from the frame (spec `EVT-14`); IF stays as the vCPU has it
    // (in ring 0 the callback was entered without changing it).
    let fixed = match mode {
        crate::Mode::PvRing3 => RFLAGS_PV_FIXED,
        crate::Mode::Ring0 => 0x2 | (regs.rflags & 0x200),
    };
    regs.rip = f.rip;
    regs.rsp = f.rsp;
    regs.rflags = (f.rflags & RFLAGS_GUEST_MASK) | fixed;
    regs.rax = f.rax;
    regs.rcx = f.rcx;
    regs.rdx = f.rdx;
    regs.rsi = f.rsi;
    regs.rdi = f.rdi;
    regs.r8 = f.r8;
    regs.r9 = f.r9;
    regs.r10 = f.r10;
    regs.r11 = f.r11;
    crate::vmm::put_regs(fd, sync, &regs)
}
