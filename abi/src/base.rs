//! BASE service (spec chapter 4, clauses `BASE-*`): ABI version, backend identity, service
//! probing, feature bits, vCPU identity and count, and registration of the shared-ring gate.
//!
//! Every host implements BASE completely (spec `BASE-10`).

pub use crate::call::{
    BASE_GET_ABI_VERSION, BASE_GET_BACKEND_ID, BASE_GET_BACKEND_VERSION, BASE_GET_FEATURES,
    BASE_GET_VCPU_COUNT, BASE_GET_VCPU_ID, BASE_PROBE_SERVICE, BASE_RING_REGISTER,
    BASE_RING_UNREGISTER,
};
pub use crate::discovery::backend_id;
