//! The numbers and wire layouts of Xen's public interface that the guest side uses, as Xen's
//! public headers define them (restated here, not generated).

/// `domid_t` of the calling domain (`DOMID_SELF`, `xen.h`).
pub const DOMID_SELF: u16 = 0x7FF0;

/// Hypercall numbers (`xen.h`).
pub mod hypercall {
    /// `__HYPERVISOR_memory_op`.
    pub const MEMORY_OP: u32 = 12;
    /// `__HYPERVISOR_grant_table_op`.
    pub const GRANT_TABLE_OP: u32 = 20;
    /// `__HYPERVISOR_sched_op`.
    pub const SCHED_OP: u32 = 29;
    /// `__HYPERVISOR_event_channel_op`.
    pub const EVENT_CHANNEL_OP: u32 = 32;
    /// `__HYPERVISOR_hvm_op`.
    pub const HVM_OP: u32 = 34;
}

/// `XENMEM_add_to_physmap` (`memory.h`).
pub const XENMEM_ADD_TO_PHYSMAP: u64 = 7;
/// `XENMAPSPACE_grant_table` (`memory.h`).
pub const XENMAPSPACE_GRANT_TABLE: u32 = 1;

/// `struct xen_add_to_physmap` (`memory.h`), 24 bytes on x86_64.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct XenAddToPhysmap {
    /// The domain whose physmap changes.
    pub domid: u16,
    /// Number of pages for `XENMAPSPACE_gmfn_range`.
    pub size: u16,
    /// `XENMAPSPACE_*`.
    pub space: u32,
    /// Index into the space (grant-table frame number).
    pub idx: u64,
    /// Guest frame where the page appears.
    pub gpfn: u64,
}

/// `EVTCHNOP_send` (`event_channel.h`).
pub const EVTCHNOP_SEND: u64 = 4;
/// `EVTCHNOP_alloc_unbound` (`event_channel.h`).
pub const EVTCHNOP_ALLOC_UNBOUND: u64 = 6;

/// `struct evtchn_alloc_unbound` (`event_channel.h`), 8 bytes.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct EvtchnAllocUnbound {
    /// The allocating domain (`DOMID_SELF`).
    pub dom: u16,
    /// The domain allowed to bind the port.
    pub remote_dom: u16,
    /// Out: the new port.
    pub port: u32,
}

/// `struct evtchn_send` (`event_channel.h`), 4 bytes.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct EvtchnSend {
    /// The local port to notify through.
    pub port: u32,
}

/// `HVMOP_get_param` (`hvm/hvm_op.h`).
pub const HVMOP_GET_PARAM: u64 = 1;

/// `struct xen_hvm_param` (`hvm/hvm_op.h`), 16 bytes.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct XenHvmParam {
    /// The domain (`DOMID_SELF`).
    pub domid: u16,
    /// Padding.
    pub _pad: u16,
    /// `HVM_PARAM_*`.
    pub index: u32,
    /// Out: the value.
    pub value: u64,
}

/// `HVM_PARAM_STORE_PFN` (`hvm/params.h`).
pub const HVM_PARAM_STORE_PFN: u32 = 1;
/// `HVM_PARAM_STORE_EVTCHN` (`hvm/params.h`).
pub const HVM_PARAM_STORE_EVTCHN: u32 = 2;
/// `HVM_PARAM_CONSOLE_PFN` (`hvm/params.h`).
pub const HVM_PARAM_CONSOLE_PFN: u32 = 17;
/// `HVM_PARAM_CONSOLE_EVTCHN` (`hvm/params.h`).
pub const HVM_PARAM_CONSOLE_EVTCHN: u32 = 18;

/// `SCHEDOP_yield` (`sched.h`).
pub const SCHEDOP_YIELD: u64 = 0;
/// `SCHEDOP_shutdown` (`sched.h`).
pub const SCHEDOP_SHUTDOWN: u64 = 2;
/// `SHUTDOWN_poweroff` (`sched.h`).
pub const SHUTDOWN_POWEROFF: u32 = 0;
/// `SHUTDOWN_crash` (`sched.h`).
pub const SHUTDOWN_CRASH: u32 = 3;

/// `GTF_permit_access` (`grant_table.h`, v1 entry flags).
pub const GTF_PERMIT_ACCESS: u16 = 1;
/// `GTF_readonly` (`grant_table.h`).
pub const GTF_READONLY: u16 = 1 << 2;
/// Grant references below this are reserved for the toolstack (`GNTTAB_NR_RESERVED_ENTRIES`).
pub const GNTTAB_NR_RESERVED_ENTRIES: u32 = 8;

/// `XenbusState` values (`io/xenbus.h`).
pub mod xenbus_state {
    /// `XenbusStateUnknown`.
    pub const UNKNOWN: u32 = 0;
    /// `XenbusStateInitialising`.
    pub const INITIALISING: u32 = 1;
    /// `XenbusStateInitWait`.
    pub const INIT_WAIT: u32 = 2;
    /// `XenbusStateInitialised`.
    pub const INITIALISED: u32 = 3;
    /// `XenbusStateConnected`.
    pub const CONNECTED: u32 = 4;
    /// `XenbusStateClosing`.
    pub const CLOSING: u32 = 5;
    /// `XenbusStateClosed`.
    pub const CLOSED: u32 = 6;
}

/// `struct hvm_start_info` magic (`arch-x86/hvm/start_info.h`).
pub const HVM_START_MAGIC: u32 = 0x336e_c578;

const _: () = {
    assert!(core::mem::size_of::<XenAddToPhysmap>() == 24);
    assert!(core::mem::offset_of!(XenAddToPhysmap, space) == 4);
    assert!(core::mem::offset_of!(XenAddToPhysmap, idx) == 8);
    assert!(core::mem::offset_of!(XenAddToPhysmap, gpfn) == 16);
    assert!(core::mem::size_of::<EvtchnAllocUnbound>() == 8);
    assert!(core::mem::offset_of!(EvtchnAllocUnbound, port) == 4);
    assert!(core::mem::size_of::<XenHvmParam>() == 16);
    assert!(core::mem::offset_of!(XenHvmParam, index) == 4);
    assert!(core::mem::offset_of!(XenHvmParam, value) == 8);
};
