//! Certifying the KVM backend: the conformance image runs as a bare-metal guest on
//! `pvabi-kvm`, in ring 0 or in PV ring 3.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pvabi_kvm::{ConsoleSink, Mode, RunConfig};

use crate::backend::{Availability, Certifiable, RunError, SuiteRun};
use crate::records::{judge_terminal, records_from_host, Observed};

/// vCPUs the KVM guest gets for certification (the same as the mock's).
pub const KVM_VCPUS: u32 = crate::mock::MOCK_VCPUS;
/// Watchdog: a run in which no vCPU exits for this long is ended as hung.
pub const KVM_WATCHDOG: Duration = Duration::from_secs(60);

/// The path of the conformance image built with this crate, or why there is none.
pub fn image_path() -> Result<PathBuf, String> {
    let p = env!("PVABI_CONFORMANCE_IMAGE");
    if p.is_empty() {
        Err(format!(
            "the conformance image was not built: {}",
            env!("PVABI_CONFORMANCE_IMAGE_ERROR")
        ))
    } else {
        Ok(PathBuf::from(p))
    }
}

/// The KVM backend in one execution mode.
#[derive(Clone, Debug)]
pub struct KvmBackend {
    /// Ring 0 or PV ring 3.
    pub mode: Mode,
    /// Only run cases whose name starts with this.
    pub filter: Option<String>,
}

impl KvmBackend {
    /// The backend in `mode`, running every case.
    pub fn new(mode: Mode) -> Self {
        Self { mode, filter: None }
    }

    fn config(&self, cmdline: String) -> RunConfig {
        self.config_with(cmdline, pvabi::Features::empty())
    }

    fn config_with(&self, cmdline: String, features_off: pvabi::Features) -> RunConfig {
        RunConfig {
            features_off,
            vcpus: KVM_VCPUS,
            mem_mib: 64,
            cmdline,
            mode: self.mode,
            console: ConsoleSink::Capture(Arc::new(Mutex::new(Vec::new()))),
            watchdog: Some(KVM_WATCHDOG),
            harness: true,
            ..RunConfig::default()
        }
    }
}

/// Whether `/dev/kvm` can be opened and a VM created, or why not.
pub fn kvm_availability() -> Availability {
    match kvm_ioctls::Kvm::new() {
        Err(e) => Availability::Unavailable(format!("/dev/kvm cannot be opened: {e}")),
        Ok(kvm) => match kvm.create_vm() {
            Ok(_) => Availability::Available,
            Err(e) => Availability::Unavailable(format!("KVM cannot create a VM: {e}")),
        },
    }
}

impl Certifiable for KvmBackend {
    fn name(&self) -> String {
        "kvm".into()
    }
    fn mode(&self) -> String {
        match self.mode {
            Mode::Ring0 => "ring0".into(),
            Mode::PvRing3 => "pv-ring3".into(),
        }
    }
    fn availability(&self) -> Availability {
        if let Err(e) = image_path() {
            return Availability::Unavailable(e);
        }
        kvm_availability()
    }
    fn run_suite(&self) -> Result<SuiteRun, RunError> {
        let image = image_path().map_err(RunError::Backend)?;
        let cmdline = self
            .filter
            .as_ref()
            .map(|f| format!("filter={f}"))
            .unwrap_or_default();
        let mut run = match pvabi_kvm::run(&image, &self.config(cmdline)) {
            Ok(out) => {
                let mut run = records_from_host(out.reports);
                if out.status.reason != pvabi::power::ShutdownReason::POWEROFF.0
                    || out.status.code != 0
                {
                    run.problems.push(format!(
                        "the guest ended with reason {} code {} (console: {})",
                        out.status.reason,
                        out.status.code,
                        String::from_utf8_lossy(&out.console)
                    ));
                }
                run
            }
            Err(e) => return Err(RunError::Backend(e.to_string())),
        };
        // The cases that check how a host without an optional feature answers, each in a VM
        // with those features cleared (as for the mock).
        for case in crate::mock::FEATURES_OFF_CASES {
            if self.filter.as_deref().is_some_and(|f| !case.starts_with(f)) {
                continue;
            }
            let cfg = self.config_with(format!("filter={case}"), crate::mock::FEATURES_OFF);
            match pvabi_kvm::run(&image, &cfg) {
                Ok(out) => run.merge_features_off(case, records_from_host(out.reports)),
                Err(e) => run
                    .problems
                    .push(format!("features-off run of {case}: {e}")),
            }
        }
        for case in crate::records::terminal_cases(self.filter.as_deref()) {
            let observed =
                match pvabi_kvm::run(&image, &self.config(format!("terminal={}", case.name))) {
                    Ok(out) => {
                        let before = records_from_host(out.reports);
                        run.cases.extend(before.cases);
                        run.problems.extend(before.problems);
                        Observed::Shutdown {
                            reason: pvabi::power::ShutdownReason(out.status.reason),
                            code: out.status.code,
                            crash: out.crash.map(|c| (c.code, c.message)),
                        }
                    }
                    Err(e) => Observed::Other(e.to_string()),
                };
            run.cases.push(judge_terminal(case, &observed));
        }
        Ok(run)
    }
}
