//! `novads dev` evaluates the security monitor's federation checks over its own data and
//! exports the monitor's metrics on `/metrics`: `promtool check metrics` accepts the
//! exposition, and a real Prometheus (Debian package `prometheus`) started here scrapes
//! `novads dev` and answers a PromQL query with the compliance ratio.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_novads");

/// The demo realm's ratio on fresh data, `(pass + warn) / measured`: of its eleven realm
/// checks, seven pass (`accounts.departed-with-access`: nobody holds access; `accounts.stale`:
/// the audit trail is empty, so nobody has gone without a sign-in for long;
/// `auth.directory-tls`: the built-in directory never leaves the configuration;
/// `auth.lockout` and `auth.directory-lockout`: novads locks after 5 failures, and the
/// built-in directory is reached only through novads; no sign-ins, so
/// `auth.failed-login-ratio` and `auth.lockout-spike` hold), three warn (the built-in
/// directory enforces no minimum length, expiry or history: `auth.password-policy`,
/// `auth.password-max-age`, `auth.password-history`) and one is an error, its fact not
/// collected (`audit.attempts-recorded`).
const DEMO_RATIO: f64 = 10.0 / 11.0;
const QUERY: &str = "novads_compliance_ratio{municipality=\"demo\"}";

/// A server the test needs: its path, or `None` (skip) unless NOVADS_REQUIRE_SERVICES=1.
fn installed(name: &str) -> Option<PathBuf> {
    let found = ["/usr/bin", "/usr/local/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.exists());
    if found.is_none() {
        assert!(
            std::env::var("NOVADS_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "{name} is not installed (Debian package prometheus; scripts/install-deps)"
        );
        eprintln!("skipping: {name} is not installed");
    }
    found
}

struct Dev {
    _child: Child,
    base: String,
}

/// Starts `novads dev` on a free port and waits for its banner.
async fn start_dev(data_dir: &Path) -> Dev {
    let mut child = Command::new(BIN)
        .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env_remove("KUBECONFIG")
        .env_remove("NOVADS_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn novads dev");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let base = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            if let Some(url) = line.trim().strip_prefix("health") {
                return url.trim().trim_end_matches("/healthz").to_owned();
            }
        }
        panic!("novads dev exited without printing its URLs");
    })
    .await
    .expect("banner within 30 s");
    Dev {
        _child: child,
        base,
    }
}

/// The value of the sample `series` (name and labels exactly) in an exposition.
fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// Polls `check` every 250 ms for at most `seconds`.
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    seconds: u64,
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    for _ in 0..seconds * 4 {
        if let Some(value) = check().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{what} did not happen within {seconds} s");
}

#[tokio::test]
async fn prometheus_scrapes_the_compliance_ratio_from_novads_dev() {
    let (Some(prometheus), Some(promtool)) = (installed("prometheus"), installed("promtool"))
    else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let dev = start_dev(&tmp.path().join("dev")).await;
    let http = reqwest::Client::new();

    let metrics_url = format!("{}/metrics", dev.base);
    let exposition = eventually(30, "the first evaluation", || async {
        let text = http
            .get(&metrics_url)
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.contains(QUERY).then_some(text)
    })
    .await;
    assert_eq!(sample(&exposition, QUERY), Some(DEMO_RATIO), "{exposition}");
    for series in [
        "novads_monitor_subjects_evaluated{check=\"auth.lockout\",municipality=\"demo\"} 1",
        "novads_monitor_check_errors{check=\"audit.attempts-recorded\"} 1",
        "novads_monitor_check_errors{check=\"accounts.stale\"} 0",
        "novads_monitor_evaluation_duration_seconds_count",
        "novads_monitor_last_success_timestamp_seconds",
    ] {
        assert!(exposition.contains(series), "no {series} in\n{exposition}");
    }

    // promtool's linter accepts the whole exposition.
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    let mut stdin = check.stdin.take().expect("stdin");
    stdin
        .write_all(exposition.as_bytes())
        .await
        .expect("write to promtool");
    drop(stdin);
    let checked = check.wait_with_output().await.expect("promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(
        checked.status.success() && said.trim().is_empty(),
        "promtool check metrics:\n{said}"
    );

    // A real Prometheus scrapes novads dev every second.
    let target = dev.base.trim_start_matches("http://").to_string();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
    let prometheus_addr = listener.local_addr().expect("addr");
    drop(listener);
    let config = tmp.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             scrape_configs:\n  - job_name: novads-dev\n    static_configs: [{{targets: ['{target}']}}]\n"
        ),
    )
    .expect("write prometheus.yml");
    let _prometheus = Command::new(prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            tmp.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={prometheus_addr}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start prometheus");
    let query_url = url::Url::parse_with_params(
        &format!("http://{prometheus_addr}/api/v1/query"),
        &[("query", QUERY)],
    )
    .expect("query URL");
    let answer: serde_json::Value = eventually(60, "Prometheus answering the query", || async {
        let answer: serde_json::Value = http
            .get(query_url.clone())
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let found = answer["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty());
        found.then_some(answer)
    })
    .await;
    assert_eq!(answer["status"], "success", "{answer}");
    let result = &answer["data"]["result"][0];
    assert_eq!(result["metric"]["job"], "novads-dev", "{answer}");
    let value: f64 = result["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no value in {answer}"));
    assert_eq!(value, DEMO_RATIO, "{answer}");
}
