//! The OpenID Connect provider: signing keys, tokens, sign-in state and the endpoints listed
//! in docs/configuration.md § Endpoints.

pub mod algorithm;
pub mod bearer;
pub mod endpoints;
pub mod error;
pub mod jwt;
pub mod keys;
pub mod pages;
pub mod request;
pub mod sealed_request;
pub mod secrets;
pub mod store;
