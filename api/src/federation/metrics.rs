//! Federation metrics: sign-in attempts by realm and outcome, their latency, directory server
//! health and lockouts. Label values are bounded: realms and URLs come from the configuration,
//! outcomes from a fixed list; never a label per user.

use std::time::Duration;

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};

use super::directory::ldap::ServerHealth;

#[derive(Clone)]
pub struct FederationMetrics {
    attempts: IntCounterVec,
    latency: HistogramVec,
    directory_up: IntGaugeVec,
    lockouts: IntCounterVec,
    audit_failures: IntCounter,
}

impl FederationMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let attempts = IntCounterVec::new(
            Opts::new(
                "login_attempts_total",
                "Sign-in attempts by realm and outcome (succeeded or the audit reason).",
            ),
            &["realm", "outcome"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "login_duration_seconds",
                "Time to decide a sign-in, including the directory and lockout delays.",
            )
            .buckets(vec![
                0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["realm"],
        )?;
        let directory_up = IntGaugeVec::new(
            Opts::new(
                "directory_up",
                "1 when the directory server answered its last request, 0 while it is failing.",
            ),
            &["realm", "url"],
        )?;
        let lockouts = IntCounterVec::new(
            Opts::new(
                "lockouts_total",
                "Accounts locked after too many failed sign-ins.",
            ),
            &["realm"],
        )?;
        let audit_failures = IntCounter::new(
            "audit_write_failures_total",
            "Sign-ins refused because their audit row could not be written.",
        )?;
        registry.register(Box::new(attempts.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(directory_up.clone()))?;
        registry.register(Box::new(lockouts.clone()))?;
        registry.register(Box::new(audit_failures.clone()))?;
        Ok(Self {
            attempts,
            latency,
            directory_up,
            lockouts,
            audit_failures,
        })
    }

    pub fn attempt(&self, realm: &str, outcome: &str, elapsed: Duration) {
        self.attempts.with_label_values(&[realm, outcome]).inc();
        self.latency
            .with_label_values(&[realm])
            .observe(elapsed.as_secs_f64());
    }

    pub fn directory_health(&self, realm: &str, servers: &[ServerHealth]) {
        for server in servers {
            self.directory_up
                .with_label_values(&[realm, &server.url])
                .set(i64::from(server.up));
        }
    }

    pub fn lockout(&self, realm: &str) {
        self.lockouts.with_label_values(&[realm]).inc();
    }

    pub fn audit_failure(&self) {
        self.audit_failures.inc();
    }
}
