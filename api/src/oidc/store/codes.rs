//! `oidc_codes`: authorization codes, redeemed exactly once; a replay revokes everything
//! issued from the code. Each row carries a MAC over whom and what it grants
//! ([`StoredRow::Code`]); a code whose row does not authenticate is refused.

use chrono::Utc;

use super::flow_store::{FlowStore, StoreError, hash, random_token};
use super::refresh_tokens::{NewRefresh, insert_refresh};
use crate::db::{Database, WriteScope, on_pool, on_write};
use crate::federation::Identity;
use crate::lifetimes::{CODE_LIFETIME, REFRESH_LIFETIME, millis, seconds};
use crate::oidc::keys::{StoredIdentityKey, StoredRow};
use crate::oidc::sealed_request::PendingRequest;

/// A code, once redeemed.
#[derive(Debug, Clone)]
pub struct RedeemedCode {
    /// The grant every token issued from this code belongs to: the refresh-token family id
    /// and the access tokens' `grant_id` claim, revoked together when the code is replayed.
    pub grant_id: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: String,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub identity: Identity,
    pub auth_time: i64,
}

/// A code presented a second time, as stored.
#[derive(Debug, Clone)]
pub struct ReplayedCode {
    /// The client the code was issued to (not necessarily the one presenting it again);
    /// `None` when the row does not authenticate.
    pub client_id: Option<String>,
    /// The user the code was issued for; `None` when the row does not authenticate or the
    /// stored identity is unreadable, which must not stop the revocation.
    pub identity: Option<Identity>,
    /// The revoked grant; `None` only for a row without one (none is written so).
    pub grant_id: Option<String>,
}

/// What happened when a code was presented.
#[derive(Debug)]
pub enum Exchange<R> {
    /// Redeemed, and the grant's first refresh token stored.
    Issued {
        redeemed: Box<RedeemedCode>,
        refresh_token: String,
    },
    /// Redeemed (and so used up), but refused by the caller's check; nothing was issued.
    Refused(R),
    /// Never issued, or expired and swept.
    Unknown,
    Expired,
    /// The row does not authenticate: changed (or written) in the database by someone without
    /// the key-encryption key. Used up, like any code presented; nothing was issued.
    Tampered,
    /// Presented before: a replay. Every token issued from the code is already revoked.
    AlreadyUsed(Box<ReplayedCode>),
}

/// A code about to be stored.
pub(super) struct NewCode {
    pub code: String,
    pub code_hash: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: String,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub identity_json: String,
    pub auth_time: i64,
    pub expires_at: i64,
    /// Chosen now, not at the exchange, so that a replay of the code can name the grant
    /// whose tokens it must revoke.
    pub grant_id: String,
    /// Authenticates the row ([`StoredRow::Code`]).
    pub mac: String,
}

impl NewCode {
    pub fn new(
        key: &StoredIdentityKey,
        request: &PendingRequest,
        identity: &Identity,
        auth_time: i64,
    ) -> Result<Self, StoreError> {
        let code = random_token()?;
        let mut row = Self {
            code_hash: hash(&code),
            code,
            client_id: request.client_id.clone(),
            redirect_uri: request.redirect_uri.clone(),
            scope: request.scope.clone(),
            nonce: request.nonce.clone(),
            code_challenge: request.code_challenge.clone(),
            identity_json: serde_json::to_string(identity)?,
            auth_time,
            expires_at: Utc::now().timestamp_millis() + millis(CODE_LIFETIME),
            grant_id: random_token()?,
            mac: String::new(),
        };
        row.mac = key.seal(&StoredRow::Code {
            code_hash: &row.code_hash,
            client_id: &row.client_id,
            redirect_uri: &row.redirect_uri,
            scope: &row.scope,
            nonce: row.nonce.as_deref(),
            code_challenge: row.code_challenge.as_deref(),
            identity: &row.identity_json,
            auth_time: row.auth_time,
            expires_at: row.expires_at,
            grant_id: Some(&row.grant_id),
        });
        Ok(row)
    }
}

/// Inserts a [`NewCode`] through a connection of either backend.
macro_rules! insert_code {
    ($executor:expr, $row:expr) => {
        sqlx::query(
            "INSERT INTO oidc_codes (code_hash, client_id, redirect_uri, scope, nonce, \
             code_challenge, identity, auth_time, expires_at, grant_id, mac) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&$row.code_hash)
        .bind(&$row.client_id)
        .bind(&$row.redirect_uri)
        .bind(&$row.scope)
        .bind(&$row.nonce)
        .bind(&$row.code_challenge)
        .bind(&$row.identity_json)
        .bind($row.auth_time)
        .bind($row.expires_at)
        .bind(&$row.grant_id)
        .bind(&$row.mac)
        .execute($executor)
        .await
        .map(|_| ())
    };
}

/// A code row as a redemption reads it.
#[derive(sqlx::FromRow)]
struct CodeRow {
    client_id: String,
    redirect_uri: String,
    scope: String,
    nonce: Option<String>,
    code_challenge: Option<String>,
    /// JSON, exactly as stored (the MAC covers this text).
    identity: String,
    auth_time: i64,
    expires_at: i64,
    grant_id: Option<String>,
    mac: Option<String>,
}

impl CodeRow {
    /// What the row's MAC covers.
    fn authenticated<'a>(&'a self, code_hash: &'a str) -> StoredRow<'a> {
        StoredRow::Code {
            code_hash,
            client_id: &self.client_id,
            redirect_uri: &self.redirect_uri,
            scope: &self.scope,
            nonce: self.nonce.as_deref(),
            code_challenge: self.code_challenge.as_deref(),
            identity: &self.identity,
            auth_time: self.auth_time,
            expires_at: self.expires_at,
            grant_id: self.grant_id.as_deref(),
        }
    }
}

/// Claims an unused code: marks it used in the statement that reads it, so two replicas
/// cannot both redeem it.
const CLAIM_CODE: &str = "UPDATE oidc_codes SET used_at = $1 \
    WHERE code_hash = $2 AND used_at IS NULL \
    RETURNING client_id, redirect_uri, scope, nonce, code_challenge, identity, auth_time, \
    expires_at, grant_id, mac";

impl FlowStore {
    /// Issues a code whose password sign-in happened at `auth_time` (unix seconds).
    pub async fn create_code_at(
        &self,
        request: &PendingRequest,
        identity: &Identity,
        auth_time: i64,
    ) -> Result<String, StoreError> {
        let row = NewCode::new(&self.identities, request, identity, auth_time)?;
        let mut write = self.db.begin_write(WriteScope::Statement).await?;
        on_write!(&mut write, |conn| insert_code!(&mut *conn, row)?);
        write.commit().await?;
        Ok(row.code)
    }

    /// Issues a code through single sign-on session `session_id`, recording its grant as the
    /// session's (one transaction), so that logging out of the session revokes it.
    pub async fn create_session_code(
        &self,
        request: &PendingRequest,
        identity: &Identity,
        auth_time: i64,
        session_id: &str,
    ) -> Result<String, StoreError> {
        let row = NewCode::new(&self.identities, request, identity, auth_time)?;
        let session_hash = hash(session_id);
        let now_ms = Utc::now().timestamp_millis();
        let mut write = self.db.begin_write(WriteScope::Transaction).await?;
        on_write!(&mut write, |conn| {
            insert_code!(&mut *conn, row)?;
            super::sessions::link_grant!(&mut *conn, session_hash, row.grant_id, now_ms)?;
        });
        write.commit().await?;
        Ok(row.code)
    }

    /// Redeems a code exactly once and, when `check` accepts it, stores the grant's first
    /// refresh token in the same transaction (one synchronous commit).
    ///
    /// The first presentation marks the code used in the same statement that reads it, so two
    /// replicas cannot both redeem it; a code refused by `check` (wrong client, redirect URI or
    /// PKCE verifier) or expired stays used. A second presentation revokes the code's grant —
    /// every token issued from it (RFC 6749 4.1.2) — before it returns
    /// [`Exchange::AlreadyUsed`]. Because the claim and the refresh token commit together, a
    /// replay that sees the code used also sees the refresh token and revokes it. A code whose
    /// row does not authenticate is [`Exchange::Tampered`], logged and counted, before `check`
    /// sees it.
    pub async fn exchange_code<R>(
        &self,
        code: &str,
        check: impl FnOnce(&RedeemedCode) -> Result<(), R>,
    ) -> Result<Exchange<R>, StoreError> {
        let now = Utc::now().timestamp_millis();
        let code_hash = hash(code);
        if let Database::Postgres(pool) = &self.db {
            return self
                .exchange_code_postgres(pool, now, &code_hash, check)
                .await;
        }
        let mut write = self.db.begin_write(WriteScope::Transaction).await?;
        let claimed: Option<CodeRow> = on_write!(&mut write, |conn| {
            sqlx::query_as(CLAIM_CODE)
                .bind(now)
                .bind(&code_hash)
                .fetch_optional(&mut *conn)
                .await?
        });
        let Some(row) = claimed else {
            write.rollback().await?;
            return self.replayed_code(&code_hash).await;
        };
        if row.expires_at <= now {
            write.commit().await?;
            return Ok(Exchange::Expired);
        }
        // Either way the code stays used: a changed or unreadable code is not retried.
        let redeemed = match self.redeemed(&code_hash, row) {
            Ok(Some(redeemed)) => redeemed,
            Ok(None) => {
                write.commit().await?;
                return Ok(Exchange::Tampered);
            }
            Err(e) => {
                write.commit().await?;
                return Err(e);
            }
        };
        if let Err(refusal) = check(&redeemed) {
            write.commit().await?;
            return Ok(Exchange::Refused(refusal));
        }
        let refresh = NewRefresh::new(
            &self.identities,
            &redeemed.grant_id,
            &redeemed.client_id,
            &redeemed.scope,
            &redeemed.identity,
            redeemed.auth_time,
        )?;
        on_write!(&mut write, |conn| insert_refresh!(&mut *conn, refresh)?);
        write.commit().await?;
        Ok(Exchange::Issued {
            redeemed: Box::new(redeemed),
            refresh_token: refresh.token,
        })
    }

    /// [`FlowStore::exchange_code`] on PostgreSQL: the claim is one statement, so one round
    /// trip and one commit. The refresh token is inserted with the claim (unless the code
    /// expired), before the code's MAC and `check` have been checked, and without a MAC of its
    /// own (so unusable); an accepted code's refresh token then gets its MAC, which needs the
    /// key the database never sees — the second and last statement. A refused code gets its
    /// refresh token revoked at once. Its value never left this function, so nobody could
    /// present it meanwhile.
    async fn exchange_code_postgres<R>(
        &self,
        pool: &sqlx::PgPool,
        now: i64,
        code_hash: &str,
        check: impl FnOnce(&RedeemedCode) -> Result<(), R>,
    ) -> Result<Exchange<R>, StoreError> {
        let refresh = random_token()?;
        let refresh_hash = hash(&refresh);
        let refresh_lifetime = seconds(REFRESH_LIFETIME);
        let claimed: Option<CodeRow> = sqlx::query_as(
            "WITH claimed AS (UPDATE oidc_codes SET used_at = $1 \
             WHERE code_hash = $2 AND used_at IS NULL \
             RETURNING client_id, redirect_uri, scope, nonce, code_challenge, identity, \
             auth_time, expires_at, grant_id, mac), \
             issued AS (INSERT INTO oidc_refresh_tokens (token_hash, family_id, \
             client_id, scope, identity, auth_time, expires_at) \
             SELECT $3, grant_id, client_id, scope, identity, auth_time, \
             (auth_time + $4) * 1000 FROM claimed \
             WHERE expires_at > $1 AND grant_id IS NOT NULL) \
             SELECT client_id, redirect_uri, scope, nonce, code_challenge, identity, \
             auth_time, expires_at, grant_id, mac FROM claimed",
        )
        .bind(now)
        .bind(code_hash)
        .bind(&refresh_hash)
        .bind(refresh_lifetime)
        .fetch_optional(pool)
        .await?;
        let Some(row) = claimed else {
            return self.replayed_code(code_hash).await;
        };
        if row.expires_at <= now {
            return Ok(Exchange::Expired);
        }
        // The refresh token the statement stored, exactly as it stored it.
        let refresh_mac = row.grant_id.as_deref().map(|family_id| {
            self.identities.seal(&StoredRow::RefreshToken {
                token_hash: &refresh_hash,
                family_id,
                client_id: &row.client_id,
                scope: &row.scope,
                identity: &row.identity,
                auth_time: row.auth_time,
                expires_at: (row.auth_time + refresh_lifetime) * 1000,
            })
        });
        let revoke_unused = || async {
            let revoked =
                sqlx::query("UPDATE oidc_refresh_tokens SET revoked_at = $1 WHERE token_hash = $2")
                    .bind(now)
                    .bind(&refresh_hash)
                    .execute(pool)
                    .await;
            if let Err(e) = revoked {
                // Never handed out, so still unusable; only the row lingers until swept.
                tracing::warn!(error = %e, "could not revoke an unissued refresh token");
            }
        };
        let redeemed = match self.redeemed(code_hash, row) {
            Ok(Some(redeemed)) => redeemed,
            Ok(None) => {
                revoke_unused().await;
                return Ok(Exchange::Tampered);
            }
            Err(e) => {
                revoke_unused().await;
                return Err(e);
            }
        };
        if let Err(refusal) = check(&redeemed) {
            revoke_unused().await;
            return Ok(Exchange::Refused(refusal));
        }
        // An authentic row has a grant (it is part of what its MAC covers), so the statement
        // stored the refresh token.
        let Some(refresh_mac) = refresh_mac else {
            return Ok(Exchange::Tampered);
        };
        sqlx::query("UPDATE oidc_refresh_tokens SET mac = $1 WHERE token_hash = $2")
            .bind(&refresh_mac)
            .bind(&refresh_hash)
            .execute(pool)
            .await?;
        Ok(Exchange::Issued {
            redeemed: Box::new(redeemed),
            refresh_token: refresh,
        })
    }

    /// A code that could not be claimed: unknown, or a replay whose grant is revoked here.
    /// The grant is revoked even when the row does not authenticate — revoking only ever
    /// refuses — but whom and which client the row names is then not believed.
    async fn replayed_code<R>(&self, code_hash: &str) -> Result<Exchange<R>, StoreError> {
        let row: Option<CodeRow> = on_pool!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT client_id, redirect_uri, scope, nonce, code_challenge, identity, \
                 auth_time, expires_at, grant_id, mac FROM oidc_codes WHERE code_hash = $1",
            )
            .bind(code_hash)
            .fetch_optional(pool)
            .await?
        });
        let Some(row) = row else {
            return Ok(Exchange::Unknown);
        };
        if let Some(grant_id) = &row.grant_id {
            self.revoke_grant(grant_id).await?;
        }
        let authentic = self.authentic(&row.authenticated(code_hash), row.mac.as_deref());
        Ok(Exchange::AlreadyUsed(Box::new(ReplayedCode {
            identity: authentic
                .then(|| serde_json::from_str(&row.identity).ok())
                .flatten(),
            client_id: authentic.then_some(row.client_id),
            grant_id: row.grant_id,
        })))
    }

    /// A claimed row as a [`RedeemedCode`]; `None` when the row does not authenticate (logged
    /// and counted). The stored identity may be unreadable.
    fn redeemed(&self, code_hash: &str, row: CodeRow) -> Result<Option<RedeemedCode>, StoreError> {
        if !self.authentic(&row.authenticated(code_hash), row.mac.as_deref()) {
            return Ok(None);
        }
        let Some(grant_id) = row.grant_id else {
            // The MAC covers the grant, and every code is written with one.
            return Ok(None);
        };
        Ok(Some(RedeemedCode {
            grant_id,
            identity: serde_json::from_str(&row.identity)?,
            client_id: row.client_id,
            redirect_uri: row.redirect_uri,
            scope: row.scope,
            nonce: row.nonce,
            code_challenge: row.code_challenge,
            auth_time: row.auth_time,
        }))
    }
}
