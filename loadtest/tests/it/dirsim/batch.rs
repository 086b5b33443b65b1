//! `POST /$batch`: at most 20 requests, `dependsOn` with 424 for failed dependencies, and
//! inner requests throttled each on its own.

use std::collections::HashMap;

use serde_json::{json, Value as Json};

use super::support::{id, sim_with_tenant, user};

fn by_id(body: &Json) -> HashMap<String, Json> {
    body["responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_str().unwrap().to_owned(), r.clone()))
        .collect()
}

#[test]
fn batch_honours_depends_on_and_answers_424_for_failed_dependencies() {
    let sim = sim_with_tenant();
    sim.load("contoso", &[user(1, "Sales"), user(2, "IT")]);
    let c = sim.client("contoso");
    let r = c.post(
        "/$batch",
        &json!({"requests": [
            {"id": "1", "method": "GET", "url": format!("/users/{}", id(99))},
            {"id": "2", "method": "PATCH", "url": format!("/users/{}", id(2)), "dependsOn": ["1"],
             "headers": {"Content-Type": "application/json"}, "body": {"city": "Oslo"}},
            {"id": "3", "method": "PATCH", "url": format!("/users/{}", id(1)),
             "headers": {"Content-Type": "application/json"}, "body": {"city": "Lyon"}},
            {"id": "4", "method": "GET", "url": format!("/users/{}?$select=city", id(1)), "dependsOn": ["3"]},
            {"id": "5", "method": "GET", "url": "/users?$top=1", "dependsOn": ["2"]},
        ]}),
    );
    assert_eq!(r.status, 200);
    let responses = by_id(&r.body);
    assert_eq!(responses.len(), 5);
    assert_eq!(responses["1"]["status"], 404);
    assert_eq!(
        responses["1"]["body"]["error"]["code"],
        "Request_ResourceNotFound"
    );
    assert_eq!(responses["2"]["status"], 424);
    assert_eq!(
        responses["5"]["status"], 424,
        "a failed dependency fails what depends on it too"
    );
    assert_eq!(responses["3"]["status"], 204);
    assert_eq!(responses["4"]["status"], 200);
    assert_eq!(responses["4"]["body"]["city"], "Lyon");
    assert!(
        c.get(&format!("/users/{}?$select=city", id(2))).body["city"].is_null(),
        "424 means not run"
    );
}

#[test]
fn batch_of_more_than_20_is_refused() {
    let sim = sim_with_tenant();
    let c = sim.client("contoso");
    let requests: Vec<Json> = (0..21)
        .map(|i| json!({"id": i.to_string(), "method": "GET", "url": "/users"}))
        .collect();
    let r = c.post("/$batch", &json!({ "requests": requests }));
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), "Request_BadRequest");
    let twenty: Vec<Json> = (0..20)
        .map(|i| json!({"id": i.to_string(), "method": "GET", "url": "/organization"}))
        .collect();
    let ok = c.post("/$batch", &json!({ "requests": twenty }));
    assert_eq!(ok.status, 200);
    assert_eq!(ok.body["responses"].as_array().unwrap().len(), 20);
    let cycle = c.post(
        "/$batch",
        &json!({"requests": [
            {"id": "a", "method": "GET", "url": "/users", "dependsOn": ["b"]},
            {"id": "b", "method": "GET", "url": "/users", "dependsOn": ["a"]},
        ]}),
    );
    assert_eq!(cycle.status, 400);
}

#[test]
fn each_inner_request_is_throttled_on_its_own() {
    let sim = sim_with_tenant();
    sim.load(
        "contoso",
        &(1..=4).map(|n| user(n, "Sales")).collect::<Vec<_>>(),
    );
    sim.settings(json!({"write_requests_per_window": 2, "write_window_secs": 3600}));
    let c = sim.client("contoso");
    let requests: Vec<Json> = (1..=4)
        .map(|n| {
            json!({"id": n.to_string(), "method": "PATCH", "url": format!("/users/{}", id(n)),
                   "headers": {"Content-Type": "application/json"}, "body": {"jobTitle": "x"}})
        })
        .collect();
    let r = c.post("/$batch", &json!({ "requests": requests }));
    assert_eq!(r.status, 200, "the envelope itself is not throttled");
    let responses = by_id(&r.body);
    let ok = responses.values().filter(|r| r["status"] == 204).count();
    let throttled: Vec<&Json> = responses.values().filter(|r| r["status"] == 429).collect();
    assert_eq!(ok, 2);
    assert_eq!(throttled.len(), 2);
    for t in throttled {
        let retry: u64 = t["headers"]["Retry-After"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(retry >= 1);
        assert_eq!(t["body"]["error"]["code"], "TooManyRequests");
    }
    assert_eq!(sim.counters()["throttled"]["write"], 2);
}
