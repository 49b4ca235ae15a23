//! BASE (spec chapter 4, `BASE-*`): version, backend identity, service probing, features,
//! vCPU identity and count, and the absence of side effects.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use pvabi::base::backend_id;
use pvabi::vcpu::VcpuState;
use pvabi::{call, CallId, Features, ServiceId, Status, ABI_VERSION};
use pvabi_guest::vcpu::VcpuStack;

use super::console::{marker_then, tail_is};
use super::conv::{table_services, RESERVED_SERVICES};
use crate::{Case, Ctx, GuestEntry};

/// The chapter's cases.
pub const CASES: &[Case] = &[
    Case {
        name: "base::abi_version",
        clauses: "BASE-1",
        run: abi_version,
    },
    Case {
        name: "base::answers_do_not_change",
        clauses: "BASE-2",
        run: answers_do_not_change,
    },
    Case {
        name: "base::backend_id",
        clauses: "BASE-3",
        run: backend_id_valid,
    },
    Case {
        name: "base::backend_version",
        clauses: "BASE-4",
        run: backend_version,
    },
    Case {
        name: "base::probe_service",
        clauses: "BASE-5,BASE-10,BASE-12",
        run: probe_service,
    },
    Case {
        name: "base::probe_service_range",
        clauses: "BASE-6",
        run: probe_service_range,
    },
    Case {
        name: "base::features",
        clauses: "BASE-7",
        run: features,
    },
    Case {
        name: "base::vcpu_id",
        clauses: "BASE-8",
        run: vcpu_id,
    },
    Case {
        name: "base::same_answers_on_every_vcpu",
        clauses: "BASE-8,BASE-2",
        run: same_answers_on_every_vcpu,
    },
    Case {
        name: "base::vcpu_count",
        clauses: "BASE-9",
        run: vcpu_count,
    },
    Case {
        name: "base::every_function_offered",
        clauses: "BASE-10,BASE-11",
        run: every_function_offered,
    },
    Case {
        name: "base::no_side_effects",
        clauses: "BASE-13",
        run: no_side_effects,
    },
];

fn abi_version(c: &mut Ctx<'_>) {
    let r = c.raw(call::BASE_GET_ABI_VERSION, [0; 6]);
    if c.expect_ok(r.into_result(), "BASE.GET_ABI_VERSION")
        .is_none()
    {
        return;
    }
    c.check(
        r.value >> 32 == 0,
        format_args!("version value {:#x} has bits 63..32 set", r.value),
    );
    let major = (r.value >> 16) & 0xffff;
    c.check(
        major == u64::from(ABI_VERSION.major),
        format_args!(
            "major version {major}, this suite tests {}",
            ABI_VERSION.major
        ),
    );
    c.check(
        r.value >= u64::from(ABI_VERSION.to_u32()),
        format_args!("version {:#x} is older than 1.0", r.value),
    );
    if let Ok(v) = c.pv.abi_version() {
        c.check(
            u64::from(v.to_u32()) == r.value,
            format_args!("the shim decodes {v}, the register holds {:#x}", r.value),
        );
    }
}

/// The five answers BASE-2 fixes.
fn snapshot(c: &Ctx<'_>) -> [pvabi::Ret; 5] {
    [
        c.raw(call::BASE_GET_ABI_VERSION, [0; 6]),
        c.raw(call::BASE_GET_BACKEND_ID, [0; 6]),
        c.raw(call::BASE_GET_BACKEND_VERSION, [0; 6]),
        c.raw(call::BASE_GET_FEATURES, [0; 6]),
        c.raw(call::BASE_GET_VCPU_COUNT, [0; 6]),
    ]
}

fn answers_do_not_change(c: &mut Ctx<'_>) {
    // Whether each function succeeds is BASE-1, BASE-3, BASE-4, BASE-7, BASE-9 and BASE-10;
    // this case checks only that the answers stay the same.
    let first = snapshot(c);
    // What discovery saw when the guest booted.
    let info = *c.pv.info();
    c.check(
        first[0].value == u64::from(info.version.to_u32()),
        format_args!(
            "version {:#x} now, {:#x} at discovery",
            first[0].value,
            info.version.to_u32()
        ),
    );
    if let Some(id) = info.backend_id {
        c.check(
            first[1].value == u64::from(id),
            format_args!("backend id {} now, {id} at discovery", first[1].value),
        );
    }
    c.check(
        first[3].value == info.features.bits(),
        format_args!(
            "features {:#x} now, {:#x} at discovery",
            first[3].value,
            info.features.bits()
        ),
    );
    c.check(
        first[4].value == u64::from(info.vcpu_count),
        format_args!(
            "vCPU count {} now, {} at discovery",
            first[4].value, info.vcpu_count
        ),
    );
    // Again after other calls (a yield, console output, a failed call).
    let _ = c.pv.vcpu_yield();
    let _ = c.pv.console().write_byte(b'~');
    let _ = c.raw(CallId::new(ServiceId(0x7eff), 1), [0; 6]);
    for _ in 0..3 {
        let again = snapshot(c);
        c.check(
            again == first,
            format_args!("BASE answers changed: {again:?} after {first:?}"),
        );
    }
}

fn backend_id_valid(c: &mut Ctx<'_>) {
    let Some(id) = c.expect_ok(c.pv.backend_id(), "BASE.GET_BACKEND_ID") else {
        return;
    };
    c.check(
        matches!(id, backend_id::MOCK | backend_id::KVM | backend_id::XEN)
            || id >= backend_id::VENDOR_FIRST,
        format_args!("backend id {id:#x} is neither 1, 2, 3 nor a vendor id >= 0x80000000"),
    );
    c.check(id != 0, format_args!("backend id 0"));
    if let Some(bi) = c.pv.info().boot_info {
        c.check(
            bi.backend_id == id,
            format_args!("boot info backend_id {} != {id}", bi.backend_id),
        );
    }
}

fn backend_version(c: &mut Ctx<'_>) {
    let a = c.raw(call::BASE_GET_BACKEND_VERSION, [0; 6]);
    c.expect_ok(a.into_result(), "BASE.GET_BACKEND_VERSION");
    let b = c.raw(call::BASE_GET_BACKEND_VERSION, [0; 6]);
    c.check(
        a == b,
        format_args!("BASE.GET_BACKEND_VERSION answered {a:?} then {b:?}"),
    );
}

fn probe_service(c: &mut Ctx<'_>) {
    let minor0 = c.pv.info().version.minor == 0;
    for svc in table_services() {
        let want = call::function_count(svc);
        let r = c.raw(call::BASE_PROBE_SERVICE, [u64::from(svc.0), 0, 0, 0, 0, 0]);
        if c.expect_ok(r.into_result(), "BASE.PROBE_SERVICE").is_none() {
            continue;
        }
        // A service behind a clear feature bit may be absent (BASE-5, BASE-11).
        let gated_off =
            crate::service_feature(svc).is_some_and(|f| !c.pv.info().features.contains(f));
        let ok = if gated_off && r.value == 0 {
            true
        } else if svc == ServiceId::HARNESS && gated_off {
            false
        } else if minor0 {
            r.value == u64::from(want)
        } else {
            r.value >= u64::from(want)
        };
        c.check(
            ok,
            format_args!(
                "BASE.PROBE_SERVICE({:#06x}) = {}, the 1.0 call table has {want}",
                svc.0, r.value
            ),
        );
    }
    let r = c.raw(call::BASE_PROBE_SERVICE, [0, 0, 0, 0, 0, 0]);
    c.check(
        r.status.is_success() && (r.value == 9 || (!minor0 && r.value > 9)),
        format_args!("BASE.PROBE_SERVICE(0) = {r:?}, want 9"),
    );
    // Reserved ids: not offered.
    for s in RESERVED_SERVICES {
        let r = c.raw(call::BASE_PROBE_SERVICE, [u64::from(s), 0, 0, 0, 0, 0]);
        c.check(
            r.status.is_success() && (r.value == 0 || (!minor0 && s < 0x7f00)),
            format_args!("BASE.PROBE_SERVICE({s:#06x}) (reserved) = {r:?}, want 0"),
        );
    }
    // Vendor ids: success, any count.
    for s in [0x8000u64, 0xc0de, 0xffff] {
        let r = c.raw(call::BASE_PROBE_SERVICE, [s, 0, 0, 0, 0, 0]);
        c.expect_ok(r.into_result(), "BASE.PROBE_SERVICE of a vendor id");
    }
}

fn probe_service_range(c: &mut Ctx<'_>) {
    for s in [0x1_0000u64, 0x1_0000_0000, 0x8000_0000_0000_0001, u64::MAX] {
        let r = c.raw(call::BASE_PROBE_SERVICE, [s, 0, 0, 0, 0, 0]);
        c.check(
            r.status == Status::INVALID_PARAM && r.value == 0,
            format_args!("BASE.PROBE_SERVICE({s:#x}) = {r:?}, want (INVALID_PARAM, 0)"),
        );
    }
}

fn features(c: &mut Ctx<'_>) {
    let Some(f) = c.expect_ok(c.pv.get_features(), "BASE.GET_FEATURES") else {
        return;
    };
    let info = *c.pv.info();
    c.check(
        f == info.features,
        format_args!(
            "BASE.GET_FEATURES {:#x}, discovery {:#x}",
            f.bits(),
            info.features.bits()
        ),
    );
    if let Some(bi) = info.boot_info {
        c.check(
            bi.features == f.bits(),
            format_args!("boot info features {:#x} != {:#x}", bi.features, f.bits()),
        );
    }
    c.check(
        f.contains(Features::HARNESS),
        format_args!("HARNESS answers but its feature bit is clear"),
    );
}

fn vcpu_id(c: &mut Ctx<'_>) {
    let r = c.raw(call::BASE_GET_VCPU_ID, [0; 6]);
    if c.expect_ok(r.into_result(), "BASE.GET_VCPU_ID").is_none() {
        return;
    }
    let count = c.pv.info().vcpu_count;
    c.check(
        r.value < u64::from(count),
        format_args!("vCPU id {} not below the count {count}", r.value),
    );
    // The suite runs on the boot vCPU.
    if let Some(bi) = c.pv.info().boot_info {
        c.check(
            r.value == u64::from(bi.boot_vcpu),
            format_args!(
                "the boot vCPU has id {}, the boot info says {}",
                r.value, bi.boot_vcpu
            ),
        );
    }
    let again = c.raw(call::BASE_GET_VCPU_ID, [0; 6]);
    c.check(again == r, format_args!("GET_VCPU_ID changed: {again:?}"));
}

/// Guest functions this chapter starts vCPUs at.
pub const FUNCTIONS: &[GuestEntry] = &[base_reporter];

/// What a started vCPU reports back.
#[repr(C, align(64))]
struct Report {
    /// The handle to call through (written before the vCPU starts, then only read).
    pv: pvabi_guest::Pvabi,
    /// BASE.GET_VCPU_ID's value, or `u64::MAX` if it failed.
    id: AtomicU64,
    /// The five BASE-2 answers' values (`u64::MAX` where a call failed).
    answers: [AtomicU64; 5],
    /// 1 while the case waits, 2 when the report is complete.
    state: AtomicU32,
}

/// Entry of a started vCPU: `arg` is the address of a [`Report`] in the suite's arena (the
/// vCPU shares the guest's address space, `VCPU-7`).
extern "C" fn base_reporter(arg: u64, _vcpu: u64) {
    let Some(p) = usize::try_from(arg)
        .ok()
        .filter(|p| *p != 0 && *p % 64 == 0)
    else {
        return;
    };
    let p = core::ptr::with_exposed_provenance::<Report>(p);
    // SAFETY: the case passes the address of a `Report` it moved into the suite's arena
    // (never freed, aligned as checked) and keeps only shared access to it while this vCPU
    // runs; `pv` is written before the start and never after, every other field is atomic.
    let r = unsafe { &*p };
    let pv = r.pv;
    let none = u64::MAX;
    r.id.store(pv.vcpu_id().map_or(none, u64::from), Ordering::Relaxed);
    let answers = [
        pv.abi_version().map_or(none, |v| u64::from(v.to_u32())),
        pv.backend_id().map_or(none, u64::from),
        pv.backend_version().unwrap_or(none),
        pv.get_features().map_or(none, |f| f.bits()),
        pv.vcpu_count().map_or(none, u64::from),
    ];
    for (slot, a) in r.answers.iter().zip(answers) {
        slot.store(a, Ordering::Relaxed);
    }
    r.state.store(2, Ordering::Release);
    let _ = pv.vcpu_stop();
}

fn same_answers_on_every_vcpu(c: &mut Ctx<'_>) {
    let count = c.pv.info().vcpu_count;
    if count < 2 {
        c.skip(format_args!("the guest has one vCPU"));
        return;
    }
    if c.platform.in_process()
        && !crate::guest_functions().any(|f| f as usize == base_reporter as GuestEntry as usize)
    {
        c.skip(format_args!(
            "base::FUNCTIONS is not listed in chapters::FUNCTIONS, so the in-process host does not accept the reporter as a vCPU entry"
        ));
        return;
    }
    let Ok(me) = c.pv.vcpu_id() else {
        c.check(false, format_args!("BASE.GET_VCPU_ID failed"));
        return;
    };
    let mine = snapshot(c).map(|r| r.into_result().unwrap_or(u64::MAX));
    let mut ran = 0;
    for v in 0..count {
        if v == me || c.pv.vcpu_status(v) != Ok(VcpuState::STOPPED) {
            continue;
        }
        let Some(rep) = c.alloc(Report {
            pv: c.pv,
            id: AtomicU64::new(u64::MAX),
            answers: [const { AtomicU64::new(u64::MAX) }; 5],
            state: AtomicU32::new(1),
        }) else {
            return;
        };
        let rep: &'static Report = rep;
        let Some(stack) = c.alloc(VcpuStack::<16384>::new()) else {
            return;
        };
        let arg = rep as *const Report as usize as u64;
        if c.expect_ok(c.pv.vcpu_start(v, base_reporter, stack, arg), "VCPU.START")
            .is_none()
        {
            return;
        }
        let mut state = 1;
        for _ in 0..2000 {
            state = rep.state.load(Ordering::Acquire);
            if state != 1 {
                break;
            }
            let now = c.pv.time_ns().unwrap_or(0);
            let _ = c.pv.vcpu_block(Some(now.saturating_add(100_000)));
        }
        for _ in 0..100 {
            if c.pv.vcpu_status(v) == Ok(VcpuState::STOPPED) {
                break;
            }
            let _ = c.pv.vcpu_yield();
        }
        if !c.check(state == 2, format_args!("vCPU {v} did not report")) {
            continue;
        }
        ran += 1;
        let id = rep.id.load(Ordering::Relaxed);
        c.check(
            id == u64::from(v),
            format_args!("BASE.GET_VCPU_ID on vCPU {v} returned {id:#x}"),
        );
        let theirs = [0, 1, 2, 3, 4].map(|i| rep.answers[i].load(Ordering::Relaxed));
        c.check(
            theirs == mine,
            format_args!("BASE answers on vCPU {v}: {theirs:x?}, on vCPU {me}: {mine:x?}"),
        );
    }
    if ran == 0 {
        c.skip(format_args!("no stopped vCPU to start"));
    }
}

fn vcpu_count(c: &mut Ctx<'_>) {
    let r = c.raw(call::BASE_GET_VCPU_COUNT, [0; 6]);
    if c.expect_ok(r.into_result(), "BASE.GET_VCPU_COUNT")
        .is_none()
    {
        return;
    }
    c.check(
        (1..=u64::from(pvabi::MAX_VCPUS)).contains(&r.value),
        format_args!("vCPU count {} not in 1..=16", r.value),
    );
    if let Some(bi) = c.pv.info().boot_info {
        c.check(
            r.value == u64::from(bi.vcpu_count),
            format_args!("vCPU count {}, boot info {}", r.value, bi.vcpu_count),
        );
    }
}

/// A call with arguments that make it fail (or succeed without effect), and the feature bit
/// it needs, if any.
struct Probe {
    id: CallId,
    args: [u64; 6],
    needs: Features,
}

fn every_function_offered(c: &mut Ctx<'_>) {
    let f = c.pv.info().features;
    let far = c.ram_end().saturating_add(0x40_0000) & !0xfff;
    let none = Features::empty();
    let probes = [
        // BASE: every function (BASE-10); the ring pair only with RING_GATE.
        Probe {
            id: call::BASE_GET_ABI_VERSION,
            args: [0; 6],
            needs: none,
        },
        Probe {
            id: call::BASE_GET_BACKEND_ID,
            args: [0; 6],
            needs: none,
        },
        Probe {
            id: call::BASE_GET_BACKEND_VERSION,
            args: [0; 6],
            needs: none,
        },
        Probe {
            id: call::BASE_PROBE_SERVICE,
            args: [0; 6],
            needs: none,
        },
        Probe {
            id: call::BASE_GET_FEATURES,
            args: [0; 6],
            needs: none,
        },
        Probe {
            id: call::BASE_GET_VCPU_ID,
            args: [0; 6],
            needs: none,
        },
        Probe {
            id: call::BASE_GET_VCPU_COUNT,
            args: [0; 6],
            needs: none,
        },
        Probe {
            id: call::BASE_RING_REGISTER,
            args: [far, 9, 0, 0, 0, 0],
            needs: Features::RING_GATE,
        },
        Probe {
            id: call::BASE_RING_UNREGISTER,
            args: [0; 6],
            needs: Features::RING_GATE,
        },
        // Other services: calls that fail on bad arguments or succeed without effect.
        Probe {
            id: call::CONSOLE_WRITE,
            args: [far, 0, 0, 0, 0, 0],
            needs: none,
        },
        Probe {
            id: call::CONSOLE_READ,
            args: [far, 0, 0, 0, 0, 0],
            needs: none,
        },
        Probe {
            id: call::CONSOLE_WRITE_BYTE,
            args: [0x100, 0, 0, 0, 0, 0],
            needs: none,
        },
        Probe {
            id: call::CLOCK_REGISTER_PAGE,
            args: [far, 0, 0, 0, 0, 0],
            needs: Features::CLOCK_PAGE,
        },
        Probe {
            id: call::CLOCK_GET_WALLCLOCK,
            args: [0; 6],
            needs: none,
        },
        Probe {
            id: call::CLOCK_GET_TIME,
            args: [0; 6],
            needs: none,
        },
        Probe {
            id: call::CLOCK_SET_TIMER,
            args: [0, 1 << 40, 0, 0, 0, 0],
            needs: Features::TIMER,
        },
        Probe {
            id: call::VCPU_YIELD,
            args: [0; 6],
            needs: none,
        },
        Probe {
            id: call::VCPU_KICK,
            args: [1 << 40, 0, 0, 0, 0, 0],
            needs: none,
        },
        Probe {
            id: call::VCPU_START,
            args: [1 << 40, 0, 0, 0, 0, 0],
            needs: none,
        },
        Probe {
            id: call::VCPU_GET_STATUS,
            args: [1 << 40, 0, 0, 0, 0, 0],
            needs: none,
        },
        Probe {
            id: call::VCPU_REGISTER_STEAL_TIME,
            args: [far, 0, 0, 0, 0, 0],
            needs: Features::STEAL_TIME,
        },
        Probe {
            id: call::EVENT_BIND_VCPU,
            args: [1 << 40, 0, 0, 0, 0, 0],
            needs: none,
        },
        Probe {
            id: call::EVENT_CLOSE,
            args: [1 << 40, 0, 0, 0, 0, 0],
            needs: none,
        },
        Probe {
            id: call::EVENT_SEND,
            args: [1 << 40, 0, 0, 0, 0, 0],
            needs: none,
        },
        Probe {
            id: call::EVENT_MASK,
            args: [1 << 40, 0, 0, 0, 0, 0],
            needs: none,
        },
        Probe {
            id: call::EVENT_UNMASK,
            args: [1 << 40, 0, 0, 0, 0, 0],
            needs: none,
        },
        Probe {
            id: call::MEMORY_GET_MAP,
            args: [far, 0, 0, 0, 0, 0],
            needs: none,
        },
        Probe {
            id: call::MEMORY_BALLOON_QUERY,
            args: [0; 6],
            needs: Features::BALLOON,
        },
        Probe {
            id: call::MEMORY_BALLOON_RELEASE,
            args: [far, 1, 0, 0, 0, 0],
            needs: Features::BALLOON,
        },
        Probe {
            id: call::MEMORY_BALLOON_RECLAIM,
            args: [far, 1, 0, 0, 0, 0],
            needs: Features::BALLOON,
        },
        Probe {
            id: call::GRANT_QUERY,
            args: [0; 6],
            needs: Features::GRANT,
        },
        Probe {
            id: call::STORE_UNWATCH,
            args: [1 << 40, 0, 0, 0, 0, 0],
            needs: none,
        },
        Probe {
            id: call::STORE_TXN_ABORT,
            args: [1 << 40, 0, 0, 0, 0, 0],
            needs: Features::STORE_TXN,
        },
        Probe {
            id: call::STORE_TXN_COMMIT,
            args: [1 << 40, 0, 0, 0, 0, 0],
            needs: Features::STORE_TXN,
        },
        Probe {
            id: call::STORE_READ,
            args: [far, 4, far, 4, 0, 0],
            needs: none,
        },
        Probe {
            id: call::VCPU_BLOCK,
            args: [1, 0, 0, 0, 0, 0],
            needs: none,
        },
        Probe {
            id: call::EVENT_REGISTER_PAGE,
            args: [far, 0, 0, 0, 0, 0],
            needs: none,
        },
        Probe {
            id: call::EVENT_SET_UPCALL,
            args: [0xffff, 0, 0, 0, 0, 0],
            needs: none,
        },
        Probe {
            id: call::GRANT_SETUP_TABLE,
            args: [far, 1, 0, 0, 0, 0],
            needs: Features::GRANT,
        },
        Probe {
            id: call::STORE_WRITE,
            args: [far, 4, far, 4, 0, 0],
            needs: none,
        },
        Probe {
            id: call::STORE_LIST,
            args: [far, 4, far, 4, 0, 0],
            needs: none,
        },
        Probe {
            id: call::STORE_REMOVE,
            args: [far, 4, 0, 0, 0, 0],
            needs: none,
        },
        Probe {
            id: call::STORE_WATCH,
            args: [far, 4, 1 << 40, 0, 0, 0],
            needs: none,
        },
        Probe {
            id: call::STORE_WATCH_NEXT,
            args: [far, 16, 0, 0, 0, 0],
            needs: none,
        },
        Probe {
            id: call::POWER_REGISTER_CRASH_BUFFER,
            args: [far, 64, 0, 0, 0, 0],
            needs: Features::CRASH_BUFFER,
        },
        Probe {
            id: call::MULTICALL_EXECUTE,
            args: [far, 0, 0, 0, 0, 0],
            needs: Features::MULTICALL,
        },
    ];
    for p in &probes {
        let r = c.raw(p.id, p.args);
        let name = p.id.info().map_or("?", |i| i.name);
        if p.needs.is_empty() || f.contains(p.needs) {
            c.check(
                r.status != Status::NOT_SUPPORTED,
                format_args!("{name} answered NOT_SUPPORTED though the host offers it"),
            );
        } else {
            c.check(
                r.status == Status::NOT_SUPPORTED && r.value == 0,
                format_args!("{name} behind a clear feature bit answered {r:?}"),
            );
        }
    }
}

fn no_side_effects(c: &mut Ctx<'_>) {
    let Some(mark) = marker_then(c, b'0') else {
        return;
    };
    let before = snapshot(c);
    let me = c.raw(call::BASE_GET_VCPU_ID, [0; 6]);
    let probes: [pvabi::Ret; 3] = [
        c.raw(call::BASE_PROBE_SERVICE, [1, 0, 0, 0, 0, 0]),
        c.raw(call::BASE_PROBE_SERVICE, [0x7f00, 0, 0, 0, 0, 0]),
        c.raw(call::BASE_PROBE_SERVICE, [0x8000, 0, 0, 0, 0, 0]),
    ];
    for _ in 0..4 {
        for id in 0..=6u16 {
            let _ = c.raw(
                CallId::new(ServiceId::BASE, id),
                [u64::from(id), 0, 0, 0, 0, 0],
            );
        }
    }
    tail_is(c, &mark, "after BASE calls");
    let after = snapshot(c);
    c.check(
        after == before,
        format_args!("BASE answers changed across BASE calls"),
    );
    let me2 = c.raw(call::BASE_GET_VCPU_ID, [0; 6]);
    c.check(me == me2, format_args!("vCPU id {me:?} then {me2:?}"));
    let probes2: [pvabi::Ret; 3] = [
        c.raw(call::BASE_PROBE_SERVICE, [1, 0, 0, 0, 0, 0]),
        c.raw(call::BASE_PROBE_SERVICE, [0x7f00, 0, 0, 0, 0, 0]),
        c.raw(call::BASE_PROBE_SERVICE, [0x8000, 0, 0, 0, 0, 0]),
    ];
    c.check(
        probes == probes2,
        format_args!("probe answers changed: {probes:?} then {probes2:?}"),
    );
    // No ring appeared, no vCPU changed state.
    if c.pv.info().features.contains(Features::RING_GATE) {
        let r = c.raw(call::BASE_RING_UNREGISTER, [0; 6]);
        c.expect_status(r, Status::NOT_FOUND, "BASE.RING_UNREGISTER with no ring");
    }
}
