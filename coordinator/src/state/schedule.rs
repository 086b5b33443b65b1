//! Backup schedules: daily at a fixed UTC time plus a per-tenant jitter (so that hundreds of
//! tenants do not fire at once), a fixed interval (tests), or off.

use serde::{Deserialize, Serialize};

use super::StateError;

/// The largest jitter added to a daily schedule, in seconds (30 minutes).
pub const MAX_JITTER_SECONDS: i64 = 30 * 60;

const DAY: i64 = 86_400;

/// When a tenant's backups run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Schedule {
    /// Once a day at `(hour, minute)` UTC, plus the tenant's jitter.
    #[serde(rename_all = "camelCase")]
    Daily { at_utc: (u8, u8) },
    /// Every `seconds` after the last run (for tests and demos).
    Interval { seconds: u64 },
    /// Only on demand.
    Off,
}

impl Default for Schedule {
    /// Daily at 02:00 UTC.
    fn default() -> Self {
        Schedule::Daily { at_utc: (2, 0) }
    }
}

impl Schedule {
    /// Refuses an hour past 23, a minute past 59 or an interval of 0 seconds.
    pub fn validate(&self) -> Result<(), StateError> {
        match *self {
            Schedule::Daily {
                at_utc: (hour, minute),
            } => {
                if time::Time::from_hms(hour, minute, 0).is_err() {
                    return Err(StateError::invalid(
                        "schedule",
                        format!("daily at {hour:02}:{minute:02}"),
                        "hour must be 0..=23 and minute 0..=59",
                    ));
                }
            }
            Schedule::Interval { seconds } => {
                if seconds == 0 || seconds > i64::MAX as u64 / 2 {
                    return Err(StateError::invalid(
                        "schedule",
                        format!("every {seconds} seconds"),
                        "the interval must be at least 1 second",
                    ));
                }
            }
            Schedule::Off => {}
        }
        Ok(())
    }
}

/// The tenant's jitter, `0..=MAX_JITTER_SECONDS`: a pure function of its name (FNV-1a, stable
/// across builds and machines).
pub fn jitter_seconds(tenant: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in tenant.as_bytes() {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % (MAX_JITTER_SECONDS as u64 + 1)) as i64
}

/// When the next run is due, in unix seconds (UTC): the first slot after `last_run`, or with
/// no run yet the first slot at or after `now`. A result at or before `now` means "due now"
/// (a slot was missed while the coordinator was down: it runs once, then the schedule goes on
/// from that run). `None` for [`Schedule::Off`].
pub fn next_after(
    tenant: &str,
    schedule: &Schedule,
    last_run: Option<i64>,
    now: i64,
) -> Option<i64> {
    match *schedule {
        Schedule::Off => None,
        Schedule::Interval { seconds } => {
            let seconds = i64::try_from(seconds).ok()?;
            match last_run {
                None => Some(now),
                Some(last) => last.checked_add(seconds),
            }
        }
        Schedule::Daily {
            at_utc: (hour, minute),
        } => {
            let offset = i64::from(hour) * 3600 + i64::from(minute) * 60 + jitter_seconds(tenant);
            // The first slot strictly after `after`.
            let after = match last_run {
                Some(last) => last,
                None => now.checked_sub(1)?,
            };
            let day = after.checked_sub(offset)?.div_euclid(DAY);
            let slot = day.checked_mul(DAY)?.checked_add(offset)?;
            if slot > after {
                Some(slot)
            } else {
                slot.checked_add(DAY)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> i64 {
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .unwrap()
            .unix_timestamp()
    }

    #[test]
    fn jitter_is_bounded_deterministic_and_spread() {
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..500 {
            let name = format!("tenant-{i}");
            let j = jitter_seconds(&name);
            assert!((0..=MAX_JITTER_SECONDS).contains(&j), "{name}: {j}");
            assert_eq!(j, jitter_seconds(&name));
            seen.insert(j / 60);
        }
        // 500 tenants fall into most of the 31 minutes.
        assert!(seen.len() > 25, "{seen:?}");
    }

    #[test]
    fn daily_fires_at_its_hour_plus_the_jitter() {
        let s = Schedule::Daily { at_utc: (2, 0) };
        let j = jitter_seconds("acme");
        let now = at("2026-03-01T00:00:00Z");
        assert_eq!(
            next_after("acme", &s, None, now),
            Some(at("2026-03-01T02:00:00Z") + j)
        );
        // After today's run, tomorrow's slot.
        let ran = at("2026-03-01T02:00:00Z") + j;
        assert_eq!(
            next_after("acme", &s, Some(ran), ran + 5),
            Some(at("2026-03-02T02:00:00Z") + j)
        );
    }

    #[test]
    fn daily_rolls_over_to_the_next_day_month_and_year() {
        let s = Schedule::Daily { at_utc: (2, 0) };
        let j = jitter_seconds("acme");
        // Past today's slot, no run yet: tomorrow, across a month and a year.
        let now = at("2026-12-31T03:00:00Z");
        assert_eq!(
            next_after("acme", &s, None, now),
            Some(at("2027-01-01T02:00:00Z") + j)
        );
        // A slot late in the day whose jitter crosses midnight.
        let late = Schedule::Daily { at_utc: (23, 59) };
        let next = next_after("acme", &late, None, at("2026-02-28T12:00:00Z")).unwrap();
        assert_eq!(next, at("2026-02-28T23:59:00Z") + j);
        let after = next_after("acme", &late, Some(next), next + 1).unwrap();
        assert_eq!(after - next, DAY);
    }

    #[test]
    fn a_missed_slot_is_due_now_once() {
        let s = Schedule::Daily { at_utc: (2, 0) };
        let j = jitter_seconds("acme");
        let last = at("2026-03-01T02:00:00Z") + j;
        let now = at("2026-03-05T10:00:00Z");
        let due = next_after("acme", &s, Some(last), now).unwrap();
        assert!(due <= now);
        // Once it has run now, the next slot is tomorrow's.
        assert_eq!(
            next_after("acme", &s, Some(now), now),
            Some(at("2026-03-06T02:00:00Z") + j)
        );
    }

    #[test]
    fn interval_and_off() {
        let s = Schedule::Interval { seconds: 60 };
        assert_eq!(next_after("a", &s, None, 1000), Some(1000));
        assert_eq!(next_after("a", &s, Some(1000), 1001), Some(1060));
        assert_eq!(next_after("a", &Schedule::Off, Some(1000), 1001), None);
    }

    #[test]
    fn schedules_round_trip_as_stored() {
        for s in [
            Schedule::default(),
            Schedule::Daily { at_utc: (23, 59) },
            Schedule::Interval { seconds: 60 },
            Schedule::Off,
        ] {
            let bytes = crate::state::encode("tenants", b"acme", &s).unwrap();
            let back: Schedule = crate::state::decode("tenants", b"acme", &bytes).unwrap();
            assert_eq!(back, s);
        }
    }

    #[test]
    fn bad_schedules_are_named() {
        let msg = Schedule::Daily { at_utc: (24, 0) }
            .validate()
            .unwrap_err()
            .to_string();
        assert!(msg.contains("schedule") && msg.contains("24:00"), "{msg}");
        assert!(Schedule::Interval { seconds: 0 }.validate().is_err());
        assert!(Schedule::default().validate().is_ok());
    }
}
