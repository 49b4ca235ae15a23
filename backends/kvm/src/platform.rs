//! The KVM side of the shared host machinery: [`pvabi_host::Platform`] for this VMM.

use std::sync::Arc;
use std::time::Duration;

use pvabi::Status;
use pvabi_host::{ClockParams, Platform};

use crate::vmm::Core;

/// The host's real clock, vCPU start and wake-ups, backed by the VMM's [`Core`].
pub(crate) struct KvmPlatform(pub(crate) Arc<Core>);

impl Platform for KvmPlatform {
    fn now_ns(&self) -> u64 {
        self.0.now_ns()
    }

    fn wallclock_epoch_ns(&self) -> u64 {
        self.0.epoch_ns
    }

    fn clock_params(&self) -> ClockParams {
        self.0.clock_params()
    }

    fn start_vcpu(&self, vcpu: u32, entry: u64, stack: u64, arg: u64) -> Result<(), Status> {
        self.0.queue_start(vcpu, entry, stack, arg)
    }

    fn notify(&self, vcpu: u32) {
        self.0.notify(vcpu);
    }

    fn yield_vcpu(&self, _vcpu: u32) {
        std::thread::yield_now();
    }

    fn deadline_changed(&self, deadline_ns: u64) {
        self.0.set_deadline(deadline_ns);
    }

    fn advance_clock(&self, _ns: u64) -> Result<(), Status> {
        Err(Status::NOT_SUPPORTED)
    }
}

/// The timer thread: calls `poll_timers` when the earliest deadline is reached, refreshes the
/// clock pages once a second so they track the host clock, and adds each vCPU thread's
/// scheduler run delay to its steal time every 100 ms.
pub(crate) fn timer_thread(core: Arc<Core>, vm: Arc<pvabi_host::Vm>) {
    const REFRESH: Duration = Duration::from_secs(1);
    const STEAL: Duration = Duration::from_millis(100);
    let mut last_refresh = core.now_ns();
    loop {
        if core.stopping() {
            return;
        }
        let now = core.now_ns();
        if now.saturating_sub(last_refresh) >= REFRESH.as_nanos() as u64 {
            vm.refresh_clock_pages();
            last_refresh = now;
        }
        for (v, ns) in core.take_steal() {
            vm.add_steal_time(v, ns);
        }
        match core.wait_deadline(STEAL) {
            Some(()) => {
                vm.poll_timers();
                core.merge_deadline(vm.next_deadline().unwrap_or(0));
            }
            None => continue,
        }
    }
}
