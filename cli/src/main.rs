//! The `pvabi` command-line tool.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// pvabi: a hypervisor-neutral paravirtualization ABI.
#[derive(Parser, Debug)]
#[command(name = "pvabi", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the specification's clause ids with their text.
    Spec {
        /// Only clauses whose id starts with this prefix (e.g. `STORE`).
        #[arg(long)]
        prefix: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Spec { prefix } => {
            let all = conformance::clauses();
            let mut n = 0usize;
            for c in all
                .iter()
                .filter(|c| prefix.as_deref().is_none_or(|p| c.prefix() == p))
            {
                println!("{:<10} {}", c.id, c.text);
                n += 1;
            }
            eprintln!("{n} clauses");
            if n == 0 {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
    }
}
