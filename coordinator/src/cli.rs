//! The `rewind coordinator` and `rewind worker` roles: their flags, their config file (TOML;
//! an unknown key or a bad value is an error naming it), and running them until SIGTERM or
//! SIGINT, with `/metrics` and (the coordinator) the HTTP API served on settable addresses.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use rewind_common::secret_box::SecretKey;
use rewind_worker::nats::NatsSettings;
use rewind_worker::queue::QueuePolicy;
use rewind_worker::run::WorkerSettings;
use serde::Deserialize;
use tokio::sync::watch;

use crate::engine::EngineSettings;
use crate::node::{self, Node, NodeConfig, Transport, WorkerConfig};
use crate::scheduler::SchedulerSettings;

/// The config file of either role. Every key is optional; flags override the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The coordinator's state folder.
    pub state_dir: Option<PathBuf>,
    /// The key that encrypts directory secrets (else `REWIND_SECRET_KEY`).
    pub secret_key_file: Option<PathBuf>,
    /// Where `/metrics` is served.
    pub metrics_listen: Option<SocketAddr>,
    /// Where the coordinator serves its HTTP API.
    pub api_listen: Option<SocketAddr>,
    /// Workers of a single-node coordinator.
    pub workers: Option<usize>,
    /// A worker's name.
    pub name: Option<String>,
    /// Bytes of shards a worker's cache keeps.
    pub cache_bytes: Option<u64>,
    /// Apply tasks a worker runs side by side.
    pub apply_tasks: Option<usize>,
    /// Seconds between the scheduler's looks at the tenants.
    pub scheduler_tick_seconds: Option<u64>,
    pub nats: Option<NatsSettings>,
    pub queue: Option<QueueConfig>,
    pub engine: Option<EngineConfig>,
}

/// The queue's redelivery rules.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    pub ack_wait_seconds: Option<u64>,
    pub max_deliver: Option<u32>,
    pub backoff_seconds: Option<Vec<u64>>,
    pub dedupe_window_seconds: Option<u64>,
}

/// How jobs are cut into tasks.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    pub diff_range_bits: Option<u8>,
    pub per_user_mfa_state: Option<bool>,
    /// The most steps of one apply task of a recovery.
    pub apply_task_steps: Option<usize>,
}

/// Reads a config file, naming the file and the key or value it refuses.
pub fn read_config(path: &Path) -> anyhow::Result<ConfigFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))
}

/// Flags both roles share.
#[derive(Debug, Default, Args)]
pub struct CommonArgs {
    /// A TOML config file (flags override it).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// NATS server URL(s) (cluster mode); repeat for several. Credentials and TLS go in the
    /// config file's `[nats]` section.
    #[arg(long = "nats")]
    pub nats: Vec<String>,
    /// The file holding the key of directory secrets (else `REWIND_SECRET_KEY`).
    #[arg(long)]
    pub secret_key_file: Option<PathBuf>,
    /// Where to serve `/metrics` (port 0: any free port, printed in the log).
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    /// Seconds a task may go without progress before it is delivered again.
    #[arg(long)]
    pub ack_wait_seconds: Option<u64>,
    /// Deliveries of a task before it becomes a dead letter.
    #[arg(long)]
    pub max_deliver: Option<u32>,
    /// Apply tasks of recoveries each worker runs side by side (default 4; at least 1).
    #[arg(long)]
    pub apply_tasks: Option<usize>,
}

/// `rewind coordinator`.
#[derive(Debug, Args)]
pub struct CoordinatorArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The state folder (sled state, and shard files in single-node mode).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Single-node mode: the coordinator and its workers in this process, over an in-process
    /// queue and local shard files (the default when no NATS URL is given).
    #[arg(long)]
    pub embedded: bool,
    /// Workers of single-node mode.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Where to serve the HTTP API (default 127.0.0.1:8080; port 0: any free port, printed in
    /// the log).
    #[arg(long)]
    pub api_listen: Option<SocketAddr>,
}

/// `rewind worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The worker's name in results and logs (default: host and process id).
    #[arg(long)]
    pub name: Option<String>,
    /// Bytes of shards the worker's cache keeps.
    #[arg(long)]
    pub cache_bytes: Option<u64>,
}

fn policy(common: &CommonArgs, file: &ConfigFile) -> anyhow::Result<QueuePolicy> {
    let q = file.queue.as_ref();
    let mut p = QueuePolicy::production();
    let ack = common
        .ack_wait_seconds
        .or_else(|| q.and_then(|q| q.ack_wait_seconds));
    let backoff = q.and_then(|q| q.backoff_seconds.clone());
    if let Some(ack) = ack {
        p.ack_wait = Duration::from_secs(ack);
        // A first backoff entry is the ack wait in JetStream; without a backoff, every
        // delivery waits `ack`.
        if backoff.is_none() {
            p.backoff.clear();
        }
    }
    if let Some(b) = backoff {
        p.backoff = b.into_iter().map(Duration::from_secs).collect();
    }
    if let Some(m) = common.max_deliver.or_else(|| q.and_then(|q| q.max_deliver)) {
        p.max_deliver = m;
    }
    if let Some(w) = q.and_then(|q| q.dedupe_window_seconds) {
        p.dedupe_window = Duration::from_secs(w);
    }
    p.validate().context("queue settings")?;
    Ok(p)
}

/// The engine's settings: the defaults, less what the file's `[engine]` section sets.
fn engine_settings(file: &ConfigFile) -> anyhow::Result<EngineSettings> {
    let mut engine = EngineSettings::default();
    let Some(e) = &file.engine else {
        return Ok(engine);
    };
    if let Some(b) = e.diff_range_bits {
        engine.diff_range_bits = b;
    }
    if let Some(m) = e.per_user_mfa_state {
        engine.per_user_mfa_state = m;
    }
    if let Some(n) = e.apply_task_steps {
        let most = crate::engine::TASK_STEPS;
        if !(1..=most).contains(&n) {
            bail!("[engine] apply_task_steps {n}: an apply task holds 1 to {most} steps");
        }
        engine.apply_task_steps = n;
    }
    Ok(engine)
}

/// A worker's settings: its name, the queue's rules and its apply slots (flag, then file).
fn worker_settings(
    name: String,
    policy: QueuePolicy,
    common: &CommonArgs,
    file: &ConfigFile,
) -> anyhow::Result<WorkerSettings> {
    let mut w = WorkerSettings::new(name, policy);
    if let Some(n) = common.apply_tasks.or(file.apply_tasks) {
        if !(1..=256).contains(&n) {
            bail!("apply tasks {n}: a worker runs 1 to 256 apply tasks side by side");
        }
        w.apply_slots = n;
    }
    Ok(w)
}

fn nats_settings(common: &CommonArgs, file: &ConfigFile) -> Option<NatsSettings> {
    let mut settings = file.nats.clone();
    if !common.nats.is_empty() {
        let s = settings.get_or_insert_with(NatsSettings::default);
        s.urls = common.nats.clone();
    }
    settings.filter(|s| !s.urls.is_empty())
}

/// SIGTERM or SIGINT turns the returned receiver true.
fn shutdown_on_signals() -> anyhow::Result<watch::Receiver<bool>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("shutdown asked: finishing or giving back the tasks in hand");
        let _ = tx.send(true);
    });
    Ok(rx)
}

async fn serve_metrics(addr: Option<SocketAddr>, default: SocketAddr) -> anyhow::Result<()> {
    let handle = rewind_worker::telemetry::install_metrics()?;
    let (bound, _task) =
        rewind_worker::telemetry::serve_metrics(addr.unwrap_or(default), handle).await?;
    tracing::info!(%bound, "serving /metrics");
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Runs `rewind coordinator` until SIGTERM or SIGINT.
pub fn run_coordinator(args: CoordinatorArgs) -> anyhow::Result<()> {
    let file = match &args.common.config {
        Some(p) => read_config(p)?,
        None => ConfigFile::default(),
    };
    let policy = policy(&args.common, &file)?;
    let state_dir = args
        .state_dir
        .clone()
        .or_else(|| file.state_dir.clone())
        .unwrap_or_else(|| PathBuf::from("rewind-data"));
    let nats = nats_settings(&args.common, &file);
    let transport = match (args.embedded, nats) {
        (true, Some(_)) => bail!("--embedded runs without NATS; give no NATS URL with it"),
        (false, Some(n)) => Transport::Nats(Box::new(n)),
        (_, None) => Transport::Embedded {
            blob_dir: state_dir.join("blobs"),
            workers: args.workers.or(file.workers).unwrap_or(2),
        },
    };
    if let Transport::Embedded { workers: 0, .. } = transport {
        bail!("--workers must be at least 1 in single-node mode");
    }
    let key_file = args
        .common
        .secret_key_file
        .clone()
        .or_else(|| file.secret_key_file.clone())
        .unwrap_or_else(|| state_dir.join("secret.key"));
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("cannot create the state folder {}", state_dir.display()))?;
    let key = match std::env::var_os(rewind_common::secret_box::SECRET_KEY_ENV) {
        Some(_) => SecretKey::from_env_or_file(&key_file)?,
        None => SecretKey::load_or_create(&key_file)?,
    };
    let engine = engine_settings(&file)?;
    let config = NodeConfig {
        state_dir: state_dir.join("state"),
        transport,
        policy: policy.clone(),
        engine,
        scheduler: SchedulerSettings {
            tick: file
                .scheduler_tick_seconds
                .map_or(node::DEFAULT_SCHEDULER_TICK, Duration::from_secs),
        },
        cache_bytes: file.cache_bytes.unwrap_or(node::DEFAULT_CACHE_BYTES),
        worker: worker_settings("embedded".into(), policy, &args.common, &file)?,
    };
    runtime()?.block_on(async move {
        let shutdown = shutdown_on_signals()?;
        let default_metrics = SocketAddr::from(([127, 0, 0, 1], 9464));
        serve_metrics(
            args.common.metrics_listen.or(file.metrics_listen),
            default_metrics,
        )
        .await?;
        let api_addr = args
            .api_listen
            .or(file.api_listen)
            .unwrap_or(crate::api::DEFAULT_API_LISTEN);
        let listener = tokio::net::TcpListener::bind(api_addr)
            .await
            .with_context(|| format!("cannot listen for the API on {api_addr}"))?;
        let node = Node::start(config, key.clone()).await?;
        let api = crate::api::ApiState::new(node.engine().clone(), key);
        let mut api_stop = shutdown.clone();
        let server = tokio::spawn(crate::api::serve(listener, api, async move {
            while !*api_stop.borrow() {
                if api_stop.changed().await.is_err() {
                    break;
                }
            }
        }));
        tracing::info!(state = %state_dir.display(), "coordinator running");
        let mut shutdown = shutdown;
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the API server stopped with an error"),
            Err(e) => tracing::warn!(error = %e, "the API server task failed"),
        }
        node.shutdown().await;
        tracing::info!("coordinator stopped");
        Ok(())
    })
}

/// Runs `rewind worker` until SIGTERM or SIGINT.
pub fn run_worker(args: WorkerArgs) -> anyhow::Result<()> {
    let file = match &args.common.config {
        Some(p) => read_config(p)?,
        None => ConfigFile::default(),
    };
    let policy = policy(&args.common, &file)?;
    let Some(nats) = nats_settings(&args.common, &file) else {
        bail!("a worker needs NATS: give --nats URL or [nats] urls in the config file");
    };
    let key_file = args
        .common
        .secret_key_file
        .clone()
        .or_else(|| file.secret_key_file.clone());
    let key = if std::env::var_os(rewind_common::secret_box::SECRET_KEY_ENV).is_some() {
        SecretKey::from_env_or_file(Path::new(""))?
    } else {
        match key_file {
            // Never a new key: it would not open the secrets the coordinator sealed.
            Some(path) if path.exists() => SecretKey::load_or_create(&path)?,
            Some(path) => bail!(
                "the key file {} does not exist: a worker needs the coordinator's key",
                path.display()
            ),
            None => bail!(
                "a worker needs the cluster's secret key: set REWIND_SECRET_KEY or give --secret-key-file"
            ),
        }
    };
    let name = args
        .name
        .clone()
        .or_else(|| file.name.clone())
        .unwrap_or_else(|| format!("worker-{}", std::process::id()));
    let config = WorkerConfig {
        nats,
        policy: policy.clone(),
        cache_bytes: args
            .cache_bytes
            .or(file.cache_bytes)
            .unwrap_or(node::DEFAULT_CACHE_BYTES),
        worker: worker_settings(name, policy, &args.common, &file)?,
    };
    runtime()?.block_on(async move {
        let shutdown = shutdown_on_signals()?;
        let default_metrics = SocketAddr::from(([127, 0, 0, 1], 0));
        serve_metrics(
            args.common.metrics_listen.or(file.metrics_listen),
            default_metrics,
        )
        .await?;
        node::run_worker(config, key, shutdown).await?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rewind.toml");
        std::fs::write(&path, "state_dir = \"x\"\nworkerz = 3\n").unwrap();
        let err = read_config(&path).unwrap_err().to_string();
        assert!(
            err.contains("workerz") && err.contains("rewind.toml"),
            "{err}"
        );
        std::fs::write(&path, "[queue]\nmax_deliver = \"five\"\n").unwrap();
        let err = read_config(&path).unwrap_err().to_string();
        assert!(err.contains("max_deliver"), "{err}");
        std::fs::write(
            &path,
            "[nats]\nurls = [\"nats://h:4222\"]\npasword = \"x\"\n",
        )
        .unwrap();
        let err = read_config(&path).unwrap_err().to_string();
        assert!(err.contains("pasword"), "{err}");
        std::fs::write(
            &path,
            "[queue]\nack_wait_seconds = 10\nbackoff_seconds = [10, 20]\nmax_deliver = 2\n",
        )
        .unwrap();
        let file = read_config(&path).unwrap();
        let args = CommonArgs::default();
        let err = format!("{:#}", policy(&args, &file).unwrap_err());
        assert!(err.contains("max_deliver"), "{err}");
    }

    #[test]
    fn apply_task_steps_come_from_the_file_and_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rewind.toml");
        std::fs::write(&path, "[engine]\napply_task_steps = 50\n").unwrap();
        let file = read_config(&path).unwrap();
        assert_eq!(engine_settings(&file).unwrap().apply_task_steps, 50);
        assert_eq!(
            engine_settings(&ConfigFile::default())
                .unwrap()
                .apply_task_steps,
            crate::engine::TASK_STEPS
        );
        for bad in [0, crate::engine::TASK_STEPS + 1] {
            std::fs::write(&path, format!("[engine]\napply_task_steps = {bad}\n")).unwrap();
            let file = read_config(&path).unwrap();
            let err = engine_settings(&file).unwrap_err().to_string();
            assert!(
                err.contains("apply_task_steps") && err.contains(&bad.to_string()),
                "{err}"
            );
        }
    }

    #[test]
    fn apply_tasks_come_from_the_flag_then_the_file_and_are_bounded() {
        let mut args = CommonArgs::default();
        let mut file = ConfigFile::default();
        let slots = |args: &CommonArgs, file: &ConfigFile| {
            worker_settings("w".into(), QueuePolicy::production(), args, file)
                .map(|w| w.apply_slots)
        };
        assert_eq!(
            slots(&args, &file).unwrap(),
            rewind_worker::run::DEFAULT_APPLY_SLOTS
        );
        file.apply_tasks = Some(2);
        assert_eq!(slots(&args, &file).unwrap(), 2);
        args.apply_tasks = Some(7);
        assert_eq!(slots(&args, &file).unwrap(), 7, "the flag wins");
        for bad in [0, 257] {
            args.apply_tasks = Some(bad);
            let err = slots(&args, &file).unwrap_err().to_string();
            assert!(
                err.contains("apply tasks") && err.contains(&bad.to_string()),
                "{err}"
            );
        }
    }
}
