//! Why an OAuth endpoint refuses a request, and the answer clients expect for it: the OAuth
//! error format (RFC 6749 5.2) at the token, revocation and introspection endpoints, a
//! `WWW-Authenticate: Bearer` challenge (RFC 6750 3) where an access token is presented.
//! Handlers return `Result<_, OAuthError>` and refuse with `?`.

use std::fmt::Display;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// A refusal of an OAuth endpoint. Causes worth a log line (storage, signing) are logged where
/// they happen ([`OrUnavailable`]); the client is told only what RFC 6749 lets it know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthError {
    /// A parameter is missing or malformed.
    #[error("invalid_request: {0}")]
    InvalidRequest(&'static str),
    /// The client could not be authenticated (answered with a `Basic` challenge).
    #[error("invalid_client")]
    InvalidClient,
    /// The code or refresh token is not usable by this request.
    #[error("invalid_grant: {0}")]
    InvalidGrant(&'static str),
    /// The client may not use this grant type.
    #[error("unauthorized_client: {0}")]
    UnauthorizedClient(&'static str),
    #[error("unsupported_grant_type")]
    UnsupportedGrantType,
    /// Storage or signing failed; nothing was issued.
    #[error("temporarily_unavailable")]
    TemporarilyUnavailable,
    /// Too many argon2 verifications were under way to check this client's secret
    /// (`crate::federation::hash_work`); answered with `Retry-After`.
    #[error("temporarily_unavailable: busy")]
    Busy,
    /// A protected resource was asked for without an access token (RFC 6750 3.1).
    #[error("no access token")]
    MissingToken,
    /// The access token is not valid: forged, expired, for someone else, or revoked.
    #[error("invalid_token")]
    InvalidToken,
}

impl OAuthError {
    fn status(&self) -> StatusCode {
        match self {
            Self::InvalidRequest(_)
            | Self::InvalidGrant(_)
            | Self::UnauthorizedClient(_)
            | Self::UnsupportedGrantType => StatusCode::BAD_REQUEST,
            Self::InvalidClient | Self::MissingToken | Self::InvalidToken => {
                StatusCode::UNAUTHORIZED
            }
            Self::TemporarilyUnavailable | Self::Busy => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `error` code and `error_description` of RFC 6749 5.2.
    fn code_and_description(&self) -> (&'static str, &'static str) {
        match self {
            Self::InvalidRequest(description) => ("invalid_request", description),
            Self::InvalidClient => ("invalid_client", "client authentication failed"),
            Self::InvalidGrant(description) => ("invalid_grant", description),
            Self::UnauthorizedClient(description) => ("unauthorized_client", description),
            Self::UnsupportedGrantType => (
                "unsupported_grant_type",
                "supported: authorization_code, refresh_token, client_credentials",
            ),
            Self::TemporarilyUnavailable => ("temporarily_unavailable", "try again"),
            Self::Busy => ("temporarily_unavailable", "busy; try again shortly"),
            Self::MissingToken => ("invalid_request", "no access token"),
            Self::InvalidToken => ("invalid_token", "the access token is not valid"),
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let status = self.status();
        // A bearer refusal is the challenge alone; the server's outer layer words the body.
        let bearer_challenge = match self {
            Self::MissingToken => Some("Bearer realm=\"novads\""),
            Self::InvalidToken => Some("Bearer realm=\"novads\", error=\"invalid_token\""),
            _ => None,
        };
        if let Some(challenge) = bearer_challenge {
            let mut response = status.into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
            return response;
        }
        let (error, description) = self.code_and_description();
        let mut response = (
            status,
            Json(json!({ "error": error, "error_description": description })),
        )
            .into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self == Self::Busy {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(crate::federation::hash_work::RETRY_AFTER_SECONDS),
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"novads\""),
            );
        }
        response
    }
}

/// Turns a storage or signing failure into [`OAuthError::TemporarilyUnavailable`], logging
/// what failed: the client learns only that it may try again.
pub trait OrUnavailable<T> {
    fn or_unavailable(self, what: &'static str) -> Result<T, OAuthError>;
}

impl<T, E: Display> OrUnavailable<T> for Result<T, E> {
    fn or_unavailable(self, what: &'static str) -> Result<T, OAuthError> {
        self.map_err(|error| {
            tracing::error!(%error, "{what}");
            OAuthError::TemporarilyUnavailable
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_failures_carry_a_basic_challenge_and_token_failures_a_bearer_one() {
        let response = OAuthError::InvalidClient.into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            "Basic realm=\"novads\""
        );
        let response = OAuthError::InvalidToken.into_response();
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"novads\", error=\"invalid_token\""
        );
        let response = OAuthError::InvalidGrant("x").into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    }
}
