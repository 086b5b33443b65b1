//! Throttling and faults: the read bucket with its costs, the write window, conditional access
//! 429s without Retry-After, injected 503s and dropped connections, and the counters on
//! `/metrics` and `/_admin/counters`.

use serde_json::json;

use super::support::{agent, id, sim_with_tenant, user};

#[test]
fn throttling_is_off_by_default() {
    let sim = sim_with_tenant();
    let c = sim.client("contoso");
    for _ in 0..30 {
        assert_eq!(c.get("/users").status, 200);
        assert_eq!(c.get("/identity/conditionalAccess/policies").status, 200);
    }
    assert_eq!(sim.counters()["throttledTotal"], 0);
}

#[test]
fn reads_spend_resource_units_from_a_bucket() {
    let sim = sim_with_tenant();
    sim.settings(json!({"read_units_per_10s": 5}));
    let c = sim.client("contoso");
    let a = c.get("/users");
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-ms-resource-unit"), Some("2"));
    assert_eq!(c.get("/users").status, 200);
    let sel = c.get("/users?$select=id");
    assert_eq!(sel.status, 200);
    assert_eq!(
        sel.header("x-ms-resource-unit"),
        Some("1"),
        "$select takes one off"
    );
    let limited = c.get("/users");
    assert_eq!(limited.status, 429);
    assert_eq!(limited.code(), "TooManyRequests");
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=10).contains(&retry), "{retry}");
    let counters = sim.counters();
    assert_eq!(counters["throttled"]["read"], 1);
    let metrics = sim.get("/metrics");
    let text = metrics.body.as_str().unwrap();
    assert!(
        text.contains("rewind_dirsim_throttled_total{scope=\"read\"} 1"),
        "{text}"
    );
}

#[test]
fn writes_are_limited_per_window() {
    let sim = sim_with_tenant();
    sim.load("contoso", &[user(1, "Sales")]);
    sim.settings(json!({"write_requests_per_window": 3, "write_window_secs": 3600}));
    let c = sim.client("contoso");
    let u = format!("/users/{}", id(1));
    for i in 0..3 {
        assert_eq!(
            c.patch(&u, &json!({"jobTitle": format!("t{i}")})).status,
            204
        );
    }
    let limited = c.patch(&u, &json!({"jobTitle": "t3"}));
    assert_eq!(limited.status, 429);
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!(retry > 3000, "{retry}");
    assert_eq!(
        c.get(&format!("{u}?$select=jobTitle")).body["jobTitle"],
        "t2"
    );
    assert_eq!(c.get(&u).status, 200, "reads are not writes");
    let counters = sim.counters();
    assert_eq!(counters["writes"], 3);
    assert_eq!(counters["writesInWindow"]["contoso"]["current"], 3);
    assert_eq!(counters["throttled"]["write"], 1);
    let text = sim.get("/metrics").body.as_str().unwrap().to_owned();
    assert!(
        text.contains("rewind_dirsim_writes_in_window{tenant=\"contoso\"} 3"),
        "{text}"
    );
}

#[test]
fn conditional_access_answers_429_without_retry_after() {
    let sim = sim_with_tenant();
    sim.settings(json!({"conditional_access_throttle": true}));
    let c = sim.client("contoso");
    assert_eq!(c.get("/identity/conditionalAccess/policies").status, 200);
    let limited = c.get("/identity/conditionalAccess/namedLocations");
    assert_eq!(limited.status, 429);
    assert!(limited.header("retry-after").is_none());
    assert_eq!(sim.counters()["throttled"]["conditional_access"], 1);
    assert_eq!(
        c.get("/users").status,
        200,
        "other resources are not limited"
    );
}

#[test]
fn injected_503s_and_dropped_connections() {
    let sim = sim_with_tenant();
    let c = sim.client("contoso");
    sim.settings(json!({"error_503_rate": 1.0, "retry_after_503_secs": 2}));
    for _ in 0..3 {
        let r = c.get("/users");
        assert_eq!(r.status, 503);
        assert_eq!(r.header("retry-after"), Some("2"));
    }
    assert_eq!(sim.counters()["unavailable"], 3);
    let text = sim.get("/metrics").body.as_str().unwrap().to_owned();
    assert!(text.contains("rewind_dirsim_unavailable_total 3"));

    sim.settings(json!({"error_503_rate": 0.0, "drop_rate": 1.0}));
    let result = agent()
        .get(format!("{}/users", c.graph))
        .header("Authorization", &format!("Bearer {}", c.token))
        .call();
    let failed = match result {
        Err(_) => true,
        Ok(mut r) => r.body_mut().read_to_string().is_err(),
    };
    assert!(failed, "the connection was cut");
    assert!(sim.counters()["dropped"].as_u64().unwrap() >= 1);

    sim.settings(json!({"drop_rate": 0.0}));
    assert_eq!(c.get("/users").status, 200);
    let bad = sim.patch("/_admin/settings", &json!({"no_such_setting": 1}));
    assert_eq!(bad.status, 400);
}

#[test]
fn requests_are_counted_by_route() {
    let sim = sim_with_tenant();
    sim.load("contoso", &[user(1, "Sales")]);
    let c = sim.client("contoso");
    c.get("/users");
    c.get("/users");
    c.get(&format!("/users/{}", id(1)));
    c.get(&format!("/users/{}", id(2)));
    let counters = sim.counters();
    assert_eq!(counters["responses"]["404"], 1);
    assert_eq!(counters["requests"]["GET /users"], 2);
    assert_eq!(counters["requests"]["GET /users/{id}"], 2);
    let text = sim.get("/metrics").body.as_str().unwrap().to_owned();
    assert!(
        text.contains("rewind_dirsim_requests_total{route=\"GET /users\"} 2"),
        "{text}"
    );
    assert!(text.contains("# TYPE rewind_dirsim_requests_total counter"));
    assert!(
        text.contains("rewind_dirsim_responses_total{status=\"200\"} 3"),
        "{text}"
    );
}

#[test]
fn injected_write_429s_and_503s_leave_reads_alone() {
    let sim = sim_with_tenant();
    sim.load("contoso", &[user(1, "Sales")]);
    let c = sim.client("contoso");
    let u = format!("/users/{}", id(1));
    sim.settings(json!({"write_429_rate": 1.0, "retry_after_429_min_secs": 2, "retry_after_429_max_secs": 2}));
    let r = c.patch(&u, &json!({"jobTitle": "x"}));
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("2"));
    assert_eq!(c.get(&u).status, 200);
    assert!(
        c.get(&format!("{u}?$select=jobTitle")).body["jobTitle"].is_null(),
        "not applied"
    );
    sim.settings(json!({"write_429_rate": 0.0, "write_503_rate": 1.0}));
    assert_eq!(c.patch(&u, &json!({"jobTitle": "x"})).status, 503);
    assert_eq!(c.get(&u).status, 200);
    let counters = sim.counters();
    assert_eq!(counters["throttled"]["injected"], 1);
    assert_eq!(counters["unavailable"], 1);
    assert_eq!(counters["writes"], 0, "refused writes are not admitted");
    sim.settings(json!({"write_503_rate": 0.0}));
    assert_eq!(c.patch(&u, &json!({"jobTitle": "x"})).status, 204);
}
