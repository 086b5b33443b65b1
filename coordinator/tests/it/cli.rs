//! The client commands as an operator runs them: the real `rewind` binary against a real
//! coordinator (single-node mode, the API on `127.0.0.1:0`) and a simulator tenant; exit codes
//! 0/1/2/3, JSON output of every command, a scope refused before any connection, and backup,
//! report, show and export end to end; `rewind recover` (dry run, approval by a second token,
//! actions, failed changes, export, undo, reject).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};

use rewind_coordinator::api::{self, ApiState};
use rewind_coordinator::state::{NewToken, Role, TenantScope};
use rewind_loadtest::incident::{Phase, Scenario};
use serde_json::Value;

use crate::cluster::support::{generate, incident, key_file, simulator, Coordinator};

/// Runs `rewind ARGS` with `REWIND_SERVER` and `REWIND_TOKEN` set (when given).
fn rewind_cli(server: &str, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rewind"));
    cmd.args(args)
        .env("REWIND_SERVER", server)
        .env_remove("REWIND_TOKEN")
        .env_remove("REWIND_CLIENT_SECRET")
        .env_remove("RUST_LOG");
    if let Some(t) = token {
        cmd.env("REWIND_TOKEN", t);
    }
    cmd.output().expect("the rewind binary runs")
}

/// The same, off the test's runtime (the binary may wait for a job the runtime serves).
async fn cli(server: &str, token: Option<&str>, args: &[&str]) -> Output {
    let server = server.to_owned();
    let token = token.map(str::to_owned);
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        rewind_cli(&server, token.as_deref(), &args)
    })
    .await
    .unwrap()
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("an exit code, not a signal")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Requires exit code `want` and returns stdout as JSON (stdout is a pipe: JSON).
fn json(out: &Output, want: i32, what: &str) -> Value {
    assert_eq!(code(out), want, "{what}: stderr {}", stderr(out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{what}: stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Requires exit code `want` and one `error: ...` line on stderr containing `says`.
fn refused(out: &Output, want: i32, says: &str, what: &str) {
    let err = stderr(out);
    assert_eq!(code(out), want, "{what}: {err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("{what}: no error line: {err}"));
    assert!(line.contains(says), "{what}: {line}");
}

fn guid(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012x}")
}

/// A scope of 101 ids, a bad GUID, an unknown type and clap's usage errors exit 2 before any
/// connection: the server is a listener this test owns, and it never sees one.
#[test]
fn bad_input_is_refused_before_any_request() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let server = format!("http://{}", listener.local_addr().unwrap());
    let ids: Vec<String> = (0..101).map(guid).collect();
    let ids = ids.join(",");
    let cases: [(&[&str], &str); 10] = [
        (
            &[
                "report", "create", "t", "--backup", "b", "--types", "user", "--ids", &ids,
            ],
            "101 ids given, a report takes at most 100",
        ),
        (
            &[
                "report",
                "create",
                "t",
                "--backup",
                "b",
                "--ids",
                "user:not-a-guid",
            ],
            "\"not-a-guid\" is not a GUID",
        ),
        (
            &["report", "create", "t", "--backup", "b", "--types", "users"],
            "unknown entity type \"users\"",
        ),
        (
            &["report", "show", "t", "r", "--action", "purge"],
            "unknown recovery action \"purge\"",
        ),
        // clap's own usage errors.
        (
            &["report", "create", "t"],
            "required arguments were not provided",
        ),
        (&["jobs", "frob"], "unrecognized subcommand"),
        (
            &["recover", "start", "t", "--backup", "b", "--ids", "nope"],
            "--ids: \"nope\" is not a GUID",
        ),
        (
            &[
                "recover",
                "start",
                "t",
                "--backup",
                "b",
                "--ids-file",
                "/nonexistent/ids",
            ],
            "--ids-file: cannot read",
        ),
        (
            &[
                "recover",
                "start",
                "t",
                "--backup",
                "b",
                "--types",
                "user",
                "--from-report",
                "r",
            ],
            "cannot be used with",
        ),
        (
            &["recover", "actions", "t", "j", "--outcome", "done"],
            "--outcome: unknown outcome \"done\"",
        ),
    ];
    for (args, says) in cases {
        let out = rewind_cli(&server, Some("rwd_x"), args);
        refused(&out, 2, says, &args.join(" "));
    }
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the client connected: {other:?}"),
    }
}

/// Nothing listening, and no token at all: exit 3.
#[test]
fn an_unreachable_server_or_no_token_exits_3() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = format!("http://127.0.0.1:{port}");
    let out = rewind_cli(&server, Some("rwd_x"), &["jobs", "list", "t"]);
    refused(&out, 3, "cannot reach the server at", "no server");
    let out = rewind_cli(&server, None, &["backups", "list", "t"]);
    refused(&out, 3, "no token: set REWIND_TOKEN", "no token");
}

/// `tenants add NAME` for simulator tenant `name` at `base`, its secret given by `secret_flag`.
fn add_args(base: &str, name: &str, secret_flag: &str, secret: &str) -> Vec<String> {
    [
        "tenants".to_owned(),
        "add".to_owned(),
        name.to_owned(),
        "--graph-url".to_owned(),
        format!("{base}/{name}/v1.0"),
        "--token-url".to_owned(),
        format!("{base}/{name}/oauth2/v2.0/token"),
        "--client-id".to_owned(),
        format!("app-{name}"),
        secret_flag.to_owned(),
        secret.to_owned(),
        "--schedule".to_owned(),
        "off".to_owned(),
    ]
    .into()
}

/// A coordinator serving the API, with a token of each role.
struct Server {
    url: String,
    operator: String,
    admin: String,
    reader: String,
    coordinator: Coordinator,
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(dir: &Path) -> Server {
        let (_, key) = key_file(dir);
        let coordinator = Coordinator::start(dir, Coordinator::embedded(dir, 2), key.clone()).await;
        let state = ApiState::new(coordinator.engine().clone(), key);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(api::serve(listener, state, async move {
            let _ = stopped.await;
        }));
        let token = |name: &str, role: Role| {
            let state = coordinator.engine().state().clone();
            let name = name.to_owned();
            async move {
                let (_, token) = state
                    .create_token(NewToken {
                        name,
                        role,
                        tenants: TenantScope::All,
                        expires_at: None,
                    })
                    .await
                    .unwrap();
                token
            }
        };
        let operator = token("ops", Role::Operator).await;
        let admin = token("admin", Role::Administrator).await;
        let reader = token("reader", Role::Reader).await;
        Server {
            url,
            operator,
            admin,
            reader,
            coordinator,
            stop,
            served,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.served.await.unwrap().unwrap();
        self.coordinator.node.unwrap().shutdown().await;
    }
}

/// Tenants added and changed, a backup, an incident, a report shown and exported, jobs listed:
/// each command's JSON parses and says what it did; a failed backup exits 1; the server's
/// refusals exit 2 (404, 400/409) and 3 (401, 403) with its message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_commands_end_to_end() {
    let sim = simulator().await;
    let base = sim.base_url().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let url = server.url.as_str();
    let (ops, admin, reader) = (
        Some(server.operator.as_str()),
        Some(server.admin.as_str()),
        Some(server.reader.as_str()),
    );
    let name = "cli-e2e";
    generate(&base, name, 6_000).await;

    // Tenants, as the operator; the secret from a file.
    let secret_file = dir.path().join("client-secret");
    std::fs::write(&secret_file, format!("secret-{name}\n")).unwrap();
    let add = add_args(
        &base,
        name,
        "--client-secret-file",
        secret_file.to_str().unwrap(),
    );
    let add: Vec<&str> = add.iter().map(String::as_str).collect();
    let add = [&add[..], &["--shard-bits", "3"]].concat();
    let t = json(&cli(url, ops, &add).await, 0, "tenants add");
    assert_eq!(t["name"], name);
    assert_eq!(t["schedule"]["kind"], "off");
    assert!(t.get("clientSecret").is_none(), "{t}");
    let list = json(
        &cli(url, ops, &["tenants", "list"]).await,
        0,
        "tenants list",
    );
    assert!(
        list["value"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == name),
        "{list}"
    );
    let set = json(
        &cli(
            url,
            ops,
            &[
                "tenants",
                "set",
                name,
                "--retention",
                "3",
                "--schedule",
                "daily@03:30",
            ],
        )
        .await,
        0,
        "tenants set",
    );
    assert_eq!(set["retention"], 3);
    assert_eq!(set["schedule"]["atUtc"], "03:30");
    let show = json(
        &cli(url, ops, &["tenants", "show", name]).await,
        0,
        "tenants show",
    );
    assert_eq!(show["retention"], 3);
    refused(
        &cli(url, ops, &["tenants", "set", name]).await,
        2,
        "nothing to set",
        "tenants set with nothing",
    );

    // A backup, waited for.
    let backup = json(
        &cli(url, admin, &["backups", "now", name]).await,
        0,
        "backups now",
    );
    assert_eq!(backup["status"], "successful", "{backup}");
    assert_eq!(backup["kind"], "backup");
    let snapshot = backup["snapshot"].as_str().unwrap().to_owned();
    let backups = json(
        &cli(url, reader, &["backups", "list", name]).await,
        0,
        "backups list",
    );
    assert_eq!(backups["value"][0]["id"], snapshot.as_str(), "{backups}");

    // An incident, then the report.
    let expected = incident(&base, name, Scenario::S1, Phase::AfterBackup).await;
    let report = json(
        &cli(
            url,
            admin,
            &["report", "create", name, "--backup", &snapshot],
        )
        .await,
        0,
        "report create",
    );
    assert_eq!(report["status"], "successful", "{report}");
    assert_eq!(report["kind"], "report");
    assert_eq!(report["backup"], snapshot.as_str());
    let report_id = report["id"].as_str().unwrap().to_owned();
    let n = report["counts"]["entries"].as_u64().unwrap();
    assert_eq!(n, expected.entries.len() as u64, "{report}");
    // More than one page of getChanges ($top=999): the client followed the next link.
    assert!(n > 999, "a report of {n} entries");

    let shown = json(
        &cli(url, reader, &["report", "show", name, &report_id]).await,
        0,
        "report show",
    );
    assert_eq!(shown["report"]["id"], report_id.as_str());
    let entries = shown["entries"].as_array().unwrap();
    assert_eq!(entries.len() as u64, n);
    let updates = entries
        .iter()
        .filter(|e| e["recoveryAction"] == "update")
        .count();
    let filtered = json(
        &cli(
            url,
            reader,
            &[
                "report", "show", name, &report_id, "--type", "user", "--action", "update",
            ],
        )
        .await,
        0,
        "report show --type --action",
    );
    let kept = filtered["entries"].as_array().unwrap();
    assert!(!kept.is_empty() && kept.len() <= updates);
    assert!(kept
        .iter()
        .all(|e| e["entityTypeName"] == "user" && e["recoveryAction"] == "update"));
    let first_name = entries[0]["displayName"].as_str().unwrap().to_owned();
    let by_name = json(
        &cli(
            url,
            reader,
            &[
                "report",
                "show",
                name,
                &report_id,
                "--name-prefix",
                &first_name,
            ],
        )
        .await,
        0,
        "report show --name-prefix",
    );
    let named = by_name["entries"].as_array().unwrap();
    assert!(!named.is_empty());
    assert!(named
        .iter()
        .all(|e| e["displayName"].as_str().unwrap().starts_with(&first_name)));

    // Export: a JSON Lines file with one line per entry; CSV to stdout with its header.
    let file = dir.path().join("report.jsonl");
    let exported = json(
        &cli(
            url,
            reader,
            &[
                "report",
                "export",
                name,
                &report_id,
                "--format",
                "jsonl",
                "-o",
                file.to_str().unwrap(),
            ],
        )
        .await,
        0,
        "report export -o",
    );
    assert_eq!(exported["format"], "jsonl");
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count() as u64, n);
    for line in text.lines() {
        let e: Value = serde_json::from_str(line).unwrap();
        assert!(e["id"].is_string(), "{line}");
    }
    let csv = cli(
        url,
        reader,
        &["report", "export", name, &report_id, "--format", "csv"],
    )
    .await;
    assert_eq!(code(&csv), 0, "{}", stderr(&csv));
    let csv = String::from_utf8(csv.stdout).unwrap();
    assert!(
        csv.starts_with(
            "id,entityType,displayName,recoveryAction,notRecoverableReason,changeKind,name,currentValue,backupValue"
        ),
        "{}",
        &csv[..csv.len().min(200)]
    );

    // A report scoped to two of its users' ids.
    let two: Vec<&str> = entries
        .iter()
        .filter(|e| e["entityTypeName"] == "user")
        .take(2)
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(two.len(), 2);
    let scoped = json(
        &cli(
            url,
            admin,
            &[
                "report",
                "create",
                name,
                "--backup",
                &snapshot,
                "--types",
                "user",
                "--ids",
                &two.join(","),
            ],
        )
        .await,
        0,
        "report create --ids",
    );
    assert_eq!(scoped["counts"]["entries"], 2, "{scoped}");

    // Jobs.
    let jobs = json(
        &cli(url, reader, &["jobs", "list", name]).await,
        0,
        "jobs list",
    );
    let ids: Vec<&str> = jobs["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&report_id.as_str()), "{jobs}");
    let job = json(
        &cli(url, reader, &["jobs", "show", name, &report_id]).await,
        0,
        "jobs show",
    );
    assert_eq!(job["status"], "successful");
    // A finished job cannot be cancelled: the server's 4xx, exit 2.
    let out = cli(url, admin, &["jobs", "cancel", name, &report_id]).await;
    assert_eq!(code(&out), 2, "cancel a finished job: {}", stderr(&out));
    assert!(stderr(&out).starts_with("error: "), "{}", stderr(&out));
    // --no-wait returns the job at once; waiting for it takes `jobs show`.
    let started = json(
        &cli(url, admin, &["backups", "now", name, "--no-wait"]).await,
        0,
        "backups now --no-wait",
    );
    let started_id = started["id"].as_str().unwrap().to_owned();
    assert!(!started_id.is_empty());
    server
        .coordinator
        .wait(
            &started_id,
            rewind_coordinator::state::JobStatus::Successful,
        )
        .await;

    // The server's refusals: unknown tenant 404 → 2; wrong token 401 → 3; a reader starting
    // a backup 403 → 3.
    refused(
        &cli(url, reader, &["backups", "list", "no-such-tenant"]).await,
        2,
        "",
        "unknown tenant",
    );
    refused(
        &cli(
            url,
            Some("rwd_wrongwrongwrongwrongwrongwrongwrongwrongwro"),
            &["jobs", "list", name],
        )
        .await,
        3,
        "",
        "wrong token",
    );
    refused(
        &cli(url, reader, &["backups", "now", name]).await,
        3,
        "Authorization has been denied",
        "reader starts a backup",
    );

    // A tenant whose secret is wrong: its backup fails, exit 1, the failed job as JSON.
    let bad = "cli-bad";
    // The simulator tenant of the first, with another secret.
    let add = add_args(&base, name, "--client-secret", "not-the-secret");
    let mut add: Vec<&str> = add.iter().map(String::as_str).collect();
    add[2] = bad;
    let out = cli(url, ops, &add).await;
    json(&out, 0, "tenants add with --client-secret");
    assert!(stderr(&out).contains("warning: --client-secret shows in the process list"));
    let failed = json(
        &cli(url, admin, &["backups", "now", bad]).await,
        1,
        "a failing backup",
    );
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(failed["error"].is_string(), "{failed}");
    // The right secret from a file (the client id kept), the token from a file: it backs up.
    let token_file = dir.path().join("operator-token");
    std::fs::write(&token_file, format!("{}\n", server.operator)).unwrap();
    let out = cli(
        url,
        None,
        &[
            "tenants",
            "set",
            bad,
            "--client-secret-file",
            secret_file.to_str().unwrap(),
            "--token-file",
            token_file.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(
        json(&out, 0, "tenants set a secret")["clientId"],
        format!("app-{name}")
    );
    let fixed = json(
        &cli(url, admin, &["backups", "now", bad]).await,
        0,
        "a backup with the new secret",
    );
    assert_eq!(fixed["status"], "successful", "{fixed}");
    let removed = json(
        &cli(url, ops, &["tenants", "remove", bad]).await,
        0,
        "tenants remove",
    );
    assert_eq!(removed["removed"], bad);

    server.stop().await;
}

/// `rewind recover` end to end: tenant recovery settings set by the CLI, a dry run from a
/// report, a recovery that waits for approval (exit 0), refused to its starter (409, exit 2)
/// and to a reader (403, exit 3), approved by a second administrator's token and waited for;
/// its actions, failed changes, export; an undo that waits and is rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recoveries_from_the_command_line() {
    let sim = simulator().await;
    let base = sim.base_url().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let url = server.url.as_str();
    let (ops, admin, reader) = (
        Some(server.operator.as_str()),
        Some(server.admin.as_str()),
        Some(server.reader.as_str()),
    );
    let (_, second) = server
        .coordinator
        .engine()
        .state()
        .create_token(NewToken {
            name: "second-admin".into(),
            role: Role::Administrator,
            tenants: TenantScope::All,
            expires_at: None,
        })
        .await
        .unwrap();
    let second = Some(second.as_str());
    let name = "cli-rec";
    generate(&base, name, 400).await;
    let add = add_args(&base, name, "--client-secret", &format!("secret-{name}"));
    let add: Vec<&str> = add.iter().map(String::as_str).collect();
    let add = [
        &add[..],
        &[
            "--approval-threshold",
            "5",
            "--write-budget",
            "200",
            "--history-days",
            "3",
        ],
    ]
    .concat();
    let t = json(&cli(url, ops, &add).await, 0, "tenants add");
    assert_eq!(t["approvalThreshold"], 5, "{t}");
    assert_eq!(t["writeBudget"], 200, "{t}");
    assert_eq!(t["historyDays"], 3, "{t}");
    let set = json(
        &cli(
            url,
            ops,
            &["tenants", "set", name, "--conditional-access-budget", "2"],
        )
        .await,
        0,
        "tenants set --conditional-access-budget",
    );
    assert_eq!(set["conditionalAccessBudget"], 2, "{set}");
    assert_eq!(set["approvalThreshold"], 5, "kept: {set}");
    refused(
        &cli(url, ops, &["tenants", "set", name, "--write-budget", "0"]).await,
        2,
        "writeBudget",
        "a write budget of 0",
    );
    let set = json(
        &cli(
            url,
            ops,
            &["tenants", "set", name, "--tenant-write-budget", "90"],
        )
        .await,
        0,
        "tenants set --tenant-write-budget",
    );
    assert_eq!(set["tenantWriteBudget"], 90, "{set}");
    // More app registrations: added (the secret never printed), refused twice, removed.
    let app = json(
        &cli(
            url,
            ops,
            &[
                "tenants",
                "add-app",
                name,
                "--client-id",
                "second-app",
                "--client-secret",
                "second-secret",
            ],
        )
        .await,
        0,
        "tenants add-app",
    );
    assert_eq!(
        app["apps"],
        serde_json::json!([{"clientId": "second-app"}]),
        "{app}"
    );
    assert!(!app.to_string().contains("second-secret"), "{app}");
    refused(
        &cli(
            url,
            ops,
            &[
                "tenants",
                "add-app",
                name,
                "--client-id",
                "second-app",
                "--client-secret",
                "x",
            ],
        )
        .await,
        2,
        "second-app",
        "the same app twice",
    );
    let removed = json(
        &cli(
            url,
            ops,
            &["tenants", "remove-app", name, "--client-id", "second-app"],
        )
        .await,
        0,
        "tenants remove-app",
    );
    assert_eq!(removed["apps"], serde_json::json!([]), "{removed}");

    let backup = json(
        &cli(url, admin, &["backups", "now", name]).await,
        0,
        "backups now",
    );
    let snapshot = backup["snapshot"].as_str().unwrap().to_owned();
    incident(&base, name, Scenario::S5, Phase::AfterBackup).await;
    let report = json(
        &cli(
            url,
            admin,
            &["report", "create", name, "--backup", &snapshot],
        )
        .await,
        0,
        "report create",
    );
    let report_id = report["id"].as_str().unwrap().to_owned();

    // A dry run: planned, nothing applied, no approval needed.
    let dry = json(
        &cli(
            url,
            admin,
            &[
                "recover",
                "start",
                name,
                "--backup",
                &snapshot,
                "--from-report",
                &report_id,
                "--dry-run",
            ],
        )
        .await,
        0,
        "recover start --dry-run",
    );
    assert_eq!(dry["status"], "successful", "{dry}");
    assert_eq!(dry["consoleStatus"], "Completed", "{dry}");
    assert_eq!(dry["recovery"]["dryRun"], true, "{dry}");
    assert_eq!(dry["recovery"]["reportId"], report_id.as_str(), "{dry}");
    assert!(dry["counts"]["planned"].as_u64().unwrap() > 5, "{dry}");
    let dry_id = dry["id"].as_str().unwrap().to_owned();
    let shown = json(
        &cli(url, reader, &["recover", "show", name, &dry_id]).await,
        0,
        "recover show",
    );
    assert_eq!(shown["id"], dry_id.as_str());
    assert_eq!(shown["counts"]["applied"], 0, "{shown}");
    let planned = json(
        &cli(
            url,
            reader,
            &["recover", "actions", name, &dry_id, "--outcome", "planned"],
        )
        .await,
        0,
        "recover actions --outcome planned",
    );
    assert_eq!(
        planned["value"].as_array().unwrap().len() as u64,
        dry["counts"]["planned"].as_u64().unwrap()
    );

    let calls = json(
        &cli(url, reader, &["recover", "calls", name, &dry_id]).await,
        0,
        "recover calls",
    );
    assert!(!calls["value"].as_array().unwrap().is_empty(), "{calls}");
    assert_eq!(
        calls["total"].as_u64(),
        Some(calls["value"].as_array().unwrap().len() as u64),
        "every page's calls, and the plan's count: {calls}"
    );
    // One object, from the report's backup: a dry run scoped to its id.
    let one = planned["value"][0]["objectId"].as_str().unwrap().to_owned();
    let object = json(
        &cli(
            url,
            admin,
            &[
                "recover",
                "object",
                name,
                &one,
                "--from-report",
                &report_id,
                "--dry-run",
            ],
        )
        .await,
        0,
        "recover object --dry-run",
    );
    assert_eq!(object["backup"], snapshot.as_str(), "{object}");
    assert_eq!(object["status"], "successful", "{object}");
    let its = json(
        &cli(
            url,
            reader,
            &["recover", "actions", name, object["id"].as_str().unwrap()],
        )
        .await,
        0,
        "recover actions of one object",
    );
    assert!(
        its["value"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["objectId"] == one.as_str()),
        "{its}"
    );

    // Above the threshold: it waits for approval (a resting state: exit 0).
    let job = json(
        &cli(
            url,
            admin,
            &[
                "recover",
                "start",
                name,
                "--backup",
                &snapshot,
                "--from-report",
                &report_id,
            ],
        )
        .await,
        0,
        "recover start",
    );
    assert_eq!(job["status"], "awaitingApproval", "{job}");
    assert_eq!(job["consoleStatus"], "Awaiting approval", "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    refused(
        &cli(url, admin, &["recover", "approve", name, &id]).await,
        2,
        "a second administrator must",
        "the starter approves",
    );
    refused(
        &cli(url, reader, &["recover", "approve", name, &id]).await,
        3,
        "Authorization has been denied",
        "a reader approves",
    );
    let done = json(
        &cli(url, second, &["recover", "approve", name, &id]).await,
        0,
        "recover approve by a second token",
    );
    assert_eq!(done["status"], "successful", "{done}");
    assert_eq!(done["consoleStatus"], "Completed", "{done}");
    assert_eq!(
        done["recovery"]["approval"]["decision"]["byName"], "second-admin",
        "{done}"
    );
    assert!(
        done["counts"]["linksModified"].as_u64().unwrap() > 0,
        "{done}"
    );
    let applied = json(
        &cli(
            url,
            reader,
            &["recover", "actions", name, &id, "--outcome", "applied"],
        )
        .await,
        0,
        "recover actions --outcome applied",
    );
    let applied = applied["value"].as_array().unwrap();
    assert!(!applied.is_empty());
    assert!(applied.iter().all(|a| a["outcome"] == "applied"));
    let failed = json(
        &cli(url, reader, &["recover", "failed", name, &id]).await,
        0,
        "recover failed",
    );
    assert_eq!(failed["value"], serde_json::json!([]), "{failed}");
    let csv = cli(
        url,
        reader,
        &["recover", "export", name, &id, "--format", "csv"],
    )
    .await;
    assert_eq!(code(&csv), 0, "{}", stderr(&csv));
    assert!(String::from_utf8_lossy(&csv.stdout).starts_with("seq,actionId,round,"));
    let list = json(
        &cli(url, reader, &["recover", "list", name]).await,
        0,
        "recover list",
    );
    let listed: Vec<&str> = list["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert!(
        listed.contains(&id.as_str()) && listed.contains(&dry_id.as_str()),
        "{list}"
    );
    // A finished recovery cannot be approved again, nor cancelled: 409, exit 2.
    refused(
        &cli(url, second, &["recover", "approve", name, &id]).await,
        2,
        "not awaiting approval",
        "approve a finished recovery",
    );

    // Undo: a recovery back to the pre-recovery snapshot; it waits, and is rejected.
    let undo = json(
        &cli(url, admin, &["recover", "undo", name, &id]).await,
        0,
        "recover undo",
    );
    assert_eq!(undo["recovery"]["undoOf"], id.as_str(), "{undo}");
    assert_eq!(undo["status"], "awaitingApproval", "{undo}");
    let undo_id = undo["id"].as_str().unwrap().to_owned();
    let rejected = json(
        &cli(url, second, &["recover", "reject", name, &undo_id]).await,
        0,
        "recover reject",
    );
    assert_eq!(rejected["status"], "abandoned", "{rejected}");
    assert_eq!(rejected["consoleStatus"], "Canceled", "{rejected}");
    // Undone again, and cancelled while it waits: abandoned, nothing applied.
    let undo = json(
        &cli(url, admin, &["recover", "undo", name, &id]).await,
        0,
        "recover undo again",
    );
    assert_eq!(undo["status"], "awaitingApproval", "{undo}");
    let undo_id = undo["id"].as_str().unwrap().to_owned();
    let canceled = json(
        &cli(url, admin, &["recover", "cancel", name, &undo_id]).await,
        0,
        "recover cancel",
    );
    assert_eq!(canceled["status"], "abandoned", "{canceled}");
    assert_eq!(
        canceled["counts"]["applied"].as_u64().unwrap_or(0),
        0,
        "{canceled}"
    );
    // A report is not a recovery.
    refused(
        &cli(url, reader, &["recover", "show", name, &report_id]).await,
        2,
        "not a recovery",
        "recover show of a report",
    );
    server.stop().await;
}
