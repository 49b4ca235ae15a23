//! The `pvabi` crate described as plain data: every call, status, service, gate kind, feature
//! bit, discovery constant, named constant and layout. The spec consistency test compares the
//! spec's tables with this model and the snapshot test renders it as `spec/abi-v1.lock`.
//!
//! Calls, statuses, services, gate kinds, features and layouts are read from the crate's own
//! tables (`CALLS`, `Status::ALL`, `ServiceId::V1`, `Features`, `LAYOUTS`); the named constants
//! are listed here by hand because Rust cannot enumerate a module's constants.

// Each integration test uses a different part of this module.
#![allow(dead_code)]

use core::fmt::Write as _;

use pvabi::{
    base, call, clock, console, discovery, event, gate, grant, harness, layout, memory, multicall,
    power, ring, store, vcpu, version, Features, GateKind, ServiceId, Status,
};

/// A constant's value: a number or a string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// An integer (signed, wide enough for every u64 and i64).
    Num(i128),
    /// A string, written in double quotes in the spec.
    Str(String),
}

impl Value {
    /// Renders the value as the snapshot writes it: hex for large numbers, decimal otherwise.
    pub fn render(&self) -> String {
        match self {
            Value::Num(n) if *n >= 0x1000 => format!("{n:#x}"),
            Value::Num(n) => format!("{n}"),
            Value::Str(s) => format!("\"{s}\""),
        }
    }
}

/// One call of the function table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallModel {
    /// Call id.
    pub id: u32,
    /// `SERVICE.FUNCTION`.
    pub name: String,
    /// Argument count.
    pub args: u8,
    /// Whether the call returns on success.
    pub returns: bool,
}

/// One field of a layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldModel {
    /// Field name.
    pub name: String,
    /// Byte offset.
    pub offset: usize,
    /// Size in bytes.
    pub size: usize,
}

/// One shared-memory layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayoutModel {
    /// Type name.
    pub name: String,
    /// Size in bytes.
    pub size: usize,
    /// Alignment in bytes.
    pub align: usize,
    /// Fields in order.
    pub fields: Vec<FieldModel>,
}

/// Everything the spec's machine-readable tables must agree with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Model {
    /// ABI version (major, minor).
    pub version: (u16, u16),
    /// Every call, HARNESS included.
    pub calls: Vec<CallModel>,
    /// Every status (code, name).
    pub statuses: Vec<(i32, String)>,
    /// Every named service (id, name), HARNESS included.
    pub services: Vec<(u16, String)>,
    /// Every named gate kind (value, name).
    pub gate_kinds: Vec<(u32, String)>,
    /// Every feature bit (bit number, name).
    pub features: Vec<(u32, String)>,
    /// CPUID discovery constants (name, value).
    pub cpuid: Vec<(String, Value)>,
    /// Named constants (path in the crate, value).
    pub constants: Vec<(String, Value)>,
    /// Every layout.
    pub layouts: Vec<LayoutModel>,
}

fn num<T: Into<i128>>(name: &str, v: T) -> (String, Value) {
    (name.to_string(), Value::Num(v.into()))
}

/// The named constants of the crate, by their path in the crate.
fn constants() -> Vec<(String, Value)> {
    vec![
        num("PAGE_SIZE", pvabi::PAGE_SIZE),
        num("MAX_VCPUS", pvabi::MAX_VCPUS),
        num("version::ABI_VERSION_MAJOR", version::ABI_VERSION_MAJOR),
        num("version::ABI_VERSION_MINOR", version::ABI_VERSION_MINOR),
        num(
            "call::ServiceId::VENDOR_FIRST",
            call::ServiceId::VENDOR_FIRST.0,
        ),
        num("discovery::BootInfo::MAGIC", discovery::BootInfo::MAGIC),
        num(
            "discovery::BootInfo::SIZE",
            discovery::BootInfo::SIZE as u64,
        ),
        num("discovery::BootInfo::ALIGN", discovery::BootInfo::ALIGN),
        num("discovery::ExecMode::RING0", discovery::ExecMode::RING0.0),
        num(
            "discovery::ExecMode::PV_RING3",
            discovery::ExecMode::PV_RING3.0,
        ),
        num(
            "discovery::ExecMode::INPROCESS",
            discovery::ExecMode::INPROCESS.0,
        ),
        num("gate::IOPORT_GATE_WIDTH", gate::IOPORT_GATE_WIDTH),
        num("gate::DEFAULT_IOPORT", gate::DEFAULT_IOPORT),
        num("gate::DEFAULT_MMIO_GATE", gate::DEFAULT_MMIO_GATE),
        num("gate::NULL_IOPORT", gate::NULL_IOPORT),
        num("ring::RingHeader::MAGIC", ring::RingHeader::MAGIC),
        num("ring::RingHeader::MIN_ORDER", ring::RingHeader::MIN_ORDER),
        num("ring::RingHeader::MAX_ORDER", ring::RingHeader::MAX_ORDER),
        num("ring::RingHeader::SIZE", ring::RingHeader::SIZE as u64),
        num(
            "ring::RingHeader::REQ_PROD",
            ring::RingHeader::REQ_PROD as u64,
        ),
        num(
            "ring::RingHeader::REQ_CONS",
            ring::RingHeader::REQ_CONS as u64,
        ),
        num(
            "ring::RingHeader::CMP_PROD",
            ring::RingHeader::CMP_PROD as u64,
        ),
        num(
            "ring::RingHeader::CMP_CONS",
            ring::RingHeader::CMP_CONS as u64,
        ),
        num(
            "ring::RingHeader::HOST_POLLING",
            ring::RingHeader::HOST_POLLING as u64,
        ),
        num("ring::RingRequest::SIZE", ring::RingRequest::SIZE as u64),
        num(
            "ring::RingCompletion::SIZE",
            ring::RingCompletion::SIZE as u64,
        ),
        num("base::backend_id::MOCK", base::backend_id::MOCK),
        num("base::backend_id::KVM", base::backend_id::KVM),
        num("base::backend_id::XEN", base::backend_id::XEN),
        num(
            "base::backend_id::VENDOR_FIRST",
            base::backend_id::VENDOR_FIRST,
        ),
        num("console::MAX_TRANSFER", console::MAX_TRANSFER),
        num("clock::ClockPage::SIZE", clock::ClockPage::SIZE as u64),
        num("clock::ClockPage::ALIGN", clock::ClockPage::ALIGN),
        num(
            "clock::ClockPage::FLAG_TSC_STABLE",
            clock::ClockPage::FLAG_TSC_STABLE,
        ),
        num("clock::TIMER_CANCEL", clock::TIMER_CANCEL),
        num("vcpu::VcpuState::STOPPED", vcpu::VcpuState::STOPPED.0),
        num("vcpu::VcpuState::RUNNING", vcpu::VcpuState::RUNNING.0),
        num(
            "vcpu::VcpuState::START_PENDING",
            vcpu::VcpuState::START_PENDING.0,
        ),
        num("vcpu::VcpuState::BLOCKED", vcpu::VcpuState::BLOCKED.0),
        num("vcpu::BLOCK_FOREVER", vcpu::BLOCK_FOREVER),
        num("vcpu::StealTime::SIZE", vcpu::StealTime::SIZE as u64),
        num("vcpu::StealTime::ALIGN", vcpu::StealTime::ALIGN),
        num("event::NUM_PORTS", event::NUM_PORTS),
        num("event::BITMAP_WORDS", event::BITMAP_WORDS as u64),
        num("event::MIN_UPCALL_VECTOR", event::MIN_UPCALL_VECTOR),
        num("event::RED_ZONE", event::RED_ZONE),
        num("event::UpcallMode::NONE", event::UpcallMode::NONE.0),
        num("event::UpcallMode::VECTOR", event::UpcallMode::VECTOR.0),
        num("event::UpcallMode::CALLBACK", event::UpcallMode::CALLBACK.0),
        num(
            "event::EventPage::PENDING_OFFSET",
            event::EventPage::PENDING_OFFSET as u64,
        ),
        num(
            "event::EventPage::MASK_OFFSET",
            event::EventPage::MASK_OFFSET as u64,
        ),
        num(
            "event::EventPage::VCPU_OFFSET",
            event::EventPage::VCPU_OFFSET as u64,
        ),
        num(
            "event::EventPage::VCPU_STRIDE",
            event::EventPage::VCPU_STRIDE as u64,
        ),
        num(
            "event::vcpu_info::SELECTOR",
            event::vcpu_info::SELECTOR as u64,
        ),
        num(
            "event::vcpu_info::UPCALL_PENDING",
            event::vcpu_info::UPCALL_PENDING as u64,
        ),
        num(
            "event::vcpu_info::UPCALL_MASK",
            event::vcpu_info::UPCALL_MASK as u64,
        ),
        num("event::vcpu_info::FRAME", event::vcpu_info::FRAME as u64),
        num("memory::MemKind::RAM", memory::MemKind::RAM.0),
        num("memory::MemKind::RESERVED", memory::MemKind::RESERVED.0),
        num("memory::MemKind::LOADER", memory::MemKind::LOADER.0),
        num("memory::MemKind::MMIO", memory::MemKind::MMIO.0),
        num(
            "memory::MemMapEntry::SIZE",
            memory::MemMapEntry::SIZE as u64,
        ),
        num(
            "memory::MAX_BALLOON_PAGES_PER_CALL",
            memory::MAX_BALLOON_PAGES_PER_CALL,
        ),
        num("grant::GrantEntry::SIZE", grant::GrantEntry::SIZE as u64),
        num(
            "grant::GrantEntry::FLAG_VALID",
            grant::GrantEntry::FLAG_VALID,
        ),
        num(
            "grant::GrantEntry::FLAG_READONLY",
            grant::GrantEntry::FLAG_READONLY,
        ),
        num(
            "grant::GrantEntry::FLAGS_KNOWN",
            grant::GrantEntry::FLAGS_KNOWN,
        ),
        num(
            "grant::GrantEntry::DOMID_HOST",
            grant::GrantEntry::DOMID_HOST,
        ),
        num("grant::MAX_ENTRIES", grant::MAX_ENTRIES),
        num("store::MAX_PATH", store::MAX_PATH),
        num("store::MAX_VALUE", store::MAX_VALUE),
        num("store::MAX_ENTRIES", store::MAX_ENTRIES),
        num("store::MAX_WATCHES", store::MAX_WATCHES),
        num("store::MAX_TRANSACTIONS", store::MAX_TRANSACTIONS),
        num("store::MAX_WATCH_EVENTS", store::MAX_WATCH_EVENTS),
        num("store::NO_TXN", store::NO_TXN),
        num("store::GuestAccess::NONE", store::GuestAccess::NONE.0),
        num("store::GuestAccess::READ", store::GuestAccess::READ.0),
        num(
            "store::GuestAccess::READ_WRITE",
            store::GuestAccess::READ_WRITE.0,
        ),
        num("store::WatchEvent::SIZE", store::WatchEvent::SIZE as u64),
        num(
            "power::ShutdownReason::POWEROFF",
            power::ShutdownReason::POWEROFF.0,
        ),
        num(
            "power::ShutdownReason::REBOOT",
            power::ShutdownReason::REBOOT.0,
        ),
        num(
            "power::ShutdownReason::CRASH",
            power::ShutdownReason::CRASH.0,
        ),
        num("power::CrashHeader::MAGIC", power::CrashHeader::MAGIC),
        num("power::CrashHeader::SIZE", power::CrashHeader::SIZE as u64),
        num(
            "power::CrashHeader::MAX_BUFFER",
            power::CrashHeader::MAX_BUFFER,
        ),
        num(
            "multicall::MulticallEntry::SIZE",
            multicall::MulticallEntry::SIZE as u64,
        ),
        num(
            "multicall::MulticallEntry::ALIGN",
            multicall::MulticallEntry::ALIGN,
        ),
        num(
            "multicall::MulticallEntry::FLAG_STOP_ON_ERROR",
            multicall::MulticallEntry::FLAG_STOP_ON_ERROR,
        ),
        num("multicall::MAX_ENTRIES", multicall::MAX_ENTRIES),
        num("harness::Outcome::PASSED", harness::Outcome::PASSED.0),
        num("harness::Outcome::FAILED", harness::Outcome::FAILED.0),
        num("harness::Outcome::SKIPPED", harness::Outcome::SKIPPED.0),
        num("harness::Outcome::END", harness::Outcome::END.0),
        num("harness::ReportHeader::MAGIC", harness::ReportHeader::MAGIC),
        num(
            "harness::ReportHeader::SIZE",
            harness::ReportHeader::SIZE as u64,
        ),
        num(
            "harness::ReportHeader::MAX_RECORD",
            harness::ReportHeader::MAX_RECORD,
        ),
        num("harness::GRANT_ACCESS_READ", harness::GRANT_ACCESS_READ),
    ]
}

/// The CPUID discovery constants.
fn cpuid() -> Vec<(String, Value)> {
    let [ebx, ecx, edx] = discovery::cpuid_signature_regs();
    let sig = String::from_utf8_lossy(&discovery::CPUID_SIGNATURE).into_owned();
    vec![
        num("CPUID_BASE_FIRST", discovery::CPUID_BASE_FIRST),
        num("CPUID_BASE_LAST", discovery::CPUID_BASE_LAST),
        num("CPUID_BASE_STEP", discovery::CPUID_BASE_STEP),
        ("CPUID_SIGNATURE".to_string(), Value::Str(sig)),
        num("CPUID_SIGNATURE_EBX", ebx),
        num("CPUID_SIGNATURE_ECX", ecx),
        num("CPUID_SIGNATURE_EDX", edx),
        num("CPUID_LEAF_GATE", discovery::CPUID_LEAF_GATE),
        num("CPUID_LEAF_FEATURES", discovery::CPUID_LEAF_FEATURES),
    ]
}

/// Builds the model from the crate.
pub fn model() -> Model {
    let calls = call::CALLS
        .iter()
        .map(|c| CallModel {
            id: c.id.0,
            name: c.name.to_string(),
            args: c.args,
            returns: c.returns,
        })
        .collect();
    let statuses = Status::ALL
        .iter()
        .map(|s| (s.0, s.name().unwrap_or("?").to_string()))
        .collect();
    let mut services: Vec<(u16, String)> = ServiceId::V1
        .iter()
        .chain(core::iter::once(&ServiceId::HARNESS))
        .map(|s| (s.0, s.name().unwrap_or("?").to_string()))
        .collect();
    // Any other named service id (a service added to `name()` but not to `V1`) too.
    for id in 0..=u16::MAX {
        if let Some(n) = ServiceId(id).name() {
            if !services.iter().any(|(i, _)| *i == id) {
                services.push((id, n.to_string()));
            }
        }
    }
    services.sort();
    let gate_kinds = (0..=1024u32)
        .filter_map(|k| GateKind(k).name().map(|n| (k, n.to_string())))
        .collect();
    let features = Features::all()
        .iter_names()
        .map(|(n, f)| (f.bits().trailing_zeros(), n.to_string()))
        .collect();
    let layouts = layout::LAYOUTS
        .iter()
        .map(|l| LayoutModel {
            name: l.name.to_string(),
            size: l.size,
            align: l.align,
            fields: l
                .fields
                .iter()
                .map(|f| FieldModel {
                    name: f.name.to_string(),
                    offset: f.offset,
                    size: f.size,
                })
                .collect(),
        })
        .collect();
    Model {
        version: (version::ABI_VERSION.major, version::ABI_VERSION.minor),
        calls,
        statuses,
        services,
        gate_kinds,
        features,
        cpuid: cpuid(),
        constants: constants(),
        layouts,
    }
}

/// Renders the model as the ABI snapshot text (`spec/abi-v1.lock`).
pub fn snapshot_text(m: &Model) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# pvabi ABI snapshot, generated from the pvabi crate. Do not edit."
    );
    let _ = writeln!(
        s,
        "# Regenerate: PVABI_BLESS=1 cargo test -p pvabi --test abi_snapshot"
    );
    let _ = writeln!(
        s,
        "# Any change needs an ABI version bump: minor when lines are only added, major otherwise (spec VER-9)."
    );
    let _ = writeln!(s, "abi_version {}.{}", m.version.0, m.version.1);
    for (id, name) in &m.services {
        let _ = writeln!(s, "service {id:#06x} {name}");
    }
    for c in &m.calls {
        let _ = writeln!(
            s,
            "call {:#010x} {} args={} returns={}",
            c.id,
            c.name,
            c.args,
            if c.returns { "yes" } else { "no" }
        );
    }
    for (code, name) in &m.statuses {
        let _ = writeln!(s, "status {code} {name}");
    }
    for (bit, name) in &m.features {
        let _ = writeln!(s, "feature {bit} {name}");
    }
    for (v, name) in &m.gate_kinds {
        let _ = writeln!(s, "gate_kind {v} {name}");
    }
    for (name, v) in &m.cpuid {
        let _ = writeln!(s, "cpuid {name} {}", v.render());
    }
    for (name, v) in &m.constants {
        let _ = writeln!(s, "const {name} {}", v.render());
    }
    for l in &m.layouts {
        let _ = writeln!(s, "layout {} size={} align={}", l.name, l.size, l.align);
        for f in &l.fields {
            let _ = writeln!(
                s,
                "field {}.{} offset={} size={}",
                l.name, f.name, f.offset, f.size
            );
        }
    }
    s
}
