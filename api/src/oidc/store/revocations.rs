//! `oidc_revocations`: revoked grants and access tokens, remembered until no token they name
//! can still be valid, and the check every access token passes before it is honoured.
//!
//! Two checks: [`FlowStore::access_token_revoked`] asks the database every time (the OAuth
//! endpoints: userinfo, introspection), and [`FlowStore::access_token_revoked_cached`] asks
//! this replica's in-memory copy of the table (the admin API's hot path). The copy learns this
//! replica's revocations as they are committed and reloads the table when it is older than
//! [`REVOCATIONS_FRESH_FOR`], so another replica's revocation is honoured within that bound.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

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
        // Committed: this replica honours it from now on, without waiting for a reload.
        self.revocations.add(kind, id, expires_at_ms);
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

    /// [`FlowStore::access_token_revoked`], answered from this replica's copy of the table:
    /// immediately for revocations made here, within [`REVOCATIONS_FRESH_FOR`] for those of
    /// other replicas. A copy that is too old is reloaded first; when the reload fails the
    /// error is returned and the caller refuses the token (fail closed).
    pub async fn access_token_revoked_cached(
        &self,
        jti: &str,
        grant_id: Option<&str>,
    ) -> Result<bool, StoreError> {
        if let Some(revoked) = self.revocations.lookup(jti, grant_id, Instant::now()) {
            return Ok(revoked);
        }
        // One reload at a time; whoever waited finds the copy fresh and does not read again.
        let _reloading = self.revocations.reload.lock().await;
        let started = Instant::now();
        if let Some(revoked) = self.revocations.lookup(jti, grant_id, started) {
            return Ok(revoked);
        }
        let now = Utc::now().timestamp_millis();
        let rows: Vec<(String, String, i64)> = on_pool!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT kind, id, expires_at FROM oidc_revocations WHERE expires_at >= $1",
            )
            .bind(now)
            .fetch_all(pool)
            .await?
        });
        self.revocations.replace(rows, started, now);
        Ok(self
            .revocations
            .lookup(jti, grant_id, started)
            .unwrap_or(true))
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

/// How old this replica's copy of `oidc_revocations` may be when a token is checked against
/// it: a revocation committed by another replica is honoured here at most this long (plus one
/// reload of the table) after its commit. docs/security.md states the bound.
pub const REVOCATIONS_FRESH_FOR: Duration = Duration::from_secs(1);

/// This replica's copy of `oidc_revocations` (see [`FlowStore::access_token_revoked_cached`]).
#[derive(Debug, Default)]
pub(super) struct RevocationList {
    revoked: RwLock<Revoked>,
    /// Held while the table is reloaded.
    reload: tokio::sync::Mutex<()>,
}

/// Revoked access tokens (by `jti`) and grants, each with the end of its revocation in
/// milliseconds, and when the reload that read them started.
#[derive(Debug, Default)]
struct Revoked {
    tokens: HashMap<String, i64>,
    grants: HashMap<String, i64>,
    read_at: Option<Instant>,
}

impl Revoked {
    fn names(&self, jti: &str, grant_id: Option<&str>) -> bool {
        self.tokens.contains_key(jti) || grant_id.is_some_and(|id| self.grants.contains_key(id))
    }

    fn add(&mut self, kind: RevokedKind, id: &str, expires_at_ms: i64) {
        let map = match kind {
            RevokedKind::Grant => &mut self.grants,
            RevokedKind::Token => &mut self.tokens,
        };
        let until = map.entry(id.to_owned()).or_insert(expires_at_ms);
        *until = (*until).max(expires_at_ms);
    }
}

impl RevocationList {
    /// Whether the copy names the token or its grant; `None` when the copy is older than
    /// [`REVOCATIONS_FRESH_FOR`] (or was never read) and must be reloaded first.
    fn lookup(&self, jti: &str, grant_id: Option<&str>, now: Instant) -> Option<bool> {
        let revoked = self.revoked.read().unwrap_or_else(PoisonError::into_inner);
        let read_at = revoked.read_at?;
        (now.saturating_duration_since(read_at) < REVOCATIONS_FRESH_FOR)
            .then(|| revoked.names(jti, grant_id))
    }

    /// Records a revocation this replica committed.
    fn add(&self, kind: RevokedKind, id: &str, expires_at_ms: i64) {
        self.revoked
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .add(kind, id, expires_at_ms);
    }

    /// Takes the rows of a reload that started at `started`. Revocations only ever lengthen,
    /// so the rows are added to what is known (one committed here while the table was being
    /// read stays), and only those past their end (`now_ms`) are forgotten, as the sweep does.
    fn replace(&self, rows: Vec<(String, String, i64)>, started: Instant, now_ms: i64) {
        let mut revoked = self.revoked.write().unwrap_or_else(PoisonError::into_inner);
        revoked.tokens.retain(|_, until| *until >= now_ms);
        revoked.grants.retain(|_, until| *until >= now_ms);
        for (kind, id, expires_at_ms) in rows {
            if expires_at_ms < now_ms {
                continue;
            }
            let kind = match kind.as_str() {
                "grant" => RevokedKind::Grant,
                "token" => RevokedKind::Token,
                // A kind this version does not know names nothing it could honour.
                _ => continue,
            };
            revoked.add(kind, &id, expires_at_ms);
        }
        revoked.read_at = Some(started);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_answers_only_while_fresh_and_keeps_what_was_committed_here() {
        let list = RevocationList::default();
        let start = Instant::now();
        assert_eq!(list.lookup("jti", None, start), None, "never read");
        list.add(RevokedKind::Token, "local", 5_000);
        list.replace(
            vec![
                ("grant".into(), "g1".into(), 5_000),
                ("token".into(), "old".into(), 10),
            ],
            start,
            1_000,
        );
        assert_eq!(list.lookup("local", None, start), Some(true), "kept");
        assert_eq!(list.lookup("other", Some("g1"), start), Some(true));
        assert_eq!(list.lookup("other", Some("g2"), start), Some(false));
        assert_eq!(list.lookup("other", None, start), Some(false));
        // A row past its end is not taken (the sweep removes it from the table too).
        assert_eq!(list.lookup("old", None, start), Some(false));
        let later = start + REVOCATIONS_FRESH_FOR;
        assert_eq!(list.lookup("local", None, later), None, "too old: reload");
    }
}
