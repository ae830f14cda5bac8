//! Exporting the audit trail as JSON lines or CSV (`novads audit export`, the admin API's
//! export): the rows of a filter read page by page along the chain's ids, each written as it
//! is read, so an export of millions of rows holds one page at a time.

use std::borrow::Cow;

use chrono::{DateTime, Utc};

use super::{AuditRecord, format_time, page};
use crate::db::{Database, on_pool};

/// Appends ` AND …` for each condition of `filter` that is set.
pub(super) fn push_export_conditions<DB>(sql: &mut sqlx::QueryBuilder<DB>, filter: &ExportFilter)
where
    DB: sqlx::Database,
    String: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    if let Some(realm) = &filter.realm {
        sql.push(" AND realm = ").push_bind(realm.clone());
    }
    if let Some(since) = filter.since {
        sql.push(" AND at >= ").push_bind(format_time(since));
    }
    if let Some(until) = filter.until {
        sql.push(" AND at < ").push_bind(format_time(until));
    }
}

/// The first and last id of the rows in `filter`'s time range, read from a time index
/// (`(at, id)` on PostgreSQL, `(at)` and `(realm, at)` carrying the rowid on SQLite), so that
/// the export reads ids from there to there instead of from the first row. `at` is set when an
/// event happens and rows are appended soon after, so ids and times go up together but not
/// strictly: the span is exact, and holds few rows outside the range. `None` when no row
/// matches. The cost grows with the rows in the range, which the export reads anyway.
async fn id_span(db: &Database, filter: &ExportFilter) -> Result<Option<(i64, i64)>, sqlx::Error> {
    // MATERIALIZED keeps PostgreSQL from answering min and max by walking the primary key
    // from each end until a row in the range turns up, which it deems cheap because it
    // assumes matching rows are spread evenly; in the trail they sit together.
    on_pool!(db, |pool| {
        let mut sql = sqlx::QueryBuilder::new(
            "WITH in_range AS MATERIALIZED (SELECT id FROM audit_events WHERE 1 = 1",
        );
        push_export_conditions(&mut sql, filter);
        sql.push(") SELECT min(id), max(id) FROM in_range");
        let (first, last): (Option<i64>, Option<i64>) =
            sql.build_query_as().fetch_one(pool).await?;
        Ok(first.zip(last))
    })
}

/// Which rows to export. Times compare as the stored RFC 3339 text, which sorts correctly
/// because every row uses the same UTC format.
#[derive(Debug, Clone, Default)]
pub struct ExportFilter {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub realm: Option<String>,
}

/// Output formats of `novads audit export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// One JSON object per line.
    Jsonl,
    /// RFC 4180 CSV with a header row.
    Csv,
}

/// Writes every matching row to `out`; returns how many were written. `out` is `Send` so that
/// the admin API can stream an export from a request task (api/src/admin/audit.rs).
pub async fn export(
    db: &Database,
    filter: &ExportFilter,
    format: ExportFormat,
    out: &mut (dyn std::io::Write + Send),
) -> Result<u64, ExportError> {
    let mut sink = match format {
        ExportFormat::Csv => {
            let mut writer = csv::WriterBuilder::new()
                .has_headers(false)
                .from_writer(out);
            // Written explicitly so that an export with no rows still names its columns.
            writer.write_record(columns!().split(',').map(str::trim))?;
            Sink::Csv(Box::new(writer))
        }
        ExportFormat::Jsonl => Sink::Jsonl(out, Vec::new()),
    };
    let mut written = 0u64;
    // A time-bounded export holds the rows in the range when it began; an export without a
    // time bound also takes rows appended while it runs.
    let (mut after, through) = if filter.since.is_some() || filter.until.is_some() {
        match id_span(db, filter).await? {
            Some((first, last)) => (first - 1, Some(last)),
            // No row in the range: an empty span.
            None => (0, Some(0)),
        }
    } else {
        (0, None)
    };
    loop {
        let rows = page(db, after, through, filter).await?;
        let Some(last) = rows.last() else { break };
        after = last.id;
        for row in &rows {
            sink.write(row)?;
            written += 1;
        }
    }
    sink.finish()?;
    Ok(written)
}

enum Sink<'a> {
    Csv(Box<csv::Writer<&'a mut (dyn std::io::Write + Send)>>),
    Jsonl(&'a mut (dyn std::io::Write + Send), Vec<u8>),
}

impl Sink<'_> {
    fn write(&mut self, row: &AuditRecord) -> Result<(), ExportError> {
        match self {
            Self::Csv(writer) => writer.write_record(csv_cells(row).iter().map(|c| c.as_ref()))?,
            Self::Jsonl(out, line) => {
                line.clear();
                serde_json::to_writer(&mut *line, row)?;
                line.push(b'\n');
                out.write_all(line)?;
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<(), ExportError> {
        match self {
            Self::Csv(mut writer) => writer.flush()?,
            Self::Jsonl(out, _) => out.flush()?,
        }
        Ok(())
    }
}

/// One CSV row of `row`, in the order of `columns!()`, with every text cell neutralised.
fn csv_cells(row: &AuditRecord) -> [Cow<'_, str>; 15] {
    let text = neutralise_csv_cell;
    fn optional(s: &Option<String>) -> Cow<'_, str> {
        neutralise_csv_cell(s.as_deref().unwrap_or(""))
    }
    [
        row.id.to_string().into(),
        text(&row.at),
        text(&row.event),
        optional(&row.realm),
        optional(&row.username),
        optional(&row.subject),
        optional(&row.client_id),
        optional(&row.source_ip),
        optional(&row.user_agent),
        optional(&row.reason),
        optional(&row.directory),
        row.latency_ms.to_string().into(),
        text(&row.prev_hash),
        text(&row.hash),
        optional(&row.detail),
    ]
}

/// A cell a spreadsheet would read as a formula (`=`, `+`, `-`, `@`, tab, CR first) gets a
/// leading `'`, so that a user name or user agent typed by an attacker stays text when a
/// security officer opens the export (OWASP "CSV injection"). JSON lines are left as they are.
pub fn neutralise_csv_cell(cell: &str) -> Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}").into()
    } else {
        cell.into()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("writing the export: {0}")]
    Io(#[from] std::io::Error),
    #[error("writing CSV: {0}")]
    Csv(#[from] csv::Error),
    #[error("writing JSON: {0}")]
    Json(#[from] serde_json::Error),
}
