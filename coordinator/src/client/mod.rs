//! The `rewind` client commands (`tenants`, `backups`, `report`, `recover`, `jobs`): each is a few calls
//! to the HTTP API of `docs/api.md` with a blocking client, printed as aligned tables for a
//! person or as JSON for a script (with `--json`, or whenever stdout is not a terminal), and
//! ending with an exit code that says what went wrong: 0 success, 1 a job that ended failed or
//! abandoned (or an unexpected failure), 2 bad usage or input (refused before any request, or
//! by the server: 400, 404, 409, 413), 3 the server cannot be reached or refuses the token.

mod http;
mod input;
mod jobs;
mod output;
mod recover;
mod report;
mod tenants;
mod wait;

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Args, Subcommand};

pub use http::Api;
pub use input::{parse_ids, parse_object_ids, parse_schedule, parse_types, report_body, MAX_IDS};
pub use output::Table;
pub use recover::console_status;

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: a job ended failed or abandoned, or something unexpected failed.
pub const EXIT_FAILED: i32 = 1;
/// Exit code: bad usage or input (the same as clap's own usage errors).
pub const EXIT_USAGE: i32 = 2;
/// Exit code: the server cannot be reached, or it refuses the token.
pub const EXIT_UNREACHABLE: i32 = 3;

/// What ends a client command early; [`ClientError::exit_code`] maps each to the exit code.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Bad usage or input, found before any request.
    #[error("{0}")]
    Usage(String),
    /// The API answered with an error status; `message` is its `error.message`.
    #[error("{message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("cannot reach the server at {server}: {reason}")]
    Unreachable { server: String, reason: String },
    #[error("no token: set REWIND_TOKEN or give --token-file FILE")]
    NoToken,
    /// A waited-for job that ended other than successful.
    #[error("job {id} ended {status}{}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    JobEnded {
        id: String,
        status: String,
        reason: Option<String>,
    },
    /// The server answered something this client does not understand.
    #[error("unexpected answer: {0}")]
    Protocol(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl ClientError {
    /// The process's exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::Usage(_) => EXIT_USAGE,
            ClientError::Api { status, .. } => match status {
                401 | 403 => EXIT_UNREACHABLE,
                502..=504 => EXIT_UNREACHABLE,
                400..=499 => EXIT_USAGE,
                _ => EXIT_FAILED,
            },
            ClientError::Unreachable { .. } | ClientError::NoToken => EXIT_UNREACHABLE,
            ClientError::JobEnded { .. } | ClientError::Protocol(_) | ClientError::Io { .. } => {
                EXIT_FAILED
            }
        }
    }

    fn io(what: impl Into<String>, source: std::io::Error) -> ClientError {
        ClientError::Io {
            what: what.into(),
            source,
        }
    }
}

/// The options of every client command (also accepted after the subcommand).
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// The Rewind API's base URL.
    #[arg(
        long,
        global = true,
        env = "REWIND_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,
    /// A file holding the API token (else the environment variable REWIND_TOKEN).
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Print machine-readable JSON (no colours, no progress bar); the output whenever stdout
    /// is not a terminal.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The client commands, as subcommands of `rewind`.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Tenants: add, list, show, remove, set (role operator).
    Tenants(tenants::TenantsArgs),
    /// Backups of a tenant: list them, or take one now.
    Backups(jobs::BackupsArgs),
    /// Difference reports: create one, show its entries, export them as CSV or JSON Lines.
    Report(report::ReportArgs),
    /// Recoveries: start one (or a dry run), approve or reject it, see its actions, failed
    /// changes and planned calls, cancel or undo it.
    Recover(recover::RecoverArgs),
    /// A tenant's jobs: list, show, cancel.
    Jobs(jobs::JobsArgs),
}

/// How results are printed.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// JSON on stdout (asked for, or stdout is not a terminal).
    pub json: bool,
    /// A progress bar on stderr (not asked for JSON, and stderr is a terminal).
    pub bar: bool,
}

impl Output {
    fn from_connection(c: &Connection) -> Output {
        Output {
            json: c.json || !std::io::stdout().is_terminal(),
            bar: !c.json && std::io::stderr().is_terminal(),
        }
    }
}

/// Runs a client command and returns the process's exit code, having printed the error (one
/// line, `error: <message>`) if there is one.
pub fn run(command: ClientCommand) -> i32 {
    match dispatch(command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", http::one_line(&e.to_string()));
            e.exit_code()
        }
    }
}

fn dispatch(command: ClientCommand) -> Result<i32, ClientError> {
    match command {
        ClientCommand::Tenants(a) => {
            let (api, out) = connect(&a.connection)?;
            tenants::run(&api, out, a.command)
        }
        ClientCommand::Backups(a) => {
            let (api, out) = connect(&a.connection)?;
            jobs::run_backups(&api, out, a.command)
        }
        ClientCommand::Report(a) => {
            // Arguments are checked before the token is read or any request is made.
            let command = a.command.checked()?;
            let (api, out) = connect(&a.connection)?;
            report::run(&api, out, command)
        }
        ClientCommand::Recover(a) => {
            // Arguments (and an ids file) are checked before the token is read.
            let command = a.command.checked()?;
            let (api, out) = connect(&a.connection)?;
            recover::run(&api, out, command)
        }
        ClientCommand::Jobs(a) => {
            let (api, out) = connect(&a.connection)?;
            jobs::run_jobs(&api, out, a.command)
        }
    }
    .map(|()| EXIT_OK)
}

/// The client of `--server` with the token of `--token-file` or `REWIND_TOKEN`.
fn connect(c: &Connection) -> Result<(Api, Output), ClientError> {
    let token = match &c.token_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| {
                ClientError::Usage(format!(
                    "cannot read the token file {}: {e}",
                    path.display()
                ))
            })?
            .trim()
            .to_owned(),
        None => std::env::var("REWIND_TOKEN")
            .unwrap_or_default()
            .trim()
            .to_owned(),
    };
    if token.is_empty() {
        return Err(ClientError::NoToken);
    }
    if token.chars().any(|c| c.is_control() || c == ' ') {
        return Err(ClientError::Usage(
            "the token holds spaces or control characters: it is not a Rewind token".into(),
        ));
    }
    Ok((Api::new(&c.server, token)?, Output::from_connection(c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every error class and the exit code it gives.
    #[test]
    fn exit_codes_follow_the_error() {
        let api = |status: u16| ClientError::Api {
            status,
            code: String::new(),
            message: "m".into(),
        };
        let cases: Vec<(ClientError, i32)> = vec![
            (ClientError::Usage("bad".into()), 2),
            (api(400), 2),
            (api(404), 2),
            (api(405), 2),
            (api(409), 2),
            (api(413), 2),
            (api(415), 2),
            (api(401), 3),
            (api(403), 3),
            (api(503), 3),
            (api(500), 1),
            (api(501), 1),
            (
                ClientError::Unreachable {
                    server: "s".into(),
                    reason: "r".into(),
                },
                3,
            ),
            (ClientError::NoToken, 3),
            (
                ClientError::JobEnded {
                    id: "j".into(),
                    status: "failed".into(),
                    reason: None,
                },
                1,
            ),
            (ClientError::Protocol("p".into()), 1),
            (
                ClientError::io("write", std::io::Error::other("disk full")),
                1,
            ),
        ];
        for (e, code) in cases {
            assert_eq!(e.exit_code(), code, "{e:?}");
        }
    }

    #[test]
    fn an_api_error_prints_its_message_alone() {
        let e = ClientError::Api {
            status: 409,
            code: "conflict".into(),
            message: "A recovery job is currently in progress".into(),
        };
        assert_eq!(e.to_string(), "A recovery job is currently in progress");
        let e = ClientError::JobEnded {
            id: "j1".into(),
            status: "failed".into(),
            reason: Some("token refused".into()),
        };
        assert_eq!(e.to_string(), "job j1 ended failed: token refused");
    }
}
