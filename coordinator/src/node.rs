//! A running coordinator: the state, the transport (NATS JetStream in cluster mode; the
//! in-process queue and local shard files in single-node mode, with N workers in the same
//! process), the job engine's loop and the scheduler. Single-node mode runs exactly the job
//! and task code of the cluster; only the transport differs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rewind_common::secret_box::SecretKey;
use rewind_common::snapshot::LocalShardStore;
use rewind_worker::blobs::{BlobStore, JetStreamBlobs, LocalBlobs};
use rewind_worker::budget::{BudgetGates, JetStreamBudgets, MemoryBudgets, WriteBudgets};
use rewind_worker::cache::ShardCache;
use rewind_worker::nats::{self, NatsSettings};
use rewind_worker::queue::{JetStreamQueue, MemoryQueue, QueuePolicy, WorkQueue};
use rewind_worker::run::GateMaker;
use rewind_worker::run::{Worker, WorkerSettings};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::engine::{Engine, EngineError, EngineSettings};
use crate::scheduler::{self, SchedulerSettings};
use crate::state::{State, StateError};

/// Where tasks and blobs go.
#[derive(Clone, Debug)]
pub enum Transport {
    /// Single-node mode: the in-process queue, shard files under `blob_dir`, and `workers`
    /// workers in this process.
    Embedded { blob_dir: PathBuf, workers: usize },
    /// Cluster mode: JetStream work queues and object store; workers run as their own
    /// processes (`rewind worker`).
    Nats(Box<NatsSettings>),
}

/// Everything a coordinator needs to start.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub state_dir: PathBuf,
    pub transport: Transport,
    pub policy: QueuePolicy,
    pub engine: EngineSettings,
    pub scheduler: SchedulerSettings,
    /// Bytes of shards each embedded worker's cache keeps (they share one cache).
    pub cache_bytes: u64,
    /// Settings of embedded workers (their name gets a number).
    pub worker: WorkerSettings,
}

/// Why a node cannot start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Nats(#[from] nats::NatsError),
    #[error(transparent)]
    Queue(#[from] rewind_worker::queue::QueueError),
    #[error("blob store: {0}")]
    Blobs(#[from] rewind_common::snapshot::store::StoreError),
    #[error(transparent)]
    Budget(#[from] rewind_worker::budget::BudgetError),
}

/// A transport's queue and blob store, and (cluster) the NATS connection under them.
pub struct Connected {
    pub queue: Arc<dyn WorkQueue>,
    pub blobs: Arc<dyn BlobStore>,
    /// The tenants' write budgets and the jobs' stop signals, shared by every process.
    pub budgets: Arc<dyn WriteBudgets>,
    pub nats: Option<async_nats::Client>,
}

pub async fn connect_transport(
    transport: &Transport,
    policy: &QueuePolicy,
) -> Result<Connected, NodeError> {
    Ok(match transport {
        Transport::Embedded { blob_dir, .. } => Connected {
            queue: Arc::new(MemoryQueue::new(policy.clone())?),
            blobs: Arc::new(LocalBlobs::new(LocalShardStore::open(blob_dir)?)),
            budgets: Arc::new(MemoryBudgets::new()),
            nats: None,
        },
        Transport::Nats(settings) => {
            let (client, js) = nats::connect(settings.as_ref()).await?;
            let queue = JetStreamQueue::start(client.clone(), js.clone(), policy.clone()).await?;
            let budgets = JetStreamBudgets::new(&js).await?;
            Connected {
                queue: Arc::new(queue),
                blobs: Arc::new(JetStreamBlobs::new(js)),
                budgets: Arc::new(budgets),
                nats: Some(client),
            }
        }
    })
}

/// Sends what the client still holds, then closes its subscriptions and the connection, so
/// that nothing is lost on exit and the client stops reconnecting to a server that goes away.
async fn close_nats(client: Option<async_nats::Client>) {
    let Some(client) = client else {
        return;
    };
    if let Err(e) = client.flush().await {
        tracing::warn!(error = %e, "cannot flush the NATS connection on shutdown");
    }
    if let Err(e) = client.drain().await {
        tracing::warn!(error = %e, "cannot drain the NATS connection on shutdown");
    }
}

/// A running coordinator (and, in single-node mode, its workers).
pub struct Node {
    engine: Engine,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    cache: Option<Arc<ShardCache>>,
    nats: Option<async_nats::Client>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("engine", &self.engine)
            .finish()
    }
}

impl Node {
    /// Opens the state, connects the transport, resumes open jobs, then runs the engine, the
    /// scheduler and (single-node) the workers until [`Node::shutdown`].
    pub async fn start(config: NodeConfig, key: SecretKey) -> Result<Node, NodeError> {
        let state = State::open(&config.state_dir)?;
        let Connected {
            queue,
            blobs,
            budgets,
            nats,
        } = connect_transport(&config.transport, &config.policy).await?;
        let engine = Engine::new(state, queue.clone(), blobs.clone(), config.engine.clone())?
            .with_budgets(budgets.clone());
        let gates: Arc<dyn GateMaker> = Arc::new(BudgetGates::new(budgets));
        let (shutdown, watch_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut cache = None;
        if let Transport::Embedded { workers, .. } = &config.transport {
            let shared = Arc::new(ShardCache::new(config.cache_bytes));
            let key = Arc::new(key.clone());
            for i in 0..*workers {
                let mut settings = config.worker.clone();
                settings.name = format!("{}-{}", config.worker.name, i + 1);
                let worker = Worker::new(
                    queue.clone(),
                    blobs.clone(),
                    shared.clone(),
                    key.clone(),
                    settings,
                )
                .with_gates(gates.clone());
                let rx = watch_rx.clone();
                tasks.push(tokio::spawn(async move { worker.run(rx).await }));
            }
            cache = Some(shared);
        }
        let resumed = engine.resume_open_jobs().await?;
        if resumed > 0 {
            tracing::info!(resumed, "open jobs resumed");
        }
        {
            let engine = engine.clone();
            let rx = watch_rx.clone();
            tasks.push(tokio::spawn(async move { engine.run(rx).await }));
        }
        {
            let engine = engine.clone();
            let rx = watch_rx.clone();
            let settings = config.scheduler.clone();
            tasks.push(tokio::spawn(async move {
                scheduler::run(engine, settings, rx).await
            }));
        }
        Ok(Node {
            engine,
            shutdown,
            tasks,
            cache,
            nats,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The embedded workers' shared cache (single-node mode).
    pub fn cache(&self) -> Option<&Arc<ShardCache>> {
        self.cache.as_ref()
    }

    /// Stops everything at once, as a crash would: tasks are aborted where they are, nothing
    /// more is flushed (what is durable is what every transition already flushed). For tests
    /// of recovery after a coordinator dies.
    pub fn abort(self) {
        for t in &self.tasks {
            t.abort();
        }
    }

    /// Stops pulling, lets tasks in hand finish (or gives them back), flushes the state.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        if let Err(e) = self.engine.state().flush().await {
            tracing::warn!(error = %e, "cannot flush the state on shutdown");
        }
        close_nats(self.nats).await;
    }
}

/// A worker process's settings (`rewind worker`).
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub nats: NatsSettings,
    pub policy: QueuePolicy,
    pub cache_bytes: u64,
    pub worker: WorkerSettings,
}

/// Runs one cluster worker until `shutdown` turns true.
pub async fn run_worker(
    config: WorkerConfig,
    key: SecretKey,
    shutdown: watch::Receiver<bool>,
) -> Result<(), NodeError> {
    let Connected {
        queue,
        blobs,
        budgets,
        nats,
    } = connect_transport(
        &Transport::Nats(Box::new(config.nats.clone())),
        &config.policy,
    )
    .await?;
    let cache = Arc::new(ShardCache::new(config.cache_bytes));
    let worker = Worker::new(queue, blobs, cache, Arc::new(key), config.worker)
        .with_gates(Arc::new(BudgetGates::new(budgets)));
    worker.run(shutdown).await;
    close_nats(nats).await;
    Ok(())
}

/// The default cache size of a worker: 1.5 GiB of shards (a million-object tenant's backup
/// and live snapshot are about 260 MB each).
pub const DEFAULT_CACHE_BYTES: u64 = 1536 << 20;

/// How often the scheduler looks at the tenants by default.
pub const DEFAULT_SCHEDULER_TICK: Duration = Duration::from_secs(15);
