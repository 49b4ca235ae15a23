//! `pvabi-image-build CRATE_DIR [TARGET_DIR]`: builds the bare-metal guest crate in
//! `CRATE_DIR` (target directory `CRATE_DIR/target` unless given) and prints the path of the
//! ELF image.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: pvabi-image-build CRATE_DIR [TARGET_DIR]");
        return ExitCode::from(2);
    };
    let target = args
        .next()
        .map_or_else(|| dir.join("target"), PathBuf::from);
    match pvabi_image_build::GuestBuild::new(&dir, target)
        .emit_rerun_if_changed(false)
        .build()
    {
        Ok(elf) => {
            println!("{}", elf.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pvabi-image-build: {e}");
            ExitCode::FAILURE
        }
    }
}
