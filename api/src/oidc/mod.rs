//! The OpenID Connect provider: signing keys, tokens and the endpoints of DESIGN.md
//! § Federation endpoints.

pub mod algorithm;
pub mod bearer;
pub mod endpoints;
pub mod error;
pub mod jwt;
pub mod keys;
pub mod pages;
pub mod request;
pub mod secrets;
pub mod store;
