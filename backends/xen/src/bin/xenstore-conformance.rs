//! Checks the xenstore clients of `pvabi-xen` against a real xenstored and prints one typed line
//! per check:
//!
//! ```text
//! XSCHECK <name> PASS|FAIL <detail>
//! XSMETRIC <name> <value>
//! XSSUMMARY passed=<n> failed=<n>
//! ```
//!
//! Usage: `xenstore-conformance [--role dom0|unprivileged|all|domu] [--socket PATH] [--device PATH]
//! [--quota-entries N] [--quota-entry-size N] [--quota-watches N] [--quota-transactions N]`.
//!
//! - `dom0`: privileged checks over xenstored's socket and the xenbus device (run in the domain
//!   that runs xenstored);
//! - `unprivileged` (in dom0): prepares nodes with permissions, boots an unprivileged domU with
//!   `pvabi-domu-run` (scripts/xen/domu-run.sh) running this program as `domu`, reports its
//!   checks as `domu_*` and checks that the requests it was refused changed nothing;
//! - `all`: `dom0` then `unprivileged`;
//! - `domu`: permission denial and quota exhaustion as an unprivileged domain over its xenbus
//!   device. The `--quota-*` values must be the ones xenstored was started with.
//!
//! Exit status 0 when every check passed, 1 otherwise, 2 for a usage error.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use pvabi::store::GuestAccess;
use pvabi::Status;
use pvabi_xen::{
    status_for, Access, Error, GuestStore, Perm, TxnId, XenStore, XenStoreOps, XsErrno, XsRs,
    DEFAULT_SOCKET, XENBUS_DEVICE,
};

const BASE: &str = "/pvabi-conformance";
/// How long a check waits for a watch event that must come.
const EVENT_WAIT: Duration = Duration::from_secs(10);

type CheckResult = Result<String, String>;

struct Runner {
    passed: u32,
    failed: u32,
}

impl Runner {
    fn check(&mut self, name: &str, f: impl FnOnce() -> CheckResult) {
        match f() {
            Ok(detail) => {
                self.passed += 1;
                println!("XSCHECK {name} PASS {detail}");
            }
            Err(detail) => {
                self.failed += 1;
                println!("XSCHECK {name} FAIL {detail}");
            }
        }
    }
}

fn ok<T>(what: &str, r: pvabi_xen::Result<T>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: unexpected error {e} ({e:?})"))
}

/// Asserts that `r` failed with xenstored's `errno` and that it maps to `status`.
fn expect_err<T: std::fmt::Debug>(
    what: &str,
    r: pvabi_xen::Result<T>,
    errno: XsErrno,
    status: Status,
) -> Result<String, String> {
    match r {
        Ok(v) => Err(format!("{what}: succeeded ({v:?}), expected {errno}")),
        Err(Error::Xenstored(got)) if got == errno => {
            let s = status_for(&Error::Xenstored(got));
            if s == status {
                Ok(format!("{what}: {errno} -> {s}"))
            } else {
                Err(format!("{what}: {errno} mapped to {s}, expected {status}"))
            }
        }
        Err(e) => Err(format!("{what}: failed with {e} ({e:?}), expected {errno}")),
    }
}

fn eq<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, expected {want:?}"))
    }
}

fn p(rel: &str) -> String {
    format!("{BASE}/{rel}")
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Waits for the next event and checks its path and token.
fn expect_event(xs: &mut XenStore, path: &str, token: &str) -> Result<(), String> {
    match ok("next_watch_event", xs.next_watch_event(Some(EVENT_WAIT)))? {
        Some(e) if e.path == path && e.token == token => Ok(()),
        Some(e) => Err(format!(
            "event ({}, {}) where ({path}, {token}) was expected",
            e.path, e.token
        )),
        None => Err(format!(
            "no event for ({path}, {token}) within {EVENT_WAIT:?}"
        )),
    }
}

fn dom0_checks(r: &mut Runner, socket: &str, device: &str) -> Result<(), String> {
    let mut a = ok("connect", XenStore::open_socket(socket))?;
    let mut b = ok("connect second", XenStore::open_socket(socket))?;
    let _ = a.remove(TxnId::NONE, BASE);
    ok("mkdir base", a.mkdir(TxnId::NONE, BASE))?;

    r.check("write_read_binary", || {
        let v = b"hello\0\xffworld\n".to_vec();
        ok("write", a.write(TxnId::NONE, &p("v"), &v))?;
        eq(
            "read back",
            ok("read", a.read(TxnId::NONE, &p("v")))?,
            v.clone(),
        )?;
        eq(
            "read on second connection",
            ok("read", b.read(TxnId::NONE, &p("v")))?,
            v,
        )?;
        ok("write empty", a.write(TxnId::NONE, &p("empty"), b""))?;
        eq(
            "empty value",
            ok("read", a.read(TxnId::NONE, &p("empty")))?,
            vec![],
        )?;
        Ok("binary value with NUL and 0xff round-trips, empty value too".into())
    });

    r.check("read_missing", || {
        expect_err(
            "read of a missing node",
            a.read(TxnId::NONE, &p("missing")),
            XsErrno::Enoent,
            Status::NOT_FOUND,
        )
    });

    r.check("directory", || {
        for c in ["c", "a", "b"] {
            ok(
                "write",
                a.write(TxnId::NONE, &p(&format!("dir/{c}")), c.as_bytes()),
            )?;
        }
        ok(
            "write grandchild",
            a.write(TxnId::NONE, &p("dir/a/deep"), b"x"),
        )?;
        let got = sorted(ok("directory", a.directory(TxnId::NONE, &p("dir")))?);
        eq("children", got, vec!["a".into(), "b".into(), "c".into()])?;
        eq(
            "leaf has no children",
            ok("directory", a.directory(TxnId::NONE, &p("dir/b")))?,
            Vec::<String>::new(),
        )?;
        expect_err(
            "directory of a missing node",
            a.directory(TxnId::NONE, &p("nodir")),
            XsErrno::Enoent,
            Status::NOT_FOUND,
        )?;
        Ok("children listed exactly; missing node is ENOENT".into())
    });

    r.check("remove", || {
        ok("remove leaf", a.remove(TxnId::NONE, &p("dir/b")))?;
        let got = sorted(ok("directory", a.directory(TxnId::NONE, &p("dir")))?);
        eq("children after remove", got, vec!["a".into(), "c".into()])?;
        expect_err(
            "read removed",
            a.read(TxnId::NONE, &p("dir/b")),
            XsErrno::Enoent,
            Status::NOT_FOUND,
        )?;
        ok("remove subtree", a.remove(TxnId::NONE, &p("dir")))?;
        expect_err(
            "read in removed subtree",
            a.read(TxnId::NONE, &p("dir/a/deep")),
            XsErrno::Enoent,
            Status::NOT_FOUND,
        )?;
        expect_err(
            "remove below a missing parent",
            a.remove(TxnId::NONE, &p("nodir/x")),
            XsErrno::Enoent,
            Status::NOT_FOUND,
        )?;
        Ok("leaf and subtree removed".into())
    });

    r.check("watch_events", || {
        ok("mkdir", a.mkdir(TxnId::NONE, &p("w")))?;
        ok("watch", a.watch(&p("w"), "t1"))?;
        expect_event(&mut a, &p("w"), "t1")?;
        ok(
            "write by other connection",
            b.write(TxnId::NONE, &p("w/x"), b"1"),
        )?;
        expect_event(&mut a, &p("w/x"), "t1")?;
        ok("write outside", b.write(TxnId::NONE, &p("other"), b"1"))?;
        ok("write inside", b.write(TxnId::NONE, &p("w/y"), b"1"))?;
        // The write outside the watched subtree fires nothing: the next event is w/y.
        expect_event(&mut a, &p("w/y"), "t1")?;
        ok("remove inside", b.remove(TxnId::NONE, &p("w/x")))?;
        expect_event(&mut a, &p("w/x"), "t1")?;
        expect_err(
            "duplicate watch",
            a.watch(&p("w"), "t1"),
            XsErrno::Eexist,
            Status::ALREADY,
        )?;
        ok("unwatch", a.unwatch(&p("w"), "t1"))?;
        ok("write after unwatch", b.write(TxnId::NONE, &p("w/z"), b"1"))?;
        // A fresh watch's initial event must be the next one: nothing came for w/z.
        ok("sentinel watch", a.watch(&p("sentinel"), "t2"))?;
        expect_event(&mut a, &p("sentinel"), "t2")?;
        ok("unwatch sentinel", a.unwatch(&p("sentinel"), "t2"))?;
        expect_err(
            "unwatch of an unknown watch",
            a.unwatch(&p("w"), "t1"),
            XsErrno::Enoent,
            Status::NOT_FOUND,
        )?;
        Ok("initial, write, remove events delivered; none outside or after unwatch".into())
    });

    r.check("transaction_commit", || {
        let t = ok("start", a.transaction_start())?;
        ok("write in txn", a.write(t, &p("t/x"), b"in-txn"))?;
        eq(
            "read in txn",
            ok("read", a.read(t, &p("t/x")))?,
            b"in-txn".to_vec(),
        )?;
        expect_err(
            "read outside before commit",
            b.read(TxnId::NONE, &p("t/x")),
            XsErrno::Enoent,
            Status::NOT_FOUND,
        )?;
        ok("commit", a.transaction_end(t, true))?;
        eq(
            "read after commit",
            ok("read", b.read(TxnId::NONE, &p("t/x")))?,
            b"in-txn".to_vec(),
        )?;
        Ok(format!("txn {} isolated until commit, visible after", t.0))
    });

    r.check("transaction_abort", || {
        let t = ok("start", a.transaction_start())?;
        ok("write in txn", a.write(t, &p("t/aborted"), b"x"))?;
        ok("abort", a.transaction_end(t, false))?;
        expect_err(
            "read after abort",
            a.read(TxnId::NONE, &p("t/aborted")),
            XsErrno::Enoent,
            Status::NOT_FOUND,
        )?;
        expect_err(
            "end of an ended transaction",
            a.transaction_end(t, true),
            XsErrno::Enoent,
            Status::NOT_FOUND,
        )?;
        Ok("aborted write not applied; ended txn is ENOENT".into())
    });

    r.check("transaction_conflict", || {
        ok("write", a.write(TxnId::NONE, &p("c"), b"0"))?;
        let t = ok("start", a.transaction_start())?;
        eq(
            "read in txn",
            ok("read", a.read(t, &p("c")))?,
            b"0".to_vec(),
        )?;
        ok("concurrent write", b.write(TxnId::NONE, &p("c"), b"B"))?;
        ok("write in txn", a.write(t, &p("c"), b"A"))?;
        let d = expect_err(
            "commit after a concurrent change",
            a.transaction_end(t, true),
            XsErrno::Eagain,
            Status::CONFLICT,
        )?;
        eq(
            "value kept",
            ok("read", a.read(TxnId::NONE, &p("c")))?,
            b"B".to_vec(),
        )?;
        Ok(d)
    });

    r.check("permissions_round_trip", || {
        ok("write", a.write(TxnId::NONE, &p("perm"), b"x"))?;
        let own = [Perm::new(0, Access::Read)];
        ok("set_perms", a.set_perms(TxnId::NONE, &p("perm"), &own))?;
        eq(
            "get_perms",
            ok("get_perms", a.get_perms(TxnId::NONE, &p("perm")))?,
            own.to_vec(),
        )?;
        // A further entry may name any domain id; it is stored as given.
        let more = [Perm::new(0, Access::None), Perm::new(31999, Access::Both)];
        ok(
            "set_perms with a second entry",
            a.set_perms(TxnId::NONE, &p("perm"), &more),
        )?;
        eq(
            "get_perms",
            ok("get_perms", a.get_perms(TxnId::NONE, &p("perm")))?,
            more.to_vec(),
        )?;
        // xenstored refuses an owner that is not an existing domain.
        let d = expect_err(
            "set_perms with an owner domain that does not exist",
            a.set_perms(TxnId::NONE, &p("perm"), &[Perm::new(31998, Access::None)]),
            XsErrno::Enoent,
            Status::NOT_FOUND,
        )?;
        eq(
            "perms unchanged",
            ok("get_perms", a.get_perms(TxnId::NONE, &p("perm")))?,
            more.to_vec(),
        )?;
        expect_err(
            "set_perms on a missing node",
            a.set_perms(TxnId::NONE, &p("noperm/x"), &own),
            XsErrno::Enoent,
            Status::NOT_FOUND,
        )?;
        Ok(format!("r0 and n0,b31999 stored and read back; {d}"))
    });

    r.check("invalid_requests", || {
        let d1 = expect_err(
            "write to a path with a space",
            a.write(TxnId::NONE, &p("bad path"), b"x"),
            XsErrno::Einval,
            Status::INVALID_PARAM,
        )?;
        let big = vec![b'x'; 4096];
        match a.write(TxnId::NONE, &p("big"), &big) {
            Err(e @ Error::PayloadTooLarge { .. }) => {
                eq("status", status_for(&e), Status::NO_SPACE)?;
            }
            other => return Err(format!("oversized write: {other:?}")),
        }
        // The connection is still usable after the refusals.
        ok("read after refusals", a.read(TxnId::NONE, &p("v")))?;
        Ok(format!(
            "{d1}; 4096-byte value refused before sending -> NO_SPACE"
        ))
    });

    r.check("domain_path", || {
        eq(
            "domain path of 0",
            ok("get_domain_path", a.get_domain_path(0))?,
            "/local/domain/0".to_string(),
        )?;
        Ok("/local/domain/0".into())
    });

    r.check("xenstore_rs_cross_check", || {
        let mut rs = ok("xenstore-rs connect", XsRs::open())?;
        ok(
            "xenstore-rs write",
            rs.write(TxnId::NONE, &p("rs/a"), b"from-rs"),
        )?;
        eq(
            "read by XenStore",
            ok("read", a.read(TxnId::NONE, &p("rs/a")))?,
            b"from-rs".to_vec(),
        )?;
        ok("write", a.write(TxnId::NONE, &p("rs/b"), b"from-xs"))?;
        eq(
            "read by xenstore-rs",
            ok("xenstore-rs read", rs.read(TxnId::NONE, &p("rs/b")))?,
            b"from-xs".to_vec(),
        )?;
        eq(
            "directory by xenstore-rs",
            sorted(ok(
                "xenstore-rs directory",
                rs.directory(TxnId::NONE, &p("rs")),
            )?),
            vec!["a".into(), "b".into()],
        )?;
        let d = expect_err(
            "xenstore-rs read of a missing node",
            rs.read(TxnId::NONE, &p("rs/missing")),
            XsErrno::Enoent,
            Status::NOT_FOUND,
        )?;
        ok("xenstore-rs rm", rs.remove(TxnId::NONE, &p("rs/a")))?;
        expect_err(
            "read after xenstore-rs rm",
            a.read(TxnId::NONE, &p("rs/a")),
            XsErrno::Enoent,
            Status::NOT_FOUND,
        )?;
        match rs.transaction_start() {
            Err(Error::Unsupported(_)) => {}
            other => return Err(format!("xenstore-rs transaction_start: {other:?}")),
        }
        Ok(format!("both clients see each other's writes; {d}"))
    });

    r.check("xenbus_device", || {
        let mut dev = ok("open device", XenStore::open_device(device))?;
        ok("write via socket", a.write(TxnId::NONE, &p("dev"), b"sock"))?;
        eq(
            "read via device",
            ok("read", dev.read(TxnId::NONE, &p("dev")))?,
            b"sock".to_vec(),
        )?;
        ok("watch via device", dev.watch(&p("dev"), "dt"))?;
        expect_event(&mut dev, &p("dev"), "dt")?;
        ok("write via socket", a.write(TxnId::NONE, &p("dev/c"), b"1"))?;
        expect_event(&mut dev, &p("dev/c"), "dt")?;
        ok("unwatch via device", dev.unwatch(&p("dev"), "dt"))?;
        let t = ok("start via device", dev.transaction_start())?;
        ok("write in txn via device", dev.write(t, &p("dev/t"), b"1"))?;
        ok("commit via device", dev.transaction_end(t, true))?;
        eq(
            "read via socket",
            ok("read", a.read(TxnId::NONE, &p("dev/t")))?,
            b"1".to_vec(),
        )?;
        Ok(format!("{device}: read, watch, transaction"))
    });

    r.check("guest_store_mapping", || {
        let root = p("guest");
        ok("mkdir guest root", a.mkdir(TxnId::NONE, &root))?;
        // The mapping's guest is a domain id that does not run; the root gives it full access
        // (xenstored refuses an owner that is not an existing domain).
        const GUEST: u32 = 31999;
        ok(
            "root perms",
            a.set_perms(
                TxnId::NONE,
                &root,
                &[Perm::new(0, Access::None), Perm::new(GUEST, Access::Both)],
            ),
        )?;
        let xs = ok("connect", XenStore::open_socket(socket))?;
        let mut g = GuestStore::new(xs, root.clone(), GUEST, 0);
        let st = |what: &str, r: Result<(), Status>| r.map_err(|s| format!("{what}: {s}"));
        st("write", g.write(b"cfg/b", b"2", 0))?;
        st("write", g.write(b"cfg/a", b"1", 0))?;
        eq("read", g.read(b"cfg/a", 0), Ok(b"1".to_vec()))?;
        eq("list sorted", g.list(b"cfg", 0), Ok(b"a\0b\0".to_vec()))?;
        eq("list root", g.list(b"", 0), Ok(b"cfg\0".to_vec()))?;
        eq("outside path", g.read(b"../v", 0), Err(Status::INVALID_PARAM))?;
        // xenstored acknowledges this removal; STORE-8 wants NOT_FOUND.
        eq("remove missing", g.remove(b"cfg/zz", 0), Err(Status::NOT_FOUND))?;
        let id = g.watch(b"cfg", 5).map_err(|s| format!("watch: {s}"))?;
        // The write goes over another connection: the event must come from xenstored.
        ok("host write", b.write(TxnId::NONE, &format!("{root}/cfg/c"), b"3"))?;
        let deadline = Instant::now() + EVENT_WAIT;
        let mut ports = Vec::new();
        while ports.is_empty() && Instant::now() < deadline {
            ports = g.poll_events().map_err(|s| format!("poll: {s}"))?;
            std::thread::sleep(Duration::from_millis(20));
        }
        eq("raised ports", ports, vec![5])?;
        let (h, path) = g.watch_next().map_err(|s| format!("watch_next: {s}"))?;
        eq("event", (h.watch_id, path), (id, b"cfg/c".to_vec()))?;
        eq("no registration event", g.watch_next().map(|_| ()), Err(Status::NOT_FOUND))?;
        st("unwatch", g.unwatch(id))?;
        let t = g.txn_start().map_err(|s| format!("txn_start: {s}"))?;
        eq("read in txn", g.read(b"cfg/a", u64::from(t)), Ok(b"1".to_vec()))?;
        ok("concurrent host write", b.write(TxnId::NONE, &format!("{root}/cfg/a"), b"9"))?;
        st("write in txn", g.write(b"cfg/a", b"5", u64::from(t)))?;
        eq("commit", g.txn_commit(u64::from(t)), Err(Status::CONFLICT))?;
        eq("value", g.read(b"cfg/a", 0), Ok(b"9".to_vec()))?;
        st("remove", g.remove(b"cfg", 0))?;
        eq("removed", g.read(b"cfg/a", 0), Err(Status::NOT_FOUND))?;
        // Guest access of host nodes, kept in xenstored's permissions (STORE-2, 25, 26, 27).
        st("host write none", g.host_write(b"acc/none", b"s", GuestAccess::NONE))?;
        st("host write ro", g.host_write(b"acc/ro", b"r", GuestAccess::READ))?;
        st("host write rw", g.host_write(b"acc/rw", b"w", GuestAccess::READ_WRITE))?;
        eq(
            "host node perms",
            ok("get_perms", b.get_perms(TxnId::NONE, &format!("{root}/acc/ro")))?,
            vec![Perm::new(0, Access::None), Perm::new(GUEST, Access::Read)],
        )?;
        eq("read none", g.read(b"acc/none", 0), Err(Status::DENIED))?;
        eq("list none", g.list(b"acc/none", 0), Err(Status::DENIED))?;
        eq("read ro", g.read(b"acc/ro", 0), Ok(b"r".to_vec()))?;
        eq("write ro", g.write(b"acc/ro", b"x", 0), Err(Status::DENIED))?;
        eq("create below ro", g.write(b"acc/ro/c", b"x", 0), Err(Status::DENIED))?;
        st("write rw", g.write(b"acc/rw", b"g", 0))?;
        st("create below rw", g.write(b"acc/rw/c", b"g", 0))?;
        eq("remove subtree", g.remove(b"acc", 0), Err(Status::DENIED))?;
        eq("nothing removed", g.host_read(b"acc/rw/c"), Ok(b"g".to_vec()))?;
        eq("host read none", g.host_read(b"acc/none"), Ok(b"s".to_vec()))?;
        st("host remove", g.host_remove(b"acc"))?;
        eq("host removed", g.host_read(b"acc/rw"), Err(Status::NOT_FOUND))?;
        // Watch events as STORE-11 names them: one per host write (value and permissions in
        // one transaction), the removed node for a removal of a watch's ancestor.
        let wid = g.watch(b"ev/a/b", 6).map_err(|s| format!("watch: {s}"))?;
        let poll = |g: &mut GuestStore<XenStore>| -> Result<Vec<(u32, Vec<u8>)>, String> {
            let deadline = Instant::now() + Duration::from_millis(300);
            let mut seen = Vec::new();
            while Instant::now() < deadline {
                g.poll_events().map_err(|s| format!("poll: {s}"))?;
                while let Ok((h, p)) = g.watch_next() {
                    seen.push((h.watch_id, p));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(seen)
        };
        st("host write", g.host_write(b"ev/a/b", b"h", GuestAccess::READ_WRITE))?;
        eq("host write events", poll(&mut g)?, vec![(wid, b"ev/a/b".to_vec())])?;
        st("remove ancestor", g.remove(b"ev", 0))?;
        eq("removal event", poll(&mut g)?, vec![(wid, b"ev".to_vec())])?;
        st("unwatch", g.unwatch(wid))?;
        // The node quota (STORE-19, STORE-29), counted from xenstored's watch events; another
        // client's nodes count too.
        ok("other client", b.write(TxnId::NONE, &format!("{root}/q/other"), b""))?;
        for i in 2..pvabi::store::MAX_ENTRIES {
            g.write(format!("q/{i}").as_bytes(), b"", 0)
                .map_err(|s| format!("quota fill {i}: {s}"))?;
        }
        eq("beyond the quota", g.write(b"q/more/x", b"", 0), Err(Status::NO_SPACE))?;
        eq("nothing created", g.host_read(b"q/more"), Err(Status::NOT_FOUND))?;
        ok("other removes", b.remove(TxnId::NONE, &format!("{root}/q/other")))?;
        st("room again", g.write(b"q/more", b"", 0))?;
        st("remove quota nodes", g.remove(b"q", 0))?;
        Ok("STORE paths, sorted LIST, REMOVE of a missing node, watch without registration event, CONFLICT, guest access of host nodes, watch events, node quota".into())
    });

    // Round-trip cost of a READ over each transport (reported, not asserted).
    for (name, xs) in [("socket", &mut a)] {
        let n = 50u32;
        let start = Instant::now();
        for _ in 0..n {
            ok("read", xs.read(TxnId::NONE, &p("v")))?;
        }
        println!(
            "XSMETRIC read_round_trip_us_{name} {}",
            start.elapsed().as_micros() / u128::from(n)
        );
    }
    if let Ok(mut dev) = XenStore::open_device(device) {
        let n = 50u32;
        let start = Instant::now();
        for _ in 0..n {
            ok("read", dev.read(TxnId::NONE, &p("v")))?;
        }
        println!(
            "XSMETRIC read_round_trip_us_device {}",
            start.elapsed().as_micros() / u128::from(n)
        );
    }

    let _ = a.remove(TxnId::NONE, BASE);
    Ok(())
}

/// xenstored's per-domain quotas as it was started with them; the unprivileged checks need them.
#[derive(Clone, Copy, Debug, Default)]
struct Quotas {
    entries: u32,
    entry_size: u32,
    watches: u32,
    transactions: u32,
}

impl Quotas {
    fn args(&self) -> Vec<String> {
        vec![
            "--quota-entries".into(),
            self.entries.to_string(),
            "--quota-entry-size".into(),
            self.entry_size.to_string(),
            "--quota-watches".into(),
            self.watches.to_string(),
            "--quota-transactions".into(),
            self.transactions.to_string(),
        ]
    }

    fn check_given(&self) -> Result<(), String> {
        if self.entries == 0 || self.entry_size == 0 || self.watches == 0 || self.transactions == 0
        {
            return Err(format!(
                "the unprivileged checks need every --quota-* value xenstored was started with: {self:?}"
            ));
        }
        Ok(())
    }
}

const UNPRIV: &str = "/pvabi-unpriv";

/// Asserts that `r` failed with an error that maps to NO_SPACE; returns its name.
fn expect_no_space<T: std::fmt::Debug>(
    what: &str,
    r: pvabi_xen::Result<T>,
) -> Result<String, String> {
    match r {
        Ok(v) => Err(format!("{what}: succeeded ({v:?}), expected a quota error")),
        Err(e) => {
            let s = status_for(&e);
            if s == Status::NO_SPACE {
                Ok(match e.xs_errno() {
                    Some(n) => n.to_string(),
                    None => e.to_string(),
                })
            } else {
                Err(format!(
                    "{what}: {e} ({e:?}) maps to {s}, expected NO_SPACE"
                ))
            }
        }
    }
}

/// In dom0: prepares nodes with permissions, boots an unprivileged domU that runs this program
/// with `--role domu`, reports the domU's checks, and checks from dom0 that the refused requests
/// changed nothing.
fn unprivileged_checks(r: &mut Runner, socket: &str, quotas: Quotas) -> Result<(), String> {
    quotas.check_given()?;
    let mut a = ok("connect", XenStore::open_socket(socket))?;
    let _ = a.remove(TxnId::NONE, UNPRIV);
    let node = |rel: &str| format!("{UNPRIV}/{rel}");
    ok("write", a.write(TxnId::NONE, UNPRIV, b""))?;
    ok(
        "perms",
        a.set_perms(TxnId::NONE, UNPRIV, &[Perm::new(0, Access::Read)]),
    )?;
    ok("write", a.write(TxnId::NONE, &node("secret"), b"s"))?;
    ok(
        "perms",
        a.set_perms(TxnId::NONE, &node("secret"), &[Perm::new(0, Access::None)]),
    )?;
    ok("write", a.write(TxnId::NONE, &node("readonly"), b"r"))?;
    ok(
        "perms",
        a.set_perms(
            TxnId::NONE,
            &node("readonly"),
            &[Perm::new(0, Access::Read)],
        ),
    )?;

    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let start = Instant::now();
    let out = std::process::Command::new("pvabi-domu-run")
        .args(["--timeout", "150"])
        .arg(&exe)
        .args(["--role", "domu"])
        .args(quotas.args())
        .output()
        .map_err(|e| format!("cannot run pvabi-domu-run: {e}"))?;
    println!(
        "XSMETRIC domu_boot_and_run_ms {}",
        start.elapsed().as_millis()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut summary = None;
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("XSCHECK ") {
            println!("XSCHECK domu_{rest}");
            if rest.split(' ').nth(1) == Some("PASS") {
                r.passed += 1;
            } else {
                r.failed += 1;
            }
        } else if let Some(rest) = line.strip_prefix("XSMETRIC ") {
            println!("XSMETRIC domu_{rest}");
        } else if line.starts_with("XSSUMMARY ") {
            summary = Some(line.to_string());
        } else {
            println!("domu: {line}");
        }
    }
    let code = out.status.code();
    r.check("domu_completed", || match (&summary, code) {
        (Some(s), Some(0)) => Ok(format!("domU reported {s}")),
        _ => Err(format!(
            "domU run ended with status {code:?}, summary {summary:?}; stderr: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    });

    r.check("denied_requests_changed_nothing", || {
        eq(
            "secret",
            ok("read", a.read(TxnId::NONE, &node("secret")))?,
            b"s".to_vec(),
        )?;
        eq(
            "readonly",
            ok("read", a.read(TxnId::NONE, &node("readonly")))?,
            b"r".to_vec(),
        )?;
        eq(
            "readonly perms",
            ok("get_perms", a.get_perms(TxnId::NONE, &node("readonly")))?,
            vec![Perm::new(0, Access::Read)],
        )?;
        expect_err(
            "node the domU was refused to create",
            a.read(TxnId::NONE, &node("new")),
            XsErrno::Enoent,
            Status::NOT_FOUND,
        )?;
        Ok("values, permissions and the tree as dom0 left them".into())
    });
    let _ = a.remove(TxnId::NONE, UNPRIV);
    Ok(())
}

/// In an unprivileged domU over the xenbus device: permission denial, the domain's own subtree,
/// and exhaustion of each per-domain quota.
fn domu_checks(r: &mut Runner, device: &str, quotas: Quotas) -> Result<(), String> {
    quotas.check_given()?;
    let mut xs = ok("open device", XenStore::open_device(device))?;
    let node = |rel: &str| format!("{UNPRIV}/{rel}");

    let mut domid = 0u32;
    r.check("identity", || {
        let v = ok("read domid", xs.read(TxnId::NONE, "domid"))?;
        domid = String::from_utf8_lossy(&v)
            .parse()
            .map_err(|_| format!("domid {v:?} is not a number"))?;
        if domid == 0 {
            return Err("running as domain 0, not unprivileged".into());
        }
        eq(
            "home",
            ok("get_domain_path", xs.get_domain_path(domid))?,
            format!("/local/domain/{domid}"),
        )?;
        Ok(format!("domain {domid}"))
    });
    if domid == 0 {
        return Err("cannot go on without the domain id".into());
    }

    r.check("permission_denied", || {
        let mut d = Vec::new();
        d.push(expect_err(
            "read of a node without access",
            xs.read(TxnId::NONE, &node("secret")),
            XsErrno::Eacces,
            Status::DENIED,
        )?);
        expect_err(
            "write of a node without access",
            xs.write(TxnId::NONE, &node("secret"), b"x"),
            XsErrno::Eacces,
            Status::DENIED,
        )?;
        expect_err(
            "get_perms of a node without access",
            xs.get_perms(TxnId::NONE, &node("secret")),
            XsErrno::Eacces,
            Status::DENIED,
        )?;
        eq(
            "read of a readable node",
            ok("read", xs.read(TxnId::NONE, &node("readonly")))?,
            b"r".to_vec(),
        )?;
        d.push(expect_err(
            "write of a read-only node",
            xs.write(TxnId::NONE, &node("readonly"), b"x"),
            XsErrno::Eacces,
            Status::DENIED,
        )?);
        expect_err(
            "remove of a read-only node",
            xs.remove(TxnId::NONE, &node("readonly")),
            XsErrno::Eacces,
            Status::DENIED,
        )?;
        expect_err(
            "set_perms of a node the domain does not own",
            xs.set_perms(
                TxnId::NONE,
                &node("readonly"),
                &[Perm::new(domid, Access::Both)],
            ),
            XsErrno::Eacces,
            Status::DENIED,
        )?;
        expect_err(
            "create below a read-only node",
            xs.write(TxnId::NONE, &node("new"), b"x"),
            XsErrno::Eacces,
            Status::DENIED,
        )?;
        let names = sorted(ok("directory", xs.directory(TxnId::NONE, UNPRIV))?);
        eq("children", names, vec!["readonly".into(), "secret".into()])?;
        Ok(d.join("; "))
    });

    r.check("own_subtree", || {
        ok("write", xs.write(TxnId::NONE, "data/pvabi/x", b"1"))?;
        eq(
            "read",
            ok("read", xs.read(TxnId::NONE, "data/pvabi/x"))?,
            b"1".to_vec(),
        )?;
        let perms = ok("get_perms", xs.get_perms(TxnId::NONE, "data/pvabi/x"))?;
        eq("owner", perms.first().map(|p| p.domid), Some(domid))?;
        let t = ok("start", xs.transaction_start())?;
        ok("write in txn", xs.write(t, "data/pvabi/t", b"2"))?;
        ok("commit", xs.transaction_end(t, true))?;
        eq(
            "read",
            ok("read", xs.read(TxnId::NONE, "data/pvabi/t"))?,
            b"2".to_vec(),
        )?;
        ok("watch", xs.watch("data/pvabi", "w"))?;
        expect_event(&mut xs, "data/pvabi", "w")?;
        ok("write", xs.write(TxnId::NONE, "data/pvabi/y", b"3"))?;
        expect_event(&mut xs, "data/pvabi/y", "w")?;
        ok("unwatch", xs.unwatch("data/pvabi", "w"))?;
        ok("remove", xs.remove(TxnId::NONE, "data/pvabi"))?;
        Ok(format!(
            "write, read, owner d{domid}, transaction, relative watch events"
        ))
    });

    r.check("quota_entries", || {
        let mut created = 0u32;
        let err = loop {
            let r = xs.write(TxnId::NONE, &format!("data/q/{created}"), b"x");
            match r {
                Ok(()) if created <= quotas.entries => created += 1,
                other => break other,
            }
        };
        let name = expect_no_space("write past the node quota", err)?;
        if created == 0 || created > quotas.entries {
            return Err(format!("{created} nodes created with a quota of {}", quotas.entries));
        }
        ok("remove one", xs.remove(TxnId::NONE, "data/q/0"))?;
        ok("write after freeing one", xs.write(TxnId::NONE, "data/q/again", b"x"))?;
        ok("remove all", xs.remove(TxnId::NONE, "data/q"))?;
        Ok(format!(
            "{created} new nodes then {name} -> NO_SPACE (quota {}, the rest owned already); freeing one allows one",
            quotas.entries
        ))
    });

    r.check("quota_entry_size", || {
        let size = quotas.entry_size as usize;
        let name = expect_no_space(
            "value larger than the entry size quota",
            xs.write(TxnId::NONE, "data/big", &vec![b'x'; size + 1]),
        )?;
        ok(
            "half the quota",
            xs.write(TxnId::NONE, "data/big", &vec![b'x'; size / 2]),
        )?;
        ok("remove", xs.remove(TxnId::NONE, "data/big"))?;
        Ok(format!(
            "{} bytes: {name} -> NO_SPACE; {} bytes stored",
            size + 1,
            size / 2
        ))
    });

    r.check("quota_watches", || {
        let mut n = 0u32;
        let err = loop {
            match xs.watch(&format!("data/wq/{n}"), "q") {
                Ok(()) if n <= quotas.watches + 1 => n += 1,
                other => break other,
            }
        };
        let name = expect_no_space("watch past the watch quota", err)?;
        // xenstored refuses when the count already exceeds the quota, so it admits quota + 1;
        // the domain's kernel holds some of them.
        if n > quotas.watches + 1 {
            return Err(format!(
                "{n} watches registered with a quota of {}",
                quotas.watches
            ));
        }
        for i in 0..n {
            ok("unwatch", xs.unwatch(&format!("data/wq/{i}"), "q"))?;
        }
        ok("watch after unwatching", xs.watch("data/wq/again", "q"))?;
        ok("unwatch", xs.unwatch("data/wq/again", "q"))?;
        while ok("drain", xs.next_watch_event(Some(Duration::ZERO)))?.is_some() {}
        Ok(format!(
            "{n} watches then {name} -> NO_SPACE (quota {}; the kernel holds some, xenstored admits quota + 1)",
            quotas.watches
        ))
    });

    r.check("quota_transactions", || {
        let mut open = Vec::new();
        let err = loop {
            match xs.transaction_start() {
                Ok(t) if open.len() <= quotas.transactions as usize + 1 => open.push(t),
                other => break other,
            }
        };
        let name = expect_no_space("transaction past the quota", err)?;
        let n = open.len();
        // xenstored refuses when the count already exceeds the quota, so it admits quota + 1.
        if n == 0 || n > quotas.transactions as usize + 1 {
            return Err(format!(
                "{n} transactions open with a quota of {}",
                quotas.transactions
            ));
        }
        for t in open {
            ok("abort", xs.transaction_end(t, false))?;
        }
        let t = ok("start after aborting", xs.transaction_start())?;
        ok("abort", xs.transaction_end(t, false))?;
        Ok(format!(
            "{n} open then {name} -> NO_SPACE (quota {}, xenstored admits quota + 1); aborting frees them",
            quotas.transactions
        ))
    });
    Ok(())
}

fn main() -> ExitCode {
    const USAGE: &str = "usage: xenstore-conformance [--role dom0|unprivileged|all|domu] \
        [--socket PATH] [--device PATH] [--quota-entries N] [--quota-entry-size N] \
        [--quota-watches N] [--quota-transactions N]";
    let mut role = "dom0".to_string();
    let mut socket = DEFAULT_SOCKET.to_string();
    let mut device = XENBUS_DEVICE.to_string();
    let mut quotas = Quotas::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let Some(value) = args.next() else {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        };
        let number = value.parse::<u32>().ok();
        let parsed = match (arg.as_str(), number) {
            ("--role", _) => {
                role = value;
                true
            }
            ("--socket", _) => {
                socket = value;
                true
            }
            ("--device", _) => {
                device = value;
                true
            }
            ("--quota-entries", Some(n)) => {
                quotas.entries = n;
                true
            }
            ("--quota-entry-size", Some(n)) => {
                quotas.entry_size = n;
                true
            }
            ("--quota-watches", Some(n)) => {
                quotas.watches = n;
                true
            }
            ("--quota-transactions", Some(n)) => {
                quotas.transactions = n;
                true
            }
            _ => false,
        };
        if !parsed {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    }
    let mut r = Runner {
        passed: 0,
        failed: 0,
    };
    let outcome = match role.as_str() {
        "dom0" => dom0_checks(&mut r, &socket, &device),
        "unprivileged" => unprivileged_checks(&mut r, &socket, quotas),
        "all" => dom0_checks(&mut r, &socket, &device)
            .and_then(|()| unprivileged_checks(&mut r, &socket, quotas)),
        "domu" => domu_checks(&mut r, &device, quotas),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = outcome {
        r.failed += 1;
        println!("XSCHECK setup FAIL {e}");
    }
    println!("XSSUMMARY passed={} failed={}", r.passed, r.failed);
    if r.failed == 0 && r.passed > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
