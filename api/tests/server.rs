//! `novads serve` in-process against real databases: SQLite in a temporary directory and a
//! throwaway PostgreSQL cluster.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use novads_api::config::Config;
use novads_api::db::{Backend, Database, DbError};
use novads_api::dev;
use novads_api::server::{MAX_BODY_BYTES, Server, router_with};
use novads_testkit::Postgres;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

fn config_for(database: &str) -> Config {
    // One key file per test process: 64 hex digits.
    let kek = std::env::temp_dir().join(format!("novads-test-kek-{}", std::process::id()));
    std::fs::write(&kek, "ab".repeat(32)).expect("write key");
    let mut config = dev::config(
        std::path::Path::new("/unused"),
        "127.0.0.1:0".parse().expect("addr"),
    );
    config.server.key_encryption_key_file = Some(kek);
    config.database = database.to_owned();
    config
}

struct TestServer {
    base: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), novads_api::server::ServeError>>,
}

impl TestServer {
    async fn start(database: &str, extra: Option<Router<novads_api::state::AppState>>) -> Self {
        let server = Server::bind(config_for(database))
            .await
            .expect("server starts");
        let state = server.state().clone();
        let server = match extra {
            Some(extra) => server.with_router(router_with(state.clone(), extra)),
            None => server,
        };
        let addr: SocketAddr = server.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        Self {
            base: format!("http://{addr}"),
            stop: Some(stop),
            task,
        }
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("stops in time")
            .expect("task joins")
            .expect("server ends without error");
    }
}

fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}/novads.db", dir.path().display())
}

async fn get_json(url: &str) -> (u16, String, serde_json::Value) {
    let response = reqwest::get(url).await.expect("request");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, content_type, body)
}

/// The endpoints every deployment has, on one backend.
async fn serves_health_readiness_and_metrics(database: &str) {
    let server = TestServer::start(database, None).await;

    let (status, _, body) = get_json(&format!("{}/healthz", server.base)).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));

    let (status, _, body) = get_json(&format!("{}/readyz", server.base)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["database"], "ok");

    let response = reqwest::get(format!("{}/metrics", server.base))
        .await
        .expect("metrics");
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/plain")
    );
    let text = response.text().await.expect("text");
    assert!(text.contains("novads_build_info{version="), "{text}");
    assert!(
        text.contains(
            "novads_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 1"
        ),
        "{text}"
    );

    // Signing keys: one active and one next key per algorithm, published with their kids.
    let (status, _, jwks) = get_json(&format!("{}/oidc/jwks", server.base)).await;
    assert_eq!(status, 200);
    let keys = jwks["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 4, "{jwks}");
    for alg in ["ES256", "RS256"] {
        assert_eq!(keys.iter().filter(|k| k["alg"] == alg).count(), 2, "{jwks}");
    }
    assert!(
        keys.iter()
            .all(|k| k["kid"].is_string() && k["use"] == "sig")
    );
    assert!(
        keys.iter().all(|k| k.get("d").is_none()),
        "no private parts: {jwks}"
    );

    server.shutdown().await;
}

#[tokio::test]
async fn sqlite_serves_health_readiness_and_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    serves_health_readiness_and_metrics(&sqlite_url(&dir)).await;
}

#[tokio::test]
async fn postgres_serves_health_readiness_and_metrics() {
    let Some(pg) = Postgres::start().await else {
        return;
    };
    let url = pg.create_database("serve_endpoints").await;
    serves_health_readiness_and_metrics(&url).await;
}

#[tokio::test]
async fn errors_are_problem_documents() {
    let dir = tempfile::tempdir().expect("tempdir");
    let echo = Router::new().route("/echo", post(|body: String| async move { body }));
    let server = TestServer::start(&sqlite_url(&dir), Some(echo)).await;
    let client = reqwest::Client::new();

    let (status, content_type, body) = get_json(&format!("{}/no/such/path", server.base)).await;
    assert_eq!(status, 404);
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(body["status"], 404);
    assert_eq!(body["title"], "Not Found");

    let response = client
        .delete(format!("{}/healthz", server.base))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 405);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );

    // Oversize body: refused by the limit, still in the one error format.
    let response = client
        .post(format!("{}/echo", server.base))
        .body(vec![b'a'; MAX_BODY_BYTES + 1])
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 413);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["status"], 413);

    // Garbage that is not UTF-8 where text is expected: a 400 problem, not a crash.
    let response = client
        .post(format!("{}/echo", server.base))
        .body(vec![0xff, 0xfe, 0xfd])
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );

    // Every answer carries a request id for log correlation.
    let response = client
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .expect("request");
    assert!(response.headers().contains_key("x-request-id"));

    // Unmatched paths share one metrics label, whatever the client sends.
    let text = client
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        text.contains("route=\"unmatched\",status=\"404\""),
        "{text}"
    );
    assert!(!text.contains("/no/such/path"), "{text}");

    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let entered = Arc::new(Notify::new());
    let slow = {
        let entered = entered.clone();
        Router::new().route(
            "/slow",
            get(move || {
                let entered = entered.clone();
                async move {
                    entered.notify_one();
                    tokio::time::sleep(Duration::from_millis(700)).await;
                    "finished"
                }
            }),
        )
    };
    let server = TestServer::start(&sqlite_url(&dir), Some(slow)).await;
    let base = server.base.clone();

    let in_flight = tokio::spawn({
        let url = format!("{base}/slow");
        async move { reqwest::get(url).await?.text().await }
    });
    entered.notified().await;
    let shutdown = tokio::spawn(server.shutdown());

    // Once shutdown has begun, new connections are refused while the old request runs on.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = reqwest::Client::new()
        .get(format!("{base}/healthz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(refused.is_err(), "a new request was served during shutdown");

    let body = in_flight
        .await
        .expect("join")
        .expect("in-flight request completes");
    assert_eq!(body, "finished");
    shutdown.await.expect("shutdown completes");
}

/// A database whose schema is newer than this build is refused with a clear message.
async fn refuses_a_newer_schema(database: &str) {
    let db = Database::open(database, None)
        .await
        .expect("first open migrates");
    let supported = db.backend().supported_schema_version();
    assert_eq!(db.schema_version().await.expect("version"), Some(supported));
    // Reopening an up-to-date database is a no-op.
    Database::open(database, None).await.expect("second open");

    let newer = supported + 7;
    match &db {
        Database::Sqlite(pool) => {
            sqlx::query("UPDATE novads_schema_version SET version = ?")
                .bind(newer)
                .execute(pool)
                .await
                .expect("update");
        }
        Database::Postgres(pool) => {
            sqlx::query("UPDATE novads_schema_version SET version = $1")
                .bind(newer)
                .execute(pool)
                .await
                .expect("update");
        }
    }
    let err = Database::open(database, None).await.expect_err("refused");
    assert!(
        matches!(err, DbError::SchemaTooNew { found, supported: s } if found == newer && s == supported),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&format!("schema version {newer} is newer")),
        "{text}"
    );
    assert!(
        db.check_ready().await.is_err(),
        "readiness must fail on a foreign schema"
    );
    db.close().await;
}

#[tokio::test]
async fn sqlite_refuses_a_newer_schema() {
    let dir = tempfile::tempdir().expect("tempdir");
    refuses_a_newer_schema(&sqlite_url(&dir)).await;
}

#[tokio::test]
async fn postgres_refuses_a_newer_schema() {
    let Some(pg) = Postgres::start().await else {
        return;
    };
    let url = pg.create_database("newer_schema").await;
    refuses_a_newer_schema(&url).await;
}

#[tokio::test]
async fn sqlite_runs_in_wal_mode_with_full_sync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Database::open(&sqlite_url(&dir), None).await.expect("open");
    assert_eq!(db.backend(), Backend::Sqlite);
    let Database::Sqlite(pool) = &db else {
        unreachable!("sqlite URL gives a SQLite pool")
    };
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(pool)
        .await
        .expect("pragma");
    assert_eq!(mode, "wal");
    // 2 = FULL
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(pool)
        .await
        .expect("pragma");
    assert_eq!(sync, 2);
}

#[tokio::test]
async fn readiness_fails_when_postgres_goes_away_and_recovers() {
    let Some(pg) = Postgres::start().await else {
        return;
    };
    let url = pg.create_database("readiness").await;
    let server = TestServer::start(&url, None).await;
    let (status, _, _) = get_json(&format!("{}/readyz", server.base)).await;
    assert_eq!(status, 200);

    pg.stop();
    let (status, content_type, body) = get_json(&format!("{}/readyz", server.base)).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(content_type, "application/problem+json");
    assert!(
        body["checks"]["database"]
            .as_str()
            .is_some_and(|s| s.starts_with("database")),
        "{body}"
    );
    // Liveness does not depend on the database.
    let (status, _, _) = get_json(&format!("{}/healthz", server.base)).await;
    assert_eq!(status, 200);

    pg.restart().await;
    let mut ready = false;
    for _ in 0..50 {
        if get_json(&format!("{}/readyz", server.base)).await.0 == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ready,
        "readiness did not recover after the database came back"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn postgres_password_comes_from_a_file() {
    let Some(pg) = Postgres::start().await else {
        return;
    };
    let url = pg.create_database("password_file").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("pgpass");
    std::fs::write(&file, "not-checked-by-trust-auth\n").expect("write");
    let mut config = config_for(&url);
    config.database_password_file = Some(file);
    let server = Server::bind(config)
        .await
        .expect("starts with a password file");
    assert_eq!(server.state().db().backend(), Backend::Postgres);

    let mut config = config_for(&url);
    config.database_password_file = Some(dir.path().join("missing"));
    let err = match Server::bind(config).await {
        Ok(_) => panic!("a missing password file must fail"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.starts_with("database_password_file: cannot read"),
        "{err}"
    );
}

#[tokio::test]
async fn readiness_names_a_realm_whose_directory_is_down() {
    let Some(ldap) = novads_testkit::Slapd::start(novads_testkit::Municipality::Kuldiga).await
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config_for(&sqlite_url(&dir));
    let m = ldap.municipality();
    let realm = |name: &str, url: String| novads_api::config::RealmConfig {
        name: name.to_owned(),
        display_name: None,
        ldap: Some(novads_api::config::LdapConfig {
            insecure: true,
            bind_dn: Some(m.service_dn().into()),
            bind_password: Some(m.service_password().into()),
            timeout_seconds: 1,
            pool_size: 2,
            ..novads_api::config::LdapConfig::new(vec![url], m.people_base())
        }),
        static_directory: None,
    };
    config.realms.push(realm("kuldiga", ldap.url()));
    config.realms.push(realm("dobele", ldap.down_url()));
    let server = Server::bind(config).await.expect("starts");
    let addr = server.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));

    // The first probe runs at start; wait for it to be reflected.
    let mut body = serde_json::Value::Null;
    for _ in 0..50 {
        let (status, _, json) = get_json(&format!("http://{addr}/readyz")).await;
        assert_eq!(
            status, 200,
            "a realm's outage never makes the replica unready"
        );
        body = json;
        if body["checks"]["directories"]["dobele"] == "down"
            && body["checks"]["directories"]["kuldiga"] == "ok"
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["checks"]["directories"]["dobele"], "down", "{body}");
    assert_eq!(body["checks"]["directories"]["kuldiga"], "ok", "{body}");
    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(&format!(
            "novads_directory_up{{realm=\"dobele\",url=\"{}\"}} 0",
            ldap.down_url()
        )),
        "{metrics}"
    );
    let _ = stop.send(());
    task.await.expect("join").expect("clean stop");
}
