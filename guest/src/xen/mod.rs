//! The guest side of the Xen transport (spec appendix B): Xen detection, the hypercall page,
//! typed hypercalls, grant table v1, event channels, a xenstore ring client, the PV console,
//! the frontend side of the xenbus handshake, and [`crate::Pvabi::connect_xen`], which makes a
//! [`crate::Pvabi`] handle whose calls go through the shared ring ([`crate::ring::RingGate`])
//! with an event channel as the doorbell.
//!
//! Everything here follows the semantics of Xen's public headers (`xen.h`, `grant_table.h`,
//! `event_channel.h`, `hvm/params.h`, `hvm/hvm_op.h`, `io/xs_wire.h`, `io/xenbus.h`,
//! `io/console.h`, `arch-x86/cpuid.h`); the numbers are restated in [`abi`].
//!
//! The pure parts (CPUID detection over a `cpuid` function, xenstore message encoding and
//! decoding, the xenstore ring protocol over an in-memory interface page, handshake key
//! formatting and validation, the ring-fits-window check) run and are tested on any host. The
//! parts that execute hypercalls ([`hypercall::Hypercalls`]) only work inside a Xen HVM or PVH
//! guest running in ring 0.

pub mod abi;
pub mod connect;
pub mod console;
pub mod grant;
pub mod handshake;
pub mod hypercall;
pub mod xenstore;

pub use connect::{XenConnectError, XenConnectOptions, XenConnection, XenWindow};
pub use hypercall::Hypercalls;

/// What the CPUID leaves say about the Xen hypervisor underneath.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XenCpuid {
    /// The base leaf (`0x4000_0000 + 0x100 * k`) whose signature is `"XenVMMXenVMM"`.
    pub base: u32,
    /// The largest leaf of this range (EAX of the base leaf).
    pub max_leaf: u32,
    /// Xen's version, `major << 16 | minor` (EAX of leaf `base + 1`).
    pub version: u32,
    /// Number of hypercall pages (EAX of leaf `base + 2`).
    pub hypercall_pages: u32,
    /// The MSR whose write installs the hypercall page (EBX of leaf `base + 2`).
    pub hypercall_msr: u32,
}

impl XenCpuid {
    /// Xen's major version.
    pub fn major(&self) -> u32 {
        self.version >> 16
    }

    /// Xen's minor version.
    pub fn minor(&self) -> u32 {
        self.version & 0xFFFF
    }
}

/// The CPUID signature of Xen in EBX, ECX, EDX of the base leaf.
pub const XEN_SIGNATURE: [u8; 12] = *b"XenVMMXenVMM";

/// Finds Xen through the CPUID leaves `0x4000_0000 + 0x100 * k` (`k` in `0..=255`): the first
/// leaf whose EBX, ECX, EDX spell `"XenVMMXenVMM"` and whose EAX names at least leaf
/// `base + 2` (the hypercall-page leaf). `cpuid(leaf)` returns `[eax, ebx, ecx, edx]`.
///
/// Pure: the caller supplies the instruction (see [`cpuid_native`]) or a table in tests.
///
/// # Examples
///
/// ```
/// use pvabi_guest::xen::detect;
/// let sig = |s: &[u8; 4]| u32::from_le_bytes(*s);
/// let xen = detect(|leaf| match leaf {
///     0x4000_0100 => [0x4000_0105, sig(b"XenV"), sig(b"MMXe"), sig(b"nVMM")],
///     0x4000_0101 => [0x0004_0011, 0, 0, 0],
///     0x4000_0102 => [1, 0x4000_0000, 0, 0],
///     _ => [0; 4],
/// })
/// .unwrap();
/// assert_eq!((xen.base, xen.major(), xen.minor()), (0x4000_0100, 4, 17));
/// ```
pub fn detect(cpuid: impl Fn(u32) -> [u32; 4]) -> Option<XenCpuid> {
    (0u32..=255).find_map(|k| {
        let base = 0x4000_0000 + 0x100 * k;
        let [eax, ebx, ecx, edx] = cpuid(base);
        let mut sig = [0u8; 12];
        let regs = ebx
            .to_le_bytes()
            .into_iter()
            .chain(ecx.to_le_bytes())
            .chain(edx.to_le_bytes());
        for (d, b) in sig.iter_mut().zip(regs) {
            *d = b;
        }
        if sig != XEN_SIGNATURE || eax < base + 2 || eax > base + 0xFF {
            return None;
        }
        let [version, ..] = cpuid(base + 1);
        let [pages, msr, ..] = cpuid(base + 2);
        Some(XenCpuid {
            base,
            max_leaf: eax,
            version,
            hypercall_pages: pages,
            hypercall_msr: msr,
        })
    })
}

/// The `cpuid` instruction (leaf in EAX, subleaf 0), for [`detect`] on real hardware.
#[cfg(target_arch = "x86_64")]
pub fn cpuid_native(leaf: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, 0);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// Why a Xen operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XenError {
    /// No Xen CPUID leaves (not running on Xen).
    NotXen,
    /// A hypercall returned this negative `errno` value.
    Hypercall(i64),
    /// xenstored answered `XS_ERROR` with this error name (e.g. `"ENOENT"`), truncated to 16
    /// bytes.
    Store(ErrName),
    /// A xenstore message or value does not fit the limits (payload, buffer, ring).
    TooLong,
    /// xenstored's answer is malformed (wrong request id or type, bad length).
    Protocol,
    /// The other side did not answer within the polling limit.
    TimedOut,
    /// A value read from xenstore is not what the handshake needs (not a number, out of
    /// range, not UTF-8).
    BadValue,
    /// The backend refused the handshake (its `state` became 5 or 6).
    Refused,
    /// The ring does not fit the window, or the window does not fit the backend's limits.
    Layout,
    /// A grant reference is out of the table or reserved.
    BadGrantRef,
}

/// A short error name from xenstored (e.g. `ENOENT`), stored inline.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ErrName {
    bytes: [u8; 16],
    len: u8,
}

impl ErrName {
    /// The name as a string (empty if it was not UTF-8).
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(self.bytes.get(..usize::from(self.len)).unwrap_or_default())
            .unwrap_or_default()
    }

    /// The name of `bytes` (up to a NUL, at most 16 bytes kept).
    pub fn new(bytes: &[u8]) -> Self {
        let mut out = [0u8; 16];
        let mut len = 0u8;
        for (d, &b) in out.iter_mut().zip(bytes.iter().take_while(|&&b| b != 0)) {
            *d = b;
            len += 1;
        }
        Self { bytes: out, len }
    }
}

impl core::fmt::Debug for ErrName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::fmt::Display for XenError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            XenError::NotXen => f.write_str("not running on Xen"),
            XenError::Hypercall(e) => write!(f, "hypercall failed with errno {e}"),
            XenError::Store(n) => write!(f, "xenstored error {}", n.as_str()),
            XenError::TooLong => f.write_str("xenstore message or value too long"),
            XenError::Protocol => f.write_str("malformed xenstore answer"),
            XenError::TimedOut => f.write_str("timed out"),
            XenError::BadValue => f.write_str("bad value in xenstore"),
            XenError::Refused => f.write_str("backend refused the handshake"),
            XenError::Layout => f.write_str("ring or window layout out of limits"),
            XenError::BadGrantRef => f.write_str("grant reference out of range"),
        }
    }
}

/// A small inline string buffer (no allocator): xenstore paths and decimal values.
#[derive(Clone, Copy)]
pub struct StrBuf<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> StrBuf<N> {
    /// An empty buffer.
    pub const fn new() -> Self {
        Self {
            buf: [0; N],
            len: 0,
        }
    }

    /// The bytes written so far.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }

    /// The text written so far.
    pub fn as_str(&self) -> &str {
        // Only `write_str` fills the buffer, with whole `&str`s.
        core::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

impl<const N: usize> Default for StrBuf<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> core::fmt::Write for StrBuf<N> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len.checked_add(s.len()).ok_or(core::fmt::Error)?;
        let dst = self.buf.get_mut(self.len..end).ok_or(core::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

impl<const N: usize> core::fmt::Debug for StrBuf<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// Formats `args` into a [`StrBuf`].
///
/// # Errors
///
/// [`XenError::TooLong`] if the text does not fit `N` bytes.
pub fn format<const N: usize>(args: core::fmt::Arguments<'_>) -> Result<StrBuf<N>, XenError> {
    let mut b = StrBuf::new();
    core::fmt::write(&mut b, args).map_err(|_| XenError::TooLong)?;
    Ok(b)
}

/// Parses a xenstore decimal value as appendix B's `XEN-3` defines it: ASCII digits only, no
/// sign, no leading zeros (except `"0"` itself), at most 20 digits, and a value that fits `u64`.
///
/// # Errors
///
/// [`XenError::BadValue`] for anything else.
pub fn parse_decimal(s: &[u8]) -> Result<u64, XenError> {
    if s.is_empty() || s.len() > 20 || (s.len() > 1 && s.first() == Some(&b'0')) {
        return Err(XenError::BadValue);
    }
    s.iter().try_fold(0u64, |acc, &c| {
        if !c.is_ascii_digit() {
            return Err(XenError::BadValue);
        }
        acc.checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(c - b'0')))
            .ok_or(XenError::BadValue)
    })
}

#[cfg(test)]
// In tests a panic is the failure report.
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn sig(s: &[u8; 4]) -> u32 {
        u32::from_le_bytes(*s)
    }

    #[test]
    fn detect_finds_xen_at_any_base_and_skips_others() {
        // Xen behind a Viridian/KVM-style leaf at 0x4000_0000 (as with viridian=1).
        let table = |leaf: u32| match leaf {
            0x4000_0000 => [0x4000_0006, sig(b"Micr"), sig(b"osof"), sig(b"t Hv")],
            0x4000_0100 => [0x4000_0105, sig(b"XenV"), sig(b"MMXe"), sig(b"nVMM")],
            0x4000_0101 => [0x0004_0011, 0, 0, 0],
            0x4000_0102 => [1, 0x4000_0000, 0, 0],
            _ => [0; 4],
        };
        let x = detect(table).expect("xen");
        assert_eq!(x.base, 0x4000_0100);
        assert_eq!(x.max_leaf, 0x4000_0105);
        assert_eq!((x.major(), x.minor()), (4, 17));
        assert_eq!((x.hypercall_pages, x.hypercall_msr), (1, 0x4000_0000));

        let plain = |leaf: u32| match leaf {
            0x4000_0000 => [0x4000_0004, sig(b"XenV"), sig(b"MMXe"), sig(b"nVMM")],
            0x4000_0001 => [0x0004_000d, 0, 0, 0],
            0x4000_0002 => [1, 0x4000_0200, 0, 0],
            _ => [0; 4],
        };
        assert_eq!(detect(plain).map(|x| x.base), Some(0x4000_0000));
    }

    #[test]
    fn detect_rejects_wrong_signature_and_short_ranges() {
        assert_eq!(detect(|_| [0; 4]), None);
        // KVM's signature.
        assert_eq!(
            detect(|leaf| if leaf == 0x4000_0000 {
                [0x4000_0001, sig(b"KVMK"), sig(b"VMKV"), sig(b"M\0\0\0")]
            } else {
                [0; 4]
            }),
            None
        );
        // Xen's signature but EAX does not reach the hypercall leaf.
        assert_eq!(
            detect(|leaf| if leaf == 0x4000_0000 {
                [0x4000_0001, sig(b"XenV"), sig(b"MMXe"), sig(b"nVMM")]
            } else {
                [0; 4]
            }),
            None
        );
        // EAX beyond the 0x100-leaf range is not a valid base leaf.
        assert_eq!(
            detect(|leaf| if leaf == 0x4000_0000 {
                [0x4000_0200, sig(b"XenV"), sig(b"MMXe"), sig(b"nVMM")]
            } else {
                [0; 4]
            }),
            None
        );
        // The last possible base is still scanned.
        let last = detect(|leaf| match leaf {
            0x4000_FF00 => [0x4000_FF02, sig(b"XenV"), sig(b"MMXe"), sig(b"nVMM")],
            _ => [0; 4],
        });
        assert_eq!(last.map(|x| x.base), Some(0x4000_FF00));
    }

    #[test]
    fn decimals_follow_xen_3() {
        assert_eq!(parse_decimal(b"0"), Ok(0));
        assert_eq!(parse_decimal(b"1024"), Ok(1024));
        assert_eq!(
            parse_decimal(b"18446744073709551615"),
            Ok(u64::MAX),
            "20 digits"
        );
        for bad in [
            &b""[..],
            b"01",
            b"-1",
            b"+1",
            b"1a",
            b" 1",
            b"18446744073709551616",
            b"000000000000000000001",
        ] {
            assert_eq!(parse_decimal(bad), Err(XenError::BadValue), "{bad:?}");
        }
    }

    #[test]
    fn strbuf_formats_and_refuses_overflow() {
        let b: StrBuf<32> = format(format_args!("/local/domain/{}/x", 7)).unwrap();
        assert_eq!(b.as_str(), "/local/domain/7/x");
        assert!(format::<4>(format_args!("12345")).is_err());
        assert_eq!(ErrName::new(b"ENOENT\0junk").as_str(), "ENOENT");
    }
}
