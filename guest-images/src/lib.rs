//! Builds bare-metal pvabi guest images from a build script.
//!
//! A guest image is a `#![no_std] #![no_main]` Rust crate, built for `x86_64-unknown-linux-gnu`
//! with `panic = "abort"`, statically linked without the C runtime and laid out by this crate's
//! linker script ([`LINKER_SCRIPT`]): `_start` (in section `.text._start`) at
//! [`IMAGE_BASE`], identity mapped, entered in long mode with RDI = the BootInfo address.
//!
//! Guest crates are standalone packages: their `Cargo.toml` has its own `[workspace]` table (so
//! they are no members of the main workspace), `[profile.release] panic = "abort"`, and path
//! dependencies on `pvabi`, `pvabi-guest` and, for `memcpy` and friends, the `pvabi-image-rt`
//! crate in `guest-images/rt`.
//!
//! [`GuestBuild::build`] runs a nested `cargo build --release --target
//! x86_64-unknown-linux-gnu` with its own target directory (never the outer one: the outer
//! build holds its lock), an environment cleared of the outer build's variables, and the link
//! flags in `CARGO_ENCODED_RUSTFLAGS` (with `--target` they apply to the guest only, not to
//! build scripts or proc-macros). It prints `cargo:rerun-if-changed` lines for the guest's
//! sources and the linker script.
//!
//! # Examples
//!
//! A `build.rs` of a host crate that embeds a guest:
//!
//! ```no_run
//! let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
//! let elf = pvabi_image_build::GuestBuild::new("tests/guests/hello", out.join("guests"))
//!     .build()
//!     .unwrap();
//! println!("cargo:rustc-env=HELLO_ELF={}", elf.display());
//! ```
//!
//! Outside a build script the same build is one command (`scripts` may wrap it):
//!
//! ```text
//! cargo run -q -p pvabi-image-build -- examples/hello
//! ```
//!
//! which prints the path of the ELF (`examples/hello/target/x86_64-unknown-linux-gnu/release/
//! pvabi-hello`). The same by hand (the flags are [`guest_rustflags`], 0x1f-separated):
//!
//! ```text
//! CARGO_ENCODED_RUSTFLAGS=$(printf '%s\x1f' -Crelocation-model=static -Cno-redzone=yes \
//!   -Clink-arg=-nostdlib -Clink-arg=-static -Clink-arg=-no-pie -Clink-arg=-Wl,--build-id=none \
//!   -Clink-arg=-T$PWD/guest-images/link.ld | sed 's/\x1f$//') \
//! cargo build --release --manifest-path examples/hello/Cargo.toml \
//!   --target x86_64-unknown-linux-gnu
//! ```

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Absolute path of the linker script every guest image is linked with.
pub const LINKER_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/link.ld");

/// Absolute path of the `pvabi-image-rt` crate (memory intrinsics for guests).
pub const RT_CRATE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/rt");

/// Guest-physical (and virtual) address of `_start` in every image built with [`LINKER_SCRIPT`].
pub const IMAGE_BASE: u64 = 0x10_0000;

/// The target triple guests are compiled for.
pub const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";

/// The `rustc` flags that make a bare-metal image out of a `no_std` binary crate.
pub fn guest_rustflags(linker_script: &Path) -> Vec<String> {
    vec![
        "-Crelocation-model=static".to_owned(),
        // Ring-0 guests take interrupts on the current stack, which would clobber a red zone.
        "-Cno-redzone=yes".to_owned(),
        "-Clink-arg=-nostdlib".to_owned(),
        "-Clink-arg=-static".to_owned(),
        "-Clink-arg=-no-pie".to_owned(),
        "-Clink-arg=-Wl,--build-id=none".to_owned(),
        format!("-Clink-arg=-T{}", linker_script.display()),
    ]
}

/// Why a guest image could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The guest crate has no `Cargo.toml`.
    #[error("guest crate manifest {0} not found")]
    NoManifest(PathBuf),
    /// `cargo` could not be started.
    #[error("cannot run cargo for guest {manifest}: {source}")]
    Spawn {
        /// The guest's manifest.
        manifest: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `cargo build` of the guest failed.
    #[error("cargo build of guest {manifest} failed ({status}); its output is above")]
    Build {
        /// The guest's manifest.
        manifest: PathBuf,
        /// Exit status of cargo.
        status: std::process::ExitStatus,
    },
    /// The build succeeded but the expected binary is missing.
    #[error("guest build finished but {0} does not exist")]
    NoBinary(PathBuf),
}

/// One guest crate to build.
#[derive(Clone, Debug)]
pub struct GuestBuild {
    crate_dir: PathBuf,
    target_dir: PathBuf,
    bin: Option<String>,
    linker_script: PathBuf,
    extra_watch: Vec<PathBuf>,
    emit_rerun: bool,
}

impl GuestBuild {
    /// A build of the guest crate in `crate_dir` (relative paths are taken from the current
    /// directory, which in a build script is the package's manifest directory), using
    /// `target_dir` (normally below `OUT_DIR`) as its own cargo target directory.
    pub fn new(crate_dir: impl Into<PathBuf>, target_dir: impl Into<PathBuf>) -> Self {
        Self {
            crate_dir: crate_dir.into(),
            target_dir: target_dir.into(),
            bin: None,
            linker_script: PathBuf::from(LINKER_SCRIPT),
            extra_watch: default_watch(),
            emit_rerun: true,
        }
    }

    /// Names the binary to return (default: the package name from the manifest).
    pub fn bin(mut self, name: impl Into<String>) -> Self {
        self.bin = Some(name.into());
        self
    }

    /// Uses another linker script than [`LINKER_SCRIPT`].
    pub fn linker_script(mut self, path: impl Into<PathBuf>) -> Self {
        self.linker_script = path.into();
        self
    }

    /// Adds a path whose change must rebuild the guest (e.g. a shared guest library).
    pub fn watch(mut self, path: impl Into<PathBuf>) -> Self {
        self.extra_watch.push(path.into());
        self
    }

    /// Whether to print `cargo:rerun-if-changed` lines (default: yes; turn off outside
    /// build scripts).
    pub fn emit_rerun_if_changed(mut self, on: bool) -> Self {
        self.emit_rerun = on;
        self
    }

    /// Builds the guest and returns the path of its ELF image.
    ///
    /// # Errors
    ///
    /// [`Error::NoManifest`] when `crate_dir` holds no `Cargo.toml`; [`Error::Spawn`] when
    /// cargo cannot be run; [`Error::Build`] when the build fails (cargo's diagnostics go to
    /// this process's standard error); [`Error::NoBinary`] when no image was produced.
    pub fn build(&self) -> Result<PathBuf, Error> {
        let crate_dir = absolute(&self.crate_dir);
        let manifest = crate_dir.join("Cargo.toml");
        if !manifest.is_file() {
            return Err(Error::NoManifest(manifest));
        }
        let linker_script = absolute(&self.linker_script);
        if self.emit_rerun {
            for p in [
                manifest.clone(),
                crate_dir.join("src"),
                crate_dir.join("build.rs"),
                linker_script.clone(),
            ]
            .iter()
            .chain(self.extra_watch.iter())
            {
                println!("cargo:rerun-if-changed={}", p.display());
            }
        }

        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
        let mut cmd = Command::new(cargo);
        for (key, _) in std::env::vars_os() {
            if let Some(k) = key.to_str() {
                if must_clear(k) {
                    cmd.env_remove(k);
                }
            }
        }
        let flags = guest_rustflags(&linker_script).join("\x1f");
        cmd.env("CARGO_ENCODED_RUSTFLAGS", flags)
            .arg("build")
            .arg("--release")
            .arg("--target")
            .arg(GUEST_TARGET)
            .arg("--manifest-path")
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&self.target_dir);
        if let Some(bin) = &self.bin {
            cmd.arg("--bin").arg(bin);
        }
        // Everything the nested cargo prints goes to stderr: in a build script, stdout lines
        // are build-script directives.
        cmd.stdout(std::process::Stdio::from(std::io::stderr()));
        let status = cmd.status().map_err(|source| Error::Spawn {
            manifest: manifest.clone(),
            source,
        })?;
        if !status.success() {
            return Err(Error::Build { manifest, status });
        }
        let name = match &self.bin {
            Some(b) => b.clone(),
            None => package_name(&manifest).unwrap_or_else(|| {
                crate_dir
                    .file_name()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default()
            }),
        };
        let elf = self
            .target_dir
            .join(GUEST_TARGET)
            .join("release")
            .join(&name);
        if elf.is_file() {
            Ok(absolute(&elf))
        } else {
            Err(Error::NoBinary(elf))
        }
    }
}

/// Paths of the ABI and guest-shim sources, which every guest depends on.
fn default_watch() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut v = vec![root.join("rt/src"), root.join("rt/Cargo.toml")];
    if let Some(ws) = root.parent() {
        v.push(ws.join("abi/src"));
        v.push(ws.join("guest/src"));
    }
    v
}

/// Whether an inherited environment variable would leak the outer build into the nested one.
fn must_clear(key: &str) -> bool {
    const KEEP: [&str; 2] = ["CARGO_HOME", "CARGO"];
    const KEEP_PREFIX: [&str; 4] = [
        "CARGO_NET_",
        "CARGO_HTTP_",
        "CARGO_REGISTRIES_",
        "CARGO_REGISTRY_",
    ];
    if KEEP.contains(&key) || KEEP_PREFIX.iter().any(|p| key.starts_with(p)) {
        return false;
    }
    key.starts_with("CARGO_")
        || key.starts_with("__CARGO")
        || key.starts_with("DEP_")
        || matches!(
            key,
            "RUSTFLAGS"
                | "RUSTDOCFLAGS"
                | "RUSTC_WRAPPER"
                | "RUSTC_WORKSPACE_WRAPPER"
                | "OUT_DIR"
                | "TARGET"
                | "HOST"
                | "PROFILE"
                | "OPT_LEVEL"
                | "DEBUG"
                | "NUM_JOBS"
                | "RUSTC_LINKER"
                | "MAKEFLAGS"
                | "MFLAGS"
        )
}

/// The `name` of the `[package]` table, read without a TOML parser: the first `name = "..."`
/// line after `[package]`.
fn package_name(manifest: &Path) -> Option<String> {
    let text = std::fs::read_to_string(manifest).ok()?;
    let mut in_package = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[package]";
            continue;
        }
        if in_package {
            if let Some(rest) = line.strip_prefix("name") {
                let rest = rest.trim_start().strip_prefix('=')?.trim();
                return Some(rest.trim_matches('"').to_owned());
            }
        }
    }
    None
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clears_outer_build_variables_and_keeps_registry_settings() {
        for k in [
            "RUSTFLAGS",
            "CARGO_ENCODED_RUSTFLAGS",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_TARGET",
            "CARGO_MAKEFLAGS",
            "CARGO_PKG_NAME",
            "CARGO_MANIFEST_DIR",
            "CARGO_FEATURE_STD",
            "__CARGO_FIX_PLZ",
            "OUT_DIR",
        ] {
            assert!(must_clear(k), "{k}");
        }
        for k in ["CARGO_HOME", "CARGO", "CARGO_NET_OFFLINE", "PATH", "HOME"] {
            assert!(!must_clear(k), "{k}");
        }
    }

    #[test]
    fn rustflags_name_the_linker_script() {
        let f = guest_rustflags(Path::new("/x/link.ld"));
        assert!(f.contains(&"-Clink-arg=-T/x/link.ld".to_owned()));
        assert!(f.contains(&"-Crelocation-model=static".to_owned()));
        assert!(Path::new(LINKER_SCRIPT).is_file());
    }

    #[test]
    fn reads_the_package_name() {
        let dir = std::env::temp_dir().join(format!("pvabi-image-build-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let m = dir.join("Cargo.toml");
        std::fs::write(
            &m,
            "[workspace]\n\n[package]\nname = \"guest-x\"\nversion = \"0.1.0\"\n",
        )
        .expect("write manifest");
        assert_eq!(package_name(&m).as_deref(), Some("guest-x"));
        assert!(matches!(
            GuestBuild::new(dir.join("nope"), dir.join("t")).build(),
            Err(Error::NoManifest(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
