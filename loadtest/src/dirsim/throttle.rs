//! Graph-like throttling of one tenant: a token bucket of read resource units per 10 s, a
//! window of write requests for the tenant and one for each of its apps, and conditional
//! access's 1 request per second (whose 429s carry no Retry-After). Limits come from
//! [`Settings`]; every limit is off unless set.

use std::time::{Duration, Instant};

use super::settings::Settings;
use super::state::AppIndex;

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
    /// The write limit of one app in the tenant (`app_write_requests_per_window`).
    AppWrite,
    ConditionalAccess,
    /// A 429 injected at the configured rate (not a limit).
    Injected,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::AppWrite => "app_write",
            Scope::ConditionalAccess => "conditional_access",
            Scope::Injected => "injected",
        }
    }

    /// The `<Scope>/<Limit>` part of Graph's `x-ms-throttle-scope` header for a 429 of this
    /// scope: read and per-app limits are an app's in the tenant (`Tenant_Application`),
    /// the write and conditional-access limits the tenant's for every app.
    pub fn header_prefix(self) -> &'static str {
        match self {
            Scope::Read => "Tenant_Application/Read",
            Scope::AppWrite => "Tenant_Application/Write",
            Scope::Write | Scope::ConditionalAccess => "Tenant/Write",
            Scope::Injected => "Tenant_Application/ReadWrite",
        }
    }
}

/// A request over a limit: the scope and the Retry-After to send (none for conditional access).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub scope: Scope,
    pub retry_after: Option<u64>,
}

/// The writes admitted in the current write window and in the one before it.
#[derive(Debug, Clone, Copy)]
struct WriteWindow {
    start: Instant,
    writes: u64,
    previous: u64,
}

impl WriteWindow {
    fn new(now: Instant) -> Self {
        Self {
            start: now,
            writes: 0,
            previous: 0,
        }
    }

    /// Starts a new window when the current one is over at `now`.
    fn roll(&mut self, window: Duration, now: Instant) {
        if now.saturating_duration_since(self.start) >= window {
            self.previous = self.writes;
            self.writes = 0;
            self.start = now;
        }
    }

    /// The Retry-After (whole seconds to the window's end) when `limit` writes were already
    /// admitted in the current window.
    fn refusal(&self, limit: Option<u32>, window: Duration, now: Instant) -> Option<u64> {
        let limit = limit?;
        (self.writes >= u64::from(limit)).then(|| {
            let left = window.saturating_sub(now.saturating_duration_since(self.start));
            left.as_secs_f64().ceil().max(1.0) as u64
        })
    }
}

/// One tenant's throttling state.
#[derive(Debug)]
pub struct ThrottleState {
    read_tokens: Option<f64>,
    read_refilled: Instant,
    /// All the tenant's apps together.
    window: WriteWindow,
    /// Each app's own window, by [`AppIndex`] (grown when an app first writes).
    app_windows: Vec<WriteWindow>,
    ca_last: Option<Instant>,
}

impl Default for ThrottleState {
    fn default() -> Self {
        let now = Instant::now();
        Self {
            read_tokens: None,
            read_refilled: now,
            window: WriteWindow::new(now),
            app_windows: Vec::new(),
            ca_last: None,
        }
    }
}

fn write_window(settings: &Settings) -> Duration {
    Duration::from_secs(settings.write_window_secs.max(1))
}

impl ThrottleState {
    /// Admits or refuses one request of the tenant's app `app` at `now`.
    pub fn admit(
        &mut self,
        settings: &Settings,
        class: Class,
        app: AppIndex,
        now: Instant,
    ) -> Result<(), Throttled> {
        match class {
            Class::Free => Ok(()),
            Class::Read { cost } => self.admit_read(settings, cost, now),
            Class::Write => self.admit_write(settings, app, now),
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
                    // Counted in the windows, never refused by their limits.
                    let (tenant, app) = self.windows(settings, app, now);
                    tenant.writes += 1;
                    app.writes += 1;
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

    /// The tenant's window and `app`'s, both rolled to `now`.
    fn windows(
        &mut self,
        settings: &Settings,
        app: AppIndex,
        now: Instant,
    ) -> (&mut WriteWindow, &mut WriteWindow) {
        let window = write_window(settings);
        let i = usize::from(app);
        if self.app_windows.len() <= i {
            self.app_windows.resize(i + 1, WriteWindow::new(now));
        }
        let app = &mut self.app_windows[i];
        self.window.roll(window, now);
        app.roll(window, now);
        (&mut self.window, app)
    }

    /// A write is refused when the tenant's window is full (all apps together), or else when
    /// its app's own window is; it counts in both only when admitted.
    fn admit_write(
        &mut self,
        settings: &Settings,
        app: AppIndex,
        now: Instant,
    ) -> Result<(), Throttled> {
        let window = write_window(settings);
        let (tenant, app) = self.windows(settings, app, now);
        let refused = match tenant.refusal(settings.write_requests_per_window, window, now) {
            Some(retry) => Some((Scope::Write, retry)),
            None => app
                .refusal(settings.app_write_requests_per_window, window, now)
                .map(|retry| (Scope::AppWrite, retry)),
        };
        if let Some((scope, retry)) = refused {
            return Err(Throttled {
                scope,
                retry_after: Some(retry),
            });
        }
        tenant.writes += 1;
        app.writes += 1;
        Ok(())
    }

    /// The tenant's writes admitted in the current window and in the one before it.
    pub fn writes_in_window(&mut self, settings: &Settings, now: Instant) -> (u64, u64) {
        self.window.roll(write_window(settings), now);
        (self.window.writes, self.window.previous)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The throttle as the tenant's primary app meets it.
    struct Primary<'a>(&'a mut ThrottleState);

    impl Primary<'_> {
        fn admit(
            &mut self,
            settings: &Settings,
            class: Class,
            now: Instant,
        ) -> Result<(), Throttled> {
            self.0.admit(settings, class, 0, now)
        }
    }

    #[test]
    fn each_app_has_its_own_window_inside_the_tenants() {
        let settings = Settings {
            write_requests_per_window: Some(3),
            app_write_requests_per_window: Some(2),
            write_window_secs: 10,
            ..Settings::default()
        };
        let mut s = ThrottleState::default();
        let t0 = Instant::now();
        let scope = |r: Result<(), Throttled>| r.err().map(|t| (t.scope, t.retry_after));
        assert_eq!(scope(s.admit(&settings, Class::Write, 0, t0)), None);
        assert_eq!(scope(s.admit(&settings, Class::Write, 0, t0)), None);
        assert_eq!(
            scope(s.admit(&settings, Class::Write, 0, t0)),
            Some((Scope::AppWrite, Some(10))),
            "app 0 is at its own limit"
        );
        assert_eq!(scope(s.admit(&settings, Class::Write, 2, t0)), None);
        assert_eq!(
            scope(s.admit(&settings, Class::Write, 2, t0)),
            Some((Scope::Write, Some(10))),
            "the tenant is at its limit, all apps together"
        );
        assert_eq!(s.writes_in_window(&settings, t0), (3, 0));
        let later = t0 + Duration::from_secs(10);
        assert_eq!(scope(s.admit(&settings, Class::Write, 0, later)), None);
        assert_eq!(s.writes_in_window(&settings, later), (1, 3));
    }

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
        let mut s = Primary(&mut s);
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
