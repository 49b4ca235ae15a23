//! Versioning and compatibility (spec chapter "Versioning", clauses `VER-*`).
//!
//! The wire ABI has its own version, independent of any crate's semver. A minor version only
//! adds (new services, functions, feature bits, status codes, reserved fields given meaning);
//! a major version may change anything and is a different ABI.

/// An ABI version: `major.minor` (spec `VER-1`).
///
/// Encoded in one 32-bit register value as `major << 16 | minor` (spec `VER-2`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AbiVersion {
    /// Major version: a different major is a different, incompatible ABI.
    pub major: u16,
    /// Minor version: additions only.
    pub minor: u16,
}

impl AbiVersion {
    /// Creates a version.
    pub const fn new(major: u16, minor: u16) -> Self {
        Self { major, minor }
    }

    /// The register encoding `major << 16 | minor` (spec `VER-2`).
    pub const fn to_u32(self) -> u32 {
        ((self.major as u32) << 16) | self.minor as u32
    }

    /// Decodes the register encoding (spec `VER-2`); bits above 31 are ignored.
    pub const fn from_u32(v: u32) -> Self {
        Self {
            major: (v >> 16) as u16,
            minor: (v & 0xffff) as u16,
        }
    }

    /// Whether a guest built for `self` may run on a host offering `host` (spec `VER-3`):
    /// same major, and the host's minor at least the guest's.
    pub const fn is_compatible_with_host(self, host: AbiVersion) -> bool {
        self.major == host.major && host.minor >= self.minor
    }
}

impl core::fmt::Display for AbiVersion {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Major version of the ABI this crate defines.
pub const ABI_VERSION_MAJOR: u16 = 1;
/// Minor version of the ABI this crate defines.
pub const ABI_VERSION_MINOR: u16 = 0;
/// The ABI version this crate defines: 1.0.
pub const ABI_VERSION: AbiVersion = AbiVersion::new(ABI_VERSION_MAJOR, ABI_VERSION_MINOR);
