//! `bench-diff --store` reuses only snapshots generated with the same parameters: a second run
//! into one store with other parameters, or over snapshots the generator would not make, is
//! refused with a message saying what differs and what to do.

use rewind_common::snapshot::shard::DEFAULT_BLOCK_BYTES;
use rewind_loadtest::bench_diff::{self, BenchDiffConfig, BenchError, PARAMS_KEY};

fn config(store: &std::path::Path, seed: u64, objects: u64) -> BenchDiffConfig {
    BenchDiffConfig {
        objects,
        seed,
        runs: 1,
        store: Some(store.to_owned()),
        export_jsonl: None,
        block_bytes: DEFAULT_BLOCK_BYTES,
    }
}

fn refusal(result: Result<bench_diff::BenchDiffResult, BenchError>) -> String {
    match result {
        Err(e @ BenchError::StaleStore { .. }) => e.to_string(),
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("a stale store was used"),
    }
}

#[test]
fn a_store_is_reused_only_with_the_same_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let first = bench_diff::run(&config(dir.path(), 1, 1_500)).unwrap();
    let again = bench_diff::run(&config(dir.path(), 1, 1_500)).unwrap();
    assert_eq!(again.report_entries, first.report_entries);

    let message = refusal(bench_diff::run(&config(dir.path(), 2, 1_500)));
    assert!(
        message.contains("generated with seed 1 (this run: 2)"),
        "{message}"
    );
    assert!(
        message.ends_with("use another --store or remove that folder"),
        "{message}"
    );
    let message = refusal(bench_diff::run(&config(dir.path(), 1, 1_000)));
    assert!(
        message.contains("objects 1500 (this run: 1000)"),
        "{message}"
    );
    let mut other_blocks = config(dir.path(), 1, 1_500);
    other_blocks.block_bytes = 4096;
    let message = refusal(bench_diff::run(&other_blocks));
    assert!(
        message.contains("block bytes 512 (this run: 4096)"),
        "{message}"
    );
}

#[test]
fn snapshots_other_than_the_generator_makes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    bench_diff::run(&config(dir.path(), 1, 1_000)).unwrap();
    // The record claims seed 2, as if the generator had changed under the same parameters.
    let record = dir.path().join(PARAMS_KEY);
    let text = std::fs::read_to_string(&record).unwrap();
    std::fs::write(&record, text.replace("\"seed\": 1", "\"seed\": 2")).unwrap();
    let message = refusal(bench_diff::run(&config(dir.path(), 2, 1_000)));
    assert!(
        message.contains("of snapshot backup is not what this build generates"),
        "{message}"
    );
}

#[test]
fn a_store_without_a_record_of_its_parameters_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("seed-1-n-1000-b-512/tenants/bench");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("manifest.json"), b"{}").unwrap();
    let message = refusal(bench_diff::run(&config(dir.path(), 1, 1_000)));
    assert!(
        message.contains(
            "holds seed-1-n-1000-b-512/tenants/bench/manifest.json but no bench-diff.json"
        ),
        "{message}"
    );
}
