//! The connector's recovery writes through a write gate, over real HTTP: against the tenant
//! simulator (the gate sees every batch, one class to a batch; inner 429s are fed back; a
//! closed gate, or the budget gate of a stopped job, sends nothing more), and against a small
//! recording Graph listener (an outer 429 is fed back and the batch admitted again;
//! `planned_calls` are exactly the requests sent).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use rewind_common::connector::{
    planned_calls, GateClosed, GraphConnector, GraphSettings, StepResult, WriteClass, WriteGate,
};
use rewind_common::plan::{PlannedStep, Step};
use rewind_common::properties::PER_USER_MFA_STATE;
use rewind_common::{LinkKind, ObjectId, ObjectType, Value};
use rewind_loadtest::dirsim::{spawn, DirsimConfig, Running};
use rewind_worker::budget::{BudgetGate, BudgetKey, BudgetPolicy, MemoryBudgets, WriteBudgets};
use serde_json::{json, Value as Json};

const TENANT: &str = "contoso";

fn guid(n: u64) -> String {
    format!("00000000-0000-0000-0000-{n:012x}")
}

fn oid(n: u64) -> ObjectId {
    ObjectId(u128::from(n))
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// A running simulator with tenant [`TENANT`]: users 1..=30, conditional access policy 500,
/// named location 600.
struct Sim {
    runtime: tokio::runtime::Runtime,
    _running: Running,
    base: String,
}

impl Sim {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let running = runtime.block_on(spawn(DirsimConfig::default())).unwrap();
        let sim = Self {
            base: running.base_url().to_owned(),
            _running: running,
            runtime,
        };
        let created = sim.send(
            "POST",
            "/_admin/tenants",
            &json!({"tenant": TENANT, "clientId": format!("app-{TENANT}"),
                    "clientSecret": format!("secret-{TENANT}")}),
        );
        assert_eq!(created.0, 201, "{:?}", created.1);
        let mut objects: Vec<Json> = (1..=30)
            .map(|n| {
                json!({"type": "user", "id": guid(n), "displayName": format!("User {n}"),
                       "userPrincipalName": format!("user{n}@contoso.example"),
                       "accountEnabled": true})
            })
            .collect();
        objects.push(json!({"type": "conditionalAccessPolicy", "id": guid(500),
            "displayName": "P", "state": "enabled",
            "conditions": {"users": {"includeUsers": ["All"]}}}));
        objects.push(
            json!({"type": "namedLocation", "id": guid(600), "displayName": "L",
            "@odata.type": "#microsoft.graph.ipNamedLocation", "isTrusted": true}),
        );
        let lines: String = objects.iter().map(|o| format!("{o}\n")).collect();
        let mut r = agent()
            .post(format!("{}/_admin/tenants/{TENANT}/objects", sim.base))
            .send(lines)
            .unwrap();
        let loaded: Json = r.body_mut().read_json().unwrap();
        assert_eq!(loaded["loaded"], objects.len(), "{loaded}");
        sim
    }

    fn send(&self, method: &str, path: &str, body: &Json) -> (u16, Json) {
        let url = format!("{}{path}", self.base);
        let mut r = match method {
            "POST" => agent().post(&url).send_json(body),
            "PATCH" => agent().patch(&url).send_json(body),
            _ => agent().get(&url).call(),
        }
        .unwrap();
        let status = r.status().as_u16();
        (status, r.body_mut().read_json().unwrap_or(Json::Null))
    }

    fn settings(&self, patch: Json) {
        let (status, body) = self.send("PATCH", "/_admin/settings", &patch);
        assert_eq!(status, 200, "{body}");
    }

    fn writes(&self) -> u64 {
        self.send("GET", "/_admin/counters", &Json::Null).1["writes"]
            .as_u64()
            .unwrap()
    }

    fn connector(&self) -> GraphConnector {
        connector_at(&self.base, TENANT, &format!("secret-{TENANT}"))
    }
}

fn connector_at(base: &str, tenant: &str, secret: &str) -> GraphConnector {
    let mut s = GraphSettings::new(
        base,
        format!("{base}/{tenant}/v1.0"),
        tenant,
        format!("app-{tenant}"),
        secret,
    );
    s.min_backoff = Duration::from_millis(50);
    s.max_backoff = Duration::from_secs(2);
    s.max_attempts = 12;
    GraphConnector::new(s).unwrap()
}

fn planned(n: usize, step: Step) -> PlannedStep {
    PlannedStep {
        action_id: format!("action-{n:03}"),
        step,
        note: None,
    }
}

fn update(n: u64, object_type: ObjectType, properties: Vec<(&str, Value)>) -> Step {
    Step::Update {
        id: oid(n),
        object_type,
        properties: properties
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    }
}

/// Updates of users 1..=30, with the policy's and the location's in the middle.
fn mixed_steps() -> Vec<PlannedStep> {
    let mut steps: Vec<Step> = (1..=30)
        .map(|n| update(n, ObjectType::User, vec![("city", Value::from("Rome"))]))
        .collect();
    steps.insert(
        10,
        update(
            500,
            ObjectType::ConditionalAccessPolicy,
            vec![("displayName", Value::from("P2"))],
        ),
    );
    steps.insert(
        20,
        update(
            600,
            ObjectType::NamedLocation,
            vec![("displayName", Value::from("L2"))],
        ),
    );
    steps
        .into_iter()
        .enumerate()
        .map(|(i, s)| planned(i, s))
        .collect()
}

/// What a gate was told of one answered batch: class, sent, throttled, longest Retry-After.
type Feedback = (WriteClass, u32, u32, Option<Duration>);

/// An inner request as a Graph received it: version, method, url, body.
type Received = (String, String, String, Option<Json>);

/// A gate that lets everything through and records what it was told; closed after
/// `close_after` admissions, if set.
#[derive(Default)]
struct Recording {
    admits: Mutex<Vec<(WriteClass, u32)>>,
    feedback: Mutex<Vec<Feedback>>,
    close_after: Option<usize>,
    /// Refuse when the connector asks while it waits.
    closed_on_check: bool,
}

impl WriteGate for Recording {
    fn admit(&self, class: WriteClass, writes: u32) -> Result<(), GateClosed> {
        let mut admits = self.admits.lock().unwrap();
        if self.close_after.is_some_and(|k| admits.len() >= k) {
            return Err(GateClosed("closed for the test".into()));
        }
        admits.push((class, writes));
        Ok(())
    }

    fn check(&self) -> Result<(), GateClosed> {
        if self.closed_on_check {
            return Err(GateClosed("canceled while waiting".into()));
        }
        Ok(())
    }

    fn feedback(
        &self,
        class: WriteClass,
        sent: u32,
        throttled: u32,
        retry_after: Option<Duration>,
    ) {
        self.feedback
            .lock()
            .unwrap()
            .push((class, sent, throttled, retry_after));
    }
}

#[test]
fn the_gate_sees_every_batch_and_inner_429s_are_fed_back() {
    let sim = Sim::start();
    sim.settings(json!({"write_429_rate": 0.3, "retry_after_429_min_secs": 1,
                        "retry_after_429_max_secs": 1}));
    let steps = mixed_steps();
    let gate = Recording::default();
    let outcomes = sim.connector().apply_steps_gated(&steps, &gate);
    for (o, s) in outcomes.iter().zip(&steps) {
        assert!(o.result.is_success(), "{:?}: {:?}", s.step, o.result);
    }
    let admits = gate.admits.into_inner().unwrap();
    let feedback = gate.feedback.into_inner().unwrap();
    // Every admitted batch was answered and fed back, in order, with what was sent.
    assert_eq!(admits.len(), feedback.len());
    for (a, f) in admits.iter().zip(&feedback) {
        assert_eq!((a.0, a.1), (f.0, f.1), "{admits:?} {feedback:?}");
        assert!(f.1 <= 20);
        if f.2 > 0 {
            assert_eq!(f.3, Some(Duration::from_secs(1)), "{f:?}");
        }
    }
    // Each class's writes were admitted once, and once more per 429: a batch held one class.
    for (class, steps_of_class) in [
        (WriteClass::Directory, 30u32),
        (WriteClass::ConditionalAccess, 2),
    ] {
        let admitted: u32 = admits.iter().filter(|a| a.0 == class).map(|a| a.1).sum();
        let throttled: u32 = feedback.iter().filter(|f| f.0 == class).map(|f| f.2).sum();
        assert_eq!(admitted, steps_of_class + throttled, "{class:?}");
    }
    let throttled: u32 = feedback.iter().map(|f| f.2).sum();
    assert!(throttled > 0, "{feedback:?}");
    assert_eq!(sim.writes(), 32, "every write carried out once");
}

#[test]
fn a_closed_gate_sends_nothing_more() {
    let sim = Sim::start();
    let steps: Vec<PlannedStep> = mixed_steps()
        .into_iter()
        .filter(|s| {
            matches!(
                s.step,
                Step::Update {
                    object_type: ObjectType::User,
                    ..
                }
            )
        })
        .collect();
    assert_eq!(steps.len(), 30);
    let gate = Recording {
        close_after: Some(1),
        ..Recording::default()
    };
    let outcomes = sim.connector().apply_steps_gated(&steps, &gate);
    let (sent, not_sent): (Vec<_>, Vec<_>) = outcomes
        .iter()
        .partition(|o| !matches!(o.result, StepResult::NotSent { .. }));
    assert_eq!(sent.len(), 20, "the first batch went");
    assert!(sent.iter().all(|o| o.result == StepResult::Applied));
    for o in &not_sent {
        assert_eq!(
            o.result,
            StepResult::NotSent {
                reason: "closed for the test".into()
            }
        );
        assert!(!o.result.is_success());
    }
    assert_eq!(sim.writes(), 20);

    // The budget gate of a canceled job: nothing at all.
    let budgets: Arc<dyn WriteBudgets> = Arc::new(MemoryBudgets::new());
    sim.runtime.block_on(budgets.stop("job-1")).unwrap();
    let gate = BudgetGate::new(
        sim.runtime.handle().clone(),
        budgets.clone(),
        BudgetKey::new(TENANT, format!("app-{TENANT}")),
        BudgetPolicy::default(),
        "job-1",
    )
    .unwrap();
    let outcomes = sim.connector().apply_steps_gated(&steps, &gate);
    assert!(outcomes.iter().all(|o| o.result
        == StepResult::NotSent {
            reason: "the job was canceled".into()
        }));
    assert_eq!(sim.writes(), 20);

    // The budget gate of a running job: everything, in batches within the rate.
    let gate = BudgetGate::new(
        sim.runtime.handle().clone(),
        budgets,
        BudgetKey::new(TENANT, format!("app-{TENANT}")),
        BudgetPolicy {
            writes_per_second: 40.0,
            ..BudgetPolicy::default()
        },
        "job-2",
    )
    .unwrap();
    let outcomes = sim.connector().apply_steps_gated(&steps, &gate);
    assert!(
        outcomes.iter().all(|o| o.result.is_success()),
        "{outcomes:?}"
    );
    assert_eq!(sim.writes(), 50);
}

/// A Graph that records the inner requests of every `$batch` and answers each with 204; the
/// first `throttle` batches are answered 429 as a whole.
struct Listener {
    _runtime: tokio::runtime::Runtime,
    base: String,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// (version, method, url, body) of every inner request answered.
    sent: Mutex<Vec<Received>>,
    throttle: AtomicU32,
    batches: AtomicU32,
}

async fn graph(State(shared): State<Arc<Shared>>, uri: Uri, body: Bytes) -> Response {
    let path = uri.path();
    if path.ends_with("/oauth2/v2.0/token") {
        return axum::Json(json!({"access_token": "t", "expires_in": 3600})).into_response();
    }
    let Some(version) = path
        .strip_prefix("/t/")
        .and_then(|p| p.strip_suffix("/$batch"))
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    shared.batches.fetch_add(1, Ordering::SeqCst);
    let left = shared.throttle.load(Ordering::SeqCst);
    if left > 0 {
        shared.throttle.store(left - 1, Ordering::SeqCst);
        let error = json!({"error": {"code": "TooManyRequests", "message": "slow down"}});
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("Retry-After", "1")],
            axum::Json(error),
        )
            .into_response();
    }
    let Ok(batch) = serde_json::from_slice::<Json>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let mut responses = Vec::new();
    for r in batch["requests"].as_array().into_iter().flatten() {
        shared.sent.lock().unwrap().push((
            version.to_owned(),
            r["method"].as_str().unwrap_or("").to_owned(),
            r["url"].as_str().unwrap_or("").to_owned(),
            r.get("body").cloned(),
        ));
        responses.push(json!({"id": r["id"], "status": 204}));
    }
    axum::Json(json!({ "responses": responses })).into_response()
}

impl Listener {
    fn start(throttle: u32) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let shared = Arc::new(Shared {
            throttle: AtomicU32::new(throttle),
            ..Shared::default()
        });
        let app = axum::Router::new()
            .fallback(graph)
            .with_state(shared.clone());
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        runtime.spawn(async move { axum::serve(listener, app).await });
        Self {
            _runtime: runtime,
            base,
            shared,
        }
    }

    fn connector(&self) -> GraphConnector {
        connector_at(&self.base, "t", "s")
    }
}

#[test]
fn an_outer_429_is_fed_back_and_the_batch_admitted_again() {
    let graph = Listener::start(2);
    let steps: Vec<PlannedStep> = (1..=5)
        .map(|n| {
            planned(
                n as usize,
                update(n, ObjectType::User, vec![("city", Value::from("Oslo"))]),
            )
        })
        .collect();
    let gate = Recording::default();
    let outcomes = graph.connector().apply_steps_gated(&steps, &gate);
    assert!(outcomes.iter().all(|o| o.result == StepResult::Applied));
    assert_eq!(
        *gate.admits.lock().unwrap(),
        vec![(WriteClass::Directory, 5); 3],
        "each attempt of the batch passed the gate"
    );
    let one = Some(Duration::from_secs(1));
    assert_eq!(
        *gate.feedback.lock().unwrap(),
        vec![
            (WriteClass::Directory, 5, 5, one),
            (WriteClass::Directory, 5, 5, one),
            (WriteClass::Directory, 5, 0, None),
        ]
    );
    assert_eq!(graph.shared.batches.load(Ordering::SeqCst), 3);
    assert_eq!(graph.shared.sent.lock().unwrap().len(), 5);
}

#[test]
fn planned_calls_are_the_requests_sent() {
    let graph = Listener::start(0);
    let grant = Value::Map(
        [
            ("consentType".to_owned(), Value::from("AllPrincipals")),
            ("resourceId".to_owned(), Value::from(guid(9))),
            ("scope".to_owned(), Value::from("User.Read")),
        ]
        .into(),
    );
    let steps: Vec<PlannedStep> = [
        Step::Restore {
            id: oid(1),
            object_type: ObjectType::User,
        },
        update(
            1,
            ObjectType::User,
            vec![
                ("city", Value::from("Rome")),
                (PER_USER_MFA_STATE, Value::from("enforced")),
            ],
        ),
        update(
            2,
            ObjectType::ServicePrincipal,
            vec![("publisherName", Value::from("Contoso"))],
        ),
        Step::AddLink {
            id: oid(3),
            object_type: ObjectType::Group,
            kind: LinkKind::Members,
            target: oid(4),
            data: None,
        },
        Step::RemoveLink {
            id: oid(3),
            object_type: ObjectType::Group,
            kind: LinkKind::Members,
            target: oid(5),
        },
        Step::AddLink {
            id: oid(6),
            object_type: ObjectType::ServicePrincipal,
            kind: LinkKind::OAuth2PermissionGrants,
            target: oid(7),
            data: Some(grant),
        },
        update(
            600,
            ObjectType::NamedLocation,
            vec![("displayName", Value::from("L2"))],
        ),
        // No request: a singleton's restore, a property no Graph API holds.
        Step::Restore {
            id: oid(8),
            object_type: ObjectType::Organization,
        },
        update(
            8,
            ObjectType::Organization,
            vec![("mfaEnabled", Value::Bool(true))],
        ),
        Step::SoftDelete {
            id: oid(10),
            object_type: ObjectType::User,
        },
    ]
    .into_iter()
    .enumerate()
    .map(|(i, s)| planned(i, s))
    .collect();
    let conn = graph.connector();
    let calls = planned_calls(&conn.settings().graph_base, &steps);
    assert_eq!(calls.len(), 9, "{calls:#?}");
    // In the order of the steps.
    let order: Vec<&str> = calls.iter().map(|c| c.action_id.as_str()).collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted);
    let first = serde_json::to_value(&calls[0]).unwrap();
    assert_eq!(first["actionId"], "action-000");
    assert_eq!(first["method"], "POST");
    assert_eq!(first["version"], "v1.0");
    assert_eq!(
        first["path"],
        format!("/directory/deletedItems/{}/restore", guid(1))
    );
    assert!(calls.iter().any(|c| c.version == "beta"));

    let outcomes = conn.apply_steps(&steps);
    assert_eq!(outcomes.len(), steps.len());
    let mut sent = graph.shared.sent.lock().unwrap().clone();
    let mut expected: Vec<Received> = calls
        .into_iter()
        .map(|c| (c.version, c.method, c.path, c.body))
        .collect();
    let key = |x: &Received| {
        (
            x.0.clone(),
            x.1.clone(),
            x.2.clone(),
            x.3.as_ref().map(Json::to_string),
        )
    };
    sent.sort_by_key(key);
    expected.sort_by_key(key);
    assert_eq!(sent, expected);
}

/// A gate that records what it is told and hands everything on to another.
struct Tee<'a> {
    seen: Recording,
    inner: &'a dyn WriteGate,
}

impl WriteGate for Tee<'_> {
    fn max_batch(&self, class: WriteClass) -> usize {
        self.inner.max_batch(class)
    }

    fn check(&self) -> Result<(), GateClosed> {
        self.inner.check()
    }

    fn admit(&self, class: WriteClass, writes: u32) -> Result<(), GateClosed> {
        self.seen.admit(class, writes)?;
        self.inner.admit(class, writes)
    }

    fn feedback(
        &self,
        class: WriteClass,
        sent: u32,
        throttled: u32,
        retry_after: Option<Duration>,
    ) {
        self.seen.feedback(class, sent, throttled, retry_after);
        self.inner.feedback(class, sent, throttled, retry_after);
    }
}

#[test]
fn the_budget_gate_takes_the_simulators_write_limit_in_its_stride() {
    let sim = Sim::start();
    // 10 writes per 2 s window: the budget starts at 10/s and must be cut.
    sim.settings(json!({"write_requests_per_window": 10, "write_window_secs": 2}));
    let steps: Vec<PlannedStep> = mixed_steps()
        .into_iter()
        .filter(|s| {
            matches!(
                s.step,
                Step::Update {
                    object_type: ObjectType::User,
                    ..
                }
            )
        })
        .collect();
    let budgets: Arc<dyn WriteBudgets> = Arc::new(MemoryBudgets::new());
    let key = BudgetKey::new(TENANT, format!("app-{TENANT}"));
    let budget_gate = BudgetGate::new(
        sim.runtime.handle().clone(),
        budgets.clone(),
        key.clone(),
        BudgetPolicy::default(),
        "job-1",
    )
    .unwrap();
    let gate = Tee {
        seen: Recording::default(),
        inner: &budget_gate,
    };
    let outcomes = sim.connector().apply_steps_gated(&steps, &gate);
    assert!(
        outcomes.iter().all(|o| o.result.is_success()),
        "{outcomes:?}"
    );
    assert_eq!(sim.writes(), 30);
    let admits = gate.seen.admits.into_inner().unwrap();
    let feedback = gate.seen.feedback.into_inner().unwrap();
    assert_eq!(admits[0].1, 10, "the first batch is within the start rate");
    let throttled: Vec<_> = feedback.iter().filter(|f| f.2 > 0).collect();
    assert!(!throttled.is_empty(), "{feedback:?}");
    assert!(throttled.iter().all(|f| f.3.is_some()), "{throttled:?}");
}

#[test]
fn a_gate_closed_during_a_retry_after_sends_nothing_more() {
    let graph = Listener::start(1);
    let steps: Vec<PlannedStep> = (1..=5)
        .map(|n| {
            planned(
                n as usize,
                update(n, ObjectType::User, vec![("city", Value::from("Oslo"))]),
            )
        })
        .collect();
    let gate = Recording {
        closed_on_check: true,
        ..Recording::default()
    };
    let outcomes = graph.connector().apply_steps_gated(&steps, &gate);
    for o in &outcomes {
        assert_eq!(
            o.result,
            StepResult::NotSent {
                reason: "canceled while waiting".into()
            }
        );
    }
    assert_eq!(graph.shared.batches.load(Ordering::SeqCst), 1, "no retry");
    assert_eq!(gate.admits.lock().unwrap().len(), 1);
}
