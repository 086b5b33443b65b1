//! `rewind tenants add|list|show|remove|set|add-app|remove-app`: the operator's tenant
//! administration over `/admin/tenants` (with the recovery settings: write budgets, approval
//! threshold, history; and more app registrations for recoveries to write through). A client
//! secret is read from a file or `REWIND_CLIENT_SECRET` (an argument is accepted with a
//! warning: it shows in `ps`), and is never printed.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

use super::http::{path, Api};
use super::input::{client_secret, parse_schedule};
use super::output::{field, key_values, print, print_json, schedule, values, Table};
use super::{ClientError, Connection, Output};

#[derive(Debug, Args)]
pub struct TenantsArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    pub command: TenantsCommand,
}

/// Where the client secret comes from.
#[derive(Debug, Args)]
pub struct SecretArgs {
    /// A file holding the client secret (else REWIND_CLIENT_SECRET).
    #[arg(long, value_name = "FILE", conflicts_with = "client_secret")]
    pub client_secret_file: Option<PathBuf>,
    /// The client secret itself: it shows in the process list, prefer --client-secret-file
    /// or REWIND_CLIENT_SECRET.
    #[arg(long, value_name = "SECRET")]
    pub client_secret: Option<String>,
}

impl SecretArgs {
    fn given(&self) -> bool {
        self.client_secret_file.is_some() || self.client_secret.is_some()
    }

    fn read(&self) -> Result<Option<String>, ClientError> {
        client_secret(
            self.client_secret_file.as_deref(),
            self.client_secret.as_deref(),
            std::env::var("REWIND_CLIENT_SECRET").ok(),
        )
    }
}

/// Settings `add` and `set` share.
#[derive(Debug, Args)]
pub struct SettingArgs {
    /// When backups run: off, daily@HH:MM (UTC) or interval:SECONDS.
    #[arg(long)]
    pub schedule: Option<String>,
    /// Backups kept (at least 1).
    #[arg(long)]
    pub retention: Option<u32>,
    /// Days a difference report is kept.
    #[arg(long)]
    pub report_retention_days: Option<u32>,
    /// Directory writes per second a recovery may make through each app registration, all
    /// workers together.
    #[arg(long)]
    pub write_budget: Option<u32>,
    /// Directory writes per second of all the tenant's app registrations together.
    #[arg(long)]
    pub tenant_write_budget: Option<u32>,
    /// Conditional access policy and named location writes per second.
    #[arg(long)]
    pub conditional_access_budget: Option<u32>,
    /// A recovery that modifies more objects than this waits for a second administrator.
    #[arg(long)]
    pub approval_threshold: Option<u64>,
    /// Days a finished recovery's actions are kept.
    #[arg(long)]
    pub history_days: Option<u32>,
}

impl SettingArgs {
    /// The settings given, as the API's fields.
    fn fields(&self, into: &mut Map<String, Value>) -> Result<(), ClientError> {
        if let Some(s) = &self.schedule {
            into.insert("schedule".into(), parse_schedule(s)?);
        }
        if let Some(n) = self.retention {
            if n == 0 {
                return Err(ClientError::Usage(
                    "--retention 0: at least one backup must be kept".into(),
                ));
            }
            into.insert("retention".into(), json!(n));
        }
        if let Some(n) = self.report_retention_days {
            into.insert("reportRetentionDays".into(), json!(n));
        }
        for (key, n) in [
            ("writeBudget", self.write_budget),
            ("tenantWriteBudget", self.tenant_write_budget),
            ("conditionalAccessBudget", self.conditional_access_budget),
            ("historyDays", self.history_days),
        ] {
            if let Some(n) = n {
                into.insert(key.into(), json!(n));
            }
        }
        if let Some(n) = self.approval_threshold {
            into.insert("approvalThreshold".into(), json!(n));
        }
        Ok(())
    }
}

#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// Add a tenant: how to reach its directory, and its app's credentials.
    Add {
        /// The tenant's name in Rewind ([a-z0-9][a-z0-9-]*).
        name: String,
        /// Microsoft Graph's base URL for the tenant (https://graph.microsoft.com/v1.0).
        #[arg(long)]
        graph_url: String,
        /// The OAuth2 token URL of the tenant's app.
        #[arg(long)]
        token_url: String,
        /// The app's client id.
        #[arg(long)]
        client_id: String,
        #[command(flatten)]
        secret: SecretArgs,
        #[command(flatten)]
        settings: SettingArgs,
        /// log2 of the shard count (fixed once added).
        #[arg(long)]
        shard_bits: Option<u8>,
    },
    /// List the tenants.
    List,
    /// Show one tenant.
    Show { name: String },
    /// Remove a tenant (its backups stay until retention; refused while a job is open).
    Remove { name: String },
    /// Change a tenant's settings or credentials.
    Set {
        name: String,
        /// Microsoft Graph's base URL.
        #[arg(long)]
        graph_url: Option<String>,
        /// The OAuth2 token URL.
        #[arg(long)]
        token_url: Option<String>,
        /// A new client id (the secret is then read as for `add`).
        #[arg(long)]
        client_id: Option<String>,
        #[command(flatten)]
        secret: SecretArgs,
        #[command(flatten)]
        settings: SettingArgs,
    },
    /// Add an app registration a recovery also writes through (Graph limits writes per app
    /// and tenant: three apps of 20 writes/s reach the tenant's 60).
    AddApp {
        name: String,
        /// The app's client id.
        #[arg(long)]
        client_id: String,
        #[command(flatten)]
        secret: SecretArgs,
    },
    /// Remove an added app registration (the primary one is replaced with `set`).
    RemoveApp {
        name: String,
        /// The app's client id.
        #[arg(long)]
        client_id: String,
    },
}

fn tenant_path(name: &str) -> String {
    path(&["admin", "tenants", name])
}

pub fn run(api: &Api, out: Output, command: TenantsCommand) -> Result<(), ClientError> {
    match command {
        TenantsCommand::Add {
            name,
            graph_url,
            token_url,
            client_id,
            secret,
            settings,
            shard_bits,
        } => {
            let Some(client_secret) = secret.read()? else {
                return Err(ClientError::Usage(
                    "no client secret: give --client-secret-file FILE or set REWIND_CLIENT_SECRET"
                        .into(),
                ));
            };
            let mut body = Map::new();
            body.insert("name".into(), json!(name));
            body.insert("graphBaseUrl".into(), json!(graph_url));
            body.insert("tokenUrl".into(), json!(token_url));
            body.insert("clientId".into(), json!(client_id));
            body.insert("clientSecret".into(), json!(client_secret));
            settings.fields(&mut body)?;
            if let Some(bits) = shard_bits {
                body.insert("shardBits".into(), json!(bits));
            }
            let tenant = api.post("/admin/tenants", Some(&Value::Object(body)))?;
            show(out, &tenant)
        }
        TenantsCommand::List => {
            let list = api.get("/admin/tenants", &[])?;
            if out.json {
                return print_json(&list);
            }
            let mut t = Table::new(&[
                "NAME",
                "SCHEDULE",
                "RETENTION",
                "REPORT DAYS",
                "SHARD BITS",
                "GRAPH URL",
                "CREATED",
            ]);
            for tenant in values(&list) {
                t.row(vec![
                    field(tenant, "name"),
                    tenant.get("schedule").map_or("-".into(), schedule),
                    field(tenant, "retention"),
                    field(tenant, "reportRetentionDays"),
                    field(tenant, "shardBits"),
                    field(tenant, "graphBaseUrl"),
                    field(tenant, "createdDateTime"),
                ]);
            }
            print(&t.render())
        }
        TenantsCommand::Show { name } => show(out, &api.get(&tenant_path(&name), &[])?),
        TenantsCommand::Remove { name } => {
            api.delete(&tenant_path(&name))?;
            if out.json {
                print_json(&json!({"removed": name}))
            } else {
                print(&format!("tenant {name} removed\n"))
            }
        }
        TenantsCommand::Set {
            name,
            graph_url,
            token_url,
            client_id,
            secret,
            settings,
        } => {
            let mut patch = Map::new();
            if let Some(u) = graph_url {
                patch.insert("graphBaseUrl".into(), json!(u));
            }
            if let Some(u) = token_url {
                patch.insert("tokenUrl".into(), json!(u));
            }
            settings.fields(&mut patch)?;
            // Credentials change only when asked for: a REWIND_CLIENT_SECRET left in the
            // environment never replaces a secret by itself.
            let credentials = if client_id.is_some() || secret.given() {
                let Some(s) = secret.read()? else {
                    return Err(ClientError::Usage(
                        "--client-id needs a secret: give --client-secret-file FILE or set REWIND_CLIENT_SECRET"
                            .into(),
                    ));
                };
                Some((client_id, s))
            } else {
                None
            };
            if patch.is_empty() && credentials.is_none() {
                return Err(ClientError::Usage(
                    "nothing to set: give --schedule, --retention, --report-retention-days, --write-budget, --tenant-write-budget, --conditional-access-budget, --approval-threshold, --history-days, --graph-url, --token-url, --client-id or a client secret"
                        .into(),
                ));
            }
            let mut tenant = Value::Null;
            if !patch.is_empty() {
                tenant = api.patch(&tenant_path(&name), &Value::Object(patch))?;
            }
            if let Some((client_id, secret)) = credentials {
                let client_id = match client_id {
                    Some(id) => id,
                    None => field(&api.get(&tenant_path(&name), &[])?, "clientId"),
                };
                let body = json!({"clientId": client_id, "clientSecret": secret});
                api.put(&path(&["admin", "tenants", &name, "credentials"]), &body)?;
                tenant = Value::Null;
            }
            if tenant.is_null() {
                tenant = api.get(&tenant_path(&name), &[])?;
            }
            show(out, &tenant)
        }
        TenantsCommand::AddApp {
            name,
            client_id,
            secret,
        } => {
            let Some(secret) = secret.read()? else {
                return Err(ClientError::Usage(
                    "no client secret: give --client-secret-file FILE or set REWIND_CLIENT_SECRET"
                        .into(),
                ));
            };
            let body = json!({"clientId": client_id, "clientSecret": secret});
            let tenant = api.post(&path(&["admin", "tenants", &name, "apps"]), Some(&body))?;
            show(out, &tenant)
        }
        TenantsCommand::RemoveApp { name, client_id } => {
            api.delete(&path(&["admin", "tenants", &name, "apps", &client_id]))?;
            show(out, &api.get(&tenant_path(&name), &[])?)
        }
    }
}

/// The added app registrations' client ids, or `-`.
fn apps(tenant: &Value) -> String {
    let ids: Vec<String> = tenant
        .get("apps")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|a| field(a, "clientId"))
        .collect();
    if ids.is_empty() {
        "-".into()
    } else {
        ids.join(", ")
    }
}

fn show(out: Output, tenant: &Value) -> Result<(), ClientError> {
    if out.json {
        return print_json(tenant);
    }
    print(&key_values(&[
        ("name", field(tenant, "name")),
        ("graph URL", field(tenant, "graphBaseUrl")),
        ("token URL", field(tenant, "tokenUrl")),
        ("client id", field(tenant, "clientId")),
        ("more apps", apps(tenant)),
        (
            "schedule",
            tenant.get("schedule").map_or("-".into(), schedule),
        ),
        ("retention", field(tenant, "retention")),
        ("report days", field(tenant, "reportRetentionDays")),
        ("shard bits", field(tenant, "shardBits")),
        ("write budget", field(tenant, "writeBudget")),
        ("tenant budget", field(tenant, "tenantWriteBudget")),
        ("CA budget", field(tenant, "conditionalAccessBudget")),
        ("approval above", field(tenant, "approvalThreshold")),
        ("history days", field(tenant, "historyDays")),
        ("created", field(tenant, "createdDateTime")),
    ]))
}
