//! `getChanges` paged to the end returns every entry once, in a stable order, equal to the
//! JSON Lines export; `$skip` lands where the export says; the CSV export parses back with a
//! real CSV parser (names with quotes, commas and line breaks); the JSON fits Microsoft's
//! models; the `Prefer` rule for statuses and for grants and assignments.

use std::collections::BTreeSet;

use rewind_common::report::Scope;
use rewind_coordinator::state::{JobKind, JobStatus};
use serde_json::Value as Json;

use super::models::{check_change, check_job, check_snapshot, Collection, RecoveryStatus};
use super::{call, Fixture, TENANT, TRICKY_NAMES};

const PREFER: (&str, &str) = ("prefer", "include-unknown-enum-members");

/// Every change object of the report, following `@odata.nextLink` from `first`.
async fn all_pages(f: &Fixture, first: &str, headers: &[(&str, &str)]) -> (Vec<Json>, usize) {
    let mut out = Vec::new();
    let mut next = Some(first.to_owned());
    let mut pages = 0;
    while let Some(path) = next {
        let answer = call(&f.base, "GET", &path, Some(&f.reader), None, headers).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.text);
        let page: Collection<Json> = serde_json::from_str(&answer.text).unwrap();
        pages += 1;
        out.extend(page.value);
        next = page.next_link;
    }
    (out, pages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_exports_and_models_agree() {
    let f = Fixture::start().await;
    let previews = f.ms(&format!("/snapshots/{}/recoveryPreviewJobs", f.backup));
    let changes = format!("{previews}/{}/getChanges", f.report);

    // Snapshots and jobs fit Microsoft's models.
    let list = f.get(&f.ms("/snapshots"), &f.reader).await;
    let snapshots: Collection<Json> = serde_json::from_str(&list.text).unwrap();
    assert!(snapshots.context.contains("$metadata#"));
    let ids: Vec<String> = snapshots
        .value
        .iter()
        .map(|s| check_snapshot(s).id)
        .collect();
    assert!(ids.contains(&f.backup), "{ids:?}");
    let one = check_snapshot(
        &f.get(&f.ms(&format!("/snapshots/{}", f.backup)), &f.reader)
            .await
            .json(),
    );
    assert_eq!(one.id, f.backup);
    let job = check_job(
        &f.get(&format!("{previews}/{}", f.report), &f.reader)
            .await
            .json(),
    );
    assert_eq!(job.status, RecoveryStatus::Successful);
    assert!(job.filtering_criteria.is_none());
    assert!(job.target_state_date_time.is_some() && job.job_completion_date_time.is_some());
    let total = job.total_changed_objects_calculated.unwrap() as usize;
    assert!(total >= TRICKY_NAMES.len(), "{total}");
    let jobs: Collection<Json> =
        serde_json::from_str(&f.get(&f.ms("/jobs"), &f.reader).await.text).unwrap();
    assert_eq!(jobs.value.len(), 1, "backups are not Microsoft's jobs");
    check_job(&jobs.value[0]);

    // Paged to the end: every entry once, equal to the JSON Lines export, in its order.
    let (paged, pages) = all_pages(&f, &format!("{changes}?$top=7"), &[PREFER]).await;
    assert_eq!(paged.len(), total);
    assert_eq!(pages, total.div_ceil(7));
    let unique: BTreeSet<&str> = paged.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(unique.len(), total, "an entry came twice");
    let export = f
        .get(
            &format!(
                "/tenants/{TENANT}/rewind/reports/{}/export?format=jsonl",
                f.report
            ),
            &f.reader,
        )
        .await;
    assert_eq!(export.status, 200, "{}", export.text);
    assert_eq!(export.header("content-type"), Some("application/x-ndjson"));
    let lines: Vec<Json> = export
        .text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, paged);
    for change in &paged {
        check_change(change);
    }
    // The default page is 100; a second walk is the same.
    let (again, _) = all_pages(&f, &changes, &[PREFER]).await;
    assert_eq!(again, paged);

    // $skip lands where the export says, wherever it is.
    for skip in [0, 1, 6, 7, 13, total / 2, total - 1, total, total + 3] {
        let answer = call(
            &f.base,
            "GET",
            &format!("{changes}?$top=5&$skip={skip}"),
            Some(&f.reader),
            None,
            &[PREFER],
        )
        .await;
        let page: Collection<Json> = serde_json::from_str(&answer.text).unwrap();
        let want: Vec<Json> = lines.iter().skip(skip).take(5).cloned().collect();
        assert_eq!(page.value, want, "$skip={skip}");
        assert_eq!(page.next_link.is_some(), skip + 5 < total, "$skip={skip}");
    }

    // Without the Prefer header, grants and assignments are left out, and nothing else is.
    let (plain, _) = all_pages(&f, &format!("{changes}?$top=50"), &[]).await;
    assert_eq!(plain.len(), total);
    let newer = |c: &Json| {
        c["deltaFromCurrent"]
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k == "oauth2PermissionGrants@delta" || k == "appRoleAssignedTo@delta")
    };
    assert!(!plain.iter().any(newer));
    assert!(
        paged.iter().any(newer),
        "the incident changed no grant or assignment"
    );
    for (a, b) in plain.iter().zip(&paged) {
        assert_eq!(a["id"], b["id"]);
    }

    // $filter on displayName.
    for name in TRICKY_NAMES {
        let literal = name.replace('\'', "''");
        let filter = format!("displayName eq '{literal}'");
        let query = serde_urlencoded::to_string([("$filter", filter.as_str())]).unwrap();
        let (hits, _) = all_pages(&f, &format!("{changes}?{query}"), &[PREFER]).await;
        assert_eq!(hits.len(), 1, "{name:?}");
        assert_eq!(hits[0]["displayName"], *name);
    }
    let query =
        serde_urlencoded::to_string([("$filter", "startswith(displayName,'comma, ')")]).unwrap();
    let (hits, _) = all_pages(&f, &format!("{changes}?{query}&$top=1"), &[PREFER]).await;
    assert_eq!(hits.len(), 1);
    let query =
        serde_urlencoded::to_string([("$filter", "displayName ne 'quote \" inside'")]).unwrap();
    let (rest, _) = all_pages(&f, &format!("{changes}?{query}&$top=9"), &[PREFER]).await;
    assert_eq!(rest.len(), total - 1);

    // The CSV export parses back: one row per changed attribute or link (one for neither), in
    // the entries' order, with the tricky names intact.
    let csv_answer = f
        .get(
            &format!(
                "/tenants/{TENANT}/rewind/reports/{}/export?format=csv",
                f.report
            ),
            &f.reader,
        )
        .await;
    assert_eq!(csv_answer.status, 200);
    let mut reader = csv::Reader::from_reader(csv_answer.text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        header,
        [
            "id",
            "entityType",
            "displayName",
            "recoveryAction",
            "notRecoverableReason",
            "changeKind",
            "name",
            "currentValue",
            "backupValue"
        ]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let mut at = 0;
    for change in &lines {
        let delta = change["deltaFromCurrent"].as_object().unwrap();
        let links: usize = delta
            .iter()
            .filter(|(k, _)| k.ends_with("@delta"))
            .map(|(_, v)| v.as_array().unwrap().len())
            .sum();
        let attributes = delta.keys().filter(|k| !k.contains('@')).count();
        let n = (links + attributes).max(1);
        for row in &rows[at..at + n] {
            assert_eq!(&row[0], change["id"].as_str().unwrap());
            assert_eq!(&row[2], change["displayName"].as_str().unwrap());
        }
        at += n;
    }
    assert_eq!(at, rows.len());
    let names: BTreeSet<&str> = rows.iter().map(|r| r.get(2).unwrap()).collect();
    for name in TRICKY_NAMES {
        assert!(names.contains(name), "{name:?} not in the CSV");
    }

    // Jobs: $filter and $top.
    for (query, want) in [
        ("$filter=status%20eq%20'successful'", 1),
        ("$filter=status%20ne%20'successful'", 0),
        (&*format!("$filter=id%20eq%20'{}'", f.report), 1),
        (
            &*format!(
                "$filter=targetStateDateTime%20eq%20{}",
                one.created_date_time
            ),
            1,
        ),
        ("$top=1", 1),
    ] {
        let answer = f
            .get(&format!("{}?{query}", f.ms("/jobs")), &f.reader)
            .await;
        let jobs: Collection<Json> = serde_json::from_str(&answer.text).unwrap();
        assert_eq!(jobs.value.len(), want, "{query}: {}", answer.text);
    }

    // A job loading data: `loadingData` only with the Prefer header.
    let state = f.coordinator.engine().state().clone();
    let open = state
        .create_job(
            TENANT,
            JobKind::Report {
                backup: f.backup.clone(),
                scope: Scope::All,
            },
        )
        .await
        .unwrap();
    state
        .transition(&open.id, JobStatus::LoadingData, |_| {})
        .await
        .unwrap();
    let path = f.ms(&format!("/jobs/{}", open.id));
    let plain = check_job(&f.get(&path, &f.reader).await.json());
    assert_eq!(plain.status, RecoveryStatus::UnknownFutureValue);
    assert!(plain.total_changed_objects_calculated.is_none());
    let answer = call(&f.base, "GET", &path, Some(&f.reader), None, &[PREFER]).await;
    assert_eq!(
        check_job(&answer.json()).status,
        RecoveryStatus::LoadingData
    );
    f.engine_cancel(&open.id).await;

    // A report with filteringCriteria keeps it, and it reads back in Microsoft's shape.
    let body = serde_json::json!({"filteringCriteria": {
        "@odata.type": "#microsoft.graph.entraRecoveryServices.recoveryJobEntityNamesFilter",
        "entityTypes": ["user", "namedLocationPolicy"],
    }})
    .to_string();
    let started = f.post_json(&previews, &f.admin, &body).await;
    assert_eq!(started.status, 202, "{}", started.text);
    let job = check_job(&started.json());
    assert!(matches!(
        job.filtering_criteria,
        Some(super::models::FilteringCriteria::Names { ref entity_types }) if entity_types.len() == 2
    ));
    let location = started.header("location").unwrap().to_owned();
    assert!(location.ends_with(&job.id), "{location}");
    f.wait(&format!("/tenants/{TENANT}/rewind/jobs/{}", job.id))
        .await;
    let (scoped, _) = all_pages(
        &f,
        &format!("{previews}/{}/getChanges?$top=999", job.id),
        &[PREFER],
    )
    .await;
    assert!(scoped
        .iter()
        .all(|c| c["entityTypeName"] == "user" || c["entityTypeName"] == "namedLocationPolicy"));

    // The requests so far are counted by route and status.
    let metrics = call(&f.base, "GET", "/metrics", None, None, &[]).await;
    assert_eq!(metrics.status, 200);
    let line = metrics
        .text
        .lines()
        .find(|l| {
            l.starts_with("rewind_api_requests_total")
                && l.contains("code=\"200\"")
                && l.contains("getChanges")
        })
        .unwrap_or_else(|| panic!("no getChanges count in {}", metrics.text));
    let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= pages as f64, "{line}");
    assert!(metrics.text.contains("rewind_api_request_seconds_bucket"));
    f.stop().await;
}

impl Fixture {
    async fn engine_cancel(&self, id: &str) {
        self.coordinator.engine().cancel(id).await.unwrap();
    }
}
