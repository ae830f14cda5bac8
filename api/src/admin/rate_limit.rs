//! Per-token rate limits of the admin API: each caller (the token's subject, so that a person's
//! or service's tokens share one budget) may make `admin_api.rate_limit.requests_per_minute`
//! requests a minute, `burst` of them at once (GCRA, the governor crate). Checked after the
//! token is verified and before anything else is read, so a flood costs one signature check
//! per request and reaches neither the database nor the cluster.

use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::problem::AdminError;
use crate::config::AdminRateLimitConfig;

/// How many callers' states are kept before the idle ones are dropped.
const RETAIN_ABOVE: usize = 10_000;

/// The admin API's limiter, one per server; `None` inside when the limit is off.
pub struct AdminRateLimiter {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
}

impl AdminRateLimiter {
    pub fn new(config: &AdminRateLimitConfig) -> Self {
        let limiter = NonZeroU32::new(config.requests_per_minute).map(|rate| {
            let burst = NonZeroU32::new(config.burst).unwrap_or(NonZeroU32::MIN);
            RateLimiter::keyed(Quota::per_minute(rate).allow_burst(burst))
        });
        Self {
            limiter,
            clock: DefaultClock::default(),
        }
    }

    /// Counts one request of `subject`; refused with the seconds until the next is allowed.
    pub fn check(&self, subject: &str) -> Result<(), AdminError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        if limiter.len() > RETAIN_ABOVE {
            limiter.retain_recent();
        }
        limiter.check_key(&subject.to_owned()).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            // Whole seconds, rounded up: a client that waits as told is let in.
            AdminError::TooManyRequests(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_caller_has_its_own_budget_and_is_told_when_to_come_back() {
        let limiter = AdminRateLimiter::new(&AdminRateLimitConfig {
            requests_per_minute: 1,
            burst: 2,
        });
        assert_eq!(limiter.check("demo:anna"), Ok(()));
        assert_eq!(limiter.check("demo:anna"), Ok(()));
        match limiter.check("demo:anna") {
            Err(AdminError::TooManyRequests(seconds)) => {
                assert!((1..=60).contains(&seconds), "{seconds}")
            }
            other => panic!("not refused: {other:?}"),
        }
        assert_eq!(limiter.check("demo:peteris"), Ok(()));
    }

    #[test]
    fn a_rate_of_zero_turns_the_limit_off() {
        let limiter = AdminRateLimiter::new(&AdminRateLimitConfig {
            requests_per_minute: 0,
            burst: 1,
        });
        for _ in 0..100 {
            assert_eq!(limiter.check("demo:anna"), Ok(()));
        }
    }
}
