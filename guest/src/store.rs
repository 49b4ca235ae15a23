//! STORE service (spec chapter 11, `STORE-*`): the hierarchical configuration store.
//!
//! Paths are bytes relative to the guest's subtree (`a/b/c`, see
//! [`pvabi::store::valid_path`]); the shim passes them as given and the host validates them,
//! so a guest sees the host's INVALID_PARAM for a bad path. Every operation takes an optional
//! [`Txn`]. [`Pvabi::store_transaction`] runs a closure in a transaction and retries on
//! CONFLICT.

use crate::event::Port;
use crate::{base::to_u32, Pvabi};
use pvabi::call;
use pvabi::store::{WatchEvent, NO_TXN};
use pvabi::Status;
use zerocopy::FromBytes;

/// A transaction id from STORE.TXN_START (never 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct Txn(pub u64);

/// A watch id from STORE.WATCH.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct WatchId(pub u32);

/// One watch event as STORE.WATCH_NEXT returned it, borrowing the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watched<'a> {
    /// The watch that fired.
    pub watch: WatchId,
    /// The path that changed.
    pub path: &'a [u8],
    /// Events dropped since the previous WATCH_NEXT (queue overflow, `STORE-14`).
    pub dropped: u32,
}

/// Iterator over the NUL-terminated names STORE.LIST writes (`STORE-7`).
#[derive(Clone, Debug)]
pub struct Names<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Names<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        match self.rest.iter().position(|b| *b == 0) {
            Some(i) => {
                let (name, tail) = self.rest.split_at(i);
                self.rest = tail.get(1..).unwrap_or(&[]);
                Some(name)
            }
            None => {
                // A final name without its NUL: yield it rather than lose it.
                let name = self.rest;
                self.rest = &[];
                Some(name)
            }
        }
    }
}

fn txn_arg(txn: Option<Txn>) -> u64 {
    txn.map_or(NO_TXN, |t| t.0)
}

/// How many times [`Pvabi::store_transaction`] retries after CONFLICT.
pub const TXN_RETRIES: u32 = 8;

fn checked_len(v: u64, cap: usize) -> Result<usize, Status> {
    usize::try_from(v)
        .ok()
        .filter(|n| *n <= cap)
        .ok_or(Status::FAILED)
}

impl Pvabi {
    /// STORE.READ (`STORE-3`) of `path` into `buf`; returns the value's length.
    ///
    /// # Errors
    ///
    /// `INVALID_ADDRESS` if a buffer does not translate (not sent); the host's status
    /// (BUFFER_TOO_SMALL when `buf` is too small: see [`Pvabi::store_read_len`]); `FAILED` if
    /// the host claims a length larger than `buf`.
    pub fn store_read(
        &self,
        path: &[u8],
        buf: &mut [u8],
        txn: Option<Txn>,
    ) -> Result<usize, Status> {
        let p = self.gpa(path)?;
        let b = self.gpa(buf)?;
        let n = self.call(
            call::STORE_READ,
            [p, path.len() as u64, b, buf.len() as u64, txn_arg(txn), 0],
        )?;
        checked_len(n, buf.len())
    }

    /// The length of the value at `path` (STORE.READ with an empty buffer: the host answers
    /// BUFFER_TOO_SMALL with the size needed, or SUCCESS for an empty value).
    ///
    /// # Errors
    ///
    /// The host's status other than BUFFER_TOO_SMALL.
    pub fn store_read_len(&self, path: &[u8], txn: Option<Txn>) -> Result<u64, Status> {
        let p = self.gpa(path)?;
        let r = self.call_ret(
            call::STORE_READ,
            [p, path.len() as u64, 0, 0, txn_arg(txn), 0],
        );
        match r.status {
            Status::SUCCESS => Ok(0),
            Status::BUFFER_TOO_SMALL => Ok(r.value),
            s => Err(s),
        }
    }

    /// STORE.WRITE (`STORE-5`).
    ///
    /// # Errors
    ///
    /// `INVALID_ADDRESS` if a buffer does not translate (not sent); the host's status.
    pub fn store_write(&self, path: &[u8], value: &[u8], txn: Option<Txn>) -> Result<(), Status> {
        let p = self.gpa(path)?;
        let v = self.gpa(value)?;
        self.call(
            call::STORE_WRITE,
            [p, path.len() as u64, v, value.len() as u64, txn_arg(txn), 0],
        )
        .map(drop)
    }

    /// STORE.LIST (`STORE-7`) of `path`'s children into `buf`; iterate the names.
    ///
    /// # Errors
    ///
    /// `INVALID_ADDRESS` if a buffer does not translate (not sent); the host's status;
    /// `FAILED` if the host claims more bytes than `buf` holds.
    pub fn store_list<'a>(
        &self,
        path: &[u8],
        buf: &'a mut [u8],
        txn: Option<Txn>,
    ) -> Result<Names<'a>, Status> {
        let p = self.gpa(path)?;
        let b = self.gpa(buf)?;
        let n = self.call(
            call::STORE_LIST,
            [p, path.len() as u64, b, buf.len() as u64, txn_arg(txn), 0],
        )?;
        let n = checked_len(n, buf.len())?;
        let buf: &'a [u8] = buf;
        Ok(Names {
            rest: buf.get(..n).unwrap_or(&[]),
        })
    }

    /// STORE.REMOVE (`STORE-8`).
    ///
    /// # Errors
    ///
    /// `INVALID_ADDRESS` if `path` does not translate (not sent); the host's status.
    pub fn store_remove(&self, path: &[u8], txn: Option<Txn>) -> Result<(), Status> {
        let p = self.gpa(path)?;
        self.call(
            call::STORE_REMOVE,
            [p, path.len() as u64, txn_arg(txn), 0, 0, 0],
        )
        .map(drop)
    }

    /// STORE.WATCH (`STORE-10`): raise `port` when `path` or anything below it changes.
    ///
    /// # Errors
    ///
    /// `INVALID_ADDRESS` if `path` does not translate (not sent); the host's status; `FAILED`
    /// for a watch id of 0 or above 32 bits (`STORE-10`).
    pub fn store_watch(&self, path: &[u8], port: Port) -> Result<WatchId, Status> {
        let p = self.gpa(path)?;
        self.call(
            call::STORE_WATCH,
            [p, path.len() as u64, port.arg(), 0, 0, 0],
        )
        .and_then(to_u32)
        .and_then(|w| {
            if w == 0 {
                Err(Status::FAILED)
            } else {
                Ok(WatchId(w))
            }
        })
    }

    /// STORE.UNWATCH (`STORE-12`).
    ///
    /// # Errors
    ///
    /// The host's status.
    pub fn store_unwatch(&self, w: WatchId) -> Result<(), Status> {
        self.call1(call::STORE_UNWATCH, u64::from(w.0)).map(drop)
    }

    /// STORE.WATCH_NEXT (`STORE-13`) into `buf`: the next queued watch event, or `None` when
    /// the queue is empty (the host answers 0 bytes or NOT_FOUND).
    ///
    /// # Errors
    ///
    /// `INVALID_ADDRESS` if `buf` does not translate (not sent); the host's status
    /// (BUFFER_TOO_SMALL when the event does not fit); `FAILED` if the host's bytes are not a
    /// well-formed event (too short, a path longer than what was written).
    pub fn store_watch_next<'a>(&self, buf: &'a mut [u8]) -> Result<Option<Watched<'a>>, Status> {
        let b = self.gpa(buf)?;
        let n = match self.call2(call::STORE_WATCH_NEXT, b, buf.len() as u64) {
            Ok(n) => n,
            Err(Status::NOT_FOUND) => return Ok(None),
            Err(e) => return Err(e),
        };
        let n = checked_len(n, buf.len())?;
        if n == 0 {
            return Ok(None);
        }
        let buf: &'a [u8] = buf;
        let bytes = buf.get(..n).ok_or(Status::FAILED)?;
        let (hdr, rest) = WatchEvent::read_from_prefix(bytes).map_err(|_| Status::FAILED)?;
        let path = rest.get(..hdr.path_len as usize).ok_or(Status::FAILED)?;
        Ok(Some(Watched {
            watch: WatchId(hdr.watch_id),
            path,
            dropped: hdr.dropped,
        }))
    }

    /// STORE.TXN_START (`STORE-15`).
    ///
    /// # Errors
    ///
    /// The host's status; `FAILED` if the host returns transaction id 0 (which means "no
    /// transaction") or one above 32 bits (`STORE-9`).
    pub fn store_txn_start(&self) -> Result<Txn, Status> {
        match self.call0(call::STORE_TXN_START)? {
            NO_TXN => Err(Status::FAILED),
            t if t > u64::from(u32::MAX) => Err(Status::FAILED),
            t => Ok(Txn(t)),
        }
    }

    /// STORE.TXN_COMMIT (`STORE-16`).
    ///
    /// # Errors
    ///
    /// CONFLICT if a concurrent change won (nothing was applied); the host's status.
    pub fn store_txn_commit(&self, t: Txn) -> Result<(), Status> {
        self.call1(call::STORE_TXN_COMMIT, t.0).map(drop)
    }

    /// STORE.TXN_ABORT (`STORE-18`).
    ///
    /// # Errors
    ///
    /// The host's status.
    pub fn store_txn_abort(&self, t: Txn) -> Result<(), Status> {
        self.call1(call::STORE_TXN_ABORT, t.0).map(drop)
    }

    /// Runs `body` in a transaction and commits; on CONFLICT starts over, at most
    /// [`TXN_RETRIES`] times. If `body` fails the transaction is aborted.
    ///
    /// # Errors
    ///
    /// `body`'s error; the host's status; CONFLICT after the last retry.
    pub fn store_transaction<T>(
        &self,
        mut body: impl FnMut(&Pvabi, Txn) -> Result<T, Status>,
    ) -> Result<T, Status> {
        let mut last = Status::CONFLICT;
        for _ in 0..=TXN_RETRIES {
            let t = self.store_txn_start()?;
            let v = match body(self, t) {
                Ok(v) => v,
                Err(e) => {
                    let _ = self.store_txn_abort(t);
                    return Err(e);
                }
            };
            match self.store_txn_commit(t) {
                Ok(()) => return Ok(v),
                Err(Status::CONFLICT) => last = Status::CONFLICT,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }
}
