//! The database: SQLite for one machine, PostgreSQL for several replicas.
//!
//! The URL scheme picks the backend. Each backend has its own migrations in
//! `api/migrations/<backend>/`; both must leave the same schema version behind.
//!
//! # One SQL text for both backends
//!
//! sqlx's SQLite driver binds `$1`, `$2`, ... as PostgreSQL does, so a statement is written
//! once and run on either pool with `on_pool!` (reads) or `on_write!` (writes, inside
//! [`Database::begin_write`]); the macros expand the same code once per backend, because the
//! two pools are different types. Where the dialects really differ, the store says so with
//! [`Backend::pick`] or a `match` on the backend, next to the reason.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Postgres, Transaction};

use crate::config::redact_url;

mod sqlite_group;

pub(crate) use sqlite_group::savepointed;
pub use sqlite_group::{SqliteScript, SqliteWrite};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// How long to wait for a connection before calling the database unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(
        "database: {url:?} is not a supported URL (expected sqlite://PATH or postgres://USER@HOST/DB)"
    )]
    UnsupportedUrl { url: String },
    #[error("database: invalid URL {url:?}: {source}")]
    InvalidUrl { url: String, source: sqlx::Error },
    #[error("database: cannot connect to {url}: {source}")]
    Unreachable { url: String, source: sqlx::Error },
    #[error(
        "database: schema version {found} is newer than this novads supports ({supported}); \
         run a novads release that knows this schema"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("database: schema version is {found:?} after migrating, expected {expected}")]
    SchemaMismatch { found: Option<i64>, expected: i64 },
    #[error("database: migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("database: {0}")]
    Query(#[from] sqlx::Error),
    #[error("database_password_file: cannot read {path}: {source}")]
    PasswordFile {
        path: String,
        source: std::io::Error,
    },
}

/// A write in progress: on SQLite a savepoint in this process's group commit
/// ([`SqliteWrite`]: one writer at a time, concurrent writes sharing one synced commit); on
/// PostgreSQL a transaction, or for [`WriteScope::Statement`] a connection that runs one
/// self-contained statement (atomic on its own, without the round trips of `BEGIN` and
/// `COMMIT`). Dropped without [`Write::commit`], it rolls back.
pub enum Write {
    Sqlite(SqliteWrite),
    Postgres(PgWrite),
}

/// The PostgreSQL side of a [`Write`].
pub enum PgWrite {
    Transaction(Transaction<'static, Postgres>),
    Statement(PoolConnection<Postgres>),
}

/// How much a [`Write`] will do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteScope {
    /// Several statements that must commit together.
    Transaction,
    /// One statement, atomic by itself.
    Statement,
}

impl Write {
    /// Abandons the write.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        match self {
            Self::Sqlite(write) => write.rollback().await,
            Self::Postgres(PgWrite::Transaction(tx)) => tx.rollback().await,
            Self::Postgres(PgWrite::Statement(_)) => Ok(()),
        }
    }

    /// Commits: returns once the write is durable (on SQLite, once its batch committed).
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Self::Sqlite(write) => write.commit().await,
            Self::Postgres(PgWrite::Transaction(tx)) => tx.commit().await,
            Self::Postgres(PgWrite::Statement(_)) => Ok(()),
        }
    }
}

impl PgWrite {
    /// The PostgreSQL connection of the write (for `on_write!`).
    pub fn connection(&mut self) -> &mut PgConnection {
        match self {
            Self::Transaction(tx) => tx,
            Self::Statement(conn) => conn,
        }
    }
}

/// Runs `$body` with `$pool` bound to the database's pool: the same code, and so the same SQL
/// text, compiled for each backend.
macro_rules! on_pool {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            $crate::db::Database::Sqlite($pool) => $body,
            $crate::db::Database::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// Runs `$body` with `$conn` bound to the connection of a [`Write`] (use `&mut *$conn` as the
/// executor of each statement): the same code, and so the same SQL text, for each backend.
macro_rules! on_write {
    ($write:expr, |$conn:ident| $body:expr) => {
        match $write {
            $crate::db::Write::Sqlite(write) => {
                let $conn = write.connection();
                $body
            }
            $crate::db::Write::Postgres(pg) => {
                let $conn = pg.connection();
                $body
            }
        }
    };
}
pub(crate) use on_write;

/// Which engine a [`Database`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend a URL selects, by its scheme.
    pub fn of_url(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Self::Postgres)
        } else {
            None
        }
    }

    fn migrator(self) -> &'static Migrator {
        match self {
            Self::Sqlite => &SQLITE_MIGRATIONS,
            Self::Postgres => &POSTGRES_MIGRATIONS,
        }
    }

    /// The one of two SQL texts for this backend, where the dialects differ.
    pub fn pick(self, sqlite: &'static str, postgres: &'static str) -> &'static str {
        match self {
            Self::Sqlite => sqlite,
            Self::Postgres => postgres,
        }
    }

    /// The schema version this build of novads creates and understands.
    pub fn supported_schema_version(self) -> i64 {
        self.migrator()
            .iter()
            .map(|m| m.version)
            .max()
            .unwrap_or_default()
    }
}

/// A connection pool to one of the supported backends.
#[derive(Debug, Clone)]
pub enum Database {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Database {
    /// Connects without touching the schema. `password` is used for PostgreSQL when the URL
    /// carries none (it came from a file).
    pub async fn connect(url: &str, password: Option<&str>) -> Result<Self, DbError> {
        let shown = redact_url(url);
        let invalid = |source| DbError::InvalidUrl {
            url: shown.clone(),
            source,
        };
        let unreachable = |source| DbError::Unreachable {
            url: shown.clone(),
            source,
        };
        match Backend::of_url(url) {
            Some(Backend::Sqlite) => {
                let options = SqliteConnectOptions::from_str(url)
                    .map_err(invalid)?
                    .create_if_missing(true)
                    // WAL lets readers proceed during writes; FULL makes a committed audit row
                    // survive power loss, which the audit trail promises.
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(5));
                let pool = SqlitePoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(CONNECT_TIMEOUT)
                    .connect_with(options)
                    .await
                    .map_err(unreachable)?;
                Ok(Self::Sqlite(pool))
            }
            Some(Backend::Postgres) => {
                let mut options = PgConnectOptions::from_str(url).map_err(invalid)?;
                if let Some(password) = password {
                    options = options.password(password);
                }
                let pool = PgPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(CONNECT_TIMEOUT)
                    .connect_with(options)
                    .await
                    .map_err(unreachable)?;
                Ok(Self::Postgres(pool))
            }
            None => Err(DbError::UnsupportedUrl { url: shown }),
        }
    }

    /// Connects, refuses a schema newer than this build, and applies pending migrations.
    pub async fn open(url: &str, password: Option<&str>) -> Result<Self, DbError> {
        let db = Self::connect(url, password).await?;
        db.migrate().await?;
        Ok(db)
    }

    /// Opens (and migrates) the database a configuration names, with its password file.
    pub async fn open_configured(config: &crate::config::Config) -> Result<Self, DbError> {
        let password = match &config.database_password_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
                    .map_err(|source| DbError::PasswordFile {
                        path: path.display().to_string(),
                        source,
                    })?,
            ),
            None => None,
        };
        Self::open(&config.database, password.as_deref()).await
    }

    pub fn backend(&self) -> Backend {
        match self {
            Self::Sqlite(_) => Backend::Sqlite,
            Self::Postgres(_) => Backend::Postgres,
        }
    }

    /// Starts a write (see [`Write`]). Every write goes through here, so that on SQLite each
    /// one waits for this process's write turn, holds the file's write lock from its first
    /// statement, and shares its commit with the writes of concurrent requests.
    pub async fn begin_write(&self, scope: WriteScope) -> Result<Write, sqlx::Error> {
        match self {
            Self::Sqlite(pool) => Ok(Write::Sqlite(SqliteWrite::begin(pool).await?)),
            Self::Postgres(pool) => Ok(Write::Postgres(match scope {
                WriteScope::Transaction => PgWrite::Transaction(pool.begin().await?),
                WriteScope::Statement => PgWrite::Statement(pool.acquire().await?),
            })),
        }
    }

    /// Applies pending migrations after checking that the schema is not newer than this build.
    pub async fn migrate(&self) -> Result<(), DbError> {
        let supported = self.backend().supported_schema_version();
        match self.schema_version().await? {
            Some(found) if found > supported => {
                return Err(DbError::SchemaTooNew { found, supported });
            }
            // Nothing to apply. Not running the migrator at all lets a role without CREATE on
            // the schema (PostgreSQL's application role, docs/security.md) open a database
            // that its owner migrated.
            Some(found) if found == supported => return Ok(()),
            _ => {}
        }
        match self {
            Self::Sqlite(pool) => SQLITE_MIGRATIONS.run(pool).await?,
            Self::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await?,
        }
        match self.schema_version().await? {
            Some(found) if found == supported => Ok(()),
            found => Err(DbError::SchemaMismatch {
                found,
                expected: supported,
            }),
        }
    }

    /// The version recorded in `novads_schema_version`, or `None` on an empty database.
    pub async fn schema_version(&self) -> Result<Option<i64>, DbError> {
        if !self.has_table("novads_schema_version").await? {
            return Ok(None);
        }
        let query = "SELECT version FROM novads_schema_version WHERE id = 1";
        let version = match self {
            Self::Sqlite(pool) => sqlx::query_scalar(query).fetch_optional(pool).await?,
            Self::Postgres(pool) => sqlx::query_scalar(query).fetch_optional(pool).await?,
        };
        Ok(version)
    }

    async fn has_table(&self, name: &str) -> Result<bool, DbError> {
        let found: Option<i64> = match self {
            Self::Sqlite(pool) => {
                sqlx::query_scalar("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?")
                    .bind(name)
                    .fetch_optional(pool)
                    .await?
            }
            Self::Postgres(pool) => {
                sqlx::query_scalar(
                    "SELECT 1::BIGINT FROM pg_catalog.pg_tables \
                     WHERE schemaname = current_schema() AND tablename = $1",
                )
                .bind(name)
                .fetch_optional(pool)
                .await?
            }
        };
        Ok(found.is_some())
    }

    /// Readiness: the database answers and its schema is the one this build expects.
    pub async fn check_ready(&self) -> Result<(), DbError> {
        let expected = self.backend().supported_schema_version();
        match self.schema_version().await? {
            Some(found) if found == expected => Ok(()),
            found => Err(DbError::SchemaMismatch { found, expected }),
        }
    }

    /// Runs one statement without parameters, on either backend (administration, tests).
    /// Returns the number of rows it affected.
    pub async fn execute(&self, sql: &'static str) -> Result<u64, sqlx::Error> {
        Ok(match self {
            Self::Sqlite(pool) => sqlx::query(sql).execute(pool).await?.rows_affected(),
            Self::Postgres(pool) => sqlx::query(sql).execute(pool).await?.rows_affected(),
        })
    }

    /// Closes every connection; waits for checked-out connections to be returned.
    pub async fn close(&self) {
        match self {
            Self::Sqlite(pool) => pool.close().await,
            Self::Postgres(pool) => pool.close().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_scheme_picks_the_backend() {
        assert_eq!(
            Backend::of_url("sqlite://data/novads.db"),
            Some(Backend::Sqlite)
        );
        assert_eq!(Backend::of_url("sqlite::memory:"), Some(Backend::Sqlite));
        assert_eq!(
            Backend::of_url("postgres://u@h/db"),
            Some(Backend::Postgres)
        );
        assert_eq!(
            Backend::of_url("postgresql://u@h/db"),
            Some(Backend::Postgres)
        );
        assert_eq!(Backend::of_url("mysql://u@h/db"), None);
    }

    #[test]
    fn both_backends_reach_the_same_schema_version() {
        assert_eq!(
            Backend::Sqlite.supported_schema_version(),
            Backend::Postgres.supported_schema_version()
        );
        assert!(Backend::Sqlite.supported_schema_version() >= 1);
    }

    #[tokio::test]
    async fn unsupported_url_is_refused_without_connecting() {
        let err = Database::connect("mysql://u:pw@h/db", None)
            .await
            .expect_err("refused");
        let text = err.to_string();
        assert!(text.contains("not a supported URL"), "{text}");
        assert!(!text.contains("pw@"), "password leaked: {text}");
    }
}
