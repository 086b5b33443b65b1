//! `rewind loadtest bench-api`: the API under the loads its users put on it. A generated tenant
//! gets a large incident (by default about half a million changed objects), so that a real
//! difference report of that size exists; then, against the coordinator's HTTP API over TCP:
//! the latency of `getChanges` pages (`$top=999`) at the start, middle and end of the report,
//! the throughput and peak memory of its export (JSON Lines and CSV), and the rate of
//! `GET jobs/{id}` (what a polling script calls) from many concurrent clients.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rewind_common::report::Scope;
use rewind_common::secret_box::SecretKey;
use rewind_common::snapshot::ShardLayout;
use rewind_loadtest::gen;
use rewind_loadtest::tenant::TenantSpec;
use serde::Serialize;

use crate::api::{self, ApiState};
use crate::bench_report::{
    bench_tenant, generated_tenant, single_node, time_job, JobTiming, Processes, BENCH_TENANT,
};
use crate::node::Node;
use crate::state::{NewToken, Role, TenantScope};

#[derive(Debug, clap::Args)]
pub struct BenchApiArgs {
    /// Objects of the generated tenant.
    #[arg(long, default_value_t = 560_000)]
    pub objects: u64,
    /// Share of its objects the incident changes (the report's size follows).
    #[arg(long, default_value_t = 0.88)]
    pub changed: f64,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// `getChanges` requests timed at each position (start, middle, end).
    #[arg(long, default_value_t = 100)]
    pub pages: usize,
    /// Concurrent clients polling `GET jobs/{id}`.
    #[arg(long, default_value_t = 50)]
    pub clients: usize,
    /// How long the clients poll, in seconds.
    #[arg(long, default_value_t = 10)]
    pub poll_seconds: u64,
}

/// Latencies of a set of requests, in milliseconds.
#[derive(Debug, Default, Serialize)]
pub struct Latency {
    pub requests: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    fn of(mut samples: Vec<Duration>) -> Latency {
        samples.sort_unstable();
        let at = |q: f64| {
            let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            samples.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        Latency {
            requests: samples.len(),
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

/// One export's run.
#[derive(Debug, Default, Serialize)]
pub struct ExportRun {
    pub format: String,
    pub seconds: f64,
    pub bytes: u64,
    /// Lines after the header (CSV: rows, one per changed attribute or link).
    pub lines: u64,
    pub entries_per_second: f64,
    /// The process's resident memory before the export, and its peak during it.
    pub rss_before: u64,
    pub peak_rss: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct BenchApiResult {
    pub objects: u64,
    pub shards: u32,
    pub entries: u64,
    pub backup: JobTiming,
    pub report: JobTiming,
    pub get_changes_start: Latency,
    pub get_changes_middle: Latency,
    pub get_changes_end: Latency,
    /// Every page from the first to the last through `@odata.nextLink`.
    pub get_changes_walk: Latency,
    pub get_changes_walk_seconds: f64,
    pub exports: Vec<ExportRun>,
    pub job_polls: Latency,
    pub job_polls_per_second: f64,
}

struct Client {
    agent: ureq::Agent,
    base: String,
    token: String,
}

impl Client {
    fn new(addr: SocketAddr, token: &str) -> Client {
        Client {
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(600)))
                .build()
                .into(),
            base: format!("http://{addr}"),
            token: token.to_owned(),
        }
    }

    /// GETs `path` (or a full URL), requires a 200, and returns the body's bytes.
    fn get(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        let mut resp = self
            .agent
            .get(&url)
            .header("Authorization", &format!("Bearer {}", self.token))
            .header("Prefer", "include-unknown-enum-members")
            .call()
            .with_context(|| format!("GET {url}"))?;
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        resp.body_mut()
            .as_reader()
            .read_to_end(&mut body)
            .with_context(|| format!("reading GET {url}"))?;
        if status != 200 {
            bail!("GET {url}: {status} {}", String::from_utf8_lossy(&body));
        }
        Ok(body)
    }

    fn timed(&self, path: &str) -> anyhow::Result<(Duration, serde_json::Value)> {
        let started = Instant::now();
        let body = self.get(path)?;
        let json: serde_json::Value = serde_json::from_slice(&body)?;
        Ok((started.elapsed(), json))
    }
}

fn values(page: &serde_json::Value) -> usize {
    page["value"].as_array().map_or(0, Vec::len)
}

/// Runs the benchmark; prints progress to the log and the result as JSON on stdout's last
/// line.
pub fn run(args: BenchApiArgs) -> anyhow::Result<()> {
    if args.objects == 0 || !(0.0..=0.99).contains(&args.changed) {
        bail!("--objects must be at least 1 and --changed within 0..=0.99");
    }
    if args.pages == 0 || args.clients == 0 || args.poll_seconds == 0 {
        bail!("--pages, --clients and --poll-seconds must be at least 1");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(run_async(&args))?;
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

async fn run_async(args: &BenchApiArgs) -> anyhow::Result<BenchApiResult> {
    let layout = ShardLayout::for_object_count(args.objects);
    let mut out = BenchApiResult {
        objects: args.objects,
        shards: layout.count(),
        ..BenchApiResult::default()
    };
    let dir = tempfile::tempdir()?;
    let key = SecretKey::load_or_create(&dir.path().join("secret.key"))?;
    tracing::info!(objects = args.objects, "generating the tenant");
    let (sim, gen_config, generated) = generated_tenant(args.objects, args.seed).await?;
    let tenant = BENCH_TENANT;

    let node = Node::start(single_node(dir.path(), 2), key.clone()).await?;
    let engine = node.engine().clone();
    let procs = Processes::of_this_process(sim.pid());
    engine
        .state()
        .add_tenant(&key, bench_tenant(&generated, layout.bits()))
        .await?;
    let (_, token) = engine
        .state()
        .create_token(NewToken {
            name: "bench".into(),
            role: Role::Administrator,
            tenants: TenantScope::Only(vec![tenant.into()]),
            expires_at: None,
        })
        .await?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(api::serve(
        listener,
        ApiState::new(engine.clone(), key.clone()),
        async move {
            let _ = stopped.await;
        },
    ));

    tracing::info!("backup");
    let job = engine.start_backup(tenant).await?;
    let (backup, timing) = time_job(&engine, &job, &procs).await?;
    out.backup = timing;
    let backup_id = backup.snapshot.context("the backup has no snapshot")?;
    tracing::info!(changed = args.changed, "applying the incident");
    let g = gen_config.clone();
    let spec = TenantSpec {
        changed: args.changed,
        ..TenantSpec::new(args.objects, args.seed)
    };
    tokio::task::spawn_blocking(move || gen::apply_incident_of(&g, spec)).await??;
    tracing::info!("difference report");
    let job = engine.start_report(tenant, &backup_id, Scope::All).await?;
    let (report, timing) = time_job(&engine, &job, &procs).await?;
    out.report = timing;
    out.entries = report.counts.get("entries").copied().unwrap_or(0);
    if out.entries < 1000 {
        bail!("the report has {} entries: too few to page", out.entries);
    }

    let client = Arc::new(Client::new(addr, &token));
    let changes = format!(
        "/tenants/{tenant}/v1.0/directory/recovery/snapshots/{backup_id}/recoveryPreviewJobs/{}/getChanges",
        report.id
    );
    let report_id = report.id.clone();
    let entries = out.entries;
    let pages = args.pages;
    let c = client.clone();
    let (start, middle, end, walk, walk_seconds, exports) =
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let at = |skip: u64| -> anyhow::Result<Latency> {
                let mut samples = Vec::with_capacity(pages);
                for _ in 0..pages {
                    let (took, page) = c.timed(&format!("{changes}?$top=999&$skip={skip}"))?;
                    if values(&page) == 0 {
                        bail!("no entries at $skip={skip}");
                    }
                    samples.push(took);
                }
                Ok(Latency::of(samples))
            };
            tracing::info!(entries, "timing getChanges pages");
            let start = at(0)?;
            let middle = at(entries / 2)?;
            let end = at(entries.saturating_sub(999))?;
            tracing::info!("walking every page");
            let started = Instant::now();
            let mut samples = Vec::new();
            let mut next = Some(format!("{changes}?$top=999"));
            let mut seen = 0u64;
            while let Some(url) = next.take() {
                let (took, page) = c.timed(&url)?;
                samples.push(took);
                seen += values(&page) as u64;
                next = page["@odata.nextLink"].as_str().map(str::to_owned);
            }
            if seen != entries {
                bail!("paging returned {seen} entries of {entries}");
            }
            let walk_seconds = started.elapsed().as_secs_f64();
            let mut exports = Vec::new();
            for format in ["jsonl", "csv"] {
                tracing::info!(format, "export");
                rewind_loadtest::rss::reset_peak();
                let rss_before = rewind_loadtest::rss::current_rss_bytes().unwrap_or(0);
                let started = Instant::now();
                let url = format!(
                    "{}/tenants/{tenant}/rewind/reports/{report_id}/export?format={format}",
                    c.base
                );
                let mut resp = c
                    .agent
                    .get(&url)
                    .header("Authorization", &format!("Bearer {}", c.token))
                    .call()?;
                if resp.status().as_u16() != 200 {
                    bail!("GET {url}: {}", resp.status());
                }
                let mut reader = resp.body_mut().with_config().limit(u64::MAX).reader();
                let (mut bytes, mut lines) = (0u64, 0u64);
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = reader.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    bytes += n as u64;
                    lines += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
                }
                let seconds = started.elapsed().as_secs_f64();
                if format == "csv" {
                    lines = lines.saturating_sub(1);
                } else if lines != entries {
                    bail!("the JSON Lines export has {lines} lines for {entries} entries");
                }
                exports.push(ExportRun {
                    format: format.into(),
                    seconds,
                    bytes,
                    lines,
                    entries_per_second: entries as f64 / seconds,
                    rss_before,
                    peak_rss: rewind_loadtest::rss::peak_rss_bytes().unwrap_or(0),
                });
            }
            Ok((
                start,
                middle,
                end,
                Latency::of(samples),
                walk_seconds,
                exports,
            ))
        })
        .await??;
    out.get_changes_start = start;
    out.get_changes_middle = middle;
    out.get_changes_end = end;
    out.get_changes_walk = walk;
    out.get_changes_walk_seconds = walk_seconds;
    out.exports = exports;

    tracing::info!(
        clients = args.clients,
        seconds = args.poll_seconds,
        "polling GET jobs/{{id}}"
    );
    let job_path = format!(
        "/tenants/{tenant}/v1.0/directory/recovery/jobs/{}",
        report.id
    );
    let (polls, per_second) =
        poll(addr, &token, &job_path, args.clients, args.poll_seconds).await?;
    out.job_polls = polls;
    out.job_polls_per_second = per_second;

    let _ = stop.send(());
    let _ = server.await;
    node.shutdown().await;
    drop(sim);
    Ok(out)
}

/// `clients` threads GET `path` as fast as each gets its answers, for `seconds`.
async fn poll(
    addr: SocketAddr,
    token: &str,
    path: &str,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<(Latency, f64)> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (stop, client, path) = (stop.clone(), Client::new(addr, token), path.to_owned());
        threads.push(tokio::task::spawn_blocking(
            move || -> anyhow::Result<Vec<Duration>> {
                let mut samples = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    client.get(&path)?;
                    samples.push(started.elapsed());
                }
                Ok(samples)
            },
        ));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in threads {
        all.extend(t.await??);
    }
    let per_second = all.len() as f64 / started.elapsed().as_secs_f64();
    Ok((Latency::of(all), per_second))
}
