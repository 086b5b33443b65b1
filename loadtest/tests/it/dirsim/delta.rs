//! Delta queries: a full sync closed by a delta link, then changes and removals
//! (`@removed` "changed" for soft deletes, "deleted" once purged), and expired tokens (410).

use std::collections::BTreeMap;

use serde_json::{json, Value as Json};

use super::support::{group, id, sim_with_tenant, user, Client};

/// Follows next links to the delta link; returns the items and the delta link.
fn sync(c: &Client<'_>, start: &str) -> (Vec<Json>, String) {
    let mut items = Vec::new();
    let mut url = start.to_owned();
    loop {
        let r = c.get(&url);
        assert_eq!(r.status, 200, "{:?}", r.body);
        items.extend(r.values().iter().cloned());
        if let Some(next) = r.next_link() {
            assert!(r.body.get("@odata.deltaLink").is_none());
            url = next;
        } else {
            return (
                items,
                r.body["@odata.deltaLink"].as_str().unwrap().to_owned(),
            );
        }
    }
}

#[test]
fn delta_returns_changes_and_removals_after_a_full_sync() {
    let sim = sim_with_tenant();
    let mut objects: Vec<Json> = (1..=7).map(|n| user(n, "Sales")).collect();
    objects.push(group(100, &[1]));
    sim.load("contoso", &objects);
    let c = sim.client("contoso");

    let (full, link) = sync(&c, "/users/delta?$top=3&$select=displayName,department");
    assert_eq!(full.len(), 7);
    assert!(full.iter().all(|u| u.get("@removed").is_none()));
    assert!(
        link.starts_with(&format!("{}/contoso/v1.0/users/delta?", sim.base)),
        "{link}"
    );

    let (nothing, link) = sync(&c, &link);
    assert!(nothing.is_empty(), "{nothing:?}");

    assert_eq!(
        c.patch(&format!("/users/{}", id(2)), &json!({"department": "IT"}))
            .status,
        204
    );
    assert_eq!(c.delete(&format!("/users/{}", id(3))).status, 204);
    assert_eq!(c.delete(&format!("/users/{}", id(4))).status, 204);
    assert_eq!(
        c.delete(&format!("/directory/deletedItems/{}", id(4)))
            .status,
        204
    );
    let created = c.post(
        "/users",
        &json!({"displayName": "New", "department": "Ops"}),
    );
    let new_id = created.body["id"].as_str().unwrap().to_owned();

    let (changes, link) = sync(&c, &link);
    let by_id: BTreeMap<String, Json> = changes
        .iter()
        .map(|u| (u["id"].as_str().unwrap().to_owned(), u.clone()))
        .collect();
    assert_eq!(by_id.len(), 4, "{changes:?}");
    assert_eq!(by_id[&id(2)]["department"], "IT");
    assert_eq!(by_id[&id(3)]["@removed"]["reason"], "changed");
    assert_eq!(by_id[&id(4)]["@removed"]["reason"], "deleted");
    assert_eq!(by_id[&new_id]["displayName"], "New");

    // Groups have their own delta; a purged member changes the group.
    let (groups, glink) = sync(&c, "/groups/delta");
    assert_eq!(groups.len(), 1);
    assert_eq!(c.delete(&format!("/users/{}", id(1))).status, 204);
    let (unchanged, glink) = sync(&c, &glink);
    assert!(unchanged.is_empty(), "a soft-deleted member keeps its link");
    assert_eq!(
        c.delete(&format!("/directory/deletedItems/{}", id(1)))
            .status,
        204
    );
    let (changed, _) = sync(&c, &glink);
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0]["id"], id(100));

    // Tokens expire after 7 simulated days.
    sim.advance_days(8);
    let c = sim.client("contoso");
    let gone = c.get(&link);
    assert_eq!(gone.status, 410);
}
