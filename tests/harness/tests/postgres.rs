//! The PostgreSQL harness against the real server.

use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use novads_testkit::Postgres;
use sqlx::Connection;
use sqlx::postgres::PgConnection;

#[tokio::test]
async fn create_database_and_query_it() {
    let Some(pg) = Postgres::start().await else {
        return;
    };
    assert_eq!(
        pg.url(),
        format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port())
    );
    let url = pg.create_database("harness_selftest").await;
    assert_eq!(url, pg.database_url("harness_selftest"));

    let mut conn = PgConnection::connect(&url).await.expect("connect");
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut conn)
        .await
        .expect("select");
    assert_eq!(one, 1);
    let db: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut conn)
        .await
        .expect("current_database");
    assert_eq!(db, "harness_selftest");
    sqlx::query("CREATE TABLE audit (id bigserial PRIMARY KEY, who text NOT NULL)")
        .execute(&mut conn)
        .await
        .expect("create table");
    sqlx::query("INSERT INTO audit (who) VALUES ($1)")
        .bind("jana@talsi")
        .execute(&mut conn)
        .await
        .expect("insert");
    let who: String = sqlx::query_scalar("SELECT who FROM audit")
        .fetch_one(&mut conn)
        .await
        .expect("select");
    assert_eq!(who, "jana@talsi");
    let encoding: String = sqlx::query_scalar("SHOW server_encoding")
        .fetch_one(&mut conn)
        .await
        .expect("encoding");
    assert_eq!(encoding, "UTF8");
    conn.close().await.expect("close");

    // psql sees the same data.
    let out = pg
        .psql("harness_selftest", "SELECT count(*) FROM audit")
        .await
        .expect("psql");
    assert_eq!(out.trim(), "1");
    let err = pg
        .psql("harness_selftest", "SELECT * FROM nope")
        .await
        .expect_err("bad SQL");
    assert!(err.stderr().is_some_and(|s| s.contains("nope")), "{err}");
}

#[tokio::test]
async fn databases_are_isolated() {
    let Some(pg) = Postgres::start().await else {
        return;
    };
    let (a, b) = tokio::join!(pg.fresh_database(), pg.fresh_database());
    assert_ne!(a, b);
    let mut conn_a = PgConnection::connect(&a).await.expect("connect a");
    sqlx::query("CREATE TABLE only_in_a (x int)")
        .execute(&mut conn_a)
        .await
        .expect("create");
    let mut conn_b = PgConnection::connect(&b).await.expect("connect b");
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'only_in_a'",
    )
    .fetch_one(&mut conn_b)
    .await
    .expect("count");
    assert_eq!(n, 0);
}

#[tokio::test]
#[should_panic(expected = "invalid database name")]
async fn invalid_database_names_panic() {
    let Some(pg) = Postgres::start().await else {
        panic!("invalid database name (skipped: PostgreSQL not installed)");
    };
    pg.create_database("robert'); DROP TABLE students;--").await;
}

#[tokio::test]
async fn stop_and_restart_keep_the_data() {
    let Some(pg) = Postgres::start().await else {
        return;
    };
    let url = pg.create_database("survives").await;
    pg.psql(
        "survives",
        "CREATE TABLE t (x int); INSERT INTO t VALUES (42)",
    )
    .await
    .expect("psql");
    pg.stop();
    assert!(!pg.is_running());
    assert!(PgConnection::connect(&url).await.is_err());
    pg.restart().await;
    assert!(pg.is_running());
    let mut conn = PgConnection::connect(&url)
        .await
        .expect("connect after restart");
    let x: i32 = sqlx::query_scalar("SELECT x FROM t")
        .fetch_one(&mut conn)
        .await
        .expect("select");
    assert_eq!(x, 42);
}

#[tokio::test]
async fn drop_stops_the_server() {
    let Some(pg) = Postgres::start().await else {
        return;
    };
    let port = pg.port();
    let dir = pg.socket_dir().to_owned();
    let pid = pg.pid().expect("running");
    let url = pg.create_database("gone").await;
    let conn = PgConnection::connect(&url).await.expect("connect");
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    drop(pg);
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port still accepts"
    );
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "postmaster still exists"
    );
    drop(conn);
}

#[tokio::test]
async fn clusters_run_side_by_side() {
    let (a, b) = tokio::join!(Postgres::start(), Postgres::start());
    let (Some(a), Some(b)) = (a, b) else {
        return;
    };
    assert_ne!(a.port(), b.port());
    for pg in [&a, &b] {
        let out = pg.psql("postgres", "SELECT 1").await.expect("psql");
        assert_eq!(out.trim(), "1");
    }
}

#[tokio::test]
async fn startup_is_fast() {
    let mut times = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let Some(pg) = Postgres::start().await else {
            return;
        };
        let start = started.elapsed();
        let created = Instant::now();
        pg.fresh_database().await;
        let create = created.elapsed();
        let stopped = Instant::now();
        drop(pg);
        times.push((start, create, stopped.elapsed()));
    }
    for (start, create, stop) in &times {
        eprintln!("postgres: start {start:?}, create_database {create:?}, stop {stop:?}");
    }
    // The first start on a machine also runs initdb for the template.
    for (start, _, _) in &times[1..] {
        assert!(*start < Duration::from_secs(5), "start took {start:?}");
    }
}
