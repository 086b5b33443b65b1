//! Integration tests of the coordinator: the `rewind` binary as an operator runs it (real
//! process, real arguments, exit codes and output), its client commands against a running
//! API (`cli.rs`), the audit log's verify and export (`audit.rs`), its durable state (`state/`), the cluster end to end and under faults
//! (`cluster/`), the HTTP API over real HTTP (`api/`), `rewind demo` (`demo.rs`), and the
//! files of `deploy/` against the code (`deploy.rs`).

// Tests may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod api;
mod audit;
mod cli;
mod cluster;
mod demo;
mod deploy;
mod recovery;
mod state;

use std::process::Command;

fn rewind(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rewind"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the rewind binary runs")
}

#[test]
fn bench_diff_prints_its_results_as_json_on_the_last_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let jsonl = dir.path().join("export");
    let out = rewind(&[
        "loadtest",
        "bench-diff",
        "--objects",
        "3000",
        "--runs",
        "1",
        "--export-jsonl",
        jsonl.to_str().expect("utf-8 path"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench-diff failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().expect("a result line");
    let result: serde_json::Value = serde_json::from_str(last).expect("JSON on the last line");
    for key in [
        "objects",
        "changed",
        "cold_seconds",
        "warm_seconds",
        "baseline_seconds",
        "speedup",
        "peak_rss_bytes",
        "bytes_per_object",
    ] {
        assert!(result.get(key).is_some(), "missing {key} in {last}");
    }
    assert_eq!(result["objects"], 3000);
    let expected = result["changed"].as_u64().unwrap_or(0)
        + result["created"].as_u64().unwrap_or(0)
        + result["soft_deleted"].as_u64().unwrap_or(0);
    assert!(expected > 0);
    assert_eq!(result["report_entries"].as_u64(), Some(expected));
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("INFO") && l.contains("cold run") && l.contains("run=1 runs=1")),
        "no progress shown: {stderr}"
    );

    let backup = std::fs::read_to_string(jsonl.join("backup.jsonl")).expect("backup.jsonl");
    let current = std::fs::read_to_string(jsonl.join("current.jsonl")).expect("current.jsonl");
    assert_eq!(backup.lines().count(), 3000);
    assert_eq!(
        current.lines().count() as u64,
        3000 + result["created"].as_u64().unwrap_or(0)
    );
    let first: serde_json::Value =
        serde_json::from_str(backup.lines().next().expect("a line")).expect("Graph JSON");
    assert!(
        first["id"].is_string() && first["@odata.type"].is_string(),
        "{first}"
    );
}

#[test]
fn log_json_writes_progress_as_json_lines_with_fields() {
    let out = rewind(&[
        "--log-json",
        "loadtest",
        "bench-diff",
        "--objects",
        "300",
        "--runs",
        "1",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench-diff failed: {stderr}");
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let cold = events
        .iter()
        .find(|e| e["fields"]["message"] == "cold run")
        .unwrap_or_else(|| panic!("no cold run event: {stderr}"));
    assert_eq!(cold["level"], "INFO");
    assert_eq!(cold["fields"]["run"], 1);
    assert!(cold["fields"]["seconds"].is_f64(), "{cold}");
}

#[test]
fn an_error_is_one_plain_line_even_with_log_json() {
    let out = rewind(&["--log-json", "loadtest", "bench-diff", "--objects", "0"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains("--objects must be at least 1"), "{stderr}");
}

#[test]
fn bad_input_is_a_clear_error_and_a_non_zero_exit() {
    let out = rewind(&["loadtest", "bench-diff", "--objects", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--objects must be at least 1"));
    let out = rewind(&["loadtest", "bench-diff", "--objects", "many"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'many'"));
    let out = rewind(&["no-such-role"]);
    assert!(!out.status.success());
}

#[test]
fn bench_api_pages_exports_and_polls_a_real_report() {
    let out = rewind(&[
        "loadtest",
        "bench-api",
        "--objects",
        "3000",
        "--changed",
        "0.5",
        "--pages",
        "2",
        "--clients",
        "2",
        "--poll-seconds",
        "1",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench-api failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().expect("a result line");
    let r: serde_json::Value = serde_json::from_str(last).expect("JSON on the last line");
    let entries = r["entries"].as_u64().unwrap();
    // Half of 3,000 objects changed, plus the soft-deleted and created ones.
    assert!(entries >= 1500, "{last}");
    for at in ["get_changes_start", "get_changes_middle", "get_changes_end"] {
        assert_eq!(r[at]["requests"], 2, "{at}: {last}");
        assert!(r[at]["p50_ms"].as_f64().unwrap() > 0.0, "{at}: {last}");
    }
    // Every page walked: ceil(entries / 999) requests.
    assert_eq!(
        r["get_changes_walk"]["requests"].as_u64(),
        Some(entries.div_ceil(999))
    );
    let exports = r["exports"].as_array().unwrap();
    assert_eq!(exports.len(), 2);
    assert_eq!(exports[0]["format"], "jsonl");
    assert_eq!(exports[0]["lines"].as_u64(), Some(entries));
    // CSV: a row per changed attribute or link, at least one per entry.
    assert!(exports[1]["lines"].as_u64().unwrap() >= entries, "{last}");
    assert!(r["job_polls"]["requests"].as_u64().unwrap() > 0, "{last}");
}

/// `rewind loadtest bench-recovery` with `args`: its stdout table and its JSON (the last line,
/// the same as the `--json` file).
fn bench_recovery(args: &[&str]) -> (String, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("recovery.json");
    let mut all = vec![
        "loadtest",
        "bench-recovery",
        "--json",
        file.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let out = rewind(&all);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench-recovery failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let last = stdout.lines().last().expect("a result line");
    let r: serde_json::Value = serde_json::from_str(last).expect("JSON on the last line");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(written, r);
    (stdout, r)
}

#[test]
fn bench_recovery_recovers_every_change_and_times_its_phases() {
    let (stdout, r) = bench_recovery(&["--changes", "300", "--runs", "2"]);
    assert_eq!(r["changes"], 300);
    assert_eq!(r["throttled"], false);
    assert!(r["budget"].is_null(), "{r}");
    let runs = r["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for run in runs {
        // One update per disabled user, every one applied, none refused or throttled.
        assert_eq!(run["actions"], 300, "{run}");
        assert_eq!(run["applied"], 300, "{run}");
        assert_eq!(run["failed"], 0, "{run}");
        assert_eq!(run["writes"]["throttled"], 0, "{run}");
        assert!(run["writes"]["admitted"].as_u64().unwrap() >= 300, "{run}");
        for phase in ["capturing", "diffing", "planning", "applying"] {
            assert!(run["job"]["phases"][phase].is_f64(), "{phase}: {run}");
        }
        assert!(run["apply_seconds"].as_f64().unwrap() > 0.0, "{run}");
        assert!(run["first_write_seconds"].as_f64().unwrap() >= 0.0, "{run}");
        assert!(
            ["writeLog", "firstActionAt"].contains(&run["first_write_source"].as_str().unwrap()),
            "{run}"
        );
        assert!(run["minimum_seconds"].is_null(), "{run}");
    }
    // 500,000 changes at 20 and 60 writes per second.
    let hours = &r["implied_500k_hours"];
    assert_eq!(hours["microsoft"], 30.0);
    assert!((hours["one_registration"].as_f64().unwrap() - 6.944).abs() < 0.01);
    assert!((hours["three_registrations"].as_f64().unwrap() - 2.315).abs() < 0.01);
    assert!(
        stdout.contains("apply/s") && stdout.contains("500,000 changes"),
        "{stdout}"
    );
}

#[test]
fn bench_recovery_throttled_compares_with_the_budgets_minimum() {
    let (_, r) = bench_recovery(&["--throttled", "--changes", "100", "--budget", "50"]);
    assert_eq!(r["throttled"], true);
    assert_eq!(r["budget"], 50);
    let run = &r["runs"][0];
    assert_eq!(run["actions"], 100, "{run}");
    // 100 writes at 50 per second take 2 s at least.
    assert_eq!(run["minimum_seconds"], 2.0, "{run}");
    assert!(run["apply_vs_minimum"].as_f64().unwrap() > 0.0, "{run}");
    let settled = ["applied", "failed", "not_sent", "already_in_state"]
        .iter()
        .map(|k| run[k].as_u64().unwrap())
        .sum::<u64>();
    assert_eq!(settled, 100, "{run}");
    let share = run["writes"]["throttled_share"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&share), "{run}");
}

/// Cluster mode: the coordinator over JetStream and two worker processes, through two apps.
#[test]
fn bench_recovery_runs_in_cluster_mode() {
    let (_, r) = bench_recovery(&[
        "--throttled",
        "--changes",
        "100",
        "--budget",
        "50",
        "--apps",
        "2",
        "--cluster",
    ]);
    assert_eq!(r["cluster"], true);
    let workers = r["peak_memory"]["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2, "{r}");
    assert!(workers.iter().all(|w| w.as_u64().unwrap() > 0), "{r}");
    let run = &r["runs"][0];
    assert_eq!(run["actions"], 100, "{run}");
    let settled = run["applied"].as_u64().unwrap() + run["already_in_state"].as_u64().unwrap();
    assert_eq!((settled, run["failed"].as_u64()), (100, Some(0)), "{run}");
    // Both apps wrote: the workers' tasks went through each.
    let by_app = run["writes"]["max_per_second_by_app"].as_object().unwrap();
    assert_eq!(by_app.len(), 2, "{run}");
    assert!(by_app.values().all(|n| n.as_u64().unwrap() > 0), "{run}");
}

#[test]
fn bench_recovery_refuses_bad_input_naming_the_flag() {
    for (args, message) in [
        (vec!["--changes", "0"], "--changes must be at least 1"),
        (
            vec!["--budget", "0"],
            "--budget must be between 1 and 100000",
        ),
        (vec!["--runs", "0"], "--runs must be at least 1"),
        (
            vec!["--directory-limit", "200"],
            "--directory-limit needs --throttled",
        ),
        (vec!["--changes", "many"], "invalid value 'many'"),
    ] {
        let mut all = vec!["loadtest", "bench-recovery"];
        all.extend(args);
        let out = rewind(&all);
        assert!(!out.status.success(), "{all:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{all:?}: {stderr}");
    }
}
