//! CLOCK service (spec chapter 6, clauses `CLK-*`): a per-vCPU clock page in the pvclock layout
//! that KVM's kvmclock and Xen's `vcpu_time_info` use, the wall clock at system time 0, the
//! current system time, and a one-shot timer that raises an event.
//!
//! ## The seqlock protocol (spec `CLK-2`..`CLK-4`)
//! The host makes `version` odd, writes the other fields, then makes it even again (one more
//! than the odd value). A reader loads `version`, retries while it is odd, reads the fields,
//! and retries if `version` changed. System time in ns is
//! `system_time + scale(rdtsc() - tsc_timestamp)` where `scale(d)` shifts `d` left by
//! `tsc_shift` (right when negative) and takes bits 95..32 of the product with
//! `tsc_to_system_mul`.

use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub use crate::call::{
    CLOCK_GET_TIME, CLOCK_GET_WALLCLOCK, CLOCK_REGISTER_PAGE, CLOCK_SET_TIMER,
    CLOCK_UNREGISTER_PAGE,
};

/// The clock page: pvclock layout, 32 bytes, 32-byte aligned (spec `CLK-1`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct ClockPage {
    /// Seqlock version: odd while the host writes.
    pub version: u32,
    /// Reserved, zero.
    pub _reserved0: u32,
    /// TSC value at `system_time`.
    pub tsc_timestamp: u64,
    /// System time in ns at `tsc_timestamp`.
    pub system_time: u64,
    /// TSC-to-ns multiplier (a 32.32 fixed-point fraction).
    pub tsc_to_system_mul: u32,
    /// Pre-shift of the TSC delta.
    pub tsc_shift: i8,
    /// [`ClockPage::FLAG_TSC_STABLE`] and reserved bits.
    pub flags: u8,
    /// Reserved, zero.
    pub _reserved1: [u8; 2],
}

impl ClockPage {
    /// Size in bytes.
    pub const SIZE: usize = 32;
    /// Required alignment of its guest-physical address (spec `CLK-1`).
    pub const ALIGN: u64 = 32;
    /// The TSC is synchronised across vCPUs (pvclock's `PVCLOCK_TSC_STABLE_BIT`).
    pub const FLAG_TSC_STABLE: u8 = 1 << 0;

    /// System time in ns at TSC value `tsc`, from a consistent snapshot of the page.
    pub const fn time_at(&self, tsc: u64) -> u64 {
        let delta = tsc.wrapping_sub(self.tsc_timestamp);
        self.system_time
            .wrapping_add(scale_delta(delta, self.tsc_to_system_mul, self.tsc_shift))
    }
}

/// pvclock's scaling: shift, then multiply by a 32.32 fraction (spec `CLK-3`).
pub const fn scale_delta(delta: u64, mul_frac: u32, shift: i8) -> u64 {
    let d = if shift < 0 {
        delta >> ((-(shift as i16)) as u32 & 63)
    } else {
        delta << (shift as u32 & 63)
    };
    ((d as u128 * mul_frac as u128) >> 32) as u64
}

/// Computes (`tsc_to_system_mul`, `tsc_shift`) for a TSC of `tsc_hz` so that
/// [`scale_delta`] converts ticks to ns, as kvmclock and Xen do.
pub const fn scale_for_hz(tsc_hz: u64) -> (u32, i8) {
    let mut shift: i8 = 0;
    let scaled_target: u64 = 1_000_000_000;
    let mut hz = if tsc_hz == 0 { 1 } else { tsc_hz };
    // Bring hz into (target/2, target] range by shifting so the fraction stays below 1.
    let mut tps64 = hz;
    while tps64 > scaled_target * 2 {
        tps64 >>= 1;
        shift -= 1;
    }
    hz = tps64;
    let mut tps32 = hz;
    while tps32 <= scaled_target && shift < 31 {
        tps32 <<= 1;
        shift += 1;
    }
    // mul = target / tps32 * 2^32, with tps32 > target so the fraction is below 1.
    let mul = ((scaled_target as u128) << 32) / tps32 as u128;
    (mul as u32, shift)
}

/// The CLOCK.SET_TIMER deadline that cancels the calling vCPU's timer (spec `CLK-8`).
pub const TIMER_CANCEL: u64 = 0;

const_assert_eq!(core::mem::size_of::<ClockPage>(), ClockPage::SIZE);
const_assert_eq!(core::mem::align_of::<ClockPage>(), 8);
const_assert_eq!(core::mem::offset_of!(ClockPage, version), 0);
const_assert_eq!(core::mem::offset_of!(ClockPage, _reserved0), 4);
const_assert_eq!(core::mem::offset_of!(ClockPage, tsc_timestamp), 8);
const_assert_eq!(core::mem::offset_of!(ClockPage, system_time), 16);
const_assert_eq!(core::mem::offset_of!(ClockPage, tsc_to_system_mul), 24);
const_assert_eq!(core::mem::offset_of!(ClockPage, tsc_shift), 28);
const_assert_eq!(core::mem::offset_of!(ClockPage, flags), 29);
const_assert_eq!(core::mem::offset_of!(ClockPage, _reserved1), 30);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_converts_ticks_to_ns() {
        for hz in [
            1_000_000u64,
            1_000_000_000,
            2_400_000_000,
            3_000_000_000,
            123_456_789,
        ] {
            let (mul, shift) = scale_for_hz(hz);
            let ns = scale_delta(hz, mul, shift);
            // One second of ticks is one second of ns, within rounding.
            assert!(
                (999_999_000..=1_000_000_001).contains(&ns),
                "hz={hz} ns={ns}"
            );
        }
        let page = ClockPage {
            system_time: 100,
            tsc_timestamp: 10,
            tsc_to_system_mul: u32::MAX,
            ..Default::default()
        };
        assert!(page.time_at(10) == 100);
    }
}
