//! Tests of the coordinator's HTTP API over real HTTP: a coordinator in single-node mode with
//! two workers, the API on a free port, a simulator tenant backed up and reported through the
//! API itself. `roles` is the table of every route × every role; `errors` the bad inputs;
//! `paging` getChanges against the exports; `models` Microsoft's documented shapes; `cli`
//! `rewind token`; `admin` tenants and tokens; `recovery` recoveries (dry run, approval,
//! failed changes, undo).

mod admin;
mod cli;
mod errors;
mod models;
mod paging;
mod recovery;
mod roles;

use std::time::Duration;

use rewind_coordinator::api::{self, ApiState};
use rewind_coordinator::state::{NewToken, Role, Schedule, TenantScope};
use rewind_loadtest::dirsim::Running;
use rewind_loadtest::incident::{GraphClient, Phase, Scenario};
use serde_json::{json, Value as Json};

use crate::cluster::support::{self, Coordinator};

/// The tenant under test and one the tokens do not hold.
pub const TENANT: &str = "acme";
pub const OTHER: &str = "globex";
pub const OBJECTS: u64 = 400;

/// An answer: status, headers we look at, body text.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub text: String,
}

impl Answer {
    pub fn json(&self) -> Json {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Requires Graph's error shape with this status; returns the message.
    pub fn graph_error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{}", self.text);
        let body = self.json();
        let error = &body["error"];
        assert!(error["code"].is_string(), "{body}");
        assert!(error["innerError"]["request-id"].is_string(), "{body}");
        assert!(error["innerError"]["date"].is_string(), "{body}");
        let message = error["message"].as_str().unwrap_or_default().to_owned();
        assert!(!message.is_empty(), "{body}");
        message
    }
}

/// A blocking HTTP request to the API (run off the runtime).
pub async fn call(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<String>,
    headers: &[(&str, &str)],
) -> Answer {
    let url = format!("{base}{path}");
    let method = method.to_owned();
    let token = token.map(str::to_owned);
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        let mut builder = ureq::http::Request::builder()
            .method(method.as_str())
            .uri(&url);
        if let Some(t) = &token {
            builder = builder.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in &headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        let response = match body {
            Some(b) => {
                if !headers
                    .iter()
                    .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                {
                    builder = builder.header("content-type", "application/json");
                }
                agent.run(builder.body(b).unwrap())
            }
            None => agent.run(builder.body(()).unwrap()),
        };
        let mut response = response.unwrap();
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
            .collect();
        let text = response
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_string()
            .unwrap();
        Answer {
            status,
            headers,
            text,
        }
    })
    .await
    .unwrap()
}

/// A running coordinator with its API, a simulator tenant with a backup and a successful
/// report made through the API, and a token of each role (tenant `acme` only).
pub struct Fixture {
    pub coordinator: Coordinator,
    pub sim: Running,
    pub base: String,
    pub reader: String,
    pub admin: String,
    pub operator: String,
    pub backup: String,
    pub report: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

/// Display names with quotes, commas and line breaks, given to users after the backup.
pub const TRICKY_NAMES: &[&str] = &[
    "O'Brien, \"Danny\"",
    "line one\nline two",
    "comma, comma, comma",
    "quote \" inside",
    "tab\tand \r\n crlf",
];

impl Fixture {
    pub fn ms(&self, rest: &str) -> String {
        format!("/tenants/{TENANT}/v1.0/directory/recovery{rest}")
    }

    pub async fn get(&self, path: &str, token: &str) -> Answer {
        call(&self.base, "GET", path, Some(token), None, &[]).await
    }

    pub async fn get_with(&self, path: &str, token: &str, headers: &[(&str, &str)]) -> Answer {
        call(&self.base, "GET", path, Some(token), None, headers).await
    }

    /// Starts everything; `report` makes the backup, the incident and the report.
    pub async fn start() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let sim = support::simulator().await;
        let sim_url = sim.base_url().to_owned();
        support::generate(&sim_url, TENANT, OBJECTS).await;
        let key = rewind_coordinator::state::SecretKey::generate();
        let coordinator = Coordinator::start(
            dir.path(),
            Coordinator::embedded(dir.path(), 2),
            key.clone(),
        )
        .await;
        coordinator.add(support::tenant(&sim_url, TENANT, 4)).await;
        let mut other = support::tenant(&sim_url, OTHER, 2);
        other.schedule = Schedule::Off;
        coordinator.add(other).await;
        let state = coordinator.engine().state().clone();
        let token = |role| {
            let state = state.clone();
            async move {
                state
                    .create_token(NewToken {
                        name: format!("{role:?}"),
                        role,
                        tenants: TenantScope::Only(vec![TENANT.to_owned()]),
                        expires_at: None,
                    })
                    .await
                    .unwrap()
                    .1
            }
        };
        let reader = token(Role::Reader).await;
        let admin = token(Role::Administrator).await;
        let operator = token(Role::Operator).await;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let api_state = ApiState::new(coordinator.engine().clone(), key);
        let server = tokio::spawn(api::serve(listener, api_state, async move {
            let _ = stopped.await;
        }));
        let mut fixture = Fixture {
            coordinator,
            sim,
            base,
            reader,
            admin,
            operator,
            backup: String::new(),
            report: String::new(),
            stop: Some(stop),
            server: Some(server),
            _dir: dir,
        };
        let backup_job = fixture
            .post_json(&fixture.ms("/snapshots"), &fixture.admin.clone(), "{}")
            .await;
        assert_eq!(backup_job.status, 202, "{}", backup_job.text);
        let location = backup_job.header("location").unwrap().to_owned();
        let job = fixture.wait(&location).await;
        assert_eq!(job["status"], "successful", "{job}");
        fixture.backup = job["snapshot"].as_str().unwrap().to_owned();
        for scenario in [Scenario::S3, Scenario::S5] {
            support::incident(&sim_url, TENANT, scenario, Phase::AfterBackup).await;
        }
        rename_users(&sim_url).await;
        let started = fixture
            .post_json(
                &fixture.ms(&format!(
                    "/snapshots/{}/recoveryPreviewJobs",
                    fixture.backup
                )),
                &fixture.admin.clone(),
                "{}",
            )
            .await;
        assert_eq!(started.status, 202, "{}", started.text);
        fixture.report = started.json()["id"].as_str().unwrap().to_owned();
        let job = fixture
            .wait(&format!("/tenants/{TENANT}/rewind/jobs/{}", fixture.report))
            .await;
        assert_eq!(job["status"], "successful", "{job}");
        fixture
    }

    pub async fn post_json(&self, path: &str, token: &str, body: &str) -> Answer {
        call(
            &self.base,
            "POST",
            path,
            Some(token),
            Some(body.to_owned()),
            &[],
        )
        .await
    }

    /// Polls a job view (`/tenants/t/rewind/jobs/id`) until the job is finished.
    pub async fn wait(&self, path: &str) -> Json {
        loop {
            let answer = self.get(path, &self.reader).await;
            assert_eq!(answer.status, 200, "{}", answer.text);
            let job = answer.json();
            if matches!(
                job["status"].as_str(),
                Some("successful" | "failed" | "abandoned")
            ) {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
        if let Some(node) = self.coordinator.node.take() {
            node.shutdown().await;
        }
    }
}

/// A Graph client of the simulator's tenant under test (blocking).
pub fn graph_client(sim: &str) -> GraphClient {
    GraphClient::connect(
        sim,
        TENANT,
        &format!("app-{TENANT}"),
        &format!("secret-{TENANT}"),
    )
    .unwrap()
}

/// Gives the first users display names with quotes, commas and line breaks, through the
/// simulator's Graph PATCH.
async fn rename_users(sim: &str) {
    let sim = sim.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut graph = graph_client(&sim);
        let users = graph
            .get_all(
                "users",
                "/users?$select=id,displayName,onPremisesSyncEnabled&$top=50",
            )
            .unwrap();
        let cloud = users
            .iter()
            .filter(|u| u["onPremisesSyncEnabled"] != Json::Bool(true));
        for (user, name) in cloud.zip(TRICKY_NAMES) {
            let id = user["id"].as_str().unwrap();
            graph
                .expect(
                    "rename",
                    "PATCH",
                    &format!("/users/{id}"),
                    Some(&json!({ "displayName": name })),
                )
                .unwrap();
        }
    })
    .await
    .unwrap();
}
