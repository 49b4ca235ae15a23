//! `cargo test -p conformance`: certifies every backend available on this machine (the mock,
//! KVM in both modes, Xen) and fails if any clause fails. Backends that cannot run here are
//! named loudly with the reason.

use conformance::{certify, Certifiable, Certification, MockBackend};

fn backends() -> Vec<Box<dyn Certifiable>> {
    let mut v: Vec<Box<dyn Certifiable>> = vec![Box::new(MockBackend::default())];
    v.extend(conformance::hardware_backends());
    // Xen, where scripts/xen/setup.sh has prepared Xen under QEMU (a few minutes).
    v.push(Box::new(conformance::XenBackend::default()));
    v
}

#[test]
fn certify_every_available_backend() {
    let mut failed = Vec::new();
    for b in backends() {
        match certify(b.as_ref()) {
            Certification::Ran(r) => {
                let s = r.summary;
                println!(
                    "CERTIFY {} ({}): passed {} failed {} skipped {} untested {}{}",
                    r.backend,
                    r.mode,
                    s.passed,
                    s.failed,
                    s.skipped,
                    s.untested,
                    if r.is_pass() {
                        ""
                    } else {
                        "  <= NOT CERTIFIED"
                    }
                );
                // The suite's coverage is part of what is certified: at most 10% of the spec's
                // clauses may have no case at all.
                assert!(
                    s.untested * 10 <= r.clauses.len(),
                    "{} of {} clauses are untested (more than 10%)",
                    s.untested,
                    r.clauses.len()
                );
                if !r.is_pass() {
                    println!("{}", r.to_text());
                    failed.push(format!("{} ({})", r.backend, r.mode));
                }
            }
            Certification::Skipped { backend, reason } => {
                eprintln!("SKIP: backend {backend} is not certified on this machine: {reason}");
                println!("CERTIFY {backend}: SKIPPED ({reason})");
            }
        }
    }
    assert!(failed.is_empty(), "backends not certified: {failed:?}");
}
