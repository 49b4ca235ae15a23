//! Runs `examples/hello` (built with pvabi-image-build) under KVM in both execution modes.

mod common;

use std::path::Path;

use common::{kvm_or_skip, run, MODES};

fn hello_elf() -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello");
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("hello");
    pvabi_image_build::GuestBuild::new(dir, target)
        .emit_rerun_if_changed(false)
        .build()
        .unwrap_or_else(|e| panic!("building examples/hello: {e}"))
}

#[test]
fn hello_runs_in_both_modes() {
    if !kvm_or_skip("hello_runs_in_both_modes") {
        return;
    }
    let elf = hello_elf();
    for mode in MODES {
        let (r, out) = run(&elf, mode, 2, "");
        let st = r.unwrap_or_else(|e| panic!("{mode:?}: {e}\nconsole:\n{out}"));
        assert_eq!((st.reason, st.code), (0, 0), "{mode:?}: console:\n{out}");
        assert!(
            out.lines().any(|l| l == "hello: all checks passed"),
            "{mode:?}: {out}"
        );
        assert!(
            out.contains("hello: pvabi 1.0 on backend 0x2, 2 vCPUs"),
            "{out}"
        );
        assert!(out.contains("hello: BASE.GET_ABI_VERSION = 1.0"), "{out}");
        assert!(out.contains("vCPU 1 got port"), "{out}");
        assert!(out.contains("hello: store hello/greeting = world"), "{out}");
        eprintln!("{mode:?}:\n{out}");
    }
}
