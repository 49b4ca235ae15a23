//! A machine-readable description of every shared-memory layout, for the ABI snapshot
//! (`spec/abi-v1.lock`), the spec consistency test and generated C headers.

/// One field of a layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldInfo {
    /// Field name as in the Rust type and the spec.
    pub name: &'static str,
    /// Byte offset.
    pub offset: usize,
    /// Size in bytes.
    pub size: usize,
}

/// One `#[repr(C)]` layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayoutInfo {
    /// Type name as in the Rust crate and the spec.
    pub name: &'static str,
    /// Size in bytes.
    pub size: usize,
    /// Alignment in bytes of the Rust type.
    pub align: usize,
    /// Fields in declaration order.
    pub fields: &'static [FieldInfo],
}

/// Size of a field of type `T`, from a projection function that is never called.
const fn field_size<S, T>(_: fn(&S) -> &T) -> usize {
    core::mem::size_of::<T>()
}

macro_rules! layout {
    ($ty:path, $name:literal, [$($f:ident),* $(,)?]) => {
        LayoutInfo {
            name: $name,
            size: core::mem::size_of::<$ty>(),
            align: core::mem::align_of::<$ty>(),
            fields: &[$(FieldInfo {
                name: stringify!($f),
                offset: core::mem::offset_of!($ty, $f),
                size: field_size::<$ty, _>(|s: &$ty| &s.$f),
            }),*],
        }
    };
}

/// Every shared-memory layout of ABI v1.
pub const LAYOUTS: &[LayoutInfo] = &[
    layout!(
        crate::discovery::BootInfo,
        "BootInfo",
        [
            magic,
            abi_version,
            size,
            gate_kind,
            gate_param,
            features,
            vcpu_count,
            boot_vcpu,
            mem_map_gpa,
            mem_map_entries,
            exec_mode,
            cmdline_gpa,
            cmdline_len,
            backend_id,
            mem_size,
            _reserved
        ]
    ),
    layout!(
        crate::memory::MemMapEntry,
        "MemMapEntry",
        [base, length, kind, _reserved]
    ),
    layout!(
        crate::clock::ClockPage,
        "ClockPage",
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
    ),
    layout!(
        crate::vcpu::StealTime,
        "StealTime",
        [steal, version, flags, preempted, _reserved0, _reserved1]
    ),
    layout!(
        crate::event::UpcallFrame,
        "UpcallFrame",
        [rip, rsp, rflags, rax, rcx, rdx, rsi, rdi, r8, r9, r10, r11, _reserved]
    ),
    layout!(
        crate::event::VcpuEventInfo,
        "VcpuEventInfo",
        [selector, upcall_pending, upcall_mask, _reserved, frame]
    ),
    layout!(
        crate::event::EventPage,
        "EventPage",
        [pending, mask, vcpu, _reserved]
    ),
    layout!(
        crate::grant::GrantEntry,
        "GrantEntry",
        [flags, _reserved, domid, gfn]
    ),
    layout!(
        crate::store::WatchEvent,
        "WatchEvent",
        [watch_id, path_len, dropped, _reserved]
    ),
    layout!(
        crate::power::CrashHeader,
        "CrashHeader",
        [magic, message_len, code, rip, _reserved]
    ),
    layout!(
        crate::multicall::MulticallEntry,
        "MulticallEntry",
        [call_id, flags, args, status, value]
    ),
    layout!(
        crate::ring::RingHeader,
        "RingHeader",
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
    ),
    layout!(
        crate::ring::RingRequest,
        "RingRequest",
        [cookie, call_id, args, _reserved]
    ),
    layout!(
        crate::ring::RingCompletion,
        "RingCompletion",
        [cookie, _reserved, status, value]
    ),
    layout!(
        crate::harness::ReportHeader,
        "ReportHeader",
        [magic, outcome, clauses_len, name_len, detail_len, _reserved]
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_tile_each_layout_without_hidden_padding() {
        for l in LAYOUTS {
            let mut end = 0;
            for f in l.fields {
                assert_eq!(f.offset, end, "{}.{} leaves a gap", l.name, f.name);
                end = f.offset + f.size;
            }
            assert_eq!(end, l.size, "{} has trailing padding", l.name);
        }
    }
}
