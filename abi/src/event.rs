//! EVENT service (spec chapter 8, clauses `EVT-*`): event channels with pending and mask bitmaps
//! in a guest page, per-vCPU binding, and upcalls in two modes.
//!
//! ## The event page (spec `EVT-1`, `EVT-2`)
//! One 4 KiB page per guest, page-aligned: [`EventPage`]. Port `p` is bit `p % 64` of word
//! `p / 64` of `pending` and `mask`. Port 0 is never allocated.
//!
//! ## Delivery (spec `EVT-6`, `EVT-7`, `EVT-11`)
//! On a send the host atomically sets the pending bit. If the port is not masked it sets bit
//! `p / 64` in the bound vCPU's `selector`, sets its `upcall_pending`, delivers an upcall when
//! that vCPU's `upcall_mask` is zero, and wakes the vCPU if it is blocked (whatever its
//! `upcall_mask`).
//!
//! ## Upcall modes (spec `EVT-10`, `EVT-12`..`EVT-14`)
//! * [`UpcallMode::VECTOR`]: an external interrupt on the given vector (ring-0 guests).
//! * [`UpcallMode::CALLBACK`]: the host saves the interrupted context in the vCPU's
//!   [`UpcallFrame`] in the event page, sets `upcall_mask`, and resumes the vCPU at the callback
//!   address with RSP = (interrupted RSP − 128) rounded down to 16 then − 8, RDI = the frame's
//!   guest-physical address, RSI = the vCPU id. VCPU.UPCALL_RETURN restores the frame and clears
//!   `upcall_mask`.

use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub use crate::call::{
    EVENT_ALLOC, EVENT_BIND_VCPU, EVENT_CLOSE, EVENT_MASK, EVENT_REGISTER_PAGE, EVENT_SEND,
    EVENT_SET_UPCALL, EVENT_UNMASK,
};

/// Number of event ports in ABI v1 (spec `EVT-2`); valid ports are `1..NUM_PORTS`.
pub const NUM_PORTS: u32 = 1024;
/// Words in each bitmap.
pub const BITMAP_WORDS: usize = (NUM_PORTS / 64) as usize;

/// Upcall delivery mode (spec `EVT-10`). An open type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct UpcallMode(pub u32);

impl UpcallMode {
    /// No upcalls: the guest polls (e.g. after VCPU.BLOCK).
    pub const NONE: UpcallMode = UpcallMode(0);
    /// Interrupt on a vector in `32..=255`.
    pub const VECTOR: UpcallMode = UpcallMode(1);
    /// Callback at a guest address with a saved frame.
    pub const CALLBACK: UpcallMode = UpcallMode(2);
}

/// Lowest interrupt vector accepted for [`UpcallMode::VECTOR`] (spec `EVT-10`).
pub const MIN_UPCALL_VECTOR: u64 = 32;
/// Bytes below the interrupted RSP the host leaves alone (the SysV red zone, spec `EVT-12`).
pub const RED_ZONE: u64 = 128;

/// The context a callback upcall saves (spec `EVT-12`), 128 bytes.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct UpcallFrame {
    /// Interrupted RIP.
    pub rip: u64,
    /// Interrupted RSP.
    pub rsp: u64,
    /// Interrupted RFLAGS.
    pub rflags: u64,
    /// Interrupted RAX.
    pub rax: u64,
    /// Interrupted RCX.
    pub rcx: u64,
    /// Interrupted RDX.
    pub rdx: u64,
    /// Interrupted RSI.
    pub rsi: u64,
    /// Interrupted RDI.
    pub rdi: u64,
    /// Interrupted R8.
    pub r8: u64,
    /// Interrupted R9.
    pub r9: u64,
    /// Interrupted R10.
    pub r10: u64,
    /// Interrupted R11.
    pub r11: u64,
    /// Reserved, zero.
    pub _reserved: [u64; 4],
}

/// Per-vCPU part of the event page (spec `EVT-2`), 192 bytes.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct VcpuEventInfo {
    /// Bit `w` set: word `w` of `pending` may have unmasked bits for this vCPU.
    pub selector: u64,
    /// Nonzero when an upcall is pending for this vCPU.
    pub upcall_pending: u32,
    /// Nonzero while the guest does not want upcalls (its "interrupts off").
    pub upcall_mask: u32,
    /// Reserved, zero.
    pub _reserved: [u64; 6],
    /// Saved context of the latest callback upcall.
    pub frame: UpcallFrame,
}

/// The event page (spec `EVT-2`), exactly 4096 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct EventPage {
    /// Pending bits, port `p` at word `p / 64`, bit `p % 64`.
    pub pending: [u64; BITMAP_WORDS],
    /// Mask bits, same indexing.
    pub mask: [u64; BITMAP_WORDS],
    /// One record per vCPU id.
    pub vcpu: [VcpuEventInfo; crate::MAX_VCPUS as usize],
    /// Reserved, zero.
    pub _reserved: [u64; 96],
}

impl EventPage {
    /// Offset of `pending`.
    pub const PENDING_OFFSET: usize = 0;
    /// Offset of `mask`.
    pub const MASK_OFFSET: usize = 128;
    /// Offset of `vcpu[0]`.
    pub const VCPU_OFFSET: usize = 256;
    /// Size of one [`VcpuEventInfo`].
    pub const VCPU_STRIDE: usize = 192;

    /// Offset in the page of vCPU `v`'s record.
    pub const fn vcpu_offset(v: u32) -> usize {
        Self::VCPU_OFFSET + v as usize * Self::VCPU_STRIDE
    }
}

/// Offsets inside [`VcpuEventInfo`].
pub mod vcpu_info {
    /// Offset of `selector`.
    pub const SELECTOR: usize = 0;
    /// Offset of `upcall_pending`.
    pub const UPCALL_PENDING: usize = 8;
    /// Offset of `upcall_mask`.
    pub const UPCALL_MASK: usize = 12;
    /// Offset of `frame`.
    pub const FRAME: usize = 64;
}

const_assert_eq!(core::mem::size_of::<UpcallFrame>(), 128);
const_assert_eq!(core::mem::offset_of!(UpcallFrame, rip), 0);
const_assert_eq!(core::mem::offset_of!(UpcallFrame, rsp), 8);
const_assert_eq!(core::mem::offset_of!(UpcallFrame, rflags), 16);
const_assert_eq!(core::mem::offset_of!(UpcallFrame, rax), 24);
const_assert_eq!(core::mem::offset_of!(UpcallFrame, rcx), 32);
const_assert_eq!(core::mem::offset_of!(UpcallFrame, rdx), 40);
const_assert_eq!(core::mem::offset_of!(UpcallFrame, rsi), 48);
const_assert_eq!(core::mem::offset_of!(UpcallFrame, rdi), 56);
const_assert_eq!(core::mem::offset_of!(UpcallFrame, r8), 64);
const_assert_eq!(core::mem::offset_of!(UpcallFrame, r9), 72);
const_assert_eq!(core::mem::offset_of!(UpcallFrame, r10), 80);
const_assert_eq!(core::mem::offset_of!(UpcallFrame, r11), 88);
const_assert_eq!(core::mem::offset_of!(UpcallFrame, _reserved), 96);
const_assert_eq!(
    core::mem::size_of::<VcpuEventInfo>(),
    EventPage::VCPU_STRIDE
);
const_assert_eq!(
    core::mem::offset_of!(VcpuEventInfo, selector),
    vcpu_info::SELECTOR
);
const_assert_eq!(
    core::mem::offset_of!(VcpuEventInfo, upcall_pending),
    vcpu_info::UPCALL_PENDING
);
const_assert_eq!(
    core::mem::offset_of!(VcpuEventInfo, upcall_mask),
    vcpu_info::UPCALL_MASK
);
const_assert_eq!(core::mem::offset_of!(VcpuEventInfo, _reserved), 16);
const_assert_eq!(
    core::mem::offset_of!(VcpuEventInfo, frame),
    vcpu_info::FRAME
);
const_assert_eq!(core::mem::size_of::<EventPage>(), 4096);
const_assert_eq!(
    core::mem::offset_of!(EventPage, pending),
    EventPage::PENDING_OFFSET
);
const_assert_eq!(
    core::mem::offset_of!(EventPage, mask),
    EventPage::MASK_OFFSET
);
const_assert_eq!(
    core::mem::offset_of!(EventPage, vcpu),
    EventPage::VCPU_OFFSET
);
const_assert_eq!(core::mem::offset_of!(EventPage, _reserved), 3328);
