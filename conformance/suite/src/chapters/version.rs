//! VERSIONING (spec chapter 0, `VER-*`): the version's encoding, the same version everywhere,
//! compatibility, the numbers of the ABI snapshot, and values a guest does not know.
//!
//! The snapshot `spec/abi-v1.lock` is compiled into the suite: the host's version, services,
//! function counts, feature bits, gate kind and statuses are checked against the numbers it
//! fixes for the host's major version (`VER-4`, `VER-5`, `VER-9`).

use pvabi::discovery::{CPUID_BASE_FIRST, CPUID_BASE_LAST, CPUID_BASE_STEP, CPUID_LEAF_GATE};
use pvabi::memory::{MemKind, MemMapEntry};
use pvabi::{call, AbiVersion, CallId, Features, ServiceId, Status, ABI_VERSION};
use pvabi_guest::memory::MemoryMap;

use crate::{Case, Ctx};

/// The chapter's cases.
pub const CASES: &[Case] = &[
    Case {
        name: "version::encoding",
        clauses: "VER-1,VER-2",
        run: encoding,
    },
    Case {
        name: "version::same_everywhere",
        clauses: "VER-7",
        run: same_everywhere,
    },
    Case {
        name: "version::compatible_host",
        clauses: "VER-3,VER-6",
        run: compatible_host,
    },
    Case {
        name: "version::snapshot_numbers",
        clauses: "VER-4,VER-5,VER-9",
        run: snapshot_numbers,
    },
    Case {
        name: "version::probed_and_unknown_values",
        clauses: "VER-8,VER-10",
        run: probed_and_unknown_values,
    },
];

/// The ABI snapshot this suite was built with.
const LOCK: &str = include_str!("../../../../spec/abi-v1.lock");

/// The lines of the snapshot with `kind` as their first word, split into words.
fn lock_lines(kind: &'static str) -> impl Iterator<Item = core::str::SplitWhitespace<'static>> {
    LOCK.lines().filter_map(move |l| {
        let mut w = l.split_whitespace();
        (w.next() == Some(kind)).then_some(w)
    })
}

fn parse_num(s: &str) -> Option<i64> {
    if let Some(h) = s.strip_prefix("0x") {
        i64::from_str_radix(h, 16).ok()
    } else {
        s.parse().ok()
    }
}

/// The snapshot's `abi_version`.
fn lock_version() -> Option<AbiVersion> {
    let mut w = lock_lines("abi_version").next()?;
    let (maj, min) = w.next()?.split_once('.')?;
    Some(AbiVersion::new(maj.parse().ok()?, min.parse().ok()?))
}

/// The CPUID signature leaf, when this environment can execute CPUID against the host.
pub(crate) fn cpuid_base(c: &Ctx<'_>) -> Option<u32> {
    if c.platform.in_process() {
        return None;
    }
    (CPUID_BASE_FIRST..=CPUID_BASE_LAST)
        .step_by(CPUID_BASE_STEP as usize)
        .find(|&leaf| {
            let [_, b, cx, d] = pvabi_guest::discovery::native_cpuid(leaf);
            [b, cx, d] == pvabi::discovery::cpuid_signature_regs()
        })
}

fn encoding(c: &mut Ctx<'_>) {
    let r = c.raw(call::BASE_GET_ABI_VERSION, [0; 6]);
    if c.expect_ok(r.into_result(), "BASE.GET_ABI_VERSION")
        .is_none()
    {
        return;
    }
    // A 64-bit register: bits 63..32 zero, major in 31..16, minor in 15..0.
    c.check(
        r.value >> 32 == 0,
        format_args!("version register {:#x} has bits 63..32 set", r.value),
    );
    let v = AbiVersion::from_u32(r.value as u32);
    c.check(
        u64::from(v.major) << 16 | u64::from(v.minor) == r.value,
        format_args!("version register {:#x} is not major << 16 | minor", r.value),
    );
    c.check(
        v.major == 1,
        format_args!("major version {}: this specification defines 1.0", v.major),
    );
    if v.minor == 0 {
        c.check(
            r.value == 0x0001_0000,
            format_args!("version 1.0 encoded as {:#x}", r.value),
        );
    }
    // 32-bit fields: the boot info's abi_version.
    if let Some(bi) = c.pv.info().boot_info {
        c.check(
            bi.abi_version == v.to_u32(),
            format_args!(
                "boot info abi_version {:#x}, register {:#x}",
                bi.abi_version, r.value
            ),
        );
    }
    c.check(
        ABI_VERSION == AbiVersion::new(1, 0) && ABI_VERSION.to_u32() == 0x0001_0000,
        format_args!("the suite's own version constant is {ABI_VERSION}"),
    );
}

fn same_everywhere(c: &mut Ctx<'_>) {
    let Some(v) = c.expect_ok(c.pv.abi_version(), "BASE.GET_ABI_VERSION") else {
        return;
    };
    let mut places = 0;
    if let Some(bi) = c.pv.info().boot_info {
        places += 1;
        c.check(
            bi.abi_version == v.to_u32(),
            format_args!(
                "boot info says {:#x}, BASE.GET_ABI_VERSION {:#x}",
                bi.abi_version,
                v.to_u32()
            ),
        );
    }
    if let Some(base) = cpuid_base(c) {
        places += 1;
        let [eax, ..] = pvabi_guest::discovery::native_cpuid(base + CPUID_LEAF_GATE);
        c.check(
            eax == v.to_u32(),
            format_args!(
                "CPUID {:#x} EAX {eax:#x}, BASE.GET_ABI_VERSION {:#x}",
                base + CPUID_LEAF_GATE,
                v.to_u32()
            ),
        );
    }
    if places == 0 {
        c.skip(format_args!(
            "neither a boot info nor CPUID discovery to compare BASE.GET_ABI_VERSION with"
        ));
    }
}

fn compatible_host(c: &mut Ctx<'_>) {
    // The host this suite certifies must be usable by a guest built for 1.0: same major,
    // minor at least 0. A host at minor h must then pass every 1.0 clause (VER-6): the
    // rest of the suite is that check; here the version that makes it applicable.
    // The version discovery found (boot info or CPUID; BASE.GET_ABI_VERSION is checked
    // against it by version::same_everywhere).
    let v = c.pv.info().version;
    c.check(
        v.major == ABI_VERSION.major,
        format_args!("host major version {} cannot serve a 1.0 guest", v.major),
    );
    c.check(
        ABI_VERSION.is_compatible_with_host(v),
        format_args!("the shim calls host {v} incompatible"),
    );
    // The guest half of VER-3, through the shim's discovery on copies of the handoff.
    let Some(bi) = c.pv.info().boot_info else {
        c.skip(format_args!(
            "no boot info to present other versions through (the shim half of VER-3 unchecked)"
        ));
        return;
    };
    let in_process = c.pv.gate().register_gate().as_in_process();
    for (ver, accept) in [
        (AbiVersion::new(v.major, v.minor.saturating_add(3)), true),
        (AbiVersion::new(v.major.wrapping_add(1), 0), false),
        (AbiVersion::new(0, 9), false),
    ] {
        let mut fake = bi;
        fake.abi_version = ver.to_u32();
        let Some(slot) = c.alloc(fake) else {
            return;
        };
        let gpa = c.pv.translate().gpa_of_ref(&*slot).unwrap_or(u64::MAX);
        let opts = pvabi_guest::DiscoverOptions {
            boot_info_gpa: gpa,
            in_process,
            cpuid: None,
            probe_services: false,
        };
        let got = pvabi_guest::Pvabi::discover_with(&opts, c.pv.phys());
        c.check(
            got.is_ok() == accept,
            format_args!(
                "the shim, handed a boot info of version {ver}, {}",
                if accept { "refused it" } else { "accepted it" }
            ),
        );
    }
}

fn snapshot_numbers(c: &mut Ctx<'_>) {
    let Some(lock) = lock_version() else {
        c.check(
            false,
            format_args!("the compiled-in snapshot has no abi_version line"),
        );
        return;
    };
    let v = c.pv.info().version;
    c.check(
        v.major == lock.major && v.minor >= lock.minor,
        format_args!("host version {v}, snapshot {lock}"),
    );
    // Same minor: exactly the snapshot's numbers. Later minor: at least them (VER-4).
    let exact = v.minor == lock.minor;
    for mut w in lock_lines("service") {
        let Some(id) = w.next().and_then(parse_num) else {
            continue;
        };
        let svc = ServiceId(id as u16);
        let calls = lock_lines("call")
            .filter_map(|mut w| w.next().and_then(parse_num))
            .filter(|cid| (*cid >> 16) as u16 == svc.0)
            .count() as u64;
        // The snapshot's function numbers of a service are 0..calls.
        let dense = lock_lines("call")
            .filter_map(|mut w| w.next().and_then(parse_num))
            .filter(|cid| (*cid >> 16) as u16 == svc.0)
            .all(|cid| ((cid & 0xffff) as u64) < calls);
        c.check(
            dense,
            format_args!(
                "the snapshot's functions of {:#06x} are not 0..{calls}",
                svc.0
            ),
        );
        let r = c.raw(call::BASE_PROBE_SERVICE, [id as u64, 0, 0, 0, 0, 0]);
        // A service behind a clear feature bit may be absent (BASE-5, BASE-11).
        let gated_off =
            crate::service_feature(svc).is_some_and(|f| !c.pv.info().features.contains(f));
        let harness_off = svc == ServiceId::HARNESS && gated_off;
        let absent = gated_off && r.status.is_success() && r.value == 0;
        let ok = r.status.is_success()
            && if harness_off || absent {
                r.value == 0
            } else if exact {
                r.value == calls
            } else {
                r.value >= calls
            };
        c.check(
            ok,
            format_args!(
                "service {:#06x}: host probes {r:?}, snapshot has {calls} calls",
                svc.0
            ),
        );
        // The first function number after the snapshot's is not there at the same minor.
        if exact && !harness_off && !absent {
            let n = c.raw(CallId::new(svc, calls as u16), [0; 6]);
            c.expect_status(
                n,
                Status::NOT_SUPPORTED,
                "function after the snapshot's last",
            );
        }
    }
    // Feature bits: at the snapshot's minor only the snapshot's bits.
    let mut known = 0u64;
    for mut w in lock_lines("feature") {
        if let Some(bit) = w.next().and_then(parse_num) {
            known |= 1u64.checked_shl(bit as u32).unwrap_or(0);
        }
    }
    let f = c.pv.info().features.bits();
    if exact {
        c.check(
            f & !known == 0,
            format_args!(
                "host sets feature bits {:#x} the snapshot does not have",
                f & !known
            ),
        );
    }
    // The gate kind is one of the snapshot's.
    let kind = i64::from(c.pv.info().gate_kind.0);
    c.check(
        lock_lines("gate_kind").any(|mut w| w.next().and_then(parse_num) == Some(kind)),
        format_args!("gate kind {kind} is not in the snapshot"),
    );
    // Statuses the host returns are the snapshot's.
    let far = c.ram_end().saturating_add(0x10_0000);
    for r in [
        c.raw(call::BASE_PROBE_SERVICE, [u64::MAX, 0, 0, 0, 0, 0]),
        c.raw(call::CONSOLE_WRITE, [far, 8, 0, 0, 0, 0]),
        c.raw(CallId::new(ServiceId(0x7eff), 0), [0; 6]),
    ] {
        let s = i64::from(r.status.0);
        c.check(
            lock_lines("status").any(|mut w| w.next().and_then(parse_num) == Some(s)),
            format_args!("status {s} is not in the snapshot"),
        );
    }
}

fn probed_and_unknown_values(c: &mut Ctx<'_>) {
    // VER-8: what the shim uses is what it probed; its record matches the host's answers.
    let info = *c.pv.info();
    for svc in ServiceId::V1.iter().copied() {
        let fresh = c.pv.probe_service(svc);
        c.check(
            fresh == Ok(info.functions(svc)),
            format_args!(
                "service {:#06x}: the shim recorded {} functions, the host probes {fresh:?}",
                svc.0,
                info.functions(svc)
            ),
        );
    }
    // VER-10, host half: at 1.0 nothing outside the 1.0 value sets.
    if info.version.minor == 0 {
        c.check(
            Features::from_bits(info.features.bits()).is_some(),
            format_args!(
                "a 1.0 host sets unknown feature bits {:#x}",
                info.features.bits() & !Features::all().bits()
            ),
        );
        c.check(
            info.gate_kind.name().is_some(),
            format_args!("a 1.0 host names unknown gate kind {}", info.gate_kind.0),
        );
        for e in c.pv.boot_memory_map() {
            c.check(
                (1..=4).contains(&e.kind),
                format_args!("a 1.0 host's memory map has unknown kind {}", e.kind),
            );
        }
    }
    // VER-10, guest half: an unknown status is a failure, an unknown feature bit is kept
    // but ignored, an unknown memory kind is not RAM.
    c.check(
        Status(-77).into_result(5).is_err() && Status(3).into_result(5).is_err(),
        format_args!("an unknown status is not treated as a failure"),
    );
    let with_unknown = Features::from_bits_retain(info.features.bits() | 1 << 40);
    c.check(
        with_unknown.contains(info.features) && with_unknown.bits() & (1 << 40) != 0,
        format_args!("an unknown feature bit changes the known ones"),
    );
    let odd = [MemMapEntry {
        base: 0x10_0000,
        length: 0x1000,
        kind: 77,
        _reserved: 0,
    }];
    let map = MemoryMap {
        entries: &odd,
        total: 1,
    };
    c.check(
        map.ram().count() == 0 && MemKind(77) != MemKind::RAM,
        format_args!("a memory-map entry of unknown kind counts as RAM"),
    );
}
