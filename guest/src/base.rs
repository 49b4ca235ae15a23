//! BASE service (spec chapter 4, `BASE-*`): version, backend identity, service probing,
//! features, vCPU identity and count. Ring registration is in [`crate::ring`].

use crate::Pvabi;
use pvabi::call::{self, CallId};
use pvabi::{AbiVersion, Features, ServiceId, Status};

/// Whether a v1 call takes no guest-memory argument, no code address, and returns: the calls
/// [`Pvabi::call_scalar`] accepts.
pub fn is_scalar_call(id: CallId) -> bool {
    matches!(
        id,
        call::BASE_GET_ABI_VERSION
            | call::BASE_GET_BACKEND_ID
            | call::BASE_GET_BACKEND_VERSION
            | call::BASE_PROBE_SERVICE
            | call::BASE_GET_FEATURES
            | call::BASE_GET_VCPU_ID
            | call::BASE_GET_VCPU_COUNT
            | call::CONSOLE_WRITE_BYTE
            | call::CLOCK_GET_WALLCLOCK
            | call::CLOCK_GET_TIME
            | call::CLOCK_SET_TIMER
            | call::VCPU_YIELD
            | call::VCPU_BLOCK
            | call::VCPU_KICK
            | call::VCPU_GET_STATUS
            | call::EVENT_ALLOC
            | call::EVENT_BIND_VCPU
            | call::EVENT_CLOSE
            | call::EVENT_SEND
            | call::EVENT_MASK
            | call::EVENT_UNMASK
            | call::MEMORY_BALLOON_QUERY
            | call::GRANT_QUERY
            | call::STORE_UNWATCH
            | call::STORE_TXN_START
            | call::STORE_TXN_COMMIT
            | call::STORE_TXN_ABORT
            | call::HARNESS_INJECT_EVENT
            | call::HARNESS_CLOCK_ADVANCE
            | call::HARNESS_CLOCK_READ
            | call::HARNESS_BALLOON_CHECK
    )
}

/// Converts a host value that must fit 32 bits.
#[inline(always)]
pub(crate) fn to_u32(v: u64) -> Result<u32, Status> {
    u32::try_from(v).map_err(|_| Status::FAILED)
}

impl Pvabi {
    /// BASE.GET_ABI_VERSION (`BASE-1`).
    ///
    /// # Errors
    ///
    /// The host's status; `FAILED` if the value has bits above 31.
    #[inline]
    pub fn abi_version(&self) -> Result<AbiVersion, Status> {
        let v = self.call0(call::BASE_GET_ABI_VERSION)?;
        if v >> 32 == 0 {
            Ok(AbiVersion::from_u32(v as u32))
        } else {
            Err(Status::FAILED)
        }
    }

    /// BASE.GET_BACKEND_ID (`BASE-3`).
    ///
    /// # Errors
    ///
    /// The host's status; `FAILED` if the value has bits above 31.
    #[inline]
    pub fn backend_id(&self) -> Result<u32, Status> {
        self.call0(call::BASE_GET_BACKEND_ID).and_then(to_u32)
    }

    /// BASE.GET_BACKEND_VERSION (`BASE-4`): a backend-defined 64-bit value.
    ///
    /// # Errors
    ///
    /// The host's status.
    #[inline]
    pub fn backend_version(&self) -> Result<u64, Status> {
        self.call0(call::BASE_GET_BACKEND_VERSION)
    }

    /// BASE.PROBE_SERVICE (`BASE-5`): the service's function count, 0 when absent.
    ///
    /// # Errors
    ///
    /// The host's status; `FAILED` if the count exceeds 0xFFFF (a service has at most
    /// 65 536 function numbers, so such a count cannot be right).
    #[inline]
    pub fn probe_service(&self, svc: ServiceId) -> Result<u16, Status> {
        self.call1(call::BASE_PROBE_SERVICE, u64::from(svc.0))
            .and_then(|v| u16::try_from(v).map_err(|_| Status::FAILED))
    }

    /// BASE.GET_FEATURES (`BASE-7`). Unknown bits are kept.
    ///
    /// # Errors
    ///
    /// The host's status.
    #[inline]
    pub fn get_features(&self) -> Result<Features, Status> {
        self.call0(call::BASE_GET_FEATURES)
            .map(Features::from_bits_retain)
    }

    /// BASE.GET_VCPU_ID (`BASE-8`): the calling vCPU's id.
    ///
    /// # Errors
    ///
    /// The host's status; `FAILED` if the id is not below the vCPU count.
    #[inline]
    pub fn vcpu_id(&self) -> Result<u32, Status> {
        let v = self.call0(call::BASE_GET_VCPU_ID).and_then(to_u32)?;
        if v < self.info().vcpu_count {
            Ok(v)
        } else {
            Err(Status::FAILED)
        }
    }

    /// BASE.GET_VCPU_COUNT (`BASE-9`).
    ///
    /// # Errors
    ///
    /// The host's status; `FAILED` if the count is 0 or above `MAX_VCPUS`.
    #[inline]
    pub fn vcpu_count(&self) -> Result<u32, Status> {
        let v = self.call0(call::BASE_GET_VCPU_COUNT).and_then(to_u32)?;
        if v == 0 || v > pvabi::MAX_VCPUS {
            Err(Status::FAILED)
        } else {
            Ok(v)
        }
    }
}
