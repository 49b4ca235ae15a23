//! CONSOLE service (spec chapter 5, `CONS-*`): a byte stream to and from the host.
//!
//! [`Console`] implements [`core::fmt::Write`]: text goes out with CONSOLE.WRITE in chunks of
//! at most [`MAX_TRANSFER`] bytes. Bytes that do not translate to guest RAM (a string in an
//! in-process guest's host memory, say) are copied through the bounce buffer given with
//! [`Console::with_bounce`], or else sent one by one with CONSOLE.WRITE_BYTE, which takes no
//! guest memory.

use crate::Pvabi;
use pvabi::call;
use pvabi::console::MAX_TRANSFER;
use pvabi::Status;

/// A console writer/reader (cheap; make one wherever needed with [`Pvabi::console`]).
#[derive(Debug)]
pub struct Console<'b> {
    pv: Pvabi,
    bounce: Option<&'b mut [u8]>,
}

const CHUNK: usize = MAX_TRANSFER as usize;

/// How many times a write that makes no progress is retried before giving up with `BUSY`.
const NO_PROGRESS_RETRIES: u32 = 16;

impl Pvabi {
    /// A console on this handle.
    pub fn console(&self) -> Console<'static> {
        Console {
            pv: *self,
            bounce: None,
        }
    }
}

impl<'b> Console<'b> {
    /// This console copying untranslatable bytes through `bounce` (which must lie in guest
    /// RAM) instead of sending them byte by byte.
    pub fn with_bounce<'c>(self, bounce: &'c mut [u8]) -> Console<'c> {
        Console {
            pv: self.pv,
            bounce: Some(bounce),
        }
    }

    /// One CONSOLE.WRITE of at most [`MAX_TRANSFER`] bytes of `buf` (`CONS-1`); returns the
    /// bytes the host took.
    ///
    /// # Errors
    ///
    /// `INVALID_ADDRESS` if `buf` does not translate (not sent); the host's status; `FAILED`
    /// if the host claims more bytes than were offered.
    pub fn write(&self, buf: &[u8]) -> Result<usize, Status> {
        let chunk = buf.get(..buf.len().min(CHUNK)).unwrap_or(buf);
        let gpa = self.pv.gpa(chunk)?;
        let n = self
            .pv
            .call2(call::CONSOLE_WRITE, gpa, chunk.len() as u64)?;
        usize::try_from(n)
            .ok()
            .filter(|n| *n <= chunk.len())
            .ok_or(Status::FAILED)
    }

    /// CONSOLE.WRITE_BYTE (`CONS-3`).
    ///
    /// # Errors
    ///
    /// The host's status.
    pub fn write_byte(&self, b: u8) -> Result<(), Status> {
        self.pv
            .call1(call::CONSOLE_WRITE_BYTE, u64::from(b))
            .map(drop)
    }

    /// Writes all of `buf`: in chunks, retrying partial writes, through the bounce buffer or
    /// byte by byte when `buf` does not translate.
    ///
    /// # Errors
    ///
    /// The host's status; `BUSY` if the host accepts nothing several times in a row.
    pub fn write_all(&mut self, mut buf: &[u8]) -> Result<(), Status> {
        let mut stalls = 0;
        while !buf.is_empty() {
            let n = match self.write(buf) {
                Ok(n) => n,
                Err(Status::INVALID_ADDRESS) => self.write_untranslated(buf)?,
                Err(e) => return Err(e),
            };
            if n == 0 {
                stalls += 1;
                if stalls >= NO_PROGRESS_RETRIES {
                    return Err(Status::BUSY);
                }
                continue;
            }
            stalls = 0;
            buf = buf.get(n..).unwrap_or(&[]);
        }
        Ok(())
    }

    fn write_untranslated(&mut self, buf: &[u8]) -> Result<usize, Status> {
        let pv = self.pv;
        if let Some(bounce) = self.bounce.as_deref_mut() {
            let n = buf.len().min(bounce.len()).min(CHUNK);
            if let (Some(dst), Some(src)) = (bounce.get_mut(..n), buf.get(..n)) {
                if n > 0 {
                    dst.copy_from_slice(src);
                    let gpa = pv.gpa(dst)?;
                    let w = pv.call2(call::CONSOLE_WRITE, gpa, n as u64)?;
                    return usize::try_from(w)
                        .ok()
                        .filter(|w| *w <= n)
                        .ok_or(Status::FAILED);
                }
            }
        }
        let first = buf.first().copied().ok_or(Status::INVALID_PARAM)?;
        self.write_byte(first)?;
        Ok(1)
    }

    /// One CONSOLE.READ into `buf` (at most [`MAX_TRANSFER`] bytes, `CONS-4`); returns the
    /// bytes read (0 when there is no input).
    ///
    /// # Errors
    ///
    /// `INVALID_ADDRESS` if `buf` does not translate (not sent); the host's status; `FAILED`
    /// if the host claims more bytes than fit.
    pub fn read(&self, buf: &mut [u8]) -> Result<usize, Status> {
        let len = buf.len().min(CHUNK);
        let chunk = buf.get_mut(..len).ok_or(Status::INVALID_PARAM)?;
        let gpa = self.pv.gpa(chunk)?;
        let n = self.pv.call2(call::CONSOLE_READ, gpa, len as u64)?;
        usize::try_from(n)
            .ok()
            .filter(|n| *n <= len)
            .ok_or(Status::FAILED)
    }
}

impl core::fmt::Write for Console<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.write_all(s.as_bytes()).map_err(|_| core::fmt::Error)
    }
}
