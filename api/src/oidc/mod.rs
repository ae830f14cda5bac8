//! The OpenID Connect provider: signing keys, tokens and the endpoints of DESIGN.md
//! § Federation endpoints.

pub mod demo;
pub mod endpoints;
pub mod jwt;
pub mod keys;
pub mod pages;
pub mod request;
pub mod secrets;
pub mod store;
