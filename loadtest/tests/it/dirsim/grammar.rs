//! Graph's URL grammar has more than one spelling, and Microsoft's SDKs use them: a type cast
//! with the namespace alias (`graph.user`), a function called with parentheses (`delta()`),
//! an operation qualified with its namespace (`microsoft.graph.delta()`,
//! `microsoft.graph.restore`). Every spelling answers as the plain one does.

use serde_json::{json, Value as Json};

use super::support::{group, id, service_principal, sim_with_tenant, user};

/// The ids of a collection answer.
fn ids(values: &[Json]) -> Vec<String> {
    values
        .iter()
        .map(|v| v["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The directory collections and the object of each that [`one_of_each`] holds.
const ONE_OF_EACH: [(&str, u64); 4] = [
    ("users", 10),
    ("groups", 20),
    ("applications", 30),
    ("servicePrincipals", 40),
];

/// A tenant with one user, group, application and service principal.
fn one_of_each() -> super::support::Sim {
    let sim = sim_with_tenant();
    let mut app = json!({"type": "application", "id": id(30), "displayName": "App"});
    app["appId"] = json!(id(31));
    sim.load(
        "contoso",
        &[
            user(10, "Sales"),
            group(20, &[]),
            app,
            service_principal(40),
        ],
    );
    sim
}

#[test]
fn deleted_items_casts_take_the_namespace_alias() {
    let sim = one_of_each();
    let c = sim.client("contoso");
    for (coll, n) in ONE_OF_EACH {
        assert_eq!(c.delete(&format!("/{coll}/{}", id(n))).status, 204);
    }
    for (cast, n) in [
        ("user", 10),
        ("group", 20),
        ("application", 30),
        ("servicePrincipal", 40),
    ] {
        let full = c.get(&format!("/directory/deletedItems/microsoft.graph.{cast}"));
        assert_eq!(full.status, 200, "{cast}: {:?}", full.body);
        assert_eq!(ids(full.values()), vec![id(n)], "{cast}");
        let alias = c.get(&format!("/directory/deletedItems/graph.{cast}?$select=id"));
        assert_eq!(alias.status, 200, "graph.{cast}: {:?}", alias.body);
        assert_eq!(ids(alias.values()), vec![id(n)], "graph.{cast}");
    }
    let unknown = c.get("/directory/deletedItems/graph.device");
    assert_eq!(unknown.status, 400);
}

#[test]
fn delta_is_called_with_or_without_parentheses_and_namespace() {
    let sim = one_of_each();
    let c = sim.client("contoso");
    for (coll, n) in ONE_OF_EACH {
        for form in [
            "delta",
            "delta()",
            "microsoft.graph.delta()",
            "microsoft.graph.delta",
            "graph.delta()",
        ] {
            let r = c.get(&format!("/{coll}/{form}?$select=id"));
            assert_eq!(r.status, 200, "{coll}/{form}: {:?}", r.body);
            assert_eq!(ids(r.values()), vec![id(n)], "{coll}/{form}");
            let link = r.body["@odata.deltaLink"].as_str().unwrap_or_default();
            assert!(
                link.contains(&format!("/{coll}/delta?")),
                "{coll}/{form}: the delta link is the plain form: {link}"
            );
        }
    }
}

#[test]
fn actions_take_their_namespace_but_no_parentheses() {
    let sim = sim_with_tenant();
    sim.load(
        "contoso",
        &[user(1, "Sales"), user(2, "Sales"), user(3, "IT")],
    );
    let c = sim.client("contoso");
    let body = json!({"ids": [id(1), id(2)], "types": ["user"]});
    for form in ["getByIds", "microsoft.graph.getByIds", "graph.getByIds"] {
        let r = c.post(&format!("/directoryObjects/{form}"), &body);
        assert_eq!(r.status, 200, "{form}: {:?}", r.body);
        let mut got = ids(r.values());
        got.sort();
        assert_eq!(got, vec![id(1), id(2)], "{form}");
    }
    assert_eq!(
        c.post("/directoryObjects/getByIds()", &body).status,
        400,
        "an action is not called like a function"
    );

    for (form, n) in [
        ("restore", 1),
        ("microsoft.graph.restore", 2),
        ("graph.restore", 3),
    ] {
        assert_eq!(c.delete(&format!("/users/{}", id(n))).status, 204);
        let r = c.post_empty(&format!("/directory/deletedItems/{}/{form}", id(n)));
        assert_eq!(r.status, 200, "{form}: {:?}", r.body);
        assert_eq!(r.body["id"], id(n));
        assert_eq!(c.get(&format!("/users/{}?$select=id", id(n))).status, 200);
    }

    // Conditional access has its own recycle bin and restore action.
    let created = c.post(
        "/identity/conditionalAccess/policies",
        &json!({"displayName": "P", "state": "enabled"}),
    );
    assert_eq!(created.status, 201, "{:?}", created.body);
    let pid = created.body["id"].as_str().unwrap().to_owned();
    for form in ["restore", "microsoft.graph.restore", "graph.restore"] {
        let policy = format!("/identity/conditionalAccess/policies/{pid}");
        assert_eq!(c.delete(&policy).status, 204);
        let r = c.post_empty(&format!(
            "/identity/conditionalAccess/deletedItems/policies/{pid}/{form}"
        ));
        assert_eq!(r.status, 200, "{form}: {:?}", r.body);
        assert_eq!(c.get(&policy).status, 200, "{form}");
    }
}
