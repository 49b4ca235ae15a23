//! POWER cases (spec chapter 12, `PWR-*`).
//!
//! How the guest ends is observed by the host-side runner: each terminal case names the end it
//! expects ([`ExpectedEnd`]). `PWR-2` is checked from inside: a second vCPU keeps making calls
//! after the boot vCPU announced its shutdown; if they still return a good while later, it
//! reports a FAILED record citing `PWR-2` (a conforming host never lets that record through).

use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use pvabi::discovery::Features;
use pvabi::harness::{Outcome, ReportHeader};
use pvabi::power::{CrashHeader, ShutdownReason};
use pvabi::{call, Status};
use pvabi_guest::harness::Record;
use pvabi_guest::power::CrashWriter;
use pvabi_guest::shared::CrashAreaShared;

use crate::chapters::vcpu::expect_st;
use crate::chapters::vcpu::{spin_wait, start_worker, stopped_vcpu, Mailbox, OP_CUSTOM};
use crate::{Case, Ctx, ExpectedEnd, TerminalCase};

/// The exit code of `power::poweroff_with_code` (all 64 bits matter).
const POWEROFF_CODE: u64 = 0x8000_0000_0000_002A;
/// The code of `power::bad_reason_then_poweroff`.
const AFTER_BAD_REASON_CODE: u64 = 7;
/// The crash code of `power::crash_report`.
const CRASH_CODE: u64 = 0xC0DE_0000_0000_0005;
/// The crash message written (32 bytes)...
const CRASH_MESSAGE: &[u8; 32] = b"pvabi conformance crash #1 ABCDE";
/// ...of which the host reports the first `len - 32` = 24 bytes.
const CRASH_SEEN: &str = "pvabi conformance crash ";
/// Bytes of message room the registered crash buffer has.
const CRASH_ROOM: u64 = 24;

/// The chapter's cases.
pub const CASES: &[Case] = &[Case {
    name: "power::crash_buffer_validation",
    clauses: "PWR-4,PWR-7,PWR-8",
    run: crash_buffer_validation,
}];

/// The chapter's terminal cases (each ends the guest; see [`crate::TerminalCase`]).
pub const TERMINAL: &[TerminalCase] = &[
    TerminalCase {
        name: "power::poweroff_with_code",
        clauses: "PWR-1,PWR-2",
        run: poweroff_with_code,
        expect: ExpectedEnd {
            reason: ShutdownReason::POWEROFF,
            code: POWEROFF_CODE,
            crash: None,
        },
    },
    TerminalCase {
        name: "power::reboot",
        clauses: "PWR-1,PWR-3",
        run: reboot,
        expect: ExpectedEnd {
            reason: ShutdownReason::REBOOT,
            code: 0,
            crash: None,
        },
    },
    TerminalCase {
        name: "power::crash_report",
        clauses: "PWR-1,PWR-4,PWR-5,PWR-6",
        run: crash_report,
        expect: ExpectedEnd {
            reason: ShutdownReason::CRASH,
            code: CRASH_CODE,
            crash: Some((CRASH_CODE, CRASH_SEEN)),
        },
    },
    TerminalCase {
        name: "power::bad_reason_then_poweroff",
        clauses: "PWR-1",
        run: bad_reason_then_poweroff,
        expect: ExpectedEnd {
            reason: ShutdownReason::POWEROFF,
            code: AFTER_BAD_REASON_CODE,
            crash: None,
        },
    },
];

/// TSC ticks (about a second at a few GHz) a second vCPU keeps calling after the boot vCPU
/// announced its POWER.SHUTDOWN, before it concludes that calls still return after it.
const AFTER_SHUTDOWN_TSC: u64 = 1 << 32;

/// Set by the boot vCPU of `power::poweroff_with_code` right before POWER.SHUTDOWN, to the
/// address of its worker's mailbox (unique per guest, so that guests running at the same
/// time in one process, in-process backends, do not see each other's flag). A static, not
/// guest RAM: in-process, guest RAM may be unmapped once the guest ended, and the worker may
/// still be running guest code between two calls that never return.
static SHUTTING_DOWN: AtomicU64 = AtomicU64::new(0);

/// Worker side of `power::poweroff_with_code`: waits until [`SHUTTING_DOWN`] names its
/// mailbox, then keeps making calls (touching nothing but its stack and registers) for
/// [`AFTER_SHUTDOWN_TSC`] ticks; if they all return, reports a FAILED record citing PWR-2 into the scratch buffer at
/// `aux[0]` (`aux[1]` bytes).
fn calls_after_shutdown(mb: &Mailbox) {
    let pv = mb.pv;
    let me = mb as *const Mailbox as usize as u64;
    let (Ok(addr), Ok(len)) = (
        usize::try_from(mb.aux[0].load(SeqCst)),
        usize::try_from(mb.aux[1].load(SeqCst)),
    ) else {
        return;
    };
    let mut armed = false;
    for _ in 0..1_000_000u32 {
        if SHUTTING_DOWN.load(SeqCst) == me {
            armed = true;
            break;
        }
        let _ = pv.vcpu_yield();
    }
    if !armed {
        return;
    }
    // Keep calling for a thousand calls and about a second of TSC time after the flag, so
    // that the boot vCPU's POWER.SHUTDOWN has certainly been made meanwhile; a conforming
    // host never returns from a call made after it.
    let t0 = pvabi_guest::gate::rdtsc();
    let mut n = 0u32;
    loop {
        let _ = pv.vcpu_yield();
        n += 1;
        let waited = pvabi_guest::gate::rdtsc().wrapping_sub(t0) >= AFTER_SHUTDOWN_TSC;
        if (n >= 1000 && waited) || n >= 50_000_000 {
            break;
        }
    }
    if addr == 0 || len == 0 {
        return;
    }
    // SAFETY: `aux[0]`/`aux[1]` named a buffer the boot vCPU took from the arena (never
    // freed) for this worker alone and never touches again; a unique slice over it is sound.
    let scratch = unsafe {
        core::slice::from_raw_parts_mut(core::ptr::with_exposed_provenance_mut::<u8>(addr), len)
    };
    let rec = Record {
        outcome: Outcome::FAILED,
        clauses: b"PWR-2",
        name: b"power::poweroff_with_code::after",
        detail: b"a second vCPU kept making calls that returned for 2^32 TSC ticks after the boot vCPU called POWER.SHUTDOWN",
    };
    let _ = pv.harness_report(&rec, scratch);
}

fn poweroff_with_code(c: &mut Ctx<'_>) {
    let pv = c.pv;
    let mut worker = None;
    if pv.info().vcpu_count >= 2 {
        if let Some(v) = stopped_vcpu(c) {
            let scratch = c.buf(ReportHeader::MAX_RECORD as usize, 8);
            if let (Some(s), Some(w)) = (scratch, start_worker(c, v, Some(calls_after_shutdown))) {
                w.mb.aux[0].store(s.as_mut_ptr() as usize as u64, SeqCst);
                w.mb.aux[1].store(s.len() as u64, SeqCst);
                let seq = w.post_kick(c, OP_CUSTOM);
                let up = spin_wait(c, || w.mb.executing.load(SeqCst) == seq);
                c.check(up, format_args!("the second vCPU did not start its calls"));
                worker = Some(w);
            }
        }
    }
    if worker.is_none() {
        c.skip(format_args!(
            "PWR-2 needs a second vCPU that keeps calling; only PWR-1 is checked"
        ));
    }
    c.report_before_end();
    if let Some(w) = worker {
        SHUTTING_DOWN.store(w.mb as *const Mailbox as usize as u64, SeqCst);
    }
    pv.power_off(POWEROFF_CODE);
}

fn reboot(c: &mut Ctx<'_>) {
    // Before the end: an unknown reason is refused and returns (PWR-1), so the reboot below
    // is the first shutdown this guest makes.
    let r = c.raw(call::POWER_SHUTDOWN, [3, 0, 0, 0, 0, 0]);
    expect_st(c, r, Status::INVALID_PARAM, "POWER.SHUTDOWN with reason 3");
    c.report_before_end();
    c.pv.reboot();
}

fn crash_report(c: &mut Ctx<'_>) {
    let pv = c.pv;
    if !pv.info().features.contains(Features::CRASH_BUFFER) {
        c.skip(format_args!(
            "the host does not set the CRASH_BUFFER feature"
        ));
        c.report_before_end();
        pv.shutdown(ShutdownReason::CRASH, CRASH_CODE);
        return;
    }
    let (Some(a), Some(b)) = (
        c.alloc(CrashAreaShared::<64>::new()),
        c.alloc(CrashAreaShared::<64>::new()),
    ) else {
        return;
    };
    let (a, b): (&'static CrashAreaShared<64>, &'static CrashAreaShared<64>) = (a, b);
    // A complete but stale report in each: the host must read the buffer at the crash, from
    // the latest registration.
    let mut wa = CrashWriter::new(a);
    wa.push(b"stale report in the replaced buffer");
    wa.finish(1, 0);
    let mut wb = CrashWriter::new(b);
    wb.push(b"stale report written before registration");
    wb.finish(2, 0);
    c.expect_ok(pv.register_crash_area(a), "POWER.REGISTER_CRASH_BUFFER(A)");
    let gb = pv.translate().gpa_of_ref(b).unwrap_or(u64::MAX);
    let r = c.raw(
        call::POWER_REGISTER_CRASH_BUFFER,
        [gb, CrashHeader::SIZE as u64 + CRASH_ROOM, 0, 0, 0, 0],
    );
    expect_st(
        c,
        r,
        Status::SUCCESS,
        "POWER.REGISTER_CRASH_BUFFER(B) replacing A",
    );
    // The host never writes the buffers.
    let _ = pv.time_ns();
    c.check(
        b.magic.load(SeqCst) == CrashHeader::MAGIC
            && b.code.load(SeqCst) == 2
            && a.code.load(SeqCst) == 1,
        format_args!("the host wrote to a crash buffer"),
    );
    c.report_before_end();
    // The real report: 32 message bytes, of which the 24-byte room shows.
    let rip = crash_report as fn(&mut Ctx<'_>) as usize as u64;
    pv.crash(b, CRASH_CODE, rip, CRASH_MESSAGE);
}

fn bad_reason_then_poweroff(c: &mut Ctx<'_>) {
    for reason in [3, 0xFFFF_FFFF, 1 << 32, u64::MAX] {
        let r = c.raw(call::POWER_SHUTDOWN, [reason, 99, 0, 0, 0, 0]);
        expect_st(
            c,
            r,
            Status::INVALID_PARAM,
            "POWER.SHUTDOWN with an unknown reason",
        );
    }
    c.report_before_end();
    c.pv.power_off(AFTER_BAD_REASON_CODE);
}

fn crash_buffer_validation(c: &mut Ctx<'_>) {
    let pv = c.pv;
    let Some(buf) = c.buf(4096 + 64, 8) else {
        return;
    };
    let gpa = c.gpa(buf);
    if !pv.info().features.contains(Features::CRASH_BUFFER) {
        let r = c.raw(call::POWER_REGISTER_CRASH_BUFFER, [gpa, 64, 0, 0, 0, 0]);
        expect_st(
            c,
            r,
            Status::NOT_SUPPORTED,
            "POWER.REGISTER_CRASH_BUFFER without the CRASH_BUFFER feature",
        );
        return;
    }
    for len in [1, 8, 31, 4097, 1 << 32, u64::MAX] {
        let r = c.raw(call::POWER_REGISTER_CRASH_BUFFER, [gpa, len, 0, 0, 0, 0]);
        expect_st(
            c,
            r,
            Status::INVALID_PARAM,
            "POWER.REGISTER_CRASH_BUFFER with len in 1..32 or above 4096",
        );
    }
    let end = c.ram_end();
    for (a, len, what) in [
        (gpa + 4, 64, "misaligned by 4"),
        (gpa + 1, 64, "misaligned by 1"),
        ((end + 7) & !7, 64, "beyond guest RAM"),
        (
            end.saturating_sub(8) & !7,
            64,
            "straddling the end of guest RAM",
        ),
        (u64::MAX - 7, 64, "wrapping the address space"),
        (1 << 52, 4096, "far beyond guest RAM"),
    ] {
        let r = c.raw(call::POWER_REGISTER_CRASH_BUFFER, [a, len, 0, 0, 0, 0]);
        expect_st(c, r, Status::INVALID_ADDRESS, what);
    }
    for len in [32, 64, 4096] {
        let r = c.raw(call::POWER_REGISTER_CRASH_BUFFER, [gpa, len, 0, 0, 0, 0]);
        expect_st(
            c,
            r,
            Status::SUCCESS,
            "POWER.REGISTER_CRASH_BUFFER with a valid len",
        );
    }
    // len 0 unregisters, whatever the address; twice is fine.
    for a in [u64::MAX - 7, 0] {
        let r = c.raw(call::POWER_REGISTER_CRASH_BUFFER, [a, 0, 0, 0, 0, 0]);
        expect_st(
            c,
            r,
            Status::SUCCESS,
            "POWER.REGISTER_CRASH_BUFFER(any, 0) unregisters",
        );
    }
    c.check(
        buf.iter().all(|b| *b == 0),
        format_args!("the host wrote into a registered crash buffer"),
    );
}
