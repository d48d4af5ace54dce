//! Console sign-in throttling: after too many failed sign-ins within the lockout period, an account,
//! or the address they came from, is refused without a password check until that period has passed
//! since the last failure. Counted per instance (in memory): behind a load balancer each instance
//! counts its own attempts.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Beyond this many tracked keys, the ones whose lockout period has passed are dropped, and new
/// accounts are no longer tracked (addresses always are), so random names cannot grow the table.
const MAX_TRACKED: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignInLimits {
    /// Failed sign-ins of one account before it is locked.
    pub per_account: u32,
    /// Failed sign-ins from one address (any accounts) before it is locked.
    pub per_address: u32,
    pub lockout: Duration,
}

impl From<&crate::config::Limits> for SignInLimits {
    fn from(limits: &crate::config::Limits) -> Self {
        SignInLimits {
            per_account: limits.login_max_failures,
            per_address: limits.login_max_failures_per_address,
            lockout: Duration::from_secs(limits.login_lockout_secs),
        }
    }
}

impl Default for SignInLimits {
    fn default() -> Self {
        SignInLimits {
            per_account: 5,
            per_address: 20,
            lockout: Duration::from_secs(900),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Account(String),
    Address(IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

#[derive(Debug, Default)]
pub struct SignInThrottle {
    limits: SignInLimits,
    failures: Mutex<HashMap<Key, Failures>>,
}

impl SignInThrottle {
    pub fn new(limits: SignInLimits) -> SignInThrottle {
        SignInThrottle {
            limits,
            failures: Mutex::default(),
        }
    }

    /// How long the account or the address stays locked, if either is.
    pub fn locked(&self, account: &str, address: Option<IpAddr>) -> Option<Duration> {
        let now = Instant::now();
        let failures = self.failures.lock().unwrap();
        self.keys(account, address)
            .filter_map(|(key, limit)| {
                let f = failures.get(&key)?;
                let elapsed = now.duration_since(f.last);
                (f.count >= limit && elapsed < self.limits.lockout)
                    .then(|| self.limits.lockout - elapsed)
            })
            .max()
    }

    /// Counts a refused sign-in against the account and the address.
    pub fn failed(&self, account: &str, address: Option<IpAddr>) {
        let now = Instant::now();
        let lockout = self.limits.lockout;
        let mut failures = self.failures.lock().unwrap();
        if failures.len() >= MAX_TRACKED {
            failures.retain(|_, f| now.duration_since(f.last) < lockout);
        }
        for (key, _) in self.keys(account, address) {
            let crowded = failures.len() >= MAX_TRACKED;
            if crowded && matches!(key, Key::Account(_)) && !failures.contains_key(&key) {
                continue;
            }
            let entry = failures.entry(key).or_insert(Failures {
                count: 0,
                last: now,
            });
            if now.duration_since(entry.last) >= lockout {
                entry.count = 0;
            }
            entry.count += 1;
            entry.last = now;
        }
    }

    /// A successful sign-in clears the account's count (not the address's: one right password
    /// must not reset a guessing run against other accounts).
    pub fn succeeded(&self, account: &str) {
        let key = Key::Account(account.to_lowercase());
        self.failures.lock().unwrap().remove(&key);
    }

    fn keys(&self, account: &str, address: Option<IpAddr>) -> impl Iterator<Item = (Key, u32)> {
        let account = (
            Key::Account(account.to_lowercase()),
            self.limits.per_account,
        );
        let address = address.map(|a| (Key::Address(a), self.limits.per_address));
        std::iter::once(account).chain(address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(per_account: u32, per_address: u32, lockout_ms: u64) -> SignInThrottle {
        SignInThrottle::new(SignInLimits {
            per_account,
            per_address,
            lockout: Duration::from_millis(lockout_ms),
        })
    }

    const HOME: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)));
    const AWAY: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 9)));

    #[test]
    fn an_account_locks_after_its_limit_and_unlocks_after_the_lockout() {
        let t = throttle(3, 100, 200);
        for _ in 0..2 {
            t.failed("Admin", HOME);
        }
        assert_eq!(t.locked("admin", HOME), None);
        t.failed("admin", HOME);
        let left = t.locked("ADMIN", AWAY).expect("locked from any address");
        assert!(left <= Duration::from_millis(200));
        assert_eq!(t.locked("other", HOME), None, "other accounts are not");
        std::thread::sleep(Duration::from_millis(220));
        assert_eq!(t.locked("admin", HOME), None);
        // After the lockout a failure counts from one again.
        t.failed("admin", HOME);
        assert_eq!(t.locked("admin", HOME), None);
    }

    #[test]
    fn an_address_locks_after_failures_across_accounts() {
        let t = throttle(100, 3, 10_000);
        for name in ["a", "b", "c"] {
            t.failed(name, HOME);
        }
        assert!(t.locked("d", HOME).is_some());
        assert_eq!(t.locked("d", AWAY), None);
        assert_eq!(t.locked("d", None), None);
    }

    #[test]
    fn success_clears_the_account_but_not_the_address() {
        let t = throttle(2, 3, 10_000);
        t.failed("admin", HOME);
        t.failed("admin2", HOME);
        t.succeeded("ADMIN");
        t.failed("admin", HOME);
        assert_eq!(
            t.locked("admin", AWAY),
            None,
            "one failure since the success"
        );
        assert!(t.locked("admin", HOME).is_some(), "the address had three");
    }

    #[test]
    fn random_names_do_not_grow_the_table_without_bound() {
        let t = throttle(5, u32::MAX, 10_000);
        for i in 0..MAX_TRACKED + 500 {
            t.failed(&format!("user{i}"), HOME);
        }
        assert!(t.failures.lock().unwrap().len() <= MAX_TRACKED + 1);
    }
}
