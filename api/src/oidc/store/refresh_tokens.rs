//! `oidc_refresh_tokens`: refresh tokens, rotated at every use; the tokens of one sign-in form
//! a family (its grant), revoked whole when a rotated token is presented again. Each row carries
//! a MAC over whom and what it grants ([`StoredRow::RefreshToken`]); a token whose row does
//! not authenticate is refused.

use chrono::Utc;

use super::flow_store::{FlowStore, StoreError, hash, random_token};
use crate::db::{Database, SqliteWrite, on_pool, savepointed};
use crate::federation::Identity;
use crate::lifetimes::{REFRESH_LIFETIME, seconds};
use crate::oidc::keys::{StoredIdentityKey, StoredRow};

/// Using a refresh token up and storing its successor. PostgreSQL: one statement, so one round
/// trip and one commit, atomic as a statement is; the successor is inserted only when the
/// claim matched.
const ROTATE_POSTGRES: &str = "WITH claimed AS (UPDATE oidc_refresh_tokens SET used_at = $1 \
     WHERE token_hash = $2 AND family_id = $9 AND used_at IS NULL \
     AND revoked_at IS NULL AND expires_at > $1 RETURNING family_id) \
     INSERT INTO oidc_refresh_tokens (token_hash, family_id, client_id, scope, \
     identity, auth_time, expires_at, mac) \
     SELECT $3, family_id, $4, $5, $6, $7, $8, $10 FROM claimed";

/// SQLite has no data-modifying `WITH`: the claim and the insert as one script, sent to
/// SQLite's connection thread at once, the insert made only when the claim changed its row
/// (`changes()` counts the statement completed last).
const ROTATE_SQLITE: &str = savepointed!(
    "UPDATE oidc_refresh_tokens SET used_at = $1 \
     WHERE token_hash = $2 AND family_id = $9 AND used_at IS NULL \
     AND revoked_at IS NULL AND expires_at > $1; \
     INSERT INTO oidc_refresh_tokens (token_hash, family_id, client_id, scope, \
     identity, auth_time, expires_at, mac) \
     SELECT $3, $9, $4, $5, $6, $7, $8, $10 WHERE changes() = 1"
);

/// A refresh token as stored, usable for rotation (not yet claimed).
#[derive(Debug, Clone)]
pub struct UsableRefresh {
    /// The stored hash of the presented token, so that the rotation need not hash it again.
    pub token_hash: String,
    pub family_id: String,
    pub client_id: String,
    pub scope: String,
    pub identity: Identity,
    pub auth_time: i64,
}

/// What happened when a refresh token was presented.
#[derive(Debug)]
pub enum RefreshUse {
    Usable(Box<UsableRefresh>),
    /// Already rotated: a copy is in someone else's hands. The family is now revoked.
    Reused {
        family_id: String,
    },
    /// Revoked, expired, or never issued.
    Invalid,
    /// The row does not authenticate: changed (or written) in the database by someone without
    /// the key-encryption key. Refused; whom it names is not believed.
    Tampered,
}

/// What rotating a refresh token did.
#[derive(Debug)]
pub enum Rotation {
    /// The presented token is used up; this is its successor.
    Rotated(String),
    /// Rotated by a concurrent request meanwhile: the family is now revoked.
    Reused { family_id: String },
    /// Revoked or expired meanwhile.
    Invalid,
}

/// A refresh token looked up without using it (introspection, revocation).
#[derive(Debug, Clone)]
pub struct RefreshInfo {
    pub family_id: String,
    pub client_id: String,
    pub scope: String,
    pub subject: String,
    pub username: String,
    pub expires_at_ms: i64,
    /// Not rotated, not revoked, not expired.
    pub active: bool,
}

/// A refresh token about to be stored.
pub(super) struct NewRefresh {
    pub token: String,
    pub token_hash: String,
    pub family_id: String,
    pub client_id: String,
    pub scope: String,
    pub identity_json: String,
    pub auth_time: i64,
    pub expires_at: i64,
    /// Authenticates the row ([`StoredRow::RefreshToken`]).
    pub mac: String,
}

impl NewRefresh {
    pub fn new(
        key: &StoredIdentityKey,
        family_id: &str,
        client_id: &str,
        scope: &str,
        identity: &Identity,
        auth_time: i64,
    ) -> Result<Self, StoreError> {
        let token = random_token()?;
        let mut row = Self {
            token_hash: hash(&token),
            token,
            family_id: family_id.to_owned(),
            client_id: client_id.to_owned(),
            scope: scope.to_owned(),
            identity_json: serde_json::to_string(identity)?,
            auth_time,
            expires_at: (auth_time + seconds(REFRESH_LIFETIME)) * 1000,
            mac: String::new(),
        };
        row.mac = key.seal(&StoredRow::RefreshToken {
            token_hash: &row.token_hash,
            family_id: &row.family_id,
            client_id: &row.client_id,
            scope: &row.scope,
            identity: &row.identity_json,
            auth_time: row.auth_time,
            expires_at: row.expires_at,
        });
        Ok(row)
    }
}

/// A refresh token row as read back.
#[derive(sqlx::FromRow)]
struct RefreshRow {
    family_id: String,
    client_id: String,
    scope: String,
    /// JSON, exactly as stored (the MAC covers this text).
    identity: String,
    auth_time: i64,
    expires_at: i64,
    used_at: Option<i64>,
    revoked_at: Option<i64>,
    mac: Option<String>,
}

impl FlowStore {
    /// The row of the refresh token with `token_hash`, if there is one and it authenticates
    /// (one that does not is logged and counted).
    async fn refresh_row(&self, token_hash: &str) -> Result<Option<Authenticated>, StoreError> {
        let row: Option<RefreshRow> = on_pool!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT family_id, client_id, scope, identity, auth_time, expires_at, used_at, \
                 revoked_at, mac FROM oidc_refresh_tokens WHERE token_hash = $1",
            )
            .bind(token_hash)
            .fetch_optional(pool)
            .await?
        });
        let Some(row) = row else {
            return Ok(None);
        };
        let stored = StoredRow::RefreshToken {
            token_hash,
            family_id: &row.family_id,
            client_id: &row.client_id,
            scope: &row.scope,
            identity: &row.identity,
            auth_time: row.auth_time,
            expires_at: row.expires_at,
        };
        Ok(Some(if self.authentic(&stored, row.mac.as_deref()) {
            Authenticated::Yes(row)
        } else {
            Authenticated::No
        }))
    }
}

/// A stored row, or the fact that it did not authenticate.
enum Authenticated {
    Yes(RefreshRow),
    No,
}

/// Inserts a [`NewRefresh`] through a connection of either backend.
macro_rules! insert_refresh {
    ($executor:expr, $row:expr) => {
        sqlx::query(
            "INSERT INTO oidc_refresh_tokens (token_hash, family_id, client_id, scope, \
             identity, auth_time, expires_at, mac) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&$row.token_hash)
        .bind(&$row.family_id)
        .bind(&$row.client_id)
        .bind(&$row.scope)
        .bind(&$row.identity_json)
        .bind($row.auth_time)
        .bind($row.expires_at)
        .bind(&$row.mac)
        .execute($executor)
        .await
        .map(|_| ())
    };
}
pub(super) use insert_refresh;

impl FlowStore {
    /// Looks at a presented refresh token without using it up, so that the directory can be
    /// asked (slow, over the network) before the rotation's one short write transaction. A
    /// rotated token presented again revokes its whole family here. A row that does not
    /// authenticate is [`RefreshUse::Tampered`], logged and counted.
    pub async fn refresh_token_usable(&self, token: &str) -> Result<RefreshUse, StoreError> {
        let token_hash = hash(token);
        let row = match self.refresh_row(&token_hash).await? {
            None => return Ok(RefreshUse::Invalid),
            Some(Authenticated::No) => return Ok(RefreshUse::Tampered),
            Some(Authenticated::Yes(row)) => row,
        };
        if row.used_at.is_some() {
            self.revoke_grant(&row.family_id).await?;
            return Ok(RefreshUse::Reused {
                family_id: row.family_id,
            });
        }
        if row.revoked_at.is_some() || row.expires_at <= Utc::now().timestamp_millis() {
            return Ok(RefreshUse::Invalid);
        }
        Ok(RefreshUse::Usable(Box::new(UsableRefresh {
            token_hash,
            identity: serde_json::from_str(&row.identity)?,
            family_id: row.family_id,
            client_id: row.client_id,
            scope: row.scope,
            auth_time: row.auth_time,
        })))
    }

    /// Uses up `token` and stores its successor for `identity` (as the directory describes
    /// the user now), in one transaction: one synchronous commit per refresh, and a token is
    /// never used up without its successor or the other way round. The claim is the same
    /// single statement as ever (`used_at IS NULL`), so of two concurrent presentations only
    /// one rotates; the other is a reuse and revokes the family. The claim also requires the
    /// family [`FlowStore::refresh_token_usable`] authenticated, which the successor's MAC
    /// covers.
    pub async fn rotate_refresh_token(
        &self,
        token: &str,
        usable: &UsableRefresh,
        identity: &Identity,
    ) -> Result<Rotation, StoreError> {
        let now = Utc::now().timestamp_millis();
        let token_hash = &usable.token_hash;
        let successor = NewRefresh::new(
            &self.identities,
            &usable.family_id,
            &usable.client_id,
            &usable.scope,
            identity,
            usable.auth_time,
        )?;
        // The same values in the same order for both backends' statements.
        macro_rules! bind {
            ($statement:expr) => {
                sqlx::query($statement)
                    .bind(now)
                    .bind(token_hash.clone())
                    .bind(successor.token_hash)
                    .bind(successor.client_id)
                    .bind(successor.scope)
                    .bind(successor.identity_json)
                    .bind(successor.auth_time)
                    .bind(successor.expires_at)
                    .bind(successor.family_id)
                    .bind(successor.mac)
            };
        }
        let written = match &self.db {
            Database::Postgres(pool) => bind!(ROTATE_POSTGRES).execute(pool).await?.rows_affected(),
            Database::Sqlite(pool) => SqliteWrite::script(pool, bind!(ROTATE_SQLITE)).await?,
        };
        // The rows the successor's insert made: 1 when the claim matched, 0 (and nothing
        // written) otherwise.
        let rotated = written == 1;
        if rotated {
            return Ok(Rotation::Rotated(successor.token));
        }
        // Not claimable any more: a concurrent rotation (a reuse) or a revocation.
        Ok(match self.refresh_token_usable(token).await? {
            RefreshUse::Reused { family_id } => Rotation::Reused { family_id },
            RefreshUse::Usable(_) | RefreshUse::Invalid | RefreshUse::Tampered => Rotation::Invalid,
        })
    }

    /// A refresh token's state, without using it (introspection, revocation). `None` also
    /// when the row does not authenticate (logged and counted): it names nobody.
    pub async fn refresh_info(&self, token: &str) -> Result<Option<RefreshInfo>, StoreError> {
        let Some(Authenticated::Yes(row)) = self.refresh_row(&hash(token)).await? else {
            return Ok(None);
        };
        let identity: Identity = serde_json::from_str(&row.identity)?;
        Ok(Some(RefreshInfo {
            active: row.used_at.is_none()
                && row.revoked_at.is_none()
                && row.expires_at > Utc::now().timestamp_millis(),
            family_id: row.family_id,
            client_id: row.client_id,
            scope: row.scope,
            subject: identity.subject,
            username: identity.username,
            expires_at_ms: row.expires_at,
        }))
    }
}
