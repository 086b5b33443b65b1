//! The `rewind loadtest` subcommands.

use std::path::PathBuf;

use clap::Subcommand;

use crate::bench_diff::{self, BenchDiffConfig};
use crate::incident::{IncidentConfig, Phase, Scenario};

#[derive(Debug, Subcommand)]
pub enum LoadtestCommand {
    /// Benchmark a capture: starts a simulator, generates N objects into it, and captures them
    /// over HTTP with the Graph connector; prints the results as JSON on the last line.
    BenchCapture {
        #[arg(long, default_value_t = 100_000)]
        objects: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Captures of the loaded tenant; the medians are reported.
        #[arg(long, default_value_t = 1)]
        runs: usize,
        /// Capture without reading each user's per-user MFA state (one beta request per user).
        #[arg(long)]
        skip_per_user_mfa_state: bool,
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
    /// Apply one incident scenario of scenarios.md (S1..S7) to a tenant `gen` built, through
    /// the simulator's Graph API; prints progress on stderr and the expected difference report
    /// as JSON on the last line.
    Incident {
        /// The simulator's root URL, as `rewind dirsim` prints it.
        #[arg(long)]
        dirsim: String,
        #[arg(long)]
        tenant: String,
        /// S1, S2, S3, S4, S5, S6 or S7.
        #[arg(long)]
        scenario: Scenario,
        /// Picks the objects touched; also the seed `gen` derived the credentials from.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// S7 only: `before-backup` soft-deletes the users, `after-backup` restores them.
        #[arg(long, value_enum, default_value_t = Phase::AfterBackup)]
        phase: Phase,
        /// The tenant's app; by default what `gen` derives from tenant and seed.
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
        /// Where to keep the snapshots (a temporary folder by default); a later run with the
        /// same parameters reuses them, one with other parameters is refused.
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
        LoadtestCommand::BenchCapture {
            objects,
            seed,
            runs,
            skip_per_user_mfa_state,
        } => {
            if objects == 0 {
                anyhow::bail!("--objects must be at least 1");
            }
            if runs == 0 {
                anyhow::bail!("--runs must be at least 1");
            }
            let result = crate::bench_capture::run(&crate::bench_capture::BenchCaptureConfig {
                objects,
                seed,
                runs,
                per_user_mfa_state: !skip_per_user_mfa_state,
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
        LoadtestCommand::Incident {
            dirsim,
            tenant,
            scenario,
            seed,
            phase,
            client_id,
            client_secret,
        } => {
            let report = crate::incident::run(&IncidentConfig {
                dirsim,
                tenant,
                scenario,
                seed,
                phase,
                client_id,
                client_secret,
            })?;
            tracing::info!(
                scenario = %report.scenario,
                entries = report.counts.objects,
                updates = report.counts.updates,
                restores = report.counts.restores,
                soft_deletes = report.counts.soft_deletes,
                soft_deletes_again = report.counts.soft_deletes_again,
                not_recoverable = report.counts.not_recoverable,
                "incident applied; report entries expected"
            );
            println!("{}", serde_json::to_string(&report)?);
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
