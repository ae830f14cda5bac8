//! Federated authentication: realms backed by municipal directories, trusts between them,
//! brute-force protection and the audit trail of every attempt.
//!
//! [`engine::Federation::login`] is the one entry point; the OIDC provider, the admin API and
//! `novads realm test` all go through it.

pub mod audit;
mod audit_chain;
pub mod directory;
pub mod engine;
pub mod hash_work;
pub mod lockout;
pub mod metrics;
pub mod setup;
pub mod trust;
pub mod username;

pub use engine::{Federation, Identity, LoginRefused, LoginRequest};
