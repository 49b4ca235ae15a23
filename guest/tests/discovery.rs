//! Discovery against a fake host: the boot-info handoff, its validation (DISC-4), the CPUID
//! scan and leaf decoding (DISC-5..8), version checks (VER-3) and service probing (BASE-5).
#![allow(unsafe_code)]
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::std_instead_of_core
)]

mod common;

use common::*;
use pvabi::call;
use pvabi::discovery::cpuid_signature_regs;
use pvabi::{AbiVersion, BootInfo, Features, GateKind, ServiceId, Status};
use pvabi_guest::discovery::{decode_cpuid_leaves, find_cpuid_base, CpuidRegs};
use pvabi_guest::{DiscoverError, DiscoverOptions, DiscoverySource, Pvabi};
use zerocopy::IntoBytes;

fn none() -> Box<Answer> {
    Box::new(|_, _, _| None)
}

#[test]
fn boot_info_discovery_probes_every_service() {
    let f = fake(none());
    f.write(BOOT_GPA, boot_info(3).as_bytes());
    let pv = Pvabi::discover_in_process(gate(f), BOOT_GPA, &phys(f)).unwrap();
    let info = pv.info();
    assert_eq!(info.source, DiscoverySource::BootInfo(BOOT_GPA));
    assert_eq!(info.vcpu_count, 3);
    assert_eq!(info.gate_kind, GateKind::INPROCESS);
    assert_eq!(info.backend_id, Some(1));
    assert!(info.has_features(Features::GRANT | Features::MULTICALL));
    assert!(!info.has_features(Features::HARNESS));
    // One PROBE_SERVICE per v1 service, none for HARNESS (its feature bit is clear).
    let probes: Vec<u64> = f
        .calls()
        .iter()
        .filter(|c| c.0 == call::BASE_PROBE_SERVICE.0)
        .map(|c| c.1[0])
        .collect();
    assert_eq!(
        probes,
        ServiceId::V1
            .iter()
            .map(|s| u64::from(s.0))
            .collect::<Vec<_>>()
    );
    assert_eq!(info.functions(ServiceId::STORE), 10);
    assert_eq!(info.functions(ServiceId::HARNESS), 0);
    assert!(info.has_service(ServiceId::CONSOLE));
    // The memory map is read through the reader; no command line.
    assert_eq!(pv.boot_memory_map().count(), 2);
    assert_eq!(pv.boot_cmdline(&mut [0u8; 8]), Some(0));
    // A command line the host placed outside guest RAM does not translate.
    let mut bi = boot_info(3);
    bi.cmdline_gpa = RAM as u64 - 4;
    bi.cmdline_len = 8;
    f.write(BOOT_GPA, bi.as_bytes());
    let pv = Pvabi::discover_in_process(gate(f), BOOT_GPA, &phys(f)).unwrap();
    assert_eq!(pv.boot_cmdline(&mut [0u8; 16]), None);
    assert_eq!(
        pv.boot_cmdline(&mut [0u8; 4]),
        Some(4),
        "only what fits is read"
    );
}

#[test]
fn harness_is_probed_only_with_its_feature_bit() {
    let f = fake(none());
    let mut bi = boot_info(1);
    bi.features |= Features::HARNESS.bits();
    f.write(BOOT_GPA, bi.as_bytes());
    let pv = Pvabi::discover_in_process(gate(f), BOOT_GPA, &phys(f)).unwrap();
    assert_eq!(pv.info().functions(ServiceId::HARNESS), 10);
}

fn discover_bad(mutate: impl Fn(&mut BootInfo), gpa: u64) -> DiscoverError {
    let f = fake(none());
    let mut bi = boot_info(2);
    mutate(&mut bi);
    f.write(BOOT_GPA, bi.as_bytes());
    // No CPUID (in-process): an unusable boot info is an error, not a silent default.
    let e = Pvabi::discover_in_process(gate(f), gpa, &phys(f)).unwrap_err();
    assert!(
        f.calls().is_empty(),
        "no call before a usable gate: {:?}",
        f.calls()
    );
    e
}

#[test]
fn invalid_boot_info_is_rejected_without_calls() {
    assert_eq!(
        discover_bad(|b| b.magic = 0x1234_5678, BOOT_GPA),
        DiscoverError::BootInfoBadMagic(0x1234_5678)
    );
    assert_eq!(
        discover_bad(|b| b.size = 127, BOOT_GPA),
        DiscoverError::BootInfoBadSize(127)
    );
    assert_eq!(
        discover_bad(|_| {}, BOOT_GPA + 4),
        DiscoverError::BootInfoMisaligned
    );
    assert_eq!(
        discover_bad(|_| {}, RAM as u64 - 64),
        DiscoverError::BootInfoUnreadable
    );
    assert_eq!(
        discover_bad(|_| {}, u64::MAX - 7),
        DiscoverError::BootInfoUnreadable
    );
    for (count, boot) in [(0, 0), (17, 0), (2, 2), (u32::MAX, 0)] {
        assert_eq!(
            discover_bad(
                |b| {
                    b.vcpu_count = count;
                    b.boot_vcpu = boot
                },
                BOOT_GPA
            ),
            DiscoverError::BootInfoBadVcpus { count, boot }
        );
    }
    assert!(matches!(
        discover_bad(|b| b.abi_version = AbiVersion::new(2, 0).to_u32(), BOOT_GPA),
        DiscoverError::Incompatible { .. }
    ));
    for kind in [GateKind::NONE, GateKind(77)] {
        assert!(matches!(
            discover_bad(|b| b.gate_kind = kind.0, BOOT_GPA),
            DiscoverError::GateUnusable { .. }
        ));
    }
    // An MMIO gate cannot be mapped in-process.
    assert!(matches!(
        discover_bad(
            |b| {
                b.gate_kind = GateKind::MMIO.0;
                b.gate_param = pvabi::gate::DEFAULT_MMIO_GATE
            },
            BOOT_GPA
        ),
        DiscoverError::GateUnusable { .. }
    ));
}

#[test]
fn newer_minor_host_is_accepted() {
    let f = fake(none());
    let mut bi = boot_info(1);
    bi.abi_version = AbiVersion::new(1, 7).to_u32();
    f.write(BOOT_GPA, bi.as_bytes());
    let pv = Pvabi::discover_in_process(gate(f), BOOT_GPA, &phys(f)).unwrap();
    assert_eq!(pv.info().version, AbiVersion::new(1, 7));
}

#[test]
fn in_process_without_boot_info_asks_base() {
    let f = fake(Box::new(|_, id, _| match pvabi::CallId(id) {
        call::BASE_GET_FEATURES => ok(Features::CLOCK_PAGE.bits() | (1 << 40)),
        call::BASE_GET_BACKEND_ID => ok(1),
        call::BASE_GET_VCPU_ID => ok(2),
        _ => None,
    }));
    let pv = Pvabi::discover_in_process(gate(f), 0, &phys(f)).unwrap();
    let i = pv.info();
    assert_eq!(i.source, DiscoverySource::InProcess);
    assert_eq!(i.vcpu_count, 4);
    assert_eq!(i.boot_vcpu, Some(2));
    // Unknown feature bits are kept as the host set them and ignored by the shim.
    assert!(i.features.contains(Features::CLOCK_PAGE));
    assert_eq!(i.features.bits() & (1 << 40), 1 << 40);
}

#[test]
fn in_process_base_answers_out_of_range_are_refused() {
    for (bad_call, v) in [
        (call::BASE_GET_VCPU_COUNT, 0u64),
        (call::BASE_GET_VCPU_COUNT, 17),
        (call::BASE_GET_VCPU_COUNT, 1 << 33),
        (call::BASE_GET_ABI_VERSION, 1 << 33),
    ] {
        let f = fake(Box::new(move |_, id, _| {
            (id == bad_call.0).then_some((0, v))
        }));
        assert_eq!(
            Pvabi::discover_in_process(gate(f), 0, &phys(f)).unwrap_err(),
            DiscoverError::BadAnswer,
            "{bad_call:?} = {v}"
        );
    }
    let f = fake(Box::new(|_, id, _| {
        (id == call::BASE_GET_ABI_VERSION.0).then_some((0, AbiVersion::new(0, 9).to_u32() as u64))
    }));
    assert!(matches!(
        Pvabi::discover_in_process(gate(f), 0, &phys(f)).unwrap_err(),
        DiscoverError::Incompatible { .. }
    ));
    // A malformed status register (not a sign-extended 32-bit value) is a failure.
    let f = fake(Box::new(|_, _, _| Some((1 << 40, 0))));
    assert_eq!(
        Pvabi::discover_in_process(gate(f), 0, &phys(f)).unwrap_err(),
        DiscoverError::Call(Status::FAILED)
    );
}

#[test]
fn hostile_probe_answers_count_as_absent() {
    let f = fake(Box::new(|_, id, args| {
        (id == call::BASE_PROBE_SERVICE.0).then(|| match args[0] {
            0 => (0, 9),
            1 => (0, 1 << 20), // not a function count
            2 => (Status::FAILED.to_reg(), 0),
            3 => (1 << 40, 3), // malformed status
            _ => (0, 2),
        })
    }));
    f.write(BOOT_GPA, boot_info(1).as_bytes());
    let pv = Pvabi::discover_in_process(gate(f), BOOT_GPA, &phys(f)).unwrap();
    let i = pv.info();
    assert_eq!(i.functions(ServiceId::BASE), 9);
    assert_eq!(i.functions(ServiceId::CONSOLE), 0);
    assert_eq!(i.functions(ServiceId::CLOCK), 0);
    assert_eq!(i.functions(ServiceId::VCPU), 0);
    assert_eq!(i.functions(ServiceId::EVENT), 2);
}

/// A CPUID with the signature at `base` and the given leaves.
fn cpuid_with(base: u32, gate: CpuidRegs, feat: CpuidRegs) -> impl Fn(u32) -> CpuidRegs {
    let [b, c, d] = cpuid_signature_regs();
    move |leaf| {
        if leaf == base {
            [base + 2, b, c, d]
        } else if leaf == base + 1 {
            gate
        } else if leaf == base + 2 {
            feat
        } else if leaf == 0x4000_0000 {
            // Another hypervisor's signature first: must be skipped.
            [0x4000_0001, 0x4b4d_564b, 0x564b_4d56, 0x0000_004d]
        } else {
            [0; 4]
        }
    }
}

#[test]
fn cpuid_scan_finds_the_signature_and_decodes_the_leaves() {
    let cpuid = cpuid_with(
        0x4000_0300,
        [0x0001_0000, GateKind::IOPORT.0, 0x510, 0],
        [0x0000_0141, 0x8000_0000, 4, 2],
    );
    assert_eq!(find_cpuid_base(&cpuid), Some(0x4000_0300));
    let f = fake(none());
    let pv = Pvabi::discover_with(
        &DiscoverOptions {
            boot_info_gpa: 0,
            in_process: None,
            cpuid: Some(&cpuid),
            // Probing would execute `out` in this test process.
            probe_services: false,
        },
        &phys(f),
    )
    .unwrap();
    let i = pv.info();
    assert_eq!(i.source, DiscoverySource::Cpuid(0x4000_0300));
    assert_eq!(i.gate_kind, GateKind::IOPORT);
    assert_eq!(pv.gate().register_gate().param(), 0x510);
    assert_eq!(i.vcpu_count, 4);
    assert_eq!(i.backend_id, Some(2));
    assert!(i
        .features
        .contains(Features::CLOCK_PAGE | Features::HARNESS));
    assert_eq!(i.features.bits(), 0x8000_0000_0000_0141);
    let d = decode_cpuid_leaves([0x0001_0002, 2, 0xfedf_f000, 0x1], [0, 0, 1, 3]);
    assert_eq!(d.version, AbiVersion::new(1, 2));
    assert_eq!(d.gate_param, 0x1_fedf_f000);
}

#[test]
fn boot_info_first_then_cpuid_fallback() {
    let f = fake(none());
    let cpuid = cpuid_with(
        0x4000_0100,
        [0x0001_0000, GateKind::INPROCESS.0, 0, 0],
        [0, 0, 2, 1],
    );
    // A broken boot info (bad magic) falls back to CPUID (DISC-1).
    let mut bi = boot_info(2);
    bi.magic = 0;
    f.write(BOOT_GPA, bi.as_bytes());
    let opts = DiscoverOptions {
        boot_info_gpa: BOOT_GPA,
        in_process: Some(gate(f)),
        cpuid: Some(&cpuid),
        probe_services: true,
    };
    let pv = Pvabi::discover_with(&opts, &phys(f)).unwrap();
    assert_eq!(pv.info().source, DiscoverySource::Cpuid(0x4000_0100));
    // A good boot info wins over CPUID.
    f.write(BOOT_GPA, boot_info(2).as_bytes());
    let pv = Pvabi::discover_with(&opts, &phys(f)).unwrap();
    assert_eq!(pv.info().source, DiscoverySource::BootInfo(BOOT_GPA));
}

#[test]
fn cpuid_failures() {
    let f = fake(none());
    let run = |cpuid: &dyn Fn(u32) -> CpuidRegs| {
        Pvabi::discover_with(
            &DiscoverOptions {
                boot_info_gpa: 0,
                in_process: None,
                cpuid: Some(cpuid),
                probe_services: false,
            },
            &phys(f),
        )
        .unwrap_err()
    };
    assert_eq!(run(&|_| [0; 4]), DiscoverError::NotFound);
    // Port above 16 bits, gate NONE, unknown gate, in-process without the function.
    for g in [
        [0x0001_0000, GateKind::IOPORT.0, 0x1_0000, 0],
        [0x0001_0000, GateKind::NONE.0, 0, 0],
        [0x0001_0000, 99, 0, 0],
        [0x0001_0000, GateKind::INPROCESS.0, 0, 0],
    ] {
        assert!(matches!(
            run(&cpuid_with(0x4000_0000, g, [0, 0, 1, 1])),
            DiscoverError::GateUnusable { .. }
        ));
    }
    assert_eq!(
        run(&cpuid_with(
            0x4000_0000,
            [0x0001_0000, GateKind::VMCALL.0, 0, 0],
            [0, 0, 0, 1]
        )),
        DiscoverError::BadAnswer
    );
    assert!(matches!(
        run(&cpuid_with(
            0x4000_0000,
            [0x0002_0000, GateKind::VMCALL.0, 0, 0],
            [0, 0, 1, 1]
        )),
        DiscoverError::Incompatible { .. }
    ));
    // The last candidate leaf is searched too.
    let last = cpuid_with(
        pvabi::discovery::CPUID_BASE_LAST,
        [0x0001_0000, GateKind::VMMCALL.0, 0, 0],
        [0, 0, 1, 1],
    );
    assert_eq!(
        find_cpuid_base(&last),
        Some(pvabi::discovery::CPUID_BASE_LAST)
    );
    let _ = BootInfo::SIZE;
}

#[test]
fn identity_reader_is_bounded_by_the_highest_ram_range() {
    use pvabi::memory::{MemKind, MemMapEntry};
    use pvabi_guest::{PhysReader, Translate};
    let e = |base: u64, length: u64, kind: MemKind| MemMapEntry {
        base,
        length,
        kind: kind.0,
        _reserved: 0,
    };
    // RAM with a hole below 4 GiB: the total (mem_size) is below the end of the top range.
    let map = Box::new([
        e(0, 0x1_0000, MemKind::LOADER),
        e(0x1_0000, 0x7fff_0000, MemKind::RAM),
        e(0xfed0_0000, 0x1000, MemKind::MMIO),
        e(0x1_0000_0000, 0x4000_0000, MemKind::RAM),
        e(0x2_0000_0000, 0x1000, MemKind(99)),
    ]);
    let f = fake(Box::new(|_, _, _| None));
    let mut bi = Box::new(boot_info(1));
    bi.mem_map_gpa = map.as_ptr() as u64;
    bi.mem_map_entries = map.len() as u32;
    bi.mem_size = 0x8000_0000 + 0x4000_0000;
    // SAFETY: with identity translation the shim reads only the boot info and the memory
    // map, both live heap objects of this test, at their own addresses.
    let phys = unsafe { PhysReader::new(Translate::Identity) };
    let pv = Pvabi::discover_in_process(gate(f), &*bi as *const BootInfo as u64, &phys).unwrap();
    assert_eq!(
        pv.translate(),
        Translate::IdentityBounded {
            ram_len: 0x1_4000_0000
        }
    );
    // Without a readable map the total is the bound.
    bi.mem_map_entries = 0;
    let pv = Pvabi::discover_in_process(gate(f), &*bi as *const BootInfo as u64, &phys).unwrap();
    assert_eq!(
        pv.translate(),
        Translate::IdentityBounded {
            ram_len: 0xc000_0000
        }
    );
}
