//! `oidc_refresh_tokens`: refresh tokens, rotated at every use; the tokens of one sign-in form
//! a family (its grant), revoked whole when a rotated token is presented again.

use chrono::Utc;

use super::flow_store::{FlowStore, StoreError, hash, random_token};
use crate::db::{Database, WriteScope, on_pool, on_write};
use crate::federation::Identity;
use crate::lifetimes::{REFRESH_LIFETIME, seconds};

/// A refresh token as stored, usable for rotation (not yet claimed).
#[derive(Debug, Clone)]
pub struct UsableRefresh {
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
}

impl NewRefresh {
    pub fn new(
        family_id: &str,
        client_id: &str,
        scope: &str,
        identity: &Identity,
        auth_time: i64,
    ) -> Result<Self, StoreError> {
        let token = random_token()?;
        Ok(Self {
            token_hash: hash(&token),
            token,
            family_id: family_id.to_owned(),
            client_id: client_id.to_owned(),
            scope: scope.to_owned(),
            identity_json: serde_json::to_string(identity)?,
            auth_time,
            expires_at: (auth_time + seconds(REFRESH_LIFETIME)) * 1000,
        })
    }
}

/// Inserts a [`NewRefresh`] through a connection of either backend.
macro_rules! insert_refresh {
    ($executor:expr, $row:expr) => {
        sqlx::query(
            "INSERT INTO oidc_refresh_tokens (token_hash, family_id, client_id, scope, \
             identity, auth_time, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&$row.token_hash)
        .bind(&$row.family_id)
        .bind(&$row.client_id)
        .bind(&$row.scope)
        .bind(&$row.identity_json)
        .bind($row.auth_time)
        .bind($row.expires_at)
        .execute($executor)
        .await
        .map(|_| ())
    };
}
pub(super) use insert_refresh;

impl FlowStore {
    /// Looks at a presented refresh token without using it up, so that the directory can be
    /// asked (slow, over the network) before the rotation's one short write transaction. A
    /// rotated token presented again revokes its whole family here.
    pub async fn refresh_token_usable(&self, token: &str) -> Result<RefreshUse, StoreError> {
        type Row = (
            String,
            String,
            String,
            String,
            i64,
            i64,
            Option<i64>,
            Option<i64>,
        );
        let token_hash = hash(token);
        let row: Option<Row> = on_pool!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT family_id, client_id, scope, identity, auth_time, expires_at, used_at, \
                 revoked_at FROM oidc_refresh_tokens WHERE token_hash = $1",
            )
            .bind(&token_hash)
            .fetch_optional(pool)
            .await?
        });
        let Some((family_id, client_id, scope, identity, auth_time, expires_at, used, revoked)) =
            row
        else {
            return Ok(RefreshUse::Invalid);
        };
        if used.is_some() {
            self.revoke_grant(&family_id).await?;
            return Ok(RefreshUse::Reused { family_id });
        }
        if revoked.is_some() || expires_at <= Utc::now().timestamp_millis() {
            return Ok(RefreshUse::Invalid);
        }
        Ok(RefreshUse::Usable(Box::new(UsableRefresh {
            family_id,
            client_id,
            scope,
            identity: serde_json::from_str(&identity)?,
            auth_time,
        })))
    }

    /// Uses up `token` and stores its successor for `identity` (as the directory describes
    /// the user now), in one transaction: one synchronous commit per refresh, and a token is
    /// never used up without its successor or the other way round. The claim is the same
    /// single statement as ever (`used_at IS NULL`), so of two concurrent presentations only
    /// one rotates; the other is a reuse and revokes the family.
    pub async fn rotate_refresh_token(
        &self,
        token: &str,
        usable: &UsableRefresh,
        identity: &Identity,
    ) -> Result<Rotation, StoreError> {
        let now = Utc::now().timestamp_millis();
        let token_hash = hash(token);
        let successor = NewRefresh::new(
            &usable.family_id,
            &usable.client_id,
            &usable.scope,
            identity,
            usable.auth_time,
        )?;
        let rotated = if let Database::Postgres(pool) = &self.db {
            // One statement, so one round trip and one commit: the successor is inserted only
            // when the claim matched, and a statement is atomic.
            sqlx::query(
                "WITH claimed AS (UPDATE oidc_refresh_tokens SET used_at = $1 \
                 WHERE token_hash = $2 AND used_at IS NULL AND revoked_at IS NULL \
                 AND expires_at > $1 RETURNING family_id) \
                 INSERT INTO oidc_refresh_tokens (token_hash, family_id, client_id, scope, \
                 identity, auth_time, expires_at) \
                 SELECT $3, family_id, $4, $5, $6, $7, $8 FROM claimed",
            )
            .bind(now)
            .bind(&token_hash)
            .bind(&successor.token_hash)
            .bind(&successor.client_id)
            .bind(&successor.scope)
            .bind(&successor.identity_json)
            .bind(successor.auth_time)
            .bind(successor.expires_at)
            .execute(pool)
            .await?
            .rows_affected()
                == 1
        } else {
            let mut write = self.db.begin_write(WriteScope::Transaction).await?;
            let claimed = on_write!(&mut write, |conn| {
                let claimed = sqlx::query(
                    "UPDATE oidc_refresh_tokens SET used_at = $1 WHERE token_hash = $2 \
                     AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $1",
                )
                .bind(now)
                .bind(&token_hash)
                .execute(&mut *conn)
                .await?
                .rows_affected()
                    == 1;
                if claimed {
                    insert_refresh!(&mut *conn, successor)?;
                }
                claimed
            });
            write.commit().await?;
            claimed
        };
        if rotated {
            return Ok(Rotation::Rotated(successor.token));
        }
        // Not claimable any more: a concurrent rotation (a reuse) or a revocation.
        Ok(match self.refresh_token_usable(token).await? {
            RefreshUse::Reused { family_id } => Rotation::Reused { family_id },
            RefreshUse::Usable(_) | RefreshUse::Invalid => Rotation::Invalid,
        })
    }

    /// A refresh token's state, without using it (introspection, revocation).
    pub async fn refresh_info(&self, token: &str) -> Result<Option<RefreshInfo>, StoreError> {
        type Row = (
            String,
            String,
            String,
            String,
            i64,
            Option<i64>,
            Option<i64>,
        );
        let row: Option<Row> = on_pool!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT family_id, client_id, scope, identity, expires_at, used_at, revoked_at \
                 FROM oidc_refresh_tokens WHERE token_hash = $1",
            )
            .bind(hash(token))
            .fetch_optional(pool)
            .await?
        });
        let Some((family_id, client_id, scope, identity, expires_at_ms, used, revoked)) = row
        else {
            return Ok(None);
        };
        let identity: Identity = serde_json::from_str(&identity)?;
        Ok(Some(RefreshInfo {
            family_id,
            client_id,
            scope,
            subject: identity.subject,
            username: identity.username,
            expires_at_ms,
            active: used.is_none()
                && revoked.is_none()
                && expires_at_ms > Utc::now().timestamp_millis(),
        }))
    }
}
