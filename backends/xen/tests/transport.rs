//! The Xen transport (spec appendix B) end to end in one process: the real backend and guest
//! side code over the in-memory xenstore, grant table and event channels of
//! `pvabi_xen::testing`. `tests/real_xen_transport.rs` runs the same code on a real Xen.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pvabi::call::{
    BASE_GET_ABI_VERSION, BASE_GET_BACKEND_ID, BASE_GET_FEATURES, BASE_RING_REGISTER,
    CONSOLE_WRITE, EVENT_ALLOC, EVENT_REGISTER_PAGE, EVENT_SEND, POWER_SHUTDOWN, STORE_LIST,
    STORE_READ, STORE_REMOVE, STORE_TXN_COMMIT, STORE_TXN_START, STORE_WRITE,
};
use pvabi::ring::RingHeader;
use pvabi::Status;
use pvabi_xen::frontend::{Frontend, FrontendError, FrontendOptions, UnboundChannel};
use pvabi_xen::testing::{MemEvtchn, MemGrants, MemXenStore};
use pvabi_xen::transport::{
    backend_dir, frontend_dir, state, store_root, Backend, BackendEvent, BackendThread,
    DomainFilter, DomainState, EventChannel, EventChannelFactory, SharedStore, StoreFactory,
    FEATURES,
};
use pvabi_xen::{Access, GuestStore, Perm, TxnId, XenStoreOps};

struct World {
    xs: MemXenStore,
    grants: MemGrants,
    bus: MemEvtchn,
    backend: BackendThread<MemXenStore>,
}

impl World {
    fn new(domains: &[u32]) -> World {
        Self::with_setup(domains, |_| {})
    }

    /// A world whose store `setup` fills before the backend's first pass.
    fn with_setup(domains: &[u32], setup: impl FnOnce(&mut MemXenStore)) -> World {
        let mut all = vec![0];
        all.extend_from_slice(domains);
        let xs = MemXenStore::new(&all);
        setup(&mut xs.connect(0));
        let grants = MemGrants::new(4096).expect("memfd");
        let bus = MemEvtchn::default();
        let factory: EventChannelFactory = {
            let bus = bus.clone();
            Arc::new(move || Ok(Arc::new(bus.open(0)) as Arc<dyn EventChannel>))
        };
        let store: StoreFactory = {
            let xs = xs.clone();
            Arc::new(move |d| {
                // As the real factory: through the encoding xenstored needs.
                Ok(Arc::new(Mutex::new(GuestStore::new(
                    pvabi_xen::encode::EncodedStore::new(xs.connect(0)),
                    store_root(d),
                    d,
                    0,
                ))) as SharedStore)
            })
        };
        let backend = Backend::new(
            xs.connect(0),
            0,
            DomainFilter::All,
            Arc::new(grants.as_domain(0)),
            factory,
        )
        .with_store(store)
        .with_harness(true);
        let backend =
            BackendThread::start(backend, xs.connect(0), Duration::from_millis(2), |_| {})
                .expect("backend thread");
        World {
            xs,
            grants,
            bus,
            backend,
        }
    }

    /// Waits for an event `want` accepts among all the backend reported; a xenstore error
    /// reported first fails the test.
    fn wait_event(&self, want: impl Fn(&BackendEvent) -> bool) -> BackendEvent {
        let e = self
            .backend
            .wait_for(Duration::from_secs(20), |e| {
                want(e) || matches!(e, BackendEvent::XenstoreError(_))
            })
            .expect("the backend did not report the expected event in time");
        if let BackendEvent::XenstoreError(m) = &e {
            panic!("backend: {m}");
        }
        e
    }

    fn connect(
        &self,
        domid: u32,
        opts: FrontendOptions,
    ) -> Result<Frontend<MemXenStore>, FrontendError> {
        let evtchn: Arc<dyn UnboundChannel> = Arc::new(self.bus.open(domid));
        Frontend::connect(
            self.xs.connect(domid),
            &self.grants.as_domain(domid),
            evtchn,
            &FrontendOptions {
                domid: Some(domid),
                timeout: Duration::from_secs(10),
                ..opts
            },
        )
    }
}

fn call(f: &mut Frontend<MemXenStore>, id: pvabi::CallId, args: [u64; 6]) -> (Status, u64) {
    f.call(id.0, args).expect("the call completes")
}

fn read(xs: &mut MemXenStore, p: &str) -> String {
    String::from_utf8(
        xs.read(TxnId::NONE, p)
            .unwrap_or_else(|e| panic!("{p}: {e}")),
    )
    .expect("utf8")
}

#[test]
fn handshake_writes_both_directories_with_permissions() {
    // XEN-1.
    let w = World::new(&[5]);
    w.wait_event(|e| *e == BackendEvent::Offered(5));
    let mut xs = w.xs.connect(0);
    let f = frontend_dir(5);
    let b = backend_dir(0, 5);
    assert_eq!(read(&mut xs, &format!("{f}/backend")), b);
    assert_eq!(read(&mut xs, &format!("{f}/backend-id")), "0");
    assert_eq!(read(&mut xs, &format!("{f}/state")), "1");
    assert_eq!(read(&mut xs, &format!("{b}/frontend")), f);
    assert_eq!(read(&mut xs, &format!("{b}/frontend-id")), "5");
    assert_eq!(read(&mut xs, &format!("{b}/abi-version")), "65536");
    assert_eq!(
        read(&mut xs, &format!("{b}/features")),
        (FEATURES | pvabi::Features::HARNESS).bits().to_string()
    );
    assert_eq!(read(&mut xs, &format!("{b}/max-window-pages")), "1024");
    assert_eq!(read(&mut xs, &format!("{b}/max-ring-order")), "8");
    assert_eq!(read(&mut xs, &format!("{b}/state")), "2");
    assert_eq!(
        xs.get_perms(TxnId::NONE, &f).expect("perms"),
        vec![Perm::new(5, Access::None), Perm::new(0, Access::Read)]
    );
    assert_eq!(
        xs.get_perms(TxnId::NONE, &b).expect("perms"),
        vec![Perm::new(0, Access::None), Perm::new(5, Access::Read)]
    );
    // The guest may write its own directory but not the backend's.
    let mut guest = w.xs.connect(5);
    guest
        .write(TxnId::NONE, &format!("{f}/ring-order"), b"2")
        .expect("own directory");
    assert!(guest
        .write(TxnId::NONE, &format!("{b}/state"), b"4")
        .is_err());
    assert_eq!(read(&mut xs, &format!("{b}/state")), "2");
    // Another domain sees neither.
    w.xs.connect(0)
        .write(TxnId::NONE, "/local/domain/7", b"")
        .expect("mkdir");
    let mut other = w.xs.connect(7);
    assert!(other.read(TxnId::NONE, &format!("{f}/backend")).is_err());
}

#[test]
fn connected_guest_calls_through_the_granted_ring() {
    // XEN-2, XEN-5, XEN-6, XEN-7, XEN-8.
    let w = World::new(&[5]);
    w.wait_event(|e| *e == BackendEvent::Offered(5));
    let mut f = w.connect(5, FrontendOptions::default()).expect("connects");
    w.wait_event(|e| *e == BackendEvent::Connected(5));
    assert_eq!(
        call(&mut f, BASE_GET_ABI_VERSION, [0; 6]),
        (Status::SUCCESS, 0x0001_0000)
    );
    assert_eq!(
        call(&mut f, BASE_GET_BACKEND_ID, [0; 6]),
        (Status::SUCCESS, u64::from(pvabi::base::backend_id::XEN))
    );
    assert_eq!(
        call(&mut f, BASE_GET_FEATURES, [0; 6]),
        (
            Status::SUCCESS,
            (FEATURES | pvabi::Features::HARNESS).bits()
        )
    );
    // A buffer in the window reaches the console.
    let text = b"hello from the window\n";
    let buf = f.data_gpa();
    f.window().write_bytes(buf, text).expect("window write");
    assert_eq!(
        call(&mut f, CONSOLE_WRITE, [buf, text.len() as u64, 0, 0, 0, 0]).0,
        Status::SUCCESS
    );
    let console = w.backend.with(|b| b.console(5));
    assert!(console.ends_with(text), "{console:?}");
    // XEN-7: addresses outside the window are not guest RAM, on either side.
    let base = f.window().regions()[0].0;
    let end = base + f.window().size();
    for gpa in [0, base - 4096, end, end - 4, u64::MAX - 8] {
        assert_eq!(
            call(&mut f, CONSOLE_WRITE, [gpa, 8, 0, 0, 0, 0]).0,
            Status::INVALID_ADDRESS,
            "CONSOLE.WRITE at {gpa:#x}"
        );
    }
    // RING-6 on this transport: calls that do not return, and ring registration, are refused.
    assert_eq!(
        call(&mut f, POWER_SHUTDOWN, [0; 6]).0,
        Status::INVALID_PARAM
    );
    assert_eq!(
        call(&mut f, BASE_RING_REGISTER, [base, 0, 0, 0, 0, 0]).0,
        Status::INVALID_PARAM
    );
    // XEN-8: an event raised for the guest notifies its event channel.
    let page = buf + 4096;
    f.window().zero(page, 4096).expect("zero");
    assert_eq!(
        call(&mut f, EVENT_REGISTER_PAGE, [page, 0, 0, 0, 0, 0]).0,
        Status::SUCCESS
    );
    let (s, port) = call(&mut f, EVENT_ALLOC, [0; 6]);
    assert_eq!(s, Status::SUCCESS);
    while f.wait_notification(Duration::ZERO).expect("wait") {}
    assert_eq!(
        call(&mut f, EVENT_SEND, [port, 0, 0, 0, 0, 0]).0,
        Status::SUCCESS
    );
    assert!(
        f.wait_notification(Duration::from_secs(5)).expect("wait"),
        "no notification after EVENT.SEND to self"
    );
    let served = w.backend.with(|b| match b.domain(5) {
        Some(DomainState::Connected(c)) => (c.requests_served(), c.notifications_sent()),
        other => panic!("not connected: {other:?}"),
    });
    assert!(served.0 >= 14 && served.1 >= 1, "{served:?}");
    // Many calls in a row wrap the ring (order 4: 16 slots).
    for i in 0..100u64 {
        let (s, v) = call(&mut f, BASE_GET_ABI_VERSION, [i, 0, 0, 0, 0, 0]);
        assert_eq!((s, v), (Status::SUCCESS, 0x0001_0000));
    }
}

#[test]
fn invalid_handshakes_are_refused_and_nothing_stays_mapped() {
    // XEN-3, XEN-4, XEN-11: each bad guest gets Closed with a reason; a good one still connects.
    let w = World::new(&[5, 6, 8, 9, 10, 11, 12, 13, 14, 15]);
    let bad: &[(u32, FrontendOptions, &str)] = &[
        (5, opts(&[("window-pages", "0")]), "window-pages"),
        (6, opts(&[("window-pages", "1025")]), "window-pages"),
        (8, opts(&[("ring-order", "9")]), "ring-order"),
        (9, opts(&[("ring-gpa", "4097")]), "aligned"),
        (10, opts(&[("ring-gpa", "4096")]), "window"),
        (11, opts(&[("window-gfn", "-1")]), "decimal"),
        (12, opts(&[("event-channel", "007")]), "leading zero"),
        (
            13,
            opts(&[("window-index-ref", "4294967295")]),
            "index page",
        ),
        (
            14,
            FrontendOptions {
                skip_ring_header: true,
                ..FrontendOptions::default()
            },
            "RING-12",
        ),
    ];
    for (d, o, why) in bad {
        w.wait_event(|e| *e == BackendEvent::Offered(*d));
        let before = w.bus.port_count();
        match w.connect(*d, o.clone()) {
            Err(FrontendError::Refused(reason)) => {
                assert!(
                    reason.contains(why),
                    "domain {d}: reason {reason:?} lacks {why:?}"
                )
            }
            other => panic!("domain {d}: expected a refusal, got {other:?}"),
        }
        let mut xs = w.xs.connect(0);
        assert_eq!(read(&mut xs, &format!("{}/state", backend_dir(0, *d))), "6");
        assert!(w
            .backend
            .with(|b| matches!(b.domain(*d), Some(DomainState::Closed(_)))));
        // The guest's handle (and its unbound port) went with the failed connect, and the
        // backend keeps no binding of its own.
        assert_eq!(w.bus.port_count(), before, "domain {d}");
    }
    let mut good = w
        .connect(15, FrontendOptions::default())
        .expect("a good guest connects");
    assert_eq!(
        call(&mut good, BASE_GET_ABI_VERSION, [0; 6]),
        (Status::SUCCESS, 0x0001_0000)
    );
}

fn opts(o: &[(&str, &str)]) -> FrontendOptions {
    FrontendOptions {
        overrides: o
            .iter()
            .map(|(k, v)| ((*k).to_string(), v.as_bytes().to_vec()))
            .collect(),
        ..FrontendOptions::default()
    }
}

#[test]
fn closing_stops_the_ring_and_a_gone_domain_is_forgotten() {
    // XEN-9.
    let w = World::new(&[5]);
    w.wait_event(|e| *e == BackendEvent::Offered(5));
    let mut f = w.connect(5, FrontendOptions::default()).expect("connects");
    assert_eq!(
        call(&mut f, BASE_GET_ABI_VERSION, [0; 6]).0,
        Status::SUCCESS
    );
    let ports = w.bus.port_count();
    f.close().expect("closes");
    w.wait_event(|e| *e == BackendEvent::Closed(5));
    // The backend's binding is gone; the guest's port stays its own.
    assert_eq!(w.bus.port_count(), ports - 1);
    // A request posted after Closed is never consumed, and the ring is not written.
    let ring = f.window().regions()[0].0;
    let before = f.window().read_bytes(ring, 4096, 4096).expect("ring");
    match f.call(BASE_GET_ABI_VERSION.0, [0; 6]) {
        Err(FrontendError::Timeout(_)) | Err(FrontendError::Io(_)) => {}
        other => panic!("a closed ring answered: {other:?}"),
    }
    let after = f.window().read_bytes(ring, 4096, 4096).expect("ring");
    assert_eq!(
        before[RingHeader::REQ_CONS..RingHeader::REQ_CONS + 4],
        after[RingHeader::REQ_CONS..RingHeader::REQ_CONS + 4]
    );
    assert_eq!(
        before[RingHeader::CMP_PROD..RingHeader::CMP_PROD + 4],
        after[RingHeader::CMP_PROD..RingHeader::CMP_PROD + 4]
    );
    // The domain goes away: the backend directory goes with it.
    w.xs.destroy_domain(5);
    w.wait_event(|e| *e == BackendEvent::Gone(5));
    assert!(w
        .xs
        .connect(0)
        .read(TxnId::NONE, &format!("{}/state", backend_dir(0, 5)))
        .is_err());
    assert!(w.backend.with(|b| b.domain(5).is_none()));
}

#[test]
fn a_hostile_guest_does_not_disturb_another() {
    // XEN-11: one guest scribbles its ring and keys while connected; the other keeps working.
    let w = World::new(&[5, 6]);
    let mut a = w.connect(5, FrontendOptions::default()).expect("a");
    let mut b = w.connect(6, FrontendOptions::default()).expect("b");
    let ring = a.window().regions()[0].0;
    // Counters far out of range (RING-9), then keys rewritten after Connected (XEN-3).
    a.window()
        .store_u32(
            ring + RingHeader::REQ_PROD as u64,
            0xdead_beef,
            Ordering::Release,
        )
        .expect("scribble");
    let _ = a.xenstore().write(
        TxnId::NONE,
        &format!("{}/window-pages", frontend_dir(5)),
        b"1000000",
    );
    for _ in 0..20 {
        let _ = EventChannel::notify(&w.bus.open(5), 0);
    }
    for i in 0..50u64 {
        assert_eq!(
            call(&mut b, BASE_GET_ABI_VERSION, [i, 0, 0, 0, 0, 0]),
            (Status::SUCCESS, 0x0001_0000)
        );
    }
    assert!(w
        .backend
        .with(|b| matches!(b.domain(5), Some(DomainState::Connected(_)))));
    let _ = state::CONNECTED;
}

#[test]
fn store_calls_run_on_the_guest_xenstore_subtree() {
    // XEN-10: STORE paths name nodes under /local/domain/D/pvabi, both ways.
    let w = World::new(&[5]);
    let mut f = w.connect(5, FrontendOptions::default()).expect("connects");
    let d = f.data_gpa();
    let put = |f: &Frontend<MemXenStore>, gpa: u64, b: &[u8]| {
        f.window().write_bytes(gpa, b).expect("window write");
        (gpa, b.len() as u64)
    };
    let (p, pl) = put(&f, d, b"config/mode");
    let (v, vl) = put(&f, d + 256, b"fast");
    assert_eq!(
        call(&mut f, STORE_WRITE, [p, pl, v, vl, 0, 0]).0,
        Status::SUCCESS
    );
    let mut dom0 = w.xs.connect(0);
    assert_eq!(
        read(&mut dom0, &format!("{}/config/mode", store_root(5))),
        "fast"
    );
    // A node the host writes in xenstore is what the guest reads.
    dom0.write(
        TxnId::NONE,
        &format!("{}/config/size", store_root(5)),
        b"4096",
    )
    .expect("host write");
    let (p2, pl2) = put(&f, d + 512, b"config/size");
    let buf = d + 1024;
    assert_eq!(
        call(&mut f, STORE_READ, [p2, pl2, buf, 64, 0, 0]),
        (Status::SUCCESS, 4)
    );
    assert_eq!(f.window().read_bytes(buf, 4, 4).expect("read"), b"4096");
    // LIST: ascending names, each NUL-terminated.
    let (p3, pl3) = put(&f, d + 1536, b"config");
    let (s, n) = call(&mut f, STORE_LIST, [p3, pl3, buf, 64, 0, 0]);
    assert_eq!(s, Status::SUCCESS);
    assert_eq!(
        f.window().read_bytes(buf, n, 64).expect("list"),
        b"mode\0size\0"
    );
    // Paths cannot leave the subtree; buffers outside the window are refused before xenstore.
    let (bad, bl) = put(&f, d + 2048, b"../../0/secret");
    assert_eq!(
        call(&mut f, STORE_WRITE, [bad, bl, v, vl, 0, 0]).0,
        Status::INVALID_PARAM
    );
    assert_eq!(
        call(&mut f, STORE_WRITE, [0, 4, v, vl, 0, 0]).0,
        Status::INVALID_ADDRESS
    );
    assert!(dom0.read(TxnId::NONE, "/local/domain/0/secret").is_err());
    // A transaction and REMOVE, then NOT_FOUND.
    let (s, t) = call(&mut f, STORE_TXN_START, [0; 6]);
    assert_eq!(s, Status::SUCCESS);
    assert_eq!(
        call(&mut f, STORE_REMOVE, [p, pl, t, 0, 0, 0]).0,
        Status::SUCCESS
    );
    assert_eq!(
        call(&mut f, STORE_TXN_COMMIT, [t, 0, 0, 0, 0, 0]).0,
        Status::SUCCESS
    );
    assert!(dom0
        .read(TxnId::NONE, &format!("{}/config/mode", store_root(5)))
        .is_err());
    assert_eq!(
        call(&mut f, STORE_READ, [p, pl, buf, 64, 0, 0]).0,
        Status::NOT_FOUND
    );
}

#[test]
fn conformance_suite_over_the_transport() {
    // The whole suite, in this process, over the in-memory transport: every case passes or
    // is skipped with its reason (the certification run does the same on a real Xen).
    let w = World::new(&[5]);
    let f = w
        .connect(
            5,
            FrontendOptions {
                window_gfn: 0,
                window_pages: 512,
                ..FrontendOptions::default()
            },
        )
        .expect("connects");
    let arena = 2 * 4096;
    let sum = pvabi_xen::suite::run_suite_over(f, arena, None).expect("suite runs");
    let reports = w.backend.with(|b| b.take_reports(5));
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| r.outcome == pvabi::harness::Outcome::FAILED)
        .map(|r| format!("{} [{}]: {}", r.name, r.clauses.join(","), r.detail))
        .collect();
    let skipped = reports
        .iter()
        .filter(|r| r.outcome == pvabi::harness::Outcome::SKIPPED)
        .count();
    eprintln!(
        "suite over the transport: {sum:?}; {} records, {skipped} skipped",
        reports.len()
    );
    for r in reports
        .iter()
        .filter(|r| r.outcome == pvabi::harness::Outcome::SKIPPED)
    {
        eprintln!("skipped {}: {}", r.name, r.detail);
    }
    assert!(
        failed.is_empty(),
        "{} failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
    assert!(sum.passed > 100, "{sum:?}");
    assert_eq!(
        reports.last().map(|r| r.outcome),
        Some(pvabi::harness::Outcome::END)
    );
}

#[test]
fn per_domain_configuration_from_xenstore() {
    // Domain 5 ("skipme") is not served; domain 6 ("small") gets only GRANT and no HARNESS;
    // domain 7 ("plain") has no configuration and gets the defaults.
    let cfg = "/local/domain/0/pvabi-config";
    let w = World::with_setup(&[5, 6, 7], |xs| {
        for (d, name) in [(5, "skipme"), (6, "small"), (7, "plain")] {
            xs.write(
                TxnId::NONE,
                &format!("/local/domain/{d}/name"),
                name.as_bytes(),
            )
            .expect("name");
        }
        xs.write(TxnId::NONE, &format!("{cfg}/skipme/serve"), b"0")
            .expect("cfg");
        let grant = pvabi::Features::GRANT.bits().to_string();
        xs.write(
            TxnId::NONE,
            &format!("{cfg}/small/features"),
            grant.as_bytes(),
        )
        .expect("cfg");
        xs.write(TxnId::NONE, &format!("{cfg}/small/harness"), b"0")
            .expect("cfg");
    });
    w.wait_event(|e| *e == BackendEvent::NotServed(5));
    w.wait_event(|e| *e == BackendEvent::Offered(7));
    let mut dom0 = w.xs.connect(0);
    assert!(dom0
        .read(TxnId::NONE, &format!("{}/state", backend_dir(0, 5)))
        .is_err());
    assert!(dom0
        .read(TxnId::NONE, &format!("{}/backend", frontend_dir(5)))
        .is_err());
    // RING_GATE stays on: it is the transport's gate.
    let small_features = pvabi::Features::GRANT | pvabi::Features::RING_GATE;
    assert_eq!(
        read(&mut dom0, &format!("{}/features", backend_dir(0, 6))),
        small_features.bits().to_string()
    );
    assert_eq!(
        read(&mut dom0, &format!("{}/features", backend_dir(0, 7))),
        (FEATURES | pvabi::Features::HARNESS).bits().to_string()
    );
    let mut small = w.connect(6, FrontendOptions::default()).expect("connects");
    assert_eq!(
        call(&mut small, BASE_GET_FEATURES, [0; 6]),
        (Status::SUCCESS, small_features.bits())
    );
    // Without the STORE_TXN feature a transaction is NOT_SUPPORTED (STORE-36).
    assert_eq!(
        call(&mut small, STORE_TXN_START, [0; 6]).0,
        Status::NOT_SUPPORTED
    );
}
