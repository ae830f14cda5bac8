//! Audit query latency and export throughput on a large trail, on SQLite and on PostgreSQL.
//! Fills a fresh database with `NOVADS_BENCH_ROWS` rows (default 10,000,000) in bulk SQL, then
//! times pages of `GET /audit/events` through the function the endpoint calls
//! (`admin::audit::page`), one filter at a time, and exports through `audit::export` (the code
//! behind `GET /audit/export` and `novads audit export`) by time, by realm and by both, with the
//! process's memory before, after and at its peak. Last, the cost of appending sign-in rows through the audit writer on
//! the full table, which is what every index on the trail slows down. Prints figures; asserts
//! only that queries succeed and the export wrote every row it should.
//!
//! The rows are realistic in what the queries look at (300 realms, 900 users, 400 clients, the
//! event kinds and reasons of federation/audit.rs, times spread over 90 days in id order). The
//! chain columns (`prev_hash`, `hash`) hold unique filler rather than real MACs: reading pages
//! and exporting do not verify the chain, and computing 10 million HMACs would only slow the
//! fill.
//!
//! Run: `cargo bench --bench audit_query` (needs PostgreSQL, as the tests do). The filled
//! databases live in a temporary directory and are deleted at the end; 10 million rows take
//! about 6.5 GB on SQLite (1.3 GB per 2 million). `NOVADS_BENCH_ROWS`, `NOVADS_BENCH_QUERIES`
//! (per filter, default 200), `NOVADS_BENCH_BACKENDS` (default `sqlite,postgres`) and
//! `NOVADS_BENCH_APPENDS` (default 500) tune the run.

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use novads_api::admin::audit::{Cursor, EventFilter, page};
use novads_api::db::Database;
use novads_api::federation::audit::{
    self, AuditEvent, AuditEventKind, AuditLog, AuditReason, ExportFilter, ExportFormat,
    format_time,
};
use novads_testkit::Postgres;

const REALMS: u64 = 300;
const USERS: u64 = 900;
const CLIENTS: u64 = 400;
/// The trail spans this many days before `END`.
const DAYS: i64 = 90;
/// Rows per fill statement (and transaction).
const FILL_CHUNK: u64 = 500_000;
/// No filter case runs longer than this, so a slow one does not stall the run.
const CASE_BUDGET: Duration = Duration::from_secs(40);

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The newest row's time; fixed so that runs compare.
fn end() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0)
        .single()
        .expect("a valid fixed date")
}

#[tokio::main]
async fn main() {
    let rows = env_number("NOVADS_BENCH_ROWS", 10_000_000).max(1000);
    let queries = env_number("NOVADS_BENCH_QUERIES", 200).max(1);
    let appends = env_number("NOVADS_BENCH_APPENDS", 500).max(1);
    let backends = std::env::var("NOVADS_BENCH_BACKENDS").unwrap_or("sqlite,postgres".into());
    println!("audit query benchmark: {rows} rows, {queries} queries per filter, page of 100");

    let dir = tempfile::tempdir().expect("tempdir");
    if backends.contains("sqlite") {
        let url = format!("sqlite://{}/audit.db", dir.path().display());
        let db = Database::open(&url, None).await.expect("open sqlite");
        run("SQLite", &db, rows, queries, appends).await;
        db.close().await;
        let size = std::fs::metadata(dir.path().join("audit.db")).map_or(0, |m| m.len());
        println!("  SQLite file: {:.2} GB", size as f64 / 1e9);
        let _ = std::fs::remove_file(dir.path().join("audit.db"));
    }
    if backends.contains("postgres") {
        let Some(pg) = Postgres::start().await else {
            return;
        };
        let url = pg.create_database("audit").await;
        let db = Database::open(&url, None).await.expect("open postgres");
        run("PostgreSQL", &db, rows, queries, appends).await;
        db.close().await;
    }
}

async fn run(name: &str, db: &Database, rows: u64, queries: u64, appends: u64) {
    let started = Instant::now();
    fill(db, rows).await;
    let took = started.elapsed();
    println!(
        "\n{name}: filled {rows} rows in {:.1} s ({:.0} rows/s)",
        took.as_secs_f64(),
        rows as f64 / took.as_secs_f64()
    );
    println!(
        "  {:<34} {:>7} {:>10} {:>10} {:>10}",
        "page of 100, filter", "queries", "p50", "p99", "max"
    );
    for case in Case::ALL {
        let figures = time_case(db, case, rows, queries).await;
        println!(
            "  {:<34} {:>7} {:>10} {:>10} {:>10}",
            case.name(),
            figures.len(),
            ms(percentile(&figures, 0.50)),
            ms(percentile(&figures, 0.99)),
            ms(percentile(&figures, 1.0)),
        );
    }
    if previous_too() {
        let figures = previous::time_range_pages(db, rows, queries).await;
        println!(
            "  {:<34} {:>7} {:>10} {:>10} {:>10}",
            "time range (one day), previous",
            figures.len(),
            ms(percentile(&figures, 0.50)),
            ms(percentile(&figures, 0.99)),
            ms(percentile(&figures, 1.0)),
        );
    }
    export(db, rows).await;
    append_cost(db, appends).await;
}

/// `NOVADS_BENCH_PREVIOUS=1`: also time the statements the time-range page and the export
/// used before they read in index order, on the same fill.
fn previous_too() -> bool {
    std::env::var("NOVADS_BENCH_PREVIOUS").is_ok_and(|v| v == "1")
}

/// The page filters the endpoint accepts, one at a time.
#[derive(Debug, Clone, Copy)]
enum Case {
    FirstPage,
    DeepCursor,
    Realm,
    User,
    Client,
    Event,
    Reason,
    OneDay,
    OneDayDeep,
}

impl Case {
    const ALL: [Case; 9] = [
        Case::FirstPage,
        Case::DeepCursor,
        Case::Realm,
        Case::User,
        Case::Client,
        Case::Event,
        Case::Reason,
        Case::OneDay,
        Case::OneDayDeep,
    ];

    fn name(self) -> &'static str {
        match self {
            Case::FirstPage => "none (first page)",
            Case::DeepCursor => "none, cursor deep in the trail",
            Case::Realm => "realm",
            Case::User => "user (user name or subject)",
            Case::Client => "client",
            Case::Event => "event",
            Case::Reason => "reason",
            Case::OneDay => "time range (one day)",
            Case::OneDayDeep => "time range, cursor mid-day",
        }
    }

    /// The `n`th query of this case over a trail of `rows` rows; values vary with `n`.
    fn filter(self, n: u64, rows: u64) -> EventFilter {
        let pick = mix(n);
        let mut filter = EventFilter {
            limit: 100,
            ..Default::default()
        };
        match self {
            Case::FirstPage => {}
            Case::DeepCursor => filter.cursor = Some(Cursor::Id((pick % rows) as i64 + 1)),
            Case::Realm => filter.realms = Some(vec![realm(pick % REALMS)]),
            Case::User => filter.user = Some(user(pick % USERS)),
            Case::Client => filter.client = Some(client(pick % CLIENTS)),
            Case::Event => {
                filter.event = Some(AuditEventKind::ALL[n as usize % AuditEventKind::ALL.len()])
            }
            Case::Reason => {
                filter.reason = Some(AuditReason::ALL[n as usize % AuditReason::ALL.len()])
            }
            Case::OneDay | Case::OneDayDeep => {
                let since = end() - chrono::Duration::days(DAYS)
                    + chrono::Duration::days((pick % DAYS as u64) as i64);
                filter.since = Some(since);
                filter.until = Some(since + chrono::Duration::days(1));
                if let Case::OneDayDeep = self {
                    // Where a client paging through the day would be after half of it.
                    filter.cursor = Some(Cursor::Time {
                        at: format_time(since + chrono::Duration::hours(12)),
                        id: i64::MAX,
                    });
                }
            }
        }
        filter
    }
}

fn realm(n: u64) -> String {
    format!("realm-{n}")
}
fn user(n: u64) -> String {
    format!("user-{n}")
}
fn client(n: u64) -> String {
    format!("client-{n}")
}

/// A cheap, fixed scramble (splitmix64), so that runs ask the same questions.
fn mix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

async fn time_case(db: &Database, case: Case, rows: u64, queries: u64) -> Vec<Duration> {
    // One untimed query warms the connection and the statement cache.
    page(db, &case.filter(queries, rows)).await.expect("page");
    let started = Instant::now();
    let mut figures = Vec::with_capacity(queries as usize);
    for n in 0..queries {
        let filter = case.filter(n, rows);
        let asked = Instant::now();
        let page = page(db, &filter).await.expect("page");
        figures.push(asked.elapsed());
        assert!(page.events.len() <= 100);
        if started.elapsed() > CASE_BUDGET {
            break;
        }
    }
    figures.sort();
    figures
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(at).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Exports as JSON lines into a sink that counts bytes, as the HTTP body would send them, and
/// prints rows/s and memory: the last week of the trail (about 7/90 of it), one realm's whole
/// trail (1/300) and one realm's last week.
async fn export(db: &Database, rows: u64) {
    let week = Some(end() - chrono::Duration::days(7));
    let cases = [
        ("last 7 days", week, None, rows * 7 / DAYS as u64),
        ("one realm", None, Some(realm(7)), rows / REALMS),
        (
            "one realm, last 7 days",
            week,
            Some(realm(7)),
            rows * 7 / DAYS as u64 / REALMS,
        ),
    ];
    for (name, since, realm, expected) in cases {
        let filter = ExportFilter {
            since,
            until: None,
            realm,
        };
        // Peak memory so far is the fill's; start the export's peak afresh.
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let before = memory();
        let mut sink = Counting::default();
        let started = Instant::now();
        let written = audit::export(db, &filter, ExportFormat::Jsonl, &mut sink)
            .await
            .expect("export");
        let took = started.elapsed();
        let after = memory();
        // Realms are spread by a hash, so a realm's share is only about 1/300.
        assert!(
            written.abs_diff(expected) <= expected / 10 + rows / 1000 + 2,
            "exported {written} rows, expected about {expected}"
        );
        println!(
            "  export, {name}, JSON lines: {written} rows, {:.1} MB in {:.2} s = {:.0} rows/s",
            sink.0 as f64 / 1e6,
            took.as_secs_f64(),
            written as f64 / took.as_secs_f64()
        );
        println!(
            "    memory (RSS) before {} MB, after {} MB, peak during export {} MB",
            before.rss_kb / 1024,
            after.rss_kb / 1024,
            after.peak_kb / 1024
        );
        if previous_too() {
            let mut sink = Counting::default();
            let started = Instant::now();
            let previous = previous::export(db, &filter, &mut sink).await;
            let took = started.elapsed();
            assert_eq!(
                previous, written,
                "the previous statement exports the same rows"
            );
            println!(
                "    previous statement: {:.2} s = {:.0} rows/s",
                took.as_secs_f64(),
                previous as f64 / took.as_secs_f64()
            );
        }
    }
}

/// The statements that served a time-range page and an export before they read in index
/// order, issued verbatim through the same pools, so that before and after compare on one
/// fill. The export's rows are written as JSON lines as `audit::export` writes them.
mod previous {
    use std::time::{Duration, Instant};

    use novads_api::db::Database;
    use novads_api::federation::audit::{AuditRecord, ExportFilter, format_time};

    use super::{CASE_BUDGET, Case, Counting};

    /// A page's ids picked in id order from the time index, then the page read.
    const TIME_RANGE_PAGE: &str = "WITH in_range AS MATERIALIZED (SELECT id FROM audit_events \
         WHERE 1 = 1 AND at >= $1 AND at < $2) SELECT * FROM audit_events WHERE id IN \
         (SELECT id FROM in_range ORDER BY id DESC LIMIT $3) ORDER BY id DESC LIMIT $3";

    /// One statement for every combination of the export's filters.
    const EXPORT_PAGE: &str = "SELECT id, at, event, realm, username, subject, client_id, \
         source_ip, user_agent, reason, directory, latency_ms, prev_hash, hash, detail \
         FROM audit_events WHERE id > $1 \
         AND (CAST($2 AS TEXT) IS NULL OR at >= $2) AND (CAST($3 AS TEXT) IS NULL OR at < $3) \
         AND (CAST($4 AS TEXT) IS NULL OR realm = $4) ORDER BY id LIMIT $5";

    /// What a previous statement is asked; `after` and `realm` only by the export's.
    struct Ask {
        after: Option<i64>,
        since: Option<String>,
        until: Option<String>,
        realm: Option<String>,
        limit: i64,
    }

    async fn rows(db: &Database, sql: &'static str, ask: Ask) -> Vec<AuditRecord> {
        macro_rules! bound {
            ($pool:expr) => {{
                let mut query = sqlx::query_as(sql);
                if let Some(after) = ask.after {
                    query = query.bind(after);
                }
                query = query.bind(ask.since).bind(ask.until);
                if ask.after.is_some() {
                    query = query.bind(ask.realm);
                }
                let rows = query.bind(ask.limit).fetch_all($pool).await;
                rows.expect("previous statement")
            }};
        }
        match db {
            Database::Sqlite(pool) => bound!(pool),
            Database::Postgres(pool) => bound!(pool),
        }
    }

    pub async fn time_range_pages(db: &Database, rows: u64, queries: u64) -> Vec<Duration> {
        let ask = |n: u64| {
            let filter = Case::OneDay.filter(n, rows);
            Ask {
                after: None,
                since: filter.since.map(format_time),
                until: filter.until.map(format_time),
                realm: None,
                limit: 101,
            }
        };
        // One untimed query warms the connection and the statement cache.
        self::rows(db, TIME_RANGE_PAGE, ask(queries)).await;
        let started = Instant::now();
        let mut figures = Vec::with_capacity(queries as usize);
        for n in 0..queries {
            let asked = Instant::now();
            let page = self::rows(db, TIME_RANGE_PAGE, ask(n)).await;
            figures.push(asked.elapsed());
            assert!(page.len() <= 101);
            if started.elapsed() > CASE_BUDGET {
                break;
            }
        }
        figures.sort();
        figures
    }

    pub async fn export(db: &Database, filter: &ExportFilter, out: &mut Counting) -> u64 {
        use std::io::Write as _;
        let mut written = 0;
        let mut after = 0;
        let mut line = Vec::new();
        loop {
            let ask = Ask {
                after: Some(after),
                since: filter.since.map(format_time),
                until: filter.until.map(format_time),
                realm: filter.realm.clone(),
                limit: 1000,
            };
            let page = self::rows(db, EXPORT_PAGE, ask).await;
            let Some(last) = page.last() else {
                return written;
            };
            after = last.id;
            for row in &page {
                line.clear();
                serde_json::to_writer(&mut line, row).expect("json");
                line.push(b'\n');
                out.write_all(&line).expect("count");
                written += 1;
            }
        }
    }
}

/// An output that keeps only the count of bytes written.
#[derive(Default)]
struct Counting(u64);

impl std::io::Write for Counting {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 += bytes.len() as u64;
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Memory {
    rss_kb: u64,
    peak_kb: u64,
}

/// VmRSS and VmHWM of this process.
fn memory() -> Memory {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    Memory {
        rss_kb: field("VmRSS:"),
        peak_kb: field("VmHWM:"),
    }
}

/// Sign-in rows appended one at a time through the audit writer (each its own transaction, as
/// sign-ins arrive one by one when the server is quiet), on the full table.
async fn append_cost(db: &Database, appends: u64) {
    let log = AuditLog::start(db.clone(), audit_key());
    let started = Instant::now();
    let mut figures = Vec::with_capacity(appends as usize);
    for n in 0..appends {
        let mut event = AuditEvent::new(AuditEventKind::LoginSucceeded);
        let pick = mix(n + 1_000_000);
        event.realm = Some(realm(pick % REALMS));
        event.username = Some(user(pick % USERS));
        event.subject = Some(format!("sub-{}", pick % USERS));
        event.client_id = Some(client(pick % CLIENTS));
        event.source_ip = Some("10.1.2.3".into());
        let asked = Instant::now();
        log.append(event).await.expect("append");
        figures.push(asked.elapsed());
    }
    let took = started.elapsed();
    figures.sort();
    println!(
        "  sign-in audit append, one at a time: {appends} rows, {:.0} rows/s, p50 {}, p99 {}",
        appends as f64 / took.as_secs_f64(),
        ms(percentile(&figures, 0.50)),
        ms(percentile(&figures, 0.99)),
    );
}

/// The audit chain's key: a fixed key-encryption key, as the bench has no configuration file.
fn audit_key() -> audit::AuditKey {
    audit::AuditKey::from_kek(&novads_api::oidc::keys::KeyEncryptionKey::from_bytes(
        [0x5a; 32],
    ))
    .expect("audit key")
}

/// Fills `audit_events` with ids 1..=rows in chunks, one statement and transaction each, and
/// moves the chain head past them so that the writer appends after them.
async fn fill(db: &Database, rows: u64) {
    let start_us = (end() - chrono::Duration::days(DAYS)).timestamp_micros();
    // Microseconds between rows, so that the last row lands at `end()`.
    let step_us = (DAYS * 86_400_000_000) / rows as i64;
    let mut from = 1u64;
    while from <= rows {
        let to = (from + FILL_CHUNK - 1).min(rows);
        let result = match db {
            Database::Sqlite(pool) => sqlx::query(SQLITE_FILL)
                .bind(from as i64)
                .bind(to as i64)
                .bind(start_us)
                .bind(step_us)
                .execute(pool)
                .await
                .map(|done| done.rows_affected()),
            Database::Postgres(pool) => sqlx::query(POSTGRES_FILL)
                .bind(from as i64)
                .bind(to as i64)
                .bind(start_us)
                .bind(step_us)
                .execute(pool)
                .await
                .map(|done| done.rows_affected()),
        };
        assert_eq!(result.expect("fill"), to - from + 1);
        from = to + 1;
    }
    let head = "UPDATE audit_chain_head SET last_id = $1, last_hash = $2 WHERE id = 1";
    let last_hash = format!("{rows:064x}");
    match db {
        Database::Sqlite(pool) => {
            sqlx::query(head)
                .bind(rows as i64)
                .bind(&last_hash)
                .execute(pool)
                .await
                .expect("head");
        }
        Database::Postgres(pool) => {
            sqlx::query(head)
                .bind(rows as i64)
                .bind(&last_hash)
                .execute(pool)
                .await
                .expect("head");
            // What autovacuum does on a live server soon after a bulk load: statistics for the
            // planner and the visibility map for index-only scans.
            sqlx::query("VACUUM ANALYZE audit_events")
                .execute(pool)
                .await
                .expect("vacuum");
        }
    }
}

// The fill statements: `i` is the id; `h` scrambles it (Knuth's multiplicative hash) so that
// realms, users, clients and kinds do not follow the id. Kinds: 60 % login_succeeded, 20 %
// login_failed (with a failure reason), 12 % token_refreshed, 2 % refresh_denied, 4 % logout,
// 1 % locked_out, 1 % admin_action. Subjects are set when the user was found.

const SQLITE_FILL: &str = "
WITH RECURSIVE n(i) AS (SELECT $1 UNION ALL SELECT i + 1 FROM n WHERE i < $2),
g(i, h, us) AS (SELECT i, (i * 2654435761) % 4294967296, $3 + i * $4 FROM n),
r(i, h, us, k) AS (SELECT i, h, us, h % 100 FROM g)
INSERT INTO audit_events (id, at, event, realm, username, subject, client_id, source_ip,
                          user_agent, reason, directory, latency_ms, prev_hash, hash)
SELECT i,
       strftime('%Y-%m-%dT%H:%M:%S', us / 1000000, 'unixepoch') || '.'
           || printf('%06d', us % 1000000) || 'Z',
       CASE WHEN k < 60 THEN 'login_succeeded' WHEN k < 80 THEN 'login_failed'
            WHEN k < 92 THEN 'token_refreshed' WHEN k < 94 THEN 'refresh_denied'
            WHEN k < 98 THEN 'logout' WHEN k < 99 THEN 'locked_out' ELSE 'admin_action' END,
       'realm-' || (h / 7 % 300),
       'user-' || (h / 11 % 900),
       CASE WHEN k < 60 OR k >= 80 THEN 'sub-' || (h / 11 % 900) END,
       'client-' || (h / 13 % 400),
       '10.' || (h / 17 % 250) || '.' || (h / 19 % 250) || '.' || (h / 23 % 250),
       'Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0',
       CASE WHEN k >= 60 AND k < 80 THEN
                CASE h / 29 % 20 WHEN 0 THEN 'unknown_user' WHEN 1 THEN 'account_disabled'
                     WHEN 2 THEN 'trust_denied' WHEN 3 THEN 'directory_unavailable'
                     WHEN 4 THEN 'invalid_request' WHEN 5 THEN 'throttled'
                     ELSE 'bad_credentials' END
            WHEN k >= 92 AND k < 94 THEN
                CASE h / 29 % 50 WHEN 0 THEN 'tampered' ELSE 'invalid_request' END
            WHEN k = 98 THEN 'locked_out' END,
       'ldaps://ldap.realm-' || (h / 7 % 300) || '.example.lv',
       h / 31 % 400,
       printf('%064x', i - 1),
       printf('%064x', i)
FROM r";

const POSTGRES_FILL: &str = "
INSERT INTO audit_events (id, at, event, realm, username, subject, client_id, source_ip,
                          user_agent, reason, directory, latency_ms, prev_hash, hash)
SELECT i,
       to_char(TIMESTAMP 'epoch' + us * INTERVAL '1 microsecond', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
       CASE WHEN k < 60 THEN 'login_succeeded' WHEN k < 80 THEN 'login_failed'
            WHEN k < 92 THEN 'token_refreshed' WHEN k < 94 THEN 'refresh_denied'
            WHEN k < 98 THEN 'logout' WHEN k < 99 THEN 'locked_out' ELSE 'admin_action' END,
       'realm-' || (h / 7 % 300),
       'user-' || (h / 11 % 900),
       CASE WHEN k < 60 OR k >= 80 THEN 'sub-' || (h / 11 % 900) END,
       'client-' || (h / 13 % 400),
       '10.' || (h / 17 % 250) || '.' || (h / 19 % 250) || '.' || (h / 23 % 250),
       'Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0',
       CASE WHEN k >= 60 AND k < 80 THEN
                CASE h / 29 % 20 WHEN 0 THEN 'unknown_user' WHEN 1 THEN 'account_disabled'
                     WHEN 2 THEN 'trust_denied' WHEN 3 THEN 'directory_unavailable'
                     WHEN 4 THEN 'invalid_request' WHEN 5 THEN 'throttled'
                     ELSE 'bad_credentials' END
            WHEN k >= 92 AND k < 94 THEN
                CASE h / 29 % 50 WHEN 0 THEN 'tampered' ELSE 'invalid_request' END
            WHEN k = 98 THEN 'locked_out' END,
       'ldaps://ldap.realm-' || (h / 7 % 300) || '.example.lv',
       h / 31 % 400,
       lpad(to_hex(i - 1), 64, '0'),
       lpad(to_hex(i), 64, '0')
FROM (SELECT i, h, us, h % 100 AS k
      FROM (SELECT i, (i * 2654435761) % 4294967296 AS h, $3::bigint + i * $4::bigint AS us
            FROM generate_series($1::bigint, $2::bigint) AS i) g) r";
