//! `oidc_revocations`: revoked grants and access tokens, remembered until no token they name
//! can still be valid, and the check every access token passes before it is honoured.

use chrono::Utc;

use super::flow_store::{FlowStore, StoreError};
use crate::db::{WriteScope, on_pool, on_write};
use crate::lifetimes::{GRANT_REVOCATION, VERIFY_LEEWAY, millis};

/// What a row of `oidc_revocations` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RevokedKind {
    /// Every token of a grant (see [`super::RedeemedCode::grant_id`]).
    Grant,
    /// One access token, by its `jti`.
    Token,
}

impl RevokedKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Grant => "grant",
            Self::Token => "token",
        }
    }
}

impl FlowStore {
    /// Revokes every token of a grant — its refresh-token family and its access tokens — when
    /// a code or refresh token is replayed, the user is refused, or the client revokes it.
    ///
    /// The revocation is recorded first and the family revoked in a second statement, each
    /// committed on its own: [`FlowStore::grant_usable`] runs after a new refresh token is
    /// stored, so either it sees this revocation, or the family update here starts after that
    /// token was committed and revokes it too. No token of a revoked grant escapes a race.
    pub async fn revoke_grant(&self, grant_id: &str) -> Result<(), StoreError> {
        let now = Utc::now().timestamp_millis();
        self.record_revocation(RevokedKind::Grant, grant_id, now + millis(GRANT_REVOCATION))
            .await?;
        let mut write = self.db.begin_write(WriteScope::Statement).await?;
        on_write!(&mut write, |conn| {
            sqlx::query(
                "UPDATE oidc_refresh_tokens SET revoked_at = $1 \
                 WHERE family_id = $2 AND revoked_at IS NULL",
            )
            .bind(now)
            .bind(grant_id)
            .execute(&mut *conn)
            .await?;
        });
        write.commit().await?;
        Ok(())
    }

    /// Records a revocation until `expires_at_ms`; revoking again only ever lengthens it.
    async fn record_revocation(
        &self,
        kind: RevokedKind,
        id: &str,
        expires_at_ms: i64,
    ) -> Result<(), StoreError> {
        let now = Utc::now().timestamp_millis();
        // The larger of two values is `MAX(a, b)` in SQLite and `GREATEST(a, b)` in
        // PostgreSQL (where `MAX` is only the aggregate).
        let sql = self.db.backend().pick(
            "INSERT INTO oidc_revocations (kind, id, revoked_at, expires_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (kind, id) DO UPDATE SET \
             expires_at = MAX(oidc_revocations.expires_at, excluded.expires_at)",
            "INSERT INTO oidc_revocations (kind, id, revoked_at, expires_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (kind, id) DO UPDATE SET \
             expires_at = GREATEST(oidc_revocations.expires_at, excluded.expires_at)",
        );
        let mut write = self.db.begin_write(WriteScope::Statement).await?;
        on_write!(&mut write, |conn| {
            sqlx::query(sql)
                .bind(kind.as_str())
                .bind(id)
                .bind(now)
                .bind(expires_at_ms)
                .execute(&mut *conn)
                .await?;
        });
        write.commit().await?;
        Ok(())
    }

    /// Revokes one access token (RFC 7009) until it would have expired anyway.
    pub async fn revoke_access_token(&self, jti: &str, exp: i64) -> Result<(), StoreError> {
        let expires_at_ms = exp
            .saturating_mul(1000)
            .saturating_add(millis(VERIFY_LEEWAY));
        self.record_revocation(RevokedKind::Token, jti, expires_at_ms)
            .await
    }

    /// Whether an access token was revoked, by its own `jti` or through its grant: one query
    /// probing the primary key. Callers treat an error as "revoked" (fail closed).
    pub async fn access_token_revoked(
        &self,
        jti: &str,
        grant_id: Option<&str>,
    ) -> Result<bool, StoreError> {
        // Tokens without a grant (service tokens, tokens from before grants were recorded)
        // probe a grant id no grant has: random ids are never empty.
        let grant_id = grant_id.unwrap_or("");
        let found: Option<i64> = on_pool!(&self.db, |pool| {
            sqlx::query_scalar(
                "SELECT CAST(1 AS BIGINT) FROM oidc_revocations \
                 WHERE (kind = 'token' AND id = $1) OR (kind = 'grant' AND id = $2) LIMIT 1",
            )
            .bind(jti)
            .bind(grant_id)
            .fetch_optional(pool)
            .await?
        });
        Ok(found.is_some())
    }

    /// Called after the tokens of a grant are stored and before they are handed out: `false`
    /// when the grant was revoked meanwhile (a replay racing the exchange or refresh). The
    /// family is then revoked again, which catches the refresh token just stored, and nothing
    /// may be returned to the client. See [`FlowStore::revoke_grant`] for why this order is
    /// safe.
    pub async fn grant_usable(&self, grant_id: &str) -> Result<bool, StoreError> {
        let found: Option<i64> = on_pool!(&self.db, |pool| {
            sqlx::query_scalar(
                "SELECT CAST(1 AS BIGINT) FROM oidc_revocations \
                 WHERE kind = 'grant' AND id = $1",
            )
            .bind(grant_id)
            .fetch_optional(pool)
            .await?
        });
        if found.is_some() {
            self.revoke_grant(grant_id).await?;
            return Ok(false);
        }
        Ok(true)
    }
}
