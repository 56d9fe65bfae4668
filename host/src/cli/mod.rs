//! The `steadfast` subcommands. This is the only module that prints for people.

mod bench;
mod client;
mod demo;
mod progress;
mod scaffold;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use serve::ServerConfig;

/// Steadfast: durable workflows as sandboxed WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "steadfast", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    client: client::ClientArgs,
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
    /// Run the server: the engine behind the HTTP API (auth required).
    Serve(serve::ServeArgs),
    /// Run a local development server with the example workflows deployed; prints an
    /// admin token and writes it to DATA_DIR/admin.token.
    Dev(serve::ServeArgs),
    /// Write a new workflow crate (or, with --activity, an activity crate) with an example
    /// and its tests, ready for `cargo test` and `steadfast build`.
    New {
        /// The crate's name; the example workflow is named after it (`-` becomes `_`).
        name: String,
        /// An activity component instead of a workflow.
        #[arg(long)]
        activity: bool,
        /// Where to write it [default: ./NAME].
        #[arg(long)]
        path: Option<PathBuf>,
        /// Use the Steadfast SDK and test kit of this source tree (a checkout) instead of
        /// the copy this binary carries.
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Build the crate at PATH as a component, check it as a deploy would, and print its
    /// path, size and names.
    Build {
        /// The crate's folder.
        #[arg(default_value = ".")]
        path: PathBuf,
    },
    /// Deploy a component to the server.
    Deploy {
        /// The `.wasm` component, or a crate's folder to build first.
        file: PathBuf,
        /// Only check whether live instances would replay on it; deploy nothing.
        #[arg(long)]
        check: bool,
        /// Deploy, and move the live instances that replay on it to the new version.
        #[arg(long)]
        migrate: bool,
    },
    /// Start and manage workflow instances on the server.
    Workflow {
        #[command(subcommand)]
        command: client::WorkflowCommand,
    },
    /// Run the performance scenarios on the real engine and print the figures.
    Bench(bench::BenchArgs),
    /// Write the embedded example components (workflows and activities) to DIR, to
    /// deploy them or to look at them.
    Examples {
        /// Where to write `examples.wasm` and `example-activities.wasm`.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// Show the tenant's worker processes connected over the Durable Task protocol
    /// (gRPC) and the activity names they have answered.
    Workers,
    /// Manage tenants (admin).
    Tenant {
        #[command(subcommand)]
        command: client::TenantCommand,
    },
    /// Work on a journal directly (no server needed).
    Journal {
        #[command(subcommand)]
        command: JournalCommand,
    },
}

#[derive(Debug, clap::Subcommand)]
enum JournalCommand {
    /// Copy an SQLite journal into an empty PostgreSQL database, to run it on several
    /// hosts (`serve --journal postgres://...`). Stop the server using the SQLite journal
    /// first; it is left as it was.
    Copy {
        /// The data directory (or its `steadfast.db`) to copy from.
        #[arg(long)]
        from: PathBuf,
        /// The PostgreSQL database to copy into: postgres://user:password@host/db.
        #[arg(long)]
        to: String,
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
            Command::Demo { .. } | Command::Dev(_) | Command::Bench(_) | Command::Examples { .. }
                if !cfg!(feature = "examples") =>
            {
                anyhow::bail!(
                    "this steadfast was built without its example components (the `examples` \
                     feature); build it with its default features: cargo install --locked --path host"
                )
            }
            Command::Demo { keep } => demo::run(keep).await,
            Command::Serve(args) => serve::run(args, false).await,
            Command::Dev(args) => serve::run(args, true).await,
            Command::New {
                name,
                activity,
                path,
                sdk,
            } => scaffold::new(scaffold::NewCrate {
                name,
                activity,
                path,
                sdk,
            }),
            Command::Build { path } => scaffold::run_build(&path, cli.client.json()).await,
            Command::Deploy {
                file,
                check,
                migrate,
            } => {
                // The client first: a missing token is told before minutes of building.
                let client = client::Client::new(cli.client)?;
                let bytes = if file.is_dir() {
                    let (guest, bytes, _) = scaffold::build(&file).await?;
                    eprintln!("built {}", guest.component_path().display());
                    bytes
                } else {
                    use anyhow::Context as _;
                    std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?
                };
                client.deploy(bytes, check, migrate).await
            }
            Command::Workflow { command } => {
                client::Client::new(cli.client)?.workflow(command).await
            }
            Command::Bench(args) => bench::run(args).await,
            Command::Examples { out } => write_examples(&out),
            Command::Tenant { command } => client::Client::new(cli.client)?.tenant(command).await,
            Command::Workers => client::Client::new(cli.client)?.workers().await,
            Command::Journal {
                command: JournalCommand::Copy { from, to },
            } => copy_journal(from, to),
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

fn copy_journal(from: PathBuf, to: String) -> anyhow::Result<()> {
    let file = if from.is_dir() {
        from.join("steadfast.db")
    } else {
        from
    };
    // The synchronous PostgreSQL client runs outside the async runtime.
    let source = file.clone();
    let report = std::thread::spawn(move || crate::journal::copy::sqlite_to_postgres(&source, &to))
        .join()
        .map_err(|_| anyhow::anyhow!("the copy panicked"))??;
    println!("copied {} into PostgreSQL:", file.display());
    for (table, rows) in report {
        println!("  {table:<18} {rows:>10} rows");
    }
    println!("start the hosts on it with: steadfast serve --journal <the same URL>");
    Ok(())
}

fn write_examples(dir: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, bytes) in [
        ("examples.wasm", crate::examples::WORKFLOWS_WASM),
        ("example-activities.wasm", crate::examples::ACTIVITIES_WASM),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {} ({} bytes)", path.display(), bytes.len());
    }
    Ok(())
}
