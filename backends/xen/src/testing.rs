//! In-memory stand-ins for xenstore, grant tables and event channels, so that the transport's
//! handshake and ring run in ordinary tests, both sides in one process.
//!
//! They model what the transport relies on and no more: [`MemXenStore`] keeps nodes with
//! permission lists and enforces them for unprivileged connections (transactions are accepted
//! but not isolated and never conflict; watches never fire, so callers reconcile explicitly); [`MemGrants`] is a shared memory file whose pages
//! a guest grants and a backend maps (only runs of consecutive pages map); [`MemEvtchn`] connects
//! unbound ports to the domain they were allocated for.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io;
use std::os::fd::FromRawFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{FileOffset, MmapRegion};

use crate::error::{Error, Result, XsErrno};
use crate::frontend::{GrantAllocator, UnboundChannel};
use crate::ops::{TxnId, WatchEvent, XenStoreOps};
use crate::perms::{Access, Perm};
use crate::sys::PAGE_SIZE;
use crate::transport::{EventChannel, GrantMapper};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

type Nodes = BTreeMap<String, (Vec<u8>, Vec<Perm>)>;

/// A xenstore in memory; [`MemXenStore::connect`] gives one connection per domain.
#[derive(Clone, Debug, Default)]
pub struct MemXenStore {
    nodes: Arc<Mutex<Nodes>>,
    domid: u32,
}

impl MemXenStore {
    /// An empty store with `/local/domain/<d>` for each of `domains` (owned by that domain) and
    /// a privileged connection as domain 0.
    pub fn new(domains: &[u32]) -> MemXenStore {
        let s = MemXenStore::default();
        {
            let mut n = lock(&s.nodes);
            for p in ["/local", "/local/domain"] {
                n.insert(p.into(), (Vec::new(), vec![Perm::new(0, Access::Read)]));
            }
            for d in domains {
                n.insert(
                    format!("/local/domain/{d}"),
                    (Vec::new(), vec![Perm::new(*d, Access::None)]),
                );
            }
        }
        s
    }

    /// Another connection to the same store, as domain `domid` (0 is privileged).
    pub fn connect(&self, domid: u32) -> MemXenStore {
        MemXenStore {
            nodes: self.nodes.clone(),
            domid,
        }
    }

    /// Removes a domain's whole subtree (the domain was destroyed).
    pub fn destroy_domain(&self, domid: u32) {
        let p = format!("/local/domain/{domid}");
        lock(&self.nodes).retain(|k, _| k != &p && !k.starts_with(&format!("{p}/")));
    }

    fn abs(&self, path: &str) -> Result<String> {
        if path.is_empty() || path.ends_with('/') || path.contains("//") {
            return Err(Error::Xenstored(XsErrno::Einval));
        }
        Ok(if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/local/domain/{}/{path}", self.domid)
        })
    }

    fn allowed(&self, perms: &[Perm], want_write: bool) -> bool {
        if self.domid == 0 {
            return true;
        }
        let Some(owner) = perms.first() else {
            return false;
        };
        if owner.domid == self.domid {
            return true;
        }
        let access = perms[1..]
            .iter()
            .find(|p| p.domid == self.domid)
            .map_or(owner.access, |p| p.access);
        match access {
            Access::Both => true,
            Access::Read => !want_write,
            Access::Write => want_write,
            Access::None => false,
        }
    }

    fn parent(path: &str) -> &str {
        match path.rfind('/') {
            Some(0) | None => "/",
            Some(i) => &path[..i],
        }
    }

    /// The permissions that decide an access to `path`: its own, or its nearest existing
    /// ancestor's for a node that does not exist.
    fn perms_for(nodes: &Nodes, path: &str) -> Vec<Perm> {
        let mut p = path;
        loop {
            if let Some((_, perms)) = nodes.get(p) {
                return perms.clone();
            }
            if p == "/" {
                return vec![Perm::new(0, Access::None)];
            }
            p = Self::parent(p);
        }
    }
}

impl XenStoreOps for MemXenStore {
    fn read(&mut self, _txn: TxnId, path: &str) -> Result<Vec<u8>> {
        let p = self.abs(path)?;
        let n = lock(&self.nodes);
        let (v, perms) = n.get(&p).ok_or(Error::Xenstored(XsErrno::Enoent))?;
        if !self.allowed(perms, false) {
            return Err(Error::Xenstored(XsErrno::Eacces));
        }
        Ok(v.clone())
    }
    fn write(&mut self, _txn: TxnId, path: &str, value: &[u8]) -> Result<()> {
        let p = self.abs(path)?;
        let mut n = lock(&self.nodes);
        let perms = Self::perms_for(&n, &p);
        if !self.allowed(&perms, true) {
            return Err(Error::Xenstored(XsErrno::Eacces));
        }
        // New nodes (and missing parents) inherit the permissions that allowed the write,
        // owned by the writer when it is unprivileged, as xenstored does.
        let mut inherited = perms;
        if self.domid != 0 {
            if let Some(o) = inherited.first_mut() {
                o.domid = self.domid;
            }
        }
        let mut q = Self::parent(&p).to_string();
        while q != "/" && !n.contains_key(&q) {
            n.insert(q.clone(), (Vec::new(), inherited.clone()));
            q = Self::parent(&q).to_string();
        }
        match n.get_mut(&p) {
            Some(e) => e.0 = value.to_vec(),
            None => {
                n.insert(p, (value.to_vec(), inherited));
            }
        }
        Ok(())
    }
    fn mkdir(&mut self, txn: TxnId, path: &str) -> Result<()> {
        let p = self.abs(path)?;
        if lock(&self.nodes).contains_key(&p) {
            return Ok(());
        }
        self.write(txn, &p, b"")
    }
    fn directory(&mut self, _txn: TxnId, path: &str) -> Result<Vec<String>> {
        let p = self.abs(path)?;
        let n = lock(&self.nodes);
        let (_, perms) = n.get(&p).ok_or(Error::Xenstored(XsErrno::Enoent))?;
        if !self.allowed(perms, false) {
            return Err(Error::Xenstored(XsErrno::Eacces));
        }
        let prefix = format!("{p}/");
        Ok(n.keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .filter(|r| !r.contains('/'))
            .map(String::from)
            .collect())
    }
    fn remove(&mut self, _txn: TxnId, path: &str) -> Result<()> {
        let p = self.abs(path)?;
        let mut n = lock(&self.nodes);
        let perms = Self::perms_for(&n, &p);
        if !self.allowed(&perms, true) {
            return Err(Error::Xenstored(XsErrno::Eacces));
        }
        let prefix = format!("{p}/");
        n.retain(|k, _| k != &p && !k.starts_with(&prefix));
        Ok(())
    }
    fn get_perms(&mut self, _txn: TxnId, path: &str) -> Result<Vec<Perm>> {
        let p = self.abs(path)?;
        let n = lock(&self.nodes);
        let (_, perms) = n.get(&p).ok_or(Error::Xenstored(XsErrno::Enoent))?;
        if !self.allowed(perms, false) {
            return Err(Error::Xenstored(XsErrno::Eacces));
        }
        Ok(perms.clone())
    }
    fn set_perms(&mut self, _txn: TxnId, path: &str, perms: &[Perm]) -> Result<()> {
        let p = self.abs(path)?;
        let mut n = lock(&self.nodes);
        let e = n.get_mut(&p).ok_or(Error::Xenstored(XsErrno::Enoent))?;
        let owner = e.1.first().map(|o| o.domid);
        if self.domid != 0 && owner != Some(self.domid) {
            return Err(Error::Xenstored(XsErrno::Eacces));
        }
        if perms.is_empty() {
            return Err(Error::Xenstored(XsErrno::Einval));
        }
        e.1 = perms.to_vec();
        Ok(())
    }
    fn watch(&mut self, _path: &str, _token: &str) -> Result<()> {
        Ok(())
    }
    fn unwatch(&mut self, _path: &str, _token: &str) -> Result<()> {
        Ok(())
    }
    fn next_watch_event(&mut self, timeout: Option<Duration>) -> Result<Option<WatchEvent>> {
        std::thread::sleep(
            timeout
                .unwrap_or(Duration::from_millis(10))
                .min(Duration::from_millis(10)),
        );
        Ok(None)
    }
    fn transaction_start(&mut self) -> Result<TxnId> {
        // Accepted but not isolated: operations apply at once and a commit never conflicts.
        Ok(TxnId(1))
    }
    fn transaction_end(&mut self, _txn: TxnId, _commit: bool) -> Result<()> {
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
struct GrantEntry {
    granter: u32,
    grantee: u32,
    page: usize,
}

#[derive(Debug)]
struct GrantTable {
    entries: BTreeMap<u32, GrantEntry>,
    next_ref: u32,
    next_page: usize,
}

/// A shared memory file standing for guests' RAM, with a grant table over its pages. The
/// handle returned by [`MemGrants::as_domain`] grants as that domain; [`GrantMapper::map`]
/// maps as domain 0.
#[derive(Debug, Clone)]
pub struct MemGrants {
    file: Arc<File>,
    pages: usize,
    table: Arc<Mutex<GrantTable>>,
    domid: u32,
}

impl MemGrants {
    /// A memory of `pages` pages.
    ///
    /// # Errors
    ///
    /// The OS error of `memfd_create` or `ftruncate`.
    pub fn new(pages: usize) -> io::Result<MemGrants> {
        // SAFETY: the name is a valid NUL-terminated C string and the flags are valid; the
        // result is checked before use.
        let fd = unsafe { libc::memfd_create(c"pvabi-xen-grants".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by memfd_create, is open, and nothing else owns it.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len((pages * PAGE_SIZE) as u64)?;
        Ok(MemGrants {
            file: Arc::new(file),
            pages,
            table: Arc::new(Mutex::new(GrantTable {
                entries: BTreeMap::new(),
                next_ref: 8,
                next_page: 0,
            })),
            domid: 0,
        })
    }

    /// The same memory and table, granting as domain `domid`.
    pub fn as_domain(&self, domid: u32) -> MemGrants {
        MemGrants {
            domid,
            ..self.clone()
        }
    }

    /// Ends a grant (the guest revoked it); mappings made before stay, as with Xen.
    pub fn revoke(&self, gref: u32) {
        lock(&self.table).entries.remove(&gref);
    }

    fn map_pages(&self, first: usize, count: usize, writable: bool) -> io::Result<MmapRegion<()>> {
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        MmapRegionBuilder::new(count * PAGE_SIZE)
            .with_file_offset(FileOffset::from_arc(
                self.file.clone(),
                (first * PAGE_SIZE) as u64,
            ))
            .with_mmap_prot(prot)
            .with_mmap_flags(libc::MAP_SHARED)
            .build()
            .map_err(|e| io::Error::other(e.to_string()))
    }
}

impl GrantAllocator for MemGrants {
    fn grant(&self, grantee: u32, count: usize) -> io::Result<(Vec<u32>, MmapRegion<()>)> {
        let (first, refs) = {
            let mut t = lock(&self.table);
            if count == 0 || t.next_page + count > self.pages {
                return Err(io::Error::new(io::ErrorKind::OutOfMemory, "no pages left"));
            }
            let first = t.next_page;
            t.next_page += count;
            let mut refs = Vec::with_capacity(count);
            for i in 0..count {
                let r = t.next_ref;
                t.next_ref += 1;
                t.entries.insert(
                    r,
                    GrantEntry {
                        granter: self.domid,
                        grantee,
                        page: first + i,
                    },
                );
                refs.push(r);
            }
            (first, refs)
        };
        Ok((refs, self.map_pages(first, count, true)?))
    }
}

impl GrantMapper for MemGrants {
    fn map(&self, domid: u32, refs: &[u32], writable: bool) -> io::Result<MmapRegion<()>> {
        let t = lock(&self.table);
        let mut first = None;
        for (i, r) in refs.iter().enumerate() {
            let e = t
                .entries
                .get(r)
                .filter(|e| e.granter == domid && e.grantee == self.domid)
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("ref {r} is not a grant of domain {domid}"),
                    )
                })?;
            let f = *first.get_or_insert(e.page);
            if e.page != f + i {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "MemGrants maps only consecutive pages",
                ));
            }
        }
        let first = first.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no refs"))?;
        drop(t);
        self.map_pages(first, refs.len(), writable)
    }
}

#[derive(Debug)]
struct Port {
    handle: u64,
    domid: u32,
    /// `Err(remote domain)` while unbound, `Ok(remote port)` once bound.
    peer: std::result::Result<u32, u32>,
}

#[derive(Debug, Default)]
struct Bus {
    ports: BTreeMap<u32, Port>,
    next_port: u32,
    next_handle: u64,
    queues: BTreeMap<u64, VecDeque<u32>>,
}

/// Event channels in memory. Port numbers are global here (Xen's are per domain), which the
/// transport never relies on.
#[derive(Debug, Clone)]
pub struct MemEvtchn {
    bus: Arc<(Mutex<Bus>, Condvar)>,
    handle: u64,
    domid: u32,
}

impl Default for MemEvtchn {
    fn default() -> Self {
        MemEvtchn {
            bus: Arc::new((Mutex::new(Bus::default()), Condvar::new())),
            handle: 0,
            domid: 0,
        }
    }
}

impl MemEvtchn {
    /// A new handle on the same bus, for domain `domid`.
    pub fn open(&self, domid: u32) -> MemEvtchn {
        let mut b = lock(&self.bus.0);
        b.next_handle += 1;
        let h = b.next_handle;
        b.queues.insert(h, VecDeque::new());
        MemEvtchn {
            bus: self.bus.clone(),
            handle: h,
            domid,
        }
    }

    /// How many ports are bound or unbound on the bus (for leak checks).
    pub fn port_count(&self) -> usize {
        lock(&self.bus.0).ports.len()
    }
}

impl Drop for MemEvtchn {
    fn drop(&mut self) {
        if self.handle == 0 {
            return;
        }
        let mut b = lock(&self.bus.0);
        let h = self.handle;
        b.ports.retain(|_, p| p.handle != h);
        b.queues.remove(&h);
    }
}

impl UnboundChannel for MemEvtchn {
    fn alloc_unbound(&self, remote_domain: u32) -> io::Result<u32> {
        let mut b = lock(&self.bus.0);
        b.next_port += 1;
        let p = b.next_port;
        b.ports.insert(
            p,
            Port {
                handle: self.handle,
                domid: self.domid,
                peer: Err(remote_domain),
            },
        );
        Ok(p)
    }
}

impl EventChannel for MemEvtchn {
    fn bind_interdomain(&self, domid: u32, remote_port: u32) -> io::Result<u32> {
        let mut b = lock(&self.bus.0);
        match b.ports.get(&remote_port) {
            Some(p) if p.domid == domid && p.peer == Err(self.domid) => {}
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("port {remote_port} of domain {domid} is not unbound for us"),
                ))
            }
        }
        b.next_port += 1;
        let local = b.next_port;
        b.ports.insert(
            local,
            Port {
                handle: self.handle,
                domid: self.domid,
                peer: Ok(remote_port),
            },
        );
        if let Some(p) = b.ports.get_mut(&remote_port) {
            p.peer = Ok(local);
        }
        Ok(local)
    }
    fn notify(&self, local_port: u32) -> io::Result<()> {
        let mut b = lock(&self.bus.0);
        let remote = match b.ports.get(&local_port) {
            Some(p) if p.handle == self.handle => p.peer,
            _ => return Err(io::Error::new(io::ErrorKind::InvalidInput, "not our port")),
        };
        let Ok(remote) = remote else {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "port unbound"));
        };
        if let Some(h) = b.ports.get(&remote).map(|p| p.handle) {
            if let Some(q) = b.queues.get_mut(&h) {
                if !q.contains(&remote) {
                    q.push_back(remote);
                }
            }
        }
        self.bus.1.notify_all();
        Ok(())
    }
    fn wait(&self, timeout: Duration) -> io::Result<Option<u32>> {
        let deadline = Instant::now() + timeout;
        let mut b = lock(&self.bus.0);
        loop {
            if let Some(p) = b.queues.get_mut(&self.handle).and_then(VecDeque::pop_front) {
                return Ok(Some(p));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            b = self
                .bus
                .1
                .wait_timeout(b, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }
}
