//! The metrics endpoint over real HTTP: named metrics recorded through the `metrics` facade are
//! scraped from `serve_metrics` with their `rewind_` names, and `_seconds` histograms render as
//! Prometheus histograms (`_bucket` lines). Other tests of this binary record too (the
//! connector's Graph metrics, the write budget's) into the same process-wide recorder once it
//! is installed: the series checked here are ones no other test records.

use std::io::Read as _;
use std::net::SocketAddr;

use rewind_common::metrics::{self as names, label, status_class, task_kind, task_outcome};
use rewind_worker::telemetry::{install_metrics, serve_metrics, PROMETHEUS_CONTENT_TYPE};

fn scrape(addr: SocketAddr) -> (String, String) {
    let mut response = ureq::get(&format!("http://{addr}/metrics")).call().unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let mut body = String::new();
    response
        .body_mut()
        .as_reader()
        .read_to_string(&mut body)
        .unwrap();
    (content_type, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraped_metrics_carry_the_rewind_names_and_histogram_buckets() {
    let handle = install_metrics().unwrap();
    let (addr, server) = serve_metrics("127.0.0.1:0".parse().unwrap(), handle)
        .await
        .unwrap();
    assert_ne!(addr.port(), 0);

    metrics::counter!(names::GRAPH_REQUESTS_TOTAL, label::CLASS => status_class::C3XX).increment(3);
    metrics::counter!(names::GRAPH_TOKEN_REQUESTS_TOTAL, label::CLASS => status_class::C5XX)
        .increment(1);
    metrics::counter!(
        names::TASKS_TOTAL,
        label::KIND => task_kind::DIFF,
        label::OUTCOME => task_outcome::OK
    )
    .increment(2);
    metrics::gauge!(names::SNAPSHOT_CACHE_BYTES).set(4096.0);
    for s in [0.002, 0.2, 3.0] {
        metrics::histogram!(names::SHARD_DIFF_SECONDS).record(s);
    }
    // A later call hands out the same recorder.
    assert!(install_metrics()
        .unwrap()
        .render()
        .contains("rewind_snapshot_cache_bytes 4096"));

    let (content_type, body) = tokio::task::spawn_blocking(move || scrape(addr))
        .await
        .unwrap();
    assert_eq!(content_type, PROMETHEUS_CONTENT_TYPE);
    for line in [
        "rewind_graph_requests_total{class=\"3xx\"} 3",
        "rewind_graph_token_requests_total{class=\"5xx\"} 1",
        "rewind_tasks_total{kind=\"diff\",outcome=\"ok\"} 2",
        "rewind_snapshot_cache_bytes 4096",
        "rewind_shard_diff_seconds_bucket{le=\"0.0025\"} 1",
        "rewind_shard_diff_seconds_bucket{le=\"+Inf\"} 3",
        "rewind_shard_diff_seconds_count 3",
        "# TYPE rewind_shard_diff_seconds histogram",
        "# HELP rewind_graph_token_requests_total Client-credentials token requests sent",
    ] {
        assert!(body.contains(line), "{line} not in:\n{body}");
    }
    for sample in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        assert!(sample.starts_with("rewind_"), "{sample}");
    }
    server.abort();
}
