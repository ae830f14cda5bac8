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
mod login;
mod logout;
mod revocation;
pub mod token;
mod userinfo;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use axum::routing::{get, post};

use super::pages::CSS_PATH;
use crate::state::AppState;

/// Fields longer than this are refused before any work is done.
const MAX_FIELD_CHARS: usize = 4096;
/// At most this much of a `User-Agent` goes into the audit trail.
const MAX_USER_AGENT_CHARS: usize = 512;

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

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The `User-Agent` as the audit trail records it.
fn user_agent(headers: &HeaderMap) -> Option<String> {
    header_str(headers, header::USER_AGENT)
        .map(|ua| ua.chars().take(MAX_USER_AGENT_CHARS).collect())
}

/// Marks an answer that carries tokens or token state as never cacheable.
fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
