//! `rewind backups list|now` (Microsoft's `snapshots`, and Rewind's `POST snapshots`, waited
//! for unless `--no-wait`) and `rewind jobs list|show|cancel` (Rewind's job views; cancel is
//! Microsoft's `POST jobs/{id}/cancel`).

use clap::{Args, Subcommand};
use serde_json::Value;

use super::http::{path, Api};
use super::output::{field, job_view, print, print_json, tasks, Table};
use super::wait;
use super::{ClientError, Connection, Output};

#[derive(Debug, Args)]
pub struct BackupsArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    pub command: BackupsCommand,
}

#[derive(Debug, Subcommand)]
pub enum BackupsCommand {
    /// The tenant's backups, newest first.
    List { tenant: String },
    /// Take a backup now and wait for it (a progress bar on a terminal).
    Now {
        tenant: String,
        /// Return at once with the job's id.
        #[arg(long)]
        no_wait: bool,
    },
}

#[derive(Debug, Args)]
pub struct JobsArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    pub command: JobsCommand,
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// The tenant's jobs of every kind, newest first.
    List { tenant: String },
    /// One job: status, phase, tasks, counts.
    Show { tenant: String, id: String },
    /// Cancel an open job (it becomes abandoned).
    Cancel { tenant: String, id: String },
}

/// `/tenants/{t}/v1.0/directory/recovery/...`.
pub fn recovery_path(tenant: &str, rest: &[&str]) -> String {
    let mut parts = vec!["tenants", tenant, "v1.0", "directory", "recovery"];
    parts.extend_from_slice(rest);
    path(&parts)
}

pub fn run_backups(api: &Api, out: Output, command: BackupsCommand) -> Result<(), ClientError> {
    match command {
        BackupsCommand::List { tenant } => {
            let list = collect(api, &recovery_path(&tenant, &["snapshots"]))?;
            if out.json {
                return print_json(&serde_json::json!({ "value": list }));
            }
            let mut t = Table::new(&["ID", "CREATED", "CHANGED OBJECTS"]);
            for s in &list {
                t.row(vec![
                    field(s, "id"),
                    field(s, "createdDateTime"),
                    field(s, "totalChangedObjects"),
                ]);
            }
            print(&t.render())
        }
        BackupsCommand::Now { tenant, no_wait } => {
            let job = api.post(&recovery_path(&tenant, &["snapshots"]), None)?;
            let id = field(&job, "id");
            if id == "-" {
                return Err(ClientError::Protocol(
                    "POST snapshots answered no job id".into(),
                ));
            }
            if no_wait {
                return wait::print_outcome(out, &job, job_view);
            }
            let view = wait::until_done(api, out, &tenant, &id)?;
            wait::print_outcome(out, &view, |v| {
                format!("{}\nbackup {} taken\n", job_view(v), field(v, "snapshot"))
            })
        }
    }
}

pub fn run_jobs(api: &Api, out: Output, command: JobsCommand) -> Result<(), ClientError> {
    match command {
        JobsCommand::List { tenant } => {
            let list = api.get(&path(&["tenants", &tenant, "rewind", "jobs"]), &[])?;
            if out.json {
                return print_json(&list);
            }
            let mut t = Table::new(&[
                "ID",
                "KIND",
                "STATUS",
                "PHASE",
                "TASKS",
                "CREATED",
                "COMPLETED",
            ]);
            for j in super::output::values(&list) {
                t.row(vec![
                    field(j, "id"),
                    field(j, "kind"),
                    field(j, "status"),
                    field(j, "phase"),
                    tasks(j),
                    field(j, "createdDateTime"),
                    field(j, "completedDateTime"),
                ]);
            }
            print(&t.render())
        }
        JobsCommand::Show { tenant, id } => {
            let view = wait::job(api, &tenant, &id)?;
            if out.json {
                print_json(&view)
            } else {
                print(&job_view(&view))
            }
        }
        JobsCommand::Cancel { tenant, id } => {
            api.post(&recovery_path(&tenant, &["jobs", &id, "cancel"]), None)?;
            let view = wait::job(api, &tenant, &id)?;
            if out.json {
                print_json(&view)
            } else {
                print(&format!("{}\ncancel requested\n", job_view(&view)))
            }
        }
    }
}

/// Every item of a paged collection, following `@odata.nextLink`.
fn collect(api: &Api, first: &str) -> Result<Vec<Value>, ClientError> {
    let mut out = Vec::new();
    for page in api.pages(first, &[]) {
        out.extend(page?);
    }
    Ok(out)
}
