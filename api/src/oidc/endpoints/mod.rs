//! The HTTP endpoints of the provider, one file per concern. OAuth endpoints answer errors in
//! the OAuth format (RFC 6749 5.2, RFC 6750 3) that clients expect ([`OAuthError`]); the pages
//! a person sees answer with an HTML page ([`PageError`]).
//!
//! [`OAuthError`]: super::error::OAuthError
//! [`PageError`]: super::pages::PageError

mod authorize;
mod client_auth;
pub mod cookies;
mod discovery;
mod http;
mod login;
mod logout;
mod revocation;
pub mod token;
mod userinfo;

use axum::Router;
use axum::routing::{get, post};

use super::pages::CSS_PATH;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(discovery::discovery),
        )
        .route(
            "/oidc/authorize",
            get(authorize::authorize_get).post(authorize::authorize_post),
        )
        .route("/oidc/login", get(login::login_get).post(login::login_post))
        .route("/oidc/token", post(token::token))
        .route(
            "/oidc/userinfo",
            get(userinfo::userinfo).post(userinfo::userinfo),
        )
        .route("/oidc/jwks", get(discovery::jwks))
        .route(
            "/oidc/logout",
            get(logout::logout_get).post(logout::logout_post),
        )
        .route("/oidc/revoke", post(revocation::revoke))
        .route("/oidc/introspect", post(revocation::introspect))
        .route(CSS_PATH, get(discovery::stylesheet))
}
