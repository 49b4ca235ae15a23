//! STORE (spec chapter 11): paths, values, host-written nodes and their guest access,
//! quotas, watches and transactions.
//!
//! Every case works below its own top-level node (`cf_*`) and removes it at the end. Nodes
//! with a restricted guest access are created with HARNESS.STORE_HOST_WRITE and, to clean
//! up, written again by the host as `READ_WRITE` before the guest removes them.
//!
//! This module also holds the small helpers the MEM, GNT, MC and SEC chapters share
//! (`Scratch`, `events`, `ram_top`, `host_alive`).

use pvabi::call;
use pvabi::discovery::Features;
use pvabi::memory::MemKind;
use pvabi::store::{GuestAccess, MAX_ENTRIES, MAX_TRANSACTIONS, MAX_WATCHES, MAX_WATCH_EVENTS};
use pvabi::{Ret, Status};
use pvabi_guest::event::{EventChannels, Port};

use crate::{Case, Ctx, GuestEntry};

/// The chapter's cases.
pub const CASES: &[Case] = &[
    Case {
        name: "store::write_creates_ancestors",
        clauses: "STORE-5",
        run: write_creates_ancestors,
    },
    Case {
        name: "store::read_value",
        clauses: "STORE-3",
        run: read_value,
    },
    Case {
        name: "store::empty_value",
        clauses: "STORE-21",
        run: empty_value,
    },
    Case {
        name: "store::list_children",
        clauses: "STORE-7",
        run: list_children,
    },
    Case {
        name: "store::list_missing_and_root",
        clauses: "STORE-30",
        run: list_missing_and_root,
    },
    Case {
        name: "store::read_missing",
        clauses: "STORE-28",
        run: read_missing,
    },
    Case {
        name: "store::remove_subtree",
        clauses: "STORE-8",
        run: remove_subtree,
    },
    Case {
        name: "store::path_rules",
        clauses: "STORE-1,STORE-20,STORE-23,STORE-24",
        run: path_rules,
    },
    Case {
        name: "store::bad_buffers",
        clauses: "STORE-4",
        run: bad_buffers,
    },
    Case {
        name: "store::value_limits",
        clauses: "STORE-6,STORE-19",
        run: value_limits,
    },
    Case {
        name: "store::host_node_read_list",
        clauses: "STORE-2",
        run: host_node_read_list,
    },
    Case {
        name: "store::host_node_write_remove",
        clauses: "STORE-25",
        run: host_node_write_remove,
    },
    Case {
        name: "store::host_node_guest_write",
        clauses: "STORE-5",
        run: host_node_guest_write,
    },
    Case {
        name: "store::host_node_create_below",
        clauses: "STORE-26",
        run: host_node_create_below,
    },
    Case {
        name: "store::host_node_subtree_remove",
        clauses: "STORE-27",
        run: host_node_subtree_remove,
    },
    Case {
        name: "store::node_quota",
        clauses: "STORE-19,STORE-29,SEC-11",
        run: node_quota,
    },
    Case {
        name: "store::watch_registers",
        clauses: "STORE-10",
        run: watch_registers,
    },
    Case {
        name: "store::watch_events",
        clauses: "STORE-11,STORE-13,STORE-20",
        run: watch_events,
    },
    Case {
        name: "store::watch_next_too_small",
        clauses: "STORE-35",
        run: watch_next_too_small,
    },
    Case {
        name: "store::unwatch",
        clauses: "STORE-12",
        run: unwatch,
    },
    Case {
        name: "store::watch_bad_ports",
        clauses: "STORE-32,STORE-33",
        run: watch_bad_ports,
    },
    Case {
        name: "store::watch_on_closed_port",
        clauses: "STORE-22",
        run: watch_on_closed_port,
    },
    Case {
        name: "store::watch_queue_overflow",
        clauses: "STORE-14,SEC-11",
        run: watch_queue_overflow,
    },
    Case {
        name: "store::watch_quota",
        clauses: "STORE-19,STORE-34,SEC-11",
        run: watch_quota,
    },
    Case {
        name: "store::txn_commit",
        clauses: "STORE-16",
        run: txn_commit,
    },
    Case {
        name: "store::txn_fires_at_commit",
        clauses: "STORE-11",
        run: txn_fires_at_commit,
    },
    Case {
        name: "store::txn_abort",
        clauses: "STORE-18",
        run: txn_abort,
    },
    Case {
        name: "store::txn_ended_ids",
        clauses: "STORE-31,STORE-37",
        run: txn_ended_ids,
    },
    Case {
        name: "store::txn_id_width",
        clauses: "STORE-9",
        run: txn_id_width,
    },
    Case {
        name: "store::txn_conflict",
        clauses: "STORE-16",
        run: txn_conflict,
    },
    Case {
        name: "store::txn_snapshot",
        clauses: "STORE-17",
        run: txn_snapshot,
    },
    Case {
        name: "store::txn_quota",
        clauses: "STORE-15,STORE-19,SEC-11",
        run: txn_quota,
    },
    Case {
        name: "store::txn_feature_absent",
        clauses: "STORE-36",
        run: txn_feature_absent,
    },
];

/// Guest functions this chapter's cases pass as vCPU entries or callbacks.
pub const FUNCTIONS: &[GuestEntry] = &[];

// ---------------------------------------------------------------------------------------
// Helpers shared by this module and the MEM, GNT, MC and SEC chapters.
// ---------------------------------------------------------------------------------------

/// Guest RAM carved into small pieces for one case (paths, values, result buffers).
pub(crate) struct Scratch {
    rest: &'static mut [u8],
}

impl Scratch {
    /// `len` bytes of guest RAM from the suite's arena (a failure is recorded when it is
    /// exhausted).
    pub(crate) fn new(c: &mut Ctx<'_>, len: usize) -> Option<Self> {
        c.buf(len, 4096).map(|rest| Self { rest })
    }

    /// `n` zeroed bytes, 8-byte aligned (shorter if the scratch is exhausted).
    pub(crate) fn take(&mut self, n: usize) -> &'static mut [u8] {
        let rest = core::mem::take(&mut self.rest);
        let pad = rest.as_ptr().align_offset(8).min(rest.len());
        let (_, rest) = rest.split_at_mut(pad);
        let n = n.min(rest.len());
        let (a, b) = rest.split_at_mut(n);
        self.rest = b;
        a.fill(0);
        a
    }

    /// A copy of `bytes` in guest RAM.
    pub(crate) fn put(&mut self, bytes: &[u8]) -> &'static mut [u8] {
        let b = self.take(bytes.len());
        for (d, s) in b.iter_mut().zip(bytes) {
            *d = *s;
        }
        b
    }
}

/// The GPA of a scratch slice.
pub(crate) fn gpa(c: &Ctx<'_>, b: &[u8]) -> u64 {
    if b.is_empty() {
        return 0;
    }
    c.gpa(b)
}

/// The end of the highest guest-RAM range (kind RAM or LOADER) of the boot memory map, or
/// the boot info's RAM size when there is no map: addresses at or above it are not guest
/// RAM.
pub(crate) fn ram_top(c: &Ctx<'_>) -> u64 {
    let top =
        c.pv.boot_memory_map()
            .filter(|e| MemKind(e.kind) == MemKind::RAM || MemKind(e.kind) == MemKind::LOADER)
            .map(|e| e.base.saturating_add(e.length))
            .max()
            .unwrap_or(0);
    top.max(c.ram_end())
}

/// Checks that the host still answers an ordinary call after hostile input (`SEC-2`).
pub(crate) fn host_alive(c: &mut Ctx<'_>, after: &str) {
    let r = c.raw(call::BASE_GET_ABI_VERSION, [0; 6]);
    c.check(
        r.status == Status::SUCCESS,
        format_args!(
            "after {after}: BASE.GET_ABI_VERSION answered {:?}",
            r.status
        ),
    );
}

/// The registered event page, registering one (shared by every case) when none is.
pub(crate) fn events(c: &mut Ctx<'_>) -> Option<EventChannels> {
    if let Some(ev) = c.shared.events {
        return Some(ev);
    }
    let page = c.alloc(pvabi_guest::shared::EventPageShared::new())?;
    let page: &'static pvabi_guest::shared::EventPageShared = page;
    let r = c.pv.event_register_page(page);
    let ev = c.expect_ok(r, "EVENT.REGISTER_PAGE for the suite's event page")?;
    c.shared.events = Some(ev);
    Some(ev)
}

/// Whether the host sets feature bits `f`.
pub(crate) fn has(c: &Ctx<'_>, f: Features) -> bool {
    c.pv.info().has_features(f)
}

/// Expects the raw return `r` to carry status `want` (SUCCESS included); returns whether
/// it did.
pub(crate) fn expect(c: &mut Ctx<'_>, r: Ret, want: Status, what: &str) -> bool {
    c.check(
        r.status == want,
        format_args!(
            "{what}: expected {want:?}, got {:?} (value {:#x})",
            r.status, r.value
        ),
    )
}

// ---------------------------------------------------------------------------------------
// Store helpers (raw calls on scratch paths).
// ---------------------------------------------------------------------------------------

struct St {
    s: Scratch,
}

impl St {
    fn new(c: &mut Ctx<'_>) -> Option<Self> {
        Scratch::new(c, 24 * 1024).map(|s| Self { s })
    }

    fn read(&mut self, c: &Ctx<'_>, path: &[u8], buf: &mut [u8], txn: u64) -> Ret {
        let p = self.s.put(path);
        c.raw(
            call::STORE_READ,
            [
                gpa(c, p),
                p.len() as u64,
                gpa(c, buf),
                buf.len() as u64,
                txn,
                0,
            ],
        )
    }

    fn write(&mut self, c: &Ctx<'_>, path: &[u8], val: &[u8], txn: u64) -> Ret {
        let p = self.s.put(path);
        let v = self.s.put(val);
        c.raw(
            call::STORE_WRITE,
            [gpa(c, p), p.len() as u64, gpa(c, v), v.len() as u64, txn, 0],
        )
    }

    fn list(&mut self, c: &Ctx<'_>, path: &[u8], buf: &mut [u8], txn: u64) -> Ret {
        let p = self.s.put(path);
        c.raw(
            call::STORE_LIST,
            [
                gpa(c, p),
                p.len() as u64,
                gpa(c, buf),
                buf.len() as u64,
                txn,
                0,
            ],
        )
    }

    fn remove(&mut self, c: &Ctx<'_>, path: &[u8], txn: u64) -> Ret {
        let p = self.s.put(path);
        c.raw(
            call::STORE_REMOVE,
            [gpa(c, p), p.len() as u64, txn, 0, 0, 0],
        )
    }

    fn watch(&mut self, c: &Ctx<'_>, path: &[u8], port: u64) -> Ret {
        let p = self.s.put(path);
        c.raw(
            call::STORE_WATCH,
            [gpa(c, p), p.len() as u64, port, 0, 0, 0],
        )
    }

    fn host_write(&mut self, c: &Ctx<'_>, path: &[u8], val: &[u8], access: GuestAccess) -> Ret {
        let p = self.s.put(path);
        let v = self.s.put(val);
        c.raw(
            call::HARNESS_STORE_HOST_WRITE,
            [
                gpa(c, p),
                p.len() as u64,
                gpa(c, v),
                v.len() as u64,
                u64::from(access.0),
                0,
            ],
        )
    }

    fn host_read(&mut self, c: &Ctx<'_>, path: &[u8], buf: &mut [u8]) -> Ret {
        let p = self.s.put(path);
        c.raw(
            call::HARNESS_STORE_HOST_READ,
            [
                gpa(c, p),
                p.len() as u64,
                gpa(c, buf),
                buf.len() as u64,
                0,
                0,
            ],
        )
    }

    /// Expects `path` to read as `val` (guest view, `txn`).
    fn expect_value(&mut self, c: &mut Ctx<'_>, path: &[u8], val: &[u8], txn: u64, what: &str) {
        let buf = self.s.take(val.len() + 16);
        let r = self.read(c, path, buf, txn);
        let got = buf.get(..(r.value as usize).min(buf.len())).unwrap_or(&[]);
        c.check(
            r.status == Status::SUCCESS && r.value == val.len() as u64 && got == val,
            format_args!(
                "{what}: READ {} expected {:?}, got {:?} value {} bytes {:?}",
                Show(path),
                Show(val),
                r.status,
                r.value,
                Show(got)
            ),
        );
    }

    /// Expects `path` to be absent (guest view, `txn`).
    fn expect_missing(&mut self, c: &mut Ctx<'_>, path: &[u8], txn: u64, what: &str) {
        let r = self.read(c, path, &mut [], txn);
        c.check(
            r.status == Status::NOT_FOUND,
            format_args!(
                "{what}: READ {} expected NOT_FOUND, got {:?}",
                Show(path),
                r.status
            ),
        );
    }

    /// Expects the host's view of `path` to be `val` (`None`: absent).
    fn expect_host(&mut self, c: &mut Ctx<'_>, path: &[u8], val: Option<&[u8]>, what: &str) {
        let buf = self.s.take(val.map_or(0, <[u8]>::len) + 16);
        let r = self.host_read(c, path, buf);
        let ok = match val {
            None => r.status == Status::NOT_FOUND,
            Some(v) => {
                r.status == Status::SUCCESS
                    && r.value == v.len() as u64
                    && buf.get(..v.len()) == Some(v)
            }
        };
        c.check(
            ok,
            format_args!(
                "{what}: host view of {} expected {:?}, got {:?} value {}",
                Show(path),
                val.map(Show),
                r.status,
                r.value
            ),
        );
    }

    /// The names STORE.LIST returns for `path` (as one byte string), or the status.
    fn names(&mut self, c: &Ctx<'_>, path: &[u8], txn: u64) -> Result<&'static [u8], Status> {
        let buf = self.s.take(1024);
        let r = self.list(c, path, buf, txn);
        if r.status != Status::SUCCESS {
            return Err(r.status);
        }
        let buf: &'static [u8] = buf;
        buf.get(..r.value as usize).ok_or(Status::FAILED)
    }

    /// Removes `path` (cleanup; a missing node is fine).
    fn cleanup(&mut self, c: &mut Ctx<'_>, path: &[u8]) {
        let r = self.remove(c, path, 0);
        c.check(
            r.status == Status::SUCCESS || r.status == Status::NOT_FOUND,
            format_args!("cleanup: REMOVE {} got {:?}", Show(path), r.status),
        );
    }

    /// Takes every queued watch event (bounded); returns how many there were.
    fn drain(&mut self, c: &Ctx<'_>) -> usize {
        let buf = self.s.take(16 + 300);
        let mut n = 0;
        for _ in 0..(MAX_WATCH_EVENTS as usize + 8) {
            let r = c.raw(
                call::STORE_WATCH_NEXT,
                [gpa(c, buf), buf.len() as u64, 0, 0, 0, 0],
            );
            if r.status != Status::SUCCESS {
                break;
            }
            n += 1;
        }
        n
    }

    /// The next watch event, checked to be (watch, path, dropped).
    fn expect_event(&mut self, c: &mut Ctx<'_>, watch: u64, path: &[u8], dropped: u32, what: &str) {
        let buf = self.s.take(16 + 300);
        let r = c.raw(
            call::STORE_WATCH_NEXT,
            [gpa(c, buf), buf.len() as u64, 0, 0, 0, 0],
        );
        if !c.check(
            r.status == Status::SUCCESS,
            format_args!("{what}: WATCH_NEXT expected an event, got {:?}", r.status),
        ) {
            return;
        }
        let ev = WatchEv::parse(buf);
        let got_path = buf.get(16..16 + ev.path_len as usize).unwrap_or(&[]);
        c.check(
            r.value == 16 + path.len() as u64
                && u64::from(ev.watch) == watch
                && got_path == path
                && ev.dropped == dropped
                && ev.reserved == 0,
            format_args!(
                "{what}: WATCH_NEXT returned {} bytes, watch {} path {:?} dropped {} reserved {}; \
                 expected {} bytes, watch {watch} path {:?} dropped {dropped} reserved 0",
                r.value,
                ev.watch,
                Show(got_path),
                ev.dropped,
                ev.reserved,
                16 + path.len(),
                Show(path)
            ),
        );
    }

    /// Expects no queued watch event.
    fn expect_no_event(&mut self, c: &mut Ctx<'_>, what: &str) {
        let buf = self.s.take(16 + 300);
        let r = c.raw(
            call::STORE_WATCH_NEXT,
            [gpa(c, buf), buf.len() as u64, 0, 0, 0, 0],
        );
        c.check(
            r.status == Status::NOT_FOUND,
            format_args!(
                "{what}: WATCH_NEXT expected NOT_FOUND (no event), got {:?}",
                r.status
            ),
        );
    }
}

/// A parsed `WatchEvent` header.
struct WatchEv {
    watch: u32,
    path_len: u32,
    dropped: u32,
    reserved: u32,
}

impl WatchEv {
    fn parse(b: &[u8]) -> Self {
        let w = |i: usize| {
            let mut x = [0u8; 4];
            if let Some(s) = b.get(i..i + 4) {
                x.copy_from_slice(s);
            }
            u32::from_le_bytes(x)
        };
        Self {
            watch: w(0),
            path_len: w(4),
            dropped: w(8),
            reserved: w(12),
        }
    }
}

/// Bytes shown as text in details.
#[derive(Clone, Copy)]
pub(crate) struct Show<'a>(pub(crate) &'a [u8]);

impl core::fmt::Debug for Show<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("\"")?;
        for (i, &b) in self.0.iter().enumerate() {
            if i == 48 {
                write!(f, "...({} bytes)", self.0.len())?;
                break;
            }
            if b.is_ascii_graphic() || b == b' ' {
                write!(f, "{}", b as char)?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        f.write_str("\"")
    }
}

impl core::fmt::Display for Show<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(self, f)
    }
}

/// The pending bit of `port` (cleared) after a call that should or should not raise it.
fn take_pending(ev: &EventChannels, port: Port) -> bool {
    ev.clear_pending(port)
}

// ---------------------------------------------------------------------------------------
// Cases.
// ---------------------------------------------------------------------------------------

/// Creates `cf_basic/x/y` = `hello` and the children `Z`, `_-9`, `a` (empty), `b.1` of
/// `cf_basic/x`.
fn basic_setup(c: &mut Ctx<'_>) -> Option<St> {
    let mut s = St::new(c)?;
    s.cleanup(c, b"cf_basic");
    let mut ok = true;
    for (p, v) in [
        (&b"cf_basic/x/y"[..], &b"hello"[..]),
        (b"cf_basic/x/a", b""),
        (b"cf_basic/x/b.1", b"v"),
        (b"cf_basic/x/Z", b"v"),
        (b"cf_basic/x/_-9", b"v"),
    ] {
        let r = s.write(c, p, v, 0);
        ok &= expect(c, r, Status::SUCCESS, "setup: STORE.WRITE");
    }
    ok.then_some(s)
}

/// The names `basic_setup` puts below `cf_basic/x`, as STORE.LIST writes them.
const BASIC_NAMES: &[u8] = b"Z\0_-9\0a\0b.1\0y\0";

fn write_creates_ancestors(c: &mut Ctx<'_>) {
    let Some(mut s) = St::new(c) else { return };
    s.cleanup(c, b"cf_w5");
    // The node and its missing ancestors (empty, guest-owned) are created.
    let r = s.write(c, b"cf_w5/x/y", b"hello", 0);
    expect(c, r, Status::SUCCESS, "STORE-5 WRITE cf_w5/x/y");
    s.expect_value(c, b"cf_w5/x/y", b"hello", 0, "STORE-5 value");
    s.expect_value(c, b"cf_w5/x", b"", 0, "STORE-5 created ancestor is empty");
    s.expect_value(c, b"cf_w5", b"", 0, "STORE-5 created ancestor is empty");
    s.expect_host(
        c,
        b"cf_w5/x/y",
        Some(b"hello"),
        "STORE-5 host sees the write",
    );
    // The created ancestor is the guest's: it may write and remove it.
    let r = s.write(c, b"cf_w5/x", b"anc", 0);
    expect(c, r, Status::SUCCESS, "STORE-5 WRITE of a created ancestor");
    s.expect_value(c, b"cf_w5/x", b"anc", 0, "STORE-5 ancestor rewritten");
    // A shorter value replaces the whole value.
    let r = s.write(c, b"cf_w5/x/y", b"hi", 0);
    expect(c, r, Status::SUCCESS, "STORE-5 WRITE of a shorter value");
    s.expect_value(c, b"cf_w5/x/y", b"hi", 0, "STORE-5 overwrite");
    let r = s.remove(c, b"cf_w5", 0);
    expect(c, r, Status::SUCCESS, "STORE-5 REMOVE of the created nodes");
}

fn read_value(c: &mut Ctx<'_>) {
    let Some(mut s) = basic_setup(c) else { return };
    let buf = s.s.take(5);
    let r = s.read(c, b"cf_basic/x/y", buf, 0);
    c.check(
        r.status == Status::SUCCESS && r.value == 5 && buf == b"hello",
        format_args!(
            "STORE-3 READ into 5 bytes: {:?} {} {:?}",
            r.status,
            r.value,
            Show(buf)
        ),
    );
    let big = s.s.take(64);
    let r = s.read(c, b"cf_basic/x/y", big, 0);
    c.check(
        r.status == Status::SUCCESS && r.value == 5 && big.get(..5) == Some(&b"hello"[..]),
        format_args!("STORE-3 READ into 64 bytes: {:?} {}", r.status, r.value),
    );
    // Too small: BUFFER_TOO_SMALL with the length, nothing written.
    let small = s.s.take(4);
    small.fill(0xAA);
    let r = s.read(c, b"cf_basic/x/y", small, 0);
    c.check(
        r.status == Status::BUFFER_TOO_SMALL && r.value == 5,
        format_args!(
            "STORE-3 READ into 4 bytes: expected BUFFER_TOO_SMALL value 5, got {:?} {}",
            r.status, r.value
        ),
    );
    c.check(
        small.iter().all(|b| *b == 0xAA),
        format_args!("STORE-3 BUFFER_TOO_SMALL wrote into the buffer"),
    );
    let r = s.read(c, b"cf_basic/x/y", &mut [], 0);
    c.check(
        r.status == Status::BUFFER_TOO_SMALL && r.value == 5,
        format_args!(
            "STORE-3 READ with buf_len 0: expected BUFFER_TOO_SMALL 5, got {:?} {}",
            r.status, r.value
        ),
    );
    s.cleanup(c, b"cf_basic");
}

fn empty_value(c: &mut Ctx<'_>) {
    let Some(mut s) = St::new(c) else { return };
    s.cleanup(c, b"cf_e");
    let r = s.write(c, b"cf_e", b"", 0);
    expect(c, r, Status::SUCCESS, "STORE-21 WRITE of an empty value");
    let buf = s.s.take(8);
    for (b, len) in [(&mut [][..], 0usize), (&mut buf[..], 8)] {
        let r = s.read(c, b"cf_e", b, 0);
        c.check(
            r.status == Status::SUCCESS && r.value == 0,
            format_args!(
                "STORE-21 READ of an empty value into {len} bytes: {:?} {}",
                r.status, r.value
            ),
        );
    }
    // A value made empty again.
    let r = s.write(c, b"cf_e", b"x", 0);
    expect(c, r, Status::SUCCESS, "WRITE of a value");
    let r = s.write(c, b"cf_e", b"", 0);
    expect(
        c,
        r,
        Status::SUCCESS,
        "STORE-21 WRITE of an empty value over a value",
    );
    let r = s.read(c, b"cf_e", &mut [], 0);
    c.check(
        r.status == Status::SUCCESS && r.value == 0,
        format_args!(
            "STORE-21 READ of the emptied value: {:?} {}",
            r.status, r.value
        ),
    );
    s.cleanup(c, b"cf_e");
}

fn list_children(c: &mut Ctx<'_>) {
    let Some(mut s) = basic_setup(c) else { return };
    match s.names(c, b"cf_basic/x", 0) {
        Ok(n) => {
            c.check(
                n == BASIC_NAMES,
                format_args!(
                    "STORE-7 LIST: expected {:?}, got {:?}",
                    Show(BASIC_NAMES),
                    Show(n)
                ),
            );
        }
        Err(e) => {
            c.check(false, format_args!("STORE-7 LIST failed: {e:?}"));
        }
    }
    let exact = s.s.take(BASIC_NAMES.len());
    let r = s.list(c, b"cf_basic/x", exact, 0);
    c.check(
        r.status == Status::SUCCESS && r.value == BASIC_NAMES.len() as u64 && exact == BASIC_NAMES,
        format_args!(
            "STORE-7 LIST into an exact buffer: {:?} {}",
            r.status, r.value
        ),
    );
    let small = s.s.take(BASIC_NAMES.len() - 1);
    small.fill(0xAA);
    let r = s.list(c, b"cf_basic/x", small, 0);
    c.check(
        r.status == Status::BUFFER_TOO_SMALL && r.value == BASIC_NAMES.len() as u64,
        format_args!(
            "STORE-7 LIST into a short buffer: expected BUFFER_TOO_SMALL {}, got {:?} {}",
            BASIC_NAMES.len(),
            r.status,
            r.value
        ),
    );
    c.check(
        small.iter().all(|b| *b == 0xAA),
        format_args!("STORE-7 BUFFER_TOO_SMALL wrote into the buffer"),
    );
    let buf = s.s.take(16);
    for leaf in [&b"cf_basic/x/y"[..], b"cf_basic/x/a"] {
        let r = s.list(c, leaf, buf, 0);
        c.check(
            r.status == Status::SUCCESS && r.value == 0,
            format_args!(
                "STORE-7 LIST of leaf {}: {:?} {}",
                Show(leaf),
                r.status,
                r.value
            ),
        );
    }
    match s.names(c, b"cf_basic", 0) {
        Ok(n) => c.check(
            n == b"x\0",
            format_args!("STORE-7 LIST of cf_basic: {:?}", Show(n)),
        ),
        Err(e) => c.check(false, format_args!("STORE-7 LIST of cf_basic: {e:?}")),
    };
    s.cleanup(c, b"cf_basic");
}

fn list_missing_and_root(c: &mut Ctx<'_>) {
    let Some(mut s) = basic_setup(c) else { return };
    let buf = s.s.take(16);
    let r = s.list(c, b"cf_basic/nope", buf, 0);
    expect(c, r, Status::NOT_FOUND, "STORE-30 LIST of a missing node");
    let r = s.list(c, b"cf_basic/x/y/deeper", buf, 0);
    expect(c, r, Status::NOT_FOUND, "STORE-30 LIST below a leaf");
    // The root (the empty path) always exists, and lists cf_basic.
    let r = c.raw(call::STORE_LIST, [0, 0, 0, 0, 0, 0]);
    c.check(
        r.status == Status::SUCCESS || r.status == Status::BUFFER_TOO_SMALL,
        format_args!("STORE-30 LIST of the root: {:?}", r.status),
    );
    let root = s.s.take(r.value as usize + 16);
    let r = c.raw(
        call::STORE_LIST,
        [0, 0, gpa(c, root), root.len() as u64, 0, 0],
    );
    let names = root.get(..r.value as usize).unwrap_or(&[]);
    c.check(
        r.status == Status::SUCCESS && names.split(|b| *b == 0).any(|n| n == b"cf_basic"),
        format_args!(
            "STORE-30 LIST of the root: {:?}, names {:?} lack cf_basic",
            r.status,
            Show(names)
        ),
    );
    s.cleanup(c, b"cf_basic");
}

fn read_missing(c: &mut Ctx<'_>) {
    let Some(mut s) = basic_setup(c) else { return };
    s.expect_missing(c, b"cf_basic/x/nope", 0, "STORE-28");
    s.expect_missing(c, b"cf_basic/x/y/deeper", 0, "STORE-28");
    s.expect_missing(c, b"cf_none_such", 0, "STORE-28");
    let buf = s.s.take(16);
    buf.fill(0xAA);
    let r = s.read(c, b"cf_basic/nope", buf, 0);
    c.check(
        r.status == Status::NOT_FOUND && buf.iter().all(|b| *b == 0xAA),
        format_args!(
            "STORE-28 READ of a missing node: {:?}, buffer changed?",
            r.status
        ),
    );
    s.cleanup(c, b"cf_basic");
}

fn remove_subtree(c: &mut Ctx<'_>) {
    let Some(mut s) = basic_setup(c) else { return };
    let r = s.remove(c, b"cf_basic/x", 0);
    expect(c, r, Status::SUCCESS, "STORE-8 REMOVE cf_basic/x");
    s.expect_missing(c, b"cf_basic/x", 0, "STORE-8 removed node");
    s.expect_missing(c, b"cf_basic/x/y", 0, "STORE-8 removed subtree");
    s.expect_host(
        c,
        b"cf_basic/x/b.1",
        None,
        "STORE-8 removed subtree (host view)",
    );
    let buf = s.s.take(16);
    let r = s.list(c, b"cf_basic/x", buf, 0);
    expect(c, r, Status::NOT_FOUND, "STORE-8 LIST of a removed node");
    let r = s.remove(c, b"cf_basic/x", 0);
    expect(c, r, Status::NOT_FOUND, "STORE-8 REMOVE of a removed node");
    let r = s.remove(c, b"cf_basic/never", 0);
    expect(c, r, Status::NOT_FOUND, "STORE-8 REMOVE of a missing node");
    s.expect_value(c, b"cf_basic", b"", 0, "STORE-8 the parent is kept");
    let r = s.list(c, b"cf_basic", buf, 0);
    c.check(
        r.status == Status::SUCCESS && r.value == 0,
        format_args!(
            "STORE-8 the parent lists no children: {:?} {}",
            r.status, r.value
        ),
    );
    let r = s.remove(c, b"cf_basic", 0);
    expect(c, r, Status::SUCCESS, "STORE-8 REMOVE cf_basic");
    s.expect_host(c, b"cf_basic", None, "STORE-8 removed (host view)");
}

/// Malformed paths (`STORE-1`), each sent to READ, WRITE, LIST, REMOVE and WATCH.
const BAD_PATHS: &[&[u8]] = &[
    b"/cf_p",
    b"cf_p/",
    b"/",
    b"cf_p//a",
    b".",
    b"..",
    b"cf_p/.",
    b"cf_p/./a",
    b"cf_p/..",
    b"../cf_p",
    b"cf_p/../../x",
    b"/local/domain/0/x",
    b"cf p",
    b"cf_p\0",
    b"cf\0p",
    b"cf_p\xff",
    b"cf_\xc3\xa9",
    b"cf_p:a",
    b"cf_p*",
    b"cf_p\n",
    b"cf_p\\a",
];

fn path_rules(c: &mut Ctx<'_>) {
    let Some(mut s) = St::new(c) else { return };
    let Some(ev) = events(c) else { return };
    let Some(port) = c.expect_ok(c.pv.event_alloc(), "EVENT.ALLOC") else {
        return;
    };
    let buf = s.s.take(64);
    let long_ok = [b'a'; 256];
    let long_bad = [b'a'; 257];
    for p in BAD_PATHS
        .iter()
        .copied()
        .chain(core::iter::once(&long_bad[..]))
    {
        let r = s.read(c, p, buf, 0);
        expect(c, r, Status::INVALID_PARAM, "STORE-1 READ of a bad path");
        let r = s.write(c, p, b"v", 0);
        c.check(
            r.status == Status::INVALID_PARAM,
            format_args!(
                "STORE-1 WRITE of bad path {:?}: expected INVALID_PARAM, got {:?}",
                Show(p),
                r.status
            ),
        );
        let r = s.list(c, p, buf, 0);
        expect(c, r, Status::INVALID_PARAM, "STORE-1 LIST of a bad path");
        let r = s.remove(c, p, 0);
        expect(c, r, Status::INVALID_PARAM, "STORE-1 REMOVE of a bad path");
        let r = s.watch(c, p, port.arg());
        if r.status == Status::SUCCESS {
            let _ = c.raw(call::STORE_UNWATCH, [r.value, 0, 0, 0, 0, 0]);
        }
        expect(c, r, Status::INVALID_PARAM, "STORE-1 WATCH of a bad path");
    }
    // Nothing was created by the refused writes (STORE-20: no path reaches outside the
    // subtree; the escapes above were refused, and the root lists none of their names).
    s.expect_missing(c, b"cf_p", 0, "STORE-1 refused writes created nothing");
    s.expect_host(c, b"cf_p", None, "STORE-1 refused writes created nothing");

    // A 256-byte path is allowed (the limit is inclusive).
    let r = s.write(c, &long_ok, b"max", 0);
    expect(c, r, Status::SUCCESS, "STORE-1 WRITE of a 256-byte path");
    s.expect_value(c, &long_ok, b"max", 0, "STORE-1 256-byte path");
    let r = s.remove(c, &long_ok, 0);
    expect(c, r, Status::SUCCESS, "REMOVE of the 256-byte path");
    // A path of exactly 256 bytes with components is fine too; 257 is not.
    let mut nested = [b'b'; 257];
    for i in (10..257).step_by(10) {
        if let Some(b) = nested.get_mut(i) {
            *b = b'/';
        }
    }
    if let Some(n) = nested.get_mut(..256) {
        let r = s.write(c, n, b"n", 0);
        expect(
            c,
            r,
            Status::SUCCESS,
            "STORE-1 WRITE of a 256-byte nested path",
        );
    }
    let r = s.write(c, &nested, b"n", 0);
    expect(
        c,
        r,
        Status::INVALID_PARAM,
        "STORE-1 WRITE of a 257-byte nested path",
    );
    let r = s.remove(c, b"bbbbbbbbbb", 0);
    expect(c, r, Status::SUCCESS, "REMOVE of the nested path");

    // STORE-23: path_len above 256 fails with INVALID_PARAM whatever path_gpa is, before any
    // memory is read (these addresses are outside guest RAM or wrap).
    let top = ram_top(c);
    for (gpa_, what) in [
        (top + 0x10_0000, "beyond RAM"),
        (u64::MAX - 7, "wrapping"),
        (top - 8, "straddling the end of RAM"),
    ] {
        for (id, name) in [
            (call::STORE_READ, "READ"),
            (call::STORE_WRITE, "WRITE"),
            (call::STORE_LIST, "LIST"),
            (call::STORE_REMOVE, "REMOVE"),
        ] {
            let r = c.raw(id, [gpa_, 257, 0, 0, 0, 0]);
            c.check(
                r.status == Status::INVALID_PARAM,
                format_args!(
                    "STORE-23 {name} path_len 257 at {what} gpa: expected INVALID_PARAM, got {:?}",
                    r.status
                ),
            );
        }
        let r = c.raw(call::STORE_WATCH, [gpa_, 257, port.arg(), 0, 0, 0]);
        expect(c, r, Status::INVALID_PARAM, "STORE-23 WATCH path_len 257");
        let r = c.raw(call::STORE_READ, [gpa_, u64::MAX, 0, 0, 0, 0]);
        expect(
            c,
            r,
            Status::INVALID_PARAM,
            "STORE-23 READ path_len u64::MAX",
        );
    }

    // STORE-24: the empty path is LIST-only.
    let v = s.s.put(b"v");
    for (id, args, name) in [
        (call::STORE_READ, [0, 0, gpa(c, buf), 64, 0, 0], "READ"),
        (call::STORE_WRITE, [0, 0, gpa(c, v), 1, 0, 0], "WRITE"),
        (call::STORE_REMOVE, [0, 0, 0, 0, 0, 0], "REMOVE"),
        (call::STORE_WATCH, [0, 0, port.arg(), 0, 0, 0], "WATCH"),
    ] {
        let r = c.raw(id, args);
        if id == call::STORE_WATCH && r.status == Status::SUCCESS {
            let _ = c.raw(call::STORE_UNWATCH, [r.value, 0, 0, 0, 0, 0]);
        }
        c.check(
            r.status == Status::INVALID_PARAM,
            format_args!(
                "STORE-24 {name} of the empty path: expected INVALID_PARAM, got {:?}",
                r.status
            ),
        );
    }
    let r = c.raw(call::STORE_LIST, [0, 0, 0, 0, 0, 0]);
    c.check(
        r.status == Status::SUCCESS || r.status == Status::BUFFER_TOO_SMALL,
        format_args!("STORE-24 LIST of the empty path: {:?}", r.status),
    );
    s.drain(c);
    let _ = ev.clear_pending(port);
    let _ = c.pv.event_close(port);
}

fn bad_buffers(c: &mut Ctx<'_>) {
    let Some(mut s) = St::new(c) else { return };
    s.cleanup(c, b"cf_addr");
    let top = ram_top(c);
    let p = s.s.put(b"cf_addr/n");
    let pg = gpa(c, p);
    let plen = p.len() as u64;
    let v = s.s.put(b"value");
    let vg = gpa(c, v);
    let out = s.s.take(64);
    let og = gpa(c, out);
    let bad: [(u64, u64, &str); 4] = [
        (top + 0x1000, 16, "beyond RAM"),
        (top - 8, 64, "straddling the end of RAM"),
        (u64::MAX - 7, 64, "wrapping"),
        (vg, u64::MAX - vg + 8, "a length that wraps"),
    ];
    for (bg, bl, what) in bad {
        let path_len = if bl > 256 { 8 } else { bl.min(9) };
        // A bad path buffer.
        for (id, name) in [
            (call::STORE_READ, "READ"),
            (call::STORE_WRITE, "WRITE"),
            (call::STORE_LIST, "LIST"),
            (call::STORE_REMOVE, "REMOVE"),
        ] {
            if bl > 256 {
                continue; // path lengths above 256 are STORE-23's.
            }
            let r = c.raw(id, [bg, path_len, og, 0, 0, 0]);
            c.check(
                r.status == Status::INVALID_ADDRESS,
                format_args!(
                    "STORE-4 {name} with the path {what}: expected INVALID_ADDRESS, got {:?}",
                    r.status
                ),
            );
        }
        // A bad value buffer (lengths above 4096 are STORE-6's).
        if bl > 4096 {
            continue;
        }
        let r = c.raw(call::STORE_WRITE, [pg, plen, bg, bl, 0, 0]);
        c.check(
            r.status == Status::INVALID_ADDRESS,
            format_args!(
                "STORE-4 WRITE with the value {what}: expected INVALID_ADDRESS, got {:?}",
                r.status
            ),
        );
        s.expect_missing(c, b"cf_addr/n", 0, "STORE-4 refused WRITE created nothing");
    }
    // Result buffers: READ and LIST of an existing node into bad buffers.
    let r = s.write(c, b"cf_addr/n", b"value", 0);
    expect(c, r, Status::SUCCESS, "WRITE cf_addr/n");
    let r = s.write(c, b"cf_addr/n/child", b"c", 0);
    expect(c, r, Status::SUCCESS, "WRITE cf_addr/n/child");
    for (bg, bl, what) in bad {
        for (id, name) in [(call::STORE_READ, "READ"), (call::STORE_LIST, "LIST")] {
            let r = c.raw(id, [pg, plen, bg, bl, 0, 0]);
            c.check(
                r.status == Status::INVALID_ADDRESS,
                format_args!(
                    "STORE-4 {name} into a result buffer {what}: expected INVALID_ADDRESS, \
                     got {:?}",
                    r.status
                ),
            );
        }
    }
    // WATCH with a bad path buffer.
    if let Some(ev) = events(c) {
        if let Some(port) = c.expect_ok(c.pv.event_alloc(), "EVENT.ALLOC") {
            for (bg, bl, what) in bad {
                if bl > 256 {
                    continue;
                }
                let r = c.raw(call::STORE_WATCH, [bg, bl.min(9), port.arg(), 0, 0, 0]);
                if r.status == Status::SUCCESS {
                    let _ = c.raw(call::STORE_UNWATCH, [r.value, 0, 0, 0, 0, 0]);
                }
                c.check(
                    r.status == Status::INVALID_ADDRESS,
                    format_args!(
                        "STORE-4 WATCH with the path {what}: expected INVALID_ADDRESS, got {:?}",
                        r.status
                    ),
                );
            }
            // WATCH_NEXT with an event queued and a bad buffer: INVALID_ADDRESS, event kept.
            let r = s.watch(c, b"cf_addr/n", port.arg());
            if expect(c, r, Status::SUCCESS, "WATCH cf_addr/n") {
                let w = r.value;
                let r = s.write(c, b"cf_addr/n", b"again", 0);
                expect(c, r, Status::SUCCESS, "WRITE to fire the watch");
                for (bg, bl, what) in bad {
                    let r = c.raw(call::STORE_WATCH_NEXT, [bg, bl, 0, 0, 0, 0]);
                    c.check(
                        r.status == Status::INVALID_ADDRESS,
                        format_args!(
                            "STORE-4 WATCH_NEXT into a buffer {what}: expected \
                             INVALID_ADDRESS, got {:?}",
                            r.status
                        ),
                    );
                }
                s.expect_event(c, w, b"cf_addr/n", 0, "STORE-4 event kept after refusals");
                let _ = c.raw(call::STORE_UNWATCH, [w, 0, 0, 0, 0, 0]);
            }
            s.drain(c);
            let _ = ev.clear_pending(port);
            let _ = c.pv.event_close(port);
        }
    }
    // Zero-length buffers are not checked.
    let r = c.raw(call::STORE_READ, [pg, plen, u64::MAX - 3, 0, 0, 0]);
    c.check(
        r.status == Status::BUFFER_TOO_SMALL && r.value == 5,
        format_args!(
            "STORE-4 READ with buf_len 0 at a bad gpa: expected BUFFER_TOO_SMALL 5, got {:?} {}",
            r.status, r.value
        ),
    );
    let r = c.raw(call::STORE_WRITE, [pg, plen, u64::MAX - 3, 0, 0, 0]);
    expect(
        c,
        r,
        Status::SUCCESS,
        "STORE-4 WRITE of an empty value at a bad gpa",
    );
    s.expect_value(c, b"cf_addr/n", b"", 0, "STORE-4 empty value written");
    let r = c.raw(call::STORE_LIST, [pg, plen, top + 0x1000, 0, 0, 0]);
    c.check(
        r.status == Status::BUFFER_TOO_SMALL && r.value == 6,
        format_args!(
            "STORE-4 LIST with buf_len 0 at a bad gpa: expected BUFFER_TOO_SMALL 6, got {:?} {}",
            r.status, r.value
        ),
    );
    host_alive(c, "bad STORE buffers");
    s.cleanup(c, b"cf_addr");
}

fn value_limits(c: &mut Ctx<'_>) {
    let Some(mut s) = St::new(c) else { return };
    s.cleanup(c, b"cf_val");
    let big = s.s.take(4097);
    for (i, b) in big.iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    let p = s.s.put(b"cf_val/n");
    let (pg, pl, bg) = (gpa(c, p), p.len() as u64, gpa(c, big));
    // STORE-19: 4096 bytes is allowed.
    let r = c.raw(call::STORE_WRITE, [pg, pl, bg, 4096, 0, 0]);
    expect(c, r, Status::SUCCESS, "STORE-19 WRITE of a 4096-byte value");
    let back = s.s.take(4200);
    let r = c.raw(call::STORE_READ, [pg, pl, gpa(c, back), 4200, 0, 0]);
    c.check(
        r.status == Status::SUCCESS && r.value == 4096 && back.get(..4096) == big.get(..4096),
        format_args!(
            "STORE-19 READ of the 4096-byte value: {:?} {}",
            r.status, r.value
        ),
    );
    // STORE-6: 4097 bytes is NO_SPACE, changing nothing.
    let r = c.raw(call::STORE_WRITE, [pg, pl, bg, 4097, 0, 0]);
    expect(c, r, Status::NO_SPACE, "STORE-6 WRITE of a 4097-byte value");
    let r = c.raw(call::STORE_READ, [pg, pl, gpa(c, back), 4200, 0, 0]);
    c.check(
        r.status == Status::SUCCESS && r.value == 4096 && back.get(..4096) == big.get(..4096),
        format_args!(
            "STORE-6 the refused write changed the node: {:?} {}",
            r.status, r.value
        ),
    );
    let q = s.s.put(b"cf_val/new/leaf");
    let r = c.raw(
        call::STORE_WRITE,
        [gpa(c, q), q.len() as u64, bg, 4097, 0, 0],
    );
    expect(
        c,
        r,
        Status::NO_SPACE,
        "STORE-6 WRITE of a new node with 4097 bytes",
    );
    s.expect_missing(
        c,
        b"cf_val/new",
        0,
        "STORE-6 refused write created no ancestor",
    );
    let r = c.raw(call::STORE_WRITE, [pg, pl, bg, 1 << 32, 0, 0]);
    expect(c, r, Status::NO_SPACE, "STORE-6 WRITE with val_len 2^32");
    s.cleanup(c, b"cf_val");
}

/// Creates `cf_acc` (guest-owned) with host nodes below it: `none` (NONE), `ro` (READ),
/// `rw` (READ_WRITE) and `sub/deep` (NONE).
fn acc_setup(c: &mut Ctx<'_>) -> Option<St> {
    let mut s = St::new(c)?;
    acc_teardown(c, &mut s);
    let r = s.write(c, b"cf_acc", b"", 0);
    expect(c, r, Status::SUCCESS, "WRITE cf_acc");
    for (p, v, a) in [
        (&b"cf_acc/none"[..], &b"secret"[..], GuestAccess::NONE),
        (b"cf_acc/ro", b"r", GuestAccess::READ),
        (b"cf_acc/rw", b"w", GuestAccess::READ_WRITE),
        (b"cf_acc/sub/deep", b"d", GuestAccess::NONE),
    ] {
        let r = s.host_write(c, p, v, a);
        expect(c, r, Status::SUCCESS, "HARNESS.STORE_HOST_WRITE");
    }
    Some(s)
}

/// Removes what [`acc_setup`] made: the host hands its nodes over, the guest removes them.
fn acc_teardown(c: &mut Ctx<'_>, s: &mut St) {
    for p in [
        &b"cf_acc/none"[..],
        b"cf_acc/ro",
        b"cf_acc/sub",
        b"cf_acc/sub/deep",
    ] {
        let mut buf = [0u8; 0];
        if s.host_read(c, p, &mut buf).status != Status::NOT_FOUND {
            let r = s.host_write(c, p, b"", GuestAccess::READ_WRITE);
            expect(c, r, Status::SUCCESS, "cleanup HARNESS.STORE_HOST_WRITE");
        }
    }
    s.cleanup(c, b"cf_acc");
}

fn host_node_read_list(c: &mut Ctx<'_>) {
    let Some(mut s) = acc_setup(c) else { return };
    let buf = s.s.take(64);
    buf.fill(0xAA);
    // READ and LIST of a NONE node are DENIED and reveal nothing.
    let r = s.read(c, b"cf_acc/none", buf, 0);
    c.check(
        r.status == Status::DENIED && r.value == 0,
        format_args!(
            "STORE-2 READ of a NONE node: expected DENIED 0, got {:?} {}",
            r.status, r.value
        ),
    );
    c.check(
        buf.iter().all(|b| *b == 0xAA),
        format_args!("STORE-2 a DENIED READ wrote into the buffer"),
    );
    let r = s.list(c, b"cf_acc/none", buf, 0);
    expect(c, r, Status::DENIED, "STORE-2 LIST of a NONE node");
    let r = s.read(c, b"cf_acc/none", &mut [], 0);
    expect(
        c,
        r,
        Status::DENIED,
        "STORE-2 READ of a NONE node with buf_len 0",
    );
    // READ and READ_WRITE nodes are readable and listable.
    s.expect_value(c, b"cf_acc/ro", b"r", 0, "STORE-2 READ of a READ node");
    let r = s.list(c, b"cf_acc/ro", buf, 0);
    c.check(
        r.status == Status::SUCCESS && r.value == 0,
        format_args!("STORE-2 LIST of a READ node: {:?}", r.status),
    );
    s.expect_value(
        c,
        b"cf_acc/rw",
        b"w",
        0,
        "STORE-2 READ of a READ_WRITE node",
    );
    acc_teardown(c, &mut s);
}

fn host_node_write_remove(c: &mut Ctx<'_>) {
    let Some(mut s) = acc_setup(c) else { return };
    for p in [&b"cf_acc/none"[..], b"cf_acc/ro"] {
        let r = s.write(c, p, b"x", 0);
        c.check(
            r.status == Status::DENIED,
            format_args!(
                "STORE-25 WRITE of {}: expected DENIED, got {:?}",
                Show(p),
                r.status
            ),
        );
        let r = s.remove(c, p, 0);
        c.check(
            r.status == Status::DENIED,
            format_args!(
                "STORE-25 REMOVE of {}: expected DENIED, got {:?}",
                Show(p),
                r.status
            ),
        );
    }
    s.expect_host(
        c,
        b"cf_acc/none",
        Some(b"secret"),
        "STORE-25 node unchanged",
    );
    s.expect_host(c, b"cf_acc/ro", Some(b"r"), "STORE-25 node unchanged");
    acc_teardown(c, &mut s);
}

fn host_node_guest_write(c: &mut Ctx<'_>) {
    let Some(mut s) = acc_setup(c) else { return };
    // A guest write to a READ_WRITE host node succeeds; the host sees the value.
    let r = s.write(c, b"cf_acc/rw", b"guest", 0);
    expect(c, r, Status::SUCCESS, "STORE-5 WRITE of a READ_WRITE node");
    s.expect_host(
        c,
        b"cf_acc/rw",
        Some(b"guest"),
        "STORE-5 host sees the write",
    );
    s.expect_value(
        c,
        b"cf_acc/rw",
        b"guest",
        0,
        "STORE-5 guest reads its write",
    );
    // Creating below it is allowed, and the created node is the guest's to remove.
    let r = s.write(c, b"cf_acc/rw/child", b"ok", 0);
    expect(
        c,
        r,
        Status::SUCCESS,
        "STORE-5 WRITE below a READ_WRITE node",
    );
    let r = s.remove(c, b"cf_acc/rw/child", 0);
    expect(
        c,
        r,
        Status::SUCCESS,
        "STORE-5 REMOVE of the node the guest created",
    );
    acc_teardown(c, &mut s);
}

fn host_node_create_below(c: &mut Ctx<'_>) {
    let Some(mut s) = acc_setup(c) else { return };
    for p in [
        &b"cf_acc/ro/child"[..],
        b"cf_acc/none/child",
        b"cf_acc/none/a/b",
        b"cf_acc/sub/deep/x",
    ] {
        let r = s.write(c, p, b"x", 0);
        c.check(
            r.status == Status::DENIED,
            format_args!(
                "STORE-26 WRITE {} below a host node without READ_WRITE: expected DENIED, got {:?}",
                Show(p),
                r.status
            ),
        );
    }
    s.expect_host(c, b"cf_acc/ro/child", None, "STORE-26 nothing created");
    s.expect_host(c, b"cf_acc/none/child", None, "STORE-26 nothing created");
    s.expect_host(c, b"cf_acc/none/a", None, "STORE-26 nothing created");
    s.expect_host(c, b"cf_acc/sub/deep/x", None, "STORE-26 nothing created");
    acc_teardown(c, &mut s);
}

fn host_node_subtree_remove(c: &mut Ctx<'_>) {
    let Some(mut s) = acc_setup(c) else { return };
    let r = s.write(c, b"cf_acc/mine", b"m", 0);
    expect(c, r, Status::SUCCESS, "WRITE cf_acc/mine");
    let r = s.remove(c, b"cf_acc", 0);
    expect(
        c,
        r,
        Status::DENIED,
        "STORE-27 REMOVE of a subtree holding NONE and READ nodes",
    );
    s.expect_host(c, b"cf_acc/mine", Some(b"m"), "STORE-27 nothing removed");
    s.expect_host(c, b"cf_acc/rw", Some(b"w"), "STORE-27 nothing removed");
    s.expect_host(
        c,
        b"cf_acc/none",
        Some(b"secret"),
        "STORE-27 nothing removed",
    );
    s.expect_host(c, b"cf_acc/ro", Some(b"r"), "STORE-27 nothing removed");
    let r = s.remove(c, b"cf_acc/sub", 0);
    expect(
        c,
        r,
        Status::DENIED,
        "STORE-27 REMOVE of a parent of a NONE node",
    );
    s.expect_host(
        c,
        b"cf_acc/sub/deep",
        Some(b"d"),
        "STORE-27 nothing removed",
    );
    acc_teardown(c, &mut s);
}

/// Counts the nodes of the subtree at `path` (the node itself excluded), walking with
/// LIST. A node the guest may not list (a host node with guest access `NONE`) counts as a
/// leaf and makes the count a lower bound: `exact` is cleared.
fn count_nodes(
    c: &mut Ctx<'_>,
    s: &mut St,
    path: &mut [u8; 300],
    len: usize,
    depth: u32,
    exact: &mut bool,
) -> u64 {
    let pg = gpa(c, s.s.put(path.get(..len).unwrap_or(&[])));
    let r = c.raw(call::STORE_LIST, [pg, len as u64, 0, 0, 0, 0]);
    if r.status != Status::BUFFER_TOO_SMALL || depth > 32 {
        if r.status != Status::SUCCESS {
            *exact = false;
        }
        return 0;
    }
    let buf = s.s.take(r.value as usize);
    let r = c.raw(
        call::STORE_LIST,
        [pg, len as u64, gpa(c, buf), buf.len() as u64, 0, 0],
    );
    if r.status != Status::SUCCESS || buf.len() < r.value as usize {
        *exact = false;
        return 0;
    }
    let names: &'static [u8] = buf;
    let names = names.get(..r.value as usize).unwrap_or(&[]);
    let mut n = 0;
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        n += 1;
        let mut l = len;
        if l > 0 {
            if let Some(b) = path.get_mut(l) {
                *b = b'/';
            }
            l += 1;
        }
        let end = l + name.len();
        if let Some(d) = path.get_mut(l..end) {
            d.copy_from_slice(name);
            n += count_nodes(c, s, path, end, depth + 1, exact);
        } else {
            *exact = false;
        }
    }
    n
}

fn node_quota(c: &mut Ctx<'_>) {
    let Some(mut s) = St::new(c) else { return };
    // Enough scratch for a thousand paths.
    let Some(big) = Scratch::new(c, 256 * 1024) else {
        return;
    };
    s.cleanup(c, b"cf_q");
    let mut path = [0u8; 300];
    let mut exact = true;
    let existing = count_nodes(c, &mut s, &mut path, 0, 0, &mut exact);
    s.s = big;
    let r = s.write(c, b"cf_q", b"", 0);
    expect(c, r, Status::SUCCESS, "WRITE cf_q");
    let room = u64::from(MAX_ENTRIES).saturating_sub(existing + 1);
    let mut made = 0u64;
    let mut last = Status::SUCCESS;
    let mut name = *b"cf_q/n0000";
    for i in 0..(MAX_ENTRIES as u64 + 8) {
        let digits = [
            b'0' + (i / 1000 % 10) as u8,
            b'0' + (i / 100 % 10) as u8,
            b'0' + (i / 10 % 10) as u8,
            b'0' + (i % 10) as u8,
        ];
        if let Some(d) = name.get_mut(6..10) {
            d.copy_from_slice(&digits);
        }
        let p = s.s.put(&name);
        let v = s.s.put(b"");
        let r = c.raw(
            call::STORE_WRITE,
            [gpa(c, p), p.len() as u64, gpa(c, v), 0, 0, 0],
        );
        last = r.status;
        if r.status != Status::SUCCESS {
            break;
        }
        made += 1;
    }
    // With nodes the guest cannot list, `existing` is a lower bound and `room` an upper one.
    c.check(
        last == Status::NO_SPACE && (made == room || (!exact && made < room)),
        format_args!(
            "STORE-19 node quota: {existing} nodes existed, {made} more created before {last:?}; \
             expected {room} then NO_SPACE (1024 nodes)"
        ),
    );
    // STORE-29: the refused write changed nothing; a nested new path creates no ancestor.
    let r = s.write(c, b"cf_q/new/leaf", b"x", 0);
    expect(
        c,
        r,
        Status::NO_SPACE,
        "STORE-29 WRITE of a nested new path at quota",
    );
    s.expect_missing(
        c,
        b"cf_q/new",
        0,
        "STORE-29 refused write created an ancestor",
    );
    // Overwriting an existing node creates nothing and succeeds.
    let r = s.write(c, b"cf_q/n0000", b"over", 0);
    expect(
        c,
        r,
        Status::SUCCESS,
        "STORE-19 overwrite at the node quota",
    );
    // Host writes are not subject to the node quota.
    let r = s.host_write(c, b"cf_q/host", b"h", GuestAccess::READ_WRITE);
    expect(
        c,
        r,
        Status::SUCCESS,
        "STORE-19 host write beyond the node quota",
    );
    let r = s.remove(c, b"cf_q", 0);
    expect(c, r, Status::SUCCESS, "cleanup REMOVE cf_q");
    // The quota is free again.
    let r = s.write(c, b"cf_q/again", b"", 0);
    expect(c, r, Status::SUCCESS, "WRITE after freeing the quota");
    s.cleanup(c, b"cf_q");
}

/// An event port for a watch case, with the store's watch queue drained and `root` removed.
fn watch_setup(c: &mut Ctx<'_>, root: &[u8]) -> Option<(St, EventChannels, Port)> {
    let mut s = St::new(c)?;
    let ev = events(c)?;
    let port = c.expect_ok(c.pv.event_alloc(), "EVENT.ALLOC")?;
    s.cleanup(c, root);
    s.drain(c);
    let _ = take_pending(&ev, port);
    Some((s, ev, port))
}

/// Undoes [`watch_setup`] and the case's watches.
fn watch_teardown(c: &mut Ctx<'_>, mut s: St, ev: EventChannels, port: Port, watches: &[u64]) {
    for &w in watches {
        let _ = c.raw(call::STORE_UNWATCH, [w, 0, 0, 0, 0, 0]);
    }
    s.drain(c);
    let _ = take_pending(&ev, port);
    let _ = c.pv.event_close(port);
}

fn watch_registers(c: &mut Ctx<'_>) {
    let Some((mut s, ev, port)) = watch_setup(c, b"cf_wr") else {
        return;
    };
    // A watch on a path that does not exist; nonzero id; nothing fires now.
    let r = s.watch(c, b"cf_wr/a", port.arg());
    let w1 = r.value;
    c.check(
        r.status == Status::SUCCESS && w1 != 0 && w1 <= u64::from(u32::MAX),
        format_args!("STORE-10 WATCH cf_wr/a: {:?} id {w1}", r.status),
    );
    // A second watch on an existing node.
    let r = s.write(c, b"cf_wr", b"x", 0);
    expect(c, r, Status::SUCCESS, "WRITE cf_wr");
    let _ = take_pending(&ev, port);
    s.drain(c);
    let r = s.watch(c, b"cf_wr", port.arg());
    let w2 = r.value;
    c.check(
        r.status == Status::SUCCESS && w2 != 0 && w2 != w1,
        format_args!("STORE-10 second WATCH: {:?} id {w2} (first {w1})", r.status),
    );
    c.check(
        !take_pending(&ev, port),
        format_args!("STORE-10 registering a watch raised its port"),
    );
    s.expect_no_event(c, "STORE-10 registering a watch queued an event");
    s.cleanup(c, b"cf_wr");
    watch_teardown(c, s, ev, port, &[w1, w2]);
}

fn watch_events(c: &mut Ctx<'_>) {
    let Some((mut s, ev, port)) = watch_setup(c, b"cf_w") else {
        return;
    };
    let r = s.watch(c, b"cf_w/a", port.arg());
    expect(c, r, Status::SUCCESS, "WATCH cf_w/a");
    let w1 = r.value;
    // A write below the watch queues one event naming the node written (the ancestors it
    // creates do not fire separately) and raises the port.
    let r = s.write(c, b"cf_w/a/b/c", b"1", 0);
    expect(c, r, Status::SUCCESS, "WRITE cf_w/a/b/c");
    c.check(
        take_pending(&ev, port),
        format_args!("STORE-11 a write below the watch did not raise the port"),
    );
    // STORE-13 + STORE-20: header, path relative to the guest's subtree, 16 + path_len.
    s.expect_event(c, w1, b"cf_w/a/b/c", 0, "STORE-11/13 write below");
    s.expect_no_event(c, "STORE-11 one event per change");
    // A write of an unchanged value fires too.
    let r = s.write(c, b"cf_w/a/b/c", b"1", 0);
    expect(c, r, Status::SUCCESS, "WRITE unchanged value");
    c.check(
        take_pending(&ev, port),
        format_args!("STORE-11 a write of an unchanged value did not raise the port"),
    );
    s.expect_event(c, w1, b"cf_w/a/b/c", 0, "STORE-11 unchanged value");
    // A sibling and an ancestor of the watched path do not fire.
    let r = s.write(c, b"cf_w/other", b"x", 0);
    expect(c, r, Status::SUCCESS, "WRITE sibling");
    let r = s.write(c, b"cf_w", b"x", 0);
    expect(c, r, Status::SUCCESS, "WRITE ancestor");
    s.expect_no_event(c, "STORE-11 writes outside the watched subtree");
    c.check(
        !take_pending(&ev, port),
        format_args!("STORE-11 writes outside the watched subtree raised the port"),
    );
    // The watched node itself, written by the host.
    let r = s.host_write(c, b"cf_w/a", b"h", GuestAccess::READ_WRITE);
    expect(c, r, Status::SUCCESS, "HARNESS.STORE_HOST_WRITE cf_w/a");
    c.check(
        take_pending(&ev, port),
        format_args!("STORE-11 a host write did not raise the port"),
    );
    s.expect_event(c, w1, b"cf_w/a", 0, "STORE-11 host write");
    // Two watches, one change: one event for each, oldest first.
    let r = s.watch(c, b"cf_w/a/b", port.arg());
    expect(c, r, Status::SUCCESS, "WATCH cf_w/a/b");
    let w2 = r.value;
    let r = s.write(c, b"cf_w/a/b", b"3", 0);
    expect(c, r, Status::SUCCESS, "WRITE cf_w/a/b");
    let mut got = [0u64; 2];
    for g in got.iter_mut() {
        let buf = s.s.take(16 + 64);
        let r = c.raw(
            call::STORE_WATCH_NEXT,
            [gpa(c, buf), buf.len() as u64, 0, 0, 0, 0],
        );
        let e = WatchEv::parse(buf);
        c.check(
            r.status == Status::SUCCESS
                && buf.get(16..16 + e.path_len as usize) == Some(b"cf_w/a/b"),
            format_args!(
                "STORE-11 one change under two watches: {:?} {}",
                r.status, e.path_len
            ),
        );
        *g = u64::from(e.watch);
    }
    c.check(
        (got == [w1, w2] || got == [w2, w1]) && w1 != w2,
        format_args!("STORE-11 one change under two watches fired {got:?}, expected {w1} and {w2}"),
    );
    s.expect_no_event(c, "STORE-11 one event per watch");
    // A removal fires the watches inside the removed subtree, naming the removed node.
    let _ = take_pending(&ev, port);
    let r = s.remove(c, b"cf_w", 0);
    expect(c, r, Status::SUCCESS, "REMOVE cf_w");
    c.check(
        take_pending(&ev, port),
        format_args!("STORE-11 a removal did not raise the port"),
    );
    let mut n = 0;
    for _ in 0..3 {
        let buf = s.s.take(16 + 64);
        let r = c.raw(
            call::STORE_WATCH_NEXT,
            [gpa(c, buf), buf.len() as u64, 0, 0, 0, 0],
        );
        if r.status != Status::SUCCESS {
            break;
        }
        n += 1;
        let e = WatchEv::parse(buf);
        c.check(
            buf.get(16..16 + e.path_len as usize) == Some(b"cf_w"),
            format_args!(
                "STORE-11 a removal's event names {:?}, not the removed node",
                Show(buf.get(16..16 + e.path_len as usize).unwrap_or(&[]))
            ),
        );
    }
    c.check(
        n == 2,
        format_args!("STORE-11 removing an ancestor of two watches queued {n} events, expected 2"),
    );
    // STORE-13: an empty queue is NOT_FOUND.
    s.expect_no_event(c, "STORE-13 empty queue");
    watch_teardown(c, s, ev, port, &[w1, w2]);
}

fn watch_next_too_small(c: &mut Ctx<'_>) {
    let Some((mut s, ev, port)) = watch_setup(c, b"cf_wn") else {
        return;
    };
    let r = s.watch(c, b"cf_wn", port.arg());
    expect(c, r, Status::SUCCESS, "WATCH cf_wn");
    let w = r.value;
    let r = s.write(c, b"cf_wn/abcdefg", b"2", 0);
    expect(c, r, Status::SUCCESS, "WRITE cf_wn/abcdefg");
    // 16 + 13 bytes are needed.
    let small = s.s.take(16 + 12);
    small.fill(0xAA);
    for len in [0usize, 8, 16, 28] {
        let r = c.raw(
            call::STORE_WATCH_NEXT,
            [gpa(c, small), len as u64, 0, 0, 0, 0],
        );
        c.check(
            r.status == Status::BUFFER_TOO_SMALL && r.value == 29,
            format_args!(
                "STORE-35 WATCH_NEXT with buf_len {len}: expected BUFFER_TOO_SMALL 29, got {:?} {}",
                r.status, r.value
            ),
        );
    }
    s.expect_event(c, w, b"cf_wn/abcdefg", 0, "STORE-35 event kept");
    s.cleanup(c, b"cf_wn");
    watch_teardown(c, s, ev, port, &[w]);
}

fn unwatch(c: &mut Ctx<'_>) {
    let Some((mut s, ev, port)) = watch_setup(c, b"cf_wu") else {
        return;
    };
    let r = s.watch(c, b"cf_wu/a", port.arg());
    expect(c, r, Status::SUCCESS, "WATCH cf_wu/a");
    let w1 = r.value;
    let r = s.watch(c, b"cf_wu/a/b", port.arg());
    expect(c, r, Status::SUCCESS, "WATCH cf_wu/a/b");
    let w2 = r.value;
    // UNWATCH discards the watch's queued events and the watch fires no more.
    let r = s.write(c, b"cf_wu/a/b", b"3", 0);
    expect(c, r, Status::SUCCESS, "WRITE cf_wu/a/b");
    let r = c.raw(call::STORE_UNWATCH, [w1, 0, 0, 0, 0, 0]);
    expect(c, r, Status::SUCCESS, "STORE-12 UNWATCH w1");
    s.expect_event(c, w2, b"cf_wu/a/b", 0, "STORE-12 only w2's event remains");
    s.expect_no_event(c, "STORE-12 w1's queued event was discarded");
    let r = s.write(c, b"cf_wu/a/b", b"4", 0);
    expect(c, r, Status::SUCCESS, "WRITE after UNWATCH");
    s.expect_event(c, w2, b"cf_wu/a/b", 0, "STORE-12 w2 still fires");
    s.expect_no_event(c, "STORE-12 unwatched w1 does not fire");
    // Ids that are not watches of this guest.
    let r = c.raw(call::STORE_UNWATCH, [w1, 0, 0, 0, 0, 0]);
    expect(c, r, Status::NOT_FOUND, "STORE-12 second UNWATCH");
    for bogus in [0u64, 0xDEAD_BEEF, w2 + 1000] {
        let r = c.raw(call::STORE_UNWATCH, [bogus, 0, 0, 0, 0, 0]);
        expect(c, r, Status::NOT_FOUND, "STORE-12 UNWATCH of an unknown id");
    }
    let r = c.raw(call::STORE_UNWATCH, [w2, 0, 0, 0, 0, 0]);
    expect(c, r, Status::SUCCESS, "STORE-12 UNWATCH w2");
    s.cleanup(c, b"cf_wu");
    s.expect_no_event(c, "STORE-12 no watch left to fire");
    watch_teardown(c, s, ev, port, &[]);
}

fn watch_bad_ports(c: &mut Ctx<'_>) {
    let Some(mut s) = St::new(c) else { return };
    if events(c).is_none() {
        return;
    }
    for port in [0u64, 1024, 4096, u64::MAX, 1 << 32] {
        let r = s.watch(c, b"cf_wp", port);
        if r.status == Status::SUCCESS {
            let _ = c.raw(call::STORE_UNWATCH, [r.value, 0, 0, 0, 0, 0]);
        }
        c.check(
            r.status == Status::INVALID_PARAM,
            format_args!(
                "STORE-32 WATCH with port {port:#x}: expected INVALID_PARAM, got {:?}",
                r.status
            ),
        );
    }
    let Some(port) = c.expect_ok(c.pv.event_alloc(), "EVENT.ALLOC") else {
        return;
    };
    let _ = c.expect_ok(c.pv.event_close(port), "EVENT.CLOSE");
    for p in [port.arg(), 1023] {
        let r = s.watch(c, b"cf_wp", p);
        if r.status == Status::SUCCESS {
            let _ = c.raw(call::STORE_UNWATCH, [r.value, 0, 0, 0, 0, 0]);
        }
        c.check(
            r.status == Status::NOT_FOUND,
            format_args!(
                "STORE-33 WATCH with unallocated port {p}: expected NOT_FOUND, got {:?}",
                r.status
            ),
        );
    }
}

fn watch_on_closed_port(c: &mut Ctx<'_>) {
    let Some(mut s) = St::new(c) else { return };
    let Some(ev) = events(c) else { return };
    let Some(port) = c.expect_ok(c.pv.event_alloc(), "EVENT.ALLOC") else {
        return;
    };
    s.cleanup(c, b"cf_wc");
    s.drain(c);
    let r = s.watch(c, b"cf_wc", port.arg());
    if !expect(c, r, Status::SUCCESS, "WATCH cf_wc") {
        let _ = c.pv.event_close(port);
        return;
    }
    let w = r.value;
    let _ = c.expect_ok(c.pv.event_close(port), "EVENT.CLOSE of the watch's port");
    let _ = take_pending(&ev, port);
    let r = s.write(c, b"cf_wc", b"x", 0);
    expect(c, r, Status::SUCCESS, "WRITE cf_wc");
    c.check(
        !take_pending(&ev, port),
        format_args!("STORE-22 a watch on a closed port raised it"),
    );
    // The watch stays registered with its queued event.
    s.expect_event(c, w, b"cf_wc", 0, "STORE-22 event queued for a closed port");
    let r = s.write(c, b"cf_wc", b"y", 0);
    expect(c, r, Status::SUCCESS, "WRITE cf_wc");
    let r = c.raw(call::STORE_UNWATCH, [w, 0, 0, 0, 0, 0]);
    expect(
        c,
        r,
        Status::SUCCESS,
        "STORE-22 UNWATCH of a watch whose port closed",
    );
    s.expect_no_event(c, "STORE-22 UNWATCH discarded the queued event");
    s.cleanup(c, b"cf_wc");
}

fn watch_queue_overflow(c: &mut Ctx<'_>) {
    let Some(mut s) = St::new(c) else { return };
    let Some(ev) = events(c) else { return };
    let Some(port) = c.expect_ok(c.pv.event_alloc(), "EVENT.ALLOC") else {
        return;
    };
    s.cleanup(c, b"cf_wq");
    s.drain(c);
    let r = s.watch(c, b"cf_wq", port.arg());
    if !expect(c, r, Status::SUCCESS, "WATCH cf_wq") {
        let _ = c.pv.event_close(port);
        return;
    }
    let w = r.value;
    let p = s.s.put(b"cf_wq");
    let v = s.s.put(b"v");
    let args = [gpa(c, p), p.len() as u64, gpa(c, v), 1, 0, 0];
    let mut ok = 0;
    for _ in 0..MAX_WATCH_EVENTS {
        if c.raw(call::STORE_WRITE, args).status == Status::SUCCESS {
            ok += 1;
        }
    }
    c.check(
        ok == MAX_WATCH_EVENTS,
        format_args!("{ok} of {MAX_WATCH_EVENTS} writes succeeded"),
    );
    // The dropped events still raise the port.
    let _ = take_pending(&ev, port);
    for _ in 0..3 {
        let r = c.raw(call::STORE_WRITE, args);
        expect(c, r, Status::SUCCESS, "WRITE beyond the queue limit");
    }
    c.check(
        take_pending(&ev, port),
        format_args!("STORE-14 a dropped event did not raise the port"),
    );
    s.expect_event(c, w, b"cf_wq", 3, "STORE-14 first event reports 3 dropped");
    s.expect_event(c, w, b"cf_wq", 0, "STORE-14 count reset");
    let rest = s.drain(c);
    c.check(
        rest == MAX_WATCH_EVENTS as usize - 2,
        format_args!(
            "STORE-14 queue held {} events, expected {MAX_WATCH_EVENTS}",
            rest + 2
        ),
    );
    let _ = c.raw(call::STORE_UNWATCH, [w, 0, 0, 0, 0, 0]);
    let _ = take_pending(&ev, port);
    let _ = c.pv.event_close(port);
    s.cleanup(c, b"cf_wq");
}

fn watch_quota(c: &mut Ctx<'_>) {
    let Some(mut s) = St::new(c) else { return };
    if events(c).is_none() {
        return;
    }
    let Some(port) = c.expect_ok(c.pv.event_alloc(), "EVENT.ALLOC") else {
        return;
    };
    let p = s.s.put(b"cf_wquota");
    let args = [gpa(c, p), p.len() as u64, port.arg(), 0, 0, 0];
    let mut ids = [0u64; MAX_WATCHES as usize + 8];
    let mut n = 0;
    let mut last = Status::SUCCESS;
    for slot in ids.iter_mut() {
        let r = c.raw(call::STORE_WATCH, args);
        last = r.status;
        if r.status != Status::SUCCESS {
            break;
        }
        *slot = r.value;
        n += 1;
    }
    c.check(
        n == MAX_WATCHES && last == Status::NO_SPACE,
        format_args!("STORE-34 {n} watches before {last:?}; expected {MAX_WATCHES} then NO_SPACE"),
    );
    // Ids are distinct and nonzero.
    let held = ids.get(..n as usize).unwrap_or(&[]);
    let distinct = held
        .iter()
        .enumerate()
        .all(|(i, a)| *a != 0 && held.iter().skip(i + 1).all(|b| b != a));
    c.check(distinct, format_args!("STORE-10 watch ids not distinct"));
    for &w in held {
        let _ = c.raw(call::STORE_UNWATCH, [w, 0, 0, 0, 0, 0]);
    }
    let r = c.raw(call::STORE_WATCH, args);
    expect(c, r, Status::SUCCESS, "WATCH after freeing the watch quota");
    let _ = c.raw(call::STORE_UNWATCH, [r.value, 0, 0, 0, 0, 0]);
    let _ = c.pv.event_close(port);
}

fn txn_supported(c: &mut Ctx<'_>) -> bool {
    if has(c, Features::STORE_TXN) {
        true
    } else {
        c.skip(format_args!(
            "the host does not set the STORE_TXN feature bit"
        ));
        false
    }
}

fn txn_start(c: &mut Ctx<'_>) -> Option<u64> {
    let r = c.raw(call::STORE_TXN_START, [0; 6]);
    c.check(
        r.status == Status::SUCCESS && r.value != 0 && r.value <= u64::from(u32::MAX),
        format_args!("STORE-15 TXN_START: {:?} id {:#x}", r.status, r.value),
    )
    .then_some(r.value)
}

/// `cf_t/a` = `old` for a transaction case.
fn txn_setup(c: &mut Ctx<'_>) -> Option<St> {
    if !txn_supported(c) {
        return None;
    }
    let mut s = St::new(c)?;
    s.cleanup(c, b"cf_t");
    let r = s.write(c, b"cf_t/a", b"old", 0);
    expect(c, r, Status::SUCCESS, "WRITE cf_t/a").then_some(s)
}

fn txn_commit(c: &mut Ctx<'_>) {
    let Some(mut s) = txn_setup(c) else { return };
    let Some(t) = txn_start(c) else { return };
    let _ = s.read(c, b"cf_t/a", &mut [], t);
    let r = s.write(c, b"cf_t/a", b"new", t);
    expect(c, r, Status::SUCCESS, "WRITE cf_t/a in the transaction");
    let r = s.write(c, b"cf_t/b/c", b"bee", t);
    expect(c, r, Status::SUCCESS, "WRITE cf_t/b/c in the transaction");
    let r = c.raw(call::STORE_TXN_COMMIT, [t, 0, 0, 0, 0, 0]);
    expect(c, r, Status::SUCCESS, "STORE-16 TXN_COMMIT");
    s.expect_value(c, b"cf_t/a", b"new", 0, "STORE-16 committed write");
    s.expect_value(c, b"cf_t/b/c", b"bee", 0, "STORE-16 committed new node");
    s.expect_host(
        c,
        b"cf_t/b/c",
        Some(b"bee"),
        "STORE-16 committed (host view)",
    );
    // The commit ended the transaction.
    let r = c.raw(call::STORE_TXN_ABORT, [t, 0, 0, 0, 0, 0]);
    expect(
        c,
        r,
        Status::NOT_FOUND,
        "STORE-16 the commit ended the transaction",
    );
    // A removal in a transaction applies at commit.
    if let Some(t3) = txn_start(c) {
        let r = s.remove(c, b"cf_t/b", t3);
        expect(c, r, Status::SUCCESS, "REMOVE cf_t/b in t3");
        let r = c.raw(call::STORE_TXN_COMMIT, [t3, 0, 0, 0, 0, 0]);
        expect(c, r, Status::SUCCESS, "STORE-16 commit of a removal");
        s.expect_missing(c, b"cf_t/b", 0, "STORE-16 committed removal");
        s.expect_missing(c, b"cf_t/b/c", 0, "STORE-16 committed removal of a subtree");
    }
    s.cleanup(c, b"cf_t");
}

fn txn_fires_at_commit(c: &mut Ctx<'_>) {
    let Some(mut s) = txn_setup(c) else { return };
    let Some(ev) = events(c) else { return };
    let Some(port) = c.expect_ok(c.pv.event_alloc(), "EVENT.ALLOC") else {
        return;
    };
    s.drain(c);
    let r = s.watch(c, b"cf_t", port.arg());
    expect(c, r, Status::SUCCESS, "WATCH cf_t");
    let w = r.value;
    let _ = take_pending(&ev, port);
    if let Some(t) = txn_start(c) {
        let r = s.write(c, b"cf_t/a", b"new", t);
        expect(c, r, Status::SUCCESS, "WRITE cf_t/a in the transaction");
        let r = s.write(c, b"cf_t/b", b"bee", t);
        expect(c, r, Status::SUCCESS, "WRITE cf_t/b in the transaction");
        // Nothing fires before the commit.
        c.check(
            !take_pending(&ev, port),
            format_args!("STORE-11 a change in an open transaction raised the watch port"),
        );
        s.expect_no_event(c, "STORE-11 a change in an open transaction fired");
        let r = c.raw(call::STORE_TXN_COMMIT, [t, 0, 0, 0, 0, 0]);
        expect(c, r, Status::SUCCESS, "TXN_COMMIT");
        c.check(
            take_pending(&ev, port),
            format_args!("STORE-11 the commit did not raise the watch port"),
        );
        let fired = s.drain(c);
        c.check(
            fired == 2,
            format_args!("STORE-11 the commit of two writes queued {fired} events, expected 2"),
        );
    }
    // An aborted transaction fires nothing.
    if let Some(t2) = txn_start(c) {
        let r = s.write(c, b"cf_t/c", b"c", t2);
        expect(c, r, Status::SUCCESS, "WRITE cf_t/c in t2");
        let r = c.raw(call::STORE_TXN_ABORT, [t2, 0, 0, 0, 0, 0]);
        expect(c, r, Status::SUCCESS, "TXN_ABORT");
        s.expect_no_event(c, "STORE-11 an aborted transaction fired");
        c.check(
            !take_pending(&ev, port),
            format_args!("STORE-11 an aborted transaction raised the watch port"),
        );
    }
    let _ = c.raw(call::STORE_UNWATCH, [w, 0, 0, 0, 0, 0]);
    s.drain(c);
    let _ = take_pending(&ev, port);
    let _ = c.pv.event_close(port);
    s.cleanup(c, b"cf_t");
}

fn txn_abort(c: &mut Ctx<'_>) {
    let Some(mut s) = txn_setup(c) else { return };
    let Some(t) = txn_start(c) else { return };
    let r = s.write(c, b"cf_t/c", b"c", t);
    expect(c, r, Status::SUCCESS, "WRITE cf_t/c in the transaction");
    let r = s.write(c, b"cf_t/a", b"changed", t);
    expect(c, r, Status::SUCCESS, "WRITE cf_t/a in the transaction");
    let r = s.remove(c, b"cf_t", t);
    expect(c, r, Status::SUCCESS, "REMOVE cf_t in the transaction");
    let r = c.raw(call::STORE_TXN_ABORT, [t, 0, 0, 0, 0, 0]);
    expect(c, r, Status::SUCCESS, "STORE-18 TXN_ABORT");
    s.expect_missing(c, b"cf_t/c", 0, "STORE-18 aborted write discarded");
    s.expect_value(
        c,
        b"cf_t/a",
        b"old",
        0,
        "STORE-18 aborted changes discarded",
    );
    s.expect_host(
        c,
        b"cf_t/a",
        Some(b"old"),
        "STORE-18 aborted changes discarded",
    );
    // The abort ended the transaction; unknown ids are NOT_FOUND.
    let r = c.raw(call::STORE_TXN_ABORT, [t, 0, 0, 0, 0, 0]);
    expect(c, r, Status::NOT_FOUND, "STORE-18 second TXN_ABORT");
    let r = c.raw(call::STORE_TXN_ABORT, [0xFFFF_FF01, 0, 0, 0, 0, 0]);
    expect(
        c,
        r,
        Status::NOT_FOUND,
        "STORE-18 TXN_ABORT of an unknown id",
    );
    s.cleanup(c, b"cf_t");
}

fn txn_ended_ids(c: &mut Ctx<'_>) {
    let Some(mut s) = txn_setup(c) else { return };
    let Some(t) = txn_start(c) else { return };
    let r = c.raw(call::STORE_TXN_COMMIT, [t, 0, 0, 0, 0, 0]);
    expect(c, r, Status::SUCCESS, "TXN_COMMIT of an empty transaction");
    // A committed transaction's id.
    let r = c.raw(call::STORE_TXN_COMMIT, [t, 0, 0, 0, 0, 0]);
    expect(c, r, Status::NOT_FOUND, "STORE-37 second TXN_COMMIT");
    let r = c.raw(call::STORE_TXN_ABORT, [t, 0, 0, 0, 0, 0]);
    expect(c, r, Status::NOT_FOUND, "STORE-37 TXN_ABORT after commit");
    let buf = s.s.take(16);
    let calls = [
        s.read(c, b"cf_t/a", buf, t),
        s.write(c, b"cf_t/a", b"x", t),
        s.list(c, b"cf_t", buf, t),
        s.remove(c, b"cf_t/a", t),
    ];
    for (r, what) in calls.iter().zip(["READ", "WRITE", "LIST", "REMOVE"]) {
        c.check(
            r.status == Status::NOT_FOUND,
            format_args!(
                "STORE-31 {what} with a committed transaction's id: expected NOT_FOUND, got {:?}",
                r.status
            ),
        );
    }
    s.expect_value(
        c,
        b"cf_t/a",
        b"old",
        0,
        "STORE-31 refused calls changed nothing",
    );
    // An aborted transaction's id.
    if let Some(t2) = txn_start(c) {
        let r = c.raw(call::STORE_TXN_ABORT, [t2, 0, 0, 0, 0, 0]);
        expect(c, r, Status::SUCCESS, "TXN_ABORT");
        let r = c.raw(call::STORE_TXN_COMMIT, [t2, 0, 0, 0, 0, 0]);
        expect(c, r, Status::NOT_FOUND, "STORE-37 TXN_COMMIT after abort");
        let r = s.write(c, b"cf_t/a", b"x", t2);
        expect(
            c,
            r,
            Status::NOT_FOUND,
            "STORE-31 WRITE with an aborted transaction's id",
        );
    }
    // Ids never handed out.
    for id in [0xFFFF_FF00u64, 0xFFFF_FFFF] {
        let r = s.read(c, b"cf_t/a", buf, id);
        expect(c, r, Status::NOT_FOUND, "STORE-31 READ with an unknown txn");
        let r = c.raw(call::STORE_TXN_COMMIT, [id, 0, 0, 0, 0, 0]);
        expect(
            c,
            r,
            Status::NOT_FOUND,
            "STORE-37 TXN_COMMIT of an unknown id",
        );
    }
    s.expect_value(
        c,
        b"cf_t/a",
        b"old",
        0,
        "STORE-31 refused calls changed nothing",
    );
    s.cleanup(c, b"cf_t");
}

fn txn_id_width(c: &mut Ctx<'_>) {
    let Some(mut s) = txn_setup(c) else { return };
    let Some(t) = txn_start(c) else { return };
    // Ids are 32-bit: a wider argument is INVALID_PARAM, even when its low half is open.
    let r = s.read(c, b"cf_t/a", &mut [], 1 << 32);
    expect(c, r, Status::INVALID_PARAM, "STORE-9 READ with txn 2^32");
    let r = s.write(c, b"cf_t/a", b"z", u64::MAX);
    expect(
        c,
        r,
        Status::INVALID_PARAM,
        "STORE-9 WRITE with txn u64::MAX",
    );
    let r = s.write(c, b"cf_t/a", b"z", (1 << 32) | t);
    expect(
        c,
        r,
        Status::INVALID_PARAM,
        "STORE-9 WRITE with an open id plus bit 32",
    );
    let r = s.list(c, b"cf_t", &mut [], (1 << 32) | t);
    expect(
        c,
        r,
        Status::INVALID_PARAM,
        "STORE-9 LIST with txn above 32 bits",
    );
    let r = s.remove(c, b"cf_t/a", 1 << 40);
    expect(c, r, Status::INVALID_PARAM, "STORE-9 REMOVE with txn 2^40");
    // 0 is no transaction: COMMIT and ABORT of it are INVALID_PARAM.
    for (id, name) in [
        (call::STORE_TXN_COMMIT, "TXN_COMMIT"),
        (call::STORE_TXN_ABORT, "TXN_ABORT"),
    ] {
        for arg in [0u64, 1 << 32, (1 << 32) | t, u64::MAX] {
            let r = c.raw(id, [arg, 0, 0, 0, 0, 0]);
            c.check(
                r.status == Status::INVALID_PARAM,
                format_args!(
                    "STORE-9 {name}({arg:#x}): expected INVALID_PARAM, got {:?}",
                    r.status
                ),
            );
        }
    }
    s.expect_value(
        c,
        b"cf_t/a",
        b"old",
        0,
        "STORE-9 refused calls changed nothing",
    );
    // The open transaction survived the refused calls.
    let r = c.raw(call::STORE_TXN_ABORT, [t, 0, 0, 0, 0, 0]);
    expect(
        c,
        r,
        Status::SUCCESS,
        "STORE-9 TXN_ABORT of the open transaction",
    );
    s.cleanup(c, b"cf_t");
}

fn txn_conflict(c: &mut Ctx<'_>) {
    if !txn_supported(c) {
        return;
    }
    let Some(mut s) = St::new(c) else { return };
    s.cleanup(c, b"cf_c");
    let r = s.write(c, b"cf_c/n", b"0", 0);
    expect(c, r, Status::SUCCESS, "WRITE cf_c/n");

    // Two transactions read and write the same node: the second commit conflicts.
    let (Some(t1), Some(t2)) = (txn_start(c), txn_start(c)) else {
        return;
    };
    s.expect_value(c, b"cf_c/n", b"0", t1, "READ in t1");
    s.expect_value(c, b"cf_c/n", b"0", t2, "READ in t2");
    let r = s.write(c, b"cf_c/n", b"1", t1);
    expect(c, r, Status::SUCCESS, "WRITE in t1");
    let r = s.write(c, b"cf_c/n", b"2", t2);
    expect(c, r, Status::SUCCESS, "WRITE in t2");
    let r = s.write(c, b"cf_c/t2only", b"x", t2);
    expect(c, r, Status::SUCCESS, "WRITE of a second node in t2");
    let r = c.raw(call::STORE_TXN_COMMIT, [t1, 0, 0, 0, 0, 0]);
    expect(c, r, Status::SUCCESS, "STORE-16 commit of t1");
    let r = c.raw(call::STORE_TXN_COMMIT, [t2, 0, 0, 0, 0, 0]);
    expect(
        c,
        r,
        Status::CONFLICT,
        "STORE-16 commit of t2 after t1 changed its node",
    );
    s.expect_value(
        c,
        b"cf_c/n",
        b"1",
        0,
        "STORE-16 the conflicting commit applied nothing",
    );
    s.expect_missing(
        c,
        b"cf_c/t2only",
        0,
        "STORE-16 the conflicting commit applied nothing",
    );
    let r = c.raw(call::STORE_TXN_ABORT, [t2, 0, 0, 0, 0, 0]);
    expect(
        c,
        r,
        Status::NOT_FOUND,
        "STORE-16 a conflicting commit ends the transaction",
    );

    // A host write in between conflicts too.
    if let Some(t3) = txn_start(c) {
        s.expect_value(c, b"cf_c/n", b"1", t3, "READ in t3");
        let r = s.write(c, b"cf_c/m", b"m", t3);
        expect(c, r, Status::SUCCESS, "WRITE in t3");
        let r = s.host_write(c, b"cf_c/n", b"host", GuestAccess::READ_WRITE);
        expect(c, r, Status::SUCCESS, "HARNESS.STORE_HOST_WRITE cf_c/n");
        let r = c.raw(call::STORE_TXN_COMMIT, [t3, 0, 0, 0, 0, 0]);
        expect(c, r, Status::CONFLICT, "STORE-16 commit after a host write");
        s.expect_missing(
            c,
            b"cf_c/m",
            0,
            "STORE-16 conflicting commit applied nothing",
        );
    }
    // A node found missing that someone else creates.
    if let Some(t4) = txn_start(c) {
        s.expect_missing(c, b"cf_c/late", t4, "READ of a missing node in t4");
        let r = s.write(c, b"cf_c/z", b"z", t4);
        expect(c, r, Status::SUCCESS, "WRITE in t4");
        let r = s.write(c, b"cf_c/late", b"l", 0);
        expect(c, r, Status::SUCCESS, "WRITE cf_c/late outside t4");
        let r = c.raw(call::STORE_TXN_COMMIT, [t4, 0, 0, 0, 0, 0]);
        expect(
            c,
            r,
            Status::CONFLICT,
            "STORE-16 commit after a missing node appeared",
        );
        s.expect_missing(
            c,
            b"cf_c/z",
            0,
            "STORE-16 conflicting commit applied nothing",
        );
    }
    // A node the transaction listed gains a child.
    if let Some(t5) = txn_start(c) {
        let n = s.names(c, b"cf_c", t5);
        c.check(n.is_ok(), format_args!("LIST in t5: {n:?}"));
        let r = s.write(c, b"cf_c/y", b"y", t5);
        expect(c, r, Status::SUCCESS, "WRITE in t5");
        let r = s.write(c, b"cf_c/child", b"c", 0);
        expect(c, r, Status::SUCCESS, "WRITE cf_c/child outside t5");
        let r = c.raw(call::STORE_TXN_COMMIT, [t5, 0, 0, 0, 0, 0]);
        expect(
            c,
            r,
            Status::CONFLICT,
            "STORE-16 commit after a listed node gained a child",
        );
        s.expect_missing(
            c,
            b"cf_c/y",
            0,
            "STORE-16 conflicting commit applied nothing",
        );
    }
    // A node the transaction removed is changed by someone else.
    if let Some(t6) = txn_start(c) {
        let r = s.remove(c, b"cf_c/n", t6);
        expect(c, r, Status::SUCCESS, "REMOVE in t6");
        let r = s.host_write(c, b"cf_c/n", b"again", GuestAccess::READ_WRITE);
        expect(c, r, Status::SUCCESS, "HARNESS.STORE_HOST_WRITE cf_c/n");
        let r = c.raw(call::STORE_TXN_COMMIT, [t6, 0, 0, 0, 0, 0]);
        expect(
            c,
            r,
            Status::CONFLICT,
            "STORE-16 commit after a removed node was changed",
        );
        s.expect_value(
            c,
            b"cf_c/n",
            b"again",
            0,
            "STORE-16 the removal was not applied",
        );
    }
    s.cleanup(c, b"cf_c");
}

fn txn_snapshot(c: &mut Ctx<'_>) {
    if !txn_supported(c) {
        return;
    }
    let Some(mut s) = St::new(c) else { return };
    s.cleanup(c, b"cf_ss");
    let r = s.write(c, b"cf_ss/n", b"0", 0);
    expect(c, r, Status::SUCCESS, "WRITE cf_ss/n");
    let Some(t) = txn_start(c) else { return };
    s.expect_value(c, b"cf_ss/n", b"0", t, "STORE-17 READ in the transaction");
    // Changes by the guest outside the transaction and by the host do not show inside.
    let r = s.write(c, b"cf_ss/n", b"1", 0);
    expect(c, r, Status::SUCCESS, "WRITE cf_ss/n outside");
    s.expect_value(
        c,
        b"cf_ss/n",
        b"0",
        t,
        "STORE-17 snapshot after a guest write",
    );
    let r = s.host_write(c, b"cf_ss/n", b"2", GuestAccess::READ_WRITE);
    expect(c, r, Status::SUCCESS, "HARNESS.STORE_HOST_WRITE cf_ss/n");
    s.expect_value(
        c,
        b"cf_ss/n",
        b"0",
        t,
        "STORE-17 snapshot after a host write",
    );
    let r = s.write(c, b"cf_ss/late", b"l", 0);
    expect(c, r, Status::SUCCESS, "WRITE cf_ss/late outside");
    s.expect_missing(c, b"cf_ss/late", t, "STORE-17 a node created later");
    match s.names(c, b"cf_ss", t) {
        Ok(n) => c.check(
            n == b"n\0",
            format_args!("STORE-17 LIST in the transaction: {:?}", Show(n)),
        ),
        Err(e) => c.check(
            false,
            format_args!("STORE-17 LIST in the transaction: {e:?}"),
        ),
    };
    // The transaction's own changes show inside only.
    let r = s.write(c, b"cf_ss/mine", b"t", t);
    expect(c, r, Status::SUCCESS, "WRITE cf_ss/mine in the transaction");
    s.expect_value(c, b"cf_ss/mine", b"t", t, "STORE-17 own change");
    s.expect_missing(c, b"cf_ss/mine", 0, "STORE-17 own change invisible outside");
    s.expect_host(
        c,
        b"cf_ss/mine",
        None,
        "STORE-17 own change invisible to the host",
    );
    match s.names(c, b"cf_ss", t) {
        Ok(n) => c.check(
            n == b"mine\0n\0",
            format_args!("STORE-17 LIST with the own new node: {:?}", Show(n)),
        ),
        Err(e) => c.check(
            false,
            format_args!("STORE-17 LIST in the transaction: {e:?}"),
        ),
    };
    let r = s.remove(c, b"cf_ss/n", t);
    expect(c, r, Status::SUCCESS, "REMOVE cf_ss/n in the transaction");
    s.expect_missing(c, b"cf_ss/n", t, "STORE-17 own removal seen inside");
    s.expect_value(
        c,
        b"cf_ss/n",
        b"2",
        0,
        "STORE-17 own removal invisible outside",
    );
    let r = c.raw(call::STORE_TXN_ABORT, [t, 0, 0, 0, 0, 0]);
    expect(c, r, Status::SUCCESS, "TXN_ABORT");
    s.cleanup(c, b"cf_ss");
}

fn txn_quota(c: &mut Ctx<'_>) {
    if !txn_supported(c) {
        return;
    }
    let mut ids = [0u64; MAX_TRANSACTIONS as usize + 4];
    let mut n = 0;
    let mut last = Status::SUCCESS;
    for slot in ids.iter_mut() {
        let r = c.raw(call::STORE_TXN_START, [0; 6]);
        last = r.status;
        if r.status != Status::SUCCESS {
            break;
        }
        *slot = r.value;
        n += 1;
    }
    c.check(
        n == MAX_TRANSACTIONS && last == Status::NO_SPACE,
        format_args!(
            "STORE-15 {n} transactions opened before {last:?}; expected {MAX_TRANSACTIONS} then \
             NO_SPACE"
        ),
    );
    let held = ids.get(..n as usize).unwrap_or(&[]);
    c.check(
        held.iter().all(|t| *t != 0 && *t <= u64::from(u32::MAX)),
        format_args!("STORE-15 a transaction id is 0 or above 32 bits"),
    );
    let distinct = held
        .iter()
        .enumerate()
        .all(|(i, a)| held.iter().skip(i + 1).all(|b| b != a));
    c.check(
        distinct,
        format_args!("STORE-15 two open transactions share an id"),
    );
    for &t in held {
        let r = c.raw(call::STORE_TXN_ABORT, [t, 0, 0, 0, 0, 0]);
        expect(c, r, Status::SUCCESS, "TXN_ABORT");
    }
    if let Some(t) = txn_start(c) {
        let r = c.raw(call::STORE_TXN_ABORT, [t, 0, 0, 0, 0, 0]);
        expect(c, r, Status::SUCCESS, "TXN_ABORT after freeing the quota");
    }
}

fn txn_feature_absent(c: &mut Ctx<'_>) {
    if has(c, Features::STORE_TXN) {
        c.skip(format_args!(
            "the host sets STORE_TXN; STORE-36 concerns hosts without it"
        ));
        return;
    }
    let Some(mut s) = St::new(c) else { return };
    for (id, arg, name) in [
        (call::STORE_TXN_START, 0, "TXN_START"),
        (call::STORE_TXN_COMMIT, 1, "TXN_COMMIT"),
        (call::STORE_TXN_ABORT, 1, "TXN_ABORT"),
    ] {
        let r = c.raw(id, [arg, 0, 0, 0, 0, 0]);
        c.check(
            r.status == Status::NOT_SUPPORTED,
            format_args!(
                "STORE-36 {name}: expected NOT_SUPPORTED, got {:?}",
                r.status
            ),
        );
    }
    let r = s.read(c, b"cf_nt", &mut [], 1);
    expect(c, r, Status::NOT_SUPPORTED, "STORE-36 READ with txn 1");
    let r = s.write(c, b"cf_nt", b"x", 1);
    expect(c, r, Status::NOT_SUPPORTED, "STORE-36 WRITE with txn 1");
    s.expect_missing(c, b"cf_nt", 0, "STORE-36 refused write changed nothing");
}
