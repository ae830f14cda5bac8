//! `oidc_used_requests`: which sealed authorization requests have ended. The request itself
//! travels sealed in the login form (`oidc/sealed_request.rs`) and stays valid until it
//! expires, so the database remembers the ids of those that led to a code or to an error sent
//! to the client: the same sealed request posted again finds its id here and yields nothing.
//! A row is kept until its request could no longer be opened (the sweep in `flow_store.rs`).

use super::flow_store::{FlowStore, StoreError, hash};
use crate::db::{WriteScope, on_pool, on_write};
use crate::oidc::sealed_request::PendingRequest;

/// Marks a request used; changes nothing (0 rows) when it already was. The primary key
/// decides, so two replicas finishing the same request at once cannot both succeed.
const MARK_USED: &str = "INSERT INTO oidc_used_requests (id_hash, expires_at) \
    VALUES ($1, $2) ON CONFLICT (id_hash) DO NOTHING";

impl FlowStore {
    /// Ends a request that led to no code (the client was told of an error): a later post of
    /// it is refused like a finished one. `false` when it had already ended.
    pub async fn end_request(&self, request: &PendingRequest) -> Result<bool, StoreError> {
        let mut write = self.db.begin_write(WriteScope::Statement).await?;
        let marked = on_write!(&mut write, |conn| {
            sqlx::query(MARK_USED)
                .bind(hash(&request.id))
                .bind(request.expires_at)
                .execute(&mut *conn)
                .await?
                .rows_affected()
        });
        write.commit().await?;
        Ok(marked == 1)
    }

    /// Whether `request` has ended. A read: showing the form again writes nothing.
    pub async fn request_used(&self, request: &PendingRequest) -> Result<bool, StoreError> {
        let found: Option<i64> = on_pool!(&self.db, |pool| {
            sqlx::query_scalar("SELECT expires_at FROM oidc_used_requests WHERE id_hash = $1")
                .bind(hash(&request.id))
                .fetch_optional(pool)
                .await?
        });
        Ok(found.is_some())
    }
}
