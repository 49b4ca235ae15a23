//! `pvabi bench --quick` runs and its JSON holds every figure with a ratio to raw_exit. No
//! timing is asserted (the machine is shared): only that each figure was measured.

use std::path::PathBuf;
use std::process::Command;

const FIGURES: [&str; 15] = [
    "raw_exit",
    "null_call",
    "null_call_min",
    "console_write_64B",
    "store_read",
    "event_send_to_self",
    "clock_read",
    "multicall_64",
    "ring_null_call",
    "mock_null_call",
    "plain_fn_call",
    "line_round_trip",
    "vm_start_to_first_call",
    "peer_exit",
    "start_to_first_output",
];

fn kvm_or_skip(test: &str) -> bool {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => true,
        Err(e) => {
            eprintln!("SKIP: {test}: /dev/kvm cannot be opened ({e}), so nothing can be measured");
            false
        }
    }
}

fn bench(test: &str, extra: &[&str]) -> Option<serde_json::Value> {
    if !kvm_or_skip(test) {
        return None;
    }
    let json = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{test}.json"));
    let _ = std::fs::remove_file(&json);
    let out = Command::new(env!("CARGO_BIN_EXE_pvabi"))
        .arg("bench")
        .arg("--quick")
        .arg("--json")
        .arg(&json)
        .args(extra)
        .output()
        .expect("run pvabi bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pvabi bench failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("raw_exit"), "no table:\n{stdout}");
    let text = std::fs::read_to_string(&json).expect("the JSON file was written");
    Some(serde_json::from_str(&text).expect("valid JSON"))
}

fn check(v: &serde_json::Value, mode: &str) {
    assert_eq!(v["mode"], mode);
    let figures = v["figures"].as_array().expect("figures");
    for name in FIGURES {
        let f = figures
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("figure {name} missing: {v:#}"));
        let med = f["median_ns"].as_f64().expect("median_ns");
        let ratio = f["ratio_to_raw_exit"].as_f64().expect("ratio");
        assert!(med.is_finite() && med > 0.0, "{name}: median {med}");
        assert!(ratio.is_finite() && ratio > 0.0, "{name}: ratio {ratio}");
        assert!(f["samples"].as_u64().unwrap_or(0) > 0, "{name}: no samples");
        assert!(
            !f["mode"].as_str().unwrap_or("").is_empty(),
            "{name}: no mode"
        );
        assert!(
            matches!(f["timing"].as_str(), Some("guest-rdtsc" | "host-clock")),
            "{name}: timing {}",
            f["timing"]
        );
    }
    let raw = figures.iter().find(|f| f["name"] == "raw_exit").unwrap();
    assert_eq!(raw["ratio_to_raw_exit"].as_f64(), Some(1.0));
    assert!(v["tsc_khz"].as_u64().unwrap_or(0) > 0);
    let q = &v["qemu"];
    if q["available"] == true {
        let ratios = q["ratios"].as_array().expect("ratios");
        for name in ["per_exit", "start_to_first_output"] {
            let r = ratios
                .iter()
                .find(|r| r["name"] == name)
                .unwrap_or_else(|| panic!("QEMU ratio {name} missing: {q:#}"));
            let x = r["ratio"].as_f64().expect("ratio");
            assert!(x.is_finite() && x > 0.0, "{name}: {x}");
        }
    } else {
        let why = q["skipped_because"].as_str().unwrap_or("");
        assert!(!why.is_empty(), "QEMU missing without a reason: {q:#}");
        eprintln!("SKIP: QEMU figures: {why}");
    }
}

#[test]
fn quick_bench_reports_every_figure_in_ring0() {
    if let Some(v) = bench("quick_bench_ring0", &[]) {
        check(&v, "kvm ring0");
    }
}

#[test]
fn quick_bench_reports_every_figure_in_pv_ring3() {
    if let Some(v) = bench("quick_bench_pv", &["--pv"]) {
        check(&v, "kvm pv-ring3");
        // The QEMU peer runs its loop in ring 3 too (long mode, I/O bitmap in its TSS): the
        // comparison is like for like, with no fallback to ring 0.
        let q = &v["qemu"];
        if q["available"] == true && q["accel"] == "kvm" {
            assert!(q["fallback"].is_null(), "QEMU peer fell back: {q:#}");
            for r in q["ratios"].as_array().expect("ratios") {
                assert_eq!(r["qemu_mode"], "qemu kvm ring3 64-bit", "{r:#}");
            }
        }
    }
}
