//! Federated authentication: realms backed by municipal directories, trusts between them,
//! brute-force protection and the audit trail of every attempt.

pub mod audit;
pub mod directory;
pub mod lockout;
pub mod trust;
pub mod username;
