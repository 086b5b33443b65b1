//! Graph's versions: a `$select` or a `PATCH` body naming a property the resource does not have
//! in the request's version is refused as Graph refuses it; the per-user MFA state is served
//! only in beta, on the user's `authentication/requirements`; `$batch` runs on beta too.

use serde_json::json;

use super::support::{id, service_principal, sim_with_tenant, user};

#[test]
fn select_of_a_name_the_version_lacks_is_refused() {
    let sim = sim_with_tenant();
    let mut sp = service_principal(7);
    sp["publisherName"] = json!("Contoso");
    let mut u = user(1, "Sales");
    u["perUserMfaState"] = json!("enforced");
    sim.load("contoso", &[u, sp]);
    let c = sim.client("contoso");

    for (path, name) in [
        ("/users?$select=id,perUserMfaState", "perUserMfaState"),
        (
            "/servicePrincipals?$select=id,publisherName",
            "publisherName",
        ),
        ("/users?$select=noSuchThing", "noSuchThing"),
    ] {
        let r = c.get(path);
        assert_eq!((r.status, r.code()), (400, "BadRequest"), "{path}");
        assert!(
            r.body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(&format!("'{name}'"))),
            "{path}: {:?}",
            r.body
        );
    }
    let one = c.get(&format!("/users/{}?$select=perUserMfaState", id(1)));
    assert_eq!(one.status, 400, "a single object is refused too");
    let deleted = c.get("/directory/deletedItems/microsoft.graph.user?$select=perUserMfaState");
    assert_eq!(deleted.status, 400, "and the recycle bin");

    // Beta has publisherName on service principals; no version has perUserMfaState on users.
    let beta = c.beta();
    let sps = beta.get("/servicePrincipals?$select=id,publisherName");
    assert_eq!(sps.status, 200, "{:?}", sps.body);
    assert_eq!(sps.values()[0]["publisherName"], "Contoso");
    assert_eq!(beta.get("/users?$select=perUserMfaState").status, 400);
    // Nor does Graph show it, or the legacy MFA settings, on the object itself.
    let full = c.get(&format!("/users/{}", id(1)));
    assert!(
        full.body.get("perUserMfaState").is_none(),
        "{:?}",
        full.body
    );
    let org = c.get("/organization");
    assert!(org.values()[0].get("mfaEnabled").is_none());
    assert_eq!(c.get("/organization?$select=mfaEnabled").status, 400);
}

#[test]
fn patch_of_a_name_the_version_lacks_is_refused() {
    let sim = sim_with_tenant();
    let mut sp = service_principal(7);
    sp["publisherName"] = json!("Contoso");
    sim.load("contoso", &[user(1, "Sales"), sp]);
    let c = sim.client("contoso");
    let u = format!("/users/{}", id(1));

    for body in [
        json!({"perUserMfaState": "enabled"}),
        json!({"city": "Oslo", "noSuchThing": 1}),
    ] {
        let r = c.patch(&u, &body);
        assert_eq!((r.status, r.code()), (400, "Request_BadRequest"), "{body}");
    }
    assert!(
        c.get(&format!("{u}?$select=city")).body["city"].is_null(),
        "a refused PATCH changes nothing"
    );
    assert_eq!(c.patch(&u, &json!({"city": "Oslo"})).status, 204);

    let sp = format!("/servicePrincipals/{}", id(7));
    let v1 = c.patch(&sp, &json!({"publisherName": "Fabrikam"}));
    assert_eq!((v1.status, v1.code()), (400, "Request_BadRequest"));
    assert_eq!(
        c.beta()
            .patch(&sp, &json!({"publisherName": "Fabrikam"}))
            .status,
        204
    );
    assert_eq!(
        c.beta().get(&format!("{sp}?$select=publisherName")).body["publisherName"],
        "Fabrikam"
    );
}

#[test]
fn per_user_mfa_state_is_served_on_beta_requirements() {
    let sim = sim_with_tenant();
    let mut enforced = user(1, "Sales");
    enforced["perUserMfaState"] = json!("enforced");
    let mut synced = user(3, "IT");
    synced["onPremisesSyncEnabled"] = json!(true);
    sim.load("contoso", &[enforced, user(2, "Sales"), synced]);
    let c = sim.client("contoso");
    let beta = c.beta();
    let req = |n: u64| format!("/users/{}/authentication/requirements", id(n));

    let r = beta.get(&req(1));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["perUserMfaState"], "enforced");
    assert!(r.body["@odata.context"]
        .as_str()
        .is_some_and(|s| s.contains("/beta/$metadata#users(")));
    assert_eq!(beta.get(&req(2)).body["perUserMfaState"], "disabled");
    assert_eq!(
        c.get(&req(1)).status,
        400,
        "v1.0 has no authentication/requirements"
    );

    assert_eq!(
        beta.patch(&req(2), &json!({"perUserMfaState": "enabled"}))
            .status,
        204
    );
    assert_eq!(beta.get(&req(2)).body["perUserMfaState"], "enabled");
    // A cloud setting: a synced user takes it too.
    assert_eq!(
        beta.patch(&req(3), &json!({"perUserMfaState": "enforced"}))
            .status,
        204
    );
    for bad in [
        json!({"perUserMfaState": "sometimes"}),
        json!({"perUserMfaState": "enabled", "city": "Oslo"}),
    ] {
        let r = beta.patch(&req(2), &bad);
        assert_eq!((r.status, r.code()), (400, "Request_BadRequest"), "{bad}");
    }
    assert_eq!(beta.get(&req(2)).body["perUserMfaState"], "enabled");
    let gone = beta.get(&req(99));
    assert_eq!(gone.status, 404);

    // The same reads in a beta $batch, answered per request.
    let batch = beta.post(
        "/$batch",
        &json!({"requests": [
            {"id": "1", "method": "GET", "url": req(1)},
            {"id": "2", "method": "GET", "url": req(99)},
        ]}),
    );
    assert_eq!(batch.status, 200, "{:?}", batch.body);
    let responses = batch.body["responses"].as_array().unwrap();
    let by_id = |k: &str| responses.iter().find(|r| r["id"] == k).unwrap().clone();
    assert_eq!(by_id("1")["status"], 200);
    assert_eq!(by_id("1")["body"]["perUserMfaState"], "enforced");
    assert_eq!(by_id("2")["status"], 404);
}
