//! Embeds the specification's chapters so the runner knows every clause id and its text.

use std::fmt::Write as _;
use std::path::PathBuf;

fn main() {
    let manifest =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let spec = manifest.join("..").join("spec");
    println!("cargo:rerun-if-changed={}", spec.display());
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&spec) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "md"))
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    let mut out = String::new();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
        let name = f
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("?")
            .to_string();
        let text = std::fs::read_to_string(f).unwrap_or_default();
        writeln!(out, "(r####\"{name}\"####, r####\"{text}\"####),").expect("write to String");
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out_dir.join("spec_files.rs"), format!("&[\n{out}]\n"))
        .expect("write OUT_DIR/spec_files.rs");

    // The conformance guest image: the suite as a bare-metal ELF for the KVM backend (and any
    // vendor that boots it). A failed build is not fatal here: the runner reports the KVM
    // backend unavailable with the reason.
    let image =
        pvabi_image_build::GuestBuild::new(manifest.join("image"), out_dir.join("image-target"))
            .watch(manifest.join("suite"))
            .build();
    match image {
        Ok(path) => {
            println!("cargo:rustc-env=PVABI_CONFORMANCE_IMAGE={}", path.display());
            println!("cargo:rustc-env=PVABI_CONFORMANCE_IMAGE_ERROR=");
        }
        Err(e) => {
            println!("cargo:warning=conformance image not built: {e}");
            println!("cargo:rustc-env=PVABI_CONFORMANCE_IMAGE=");
            println!("cargo:rustc-env=PVABI_CONFORMANCE_IMAGE_ERROR={e}");
        }
    }
}
