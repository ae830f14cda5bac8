//! `oidc_codes`: authorization codes, redeemed exactly once; a replay revokes everything
//! issued from the code.

use chrono::Utc;

use super::flow_store::{FlowStore, StoreError, hash, random_token};
use super::refresh_tokens::{NewRefresh, insert_refresh};
use super::requests::PendingRequest;
use crate::db::{Database, WriteScope, on_pool, on_write};
use crate::federation::Identity;
use crate::lifetimes::{CODE_LIFETIME, REFRESH_LIFETIME, millis, seconds};

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
    /// The client the code was issued to (not necessarily the one presenting it again).
    pub client_id: String,
    /// The user the code was issued for; `None` when the stored identity is unreadable,
    /// which must not stop the revocation.
    pub identity: Option<Identity>,
    /// The revoked grant; `None` only for a code issued before grants were recorded and
    /// never redeemed since (no token was issued from it).
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
}

impl NewCode {
    pub fn new(
        request: &PendingRequest,
        identity: &Identity,
        auth_time: i64,
    ) -> Result<Self, StoreError> {
        let code = random_token()?;
        Ok(Self {
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
        })
    }
}

/// Inserts a [`NewCode`] through a connection of either backend.
macro_rules! insert_code {
    ($executor:expr, $row:expr) => {
        sqlx::query(
            "INSERT INTO oidc_codes (code_hash, client_id, redirect_uri, scope, nonce, \
             code_challenge, identity, auth_time, expires_at, grant_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
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
        .execute($executor)
        .await
        .map(|_| ())
    };
}
pub(super) use insert_code;

/// The columns a redemption reads, in this order.
type CodeRow = (
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    String,
    i64,
    i64,
    Option<String>,
);

/// Claims an unused code: marks it used in the statement that reads it, so two replicas
/// cannot both redeem it.
const CLAIM_CODE: &str = "UPDATE oidc_codes SET used_at = $1, grant_id = COALESCE(grant_id, $2) \
    WHERE code_hash = $3 AND used_at IS NULL \
    RETURNING client_id, redirect_uri, scope, nonce, code_challenge, identity, auth_time, \
    expires_at, grant_id";

impl FlowStore {
    /// Issues a code whose password sign-in happened at `auth_time` (unix seconds).
    pub async fn create_code_at(
        &self,
        request: &PendingRequest,
        identity: &Identity,
        auth_time: i64,
    ) -> Result<String, StoreError> {
        let row = NewCode::new(request, identity, auth_time)?;
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
        let row = NewCode::new(request, identity, auth_time)?;
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
    /// replay that sees the code used also sees the refresh token and revokes it.
    pub async fn exchange_code<R>(
        &self,
        code: &str,
        check: impl FnOnce(&RedeemedCode) -> Result<(), R>,
    ) -> Result<Exchange<R>, StoreError> {
        let now = Utc::now().timestamp_millis();
        let code_hash = hash(code);
        // Codes issued before grants were recorded get one at redemption, stored with it so
        // that a replay can still name it.
        let fallback_grant = random_token()?;
        if let Database::Postgres(pool) = &self.db {
            return self
                .exchange_code_postgres(pool, now, &code_hash, fallback_grant, check)
                .await;
        }
        let mut write = self.db.begin_write(WriteScope::Transaction).await?;
        let claimed: Option<CodeRow> = on_write!(&mut write, |conn| {
            sqlx::query_as(CLAIM_CODE)
                .bind(now)
                .bind(&fallback_grant)
                .bind(&code_hash)
                .fetch_optional(&mut *conn)
                .await?
        });
        let Some(row) = claimed else {
            write.rollback().await?;
            return self.replayed_code(&code_hash).await;
        };
        let expires_at = row.7;
        if expires_at <= now {
            write.commit().await?;
            return Ok(Exchange::Expired);
        }
        let redeemed = match redeemed(row, fallback_grant) {
            Ok(redeemed) => redeemed,
            Err(e) => {
                // The code stays used: an unreadable code is not retried.
                write.commit().await?;
                return Err(e);
            }
        };
        if let Err(refusal) = check(&redeemed) {
            write.commit().await?;
            return Ok(Exchange::Refused(refusal));
        }
        let refresh = NewRefresh::new(
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

    /// [`FlowStore::exchange_code`] on PostgreSQL: one statement, so one round trip and one
    /// commit. The refresh token is inserted with the claim (unless the code expired), before
    /// `check` has run; a refused code gets its refresh token revoked at once. Its value never
    /// left this function, so nobody could present it meanwhile.
    async fn exchange_code_postgres<R>(
        &self,
        pool: &sqlx::PgPool,
        now: i64,
        code_hash: &str,
        fallback_grant: String,
        check: impl FnOnce(&RedeemedCode) -> Result<(), R>,
    ) -> Result<Exchange<R>, StoreError> {
        let refresh = random_token()?;
        let refresh_hash = hash(&refresh);
        let claimed: Option<CodeRow> = sqlx::query_as(
            "WITH claimed AS (UPDATE oidc_codes SET used_at = $1, \
             grant_id = COALESCE(grant_id, $2) WHERE code_hash = $3 AND used_at IS NULL \
             RETURNING client_id, redirect_uri, scope, nonce, code_challenge, identity, \
             auth_time, expires_at, grant_id), \
             issued AS (INSERT INTO oidc_refresh_tokens (token_hash, family_id, \
             client_id, scope, identity, auth_time, expires_at) \
             SELECT $4, grant_id, client_id, scope, identity, auth_time, \
             (auth_time + $5) * 1000 FROM claimed WHERE expires_at > $1) \
             SELECT client_id, redirect_uri, scope, nonce, code_challenge, identity, \
             auth_time, expires_at, grant_id FROM claimed",
        )
        .bind(now)
        .bind(&fallback_grant)
        .bind(code_hash)
        .bind(&refresh_hash)
        .bind(seconds(REFRESH_LIFETIME))
        .fetch_optional(pool)
        .await?;
        let Some(row) = claimed else {
            return self.replayed_code(code_hash).await;
        };
        if row.7 <= now {
            return Ok(Exchange::Expired);
        }
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
        let redeemed = match redeemed(row, fallback_grant) {
            Ok(redeemed) => redeemed,
            Err(e) => {
                revoke_unused().await;
                return Err(e);
            }
        };
        if let Err(refusal) = check(&redeemed) {
            revoke_unused().await;
            return Ok(Exchange::Refused(refusal));
        }
        Ok(Exchange::Issued {
            redeemed: Box::new(redeemed),
            refresh_token: refresh,
        })
    }

    /// A code that could not be claimed: unknown, or a replay whose grant is revoked here.
    async fn replayed_code<R>(&self, code_hash: &str) -> Result<Exchange<R>, StoreError> {
        let row: Option<(String, String, Option<String>)> = on_pool!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT client_id, identity, grant_id FROM oidc_codes WHERE code_hash = $1",
            )
            .bind(code_hash)
            .fetch_optional(pool)
            .await?
        });
        let Some((client_id, identity, grant_id)) = row else {
            return Ok(Exchange::Unknown);
        };
        if let Some(grant_id) = &grant_id {
            self.revoke_grant(grant_id).await?;
        }
        Ok(Exchange::AlreadyUsed(Box::new(ReplayedCode {
            client_id,
            identity: serde_json::from_str(&identity).ok(),
            grant_id,
        })))
    }
}

/// A claimed row as a [`RedeemedCode`]; the stored identity may be unreadable.
fn redeemed(row: CodeRow, fallback_grant: String) -> Result<RedeemedCode, StoreError> {
    let (client_id, redirect_uri, scope, nonce, code_challenge, identity, auth_time, _, grant_id) =
        row;
    Ok(RedeemedCode {
        grant_id: grant_id.unwrap_or(fallback_grant),
        client_id,
        redirect_uri,
        scope,
        nonce,
        code_challenge,
        identity: serde_json::from_str(&identity)?,
        auth_time,
    })
}
