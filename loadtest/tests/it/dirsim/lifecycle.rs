//! Entra's lifecycle: purge after 30 simulated days, hard delete, on-premises synced objects
//! refusing cloud writes, and dynamic groups recomputed by the simulator.

use serde_json::json;

use super::support::{group, id, sim_with_tenant, user};

#[test]
fn soft_deleted_objects_are_purged_after_30_simulated_days() {
    let sim = sim_with_tenant();
    sim.load(
        "contoso",
        &[user(1, "Sales"), user(2, "IT"), group(100, &[1, 2])],
    );
    let c = sim.client("contoso");
    assert_eq!(c.delete(&format!("/users/{}", id(1))).status, 204);
    assert_eq!(c.delete(&format!("/groups/{}", id(100))).status, 204);

    let clock = sim.advance_days(29);
    assert_eq!(clock["purged"], 0);
    assert_eq!(
        c.get(&format!("/directory/deletedItems/{}", id(1))).status,
        200
    );
    let c = sim.client("contoso");
    assert_eq!(
        c.post_empty(&format!("/directory/deletedItems/{}/restore", id(100)))
            .status,
        200
    );

    let clock = sim.advance_days(2);
    assert_eq!(clock["purged"], 1);
    let c = sim.client("contoso");
    assert_eq!(
        c.get(&format!("/directory/deletedItems/{}", id(1))).status,
        404
    );
    assert_eq!(
        c.post_empty(&format!("/directory/deletedItems/{}/restore", id(1)))
            .status,
        404
    );
    assert!(c
        .get("/directory/deletedItems/microsoft.graph.user")
        .values()
        .is_empty());
    let members = c.get(&format!("/groups/{}/members", id(100)));
    assert_eq!(members.values().len(), 1);
    assert_eq!(members.values()[0]["id"], id(2));
    // A purged object is gone: a reference to it is a missing member.
    let r = c.post(
        &format!("/groups/{}/members/$ref", id(100)),
        &json!({"@odata.id": format!("https://graph.microsoft.com/v1.0/directoryObjects/{}", id(1))}),
    );
    assert_eq!(r.status, 404);
}

#[test]
fn permanent_delete_from_the_recycle_bin() {
    let sim = sim_with_tenant();
    sim.load("contoso", &[user(1, "Sales")]);
    let c = sim.client("contoso");
    assert_eq!(
        c.delete(&format!("/directory/deletedItems/{}", id(1)))
            .status,
        404,
        "only deleted items"
    );
    assert_eq!(c.delete(&format!("/users/{}", id(1))).status, 204);
    assert_eq!(
        c.delete(&format!("/directory/deletedItems/{}", id(1)))
            .status,
        204
    );
    assert_eq!(
        c.get(&format!("/directory/deletedItems/{}", id(1))).status,
        404
    );
    assert_eq!(
        c.post_empty(&format!("/directory/deletedItems/{}/restore", id(1)))
            .status,
        404
    );
    assert_eq!(c.get(&format!("/users/{}", id(1))).status, 404);
}

#[test]
fn synced_objects_refuse_cloud_writes_of_synced_properties() {
    let sim = sim_with_tenant();
    let mut synced = user(1, "Sales");
    synced["onPremisesSyncEnabled"] = json!(true);
    let mut synced_group = group(100, &[]);
    synced_group["onPremisesSyncEnabled"] = json!(true);
    sim.load("contoso", &[synced, user(2, "IT"), synced_group]);
    let c = sim.client("contoso");
    let u = format!("/users/{}", id(1));

    let r = c.patch(&u, &json!({"department": "Support"}));
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), "Request_BadRequest");
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("on-premises"));
    assert_eq!(
        c.get(&format!("{u}?$select=department")).body["department"],
        "Sales"
    );
    assert_eq!(
        c.patch(&u, &json!({"usageLocation": "FR"})).status,
        204,
        "cloud-mastered property"
    );
    assert_eq!(c.delete(&u).status, 400);
    let add = c.post(
        &format!("/groups/{}/members/$ref", id(100)),
        &json!({"@odata.id": format!("https://graph.microsoft.com/v1.0/directoryObjects/{}", id(2))}),
    );
    assert_eq!(add.status, 400);
    assert_eq!(
        c.get(&format!("{u}?$select=onPremisesSyncEnabled")).body["onPremisesSyncEnabled"],
        true
    );

    // On-premises sync itself (the admin route) changes them.
    let r = sim.patch(
        &format!("/_admin/tenants/contoso/objects/{}", id(1)),
        &json!({"department": "Support"}),
    );
    assert_eq!(r.status, 204);
    assert_eq!(
        c.get(&format!("{u}?$select=department")).body["department"],
        "Support"
    );
}

#[test]
fn dynamic_groups_are_recomputed_when_users_change() {
    let sim = sim_with_tenant();
    sim.load(
        "contoso",
        &[
            user(1, "Sales"),
            user(2, "Sales"),
            user(3, "Support"),
            json!({"type": "group", "id": id(100), "displayName": "Sales team", "securityEnabled": true,
                   "groupTypes": ["DynamicMembership"], "membershipRule": "user.department -eq \"Sales\"",
                   "membershipRuleProcessingState": "On"}),
        ],
    );
    let c = sim.client("contoso");
    let members = |c: &super::support::Client<'_>| -> Vec<String> {
        c.get(&format!("/groups/{}/members", id(100)))
            .values()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(members(&c), vec![id(1), id(2)]);
    assert_eq!(
        c.patch(
            &format!("/users/{}", id(3)),
            &json!({"department": "sales"})
        )
        .status,
        204
    );
    assert_eq!(members(&c), vec![id(1), id(2), id(3)]);
    assert_eq!(
        c.patch(
            &format!("/users/{}", id(1)),
            &json!({"department": "Marketing"})
        )
        .status,
        204
    );
    assert_eq!(members(&c), vec![id(2), id(3)]);
    assert_eq!(c.delete(&format!("/users/{}", id(2))).status, 204);
    assert_eq!(members(&c), vec![id(3)]);
    assert_eq!(
        c.post_empty(&format!("/directory/deletedItems/{}/restore", id(2)))
            .status,
        200
    );
    assert_eq!(members(&c), vec![id(2), id(3)]);
    let created = c.post(
        "/users",
        &json!({"displayName": "New", "department": "Sales", "accountEnabled": true}),
    );
    assert_eq!(created.status, 201);
    assert_eq!(members(&c).len(), 3);

    let add = c.post(
        &format!("/groups/{}/members/$ref", id(100)),
        &json!({"@odata.id": format!("https://graph.microsoft.com/v1.0/directoryObjects/{}", id(1))}),
    );
    assert_eq!(
        add.status, 400,
        "members of a dynamic group are never written"
    );
    assert_eq!(
        c.patch(
            &format!("/groups/{}", id(100)),
            &json!({"membershipRule": "user.department -eq \"Marketing\""})
        )
        .status,
        204
    );
    assert_eq!(members(&c), vec![id(1)]);

    // Users bulk-loaded after the group are evaluated against its rule as they arrive.
    sim.load("contoso", &[user(10, "Marketing"), user(11, "Sales")]);
    assert_eq!(members(&c), vec![id(1), id(10)]);
}
