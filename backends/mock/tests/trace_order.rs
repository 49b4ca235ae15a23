//! The call trace is in call order (oldest first, sequence numbers strictly increasing) also
//! when several vCPUs call at the same time.

use pvabi::call::BASE_GET_VCPU_ID;
use pvabi::Regs;
use pvabi_mock::{Mock, MockConfig};

#[test]
fn trace_is_ordered_under_concurrent_calls() {
    let m = Mock::new(MockConfig {
        vcpus: 4,
        ..MockConfig::default()
    })
    .expect("mock");
    std::thread::scope(|s| {
        for v in 0..4u32 {
            let m = &m;
            s.spawn(move || {
                for _ in 0..20_000 {
                    let r = m.call_as(v, Regs::new(BASE_GET_VCPU_ID, [0; 6]));
                    assert_eq!(r.value, v as u64);
                }
            });
        }
    });
    let trace = m.trace();
    assert_eq!(trace.len(), 80_000);
    for w in trace.windows(2) {
        assert!(
            w[0].seq < w[1].seq,
            "trace out of order: seq {} before seq {}",
            w[0].seq,
            w[1].seq
        );
    }
}
