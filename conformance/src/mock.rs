//! Certifying the mock: the suite runs in-process, on a thread of the mock, through the
//! in-process gate.

use std::time::Duration;

use pvabi_guest::{GuestArena, InProcessGate, PhysReader, Pvabi, Translate};
use pvabi_mock::{BootCtx, Mock, MockConfig};

use crate::backend::{Availability, Certifiable, RunError, SuiteRun};
use crate::records::{judge_terminal, records_from_host, Observed};

/// vCPUs the mock guest gets for certification.
pub const MOCK_VCPUS: u32 = 4;
/// How long a mock run may take before it is declared hung.
pub const MOCK_TIMEOUT: Duration = Duration::from_secs(120);

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
        let cfg = MockConfig {
            vcpus: MOCK_VCPUS,
            harness: true,
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
        let mock = self.new_mock()?;
        let filter = self.filter.clone();
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
        for case in pvabi_conformance_suite::terminal_cases() {
            if self
                .filter
                .as_deref()
                .is_some_and(|f| !case.name.starts_with(f))
            {
                continue;
            }
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
