//! `dirsim`, the tenant simulator: an HTTP server that serves many Entra ID tenants in the
//! Microsoft Graph dialect (`shared/spec/graph-dialect.md`), faithful enough that a real Graph
//! client works unchanged against `http://host:port/{tenant}/v1.0` (and `.../beta`),
//! authenticating at `http://host:port/{tenant}/oauth2/v2.0/token` (client credentials, with
//! any of the tenant's app registrations: its primary app or an added one, each with its own
//! secret only; a token remembers its app). A tenant is addressed by its name or by its
//! organization id.
//!
//! # Graph routes (relative to `/{tenant}/v1.0`, and the same under `/{tenant}/beta`)
//! Each version has its own property names (`rewind_common::graph_names`): a `$select` naming a
//! property the resource lacks in that version is 400 `BadRequest`, a write body naming one 400
//! `Request_BadRequest` (`perUserMfaState` is on no type; `publisherName` of service principals
//! only in beta; the organization's legacy MFA settings in neither). Every spelling Graph
//! accepts of a cast or an operation is routed: `graph.user` as `microsoft.graph.user`,
//! `delta()`, `microsoft.graph.delta()` and `graph.delta()` as `delta`, and the actions
//! `getByIds` and `restore` with their namespace (`microsoft.graph.restore`), without
//! parentheses.
//! - Beta only: `GET|PATCH /users/{id}/authentication/requirements` (the user's
//!   `strongAuthenticationRequirements`: `{"perUserMfaState": "disabled|enabled|enforced"}`,
//!   `disabled` unless set; PATCH 204, synced users too).
//! - `GET /users`, `/groups`, `/applications`, `/servicePrincipals` (paged by id, `$top` ≤ 999,
//!   `$select`, `$filter` `id eq`, `id in (≤15)`, `prop eq 'value'`), `POST` to create; `GET`,
//!   `PATCH` (partial, 204), `DELETE` (soft, 204) on `/{collection}/{id}`; `GET /{collection}/delta`.
//! - `GET /groups/{id}/members|owners`, `POST .../members|owners/$ref`,
//!   `DELETE .../members|owners/{memberId}/$ref` (owners of applications and service principals too).
//! - `GET /users/{id}/memberOf` (the groups holding the user as a direct member) and
//!   `GET /users/{id}/appRoleAssignments` (the assignments whose principal is the user).
//! - `GET|POST /servicePrincipals/{id}/appRoleAssignedTo`, `GET|DELETE .../{assignmentId}`.
//! - `GET|POST /oauth2PermissionGrants`, `GET|PATCH|DELETE /oauth2PermissionGrants/{id}`
//!   (admin consent only; held as links of the client service principal).
//! - `/identity/conditionalAccess/policies|namedLocations` (GET, POST, and GET/PATCH/DELETE by
//!   id), their recycle bin `/identity/conditionalAccess/deletedItems/policies|namedLocations`
//!   (GET, GET/DELETE by id, `POST .../{id}/restore`).
//! - `GET|PATCH /policies/authenticationMethodsPolicy` (and each method configuration at
//!   `.../authenticationMethodConfigurations/{id}`), `/policies/authorizationPolicy`;
//!   `GET /organization`, `GET|PATCH /organization/{id}`.
//! - `GET /directory/deletedItems/microsoft.graph.{user,group,application,servicePrincipal}`,
//!   `GET|DELETE /directory/deletedItems/{id}`, `POST /directory/deletedItems/{id}/restore`
//!   (400 `Request_BadRequest` when an active object holds one of its unique values, or when
//!   it is a service principal whose application, by `appId`, is in the recycle bin; the
//!   message names the property or the application).
//! - `POST /directoryObjects/getByIds` (≤ 1000 ids), `GET /directoryObjects/{id}`, `POST /$batch`
//!   (≤ 20 requests, `dependsOn`, 424).
//!
//! # Lifecycle
//! Soft-deleted objects keep id, properties and links, and are purged after
//! `purge_after_days` (30) days of the simulated clock. Objects synced from on-premises refuse
//! cloud writes of synced properties (400). Dynamic groups (`membershipRule`, see [`Rule`]) are
//! recomputed by the simulator whenever a user changes.
//!
//! # Admin routes
//! - `POST /_admin/tenants` `{"tenant","clientId","clientSecret","organizationId"?}` (the
//!   tenant's primary app), `GET /_admin/tenants`. A tenant's summary (both answers) is
//!   `{"tenant","clientId","apps","organizationId","objects"}`, `clientId` the primary app's
//!   and `apps` every app's client id, the primary first.
//! - `POST /_admin/tenants/{tenant}/apps` `{"clientId","clientSecret"}`: adds an app
//!   registration (saved in the state file), 201 with the tenant's summary; 409 when the
//!   client id is already one of the tenant's apps, 400 for a body that is not an object or
//!   lacks a non-empty `clientId` or `clientSecret` (the message names it), 404 for an unknown
//!   tenant. [`add_app`] is its client.
//! - `POST /_admin/tenants/{tenant}/objects`: JSON Lines of Graph-shaped objects, each with a
//!   `type` (`user`, `group`, ..., or an `@odata.type`), links under `members`, `owners`,
//!   `oauth2PermissionGrants`, `appRoleAssignedTo` (see `rewind_common::graph_json`).
//! - `PATCH /_admin/tenants/{tenant}/objects/{id}`: a change made by on-premises sync (may touch
//!   synced properties; `onPremisesSyncEnabled` moves the source of authority).
//! - `GET|PATCH /_admin/settings` ([`Settings`], snake_case fields).
//! - `GET|POST /_admin/clock` (`{"set"}`, `{"setTime"}`, `{"advanceSecs"}`, `{"advanceDays"}`).
//! - `GET /_admin/counters` (JSON) and `GET /metrics` (Prometheus text, `rewind_dirsim_*`).
//!   The JSON holds, per tenant under `tenants.{tenant}`, `maxWritesPerSecond` and
//!   `maxConditionalAccessWritesPerSecond`: the most write requests *admitted* (not answered
//!   429 or 503 by throttling or fault injection) in any **sliding** 1-second window (any
//!   two admissions less than a second apart share one), since the tenant was created or
//!   its write log cleared, all its apps together; conditional access writes count in both.
//!   `tenants.{tenant}.apps.{clientId}` holds the same two maxima for each app alone (zeros
//!   for an app that has not written). The per-app write limit
//!   (`app_write_requests_per_window`, in the window of the tenant-wide one) answers 429
//!   with a Retry-After, counted as `throttled.app_write`. Every 429 carries Graph's
//!   `x-ms-throttle-scope: <Scope>/<Limit>/<clientId>/<tenant>`: `Tenant_Application` for the
//!   read and per-app limits (and injected 429s), `Tenant` for the tenant-wide ones.
//! - `GET /_admin/tenants/{tenant}/writes?after=N&top=M` (`after` default 0, `top` default
//!   1000, at most 10000): the tenant's write log, `{"value":[records],"last":seq,"first":seq}`,
//!   the records with a seq above `after`, oldest first; `last` is the newest record's seq
//!   (0 when none), `first` the oldest one held. One record ([`WriteRecord`]) per directory
//!   write request answered (POST, PATCH, DELETE on Graph routes, each inner request of a
//!   `$batch`, a 424 for a failed dependency included; not GETs, not `getByIds`, not the
//!   `$batch` POST itself, not the token endpoint, not `/_admin/*`): `seq` (dense from 1),
//!   `atMs` (the real wall clock in ms since the Unix epoch, not the simulated clock, taken
//!   after the change and before the answer), `method`, `path` (the canonical segments with
//!   their ids, relative to the version: `/users/{id}`), `version` (`v1.0`, `beta`),
//!   `bodyDigest` (blake3 hex of the body's canonical JSON, keys sorted, no whitespace; null
//!   without a body), `status` (injected 429/503 included), `changed` (whether the tenant's
//!   state changed: false for every non-2xx answer and for a success that changed nothing,
//!   such as a PATCH writing the values already there) and `clientId` (the app whose token
//!   made the request; for an inner request of a `$batch`, the batch's token). The log keeps the newest
//!   [`WRITE_LOG_CAPACITY`] (2,000,000) records, dropping the oldest past it (`first` then
//!   says from which seq it holds records); it is not saved in the state file. Requests
//!   refused before the Graph handler sees them are not logged: unauthenticated ones, an
//!   unreadable query string or JSON body, a `$batch` refused as a whole (more than 20
//!   requests, a `dependsOn` cycle), an inner request without a method or url, and
//!   connections dropped on purpose.
//! - `DELETE /_admin/tenants/{tenant}/writes`: empties the log (seqs start again from 1) and
//!   resets the tenant's per-second maxima (204). [`write_log`] reads every page after a seq.
//! - `POST /_admin/save` (to the state file given at start).

mod dynamic;
mod error;
mod graph;
mod metrics;
mod persist;
mod rule;
mod server;
mod settings;
mod state;
mod store;
mod throttle;
mod writelog;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub(crate) use dynamic::DynamicGroups;
pub use error::GraphError;
pub use persist::PersistError;
pub use rule::{Rule, RuleError};
pub use settings::Settings;
pub use store::ObjectMap;
pub use writelog::{
    add_app, write_log, AddAppError, WriteLogError, WritePage, WriteRecord, WRITE_LOG_CAPACITY,
};

use state::App;

/// The `dirsim` command line.
#[derive(Debug, Clone, clap::Args)]
pub struct DirsimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8787")]
    pub listen: SocketAddr,
    /// State file: loaded at start when it exists, saved on shutdown and on `POST /_admin/save`.
    #[arg(long)]
    pub state: Option<PathBuf>,
    #[command(flatten)]
    pub settings: Settings,
}

/// How to start a simulator.
#[derive(Debug, Clone)]
pub struct DirsimConfig {
    pub listen: SocketAddr,
    pub state: Option<PathBuf>,
    /// Initial settings (a loaded state file's settings replace them).
    pub settings: Settings,
}

impl Default for DirsimConfig {
    /// Bound to `127.0.0.1:0`, no state file, default settings.
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            state: None,
            settings: Settings::default(),
        }
    }
}

impl From<DirsimArgs> for DirsimConfig {
    fn from(a: DirsimArgs) -> Self {
        Self {
            listen: a.listen,
            state: a.state,
            settings: a.settings,
        }
    }
}

/// Why the simulator could not start, save or stop.
#[derive(Debug, thiserror::Error)]
pub enum DirsimError {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Persist(#[from] PersistError),
    #[error("the simulator was started without a state file")]
    NoStateFile,
    #[error("server task failed: {0}")]
    Task(String),
}

/// A running simulator. Dropping it stops the server (without saving).
#[derive(Debug)]
pub struct Running {
    base_url: String,
    app: Arc<App>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Running {
    /// `http://127.0.0.1:port` (tenants live under `/{tenant}/v1.0`).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Saves the state file now; returns how many objects were saved.
    pub async fn save(&self) -> Result<u64, DirsimError> {
        let path = self
            .app
            .state_path
            .clone()
            .ok_or(DirsimError::NoStateFile)?;
        let app = self.app.clone();
        tokio::task::spawn_blocking(move || persist::save(&app, &path))
            .await
            .map_err(|e| DirsimError::Task(e.to_string()))?
            .map_err(DirsimError::from)
    }

    /// Stops serving (in-flight requests finish first).
    pub async fn stop(mut self) -> Result<(), DirsimError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .map_err(|e| DirsimError::Task(e.to_string()))?
                .map_err(|e| DirsimError::Task(e.to_string()))?;
        }
        Ok(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Starts a simulator on the current tokio runtime (loading the state file if it exists).
pub async fn spawn(config: DirsimConfig) -> Result<Running, DirsimError> {
    let app = App::new(config.settings.clone(), config.state.clone());
    if let Some(path) = config.state.clone().filter(|p| p.exists()) {
        let loaded = tokio::task::spawn_blocking(move || persist::load(&path))
            .await
            .map_err(|e| DirsimError::Task(e.to_string()))??;
        app.set_clock_offset(loaded.clock_offset);
        *state::write(&app.settings) = loaded.settings;
        for t in loaded.tenants {
            app.insert_tenant(t);
        }
    }
    let app = Arc::new(app);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| DirsimError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| DirsimError::Bind {
        addr: config.listen,
        source,
    })?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let router = server::router(app.clone());
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
    });
    Ok(Running {
        base_url: format!("http://{addr}"),
        app,
        shutdown: Some(tx),
        task: Some(task),
    })
}

/// Serves until Ctrl-C or SIGTERM, printing the base URL on stdout first; saves the state
/// file (if one was given) on the way out.
pub fn run(args: DirsimArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let has_state = args.state.is_some();
        let running = spawn(args.into()).await?;
        println!("{}", running.base_url());
        shutdown_signal().await;
        if has_state {
            let saved = running.save().await?;
            tracing::info!(saved, "dirsim state saved");
        }
        running.stop().await?;
        Ok(())
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
