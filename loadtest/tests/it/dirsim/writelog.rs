//! The write log (`/_admin/tenants/{tenant}/writes`): one record per directory write, inner
//! writes of a `$batch` included, with whether it changed the tenant; paging, clearing, the
//! per-second write maxima of `/_admin/counters`, and Graph's refusal to restore a service
//! principal whose application is in the recycle bin.

use rewind_loadtest::dirsim::{write_log, WriteRecord};
use serde_json::{json, Value as Json};

use super::support::{group, id, service_principal, sim_with_tenant, user, Sim};

fn patch(n: &str, url: String, body: Json) -> Json {
    json!({"id": n, "method": "PATCH", "url": url,
           "headers": {"Content-Type": "application/json"}, "body": body})
}

fn depends(mut request: Json, on: &str) -> Json {
    request["dependsOn"] = json!([on]);
    request
}

fn member_ref(n: u64) -> Json {
    json!({"@odata.id": format!("https://graph.microsoft.com/v1.0/directoryObjects/{}", id(n))})
}

fn log(sim: &Sim) -> Vec<WriteRecord> {
    write_log(&sim.base, "contoso", 0).unwrap()
}

fn digest(body: &Json) -> String {
    let text = serde_json::to_vec(body).unwrap();
    blake3::hash(&text).to_hex().to_string()
}

/// `(method, path, status, changed)` of each record, for comparing with a table.
fn summary(records: &[WriteRecord]) -> Vec<(String, String, u16, bool)> {
    records
        .iter()
        .map(|r| (r.method.clone(), r.path.clone(), r.status, r.changed))
        .collect()
}

fn row(method: &str, path: String, status: u16, changed: bool) -> (String, String, u16, bool) {
    (method.to_owned(), path, status, changed)
}

#[test]
fn every_write_is_logged_with_whether_it_changed_the_tenant() {
    let sim = sim_with_tenant();
    sim.load(
        "contoso",
        &[user(1, "Sales"), user(2, "IT"), group(100, &[1])],
    );
    let c = sim.client("contoso");
    let city = json!({"city": "Oslo"});
    let r = c.post(
        "/$batch",
        &json!({"requests": [
            patch("a", format!("/users/{}", id(1)), city.clone()),
            depends(patch("b", format!("/users/{}", id(1)), city.clone()), "a"),
            {"id": "c", "method": "GET", "url": format!("/users/{}", id(1))},
            patch("d", format!("/users/{}", id(99)), city.clone()),
            depends(patch("e", format!("/users/{}", id(2)), city.clone()), "d"),
        ]}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    // Outside a batch, on beta: an add of an existing member, a new one, a delete.
    let beta = c.beta();
    let members = format!("/groups/{}/members/$ref", id(100));
    assert_eq!(beta.post(&members, &member_ref(1)).status, 400);
    assert_eq!(beta.post(&members, &member_ref(2)).status, 204);
    assert_eq!(c.get(&format!("/users/{}", id(2))).status, 200);
    assert_eq!(c.delete(&format!("/users/{}", id(2))).status, 204);
    let restore = format!("/directory/deletedItems/{}/restore", id(2));
    assert_eq!(c.post_empty(&restore).status, 200);
    assert_eq!(c.post_empty(&restore).status, 404);

    let records = log(&sim);
    let user1 = format!("/users/{}", id(1));
    let group_members = format!("/groups/{}/members/$ref", id(100));
    let restore_path = format!("/directory/deletedItems/{}/restore", id(2));
    let expected = [
        row("PATCH", user1.clone(), 204, true),
        row("PATCH", user1, 204, false),
        row("PATCH", format!("/users/{}", id(99)), 404, false),
        row("PATCH", format!("/users/{}", id(2)), 424, false),
        row("POST", group_members.clone(), 400, false),
        row("POST", group_members, 204, true),
        row("DELETE", format!("/users/{}", id(2)), 204, true),
        row("POST", restore_path.clone(), 200, true),
        row("POST", restore_path, 404, false),
    ];
    assert_eq!(summary(&records), expected);
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=9).collect::<Vec<u64>>(), "dense from 1");
    let versions: Vec<&str> = records.iter().map(|r| r.version.as_str()).collect();
    assert_eq!(
        versions,
        ["v1.0", "v1.0", "v1.0", "v1.0", "beta", "beta", "v1.0", "v1.0", "v1.0"]
    );
    assert_eq!(records[0].body_digest, Some(digest(&city)));
    assert_eq!(records[0].body_digest, records[1].body_digest);
    assert_eq!(records[4].body_digest, Some(digest(&member_ref(1))));
    assert_eq!(records[6].body_digest, None, "a DELETE has no body");
    assert!(records.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    // Real time, not the simulated clock: within a day of this machine's clock.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!((now_ms - records[0].at_ms).abs() < 86_400_000);
}

#[test]
fn concurrent_writes_each_see_only_their_own_change() {
    let sim = sim_with_tenant();
    let users: Vec<Json> = (1..=9).map(|n| user(n, "Sales")).collect();
    sim.load("contoso", &users);
    sim.load("contoso", &[group(100, &[])]);
    // Eight clients at once: the same PATCH of user 1 (one of them changes it), and each
    // its own new member (each changes the group).
    std::thread::scope(|s| {
        for n in 2..=9 {
            let sim = &sim;
            s.spawn(move || {
                let c = sim.client("contoso");
                let r = c.patch(&format!("/users/{}", id(1)), &json!({"city": "Same"}));
                assert_eq!(r.status, 204);
                let r = c.post(&format!("/groups/{}/members/$ref", id(100)), &member_ref(n));
                assert_eq!(r.status, 204);
            });
        }
    });
    let records = log(&sim);
    assert_eq!(records.len(), 16);
    let changed = |prefix: &str| {
        records
            .iter()
            .filter(|r| r.path.starts_with(prefix) && r.changed)
            .count()
    };
    assert_eq!(changed("/users/"), 1, "one PATCH changed the user");
    assert_eq!(
        changed("/groups/"),
        8,
        "every member added changed the group"
    );
}

#[test]
fn injected_faults_are_logged_as_answered_and_change_nothing() {
    let sim = sim_with_tenant();
    sim.load("contoso", &[user(1, "Sales")]);
    let c = sim.client("contoso");
    sim.settings(json!({"write_429_rate": 1.0}));
    assert_eq!(
        c.patch(&format!("/users/{}", id(1)), &json!({"city": "Rome"}))
            .status,
        429
    );
    sim.settings(json!({"write_429_rate": 0.0, "write_503_rate": 1.0}));
    assert_eq!(
        c.patch(&format!("/users/{}", id(1)), &json!({"city": "Rome"}))
            .status,
        503
    );
    sim.settings(json!({"write_503_rate": 0.0}));
    assert_eq!(
        c.patch(&format!("/users/{}", id(1)), &json!({"city": "Rome"}))
            .status,
        204
    );
    let records = log(&sim);
    let statuses: Vec<(u16, bool)> = records.iter().map(|r| (r.status, r.changed)).collect();
    assert_eq!(statuses, [(429, false), (503, false), (204, true)]);
    let counters = sim.counters();
    assert_eq!(
        counters["tenants"]["contoso"]["maxWritesPerSecond"], 1,
        "only the admitted write counts"
    );
}

#[test]
fn the_log_pages_with_after_and_top_and_clears() {
    let sim = sim_with_tenant();
    sim.load("contoso", &[user(1, "Sales")]);
    let c = sim.client("contoso");
    for n in 0..7 {
        let r = c.patch(
            &format!("/users/{}", id(1)),
            &json!({"city": format!("City {n}")}),
        );
        assert_eq!(r.status, 204);
    }
    let page = sim.get("/_admin/tenants/contoso/writes?after=2&top=3");
    assert_eq!(page.status, 200, "{:?}", page.body);
    let seqs: Vec<u64> = page
        .values()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [3, 4, 5]);
    assert_eq!(page.body["last"], 7);
    assert_eq!(page.body["first"], 1);
    let record = &page.values()[0];
    for field in [
        "seq",
        "atMs",
        "method",
        "path",
        "version",
        "bodyDigest",
        "status",
        "changed",
    ] {
        assert!(record.get(field).is_some(), "{field} in {record}");
    }
    let rest = sim.get("/_admin/tenants/contoso/writes?after=5");
    assert_eq!(rest.values().len(), 2);
    assert!(sim
        .get("/_admin/tenants/contoso/writes?after=7")
        .values()
        .is_empty());
    // The client reads every page after a seq.
    assert_eq!(write_log(&sim.base, "contoso", 4).unwrap().len(), 3);

    // Bad paging is refused with a message naming the parameter.
    for (query, word) in [
        ("top=0", "top"),
        ("top=10001", "top"),
        ("after=-1", "after"),
        ("after=x", "after"),
    ] {
        let r = sim.get(&format!("/_admin/tenants/contoso/writes?{query}"));
        assert_eq!(r.status, 400, "{query}");
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(word), "{query}: {message}");
    }
    assert_eq!(sim.get("/_admin/tenants/nobody/writes").status, 404);
    assert!(write_log(&sim.base, "nobody", 0).is_err());

    assert_eq!(sim.delete("/_admin/tenants/contoso/writes").status, 204);
    let empty = sim.get("/_admin/tenants/contoso/writes");
    assert!(empty.values().is_empty());
    assert_eq!(empty.body["last"], 0);
    assert_eq!(
        sim.counters()["tenants"]["contoso"]["maxWritesPerSecond"],
        0,
        "clearing resets the maxima"
    );
    assert_eq!(c.delete(&format!("/users/{}", id(1))).status, 204);
    let after_clear = log(&sim);
    assert_eq!(after_clear.len(), 1);
    assert_eq!(after_clear[0].seq, 1, "seqs start again from 1");
}

#[test]
fn the_per_second_maxima_count_admitted_writes_only() {
    let sim = sim_with_tenant();
    sim.load("contoso", &[user(1, "Sales")]);
    sim.settings(json!({"write_requests_per_window": 5, "conditional_access_throttle": true}));
    let c = sim.client("contoso");
    let requests: Vec<Json> = (0..20)
        .map(|n| {
            patch(
                &n.to_string(),
                format!("/users/{}", id(1)),
                json!({"city": format!("C{n}")}),
            )
        })
        .collect();
    let r = c.post("/$batch", &json!({ "requests": requests }));
    assert_eq!(r.status, 200);
    let location = json!({"@odata.type": "#microsoft.graph.ipNamedLocation", "displayName": "HQ",
        "isTrusted": true, "ipRanges": [{"@odata.type": "#microsoft.graph.iPv4CidrRange", "cidrAddress": "10.0.0.0/8"}]});
    let ca: Vec<Json> = (0..5)
        .map(|n| json!({"id": n.to_string(), "method": "POST", "url": "/identity/conditionalAccess/namedLocations",
                        "headers": {"Content-Type": "application/json"}, "body": location}))
        .collect();
    assert_eq!(c.post("/$batch", &json!({ "requests": ca })).status, 200);

    let records = log(&sim);
    let admitted = |path: &str| {
        records
            .iter()
            .filter(|r| r.path.starts_with(path) && r.status != 429)
            .count() as u64
    };
    assert_eq!(admitted("/users/"), 5, "the window's budget");
    assert!(admitted("/identity/") >= 1);
    let tenant = &sim.counters()["tenants"]["contoso"];
    let max = tenant["maxWritesPerSecond"].as_u64().unwrap();
    let max_ca = tenant["maxConditionalAccessWritesPerSecond"]
        .as_u64()
        .unwrap();
    // At most the window's 5 directory writes plus the one conditional access write a
    // second lets through; at least one of each was admitted.
    assert!((1..=6).contains(&max), "{tenant}");
    assert_eq!(max_ca, 1, "conditional access admits one write a second");
}

#[test]
fn a_service_principal_is_not_restored_while_its_application_is_deleted() {
    let sim = sim_with_tenant();
    let app = json!({"type": "application", "id": id(50), "displayName": "Payroll",
                     "appId": id(1_000_010)});
    sim.load("contoso", &[app, service_principal(10)]);
    let c = sim.client("contoso");
    assert_eq!(c.delete(&format!("/applications/{}", id(50))).status, 204);
    assert_eq!(
        c.delete(&format!("/servicePrincipals/{}", id(10))).status,
        204
    );
    let sp_restore = format!("/directory/deletedItems/{}/restore", id(10));
    let refused = c.post_empty(&sp_restore);
    assert_eq!(refused.status, 400, "{:?}", refused.body);
    assert_eq!(refused.code(), "Request_BadRequest");
    let message = refused.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("Payroll") && message.contains(&id(50)),
        "{message}"
    );
    assert_eq!(
        c.post_empty(&format!("/directory/deletedItems/{}/restore", id(50)))
            .status,
        200
    );
    assert_eq!(c.post_empty(&sp_restore).status, 200);
    let changed: Vec<bool> = log(&sim).iter().map(|r| r.changed).collect();
    assert_eq!(changed, [true, true, false, true, true]);
}
