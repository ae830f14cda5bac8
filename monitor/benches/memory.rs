//! The monitor's memory with 10,000 virtual servers: the shipped policies over the fleet of
//! `fleet` (500 municipalities, their realms with 1,000 accounts each, 10,000 servers), phase
//! by phase as the operator runs them: the facts document, the evaluation, the Reports, the
//! metrics.
//!
//! Run: `cargo bench -p novads-monitor --bench memory`. Prints, per phase, its time, the
//! resident set afterwards (`VmRSS`) and the peak during it (`VmHWM`, reset before each
//! phase through `/proc/self/clear_refs`; Linux). Asserts nothing about size or speed.

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use novads_monitor::metrics::MonitorMetrics;
use novads_monitor::{Lang, PolicySet, evaluate, report};

mod fleet;

/// A field of `/proc/self/status` in KiB.
fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resets the peak resident set to the current one (`echo 5 > /proc/self/clear_refs`).
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(
        || "unknown".to_owned(),
        |k| format!("{:.0} MiB", k as f64 / 1024.0),
    )
}

/// Runs `phase`, then prints its time, the resident set and the phase's peak.
fn measure<T>(name: &str, peak_resets: bool, phase: impl FnOnce() -> T) -> T {
    let before = status_kib("VmRSS:");
    reset_peak();
    let started = Instant::now();
    let value = black_box(phase());
    let elapsed = started.elapsed();
    println!(
        "{name:<28} {:>7.0} ms   RSS {:>8} (was {:>8})   peak during {:>8}",
        elapsed.as_secs_f64() * 1000.0,
        mib(status_kib("VmRSS:")),
        mib(before),
        if peak_resets {
            mib(status_kib("VmHWM:"))
        } else {
            "unknown".to_owned()
        },
    );
    value
}

fn main() {
    let peak_resets = reset_peak();
    let policies = measure("policies (built in)", peak_resets, || {
        PolicySet::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies"))
            .expect("policies")
    });
    assert!(policies.problems.is_empty(), "{:?}", policies.problems);
    let document = measure("facts document", peak_resets, fleet::facts);
    println!(
        "  {} subjects: {} municipalities, {} realms of {} accounts, {} virtual servers",
        document.subjects.len(),
        fleet::MUNICIPALITIES,
        fleet::MUNICIPALITIES,
        fleet::ACCOUNTS_PER_REALM,
        fleet::SERVERS
    );
    let now = "2026-12-01T00:00:00Z".parse().expect("time");
    let evaluation = measure("evaluate", peak_resets, || {
        evaluate(&policies, &document, &[], now)
    });
    println!("  {} results", evaluation.results.len());
    let reports = measure("reports (lv)", peak_resets, || {
        report::reports(&evaluation, Lang::Lv)
    });
    let registry = prometheus::Registry::new();
    let metrics = MonitorMetrics::register(&registry, false).expect("metrics");
    measure("metrics recorded", peak_resets, || {
        metrics.record(&evaluation)
    });
    drop(black_box(reports));
    drop(black_box(evaluation));
    measure("evaluation and reports freed", peak_resets, || ());
}
