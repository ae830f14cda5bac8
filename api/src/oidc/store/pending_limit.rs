//! How many authorization requests one address may start: each `/oidc/authorize` without a
//! session renders a login page and seals a request (`oidc/sealed_request.rs`) before anyone
//! has authenticated. Nothing is stored any more, but the work is still unauthenticated, so an
//! address gets `server.authorization_requests_per_minute` ([`REQUESTS_PER_SOURCE`] unless
//! configured) a minute on this replica; beyond that it is told to wait.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Authorization requests one address may start per [`WINDOW`] unless configured.
pub const REQUESTS_PER_SOURCE: u32 = crate::config::DEFAULT_AUTHORIZATION_REQUESTS_PER_MINUTE;
/// The counting window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered before windows that ended are forgotten.
const SWEEP_ABOVE: usize = 10_000;

/// One address's window.
#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    count: u32,
}

/// Per-address counts of started authorization requests.
#[derive(Debug)]
pub struct PendingRequestLimit {
    per_window: u32,
    windows: Mutex<HashMap<IpAddr, Window>>,
}

impl Default for PendingRequestLimit {
    fn default() -> Self {
        Self::new(REQUESTS_PER_SOURCE)
    }
}

impl PendingRequestLimit {
    /// `per_window` requests per address and [`WINDOW`].
    pub fn new(per_window: u32) -> Self {
        Self {
            per_window,
            windows: Mutex::default(),
        }
    }

    /// Counts one request from `source` at `now`; `Err` with how long to wait when the
    /// address has used its window.
    pub fn admit(&self, source: IpAddr, now: Instant) -> Result<(), Duration> {
        // A panic elsewhere cannot leave a count inconsistent: each update is one assignment.
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if windows.len() > SWEEP_ABOVE {
            windows.retain(|_, w| now.duration_since(w.started) < WINDOW);
        }
        let window = windows.entry(source).or_insert(Window {
            started: now,
            count: 0,
        });
        if now.duration_since(window.started) >= WINDOW {
            *window = Window {
                started: now,
                count: 0,
            };
        }
        if window.count >= self.per_window {
            return Err(WINDOW.saturating_sub(now.duration_since(window.started)));
        }
        window.count += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_window_and_then_waits() {
        let limit = PendingRequestLimit::default();
        let start = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        for _ in 0..REQUESTS_PER_SOURCE {
            assert_eq!(limit.admit(a, start), Ok(()));
        }
        let wait = limit
            .admit(a, start + Duration::from_secs(20))
            .expect_err("over the limit");
        assert_eq!(wait, Duration::from_secs(40));
        assert_eq!(
            limit.admit(b, start),
            Ok(()),
            "another address is not affected"
        );
        assert_eq!(limit.admit(a, start + WINDOW), Ok(()), "a new window");
    }
}
