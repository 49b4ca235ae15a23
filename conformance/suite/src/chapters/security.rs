//! SECURITY (spec chapter 14): hostile values through the calls that take them (addresses
//! outside guest RAM, straddling its end or wrapping, misaligned addresses, overflowing
//! sizes, out-of-range indexes, bad bytes in strings), each answered with the status the
//! service chapters name, and a host that keeps working afterwards.
//!
//! Only one guest is visible from inside a guest, so the isolation clauses are checked from
//! that guest's side: every way out of its store subtree and its RAM is refused.

use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

use pvabi::call::{self, CallId};
use pvabi::discovery::Features;
use pvabi::event::UpcallMode;
use pvabi::grant::GrantEntry;
use pvabi::memory::{MemKind, MemMapEntry};
use pvabi::multicall::MulticallEntry;
use pvabi::store::is_path_byte;
use pvabi::vcpu::VcpuState;
use pvabi::{ServiceId, Status, PAGE_SIZE};
use pvabi_guest::grant::SharedPage;
use pvabi_guest::shared::{ClockPageShared, GrantTableShared};

use super::multicall::{entry, execute, snapshot, SENTINEL};
use super::store::{events, expect, gpa, has, host_alive, ram_top, Scratch, Show};
use crate::{Case, Ctx, GuestEntry, TerminalCase};

/// The chapter's cases.
pub const CASES: &[Case] = &[
    Case {
        name: "security::hostile_buffers",
        clauses: "SEC-1,SEC-2,SEC-3,SEC-7",
        run: hostile_buffers,
    },
    Case {
        name: "security::path_changed_during_call",
        clauses: "SEC-6",
        run: path_changed_during_call,
    },
    Case {
        name: "security::alignment",
        clauses: "SEC-4",
        run: alignment,
    },
    Case {
        name: "security::overflowing_sizes",
        clauses: "SEC-5",
        run: overflowing_sizes,
    },
    Case {
        name: "security::indexes",
        clauses: "SEC-8",
        run: indexes,
    },
    Case {
        name: "security::strings",
        clauses: "SEC-9",
        run: strings,
    },
    Case {
        name: "security::isolation",
        clauses: "SEC-10",
        run: isolation,
    },
    Case {
        name: "security::port_quota",
        clauses: "SEC-11",
        run: port_quota,
    },
    Case {
        name: "security::writes_only_output_buffers",
        clauses: "SEC-12",
        run: writes_only_output_buffers,
    },
    Case {
        name: "security::authoritative_state",
        clauses: "SEC-13",
        run: authoritative_state,
    },
    Case {
        name: "security::register_state",
        clauses: "SEC-14",
        run: register_state,
    },
    Case {
        name: "security::harness_presence",
        clauses: "SEC-15",
        run: harness_presence,
    },
    Case {
        name: "security::bounded_work",
        clauses: "SEC-16",
        run: bounded_work,
    },
    Case {
        name: "security::failed_calls_change_nothing",
        clauses: "SEC-17",
        run: failed_calls_change_nothing,
    },
    Case {
        name: "security::vendor_services",
        clauses: "SEC-2,SEC-18",
        run: vendor_services,
    },
];

/// The chapter's terminal cases (each ends the guest; see [`crate::TerminalCase`]).
pub const TERMINAL: &[TerminalCase] = &[];

/// Guest functions this chapter's cases pass as vCPU entries or callbacks.
pub const FUNCTIONS: &[GuestEntry] = &[sec_vcpu_entry, sec_path_flipper];

/// A vCPU entry that returns at once (a started vCPU then stops). The cases only pass it
/// where the host must refuse the start.
extern "C" fn sec_vcpu_entry(_arg: u64, _vcpu: u64) {}

/// A range of the boot memory map that is not guest RAM (MMIO or RESERVED), if any.
fn non_ram_range(c: &Ctx<'_>) -> Option<MemMapEntry> {
    c.pv.boot_memory_map()
        .find(|e| MemKind(e.kind) == MemKind::MMIO || MemKind(e.kind) == MemKind::RESERVED)
}

fn hostile_buffers(c: &mut Ctx<'_>) {
    let Some(mut s) = Scratch::new(c, 8192) else {
        return;
    };
    let top = ram_top(c) & !(PAGE_SIZE - 1);
    let path = s.put(b"cf_sec");
    let (pg, pl) = (gpa(c, path), path.len() as u64);
    let mut bad: [(u64, &str); 6] = [
        (top, "beyond RAM"),
        (top + (1 << 40), "far beyond RAM"),
        (top - 8, "straddling the end of RAM"),
        (u64::MAX - 7, "wrapping"),
        (!7u64, "at the top of the address space"),
        (0, ""),
    ];
    if let Some(e) = non_ram_range(c) {
        bad[5] = (e.base, "in a non-RAM range of the map");
    }
    for (g, what) in bad {
        if what.is_empty() {
            continue;
        }
        let mut calls: [(CallId, [u64; 6], &str); 7] = [
            (call::CONSOLE_WRITE, [g, 64, 0, 0, 0, 0], "CONSOLE.WRITE"),
            (call::CONSOLE_READ, [g, 64, 0, 0, 0, 0], "CONSOLE.READ"),
            (call::MEMORY_GET_MAP, [g, 3, 0, 0, 0, 0], "MEMORY.GET_MAP"),
            (call::STORE_READ, [g, 16, 0, 0, 0, 0], "STORE.READ (path)"),
            (
                call::STORE_WRITE,
                [pg, pl, g, 64, 0, 0],
                "STORE.WRITE (value)",
            ),
            (
                call::MULTICALL_EXECUTE,
                [g, 1, 0, 0, 0, 0],
                "MULTICALL.EXECUTE",
            ),
            (
                call::POWER_REGISTER_CRASH_BUFFER,
                [g, 64, 0, 0, 0, 0],
                "POWER.REGISTER_CRASH_BUFFER",
            ),
        ];
        if !has(c, Features::MULTICALL) {
            calls[5] = (call::STORE_LIST, [g, 16, 0, 0, 0, 0], "STORE.LIST (path)");
        }
        if !has(c, Features::CRASH_BUFFER) {
            calls[6] = (
                call::STORE_REMOVE,
                [g, 16, 0, 0, 0, 0],
                "STORE.REMOVE (path)",
            );
        }
        for (id, args, name) in calls {
            let r = c.raw(id, args);
            if id == call::POWER_REGISTER_CRASH_BUFFER && r.status == Status::SUCCESS {
                let _ = c.raw(id, [0; 6]);
            }
            c.check(
                r.status == Status::INVALID_ADDRESS,
                format_args!(
                    "SEC-3 {name} with a buffer {what} ({g:#x}): expected INVALID_ADDRESS, got {:?}",
                    r.status
                ),
            );
            host_alive(c, name);
        }
    }
    let r = c.raw(call::STORE_READ, [pg, pl, 0, 0, 0, 0]);
    expect(
        c,
        r,
        Status::NOT_FOUND,
        "SEC-3 refused STORE.WRITE calls created nothing",
    );
    // A buffer may span adjacent guest-RAM ranges.
    let ranges: [Option<MemMapEntry>; 32] = {
        let mut a = [None; 32];
        for (d, e) in a.iter_mut().zip(c.pv.boot_memory_map()) {
            *d = Some(e);
        }
        a
    };
    let guest_ram = |e: &MemMapEntry| matches!(MemKind(e.kind), MemKind::RAM | MemKind::LOADER);
    let seam = ranges.windows(2).find_map(|w| match w {
        [Some(a), Some(b)]
            if guest_ram(a) && guest_ram(b) && a.base.checked_add(a.length) == Some(b.base) =>
        {
            Some(b.base)
        }
        _ => None,
    });
    if let Some(seam) = seam {
        let r = c.raw(call::STORE_WRITE, [pg, pl, seam - 16, 32, 0, 0]);
        expect(
            c,
            r,
            Status::SUCCESS,
            "SEC-3 STORE.WRITE of a value spanning two adjacent RAM ranges",
        );
        let r = c.raw(call::STORE_READ, [pg, pl, 0, 0, 0, 0]);
        c.check(
            r.status == Status::BUFFER_TOO_SMALL && r.value == 32,
            format_args!(
                "SEC-3 the value across two ranges: {:?} {}",
                r.status, r.value
            ),
        );
        let _ = c.raw(call::STORE_REMOVE, [pg, pl, 0, 0, 0, 0]);
    }
}

fn alignment(c: &mut Ctx<'_>) {
    let Some(buf) = c.buf(2 * PAGE_SIZE as usize, PAGE_SIZE as usize) else {
        return;
    };
    let g = gpa(c, buf);
    let mut checked = 0;
    if has(c, Features::BALLOON) {
        for off in [8u64, 2048, 1] {
            let r = c.raw(call::MEMORY_BALLOON_RELEASE, [g + off, 1, 0, 0, 0, 0]);
            if r.status == Status::SUCCESS {
                let _ = c.raw(call::MEMORY_BALLOON_RECLAIM, [g + off, 1, 0, 0, 0, 0]);
            }
            expect(c, r, Status::INVALID_ADDRESS, "SEC-4 page not 4096-aligned");
        }
        checked += 1;
    }
    if has(c, Features::GRANT) {
        for off in [8u64, 4, 1] {
            let r = c.raw(call::GRANT_SETUP_TABLE, [g + off, 1, 0, 0, 0, 0]);
            if r.status == Status::SUCCESS {
                let _ = c.raw(call::GRANT_SETUP_TABLE, [0; 6]);
            }
            expect(
                c,
                r,
                Status::INVALID_ADDRESS,
                "SEC-4 grant table not 16-aligned",
            );
        }
        checked += 1;
    }
    if has(c, Features::MULTICALL) {
        for off in [4u64, 2, 1] {
            let r = c.raw(call::MULTICALL_EXECUTE, [g + off, 1, 0, 0, 0, 0]);
            expect(
                c,
                r,
                Status::INVALID_ADDRESS,
                "SEC-4 multicall array not 8-aligned",
            );
        }
        checked += 1;
    }
    if has(c, Features::CLOCK_PAGE) {
        for off in [16u64, 8, 1] {
            let r = c.raw(call::CLOCK_REGISTER_PAGE, [g + off, 0, 0, 0, 0, 0]);
            if r.status == Status::SUCCESS {
                let _ = c.raw(call::CLOCK_UNREGISTER_PAGE, [0; 6]);
            }
            expect(
                c,
                r,
                Status::INVALID_ADDRESS,
                "SEC-4 clock page not 32-aligned",
            );
        }
        checked += 1;
    }
    if has(c, Features::STEAL_TIME) {
        // A wrongly accepted record would be written into this case's own buffer only.
        for off in [32u64, 8] {
            let r = c.raw(call::VCPU_REGISTER_STEAL_TIME, [g + off, 0, 0, 0, 0, 0]);
            expect(
                c,
                r,
                Status::INVALID_ADDRESS,
                "SEC-4 steal-time record not 64-aligned",
            );
        }
        checked += 1;
    }
    if has(c, Features::CRASH_BUFFER) {
        for off in [4u64, 1] {
            let r = c.raw(call::POWER_REGISTER_CRASH_BUFFER, [g + off, 64, 0, 0, 0, 0]);
            if r.status == Status::SUCCESS {
                let _ = c.raw(call::POWER_REGISTER_CRASH_BUFFER, [0; 6]);
            }
            expect(
                c,
                r,
                Status::INVALID_ADDRESS,
                "SEC-4 crash buffer not 8-aligned",
            );
        }
        checked += 1;
    }
    if checked == 0 {
        c.skip(format_args!(
            "the host sets none of BALLOON, GRANT, MULTICALL, CLOCK_PAGE, STEAL_TIME, CRASH_BUFFER"
        ));
    }
    host_alive(c, "misaligned addresses");
}

fn overflowing_sizes(c: &mut Ctx<'_>) {
    let Some(mut s) = Scratch::new(c, 8192) else {
        return;
    };
    // GET_MAP writes min(max_entries, total) entries: a huge max_entries must not be
    // multiplied by 24 (it wraps) nor refused when the map fits.
    let r = c.raw(call::MEMORY_GET_MAP, [0, 0, 0, 0, 0, 0]);
    let total = r.value;
    let buf = s.take(total as usize * MemMapEntry::SIZE);
    for m in [u64::MAX, u64::MAX / 24 + 1, 1 << 62] {
        let r = c.raw(call::MEMORY_GET_MAP, [gpa(c, buf), m, 0, 0, 0, 0]);
        c.check(
            r.status == Status::SUCCESS && r.value == total,
            format_args!(
                "SEC-5 GET_MAP with max_entries {m:#x} into a buffer for {total}: expected \
                 SUCCESS {total}, got {:?} {}",
                r.status, r.value
            ),
        );
    }
    if has(c, Features::BALLOON) {
        for (g, n) in [
            (!(PAGE_SIZE - 1), 1u64),
            (0u64.wrapping_sub(1 << 32), 1 << 20),
            (!(PAGE_SIZE - 1), 1 << 20),
        ] {
            let r = c.raw(call::MEMORY_BALLOON_RELEASE, [g, n, 0, 0, 0, 0]);
            c.check(
                r.status == Status::INVALID_ADDRESS,
                format_args!(
                    "SEC-5 BALLOON_RELEASE({g:#x}, {n}) overflowing: expected INVALID_ADDRESS, \
                     got {:?}",
                    r.status
                ),
            );
        }
    }
    if has(c, Features::GRANT) {
        // 16 * 2^60 wraps to 0.
        let r = c.raw(call::GRANT_SETUP_TABLE, [gpa(c, buf), 1 << 60, 0, 0, 0, 0]);
        expect(
            c,
            r,
            Status::INVALID_PARAM,
            "SEC-5 SETUP_TABLE with 2^60 entries",
        );
    }
    if has(c, Features::MULTICALL) {
        // 72 * (2^64 / 72 + 1) wraps to a small size.
        let n = u64::MAX / MulticallEntry::SIZE as u64 + 1;
        let r = c.raw(call::MULTICALL_EXECUTE, [gpa(c, buf), n, 0, 0, 0, 0]);
        expect(
            c,
            r,
            Status::INVALID_PARAM,
            "SEC-5 MULTICALL with a wrapping count",
        );
    }
    // base + length wrapping past 2^64 back into RAM.
    let path = s.put(b"cf_sec5");
    let (pg, pl) = (gpa(c, path), path.len() as u64);
    let out = s.take(64);
    let og = gpa(c, out);
    let wrap_len = u64::MAX - og + 1 + 16;
    let r = c.raw(call::STORE_WRITE, [pg, pl, pg, pl, 0, 0]);
    expect(c, r, Status::SUCCESS, "STORE.WRITE cf_sec5");
    let r = c.raw(call::STORE_READ, [pg, pl, og, wrap_len, 0, 0]);
    expect(
        c,
        r,
        Status::INVALID_ADDRESS,
        "SEC-5 STORE.READ with a length that wraps",
    );
    let r = c.raw(call::STORE_LIST, [pg, pl, og, wrap_len, 0, 0]);
    expect(
        c,
        r,
        Status::INVALID_ADDRESS,
        "SEC-5 STORE.LIST with a length that wraps",
    );
    let r = c.raw(call::CONSOLE_WRITE, [u64::MAX - 15, 64, 0, 0, 0, 0]);
    expect(
        c,
        r,
        Status::INVALID_ADDRESS,
        "SEC-5 CONSOLE.WRITE wrapping",
    );
    let r = c.raw(call::MEMORY_GET_MAP, [u64::MAX - 23, total, 0, 0, 0, 0]);
    expect(c, r, Status::INVALID_ADDRESS, "SEC-5 GET_MAP wrapping");
    let _ = c.raw(call::STORE_REMOVE, [pg, pl, 0, 0, 0, 0]);
    host_alive(c, "overflowing sizes");
}

fn indexes(c: &mut Ctx<'_>) {
    let Some(mut s) = Scratch::new(c, 4096) else {
        return;
    };
    let count = c.pv.vcpu_count().unwrap_or(1);
    let n = u64::from(count);
    // vCPU ids (VCPU-1, EVT-23, CONV-16).
    for v in [n, n + 1, 1 << 32, u64::MAX] {
        let r = c.raw(call::VCPU_KICK, [v, 0, 0, 0, 0, 0]);
        expect(
            c,
            r,
            Status::INVALID_PARAM,
            "SEC-8 VCPU.KICK of a vCPU id out of range",
        );
        let r = c.raw(call::VCPU_GET_STATUS, [v, 0, 0, 0, 0, 0]);
        expect(
            c,
            r,
            Status::INVALID_PARAM,
            "SEC-8 VCPU.GET_STATUS of an id out of range",
        );
        let stack = s.take(256);
        let top = gpa(c, stack) + 256;
        let r = c.raw(
            call::VCPU_START,
            [v, sec_vcpu_entry as *const () as usize as u64, top, 0, 0, 0],
        );
        expect(
            c,
            r,
            Status::INVALID_PARAM,
            "SEC-8 VCPU.START of an id out of range",
        );
    }
    // Ports (EVT-16, EVT-28, EVT-23).
    if let Some(ev) = events(c) {
        for p in [1024u64, 4096, 1 << 32 | 1, u64::MAX] {
            for (id, name) in [
                (call::EVENT_SEND, "SEND"),
                (call::EVENT_CLOSE, "CLOSE"),
                (call::EVENT_MASK, "MASK"),
                (call::EVENT_UNMASK, "UNMASK"),
            ] {
                let r = c.raw(id, [p, 0, 0, 0, 0, 0]);
                c.check(
                    r.status == Status::INVALID_PARAM,
                    format_args!(
                        "SEC-8 EVENT.{name}({p:#x}): expected INVALID_PARAM, got {:?}",
                        r.status
                    ),
                );
            }
        }
        if let Some(port) = c.expect_ok(c.pv.event_alloc(), "EVENT.ALLOC") {
            for v in [n, 1 << 32, u64::MAX] {
                let r = c.raw(call::EVENT_BIND_VCPU, [port.arg(), v, 0, 0, 0, 0]);
                expect(
                    c,
                    r,
                    Status::INVALID_PARAM,
                    "SEC-8 EVENT.BIND_VCPU to a bad vCPU",
                );
            }
            let _ = ev.clear_pending(port);
            let _ = c.pv.event_close(port);
            // A port in range that is not allocated.
            let r = c.raw(call::EVENT_SEND, [port.arg(), 0, 0, 0, 0, 0]);
            expect(c, r, Status::NOT_FOUND, "SEC-8 EVENT.SEND of a closed port");
        }
    }
    // Watch ids and transaction ids.
    for w in [0u64, 0xFFFF_FFFF, 1 << 32, u64::MAX] {
        let r = c.raw(call::STORE_UNWATCH, [w, 0, 0, 0, 0, 0]);
        c.check(
            r.status == Status::NOT_FOUND || (w > 0xFFFF_FFFF && r.status == Status::INVALID_PARAM),
            format_args!("SEC-8 STORE.UNWATCH({w:#x}): got {:?}", r.status),
        );
    }
    let path = s.put(b"cf_sec8");
    let r = c.raw(
        call::STORE_READ,
        [gpa(c, path), path.len() as u64, 0, 0, 1 << 33, 0],
    );
    expect(
        c,
        r,
        Status::INVALID_PARAM,
        "SEC-8 STORE.READ with txn 2^33",
    );
    if has(c, Features::STORE_TXN) {
        let r = c.raw(call::STORE_TXN_COMMIT, [0x7FFF_FFFF, 0, 0, 0, 0, 0]);
        expect(c, r, Status::NOT_FOUND, "SEC-8 TXN_COMMIT of an unknown id");
    }
    host_alive(c, "out-of-range indexes");
}

fn strings(c: &mut Ctx<'_>) {
    let Some(mut s) = Scratch::new(c, 32 * 1024) else {
        return;
    };
    let val = s.put(b"v");
    let vg = gpa(c, val);
    // Every byte value as the last byte of a one-component path.
    let mut wrong = 0u32;
    let mut first_wrong = None;
    for b in 0..=255u8 {
        let p = s.put(&[b'c', b'f', b'_', b'z', b]);
        let pg = gpa(c, p);
        let r = c.raw(call::STORE_WRITE, [pg, 5, vg, 1, 0, 0]);
        let want = if is_path_byte(b) {
            Status::SUCCESS
        } else {
            Status::INVALID_PARAM
        };
        if r.status != want {
            wrong += 1;
            first_wrong.get_or_insert((b, r.status));
        }
        if r.status == Status::SUCCESS {
            let _ = c.raw(call::STORE_REMOVE, [pg, 5, 0, 0, 0, 0]);
        }
    }
    c.check(
        wrong == 0,
        format_args!(
            "SEC-9 {wrong} byte values judged wrongly in a path (first: byte {:?})",
            first_wrong
        ),
    );
    // Paths are (gpa, len), not NUL-terminated: bytes after path_len are not read.
    let p = s.put(b"cf_zabc/def\0junk");
    let r = c.raw(call::STORE_WRITE, [gpa(c, p), 7, vg, 1, 0, 0]);
    expect(
        c,
        r,
        Status::SUCCESS,
        "SEC-9 STORE.WRITE of the first 7 bytes of a longer text",
    );
    let q = s.put(b"cf_zabc");
    let out = s.take(64);
    let r = c.raw(
        call::HARNESS_STORE_HOST_READ,
        [gpa(c, q), 7, gpa(c, out), 64, 0, 0],
    );
    c.check(
        r.status == Status::SUCCESS && r.value == 1,
        format_args!("SEC-9 the node is cf_zabc: {:?} {}", r.status, r.value),
    );
    let r = c.raw(call::STORE_LIST, [gpa(c, q), 7, gpa(c, out), 64, 0, 0]);
    c.check(
        r.status == Status::SUCCESS && r.value == 0,
        format_args!(
            "SEC-9 cf_zabc has children (the host read past path_len): {:?} {}",
            r.status, r.value
        ),
    );
    let _ = c.raw(call::STORE_REMOVE, [gpa(c, q), 7, 0, 0, 0, 0]);
    // Console bytes are bytes: invalid UTF-8, NUL and escapes are kept as they are (the
    // count is CONS-1's; whatever was written must read back unchanged).
    let bytes: &[u8] = b"\xff\xfe\x00\x1b[2J\xc3(\n";
    let b = s.put(bytes);
    let r = c.raw(call::CONSOLE_WRITE, [gpa(c, b), b.len() as u64, 0, 0, 0, 0]);
    let n = (r.value as usize).min(bytes.len());
    c.check(
        r.status == Status::SUCCESS && n > 0,
        format_args!(
            "SEC-9 CONSOLE.WRITE of non-UTF-8 bytes: {:?} {}",
            r.status, r.value
        ),
    );
    let back = s.take(bytes.len());
    let r = c.raw(
        call::HARNESS_CONSOLE_READBACK,
        [gpa(c, back), back.len() as u64, 0, 0, 0, 0],
    );
    let written = bytes.get(..n).unwrap_or(&[]);
    c.check(
        r.status == Status::SUCCESS && (back == bytes || back.ends_with(written)),
        format_args!(
            "SEC-9 the console changed non-UTF-8 bytes: {:?} {:?}",
            r.status,
            Show(back)
        ),
    );
    host_alive(c, "bad bytes in strings");
}

fn isolation(c: &mut Ctx<'_>) {
    let Some(mut s) = Scratch::new(c, 4096) else {
        return;
    };
    let val = s.put(b"x");
    let vg = gpa(c, val);
    // No store path leaves the guest's subtree.
    for p in [
        &b".."[..],
        b"../1",
        b"../../local/domain/1",
        b"/local/domain/1/x",
        b"/",
        b"cf_iso/../../x",
        b"~/x",
        b"@introduceDomain",
    ] {
        let pb = s.put(p);
        let pg = gpa(c, pb);
        for (id, args, name) in [
            (call::STORE_READ, [pg, p.len() as u64, 0, 0, 0, 0], "READ"),
            (
                call::STORE_WRITE,
                [pg, p.len() as u64, vg, 1, 0, 0],
                "WRITE",
            ),
            (call::STORE_LIST, [pg, p.len() as u64, 0, 0, 0, 0], "LIST"),
            (
                call::STORE_REMOVE,
                [pg, p.len() as u64, 0, 0, 0, 0],
                "REMOVE",
            ),
        ] {
            let r = c.raw(id, args);
            c.check(
                r.status == Status::INVALID_PARAM,
                format_args!(
                    "SEC-10 STORE.{name} of {:?}: expected INVALID_PARAM, got {:?}",
                    Show(p),
                    r.status
                ),
            );
        }
    }
    // Nothing outside the guest's RAM can be read through a call (host memory, other guests).
    let top = ram_top(c);
    let path = s.put(b"cf_iso");
    let (pg, pl) = (gpa(c, path), path.len() as u64);
    for g in [top, top + (1 << 30), 1 << 46, 0xFFFF_8000_0000_0000] {
        let r = c.raw(call::STORE_WRITE, [pg, pl, g, 64, 0, 0]);
        expect(
            c,
            r,
            Status::INVALID_ADDRESS,
            "SEC-10 STORE.WRITE from outside guest RAM",
        );
        let r = c.raw(call::CONSOLE_WRITE, [g, 64, 0, 0, 0, 0]);
        expect(
            c,
            r,
            Status::INVALID_ADDRESS,
            "SEC-10 CONSOLE.WRITE from outside guest RAM",
        );
    }
    let r = c.raw(call::STORE_READ, [pg, pl, 0, 0, 0, 0]);
    expect(
        c,
        r,
        Status::NOT_FOUND,
        "SEC-10 refused writes created nothing",
    );
    host_alive(c, "escape attempts");
}

fn port_quota(c: &mut Ctx<'_>) {
    let Some(ev) = events(c) else { return };
    let mut ports = [0u32; 1024];
    let mut n = 0usize;
    let mut last = Status::SUCCESS;
    for slot in ports.iter_mut() {
        let r = c.raw(call::EVENT_ALLOC, [0; 6]);
        last = r.status;
        if r.status != Status::SUCCESS {
            break;
        }
        *slot = r.value as u32;
        n += 1;
    }
    c.check(
        last == Status::NO_SPACE && (1..=1023).contains(&n),
        format_args!("SEC-11 EVENT.ALLOC: {n} ports before {last:?}; expected NO_SPACE by 1023"),
    );
    let held = ports.get(..n).unwrap_or(&[]);
    c.check(
        held.iter().all(|p| (1..1024).contains(p)),
        format_args!("SEC-11 EVENT.ALLOC returned a port outside 1..1024"),
    );
    for &p in held {
        let _ = ev.clear_pending(pvabi_guest::event::Port(p));
        let r = c.raw(call::EVENT_CLOSE, [u64::from(p), 0, 0, 0, 0, 0]);
        expect(c, r, Status::SUCCESS, "EVENT.CLOSE");
    }
    let r = c.raw(call::EVENT_ALLOC, [0; 6]);
    if expect(
        c,
        r,
        Status::SUCCESS,
        "SEC-11 EVENT.ALLOC after freeing the ports",
    ) {
        let _ = c.raw(call::EVENT_CLOSE, [r.value, 0, 0, 0, 0, 0]);
    }
}

fn canary_ok(b: &[u8], lo: usize, hi: usize) -> bool {
    b.iter()
        .enumerate()
        .all(|(i, x)| (lo..hi).contains(&i) || *x == 0xAA)
}

fn writes_only_output_buffers(c: &mut Ctx<'_>) {
    let Some(mut s) = Scratch::new(c, 8192) else {
        return;
    };
    let path = s.put(b"cf_sec12/n");
    let (pg, pl) = (gpa(c, path), path.len() as u64);
    let val = s.put(b"0123456789abcdef0123456789");
    let r = c.raw(call::STORE_WRITE, [pg, pl, gpa(c, val), 26, 0, 0]);
    expect(c, r, Status::SUCCESS, "STORE.WRITE");
    c.check(
        val == b"0123456789abcdef0123456789",
        format_args!("SEC-12 STORE.WRITE changed its input value buffer"),
    );
    let parent = s.put(b"cf_sec12");
    // A result buffer in the middle of a canary area: only [16, 48) may change.
    let area = s.take(96);
    for (id, args, name) in [
        (call::STORE_READ, [pg, pl, 0, 32, 0, 0], "STORE.READ"),
        (
            call::STORE_READ,
            [pg, pl, 0, 8, 0, 0],
            "STORE.READ (too small)",
        ),
        (
            call::STORE_LIST,
            [gpa(c, parent), parent.len() as u64, 0, 32, 0, 0],
            "STORE.LIST",
        ),
        (call::MEMORY_GET_MAP, [0, 1, 0, 0, 0, 0], "MEMORY.GET_MAP"),
        (call::CONSOLE_READ, [0, 32, 0, 0, 0, 0], "CONSOLE.READ"),
    ] {
        area.fill(0xAA);
        let mut args = args;
        let at = gpa(c, area) + 16;
        if id == call::MEMORY_GET_MAP || id == call::CONSOLE_READ {
            args[0] = at;
        } else {
            args[2] = at;
        }
        let hi = if id == call::MEMORY_GET_MAP {
            16 + MemMapEntry::SIZE
        } else {
            16 + args[3] as usize
        };
        let _ = c.raw(id, args);
        c.check(
            canary_ok(area, 16, hi),
            format_args!("SEC-12 {name} wrote outside its output buffer"),
        );
    }
    // A multicall entry: only status and value are written, nothing after the array.
    if has(c, Features::MULTICALL) {
        let Some(a) = c.alloc([
            entry(call::BASE_GET_ABI_VERSION, [1, 2, 3, 4, 5, 6], 0),
            entry(call::BASE_GET_VCPU_ID, [7; 6], 0),
        ]) else {
            return;
        };
        let r = execute(c, a, 1);
        expect(c, r, Status::SUCCESS, "MULTICALL.EXECUTE");
        let e = snapshot(a);
        let [e0, e1] = &e;
        c.check(
            e0.call_id == call::BASE_GET_ABI_VERSION.0
                && e0.args == [1, 2, 3, 4, 5, 6]
                && e0.flags == 0
                && e1.args == [7; 6]
                && e1.status == SENTINEL as i64
                && e1.value == SENTINEL,
            format_args!(
                "SEC-12 MULTICALL wrote other than status and value of the entries it ran"
            ),
        );
    }
    let _ = c.raw(
        call::STORE_REMOVE,
        [gpa(c, parent), parent.len() as u64, 0, 0, 0, 0],
    );
}

fn authoritative_state(c: &mut Ctx<'_>) {
    let mut checked = false;
    // The event page: pending bits the guest writes do not allocate ports.
    if let Some(ev) = events(c) {
        let page = ev.page();
        let (w, bit) = (1000 / 64, 1u64 << (1000 % 64));
        if let Some(word) = page.pending.get(w) {
            word.fetch_or(bit, Ordering::AcqRel);
            for (id, name) in [
                (call::EVENT_SEND, "SEND"),
                (call::EVENT_MASK, "MASK"),
                (call::EVENT_BIND_VCPU, "BIND_VCPU"),
                (call::EVENT_CLOSE, "CLOSE"),
            ] {
                let r = c.raw(id, [1000, 0, 0, 0, 0, 0]);
                c.check(
                    r.status == Status::NOT_FOUND,
                    format_args!(
                        "SEC-13 EVENT.{name}(1000) with the port's pending bit set by the guest: \
                         expected NOT_FOUND, got {:?}",
                        r.status
                    ),
                );
            }
            word.fetch_and(!bit, Ordering::AcqRel);
            checked = true;
        }
    }
    // A clock page: the host takes `version` from its own counter.
    if has(c, Features::CLOCK_PAGE) {
        if let Some(page) = c.alloc(ClockPageShared::new()) {
            let page: &'static ClockPageShared = page;
            if let Some(_clock) = c.expect_ok(c.pv.clock_register_page(page), "CLOCK.REGISTER_PAGE")
            {
                page.version.store(0xFFFF_FFF1, Ordering::Release);
                let r = c.raw(call::HARNESS_CLOCK_ADVANCE, [1000, 0, 0, 0, 0, 0]);
                if r.status == Status::SUCCESS {
                    let v = page.version.load(Ordering::Acquire);
                    c.check(
                        v % 2 == 0 && v < 0x8000_0000,
                        format_args!(
                            "SEC-13 after the guest wrote version 0xFFFFFFF1 the host's next \
                             update left version {v:#x}"
                        ),
                    );
                    checked = true;
                }
                let _ = c.pv.clock_unregister_page();
            }
        }
    }
    if !checked {
        c.skip(format_args!(
            "no event page and no updatable clock page here"
        ));
    }
}

fn register_state(c: &mut Ctx<'_>) {
    let Some(stack) = c.buf(4096, 64) else {
        return;
    };
    let sp = gpa(c, stack) + 4096;
    let count = c.pv.vcpu_count().unwrap_or(1);
    let entry_ok = sec_vcpu_entry as *const () as usize as u64;
    let stopped = (1..count).find(|v| {
        c.raw(call::VCPU_GET_STATUS, [u64::from(*v), 0, 0, 0, 0, 0])
            .value
            == u64::from(VcpuState::STOPPED.0)
    });
    let mut checked = false;
    if let Some(v) = stopped {
        for (e, st, what) in [
            (0x0000_8000_0000_0000u64, sp, "entry"),
            (0xFFFF_0000_0000_0000, sp, "entry"),
            (0x7FFF_0000_0000_0000, sp, "entry"),
            (entry_ok, 0x0000_8000_0000_0000, "stack"),
            (entry_ok, 0x8000_0000_0000_0000, "stack"),
        ] {
            let r = c.raw(call::VCPU_START, [u64::from(v), e, st, 0, 0, 0]);
            c.check(
                r.status == Status::INVALID_PARAM,
                format_args!(
                    "SEC-14 VCPU.START with a non-canonical {what} ({e:#x}, {st:#x}): expected \
                     INVALID_PARAM, got {:?}",
                    r.status
                ),
            );
            let st = c.raw(call::VCPU_GET_STATUS, [u64::from(v), 0, 0, 0, 0, 0]);
            c.check(
                st.value == u64::from(VcpuState::STOPPED.0),
                format_args!(
                    "SEC-14 a refused VCPU.START left vCPU {v} in state {}",
                    st.value
                ),
            );
        }
        checked = true;
    }
    if has(c, Features::UPCALL_CALLBACK) && events(c).is_some() {
        for t in [
            0x0000_8000_0000_0000u64,
            0xFFFF_0000_0000_0000,
            u64::MAX >> 1,
        ] {
            let r = c.raw(
                call::EVENT_SET_UPCALL,
                [u64::from(UpcallMode::CALLBACK.0), t, 0, 0, 0, 0],
            );
            if r.status == Status::SUCCESS {
                let _ = c.pv.set_upcall_none();
            }
            c.check(
                r.status == Status::INVALID_PARAM,
                format_args!(
                    "SEC-14 EVENT.SET_UPCALL(CALLBACK, {t:#x}): expected INVALID_PARAM, got {:?}",
                    r.status
                ),
            );
        }
        checked = true;
    }
    if !checked {
        c.skip(format_args!(
            "no stopped vCPU to start and no callback upcalls here"
        ));
    }
    host_alive(c, "non-canonical register state");
}

fn harness_presence(c: &mut Ctx<'_>) {
    // SEC-15 is about hosts that are not being certified, which a certification run cannot
    // observe; what is observable is that the offer is consistent while certifying.
    let probe = c.raw(
        call::BASE_PROBE_SERVICE,
        [u64::from(ServiceId::HARNESS.0), 0, 0, 0, 0, 0],
    );
    let bit = has(c, Features::HARNESS);
    c.check(
        bit && probe.status == Status::SUCCESS && probe.value == 10,
        format_args!(
            "while certifying: HARNESS feature bit {bit}, PROBE_SERVICE(0x7F00) {:?} {}",
            probe.status, probe.value
        ),
    );
    c.skip(format_args!(
        "SEC-15 concerns hosts that are not being certified; checked only that HARNESS is \
         offered consistently here"
    ));
}

fn bounded_work(c: &mut Ctx<'_>) {
    let Some(mut s) = Scratch::new(c, 16 * 1024) else {
        return;
    };
    // The largest multicall completes and reports every entry; one more is refused.
    if has(c, Features::MULTICALL) {
        let Some(a) = c.alloc([entry(call::CLOCK_GET_TIME, [0; 6], 0); 257]) else {
            return;
        };
        let r = execute(c, a, 256);
        c.check(
            r.status == Status::SUCCESS && r.value == 256,
            format_args!(
                "SEC-16 MULTICALL of 256 entries: {:?} {}",
                r.status, r.value
            ),
        );
        let e = snapshot(a);
        c.check(
            e.iter().take(256).all(|x| x.status == 0) && e.get(256).is_some_and(|x| x.status != 0),
            format_args!("SEC-16 not every one of the 256 entries ran"),
        );
        let r = execute(c, a, 257);
        expect(
            c,
            r,
            Status::INVALID_PARAM,
            "SEC-16 MULTICALL of 257 entries",
        );
    }
    // Transfers are bounded at 4096 bytes.
    let big = s.take(4097);
    let r = c.raw(call::CONSOLE_WRITE, [gpa(c, big), 4097, 0, 0, 0, 0]);
    expect(
        c,
        r,
        Status::INVALID_PARAM,
        "SEC-16 CONSOLE.WRITE of 4097 bytes",
    );
    let r = c.raw(call::CONSOLE_READ, [gpa(c, big), 4097, 0, 0, 0, 0]);
    expect(
        c,
        r,
        Status::INVALID_PARAM,
        "SEC-16 CONSOLE.READ of 4097 bytes",
    );
    let path = s.put(b"cf_sec16");
    let r = c.raw(
        call::STORE_WRITE,
        [gpa(c, path), path.len() as u64, gpa(c, big), 4097, 0, 0],
    );
    expect(c, r, Status::NO_SPACE, "SEC-16 STORE.WRITE of 4097 bytes");
    host_alive(c, "the largest bounded calls");
}

fn failed_calls_change_nothing(c: &mut Ctx<'_>) {
    let Some(mut s) = Scratch::new(c, 8192) else {
        return;
    };
    let mut checked = 0;
    // A grant table survives refused SETUP_TABLE calls.
    if has(c, Features::GRANT) {
        let (Some(t), Some(p)) = (
            c.alloc(GrantTableShared::<2>::new()),
            c.alloc(SharedPage::new()),
        ) else {
            return;
        };
        p.0[0].store(0x5C, Ordering::Release);
        let gfn = c.pv.translate().gpa_of_ref(p).unwrap_or(0) / PAGE_SIZE;
        if let Some(e) = t.entries.first() {
            e.gfn.store(gfn, Ordering::Relaxed);
            e.flags.store(GrantEntry::FLAG_VALID, Ordering::Release);
        }
        let tg = c.pv.translate().gpa_of_ref(t).unwrap_or(u64::MAX);
        let r = c.raw(call::GRANT_SETUP_TABLE, [tg, 2, 0, 0, 0, 0]);
        expect(c, r, Status::SUCCESS, "GRANT.SETUP_TABLE");
        for (g, n) in [(tg + 8, 2u64), (tg, 1 << 20), (ram_top(c), 2)] {
            let _ = c.raw(call::GRANT_SETUP_TABLE, [g, n, 0, 0, 0, 0]);
        }
        let r = c.raw(
            call::HARNESS_GRANT_ACCESS,
            [0, 0, pvabi::harness::GRANT_ACCESS_READ, 0, 0, 0],
        );
        c.check(
            r.status == Status::SUCCESS && r.value == 0x5C,
            format_args!(
                "SEC-17 refused SETUP_TABLE calls changed the table: {:?} {:#x}",
                r.status, r.value
            ),
        );
        let _ = c.raw(call::GRANT_SETUP_TABLE, [0; 6]);
        checked += 1;
    }
    // Balloon: a refused release releases none of its pages.
    if has(c, Features::BALLOON) {
        if let Some(pages) = c.buf(3 * PAGE_SIZE as usize, PAGE_SIZE as usize) {
            let g = gpa(c, pages);
            let q0 = c.raw(call::MEMORY_BALLOON_QUERY, [0; 6]).value;
            let r = c.raw(call::MEMORY_BALLOON_RELEASE, [g + PAGE_SIZE, 1, 0, 0, 0, 0]);
            expect(c, r, Status::SUCCESS, "BALLOON_RELEASE of the middle page");
            let r = c.raw(call::MEMORY_BALLOON_RELEASE, [g, 3, 0, 0, 0, 0]);
            expect(
                c,
                r,
                Status::ALREADY,
                "BALLOON_RELEASE over a released page",
            );
            let first = c.raw(call::HARNESS_BALLOON_CHECK, [g, 0, 0, 0, 0, 0]).value;
            let q1 = c.raw(call::MEMORY_BALLOON_QUERY, [0; 6]).value;
            c.check(
                first == 0 && q1 == q0 + 1,
                format_args!(
                    "SEC-17 a refused BALLOON_RELEASE released pages (first page {first}, count \
                     {q0} -> {q1})"
                ),
            );
            let r = c.raw(call::MEMORY_BALLOON_RECLAIM, [g, 3, 0, 0, 0, 0]);
            expect(
                c,
                r,
                Status::BAD_STATE,
                "BALLOON_RECLAIM over unreleased pages",
            );
            let mid = c
                .raw(call::HARNESS_BALLOON_CHECK, [g + PAGE_SIZE, 0, 0, 0, 0, 0])
                .value;
            c.check(
                mid == 1,
                format_args!("SEC-17 a refused BALLOON_RECLAIM reclaimed the middle page"),
            );
            let _ = c.raw(call::MEMORY_BALLOON_RECLAIM, [g + PAGE_SIZE, 1, 0, 0, 0, 0]);
            checked += 1;
        }
    }
    // Store: a refused write (value too long, bad value buffer) leaves the old value.
    let path = s.put(b"cf_sec17");
    let (pg, pl) = (gpa(c, path), path.len() as u64);
    let v = s.put(b"keep");
    let r = c.raw(call::STORE_WRITE, [pg, pl, gpa(c, v), 4, 0, 0]);
    expect(c, r, Status::SUCCESS, "STORE.WRITE");
    let big = s.take(4097);
    let _ = c.raw(call::STORE_WRITE, [pg, pl, gpa(c, big), 4097, 0, 0]);
    let _ = c.raw(call::STORE_WRITE, [pg, pl, ram_top(c) - 2, 4, 0, 0]);
    let out = s.take(16);
    let r = c.raw(call::STORE_READ, [pg, pl, gpa(c, out), 16, 0, 0]);
    c.check(
        r.status == Status::SUCCESS && out.get(..4) == Some(&b"keep"[..]) && r.value == 4,
        format_args!(
            "SEC-17 refused STORE.WRITE calls changed the value: {:?}",
            Show(out)
        ),
    );
    let _ = c.raw(call::STORE_REMOVE, [pg, pl, 0, 0, 0, 0]);
    checked += 1;
    c.check(checked > 0, format_args!("nothing checked"));
}

fn vendor_services(c: &mut Ctx<'_>) {
    // Vendor services must meet this chapter too: whatever a host offers at 0x8000..=0xFFFF
    // gets hostile registers, and services it does not offer answer NOT_SUPPORTED.
    let hostile = [
        u64::MAX,
        u64::MAX - 7,
        1 << 63,
        0xFFFF_8000_0000_0000,
        0,
        257,
    ];
    for svc in [0x8000u16, 0x8001, 0x9000, 0xC000, 0xFFFF] {
        let probe = c.raw(call::BASE_PROBE_SERVICE, [u64::from(svc), 0, 0, 0, 0, 0]);
        if !c.check(
            probe.status == Status::SUCCESS,
            format_args!("BASE.PROBE_SERVICE({svc:#x}): {:?}", probe.status),
        ) {
            continue;
        }
        if probe.value == 0 {
            for f in [0u16, 1, 0x7FFF, 0xFFFF] {
                let r = c.raw(CallId::new(ServiceId(svc), f), hostile);
                c.check(
                    r.status == Status::NOT_SUPPORTED && r.value == 0,
                    format_args!(
                        "SEC-18 unoffered vendor call {svc:#x}.{f:#x}: expected NOT_SUPPORTED 0, \
                         got {:?} {}",
                        r.status, r.value
                    ),
                );
            }
        } else {
            // An offered vendor service: each function with hostile registers must answer.
            for f in 0..(probe.value.min(16) as u16) {
                let _ = c.raw(CallId::new(ServiceId(svc), f), hostile);
                host_alive(c, "a vendor call with hostile registers");
            }
        }
    }
    host_alive(c, "vendor calls");
}

/// Shared between [`path_changed_during_call`] and the vCPU running [`sec_path_flipper`].
#[repr(C)]
struct Race {
    stop: AtomicU32,
    done: AtomicU32,
    flips: AtomicU64,
    path: [AtomicU8; 8],
}

/// Most flips [`sec_path_flipper`] makes before it gives up waiting for `stop`.
const MAX_FLIPS: u64 = 4_000_000;

/// Flips the last component of a [`Race`] path between `ok` and `..` until told to stop.
extern "C" fn sec_path_flipper(arg: u64, _vcpu: u64) {
    let p = core::ptr::with_exposed_provenance::<Race>(arg as usize);
    // SAFETY: `arg` is the exposed address of a `Race` that `path_changed_during_call` moved
    // into the suite's arena, which lives for the rest of the program; the value is only
    // accessed through atomics (shared references are sound), and the address is non-null
    // and aligned because it came from a reference.
    let Some(race) = (unsafe { p.as_ref() }) else {
        return;
    };
    let mut i = 0u64;
    while race.stop.load(Ordering::Acquire) == 0 && i < MAX_FLIPS {
        let (a, b) = if i % 2 == 0 {
            (b'.', b'.')
        } else {
            (b'o', b'k')
        };
        if let (Some(x), Some(y)) = (race.path.get(5), race.path.get(6)) {
            x.store(a, Ordering::Relaxed);
            y.store(b, Ordering::Relaxed);
        }
        i += 1;
    }
    race.flips.store(i, Ordering::Release);
    race.done.store(1, Ordering::Release);
}

fn path_changed_during_call(c: &mut Ctx<'_>) {
    // Another vCPU rewrites a path while this one passes it to STORE.WRITE: the host must
    // validate and use one copy, so no node named `..` can ever appear.
    let Some(mut s) = Scratch::new(c, 4096) else {
        return;
    };
    let count = c.pv.vcpu_count().unwrap_or(1);
    let Some(v) = (1..count).find(|v| c.pv.vcpu_status(*v) == Ok(VcpuState::STOPPED)) else {
        c.skip(format_args!("no second vCPU is stopped and free to start"));
        return;
    };
    let init = *b"cf_r/ok\0";
    let Some(race) = c.alloc(Race {
        stop: AtomicU32::new(0),
        done: AtomicU32::new(0),
        flips: AtomicU64::new(0),
        path: init.map(AtomicU8::new),
    }) else {
        return;
    };
    let race: &'static Race = race;
    let parent = s.put(b"cf_r");
    let (pp, pl) = (gpa(c, parent), parent.len() as u64);
    let val = s.put(b"v");
    let vg = gpa(c, val);
    let r = c.raw(call::STORE_WRITE, [pp, pl, vg, 1, 0, 0]);
    expect(c, r, Status::SUCCESS, "STORE.WRITE cf_r");
    let pg = c.pv.translate().gpa_of_ref(&race.path).unwrap_or(u64::MAX);
    let Some(stack) = c.alloc(pvabi_guest::vcpu::VcpuStack([0u8; 8192])) else {
        return;
    };
    let arg = (race as *const Race).expose_provenance() as u64;
    if c.expect_ok(
        c.pv.vcpu_start(v, sec_path_flipper, stack, arg),
        "VCPU.START of the flipping vCPU",
    )
    .is_none()
    {
        return;
    }
    let (mut ok, mut refused, mut other) = (0u32, 0u32, 0u32);
    for _ in 0..3000 {
        let r = c.raw(call::STORE_WRITE, [pg, 7, vg, 1, 0, 0]);
        match r.status {
            Status::SUCCESS => ok += 1,
            Status::INVALID_PARAM => refused += 1,
            _ => other += 1,
        }
    }
    race.stop.store(1, Ordering::Release);
    let mut waited = 0u32;
    while race.done.load(Ordering::Acquire) == 0 && waited < 1_000_000 {
        let _ = c.pv.vcpu_yield();
        waited += 1;
    }
    c.check(
        race.done.load(Ordering::Acquire) == 1,
        format_args!("the flipping vCPU did not finish"),
    );
    c.check(
        other == 0,
        format_args!("SEC-6 {other} STORE.WRITE calls answered neither SUCCESS nor INVALID_PARAM"),
    );
    let out = s.take(256);
    let r = c.raw(call::STORE_LIST, [pp, pl, gpa(c, out), 256, 0, 0]);
    let names = out.get(..r.value as usize).unwrap_or(&[]);
    let allowed = |n: &[u8]| n.is_empty() || n == b"ok" || n == b"o." || n == b".k";
    c.check(
        r.status == Status::SUCCESS && names.split(|b| *b == 0).all(allowed),
        format_args!(
            "SEC-6 a path changed during the call produced the nodes {:?} ({:?}; {ok} written, \
             {refused} refused, {} flips)",
            Show(names),
            r.status,
            race.flips.load(Ordering::Acquire)
        ),
    );
    let _ = c.raw(call::STORE_REMOVE, [pp, pl, 0, 0, 0, 0]);
    // The flipper returned, which stops its vCPU.
    let mut stopped = false;
    for _ in 0..100_000 {
        if c.pv.vcpu_status(v) == Ok(VcpuState::STOPPED) {
            stopped = true;
            break;
        }
        let _ = c.pv.vcpu_yield();
    }
    c.check(stopped, format_args!("the flipping vCPU {v} did not stop"));
}
