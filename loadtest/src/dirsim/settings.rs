//! The simulator's settings: token lifetime, Graph-like throttling limits (all off by default)
//! and injected faults. Set on the command line, and changed at run time through `/_admin/settings`.

use serde::{Deserialize, Serialize};

/// Every limit and fault the simulator applies. Throttling and faults are off by default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Lifetime of issued bearer tokens, in seconds (0 makes every token already expired).
    #[arg(long, default_value_t = 3600)]
    pub token_lifetime_secs: u64,
    /// Directory reads: resource units per 10 s per tenant (token bucket); off when absent.
    #[arg(long)]
    pub read_units_per_10s: Option<u32>,
    /// Directory writes: requests per window per tenant; off when absent.
    #[arg(long)]
    pub write_requests_per_window: Option<u32>,
    /// Directory writes: requests per window per app of a tenant (Graph's per-app-per-tenant
    /// limit), on top of the tenant-wide limit; off when absent.
    #[arg(long)]
    pub app_write_requests_per_window: Option<u32>,
    /// The write window, in seconds (also the window of the writes-per-window counter).
    #[arg(long, default_value_t = 150)]
    pub write_window_secs: u64,
    /// Conditional access policies and named locations: 1 request per second per tenant,
    /// answered beyond that with 429 without Retry-After.
    #[arg(long)]
    pub conditional_access_throttle: bool,
    /// Latency added to every Graph request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Share of Graph requests (each inner request of a batch too) answered with 503, 0..=1.
    #[arg(long, default_value_t = 0.0)]
    pub error_503_rate: f64,
    /// The Retry-After of injected 503s, in seconds.
    #[arg(long, default_value_t = 1)]
    pub retry_after_503_secs: u64,
    /// Share of directory writes answered with 429 whatever the limits, 0..=1 (scenario S10).
    #[arg(long, default_value_t = 0.0)]
    pub write_429_rate: f64,
    /// Injected 429s carry a Retry-After drawn between these bounds, in whole seconds.
    #[arg(long, default_value_t = 1)]
    pub retry_after_429_min_secs: u64,
    #[arg(long, default_value_t = 3)]
    pub retry_after_429_max_secs: u64,
    /// Share of directory writes answered with 503, on top of `error_503_rate`, 0..=1.
    #[arg(long, default_value_t = 0.0)]
    pub write_503_rate: f64,
    /// Share of Graph requests whose connection is dropped without an answer, 0..=1 (spread
    /// evenly: 0.05 drops every 20th request).
    #[arg(long, default_value_t = 0.0)]
    pub drop_rate: f64,
    /// At most this many stored objects are looked at for one page of a collection; a page
    /// that reaches it is answered as it is (possibly empty) with a next link.
    #[arg(long, default_value_t = 20_000)]
    pub max_scan_per_page: usize,
    /// Days a soft-deleted object stays in the recycle bin before it is purged.
    #[arg(long, default_value_t = 30)]
    pub purge_after_days: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            token_lifetime_secs: 3600,
            read_units_per_10s: None,
            write_requests_per_window: None,
            app_write_requests_per_window: None,
            write_window_secs: 150,
            conditional_access_throttle: false,
            latency_ms: 0,
            error_503_rate: 0.0,
            retry_after_503_secs: 1,
            write_429_rate: 0.0,
            retry_after_429_min_secs: 1,
            retry_after_429_max_secs: 3,
            write_503_rate: 0.0,
            drop_rate: 0.0,
            max_scan_per_page: 20_000,
            purge_after_days: 30,
        }
    }
}

impl Settings {
    /// These settings with the fields present in `patch` replaced (unknown fields are an error).
    pub fn merged(&self, patch: &serde_json::Value) -> Result<Self, serde_json::Error> {
        let mut current = serde_json::to_value(self)?;
        if let (Some(cur), Some(p)) = (current.as_object_mut(), patch.as_object()) {
            for (k, v) in p {
                cur.insert(k.clone(), v.clone());
            }
        }
        serde_json::from_value(current)
    }

    pub fn purge_after_secs(&self) -> i64 {
        self.purge_after_days.saturating_mul(86_400)
    }
}
