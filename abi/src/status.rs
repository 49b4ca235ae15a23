//! Status codes (spec chapter "Calling convention", clauses `CONV-5`..`CONV-7`, and the
//! status table in `spec/02-calling-convention.md`).
//!
//! A call returns a pair (status, value), like the SBI's `sbiret`. The status is a signed
//! integer: zero is success, negative values are errors. The set is open: a newer host may
//! return a code this crate does not know, which a guest treats as a failure.

/// A call's status: an open, `#[repr(transparent)]` signed code (spec `CONV-5`).
///
/// In the status register the value is sign-extended to 64 bits (spec `CONV-6`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(transparent)]
pub struct Status(pub i32);

impl Status {
    /// The call succeeded.
    pub const SUCCESS: Status = Status(0);
    /// The service or function does not exist, or is not offered by this host (`CONV-7`).
    pub const NOT_SUPPORTED: Status = Status(-1);
    /// An argument is out of range or malformed.
    pub const INVALID_PARAM: Status = Status(-2);
    /// A guest address or length is outside guest RAM, overflows, or is misaligned.
    pub const INVALID_ADDRESS: Status = Status(-3);
    /// The caller lacks permission for the operation.
    pub const DENIED: Status = Status(-4);
    /// A table, quota or buffer limit on the host side is exhausted.
    pub const NO_SPACE: Status = Status(-5);
    /// Temporarily unavailable: try again later.
    pub const BUSY: Status = Status(-6);
    /// The object is already in the requested state.
    pub const ALREADY: Status = Status(-7);
    /// The named object does not exist.
    pub const NOT_FOUND: Status = Status(-8);
    /// A wait ended because its deadline passed.
    pub const TIMED_OUT: Status = Status(-9);
    /// A transaction conflicted with a concurrent change and was not applied.
    pub const CONFLICT: Status = Status(-10);
    /// The object is in a state that does not allow the operation.
    pub const BAD_STATE: Status = Status(-11);
    /// The guest's buffer is too small; the value holds the size needed.
    pub const BUFFER_TOO_SMALL: Status = Status(-12);
    /// An unspecified host failure.
    pub const FAILED: Status = Status(-13);

    /// Every status defined by ABI v1, in code order.
    pub const ALL: [Status; 14] = [
        Self::SUCCESS,
        Self::NOT_SUPPORTED,
        Self::INVALID_PARAM,
        Self::INVALID_ADDRESS,
        Self::DENIED,
        Self::NO_SPACE,
        Self::BUSY,
        Self::ALREADY,
        Self::NOT_FOUND,
        Self::TIMED_OUT,
        Self::CONFLICT,
        Self::BAD_STATE,
        Self::BUFFER_TOO_SMALL,
        Self::FAILED,
    ];

    /// Whether this is [`Status::SUCCESS`].
    pub const fn is_success(self) -> bool {
        self.0 == 0
    }

    /// Encodes for the status register: sign-extended (spec `CONV-6`).
    pub const fn to_reg(self) -> u64 {
        self.0 as i64 as u64
    }

    /// Decodes the status register. A value that is not a sign-extended 32-bit integer is
    /// reported as [`Status::FAILED`] (a guest must not trust a malformed return).
    pub const fn from_reg(reg: u64) -> Status {
        let v = reg as i64;
        if v < i32::MIN as i64 || v > i32::MAX as i64 {
            Status::FAILED
        } else {
            Status(v as i32)
        }
    }

    /// The spec's name of a known status (`"SUCCESS"`, `"NOT_SUPPORTED"`, ...), or `None`.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "SUCCESS",
            -1 => "NOT_SUPPORTED",
            -2 => "INVALID_PARAM",
            -3 => "INVALID_ADDRESS",
            -4 => "DENIED",
            -5 => "NO_SPACE",
            -6 => "BUSY",
            -7 => "ALREADY",
            -8 => "NOT_FOUND",
            -9 => "TIMED_OUT",
            -10 => "CONFLICT",
            -11 => "BAD_STATE",
            -12 => "BUFFER_TOO_SMALL",
            -13 => "FAILED",
            _ => return None,
        })
    }

    /// Converts a (status, value) pair into a `Result`.
    ///
    /// # Errors
    ///
    /// Returns `Err(self)` for every status other than [`Status::SUCCESS`].
    pub const fn into_result(self, value: u64) -> Result<u64, Status> {
        if self.is_success() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl core::fmt::Debug for Status {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n}"),
            None => write!(f, "Status({})", self.0),
        }
    }
}

impl core::fmt::Display for Status {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_round_trip_and_sign_extension() {
        for s in Status::ALL {
            assert_eq!(Status::from_reg(s.to_reg()), s);
            assert!(s.name().is_some());
        }
        assert_eq!(Status::NOT_SUPPORTED.to_reg(), u64::MAX);
        assert_eq!(Status::from_reg(1u64 << 40), Status::FAILED);
        assert_eq!(Status(-99).name(), None);
        assert_eq!(Status::SUCCESS.into_result(7), Ok(7));
        assert_eq!(Status::DENIED.into_result(7), Err(Status::DENIED));
    }
}
