//! Isolation test guest for pvabi-kvm: two VMs of one process run this image at the same time.
//!
//! The command line in the BootInfo names the role:
//! * `A <barrier_bytes>`: keeps secrets of every kind (store nodes, guest- and host-written,
//!   an open transaction, watches with a queued event, event ports in known states, a grant
//!   table granting two pages, a ring, a clock page, released balloon pages, queued console
//!   input, patterns in its RAM), starts vCPU 1 which keeps using and checking A's state,
//!   writes `ready` to the console and then `barrier_bytes` of `=`. The test reads A's
//!   console through a pipe and stops reading after `ready`, so A stops in a console write
//!   until the test has run B to its end. Then A checks that every piece of its state is
//!   exactly what it left.
//! * `B`: runs while A waits, with the same image (so every guest-physical address A uses is
//!   also one of B's) and knows A's identifiers by construction (ports are allocated lowest
//!   first, `EVT-3`; the other ids are small numbers B tries all of). It tries every call
//!   path to A's state and checks that each attempt gets the status the specification names,
//!   and that where B's own state has the same numbers and addresses, B only ever sees its
//!   own.
//!
//! Every check is a HARNESS.REPORT record (outcome PASSED or FAILED, the clause ids, the
//! check's name, and for a failure what was expected and what came back), followed by an END
//! record; both roles power off with the number of failed checks.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};

use pvabi::call::{self, CallId};
use pvabi::gate::DEFAULT_IOPORT;
use pvabi::BootInfo;
use pvabi_image_rt as _;

// ---- layout, the same in both VMs (each VM has its own RAM) --------------------------------

/// Event page.
const EVPAGE: u64 = 0x40_0000;
/// Grant table (A: 16 entries, B: 8).
const GNT: u64 = 0x40_1000;
/// A: granted secret page (ref 5). B: B's own data, granted by B's refs 2 and 5.
const SECRET: u64 = 0x40_2000;
/// Shared ring.
const RING: u64 = 0x40_3000;
/// Clock page of vCPU 0.
const CLOCKPG: u64 = 0x40_4000;
/// A: a page of A's data. B: released and reclaimed (zeroed) by B.
const KEEP: u64 = 0x40_5000;
/// A: four pages released to the balloon.
const RELEASED: u64 = 0x41_0000;
/// Scratch of vCPU 0 (paths at +0, values at +0x400, results at +0x1000, 4 KiB).
const BUF: u64 = 0x50_0000;
/// Scratch of A's vCPU 1.
const BUF1: u64 = 0x51_0000;
/// HARNESS.REPORT record under construction.
const REC: u64 = 0x52_0000;
/// A console line under construction.
const LINE: u64 = 0x52_2000;
/// Multicall array.
const MC: u64 = 0x53_0000;
/// One page of `=` (A's barrier).
const BARRIER: u64 = 0x54_0000;
/// Top of A's vCPU 1 stack (64 KiB below it are free).
const STACK1_TOP: u64 = 0x60_0000;
/// A granted page (A's ref 12, read-only) in RAM only A has: A has 32 MiB, B 16 MiB.
const HIGH: u64 = 0x180_0000;

/// A's ports, allocated in this order (so numbered 1..=6, `EVT-3`).
const P_CANARY: u64 = 1; // unmasked, never raised by A
const P_MASKED: u64 = 2; // masked, never raised by A
const P_QUEUED: u64 = 3; // A's watch on `queued`: raised once by A's own write
const P_LIVE: u64 = 4; // bound to vCPU 1, masked, raised by vCPU 1 all the time
const P_SECRET_WATCH: u64 = 5; // A's watch on `secret`: raised only by A's commit at the end
const P_ONLY_A: u64 = 6; // B never allocates this number
const A_PORTS: u64 = 6;
/// Watch and transaction ids B tries before it has any of its own: A's are among them.
const FOREIGN_IDS: u64 = 4;

/// Page patterns (8-byte words repeated).
const A_SECRET: &[u8; 8] = b"A-SECRET";
const A_HIGH: &[u8; 8] = b"A-HIGH-S";
const A_KEEP: &[u8; 8] = b"A-KEEP-S";
const B_OWN: &[u8; 8] = b"b-own-pg";

/// A's store nodes and values.
const A_NODES: [(&[u8], &[u8]); 2] = [
    (b"secret/a", b"A-SECRET-VALUE-a"),
    (b"secret/b", b"A-SECRET-VALUE-b"),
];
const A_HOST_NONE: &[u8] = b"A-SECRET-HOST-NONE";
const A_HOST_RO: &[u8] = b"A-SECRET-HOST-RO";
const A_TXN_VALUE: &[u8] = b"A-SECRET-TXN";
const A_INPUT: &[u8] = b"A-SECRET-INPUT";

/// Every path of A's store, as B guesses them.
const A_PATHS: [&[u8]; 10] = [
    b"secret/a",
    b"secret/b",
    b"secret/hostnone",
    b"secret/hostro",
    b"secret/txn",
    b"secret",
    b"queued",
    b"queued/x",
    b"live",
    b"live/counter",
];

/// Paths that try to leave the guest's subtree or are otherwise malformed (`STORE-1`).
const ESCAPES: [&[u8]; 16] = [
    b"../secret/a",
    b"/secret/a",
    b"..",
    b".",
    b"/",
    b"secret/../secret/a",
    b"./secret",
    b"secret/./a",
    b"secret//a",
    b"secret/a/",
    b"~/secret",
    b"\\secret\\a",
    b"secret/*",
    b"secret/a\0",
    b"@A/secret",
    b"../../local/domain/0/secret/a",
];

// ---- statuses -------------------------------------------------------------------------------

const OK: i64 = 0;
const INVALID_PARAM: i64 = pvabi::Status::INVALID_PARAM.0 as i64;
const INVALID_ADDRESS: i64 = pvabi::Status::INVALID_ADDRESS.0 as i64;
const DENIED: i64 = pvabi::Status::DENIED.0 as i64;
const NO_SPACE: i64 = pvabi::Status::NO_SPACE.0 as i64;
const ALREADY: i64 = pvabi::Status::ALREADY.0 as i64;
const NOT_FOUND: i64 = pvabi::Status::NOT_FOUND.0 as i64;
const BAD_STATE: i64 = pvabi::Status::BAD_STATE.0 as i64;

const READ: u64 = pvabi::harness::GRANT_ACCESS_READ;

// ---- the gate and guest memory --------------------------------------------------------------

/// One gate call; returns (status, value).
#[inline(never)]
fn gate(id: CallId, a0: u64, a1: u64, a2: u64, a3: u64, a4: u64) -> (i64, u64) {
    let status: u64;
    let value: u64;
    // SAFETY: `out dx, eax` to the gate port is the pvabi call instruction; the host changes
    // only RAX and RDI (declared) and writes guest memory only into buffers this guest names,
    // all of them scratch areas of this image's fixed layout.
    unsafe {
        core::arch::asm!(
            "out dx, eax",
            inout("rax") u64::from(id.0) => status,
            inout("rdi") a0 => value,
            in("rsi") a1,
            in("r8") a2,
            in("r9") a3,
            in("r10") a4,
            in("r11") 0u64,
            in("dx") DEFAULT_IOPORT,
            options(nostack)
        );
    }
    (status as i64, value)
}

fn g0(id: CallId) -> (i64, u64) {
    gate(id, 0, 0, 0, 0, 0)
}

fn g1(id: CallId, a0: u64) -> (i64, u64) {
    gate(id, a0, 0, 0, 0, 0)
}

fn g2(id: CallId, a0: u64, a1: u64) -> (i64, u64) {
    gate(id, a0, a1, 0, 0, 0)
}

fn g3(id: CallId, a0: u64, a1: u64, a2: u64) -> (i64, u64) {
    gate(id, a0, a1, a2, 0, 0)
}

// The accessors below touch guest-physical addresses of the fixed layout above: all of them
// are RAM of this VM (identity mapped, user-accessible in PV ring 3), used by one vCPU at a time
// except the event page and the counters, which go through atomics.

fn wr8(gpa: u64, v: u8) {
    // SAFETY: see above: an identity-mapped RAM address of this image's layout.
    unsafe { core::ptr::write_volatile(gpa as *mut u8, v) }
}

fn rd8(gpa: u64) -> u8 {
    // SAFETY: as `wr8`.
    unsafe { core::ptr::read_volatile(gpa as *const u8) }
}

fn wr16(gpa: u64, v: u16) {
    // SAFETY: as `wr8`; callers pass 2-byte aligned addresses.
    unsafe { core::ptr::write_volatile(gpa as *mut u16, v) }
}

fn wr32(gpa: u64, v: u32) {
    // SAFETY: as `wr8`; callers pass 4-byte aligned addresses.
    unsafe { core::ptr::write_volatile(gpa as *mut u32, v) }
}

fn rd32(gpa: u64) -> u32 {
    // SAFETY: as `wr32`.
    unsafe { core::ptr::read_volatile(gpa as *const u32) }
}

fn wr64(gpa: u64, v: u64) {
    // SAFETY: as `wr8`; callers pass 8-byte aligned addresses.
    unsafe { core::ptr::write_volatile(gpa as *mut u64, v) }
}

fn rd64(gpa: u64) -> u64 {
    // SAFETY: as `wr64`.
    unsafe { core::ptr::read_volatile(gpa as *const u64) }
}

/// The event-page word at `gpa`, shared with the host, as an atomic.
fn ev_word(gpa: u64) -> &'static AtomicU64 {
    // SAFETY: `gpa` is an 8-byte aligned word of this VM's event page (fixed layout, RAM,
    // identity mapped, never freed); the host changes it only with atomic operations
    // (`EVT-18`), so every access to it is atomic.
    unsafe { &*(gpa as *const AtomicU64) }
}

/// Copies `b` to `gpa`; returns `(gpa, len)`.
fn put(gpa: u64, b: &[u8]) -> (u64, u64) {
    for (i, &x) in b.iter().enumerate() {
        wr8(gpa + i as u64, x);
    }
    (gpa, b.len() as u64)
}

fn mem_eq(gpa: u64, want: &[u8]) -> bool {
    want.iter()
        .enumerate()
        .all(|(i, &x)| rd8(gpa + i as u64) == x)
}

/// Whether the `len` bytes at `gpa` contain `needle`.
fn mem_contains(gpa: u64, len: u64, needle: &[u8]) -> bool {
    let n = needle.len() as u64;
    if n == 0 || n > len {
        return n == 0;
    }
    (0..=len - n).any(|i| rd8(gpa + i) == needle[0] && mem_eq(gpa + i, needle))
}

fn fill_page(gpa: u64, tag: &[u8; 8]) {
    let w = u64::from_le_bytes(*tag);
    for i in 0..512 {
        wr64(gpa + i * 8, w);
    }
}

/// The first word of the page at `gpa` that differs from `tag`, or None.
fn page_mismatch(gpa: u64, tag: &[u8; 8]) -> Option<u64> {
    let w = u64::from_le_bytes(*tag);
    (0..512).find(|i| rd64(gpa + i * 8) != w)
}

fn zero(gpa: u64, len: u64) {
    for i in 0..len / 8 {
        wr64(gpa + i * 8, 0);
    }
}

fn now() -> u64 {
    g0(call::CLOCK_GET_TIME).1
}

// ---- text ----------------------------------------------------------------------------------

/// Text under construction at a guest address.
struct Text {
    start: u64,
    at: u64,
}

impl Text {
    fn at(gpa: u64) -> Self {
        Self {
            start: gpa,
            at: gpa,
        }
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        for &x in b {
            wr8(self.at, x);
            self.at += 1;
        }
        self
    }
    fn dec(&mut self, v: u64) -> &mut Self {
        let mut div = 1u64;
        while v / div >= 10 {
            div *= 10;
        }
        loop {
            wr8(self.at, b'0' + ((v / div) % 10) as u8);
            self.at += 1;
            if div == 1 {
                return self;
            }
            div /= 10;
        }
    }
    fn sdec(&mut self, v: i64) -> &mut Self {
        if v < 0 {
            self.bytes(b"-").dec(v.unsigned_abs())
        } else {
            self.dec(v as u64)
        }
    }
    fn len(&self) -> u64 {
        self.at - self.start
    }
}

fn write(b: &[u8]) {
    let (g, l) = put(LINE, b);
    g2(call::CONSOLE_WRITE, g, l);
}

/// Writes `name=value` on a line of its own.
fn kv(name: &[u8], v: u64) {
    let mut t = Text::at(LINE);
    t.bytes(b"\n").bytes(name).bytes(b"=").dec(v).bytes(b"\n");
    g2(call::CONSOLE_WRITE, LINE, t.len());
}

fn poweroff(code: u64) -> ! {
    g2(call::POWER_SHUTDOWN, 0, code);
    loop {
        core::hint::spin_loop();
    }
}

// ---- checks --------------------------------------------------------------------------------

/// What a failed check saw, for the detail text of its record.
#[derive(Clone, Copy)]
enum Seen {
    /// A call returned `status` (and `value`) instead of status `want`.
    Status { want: i64, status: i64, value: u64 },
    /// A call returned (`status`, `value`) instead of (SUCCESS, `want`).
    Value { want: u64, status: i64, value: u64 },
    /// A condition did not hold; `observed` is the value it was about.
    Observed(u64),
}

/// Counts checks and reports each as a HARNESS record.
struct Checker {
    role: &'static [u8],
    /// Clause ids the next checks cite.
    clauses: &'static [u8],
    failed: u64,
    total: u64,
}

impl Checker {
    fn new(role: &'static [u8]) -> Self {
        Self {
            role,
            clauses: b"",
            failed: 0,
            total: 0,
        }
    }

    /// Sets the clause ids (comma-separated) the following checks cite.
    fn cite(&mut self, clauses: &'static [u8]) {
        self.clauses = clauses;
    }

    /// Reports one check as `<role><name>[#arg]`; a failure's detail says what was seen.
    fn check(&mut self, name: &[u8], arg: Option<u64>, ok: bool, seen: Seen) {
        self.total += 1;
        if !ok {
            self.failed += 1;
        }
        let mut t = Text::at(REC + 24);
        t.bytes(self.clauses);
        let clauses_len = t.len();
        t.bytes(self.role).bytes(name);
        if let Some(a) = arg {
            t.bytes(b"#").dec(a);
        }
        let name_len = t.len() - clauses_len;
        if !ok {
            match seen {
                Seen::Status {
                    want,
                    status,
                    value,
                } => {
                    t.bytes(b"expected status ").sdec(want);
                    t.bytes(b", got ").sdec(status).bytes(b" value ").dec(value);
                }
                Seen::Value {
                    want,
                    status,
                    value,
                } => {
                    t.bytes(b"expected success with value ").dec(want);
                    t.bytes(b", got status ")
                        .sdec(status)
                        .bytes(b" value ")
                        .dec(value);
                }
                Seen::Observed(v) => {
                    t.bytes(b"does not hold; observed ").dec(v);
                }
            }
        }
        let detail_len = t.len() - clauses_len - name_len;
        let outcome = if ok {
            pvabi::harness::Outcome::PASSED
        } else {
            pvabi::harness::Outcome::FAILED
        };
        wr32(REC, pvabi::harness::ReportHeader::MAGIC);
        wr32(REC + 4, outcome.0);
        wr32(REC + 8, clauses_len as u32);
        wr32(REC + 12, name_len as u32);
        wr32(REC + 16, detail_len as u32);
        wr32(REC + 20, 0);
        let (s, _) = g2(call::HARNESS_REPORT, REC, 24 + t.len());
        if s != OK {
            // The record did not arrive: the test misses its name; say why here.
            kv(b"report_failed_status", s as u64);
            self.failed += 1;
        }
    }

    /// The call's status is `want`.
    fn status(&mut self, name: &[u8], want: i64, r: (i64, u64)) {
        self.status_of(name, None, want, r);
    }

    /// As [`Checker::status`], for the case `arg` of a series.
    fn status_at(&mut self, name: &[u8], arg: u64, want: i64, r: (i64, u64)) {
        self.status_of(name, Some(arg), want, r);
    }

    fn status_of(&mut self, name: &[u8], arg: Option<u64>, want: i64, r: (i64, u64)) {
        let seen = Seen::Status {
            want,
            status: r.0,
            value: r.1,
        };
        self.check(name, arg, r.0 == want, seen);
    }

    /// The call succeeded with value `want`.
    fn value(&mut self, name: &[u8], want: u64, r: (i64, u64)) {
        self.value_of(name, None, want, r);
    }

    /// As [`Checker::value`], for the case `arg` of a series.
    fn value_at(&mut self, name: &[u8], arg: u64, want: u64, r: (i64, u64)) {
        self.value_of(name, Some(arg), want, r);
    }

    fn value_of(&mut self, name: &[u8], arg: Option<u64>, want: u64, r: (i64, u64)) {
        let seen = Seen::Value {
            want,
            status: r.0,
            value: r.1,
        };
        self.check(name, arg, r.0 == OK && r.1 == want, seen);
    }

    /// A condition on memory or values; `observed` goes into a failure's detail.
    fn that(&mut self, name: &[u8], ok: bool, observed: u64) {
        self.check(name, None, ok, Seen::Observed(observed));
    }

    /// Reports the END record and powers off with the number of failed checks.
    fn end(&mut self) -> ! {
        kv(b"checks", self.total);
        kv(b"failed", self.failed);
        wr32(REC, pvabi::harness::ReportHeader::MAGIC);
        wr32(REC + 4, pvabi::harness::Outcome::END.0);
        for off in [8, 12, 16, 20] {
            wr32(REC + off, 0);
        }
        if g2(call::HARNESS_REPORT, REC, 24).0 != OK {
            self.failed += 1;
        }
        poweroff(self.failed)
    }
}

// ---- store helpers -------------------------------------------------------------------------

/// Store calls with paths and values staged in one vCPU's scratch area.
#[derive(Clone, Copy)]
struct Io {
    base: u64,
}

impl Io {
    const VAL: u64 = 0x400;
    const OUT: u64 = 0x1000;

    fn out(self) -> u64 {
        self.base + Self::OUT
    }
    fn path(self, p: &[u8]) -> (u64, u64) {
        put(self.base, p)
    }
    fn read(self, p: &[u8], txn: u64) -> (i64, u64) {
        let (pg, pl) = self.path(p);
        gate(call::STORE_READ, pg, pl, self.out(), 4096, txn)
    }
    fn read_into(self, p: &[u8], buf: u64, len: u64) -> (i64, u64) {
        let (pg, pl) = self.path(p);
        gate(call::STORE_READ, pg, pl, buf, len, 0)
    }
    fn write(self, p: &[u8], v: &[u8], txn: u64) -> (i64, u64) {
        let (vg, vl) = put(self.base + Self::VAL, v);
        self.write_from(p, vg, vl, txn)
    }
    fn write_from(self, p: &[u8], gpa: u64, len: u64, txn: u64) -> (i64, u64) {
        let (pg, pl) = self.path(p);
        gate(call::STORE_WRITE, pg, pl, gpa, len, txn)
    }
    fn list(self, p: &[u8], txn: u64) -> (i64, u64) {
        let (pg, pl) = self.path(p);
        gate(call::STORE_LIST, pg, pl, self.out(), 4096, txn)
    }
    fn remove(self, p: &[u8], txn: u64) -> (i64, u64) {
        let (pg, pl) = self.path(p);
        g3(call::STORE_REMOVE, pg, pl, txn)
    }
    fn watch(self, p: &[u8], port: u64) -> (i64, u64) {
        let (pg, pl) = self.path(p);
        g3(call::STORE_WATCH, pg, pl, port)
    }
    fn host_read(self, p: &[u8]) -> (i64, u64) {
        let (pg, pl) = self.path(p);
        gate(call::HARNESS_STORE_HOST_READ, pg, pl, self.out(), 4096, 0)
    }
    fn host_write(self, p: &[u8], v: &[u8], access: u64) -> (i64, u64) {
        let (vg, vl) = put(self.base + Self::VAL, v);
        let (pg, pl) = self.path(p);
        gate(call::HARNESS_STORE_HOST_WRITE, pg, pl, vg, vl, access)
    }
    /// The call succeeded and returned exactly `want` in the result buffer.
    fn got(self, r: (i64, u64), want: &[u8]) -> bool {
        r.0 == OK && r.1 == want.len() as u64 && mem_eq(self.out(), want)
    }
    /// The next watch event is `(watch_id, path)` with nothing dropped.
    fn next_event_is(self, watch_id: u64, path: &[u8]) -> bool {
        let r = g2(call::STORE_WATCH_NEXT, self.out(), 4096);
        r.0 == OK
            && r.1 == 16 + path.len() as u64
            && u64::from(rd32(self.out())) == watch_id
            && u64::from(rd32(self.out() + 4)) == path.len() as u64
            && rd32(self.out() + 8) == 0
            && mem_eq(self.out() + 16, path)
    }
}

fn grant_entry(table: u64, r: u64, flags: u16, gfn: u64) {
    let e = table + r * 16;
    wr16(e, flags);
    wr16(e + 2, 0);
    wr32(e + 4, pvabi::grant::GrantEntry::DOMID_HOST);
    wr64(e + 8, gfn);
}

const VALID: u16 = pvabi::grant::GrantEntry::FLAG_VALID;
const READONLY: u16 = pvabi::grant::GrantEntry::FLAG_READONLY;

/// Offsets into granted pages that the grant checks read.
const GRANT_OFFSETS: [u64; 4] = [0, 7, 1000, 4095];

fn pending_word(w: u64) -> u64 {
    ev_word(EVPAGE + w * 8).load(Ordering::SeqCst)
}

fn mask_word(w: u64) -> u64 {
    ev_word(EVPAGE + 128 + w * 8).load(Ordering::SeqCst)
}

fn vcpu_info(v: u64) -> u64 {
    EVPAGE + 256 + 192 * v
}

fn ring_header(order: u32) {
    zero(RING, 64);
    wr32(RING, pvabi::ring::RingHeader::MAGIC);
    wr32(RING + 4, order);
}

// ---- A ---------------------------------------------------------------------------------------

static STOP: AtomicU64 = AtomicU64::new(0);
static LIVE_ITER: AtomicU64 = AtomicU64::new(0);
static LIVE_BAD: AtomicU64 = AtomicU64::new(0);
static LIVE_FIRST_BAD: AtomicU64 = AtomicU64::new(0);

/// A's vCPU 1: keeps changing and checking A's state while B runs.
extern "C" fn live(_arg: u64, _id: u64) -> ! {
    let io = Io { base: BUF1 };
    let (a_path, a_value) = A_NODES[0];
    let bad = |what: u64| {
        if LIVE_BAD.fetch_add(1, Ordering::SeqCst) == 0 {
            LIVE_FIRST_BAD.store(what, Ordering::SeqCst);
        }
    };
    let mut i = 0u64;
    while STOP.load(Ordering::SeqCst) == 0 {
        i += 1;
        if io.write(b"live/counter", &i.to_le_bytes(), 0).0 != OK {
            bad(1);
        }
        if !io.got(io.read(a_path, 0), a_value) {
            bad(2);
        }
        if g1(call::EVENT_SEND, P_LIVE).0 != OK {
            bad(3);
        }
        for (page, tag) in [(SECRET, A_SECRET), (HIGH, A_HIGH), (KEEP, A_KEEP)] {
            let w = u64::from_le_bytes(*tag);
            if rd64(page) != w || rd64(page + 56) != w || rd64(page + 4088) != w {
                bad(4);
            }
        }
        LIVE_ITER.store(i, Ordering::SeqCst);
        g1(call::VCPU_BLOCK, now() + 2_000_000);
    }
    g0(call::VCPU_STOP);
    poweroff(0xA1)
}

/// Sets up A's state; `c` records each step.
fn a_setup(c: &mut Checker, io: Io) -> (u64, u64, u64) {
    // Event ports in known states.
    c.cite(b"EVT-1,EVT-3,EVT-4,EVT-8");
    c.status(
        b"setup.event_page",
        OK,
        g1(call::EVENT_REGISTER_PAGE, EVPAGE),
    );
    for p in 1..=A_PORTS {
        c.value_at(b"setup.alloc", p, p, g0(call::EVENT_ALLOC));
    }
    c.status(b"setup.bind", OK, g2(call::EVENT_BIND_VCPU, P_LIVE, 1));
    c.status(b"setup.mask", OK, g1(call::EVENT_MASK, P_MASKED));
    c.status(b"setup.mask", OK, g1(call::EVENT_MASK, P_LIVE));

    // Store: guest nodes, host nodes the guest may not read or only read, two watches (one
    // with a queued event), an open transaction with a write in it.
    c.cite(b"STORE-5,STORE-10,STORE-15,STORE-17,HAR-4");
    for (p, v) in A_NODES {
        c.status(b"setup.store_write", OK, io.write(p, v, 0));
    }
    let r = io.host_write(b"secret/hostnone", A_HOST_NONE, 0);
    c.status(b"setup.host_write", OK, r);
    let r = io.host_write(b"secret/hostro", A_HOST_RO, 1);
    c.status(b"setup.host_write", OK, r);
    let r = io.watch(b"secret", P_SECRET_WATCH);
    c.status(b"setup.watch", OK, r);
    let wid_secret = r.1;
    let r = io.watch(b"queued", P_QUEUED);
    c.status(b"setup.watch", OK, r);
    let wid_queued = r.1;
    c.status(b"setup.store_write", OK, io.write(b"queued/x", b"1", 0));
    let (s, txn) = g0(call::STORE_TXN_START);
    c.status(b"setup.txn_start", OK, (s, txn));
    let r = io.write(b"secret/txn", A_TXN_VALUE, txn);
    c.status(b"setup.txn_write", OK, r);

    // RAM patterns and a grant table granting two of them.
    fill_page(SECRET, A_SECRET);
    fill_page(HIGH, A_HIGH);
    fill_page(KEEP, A_KEEP);
    zero(GNT, 16 * 16);
    grant_entry(GNT, 5, VALID, SECRET / 4096);
    grant_entry(GNT, 12, VALID | READONLY, HIGH / 4096);
    c.cite(b"GNT-1,MEM-4,RING-1,CLK-1,HAR-7");
    c.status(
        b"setup.grant_table",
        OK,
        g2(call::GRANT_SETUP_TABLE, GNT, 16),
    );

    // Balloon, ring, clock page, console input and output.
    let r = g2(call::MEMORY_BALLOON_RELEASE, RELEASED, 4);
    c.status(b"setup.balloon_release", OK, r);
    ring_header(0);
    c.status(b"setup.ring", OK, g2(call::BASE_RING_REGISTER, RING, 0));
    let r = g1(call::CLOCK_REGISTER_PAGE, CLOCKPG);
    c.status(b"setup.clock_page", OK, r);
    write(b"A-SECRET-CONSOLE\n");
    let (ig, il) = put(BUF + 0x800, A_INPUT);
    let r = g2(call::HARNESS_CONSOLE_INPUT, ig, il);
    c.status(b"setup.console_input", OK, r);
    (wid_secret, wid_queued, txn)
}

fn role_a(rest: &[u8]) -> ! {
    let mut c = Checker::new(b"a.");
    let io = Io { base: BUF };
    let barrier = parse_u64(rest);
    let (wid_secret, wid_queued, txn) = a_setup(&mut c, io);
    kv(b"a_txn", txn);
    kv(b"a_watch_secret", wid_secret);
    kv(b"a_watch_queued", wid_queued);

    // vCPU 1 uses A's state from now on (RSP + 8 aligned to 16, as right after a call).
    c.cite(b"VCPU-6");
    let entry = live as *const () as u64;
    let r = gate(call::VCPU_START, 1, entry, STACK1_TOP - 8, 0, 0);
    c.status(b"setup.start_vcpu1", OK, r);
    let t0 = now();
    while LIVE_ITER.load(Ordering::SeqCst) == 0 && now() - t0 < 10_000_000_000 {
        g0(call::VCPU_YIELD);
    }
    let before = LIVE_ITER.load(Ordering::SeqCst);
    c.that(b"setup.vcpu1_running", before > 0, before);

    // Wait in a console write until the test has run B.
    for i in 0..4096 {
        wr8(BARRIER + i, if i % 64 == 63 { b'\n' } else { b'=' });
    }
    write(b"ready\n");
    let mut left = barrier;
    while left > 0 {
        let n = left.min(4096);
        g2(call::CONSOLE_WRITE, BARRIER, n);
        left -= n;
    }
    let during = LIVE_ITER.load(Ordering::SeqCst) - before;
    kv(b"a_live_iterations_while_waiting", during);
    c.cite(b"SEC-10");
    c.that(b"live.ran_while_waiting", during > 0, during);

    STOP.store(1, Ordering::SeqCst);
    let t0 = now();
    while g1(call::VCPU_GET_STATUS, 1) != (OK, 0) && now() - t0 < 10_000_000_000 {
        g0(call::VCPU_YIELD);
    }
    c.cite(b"VCPU-9");
    c.value(b"live.stopped", 0, g1(call::VCPU_GET_STATUS, 1));
    let bad = LIVE_BAD.load(Ordering::SeqCst);
    let first = LIVE_FIRST_BAD.load(Ordering::SeqCst);
    c.cite(b"SEC-10");
    c.that(b"live.state_unchanged_while_b_ran", bad == 0, first);

    a_verify_memory(&mut c);
    a_verify_events(&mut c);
    a_verify_store(&mut c, io, wid_secret, wid_queued, txn);

    // Balloon, console, ring, clock page, quota.
    c.cite(b"MEM-8,HAR-11,SEC-10");
    c.value(b"balloon.query", 4, g0(call::MEMORY_BALLOON_QUERY));
    let r = g1(call::HARNESS_BALLOON_CHECK, RELEASED);
    c.value(b"balloon.released", 1, r);
    let r = g1(call::HARNESS_BALLOON_CHECK, KEEP);
    c.value(b"balloon.keep_not_released", 0, r);
    c.cite(b"CONS-4,HAR-6,SEC-10");
    let r = g2(call::CONSOLE_READ, io.out(), 4096);
    c.that(b"console.own_input", io.got(r, A_INPUT), r.1);
    let (s, n) = g2(call::HARNESS_CONSOLE_READBACK, io.out(), 4096);
    let clean =
        s == OK && !mem_contains(io.out(), n, b"b-own") && !mem_contains(io.out(), n, b"b-in");
    c.that(b"console.no_b_output", clean, n);
    c.cite(b"RING-2,RING-7,CLK-5,SEC-10");
    let counters = rd64(RING + 8) | rd64(RING + 16) | rd64(RING + 24);
    c.that(b"ring.untouched", counters == 0, counters);
    c.status(b"ring.still_registered", OK, g0(call::BASE_RING_UNREGISTER));
    let r = g0(call::CLOCK_UNREGISTER_PAGE);
    c.status(b"clock.page_still_registered", OK, r);
    c.cite(b"SEC-11,STORE-19");
    c.status(b"store.quota_of_own", OK, io.write(b"after", b"1", 0));
    c.end()
}

/// A's RAM, including pages B named in its calls at the same addresses, and its grants.
fn a_verify_memory(c: &mut Checker) {
    c.cite(b"SEC-10,SEC-12,MEM-10");
    for (name, page, tag) in [
        (&b"ram.secret_page"[..], SECRET, A_SECRET),
        (b"ram.high_page", HIGH, A_HIGH),
        (b"ram.keep_page", KEEP, A_KEEP),
    ] {
        let m = page_mismatch(page, tag);
        c.that(name, m.is_none(), m.unwrap_or(0));
    }
    let mut table_ok = true;
    for r in 0..16u64 {
        let e = GNT + r * 16;
        let (flags, gfn) = match r {
            5 => (u64::from(VALID), SECRET / 4096),
            12 => (u64::from(VALID | READONLY), HIGH / 4096),
            _ => (0, 0),
        };
        table_ok &= rd64(e) == flags && rd64(e + 8) == gfn;
    }
    c.that(b"grant.table_unchanged", table_ok, 0);
    c.cite(b"HAR-10,GNT-5,SEC-10");
    for off in GRANT_OFFSETS {
        let want = u64::from(A_SECRET[(off % 8) as usize]);
        let r = g3(call::HARNESS_GRANT_ACCESS, 5, off, READ);
        c.value_at(b"grant.host_reads_a_page", off, want, r);
    }
    let r = g3(call::HARNESS_GRANT_ACCESS, 12, 0, READ);
    c.value(b"grant.host_reads_a_high_page", u64::from(A_HIGH[0]), r);
}

/// A's event page holds exactly the bits A's own activity set; its ports are as it left them.
fn a_verify_events(c: &mut Checker) {
    c.cite(b"SEC-10,EVT-7,EVT-19");
    let (p0, m0) = (pending_word(0), mask_word(0));
    let canaries = 1 << P_CANARY | 1 << P_MASKED | 1 << P_SECRET_WATCH | 1 << P_ONLY_A;
    c.that(b"event.canaries_not_pending", p0 & canaries == 0, p0);
    c.that(
        b"event.pending_word0",
        p0 == (1 << P_QUEUED | 1 << P_LIVE),
        p0,
    );
    c.that(b"event.mask_word0", m0 == (1 << P_MASKED | 1 << P_LIVE), m0);
    let others = (1..16).all(|w| pending_word(w) == 0 && mask_word(w) == 0);
    c.that(b"event.other_words_zero", others, 0);
    let sel0 = ev_word(vcpu_info(0)).load(Ordering::SeqCst);
    let up0 = rd32(vcpu_info(0) + 8);
    c.that(b"event.vcpu0_selector", sel0 == 1 && up0 == 1, sel0);
    let sel1 = ev_word(vcpu_info(1)).load(Ordering::SeqCst);
    let up1 = rd32(vcpu_info(1) + 8);
    c.that(b"event.vcpu1_selector", sel1 == 0 && up1 == 0, sel1);
    c.cite(b"EVT-4,EVT-5,SEC-10");
    let r = g2(call::EVENT_BIND_VCPU, P_LIVE, 1);
    c.status(b"event.port4_still_on_vcpu1", ALREADY, r);
    let r = g1(call::EVENT_CLOSE, P_ONLY_A);
    c.status(b"event.port6_still_allocated", OK, r);
    let r = g1(call::EVENT_CLOSE, P_ONLY_A);
    c.status(b"event.port6_closed", NOT_FOUND, r);
}

/// A's store holds A's nodes, watches and transaction, and nothing of B's.
fn a_verify_store(c: &mut Checker, io: Io, wid_secret: u64, wid_queued: u64, txn: u64) {
    c.cite(b"STORE-2,STORE-3,STORE-7,STORE-20,HAR-5,SEC-10");
    for (i, (p, v)) in A_NODES.iter().enumerate() {
        let r = io.read(p, 0);
        c.check(
            b"store.node_unchanged",
            Some(i as u64),
            io.got(r, v),
            Seen::Observed(r.1),
        );
    }
    let r = io.read(b"secret/hostnone", 0);
    c.status(b"store.host_none_still_denied", DENIED, r);
    let r = io.host_read(b"secret/hostnone");
    c.that(b"store.host_view_host_none", io.got(r, A_HOST_NONE), r.1);
    let r = io.read(b"secret/hostro", 0);
    c.that(b"store.host_ro_unchanged", io.got(r, A_HOST_RO), r.1);
    let r = io.list(b"", 0);
    c.that(
        b"store.root_list",
        io.got(r, b"live\0queued\0secret\0"),
        r.1,
    );
    let r = io.list(b"secret", 0);
    c.that(
        b"store.secret_list",
        io.got(r, b"a\0b\0hostnone\0hostro\0"),
        r.1,
    );
    let r = io.list(b"queued", 0);
    c.that(b"store.queued_list", io.got(r, b"x\0"), r.1);
    for (i, p) in B_NODES.iter().enumerate() {
        let i = i as u64;
        c.status_at(b"store.no_b_node", i, NOT_FOUND, io.read(p, 0));
        let r = io.host_read(p);
        c.status_at(b"store.host_view_no_b_node", i, NOT_FOUND, r);
    }
    c.cite(b"STORE-11,STORE-12,STORE-13,STORE-16,STORE-17,STORE-20,STORE-31");
    let ev = io.next_event_is(wid_queued, b"queued/x");
    c.that(b"store.own_queued_event", ev, 0);
    let r = g2(call::STORE_WATCH_NEXT, io.out(), 4096);
    c.status(b"store.no_other_event", NOT_FOUND, r);
    let r = io.read(b"secret/txn", txn);
    c.that(b"store.txn_still_open", io.got(r, A_TXN_VALUE), r.1);
    c.status(b"store.txn_commit", OK, g1(call::STORE_TXN_COMMIT, txn));
    let r = io.read(b"secret/txn", 0);
    c.that(b"store.txn_committed", io.got(r, A_TXN_VALUE), r.1);
    let ev = io.next_event_is(wid_secret, b"secret/txn");
    c.that(b"store.secret_watch_still_there", ev, 0);
}

// ---- B ---------------------------------------------------------------------------------------

/// Nodes B creates at some point (A checks it sees none of them).
const B_NODES: [&[u8]; 5] = [b"bnode/h", b"bnode", b"mem/copy", b"q/0", b"z"];

fn role_b(bi: &BootInfo) -> ! {
    let mut c = Checker::new(b"b.");
    let io = Io { base: BUF };
    let mem = bi.mem_size;
    c.cite(b"SEC-3,BASE-9");
    c.that(b"setup.high_is_outside_b", HIGH >= mem, mem);
    c.value(b"vcpu.count", 1, g0(call::BASE_GET_VCPU_COUNT));

    // Before B has state of its own, every identifier and address is A's.
    b_foreign_ids(&mut c, io);
    b_foreign_store(&mut c, io);
    b_foreign_memory(&mut c, io, mem);
    // B's own state, at A's addresses and with A's numbers.
    b_own_events(&mut c);
    let wid_secret = b_own_store(&mut c, io);
    b_own_grants(&mut c);
    b_own_memory(&mut c, io, mem);
    b_ring(&mut c);
    b_multicall(&mut c, io);

    // Quota: A's nodes do not count against B (B has 7 nodes here; `q` is the 8th).
    c.cite(b"STORE-19,SEC-11");
    let mut entries = 0u64;
    let last = loop {
        let mut t = Text::at(BUF + 0x200);
        t.bytes(b"q/").dec(entries);
        let r = gate(call::STORE_WRITE, t.start, t.len(), BUF + Io::VAL, 1, 0);
        if r.0 != OK || entries > 2000 {
            break r.0;
        }
        entries += 1;
    };
    kv(b"b_quota_entries", entries);
    let want = u64::from(pvabi::store::MAX_ENTRIES) - 8;
    c.that(
        b"store.own_quota",
        last == NO_SPACE && entries == want,
        entries,
    );
    c.status(b"store.own_quota_freed", OK, io.remove(b"q", 0));
    c.cite(b"STORE-7,STORE-20");
    let r = io.list(b"", 0);
    c.that(b"store.own_root", io.got(r, b"bnode\0mem\0secret\0"), r.1);

    // Only B's own changes fired B's watches (A's vCPU 1 wrote `live/counter` all along).
    c.cite(b"STORE-11,STORE-20,SEC-10");
    let ev = io.next_event_is(wid_secret, b"secret/a");
    c.that(b"store.own_event_1", ev, 0);
    let ev = io.next_event_is(wid_secret, b"secret/txn");
    c.that(b"store.own_event_2", ev, 0);
    let r = g2(call::STORE_WATCH_NEXT, io.out(), 4096);
    c.status(b"store.no_event_from_a", NOT_FOUND, r);

    c.cite(b"HAR-6,SEC-10");
    let (s, n) = g2(call::HARNESS_CONSOLE_READBACK, io.out(), 4096);
    let clean = s == OK
        && !mem_contains(io.out(), n, b"A-SECRET")
        && !mem_contains(io.out(), n, b"A-HIGH")
        && !mem_contains(io.out(), n, b"A-KEEP");
    c.that(b"console.no_a_bytes", clean, n);
    c.end()
}

/// A's ports, watch and transaction ids, grant references, ring, clock page, balloon,
/// console and vCPU ids, named by B before it has any of its own.
fn b_foreign_ids(c: &mut Checker, io: Io) {
    for p in 1..=A_PORTS + 1 {
        c.cite(b"EVT-17,SEC-10");
        c.status_at(b"event.send_no_page", p, BAD_STATE, g1(call::EVENT_SEND, p));
        c.status_at(b"event.mask_no_page", p, BAD_STATE, g1(call::EVENT_MASK, p));
        let r = g1(call::EVENT_UNMASK, p);
        c.status_at(b"event.unmask_no_page", p, BAD_STATE, r);
        let r = g1(call::EVENT_CLOSE, p);
        c.status_at(b"event.close_no_page", p, BAD_STATE, r);
        let r = g2(call::EVENT_BIND_VCPU, p, 0);
        c.status_at(b"event.bind_no_page", p, BAD_STATE, r);
        c.cite(b"HAR-3,SEC-10");
        let r = g1(call::HARNESS_INJECT_EVENT, p);
        c.status_at(b"event.inject_no_page", p, BAD_STATE, r);
        c.cite(b"CLK-15,SEC-10");
        let r = g2(call::CLOCK_SET_TIMER, now() + 1_000_000, p);
        c.status_at(b"clock.timer_no_page", p, BAD_STATE, r);
        c.cite(b"STORE-33,SEC-10");
        let r = io.watch(b"secret", p);
        c.status_at(b"store.watch_foreign_port", p, NOT_FOUND, r);
    }
    c.cite(b"STORE-12,STORE-31,STORE-37,SEC-10");
    for id in 1..=FOREIGN_IDS {
        let r = g1(call::STORE_UNWATCH, id);
        c.status_at(b"store.unwatch_foreign", id, NOT_FOUND, r);
        let r = g1(call::STORE_TXN_COMMIT, id);
        c.status_at(b"store.commit_foreign", id, NOT_FOUND, r);
        let r = g1(call::STORE_TXN_ABORT, id);
        c.status_at(b"store.abort_foreign", id, NOT_FOUND, r);
        let r = io.read(b"secret/txn", id);
        c.status_at(b"store.read_in_foreign_txn", id, NOT_FOUND, r);
        let r = io.write(b"secret/txn", b"B", id);
        c.status_at(b"store.write_in_foreign_txn", id, NOT_FOUND, r);
        let r = io.list(b"secret", id);
        c.status_at(b"store.list_in_foreign_txn", id, NOT_FOUND, r);
        let r = io.remove(b"secret", id);
        c.status_at(b"store.remove_in_foreign_txn", id, NOT_FOUND, r);
    }
    c.cite(b"STORE-13,SEC-10");
    let r = g2(call::STORE_WATCH_NEXT, io.out(), 4096);
    c.status(b"store.watch_next_foreign", NOT_FOUND, r);
    c.cite(b"HAR-15,SEC-10");
    for gref in [0, 5, 12] {
        let r = g3(call::HARNESS_GRANT_ACCESS, gref, 0, READ);
        c.status_at(b"grant.no_table", gref, BAD_STATE, r);
    }
    c.cite(b"RING-7,CLK-5,SEC-10");
    c.status(b"ring.none", NOT_FOUND, g0(call::BASE_RING_UNREGISTER));
    c.status(b"clock.no_page", NOT_FOUND, g0(call::CLOCK_UNREGISTER_PAGE));
    c.cite(b"MEM-8,MEM-13,HAR-11,SEC-10");
    c.value(b"balloon.query", 0, g0(call::MEMORY_BALLOON_QUERY));
    for k in 0..4 {
        let r = g1(call::HARNESS_BALLOON_CHECK, RELEASED + k * 4096);
        c.value_at(b"balloon.check_a_released", k, 0, r);
    }
    let r = g2(call::MEMORY_BALLOON_RECLAIM, RELEASED, 4);
    c.status(b"balloon.reclaim_a_released", BAD_STATE, r);
    c.cite(b"CONS-4,HAR-6,SEC-10");
    let r = g2(call::CONSOLE_READ, io.out(), 4096);
    c.value(b"console.no_a_input", 0, r);
    let r = g2(call::HARNESS_CONSOLE_READBACK, io.out(), 4096);
    c.value(b"console.no_a_output", 0, r);
    c.cite(b"VCPU-1,SEC-10");
    let entry = live as *const () as u64;
    for v in [1u64, 2, 15] {
        c.status_at(
            b"vcpu.kick_foreign",
            v,
            INVALID_PARAM,
            g1(call::VCPU_KICK, v),
        );
        let r = g1(call::VCPU_GET_STATUS, v);
        c.status_at(b"vcpu.status_foreign", v, INVALID_PARAM, r);
        let r = gate(call::VCPU_START, v, entry, STACK1_TOP - 8, 0, 0);
        c.status_at(b"vcpu.start_foreign", v, INVALID_PARAM, r);
    }
}

/// A's store paths, plain, absolute-looking and escaping: absent here or malformed.
fn b_foreign_store(c: &mut Checker, io: Io) {
    // Removal last: a wrongly found node must not hide the paths below it.
    for (i, p) in A_PATHS.iter().enumerate() {
        let i = i as u64;
        c.cite(b"STORE-20,STORE-28");
        c.status_at(b"store.read_a_path", i, NOT_FOUND, io.read(p, 0));
        c.cite(b"HAR-5,SEC-10");
        c.status_at(b"store.host_read_a_path", i, NOT_FOUND, io.host_read(p));
    }
    c.cite(b"STORE-20,STORE-30");
    for (i, p) in [&b"secret"[..], b"queued", b"live"].iter().enumerate() {
        c.status_at(b"store.list_a_path", i as u64, NOT_FOUND, io.list(p, 0));
    }
    c.cite(b"STORE-20,STORE-8");
    for (i, p) in A_PATHS.iter().enumerate() {
        c.status_at(b"store.remove_a_path", i as u64, NOT_FOUND, io.remove(p, 0));
    }
    c.cite(b"STORE-20,STORE-28,STORE-30");
    let absolute = [
        &b"local/domain/1/secret/a"[..],
        b"A/secret/a",
        b"vm/A/secret",
        b"domain/0/secret",
    ];
    for (i, p) in absolute.iter().enumerate() {
        let i = i as u64;
        let r = io.read(p, 0);
        c.status_at(b"store.read_absolute_looking", i, NOT_FOUND, r);
        let r = io.list(p, 0);
        c.status_at(b"store.list_absolute_looking", i, NOT_FOUND, r);
    }
    c.cite(b"STORE-7,STORE-20");
    c.value(b"store.root_empty", 0, io.list(b"", 0));
    let long = [b'a'; 257];
    let paths = ESCAPES.iter().copied().chain([&long[..], &long[..256]]);
    for (i, p) in paths.enumerate() {
        let i = i as u64;
        // A 256-byte path of `a` is valid (the longest allowed): it just does not exist yet.
        let (lookup, write) = if p.len() == 256 {
            (NOT_FOUND, OK)
        } else {
            (INVALID_PARAM, INVALID_PARAM)
        };
        c.cite(b"STORE-1,STORE-20,STORE-23,HAR-4,HAR-5");
        c.status_at(b"store.escape_read", i, lookup, io.read(p, 0));
        c.status_at(b"store.escape_list", i, lookup, io.list(p, 0));
        c.status_at(b"store.escape_remove", i, lookup, io.remove(p, 0));
        c.status_at(b"store.escape_host_read", i, lookup, io.host_read(p));
        c.status_at(b"store.escape_write", i, write, io.write(p, b"B", 0));
        if write == OK {
            c.status_at(b"store.escape_cleanup", i, OK, io.remove(p, 0));
        } else {
            let r = io.host_write(p, b"B", 3);
            c.status_at(b"store.escape_host_write", i, INVALID_PARAM, r);
        }
    }
    c.cite(b"STORE-24");
    c.status(b"store.empty_read", INVALID_PARAM, io.read(b"", 0));
    c.status(b"store.empty_write", INVALID_PARAM, io.write(b"", b"B", 0));
    c.status(b"store.empty_remove", INVALID_PARAM, io.remove(b"", 0));
}

/// Guest addresses that are RAM only in A (or nowhere), and B's own RAM where A keeps its
/// secret.
fn b_foreign_memory(c: &mut Checker, io: Io, mem: u64) {
    let ia = INVALID_ADDRESS;
    let buffers = [(HIGH, 8), (mem, 8), (mem - 4, 8), (u64::MAX - 7, 16)];
    for (k, (gpa, len)) in buffers.into_iter().enumerate() {
        let k = k as u64;
        c.cite(b"SEC-3,CONS-5,STORE-4,HAR-2,HAR-4,HAR-6,HAR-7,SEC-10");
        let r = g2(call::CONSOLE_WRITE, gpa, len);
        c.status_at(b"mem.console_write", k, ia, r);
        c.status_at(b"mem.console_read", k, ia, g2(call::CONSOLE_READ, gpa, len));
        let r = io.write_from(b"x", gpa, len, 0);
        c.status_at(b"mem.store_value", k, ia, r);
        let r = gate(call::STORE_READ, gpa, len, io.out(), 64, 0);
        c.status_at(b"mem.store_path", k, ia, r);
        let r = g2(call::HARNESS_CONSOLE_READBACK, gpa, len);
        c.status_at(b"mem.console_readback", k, ia, r);
        let r = g2(call::HARNESS_CONSOLE_INPUT, gpa, len);
        c.status_at(b"mem.console_input", k, ia, r);
        let (pg, pl) = io.path(b"x");
        let r = gate(call::HARNESS_STORE_HOST_WRITE, pg, pl, gpa, len, 3);
        c.status_at(b"mem.host_write_value", k, ia, r);
        c.status_at(b"mem.report", k, ia, g2(call::HARNESS_REPORT, gpa, 64));
    }
    for (k, gpa) in [HIGH, mem, !4095].into_iter().enumerate() {
        let k = k as u64;
        c.cite(b"SEC-3,MEM-3,CLK-1,EVT-1,GNT-10,MEM-4,MC-2,RING-11,PWR-7,VCPU-11,SEC-10");
        c.status_at(b"mem.get_map", k, ia, g2(call::MEMORY_GET_MAP, gpa, 2));
        let r = g1(call::CLOCK_REGISTER_PAGE, gpa);
        c.status_at(b"mem.clock_page", k, ia, r);
        let r = g1(call::EVENT_REGISTER_PAGE, gpa);
        c.status_at(b"mem.event_page", k, ia, r);
        let r = g2(call::GRANT_SETUP_TABLE, gpa, 4);
        c.status_at(b"mem.grant_table", k, ia, r);
        let r = g2(call::MEMORY_BALLOON_RELEASE, gpa, 1);
        c.status_at(b"mem.balloon", k, ia, r);
        let r = g2(call::MULTICALL_EXECUTE, gpa, 1);
        c.status_at(b"mem.multicall", k, ia, r);
        let r = g2(call::BASE_RING_REGISTER, gpa, 0);
        c.status_at(b"mem.ring", k, ia, r);
        let r = g2(call::POWER_REGISTER_CRASH_BUFFER, gpa, 64);
        c.status_at(b"mem.crash_buffer", k, ia, r);
        let r = g1(call::VCPU_REGISTER_STEAL_TIME, gpa);
        c.status_at(b"mem.steal_time", k, ia, r);
        c.cite(b"HAR-11,SEC-10");
        let r = g1(call::HARNESS_BALLOON_CHECK, gpa);
        c.value_at(b"mem.balloon_check", k, 0, r);
    }
    // Where A keeps its secret, B has its own RAM, still zero.
    c.cite(b"SEC-10,STORE-5,CONS-1");
    let r = io.write_from(b"z", SECRET, 64, 0);
    c.status(b"mem.own_zero_page_to_store", OK, r);
    let r = io.read(b"z", 0);
    c.that(b"mem.own_zero_page_read_back", io.got(r, &[0; 64]), r.1);
    c.status(b"mem.own_zero_page_removed", OK, io.remove(b"z", 0));
    let r = g2(call::CONSOLE_WRITE, SECRET, 16);
    c.value(b"mem.own_zero_page_console", 16, r);
}

/// B's event page at A's address, B's ports with A's numbers, a timer of B's.
fn b_own_events(c: &mut Checker) {
    fill_page(SECRET, B_OWN);
    c.cite(b"EVT-1,EVT-22,SEC-10");
    let r = g1(call::EVENT_REGISTER_PAGE, EVPAGE);
    c.status(b"event.own_page_at_a_address", OK, r);
    for p in 1..=A_PORTS + 1 {
        c.cite(b"EVT-28,EVT-5,SEC-10");
        c.status_at(b"event.send_foreign", p, NOT_FOUND, g1(call::EVENT_SEND, p));
        c.status_at(b"event.mask_foreign", p, NOT_FOUND, g1(call::EVENT_MASK, p));
        let r = g1(call::EVENT_UNMASK, p);
        c.status_at(b"event.unmask_foreign", p, NOT_FOUND, r);
        let r = g2(call::EVENT_BIND_VCPU, p, 0);
        c.status_at(b"event.bind_foreign", p, NOT_FOUND, r);
        let r = g1(call::EVENT_CLOSE, p);
        c.status_at(b"event.close_foreign", p, NOT_FOUND, r);
        c.cite(b"HAR-3,SEC-10");
        let r = g1(call::HARNESS_INJECT_EVENT, p);
        c.status_at(b"event.inject_foreign", p, NOT_FOUND, r);
        c.cite(b"CLK-14,SEC-10");
        let r = g2(call::CLOCK_SET_TIMER, now() + 1_000_000, p);
        c.status_at(b"clock.timer_foreign", p, NOT_FOUND, r);
    }
    c.cite(b"EVT-3,EVT-6,EVT-23,EVT-28,SEC-10");
    let p0 = pending_word(0);
    c.that(b"event.own_page_untouched", p0 == 0, p0);
    c.value(b"event.own_alloc_1", 1, g0(call::EVENT_ALLOC));
    c.value(b"event.own_alloc_2", 2, g0(call::EVENT_ALLOC));
    c.status(b"event.own_send_1", OK, g1(call::EVENT_SEND, 1));
    c.status(b"event.own_send_2", OK, g1(call::EVENT_SEND, 2));
    let p0 = pending_word(0);
    c.that(b"event.own_pending", p0 == 0b110, p0);
    for p in 3..=A_PORTS + 1 {
        let r = g1(call::EVENT_SEND, p);
        c.status_at(b"event.send_foreign_after_alloc", p, NOT_FOUND, r);
    }
    let r = g2(call::EVENT_BIND_VCPU, 1, 1);
    c.status(b"event.bind_to_foreign_vcpu", INVALID_PARAM, r);
    // A timer of B's own raises B's port 1 (A's port 1 must stay clear).
    c.cite(b"CLK-8");
    ev_word(EVPAGE).fetch_and(!0b10, Ordering::SeqCst);
    ev_word(vcpu_info(0)).store(0, Ordering::SeqCst);
    wr32(vcpu_info(0) + 8, 0);
    let r = g2(call::CLOCK_SET_TIMER, now() + 1_000_000, 1);
    c.status(b"clock.own_timer", OK, r);
    let t0 = now();
    while pending_word(0) & 0b10 == 0 && now() - t0 < 5_000_000_000 {
        g1(call::VCPU_BLOCK, now() + 100_000_000);
    }
    let p0 = pending_word(0);
    c.that(b"clock.own_timer_fired", p0 & 0b10 != 0, p0);
}

/// B's store with A's names; returns B's watch id on `secret`.
fn b_own_store(c: &mut Checker, io: Io) -> u64 {
    c.cite(b"STORE-10,STORE-1");
    let r = io.watch(b"secret", 1);
    c.status(b"store.own_watch", OK, r);
    let wid_secret = r.1;
    c.status(b"store.watch_a_live_path", OK, io.watch(b"live", 2));
    c.status(b"store.watch_a_queued_path", OK, io.watch(b"queued", 2));
    for (i, p) in ESCAPES.iter().enumerate() {
        let r = io.watch(p, 1);
        c.status_at(b"store.escape_watch", i as u64, INVALID_PARAM, r);
    }
    c.cite(b"STORE-3,STORE-5,STORE-7,HAR-4,HAR-5,SEC-10");
    let r = io.write(b"secret/a", b"B-value", 0);
    c.status(b"store.own_write", OK, r);
    let r = io.read(b"secret/a", 0);
    c.that(b"store.own_read", io.got(r, b"B-value"), r.1);
    let r = io.list(b"secret", 0);
    c.that(b"store.own_list", io.got(r, b"a\0"), r.1);
    let r = io.host_write(b"bnode/h", b"B-host", 1);
    c.status(b"store.own_host_write", OK, r);
    let r = io.host_read(b"bnode/h");
    c.that(b"store.own_host_read", io.got(r, b"B-host"), r.1);
    c.cite(b"STORE-15,STORE-16,STORE-17");
    let (s, txn) = g0(call::STORE_TXN_START);
    c.status(b"store.own_txn", OK, (s, txn));
    kv(b"b_txn", txn);
    let r = io.write(b"secret/txn", b"B-txn", txn);
    c.status(b"store.own_txn_write", OK, r);
    let r = g1(call::STORE_TXN_COMMIT, txn);
    c.status(b"store.own_txn_commit", OK, r);
    let r = io.read(b"secret/txn", 0);
    c.that(b"store.own_txn_read", io.got(r, b"B-txn"), r.1);
    // B's page where A keeps its secret, copied by the host into B's store.
    c.cite(b"STORE-3,STORE-4,STORE-5,HAR-5,SEC-10");
    let r = io.write_from(b"mem/copy", SECRET, 64, 0);
    c.status(b"mem.own_page_to_store", OK, r);
    let own = own_bytes();
    let r = io.read(b"mem/copy", 0);
    c.that(b"mem.own_page_read_back", io.got(r, &own), r.1);
    let r = io.host_read(b"mem/copy");
    c.that(b"mem.own_page_host_view", io.got(r, &own), r.1);
    let r = io.read_into(b"mem/copy", HIGH, 64);
    c.status(b"mem.store_read_into_foreign", INVALID_ADDRESS, r);
    let r = io.read_into(b"mem/copy", KEEP, 64);
    c.value(b"mem.store_read_into_a_address", 64, r);
    wid_secret
}

/// 64 bytes of B's page pattern.
fn own_bytes() -> [u8; 64] {
    let mut own = [0u8; 64];
    for (i, b) in own.iter_mut().enumerate() {
        *b = B_OWN[i % 8];
    }
    own
}

/// B's grant table at A's address: A's references name nothing of A's here.
fn b_own_grants(c: &mut Checker) {
    zero(GNT, 16 * 16);
    grant_entry(GNT, 2, VALID, SECRET / 4096);
    grant_entry(GNT, 6, VALID, HIGH / 4096);
    c.cite(b"GNT-1");
    c.status(b"grant.own_table", OK, g2(call::GRANT_SETUP_TABLE, GNT, 8));
    c.cite(b"HAR-17,GNT-6,SEC-10");
    let r = g3(call::HARNESS_GRANT_ACCESS, 5, 0, READ);
    c.status(b"grant.a_ref_5", DENIED, r);
    c.cite(b"HAR-16,GNT-6,SEC-10");
    let r = g3(call::HARNESS_GRANT_ACCESS, 12, 0, READ);
    c.status(b"grant.a_ref_12", INVALID_PARAM, r);
    c.cite(b"HAR-18,GNT-7,SEC-10");
    let r = g3(call::HARNESS_GRANT_ACCESS, 6, 0, READ);
    c.status(b"grant.a_only_page", INVALID_ADDRESS, r);
    c.cite(b"HAR-10,SEC-10");
    for off in GRANT_OFFSETS {
        let want = u64::from(B_OWN[(off % 8) as usize]);
        let r = g3(call::HARNESS_GRANT_ACCESS, 2, off, READ);
        c.value_at(b"grant.own_ref_2_reads_own", off, want, r);
    }
    let r = g3(call::HARNESS_GRANT_ACCESS, 2, 7, 0x5A);
    c.status(b"grant.own_write", OK, r);
    let b = rd8(SECRET + 7);
    c.that(b"grant.own_write_landed", b == 0x5A, u64::from(b));
    grant_entry(GNT, 5, VALID, SECRET / 4096);
    let r = g3(call::HARNESS_GRANT_ACCESS, 5, 0, READ);
    c.value(b"grant.own_ref_5_reads_own", u64::from(B_OWN[0]), r);
}

/// Host reads and writes of B's memory at A's addresses see B's memory; B's balloon, clock
/// page and console input are B's.
fn b_own_memory(c: &mut Checker, io: Io, mem: u64) {
    c.cite(b"CONS-1,HAR-6,MEM-1,SEC-10");
    let r = g2(call::CONSOLE_WRITE, SECRET + 64, 64);
    c.value(b"mem.own_page_console", 64, r);
    let r = g2(call::HARNESS_CONSOLE_READBACK, io.out(), 64);
    c.that(b"mem.own_page_readback", io.got(r, &own_bytes()), r.1);
    let (s, total) = g2(call::MEMORY_GET_MAP, KEEP + 2048, 8);
    let last = KEEP + 2048 + (total.clamp(1, 8) - 1) * 24;
    let end = rd64(last).wrapping_add(rd64(last + 8));
    c.that(b"mem.own_map", s == OK && end == mem, end);
    c.cite(b"MEM-4,MEM-6,MEM-8,HAR-11");
    let r = g2(call::MEMORY_BALLOON_RELEASE, KEEP, 1);
    c.status(b"balloon.own_release", OK, r);
    let r = g1(call::HARNESS_BALLOON_CHECK, KEEP);
    c.value(b"balloon.own_check", 1, r);
    c.value(b"balloon.own_query", 1, g0(call::MEMORY_BALLOON_QUERY));
    let r = g2(call::MEMORY_BALLOON_RECLAIM, KEEP, 1);
    c.status(b"balloon.own_reclaim", OK, r);
    let z = (0..512).all(|i| rd64(KEEP + i * 8) == 0);
    c.that(b"balloon.own_reclaim_zeroed", z, 0);
    c.value(
        b"balloon.own_query_after",
        0,
        g0(call::MEMORY_BALLOON_QUERY),
    );
    c.cite(b"CLK-1,CLK-5");
    let r = g1(call::CLOCK_REGISTER_PAGE, CLOCKPG);
    c.status(b"clock.own_page_at_a_address", OK, r);
    let r = g0(call::CLOCK_UNREGISTER_PAGE);
    c.status(b"clock.own_unregister", OK, r);
    let r = g0(call::CLOCK_UNREGISTER_PAGE);
    c.status(b"clock.own_unregister_again", NOT_FOUND, r);
    c.cite(b"HAR-7,CONS-4,SEC-10");
    let (ig, il) = put(BUF + 0x800, b"b-input");
    let r = g2(call::HARNESS_CONSOLE_INPUT, ig, il);
    c.status(b"console.own_input", OK, r);
    let r = g2(call::CONSOLE_READ, io.out(), 4096);
    c.that(b"console.own_input_only", io.got(r, b"b-input"), r.1);
}

/// B's ring at A's ring address, with requests naming A's identifiers.
fn b_ring(c: &mut Checker) {
    ring_header(2);
    c.cite(b"RING-1,RING-13");
    let (s, port) = g2(call::BASE_RING_REGISTER, RING, 2);
    c.status(b"ring.own_at_a_address", OK, (s, port));
    if s != OK {
        return;
    }
    let (pg, pl) = put(BUF + 0x300, b"secret/b");
    let reqs = [
        (call::EVENT_SEND, [P_ONLY_A, 0, 0], NOT_FOUND),
        (call::EVENT_MASK, [P_QUEUED, 0, 0], NOT_FOUND),
        (call::STORE_REMOVE, [pg, pl, 0], NOT_FOUND),
        (call::CONSOLE_WRITE, [HIGH, 8, 0], INVALID_ADDRESS),
    ];
    for (i, (id, args, _)) in reqs.iter().enumerate() {
        let slot = RING + 64 + i as u64 * 64;
        zero(slot, 64);
        wr32(slot, 100 + i as u32);
        wr32(slot + 4, id.0);
        for (k, a) in args.iter().enumerate() {
            wr64(slot + 8 + k as u64 * 8, *a);
        }
    }
    // SAFETY: `req_prod` and `cmp_prod` are 4-byte aligned fields of this VM's ring header
    // (RAM, identity mapped, never freed); the guest is the only writer of `req_prod`, the
    // host the only writer of `cmp_prod`, both with atomic accesses.
    let (prod, cmp) = unsafe {
        (
            &*((RING + 8) as *const core::sync::atomic::AtomicU32),
            &*((RING + 16) as *const core::sync::atomic::AtomicU32),
        )
    };
    prod.store(4, Ordering::Release);
    // SAFETY: an `out` to the doorbell port the host returned; it changes no register and
    // no memory.
    unsafe {
        core::arch::asm!(
            "out dx, al",
            in("dx") port as u16,
            in("al") 1u8,
            options(nostack, nomem)
        );
    }
    let t0 = now();
    while cmp.load(Ordering::Acquire) < 4 && now() - t0 < 5_000_000_000 {
        g0(call::VCPU_YIELD);
    }
    c.cite(b"RING-4,RING-5,SEC-10");
    let done = cmp.load(Ordering::Acquire);
    c.that(b"ring.completed", done == 4, u64::from(done));
    for (i, (_, _, want)) in reqs.iter().enumerate() {
        let cs = RING + 64 + 4 * 64 + i as u64 * 24;
        let (cookie, st) = (rd32(cs), rd64(cs + 8) as i64);
        let ok = cookie == 100 + i as u32 && st == *want;
        let seen = Seen::Status {
            want: *want,
            status: st,
            value: u64::from(cookie),
        };
        c.check(b"ring.request", Some(i as u64), ok, seen);
    }
    c.cite(b"RING-7");
    c.status(b"ring.own_unregister", OK, g0(call::BASE_RING_UNREGISTER));
}

/// A multicall naming A's identifiers and addresses.
fn b_multicall(c: &mut Checker, io: Io) {
    let (pg, pl) = put(BUF + 0x300, b"secret/hostnone");
    let entries = [
        (call::EVENT_SEND, [P_ONLY_A, 0, 0, 0], NOT_FOUND),
        (call::EVENT_CLOSE, [P_QUEUED, 0, 0, 0], NOT_FOUND),
        (call::STORE_READ, [pg, pl, io.out(), 4096], NOT_FOUND),
        (call::CONSOLE_WRITE, [HIGH, 8, 0, 0], INVALID_ADDRESS),
        (call::HARNESS_GRANT_ACCESS, [12, 0, READ, 0], INVALID_PARAM),
        (call::MEMORY_BALLOON_RECLAIM, [RELEASED, 4, 0, 0], BAD_STATE),
        (call::STORE_UNWATCH, [99, 0, 0, 0], NOT_FOUND),
        (call::EVENT_SEND, [1, 0, 0, 0], OK),
    ];
    for (i, (id, args, _)) in entries.iter().enumerate() {
        let e = MC + i as u64 * 72;
        zero(e, 72);
        wr32(e, id.0);
        for (k, a) in args.iter().enumerate() {
            wr64(e + 8 + k as u64 * 8, *a);
        }
    }
    let n = entries.len() as u64;
    c.cite(b"MC-1,SEC-10");
    c.value(b"multicall.ran", n, g2(call::MULTICALL_EXECUTE, MC, n));
    for (i, (_, _, want)) in entries.iter().enumerate() {
        let st = rd64(MC + i as u64 * 72 + 56) as i64;
        c.status_at(b"multicall.entry", i as u64, *want, (st, 0));
    }
}

fn parse_u64(s: &[u8]) -> u64 {
    s.iter().filter(|b| b.is_ascii_digit()).fold(0u64, |v, &b| {
        v.wrapping_mul(10).wrapping_add(u64::from(b - b'0'))
    })
}

/// Entry of the boot vCPU: RDI = BootInfo GPA.
#[no_mangle]
#[link_section = ".text._start"]
pub extern "C" fn _start(boot_info: u64) -> ! {
    // SAFETY: the loader passes the GPA of a BootInfo in identity-mapped RAM, 8-byte aligned.
    let bi: BootInfo = unsafe { core::ptr::read_volatile(boot_info as *const BootInfo) };
    // SAFETY: the loader wrote `cmdline_len` bytes at `cmdline_gpa`, identity mapped.
    let cmd = unsafe {
        core::slice::from_raw_parts(bi.cmdline_gpa as *const u8, bi.cmdline_len as usize)
    };
    match cmd.split_first() {
        Some((b'A', rest)) => role_a(rest),
        Some((b'B', _)) => role_b(&bi),
        _ => {
            write(b"unknown role\n");
            poweroff(255)
        }
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    poweroff(0xbad)
}
