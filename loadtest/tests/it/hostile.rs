//! The Graph connector against a hostile or broken directory: a server on 127.0.0.1:0 whose
//! every answer the test chooses (an empty tenant unless told otherwise). Absurd `Retry-After`
//! values, answers without end, next links that go round in circles and a slow token endpoint
//! must neither crash the connector, nor hang it, nor grow its memory without bound.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use axum::Router;
use rewind_common::connector::write::StepResult;
use rewind_common::connector::{ConnectorError, ErrorClass, GraphConnector, GraphSettings};
use rewind_common::plan::Step;
use rewind_common::snapshot::ShardLayout;
use rewind_common::ObjectType;
use serde_json::{json, Value as Json};

use crate::connector::{step, uid};

/// What the server was asked.
struct Asked {
    method: String,
    /// Path and query, as sent.
    path: String,
    /// `http://host:port`, for absolute next links.
    base: String,
    authorization: String,
    body: Bytes,
}

impl Asked {
    fn is_token(&self) -> bool {
        self.method == "POST" && self.path.ends_with("/oauth2/v2.0/token")
    }

    fn is_batch(&self) -> bool {
        self.method == "POST" && self.path == "/v1.0/$batch"
    }

    /// The inner requests of a `$batch`: their ids and methods.
    fn batch_requests(&self) -> Vec<(String, String)> {
        let body: Json = serde_json::from_slice(&self.body).unwrap_or(Json::Null);
        body["requests"]
            .as_array()
            .map(|r| {
                r.iter()
                    .map(|r| {
                        let field = |f: &str| r[f].as_str().unwrap_or("").to_owned();
                        (field("id"), field("method"))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

type Answer = dyn Fn(&Asked) -> Option<Response> + Send + Sync;

struct Shared {
    answer: Box<Answer>,
    /// `METHOD path` of every request, in order.
    asked: Mutex<Vec<String>>,
}

/// A server that answers with the test's function, or as an empty tenant where it gives
/// `None`; dropping it stops it.
struct Hostile {
    base: String,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Hostile {
    fn start(answer: impl Fn(&Asked) -> Option<Response> + Send + Sync + 'static) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            answer: Box::new(answer),
            asked: Mutex::new(Vec::new()),
        });
        let app = Router::new().fallback(serve).with_state(shared.clone());
        runtime.spawn(async move { axum::serve(listener, app).await });
        Self {
            base,
            shared,
            runtime: Some(runtime),
        }
    }

    /// Settings for this server: quick backoff, few attempts.
    fn settings(&self) -> GraphSettings {
        let mut s = GraphSettings::new(
            self.base.clone(),
            format!("{}/v1.0", self.base),
            "contoso",
            "app-contoso",
            "secret-contoso",
        );
        s.min_backoff = Duration::from_millis(10);
        s.max_backoff = Duration::from_millis(100);
        s.max_attempts = 3;
        s
    }

    /// How many requests began with `prefix` (`"GET /v1.0/users?"`).
    fn count(&self, prefix: &str) -> usize {
        let asked = self.shared.asked.lock().unwrap();
        asked.iter().filter(|a| a.starts_with(prefix)).count()
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        if let Some(r) = self.runtime.take() {
            r.shutdown_background();
        }
    }
}

async fn serve(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let asked = Asked {
        method: parts.method.to_string(),
        path: parts.uri.to_string(),
        base: format!("http://{}", header("host")),
        authorization: header("authorization"),
        body: axum::body::to_bytes(body, 1 << 20)
            .await
            .unwrap_or_default(),
    };
    // The test's function may block (a slow token endpoint): it runs off the async threads.
    tokio::task::spawn_blocking(move || {
        if let Ok(mut log) = shared.asked.lock() {
            log.push(format!("{} {}", asked.method, asked.path));
        }
        (shared.answer)(&asked).unwrap_or_else(|| empty_tenant(&asked))
    })
    .await
    .unwrap_or_else(|_| answer(500, &json!({"error": {"code": "panicked"}})))
}

fn answer(status: u16, body: &Json) -> Response {
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

fn token(value: &str, expires_in: u64) -> Response {
    answer(
        200,
        &json!({"token_type": "Bearer", "expires_in": expires_in, "access_token": value}),
    )
}

fn with_retry_after(mut r: Response, value: &'static str) -> Response {
    r.headers_mut()
        .insert("retry-after", HeaderValue::from_static(value));
    r
}

/// A page whose next link is `next` (a path on this server).
fn page_to(asked: &Asked, next: &str) -> Response {
    answer(
        200,
        &json!({"value": [], "@odata.nextLink": format!("{}{next}", asked.base)}),
    )
}

/// A body of `prefix` and then 64 MiB more, sent in pieces, without a length up front.
fn huge(prefix: &'static str) -> Response {
    let piece = Bytes::from(r#"{"id":"00000000-0000-0000-0000-000000000001"},"#.repeat(1400));
    let pieces = (0..(64 << 20) / piece.len()).map(move |_| piece.clone());
    let stream = futures_util::stream::iter(
        std::iter::once(Bytes::from_static(prefix.as_bytes()))
            .chain(pieces)
            .map(Ok::<_, std::io::Error>),
    );
    Response::new(Body::from_stream(stream))
}

/// An empty tenant: a token for anyone, empty collections and singletons, no changes since a
/// delta mark, every write and
/// every inner request of a batch a success.
fn empty_tenant(asked: &Asked) -> Response {
    if asked.is_token() {
        return token("t", 3599);
    }
    if asked.is_batch() {
        let responses: Vec<Json> = asked
            .batch_requests()
            .into_iter()
            .map(|(id, method)| match method.as_str() {
                "GET" => json!({"id": id, "status": 200, "body": {"value": []}}),
                _ => json!({"id": id, "status": 204}),
            })
            .collect();
        return answer(200, &json!({ "responses": responses }));
    }
    match asked.method.as_str() {
        // A delta mark, and no change since it.
        "GET" if asked.path.contains("/delta") => answer(
            200,
            &json!({"value": [], "@odata.deltaLink": format!("{}{}", asked.base, asked.path)}),
        ),
        "GET" => answer(200, &json!({"value": []})),
        _ => answer(204, &Json::Null),
    }
}

fn throttled() -> Response {
    answer(
        429,
        &json!({"error": {"code": "TooManyRequests", "message": "slow down"}}),
    )
}

/// Steps that write two users (no order between them).
fn two_deletes() -> Vec<rewind_common::plan::PlannedStep> {
    [1, 2]
        .map(|n| {
            step(Step::SoftDelete {
                id: uid(n),
                object_type: ObjectType::User,
            })
        })
        .to_vec()
}

/// Generous: the bugs these tests are about wait for ever (or for years).
const DOES_NOT_HANG: Duration = Duration::from_secs(30);

#[test]
fn a_huge_retry_after_is_cut_to_max_retry_after() {
    let tokens = AtomicUsize::new(0);
    let server = Hostile::start(move |asked| {
        if asked.is_token() && tokens.fetch_add(1, Ordering::SeqCst) == 0 {
            let unavailable = answer(503, &json!({"error": "temporarily_unavailable"}));
            return Some(with_retry_after(unavailable, "1e20"));
        }
        (asked.method == "GET" && asked.path.starts_with("/v1.0/users?"))
            .then(|| with_retry_after(throttled(), "1e20"))
    });
    let mut settings = server.settings();
    settings.max_retry_after = Duration::from_millis(300);
    let conn = GraphConnector::new(settings).unwrap();
    let started = Instant::now();
    let err = conn.capture(ShardLayout::new(0)).unwrap_err();
    assert!(started.elapsed() < DOES_NOT_HANG);
    match &err {
        ConnectorError::Graph {
            status: 429,
            retry_after,
            ..
        } => assert_eq!(*retry_after, Some(Duration::from_millis(300))),
        other => panic!("{other:?}"),
    }
    assert_eq!(err.class(), ErrorClass::Transient);
    assert_eq!(
        server.count("GET /v1.0/users?"),
        3,
        "retried up to max_attempts"
    );
    assert_eq!(
        server.count("POST /contoso/oauth2"),
        2,
        "the 503 was retried"
    );
}

#[test]
fn a_huge_retry_after_in_a_batch_answer_is_cut_to_max_retry_after() {
    let batches = AtomicUsize::new(0);
    let server = Hostile::start(move |asked| {
        if !asked.is_batch() || batches.fetch_add(1, Ordering::SeqCst) > 0 {
            return None;
        }
        // The first batch: every inner request throttled for "ever", as text and as a number.
        let huge = [json!("1e20"), json!(1e20)];
        let responses: Vec<Json> = asked
            .batch_requests()
            .into_iter()
            .zip(huge.iter().cycle())
            .map(|((id, _), wait)| {
                json!({"id": id, "status": 429, "headers": {"Retry-After": wait},
                       "body": {"error": {"code": "TooManyRequests", "message": "slow down"}}})
            })
            .collect();
        Some(answer(200, &json!({ "responses": responses })))
    });
    let mut settings = server.settings();
    settings.max_retry_after = Duration::from_millis(300);
    let conn = GraphConnector::new(settings).unwrap();
    let started = Instant::now();
    let outcomes = conn.apply_steps(&two_deletes());
    assert!(started.elapsed() < DOES_NOT_HANG);
    for o in &outcomes {
        assert_eq!(o.result, StepResult::Applied, "{o:?}");
    }
    // Each step is sent again once (together, or alone when their jittered waits differ).
    let batches = server.count("POST /v1.0/$batch");
    assert!((2..=3).contains(&batches), "{batches} batches");
}

#[test]
fn a_page_longer_than_max_page_bytes_is_refused() {
    let server = Hostile::start(|asked| {
        (asked.method == "GET" && asked.path.starts_with("/v1.0/users?"))
            .then(|| huge(r#"{"value":["#))
    });
    let mut settings = server.settings();
    settings.max_page_bytes = 1 << 20;
    let conn = GraphConnector::new(settings).unwrap();
    let started = Instant::now();
    let err = conn.capture(ShardLayout::new(0)).unwrap_err();
    assert!(started.elapsed() < DOES_NOT_HANG);
    assert!(matches!(err, ConnectorError::Malformed { .. }), "{err:?}");
    assert!(
        err.to_string().contains("max_page_bytes (1048576 bytes)"),
        "{err}"
    );
    assert_eq!(server.count("GET /v1.0/users?"), 1, "not retried");
    let read = conn.traffic().bytes;
    assert!(read < 2 << 20, "{read} bytes read of a 64 MiB answer");
}

#[test]
fn a_token_answer_longer_than_max_token_bytes_is_refused() {
    let server = Hostile::start(|asked| asked.is_token().then(|| huge(r#"{"access_token":""#)));
    let conn = GraphConnector::new(server.settings()).unwrap();
    let err = conn.authenticate().unwrap_err();
    assert!(err.to_string().contains("max_token_bytes"), "{err}");
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert_eq!(conn.traffic().token_requests, 1, "not retried");
    let t = conn.traffic();
    assert!(t.bytes <= conn.settings().max_token_bytes + 1, "{t:?}");
}

/// A capture of a tenant whose `/users` listing continues with `next` for every page after
/// the first (until the 1,000th, which a connector that never stops would get as a refusal).
fn capture_listing(next: impl Fn(&str) -> String + Send + Sync + 'static) -> ConnectorError {
    let pages = AtomicUsize::new(0);
    let server = Hostile::start(move |asked| {
        let path = asked.path.as_str();
        if asked.method != "GET" || !path.starts_with("/v1.0/users") || path.contains("/delta") {
            return None;
        }
        if pages.fetch_add(1, Ordering::SeqCst) > 1000 {
            return Some(answer(400, &json!({"error": {"code": "endless"}})));
        }
        Some(page_to(asked, &next(path)))
    });
    let mut settings = server.settings();
    settings.max_listing_pages = 50;
    let conn = GraphConnector::new(settings).unwrap();
    let started = Instant::now();
    let err = conn.capture(ShardLayout::new(0)).unwrap_err();
    assert!(started.elapsed() < DOES_NOT_HANG);
    assert!(matches!(err, ConnectorError::Malformed { .. }), "{err:?}");
    err
}

#[test]
fn a_next_link_to_its_own_page_is_refused() {
    let err = capture_listing(|_| "/v1.0/users/again".into());
    let text = err.to_string();
    assert!(text.contains("/v1.0/users/again leads back"), "{text}");
}

#[test]
fn a_cycle_of_next_links_is_refused() {
    let err = capture_listing(|path| {
        if path == "/v1.0/users/a" {
            "/v1.0/users/b".into()
        } else {
            "/v1.0/users/a".into()
        }
    });
    let text = err.to_string();
    assert!(text.contains("/v1.0/users/b: its next link"), "{text}");
    assert!(text.contains("/v1.0/users/a leads back"), "{text}");
}

#[test]
fn a_listing_longer_than_max_listing_pages_is_refused() {
    let n = AtomicUsize::new(0);
    let err = capture_listing(move |_| format!("/v1.0/users/{}", n.fetch_add(1, Ordering::SeqCst)));
    let text = err.to_string();
    assert!(text.contains("max_listing_pages (50)"), "{text}");
    assert!(
        text.contains("/v1.0/users/48"),
        "the 50th page is named: {text}"
    );
}

#[test]
fn a_slow_token_renewal_does_not_hold_up_requests_with_a_valid_token() {
    let tokens = Arc::new(AtomicUsize::new(0));
    let released = Arc::new(AtomicBool::new(false));
    let used: Arc<Mutex<Vec<String>>> = Arc::default();
    let server = Hostile::start({
        let (tokens, released, used) = (tokens.clone(), released.clone(), used.clone());
        move |asked| {
            if asked.is_token() {
                if tokens.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Some(token("first", 6));
                }
                // The renewal hangs until the test lets it go (or 20 s have passed).
                let hung = Instant::now();
                while !released.load(Ordering::SeqCst) && hung.elapsed() < Duration::from_secs(20) {
                    std::thread::sleep(Duration::from_millis(10));
                }
                return Some(token("second", 3599));
            }
            if asked.is_batch() {
                used.lock().unwrap().push(asked.authorization.clone());
            }
            None
        }
    });
    // The first token lives 6 s and is renewed from 3 s on.
    let mut settings = server.settings();
    settings.token_refresh_margin = Duration::from_secs(3);
    let conn = GraphConnector::new(settings).unwrap();
    conn.authenticate().unwrap();
    std::thread::sleep(Duration::from_millis(3200));
    std::thread::scope(|scope| {
        let renewal = scope.spawn(|| conn.authenticate());
        let waiting = Instant::now();
        while tokens.load(Ordering::SeqCst) < 2 && waiting.elapsed() < DOES_NOT_HANG {
            std::thread::sleep(Duration::from_millis(5));
        }
        // The renewal is in flight: a write goes on with the first token meanwhile.
        let outcomes = conn.apply_steps(&two_deletes());
        assert!(outcomes.iter().all(|o| o.result == StepResult::Applied));
        assert_eq!(*used.lock().unwrap(), ["Bearer first"]);
        released.store(true, Ordering::SeqCst);
        renewal.join().unwrap().unwrap();
    });
    conn.apply_steps(&two_deletes());
    assert_eq!(*used.lock().unwrap(), ["Bearer first", "Bearer second"]);
    assert_eq!(conn.traffic().token_requests, 2);
}

#[test]
fn threads_without_a_token_wait_for_one_request() {
    let server = Hostile::start(|asked| {
        asked.is_token().then(|| {
            std::thread::sleep(Duration::from_millis(500));
            token("t", 3599)
        })
    });
    let conn = GraphConnector::new(server.settings()).unwrap();
    let start = Barrier::new(4);
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    start.wait();
                    conn.authenticate()
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
    });
    assert_eq!(conn.traffic().token_requests, 1);
    assert_eq!(server.count("POST /contoso/oauth2/v2.0/token"), 1);
}
