//! Recoveries through the API over real HTTP: bad requests named, a dry run that lists its
//! calls and writes nothing, a recovery above the approval threshold that waits, refused to
//! its starter and to a reader, rejected, or approved by a second administrator, a failed
//! change for real (a user soft-deleted between the plan and the approval), and an undo.

use std::time::Duration;

use rewind_coordinator::state::{NewToken, Role, TenantScope};
use serde_json::{json, Value as Json};

use super::{call, Fixture, TENANT};

const PREFER: (&str, &str) = ("prefer", "include-unknown-enum-members");

impl Fixture {
    /// Polls a job view until the job rests: finished, or awaiting approval.
    pub async fn wait_resting(&self, id: &str) -> Json {
        let path = format!("/tenants/{TENANT}/rewind/jobs/{id}");
        loop {
            let answer = self.get(&path, &self.reader).await;
            assert_eq!(answer.status, 200, "{}", answer.text);
            let job = answer.json();
            if matches!(
                job["status"].as_str(),
                Some("successful" | "failed" | "abandoned" | "awaitingApproval")
            ) {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The simulator's directory writes so far.
    pub async fn sim_writes(&self) -> u64 {
        let answer = call(
            self.sim.base_url(),
            "GET",
            "/_admin/counters",
            None,
            None,
            &[],
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        answer.json()["writes"].as_u64().unwrap()
    }

    /// A second administrator's token on the tenant.
    pub async fn second_admin(&self) -> String {
        self.coordinator
            .engine()
            .state()
            .create_token(NewToken {
                name: "second-admin".into(),
                role: Role::Administrator,
                tenants: TenantScope::Only(vec![TENANT.to_owned()]),
                expires_at: None,
            })
            .await
            .unwrap()
            .1
    }

    /// Starts a recovery through Microsoft's route; returns its id after checking the 202.
    pub async fn start_recovery(&self, body: &str) -> String {
        let path = self.ms(&format!("/snapshots/{}/recoveryJobs", self.backup));
        let answer = self.post_json(&path, &self.admin, body).await;
        assert_eq!(answer.status, 202, "{}", answer.text);
        let job = answer.json();
        let id = job["id"].as_str().unwrap().to_owned();
        assert_eq!(
            answer.header("location"),
            Some(format!("{path}/{id}").as_str()),
            "{}",
            answer.text
        );
        assert_eq!(
            job["@odata.type"],
            "#microsoft.graph.entraRecoveryServices.recoveryJob"
        );
        id
    }

    fn rec(&self, id: &str, rest: &str) -> String {
        format!("/tenants/{TENANT}/rewind/recoveries/{id}{rest}")
    }
}

/// Every page of a paged collection from `first`.
async fn all_pages(f: &Fixture, first: &str) -> Vec<Json> {
    let mut out = Vec::new();
    let mut next = Some(first.to_owned());
    while let Some(path) = next {
        let answer = f.get(&path, &f.reader).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.text);
        let body = answer.json();
        out.extend(body["value"].as_array().unwrap().iter().cloned());
        next = body["@odata.nextLink"].as_str().map(str::to_owned);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recoveries_through_the_api() {
    let f = Fixture::start().await;
    let recoveries = f.ms(&format!("/snapshots/{}/recoveryJobs", f.backup));
    // The tenant's approval threshold, set through the admin API.
    let patch = call(
        &f.base,
        "PATCH",
        &format!("/admin/tenants/{TENANT}"),
        Some(&f.operator),
        Some(r#"{"approvalThreshold":10,"writeBudget":1000}"#.into()),
        &[],
    )
    .await;
    assert_eq!(patch.status, 200, "{}", patch.text);
    assert_eq!(patch.json()["approvalThreshold"], 10);
    assert_eq!(patch.json()["writeBudget"], 1000);
    assert_eq!(patch.json()["historyDays"], 7, "the others are kept");

    // Bad requests, each a 400 or 404 that names the problem.
    let many: Vec<String> = (1..=20_001u128)
        .map(|i| format!("00000000-0000-4000-8000-{i:012x}"))
        .collect();
    let crit = json!({
        "@odata.type": "#microsoft.graph.entraRecoveryServices.recoveryJobEntityNamesFilter",
        "entityTypes": ["user"],
    });
    let bad: Vec<(String, String, u16, &str)> = vec![
        (
            recoveries.clone(),
            r#"{"objectIds":["not-a-guid"]}"#.into(),
            400,
            "objectIds[0]",
        ),
        (
            recoveries.clone(),
            json!({ "objectIds": many }).to_string(),
            400,
            "20001",
        ),
        (
            recoveries.clone(),
            format!(
                r#"{{"reportId":"{}","filteringCriteria":{crit}}}"#,
                f.report
            ),
            400,
            "filteringCriteria and reportId",
        ),
        (
            recoveries.clone(),
            format!(
                r#"{{"objectIds":["{}"],"filteringCriteria":{crit}}}"#,
                many[0]
            ),
            400,
            "filteringCriteria and objectIds",
        ),
        (
            recoveries.clone(),
            r#"{"reportId":"9d0f3c52-1111-4222-8333-444455556666"}"#.into(),
            404,
            "9d0f3c52-1111-4222-8333-444455556666",
        ),
        (
            recoveries.clone(),
            r#"{"dryRun":"yes"}"#.into(),
            400,
            "dryRun",
        ),
        (
            recoveries.clone(),
            r#"{"scope":"all"}"#.into(),
            400,
            "\"scope\"",
        ),
        (
            f.ms("/snapshots/no-such-backup/recoveryJobs"),
            "{}".into(),
            404,
            "This isn't a valid timestamp for recovery",
        ),
    ];
    for (path, body, status, needle) in &bad {
        let answer = f.post_json(path, &f.admin, body).await;
        let message = answer.graph_error(*status);
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    }

    // A dry run from the report: its calls listed, nothing written.
    let writes_before = f.sim_writes().await;
    let dry = f
        .start_recovery(&format!(r#"{{"reportId":"{}","dryRun":true}}"#, f.report))
        .await;
    let view = f.wait_resting(&dry).await;
    assert_eq!(view["status"], "successful", "{view}");
    assert_eq!(view["kind"], "recovery");
    assert_eq!(view["recovery"]["dryRun"], true, "{view}");
    assert!(
        view["recovery"]["preRecoverySnapshot"].is_string(),
        "{view}"
    );
    assert_eq!(f.sim_writes().await, writes_before, "a dry run wrote");
    let ms_job = f
        .get(&format!("{recoveries}/{dry}"), &f.reader)
        .await
        .json();
    assert_eq!(ms_job["dryRun"], true);
    assert_eq!(ms_job["reportId"], f.report.as_str());
    assert_eq!(ms_job["totalObjectsModified"], 0, "{ms_job}");
    let planned = ms_job["totalChangedObjectsCalculated"].as_u64().unwrap();
    assert!(planned > 10, "{ms_job}");
    let actions = all_pages(&f, &format!("{}?$top=7", f.rec(&dry, "/actions"))).await;
    assert!(!actions.is_empty());
    assert!(
        actions
            .iter()
            .all(|a| matches!(a["outcome"].as_str(), Some("planned" | "skipped"))),
        "{actions:?}"
    );
    let seqs: Vec<u64> = actions.iter().map(|a| a["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    // Its link writes planned: the actions whose step names a link (a dry run has one round).
    let link_steps = actions
        .iter()
        .filter(|a| a["step"]["link"].is_string())
        .count();
    assert!(link_steps > 0, "{actions:?}");
    assert_eq!(
        ms_job["totalChangedLinksCalculated"].as_u64(),
        Some(link_steps as u64),
        "{ms_job}"
    );
    let only_planned = all_pages(&f, &format!("{}?outcome=planned", f.rec(&dry, "/actions"))).await;
    let steps = actions.iter().filter(|a| a["step"].is_object()).count();
    assert_eq!(only_planned.len(), steps);
    let jsonl = f
        .get(&f.rec(&dry, "/actions/export?format=jsonl"), &f.reader)
        .await;
    assert_eq!(jsonl.status, 200);
    assert_eq!(jsonl.text.lines().count(), actions.len());
    let csv = f
        .get(&f.rec(&dry, "/actions/export?format=csv"), &f.reader)
        .await;
    assert!(csv.text.starts_with("seq,actionId,"), "{}", csv.text);
    // Its calls: what the connector would send, in action order, counted by method.
    // Paged by action: the first page holds the whole plan's counts, every page its calls.
    let calls = f.get(&f.rec(&dry, "/calls"), &f.reader).await;
    assert_eq!(calls.status, 200, "{}", calls.text);
    let calls = calls.json();
    let paged = all_pages(&f, &format!("{}?$top=3", f.rec(&dry, "/calls"))).await;
    let list = &paged;
    assert!(!list.is_empty(), "{calls}");
    assert_eq!(calls["total"].as_u64().unwrap() as usize, list.len());
    assert_eq!(calls["steps"].as_u64().unwrap() as usize, steps, "{calls}");
    assert!(steps > 3, "more than one page of 3: {steps}");
    let first = f
        .get(&format!("{}?$top=3", f.rec(&dry, "/calls")), &f.reader)
        .await
        .json();
    let next = first["@odata.nextLink"].as_str().unwrap().to_owned();
    let page_seqs: std::collections::BTreeSet<u64> = first["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(page_seqs.len(), 3, "3 actions' calls: {first}");
    let second = f.get(&next, &f.reader).await.json();
    assert!(second["total"].is_null(), "counts on the first page only");
    assert_eq!(
        f.get(
            &format!("{}?$skiptoken=x", f.rec(&dry, "/calls")),
            &f.reader
        )
        .await
        .status,
        400
    );
    let by_method: u64 = calls["countsByMethod"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(by_method as usize, list.len(), "{calls}");
    assert!(
        list.iter()
            .all(|c| c["path"].as_str().unwrap().starts_with('/')
                && matches!(c["method"].as_str(), Some("POST" | "PATCH" | "DELETE"))
                && matches!(c["version"].as_str(), Some("v1.0" | "beta"))),
        "{calls}"
    );
    let call_seqs: Vec<u64> = list.iter().map(|c| c["seq"].as_u64().unwrap()).collect();
    assert!(call_seqs.windows(2).all(|w| w[0] <= w[1]), "{call_seqs:?}");
    assert_eq!(f.sim_writes().await, writes_before, "listing calls wrote");
    // A dry run cannot be undone.
    let undo_dry = f.post_json(&f.rec(&dry, "/undo"), &f.admin, "").await;
    assert!(undo_dry.graph_error(409).contains("dry run"));

    // Above the approval threshold (10 objects) a recovery waits.
    let second = f.second_admin().await;
    let rejected = f
        .start_recovery(&format!(r#"{{"reportId":"{}"}}"#, f.report))
        .await;
    let view = f.wait_resting(&rejected).await;
    assert_eq!(view["status"], "awaitingApproval", "{view}");
    // One job per tenant: another is a 409 while this one waits.
    let busy = f.post_json(&recoveries, &f.admin, "{}").await;
    assert!(busy
        .graph_error(409)
        .contains("A recovery job is currently in progress"));
    let reject = f.post_json(&f.rec(&rejected, "/reject"), &second, "").await;
    assert_eq!(reject.status, 200, "{}", reject.text);
    let view = f.wait_resting(&rejected).await;
    assert_eq!(view["status"], "abandoned", "{view}");
    assert_eq!(
        view["recovery"]["approval"]["decision"]["approved"], false,
        "{view}"
    );

    let job = f
        .start_recovery(&format!(r#"{{"reportId":"{}"}}"#, f.report))
        .await;
    f.wait_resting(&job).await;
    let with = f
        .get_with(&format!("{recoveries}/{job}"), &f.reader, &[PREFER])
        .await
        .json();
    assert_eq!(with["status"], "awaitingApproval", "{with}");
    let without = f
        .get(&format!("{recoveries}/{job}"), &f.reader)
        .await
        .json();
    assert_eq!(without["status"], "unknownFutureValue", "{without}");
    assert_eq!(without["approval"]["required"], true, "{without}");
    let own = f.post_json(&f.rec(&job, "/approve"), &f.admin, "").await;
    assert!(own.graph_error(409).contains("second administrator"));
    let reader = f.post_json(&f.rec(&job, "/approve"), &f.reader, "").await;
    reader.graph_error(403);
    let early = f.post_json(&f.rec(&job, "/undo"), &f.admin, "").await;
    assert!(early
        .graph_error(409)
        .contains("only a finished recovery can be undone"));
    // Under `recoveries/`, a report is named for what it is.
    let report_as = f.get(&f.rec(&f.report, "/actions"), &f.reader).await;
    assert!(report_as.graph_error(400).contains("not a recovery"));
    let bad_token = f
        .get(
            &format!("{}?$skiptoken=abc", f.rec(&job, "/actions")),
            &f.reader,
        )
        .await;
    assert!(bad_token.graph_error(400).contains("$skiptoken"));

    // A user the plan updates is soft-deleted before the approval: its update fails for real.
    let planned = all_pages(&f, &format!("{}?outcome=planned", f.rec(&job, "/actions"))).await;
    let victim = planned
        .iter()
        .find(|a| a["entityType"] == "user" && a["step"]["kind"] == "update")
        .map(|a| a["objectId"].as_str().unwrap().to_owned())
        .expect("the plan updates a user");
    delete_user(f.sim.base_url(), &victim).await;

    let approve = f.post_json(&f.rec(&job, "/approve"), &second, "").await;
    assert_eq!(approve.status, 200, "{}", approve.text);
    let view = f.wait_resting(&job).await;
    assert_eq!(view["status"], "successful", "{view}");
    let done = f
        .get(&format!("{recoveries}/{job}"), &f.reader)
        .await
        .json();
    assert!(done["totalObjectsModified"].as_u64().unwrap() > 0, "{done}");
    assert!(done["totalLinksModified"].as_u64().unwrap() > 0, "{done}");
    let failed_count = done["totalFailedChanges"].as_u64().unwrap();
    assert!(failed_count >= 1, "{done}");
    let failed = all_pages(&f, &format!("{recoveries}/{job}/getFailedChanges?$top=1")).await;
    assert_eq!(failed.len() as u64, failed_count, "{failed:?}");
    let change = failed
        .iter()
        .find(|c| c["id"] == victim.as_str())
        .unwrap_or_else(|| panic!("{victim} not among {failed:?}"));
    assert!(change["failureMessage"].is_string(), "{change}");
    assert!(change["errorCode"].is_string(), "{change}");
    assert_eq!(change["recoveryAction"], "update");
    assert_eq!(
        change["deltaFromCurrent"]["@odata.type"],
        "#microsoft.graph.user"
    );
    // Jobs lists recoveries with their type.
    let jobs = f.get(&f.ms("/jobs"), &f.reader).await.json();
    let listed = jobs["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == job.as_str())
        .cloned()
        .expect("the recovery is among the jobs");
    assert_eq!(
        listed["@odata.type"],
        "#microsoft.graph.entraRecoveryServices.recoveryJob"
    );
    let one = f.get(&f.ms(&format!("/jobs/{job}")), &f.reader).await;
    assert_eq!(one.status, 200, "{}", one.text);
    let mine = f
        .get(
            &format!("{recoveries}?$filter=id%20eq%20'{job}'"),
            &f.reader,
        )
        .await
        .json();
    assert_eq!(mine["value"].as_array().unwrap().len(), 1, "{mine}");

    // Undo: back to the pre-recovery snapshot, same scope (it waits for approval as well).
    let undo = f.post_json(&f.rec(&job, "/undo"), &f.admin, "").await;
    assert_eq!(undo.status, 202, "{}", undo.text);
    let undo_id = undo.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(
        undo.header("location"),
        Some(format!("/tenants/{TENANT}/rewind/jobs/{undo_id}").as_str())
    );
    let view = f.wait_resting(&undo_id).await;
    assert_eq!(view["recovery"]["undoOf"], job.as_str(), "{view}");
    if view["status"] == "awaitingApproval" {
        let ok = f.post_json(&f.rec(&undo_id, "/approve"), &second, "").await;
        assert_eq!(ok.status, 200, "{}", ok.text);
    }
    let view = f.wait_resting(&undo_id).await;
    assert_eq!(view["status"], "successful", "{view}");
    assert!(view["counts"]["applied"].as_u64().unwrap() > 0, "{view}");

    // A finished job cannot be approved.
    let late = f.post_json(&f.rec(&job, "/approve"), &second, "").await;
    assert!(late.graph_error(409).contains("not awaiting approval"));
    f.stop().await;
}

/// Soft-deletes a user through the simulator's Graph.
async fn delete_user(sim: &str, id: &str) {
    let (sim, id) = (sim.to_owned(), id.to_owned());
    tokio::task::spawn_blocking(move || {
        super::graph_client(&sim)
            .expect("soft delete", "DELETE", &format!("/users/{id}"), None)
            .unwrap();
    })
    .await
    .unwrap();
}
