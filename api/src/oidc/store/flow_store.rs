//! The store itself: one handle on the database for every table of sign-in state, the
//! random handles it hands out and how they are stored, and the sweep of expired rows.

use aws_lc_rs::{digest, rand};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use prometheus::{IntCounterVec, Opts, Registry};

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::pending_limit::PendingRequestLimit;
use super::revocations::RevocationList;
use crate::db::{Database, WriteScope, on_write};
use crate::lifetimes::{AUTHORIZATION_REQUEST_LIFETIME, CODE_LIFETIME, millis};
use crate::oidc::keys::{StoredIdentityKey, StoredRow, StoredRowKind};

/// 32 random bytes, base64url: an unguessable handle.
pub fn random_token() -> Result<String, StoreError> {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes).map_err(|_| StoreError::Random)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// SHA-256, hex: how handles are stored, so a database reader cannot use them.
pub fn hash(token: &str) -> String {
    hex::encode(digest::digest(&digest::SHA256, token.as_bytes()))
}

/// `stored_identity_rows_rejected_total{kind}`, every kind present from the start so that an
/// alert sees 0 before the first refusal.
fn rejection_counter() -> IntCounterVec {
    // A constant, valid name, help and label: `new` fails only for invalid ones, which the
    // store's tests would show (every store is built through here).
    let counter = IntCounterVec::new(
        Opts::new(
            "stored_identity_rows_rejected_total",
            "Authorization code, session and refresh token rows refused because the \
             key-encryption key does not authenticate them (changed or inserted in the \
             database).",
        ),
        &["kind"],
    )
    .expect("a valid metric definition");
    for kind in StoredRowKind::ALL {
        counter.with_label_values(&[kind.as_str()]);
    }
    counter
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("no randomness available")]
    Random,
    #[error("stored identity is unreadable: {0}")]
    Identity(#[from] serde_json::Error),
}

/// The sign-in state of the database. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct FlowStore {
    pub(super) db: Database,
    /// Authenticates the identity stored with codes, sessions and refresh tokens.
    pub(super) identities: StoredIdentityKey,
    /// Rows refused because they did not authenticate, by kind.
    rejected: IntCounterVec,
    /// Authorization requests started per address (this replica).
    pub(super) pending_per_source: Arc<PendingRequestLimit>,
    /// This replica's copy of the revocations, for the admin API's check.
    pub(super) revocations: Arc<RevocationList>,
}

impl FlowStore {
    /// The store of `db`, authenticating stored identities with `identities` (derived from
    /// the key-encryption key).
    pub fn new(db: Database, identities: StoredIdentityKey) -> Self {
        Self {
            db,
            identities,
            rejected: rejection_counter(),
            pending_per_source: Arc::default(),
            revocations: Arc::default(),
        }
    }

    /// Registers `novads_stored_identity_rows_rejected_total{kind}` (the registry adds the
    /// `novads_` prefix).
    pub fn register_metrics(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.rejected.clone()))
    }

    /// How many rows of `kind` this store refused because they did not authenticate.
    pub fn rows_rejected(&self, kind: StoredRowKind) -> u64 {
        self.rejected.with_label_values(&[kind.as_str()]).get()
    }

    /// Whether a row read back carries a MAC that authenticates it. A row that does not —
    /// changed or inserted by a database writer, who lacks the key-encryption key — is
    /// reported in the log and the metric; the caller treats it as absent.
    pub(super) fn authentic(&self, row: &StoredRow<'_>, mac: Option<&str>) -> bool {
        if self.identities.authenticates(row, mac) {
            return true;
        }
        let kind = row.kind();
        self.rejected.with_label_values(&[kind.as_str()]).inc();
        tracing::warn!(
            kind = %kind,
            "a stored {kind} row is not authenticated by the key-encryption key \
             (changed or inserted in the database); refused"
        );
        false
    }

    /// The same store letting one address start `per_minute` authorization requests a
    /// minute.
    pub fn with_requests_per_source(mut self, per_minute: u32) -> Self {
        self.pending_per_source = Arc::new(PendingRequestLimit::new(per_minute));
        self
    }

    /// Counts an authorization request about to be shown as a login page to `source`; `Err`
    /// with how long the address must wait when it started too many this minute.
    pub fn admit_request_from(&self, source: IpAddr) -> Result<(), Duration> {
        self.pending_per_source.admit(source, Instant::now())
    }

    /// Deletes expired used requests, codes, refresh tokens, sessions and revocations (used
    /// requests and codes are kept a while past expiry for replay detection; rotated refresh
    /// tokens until their family expires; revocations until no token they name can still be
    /// valid).
    pub async fn sweep(&self) -> Result<u64, StoreError> {
        // Each statement, and how long after expiry a row is still kept: a used code stays
        // one lifetime longer so that its replay is still recognised; a used request too, so
        // that a replica whose clock lags behind (and still opens the sealed request) finds
        // it used.
        let sweeps: [(&str, i64); 6] = [
            (
                "DELETE FROM oidc_used_requests WHERE expires_at < $1",
                millis(AUTHORIZATION_REQUEST_LIFETIME),
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
