//! Two KVM VMs running at the same time in one process cannot reach each other's state
//! (spec `SEC-10`), with the test guest `tests/guests/isolation` in both.
//!
//! VM A (2 vCPUs, 32 MiB) sets up state of every kind, starts a second vCPU that keeps using
//! and checking it, and prints `ready`; then it writes a barrier of 1 MiB to its console.
//! Its console is a named pipe that this test stops reading after `ready`, so A stays in
//! that console write (its second vCPU still running) until the test has run VM B (1 vCPU,
//! 16 MiB) to its end in another thread. B tries every call path to A's state with A's
//! identifiers and at A's guest-physical addresses; then the test drains the pipe and A
//! checks that its state is exactly what it left.
//!
//! Both guests report every check as a HARNESS record (citing the clauses it checks); the
//! test requires every record to pass, each role's key checks to be present, and checks the
//! host's view of both consoles: neither VM's output carries the other's data.

mod common;

use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{guest, kvm_or_skip};
use pvabi::harness::Outcome;
use pvabi_kvm::{ConsoleSink, Error, Mode, Report, RunConfig, RunOutput};

/// Bytes A writes after `ready`: far more than the pipe holds, so A cannot finish the write
/// while the test does not read.
const BARRIER: usize = 1 << 20;
/// Largest read from the pipe (how much of the barrier the test may consume with `ready`).
const READ_CHUNK: usize = 4096;
/// Watch and transaction ids B tries before it has its own (`FOREIGN_IDS` in the guest).
const FOREIGN_IDS: u64 = 4;
/// How long any phase may take before the test gives up (the VMs' watchdogs end them
/// earlier if they hang).
const PHASE_LIMIT: Duration = Duration::from_secs(90);

/// Checks of A that carry the argument: A's state after B ran is exactly A's.
const A_KEY_CHECKS: &[&str] = &[
    "a.live.ran_while_waiting",
    "a.live.state_unchanged_while_b_ran",
    "a.ram.secret_page",
    "a.ram.high_page",
    "a.ram.keep_page",
    "a.grant.table_unchanged",
    "a.grant.host_reads_a_page#7",
    "a.grant.host_reads_a_high_page",
    "a.event.canaries_not_pending",
    "a.event.pending_word0",
    "a.event.mask_word0",
    "a.event.other_words_zero",
    "a.event.vcpu0_selector",
    "a.event.vcpu1_selector",
    "a.event.port4_still_on_vcpu1",
    "a.event.port6_still_allocated",
    "a.store.node_unchanged#0",
    "a.store.node_unchanged#1",
    "a.store.host_view_host_none",
    "a.store.root_list",
    "a.store.secret_list",
    "a.store.no_b_node#0",
    "a.store.no_b_node#2",
    "a.store.host_view_no_b_node#1",
    "a.store.own_queued_event",
    "a.store.no_other_event",
    "a.store.txn_still_open",
    "a.store.secret_watch_still_there",
    "a.balloon.query",
    "a.balloon.released",
    "a.console.own_input",
    "a.console.no_b_output",
    "a.ring.untouched",
    "a.ring.still_registered",
    "a.clock.page_still_registered",
    "a.store.quota_of_own",
];

/// Checks of B that carry the argument: every path to A's state fails with the spec's status,
/// and B's own state with A's numbers and addresses is B's.
const B_KEY_CHECKS: &[&str] = &[
    "b.event.send_no_page#3",
    "b.event.send_foreign#1",
    "b.event.send_foreign#3",
    "b.event.send_foreign#6",
    "b.event.mask_foreign#2",
    "b.event.unmask_foreign#2",
    "b.event.close_foreign#4",
    "b.event.bind_foreign#4",
    "b.event.inject_foreign#3",
    "b.event.send_foreign_after_alloc#6",
    "b.event.own_page_at_a_address",
    "b.event.own_alloc_1",
    "b.event.own_alloc_2",
    "b.event.bind_to_foreign_vcpu",
    "b.clock.timer_foreign#5",
    "b.clock.own_timer_fired",
    "b.clock.no_page",
    "b.store.watch_foreign_port#5",
    "b.store.unwatch_foreign#1",
    "b.store.commit_foreign#1",
    "b.store.abort_foreign#1",
    "b.store.read_in_foreign_txn#1",
    "b.store.write_in_foreign_txn#1",
    "b.store.watch_next_foreign",
    "b.store.read_a_path#0",
    "b.store.read_a_path#2",
    "b.store.host_read_a_path#2",
    "b.store.remove_a_path#5",
    "b.store.list_a_path#0",
    "b.store.read_absolute_looking#0",
    "b.store.root_empty",
    "b.store.escape_read#0",
    "b.store.escape_write#1",
    "b.store.escape_host_read#5",
    "b.store.escape_watch#2",
    "b.store.own_read",
    "b.store.own_quota",
    "b.store.own_root",
    "b.store.own_event_1",
    "b.store.no_event_from_a",
    "b.grant.no_table#5",
    "b.grant.a_ref_5",
    "b.grant.a_ref_12",
    "b.grant.a_only_page",
    "b.grant.own_ref_2_reads_own#7",
    "b.grant.own_ref_5_reads_own",
    "b.mem.console_write#0",
    "b.mem.store_value#0",
    "b.mem.get_map#0",
    "b.mem.grant_table#0",
    "b.mem.balloon_check#0",
    "b.mem.own_zero_page_read_back",
    "b.mem.own_page_read_back",
    "b.mem.own_page_host_view",
    "b.mem.own_page_readback",
    "b.mem.own_map",
    "b.balloon.check_a_released#0",
    "b.balloon.reclaim_a_released",
    "b.balloon.own_reclaim_zeroed",
    "b.console.no_a_input",
    "b.console.no_a_output",
    "b.console.own_input_only",
    "b.console.no_a_bytes",
    "b.vcpu.count",
    "b.vcpu.kick_foreign#1",
    "b.vcpu.start_foreign#1",
    "b.ring.none",
    "b.ring.completed",
    "b.ring.request#0",
    "b.ring.request#2",
    "b.multicall.ran",
    "b.multicall.entry#0",
    "b.multicall.entry#5",
];

/// Serialises the tests of this file: each runs two VMs and wants the host's CPUs.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A named pipe that is removed again when dropped.
struct Fifo(PathBuf);

impl Fifo {
    fn new(name: &str) -> Self {
        let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("isolation-{}-{name}.fifo", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("no NUL in the path");
        // SAFETY: `c` is a NUL-terminated path that lives across the call; mkfifo only reads
        // it and creates a file system node.
        let r = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
        assert_eq!(
            r,
            0,
            "mkfifo {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        Self(path)
    }
}

impl Drop for Fifo {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Reads what the pipe has; returns false at end of file (no writer) or when nothing is
/// there yet.
fn read_some(pipe: &mut File, out: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; READ_CHUNK];
    match pipe.read(&mut buf) {
        Ok(0) => false,
        Ok(n) => {
            out.extend_from_slice(&buf[..n]);
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => true,
        Err(e) => panic!("reading A's console: {e}"),
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A `name=value` line of a console.
fn value(out: &[u8], name: &str) -> u64 {
    let text = String::from_utf8_lossy(out);
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name}= in the console output:\n{text}"))
}

/// Checks one role's records: all passed, END last, as many as the guest says it made, and
/// every key check among them.
fn check_reports(role: &str, out: &RunOutput, console: &[u8], key: &[&str]) -> usize {
    let reports: &[Report] = &out.reports;
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| r.outcome != Outcome::PASSED && r.outcome != Outcome::END)
        .map(|r| format!("{} [{}]: {}", r.name, r.clauses.join(","), r.detail))
        .collect();
    assert!(
        failed.is_empty(),
        "{role}: {} checks failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
    assert_eq!(
        reports.last().map(|r| r.outcome),
        Some(Outcome::END),
        "{role}: no END record"
    );
    let checks = reports.len() - 1;
    assert_eq!(
        value(console, "checks"),
        checks as u64,
        "{role}: records lost"
    );
    assert_eq!(value(console, "failed"), 0, "{role}");
    for k in key {
        assert!(
            reports.iter().any(|r| r.name == *k),
            "{role}: check {k} missing"
        );
    }
    for r in reports.iter().filter(|r| r.outcome == Outcome::PASSED) {
        assert!(!r.clauses.is_empty(), "{role}: {} cites no clause", r.name);
    }
    assert_eq!(out.status.reason, 0, "{role}: POWEROFF expected");
    assert_eq!(out.status.code, 0, "{role}: failed checks");
    checks
}

fn config(
    mode: Mode,
    vcpus: u32,
    mem_mib: u64,
    cmdline: String,
    console: ConsoleSink,
) -> RunConfig {
    RunConfig {
        vcpus,
        mem_mib,
        cmdline,
        mode,
        console,
        watchdog: Some(Duration::from_secs(60)),
        harness: true,
        ..Default::default()
    }
}

fn spawn(name: &str, elf: PathBuf, cfg: RunConfig) -> JoinHandle<Result<RunOutput, Error>> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || pvabi_kvm::run(&elf, &cfg))
        .expect("VM thread")
}

fn two_vms(test: &str, mode_a: Mode, mode_b: Mode) {
    if !kvm_or_skip(test) {
        return;
    }
    let _g = serial();
    let elf = guest("isolation");
    let t0 = Instant::now();
    let fifo = Fifo::new(test);
    // Non-blocking, so that opening does not wait for A and a dead A cannot hang the test.
    let mut pipe = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo.0)
        .expect("open A's console pipe");
    // SAFETY: F_GETPIPE_SZ reads a property of the open pipe descriptor `pipe` owns.
    let capacity = unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_GETPIPE_SZ) };
    assert!(
        capacity > 0 && (capacity as usize) + READ_CHUNK < BARRIER,
        "pipe capacity {capacity} too large for a {BARRIER}-byte barrier"
    );

    let a = spawn(
        "vm-a",
        elf.clone(),
        config(
            mode_a,
            2,
            32,
            format!("A {BARRIER}"),
            ConsoleSink::File(fifo.0.clone()),
        ),
    );
    // Until `ready`: A has set up its state and is about to block in its barrier write.
    let mut a_out = Vec::new();
    let waited = Instant::now();
    while !contains(&a_out, b"ready\n") {
        if !read_some(&mut pipe, &mut a_out) {
            if a.is_finished() || waited.elapsed() > PHASE_LIMIT {
                let r = a.join();
                panic!(
                    "{test}: A ended before `ready`: {r:?}\n{}",
                    String::from_utf8_lossy(&a_out)
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let a_ready = t0.elapsed();

    let b_buf = Arc::new(Mutex::new(Vec::new()));
    let b_cfg = config(
        mode_b,
        1,
        16,
        "B".to_owned(),
        ConsoleSink::Capture(b_buf.clone()),
    );
    let b_start = Instant::now();
    let b = spawn("vm-b", elf, b_cfg).join();
    let b_time = b_start.elapsed();
    // A was alive (waiting in its console write, its vCPU 1 running) during all of B.
    let a_alive = !a.is_finished();

    // Let A go on and read the rest of its console.
    let drained = Instant::now();
    loop {
        if !read_some(&mut pipe, &mut a_out) {
            if a.is_finished() {
                while read_some(&mut pipe, &mut a_out) {}
                break;
            }
            assert!(drained.elapsed() < PHASE_LIMIT, "{test}: A does not end");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let a = a.join().expect("A's thread");
    let b_console = b_buf.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let total = t0.elapsed();

    let b = b.expect("B's thread").unwrap_or_else(|e| {
        panic!(
            "{test}: B failed: {e}\n{}",
            String::from_utf8_lossy(&b_console)
        )
    });
    let a =
        a.unwrap_or_else(|e| panic!("{test}: A failed: {e}\n{}", String::from_utf8_lossy(&a_out)));
    assert!(a_alive, "{test}: A ended before B did");

    let b_checks = check_reports("B", &b, &b_console, B_KEY_CHECKS);
    let a_checks = check_reports("A", &a, &a_out, A_KEY_CHECKS);

    // The host's view of both consoles: neither carries the other's data.
    for secret in [&b"A-SECRET"[..], b"A-HIGH", b"A-KEEP"] {
        assert!(
            !contains(&b_console, secret) && !contains(&b.console, secret),
            "{test}: B's console shows A's {}",
            String::from_utf8_lossy(secret)
        );
    }
    assert!(
        contains(&b_console, b"b-own-pgb-own-pg"),
        "{test}: B's console lacks B's own page, written from A's secret address"
    );
    for theirs in [&b"b-own"[..], b"B-value", b"b-input", b"B-host"] {
        assert!(
            !contains(&a_out, theirs) && !contains(&a.console, theirs),
            "{test}: A's console shows B's {}",
            String::from_utf8_lossy(theirs)
        );
    }
    assert!(contains(&a_out, b"A-SECRET-CONSOLE\n"), "{test}");
    let barrier_lines = a_out
        .split(|&c| c == b'\n')
        .filter(|l| *l == [b'='; 63])
        .count();
    assert_eq!(barrier_lines, BARRIER / 64, "{test}: A's barrier");
    // A's ids are among those B tried before it had its own.
    for id in ["a_txn", "a_watch_secret", "a_watch_queued"] {
        let v = value(&a_out, id);
        assert!(
            (1..=FOREIGN_IDS).contains(&v),
            "{test}: {id}={v}: B did not try it"
        );
    }
    let live = value(&a_out, "a_live_iterations_while_waiting");
    assert!(live > 0, "{test}: A's vCPU 1 did not run while B ran");
    eprintln!(
        "{test}: A ({mode_a:?}) ready after {a_ready:?}; B ({mode_b:?}) ran {b_time:?} with \
         {b_checks} checks (quota {} nodes) while A's vCPU 1 made {live} rounds; \
         A then made {a_checks} checks; {total:?} in all",
        value(&b_console, "b_quota_entries")
    );
}

#[test]
fn two_ring0_vms_at_once_cannot_reach_each_other() {
    two_vms("two_ring0_vms", Mode::Ring0, Mode::Ring0);
}

#[test]
fn two_pv_ring3_vms_at_once_cannot_reach_each_other() {
    two_vms("two_pv_ring3_vms", Mode::PvRing3, Mode::PvRing3);
}

#[test]
fn ring0_and_pv_ring3_vms_at_once_cannot_reach_each_other() {
    two_vms("ring0_a_pv_ring3_b", Mode::Ring0, Mode::PvRing3);
}
