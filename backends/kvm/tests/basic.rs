//! Runs the raw-gate test guest (`tests/guests/basic`) under KVM in both execution modes.

mod common;

use common::{guest, kvm_or_skip, run, run_without_sync_regs, MODES};
use pvabi_kvm::{Error, Mode};

fn ok_code(r: &Result<pvabi_kvm::ExitStatus, Error>) -> u64 {
    match r {
        Ok(st) => {
            assert_eq!(st.reason, 0, "POWEROFF expected: {st:?}");
            st.code
        }
        Err(e) => panic!("VM failed: {e}"),
    }
}

#[test]
fn power_off_exit_code_reaches_the_host() {
    if !kvm_or_skip("power_off_exit_code_reaches_the_host") {
        return;
    }
    let elf = guest("basic");
    for mode in MODES {
        let (r, _) = run(&elf, mode, 1, "exit 42");
        assert_eq!(ok_code(&r), 42, "{mode:?}");
        let (r, _) = run(&elf, mode, 1, "exit 7");
        assert_eq!(ok_code(&r), 7, "{mode:?}");
    }
}

#[test]
fn raw_out_loop_to_the_null_port() {
    if !kvm_or_skip("raw_out_loop_to_the_null_port") {
        return;
    }
    let elf = guest("basic");
    for mode in MODES {
        let n = 2000;
        let t = std::time::Instant::now();
        let (r, _) = run(&elf, mode, 1, &format!("outloop {n}"));
        assert_eq!(ok_code(&r), 0, "{mode:?}");
        eprintln!(
            "{mode:?}: {n} null-port exits (plus VM set-up) in {:?}",
            t.elapsed()
        );
    }
}

#[test]
fn abi_version_through_the_gate() {
    if !kvm_or_skip("abi_version_through_the_gate") {
        return;
    }
    let elf = guest("basic");
    for mode in MODES {
        let (r, _) = run(&elf, mode, 1, "version");
        assert_eq!(
            ok_code(&r),
            u64::from(pvabi::ABI_VERSION.to_u32()),
            "{mode:?}"
        );
    }
}

#[test]
fn unknown_calls_are_not_supported() {
    if !kvm_or_skip("unknown_calls_are_not_supported") {
        return;
    }
    let elf = guest("basic");
    for mode in MODES {
        let (r, _) = run(&elf, mode, 1, "unknown");
        assert_eq!(ok_code(&r), 3, "{mode:?}");
    }
}

#[test]
fn console_output_is_captured() {
    if !kvm_or_skip("console_output_is_captured") {
        return;
    }
    let elf = guest("basic");
    for mode in MODES {
        let (r, out) = run(&elf, mode, 1, "console");
        assert_eq!(ok_code(&r), 0, "{mode:?}");
        assert_eq!(out, "hello from the guest\n", "{mode:?}");
    }
}

#[test]
fn boot_info_describes_the_vm() {
    if !kvm_or_skip("boot_info_describes_the_vm") {
        return;
    }
    let elf = guest("basic");
    // Bits 0..8: failed checks; 8..16: exec_mode; 16..: mem_size in MiB (all 16 MiB of RAM).
    let (r, _) = run(&elf, Mode::Ring0, 3, "bootinfo 3");
    assert_eq!(ok_code(&r), 16 << 16);
    let (r, _) = run(&elf, Mode::PvRing3, 2, "bootinfo 2");
    assert_eq!(
        ok_code(&r),
        16 << 16 | 1 << 8,
        "exec_mode PV_RING3 in bits 8.."
    );
}

#[test]
fn cpuid_carries_the_signature_in_ring0() {
    if !kvm_or_skip("cpuid_carries_the_signature_in_ring0") {
        return;
    }
    let elf = guest("basic");
    let (r, _) = run(&elf, Mode::Ring0, 1, "cpuid");
    let code = ok_code(&r);
    assert_eq!(code & 1, 1, "signature at leaf 0x4000_0100");
    assert_eq!(
        code >> 8,
        u64::from(pvabi::gate::DEFAULT_IOPORT),
        "gate port in ECX"
    );
}

#[test]
fn triple_fault_is_an_error_with_registers() {
    if !kvm_or_skip("triple_fault_is_an_error_with_registers") {
        return;
    }
    let elf = guest("basic");
    for mode in MODES {
        let (r, _) = run(&elf, mode, 1, "triple");
        match r {
            Err(e @ Error::TripleFault { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("vCPU 0") && msg.contains("rip="), "{msg}");
            }
            other => panic!("{mode:?}: expected a triple fault, got {other:?}"),
        }
    }
}

#[test]
fn two_vcpus_with_vcpu_start() {
    if !kvm_or_skip("two_vcpus_with_vcpu_start") {
        return;
    }
    let elf = guest("basic");
    for mode in MODES {
        let (r, _) = run(&elf, mode, 2, "smp");
        // The secondary stores arg + its id (1): 0x1000 the first time, 0x2000 after its
        // restart.
        assert_eq!(ok_code(&r), 0x1001 | 0x2001 << 16, "{mode:?}");
    }
}

#[test]
fn watchdog_ends_a_hung_guest() {
    if !kvm_or_skip("watchdog_ends_a_hung_guest") {
        return;
    }
    let elf = guest("basic");
    let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let cfg = pvabi_kvm::RunConfig {
        mem_mib: 16,
        cmdline: "hang".into(),
        mode: Mode::PvRing3,
        console: pvabi_kvm::ConsoleSink::Capture(buf),
        watchdog: Some(std::time::Duration::from_millis(300)),
        ..Default::default()
    };
    match pvabi_kvm::run_elf(&elf, cfg) {
        Err(e @ Error::Watchdog { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("vCPU 0") && msg.contains("rip="), "{msg}");
        }
        other => panic!("expected the watchdog, got {other:?}"),
    }
}

#[test]
fn bad_images_and_configs_are_errors() {
    let elf = std::env::current_exe().expect("test binary");
    // The test binary itself is an ELF whose segments are not where a guest's must be (or
    // it is position independent at 0): the loader refuses it.
    let cfg = pvabi_kvm::RunConfig::default();
    match pvabi_kvm::run_elf(&elf, cfg) {
        Err(Error::Image { .. }) | Err(Error::NoKvm(_)) => {}
        other => panic!("expected an image error, got {other:?}"),
    }
    let cfg = pvabi_kvm::RunConfig {
        vcpus: 0,
        ..Default::default()
    };
    match pvabi_kvm::run_elf(&elf, cfg) {
        Err(Error::Config(_)) | Err(Error::NoKvm(_)) => {}
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn events_arrive_as_upcalls_and_end_block() {
    if !kvm_or_skip("events_arrive_as_upcalls_and_end_block") {
        return;
    }
    let elf = guest("basic");
    for mode in MODES {
        let (r, out) = run(&elf, mode, 1, "events");
        // 2 upcalls, VCPU.BLOCK ended by the timer well before its deadline, the port's
        // pending bit seen by the handler.
        assert_eq!(ok_code(&r), 2 | 1 << 8 | 1 << 9, "{mode:?}: {out}");
    }
}

#[test]
fn gate_calls_work_with_and_without_sync_regs() {
    if !kvm_or_skip("gate_calls_work_with_and_without_sync_regs") {
        return;
    }
    let elf = guest("basic");
    for mode in MODES {
        // 200 BASE.GET_VCPU_ID calls, each checked by the guest: the code is the number of
        // wrong answers.
        let (r, _) = run(&elf, mode, 1, "gateloop 200");
        assert_eq!(ok_code(&r), 0, "{mode:?} with sync regs");
        let r = run_without_sync_regs(&elf, mode, "gateloop 200");
        assert_eq!(ok_code(&r), 0, "{mode:?} with register ioctls");
        let r = run_without_sync_regs(&elf, mode, "version");
        assert_eq!(ok_code(&r), u64::from(pvabi::ABI_VERSION.to_u32()));
    }
}

#[test]
fn crash_shutdown_returns_the_crash_report() {
    if !kvm_or_skip("crash_shutdown_returns_the_crash_report") {
        return;
    }
    let elf = guest("basic");
    for mode in MODES {
        let cfg = pvabi_kvm::RunConfig {
            mem_mib: 16,
            cmdline: "crash".into(),
            mode,
            console: pvabi_kvm::ConsoleSink::Capture(Default::default()),
            ..Default::default()
        };
        let out = pvabi_kvm::run(&elf, &cfg).unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        assert_eq!((out.status.reason, out.status.code), (2, 77), "{mode:?}");
        let crash = out
            .crash
            .unwrap_or_else(|| panic!("{mode:?}: no crash report"));
        assert_eq!((crash.code, crash.message.as_str()), (5, "guest gave up"));
    }
}

#[test]
fn watchdog_ends_a_guest_blocked_forever() {
    if !kvm_or_skip("watchdog_ends_a_guest_blocked_forever") {
        return;
    }
    let elf = guest("basic");
    for mode in MODES {
        let cfg = pvabi_kvm::RunConfig {
            mem_mib: 16,
            cmdline: "sleep".into(),
            mode,
            console: pvabi_kvm::ConsoleSink::Capture(Default::default()),
            watchdog: Some(std::time::Duration::from_millis(300)),
            ..Default::default()
        };
        match pvabi_kvm::run_elf(&elf, cfg) {
            Err(e @ Error::Watchdog { .. }) => {
                assert!(e.to_string().contains("vCPU 0"), "{mode:?}: {e}");
            }
            other => panic!("{mode:?}: expected the watchdog, got {other:?}"),
        }
    }
}

#[test]
fn console_can_go_to_a_file() {
    if !kvm_or_skip("console_can_go_to_a_file") {
        return;
    }
    let elf = guest("basic");
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("kvm-console-test.txt");
    let cfg = pvabi_kvm::RunConfig {
        mem_mib: 16,
        cmdline: "console".into(),
        mode: Mode::PvRing3,
        console: pvabi_kvm::ConsoleSink::File(path.clone()),
        ..Default::default()
    };
    let st = pvabi_kvm::run_elf(&elf, cfg).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(st.code, 0);
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(text, "hello from the guest\n");
}

#[test]
fn every_vcpu_of_a_four_vcpu_guest_starts() {
    if !kvm_or_skip("every_vcpu_of_a_four_vcpu_guest_starts") {
        return;
    }
    let elf = guest("basic");
    for mode in MODES {
        let (r, _) = run(&elf, mode, 4, "smpall");
        assert_eq!(ok_code(&r), 0b1110 | 1 << 32, "{mode:?}");
    }
}

#[test]
fn a_corrupted_upcall_frame_ends_the_vm_with_an_error() {
    if !kvm_or_skip("a_corrupted_upcall_frame_ends_the_vm_with_an_error") {
        return;
    }
    let elf = guest("basic");
    let (r, _) = run(&elf, Mode::PvRing3, 1, "badframe");
    match r {
        Err(e @ Error::TripleFault { .. }) => {
            assert!(e.to_string().contains("rip=0x7fff00000000"), "{e}");
        }
        other => panic!("expected a triple fault, got {other:?}"),
    }
    // A non-canonical RIP is refused with INVALID_PARAM (-2); the callback reports it.
    let (r, _) = run(&elf, Mode::PvRing3, 1, "badframe2");
    assert_eq!(ok_code(&r), 0xdead00 | 0xfe);
}

#[test]
fn steal_time_counts_waiting_for_a_host_cpu() {
    if !kvm_or_skip("steal_time_counts_waiting_for_a_host_cpu") {
        return;
    }
    let host_cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    let vcpus = (2 * host_cpus).min(pvabi::MAX_VCPUS);
    if vcpus <= host_cpus {
        eprintln!("SKIP: steal_time_counts_waiting_for_a_host_cpu: {host_cpus} host CPUs, cannot overcommit with {} vCPUs", pvabi::MAX_VCPUS);
        return;
    }
    let elf = guest("basic");
    // PV ring 3 runs guest code natively, so the spinning vCPUs really compete for host CPUs.
    let (r, _) = run(&elf, Mode::PvRing3, vcpus, "steal");
    let steal_us = ok_code(&r);
    eprintln!("{vcpus} spinning vCPUs on {host_cpus} host CPUs: vCPU 0 saw {steal_us} µs of steal in 500 ms");
    assert!(
        steal_us > 0,
        "no steal time with {vcpus} vCPUs on {host_cpus} CPUs"
    );
    assert!(
        steal_us < 5_000_000,
        "more steal than elapsed time: {steal_us} µs"
    );
}
