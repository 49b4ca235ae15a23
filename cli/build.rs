//! Builds the guest image `pvabi bench` runs (benches/guest) and hands its path to the binary.
//! A failed build is not fatal: `pvabi bench` reports it and measures what it can without KVM.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let guest = manifest.join("..").join("benches").join("guest");
    // The linker script by this checkout's path (not the one compiled into the build helper,
    // which names the checkout it was first built from when target directories are shared).
    let script = manifest.join("..").join("guest-images").join("link.ld");
    match pvabi_image_build::GuestBuild::new(guest, out.join("bench-guest"))
        .linker_script(script)
        .build()
    {
        Ok(elf) => {
            println!("cargo:rustc-env=PVABI_BENCH_GUEST_ELF={}", elf.display());
            println!("cargo:rustc-env=PVABI_BENCH_GUEST_ERROR=");
        }
        Err(e) => {
            let why = e.to_string().replace(['\n', '\r'], " ");
            println!("cargo:warning=bench guest image not built: {why}");
            println!("cargo:rustc-env=PVABI_BENCH_GUEST_ELF=");
            println!("cargo:rustc-env=PVABI_BENCH_GUEST_ERROR={why}");
        }
    }
}
