//! # The pvabi conformance suite
//!
//! Test cases that run **inside the guest**, one module per spec chapter, each citing the clause
//! ids it checks. Results go to the host as typed records through HARNESS.REPORT (spec
//! appendix A), never as console text. The same code runs in-process against the mock (a host
//! thread with the in-process gate) and as the bare-metal conformance image under KVM.
//!
//! ## Writing a case
//! A case is a [`Case`]: a name, the comma-separated clause ids it checks, and a function taking
//! the [`Ctx`]. The function makes calls and records each expectation with [`Ctx::check`],
//! [`Ctx::expect_ok`] or [`Ctx::expect_err`]; the first failed expectation's text becomes the
//! record's detail. A case that cannot run in this environment calls [`Ctx::skip`].
//!
//! A case that cites several clauses attributes its checks with [`Ctx::clause`]: a failed
//! check then fails only the clause it was attributed to, so a broken host is blamed for
//! exactly the clauses it breaks (the report gets one record per clause of such a case).
//!
//! Cases share one guest: a case MUST leave the host as it found it (close the ports it
//! allocated, remove the store nodes it wrote, abort its transactions, unregister what it
//! registered unless [`Shared`] owns it). Buffers come from [`Ctx::buf`] (guest RAM that the
//! host can address in every environment); they are never freed, so take what you need only.
#![no_std]

use core::fmt::{self, Write as _};

use pvabi::harness::Outcome;
use pvabi::{CallId, Features, Ret, ServiceId, Status};
use pvabi_guest::harness::Record;
use pvabi_guest::{GuestArena, Pvabi};

pub mod chapters;

/// A guest function as a vCPU entry or in-process callback: `f(arg, vcpu_id)`.
pub type GuestEntry = extern "C" fn(u64, u64);

/// What differs between the environments the suite runs in.
pub trait Platform: Sync {
    /// A short name of the environment for details (`in-process`, `ring0`, `pv-ring3`).
    fn name(&self) -> &'static str;
    /// GPA of the boot handoff this guest received (0 if none).
    fn boot_info_gpa(&self) -> u64;
    /// Whether the guest runs in-process (guest functions are host functions; no CPUID).
    fn in_process(&self) -> bool;
    /// The upcall vector this environment's IDT serves, when vector mode is usable here.
    fn upcall_vector(&self) -> Option<u8>;
    /// Whether callback-mode upcalls can be taken here.
    fn callback_upcalls(&self) -> bool;
    /// Per-vCPU set-up a secondary vCPU needs before it runs case code (bare metal, ring 0:
    /// load the IDT so vector upcalls can be taken). Called by [`vcpu_prologue`].
    fn vcpu_prologue_fn(&self) -> Option<fn()> {
        None
    }
}

static PROLOGUE: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// Set while a case runs when the platform's gate could not carry a call (see
/// [`gate_cannot_carry`]); holds the call id with bit 63 set.
static GATE_REFUSED: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Called by a platform whose only gate cannot carry `call` (the shared-ring gate of a
/// ring-only transport refuses the calls of `RING-6`): the running case is reported skipped,
/// naming the call, because what it checks cannot be reached on this platform.
pub fn gate_cannot_carry(call: CallId) {
    let _ = GATE_REFUSED.compare_exchange(
        0,
        (1 << 63) | u64::from(call.0),
        core::sync::atomic::Ordering::AcqRel,
        core::sync::atomic::Ordering::Acquire,
    );
}

/// The feature bit a service is offered behind, if any: a host that clears it may answer
/// `BASE.PROBE_SERVICE` with 0 for the service (`BASE-5`, `BASE-11`).
pub fn service_feature(svc: ServiceId) -> Option<Features> {
    match svc {
        ServiceId::GRANT => Some(Features::GRANT),
        ServiceId::MULTICALL => Some(Features::MULTICALL),
        ServiceId::HARNESS => Some(Features::HARNESS),
        _ => None,
    }
}

/// Every guest function started with VCPU.START MUST call this first: it runs the
/// environment's per-vCPU set-up (see [`Platform::vcpu_prologue_fn`]).
pub fn vcpu_prologue() {
    let p = PROLOGUE.load(core::sync::atomic::Ordering::Acquire);
    if p != 0 {
        // SAFETY: `PROLOGUE` only ever holds 0 or a value stored by `set_prologue` from a
        // `fn()` pointer, so a nonzero value is a valid `fn()`.
        let f = unsafe { core::mem::transmute::<usize, fn()>(p) };
        f();
    }
}

fn set_prologue(platform: &dyn Platform) {
    let v = platform.vcpu_prologue_fn().map_or(0, |f| f as usize);
    PROLOGUE.store(v, core::sync::atomic::Ordering::Release);
}

/// One conformance case.
#[derive(Clone, Copy)]
pub struct Case {
    /// `chapter::what_is_checked`.
    pub name: &'static str,
    /// Comma-separated clause ids the case checks, e.g. `"BASE-1,BASE-2"`.
    pub clauses: &'static str,
    /// The case body.
    pub run: fn(&mut Ctx<'_>),
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Case")
            .field("name", &self.name)
            .field("clauses", &self.clauses)
            .finish()
    }
}

/// How a terminal case expects the guest to end (checked by the host-side runner).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpectedEnd {
    /// The POWER.SHUTDOWN reason.
    pub reason: pvabi::power::ShutdownReason,
    /// The shutdown code.
    pub code: u64,
    /// For CRASH: the crash report the host must have read from the registered buffer
    /// (code and message), or `None` when no report is expected.
    pub crash: Option<(u64, &'static str)>,
}

/// A case that ends the guest (POWER.SHUTDOWN and friends). The runner gives each terminal
/// case a fresh guest of its own: the case runs (its checks before the end are reported as a
/// normal record named `<name>::before`), then it must end the guest as `expect` says; the
/// host-side runner compares the end it observed with `expect` and records the verdict for
/// `clauses` under `name`.
#[derive(Clone, Copy, Debug)]
pub struct TerminalCase {
    /// `chapter::what_is_checked`.
    pub name: &'static str,
    /// Clause ids the observed end checks.
    pub clauses: &'static str,
    /// The body: ends the guest (returns only if the host failed to end it).
    pub run: fn(&mut Ctx<'_>),
    /// How the guest must end.
    pub expect: ExpectedEnd,
}

/// Bytes of detail text a record carries at most.
pub const DETAIL_CAP: usize = 1024;

/// State shared by all cases: things registered once for the whole run.
#[derive(Debug, Default)]
pub struct Shared {
    /// Set once a case registered the event page (cases that need events call
    /// `store::events`).
    pub events: Option<pvabi_guest::event::EventChannels>,
    /// The end of the highest RAM entry of MEMORY.GET_MAP, for a guest without a boot info.
    pub map_ram_end: u64,
}

/// The context a case runs in.
pub struct Ctx<'a> {
    /// The discovered pvabi handle.
    pub pv: Pvabi,
    /// The environment.
    pub platform: &'a dyn Platform,
    /// State shared between cases.
    pub shared: &'a mut Shared,
    arena: &'a GuestArena,
    detail: [u8; DETAIL_CAP],
    detail_len: usize,
    failed: bool,
    skipped: bool,
    checks: u32,
    terminal: Option<(&'static str, &'static mut [u8])>,
    /// The clause the following checks are attributed to (see [`Ctx::clause`]).
    current: Option<&'static str>,
    /// Clauses a failed, attributed check blamed.
    blamed: [Option<&'static str>; MAX_BLAMED],
    /// The clause ids the running case cites.
    case_clauses: &'static str,
}

/// Most distinct clauses one case can blame separately.
const MAX_BLAMED: usize = 16;

struct DetailWriter<'b> {
    buf: &'b mut [u8; DETAIL_CAP],
    len: &'b mut usize,
}

impl fmt::Write for DetailWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if let Some(slot) = self.buf.get_mut(*self.len) {
                *slot = b;
                *self.len += 1;
            }
        }
        Ok(())
    }
}

impl<'a> Ctx<'a> {
    /// A context for one case.
    pub fn new(
        pv: Pvabi,
        platform: &'a dyn Platform,
        shared: &'a mut Shared,
        arena: &'a GuestArena,
    ) -> Self {
        Self {
            pv,
            platform,
            shared,
            arena,
            detail: [0; DETAIL_CAP],
            detail_len: 0,
            failed: false,
            skipped: false,
            checks: 0,
            terminal: None,
            current: None,
            blamed: [None; MAX_BLAMED],
            case_clauses: "",
        }
    }

    /// Records a failed expectation with its text. The failure is attributed to the current
    /// clause ([`Ctx::clause`]); with none current, to the clause the text starts with when
    /// that is one the case cites (`"STORE-11 a write ..."`); otherwise to every cited clause.
    fn fail_note(&mut self, args: fmt::Arguments<'_>) {
        let start = if self.detail_len > 0 {
            self.detail_len + 2
        } else {
            0
        };
        self.note(args);
        if self.current.is_none() {
            let text = self.detail.get(start..self.detail_len).unwrap_or(&[]);
            let word_end = text
                .iter()
                .position(|b| !(b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'-'))
                .unwrap_or(text.len());
            let word = text.get(..word_end).unwrap_or(&[]);
            let cited = self
                .case_clauses
                .split(',')
                .map(str::trim)
                .find(|id| !id.is_empty() && id.as_bytes() == word);
            if let Some(id) = cited {
                self.current = Some(id);
                self.fail();
                self.current = None;
                return;
            }
        }
        self.fail();
    }

    /// Attributes the checks that follow to clause `id` (one of the case's cited clauses),
    /// until the next `clause` call or [`Ctx::all_clauses`]. When a case cites several
    /// clauses, a failed attributed check fails only its clause; a failed check made while no
    /// clause is current fails every clause the case cites (the default).
    pub fn clause(&mut self, id: &'static str) {
        self.current = Some(id);
    }

    /// Attributes the checks that follow to every clause the case cites again.
    pub fn all_clauses(&mut self) {
        self.current = None;
    }

    fn fail(&mut self) {
        self.failed = true;
        match self.current {
            None => self.blame_all(),
            Some(id) => {
                if self.blamed.contains(&Some(id)) {
                    return;
                }
                match self.blamed.iter_mut().find(|b| b.is_none()) {
                    Some(slot) => *slot = Some(id),
                    None => self.blame_all(),
                }
            }
        }
    }

    fn blame_all(&mut self) {
        // An empty id blames every cited clause.
        if let Some(first) = self.blamed.first_mut() {
            *first = Some("");
        }
    }

    fn blames_all(&self) -> bool {
        self.blamed.contains(&Some(""))
    }

    fn note(&mut self, args: fmt::Arguments<'_>) {
        if self.detail_len > 0 {
            let _ = DetailWriter {
                buf: &mut self.detail,
                len: &mut self.detail_len,
            }
            .write_str("; ");
        }
        let _ = DetailWriter {
            buf: &mut self.detail,
            len: &mut self.detail_len,
        }
        .write_fmt(args);
    }

    /// Records an expectation; returns `cond`. The first failures' texts become the detail.
    pub fn check(&mut self, cond: bool, what: fmt::Arguments<'_>) -> bool {
        self.checks += 1;
        if !cond {
            self.fail_note(what);
        }
        cond
    }

    /// Expects success; returns the value, or records a failure naming `what`.
    pub fn expect_ok<T>(&mut self, r: Result<T, Status>, what: &str) -> Option<T> {
        self.checks += 1;
        match r {
            Ok(v) => Some(v),
            Err(s) => {
                self.fail_note(format_args!("{what}: expected SUCCESS, got {s:?}"));
                None
            }
        }
    }

    /// Expects the error `want`; records a failure naming `what` otherwise.
    pub fn expect_err<T: fmt::Debug>(
        &mut self,
        r: Result<T, Status>,
        want: Status,
        what: &str,
    ) -> bool {
        self.checks += 1;
        match r {
            Err(s) if s == want => true,
            other => {
                self.fail_note(format_args!("{what}: expected {want:?}, got {other:?}"));
                false
            }
        }
    }

    /// Expects a raw return with status `want` (SUCCESS included).
    pub fn expect_status(&mut self, ret: Ret, want: Status, what: &str) -> bool {
        self.checks += 1;
        if ret.status == want {
            true
        } else {
            self.fail_note(format_args!(
                "{what}: expected {want:?}, got {:?} (value {:#x})",
                ret.status, ret.value
            ));
            false
        }
    }

    /// Marks the case skipped with a reason (unless it already failed).
    pub fn skip(&mut self, why: fmt::Arguments<'_>) {
        self.skipped = true;
        self.note(why);
    }

    /// Whether an expectation failed so far.
    pub fn has_failed(&self) -> bool {
        self.failed
    }

    /// `len` zeroed bytes of guest RAM aligned to `align`, addressable by the host in every
    /// environment. `None` (and a recorded failure) when the suite's arena is exhausted.
    pub fn buf(&mut self, len: usize, align: usize) -> Option<&'static mut [u8]> {
        let b = self.arena.alloc_bytes(len, align);
        if b.is_none() {
            self.failed = true;
            self.blame_all();
            self.note(format_args!("suite arena exhausted ({len} bytes wanted)"));
        }
        b
    }

    /// Moves `value` into guest RAM (for shared areas such as pages of atomics).
    pub fn alloc<T>(&mut self, value: T) -> Option<&'static mut T> {
        let b = self.arena.alloc(value);
        if b.is_none() {
            self.failed = true;
            self.blame_all();
            self.note(format_args!("suite arena exhausted"));
        }
        b
    }

    /// The guest-physical address of a buffer from [`Ctx::buf`].
    pub fn gpa(&self, b: &[u8]) -> u64 {
        self.pv.translate().gpa_of_slice(b).unwrap_or(u64::MAX)
    }

    /// A raw call with arbitrary registers, for hostile values (addresses outside RAM,
    /// overflowing lengths, unknown ids). Only pass addresses that are outside guest RAM or
    /// inside buffers this case owns.
    pub fn raw(&self, id: CallId, args: [u64; 6]) -> Ret {
        // SAFETY: a conformance case passes only addresses outside guest RAM (the host must
        // refuse them without touching memory) or inside buffers from `Ctx::buf`, which the
        // case owns and holds no Rust reference into across the call other than through
        // byte slices it re-reads after the call; a non-conforming host writing elsewhere is
        // exactly what the suite exists to catch and is reported, not relied upon.
        unsafe { self.pv.call_unchecked(id, args) }
    }

    /// The total guest RAM size in bytes (for out-of-RAM addresses): the boot info's, or for a
    /// guest without one (a transport with no boot handoff) the end of the highest RAM entry
    /// of MEMORY.GET_MAP.
    pub fn ram_end(&self) -> u64 {
        self.pv
            .info()
            .boot_info
            .map_or(self.shared.map_ram_end, |b| b.mem_size)
    }

    /// In a terminal case: reports the checks made so far as the record `<name>::before`
    /// (citing the case's clauses), right before the case ends the guest. Does nothing in an
    /// ordinary case.
    pub fn report_before_end(&mut self) {
        let outcome = self.outcome();
        let Some((name, scratch)) = self.terminal.take() else {
            return;
        };
        let mut name_buf = [0u8; 128];
        let mut n = 0usize;
        for b in name.bytes().chain(b"::before".iter().copied()) {
            if let Some(slot) = name_buf.get_mut(n) {
                *slot = b;
                n += 1;
            }
        }
        let clauses = terminal_cases()
            .find(|c| c.name == name)
            .map_or("", |c| c.clauses);
        let rec = Record {
            outcome,
            clauses: clauses.as_bytes(),
            name: name_buf.get(..n).unwrap_or(&[]),
            detail: self.detail.get(..self.detail_len).unwrap_or(&[]),
        };
        let _ = self.pv.harness_report(&rec, scratch);
    }

    fn outcome(&self) -> Outcome {
        if self.failed {
            Outcome::FAILED
        } else if self.skipped {
            Outcome::SKIPPED
        } else if self.checks == 0 {
            Outcome::FAILED
        } else {
            Outcome::PASSED
        }
    }
}

/// Every guest function the cases pass as a vCPU entry or callback. An in-process host must
/// accept these addresses (the mock: `Mock::register_fn` each of them before the run).
pub fn guest_functions() -> impl Iterator<Item = GuestEntry> {
    chapters::FUNCTIONS.iter().flat_map(|f| f.iter().copied())
}

/// Every terminal case (see [`TerminalCase`]).
pub fn terminal_cases() -> impl Iterator<Item = &'static TerminalCase> {
    chapters::TERMINAL.iter().flat_map(|t| t.iter())
}

/// Runs the terminal case `name` in this (fresh) guest: reports `<name>::before` with the
/// checks made before the end, then lets the case end the guest. Returns only when the case
/// is unknown or the host did not end the guest.
pub fn run_terminal(pv: Pvabi, platform: &dyn Platform, arena: &GuestArena, name: &str) {
    let Some(case) = terminal_cases().find(|c| c.name == name) else {
        return;
    };
    let Some(scratch) = arena.alloc_bytes(pvabi::harness::ReportHeader::MAX_RECORD as usize, 8)
    else {
        return;
    };
    set_prologue(platform);
    let mut shared = Shared {
        map_ram_end: map_ram_end(pv, arena),
        ..Shared::default()
    };
    let mut ctx = Ctx::new(pv, platform, &mut shared, arena);
    // The record is sent by `Ctx::report_before_end`, which the case calls right before it
    // ends the guest; if it never does, the runner notices the missing record.
    ctx.terminal = Some((case.name, scratch));
    (case.run)(&mut ctx);
}

/// Every case of the suite, chapter by chapter.
pub fn all_cases() -> impl Iterator<Item = &'static Case> {
    chapters::CHAPTERS
        .iter()
        .flat_map(|(_, cases)| cases.iter())
}

/// What [`run_suite`] counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Cases passed.
    pub passed: u32,
    /// Cases failed.
    pub failed: u32,
    /// Cases skipped.
    pub skipped: u32,
    /// Records the host refused (HARNESS.REPORT failed).
    pub unreported: u32,
}

/// Reports one case: a single record citing all its clauses, or, when its failures were
/// attributed to some of its clauses only ([`Ctx::clause`]), one record per cited clause
/// (named `<case>@<clause>`), failed for the blamed clauses and passed for the others.
/// Returns how many records the host refused.
fn report_case(ctx: &Ctx<'_>, case: &Case, outcome: Outcome, scratch: &mut [u8]) -> u32 {
    let detail = ctx.detail.get(..ctx.detail_len).unwrap_or(&[]);
    let split =
        outcome == Outcome::FAILED && !ctx.blames_all() && ctx.blamed.iter().any(Option::is_some);
    if !split {
        let rec = Record {
            outcome,
            clauses: case.clauses.as_bytes(),
            name: case.name.as_bytes(),
            detail,
        };
        return u32::from(ctx.pv.harness_report(&rec, scratch).is_err());
    }
    let mut refused = 0;
    for id in case
        .clauses
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
    {
        let blamed = ctx.blamed.contains(&Some(id));
        let mut name = [0u8; 160];
        let mut n = 0usize;
        for b in case
            .name
            .bytes()
            .chain(core::iter::once(b'@'))
            .chain(id.bytes())
        {
            if let Some(slot) = name.get_mut(n) {
                *slot = b;
                n += 1;
            }
        }
        let rec = Record {
            outcome: if blamed {
                Outcome::FAILED
            } else {
                Outcome::PASSED
            },
            clauses: id.as_bytes(),
            name: name.get(..n).unwrap_or(&[]),
            detail: if blamed { detail } else { b"" },
        };
        refused += u32::from(ctx.pv.harness_report(&rec, scratch).is_err());
    }
    refused
}

/// The end of the highest RAM entry of MEMORY.GET_MAP (0 when the map cannot be read).
fn map_ram_end(pv: Pvabi, arena: &GuestArena) -> u64 {
    let Some(buf) = arena.alloc([pvabi::memory::MemMapEntry::default(); 64]) else {
        return 0;
    };
    pv.memory_map(buf).map_or(0, |m| {
        m.entries
            .iter()
            .filter(|e| e.kind == pvabi::memory::MemKind::RAM.0)
            .map(|e| e.base.saturating_add(e.length))
            .max()
            .unwrap_or(0)
    })
}

/// Runs every case (or those whose name starts with `filter`), reports each one through
/// HARNESS.REPORT, then reports the END record.
pub fn run_suite(
    pv: Pvabi,
    platform: &dyn Platform,
    arena: &GuestArena,
    filter: Option<&str>,
) -> RunSummary {
    let mut sum = RunSummary::default();
    let Some(scratch) = arena.alloc_bytes(pvabi::harness::ReportHeader::MAX_RECORD as usize, 8)
    else {
        return sum;
    };
    set_prologue(platform);
    let mut shared = Shared {
        map_ram_end: map_ram_end(pv, arena),
        ..Shared::default()
    };
    for case in all_cases().filter(|c| filter.is_none_or(|f| c.name.starts_with(f))) {
        GATE_REFUSED.store(0, core::sync::atomic::Ordering::Release);
        let mut ctx = Ctx::new(pv, platform, &mut shared, arena);
        ctx.case_clauses = case.clauses;
        (case.run)(&mut ctx);
        let refused = GATE_REFUSED.swap(0, core::sync::atomic::Ordering::AcqRel);
        let outcome = if refused != 0 {
            let id = CallId(refused as u32);
            let name = id.info().map_or("an unknown call", |i| i.name);
            // What the case saw after the refusal is not about the host: only the reason stays.
            ctx.detail_len = 0;
            ctx.note(format_args!(
                "the case needs {name}, which this platform's only gate cannot carry (RING-6)"
            ));
            Outcome::SKIPPED
        } else {
            ctx.outcome()
        };
        if ctx.checks == 0 && !ctx.skipped {
            ctx.note(format_args!("case made no checks"));
        }
        match outcome {
            Outcome::PASSED => sum.passed += 1,
            Outcome::SKIPPED => sum.skipped += 1,
            _ => sum.failed += 1,
        }
        sum.unreported += report_case(&ctx, case, outcome, scratch);
    }
    let end = Record {
        outcome: Outcome::END,
        clauses: b"",
        name: b"",
        detail: b"",
    };
    if pv.harness_report(&end, scratch).is_err() {
        sum.unreported += 1;
    }
    sum
}
