//! `oidc_authorization_requests`: checked authorization requests waiting for the login form,
//! and finishing one when the person signed in.

use chrono::Utc;

use super::codes::{NewCode, insert_code};
use super::sessions::{NewSession, insert_session};
use super::{FlowStore, StoreError, hash, random_token};
use crate::db::{Database, WriteScope, on_pool, on_write};
use crate::federation::Identity;
use crate::lifetimes::{AUTHORIZATION_REQUEST_LIFETIME, SESSION_ABSOLUTE, millis};
use crate::oidc::request::ValidRequest;

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

/// What finishing a password sign-in stored.
#[derive(Debug)]
pub struct CompletedLogin {
    pub code: String,
    /// The single sign-on session's cookie value.
    pub session_id: String,
}

impl FlowStore {
    /// Stores a checked request; returns its id and CSRF token (both for the login form).
    pub async fn create_request(
        &self,
        request: &ValidRequest,
        locale: &str,
    ) -> Result<(String, String), StoreError> {
        let id = random_token()?;
        let csrf = random_token()?;
        let expires_at = Utc::now().timestamp_millis() + millis(AUTHORIZATION_REQUEST_LIFETIME);
        let mut write = self.db.begin_write(WriteScope::Statement).await?;
        on_write!(&mut write, |conn| {
            sqlx::query(
                "INSERT INTO oidc_authorization_requests (id, client_id, redirect_uri, scope, \
                 state, nonce, code_challenge, csrf_hash, locale, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
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
            .execute(&mut *conn)
            .await?;
        });
        write.commit().await?;
        Ok((id, csrf))
    }

    /// The pending request behind a login form, if it exists and has not expired.
    pub async fn request(&self, id: &str) -> Result<Option<PendingRequest>, StoreError> {
        let found: Option<PendingRequest> = on_pool!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT client_id, redirect_uri, scope, state, nonce, code_challenge, \
                 csrf_hash, locale, expires_at FROM oidc_authorization_requests WHERE id = $1",
            )
            .bind(hash(id))
            .fetch_optional(pool)
            .await?
        });
        Ok(found.filter(|r| r.expires_at > Utc::now().timestamp_millis()))
    }

    /// Gives a pending request a new CSRF token (a fresh page load); returns it.
    pub async fn renew_csrf(&self, id: &str) -> Result<String, StoreError> {
        let csrf = random_token()?;
        let mut write = self.db.begin_write(WriteScope::Statement).await?;
        on_write!(&mut write, |conn| {
            sqlx::query("UPDATE oidc_authorization_requests SET csrf_hash = $1 WHERE id = $2")
                .bind(hash(&csrf))
                .bind(hash(id))
                .execute(&mut *conn)
                .await?;
        });
        write.commit().await?;
        Ok(csrf)
    }

    /// Ends a pending request (it led to a code or an error).
    pub async fn finish_request(&self, id: &str) -> Result<(), StoreError> {
        let mut write = self.db.begin_write(WriteScope::Statement).await?;
        on_write!(&mut write, |conn| {
            sqlx::query("DELETE FROM oidc_authorization_requests WHERE id = $1")
                .bind(hash(id))
                .execute(&mut *conn)
                .await?;
        });
        write.commit().await?;
        Ok(())
    }

    /// Finishes a password sign-in in one transaction — one synchronous commit instead of
    /// three: ends the pending request, issues the code and starts the single sign-on session.
    /// `None` when the request was already finished (the form posted twice): then nothing is
    /// issued, so one request never yields two codes. On PostgreSQL the transaction is one
    /// statement (a data-modifying CTE).
    pub async fn complete_login(
        &self,
        request_id: &str,
        pending: &PendingRequest,
        identity: &Identity,
    ) -> Result<Option<CompletedLogin>, StoreError> {
        let code = NewCode::new(pending, identity, Utc::now().timestamp())?;
        let session = NewSession::new(identity)?;
        let request_hash = hash(request_id);
        let started = if let Database::Postgres(pool) = &self.db {
            // One statement: one round trip and one commit, atomic as a transaction; the code
            // and the session are inserted only when the request was still pending.
            sqlx::query(
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
            .rows_affected()
                == 1
        } else {
            let mut write = self.db.begin_write(WriteScope::Transaction).await?;
            let started = on_write!(&mut write, |conn| {
                let finished = sqlx::query("DELETE FROM oidc_authorization_requests WHERE id = $1")
                    .bind(&request_hash)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                if finished == 1 {
                    insert_code!(&mut *conn, code)?;
                    insert_session!(&mut *conn, session)?;
                }
                finished == 1
            });
            // Nothing was written when the request was already finished.
            write.commit().await?;
            started
        };
        Ok(started.then_some(CompletedLogin {
            code: code.code,
            session_id: session.id,
        }))
    }
}
