//! `rewind demo` as an operator runs it: the real binary, end to end (simulator, single-node
//! coordinator and its API, seven scenarios' tenants), its exit code and its summary.

use std::process::Command;

fn demo(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rewind"))
        .arg("demo")
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the rewind binary runs")
}

#[test]
fn the_demo_at_20000_objects_matches_every_expected_report() {
    let out = demo(&["--objects", "20000"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    // 20,000 shared out equally among seven tenants.
    assert!(
        stdout.contains("19999 objects, one tenant of 2857 objects per scenario"),
        "{stdout}"
    );
    for scenario in ["S1", "S2", "S3", "S4", "S5", "S6", "S7"] {
        let tenant = format!("demo-{}", scenario.to_lowercase());
        let line = stdout
            .lines()
            .find(|l| l.starts_with(scenario) && l.contains(&tenant))
            .unwrap_or_else(|| panic!("no line for {scenario}: {stdout}"));
        assert!(line.trim_end().ends_with("match"), "{line}");
        // Entries read through the API, then the expected count: equal, and not zero.
        let numbers: Vec<u64> = line
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        assert_eq!(numbers.len(), 2, "{line}");
        assert_eq!(numbers[0], numbers[1], "{line}");
        assert!(numbers[0] > 0, "{line}");
    }
    assert!(stdout.contains("entries by type"), "{stdout}");
    for column in ["update", "restore", "softDelete", "notRecoverable"] {
        assert!(stdout.contains(column), "no {column} column: {stdout}");
    }
    for row in [
        "user",
        "group",
        "servicePrincipal",
        "conditionalAccessPolicy",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(row)),
            "no {row} row: {stdout}"
        );
    }
    let seconds = stdout
        .lines()
        .find(|l| l.starts_with("seconds: "))
        .unwrap_or_else(|| panic!("no timings: {stdout}"));
    for phase in [
        "generate",
        "backup",
        "incidents",
        "report",
        "check",
        "total",
    ] {
        assert!(seconds.contains(phase), "{seconds}");
    }
    assert!(
        stdout.contains("result: every report matches its expected report"),
        "{stdout}"
    );
    // Without --keep, no token is printed.
    assert!(!stdout.contains("rwd_"), "{stdout}");
    // Progress of the long steps is logged with counts.
    assert!(
        stderr.contains("jobs_done=") && stderr.contains("every job successful"),
        "{stderr}"
    );
}

#[test]
fn too_few_objects_are_refused_with_the_minimum() {
    let out = demo(&["--objects", "700"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--objects must be at least 7000") && stderr.contains("got 700"),
        "{stderr}"
    );
    let out = demo(&["--objects", "lots"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'lots'"));
}
