//! The store itself: one handle on the database for every table of sign-in state, the
//! random handles it hands out and how they are stored, and the sweep of expired rows.

use aws_lc_rs::{digest, rand};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::pending_limit::PendingRequestLimit;
use super::requests::MAX_PENDING_REQUESTS;
use crate::db::{Database, WriteScope, on_write};
use crate::lifetimes::{CODE_LIFETIME, millis};

/// 32 random bytes, base64url: an unguessable handle.
pub fn random_token() -> Result<String, StoreError> {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes).map_err(|_| StoreError::Random)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// SHA-256, hex: how handles are stored, so a database reader cannot use them.
pub fn hash(token: &str) -> String {
    digest::digest(&digest::SHA256, token.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("no randomness available")]
    Random,
    #[error("stored identity is unreadable: {0}")]
    Identity(#[from] serde_json::Error),
    #[error("{0} authorization requests are pending, the most this installation keeps")]
    TooManyPending(i64),
}

/// The sign-in state of the database. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct FlowStore {
    pub(super) db: Database,
    /// Pending authorization requests kept at most, all addresses together.
    pub(super) max_pending: i64,
    /// Authorization requests started per address (this replica).
    pub(super) pending_per_source: Arc<PendingRequestLimit>,
}

impl FlowStore {
    pub fn new(db: Database) -> Self {
        Self {
            db,
            max_pending: MAX_PENDING_REQUESTS,
            pending_per_source: Arc::default(),
        }
    }

    /// The same store letting one address start `per_minute` authorization requests a
    /// minute.
    pub fn with_requests_per_source(mut self, per_minute: u32) -> Self {
        self.pending_per_source = Arc::new(PendingRequestLimit::new(per_minute));
        self
    }

    /// The same store keeping at most `max` pending authorization requests.
    pub fn with_max_pending(mut self, max: i64) -> Self {
        self.max_pending = max;
        self
    }

    /// Counts an authorization request about to be stored for `source`; `Err` with how long
    /// the address must wait when it started too many this minute.
    pub fn admit_request_from(&self, source: IpAddr) -> Result<(), Duration> {
        self.pending_per_source.admit(source, Instant::now())
    }

    /// Deletes expired requests, codes, refresh tokens, sessions and revocations (used codes
    /// are kept a while past expiry for replay detection; rotated refresh tokens until their
    /// family expires; revocations until no token they name can still be valid).
    pub async fn sweep(&self) -> Result<u64, StoreError> {
        // Each statement, and how long after expiry a row is still kept: a used code stays
        // one lifetime longer so that its replay is still recognised.
        let sweeps: [(&str, i64); 6] = [
            (
                "DELETE FROM oidc_authorization_requests WHERE expires_at < $1",
                0,
            ),
            (
                "DELETE FROM oidc_codes WHERE expires_at < $1",
                millis(CODE_LIFETIME),
            ),
            ("DELETE FROM oidc_refresh_tokens WHERE expires_at < $1", 0),
            (
                "DELETE FROM oidc_sessions WHERE expires_at < $1 OR ended_at IS NOT NULL",
                0,
            ),
            ("DELETE FROM oidc_revocations WHERE expires_at < $1", 0),
            ("DELETE FROM oidc_session_grants WHERE expires_at < $1", 0),
        ];
        let now = Utc::now().timestamp_millis();
        let mut write = self.db.begin_write(WriteScope::Transaction).await?;
        let mut removed = 0;
        on_write!(&mut write, |conn| {
            for (sql, kept) in sweeps {
                removed += sqlx::query(sql)
                    .bind(now - kept)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
            }
        });
        write.commit().await?;
        Ok(removed)
    }
}
