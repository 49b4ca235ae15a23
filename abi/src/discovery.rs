//! Discovery on x86_64 (spec chapter "Discovery", clauses `DISC-*`).
//!
//! A guest shim tries two ways, in this order (spec `DISC-1`):
//!
//! 1. **Boot-info handoff.** At entry of the boot vCPU, RDI holds the guest-physical address of
//!    a [`BootInfo`] (as Xen PVH's `start_info` is handed over), or 0 when there is none.
//! 2. **CPUID.** The signature [`CPUID_SIGNATURE`] in EBX, ECX, EDX of a leaf
//!    `base` in `0x4000_0000..=0x4000_FF00` (step `0x100`); leaf `base + 1` gives the ABI version
//!    and gate, leaf `base + 2` the feature bits and vCPU count.
//!
//! The boot-info way exists because in nested set-ups CPUID from a guest is not always answered
//! by the VMM that implements pvabi.

use static_assertions::{const_assert, const_assert_eq};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// First CPUID leaf searched for the signature (spec `DISC-5`).
pub const CPUID_BASE_FIRST: u32 = 0x4000_0000;
/// Last CPUID leaf searched for the signature (spec `DISC-5`).
pub const CPUID_BASE_LAST: u32 = 0x4000_FF00;
/// Step between candidate signature leaves (spec `DISC-5`).
pub const CPUID_BASE_STEP: u32 = 0x100;
/// The 12-byte signature, as EBX, ECX, EDX bytes in order (spec `DISC-6`).
pub const CPUID_SIGNATURE: [u8; 12] = *b"pvabipvabipv";
/// Offset of the version/gate leaf from the signature leaf (spec `DISC-7`).
pub const CPUID_LEAF_GATE: u32 = 1;
/// Offset of the features/vCPU-count leaf from the signature leaf (spec `DISC-8`).
pub const CPUID_LEAF_FEATURES: u32 = 2;

/// The signature as the three 32-bit registers (EBX, ECX, EDX), little-endian.
pub const fn cpuid_signature_regs() -> [u32; 3] {
    let s = CPUID_SIGNATURE;
    [
        u32::from_le_bytes([s[0], s[1], s[2], s[3]]),
        u32::from_le_bytes([s[4], s[5], s[6], s[7]]),
        u32::from_le_bytes([s[8], s[9], s[10], s[11]]),
    ]
}

/// Splits a 64-bit gate parameter into the ECX (low) and EDX (high) halves of leaf `base + 1`.
pub const fn split_u64(v: u64) -> (u32, u32) {
    (v as u32, (v >> 32) as u32)
}

/// How a call crosses into the hypervisor (spec chapter "Gates"). An open type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(transparent)]
pub struct GateKind(pub u32);

impl GateKind {
    /// No gate: pvabi is not offered.
    pub const NONE: GateKind = GateKind(0);
    /// `out dx, eax` to the port in the gate parameter (spec `GATE-2`).
    pub const IOPORT: GateKind = GateKind(1);
    /// A 32-bit store of the call id to the guest-physical address in the parameter (`GATE-4`).
    pub const MMIO: GateKind = GateKind(2);
    /// Intel `vmcall` (spec `GATE-6`).
    pub const VMCALL: GateKind = GateKind(3);
    /// AMD `vmmcall` (spec `GATE-6`).
    pub const VMMCALL: GateKind = GateKind(4);
    /// In-process gate of a model host (the mock); the parameter is host-defined (`GATE-7`).
    pub const INPROCESS: GateKind = GateKind(5);

    /// The spec's name, or `None` for an unknown kind.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "NONE",
            1 => "IOPORT",
            2 => "MMIO",
            3 => "VMCALL",
            4 => "VMMCALL",
            5 => "INPROCESS",
            _ => return None,
        })
    }
}

bitflags::bitflags! {
    /// Feature bits (spec `DISC-9` and the feature table). Unknown bits are reserved and a guest
    /// ignores them; a host sets only bits it implements.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Features: u64 {
        /// CLOCK.REGISTER_PAGE keeps a pvclock page.
        const CLOCK_PAGE = 1 << 0;
        /// CLOCK.SET_TIMER raises events.
        const TIMER = 1 << 1;
        /// VCPU.REGISTER_STEAL_TIME keeps a steal-time record.
        const STEAL_TIME = 1 << 2;
        /// Upcalls as interrupts on a vector (ring-0 guests).
        const UPCALL_VECTOR = 1 << 3;
        /// Upcalls as callbacks with a saved frame (fully paravirtual guests).
        const UPCALL_CALLBACK = 1 << 4;
        /// MEMORY.BALLOON_* are served.
        const BALLOON = 1 << 5;
        /// GRANT is served.
        const GRANT = 1 << 6;
        /// STORE transactions are served.
        const STORE_TXN = 1 << 7;
        /// MULTICALL is served.
        const MULTICALL = 1 << 8;
        /// The shared-ring gate can be registered.
        const RING_GATE = 1 << 9;
        /// POWER.REGISTER_CRASH_BUFFER is served.
        const CRASH_BUFFER = 1 << 10;
        /// The HARNESS service is present (certification only).
        const HARNESS = 1 << 63;
    }
}

/// How the loader started the guest (spec `DISC-12`). An open type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(transparent)]
pub struct ExecMode(pub u32);

impl ExecMode {
    /// Ring 0 with its own IDT: privileged instructions available; upcalls by vector.
    pub const RING0: ExecMode = ExecMode(0);
    /// Fully paravirtual, ring 3: privileged instructions fault; upcalls by callback.
    pub const PV_RING3: ExecMode = ExecMode(1);
    /// In-process (a host thread, the mock).
    pub const INPROCESS: ExecMode = ExecMode(2);
}

/// The boot-info handoff (spec `DISC-2`..`DISC-4`, `DISC-10`..`DISC-13`).
///
/// The loader writes it into guest RAM and passes its guest-physical address in RDI of the boot
/// vCPU. Little-endian, 8-byte aligned, 128 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct BootInfo {
    /// [`BootInfo::MAGIC`].
    pub magic: u32,
    /// ABI version, `major << 16 | minor`.
    pub abi_version: u32,
    /// Size of this structure as written by the host (at least 128); a guest reads only the
    /// fields it knows.
    pub size: u32,
    /// Gate kind, a [`GateKind`] value.
    pub gate_kind: u32,
    /// Gate parameter: I/O port or MMIO address.
    pub gate_param: u64,
    /// Feature bits ([`Features`]).
    pub features: u64,
    /// Number of vCPUs the guest has (1..=[`crate::MAX_VCPUS`]).
    pub vcpu_count: u32,
    /// Id of the vCPU that receives this handoff.
    pub boot_vcpu: u32,
    /// Guest-physical address of an array of [`crate::memory::MemMapEntry`].
    pub mem_map_gpa: u64,
    /// Number of entries at `mem_map_gpa`.
    pub mem_map_entries: u32,
    /// Execution mode, an [`ExecMode`] value.
    pub exec_mode: u32,
    /// Guest-physical address of the command line (bytes, not NUL-terminated).
    pub cmdline_gpa: u64,
    /// Length of the command line in bytes.
    pub cmdline_len: u32,
    /// Backend id (as BASE.GET_BACKEND_ID).
    pub backend_id: u32,
    /// Total guest RAM in bytes.
    pub mem_size: u64,
    /// Reserved, zero.
    pub _reserved: [u64; 6],
}

impl BootInfo {
    /// `"PVBI"` little-endian (spec `DISC-3`).
    pub const MAGIC: u32 = u32::from_le_bytes(*b"PVBI");
    /// Size in bytes of the v1 structure.
    pub const SIZE: usize = 128;
    /// Required alignment of its guest-physical address.
    pub const ALIGN: u64 = 8;
}

const_assert_eq!(core::mem::size_of::<BootInfo>(), BootInfo::SIZE);
const_assert_eq!(core::mem::align_of::<BootInfo>(), 8);
const_assert_eq!(core::mem::offset_of!(BootInfo, magic), 0);
const_assert_eq!(core::mem::offset_of!(BootInfo, abi_version), 4);
const_assert_eq!(core::mem::offset_of!(BootInfo, size), 8);
const_assert_eq!(core::mem::offset_of!(BootInfo, gate_kind), 12);
const_assert_eq!(core::mem::offset_of!(BootInfo, gate_param), 16);
const_assert_eq!(core::mem::offset_of!(BootInfo, features), 24);
const_assert_eq!(core::mem::offset_of!(BootInfo, vcpu_count), 32);
const_assert_eq!(core::mem::offset_of!(BootInfo, boot_vcpu), 36);
const_assert_eq!(core::mem::offset_of!(BootInfo, mem_map_gpa), 40);
const_assert_eq!(core::mem::offset_of!(BootInfo, mem_map_entries), 48);
const_assert_eq!(core::mem::offset_of!(BootInfo, exec_mode), 52);
const_assert_eq!(core::mem::offset_of!(BootInfo, cmdline_gpa), 56);
const_assert_eq!(core::mem::offset_of!(BootInfo, cmdline_len), 64);
const_assert_eq!(core::mem::offset_of!(BootInfo, backend_id), 68);
const_assert_eq!(core::mem::offset_of!(BootInfo, mem_size), 72);
const_assert_eq!(core::mem::offset_of!(BootInfo, _reserved), 80);
const_assert!(CPUID_BASE_FIRST < CPUID_BASE_LAST);

/// Backend ids (spec `BASE-3`). An open set; `0x8000_0000..` is for vendors.
pub mod backend_id {
    /// The in-process mock, the reference model.
    pub const MOCK: u32 = 1;
    /// The KVM backend.
    pub const KVM: u32 = 2;
    /// The Xen backend.
    pub const XEN: u32 = 3;
    /// First vendor-assigned id.
    pub const VENDOR_FIRST: u32 = 0x8000_0000;
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    #[test]
    fn signature_regs_spell_the_signature() {
        let r = cpuid_signature_regs();
        let mut b = [0u8; 12];
        for (i, w) in r.iter().enumerate() {
            for (j, byte) in w.to_le_bytes().iter().enumerate() {
                if let Some(slot) = b.get_mut(i * 4 + j) {
                    *slot = *byte;
                }
            }
        }
        assert_eq!(&b, b"pvabipvabipv");
        assert_eq!(split_u64(0x1122_3344_5566_7788), (0x5566_7788, 0x1122_3344));
        assert_eq!(&BootInfo::MAGIC.to_le_bytes(), b"PVBI");
    }

    #[test]
    fn boot_info_round_trips_through_bytes() {
        let mut bi = BootInfo::new_zeroed();
        bi.magic = BootInfo::MAGIC;
        bi.gate_kind = GateKind::IOPORT.0;
        let bytes = bi.as_bytes();
        assert_eq!(bytes.len(), 128);
        assert_eq!(BootInfo::read_from_bytes(bytes).ok(), Some(bi));
    }
}
