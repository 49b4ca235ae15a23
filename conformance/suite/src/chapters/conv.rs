//! CALLING CONVENTION (spec chapter 2, `CONV-*`): call ids, unknown calls, RAX with high bits,
//! the status and value registers, argument registers, failures without effect, completion
//! at the gate, byte order, page size, narrow arguments and reserved fields.

use pvabi::call::{self, CALLS};
use pvabi::memory::MemMapEntry;
use pvabi::ring::RingHeader;
use pvabi::vcpu::VcpuState;
use pvabi::{BootInfo, CallId, Features, ServiceId, Status};

use super::console::{marker_then, tail_is};
use super::gates::cross;
use crate::{Case, Ctx};

/// The chapter's cases.
pub const CASES: &[Case] = &[
    Case {
        name: "conv::call_id_split",
        clauses: "CONV-1,CONV-2",
        run: call_id_split,
    },
    Case {
        name: "conv::unknown_calls",
        clauses: "CONV-3,CONV-7",
        run: unknown_calls,
    },
    Case {
        name: "conv::rax_high_bits",
        clauses: "CONV-4",
        run: rax_high_bits,
    },
    Case {
        name: "conv::status_encoding",
        clauses: "CONV-5,CONV-6,CONV-11",
        run: status_encoding,
    },
    Case {
        name: "conv::byte_order",
        clauses: "CONV-9",
        run: byte_order,
    },
    Case {
        name: "conv::page_size",
        clauses: "CONV-10",
        run: page_size,
    },
    Case {
        name: "conv::extra_arguments_ignored",
        clauses: "CONV-12",
        run: extra_arguments_ignored,
    },
    Case {
        name: "conv::failed_call_has_no_effect",
        clauses: "CONV-13,CONV-11",
        run: failed_call_has_no_effect,
    },
    Case {
        name: "conv::complete_at_gate",
        clauses: "CONV-14",
        run: complete_at_gate,
    },
    Case {
        name: "conv::one_of_the_statuses",
        clauses: "CONV-15",
        run: one_of_the_statuses,
    },
    Case {
        name: "conv::narrow_arguments",
        clauses: "CONV-16",
        run: narrow_arguments,
    },
    Case {
        name: "conv::reserved_fields",
        clauses: "CONV-17",
        run: reserved_fields,
    },
];

/// Service ids the spec reserves (not in the services table, below the vendor range).
pub(crate) const RESERVED_SERVICES: [u16; 6] = [0x000a, 0x0010, 0x0100, 0x7eff, 0x7f01, 0x7fff];

/// Every service of the services table.
pub(crate) fn table_services() -> impl Iterator<Item = ServiceId> {
    ServiceId::V1
        .iter()
        .copied()
        .chain(core::iter::once(ServiceId::HARNESS))
}

fn call_id_split(c: &mut Ctx<'_>) {
    // CONV-1: every id of the function table is `service << 16 | function`.
    for ci in CALLS {
        let (s, f) = (ci.id.service().0, ci.id.function());
        c.check(
            ci.id.0 == (u32::from(s) << 16) | u32::from(f),
            format_args!(
                "{} id {:#x} is not service << 16 | function",
                ci.name, ci.id.0
            ),
        );
    }
    // CONV-2: the host splits at bit 16. Ids whose halves mean different calls when
    // swapped, each answered as the split says.
    let info = *c.pv.info();
    let r = c.raw(CallId(0x0000_0001), [0; 6]);
    c.check(
        r.status.is_success() && Some(r.value) == info.backend_id.map(u64::from),
        format_args!(
            "0x00000001 (BASE.GET_BACKEND_ID) answered ({:?}, {:#x})",
            r.status, r.value
        ),
    );
    let r = c.raw(CallId(0x0001_0000), [0, 0, 0, 0, 0, 0]);
    c.check(
        r.status.is_success() && r.value == 0,
        format_args!(
            "0x00010000 (CONSOLE.WRITE, len 0) answered ({:?}, {:#x})",
            r.status, r.value
        ),
    );
    let r = c.raw(CallId(0x0001_0002), [0x100, 0, 0, 0, 0, 0]);
    c.expect_status(
        r,
        Status::INVALID_PARAM,
        "0x00010002 (CONSOLE.WRITE_BYTE 0x100)",
    );
    if let Ok(me) = c.pv.vcpu_id() {
        let r = c.raw(CallId(0x0003_0005), [u64::from(me), 0, 0, 0, 0, 0]);
        c.check(
            r.status.is_success() && r.value == u64::from(VcpuState::RUNNING.0),
            format_args!(
                "0x00030005 (VCPU.GET_STATUS of the caller) answered ({:?}, {:#x})",
                r.status, r.value
            ),
        );
    }
    // Every service of the table is where the split puts it: PROBE_SERVICE of each id
    // counts that service's functions.
    for svc in table_services() {
        let want = call::function_count(svc);
        match c.pv.probe_service(svc) {
            Ok(n) => {
                let gated_off =
                    crate::service_feature(svc).is_some_and(|f| !c.pv.info().features.contains(f));
                c.check(
                    n == want
                        || (n > want && c.pv.info().version.minor > 0)
                        || (n == 0 && gated_off),
                    format_args!("service {:#06x} probes {n} functions, want {want}", svc.0),
                );
            }
            Err(e) => {
                c.check(
                    false,
                    format_args!("BASE.PROBE_SERVICE({:#06x}) failed: {e:?}", svc.0),
                );
            }
        }
    }
}

/// Expects NOT_SUPPORTED with value 0.
pub(crate) fn expect_not_supported(c: &mut Ctx<'_>, id: CallId, args: [u64; 6]) {
    let r = c.raw(id, args);
    c.check(
        r.status == Status::NOT_SUPPORTED && r.value == 0,
        format_args!(
            "call {:#010x}: expected (NOT_SUPPORTED, 0), got ({:?}, {:#x})",
            id.0, r.status, r.value
        ),
    );
}

fn unknown_calls(c: &mut Ctx<'_>) {
    let minor0 = c.pv.info().version.minor == 0;
    // Function numbers a v1 service does not define.
    for svc in table_services() {
        let n = call::function_count(svc);
        let mut fns = [0xffffu16, 0x7fff, 0x8000, n];
        if !minor0 {
            // A later minor may define `n`; test only numbers far beyond the table.
            fns[3] = 0xfffe;
        }
        for f in fns {
            expect_not_supported(c, CallId::new(svc, f), [1, 2, 3, 4, 5, 6]);
        }
    }
    // Services the spec does not assign: nothing is implemented there.
    for s in RESERVED_SERVICES {
        let svc = ServiceId(s);
        if minor0 || s >= 0x7f00 {
            for f in [0u16, 1, 0xffff] {
                expect_not_supported(c, CallId::new(svc, f), [0; 6]);
            }
        }
    }
    // Vendor ids: a host may implement them (CONV-3); the ones it says it does not offer
    // must answer NOT_SUPPORTED.
    for s in [0x8000u16, 0xabcd, 0xffff] {
        if c.pv.probe_service(ServiceId(s)) == Ok(0) {
            expect_not_supported(c, CallId::new(ServiceId(s), 0), [0; 6]);
        }
    }
    // Functions behind a clear feature bit (CONV-7's "function it does not offer").
    let f = c.pv.info().features;
    if !f.contains(Features::RING_GATE) {
        expect_not_supported(c, call::BASE_RING_UNREGISTER, [0; 6]);
    }
    if !f.contains(Features::MULTICALL) {
        expect_not_supported(c, call::MULTICALL_EXECUTE, [0; 6]);
    }
}

fn rax_high_bits(c: &mut Ctx<'_>) {
    let probe = cross(c, u64::from(call::BASE_GET_ABI_VERSION.0), [0; 6]);
    let Some(base) = probe else {
        let kind = c.pv.info().gate_kind.0;
        c.skip(format_args!(
            "gate kind {kind} cannot be crossed by hand, so RAX bits 63..32 cannot be set"
        ));
        return;
    };
    c.check(
        base.rax == 0,
        format_args!(
            "BASE.GET_ABI_VERSION crossed by hand failed: RAX {:#x}",
            base.rax
        ),
    );
    for high in [1u64 << 32, 1 << 63, 0xffff_ffff << 32] {
        let Some(x) = cross(c, high | u64::from(call::BASE_GET_ABI_VERSION.0), [0; 6]) else {
            return;
        };
        c.check(
            x.rax == Status::NOT_SUPPORTED.to_reg() && x.rdi == 0,
            format_args!(
                "RAX {:#x}: expected (NOT_SUPPORTED, 0), got ({:#x}, {:#x})",
                high, x.rax, x.rdi
            ),
        );
    }
    // No other effect: a console byte sent with a high bit set is not written.
    let Some(mark) = marker_then(c, b'<') else {
        return;
    };
    let Some(x) = cross(
        c,
        (1 << 33) | u64::from(call::CONSOLE_WRITE_BYTE.0),
        [u64::from(b'#'), 0, 0, 0, 0, 0],
    ) else {
        return;
    };
    c.check(
        x.rax == Status::NOT_SUPPORTED.to_reg() && x.rdi == 0,
        format_args!(
            "CONSOLE.WRITE_BYTE with RAX bit 33: got ({:#x}, {:#x})",
            x.rax, x.rdi
        ),
    );
    tail_is(c, &mark, "after CONSOLE.WRITE_BYTE with RAX bit 33 set");
}

fn status_encoding(c: &mut Ctx<'_>) {
    // The host's registers: SUCCESS is 0, errors negative and sign-extended to 64 bits,
    // value 0 on failure.
    let end = c.ram_end();
    let calls: [(u64, [u64; 6], Status); 5] = [
        (
            u64::from(call::BASE_GET_VCPU_COUNT.0),
            [0; 6],
            Status::SUCCESS,
        ),
        (
            u64::from(CallId::new(ServiceId(0x7eff), 0).0),
            [0; 6],
            Status::NOT_SUPPORTED,
        ),
        (
            u64::from(call::BASE_PROBE_SERVICE.0),
            [0x1_0000, 0, 0, 0, 0, 0],
            Status::INVALID_PARAM,
        ),
        (
            u64::from(call::CONSOLE_WRITE.0),
            [end.saturating_add(0x1000), 8, 0, 0, 0, 0],
            Status::INVALID_ADDRESS,
        ),
        (
            u64::from(call::CONSOLE_WRITE_BYTE.0),
            [0x1ff, 0, 0, 0, 0, 0],
            Status::INVALID_PARAM,
        ),
    ];
    for (rax, args, want) in calls {
        match cross(c, rax, args) {
            Some(x) => {
                c.check(
                    x.rax == want.to_reg(),
                    format_args!(
                        "call {rax:#x}: RAX {:#x}, want {want:?} sign-extended ({:#x})",
                        x.rax,
                        want.to_reg()
                    ),
                );
                if !want.is_success() {
                    c.check(
                        x.rdi == 0,
                        format_args!("call {rax:#x} failed with value {:#x}, not 0", x.rdi),
                    );
                }
            }
            None => {
                // Gate not crossable by hand: the shim's decoded pair still shows the
                // encoding (a status that is not sign-extended decodes as FAILED).
                let r = c.raw(CallId(rax as u32), args);
                c.check(
                    r.status == want && (want.is_success() || r.value == 0),
                    format_args!(
                        "call {rax:#x}: ({:?}, {:#x}), want {want:?}",
                        r.status, r.value
                    ),
                );
            }
        }
    }
    // Positive statuses are reserved and never returned; every status seen is a known one.
    let r = c.raw(call::BASE_PROBE_SERVICE, [u64::MAX, 0, 0, 0, 0, 0]);
    c.check(
        r.status.0 <= 0 && r.status.name().is_some(),
        format_args!("a failing call returned status {}", r.status.0),
    );
    // The guest half: every status other than SUCCESS, known or not, is a failure.
    for s in [
        Status(1),
        Status(7),
        Status(-14),
        Status(i32::MIN),
        Status::FAILED,
    ] {
        c.check(
            s.into_result(0).is_err(),
            format_args!("status {} is not treated as a failure", s.0),
        );
    }
    c.check(
        Status::from_reg(0x0000_0000_ffff_fffe) == Status::FAILED,
        format_args!("a status register that is not sign-extended is not decoded as FAILED"),
    );
}

fn byte_order(c: &mut Ctx<'_>) {
    let gpa = c.platform.boot_info_gpa();
    if gpa == 0 {
        c.skip(format_args!(
            "the host gave no boot info to read raw bytes from"
        ));
        return;
    }
    let mut raw = [0u8; BootInfo::SIZE];
    if c.pv.phys().read_bytes(gpa, &mut raw).is_none() {
        c.check(false, format_args!("boot info at {gpa:#x} is not readable"));
        return;
    }
    let le32 = |o: usize| -> u32 {
        let mut b = [0u8; 4];
        if let Some(s) = raw.get(o..o + 4) {
            b.copy_from_slice(s);
        }
        u32::from_le_bytes(b)
    };
    let le64 = |o: usize| -> u64 {
        let mut b = [0u8; 8];
        if let Some(s) = raw.get(o..o + 8) {
            b.copy_from_slice(s);
        }
        u64::from_le_bytes(b)
    };
    c.check(
        raw.get(0..4) == Some(b"PVBI".as_slice()),
        format_args!("boot info starts with {:?}, not \"PVBI\"", raw.get(0..4)),
    );
    let info = *c.pv.info();
    if let Ok(v) = c.pv.abi_version() {
        c.check(
            le32(4) == v.to_u32(),
            format_args!("abi_version bytes {:#x} != {:#x}", le32(4), v.to_u32()),
        );
    }
    if let Ok(f) = c.pv.get_features() {
        c.check(
            le64(24) == f.bits(),
            format_args!("features bytes {:#x} != {:#x}", le64(24), f.bits()),
        );
    }
    if let Ok(n) = c.pv.vcpu_count() {
        c.check(
            le32(32) == n,
            format_args!("vcpu_count bytes {} != {n}", le32(32)),
        );
    }
    c.check(
        le32(12) == info.gate_kind.0 && le64(16) == info.gate_param,
        format_args!("gate bytes {}/{:#x}", le32(12), le64(16)),
    );
    // The memory map MEMORY.GET_MAP writes: little-endian fields at the documented offsets.
    let Some(buf) = c.buf(MemMapEntry::SIZE * 8, 8) else {
        return;
    };
    let bgpa = c.gpa(buf);
    let r = c.raw(call::MEMORY_GET_MAP, [bgpa, 8, 0, 0, 0, 0]);
    let Some(total) = c.expect_ok(r.into_result(), "MEMORY.GET_MAP") else {
        return;
    };
    let n = usize::try_from(total.min(8)).unwrap_or(0);
    for (i, e) in c.pv.boot_memory_map().take(n).enumerate() {
        let o = i * MemMapEntry::SIZE;
        let rd = |o: usize| -> u64 {
            let mut b = [0u8; 8];
            if let Some(s) = buf.get(o..o + 8) {
                b.copy_from_slice(s);
            }
            u64::from_le_bytes(b)
        };
        let kind = (rd(o + 16) & 0xffff_ffff) as u32;
        let ok = rd(o) == e.base && rd(o + 8) == e.length && kind == e.kind;
        if !c.check(
            ok,
            format_args!(
                "map entry {i}: bytes say {:#x}+{:#x} kind {kind}, boot map {:#x}+{:#x} kind {}",
                rd(o),
                rd(o + 8),
                e.base,
                e.length,
                e.kind
            ),
        ) {
            break;
        }
    }
}

/// A ring-sized area: `pages` pages aligned to 4096 (guest RAM from the arena).
pub(crate) fn ring_pages(c: &mut Ctx<'_>, pages: usize) -> Option<&'static mut [u8]> {
    c.buf(pages * 4096, 4096)
}

/// Writes a ring header (magic, order; counters zero) at the start of `b`.
pub(crate) fn write_ring_header(b: &mut [u8], magic: u32, order: u32) {
    for x in b.iter_mut().take(RingHeader::SIZE) {
        *x = 0;
    }
    if let Some(s) = b.get_mut(0..4) {
        s.copy_from_slice(&magic.to_le_bytes());
    }
    if let Some(s) = b.get_mut(4..8) {
        s.copy_from_slice(&order.to_le_bytes());
    }
}

fn page_size(c: &mut Ctx<'_>) {
    // MEM-2 makes every map range page-granular in 4096-byte pages.
    for e in c.pv.boot_memory_map() {
        c.check(
            e.base % 4096 == 0 && e.length % 4096 == 0,
            format_args!(
                "memory-map range {:#x}+{:#x} is not 4096-byte granular",
                e.base, e.length
            ),
        );
    }
    if !c.pv.info().features.contains(Features::RING_GATE) {
        c.skip(format_args!(
            "RING_GATE is clear: no page-aligned registration to probe the page size with"
        ));
        return;
    }
    // A ring on a page that is 4096- but not 8192-aligned is accepted; 2048 is not enough.
    let Some(area) = ring_pages(c, 3) else {
        return;
    };
    let base = c.gpa(area);
    let off = if base % 8192 == 0 { 4096 } else { 0 };
    let Some(page) = area.get_mut(off..off + 4096) else {
        return;
    };
    write_ring_header(page, RingHeader::MAGIC, 0);
    let gpa = base + off as u64;
    let r = c.raw(call::BASE_RING_REGISTER, [gpa, 0, 0, 0, 0, 0]);
    if c.expect_ok(r.into_result(), "BASE.RING_REGISTER on a 4096-aligned page")
        .is_some()
    {
        let u = c.raw(call::BASE_RING_UNREGISTER, [0; 6]);
        c.expect_ok(u.into_result(), "BASE.RING_UNREGISTER");
    }
    let Some(half) = area.get_mut(off + 2048..off + 4096) else {
        return;
    };
    write_ring_header(half, RingHeader::MAGIC, 0);
    let r = c.raw(call::BASE_RING_REGISTER, [gpa + 2048, 0, 0, 0, 0, 0]);
    if !c.expect_status(
        r,
        Status::INVALID_ADDRESS,
        "BASE.RING_REGISTER 2048 bytes into a page",
    ) && r.status.is_success()
    {
        let _ = c.raw(call::BASE_RING_UNREGISTER, [0; 6]);
    }
}

fn extra_arguments_ignored(c: &mut Ctx<'_>) {
    let junk = [0xdead_beef_0bad_f00d, u64::MAX, 1 << 63, 0x1234_5678];
    let plain = c.raw(call::BASE_GET_ABI_VERSION, [0; 6]);
    let noisy = c.raw(
        call::BASE_GET_ABI_VERSION,
        [junk[0], junk[1], junk[2], junk[3], 7, 9],
    );
    c.check(
        plain == noisy,
        format_args!("BASE.GET_ABI_VERSION with junk arguments: {noisy:?} vs {plain:?}"),
    );
    let plain = c.raw(call::BASE_PROBE_SERVICE, [1, 0, 0, 0, 0, 0]);
    let noisy = c.raw(
        call::BASE_PROBE_SERVICE,
        [1, junk[0], junk[1], junk[2], junk[3], 5],
    );
    c.check(
        plain == noisy && plain.status.is_success(),
        format_args!("BASE.PROBE_SERVICE(1) with junk in registers 1..5: {noisy:?} vs {plain:?}"),
    );
    let plain = c.raw(call::VCPU_GET_STATUS, [0, 0, 0, 0, 0, 0]);
    let noisy = c.raw(
        call::VCPU_GET_STATUS,
        [0, junk[3], junk[2], junk[1], junk[0], 1],
    );
    c.check(
        plain == noisy,
        format_args!("VCPU.GET_STATUS(0) with junk in registers 1..5: {noisy:?} vs {plain:?}"),
    );
    let r = c.raw(
        call::CONSOLE_WRITE_BYTE,
        [u64::from(b'.'), junk[0], junk[1], junk[2], junk[3], 3],
    );
    c.check(
        r.status.is_success() && r.value == 1,
        format_args!("CONSOLE.WRITE_BYTE with junk in registers 1..5: {r:?}"),
    );
    let mark = *b".";
    tail_is(c, &mark, "after CONSOLE.WRITE_BYTE with junk arguments");
    // CONSOLE.WRITE takes two arguments; registers 2..5 hold addresses outside RAM.
    if let Some(b) = c.buf(4, 1) {
        b.copy_from_slice(b"xarg");
        let gpa = c.gpa(b);
        let far = c.ram_end().saturating_add(0x10_0000);
        // Compared with the same write with clean registers: CONV-12 is about the extra
        // registers, not about the count CONSOLE.WRITE returns (CONS-1 checks that).
        let plain = c.raw(call::CONSOLE_WRITE, [gpa, 4, 0, 0, 0, 0]);
        tail_is(c, b"xarg", "after CONSOLE.WRITE with clean registers");
        let r = c.raw(call::CONSOLE_WRITE, [gpa, 4, far, far, far, far]);
        c.check(
            r.status.is_success() && r == plain,
            format_args!("CONSOLE.WRITE with junk in registers 2..5: {r:?} vs {plain:?}"),
        );
        tail_is(c, b"xarg", "after CONSOLE.WRITE with junk arguments");
    }
}

fn failed_call_has_no_effect(c: &mut Ctx<'_>) {
    let end = c.ram_end();
    let Some(mark) = marker_then(c, b'%') else {
        return;
    };
    // Failing console writes leave the output alone and return value 0.
    for (gpa, len) in [
        (end.saturating_add(0x2000), 16u64),
        (end - 8, 64),
        (u64::MAX - 7, 64),
    ] {
        let r = c.raw(call::CONSOLE_WRITE, [gpa, len, 0, 0, 0, 0]);
        c.check(
            r.status == Status::INVALID_ADDRESS && r.value == 0,
            format_args!("CONSOLE.WRITE({gpa:#x}, {len}): {r:?}"),
        );
    }
    let r = c.raw(call::CONSOLE_WRITE_BYTE, [0x1_0041, 0, 0, 0, 0, 0]);
    c.check(
        r.status == Status::INVALID_PARAM && r.value == 0,
        format_args!("CONSOLE.WRITE_BYTE(0x10041): {r:?}"),
    );
    tail_is(c, &mark, "after failing console calls");
    // A failing ring registration registers nothing.
    if c.pv.info().features.contains(Features::RING_GATE) {
        if let Some(area) = ring_pages(c, 1) {
            write_ring_header(area, RingHeader::MAGIC, 1);
            let gpa = c.gpa(area);
            let r = c.raw(call::BASE_RING_REGISTER, [gpa, 0, 0, 0, 0, 0]);
            c.check(
                r.status == Status::INVALID_PARAM && r.value == 0,
                format_args!("BASE.RING_REGISTER with header order 1, argument 0: {r:?}"),
            );
            let u = c.raw(call::BASE_RING_UNREGISTER, [0; 6]);
            c.expect_status(
                u,
                Status::NOT_FOUND,
                "BASE.RING_UNREGISTER after a failed registration",
            );
        }
    }
}

fn complete_at_gate(c: &mut Ctx<'_>) {
    // Guest memory the call writes is visible to the very next instruction.
    let Some(buf) = c.buf(MemMapEntry::SIZE * 4, 8) else {
        return;
    };
    buf.fill(0xaa);
    let gpa = c.gpa(buf);
    let r = c.raw(call::MEMORY_GET_MAP, [gpa, 4, 0, 0, 0, 0]);
    let first = buf.get(0..MemMapEntry::SIZE).map(|s| {
        let mut b = [0u8; 8];
        b.copy_from_slice(s.get(8..16).unwrap_or(&[0; 8]));
        u64::from_le_bytes(b)
    });
    if c.expect_ok(r.into_result(), "MEMORY.GET_MAP").is_some() {
        // Without a boot info (a transport without a boot handoff) there is no map to
        // compare with: the entry must at least no longer be the fill pattern.
        let want = c.pv.boot_memory_map().next().map(|e| e.length);
        let ok = match want {
            Some(_) => first == want,
            None => {
                c.pv.info().boot_info.is_none()
                    && first.is_some_and(|l| l != 0 && l != 0xaaaa_aaaa_aaaa_aaaa)
            }
        };
        c.check(
            ok,
            format_args!(
                "first map entry length right after the call: {first:?}, boot map {want:?}"
            ),
        );
    }
    // Console input queued by the host and read: the bytes are in the buffer on return.
    drain_input(c);
    let Some(inp) = c.buf(6, 1) else {
        return;
    };
    inp.copy_from_slice(b"pvabi!");
    if c.expect_ok(c.pv.harness_console_input(inp), "HARNESS.CONSOLE_INPUT")
        .is_none()
    {
        return;
    }
    let Some(out) = c.buf(8, 1) else {
        return;
    };
    out.fill(0);
    let ogpa = c.gpa(out);
    let r = c.raw(call::CONSOLE_READ, [ogpa, 8, 0, 0, 0, 0]);
    let seen = [out[0], out[1], out[2], out[3], out[4], out[5]];
    c.check(
        r.status.is_success() && r.value == 6 && &seen == b"pvabi!",
        format_args!("CONSOLE.READ: {r:?}, buffer right after the call {seen:?}"),
    );
}

/// Reads queued console input until none is left (bounded).
pub(crate) fn drain_input(c: &mut Ctx<'_>) {
    let Some(b) = c.buf(4096, 1) else {
        return;
    };
    for _ in 0..1024 {
        match c.pv.console().read(b) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

fn one_of_the_statuses(c: &mut Ctx<'_>) {
    let Some(mark) = marker_then(c, b'&') else {
        return;
    };
    // Too long and outside RAM: either status, value 0, nothing written.
    let far = c.ram_end().saturating_add(0x10_0000);
    let r = c.raw(call::CONSOLE_WRITE, [far, 5000, 0, 0, 0, 0]);
    c.check(
        (r.status == Status::INVALID_PARAM || r.status == Status::INVALID_ADDRESS) && r.value == 0,
        format_args!("CONSOLE.WRITE outside RAM with len 5000: {r:?}"),
    );
    // Order above 8 and a misaligned address at once.
    if c.pv.info().features.contains(Features::RING_GATE) {
        let r = c.raw(call::BASE_RING_REGISTER, [far + 8, 9, 0, 0, 0, 0]);
        c.check(
            (r.status == Status::INVALID_PARAM || r.status == Status::INVALID_ADDRESS)
                && r.value == 0,
            format_args!("BASE.RING_REGISTER(misaligned, order 9): {r:?}"),
        );
    }
    tail_is(c, &mark, "after calls bad in two ways");
}

fn narrow_arguments(c: &mut Ctx<'_>) {
    // A value that does not fit the argument's width is out of range, never truncated.
    let r = c.raw(call::BASE_PROBE_SERVICE, [(1 << 32) | 1, 0, 0, 0, 0, 0]);
    c.expect_status(r, Status::INVALID_PARAM, "BASE.PROBE_SERVICE(1 << 32 | 1)");
    let r = c.raw(call::BASE_PROBE_SERVICE, [0x1_0001, 0, 0, 0, 0, 0]);
    c.expect_status(r, Status::INVALID_PARAM, "BASE.PROBE_SERVICE(0x10001)");
    let Some(mark) = marker_then(c, b'*') else {
        return;
    };
    let r = c.raw(
        call::CONSOLE_WRITE_BYTE,
        [(1 << 32) | u64::from(b'!'), 0, 0, 0, 0, 0],
    );
    c.expect_status(
        r,
        Status::INVALID_PARAM,
        "CONSOLE.WRITE_BYTE(1 << 32 | '!')",
    );
    tail_is(
        c,
        &mark,
        "after CONSOLE.WRITE_BYTE with a byte that does not fit",
    );
    if let Ok(me) = c.pv.vcpu_id() {
        let r = c.raw(
            call::VCPU_GET_STATUS,
            [(1 << 32) | u64::from(me), 0, 0, 0, 0, 0],
        );
        c.expect_status(
            r,
            Status::INVALID_PARAM,
            "VCPU.GET_STATUS(1 << 32 | own id)",
        );
    }
}

fn reserved_fields(c: &mut Ctx<'_>) {
    // The host writes zero into reserved fields of what it writes: the boot info and the
    // memory map.
    if let Some(bi) = c.pv.info().boot_info {
        c.check(
            bi._reserved.iter().all(|r| *r == 0),
            format_args!("boot info _reserved is {:?}", bi._reserved),
        );
    }
    if let Some(buf) = c.buf(MemMapEntry::SIZE * 16, 8) {
        buf.fill(0x5a);
        let gpa = c.gpa(buf);
        let r = c.raw(call::MEMORY_GET_MAP, [gpa, 16, 0, 0, 0, 0]);
        if let Some(total) = c.expect_ok(r.into_result(), "MEMORY.GET_MAP") {
            let n = usize::try_from(total.min(16)).unwrap_or(0);
            for i in 0..n {
                let o = i * MemMapEntry::SIZE + 20;
                let res = buf.get(o..o + 4);
                c.check(
                    res == Some([0u8; 4].as_slice()),
                    format_args!("map entry {i}: _reserved bytes {res:?}"),
                );
            }
        }
    }
    // The host ignores reserved fields of what it reads: a ring header with nonzero
    // reserved words registers.
    if !c.pv.info().features.contains(Features::RING_GATE) {
        return;
    }
    let Some(area) = ring_pages(c, 1) else {
        return;
    };
    write_ring_header(area, RingHeader::MAGIC, 0);
    for b in area.iter_mut().take(RingHeader::SIZE).skip(28) {
        *b = 0xa5;
    }
    let gpa = c.gpa(area);
    let r = c.raw(call::BASE_RING_REGISTER, [gpa, 0, 0, 0, 0, 0]);
    if c.expect_ok(
        r.into_result(),
        "BASE.RING_REGISTER with nonzero reserved header fields",
    )
    .is_some()
    {
        let u = c.raw(call::BASE_RING_UNREGISTER, [0; 6]);
        c.expect_ok(u.into_result(), "BASE.RING_UNREGISTER");
    }
}
