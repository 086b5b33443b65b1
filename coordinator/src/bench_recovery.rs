//! `rewind loadtest bench-recovery`: the recovery benchmark (issue 10). The simulator runs as
//! its own process; a single-node coordinator with its workers runs in this process, or with
//! `--cluster` the coordinator over JetStream (a nats-server of its own) and worker processes. A
//! generated tenant is backed up, then an incident disables `--changes` cloud users (one
//! recovery action each) through the simulator's bulk-load route, and a recovery of the whole
//! tenant back to the backup is timed: by phase from the job record, the first write from the
//! simulator's write log (or the first action's time when the simulator has no write log),
//! the share of writes answered 429 from its counters, CPU per process and peak memory.
//! `--throttled` gives the simulator a write limit of `--budget` per second per app
//! registration and the tenant the same write budget per app, and compares the time with the
//! minimum that budget allows. `--apps N` gives the tenant N app registrations (in the
//! simulator and in Rewind): the tenant's budget and the simulator's tenant-wide limit are
//! then N times an app's. The table goes to stdout, then the result as JSON on the last line
//! (and to `--json`).

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use rewind_common::graph_json::to_graph_json;
use rewind_common::model::{ObjectType, SourceOfAuthority};
use rewind_common::report::Scope;
use rewind_common::secret_box::SecretKey;
use rewind_common::snapshot::ShardLayout;
use rewind_loadtest::tenant::{TenantGenerator, TenantSpec};
use serde::Serialize;
use serde_json::Value as Json;

use crate::bench_report::{
    bench_tenant, generated_tenant, single_node, time_job, BenchCluster, JobTiming, Processes,
    BENCH_TENANT,
};
use crate::node::Node;
use crate::state::{Actor, Outcome, RecoverySettings};

/// Changes of a default unthrottled run, and of a default throttled one.
pub const DEFAULT_CHANGES: u64 = 100_000;
pub const DEFAULT_THROTTLED_CHANGES: u64 = 10_000;

/// Microsoft's case: 500,000 changes, "up to 30 hours" with their recovery.
const MICROSOFT_CHANGES: f64 = 500_000.0;
const MICROSOFT_HOURS: f64 = 30.0;
/// Graph's default write limit per app registration and tenant, per second.
const GRAPH_WRITES_PER_SECOND: f64 = 20.0;

/// `rewind loadtest bench-recovery`.
#[derive(Debug, clap::Args)]
pub struct BenchRecoveryArgs {
    /// Users the incident disables, one recovery action each (default 100,000; 10,000 with
    /// `--throttled`).
    #[arg(long)]
    pub changes: Option<u64>,
    /// With `--throttled`: directory writes per second, the tenant's write budget and the
    /// simulator's limit (Graph's 20 per second, scaled).
    #[arg(long, default_value_t = 200)]
    pub budget: u32,
    /// Throttle the simulator to `--budget` writes per second (a 1-second window) and give the
    /// tenant that write budget; without it the simulator takes every write at once.
    #[arg(long)]
    pub throttled: bool,
    /// With `--throttled`: the simulator's limit, writes per second, when it is not the
    /// tenant's budget (a budget set below the directory's limit, to see what a margin buys).
    /// The least time is reckoned at this limit.
    #[arg(long)]
    pub directory_limit: Option<u32>,
    /// Recoveries timed, the incident applied again before each.
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Also write the result (JSON) to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Workers: in this process (single-node mode), or with `--cluster` their own processes.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Cluster mode: a nats-server of its own, JetStream work queues, object store and write
    /// budget, and `--workers` worker processes (else single-node mode in this process).
    #[arg(long)]
    pub cluster: bool,
    /// App registrations of the tenant, each with its own `--budget` (1 to 16).
    #[arg(long, default_value_t = 1)]
    pub apps: usize,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

/// Where a run's time to the first write comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum FirstWriteSource {
    /// The simulator's write log (`GET /_admin/tenants/{t}/writes`): milliseconds.
    #[default]
    WriteLog,
    /// The simulator has no write log: when the first applied action's outcome was recorded
    /// (whole seconds, once its apply task ended: later than the write).
    FirstActionAt,
}

/// The simulator's write counters over one recovery.
#[derive(Debug, Default, Serialize)]
pub struct WriteCounts {
    /// Directory writes it admitted (each inner request of a `$batch` counts).
    pub admitted: u64,
    /// Directory writes it answered 429.
    pub throttled: u64,
    /// `throttled` over all write requests it answered.
    pub throttled_share: f64,
    /// The most writes it admitted in any second (absent when it does not count them).
    pub max_per_second: Option<u64>,
    /// The same, per app registration (by client id).
    pub max_per_second_by_app: std::collections::BTreeMap<String, u64>,
}

/// One recovery's run.
#[derive(Debug, Default, Serialize)]
pub struct RecoveryRun {
    /// Steps planned (one per disabled user).
    pub actions: u64,
    pub applied: u64,
    pub already_in_state: u64,
    pub failed: u64,
    pub not_sent: u64,
    pub incident_seconds: f64,
    /// The recovery job, from the request to its end, by phase.
    pub job: JobTiming,
    /// `capturing` and `sealing`.
    pub capture_seconds: f64,
    /// `loading` and `diffing`.
    pub diff_seconds: f64,
    pub plan_seconds: f64,
    pub apply_seconds: f64,
    pub apply_actions_per_second: f64,
    pub overall_actions_per_second: f64,
    /// From the request to the first write the simulator answered.
    pub first_write_seconds: f64,
    pub first_write_source: FirstWriteSource,
    /// From the first write to the last (write log only).
    pub write_span_seconds: Option<f64>,
    pub writes: WriteCounts,
    /// Throttled runs: `actions / limit`, the least time the directory's limit allows for
    /// the writes, and the apply phase and the whole recovery against it.
    pub minimum_seconds: Option<f64>,
    pub apply_vs_minimum: Option<f64>,
    pub total_vs_minimum: Option<f64>,
}

/// Peak resident memory, in bytes.
#[derive(Debug, Default, Serialize)]
pub struct PeakMemory {
    /// This process (coordinator, and in single-node mode the workers) during the recoveries.
    pub coordinator: u64,
    /// Each worker process since its start (cluster mode; empty in single-node mode).
    pub workers: Vec<u64>,
    /// The simulator since its start (the tenant's generation included).
    pub simulator: u64,
}

/// Microsoft's 500,000-change case, in hours.
#[derive(Debug, Default, Serialize)]
pub struct Implied500k {
    /// Microsoft's own figure ("up to 30 hours").
    pub microsoft: f64,
    /// At Graph's 20 writes per second of one app registration.
    pub one_registration: f64,
    /// At 60 per second: three app registrations.
    pub three_registrations: f64,
    /// At the apply rate this run measured (unthrottled: this machine's rate; throttled: the
    /// budget's rate as reached here).
    pub measured_rate: f64,
    /// Throttled runs: one registration's 20 per second, slowed as much as this run fell
    /// short of its budget.
    pub one_registration_measured: Option<f64>,
    /// Throttled runs: this run's registrations at 20 per second each, slowed as much as
    /// this run fell short of their budget.
    pub registrations_measured: Option<f64>,
}

#[derive(Debug, Default, Serialize)]
pub struct BenchRecoveryResult {
    pub objects: u64,
    pub shards: u32,
    pub workers: usize,
    /// Cluster mode (JetStream, worker processes) rather than single-node mode.
    pub cluster: bool,
    /// App registrations the tenant writes through.
    pub apps: usize,
    pub changes: u64,
    pub throttled: bool,
    /// Writes per second of the tenant's budget (throttled runs).
    pub budget: Option<u32>,
    /// The simulator's write limit per second (throttled runs): the budget unless
    /// `--directory-limit` sets another.
    pub directory_limit: Option<u32>,
    pub gen_seconds: f64,
    pub backup: JobTiming,
    pub runs: Vec<RecoveryRun>,
    /// The run with the best apply rate.
    pub best: usize,
    pub peak_memory: PeakMemory,
    pub implied_500k_hours: Implied500k,
}

/// Runs the benchmark: the table on stdout, then the result as JSON on its last line.
pub fn run(args: BenchRecoveryArgs) -> anyhow::Result<()> {
    let changes = args.changes.unwrap_or(if args.throttled {
        DEFAULT_THROTTLED_CHANGES
    } else {
        DEFAULT_CHANGES
    });
    if changes == 0 {
        bail!("--changes must be at least 1");
    }
    if changes > 10_000_000 {
        bail!("--changes must be at most 10000000");
    }
    if !(1..=100_000).contains(&args.budget) {
        bail!("--budget must be between 1 and 100000 writes per second");
    }
    if args.directory_limit.is_some_and(|l| l == 0) {
        bail!("--directory-limit must be at least 1 write per second");
    }
    if args.directory_limit.is_some() && !args.throttled {
        bail!("--directory-limit needs --throttled");
    }
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    if args.workers == 0 {
        bail!("--workers must be at least 1");
    }
    if !(1..=crate::state::MAX_APPS).contains(&args.apps) {
        bail!(
            "--apps must be between 1 and {} app registrations",
            crate::state::MAX_APPS
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(run_async(&args, changes))?;
    print!("{}", table(&result));
    let json = serde_json::to_string(&result)?;
    if let Some(path) = &args.json {
        std::fs::write(path, format!("{json}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!("{json}");
    Ok(())
}

/// Objects of a generated tenant with at least `changes` cloud users (85% of its objects are
/// users and about 10% of them synced from on-premises), with a margin.
fn objects_for(changes: u64) -> u64 {
    ((changes as f64 / (0.85 * 0.9) * 1.03).ceil() as u64 + 16).max(1_000)
}

/// The first `changes` cloud users of the generated tenant, each as the JSON Lines record of
/// the bulk-load route with `accountEnabled` false: the incident.
fn incident_lines(spec: TenantSpec, changes: u64) -> anyhow::Result<Vec<u8>> {
    let generator = TenantGenerator::new(spec);
    let users = generator.type_layout().users;
    let mut body = Vec::with_capacity(changes as usize * 900);
    let mut picked = 0u64;
    for i in 0..users {
        if picked == changes {
            break;
        }
        let mut user = generator.backup_object(i);
        if user.object_type != ObjectType::User || user.source != SourceOfAuthority::Cloud {
            continue;
        }
        user.set("accountEnabled", false.into());
        let mut line = to_graph_json(&user);
        if let Json::Object(map) = &mut line {
            map.insert("type".into(), Json::String("user".into()));
        }
        serde_json::to_writer(&mut body, &line)?;
        body.push(b'\n');
        picked += 1;
    }
    if picked < changes {
        bail!("the generated tenant has {picked} cloud users, fewer than --changes {changes}");
    }
    Ok(body)
}

/// Calls one of the simulator's admin routes; the status and the body.
fn admin_call(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    body: Option<(&[u8], &str)>,
) -> anyhow::Result<(u16, String)> {
    let mut resp = match (method, body) {
        ("GET", _) => agent.get(url).call(),
        ("DELETE", _) => agent.delete(url).call(),
        ("PATCH", Some((b, ct))) => agent.patch(url).content_type(ct).send(b),
        (_, Some((b, ct))) => agent.post(url).content_type(ct).send(b),
        (_, None) => agent.post(url).send_empty(),
    }
    .with_context(|| format!("{method} {url}"))?;
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .with_context(|| format!("reading {method} {url}"))?;
    Ok((status, text))
}

/// The simulator's admin API.
#[derive(Clone)]
struct SimAdmin {
    agent: ureq::Agent,
    root: String,
}

impl SimAdmin {
    fn new(root: &str) -> SimAdmin {
        SimAdmin {
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(600)))
                .build()
                .into(),
            root: root.trim_end_matches('/').to_owned(),
        }
    }

    /// Calls `path` off the runtime's threads.
    async fn call(
        &self,
        method: &'static str,
        path: String,
        body: Option<(Vec<u8>, &'static str)>,
    ) -> anyhow::Result<(u16, String)> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let url = format!("{}{path}", me.root);
            admin_call(
                &me.agent,
                method,
                &url,
                body.as_ref().map(|(b, ct)| (b.as_slice(), *ct)),
            )
        })
        .await?
    }

    /// Calls `path`, requires a 2xx answer and returns its JSON (null when empty).
    async fn json(
        &self,
        method: &'static str,
        path: String,
        body: Option<(Vec<u8>, &'static str)>,
    ) -> anyhow::Result<Json> {
        let (status, text) = self.call(method, path.clone(), body).await?;
        if !(200..300).contains(&status) {
            bail!("the simulator answered {method} {path} with {status}: {text}");
        }
        if text.trim().is_empty() {
            return Ok(Json::Null);
        }
        serde_json::from_str(&text).with_context(|| format!("the answer to {method} {path}"))
    }

    /// Empties the tenant's write log; false when the simulator has none.
    async fn clear_write_log(&self) -> anyhow::Result<bool> {
        let (status, _) = self
            .call(
                "DELETE",
                format!("/_admin/tenants/{BENCH_TENANT}/writes"),
                None,
            )
            .await?;
        Ok((200..300).contains(&status))
    }

    /// The `atMs` of the write log's first record and of its last.
    async fn write_span(&self) -> anyhow::Result<Option<(i64, i64)>> {
        let path = format!("/_admin/tenants/{BENCH_TENANT}/writes");
        let first = self.json("GET", format!("{path}?top=1"), None).await?;
        let (Some(first_ms), Some(last)) =
            (first["value"][0]["atMs"].as_i64(), first["last"].as_u64())
        else {
            return Ok(None);
        };
        let newest = self
            .json(
                "GET",
                format!("{path}?after={}&top=1", last.saturating_sub(1)),
                None,
            )
            .await?;
        Ok(newest["value"][0]["atMs"]
            .as_i64()
            .map(|last_ms| (first_ms, last_ms)))
    }

    /// Write requests admitted and answered 429 so far (by the tenant's limit and by an
    /// app's), and the tenant's and each app's most writes in a second (when the simulator
    /// counts them).
    async fn write_counters(
        &self,
    ) -> anyhow::Result<(
        u64,
        u64,
        Option<u64>,
        std::collections::BTreeMap<String, u64>,
    )> {
        let c = self.json("GET", "/_admin/counters".into(), None).await?;
        let tenant = &c["tenants"][BENCH_TENANT];
        let by_app = tenant["apps"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(id, a)| Some((id.clone(), a["maxWritesPerSecond"].as_u64()?)))
            .collect();
        Ok((
            c["writes"].as_u64().unwrap_or(0),
            c["throttled"]["write"].as_u64().unwrap_or(0)
                + c["throttled"]["app_write"].as_u64().unwrap_or(0),
            tenant["maxWritesPerSecond"].as_u64(),
            by_app,
        ))
    }
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn phase_sum(timing: &JobTiming, names: &[&str]) -> f64 {
    names
        .iter()
        .filter_map(|n| timing.phases.get(*n))
        .fold(0.0, |a, b| a + b)
}

async fn run_async(args: &BenchRecoveryArgs, changes: u64) -> anyhow::Result<BenchRecoveryResult> {
    let objects = objects_for(changes);
    let layout = ShardLayout::for_object_count(objects);
    let budget = args.throttled.then_some(args.budget);
    let limit = budget.map(|b| args.directory_limit.unwrap_or(b));
    let mut out = BenchRecoveryResult {
        objects,
        shards: layout.count(),
        workers: args.workers,
        cluster: args.cluster,
        apps: args.apps,
        changes,
        throttled: args.throttled,
        budget,
        directory_limit: limit,
        ..BenchRecoveryResult::default()
    };
    let spec = TenantSpec::new(objects, args.seed);
    let incident = tokio::task::spawn_blocking(move || incident_lines(spec, changes));

    let dir = tempfile::tempdir()?;
    let key_path = dir.path().join("secret.key");
    let key = SecretKey::load_or_create(&key_path)?;
    // Workers started before the long generation, so that a missing nats-server fails fast.
    let cluster = match args.cluster {
        true => Some(BenchCluster::start(args.workers, &key_path, "warn")?),
        false => None,
    };
    tracing::info!(objects, changes, "generating the tenant");
    let (sim, _, generated) = generated_tenant(objects, args.seed).await?;
    out.gen_seconds = generated.seconds;
    let incident = incident.await??;
    let admin = SimAdmin::new(&sim.url);
    let apps = args.apps as u32;
    if let Some(w) = limit {
        // Each app to the limit, and the tenant to the apps' together.
        admin
            .json(
                "PATCH",
                "/_admin/settings".into(),
                Some((
                    serde_json::json!({
                        "write_requests_per_window": w * apps,
                        "app_write_requests_per_window": w,
                        "write_window_secs": 1,
                    })
                    .to_string()
                    .into_bytes(),
                    "application/json",
                )),
            )
            .await?;
    }

    let mut config = single_node(dir.path(), args.workers);
    let mut procs = Processes::of_this_process(sim.pid());
    if let Some(c) = &cluster {
        config.transport = c.transport();
        procs.add_cluster(&c.workers, Some(&c.nats));
    }
    let node = Node::start(config, key.clone()).await?;
    let engine = node.engine().clone();
    let mut tenant = bench_tenant(&generated, layout.bits());
    tenant.recovery = RecoverySettings {
        // Unthrottled: the most a tenant may be given.
        write_budget: budget.unwrap_or(100_000),
        tenant_write_budget: budget.map_or(100_000, |b| (b * apps).min(100_000)),
        approval_threshold: u64::MAX,
        ..RecoverySettings::default()
    };
    engine.state().add_tenant(&key, tenant).await?;
    let actor = Actor::Token {
        id: "bench".into(),
        name: "bench".into(),
    };
    for n in 2..=args.apps {
        let (id, secret) = (format!("bench-app-{n}"), format!("bench-secret-{n}"));
        rewind_loadtest::dirsim::add_app(&sim.url, BENCH_TENANT, &id, &secret)
            .await
            .with_context(|| format!("adding app {id} to the simulator"))?;
        engine
            .state()
            .add_app_by(&actor, &key, BENCH_TENANT, &id, &secret.into())
            .await?;
    }

    tracing::info!("backup");
    let job = engine.start_backup(BENCH_TENANT).await?;
    let (backup, timing) = time_job(&engine, &job, &procs).await?;
    out.backup = timing;
    let backup_id = backup.snapshot.context("the backup has no snapshot")?;
    rewind_loadtest::rss::release_free_heap();
    rewind_loadtest::rss::reset_peak();

    for n in 1..=args.runs {
        tracing::info!(run = n, runs = args.runs, changes, "the incident");
        let started = Instant::now();
        admin
            .json(
                "POST",
                format!("/_admin/tenants/{BENCH_TENANT}/objects"),
                Some((incident.clone(), "application/x-ndjson")),
            )
            .await?;
        let mut run = RecoveryRun {
            incident_seconds: started.elapsed().as_secs_f64(),
            ..RecoveryRun::default()
        };
        let write_log = admin.clear_write_log().await?;
        let (admitted, throttled, _, _) = admin.write_counters().await?;

        tracing::info!(run = n, runs = args.runs, "recovery");
        let requested_ms = unix_ms();
        let job = engine
            .start_recovery_by(
                &actor,
                BENCH_TENANT,
                &backup_id,
                Scope::All,
                None,
                false,
                None,
            )
            .await?;
        let (job, timing) = time_job(&engine, &job, &procs).await?;
        let count = |k: &str| job.counts.get(k).copied().unwrap_or(0);
        run.actions = count("plannedRound1") + count("plannedRound2");
        run.applied = count("applied");
        run.already_in_state = count("alreadyInState");
        run.failed = count("failedChanges");
        run.not_sent = count("notSent");
        run.capture_seconds = phase_sum(&timing, &["capturing", "sealing"]);
        run.diff_seconds = phase_sum(&timing, &["loading", "diffing"]);
        run.plan_seconds = phase_sum(&timing, &["planning"]);
        run.apply_seconds = phase_sum(&timing, &["applying"]);
        run.apply_actions_per_second = run.actions as f64 / run.apply_seconds.max(1e-9);
        run.overall_actions_per_second = run.actions as f64 / timing.seconds.max(1e-9);
        run.job = timing;

        let span = if write_log {
            admin.write_span().await?
        } else {
            None
        };
        match span {
            Some((first_ms, last_ms)) => {
                run.first_write_source = FirstWriteSource::WriteLog;
                run.first_write_seconds = (first_ms - requested_ms) as f64 / 1000.0;
                run.write_span_seconds = Some((last_ms - first_ms) as f64 / 1000.0);
            }
            None => {
                run.first_write_source = FirstWriteSource::FirstActionAt;
                let (state, id) = (engine.state().clone(), job.id.clone());
                let first_at = tokio::task::spawn_blocking(move || {
                    let mut first: Option<i64> = None;
                    state.for_each_action(&id, |a| {
                        if let (Outcome::Applied, Some(at)) = (&a.outcome, a.at) {
                            first = Some(first.map_or(at, |f| f.min(at)));
                        }
                        Ok(())
                    })?;
                    anyhow::Ok(first)
                })
                .await??;
                run.first_write_seconds = first_at.map_or(0.0, |s| {
                    ((s * 1000 - requested_ms) as f64 / 1000.0).max(0.0)
                });
            }
        }
        let (admitted_after, throttled_after, max_per_second, max_per_second_by_app) =
            admin.write_counters().await?;
        let (a, t) = (admitted_after - admitted, throttled_after - throttled);
        run.writes = WriteCounts {
            admitted: a,
            throttled: t,
            throttled_share: t as f64 / (a + t).max(1) as f64,
            max_per_second,
            max_per_second_by_app,
        };
        if let Some(w) = limit {
            let minimum = run.actions as f64 / f64::from(w * apps);
            run.minimum_seconds = Some(minimum);
            run.apply_vs_minimum = Some(run.apply_seconds / minimum.max(1e-9));
            run.total_vs_minimum = Some(run.job.seconds / minimum.max(1e-9));
        }
        if run.actions < changes {
            bail!(
                "the recovery planned {} actions for the {changes} users the incident disabled",
                run.actions
            );
        }
        tracing::info!(
            run = n,
            actions = run.actions,
            seconds = run.job.seconds,
            apply_per_second = run.apply_actions_per_second,
            "recovered"
        );
        out.runs.push(run);
    }
    out.best = out
        .runs
        .iter()
        .enumerate()
        .max_by(|(_, a), (_, b)| {
            a.apply_actions_per_second
                .total_cmp(&b.apply_actions_per_second)
        })
        .map_or(0, |(i, _)| i);
    out.peak_memory = PeakMemory {
        coordinator: rewind_loadtest::rss::peak_rss_bytes().unwrap_or(0),
        simulator: sim.peak_rss_bytes(),
        workers: cluster.as_ref().map_or_else(Vec::new, |c| {
            c.workers
                .iter()
                .map(|w| crate::bench_report::peak_rss_of(w.child.id()))
                .collect()
        }),
    };
    if let Some(best) = out.runs.get(out.best) {
        let hours = |per_second: f64| MICROSOFT_CHANGES / per_second.max(1e-9) / 3600.0;
        out.implied_500k_hours = Implied500k {
            microsoft: MICROSOFT_HOURS,
            one_registration: hours(GRAPH_WRITES_PER_SECOND),
            three_registrations: hours(3.0 * GRAPH_WRITES_PER_SECOND),
            measured_rate: hours(best.apply_actions_per_second),
            one_registration_measured: best
                .apply_vs_minimum
                .filter(|_| args.apps == 1)
                .map(|slower| hours(GRAPH_WRITES_PER_SECOND) * slower),
            registrations_measured: best
                .apply_vs_minimum
                .map(|slower| hours(GRAPH_WRITES_PER_SECOND * args.apps as f64) * slower),
        };
    }
    node.shutdown().await;
    drop(cluster);
    drop(sim);
    Ok(out)
}

/// The result as a table for people.
fn table(r: &BenchRecoveryResult) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let per_app = if r.apps > 1 { " per app" } else { "" };
    let mode = match (r.budget, r.directory_limit) {
        (Some(w), Some(l)) if l != w => {
            format!("throttled to {l} writes/s{per_app}, a budget of {w} writes/s{per_app}")
        }
        (Some(w), _) => format!("throttled to {w} writes/s{per_app}"),
        _ => "unthrottled".to_owned(),
    };
    let _ = writeln!(
        s,
        "recovery of {} changes ({mode}; {} app registration(s), {} objects, {} shards, {} workers{}; backup {:.1} s)",
        r.changes,
        r.apps,
        r.objects,
        r.shards,
        r.workers,
        if r.cluster {
            " in their own processes over JetStream"
        } else {
            " in one process"
        },
        r.backup.seconds
    );
    let _ = writeln!(
        s,
        "{:>3} {:>8} {:>8} {:>8} {:>7} {:>7} {:>8} {:>9} {:>9} {:>11} {:>8} {:>7} {:>9}",
        "run",
        "actions",
        "total s",
        "capture",
        "diff",
        "plan",
        "apply",
        "apply/s",
        "overall/s",
        "1st write s",
        "429 %",
        "failed",
        "vs min"
    );
    for (i, run) in r.runs.iter().enumerate() {
        let _ = writeln!(
            s,
            "{:>3} {:>8} {:>8.2} {:>8.2} {:>7.2} {:>7.2} {:>8.2} {:>9.0} {:>9.0} {:>11.3} {:>8.3} {:>7} {:>9}",
            i + 1,
            run.actions,
            run.job.seconds,
            run.capture_seconds,
            run.diff_seconds,
            run.plan_seconds,
            run.apply_seconds,
            run.apply_actions_per_second,
            run.overall_actions_per_second,
            run.first_write_seconds,
            run.writes.throttled_share * 100.0,
            run.failed,
            run.apply_vs_minimum
                .map_or("-".to_owned(), |v| format!("{v:.2}x")),
        );
    }
    if let Some(best) = r.runs.get(r.best) {
        let cpu: Vec<String> = best
            .job
            .cpu_seconds
            .iter()
            .map(|(p, v)| format!("{p} {v:.1}"))
            .collect();
        let _ = writeln!(
            s,
            "CPU seconds of run {} by process: {}; peak RSS: coordinator {} MiB, simulator {} MiB{}",
            r.best + 1,
            cpu.join(", "),
            r.peak_memory.coordinator >> 20,
            r.peak_memory.simulator >> 20,
            r.peak_memory
                .workers
                .iter()
                .enumerate()
                .map(|(i, w)| format!(", worker-{} {} MiB", i + 1, w >> 20))
                .collect::<String>()
        );
        if best.first_write_source == FirstWriteSource::FirstActionAt {
            let _ = writeln!(
                s,
                "the simulator has no write log: the first write is the first applied action's time (whole seconds)"
            );
        }
        let h = &r.implied_500k_hours;
        let _ = writeln!(
            s,
            "500,000 changes: Microsoft up to {:.0} h; at 20/s (one registration) {:.1} h; at 60/s (three) {:.1} h; at this run's apply rate {:.2} h{}",
            h.microsoft,
            h.one_registration,
            h.three_registrations,
            h.measured_rate,
            match (h.one_registration_measured, h.registrations_measured) {
                (Some(v), _) => format!("; at 20/s as reached here {v:.1} h"),
                (None, Some(v)) => format!(
                    "; at {}×20/s as reached here {v:.1} h",
                    r.apps
                ),
                _ => String::new(),
            },
        );
        if !best.writes.max_per_second_by_app.is_empty() && r.apps > 1 {
            let by_app: Vec<String> = best
                .writes
                .max_per_second_by_app
                .iter()
                .map(|(id, n)| format!("{id} {n}"))
                .collect();
            let _ = writeln!(
                s,
                "most writes admitted in a second: the tenant {}, by app: {}",
                best.writes.max_per_second.unwrap_or(0),
                by_app.join(", ")
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tenant_holds_enough_cloud_users_for_the_incident() {
        for changes in [1, 300, 5_000] {
            let objects = objects_for(changes);
            let body = incident_lines(TenantSpec::new(objects, 7), changes).unwrap_or_default();
            let lines: Vec<Json> = body
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| serde_json::from_slice(l).unwrap_or(Json::Null))
                .collect();
            assert_eq!(lines.len() as u64, changes, "{changes} changes");
            assert!(lines
                .iter()
                .all(|l| l["type"] == "user" && l["accountEnabled"] == false));
        }
    }
}
