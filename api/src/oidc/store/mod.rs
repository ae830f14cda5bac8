//! Sign-in state in the shared database, so that any replica can continue any flow: used
//! authorization requests (the pending ones travel sealed, `oidc/sealed_request.rs`),
//! authorization codes, single sign-on sessions, refresh tokens and revocations, one file per
//! table. Only hashes of the random handles are stored.
//!
//! Every statement is one SQL text for both backends (see [`crate::db`]); every write goes
//! through [`Database::begin_write`](crate::db::Database::begin_write). The PostgreSQL paths
//! of the three hot writes (finishing a sign-in, redeeming a code, rotating a refresh token)
//! are single statements with data-modifying CTEs instead of transactions — one round trip and
//! one commit each — which SQLite cannot express (it has no `UPDATE` or `DELETE` inside
//! `WITH`). The portable transaction beside each is the one SQLite runs.

mod codes;
mod flow_store;
mod pending_limit;
mod refresh_tokens;
mod revocations;
mod sessions;
mod sign_in;
mod used_requests;

pub use codes::{Exchange, RedeemedCode, ReplayedCode};
pub use flow_store::{FlowStore, StoreError, hash, random_token};
pub use pending_limit::{REQUESTS_PER_SOURCE, WINDOW as REQUESTS_WINDOW};
pub use refresh_tokens::{RefreshInfo, RefreshUse, Rotation, UsableRefresh};
pub use revocations::REVOCATIONS_FRESH_FOR;
pub use sessions::Session;
pub use sign_in::CompletedLogin;
