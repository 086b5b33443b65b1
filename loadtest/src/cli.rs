//! The `rewind loadtest` subcommands.

use std::path::PathBuf;

use clap::Subcommand;

use crate::bench_diff::{self, BenchDiffConfig};

#[derive(Debug, Subcommand)]
pub enum LoadtestCommand {
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
