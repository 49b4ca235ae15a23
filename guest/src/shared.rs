//! Shared areas: guest memory the host reads and writes while the guest runs.
//!
//! Each type here has exactly the layout of its [`pvabi`] wire struct (asserted at compile
//! time: size, alignment at least the ABI's, every offset), but is built from atomics. The host
//! may change such memory at any moment, and a Rust reference to plain data that changes
//! behind the compiler's back is undefined behaviour; a reference to atomics is not. So the
//! guest declares these as `static`s (they are `Sync` and have `const fn new`), hands
//! `&'static` references to the shim, and the shim registers their GPAs with the host.
//!
//! All multi-byte fields are little-endian on x86_64, as the ABI states (`CONV-9`).

use core::sync::atomic::{AtomicI64, AtomicI8, AtomicU16, AtomicU32, AtomicU64, AtomicU8};
use pvabi::event::{UpcallFrame, BITMAP_WORDS};
use pvabi::MAX_VCPUS;
use static_assertions::{const_assert, const_assert_eq};

/// One vCPU's record in the event page ([`pvabi::event::VcpuEventInfo`], 192 bytes).
#[derive(Debug)]
#[repr(C)]
pub struct VcpuEventShared {
    /// Bit `w`: word `w` of `pending` may hold unmasked bits for this vCPU (host sets, guest
    /// clears).
    pub selector: AtomicU64,
    /// Nonzero when an upcall is pending (host sets, guest clears).
    pub upcall_pending: AtomicU32,
    /// Nonzero while the guest does not want upcalls ("interrupts off").
    pub upcall_mask: AtomicU32,
    _reserved: [AtomicU64; 6],
    /// The saved context of the latest callback upcall, fields in [`UpcallFrame`] order.
    pub frame: [AtomicU64; 16],
}

impl VcpuEventShared {
    /// An all-zero record.
    pub const fn new() -> Self {
        Self {
            selector: AtomicU64::new(0),
            upcall_pending: AtomicU32::new(0),
            upcall_mask: AtomicU32::new(0),
            _reserved: [const { AtomicU64::new(0) }; 6],
            frame: [const { AtomicU64::new(0) }; 16],
        }
    }

    /// A snapshot of the saved callback frame.
    pub fn frame(&self) -> UpcallFrame {
        use core::sync::atomic::Ordering::Acquire;
        let f: [u64; 16] =
            core::array::from_fn(|i| self.frame.get(i).map(|a| a.load(Acquire)).unwrap_or(0));
        let [rip, rsp, rflags, rax, rcx, rdx, rsi, rdi, r8, r9, r10, r11, ..] = f;
        UpcallFrame {
            rip,
            rsp,
            rflags,
            rax,
            rcx,
            rdx,
            rsi,
            rdi,
            r8,
            r9,
            r10,
            r11,
            _reserved: [0; 4],
        }
    }
}

impl Default for VcpuEventShared {
    fn default() -> Self {
        Self::new()
    }
}

/// The event page ([`pvabi::event::EventPage`], 4096 bytes, page-aligned).
#[derive(Debug)]
#[repr(C, align(4096))]
pub struct EventPageShared {
    /// Pending bits: port `p` is bit `p % 64` of word `p / 64`.
    pub pending: [AtomicU64; BITMAP_WORDS],
    /// Mask bits, same indexing.
    pub mask: [AtomicU64; BITMAP_WORDS],
    /// One record per vCPU id.
    pub vcpu: [VcpuEventShared; MAX_VCPUS as usize],
    _reserved: [AtomicU64; 96],
}

impl EventPageShared {
    /// An all-zero page (nothing pending, nothing masked).
    pub const fn new() -> Self {
        Self {
            pending: [const { AtomicU64::new(0) }; BITMAP_WORDS],
            mask: [const { AtomicU64::new(0) }; BITMAP_WORDS],
            vcpu: [const { VcpuEventShared::new() }; MAX_VCPUS as usize],
            _reserved: [const { AtomicU64::new(0) }; 96],
        }
    }
}

impl EventPageShared {
    /// Zeroes every field (the state `EVT-1` requires before registration).
    pub fn clear(&self) {
        use core::sync::atomic::Ordering::Relaxed;
        for w in self.pending.iter().chain(&self.mask).chain(&self._reserved) {
            w.store(0, Relaxed);
        }
        for v in &self.vcpu {
            v.selector.store(0, Relaxed);
            v.upcall_pending.store(0, Relaxed);
            v.upcall_mask.store(0, Relaxed);
            for w in v._reserved.iter().chain(&v.frame) {
                w.store(0, Relaxed);
            }
        }
        core::sync::atomic::fence(core::sync::atomic::Ordering::Release);
    }
}

impl Default for EventPageShared {
    fn default() -> Self {
        Self::new()
    }
}

/// One vCPU's clock page ([`pvabi::clock::ClockPage`], 32 bytes, 32-byte aligned).
#[derive(Debug)]
#[repr(C, align(32))]
pub struct ClockPageShared {
    /// Seqlock version: odd while the host writes.
    pub version: AtomicU32,
    _reserved0: AtomicU32,
    /// TSC at `system_time`.
    pub tsc_timestamp: AtomicU64,
    /// System time in ns at `tsc_timestamp`.
    pub system_time: AtomicU64,
    /// TSC-to-ns multiplier (32.32 fraction).
    pub tsc_to_system_mul: AtomicU32,
    /// Pre-shift of the TSC delta.
    pub tsc_shift: AtomicI8,
    /// Flags ([`pvabi::clock::ClockPage::FLAG_TSC_STABLE`]).
    pub flags: AtomicU8,
    _reserved1: [AtomicU8; 2],
}

impl ClockPageShared {
    /// An all-zero page (version 0: no data yet).
    pub const fn new() -> Self {
        Self {
            version: AtomicU32::new(0),
            _reserved0: AtomicU32::new(0),
            tsc_timestamp: AtomicU64::new(0),
            system_time: AtomicU64::new(0),
            tsc_to_system_mul: AtomicU32::new(0),
            tsc_shift: AtomicI8::new(0),
            flags: AtomicU8::new(0),
            _reserved1: [const { AtomicU8::new(0) }; 2],
        }
    }
}

impl Default for ClockPageShared {
    fn default() -> Self {
        Self::new()
    }
}

/// The steal-time record ([`pvabi::vcpu::StealTime`], 64 bytes, 64-byte aligned).
#[derive(Debug)]
#[repr(C, align(64))]
pub struct StealTimeShared {
    /// Total ns runnable but not running.
    pub steal: AtomicU64,
    /// Seqlock version: odd while the host writes.
    pub version: AtomicU32,
    /// Reserved flags.
    pub flags: AtomicU32,
    /// Nonzero while preempted.
    pub preempted: AtomicU8,
    _reserved0: [AtomicU8; 3],
    _reserved1: [AtomicU32; 11],
}

impl StealTimeShared {
    /// An all-zero record.
    pub const fn new() -> Self {
        Self {
            steal: AtomicU64::new(0),
            version: AtomicU32::new(0),
            flags: AtomicU32::new(0),
            preempted: AtomicU8::new(0),
            _reserved0: [const { AtomicU8::new(0) }; 3],
            _reserved1: [const { AtomicU32::new(0) }; 11],
        }
    }
}

impl Default for StealTimeShared {
    fn default() -> Self {
        Self::new()
    }
}

/// One grant entry ([`pvabi::grant::GrantEntry`], 16 bytes).
#[derive(Debug)]
#[repr(C)]
pub struct GrantEntryShared {
    /// [`pvabi::grant::GrantEntry::FLAG_VALID`], `FLAG_READONLY`.
    pub flags: AtomicU16,
    _reserved: AtomicU16,
    /// Domain the grant is for.
    pub domid: AtomicU32,
    /// Guest frame number of the granted page.
    pub gfn: AtomicU64,
}

impl GrantEntryShared {
    /// An invalid (empty) entry.
    pub const fn new() -> Self {
        Self {
            flags: AtomicU16::new(0),
            _reserved: AtomicU16::new(0),
            domid: AtomicU32::new(0),
            gfn: AtomicU64::new(0),
        }
    }
}

impl Default for GrantEntryShared {
    fn default() -> Self {
        Self::new()
    }
}

/// A grant table of `N` entries, page-aligned.
#[derive(Debug)]
#[repr(C, align(4096))]
pub struct GrantTableShared<const N: usize> {
    /// The entries; the index is the grant reference.
    pub entries: [GrantEntryShared; N],
}

impl<const N: usize> GrantTableShared<N> {
    /// A table with every entry invalid.
    pub const fn new() -> Self {
        Self {
            entries: [const { GrantEntryShared::new() }; N],
        }
    }
}

impl<const N: usize> Default for GrantTableShared<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// A crash buffer ([`pvabi::power::CrashHeader`] then `N` message bytes), 8-byte aligned.
#[derive(Debug)]
#[repr(C, align(8))]
pub struct CrashAreaShared<const N: usize> {
    /// [`pvabi::power::CrashHeader::MAGIC`] once a report is written.
    pub magic: AtomicU32,
    /// Message length.
    pub message_len: AtomicU32,
    /// Guest-defined crash code.
    pub code: AtomicU64,
    /// Crash-site RIP, or 0.
    pub rip: AtomicU64,
    _reserved: AtomicU64,
    /// Message bytes (UTF-8).
    pub message: [AtomicU8; N],
}

impl<const N: usize> CrashAreaShared<N> {
    /// An empty crash area.
    pub const fn new() -> Self {
        Self {
            magic: AtomicU32::new(0),
            message_len: AtomicU32::new(0),
            code: AtomicU64::new(0),
            rip: AtomicU64::new(0),
            _reserved: AtomicU64::new(0),
            message: [const { AtomicU8::new(0) }; N],
        }
    }
}

impl<const N: usize> Default for CrashAreaShared<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// The ring header ([`pvabi::ring::RingHeader`], 64 bytes).
#[derive(Debug)]
#[repr(C)]
pub struct RingHeaderShared {
    /// [`pvabi::ring::RingHeader::MAGIC`].
    pub magic: AtomicU32,
    /// log2 of the slot count.
    pub order: AtomicU32,
    /// Requests produced (guest).
    pub req_prod: AtomicU32,
    /// Requests consumed (host).
    pub req_cons: AtomicU32,
    /// Completions produced (host).
    pub cmp_prod: AtomicU32,
    /// Completions consumed (guest).
    pub cmp_cons: AtomicU32,
    /// Nonzero while the host polls (no doorbell needed).
    pub host_polling: AtomicU32,
    _reserved0: AtomicU32,
    _reserved1: [AtomicU64; 4],
}

impl RingHeaderShared {
    /// An all-zero header.
    pub const fn new() -> Self {
        Self {
            magic: AtomicU32::new(0),
            order: AtomicU32::new(0),
            req_prod: AtomicU32::new(0),
            req_cons: AtomicU32::new(0),
            cmp_prod: AtomicU32::new(0),
            cmp_cons: AtomicU32::new(0),
            host_polling: AtomicU32::new(0),
            _reserved0: AtomicU32::new(0),
            _reserved1: [const { AtomicU64::new(0) }; 4],
        }
    }
}

impl Default for RingHeaderShared {
    fn default() -> Self {
        Self::new()
    }
}

/// A request slot ([`pvabi::ring::RingRequest`], 64 bytes).
#[derive(Debug)]
#[repr(C)]
pub struct RingRequestShared {
    /// Guest cookie.
    pub cookie: AtomicU32,
    /// Call id.
    pub call_id: AtomicU32,
    /// Arguments 0..5.
    pub args: [AtomicU64; 6],
    _reserved: AtomicU64,
}

impl RingRequestShared {
    /// An all-zero slot.
    pub const fn new() -> Self {
        Self {
            cookie: AtomicU32::new(0),
            call_id: AtomicU32::new(0),
            args: [const { AtomicU64::new(0) }; 6],
            _reserved: AtomicU64::new(0),
        }
    }
}

impl Default for RingRequestShared {
    fn default() -> Self {
        Self::new()
    }
}

/// A completion slot ([`pvabi::ring::RingCompletion`], 24 bytes).
#[derive(Debug)]
#[repr(C)]
pub struct RingCompletionShared {
    /// The request's cookie.
    pub cookie: AtomicU32,
    _reserved: AtomicU32,
    /// Status, sign-extended.
    pub status: AtomicI64,
    /// Value.
    pub value: AtomicU64,
}

impl RingCompletionShared {
    /// An all-zero slot.
    pub const fn new() -> Self {
        Self {
            cookie: AtomicU32::new(0),
            _reserved: AtomicU32::new(0),
            status: AtomicI64::new(0),
            value: AtomicU64::new(0),
        }
    }
}

impl Default for RingCompletionShared {
    fn default() -> Self {
        Self::new()
    }
}

/// A shared ring of `SLOTS` entries (a power of two, at most 256): header, requests,
/// completions in the ABI's order, then guest-private state the host never sees. Page-aligned
/// as `RING-1` requires.
#[derive(Debug)]
#[repr(C, align(4096))]
pub struct RingShared<const SLOTS: usize> {
    /// Header.
    pub header: RingHeaderShared,
    /// Request slots.
    pub requests: [RingRequestShared; SLOTS],
    /// Completion slots.
    pub completions: [RingCompletionShared; SLOTS],
    /// Guest-private: set while one caller owns the ring (single producer). Not registered.
    pub(crate) busy: core::sync::atomic::AtomicBool,
    /// Guest-private: completions consumed, of which the header's `cmp_cons` is told with the
    /// next requests (the header's cache line then changes hands once per call, not twice).
    pub(crate) consumed: core::sync::atomic::AtomicU32,
}

impl<const SLOTS: usize> RingShared<SLOTS> {
    /// log2 of `SLOTS`; compile error if `SLOTS` is not a power of two in `1..=256`.
    pub const ORDER: u32 = {
        assert!(
            SLOTS.is_power_of_two() && SLOTS <= 256,
            "ring slots must be 2^0..=2^8"
        );
        SLOTS.trailing_zeros()
    };
    /// Bytes the host sees ([`pvabi::ring::RingHeader::ring_bytes`]).
    pub const SHARED_BYTES: usize = pvabi::ring::RingHeader::SIZE
        + SLOTS * (pvabi::ring::RingRequest::SIZE + pvabi::ring::RingCompletion::SIZE);

    /// An empty ring.
    pub const fn new() -> Self {
        Self {
            header: RingHeaderShared::new(),
            requests: [const { RingRequestShared::new() }; SLOTS],
            completions: [const { RingCompletionShared::new() }; SLOTS],
            busy: core::sync::atomic::AtomicBool::new(false),
            consumed: core::sync::atomic::AtomicU32::new(0),
        }
    }
}

impl<const SLOTS: usize> Default for RingShared<SLOTS> {
    fn default() -> Self {
        Self::new()
    }
}

// Layouts equal the ABI's wire structs: size, alignment at least the ABI's, every offset.
macro_rules! same_layout {
    ($ours:ty, $abi:ty, [$($f:ident),* $(,)?]) => {
        const_assert_eq!(core::mem::size_of::<$ours>(), core::mem::size_of::<$abi>());
        const_assert!(core::mem::align_of::<$ours>() >= core::mem::align_of::<$abi>());
        $( const_assert_eq!(core::mem::offset_of!($ours, $f), core::mem::offset_of!($abi, $f)); )*
    };
}

same_layout!(
    VcpuEventShared,
    pvabi::event::VcpuEventInfo,
    [selector, upcall_pending, upcall_mask, _reserved, frame]
);
same_layout!(
    EventPageShared,
    pvabi::event::EventPage,
    [pending, mask, vcpu, _reserved]
);
same_layout!(
    ClockPageShared,
    pvabi::clock::ClockPage,
    [
        version,
        _reserved0,
        tsc_timestamp,
        system_time,
        tsc_to_system_mul,
        tsc_shift,
        flags,
        _reserved1
    ]
);
same_layout!(
    StealTimeShared,
    pvabi::vcpu::StealTime,
    [steal, version, flags, preempted, _reserved0, _reserved1]
);
same_layout!(
    GrantEntryShared,
    pvabi::grant::GrantEntry,
    [flags, _reserved, domid, gfn]
);
same_layout!(
    RingHeaderShared,
    pvabi::ring::RingHeader,
    [
        magic,
        order,
        req_prod,
        req_cons,
        cmp_prod,
        cmp_cons,
        host_polling,
        _reserved0,
        _reserved1
    ]
);
same_layout!(
    RingRequestShared,
    pvabi::ring::RingRequest,
    [cookie, call_id, args, _reserved]
);
same_layout!(
    RingCompletionShared,
    pvabi::ring::RingCompletion,
    [cookie, _reserved, status, value]
);
const_assert_eq!(core::mem::size_of::<UpcallFrame>(), 16 * 8);
const_assert_eq!(core::mem::align_of::<EventPageShared>(), 4096);
const_assert_eq!(core::mem::align_of::<ClockPageShared>(), 32);
const_assert_eq!(core::mem::align_of::<StealTimeShared>(), 64);
const_assert_eq!(core::mem::offset_of!(CrashAreaShared<8>, message), 32);
const_assert_eq!(core::mem::offset_of!(CrashAreaShared<8>, magic), 0);
const_assert_eq!(core::mem::offset_of!(CrashAreaShared<8>, message_len), 4);
const_assert_eq!(core::mem::offset_of!(CrashAreaShared<8>, code), 8);
const_assert_eq!(core::mem::offset_of!(CrashAreaShared<8>, rip), 16);
const_assert_eq!(core::mem::offset_of!(RingShared<4>, requests), 64);
const_assert_eq!(
    core::mem::offset_of!(RingShared<4>, completions),
    64 + 4 * 64
);
const_assert_eq!(
    core::mem::offset_of!(RingShared<4>, busy),
    RingShared::<4>::SHARED_BYTES
);
const_assert_eq!(
    RingShared::<8>::SHARED_BYTES as u64,
    pvabi::ring::RingHeader::ring_bytes(3)
);
