//! `oidc_sessions`: single sign-on sessions, which answer later authorization requests
//! without the password until they idle out, reach their absolute end, or are ended. Each row
//! carries a MAC over whom it names ([`StoredRow::Session`]); a session whose row does not
//! authenticate is no session.

use chrono::Utc;

use super::flow_store::{FlowStore, StoreError, hash, random_token};
use crate::db::{WriteScope, on_pool, on_write};
use crate::federation::Identity;
use crate::lifetimes::{SESSION_ABSOLUTE, SESSION_IDLE, millis};
use crate::oidc::keys::{StoredIdentityKey, StoredRow};

/// A live single sign-on session.
#[derive(Debug, Clone)]
pub struct Session {
    pub identity: Identity,
    pub auth_time: i64,
}

/// A single sign-on session about to be stored.
pub(super) struct NewSession {
    pub id: String,
    pub id_hash: String,
    pub identity_json: String,
    pub auth_time: i64,
    pub now_ms: i64,
    /// The absolute end, unix milliseconds.
    pub expires_at: i64,
    /// Authenticates the row ([`StoredRow::Session`]).
    pub mac: String,
}

impl NewSession {
    /// A new id every sign-in, so a planted session id is never adopted.
    pub fn new(key: &StoredIdentityKey, identity: &Identity) -> Result<Self, StoreError> {
        let id = random_token()?;
        let now = Utc::now();
        let id_hash = hash(&id);
        let identity_json = serde_json::to_string(identity)?;
        let expires_at = now.timestamp_millis() + millis(SESSION_ABSOLUTE);
        let mac = key.seal(&StoredRow::Session {
            id_hash: &id_hash,
            identity: &identity_json,
            auth_time: now.timestamp(),
            expires_at,
        });
        Ok(Self {
            id_hash,
            id,
            identity_json,
            auth_time: now.timestamp(),
            now_ms: now.timestamp_millis(),
            expires_at,
            mac,
        })
    }
}

/// Records that a grant was issued through a session, until the session's absolute limit.
macro_rules! link_grant {
    ($executor:expr, $session_hash:expr, $grant_id:expr, $now_ms:expr) => {
        sqlx::query(
            "INSERT INTO oidc_session_grants (session_hash, grant_id, expires_at) \
             VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(&$session_hash)
        .bind(&$grant_id)
        .bind($now_ms + $crate::lifetimes::millis($crate::lifetimes::SESSION_ABSOLUTE))
        .execute($executor)
        .await
        .map(|_| ())
    };
}
pub(super) use link_grant;

impl FlowStore {
    /// The live session behind a cookie, touching its idle timer. `None` also when the row
    /// does not authenticate (logged and counted): a changed session is no session.
    pub async fn session(&self, id: &str) -> Result<Option<Session>, StoreError> {
        let now = Utc::now().timestamp_millis();
        let idle_floor = now - millis(SESSION_IDLE);
        let id_hash = hash(id);
        let mut write = self.db.begin_write(WriteScope::Statement).await?;
        let row: Option<(String, i64, i64, Option<String>)> = on_write!(&mut write, |conn| {
            sqlx::query_as(
                "UPDATE oidc_sessions SET last_seen = $1 WHERE id_hash = $2 \
                 AND ended_at IS NULL AND expires_at > $1 AND last_seen > $3 \
                 RETURNING identity, auth_time, expires_at, mac",
            )
            .bind(now)
            .bind(&id_hash)
            .bind(idle_floor)
            .fetch_optional(&mut *conn)
            .await?
        });
        write.commit().await?;
        let Some((identity, auth_time, expires_at, mac)) = row else {
            return Ok(None);
        };
        let stored = StoredRow::Session {
            id_hash: &id_hash,
            identity: &identity,
            auth_time,
            expires_at,
        };
        if !self.authentic(&stored, mac.as_deref()) {
            return Ok(None);
        }
        Ok(Some(Session {
            identity: serde_json::from_str(&identity)?,
            auth_time,
        }))
    }

    /// Ends a session at logout and revokes every grant issued through it — each
    /// application's refresh-token family and, through the grant, its access tokens — so that
    /// logging out ends the user's access everywhere, not only the browser's cookie.
    pub async fn log_out(&self, id: &str) -> Result<(), StoreError> {
        self.end_session(id).await?;
        let grants: Vec<(String,)> = on_pool!(&self.db, |pool| {
            sqlx::query_as("SELECT grant_id FROM oidc_session_grants WHERE session_hash = $1")
                .bind(hash(id))
                .fetch_all(pool)
                .await?
        });
        for (grant_id,) in grants {
            self.revoke_grant(&grant_id).await?;
        }
        Ok(())
    }

    /// Ends a session (logout, or the directory no longer vouches for the user).
    pub async fn end_session(&self, id: &str) -> Result<(), StoreError> {
        let now = Utc::now().timestamp_millis();
        let mut write = self.db.begin_write(WriteScope::Statement).await?;
        on_write!(&mut write, |conn| {
            sqlx::query("UPDATE oidc_sessions SET ended_at = $1 WHERE id_hash = $2")
                .bind(now)
                .bind(hash(id))
                .execute(&mut *conn)
                .await?;
        });
        write.commit().await?;
        Ok(())
    }
}
