//! `rewind recover start|object|list|show|actions|failed|export|calls|approve|reject|cancel|undo`:
//! recoveries through Microsoft's `recoveryJobs` (with Rewind's `reportId`, `objectIds` and
//! `dryRun`) and Rewind's `recoveries/{id}/...` routes. A wait stops when the job ends or when
//! it awaits approval (exit 0, saying who must act); statuses are printed in the console's
//! words ("Completed with warnings" for a success with failed changes).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::http::{path, Api};
use super::input::{parse_object_ids, report_body};
use super::jobs::recovery_path;
use super::output::{field, key_values, print, print_json, text, values, Table};
use super::report::{export_to, Format};
use super::wait::{self, AWAITING_APPROVAL};
use super::{ClientError, Connection, Output};

/// The most ids a recovery lists (Rewind's listed scope).
pub const MAX_LISTED_IDS: usize = rewind_common::report::Scope::MAX_LISTED_IDS;

/// The outcomes `recover actions --outcome` filters on (those the API's filter takes).
pub use crate::api::rewind::OUTCOMES;

#[derive(Debug, Args)]
pub struct RecoverArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    pub command: RecoverCommand,
}

#[derive(Debug, Subcommand)]
pub enum RecoverCommand {
    /// Recover the tenant back to a backup (all of it, some types, listed objects, or a
    /// report's scope), planned against the tenant as it is now; wait for it.
    Start {
        tenant: String,
        /// The backup (snapshot id) to go back to.
        #[arg(long)]
        backup: String,
        /// Only objects of these entity types (comma-separated: user,group,...).
        #[arg(long, conflicts_with_all = ["ids", "ids_file", "from_report"])]
        types: Option<String>,
        /// Only these objects (comma-separated GUIDs, at most 20,000).
        #[arg(long, conflicts_with_all = ["ids_file", "from_report"])]
        ids: Option<String>,
        /// Only the objects listed in this file (GUIDs, one a line or comma-separated).
        #[arg(long, value_name = "FILE", conflicts_with = "from_report")]
        ids_file: Option<PathBuf>,
        /// The scope of this difference report (made against the same backup).
        #[arg(long, value_name = "REPORT")]
        from_report: Option<String>,
        /// Plan only: list the directory calls it would make, write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Return at once with the job's id.
        #[arg(long)]
        no_wait: bool,
    },
    /// Recover one object as a report's backup holds it.
    Object {
        tenant: String,
        object_id: String,
        /// The report whose backup the object goes back to.
        #[arg(long, value_name = "REPORT")]
        from_report: String,
        /// Plan only.
        #[arg(long)]
        dry_run: bool,
        /// Return at once with the job's id.
        #[arg(long)]
        no_wait: bool,
    },
    /// The tenant's recoveries, newest first.
    List { tenant: String },
    /// A recovery's summary: status, counts, approval.
    Show { tenant: String, id: String },
    /// A recovery's actions and their outcomes.
    Actions {
        tenant: String,
        id: String,
        /// Only actions with this outcome (planned, applied, alreadyInState, skipped,
        /// notSent, failed).
        #[arg(long)]
        outcome: Option<String>,
    },
    /// A recovery's failed changes (Microsoft's getFailedChanges).
    Failed { tenant: String, id: String },
    /// Every action, streamed as CSV or JSON Lines.
    Export {
        tenant: String,
        id: String,
        #[arg(long, value_enum)]
        format: Format,
        /// Write to this file (else stdout).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// The directory calls a recovery (a dry run's) makes, in order.
    Calls { tenant: String, id: String },
    /// Approve a recovery awaiting approval (not with the token that started it); wait for it.
    Approve {
        tenant: String,
        id: String,
        /// Return at once.
        #[arg(long)]
        no_wait: bool,
    },
    /// Reject a recovery awaiting approval: it is abandoned, nothing applied.
    Reject { tenant: String, id: String },
    /// Cancel a recovery (what was applied stays).
    Cancel { tenant: String, id: String },
    /// Undo a finished recovery: recover its scope back to its pre-recovery snapshot.
    Undo {
        tenant: String,
        id: String,
        /// Return at once with the new job's id.
        #[arg(long)]
        no_wait: bool,
    },
}

/// A recover command whose arguments passed their checks.
#[derive(Debug)]
pub enum Checked {
    Start {
        tenant: String,
        backup: Option<String>,
        /// For `object`: the report whose backup to use.
        backup_of_report: Option<String>,
        body: Value,
        no_wait: bool,
    },
    Other(RecoverCommand),
}

impl RecoverCommand {
    /// Checks the arguments (and reads `--ids-file`) before anything is sent.
    pub fn checked(self) -> Result<Checked, ClientError> {
        Ok(match self {
            RecoverCommand::Start {
                tenant,
                backup,
                types,
                ids,
                ids_file,
                from_report,
                dry_run,
                no_wait,
            } => {
                let mut body = if let Some(ids) = ids {
                    json!({"objectIds": parse_object_ids(&ids, "--ids", MAX_LISTED_IDS)?})
                } else if let Some(file) = ids_file {
                    let text = std::fs::read_to_string(&file).map_err(|e| {
                        ClientError::Usage(format!(
                            "--ids-file: cannot read {}: {e}",
                            file.display()
                        ))
                    })?;
                    json!({"objectIds": parse_object_ids(&text, "--ids-file", MAX_LISTED_IDS)?})
                } else if let Some(report) = from_report {
                    json!({ "reportId": report })
                } else {
                    report_body(types.as_deref(), None)?
                };
                if dry_run {
                    body["dryRun"] = json!(true);
                }
                Checked::Start {
                    tenant,
                    backup: Some(backup),
                    backup_of_report: None,
                    body,
                    no_wait,
                }
            }
            RecoverCommand::Object {
                tenant,
                object_id,
                from_report,
                dry_run,
                no_wait,
            } => {
                let ids = parse_object_ids(&object_id, "object id", 1)?;
                let mut body = json!({ "objectIds": ids });
                if dry_run {
                    body["dryRun"] = json!(true);
                }
                Checked::Start {
                    tenant,
                    backup: None,
                    backup_of_report: Some(from_report),
                    body,
                    no_wait,
                }
            }
            RecoverCommand::Actions {
                tenant,
                id,
                outcome,
            } => {
                if let Some(o) = &outcome {
                    if !OUTCOMES.contains(&o.as_str()) {
                        return Err(ClientError::Usage(format!(
                            "--outcome: unknown outcome {o:?} (allowed: {})",
                            OUTCOMES.join(", ")
                        )));
                    }
                }
                Checked::Other(RecoverCommand::Actions {
                    tenant,
                    id,
                    outcome,
                })
            }
            other => Checked::Other(other),
        })
    }
}

fn recoveries(tenant: &str, id: &str, rest: &str) -> String {
    path(&["tenants", tenant, "rewind", "recoveries", id, rest])
}

/// A recovery's status in the console's words.
pub fn console_status(status: &str, failed_changes: u64) -> &'static str {
    match status {
        "initialized" | "loadingData" => "Loading data",
        "calculating" | "running" => "In progress",
        AWAITING_APPROVAL => "Awaiting approval",
        "successful" if failed_changes > 0 => "Completed with warnings",
        "successful" => "Completed",
        "failed" => "Failed",
        "abandoned" => "Canceled",
        _ => "Unknown",
    }
}

fn count(view: &Value, key: &str) -> u64 {
    view.get("counts")
        .and_then(|c| c.get(key))
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

fn view_status(view: &Value) -> &'static str {
    console_status(
        view.get("status").and_then(Value::as_str).unwrap_or(""),
        count(view, "failedChanges"),
    )
}

/// A job view with `consoleStatus` (the status in the console's words) added, as the JSON
/// output writes it.
pub fn with_console_status(mut view: Value) -> Value {
    let words = view_status(&view);
    if let Value::Object(m) = &mut view {
        m.insert("consoleStatus".into(), json!(words));
    }
    view
}

/// A recovery's approval in words.
fn approval_text(view: &Value) -> String {
    let a = &view["recovery"]["approval"];
    if a.is_null() {
        return "-".into();
    }
    let objects = field(a, "objects");
    match a.get("decision").filter(|d| !d.is_null()) {
        Some(d) => format!(
            "{} by {} at {} ({objects} objects)",
            if d["approved"] == json!(true) {
                "approved"
            } else {
                "rejected"
            },
            field(d, "byName"),
            field(d, "dateTime"),
        ),
        None if a["required"] == json!(true) => {
            format!("required ({objects} objects), awaiting a second administrator")
        }
        None => format!("not required ({objects} objects)"),
    }
}

/// The summary of a recovery's job view.
pub fn summary(view: &Value) -> String {
    let r = &view["recovery"];
    key_values(&[
        ("recovery", field(view, "id")),
        ("tenant", field(view, "tenant")),
        ("status", view_status(view).to_owned()),
        ("phase", field(view, "phase")),
        ("backup", field(view, "backup")),
        ("dry run", field(r, "dryRun")),
        ("from report", field(r, "reportId")),
        ("undo of", field(r, "undoOf")),
        ("pre-recovery", field(r, "preRecoverySnapshot")),
        ("round", field(r, "round")),
        ("approval", approval_text(view)),
        (
            "objects planned",
            count(view, "objectsToModify").to_string(),
        ),
        (
            "objects modified",
            count(view, "objectsModified").to_string(),
        ),
        ("links modified", count(view, "linksModified").to_string()),
        ("applied", count(view, "applied").to_string()),
        (
            "already in state",
            count(view, "alreadyInState").to_string(),
        ),
        ("failed changes", count(view, "failedChanges").to_string()),
        ("skipped", count(view, "skipped").to_string()),
        ("not sent", count(view, "notSent").to_string()),
        ("created", field(view, "createdDateTime")),
        ("completed", field(view, "completedDateTime")),
        ("error", field(view, "error")),
    ])
}

/// The recovery's job view, refused if the job is not a recovery.
fn recovery_view(api: &Api, tenant: &str, id: &str) -> Result<Value, ClientError> {
    let view = wait::job(api, tenant, id)?;
    let kind = field(&view, "kind");
    if kind != "recovery" {
        return Err(ClientError::Usage(format!(
            "job {id} is a {kind} job, not a recovery"
        )));
    }
    Ok(view)
}

/// Waits (unless `no_wait`) and prints the outcome; a recovery awaiting approval says who
/// must act and is a success.
fn finish(
    api: &Api,
    out: Output,
    tenant: &str,
    id: &str,
    no_wait: bool,
) -> Result<(), ClientError> {
    let view = with_console_status(if no_wait {
        wait::job(api, tenant, id)?
    } else {
        wait::until_done(api, out, tenant, id)?
    });
    wait::print_outcome(out, &view, |v| {
        let mut text = summary(v);
        if field(v, "status") == AWAITING_APPROVAL {
            text.push_str(&format!(
                "\nawaiting approval: another administrator runs `rewind recover approve {tenant} {id}` (or reject)\n"
            ));
        } else if v["recovery"]["dryRun"] == json!(true) {
            text.push_str(&format!(
                "\nplanned calls: rewind recover calls {tenant} {id}\n"
            ));
        }
        text
    })
}

pub fn run(api: &Api, out: Output, command: Checked) -> Result<(), ClientError> {
    let command = match command {
        Checked::Start {
            tenant,
            backup,
            backup_of_report,
            body,
            no_wait,
        } => {
            let backup = match (backup, backup_of_report) {
                (Some(b), _) => b,
                (None, Some(report)) => {
                    let view = wait::job(api, &tenant, &report)?;
                    if field(&view, "kind") != "report" {
                        return Err(ClientError::Usage(format!(
                            "--from-report: job {report} is a {} job, not a difference report",
                            field(&view, "kind")
                        )));
                    }
                    field(&view, "backup")
                }
                (None, None) => return Err(ClientError::Usage("no backup to recover from".into())),
            };
            let job = api.post(
                &recovery_path(&tenant, &["snapshots", &backup, "recoveryJobs"]),
                Some(&body),
            )?;
            let id = field(&job, "id");
            if id == "-" {
                return Err(ClientError::Protocol(
                    "POST recoveryJobs answered no job id".into(),
                ));
            }
            return finish(api, out, &tenant, &id, no_wait);
        }
        Checked::Other(c) => c,
    };
    match command {
        RecoverCommand::List { tenant } => list(api, out, &tenant),
        RecoverCommand::Show { tenant, id } => {
            let view = with_console_status(recovery_view(api, &tenant, &id)?);
            if out.json {
                print_json(&view)
            } else {
                print(&summary(&view))
            }
        }
        RecoverCommand::Actions {
            tenant,
            id,
            outcome,
        } => actions(api, out, &tenant, &id, outcome.as_deref()),
        RecoverCommand::Failed { tenant, id } => failed(api, out, &tenant, &id),
        RecoverCommand::Export {
            tenant,
            id,
            format,
            output,
        } => {
            let export = path(&[
                "tenants",
                &tenant,
                "rewind",
                "recoveries",
                &id,
                "actions",
                "export",
            ]);
            export_to(api, out, ("recovery", &id), &export, format, output)
        }
        RecoverCommand::Calls { tenant, id } => calls(api, out, &tenant, &id),
        RecoverCommand::Approve {
            tenant,
            id,
            no_wait,
        } => {
            api.post(&recoveries(&tenant, &id, "approve"), None)?;
            finish(api, out, &tenant, &id, no_wait)
        }
        RecoverCommand::Reject { tenant, id } => {
            let view = with_console_status(api.post(&recoveries(&tenant, &id, "reject"), None)?);
            if out.json {
                print_json(&view)
            } else {
                print(&format!("{}\nrejected\n", summary(&view)))
            }
        }
        RecoverCommand::Cancel { tenant, id } => {
            recovery_view(api, &tenant, &id)?;
            api.post(&recovery_path(&tenant, &["jobs", &id, "cancel"]), None)?;
            let view = with_console_status(wait::job(api, &tenant, &id)?);
            if out.json {
                print_json(&view)
            } else {
                print(&format!("{}\ncancel requested\n", summary(&view)))
            }
        }
        RecoverCommand::Undo {
            tenant,
            id,
            no_wait,
        } => {
            let job = api.post(&recoveries(&tenant, &id, "undo"), None)?;
            let undo = field(&job, "id");
            if undo == "-" {
                return Err(ClientError::Protocol("POST undo answered no job id".into()));
            }
            finish(api, out, &tenant, &undo, no_wait)
        }
        RecoverCommand::Start { .. } | RecoverCommand::Object { .. } => Err(ClientError::Usage(
            "a recovery's start is checked first".into(),
        )),
    }
}

fn list(api: &Api, out: Output, tenant: &str) -> Result<(), ClientError> {
    let all = api.get(&path(&["tenants", tenant, "rewind", "jobs"]), &[])?;
    let list: Vec<Value> = values(&all)
        .iter()
        .filter(|j| field(j, "kind") == "recovery")
        .map(|j| with_console_status(j.clone()))
        .collect();
    if out.json {
        return print_json(&json!({ "value": list }));
    }
    let mut t = Table::new(&[
        "ID",
        "STATUS",
        "BACKUP",
        "DRY RUN",
        "OBJECTS MODIFIED",
        "FAILED",
        "CREATED",
        "COMPLETED",
    ]);
    for j in &list {
        t.row(vec![
            field(j, "id"),
            field(j, "consoleStatus"),
            field(j, "backup"),
            field(&j["recovery"], "dryRun"),
            count(j, "objectsModified").to_string(),
            count(j, "failedChanges").to_string(),
            field(j, "createdDateTime"),
            field(j, "completedDateTime"),
        ]);
    }
    print(&t.render())
}

/// Every item of a paged collection.
fn collect(api: &Api, first: &str, query: &[(&str, &str)]) -> Result<Vec<Value>, ClientError> {
    let mut out = Vec::new();
    for page in api.pages(first, query) {
        out.extend(page?);
    }
    Ok(out)
}

fn actions(
    api: &Api,
    out: Output,
    tenant: &str,
    id: &str,
    outcome: Option<&str>,
) -> Result<(), ClientError> {
    let mut query = vec![("$top", "999")];
    if let Some(o) = outcome {
        query.push(("outcome", o));
    }
    let list = collect(api, &recoveries(tenant, id, "actions"), &query)?;
    if out.json {
        return print_json(&json!({ "value": list }));
    }
    let mut t = Table::new(&[
        "SEQ", "ROUND", "OBJECT", "TYPE", "NAME", "STEP", "OUTCOME", "DETAIL",
    ]);
    for a in &list {
        let step = &a["step"];
        let mut kind = field(step, "kind");
        if let Some(link) = step.get("link").and_then(Value::as_str) {
            kind = format!("{kind} {link} {}", field(step, "target"));
        }
        let detail = match a.get("error").filter(|e| !e.is_null()) {
            Some(e) => format!(
                "{} {}: {}",
                field(e, "status"),
                field(e, "code"),
                field(e, "message")
            ),
            None => field(a, "reason"),
        };
        t.row(vec![
            field(a, "seq"),
            field(a, "round"),
            field(a, "objectId"),
            field(a, "entityType"),
            field(a, "displayName"),
            kind,
            field(a, "outcome"),
            detail,
        ]);
    }
    print(&format!("{}{} actions\n", t.render(), list.len()))
}

fn failed(api: &Api, out: Output, tenant: &str, id: &str) -> Result<(), ClientError> {
    let view = recovery_view(api, tenant, id)?;
    let backup = field(&view, "backup");
    let first = recovery_path(
        tenant,
        &["snapshots", &backup, "recoveryJobs", id, "getFailedChanges"],
    );
    let list = collect(api, &first, &[("$top", "999")])?;
    if out.json {
        return print_json(&json!({ "value": list }));
    }
    let mut t = Table::new(&["OBJECT", "TYPE", "NAME", "ACTION", "CODE", "MESSAGE"]);
    for c in &list {
        t.row(vec![
            field(c, "id"),
            field(c, "entityTypeName"),
            field(c, "displayName"),
            field(c, "recoveryAction"),
            field(c, "errorCode"),
            field(c, "failureMessage"),
        ]);
    }
    print(&format!("{}{} failed changes\n", t.render(), list.len()))
}

fn calls(api: &Api, out: Output, tenant: &str, id: &str) -> Result<(), ClientError> {
    // The first page holds the plan's counts; the calls come on every page.
    let mut answer = api.get(&recoveries(tenant, id, "calls"), &[("$top", "999")])?;
    let mut list = values(&answer).to_vec();
    if let Some(link) = answer.get("@odata.nextLink").and_then(Value::as_str) {
        for page in api.pages_at(link) {
            list.extend(page?);
        }
    }
    if let Some(map) = answer.as_object_mut() {
        map.remove("@odata.nextLink");
    }
    answer["value"] = Value::Array(list);
    if out.json {
        return print_json(&answer);
    }
    let mut t = Table::new(&["SEQ", "METHOD", "VERSION", "PATH", "BODY"]);
    for c in values(&answer) {
        let mut body = text(c.get("body").unwrap_or(&Value::Null));
        if body.chars().count() > 80 {
            body = body.chars().take(77).collect::<String>() + "...";
        }
        t.row(vec![
            field(c, "seq"),
            field(c, "method"),
            field(c, "version"),
            field(c, "path"),
            body,
        ]);
    }
    let by_method = answer
        .get("countsByMethod")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k} {}", text(v)))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    print(&format!(
        "{}{} calls{}\n",
        t.render(),
        values(&answer).len(),
        if by_method.is_empty() {
            String::new()
        } else {
            format!(" ({by_method})")
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_in_the_consoles_words() {
        let cases = [
            ("loadingData", 0, "Loading data"),
            ("running", 0, "In progress"),
            ("awaitingApproval", 0, "Awaiting approval"),
            ("successful", 0, "Completed"),
            ("successful", 2, "Completed with warnings"),
            ("failed", 0, "Failed"),
            ("abandoned", 1, "Canceled"),
        ];
        for (status, failed, want) in cases {
            assert_eq!(console_status(status, failed), want, "{status} {failed}");
        }
    }

    #[test]
    fn start_arguments_are_checked_before_any_request() {
        let start = |ids: Option<&str>, types: Option<&str>| RecoverCommand::Start {
            tenant: "t".into(),
            backup: "b".into(),
            types: types.map(Into::into),
            ids: ids.map(Into::into),
            ids_file: None,
            from_report: None,
            dry_run: true,
            no_wait: false,
        };
        let Checked::Start { body, .. } = start(None, Some("user,group")).checked().unwrap() else {
            panic!("a start");
        };
        assert_eq!(body["dryRun"], true);
        assert_eq!(
            body["filteringCriteria"]["entityTypes"],
            json!(["user", "group"])
        );
        let id = "8a7c5e9d-1f2b-4c3d-9e8f-0a1b2c3d4e5f";
        let Checked::Start { body, .. } =
            start(Some(&format!("{id},{id}")), None).checked().unwrap()
        else {
            panic!("a start");
        };
        assert_eq!(body["objectIds"], json!([id]));
        let e = start(Some("nope"), None).checked().unwrap_err();
        assert!(e.to_string().contains("\"nope\" is not a GUID"), "{e}");
        assert_eq!(e.exit_code(), 2);
        let many: Vec<String> = (1..=MAX_LISTED_IDS as u128 + 1)
            .map(|i| format!("00000000-0000-4000-8000-{i:012x}"))
            .collect();
        let e = start(Some(&many.join(",")), None).checked().unwrap_err();
        assert!(e.to_string().contains("20001 ids given"), "{e}");
        let e = RecoverCommand::Actions {
            tenant: "t".into(),
            id: "j".into(),
            outcome: Some("done".into()),
        }
        .checked()
        .unwrap_err();
        assert!(e.to_string().contains("--outcome: unknown outcome"), "{e}");
    }

    #[test]
    fn a_summary_says_who_approved() {
        let view = json!({"id": "j", "status": "successful", "kind": "recovery",
            "counts": {"failedChanges": 1, "objectsModified": 4},
            "recovery": {"dryRun": false, "approval": {"required": true, "objects": 40,
                "decision": {"approved": true, "byName": "bob", "dateTime": "t"}}}});
        let text = summary(&view);
        assert!(text.contains("Completed with warnings"), "{text}");
        assert!(text.contains("approved by bob at t (40 objects)"), "{text}");
        assert!(text.contains("objects modified: 4"), "{text}");
    }
}
