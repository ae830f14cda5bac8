//! The monitor's Prometheus metrics, the same in `novads operator` and `novads dev`. Labels
//! are bounded: municipalities and checks come from the cluster and the policies, severities
//! from a fixed list; never a label per user or per server. Each evaluation replaces the
//! previous one's series, so a removed municipality or check leaves no stale series behind.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus::{Gauge, GaugeVec, Histogram, HistogramOpts, IntGaugeVec, Opts, Registry};

use crate::evaluate::{Evaluation, Outcome};

/// The `municipality` label of results that count towards no municipality (platform checks).
pub const PLATFORM_LABEL: &str = "";

/// The monitor's metrics, registered in a registry that exports them.
#[derive(Clone)]
pub struct MonitorMetrics {
    ratio: GaugeVec,
    evaluated: IntGaugeVec,
    failing: IntGaugeVec,
    errors: IntGaugeVec,
    duration: Histogram,
    last_success: Gauge,
}

impl MonitorMetrics {
    /// Registers the metrics in `registry`. Their names start with `novads_`; give
    /// `prefixed: true` for a registry that adds that prefix itself (`novads serve`'s).
    pub fn register(registry: &Registry, prefixed: bool) -> Result<Self, prometheus::Error> {
        let name = |name: &str| {
            if prefixed {
                name.to_string()
            } else {
                format!("novads_{name}")
            }
        };
        let ratio = GaugeVec::new(
            Opts::new(
                name("compliance_ratio"),
                "Share of a municipality's measured check results whose requirement holds: \
                 (pass + warn) / (pass + warn + fail + error), skips not counted; absent when \
                 nothing was measured.",
            ),
            &["municipality"],
        )?;
        let evaluated = IntGaugeVec::new(
            Opts::new(
                name("monitor_subjects_evaluated"),
                "Subjects a check was evaluated on in the last evaluation, per municipality \
                 (empty for platform checks).",
            ),
            &["check", "municipality"],
        )?;
        let failing = IntGaugeVec::new(
            Opts::new(
                name("monitor_subjects_failing"),
                "Subjects failing a check in the last evaluation (exempted ones are skipped, \
                 not failing).",
            ),
            &["check", "municipality", "severity"],
        )?;
        let errors = IntGaugeVec::new(
            Opts::new(
                name("monitor_check_errors"),
                "Results of a check that were errors in the last evaluation: a broken check, \
                 facts that could not be collected, an expression that failed.",
            ),
            &["check"],
        )?;
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                name("monitor_evaluation_duration_seconds"),
                "How long an evaluation takes, from collecting facts to the last output.",
            )
            .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]),
        )?;
        let last_success = Gauge::new(
            name("monitor_last_success_timestamp_seconds"),
            "When the last evaluation whose every output was written ran (Unix time); 0 before \
             the first.",
        )?;
        registry.register(Box::new(ratio.clone()))?;
        registry.register(Box::new(evaluated.clone()))?;
        registry.register(Box::new(failing.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(last_success.clone()))?;
        Ok(Self {
            ratio,
            evaluated,
            failing,
            errors,
            duration,
            last_success,
        })
    }

    /// Replaces the per-check and per-municipality series with those of `evaluation`.
    pub fn record(&self, evaluation: &Evaluation) {
        let counts = Counts::of(evaluation);
        self.ratio.reset();
        for (municipality, tally) in evaluation.summary() {
            if let Some(ratio) = tally.compliance_ratio {
                self.ratio.with_label_values(&[&municipality]).set(ratio);
            }
        }
        self.evaluated.reset();
        for ((check, municipality), count) in &counts.evaluated {
            self.evaluated
                .with_label_values(&[check, municipality])
                .set(*count);
        }
        self.failing.reset();
        for ((check, municipality, severity), count) in &counts.failing {
            self.failing
                .with_label_values(&[check, municipality, severity])
                .set(*count);
        }
        self.errors.reset();
        for (check, count) in &counts.errors {
            self.errors.with_label_values(&[check]).set(*count);
        }
    }

    /// Records how long an evaluation took, whether or not it succeeded.
    pub fn observe_duration(&self, elapsed: Duration) {
        self.duration.observe(elapsed.as_secs_f64());
    }

    /// Records that the evaluation of `at` succeeded.
    pub fn mark_success(&self, at: DateTime<Utc>) {
        self.last_success.set(at.timestamp_millis() as f64 / 1000.0);
    }
}

/// The series of one evaluation, counted before any is written.
#[derive(Default)]
struct Counts<'a> {
    evaluated: BTreeMap<(&'a str, &'a str), i64>,
    failing: BTreeMap<(&'a str, &'a str, &'static str), i64>,
    errors: BTreeMap<&'a str, i64>,
}

impl<'a> Counts<'a> {
    fn of(evaluation: &'a Evaluation) -> Self {
        let mut counts = Self::default();
        // Every check has an error series, zero when it ran cleanly, so alerts see zeros.
        for check in evaluation.checks.keys() {
            counts.errors.insert(check, 0);
        }
        for result in &evaluation.results {
            let check = result.check.as_str();
            let municipality = result.municipality.as_deref().unwrap_or(PLATFORM_LABEL);
            *counts.evaluated.entry((check, municipality)).or_default() += 1;
            let failing = counts
                .failing
                .entry((check, municipality, result.severity.as_str()))
                .or_default();
            match result.outcome {
                Outcome::Fail => *failing += 1,
                Outcome::Error => *counts.errors.entry(check).or_default() += 1,
                Outcome::Pass | Outcome::Warn | Outcome::Skip => {}
            }
        }
        counts
    }
}
