//! Each tenant's write log and per-second write counters: one record per directory write
//! request answered (inner requests of a `$batch` included), served by
//! `GET /_admin/tenants/{tenant}/writes`, and the largest number of writes admitted in any
//! sliding 1-second window (for the tenant, and for each of its apps), served in
//! `/_admin/counters`; plus the clients tests use: [`write_log`] reads the log, [`add_app`]
//! adds an app registration to a tenant.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::Method;
use rewind_common::properties::Api;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::state::AppIndex;

/// The newest records a tenant's log keeps; past it the oldest are dropped (and
/// `GET .../writes` says from which `seq` it holds records). A record takes about 150 bytes
/// (its path included), so a full log holds about 300 MB.
pub const WRITE_LOG_CAPACITY: usize = 2_000_000;

/// The most records one `GET .../writes` answers (`top`), and its default.
pub const MAX_TOP: usize = 10_000;
pub const DEFAULT_TOP: usize = 1_000;

/// One directory write request as the simulator answered it (the JSON of
/// `GET /_admin/tenants/{tenant}/writes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteRecord {
    /// Dense from 1 per tenant (again from 1 after the log is cleared).
    pub seq: u64,
    /// The simulator's real wall clock (not the simulated clock) when the answer was logged,
    /// after any change was applied and before the answer was sent: ms since the Unix epoch.
    pub at_ms: i64,
    pub method: String,
    /// The path as routed, relative to the version (canonical segments, real ids):
    /// `/users/{id}`, `/groups/{id}/members/$ref`.
    pub path: String,
    /// `v1.0` or `beta`.
    pub version: String,
    /// The blake3 hex digest of the canonical JSON body (keys sorted, no whitespace), or null.
    pub body_digest: Option<String>,
    /// The HTTP status answered (injected 429 and 503 included).
    pub status: u16,
    /// Whether the request changed the tenant's state (false for every non-2xx answer).
    pub changed: bool,
    /// The client id of the app whose token made the request (for an inner request of a
    /// `$batch`, the batch's token).
    pub client_id: String,
}

/// A page of the log as `GET .../writes` answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WritePage {
    pub value: Vec<WriteRecord>,
    /// The seq of the newest record (0 when none was logged since the log was cleared).
    pub last: u64,
    /// The seq of the oldest record held (`last + 1` when none is held): older ones were
    /// dropped past [`WRITE_LOG_CAPACITY`].
    pub first: u64,
}

/// One logged write, as kept (the record's only allocation is its path).
#[derive(Debug)]
struct Entry {
    seq: u64,
    at_ms: i64,
    method: Method,
    path: Box<str>,
    api: Api,
    digest: Option<[u8; 32]>,
    status: u16,
    changed: bool,
    app: AppIndex,
}

impl Entry {
    /// The record, naming its app by `client_ids` (the tenant's, by [`AppIndex`]).
    fn record(&self, client_ids: &[String]) -> WriteRecord {
        WriteRecord {
            seq: self.seq,
            at_ms: self.at_ms,
            method: self.method.as_str().to_owned(),
            path: self.path.to_string(),
            version: self.api.segment().to_owned(),
            body_digest: self
                .digest
                .map(|d| blake3::Hash::from(d).to_hex().to_string()),
            status: self.status,
            changed: self.changed,
            client_id: client_ids
                .get(usize::from(self.app))
                .cloned()
                .unwrap_or_default(),
        }
    }
}

/// A write request to log: what [`WriteLog::append`] takes.
#[derive(Debug)]
pub struct LoggedWrite<'a> {
    pub method: &'a Method,
    /// The canonical path segments, relative to the version.
    pub segments: &'a [String],
    pub api: Api,
    pub body: Option<&'a Json>,
    pub status: u16,
    pub changed: bool,
    /// The app whose token made the request.
    pub app: AppIndex,
}

/// The writes admitted in the last second, and the most there ever were.
#[derive(Debug, Default)]
struct SlidingWindow {
    admitted: VecDeque<Instant>,
    max: u64,
}

impl SlidingWindow {
    /// Counts a write admitted at `now`: the window is `(now - 1s, now]`.
    fn admit(&mut self, now: Instant) {
        while self
            .admitted
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= Duration::from_secs(1))
        {
            self.admitted.pop_front();
        }
        self.admitted.push_back(now);
        self.max = self.max.max(self.admitted.len() as u64);
    }
}

/// The per-second maxima of one set of writers: all writes, conditional access writes alone.
#[derive(Debug, Default)]
struct Maxima {
    writes: SlidingWindow,
    conditional_access: SlidingWindow,
}

impl Maxima {
    fn admit(&mut self, conditional_access: bool, now: Instant) {
        self.writes.admit(now);
        if conditional_access {
            self.conditional_access.admit(now);
        }
    }

    fn max(&self) -> (u64, u64) {
        (self.writes.max, self.conditional_access.max)
    }
}

/// One tenant's write log and write counters (behind the tenant's own mutex).
#[derive(Debug)]
pub struct WriteLog {
    entries: VecDeque<Entry>,
    last: u64,
    capacity: usize,
    /// All the tenant's apps together.
    tenant: Maxima,
    /// Each app's own, by [`AppIndex`] (grown when an app first writes).
    apps: Vec<Maxima>,
}

impl Default for WriteLog {
    fn default() -> Self {
        Self::with_capacity(WRITE_LOG_CAPACITY)
    }
}

impl WriteLog {
    /// A log keeping at most `capacity` records (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            last: 0,
            capacity: capacity.max(1),
            tenant: Maxima::default(),
            apps: Vec::new(),
        }
    }

    /// Counts a write request of app `app` admitted (neither throttled nor refused by an
    /// injected fault) at `now`, for the tenant and for the app; conditional access writes
    /// count in both maxima of each.
    pub fn admitted(&mut self, conditional_access: bool, app: AppIndex, now: Instant) {
        self.tenant.admit(conditional_access, now);
        let i = usize::from(app);
        if self.apps.len() <= i {
            self.apps.resize_with(i + 1, Maxima::default);
        }
        self.apps[i].admit(conditional_access, now);
    }

    /// The most writes admitted in any sliding 1-second window since the tenant was created
    /// or the log cleared, all apps together: all writes, and conditional access writes alone.
    pub fn max_per_second(&self) -> (u64, u64) {
        self.tenant.max()
    }

    /// The same maxima for app `app` alone (zeros for an app that has not written).
    pub fn app_max_per_second(&self, app: AppIndex) -> (u64, u64) {
        self.apps.get(usize::from(app)).map_or((0, 0), Maxima::max)
    }

    /// Logs an answered write; returns its seq.
    pub fn append(&mut self, w: LoggedWrite<'_>) -> u64 {
        let len = w.segments.iter().map(|s| s.len() + 1).sum::<usize>().max(1);
        let mut path = String::with_capacity(len);
        for s in w.segments {
            path.push('/');
            path.push_str(s);
        }
        if path.is_empty() {
            path.push('/');
        }
        self.last += 1;
        if self.entries.len() >= self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back(Entry {
            seq: self.last,
            at_ms: now_ms(),
            method: w.method.clone(),
            path: path.into_boxed_str(),
            api: w.api,
            digest: w.body.map(canonical_digest),
            status: w.status,
            changed: w.changed,
            app: w.app,
        });
        self.last
    }

    /// At most `top` records with a seq above `after`, oldest first; `client_ids` are the
    /// tenant's, by [`AppIndex`].
    pub fn page(&self, after: u64, top: usize, client_ids: &[String]) -> WritePage {
        let first = self.entries.front().map_or(self.last + 1, |e| e.seq);
        // Seqs are dense, so the first record above `after` is found by position.
        let skip =
            usize::try_from(after.saturating_add(1).saturating_sub(first)).unwrap_or(usize::MAX);
        WritePage {
            value: self
                .entries
                .iter()
                .skip(skip)
                .take(top)
                .map(|e| e.record(client_ids))
                .collect(),
            last: self.last,
            first,
        }
    }

    /// Empties the log (seqs start again from 1) and resets the per-second maxima; returns
    /// the old log, to be dropped once the lock is released (up to millions of paths).
    #[must_use = "drop the old log outside the lock"]
    pub fn clear(&mut self) -> WriteLog {
        std::mem::replace(self, Self::with_capacity(self.capacity))
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The blake3 digest of a JSON value's canonical text: object keys sorted, no whitespace,
/// strings and numbers as serde_json writes them.
pub fn canonical_digest(value: &Json) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    write_canonical(value, &mut hasher);
    *hasher.finalize().as_bytes()
}

fn write_canonical(value: &Json, out: &mut blake3::Hasher) {
    match value {
        Json::Array(items) => {
            out.update(b"[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.update(b",");
                }
                write_canonical(item, out);
            }
            out.update(b"]");
        }
        Json::Object(map) => {
            let mut entries: Vec<(&String, &Json)> = map.iter().collect();
            // serde_json's map is ordered by key unless `preserve_order` is on somewhere.
            if !entries.is_sorted_by(|a, b| a.0 <= b.0) {
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            }
            out.update(b"{");
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.update(b",");
                }
                // Writing a string into a hasher cannot fail.
                let _ = serde_json::to_writer(&mut *out, k);
                out.update(b":");
                write_canonical(v, out);
            }
            out.update(b"}");
        }
        scalar => {
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}

/// Why the write log could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WriteLogError {
    #[error("reading the write log at {url}: {source}")]
    Unreachable {
        url: String,
        source: Box<ureq::Error>,
    },
    #[error("the simulator answered {status} for the write log at {url}: {body}")]
    Refused {
        url: String,
        status: u16,
        body: String,
    },
    #[error("the write log at {url} is not a page of records: {message}")]
    Malformed { url: String, message: String },
}

/// The blocking HTTP client of the admin routes: every status is an answer, a minute at most.
fn admin_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// Every record of `tenant`'s write log with a seq above `after`, oldest first, read from the
/// simulator at `base_url` (`http://host:port`) page by page. Blocking.
pub fn write_log(
    base_url: &str,
    tenant: &str,
    after: u64,
) -> Result<Vec<WriteRecord>, WriteLogError> {
    let agent = admin_agent();
    let root = base_url.trim_end_matches('/');
    let mut records = Vec::new();
    let mut after = after;
    loop {
        let url = format!("{root}/_admin/tenants/{tenant}/writes?after={after}&top={MAX_TOP}");
        let response = agent
            .get(&url)
            .call()
            .map_err(|source| WriteLogError::Unreachable {
                url: url.clone(),
                source: Box::new(source),
            })?;
        let status = response.status().as_u16();
        let body =
            response
                .into_body()
                .read_to_string()
                .map_err(|source| WriteLogError::Unreachable {
                    url: url.clone(),
                    source: Box::new(source),
                })?;
        if status != 200 {
            return Err(WriteLogError::Refused { url, status, body });
        }
        let page: WritePage =
            serde_json::from_str(&body).map_err(|e| WriteLogError::Malformed {
                url: url.clone(),
                message: e.to_string(),
            })?;
        let Some(newest) = page.value.last().map(|r| r.seq) else {
            return Ok(records);
        };
        let done = newest >= page.last;
        after = newest;
        records.extend(page.value);
        if done {
            return Ok(records);
        }
    }
}

/// Why an app could not be added to a tenant.
#[derive(Debug, thiserror::Error)]
pub enum AddAppError {
    #[error("adding an app at {url}: {source}")]
    Unreachable {
        url: String,
        source: Box<ureq::Error>,
    },
    #[error("the simulator answered {status} to adding app {client_id:?} at {url}: {body}")]
    Refused {
        url: String,
        client_id: String,
        status: u16,
        body: String,
    },
    #[error("adding an app: the blocking task failed: {0}")]
    Task(String),
}

/// Adds the app registration `client_id` with `secret` to `tenant` of the simulator at
/// `base_url` (`POST /_admin/tenants/{tenant}/apps`); its tokens then write as that app.
pub async fn add_app(
    base_url: &str,
    tenant: &str,
    client_id: &str,
    secret: &str,
) -> Result<(), AddAppError> {
    let url = format!(
        "{}/_admin/tenants/{tenant}/apps",
        base_url.trim_end_matches('/')
    );
    let body = serde_json::json!({"clientId": client_id, "clientSecret": secret});
    let client_id = client_id.to_owned();
    tokio::task::spawn_blocking(move || {
        let unreachable = |source| AddAppError::Unreachable {
            url: url.clone(),
            source: Box::new(source),
        };
        let response = admin_agent()
            .post(&url)
            .send_json(&body)
            .map_err(unreachable)?;
        let status = response.status().as_u16();
        if status == 201 {
            return Ok(());
        }
        let body = response.into_body().read_to_string().map_err(unreachable)?;
        Err(AddAppError::Refused {
            url,
            client_id,
            status,
            body,
        })
    })
    .await
    .map_err(|e| AddAppError::Task(e.to_string()))?
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    impl WriteLog {
        fn page_of_primary(&self, after: u64, top: usize) -> WritePage {
            self.page(after, top, &["app".to_owned()])
        }
    }

    fn log_one(log: &mut WriteLog, n: u64) -> u64 {
        let segments = vec!["users".to_owned(), n.to_string()];
        log.append(LoggedWrite {
            method: &Method::PATCH,
            segments: &segments,
            api: Api::V1,
            body: None,
            status: 204,
            changed: true,
            app: 0,
        })
    }

    #[test]
    fn keeps_the_newest_records_and_pages_by_seq() {
        let mut log = WriteLog::with_capacity(3);
        for n in 1..=5 {
            assert_eq!(log_one(&mut log, n), n);
        }
        let page = log.page_of_primary(0, 10);
        assert_eq!((page.first, page.last), (3, 5));
        let seqs: Vec<u64> = page.value.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [3, 4, 5]);
        assert_eq!(log.page_of_primary(3, 1).value[0].path, "/users/4");
        assert!(log.page_of_primary(5, 10).value.is_empty());
        drop(log.clear());
        let page = log.page_of_primary(0, 10);
        assert_eq!((page.first, page.last, page.value.len()), (1, 0, 0));
        assert_eq!(log_one(&mut log, 9), 1);
    }

    #[test]
    fn a_record_kept_is_small() {
        // The capacity's memory bound (about 150 bytes a record with its path) holds.
        assert!(
            std::mem::size_of::<Entry>() <= 96,
            "{}",
            std::mem::size_of::<Entry>()
        );
    }

    #[test]
    fn the_sliding_window_counts_writes_less_than_a_second_apart() {
        let mut log = WriteLog::default();
        let t0 = Instant::now();
        for ms in [0, 100, 999, 1000, 1500, 1998] {
            log.admitted(
                ms == 1500,
                (ms % 2) as AppIndex,
                t0 + Duration::from_millis(ms),
            );
        }
        // (0, 100, 999) and (999, 1000, 1500, 1998) are each under a second; app 0 wrote at
        // 0, 100, 1000, 1500 and 1998, app 1 at 999.
        assert_eq!(log.max_per_second(), (4, 1));
        assert_eq!(log.app_max_per_second(0), (3, 1));
        assert_eq!(log.app_max_per_second(1), (1, 0));
        assert_eq!(log.app_max_per_second(2), (0, 0));
    }

    #[test]
    fn the_digest_does_not_depend_on_key_order_or_spacing() {
        let a: Json = serde_json::from_str(r#"{"b": [1, {"y": 2, "x": "s"}], "a": null}"#).unwrap();
        let b: Json = serde_json::from_str(r#"{"a":null,"b":[1,{"x":"s","y":2}]}"#).unwrap();
        let c: Json = serde_json::from_str(r#"{"a":null,"b":[1,{"x":"t","y":2}]}"#).unwrap();
        assert_eq!(canonical_digest(&a), canonical_digest(&b));
        assert_ne!(canonical_digest(&a), canonical_digest(&c));
    }
}
