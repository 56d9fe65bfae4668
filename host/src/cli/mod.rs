//! The `steadfast` subcommands. This is the only module that prints for people.

mod demo;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Steadfast: durable workflows as sandboxed WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "steadfast", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the tutorial's saga, monitor and approval examples on a throwaway store with a
    /// virtual clock, printing the simulated time on each line.
    Demo {
        /// Keep the demo's data directory instead of deleting it, to inspect the journal.
        #[arg(long)]
        keep: bool,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Demo { keep } => demo::run(keep).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
