//! `rewind demo`: the product end to end on one machine, checked. It starts the tenant
//! simulator and a single-node coordinator with its HTTP API on a free port of 127.0.0.1
//! (state and shard files in a temporary folder), generates one tenant per incident scenario
//! S1–S7, registers them, backs them up, applies the incidents and makes a difference report
//! of each, all through the API, then checks every report against the generator's expected
//! report; then recovers each tenant as its scenario says and verifies it with a new report
//! (`recover.rs`), and prints a summary. Exit 0 only when every report matches and every
//! tenant verifies.
//!
//! One tenant per scenario: the scenarios pick their objects independently (each with its own
//! seeded choice), so on one tenant they overlap — a user disabled by S1 can be soft-deleted
//! by S4 or purged while S3 assigns it an app role, a group S5 edits can be deleted by S4 —
//! and their expected reports could not simply be merged into one exact report.

mod check;
mod client;
mod recover;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rewind_common::secret_box::SecretKey;
use rewind_common::snapshot::ShardLayout;
use rewind_loadtest::dirsim::{self, DirsimConfig, Running};
use rewind_loadtest::gen::{self, GenConfig, GenResult};
use rewind_loadtest::incident::compare::tally;
use rewind_loadtest::incident::{self, ExpectedReport, IncidentConfig, Phase, Scenario};
use rewind_worker::queue::QueuePolicy;
use rewind_worker::run::WorkerSettings;
use serde_json::{json, Value as Json};
use tokio::sync::watch;

pub use check::{change_view, compare, expected_view, Comparison, EntryView, LinkView};
pub use client::{Answer, ApiClient, ClientError};

use crate::engine::{Engine, EngineSettings};
use crate::node::{Node, NodeConfig, Transport, DEFAULT_CACHE_BYTES};
use crate::scheduler::SchedulerSettings;
use crate::state::{NewToken, Role, TenantScope};

/// `rewind demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Objects in all, shared out equally among the seven scenarios' tenants.
    #[arg(long, default_value_t = 100_000)]
    pub objects: u64,
    /// Keep running after the summary (simulator, coordinator and API) until Ctrl-C, print the
    /// API's address and a reader token, and keep the temporary folder.
    #[arg(long)]
    pub keep: bool,
    /// Seed of the generated tenants and of the incidents.
    #[arg(long, default_value_t = 23)]
    pub seed: u64,
}

/// The smallest tenant the scenarios find everything they need in (policies, named
/// locations, synced users, dynamic groups).
pub const MIN_OBJECTS_PER_TENANT: u64 = 1_000;

/// How long one job may take before the demo gives up on it.
const JOB_LIMIT: Duration = Duration::from_secs(600);

/// The seconds of each phase.
#[derive(Debug, Default, Clone)]
pub struct Timings {
    pub generate: Duration,
    pub backup: Duration,
    pub incidents: Duration,
    pub report: Duration,
    pub check: Duration,
    pub recover: Duration,
}

/// Each demo tenant's write budget (writes per second, all workers together): the
/// simulator is not throttled, and Graph's 20 per app would make the demo wait minutes.
pub const DEMO_WRITE_BUDGET: u32 = 500;

/// One scenario's tenant through the demo.
#[derive(Debug)]
struct DemoTenant {
    scenario: Scenario,
    name: String,
    snapshot: String,
    expected: Option<ExpectedReport>,
    /// The change objects of its report, as `getChanges` gave them.
    changes: Vec<Json>,
    report_job: String,
}

/// What the check found for one scenario.
#[derive(Debug)]
pub struct ScenarioCheck {
    pub scenario: Scenario,
    pub tenant: String,
    /// Through the API.
    pub api: Comparison,
    /// The engine's stored report against every field of the expected one (`tally`).
    pub stored_exact: bool,
    pub stored_differences: Vec<String>,
}

impl ScenarioCheck {
    pub fn exact(&self) -> bool {
        self.api.exact() && self.stored_exact
    }
}

/// Runs the demo (the `rewind demo` command).
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let tenants = Scenario::ALL.len() as u64;
    let per_tenant = args.objects / tenants;
    if per_tenant < MIN_OBJECTS_PER_TENANT {
        bail!(
            "--objects must be at least {} ({} objects for each of the {tenants} scenarios' tenants); got {}",
            MIN_OBJECTS_PER_TENANT * tenants,
            MIN_OBJECTS_PER_TENANT,
            args.objects
        );
    }
    let dir = tempfile::Builder::new().prefix("rewind-demo-").tempdir()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let services = runtime.block_on(Services::start(dir.path()))?;
    println!(
        "rewind demo: {} objects, one tenant of {per_tenant} objects per scenario ({}), on a simulator at {}",
        per_tenant * tenants,
        Scenario::ALL.map(|s| s.name()).join(" "),
        services.sim.base_url()
    );
    println!("  (one tenant each: the scenarios pick overlapping objects, so on one tenant their expected reports would not add up)");
    // The driving runs on this thread (blocking HTTP), never on the runtime's workers.
    let outcome = drive(&services, &args, per_tenant);
    let result = match outcome {
        Ok((checks, timings, counts, runs)) => {
            print_summary(&checks, &timings, &counts);
            recover::print_recoveries(&runs, DEMO_WRITE_BUDGET);
            let bad: Vec<&ScenarioCheck> = checks.iter().filter(|c| !c.exact()).collect();
            let unverified: Vec<&str> = runs
                .iter()
                .filter(|r| !r.problems.is_empty())
                .map(|r| r.scenario.as_str())
                .collect();
            if bad.is_empty() && unverified.is_empty() {
                println!(
                    "result: every report matches its expected report, and every tenant verifies after its recovery"
                );
                Ok(())
            } else if bad.is_empty() {
                Err(anyhow::anyhow!(
                    "the tenants of {} do not verify after their recovery (problems above)",
                    unverified.join(", ")
                ))
            } else {
                Err(anyhow::anyhow!(
                    "the reports of {} do not match their expected reports (differences above)",
                    bad.iter()
                        .map(|c| c.scenario.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }
        }
        Err(e) => Err(e),
    };
    if args.keep {
        let reader = services.reader.clone();
        println!();
        println!("where to look (until Ctrl-C):");
        println!("  API:          {}", services.api.base());
        println!("  reader token: {reader}");
        println!(
            "  try:          curl -H 'Authorization: Bearer {reader}' {}/tenants/demo-s1/v1.0/directory/recovery/snapshots",
            services.api.base()
        );
        println!("  state:        {}", dir.path().display());
        runtime.block_on(async {
            let _ = tokio::signal::ctrl_c().await;
        });
    }
    runtime.block_on(services.stop());
    if args.keep {
        let kept = dir.keep();
        println!("kept {}", kept.display());
    }
    result
}

/// The simulator, the coordinator with its API, and the tokens the demo uses.
struct Services {
    sim: Running,
    node: Node,
    api: ApiClient,
    api_stop: watch::Sender<bool>,
    api_task: tokio::task::JoinHandle<()>,
    operator: String,
    admin: String,
    reader: String,
    /// A second administrator, who approves recoveries the first one starts.
    approver: String,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("api", &self.api.base())
            .finish_non_exhaustive()
    }
}

impl Services {
    async fn start(dir: &Path) -> anyhow::Result<Services> {
        let key = SecretKey::generate();
        let sim = dirsim::spawn(DirsimConfig::default())
            .await
            .context("starting the simulator")?;
        let policy = QueuePolicy::production();
        let config = NodeConfig {
            state_dir: dir.join("state"),
            transport: Transport::Embedded {
                blob_dir: dir.join("blobs"),
                workers: 2,
            },
            policy: policy.clone(),
            engine: EngineSettings::default(),
            scheduler: SchedulerSettings::default(),
            cache_bytes: DEFAULT_CACHE_BYTES,
            worker: WorkerSettings::new("demo", policy),
        };
        let node = Node::start(config, key.clone())
            .await
            .context("starting the coordinator")?;
        let (api, api_stop, api_task) = start_api(node.engine().clone(), key).await?;
        let operator = operator_token(node.engine()).await?;
        let mut services = Services {
            sim,
            node,
            api,
            api_stop,
            api_task,
            operator,
            admin: String::new(),
            reader: String::new(),
            approver: String::new(),
        };
        services.admin = services
            .token("demo-administrator", "administrator")
            .await?;
        services.reader = services.token("demo-reader", "reader").await?;
        services.approver = services.token("demo-approver", "administrator").await?;
        Ok(services)
    }

    /// A token of `role` on every tenant, made through `POST /admin/tokens`.
    async fn token(&self, name: &str, role: &str) -> anyhow::Result<String> {
        let api = self.api.clone();
        let operator = self.operator.clone();
        let body = json!({"name": name, "role": role, "tenants": ["*"], "expiresInDays": 1});
        let answer = tokio::task::spawn_blocking(move || {
            api.post("/admin/tokens", &operator, &body, &[201])
        })
        .await??;
        answer.body["token"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("POST /admin/tokens gave no token: {}", answer.body))
    }

    async fn stop(self) {
        let _ = self.api_stop.send(true);
        let _ = self.api_task.await;
        self.node.shutdown().await;
        if let Err(e) = self.sim.stop().await {
            tracing::warn!(error = %e, "stopping the simulator");
        }
    }
}

/// Serves the API on a free port of 127.0.0.1 until the sender says stop.
async fn start_api(
    engine: Engine,
    key: SecretKey,
) -> anyhow::Result<(ApiClient, watch::Sender<bool>, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .context("binding the API's port")?;
    let addr = listener.local_addr()?;
    let (stop, mut stopped) = watch::channel(false);
    let state = crate::api::ApiState::new(engine, key);
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        if let Err(e) = crate::api::serve(listener, state, shutdown).await {
            tracing::error!(error = %e, "the API stopped");
        }
    });
    Ok((ApiClient::new(format!("http://{addr}")), stop, task))
}

/// The operator token, written into the state directly (as `rewind token create` does).
async fn operator_token(engine: &Engine) -> anyhow::Result<String> {
    let (_, token) = engine
        .state()
        .create_token(NewToken {
            name: "demo-operator".into(),
            role: Role::Operator,
            tenants: TenantScope::All,
            expires_at: None,
        })
        .await
        .context("creating the operator token")?;
    Ok(token)
}

/// The tenant of a scenario.
fn tenant_name(scenario: Scenario) -> String {
    format!("demo-{}", scenario.name().to_lowercase())
}

/// Runs `f` for every tenant on threads of its own, in scenario order.
fn each<T: Send, R: Send>(
    items: &mut [T],
    f: impl Fn(&mut T) -> anyhow::Result<R> + Sync,
) -> anyhow::Result<Vec<R>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = items.iter_mut().map(|t| s.spawn(|| f(t))).collect();
        handles
            .into_iter()
            .map(|h| match h.join() {
                Ok(r) => r,
                Err(_) => Err(anyhow::anyhow!("a demo thread panicked")),
            })
            .collect()
    })
}

type Counts = BTreeMap<(String, String), u64>;

/// What the demo found: the reports' checks, the phases' seconds, the report entries by type
/// and action, and the recoveries (none when a report did not match).
type Outcome = (
    Vec<ScenarioCheck>,
    Timings,
    Counts,
    Vec<recover::RecoveryRun>,
);

fn drive(services: &Services, args: &DemoArgs, per_tenant: u64) -> anyhow::Result<Outcome> {
    let api = &services.api;
    let sim = services.sim.base_url().to_owned();
    let mut timings = Timings::default();
    let mut tenants: Vec<DemoTenant> = Scenario::ALL
        .iter()
        .map(|s| DemoTenant {
            scenario: *s,
            name: tenant_name(*s),
            snapshot: String::new(),
            expected: None,
            changes: Vec::new(),
            report_job: String::new(),
        })
        .collect();
    let incident_config = |t: &DemoTenant, phase: Phase| IncidentConfig {
        dirsim: sim.clone(),
        tenant: t.name.clone(),
        scenario: t.scenario,
        seed: args.seed,
        phase,
        client_id: None,
        client_secret: None,
    };

    // 1. Generate the tenants into the simulator and register them with the coordinator.
    tracing::info!(
        tenants = tenants.len(),
        objects = per_tenant,
        "generating the tenants"
    );
    let started = Instant::now();
    let generated: Vec<GenResult> = each(&mut tenants, |t| {
        let config = GenConfig {
            dirsim: sim.clone(),
            tenant: t.name.clone(),
            objects: per_tenant,
            seed: args.seed,
            client_id: None,
            client_secret: None,
        };
        gen::run(&config).with_context(|| format!("generating tenant {}", t.name))
    })?;
    timings.generate = started.elapsed();
    let shard_bits = ShardLayout::for_object_count(per_tenant).bits();
    for g in &generated {
        let body = json!({
            "name": g.tenant,
            "graphBaseUrl": g.graph_base_url,
            "tokenUrl": g.token_url,
            "clientId": g.client_id,
            "clientSecret": g.client_secret,
            "schedule": {"kind": "off"},
            "shardBits": shard_bits,
            "writeBudget": DEMO_WRITE_BUDGET,
        });
        api.post("/admin/tenants", &services.operator, &body, &[201])?;
    }
    tracing::info!(
        tenants = generated.len(),
        seconds = timings.generate.as_secs_f64(),
        "tenants generated and added"
    );

    // S7's first part: users soft-deleted before the backup.
    let started = Instant::now();
    for t in tenants.iter().filter(|t| t.scenario == Scenario::S7) {
        incident::run(&incident_config(t, Phase::BeforeBackup))
            .with_context(|| format!("{} before the backup", t.scenario))?;
    }
    timings.incidents = started.elapsed();

    // 2. A backup of every tenant.
    let started = Instant::now();
    let mut jobs = Vec::new();
    for t in &tenants {
        let answer = api.post(
            &format!("/tenants/{}/v1.0/directory/recovery/snapshots", t.name),
            &services.admin,
            &json!({}),
            &[202],
        )?;
        jobs.push((t.name.clone(), job_id(&answer)?));
    }
    let done = wait_jobs(api, &services.reader, "backup", &jobs)?;
    for (t, view) in tenants.iter_mut().zip(&done) {
        t.snapshot = view["snapshot"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("the backup of {} names no snapshot: {view}", t.name))?;
    }
    timings.backup = started.elapsed();

    // 3. The incidents.
    let started = Instant::now();
    let expected = each(&mut tenants, |t| {
        incident::run(&incident_config(t, Phase::AfterBackup))
            .with_context(|| format!("applying {} to {}", t.scenario, t.name))
    })?;
    for (t, x) in tenants.iter_mut().zip(expected) {
        t.expected = Some(x);
    }
    timings.incidents += started.elapsed();
    tracing::info!(
        seconds = timings.incidents.as_secs_f64(),
        "incidents applied"
    );

    // 4. A difference report of every tenant against its backup, read page by page.
    let started = Instant::now();
    let mut jobs = Vec::new();
    for t in &tenants {
        let answer = api.post(
            &format!(
                "/tenants/{}/v1.0/directory/recovery/snapshots/{}/recoveryPreviewJobs",
                t.name, t.snapshot
            ),
            &services.admin,
            &json!({}),
            &[202],
        )?;
        jobs.push((t.name.clone(), job_id(&answer)?));
    }
    wait_jobs(api, &services.reader, "report", &jobs)?;
    for (t, (_, job)) in tenants.iter_mut().zip(&jobs) {
        t.report_job = job.clone();
    }
    each(&mut tenants, |t| {
        let path = format!(
            "/tenants/{}/v1.0/directory/recovery/snapshots/{}/recoveryPreviewJobs/{}/getChanges?$top=999",
            t.name, t.snapshot, t.report_job
        );
        let mut last = Instant::now();
        t.changes = api.get_all(&path, &services.reader, |n| {
            if last.elapsed() >= Duration::from_secs(1) {
                tracing::info!(tenant = %t.name, entries = n, "reading the report");
                last = Instant::now();
            }
        })?;
        Ok(())
    })?;
    timings.report = started.elapsed();
    tracing::info!(
        entries = tenants.iter().map(|t| t.changes.len()).sum::<usize>(),
        seconds = timings.report.as_secs_f64(),
        "reports read"
    );

    // 5. The check.
    let started = Instant::now();
    let engine = services.node.engine();
    let mut checks = Vec::new();
    let mut counts = Counts::new();
    for t in &tenants {
        let expected = t
            .expected
            .as_ref()
            .context("a tenant without its expected report")?;
        let api_check = compare(expected, &t.changes);
        let stored = crate::engine::report_entries(engine, &t.report_job)?;
        let tally = tally(expected, &stored);
        let mut stored_differences: Vec<String> = Vec::new();
        stored_differences.extend(tally.missing.iter().map(|id| format!("{id}: missing")));
        stored_differences.extend(tally.extra.iter().map(|id| format!("{id}: not expected")));
        stored_differences.extend(tally.repeated.iter().map(|id| format!("{id}: repeated")));
        stored_differences.extend(tally.differing.iter().cloned());
        for c in &t.changes {
            let key = (
                c["entityTypeName"].as_str().unwrap_or("?").to_owned(),
                match c["notRecoverableReason"].as_str() {
                    Some(_) => "notRecoverable".to_owned(),
                    None => c["recoveryAction"].as_str().unwrap_or("?").to_owned(),
                },
            );
            *counts.entry(key).or_default() += 1;
        }
        checks.push(ScenarioCheck {
            scenario: t.scenario,
            tenant: t.name.clone(),
            api: api_check,
            stored_exact: tally.exact(),
            stored_differences,
        });
    }
    timings.check = started.elapsed();
    if checks.iter().any(|c| !c.exact()) {
        return Ok((checks, timings, counts, Vec::new()));
    }

    // 6. The recoveries, each as its scenario says, then a report of each tenant to verify it.
    let started = Instant::now();
    let runs = recover::recover_and_verify(services, &services.approver, &mut tenants)?;
    timings.recover = started.elapsed();
    tracing::info!(
        seconds = timings.recover.as_secs_f64(),
        "recoveries done and verified"
    );
    Ok((checks, timings, counts, runs))
}

/// The job id of a 202 answer (its body's `id`).
fn job_id(answer: &Answer) -> anyhow::Result<String> {
    answer.body["id"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("an accepted job without an id: {}", answer.body))
}

/// Polls Rewind's view of each job (`/tenants/{t}/rewind/jobs/{id}`) until all have ended,
/// logging progress; every job must end `successful`. Returns the final views, in order.
fn wait_jobs(
    api: &ApiClient,
    token: &str,
    what: &str,
    jobs: &[(String, String)],
) -> anyhow::Result<Vec<Json>> {
    let started = Instant::now();
    let mut views: Vec<Option<Json>> = vec![None; jobs.len()];
    let mut last = String::new();
    loop {
        for ((tenant, job), slot) in jobs.iter().zip(views.iter_mut()) {
            if slot.as_ref().is_some_and(|v| v["status"] == "successful") {
                continue;
            }
            let view = api
                .get(
                    &format!("/tenants/{tenant}/rewind/jobs/{job}"),
                    token,
                    &[200],
                )?
                .body;
            if matches!(view["status"].as_str(), Some("failed" | "abandoned")) {
                bail!(
                    "the {what} of {tenant} (job {job}) ended {}: {}",
                    view["status"],
                    view["error"]
                );
            }
            *slot = Some(view);
        }
        let views_now = views.iter().flatten();
        let tasks = views_now.fold((0, 0), |(done, total), v| {
            (
                done + v["tasks"]["done"].as_u64().unwrap_or(0),
                total + v["tasks"]["total"].as_u64().unwrap_or(0),
            )
        });
        let finished = views
            .iter()
            .flatten()
            .filter(|v| v["status"] == "successful")
            .count();
        let line = format!("{finished}/{} {}/{}", jobs.len(), tasks.0, tasks.1);
        if line != last {
            tracing::info!(
                what,
                jobs_done = finished,
                jobs = jobs.len(),
                tasks_done = tasks.0,
                tasks = tasks.1,
                "waiting"
            );
            last = line;
        }
        if finished == jobs.len() {
            tracing::info!(
                what,
                jobs = jobs.len(),
                seconds = started.elapsed().as_secs_f64(),
                "every job successful"
            );
            return Ok(views.into_iter().flatten().collect());
        }
        if started.elapsed() > JOB_LIMIT {
            bail!(
                "the {what} jobs did not finish within {} s ({finished} of {} did)",
                JOB_LIMIT.as_secs(),
                jobs.len()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How many differences of one scenario the summary names.
const SHOWN_DIFFERENCES: usize = 10;

fn print_summary(checks: &[ScenarioCheck], timings: &Timings, counts: &Counts) {
    println!();
    println!(
        "{:<9}{:<10}{:>9}{:>10}  result",
        "scenario", "tenant", "entries", "expected"
    );
    for c in checks {
        println!(
            "{:<9}{:<10}{:>9}{:>10}  {}",
            c.scenario.name(),
            c.tenant,
            c.api.read,
            c.api.expected,
            if c.exact() { "match" } else { "MISMATCH" }
        );
    }
    let actions: Vec<&str> = {
        let mut a: Vec<&str> = counts.keys().map(|(_, a)| a.as_str()).collect();
        a.sort_unstable();
        a.dedup();
        a
    };
    let types: Vec<&str> = {
        let mut t: Vec<&str> = counts.keys().map(|(t, _)| t.as_str()).collect();
        t.dedup();
        t
    };
    println!();
    print!("{:<26}", "entries by type");
    for a in &actions {
        print!("{a:>16}");
    }
    println!();
    for t in &types {
        print!("{t:<26}");
        for a in &actions {
            let n = counts
                .get(&((*t).to_owned(), (*a).to_owned()))
                .copied()
                .unwrap_or(0);
            print!("{n:>16}");
        }
        println!();
    }
    let total = timings.generate
        + timings.backup
        + timings.incidents
        + timings.report
        + timings.check
        + timings.recover;
    println!();
    println!(
        "seconds: generate {:.1}, backup {:.1}, incidents {:.1}, report {:.1}, check {:.1}, recover and verify {:.1} (total {:.1})",
        timings.generate.as_secs_f64(),
        timings.backup.as_secs_f64(),
        timings.incidents.as_secs_f64(),
        timings.report.as_secs_f64(),
        timings.check.as_secs_f64(),
        timings.recover.as_secs_f64(),
        total.as_secs_f64()
    );
    for c in checks.iter().filter(|c| !c.exact()) {
        println!();
        println!(
            "{} ({}): {} of {} expected entries match through the API, {} read",
            c.scenario, c.tenant, c.api.matched, c.api.expected, c.api.read
        );
        for d in c.api.differences.iter().take(SHOWN_DIFFERENCES) {
            println!("  api: {d}");
        }
        for d in c.stored_differences.iter().take(SHOWN_DIFFERENCES) {
            println!("  stored report: {d}");
        }
        let more = c.api.differences.len() + c.stored_differences.len();
        if more > 2 * SHOWN_DIFFERENCES {
            println!("  ... {more} differences in all");
        }
    }
}
