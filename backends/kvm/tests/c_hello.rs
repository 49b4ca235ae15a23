//! The C guests of `examples/c-hello`, built with gcc by their Makefile and run under KVM in
//! both execution modes, and the C prototypes of the shim (`guest/include/pvabi_shim.h`)
//! checked against the Rust definitions (`guest/src/capi.rs`).
//!
//! * `c-hello` uses nothing but `guest/include/pvabi.h` (its inline gates);
//! * `c-hello-shim` links `libpvabi_guest_capi.a` (built by the Makefile with a nested
//!   `cargo build` of `guest/capi`) and uses the `pvabi_*` functions; it runs on two vCPUs.
//!
//! gcc or make missing is a failure; an unusable `/dev/kvm` skips the runs loudly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use pvabi_kvm::{ConsoleSink, Error, ExitStatus, Mode, RunConfig};

/// Both execution modes.
const MODES: [Mode; 2] = [Mode::Ring0, Mode::PvRing3];

/// Returns true when `/dev/kvm` is usable; otherwise prints `SKIP: <test>: /dev/kvm <reason>`.
fn kvm_or_skip(test: &str) -> bool {
    match pvabi_kvm::kvm_usable() {
        Ok(()) => true,
        Err(e) => {
            eprintln!("SKIP: {test}: /dev/kvm {e}");
            false
        }
    }
}

/// Runs `elf` on `vcpus` vCPUs in `mode`; returns the outcome and the console output.
fn run(elf: &Path, mode: Mode, vcpus: u32) -> (Result<ExitStatus, Error>, String) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let cfg = RunConfig {
        vcpus,
        mem_mib: 16,
        mode,
        console: ConsoleSink::Capture(buf.clone()),
        watchdog: Some(std::time::Duration::from_secs(20)),
        ..Default::default()
    };
    let r = pvabi_kvm::run_elf(elf, cfg);
    let out = String::from_utf8_lossy(&buf.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    (r, out)
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Whether an inherited variable would leak this test's cargo into the nested build.
fn must_clear(key: &str) -> bool {
    let keep = key == "CARGO_HOME"
        || key == "CARGO"
        || [
            "CARGO_NET_",
            "CARGO_HTTP_",
            "CARGO_REGISTRIES_",
            "CARGO_REGISTRY_",
        ]
        .iter()
        .any(|p| key.starts_with(p));
    !keep
        && (key.starts_with("CARGO")
            || (key.starts_with("RUST") && !key.starts_with("RUSTUP_"))
            || ["MAKEFLAGS", "MFLAGS", "MAKELEVEL", "O", "CC"].contains(&key))
}

/// Builds both images once (per test binary) with `make`; returns the output directory.
fn build() -> &'static Path {
    static OUT: OnceLock<PathBuf> = OnceLock::new();
    OUT.get_or_init(|| {
        let gcc = Command::new("gcc").arg("--version").output();
        assert!(
            gcc.as_ref().is_ok_and(|o| o.status.success()),
            "gcc is required to build examples/c-hello: {gcc:?}"
        );
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join("c-hello");
        let out = tmp.join("images");
        let mut cmd = Command::new("make");
        for (key, _) in std::env::vars_os() {
            if let Some(k) = key.to_str() {
                if must_clear(k) {
                    cmd.env_remove(k);
                }
            }
        }
        let status = cmd
            .arg("-C")
            .arg(root().join("examples/c-hello"))
            .arg(format!("O={}", out.display()))
            .arg(format!(
                "CAPI_TARGET_DIR={}",
                tmp.join("capi-target").display()
            ))
            .arg("CC=gcc")
            .arg("all")
            .stdout(std::process::Stdio::from(std::io::stderr()))
            .status()
            .unwrap_or_else(|e| panic!("cannot run make (required for examples/c-hello): {e}"));
        assert!(
            status.success(),
            "make in examples/c-hello failed: {status}"
        );
        out
    })
}

#[test]
fn c_hello_header_only_runs_in_both_modes() {
    let elf = build().join("c-hello");
    assert!(elf.is_file(), "{} not built", elf.display());
    if !kvm_or_skip("c_hello_header_only_runs_in_both_modes") {
        return;
    }
    for mode in MODES {
        let (r, out) = run(&elf, mode, 1);
        let st = r.unwrap_or_else(|e| panic!("{mode:?}: {e}\nconsole:\n{out}"));
        assert_eq!((st.reason, st.code), (0, 0), "{mode:?}: console:\n{out}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines.last(),
            Some(&"c-hello: all checks passed"),
            "{mode:?}: {out}"
        );
        assert!(
            lines.contains(&"c-hello: hello from C on pvabi 1.0, vCPU 0"),
            "{out}"
        );
        assert!(
            lines.contains(&"c-hello: store c-hello/greeting = hello from C"),
            "{out}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("c-hello: port ")
                    && l.ends_with(" was pending after EVENT.SEND")),
            "{out}"
        );
        assert!(!out.contains("FAILED"), "{out}");
        eprintln!("{mode:?}:\n{out}");
    }
}

#[test]
fn c_hello_through_the_shim_library_runs_in_both_modes() {
    let elf = build().join("c-hello-shim");
    assert!(elf.is_file(), "{} not built", elf.display());
    if !kvm_or_skip("c_hello_through_the_shim_library_runs_in_both_modes") {
        return;
    }
    for (mode, ring) in MODES.into_iter().zip(["ring 0", "paravirtual ring 3"]) {
        let (r, out) = run(&elf, mode, 2);
        let st = r.unwrap_or_else(|e| panic!("{mode:?}: {e}\nconsole:\n{out}"));
        assert_eq!((st.reason, st.code), (0, 0), "{mode:?}: console:\n{out}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines.last(),
            Some(&"c-hello-shim: all checks passed"),
            "{mode:?}: {out}"
        );
        let hello = format!("c-hello-shim: hello from C through the shim on pvabi 1.0, {ring}");
        assert!(lines.contains(&hello.as_str()), "{mode:?}: {out}");
        assert!(
            lines.contains(&"c-hello-shim: upcall for port 1"),
            "{mode:?}: {out}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("c-hello-shim: vCPU 1 sent port ")
                    && l.ends_with(" and stopped")),
            "{mode:?}: {out}"
        );
        assert!(
            lines.contains(&"c-hello-shim: store c-hello-shim/greeting = hello through the shim"),
            "{out}"
        );
        eprintln!("{mode:?}:\n{out}");
    }
}

/// The C type a parameter or return type of `capi.rs` has in `pvabi_shim.h`.
fn c_type(rust: &str) -> Option<&'static str> {
    Some(match rust {
        "u8" => "uint8_t",
        "u32" => "uint32_t",
        "u64" => "uint64_t",
        "i64" => "int64_t",
        "usize" => "size_t",
        "*mut u8" => "void *",
        "*const u8" => "const void *",
        "*const c_char" => "const char *",
        "*mut u64" => "uint64_t *",
        "*mut ClockPageShared" => "struct pvabi_clock_page *",
        "*const ClockPageShared" => "const struct pvabi_clock_page *",
        "*mut EventPageShared" => "struct pvabi_event_page *",
        "*mut StealTimeShared" => "struct pvabi_steal_time *",
        "*mut GrantEntryShared" => "struct pvabi_grant_entry *",
        "*mut MemMapEntry" => "struct pvabi_mem_map_entry *",
        "*mut MulticallEntry" => "struct pvabi_multicall_entry *",
        "Option<CVcpuEntry>" => "pvabi_vcpu_entry_fn",
        "Option<CPortHandler>" => "pvabi_port_handler_fn",
        _ => return None,
    })
}

/// Normalises a C type: single spaces, `*` attached as `T *`.
fn norm(t: &str) -> String {
    t.replace('*', " * ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Splits a C parameter `type name` into its type.
fn c_param_type(p: &str) -> String {
    let p = p.trim();
    let cut = p
        .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
        .map_or(0, |i| i + 1);
    norm(&p[..cut])
}

/// `name -> (return type, parameter types)` of every `pvabi_*` function in `capi.rs`, in C.
fn rust_signatures(src: &str) -> BTreeMap<String, (String, Vec<String>)> {
    let mut out = BTreeMap::new();
    for (i, _) in src.match_indices("extern \"C\" fn pvabi_") {
        let line_start = src[..i].rfind('\n').map_or(0, |n| n + 1);
        assert!(
            src[line_start..i].trim_start().starts_with("pub"),
            "non-public C function in capi.rs near {}",
            &src[i..i + 40]
        );
        let rest = &src[i + "extern \"C\" fn ".len()..];
        let open = rest.find('(').expect("parameter list");
        let close = rest.find(')').expect("end of parameter list");
        let name = rest[..open].to_owned();
        let params = rest[open + 1..close]
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                let ty = p.split_once(':').expect("name: type").1.trim();
                norm(c_type(ty).unwrap_or_else(|| panic!("{name}: no C type for `{ty}`")))
            })
            .collect();
        let after = rest[close + 1..].trim_start();
        let ret = match after.strip_prefix("->") {
            Some(r) => {
                let ty = r
                    .trim_start()
                    .split(|c: char| c.is_whitespace() || c == '{');
                let ty = ty.into_iter().next().unwrap_or_default();
                norm(c_type(ty).unwrap_or_else(|| panic!("{name}: no C type for `{ty}`")))
            }
            None => "void".to_owned(),
        };
        assert!(
            out.insert(name.clone(), (ret, params)).is_none(),
            "{name} twice"
        );
    }
    out
}

/// The same map from the prototypes of `pvabi_shim.h`.
fn c_signatures(header: &str) -> BTreeMap<String, (String, Vec<String>)> {
    // Drop comments, then read `ret name(params);` declarations.
    let mut text = String::new();
    let mut rest = header;
    while let Some(i) = rest.find("/*") {
        text.push_str(&rest[..i]);
        let end = rest[i..].find("*/").expect("unterminated comment");
        rest = &rest[i + end + 2..];
    }
    text.push_str(rest);
    let mut out = BTreeMap::new();
    for decl in text.split(';') {
        let decl = decl
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join(" ");
        let decl = decl.trim();
        if decl.starts_with("typedef") || decl.contains('{') || decl.contains('}') {
            continue;
        }
        let Some(open) = decl
            .find("pvabi_")
            .and_then(|i| decl[i..].find('(').map(|o| i + o))
        else {
            continue;
        };
        let head = &decl[..open];
        let name_start = head
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
            .map_or(0, |i| i + 1);
        let name = head[name_start..].to_owned();
        let ret = norm(&head[..name_start]);
        let close = decl.rfind(')').expect("end of parameter list");
        let params: Vec<String> = decl[open + 1..close]
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty() && *p != "void")
            .map(c_param_type)
            .collect();
        assert!(
            out.insert(name.clone(), (ret, params)).is_none(),
            "{name} twice"
        );
    }
    out
}

#[test]
fn shim_header_prototypes_match_the_rust_definitions() {
    let rs = std::fs::read_to_string(root().join("guest/src/capi.rs")).expect("capi.rs");
    let h =
        std::fs::read_to_string(root().join("guest/include/pvabi_shim.h")).expect("pvabi_shim.h");
    let rust = rust_signatures(&rs);
    let c = c_signatures(&h);
    assert!(
        rust.len() > 50,
        "too few functions parsed from capi.rs: {rust:?}"
    );
    let only_rust: Vec<_> = rust.keys().filter(|k| !c.contains_key(*k)).collect();
    let only_c: Vec<_> = c.keys().filter(|k| !rust.contains_key(*k)).collect();
    assert!(
        only_rust.is_empty() && only_c.is_empty(),
        "missing in pvabi_shim.h: {only_rust:?}; not in capi.rs: {only_c:?}"
    );
    for (name, sig) in &rust {
        assert_eq!(Some(sig), c.get(name), "{name}: Rust (left) vs C (right)");
    }
}

#[test]
fn shim_header_compiles_as_c_and_cxx() {
    let include = root().join("guest/include");
    for (lang, std) in [("c", "-std=c11"), ("c++", "-std=c++17")] {
        let out = Command::new("gcc")
            .args([
                "-fsyntax-only",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-pedantic",
                std,
            ])
            .arg("-I")
            .arg(&include)
            .args(["-x", lang])
            .arg(include.join("pvabi_shim.h"))
            .output()
            .unwrap_or_else(|e| panic!("cannot run gcc (required): {e}"));
        assert!(
            out.status.success(),
            "{lang}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
