//! Discovery (spec chapter "Discovery", `DISC-*`; constants in [`pvabi::discovery`]).
//!
//! Order (spec `DISC-1`):
//! 1. **Boot-info handoff.** If the entry register held a nonzero GPA, the shim reads the
//!    [`BootInfo`] there through the [`PhysReader`] and validates it (`DISC-4`): 8-byte
//!    alignment, magic, `size >= 128`, the same major version, a known gate (`DISC-15`), a
//!    vCPU count in `1..=MAX_VCPUS` and a boot vCPU below it.
//! 2. **CPUID.** Otherwise (or if the boot info is unusable: `DISC-1` treats it as absent),
//!    leaves
//!    `0x4000_0000..=0x4000_FF00` (step `0x100`) are searched for the signature in EBX, ECX,
//!    EDX. Leaf `base + 1` and `base + 2` are decoded as [`decode_cpuid_leaves`] documents.
//! 3. **Version check** with [`AbiVersion::is_compatible_with_host`] against the version this
//!    crate was built for ([`pvabi::ABI_VERSION`]). An incompatible host is an error, never
//!    a fallback.
//! 4. **Service probing**: BASE.PROBE_SERVICE for every v1 service (and HARNESS when its
//!    feature bit is set); the function counts are kept in [`HostInfo`].
//!
//! For the in-process gate ([`Pvabi::discover_in_process`]) CPUID is not used (it would
//! describe the machine the host process runs on); without boot info the shim asks BASE for
//! version, features, vCPU count, backend id and its own vCPU id instead.

use crate::gate::{InProcessGate, RegisterGate};
use crate::{Gate, PhysReader, Pvabi};
use pvabi::call::{
    BASE_GET_ABI_VERSION, BASE_GET_BACKEND_ID, BASE_GET_FEATURES, BASE_GET_VCPU_COUNT,
    BASE_GET_VCPU_ID, BASE_PROBE_SERVICE,
};
use pvabi::discovery::{
    cpuid_signature_regs, ExecMode, CPUID_BASE_FIRST, CPUID_BASE_LAST, CPUID_BASE_STEP,
    CPUID_LEAF_FEATURES, CPUID_LEAF_GATE,
};
use pvabi::{AbiVersion, BootInfo, Features, GateKind, Regs, ServiceId, Status, MAX_VCPUS};

/// Number of services whose function counts [`HostInfo`] keeps: the ten v1 services and
/// HARNESS.
pub const PROBED_SERVICES: usize = 11;

/// Where discovery found the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiscoverySource {
    /// The boot-info handoff at this GPA.
    BootInfo(u64),
    /// The CPUID signature at this leaf.
    Cpuid(u32),
    /// The in-process gate, answered by BASE calls.
    InProcess,
}

/// What the host said about itself, as discovery left it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostInfo {
    /// Where the information came from.
    pub source: DiscoverySource,
    /// The host's ABI version (checked compatible with [`pvabi::ABI_VERSION`]).
    pub version: AbiVersion,
    /// Gate kind the host named.
    pub gate_kind: GateKind,
    /// Gate parameter the host named (port or MMIO GPA).
    pub gate_param: u64,
    /// Feature bits (unknown bits kept as the host set them).
    pub features: Features,
    /// Number of vCPUs (`1..=MAX_VCPUS`).
    pub vcpu_count: u32,
    /// The vCPU that ran discovery when known (boot info or BASE.GET_VCPU_ID).
    pub boot_vcpu: Option<u32>,
    /// Backend id (see [`pvabi::discovery::backend_id`]), when the host said.
    pub backend_id: Option<u32>,
    /// Execution mode from the boot info, when there was one.
    pub exec_mode: Option<ExecMode>,
    /// The validated boot info, when there was one.
    pub boot_info: Option<BootInfo>,
    /// Function counts from BASE.PROBE_SERVICE, in the order of [`ServiceId::V1`] then
    /// HARNESS; 0 = absent (or probing disabled / failed).
    pub service_functions: [u16; PROBED_SERVICES],
}

impl HostInfo {
    /// Function count the host reported for `svc` (0 when absent or not probed).
    pub fn functions(&self, svc: ServiceId) -> u16 {
        service_slot(svc)
            .and_then(|i| self.service_functions.get(i).copied())
            .unwrap_or(0)
    }

    /// Whether the host reported `svc` present.
    pub fn has_service(&self, svc: ServiceId) -> bool {
        self.functions(svc) != 0
    }

    /// Whether the host set every bit of `f`.
    pub fn has_features(&self, f: Features) -> bool {
        self.features.contains(f)
    }
}

fn service_slot(svc: ServiceId) -> Option<usize> {
    if svc == ServiceId::HARNESS {
        return Some(PROBED_SERVICES - 1);
    }
    ServiceId::V1.iter().position(|s| *s == svc)
}

/// Why discovery failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiscoverError {
    /// Neither a usable boot info nor the CPUID signature was found.
    NotFound,
    /// The boot-info GPA is not 8-byte aligned.
    BootInfoMisaligned,
    /// The boot info does not translate to readable memory.
    BootInfoUnreadable,
    /// The boot info's magic is wrong.
    BootInfoBadMagic(u32),
    /// The boot info's size is below 128.
    BootInfoBadSize(u32),
    /// The boot info's vCPU count or boot vCPU is out of range.
    BootInfoBadVcpus {
        /// `vcpu_count` as written.
        count: u32,
        /// `boot_vcpu` as written.
        boot: u32,
    },
    /// The host's ABI version is incompatible with the one this crate implements.
    Incompatible {
        /// The host's version.
        host: AbiVersion,
        /// The version this crate was built for.
        guest: AbiVersion,
    },
    /// The host named a gate this shim cannot use here (unknown kind, a port above 0xFFFF,
    /// an MMIO gate without a mapping, an in-process gate without its function).
    GateUnusable {
        /// The kind named.
        kind: GateKind,
        /// The parameter named.
        param: u64,
    },
    /// A BASE call needed by in-process discovery failed.
    Call(Status),
    /// A BASE answer is out of range (e.g. a vCPU count above `MAX_VCPUS`).
    BadAnswer,
}

impl core::fmt::Display for DiscoverError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DiscoverError::NotFound => {
                write!(f, "no pvabi host found (no boot info, no CPUID signature)")
            }
            DiscoverError::BootInfoMisaligned => write!(f, "boot info GPA is not 8-byte aligned"),
            DiscoverError::BootInfoUnreadable => {
                write!(f, "boot info is not in readable guest memory")
            }
            DiscoverError::BootInfoBadMagic(m) => write!(f, "boot info magic {m:#x} is wrong"),
            DiscoverError::BootInfoBadSize(s) => write!(f, "boot info size {s} is below 128"),
            DiscoverError::BootInfoBadVcpus { count, boot } => {
                write!(
                    f,
                    "boot info vCPU count {count} / boot vCPU {boot} out of range"
                )
            }
            DiscoverError::Incompatible { host, guest } => {
                write!(f, "host ABI {host} is incompatible with guest ABI {guest}")
            }
            DiscoverError::GateUnusable { kind, param } => {
                write!(
                    f,
                    "gate kind {} parameter {param:#x} is unusable here",
                    kind.0
                )
            }
            DiscoverError::Call(s) => write!(f, "BASE call failed: {s}"),
            DiscoverError::BadAnswer => write!(f, "host answer out of range"),
        }
    }
}

/// The four registers of one CPUID leaf: EAX, EBX, ECX, EDX.
pub type CpuidRegs = [u32; 4];

/// Options of [`Pvabi::discover_with`].
#[derive(Clone, Copy)]
pub struct DiscoverOptions<'a> {
    /// GPA of the boot info from the entry register, or 0 when there is none.
    pub boot_info_gpa: u64,
    /// The host's in-process gate, for a guest running inside a model host.
    pub in_process: Option<InProcessGate>,
    /// CPUID to scan, or `None` to skip the CPUID step.
    pub cpuid: Option<&'a dyn Fn(u32) -> CpuidRegs>,
    /// Probe every service with BASE.PROBE_SERVICE.
    pub probe_services: bool,
}

impl core::fmt::Debug for DiscoverOptions<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DiscoverOptions")
            .field("boot_info_gpa", &self.boot_info_gpa)
            .field("in_process", &self.in_process)
            .field("cpuid", &self.cpuid.is_some())
            .field("probe_services", &self.probe_services)
            .finish()
    }
}

/// The real CPUID instruction.
pub fn native_cpuid(leaf: u32) -> CpuidRegs {
    let r = core::arch::x86_64::__cpuid(leaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// Searches the hypervisor CPUID range for the pvabi signature (spec `DISC-5`, `DISC-6`);
/// returns the signature leaf.
pub fn find_cpuid_base(cpuid: &dyn Fn(u32) -> CpuidRegs) -> Option<u32> {
    let sig = cpuid_signature_regs();
    (CPUID_BASE_FIRST..=CPUID_BASE_LAST)
        .step_by(CPUID_BASE_STEP as usize)
        .find(|&leaf| {
            let [_, b, c, d] = cpuid(leaf);
            [b, c, d] == sig
        })
}

/// What the two leaves after the signature say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuidInfo {
    /// ABI version.
    pub version: AbiVersion,
    /// Gate kind.
    pub gate_kind: GateKind,
    /// Gate parameter.
    pub gate_param: u64,
    /// Feature bits.
    pub features: Features,
    /// Number of vCPUs.
    pub vcpu_count: u32,
    /// Backend id.
    pub backend_id: u32,
}

/// Decodes leaves `base + 1` and `base + 2` (spec `DISC-7`, `DISC-8`):
///
/// | leaf       | EAX                    | EBX              | ECX               | EDX                |
/// |------------|------------------------|------------------|-------------------|--------------------|
/// | `base + 1` | ABI version (`VER-2`)  | gate kind        | gate param 31..0  | gate param 63..32  |
/// | `base + 2` | features 31..0         | features 63..32  | vCPU count        | backend id         |
pub fn decode_cpuid_leaves(gate: CpuidRegs, feat: CpuidRegs) -> CpuidInfo {
    let [ver, kind, plo, phi] = gate;
    let [flo, fhi, count, backend] = feat;
    CpuidInfo {
        version: AbiVersion::from_u32(ver),
        gate_kind: GateKind(kind),
        gate_param: u64::from(plo) | (u64::from(phi) << 32),
        features: Features::from_bits_retain(u64::from(flo) | (u64::from(fhi) << 32)),
        vcpu_count: count,
        backend_id: backend,
    }
}

/// Reads and validates the boot info at `gpa` (spec `DISC-2`..`DISC-4`).
///
/// # Errors
///
/// The [`DiscoverError`] naming the first check that failed. The version is not checked here.
pub fn read_boot_info(phys: &PhysReader, gpa: u64) -> Result<BootInfo, DiscoverError> {
    if gpa % BootInfo::ALIGN != 0 {
        return Err(DiscoverError::BootInfoMisaligned);
    }
    let bi: BootInfo = phys.read(gpa).ok_or(DiscoverError::BootInfoUnreadable)?;
    if bi.magic != BootInfo::MAGIC {
        return Err(DiscoverError::BootInfoBadMagic(bi.magic));
    }
    if (bi.size as usize) < BootInfo::SIZE {
        return Err(DiscoverError::BootInfoBadSize(bi.size));
    }
    if bi.vcpu_count == 0 || bi.vcpu_count > MAX_VCPUS || bi.boot_vcpu >= bi.vcpu_count {
        return Err(DiscoverError::BootInfoBadVcpus {
            count: bi.vcpu_count,
            boot: bi.boot_vcpu,
        });
    }
    Ok(bi)
}

fn check_version(host: AbiVersion) -> Result<(), DiscoverError> {
    if pvabi::ABI_VERSION.is_compatible_with_host(host) {
        Ok(())
    } else {
        Err(DiscoverError::Incompatible {
            host,
            guest: pvabi::ABI_VERSION,
        })
    }
}

fn gate_from(
    phys: &PhysReader,
    kind: GateKind,
    param: u64,
    in_process: Option<InProcessGate>,
) -> Result<RegisterGate, DiscoverError> {
    let mmio = if kind == GateKind::MMIO {
        phys.mmio_addr(param)
    } else {
        None
    };
    RegisterGate::from_discovery(kind, param, mmio, in_process)
        .ok_or(DiscoverError::GateUnusable { kind, param })
}

fn base_call(gate: &RegisterGate, id: pvabi::CallId, a0: u64) -> Result<u64, DiscoverError> {
    gate.call(&Regs::new(id, [a0, 0, 0, 0, 0, 0]))
        .into_result()
        .map_err(DiscoverError::Call)
}

fn probe(gate: &RegisterGate, features: Features) -> [u16; PROBED_SERVICES] {
    let mut out = [0u16; PROBED_SERVICES];
    let harness = features.contains(Features::HARNESS);
    let services = ServiceId::V1
        .iter()
        .copied()
        .chain(harness.then_some(ServiceId::HARNESS));
    for svc in services {
        let n = base_call(gate, BASE_PROBE_SERVICE, u64::from(svc.0))
            .ok()
            // A function count above 0xFFFF cannot be right: treat the service as absent.
            .and_then(|v| u16::try_from(v).ok())
            .unwrap_or(0);
        if let Some(slot) = service_slot(svc).and_then(|i| out.get_mut(i)) {
            *slot = n;
        }
    }
    // BASE is always there (spec `BASE-10`); a host that fails to say so still has it.
    if let Some(b) = out.first_mut() {
        if *b == 0 {
            *b = pvabi::call::function_count(ServiceId::BASE);
        }
    }
    out
}

/// Most memory-map entries read to find the end of RAM.
const MAX_MAP_SCAN: u32 = 4096;

/// The end of the highest RAM or LOADER range of the boot info's memory map (RAM may have
/// holes, so `mem_size`, the total, can be below it); `mem_size` when the map is unreadable or
/// names no such range.
fn ram_end(phys: &PhysReader, bi: &BootInfo) -> u64 {
    use pvabi::memory::{MemKind, MemMapEntry};
    let mut end = 0u64;
    for i in 0..bi.mem_map_entries.min(MAX_MAP_SCAN) {
        let Some(gpa) = u64::from(i)
            .checked_mul(MemMapEntry::SIZE as u64)
            .and_then(|o| bi.mem_map_gpa.checked_add(o))
        else {
            break;
        };
        let Some(e) = phys.read::<MemMapEntry>(gpa) else {
            break;
        };
        let kind = MemKind(e.kind);
        if kind == MemKind::RAM || kind == MemKind::LOADER {
            if let Some(top) = e.base.checked_add(e.length) {
                end = end.max(top);
            }
        }
    }
    if end == 0 {
        bi.mem_size
    } else {
        end
    }
}

fn from_boot_info(
    opts: &DiscoverOptions<'_>,
    phys: &PhysReader,
) -> Result<(RegisterGate, PhysReader, HostInfo), DiscoverError> {
    let bi = read_boot_info(phys, opts.boot_info_gpa)?;
    let version = AbiVersion::from_u32(bi.abi_version);
    // DISC-4: a boot info of another major version counts as absent (CPUID may still
    // offer a compatible host); a too-old minor is checked after discovery (VER-3).
    if version.major != pvabi::ABI_VERSION.major {
        return Err(DiscoverError::Incompatible {
            host: version,
            guest: pvabi::ABI_VERSION,
        });
    }
    let phys = phys.bounded(ram_end(phys, &bi));
    let kind = GateKind(bi.gate_kind);
    let gate = gate_from(&phys, kind, bi.gate_param, opts.in_process)?;
    Ok((
        gate,
        phys,
        HostInfo {
            source: DiscoverySource::BootInfo(opts.boot_info_gpa),
            version,
            gate_kind: kind,
            gate_param: bi.gate_param,
            features: Features::from_bits_retain(bi.features),
            vcpu_count: bi.vcpu_count,
            boot_vcpu: Some(bi.boot_vcpu),
            backend_id: Some(bi.backend_id),
            exec_mode: Some(ExecMode(bi.exec_mode)),
            boot_info: Some(bi),
            service_functions: [0; PROBED_SERVICES],
        },
    ))
}

fn from_cpuid(
    cpuid: &dyn Fn(u32) -> CpuidRegs,
    phys: &PhysReader,
    in_process: Option<InProcessGate>,
) -> Result<(RegisterGate, PhysReader, HostInfo), DiscoverError> {
    let base = find_cpuid_base(cpuid).ok_or(DiscoverError::NotFound)?;
    let g = cpuid(base.wrapping_add(CPUID_LEAF_GATE));
    let f = cpuid(base.wrapping_add(CPUID_LEAF_FEATURES));
    let info = decode_cpuid_leaves(g, f);
    if info.vcpu_count == 0 || info.vcpu_count > MAX_VCPUS {
        return Err(DiscoverError::BadAnswer);
    }
    let gate = gate_from(phys, info.gate_kind, info.gate_param, in_process)?;
    Ok((
        gate,
        *phys,
        HostInfo {
            source: DiscoverySource::Cpuid(base),
            version: info.version,
            gate_kind: info.gate_kind,
            gate_param: info.gate_param,
            features: info.features,
            vcpu_count: info.vcpu_count,
            boot_vcpu: None,
            backend_id: Some(info.backend_id),
            exec_mode: None,
            boot_info: None,
            service_functions: [0; PROBED_SERVICES],
        },
    ))
}

fn from_base_calls(
    gate: InProcessGate,
    phys: &PhysReader,
) -> Result<(RegisterGate, PhysReader, HostInfo), DiscoverError> {
    let g = RegisterGate::in_process(gate);
    let raw = base_call(&g, BASE_GET_ABI_VERSION, 0)?;
    let version = AbiVersion::from_u32(u32::try_from(raw).map_err(|_| DiscoverError::BadAnswer)?);
    let features = Features::from_bits_retain(base_call(&g, BASE_GET_FEATURES, 0)?);
    let count = u32::try_from(base_call(&g, BASE_GET_VCPU_COUNT, 0)?)
        .map_err(|_| DiscoverError::BadAnswer)?;
    if count == 0 || count > MAX_VCPUS {
        return Err(DiscoverError::BadAnswer);
    }
    let backend = base_call(&g, BASE_GET_BACKEND_ID, 0)
        .ok()
        .and_then(|v| u32::try_from(v).ok());
    let me = base_call(&g, BASE_GET_VCPU_ID, 0)
        .ok()
        .and_then(|v| u32::try_from(v).ok())
        .filter(|v| *v < count);
    Ok((
        g,
        *phys,
        HostInfo {
            source: DiscoverySource::InProcess,
            version,
            gate_kind: GateKind::INPROCESS,
            gate_param: 0,
            features,
            vcpu_count: count,
            boot_vcpu: me,
            backend_id: backend,
            exec_mode: Some(ExecMode::INPROCESS),
            boot_info: None,
            service_functions: [0; PROBED_SERVICES],
        },
    ))
}

impl Pvabi {
    /// Discovers the host on bare metal: boot info at `boot_info_gpa` (0 = none), then CPUID.
    ///
    /// # Errors
    ///
    /// [`DiscoverError`]: no host, an unusable handoff (when CPUID finds nothing either), an
    /// incompatible version, or a gate this shim cannot use.
    pub fn discover(boot_info_gpa: u64, phys: &PhysReader) -> Result<Pvabi, DiscoverError> {
        Self::discover_with(
            &DiscoverOptions {
                boot_info_gpa,
                in_process: None,
                cpuid: Some(&native_cpuid),
                probe_services: true,
            },
            phys,
        )
    }

    /// Discovers a model host reached through an in-process gate (the mock): the boot info
    /// at `boot_info_gpa` when nonzero, else BASE calls. CPUID is not consulted.
    ///
    /// # Errors
    ///
    /// As [`Pvabi::discover`]; additionally [`DiscoverError::Call`] when a BASE call fails.
    pub fn discover_in_process(
        gate: InProcessGate,
        boot_info_gpa: u64,
        phys: &PhysReader,
    ) -> Result<Pvabi, DiscoverError> {
        Self::discover_with(
            &DiscoverOptions {
                boot_info_gpa,
                in_process: Some(gate),
                cpuid: None,
                probe_services: true,
            },
            phys,
        )
    }

    /// Discovery with explicit options (a CPUID function of the caller's, no probing, ...).
    ///
    /// # Errors
    ///
    /// As [`Pvabi::discover`].
    pub fn discover_with(
        opts: &DiscoverOptions<'_>,
        phys: &PhysReader,
    ) -> Result<Pvabi, DiscoverError> {
        let mut first_err = None;
        let mut found = None;
        if opts.boot_info_gpa != 0 {
            match from_boot_info(opts, phys) {
                Ok(v) => found = Some(v),
                // DISC-1, DISC-4: an unusable boot info counts as absent; CPUID is next.
                Err(e) => first_err = Some(e),
            }
        }
        if found.is_none() {
            if let Some(cpuid) = opts.cpuid {
                match from_cpuid(cpuid, phys, opts.in_process) {
                    Ok(v) => found = Some(v),
                    Err(DiscoverError::NotFound) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if found.is_none() {
            if let Some(g) = opts.in_process {
                if first_err.is_none() {
                    found = Some(from_base_calls(g, phys)?);
                }
            }
        }
        let (gate, phys, mut info) = match found {
            Some(v) => v,
            None => return Err(first_err.unwrap_or(DiscoverError::NotFound)),
        };
        check_version(info.version)?;
        if opts.probe_services {
            info.service_functions = probe(&gate, info.features);
        }
        Ok(Pvabi::from_parts(Gate::Register(gate), phys, info))
    }
}
