//! The audit trail over HTTP: filtered pages of events with a cursor, streamed exports and the
//! chain's verification. Rows are read as `federation/audit.rs` wrote them; nothing here
//! writes.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::authz::{Action, Principal, Scope};
use super::extract::Query;
use super::openapi::{AuditEventDoc, ProblemDoc, Refusals};
use super::problem::AdminError;
use crate::commands::parse_time;
use crate::db::{Database, on_pool};
use crate::federation::audit::{
    self, AuditEventKind, AuditReason, AuditRecord, ExportFilter, ExportFormat, format_time,
};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/audit/events", get(events))
        .route("/audit/export", get(export))
        .route("/audit/verify", get(verify))
}

/// Events per page unless `limit` says otherwise, and the most a page holds.
pub const DEFAULT_PAGE: u32 = 100;
pub const MAX_PAGE: u32 = 1000;

/// The filters of `GET /audit/events`; every one optional, all of them combined with AND.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    pub realm: Option<String>,
    /// The user name as typed, or the subject.
    pub user: Option<String>,
    pub client: Option<String>,
    pub event: Option<String>,
    pub reason: Option<String>,
    /// RFC 3339 time or `YYYY-MM-DD`; inclusive.
    pub since: Option<String>,
    /// RFC 3339 time or `YYYY-MM-DD`; exclusive.
    pub until: Option<String>,
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page, asked with the same filters. Pages are newest
    /// first: by time (then id) when `since` or `until` is given, else by id; a cursor
    /// continues only the order it came from.
    pub cursor: Option<String>,
}

/// [`EventQuery`] checked: what the database is asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// `None`: every realm the caller may read; otherwise exactly these.
    pub realms: Option<Vec<String>>,
    pub user: Option<String>,
    pub client: Option<String>,
    pub event: Option<AuditEventKind>,
    pub reason: Option<AuditReason>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Where the previous page ended; only rows after it in page order.
    pub cursor: Option<Cursor>,
    pub limit: u32,
}

/// Checks the query against the caller's scope. Pure.
pub fn event_filter(query: EventQuery, scope: &Scope) -> Result<EventFilter, AdminError> {
    let invalid = AdminError::InvalidRequest;
    let realms = scoped_realms(query.realm, scope)?;
    let event = query
        .event
        .map(|e| {
            e.parse::<AuditEventKind>().map_err(|_| {
                invalid(format!(
                    "event {e:?} is not one of {}",
                    join(AuditEventKind::ALL.iter().map(|k| k.as_str()))
                ))
            })
        })
        .transpose()?;
    let reason = query
        .reason
        .map(|r| {
            r.parse::<AuditReason>().map_err(|_| {
                invalid(format!(
                    "reason {r:?} is not one of {}",
                    join(AuditReason::ALL.iter().map(|k| k.as_str()))
                ))
            })
        })
        .transpose()?;
    let time = |name: &str, text: Option<String>| {
        text.map(|t| parse_time(&t).map_err(|e| invalid(format!("{name}: {e}"))))
            .transpose()
    };
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(invalid(format!("limit must be 1 to {MAX_PAGE}")));
    }
    let filter = EventFilter {
        realms,
        user: query.user,
        client: query.client,
        event,
        reason,
        since: time("since", query.since)?,
        until: time("until", query.until)?,
        cursor: query.cursor.as_deref().map(Cursor::decode).transpose()?,
        limit,
    };
    match (&filter.cursor, filter.time_ordered()) {
        (Some(Cursor::Id(_)), true) => Err(invalid(
            "cursor continues pages in id order, but pages with since or until are in time \
             order: ask again without cursor"
                .into(),
        )),
        (Some(Cursor::Time { .. }), false) => Err(invalid(
            "cursor continues pages of a time range: pass the same since or until with it".into(),
        )),
        _ => Ok(filter),
    }
}

impl EventFilter {
    /// Pages with a time bound are in time order, `(at, id)` newest first, which the time
    /// index gives directly: a page then costs the same however many rows the range holds.
    /// Every other page is in id order, which the `(column, id)` indexes give.
    pub fn time_ordered(&self) -> bool {
        self.since.is_some() || self.until.is_some()
    }
}

/// The realms a query may read: the one asked for if the scope covers it, else all the scope
/// covers (`None` for everything).
fn scoped_realms(asked: Option<String>, scope: &Scope) -> Result<Option<Vec<String>>, AdminError> {
    match (asked, scope) {
        (Some(realm), scope) if scope.covers_realm(&realm) => Ok(Some(vec![realm])),
        (Some(realm), _) => Err(AdminError::Forbidden(format!(
            "the audit trail of realm {realm:?} is outside your municipalities"
        ))),
        (None, Scope::Everything) => Ok(None),
        (None, Scope::Realms(realms)) => Ok(Some(realms.iter().cloned().collect())),
    }
}

fn join<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

/// Where a page ended, as an opaque, versioned cursor: `v1` names the last row's id (pages in
/// id order), `v2` its time and id (pages in time order). Versioned so that the format can
/// change without an old cursor being misread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    /// Only rows with a smaller id.
    Id(i64),
    /// Only rows before this one in `(at, id)` order; `at` as stored.
    Time { at: String, id: i64 },
}

impl Cursor {
    /// The cursor that continues after `last` in the page order of `filter`.
    fn after(last: &AuditRecord, filter: &EventFilter) -> Self {
        if filter.time_ordered() {
            Self::Time {
                at: last.at.clone(),
                id: last.id,
            }
        } else {
            Self::Id(last.id)
        }
    }

    pub fn encode(&self) -> String {
        let text = match self {
            Self::Id(id) => format!("v1:{id}"),
            Self::Time { at, id } => format!("v2:{id}:{at}"),
        };
        URL_SAFE_NO_PAD.encode(text)
    }

    pub fn decode(cursor: &str) -> Result<Self, AdminError> {
        URL_SAFE_NO_PAD
            .decode(cursor)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|text| Self::parse(&text))
            .ok_or_else(|| AdminError::InvalidRequest("cursor is not one this API issued".into()))
    }

    fn parse(text: &str) -> Option<Self> {
        let positive = |id: &str| id.parse::<i64>().ok().filter(|id| *id > 0);
        if let Some(id) = text.strip_prefix("v1:") {
            return positive(id).map(Self::Id);
        }
        let (id, at) = text.strip_prefix("v2:")?.split_once(':')?;
        // Only a time in the trail's own format compares as the stored text does.
        let time = DateTime::parse_from_rfc3339(at).ok()?.to_utc();
        (format_time(time) == at).then_some(())?;
        Some(Self::Time {
            at: at.to_owned(),
            id: positive(id)?,
        })
    }
}

/// One page of events, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    #[schema(value_type = Vec<AuditEventDoc>)]
    pub events: Vec<AuditRecord>,
    /// Pass as `cursor` (with the same filters) for the next, older page; absent on the last
    /// page. It names the last row of this page, so rows appended meanwhile never shift a
    /// page.
    pub next_cursor: Option<String>,
}

/// Reads one page matching `filter`, newest first: by id, or by `(at, id)` when the filter has
/// a time bound (see [`EventFilter::time_ordered`]).
pub async fn page(db: &Database, filter: &EventFilter) -> Result<EventPage, sqlx::Error> {
    // `SELECT *`: the record's columns are federation/audit.rs's business, and its row type
    // reads them by name. One row more than the page says whether another page follows.
    let limit = i64::from(filter.limit) + 1;
    let order = if filter.time_ordered() {
        " ORDER BY at DESC, id DESC LIMIT "
    } else {
        " ORDER BY id DESC LIMIT "
    };
    let mut rows: Vec<AuditRecord> = on_pool!(db, |pool| {
        let mut sql = sqlx::QueryBuilder::new("");
        if let Some(user) = &filter.user {
            // A user matches by user name or by subject. With `OR` the database would read
            // every row of the user and sort them; instead each column's index is read newest
            // first for one page, and the two pages are merged (UNION drops a row that
            // matches both).
            sql.push("SELECT * FROM (SELECT * FROM audit_events");
            push_conditions(&mut sql, filter, Some(("username", user)));
            sql.push(order)
                .push_bind(limit)
                .push(") AS by_name UNION SELECT * FROM (SELECT * FROM audit_events");
            push_conditions(&mut sql, filter, Some(("subject", user)));
            sql.push(order).push_bind(limit).push(") AS by_subject");
        } else {
            sql.push("SELECT * FROM audit_events");
            push_conditions(&mut sql, filter, None);
        }
        sql.push(order).push_bind(limit);
        sql.build_query_as().fetch_all(pool).await?
    });
    let more = rows.len() > filter.limit as usize;
    rows.truncate(filter.limit as usize);
    let next_cursor = more
        .then(|| rows.last().map(|last| Cursor::after(last, filter).encode()))
        .flatten();
    Ok(EventPage {
        events: rows,
        next_cursor,
    })
}

/// Appends `filter`'s conditions as a WHERE clause; the user's, if any, on the one column
/// given with it. Every condition on a column that has an `(column, id)` index (migrations
/// 0015 and 0018) lets the database read an id-ordered page from that index; a time bound
/// reads a time-ordered page from the `(at, id)` index.
fn push_conditions<DB>(
    sql: &mut sqlx::QueryBuilder<DB>,
    filter: &EventFilter,
    user: Option<(&'static str, &String)>,
) where
    DB: sqlx::Database,
    i64: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    String: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    sql.push(" WHERE 1 = 1");
    match &filter.cursor {
        None => {}
        Some(Cursor::Id(before)) => {
            sql.push(" AND id < ").push_bind(*before);
        }
        // `(at, id) < (cursor)` spelled so that both databases bound the index range on `at`.
        Some(Cursor::Time { at, id }) => {
            sql.push(" AND at <= ")
                .push_bind(at.clone())
                .push(" AND (at < ")
                .push_bind(at.clone())
                .push(" OR id < ")
                .push_bind(*id)
                .push(")");
        }
    }
    if let Some(realms) = &filter.realms {
        sql.push(" AND realm IN (");
        let mut list = sql.separated(", ");
        for realm in realms {
            list.push_bind(realm.clone());
        }
        sql.push(")");
    }
    if let Some((column, user)) = user {
        sql.push(format_args!(" AND {column} = "))
            .push_bind(user.clone());
    }
    if let Some(client) = &filter.client {
        sql.push(" AND client_id = ").push_bind(client.clone());
    }
    if let Some(event) = filter.event {
        sql.push(" AND event = ")
            .push_bind(event.as_str().to_owned());
    }
    if let Some(reason) = filter.reason {
        sql.push(" AND reason = ")
            .push_bind(reason.as_str().to_owned());
    }
    // Times compare as the stored RFC 3339 text, which sorts as time does.
    if let Some(since) = filter.since {
        sql.push(" AND at >= ").push_bind(format_time(since));
    }
    if let Some(until) = filter.until {
        sql.push(" AND at < ").push_bind(format_time(until));
    }
}

/// `GET /audit/events`.
#[utoipa::path(
    get,
    path = "/api/v1/audit/events",
    tag = "audit",
    params(EventQuery),
    responses(
        (status = 200, description = "One page, newest first: by time then id when since or until is given, else by id", body = EventPage),
        (status = 400, description = "A parameter is wrong", body = ProblemDoc, content_type = "application/problem+json"),
        Refusals
    )
)]
pub(crate) async fn events(
    principal: Principal,
    State(state): State<AppState>,
    Query(query): Query<EventQuery>,
) -> Result<Json<EventPage>, AdminError> {
    let scope = principal.may(Action::ReadAudit)?.scope;
    let filter = event_filter(query, &scope)?;
    page(state.db(), &filter)
        .await
        .map(Json)
        .map_err(|e| AdminError::storage("reading audit events failed", e))
}

/// The query of `GET /audit/export`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// `jsonl` (default) or `csv`.
    pub format: Option<String>,
    pub realm: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
}

/// `GET /audit/export`: every matching row, oldest first, streamed as JSON lines or CSV by
/// the same code as `novads audit export`.
#[utoipa::path(
    get,
    path = "/api/v1/audit/export",
    tag = "audit",
    params(ExportQuery),
    responses(
        (status = 200, description = "Every matching row, oldest first, as JSON lines or CSV", content((String = "application/x-ndjson"), (String = "text/csv"))),
        (status = 400, description = "A parameter is wrong", body = ProblemDoc, content_type = "application/problem+json"),
        Refusals
    )
)]
pub(crate) async fn export(
    principal: Principal,
    State(state): State<AppState>,
    Query(query): Query<ExportQuery>,
) -> Result<Response, AdminError> {
    let scope = principal.may(Action::ReadAudit)?.scope;
    let (format, content_type, extension) = match query.format.as_deref() {
        None | Some("jsonl") => (ExportFormat::Jsonl, "application/x-ndjson", "jsonl"),
        Some("csv") => (ExportFormat::Csv, "text/csv; charset=utf-8", "csv"),
        Some(other) => {
            return Err(AdminError::InvalidRequest(format!(
                "format {other:?} is not one of jsonl, csv"
            )));
        }
    };
    let realm = match scoped_realms(query.realm, &scope)? {
        None => None,
        Some(realms) if realms.len() == 1 => realms.into_iter().next(),
        Some(_) => {
            return Err(AdminError::InvalidRequest(
                "you read the trail of several realms: name one with `realm`".into(),
            ));
        }
    };
    let time = |name: &str, text: Option<String>| {
        text.map(|t| parse_time(&t).map_err(|e| AdminError::InvalidRequest(format!("{name}: {e}"))))
            .transpose()
    };
    let filter = ExportFilter {
        since: time("since", query.since)?,
        until: time("until", query.until)?,
        realm,
    };
    let mut response =
        Body::from_stream(export_stream(state.db().clone(), filter, format)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(disposition) =
        HeaderValue::from_str(&format!("attachment; filename=\"audit.{extension}\""))
    {
        headers.insert(header::CONTENT_DISPOSITION, disposition);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// What the export has written and the body has not yet sent.
#[derive(Clone, Default)]
struct Pending(Arc<Mutex<Vec<u8>>>);

impl Pending {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl std::io::Write for Pending {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs [`audit::export`] as the body asks for more: the export is polled only when the
/// client has taken what was written, so at most about one page of rows (the export reads a
/// thousand at a time) is held in memory, however large the trail.
fn export_stream(
    db: Database,
    filter: ExportFilter,
    format: ExportFormat,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let pending = Pending::default();
    let mut out = pending.clone();
    let mut run: Option<Pin<Box<dyn Future<Output = _> + Send>>> = Some(Box::pin(async move {
        audit::export(&db, &filter, format, &mut out).await
    }));
    futures::stream::poll_fn(move |cx| {
        loop {
            let written = pending.take();
            if !written.is_empty() {
                return Poll::Ready(Some(Ok(Bytes::from(written))));
            }
            let Some(export) = run.as_mut() else {
                return Poll::Ready(None);
            };
            match export.as_mut().poll(cx) {
                Poll::Pending => {
                    let written = pending.take();
                    if written.is_empty() {
                        return Poll::Pending;
                    }
                    return Poll::Ready(Some(Ok(Bytes::from(written))));
                }
                Poll::Ready(Ok(_rows)) => run = None,
                Poll::Ready(Err(error)) => {
                    run = None;
                    // The status is sent; cutting the body is how the client learns of it.
                    tracing::error!(%error, "audit export failed midway");
                    return Poll::Ready(Some(Err(std::io::Error::other(error.to_string()))));
                }
            }
        }
    })
}

/// `GET /audit/verify`: the chain checked from its last checkpoint to the head.
#[utoipa::path(
    get,
    path = "/api/v1/audit/verify",
    tag = "audit",
    responses(
        (status = 200, description = "The chain from its last checkpoint to the head", body = ChainStatus),
        Refusals
    )
)]
pub(crate) async fn verify(
    principal: Principal,
    State(state): State<AppState>,
) -> Result<Json<ChainStatus>, AdminError> {
    principal.may(Action::VerifyAudit)?;
    let verification = audit::verify(state.db(), state.federation().audit().key())
        .await
        .map_err(|e| AdminError::storage("verifying the audit chain failed", e))?;
    Ok(Json(ChainStatus {
        intact: verification.first_broken.is_none(),
        rows_checked: verification.rows_checked,
        first_broken: verification.first_broken.map(|b| BrokenRow {
            id: b.id,
            problem: b.problem,
        }),
        head: verification.head.map(|h| ChainHead {
            id: h.id,
            hash: h.hash,
        }),
    }))
}

/// The answer of `GET /audit/verify`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChainStatus {
    pub intact: bool,
    pub rows_checked: u64,
    /// The first row where the chain breaks.
    pub first_broken: Option<BrokenRow>,
    /// The last row the intact chain reached, as `novads audit verify` prints it: keep it to
    /// pass as `--expect-head` later. Absent when the chain is broken.
    pub head: Option<ChainHead>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BrokenRow {
    pub id: i64,
    pub problem: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChainHead {
    pub id: i64,
    pub hash: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        let at = "2026-12-01T10:00:00.000001Z".to_owned();
        for cursor in [Cursor::Id(42), Cursor::Time { at, id: 42 }] {
            assert_eq!(Cursor::decode(&cursor.encode()), Ok(cursor));
        }
        let forged = [
            "v1:-1",
            "v1:abc",
            "v2:42",
            "v2:0:2026-12-01T10:00:00.000001Z",
            "v2:42:2026-12-01",
            "v2:42:2026-12-01T10:00:00Z",
            "v2:42:2026-12-01T10:00:00.000001+02:00",
            "v2:42:2026-12-01T10:00:00.000001Z' OR 1=1",
            "v3:42",
        ];
        for text in forged
            .iter()
            .map(|t| URL_SAFE_NO_PAD.encode(t))
            .chain(["42".into(), "".into()])
        {
            assert!(Cursor::decode(&text).is_err(), "{text}");
        }
    }

    #[test]
    fn a_cursor_continues_only_the_page_order_it_came_from() {
        let with = |cursor: Cursor, since: Option<&str>| EventQuery {
            cursor: Some(cursor.encode()),
            since: since.map(str::to_owned),
            ..Default::default()
        };
        let at = "2026-12-01T10:00:00.000001Z".to_owned();
        let time = Cursor::Time { at, id: 7 };
        let everything = Scope::Everything;
        assert!(event_filter(with(Cursor::Id(7), None), &everything).is_ok());
        assert!(event_filter(with(time.clone(), Some("2026-12-01")), &everything).is_ok());
        for mixed in [with(Cursor::Id(7), Some("2026-12-01")), with(time, None)] {
            assert!(matches!(
                event_filter(mixed, &everything),
                Err(AdminError::InvalidRequest(_))
            ));
        }
    }

    #[test]
    fn filters_are_checked_and_scoped() {
        let talsi = Scope::Realms(["talsi".to_owned()].into());
        let filter = event_filter(
            EventQuery {
                event: Some("login_failed".into()),
                reason: Some("bad_credentials".into()),
                since: Some("2026-12-01".into()),
                ..Default::default()
            },
            &talsi,
        )
        .expect("valid");
        assert_eq!(filter.realms, Some(vec!["talsi".to_owned()]));
        assert_eq!(filter.event, Some(AuditEventKind::LoginFailed));
        assert_eq!(filter.limit, DEFAULT_PAGE);
        let other = EventQuery {
            realm: Some("ventspils".into()),
            ..Default::default()
        };
        assert!(matches!(
            event_filter(other, &talsi),
            Err(AdminError::Forbidden(_))
        ));
        for bad in [
            EventQuery {
                event: Some("hacked".into()),
                ..Default::default()
            },
            EventQuery {
                limit: Some(0),
                ..Default::default()
            },
            EventQuery {
                until: Some("yesterday".into()),
                ..Default::default()
            },
        ] {
            assert!(matches!(
                event_filter(bad, &Scope::Everything),
                Err(AdminError::InvalidRequest(_))
            ));
        }
    }
}
