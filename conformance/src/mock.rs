//! Certifying the mock: the suite runs in-process, on a thread of the mock, through the
//! in-process gate.
//!
//! The mock is certified in two configurations. The whole suite runs on a mock with every
//! feature; then the cases that check a host *without* an optional feature
//! ([`FEATURES_OFF_CASES`]: a function behind a clear feature bit answers NOT_SUPPORTED) run
//! on a mock with [`FEATURES_OFF`] cleared, one mock per case. Their records are named with
//! [`FEATURES_OFF_SUFFIX`] appended and merged into the same report, so that a clause such as
//! `STORE-36` is decided by a run in which it applies rather than skipped.

use std::time::Duration;

use pvabi::Features;
use pvabi_guest::{GuestArena, InProcessGate, PhysReader, Pvabi, Translate};
use pvabi_mock::{BootCtx, Mock, MockConfig};

use crate::backend::{Availability, Certifiable, RunError, SuiteRun};
use crate::records::{judge_terminal, records_from_host, Observed};

/// vCPUs the mock guest gets for certification.
pub const MOCK_VCPUS: u32 = 4;
/// How long a mock run may take before it is declared hung.
pub const MOCK_TIMEOUT: Duration = Duration::from_secs(120);

/// The optional features the second configuration clears.
pub const FEATURES_OFF: Features = Features::BALLOON
    .union(Features::GRANT)
    .union(Features::STORE_TXN)
    .union(Features::MULTICALL)
    .union(Features::RING_GATE);

/// The cases that check how a host without [`FEATURES_OFF`] answers (they skip on a host
/// that sets the feature): `STORE-36`, `MEM-7`, `GNT-8`, `MC-6`, and `RING-10`'s clear-bit
/// half.
pub const FEATURES_OFF_CASES: &[&str] = &[
    "store::txn_feature_absent",
    "memory::balloon_feature_absent",
    "grant::feature_absent",
    "multicall::feature_absent",
    "ring::not_without_feature",
];

/// Appended to the name of every record of the features-off configuration.
pub const FEATURES_OFF_SUFFIX: &str = " [features-off]";

/// The mock backend, optionally deliberately broken through its fault configuration.
#[derive(Clone, Debug, Default)]
pub struct MockBackend {
    /// Faults and quirks to inject (default: none, a conforming mock).
    pub faults: pvabi_mock::Faults,
    /// Only run cases whose name starts with this.
    pub filter: Option<String>,
}

const _: () = {
    use std::mem::{align_of, offset_of, size_of};
    assert!(size_of::<pvabi_mock::MockRegs>() == size_of::<pvabi_guest::InProcessRegs>());
    assert!(align_of::<pvabi_mock::MockRegs>() == align_of::<pvabi_guest::InProcessRegs>());
    assert!(offset_of!(pvabi_mock::MockRegs, rax) == offset_of!(pvabi_guest::InProcessRegs, rax));
    assert!(offset_of!(pvabi_mock::MockRegs, args) == offset_of!(pvabi_guest::InProcessRegs, args));
};

enum Job {
    Suite(Option<String>),
    Terminal(&'static str),
}

struct InProcessPlatform {
    boot_info_gpa: u64,
}

impl pvabi_conformance_suite::Platform for InProcessPlatform {
    fn name(&self) -> &'static str {
        "in-process"
    }
    fn boot_info_gpa(&self) -> u64 {
        self.boot_info_gpa
    }
    fn in_process(&self) -> bool {
        true
    }
    fn upcall_vector(&self) -> Option<u8> {
        None
    }
    fn callback_upcalls(&self) -> bool {
        true
    }
}

fn guest_main(boot: BootCtx, job: Job) {
    // SAFETY: the mock maps `ram_len` bytes of guest RAM at `host_base` for as long as the mock
    // lives, which outlives this vCPU thread's run of the suite.
    let phys = unsafe {
        PhysReader::new(Translate::Offset {
            host_base: boot.host_base,
            len: boot.ram_len,
        })
    };
    // SAFETY: `MockRegs` and `InProcessRegs` are both `#[repr(C)] { rax: u64, args: [u64; 6] }`
    // (the layout assertions below pin it), so the two `unsafe extern "C" fn(usize, *mut _)`
    // types have the same ABI and the pointer may be reinterpreted.
    let gate_fn: pvabi_guest::InProcessFn = unsafe {
        std::mem::transmute::<pvabi_mock::GateFn, pvabi_guest::InProcessFn>(boot.gate_fn)
    };
    // SAFETY: `gate_fn` is the mock's in-process gate; it is sound for any register values.
    let gate = unsafe { InProcessGate::new(gate_fn, boot.gate_ctx) };
    let Ok(pv) = Pvabi::discover_in_process(gate, boot.boot_info_gpa, &phys) else {
        return;
    };
    let (Ok(base), Ok(len)) = (
        usize::try_from(boot.scratch_gpa),
        usize::try_from(boot.scratch_len),
    ) else {
        return;
    };
    // SAFETY: the scratch area `[scratch_gpa, scratch_gpa + scratch_len)` is guest RAM the mock
    // never touches on its own and that nothing else in this guest uses; it is mapped at
    // `host_base + scratch_gpa` for the mock's lifetime, which outlives the arena (dropped at
    // the end of this function). The sum cannot overflow: it lies inside the RAM mapping.
    let arena = unsafe { GuestArena::new(boot.host_base + base, len) };
    let platform = InProcessPlatform {
        boot_info_gpa: boot.boot_info_gpa,
    };
    match job {
        Job::Suite(filter) => {
            pvabi_conformance_suite::run_suite(pv, &platform, &arena, filter.as_deref());
            let _ = pv.power_off(0);
        }
        Job::Terminal(name) => pvabi_conformance_suite::run_terminal(pv, &platform, &arena, name),
    }
}

impl MockBackend {
    fn new_mock(&self) -> Result<Mock, RunError> {
        self.new_mock_with(MockConfig::default().features)
    }

    fn new_mock_with(&self, features: Features) -> Result<Mock, RunError> {
        let cfg = MockConfig {
            vcpus: MOCK_VCPUS,
            harness: true,
            features,
            faults: self.faults.clone(),
            ..MockConfig::default()
        };
        let mock = Mock::new(cfg).map_err(|e| RunError::Backend(e.to_string()))?;
        for f in pvabi_conformance_suite::guest_functions() {
            mock.register_fn(f);
        }
        mock.register_fn(pvabi_guest::upcall::in_process_callback);
        Ok(mock)
    }
}

impl MockBackend {
    /// Runs the suite (cases starting with `filter`) on `mock` and collects its records.
    fn suite_on(&self, mock: Mock, filter: Option<String>) -> SuiteRun {
        mock.start(move |boot| guest_main(boot, Job::Suite(filter)));
        let end = mock.wait_timeout(MOCK_TIMEOUT);
        let mut run = records_from_host(mock.vm().take_reports());
        match end {
            None => run.problems.push(format!(
                "the mock guest did not end within {} s",
                MOCK_TIMEOUT.as_secs()
            )),
            Some(pvabi_mock::RunEnd::Shutdown { reason, code })
                if reason == pvabi::power::ShutdownReason::POWEROFF && code == 0 => {}
            Some(other) => run
                .problems
                .push(format!("the mock guest ended unexpectedly: {other:?}")),
        }
        run
    }
}

impl Certifiable for MockBackend {
    fn name(&self) -> String {
        "mock".into()
    }
    fn mode(&self) -> String {
        "in-process".into()
    }
    fn availability(&self) -> Availability {
        Availability::Available
    }
    fn run_suite(&self) -> Result<SuiteRun, RunError> {
        let mut run = self.suite_on(self.new_mock()?, self.filter.clone());
        for case in FEATURES_OFF_CASES {
            if self.filter.as_deref().is_some_and(|f| !case.starts_with(f)) {
                continue;
            }
            let off = self.suite_on(
                self.new_mock_with(MockConfig::default().features.difference(FEATURES_OFF))?,
                Some((*case).to_string()),
            );
            run.merge_features_off(case, off);
        }
        for case in crate::records::terminal_cases(self.filter.as_deref()) {
            let mock = self.new_mock()?;
            let name = case.name;
            mock.start(move |boot| guest_main(boot, Job::Terminal(name)));
            let end = mock.wait_timeout(MOCK_TIMEOUT);
            let before = records_from_host(mock.vm().take_reports());
            run.cases.extend(before.cases);
            run.problems.extend(before.problems);
            let observed = match end {
                None => Observed::Hung,
                Some(pvabi_mock::RunEnd::Shutdown { .. }) => match mock.vm().shutdown_state() {
                    Some(s) => Observed::Shutdown {
                        reason: s.reason,
                        code: s.code,
                        crash: s.crash.map(|c| (c.code, c.message)),
                    },
                    None => Observed::Other("the mock ended without a recorded shutdown".into()),
                },
                Some(other) => Observed::Other(format!("{other:?}")),
            };
            run.cases.push(judge_terminal(case, &observed));
        }
        Ok(run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvabi::{call, Regs, Ret, Status};
    use pvabi_guest::shared::RingShared;
    use pvabi_guest::Gate;
    use std::sync::atomic::Ordering;
    use std::sync::mpsc;

    /// What the guest saw using the shim's ring gate.
    #[derive(Debug, PartialEq, Eq)]
    struct Seen {
        batch: Result<Vec<Ret>, Status>,
        vcpu_count: Result<u64, Status>,
        cmp_prod: u32,
        unregistered: bool,
    }

    #[test]
    fn feature_clear_cases_run_on_a_mock_without_the_features() {
        let backend = MockBackend {
            faults: pvabi_mock::Faults::default(),
            filter: Some("grant::feature_absent".into()),
        };
        let run = backend.run_suite().unwrap();
        assert!(run.finished && run.problems.is_empty(), "{run:?}");
        let outcome = |name: &str| run.cases.iter().find(|c| c.name == name).map(|c| c.outcome);
        // With every feature the case skips; with GRANT clear it runs and passes (GNT-8).
        assert_eq!(
            outcome("grant::feature_absent"),
            Some(crate::CaseOutcome::Skipped)
        );
        assert_eq!(
            outcome("grant::feature_absent [features-off]"),
            Some(crate::CaseOutcome::Passed)
        );
        assert_eq!(run.cases.len(), 2, "{:?}", run.cases);
    }

    #[test]
    fn the_guest_shim_calls_through_a_ring_on_the_mock() {
        let mock = Mock::new(MockConfig {
            vcpus: 2,
            ..MockConfig::default()
        })
        .unwrap();
        let (tx, rx) = mpsc::channel();
        mock.start(move |boot| {
            // SAFETY: as in `guest_main`: the mock maps `ram_len` bytes at `host_base` for
            // longer than this vCPU runs.
            let phys = unsafe {
                PhysReader::new(Translate::Offset {
                    host_base: boot.host_base,
                    len: boot.ram_len,
                })
            };
            // SAFETY: as in `guest_main`: the two register structs have one layout.
            let gate_fn = unsafe {
                std::mem::transmute::<pvabi_mock::GateFn, pvabi_guest::InProcessFn>(boot.gate_fn)
            };
            // SAFETY: the mock's in-process gate is sound for any register values.
            let gate = unsafe { InProcessGate::new(gate_fn, boot.gate_ctx) };
            let pv = Pvabi::discover_in_process(gate, boot.boot_info_gpa, &phys).unwrap();
            // SAFETY: as in `guest_main`: the scratch area is guest RAM nothing else uses,
            // mapped for the mock's lifetime.
            let arena =
                unsafe { GuestArena::new(boot.host_base + boot.scratch_gpa as usize, 1 << 20) };
            let ring: &'static RingShared<4> = arena.alloc(RingShared::new()).unwrap();
            let pr = pv.register_ring(ring).unwrap();
            let Gate::Ring(rg) = pr.gate() else {
                panic!("register_ring did not return a ring gate");
            };
            // Ten calls through four slots: chunks and wrap-around.
            let calls: Vec<Regs> = b"ring-batch"
                .iter()
                .map(|b| Regs::new(call::CONSOLE_WRITE_BYTE, [u64::from(*b), 0, 0, 0, 0, 0]))
                .collect();
            let mut out = vec![Ret::err(Status::FAILED); calls.len()];
            let batch = rg.call_batch(&calls, &mut out).map(|()| out);
            let vcpu_count = pr.call_scalar(call::BASE_GET_VCPU_COUNT, [0; 6]);
            let cmp_prod = ring.header.cmp_prod.load(Ordering::Acquire);
            let unregistered = pr.unregister_ring().is_ok();
            let _ = tx.send(Seen {
                batch,
                vcpu_count,
                cmp_prod,
                unregistered,
            });
            let _ = pv.power_off(0);
        });
        let end = mock.wait_timeout(MOCK_TIMEOUT);
        assert!(
            matches!(end, Some(pvabi_mock::RunEnd::Shutdown { .. })),
            "{end:?}"
        );
        let seen = rx.recv().unwrap();
        assert_eq!(
            seen,
            Seen {
                batch: Ok(vec![Ret::ok(1); 10]),
                vcpu_count: Ok(2),
                cmp_prod: 11,
                unregistered: true,
            }
        );
        assert_eq!(mock.vm().take_console_output(), b"ring-batch");
    }
}
