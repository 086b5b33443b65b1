//! Writes and their idempotency-relevant answers: PATCH, soft DELETE and restore, membership
//! references, app role assignments, OAuth2 grants, conditional access with its recycle bin, and
//! singletons.

use serde_json::json;

use super::support::{group, id, service_principal, sim_with_tenant, user};

#[test]
fn patch_is_partial_and_delete_is_soft_until_restored() {
    let sim = sim_with_tenant();
    sim.load(
        "contoso",
        &[user(1, "Sales"), user(2, "IT"), group(100, &[1, 2])],
    );
    let c = sim.client("contoso");
    let u = format!("/users/{}", id(1));

    let r = c.patch(&u, &json!({"department": "Support", "jobTitle": "Lead"}));
    assert_eq!(r.status, 204);
    let got = c.get(&format!(
        "{u}?$select=department,jobTitle,displayName,accountEnabled"
    ));
    assert_eq!(got.body["department"], "Support");
    assert_eq!(got.body["jobTitle"], "Lead");
    assert_eq!(
        got.body["displayName"], "User 1",
        "omitted properties keep their values"
    );
    assert_eq!(got.body["accountEnabled"], true);

    assert_eq!(c.delete(&u).status, 204);
    assert_eq!(c.get(&u).status, 404);
    assert_eq!(c.patch(&u, &json!({"city": "Paris"})).status, 404);
    assert_eq!(c.delete(&u).status, 404, "already deleted");
    let members = c.get(&format!("/groups/{}/members", id(100)));
    assert_eq!(
        members.values().len(),
        1,
        "a soft-deleted member is not listed"
    );

    let bin = c.get("/directory/deletedItems/microsoft.graph.user");
    assert_eq!(bin.status, 200);
    assert_eq!(bin.values().len(), 1);
    assert_eq!(bin.values()[0]["id"], id(1));
    assert!(bin.values()[0]["deletedDateTime"].is_string());
    let no_cast = c.get("/directory/deletedItems");
    assert_eq!(no_cast.status, 400);
    let one = c.get(&format!(
        "/directory/deletedItems/{}?$select=deletedDateTime,department",
        id(1)
    ));
    assert_eq!(one.status, 200);
    assert!(one.body["deletedDateTime"].is_string());
    assert_eq!(
        one.body["department"], "Support",
        "properties kept in the recycle bin"
    );
    assert!(c
        .get("/directory/deletedItems/microsoft.graph.group")
        .values()
        .is_empty());

    let restored = c.post_empty(&format!("/directory/deletedItems/{}/restore", id(1)));
    assert_eq!(restored.status, 200);
    assert_eq!(restored.body["id"], id(1));
    assert_eq!(restored.body["department"], "Support");
    assert_eq!(c.get(&u).status, 200);
    let members = c.get(&format!("/groups/{}/members", id(100)));
    assert_eq!(
        members.values().len(),
        2,
        "memberships come back with the restore"
    );
    let again = c.post_empty(&format!("/directory/deletedItems/{}/restore", id(1)));
    assert_eq!(again.status, 404);
    assert_eq!(again.code(), "Request_ResourceNotFound");

    let created = c.post("/users", &json!({"displayName": "New", "userPrincipalName": "new@contoso.example", "accountEnabled": true}));
    assert_eq!(created.status, 201);
    let new_id = created.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        c.get(&format!("/users/{new_id}")).body["displayName"],
        "New"
    );
}

#[test]
fn membership_references() {
    let sim = sim_with_tenant();
    sim.load(
        "contoso",
        &[user(1, "Sales"), user(2, "IT"), group(100, &[1])],
    );
    let c = sim.client("contoso");
    let refs = format!("/groups/{}/members/$ref", id(100));
    let body = |n: u64| json!({"@odata.id": format!("https://graph.microsoft.com/v1.0/directoryObjects/{}", id(n))});

    assert_eq!(c.post(&refs, &body(2)).status, 204);
    let dup = c.post(&refs, &body(2));
    assert_eq!(dup.status, 400);
    assert_eq!(dup.code(), "Request_BadRequest");
    assert!(dup.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("already exist"));
    let missing = c.post(&refs, &body(77));
    assert_eq!(missing.status, 404);
    assert_eq!(missing.code(), "Request_ResourceNotFound");
    let no_group = c.post(&format!("/groups/{}/members/$ref", id(555)), &body(2));
    assert_eq!(no_group.status, 404);
    let members = c.get(&format!("/groups/{}/members", id(100)));
    assert_eq!(members.values().len(), 2);

    let remove = format!("/groups/{}/members/{}/$ref", id(100), id(1));
    assert_eq!(c.delete(&remove).status, 204);
    let gone = c.delete(&remove);
    assert_eq!(gone.status, 404);
    assert_eq!(gone.code(), "Request_ResourceNotFound");
    let members = c.get(&format!("/groups/{}/members", id(100)));
    assert_eq!(members.values().len(), 1);
    assert_eq!(members.values()[0]["id"], id(2));
}

#[test]
fn app_role_assignments_and_oauth2_grants() {
    let sim = sim_with_tenant();
    sim.load(
        "contoso",
        &[
            user(1, "Sales"),
            service_principal(300),
            service_principal(301),
        ],
    );
    let c = sim.client("contoso");
    let path = format!("/servicePrincipals/{}/appRoleAssignedTo", id(300));
    let assignment = json!({"principalId": id(1), "resourceId": id(300), "appRoleId": id(5)});
    let created = c.post(&path, &assignment);
    assert_eq!(created.status, 201);
    let aid = created.body["id"].as_str().unwrap().to_owned();
    assert_eq!(created.body["principalId"], id(1));
    assert_eq!(c.get(&path).values().len(), 1);
    assert_eq!(
        c.post(&path, &assignment).status,
        400,
        "the same assignment twice"
    );
    let no_principal = c.post(
        &path,
        &json!({"principalId": id(88), "resourceId": id(300), "appRoleId": id(5)}),
    );
    assert_eq!(no_principal.status, 404);
    assert_eq!(c.delete(&format!("{path}/{aid}")).status, 204);
    assert_eq!(c.delete(&format!("{path}/{aid}")).status, 404);
    assert!(c.get(&path).values().is_empty());

    let grant = json!({"clientId": id(300), "consentType": "AllPrincipals", "resourceId": id(301), "scope": "User.Read Mail.Read"});
    let created = c.post("/oauth2PermissionGrants", &grant);
    assert_eq!(created.status, 201);
    let gid = created.body["id"].as_str().unwrap().to_owned();
    assert_eq!(created.body["scope"], "User.Read Mail.Read");
    assert_eq!(c.post("/oauth2PermissionGrants", &grant).status, 409);
    let listed = c.get("/oauth2PermissionGrants");
    assert_eq!(listed.values().len(), 1);
    assert_eq!(listed.values()[0]["clientId"], id(300));
    assert_eq!(
        c.patch(
            &format!("/oauth2PermissionGrants/{gid}"),
            &json!({"scope": "User.Read"})
        )
        .status,
        204
    );
    assert_eq!(
        c.get(&format!("/oauth2PermissionGrants/{gid}")).body["scope"],
        "User.Read"
    );
    assert_eq!(
        c.delete(&format!("/oauth2PermissionGrants/{gid}")).status,
        204
    );
    assert_eq!(c.get(&format!("/oauth2PermissionGrants/{gid}")).status, 404);
    assert_eq!(
        c.delete(&format!("/oauth2PermissionGrants/{gid}")).status,
        404
    );
    let user_consent = c.post("/oauth2PermissionGrants", &json!({"clientId": id(300), "consentType": "Principal", "principalId": id(1), "resourceId": id(301), "scope": "x"}));
    assert_eq!(user_consent.status, 400);

    // A service principal's grants and assignments go and come back with it.
    c.post("/oauth2PermissionGrants", &grant);
    c.post(&path, &assignment);
    assert_eq!(
        c.delete(&format!("/servicePrincipals/{}", id(300))).status,
        204
    );
    assert!(c.get("/oauth2PermissionGrants").values().is_empty());
    assert_eq!(c.get(&path).status, 404);
    assert_eq!(
        c.post_empty(&format!("/directory/deletedItems/{}/restore", id(300)))
            .status,
        200
    );
    assert_eq!(c.get("/oauth2PermissionGrants").values().len(), 1);
    assert_eq!(c.get(&path).values().len(), 1);
}

#[test]
fn conditional_access_and_its_recycle_bin() {
    let sim = sim_with_tenant();
    let c = sim.client("contoso");
    let policy = c.post(
        "/identity/conditionalAccess/policies",
        &json!({"displayName": "Require MFA", "state": "enabled", "conditions": {"users": {"includeUsers": ["All"]}}, "grantControls": {"operator": "OR", "builtInControls": ["mfa"]}}),
    );
    assert_eq!(policy.status, 201);
    let pid = policy.body["id"].as_str().unwrap().to_owned();
    let p = format!("/identity/conditionalAccess/policies/{pid}");
    assert_eq!(c.patch(&p, &json!({"state": "disabled"})).status, 204);
    let got = c.get(&p);
    assert_eq!(got.body["state"], "disabled");
    assert_eq!(got.body["grantControls"]["builtInControls"][0], "mfa");
    assert_eq!(c.delete(&p).status, 204);
    assert_eq!(c.get(&p).status, 404);
    let bin = c.get("/identity/conditionalAccess/deletedItems/policies");
    assert_eq!(bin.values().len(), 1);
    let restored = c.post_empty(&format!(
        "/identity/conditionalAccess/deletedItems/policies/{pid}/restore"
    ));
    assert_eq!(restored.status, 200);
    assert_eq!(restored.body["displayName"], "Require MFA");
    assert_eq!(c.get(&p).status, 200);

    let bad = c.post(
        "/identity/conditionalAccess/namedLocations",
        &json!({"displayName": "x"}),
    );
    assert_eq!(bad.status, 400, "a named location needs its kind");
    let loc = c.post(
        "/identity/conditionalAccess/namedLocations",
        &json!({"@odata.type": "#microsoft.graph.ipNamedLocation", "displayName": "HQ", "isTrusted": true, "ipRanges": [{"@odata.type": "#microsoft.graph.iPv4CidrRange", "cidrAddress": "10.0.0.0/8"}]}),
    );
    assert_eq!(loc.status, 201);
    let lid = loc.body["id"].as_str().unwrap().to_owned();
    assert_eq!(loc.body["@odata.type"], "#microsoft.graph.ipNamedLocation");
    let l = format!("/identity/conditionalAccess/namedLocations/{lid}");
    assert_eq!(
        c.patch(
            &l,
            &json!({"@odata.type": "#microsoft.graph.ipNamedLocation", "isTrusted": false})
        )
        .status,
        204
    );
    assert_eq!(c.get(&l).body["isTrusted"], false);
    assert_eq!(c.delete(&l).status, 204);
    let bin = c.get("/identity/conditionalAccess/deletedItems/namedLocations");
    assert_eq!(bin.values()[0]["id"], lid.as_str());
    let purge = c.delete(&format!(
        "/identity/conditionalAccess/deletedItems/namedLocations/{lid}"
    ));
    assert_eq!(purge.status, 204);
    let late = c.post_empty(&format!(
        "/identity/conditionalAccess/deletedItems/namedLocations/{lid}/restore"
    ));
    assert_eq!(late.status, 404);
}

#[test]
fn singletons_are_patched_in_place() {
    let sim = sim_with_tenant();
    let c = sim.client("contoso");
    assert_eq!(
        c.patch(
            "/policies/authorizationPolicy",
            &json!({"blockMsolPowerShell": true})
        )
        .status,
        204
    );
    let authz = c.get("/policies/authorizationPolicy");
    assert_eq!(authz.body["blockMsolPowerShell"], true);
    assert_eq!(
        authz.body["guestUserRoleId"],
        "10dae51f-b6af-4016-8d66-8c2a99b929b3"
    );

    let r = c.patch(
        "/policies/authenticationMethodsPolicy",
        &json!({"authenticationMethodConfigurations": [{"id": "fido2", "state": "enabled"}]}),
    );
    assert_eq!(r.status, 204);
    let methods = c.get("/policies/authenticationMethodsPolicy");
    let fido = methods.body["authenticationMethodConfigurations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "fido2")
        .unwrap()
        .clone();
    assert_eq!(fido["state"], "enabled");
    assert_eq!(
        fido["@odata.type"],
        "#microsoft.graph.fido2AuthenticationMethodConfiguration"
    );
    // Each configuration on its own URL, as Graph serves and patches it.
    let url = "/policies/authenticationMethodsPolicy/authenticationMethodConfigurations";
    let r = c.patch(&format!("{url}/fido2"), &json!({"state": "disabled"}));
    assert_eq!(r.status, 204);
    let one = c.get(&format!("{url}/fido2"));
    assert_eq!((one.status, &one.body["id"]), (200, &json!("fido2")));
    assert_eq!(one.body["state"], "disabled");
    assert_eq!(
        one.body["@odata.type"], "#microsoft.graph.fido2AuthenticationMethodConfiguration",
        "a partial update keeps the rest"
    );
    let unknown = c.patch(
        &format!("{url}/carrierPigeon"),
        &json!({"state": "enabled"}),
    );
    assert_eq!(
        (unknown.status, unknown.code()),
        (404, "Request_ResourceNotFound")
    );

    let org = c.get("/organization");
    let org_id = org.values()[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        c.patch(
            &format!("/organization/{org_id}"),
            &json!({"displayName": "Contoso Ltd"})
        )
        .status,
        204
    );
    assert_eq!(
        c.get("/organization").values()[0]["displayName"],
        "Contoso Ltd"
    );
    // The legacy MFA settings are in no Graph API: Graph refuses them by name.
    let legacy = c.patch(
        &format!("/organization/{org_id}"),
        &json!({"mfaRememberDevicesDays": 30}),
    );
    assert_eq!((legacy.status, legacy.code()), (400, "Request_BadRequest"));
    assert!(c.get("/organization").values()[0]
        .get("mfaRememberDevicesDays")
        .is_none());
    assert_eq!(c.delete("/policies/authorizationPolicy").status, 405);
}

#[test]
fn concurrent_writers_lose_nothing() {
    let sim = sim_with_tenant();
    let mut objects: Vec<_> = (1..=100).map(|n| user(n, "Sales")).collect();
    objects.push(group(1000, &[]));
    sim.load("contoso", &objects);
    let token = sim.client("contoso").token;
    let graph = format!("{}/contoso/v1.0", sim.base);
    let workers: Vec<_> = (0..4u64)
        .map(|w| {
            let (token, graph) = (token.clone(), graph.clone());
            std::thread::spawn(move || {
                let agent = super::support::agent();
                for n in (1..=25).map(|k| w * 25 + k) {
                    let r = agent
                        .post(format!("{graph}/groups/{}/members/$ref", id(1000)))
                        .header("Authorization", &format!("Bearer {token}"))
                        .send_json(
                            json!({"@odata.id": format!("{graph}/directoryObjects/{}", id(n))}),
                        )
                        .unwrap();
                    assert_eq!(r.status().as_u16(), 204);
                    let r = agent
                        .patch(format!("{graph}/users/{}", id(n)))
                        .header("Authorization", &format!("Bearer {token}"))
                        .send_json(json!({"jobTitle": format!("worker {w}")}))
                        .unwrap();
                    assert_eq!(r.status().as_u16(), 204);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let c = sim.client("contoso");
    let members = c.get_all(&format!("/groups/{}/members?$top=999", id(1000)));
    assert_eq!(members.len(), 100);
    let titled = c.get_all("/users?$select=jobTitle&$top=999");
    assert!(titled.iter().all(|u| u["jobTitle"]
        .as_str()
        .is_some_and(|t| t.starts_with("worker"))));
}
