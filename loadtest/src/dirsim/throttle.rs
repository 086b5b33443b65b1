//! Graph-like throttling of one tenant: a token bucket of read resource units per 10 s, a
//! window of write requests, and conditional access's 1 request per second (whose 429s carry no
//! Retry-After). Limits come from [`Settings`]; every limit is off unless set.

use std::time::{Duration, Instant};

use super::settings::Settings;

/// How a request is throttled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A directory read costing this many resource units.
    Read { cost: u32 },
    /// A directory write.
    Write,
    /// Conditional access policies and named locations (reads and writes alike).
    ConditionalAccess { write: bool },
    /// Not throttled (the batch envelope).
    Free,
}

/// Which limit answered 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Read,
    Write,
    ConditionalAccess,
    /// A 429 injected at the configured rate (not a limit).
    Injected,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::ConditionalAccess => "conditional_access",
            Scope::Injected => "injected",
        }
    }
}

/// A request over a limit: the scope and the Retry-After to send (none for conditional access).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub scope: Scope,
    pub retry_after: Option<u64>,
}

/// One tenant's throttling state.
#[derive(Debug)]
pub struct ThrottleState {
    read_tokens: Option<f64>,
    read_refilled: Instant,
    window_start: Instant,
    window_writes: u64,
    previous_window_writes: u64,
    ca_last: Option<Instant>,
}

impl Default for ThrottleState {
    fn default() -> Self {
        let now = Instant::now();
        Self {
            read_tokens: None,
            read_refilled: now,
            window_start: now,
            window_writes: 0,
            previous_window_writes: 0,
            ca_last: None,
        }
    }
}

impl ThrottleState {
    /// Admits or refuses one request at `now`.
    pub fn admit(
        &mut self,
        settings: &Settings,
        class: Class,
        now: Instant,
    ) -> Result<(), Throttled> {
        match class {
            Class::Free => Ok(()),
            Class::Read { cost } => self.admit_read(settings, cost, now),
            Class::Write => self.admit_write(settings, now),
            Class::ConditionalAccess { write } => {
                if settings.conditional_access_throttle {
                    if let Some(last) = self.ca_last {
                        if now.saturating_duration_since(last) < Duration::from_secs(1) {
                            return Err(Throttled {
                                scope: Scope::ConditionalAccess,
                                retry_after: None,
                            });
                        }
                    }
                    self.ca_last = Some(now);
                }
                if write {
                    self.roll_window(settings, now);
                    self.window_writes += 1;
                }
                Ok(())
            }
        }
    }

    fn admit_read(
        &mut self,
        settings: &Settings,
        cost: u32,
        now: Instant,
    ) -> Result<(), Throttled> {
        let Some(capacity) = settings.read_units_per_10s.map(f64::from) else {
            self.read_tokens = None;
            return Ok(());
        };
        let per_sec = (capacity / 10.0).max(f64::MIN_POSITIVE);
        let elapsed = now
            .saturating_duration_since(self.read_refilled)
            .as_secs_f64();
        let tokens = self
            .read_tokens
            .map_or(capacity, |t| (t + elapsed * per_sec).min(capacity));
        self.read_refilled = now;
        let cost = f64::from(cost);
        if tokens >= cost {
            self.read_tokens = Some(tokens - cost);
            Ok(())
        } else {
            self.read_tokens = Some(tokens);
            let wait = ((cost - tokens) / per_sec).ceil().max(1.0);
            Err(Throttled {
                scope: Scope::Read,
                retry_after: Some(wait.min(3600.0) as u64),
            })
        }
    }

    fn roll_window(&mut self, settings: &Settings, now: Instant) {
        let window = Duration::from_secs(settings.write_window_secs.max(1));
        if now.saturating_duration_since(self.window_start) >= window {
            self.previous_window_writes = self.window_writes;
            self.window_writes = 0;
            self.window_start = now;
        }
    }

    fn admit_write(&mut self, settings: &Settings, now: Instant) -> Result<(), Throttled> {
        self.roll_window(settings, now);
        if let Some(limit) = settings.write_requests_per_window {
            if self.window_writes >= u64::from(limit) {
                let window = Duration::from_secs(settings.write_window_secs.max(1));
                let left = window.saturating_sub(now.saturating_duration_since(self.window_start));
                return Err(Throttled {
                    scope: Scope::Write,
                    retry_after: Some(left.as_secs_f64().ceil().max(1.0) as u64),
                });
            }
        }
        self.window_writes += 1;
        Ok(())
    }

    /// Writes admitted in the current window and in the one before it.
    pub fn writes_in_window(&mut self, settings: &Settings, now: Instant) -> (u64, u64) {
        self.roll_window(settings, now);
        (self.window_writes, self.previous_window_writes)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_windows() {
        let settings = Settings {
            read_units_per_10s: Some(4),
            write_requests_per_window: Some(2),
            conditional_access_throttle: true,
            ..Settings::default()
        };
        let mut s = ThrottleState::default();
        let t0 = Instant::now();
        assert!(s.admit(&settings, Class::Read { cost: 2 }, t0).is_ok());
        assert!(s.admit(&settings, Class::Read { cost: 2 }, t0).is_ok());
        let e = s.admit(&settings, Class::Read { cost: 2 }, t0).unwrap_err();
        assert_eq!(e.retry_after, Some(5));
        assert!(s
            .admit(
                &settings,
                Class::Read { cost: 2 },
                t0 + Duration::from_secs(5)
            )
            .is_ok());
        assert!(s.admit(&settings, Class::Write, t0).is_ok());
        assert!(s.admit(&settings, Class::Write, t0).is_ok());
        assert_eq!(
            s.admit(&settings, Class::Write, t0)
                .unwrap_err()
                .retry_after,
            Some(150)
        );
        assert!(s
            .admit(&settings, Class::Write, t0 + Duration::from_secs(151))
            .is_ok());
        assert!(s
            .admit(&settings, Class::ConditionalAccess { write: false }, t0)
            .is_ok());
        let e = s
            .admit(&settings, Class::ConditionalAccess { write: false }, t0)
            .unwrap_err();
        assert_eq!(e.retry_after, None);
    }
}
