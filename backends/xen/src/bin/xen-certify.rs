//! The Xen certification payload: runs the conformance suite in an unprivileged domU over the
//! Xen transport (spec appendix B), served by the pvabi-xen backend in dom0, and prints the
//! HARNESS records the backend received, one per line:
//!
//! ```text
//! XENREPORT <outcome> <vcpu> <clauses> <name> <detail>
//! XENCERT <key> <value>
//! ```
//!
//! The record part is `pvabi_host::Report::to_line`; `XENCERT` lines carry facts about the run
//! (`domu_exit`, `domu_seconds`, `records`, `backend_error`), text values as
//! `pvabi_host::lines::encode_field`.
//!
//! Usage: `xen-certify --role dom0|domu [--filter PREFIX]`. `dom0` runs the backend and boots
//! the domU with `pvabi-domu-run` (scripts/xen/domu-run.sh) running this program as `domu`.
//!
//! Exit status 0 when the run completed (whatever the records say), 1 otherwise, 2 for a usage
//! error.

use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pvabi_host::lines::encode_field;
use pvabi_xen::frontend::{Frontend, FrontendOptions, UnboundChannel};
use pvabi_xen::sys::{EvtchnDev, GntAlloc, GntDev, PAGE_SIZE};
use pvabi_xen::transport::{
    xenstored_store_factory, Backend, BackendEvent, BackendThread, DomainFilter, EventChannel,
    EventChannelFactory,
};
use pvabi_xen::{XenStore, DEFAULT_SOCKET, XENBUS_DEVICE};

/// Pages of the window the suite runs in (the gntalloc device grants at most 1024 pages per
/// domain by default, and the index page needs one more).
const WINDOW_PAGES: u32 = 512;

fn domu(filter: Option<&str>) -> ExitCode {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        println!(
            "XENCERT domu_error {}",
            encode_field(&format!("{what}: {e}"))
        );
        ExitCode::FAILURE
    };
    let xs = match XenStore::open_device(XENBUS_DEVICE) {
        Ok(x) => x,
        Err(e) => return fail("xenbus", &e),
    };
    let grants = match GntAlloc::open() {
        Ok(g) => g,
        Err(e) => return fail("gntalloc", &e),
    };
    let evtchn: Arc<dyn UnboundChannel> = match EvtchnDev::open() {
        Ok(e) => Arc::new(e),
        Err(e) => return fail("evtchn", &e),
    };
    let opts = FrontendOptions {
        window_gfn: 0,
        window_pages: WINDOW_PAGES,
        ..FrontendOptions::default()
    };
    let f = match Frontend::connect(xs, &grants, evtchn, &opts) {
        Ok(f) => f,
        Err(e) => return fail("handshake", &e),
    };
    let t = Instant::now();
    // The ring and the frontend's own buffers take the first pages; the suite gets the rest.
    let arena = 8 * PAGE_SIZE as u64;
    match pvabi_xen::suite::run_suite_over(f, arena, filter) {
        Ok(sum) => {
            println!(
                "XENCERT domu_summary passed={} failed={} skipped={} unreported={} seconds={:.1}",
                sum.passed,
                sum.failed,
                sum.skipped,
                sum.unreported,
                t.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail("suite", &e),
    }
}

fn dom0(program: &str, filter: Option<&str>) -> ExitCode {
    // Two connections: the backend's, and one that only waits for its watches.
    let (xs, waker) = match (
        XenStore::open_socket(DEFAULT_SOCKET),
        XenStore::open_socket(DEFAULT_SOCKET),
    ) {
        (Ok(x), Ok(w)) => (x, w),
        (Err(e), _) | (_, Err(e)) => {
            println!(
                "XENCERT backend_error {}",
                encode_field(&format!("xenstored: {e}"))
            );
            return ExitCode::FAILURE;
        }
    };
    let gnt = match GntDev::open() {
        Ok(g) => g,
        Err(e) => {
            println!(
                "XENCERT backend_error {}",
                encode_field(&format!("gntdev: {e}"))
            );
            return ExitCode::FAILURE;
        }
    };
    let factory: EventChannelFactory =
        Arc::new(|| Ok(Arc::new(EvtchnDev::open()?) as Arc<dyn EventChannel>));
    let backend = Backend::new(xs, 0, DomainFilter::All, Arc::new(gnt), factory)
        .with_store(xenstored_store_factory(DEFAULT_SOCKET))
        .with_harness(true);
    let mut serve = match BackendThread::start(backend, waker, Duration::from_millis(200), |_| {}) {
        Ok(t) => t,
        Err(e) => {
            println!(
                "XENCERT backend_error {}",
                encode_field(&format!("backend thread: {e}"))
            );
            return ExitCode::FAILURE;
        }
    };
    let mut args = vec![
        "--memory".to_string(),
        "256".into(),
        "--timeout".into(),
        "600".into(),
        program.into(),
        "--role".into(),
        "domu".into(),
    ];
    if let Some(f) = filter {
        args.extend(["--filter".into(), f.into()]);
    }
    let t = Instant::now();
    let out = Command::new("pvabi-domu-run").args(&args).output();
    println!("XENCERT domu_seconds {:.1}", t.elapsed().as_secs_f64());
    match &out {
        Ok(o) => {
            for line in String::from_utf8_lossy(&o.stdout).lines() {
                if line.starts_with("XENCERT ") {
                    println!("{line}");
                } else {
                    println!("domu: {line}");
                }
            }
            println!("XENCERT domu_exit {}", o.status.code().unwrap_or(-1));
            if !o.status.success() {
                println!(
                    "XENCERT domu_stderr {}",
                    encode_field(String::from_utf8_lossy(&o.stderr).trim())
                );
            }
        }
        Err(e) => println!("XENCERT domu_exit -1 {}", encode_field(&e.to_string())),
    }
    // Wait for the backend to see the domain close or go, then collect its records.
    let domid = serve
        .wait_for(Duration::from_secs(10), |e| {
            matches!(e, BackendEvent::Gone(_) | BackendEvent::Closed(_))
        })
        .and_then(|e| match e {
            BackendEvent::Gone(d) | BackendEvent::Closed(d) => Some(d),
            _ => None,
        });
    serve.stop();
    for e in serve.events() {
        println!("XENCERT backend_event {}", encode_field(&format!("{e:?}")));
    }
    let Some(domid) = domid else {
        println!(
            "XENCERT backend_error {}",
            encode_field("no domain connected and went away")
        );
        return ExitCode::FAILURE;
    };
    let reports = serve.with(|b| b.take_reports(domid));
    println!("XENCERT records {}", reports.len());
    for r in &reports {
        println!("XENREPORT {}", r.to_line());
    }
    if out.is_ok_and(|o| o.status.success()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let filter = opt("--filter");
    match opt("--role").as_deref() {
        Some("domu") => domu(filter.as_deref()),
        Some("dom0") => {
            let program = std::env::current_exe()
                .ok()
                .and_then(|p| p.to_str().map(String::from))
                .unwrap_or_else(|| args[0].clone());
            dom0(&program, filter.as_deref())
        }
        _ => {
            eprintln!("usage: xen-certify --role dom0|domu [--filter PREFIX]");
            ExitCode::from(2)
        }
    }
}
