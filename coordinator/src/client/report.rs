//! `rewind report create|show|export`: a difference report against a backup (its scope
//! checked before any request: types, GUIDs, at most 100 ids), waited for with a progress
//! bar; its entries paged through `getChanges` (`$top=999`, `@odata.nextLink`) and printed as
//! a table or streamed as one JSON document; its export streamed to a file or stdout.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::Value;

use super::http::{path, Api, Pages};
use super::input::{check_type, report_body, ACTIONS};
use super::jobs::recovery_path;
use super::output::{clean, counts, field, job_view, key_values, print, Table};
use super::wait;
use super::{ClientError, Connection, Output};

/// Entries asked for in one `getChanges` page (the API's largest).
const PAGE: &str = "999";

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    pub command: ReportCommand,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Csv,
    Jsonl,
}

impl Format {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Compare the tenant now with a backup, and wait for the report.
    Create {
        tenant: String,
        /// The backup (snapshot id) to compare with.
        #[arg(long)]
        backup: String,
        /// Only objects of these entity types (comma-separated: user,group,...).
        #[arg(long)]
        types: Option<String>,
        /// Only these objects (comma-separated GUIDs, at most 100; `type:GUID`, or one
        /// --types for all).
        #[arg(long)]
        ids: Option<String>,
        /// Return at once with the job's id.
        #[arg(long)]
        no_wait: bool,
    },
    /// The report's summary, then its entries.
    Show {
        tenant: String,
        report_id: String,
        /// Only entries of this entity type.
        #[arg(long = "type")]
        entity_type: Option<String>,
        /// Only entries with this recovery action (update, restore, softDelete,
        /// notRecoverable).
        #[arg(long)]
        action: Option<String>,
        /// Only entries whose display name starts with this.
        #[arg(long)]
        name_prefix: Option<String>,
    },
    /// Every entry, streamed as CSV or JSON Lines.
    Export {
        tenant: String,
        report_id: String,
        #[arg(long, value_enum)]
        format: Format,
        /// Write to this file (else stdout).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

/// A report command whose arguments passed their checks.
#[derive(Debug)]
pub enum Checked {
    Create {
        tenant: String,
        backup: String,
        body: Value,
        no_wait: bool,
    },
    Show {
        tenant: String,
        report_id: String,
        filter: EntryFilter,
    },
    Export {
        tenant: String,
        report_id: String,
        format: Format,
        output: Option<PathBuf>,
    },
}

/// `report show`'s filters: type and action here, the name prefix by the server.
#[derive(Debug, Default)]
pub struct EntryFilter {
    pub entity_type: Option<String>,
    pub action: Option<String>,
    pub name_prefix: Option<String>,
}

impl EntryFilter {
    fn keeps(&self, entry: &Value) -> bool {
        if let Some(t) = &self.entity_type {
            if entry.get("entityTypeName").and_then(Value::as_str) != Some(t) {
                return false;
            }
        }
        match self.action.as_deref() {
            None => true,
            Some("notRecoverable") => entry
                .get("notRecoverableReason")
                .is_some_and(|r| !r.is_null()),
            Some(a) => entry.get("recoveryAction").and_then(Value::as_str) == Some(a),
        }
    }

    /// The `$filter` the server applies: `startswith(displayName,'...')`, quotes doubled.
    fn odata(&self) -> Option<String> {
        self.name_prefix
            .as_ref()
            .map(|p| format!("startswith(displayName,'{}')", p.replace('\'', "''")))
    }
}

impl ReportCommand {
    /// Checks the arguments before anything is sent.
    pub fn checked(self) -> Result<Checked, ClientError> {
        Ok(match self {
            ReportCommand::Create {
                tenant,
                backup,
                types,
                ids,
                no_wait,
            } => Checked::Create {
                tenant,
                backup,
                body: report_body(types.as_deref(), ids.as_deref())?,
                no_wait,
            },
            ReportCommand::Show {
                tenant,
                report_id,
                entity_type,
                action,
                name_prefix,
            } => {
                if let Some(t) = &entity_type {
                    check_type(t, "--type")?;
                }
                if let Some(a) = &action {
                    if !ACTIONS.contains(&a.as_str()) {
                        return Err(ClientError::Usage(format!(
                            "--action: unknown recovery action {a:?} (allowed: {})",
                            ACTIONS.join(", ")
                        )));
                    }
                }
                Checked::Show {
                    tenant,
                    report_id,
                    filter: EntryFilter {
                        entity_type,
                        action,
                        name_prefix,
                    },
                }
            }
            ReportCommand::Export {
                tenant,
                report_id,
                format,
                output,
            } => Checked::Export {
                tenant,
                report_id,
                format,
                output,
            },
        })
    }
}

pub fn run(api: &Api, out: Output, command: Checked) -> Result<(), ClientError> {
    match command {
        Checked::Create {
            tenant,
            backup,
            body,
            no_wait,
        } => {
            let job = api.post(
                &recovery_path(&tenant, &["snapshots", &backup, "recoveryPreviewJobs"]),
                Some(&body),
            )?;
            let id = field(&job, "id");
            if id == "-" {
                return Err(ClientError::Protocol(
                    "POST recoveryPreviewJobs answered no job id".into(),
                ));
            }
            if no_wait {
                let view = wait::job(api, &tenant, &id)?;
                return wait::print_outcome(out, &view, job_view);
            }
            let view = wait::until_done(api, out, &tenant, &id)?;
            wait::print_outcome(out, &view, |v| {
                format!(
                    "{}\nentries: rewind report show {tenant} {id}\n",
                    job_view(v)
                )
            })
        }
        Checked::Show {
            tenant,
            report_id,
            filter,
        } => show(api, out, &tenant, &report_id, &filter),
        Checked::Export {
            tenant,
            report_id,
            format,
            output,
        } => export(api, out, &tenant, &report_id, format, output),
    }
}

/// The report's job view, refused if the job is not a report.
fn report_view(api: &Api, tenant: &str, id: &str) -> Result<Value, ClientError> {
    let view = wait::job(api, tenant, id)?;
    let kind = field(&view, "kind");
    if kind != "report" {
        return Err(ClientError::Usage(format!(
            "job {id} is a {kind} job, not a difference report"
        )));
    }
    Ok(view)
}

fn show(
    api: &Api,
    out: Output,
    tenant: &str,
    id: &str,
    filter: &EntryFilter,
) -> Result<(), ClientError> {
    let view = report_view(api, tenant, id)?;
    let backup = field(&view, "backup");
    let first = recovery_path(
        tenant,
        &[
            "snapshots",
            &backup,
            "recoveryPreviewJobs",
            id,
            "getChanges",
        ],
    );
    let odata = filter.odata();
    let mut query = vec![("$top", PAGE)];
    if let Some(f) = &odata {
        query.push(("$filter", f.as_str()));
    }
    let pages = api.pages(&first, &query);
    if out.json {
        stream_json(&view, pages, filter)
    } else {
        let mut t = Table::new(&["ID", "TYPE", "NAME", "ACTION", "CHANGED", "NOT RECOVERABLE"]);
        let mut shown = 0u64;
        for page in pages {
            for entry in page? {
                if filter.keeps(&entry) {
                    t.row(entry_row(&entry));
                    shown += 1;
                }
            }
        }
        let mut text = key_values(&[
            ("report", field(&view, "id")),
            ("tenant", field(&view, "tenant")),
            ("status", field(&view, "status")),
            ("backup", backup.clone()),
            ("created", field(&view, "createdDateTime")),
            ("completed", field(&view, "completedDateTime")),
            ("counts", counts(&view)),
            ("shown", shown.to_string()),
        ]);
        text.push('\n');
        text.push_str(&t.render());
        print(&text)
    }
}

/// One entry as a table row; CHANGED names the changed attributes and link kinds.
fn entry_row(entry: &Value) -> Vec<String> {
    let changed: Vec<String> = entry
        .get("deltaFromCurrent")
        .and_then(Value::as_object)
        .map(|m| {
            m.keys()
                .filter(|k| !k.starts_with('@'))
                .map(|k| k.strip_suffix("@delta").unwrap_or(k).to_owned())
                .collect()
        })
        .unwrap_or_default();
    let mut changed = changed.join(", ");
    if changed.chars().count() > 60 {
        changed = changed.chars().take(57).collect::<String>() + "...";
    }
    vec![
        field(entry, "id"),
        field(entry, "entityTypeName"),
        field(entry, "displayName"),
        field(entry, "recoveryAction"),
        if changed.is_empty() {
            "-".into()
        } else {
            changed
        },
        field(entry, "notRecoverableReason"),
    ]
}

/// `{"report": <job view>, "entries": [...]}` written as the pages come (constant memory).
fn stream_json(view: &Value, pages: Pages<'_>, filter: &EntryFilter) -> Result<(), ClientError> {
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    let result = (|| -> Result<(), StreamError> {
        write!(w, "{{\"report\": ")?;
        serde_json::to_writer(&mut w, view).map_err(std::io::Error::from)?;
        write!(w, ",\n\"entries\": [")?;
        let mut first = true;
        for page in pages {
            for entry in page.map_err(StreamError::Client)? {
                if !filter.keeps(&entry) {
                    continue;
                }
                w.write_all(if first { b"\n" } else { b",\n" })?;
                first = false;
                serde_json::to_writer(&mut w, &entry).map_err(std::io::Error::from)?;
            }
        }
        writeln!(w, "\n]}}")?;
        w.flush()?;
        Ok(())
    })();
    match result {
        Ok(()) => Ok(()),
        Err(StreamError::Client(e)) => Err(e),
        Err(StreamError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(StreamError::Io(e)) => Err(ClientError::io("cannot write to stdout", e)),
    }
}

enum StreamError {
    Client(ClientError),
    Io(std::io::Error),
}

impl From<std::io::Error> for StreamError {
    fn from(e: std::io::Error) -> Self {
        StreamError::Io(e)
    }
}

fn export(
    api: &Api,
    out: Output,
    tenant: &str,
    id: &str,
    format: Format,
    output: Option<PathBuf>,
) -> Result<(), ClientError> {
    let export_path = path(&["tenants", tenant, "rewind", "reports", id, "export"]);
    export_to(api, out, ("report", id), &export_path, format, output)
}

/// Streams the export at `export_path` to `output` (through a temporary file beside it and a
/// rename) or to stdout; `what` names the job in the JSON summary (`{"report": id, ...}`).
pub(super) fn export_to(
    api: &Api,
    out: Output,
    what: (&str, &str),
    export_path: &str,
    format: Format,
    output: Option<PathBuf>,
) -> Result<(), ClientError> {
    let mut body = api.get_stream(export_path, &[("format", format.as_str())])?;
    let Some(file) = output else {
        let stdout = std::io::stdout();
        let mut lock = stdout.lock();
        return match std::io::copy(&mut body, &mut lock).and_then(|_| lock.flush()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                Err(ClientError::io("cannot write the export to stdout", e))
            }
            _ => Ok(()),
        };
    };
    // Written beside the file, then renamed: a broken-off export never looks complete.
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let shown = file.display().to_string();
    let mut tmp = tempfile::NamedTempFile::new_in(&dir)
        .map_err(|e| ClientError::Usage(format!("cannot write to {}: {e}", dir.display())))?;
    let bytes = std::io::copy(&mut body, tmp.as_file_mut())
        .map_err(|e| ClientError::io(format!("export to {shown} broke off"), e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| ClientError::io(format!("cannot write {shown}"), e))?;
    tmp.persist(&file)
        .map_err(|e| ClientError::io(format!("cannot write {shown}"), e.error))?;
    if out.json {
        super::output::print_json(&serde_json::json!({
            what.0: what.1, "format": format.as_str(), "file": shown, "bytes": bytes,
        }))
    } else {
        print(&format!(
            "{} bytes of {} written to {}\n",
            bytes,
            format.as_str(),
            clean(&shown)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn filters_keep_the_entries_asked_for() {
        let entries = [
            json!({"id": "1", "entityTypeName": "user", "recoveryAction": "update"}),
            json!({"id": "2", "entityTypeName": "group", "recoveryAction": "restore"}),
            json!({"id": "3", "entityTypeName": "user", "recoveryAction": "update",
                   "notRecoverableReason": "onPremisesSynced"}),
            json!({"id": "4", "entityTypeName": "user", "recoveryAction": "softDelete",
                   "notRecoverableReason": null}),
        ];
        let cases: [(Option<&str>, Option<&str>, &[&str]); 5] = [
            (None, None, &["1", "2", "3", "4"]),
            (Some("user"), None, &["1", "3", "4"]),
            (None, Some("update"), &["1", "3"]),
            (Some("user"), Some("softDelete"), &["4"]),
            (None, Some("notRecoverable"), &["3"]),
        ];
        for (ty, action, want) in cases {
            let f = EntryFilter {
                entity_type: ty.map(Into::into),
                action: action.map(Into::into),
                name_prefix: None,
            };
            let kept: Vec<&str> = entries
                .iter()
                .filter(|e| f.keeps(e))
                .map(|e| e["id"].as_str().unwrap())
                .collect();
            assert_eq!(kept, want, "{ty:?} {action:?}");
        }
    }

    #[test]
    fn the_name_prefix_is_an_odata_filter_with_quotes_doubled() {
        let f = EntryFilter {
            name_prefix: Some("O'Brien".into()),
            ..EntryFilter::default()
        };
        assert_eq!(
            f.odata().as_deref(),
            Some("startswith(displayName,'O''Brien')")
        );
        assert_eq!(EntryFilter::default().odata(), None);
    }

    #[test]
    fn an_entry_row_names_its_changes() {
        let e = json!({"id": "1", "entityTypeName": "group", "displayName": "Ops",
            "recoveryAction": "update",
            "deltaFromCurrent": {"@odata.type": "#microsoft.graph.group",
                "description": "x", "members@delta": []}});
        assert_eq!(
            entry_row(&e),
            vec!["1", "group", "Ops", "update", "description, members", "-"]
        );
    }

    #[test]
    fn show_arguments_are_checked() {
        let show = |t: Option<&str>, a: Option<&str>| ReportCommand::Show {
            tenant: "t".into(),
            report_id: "r".into(),
            entity_type: t.map(Into::into),
            action: a.map(Into::into),
            name_prefix: None,
        };
        assert!(show(Some("user"), Some("restore")).checked().is_ok());
        let e = show(Some("users"), None).checked().unwrap_err();
        assert!(e.to_string().contains("--type: unknown entity type"), "{e}");
        let e = show(None, Some("delete")).checked().unwrap_err();
        assert!(
            e.to_string().contains("--action: unknown recovery action"),
            "{e}"
        );
        assert_eq!(e.exit_code(), 2);
    }
}
