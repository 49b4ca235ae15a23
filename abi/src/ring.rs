//! The shared-ring gate (spec chapter 3 "Gates", clauses `RING-*`): requests and completions
//! in guest memory, a doorbell write to notify.
//!
//! The ring lives in guest memory at the address given to BASE.RING_REGISTER: a [`RingHeader`]
//! (64 bytes), then `2^order` [`RingRequest`] slots, then `2^order` [`RingCompletion`] slots.
//! Indices are free-running `u32` counters; slot `i % 2^order`. The guest writes a request, then
//! (release) advances `req_prod`; the host consumes up to `req_prod`, runs each call exactly as
//! if it came through the register gate, writes the completion, then (release) advances
//! `cmp_prod`. After advancing `req_prod` the guest writes the doorbell (`out` of any value to
//! the port BASE.RING_REGISTER returned) unless the host has set `host_polling` (spec `RING-4`).

use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Ring header (spec `RING-2`), 64 bytes.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct RingHeader {
    /// [`RingHeader::MAGIC`], written by the guest before registering.
    pub magic: u32,
    /// log2 of the number of slots, written by the guest.
    pub order: u32,
    /// Requests produced (guest writes).
    pub req_prod: u32,
    /// Requests consumed (host writes).
    pub req_cons: u32,
    /// Completions produced (host writes).
    pub cmp_prod: u32,
    /// Completions consumed (guest writes).
    pub cmp_cons: u32,
    /// Nonzero while the host polls the ring and needs no doorbell (host writes).
    pub host_polling: u32,
    /// Reserved, zero.
    pub _reserved0: u32,
    /// Reserved, zero.
    pub _reserved1: [u64; 4],
}

impl RingHeader {
    /// `"PVRG"` little-endian.
    pub const MAGIC: u32 = u32::from_le_bytes(*b"PVRG");
    /// Size in bytes.
    pub const SIZE: usize = 64;
    /// Smallest order accepted (spec `RING-1`).
    pub const MIN_ORDER: u32 = 0;
    /// Largest order accepted (spec `RING-1`).
    pub const MAX_ORDER: u32 = 8;
    /// Offset of `req_prod`.
    pub const REQ_PROD: usize = 8;
    /// Offset of `req_cons`.
    pub const REQ_CONS: usize = 12;
    /// Offset of `cmp_prod`.
    pub const CMP_PROD: usize = 16;
    /// Offset of `cmp_cons`.
    pub const CMP_CONS: usize = 20;
    /// Offset of `host_polling`.
    pub const HOST_POLLING: usize = 24;

    /// Total bytes of a ring of `order`: header, requests, completions.
    pub const fn ring_bytes(order: u32) -> u64 {
        let n = 1u64 << order;
        RingHeader::SIZE as u64 + n * RingRequest::SIZE as u64 + n * RingCompletion::SIZE as u64
    }
}

/// A request slot (spec `RING-3`), 64 bytes.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct RingRequest {
    /// Guest cookie, copied into the completion.
    pub cookie: u32,
    /// The call id.
    pub call_id: u32,
    /// Arguments 0..5.
    pub args: [u64; 6],
    /// Reserved, zero.
    pub _reserved: u64,
}

impl RingRequest {
    /// Size in bytes.
    pub const SIZE: usize = 64;
}

/// A completion slot (spec `RING-3`), 24 bytes.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct RingCompletion {
    /// The request's cookie.
    pub cookie: u32,
    /// Reserved, zero.
    pub _reserved: u32,
    /// Status, sign-extended.
    pub status: i64,
    /// Value.
    pub value: u64,
}

impl RingCompletion {
    /// Size in bytes.
    pub const SIZE: usize = 24;
}

const_assert_eq!(core::mem::size_of::<RingHeader>(), RingHeader::SIZE);
const_assert_eq!(core::mem::offset_of!(RingHeader, magic), 0);
const_assert_eq!(core::mem::offset_of!(RingHeader, order), 4);
const_assert_eq!(
    core::mem::offset_of!(RingHeader, req_prod),
    RingHeader::REQ_PROD
);
const_assert_eq!(
    core::mem::offset_of!(RingHeader, req_cons),
    RingHeader::REQ_CONS
);
const_assert_eq!(
    core::mem::offset_of!(RingHeader, cmp_prod),
    RingHeader::CMP_PROD
);
const_assert_eq!(
    core::mem::offset_of!(RingHeader, cmp_cons),
    RingHeader::CMP_CONS
);
const_assert_eq!(
    core::mem::offset_of!(RingHeader, host_polling),
    RingHeader::HOST_POLLING
);
const_assert_eq!(core::mem::offset_of!(RingHeader, _reserved0), 28);
const_assert_eq!(core::mem::offset_of!(RingHeader, _reserved1), 32);
const_assert_eq!(core::mem::size_of::<RingRequest>(), RingRequest::SIZE);
const_assert_eq!(core::mem::offset_of!(RingRequest, cookie), 0);
const_assert_eq!(core::mem::offset_of!(RingRequest, call_id), 4);
const_assert_eq!(core::mem::offset_of!(RingRequest, args), 8);
const_assert_eq!(core::mem::offset_of!(RingRequest, _reserved), 56);
const_assert_eq!(core::mem::size_of::<RingCompletion>(), RingCompletion::SIZE);
const_assert_eq!(core::mem::offset_of!(RingCompletion, cookie), 0);
const_assert_eq!(core::mem::offset_of!(RingCompletion, _reserved), 4);
const_assert_eq!(core::mem::offset_of!(RingCompletion, status), 8);
const_assert_eq!(core::mem::offset_of!(RingCompletion, value), 16);
