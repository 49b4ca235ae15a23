//! Shared host machinery of pvabi: call decoding, dispatch, guest memory and stateful services
