//! VCPU cases (spec chapter 7, `VCPU-*`), and the secondary-vCPU worker the CLOCK, EVENT and
//! POWER cases use to act on a second vCPU.
//!
//! ## The worker
//! [`start_worker`] starts a secondary vCPU at [`worker_entry`] with a [`Mailbox`] in guest
//! RAM as its argument. The entry records what it saw at its start (its arguments, its own
//! status, whether a kick or an upcall was pending, whether it had a clock page), then serves
//! commands that the boot vCPU posts in the mailbox ([`Worker::call`], [`Worker::post`]),
//! one at a time, until told to return or to stop. Both sides wait with `VCPU.BLOCK` and a
//! deadline (never a kick, so that no kick is left pending by the protocol itself), so a host
//! with a virtual clock that jumps when every vCPU waits runs them as well as a real one.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};

use pvabi::discovery::Features;
use pvabi::vcpu::VcpuState;
use pvabi::{call, CallId, Ret, Status};
use pvabi_guest::event::EventChannels;
use pvabi_guest::shared::{ClockPageShared, StealTimeShared};
use pvabi_guest::vcpu::VcpuStack;
use pvabi_guest::Pvabi;

use crate::{Case, Ctx, ExpectedEnd, GuestEntry, TerminalCase};

/// How long one poll of a waiting side blocks, in ns of system time.
pub const POLL_NS: u64 = 1_000_000;
/// How long the boot vCPU waits for a worker before it declares a failure, in ns.
pub const WAIT_NS: u64 = 2_000_000_000;
/// How long a worker waits for its next command before it returns on its own, in ns.
pub const WORKER_IDLE_NS: u64 = 30_000_000_000;
/// Upper bound on polls of one wait, whatever the clock does.
const MAX_POLLS: u32 = 20_000;
/// Bytes of stack each started worker gets.
const STACK: usize = 16 * 1024;

/// Worker command: make the scalar call in `call`/`args`, store its status and value.
pub const OP_CALL: u32 = 1;
/// Worker command: return from the entry (the vCPU stops).
pub const OP_EXIT: u32 = 2;
/// Worker command: `VCPU.STOP` (stores the status only if the host refused).
pub const OP_STOP: u32 = 3;
/// Worker command: register the clock page whose address is in `aux[0]`.
pub const OP_REGISTER_CLOCK: u32 = 4;
/// Worker command: run the mailbox's `custom` function.
pub const OP_CUSTOM: u32 = 5;
/// Worker command: spin (no calls) until `aux[7]` is nonzero, then `VCPU.STOP`.
pub const OP_SPIN_THEN_STOP: u32 = 6;
/// Worker command: register the steal-time record whose address is in `aux[0]`.
pub const OP_REGISTER_STEAL: u32 = 7;

/// State shared between the boot vCPU and one worker (lives in guest RAM).
#[derive(Debug)]
pub struct Mailbox {
    /// The handle the worker calls through (a copy of the boot vCPU's).
    pub pv: Pvabi,
    /// The suite's event page, if registered when the worker started.
    pub events: Option<EventChannels>,
    /// A function for [`OP_CUSTOM`].
    pub custom: Option<fn(&Mailbox)>,
    /// Sequence number of the latest command (boot vCPU writes).
    pub cmd: AtomicU32,
    /// Sequence number of the command being executed (worker writes, before the call).
    pub executing: AtomicU32,
    /// Sequence number of the latest finished command (worker writes).
    pub ack: AtomicU32,
    /// The command's operation (`OP_*`).
    pub op: AtomicU32,
    /// The call id for [`OP_CALL`].
    pub call: AtomicU32,
    /// The arguments for [`OP_CALL`].
    pub args: [AtomicU64; 6],
    /// The status register of the latest command's call.
    pub status: AtomicU64,
    /// The value of the latest command's call.
    pub value: AtomicU64,
    /// 1 once the entry ran its start-up checks.
    pub started: AtomicU32,
    /// RDI the entry received.
    pub got_arg: AtomicU64,
    /// RSI the entry received.
    pub got_id: AtomicU64,
    /// `VCPU.GET_STATUS` of itself at the start.
    pub got_status: AtomicU64,
    /// Its `upcall_pending` at the start (0 without an event page).
    pub got_upcall_pending: AtomicU64,
    /// Status register of `CLOCK.UNREGISTER_PAGE` at the start.
    pub got_unregister: AtomicU64,
    /// Status register of a `VCPU.BLOCK(now + 1 ms)` at the start (`u64::MAX` when skipped
    /// because an upcall was pending).
    pub got_first_block: AtomicU64,
    /// Nonzero once the worker saw its `upcall_pending` set while waiting for commands (it
    /// then clears it).
    pub upcall_seen: AtomicU32,
    /// Scratch words for custom operations.
    pub aux: [AtomicU64; 8],
}

/// A started worker (boot-vCPU side).
#[derive(Clone, Copy, Debug)]
pub struct Worker {
    /// The mailbox.
    pub mb: &'static Mailbox,
    /// The worker's vCPU id.
    pub vcpu: u32,
}

fn status_reg(r: Result<u64, Status>) -> (u64, u64) {
    match r {
        Ok(v) => (Status::SUCCESS.to_reg(), v),
        Err(s) => (s.to_reg(), 0),
    }
}

/// Records whether `ret` has status `want` (the value is not looked at); returns it.
pub fn expect_st(c: &mut Ctx<'_>, ret: Ret, want: Status, what: &str) -> bool {
    c.check(
        ret.status == want,
        format_args!("{what}: expected {want:?}, got {:?}", ret.status),
    )
}

/// The status a status register encodes.
pub fn st(reg: u64) -> Status {
    Status::from_reg(reg)
}

/// System time from `CLOCK.GET_TIME` (0 if the host refuses).
pub fn now(pv: &Pvabi) -> u64 {
    pv.time_ns().unwrap_or(0)
}

/// Blocks the calling vCPU until system time `deadline` (returns early on events).
pub fn block_until(pv: &Pvabi, deadline: u64) -> Result<u64, Status> {
    pv.call_scalar(call::VCPU_BLOCK, [deadline.max(1), 0, 0, 0, 0, 0])
}

/// Waits, polling with `VCPU.BLOCK` deadlines, until `cond` holds or `timeout_ns` of system
/// time passed; returns whether `cond` held. An early wake-up with the boot vCPU's
/// `upcall_pending` set clears it (the cases that look at that flag do so before waiting).
pub fn wait_for(c: &Ctx<'_>, timeout_ns: u64, mut cond: impl FnMut() -> bool) -> bool {
    let pv = c.pv;
    let me = pv.info().boot_vcpu.unwrap_or(0);
    let end = now(&pv).saturating_add(timeout_ns);
    for _ in 0..MAX_POLLS {
        if cond() {
            return true;
        }
        let t = now(&pv);
        if t >= end {
            return cond();
        }
        if block_until(&pv, (t + POLL_NS).min(end)).is_ok() {
            if let Some(ev) = c.shared.events {
                if let Some(v) = ev.page().vcpu.get(me as usize) {
                    v.upcall_pending.store(0, SeqCst);
                }
            }
        }
    }
    cond()
}

/// Waits for `cond` with `VCPU.YIELD` between polls (for a partner vCPU that is running and
/// not calling the host, when blocking would let a virtual clock stand still); bounded.
pub fn spin_wait(c: &Ctx<'_>, mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..200_000u32 {
        if cond() {
            return true;
        }
        let _ = c.pv.vcpu_yield();
    }
    cond()
}

/// The worker's vCPU entry (`f(mailbox address, vcpu id)`).
pub extern "C" fn worker_entry(arg: u64, id: u64) {
    let addr = usize::try_from(arg).unwrap_or(0);
    if addr == 0 || addr % core::mem::align_of::<Mailbox>() != 0 {
        return;
    }
    // SAFETY: `start_worker` passes the address of a `Mailbox` it moved into the suite's
    // arena (guest RAM that is never freed or reused), aligned and initialised; the boot vCPU
    // only touches it through its atomics afterwards (the plain fields are written once,
    // before VCPU.START), so a shared reference for the rest of the program is sound. Nothing
    // else passes this function's address to VCPU.START.
    let mb: &'static Mailbox = unsafe { &*core::ptr::with_exposed_provenance::<Mailbox>(addr) };
    let pv = mb.pv;
    let me = u32::try_from(id).unwrap_or(u32::MAX);
    mb.got_arg.store(arg, SeqCst);
    mb.got_id.store(id, SeqCst);
    mb.got_status.store(
        pv.vcpu_status(me).map_or(u64::MAX, |s| u64::from(s.0)),
        SeqCst,
    );
    let pending = mb.events.is_some_and(|e| e.upcall_pending(me));
    mb.got_upcall_pending.store(u64::from(pending), SeqCst);
    mb.got_unregister
        .store(status_reg(pv.clock_unregister_page().map(|()| 0)).0, SeqCst);
    if pending {
        mb.got_first_block.store(u64::MAX, SeqCst);
    } else {
        let r = block_until(&pv, now(&pv) + POLL_NS);
        mb.got_first_block.store(status_reg(r).0, SeqCst);
    }
    mb.started.store(1, SeqCst);
    let mut idle_since = now(&pv);
    for _ in 0..u32::MAX {
        let cmd = mb.cmd.load(SeqCst);
        if cmd == mb.ack.load(SeqCst) {
            let t = now(&pv);
            if t.saturating_sub(idle_since) > WORKER_IDLE_NS {
                return;
            }
            if block_until(&pv, t + POLL_NS).is_ok() {
                if let Some(ev) = mb.events {
                    if let Some(v) = ev.page().vcpu.get(me as usize) {
                        if v.upcall_pending.swap(0, SeqCst) != 0 {
                            mb.upcall_seen.store(1, SeqCst);
                        }
                    }
                }
            }
            continue;
        }
        mb.executing.store(cmd, SeqCst);
        let (s, v) = match mb.op.load(SeqCst) {
            OP_CALL => {
                let id = CallId(mb.call.load(SeqCst));
                let a: [u64; 6] = core::array::from_fn(|i| mb.args[i].load(SeqCst));
                status_reg(pv.call_scalar(id, a))
            }
            OP_EXIT => {
                mb.ack.store(cmd, SeqCst);
                return;
            }
            OP_STOP => (pv.vcpu_stop().to_reg(), 0),
            OP_SPIN_THEN_STOP => {
                for _ in 0..50_000_000u32 {
                    if mb.aux[7].load(SeqCst) != 0 {
                        break;
                    }
                    core::hint::spin_loop();
                }
                (pv.vcpu_stop().to_reg(), 0)
            }
            OP_REGISTER_CLOCK => {
                let a = usize::try_from(mb.aux[0].load(SeqCst)).unwrap_or(0);
                if a == 0 || a % core::mem::align_of::<ClockPageShared>() != 0 {
                    (Status::INVALID_PARAM.to_reg(), 0)
                } else {
                    // SAFETY: the boot vCPU stores in `aux[0]` only the address of a
                    // `ClockPageShared` it moved into the arena (never freed); it is made of
                    // atomics, so a shared reference alongside the host's writes is sound.
                    let p: &'static ClockPageShared =
                        unsafe { &*core::ptr::with_exposed_provenance::<ClockPageShared>(a) };
                    status_reg(pv.clock_register_page(p).map(|_| 0))
                }
            }
            OP_REGISTER_STEAL => {
                let a = usize::try_from(mb.aux[0].load(SeqCst)).unwrap_or(0);
                if a == 0 || a % core::mem::align_of::<StealTimeShared>() != 0 {
                    (Status::INVALID_PARAM.to_reg(), 0)
                } else {
                    // SAFETY: as for OP_REGISTER_CLOCK: the address of a `StealTimeShared`
                    // (atomics) in the never-freed arena.
                    let p: &'static StealTimeShared =
                        unsafe { &*core::ptr::with_exposed_provenance::<StealTimeShared>(a) };
                    status_reg(pv.register_steal_time(p).map(|()| 0))
                }
            }
            OP_CUSTOM => {
                if let Some(f) = mb.custom {
                    f(mb);
                }
                (Status::SUCCESS.to_reg(), 0)
            }
            _ => (Status::INVALID_PARAM.to_reg(), 0),
        };
        mb.status.store(s, SeqCst);
        mb.value.store(v, SeqCst);
        mb.ack.store(cmd, SeqCst);
        idle_since = now(&pv);
    }
}

/// A function a worker may be started at that returns at once (for hostile-argument tests:
/// if a host wrongly starts it, the vCPU stops again).
pub extern "C" fn return_at_once(_arg: u64, _id: u64) {}

/// Starts vCPU `vcpu` as a worker and waits until its start-up checks ran. Records a failure
/// (and returns `None`) when the host refuses or the worker does not come up.
pub fn start_worker(c: &mut Ctx<'_>, vcpu: u32, custom: Option<fn(&Mailbox)>) -> Option<Worker> {
    let mb = c.alloc(Mailbox {
        pv: c.pv,
        events: c.shared.events,
        custom,
        cmd: AtomicU32::new(0),
        executing: AtomicU32::new(0),
        ack: AtomicU32::new(0),
        op: AtomicU32::new(0),
        call: AtomicU32::new(0),
        args: [const { AtomicU64::new(0) }; 6],
        status: AtomicU64::new(0),
        value: AtomicU64::new(0),
        started: AtomicU32::new(0),
        got_arg: AtomicU64::new(0),
        got_id: AtomicU64::new(0),
        got_status: AtomicU64::new(0),
        got_upcall_pending: AtomicU64::new(0),
        got_unregister: AtomicU64::new(0),
        got_first_block: AtomicU64::new(0),
        upcall_seen: AtomicU32::new(0),
        aux: [const { AtomicU64::new(0) }; 8],
    })?;
    let mb: &'static Mailbox = mb;
    let stack = c.alloc(VcpuStack::<STACK>::new())?;
    let arg = mailbox_arg(mb);
    let r = c.pv.vcpu_start(vcpu, worker_entry, stack, arg);
    c.expect_ok(r, "VCPU.START of a worker")?;
    let up = wait_for(c, WAIT_NS, || mb.started.load(SeqCst) != 0);
    if !c.check(
        up,
        format_args!("vCPU {vcpu} did not run its entry after VCPU.START"),
    ) {
        return None;
    }
    Some(Worker { mb, vcpu })
}

/// The argument a worker is started with: its mailbox's address.
pub fn mailbox_arg(mb: &'static Mailbox) -> u64 {
    mb as *const Mailbox as usize as u64
}

impl Worker {
    /// Posts a command without waiting for it; returns its sequence number.
    pub fn post(&self, op: u32, id: CallId, args: [u64; 6]) -> u32 {
        let mb = self.mb;
        mb.op.store(op, SeqCst);
        mb.call.store(id.0, SeqCst);
        for (slot, a) in mb.args.iter().zip(args) {
            slot.store(a, SeqCst);
        }
        let seq = mb.cmd.load(SeqCst).wrapping_add(1);
        mb.cmd.store(seq, SeqCst);
        seq
    }

    /// Posts a command and kicks the worker out of its wait for commands, for a caller that
    /// will not block meanwhile (a virtual clock stands still while the caller runs). The kick
    /// may stay pending until the worker's next wait for commands, which it then shortens; so
    /// use this only for commands that do not block.
    pub fn post_kick(&self, c: &Ctx<'_>, op: u32) -> u32 {
        let seq = self.post(op, CallId(0), [0; 6]);
        let _ = c.pv.vcpu_kick(self.vcpu);
        seq
    }

    /// Waits for command `seq` to finish; its (status, value), or `None` on timeout.
    pub fn wait(&self, c: &Ctx<'_>, seq: u32) -> Option<Ret> {
        let mb = self.mb;
        if !wait_for(c, WAIT_NS, || mb.ack.load(SeqCst) == seq) {
            return None;
        }
        Some(Ret {
            status: st(mb.status.load(SeqCst)),
            value: mb.value.load(SeqCst),
        })
    }

    /// Makes a scalar call on the worker's vCPU and waits for its result (a failure is
    /// recorded on timeout).
    pub fn call(&self, c: &mut Ctx<'_>, id: CallId, args: [u64; 6]) -> Option<Ret> {
        let seq = self.post(OP_CALL, id, args);
        let r = self.wait(c, seq);
        c.check(
            r.is_some(),
            format_args!("vCPU {} did not finish call {:#x}", self.vcpu, id.0),
        );
        r
    }

    /// Runs the mailbox's custom function on the worker and waits for it.
    pub fn custom(&self, c: &mut Ctx<'_>) -> bool {
        let seq = self.post(OP_CUSTOM, CallId(0), [0; 6]);
        let ok = self.wait(c, seq).is_some();
        c.check(
            ok,
            format_args!("vCPU {} did not finish its work", self.vcpu),
        )
    }

    /// Waits until the worker is inside command `seq` and the host reports it BLOCKED.
    pub fn wait_blocked(&self, c: &mut Ctx<'_>, seq: u32) -> bool {
        let (pv, mb, v) = (c.pv, self.mb, self.vcpu);
        let ok = wait_for(c, WAIT_NS, || {
            mb.executing.load(SeqCst) == seq
                && mb.ack.load(SeqCst) != seq
                && pv.vcpu_status(v) == Ok(VcpuState::BLOCKED)
        });
        c.check(
            ok,
            format_args!("vCPU {v} never showed BLOCKED inside VCPU.BLOCK"),
        )
    }

    /// Waits until the host reports the worker STOPPED.
    pub fn wait_stopped(&self, c: &mut Ctx<'_>) -> bool {
        let (pv, v) = (c.pv, self.vcpu);
        let ok = wait_for(c, WAIT_NS, || pv.vcpu_status(v) == Ok(VcpuState::STOPPED));
        c.check(ok, format_args!("vCPU {v} did not reach STOPPED"))
    }

    /// Tells the worker to return from its entry and waits until it is STOPPED. A worker
    /// still stuck in an earlier command (a wait a broken host never ends) is kicked out of
    /// it, so that no vCPU of this case outlives it.
    pub fn finish(&self, c: &mut Ctx<'_>) -> bool {
        self.post(OP_EXIT, CallId(0), [0; 6]);
        let (pv, v) = (c.pv, self.vcpu);
        for _ in 0..10 {
            if wait_for(c, WAIT_NS / 10, || {
                pv.vcpu_status(v) == Ok(VcpuState::STOPPED)
            }) {
                return true;
            }
            let _ = pv.vcpu_kick(v);
        }
        self.wait_stopped(c)
    }
}

/// Whether the guest has at least `n` vCPUs; otherwise marks the case skipped.
pub fn need_vcpus(c: &mut Ctx<'_>, n: u32) -> bool {
    let have = c.pv.info().vcpu_count;
    if have < n {
        c.skip(format_args!("needs {n} vCPUs, the guest has {have}"));
        return false;
    }
    true
}

/// A secondary vCPU that is STOPPED now (the highest one), if any.
pub fn stopped_vcpu(c: &Ctx<'_>) -> Option<u32> {
    let n = c.pv.info().vcpu_count;
    (1..n)
        .rev()
        .find(|v| c.pv.vcpu_status(*v) == Ok(VcpuState::STOPPED))
}

/// The chapter's cases.
pub const CASES: &[Case] = &[
    Case {
        name: "vcpu::yield_returns_zero",
        clauses: "VCPU-2",
        run: yield_returns_zero,
    },
    Case {
        name: "vcpu::bad_vcpu_ids",
        clauses: "VCPU-1",
        run: bad_vcpu_ids,
    },
    Case {
        name: "vcpu::status_of_self_and_stopped",
        clauses: "VCPU-10",
        run: status_of_self_and_stopped,
    },
    Case {
        name: "vcpu::start_non_canonical",
        clauses: "VCPU-16",
        run: start_non_canonical,
    },
    Case {
        name: "vcpu::start_entry_and_status",
        clauses: "VCPU-6,VCPU-7,VCPU-10",
        run: start_entry_and_status,
    },
    Case {
        name: "vcpu::block_deadline_and_self_kick",
        clauses: "VCPU-3,VCPU-4,VCPU-5",
        run: block_deadline_and_self_kick,
    },
    Case {
        name: "vcpu::block_returns_on_upcall_pending",
        clauses: "VCPU-3",
        run: block_returns_on_upcall_pending,
    },
    Case {
        name: "vcpu::blocked_vcpu_woken_by_kick_or_deadline",
        clauses: "VCPU-3,VCPU-5,VCPU-10,VCPU-14",
        run: blocked_vcpu_woken_by_kick,
    },
    Case {
        name: "vcpu::blocked_vcpu_woken_by_event",
        clauses: "VCPU-14",
        run: blocked_vcpu_woken_by_event,
    },
    Case {
        name: "vcpu::stop_drops_state_and_restart_is_clean",
        clauses: "VCPU-8,VCPU-9,VCPU-5",
        run: stop_and_restart,
    },
    Case {
        name: "vcpu::steal_time",
        clauses: "VCPU-11,VCPU-12,VCPU-13",
        run: steal_time,
    },
];

/// The chapter's terminal cases (each ends the guest; see [`crate::TerminalCase`]).
pub const TERMINAL: &[TerminalCase] = &[
    TerminalCase {
        name: "vcpu::fresh_guest",
        clauses: "VCPU-8,VCPU-9,VCPU-15",
        run: fresh_guest,
        expect: ExpectedEnd {
            reason: pvabi::power::ShutdownReason::POWEROFF,
            code: 0,
            crash: None,
        },
    },
    crate::chapters::clock::FRESH_GUEST,
];

/// Guest functions this chapter's cases pass as vCPU entries or callbacks.
pub const FUNCTIONS: &[GuestEntry] = &[worker_entry, return_at_once];

fn yield_returns_zero(c: &mut Ctx<'_>) {
    for _ in 0..3 {
        let r = c.raw(call::VCPU_YIELD, [0; 6]);
        c.check(
            r.status == Status::SUCCESS && r.value == 0,
            format_args!("VCPU.YIELD returned ({:?}, {})", r.status, r.value),
        );
    }
}

fn bad_vcpu_ids(c: &mut Ctx<'_>) {
    let n = c.pv.info().vcpu_count;
    c.check(
        (1..=16).contains(&n),
        format_args!("vcpu_count {n} is not in 1..=16"),
    );
    if let Some(count) = c.expect_ok(c.pv.vcpu_count(), "BASE.GET_VCPU_COUNT") {
        c.check(count == n, format_args!("GET_VCPU_COUNT {count} != {n}"));
    }
    let entry = return_at_once as GuestEntry as usize as u64;
    let stack = c
        .buf(256, 16)
        .map_or(0, |b| b.as_ptr() as usize as u64 + 240);
    for bad in [u64::from(n), 16, 1 << 32, u64::MAX] {
        let r = c.raw(call::VCPU_KICK, [bad, 0, 0, 0, 0, 0]);
        expect_st(
            c,
            r,
            Status::INVALID_PARAM,
            "VCPU.KICK of a vCPU id >= vcpu_count",
        );
        let r = c.raw(call::VCPU_GET_STATUS, [bad, 0, 0, 0, 0, 0]);
        expect_st(
            c,
            r,
            Status::INVALID_PARAM,
            "VCPU.GET_STATUS of a vCPU id >= vcpu_count",
        );
        let r = c.raw(call::VCPU_START, [bad, entry, stack, 0, 0, 0]);
        expect_st(
            c,
            r,
            Status::INVALID_PARAM,
            "VCPU.START of a vCPU id >= vcpu_count",
        );
    }
}

fn status_of_self_and_stopped(c: &mut Ctx<'_>) {
    let me = c.pv.vcpu_id().unwrap_or(0);
    if let Some(s) = c.expect_ok(c.pv.vcpu_status(me), "VCPU.GET_STATUS(self)") {
        c.check(
            s == VcpuState::RUNNING,
            format_args!("the calling vCPU sees itself as {:?}, not RUNNING", s),
        );
    }
    let n = c.pv.info().vcpu_count;
    for v in (0..n).filter(|v| *v != me) {
        if let Some(s) = c.expect_ok(c.pv.vcpu_status(v), "VCPU.GET_STATUS(other)") {
            c.check(
                [
                    VcpuState::STOPPED,
                    VcpuState::RUNNING,
                    VcpuState::START_PENDING,
                    VcpuState::BLOCKED,
                ]
                .contains(&s),
                format_args!("vCPU {v} has state {:?}, not a VcpuState value", s),
            );
        }
    }
}

fn start_non_canonical(c: &mut Ctx<'_>) {
    if !need_vcpus(c, 2) {
        return;
    }
    let Some(v) = stopped_vcpu(c) else {
        c.skip(format_args!("no STOPPED secondary vCPU to start"));
        return;
    };
    let entry = return_at_once as GuestEntry as usize as u64;
    let Some(stack) = c.buf(4096, 16) else { return };
    // VCPU.START takes addresses in the guest's address space: the buffer's own address.
    let stack_va = stack.as_ptr() as usize as u64 + 4096 - 16;
    for (e, s, what) in [
        (
            0x0000_8000_0000_0000,
            stack_va,
            "VCPU.START with a non-canonical entry",
        ),
        (
            0xFFFF_7FFF_FFFF_F000,
            stack_va,
            "VCPU.START with a non-canonical entry (high half)",
        ),
        (
            entry,
            0x0000_8000_0000_0000,
            "VCPU.START with a non-canonical stack",
        ),
        (
            entry,
            0x1234_5678_9ABC_DEF0,
            "VCPU.START with a non-canonical stack",
        ),
    ] {
        let r = c.raw(call::VCPU_START, [u64::from(v), e, s, 0, 0, 0]);
        expect_st(c, r, Status::INVALID_PARAM, what);
        let s = c.pv.vcpu_status(v);
        c.check(
            s == Ok(VcpuState::STOPPED),
            format_args!("after a refused VCPU.START vCPU {v} is {s:?}, not STOPPED"),
        );
    }
}

fn start_entry_and_status(c: &mut Ctx<'_>) {
    if !need_vcpus(c, 2) {
        return;
    }
    let Some(v) = stopped_vcpu(c) else {
        c.skip(format_args!("no STOPPED secondary vCPU to start"));
        return;
    };
    let Some(w) = start_worker(c, v, None) else {
        return;
    };
    let mb = w.mb;
    c.check(
        mb.got_arg.load(SeqCst) == mailbox_arg(mb),
        format_args!(
            "entry got RDI {:#x}, VCPU.START passed {:#x}",
            mb.got_arg.load(SeqCst),
            mailbox_arg(mb)
        ),
    );
    c.check(
        mb.got_id.load(SeqCst) == u64::from(v),
        format_args!(
            "entry got RSI {}, not its vCPU id {v}",
            mb.got_id.load(SeqCst)
        ),
    );
    c.check(
        mb.got_status.load(SeqCst) == u64::from(VcpuState::RUNNING.0),
        format_args!(
            "the started vCPU sees itself as {}, not RUNNING",
            mb.got_status.load(SeqCst)
        ),
    );
    // Started and not STOPPED: a second START is ALREADY, and so is starting oneself.
    let s = c.pv.vcpu_status(v);
    c.check(
        matches!(
            s,
            Ok(VcpuState::RUNNING) | Ok(VcpuState::BLOCKED) | Ok(VcpuState::START_PENDING)
        ),
        format_args!("a started vCPU has status {s:?}"),
    );
    let entry = return_at_once as GuestEntry as usize as u64;
    let stack = c
        .buf(4096, 16)
        .map_or(0, |b| b.as_ptr() as usize as u64 + 4096 - 16);
    let r = c.raw(call::VCPU_START, [u64::from(v), entry, stack, 0, 0, 0]);
    expect_st(c, r, Status::ALREADY, "VCPU.START of a running vCPU");
    let me = c.pv.vcpu_id().unwrap_or(0);
    let r = c.raw(call::VCPU_START, [u64::from(me), entry, stack, 0, 0, 0]);
    expect_st(c, r, Status::ALREADY, "VCPU.START of the calling vCPU");
    // The worker asks for its own status too (RUNNING while it runs a call).
    if let Some(r) = w.call(c, call::VCPU_GET_STATUS, [u64::from(v), 0, 0, 0, 0, 0]) {
        c.check(
            r.status == Status::SUCCESS && r.value == u64::from(VcpuState::RUNNING.0),
            format_args!("worker's GET_STATUS(self) = ({:?}, {})", r.status, r.value),
        );
    }
    w.finish(c);
}

fn block_deadline_and_self_kick(c: &mut Ctx<'_>) {
    let pv = c.pv;
    let me = pv.vcpu_id().unwrap_or(0);
    clear_own_upcall(c, me);
    // A deadline in the past: TIMED_OUT at once.
    let t = now(&pv);
    for d in [1, t.saturating_sub(1).max(1), t] {
        let r = c.raw(call::VCPU_BLOCK, [d, 0, 0, 0, 0, 0]);
        expect_st(c, r, Status::TIMED_OUT, "VCPU.BLOCK with a passed deadline");
    }
    // A future deadline with nothing pending: TIMED_OUT once it passes, not before.
    let t = now(&pv);
    let d = t + 2 * POLL_NS;
    let r = c.raw(call::VCPU_BLOCK, [d, 0, 0, 0, 0, 0]);
    let after = now(&pv);
    if r.status == Status::SUCCESS {
        // A spurious wake-up is allowed (VCPU-3); the deadline then has not necessarily
        // passed. Nothing else to check.
    } else {
        expect_st(c, r, Status::TIMED_OUT, "VCPU.BLOCK(now + 2 ms)");
        c.check(
            after >= d,
            format_args!("VCPU.BLOCK timed out at {after}, before its deadline {d}"),
        );
    }
    // A self-kick makes the next BLOCK return SUCCESS at once; kicks do not accumulate and
    // returning consumes the kick.
    let r = c.raw(call::VCPU_KICK, [u64::from(me), 0, 0, 0, 0, 0]);
    expect_st(c, r, Status::SUCCESS, "VCPU.KICK(self)");
    let r = c.raw(call::VCPU_KICK, [u64::from(me), 0, 0, 0, 0, 0]);
    expect_st(c, r, Status::SUCCESS, "second VCPU.KICK(self)");
    let t = now(&pv);
    let r = c.raw(call::VCPU_BLOCK, [t + 50 * POLL_NS, 0, 0, 0, 0, 0]);
    expect_st(c, r, Status::SUCCESS, "VCPU.BLOCK with a pending kick");
    let t2 = now(&pv);
    c.check(
        t2 < t + 50 * POLL_NS,
        format_args!("VCPU.BLOCK with a pending kick waited until its deadline"),
    );
    let r = c.raw(call::VCPU_BLOCK, [now(&pv) + POLL_NS, 0, 0, 0, 0, 0]);
    expect_st(
        c,
        r,
        Status::TIMED_OUT,
        "VCPU.BLOCK after the kick was consumed (two kicks must not accumulate)",
    );
    // A kick also satisfies BLOCK without a deadline.
    let r = c.raw(call::VCPU_KICK, [u64::from(me), 0, 0, 0, 0, 0]);
    expect_st(c, r, Status::SUCCESS, "VCPU.KICK(self)");
    let r = c.raw(call::VCPU_BLOCK, [0, 0, 0, 0, 0, 0]);
    expect_st(c, r, Status::SUCCESS, "VCPU.BLOCK(0) with a pending kick");
    // Kicking a STOPPED vCPU is BAD_STATE.
    if let Some(v) = stopped_vcpu(c) {
        let r = c.raw(call::VCPU_KICK, [u64::from(v), 0, 0, 0, 0, 0]);
        expect_st(c, r, Status::BAD_STATE, "VCPU.KICK of a STOPPED vCPU");
    }
}

/// Clears the calling vCPU's `upcall_pending` in the suite's event page (if any), so that
/// BLOCK does not return at once because of an earlier case's event.
pub fn clear_own_upcall(c: &Ctx<'_>, me: u32) {
    if let Some(ev) = c.shared.events {
        if let Some(v) = ev.page().vcpu.get(me as usize) {
            v.upcall_pending.store(0, SeqCst);
        }
    }
}

fn block_returns_on_upcall_pending(c: &mut Ctx<'_>) {
    let Some(ev) = crate::chapters::event::shared_events(c) else {
        return;
    };
    let pv = c.pv;
    let me = pv.vcpu_id().unwrap_or(0);
    let Some(info) = ev.page().vcpu.get(me as usize) else {
        return;
    };
    // The guest sets its own upcall_pending (mode NONE: nothing is delivered): BLOCK must
    // return SUCCESS at once instead of waiting for its deadline.
    info.upcall_pending.store(1, SeqCst);
    let t = now(&pv);
    let r = c.raw(call::VCPU_BLOCK, [t + 100 * POLL_NS, 0, 0, 0, 0, 0]);
    expect_st(c, r, Status::SUCCESS, "VCPU.BLOCK with upcall_pending set");
    c.check(
        now(&pv) < t + 100 * POLL_NS,
        format_args!("VCPU.BLOCK with upcall_pending set waited for its deadline"),
    );
    info.upcall_pending.store(0, SeqCst);
    let r = c.raw(call::VCPU_BLOCK, [now(&pv) + POLL_NS, 0, 0, 0, 0, 0]);
    expect_st(
        c,
        r,
        Status::TIMED_OUT,
        "VCPU.BLOCK after upcall_pending was cleared",
    );
}

fn blocked_vcpu_woken_by_kick(c: &mut Ctx<'_>) {
    blocked_vcpu_woken(c, false);
}

fn blocked_vcpu_woken_by_event(c: &mut Ctx<'_>) {
    blocked_vcpu_woken(c, true);
}

fn blocked_vcpu_woken(c: &mut Ctx<'_>, by_event: bool) {
    if !need_vcpus(c, 2) {
        return;
    }
    let Some(ev) = crate::chapters::event::shared_events(c) else {
        return;
    };
    let Some(v) = stopped_vcpu(c) else {
        c.skip(format_args!("no STOPPED secondary vCPU to start"));
        return;
    };
    let Some(w) = start_worker(c, v, None) else {
        return;
    };
    // 1. Blocked without a deadline, woken by a kick.
    if !by_event {
        let seq = w.post(OP_CALL, call::VCPU_BLOCK, [0; 6]);
        if !w.wait_blocked(c, seq) {
            w.finish(c);
            return;
        }
        let r = c.raw(call::VCPU_KICK, [u64::from(v), 0, 0, 0, 0, 0]);
        expect_st(c, r, Status::SUCCESS, "VCPU.KICK of a BLOCKED vCPU");
        match w.wait(c, seq) {
            Some(r) => {
                expect_st(c, r, Status::SUCCESS, "the kicked vCPU's VCPU.BLOCK");
            }
            None => {
                c.check(false, format_args!("a kick did not end VCPU.BLOCK(0)"));
            }
        }
    }
    // 2. Blocked without a deadline, woken by a send to a port bound to it.
    let port = if by_event {
        c.expect_ok(c.pv.event_alloc(), "EVENT.ALLOC")
    } else {
        None
    };
    if let Some(port) = port {
        c.expect_ok(
            c.pv.event_bind_vcpu(port, v),
            "EVENT.BIND_VCPU to the worker",
        );
        let seq = w.post(OP_CALL, call::VCPU_BLOCK, [0; 6]);
        if w.wait_blocked(c, seq) {
            c.expect_ok(
                c.pv.event_send(port),
                "EVENT.SEND to the blocked vCPU's port",
            );
            match w.wait(c, seq) {
                Some(r) => {
                    expect_st(c, r, Status::SUCCESS, "VCPU.BLOCK ended by an event");
                }
                None => {
                    c.check(
                        false,
                        format_args!("a send to a bound port did not end VCPU.BLOCK(0)"),
                    );
                }
            }
        }
        ev.clear_pending(port);
        if let Some(i) = ev.page().vcpu.get(v as usize) {
            i.upcall_pending.store(0, SeqCst);
            i.selector.store(0, SeqCst);
        }
        let _ = c.pv.event_close(port);
    }
    if by_event {
        w.finish(c);
        return;
    }
    // 3. Blocked with a deadline: TIMED_OUT once it passes.
    let d = now(&c.pv) + 3 * POLL_NS;
    let seq = w.post(OP_CALL, call::VCPU_BLOCK, [d, 0, 0, 0, 0, 0]);
    match w.wait(c, seq) {
        Some(r) => {
            if r.status != Status::SUCCESS {
                expect_st(c, r, Status::TIMED_OUT, "the worker's VCPU.BLOCK(deadline)");
                let t = now(&c.pv);
                c.check(
                    t >= d,
                    format_args!("the worker's block timed out before its deadline"),
                );
            }
        }
        None => {
            c.check(
                false,
                format_args!("the deadline did not end the worker's VCPU.BLOCK"),
            );
        }
    }
    w.finish(c);
}

fn stop_and_restart(c: &mut Ctx<'_>) {
    stop_restart(c, false);
}

/// EVT-20: a raise of a port bound to a STOPPED vCPU sets pending, selector and
/// `upcall_pending`, and the vCPU finds it when it runs again.
pub fn raise_to_stopped_vcpu(c: &mut Ctx<'_>) {
    stop_restart(c, true);
}

fn stop_restart(c: &mut Ctx<'_>, with_event: bool) {
    if !need_vcpus(c, 2) {
        return;
    }
    let Some(ev) = crate::chapters::event::shared_events(c) else {
        return;
    };
    let Some(v) = stopped_vcpu(c) else {
        c.skip(format_args!("no STOPPED secondary vCPU to start"));
        return;
    };
    let pv = c.pv;
    let timers = !with_event && pv.info().features.contains(Features::TIMER);
    let clock_pages = !with_event && pv.info().features.contains(Features::CLOCK_PAGE);
    let Some(w) = start_worker(c, v, None) else {
        return;
    };
    // Give the worker a clock page, an armed timer and a pending kick, then stop it.
    let page: Option<&'static ClockPageShared> = if clock_pages {
        c.alloc(ClockPageShared::new()).map(|p| &*p)
    } else {
        None
    };
    if let Some(p) = page {
        w.mb.aux[0].store(p as *const ClockPageShared as usize as u64, SeqCst);
        let seq = w.post(OP_REGISTER_CLOCK, CallId(0), [0; 6]);
        if let Some(r) = w.wait(c, seq) {
            expect_st(c, r, Status::SUCCESS, "worker's CLOCK.REGISTER_PAGE");
        }
    }
    let Some(timer_port) = c.expect_ok(pv.event_alloc(), "EVENT.ALLOC") else {
        w.finish(c);
        return;
    };
    let Some(wake_port) = c.expect_ok(pv.event_alloc(), "EVENT.ALLOC") else {
        let _ = pv.event_close(timer_port);
        w.finish(c);
        return;
    };
    c.expect_ok(pv.event_bind_vcpu(timer_port, v), "EVENT.BIND_VCPU");
    c.expect_ok(pv.event_bind_vcpu(wake_port, v), "EVENT.BIND_VCPU");
    let deadline = now(&pv) + 20 * POLL_NS;
    if timers {
        if let Some(r) = w.call(
            c,
            call::CLOCK_SET_TIMER,
            [deadline, timer_port.arg(), 0, 0, 0, 0],
        ) {
            expect_st(c, r, Status::SUCCESS, "worker's CLOCK.SET_TIMER");
        }
    }
    w.mb.aux[7].store(0, SeqCst);
    let seq = w.post_kick(c, OP_SPIN_THEN_STOP);
    let spinning = spin_wait(c, || w.mb.executing.load(SeqCst) == seq);
    c.check(spinning, format_args!("the worker did not start spinning"));
    // The worker runs (spins without calls): the kick stays pending until it stops.
    if !with_event {
        let r = c.raw(call::VCPU_KICK, [u64::from(v), 0, 0, 0, 0, 0]);
        expect_st(c, r, Status::SUCCESS, "VCPU.KICK of a running vCPU");
    }
    w.mb.aux[7].store(1, SeqCst);
    if !w.wait_stopped(c) {
        return;
    }
    let s = pv.vcpu_status(v);
    c.check(
        s == Ok(VcpuState::STOPPED),
        format_args!("after VCPU.STOP the vCPU is {s:?}"),
    );
    if !with_event {
        let r = c.raw(call::VCPU_KICK, [u64::from(v), 0, 0, 0, 0, 0]);
        expect_st(c, r, Status::BAD_STATE, "VCPU.KICK of a STOPPED vCPU");
    }
    // The dropped clock page is no longer written.
    if let Some(p) = page {
        p.version.store(0xFFFF_0000, SeqCst);
        p.system_time.store(7, SeqCst);
        if pv.harness_clock_advance(POLL_NS).is_ok() {
            c.check(
                p.version.load(SeqCst) == 0xFFFF_0000 && p.system_time.load(SeqCst) == 7,
                format_args!("the host still writes the clock page of a STOPPED vCPU"),
            );
        }
    }
    // The timer was dropped: past its deadline its port is not raised.
    ev.clear_pending(timer_port);
    let past = wait_for(c, WAIT_NS, || now(&pv) > deadline + POLL_NS);
    c.check(
        past,
        format_args!("system time did not pass the timer's deadline"),
    );
    if timers {
        c.check(
            !ev.is_pending(timer_port),
            format_args!("a STOPPED vCPU's timer fired (VCPU.STOP must drop it)"),
        );
    }
    let info = ev.page().vcpu.get(v as usize);
    if with_event {
        // A send to a port bound to the STOPPED vCPU: pending, selector and upcall_pending set.
        if let Some(i) = info {
            i.upcall_pending.store(0, SeqCst);
            i.selector.store(0, SeqCst);
        }
        c.expect_ok(
            pv.event_send(wake_port),
            "EVENT.SEND to a STOPPED vCPU's port",
        );
        let (w_, b) = wake_port.word_bit();
        c.check(
            ev.is_pending(wake_port),
            format_args!("a send to a STOPPED vCPU's port did not set the pending bit"),
        );
        if let Some(i) = info {
            c.check(
            i.selector.load(SeqCst) & (1 << w_) != 0 && i.upcall_pending.load(SeqCst) != 0,
            format_args!(
                "a send to a STOPPED vCPU's unmasked port did not set its selector bit and upcall_pending"
            ),
        );
        }
        let _ = b;
    }
    // Restart: the event is still there for it; no clock page, no kick.
    let Some(w2) = start_worker(c, v, None) else {
        let _ = pv.event_close(timer_port);
        let _ = pv.event_close(wake_port);
        return;
    };
    let mb = w2.mb;
    if with_event {
        c.check(
            mb.got_upcall_pending.load(SeqCst) != 0,
            format_args!("after restart the vCPU did not see the event sent while it was STOPPED"),
        );
    }
    if clock_pages {
        c.check(
            st(mb.got_unregister.load(SeqCst)) == Status::NOT_FOUND,
            format_args!(
                "a restarted vCPU's CLOCK.UNREGISTER_PAGE gave {:?}, not NOT_FOUND (no clock page)",
                st(mb.got_unregister.load(SeqCst))
            ),
        );
    }
    ev.clear_pending(wake_port);
    if let Some(i) = info {
        i.upcall_pending.store(0, SeqCst);
        i.selector.store(0, SeqCst);
    }
    // No pending kick survives the stop: a BLOCK with a deadline times out.
    let seq = w2.post(
        OP_CALL,
        call::VCPU_BLOCK,
        [now(&pv) + 2 * POLL_NS, 0, 0, 0, 0, 0],
    );
    if let (Some(r), false) = (w2.wait(c, seq), with_event) {
        expect_st(
            c,
            r,
            Status::TIMED_OUT,
            "restarted vCPU's VCPU.BLOCK (the kick from before VCPU.STOP must be gone)",
        );
    }
    w2.finish(c);
    let _ = pv.event_close(timer_port);
    let _ = pv.event_close(wake_port);
}

fn steal_time(c: &mut Ctx<'_>) {
    let pv = c.pv;
    if !pv.info().features.contains(Features::STEAL_TIME) {
        let Some(rec) = c.alloc(StealTimeShared::new()) else {
            return;
        };
        let r = pv.register_steal_time(rec);
        c.expect_err(
            r,
            Status::NOT_SUPPORTED,
            "VCPU.REGISTER_STEAL_TIME without the STEAL_TIME feature",
        );
        return;
    }
    let Some(buf) = c.buf(256, 64) else { return };
    let gpa = c.gpa(buf);
    let end = c.ram_end();
    for (a, what) in [
        (gpa + 8, "misaligned (8)"),
        (gpa + 32, "misaligned (32)"),
        ((end + 4095) & !4095, "beyond guest RAM"),
        (1 << 52, "far beyond guest RAM"),
        (!63u64, "wrapping the address space"),
    ] {
        let r = c.raw(call::VCPU_REGISTER_STEAL_TIME, [a, 0, 0, 0, 0, 0]);
        expect_st(c, r, Status::INVALID_ADDRESS, what);
    }
    // Register on a worker (a vCPU this case owns), so the record does not outlive the case:
    // VCPU.STOP drops it.
    if !need_vcpus(c, 2) {
        return;
    }
    let Some(v) = stopped_vcpu(c) else {
        c.skip(format_args!("no STOPPED secondary vCPU to start"));
        return;
    };
    let Some(rec) = c.alloc(StealTimeShared::new()) else {
        return;
    };
    let rec: &'static StealTimeShared = rec;
    rec.version.store(0xFFFF_FFF1, SeqCst);
    rec.flags.store(0xDEAD, SeqCst);
    let Some(w) = start_worker(c, v, None) else {
        return;
    };
    w.mb.aux[0].store(rec as *const StealTimeShared as usize as u64, SeqCst);
    let seq = w.post(OP_REGISTER_STEAL, CallId(0), [0; 6]);
    if let Some(r) = w.wait(c, seq) {
        expect_st(c, r, Status::SUCCESS, "VCPU.REGISTER_STEAL_TIME");
        let v1 = rec.version.load(SeqCst);
        c.check(
            v1 & 1 == 0,
            format_args!("steal-time version {v1:#x} is odd after registration"),
        );
        c.check(
            v1 != 0xFFFF_FFF1 && v1 < 0xFFFF_0000,
            format_args!("steal-time version {v1:#x} looks taken from the guest's copy"),
        );
        c.check(
            rec.flags.load(SeqCst) == 0 && rec.preempted.load(SeqCst) == 0,
            format_args!(
                "steal-time flags {:#x}, preempted {} (a running vCPU is not preempted)",
                rec.flags.load(SeqCst),
                rec.preempted.load(SeqCst)
            ),
        );
        let s1 = pvabi_guest::clock::read_steal_time(rec);
        let _ = w.call(c, call::VCPU_YIELD, [0; 6]);
        let _ = w.call(c, call::VCPU_BLOCK, [now(&pv) + POLL_NS, 0, 0, 0, 0, 0]);
        let s2 = pvabi_guest::clock::read_steal_time(rec);
        match (s1, s2) {
            (Ok(a), Ok(b)) => {
                c.check(b >= a, format_args!("steal time went back from {a} to {b}"));
            }
            other => {
                c.check(
                    false,
                    format_args!("steal-time seqlock reads failed: {other:?}"),
                );
            }
        }
        let v2 = rec.version.load(SeqCst);
        c.check(
            v2 >= v1 && v2 & 1 == 0,
            format_args!("steal-time version went from {v1} to {v2}"),
        );
    }
    w.finish(c);
}

fn fresh_guest(c: &mut Ctx<'_>) {
    let pv = c.pv;
    let me = pv.vcpu_id().unwrap_or(0);
    // VCPU-15 (closest observable): every vCPU the guest did not start is STOPPED.
    let n = pv.info().vcpu_count;
    for v in (0..n).filter(|v| *v != me) {
        let s = pv.vcpu_status(v);
        c.check(
            s == Ok(VcpuState::STOPPED),
            format_args!("vCPU {v} that the guest never started has status {s:?}"),
        );
    }
    // VCPU-8 for the boot vCPU: no clock page, no pending kick.
    if pv.info().features.contains(Features::CLOCK_PAGE) {
        c.expect_err(
            pv.clock_unregister_page(),
            Status::NOT_FOUND,
            "CLOCK.UNREGISTER_PAGE at guest creation",
        );
    }
    let r = c.raw(call::VCPU_BLOCK, [now(&pv) + POLL_NS, 0, 0, 0, 0, 0]);
    expect_st(
        c,
        r,
        Status::TIMED_OUT,
        "VCPU.BLOCK at guest creation (no kick may be pending)",
    );
    // VCPU-9: the only running vCPU may not stop.
    let s = pv.vcpu_stop();
    c.check(
        s == Status::BAD_STATE,
        format_args!("VCPU.STOP of the only running vCPU gave {s:?}, not BAD_STATE"),
    );
    c.report_before_end();
    pv.power_off(0);
}
