//! Complete OpenID Connect code-flow logins per second (authorize → login form → token) and
//! refresh-token grants per second, against the real `novads serve` binary with one local slapd
//! realm, its state on SQLite and on PostgreSQL. The load comes from `oidc-load`
//! (tools/oidc-load) used as a library: every login is a fresh browser without a single sign-on
//! cookie. Prints figures and the CPU each process used; asserts only that every request
//! succeeded and that the audit chain is intact with at least one row per login and refresh.
//!
//! Run: `cargo bench --bench oidc_login` (needs slapd and PostgreSQL, as the tests do).
//! `NOVADS_BENCH_SECONDS` (default 8, measured per case), `NOVADS_BENCH_WARMUP` (default 2),
//! `NOVADS_BENCH_CLIENTS` (default 32) and `NOVADS_BENCH_USERS` (default 100 directory users)
//! tune the run. See docs/benchmarks.md.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use novads_oidc_load::{Credentials, Limit, LoadConfig, Mode, Report};
use novads_testkit::fixtures::bench;
use novads_testkit::{Municipality, Postgres, Slapd, serve};

const BIN: &str = env!("CARGO_BIN_EXE_novads");
const PUBLIC_CLIENT: &str = "bench-public";
const CONFIDENTIAL_CLIENT: &str = "bench-confidential";
const REDIRECT_URI: &str = "http://127.0.0.1/cb";
/// `demo-client-secret`, argon2id with the `argon2` crate's defaults (m=19456, t=2, p=1), as
/// `secret_hash` values are made for production.
const SECRET: &str = "demo-client-secret";
const SECRET_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$0zRucgKNwySQRxoit2ER+w$iDkVZbdhJA9fQrzaNsG0gIjqer7wb69X+sWub423aug";
/// Linux reports process CPU time in clock ticks of 1/100 s (USER_HZ) on every mainstream
/// architecture.
const TICKS_PER_SECOND: f64 = 100.0;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Settings {
    seconds: Duration,
    warmup: Duration,
    clients: usize,
    users: Vec<Credentials>,
}

/// One measured case.
struct Row {
    backend: &'static str,
    case: &'static str,
    report: Report,
    cpu: CpuShares,
}

#[tokio::main]
async fn main() {
    let seconds = Duration::from_secs(env_number("NOVADS_BENCH_SECONDS", 8).max(1));
    let warmup = Duration::from_secs(env_number("NOVADS_BENCH_WARMUP", 2));
    let clients = env_number("NOVADS_BENCH_CLIENTS", 32).max(1) as usize;
    let user_count = env_number("NOVADS_BENCH_USERS", 100).max(1);
    let Some(ldap) = Slapd::start(Municipality::Talsi).await else {
        eprintln!("skipped: slapd is not installed");
        return;
    };
    add_users(&ldap, user_count).await;
    let users = (1..=user_count)
        .map(|n| Credentials::new(bench::login(n), bench::password(n)))
        .collect();
    let settings = Settings {
        seconds,
        warmup,
        clients,
        users,
    };
    println!(
        "oidc_login benchmark: novads serve + one local slapd ({user_count} users), {clients} concurrent \
         browsers, {} s warm-up + {} s measured per case; load average before: {}",
        warmup.as_secs(),
        seconds.as_secs(),
        load_average()
    );

    let mut rows = Vec::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = format!("sqlite://{}/novads.db", dir.path().display());
    rows.extend(backend("SQLite", &sqlite, &ldap, &settings, dir.path()).await);

    match Postgres::start().await {
        Some(pg) => {
            let url = pg.create_database("oidc_bench").await;
            let dir = tempfile::tempdir().expect("tempdir");
            rows.extend(backend("PostgreSQL", &url, &ldap, &settings, dir.path()).await);
        }
        None => println!("PostgreSQL case skipped: PostgreSQL is not installed"),
    }
    println!("\n{}", table(&rows));
    println!("load average after: {}", load_average());
}

/// `bench1` … `benchN` in the Talsi directory (slapd hashes the cleartext passwords).
async fn add_users(ldap: &Slapd, count: u64) {
    ldap.ldapadd(&bench::ldif(count))
        .await
        .expect("adding the bench users");
}

/// The `novads serve` configuration: the Talsi realm and the two clients.
fn write_config(dir: &Path, database: &str, ldap: &Slapd, port: u16, pool_size: usize) -> PathBuf {
    let config = format!(
        r#"server:
  listen: "127.0.0.1:{port}"
  issuer: "http://127.0.0.1:{port}"
  shutdown_grace_seconds: 1
  key_encryption_key_file: "{kek}"
  # The load driver signs everyone in from one address.
  authorization_requests_per_minute: 100000000
database: "{database}"
realms:
{realm}clients:
  - client_id: {PUBLIC_CLIENT}
    realm: talsi
    redirect_uris: ["{REDIRECT_URI}"]
    public: true
  - client_id: {CONFIDENTIAL_CLIENT}
    realm: talsi
    redirect_uris: ["{REDIRECT_URI}"]
    secret_hash: "{SECRET_HASH}"
"#,
        kek = serve::write_key_file(dir).display(),
        realm = ldap.realm_yaml(dir, &[&format!("pool_size: {pool_size}")]),
    );
    let path = dir.join("novads.yaml");
    std::fs::write(&path, config).expect("write config");
    path
}

/// `novads serve` on `database`, measured in every case, then stopped and its audit verified.
async fn backend(
    name: &'static str,
    database: &str,
    ldap: &Slapd,
    settings: &Settings,
    dir: &Path,
) -> Vec<Row> {
    let port = serve::free_port();
    let config = write_config(dir, database, ldap, port, settings.clients);
    let log = dir.join("novads.log");
    let server = Command::new(BIN)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env("NOVADS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn novads serve");
    let mut server = Running { child: server, log };
    let issuer = format!("http://127.0.0.1:{port}");
    serve::wait_ready(&issuer, &server.log, || {
        server.child.try_wait().ok().flatten()
    })
    .await;
    println!("\n== {name} ({database})");

    let cases: [(&'static str, Mode, Option<&str>); 4] = [
        ("login, public client (PKCE)", Mode::Login, None),
        ("login, confidential client", Mode::Login, Some(SECRET)),
        ("refresh, public client", Mode::Refresh, None),
        ("refresh, confidential client", Mode::Refresh, Some(SECRET)),
    ];
    let mut rows = Vec::new();
    for (case, mode, secret) in cases {
        let client_id = if secret.is_some() {
            CONFIDENTIAL_CLIENT
        } else {
            PUBLIC_CLIENT
        };
        let mut load = LoadConfig::new(
            issuer.clone(),
            client_id,
            url::Url::parse(REDIRECT_URI).expect("redirect URI"),
            settings.users.clone(),
        );
        load.client_secret = secret.map(str::to_owned);
        load.mode = mode;
        load.concurrency = settings.clients;
        load.warmup = settings.warmup;
        load.limit = Limit::Duration(settings.seconds);
        load.scope = "openid profile email".into();
        let before = CpuSample::take(&server, ldap);
        let report = novads_oidc_load::run(&load)
            .await
            .unwrap_or_else(|e| panic!("{name}, {case}: {e}\nnovads log:\n{}", server.log_tail()));
        let cpu = CpuSample::take(&server, ldap).since(&before);
        print!("{case}: {}", report.to_text());
        println!("  CPU: {}", cpu.describe());
        assert_eq!(
            report.failed,
            0,
            "{name}, {case}: no request may fail\nnovads log:\n{}",
            server.log_tail()
        );
        rows.push(Row {
            backend: name,
            case,
            report,
            cpu,
        });
    }
    server.stop();

    // Every login and every refresh is one audited row (plus warm-up and set-up ones).
    let output = Command::new(BIN)
        .args(["audit", "verify", "--config"])
        .arg(&config)
        .env("NOVADS_LOG", "warn")
        .output()
        .expect("novads audit verify");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{name}: audit verify failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let verified: u64 = stdout
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("{name}: unexpected audit verify output {stdout:?}"));
    let audited_at_least: u64 = rows
        .iter()
        .map(|r| r.report.completed + r.report.setup_logins)
        .sum();
    assert!(
        verified >= audited_at_least,
        "{name}: {verified} audit rows for at least {audited_at_least} logins and refreshes"
    );
    println!(
        "{name}: {} ({audited_at_least} measured logins and refreshes; the rest are warm-up)",
        stdout.trim()
    );
    rows
}

/// The `novads serve` child; killed if the benchmark panics.
struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    fn log_tail(&self) -> String {
        serve::log_tail(&self.log)
    }

    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// CPU seconds used so far by novads, slapd and this process (the driver).
#[derive(Clone, Copy, Default)]
struct CpuSample {
    at: Option<Instant>,
    novads: f64,
    slapd: f64,
    driver: f64,
}

impl CpuSample {
    fn take(server: &Running, ldap: &Slapd) -> Self {
        Self {
            at: Some(Instant::now()),
            novads: cpu_seconds(&server.child.id().to_string()),
            slapd: ldap
                .pid()
                .map(|pid| cpu_seconds(&pid.to_string()))
                .unwrap_or_default(),
            driver: cpu_seconds("self"),
        }
    }

    fn since(&self, before: &CpuSample) -> CpuShares {
        let wall = match (self.at, before.at) {
            (Some(now), Some(then)) => (now - then).as_secs_f64(),
            _ => 0.0,
        };
        let share = |used: f64| if wall > 0.0 { used / wall } else { 0.0 };
        CpuShares {
            novads: share(self.novads - before.novads),
            slapd: share(self.slapd - before.slapd),
            driver: share(self.driver - before.driver),
        }
    }
}

/// Average cores busy during a case, per process.
#[derive(Clone, Copy)]
struct CpuShares {
    novads: f64,
    slapd: f64,
    driver: f64,
}

impl CpuShares {
    fn describe(&self) -> String {
        format!(
            "novads {:.2} cores, slapd {:.2}, driver {:.2} (of 2; the database's own processes not counted)",
            self.novads, self.slapd, self.driver
        )
    }
}

/// utime + stime of `/proc/<pid>/stat`, in seconds.
fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The command name may contain spaces; the fields after it are fixed.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields 14 and 15 of stat(5); `rest` starts at field 3.
    (ticks(11) + ticks(12)) / TICKS_PER_SECOND
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| database | case | per second | p50 | p90 | p99 | max | errors | CPU novads / slapd / driver |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let r = &row.report;
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {} | {:.2} / {:.2} / {:.2} |",
            row.backend,
            row.case,
            r.throughput,
            r.latency.p50_ms,
            r.latency.p90_ms,
            r.latency.p99_ms,
            r.latency.max_ms,
            r.failed,
            row.cpu.novads,
            row.cpu.slapd,
            row.cpu.driver,
        );
    }
    out
}
