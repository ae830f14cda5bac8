//! Sustained sign-ins per second through the federation engine against one local slapd, with
//! the audit trail on SQLite and on PostgreSQL, next to slapd's raw bind rate measured in the
//! same run (the ceiling). Prints figures; asserts only that no audit row was lost.
//!
//! Each client signs in as an account of its own (`bench1` … `benchN`, as the sign-ins of an
//! office are of different people). One case has every client sign in as the same account:
//! attempts of one account are decided one at a time (the lockout's account turn), so that case
//! shows the cost of that guarantee, not the decision's.
//!
//! Run: `cargo bench --bench federation` (needs slapd and PostgreSQL, as the tests do).
//! `NOVADS_BENCH_SECONDS` (default 5) and `NOVADS_BENCH_CLIENTS` (default 32) tune the run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use novads_api::config::{
    AuditConfig, Config, LdapConfig, LockoutConfig, RealmConfig, ServerConfig,
};
use novads_api::db::Database;
use novads_api::federation::{LoginRequest, audit, setup};
use novads_testkit::fixtures::{bench, talsi};
use novads_testkit::{Municipality, Postgres, Slapd};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let seconds = Duration::from_secs(env_number("NOVADS_BENCH_SECONDS", 5));
    let clients = env_number("NOVADS_BENCH_CLIENTS", 32) as usize;
    let Some(ldap) = Slapd::start(Municipality::Talsi).await else {
        eprintln!("skipped: slapd is not installed");
        return;
    };
    ldap.ldapadd(&bench::ldif(clients as u64))
        .await
        .expect("adding the bench users");
    println!(
        "federation benchmark: {clients} concurrent clients, each its own account, {} s per \
         case, one local slapd",
        seconds.as_secs()
    );

    let raw = raw_binds(&ldap, clients, seconds).await;
    report("slapd raw bind (ceiling)", &raw, None);

    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = format!("sqlite://{}/bench.db", dir.path().display());
    let directory = directory_only(&ldap, &sqlite, clients, seconds).await;
    report(
        "directory search + bind only (no lockout, no audit)",
        &directory,
        Some(raw.rate()),
    );

    let logins = novads_logins(&ldap, &sqlite, clients, seconds, 0, Accounts::PerClient).await;
    report("novads sign-in, audit on SQLite", &logins, Some(raw.rate()));
    let sqlite_cached = format!("sqlite://{}/bench-cached.db", dir.path().display());
    let logins = novads_logins(
        &ldap,
        &sqlite_cached,
        clients,
        seconds,
        60,
        Accounts::PerClient,
    )
    .await;
    report(
        "novads sign-in, entry cache 60 s, audit on SQLite",
        &logins,
        Some(raw.rate()),
    );
    let sqlite_one = format!("sqlite://{}/bench-one.db", dir.path().display());
    let logins = novads_logins(&ldap, &sqlite_one, clients, seconds, 0, Accounts::One).await;
    report(
        "novads sign-in, every client the same account (one at a time), audit on SQLite",
        &logins,
        Some(raw.rate()),
    );

    match Postgres::start().await {
        Some(pg) => {
            let url = pg.create_database("bench").await;
            let logins = novads_logins(&ldap, &url, clients, seconds, 0, Accounts::PerClient).await;
            report(
                "novads sign-in, audit on PostgreSQL",
                &logins,
                Some(raw.rate()),
            );
            let url = pg.create_database("bench_cached").await;
            let logins =
                novads_logins(&ldap, &url, clients, seconds, 60, Accounts::PerClient).await;
            report(
                "novads sign-in, entry cache 60 s, audit on PostgreSQL",
                &logins,
                Some(raw.rate()),
            );
        }
        None => println!("PostgreSQL case skipped: PostgreSQL is not installed"),
    }
}

struct Samples {
    latencies: Vec<Duration>,
    elapsed: Duration,
    /// The machine's CPU time over the run, every process (slapd, PostgreSQL, this one).
    cpu: Option<CpuTime>,
}

/// Busy and idle CPU time of the whole machine, from `/proc/stat` (in clock ticks, 100/s on
/// Linux): what every process of a case costs together, and what was left.
#[derive(Clone, Copy)]
struct CpuTime {
    busy: u64,
    idle: u64,
}

impl CpuTime {
    fn now() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let fields: Vec<u64> = stat
            .lines()
            .next()?
            .strip_prefix("cpu ")?
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal (guest time is inside user).
        let [user, nice, system, idle, iowait, irq, softirq, steal] = *fields.get(..8)? else {
            return None;
        };
        Some(Self {
            busy: user + nice + system + irq + softirq + steal,
            idle: idle + iowait,
        })
    }

    fn since(self, start: Self) -> Self {
        Self {
            busy: self.busy.saturating_sub(start.busy),
            idle: self.idle.saturating_sub(start.idle),
        }
    }
}

impl Samples {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&mut self, p: f64) -> Duration {
        self.latencies.sort();
        let index = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies.get(index).copied().unwrap_or_default()
    }
}

fn report(label: &str, samples: &Samples, ceiling: Option<f64>) {
    let mut samples = Samples {
        latencies: samples.latencies.clone(),
        elapsed: samples.elapsed,
        cpu: samples.cpu,
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let share = ceiling
        .map(|c| format!(", {:.0}% of raw bind rate", 100.0 * samples.rate() / c))
        .unwrap_or_default();
    // Ticks are hundredths of a second (USER_HZ), so a tick is 10,000 µs.
    let cpu = samples
        .cpu
        .filter(|cpu| cpu.busy + cpu.idle > 0 && !samples.latencies.is_empty())
        .map(|cpu| {
            format!(
                "; machine CPU {:.0} µs per operation, cores {:.0}% idle",
                cpu.busy as f64 * 10_000.0 / samples.latencies.len() as f64,
                100.0 * cpu.idle as f64 / (cpu.busy + cpu.idle) as f64,
            )
        })
        .unwrap_or_default();
    println!(
        "{label}: {:.0}/s, p50 {:.2} ms, p99 {:.2} ms ({} operations{share}{cpu})",
        samples.rate(),
        ms(samples.percentile(0.50)),
        ms(samples.percentile(0.99)),
        samples.latencies.len(),
    );
}

/// Runs `op` from `clients` tasks until `duration` has passed; collects each call's latency.
async fn drive<F, Fut>(clients: usize, duration: Duration, op: F) -> Samples
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let cpu_at_start = CpuTime::now();
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let op = op.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    op(client).await;
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let cpu = CpuTime::now()
        .zip(cpu_at_start)
        .map(|(end, start)| end.since(start));
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("client task"));
    }
    Samples {
        latencies,
        elapsed: started.elapsed(),
        cpu,
    }
}

/// One connection per client, each binding as its client's account over and over: what slapd
/// can do at most.
async fn raw_binds(ldap: &Slapd, clients: usize, duration: Duration) -> Samples {
    let mut connections = Vec::new();
    for _ in 0..clients {
        let (conn, handle) = ldap3::LdapConnAsync::new(&ldap.url())
            .await
            .expect("connect");
        ldap3::drive!(conn);
        connections.push(tokio::sync::Mutex::new(handle));
    }
    let connections = Arc::new(connections);
    drive(clients, duration, move |client| {
        let connections = connections.clone();
        async move {
            let mut handle = connections[client].lock().await;
            let n = client as u64 + 1;
            let dn = format!("uid=bench{n},{}", Municipality::Talsi.people_base());
            handle
                .simple_bind(&dn, &bench::password(n))
                .await
                .expect("bind")
                .success()
                .expect("bind succeeds");
        }
    })
    .await
}

/// The directory part of a sign-in alone, to show where the time goes.
async fn directory_only(
    ldap: &Slapd,
    database: &str,
    clients: usize,
    duration: Duration,
) -> Samples {
    let config = config(ldap, database, clients, 0);
    let db = Database::open(database, None).await.expect("database");
    let federation = Arc::new(
        setup::build_with_audit_key(&config, db, &prometheus::Registry::new(), audit_key())
            .expect("federation"),
    );
    drive(clients, duration, move |client| {
        let federation = federation.clone();
        async move {
            let realm = federation.realm("talsi").expect("realm");
            let n = client as u64 + 1;
            realm
                .directory
                .authenticate(&format!("bench{n}"), &bench::password(n))
                .await
                .result
                .expect("signed in");
        }
    })
    .await
}

/// The audit chain's key: a fixed key-encryption key, as the bench has no configuration file.
fn audit_key() -> audit::AuditKey {
    audit::AuditKey::from_kek(&novads_api::oidc::keys::KeyEncryptionKey::from_bytes(
        [0x5a; 32],
    ))
    .expect("audit key")
}

fn config(ldap: &Slapd, database: &str, clients: usize, entry_cache_seconds: u64) -> Config {
    let m = Municipality::Talsi;
    Config {
        server: ServerConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            issuer: "http://127.0.0.1:8080".into(),
            shutdown_grace_seconds: 1,
            key_encryption_key_file: None,
            key_encryption_key_env: None,
            trusted_proxies: vec![],
            management_listen: None,
            header_read_timeout_seconds: 10,
            max_connections: 1024,
            authorization_requests_per_minute: 120,
        },
        database: database.to_owned(),
        database_password_file: None,
        realms: vec![RealmConfig {
            name: "talsi".into(),
            display_name: None,
            ldap: Some(LdapConfig {
                insecure: true,
                bind_dn: Some(m.service_dn().into()),
                bind_password: Some(m.service_password().into()),
                pool_size: clients,
                entry_cache_seconds,
                ..LdapConfig::new(vec![ldap.url()], m.people_base())
            }),
            static_directory: None,
        }],
        trusts: vec![],
        clients: vec![],
        lockout: LockoutConfig::default(),
        audit: AuditConfig::default(),
        admin_api: Default::default(),
    }
}

/// Whose sign-ins the clients make.
#[derive(Clone, Copy)]
enum Accounts {
    /// Client `i` signs in as `bench{i+1}`.
    PerClient,
    /// Every client signs in as jana.
    One,
}

async fn novads_logins(
    ldap: &Slapd,
    database: &str,
    clients: usize,
    duration: Duration,
    entry_cache_seconds: u64,
    accounts: Accounts,
) -> Samples {
    let config = config(ldap, database, clients, entry_cache_seconds);
    let db = Database::open(database, None).await.expect("database");
    let federation = Arc::new(
        setup::build_with_audit_key(
            &config,
            db.clone(),
            &prometheus::Registry::new(),
            audit_key(),
        )
        .expect("federation"),
    );
    let requests: Arc<Vec<LoginRequest>> = Arc::new(
        (1..=clients as u64)
            .map(|n| {
                let (username, password) = match accounts {
                    Accounts::PerClient => (bench::login(n), bench::password(n)),
                    Accounts::One => (talsi::JANA.login(), talsi::JANA.password.to_owned()),
                };
                LoginRequest {
                    username,
                    password,
                    client_id: None,
                    source_ip: None,
                    user_agent: Some("novads-bench".into()),
                }
            })
            .collect(),
    );
    let samples = drive(clients, duration, move |client| {
        let federation = federation.clone();
        let requests = requests.clone();
        async move {
            federation
                .login(&requests[client])
                .await
                .expect("signed in");
        }
    })
    .await;
    let verification = audit::verify(&db, &audit_key()).await.expect("verify");
    assert_eq!(verification.first_broken, None, "audit chain intact");
    assert_eq!(
        verification.rows_checked,
        samples.latencies.len() as u64,
        "audit rows = attempts: none lost"
    );
    samples
}
