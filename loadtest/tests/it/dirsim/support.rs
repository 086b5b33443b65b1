//! Test support: a simulator running on its own tokio runtime, and a blocking Graph client
//! (ureq) that authenticates like a real connector.

use std::time::Duration;

use rewind_loadtest::dirsim::{spawn, DirsimConfig, Running};
use serde_json::{json, Value as Json};

/// A running simulator; dropping it stops the server.
pub struct Sim {
    pub base: String,
    running: Option<Running>,
    runtime: tokio::runtime::Runtime,
    agent: ureq::Agent,
}

/// An HTTP answer: status, headers (lowercase names) and the body as JSON (null if empty).
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Json,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    pub fn values(&self) -> &Vec<Json> {
        self.body["value"].as_array().unwrap()
    }

    pub fn next_link(&self) -> Option<String> {
        self.body["@odata.nextLink"].as_str().map(str::to_owned)
    }
}

fn to_resp(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Resp {
    let mut r = result.unwrap();
    let status = r.status().as_u16();
    let headers = r
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let text = r.body_mut().read_to_string().unwrap();
    let body = if text.trim().is_empty() {
        Json::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Json::String(text))
    };
    Resp {
        status,
        headers,
        body,
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

impl Sim {
    pub fn start() -> Self {
        Self::with(DirsimConfig::default())
    }

    pub fn with(config: DirsimConfig) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let running = runtime.block_on(spawn(config)).unwrap();
        Self {
            base: running.base_url().to_owned(),
            running: Some(running),
            runtime,
            agent: agent(),
        }
    }

    /// Stops the server (graceful) and waits for it.
    pub fn stop(mut self) {
        if let Some(r) = self.running.take() {
            self.runtime.block_on(r.stop()).unwrap();
        }
    }

    pub fn get(&self, path: &str) -> Resp {
        to_resp(self.agent.get(format!("{}{path}", self.base)).call())
    }

    pub fn post(&self, path: &str, body: &Json) -> Resp {
        to_resp(
            self.agent
                .post(format!("{}{path}", self.base))
                .send_json(body),
        )
    }

    pub fn patch(&self, path: &str, body: &Json) -> Resp {
        to_resp(
            self.agent
                .patch(format!("{}{path}", self.base))
                .send_json(body),
        )
    }

    pub fn delete(&self, path: &str) -> Resp {
        to_resp(self.agent.delete(format!("{}{path}", self.base)).call())
    }

    pub fn settings(&self, patch: Json) {
        let r = self.patch("/_admin/settings", &patch);
        assert_eq!(r.status, 200, "{:?}", r.body);
    }

    pub fn counters(&self) -> Json {
        self.get("/_admin/counters").body
    }

    pub fn advance_days(&self, days: i64) -> Json {
        let r = self.post("/_admin/clock", &json!({ "advanceDays": days }));
        assert_eq!(r.status, 200);
        r.body
    }

    /// Creates a tenant with client id `app-{name}` and secret `secret-{name}`.
    pub fn tenant(&self, name: &str) {
        let r = self.post(
            "/_admin/tenants",
            &json!({"tenant": name, "clientId": format!("app-{name}"), "clientSecret": format!("secret-{name}")}),
        );
        assert_eq!(r.status, 201, "{:?}", r.body);
    }

    /// Bulk-loads Graph-shaped objects (each with a `type`).
    pub fn load(&self, tenant: &str, objects: &[Json]) {
        let lines: String = objects.iter().map(|o| format!("{o}\n")).collect();
        let r = to_resp(
            self.agent
                .post(format!("{}/_admin/tenants/{tenant}/objects", self.base))
                .send(lines),
        );
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.body["errorCount"], 0, "{:?}", r.body);
        assert_eq!(r.body["loaded"], objects.len());
    }

    pub fn token_request(&self, tenant: &str, client_id: &str, secret: &str) -> Resp {
        to_resp(
            self.agent
                .post(format!("{}/{tenant}/oauth2/v2.0/token", self.base))
                .send_form([
                    ("client_id", client_id),
                    ("client_secret", secret),
                    ("scope", "https://graph.microsoft.com/.default"),
                    ("grant_type", "client_credentials"),
                ]),
        )
    }

    /// Runs a future on the simulator's runtime (for the crate's async clients).
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// A Graph client for the tenant, authenticated with its credentials.
    pub fn client(&self, tenant: &str) -> Client<'_> {
        self.client_as(
            tenant,
            &format!("app-{tenant}"),
            &format!("secret-{tenant}"),
        )
    }

    /// A Graph client for the tenant, authenticated as the app `client_id`.
    pub fn client_as(&self, tenant: &str, client_id: &str, secret: &str) -> Client<'_> {
        let r = self.token_request(tenant, client_id, secret);
        assert_eq!(r.status, 200, "{:?}", r.body);
        Client {
            sim: self,
            graph: format!("{}/{tenant}/v1.0", self.base),
            token: r.body["access_token"].as_str().unwrap().to_owned(),
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            let _ = self.runtime.block_on(r.stop());
        }
    }
}

/// A blocking Graph client of one tenant.
pub struct Client<'a> {
    sim: &'a Sim,
    pub graph: String,
    pub token: String,
}

impl Client<'_> {
    /// The absolute URL of `path` (spaces percent-encoded, as a client library would).
    fn url(&self, path: &str) -> String {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.graph)
        };
        url.replace(' ', "%20")
    }

    fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// The same client on Graph's beta (`/{tenant}/beta`).
    pub fn beta(&self) -> Client<'_> {
        Client {
            sim: self.sim,
            graph: self.graph.replace("/v1.0", "/beta"),
            token: self.token.clone(),
        }
    }

    pub fn get(&self, path: &str) -> Resp {
        to_resp(
            self.sim
                .agent
                .get(self.url(path))
                .header("Authorization", &self.auth())
                .call(),
        )
    }

    pub fn post(&self, path: &str, body: &Json) -> Resp {
        to_resp(
            self.sim
                .agent
                .post(self.url(path))
                .header("Authorization", &self.auth())
                .send_json(body),
        )
    }

    pub fn post_empty(&self, path: &str) -> Resp {
        to_resp(
            self.sim
                .agent
                .post(self.url(path))
                .header("Authorization", &self.auth())
                .send_empty(),
        )
    }

    pub fn patch(&self, path: &str, body: &Json) -> Resp {
        to_resp(
            self.sim
                .agent
                .patch(self.url(path))
                .header("Authorization", &self.auth())
                .send_json(body),
        )
    }

    pub fn delete(&self, path: &str) -> Resp {
        to_resp(
            self.sim
                .agent
                .delete(self.url(path))
                .header("Authorization", &self.auth())
                .call(),
        )
    }

    /// Every item of a collection, following next links exactly as given.
    pub fn get_all(&self, path: &str) -> Vec<Json> {
        let mut out = Vec::new();
        let mut next = Some(self.url(path));
        while let Some(url) = next {
            let r = self.get(&url);
            assert_eq!(r.status, 200, "{:?}", r.body);
            out.extend(r.values().iter().cloned());
            next = r.next_link();
        }
        out
    }
}

/// A GUID made from a number (ids sort by it).
pub fn id(n: u64) -> String {
    format!("00000000-0000-0000-0000-{n:012x}")
}

pub fn user(n: u64, department: &str) -> Json {
    json!({
        "type": "user",
        "id": id(n),
        "displayName": format!("User {n}"),
        "userPrincipalName": format!("user{n}@contoso.example"),
        "department": department,
        "accountEnabled": true,
    })
}

pub fn group(n: u64, members: &[u64]) -> Json {
    json!({
        "type": "group",
        "id": id(n),
        "displayName": format!("Group {n}"),
        "securityEnabled": true,
        "mailEnabled": false,
        "groupTypes": [],
        "members": members.iter().map(|m| id(*m)).collect::<Vec<_>>(),
    })
}

pub fn service_principal(n: u64) -> Json {
    json!({
        "type": "servicePrincipal",
        "id": id(n),
        "displayName": format!("App {n}"),
        "appId": id(n + 1_000_000),
        "accountEnabled": true,
    })
}

/// A started simulator with one tenant `contoso`.
pub fn sim_with_tenant() -> Sim {
    let sim = Sim::start();
    sim.tenant("contoso");
    sim
}
