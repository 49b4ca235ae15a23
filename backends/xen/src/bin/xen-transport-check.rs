//! Checks the Xen transport (spec appendix B) on a real Xen: the pvabi-xen backend in dom0 and
//! a guest side in an unprivileged domU, over real xenstored, grant tables and event channels.
//! Prints one typed line per check:
//!
//! ```text
//! XTCHECK <name> PASS|FAIL <detail>
//! XTMETRIC <name> <value>
//! XTSUMMARY passed=<n> failed=<n>
//! ```
//!
//! Usage: `xen-transport-check --role dom0|domu`.
//!
//! - `dom0`: runs the backend over xenstored's socket, `/dev/xen/gntdev` and `/dev/xen/evtchn`,
//!   boots a PV domU with `pvabi-domu-run` (scripts/xen/domu-run.sh) running this program as
//!   `domu`, reports the domU's checks as `domu_*`, and checks the backend's side: what the
//!   guest wrote reached the console, the connection went through Connected to Closed, and the
//!   domain's directory went when the domain did;
//! - `domu`: the guest side over `/dev/xen/xenbus`, `/dev/xen/gntalloc` and `/dev/xen/evtchn`.
//!
//! Exit status 0 when every check passed, 1 otherwise, 2 for a usage error.

use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pvabi::call::{
    BASE_GET_ABI_VERSION, BASE_GET_BACKEND_ID, CONSOLE_WRITE, EVENT_ALLOC, EVENT_REGISTER_PAGE,
    EVENT_SEND, POWER_SHUTDOWN, STORE_READ, STORE_WATCH, STORE_WATCH_NEXT, STORE_WRITE,
};
use pvabi::Status;
use pvabi_xen::frontend::{Frontend, FrontendOptions, UnboundChannel};
use pvabi_xen::sys::{EvtchnDev, GntAlloc, GntDev};
use pvabi_xen::transport::{
    backend_dir, store_root, xenstored_store_factory, Backend, BackendEvent, BackendThread,
    DomainFilter, EventChannel, EventChannelFactory,
};
use pvabi_xen::{TxnId, XenStore, XenStoreOps, DEFAULT_SOCKET, XENBUS_DEVICE};

/// What the domU writes to the console through the ring; dom0 looks for it.
const GREETING: &str = "pvabi over a granted ring from an unprivileged domU";

struct Runner {
    prefix: &'static str,
    passed: u32,
    failed: u32,
}

impl Runner {
    fn check(&mut self, name: &str, f: impl FnOnce() -> Result<String, String>) {
        match f() {
            Ok(d) => {
                self.passed += 1;
                println!("XTCHECK {}{name} PASS {d}", self.prefix);
            }
            Err(d) => {
                self.failed += 1;
                println!("XTCHECK {}{name} FAIL {d}", self.prefix);
            }
        }
    }
}

fn expect(what: &str, got: (Status, u64), status: Status) -> Result<u64, String> {
    if got.0 == status {
        Ok(got.1)
    } else {
        Err(format!(
            "{what}: status {} where {status} was expected",
            got.0
        ))
    }
}

fn domu(r: &mut Runner) {
    let xs = match XenStore::open_device(XENBUS_DEVICE) {
        Ok(x) => x,
        Err(e) => return r.check("open", || Err(format!("xenbus: {e}"))),
    };
    let grants = match GntAlloc::open() {
        Ok(g) => g,
        Err(e) => return r.check("open", || Err(format!("gntalloc: {e}"))),
    };
    let evtchn: Arc<dyn UnboundChannel> = match EvtchnDev::open() {
        Ok(e) => Arc::new(e),
        Err(e) => return r.check("open", || Err(format!("evtchn: {e}"))),
    };
    let t = Instant::now();
    let mut f = match Frontend::connect(xs, &grants, evtchn, &FrontendOptions::default()) {
        Ok(f) => {
            let d = f.domid();
            r.check("handshake", || {
                Ok(format!(
                    "domain {d} connected in {:.1} ms (window 16 pages, ring order 4)",
                    t.elapsed().as_secs_f64() * 1e3
                ))
            });
            f
        }
        Err(e) => return r.check("handshake", || Err(e.to_string())),
    };
    r.check("base_calls", || {
        let v = expect(
            "BASE.GET_ABI_VERSION",
            f.call(BASE_GET_ABI_VERSION.0, [0; 6])
                .map_err(|e| e.to_string())?,
            Status::SUCCESS,
        )?;
        let id = expect(
            "BASE.GET_BACKEND_ID",
            f.call(BASE_GET_BACKEND_ID.0, [0; 6])
                .map_err(|e| e.to_string())?,
            Status::SUCCESS,
        )?;
        if v != 0x0001_0000 || id != u64::from(pvabi::base::backend_id::XEN) {
            return Err(format!("version {v:#x}, backend id {id}"));
        }
        Ok(format!("ABI version {v:#x}, backend id {id} (Xen)"))
    });
    r.check("console_write_in_window", || {
        let gpa = f.data_gpa();
        let text = format!("{GREETING}\n");
        f.window()
            .write_bytes(gpa, text.as_bytes())
            .map_err(|s| format!("window write: {s}"))?;
        expect(
            "CONSOLE.WRITE",
            f.call(CONSOLE_WRITE.0, [gpa, text.len() as u64, 0, 0, 0, 0])
                .map_err(|e| e.to_string())?,
            Status::SUCCESS,
        )?;
        Ok(format!("{} bytes at {gpa:#x}", text.len()))
    });
    r.check("outside_window_is_invalid_address", || {
        let base = f.window().regions()[0].0;
        let end = base + f.window().size();
        for gpa in [0, base - 4096, end, u64::MAX - 8] {
            expect(
                &format!("CONSOLE.WRITE at {gpa:#x}"),
                f.call(CONSOLE_WRITE.0, [gpa, 8, 0, 0, 0, 0])
                    .map_err(|e| e.to_string())?,
                Status::INVALID_ADDRESS,
            )?;
        }
        Ok("4 addresses outside the window: INVALID_ADDRESS (XEN-7)".into())
    });
    r.check("ring_refuses_shutdown", || {
        expect(
            "POWER.SHUTDOWN on the ring",
            f.call(POWER_SHUTDOWN.0, [0; 6])
                .map_err(|e| e.to_string())?,
            Status::INVALID_PARAM,
        )?;
        Ok("INVALID_PARAM (RING-6)".into())
    });
    r.check("event_notifies_channel", || {
        let page = f.data_gpa() + 4096;
        f.window().zero(page, 4096).map_err(|s| s.to_string())?;
        let c = |f: &mut Frontend<XenStore>, id: pvabi::CallId, a: u64| {
            f.call(id.0, [a, 0, 0, 0, 0, 0]).map_err(|e| e.to_string())
        };
        expect(
            "EVENT.REGISTER_PAGE",
            c(&mut f, EVENT_REGISTER_PAGE, page)?,
            Status::SUCCESS,
        )?;
        let port = expect("EVENT.ALLOC", c(&mut f, EVENT_ALLOC, 0)?, Status::SUCCESS)?;
        while f
            .wait_notification(Duration::ZERO)
            .map_err(|e| e.to_string())?
        {}
        expect("EVENT.SEND", c(&mut f, EVENT_SEND, port)?, Status::SUCCESS)?;
        if f.wait_notification(Duration::from_secs(10))
            .map_err(|e| e.to_string())?
        {
            Ok(format!(
                "pvabi port {port} raised: event channel notified (XEN-8)"
            ))
        } else {
            Err("no event-channel notification within 10 s".into())
        }
    });
    r.check("store_on_own_subtree", || {
        let d = f.data_gpa() + 2 * 4096;
        let w = f.window().clone();
        let put = |gpa: u64, b: &[u8]| w.write_bytes(gpa, b).map(|_| (gpa, b.len() as u64));
        let (p, pl) = put(d, b"greeting").map_err(|s| s.to_string())?;
        let (v, vl) = put(d + 256, b"hello xenstore").map_err(|s| s.to_string())?;
        let call = |f: &mut Frontend<XenStore>, id: pvabi::CallId, a: [u64; 6]| {
            f.call(id.0, a).map_err(|e| e.to_string())
        };
        expect(
            "STORE.WRITE",
            call(&mut f, STORE_WRITE, [p, pl, v, vl, 0, 0])?,
            Status::SUCCESS,
        )?;
        // The guest's own unprivileged xenstore connection sees the node in its subtree.
        let node = format!("{}/greeting", store_root(f.domid()));
        let got = f
            .xenstore()
            .read(TxnId::NONE, &node)
            .map_err(|e| format!("xenbus read of {node}: {e}"))?;
        if got != b"hello xenstore" {
            return Err(format!("{node} holds {:?}", String::from_utf8_lossy(&got)));
        }
        // And a node written there directly is what STORE.READ returns.
        let node2 = format!("{}/direct", store_root(f.domid()));
        f.xenstore()
            .write(TxnId::NONE, &node2, b"from xenbus")
            .map_err(|e| format!("xenbus write of {node2}: {e}"))?;
        let (p2, pl2) = put(d + 512, b"direct").map_err(|s| s.to_string())?;
        let n = expect(
            "STORE.READ",
            call(&mut f, STORE_READ, [p2, pl2, d + 1024, 64, 0, 0])?,
            Status::SUCCESS,
        )?;
        let back = w.read_bytes(d + 1024, n, 64).map_err(|s| s.to_string())?;
        if back != b"from xenbus" {
            return Err(format!(
                "STORE.READ gave {:?}",
                String::from_utf8_lossy(&back)
            ));
        }
        Ok(format!(
            "STORE.WRITE and STORE.READ on {} (XEN-10)",
            store_root(f.domid())
        ))
    });
    r.check("store_watch_fires_on_xenstore_write", || {
        // The event page and port of the event check are reused: allocate a fresh port.
        let d = f.data_gpa() + 3 * 4096;
        let w = f.window().clone();
        let call = |f: &mut Frontend<XenStore>, id: pvabi::CallId, a: [u64; 6]| {
            f.call(id.0, a).map_err(|e| e.to_string())
        };
        let port = expect(
            "EVENT.ALLOC",
            call(&mut f, EVENT_ALLOC, [0; 6])?,
            Status::SUCCESS,
        )?;
        w.write_bytes(d, b"watched").map_err(|s| s.to_string())?;
        let id = expect(
            "STORE.WATCH",
            call(&mut f, STORE_WATCH, [d, 7, port, 0, 0, 0])?,
            Status::SUCCESS,
        )?;
        while f
            .wait_notification(Duration::ZERO)
            .map_err(|e| e.to_string())?
        {}
        let node = format!("{}/watched/leaf", store_root(f.domid()));
        f.xenstore()
            .write(TxnId::NONE, &node, b"x")
            .map_err(|e| format!("xenbus write of {node}: {e}"))?;
        if !f
            .wait_notification(Duration::from_secs(10))
            .map_err(|e| e.to_string())?
        {
            return Err("no notification within 10 s of the xenstore write".into());
        }
        let n = expect(
            "STORE.WATCH_NEXT",
            call(&mut f, STORE_WATCH_NEXT, [d + 256, 256, 0, 0, 0, 0])?,
            Status::SUCCESS,
        )?;
        let ev = w.read_bytes(d + 256, n, 256).map_err(|s| s.to_string())?;
        let wid = u32::from_le_bytes([ev[0], ev[1], ev[2], ev[3]]);
        let path = &ev[16..];
        if u64::from(wid) != id || path != b"watched/leaf" {
            return Err(format!(
                "event for watch {wid} on {:?}, expected {id} on watched/leaf",
                String::from_utf8_lossy(path)
            ));
        }
        Ok(format!(
            "watch {id} fired by a xenbus write: port {port} raised, event read"
        ))
    });
    r.check("many_calls", || {
        let n = 2000u64;
        let t = Instant::now();
        for i in 0..n {
            expect(
                "BASE.GET_ABI_VERSION",
                f.call(BASE_GET_ABI_VERSION.0, [i, 0, 0, 0, 0, 0])
                    .map_err(|e| e.to_string())?,
                Status::SUCCESS,
            )?;
        }
        let per = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        println!("XTMETRIC domu_ring_call_us {per:.1}");
        Ok(format!("{n} calls, the ring wrapped {} times", n / 16))
    });
    r.check("close", || {
        f.close().map_err(|e| e.to_string())?;
        Ok("the backend reached Closed after the guest's Closing (XEN-9)".into())
    });
}

fn dom0(r: &mut Runner, program: &str) {
    // Two connections: the backend's, and one that only waits for its watches.
    let (xs, waker) = match (
        XenStore::open_socket(DEFAULT_SOCKET),
        XenStore::open_socket(DEFAULT_SOCKET),
    ) {
        (Ok(x), Ok(w)) => (x, w),
        (Err(e), _) | (_, Err(e)) => {
            return r.check("open", || Err(format!("xenstored socket: {e}")))
        }
    };
    let gnt = match GntDev::open() {
        Ok(g) => g,
        Err(e) => return r.check("open", || Err(format!("gntdev: {e}"))),
    };
    let factory: EventChannelFactory =
        Arc::new(|| Ok(Arc::new(EvtchnDev::open()?) as Arc<dyn EventChannel>));
    let backend = Backend::new(xs, 0, DomainFilter::All, Arc::new(gnt), factory)
        .with_store(xenstored_store_factory(DEFAULT_SOCKET));
    let log = |e: &BackendEvent| eprintln!("backend: {e:?}");
    let mut serve = match BackendThread::start(backend, waker, Duration::from_millis(200), log) {
        Ok(t) => t,
        Err(e) => return r.check("open", || Err(format!("backend thread: {e}"))),
    };
    let t = Instant::now();
    let out = Command::new("pvabi-domu-run")
        .args([
            "--memory",
            "256",
            "--timeout",
            "150",
            program,
            "--role",
            "domu",
        ])
        .output();
    let domu_secs = t.elapsed().as_secs_f64();
    match out {
        Ok(o) => {
            let stdout = String::from_utf8_lossy(&o.stdout);
            for line in stdout.lines() {
                if let Some(rest) = line.strip_prefix("XTCHECK ") {
                    let pass = rest.split(' ').nth(1) == Some("PASS");
                    if pass {
                        r.passed += 1;
                    } else {
                        r.failed += 1;
                    }
                    println!("XTCHECK domu_{rest}");
                } else if let Some(m) = line.strip_prefix("XTMETRIC ") {
                    println!("XTMETRIC {m}");
                } else if !line.starts_with("XTSUMMARY") {
                    println!("domu: {line}");
                }
            }
            let code = o.status.code();
            r.check("domu_completed", || {
                if code == Some(0) {
                    Ok(format!("the domU ran and exited 0 in {domu_secs:.1} s"))
                } else {
                    Err(format!(
                        "pvabi-domu-run exit {code:?}: {}",
                        String::from_utf8_lossy(&o.stderr)
                    ))
                }
            });
        }
        Err(e) => r.check("domu_completed", || Err(format!("pvabi-domu-run: {e}"))),
    }
    // Let the backend see the domain go.
    let gone = serve
        .wait_for(Duration::from_secs(10), |e| {
            matches!(e, BackendEvent::Gone(_))
        })
        .and_then(|e| match e {
            BackendEvent::Gone(d) => Some(d),
            _ => None,
        });
    serve.stop();
    let events = serve.events();
    let connected = events.iter().find_map(|e| match e {
        BackendEvent::Connected(d) => Some(*d),
        _ => None,
    });
    r.check("backend_sequence", || {
        let d = connected.ok_or(format!("no domain connected: {events:?}"))?;
        let want = [
            BackendEvent::Offered(d),
            BackendEvent::Connected(d),
            BackendEvent::Closed(d),
        ];
        let mut it = events.iter();
        for w in &want {
            if !it.any(|e| e == w) {
                return Err(format!("{w:?} missing in order from {events:?}"));
            }
        }
        if events.iter().any(|e| {
            matches!(
                e,
                BackendEvent::Refused(..) | BackendEvent::XenstoreError(_)
            )
        }) {
            return Err(format!("unexpected events: {events:?}"));
        }
        Ok(format!("domain {d}: Offered, Connected, Closed"))
    });
    r.check("backend_console", || {
        let d = connected.ok_or("no domain connected")?;
        let c = String::from_utf8_lossy(&serve.with(|b| b.console(d))).into_owned();
        if c.contains(GREETING) {
            Ok(format!(
                "{} console bytes from domain {d} via CONSOLE.WRITE",
                c.len()
            ))
        } else {
            Err(format!("console of domain {d}: {c:?}"))
        }
    });
    r.check("backend_forgets_gone_domain", || {
        let d = gone.ok_or("the backend did not see the domain go within 10 s")?;
        let (tracked, state) = serve.with(|b| {
            (
                b.domain(d).is_some(),
                b.xenstore()
                    .read(TxnId::NONE, &format!("{}/state", backend_dir(0, d))),
            )
        });
        if tracked {
            return Err(format!("domain {d} still tracked"));
        }
        match state {
            Ok(v) => Err(format!(
                "backend state node still there: {:?}",
                String::from_utf8_lossy(&v)
            )),
            Err(_) => Ok(format!(
                "domain {d} gone: backend directory removed (XEN-9)"
            )),
        }
    });
    r.check("no_grant_mappings_left", || {
        let maps = std::fs::read_to_string("/proc/self/maps").map_err(|e| e.to_string())?;
        let n = maps
            .lines()
            .filter(|l| l.contains("/dev/xen/gntdev"))
            .count();
        if n == 0 {
            Ok("no /dev/xen/gntdev mapping in the backend process".into())
        } else {
            Err(format!("{n} gntdev mappings left"))
        }
    });
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let role = match args.iter().position(|a| a == "--role") {
        Some(i) => args.get(i + 1).cloned().unwrap_or_default(),
        None => String::new(),
    };
    let mut r = Runner {
        prefix: "",
        passed: 0,
        failed: 0,
    };
    match role.as_str() {
        "domu" => domu(&mut r),
        "dom0" => {
            let program = std::env::current_exe()
                .ok()
                .and_then(|p| p.to_str().map(String::from))
                .unwrap_or_else(|| args[0].clone());
            dom0(&mut r, &program)
        }
        _ => {
            eprintln!("usage: xen-transport-check --role dom0|domu");
            return ExitCode::from(2);
        }
    }
    println!("XTSUMMARY passed={} failed={}", r.passed, r.failed);
    if r.failed == 0 && r.passed > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
