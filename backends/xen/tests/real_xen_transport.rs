//! The Xen transport (spec appendix B) on a real Xen: builds the static `xen-transport-check`,
//! runs it in the dom0 of Xen booted under QEMU (`scripts/xen/run-in-dom0.sh`), where it serves
//! the transport with the pvabi-xen backend and boots an unprivileged PV domU whose guest side
//! connects over real xenstored, grant tables and event channels; asserts every check passed.
//!
//! Needs the set-up of `scripts/xen/setup.sh` (CI runs it before the tests). Without it the test
//! says `SKIP: ... because ...` on stderr and passes.

mod common;

use common::{assert_payload_run, build_payload, run_in_dom0, setup};

/// Checks the run must report as passed.
const REQUIRED: &[&str] = &[
    "domu_handshake",
    "domu_base_calls",
    "domu_console_write_in_window",
    "domu_outside_window_is_invalid_address",
    "domu_ring_refuses_shutdown",
    "domu_event_notifies_channel",
    "domu_store_on_own_subtree",
    "domu_store_watch_fires_on_xenstore_write",
    "domu_many_calls",
    "domu_close",
    "domu_completed",
    "backend_sequence",
    "backend_console",
    "backend_forgets_gone_domain",
    "no_grant_mappings_left",
];

#[test]
fn xen_transport_between_dom0_backend_and_domu_guest() {
    if let Err(why) = setup() {
        eprintln!("SKIP: xen_transport_between_dom0_backend_and_domu_guest because {why}");
        return;
    }
    let bin = build_payload("xen-transport-check");
    let out = run_in_dom0(&bin, &[], &["--role", "dom0"]);
    assert_payload_run(&out, "XTCHECK", "XTSUMMARY", REQUIRED);
}
