//! The host side of event channels (spec chapter 8): which ports are allocated and to which
//! vCPU each is bound. The pending and mask bits live in the guest's event page and are
//! changed by [`crate::Vm`] with atomic operations on guest memory.

use pvabi::event::NUM_PORTS;
use pvabi::Status;

/// The port table of one guest.
///
/// # Invariants
///
/// Port 0 is never allocated; `bound.len() == NUM_PORTS`.
#[derive(Clone, Debug)]
pub struct Ports {
    bound: Vec<Option<u32>>,
}

impl Default for Ports {
    fn default() -> Self {
        Self {
            bound: vec![None; NUM_PORTS as usize],
        }
    }
}

/// Checks a port argument: in `1..NUM_PORTS` (INVALID_PARAM otherwise, `CONV-16`).
///
/// # Errors
///
/// [`Status::INVALID_PARAM`] for 0 or a value not below [`NUM_PORTS`].
pub fn port_arg(p: u64) -> Result<u32, Status> {
    if p == 0 || p >= NUM_PORTS as u64 {
        Err(Status::INVALID_PARAM)
    } else {
        Ok(p as u32)
    }
}

impl Ports {
    /// Allocates the lowest free port and binds it to `vcpu`.
    ///
    /// # Errors
    ///
    /// [`Status::NO_SPACE`] when all `NUM_PORTS - 1` ports are allocated.
    pub fn alloc(&mut self, vcpu: u32) -> Result<u32, Status> {
        let p = self
            .bound
            .iter()
            .enumerate()
            .skip(1)
            .find(|(_, b)| b.is_none())
            .map(|(i, _)| i)
            .ok_or(Status::NO_SPACE)?;
        if let Some(slot) = self.bound.get_mut(p) {
            *slot = Some(vcpu);
        }
        Ok(p as u32)
    }

    /// The vCPU an allocated port is bound to.
    ///
    /// # Errors
    ///
    /// INVALID_PARAM for an out-of-range port, NOT_FOUND for a free one.
    pub fn bound(&self, port: u32) -> Result<u32, Status> {
        port_arg(port as u64)?;
        self.bound
            .get(port as usize)
            .copied()
            .flatten()
            .ok_or(Status::NOT_FOUND)
    }

    /// Binds an allocated port to `vcpu`.
    ///
    /// # Errors
    ///
    /// As [`Ports::bound`].
    pub fn bind(&mut self, port: u32, vcpu: u32) -> Result<(), Status> {
        self.bound(port)?;
        if let Some(slot) = self.bound.get_mut(port as usize) {
            *slot = Some(vcpu);
        }
        Ok(())
    }

    /// Frees an allocated port.
    ///
    /// # Errors
    ///
    /// As [`Ports::bound`].
    pub fn close(&mut self, port: u32) -> Result<(), Status> {
        self.bound(port)?;
        if let Some(slot) = self.bound.get_mut(port as usize) {
            *slot = None;
        }
        Ok(())
    }

    /// Number of allocated ports.
    pub fn allocated(&self) -> usize {
        self.bound.iter().filter(|b| b.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_bind_close_exhaust() {
        let mut p = Ports::default();
        assert_eq!(p.alloc(0), Ok(1));
        assert_eq!(p.alloc(1), Ok(2));
        assert_eq!(p.bound(2), Ok(1));
        p.bind(2, 3).expect("bind");
        assert_eq!(p.bound(2), Ok(3));
        p.close(1).expect("close");
        assert_eq!(p.bound(1), Err(Status::NOT_FOUND));
        assert_eq!(p.close(1), Err(Status::NOT_FOUND));
        assert_eq!(p.alloc(0), Ok(1));
        assert_eq!(p.bound(0), Err(Status::INVALID_PARAM));
        assert_eq!(p.bound(NUM_PORTS), Err(Status::INVALID_PARAM));
        assert_eq!(port_arg(u64::MAX), Err(Status::INVALID_PARAM));
        while p.alloc(0).is_ok() {}
        assert_eq!(p.allocated(), NUM_PORTS as usize - 1);
        assert_eq!(p.alloc(0), Err(Status::NO_SPACE));
    }
}
