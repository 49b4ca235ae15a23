//! Guest-side shim of pvabi: discovery, gates and typed service wrappers for guest kernels
