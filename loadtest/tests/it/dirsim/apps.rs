//! Several app registrations per tenant: the apps admin route, tokens of each app with its own
//! secret only, the write log naming each write's app, per-app write maxima and the per-app
//! write limit, and the apps in the state file.

use std::io::Write as _;

use rewind_common::{DirectoryObject, ObjectId, ObjectType};
use rewind_loadtest::dirsim::{add_app, write_log, AddAppError, DirsimConfig, WriteRecord};
use serde_json::{json, Value as Json};

use super::support::{agent, id, sim_with_tenant, user, Client, Sim};

const PRIMARY: &str = "app-contoso";
const SECOND: &str = "app-two";
const THIRD: &str = "app-three";

/// Adds an app through the crate's client; panics with the refusal.
fn add(sim: &Sim, client_id: &str, secret: &str) {
    sim.block_on(add_app(&sim.base, "contoso", client_id, secret))
        .unwrap();
}

/// `contoso` with users 1..=4, and the apps `app-two` and `app-three` added.
fn sim_with_apps() -> Sim {
    let sim = sim_with_tenant();
    sim.load(
        "contoso",
        &[
            user(1, "Sales"),
            user(2, "IT"),
            user(3, "Ops"),
            user(4, "HR"),
        ],
    );
    add(&sim, SECOND, "secret-two");
    add(&sim, THIRD, "secret-three");
    sim
}

fn apps_of(summary: &Json) -> Vec<String> {
    summary["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

fn contoso_summary(sim: &Sim) -> Json {
    let r = sim.get("/_admin/tenants");
    assert_eq!(r.status, 200);
    r.body
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tenant"] == "contoso")
        .cloned()
        .unwrap()
}

fn city(n: u64) -> Json {
    json!({"city": format!("C{n}")})
}

/// `(client id, status)` of each record, for comparing with a table.
fn by_app(records: &[WriteRecord]) -> Vec<(String, u16)> {
    records
        .iter()
        .map(|r| (r.client_id.clone(), r.status))
        .collect()
}

fn row(client_id: &str, status: u16) -> (String, u16) {
    (client_id.to_owned(), status)
}

fn maxima(counters: &Json, app: Option<&str>) -> (u64, u64) {
    let tenant = &counters["tenants"]["contoso"];
    let m = match app {
        Some(a) => &tenant["apps"][a],
        None => tenant,
    };
    (
        m["maxWritesPerSecond"].as_u64().unwrap(),
        m["maxConditionalAccessWritesPerSecond"].as_u64().unwrap(),
    )
}

#[test]
fn two_apps_write_and_the_log_names_each_writes_app() {
    let sim = sim_with_apps();
    let summary = contoso_summary(&sim);
    assert_eq!(apps_of(&summary), [PRIMARY, SECOND, THIRD]);
    assert_eq!(
        summary["clientId"], PRIMARY,
        "the primary app stays the tenant's"
    );

    let primary = sim.client("contoso");
    let second = sim.client_as("contoso", SECOND, "secret-two");
    assert_eq!(
        primary.patch(&format!("/users/{}", id(1)), &city(1)).status,
        204
    );
    assert_eq!(
        second.patch(&format!("/users/{}", id(2)), &city(2)).status,
        204
    );
    let batch = second.post(
        "/$batch",
        &json!({"requests": [
            {"id": "a", "method": "PATCH", "url": format!("/users/{}", id(3)),
             "headers": {"Content-Type": "application/json"}, "body": city(3)},
            {"id": "b", "method": "PATCH", "url": format!("/users/{}", id(4)),
             "headers": {"Content-Type": "application/json"}, "body": city(4)},
        ]}),
    );
    assert_eq!(batch.status, 200, "{:?}", batch.body);
    assert_eq!(
        primary.delete(&format!("/users/{}", id(4))).status,
        204,
        "both apps' tokens stay valid side by side"
    );
    assert_eq!(
        second.get(&format!("/users/{}?$select=city", id(1))).body["city"],
        "C1",
        "both apps see one directory"
    );

    let records = write_log(&sim.base, "contoso", 0).unwrap();
    assert_eq!(
        by_app(&records),
        [
            row(PRIMARY, 204),
            row(SECOND, 204),
            row(SECOND, 204),
            row(SECOND, 204),
            row(PRIMARY, 204),
        ],
        "an inner request of a batch is the batch's app's"
    );
    let json_log = sim.get("/_admin/tenants/contoso/writes").body;
    assert_eq!(json_log["value"][1]["clientId"], SECOND);

    let counters = sim.counters();
    let (tenant, tenant_ca) = maxima(&counters, None);
    let (first, _) = maxima(&counters, Some(PRIMARY));
    let (two, two_ca) = maxima(&counters, Some(SECOND));
    // However the writes fell in time: each app wrote at least once and at most its own
    // count in a second; the tenant's maximum is at least each app's and at most their sum.
    assert!((1..=2).contains(&first), "{counters}");
    assert!((1..=3).contains(&two), "{counters}");
    assert!(
        tenant >= first.max(two) && tenant <= first + two,
        "{counters}"
    );
    assert_eq!((tenant_ca, two_ca), (0, 0));
    assert_eq!(
        maxima(&counters, Some(THIRD)),
        (0, 0),
        "an app that has not written"
    );

    let cleared = sim.delete("/_admin/tenants/contoso/writes");
    assert_eq!(cleared.status, 204);
    let counters = sim.counters();
    for app in [None, Some(PRIMARY), Some(SECOND), Some(THIRD)] {
        assert_eq!(maxima(&counters, app), (0, 0), "{app:?} after the clear");
    }
}

#[test]
fn conditional_access_writes_count_in_their_apps_maxima() {
    let sim = sim_with_apps();
    let third = sim.client_as("contoso", THIRD, "secret-three");
    let location = json!({"@odata.type": "#microsoft.graph.ipNamedLocation", "displayName": "HQ",
        "isTrusted": true, "ipRanges": [{"@odata.type": "#microsoft.graph.iPv4CidrRange", "cidrAddress": "10.0.0.0/8"}]});
    let r = third.post("/identity/conditionalAccess/namedLocations", &location);
    assert_eq!(r.status, 201, "{:?}", r.body);
    let counters = sim.counters();
    assert_eq!(maxima(&counters, Some(THIRD)), (1, 1));
    assert_eq!(maxima(&counters, None), (1, 1));
    assert_eq!(maxima(&counters, Some(PRIMARY)), (0, 0));
}

#[test]
fn the_apps_route_refuses_what_it_cannot_add() {
    let sim = sim_with_apps();
    // (tenant, body, status, a word the message holds)
    let cases: Vec<(&str, Json, u16, &str)> = vec![
        (
            "contoso",
            json!({"clientId": PRIMARY, "clientSecret": "s"}),
            409,
            PRIMARY,
        ),
        (
            "contoso",
            json!({"clientId": SECOND, "clientSecret": "other"}),
            409,
            SECOND,
        ),
        (
            "nowhere",
            json!({"clientId": "app-x", "clientSecret": "s"}),
            404,
            "nowhere",
        ),
        ("contoso", json!({"clientSecret": "s"}), 400, "clientId"),
        (
            "contoso",
            json!({"clientId": "", "clientSecret": "s"}),
            400,
            "clientId",
        ),
        (
            "contoso",
            json!({"clientId": 7, "clientSecret": "s"}),
            400,
            "clientId",
        ),
        ("contoso", json!({"clientId": "app-x"}), 400, "clientSecret"),
        (
            "contoso",
            json!({"clientId": "app-x", "clientSecret": ""}),
            400,
            "clientSecret",
        ),
        ("contoso", json!(["app-x", "s"]), 400, "JSON object"),
        ("contoso", json!("app-x"), 400, "JSON object"),
    ];
    for (tenant, body, status, word) in cases {
        let r = sim.post(&format!("/_admin/tenants/{tenant}/apps"), &body);
        assert_eq!(r.status, status, "{tenant} {body}: {:?}", r.body);
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(word), "{body}: {message}");
    }
    assert_eq!(
        apps_of(&contoso_summary(&sim)),
        [PRIMARY, SECOND, THIRD],
        "nothing refused was added"
    );
    assert_eq!(
        sim.token_request("contoso", SECOND, "other").status,
        401,
        "the refused duplicate did not replace the secret"
    );

    match sim.block_on(add_app(&sim.base, "contoso", SECOND, "s")) {
        Err(AddAppError::Refused { status, .. }) => assert_eq!(status, 409),
        other => panic!("expected a 409 refusal, got {other:?}"),
    }
    let created = sim.post(
        "/_admin/tenants/contoso/apps",
        &json!({"clientId": "app-four", "clientSecret": "s4"}),
    );
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(
        apps_of(&created.body),
        [PRIMARY, SECOND, THIRD, "app-four"],
        "the answer is the tenant's summary"
    );
}

#[test]
fn each_app_gets_tokens_with_its_own_secret_only() {
    let sim = sim_with_apps();
    sim.tenant("fabrikam");
    // (tenant, client id, secret, status, error code)
    let cases = [
        ("contoso", SECOND, "secret-two", 200, ""),
        ("contoso", PRIMARY, "secret-contoso", 200, ""),
        ("contoso", SECOND, "wrong", 401, "invalid_client"),
        ("contoso", SECOND, "secret-contoso", 401, "invalid_client"),
        ("contoso", PRIMARY, "secret-two", 401, "invalid_client"),
        ("contoso", THIRD, "secret-two", 401, "invalid_client"),
        (
            "contoso",
            "app-nobody",
            "secret-two",
            400,
            "unauthorized_client",
        ),
        ("fabrikam", SECOND, "secret-two", 400, "unauthorized_client"),
    ];
    for (tenant, client_id, secret, status, code) in cases {
        let r = sim.token_request(tenant, client_id, secret);
        assert_eq!(
            r.status, status,
            "{tenant} {client_id} {secret}: {:?}",
            r.body
        );
        if status != 200 {
            assert_eq!(r.code(), code, "{tenant} {client_id} {secret}");
        }
    }
    let second = sim.client_as("contoso", SECOND, "secret-two");
    let foreign = agent()
        .get(format!("{}/fabrikam/v1.0/users", sim.base))
        .header("Authorization", &format!("Bearer {}", second.token))
        .call()
        .unwrap();
    assert_eq!(
        foreign.status().as_u16(),
        401,
        "an app's token is its tenant's only"
    );
}

#[test]
fn the_per_app_limit_throttles_one_app_while_the_other_writes() {
    let sim = sim_with_apps();
    sim.settings(json!({
        "app_write_requests_per_window": 2,
        "write_requests_per_window": 3,
        "write_window_secs": 3600,
    }));
    let primary = sim.client("contoso");
    let second = sim.client_as("contoso", SECOND, "secret-two");
    let patch = |c: &Client<'_>, n: u64| c.patch(&format!("/users/{}", id(n)), &city(n));
    assert_eq!(patch(&primary, 1).status, 204);
    assert_eq!(patch(&primary, 2).status, 204);
    let limited = patch(&primary, 3);
    assert_eq!(limited.status, 429, "{:?}", limited.body);
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!(retry > 3000, "the window's end: {retry}");
    assert_eq!(
        limited.header("x-ms-throttle-scope"),
        Some(format!("Tenant_Application/Write/{PRIMARY}/contoso").as_str()),
        "Graph's <Scope>/<Limit>/<ApplicationId>/<TenantId>"
    );
    assert_eq!(patch(&second, 3).status, 204, "the other app still writes");
    let tenant_limited = patch(&second, 4);
    assert_eq!(
        tenant_limited.status, 429,
        "the tenant's limit holds for all apps together"
    );
    assert!(tenant_limited.header("retry-after").is_some());
    assert_eq!(
        tenant_limited.header("x-ms-throttle-scope"),
        Some(format!("Tenant/Write/{SECOND}/contoso").as_str())
    );

    let counters = sim.counters();
    assert_eq!(counters["throttled"]["app_write"], 1, "{counters}");
    assert_eq!(counters["throttled"]["write"], 1, "{counters}");
    assert_eq!(counters["writesInWindow"]["contoso"]["current"], 3);
    let records = write_log(&sim.base, "contoso", 0).unwrap();
    assert_eq!(
        by_app(&records),
        [
            row(PRIMARY, 204),
            row(PRIMARY, 204),
            row(PRIMARY, 429),
            row(SECOND, 204),
            row(SECOND, 429),
        ]
    );
    let text = sim.get("/metrics").body.as_str().unwrap().to_owned();
    assert!(
        text.contains("rewind_dirsim_throttled_total{scope=\"app_write\"} 1"),
        "{text}"
    );

    sim.settings(json!({"write_requests_per_window": null}));
    assert_eq!(
        patch(&second, 4).status,
        204,
        "a write the tenant's limit refused did not count against the app's"
    );
    assert_eq!(
        patch(&second, 1).status,
        429,
        "the second app is at its own limit now"
    );
    assert_eq!(
        patch(&sim.client_as("contoso", THIRD, "secret-three"), 4).status,
        204,
        "a third app has its own budget"
    );
}

#[test]
fn added_apps_survive_a_save_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = DirsimConfig {
        state: Some(dir.path().join("dirsim.state")),
        ..DirsimConfig::default()
    };
    let sim = Sim::with(config.clone());
    sim.tenant("contoso");
    sim.load("contoso", &[user(1, "Sales")]);
    add(&sim, SECOND, "secret-two");
    add(&sim, THIRD, "secret-three");
    let saved = sim.post("/_admin/save", &json!({}));
    assert_eq!(saved.status, 200, "{:?}", saved.body);
    sim.stop();

    let sim = Sim::with(config);
    assert_eq!(apps_of(&contoso_summary(&sim)), [PRIMARY, SECOND, THIRD]);
    assert_eq!(
        sim.token_request("contoso", THIRD, "secret-two").status,
        401
    );
    let third = sim.client_as("contoso", THIRD, "secret-three");
    assert_eq!(
        third.patch(&format!("/users/{}", id(1)), &city(1)).status,
        204
    );
    let records = write_log(&sim.base, "contoso", 0).unwrap();
    assert_eq!(by_app(&records), [row(THIRD, 204)]);
    let duplicate = sim.post(
        "/_admin/tenants/contoso/apps",
        &json!({"clientId": SECOND, "clientSecret": "s"}),
    );
    assert_eq!(duplicate.status, 409, "the loaded apps are the tenant's");
}

/// Writes a state file as the simulator wrote it before tenants had added apps: the header,
/// then one tenant (name, client id, secret, organization id, change seq, object count) with
/// no apps field, then its objects.
fn write_state_without_apps(path: &std::path::Path, objects: &[DirectoryObject]) {
    let file = std::fs::File::create(path).unwrap();
    let mut enc = zstd::Encoder::new(file, 3).unwrap();
    let header = ("rewind-dirsim-state", 1u32, 0i64, "{}", 1u64);
    rmp_serde::encode::write(&mut enc, &header).unwrap();
    let tenant = (
        "legacy",
        "app-legacy",
        "secret-legacy",
        ObjectId(0xfeed),
        0u64,
        objects.len() as u64,
    );
    rmp_serde::encode::write(&mut enc, &tenant).unwrap();
    for o in objects {
        rmp_serde::encode::write(&mut enc, o).unwrap();
    }
    enc.finish().unwrap().flush().unwrap();
}

#[test]
fn a_state_file_without_apps_still_loads() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("dirsim.state");
    let mut u = DirectoryObject::new(ObjectId(7), ObjectType::User);
    u.set("displayName", "Old User".into());
    write_state_without_apps(&state, &[u]);

    let sim = Sim::with(DirsimConfig {
        state: Some(state),
        ..DirsimConfig::default()
    });
    let list = sim.get("/_admin/tenants");
    assert_eq!(list.status, 200);
    assert_eq!(list.body[0]["tenant"], "legacy");
    assert_eq!(apps_of(&list.body[0]), ["app-legacy"]);
    let c = sim.client_as("legacy", "app-legacy", "secret-legacy");
    let old = c.get(&format!("/users/{}", id(7)));
    assert_eq!(old.status, 200, "{:?}", old.body);
    assert_eq!(old.body["displayName"], "Old User");
    let added = sim.post(
        "/_admin/tenants/legacy/apps",
        &json!({"clientId": SECOND, "clientSecret": "secret-two"}),
    );
    assert_eq!(added.status, 201, "{:?}", added.body);
    assert_eq!(apps_of(&added.body), ["app-legacy", SECOND]);
}
