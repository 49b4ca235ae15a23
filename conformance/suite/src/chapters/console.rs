//! CONSOLE (spec chapter 5, `CONS-*`): output observed through HARNESS.CONSOLE_READBACK,
//! input queued through HARNESS.CONSOLE_INPUT, the transfer limit, bad buffers, the input
//! bound and writes from several vCPUs.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use pvabi::call;
use pvabi::console::MAX_TRANSFER;
use pvabi::Status;
use pvabi_guest::vcpu::VcpuStack;

use super::conv::drain_input;
use crate::{Case, Ctx, GuestEntry};

/// The chapter's cases.
pub const CASES: &[Case] = &[
    Case {
        name: "console::write_appends",
        clauses: "CONS-1",
        run: write_appends,
    },
    Case {
        name: "console::bytes_unchanged",
        clauses: "CONS-7",
        run: bytes_unchanged,
    },
    Case {
        name: "console::transfer_limit",
        clauses: "CONS-2",
        run: transfer_limit,
    },
    Case {
        name: "console::write_byte",
        clauses: "CONS-3",
        run: write_byte,
    },
    Case {
        name: "console::read_input",
        clauses: "CONS-4",
        run: read_input,
    },
    Case {
        name: "console::bad_buffers",
        clauses: "CONS-5,CONS-8",
        run: bad_buffers,
    },
    Case {
        name: "console::input_bounded",
        clauses: "CONS-8",
        run: input_bounded,
    },
    Case {
        name: "console::writes_not_interleaved",
        clauses: "CONS-6,CONV-18",
        run: writes_not_interleaved,
    },
];

/// Guest functions this chapter starts vCPUs at.
pub const FUNCTIONS: &[GuestEntry] = &[console_writer];

static MARKS: AtomicU32 = AtomicU32::new(0);

/// Writes a fresh 8-byte marker ending in `tag` to the console and returns it, so that a
/// later [`tail_is`] shows whether anything was written after it. When the marker cannot be
/// written and read back (CONSOLE.WRITE or HARNESS.CONSOLE_READBACK broken, which other
/// cases check), the calling case is skipped with the reason instead.
pub(crate) fn marker_then(c: &mut Ctx<'_>, tag: u8) -> Option<[u8; 8]> {
    let n = MARKS.fetch_add(1, Ordering::Relaxed);
    let mut m = *b"[m0000 ]";
    for (i, slot) in m.iter_mut().skip(2).take(4).enumerate() {
        let d = (n >> (12 - 4 * i as u32)) & 0xf;
        *slot = b"0123456789abcdef"[d as usize];
    }
    m[6] = tag;
    let b = c.buf(16, 1)?;
    if let Some(dst) = b.get_mut(..8) {
        dst.copy_from_slice(&m);
    }
    let gpa = c.gpa(b);
    let r = c.raw(call::CONSOLE_WRITE, [gpa, 8, 0, 0, 0, 0]);
    let back = b.get_mut(8..).unwrap_or(&mut []);
    let seen = c.pv.harness_console_readback(back);
    if r.status.is_success() && seen == Ok(8) && *back == m {
        Some(m)
    } else {
        c.skip(format_args!(
            "a console marker could not be written and read back (CONSOLE.WRITE {r:?}, HARNESS.CONSOLE_READBACK {seen:?})"
        ));
        None
    }
}

/// Checks that the newest console output bytes are exactly `want`.
pub(crate) fn tail_is(c: &mut Ctx<'_>, want: &[u8], what: &str) -> bool {
    let Some(b) = c.buf(want.len(), 1) else {
        return false;
    };
    match c.pv.harness_console_readback(b) {
        Ok(n) => c.check(
            n == want.len() && &b[..n] == want,
            format_args!(
                "{what}: console output ends with {:?}, want {:?}",
                Bytes(b.get(..n).unwrap_or(&[])),
                Bytes(want)
            ),
        ),
        Err(e) => c.check(false, format_args!("HARNESS.CONSOLE_READBACK: {e:?}")),
    }
}

/// Bytes shown as an escaped string in details.
struct Bytes<'a>(&'a [u8]);

impl core::fmt::Debug for Bytes<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("\"")?;
        for &b in self.0.iter().take(48) {
            for ch in core::ascii::escape_default(b) {
                f.write_fmt(format_args!("{}", ch as char))?;
            }
        }
        if self.0.len() > 48 {
            f.write_str("...")?;
        }
        f.write_str("\"")
    }
}

/// Hostile buffers (address, length): beyond RAM, straddling its end, wrapping the address
/// space. `None` (and a skip) when the end of RAM is unknown.
pub(crate) fn hostile_buffers(c: &mut Ctx<'_>) -> Option<[(u64, u64); 3]> {
    let end = c.ram_end();
    if end < 4096 {
        c.skip(format_args!(
            "the end of guest RAM is unknown (no boot info)"
        ));
        return None;
    }
    Some([
        (end.saturating_add(0x10_0000), 16),
        (end - 8, 64),
        (u64::MAX - 7, 64),
    ])
}

fn bytes_unchanged(c: &mut Ctx<'_>) {
    // Every byte value, escape sequences and NUL included, comes back unchanged (the count
    // the write returns is CONS-1's business, not checked here).
    let Some(b) = c.buf(256 + 8, 1) else {
        return;
    };
    for (i, x) in b.iter_mut().enumerate() {
        *x = (i as u8).wrapping_mul(7).wrapping_add(0x1b);
    }
    if let Some(s) = b.get_mut(0..8) {
        s.copy_from_slice(b"\x1b[2J\x00\r\n\x07");
    }
    let gpa = c.gpa(b);
    let r = c.raw(call::CONSOLE_WRITE, [gpa, b.len() as u64, 0, 0, 0, 0]);
    if c.expect_ok(r.into_result(), "CONSOLE.WRITE").is_none() {
        return;
    }
    let want: &[u8] = b;
    tail_is(c, want, "after writing every byte value");
    for byte in [0x00u8, 0x1b, 0x7f, 0xff] {
        let r = c.raw(call::CONSOLE_WRITE_BYTE, [u64::from(byte), 0, 0, 0, 0, 0]);
        c.expect_ok(r.into_result(), "CONSOLE.WRITE_BYTE");
    }
    tail_is(
        c,
        &[0x00, 0x1b, 0x7f, 0xff],
        "after WRITE_BYTE of control bytes",
    );
}

fn write_appends(c: &mut Ctx<'_>) {
    let Some(b) = c.buf(64, 1) else {
        return;
    };
    for (i, x) in b.iter_mut().enumerate() {
        *x = b'A' + (i % 26) as u8;
    }
    let gpa = c.gpa(b);
    let r = c.raw(call::CONSOLE_WRITE, [gpa, b.len() as u64, 0, 0, 0, 0]);
    c.check(
        r.status.is_success() && r.value == b.len() as u64,
        format_args!("CONSOLE.WRITE of {} bytes: {r:?}", b.len()),
    );
    let want: &[u8] = b;
    tail_is(c, want, "after one CONSOLE.WRITE");
    // Two writes appear in order.
    let Some(two) = c.buf(10, 1) else {
        return;
    };
    two.copy_from_slice(b"first.2nd.");
    let g = c.gpa(two);
    let r1 = c.raw(call::CONSOLE_WRITE, [g, 6, 0, 0, 0, 0]);
    let r2 = c.raw(call::CONSOLE_WRITE, [g + 6, 4, 0, 0, 0, 0]);
    c.check(
        r1.value == 6 && r2.value == 4 && r1.status.is_success() && r2.status.is_success(),
        format_args!("two CONSOLE.WRITEs: {r1:?}, {r2:?}"),
    );
    tail_is(c, b"first.2nd.", "after two CONSOLE.WRITEs");
    // Through the shim's writer too.
    let w = c.pv.console().write(b"via-shim-writer");
    c.check(
        w == Ok(15) || w == Err(Status::INVALID_ADDRESS),
        format_args!("Console::write: {w:?}"),
    );
    if w == Ok(15) {
        tail_is(c, b"via-shim-writer", "after Console::write");
    }
}

fn transfer_limit(c: &mut Ctx<'_>) {
    let max = MAX_TRANSFER as usize;
    let Some(b) = c.buf(max + 1, 1) else {
        return;
    };
    for (i, x) in b.iter_mut().enumerate() {
        *x = b'a' + (i % 26) as u8;
    }
    let gpa = c.gpa(b);
    let Some(mark) = marker_then(c, b'L') else {
        return;
    };
    let r = c.raw(call::CONSOLE_WRITE, [gpa, max as u64 + 1, 0, 0, 0, 0]);
    c.expect_status(r, Status::INVALID_PARAM, "CONSOLE.WRITE of 4097 bytes");
    c.check(
        r.value == 0,
        format_args!("failed CONSOLE.WRITE value {:#x}", r.value),
    );
    tail_is(c, &mark, "after CONSOLE.WRITE of 4097 bytes");
    let r = c.raw(call::CONSOLE_WRITE, [gpa, u64::MAX, 0, 0, 0, 0]);
    c.check(
        r.status == Status::INVALID_PARAM || r.status == Status::INVALID_ADDRESS,
        format_args!("CONSOLE.WRITE of u64::MAX bytes: {r:?}"),
    );
    // 4096 bytes is allowed.
    let r = c.raw(call::CONSOLE_WRITE, [gpa, max as u64, 0, 0, 0, 0]);
    c.check(
        r.status.is_success(),
        format_args!("CONSOLE.WRITE of 4096 bytes: {r:?}"),
    );
    if let Some(want) = b.get(max - 64..max) {
        let mut tail = [0u8; 64];
        tail.copy_from_slice(want);
        tail_is(c, &tail, "after CONSOLE.WRITE of 4096 bytes");
    }
    // READ: the same limit, and no input consumed by the refused read.
    drain_input(c);
    let Some(inp) = c.buf(3, 1) else {
        return;
    };
    inp.copy_from_slice(b"lim");
    if c.expect_ok(c.pv.harness_console_input(inp), "HARNESS.CONSOLE_INPUT")
        .is_none()
    {
        return;
    }
    let r = c.raw(call::CONSOLE_READ, [gpa, max as u64 + 1, 0, 0, 0, 0]);
    c.expect_status(r, Status::INVALID_PARAM, "CONSOLE.READ of 4097 bytes");
    let r = c.raw(call::CONSOLE_READ, [gpa, max as u64, 0, 0, 0, 0]);
    c.check(
        r.status.is_success() && r.value == 3 && b.get(0..3) == Some(b"lim".as_slice()),
        format_args!("CONSOLE.READ of 4096 after a refused read: {r:?}"),
    );
}

fn write_byte(c: &mut Ctx<'_>) {
    for byte in [b'Q', 0x00, 0xff, 0x1b] {
        let r = c.raw(call::CONSOLE_WRITE_BYTE, [u64::from(byte), 0, 0, 0, 0, 0]);
        c.check(
            r.status.is_success() && r.value == 1,
            format_args!("CONSOLE.WRITE_BYTE({byte:#x}): {r:?}"),
        );
    }
    tail_is(
        c,
        &[b'Q', 0x00, 0xff, 0x1b],
        "after four CONSOLE.WRITE_BYTEs",
    );
    c.expect_ok(c.pv.console().write_byte(b'z'), "Console::write_byte");
    tail_is(c, b"z", "after Console::write_byte");
    let Some(mark) = marker_then(c, b'B') else {
        return;
    };
    for bad in [0x100u64, 0x141, 1 << 8 | 0xff, 1 << 63, u64::MAX] {
        let r = c.raw(call::CONSOLE_WRITE_BYTE, [bad, 0, 0, 0, 0, 0]);
        c.check(
            r.status == Status::INVALID_PARAM && r.value == 0,
            format_args!("CONSOLE.WRITE_BYTE({bad:#x}): {r:?}"),
        );
    }
    tail_is(c, &mark, "after refused CONSOLE.WRITE_BYTEs");
}

fn read_input(c: &mut Ctx<'_>) {
    drain_input(c);
    let Some(b) = c.buf(64, 1) else {
        return;
    };
    let gpa = c.gpa(b);
    let r = c.raw(call::CONSOLE_READ, [gpa, 64, 0, 0, 0, 0]);
    c.check(
        r.status.is_success() && r.value == 0,
        format_args!("CONSOLE.READ with no input queued: {r:?}"),
    );
    let Some(inp) = c.buf(11, 1) else {
        return;
    };
    inp.copy_from_slice(b"hello world");
    if c.expect_ok(c.pv.harness_console_input(inp), "HARNESS.CONSOLE_INPUT")
        .is_none()
    {
        return;
    }
    let Some(inp2) = c.buf(3, 1) else {
        return;
    };
    inp2.copy_from_slice(b"\x00\xff\n");
    c.expect_ok(c.pv.harness_console_input(inp2), "HARNESS.CONSOLE_INPUT");
    let r = c.raw(call::CONSOLE_READ, [gpa, 5, 0, 0, 0, 0]);
    c.check(
        r.status.is_success() && r.value == 5 && b.get(0..5) == Some(b"hello".as_slice()),
        format_args!(
            "first CONSOLE.READ of 5: {r:?}, {:?}",
            Bytes(b.get(0..5).unwrap_or(&[]))
        ),
    );
    b.fill(0);
    let r = c.raw(call::CONSOLE_READ, [gpa, 64, 0, 0, 0, 0]);
    c.check(
        r.status.is_success()
            && r.value == 9
            && b.get(0..9) == Some(b" world\x00\xff\n".as_slice()),
        format_args!(
            "second CONSOLE.READ: {r:?}, {:?}",
            Bytes(b.get(0..9).unwrap_or(&[]))
        ),
    );
    let r = c.raw(call::CONSOLE_READ, [gpa, 64, 0, 0, 0, 0]);
    c.check(
        r.status.is_success() && r.value == 0,
        format_args!("CONSOLE.READ after the queue drained: {r:?}"),
    );
    let r = c.raw(call::CONSOLE_READ, [gpa, 0, 0, 0, 0, 0]);
    c.check(
        r.status.is_success() && r.value == 0,
        format_args!("CONSOLE.READ of 0 bytes: {r:?}"),
    );
}

fn bad_buffers(c: &mut Ctx<'_>) {
    let Some(bad) = hostile_buffers(c) else {
        return;
    };
    let Some(mark) = marker_then(c, b'A') else {
        return;
    };
    for (gpa, len) in bad {
        let r = c.raw(call::CONSOLE_WRITE, [gpa, len, 0, 0, 0, 0]);
        c.check(
            r.status == Status::INVALID_ADDRESS && r.value == 0,
            format_args!("CONSOLE.WRITE({gpa:#x}, {len}): {r:?}"),
        );
    }
    tail_is(c, &mark, "after CONSOLE.WRITEs of bad buffers");
    // Zero length: success without looking at the address.
    for (gpa, _) in bad {
        let r = c.raw(call::CONSOLE_WRITE, [gpa, 0, 0, 0, 0, 0]);
        c.check(
            r.status.is_success() && r.value == 0,
            format_args!("CONSOLE.WRITE({gpa:#x}, 0): {r:?}"),
        );
    }
    tail_is(c, &mark, "after zero-length CONSOLE.WRITEs");
    // Reads into bad buffers consume nothing (CONS-5) and lose no input (CONS-8).
    drain_input(c);
    let Some(inp) = c.buf(4, 1) else {
        return;
    };
    inp.copy_from_slice(b"keep");
    if c.expect_ok(c.pv.harness_console_input(inp), "HARNESS.CONSOLE_INPUT")
        .is_none()
    {
        return;
    }
    for (gpa, len) in bad {
        let r = c.raw(call::CONSOLE_READ, [gpa, len, 0, 0, 0, 0]);
        c.check(
            r.status == Status::INVALID_ADDRESS && r.value == 0,
            format_args!("CONSOLE.READ({gpa:#x}, {len}): {r:?}"),
        );
        let r = c.raw(call::CONSOLE_READ, [gpa, 0, 0, 0, 0, 0]);
        c.check(
            r.status.is_success() && r.value == 0,
            format_args!("CONSOLE.READ({gpa:#x}, 0): {r:?}"),
        );
    }
    let Some(out) = c.buf(16, 1) else {
        return;
    };
    let n = c.pv.console().read(out);
    c.check(
        n == Ok(4) && out.get(0..4) == Some(b"keep".as_slice()),
        format_args!(
            "input after failed reads: {n:?} {:?}",
            Bytes(out.get(0..4).unwrap_or(&[]))
        ),
    );
}

fn input_bounded(c: &mut Ctx<'_>) {
    drain_input(c);
    let max = MAX_TRANSFER as usize;
    let Some(chunk) = c.buf(max, 1) else {
        return;
    };
    // Queue numbered chunks until the host refuses (at most 1 MiB).
    let mut queued = 0u32;
    let mut refused = None;
    for i in 0..256u32 {
        for (j, x) in chunk.iter_mut().enumerate() {
            *x = (i as u8) ^ (j as u8);
        }
        match c.pv.harness_console_input(chunk) {
            Ok(()) => queued += 1,
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    c.check(
        queued >= 1,
        format_args!("the host queued less than 4096 bytes of console input"),
    );
    c.check(
        refused == Some(Status::NO_SPACE),
        format_args!(
            "queueing console input: {queued} chunks of 4096 accepted, then {refused:?} (want a bound, NO_SPACE)"
        ),
    );
    // A failed read loses nothing: then every queued byte comes back in order.
    let far = c.ram_end().saturating_add(0x10_0000);
    let r = c.raw(call::CONSOLE_READ, [far, 64, 0, 0, 0, 0]);
    c.expect_status(r, Status::INVALID_ADDRESS, "CONSOLE.READ outside RAM");
    let mut got = 0u64;
    let mut bad_at = None;
    for _ in 0..(queued as usize * 2 + 2) {
        match c.pv.console().read(chunk) {
            Ok(0) => break,
            Ok(n) => {
                for (k, x) in chunk.iter().take(n).enumerate() {
                    let pos = got + k as u64;
                    let (i, j) = (pos / max as u64, pos % max as u64);
                    if bad_at.is_none() && *x != (i as u8) ^ (j as u8) {
                        bad_at = Some(pos);
                    }
                }
                got += n as u64;
            }
            Err(e) => {
                c.check(false, format_args!("CONSOLE.READ while draining: {e:?}"));
                break;
            }
        }
    }
    c.check(
        got == u64::from(queued) * max as u64 && bad_at.is_none(),
        format_args!(
            "drained {got} bytes of {} queued, first wrong byte at {bad_at:?}",
            u64::from(queued) * max as u64
        ),
    );
}

/// Bytes of one write in [`writes_not_interleaved`].
const CHUNK: usize = 64;
/// Writes per writer.
const WRITES: usize = 16;

/// What the writer on the second vCPU shares with the case.
#[repr(C, align(64))]
struct WriterShared {
    /// The handle the writer calls through (written before the vCPU starts, then only
    /// read).
    pv: pvabi_guest::Pvabi,
    /// GPA of the writer's buffer.
    buf_gpa: AtomicU64,
    /// 1 while the case waits, 2 once the writer is done, 3 if one of its writes failed.
    state: AtomicU32,
}

/// Entry of the second vCPU: `arg` is the address of a [`WriterShared`] in the suite's
/// arena (the started vCPU shares the guest's address space, `VCPU-7`).
extern "C" fn console_writer(arg: u64, _vcpu: u64) {
    let Some(sh) = SharedPtr::from_arg(arg) else {
        return;
    };
    let pv = sh.pv;
    let gpa = sh.buf_gpa.load(Ordering::Acquire);
    let mut ok = true;
    for _ in 0..WRITES {
        ok &= writer_call(&pv, gpa).status.is_success();
    }
    sh.state.store(if ok { 2 } else { 3 }, Ordering::Release);
    let _ = pv.vcpu_stop();
}

fn writer_call(pv: &pvabi_guest::Pvabi, gpa: u64) -> pvabi::Ret {
    // SAFETY: `gpa` names the writer's own buffer from the suite's arena (guest RAM), which
    // the host only reads for CONSOLE.WRITE and which no Rust reference writes meanwhile.
    unsafe { pv.call_unchecked(call::CONSOLE_WRITE, [gpa, CHUNK as u64, 0, 0, 0, 0]) }
}

/// A [`WriterShared`] handed to the writer vCPU as an address.
struct SharedPtr;

impl SharedPtr {
    fn from_arg(arg: u64) -> Option<&'static WriterShared> {
        let p = usize::try_from(arg).ok()?;
        if p == 0 || p % core::mem::align_of::<WriterShared>() != 0 {
            return None;
        }
        let p = core::ptr::with_exposed_provenance::<WriterShared>(p);
        // SAFETY: the case passes the address of a `WriterShared` it moved into the suite's
        // arena (never freed, valid for the rest of the program, aligned as checked) and
        // keeps only shared access to it; `pv` is written before the vCPU starts and never
        // after, every other field is atomic, so shared references from both vCPUs are
        // sound.
        Some(unsafe { &*p })
    }
}

fn writes_not_interleaved(c: &mut Ctx<'_>) {
    let count = c.pv.info().vcpu_count;
    if count < 2 {
        c.skip(format_args!("the guest has one vCPU"));
        return;
    }
    if c.platform.in_process()
        && !crate::guest_functions().any(|f| f as usize == console_writer as GuestEntry as usize)
    {
        c.skip(format_args!(
            "console::FUNCTIONS is not listed in chapters::FUNCTIONS, so the in-process host does not accept the writer as a vCPU entry"
        ));
        return;
    }
    let Ok(me) = c.pv.vcpu_id() else {
        c.check(false, format_args!("BASE.GET_VCPU_ID failed"));
        return;
    };
    let Some(other) = (0..count)
        .find(|v| *v != me && c.pv.vcpu_status(*v) == Ok(pvabi::vcpu::VcpuState::STOPPED))
    else {
        c.skip(format_args!("no stopped vCPU to start"));
        return;
    };
    let Some(wbuf) = c.buf(CHUNK, 1) else {
        return;
    };
    wbuf.fill(b'W');
    let Some(mbuf) = c.buf(CHUNK, 1) else {
        return;
    };
    mbuf.fill(b'm');
    let wgpa = c.gpa(wbuf);
    let mgpa = c.gpa(mbuf);
    let Some(sh) = c.alloc(WriterShared {
        pv: c.pv,
        buf_gpa: AtomicU64::new(wgpa),
        state: AtomicU32::new(1),
    }) else {
        return;
    };
    let sh: &'static WriterShared = sh;
    let Some(stack) = c.alloc(VcpuStack::<16384>::new()) else {
        return;
    };
    if c.expect_ok(
        c.pv.vcpu_start(
            other,
            console_writer,
            stack,
            sh as *const WriterShared as usize as u64,
        ),
        "VCPU.START of the writer",
    )
    .is_none()
    {
        return;
    }
    let mut mine_ok = true;
    for _ in 0..WRITES {
        let r = c.raw(call::CONSOLE_WRITE, [mgpa, CHUNK as u64, 0, 0, 0, 0]);
        mine_ok &= r.status.is_success();
    }
    c.check(
        mine_ok,
        format_args!("a CONSOLE.WRITE on the boot vCPU failed"),
    );
    // Wait (bounded) for the writer: block with short deadlines so the virtual clock moves.
    let mut done = 0;
    for _ in 0..2000 {
        done = sh.state.load(Ordering::Acquire);
        if done != 1 {
            break;
        }
        let now = c.pv.time_ns().unwrap_or(0);
        let _ = c.pv.vcpu_block(Some(now.saturating_add(100_000)));
    }
    c.check(
        done == 2,
        format_args!("the writer vCPU ended in state {done}"),
    );
    // Let it reach STOPPED before the next case.
    for _ in 0..100 {
        if c.pv.vcpu_status(other) == Ok(pvabi::vcpu::VcpuState::STOPPED) {
            break;
        }
        let _ = c.pv.vcpu_yield();
    }
    let total = 2 * WRITES * CHUNK;
    let Some(out) = c.buf(total, 1) else {
        return;
    };
    let n = c.pv.harness_console_readback(out);
    c.check(
        n == Ok(total),
        format_args!("HARNESS.CONSOLE_READBACK: {n:?}"),
    );
    let (mut w, mut m) = (0, 0);
    for (i, ch) in out.chunks(CHUNK).enumerate() {
        let first = ch.first().copied().unwrap_or(0);
        if !c.check(
            ch.iter().all(|x| *x == first) && (first == b'W' || first == b'm'),
            format_args!("chunk {i} of the output is interleaved: {:?}", Bytes(ch)),
        ) {
            return;
        }
        if first == b'W' {
            w += 1;
        } else {
            m += 1;
        }
    }
    c.check(
        w == WRITES && m == WRITES,
        format_args!("output holds {w} writer chunks and {m} boot-vCPU chunks"),
    );
}
