//! DISCOVERY (spec chapter 1, `DISC-*`): the boot-info handoff re-read and checked against
//! the BASE service, the memory map and command line it names, the CPUID leaves (where this
//! environment can execute CPUID against the host), and the shim's discovery order on forged
//! handoffs and a forged CPUID.

use pvabi::discovery::{
    cpuid_signature_regs, ExecMode, CPUID_BASE_FIRST, CPUID_BASE_STEP, CPUID_LEAF_FEATURES,
    CPUID_LEAF_GATE,
};
use pvabi::memory::{MemKind, MemMapEntry};
use pvabi::{call, BootInfo, Features, GateKind, Status, ABI_VERSION};
use pvabi_guest::discovery::{native_cpuid, CpuidRegs};
use pvabi_guest::{DiscoverOptions, DiscoverySource, Pvabi};

use super::version::cpuid_base;
use crate::{Case, Ctx};

/// The chapter's cases.
pub const CASES: &[Case] = &[
    Case {
        name: "discovery::boot_info_handoff",
        clauses: "DISC-2,DISC-3,DISC-13",
        run: boot_info_handoff,
    },
    Case {
        name: "discovery::exec_mode",
        clauses: "DISC-12",
        run: exec_mode,
    },
    Case {
        name: "discovery::memory_map",
        clauses: "DISC-10",
        run: memory_map,
    },
    Case {
        name: "discovery::cmdline",
        clauses: "DISC-11",
        run: cmdline,
    },
    Case {
        name: "discovery::handoff_in_loader_ranges",
        clauses: "DISC-14",
        run: handoff_in_loader_ranges,
    },
    Case {
        name: "discovery::features_agree",
        clauses: "DISC-9",
        run: features_agree,
    },
    Case {
        name: "discovery::cpuid_signature",
        clauses: "DISC-5,DISC-6",
        run: cpuid_signature,
    },
    Case {
        name: "discovery::cpuid_gate_leaf",
        clauses: "DISC-7",
        run: cpuid_gate_leaf,
    },
    Case {
        name: "discovery::cpuid_feature_leaf",
        clauses: "DISC-8",
        run: cpuid_feature_leaf,
    },
    Case {
        name: "discovery::cpuid_agrees_with_boot_info",
        clauses: "DISC-16",
        run: cpuid_agrees_with_boot_info,
    },
    Case {
        name: "discovery::shim_order",
        clauses: "DISC-1,DISC-4,DISC-5,DISC-15",
        run: shim_order,
    },
];

/// The boot info as it is in guest memory now, or a skip when there is none.
fn reread(c: &mut Ctx<'_>) -> Option<(u64, BootInfo)> {
    let gpa = c.platform.boot_info_gpa();
    if gpa == 0 {
        c.skip(format_args!(
            "the guest was started without a boot info (RDI = 0)"
        ));
        return None;
    }
    match c.pv.phys().read::<BootInfo>(gpa) {
        Some(bi) => Some((gpa, bi)),
        None => {
            c.check(
                false,
                format_args!("boot info at {gpa:#x} is not readable guest RAM"),
            );
            None
        }
    }
}

/// Whether `[gpa, gpa + len)` lies inside one memory-map range of kind `kind`.
fn in_kind(map: &[MemMapEntry], gpa: u64, len: u64, kind: MemKind) -> bool {
    map.iter().any(|e| {
        MemKind(e.kind) == kind
            && gpa >= e.base
            && gpa
                .checked_add(len)
                .is_some_and(|end| end - e.base <= e.length)
    })
}

/// Up to 32 entries of the boot info's memory map, and how many there are.
fn boot_map(c: &Ctx<'_>) -> ([MemMapEntry; 32], usize) {
    let mut out = [MemMapEntry {
        base: 0,
        length: 0,
        kind: 0,
        _reserved: 0,
    }; 32];
    let mut n = 0;
    for (slot, e) in out.iter_mut().zip(c.pv.boot_memory_map()) {
        *slot = e;
        n += 1;
    }
    (out, n)
}

fn boot_info_handoff(c: &mut Ctx<'_>) {
    let Some((gpa, bi)) = reread(c) else {
        return;
    };
    c.check(
        gpa % BootInfo::ALIGN == 0,
        format_args!("boot info GPA {gpa:#x} is not 8-byte aligned"),
    );
    c.check(
        bi.magic == BootInfo::MAGIC,
        format_args!("boot info magic {:#x}", bi.magic),
    );
    c.check(
        bi.size as usize >= BootInfo::SIZE,
        format_args!("boot info size {}", bi.size),
    );
    c.check(
        bi._reserved.iter().all(|r| *r == 0),
        format_args!("boot info _reserved {:?}", bi._reserved),
    );
    if let Ok(v) = c.pv.abi_version() {
        c.check(
            bi.abi_version == v.to_u32(),
            format_args!("abi_version {:#x}, BASE {:#x}", bi.abi_version, v.to_u32()),
        );
    }
    if let Ok(f) = c.pv.get_features() {
        c.check(
            bi.features == f.bits(),
            format_args!("features {:#x}, BASE {:#x}", bi.features, f.bits()),
        );
    }
    if let Ok(n) = c.pv.vcpu_count() {
        c.check(
            bi.vcpu_count == n,
            format_args!("vcpu_count {}, BASE {n}", bi.vcpu_count),
        );
    }
    if let Ok(id) = c.pv.backend_id() {
        c.check(
            bi.backend_id == id,
            format_args!("backend_id {}, BASE {id}", bi.backend_id),
        );
    }
    c.check(
        bi.boot_vcpu < bi.vcpu_count,
        format_args!(
            "boot_vcpu {} not below vcpu_count {}",
            bi.boot_vcpu, bi.vcpu_count
        ),
    );
    // The gate in the boot info is the one the calls of this suite go through.
    let g = c.pv.gate().register_gate();
    c.check(
        bi.gate_kind == g.kind().0,
        format_args!(
            "boot info gate kind {}, calls go through {}",
            bi.gate_kind,
            g.kind().0
        ),
    );
    if g.kind() == GateKind::IOPORT {
        c.check(
            bi.gate_param == g.param(),
            format_args!(
                "boot info gate port {:#x}, calls go to {:#x}",
                bi.gate_param,
                g.param()
            ),
        );
    }
    // mem_size: the total of the RAM and LOADER ranges.
    let (map, n) = boot_map(c);
    let total: u64 = map
        .iter()
        .take(n)
        .filter(|e| MemKind(e.kind) == MemKind::RAM || MemKind(e.kind) == MemKind::LOADER)
        .map(|e| e.length)
        .sum();
    c.check(
        n as u32 == bi.mem_map_entries.min(32) && bi.mem_size == total,
        format_args!(
            "mem_size {:#x}, RAM + LOADER ranges of the map {total:#x} ({n} of {} entries read)",
            bi.mem_size, bi.mem_map_entries
        ),
    );
    // The boot info lies in guest RAM (it was read through the RAM-bounded reader) and
    // is the one discovery used.
    c.check(
        c.pv.info().boot_info == Some(bi),
        format_args!("the boot info changed since discovery"),
    );
}

fn exec_mode(c: &mut Ctx<'_>) {
    let Some((_, bi)) = reread(c) else {
        return;
    };
    let mode = ExecMode(bi.exec_mode);
    let want = match c.platform.name() {
        "in-process" => Some(ExecMode::INPROCESS),
        "ring0" => Some(ExecMode::RING0),
        "pv-ring3" => Some(ExecMode::PV_RING3),
        _ => None,
    };
    c.check(
        mode == ExecMode::RING0 || mode == ExecMode::PV_RING3 || mode == ExecMode::INPROCESS,
        format_args!("exec_mode {} is not a v1 mode", bi.exec_mode),
    );
    if let Some(want) = want {
        c.check(
            mode == want,
            format_args!(
                "exec_mode {} but the guest runs {}",
                bi.exec_mode,
                c.platform.name()
            ),
        );
    }
    c.check(
        c.platform.in_process() == (mode == ExecMode::INPROCESS),
        format_args!(
            "exec_mode {} and in-process = {}",
            bi.exec_mode,
            c.platform.in_process()
        ),
    );
    // Upcalls as the mode says: a vector in ring 0, a callback in PV ring 3.
    let f = Features::from_bits_retain(bi.features);
    if mode == ExecMode::PV_RING3 {
        c.check(
            !f.contains(Features::UPCALL_VECTOR) || f.contains(Features::UPCALL_CALLBACK),
            format_args!("a PV ring-3 guest is offered vector upcalls only"),
        );
    }
}

fn memory_map(c: &mut Ctx<'_>) {
    let Some((_, bi)) = reread(c) else {
        return;
    };
    let (map, n) = boot_map(c);
    let map = map.get(..n).unwrap_or(&[]);
    c.check(
        n as u32 == bi.mem_map_entries && n > 0,
        format_args!(
            "read {n} memory-map entries, the boot info says {}",
            bi.mem_map_entries
        ),
    );
    // The same entries, in the same order, as MEMORY.GET_MAP.
    let Some(buf) = c.buf(MemMapEntry::SIZE * 32, 8) else {
        return;
    };
    let bgpa = c.gpa(buf);
    let r = c.raw(call::MEMORY_GET_MAP, [bgpa, 32, 0, 0, 0, 0]);
    let Some(total) = c.expect_ok(r.into_result(), "MEMORY.GET_MAP") else {
        return;
    };
    c.check(
        total == u64::from(bi.mem_map_entries),
        format_args!(
            "MEMORY.GET_MAP has {total} entries, the boot info {}",
            bi.mem_map_entries
        ),
    );
    for (i, e) in map.iter().enumerate() {
        let o = i * MemMapEntry::SIZE;
        let got = c.pv.phys().read::<MemMapEntry>(bgpa + o as u64);
        if !c.check(
            got.as_ref()
                .is_some_and(|g| g.base == e.base && g.length == e.length && g.kind == e.kind),
            format_args!(
                "entry {i}: boot map {:#x}+{:#x} kind {}, MEMORY.GET_MAP {got:?}",
                e.base, e.length, e.kind
            ),
        ) {
            break;
        }
    }
}

fn cmdline(c: &mut Ctx<'_>) {
    let Some((_, bi)) = reread(c) else {
        return;
    };
    if bi.cmdline_len == 0 {
        c.check(
            bi.cmdline_gpa == 0,
            format_args!("cmdline_len 0 but cmdline_gpa {:#x}", bi.cmdline_gpa),
        );
        return;
    }
    let len = bi.cmdline_len as usize;
    let mut buf = [0u8; 512];
    let Some(head) = buf.get_mut(..len.min(512)) else {
        return;
    };
    let readable = c.pv.phys().read_bytes(bi.cmdline_gpa, head).is_some();
    c.check(
        readable,
        format_args!("the command line at {:#x} is not readable", bi.cmdline_gpa),
    );
    if readable && len <= 512 {
        c.check(
            head.last() != Some(&0),
            format_args!("the command line's {len} bytes end in a NUL"),
        );
    }
}

fn handoff_in_loader_ranges(c: &mut Ctx<'_>) {
    let Some((gpa, bi)) = reread(c) else {
        return;
    };
    let (map, n) = boot_map(c);
    let map = map.get(..n).unwrap_or(&[]);
    c.check(
        in_kind(map, gpa, BootInfo::SIZE as u64, MemKind::LOADER),
        format_args!("the boot info at {gpa:#x} is not in a LOADER range"),
    );
    let map_len = u64::from(bi.mem_map_entries) * MemMapEntry::SIZE as u64;
    c.check(
        in_kind(map, bi.mem_map_gpa, map_len, MemKind::LOADER),
        format_args!(
            "the memory map at {:#x} ({map_len} bytes) is not in a LOADER range",
            bi.mem_map_gpa
        ),
    );
    if bi.cmdline_len > 0 {
        c.check(
            in_kind(
                map,
                bi.cmdline_gpa,
                u64::from(bi.cmdline_len),
                MemKind::LOADER,
            ),
            format_args!(
                "the command line at {:#x} ({} bytes) is not in a LOADER range",
                bi.cmdline_gpa, bi.cmdline_len
            ),
        );
    }
}

fn features_agree(c: &mut Ctx<'_>) {
    let Some(f) = c.expect_ok(c.pv.get_features(), "BASE.GET_FEATURES") else {
        return;
    };
    if let Some(bi) = c.pv.info().boot_info {
        c.check(
            bi.features == f.bits(),
            format_args!(
                "boot info features {:#x}, BASE {:#x}",
                bi.features,
                f.bits()
            ),
        );
    }
    if let Some(base) = cpuid_base(c) {
        let [lo, hi, ..] = native_cpuid(base + CPUID_LEAF_FEATURES);
        let cf = u64::from(lo) | u64::from(hi) << 32;
        c.check(
            cf == f.bits(),
            format_args!("CPUID features {cf:#x}, BASE {:#x}", f.bits()),
        );
    }
    if c.pv.info().version.minor == 0 {
        c.check(
            f.bits() & !Features::all().bits() == 0,
            format_args!(
                "bits {:#x} outside the feature table are set",
                f.bits() & !Features::all().bits()
            ),
        );
    }
    // A set bit means the functionality is there: its functions answer (with calls that
    // have no effect), a clear bit means NOT_SUPPORTED.
    let checks: [(Features, pvabi::CallId, [u64; 6]); 4] = [
        (Features::BALLOON, call::MEMORY_BALLOON_QUERY, [0; 6]),
        (Features::GRANT, call::GRANT_QUERY, [0; 6]),
        (Features::MULTICALL, call::MULTICALL_EXECUTE, [0; 6]),
        (Features::HARNESS, call::HARNESS_CLOCK_READ, [0; 6]),
    ];
    for (bit, id, args) in checks {
        let r = c.raw(id, args);
        let name = id.info().map_or("?", |i| i.name);
        if f.contains(bit) {
            c.check(
                r.status != Status::NOT_SUPPORTED,
                format_args!("{name}: its feature bit is set but it answers NOT_SUPPORTED"),
            );
        } else {
            c.check(
                r.status == Status::NOT_SUPPORTED,
                format_args!("{name}: its feature bit is clear but it answers {r:?}"),
            );
        }
    }
    if f.contains(Features::HARNESS) {
        let p = c.pv.probe_service(pvabi::ServiceId::HARNESS);
        c.check(
            p.is_ok_and(|n| n > 0),
            format_args!("HARNESS bit set, BASE.PROBE_SERVICE(0x7f00) = {p:?}"),
        );
    }
}

/// The signature leaf when CPUID can reach the host here; otherwise a skip.
fn cpuid_or_skip(c: &mut Ctx<'_>) -> Option<u32> {
    if c.platform.in_process() {
        c.skip(format_args!(
            "in-process the CPUID instruction describes the machine the host runs on, not the host"
        ));
        return None;
    }
    let base = cpuid_base(c);
    if base.is_none() {
        // DISC-16: a host may offer only the boot info.
        c.check(
            c.pv.info().boot_info.is_some(),
            format_args!("neither CPUID discovery nor a boot info"),
        );
        c.skip(format_args!(
            "the host offers no CPUID discovery (DISC-16 allows boot info only)"
        ));
    }
    base
}

fn cpuid_signature(c: &mut Ctx<'_>) {
    let Some(base) = cpuid_or_skip(c) else {
        return;
    };
    // DISC-5: exactly one signature leaf in the sequence.
    let sig = cpuid_signature_regs();
    let mut found = 0;
    let mut leaf = CPUID_BASE_FIRST;
    loop {
        let [_, b, cx, d] = native_cpuid(leaf);
        if [b, cx, d] == sig {
            found += 1;
        }
        if leaf == pvabi::discovery::CPUID_BASE_LAST {
            break;
        }
        leaf += CPUID_BASE_STEP;
    }
    c.check(
        found == 1,
        format_args!("the signature appears at {found} base leaves"),
    );
    // DISC-6.
    let [max, b, cx, d] = native_cpuid(base);
    c.check(
        [b, cx, d] == [0x6261_7670, 0x6176_7069, 0x7670_6962],
        format_args!("signature registers {b:#x} {cx:#x} {d:#x}"),
    );
    c.check(
        max >= base + 2,
        format_args!("leaf {base:#x} EAX {max:#x} is below base + 2"),
    );
}

fn cpuid_gate_leaf(c: &mut Ctx<'_>) {
    let Some(base) = cpuid_or_skip(c) else {
        return;
    };
    let [ver, kind, plo, phi] = native_cpuid(base + CPUID_LEAF_GATE);
    let param = u64::from(plo) | u64::from(phi) << 32;
    if let Ok(v) = c.pv.abi_version() {
        c.check(
            ver == v.to_u32(),
            format_args!("CPUID version {ver:#x}, BASE {:#x}", v.to_u32()),
        );
    }
    let g = c.pv.gate().register_gate();
    c.check(
        kind == g.kind().0,
        format_args!("CPUID gate kind {kind}, the gate in use {}", g.kind().0),
    );
    if g.kind() == GateKind::IOPORT {
        c.check(
            param == g.param(),
            format_args!(
                "CPUID gate parameter {param:#x}, the port in use {:#x}",
                g.param()
            ),
        );
    }
}

fn cpuid_feature_leaf(c: &mut Ctx<'_>) {
    let Some(base) = cpuid_or_skip(c) else {
        return;
    };
    let [flo, fhi, count, backend]: CpuidRegs = native_cpuid(base + CPUID_LEAF_FEATURES);
    let features = u64::from(flo) | u64::from(fhi) << 32;
    if let Ok(f) = c.pv.get_features() {
        c.check(
            features == f.bits(),
            format_args!("CPUID features {features:#x}, BASE {:#x}", f.bits()),
        );
    }
    if let Ok(n) = c.pv.vcpu_count() {
        c.check(
            count == n,
            format_args!("CPUID vCPU count {count}, BASE {n}"),
        );
    }
    if let Ok(id) = c.pv.backend_id() {
        c.check(
            backend == id,
            format_args!("CPUID EDX (backend id) {backend}, BASE.GET_BACKEND_ID {id}"),
        );
    }
}

fn cpuid_agrees_with_boot_info(c: &mut Ctx<'_>) {
    let Some(base) = cpuid_or_skip(c) else {
        return;
    };
    let Some(bi) = c.pv.info().boot_info else {
        c.skip(format_args!("no boot info to compare CPUID with"));
        return;
    };
    let [ver, kind, plo, phi] = native_cpuid(base + CPUID_LEAF_GATE);
    let [flo, fhi, count, backend] = native_cpuid(base + CPUID_LEAF_FEATURES);
    let param = u64::from(plo) | u64::from(phi) << 32;
    let features = u64::from(flo) | u64::from(fhi) << 32;
    for (what, cpuid, boot) in [
        ("abi_version", u64::from(ver), u64::from(bi.abi_version)),
        ("gate_kind", u64::from(kind), u64::from(bi.gate_kind)),
        ("gate_param", param, bi.gate_param),
        ("features", features, bi.features),
        ("vcpu_count", u64::from(count), u64::from(bi.vcpu_count)),
        ("backend_id", u64::from(backend), u64::from(bi.backend_id)),
    ] {
        c.check(
            cpuid == boot,
            format_args!("{what}: CPUID {cpuid:#x}, boot info {boot:#x}"),
        );
    }
}

/// A forged CPUID: the signature at `at` (and a decoy at `decoy`, with another vCPU count),
/// leaves describing `gate`/`param` and the real host's answers otherwise.
struct FakeCpuid {
    at: u32,
    decoy: u32,
    version: u32,
    gate: u32,
    param: u64,
    features: u64,
    vcpus: u32,
    backend: u32,
}

impl FakeCpuid {
    fn leaf(&self, leaf: u32) -> CpuidRegs {
        let [sb, sc, sd] = cpuid_signature_regs();
        for (base, vcpus) in [(self.at, self.vcpus), (self.decoy, self.vcpus + 1)] {
            if base == 0 {
                continue;
            }
            if leaf == base {
                return [base + 2, sb, sc, sd];
            }
            if leaf == base + CPUID_LEAF_GATE {
                return [
                    self.version,
                    self.gate,
                    self.param as u32,
                    (self.param >> 32) as u32,
                ];
            }
            if leaf == base + CPUID_LEAF_FEATURES {
                return [
                    self.features as u32,
                    (self.features >> 32) as u32,
                    vcpus,
                    self.backend,
                ];
            }
        }
        [0; 4]
    }
}

fn shim_order(c: &mut Ctx<'_>) {
    let Some((real_gpa, real)) = reread(c) else {
        return;
    };
    let in_process = c.pv.gate().register_gate().as_in_process();
    let phys = *c.pv.phys();
    // Forged handoffs in guest RAM, each wrong in one way the shim must treat as absent.
    let mut slots = [0u64; 7];
    let forge = |c: &mut Ctx<'_>, f: &dyn Fn(&mut BootInfo)| -> u64 {
        let mut bi = real;
        f(&mut bi);
        match c.alloc(bi) {
            Some(s) => c.pv.translate().gpa_of_ref(&*s).unwrap_or(u64::MAX),
            None => u64::MAX,
        }
    };
    slots[0] = forge(c, &|_| {});
    slots[1] = forge(c, &|b| b.magic ^= 1);
    slots[2] = forge(c, &|b| b.size = 120);
    slots[3] = forge(c, &|b| {
        b.abi_version = (u32::from(ABI_VERSION.major) + 1) << 16
    });
    slots[4] = forge(c, &|b| b.gate_kind = GateKind::NONE.0);
    slots[5] = forge(c, &|b| b.gate_kind = 0x77);
    // Misaligned: a valid copy 4 bytes into a buffer.
    let misaligned = match c.buf(BootInfo::SIZE + 8, 8) {
        Some(b) => {
            if let Some(dst) = b.get_mut(4..4 + BootInfo::SIZE) {
                let _ = phys.read_bytes(real_gpa, dst);
            }
            c.gpa(b) + 4
        }
        None => return,
    };
    slots[6] = misaligned;
    let discover = |bi_gpa: u64, cpuid: Option<&dyn Fn(u32) -> CpuidRegs>| {
        Pvabi::discover_with(
            &DiscoverOptions {
                boot_info_gpa: bi_gpa,
                in_process,
                cpuid,
                probe_services: false,
            },
            &phys,
        )
    };
    // The valid copy is taken (boot info first).
    let ok = discover(slots[0], None);
    c.check(
        ok.is_ok_and(|p| p.info().source == DiscoverySource::BootInfo(slots[0])),
        format_args!(
            "the shim refused a valid copy of the boot info: {:?}",
            ok.err()
        ),
    );
    let names = [
        "",
        "a wrong magic",
        "size 120",
        "another major version",
        "gate kind NONE",
        "an unknown gate kind",
        "a misaligned GPA",
    ];
    for (i, name) in names.iter().enumerate().skip(1) {
        let got = discover(slots[i], None);
        c.check(
            got.is_err(),
            format_args!("the shim accepted a boot info with {name}"),
        );
    }
    // DISC-1: an unusable boot info falls back to CPUID, and the first signature leaf of
    // the sequence is used (DISC-5, guest half).
    let fake = FakeCpuid {
        at: CPUID_BASE_FIRST + 3 * CPUID_BASE_STEP,
        decoy: CPUID_BASE_FIRST + 9 * CPUID_BASE_STEP,
        version: real.abi_version,
        gate: real.gate_kind,
        param: real.gate_param,
        features: real.features,
        vcpus: real.vcpu_count,
        backend: real.backend_id,
    };
    let cpuid = |leaf: u32| fake.leaf(leaf);
    for (i, name) in [(1usize, "a wrong magic"), (6, "a misaligned GPA")] {
        let got = discover(slots[i], Some(&cpuid));
        c.check(
            got.is_ok_and(|p| {
                p.info().source == DiscoverySource::Cpuid(fake.at)
                    && p.info().vcpu_count == real.vcpu_count
            }),
            format_args!(
                "a boot info with {name} did not fall back to the first CPUID signature: {:?}",
                got.map(|p| p.info().source)
            ),
        );
    }
    // CPUID naming gate NONE: not offered.
    let none = FakeCpuid {
        gate: GateKind::NONE.0,
        decoy: 0,
        ..fake
    };
    let cpuid_none = |leaf: u32| none.leaf(leaf);
    c.check(
        discover(slots[1], Some(&cpuid_none)).is_err(),
        format_args!("the shim used a CPUID leaf naming gate kind NONE"),
    );
    // Neither: pvabi is not offered.
    let empty = |_leaf: u32| [0u32; 4];
    let got = discover(0, Some(&empty));
    let want_err = in_process.is_none();
    if want_err {
        c.check(
            got.is_err(),
            format_args!("no boot info and no CPUID signature, yet discovery succeeded"),
        );
    }
    let got = discover(slots[1], Some(&empty));
    c.check(
        got.is_err(),
        format_args!("a bad boot info and no CPUID signature, yet discovery succeeded"),
    );
}
