//! Bad input, each answered in Graph's error shape with its status, code and a message that
//! names the problem.

use rewind_common::report::Scope;
use rewind_coordinator::state::JobKind;
use serde_json::json;

use super::{call, Fixture};

const NAMES: &str = "#microsoft.graph.entraRecoveryServices.recoveryJobEntityNamesFilter";
const IDS: &str = "#microsoft.graph.entraRecoveryServices.recoveryJobEntityNameAndIdsFilter";

/// (method, path, body, status, code, a part of the message)
type Row<'a> = (&'a str, String, Option<String>, u16, &'a str, &'a str);

fn criteria(c: serde_json::Value) -> String {
    json!({ "filteringCriteria": c }).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_graph_errors_that_name_the_problem() {
    let f = Fixture::start().await;
    let previews = f.ms(&format!("/snapshots/{}/recoveryPreviewJobs", f.backup));
    let changes = format!("{previews}/{}/getChanges", f.report);
    let guid = "11111111-2222-3333-4444-555555555555";
    let many: Vec<String> = (0..101)
        .map(|i| format!("00000000-0000-0000-0000-{i:012}"))
        .collect();
    let huge = format!(
        "{{\"filteringCriteria\": null, \"pad\": \"{}\"}}",
        "x".repeat(rewind_coordinator::api::BODY_LIMIT)
    );
    let table: Vec<Row> = vec![
        (
            "POST",
            previews.clone(),
            Some("{\"filteringCriteria\": ".into()),
            400,
            "badRequest",
            "malformed JSON",
        ),
        (
            "POST",
            previews.clone(),
            Some("[1,2]".into()),
            400,
            "badRequest",
            "JSON object",
        ),
        (
            "POST",
            previews.clone(),
            Some(criteria(json!({"@odata.type": "#microsoft.graph.nope"}))),
            400,
            "badRequest",
            "#microsoft.graph.nope",
        ),
        (
            "POST",
            previews.clone(),
            Some(criteria(
                json!({"@odata.type": NAMES, "entityTypes": ["device"]}),
            )),
            400,
            "badRequest",
            "\"device\"",
        ),
        (
            "POST",
            previews.clone(),
            Some(criteria(
                json!({"@odata.type": IDS, "filterValues": [{"entityType": "printer", "entityIds": [guid]}]}),
            )),
            400,
            "badRequest",
            "\"printer\"",
        ),
        (
            "POST",
            previews.clone(),
            Some(criteria(
                json!({"@odata.type": IDS, "filterValues": [{"entityType": "user", "entityIds": ["not-a-guid"]}]}),
            )),
            400,
            "badRequest",
            "not a GUID",
        ),
        (
            "POST",
            previews.clone(),
            Some(criteria(
                json!({"@odata.type": IDS, "filterValues": [{"entityType": "user", "entityIds": many}]}),
            )),
            400,
            "badRequest",
            "101",
        ),
        (
            "POST",
            previews.clone(),
            Some(json!({"filter": 1}).to_string()),
            400,
            "badRequest",
            "\"filter\"",
        ),
        (
            "POST",
            previews.clone(),
            Some(huge),
            413,
            "requestEntityTooLarge",
            "limit",
        ),
        (
            "GET",
            format!("{changes}?$top=1000"),
            None,
            400,
            "badRequest",
            "$top",
        ),
        (
            "GET",
            format!("{changes}?$top=0"),
            None,
            400,
            "badRequest",
            "$top",
        ),
        (
            "GET",
            format!("{changes}?$skip=-1"),
            None,
            400,
            "badRequest",
            "$skip",
        ),
        (
            "GET",
            format!("{changes}?$skiptoken=zz"),
            None,
            400,
            "badRequest",
            "page token",
        ),
        (
            "GET",
            format!("{changes}?$filter=mail%20eq%20'x'"),
            None,
            400,
            "badRequest",
            "mail",
        ),
        (
            "GET",
            format!("{changes}?$orderby=id"),
            None,
            400,
            "badRequest",
            "$orderby",
        ),
        (
            "GET",
            f.ms("/snapshots/no-such-backup"),
            None,
            404,
            "itemNotFound",
            "no-such-backup",
        ),
        (
            "POST",
            f.ms("/snapshots/no-such-backup/recoveryPreviewJobs"),
            Some("{}".into()),
            404,
            "itemNotFound",
            "valid timestamp",
        ),
        (
            "GET",
            format!("{previews}/no-such-job"),
            None,
            404,
            "itemNotFound",
            "no-such-job",
        ),
        (
            "GET",
            format!("{previews}/no-such-job/getChanges"),
            None,
            404,
            "itemNotFound",
            "no-such-job",
        ),
        (
            "GET",
            f.ms("/jobs/no-such-job"),
            None,
            404,
            "itemNotFound",
            "no-such-job",
        ),
        (
            "GET",
            f.ms("/jobs?$filter=kind%20eq%20'x'"),
            None,
            400,
            "badRequest",
            "kind",
        ),
        (
            "GET",
            f.ms("/jobs?$top=abc"),
            None,
            400,
            "badRequest",
            "$top",
        ),
        (
            "GET",
            format!(
                "/tenants/{}/rewind/reports/{}/export?format=xml",
                super::TENANT,
                f.report
            ),
            None,
            400,
            "badRequest",
            "csv or jsonl",
        ),
        (
            "GET",
            "/no/such/route".into(),
            None,
            404,
            "ResourceNotFound",
            "/no/such/route",
        ),
        (
            "GET",
            "/tenants/%FF/rewind/jobs".into(),
            None,
            400,
            "badRequest",
            "UTF-8",
        ),
        (
            "DELETE",
            f.ms("/snapshots"),
            None,
            405,
            "methodNotAllowed",
            "DELETE",
        ),
    ];
    let mut failures = Vec::new();
    for (method, path, body, status, code, needle) in &table {
        let answer = call(&f.base, method, path, Some(&f.admin), body.clone(), &[]).await;
        if answer.status != *status {
            failures.push(format!(
                "{method} {path}: {} (want {status}): {}",
                answer.status, answer.text
            ));
            continue;
        }
        let message = answer.graph_error(*status);
        let got = answer.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if got != *code || !message.contains(needle) {
            failures.push(format!(
                "{method} {path}: {got} {message:?} (want {code}, {needle:?})"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let text = call(
        &f.base,
        "POST",
        &previews,
        Some(&f.admin),
        Some("filteringCriteria=x".into()),
        &[("content-type", "text/plain")],
    )
    .await;
    text.graph_error(415);

    // A job that is open (created in the state, never dispatched): getChanges is refused
    // until it succeeds, a second job is a conflict, and cancel abandons it.
    let state = f.coordinator.engine().state().clone();
    let open = state
        .create_job(
            super::TENANT,
            JobKind::Report {
                backup: f.backup.clone(),
                scope: Scope::All,
            },
        )
        .await
        .unwrap();
    let early = f
        .get(&format!("{previews}/{}/getChanges", open.id), &f.reader)
        .await;
    let message = early.graph_error(400);
    assert!(
        message.contains(&format!(
            "Job with identifier {} must have completed successfully",
            open.id
        )),
        "{message}"
    );
    let export = f
        .get(
            &format!(
                "/tenants/{}/rewind/reports/{}/export?format=csv",
                super::TENANT,
                open.id
            ),
            &f.reader,
        )
        .await;
    export.graph_error(400);
    for path in [previews.clone(), f.ms("/snapshots")] {
        let second = f.post_json(&path, &f.admin, "{}").await;
        let message = second.graph_error(409);
        assert!(
            message.contains("currently in progress") && message.contains(&open.id),
            "{message}"
        );
    }
    let cancel = f
        .post_json(&f.ms(&format!("/jobs/{}/cancel", open.id)), &f.admin, "")
        .await;
    assert_eq!(cancel.status, 202, "{}", cancel.text);
    assert_eq!(
        state.get_job(&open.id).unwrap().status.as_str(),
        "abandoned"
    );
    let again = f
        .post_json(&f.ms(&format!("/jobs/{}/cancel", open.id)), &f.admin, "")
        .await;
    again.graph_error(409);
    f.stop().await;
}
