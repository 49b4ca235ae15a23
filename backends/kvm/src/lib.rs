//! KVM backend of pvabi.
