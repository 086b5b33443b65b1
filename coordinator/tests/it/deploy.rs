//! `deploy/` stays honest: every `rewind_` name in it (alert rules, dashboard, anything else) is a
//! metric Rewind records, the label values its queries match on are the documented ones, the
//! example config files (and those embedded in the Kubernetes ConfigMap) parse with the
//! coordinator's own reader, the dashboard is JSON, the alert rules have an `alert:` and an
//! `expr:` each, and every flag that the systemd units, the compose file, the Kubernetes
//! manifests and the README give to `rewind coordinator`, `rewind worker` or `rewind dirsim` is
//! one the real binary accepts.
//!
//! No YAML parser is in the lock file, so the YAML files are checked line by line; to keep the
//! flag check exhaustive, every `command:` and `args:` of the compose file and the manifests
//! must be a one-line flow list (`args: ["worker", "--name", "x"]`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use rewind_common::metrics::{self as m, Kind};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Every file under `dir`, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The path below `deploy/`, for messages and for choosing files.
fn rel(path: &Path) -> String {
    path.strip_prefix(deploy_dir())
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Every `rewind_...` token of `text` (not the tail of a longer identifier).
fn rewind_tokens(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find("rewind_").map(|i| i + from) {
        let end = at
            + bytes[at..]
                .iter()
                .take_while(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || **b == b'_')
                .count();
        if at == 0 || !is_ident(bytes[at - 1]) {
            out.push(&text[at..end]);
        }
        from = end;
    }
    out
}

/// Whether `token` is a metric of `rewind_common::metrics` (a histogram also under its
/// `_bucket`, `_sum` and `_count` series).
fn is_metric(token: &str) -> bool {
    let all = || m::ALL.iter().chain(m::DIRSIM);
    if all().any(|(name, _)| *name == token) {
        return true;
    }
    ["_bucket", "_sum", "_count"].iter().any(|suffix| {
        token
            .strip_suffix(suffix)
            .is_some_and(|base| all().any(|(name, kind)| *name == base && *kind == Kind::Histogram))
    })
}

#[test]
fn every_rewind_name_under_deploy_is_a_metric_rewind_records() {
    let mut unknown = Vec::new();
    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in files_under(&deploy_dir()) {
        let text = read(&path);
        for token in rewind_tokens(&text) {
            if is_metric(token) {
                seen.entry(rel(&path)).or_default().insert(token.to_owned());
            } else {
                unknown.push(format!("{}: {token}", rel(&path)));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "not metrics of rewind_common::metrics (ALL, DIRSIM): {unknown:#?}"
    );
    let dashboard = seen.get("grafana/rewind.json").cloned().unwrap_or_default();
    assert!(dashboard.len() >= 15, "the dashboard shows {dashboard:?}");
    let alerts = seen
        .get("prometheus/alerts.yml")
        .cloned()
        .unwrap_or_default();
    for name in [
        m::TASK_DEAD_LETTERS_TOTAL,
        m::JOBS_TOTAL,
        m::QUEUE_PENDING_TASKS,
        m::GRAPH_THROTTLED_TOTAL,
        m::SNAPSHOT_CACHE_EVICTIONS_TOTAL,
    ] {
        assert!(alerts.contains(name), "no alert on {name}: {alerts:?}");
    }
}

/// The values a query may match a label against.
fn label_values() -> BTreeMap<&'static str, BTreeSet<&'static str>> {
    let set = |lists: &[&[&'static str]]| lists.iter().flat_map(|l| l.iter().copied()).collect();
    BTreeMap::from([
        (m::label::KIND, set(&[m::job_kind::ALL, m::task_kind::ALL])),
        (m::label::STATUS, set(&[m::job_status::ALL])),
        (m::label::PHASE, set(&[m::phase::ALL])),
        (
            m::label::OUTCOME,
            set(&[m::task_outcome::ALL, m::action_outcome::ALL]),
        ),
        (m::label::LANE, set(&[m::lane::ALL])),
        (
            m::label::CLASS,
            set(&[m::status_class::ALL, m::write_class::ALL]),
        ),
    ])
}

/// Every `label OP "value"` of `text` for the labels of `labels` (OP: `=`, `!=`, `=~`, `!~`).
fn matchers<'a>(text: &'a str, label: &str) -> Vec<(&'a str, &'a str)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find(label).map(|i| i + from) {
        from = at + label.len();
        if at > 0 && is_ident(bytes[at - 1]) {
            continue;
        }
        let rest = text[from..].trim_start();
        let Some(op) = ["=~", "!~", "!=", "="]
            .into_iter()
            .find(|op| rest.starts_with(op))
        else {
            continue;
        };
        let rest = rest[op.len()..].trim_start();
        if let Some(value) = rest.strip_prefix('"').and_then(|r| r.split('"').next()) {
            out.push((op, value));
        }
    }
    out
}

#[test]
fn queries_match_only_documented_label_values() {
    let values = label_values();
    let mut bad = Vec::new();
    let mut found = 0;
    for path in files_under(&deploy_dir()) {
        let name = rel(&path);
        if !(name.starts_with("prometheus/") || name.starts_with("grafana/")) {
            continue;
        }
        // JSON escapes the quotes of PromQL strings.
        let text = read(&path).replace("\\\"", "\"");
        for (label, allowed) in &values {
            for (op, value) in matchers(&text, label) {
                found += 1;
                let alternatives: Vec<&str> = if op.contains('~') {
                    value.split('|').collect()
                } else {
                    vec![value]
                };
                for v in alternatives {
                    if !allowed.contains(v) {
                        bad.push(format!(
                            "{name}: {label}{op}\"{value}\" ({v:?} is not one of {allowed:?})"
                        ));
                    }
                }
            }
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
    assert!(found >= 2, "no label matcher found: the scan is broken");
}

/// The TOML blocks embedded in YAML files (`name.toml: |` and the more indented lines after it).
fn embedded_toml(yaml: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = yaml.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim();
        let Some(key) = t.strip_suffix(": |") else {
            continue;
        };
        if !key.ends_with(".toml") {
            continue;
        }
        let own = indent(line);
        let body: Vec<&str> = lines[i + 1..]
            .iter()
            .take_while(|l| l.trim().is_empty() || indent(l) > own)
            .copied()
            .collect();
        let cut = body
            .iter()
            .filter(|l| !l.trim().is_empty())
            .map(|l| indent(l))
            .min()
            .unwrap_or(0);
        let text: String = body
            .iter()
            .map(|l| format!("{}\n", l.get(cut..).unwrap_or("")))
            .collect();
        out.push((key.to_owned(), text));
    }
    out
}

#[test]
fn the_example_config_files_parse_and_agree_on_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let mut parsed = Vec::new();
    for path in files_under(&deploy_dir()) {
        let name = rel(&path);
        if name.ends_with(".toml") {
            parsed.push((name, rewind_coordinator::cli::read_config(&path)));
        } else if name.ends_with(".yml") || name.ends_with(".yaml") {
            for (key, text) in embedded_toml(&read(&path)) {
                let file = dir.path().join(&key);
                std::fs::write(&file, text).unwrap();
                parsed.push((
                    format!("{name} ({key})"),
                    rewind_coordinator::cli::read_config(&file),
                ));
            }
        }
    }
    let names: Vec<&str> = parsed.iter().map(|(n, _)| n.as_str()).collect();
    for expected in [
        "config/rewind.toml",
        "config/worker.toml",
        "k8s/configmap.yaml (rewind.toml)",
        "k8s/configmap.yaml (worker.toml)",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} not found in {names:?}"
        );
    }
    let mut queues = BTreeSet::new();
    for (name, result) in parsed {
        let file = result.unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let nats = file
            .nats
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: no [nats]"));
        assert!(!nats.urls.is_empty(), "{name}: no NATS urls (cluster mode)");
        queues.insert(format!("{:?}", file.queue));
    }
    // Every process creates or updates the same streams and consumers with its [queue].
    assert_eq!(
        queues.len(),
        1,
        "[queue] differs between the files: {queues:#?}"
    );
}

#[test]
fn the_dashboard_is_json_and_every_panel_queries_the_provisioned_datasource() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read(&deploy_dir().join("grafana/rewind.json")))
            .unwrap_or_else(|e| panic!("grafana/rewind.json: {e}"));
    let datasources = read(&deploy_dir().join("grafana/provisioning/datasources/prometheus.yml"));
    let uid = datasources
        .lines()
        .find_map(|l| l.trim().strip_prefix("uid:"))
        .map(str::trim)
        .expect("the provisioned datasource has a uid");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut queries = 0;
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let title = panel["title"].as_str().unwrap_or("?");
        assert_eq!(panel["datasource"]["uid"], uid, "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has no query");
        for target in targets {
            assert!(
                target["expr"]
                    .as_str()
                    .is_some_and(|e| e.contains("rewind_")),
                "{title}: {target}"
            );
            queries += 1;
        }
    }
    assert!(queries >= 15, "{queries} queries");
}

#[test]
fn the_yaml_files_have_no_tabs_and_every_alert_rule_an_expression() {
    // A YAML crate is not in the lock file: check the shape by lines instead.
    for path in files_under(&deploy_dir()) {
        let name = rel(&path);
        if name.ends_with(".yml") || name.ends_with(".yaml") {
            let text = read(&path);
            assert!(
                !text.contains('\t'),
                "{name}: a tab (YAML indents with spaces)"
            );
        }
    }
    let alerts = read(&deploy_dir().join("prometheus/alerts.yml"));
    assert!(alerts.lines().any(|l| l.trim() == "groups:"), "no groups:");
    let mut names = BTreeSet::new();
    let rules: Vec<&str> = alerts.split("- alert:").skip(1).collect();
    for rule in &rules {
        let name = rule.lines().next().unwrap_or("").trim();
        assert!(!name.is_empty(), "an alert without a name");
        assert!(names.insert(name), "alert {name} twice");
        assert!(
            rule.lines().any(|l| l.trim_start().starts_with("expr:")),
            "alert {name} has no expr:"
        );
    }
    assert!(rules.len() >= 6, "{} alert rules", rules.len());
    assert!(
        alerts.contains("up{") && alerts.contains("== 0"),
        "no alert on a target being down"
    );
    let prometheus = read(&deploy_dir().join("prometheus/prometheus.yml"));
    let mut rule_files = prometheus
        .lines()
        .skip_while(|l| l.trim() != "rule_files:")
        .skip(1)
        .map_while(|l| l.trim().strip_prefix("- "));
    let rule_file = rule_files
        .next()
        .expect("prometheus.yml names its rule files");
    assert!(
        deploy_dir().join("prometheus").join(rule_file).exists(),
        "{rule_file} is not beside prometheus.yml"
    );
}

const ROLES: [&str; 3] = ["coordinator", "worker", "dirsim"];

/// The `--flags` of an invocation's words (`--flag=value` gives `--flag`).
fn flags<'a>(words: impl Iterator<Item = &'a str>) -> Vec<String> {
    words
        .filter(|w| w.starts_with("--"))
        .map(|w| w.split('=').next().unwrap_or(w).to_owned())
        .collect()
}

/// The invocations of `rewind <role>` in `text`: (role, flags). Found as a shell or `ExecStart=`
/// command line (`rewind coordinator --config ...`, continued by a trailing `\`, also quoted in
/// Markdown prose) and as a one-line flow list (`command: ["worker", "--name", "w1"]`).
fn invocations(name: &str, text: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let joined = text.replace("\\\n", " ");
    for line in joined.lines() {
        // Backticks: a command quoted in Markdown prose.
        let words: Vec<&str> = line
            .split_whitespace()
            .map(|w| w.trim_matches('`'))
            .collect();
        for (i, pair) in words.windows(2).enumerate() {
            let program = pair[0].rsplit(['/', '=']).next().unwrap_or("");
            if program == "rewind" && ROLES.contains(&pair[1]) {
                let rest = words[i + 2..]
                    .iter()
                    .copied()
                    .take_while(|w| !["|", "&&", ";", "#"].contains(w));
                out.push((pair[1].to_owned(), flags(rest)));
            }
        }
        let t = line.trim_start().trim_start_matches("- ");
        for key in ["command:", "args:", "entrypoint:"] {
            let Some(value) = t.strip_prefix(key) else {
                continue;
            };
            let value = value.trim();
            let is_manifest = name == "docker-compose.yml" || name.starts_with("k8s/");
            assert!(
                !is_manifest || (value.starts_with('[') && value.ends_with(']')),
                "{name}: `{}` is not a one-line flow list, so its flags cannot be checked",
                line.trim()
            );
            let Some(list) = value.strip_prefix('[').and_then(|v| v.strip_suffix(']')) else {
                continue;
            };
            let items: Vec<&str> = list
                .split(',')
                .map(|s| s.trim().trim_matches('"'))
                .collect();
            let start = usize::from(items.first() == Some(&"rewind"));
            if let Some(role) = items.get(start).filter(|r| ROLES.contains(r)) {
                out.push((
                    (*role).to_owned(),
                    flags(items[start + 1..].iter().copied()),
                ));
            }
        }
    }
    out
}

/// Whether `help` names `flag` (not only a longer flag starting with it).
fn help_names(help: &str, flag: &str) -> bool {
    help.match_indices(flag).any(|(at, _)| {
        help[at + flag.len()..]
            .bytes()
            .next()
            .is_none_or(|b| !(b.is_ascii_alphanumeric() || b == b'-'))
    })
}

#[test]
fn every_flag_given_to_rewind_under_deploy_is_accepted_by_the_binary() {
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut uses: Vec<(String, String, String)> = Vec::new();
    for path in files_under(&deploy_dir()) {
        let name = rel(&path);
        for (role, flags) in invocations(&name, &read(&path)) {
            found.entry(name.clone()).or_default().insert(role.clone());
            for flag in flags {
                uses.push((name.clone(), role.clone(), flag));
            }
        }
    }
    for (file, roles) in [
        (
            "docker-compose.yml",
            &["coordinator", "worker", "dirsim"][..],
        ),
        ("systemd/rewind-coordinator.service", &["coordinator"]),
        ("systemd/rewind-worker@.service", &["worker"]),
        ("k8s/coordinator.yaml", &["coordinator"]),
        ("k8s/worker.yaml", &["worker"]),
        ("README.md", &["coordinator", "worker", "dirsim"]),
    ] {
        for role in roles {
            assert!(
                found.get(file).is_some_and(|r| r.contains(*role)),
                "no `rewind {role}` found in {file}: {found:?}"
            );
        }
    }
    let mut help = BTreeMap::new();
    for role in ROLES {
        let out = Command::new(env!("CARGO_BIN_EXE_rewind"))
            .args([role, "--help"])
            .env_remove("RUST_LOG")
            .output()
            .expect("the rewind binary runs");
        assert!(out.status.success(), "rewind {role} --help failed");
        help.insert(
            role.to_owned(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        );
    }
    let unknown: Vec<String> = uses
        .iter()
        .filter(|(_, role, flag)| !help_names(&help[role], flag))
        .map(|(file, role, flag)| format!("{file}: rewind {role} {flag}"))
        .collect();
    assert!(
        unknown.is_empty(),
        "flags the binary does not accept: {unknown:#?}"
    );
    assert!(
        uses.len() >= 10,
        "only {} flags found: the scan is broken",
        uses.len()
    );
}
