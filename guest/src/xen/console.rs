//! The PV console ring (`io/console.h`): the page at `HVM_PARAM_CONSOLE_PFN` holds a 1024-byte
//! input ring, a 2048-byte output ring and their free-running indices; the guest writes output
//! bytes, advances `out_prod` and notifies `HVM_PARAM_CONSOLE_EVTCHN`. In dom0 `xenconsoled`
//! copies the output to the domain's console log.

use super::hypercall::{idle_or_time_out, Doorbell};
use super::XenError;
use core::sync::atomic::{fence, AtomicU32, AtomicU8, Ordering};

/// Bytes of the output ring.
pub const OUT_SIZE: usize = 2048;
/// Bytes of the input ring.
pub const IN_SIZE: usize = 1024;

/// `struct xencons_interface` as atomics.
#[derive(Debug)]
#[repr(C)]
pub struct ConsInterface {
    /// Input from the console daemon.
    pub input: [AtomicU8; IN_SIZE],
    /// Output to the console daemon.
    pub output: [AtomicU8; OUT_SIZE],
    /// Input consumed (guest).
    pub in_cons: AtomicU32,
    /// Input produced (daemon).
    pub in_prod: AtomicU32,
    /// Output consumed (daemon).
    pub out_cons: AtomicU32,
    /// Output produced (guest).
    pub out_prod: AtomicU32,
}

const _: () = {
    assert!(core::mem::offset_of!(ConsInterface, output) == 1024);
    assert!(core::mem::offset_of!(ConsInterface, in_cons) == 3072);
    assert!(core::mem::offset_of!(ConsInterface, out_cons) == 3080);
    assert!(core::mem::offset_of!(ConsInterface, out_prod) == 3084);
};

impl ConsInterface {
    /// An all-zero interface.
    pub const fn new() -> Self {
        Self {
            input: [const { AtomicU8::new(0) }; IN_SIZE],
            output: [const { AtomicU8::new(0) }; OUT_SIZE],
            in_cons: AtomicU32::new(0),
            in_prod: AtomicU32::new(0),
            out_cons: AtomicU32::new(0),
            out_prod: AtomicU32::new(0),
        }
    }
}

impl Default for ConsInterface {
    fn default() -> Self {
        Self::new()
    }
}

/// A writer on the output ring.
pub struct PvConsole<'a, D: Doorbell> {
    intf: &'a ConsInterface,
    bell: D,
    spin_limit: u64,
}

impl<'a, D: Doorbell> PvConsole<'a, D> {
    /// A console on `intf`, notifying with `bell`, waiting at most `spin_limit` idle polls for
    /// room.
    pub fn new(intf: &'a ConsInterface, bell: D, spin_limit: u64) -> Self {
        Self {
            intf,
            bell,
            spin_limit,
        }
    }

    /// Writes all of `data`, waiting for room.
    ///
    /// # Errors
    ///
    /// [`XenError::TimedOut`] if the daemon does not make room; [`XenError::Protocol`] for
    /// impossible indices; the doorbell's error.
    pub fn write_bytes(&mut self, mut data: &[u8]) -> Result<(), XenError> {
        let i = self.intf;
        let mut spins = 0u64;
        while !data.is_empty() {
            let cons = i.out_cons.load(Ordering::Acquire);
            let prod = i.out_prod.load(Ordering::Relaxed);
            let used = prod.wrapping_sub(cons) as usize;
            if used > OUT_SIZE {
                return Err(XenError::Protocol);
            }
            let n = (OUT_SIZE - used).min(data.len());
            if n == 0 {
                spins += 1;
                if spins > self.spin_limit {
                    return Err(XenError::TimedOut);
                }
                self.bell.notify()?;
                self.bell.idle();
                continue;
            }
            let (now, rest) = data.split_at(n);
            for (k, &b) in now.iter().enumerate() {
                let idx = prod.wrapping_add(k as u32) as usize % OUT_SIZE;
                if let Some(s) = i.output.get(idx) {
                    s.store(b, Ordering::Relaxed);
                }
            }
            fence(Ordering::Release);
            i.out_prod
                .store(prod.wrapping_add(n as u32), Ordering::Release);
            self.bell.notify()?;
            data = rest;
        }
        Ok(())
    }

    /// Waits until the daemon consumed everything written.
    ///
    /// # Errors
    ///
    /// [`XenError::TimedOut`] after the spin limit.
    pub fn flush(&mut self) -> Result<(), XenError> {
        let mut spins = 0u64;
        while self.intf.out_cons.load(Ordering::Acquire)
            != self.intf.out_prod.load(Ordering::Relaxed)
        {
            idle_or_time_out(&self.bell, &mut spins, self.spin_limit)?;
        }
        Ok(())
    }
}

impl<D: Doorbell> core::fmt::Write for PvConsole<'_, D> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.write_bytes(s.as_bytes()).map_err(|_| core::fmt::Error)
    }
}

#[cfg(test)]
// In tests a panic is the failure report.
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    extern crate std;
    use super::*;
    use core::cell::RefCell;
    use std::vec::Vec;

    struct Daemon<'a> {
        intf: &'a ConsInterface,
        got: RefCell<Vec<u8>>,
    }
    impl Doorbell for &Daemon<'_> {
        fn notify(&self) -> Result<(), XenError> {
            Ok(())
        }
        fn idle(&self) {
            let prod = self.intf.out_prod.load(Ordering::Acquire);
            let mut cons = self.intf.out_cons.load(Ordering::Relaxed);
            while cons != prod {
                let b = self.intf.output[cons as usize % OUT_SIZE].load(Ordering::Relaxed);
                self.got.borrow_mut().push(b);
                cons = cons.wrapping_add(1);
            }
            self.intf.out_cons.store(cons, Ordering::Release);
        }
    }

    #[test]
    fn output_longer_than_the_ring_arrives_in_order() {
        let intf = std::boxed::Box::new(ConsInterface::new());
        let d = Daemon {
            intf: &intf,
            got: RefCell::new(Vec::new()),
        };
        let mut c = PvConsole::new(&intf, &d, 100);
        let text: Vec<u8> = (0..5000u32).map(|i| b'a' + (i % 26) as u8).collect();
        c.write_bytes(&text).unwrap();
        c.flush().unwrap();
        assert_eq!(*d.got.borrow(), text);
    }
}
