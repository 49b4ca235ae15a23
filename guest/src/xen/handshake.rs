//! The guest (frontend) side of the xenbus handshake of appendix B: key names, their
//! formatting and validation (pure), and the steps over a [`XsClient`].
//!
//! The steps, in order (`XEN-2`): [`read_backend`] (the backend's directory and limits, once
//! its `state` is 2), [`grant_window`] (the window pages and the index page, grant table v1),
//! an unbound event channel for the backend ([`super::Hypercalls::evtchn_alloc_unbound`]), the
//! ring header ([`crate::ring::init_header`]), [`publish`] (every guest key, then `state` = 3),
//! and [`wait_connected`] (the backend's `state` = 4) before the first request; [`close`] ends
//! the connection.

use super::abi::xenbus_state;
use super::grant::GrantTable;
use super::hypercall::Doorbell;
use super::xenstore::XsClient;
use super::{format, StrBuf, XenError};
use core::sync::atomic::{AtomicU32, Ordering};
use pvabi::ring::RingHeader;

/// The device type in the handshake's paths.
pub const DEVICE_TYPE: &str = "pvabi";
/// The device index.
pub const DEVICE_INDEX: u32 = 0;
/// The largest window a backend accepts (pages).
pub const MAX_WINDOW_PAGES: u64 = 1024;
/// The largest ring order a backend accepts.
pub const MAX_RING_ORDER: u64 = RingHeader::MAX_ORDER as u64;

/// Guest keys (in the guest's device directory).
pub mod key {
    /// The backend directory's path (written by the backend).
    pub const BACKEND: &str = "backend";
    /// The backend's domain id (written by the backend).
    pub const BACKEND_ID: &str = "backend-id";
    /// First guest frame of the window.
    pub const WINDOW_GFN: &str = "window-gfn";
    /// Pages in the window.
    pub const WINDOW_PAGES: &str = "window-pages";
    /// Grant reference of the index page.
    pub const WINDOW_INDEX_REF: &str = "window-index-ref";
    /// Guest-physical address of the ring header.
    pub const RING_GPA: &str = "ring-gpa";
    /// The ring's order.
    pub const RING_ORDER: &str = "ring-order";
    /// The guest's unbound port for the backend.
    pub const EVENT_CHANNEL: &str = "event-channel";
    /// `XenbusState` (both directories).
    pub const STATE: &str = "state";
    /// The guest's directory (backend directory).
    pub const FRONTEND: &str = "frontend";
    /// The guest's domain id (backend directory).
    pub const FRONTEND_ID: &str = "frontend-id";
    /// `pvabi::AbiVersion` as a `u32` (backend directory).
    pub const ABI_VERSION: &str = "abi-version";
    /// Feature bits (backend directory).
    pub const FEATURES: &str = "features";
    /// The backend's window limit (backend directory).
    pub const MAX_WINDOW_PAGES: &str = "max-window-pages";
    /// The backend's ring-order limit (backend directory).
    pub const MAX_RING_ORDER: &str = "max-ring-order";
    /// Why the backend refused (backend directory).
    pub const ERROR: &str = "error";
}

/// A xenstore path.
pub type Path = StrBuf<128>;

/// The guest's device directory `/local/domain/D/device/pvabi/0`.
///
/// # Errors
///
/// Never in practice ([`XenError::TooLong`] if the path did not fit).
pub fn frontend_dir(domid: u32) -> Result<Path, XenError> {
    format(format_args!(
        "/local/domain/{domid}/device/{DEVICE_TYPE}/{DEVICE_INDEX}"
    ))
}

/// `dir/name`.
///
/// # Errors
///
/// [`XenError::TooLong`] if it does not fit a [`Path`].
pub fn join(dir: &str, name: &str) -> Result<Path, XenError> {
    format(format_args!("{dir}/{name}"))
}

/// The guest keys of the handshake table, as values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrontendKeys {
    /// First guest frame of the window.
    pub window_gfn: u64,
    /// Pages in the window.
    pub window_pages: u64,
    /// Grant reference of the index page.
    pub window_index_ref: u32,
    /// Guest-physical address of the ring header.
    pub ring_gpa: u64,
    /// The ring's order.
    pub ring_order: u32,
    /// The guest's port for the backend.
    pub event_channel: u32,
}

impl FrontendKeys {
    /// The (key, decimal value) pairs in the order [`publish`] writes them (`state` not
    /// included; it is written last).
    pub fn pairs(&self) -> [(&'static str, u64); 6] {
        [
            (key::WINDOW_GFN, self.window_gfn),
            (key::WINDOW_PAGES, self.window_pages),
            (key::WINDOW_INDEX_REF, u64::from(self.window_index_ref)),
            (key::RING_GPA, self.ring_gpa),
            (key::RING_ORDER, u64::from(self.ring_order)),
            (key::EVENT_CHANNEL, u64::from(self.event_channel)),
        ]
    }

    /// Checks the keys as a backend with limits `max_window_pages` and `max_ring_order` will
    /// (`XEN-3`): `1 <= window-pages <= max-window-pages`, `ring-order <= max-ring-order`, the
    /// window ends below `2^52`, `ring-gpa` is 4096-aligned and the ring's
    /// `RingHeader::ring_bytes(ring-order)` bytes lie in the window.
    ///
    /// # Errors
    ///
    /// [`XenError::Layout`] naming nothing more; the check is all or nothing.
    pub fn check(&self, max_window_pages: u64, max_ring_order: u64) -> Result<(), XenError> {
        ring_fits_window(
            self.window_gfn,
            self.window_pages,
            self.ring_gpa,
            self.ring_order,
            max_window_pages,
            max_ring_order,
        )
    }
}

/// The `XEN-3` layout check (see [`FrontendKeys::check`]).
///
/// # Errors
///
/// [`XenError::Layout`] when any condition fails.
pub fn ring_fits_window(
    window_gfn: u64,
    window_pages: u64,
    ring_gpa: u64,
    ring_order: u32,
    max_window_pages: u64,
    max_ring_order: u64,
) -> Result<(), XenError> {
    let ok = (|| {
        if window_pages == 0 || window_pages > max_window_pages.min(MAX_WINDOW_PAGES) {
            return None;
        }
        if u64::from(ring_order) > max_ring_order.min(MAX_RING_ORDER) {
            return None;
        }
        let start = window_gfn.checked_mul(4096)?;
        let end = window_gfn.checked_add(window_pages)?.checked_mul(4096)?;
        if end > 1 << 52 || ring_gpa % 4096 != 0 {
            return None;
        }
        let ring_end = ring_gpa.checked_add(RingHeader::ring_bytes(ring_order))?;
        (ring_gpa >= start && ring_end <= end).then_some(())
    })();
    ok.ok_or(XenError::Layout)
}

/// What the backend published.
#[derive(Clone, Copy, Debug)]
pub struct BackendInfo {
    /// The backend directory (the guest's `backend` key).
    pub dir: Path,
    /// `B`.
    pub id: u16,
    /// The backend's `abi-version`.
    pub abi_version: u32,
    /// The backend's `features`.
    pub features: u64,
    /// The backend's `max-window-pages`.
    pub max_window_pages: u64,
    /// The backend's `max-ring-order`.
    pub max_ring_order: u64,
}

/// Polls `path` until its decimal value is one of `want` or above `stop_at_or_above`; returns
/// the value. Missing nodes count as not yet there.
fn wait_state<D: Doorbell>(
    xs: &mut XsClient<'_, D>,
    path: &str,
    want: u64,
    stop_at_or_above: u64,
    polls: u64,
) -> Result<u64, XenError> {
    for _ in 0..polls.max(1) {
        match xs.read_u64(path) {
            Ok(v) if v == want || v >= stop_at_or_above => return Ok(v),
            Ok(_) | Err(XenError::Store(_)) => {}
            Err(e) => return Err(e),
        }
        for _ in 0..64 {
            xs.doorbell().idle();
        }
    }
    Err(XenError::TimedOut)
}

/// Reads the guest's `backend` and `backend-id`, waits (at most `polls` reads) until the
/// backend's `state` is 2 (InitWait), then reads its limits and version.
///
/// # Errors
///
/// The store's errors; [`XenError::BadValue`] for a key that is not what appendix B says;
/// [`XenError::Refused`] if the backend's state is 5 or 6; [`XenError::TimedOut`].
pub fn read_backend<D: Doorbell>(
    xs: &mut XsClient<'_, D>,
    domid: u32,
    polls: u64,
) -> Result<BackendInfo, XenError> {
    let fdir = frontend_dir(domid)?;
    let mut b = [0u8; 128];
    let n = xs.read(join(fdir.as_str(), key::BACKEND)?.as_str(), &mut b)?;
    let dir_str =
        core::str::from_utf8(b.get(..n).unwrap_or_default()).map_err(|_| XenError::BadValue)?;
    if !dir_str.starts_with('/') {
        return Err(XenError::BadValue);
    }
    let dir: Path = format(format_args!("{dir_str}"))?;
    let id = xs.read_u64(join(fdir.as_str(), key::BACKEND_ID)?.as_str())?;
    let id = u16::try_from(id).map_err(|_| XenError::BadValue)?;
    let st = wait_state(
        xs,
        join(dir.as_str(), key::STATE)?.as_str(),
        u64::from(xenbus_state::INIT_WAIT),
        u64::from(xenbus_state::CLOSING),
        polls,
    )?;
    if st != u64::from(xenbus_state::INIT_WAIT) {
        return Err(XenError::Refused);
    }
    let get = |xs: &mut XsClient<'_, D>, k: &str| xs.read_u64(join(dir.as_str(), k)?.as_str());
    let abi_version = u32::try_from(get(xs, key::ABI_VERSION)?).map_err(|_| XenError::BadValue)?;
    let features = get(xs, key::FEATURES)?;
    let max_window_pages = get(xs, key::MAX_WINDOW_PAGES)?;
    let max_ring_order = get(xs, key::MAX_RING_ORDER)?;
    Ok(BackendInfo {
        dir,
        id,
        abi_version,
        features,
        max_window_pages,
        max_ring_order,
    })
}

/// Grants the window's `pages` frames starting at `window_gfn` to `backend` (writable) with
/// references `first_ref + 1 ..`, records them in `index` (entry `i` for page `i`), and grants
/// the index page (frame `index_gfn`) read-only with `first_ref`. Returns `first_ref`, the
/// `window-index-ref`.
///
/// # Errors
///
/// [`XenError::Layout`] if the window does not fit `index` or the table;
/// [`XenError::BadGrantRef`] for a reserved `first_ref`.
pub fn grant_window(
    gt: &GrantTable<'_>,
    backend: u16,
    window_gfn: u64,
    pages: u32,
    index: &[AtomicU32],
    index_gfn: u64,
    first_ref: u32,
) -> Result<u32, XenError> {
    if pages == 0 || pages as usize > index.len() {
        return Err(XenError::Layout);
    }
    let last = first_ref.checked_add(pages).ok_or(XenError::Layout)?;
    if last as usize >= gt.len() {
        return Err(XenError::Layout);
    }
    for (i, slot) in index.iter().take(pages as usize).enumerate() {
        let gref = first_ref + 1 + i as u32;
        gt.grant(gref, backend, window_gfn + i as u64, false)?;
        slot.store(gref, Ordering::Relaxed);
    }
    core::sync::atomic::fence(Ordering::Release);
    gt.grant(first_ref, backend, index_gfn, true)?;
    Ok(first_ref)
}

/// Writes every guest key of `keys`, then `state` = 3 (Initialised), as `XEN-2` orders.
///
/// # Errors
///
/// The store's errors.
pub fn publish<D: Doorbell>(
    xs: &mut XsClient<'_, D>,
    domid: u32,
    keys: &FrontendKeys,
) -> Result<(), XenError> {
    let fdir = frontend_dir(domid)?;
    for (k, v) in keys.pairs() {
        xs.write_u64(join(fdir.as_str(), k)?.as_str(), v)?;
    }
    xs.write_u64(
        join(fdir.as_str(), key::STATE)?.as_str(),
        u64::from(xenbus_state::INITIALISED),
    )
}

/// Waits (at most `polls` reads) for the backend's `state` to become 4 (Connected).
///
/// # Errors
///
/// [`XenError::Refused`] if it becomes 5 or 6 (the backend's `error` key says why; read it
/// with [`backend_error`]); [`XenError::TimedOut`]; the store's errors.
pub fn wait_connected<D: Doorbell>(
    xs: &mut XsClient<'_, D>,
    backend: &BackendInfo,
    polls: u64,
) -> Result<(), XenError> {
    let st = wait_state(
        xs,
        join(backend.dir.as_str(), key::STATE)?.as_str(),
        u64::from(xenbus_state::CONNECTED),
        u64::from(xenbus_state::CLOSING),
        polls,
    )?;
    if st == u64::from(xenbus_state::CONNECTED) {
        Ok(())
    } else {
        Err(XenError::Refused)
    }
}

/// Closes the connection as `XEN-9` expects: writes the guest's `state` = 5 (Closing), waits
/// (at most `polls` reads) until the backend's `state` is 6 (it has then unmapped the window
/// and unbound the event channel, so the window's pages are the guest's alone again), and
/// writes `state` = 6 (Closed).
///
/// # Errors
///
/// [`XenError::TimedOut`] if the backend does not reach 6 (the guest's state stays 5); the
/// store's errors.
pub fn close<D: Doorbell>(
    xs: &mut XsClient<'_, D>,
    domid: u32,
    backend: &BackendInfo,
    polls: u64,
) -> Result<(), XenError> {
    let state = join(frontend_dir(domid)?.as_str(), key::STATE)?;
    xs.write_u64(state.as_str(), u64::from(xenbus_state::CLOSING))?;
    wait_state(
        xs,
        join(backend.dir.as_str(), key::STATE)?.as_str(),
        u64::from(xenbus_state::CLOSED),
        u64::from(xenbus_state::CLOSED),
        polls,
    )?;
    xs.write_u64(state.as_str(), u64::from(xenbus_state::CLOSED))
}

/// The backend's `error` key into `out` (empty if there is none); returns its length.
pub fn backend_error<D: Doorbell>(
    xs: &mut XsClient<'_, D>,
    backend: &BackendInfo,
    out: &mut [u8],
) -> usize {
    join(backend.dir.as_str(), key::ERROR)
        .and_then(|p| xs.read(p.as_str(), out))
        .unwrap_or(0)
}

#[cfg(test)]
// In tests a panic is the failure report.
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::xen::grant::GrantEntryV1;

    #[test]
    fn paths_are_the_appendix_b_ones() {
        let d = frontend_dir(5).unwrap();
        assert_eq!(d.as_str(), "/local/domain/5/device/pvabi/0");
        assert_eq!(
            join(d.as_str(), key::WINDOW_INDEX_REF).unwrap().as_str(),
            "/local/domain/5/device/pvabi/0/window-index-ref"
        );
        let k = FrontendKeys {
            window_gfn: 0x200,
            window_pages: 2,
            window_index_ref: 8,
            ring_gpa: 0x20_0000,
            ring_order: 3,
            event_channel: 5,
        };
        let names: [&str; 6] = k.pairs().map(|(n, _)| n);
        assert_eq!(
            names,
            [
                "window-gfn",
                "window-pages",
                "window-index-ref",
                "ring-gpa",
                "ring-order",
                "event-channel"
            ]
        );
        assert_eq!(k.check(1024, 8), Ok(()));
    }

    #[test]
    fn layout_check_matches_xen_3() {
        let ok = |g, p, r, o| ring_fits_window(g, p, r, o, 1024, 8).is_ok();
        assert!(ok(0x100, 1, 0x10_0000, 0)); // 88 bytes in one page
        assert!(ok(0x100, 1, 0x10_0000, 5)); // 64 + 32*88 = 2880 bytes
        assert!(!ok(0x100, 1, 0x10_0000, 6)); // 5696 bytes: needs two pages
        assert!(ok(0x100, 2, 0x10_0000, 6));
        assert!(ok(0x100, 2, 0x10_1000, 5)); // ring in the second page
        assert!(!ok(0x100, 2, 0x10_1000, 6)); // runs past the end
        assert!(!ok(0x100, 2, 0x0F_F000, 0)); // below the window
        assert!(!ok(0x100, 2, 0x10_0040, 0)); // not page-aligned
        assert!(!ok(0x100, 0, 0x10_0000, 0)); // empty window
        assert!(!ok(0x100, 1025, 0x10_0000, 0)); // above the transport's limit
        assert!(!ok(0x100, 1, 0x10_0000, 9)); // order above 8
        assert!(!ok((1 << 40) - 1, 2, (1 << 52) - 8192, 0)); // ends above 2^52
        assert!(ok((1 << 40) - 2, 2, (1 << 52) - 8192, 0)); // ends exactly at 2^52
        assert!(!ok(u64::MAX, 1, 0, 0)); // overflow
        assert!(ring_fits_window(0x100, 4, 0x10_0000, 0, 3, 8).is_err()); // backend limit
        assert!(ring_fits_window(0x100, 4, 0x10_0000, 4, 4, 3).is_err()); // backend limit
    }

    #[test]
    fn grant_window_fills_index_and_table() {
        let table: [GrantEntryV1; 32] = [const { GrantEntryV1::new() }; 32];
        let gt = GrantTable::new(&table);
        let index: [AtomicU32; 8] = [const { AtomicU32::new(0) }; 8];
        let r = grant_window(&gt, 0, 0x300, 3, &index, 0x2FF, 8).unwrap();
        assert_eq!(r, 8);
        assert_eq!(gt.entry(8), Some((1 | 4, 0, 0x2FF)));
        for i in 0..3u32 {
            assert_eq!(index[i as usize].load(Ordering::Relaxed), 9 + i);
            assert_eq!(gt.entry(9 + i), Some((1, 0, 0x300 + i)));
        }
        assert_eq!(index[3].load(Ordering::Relaxed), 0);
        assert_eq!(
            grant_window(&gt, 0, 0x300, 9, &index, 0x2FF, 8),
            Err(XenError::Layout)
        );
        assert_eq!(
            grant_window(&gt, 0, 0x300, 8, &index, 0x2FF, 24),
            Err(XenError::Layout)
        );
        assert_eq!(
            grant_window(&gt, 0, 0x300, 1, &index, 0x2FF, 2),
            Err(XenError::BadGrantRef)
        );
    }
}
