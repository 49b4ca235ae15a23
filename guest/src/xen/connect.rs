//! A [`Pvabi`] handle over the Xen transport (spec appendix B): the guest side of the
//! handshake with a window and ring the caller provides, then discovery through BASE calls
//! over the ring, so that kernel code written against [`Pvabi`] runs unchanged on Xen.
//!
//! The handle's gate is a [`crate::ring::RingGate`] whose doorbell is the event channel of the
//! handshake (`XEN-6`) and whose register gate is [`crate::RegisterGate::none`]: the calls
//! `RING-6` keeps off a ring (POWER.SHUTDOWN, VCPU.BLOCK, VCPU.STOP, VCPU.UPCALL_RETURN,
//! MULTICALL.EXECUTE, BASE.RING_REGISTER, BASE.RING_UNREGISTER) fail with INVALID_PARAM at
//! once instead of reaching a host that is not there; their Xen equivalents are hypercalls
//! ([`super::Hypercalls::shutdown`], ...).
//!
//! Guest memory named in calls (console buffers, store paths and values, shared areas) must
//! lie in the window: the host treats every other address as not guest RAM (`XEN-7`).

use core::sync::atomic::AtomicU32;

use super::abi::xenbus_state;
use super::handshake::{self, BackendInfo, FrontendKeys};
use super::hypercall::{Doorbell, EventChannel};
use super::xenstore::XsClient;
use super::{grant::GrantTable, Hypercalls, XenCpuid, XenError};
use crate::discovery::PROBED_SERVICES;
use crate::ring::{init_header, RingGate};
use crate::shared::RingShared;
use crate::{DiscoverError, DiscoverySource, Gate, HostInfo, PhysReader, Pvabi};
use pvabi::{AbiVersion, Features, GateKind, ServiceId};

/// Default idle polls (each a `SCHEDOP_yield`) a ring call waits for the backend.
pub const DEFAULT_SPIN_LIMIT: u64 = 50_000_000;
/// Default reads of the backend's `state` while waiting for it to change.
pub const DEFAULT_STATE_POLLS: u64 = 200_000;

/// The window the guest grants to the backend and the ring in it.
#[derive(Clone, Copy, Debug)]
pub struct XenWindow<'a, const SLOTS: usize> {
    /// The ring; its header is written by [`Pvabi::connect_xen`]. Must lie in the window,
    /// 4096-byte aligned (`XEN-3`).
    pub ring: &'static RingShared<SLOTS>,
    /// First guest frame of the window.
    pub window_gfn: u64,
    /// Pages in the window.
    pub window_pages: u32,
    /// The index page's entries (at least `window_pages`; the page holds 1024).
    pub index: &'a [AtomicU32],
    /// Guest frame of the index page.
    pub index_gfn: u64,
    /// First grant reference to use (the index page's); the window pages take the
    /// `window_pages` references after it. References 0 to 7 are reserved.
    pub first_ref: u32,
}

/// Limits of [`Pvabi::connect_xen`]'s waits.
#[derive(Clone, Copy, Debug)]
pub struct XenConnectOptions {
    /// Reads of the backend's `state` while waiting for 2 and then 4.
    pub state_polls: u64,
    /// Idle polls a ring call waits for its completions before it fails with TIMED_OUT.
    pub spin_limit: u64,
}

impl Default for XenConnectOptions {
    fn default() -> Self {
        Self {
            state_polls: DEFAULT_STATE_POLLS,
            spin_limit: DEFAULT_SPIN_LIMIT,
        }
    }
}

/// The steps of [`Pvabi::connect_xen`], in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XenStep {
    /// Xen's CPUID leaves.
    Detect,
    /// The `domid` node.
    DomainId,
    /// The backend's directory, `state` = 2 and its limits ([`handshake::read_backend`]).
    Backend,
    /// Granting the window and the index page ([`handshake::grant_window`]).
    GrantWindow,
    /// The unbound event channel for the backend.
    EventChannel,
    /// The ring's address and the keys against the backend's limits (`XEN-3`).
    Layout,
    /// Writing the keys and `state` = 3 ([`handshake::publish`]).
    Publish,
    /// Waiting for the backend's `state` = 4 ([`handshake::wait_connected`]).
    Connect,
    /// BASE calls over the ring.
    Discover,
}

/// Why a step failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XenCause {
    /// A Xen or xenstore operation failed ([`XenError::Refused`]: the backend refused; its
    /// reason is in its `error` key, see [`handshake::backend_error`]).
    Xen(XenError),
    /// Discovery over the connected ring failed.
    Discover(DiscoverError),
}

/// [`Pvabi::connect_xen`]'s error: the step that failed, why, and what the handshake had
/// learned of the backend by then.
#[derive(Clone, Copy, Debug)]
pub struct XenConnectError {
    /// The failed step.
    pub step: XenStep,
    /// Why it failed.
    pub cause: XenCause,
    /// The guest's domain id, once read.
    pub domid: Option<u32>,
    /// The backend, once read.
    pub backend: Option<BackendInfo>,
    /// The keys, once the layout was checked (from [`XenStep::Publish`] on).
    pub keys: Option<FrontendKeys>,
}

/// A connection made by [`Pvabi::connect_xen`]: what each handshake step produced.
#[derive(Clone, Copy, Debug)]
pub struct XenConnection {
    /// Xen's CPUID leaves.
    pub xen: XenCpuid,
    /// The guest's domain id `D`.
    pub domid: u32,
    /// What the backend published.
    pub backend: BackendInfo,
    /// The keys the guest published (`window-index-ref`, `event-channel`, ...).
    pub keys: FrontendKeys,
}

impl XenConnection {
    /// Ends the connection as `XEN-12` says ([`handshake::close`]): the guest's `state` = 5,
    /// the backend's `state` = 6, the guest's `state` = 6. Calls through the handle fail
    /// (TIMED_OUT) afterwards; the window's pages are the guest's again once this returns
    /// `Ok`.
    ///
    /// # Errors
    ///
    /// As [`handshake::close`].
    pub fn close<D: Doorbell>(&self, xs: &mut XsClient<'_, D>, polls: u64) -> Result<(), XenError> {
        handshake::close(xs, self.domid, &self.backend, polls)
    }
}

/// Writes the guest's `state` = 6 (Closed) after a handshake that did not connect (best
/// effort: a failed write is ignored), once the caller has read the backend's `error`.
pub fn abandon<D: Doorbell>(xs: &mut XsClient<'_, D>, domid: u32) {
    if let Ok(p) = handshake::frontend_dir(domid)
        .and_then(|d| handshake::join(d.as_str(), handshake::key::STATE))
    {
        let _ = xs.write_u64(p.as_str(), u64::from(xenbus_state::CLOSED));
    }
}

/// The BASE facts of the host behind `gate`, as discovery would record them.
fn discover_over(
    gate: RingGate,
    phys: &PhysReader,
    xen: &XenCpuid,
) -> Result<Pvabi, DiscoverError> {
    let mut info = HostInfo {
        source: DiscoverySource::Cpuid(xen.base),
        version: AbiVersion::from_u32(0),
        gate_kind: GateKind::NONE,
        gate_param: 0,
        features: Features::empty(),
        vcpu_count: 1,
        boot_vcpu: None,
        backend_id: None,
        exec_mode: None,
        boot_info: None,
        service_functions: [0; PROBED_SERVICES],
    };
    let pv = |info: HostInfo| Pvabi::from_parts(Gate::Ring(gate), *phys, info);
    let p = pv(info);
    info.version = p.abi_version().map_err(DiscoverError::Call)?;
    if !pvabi::ABI_VERSION.is_compatible_with_host(info.version) {
        return Err(DiscoverError::Incompatible {
            host: info.version,
            guest: pvabi::ABI_VERSION,
        });
    }
    info.features = p.get_features().map_err(DiscoverError::Call)?;
    info.vcpu_count = p.vcpu_count().map_err(|e| match e {
        pvabi::Status::FAILED => DiscoverError::BadAnswer,
        e => DiscoverError::Call(e),
    })?;
    info.backend_id = p.backend_id().ok();
    let p = pv(info);
    info.boot_vcpu = p.vcpu_id().ok();
    let harness = info.features.contains(Features::HARNESS);
    let services = ServiceId::V1
        .iter()
        .copied()
        .enumerate()
        .chain(harness.then_some((PROBED_SERVICES - 1, ServiceId::HARNESS)));
    for (slot, svc) in services {
        if let Some(n) = info.service_functions.get_mut(slot) {
            *n = p.probe_service(svc).unwrap_or(0);
        }
    }
    // BASE is always there (spec `BASE-10`).
    if let Some(b) = info.service_functions.first_mut() {
        if *b == 0 {
            *b = pvabi::call::function_count(ServiceId::BASE);
        }
    }
    Ok(pv(info))
}

impl Pvabi {
    /// Connects to the pvabi backend over the Xen transport and returns a handle whose calls
    /// go through the granted ring, with the event channel as the doorbell.
    ///
    /// Detects Xen (CPUID), reads the domain id, performs the guest side of the appendix-B
    /// handshake (`XEN-2`: the backend's `state` = 2, the window and index page granted with
    /// references from `window.first_ref`, an unbound event channel for the backend, the ring
    /// header written, every key and then `state` = 3, the backend's `state` = 4), then
    /// discovers the host with BASE calls over the ring (version, which must be compatible,
    /// features, vCPU count, backend id, the caller's vCPU id and PROBE_SERVICE for each v1
    /// service), as discovery does for a host without a boot handoff.
    ///
    /// `hc` is the installed hypercall page, `xs` a client on the domain's xenstore ring and
    /// `gt` the mapped grant table (version 1), which the caller sets up because each needs a
    /// page of its own and ring 0. `phys` must translate the window's addresses to their
    /// guest-physical addresses (in a PVH kernel with identity paging: [`crate::Translate::Identity`]).
    /// The returned handle's [`HostInfo::source`] is `Cpuid` with Xen's CPUID base, its
    /// gate kind is [`GateKind::NONE`] (the ring is the only gate).
    ///
    /// # Errors
    ///
    /// [`XenConnectError`] with the failed step. When the backend refused or did not connect
    /// ([`XenStep::Connect`]) the guest's `state` stays 3: read the backend's reason with
    /// [`handshake::backend_error`], then write 6 with [`abandon`]. A connected backend whose
    /// BASE answers fail discovery ([`XenStep::Discover`]) stays connected: close it with
    /// [`handshake::close`] and the error's `backend`.
    // The error carries the backend's directory for the caller's report; there is no
    // allocator to box it, and the call is made once per connection.
    #[allow(clippy::result_large_err)]
    pub fn connect_xen<D: Doorbell, const SLOTS: usize>(
        hc: Hypercalls,
        xs: &mut XsClient<'_, D>,
        gt: &GrantTable<'_>,
        window: &XenWindow<'_, SLOTS>,
        phys: &PhysReader,
        opts: &XenConnectOptions,
    ) -> Result<(Pvabi, XenConnection), XenConnectError> {
        let mut err = XenConnectError {
            step: XenStep::Detect,
            cause: XenCause::Xen(XenError::NotXen),
            domid: None,
            backend: None,
            keys: None,
        };
        let fail = |err: &XenConnectError, step: XenStep, e: XenError| XenConnectError {
            step,
            cause: XenCause::Xen(e),
            ..*err
        };
        let xen = super::detect(super::cpuid_native).ok_or(err)?;
        let domid = xs
            .read_u64("domid")
            .and_then(|d| u32::try_from(d).map_err(|_| XenError::BadValue))
            .map_err(|e| fail(&err, XenStep::DomainId, e))?;
        err.domid = Some(domid);
        let backend = handshake::read_backend(xs, domid, opts.state_polls)
            .map_err(|e| fail(&err, XenStep::Backend, e))?;
        err.backend = Some(backend);
        let index_ref = handshake::grant_window(
            gt,
            backend.id,
            window.window_gfn,
            window.window_pages,
            window.index,
            window.index_gfn,
            window.first_ref,
        )
        .map_err(|e| fail(&err, XenStep::GrantWindow, e))?;
        let port = hc
            .evtchn_alloc_unbound(backend.id)
            .map_err(|e| fail(&err, XenStep::EventChannel, e))?;
        let ring_gpa = phys
            .translate()
            .gpa_of_ref(window.ring)
            .map_err(|_| fail(&err, XenStep::Layout, XenError::Layout))?;
        let keys = FrontendKeys {
            window_gfn: window.window_gfn,
            window_pages: u64::from(window.window_pages),
            window_index_ref: index_ref,
            ring_gpa,
            ring_order: RingShared::<SLOTS>::ORDER,
            event_channel: port,
        };
        keys.check(backend.max_window_pages, backend.max_ring_order)
            .map_err(|e| fail(&err, XenStep::Layout, e))?;
        err.keys = Some(keys);
        init_header(window.ring);
        let gate = RingGate::xen(window.ring, EventChannel { hc, port }, opts.spin_limit);
        handshake::publish(xs, domid, &keys).map_err(|e| fail(&err, XenStep::Publish, e))?;
        handshake::wait_connected(xs, &backend, opts.state_polls)
            .map_err(|e| fail(&err, XenStep::Connect, e))?;
        let conn = XenConnection {
            xen,
            domid,
            backend,
            keys,
        };
        let pv = discover_over(gate, phys, &xen).map_err(|e| XenConnectError {
            step: XenStep::Discover,
            cause: XenCause::Discover(e),
            ..err
        })?;
        Ok((pv, conn))
    }
}

#[cfg(test)]
// In tests a panic is the failure report.
#[allow(clippy::unwrap_used)]
mod tests {
    extern crate std;
    use super::*;
    use crate::Translate;
    use core::sync::atomic::Ordering;
    use pvabi::{call, Status};

    /// A handle on a Xen ring gate whose backend never answers and whose doorbell must not be
    /// rung (its hypercall page is unusable): only calls that never reach the ring may be made.
    fn handle() -> (Pvabi, &'static RingShared<4>) {
        let ring: &'static RingShared<4> =
            std::boxed::Box::leak(std::boxed::Box::new(RingShared::new()));
        init_header(ring);
        let ch = EventChannel {
            hc: Hypercalls::unusable(),
            port: 5,
        };
        let gate = RingGate::xen(ring, ch, 10);
        // SAFETY: an identity reader over ordinary process memory; the test reads nothing.
        let phys = unsafe { PhysReader::new(Translate::Identity) };
        let info = HostInfo {
            source: DiscoverySource::Cpuid(0x4000_0000),
            version: pvabi::ABI_VERSION,
            gate_kind: GateKind::NONE,
            gate_param: 0,
            features: Features::empty(),
            vcpu_count: 1,
            boot_vcpu: Some(0),
            backend_id: Some(0),
            exec_mode: None,
            boot_info: None,
            service_functions: [0; PROBED_SERVICES],
        };
        (Pvabi::from_parts(Gate::Ring(gate), phys, info), ring)
    }

    #[test]
    fn calls_the_ring_refuses_fail_at_once_without_touching_it() {
        let (pv, ring) = handle();
        let Gate::Ring(g) = pv.gate() else {
            panic!("not a ring gate")
        };
        assert_eq!(g.event_channel().map(|c| c.port), Some(5));
        assert_eq!(pv.gate().register_gate().kind(), GateKind::NONE);
        assert!(!pv.gate().register_gate().can_ring_doorbell());
        assert_eq!(pv.power_off(0), Status::INVALID_PARAM);
        assert_eq!(pv.vcpu_block(None).err(), Some(Status::INVALID_PARAM));
        for id in [
            call::POWER_SHUTDOWN,
            call::VCPU_STOP,
            call::VCPU_UPCALL_RETURN,
            call::VCPU_BLOCK,
            call::MULTICALL_EXECUTE,
            call::BASE_RING_REGISTER,
            call::BASE_RING_UNREGISTER,
        ] {
            // SAFETY: no guest-physical address among the arguments.
            let r = unsafe { pv.call_unchecked(id, [0; 6]) };
            assert_eq!(r.status, Status::INVALID_PARAM, "{id:?}");
        }
        assert_eq!(pv.unregister_ring().err(), Some(Status::INVALID_PARAM));
        assert_eq!(pv.register_ring(ring).err(), Some(Status::INVALID_PARAM));
        // Nothing was posted.
        assert_eq!(ring.header.req_prod.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_call_goes_through_the_ring() {
        let (pv, ring) = handle();
        // The host polls (no notification through the unusable hypercall page) and its
        // completion is already there (no wait, which would yield through that page).
        ring.header.host_polling.store(1, Ordering::Relaxed);
        let c = &ring.completions[0];
        c.cookie.store(0, Ordering::Relaxed);
        c.status.store(0, Ordering::Relaxed);
        c.value.store(0x1_0000, Ordering::Relaxed);
        ring.header.cmp_prod.store(1, Ordering::Release);
        assert_eq!(pv.abi_version().unwrap(), AbiVersion::from_u32(0x1_0000));
        let r = &ring.requests[0];
        assert_eq!(
            r.call_id.load(Ordering::Relaxed),
            call::BASE_GET_ABI_VERSION.0
        );
        assert_eq!(ring.header.req_prod.load(Ordering::Relaxed), 1);
    }
}
