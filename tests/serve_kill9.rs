//! `kill -9` of `novads serve` under sign-in load loses no audit row of an answered request,
//! and the chain verifies after a restart, on SQLite and on PostgreSQL.
//!
//! Concurrent browsers sign in through the real code flow and refresh their tokens, each
//! request with a user agent of its own, which the audit row records. Every request that got
//! its answer (the redirect with the code, the new tokens) is noted; the server is killed with
//! SIGKILL in the middle of the load, started again on the same database, and must then hold
//! a row for every noted request in a trail that `novads audit verify` finds intact.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use novads_oidc_load::flow::{self, Target};
use novads_oidc_load::{Credentials, LoadConfig};
use novads_testkit::fixtures::talsi;
use novads_testkit::{Municipality, Postgres, Slapd, serve};
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

const BIN: &str = env!("CARGO_BIN_EXE_novads");
const CLIENT: &str = "portal";
const REDIRECT_URI: &str = "http://127.0.0.1/cb";
const BROWSERS: usize = 8;
/// Load before the kill: long enough for many batches of the audit writer to commit.
const LOAD_BEFORE_KILL: Duration = Duration::from_secs(3);

fn write_config(dir: &Path, database: &str, ldap: &Slapd, port: u16) -> PathBuf {
    let config = dir.join("novads.yaml");
    std::fs::write(
        &config,
        format!(
            r#"server:
  listen: "127.0.0.1:{port}"
  issuer: "http://127.0.0.1:{port}"
  key_encryption_key_file: "{kek}"
  # Every browser signs in from 127.0.0.1.
  authorization_requests_per_minute: 100000000
database: "{database}"
realms:
{realm}clients:
  - {{ client_id: {CLIENT}, realm: talsi, redirect_uris: ["{REDIRECT_URI}"], public: true }}
"#,
            kek = serve::write_key_file(dir).display(),
            realm = ldap.realm_yaml(dir, &[]),
        ),
    )
    .expect("config");
    config
}

async fn serve(config: &Path, log: &Path, issuer: &str) -> Child {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log");
    let mut child = Command::new(BIN)
        .arg("serve")
        .arg("-c")
        .arg(config)
        .env_remove("NOVADS_DATABASE_URL")
        .env("NOVADS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn novads serve");
    serve::wait_ready(issuer, log, || child.try_wait().ok().flatten()).await;
    child
}

/// A client whose every request carries `user_agent`, the mark its audit row will hold.
fn browser(user_agent: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .user_agent(user_agent)
        .build()
        .expect("HTTP client")
}

async fn target(issuer: &str) -> Target {
    let config = LoadConfig::new(
        issuer,
        CLIENT,
        url::Url::parse(REDIRECT_URI).expect("url"),
        vec![],
    );
    let metadata = novads_oidc_load::discovery::discover(&reqwest::Client::new(), issuer)
        .await
        .expect("discovery");
    novads_oidc_load::target(&config, metadata).expect("target")
}

/// Signs `user` in and refreshes, again and again, until `stop` or the first failure (the
/// kill). Notes the user agent of every answered login and refresh in `answered`.
async fn browse(
    n: usize,
    target: Arc<Target>,
    user: Credentials,
    stop: Arc<AtomicBool>,
    answered: Arc<Mutex<Vec<String>>>,
) {
    let mut round = 0;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let mark = format!("kill9-{n}-{round}-login");
        let Ok((tokens, _)) = flow::login(&browser(&mark), &target, &user).await else {
            return;
        };
        answered.lock().await.push(mark);
        let Some(mut refresh_token) = tokens.refresh_token else {
            continue;
        };
        for step in 0..2 {
            let mark = format!("kill9-{n}-{round}-refresh-{step}");
            let Ok(tokens) = flow::refresh(&browser(&mark), &target, &refresh_token).await else {
                return;
            };
            answered.lock().await.push(mark);
            match tokens.refresh_token {
                Some(next) => refresh_token = next,
                None => break,
            }
        }
    }
}

/// The user agents of all audit rows of the trail.
async fn audited_user_agents(database: &str) -> BTreeSet<String> {
    let sql = "SELECT user_agent FROM audit_events WHERE user_agent IS NOT NULL";
    let rows: Vec<String> = if database.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(database).await.expect("open");
        let rows = sqlx::query_scalar(sql).fetch_all(&pool).await.expect(sql);
        pool.close().await;
        rows
    } else {
        let pool = sqlx::PgPool::connect(database).await.expect("connect");
        let rows = sqlx::query_scalar(sql).fetch_all(&pool).await.expect(sql);
        pool.close().await;
        rows
    };
    rows.into_iter().collect()
}

async fn kill_under_load_loses_no_answered_row(database: &str, ldap: &Slapd, dir: &Path) {
    let port = serve::free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let config = write_config(dir, database, ldap, port);
    let log = dir.join("novads.log");
    let mut server = serve(&config, &log, &issuer).await;
    let target = Arc::new(target(&issuer).await);
    let users = [talsi::JANA, talsi::ILZE]
        .map(|u| Credentials::new(format!("{}@talsi", u.uid), u.password));

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(Mutex::new(Vec::new()));
    let browsers: Vec<_> = (0..BROWSERS)
        .map(|n| {
            tokio::spawn(browse(
                n,
                target.clone(),
                users[n % users.len()].clone(),
                stop.clone(),
                answered.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(LOAD_BEFORE_KILL).await;
    // SIGKILL while requests are in flight: no shutdown hook runs.
    server.start_kill().expect("SIGKILL");
    let status = server.wait().await.expect("wait");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "{status}"
    );
    stop.store(true, Ordering::Relaxed);
    for b in browsers {
        b.await.expect("browser task");
    }
    let before_kill: Vec<String> = answered.lock().await.clone();
    assert!(
        before_kill.len() >= BROWSERS,
        "the load answered only {} requests before the kill",
        before_kill.len()
    );

    // The server starts again on the same database and signs people in on the same chain.
    let mut server = serve(&config, &log, &issuer).await;
    let mark = "kill9-after-restart";
    flow::login(&browser(mark), &target, &users[0])
        .await
        .expect("a login after the restart");
    server.start_kill().expect("stop");
    let _ = server.wait().await;

    let verify = Command::new(BIN)
        .args(["audit", "verify", "-c"])
        .arg(&config)
        .env_remove("NOVADS_DATABASE_URL")
        .output()
        .await
        .expect("novads audit verify");
    let stdout = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success() && stdout.starts_with("audit trail intact"),
        "{stdout}{}",
        String::from_utf8_lossy(&verify.stderr)
    );

    let audited = audited_user_agents(database).await;
    let lost: Vec<&String> = before_kill
        .iter()
        .filter(|mark| !audited.contains(*mark))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} answered requests have no audit row: {lost:?}",
        lost.len(),
        before_kill.len()
    );
    assert!(audited.contains(mark));
    println!(
        "{database}: {} answered requests before the kill, all audited; {}",
        before_kill.len(),
        stdout.lines().next().unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_kill_9_under_load_loses_no_answered_audit_row() {
    let Some(ldap) = Slapd::start(Municipality::Talsi).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let database = format!("sqlite://{}/novads.db", dir.path().display());
    kill_under_load_loses_no_answered_row(&database, &ldap, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_kill_9_under_load_loses_no_answered_audit_row() {
    let Some(ldap) = Slapd::start(Municipality::Talsi).await else {
        return;
    };
    let Some(pg) = Postgres::start().await else {
        return;
    };
    let database = pg.create_database("kill9").await;
    let dir = tempfile::tempdir().expect("tempdir");
    kill_under_load_loses_no_answered_row(&database, &ldap, dir.path()).await;
}
