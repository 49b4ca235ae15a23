//! HARNESS service client (spec appendix A, `HAR-*`; feature `harness`, on by default).
//!
//! Present only while a backend is being certified: elsewhere the host answers
//! NOT_SUPPORTED. A conformance case reports typed results with [`Pvabi::harness_report`] and
//! asks the host for what only it can do or see with the other functions.

use crate::event::Port;
use crate::grant::GrantRef;
use crate::Pvabi;
use pvabi::call;
use pvabi::harness::{Outcome, ReportHeader, GRANT_ACCESS_READ};
use pvabi::store::GuestAccess;
use pvabi::Status;
use zerocopy::IntoBytes;

/// One result record (`HAR-2`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// The outcome.
    pub outcome: Outcome,
    /// Comma-separated clause ids, e.g. `b"BASE-1,BASE-2"`.
    pub clauses: &'a [u8],
    /// The case name.
    pub name: &'a [u8],
    /// Detail text (UTF-8); truncated if the record would exceed
    /// [`ReportHeader::MAX_RECORD`] or the scratch buffer.
    pub detail: &'a [u8],
}

/// Encodes `rec` into `out` (header, clauses, name, detail); returns the length used.
///
/// # Errors
///
/// `INVALID_PARAM` if header, clauses and name alone do not fit in `out` or in
/// [`ReportHeader::MAX_RECORD`].
pub fn encode_record(rec: &Record<'_>, out: &mut [u8]) -> Result<usize, Status> {
    let cap = out.len().min(ReportHeader::MAX_RECORD as usize);
    let fixed = ReportHeader::SIZE
        .checked_add(rec.clauses.len())
        .and_then(|n| n.checked_add(rec.name.len()))
        .filter(|n| *n <= cap)
        .ok_or(Status::INVALID_PARAM)?;
    let detail = rec
        .detail
        .get(..rec.detail.len().min(cap - fixed))
        .unwrap_or(&[]);
    let hdr = ReportHeader {
        magic: ReportHeader::MAGIC,
        outcome: rec.outcome.0,
        clauses_len: rec.clauses.len() as u32,
        name_len: rec.name.len() as u32,
        detail_len: detail.len() as u32,
        _reserved: 0,
    };
    let mut at = 0usize;
    for part in [hdr.as_bytes(), rec.clauses, rec.name, detail] {
        let end = at + part.len();
        out.get_mut(at..end)
            .ok_or(Status::INVALID_PARAM)?
            .copy_from_slice(part);
        at = end;
    }
    Ok(at)
}

impl Pvabi {
    /// HARNESS.REPORT (`HAR-2`): encodes `rec` into `scratch` (which must lie in guest RAM)
    /// and reports it.
    ///
    /// # Errors
    ///
    /// As [`encode_record`]; `INVALID_ADDRESS` if `scratch` does not translate (not sent);
    /// the host's status.
    pub fn harness_report(&self, rec: &Record<'_>, scratch: &mut [u8]) -> Result<(), Status> {
        let n = encode_record(rec, scratch)?;
        let bytes = scratch.get(..n).ok_or(Status::INVALID_PARAM)?;
        let gpa = self.gpa(bytes)?;
        self.call2(call::HARNESS_REPORT, gpa, n as u64).map(drop)
    }

    /// HARNESS.INJECT_EVENT (`HAR-3`): the host raises `port`.
    ///
    /// # Errors
    ///
    /// The host's status.
    pub fn harness_inject_event(&self, port: Port) -> Result<(), Status> {
        self.call1(call::HARNESS_INJECT_EVENT, port.arg()).map(drop)
    }

    /// HARNESS.STORE_HOST_WRITE (`HAR-4`): the host writes `value` at `path` with the guest
    /// access `access`.
    ///
    /// # Errors
    ///
    /// `INVALID_ADDRESS` if a buffer does not translate (not sent); the host's status.
    pub fn harness_store_host_write(
        &self,
        path: &[u8],
        value: &[u8],
        access: GuestAccess,
    ) -> Result<(), Status> {
        let p = self.gpa(path)?;
        let v = self.gpa(value)?;
        self.call(
            call::HARNESS_STORE_HOST_WRITE,
            [
                p,
                path.len() as u64,
                v,
                value.len() as u64,
                u64::from(access.0),
                0,
            ],
        )
        .map(drop)
    }

    /// HARNESS.STORE_HOST_READ (`HAR-5`): the host's view of `path`; returns the length.
    ///
    /// # Errors
    ///
    /// `INVALID_ADDRESS` if a buffer does not translate (not sent); the host's status;
    /// `FAILED` if the host claims more bytes than `buf` holds.
    pub fn harness_store_host_read(&self, path: &[u8], buf: &mut [u8]) -> Result<usize, Status> {
        let p = self.gpa(path)?;
        let b = self.gpa(buf)?;
        let n = self.call(
            call::HARNESS_STORE_HOST_READ,
            [p, path.len() as u64, b, buf.len() as u64, 0, 0],
        )?;
        usize::try_from(n)
            .ok()
            .filter(|n| *n <= buf.len())
            .ok_or(Status::FAILED)
    }

    /// HARNESS.CONSOLE_READBACK (`HAR-6`): the most recent console output as the host saw
    /// it, at most 4096 bytes (the most one call may ask for).
    ///
    /// # Errors
    ///
    /// `INVALID_ADDRESS` if `buf` does not translate (not sent); the host's status; `FAILED`
    /// if the host claims more bytes than `buf` holds.
    pub fn harness_console_readback(&self, buf: &mut [u8]) -> Result<usize, Status> {
        let len = buf.len().min(pvabi::console::MAX_TRANSFER as usize);
        let buf = buf.get_mut(..len).ok_or(Status::INVALID_PARAM)?;
        let b = self.gpa(buf)?;
        let n = self.call2(call::HARNESS_CONSOLE_READBACK, b, buf.len() as u64)?;
        usize::try_from(n)
            .ok()
            .filter(|n| *n <= buf.len())
            .ok_or(Status::FAILED)
    }

    /// HARNESS.CONSOLE_INPUT (`HAR-7`): queue `bytes` as console input.
    ///
    /// # Errors
    ///
    /// `INVALID_ADDRESS` if `bytes` does not translate (not sent); the host's status.
    pub fn harness_console_input(&self, bytes: &[u8]) -> Result<(), Status> {
        let b = self.gpa(bytes)?;
        self.call2(call::HARNESS_CONSOLE_INPUT, b, bytes.len() as u64)
            .map(drop)
    }

    /// HARNESS.CLOCK_ADVANCE (`HAR-8`): advance a virtual clock by `ns`.
    ///
    /// # Errors
    ///
    /// NOT_SUPPORTED on a real clock; the host's status.
    pub fn harness_clock_advance(&self, ns: u64) -> Result<(), Status> {
        self.call1(call::HARNESS_CLOCK_ADVANCE, ns).map(drop)
    }

    /// HARNESS.CLOCK_READ (`HAR-9`): the host's system time in ns.
    ///
    /// # Errors
    ///
    /// The host's status.
    pub fn harness_clock_read(&self) -> Result<u64, Status> {
        self.call0(call::HARNESS_CLOCK_READ)
    }

    /// HARNESS.GRANT_ACCESS (`HAR-10`): the host accesses byte `offset` of the page granted
    /// as `gref`: with `write = None` it reads and returns the byte, with `Some(b)` it writes
    /// `b` and returns 0.
    ///
    /// Safe because a grant the host may write names a [`crate::grant::SharedPage`] (atomics).
    ///
    /// # Errors
    ///
    /// The host's status; `FAILED` if the value is not a byte.
    pub fn harness_grant_access(
        &self,
        gref: GrantRef,
        offset: u64,
        write: Option<u8>,
    ) -> Result<u8, Status> {
        let w = write.map_or(GRANT_ACCESS_READ, u64::from);
        let v = self.call(
            call::HARNESS_GRANT_ACCESS,
            [u64::from(gref.0), offset, w, 0, 0, 0],
        )?;
        u8::try_from(v).map_err(|_| Status::FAILED)
    }

    /// HARNESS.BALLOON_CHECK (`HAR-11`): whether the host's bookkeeping has the page at `gpa`
    /// released.
    ///
    /// # Errors
    ///
    /// The host's status; `FAILED` for a value other than 0 or 1.
    pub fn harness_balloon_check(&self, gpa: u64) -> Result<bool, Status> {
        match self.call1(call::HARNESS_BALLOON_CHECK, gpa)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Status::FAILED),
        }
    }
}
