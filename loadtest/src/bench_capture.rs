//! `rewind loadtest bench-capture`: starts the simulator as a child process (so the two
//! processes' memory is measured apart), generates a tenant into it, then captures the tenant
//! over HTTP with the Graph connector into a local snapshot, measuring throughput, the
//! capturing process's peak memory, the simulator's memory and the bytes on the wire.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use rewind_common::connector::{GraphConnector, GraphSettings};
use rewind_common::snapshot::{
    write_snapshot, LocalShardStore, ShardLayout, SnapshotInfo, SnapshotKind,
};
use serde::Serialize;

use crate::gen::{self, GenConfig};
use crate::rss;
use crate::tenant::{TenantGenerator, TenantSpec};

const TENANT: &str = "capture";

#[derive(Clone, Debug)]
pub struct BenchCaptureConfig {
    pub objects: u64,
    pub seed: u64,
    /// Captures of the loaded tenant (the medians are reported).
    pub runs: usize,
    /// Whether the capture reads each user's per-user MFA state (see
    /// [`GraphSettings::per_user_mfa_state`]).
    pub per_user_mfa_state: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct BenchCaptureResult {
    pub objects: u64,
    /// The whole capture, reading the tenant then sealing the snapshot (median of the runs).
    pub seconds: f64,
    pub objects_per_second: f64,
    /// Every run's whole capture.
    pub runs: Vec<f64>,
    /// Reading the tenant over HTTP into shard writers.
    pub read_seconds: f64,
    /// Compressing, storing and sealing the shards after the last page.
    pub seal_seconds: f64,
    /// CPU seconds of the capturing process while it read the tenant, and while it sealed.
    pub read_cpu_seconds: f64,
    pub seal_cpu_seconds: f64,
    /// CPU seconds of the simulator while it served the capture.
    pub dirsim_cpu_seconds: f64,
    /// Peak resident memory of this (the capturing) process during the capture.
    pub peak_rss_bytes: u64,
    /// Resident memory of the simulator holding the tenant, after the captures.
    pub dirsim_rss_bytes: u64,
    /// The simulator's peak resident memory (loading the tenant included).
    pub dirsim_peak_rss_bytes: u64,
    /// Response bytes read per captured object.
    pub wire_bytes_per_object: f64,
    pub requests: u64,
    pub links: u64,
    pub snapshot_bytes: u64,
    pub gen_seconds: f64,
    pub threads: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchCaptureError {
    #[error("cannot start the simulator: {0}")]
    Spawn(String),
    #[error(transparent)]
    Gen(#[from] gen::GenError),
    #[error(transparent)]
    Connector(#[from] rewind_common::connector::ConnectorError),
    #[error(transparent)]
    Store(#[from] rewind_common::snapshot::store::StoreError),
    #[error(transparent)]
    Snapshot(#[from] rewind_common::SnapshotError),
    #[error("the capture is wrong: {0}")]
    Wrong(String),
}

/// The simulator child process (`rewind dirsim` of this executable); killed when dropped.
pub struct Simulator {
    child: Child,
    /// Its base URL.
    pub url: String,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator").field("url", &self.url).finish()
    }
}

impl Simulator {
    pub fn start() -> Result<Self, BenchCaptureError> {
        let exe = std::env::current_exe().map_err(|e| BenchCaptureError::Spawn(e.to_string()))?;
        let mut child = Command::new(exe)
            .args(["dirsim", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| BenchCaptureError::Spawn(e.to_string()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| BenchCaptureError::Spawn("no stdout".into()))?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| BenchCaptureError::Spawn(e.to_string()))?;
        let url = line.trim().to_owned();
        if !url.starts_with("http://") {
            let _ = child.kill();
            return Err(BenchCaptureError::Spawn(format!(
                "it printed {url:?} instead of its base URL"
            )));
        }
        Ok(Self { child, url })
    }

    pub fn rss_bytes(&self) -> u64 {
        status_bytes(self.child.id(), "VmRSS:")
    }

    pub fn peak_rss_bytes(&self) -> u64 {
        status_bytes(self.child.id(), "VmHWM:")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// A `/proc/<pid>/status` field in bytes (`VmHWM:`, `VmRSS:`), 0 when unknown.
pub fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |k| k * 1024)
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn run(config: &BenchCaptureConfig) -> Result<BenchCaptureResult, BenchCaptureError> {
    let sim = Simulator::start()?;
    tracing::info!(url = %sim.url, "simulator started");
    let t = Instant::now();
    let tenant = gen::run(&GenConfig {
        dirsim: sim.url.clone(),
        tenant: TENANT.into(),
        objects: config.objects,
        seed: config.seed,
        client_id: None,
        client_secret: None,
    })?;
    let gen_seconds = t.elapsed().as_secs_f64();
    tracing::info!(
        objects = tenant.objects,
        seconds = gen_seconds,
        "tenant generated; capturing"
    );

    let expected =
        TenantGenerator::new(TenantSpec::new(config.objects, config.seed)).backup_count();
    let sim_pid = sim.child.id().to_string();
    let mut runs = Vec::with_capacity(config.runs.max(1));
    for run in 0..config.runs.max(1) {
        let one = capture_once(&sim, &sim_pid, &tenant, expected, (run, config))?;
        tracing::info!(
            run = run + 1,
            seconds = one.seconds,
            read_seconds = one.read_seconds,
            seal_seconds = one.seal_seconds,
            "captured"
        );
        runs.push(one);
    }
    let median = |f: fn(&RunMeasure) -> f64| -> f64 {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let seconds = median(|r| r.seconds);
    let last = runs
        .last()
        .ok_or_else(|| BenchCaptureError::Wrong("no run".into()))?;
    Ok(BenchCaptureResult {
        objects: expected,
        seconds,
        objects_per_second: expected as f64 / seconds.max(1e-9),
        runs: runs.iter().map(|r| r.seconds).collect(),
        read_seconds: median(|r| r.read_seconds),
        seal_seconds: median(|r| r.seal_seconds),
        read_cpu_seconds: median(|r| r.read_cpu_seconds),
        seal_cpu_seconds: median(|r| r.seal_cpu_seconds),
        dirsim_cpu_seconds: median(|r| r.dirsim_cpu_seconds),
        peak_rss_bytes: runs.iter().map(|r| r.peak_rss_bytes).max().unwrap_or(0),
        dirsim_rss_bytes: sim.rss_bytes(),
        dirsim_peak_rss_bytes: sim.peak_rss_bytes(),
        wire_bytes_per_object: last.wire_bytes as f64 / expected.max(1) as f64,
        requests: last.requests,
        links: last.links,
        snapshot_bytes: last.snapshot_bytes,
        gen_seconds,
        threads: rayon::current_num_threads(),
    })
}

/// What one capture measured.
struct RunMeasure {
    seconds: f64,
    read_seconds: f64,
    seal_seconds: f64,
    read_cpu_seconds: f64,
    seal_cpu_seconds: f64,
    dirsim_cpu_seconds: f64,
    peak_rss_bytes: u64,
    wire_bytes: u64,
    requests: u64,
    links: u64,
    snapshot_bytes: u64,
}

/// One capture of the loaded tenant into a fresh local store, checked for completeness.
fn capture_once(
    sim: &Simulator,
    sim_pid: &str,
    tenant: &gen::GenResult,
    expected: u64,
    (run, config): (usize, &BenchCaptureConfig),
) -> Result<RunMeasure, BenchCaptureError> {
    let dir = tempfile::tempdir().map_err(|e| BenchCaptureError::Spawn(e.to_string()))?;
    let store = LocalShardStore::open(dir.path())?;
    rss::reset_peak();
    let cpu_before = (rss::cpu_seconds("self"), rss::cpu_seconds(sim_pid));
    let t = Instant::now();
    let mut settings = GraphSettings::new(
        sim.url.clone(),
        tenant.graph_base_url.clone(),
        TENANT,
        tenant.client_id.clone(),
        tenant.client_secret.clone(),
    );
    settings.per_user_mfa_state = config.per_user_mfa_state;
    let connector = GraphConnector::new(settings)?;
    let info = SnapshotInfo {
        tenant: TENANT.into(),
        snapshot_id: format!("capture-{run}"),
        kind: SnapshotKind::Backup,
        created_at: 0,
        not_captured: Vec::new(),
    };
    let layout = ShardLayout::for_object_count(expected);
    let (writers, stats) = connector.capture(layout)?;
    let read_seconds = t.elapsed().as_secs_f64();
    let cpu_read = (rss::cpu_seconds("self"), rss::cpu_seconds(sim_pid));
    tracing::info!(seconds = read_seconds, "read; sealing");
    let manifest = write_snapshot(&store, &info, layout, writers)?;
    let seconds = t.elapsed().as_secs_f64();
    let peak_rss_bytes = rss::peak_rss_bytes().unwrap_or(0);
    let cpu_after = rss::cpu_seconds("self");
    let spent = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => b - a,
        _ => 0.0,
    };
    let objects = stats.total_objects();
    if objects != expected || manifest.object_count != expected {
        return Err(BenchCaptureError::Wrong(format!(
            "captured {objects} objects ({} stored), the tenant has {expected}",
            manifest.object_count
        )));
    }
    Ok(RunMeasure {
        seconds,
        read_seconds,
        seal_seconds: seconds - read_seconds,
        read_cpu_seconds: spent(cpu_before.0, cpu_read.0),
        seal_cpu_seconds: spent(cpu_read.0, cpu_after),
        dirsim_cpu_seconds: spent(cpu_before.1, cpu_read.1),
        peak_rss_bytes,
        wire_bytes: stats.bytes,
        requests: stats.requests,
        links: stats.links,
        snapshot_bytes: manifest.total_bytes(),
    })
}
