//! `pvabi-cgen`: prints, writes or checks `guest/include/pvabi.h`.
//!
//! ```text
//! pvabi-cgen            print the header to standard output
//! pvabi-cgen --write    rewrite guest/include/pvabi.h
//! pvabi-cgen --check    exit 1 when guest/include/pvabi.h is out of date
//! pvabi-cgen --out P    write the header to P
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: pvabi-cgen [--write | --check | --out PATH]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let header = pvabi_cgen::generate();
    let target = pvabi_cgen::header_path();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => {
            print!("{header}");
            ExitCode::SUCCESS
        }
        ["--write"] => write(&target, &header),
        ["--out", path] => write(&PathBuf::from(path), &header),
        ["--check"] => match std::fs::read_to_string(&target) {
            Ok(current) if current == header => {
                println!("{} is up to date", target.display());
                ExitCode::SUCCESS
            }
            Ok(_) => {
                eprintln!(
                    "{} is out of date; regenerate with `{}`",
                    target.display(),
                    pvabi_cgen::REGENERATE
                );
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("cannot read {}: {e}", target.display());
                ExitCode::FAILURE
            }
        },
        ["-h"] | ["--help"] => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn write(path: &PathBuf, header: &str) -> ExitCode {
    if let Some(dir) = path.parent() {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("cannot create {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    }
    match std::fs::write(path, header) {
        Ok(()) => {
            println!("wrote {}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot write {}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}
