//! Request rates as DPS limits them: registrations per instance and per enrollment group,
//! polls per device, service API calls per policy; and the bound on registrations in flight. Each limit counts fixed windows per key in
//! this instance's memory (a fleet behind a load balancer gets each instance's allowance); over
//! it, the caller is told when its window ends (429 with `Retry-After`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::config::Limits;

/// Keys one limit remembers at most. Past that, ended windows are dropped first, then all: a
/// flood of fresh keys then passes for a window rather than growing memory without bound.
const MAX_KEYS: usize = 100_000;

/// At most `limit` requests per key in each `period`; a limit of 0 turns the check off.
pub struct RateLimit {
    limit: u32,
    period: Duration,
    windows: Mutex<HashMap<String, Window>>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    count: u32,
}

impl RateLimit {
    pub fn new(limit: u32, period: Duration) -> RateLimit {
        RateLimit {
            limit,
            period,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one request for `key`. Over the limit: `Err(seconds until the window ends)`, at
    /// least 1, which is what the caller is told to wait.
    pub fn admit(&self, key: &str) -> Result<(), u32> {
        self.admit_at(key, Instant::now())
    }

    fn admit_at(&self, key: &str, now: Instant) -> Result<(), u32> {
        if self.limit == 0 {
            return Ok(());
        }
        let mut windows = self.windows.lock().unwrap();
        if !windows.contains_key(key) && windows.len() >= MAX_KEYS {
            windows.retain(|_, w| now.duration_since(w.started) < self.period);
            if windows.len() >= MAX_KEYS {
                windows.clear();
            }
        }
        let fresh = Window {
            started: now,
            count: 0,
        };
        let window = windows.entry(key.to_string()).or_insert(fresh);
        let age = now.duration_since(window.started);
        if age >= self.period {
            *window = fresh;
        }
        if window.count < self.limit {
            window.count += 1;
            return Ok(());
        }
        let left = self.period.saturating_sub(age);
        Err((left.as_secs_f64().ceil() as u32).max(1))
    }
}

/// The device side's limits, checked by the Provisioner.
pub struct DeviceThrottles {
    /// Slots for registrations in flight; none free means overloaded (503 at once).
    pub in_flight: Arc<Semaphore>,
    /// Registrations this instance takes per second (key: none).
    pub registrations: RateLimit,
    /// Registrations per second through one enrollment group (key: the group ID).
    pub group_registrations: RateLimit,
    /// Operation-status polls and registration-status lookups per device (key: registration ID).
    pub polls: RateLimit,
}

impl From<&Limits> for DeviceThrottles {
    fn from(limits: &Limits) -> Self {
        let second = Duration::from_secs(1);
        DeviceThrottles {
            in_flight: Arc::new(Semaphore::new(limits.max_registrations_in_flight)),
            registrations: RateLimit::new(limits.registrations_per_second, second),
            group_registrations: RateLimit::new(limits.group_registrations_per_second, second),
            polls: RateLimit::new(
                limits.polls_per_device,
                Duration::from_secs(limits.poll_window_secs),
            ),
        }
    }
}

/// Service API calls per minute for each access policy (key: the policy name).
pub fn service_api_limit(limits: &Limits) -> RateLimit {
    RateLimit::new(limits.service_api_calls_per_minute, Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_admits_its_limit_then_tells_how_long_to_wait() {
        let limit = RateLimit::new(3, Duration::from_secs(10));
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(limit.admit_at("dev", start), Ok(()));
        }
        assert_eq!(limit.admit_at("dev", start), Err(10));
        assert_eq!(
            limit.admit_at("dev", start + Duration::from_millis(7_500)),
            Err(3),
            "2.5 s left rounds up"
        );
        assert_eq!(
            limit.admit_at("dev", start + Duration::from_millis(9_999)),
            Err(1),
            "never less than a second"
        );
        assert_eq!(limit.admit_at("other", start), Ok(()), "keys count apart");
        assert_eq!(
            limit.admit_at("dev", start + Duration::from_secs(10)),
            Ok(())
        );
    }

    #[test]
    fn a_refused_request_does_not_extend_the_window() {
        let limit = RateLimit::new(1, Duration::from_secs(2));
        let start = Instant::now();
        assert_eq!(limit.admit_at("k", start), Ok(()));
        for ms in [100, 900, 1_900] {
            assert!(
                limit
                    .admit_at("k", start + Duration::from_millis(ms))
                    .is_err()
            );
        }
        assert_eq!(limit.admit_at("k", start + Duration::from_secs(2)), Ok(()));
    }

    #[test]
    fn zero_turns_a_limit_off() {
        let limit = RateLimit::new(0, Duration::from_secs(1));
        let now = Instant::now();
        assert!((0..10_000).all(|_| limit.admit_at("k", now).is_ok()));
    }

    #[test]
    fn the_table_stays_bounded_and_keeps_live_windows_first() {
        let limit = RateLimit::new(1, Duration::from_secs(60));
        let start = Instant::now();
        for n in 0..MAX_KEYS {
            limit.admit_at(&format!("old-{n}"), start).unwrap();
        }
        // The old windows ended: they make room, and a live key keeps its count.
        let later = start + Duration::from_secs(61);
        limit.admit_at("live", later).unwrap();
        assert!(limit.admit_at("live", later).is_err());
        assert_eq!(limit.windows.lock().unwrap().len(), 1);
        for n in 0..2 * MAX_KEYS {
            limit.admit_at(&format!("new-{n}"), later).unwrap();
        }
        assert!(limit.windows.lock().unwrap().len() <= MAX_KEYS);
    }
}
