//! Many dynamic groups of every rule shape, loaded in bulk with users before and after them,
//! then users changed, disabled and deleted through Graph: each group's members are exactly
//! the active users its rule matches (checked against a plain evaluation in the test).

use serde_json::{json, Value as Json};

use super::support::{id, sim_with_tenant, Client};

const DEPARTMENTS: [&str; 4] = ["Sales", "Engineering", "Sales Ops", "HR"];
const CITIES: [&str; 3] = ["Berlin", "berlin", "Lagos"];

#[derive(Clone)]
struct U {
    n: u64,
    department: String,
    city: String,
    enabled: bool,
    deleted: bool,
}

impl U {
    fn json(&self) -> Json {
        json!({
            "type": "user",
            "id": id(self.n),
            "displayName": format!("User {}", self.n),
            "department": self.department,
            "city": self.city,
            "accountEnabled": self.enabled,
        })
    }
}

/// A rule's text and what it means, evaluated plainly.
type Meaning = fn(&U) -> bool;

fn rules() -> Vec<(&'static str, Meaning)> {
    vec![
        (r#"user.department -eq "Sales""#, |u| {
            u.department == "Sales"
        }),
        (r#"user.department -eq "SALES OPS""#, |u| {
            u.department == "Sales Ops"
        }),
        (
            r#"user.department -eq "HR" -or user.city -eq "lagos""#,
            |u| u.department == "HR" || u.city == "Lagos",
        ),
        (
            r#"(user.department -eq "Engineering") -and (user.accountEnabled -eq true)"#,
            |u| u.department == "Engineering" && u.enabled,
        ),
        (r#"user.city -eq "BERLIN""#, |u| {
            u.city.eq_ignore_ascii_case("berlin")
        }),
        (r#"user.department -startsWith "sales""#, |u| {
            u.department.starts_with("Sales")
        }),
        (r#"user.department -ne "Sales""#, |u| {
            u.department != "Sales"
        }),
        (r#"user.accountEnabled -eq false"#, |u| !u.enabled),
        (
            r#"user.city -contains "er" -or user.department -eq "HR""#,
            |u| u.city.to_lowercase().contains("er") || u.department == "HR",
        ),
    ]
}

fn user(n: u64) -> U {
    U {
        n,
        department: DEPARTMENTS[(n % 4) as usize].into(),
        city: CITIES[(n / 4 % 3) as usize].into(),
        enabled: n % 7 >= 1,
        deleted: false,
    }
}

fn group(n: u64, rule: &str) -> Json {
    json!({
        "type": "group",
        "id": id(n),
        "displayName": format!("Dynamic {n}"),
        "groupTypes": ["DynamicMembership"],
        "membershipRule": rule,
        "securityEnabled": true,
        "mailEnabled": false,
        // Loaded members are replaced by the computed ones.
        "members": [id(1), id(2)],
    })
}

fn check(c: &Client<'_>, users: &[U], groups: &[(u64, Meaning)]) {
    for (g, meaning) in groups {
        let mut want: Vec<String> = users
            .iter()
            .filter(|u| !u.deleted && meaning(u))
            .map(|u| id(u.n))
            .collect();
        want.sort();
        let mut got: Vec<String> = c
            .get_all(&format!("/groups/{}/members?$top=999&$select=id", id(*g)))
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect();
        got.sort();
        assert_eq!(got, want, "group {g}");
    }
}

#[test]
fn many_dynamic_groups_get_exactly_the_members_their_rules_select() {
    let sim = sim_with_tenant();
    let mut users: Vec<U> = (1..=600).map(user).collect();
    let shapes = rules();
    let groups: Vec<(u64, Meaning)> = (0..180u64)
        .map(|k| (10_000 + k, shapes[(k as usize) % shapes.len()].1))
        .collect();
    let group_json: Vec<Json> = (0..180u64)
        .map(|k| group(10_000 + k, shapes[(k as usize) % shapes.len()].0))
        .collect();
    // Users before the groups, the groups with more users in the same load, users after.
    sim.load(
        "contoso",
        &users[..200].iter().map(U::json).collect::<Vec<_>>(),
    );
    let mut mixed: Vec<Json> = users[200..300].iter().map(U::json).collect();
    mixed.extend(group_json.iter().cloned());
    mixed.extend(users[300..400].iter().map(U::json));
    sim.load("contoso", &mixed);
    sim.load(
        "contoso",
        &users[400..].iter().map(U::json).collect::<Vec<_>>(),
    );
    // Reloading users with other values in bulk moves them.
    for u in users.iter_mut().filter(|u| u.n % 5 == 0) {
        u.department = "HR".into();
        u.city = "Berlin".into();
    }
    sim.load(
        "contoso",
        &users
            .iter()
            .filter(|u| u.n % 5 == 0)
            .map(U::json)
            .collect::<Vec<_>>(),
    );
    let c = sim.client("contoso");
    check(&c, &users, &groups);

    // Changes through Graph: department, disabling, soft delete, restore.
    for u in users.iter_mut().filter(|u| u.n % 11 == 0) {
        u.department = "Sales".into();
        let r = c.patch(
            &format!("/users/{}", id(u.n)),
            &json!({"department": "Sales"}),
        );
        assert_eq!(r.status, 204);
    }
    for u in users.iter_mut().filter(|u| u.n % 13 == 0) {
        u.enabled = !u.enabled;
        let r = c.patch(
            &format!("/users/{}", id(u.n)),
            &json!({"accountEnabled": u.enabled}),
        );
        assert_eq!(r.status, 204);
    }
    for u in users.iter_mut().filter(|u| u.n % 17 == 0) {
        u.deleted = true;
        assert_eq!(c.delete(&format!("/users/{}", id(u.n))).status, 204);
    }
    for u in users.iter_mut().filter(|u| u.n % 34 == 0) {
        u.deleted = false;
        let r = c.post_empty(&format!("/directory/deletedItems/{}/restore", id(u.n)));
        assert_eq!(r.status, 200);
    }
    check(&c, &users, &groups);

    // A group's rule changed through Graph is recomputed.
    let r = c.patch(
        &format!("/groups/{}", id(10_000)),
        &json!({"membershipRule": "user.city -eq \"lagos\""}),
    );
    assert_eq!(r.status, 204);
    let mut changed = groups.clone();
    changed[0].1 = |u| u.city == "Lagos";
    check(&c, &users, &changed);
}
