//! Waiting for a job: polls its job view (`GET /tenants/{t}/rewind/jobs/{id}`) until it rests
//! (its status is terminal, or it is a recovery awaiting approval), showing its phase and
//! tasks done on an `indicatif` bar on stderr when the output allows one. A job that ends other
//! than successful is [`ClientError::JobEnded`]; one awaiting approval is not an error.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use super::http::{path, Api};
use super::output::{field, print, print_json};
use super::{ClientError, Output};

/// Time between two polls.
const POLL: Duration = Duration::from_millis(300);

/// The statuses after which a job never changes.
pub fn is_terminal(status: &str) -> bool {
    matches!(status, "successful" | "failed" | "abandoned")
}

/// A recovery waiting for a second administrator: not finished, but nothing happens until
/// someone decides, so a wait stops there.
pub const AWAITING_APPROVAL: &str = "awaitingApproval";

/// Whether a wait stops at this status: terminal, or awaiting approval.
pub fn is_resting(status: &str) -> bool {
    is_terminal(status) || status == AWAITING_APPROVAL
}

/// A job's view.
pub fn job(api: &Api, tenant: &str, id: &str) -> Result<Value, ClientError> {
    api.get(&path(&["tenants", tenant, "rewind", "jobs", id]), &[])
}

/// Polls job `id` of `tenant` until it rests ([`is_resting`]); returns its last view.
pub fn until_done(api: &Api, out: Output, tenant: &str, id: &str) -> Result<Value, ClientError> {
    let bar = out.bar.then(|| {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} {prefix} {msg:<10} [{bar:30}] {pos}/{len} tasks  {elapsed}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        // The id's first block is enough to tell jobs apart on one line.
        bar.set_prefix(format!("job {}", id.split('-').next().unwrap_or(id)));
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let result = poll(api, tenant, id, bar.as_ref());
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    result
}

fn poll(
    api: &Api,
    tenant: &str,
    id: &str,
    bar: Option<&ProgressBar>,
) -> Result<Value, ClientError> {
    loop {
        let view = job(api, tenant, id)?;
        if let Some(bar) = bar {
            let tasks = view.get("tasks");
            let n = |k: &str| tasks.and_then(|t| t.get(k)).and_then(Value::as_u64);
            bar.set_length(n("total").unwrap_or(0));
            bar.set_position(n("done").unwrap_or(0));
            bar.set_message(field(&view, "phase"));
        }
        let status = view.get("status").and_then(Value::as_str).unwrap_or("");
        if is_resting(status) {
            return Ok(view);
        }
        std::thread::sleep(POLL);
    }
}

/// Prints a job view (JSON, or the human form `human` makes), then fails with
/// [`ClientError::JobEnded`] if the job ended other than successful.
pub fn print_outcome(
    out: Output,
    view: &Value,
    human: impl FnOnce(&Value) -> String,
) -> Result<(), ClientError> {
    if out.json {
        print_json(view)?;
    } else {
        print(&human(view))?;
    }
    let status = field(view, "status");
    if is_terminal(&status) && status != "successful" {
        let reason = view
            .get("error")
            .filter(|e| !e.is_null())
            .map(super::output::text);
        return Err(ClientError::JobEnded {
            id: field(view, "id"),
            status,
            reason,
        });
    }
    Ok(())
}
