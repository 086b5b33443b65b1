//! `rewind token create|list|revoke`: API tokens written into a stopped coordinator's state
//! directly (bootstrapping the first operator token; sled locks the state, so a running
//! coordinator is named plainly). A new token is printed once.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use crate::state::{Actor, NewToken, Role, State, StateError, TenantScope, TokenRecord};

/// `rewind token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Creates a token and prints it (this once: only its hash is kept).
    Create(CreateArgs),
    /// Lists the tokens (never the tokens themselves).
    List(ListArgs),
    /// Revokes a token at once.
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
pub struct StateArgs {
    /// The coordinator's state folder (as given to `rewind coordinator --state-dir`); the
    /// coordinator must be stopped.
    #[arg(long)]
    pub state_dir: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub state: StateArgs,
    /// A name for people (who or what uses the token).
    #[arg(long)]
    pub name: String,
    /// reader, administrator or operator.
    #[arg(long)]
    pub role: String,
    /// A tenant the token may see; repeat for several.
    #[arg(long = "tenant")]
    pub tenants: Vec<String>,
    /// Every tenant, present and future.
    #[arg(long)]
    pub all_tenants: bool,
    /// Days until the token expires (default: never).
    #[arg(long)]
    pub expires_days: Option<u32>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub state: StateArgs,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    pub state: StateArgs,
    /// The token's id (`tok_...`).
    pub id: String,
}

/// The state folder of a coordinator's `--state-dir` (the sled state is in `state/` under it).
pub(crate) fn open_state(dir: &Path) -> anyhow::Result<State> {
    let path = dir.join("state");
    if !dir.is_dir() {
        bail!("the state folder {} does not exist", dir.display());
    }
    match State::open(&path) {
        Ok(state) => Ok(state),
        Err(StateError::Open {
            source: sled::Error::Io(e),
            ..
        }) if e.kind() == std::io::ErrorKind::WouldBlock
            || e.to_string().to_ascii_lowercase().contains("lock") =>
        {
            bail!(
                "the state in {} is in use by another process (is the coordinator running? stop it first, or use the API)",
                dir.display()
            )
        }
        Err(e) => Err(e.into()),
    }
}

fn time(t: Option<i64>) -> String {
    t.map_or_else(|| "-".to_owned(), rewind_common::graph_json::format_time)
}

fn record_json(r: &TokenRecord) -> serde_json::Value {
    crate::api::admin::token_json(r)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Runs `rewind token ...`.
pub fn run(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create(args) => {
            let role: Role = args.role.parse()?;
            let tenants = match (args.all_tenants, args.tenants.is_empty()) {
                (true, false) => bail!("give --tenant or --all-tenants, not both"),
                (true, true) => TenantScope::All,
                (false, true) => bail!("give --tenant T (repeat for several) or --all-tenants"),
                (false, false) => TenantScope::from_names(args.tenants)?,
            };
            let expires_at = args
                .expires_days
                .map(|d| crate::state::unix_now() + i64::from(d) * 86_400);
            let state = open_state(&args.state.state_dir)?;
            let (record, token) = runtime()?.block_on(state.create_token_by(
                &Actor::Console,
                NewToken {
                    name: args.name,
                    role,
                    tenants,
                    expires_at,
                },
            ))?;
            if args.state.json {
                let mut out = record_json(&record);
                out["token"] = serde_json::json!(token);
                println!("{out}");
            } else {
                println!("{token}");
                eprintln!(
                    "token {} ({}, tenants {}) created; it is shown only now",
                    record.id,
                    record.role,
                    record.tenants.to_names().join(",")
                );
            }
        }
        TokenCommand::List(args) => {
            let state = open_state(&args.state.state_dir)?;
            let tokens = state.list_tokens()?;
            if args.state.json {
                let value: Vec<_> = tokens.iter().map(record_json).collect();
                println!("{}", serde_json::json!({ "value": value }));
            } else {
                println!("ID\tNAME\tROLE\tTENANTS\tCREATED\tEXPIRES\tREVOKED");
                for t in &tokens {
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                        t.id,
                        t.name,
                        t.role,
                        t.tenants.to_names().join(","),
                        time(Some(t.created_at)),
                        time(t.expires_at),
                        time(t.revoked_at)
                    );
                }
            }
        }
        TokenCommand::Revoke(args) => {
            let state = open_state(&args.state.state_dir)?;
            let record = runtime()?.block_on(state.revoke_token_by(&Actor::Console, &args.id))?;
            if args.state.json {
                println!("{}", record_json(&record));
            } else {
                println!("token {} revoked", record.id);
            }
        }
    }
    Ok(())
}
