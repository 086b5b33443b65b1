//! `rewind audit verify|export`: the audit log of a stopped coordinator's state, read directly
//! (sled locks the state, so a running coordinator is named plainly). `verify` exits 1 naming
//! the first broken record; `export` writes JSON Lines.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use crate::token_cli::open_state;

/// `rewind audit ...`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Checks the hash chain; names the first changed, deleted or misplaced record (exit 1).
    Verify(VerifyArgs),
    /// Writes every record, oldest first, as JSON Lines.
    Export(ExportArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The coordinator's state folder (as given to `rewind coordinator --state-dir`); the
    /// coordinator must be stopped.
    #[arg(long)]
    pub state_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The coordinator's state folder; the coordinator must be stopped.
    #[arg(long)]
    pub state_dir: PathBuf,
    /// The file to write (default: standard output).
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
}

/// Runs `rewind audit ...`.
pub fn run(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Verify(args) => {
            let state = open_state(&args.state_dir)?;
            let verdict = state.verify_audit()?;
            match verdict.broken {
                None => println!("audit log intact: {} records", verdict.intact),
                Some(b) => bail!(
                    "audit log broken at record {}: {} ({} records before it are intact)",
                    b.seq,
                    b.problem,
                    verdict.intact
                ),
            }
        }
        AuditCommand::Export(args) => {
            let state = open_state(&args.state_dir)?;
            let mut out: Box<dyn Write> = match &args.output {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("cannot create {}", path.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let mut count = 0u64;
            for record in state.audit_records() {
                let line = serde_json::to_string(&record?)?;
                writeln!(out, "{line}").context("cannot write the export")?;
                count += 1;
            }
            out.flush().context("cannot write the export")?;
            if let Some(path) = &args.output {
                eprintln!("{count} audit records written to {}", path.display());
            }
        }
    }
    Ok(())
}
