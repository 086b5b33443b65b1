//! The connector's metrics against the simulator over real HTTP, read from a
//! `DebuggingRecorder` installed for the test's thread only (`apply_steps` sends its requests
//! from the calling thread): every request counted by status class, token requests, request
//! seconds, and the simulator's 429s counted as throttled.

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::MetricKind;
use rewind_common::connector::write::StepResult;
use rewind_common::connector::GraphConnector;
use rewind_common::metrics as names;
use rewind_common::plan::Step;
use rewind_common::snapshot::ShardLayout;
use rewind_common::ObjectType;
use serde_json::json;

use crate::connector::{connector, settings, step, uid, write_scene};

/// One metric a recorder saw: its kind, name, labels and value.
type Recorded = (MetricKind, String, Vec<(String, String)>, DebugValue);

/// What a recorder saw: a counter's value by (name, labels), and histogram sample counts.
struct Seen(Vec<Recorded>);

impl Seen {
    fn of(recorder: &DebuggingRecorder) -> Self {
        Self(
            recorder
                .snapshotter()
                .snapshot()
                .into_vec()
                .into_iter()
                .map(|(key, _, _, value)| {
                    let (kind, key) = key.into_parts();
                    let labels = key
                        .labels()
                        .map(|l| (l.key().to_owned(), l.value().to_owned()))
                        .collect();
                    (kind, key.name().to_owned(), labels, value)
                })
                .collect(),
        )
    }

    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.0
            .iter()
            .filter(|(kind, n, l, _)| {
                *kind == MetricKind::Counter
                    && n == name
                    && l.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(a, b)| a == k && b == v))
            })
            .map(|(_, _, _, v)| match v {
                DebugValue::Counter(n) => *n,
                _ => 0,
            })
            .sum()
    }

    fn samples(&self, name: &str) -> usize {
        self.0
            .iter()
            .filter(|(_, n, _, _)| n == name)
            .map(|(_, _, _, v)| match v {
                DebugValue::Histogram(s) => s.len(),
                _ => 0,
            })
            .sum()
    }

    /// Every name recorded is one of `rewind_common::metrics::ALL`, with its kind.
    fn all_named(&self) {
        for (kind, name, _, _) in &self.0 {
            let listed = names::ALL.iter().find(|(n, _)| n == name);
            let expected = match kind {
                MetricKind::Counter => names::Kind::Counter,
                MetricKind::Gauge => names::Kind::Gauge,
                MetricKind::Histogram => names::Kind::Histogram,
            };
            assert_eq!(listed.map(|(_, k)| *k), Some(expected), "{name}");
        }
    }
}

fn class(c: &str) -> [(&'static str, &str); 1] {
    [(names::label::CLASS, c)]
}

#[test]
fn graph_requests_are_counted_by_status_class() {
    let sim = write_scene();
    let conn = connector(&sim, "contoso");
    let recorder = DebuggingRecorder::new();
    let outcomes = metrics::with_local_recorder(&recorder, || {
        conn.apply_steps(&[step(Step::SoftDelete {
            id: uid(3),
            object_type: ObjectType::User,
        })])
    });
    assert_eq!(outcomes[0].result, StepResult::Applied);
    let seen = Seen::of(&recorder);
    seen.all_named();
    let sent = conn.traffic();
    assert!(sent.requests >= 1);
    assert_eq!(
        seen.counter(names::GRAPH_REQUESTS_TOTAL, &class("2xx")),
        sent.requests,
        "every request was answered with a success"
    );
    assert_eq!(
        seen.counter(names::GRAPH_TOKEN_REQUESTS_TOTAL, &class("2xx")),
        sent.token_requests
    );
    assert_eq!(
        seen.samples(names::GRAPH_REQUEST_SECONDS) as u64,
        sent.requests
    );
    assert_eq!(seen.counter(names::GRAPH_THROTTLED_TOTAL, &[]), 0);
    assert_eq!(seen.counter(names::GRAPH_RETRIES_TOTAL, &[]), 0);
}

#[test]
fn a_capture_counts_its_objects_by_type() {
    let sim = write_scene();
    let conn = connector(&sim, "contoso");
    let recorder = DebuggingRecorder::new();
    let (_, stats) =
        metrics::with_local_recorder(&recorder, || conn.capture(ShardLayout::new(0))).unwrap();
    let seen = Seen::of(&recorder);
    seen.all_named();
    assert!(stats.objects[&ObjectType::User] >= 40);
    for (t, n) in &stats.objects {
        let labels = [(names::label::TYPE, t.as_str())];
        assert_eq!(
            seen.counter(names::OBJECTS_CAPTURED_TOTAL, &labels),
            *n,
            "{t:?}"
        );
    }
}

#[test]
fn throttled_and_failed_requests_are_counted() {
    let sim = write_scene();
    sim.settings(json!({"write_429_rate": 1.0, "retry_after_429_min_secs": 0,
        "retry_after_429_max_secs": 0}));
    let mut s = settings(&sim, "contoso", "secret-contoso");
    s.max_attempts = 3;
    let conn = GraphConnector::new(s).unwrap();
    let recorder = DebuggingRecorder::new();
    let outcomes = metrics::with_local_recorder(&recorder, || {
        conn.apply_steps(&[step(Step::SoftDelete {
            id: uid(4),
            object_type: ObjectType::User,
        })])
    });
    assert!(
        matches!(
            outcomes[0].result,
            StepResult::Failed {
                permanent: false,
                status: 429,
                ..
            }
        ),
        "{:?}",
        outcomes[0].result
    );
    let seen = Seen::of(&recorder);
    seen.all_named();
    assert!(
        seen.counter(names::GRAPH_THROTTLED_TOTAL, &[]) >= 3,
        "every attempt was answered 429"
    );

    // A wrong secret: the token endpoint answers 4xx, and no Graph request is sent.
    let wrong = GraphConnector::new(settings(&sim, "contoso", "wrong")).unwrap();
    let recorder = DebuggingRecorder::new();
    let authenticated = metrics::with_local_recorder(&recorder, || wrong.authenticate());
    assert!(authenticated.is_err());
    let seen = Seen::of(&recorder);
    assert_eq!(
        seen.counter(names::GRAPH_TOKEN_REQUESTS_TOTAL, &class("4xx")),
        1
    );
    assert_eq!(seen.counter(names::GRAPH_REQUESTS_TOTAL, &class("2xx")), 0);
}

#[test]
fn a_request_that_gets_no_answer_is_counted_as_an_error() {
    // A port nothing listens on (bound, then closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let mut s = rewind_common::connector::GraphSettings::new(
        base.clone(),
        format!("{base}/contoso/v1.0"),
        "contoso",
        "app",
        "secret",
    );
    s.max_attempts = 2;
    s.min_backoff = std::time::Duration::from_millis(10);
    let conn = GraphConnector::new(s).unwrap();
    let recorder = DebuggingRecorder::new();
    let result = metrics::with_local_recorder(&recorder, || conn.authenticate());
    assert!(result.is_err());
    let seen = Seen::of(&recorder);
    assert_eq!(
        seen.counter(names::GRAPH_TOKEN_REQUESTS_TOTAL, &class("error")),
        2
    );
    assert_eq!(seen.counter(names::GRAPH_RETRIES_TOTAL, &[]), 1);
}
