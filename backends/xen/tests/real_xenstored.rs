//! The xenstore clients against a real xenstored: builds the static `xenstore-conformance`
//! binary, runs it in the dom0 of a real Xen hypervisor booted under QEMU
//! (`scripts/xen/run-in-dom0.sh`) and in an unprivileged domU created there, and asserts that
//! every check it reports passed.
//!
//! Needs the set-up of `scripts/xen/setup.sh` (CI runs it before the tests). Without it the test
//! says `SKIP: ... because ...` on stderr and passes.

mod common;

use common::{assert_payload_run, build_payload, run_in_dom0, setup};

/// Checks the run must report as passed: privileged ones in dom0, then the unprivileged domU's.
const REQUIRED: &[&str] = &[
    "write_read_binary",
    "read_missing",
    "directory",
    "remove",
    "watch_events",
    "transaction_commit",
    "transaction_abort",
    "transaction_conflict",
    "permissions_round_trip",
    "invalid_requests",
    "domain_path",
    "xenstore_rs_cross_check",
    "xenbus_device",
    "guest_store_mapping",
    "domu_identity",
    "domu_permission_denied",
    "domu_own_subtree",
    "domu_quota_entries",
    "domu_quota_entry_size",
    "domu_quota_watches",
    "domu_quota_transactions",
    "domu_completed",
    "denied_requests_changed_nothing",
];

/// xenstored's per-domain quotas for the run: small, so that an unprivileged domain exhausts
/// them quickly. Passed both to xenstored and to the checks.
const QUOTAS: &[(&str, &str, &str)] = &[
    ("--entry-nb", "--quota-entries", "64"),
    ("--entry-size", "--quota-entry-size", "2048"),
    ("--watch-nb", "--quota-watches", "16"),
    ("--transaction", "--quota-transactions", "4"),
];

/// Privileged checks in dom0 (socket and xenbus device), then permission denial and quota
/// exhaustion as an unprivileged PV domU that `xl` creates.
#[test]
fn real_xenstored_in_xen_dom0() {
    if let Err(why) = setup() {
        eprintln!("SKIP: real_xenstored_in_xen_dom0 because {why}");
        return;
    }
    let bin = build_payload("xenstore-conformance");
    let mut xenstored_args = Vec::new();
    let mut args = vec!["--role", "all"];
    for (xenstored_opt, check_opt, value) in QUOTAS {
        xenstored_args.extend([*xenstored_opt, *value]);
        args.extend([*check_opt, *value]);
    }
    let out = run_in_dom0(&bin, &xenstored_args, &args);
    assert_payload_run(&out, "XSCHECK", "XSSUMMARY", REQUIRED);
}
