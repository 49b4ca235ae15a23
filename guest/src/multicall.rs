//! MULTICALL service (spec chapter 13, `MC-*`): many calls with one gate crossing.
//!
//! [`Multicall`] is a fixed-capacity array of [`MulticallEntry`] (no allocation) that lives
//! in guest memory: build it with [`Multicall::push`], run it with
//! [`Multicall::execute`], read each entry's result with [`Multicall::result`]. Entries the
//! safe `push` accepts are the calls without guest-memory arguments that return (see
//! [`crate::base::is_scalar_call`]); calls that may never be in a multicall still reach the
//! host, which answers INVALID_PARAM for them (`MC-4`) — VCPU.BLOCK, for instance.

use crate::base::is_scalar_call;
use crate::Pvabi;
use pvabi::call::{self, CallId};
use pvabi::multicall::{MulticallEntry, MAX_ENTRIES};
use pvabi::Status;

/// A batch of up to `N` calls in guest memory (8-byte aligned, as `MC-2` requires).
#[derive(Debug)]
#[repr(C, align(8))]
pub struct Multicall<const N: usize> {
    entries: [MulticallEntry; N],
    len: usize,
    executed: usize,
}

impl<const N: usize> Default for Multicall<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Multicall<N> {
    /// An empty batch.
    pub const fn new() -> Self {
        Self {
            entries: [MulticallEntry {
                call_id: 0,
                flags: 0,
                args: [0; 6],
                status: 0,
                value: 0,
            }; N],
            len: 0,
            executed: 0,
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        self.len = 0;
        self.executed = 0;
    }

    /// Appends a call; `stop_on_error` sets [`MulticallEntry::FLAG_STOP_ON_ERROR`] (`MC-3`).
    /// Returns the entry's index.
    ///
    /// # Errors
    ///
    /// `NO_SPACE` when full (or at [`MAX_ENTRIES`]); `INVALID_PARAM` for a call that names
    /// guest memory or does not return.
    pub fn push(
        &mut self,
        id: CallId,
        args: [u64; 6],
        stop_on_error: bool,
    ) -> Result<usize, Status> {
        if !is_scalar_call(id) {
            return Err(Status::INVALID_PARAM);
        }
        self.push_entry(id, args, stop_on_error)
    }

    pub(crate) fn push_entry(
        &mut self,
        id: CallId,
        args: [u64; 6],
        stop_on_error: bool,
    ) -> Result<usize, Status> {
        if self.len as u64 >= MAX_ENTRIES {
            return Err(Status::NO_SPACE);
        }
        let i = self.len;
        let e = self.entries.get_mut(i).ok_or(Status::NO_SPACE)?;
        *e = MulticallEntry {
            call_id: id.0,
            flags: if stop_on_error {
                MulticallEntry::FLAG_STOP_ON_ERROR
            } else {
                0
            },
            args,
            status: 0,
            value: 0,
        };
        self.len = i + 1;
        self.executed = 0;
        Ok(i)
    }

    /// MULTICALL.EXECUTE (`MC-1`): runs the entries in order; returns how many ran.
    ///
    /// The guest does no work per entry: the host writes the status and value of each entry
    /// it runs (`MC-1`), and [`Multicall::result`] reads only those, so results of an earlier
    /// execution are never taken for new ones and need no clearing.
    ///
    /// # Errors
    ///
    /// `INVALID_ADDRESS` if the array does not translate (not sent); the host's status;
    /// `FAILED` if the host claims more entries ran than there are.
    pub fn execute(&mut self, pv: &Pvabi) -> Result<usize, Status> {
        self.executed = 0;
        let len = self.len;
        // A mutable borrow: the host writes the entries during the call.
        let active = self.entries.get_mut(..len).ok_or(Status::FAILED)?;
        let gpa = pv.translate().gpa_of(
            active.as_mut_ptr() as usize,
            len.saturating_mul(MulticallEntry::SIZE),
        )?;
        let ran = pv.call2(call::MULTICALL_EXECUTE, gpa, len as u64)?;
        let ran = usize::try_from(ran)
            .ok()
            .filter(|r| *r <= len)
            .ok_or(Status::FAILED)?;
        self.executed = ran;
        Ok(ran)
    }

    /// Entry `i`'s result after [`Multicall::execute`]: `None` if it did not run (past the
    /// count the host reported, or out of range). A status that is not a sign-extended 32-bit
    /// value reads as FAILED.
    pub fn result(&self, i: usize) -> Option<Result<u64, Status>> {
        if i >= self.executed {
            return None;
        }
        let e = self.entries.get(i)?;
        Some(Status::from_reg(e.status as u64).into_result(e.value))
    }
}
