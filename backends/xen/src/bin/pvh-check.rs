//! The dom0 side of the PVH guest test: boots the bare-metal PVH kernel of
//! `backends/xen/tests/guests/pvh` as a domU with `pvabi-pvh-run --paused`, twice:
//!
//! - `refused`: this program plays the backend for the handshake's first part (`XEN-1`, the
//!   backend directory in InitWait), unpauses the domain, waits for the guest's `state` = 3,
//!   validates the guest's keys as `XEN-3` says, maps the window through /dev/xen/gntdev to see
//!   the ring header the guest wrote, and then refuses the connection (`XEN-4`: `error`,
//!   `state` = 6), so that the guest reports the refusal and finishes;
//! - `backend`: the pvabi-xen backend ([`pvabi_xen::transport::Backend`] over xenstored,
//!   /dev/xen/gntdev and /dev/xen/evtchn) serves the domain: it offers, connects, serves the
//!   guest's ring calls and closes; this program checks the same keys and grants, the backend's
//!   events, that the guest's CONSOLE.WRITE through the ring reached the backend and that its
//!   STORE.WRITE reached its xenstore subtree `/local/domain/D/pvabi` (`XEN-10`);
//! - `invalid`: the kernel, told so on its command line (`bad-ring-order`), publishes a ring
//!   order above the backend's `max-ring-order`; the pvabi-xen backend must refuse (`XEN-3`,
//!   `XEN-4`) without connecting, and the kernel reports the backend's `error`.
//!
//! The guest's console comes back as `PVH-LOG <scenario> <line>`.
//!
//! The PVH image is appended to this program's own file (the test does that): the last 16 bytes
//! are the image length (`u64` little-endian) and the magic `PVHIMAGE`.
//!
//! Output lines:
//!
//! ```text
//! DOM0-CHECK <scenario>.<name> ok|fail <detail>
//! PVH-TIMING <scenario>.<name> <seconds>
//! PVH-LOG <scenario> <a line of the guest's console>
//! BACKEND-EVENT <scenario> <event>
//! ```
//!
//! Usage: `pvh-check [refused|backend|invalid]...` (default: all three, in that order). Exit status 0 when
//! every dom0 check passed, 1 otherwise.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pvabi::ring::RingHeader;
use pvabi_xen::sys::{EvtchnDev, GntDev};
use pvabi_xen::transport::{
    store_root, xenstored_store_factory, Backend, BackendEvent, DomainFilter, EventChannel,
    EventChannelFactory,
};
use pvabi_xen::{Access, Perm, TxnId, XenStore, XenStoreOps, DEFAULT_SOCKET};

const MAGIC: &[u8; 8] = b"PVHIMAGE";
/// What the kernel writes with CONSOLE.WRITE through the ring (see its `ring_checks`).
const RING_GREETING: &str = "pvabi console write through the Xen ring";
/// The STORE path the kernel writes through the ring, and its value before the domain id (see
/// its `pvabi_checks`).
const STORE_PATH: &str = "pvh-check";
const STORE_VALUE: &str = "written through pvabi by domain ";
const MAX_WINDOW_PAGES: u64 = pvabi_xen::transport::MAX_WINDOW_PAGES as u64;
const MAX_RING_ORDER: u64 = pvabi_xen::transport::MAX_RING_ORDER as u64;
const GUEST_KEYS: &[&str] = pvabi_xen::transport::GUEST_KEYS;

struct Checks {
    scenario: &'static str,
    failed: u32,
}

impl Checks {
    fn report(&mut self, name: &str, r: Result<String, String>) -> bool {
        let s = self.scenario;
        match r {
            Ok(d) => {
                println!("DOM0-CHECK {s}.{name} ok {d}");
                true
            }
            Err(d) => {
                println!("DOM0-CHECK {s}.{name} fail {d}");
                self.failed += 1;
                false
            }
        }
    }

    fn timing(&self, name: &str, since: Instant) {
        println!(
            "PVH-TIMING {}.{name} {:.2}",
            self.scenario,
            since.elapsed().as_secs_f64()
        );
    }
}

/// The image appended to this program's file.
fn extract_image() -> Result<Vec<u8>, String> {
    let me = std::fs::read("/proc/self/exe").map_err(|e| format!("read /proc/self/exe: {e}"))?;
    let n = me.len();
    if n < 16 || &me[n - 8..] != MAGIC {
        return Err("no PVH image appended to this program".into());
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&me[n - 16..n - 8]);
    let len = usize::try_from(u64::from_le_bytes(len)).map_err(|e| e.to_string())?;
    let start = (n - 16)
        .checked_sub(len)
        .ok_or("appended image length is larger than the file")?;
    Ok(me[start..n - 16].to_vec())
}

/// Parses a decimal as `XEN-3` says: digits only, no leading zeros, at most 20 digits.
fn parse_key(v: &[u8]) -> Result<u64, String> {
    let s = std::str::from_utf8(v).map_err(|_| format!("{v:?} is not UTF-8"))?;
    if s.is_empty()
        || s.len() > 20
        || (s.len() > 1 && s.starts_with('0'))
        || !s.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!(
            "{s:?} is not a decimal without sign or leading zeros"
        ));
    }
    s.parse::<u64>().map_err(|e| format!("{s:?}: {e}"))
}

/// The backend's side of `XEN-1` for domain `d`, backend dom0.
fn prepare(xs: &mut XenStore, d: u32) -> Result<String, String> {
    let fdir = format!("/local/domain/{d}/device/pvabi/0");
    let bdir = format!("/local/domain/0/backend/pvabi/{d}/0");
    let t = TxnId::NONE;
    let guest_perms = [Perm::new(d, Access::None), Perm::new(0, Access::Read)];
    let backend_perms = [Perm::new(0, Access::None), Perm::new(d, Access::Read)];
    let e = |what: &str, err: pvabi_xen::Error| format!("{what}: {err}");
    let fkeys: [(&str, String); 3] = [
        ("backend", bdir.clone()),
        ("backend-id", "0".into()),
        ("state", "1".into()),
    ];
    xs.mkdir(t, &fdir).map_err(|x| e(&fdir, x))?;
    xs.set_perms(t, &fdir, &guest_perms)
        .map_err(|x| e(&fdir, x))?;
    for (k, v) in &fkeys {
        let p = format!("{fdir}/{k}");
        xs.write(t, &p, v.as_bytes()).map_err(|x| e(&p, x))?;
        xs.set_perms(t, &p, &guest_perms).map_err(|x| e(&p, x))?;
    }
    let bkeys: [(&str, String); 6] = [
        ("frontend", fdir.clone()),
        ("frontend-id", d.to_string()),
        ("abi-version", pvabi::ABI_VERSION.to_u32().to_string()),
        ("features", "0".into()),
        ("max-window-pages", MAX_WINDOW_PAGES.to_string()),
        ("max-ring-order", MAX_RING_ORDER.to_string()),
    ];
    xs.mkdir(t, &bdir).map_err(|x| e(&bdir, x))?;
    xs.set_perms(t, &bdir, &backend_perms)
        .map_err(|x| e(&bdir, x))?;
    for (k, v) in bkeys.iter().chain([("state", "2".to_string())].iter()) {
        let p = format!("{bdir}/{k}");
        xs.write(t, &p, v.as_bytes()).map_err(|x| e(&p, x))?;
        xs.set_perms(t, &p, &backend_perms).map_err(|x| e(&p, x))?;
    }
    Ok(format!("{fdir} state=1, {bdir} state=2"))
}

/// The guest's keys, read once and validated as `XEN-3` says.
fn guest_keys(xs: &mut XenStore, d: u32) -> Result<[u64; 6], String> {
    let fdir = format!("/local/domain/{d}/device/pvabi/0");
    let mut v = [0u64; 6];
    for (slot, k) in v.iter_mut().zip(GUEST_KEYS) {
        let p = format!("{fdir}/{k}");
        let raw = xs.read(TxnId::NONE, &p).map_err(|e| format!("{p}: {e}"))?;
        *slot = parse_key(&raw).map_err(|e| format!("{k}: {e}"))?;
    }
    let [gfn, pages, _index_ref, ring_gpa, order, _port] = v;
    if !(1..=MAX_WINDOW_PAGES).contains(&pages) {
        return Err(format!(
            "window-pages {pages} outside 1..={MAX_WINDOW_PAGES}"
        ));
    }
    if order > MAX_RING_ORDER {
        return Err(format!("ring-order {order} above {MAX_RING_ORDER}"));
    }
    let start = gfn.checked_mul(4096).ok_or("window-gfn overflows")?;
    let end = gfn
        .checked_add(pages)
        .and_then(|e| e.checked_mul(4096))
        .filter(|&e| e <= 1 << 52)
        .ok_or("window does not end below 2^52")?;
    if ring_gpa % 4096 != 0 {
        return Err(format!("ring-gpa {ring_gpa:#x} not page-aligned"));
    }
    let ring_end = ring_gpa
        .checked_add(RingHeader::ring_bytes(order as u32))
        .ok_or("ring end overflows")?;
    if ring_gpa < start || ring_end > end {
        return Err(format!(
            "ring [{ring_gpa:#x}, {ring_end:#x}) not inside the window [{start:#x}, {end:#x})"
        ));
    }
    Ok(v)
}

/// /dev/xen/gntdev: maps one page another domain granted, read-only, and copies it out.
mod gntdev {
    use std::fs::OpenOptions;
    use std::os::fd::AsRawFd;

    #[repr(C)]
    struct MapGrantRef {
        count: u32,
        pad: u32,
        index: u64,
        domid: u32,
        gref: u32,
    }

    #[repr(C)]
    struct UnmapGrantRef {
        index: u64,
        count: u32,
        pad: u32,
    }

    /// `_IOC(_IOC_NONE, 'G', 0, sizeof(struct ioctl_gntdev_map_grant_ref))`.
    const IOCTL_GNTDEV_MAP_GRANT_REF: libc::c_ulong =
        ((std::mem::size_of::<MapGrantRef>() as libc::c_ulong) << 16) | (0x47 << 8);
    /// `_IOC(_IOC_NONE, 'G', 1, sizeof(struct ioctl_gntdev_unmap_grant_ref))`.
    const IOCTL_GNTDEV_UNMAP_GRANT_REF: libc::c_ulong =
        ((std::mem::size_of::<UnmapGrantRef>() as libc::c_ulong) << 16) | (0x47 << 8) | 1;

    /// The 4096 bytes of grant `gref` of domain `domid`.
    pub fn read_page(domid: u32, gref: u32) -> Result<Vec<u8>, String> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/xen/gntdev")
            .map_err(|e| format!("open /dev/xen/gntdev: {e}"))?;
        let fd = f.as_raw_fd();
        let mut map = MapGrantRef {
            count: 1,
            pad: 0,
            index: 0,
            domid,
            gref,
        };
        // SAFETY: `fd` is an open gntdev file; the ioctl reads and writes exactly one
        // `ioctl_gntdev_map_grant_ref` with one reference, which `map` is (same layout).
        let r =
            unsafe { libc::ioctl(fd, IOCTL_GNTDEV_MAP_GRANT_REF, &mut map as *mut MapGrantRef) };
        if r != 0 {
            return Err(format!(
                "IOCTL_GNTDEV_MAP_GRANT_REF(dom {domid}, ref {gref}): {}",
                std::io::Error::last_os_error()
            ));
        }
        let offset = map.index as libc::off_t;
        // SAFETY: maps the one page the ioctl prepared at `offset` of `fd`, read-only and
        // shared, at an address the kernel chooses; no existing mapping is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd,
                offset,
            )
        };
        let out = if p == libc::MAP_FAILED {
            Err(format!(
                "mmap of grant {gref}: {}",
                std::io::Error::last_os_error()
            ))
        } else {
            let mut page = vec![0u8; 4096];
            for (i, b) in page.iter_mut().enumerate() {
                // SAFETY: `p` maps 4096 readable bytes; `i < 4096`. Volatile: the granting
                // domain may change the page at any time.
                *b = unsafe { std::ptr::read_volatile((p as *const u8).add(i)) };
            }
            // SAFETY: `p` is the 4096-byte mapping made above, unmapped once.
            unsafe { libc::munmap(p, 4096) };
            Ok(page)
        };
        let mut unmap = UnmapGrantRef {
            index: map.index,
            count: 1,
            pad: 0,
        };
        // SAFETY: releases the reference mapped above; `unmap` has the ioctl's layout.
        unsafe {
            libc::ioctl(
                fd,
                IOCTL_GNTDEV_UNMAP_GRANT_REF,
                &mut unmap as *mut UnmapGrantRef,
            )
        };
        out
    }
}

/// Maps the index page and the ring's page and checks what the guest wrote: the index entries
/// are grant references, and the ring header has the magic, the order and zeroed counters.
fn check_window(d: u32, keys: &[u64; 6], counters_zero: bool) -> Result<String, String> {
    let [gfn, pages, index_ref, ring_gpa, order, _] = *keys;
    let index = gntdev::read_page(d, u32::try_from(index_ref).map_err(|e| e.to_string())?)?;
    let refs: Vec<u32> = index
        .chunks_exact(4)
        .take(pages as usize)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let ring_page = (ring_gpa / 4096 - gfn) as usize;
    let ring_ref = *refs.get(ring_page).ok_or("ring page outside the index")?;
    let page = gntdev::read_page(d, ring_ref)?;
    let off = (ring_gpa % 4096) as usize;
    let word = |i: usize| {
        u32::from_le_bytes([
            page[off + i],
            page[off + i + 1],
            page[off + i + 2],
            page[off + i + 3],
        ])
    };
    let (magic, got_order) = (word(0), word(4));
    let counters: Vec<u32> = (2..7).map(|i| word(4 * i)).collect();
    if magic != RingHeader::MAGIC
        || u64::from(got_order) != order
        || (counters_zero && counters.iter().any(|&c| c != 0))
    {
        return Err(format!(
            "ring header magic={magic:#x} order={got_order} counters={counters:?} (index refs {refs:?})"
        ));
    }
    Ok(format!(
        "index refs {refs:?}; ring page through ref {ring_ref}: magic PVRG, order {got_order}, \
         counters {counters:?}"
    ))
}

/// The pvabi-xen backend serving domain `d` on a thread that reconciles every 20 ms.
struct Served {
    backend: Arc<Mutex<Backend<XenStore>>>,
    events: Arc<Mutex<Vec<BackendEvent>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Served {
    fn start(d: u32, scenario: &'static str) -> Result<(Served, Vec<BackendEvent>), String> {
        let xs = XenStore::open_socket(DEFAULT_SOCKET).map_err(|e| format!("xenstored: {e}"))?;
        let gnt = GntDev::open().map_err(|e| format!("/dev/xen/gntdev: {e}"))?;
        let factory: EventChannelFactory =
            Arc::new(|| Ok(Arc::new(EvtchnDev::open()?) as Arc<dyn EventChannel>));
        // The guest's STORE is its xenstore subtree /local/domain/D/pvabi (XEN-10).
        let mut b = Backend::new(xs, 0, DomainFilter::Only(vec![d]), Arc::new(gnt), factory)
            .with_store(xenstored_store_factory(DEFAULT_SOCKET));
        // The first pass offers the handshake to the (still paused) domain.
        let first = b.reconcile();
        for e in &first {
            println!("BACKEND-EVENT {scenario} {e:?}");
        }
        let backend = Arc::new(Mutex::new(b));
        let events = Arc::new(Mutex::new(first.clone()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (backend, events, stop) = (backend.clone(), events.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    let ev = match backend.lock() {
                        Ok(mut b) => b.reconcile(),
                        Err(_) => break,
                    };
                    if let Ok(mut l) = events.lock() {
                        for e in ev {
                            println!("BACKEND-EVENT {scenario} {e:?}");
                            l.push(e);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        Ok((
            Served {
                backend,
                events,
                stop,
                thread: Some(thread),
            },
            first,
        ))
    }

    fn saw(&self, f: impl Fn(&BackendEvent) -> bool) -> bool {
        self.events.lock().map(|l| l.iter().any(f)).unwrap_or(false)
    }

    fn wait_for(&self, f: impl Fn(&BackendEvent) -> bool, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.saw(&f) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One boot of the kernel, with this program (`refused`) or the pvabi-xen backend (`backend`)
/// on the other side.
fn scenario(scenario: &'static str, img_path: &str, xs: &mut XenStore) -> u32 {
    let with_backend = scenario != "refused";
    let invalid = scenario == "invalid";
    let cmdline = if invalid { "bad-ring-order" } else { "" };
    let mut checks = Checks {
        scenario,
        failed: 0,
    };
    let t0 = Instant::now();
    let name = format!("pvh-{scenario}");
    let mut child = match Command::new("pvabi-pvh-run")
        .args([
            "--paused",
            "--timeout",
            "150",
            "--name",
            &name,
            img_path,
            cmdline,
        ])
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            checks.report("domain_created", Err(format!("spawn pvabi-pvh-run: {e}")));
            return checks.failed;
        }
    };
    let Some(stdout) = child.stdout.take() else {
        checks.report("domain_created", Err("no stdout pipe".into()));
        let _ = child.wait();
        return checks.failed;
    };
    let mut stdout = BufReader::new(stdout);
    let mut first = String::new();
    let _ = stdout.read_line(&mut first);
    let domid = first
        .trim()
        .strip_prefix("PVH-RUN-CREATED ")
        .and_then(|d| d.parse::<u32>().ok());
    checks.timing("domain_create", t0);
    let created = checks.report(
        "domain_created",
        domid
            .map(|d| format!("domid={d}"))
            .ok_or_else(|| format!("pvabi-pvh-run said {first:?}")),
    );
    let mut served = None;
    if let (true, Some(d)) = (created, domid) {
        let prepared = if with_backend {
            match Served::start(d, scenario) {
                Ok((s, first)) => {
                    let offered = first
                        .iter()
                        .any(|e| matches!(e, BackendEvent::Offered(x) if *x == d));
                    served = Some(s);
                    checks.report(
                        "backend_initwait",
                        if offered {
                            Ok(format!(
                                "pvabi-xen backend offered the handshake: {first:?}"
                            ))
                        } else {
                            Err(format!("first reconcile: {first:?}"))
                        },
                    )
                }
                Err(e) => checks.report("backend_initwait", Err(e)),
            }
        } else {
            checks.report("backend_initwait", prepare(xs, d))
        };
        let t_run = Instant::now();
        let unpaused = Command::new("xl")
            .args(["unpause", &d.to_string()])
            .status()
            .map_err(|e| e.to_string())
            .and_then(|s| {
                if s.success() {
                    Ok(())
                } else {
                    Err(format!("xl unpause: {s}"))
                }
            });
        checks.report("domain_unpaused", unpaused.map(|()| format!("domid={d}")));
        if prepared {
            // Wait for the guest's Initialised (or later states, or its end).
            let path = format!("/local/domain/{d}/device/pvabi/0/state");
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut guest_state = None;
            loop {
                if let Ok(v) = xs.read(TxnId::NONE, &path) {
                    if v != b"1" {
                        guest_state = Some(String::from_utf8_lossy(&v).into_owned());
                        break;
                    }
                }
                if Instant::now() > deadline || matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            checks.timing("guest_initialised", t_run);
            // With the backend the guest may already have connected, used and closed the ring.
            let initialised = checks.report(
                "guest_initialised",
                match guest_state.as_deref() {
                    Some("3") => Ok("guest state 3".into()),
                    Some(s @ ("4" | "5" | "6")) if with_backend => {
                        Ok(format!("guest state {s} (already past 3)"))
                    }
                    other => Err(format!("guest state {other:?}")),
                },
            );
            if initialised {
                let keys = guest_keys(xs, d);
                let shown = keys.as_ref().map(|k| {
                    GUEST_KEYS
                        .iter()
                        .zip(k)
                        .map(|(n, v)| format!("{n}={v}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                });
                if invalid {
                    // The kernel published a ring order above the limit on purpose.
                    checks.report(
                        "guest_keys_rejected",
                        match shown {
                            Err(e) if e.starts_with("ring-order") => Ok(format!("XEN-3: {e}")),
                            other => Err(format!("expected a ring-order refusal, got {other:?}")),
                        },
                    );
                } else {
                    checks.report("guest_keys", shown.map_err(|e| e.clone()));
                    if let Ok(k) = keys {
                        checks.report("window_granted", check_window(d, &k, !with_backend));
                    }
                }
            }
            if let (Some(s), true) = (served.as_ref(), invalid) {
                let limit = Duration::from_secs(60);
                let refused = s.wait_for(
                    |e| matches!(e, BackendEvent::Refused(x, _) if *x == d),
                    limit,
                );
                checks.timing("backend_refused", t_run);
                let events = s.events.lock().map(|l| l.clone()).unwrap_or_default();
                let why = events.iter().find_map(|e| match e {
                    BackendEvent::Refused(x, why) if *x == d => Some(why.clone()),
                    _ => None,
                });
                let connected = events
                    .iter()
                    .any(|e| matches!(e, BackendEvent::Connected(x) if *x == d));
                checks.report(
                    "backend_refused",
                    match (refused, why, connected) {
                        (true, Some(why), false) => Ok(format!("reason={why}")),
                        _ => Err(format!(
                            "the backend did not refuse ring-order above its limit: {events:?}"
                        )),
                    },
                );
            } else if let Some(s) = served.as_ref() {
                let limit = Duration::from_secs(60);
                let connected = s.wait_for(
                    |e| matches!(e, BackendEvent::Connected(x) if *x == d),
                    limit,
                );
                checks.timing("backend_connected", t_run);
                checks.report(
                    "backend_connected",
                    if connected {
                        Ok("the pvabi-xen backend connected (state 4)".into())
                    } else {
                        Err(format!(
                            "no Connected event; events {:?}",
                            s.events.lock().map(|l| l.clone()).unwrap_or_default()
                        ))
                    },
                );
                // XEN-10: the kernel's STORE.WRITE through the ring lands in its xenstore
                // subtree, where dom0 reads it directly (polled while the domain lives).
                let node = format!("{}/{STORE_PATH}", store_root(d));
                let want = format!("{STORE_VALUE}{d}");
                let deadline = Instant::now() + limit;
                let got = loop {
                    if let Ok(v) = xs.read(TxnId::NONE, &node) {
                        break Some(String::from_utf8_lossy(&v).into_owned());
                    }
                    if Instant::now() > deadline || matches!(child.try_wait(), Ok(Some(_))) {
                        break None;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                };
                checks.report(
                    "store_through_ring",
                    match got {
                        Some(v) if v == want => Ok(format!("{node} = {v:?}")),
                        other => Err(format!("{node}: {other:?}, expected {want:?}")),
                    },
                );
                let closed = s.wait_for(|e| matches!(e, BackendEvent::Closed(x) if *x == d), limit);
                checks.timing("backend_closed", t_run);
                checks.report(
                    "backend_closed",
                    if closed {
                        Ok("the guest closed and the backend let go (XEN-9)".into())
                    } else {
                        Err("no Closed event after the guest's state 6".into())
                    },
                );
            } else if initialised {
                // No ring backend in this scenario: refuse as XEN-4 says, so that the guest ends.
                let bdir = format!("/local/domain/0/backend/pvabi/{d}/0");
                let refused = xs
                    .write(
                        TxnId::NONE,
                        &format!("{bdir}/error"),
                        b"pvh-check: no ring backend in this run",
                    )
                    .and_then(|()| xs.write(TxnId::NONE, &format!("{bdir}/state"), b"6"));
                checks.report(
                    "backend_closed",
                    refused
                        .map(|()| "error written, state 6".into())
                        .map_err(|e| e.to_string()),
                );
            }
        }
    }
    let mut rest = String::new();
    let _ = stdout.read_to_string(&mut rest);
    let status = child.wait();
    checks.timing("total", t0);
    for line in rest.lines() {
        println!("PVH-LOG {scenario} {line}");
    }
    checks.report(
        "pvh_run_exit",
        match status {
            Ok(s) if s.success() => Ok("0".into()),
            Ok(s) => Err(format!("pvabi-pvh-run: {s}")),
            Err(e) => Err(e.to_string()),
        },
    );
    if let (Some(mut s), Some(d), false) = (served, domid, invalid) {
        let console = s.backend.lock().map(|b| b.console(d)).unwrap_or_default();
        let text = String::from_utf8_lossy(&console).into_owned();
        checks.report(
            "console_through_ring",
            if text.contains(RING_GREETING) {
                Ok(format!(
                    "the backend's console for domain {d}: {:?}",
                    text.trim_end()
                ))
            } else {
                Err(format!("the backend's console for domain {d}: {text:?}"))
            },
        );
        s.stop();
    }
    checks.failed
}

fn main() -> ExitCode {
    let mut scenarios: Vec<&'static str> = Vec::new();
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "refused" => scenarios.push("refused"),
            "backend" => scenarios.push("backend"),
            "invalid" => scenarios.push("invalid"),
            _ => {
                eprintln!("usage: pvh-check [refused|backend|invalid]...");
                return ExitCode::from(2);
            }
        }
    }
    if scenarios.is_empty() {
        scenarios = vec!["refused", "backend", "invalid"];
    }
    let mut setup = Checks {
        scenario: "setup",
        failed: 0,
    };
    let image = match extract_image() {
        Ok(i) => i,
        Err(e) => {
            setup.report("image", Err(e));
            return ExitCode::from(1);
        }
    };
    let img_path = "/tmp/pvh-check.elf";
    if let Err(e) = std::fs::write(img_path, &image) {
        setup.report("image", Err(format!("write {img_path}: {e}")));
        return ExitCode::from(1);
    }
    let mut xs = match XenStore::open_default() {
        Ok(x) => x,
        Err(e) => {
            setup.report("xenstore_open", Err(e.to_string()));
            return ExitCode::from(1);
        }
    };
    let failed: u32 = scenarios
        .into_iter()
        .map(|s| scenario(s, img_path, &mut xs))
        .sum();
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
