//! Reads: paging with absolute next links, `$top` limits, empty pages, `$select` and the default
//! user properties, `$filter` by id, getByIds, and every collection and singleton served.

use std::collections::BTreeSet;

use serde_json::json;

use super::support::{group, id, service_principal, sim_with_tenant, user};

#[test]
fn collections_page_in_id_order_with_absolute_next_links() {
    let sim = sim_with_tenant();
    let users: Vec<_> = (1..=250).rev().map(|n| user(n, "Sales")).collect();
    sim.load("contoso", &users);
    let c = sim.client("contoso");

    let first = c.get("/users");
    assert_eq!(first.status, 200);
    assert_eq!(first.values().len(), 100, "default page size");
    let next = first.next_link().unwrap();
    assert!(
        next.starts_with(&format!("{}/contoso/v1.0/users?", sim.base)),
        "{next}"
    );

    let all = c.get_all("/users");
    let ids: Vec<String> = all
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 250);
    let expected: Vec<String> = (1..=250).map(id).collect();
    assert_eq!(
        ids, expected,
        "stable order by id, nothing lost or repeated"
    );

    let big = c.get("/users?$top=999");
    assert_eq!(big.values().len(), 250);
    assert!(big.next_link().is_none());
    let pages = {
        let mut n = 0;
        let mut next = Some("/users?$top=60&$select=displayName".to_owned());
        while let Some(url) = next {
            let r = c.get(&url);
            assert!(r.values().len() <= 60);
            assert!(
                r.values()
                    .iter()
                    .all(|u| u.get("userPrincipalName").is_none()),
                "$select kept across pages"
            );
            n += 1;
            next = r.next_link();
        }
        n
    };
    assert_eq!(pages, 5);

    for bad in ["/users?$top=1000", "/users?$top=0", "/users?$top=many"] {
        let r = c.get(bad);
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(r.code(), "Request_BadRequest");
    }
}

#[test]
fn a_page_may_be_empty_and_still_carry_a_next_link() {
    let sim = sim_with_tenant();
    let users: Vec<_> = (1..=10).map(|n| user(n, "Sales")).collect();
    sim.load("contoso", &users);
    let c = sim.client("contoso");
    for n in 1..=3 {
        assert_eq!(c.delete(&format!("/users/{}", id(n))).status, 204);
    }
    sim.settings(json!({"max_scan_per_page": 2}));
    let first = c.get("/users?$top=5");
    assert_eq!(first.status, 200);
    assert!(first.values().is_empty());
    assert!(first.next_link().is_some());
    let all = c.get_all("/users?$top=5");
    let ids: BTreeSet<String> = all
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, (4..=10).map(id).collect());
}

#[test]
fn select_and_the_default_user_properties() {
    let sim = sim_with_tenant();
    sim.load("contoso", &[user(1, "Sales")]);
    let c = sim.client("contoso");
    let plain = c.get(&format!("/users/{}", id(1)));
    assert_eq!(plain.status, 200);
    assert_eq!(plain.body["displayName"], "User 1");
    assert_eq!(plain.body["userPrincipalName"], "user1@contoso.example");
    assert!(
        plain.body.get("department").is_none(),
        "not in the default set"
    );
    assert!(plain.body.get("accountEnabled").is_none());

    let selected = c.get(&format!(
        "/users/{}?$select=department,accountEnabled,city",
        id(1)
    ));
    assert_eq!(selected.body["id"], id(1));
    assert_eq!(selected.body["department"], "Sales");
    assert_eq!(selected.body["accountEnabled"], true);
    assert!(selected.body["city"].is_null());
    assert!(selected.body.get("displayName").is_none());
    assert_eq!(selected.header("x-ms-resource-unit"), Some("1"));
    assert_eq!(plain.header("x-ms-resource-unit"), Some("2"));

    let by_upn = c.get("/users/USER1@contoso.example?$select=department");
    assert_eq!(by_upn.status, 200);
    assert_eq!(by_upn.body["id"], id(1));

    let missing = c.get(&format!("/users/{}", id(99)));
    assert_eq!(missing.status, 404);
    assert_eq!(missing.code(), "Request_ResourceNotFound");
}

#[test]
fn filter_by_id_and_get_by_ids() {
    let sim = sim_with_tenant();
    let mut objects: Vec<_> = (1..=20).map(|n| user(n, "Sales")).collect();
    objects.push(group(100, &[1, 2]));
    sim.load("contoso", &objects);
    let c = sim.client("contoso");

    let one = c.get(&format!("/users?$filter=id eq '{}'", id(7)));
    assert_eq!(one.status, 200);
    assert_eq!(one.values().len(), 1);
    assert_eq!(one.values()[0]["id"], id(7));

    let list: Vec<String> = (1..=3).map(|n| format!("'{}'", id(n))).collect();
    let three = c.get(&format!("/users?$filter=id in ({})", list.join(",")));
    assert_eq!(three.values().len(), 3);
    let sixteen: Vec<String> = (1..=16).map(|n| format!("'{}'", id(n))).collect();
    let too_many = c.get(&format!("/users?$filter=id in ({})", sixteen.join(",")));
    assert_eq!(too_many.status, 400);

    let by_prop = c.get("/users?$filter=displayName eq 'User 3'");
    assert_eq!(by_prop.values().len(), 1);

    let got = c.post(
        "/directoryObjects/getByIds",
        &json!({"ids": [id(1), id(100), id(999)], "types": ["user", "group"]}),
    );
    assert_eq!(got.status, 200);
    let types: BTreeSet<&str> = got
        .values()
        .iter()
        .map(|o| o["@odata.type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        BTreeSet::from(["#microsoft.graph.group", "#microsoft.graph.user"])
    );
    let only_users = c.post(
        "/directoryObjects/getByIds",
        &json!({"ids": [id(1), id(100)], "types": ["user"]}),
    );
    assert_eq!(only_users.values().len(), 1);
    let ids: Vec<String> = (0..1001).map(id).collect();
    let over = c.post("/directoryObjects/getByIds", &json!({ "ids": ids }));
    assert_eq!(over.status, 400);
    assert_eq!(over.code(), "Request_BadRequest");
}

#[test]
fn every_resource_is_served() {
    let sim = sim_with_tenant();
    let mut sp = service_principal(300);
    sp["oauth2PermissionGrants"] =
        json!([{"id": id(900), "resourceId": id(301), "scope": "User.Read"}]);
    sp["appRoleAssignedTo"] = json!([{"id": id(901), "principalId": id(1), "appRoleId": id(5)}]);
    let mut g = group(100, &[1, 2]);
    g["owners"] = json!([id(3)]);
    sim.load(
        "contoso",
        &[
            user(1, "Sales"),
            user(2, "Sales"),
            user(3, "IT"),
            g,
            json!({"type": "application", "id": id(200), "displayName": "App", "appId": id(1_000_300), "signInAudience": "AzureADMyOrg"}),
            sp,
            service_principal(301),
            json!({"type": "conditionalAccessPolicy", "id": id(400), "displayName": "MFA", "state": "enabled", "conditions": {"users": {"includeUsers": ["All"]}}}),
            json!({"type": "namedLocation", "@odata.type": "#microsoft.graph.countryNamedLocation", "id": id(500), "displayName": "FR", "countriesAndRegions": ["FR"]}),
        ],
    );
    let c = sim.client("contoso");
    let members = c.get(&format!("/groups/{}/members", id(100)));
    assert_eq!(members.values().len(), 2);
    assert_eq!(members.values()[0]["@odata.type"], "#microsoft.graph.user");
    let owners = c.get(&format!("/groups/{}/owners", id(100)));
    assert_eq!(owners.values()[0]["id"], id(3));
    assert_eq!(c.get("/groups").values().len(), 1);
    let apps = c.get("/applications");
    assert_eq!(apps.values()[0]["signInAudience"], "AzureADMyOrg");
    assert_eq!(c.get("/servicePrincipals").values().len(), 2);

    let assigned = c.get(&format!("/servicePrincipals/{}/appRoleAssignedTo", id(300)));
    let a = &assigned.values()[0];
    assert_eq!(a["id"], id(901));
    assert_eq!(a["principalId"], id(1));
    assert_eq!(a["principalType"], "User");
    assert_eq!(a["resourceId"], id(300));
    assert_eq!(a["appRoleId"], id(5));

    let grants = c.get("/oauth2PermissionGrants");
    let g = &grants.values()[0];
    assert_eq!(g["id"], id(900));
    assert_eq!(g["clientId"], id(300));
    assert_eq!(g["consentType"], "AllPrincipals");
    assert_eq!(g["resourceId"], id(301));
    assert_eq!(g["scope"], "User.Read");

    let policies = c.get("/identity/conditionalAccess/policies");
    assert_eq!(policies.values()[0]["state"], "enabled");
    let locations = c.get("/identity/conditionalAccess/namedLocations");
    assert_eq!(
        locations.values()[0]["@odata.type"],
        "#microsoft.graph.countryNamedLocation"
    );

    let methods = c.get("/policies/authenticationMethodsPolicy");
    assert_eq!(methods.status, 200);
    assert_eq!(methods.body["id"], "authenticationMethodsPolicy");
    assert_eq!(
        methods.body["authenticationMethodConfigurations"]
            .as_array()
            .unwrap()
            .len(),
        8
    );
    let authz = c.get("/policies/authorizationPolicy");
    assert_eq!(authz.body["id"], "authorizationPolicy");
    assert_eq!(authz.body["blockMsolPowerShell"], false);
    let org = c.get("/organization");
    assert_eq!(org.values().len(), 1);
    assert_eq!(org.values()[0]["displayName"], "contoso");

    let unknown = c.get("/devices");
    assert_eq!(unknown.status, 400);
}

#[test]
fn a_users_groups_and_app_role_assignments() {
    let sim = sim_with_tenant();
    let mut objects: Vec<_> = (1..=3).map(|n| user(n, "Sales")).collect();
    // User 1 is in groups 12, 10 and 14 (group 11 does not hold it; 14 is deleted below).
    objects.push(group(10, &[1, 2]));
    objects.push(group(11, &[2]));
    objects.push(group(12, &[1]));
    objects.push(group(14, &[1, 3]));
    let mut sp = service_principal(20);
    sp["appRoleAssignedTo"] = json!([
        {"id": id(31), "principalId": id(1), "appRoleId": id(0)},
        {"id": id(30), "principalId": id(2), "appRoleId": id(0)},
    ]);
    objects.push(sp);
    sim.load("contoso", &objects);
    let c = sim.client("contoso");
    assert_eq!(c.delete(&format!("/groups/{}", id(14))).status, 204);

    let groups: Vec<String> = c
        .get_all(&format!(
            "/users/{}/memberOf?$top=1&$select=id,displayName",
            id(1)
        ))
        .iter()
        .map(|g| {
            assert_eq!(g["@odata.type"], "#microsoft.graph.group");
            g["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        groups,
        vec![id(10), id(12)],
        "active groups, in id order, paged"
    );
    assert!(c.get_all(&format!("/users/{}/memberOf", id(3))).is_empty());

    let assignments = c.get_all(&format!("/users/{}/appRoleAssignments", id(1)));
    assert_eq!(assignments.len(), 1);
    assert_eq!(assignments[0]["id"], id(31));
    assert_eq!(assignments[0]["resourceId"], id(20));
    assert_eq!(assignments[0]["principalId"], id(1));

    assert_eq!(c.delete(&format!("/users/{}", id(1))).status, 204);
    let gone = c.get(&format!("/users/{}/memberOf", id(1)));
    assert_eq!(
        (gone.status, gone.code()),
        (404, "Request_ResourceNotFound")
    );
    assert_eq!(
        c.get(&format!("/users/{}/appRoleAssignments", id(1)))
            .status,
        404
    );
}
