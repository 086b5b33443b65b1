//! `/admin`: a tenant added, read (never its secret), changed and removed; a token created
//! through the API works at once and stops working the moment it is revoked.

use rewind_coordinator::state::{NewToken, Role, TenantScope};
use serde_json::json;

use super::{call, Fixture};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_and_tokens_are_administered_through_the_api() {
    let f = Fixture::start().await;
    let (_, root) = f
        .coordinator
        .engine()
        .state()
        .create_token(NewToken {
            name: "root".into(),
            role: Role::Operator,
            tenants: TenantScope::All,
            expires_at: None,
        })
        .await
        .unwrap();
    let sim = f.sim.base_url().to_owned();
    let body = json!({
        "name": "initech",
        "graphBaseUrl": format!("{sim}/initech/v1.0"),
        "tokenUrl": format!("{sim}/initech/oauth2/v2.0/token"),
        "clientId": "app-initech",
        "clientSecret": "very-secret-value",
        "schedule": {"kind": "off"},
        "shardBits": 2,
    });
    let added = f
        .post_json("/admin/tenants", &root, &body.to_string())
        .await;
    assert_eq!(added.status, 201, "{}", added.text);
    assert!(!added.text.contains("very-secret-value"));
    assert_eq!(added.json()["schedule"], json!({"kind": "off"}));
    assert_eq!(added.json()["shardBits"], 2);

    let patch = |body: serde_json::Value| {
        let base = f.base.clone();
        let root = root.clone();
        async move {
            call(
                &base,
                "PATCH",
                "/admin/tenants/initech",
                Some(&root),
                Some(body.to_string()),
                &[],
            )
            .await
        }
    };
    let changed =
        patch(json!({"schedule": {"kind": "daily", "atUtc": "03:30"}, "retention": 3})).await;
    assert_eq!(changed.status, 200, "{}", changed.text);
    assert_eq!(
        changed.json()["schedule"],
        json!({"kind": "daily", "atUtc": "03:30"})
    );
    assert_eq!(changed.json()["retention"], 3);
    for (bad, needle) in [
        (
            json!({"schedule": {"kind": "daily", "atUtc": "25:00"}}),
            "atUtc",
        ),
        (json!({"retention": 0}), "retention"),
        (json!({"shardBits": 3}), "shardBits"),
        (json!({"graphBaseUrl": "ftp://x"}), "graphBaseUrl"),
    ] {
        let answer = patch(bad.clone()).await;
        let message = answer.graph_error(400);
        assert!(message.contains(needle), "{bad}: {message}");
    }
    let listed = f.get("/admin/tenants", &root).await;
    let names: Vec<String> = listed.json()["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(names.contains(&"initech".to_owned()), "{names:?}");
    assert!(!listed.text.contains("very-secret-value"));
    // The operator limited to acme sees only acme.
    let limited = f.get("/admin/tenants", &f.operator).await;
    assert_eq!(limited.json()["value"].as_array().unwrap().len(), 1);

    let created = f
        .post_json(
            "/admin/tokens",
            &root,
            &json!({"name": "script", "role": "reader", "tenants": ["initech"], "expiresInDays": 1})
                .to_string(),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let token = created.json()["token"].as_str().unwrap().to_owned();
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let snapshots = "/tenants/initech/v1.0/directory/recovery/snapshots";
    let first = f.get(snapshots, &token).await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.json()["value"], json!([]));
    let tokens = f.get("/admin/tokens", &root).await;
    assert!(tokens.text.contains(&id) && !tokens.text.contains(&token));
    let revoked = call(
        &f.base,
        "DELETE",
        &format!("/admin/tokens/{id}"),
        Some(&root),
        None,
        &[],
    )
    .await;
    assert_eq!(revoked.status, 204);
    f.get(snapshots, &token).await.graph_error(401);
    let bad_token = f
        .post_json(
            "/admin/tokens",
            &root,
            r#"{"name": "x", "role": "owner", "tenants": ["*"]}"#,
        )
        .await;
    assert!(bad_token.graph_error(400).contains("owner"));

    let gone = call(
        &f.base,
        "DELETE",
        "/admin/tenants/initech",
        Some(&root),
        None,
        &[],
    )
    .await;
    assert_eq!(gone.status, 204);
    f.get("/admin/tenants/initech", &root)
        .await
        .graph_error(404);
    audit_names_the_tokens(&f, &root).await;
    f.stop().await;
}

/// The audit log, read through `GET /admin/audit` page by page: the fixture's backup and
/// report were started through the API by the token named `Administrator`, their status
/// changes are the coordinator's, and root's tenant and token administration names root.
async fn audit_names_the_tokens(f: &Fixture, root: &str) {
    let mut records: Vec<serde_json::Value> = Vec::new();
    let mut next = Some("/admin/audit?top=7".to_owned());
    while let Some(path) = next {
        let page = f.get(&path, root).await;
        assert_eq!(page.status, 200, "{}", page.text);
        let body = page.json();
        records.extend(body["value"].as_array().unwrap().iter().cloned());
        next = body["nextLink"].as_str().map(str::to_owned);
    }
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["seq"], json!(i + 1), "{r}");
        assert!(r["dateTime"].is_string(), "{r}");
    }
    for pair in records.windows(2) {
        assert_eq!(pair[1]["prev"], pair[0]["hash"], "{}", pair[1]);
    }
    let find = |action: &str, kind: Option<&str>| -> Vec<&serde_json::Value> {
        records
            .iter()
            .filter(|r| r["action"] == action && kind.is_none_or(|k| r["details"]["kind"] == k))
            .collect()
    };
    for kind in ["backup", "report"] {
        let created = find("job.created", Some(kind));
        let by_admin: Vec<_> = created
            .iter()
            .filter(|r| r["actor"]["type"] == "token" && r["actor"]["name"] == "Administrator")
            .collect();
        assert!(
            !by_admin.is_empty(),
            "no {kind} job.created by the admin token in {records:?}"
        );
        let job = by_admin[0]["subject"]["job"].as_str().unwrap();
        assert_eq!(by_admin[0]["subject"]["tenant"], super::TENANT);
        if kind == "report" {
            assert_eq!(job, f.report);
        }
        let statuses: Vec<&serde_json::Value> = records
            .iter()
            .filter(|r| r["action"] == "job.status" && r["subject"]["job"] == job)
            .collect();
        assert_eq!(
            statuses.last().unwrap()["details"]["to"],
            "successful",
            "{statuses:?}"
        );
        assert!(statuses
            .iter()
            .all(|r| r["actor"] == json!({"type": "coordinator"})));
    }
    for (action, subject) in [
        ("tenant.added", "initech"),
        ("tenant.updated", "initech"),
        ("tenant.removed", "initech"),
    ] {
        let hit: Vec<_> = find(action, None)
            .into_iter()
            .filter(|r| r["subject"]["tenant"] == subject)
            .collect();
        assert_eq!(hit.len(), 1, "{action}: {hit:?}");
        assert_eq!(hit[0]["actor"]["name"], "root", "{}", hit[0]);
    }
    let made = find("token.created", None);
    let script = made
        .iter()
        .find(|r| r["details"]["name"] == "script")
        .unwrap();
    assert_eq!(script["actor"]["name"], "root");
    let revoked = find("token.revoked", None);
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0]["subject"]["token"], script["subject"]["token"]);
    assert!(!records
        .iter()
        .any(|r| r.to_string().contains("very-secret-value")));
    let bad = f.get("/admin/audit?top=0", root).await;
    assert!(bad.graph_error(400).contains("top"));
}
