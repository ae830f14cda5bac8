//! Pending authorization requests and authorization codes, in the shared database so that any
//! replica can continue any flow. Only hashes of the random values are stored.

use aws_lc_rs::{digest, rand};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;

use super::request::ValidRequest;
use crate::db::{Database, sqlite_writer};
use crate::federation::Identity;
use crate::lifetimes::{
    AUTHORIZATION_REQUEST_LIFETIME, CODE_LIFETIME, GRANT_REVOCATION, REFRESH_LIFETIME,
    SESSION_ABSOLUTE, SESSION_IDLE, VERIFY_LEEWAY, millis, seconds,
};

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
}

/// A pending request as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PendingRequest {
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: String,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub csrf_hash: String,
    pub locale: String,
    pub expires_at: i64,
}

impl PendingRequest {
    /// A checked request answered at once (single sign-on), never shown as a login page.
    pub fn from_valid(request: &ValidRequest, locale: &str) -> Self {
        Self {
            client_id: request.client_id.clone(),
            redirect_uri: request.redirect_uri.clone(),
            scope: request.scope.clone(),
            state: request.state.clone(),
            nonce: request.nonce.clone(),
            code_challenge: request.code_challenge.clone(),
            csrf_hash: String::new(),
            locale: locale.to_owned(),
            expires_at: 0,
        }
    }
}

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

/// What finishing a password sign-in stored.
#[derive(Debug)]
pub struct CompletedLogin {
    pub code: String,
    /// The single sign-on session's cookie value.
    pub session_id: String,
}

/// A code about to be stored.
struct NewCode {
    code: String,
    code_hash: String,
    client_id: String,
    redirect_uri: String,
    scope: String,
    nonce: Option<String>,
    code_challenge: Option<String>,
    identity_json: String,
    auth_time: i64,
    expires_at: i64,
    /// Chosen now, not at the exchange, so that a replay of the code can name the grant
    /// whose tokens it must revoke.
    grant_id: String,
}

impl NewCode {
    fn new(
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

const INSERT_CODE_SQLITE: &str = "INSERT INTO oidc_codes (code_hash, client_id, redirect_uri, \
    scope, nonce, code_challenge, identity, auth_time, expires_at, grant_id) \
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
const INSERT_CODE_POSTGRES: &str = "INSERT INTO oidc_codes (code_hash, client_id, redirect_uri, \
    scope, nonce, code_challenge, identity, auth_time, expires_at, grant_id) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

/// Inserts a [`NewCode`] through a pool or a transaction.
macro_rules! insert_code {
    ($sql:expr, $executor:expr, $row:expr) => {
        sqlx::query($sql)
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

/// A single sign-on session about to be stored.
struct NewSession {
    id: String,
    id_hash: String,
    identity_json: String,
    auth_time: i64,
    now_ms: i64,
}

impl NewSession {
    /// A new id every sign-in, so a planted session id is never adopted.
    fn new(identity: &Identity) -> Result<Self, StoreError> {
        let id = random_token()?;
        let now = Utc::now();
        Ok(Self {
            id_hash: hash(&id),
            id,
            identity_json: serde_json::to_string(identity)?,
            auth_time: now.timestamp(),
            now_ms: now.timestamp_millis(),
        })
    }
}

const INSERT_SESSION_SQLITE: &str = "INSERT INTO oidc_sessions (id_hash, identity, auth_time, \
    last_seen, expires_at) VALUES (?, ?, ?, ?, ?)";
macro_rules! insert_session {
    ($sql:expr, $executor:expr, $row:expr) => {
        sqlx::query($sql)
            .bind(&$row.id_hash)
            .bind(&$row.identity_json)
            .bind($row.auth_time)
            .bind($row.now_ms)
            .bind($row.now_ms + millis(SESSION_ABSOLUTE))
            .execute($executor)
            .await
            .map(|_| ())
    };
}

/// A refresh token about to be stored.
struct NewRefresh {
    token: String,
    token_hash: String,
    family_id: String,
    client_id: String,
    scope: String,
    identity_json: String,
    auth_time: i64,
    expires_at: i64,
}

impl NewRefresh {
    fn new(
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

const INSERT_REFRESH_SQLITE: &str = "INSERT INTO oidc_refresh_tokens (token_hash, family_id, \
    client_id, scope, identity, auth_time, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)";
macro_rules! insert_refresh {
    ($sql:expr, $executor:expr, $row:expr) => {
        sqlx::query($sql)
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

#[derive(Clone)]
pub struct FlowStore {
    db: Database,
}

impl FlowStore {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Stores a checked request; returns its id and CSRF token (both for the login form).
    pub async fn create_request(
        &self,
        request: &ValidRequest,
        locale: &str,
    ) -> Result<(String, String), StoreError> {
        let id = random_token()?;
        let csrf = random_token()?;
        let expires_at = Utc::now().timestamp_millis() + millis(AUTHORIZATION_REQUEST_LIFETIME);
        let sql_sqlite = "INSERT INTO oidc_authorization_requests (id, client_id, redirect_uri, \
            scope, state, nonce, code_challenge, csrf_hash, locale, expires_at) \
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
        let sql_postgres = "INSERT INTO oidc_authorization_requests (id, client_id, redirect_uri, \
            scope, state, nonce, code_challenge, csrf_hash, locale, expires_at) \
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
        macro_rules! insert {
            ($sql:expr, $pool:expr) => {
                sqlx::query($sql)
                    .bind(hash(&id))
                    .bind(&request.client_id)
                    .bind(&request.redirect_uri)
                    .bind(&request.scope)
                    .bind(&request.state)
                    .bind(&request.nonce)
                    .bind(&request.code_challenge)
                    .bind(hash(&csrf))
                    .bind(locale)
                    .bind(expires_at)
                    .execute($pool)
                    .await
                    .map(|_| ())?
            };
        }
        match &self.db {
            Database::Sqlite(pool) => {
                let _writer = sqlite_writer(pool).await;
                insert!(sql_sqlite, pool)
            }
            Database::Postgres(pool) => insert!(sql_postgres, pool),
        };
        Ok((id, csrf))
    }

    /// The pending request behind a login form, if it exists and has not expired.
    pub async fn request(&self, id: &str) -> Result<Option<PendingRequest>, StoreError> {
        let found: Option<PendingRequest> = match &self.db {
            Database::Sqlite(pool) => {
                sqlx::query_as(
                    "SELECT client_id, redirect_uri, scope, state, nonce, code_challenge, \
                     csrf_hash, locale, expires_at FROM oidc_authorization_requests WHERE id = ?",
                )
                .bind(hash(id))
                .fetch_optional(pool)
                .await?
            }
            Database::Postgres(pool) => {
                sqlx::query_as(
                    "SELECT client_id, redirect_uri, scope, state, nonce, code_challenge, \
                     csrf_hash, locale, expires_at FROM oidc_authorization_requests WHERE id = $1",
                )
                .bind(hash(id))
                .fetch_optional(pool)
                .await?
            }
        };
        Ok(found.filter(|r| r.expires_at > Utc::now().timestamp_millis()))
    }

    /// Gives a pending request a new CSRF token (a fresh page load); returns it.
    pub async fn renew_csrf(&self, id: &str) -> Result<String, StoreError> {
        let csrf = random_token()?;
        match &self.db {
            Database::Sqlite(pool) => {
                sqlx::query("UPDATE oidc_authorization_requests SET csrf_hash = ? WHERE id = ?")
                    .bind(hash(&csrf))
                    .bind(hash(id))
                    .execute(pool)
                    .await?;
            }
            Database::Postgres(pool) => {
                sqlx::query("UPDATE oidc_authorization_requests SET csrf_hash = $1 WHERE id = $2")
                    .bind(hash(&csrf))
                    .bind(hash(id))
                    .execute(pool)
                    .await?;
            }
        }
        Ok(csrf)
    }

    /// Ends a pending request (it led to a code or an error).
    pub async fn finish_request(&self, id: &str) -> Result<(), StoreError> {
        match &self.db {
            Database::Sqlite(pool) => {
                sqlx::query("DELETE FROM oidc_authorization_requests WHERE id = ?")
                    .bind(hash(id))
                    .execute(pool)
                    .await?;
            }
            Database::Postgres(pool) => {
                sqlx::query("DELETE FROM oidc_authorization_requests WHERE id = $1")
                    .bind(hash(id))
                    .execute(pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// Issues a code whose password sign-in happened at `auth_time` (unix seconds).
    pub async fn create_code_at(
        &self,
        request: &PendingRequest,
        identity: &Identity,
        auth_time: i64,
    ) -> Result<String, StoreError> {
        let row = NewCode::new(request, identity, auth_time)?;
        match &self.db {
            Database::Sqlite(pool) => insert_code!(INSERT_CODE_SQLITE, pool, row)?,
            Database::Postgres(pool) => insert_code!(INSERT_CODE_POSTGRES, pool, row)?,
        };
        Ok(row.code)
    }

    /// Finishes a password sign-in in one transaction — one synchronous commit instead of
    /// three: ends the pending request, issues the code and starts the single sign-on session.
    /// `None` when the request was already finished (the form posted twice): then nothing is
    /// issued, so one request never yields two codes.
    pub async fn complete_login(
        &self,
        request_id: &str,
        pending: &PendingRequest,
        identity: &Identity,
    ) -> Result<Option<CompletedLogin>, StoreError> {
        let code = NewCode::new(pending, identity, Utc::now().timestamp())?;
        let session = NewSession::new(identity)?;
        let request_hash = hash(request_id);
        macro_rules! run {
            ($tx:expr, $delete:expr, $code_sql:expr, $session_sql:expr) => {{
                let mut tx = $tx;
                let finished = sqlx::query($delete)
                    .bind(&request_hash)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if finished == 0 {
                    tx.rollback().await?;
                    return Ok(None);
                }
                insert_code!($code_sql, &mut *tx, code)?;
                insert_session!($session_sql, &mut *tx, session)?;
                tx.commit().await?;
            }};
        }
        match &self.db {
            // IMMEDIATE takes the write lock up front: the transaction only writes.
            Database::Sqlite(pool) => {
                let _writer = sqlite_writer(pool).await;
                run!(
                    pool.begin_with("BEGIN IMMEDIATE").await?,
                    "DELETE FROM oidc_authorization_requests WHERE id = ?",
                    INSERT_CODE_SQLITE,
                    INSERT_SESSION_SQLITE
                )
            }
            // One statement: one round trip and one commit, atomic as a transaction; the code
            // and the session are inserted only when the request was still pending.
            Database::Postgres(pool) => {
                let started = sqlx::query(
                    "WITH finished AS (DELETE FROM oidc_authorization_requests WHERE id = $1 \
                     RETURNING 1), \
                     code AS (INSERT INTO oidc_codes (code_hash, client_id, redirect_uri, scope, \
                     nonce, code_challenge, identity, auth_time, expires_at, grant_id) \
                     SELECT $2, $3, $4, $5, $6, $7, $8, $9, $10, $11 FROM finished) \
                     INSERT INTO oidc_sessions (id_hash, identity, auth_time, last_seen, \
                     expires_at) SELECT $12, $13, $14, $15, $16 FROM finished",
                )
                .bind(&request_hash)
                .bind(&code.code_hash)
                .bind(&code.client_id)
                .bind(&code.redirect_uri)
                .bind(&code.scope)
                .bind(&code.nonce)
                .bind(&code.code_challenge)
                .bind(&code.identity_json)
                .bind(code.auth_time)
                .bind(code.expires_at)
                .bind(&code.grant_id)
                .bind(&session.id_hash)
                .bind(&session.identity_json)
                .bind(session.auth_time)
                .bind(session.now_ms)
                .bind(session.now_ms + millis(SESSION_ABSOLUTE))
                .execute(pool)
                .await?
                .rows_affected();
                if started == 0 {
                    return Ok(None);
                }
            }
        }
        Ok(Some(CompletedLogin {
            code: code.code,
            session_id: session.id,
        }))
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
        type Row = (
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
        let now = Utc::now().timestamp_millis();
        let code_hash = hash(code);
        // Codes issued before grants were recorded get one at redemption, stored with it so
        // that a replay can still name it.
        let fallback_grant = random_token()?;
        macro_rules! run {
            ($tx:expr, $claim:expr, $refresh_sql:expr) => {{
                let mut tx = $tx;
                let claimed: Option<Row> = sqlx::query_as($claim)
                    .bind(now)
                    .bind(&fallback_grant)
                    .bind(&code_hash)
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some((
                    client_id,
                    redirect_uri,
                    scope,
                    nonce,
                    code_challenge,
                    identity,
                    auth_time,
                    expires_at,
                    grant_id,
                )) = claimed
                else {
                    tx.rollback().await?;
                    return self.replayed_code(&code_hash).await;
                };
                if expires_at <= now {
                    tx.commit().await?;
                    return Ok(Exchange::Expired);
                }
                let identity = match serde_json::from_str(&identity) {
                    Ok(identity) => identity,
                    Err(e) => {
                        // The code stays used: an unreadable code is not retried.
                        tx.commit().await?;
                        return Err(e.into());
                    }
                };
                let redeemed = RedeemedCode {
                    grant_id: grant_id.unwrap_or(fallback_grant),
                    client_id,
                    redirect_uri,
                    scope,
                    nonce,
                    code_challenge,
                    identity,
                    auth_time,
                };
                if let Err(refusal) = check(&redeemed) {
                    tx.commit().await?;
                    return Ok(Exchange::Refused(refusal));
                }
                let refresh = NewRefresh::new(
                    &redeemed.grant_id,
                    &redeemed.client_id,
                    &redeemed.scope,
                    &redeemed.identity,
                    redeemed.auth_time,
                )?;
                insert_refresh!($refresh_sql, &mut *tx, refresh)?;
                tx.commit().await?;
                Ok(Exchange::Issued {
                    redeemed: Box::new(redeemed),
                    refresh_token: refresh.token,
                })
            }};
        }
        match &self.db {
            Database::Sqlite(pool) => {
                let _writer = sqlite_writer(pool).await;
                run!(
                    pool.begin_with("BEGIN IMMEDIATE").await?,
                    "UPDATE oidc_codes SET used_at = ?, grant_id = COALESCE(grant_id, ?) \
                     WHERE code_hash = ? AND used_at IS NULL \
                     RETURNING client_id, redirect_uri, scope, nonce, code_challenge, \
                     identity, auth_time, expires_at, grant_id",
                    INSERT_REFRESH_SQLITE
                )
            }
            // One statement, so one round trip and one commit. The refresh token is inserted
            // with the claim (unless the code expired), before `check` has run; a refused code
            // gets its refresh token revoked at once below. Its value never left this function,
            // so nobody could present it meanwhile.
            Database::Postgres(pool) => {
                let refresh = random_token()?;
                let refresh_hash = hash(&refresh);
                let claimed: Option<Row> = sqlx::query_as(
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
                .bind(&code_hash)
                .bind(&refresh_hash)
                .bind(seconds(REFRESH_LIFETIME))
                .fetch_optional(pool)
                .await?;
                let Some((
                    client_id,
                    redirect_uri,
                    scope,
                    nonce,
                    code_challenge,
                    identity,
                    auth_time,
                    expires_at,
                    grant_id,
                )) = claimed
                else {
                    return self.replayed_code(&code_hash).await;
                };
                if expires_at <= now {
                    return Ok(Exchange::Expired);
                }
                let revoke_unused = || async {
                    let revoked = sqlx::query(
                        "UPDATE oidc_refresh_tokens SET revoked_at = $1 WHERE token_hash = $2",
                    )
                    .bind(now)
                    .bind(&refresh_hash)
                    .execute(pool)
                    .await;
                    if let Err(e) = revoked {
                        // Never handed out, so still unusable; only the row lingers until swept.
                        tracing::warn!(error = %e, "could not revoke an unissued refresh token");
                    }
                };
                let identity = match serde_json::from_str(&identity) {
                    Ok(identity) => identity,
                    Err(e) => {
                        revoke_unused().await;
                        return Err(e.into());
                    }
                };
                let redeemed = RedeemedCode {
                    grant_id: grant_id.unwrap_or(fallback_grant),
                    client_id,
                    redirect_uri,
                    scope,
                    nonce,
                    code_challenge,
                    identity,
                    auth_time,
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
        }
    }

    /// A code that could not be claimed: unknown, or a replay whose grant is revoked here.
    async fn replayed_code<R>(&self, code_hash: &str) -> Result<Exchange<R>, StoreError> {
        type Row = (String, String, Option<String>);
        let row: Option<Row> = match &self.db {
            Database::Sqlite(pool) => {
                sqlx::query_as(
                    "SELECT client_id, identity, grant_id FROM oidc_codes WHERE code_hash = ?",
                )
                .bind(code_hash)
                .fetch_optional(pool)
                .await?
            }
            Database::Postgres(pool) => {
                sqlx::query_as(
                    "SELECT client_id, identity, grant_id FROM oidc_codes WHERE code_hash = $1",
                )
                .bind(code_hash)
                .fetch_optional(pool)
                .await?
            }
        };
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

    /// Deletes expired requests, codes, refresh tokens and revocations (used codes are kept a
    /// while past expiry for replay detection; rotated refresh tokens until their family
    /// expires; revocations until no token they name can still be valid).
    pub async fn sweep(&self) -> Result<u64, StoreError> {
        // (SQLite, PostgreSQL) statement, and how long after expiry a row is still kept: a
        // used code stays one lifetime longer so that its replay is still recognised.
        const SWEEPS: [(&str, &str, i64); 5] = [
            (
                "DELETE FROM oidc_authorization_requests WHERE expires_at < ?",
                "DELETE FROM oidc_authorization_requests WHERE expires_at < $1",
                0,
            ),
            (
                "DELETE FROM oidc_codes WHERE expires_at < ?",
                "DELETE FROM oidc_codes WHERE expires_at < $1",
                millis(CODE_LIFETIME),
            ),
            (
                "DELETE FROM oidc_refresh_tokens WHERE expires_at < ?",
                "DELETE FROM oidc_refresh_tokens WHERE expires_at < $1",
                0,
            ),
            (
                "DELETE FROM oidc_sessions WHERE expires_at < ? OR ended_at IS NOT NULL",
                "DELETE FROM oidc_sessions WHERE expires_at < $1 OR ended_at IS NOT NULL",
                0,
            ),
            (
                "DELETE FROM oidc_revocations WHERE expires_at < ?",
                "DELETE FROM oidc_revocations WHERE expires_at < $1",
                0,
            ),
        ];
        let now = Utc::now().timestamp_millis();
        let mut removed = 0;
        for (sqlite, postgres, kept) in SWEEPS {
            let cutoff = now - kept;
            removed += match &self.db {
                Database::Sqlite(pool) => {
                    let done = sqlx::query(sqlite).bind(cutoff).execute(pool).await?;
                    done.rows_affected()
                }
                Database::Postgres(pool) => {
                    let done = sqlx::query(postgres).bind(cutoff).execute(pool).await?;
                    done.rows_affected()
                }
            };
        }
        Ok(removed)
    }
}

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
        let sql_sqlite = "SELECT family_id, client_id, scope, identity, auth_time, expires_at, \
            used_at, revoked_at FROM oidc_refresh_tokens WHERE token_hash = ?";
        let sql_postgres = "SELECT family_id, client_id, scope, identity, auth_time, expires_at, \
            used_at, revoked_at FROM oidc_refresh_tokens WHERE token_hash = $1";
        let row: Option<Row> = match &self.db {
            Database::Sqlite(pool) => {
                sqlx::query_as(sql_sqlite)
                    .bind(&token_hash)
                    .fetch_optional(pool)
                    .await?
            }
            Database::Postgres(pool) => {
                sqlx::query_as(sql_postgres)
                    .bind(&token_hash)
                    .fetch_optional(pool)
                    .await?
            }
        };
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
        macro_rules! run {
            ($tx:expr, $claim:expr, $insert:expr) => {{
                let mut tx = $tx;
                let claimed = sqlx::query($claim)
                    .bind(now)
                    .bind(&token_hash)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if claimed == 0 {
                    tx.rollback().await?;
                    false
                } else {
                    insert_refresh!($insert, &mut *tx, successor)?;
                    tx.commit().await?;
                    true
                }
            }};
        }
        let rotated = match &self.db {
            Database::Sqlite(pool) => {
                let _writer = sqlite_writer(pool).await;
                run!(
                    pool.begin_with("BEGIN IMMEDIATE").await?,
                    "UPDATE oidc_refresh_tokens SET used_at = ? WHERE token_hash = ? \
                     AND used_at IS NULL AND revoked_at IS NULL AND expires_at > ?",
                    INSERT_REFRESH_SQLITE
                )
            }
            // One statement, so one round trip and one commit: the successor is inserted only
            // when the claim matched, and a statement is atomic. (SQLite has no UPDATE inside
            // WITH; its transaction costs no round trips.)
            Database::Postgres(pool) => {
                let claimed = sqlx::query(
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
                .rows_affected();
                claimed == 1
            }
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
        match &self.db {
            Database::Sqlite(pool) => {
                sqlx::query(
                    "UPDATE oidc_refresh_tokens SET revoked_at = ? \
                     WHERE family_id = ? AND revoked_at IS NULL",
                )
                .bind(now)
                .bind(grant_id)
                .execute(pool)
                .await?;
            }
            Database::Postgres(pool) => {
                sqlx::query(
                    "UPDATE oidc_refresh_tokens SET revoked_at = $1 \
                     WHERE family_id = $2 AND revoked_at IS NULL",
                )
                .bind(now)
                .bind(grant_id)
                .execute(pool)
                .await?;
            }
        }
        Ok(())
    }
}

/// A live single sign-on session.
#[derive(Debug, Clone)]
pub struct Session {
    pub identity: Identity,
    pub auth_time: i64,
}

impl FlowStore {
    /// The live session behind a cookie, touching its idle timer.
    pub async fn session(&self, id: &str) -> Result<Option<Session>, StoreError> {
        let now = Utc::now().timestamp_millis();
        let idle_floor = now - millis(SESSION_IDLE);
        let row: Option<(String, i64)> =
            match &self.db {
                Database::Sqlite(pool) => sqlx::query_as(
                    "UPDATE oidc_sessions SET last_seen = ? WHERE id_hash = ? AND ended_at IS NULL \
                     AND expires_at > ? AND last_seen > ? RETURNING identity, auth_time",
                )
                .bind(now)
                .bind(hash(id))
                .bind(now)
                .bind(idle_floor)
                .fetch_optional(pool)
                .await?,
                Database::Postgres(pool) => {
                    sqlx::query_as(
                        "UPDATE oidc_sessions SET last_seen = $1 WHERE id_hash = $2 \
                     AND ended_at IS NULL AND expires_at > $1 AND last_seen > $3 \
                     RETURNING identity, auth_time",
                    )
                    .bind(now)
                    .bind(hash(id))
                    .bind(idle_floor)
                    .fetch_optional(pool)
                    .await?
                }
            };
        match row {
            Some((identity, auth_time)) => Ok(Some(Session {
                identity: serde_json::from_str(&identity)?,
                auth_time,
            })),
            None => Ok(None),
        }
    }

    /// Ends a session (logout, or the directory no longer vouches for the user).
    pub async fn end_session(&self, id: &str) -> Result<(), StoreError> {
        let now = Utc::now().timestamp_millis();
        match &self.db {
            Database::Sqlite(pool) => {
                sqlx::query("UPDATE oidc_sessions SET ended_at = ? WHERE id_hash = ?")
                    .bind(now)
                    .bind(hash(id))
                    .execute(pool)
                    .await?;
            }
            Database::Postgres(pool) => {
                sqlx::query("UPDATE oidc_sessions SET ended_at = $1 WHERE id_hash = $2")
                    .bind(now)
                    .bind(hash(id))
                    .execute(pool)
                    .await?;
            }
        }
        Ok(())
    }
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

impl FlowStore {
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
        let row: Option<Row> =
            match &self.db {
                Database::Sqlite(pool) => sqlx::query_as(
                    "SELECT family_id, client_id, scope, identity, expires_at, used_at, revoked_at \
                     FROM oidc_refresh_tokens WHERE token_hash = ?",
                )
                .bind(hash(token))
                .fetch_optional(pool)
                .await?,
                Database::Postgres(pool) => sqlx::query_as(
                    "SELECT family_id, client_id, scope, identity, expires_at, used_at, revoked_at \
                     FROM oidc_refresh_tokens WHERE token_hash = $1",
                )
                .bind(hash(token))
                .fetch_optional(pool)
                .await?,
            };
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

/// What a row of `oidc_revocations` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RevokedKind {
    /// Every token of a grant (see [`RedeemedCode::grant_id`]).
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
    /// Records a revocation until `expires_at_ms`; revoking again only ever lengthens it.
    async fn record_revocation(
        &self,
        kind: RevokedKind,
        id: &str,
        expires_at_ms: i64,
    ) -> Result<(), StoreError> {
        let now = Utc::now().timestamp_millis();
        match &self.db {
            Database::Sqlite(pool) => {
                sqlx::query(
                    "INSERT INTO oidc_revocations (kind, id, revoked_at, expires_at) \
                     VALUES (?, ?, ?, ?) ON CONFLICT (kind, id) \
                     DO UPDATE SET expires_at = MAX(expires_at, excluded.expires_at)",
                )
                .bind(kind.as_str())
                .bind(id)
                .bind(now)
                .bind(expires_at_ms)
                .execute(pool)
                .await?;
            }
            Database::Postgres(pool) => {
                sqlx::query(
                    "INSERT INTO oidc_revocations (kind, id, revoked_at, expires_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (kind, id) DO UPDATE SET \
                     expires_at = GREATEST(oidc_revocations.expires_at, EXCLUDED.expires_at)",
                )
                .bind(kind.as_str())
                .bind(id)
                .bind(now)
                .bind(expires_at_ms)
                .execute(pool)
                .await?;
            }
        }
        Ok(())
    }

    /// Revokes one access token (RFC 7009) until it would have expired anyway.
    pub async fn revoke_access_token(&self, jti: &str, exp: i64) -> Result<(), StoreError> {
        let leeway_ms = millis(VERIFY_LEEWAY);
        let expires_at_ms = exp.saturating_mul(1000).saturating_add(leeway_ms);
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
        let found: Option<i64> = match &self.db {
            Database::Sqlite(pool) => {
                sqlx::query_scalar(
                    "SELECT 1 FROM oidc_revocations WHERE (kind = 'token' AND id = ?) \
                     OR (kind = 'grant' AND id = ?) LIMIT 1",
                )
                .bind(jti)
                .bind(grant_id)
                .fetch_optional(pool)
                .await?
            }
            Database::Postgres(pool) => {
                sqlx::query_scalar(
                    "SELECT 1::BIGINT FROM oidc_revocations WHERE (kind = 'token' AND id = $1) \
                     OR (kind = 'grant' AND id = $2) LIMIT 1",
                )
                .bind(jti)
                .bind(grant_id)
                .fetch_optional(pool)
                .await?
            }
        };
        Ok(found.is_some())
    }

    /// Called after the tokens of a grant are stored and before they are handed out: `false`
    /// when the grant was revoked meanwhile (a replay racing the exchange or refresh). The
    /// family is then revoked again, which catches the refresh token just stored, and nothing
    /// may be returned to the client. See [`FlowStore::revoke_grant`] for why this order is
    /// safe.
    pub async fn grant_usable(&self, grant_id: &str) -> Result<bool, StoreError> {
        let found: Option<i64> = match &self.db {
            Database::Sqlite(pool) => {
                sqlx::query_scalar("SELECT 1 FROM oidc_revocations WHERE kind = 'grant' AND id = ?")
                    .bind(grant_id)
                    .fetch_optional(pool)
                    .await?
            }
            Database::Postgres(pool) => {
                sqlx::query_scalar(
                    "SELECT 1::BIGINT FROM oidc_revocations WHERE kind = 'grant' AND id = $1",
                )
                .bind(grant_id)
                .fetch_optional(pool)
                .await?
            }
        };
        if found.is_some() {
            self.revoke_grant(grant_id).await?;
            return Ok(false);
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (FlowStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}", dir.path().join("novads.db").display());
        let db = Database::open(&url, None).await.expect("database");
        (FlowStore::new(db), dir)
    }

    fn identity() -> Identity {
        Identity {
            subject: "talsi:jana".into(),
            realm: "talsi".into(),
            username: "jana@talsi".into(),
            email: None,
            name: None,
            groups: Vec::new(),
            roles: Vec::new(),
            trust: None,
            directory: None,
            audit_id: 1,
        }
    }

    fn request() -> ValidRequest {
        ValidRequest {
            client_id: "app".into(),
            redirect_uri: "https://app.example/cb".into(),
            scope: "openid".into(),
            state: None,
            nonce: None,
            code_challenge: None,
            login_hint: None,
            prompt_none: false,
            prompt_login: false,
            max_age: None,
        }
    }

    /// A signed-in user's code, through the same path as the login form.
    async fn code(store: &FlowStore) -> String {
        let (id, _) = store
            .create_request(&request(), "lv")
            .await
            .expect("request");
        let pending = store.request(&id).await.expect("read").expect("pending");
        let completed = store
            .complete_login(&id, &pending, &identity())
            .await
            .expect("complete")
            .expect("first post completes");
        assert!(
            store
                .complete_login(&id, &pending, &identity())
                .await
                .expect("complete again")
                .is_none(),
            "a finished request issues no second code"
        );
        assert!(
            store
                .session(&completed.session_id)
                .await
                .expect("session")
                .is_some()
        );
        completed.code
    }

    fn accept(_: &RedeemedCode) -> Result<(), &'static str> {
        Ok(())
    }

    #[tokio::test]
    async fn a_code_is_exchanged_once_and_its_replay_revokes_the_refresh_token() {
        let (store, _dir) = store().await;
        let code = code(&store).await;
        let Exchange::Issued { refresh_token, .. } =
            store.exchange_code(&code, accept).await.expect("exchange")
        else {
            panic!("the first exchange issues");
        };
        assert!(matches!(
            store.refresh_token_usable(&refresh_token).await,
            Ok(RefreshUse::Usable(_))
        ));
        assert!(matches!(
            store.exchange_code(&code, accept).await,
            Ok(Exchange::AlreadyUsed(_))
        ));
        assert!(matches!(
            store.refresh_token_usable(&refresh_token).await,
            Ok(RefreshUse::Invalid)
        ));
    }

    #[tokio::test]
    async fn a_refused_code_is_used_up_and_stores_no_refresh_token() {
        let (store, _dir) = store().await;
        let code = code(&store).await;
        let refused = store
            .exchange_code(&code, |_| Err("PKCE verification failed"))
            .await;
        assert!(matches!(
            refused,
            Ok(Exchange::Refused("PKCE verification failed"))
        ));
        assert!(matches!(
            store.exchange_code(&code, accept).await,
            Ok(Exchange::AlreadyUsed(_))
        ));
    }

    #[tokio::test]
    async fn a_refresh_token_rotates_once_and_a_second_rotation_revokes_the_family() {
        let (store, _dir) = store().await;
        let code = code(&store).await;
        let Ok(Exchange::Issued { refresh_token, .. }) = store.exchange_code(&code, accept).await
        else {
            panic!("the exchange issues");
        };
        let Ok(RefreshUse::Usable(usable)) = store.refresh_token_usable(&refresh_token).await
        else {
            panic!("usable");
        };
        let Ok(Rotation::Rotated(successor)) = store
            .rotate_refresh_token(&refresh_token, &usable, &identity())
            .await
        else {
            panic!("the first rotation succeeds");
        };
        // A second presentation that had looked before the first rotation (a race).
        assert!(matches!(
            store
                .rotate_refresh_token(&refresh_token, &usable, &identity())
                .await,
            Ok(Rotation::Reused { .. })
        ));
        assert!(matches!(
            store.refresh_token_usable(&successor).await,
            Ok(RefreshUse::Invalid)
        ));
    }
}
