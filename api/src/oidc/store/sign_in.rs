//! Finishing a password sign-in: the sealed request is marked used, and the code and the
//! single sign-on session begin, in one transaction.

use chrono::Utc;

use super::codes::NewCode;
use super::flow_store::{FlowStore, StoreError, hash};
use super::sessions::NewSession;
use crate::db::{Database, SqliteWrite, savepointed};
use crate::federation::Identity;
use crate::oidc::sealed_request::PendingRequest;

/// PostgreSQL: one statement (data-modifying `WITH` clauses), so one round trip and one
/// commit, atomic as a transaction; the code, the session and its grant are inserted only when
/// the request was not used yet.
const FINISH_POSTGRES: &str = "WITH finished AS (INSERT INTO oidc_used_requests (id_hash, expires_at) \
     VALUES ($1, $19) ON CONFLICT (id_hash) DO NOTHING RETURNING 1), \
     code AS (INSERT INTO oidc_codes (code_hash, client_id, redirect_uri, scope, \
     nonce, code_challenge, identity, auth_time, expires_at, grant_id, mac) \
     SELECT $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $17 FROM finished), \
     grant_link AS (INSERT INTO oidc_session_grants (session_hash, grant_id, \
     expires_at) SELECT $12, $11, $16 FROM finished) \
     INSERT INTO oidc_sessions (id_hash, identity, auth_time, last_seen, \
     expires_at, mac) SELECT $12, $13, $14, $15, $16, $18 FROM finished";

/// SQLite has no data-modifying `WITH`: the same four inserts as one script, sent to
/// SQLite's connection thread at once (one hand-off inside the write turn instead of six),
/// each insert made only when the one before it inserted its row (`changes()` is the row
/// count of the statement completed last). A script that fails part way is undone with its
/// write.
const FINISH_SQLITE: &str = savepointed!(
    "INSERT INTO oidc_used_requests (id_hash, expires_at) \
     VALUES ($1, $19) ON CONFLICT (id_hash) DO NOTHING; \
     INSERT INTO oidc_codes (code_hash, client_id, redirect_uri, scope, nonce, \
     code_challenge, identity, auth_time, expires_at, grant_id, mac) \
     SELECT $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $17 WHERE changes() = 1; \
     INSERT INTO oidc_sessions (id_hash, identity, auth_time, last_seen, expires_at, mac) \
     SELECT $12, $13, $14, $15, $16, $18 WHERE changes() = 1; \
     INSERT INTO oidc_session_grants (session_hash, grant_id, expires_at) \
     SELECT $12, $11, $16 WHERE changes() = 1"
);

/// What finishing a password sign-in stored.
#[derive(Debug)]
pub struct CompletedLogin {
    pub code: String,
    /// The single sign-on session's cookie value.
    pub session_id: String,
}

impl FlowStore {
    /// Finishes a password sign-in in one transaction — one synchronous commit instead of
    /// three: marks the (sealed) request used, issues the code and starts the single sign-on
    /// session (with the code's grant recorded as the session's, for logout).
    /// `None` when the request was already used (the form posted twice, or replayed): its id
    /// is in `oidc_used_requests`, nothing is issued, so one request never yields two codes.
    /// On PostgreSQL the transaction is one statement, on SQLite one script.
    pub async fn complete_login(
        &self,
        pending: &PendingRequest,
        identity: &Identity,
    ) -> Result<Option<CompletedLogin>, StoreError> {
        let code = NewCode::new(&self.identities, pending, identity, Utc::now().timestamp())?;
        let session = NewSession::new(&self.identities, identity)?;
        let request_hash = hash(&pending.id);
        // The same values in the same order for both backends' statements.
        macro_rules! bind {
            ($statement:expr) => {
                sqlx::query($statement)
                    .bind(request_hash)
                    .bind(code.code_hash)
                    .bind(code.client_id)
                    .bind(code.redirect_uri)
                    .bind(code.scope)
                    .bind(code.nonce)
                    .bind(code.code_challenge)
                    .bind(code.identity_json)
                    .bind(code.auth_time)
                    .bind(code.expires_at)
                    .bind(code.grant_id)
                    .bind(session.id_hash)
                    .bind(session.identity_json)
                    .bind(session.auth_time)
                    .bind(session.now_ms)
                    .bind(session.expires_at)
                    .bind(code.mac)
                    .bind(session.mac)
                    .bind(pending.expires_at)
            };
        }
        let written = match &self.db {
            Database::Postgres(pool) => bind!(FINISH_POSTGRES).execute(pool).await?.rows_affected(),
            Database::Sqlite(pool) => SqliteWrite::script(pool, bind!(FINISH_SQLITE)).await?,
        };
        // The rows the last insert made: 1 when all were made, 0 when the request was already
        // used and nothing was written.
        let started = written == 1;
        Ok(started.then_some(CompletedLogin {
            code: code.code,
            session_id: session.id,
        }))
    }
}
