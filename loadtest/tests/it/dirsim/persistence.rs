//! Saving the simulator's state and loading it at the next start.

use rewind_loadtest::dirsim::DirsimConfig;
use serde_json::json;

use super::support::{group, id, service_principal, user, Sim};

#[test]
fn state_survives_a_save_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("dirsim.state");
    let config = DirsimConfig {
        state: Some(state.clone()),
        ..DirsimConfig::default()
    };

    let sim = Sim::with(config.clone());
    sim.tenant("contoso");
    sim.tenant("fabrikam");
    let mut sp = service_principal(300);
    sp["oauth2PermissionGrants"] =
        json!([{"id": id(900), "resourceId": id(301), "scope": "User.Read"}]);
    let mut synced = user(3, "Ops");
    synced["onPremisesSyncEnabled"] = json!(true);
    sim.load(
        "contoso",
        &[
            user(1, "Sales"),
            user(2, "IT"),
            synced,
            group(100, &[1, 2]),
            sp,
            service_principal(301),
        ],
    );
    let c = sim.client("contoso");
    assert_eq!(c.delete(&format!("/users/{}", id(2))).status, 204);
    assert_eq!(
        c.patch(&format!("/users/{}", id(1)), &json!({"city": "Rome"}))
            .status,
        204
    );
    sim.settings(json!({"write_window_secs": 60}));
    sim.advance_days(3);
    let select = format!("/users/{}?$select=city,department,displayName", id(1));
    let mut before_user = c.get(&select).body;
    before_user
        .as_object_mut()
        .unwrap()
        .remove("@odata.context");
    let before_clock = sim.get("/_admin/clock").body["now"].as_i64().unwrap();
    let saved = sim.post("/_admin/save", &json!({}));
    assert_eq!(saved.status, 200, "{:?}", saved.body);
    assert!(state.exists());
    sim.stop();

    let sim = Sim::with(config);
    let c = sim.client("contoso");
    let mut after_user = c.get(&select).body;
    after_user.as_object_mut().unwrap().remove("@odata.context");
    assert_eq!(after_user, before_user);
    assert_eq!(
        c.get(&format!("/directory/deletedItems/{}", id(2))).status,
        200
    );
    let members = c.get(&format!("/groups/{}/members", id(100)));
    assert_eq!(members.values().len(), 1);
    assert_eq!(c.get("/oauth2PermissionGrants").values()[0]["id"], id(900));
    assert_eq!(
        c.patch(&format!("/users/{}", id(3)), &json!({"department": "x"}))
            .status,
        400,
        "still synced"
    );
    assert_eq!(sim.get("/_admin/settings").body["write_window_secs"], 60);
    let after_clock = sim.get("/_admin/clock").body["now"].as_i64().unwrap();
    assert!(
        after_clock >= before_clock,
        "the simulated clock keeps its offset"
    );
    let tenants = sim.get("/_admin/tenants");
    assert_eq!(tenants.body.as_array().unwrap().len(), 2);
    assert_eq!(
        sim.client("fabrikam").get("/organization").values().len(),
        1
    );
}
