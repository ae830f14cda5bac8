//! `oidc_authorization_requests`: checked authorization requests waiting for the login form,
//! and finishing one when the person signed in.

use chrono::Utc;

use super::flow_store::{FlowStore, StoreError, hash, random_token};
use crate::db::{WriteScope, on_pool, on_write};
use crate::lifetimes::{AUTHORIZATION_REQUEST_LIFETIME, millis};
use crate::oidc::request::ValidRequest;

/// Pending authorization requests kept at most, all addresses together: unauthenticated
/// requests cannot grow the table beyond this (with [`super::REQUESTS_PER_SOURCE`] a minute
/// per address, one address alone cannot fill it).
pub const MAX_PENDING_REQUESTS: i64 = 100_000;

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
        let now = Utc::now().timestamp_millis();
        let mut write = self.db.begin_write(WriteScope::Statement).await?;
        let inserted = on_write!(&mut write, |conn| {
            // Inserted only while fewer than the cap are pending, in the same statement.
            sqlx::query(
                "INSERT INTO oidc_authorization_requests (id, client_id, redirect_uri, scope, \
                 state, nonce, code_challenge, csrf_hash, locale, expires_at) \
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 \
                 WHERE (SELECT COUNT(*) FROM oidc_authorization_requests \
                        WHERE expires_at > $11) < $12",
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
            .bind(now)
            .bind(self.max_pending)
            .execute(&mut *conn)
            .await?
            .rows_affected()
        });
        write.commit().await?;
        if inserted == 0 {
            return Err(StoreError::TooManyPending(self.max_pending));
        }
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
}
