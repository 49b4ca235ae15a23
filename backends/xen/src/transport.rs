//! The backend side of the Xen transport (spec appendix B, clauses `XEN-*`): the xenbus
//! handshake, the granted window and ring, the event-channel doorbell, and a pvabi-host [`Vm`]
//! serving the ring on the window.
//!
//! The hypervisor interfaces are behind two small traits, [`GrantMapper`] and
//! [`EventChannel`], so that the handshake and the ring are tested without Xen
//! ([`crate::testing`] has in-memory versions); [`GntDev`] and [`EvtchnDev`] are the real ones.
//!
//! [`Backend::reconcile`] is one idempotent pass over xenstore: it takes on new domains
//! (`XEN-1`), connects those whose guest reached Initialised (`XEN-3`..`XEN-5`) and tears down
//! those that closed or went away (`XEN-9`). [`BackendThread`] runs it whenever a watch fires
//! (a domain introduced or released, a guest's `state` changed) and at least once per period.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pvabi::call::{BASE_RING_REGISTER, BASE_RING_UNREGISTER};
use pvabi::ring::RingHeader;
use pvabi::{Features, Regs, Status};
use pvabi_host::{ClockParams, GuestRam, Outcome, Platform, StoreService, Vm, VmConfig};
use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

use crate::ops::{TxnId, XenStoreOps};
use crate::perms::{Access, Perm};
use crate::sys::{EvtchnDev, GntDev, PAGE_SIZE};
use pvabi_guest::xen::handshake::{self, key};

/// The device type in the handshake's paths.
pub const DEVICE_TYPE: &str = handshake::DEVICE_TYPE;
/// The largest window a backend accepts, in pages (4 MiB).
pub const MAX_WINDOW_PAGES: u32 = handshake::MAX_WINDOW_PAGES as u32;
/// The largest ring order a backend accepts (`RING-1`).
pub const MAX_RING_ORDER: u32 = RingHeader::MAX_ORDER;
/// The first guest frame the window may not reach (`XEN-3`: the window ends below `2^52`).
pub const WINDOW_FRAME_LIMIT: u64 = 1 << 40;

/// `XenbusState` values (Xen's `io/xenbus.h`), shared with the guest side in `pvabi-guest`.
pub use pvabi_guest::xen::abi::xenbus_state as state;

/// The guest keys of the handshake (spec appendix B's table), in the order a guest writes them.
pub const GUEST_KEYS: &[&str] = &[
    handshake::key::WINDOW_GFN,
    handshake::key::WINDOW_PAGES,
    handshake::key::WINDOW_INDEX_REF,
    handshake::key::RING_GPA,
    handshake::key::RING_ORDER,
    handshake::key::EVENT_CHANNEL,
];

/// The backend keys of the handshake (spec appendix B's table).
pub const BACKEND_KEYS: &[&str] = &[
    handshake::key::FRONTEND,
    handshake::key::FRONTEND_ID,
    handshake::key::ABI_VERSION,
    handshake::key::FEATURES,
    handshake::key::MAX_WINDOW_PAGES,
    handshake::key::MAX_RING_ORDER,
    handshake::key::ERROR,
    handshake::key::STATE,
];

/// The guest directory of domain `domid` (`XEN-1`).
pub fn frontend_dir(domid: u32) -> String {
    format!("/local/domain/{domid}/device/{DEVICE_TYPE}/0")
}

/// The backend directory for domain `domid` served from `backend_domid` (`XEN-1`).
pub fn backend_dir(backend_domid: u32, domid: u32) -> String {
    format!("/local/domain/{backend_domid}/backend/{DEVICE_TYPE}/{domid}/0")
}

/// The STORE subtree of domain `domid` (`XEN-10`).
pub fn store_root(domid: u32) -> String {
    format!("/local/domain/{domid}/pvabi")
}

/// Parses a handshake number (`XEN-3`): ASCII decimal digits, no sign, no leading zero (except
/// `0` itself), at most 20 digits, fitting in a `u64`.
///
/// # Errors
///
/// A message naming `key` and what is wrong.
pub fn parse_number(key: &str, raw: &[u8]) -> Result<u64, String> {
    if raw.is_empty() {
        return Err(format!("{key} is empty"));
    }
    if raw.len() > 20 {
        return Err(format!("{key} has more than 20 digits"));
    }
    if !raw.iter().all(u8::is_ascii_digit) {
        return Err(format!("{key} is not a decimal number"));
    }
    if raw.len() > 1 && raw[0] == b'0' {
        return Err(format!("{key} has a leading zero"));
    }
    raw.iter()
        .try_fold(0u64, |acc, d| {
            acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .ok_or_else(|| format!("{key} does not fit in 64 bits"))
}

/// The guest's handshake keys, validated (`XEN-3`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrontendConfig {
    /// First guest frame of the window.
    pub window_gfn: u64,
    /// Pages in the window.
    pub window_pages: u32,
    /// Grant reference of the index page.
    pub index_ref: u32,
    /// Guest-physical address of the ring header.
    pub ring_gpa: u64,
    /// The ring's order.
    pub ring_order: u32,
    /// The guest's unbound event-channel port.
    pub event_channel: u32,
}

impl FrontendConfig {
    /// Reads each guest key once through `get` (which returns `None` for a missing key) and
    /// validates them against the backend's limit of `max_pages`.
    ///
    /// # Errors
    ///
    /// A human-readable reason, for the backend's `error` key (`XEN-4`).
    pub fn parse(
        mut get: impl FnMut(&str) -> Option<Vec<u8>>,
        max_pages: u32,
    ) -> Result<FrontendConfig, String> {
        let mut v = [0u64; 6];
        for (slot, key) in v.iter_mut().zip(GUEST_KEYS) {
            let raw = get(key).ok_or_else(|| format!("{key} is missing"))?;
            *slot = parse_number(key, &raw)?;
        }
        let [window_gfn, window_pages, index_ref, ring_gpa, ring_order, event_channel] = v;
        if window_pages == 0 || window_pages > u64::from(max_pages) {
            return Err(format!(
                "window-pages {window_pages} is outside 1..={max_pages}"
            ));
        }
        if window_gfn
            .checked_add(window_pages)
            .is_none_or(|end| end > WINDOW_FRAME_LIMIT)
        {
            return Err("the window does not end below 2^52".into());
        }
        let index_ref =
            u32::try_from(index_ref).map_err(|_| "window-index-ref is not a u32".to_string())?;
        let event_channel =
            u32::try_from(event_channel).map_err(|_| "event-channel is not a u32".to_string())?;
        if ring_order > u64::from(MAX_RING_ORDER) {
            return Err(format!("ring-order {ring_order} is above {MAX_RING_ORDER}"));
        }
        let ring_order = ring_order as u32;
        if ring_gpa % PAGE_SIZE as u64 != 0 {
            return Err("ring-gpa is not 4096-byte aligned".into());
        }
        let base = window_gfn * PAGE_SIZE as u64;
        let end = base + window_pages * PAGE_SIZE as u64;
        let ring_end = ring_gpa.checked_add(RingHeader::ring_bytes(ring_order));
        if ring_gpa < base || ring_end.is_none_or(|e| e > end) {
            return Err("the ring does not lie in the window".into());
        }
        Ok(FrontendConfig {
            window_gfn,
            window_pages: window_pages as u32,
            index_ref,
            ring_gpa,
            ring_order,
            event_channel,
        })
    }

    /// The window's first guest-physical address.
    pub fn window_base(&self) -> u64 {
        self.window_gfn * PAGE_SIZE as u64
    }

    /// The window's length in bytes.
    pub fn window_len(&self) -> usize {
        self.window_pages as usize * PAGE_SIZE
    }
}

/// Maps pages another domain granted to this one.
pub trait GrantMapper: Send + Sync {
    /// Maps `refs` of domain `domid`, in order, as one contiguous region; the grants stay
    /// mapped until the region is dropped.
    ///
    /// # Errors
    ///
    /// The OS error, or `InvalidInput` for a reference that is not a grant of `domid`.
    fn map(&self, domid: u32, refs: &[u32], writable: bool) -> io::Result<MmapRegion<()>>;
}

impl GrantMapper for GntDev {
    fn map(&self, domid: u32, refs: &[u32], writable: bool) -> io::Result<MmapRegion<()>> {
        GntDev::map(self, domid, refs, writable)
    }
}

/// One handle of event channels: ports bound through it are unbound when it is dropped.
pub trait EventChannel: Send + Sync {
    /// Binds to `remote_port` of `domid` and returns the local port.
    ///
    /// # Errors
    ///
    /// The OS error.
    fn bind_interdomain(&self, domid: u32, remote_port: u32) -> io::Result<u32>;
    /// Notifies the remote end of `local_port`.
    ///
    /// # Errors
    ///
    /// The OS error.
    fn notify(&self, local_port: u32) -> io::Result<()>;
    /// Waits up to `timeout` for a notification; returns the fired local port, already
    /// unmasked, or `None` on timeout.
    ///
    /// # Errors
    ///
    /// The OS error.
    fn wait(&self, timeout: Duration) -> io::Result<Option<u32>>;
}

impl EventChannel for EvtchnDev {
    fn bind_interdomain(&self, domid: u32, remote_port: u32) -> io::Result<u32> {
        EvtchnDev::bind_interdomain(self, domid, remote_port)
    }
    fn notify(&self, local_port: u32) -> io::Result<()> {
        EvtchnDev::notify(self, local_port)
    }
    fn wait(&self, timeout: Duration) -> io::Result<Option<u32>> {
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        if !self.readable(ms)? {
            return Ok(None);
        }
        let port = EvtchnDev::wait(self)?;
        self.unmask(port)?;
        Ok(Some(port))
    }
}

/// Opens a fresh [`EventChannel`] handle for each connection.
pub type EventChannelFactory = Arc<dyn Fn() -> io::Result<Arc<dyn EventChannel>> + Send + Sync>;

/// A guest's STORE service, shared with its `Vm`.
pub type SharedStore = Arc<Mutex<dyn StoreService>>;

/// Makes the STORE service of domain `domid` (`XEN-10`); the error is a human-readable reason.
pub type StoreFactory = Arc<dyn Fn(u32) -> Result<SharedStore, String> + Send + Sync>;

/// A [`StoreFactory`] that gives each guest its own connection to xenstored's socket at
/// `socket`, mapped onto the guest's subtree [`store_root`] (`XEN-10`) through
/// [`EncodedStore`](crate::encode::EncodedStore).
pub fn xenstored_store_factory(socket: impl Into<std::path::PathBuf>) -> StoreFactory {
    let socket = socket.into();
    Arc::new(move |domid| {
        let xs = crate::XenStore::open_socket(&socket)
            .map_err(|e| format!("cannot connect to xenstored for the STORE service: {e}"))?;
        // xenstored's socket is dom0's: the backend writing host nodes is domain 0. Paths and
        // values go through the encoding xenstored needs (`.` in names, 4096-byte values).
        Ok(Arc::new(Mutex::new(crate::GuestStore::new(
            crate::encode::EncodedStore::new(xs),
            store_root(domid),
            domid,
            0,
        ))) as SharedStore)
    })
}

/// What a connection's `Vm` needs from Xen: the clock and the event channel to notify.
struct XenPlatform {
    start: Instant,
    epoch_ns: u64,
    evtchn: Arc<dyn EventChannel>,
    port: u32,
    notifications: Arc<std::sync::atomic::AtomicU64>,
}

impl Platform for XenPlatform {
    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
    fn wallclock_epoch_ns(&self) -> u64 {
        self.epoch_ns
    }
    fn clock_params(&self) -> ClockParams {
        ClockParams {
            system_time: self.now_ns(),
            ..ClockParams::default()
        }
    }
    fn start_vcpu(&self, _vcpu: u32, _entry: u64, _stack: u64, _arg: u64) -> Result<(), Status> {
        // Secondary vCPUs are Xen's own (VCPUOP_up) on this transport.
        Err(Status::NOT_SUPPORTED)
    }
    fn notify(&self, _vcpu: u32) {
        // XEN-8: the event is marked pending before the Vm asks for the notification.
        if self.evtchn.notify(self.port).is_ok() {
            self.notifications.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn yield_vcpu(&self, _vcpu: u32) {}
    fn deadline_changed(&self, _deadline_ns: u64) {
        // No TIMER on this transport, and VCPU.BLOCK cannot cross the ring: nothing waits.
    }
    fn advance_clock(&self, _ns: u64) -> Result<(), Status> {
        Err(Status::NOT_SUPPORTED)
    }
}

/// The features a backend on this transport offers: the ring, transactions in STORE and the
/// GRANT table (in the window). Not TIMER: a guest on this transport could only wait for a
/// timer by polling its event page (VCPU.BLOCK cannot cross the ring, `RING-6`), and under
/// TCG, where each ring call takes about a millisecond, the suite's timer cases cannot be
/// judged reliably.
pub const FEATURES: Features = Features::RING_GATE
    .union(Features::STORE_TXN)
    .union(Features::GRANT);

/// The longest a connection's thread sleeps between looks at the guest's watches.
const WATCH_POLL: Duration = Duration::from_millis(100);

/// One connected guest: the window, the `Vm` on it, and the thread that serves the doorbell.
pub struct Connection {
    domid: u32,
    config: FrontendConfig,
    vm: Arc<Vm>,
    stop: Arc<AtomicBool>,
    server: Option<JoinHandle<()>>,
    notifications: Arc<std::sync::atomic::AtomicU64>,
    served: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("domid", &self.domid)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Maps the window, binds the event channel and registers the ring (`XEN-5`).
    ///
    /// # Errors
    ///
    /// A human-readable reason (`XEN-4`); nothing stays mapped or bound.
    pub fn open(
        domid: u32,
        config: FrontendConfig,
        grants: &dyn GrantMapper,
        evtchn: Arc<dyn EventChannel>,
        console: Option<pvabi_host::ConsoleSink>,
        store: Option<SharedStore>,
        settings: DomainConfig,
    ) -> Result<Connection, String> {
        let index = grants
            .map(domid, &[config.index_ref], false)
            .map_err(|e| format!("cannot map the index page (ref {}): {e}", config.index_ref))?;
        let mut refs = vec![0u32; config.window_pages as usize];
        {
            let ram =
                GuestMemoryMmap::from_regions(vec![GuestRegionMmap::new(index, GuestAddress(0))
                    .ok_or("the index page mapping is unusable")?])
                .map_err(|e| format!("the index page mapping is unusable: {e}"))?;
            let ram = GuestRam::new(ram);
            let mut raw = vec![0u8; refs.len() * 4];
            ram.read_into(0, &mut raw)
                .map_err(|s| format!("cannot read the index page: {s}"))?;
            for (r, b) in refs.iter_mut().zip(raw.chunks_exact(4)) {
                *r = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        let window = grants
            .map(domid, &refs, true)
            .map_err(|e| format!("cannot map the window's {} grants: {e}", refs.len()))?;
        let region = GuestRegionMmap::new(window, GuestAddress(config.window_base()))
            .ok_or("the window mapping is unusable")?;
        let mem = GuestMemoryMmap::from_regions(vec![region])
            .map_err(|e| format!("the window mapping is unusable: {e}"))?;
        let ram = GuestRam::new(mem);
        let port = evtchn
            .bind_interdomain(domid, config.event_channel)
            .map_err(|e| {
                format!(
                    "cannot bind event channel {} of domain {domid}: {e}",
                    config.event_channel
                )
            })?;
        let notifications = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let epoch_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let platform = Arc::new(XenPlatform {
            start: Instant::now(),
            epoch_ns,
            evtchn: evtchn.clone(),
            port,
            notifications: notifications.clone(),
        });
        let mut cfg = VmConfig::new(1);
        cfg.backend_id = pvabi::base::backend_id::XEN;
        cfg.features = settings.features & FEATURES;
        cfg.console_sink = console;
        cfg.store_service = store;
        cfg.harness = settings.harness;
        let vm = Arc::new(Vm::new(cfg, ram, platform).map_err(|e| format!("guest set-up: {e}"))?);
        let reg = vm.handle_call(
            0,
            &Regs {
                rax: u64::from(BASE_RING_REGISTER.0),
                args: [config.ring_gpa, u64::from(config.ring_order), 0, 0, 0, 0],
            },
        );
        match reg {
            Outcome::Return(r) if r.status == Status::SUCCESS => {}
            Outcome::Return(r) => {
                return Err(format!(
                    "the ring was refused: {} (RING-11/RING-12)",
                    r.status
                ))
            }
            other => return Err(format!("the ring was refused: {other:?}")),
        }
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let server = {
            let (vm, stop, served, evtchn) =
                (vm.clone(), stop.clone(), served.clone(), evtchn.clone());
            std::thread::Builder::new()
                .name(format!("pvabi-xen-d{domid}"))
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        match evtchn.wait(WATCH_POLL) {
                            Ok(Some(p)) if p == port => {
                                served.fetch_add(vm.process_ring() as u64, Ordering::Relaxed);
                            }
                            Ok(_) => {}
                            Err(_) => std::thread::sleep(Duration::from_millis(10)),
                        }
                        // Watches fired by other writers of the guest's subtree (XEN-10).
                        vm.poll_store_events();
                    }
                })
                .map_err(|e| format!("cannot start the ring thread: {e}"))?
        };
        Ok(Connection {
            domid,
            config,
            vm,
            stop,
            server: Some(server),
            notifications,
            served,
        })
    }

    /// The guest's domain id.
    pub fn domid(&self) -> u32 {
        self.domid
    }

    /// The validated handshake keys.
    pub fn config(&self) -> &FrontendConfig {
        &self.config
    }

    /// The `Vm` serving this guest.
    pub fn vm(&self) -> &Arc<Vm> {
        &self.vm
    }

    /// Ring requests served so far.
    pub fn requests_served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Event-channel notifications sent to the guest so far (`XEN-8`).
    pub fn notifications_sent(&self) -> u64 {
        self.notifications.load(Ordering::Relaxed)
    }

    /// Stops serving: no request is consumed and no guest memory written after this returns
    /// (`XEN-9`); the window and the binding go when the connection is dropped.
    pub fn close(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.server.take() {
            let _ = t.join();
        }
        let _ = self.vm.handle_call(
            0,
            &Regs {
                rax: u64::from(BASE_RING_UNREGISTER.0),
                args: [0; 6],
            },
        );
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.close();
    }
}

/// The per-domain configuration directory, below the backend domain's home: the settings for a
/// domain named `N` are the nodes `/local/domain/B/pvabi-config/N/{serve,features,harness}`.
pub const CONFIG_DIR: &str = "pvabi-config";

/// How the backend serves one domain, from its [`CONFIG_DIR`] nodes (each optional).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DomainConfig {
    /// `serve`: `0` leaves the domain alone (no directories, no connection); default `1`.
    pub serve: bool,
    /// `features`: the feature bits offered, as a decimal number, intersected with what the
    /// backend implements ([`FEATURES`]; RING_GATE, the transport's gate, always stays on);
    /// default all of them.
    pub features: Features,
    /// `harness`: `1` offers HARNESS (certification runs only); default the backend's
    /// [`Backend::with_harness`] setting.
    pub harness: bool,
}

impl DomainConfig {
    /// The feature bits the guest gets, HARNESS included when offered.
    pub fn offered(&self) -> Features {
        if self.harness {
            self.features | Features::HARNESS
        } else {
            self.features
        }
    }
}

/// Where one served domain stands.
#[derive(Debug)]
pub enum DomainState {
    /// The directories are there; waiting for the guest's Initialised.
    Waiting,
    /// Connected.
    Connected(Connection),
    /// Refused (`XEN-4`) or closed (`XEN-9`): the reason; nothing mapped.
    Closed(String),
    /// Its configuration says not to serve it (see [`CONFIG_DIR`]).
    NotServed,
}

/// What happened in one [`Backend::reconcile`] pass, for logs and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendEvent {
    /// A new domain's directories were written (`XEN-1`).
    Offered(u32),
    /// A new domain is not served, as its configuration says.
    NotServed(u32),
    /// A guest connected (`XEN-5`).
    Connected(u32),
    /// A handshake was refused, with the reason (`XEN-4`).
    Refused(u32, String),
    /// A guest closed (`XEN-9`).
    Closed(u32),
    /// A domain went away (`XEN-9`).
    Gone(u32),
    /// A xenstore operation failed (the pass goes on with the other domains).
    XenstoreError(String),
}

/// Which domains a backend serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DomainFilter {
    /// Every domain but the backend's own.
    All,
    /// Only these.
    Only(Vec<u32>),
}

/// The dom0 side of the Xen transport for every domain it serves.
pub struct Backend<X: XenStoreOps> {
    xs: X,
    backend_domid: u32,
    filter: DomainFilter,
    grants: Arc<dyn GrantMapper>,
    evtchns: EventChannelFactory,
    domains: BTreeMap<u32, DomainState>,
    console: Arc<Mutex<BTreeMap<u32, Vec<u8>>>>,
    store: Option<StoreFactory>,
    harness: bool,
    reports: BTreeMap<u32, Vec<pvabi_host::Report>>,
    configs: BTreeMap<u32, DomainConfig>,
}

impl<X: XenStoreOps> std::fmt::Debug for Backend<X> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("backend_domid", &self.backend_domid)
            .field("domains", &self.domains)
            .finish_non_exhaustive()
    }
}

impl<X: XenStoreOps> Backend<X> {
    /// Console bytes kept per guest.
    pub const CONSOLE_KEEP: usize = 64 * 1024;

    /// A backend in domain `backend_domid` over the xenstore connection `xs`.
    pub fn new(
        xs: X,
        backend_domid: u32,
        filter: DomainFilter,
        grants: Arc<dyn GrantMapper>,
        evtchns: EventChannelFactory,
    ) -> Backend<X> {
        Backend {
            xs,
            backend_domid,
            filter,
            grants,
            evtchns,
            domains: BTreeMap::new(),
            console: Arc::new(Mutex::new(BTreeMap::new())),
            store: None,
            harness: false,
            reports: BTreeMap::new(),
            configs: BTreeMap::new(),
        }
    }

    /// Offers the HARNESS service to the guests (certification runs only, `HAR-1`); their
    /// records are collected by [`Backend::take_reports`].
    pub fn with_harness(mut self, harness: bool) -> Backend<X> {
        self.harness = harness;
        self
    }

    /// The configuration of domain `domid` as xenstore holds it now (see [`CONFIG_DIR`]); a
    /// value that does not parse is left at its default.
    pub fn domain_config(&mut self, domid: u32) -> DomainConfig {
        let mut c = DomainConfig {
            serve: true,
            features: FEATURES,
            harness: self.harness,
        };
        let Some(name) = self.read_opt(&format!("/local/domain/{domid}/name")) else {
            return c;
        };
        let name = String::from_utf8_lossy(&name).into_owned();
        if name.is_empty() || name.contains('/') {
            return c;
        }
        let dir = format!("/local/domain/{}/{CONFIG_DIR}/{name}", self.backend_domid);
        let mut num = |key: &str| {
            self.read_opt(&format!("{dir}/{key}"))
                .and_then(|v| parse_number(key, &v).ok())
        };
        if let Some(v) = num("serve") {
            c.serve = v != 0;
        }
        if let Some(v) = num("features") {
            // The ring is this transport's only gate: it stays on whatever the setting says.
            c.features = (Features::from_bits_truncate(v) & FEATURES) | Features::RING_GATE;
        }
        if let Some(v) = num("harness") {
            c.harness = v != 0;
        }
        c
    }

    /// The configuration domain `domid` was offered with, once offered.
    pub fn config_of(&self, domid: u32) -> Option<DomainConfig> {
        self.configs.get(&domid).copied()
    }

    /// The HARNESS records domain `domid` reported so far (kept after the connection closed
    /// or the domain went away).
    pub fn take_reports(&mut self, domid: u32) -> Vec<pvabi_host::Report> {
        if let Some(DomainState::Connected(c)) = self.domains.get(&domid) {
            let more = c.vm().take_reports();
            self.reports.entry(domid).or_default().extend(more);
        }
        self.reports.remove(&domid).unwrap_or_default()
    }

    fn keep_reports(&mut self, domid: u32) {
        if let Some(DomainState::Connected(c)) = self.domains.get(&domid) {
            let more = c.vm().take_reports();
            if !more.is_empty() {
                self.reports.entry(domid).or_default().extend(more);
            }
        }
    }

    /// Serves each guest's STORE calls from the service `factory` makes (`XEN-10`); without
    /// one, a guest's STORE is the `Vm`'s own in-memory store (not conforming to `XEN-10`).
    pub fn with_store(mut self, factory: StoreFactory) -> Backend<X> {
        self.store = Some(factory);
        self
    }

    /// The xenstore connection.
    pub fn xenstore(&mut self) -> &mut X {
        &mut self.xs
    }

    /// Where domain `domid` stands, if served.
    pub fn domain(&self, domid: u32) -> Option<&DomainState> {
        self.domains.get(&domid)
    }

    /// The console output domain `domid` wrote through CONSOLE.WRITE (the last
    /// [`Backend::CONSOLE_KEEP`] bytes).
    pub fn console(&self, domid: u32) -> Vec<u8> {
        self.console
            .lock()
            .map(|c| c.get(&domid).cloned().unwrap_or_default())
            .unwrap_or_default()
    }

    fn serves(&self, domid: u32) -> bool {
        domid != self.backend_domid
            && match &self.filter {
                DomainFilter::All => true,
                DomainFilter::Only(v) => v.contains(&domid),
            }
    }

    fn read_opt(&mut self, path: &str) -> Option<Vec<u8>> {
        self.xs.read(TxnId::NONE, path).ok()
    }

    fn frontend_state(&mut self, domid: u32) -> Option<u64> {
        let raw = self.read_opt(&state_path(domid))?;
        parse_number(key::STATE, &raw).ok()
    }

    fn set_backend_state(&mut self, domid: u32, s: u32) -> crate::Result<()> {
        let dir = backend_dir(self.backend_domid, domid);
        self.xs.write(
            TxnId::NONE,
            &format!("{dir}/{}", key::STATE),
            s.to_string().as_bytes(),
        )
    }

    /// Writes both directories of `XEN-1`.
    fn offer(&mut self, domid: u32, config: DomainConfig) -> crate::Result<()> {
        let b = self.backend_domid;
        let fdir = frontend_dir(domid);
        let bdir = backend_dir(b, domid);
        let guest_owned = [Perm::new(domid, Access::None), Perm::new(b, Access::Read)];
        let backend_owned = [Perm::new(b, Access::None), Perm::new(domid, Access::Read)];
        let _ = self.xs.remove(TxnId::NONE, &bdir);
        self.xs.mkdir(TxnId::NONE, &fdir)?;
        self.xs.set_perms(TxnId::NONE, &fdir, &guest_owned)?;
        for (k, v) in [
            (key::BACKEND, bdir.clone()),
            (key::BACKEND_ID, b.to_string()),
            (key::STATE, state::INITIALISING.to_string()),
        ] {
            let p = format!("{fdir}/{k}");
            self.xs.write(TxnId::NONE, &p, v.as_bytes())?;
            self.xs.set_perms(TxnId::NONE, &p, &guest_owned)?;
        }
        // XEN-10: the guest's STORE subtree, its own.
        let root = store_root(domid);
        self.xs.mkdir(TxnId::NONE, &root)?;
        self.xs
            .set_perms(TxnId::NONE, &root, &[Perm::new(domid, Access::None)])?;
        self.xs.mkdir(TxnId::NONE, &bdir)?;
        self.xs.set_perms(TxnId::NONE, &bdir, &backend_owned)?;
        for (k, v) in [
            (key::FRONTEND, fdir.clone()),
            (key::FRONTEND_ID, domid.to_string()),
            (
                key::ABI_VERSION,
                pvabi::version::ABI_VERSION.to_u32().to_string(),
            ),
            (key::FEATURES, config.offered().bits().to_string()),
            (key::MAX_WINDOW_PAGES, MAX_WINDOW_PAGES.to_string()),
            (key::MAX_RING_ORDER, MAX_RING_ORDER.to_string()),
            (key::STATE, state::INIT_WAIT.to_string()),
        ] {
            let p = format!("{bdir}/{k}");
            self.xs.write(TxnId::NONE, &p, v.as_bytes())?;
            self.xs.set_perms(TxnId::NONE, &p, &backend_owned)?;
        }
        Ok(())
    }

    fn connect(&mut self, domid: u32) -> Result<Connection, String> {
        let fdir = frontend_dir(domid);
        let mut keys = BTreeMap::new();
        for k in GUEST_KEYS {
            if let Some(v) = self.read_opt(&format!("{fdir}/{k}")) {
                keys.insert(*k, v);
            }
        }
        let cfg = FrontendConfig::parse(|k| keys.get(k).cloned(), MAX_WINDOW_PAGES)?;
        let evtchn = (self.evtchns)().map_err(|e| format!("cannot open an event channel: {e}"))?;
        let console = self.console.clone();
        let sink: pvabi_host::ConsoleSink = Arc::new(move |bytes: &[u8]| {
            if let Ok(mut c) = console.lock() {
                let buf = c.entry(domid).or_default();
                buf.extend_from_slice(bytes);
                let excess = buf.len().saturating_sub(Self::CONSOLE_KEEP);
                buf.drain(..excess);
            }
        });
        let store = match &self.store {
            Some(f) => Some(f(domid)?),
            None => None,
        };
        Connection::open(
            domid,
            cfg,
            &*self.grants,
            evtchn,
            Some(sink),
            store,
            self.config_of(domid).unwrap_or(DomainConfig {
                serve: true,
                features: FEATURES,
                harness: self.harness,
            }),
        )
    }

    /// The domains xenstore lists under `/local/domain`.
    fn listed_domains(&mut self) -> crate::Result<Vec<u32>> {
        Ok(self
            .xs
            .directory(TxnId::NONE, "/local/domain")?
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect())
    }

    /// One pass over xenstore: offers new domains, connects, refuses, closes, forgets.
    pub fn reconcile(&mut self) -> Vec<BackendEvent> {
        let mut ev = Vec::new();
        let listed = match self.listed_domains() {
            Ok(l) => l,
            Err(e) => {
                ev.push(BackendEvent::XenstoreError(format!("listing domains: {e}")));
                return ev;
            }
        };
        // Gone domains (XEN-9).
        let gone: Vec<u32> = self
            .domains
            .keys()
            .copied()
            .filter(|d| !listed.contains(d))
            .collect();
        for d in gone {
            self.keep_reports(d);
            self.configs.remove(&d);
            self.domains.remove(&d);
            let _ = self
                .xs
                .remove(TxnId::NONE, &backend_dir(self.backend_domid, d));
            ev.push(BackendEvent::Gone(d));
        }
        for d in listed {
            if !self.serves(d) {
                continue;
            }
            if !self.domains.contains_key(&d) {
                let config = self.domain_config(d);
                if !config.serve {
                    self.domains.insert(d, DomainState::NotServed);
                    ev.push(BackendEvent::NotServed(d));
                    continue;
                }
                match self.offer(d, config) {
                    Ok(()) => {
                        self.configs.insert(d, config);
                        self.domains.insert(d, DomainState::Waiting);
                        ev.push(BackendEvent::Offered(d));
                    }
                    Err(e) => {
                        ev.push(BackendEvent::XenstoreError(format!("offering to {d}: {e}")));
                    }
                }
                continue;
            }
            let fstate = self.frontend_state(d);
            let waiting = matches!(self.domains.get(&d), Some(DomainState::Waiting));
            let connected = matches!(self.domains.get(&d), Some(DomainState::Connected(_)));
            if waiting && fstate == Some(u64::from(state::INITIALISED)) {
                match self.connect(d) {
                    Ok(c) => {
                        self.domains.insert(d, DomainState::Connected(c));
                        let _ = self.set_backend_state(d, state::CONNECTED);
                        ev.push(BackendEvent::Connected(d));
                    }
                    Err(why) => {
                        let bdir = backend_dir(self.backend_domid, d);
                        let _ = self.xs.write(
                            TxnId::NONE,
                            &format!("{bdir}/{}", key::ERROR),
                            why.as_bytes(),
                        );
                        let _ = self.set_backend_state(d, state::CLOSED);
                        self.domains.insert(d, DomainState::Closed(why.clone()));
                        ev.push(BackendEvent::Refused(d, why));
                    }
                }
            } else if connected
                && fstate != Some(u64::from(state::INITIALISED))
                && fstate != Some(u64::from(state::CONNECTED))
            {
                // XEN-9: unmap and unbind before the state says Closed.
                self.keep_reports(d);
                if let Some(DomainState::Connected(mut c)) = self.domains.remove(&d) {
                    c.close();
                    drop(c);
                }
                self.domains
                    .insert(d, DomainState::Closed("the guest closed".into()));
                let _ = self.set_backend_state(d, state::CLOSED);
                ev.push(BackendEvent::Closed(d));
            }
        }
        ev
    }
}

/// A guest's `state` node.
fn state_path(domid: u32) -> String {
    format!("{}/{}", frontend_dir(domid), key::STATE)
}

/// The token of the watch on a guest's `state` node.
fn state_token(domid: u32) -> String {
    format!("pvabi-state-{domid}")
}

/// A [`Backend`] reconciled on a thread of its own, with the events it reported so far: what a
/// dom0 daemon (or a test) runs.
pub struct BackendThread<X: XenStoreOps + Send + 'static> {
    backend: Arc<Mutex<Backend<X>>>,
    events: Arc<Mutex<Vec<BackendEvent>>>,
    stop: Arc<AtomicBool>,
    join: Option<JoinHandle<()>>,
}

impl<X: XenStoreOps + Send + 'static> BackendThread<X> {
    /// Starts reconciling `backend` on a thread whenever a watch on `waker` fires and at least
    /// every `period` (logging each event with `log`). `waker` is a xenstore connection of its
    /// own, used only for the watches (`@introduceDomain`, `@releaseDomain`, and each offered
    /// guest's `state`), so that waiting for one holds no lock.
    ///
    /// # Errors
    ///
    /// When a watch cannot be registered or the thread cannot be created.
    pub fn start<W: XenStoreOps + Send + 'static>(
        backend: Backend<X>,
        mut waker: W,
        period: Duration,
        log: impl Fn(&BackendEvent) + Send + 'static,
    ) -> io::Result<BackendThread<X>> {
        waker
            .watch("@introduceDomain", "pvabi-intro")
            .map_err(io::Error::other)?;
        waker
            .watch("@releaseDomain", "pvabi-release")
            .map_err(io::Error::other)?;
        let backend = Arc::new(Mutex::new(backend));
        let events = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let join = {
            let (backend, events, stop) = (backend.clone(), events.clone(), stop.clone());
            std::thread::Builder::new()
                .name("pvabi-xen-backend".into())
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        let ev = match backend.lock() {
                            Ok(mut b) => b.reconcile(),
                            Err(_) => break,
                        };
                        for e in &ev {
                            log(e);
                            // A guest's `state` is watched while it is offered (XEN-3, XEN-9).
                            match e {
                                BackendEvent::Offered(d) => {
                                    let _ = waker.watch(&state_path(*d), &state_token(*d));
                                }
                                BackendEvent::Gone(d) => {
                                    let _ = waker.unwatch(&state_path(*d), &state_token(*d));
                                }
                                _ => {}
                            }
                        }
                        if let Ok(mut l) = events.lock() {
                            l.extend(ev);
                        }
                        // The next pass: at the next watch event, or after `period`; what
                        // fired meanwhile is covered by the same pass.
                        let mut wait = period;
                        while let Ok(Some(_)) = waker.next_watch_event(Some(wait)) {
                            wait = Duration::ZERO;
                        }
                    }
                })?
        };
        Ok(BackendThread {
            backend,
            events,
            stop,
            join: Some(join),
        })
    }

    /// Runs `f` on the backend (between two passes).
    pub fn with<T>(&self, f: impl FnOnce(&mut Backend<X>) -> T) -> T {
        let mut b = self.backend.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut b)
    }

    /// Every event reported so far, in order.
    pub fn events(&self) -> Vec<BackendEvent> {
        self.events.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Waits up to `timeout` for an event `want` accepts; returns it.
    pub fn wait_for(
        &self,
        timeout: Duration,
        want: impl Fn(&BackendEvent) -> bool,
    ) -> Option<BackendEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.events().into_iter().find(|e| want(e)) {
                return Some(e);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the thread (after its current pass) and waits for it.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

impl<X: XenStoreOps + Send + 'static> Drop for BackendThread<X> {
    fn drop(&mut self) {
        self.stop();
    }
}
