//! Brute-force protection: failures are counted per account and per source address in the
//! database, so every replica sees the same numbers.
//!
//! An account locks for a while after too many failures within a window (by default 5 in 15
//! minutes, as the national password rules expect). A source address that fails often must
//! wait a growing time after its latest failure, and is told so (`429` with `Retry-After`)
//! rather than held inside the request; this blunts password spraying across many accounts
//! without locking out an office that shares one address. Only the user's own mistakes count:
//! a directory that is down or slow never locks anyone.
//!
//! The count is exact only if an account's attempts are decided one after another: an attempt
//! that read the counter before a parallel attempt's failure was recorded would otherwise reach
//! the directory too. [`AccountTurns`] gives each account one turn at a time on this replica.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::OwnedMutexGuard;

use crate::db::{Database, WriteScope, on_pool, on_write};

/// Tunables, with the defaults the national password rules suggest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Failures within `window` that lock an account.
    pub max_failures: u32,
    pub window: Duration,
    /// How long a locked account stays locked.
    pub lock_duration: Duration,
    /// Source failures before a source must wait between attempts.
    pub source_free_failures: u32,
    /// First wait; each further failure doubles it up to `max_delay`.
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        Self {
            max_failures: 5,
            window: Duration::from_secs(15 * 60),
            lock_duration: Duration::from_secs(15 * 60),
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
    /// Unix milliseconds of the latest failure (`None` on rows counted before it was kept).
    pub last_failure_ms: Option<i64>,
}

/// What to do with an attempt before checking its password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Ask the directory.
    Open,
    /// Refuse without asking the directory: the account is locked.
    Locked { until_ms: i64 },
    /// Refuse without asking the directory: the source must wait this long first.
    Throttled { retry_after: Duration },
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

    /// How long a source with `failures` must wait after its latest failure.
    fn source_wait(&self, failures: u32) -> Duration {
        if failures <= self.source_free_failures {
            return Duration::ZERO;
        }
        let doublings = (failures - self.source_free_failures - 1).min(16);
        self.base_delay
            .saturating_mul(1 << doublings)
            .min(self.max_delay)
    }

    /// Decides on an attempt from the account's and the source's counters. Pure.
    ///
    /// Accounts are not slowed before they lock: with attempts decided one at a time the lock
    /// already bounds the guesses per window exactly, and a delay would only make the owner
    /// wait after a typo.
    pub fn gate(&self, account: Option<&Counter>, source: Option<&Counter>, now_ms: i64) -> Gate {
        if let Some(until_ms) = account.and_then(|c| c.locked_until_ms)
            && until_ms > now_ms
        {
            return Gate::Locked { until_ms };
        }
        let wait = self.source_wait(self.live_failures(source, now_ms));
        let last = source.and_then(|c| c.last_failure_ms.or(Some(c.window_start_ms)));
        if let Some(last) = last
            && wait > Duration::ZERO
        {
            let wait_ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
            let remaining = last.saturating_add(wait_ms).saturating_sub(now_ms);
            if remaining > 0 {
                return Gate::Throttled {
                    retry_after: Duration::from_millis(remaining.unsigned_abs()),
                };
            }
        }
        Gate::Open
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

/// One turn at a time per account on this replica: an attempt holds its account's turn from
/// reading the counters until its failure is recorded (or its success has cleared them), so
/// the next attempt always reads a counter that includes every earlier failure. At most
/// `max_failures` wrong passwords per account and window then reach the directory from one
/// replica, whatever the concurrency; with R replicas, at most `max_failures + R - 1`, since
/// each replica can have one attempt under way that read the counter just below the limit.
///
/// Chosen over reserving a slot in the database before the directory is asked because that
/// costs every successful sign-in a second write (reserve, then release); a turn costs an
/// uncontended in-process lock, and parallel sign-ins of one account are rare except in an
/// attack. Entries are removed when their last holder leaves, so the map holds only accounts
/// with an attempt under way.
#[derive(Default)]
pub struct AccountTurns {
    waiting: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

/// An account's turn; the next attempt for the account proceeds when it is dropped.
pub struct Turn {
    guard: Option<OwnedMutexGuard<()>>,
    waiting: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    key: String,
}

impl AccountTurns {
    /// Waits for the account's turn.
    pub async fn take(&self, key: &str) -> Turn {
        let lock = {
            // A poisoned map only means another attempt panicked while holding it briefly;
            // the map itself is still consistent (every operation on it is one call).
            let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            waiting.entry(key.to_owned()).or_default().clone()
        };
        Turn {
            guard: Some(lock.lock_owned().await),
            waiting: self.waiting.clone(),
            key: key.to_owned(),
        }
    }

    /// Accounts with an attempt under way or waiting (for tests and metrics).
    pub fn busy(&self) -> usize {
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        // Only the map still holds the lock: nobody waits for this account any more.
        if waiting
            .get(&self.key)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            waiting.remove(&self.key);
        }
    }
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
        let row: Option<(i64, i64, Option<i64>, Option<i64>)> = on_pool!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT CAST(failures AS BIGINT), window_start, locked_until, last_failure \
                 FROM login_throttle WHERE key = $1",
            )
            .bind(key)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(
            |(failures, window_start_ms, locked_until_ms, last_failure_ms)| Counter {
                failures: u32::try_from(failures).unwrap_or(u32::MAX),
                window_start_ms,
                locked_until_ms,
                last_failure_ms,
            },
        ))
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
        let (failures, window_start_ms, locked_until_ms, last_failure_ms): (
            i64,
            i64,
            Option<i64>,
            Option<i64>,
        ) = on_write!(&mut write, |conn| {
            sqlx::query_as(
                    "INSERT INTO login_throttle AS t \
                       (key, failures, window_start, locked_until, last_failure) \
                     VALUES ($1, 1, $2, CASE WHEN 1 >= $4 THEN CAST($5 AS BIGINT) END, $2) \
                     ON CONFLICT (key) DO UPDATE SET \
                       failures = CASE WHEN t.window_start < $3 THEN 1 ELSE t.failures + 1 END, \
                       locked_until = CASE \
                         WHEN (CASE WHEN t.window_start < $3 THEN 1 ELSE t.failures + 1 END) >= $4 \
                         THEN CAST($5 AS BIGINT) ELSE t.locked_until END, \
                       window_start = CASE WHEN t.window_start < $3 THEN $2 ELSE t.window_start END, \
                       last_failure = $2 \
                     RETURNING CAST(failures AS BIGINT), window_start, locked_until, last_failure",
                )
                .bind(key)
                .bind(now_ms)
                .bind(window_floor)
                .bind(lock_at)
                .bind(lock_until)
                .fetch_one(&mut *conn)
                .await?
        });
        write.commit().await?;
        Ok(Counter {
            failures: u32::try_from(failures).unwrap_or(u32::MAX),
            window_start_ms,
            locked_until_ms,
            last_failure_ms,
        })
    }

    /// Deletes the counters that no longer decide anything at `now_ms`: their window has
    /// passed (no live failures, so no source wait either) and they hold no lock. Without
    /// this, every address and every name ever tried would keep a row. Returns how many went.
    pub async fn sweep_expired(&self, now_ms: i64) -> Result<u64, sqlx::Error> {
        let window_floor = now_ms.saturating_sub(self.policy.window_ms());
        let mut write = self.db.begin_write(WriteScope::Statement).await?;
        let deleted = on_write!(&mut write, |conn| {
            sqlx::query(
                "DELETE FROM login_throttle WHERE window_start < $1 \
                 AND (locked_until IS NULL OR locked_until <= $2)",
            )
            .bind(window_floor)
            .bind(now_ms)
            .execute(&mut *conn)
            .await?
            .rows_affected()
        });
        write.commit().await?;
        Ok(deleted)
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

    fn counter(failures: u32, last_failure_ms: i64, locked_until_ms: Option<i64>) -> Counter {
        Counter {
            failures,
            window_start_ms: 0,
            locked_until_ms,
            last_failure_ms: Some(last_failure_ms),
        }
    }

    #[test]
    fn no_history_opens() {
        assert_eq!(LockoutPolicy::default().gate(None, None, 0), Gate::Open);
    }

    #[test]
    fn accounts_are_not_slowed_before_they_lock() {
        let policy = LockoutPolicy::default();
        let four = counter(4, 1_000, None);
        assert_eq!(policy.gate(Some(&four), None, 1_001), Gate::Open);
    }

    #[test]
    fn a_busy_source_waits_from_its_latest_failure() {
        let policy = LockoutPolicy::default();
        let wait = |failures, now| policy.gate(None, Some(&counter(failures, MINUTE, None)), now);
        assert_eq!(wait(10, MINUTE), Gate::Open);
        assert_eq!(
            wait(11, MINUTE + 50),
            Gate::Throttled {
                retry_after: Duration::from_millis(200)
            }
        );
        assert_eq!(wait(11, MINUTE + 250), Gate::Open);
        assert_eq!(
            wait(13, MINUTE),
            Gate::Throttled {
                retry_after: Duration::from_millis(1000)
            }
        );
        assert_eq!(
            wait(200, MINUTE),
            Gate::Throttled {
                retry_after: policy.max_delay
            }
        );
        // Failures of a past window do not count.
        assert_eq!(wait(200, 16 * MINUTE), Gate::Open);
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
        assert_eq!(policy.gate(Some(&locked), None, 15 * MINUTE), Gate::Open);
    }

    #[tokio::test]
    async fn turns_serialise_one_account_and_leave_nothing_behind() {
        let turns = Arc::new(AccountTurns::default());
        let first = turns.take("account:talsi:jana").await;
        // Another account is not held up.
        let other = turns.take("account:talsi:ilze").await;
        let waiter = {
            let turns = turns.clone();
            tokio::spawn(async move {
                let _turn = turns.take("account:talsi:jana").await;
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiter.is_finished(),
            "a second attempt waits for the first"
        );
        drop(first);
        waiter.await.expect("second attempt ran");
        drop(other);
        assert_eq!(turns.busy(), 0);
    }
}
