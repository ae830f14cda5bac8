//! The OpenID Connect provider: signing keys, tokens and the endpoints of DESIGN.md
//! § Federation endpoints.

pub mod jwt;
pub mod keys;
