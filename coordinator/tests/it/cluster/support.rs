//! Test support for the cluster: a simulator over HTTP, a real nats-server, coordinators in
//! single-node or cluster mode (with workers in this process or as `rewind worker`
//! processes), tenants generated into the simulator and registered with a coordinator, and
//! waiting for jobs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rewind_common::report::Scope;
use rewind_common::secret_box::SecretKey;
use rewind_common::ReportEntry;
use rewind_coordinator::engine::{Engine, EngineSettings};
use rewind_coordinator::node::{run_worker, Node, NodeConfig, Transport, WorkerConfig};
use rewind_coordinator::scheduler::SchedulerSettings;
use rewind_coordinator::state::{Job, JobStatus, NewTenant, Schedule};
use rewind_loadtest::dirsim::{self, DirsimConfig, Running};
use rewind_loadtest::gen::{self, GenConfig};
use rewind_loadtest::incident::{self, ExpectedReport, IncidentConfig, Phase, Scenario};
use rewind_worker::nats::NatsSettings;
use rewind_worker::queue::QueuePolicy;
use rewind_worker::run::WorkerSettings;
use rewind_worker::testing::NatsServer;
use tokio::sync::watch;

pub const SEED: u64 = 23;
pub const OBJECTS: u64 = 4_000;

/// The queue policy of the tests: short ack waits, a few deliveries.
pub fn policy() -> QueuePolicy {
    QueuePolicy {
        ack_wait: Duration::from_secs(2),
        max_deliver: 3,
        backoff: Vec::new(),
        dedupe_window: Duration::from_secs(60),
    }
}

pub fn worker_settings(name: &str) -> WorkerSettings {
    let mut w = WorkerSettings::new(name, policy());
    w.retry_delay = Duration::from_millis(100);
    w.shutdown_grace = Duration::from_secs(5);
    w.connector.max_attempts = 3;
    w.connector.min_backoff = Duration::from_millis(50);
    w.connector.max_backoff = Duration::from_millis(200);
    w
}

/// A simulator on this test's runtime.
pub async fn simulator() -> Running {
    dirsim::spawn(DirsimConfig::default())
        .await
        .expect("the simulator starts")
}

/// Generates tenant `name` into the simulator (blocking HTTP, off the runtime).
pub async fn generate(sim: &str, name: &str, objects: u64) {
    let config = GenConfig {
        dirsim: sim.to_owned(),
        tenant: name.to_owned(),
        objects,
        seed: SEED,
        client_id: Some(format!("app-{name}")),
        client_secret: Some(format!("secret-{name}")),
    };
    tokio::task::spawn_blocking(move || gen::run(&config))
        .await
        .expect("gen runs")
        .expect("the tenant is generated");
}

/// Applies a scenario's incident to tenant `name` and returns its expected report.
pub async fn incident(sim: &str, name: &str, scenario: Scenario, phase: Phase) -> ExpectedReport {
    let config = IncidentConfig {
        dirsim: sim.to_owned(),
        tenant: name.to_owned(),
        scenario,
        seed: SEED,
        phase,
        client_id: Some(format!("app-{name}")),
        client_secret: Some(format!("secret-{name}")),
    };
    tokio::task::spawn_blocking(move || incident::run(&config))
        .await
        .expect("incident runs")
        .expect("the incident is applied")
}

/// The tenant record of simulator tenant `name`, backups off (tests start them).
pub fn tenant(sim: &str, name: &str, shard_bits: u8) -> NewTenant {
    let mut t = NewTenant::new(
        name,
        format!("{sim}/{name}/v1.0"),
        format!("{sim}/{name}/oauth2/v2.0/token"),
        format!("app-{name}"),
        format!("secret-{name}"),
    );
    t.schedule = Schedule::Off;
    t.shard_bits = shard_bits;
    t
}

/// A coordinator under test: its node, its key and its folder.
pub struct Coordinator {
    pub node: Option<Node>,
    pub key: SecretKey,
    pub dir: PathBuf,
    pub transport: Transport,
}

pub fn node_config(dir: &Path, transport: Transport) -> NodeConfig {
    NodeConfig {
        state_dir: dir.join("state"),
        transport,
        policy: policy(),
        engine: EngineSettings {
            per_user_mfa_state: true,
            ..EngineSettings::default()
        },
        scheduler: SchedulerSettings {
            tick: Duration::from_millis(200),
        },
        cache_bytes: 256 << 20,
        worker: worker_settings("embedded"),
    }
}

impl Coordinator {
    pub async fn start(dir: &Path, transport: Transport, key: SecretKey) -> Self {
        let node = Node::start(node_config(dir, transport.clone()), key.clone())
            .await
            .expect("the coordinator starts");
        Self {
            node: Some(node),
            key,
            dir: dir.to_owned(),
            transport,
        }
    }

    pub fn embedded(dir: &Path, workers: usize) -> Transport {
        Transport::Embedded {
            blob_dir: dir.join("blobs"),
            workers,
        }
    }

    pub fn engine(&self) -> &Engine {
        self.node.as_ref().expect("running").engine()
    }

    pub async fn add(&self, tenant: NewTenant) {
        self.engine()
            .state()
            .add_tenant(&self.key, tenant)
            .await
            .expect("the tenant is added");
    }

    /// Stops the node (as an orderly shutdown) and starts it again on the same state.
    pub async fn restart(&mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown().await;
        }
        let node = Node::start(
            node_config(&self.dir, self.transport.clone()),
            self.key.clone(),
        )
        .await
        .expect("the coordinator starts again");
        self.node = Some(node);
    }

    pub async fn backup(&self, tenant: &str) -> Job {
        let job = self
            .engine()
            .start_backup(tenant)
            .await
            .expect("the backup starts");
        self.wait(&job.id, JobStatus::Successful).await
    }

    pub async fn report(&self, tenant: &str, backup: &str) -> (Job, Vec<ReportEntry>) {
        let job = self
            .engine()
            .start_report(tenant, backup, Scope::All)
            .await
            .expect("the report starts");
        let job = self.wait(&job.id, JobStatus::Successful).await;
        let entries = entries(self.engine(), &job.id);
        (job, entries)
    }

    /// Waits until the job is finished, and requires the given status.
    pub async fn wait(&self, job: &str, want: JobStatus) -> Job {
        let job = wait_finished(self.engine(), job, Duration::from_secs(180)).await;
        assert_eq!(
            job.status, want,
            "job ended as {:?}: {:?}",
            job.status, job.error
        );
        job
    }
}

/// Waits until the job is finished (panics after `limit`).
pub async fn wait_finished(engine: &Engine, job: &str, limit: Duration) -> Job {
    let started = Instant::now();
    loop {
        let j = engine.state().get_job(job).expect("the job exists");
        if j.status.is_terminal() {
            return j;
        }
        assert!(
            started.elapsed() < limit,
            "job {job} not finished after {limit:?}: {j:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every entry of a report, in order, paged out of the state.
pub fn entries(engine: &Engine, job: &str) -> Vec<ReportEntry> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let (page, next) = engine
            .state()
            .report_entries_page(job, cursor, 500)
            .expect("a page of entries");
        out.extend(
            page.iter()
                .map(|b| rmp_serde::from_slice::<ReportEntry>(b).expect("an entry decodes")),
        );
        match next {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
}

/// Cluster workers in this process, over NATS, until the returned sender says stop.
pub fn nats_workers(
    url: &str,
    key: &SecretKey,
    n: usize,
) -> (watch::Sender<bool>, Vec<tokio::task::JoinHandle<()>>) {
    let (tx, rx) = watch::channel(false);
    let handles = (0..n)
        .map(|i| {
            let config = WorkerConfig {
                nats: NatsSettings::url(url),
                policy: policy(),
                cache_bytes: 256 << 20,
                worker: worker_settings(&format!("nats-{}", i + 1)),
            };
            let key = key.clone();
            let rx = rx.clone();
            tokio::spawn(async move {
                run_worker(config, key, rx).await.expect("the worker runs");
            })
        })
        .collect();
    (tx, handles)
}

/// A `rewind worker` process against a NATS server (killed on drop), logging at debug level
/// to a file.
pub struct WorkerProcess {
    pub child: Child,
    pub log: PathBuf,
}

impl WorkerProcess {
    /// Starts `rewind worker` with the test policy, reading the key from `key_file`, pausing at
    /// `failpoints` (name, milliseconds; each leaves `<name>.hit` in `dir` when reached).
    pub fn start(
        url: &str,
        key_file: &Path,
        name: &str,
        failpoints: &[(&str, u64)],
        dir: &Path,
    ) -> Self {
        Self::start_with(url, key_file, name, failpoints, dir, &[])
    }

    /// [`WorkerProcess::start`] with more flags.
    pub fn start_with(
        url: &str,
        key_file: &Path,
        name: &str,
        failpoints: &[(&str, u64)],
        dir: &Path,
        flags: &[&str],
    ) -> Self {
        let log = dir.join(format!("{name}.log"));
        let spec: Vec<String> = failpoints
            .iter()
            .map(|(p, ms)| format!("{p}={ms}"))
            .collect();
        let child = Command::new(env!("CARGO_BIN_EXE_rewind"))
            .args(["worker", "--nats", url, "--name", name])
            .args(["--ack-wait-seconds", "2", "--max-deliver", "3"])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .args(flags)
            .arg("--secret-key-file")
            .arg(key_file)
            .env_remove("REWIND_SECRET_KEY")
            .env("RUST_LOG", "debug")
            .env("REWIND_FAILPOINTS", spec.join(","))
            .env("REWIND_FAILPOINT_DIR", dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("a log file"))
            .spawn()
            .expect("the worker process starts");
        Self { child, log }
    }

    /// SIGKILL: the process dies at once, its task unacknowledged.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the process to end; returns whether it exited cleanly.
    pub fn terminate(&mut self) -> bool {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.child.wait().map(|s| s.success()).unwrap_or(false)
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until failpoint `name` was reached (its file appears in `dir`).
pub async fn wait_hit(dir: &Path, name: &str, limit: Duration) {
    let path = dir.join(format!("{name}.hit"));
    let started = Instant::now();
    while !path.exists() {
        assert!(
            started.elapsed() < limit,
            "failpoint {name} not reached in {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `PATCH` of a simulator admin route (its settings), off the runtime; it must succeed.
pub async fn admin_patch(base: &str, path: &str, body: serde_json::Value) {
    let url = format!("{base}{path}");
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let r = agent
            .patch(&url)
            .send_json(body)
            .expect("the simulator answers");
        assert!(r.status().is_success(), "{url}: {}", r.status());
    })
    .await
    .expect("the request runs");
}

/// A nats-server for one test.
pub fn nats() -> NatsServer {
    NatsServer::start()
}

/// A key in a key file under `dir` (as an operator would give it to every process).
pub fn key_file(dir: &Path) -> (PathBuf, SecretKey) {
    let path = dir.join("secret.key");
    let key = SecretKey::load_or_create(&path).expect("a key file");
    (path, key)
}
