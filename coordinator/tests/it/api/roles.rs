//! Every route × every role in ONE table: allowed (its status) or 403; 404 on a tenant outside
//! the token's list; 401 without a token, with a bad, an expired or a revoked one.

use std::time::Duration;

use rewind_coordinator::state::{NewToken, Role, TenantScope};

use super::{call, Fixture, TENANT};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Reader,
    Admin,
    Operator,
    NoToken,
    Bad,
    Expired,
    Revoked,
}
use Who::*;

const P: &str = "/tenants/{t}/v1.0/directory/recovery";
const PO: &str = "/tenants/{o}/v1.0/directory/recovery";

const TENANT_BODY: &str = r#"{"name":"acme","graphBaseUrl":"http://127.0.0.1:9/acme/v1.0","tokenUrl":"http://127.0.0.1:9/t","clientId":"c","clientSecret":"s"}"#;
const CREDENTIALS: &str = r#"{"clientId":"app-acme","clientSecret":"secret-acme"}"#;
const APP: &str = r#"{"clientId":"app-2","clientSecret":"secret-2"}"#;
const DRY_RUN: &str = r#"{"dryRun":true}"#;
const TOKEN_BODY: &str = r#"{"name":"ci","role":"reader","tenants":["acme"],"expiresInDays":3}"#;

/// (method, path, body, who, status). `{t}` the tenant, `{o}` a tenant outside the tokens'
/// lists, `{b}` the backup, `{r}` the report, `{c}` a finished dry-run recovery, `{spare}` a
/// token to revoke. A row answered 202 that starts a job waits for the job before the next row.
#[rustfmt::skip]
const TABLE: &[(&str, &str, &str, Who, u16)] = &[
    ("GET", "{P}/snapshots", "", Reader, 200),
    ("GET", "{P}/snapshots", "", Admin, 200),
    ("GET", "{P}/snapshots", "", Operator, 403),
    ("GET", "{P}/snapshots/{b}", "", Reader, 200),
    ("GET", "{P}/snapshots/{b}", "", Admin, 200),
    ("GET", "{P}/snapshots/{b}", "", Operator, 403),
    ("POST", "{P}/snapshots", "", Reader, 403),
    ("POST", "{P}/snapshots", "", Operator, 403),
    ("POST", "{P}/snapshots", "", Admin, 202),
    ("GET", "{P}/snapshots/{b}/recoveryPreviewJobs", "", Reader, 200),
    ("GET", "{P}/snapshots/{b}/recoveryPreviewJobs", "", Admin, 200),
    ("GET", "{P}/snapshots/{b}/recoveryPreviewJobs", "", Operator, 403),
    ("POST", "{P}/snapshots/{b}/recoveryPreviewJobs", "{}", Reader, 403),
    ("POST", "{P}/snapshots/{b}/recoveryPreviewJobs", "{}", Operator, 403),
    ("POST", "{P}/snapshots/{b}/recoveryPreviewJobs", "{}", Admin, 202),
    ("GET", "{P}/snapshots/{b}/recoveryPreviewJobs/{r}", "", Reader, 200),
    ("GET", "{P}/snapshots/{b}/recoveryPreviewJobs/{r}", "", Admin, 200),
    ("GET", "{P}/snapshots/{b}/recoveryPreviewJobs/{r}", "", Operator, 403),
    ("GET", "{P}/snapshots/{b}/recoveryPreviewJobs/{r}/getChanges", "", Reader, 200),
    ("GET", "{P}/snapshots/{b}/recoveryPreviewJobs/{r}/getChanges", "", Admin, 200),
    ("GET", "{P}/snapshots/{b}/recoveryPreviewJobs/{r}/getChanges", "", Operator, 403),
    ("GET", "{P}/snapshots/{b}/recoveryPreviewJobs/{r}/microsoft.graph.entraRecoveryServices.getChanges", "", Reader, 200),
    ("GET", "{P}/snapshots/{b}/recoveryPreviewJobs/{r}/microsoft.graph.entraRecoveryServices.getChanges", "", Admin, 200),
    ("GET", "{P}/snapshots/{b}/recoveryPreviewJobs/{r}/microsoft.graph.entraRecoveryServices.getChanges", "", Operator, 403),
    ("GET", "{P}/snapshots/{b}/recoveryJobs", "", Reader, 200),
    ("GET", "{P}/snapshots/{b}/recoveryJobs", "", Admin, 200),
    ("GET", "{P}/snapshots/{b}/recoveryJobs", "", Operator, 403),
    ("POST", "{P}/snapshots/{b}/recoveryJobs", DRY_RUN, Reader, 403),
    ("POST", "{P}/snapshots/{b}/recoveryJobs", DRY_RUN, Operator, 403),
    ("POST", "{P}/snapshots/{b}/recoveryJobs", DRY_RUN, Admin, 202),
    ("GET", "{P}/snapshots/{b}/recoveryJobs/{c}", "", Reader, 200),
    ("GET", "{P}/snapshots/{b}/recoveryJobs/{c}", "", Admin, 200),
    ("GET", "{P}/snapshots/{b}/recoveryJobs/{c}", "", Operator, 403),
    ("GET", "{P}/snapshots/{b}/recoveryJobs/{c}/getFailedChanges", "", Reader, 200),
    ("GET", "{P}/snapshots/{b}/recoveryJobs/{c}/getFailedChanges", "", Admin, 200),
    ("GET", "{P}/snapshots/{b}/recoveryJobs/{c}/getFailedChanges", "", Operator, 403),
    ("GET", "{P}/snapshots/{b}/recoveryJobs/{c}/microsoft.graph.entraRecoveryServices.getFailedChanges", "", Reader, 200),
    ("GET", "{P}/snapshots/{b}/recoveryJobs/{c}/microsoft.graph.entraRecoveryServices.getFailedChanges", "", Operator, 403),
    // A report is not a recovery job.
    ("GET", "{P}/snapshots/{b}/recoveryJobs/{r}", "", Reader, 404),
    ("GET", "{P}/jobs/{c}", "", Reader, 200),
    ("GET", "{P}/jobs/{c}", "", Operator, 403),
    ("GET", "{P}/jobs", "", Reader, 200),
    ("GET", "{P}/jobs", "", Admin, 200),
    ("GET", "{P}/jobs", "", Operator, 403),
    ("GET", "{P}/jobs/{r}", "", Reader, 200),
    ("GET", "{P}/jobs/{r}", "", Admin, 200),
    ("GET", "{P}/jobs/{r}", "", Operator, 403),
    // The report is finished: cancelling it is allowed, and a conflict.
    ("POST", "{P}/jobs/{r}/cancel", "", Reader, 403),
    ("POST", "{P}/jobs/{r}/cancel", "", Admin, 409),
    ("POST", "{P}/jobs/{r}/cancel", "", Operator, 403),
    ("POST", "{P}/jobs/{r}/microsoft.graph.entraRecoveryServices.cancel", "", Reader, 403),
    ("POST", "{P}/jobs/{r}/microsoft.graph.entraRecoveryServices.cancel", "", Admin, 409),
    ("POST", "{P}/jobs/{r}/microsoft.graph.entraRecoveryServices.cancel", "", Operator, 403),
    ("GET", "/tenants/{t}/rewind/jobs", "", Reader, 200),
    ("GET", "/tenants/{t}/rewind/jobs", "", Admin, 200),
    ("GET", "/tenants/{t}/rewind/jobs", "", Operator, 403),
    ("GET", "/tenants/{t}/rewind/jobs/{r}", "", Reader, 200),
    ("GET", "/tenants/{t}/rewind/jobs/{r}", "", Admin, 200),
    ("GET", "/tenants/{t}/rewind/jobs/{r}", "", Operator, 403),
    ("GET", "/tenants/{t}/rewind/reports/{r}/export?format=csv", "", Reader, 200),
    ("GET", "/tenants/{t}/rewind/reports/{r}/export?format=csv", "", Admin, 200),
    ("GET", "/tenants/{t}/rewind/reports/{r}/export?format=csv", "", Operator, 403),
    ("GET", "/tenants/{t}/rewind/reports/{r}/export?format=jsonl", "", Reader, 200),
    ("GET", "/tenants/{t}/rewind/reports/{r}/export?format=jsonl", "", Admin, 200),
    ("GET", "/tenants/{t}/rewind/reports/{r}/export?format=jsonl", "", Operator, 403),
    ("GET", "/tenants/{t}/rewind/recoveries/{c}/actions", "", Reader, 200),
    ("GET", "/tenants/{t}/rewind/recoveries/{c}/actions", "", Admin, 200),
    ("GET", "/tenants/{t}/rewind/recoveries/{c}/actions", "", Operator, 403),
    ("GET", "/tenants/{t}/rewind/recoveries/{c}/actions/export?format=csv", "", Reader, 200),
    ("GET", "/tenants/{t}/rewind/recoveries/{c}/actions/export?format=jsonl", "", Admin, 200),
    ("GET", "/tenants/{t}/rewind/recoveries/{c}/actions/export?format=csv", "", Operator, 403),
    ("GET", "/tenants/{t}/rewind/recoveries/{c}/calls", "", Reader, 200),
    ("GET", "/tenants/{t}/rewind/recoveries/{c}/calls", "", Admin, 200),
    ("GET", "/tenants/{t}/rewind/recoveries/{c}/calls", "", Operator, 403),
    // The dry run is finished: approving or rejecting it is allowed, and a conflict.
    ("POST", "/tenants/{t}/rewind/recoveries/{c}/approve", "", Reader, 403),
    ("POST", "/tenants/{t}/rewind/recoveries/{c}/approve", "", Admin, 409),
    ("POST", "/tenants/{t}/rewind/recoveries/{c}/approve", "", Operator, 403),
    ("POST", "/tenants/{t}/rewind/recoveries/{c}/reject", "", Reader, 403),
    ("POST", "/tenants/{t}/rewind/recoveries/{c}/reject", "", Admin, 409),
    ("POST", "/tenants/{t}/rewind/recoveries/{c}/reject", "", Operator, 403),
    // A dry run applied nothing: undoing it is allowed, and a conflict.
    ("POST", "/tenants/{t}/rewind/recoveries/{c}/undo", "", Reader, 403),
    ("POST", "/tenants/{t}/rewind/recoveries/{c}/undo", "", Admin, 409),
    ("POST", "/tenants/{t}/rewind/recoveries/{c}/undo", "", Operator, 403),
    ("GET", "/admin/tenants", "", Reader, 403),
    ("GET", "/admin/tenants", "", Admin, 403),
    ("GET", "/admin/tenants", "", Operator, 200),
    ("POST", "/admin/tenants", TENANT_BODY, Reader, 403),
    ("POST", "/admin/tenants", TENANT_BODY, Admin, 403),
    ("POST", "/admin/tenants", TENANT_BODY, Operator, 409),
    ("GET", "/admin/tenants/{t}", "", Reader, 403),
    ("GET", "/admin/tenants/{t}", "", Admin, 403),
    ("GET", "/admin/tenants/{t}", "", Operator, 200),
    ("PATCH", "/admin/tenants/{t}", r#"{"retention":5}"#, Reader, 403),
    ("PATCH", "/admin/tenants/{t}", r#"{"retention":5}"#, Admin, 403),
    ("PATCH", "/admin/tenants/{t}", r#"{"retention":5}"#, Operator, 200),
    ("PUT", "/admin/tenants/{t}/credentials", CREDENTIALS, Reader, 403),
    ("PUT", "/admin/tenants/{t}/credentials", CREDENTIALS, Admin, 403),
    ("PUT", "/admin/tenants/{t}/credentials", CREDENTIALS, Operator, 204),
    ("POST", "/admin/tenants/{t}/apps", APP, Reader, 403),
    ("POST", "/admin/tenants/{t}/apps", APP, Admin, 403),
    ("POST", "/admin/tenants/{t}/apps", APP, Operator, 201),
    ("POST", "/admin/tenants/{t}/apps", APP, Operator, 409),
    ("POST", "/admin/tenants/{t}/apps", CREDENTIALS, Operator, 409),
    ("POST", "/admin/tenants/{t}/apps", r#"{"clientId":"app-3"}"#, Operator, 400),
    ("POST", "/admin/tenants/{o}/apps", APP, Operator, 404),
    ("DELETE", "/admin/tenants/{t}/apps/app-2", "", Reader, 403),
    ("DELETE", "/admin/tenants/{t}/apps/app-2", "", Admin, 403),
    ("DELETE", "/admin/tenants/{t}/apps/app-2", "", Operator, 204),
    ("DELETE", "/admin/tenants/{t}/apps/app-2", "", Operator, 404),
    ("DELETE", "/admin/tenants/{t}/apps/app-acme", "", Operator, 400),
    ("PATCH", "/admin/tenants/{t}", r#"{"tenantWriteBudget":0}"#, Operator, 400),
    ("GET", "/admin/tokens", "", Reader, 403),
    ("GET", "/admin/tokens", "", Admin, 403),
    ("GET", "/admin/tokens", "", Operator, 200),
    ("POST", "/admin/tokens", TOKEN_BODY, Reader, 403),
    ("POST", "/admin/tokens", TOKEN_BODY, Admin, 403),
    ("POST", "/admin/tokens", TOKEN_BODY, Operator, 201),
    ("DELETE", "/admin/tokens/{spare}", "", Reader, 403),
    ("DELETE", "/admin/tokens/{spare}", "", Admin, 403),
    ("DELETE", "/admin/tokens/{spare}", "", Operator, 204),
    ("GET", "/admin/audit", "", Reader, 403),
    ("GET", "/admin/audit", "", Admin, 403),
    // The log spans every tenant: an operator of some tenants only may not read it.
    ("GET", "/admin/audit", "", Operator, 403),
    // A tenant outside the token's list does not exist for it.
    ("GET", "{PO}/snapshots", "", Reader, 404),
    ("GET", "{PO}/snapshots", "", Admin, 404),
    ("GET", "{PO}/snapshots", "", Operator, 404),
    ("POST", "{PO}/snapshots", "", Admin, 404),
    ("GET", "{PO}/jobs", "", Reader, 404),
    ("GET", "/tenants/{o}/rewind/jobs", "", Reader, 404),
    ("GET", "/tenants/{o}/rewind/jobs", "", Admin, 404),
    ("GET", "/tenants/{o}/rewind/jobs", "", Operator, 404),
    ("GET", "/admin/tenants/{o}", "", Operator, 404),
    ("DELETE", "/admin/tenants/{o}", "", Operator, 404),
    // No token, a bad one, an expired one, a revoked one.
    ("GET", "{P}/snapshots", "", NoToken, 401),
    ("GET", "{P}/snapshots", "", Bad, 401),
    ("GET", "{P}/snapshots", "", Expired, 401),
    ("GET", "{P}/snapshots", "", Revoked, 401),
    ("POST", "{P}/snapshots", "", Expired, 401),
    ("POST", "{P}/snapshots", "", Revoked, 401),
    ("GET", "/tenants/{t}/rewind/jobs", "", NoToken, 401),
    ("GET", "/admin/tokens", "", NoToken, 401),
    ("GET", "/admin/tokens", "", Expired, 401),
    ("GET", "/admin/tokens", "", Revoked, 401),
    ("GET", "/admin/audit", "", NoToken, 401),
    // Operations need no token.
    ("GET", "/healthz", "", NoToken, 200),
    ("GET", "/readyz", "", NoToken, 200),
    ("GET", "/metrics", "", NoToken, 200),
    // Last: the tenant goes.
    ("DELETE", "/admin/tenants/{t}", "", Reader, 403),
    ("DELETE", "/admin/tenants/{t}", "", Admin, 403),
    ("DELETE", "/admin/tenants/{t}", "", Operator, 204),
    ("GET", "{P}/snapshots", "", Reader, 404),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_and_role_gets_its_status() {
    let f = Fixture::start().await;
    let state = f.coordinator.engine().state().clone();
    let token = |role, expires_at| {
        let state = state.clone();
        async move {
            state
                .create_token(NewToken {
                    name: "extra".into(),
                    role,
                    tenants: TenantScope::Only(vec![TENANT.to_owned()]),
                    expires_at,
                })
                .await
                .unwrap()
        }
    };
    let now = rewind_coordinator::state::unix_now();
    let (_, expired) = token(Role::Administrator, Some(now + 1)).await;
    let (revoked_record, revoked) = token(Role::Operator, None).await;
    state.revoke_token(&revoked_record.id).await.unwrap();
    let (spare, _) = token(Role::Reader, None).await;
    // The expired token's second passes.
    while rewind_coordinator::state::unix_now() <= now + 1 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dry = f
        .coordinator
        .engine()
        .start_recovery_by(
            &rewind_coordinator::state::Actor::Console,
            TENANT,
            &f.backup,
            rewind_common::report::Scope::All,
            None,
            true,
            None,
        )
        .await
        .unwrap();
    f.wait(&format!("/tenants/{TENANT}/rewind/jobs/{}", dry.id))
        .await;
    let bad = format!("rwd_{}", "A".repeat(43));
    let mut failures = Vec::new();
    for (method, path, body, who, want) in TABLE {
        let path = path
            .replace("{PO}", PO)
            .replace("{P}", P)
            .replace("{t}", TENANT)
            .replace("{o}", super::OTHER)
            .replace("{b}", &f.backup)
            .replace("{r}", &f.report)
            .replace("{c}", &dry.id)
            .replace("{spare}", &spare.id);
        let token = match who {
            Reader => Some(f.reader.as_str()),
            Admin => Some(f.admin.as_str()),
            Operator => Some(f.operator.as_str()),
            NoToken => None,
            Bad => Some(bad.as_str()),
            Expired => Some(expired.as_str()),
            Revoked => Some(revoked.as_str()),
        };
        let body = (!body.is_empty() || *method != "GET").then(|| body.to_string());
        let answer = call(&f.base, method, &path, token, body, &[]).await;
        if answer.status != *want {
            failures.push(format!(
                "{method} {path} as {who:?}: {} (want {want}): {}",
                answer.status, answer.text
            ));
            continue;
        }
        if *want >= 400 {
            answer.graph_error(*want);
        }
        if *want == 401 {
            assert_eq!(answer.header("www-authenticate"), Some("Bearer"), "{path}");
        }
        if *want == 202 && *method == "POST" && !path.contains("cancel") {
            let id = answer.json()["id"].as_str().unwrap().to_owned();
            f.wait(&format!("/tenants/{TENANT}/rewind/jobs/{id}")).await;
        }
    }
    assert!(
        failures.is_empty(),
        "{} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    f.stop().await;
}
