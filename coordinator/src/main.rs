//! The `rewind` binary: every role of Rewind is a subcommand.

use clap::{Parser, Subcommand};
use rewind_loadtest::cli::LoadtestCommand;
use rewind_loadtest::dirsim::DirsimArgs;

#[derive(Debug, Parser)]
#[command(
    name = "rewind",
    version,
    about = "Back up identity directories, see what changed, put objects back"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve simulated Entra ID tenants in the Microsoft Graph dialect (prints its base URL).
    Dirsim(DirsimArgs),
    /// Load tests, generators and benchmarks.
    Loadtest {
        #[command(subcommand)]
        command: LoadtestCommand,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Dirsim(args) => rewind_loadtest::dirsim::run(args),
        Command::Loadtest { command } => rewind_loadtest::cli::run(command),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
