//! POWER service (spec chapter 12, `PWR-*`): power off, reboot, crash with a crash report.
//!
//! A guest registers a [`CrashAreaShared`] early ([`Pvabi::register_crash_area`]); its panic
//! handler then calls [`Pvabi::crash`] (or uses [`CrashWriter`] with `write!` and then
//! [`Pvabi::crash_with`]), which writes the report into the area and shuts down with
//! reason CRASH.

use crate::shared::CrashAreaShared;
use crate::Pvabi;
use core::sync::atomic::Ordering;
use pvabi::call;
use pvabi::power::{CrashHeader, ShutdownReason};
use pvabi::Status;

impl Pvabi {
    /// POWER.SHUTDOWN (`PWR-1`). Returns only if the host refused, with its status.
    pub fn shutdown(&self, reason: ShutdownReason, code: u64) -> Status {
        match self.call2(call::POWER_SHUTDOWN, u64::from(reason.0), code) {
            Ok(_) => Status::FAILED,
            Err(s) => s,
        }
    }

    /// Powers off with exit `code`. Returns only if the host refused.
    pub fn power_off(&self, code: u64) -> Status {
        self.shutdown(ShutdownReason::POWEROFF, code)
    }

    /// Reboots. Returns only if the host refused.
    pub fn reboot(&self) -> Status {
        self.shutdown(ShutdownReason::REBOOT, 0)
    }

    /// POWER.REGISTER_CRASH_BUFFER (`PWR-4`) with `area`.
    ///
    /// # Errors
    ///
    /// `INVALID_PARAM` if the area exceeds [`CrashHeader::MAX_BUFFER`] bytes (not sent),
    /// `INVALID_ADDRESS` if it does not translate; the host's status.
    pub fn register_crash_area<const N: usize>(
        &self,
        area: &'static CrashAreaShared<N>,
    ) -> Result<(), Status> {
        let len = core::mem::size_of::<CrashAreaShared<N>>() as u64;
        if len > CrashHeader::MAX_BUFFER {
            return Err(Status::INVALID_PARAM);
        }
        let gpa = self.gpa_ref(area)?;
        self.call2(call::POWER_REGISTER_CRASH_BUFFER, gpa, len)
            .map(drop)
    }

    /// Writes a crash report (`code`, `rip`, `message`, truncated to fit) into `area` and
    /// shuts down with reason CRASH. Returns only if the host refused.
    pub fn crash<const N: usize>(
        &self,
        area: &CrashAreaShared<N>,
        code: u64,
        rip: u64,
        message: &[u8],
    ) -> Status {
        let mut w = CrashWriter::new(area);
        w.push(message);
        self.crash_with(w, code, rip)
    }

    /// Finishes a report begun with a [`CrashWriter`] and shuts down with reason CRASH.
    /// Returns only if the host refused.
    pub fn crash_with<const N: usize>(&self, w: CrashWriter<'_, N>, code: u64, rip: u64) -> Status {
        w.finish(code, rip);
        self.shutdown(ShutdownReason::CRASH, code)
    }
}

/// Writes a crash message into a [`CrashAreaShared`] (implements [`core::fmt::Write`];
/// text beyond the area is dropped).
#[derive(Debug)]
pub struct CrashWriter<'a, const N: usize> {
    area: &'a CrashAreaShared<N>,
    len: usize,
}

impl<'a, const N: usize> CrashWriter<'a, N> {
    /// Starts a new report (the old magic is cleared first so a half-written report is
    /// never taken for a complete one).
    pub fn new(area: &'a CrashAreaShared<N>) -> Self {
        area.magic.store(0, Ordering::Release);
        Self { area, len: 0 }
    }

    /// Appends bytes, truncating at the area's end.
    pub fn push(&mut self, bytes: &[u8]) {
        for (slot, b) in self.area.message.iter().skip(self.len).zip(bytes) {
            slot.store(*b, Ordering::Relaxed);
            self.len += 1;
        }
    }

    /// Writes the header, publishing the report (magic last, release).
    pub fn finish(self, code: u64, rip: u64) {
        let a = self.area;
        a.message_len.store(
            u32::try_from(self.len).unwrap_or(u32::MAX),
            Ordering::Relaxed,
        );
        a.code.store(code, Ordering::Relaxed);
        a.rip.store(rip, Ordering::Relaxed);
        a.magic.store(CrashHeader::MAGIC, Ordering::Release);
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<const N: usize> core::fmt::Write for CrashWriter<'_, N> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.push(s.as_bytes());
        Ok(())
    }
}
