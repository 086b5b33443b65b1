//! The `rewind loadtest` subcommands.

use std::path::PathBuf;

use clap::Subcommand;

use crate::bench_diff::{self, BenchDiffConfig};

#[derive(Debug, Subcommand)]
pub enum LoadtestCommand {
    /// Benchmark a capture: starts a simulator, generates N objects into it, and captures them
    /// over HTTP with the Graph connector; prints the results as JSON on the last line.
    BenchCapture {
        #[arg(long, default_value_t = 100_000)]
        objects: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Create (or refill) a tenant of N generated objects in a running simulator; prints the
    /// tenant's Graph base URL, token URL and credentials as JSON on the last line.
    Gen {
        /// The simulator's root URL, as `rewind dirsim` prints it.
        #[arg(long)]
        dirsim: String,
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value_t = 10_000)]
        objects: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        client_id: Option<String>,
        #[arg(long)]
        client_secret: Option<String>,
    },
    /// Benchmark the diff engine on a generated tenant (1% changed, 0.5% created, 0.5%
    /// soft-deleted); prints progress on stderr and the results as JSON on the last line.
    BenchDiff {
        /// Objects in the backup.
        #[arg(long, default_value_t = 100_000)]
        objects: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Timed repetitions of each measurement; the median is reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Where to keep the snapshots (a temporary folder by default).
        #[arg(long)]
        store: Option<PathBuf>,
        /// Also write both states as JSON Lines (backup.jsonl, current.jsonl) into this folder.
        #[arg(long)]
        export_jsonl: Option<PathBuf>,
        /// Raw bytes per compressed block in the shard blobs.
        #[arg(long, default_value_t = rewind_common::snapshot::shard::DEFAULT_BLOCK_BYTES)]
        block_bytes: usize,
    },
}

/// Runs a loadtest subcommand.
pub fn run(command: LoadtestCommand) -> anyhow::Result<()> {
    match command {
        LoadtestCommand::BenchCapture { objects, seed } => {
            if objects == 0 {
                anyhow::bail!("--objects must be at least 1");
            }
            let result = crate::bench_capture::run(&crate::bench_capture::BenchCaptureConfig {
                objects,
                seed,
            })?;
            println!("{}", serde_json::to_string(&result)?);
            Ok(())
        }
        LoadtestCommand::Gen {
            dirsim,
            tenant,
            objects,
            seed,
            client_id,
            client_secret,
        } => {
            if objects == 0 {
                anyhow::bail!("--objects must be at least 1");
            }
            let result = crate::gen::run(&crate::gen::GenConfig {
                dirsim,
                tenant,
                objects,
                seed,
                client_id,
                client_secret,
            })?;
            println!("{}", serde_json::to_string(&result)?);
            Ok(())
        }
        LoadtestCommand::BenchDiff {
            objects,
            seed,
            runs,
            store,
            export_jsonl,
            block_bytes,
        } => {
            if objects == 0 {
                anyhow::bail!("--objects must be at least 1");
            }
            let result = bench_diff::run(&BenchDiffConfig {
                objects,
                seed,
                runs,
                store,
                export_jsonl,
                block_bytes,
            })?;
            println!("{}", serde_json::to_string(&result)?);
            Ok(())
        }
    }
}
