//! Pending authorization requests and authorization codes, in the shared database so that any
//! replica can continue any flow. Only hashes of the random values are stored.

use aws_lc_rs::{digest, rand};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;

use super::request::ValidRequest;
use crate::db::Database;
use crate::federation::Identity;

/// How long the login page may stay open.
pub const REQUEST_LIFETIME_MS: i64 = 10 * 60 * 1000;
/// How long a code may wait for its exchange (OAuth recommends at most 10 minutes).
pub const CODE_LIFETIME_MS: i64 = 60 * 1000;

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
pub enum Redemption {
    Redeemed(Box<RedeemedCode>),
    /// Never issued, or expired and swept.
    Unknown,
    Expired,
    /// Presented before: a replay. Every token issued from the code is already revoked.
    AlreadyUsed(Box<ReplayedCode>),
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
        let expires_at = Utc::now().timestamp_millis() + REQUEST_LIFETIME_MS;
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
            Database::Sqlite(pool) => insert!(sql_sqlite, pool),
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

    /// Issues a code for a signed-in user; returns the code.
    pub async fn create_code(
        &self,
        request: &PendingRequest,
        identity: &Identity,
    ) -> Result<String, StoreError> {
        self.create_code_at(request, identity, Utc::now().timestamp())
            .await
    }

    /// Issues a code whose password sign-in happened at `auth_time` (unix seconds).
    pub async fn create_code_at(
        &self,
        request: &PendingRequest,
        identity: &Identity,
        auth_time: i64,
    ) -> Result<String, StoreError> {
        let code = random_token()?;
        // Chosen now, not at the exchange, so that a replay of the code can name the grant
        // whose tokens it must revoke.
        let grant_id = random_token()?;
        let now = Utc::now();
        let identity_json = serde_json::to_string(identity)?;
        let sql_sqlite = "INSERT INTO oidc_codes (code_hash, client_id, redirect_uri, scope, nonce, \
            code_challenge, identity, auth_time, expires_at, grant_id) \
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
        let sql_postgres = "INSERT INTO oidc_codes (code_hash, client_id, redirect_uri, scope, \
            nonce, code_challenge, identity, auth_time, expires_at, grant_id) \
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
        macro_rules! insert {
            ($sql:expr, $pool:expr) => {
                sqlx::query($sql)
                    .bind(hash(&code))
                    .bind(&request.client_id)
                    .bind(&request.redirect_uri)
                    .bind(&request.scope)
                    .bind(&request.nonce)
                    .bind(&request.code_challenge)
                    .bind(&identity_json)
                    .bind(auth_time)
                    .bind(now.timestamp_millis() + CODE_LIFETIME_MS)
                    .bind(&grant_id)
                    .execute($pool)
                    .await
                    .map(|_| ())?
            };
        }
        match &self.db {
            Database::Sqlite(pool) => insert!(sql_sqlite, pool),
            Database::Postgres(pool) => insert!(sql_postgres, pool),
        };
        Ok(code)
    }

    /// Redeems a code exactly once: the first presentation marks it used in the same
    /// statement that reads it, so two replicas cannot both redeem it. A second presentation
    /// revokes the code's grant — every token issued from it (RFC 6749 4.1.2) — before it
    /// returns [`Redemption::AlreadyUsed`].
    pub async fn redeem_code(&self, code: &str) -> Result<Redemption, StoreError> {
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
        let claimed: Option<Row> = match &self.db {
            Database::Sqlite(pool) => {
                sqlx::query_as(
                    "UPDATE oidc_codes SET used_at = ?, grant_id = COALESCE(grant_id, ?) \
                     WHERE code_hash = ? AND used_at IS NULL \
                     RETURNING client_id, redirect_uri, scope, nonce, code_challenge, identity, \
                     auth_time, expires_at, grant_id",
                )
                .bind(now)
                .bind(&fallback_grant)
                .bind(&code_hash)
                .fetch_optional(pool)
                .await?
            }
            Database::Postgres(pool) => {
                sqlx::query_as(
                    "UPDATE oidc_codes SET used_at = $1, grant_id = COALESCE(grant_id, $2) \
                     WHERE code_hash = $3 AND used_at IS NULL \
                     RETURNING client_id, redirect_uri, scope, nonce, code_challenge, identity, \
                     auth_time, expires_at, grant_id",
                )
                .bind(now)
                .bind(&fallback_grant)
                .bind(&code_hash)
                .fetch_optional(pool)
                .await?
            }
        };
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
            return Ok(Redemption::Expired);
        }
        let grant_id = grant_id.unwrap_or(fallback_grant);
        Ok(Redemption::Redeemed(Box::new(RedeemedCode {
            grant_id,
            client_id,
            redirect_uri,
            scope,
            nonce,
            code_challenge,
            identity: serde_json::from_str(&identity)?,
            auth_time,
        })))
    }

    /// A code that could not be claimed: unknown, or a replay whose grant is revoked here.
    async fn replayed_code(&self, code_hash: &str) -> Result<Redemption, StoreError> {
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
            return Ok(Redemption::Unknown);
        };
        if let Some(grant_id) = &grant_id {
            self.revoke_grant(grant_id).await?;
        }
        Ok(Redemption::AlreadyUsed(Box::new(ReplayedCode {
            client_id,
            identity: serde_json::from_str(&identity).ok(),
            grant_id,
        })))
    }

    /// Deletes expired requests, codes, refresh tokens and revocations (used codes are kept a
    /// while past expiry for replay detection; rotated refresh tokens until their family
    /// expires; revocations until no token they name can still be valid).
    pub async fn sweep(&self) -> Result<u64, StoreError> {
        let now = Utc::now().timestamp_millis();
        let mut removed = 0;
        match &self.db {
            Database::Sqlite(pool) => {
                removed +=
                    sqlx::query("DELETE FROM oidc_authorization_requests WHERE expires_at < ?")
                        .bind(now)
                        .execute(pool)
                        .await?
                        .rows_affected();
                removed += sqlx::query("DELETE FROM oidc_codes WHERE expires_at < ?")
                    .bind(now - CODE_LIFETIME_MS)
                    .execute(pool)
                    .await?
                    .rows_affected();
                removed += sqlx::query("DELETE FROM oidc_refresh_tokens WHERE expires_at < ?")
                    .bind(now)
                    .execute(pool)
                    .await?
                    .rows_affected();
                removed += sqlx::query(
                    "DELETE FROM oidc_sessions WHERE expires_at < ? OR ended_at IS NOT NULL",
                )
                .bind(now)
                .execute(pool)
                .await?
                .rows_affected();
                removed += sqlx::query("DELETE FROM oidc_revocations WHERE expires_at < ?")
                    .bind(now)
                    .execute(pool)
                    .await?
                    .rows_affected();
            }
            Database::Postgres(pool) => {
                removed +=
                    sqlx::query("DELETE FROM oidc_authorization_requests WHERE expires_at < $1")
                        .bind(now)
                        .execute(pool)
                        .await?
                        .rows_affected();
                removed += sqlx::query("DELETE FROM oidc_codes WHERE expires_at < $1")
                    .bind(now - CODE_LIFETIME_MS)
                    .execute(pool)
                    .await?
                    .rows_affected();
                removed += sqlx::query("DELETE FROM oidc_refresh_tokens WHERE expires_at < $1")
                    .bind(now)
                    .execute(pool)
                    .await?
                    .rows_affected();
                removed += sqlx::query(
                    "DELETE FROM oidc_sessions WHERE expires_at < $1 OR ended_at IS NOT NULL",
                )
                .bind(now)
                .execute(pool)
                .await?
                .rows_affected();
                removed += sqlx::query("DELETE FROM oidc_revocations WHERE expires_at < $1")
                    .bind(now)
                    .execute(pool)
                    .await?
                    .rows_affected();
            }
        }
        Ok(removed)
    }
}

/// How long a sign-in can be kept alive by refreshing, counted from the password sign-in.
pub const REFRESH_LIFETIME_SECONDS: i64 = 12 * 60 * 60;

/// A refresh token as stored, once claimed for rotation.
#[derive(Debug, Clone)]
pub struct ClaimedRefresh {
    pub family_id: String,
    pub client_id: String,
    pub scope: String,
    pub identity: Identity,
    pub auth_time: i64,
}

/// What happened when a refresh token was presented.
#[derive(Debug)]
pub enum RefreshUse {
    Claimed(Box<ClaimedRefresh>),
    /// Already rotated: a copy is in someone else's hands. The family is now revoked.
    Reused {
        family_id: String,
    },
    /// Revoked, expired, or never issued.
    Invalid,
}

impl FlowStore {
    /// Issues a refresh token in `family_id` (the grant id); returns the token.
    pub async fn create_refresh_token(
        &self,
        family_id: &str,
        client_id: &str,
        scope: &str,
        identity: &Identity,
        auth_time: i64,
    ) -> Result<String, StoreError> {
        let token = random_token()?;
        let family = family_id;
        let identity_json = serde_json::to_string(identity)?;
        let expires_at = (auth_time + REFRESH_LIFETIME_SECONDS) * 1000;
        let sqlite = "INSERT INTO oidc_refresh_tokens (token_hash, family_id, client_id, scope, \
            identity, auth_time, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)";
        let postgres = "INSERT INTO oidc_refresh_tokens (token_hash, family_id, client_id, scope, \
            identity, auth_time, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)";
        macro_rules! insert {
            ($sql:expr, $pool:expr) => {
                sqlx::query($sql)
                    .bind(hash(&token))
                    .bind(family)
                    .bind(client_id)
                    .bind(scope)
                    .bind(&identity_json)
                    .bind(auth_time)
                    .bind(expires_at)
                    .execute($pool)
                    .await
                    .map(|_| ())?
            };
        }
        match &self.db {
            Database::Sqlite(pool) => insert!(sqlite, pool),
            Database::Postgres(pool) => insert!(postgres, pool),
        }
        Ok(token)
    }

    /// Claims a refresh token for rotation, exactly once. A token presented a second time
    /// revokes its whole family.
    pub async fn use_refresh_token(&self, token: &str) -> Result<RefreshUse, StoreError> {
        type Row = (String, String, String, String, i64, i64);
        let now = Utc::now().timestamp_millis();
        let token_hash = hash(token);
        let claimed: Option<Row> = match &self.db {
            Database::Sqlite(pool) => {
                sqlx::query_as(
                    "UPDATE oidc_refresh_tokens SET used_at = ? WHERE token_hash = ? \
                     AND used_at IS NULL AND revoked_at IS NULL \
                     RETURNING family_id, client_id, scope, identity, auth_time, expires_at",
                )
                .bind(now)
                .bind(&token_hash)
                .fetch_optional(pool)
                .await?
            }
            Database::Postgres(pool) => {
                sqlx::query_as(
                    "UPDATE oidc_refresh_tokens SET used_at = $1 WHERE token_hash = $2 \
                     AND used_at IS NULL AND revoked_at IS NULL \
                     RETURNING family_id, client_id, scope, identity, auth_time, expires_at",
                )
                .bind(now)
                .bind(&token_hash)
                .fetch_optional(pool)
                .await?
            }
        };
        if let Some((family_id, client_id, scope, identity, auth_time, expires_at)) = claimed {
            if expires_at <= now {
                return Ok(RefreshUse::Invalid);
            }
            return Ok(RefreshUse::Claimed(Box::new(ClaimedRefresh {
                family_id,
                client_id,
                scope,
                identity: serde_json::from_str(&identity)?,
                auth_time,
            })));
        }
        // Not claimable: find out whether it is a replay of a rotated token.
        let previous: Option<(String, Option<i64>)> = match &self.db {
            Database::Sqlite(pool) => {
                sqlx::query_as(
                    "SELECT family_id, used_at FROM oidc_refresh_tokens WHERE token_hash = ?",
                )
                .bind(&token_hash)
                .fetch_optional(pool)
                .await?
            }
            Database::Postgres(pool) => {
                sqlx::query_as(
                    "SELECT family_id, used_at FROM oidc_refresh_tokens WHERE token_hash = $1",
                )
                .bind(&token_hash)
                .fetch_optional(pool)
                .await?
            }
        };
        match previous {
            Some((family_id, Some(_))) => {
                self.revoke_grant(&family_id).await?;
                Ok(RefreshUse::Reused { family_id })
            }
            _ => Ok(RefreshUse::Invalid),
        }
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
        self.record_revocation(RevokedKind::Grant, grant_id, now + GRANT_REVOCATION_MS)
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

/// A session ends this long after the last use.
pub const SESSION_IDLE_MS: i64 = 30 * 60 * 1000;
/// ... and at the latest this long after the password sign-in.
pub const SESSION_ABSOLUTE_MS: i64 = 12 * 60 * 60 * 1000;

/// A live single sign-on session.
#[derive(Debug, Clone)]
pub struct Session {
    pub identity: Identity,
    pub auth_time: i64,
}

impl FlowStore {
    /// Starts a session for a password sign-in; returns the cookie value (a new id every
    /// sign-in, so a planted session id is never adopted).
    pub async fn create_session(&self, identity: &Identity) -> Result<String, StoreError> {
        let id = random_token()?;
        let now = Utc::now();
        let identity_json = serde_json::to_string(identity)?;
        let sqlite = "INSERT INTO oidc_sessions (id_hash, identity, auth_time, last_seen, \
            expires_at) VALUES (?, ?, ?, ?, ?)";
        let postgres = "INSERT INTO oidc_sessions (id_hash, identity, auth_time, last_seen, \
            expires_at) VALUES ($1, $2, $3, $4, $5)";
        macro_rules! insert {
            ($sql:expr, $pool:expr) => {
                sqlx::query($sql)
                    .bind(hash(&id))
                    .bind(&identity_json)
                    .bind(now.timestamp())
                    .bind(now.timestamp_millis())
                    .bind(now.timestamp_millis() + SESSION_ABSOLUTE_MS)
                    .execute($pool)
                    .await
                    .map(|_| ())?
            };
        }
        match &self.db {
            Database::Sqlite(pool) => insert!(sqlite, pool),
            Database::Postgres(pool) => insert!(postgres, pool),
        }
        Ok(id)
    }

    /// The live session behind a cookie, touching its idle timer.
    pub async fn session(&self, id: &str) -> Result<Option<Session>, StoreError> {
        let now = Utc::now().timestamp_millis();
        let idle_floor = now - SESSION_IDLE_MS;
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

/// How long a grant's revocation is remembered, in milliseconds. Every access token of the
/// grant was issued by a request that started before the revocation (later ones are refused by
/// [`FlowStore::grant_usable`]), so it was signed at most a request timeout after it, lives a
/// token lifetime, and is accepted for the verification leeway beyond its `exp`.
pub const GRANT_REVOCATION_MS: i64 = (super::endpoints::TOKEN_LIFETIME.as_millis()
    + crate::server::REQUEST_TIMEOUT.as_millis()
    + super::keys::DEFAULT_LEEWAY.as_millis()) as i64;

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
        let leeway_ms = i64::try_from(super::keys::DEFAULT_LEEWAY.as_millis()).unwrap_or(0);
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
