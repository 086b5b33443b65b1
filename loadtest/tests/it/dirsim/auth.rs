//! Token endpoint and bearer-token checks: Graph's 401s for missing, bad, foreign and expired
//! tokens, and for a bad client secret.

use serde_json::json;

use super::support::{agent, sim_with_tenant, Sim};

#[test]
fn token_endpoint_issues_bearer_tokens_and_refuses_bad_credentials() {
    let sim = sim_with_tenant();
    let ok = sim.token_request("contoso", "app-contoso", "secret-contoso");
    assert_eq!(ok.status, 200);
    assert_eq!(ok.body["token_type"], "Bearer");
    assert_eq!(ok.body["expires_in"], 3599);
    assert!(ok.body["access_token"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));

    let bad_secret = sim.token_request("contoso", "app-contoso", "wrong");
    assert_eq!(bad_secret.status, 401);
    assert_eq!(bad_secret.code(), "invalid_client");
    assert!(bad_secret.body["error"]["innerError"]["request-id"].is_string());

    let bad_client = sim.token_request("contoso", "someone-else", "secret-contoso");
    assert_eq!(bad_client.status, 400);
    assert_eq!(bad_client.code(), "unauthorized_client");

    let no_tenant = sim.token_request("fabrikam", "app-fabrikam", "secret-fabrikam");
    assert_eq!(no_tenant.status, 400);
}

#[test]
fn graph_requires_a_live_token_of_the_same_tenant() {
    let sim = sim_with_tenant();
    sim.tenant("fabrikam");
    let contoso = sim.client("contoso");
    assert_eq!(contoso.get("/users").status, 200);

    let anonymous = sim.get("/contoso/v1.0/users");
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.code(), "InvalidAuthenticationToken");
    assert!(anonymous.body["error"]["innerError"]["date"].is_string());
    assert!(anonymous.body["error"]["innerError"]["request-id"].is_string());

    let bogus = agent()
        .get(format!("{}/contoso/v1.0/users", sim.base))
        .header("Authorization", "Bearer not-a-token")
        .call()
        .unwrap();
    assert_eq!(bogus.status().as_u16(), 401);

    // A tenant is also addressed by its organization (tenant) id.
    let org_id = contoso.get("/organization").values()[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let by_id = sim.token_request(&org_id, "app-contoso", "secret-contoso");
    assert_eq!(by_id.status, 200);
    let token = by_id.body["access_token"].as_str().unwrap();
    let r = agent()
        .get(format!("{}/{org_id}/v1.0/users?$top=1", sim.base))
        .header("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    let mut fabrikam = sim.client("fabrikam");
    fabrikam.graph = format!("{}/contoso/v1.0", sim.base);
    let foreign = fabrikam.get("/users");
    assert_eq!(foreign.status, 401, "a token of another tenant is refused");
    assert_eq!(foreign.code(), "InvalidAuthenticationToken");
}

#[test]
fn expired_tokens_get_401() {
    let sim = Sim::start();
    sim.tenant("contoso");
    sim.settings(json!({"token_lifetime_secs": 0}));
    let client = sim.client("contoso");
    let r = client.get("/users");
    assert_eq!(r.status, 401);
    assert_eq!(r.code(), "InvalidAuthenticationToken");
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("expired"));

    sim.settings(json!({"token_lifetime_secs": 3600}));
    let fresh = sim.client("contoso");
    assert_eq!(fresh.get("/users").status, 200);
}
