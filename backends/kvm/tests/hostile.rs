//! Runs the hostile test guest (`tests/guests/hostile`) under KVM: random call storms,
//! scribbling over shared pages while the host writes them, vCPU start/stop storms, store quota
//! exhaustion and watch floods, running off the end of RAM and endless loops. Each test checks
//! that the VMM survives with a clear result, that a normal VM runs afterwards in the same
//! process, and that every file descriptor and thread it opened is gone again.

mod common;

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use common::{guest, kvm_or_skip, MODES};
use pvabi_kvm::{Error, ExitStatus, Mode};

/// Serialises the tests of this file so that descriptor and thread counts are not disturbed
/// by another VM of this process.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn count_dir(path: &str) -> usize {
    std::fs::read_dir(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .count()
}

/// The tests of this file (their threads carry these names, cut to 15 bytes).
const TESTS: [&str; 6] = [
    "random_call_storm_gets_a_status_for_every_call",
    "guest_scribbling_over_its_shared_pages_does_not_hurt_the_host",
    "secondary_vcpu_start_stop_storm",
    "store_quota_and_watch_flood",
    "running_off_the_end_of_ram_is_an_error_naming_the_vcpu",
    "endless_loop_without_calls_is_ended_by_the_watchdog",
];

/// Threads of this process other than the main thread and the test harness's threads (which
/// come and go as tests start and finish): the VMM's vCPU, timer and ring threads.
fn vmm_threads() -> usize {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc/self/task")
        .unwrap_or_else(|e| panic!("/proc/self/task: {e}"))
        .filter_map(Result::ok)
        .filter(|t| t.file_name().to_str() != Some(me.as_str()))
        .filter(|t| {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            let comm = comm.trim_end();
            !TESTS
                .iter()
                .any(|n| n.starts_with(comm) && comm.len() >= 15)
        })
        .count()
}

/// Open file descriptors and VMM threads of this process.
fn resources() -> (usize, usize) {
    (count_dir("/proc/self/fd"), vmm_threads())
}

fn run_with(
    mode: Mode,
    vcpus: u32,
    cmdline: &str,
    watchdog: Duration,
) -> (Result<ExitStatus, Error>, String) {
    common::run_with_watchdog(&guest("hostile"), mode, vcpus, cmdline, watchdog)
}

fn run(mode: Mode, vcpus: u32, cmdline: &str) -> (Result<ExitStatus, Error>, String) {
    run_with(mode, vcpus, cmdline, Duration::from_secs(10))
}

/// The POWEROFF code of a run that must have ended with POWER.SHUTDOWN(POWEROFF).
fn poweroff_code(what: &str, r: &Result<ExitStatus, Error>, out: &str) -> u64 {
    match r {
        Ok(st) => {
            assert_eq!(st.reason, 0, "{what}: POWEROFF expected: {st:?}\n{out}");
            st.code
        }
        Err(e) => panic!("{what}: VM failed: {e}\nconsole:\n{out}"),
    }
}

/// A `name=value` line of the guest's console report.
fn value(out: &str, name: &str) -> u64 {
    out.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name}= in the console output:\n{out}"))
}

/// Runs `body` between two resource counts: a warm-up VM first (so one-time set-up of the
/// process is not counted), then `body`, then a normal VM that must power off with 0; the
/// descriptor and thread counts must be back where they started.
fn with_leak_check(test: &str, body: impl FnOnce()) {
    if !kvm_or_skip(test) {
        return;
    }
    let _g = serial();
    let (r, out) = run(Mode::PvRing3, 1, "ok");
    assert_eq!(poweroff_code("warm-up", &r, &out), 0);
    let before = resources();
    body();
    for mode in MODES {
        let (r, out) = run(mode, 2, "ok");
        assert_eq!(
            poweroff_code(&format!("{test}: the next VM ({mode:?})"), &r, &out),
            0
        );
    }
    let after = resources();
    eprintln!("{test}: (open fds, VMM threads) before {before:?}, after {after:?}");
    assert_eq!(
        before, after,
        "{test}: (open fds, VMM threads) before and after differ"
    );
}

#[test]
fn random_call_storm_gets_a_status_for_every_call() {
    with_leak_check("random_call_storm_gets_a_status_for_every_call", || {
        // PV ring 3 runs guest code natively: thousands of calls; ring 0 fewer.
        for (mode, n) in [(Mode::PvRing3, 4000), (Mode::Ring0, 2000)] {
            // PVABI_HOSTILE_SEED adds a seed of one's choice (to reproduce or explore).
            let extra = std::env::var("PVABI_HOSTILE_SEED")
                .ok()
                .and_then(|v| v.parse::<u64>().ok());
            for seed in [1u64, 0x9E37_79B9_7F4A_7C15, 424_242]
                .into_iter()
                .chain(extra)
            {
                let (r, out) = run(mode, 1, &format!("storm {seed} {n}"));
                let what = format!("{mode:?} seed {seed}");
                assert_eq!(poweroff_code(&what, &r, &out), 0, "{what}: {out}");
                let calls = value(&out, "calls");
                assert!(calls > n * 9 / 10, "{what}: only {calls} calls made");
                assert_eq!(value(&out, "bad_status"), 0, "{what}");
                eprintln!(
                    "{what}: {calls} random calls, {} succeeded",
                    value(&out, "succeeded")
                );
            }
        }
    });
}

#[test]
fn guest_scribbling_over_its_shared_pages_does_not_hurt_the_host() {
    with_leak_check(
        "guest_scribbling_over_its_shared_pages_does_not_hurt_the_host",
        || {
            for (mode, n) in [(Mode::PvRing3, 2000), (Mode::Ring0, 1000)] {
                let (r, out) = run(mode, 2, &format!("scribble {n}"));
                let what = format!("{mode:?}");
                assert_eq!(poweroff_code(&what, &r, &out), 0, "{what}: {out}");
                assert!(value(&out, "scribbled_words") > 0, "{what}");
                eprintln!(
                    "{what}: {n} rounds of host writes against {} guest writes; then clock page {} ns, CLOCK.GET_TIME {} ns",
                    value(&out, "scribbled_words"),
                    value(&out, "clock_page_ns"),
                    value(&out, "get_time_ns")
                );
            }
        },
    );
}

#[test]
fn secondary_vcpu_start_stop_storm() {
    with_leak_check("secondary_vcpu_start_stop_storm", || {
        for (mode, vcpus, n) in [
            (Mode::PvRing3, 2, 400),
            (Mode::PvRing3, 4, 300),
            (Mode::Ring0, 3, 150),
        ] {
            let (r, out) = run(mode, vcpus, &format!("startstop {n}"));
            let what = format!("{mode:?} with {vcpus} vCPUs");
            assert_eq!(poweroff_code(&what, &r, &out), 0, "{what}: {out}");
            let starts = value(&out, "starts");
            assert!(starts >= n, "{what}: {starts} starts");
            assert_eq!(value(&out, "ran"), starts, "{what}");
            assert_eq!(value(&out, "refused"), n.div_ceil(4), "{what}");
            eprintln!("{what}: {starts} starts and stops");
        }
    });
}

#[test]
fn store_quota_and_watch_flood() {
    with_leak_check("store_quota_and_watch_flood", || {
        for mode in MODES {
            let writes = 20;
            let (r, out) = run(mode, 1, &format!("store {writes}"));
            let what = format!("{mode:?}");
            assert_eq!(poweroff_code(&what, &r, &out), 0, "{what}: {out}");
            let watches = value(&out, "watches");
            assert_eq!(watches, u64::from(pvabi::store::MAX_WATCHES), "{what}");
            let delivered = value(&out, "delivered");
            let dropped = value(&out, "dropped");
            assert_eq!(
                delivered,
                u64::from(pvabi::store::MAX_WATCH_EVENTS),
                "{what}: the queue fills up"
            );
            assert_eq!(
                delivered + dropped,
                watches * writes,
                "{what}: every write fires every watch; each event is delivered or counted as dropped"
            );
            let entries = value(&out, "entries");
            // Nodes already there: `w`, the seven `w/kN` and `q` itself.
            assert_eq!(
                entries,
                u64::from(pvabi::store::MAX_ENTRIES) - 9,
                "{what}: writes accepted before NO_SPACE"
            );
            eprintln!(
                "{what}: {watches} watches, {delivered} events delivered, {dropped} dropped, quota reached after {entries} writes"
            );
        }
    });
}

#[test]
fn running_off_the_end_of_ram_is_an_error_naming_the_vcpu() {
    with_leak_check(
        "running_off_the_end_of_ram_is_an_error_naming_the_vcpu",
        || {
            for mode in MODES {
                for (cmd, vcpus, who) in
                    [("runoff jump", 1, "vCPU 0"), ("runoff jump1", 2, "vCPU 1")]
                {
                    let (r, out) = run(mode, vcpus, cmd);
                    match r {
                        Err(e @ (Error::UnexpectedExit { .. } | Error::TripleFault { .. })) => {
                            let msg = e.to_string();
                            assert!(msg.contains(who), "{mode:?} {cmd}: {msg}");
                            // It stops at the first byte past the 16 MiB of RAM.
                            assert!(msg.contains("rip=0x1000000 "), "{mode:?} {cmd}: {msg}");
                            eprintln!("{mode:?} {cmd}: {msg}");
                        }
                        other => panic!("{mode:?} {cmd}: expected an error, got {other:?}\n{out}"),
                    }
                }
                // Reads beyond the last RAM byte see all ones, writes go nowhere, the guest
                // carries on.
                let (r, out) = run(mode, 1, "runoff read");
                assert_eq!(
                    poweroff_code(&format!("{mode:?} read"), &r, &out),
                    1,
                    "{out}"
                );
            }
        },
    );
}

#[test]
fn endless_loop_without_calls_is_ended_by_the_watchdog() {
    with_leak_check(
        "endless_loop_without_calls_is_ended_by_the_watchdog",
        || {
            for mode in MODES {
                for vcpus in [1, 2] {
                    let (r, out) = run_with(mode, vcpus, "spin", Duration::from_millis(300));
                    match r {
                        Err(e @ Error::Watchdog { .. }) => {
                            let msg = e.to_string();
                            assert!(msg.contains("vCPU 0"), "{mode:?}: {msg}");
                            if vcpus == 2 {
                                assert!(msg.contains("vCPU 1"), "{mode:?}: {msg}");
                            }
                        }
                        other => panic!("{mode:?}: expected the watchdog, got {other:?}\n{out}"),
                    }
                }
            }
        },
    );
}
