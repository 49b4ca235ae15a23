//! Tests of the checked-in C header: it is up to date, it compiles freestanding, its layouts and
//! constants match the `pvabi` crate when measured from C, its `_Static_assert`s reject a wrong
//! layout, and its inline gates follow the register convention.
//!
//! These tests need gcc; without it they fail (gcc is part of every development machine and CI
//! of this project).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pvabi_cgen::probe::{check_probe_output, probe_source, Expectations};
use pvabi_cgen::{generate, header_path, REGENERATE};

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("pvabi-cgen")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

fn include_dir() -> PathBuf {
    header_path()
        .parent()
        .expect("header has a directory")
        .to_path_buf()
}

/// Runs a compiler; panics loudly when it cannot be started.
fn run(mut cmd: Command) -> Output {
    match cmd.output() {
        Ok(o) => o,
        Err(e) => panic!(
            "cannot run `{:?}`: {e}. gcc is required for the C header tests \
             (install it with `apt-get install gcc`)",
            cmd.get_program()
        ),
    }
}

fn gcc(args: &[&str]) -> Output {
    let mut cmd = Command::new("gcc");
    cmd.args(args);
    run(cmd)
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn checked_in_header_is_up_to_date() {
    let fresh = generate();
    let path = header_path();
    if std::env::var_os("PVABI_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &fresh).expect("write header");
        eprintln!("PVABI_BLESS=1: rewrote {}", path.display());
        return;
    }
    let current = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; generate it with `{REGENERATE}`",
            path.display()
        )
    });
    if current != fresh {
        let first = current
            .lines()
            .zip(fresh.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| current.lines().count().min(fresh.lines().count()));
        panic!(
            "{} is out of date with the pvabi crate (first difference at line {}).\n\
             Regenerate it with `{REGENERATE}` (or `PVABI_BLESS=1 cargo test -p pvabi-cgen`) \
             and commit the result.\n  checked in: {:?}\n  generated:  {:?}",
            path.display(),
            first + 1,
            current.lines().nth(first),
            fresh.lines().nth(first)
        );
    }
}

/// A translation unit that instantiates every inline function, so the asm constraints are
/// checked by the compiler (an unused `static inline` function is never expanded).
const USES: &str = r#"#include "pvabi.h"
struct pvabi_ret use_ioport(uint16_t p, uint32_t c, uint64_t a) { return pvabi_ioport_call(p, c, a, a, a, a, a, a); }
struct pvabi_ret use_mmio(volatile uint32_t *t, uint32_t c, uint64_t a) { return pvabi_mmio_call(t, c, a, a, a, a, a, a); }
struct pvabi_ret use_vmcall(uint32_t c, uint64_t a) { return pvabi_vmcall_call(c, a, a, a, a, a, a); }
struct pvabi_ret use_vmmcall(uint32_t c, uint64_t a) { return pvabi_vmmcall_call(c, a, a, a, a, a, a); }
struct pvabi_ret use_gate(uint32_t k, uint64_t p, uint32_t c, uint64_t a) { return pvabi_gate_call(k, p, c, a, a, a, a, a, a); }
uint32_t use_find_base(void) { return pvabi_cpuid_find_base(); }
int64_t use_status(uint64_t r) { return pvabi_status_from_reg(r); }
"#;

#[test]
fn header_compiles_freestanding_in_c11_and_gnu11() {
    let dir = scratch("freestanding");
    let uses = dir.join("uses.c");
    std::fs::write(&uses, USES).expect("write uses.c");
    let inc = include_dir();
    let header = header_path();
    for std in ["-std=c11", "-std=gnu11"] {
        for opt in ["-O0", "-O2"] {
            let obj = dir.join("h.o");
            let o = gcc(&[
                std,
                opt,
                "-ffreestanding",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-Wpedantic",
                "-x",
                "c",
                "-c",
                path_str(&header),
                "-o",
                path_str(&obj),
            ]);
            assert!(
                o.status.success(),
                "header alone, {std} {opt}: {}",
                text(&o)
            );
            let obj = dir.join("uses.o");
            let o = gcc(&[
                std,
                opt,
                "-ffreestanding",
                "-nostdlib",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-Wpedantic",
                "-I",
                path_str(&inc),
                "-c",
                path_str(&uses),
                "-o",
                path_str(&obj),
            ]);
            assert!(o.status.success(), "gate uses, {std} {opt}: {}", text(&o));
        }
    }
}

#[test]
fn header_compiles_as_cpp_when_gxx_is_present() {
    let dir = scratch("cpp");
    let src = dir.join("uses.cpp");
    std::fs::write(&src, USES).expect("write uses.cpp");
    let mut cmd = Command::new("g++");
    cmd.args([
        "-std=c++11",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-fsyntax-only",
        "-I",
    ])
    .arg(include_dir())
    .arg(&src);
    match cmd.output() {
        Ok(o) => assert!(o.status.success(), "g++: {}", text(&o)),
        Err(e) => eprintln!("SKIP: C++ compile of pvabi.h because g++ cannot run: {e}"),
    }
}

/// Compiles and runs the layout probe; returns its standard output.
fn run_probe(name: &str) -> String {
    let dir = scratch(name);
    let src = dir.join("probe.c");
    let exe = dir.join("probe");
    std::fs::write(&src, probe_source()).expect("write probe.c");
    let inc = include_dir();
    let o = gcc(&[
        "-std=c11",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-I",
        path_str(&inc),
        path_str(&src),
        "-o",
        path_str(&exe),
    ]);
    assert!(o.status.success(), "compiling the probe: {}", text(&o));
    let o = run(Command::new(&exe));
    assert!(o.status.success(), "running the probe: {}", text(&o));
    String::from_utf8(o.stdout).expect("probe output is UTF-8")
}

#[test]
fn c_sizes_offsets_and_constants_match_the_crate() {
    let out = run_probe("probe-match");
    let expected = Expectations::from_crate();
    let problems = check_probe_output(&out, &expected);
    assert!(
        problems.is_empty(),
        "the C view differs from the pvabi crate:\n{}",
        problems.join("\n")
    );
    let lines = out.lines().filter(|l| !l.trim().is_empty()).count();
    assert_eq!(lines, expected.len(), "one C line per expected fact");
    // A few facts spelled out, so a broken expectation builder cannot pass silently.
    for line in [
        "layout ClockPage 32 8",
        "field ClockPage tsc_shift 28 1",
        "layout EventPage 4096 8",
        "field EventPage vcpu 256 3072",
        "field VcpuEventInfo frame 64 128",
        "const PVABI_CALL_CONSOLE_WRITE 65536 unsigned int",
        "const PVABI_STATUS_NOT_SUPPORTED -1 int",
        "const PVABI_FEATURE_HARNESS 9223372036854775808 unsigned long long",
        "const PVABI_BOOT_INFO_MAGIC 1229084240 unsigned int",
    ] {
        assert!(out.lines().any(|l| l == line), "probe lacks `{line}`");
    }
}

#[test]
fn checker_reports_deliberately_wrong_expectations_against_real_c_output() {
    let out = run_probe("probe-mismatch");
    let mut expected = Expectations::from_crate();
    expected.set("layout ClockPage", "40 8");
    expected.set("field MulticallEntry status", "48 8");
    expected.set("const PVABI_CALL_CONSOLE_WRITE", "65537 unsigned int");
    expected.set("const PVABI_STATUS_BUSY", "-6 unsigned int");
    assert!(expected.remove("field GrantEntry gfn"));
    expected.set("field GrantEntry pfn", "8 8");
    let problems = check_probe_output(&out, &expected);
    let has = |needle: &str| problems.iter().any(|p| p.contains(needle));
    assert!(has("`layout ClockPage`: C says `32 8`"), "{problems:#?}");
    assert!(
        has("`field MulticallEntry status`: C says `56 8`"),
        "{problems:#?}"
    );
    assert!(
        has("`const PVABI_CALL_CONSOLE_WRITE`: C says `65536 unsigned int`"),
        "{problems:#?}"
    );
    assert!(
        has("`const PVABI_STATUS_BUSY`: C says `-6 int`"),
        "{problems:#?}"
    );
    assert!(
        has("missing from C: `field GrantEntry pfn`"),
        "{problems:#?}"
    );
    assert!(
        has("unexpected from C: `field GrantEntry gfn 8 8`"),
        "{problems:#?}"
    );
    assert_eq!(problems.len(), 6, "{problems:#?}");
}

#[test]
fn static_asserts_reject_a_header_with_a_wrong_layout() {
    let dir = scratch("static-assert");
    let good = generate();
    let bad = good.replacen("    int8_t tsc_shift;\n", "    int16_t tsc_shift;\n", 1);
    assert_ne!(good, bad, "the mutation must apply");
    let path = dir.join("pvabi.h");
    std::fs::write(&path, bad).expect("write mutated header");
    let obj = dir.join("h.o");
    let o = gcc(&[
        "-std=c11",
        "-ffreestanding",
        "-x",
        "c",
        "-c",
        path_str(&path),
        "-o",
        path_str(&obj),
    ]);
    assert!(!o.status.success(), "a wrong layout compiled: {}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("offset of pvabi_clock_page.flags"),
        "gcc must name the failing assertion: {err}"
    );
}

#[test]
fn inline_gates_follow_the_register_convention() {
    let dir = scratch("gate-regs");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/gate_regs.c");
    let inc = include_dir();
    for opt in ["-O0", "-O2"] {
        let exe = dir.join(format!("gate_regs{opt}"));
        let o = gcc(&[
            "-std=gnu11",
            opt,
            "-Wall",
            "-Wextra",
            "-Werror",
            "-I",
            path_str(&inc),
            path_str(&src),
            "-o",
            path_str(&exe),
        ]);
        assert!(
            o.status.success(),
            "compiling gate_regs.c {opt}: {}",
            text(&o)
        );
        let o = run(Command::new(&exe));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "gate_regs {opt}: {}", text(&o));
        assert!(
            out.contains(" checks, 0 failures"),
            "gate_regs {opt}: {}",
            text(&o)
        );
    }
}
