//! Host-side errors: configuration mistakes and host API misuse. Guest errors are
//! [`pvabi::Status`] values returned to the guest, never these.

use pvabi::Status;

/// A [`crate::VmConfig`] or guest memory that cannot form a VM.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// vCPU count outside `1..=pvabi::MAX_VCPUS`.
    #[error("vCPU count {0} outside 1..={max}", max = pvabi::MAX_VCPUS)]
    VcpuCount(u32),
    /// The boot vCPU id is not below the vCPU count.
    #[error("boot vCPU {0} is not below the vCPU count")]
    BootVcpu(u32),
    /// A memory-map entry is malformed, overlaps another, is unsorted, or a RAM entry is not
    /// backed by guest RAM.
    #[error("memory map entry {index}: {why}")]
    MemoryMap {
        /// Index of the offending entry.
        index: usize,
        /// What is wrong with it.
        why: &'static str,
    },
    /// vm-memory could not create the guest RAM.
    #[error("guest memory: {0}")]
    Memory(String),
}

/// A host API call that could not be carried out.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostError {
    /// The operation failed with the status a guest would have seen.
    #[error("operation failed: {0}")]
    Status(Status),
}

impl From<Status> for HostError {
    fn from(s: Status) -> Self {
        HostError::Status(s)
    }
}
