//! Brute-force protection: failures are counted per account and per source address in the
//! database, so every replica sees the same numbers.
//!
//! An account locks for a while after too many failures within a window (by default 5 in 15
//! minutes, as the national password rules expect); a source address that fails often is slowed
//! with growing delays, which blunts password spraying across many accounts without locking
//! out an office that shares one address. Only the user's own mistakes count: a directory that
//! is down or slow never locks anyone.

use std::time::Duration;

use crate::db::{Database, WriteScope, on_pool, on_write};

/// Tunables, with the defaults the national password rules suggest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Failures within `window` that lock an account.
    pub max_failures: u32,
    pub window: Duration,
    /// How long a locked account stays locked.
    pub lock_duration: Duration,
    /// Account failures before delays start.
    pub account_free_failures: u32,
    /// Source failures before delays start.
    pub source_free_failures: u32,
    /// First delay; each further failure doubles it up to `max_delay`.
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        Self {
            max_failures: 5,
            window: Duration::from_secs(15 * 60),
            lock_duration: Duration::from_secs(15 * 60),
            account_free_failures: 1,
            source_free_failures: 10,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(3),
        }
    }
}

/// A failure counter as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    pub failures: u32,
    /// Unix milliseconds when the current window began.
    pub window_start_ms: i64,
    /// Unix milliseconds until which the key is locked.
    pub locked_until_ms: Option<i64>,
}

/// What to do with an attempt before checking its password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Go ahead after waiting `delay`.
    Open { delay: Duration },
    /// Refuse without asking the directory.
    Locked { until_ms: i64 },
}

impl LockoutPolicy {
    fn window_ms(&self) -> i64 {
        i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX)
    }

    fn lock_ms(&self) -> i64 {
        i64::try_from(self.lock_duration.as_millis()).unwrap_or(i64::MAX)
    }

    /// Failures that still count at `now_ms` (zero once the window has passed).
    fn live_failures(&self, counter: Option<&Counter>, now_ms: i64) -> u32 {
        match counter {
            Some(c) if now_ms.saturating_sub(c.window_start_ms) < self.window_ms() => c.failures,
            _ => 0,
        }
    }

    fn delay_for(&self, failures: u32, free: u32) -> Duration {
        if failures <= free {
            return Duration::ZERO;
        }
        let doublings = (failures - free - 1).min(16);
        self.base_delay
            .saturating_mul(1 << doublings)
            .min(self.max_delay)
    }

    /// Decides on an attempt from the account's and the source's counters. Pure.
    pub fn gate(&self, account: Option<&Counter>, source: Option<&Counter>, now_ms: i64) -> Gate {
        if let Some(until_ms) = account.and_then(|c| c.locked_until_ms)
            && until_ms > now_ms
        {
            return Gate::Locked { until_ms };
        }
        let account_delay = self.delay_for(
            self.live_failures(account, now_ms),
            self.account_free_failures,
        );
        let source_delay = self.delay_for(
            self.live_failures(source, now_ms),
            self.source_free_failures,
        );
        Gate::Open {
            delay: account_delay.max(source_delay),
        }
    }
}

/// Key of an account's counter. Unknown accounts are counted too, so that locking behaves the
/// same whether or not the user exists.
pub fn account_key(realm: &str, user: &str) -> String {
    format!("account:{realm}:{user}")
}

/// Key of a source address's counter.
pub fn source_key(ip: &str) -> String {
    format!("source:{ip}")
}

/// The counters, in the shared database.
#[derive(Clone)]
pub struct LockoutStore {
    db: Database,
    policy: LockoutPolicy,
}

impl LockoutStore {
    pub fn new(db: Database, policy: LockoutPolicy) -> Self {
        Self { db, policy }
    }

    pub fn policy(&self) -> &LockoutPolicy {
        &self.policy
    }

    /// Reads a counter.
    pub async fn get(&self, key: &str) -> Result<Option<Counter>, sqlx::Error> {
        let row: Option<(i64, i64, Option<i64>)> = on_pool!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT CAST(failures AS BIGINT), window_start, locked_until FROM login_throttle \
                 WHERE key = $1",
            )
            .bind(key)
            .fetch_optional(pool)
            .await?
        });
        Ok(
            row.map(|(failures, window_start_ms, locked_until_ms)| Counter {
                failures: u32::try_from(failures).unwrap_or(u32::MAX),
                window_start_ms,
                locked_until_ms,
            }),
        )
    }

    /// Counts one failure atomically (one statement, safe across replicas) and returns the
    /// counter after it. `lock_at` failures lock the key; `None` never locks (sources).
    pub async fn record_failure(
        &self,
        key: &str,
        now_ms: i64,
        lock_at: Option<u32>,
    ) -> Result<Counter, sqlx::Error> {
        let window_floor = now_ms.saturating_sub(self.policy.window_ms());
        let lock_at = i64::from(lock_at.unwrap_or(u32::MAX));
        let lock_until = now_ms.saturating_add(self.policy.lock_ms());
        // A window that has passed starts over at 1; reaching lock_at sets locked_until.
        let mut write = self.db.begin_write(WriteScope::Statement).await?;
        let (failures, window_start_ms, locked_until_ms): (i64, i64, Option<i64>) = on_write!(
            &mut write,
            |conn| {
                sqlx::query_as(
                    "INSERT INTO login_throttle AS t (key, failures, window_start, locked_until) \
                     VALUES ($1, 1, $2, CASE WHEN 1 >= $4 THEN CAST($5 AS BIGINT) END) \
                     ON CONFLICT (key) DO UPDATE SET \
                       failures = CASE WHEN t.window_start < $3 THEN 1 ELSE t.failures + 1 END, \
                       locked_until = CASE \
                         WHEN (CASE WHEN t.window_start < $3 THEN 1 ELSE t.failures + 1 END) >= $4 \
                         THEN CAST($5 AS BIGINT) ELSE t.locked_until END, \
                       window_start = CASE WHEN t.window_start < $3 THEN $2 ELSE t.window_start END \
                     RETURNING CAST(failures AS BIGINT), window_start, locked_until",
                )
                .bind(key)
                .bind(now_ms)
                .bind(window_floor)
                .bind(lock_at)
                .bind(lock_until)
                .fetch_one(&mut *conn)
                .await?
            }
        );
        write.commit().await?;
        Ok(Counter {
            failures: u32::try_from(failures).unwrap_or(u32::MAX),
            window_start_ms,
            locked_until_ms,
        })
    }

    /// Forgets a counter (an account after a successful sign-in).
    pub async fn clear(&self, key: &str) -> Result<(), sqlx::Error> {
        let mut write = self.db.begin_write(WriteScope::Statement).await?;
        on_write!(&mut write, |conn| {
            sqlx::query("DELETE FROM login_throttle WHERE key = $1")
                .bind(key)
                .execute(&mut *conn)
                .await?;
        });
        write.commit().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000;

    fn counter(failures: u32, window_start_ms: i64, locked_until_ms: Option<i64>) -> Counter {
        Counter {
            failures,
            window_start_ms,
            locked_until_ms,
        }
    }

    #[test]
    fn no_history_means_no_delay() {
        let policy = LockoutPolicy::default();
        assert_eq!(
            policy.gate(None, None, 0),
            Gate::Open {
                delay: Duration::ZERO
            }
        );
    }

    #[test]
    fn account_delays_grow_then_cap() {
        let policy = LockoutPolicy::default();
        let delay = |n| match policy.gate(Some(&counter(n, 0, None)), None, 1) {
            Gate::Open { delay } => delay,
            Gate::Locked { .. } => panic!("not locked"),
        };
        assert_eq!(delay(1), Duration::ZERO);
        assert_eq!(delay(2), Duration::from_millis(250));
        assert_eq!(delay(3), Duration::from_millis(500));
        assert_eq!(delay(4), Duration::from_millis(1000));
        assert_eq!(delay(40), Duration::from_secs(3));
    }

    #[test]
    fn locked_until_expiry_then_open() {
        let policy = LockoutPolicy::default();
        let locked = counter(5, 0, Some(15 * MINUTE));
        assert_eq!(
            policy.gate(Some(&locked), None, 14 * MINUTE),
            Gate::Locked {
                until_ms: 15 * MINUTE
            }
        );
        // After expiry, the window has also passed: no delay either.
        assert_eq!(
            policy.gate(Some(&locked), None, 15 * MINUTE),
            Gate::Open {
                delay: Duration::ZERO
            }
        );
    }

    #[test]
    fn sources_are_slowed_not_locked() {
        let policy = LockoutPolicy::default();
        let busy = counter(200, 0, None);
        match policy.gate(None, Some(&busy), MINUTE) {
            Gate::Open { delay } => assert_eq!(delay, policy.max_delay),
            Gate::Locked { .. } => panic!("a source is never locked"),
        }
        // Old failures do not count.
        assert_eq!(
            policy.gate(None, Some(&busy), 16 * MINUTE),
            Gate::Open {
                delay: Duration::ZERO
            }
        );
    }
}
