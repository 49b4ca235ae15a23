//! Every constant the header defines, with its value taken from the `pvabi` crate.

use pvabi::call::{ServiceId, CALLS};
use pvabi::discovery::{self, backend_id, ExecMode, Features, GateKind};
use pvabi::{
    clock, console, event, gate, grant, harness, memory, multicall, power, ring, store, vcpu,
    Status,
};

/// A constant's value and the C literal form it is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CValue {
    /// An `unsigned int` literal in hex with this many digits: `0x00010000u`.
    Hex32(u32, usize),
    /// An `unsigned int` literal in decimal: `4096u`.
    Dec32(u32),
    /// An `unsigned long long` literal in hex: `0x0000000000000001ull`.
    Hex64(u64),
    /// An `unsigned long long` literal in decimal: `4096ull`.
    Dec64(u64),
    /// An `int` literal: `(-1)`.
    Int(i32),
}

impl CValue {
    /// The C literal.
    pub fn literal(self) -> String {
        match self {
            CValue::Hex32(v, digits) => format!("0x{v:0digits$x}u"),
            CValue::Dec32(v) => format!("{v}u"),
            CValue::Hex64(v) => format!("0x{v:016x}ull"),
            CValue::Dec64(v) => format!("{v}ull"),
            CValue::Int(v) if v < 0 => format!("({v})"),
            CValue::Int(v) => format!("{v}"),
        }
    }

    /// The C type the literal has, as `_Generic` names it.
    pub fn c_type(self) -> &'static str {
        match self {
            CValue::Hex32(..) | CValue::Dec32(_) => "unsigned int",
            CValue::Hex64(_) | CValue::Dec64(_) => "unsigned long long",
            CValue::Int(_) => "int",
        }
    }

    /// The numeric value.
    pub fn value(self) -> i128 {
        match self {
            CValue::Hex32(v, _) | CValue::Dec32(v) => i128::from(v),
            CValue::Hex64(v) | CValue::Dec64(v) => i128::from(v),
            CValue::Int(v) => i128::from(v),
        }
    }

    /// Whether the C type is signed.
    pub fn is_signed(self) -> bool {
        matches!(self, CValue::Int(_))
    }
}

/// One `#define`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CConst {
    /// Macro name, `PVABI_...`.
    pub name: String,
    /// Value.
    pub value: CValue,
    /// One-line comment, or empty.
    pub doc: String,
}

/// A titled group of constants (one comment block in the header).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConstGroup {
    /// Heading comment.
    pub title: &'static str,
    /// The constants.
    pub consts: Vec<CConst>,
}

fn c(name: impl Into<String>, value: CValue, doc: &str) -> CConst {
    CConst {
        name: name.into(),
        value,
        doc: doc.into(),
    }
}

fn hex(v: u32) -> CValue {
    CValue::Hex32(v, 8)
}

fn hex16(v: u16) -> CValue {
    CValue::Hex32(u32::from(v), 4)
}

fn dec(v: u32) -> CValue {
    CValue::Dec32(v)
}

fn usz(v: usize) -> CValue {
    match u32::try_from(v) {
        Ok(v) => CValue::Dec32(v),
        Err(_) => panic!("constant {v} does not fit an unsigned int"),
    }
}

fn group(title: &'static str, consts: Vec<CConst>) -> ConstGroup {
    ConstGroup { title, consts }
}

/// The header's macro name of a call, from its spec name: `CONSOLE.WRITE` gives
/// `PVABI_CALL_CONSOLE_WRITE`.
pub fn call_macro(spec_name: &str) -> String {
    format!("PVABI_CALL_{}", spec_name.replace('.', "_"))
}

/// The header's macro name of a status: `NOT_SUPPORTED` gives `PVABI_STATUS_NOT_SUPPORTED`.
pub fn status_macro(spec_name: &str) -> String {
    format!("PVABI_STATUS_{spec_name}")
}

/// Every constant group of the header, in header order.
///
/// # Panics
///
/// Panics if a known status or call has no spec name (the crate's own tests rule that out).
pub fn const_groups() -> Vec<ConstGroup> {
    let v = pvabi::ABI_VERSION;
    let mut groups = vec![group(
        "ABI version (spec VER-1, VER-2) and general limits",
        vec![
            c(
                "PVABI_ABI_VERSION_MAJOR",
                dec(v.major.into()),
                "Major ABI version.",
            ),
            c(
                "PVABI_ABI_VERSION_MINOR",
                dec(v.minor.into()),
                "Minor ABI version.",
            ),
            c(
                "PVABI_ABI_VERSION",
                hex(v.to_u32()),
                "Register encoding: major << 16 | minor.",
            ),
            c(
                "PVABI_PAGE_SIZE",
                CValue::Dec64(pvabi::PAGE_SIZE),
                "Guest page size in bytes (CONV-10).",
            ),
            c(
                "PVABI_MAX_VCPUS",
                dec(pvabi::MAX_VCPUS),
                "Most vCPUs one guest can have (VCPU-1).",
            ),
        ],
    )];

    let mut services: Vec<CConst> = ServiceId::V1
        .iter()
        .chain([ServiceId::HARNESS].iter())
        .map(|s| {
            let name = s.name().expect("every v1 service has a name");
            c(format!("PVABI_SERVICE_{name}"), hex16(s.0), "")
        })
        .collect();
    services.push(c(
        "PVABI_SERVICE_VENDOR_FIRST",
        hex16(ServiceId::VENDOR_FIRST.0),
        "First vendor service id (CONV-3).",
    ));
    groups.push(group(
        "Service ids: bits 31..16 of a call id (CONV-2)",
        services,
    ));

    groups.push(group(
        "Call ids: service << 16 | function (CONV-1)",
        CALLS
            .iter()
            .map(|ci| {
                let doc = format!(
                    "{} ({} argument{}{}).",
                    ci.name,
                    ci.args,
                    if ci.args == 1 { "" } else { "s" },
                    if ci.returns {
                        ""
                    } else {
                        "; does not return on success"
                    }
                );
                c(call_macro(ci.name), hex(ci.id.0), &doc)
            })
            .collect(),
    ));

    groups.push(group(
        "Status codes, sign-extended in RAX (CONV-5, CONV-6)",
        Status::ALL
            .iter()
            .map(|s| {
                let name = s.name().expect("every v1 status has a name");
                c(status_macro(name), CValue::Int(s.0), "")
            })
            .collect(),
    ));

    let [ebx, ecx, edx] = discovery::cpuid_signature_regs();
    groups.push(group(
        "CPUID discovery (DISC-5..DISC-8)",
        vec![
            c(
                "PVABI_CPUID_BASE_FIRST",
                hex(discovery::CPUID_BASE_FIRST),
                "First leaf searched for the signature.",
            ),
            c(
                "PVABI_CPUID_BASE_LAST",
                hex(discovery::CPUID_BASE_LAST),
                "Last leaf searched for the signature.",
            ),
            c(
                "PVABI_CPUID_BASE_STEP",
                hex(discovery::CPUID_BASE_STEP),
                "Step between candidate leaves.",
            ),
            c(
                "PVABI_CPUID_SIGNATURE_EBX",
                hex(ebx),
                "\"pvab\" as EBX of the signature leaf.",
            ),
            c(
                "PVABI_CPUID_SIGNATURE_ECX",
                hex(ecx),
                "\"ipva\" as ECX of the signature leaf.",
            ),
            c(
                "PVABI_CPUID_SIGNATURE_EDX",
                hex(edx),
                "\"bipv\" as EDX of the signature leaf.",
            ),
            c(
                "PVABI_CPUID_LEAF_GATE",
                dec(discovery::CPUID_LEAF_GATE),
                "Offset of the version/gate leaf from the signature leaf.",
            ),
            c(
                "PVABI_CPUID_LEAF_FEATURES",
                dec(discovery::CPUID_LEAF_FEATURES),
                "Offset of the features/vCPU-count leaf from the signature leaf.",
            ),
        ],
    ));

    groups.push(group(
        "Feature bits (DISC-9)",
        Features::all()
            .iter_names()
            .map(|(name, f)| c(format!("PVABI_FEATURE_{name}"), CValue::Hex64(f.bits()), ""))
            .collect(),
    ));

    let mut gates: Vec<CConst> = (0..=u32::from(u8::MAX))
        .filter_map(|k| {
            GateKind(k)
                .name()
                .map(|n| c(format!("PVABI_GATE_{n}"), dec(k), ""))
        })
        .collect();
    gates.extend([
        c(
            "PVABI_IOPORT_GATE_WIDTH",
            dec(gate::IOPORT_GATE_WIDTH.into()),
            "Bytes of the `out dx, eax` that triggers the port gate (GATE-2).",
        ),
        c(
            "PVABI_DEFAULT_IOPORT",
            hex16(gate::DEFAULT_IOPORT),
            "Default port of the port gate (GATE-3).",
        ),
        c(
            "PVABI_DEFAULT_MMIO_GATE",
            CValue::Hex64(gate::DEFAULT_MMIO_GATE),
            "Default guest-physical address of the MMIO trigger word (GATE-5).",
        ),
        c(
            "PVABI_NULL_IOPORT",
            hex16(gate::NULL_IOPORT),
            "Port hosts ignore writes to: a bare exit (GATE-8).",
        ),
    ]);
    groups.push(group("Gate kinds and gate parameters", gates));

    groups.push(group(
        "Execution modes (DISC-12) and backend ids (BASE-3)",
        vec![
            c("PVABI_EXEC_MODE_RING0", dec(ExecMode::RING0.0), ""),
            c("PVABI_EXEC_MODE_PV_RING3", dec(ExecMode::PV_RING3.0), ""),
            c("PVABI_EXEC_MODE_INPROCESS", dec(ExecMode::INPROCESS.0), ""),
            c("PVABI_BACKEND_MOCK", dec(backend_id::MOCK), ""),
            c("PVABI_BACKEND_KVM", dec(backend_id::KVM), ""),
            c("PVABI_BACKEND_XEN", dec(backend_id::XEN), ""),
            c(
                "PVABI_BACKEND_VENDOR_FIRST",
                hex(backend_id::VENDOR_FIRST),
                "",
            ),
        ],
    ));

    groups.push(group(
        "Boot-info handoff (DISC-2..DISC-4)",
        vec![
            c(
                "PVABI_BOOT_INFO_MAGIC",
                hex(discovery::BootInfo::MAGIC),
                "\"PVBI\" little-endian.",
            ),
            c("PVABI_BOOT_INFO_SIZE", usz(discovery::BootInfo::SIZE), ""),
            c(
                "PVABI_BOOT_INFO_ALIGN",
                CValue::Dec64(discovery::BootInfo::ALIGN),
                "",
            ),
        ],
    ));

    groups.push(group(
        "CONSOLE (chapter 5)",
        vec![c(
            "PVABI_CONSOLE_MAX_TRANSFER",
            CValue::Dec64(console::MAX_TRANSFER),
            "Longest CONSOLE.WRITE/READ (CONS-2).",
        )],
    ));

    groups.push(group(
        "CLOCK (chapter 6)",
        vec![
            c("PVABI_CLOCK_PAGE_SIZE", usz(clock::ClockPage::SIZE), ""),
            c(
                "PVABI_CLOCK_PAGE_ALIGN",
                CValue::Dec64(clock::ClockPage::ALIGN),
                "Required alignment of the page's guest-physical address (CLK-1).",
            ),
            c(
                "PVABI_CLOCK_FLAG_TSC_STABLE",
                CValue::Hex32(clock::ClockPage::FLAG_TSC_STABLE.into(), 2),
                "",
            ),
            c(
                "PVABI_CLOCK_TIMER_CANCEL",
                CValue::Dec64(clock::TIMER_CANCEL),
                "CLOCK.SET_TIMER deadline that cancels the timer (CLK-8).",
            ),
        ],
    ));

    groups.push(group(
        "VCPU (chapter 7)",
        vec![
            c(
                "PVABI_VCPU_STATE_STOPPED",
                dec(vcpu::VcpuState::STOPPED.0),
                "",
            ),
            c(
                "PVABI_VCPU_STATE_RUNNING",
                dec(vcpu::VcpuState::RUNNING.0),
                "",
            ),
            c(
                "PVABI_VCPU_STATE_START_PENDING",
                dec(vcpu::VcpuState::START_PENDING.0),
                "",
            ),
            c(
                "PVABI_VCPU_STATE_BLOCKED",
                dec(vcpu::VcpuState::BLOCKED.0),
                "",
            ),
            c(
                "PVABI_VCPU_BLOCK_FOREVER",
                CValue::Dec64(vcpu::BLOCK_FOREVER),
                "VCPU.BLOCK deadline meaning no deadline (VCPU-3).",
            ),
            c("PVABI_STEAL_TIME_SIZE", usz(vcpu::StealTime::SIZE), ""),
            c(
                "PVABI_STEAL_TIME_ALIGN",
                CValue::Dec64(vcpu::StealTime::ALIGN),
                "",
            ),
        ],
    ));

    groups.push(group(
        "EVENT (chapter 8)",
        vec![
            c(
                "PVABI_EVENT_NUM_PORTS",
                dec(event::NUM_PORTS),
                "Valid ports are 1..PVABI_EVENT_NUM_PORTS-1 (EVT-2).",
            ),
            c("PVABI_EVENT_BITMAP_WORDS", usz(event::BITMAP_WORDS), ""),
            c("PVABI_UPCALL_MODE_NONE", dec(event::UpcallMode::NONE.0), ""),
            c(
                "PVABI_UPCALL_MODE_VECTOR",
                dec(event::UpcallMode::VECTOR.0),
                "",
            ),
            c(
                "PVABI_UPCALL_MODE_CALLBACK",
                dec(event::UpcallMode::CALLBACK.0),
                "",
            ),
            c(
                "PVABI_EVENT_MIN_UPCALL_VECTOR",
                CValue::Dec64(event::MIN_UPCALL_VECTOR),
                "",
            ),
            c(
                "PVABI_EVENT_RED_ZONE",
                CValue::Dec64(event::RED_ZONE),
                "Bytes below the interrupted RSP a callback upcall leaves alone (EVT-12).",
            ),
            c(
                "PVABI_EVENT_PAGE_PENDING_OFFSET",
                usz(event::EventPage::PENDING_OFFSET),
                "",
            ),
            c(
                "PVABI_EVENT_PAGE_MASK_OFFSET",
                usz(event::EventPage::MASK_OFFSET),
                "",
            ),
            c(
                "PVABI_EVENT_PAGE_VCPU_OFFSET",
                usz(event::EventPage::VCPU_OFFSET),
                "",
            ),
            c(
                "PVABI_EVENT_PAGE_VCPU_STRIDE",
                usz(event::EventPage::VCPU_STRIDE),
                "",
            ),
            c(
                "PVABI_VCPU_EVENT_INFO_SELECTOR_OFFSET",
                usz(event::vcpu_info::SELECTOR),
                "",
            ),
            c(
                "PVABI_VCPU_EVENT_INFO_UPCALL_PENDING_OFFSET",
                usz(event::vcpu_info::UPCALL_PENDING),
                "",
            ),
            c(
                "PVABI_VCPU_EVENT_INFO_UPCALL_MASK_OFFSET",
                usz(event::vcpu_info::UPCALL_MASK),
                "",
            ),
            c(
                "PVABI_VCPU_EVENT_INFO_FRAME_OFFSET",
                usz(event::vcpu_info::FRAME),
                "",
            ),
        ],
    ));

    groups.push(group(
        "MEMORY (chapter 9)",
        vec![
            c("PVABI_MEM_KIND_RAM", dec(memory::MemKind::RAM.0), ""),
            c(
                "PVABI_MEM_KIND_RESERVED",
                dec(memory::MemKind::RESERVED.0),
                "",
            ),
            c("PVABI_MEM_KIND_LOADER", dec(memory::MemKind::LOADER.0), ""),
            c("PVABI_MEM_KIND_MMIO", dec(memory::MemKind::MMIO.0), ""),
            c(
                "PVABI_MEM_MAP_ENTRY_SIZE",
                usz(memory::MemMapEntry::SIZE),
                "",
            ),
            c(
                "PVABI_MEMORY_MAX_BALLOON_PAGES_PER_CALL",
                CValue::Dec64(memory::MAX_BALLOON_PAGES_PER_CALL),
                "",
            ),
        ],
    ));

    groups.push(group(
        "GRANT (chapter 10)",
        vec![
            c("PVABI_GRANT_ENTRY_SIZE", usz(grant::GrantEntry::SIZE), ""),
            c(
                "PVABI_GRANT_FLAG_VALID",
                hex16(grant::GrantEntry::FLAG_VALID),
                "",
            ),
            c(
                "PVABI_GRANT_FLAG_READONLY",
                hex16(grant::GrantEntry::FLAG_READONLY),
                "",
            ),
            c(
                "PVABI_GRANT_FLAGS_KNOWN",
                hex16(grant::GrantEntry::FLAGS_KNOWN),
                "Any other set bit makes an entry invalid (GNT-4).",
            ),
            c(
                "PVABI_GRANT_DOMID_HOST",
                dec(grant::GrantEntry::DOMID_HOST),
                "",
            ),
            c(
                "PVABI_GRANT_MAX_ENTRIES",
                CValue::Dec64(grant::MAX_ENTRIES),
                "",
            ),
        ],
    ));

    groups.push(group(
        "STORE (chapter 11)",
        vec![
            c("PVABI_STORE_MAX_PATH", CValue::Dec64(store::MAX_PATH), ""),
            c("PVABI_STORE_MAX_VALUE", CValue::Dec64(store::MAX_VALUE), ""),
            c("PVABI_STORE_MAX_ENTRIES", dec(store::MAX_ENTRIES), ""),
            c("PVABI_STORE_MAX_WATCHES", dec(store::MAX_WATCHES), ""),
            c(
                "PVABI_STORE_MAX_TRANSACTIONS",
                dec(store::MAX_TRANSACTIONS),
                "",
            ),
            c(
                "PVABI_STORE_MAX_WATCH_EVENTS",
                dec(store::MAX_WATCH_EVENTS),
                "",
            ),
            c(
                "PVABI_STORE_NO_TXN",
                CValue::Dec64(store::NO_TXN),
                "The txn argument meaning no transaction (STORE-15).",
            ),
            c(
                "PVABI_STORE_ACCESS_NONE",
                dec(store::GuestAccess::NONE.0),
                "",
            ),
            c(
                "PVABI_STORE_ACCESS_READ",
                dec(store::GuestAccess::READ.0),
                "",
            ),
            c(
                "PVABI_STORE_ACCESS_READ_WRITE",
                dec(store::GuestAccess::READ_WRITE.0),
                "",
            ),
            c("PVABI_WATCH_EVENT_SIZE", usz(store::WatchEvent::SIZE), ""),
        ],
    ));

    groups.push(group(
        "POWER (chapter 12)",
        vec![
            c(
                "PVABI_SHUTDOWN_POWEROFF",
                dec(power::ShutdownReason::POWEROFF.0),
                "",
            ),
            c(
                "PVABI_SHUTDOWN_REBOOT",
                dec(power::ShutdownReason::REBOOT.0),
                "",
            ),
            c(
                "PVABI_SHUTDOWN_CRASH",
                dec(power::ShutdownReason::CRASH.0),
                "",
            ),
            c(
                "PVABI_CRASH_HEADER_MAGIC",
                hex(power::CrashHeader::MAGIC),
                "\"PVCR\" little-endian.",
            ),
            c("PVABI_CRASH_HEADER_SIZE", usz(power::CrashHeader::SIZE), ""),
            c(
                "PVABI_CRASH_MAX_BUFFER",
                CValue::Dec64(power::CrashHeader::MAX_BUFFER),
                "",
            ),
        ],
    ));

    groups.push(group(
        "MULTICALL (chapter 13)",
        vec![
            c(
                "PVABI_MULTICALL_ENTRY_SIZE",
                usz(multicall::MulticallEntry::SIZE),
                "",
            ),
            c(
                "PVABI_MULTICALL_ENTRY_ALIGN",
                CValue::Dec64(multicall::MulticallEntry::ALIGN),
                "",
            ),
            c(
                "PVABI_MULTICALL_FLAG_STOP_ON_ERROR",
                hex(multicall::MulticallEntry::FLAG_STOP_ON_ERROR),
                "",
            ),
            c(
                "PVABI_MULTICALL_MAX_ENTRIES",
                CValue::Dec64(multicall::MAX_ENTRIES),
                "",
            ),
        ],
    ));

    groups.push(group(
        "Shared-ring gate (RING-*)",
        vec![
            c(
                "PVABI_RING_HEADER_MAGIC",
                hex(ring::RingHeader::MAGIC),
                "\"PVRG\" little-endian.",
            ),
            c("PVABI_RING_HEADER_SIZE", usz(ring::RingHeader::SIZE), ""),
            c("PVABI_RING_MIN_ORDER", dec(ring::RingHeader::MIN_ORDER), ""),
            c("PVABI_RING_MAX_ORDER", dec(ring::RingHeader::MAX_ORDER), ""),
            c(
                "PVABI_RING_HEADER_REQ_PROD_OFFSET",
                usz(ring::RingHeader::REQ_PROD),
                "",
            ),
            c(
                "PVABI_RING_HEADER_REQ_CONS_OFFSET",
                usz(ring::RingHeader::REQ_CONS),
                "",
            ),
            c(
                "PVABI_RING_HEADER_CMP_PROD_OFFSET",
                usz(ring::RingHeader::CMP_PROD),
                "",
            ),
            c(
                "PVABI_RING_HEADER_CMP_CONS_OFFSET",
                usz(ring::RingHeader::CMP_CONS),
                "",
            ),
            c(
                "PVABI_RING_HEADER_HOST_POLLING_OFFSET",
                usz(ring::RingHeader::HOST_POLLING),
                "",
            ),
            c("PVABI_RING_REQUEST_SIZE", usz(ring::RingRequest::SIZE), ""),
            c(
                "PVABI_RING_COMPLETION_SIZE",
                usz(ring::RingCompletion::SIZE),
                "",
            ),
        ],
    ));

    groups.push(group(
        "HARNESS (appendix A, certification only)",
        vec![
            c("PVABI_OUTCOME_PASSED", dec(harness::Outcome::PASSED.0), ""),
            c("PVABI_OUTCOME_FAILED", dec(harness::Outcome::FAILED.0), ""),
            c(
                "PVABI_OUTCOME_SKIPPED",
                dec(harness::Outcome::SKIPPED.0),
                "",
            ),
            c("PVABI_OUTCOME_END", dec(harness::Outcome::END.0), ""),
            c(
                "PVABI_REPORT_HEADER_MAGIC",
                hex(harness::ReportHeader::MAGIC),
                "\"PVRP\" little-endian.",
            ),
            c(
                "PVABI_REPORT_HEADER_SIZE",
                usz(harness::ReportHeader::SIZE),
                "",
            ),
            c(
                "PVABI_REPORT_MAX_RECORD",
                CValue::Dec64(harness::ReportHeader::MAX_RECORD),
                "",
            ),
            c(
                "PVABI_HARNESS_GRANT_ACCESS_READ",
                CValue::Hex64(harness::GRANT_ACCESS_READ),
                "HARNESS.GRANT_ACCESS third argument: read, don't write (HAR-10).",
            ),
        ],
    ));
    groups
}

/// Every constant of [`const_groups`], flattened.
pub fn all_consts() -> Vec<CConst> {
    const_groups().into_iter().flat_map(|g| g.consts).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn literals() {
        assert_eq!(hex(0x0001_0000).literal(), "0x00010000u");
        assert_eq!(CValue::Int(-1).literal(), "(-1)");
        assert_eq!(CValue::Int(0).literal(), "0");
        assert_eq!(CValue::Hex64(1 << 63).literal(), "0x8000000000000000ull");
        assert_eq!(hex16(0x0510).literal(), "0x0510u");
        assert_eq!(CValue::Dec64(4096).literal(), "4096ull");
    }

    #[test]
    fn names_are_unique_prefixed_and_cover_calls_and_statuses() {
        let all = all_consts();
        let names: BTreeSet<_> = all.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names.len(), all.len(), "duplicate macro names");
        assert!(names.iter().all(|n| n.starts_with("PVABI_")));
        assert!(names.iter().all(|n| n
            .chars()
            .all(|ch| ch.is_ascii_uppercase() || ch.is_ascii_digit() || ch == '_')));
        for ci in CALLS {
            assert!(names.contains(call_macro(ci.name).as_str()), "{}", ci.name);
        }
        for s in Status::ALL {
            let n = status_macro(s.name().unwrap_or("?"));
            assert!(names.contains(n.as_str()), "{n}");
        }
        assert_eq!(
            names
                .iter()
                .filter(|n| n.starts_with("PVABI_FEATURE_"))
                .count(),
            Features::all().iter().count()
        );
    }
}
