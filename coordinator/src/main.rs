//! The `rewind` binary: every role of Rewind is a subcommand. Logs go through `tracing` to
//! stderr (`--log-json` for JSON lines); a failure ends with one plain `error: ...` line.

use clap::{Parser, Subcommand};
use rewind_coordinator::bench_api::BenchApiArgs;
use rewind_coordinator::bench_recovery::BenchRecoveryArgs;
use rewind_coordinator::bench_report::BenchReportArgs;
use rewind_coordinator::cli::{CoordinatorArgs, WorkerArgs};
use rewind_coordinator::demo::DemoArgs;
use rewind_loadtest::cli::LoadtestCommand;
use rewind_loadtest::dirsim::DirsimArgs;

#[derive(Debug, Parser)]
#[command(
    name = "rewind",
    version,
    about = "Back up identity directories, see what changed, put objects back"
)]
struct Cli {
    /// Log JSON lines on stderr (one object per event, with its fields and spans) instead of
    /// text; `RUST_LOG` filters either (default `info`).
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the coordinator: tenants, schedules, jobs; single-node mode (its workers in this
    /// process) unless NATS URLs are given.
    Coordinator(CoordinatorArgs),
    /// Run a cluster worker: pulls capture and diff tasks from NATS JetStream.
    Worker(WorkerArgs),
    /// Serve simulated Entra ID tenants in the Microsoft Graph dialect (prints its base URL).
    Dirsim(DirsimArgs),
    /// API tokens in a stopped coordinator's state: create (printed once), list, revoke.
    Token {
        #[command(subcommand)]
        command: rewind_coordinator::token_cli::TokenCommand,
    },
    /// The audit log of a stopped coordinator's state: verify the hash chain (exit 1 naming
    /// the first broken record), export as JSON Lines.
    Audit {
        #[command(subcommand)]
        command: rewind_coordinator::audit_cli::AuditCommand,
    },
    /// The product end to end on this machine: a simulator, a single-node coordinator and its
    /// API; one generated tenant per incident scenario S1–S7 backed up, hit by its incident
    /// and reported on through the API; every report checked against the expected one (exit
    /// 1 naming the differences when one does not match).
    Demo(DemoArgs),
    /// Load tests, generators and benchmarks.
    Loadtest {
        #[command(subcommand)]
        command: Loadtest,
    },
    /// Client commands: they call a running coordinator's API (`--server`, the token from
    /// `REWIND_TOKEN` or `--token-file`) and exit 0, 1 (a job failed), 2 (bad input) or 3
    /// (server unreachable or token refused).
    #[command(flatten)]
    Client(rewind_coordinator::client::ClientCommand),
}

#[derive(Debug, Subcommand)]
enum Loadtest {
    /// The cluster benchmark: backup and difference reports of a generated tenant, with NATS,
    /// the simulator and the workers as their own processes, and in single-node mode; prints
    /// the results as JSON on the last line.
    BenchReport(BenchReportArgs),
    /// The API benchmark: `getChanges` pages at the start, middle and end of a large report,
    /// its export, and `GET jobs/{id}` from many clients; prints the results as JSON on the
    /// last line.
    BenchApi(BenchApiArgs),
    /// The recovery benchmark: a generated tenant's incident (users disabled) recovered to its
    /// backup, timed by phase, to the first write, and against the write budget with
    /// `--throttled`; prints a table, then the results as JSON on the last line.
    BenchRecovery(BenchRecoveryArgs),
    #[command(flatten)]
    Other(LoadtestCommand),
}

fn main() {
    let cli = Cli::parse();
    rewind_worker::telemetry::init_tracing(cli.log_json, None);
    let result = match cli.command {
        Command::Coordinator(args) => rewind_coordinator::cli::run_coordinator(args),
        Command::Worker(args) => rewind_coordinator::cli::run_worker(args),
        Command::Token { command } => rewind_coordinator::token_cli::run(command),
        Command::Audit { command } => rewind_coordinator::audit_cli::run(command),
        Command::Dirsim(args) => rewind_loadtest::dirsim::run(args),
        Command::Demo(args) => rewind_coordinator::demo::run(args),
        Command::Loadtest {
            command: Loadtest::BenchReport(args),
        } => rewind_coordinator::bench_report::run(args),
        Command::Loadtest {
            command: Loadtest::BenchApi(args),
        } => rewind_coordinator::bench_api::run(args),
        Command::Loadtest {
            command: Loadtest::BenchRecovery(args),
        } => rewind_coordinator::bench_recovery::run(args),
        Command::Loadtest {
            command: Loadtest::Other(command),
        } => rewind_loadtest::cli::run(command),
        // The client prints its own `error: ...` line and picks its exit code.
        Command::Client(command) => std::process::exit(rewind_coordinator::client::run(command)),
    };
    if let Err(e) = result {
        // The operator's answer, one plain line whatever the log format (not a log event).
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
