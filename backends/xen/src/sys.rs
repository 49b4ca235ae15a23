//! Thin safe wrappers over Linux's Xen devices: `/dev/xen/evtchn` (event channels),
//! `/dev/xen/gntdev` (mapping another domain's grants) and `/dev/xen/gntalloc` (granting pages
//! of this domain to another one).
//!
//! The ioctl numbers and argument layouts are those of Linux's UAPI headers `xen/evtchn.h`,
//! `xen/gntdev.h` and `xen/gntalloc.h`; every mapping is made by `vm-memory`'s [`MmapRegion`]
//! over the device file, so it is unmapped when the region is dropped.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::raw::c_ulong;
use std::sync::Arc;

use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{FileOffset, MmapRegion};
use vmm_sys_util::ioctl::{ioctl_with_mut_ptr, ioctl_with_ptr, ioctl_with_ref, _IOC_NONE};
use vmm_sys_util::ioctl_ioc_nr;

/// The event-channel device.
pub const EVTCHN_DEVICE: &str = "/dev/xen/evtchn";
/// The grant-mapping device.
pub const GNTDEV_DEVICE: &str = "/dev/xen/gntdev";
/// The grant-allocation device.
pub const GNTALLOC_DEVICE: &str = "/dev/xen/gntalloc";
/// Bytes in a Xen page.
pub const PAGE_SIZE: usize = 4096;
/// Most grants one map or allocation request may name here (the transport's window limit plus
/// slack; the kernel has its own limits).
pub const MAX_GRANTS_PER_REQUEST: usize = 2048;

const EVTCHN_TYPE: u32 = b'E' as u32;
const GNT_TYPE: u32 = b'G' as u32;

#[repr(C)]
struct BindInterdomain {
    remote_domain: u32,
    remote_port: u32,
}
#[repr(C)]
struct BindUnbound {
    remote_domain: u32,
}
#[repr(C)]
struct PortArg {
    port: u32,
}

/// `struct ioctl_gntdev_map_grant_ref` with room for its `refs` array: the fixed part is
/// `count`, `pad`, `index` (16 bytes), then `count` pairs `(domid, ref)`.
const GNTDEV_MAP_FIXED: usize = 16;
/// `sizeof(struct ioctl_gntdev_map_grant_ref)` (one ref in the declared array).
const GNTDEV_MAP_SIZE: u32 = 24;
/// `sizeof(struct ioctl_gntdev_unmap_grant_ref)`.
const GNTDEV_UNMAP_SIZE: u32 = 16;
/// `struct ioctl_gntalloc_alloc_gref`: `domid: u16`, `flags: u16`, `count: u32`, `index: u64`,
/// then `count` grant ids (`u32`).
const GNTALLOC_ALLOC_FIXED: usize = 16;
/// `sizeof(struct ioctl_gntalloc_alloc_gref)` (one id, padded to 8 bytes).
const GNTALLOC_ALLOC_SIZE: u32 = 24;
/// `sizeof(struct ioctl_gntalloc_dealloc_gref)` (padded to 8 bytes).
const GNTALLOC_DEALLOC_SIZE: u32 = 16;
const GNTALLOC_FLAG_WRITABLE: u16 = 1;

/// The ioctl request numbers (`_IOC(_IOC_NONE, type, nr, size)`).
#[allow(missing_docs)]
mod nr {
    use super::*;

    ioctl_ioc_nr!(
        IOCTL_EVTCHN_BIND_INTERDOMAIN,
        _IOC_NONE,
        EVTCHN_TYPE,
        1,
        std::mem::size_of::<BindInterdomain>() as u32
    );
    ioctl_ioc_nr!(
        IOCTL_EVTCHN_BIND_UNBOUND_PORT,
        _IOC_NONE,
        EVTCHN_TYPE,
        2,
        std::mem::size_of::<BindUnbound>() as u32
    );
    ioctl_ioc_nr!(
        IOCTL_EVTCHN_UNBIND,
        _IOC_NONE,
        EVTCHN_TYPE,
        3,
        std::mem::size_of::<PortArg>() as u32
    );
    ioctl_ioc_nr!(
        IOCTL_EVTCHN_NOTIFY,
        _IOC_NONE,
        EVTCHN_TYPE,
        4,
        std::mem::size_of::<PortArg>() as u32
    );
    ioctl_ioc_nr!(
        IOCTL_GNTDEV_MAP_GRANT_REF,
        _IOC_NONE,
        GNT_TYPE,
        0,
        GNTDEV_MAP_SIZE
    );
    ioctl_ioc_nr!(
        IOCTL_GNTDEV_UNMAP_GRANT_REF,
        _IOC_NONE,
        GNT_TYPE,
        1,
        GNTDEV_UNMAP_SIZE
    );
    ioctl_ioc_nr!(
        IOCTL_GNTALLOC_ALLOC_GREF,
        _IOC_NONE,
        GNT_TYPE,
        5,
        GNTALLOC_ALLOC_SIZE
    );
    ioctl_ioc_nr!(
        IOCTL_GNTALLOC_DEALLOC_GREF,
        _IOC_NONE,
        GNT_TYPE,
        6,
        GNTALLOC_DEALLOC_SIZE
    );
}
use nr::*;

fn open_rw(path: &str) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

/// Turns an ioctl return value into the non-negative result or the OS error.
fn check(ret: i32) -> io::Result<u32> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as u32)
    }
}

/// An 8-byte aligned ioctl argument buffer of `len` bytes (the kernel structures hold `u64`s).
fn arg_buffer(len: usize) -> Vec<u64> {
    vec![0u64; len.div_ceil(8)]
}

fn put_u32(buf: &mut [u64], off: usize, v: u32) {
    let bytes: &mut [u8] = zerocopy::IntoBytes::as_mut_bytes(buf);
    bytes[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u16(buf: &mut [u64], off: usize, v: u16) {
    let bytes: &mut [u8] = zerocopy::IntoBytes::as_mut_bytes(buf);
    bytes[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

fn get_u32(buf: &[u64], off: usize) -> u32 {
    let bytes: &[u8] = zerocopy::IntoBytes::as_bytes(buf);
    u32::from_le_bytes([bytes[off], bytes[off + 1], bytes[off + 2], bytes[off + 3]])
}

fn get_u64(buf: &[u64], off: usize) -> u64 {
    buf[off / 8]
}

fn request_len(count: usize) -> io::Result<()> {
    if count == 0 || count > MAX_GRANTS_PER_REQUEST {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{count} grants in one request (1..={MAX_GRANTS_PER_REQUEST})"),
        ));
    }
    Ok(())
}

/// An open `/dev/xen/evtchn`: the event channels bound through it belong to this handle and are
/// unbound by the kernel when it is closed.
#[derive(Debug)]
pub struct EvtchnDev {
    file: File,
}

impl EvtchnDev {
    /// Opens [`EVTCHN_DEVICE`].
    ///
    /// # Errors
    ///
    /// The OS error of `open` (no such device outside a Xen domain).
    pub fn open() -> io::Result<EvtchnDev> {
        Ok(EvtchnDev {
            file: open_rw(EVTCHN_DEVICE)?,
        })
    }

    /// Binds a local port to `remote_port` of `remote_domain` (which that domain allocated
    /// unbound for this one) and returns the local port.
    ///
    /// # Errors
    ///
    /// The OS error (`EINVAL` for a port that is not unbound for this domain).
    pub fn bind_interdomain(&self, remote_domain: u32, remote_port: u32) -> io::Result<u32> {
        let arg = BindInterdomain {
            remote_domain,
            remote_port,
        };
        // SAFETY: the fd is an open evtchn device; the ioctl number encodes the size of
        // `BindInterdomain`, which has the kernel structure's layout (two `unsigned int`s) and
        // lives for the call; the kernel only reads it.
        check(unsafe { ioctl_with_ref(&self.file, IOCTL_EVTCHN_BIND_INTERDOMAIN(), &arg) })
    }

    /// Allocates a local port that `remote_domain` may bind, and returns it.
    ///
    /// # Errors
    ///
    /// The OS error.
    pub fn bind_unbound(&self, remote_domain: u32) -> io::Result<u32> {
        let arg = BindUnbound { remote_domain };
        // SAFETY: as in `bind_interdomain`: an evtchn fd and a live argument of the encoded
        // size and the kernel's layout (one `unsigned int`), only read.
        check(unsafe { ioctl_with_ref(&self.file, IOCTL_EVTCHN_BIND_UNBOUND_PORT(), &arg) })
    }

    /// Notifies the remote end of a local port.
    ///
    /// # Errors
    ///
    /// The OS error (`ENOTCONN`/`EINVAL` for a port not bound through this handle).
    pub fn notify(&self, port: u32) -> io::Result<()> {
        let arg = PortArg { port };
        // SAFETY: an evtchn fd and a live `PortArg` of the encoded size, only read.
        check(unsafe { ioctl_with_ref(&self.file, IOCTL_EVTCHN_NOTIFY(), &arg) }).map(|_| ())
    }

    /// Unbinds a local port.
    ///
    /// # Errors
    ///
    /// The OS error.
    pub fn unbind(&self, port: u32) -> io::Result<()> {
        let arg = PortArg { port };
        // SAFETY: an evtchn fd and a live `PortArg` of the encoded size, only read.
        check(unsafe { ioctl_with_ref(&self.file, IOCTL_EVTCHN_UNBIND(), &arg) }).map(|_| ())
    }

    /// Waits for the next fired port (blocking) and returns it. The kernel masks a port when it
    /// fires; [`EvtchnDev::unmask`] re-enables it.
    ///
    /// # Errors
    ///
    /// The OS error of `read`.
    pub fn wait(&self) -> io::Result<u32> {
        let mut b = [0u8; 4];
        (&self.file).read_exact(&mut b)?;
        Ok(u32::from_ne_bytes(b))
    }

    /// Unmasks a port after it fired.
    ///
    /// # Errors
    ///
    /// The OS error of `write`.
    pub fn unmask(&self, port: u32) -> io::Result<()> {
        (&self.file).write_all(&port.to_ne_bytes())
    }

    /// Waits at most `timeout_ms` milliseconds for the device to have a fired port.
    ///
    /// # Errors
    ///
    /// The OS error of `poll`.
    pub fn readable(&self, timeout_ms: i32) -> io::Result<bool> {
        let mut pfd = libc::pollfd {
            fd: self.file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid, live `pollfd` and the count passed is 1.
        let r = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(e);
        }
        Ok(r > 0 && pfd.revents & libc::POLLIN != 0)
    }
}

/// An open `/dev/xen/gntdev`: maps pages another domain granted to this one.
#[derive(Debug, Clone)]
pub struct GntDev {
    file: Arc<File>,
}

impl GntDev {
    /// Opens [`GNTDEV_DEVICE`].
    ///
    /// # Errors
    ///
    /// The OS error of `open`.
    pub fn open() -> io::Result<GntDev> {
        Ok(GntDev {
            file: Arc::new(open_rw(GNTDEV_DEVICE)?),
        })
    }

    /// Maps the pages `refs` that domain `domid` granted, in order, as one contiguous region
    /// (read-write when `writable`). The grants stay mapped until the region is dropped.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for an empty or too long `refs`; the OS error of the map ioctl or of
    /// `mmap` (which fails when a reference is not a valid grant of `domid` to this domain).
    pub fn map(&self, domid: u32, refs: &[u32], writable: bool) -> io::Result<MmapRegion<()>> {
        request_len(refs.len())?;
        let mut buf = arg_buffer(GNTDEV_MAP_FIXED + 8 * refs.len());
        put_u32(&mut buf, 0, refs.len() as u32);
        for (i, r) in refs.iter().enumerate() {
            put_u32(&mut buf, GNTDEV_MAP_FIXED + 8 * i, domid);
            put_u32(&mut buf, GNTDEV_MAP_FIXED + 8 * i + 4, *r);
        }
        // SAFETY: a gntdev fd; `buf` is 8-byte aligned, lives for the call and holds the fixed
        // part plus `count` (domid, ref) pairs, which is exactly what the kernel reads (it
        // copies `count` refs after the fixed part) and it writes only `index` in the fixed part.
        check(unsafe {
            ioctl_with_mut_ptr(&*self.file, IOCTL_GNTDEV_MAP_GRANT_REF(), buf.as_mut_ptr())
        })?;
        let index = get_u64(&buf, 8);
        let len = refs.len() * PAGE_SIZE;
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        let region = MmapRegionBuilder::new(len)
            .with_file_offset(FileOffset::from_arc(self.file.clone(), index))
            .with_mmap_prot(prot)
            .with_mmap_flags(libc::MAP_SHARED)
            .build();
        // The kernel keeps a mapped grant set alive until its last mapping goes, so the set is
        // released from the device's table now; the grants are unmapped when `region` is.
        let unmap_ret = self.release(index, refs.len() as u32);
        let region = region.map_err(|e| io::Error::other(format!("mmap of granted pages: {e}")))?;
        unmap_ret?;
        Ok(region)
    }

    fn release(&self, index: u64, count: u32) -> io::Result<()> {
        let mut buf = arg_buffer(GNTDEV_UNMAP_SIZE as usize);
        buf[0] = index;
        put_u32(&mut buf, 8, count);
        // SAFETY: a gntdev fd; `buf` is an 8-byte aligned, live `ioctl_gntdev_unmap_grant_ref`
        // (index, count, pad) of the encoded size, only read.
        check(unsafe { ioctl_with_ptr(&*self.file, IOCTL_GNTDEV_UNMAP_GRANT_REF(), buf.as_ptr()) })
            .map(|_| ())
    }
}

/// Pages this domain granted to another one through `/dev/xen/gntalloc`, mapped here.
#[derive(Debug)]
pub struct GrantedPages {
    /// The grant references, one per page, in order.
    pub refs: Vec<u32>,
    /// The pages, mapped read-write.
    pub region: MmapRegion<()>,
}

/// An open `/dev/xen/gntalloc`: grants pages of this domain to another domain. The grants end
/// when the device is closed and their mappings are gone.
#[derive(Debug, Clone)]
pub struct GntAlloc {
    file: Arc<File>,
}

impl GntAlloc {
    /// Opens [`GNTALLOC_DEVICE`].
    ///
    /// # Errors
    ///
    /// The OS error of `open`.
    pub fn open() -> io::Result<GntAlloc> {
        Ok(GntAlloc {
            file: Arc::new(open_rw(GNTALLOC_DEVICE)?),
        })
    }

    /// Allocates `count` zeroed pages granted writable to `domid` and maps them here.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a count of 0 or above [`MAX_GRANTS_PER_REQUEST`]; the OS error of the
    /// ioctl or of `mmap`.
    pub fn grant(&self, domid: u16, count: usize) -> io::Result<GrantedPages> {
        request_len(count)?;
        let mut buf = arg_buffer(GNTALLOC_ALLOC_FIXED + 4 * count);
        put_u16(&mut buf, 0, domid);
        put_u16(&mut buf, 2, GNTALLOC_FLAG_WRITABLE);
        put_u32(&mut buf, 4, count as u32);
        // SAFETY: a gntalloc fd; `buf` is 8-byte aligned, lives for the call, and has room for
        // the fixed part and `count` grant ids, which is all the kernel writes back.
        check(unsafe {
            ioctl_with_mut_ptr(&*self.file, IOCTL_GNTALLOC_ALLOC_GREF(), buf.as_mut_ptr())
        })?;
        let index = get_u64(&buf, 8);
        let refs = (0..count)
            .map(|i| get_u32(&buf, GNTALLOC_ALLOC_FIXED + 4 * i))
            .collect();
        let region = MmapRegionBuilder::new(count * PAGE_SIZE)
            .with_file_offset(FileOffset::from_arc(self.file.clone(), index))
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_SHARED)
            .build();
        // As with gntdev: the pages live on while mapped.
        let dealloc = self.dealloc(index, count as u32);
        let region = region.map_err(|e| io::Error::other(format!("mmap of granted pages: {e}")))?;
        dealloc?;
        Ok(GrantedPages { refs, region })
    }

    fn dealloc(&self, index: u64, count: u32) -> io::Result<()> {
        let mut buf = arg_buffer(GNTALLOC_DEALLOC_SIZE as usize);
        buf[0] = index;
        put_u32(&mut buf, 8, count);
        // SAFETY: a gntalloc fd; `buf` is an 8-byte aligned, live
        // `ioctl_gntalloc_dealloc_gref` (index, count) of the encoded size, only read.
        check(unsafe { ioctl_with_ptr(&*self.file, IOCTL_GNTALLOC_DEALLOC_GREF(), buf.as_ptr()) })
            .map(|_| ())
    }
}

/// The ioctl number of a request, for tests that compare with the UAPI headers' values.
#[doc(hidden)]
pub fn ioctl_numbers() -> [(&'static str, c_ulong); 8] {
    [
        (
            "IOCTL_EVTCHN_BIND_INTERDOMAIN",
            IOCTL_EVTCHN_BIND_INTERDOMAIN(),
        ),
        (
            "IOCTL_EVTCHN_BIND_UNBOUND_PORT",
            IOCTL_EVTCHN_BIND_UNBOUND_PORT(),
        ),
        ("IOCTL_EVTCHN_UNBIND", IOCTL_EVTCHN_UNBIND()),
        ("IOCTL_EVTCHN_NOTIFY", IOCTL_EVTCHN_NOTIFY()),
        ("IOCTL_GNTDEV_MAP_GRANT_REF", IOCTL_GNTDEV_MAP_GRANT_REF()),
        (
            "IOCTL_GNTDEV_UNMAP_GRANT_REF",
            IOCTL_GNTDEV_UNMAP_GRANT_REF(),
        ),
        ("IOCTL_GNTALLOC_ALLOC_GREF", IOCTL_GNTALLOC_ALLOC_GREF()),
        ("IOCTL_GNTALLOC_DEALLOC_GREF", IOCTL_GNTALLOC_DEALLOC_GREF()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_uapi_encoding() {
        // _IOC(_IOC_NONE, type, nr, size) = size << 16 | type << 8 | nr.
        let want = |ty: u8, nr: u32, size: u32| -> c_ulong {
            ((size << 16) | ((ty as u32) << 8) | nr) as c_ulong
        };
        let n: std::collections::BTreeMap<_, _> = ioctl_numbers().into_iter().collect();
        assert_eq!(n["IOCTL_EVTCHN_BIND_INTERDOMAIN"], want(b'E', 1, 8));
        assert_eq!(n["IOCTL_EVTCHN_BIND_UNBOUND_PORT"], want(b'E', 2, 4));
        assert_eq!(n["IOCTL_EVTCHN_UNBIND"], want(b'E', 3, 4));
        assert_eq!(n["IOCTL_EVTCHN_NOTIFY"], want(b'E', 4, 4));
        assert_eq!(n["IOCTL_GNTDEV_MAP_GRANT_REF"], want(b'G', 0, 24));
        assert_eq!(n["IOCTL_GNTDEV_UNMAP_GRANT_REF"], want(b'G', 1, 16));
        assert_eq!(n["IOCTL_GNTALLOC_ALLOC_GREF"], want(b'G', 5, 24));
        assert_eq!(n["IOCTL_GNTALLOC_DEALLOC_GREF"], want(b'G', 6, 16));
    }

    #[test]
    fn request_sizes_are_bounded() {
        assert!(request_len(0).is_err());
        assert!(request_len(1).is_ok());
        assert!(request_len(MAX_GRANTS_PER_REQUEST).is_ok());
        assert!(request_len(MAX_GRANTS_PER_REQUEST + 1).is_err());
    }

    #[test]
    fn argument_buffers_are_little_endian_fields() {
        let mut b = arg_buffer(GNTDEV_MAP_FIXED + 16);
        put_u32(&mut b, 0, 2);
        put_u32(&mut b, 16, 7);
        put_u32(&mut b, 20, 99);
        assert_eq!(b.len(), 4);
        assert_eq!(get_u32(&b, 0), 2);
        assert_eq!(get_u32(&b, 16), 7);
        assert_eq!(get_u32(&b, 20), 99);
        b[1] = 0x1234_5678_9abc;
        assert_eq!(get_u64(&b, 8), 0x1234_5678_9abc);
    }
}
