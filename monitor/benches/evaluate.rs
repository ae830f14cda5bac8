//! The monitor at scale: the shipped policies over 500 municipalities, their 500 realms and
//! 10,000 virtual servers (each realm with 1,000 accounts' sign-in ages), evaluated on one
//! thread, then the reports built and the metrics recorded and rendered as `/metrics` does.
//!
//! Run: `cargo bench -p novads-monitor --bench evaluate`. Prints figures; asserts nothing
//! about speed. `NOVADS_BENCH_PASSES` (default 3) sets the timed passes. Besides wall time it
//! prints the thread's CPU time (Linux `/proc/thread-self/schedstat`), which a machine shared
//! with other work does not inflate.

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use novads_monitor::metrics::MonitorMetrics;
use novads_monitor::{Lang, PolicySet, evaluate, report};
use prometheus::{Encoder, Registry, TextEncoder};

mod fleet;
use fleet::facts;

/// CPU time this thread has run, when the kernel says (Linux).
fn thread_cpu() -> Option<std::time::Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(std::time::Duration::from_nanos(nanos))
}

fn main() {
    let passes: usize = std::env::var("NOVADS_BENCH_PASSES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let policies = PolicySet::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies"))
        .expect("policies");
    assert!(policies.problems.is_empty(), "{:?}", policies.problems);
    let started = Instant::now();
    let document = facts();
    println!(
        "facts: {} subjects ({} municipalities, {} virtual servers) built in {:.0} ms",
        document.subjects.len(),
        fleet::MUNICIPALITIES,
        fleet::SERVERS,
        started.elapsed().as_secs_f64() * 1000.0
    );
    let now = "2026-12-01T00:00:00Z".parse().expect("time");
    let mut results = 0;
    let mut best = f64::MAX;
    let mut best_cpu = f64::MAX;
    for _ in 0..passes {
        let started = Instant::now();
        let cpu_started = thread_cpu();
        let evaluation = black_box(evaluate(&policies, &document, &[], now));
        let elapsed = started.elapsed().as_secs_f64();
        if let (Some(before), Some(after)) = (cpu_started, thread_cpu()) {
            best_cpu = best_cpu.min((after - before).as_secs_f64());
        }
        best = best.min(elapsed);
        results = evaluation.results.len();
    }
    println!(
        "evaluate: {} checks, {} subjects, {results} results: best of {passes} passes {:.0} ms wall ({:.2} µs per result), {} CPU",
        policies.checks.len(),
        document.subjects.len(),
        best * 1000.0,
        best * 1e6 / results as f64,
        if best_cpu < f64::MAX {
            format!("{:.0} ms", best_cpu * 1000.0)
        } else {
            "unknown".to_string()
        }
    );
    let evaluation = evaluate(&policies, &document, &[], now);
    let started = Instant::now();
    let reports = black_box(report::reports(&evaluation, Lang::En));
    println!(
        "reports: {} Report/ClusterReport objects in {:.0} ms",
        reports.len(),
        started.elapsed().as_secs_f64() * 1000.0
    );

    // `/metrics`: the registry the operator and `novads dev` serve, rendered as text.
    let registry = Registry::new();
    let metrics = MonitorMetrics::register(&registry, false).expect("metrics");
    let started = Instant::now();
    metrics.record(&evaluation);
    let recorded = started.elapsed().as_secs_f64();
    let mut best_render = f64::MAX;
    let mut best_render_cpu = f64::MAX;
    let mut text = Vec::new();
    for _ in 0..passes {
        text.clear();
        let started = Instant::now();
        let cpu_started = thread_cpu();
        let families = registry.gather();
        TextEncoder::new()
            .encode(&families, &mut text)
            .expect("encode");
        best_render = best_render.min(started.elapsed().as_secs_f64());
        if let (Some(before), Some(after)) = (cpu_started, thread_cpu()) {
            best_render_cpu = best_render_cpu.min((after - before).as_secs_f64());
        }
    }
    let series = text
        .split(|byte| *byte == b'\n')
        .filter(|line| !line.is_empty() && !line.starts_with(b"#"))
        .count();
    println!(
        "metrics: recorded in {:.0} ms; /metrics rendered ({series} series, {} KiB) in {:.1} ms wall, {:.1} ms CPU (best of {passes})",
        recorded * 1000.0,
        text.len() / 1024,
        best_render * 1000.0,
        best_render_cpu * 1000.0
    );
}
