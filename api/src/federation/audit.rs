//! The audit trail: one row for every authentication attempt, append-only and hash-chained.
//!
//! Each row's `hash` is an HMAC-SHA256, under a key derived from the key-encryption key, over
//! its content and `prev_hash`, the hash of the row before it, so an edited, inserted or
//! deleted row breaks the chain exactly there, and someone who can only write to the database
//! cannot recompute it (rows written before the chain was keyed keep plain SHA-256; see
//! `audit_chain.rs`, the pure core that decides what is intact). Rows are written
//! *before* the caller gets an answer; when a row cannot be written the caller gets an error and
//! must fail closed.
//!
//! Writes go through one writer task per process that appends in batches: callers wait for the
//! commit of the batch holding their row, and concurrent sign-ins share one transaction instead
//! of queueing on the chain head one commit at a time.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

pub use super::audit_chain::{AuditKey, BrokenLink, ChainHead, GENESIS_HASH};
use super::audit_chain::{ChainRow, ChainWalk, Checkpoint};
use crate::db::{Backend, Database, WriteScope, on_pool, on_write};
use export::push_export_conditions;
pub use export::{ExportError, ExportFilter, ExportFormat, export, neutralise_csv_cell};

/// Most rows appended in one transaction.
const MAX_BATCH: usize = 256;
/// Requests waiting for the writer; beyond this, callers wait for room (back-pressure).
const QUEUE_DEPTH: usize = 4096;
/// Longest text kept in a free-text field (user agent, username as typed).
pub const MAX_FIELD_CHARS: usize = 512;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditEventKind {
    LoginSucceeded,
    LoginFailed,
    TokenRefreshed,
    RefreshDenied,
    Logout,
    LockedOut,
    /// A state-changing call of the admin API; `detail` says who did what to what.
    AdminAction,
}

/// The true reason of a failure; users only ever see "wrong username or password".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditReason {
    BadCredentials,
    UnknownUser,
    AccountDisabled,
    LockedOut,
    TrustDenied,
    DirectoryUnavailable,
    InvalidRequest,
    /// The source failed too often and must wait; the directory was not asked.
    Throttled,
    /// A stored code or refresh token was changed in the database: the key-encryption key does
    /// not authenticate its row.
    Tampered,
}

macro_rules! text_enum {
    ($ty:ty { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            pub const ALL: &'static [$ty] = &[$(<$ty>::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $(<$ty>::$variant => $text),+ }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok(<$ty>::$variant),)+
                    other => Err(format!("unknown value {other:?}")),
                }
            }
        }
    };
}

text_enum!(AuditEventKind {
    LoginSucceeded => "login_succeeded",
    LoginFailed => "login_failed",
    TokenRefreshed => "token_refreshed",
    RefreshDenied => "refresh_denied",
    Logout => "logout",
    LockedOut => "locked_out",
    AdminAction => "admin_action",
});

text_enum!(AuditReason {
    BadCredentials => "bad_credentials",
    UnknownUser => "unknown_user",
    AccountDisabled => "account_disabled",
    LockedOut => "locked_out",
    TrustDenied => "trust_denied",
    DirectoryUnavailable => "directory_unavailable",
    InvalidRequest => "invalid_request",
    Throttled => "throttled",
    Tampered => "tampered",
});

/// One attempt, before it is appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub at: DateTime<Utc>,
    pub event: AuditEventKind,
    pub realm: Option<String>,
    pub username: Option<String>,
    pub subject: Option<String>,
    pub client_id: Option<String>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub reason: Option<AuditReason>,
    /// The directory URL that answered (or failed), for LDAP realms.
    pub directory: Option<String>,
    pub latency_ms: i64,
    /// A JSON object with what the other fields do not hold (admin actions).
    pub detail: Option<String>,
}

impl AuditEvent {
    /// An event of `kind` happening now, with every optional field empty.
    pub fn new(kind: AuditEventKind) -> Self {
        Self {
            at: Utc::now(),
            event: kind,
            realm: None,
            username: None,
            subject: None,
            client_id: None,
            source_ip: None,
            user_agent: None,
            reason: None,
            directory: None,
            latency_ms: 0,
            detail: None,
        }
    }
}

/// A row of the trail as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct AuditRecord {
    pub id: i64,
    /// RFC 3339 UTC with microseconds; the exact text that was hashed.
    pub at: String,
    pub event: String,
    pub realm: Option<String>,
    pub username: Option<String>,
    pub subject: Option<String>,
    pub client_id: Option<String>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub reason: Option<String>,
    pub directory: Option<String>,
    pub latency_ms: i64,
    pub prev_hash: String,
    pub hash: String,
    pub detail: Option<String>,
}

impl AuditRecord {
    /// The row `event` becomes at `id` after `prev_hash`; always keyed (new rows lie past the
    /// mark from which the chain is keyed).
    fn from_event(id: i64, event: &AuditEvent, prev_hash: String, key: &AuditKey) -> Self {
        let clip = |s: &Option<String>| {
            s.as_ref()
                .map(|v| v.chars().take(MAX_FIELD_CHARS).collect::<String>())
        };
        let mut record = Self {
            id,
            at: format_time(event.at),
            event: event.event.as_str().to_owned(),
            realm: clip(&event.realm),
            username: clip(&event.username),
            subject: clip(&event.subject),
            client_id: clip(&event.client_id),
            source_ip: clip(&event.source_ip),
            user_agent: clip(&event.user_agent),
            reason: event.reason.map(|r| r.as_str().to_owned()),
            directory: clip(&event.directory),
            latency_ms: event.latency_ms,
            prev_hash,
            hash: String::new(),
            detail: event.detail.clone(),
        };
        record.hash = key.mac(&record.mac_input());
        record
    }

    /// The one input of the row's hash: every field but `hash`, in a fixed order, as a JSON
    /// array (unambiguous: no field can bleed into the next). A column added to the trail is
    /// added here, after the existing fields, when it is present: `detail` (admin actions) is
    /// appended only when present, so rows written before it existed keep their hashes.
    pub fn mac_input(&self) -> Vec<u8> {
        // Invariant: serde_json fails only on a writer error (a `Vec` has none), a map key
        // that is not a string (there is no map) or a field whose `Serialize` fails (strings,
        // integers and their options never do).
        serde_json::to_vec(&MacFields(self)).expect("strings and integers serialise")
    }
}

/// The fields of [`AuditRecord::mac_input`], serialised straight into the JSON array (no
/// `serde_json::Value` in between: every sign-in and refresh appends a row). The bytes are
/// those of the `json!` array the trail was always hashed over (see the test).
struct MacFields<'a>(&'a AuditRecord);

impl Serialize for MacFields<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq as _;
        let r = self.0;
        let mut fields = serializer.serialize_seq(None)?;
        fields.serialize_element(&r.id)?;
        fields.serialize_element(&r.at)?;
        fields.serialize_element(&r.event)?;
        fields.serialize_element(&r.realm)?;
        fields.serialize_element(&r.username)?;
        fields.serialize_element(&r.subject)?;
        fields.serialize_element(&r.client_id)?;
        fields.serialize_element(&r.source_ip)?;
        fields.serialize_element(&r.user_agent)?;
        fields.serialize_element(&r.reason)?;
        fields.serialize_element(&r.directory)?;
        fields.serialize_element(&r.latency_ms)?;
        fields.serialize_element(&r.prev_hash)?;
        if let Some(detail) = &r.detail {
            fields.serialize_element(detail)?;
        }
        fields.end()
    }
}

/// The one time format of the trail.
pub fn format_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    #[error("audit trail unavailable: {0}")]
    Unavailable(String),
}

/// Appends events to the trail. Cheap to clone; all clones share one writer task.
#[derive(Clone)]
pub struct AuditLog {
    requests: mpsc::Sender<AppendRequest>,
    db: Database,
    key: AuditKey,
}

struct AppendRequest {
    event: AuditEvent,
    done: oneshot::Sender<Result<i64, AuditError>>,
}

/// An event with the writer, not yet known to be committed.
#[must_use = "the row is not known to be committed until `committed` says so"]
pub struct PendingAppend(oneshot::Receiver<Result<i64, AuditError>>);

impl PendingAppend {
    /// Waits for the commit of the batch holding the row; returns the row's id.
    pub async fn committed(self) -> Result<i64, AuditError> {
        self.0
            .await
            .map_err(|_| AuditError::Unavailable("the audit writer has stopped".into()))?
    }
}

impl AuditLog {
    /// Starts the writer task for `db`, chaining under `key`. It ends when every clone of the
    /// log is dropped.
    pub fn start(db: Database, key: AuditKey) -> Self {
        let (requests, queue) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(writer(db.clone(), key.clone(), queue));
        Self { requests, db, key }
    }

    /// The key the chain is written under, for verifying it (the admin API's `audit/verify`).
    pub fn key(&self) -> &AuditKey {
        &self.key
    }

    /// Appends one event and returns its id once it is committed.
    pub async fn append(&self, event: AuditEvent) -> Result<i64, AuditError> {
        self.submit(event).await?.committed().await
    }

    /// Hands one event to the writer without waiting for its commit, so that the caller can
    /// do its own work meanwhile. Nothing that depends on the row may be answered before
    /// [`PendingAppend::committed`] says it is on disk.
    pub async fn submit(&self, event: AuditEvent) -> Result<PendingAppend, AuditError> {
        let (done, committed) = oneshot::channel();
        self.requests
            .send(AppendRequest { event, done })
            .await
            .map_err(|_| AuditError::Unavailable("the audit writer has stopped".into()))?;
        Ok(PendingAppend(committed))
    }

    pub fn db(&self) -> &Database {
        &self.db
    }
}

async fn writer(db: Database, key: AuditKey, mut queue: mpsc::Receiver<AppendRequest>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let events: Vec<&AuditEvent> = batch.iter().map(|r| &r.event).collect();
        let result = append_batch(&db, &key, &events).await;
        match result {
            Ok(ids) => {
                for (request, id) in batch.drain(..).zip(ids) {
                    let _ = request.done.send(Ok(id));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, rows = batch.len(), "audit append failed");
                let error = AuditError::Unavailable(e.to_string());
                for request in batch.drain(..) {
                    let _ = request.done.send(Err(error.clone()));
                }
                // Do not spin against a database that is down.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The columns of `audit_events` in table order, as a literal for `concat!`: every statement
/// stays a static string.
macro_rules! columns {
    () => {
        "id, at, event, realm, username, subject, client_id, source_ip, user_agent, reason, \
         directory, latency_ms, prev_hash, hash, detail"
    };
}

/// One multi-row INSERT for a batch: a single statement instead of a round trip per row.
fn insert_rows<DB>(records: &[AuditRecord]) -> sqlx::QueryBuilder<DB>
where
    DB: sqlx::Database,
    <DB as sqlx::Database>::Arguments: Default,
    i64: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    String: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<String>: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let mut builder =
        sqlx::QueryBuilder::new(concat!("INSERT INTO audit_events (", columns!(), ") "));
    builder.push_values(records, |mut row, r| {
        row.push_bind(r.id)
            .push_bind(r.at.clone())
            .push_bind(r.event.clone())
            .push_bind(r.realm.clone())
            .push_bind(r.username.clone())
            .push_bind(r.subject.clone())
            .push_bind(r.client_id.clone())
            .push_bind(r.source_ip.clone())
            .push_bind(r.user_agent.clone())
            .push_bind(r.reason.clone())
            .push_bind(r.directory.clone())
            .push_bind(r.latency_ms)
            .push_bind(r.prev_hash.clone())
            .push_bind(r.hash.clone())
            .push_bind(r.detail.clone());
    });
    builder
}

/// Chains `events` after the head (`last_id`, `last_hash`); returns the records to insert.
fn chain(
    key: &AuditKey,
    last_id: i64,
    last_hash: String,
    events: &[&AuditEvent],
) -> Vec<AuditRecord> {
    let mut prev = (last_id, last_hash);
    events
        .iter()
        .map(|event| {
            let record =
                AuditRecord::from_event(prev.0 + 1, event, std::mem::take(&mut prev.1), key);
            prev = (record.id, record.hash.clone());
            record
        })
        .collect()
}

/// Appends `events` in one transaction, chained after the current head. Returns their ids.
async fn append_batch(
    db: &Database,
    key: &AuditKey,
    events: &[&AuditEvent],
) -> Result<Vec<i64>, sqlx::Error> {
    // Replicas must append one batch after another: PostgreSQL locks the head row; on SQLite
    // the write transaction (`BEGIN IMMEDIATE`) already holds the file's write lock, and SQLite
    // has no `FOR UPDATE`.
    let read_head = db.backend().pick(
        "SELECT last_id, last_hash FROM audit_chain_head WHERE id = 1",
        "SELECT last_id, last_hash FROM audit_chain_head WHERE id = 1 FOR UPDATE",
    );
    let mut write = db.begin_write(WriteScope::Transaction).await?;
    let records = on_write!(&mut write, |conn| {
        let (last_id, last_hash): (i64, String) =
            sqlx::query_as(read_head).fetch_one(&mut *conn).await?;
        let records = chain(key, last_id, last_hash, events);
        if !records.is_empty() {
            insert_rows(&records).build().execute(&mut *conn).await?;
        }
        if let Some(last) = records.last() {
            sqlx::query("UPDATE audit_chain_head SET last_id = $1, last_hash = $2 WHERE id = 1")
                .bind(last.id)
                .bind(&last.hash)
                .execute(&mut *conn)
                .await?;
        }
        records
    });
    write.commit().await?;
    Ok(records.iter().map(|r| r.id).collect())
}

/// Rows read per query while verifying or exporting.
const PAGE: i64 = 1000;

/// Reads up to `PAGE` rows with `after < id <= through`, in id order, matching `filter`. Only
/// the conditions that are set are written, so that each combination gets its own plan (one
/// statement with `$n IS NULL OR …` for every filter is planned for none: it read the primary
/// key from the first row and skipped what did not match). A `realm` page is read from the
/// `(realm, id)` index (migration 0018), a time-bounded one along the primary key from
/// `after`, which the export's `id_span` puts just before the range.
async fn page(
    db: &Database,
    after: i64,
    through: Option<i64>,
    filter: &ExportFilter,
) -> Result<Vec<AuditRecord>, sqlx::Error> {
    on_pool!(db, |pool| {
        let mut sql = sqlx::QueryBuilder::new(concat!("SELECT ", columns!(), " FROM audit_events"));
        sql.push(" WHERE id > ").push_bind(after);
        if let Some(through) = through {
            sql.push(" AND id <= ").push_bind(through);
        }
        push_export_conditions(&mut sql, filter);
        sql.push(" ORDER BY id LIMIT ").push_bind(PAGE);
        sql.build_query_as().fetch_all(pool).await
    })
}

// Declared after `columns!`, which the CSV header uses.
mod export;

/// The outcome of checking the whole chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Rows whose hashes were recomputed.
    pub rows_checked: u64,
    /// The first row where the chain breaks, if any.
    pub first_broken: Option<BrokenLink>,
    /// The head the intact chain reached (id and hash of its last row); `None` when broken.
    /// Kept outside the database, it lets a later verification show that nothing was cut off.
    pub head: Option<ChainHead>,
}

/// Recomputes every hash from the last checkpoint (or the start) to the head.
pub async fn verify(db: &Database, key: &AuditKey) -> Result<Verification, sqlx::Error> {
    verify_expecting(db, key, None).await
}

/// Like [`verify`]; with `expect`, a head recorded earlier (by `novads audit verify` or the
/// server's log), the chain must also still pass through it: same row, same hash.
pub async fn verify_expecting(
    db: &Database,
    key: &AuditKey,
    expect: Option<ChainHead>,
) -> Result<Verification, sqlx::Error> {
    let broken = |rows_checked, link| Verification {
        rows_checked,
        first_broken: Some(link),
        head: None,
    };
    let Some(keyed_from) = keyed_from(db).await? else {
        return Ok(broken(
            0,
            BrokenLink {
                id: 0,
                problem: "the mark from which the chain is keyed (audit_chain_keying) was removed"
                    .into(),
            },
        ));
    };
    let checkpoint = latest_checkpoint(db).await?;
    let mut walk = match ChainWalk::start(key, keyed_from, checkpoint.as_ref(), expect) {
        Ok(walk) => walk,
        Err(link) => return Ok(broken(0, link)),
    };
    let everything = ExportFilter::default();
    let mut after = checkpoint.as_ref().map_or(0, |c| c.through_id);
    loop {
        let rows = page(db, after, None, &everything).await?;
        let Some(last) = rows.last() else { break };
        after = last.id;
        for row in &rows {
            let input = row.mac_input();
            let checked = walk.next(&ChainRow {
                id: row.id,
                input: &input,
                prev_hash: &row.prev_hash,
                hash: &row.hash,
            });
            if let Err(link) = checked {
                return Ok(broken(walk.rows_checked, link));
            }
        }
    }
    let rows_checked = walk.rows_checked;
    Ok(match walk.finish(&head(db).await?) {
        Ok(head) => Verification {
            rows_checked,
            first_broken: None,
            head: Some(head),
        },
        Err(link) => broken(rows_checked, link),
    })
}

/// The chain head as the database records it.
pub async fn head(db: &Database) -> Result<ChainHead, sqlx::Error> {
    let sql = "SELECT last_id, last_hash FROM audit_chain_head WHERE id = 1";
    let (id, hash): (i64, String) =
        on_pool!(db, |pool| sqlx::query_as(sql).fetch_one(pool).await?);
    Ok(ChainHead { id, hash })
}

/// The first row whose hash is keyed; rows before it were written before the upgrade.
async fn keyed_from(db: &Database) -> Result<Option<i64>, sqlx::Error> {
    let sql = "SELECT keyed_from FROM audit_chain_keying WHERE id = 1";
    on_pool!(db, |pool| sqlx::query_scalar(sql)
        .fetch_optional(pool)
        .await)
}

async fn latest_checkpoint(db: &Database) -> Result<Option<Checkpoint>, sqlx::Error> {
    let sql = "SELECT pruned_at, through_id, through_hash, mac FROM audit_checkpoints \
               ORDER BY through_id DESC, id DESC LIMIT 1";
    on_pool!(db, |pool| sqlx::query_as(sql).fetch_optional(pool).await)
}

/// What [`prune`] removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pruned {
    /// Rows deleted.
    pub rows: u64,
    /// The checkpoint verification now starts from, if anything was pruned.
    pub through_id: Option<i64>,
}

/// Deletes rows older than `before`, first recording a checkpoint (the last deleted row's id
/// and hash, authenticated under `key`) so that [`verify`] still checks the rest of the chain
/// from there.
///
/// The database allows deleting only rows a checkpoint covers. On PostgreSQL the application
/// role has no DELETE on the trail at all: pruning goes through `novads_audit_prune`, a
/// function owned by the schema owner (migration 0010), which also refuses rows younger than
/// a day.
pub async fn prune(
    db: &Database,
    key: &AuditKey,
    before: DateTime<Utc>,
) -> Result<Pruned, sqlx::Error> {
    let cutoff = format_time(before);
    let pruned_at = format_time(Utc::now());
    let postgres = db.backend() == Backend::Postgres;
    let mut write = db.begin_write(WriteScope::Transaction).await?;
    let pruned = on_write!(&mut write, |conn| {
        if postgres {
            // Serialise with appenders so the checkpoint cannot race a new row (on SQLite the
            // write transaction already excludes them).
            sqlx::query("SELECT last_id FROM audit_chain_head WHERE id = 1 FOR UPDATE")
                .execute(&mut *conn)
                .await?;
        }
        let last: Option<(i64, String)> = sqlx::query_as(
            "SELECT id, hash FROM audit_events WHERE at < $1 ORDER BY id DESC LIMIT 1",
        )
        .bind(&cutoff)
        .fetch_optional(&mut *conn)
        .await?;
        match last {
            None => Pruned {
                rows: 0,
                through_id: None,
            },
            Some((through_id, through_hash)) => {
                let checkpoint = Checkpoint::sealed(key, pruned_at, through_id, through_hash);
                let rows = if postgres {
                    let removed: i64 =
                        sqlx::query_scalar("SELECT novads_audit_prune($1, $2, $3, $4)")
                            .bind(checkpoint.through_id)
                            .bind(&checkpoint.through_hash)
                            .bind(&checkpoint.pruned_at)
                            .bind(&checkpoint.mac)
                            .fetch_one(&mut *conn)
                            .await?;
                    u64::try_from(removed).unwrap_or_default()
                } else {
                    sqlx::query(
                        "INSERT INTO audit_checkpoints (pruned_at, through_id, through_hash, mac) \
                         VALUES ($1, $2, $3, $4)",
                    )
                    .bind(&checkpoint.pruned_at)
                    .bind(checkpoint.through_id)
                    .bind(&checkpoint.through_hash)
                    .bind(&checkpoint.mac)
                    .execute(&mut *conn)
                    .await?;
                    // The trigger of migration 0010 lets exactly the checkpointed rows go.
                    sqlx::query("DELETE FROM audit_events WHERE id <= $1")
                        .bind(through_id)
                        .execute(&mut *conn)
                        .await?
                        .rows_affected()
                };
                Pruned {
                    rows,
                    through_id: Some(through_id),
                }
            }
        }
    });
    write.commit().await?;
    Ok(pruned)
}

/// Prunes once an hour by `retention_days`, for as long as the server runs.
pub async fn prune_periodically(db: Database, key: AuditKey, retention_days: u32) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        let before = Utc::now() - chrono::Duration::days(i64::from(retention_days));
        match prune(&db, &key, before).await {
            Ok(Pruned { rows: 0, .. }) => {}
            Ok(pruned) => tracing::info!(rows = pruned.rows, "pruned audit rows past retention"),
            Err(e) => tracing::error!(error = %e, "audit pruning failed"),
        }
    }
}

/// How often the server logs the signed chain head.
pub const HEAD_RECORD_INTERVAL: Duration = Duration::from_secs(60);

/// Logs the chain head every [`HEAD_RECORD_INTERVAL`] as one line under the target
/// `novads::audit::head`, with a MAC over time, id and hash, so that a log collector holds a
/// copy outside the database: `novads audit verify --expect-head ID:HASH` then shows whether
/// rows were later cut off or rewritten.
pub async fn record_head_periodically(db: Database, key: AuditKey) {
    let mut tick = tokio::time::interval(HEAD_RECORD_INTERVAL);
    loop {
        tick.tick().await;
        match head(&db).await {
            Ok(head) => {
                let at = format_time(Utc::now());
                let mac = head.record_mac(&key, &at);
                tracing::info!(
                    target: "novads::audit::head",
                    head = %head,
                    at = %at,
                    mac = %mac,
                    "audit chain head"
                );
            }
            Err(e) => tracing::warn!(error = %e, "reading the audit chain head failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(detail: Option<&str>) -> AuditRecord {
        AuditRecord {
            id: 7,
            at: "2026-12-05T11:00:00.000001Z".into(),
            event: "token_refreshed".into(),
            realm: Some("talsi".into()),
            username: Some("j\u{e4}na@talsi".into()),
            subject: None,
            client_id: Some("app \"quoted\"\n".into()),
            source_ip: Some("127.0.0.1".into()),
            user_agent: None,
            reason: None,
            directory: Some("ldap://127.0.0.1:389".into()),
            latency_ms: -3,
            prev_hash: "ab".repeat(32),
            hash: String::new(),
            detail: detail.map(str::to_owned),
        }
    }

    /// Rows already in a trail were hashed over `json!([...]).to_string()` (with `detail`
    /// pushed when present): the input must stay byte for byte what that gave.
    #[test]
    fn the_mac_input_is_the_json_array_the_trail_was_hashed_over() {
        for detail in [None, Some(r#"{"changed":["a\"b"]}"#)] {
            let r = record(detail);
            let mut canonical = serde_json::json!([
                r.id,
                r.at,
                r.event,
                r.realm,
                r.username,
                r.subject,
                r.client_id,
                r.source_ip,
                r.user_agent,
                r.reason,
                r.directory,
                r.latency_ms,
                r.prev_hash,
            ]);
            if let (Some(detail), Some(fields)) = (&r.detail, canonical.as_array_mut()) {
                fields.push(detail.clone().into());
            }
            assert_eq!(r.mac_input(), canonical.to_string().into_bytes());
        }
    }
}
