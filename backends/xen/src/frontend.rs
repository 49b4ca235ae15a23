//! The guest side of the Xen transport (spec appendix B) for a guest whose pvabi user runs in a
//! Linux user space: pages granted through `/dev/xen/gntalloc`, an event channel from
//! `/dev/xen/evtchn`, xenstore over `/dev/xen/xenbus`. The transport tests run it in a real
//! domU against the real backend in dom0, and in-process against [`crate::testing`].
//!
//! A guest kernel does the same with hypercalls (`pvabi-guest`'s Xen support); the protocol is
//! the same.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pvabi::ring::{RingCompletion, RingHeader, RingRequest};
use pvabi::Status;
use pvabi_host::GuestRam;
use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

use crate::ops::{TxnId, XenStoreOps};
use crate::sys::{EvtchnDev, GntAlloc, PAGE_SIZE};
use crate::transport::{frontend_dir, parse_number, state, EventChannel};
use pvabi_guest::xen::handshake::key;

/// Grants pages of this domain to another one.
pub trait GrantAllocator {
    /// Grants `count` fresh pages writable to `grantee`; returns their references and the
    /// pages mapped here.
    ///
    /// # Errors
    ///
    /// The OS error.
    fn grant(&self, grantee: u32, count: usize) -> io::Result<(Vec<u32>, MmapRegion<()>)>;
}

impl GrantAllocator for GntAlloc {
    fn grant(&self, grantee: u32, count: usize) -> io::Result<(Vec<u32>, MmapRegion<()>)> {
        let domid = u16::try_from(grantee)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "domain id above 65535"))?;
        let g = GntAlloc::grant(self, domid, count)?;
        Ok((g.refs, g.region))
    }
}

/// Event channels a guest allocates for another domain to bind.
pub trait UnboundChannel: EventChannel {
    /// Allocates a port that `remote_domain` may bind.
    ///
    /// # Errors
    ///
    /// The OS error.
    fn alloc_unbound(&self, remote_domain: u32) -> io::Result<u32>;
}

impl UnboundChannel for EvtchnDev {
    fn alloc_unbound(&self, remote_domain: u32) -> io::Result<u32> {
        self.bind_unbound(remote_domain)
    }
}

/// How a [`Frontend`] sets up its side.
#[derive(Clone, Debug)]
pub struct FrontendOptions {
    /// The guest's domain id; `None` reads `domid` from xenstore.
    pub domid: Option<u32>,
    /// The guest frame number the window is announced at.
    pub window_gfn: u64,
    /// Pages in the window (the ring takes the first ones).
    pub window_pages: u32,
    /// The ring's order.
    pub ring_order: u32,
    /// Keys written instead of the computed ones (tests of `XEN-3`/`XEN-4`).
    pub overrides: Vec<(String, Vec<u8>)>,
    /// Do not write the ring header (a guest breaking `XEN-2`).
    pub skip_ring_header: bool,
    /// How long to wait for each of the backend's states and for a completion.
    pub timeout: Duration,
}

impl Default for FrontendOptions {
    fn default() -> Self {
        FrontendOptions {
            domid: None,
            window_gfn: 0x100,
            window_pages: 16,
            ring_order: 4,
            overrides: Vec::new(),
            skip_ring_header: false,
            timeout: Duration::from_secs(20),
        }
    }
}

/// Why a handshake or a call failed on the guest side.
#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    /// A xenstore operation failed.
    #[error("xenstore: {0}")]
    Xenstore(#[from] crate::Error),
    /// Granting, mapping or an event channel failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The backend refused the handshake (its state went to Closed); its `error` key.
    #[error("the backend refused: {0}")]
    Refused(String),
    /// Something did not happen in time.
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// The ring or a completion is not as the protocol says.
    #[error("protocol: {0}")]
    Protocol(String),
}

/// A connected guest side: the window, the ring in its first pages, the event channel.
pub struct Frontend<X: XenStoreOps> {
    xs: X,
    domid: u32,
    backend_dir: String,
    window: GuestRam,
    ring_gpa: u64,
    order: u32,
    evtchn: Arc<dyn UnboundChannel>,
    port: u32,
    req_prod: u32,
    cmp_cons: u32,
    cookie: u32,
    timeout: Duration,
    /// The index page, kept granted while connected.
    _index: GuestRam,
}

impl<X: XenStoreOps> std::fmt::Debug for Frontend<X> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frontend")
            .field("domid", &self.domid)
            .field("ring_gpa", &self.ring_gpa)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

fn read_number<X: XenStoreOps>(xs: &mut X, path: &str) -> Option<u64> {
    xs.read(TxnId::NONE, path)
        .ok()
        .and_then(|v| parse_number(path, &v).ok())
}

impl<X: XenStoreOps> Frontend<X> {
    /// Performs the guest side of the handshake (`XEN-2`) and waits for Connected.
    ///
    /// # Errors
    ///
    /// [`FrontendError::Refused`] with the backend's reason when it refused; the other
    /// variants for local failures and timeouts.
    pub fn connect(
        mut xs: X,
        grants: &dyn GrantAllocator,
        evtchn: Arc<dyn UnboundChannel>,
        opts: &FrontendOptions,
    ) -> Result<Frontend<X>, FrontendError> {
        let domid = match opts.domid {
            Some(d) => d,
            None => read_number(&mut xs, "domid")
                .and_then(|d| u32::try_from(d).ok())
                .ok_or_else(|| FrontendError::Protocol("no readable domid".into()))?,
        };
        let fdir = frontend_dir(domid);
        let start = Instant::now();
        let (backend_dir, backend_id) = loop {
            let b = xs
                .read(TxnId::NONE, &format!("{fdir}/{}", key::BACKEND))
                .ok();
            let id = read_number(&mut xs, &format!("{fdir}/{}", key::BACKEND_ID));
            if let (Some(b), Some(id)) = (b, id) {
                let b = String::from_utf8_lossy(&b).into_owned();
                if read_number(&mut xs, &format!("{b}/{}", key::STATE))
                    == Some(u64::from(state::INIT_WAIT))
                {
                    break (b, id as u32);
                }
            }
            if start.elapsed() > opts.timeout {
                return Err(FrontendError::Timeout("the backend's InitWait".into()));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let pages = opts.window_pages as usize;
        let (refs, window) = grants.grant(backend_id, pages)?;
        let (index_refs, index) = grants.grant(backend_id, 1)?;
        // Write the refs into the index page through a GuestRam view of it.
        let index_view = GuestRam::new(
            GuestMemoryMmap::from_regions(vec![GuestRegionMmap::new(index, GuestAddress(0))
                .ok_or_else(|| FrontendError::Protocol("index page".into()))?])
            .map_err(|e| io::Error::other(e.to_string()))?,
        );
        let raw: Vec<u8> = refs.iter().flat_map(|r| r.to_le_bytes()).collect();
        index_view
            .write_bytes(0, &raw)
            .map_err(|s| FrontendError::Protocol(format!("index page write: {s}")))?;
        let base = opts.window_gfn * PAGE_SIZE as u64;
        let window = GuestRam::new(
            GuestMemoryMmap::from_regions(vec![GuestRegionMmap::new(window, GuestAddress(base))
                .ok_or_else(|| {
                FrontendError::Protocol("window".into())
            })?])
            .map_err(|e| io::Error::other(e.to_string()))?,
        );
        let ring_gpa = base;
        if !opts.skip_ring_header {
            let h = RingHeader {
                magic: RingHeader::MAGIC,
                order: opts.ring_order,
                ..RingHeader::default()
            };
            window
                .write_obj(ring_gpa, &h)
                .map_err(|s| FrontendError::Protocol(format!("ring header: {s}")))?;
        }
        let port = evtchn.alloc_unbound(backend_id)?;
        let mut keys: Vec<(String, Vec<u8>)> = vec![
            (
                key::WINDOW_GFN.into(),
                opts.window_gfn.to_string().into_bytes(),
            ),
            (
                key::WINDOW_PAGES.into(),
                opts.window_pages.to_string().into_bytes(),
            ),
            (
                key::WINDOW_INDEX_REF.into(),
                index_refs[0].to_string().into_bytes(),
            ),
            (key::RING_GPA.into(), ring_gpa.to_string().into_bytes()),
            (
                key::RING_ORDER.into(),
                opts.ring_order.to_string().into_bytes(),
            ),
            (key::EVENT_CHANNEL.into(), port.to_string().into_bytes()),
        ];
        for (k, v) in &opts.overrides {
            match keys.iter_mut().find(|(kk, _)| kk == k) {
                Some(e) => e.1 = v.clone(),
                None => keys.push((k.clone(), v.clone())),
            }
        }
        for (k, v) in &keys {
            xs.write(TxnId::NONE, &format!("{fdir}/{k}"), v)?;
        }
        xs.write(
            TxnId::NONE,
            &format!("{fdir}/{}", key::STATE),
            state::INITIALISED.to_string().as_bytes(),
        )?;
        let mut f = Frontend {
            xs,
            domid,
            backend_dir,
            window,
            ring_gpa,
            order: opts.ring_order,
            evtchn,
            port,
            req_prod: 0,
            cmp_cons: 0,
            cookie: 0,
            timeout: opts.timeout,
            _index: index_view,
        };
        let s = f.wait_backend(&[state::CONNECTED, state::CLOSED])?;
        if s == state::CLOSED {
            let why =
                f.xs.read(TxnId::NONE, &format!("{}/{}", f.backend_dir, key::ERROR))
                    .map(|v| String::from_utf8_lossy(&v).into_owned())
                    .unwrap_or_else(|_| "(no error key)".into());
            return Err(FrontendError::Refused(why));
        }
        f.xs.write(
            TxnId::NONE,
            &format!("{fdir}/{}", key::STATE),
            state::CONNECTED.to_string().as_bytes(),
        )?;
        Ok(f)
    }

    fn wait_backend(&mut self, want: &[u32]) -> Result<u32, FrontendError> {
        let start = Instant::now();
        loop {
            if let Some(s) = read_number(
                &mut self.xs,
                &format!("{}/{}", self.backend_dir, key::STATE),
            ) {
                if let Some(w) = want.iter().find(|w| u64::from(**w) == s) {
                    return Ok(*w);
                }
            }
            if start.elapsed() > self.timeout {
                return Err(FrontendError::Timeout(format!(
                    "the backend's state {want:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The guest's domain id.
    pub fn domid(&self) -> u32 {
        self.domid
    }

    /// The backend directory.
    pub fn backend_dir(&self) -> &str {
        &self.backend_dir
    }

    /// The window, at its guest-physical addresses.
    pub fn window(&self) -> &GuestRam {
        &self.window
    }

    /// The first window address after the ring (free for call buffers).
    pub fn data_gpa(&self) -> u64 {
        (self.ring_gpa + RingHeader::ring_bytes(self.order)).next_multiple_of(PAGE_SIZE as u64)
    }

    /// The xenstore connection.
    pub fn xenstore(&mut self) -> &mut X {
        &mut self.xs
    }

    /// The guest's local event-channel port.
    pub fn port(&self) -> u32 {
        self.port
    }

    /// Waits up to `timeout` for a notification from the backend (`XEN-8`).
    ///
    /// # Errors
    ///
    /// The OS error.
    pub fn wait_notification(&self, timeout: Duration) -> io::Result<bool> {
        Ok(self.evtchn.wait(timeout)?.is_some())
    }

    /// Posts one call on the ring, rings the doorbell (`XEN-6`) and waits for its completion.
    ///
    /// # Errors
    ///
    /// [`FrontendError::Timeout`] when no completion comes; [`FrontendError::Protocol`] for a
    /// completion with another cookie.
    pub fn call(&mut self, call_id: u32, args: [u64; 6]) -> Result<(Status, u64), FrontendError> {
        let slots = 1u32 << self.order;
        let slot = u64::from(self.req_prod % slots);
        self.cookie = self.cookie.wrapping_add(1);
        let req = RingRequest {
            cookie: self.cookie,
            call_id,
            args,
            _reserved: 0,
        };
        let w = &self.window;
        let perr = |s: Status| FrontendError::Protocol(format!("ring access: {s}"));
        w.write_obj(
            self.ring_gpa + RingHeader::SIZE as u64 + slot * RingRequest::SIZE as u64,
            &req,
        )
        .map_err(perr)?;
        self.req_prod = self.req_prod.wrapping_add(1);
        w.store_u32(
            self.ring_gpa + RingHeader::REQ_PROD as u64,
            self.req_prod,
            Ordering::Release,
        )
        .map_err(perr)?;
        let polling = w
            .load_u32(
                self.ring_gpa + RingHeader::HOST_POLLING as u64,
                Ordering::SeqCst,
            )
            .map_err(perr)?;
        if polling == 0 {
            self.evtchn.notify(self.port)?;
        }
        let start = Instant::now();
        loop {
            let cmp_prod = w
                .load_u32(
                    self.ring_gpa + RingHeader::CMP_PROD as u64,
                    Ordering::Acquire,
                )
                .map_err(perr)?;
            if cmp_prod != self.cmp_cons {
                break;
            }
            if start.elapsed() > self.timeout {
                return Err(FrontendError::Timeout(format!(
                    "the completion of call {call_id:#x}"
                )));
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        let cslot = u64::from(self.cmp_cons % slots);
        let c: RingCompletion = w
            .read_obj(
                self.ring_gpa
                    + RingHeader::SIZE as u64
                    + u64::from(slots) * RingRequest::SIZE as u64
                    + cslot * RingCompletion::SIZE as u64,
            )
            .map_err(perr)?;
        self.cmp_cons = self.cmp_cons.wrapping_add(1);
        w.store_u32(
            self.ring_gpa + RingHeader::CMP_CONS as u64,
            self.cmp_cons,
            Ordering::Release,
        )
        .map_err(perr)?;
        if c.cookie != self.cookie {
            return Err(FrontendError::Protocol(format!(
                "completion cookie {} for request {}",
                c.cookie, self.cookie
            )));
        }
        Ok((Status(c.status as i32), c.value))
    }

    /// Closes the connection (state Closing) and waits for the backend's Closed (`XEN-9`).
    ///
    /// # Errors
    ///
    /// The xenstore error, or a timeout.
    pub fn close(&mut self) -> Result<(), FrontendError> {
        let fdir = frontend_dir(self.domid);
        self.xs.write(
            TxnId::NONE,
            &format!("{fdir}/{}", key::STATE),
            state::CLOSING.to_string().as_bytes(),
        )?;
        self.wait_backend(&[state::CLOSED])?;
        Ok(())
    }
}
