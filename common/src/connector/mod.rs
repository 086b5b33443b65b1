//! The Microsoft Graph connector (blocking): client-credentials authentication with a cached
//! token, requests with classified errors and bounded retries (exponential backoff with jitter,
//! `Retry-After` honoured), tenant capture into snapshot shards ([`capture`]) and the recovery
//! writes in `$batch` with idempotent interpretation of every answer ([`write`]).
//!
//! Nothing here is async: workers call it from their own threads or from `spawn_blocking`.

pub mod capture;
pub mod error;
pub mod gate;
mod http;
pub mod write;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::properties::Api;

pub use capture::{capture_snapshot, CaptureStats};
pub use error::{ConnectorError, ErrorClass};
pub use gate::{GateClosed, OpenGate, WriteClass, WriteGate};
pub use write::{planned_calls, write_class, PlannedCall, StepOutcome, StepResult};

/// A secret that never shows in `Debug` or `Display` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

/// How to reach and authenticate to one tenant's Graph, and how patient to be.
#[derive(Clone, Debug)]
pub struct GraphSettings {
    /// The token authority; the token endpoint is `{authority}/{tenant}/oauth2/v2.0/token`.
    pub authority: String,
    /// The Graph v1.0 base URL, e.g. `https://host/v1.0` (no trailing slash needed); the beta
    /// base is derived from it (its trailing `/v1.0` replaced by `/beta`).
    pub graph_base: String,
    pub tenant: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// The scope asked for in the token request.
    pub scope: String,
    pub connect_timeout: Duration,
    /// The whole-request timeout (a page of 999 objects included).
    pub request_timeout: Duration,
    /// Attempts of one request (or one inner batch request) before a transient failure is
    /// given up on; at least 1.
    pub max_attempts: u32,
    /// The first backoff delay (doubled per attempt, with jitter) when no `Retry-After` is given.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// The longest `Retry-After` honoured as given: a longer one (however large) is cut to
    /// this. Default 5 minutes.
    pub max_retry_after: Duration,
    /// A token is renewed this long before it expires (or at half its lifetime, if that is
    /// sooner). One thread renews it while the others go on with it until it expires.
    pub token_refresh_margin: Duration,
    /// `$top` of collection reads (at most 999).
    pub page_size: u32,
    /// Threads that read the links of a page of groups or service principals concurrently.
    pub link_threads: usize,
    /// Threads per collection that decode its pages (and read their links) while the next
    /// page is being fetched.
    pub decode_threads: usize,
    /// Whether a capture reads each user's per-user MFA state. Graph holds it only on each
    /// user's beta `authentication/requirements`, with no listing: one more request per user
    /// (20 to a `$batch`), which costs a million-object capture a third to a half more time
    /// and, against a real tenant, about 1 resource unit of the read budget per user. Default
    /// on (a backup holds every recoverable property); off, the snapshot records that it lacks
    /// the state, and reports involving it never compare it.
    pub per_user_mfa_state: bool,
    /// The longest answer read (a page, a `$batch`): a longer one is refused. Default 32 MiB
    /// (a page of 999 users with every kept property is a few MiB).
    pub max_page_bytes: u64,
    /// The longest token answer read. Default 1 MiB (real ones are a few KiB).
    pub max_token_bytes: u64,
    /// The most pages one listing may have before it is refused as endless. Default 100,000
    /// (100 million objects at `$top=999`).
    pub max_listing_pages: u64,
}

impl GraphSettings {
    /// Settings with the default timeouts, retries and sizes.
    pub fn new(
        authority: impl Into<String>,
        graph_base: impl Into<String>,
        tenant: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<Secret>,
    ) -> Self {
        Self {
            authority: authority.into(),
            graph_base: graph_base.into(),
            tenant: tenant.into(),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            scope: "https://graph.microsoft.com/.default".into(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(120),
            max_attempts: 8,
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(300),
            token_refresh_margin: Duration::from_secs(300),
            page_size: 999,
            link_threads: 4,
            decode_threads: 2,
            per_user_mfa_state: true,
            max_page_bytes: 32 << 20,
            max_token_bytes: 1 << 20,
            max_listing_pages: 100_000,
        }
    }

    fn token_url(&self) -> String {
        format!(
            "{}/{}/oauth2/v2.0/token",
            self.authority.trim_end_matches('/'),
            self.tenant
        )
    }

    fn base(&self) -> &str {
        self.graph_base.trim_end_matches('/')
    }

    /// The base URL of `api`: the v1.0 base, or for beta the same with `/beta` for its
    /// trailing `/v1.0` (`None` when the base does not end with `/v1.0`).
    fn base_at(&self, api: Api) -> Option<String> {
        match api {
            Api::V1 => Some(self.base().to_owned()),
            Api::Beta => self
                .base()
                .strip_suffix("/v1.0")
                .map(|root| format!("{root}/beta")),
        }
    }
}

/// A bearer token, when to renew it and until when it can still be used.
struct CachedToken {
    value: String,
    renew_at: Instant,
    expires_at: Instant,
}

/// The cached token, and whether a thread is asking for a new one (then no other does).
#[derive(Default)]
struct TokenCache {
    current: Option<CachedToken>,
    renewing: bool,
}

/// Request and byte counts of a connector since it was made.
#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    bytes: AtomicU64,
    token_requests: AtomicU64,
}

/// Totals of a connector's traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrafficTotals {
    /// Graph requests sent (a `$batch` counts once; retries count).
    pub requests: u64,
    /// Response body bytes read.
    pub bytes: u64,
    /// Token requests sent.
    pub token_requests: u64,
}

/// A blocking Graph client of one tenant: one connection pool, one cached token. Share it by
/// reference between threads.
pub struct GraphConnector {
    settings: GraphSettings,
    /// The beta base URL, derived from the v1.0 one.
    beta_base: String,
    agent: ureq::Agent,
    token: Mutex<TokenCache>,
    /// Signalled when a token request ends (with a token or not).
    token_renewed: Condvar,
    counters: Counters,
    /// Page buffers handed back after decoding, so that a megabyte page does not take fresh
    /// (zeroed) memory from the system every time.
    spare_pages: Mutex<Vec<Vec<u8>>>,
}

/// Spare page buffers kept for reuse at most.
const SPARE_PAGES: usize = 16;

impl fmt::Debug for GraphConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GraphConnector")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl GraphConnector {
    pub fn new(settings: GraphSettings) -> Result<Self, ConnectorError> {
        if settings.max_attempts == 0 {
            return Err(ConnectorError::Settings(
                "max_attempts must be at least 1".into(),
            ));
        }
        if settings.page_size == 0 || settings.page_size > 999 {
            return Err(ConnectorError::Settings(
                "page_size must be between 1 and 999".into(),
            ));
        }
        if settings.graph_base.is_empty() || settings.authority.is_empty() {
            return Err(ConnectorError::Settings(
                "authority and graph_base are required".into(),
            ));
        }
        let beta_base = settings.base_at(Api::Beta).ok_or_else(|| {
            ConnectorError::Settings(
                "graph_base must end with /v1.0 (the beta base is derived from it)".into(),
            )
        })?;
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(settings.connect_timeout))
            .timeout_global(Some(settings.request_timeout))
            .max_idle_connections_per_host(
                settings.link_threads.max(1) * settings.decode_threads.max(1) * 3 + 8,
            )
            .build()
            .into();
        Ok(Self {
            settings,
            beta_base,
            agent,
            token: Mutex::new(TokenCache::default()),
            token_renewed: Condvar::new(),
            counters: Counters::default(),
            spare_pages: Mutex::new(Vec::new()),
        })
    }

    pub fn settings(&self) -> &GraphSettings {
        &self.settings
    }

    /// A page buffer: a spare one, or a new one.
    pub(crate) fn page_buffer(&self) -> Vec<u8> {
        self.spare_pages
            .lock()
            .ok()
            .and_then(|mut spare| spare.pop())
            .unwrap_or_default()
    }

    /// Hands a page buffer back for reuse.
    pub(crate) fn recycle_page(&self, mut buffer: Vec<u8>) {
        buffer.clear();
        if let Ok(mut spare) = self.spare_pages.lock() {
            if spare.len() < SPARE_PAGES {
                spare.push(buffer);
            }
        }
    }

    /// Requests, bytes and token requests so far.
    pub fn traffic(&self) -> TrafficTotals {
        TrafficTotals {
            requests: self.counters.requests.load(Ordering::Relaxed),
            bytes: self.counters.bytes.load(Ordering::Relaxed),
            token_requests: self.counters.token_requests.load(Ordering::Relaxed),
        }
    }

    /// Checks the credentials now (gets a token); a wrong secret is a permanent
    /// [`ConnectorError::Auth`].
    pub fn authenticate(&self) -> Result<(), ConnectorError> {
        self.bearer().map(|_| ())
    }

    /// The absolute URL of a Graph v1.0 path (`/users`) or an absolute URL as given.
    pub(crate) fn url(&self, path: &str) -> String {
        self.url_at(Api::V1, path)
    }

    /// The absolute URL of a path of `api`, or an absolute URL as given.
    pub(crate) fn url_at(&self, api: Api, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            return path.to_owned();
        }
        match api {
            Api::V1 => format!("{}{}", self.settings.base(), path),
            Api::Beta => format!("{}{}", self.beta_base, path),
        }
    }
}
