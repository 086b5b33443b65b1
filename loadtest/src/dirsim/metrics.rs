//! The simulator's counters: requests by route, writes, 429s by scope, injected 503s and
//! dropped connections; rendered as Prometheus text (`rewind_dirsim_` names, listed in
//! `rewind_common::metrics::DIRSIM`, which a test holds equal) and as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde_json::{json, Value as Json};

use super::state::lock;
use super::throttle::Scope;

/// Counters shared by all tenants.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<String, u64>>,
    responses: Mutex<BTreeMap<u16, u64>>,
    writes: AtomicU64,
    throttled_read: AtomicU64,
    throttled_write: AtomicU64,
    throttled_app_write: AtomicU64,
    throttled_ca: AtomicU64,
    throttled_injected: AtomicU64,
    unavailable: AtomicU64,
    dropped: AtomicU64,
}

impl Metrics {
    pub fn request(&self, route: &str) {
        let mut map = lock(&self.requests);
        match map.get_mut(route) {
            Some(n) => *n += 1,
            None => {
                map.insert(route.to_owned(), 1);
            }
        }
    }

    /// Counts a Graph answer by its status (a bounded set of labels).
    pub fn response(&self, status: u16) {
        *lock(&self.responses).entry(status).or_insert(0) += 1;
    }

    pub fn write(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }

    pub fn throttled(&self, scope: Scope) {
        let c = match scope {
            Scope::Read => &self.throttled_read,
            Scope::Write => &self.throttled_write,
            Scope::AppWrite => &self.throttled_app_write,
            Scope::ConditionalAccess => &self.throttled_ca,
            Scope::Injected => &self.throttled_injected,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn unavailable(&self) {
        self.unavailable.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    fn throttled_by_scope(&self) -> [(Scope, u64); 5] {
        [
            (Scope::Read, self.throttled_read.load(Ordering::Relaxed)),
            (Scope::Write, self.throttled_write.load(Ordering::Relaxed)),
            (
                Scope::AppWrite,
                self.throttled_app_write.load(Ordering::Relaxed),
            ),
            (
                Scope::ConditionalAccess,
                self.throttled_ca.load(Ordering::Relaxed),
            ),
            (
                Scope::Injected,
                self.throttled_injected.load(Ordering::Relaxed),
            ),
        ]
    }

    /// The counters as JSON, with each tenant's writes in the current and previous window.
    pub fn to_json(&self, windows: &BTreeMap<String, (u64, u64)>) -> Json {
        let requests = lock(&self.requests).clone();
        let throttled: BTreeMap<&str, u64> = self
            .throttled_by_scope()
            .into_iter()
            .map(|(s, n)| (s.as_str(), n))
            .collect();
        let windows: BTreeMap<&String, Json> = windows
            .iter()
            .map(|(t, (cur, prev))| (t, json!({"current": cur, "previous": prev})))
            .collect();
        let responses: BTreeMap<String, u64> = lock(&self.responses)
            .iter()
            .map(|(s, n)| (s.to_string(), *n))
            .collect();
        json!({
            "requests": requests,
            "responses": responses,
            "writes": self.writes.load(Ordering::Relaxed),
            "writesInWindow": windows,
            "throttled": throttled,
            "throttledTotal": throttled.values().sum::<u64>(),
            "unavailable": self.unavailable.load(Ordering::Relaxed),
            "dropped": self.dropped.load(Ordering::Relaxed),
        })
    }

    /// The counters in Prometheus text exposition format.
    pub fn to_prometheus(&self, windows: &BTreeMap<String, (u64, u64)>) -> String {
        let mut out = String::new();
        let requests = lock(&self.requests).clone();
        out.push_str("# HELP rewind_dirsim_requests_total Graph requests served, by route.\n");
        out.push_str("# TYPE rewind_dirsim_requests_total counter\n");
        for (route, n) in &requests {
            let _ = writeln!(
                out,
                "rewind_dirsim_requests_total{{route=\"{}\"}} {n}",
                escape(route)
            );
        }
        out.push_str("# HELP rewind_dirsim_responses_total Graph answers sent, by HTTP status.\n");
        out.push_str("# TYPE rewind_dirsim_responses_total counter\n");
        for (status, n) in lock(&self.responses).iter() {
            let _ = writeln!(
                out,
                "rewind_dirsim_responses_total{{status=\"{status}\"}} {n}"
            );
        }
        out.push_str("# HELP rewind_dirsim_writes_total Directory writes admitted.\n");
        out.push_str("# TYPE rewind_dirsim_writes_total counter\n");
        let _ = writeln!(
            out,
            "rewind_dirsim_writes_total {}",
            self.writes.load(Ordering::Relaxed)
        );
        out.push_str(
            "# HELP rewind_dirsim_writes_in_window Writes admitted in the current write window, by tenant.\n",
        );
        out.push_str("# TYPE rewind_dirsim_writes_in_window gauge\n");
        for (tenant, (cur, _)) in windows {
            let _ = writeln!(
                out,
                "rewind_dirsim_writes_in_window{{tenant=\"{}\"}} {cur}",
                escape(tenant)
            );
        }
        out.push_str("# HELP rewind_dirsim_throttled_total 429 answers sent, by limit.\n");
        out.push_str("# TYPE rewind_dirsim_throttled_total counter\n");
        for (scope, n) in self.throttled_by_scope() {
            let _ = writeln!(
                out,
                "rewind_dirsim_throttled_total{{scope=\"{}\"}} {n}",
                scope.as_str()
            );
        }
        out.push_str("# HELP rewind_dirsim_unavailable_total Injected 503 answers sent.\n");
        out.push_str("# TYPE rewind_dirsim_unavailable_total counter\n");
        let _ = writeln!(
            out,
            "rewind_dirsim_unavailable_total {}",
            self.unavailable.load(Ordering::Relaxed)
        );
        out.push_str(
            "# HELP rewind_dirsim_dropped_connections_total Connections dropped on purpose.\n",
        );
        out.push_str("# TYPE rewind_dirsim_dropped_connections_total counter\n");
        let _ = writeln!(
            out,
            "rewind_dirsim_dropped_connections_total {}",
            self.dropped.load(Ordering::Relaxed)
        );
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rewind_common::metrics::{Kind, DIRSIM};

    #[test]
    fn every_name_rendered_is_listed_in_common_with_its_kind() {
        let rendered = Metrics::default().to_prometheus(&BTreeMap::new());
        let mut found = 0;
        for rest in rendered.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
            let Some((name, kind)) = rest.split_once(' ') else {
                panic!("{rest}");
            };
            let kind = match kind {
                "counter" => Kind::Counter,
                "gauge" => Kind::Gauge,
                other => panic!("{name} is a {other}"),
            };
            let listed = DIRSIM.iter().find(|(n, _)| *n == name);
            assert_eq!(listed.map(|(_, k)| *k), Some(kind), "{name}");
            found += 1;
        }
        assert_eq!(found, DIRSIM.len());
    }
}
