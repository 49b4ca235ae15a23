//! Checks the xenstore clients of `pvabi-xen` against a real xenstored and prints one typed line
//! per check:
//!
//! ```text
//! XSCHECK <name> PASS|FAIL <detail>
//! XSMETRIC <name> <value>
//! XSSUMMARY passed=<n> failed=<n>
//! ```
//!
//! Usage: `xenstore-conformance [--role dom0] [--socket PATH] [--device PATH]`. The `dom0` role
//! needs a privileged connection (it runs in the domain that runs xenstored). Exit status 0 when
//! every check passed, 1 otherwise, 2 for a usage error.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use pvabi::Status;
use pvabi_xen::{
    status_for, Access, Error, Perm, TxnId, XenStore, XenStoreOps, XsErrno, XsRs, DEFAULT_SOCKET,
    XENBUS_DEVICE,
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

    // Round-trip cost of a READ over each transport (reported, not asserted).
    for (name, xs) in [("socket", &mut a)] {
        let n = 200u32;
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
        let n = 200u32;
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

fn main() -> ExitCode {
    let mut role = "dom0".to_string();
    let mut socket = DEFAULT_SOCKET.to_string();
    let mut device = XENBUS_DEVICE.to_string();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let slot = match arg.as_str() {
            "--role" => &mut role,
            "--socket" => &mut socket,
            "--device" => &mut device,
            _ => {
                eprintln!(
                    "usage: xenstore-conformance [--role dom0] [--socket PATH] [--device PATH]"
                );
                return ExitCode::from(2);
            }
        };
        match args.next() {
            Some(v) => *slot = v,
            None => {
                eprintln!("{arg} needs a value");
                return ExitCode::from(2);
            }
        }
    }
    let mut r = Runner {
        passed: 0,
        failed: 0,
    };
    let outcome = match role.as_str() {
        "dom0" => dom0_checks(&mut r, &socket, &device),
        other => {
            eprintln!("unknown role {other}");
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
