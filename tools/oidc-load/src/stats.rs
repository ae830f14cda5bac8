//! Counting and timing iterations: one [`Recorder`] per worker (no locks while measuring),
//! merged at the end into a [`Report`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::error::LoadError;
use crate::outcome::FlowError;

/// Latencies are recorded in microseconds, from 1 µs to an hour, to 3 significant digits.
const HIGHEST_MICROS: u64 = 3_600_000_000;

fn histogram() -> Result<Histogram<u64>, LoadError> {
    Histogram::new_with_bounds(1, HIGHEST_MICROS, 3)
        .map_err(|e| LoadError::Usage(format!("latency histogram: {e}")))
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// How often one category of failure happened, with the first one's detail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorCount {
    pub count: u64,
    pub first: String,
}

/// What one worker (or a merge of workers) saw.
#[derive(Debug, Clone)]
pub struct Recorder {
    total: Histogram<u64>,
    steps: BTreeMap<&'static str, Histogram<u64>>,
    ok: u64,
    errors: BTreeMap<String, ErrorCount>,
}

impl Recorder {
    pub fn new() -> Result<Self, LoadError> {
        Ok(Self {
            total: histogram()?,
            steps: BTreeMap::new(),
            ok: 0,
            errors: BTreeMap::new(),
        })
    }

    /// A successful iteration of `total` duration, with the durations of its parts.
    pub fn record_ok(&mut self, total: Duration, steps: &[(&'static str, Duration)]) {
        self.ok += 1;
        self.total.saturating_record(micros(total));
        for (name, duration) in steps {
            if !self.steps.contains_key(name)
                && let Ok(h) = histogram()
            {
                self.steps.insert(name, h);
            }
            if let Some(h) = self.steps.get_mut(name) {
                h.saturating_record(micros(*duration));
            }
        }
    }

    /// A failed iteration. Its latency is not part of the distribution.
    pub fn record_error(&mut self, error: &FlowError) {
        self.errors
            .entry(error.category.to_string())
            .and_modify(|c| c.count += 1)
            .or_insert_with(|| ErrorCount {
                count: 1,
                first: error.detail.clone(),
            });
    }

    pub fn ok(&self) -> u64 {
        self.ok
    }

    pub fn failed(&self) -> u64 {
        self.errors.values().map(|c| c.count).sum()
    }

    /// Adds `other`'s counts and samples to these.
    pub fn merge(&mut self, other: &Recorder) {
        self.ok += other.ok;
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.total.add(&other.total);
        for (name, h) in &other.steps {
            match self.steps.get_mut(name) {
                Some(mine) => {
                    let _ = mine.add(h);
                }
                None => {
                    self.steps.insert(name, h.clone());
                }
            }
        }
        for (category, count) in &other.errors {
            self.errors
                .entry(category.clone())
                .and_modify(|c| c.count += count.count)
                .or_insert_with(|| count.clone());
        }
    }

    /// The latency distribution of successful iterations.
    pub fn latency(&self) -> Latency {
        Latency::of(&self.total)
    }

    /// The latency distribution of each part of the iterations.
    pub fn step_latencies(&self) -> BTreeMap<String, Latency> {
        self.steps
            .iter()
            .map(|(name, h)| ((*name).to_owned(), Latency::of(h)))
            .collect()
    }

    pub fn errors(&self) -> &BTreeMap<String, ErrorCount> {
        &self.errors
    }
}

/// Percentiles of a latency distribution, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Self {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }
}

/// The result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `login` or `refresh`.
    pub mode: String,
    pub issuer: String,
    pub client_id: String,
    /// `client_secret_basic`, `client_secret_post` or `none`.
    pub client_auth: String,
    pub pkce: bool,
    pub concurrency: usize,
    pub warmup_seconds: f64,
    /// Iterations finished during warm-up (not counted below).
    pub warmup_iterations: u64,
    /// Refresh mode: logins that obtained refresh tokens (not counted below).
    pub setup_logins: u64,
    /// Measured wall time: from the end of warm-up to the end of the last measured iteration.
    pub elapsed_seconds: f64,
    pub completed: u64,
    pub failed: u64,
    /// `failed / (completed + failed)`.
    pub error_ratio: f64,
    /// Completed iterations per second.
    pub throughput: f64,
    /// Latency of completed iterations (a whole login, or one refresh grant).
    pub latency: Latency,
    /// Login mode: `authorize` (to the parsed login form), `login` (form post to the code),
    /// `token` (code exchange).
    pub steps: BTreeMap<String, Latency>,
    /// Failures by category.
    pub errors: BTreeMap<String, ErrorCount>,
}

impl Report {
    /// Whether more than `max_ratio` of the iterations failed (a run that measured nothing
    /// counts as failed).
    pub fn exceeds_error_ratio(&self, max_ratio: f64) -> bool {
        self.completed + self.failed == 0 || self.error_ratio > max_ratio
    }

    /// A human-readable summary.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let what = if self.mode == "refresh" {
            "refresh grants"
        } else {
            "complete logins"
        };
        let _ = writeln!(
            out,
            "{what}: {} issuer {}, client {} ({}, PKCE {})",
            self.mode,
            self.issuer,
            self.client_id,
            self.client_auth,
            if self.pkce { "S256" } else { "off" }
        );
        let _ = writeln!(
            out,
            "  {} concurrent, {:.1} s measured after {:.1} s warm-up ({} warm-up iterations{})",
            self.concurrency,
            self.elapsed_seconds,
            self.warmup_seconds,
            self.warmup_iterations,
            if self.setup_logins > 0 {
                format!(", {} logins for refresh tokens", self.setup_logins)
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            out,
            "  throughput {:.1}/s: {} completed, {} failed (error ratio {:.4})",
            self.throughput, self.completed, self.failed, self.error_ratio
        );
        let line = |label: &str, l: &Latency| {
            format!(
                "  {label:<10} p50 {:>8.2} ms  p90 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms  mean {:>8.2} ms\n",
                l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms, l.mean_ms
            )
        };
        out.push_str(&line("latency", &self.latency));
        for (name, l) in &self.steps {
            out.push_str(&line(name, l));
        }
        for (category, count) in &self.errors {
            let _ = writeln!(
                out,
                "  error {category}: {} (first: {})",
                count.count, count.first
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{Category, Step};

    #[test]
    fn percentiles_and_merge() {
        let mut a = Recorder::new().expect("recorder");
        let mut b = Recorder::new().expect("recorder");
        for ms in 1..=50 {
            a.record_ok(
                Duration::from_millis(ms),
                &[("token", Duration::from_millis(1))],
            );
        }
        for ms in 51..=100 {
            b.record_ok(Duration::from_millis(ms), &[]);
        }
        b.record_error(&FlowError::new(Category::LoginRejected, "first"));
        b.record_error(&FlowError::new(Category::LoginRejected, "second"));
        a.record_error(&FlowError::new(Category::Status(Step::Token, 503), "x"));
        a.merge(&b);
        assert_eq!(a.ok(), 100);
        assert_eq!(a.failed(), 3);
        let l = a.latency();
        assert_eq!(l.count, 100);
        // 3 significant digits: within 0.1%.
        assert!((l.p50_ms - 50.0).abs() < 0.1, "{l:?}");
        assert!((l.p90_ms - 90.0).abs() < 0.1, "{l:?}");
        assert!((l.p99_ms - 99.0).abs() < 0.1, "{l:?}");
        assert!((l.max_ms - 100.0).abs() < 0.1, "{l:?}");
        assert!((l.mean_ms - 50.5).abs() < 0.1, "{l:?}");
        assert_eq!(a.step_latencies()["token"].count, 50);
        let rejected = &a.errors()["login_rejected"];
        assert_eq!(rejected.count, 2);
        assert_eq!(rejected.first, "first");
        assert_eq!(a.errors()["http_503:token"].count, 1);
    }

    #[test]
    fn an_empty_recorder_reports_zeros() {
        let r = Recorder::new().expect("recorder");
        assert_eq!(r.latency(), Latency::default());
        assert_eq!(r.failed(), 0);
    }

    fn report(completed: u64, failed: u64) -> Report {
        Report {
            mode: "login".into(),
            issuer: "http://i".into(),
            client_id: "c".into(),
            client_auth: "none".into(),
            pkce: true,
            concurrency: 2,
            warmup_seconds: 0.0,
            warmup_iterations: 0,
            setup_logins: 0,
            elapsed_seconds: 1.0,
            completed,
            failed,
            error_ratio: if completed + failed == 0 {
                0.0
            } else {
                failed as f64 / (completed + failed) as f64
            },
            throughput: completed as f64,
            latency: Latency::default(),
            steps: BTreeMap::new(),
            errors: BTreeMap::new(),
        }
    }

    #[test]
    fn error_ratio_threshold() {
        assert!(!report(10, 0).exceeds_error_ratio(0.0));
        assert!(report(9, 1).exceeds_error_ratio(0.0));
        assert!(!report(9, 1).exceeds_error_ratio(0.1));
        assert!(report(0, 0).exceeds_error_ratio(1.0), "nothing measured");
        let text = report(9, 1).to_text();
        assert!(text.contains("throughput 9.0/s"), "{text}");
    }
}
