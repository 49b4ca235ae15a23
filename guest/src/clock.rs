//! CLOCK service (spec chapter 6, `CLK-*`): the per-vCPU pvclock page, wall clock, system
//! time, and the one-shot timer.
//!
//! [`Clock`] reads a registered [`ClockPageShared`] with the seqlock protocol (`CLK-2`..`CLK-4`):
//! load `version` (acquire) and retry while it is odd; load the fields; an acquire fence; load
//! `version` again and retry if it changed. The consistent snapshot converts a TSC value to
//! nanoseconds with [`pvabi::clock::ClockPage::time_at`].

use crate::gate::rdtsc;
use crate::shared::{ClockPageShared, StealTimeShared};
use crate::{event::Port, Pvabi};
use core::sync::atomic::{fence, Ordering};
use pvabi::call;
use pvabi::clock::{ClockPage, TIMER_CANCEL};
use pvabi::Status;

/// How many times a seqlock read retries before giving up with `BUSY` (a host stuck with an
/// odd version, or one that changes it on every read).
pub const SEQLOCK_RETRIES: u32 = 1 << 20;

/// A registered clock page.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    page: &'static ClockPageShared,
}

impl Clock {
    /// A reader of `page` without registering it.
    pub const fn from_page(page: &'static ClockPageShared) -> Self {
        Self { page }
    }

    /// A consistent snapshot of the page (seqlock protocol).
    ///
    /// # Errors
    ///
    /// `BAD_STATE` while the host has never written the page (version 0); `BUSY` after
    /// [`SEQLOCK_RETRIES`] inconsistent reads.
    pub fn snapshot(&self) -> Result<ClockPage, Status> {
        let p = self.page;
        for _ in 0..SEQLOCK_RETRIES {
            let v1 = p.version.load(Ordering::Acquire);
            if v1 & 1 != 0 {
                core::hint::spin_loop();
                continue;
            }
            let snap = ClockPage {
                version: v1,
                _reserved0: 0,
                tsc_timestamp: p.tsc_timestamp.load(Ordering::Relaxed),
                system_time: p.system_time.load(Ordering::Relaxed),
                tsc_to_system_mul: p.tsc_to_system_mul.load(Ordering::Relaxed),
                tsc_shift: p.tsc_shift.load(Ordering::Relaxed),
                flags: p.flags.load(Ordering::Relaxed),
                _reserved1: [0; 2],
            };
            fence(Ordering::Acquire);
            let v2 = p.version.load(Ordering::Relaxed);
            if v1 == v2 {
                return if v1 == 0 {
                    Err(Status::BAD_STATE)
                } else {
                    Ok(snap)
                };
            }
        }
        Err(Status::BUSY)
    }

    /// System time in ns at TSC value `tsc`.
    ///
    /// # Errors
    ///
    /// As [`Clock::snapshot`].
    pub fn ns_at(&self, tsc: u64) -> Result<u64, Status> {
        self.snapshot().map(|s| s.time_at(tsc))
    }

    /// System time in ns now (RDTSC through the page).
    ///
    /// # Errors
    ///
    /// As [`Clock::snapshot`].
    pub fn now_ns(&self) -> Result<u64, Status> {
        // Snapshot first, then read the TSC, so the TSC is not older than the page.
        let s = self.snapshot()?;
        Ok(s.time_at(rdtsc()))
    }

    /// Whether the host says the TSC is synchronised across vCPUs.
    ///
    /// # Errors
    ///
    /// As [`Clock::snapshot`].
    pub fn tsc_stable(&self) -> Result<bool, Status> {
        self.snapshot()
            .map(|s| s.flags & ClockPage::FLAG_TSC_STABLE != 0)
    }
}

/// Reads a steal-time record with the same seqlock protocol.
///
/// # Errors
///
/// `BUSY` after [`SEQLOCK_RETRIES`] inconsistent reads.
pub fn read_steal_time(rec: &StealTimeShared) -> Result<u64, Status> {
    for _ in 0..SEQLOCK_RETRIES {
        let v1 = rec.version.load(Ordering::Acquire);
        if v1 & 1 != 0 {
            core::hint::spin_loop();
            continue;
        }
        let steal = rec.steal.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        if rec.version.load(Ordering::Relaxed) == v1 {
            return Ok(steal);
        }
    }
    Err(Status::BUSY)
}

impl Pvabi {
    /// CLOCK.REGISTER_PAGE (`CLK-1`) for the calling vCPU.
    ///
    /// # Errors
    ///
    /// `INVALID_ADDRESS` if the page does not translate (not sent); the host's status.
    pub fn clock_register_page(&self, page: &'static ClockPageShared) -> Result<Clock, Status> {
        let gpa = self.gpa_ref(page)?;
        self.call1(call::CLOCK_REGISTER_PAGE, gpa)?;
        Ok(Clock::from_page(page))
    }

    /// CLOCK.UNREGISTER_PAGE (`CLK-5`) for the calling vCPU.
    ///
    /// # Errors
    ///
    /// The host's status.
    pub fn clock_unregister_page(&self) -> Result<(), Status> {
        self.call0(call::CLOCK_UNREGISTER_PAGE).map(drop)
    }

    /// CLOCK.GET_WALLCLOCK (`CLK-6`): ns since the UNIX epoch at system time 0.
    ///
    /// # Errors
    ///
    /// The host's status.
    pub fn wallclock_base_ns(&self) -> Result<u64, Status> {
        self.call0(call::CLOCK_GET_WALLCLOCK)
    }

    /// CLOCK.GET_TIME (`CLK-7`): system time in ns, from the host.
    ///
    /// # Errors
    ///
    /// The host's status.
    pub fn time_ns(&self) -> Result<u64, Status> {
        self.call0(call::CLOCK_GET_TIME)
    }

    /// CLOCK.SET_TIMER (`CLK-8`): raise `port` at system time `deadline_ns` (one-shot).
    ///
    /// # Errors
    ///
    /// `INVALID_PARAM` for deadline 0 (that cancels: use [`Pvabi::cancel_timer`]) or an
    /// invalid port (not sent); the host's status.
    pub fn set_timer(&self, deadline_ns: u64, port: Port) -> Result<(), Status> {
        if deadline_ns == TIMER_CANCEL || !port.is_valid() {
            return Err(Status::INVALID_PARAM);
        }
        self.call2(call::CLOCK_SET_TIMER, deadline_ns, port.arg())
            .map(drop)
    }

    /// CLOCK.SET_TIMER with deadline 0: cancels the timer on `port`.
    ///
    /// # Errors
    ///
    /// The host's status.
    pub fn cancel_timer(&self, port: Port) -> Result<(), Status> {
        self.call2(call::CLOCK_SET_TIMER, TIMER_CANCEL, port.arg())
            .map(drop)
    }

    /// VCPU.REGISTER_STEAL_TIME (`VCPU-11`) for the calling vCPU; read the record with
    /// [`read_steal_time`].
    ///
    /// # Errors
    ///
    /// `INVALID_ADDRESS` if the record does not translate (not sent); the host's status.
    pub fn register_steal_time(&self, rec: &'static StealTimeShared) -> Result<(), Status> {
        let gpa = self.gpa_ref(rec)?;
        self.call1(call::VCPU_REGISTER_STEAL_TIME, gpa).map(drop)
    }
}
