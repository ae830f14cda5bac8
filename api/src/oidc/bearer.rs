//! Access tokens presented by their bearer (RFC 6750): is this one of ours, still valid, meant
//! for the caller, and not revoked? Userinfo, introspection and revocation ask here, and so
//! does any API that accepts this provider's access tokens.

use axum::http::{HeaderMap, header};

use super::error::OAuthError;
use super::jwt::{ACCESS_TOKEN_TYPE, AccessTokenClaims};
use super::keys::{Expectations, KeyError};
use super::store::StoreError;
use crate::state::AppState;

/// Why a presented access token is not honoured.
#[derive(Debug, thiserror::Error)]
pub enum BearerRefusal {
    /// Not signed by this provider's keys, for another issuer or audience, or expired.
    #[error("{0}")]
    Invalid(#[from] KeyError),
    /// Revoked alone or with its grant.
    #[error("the access token was revoked")]
    Revoked,
    /// The revocation list could not be read: a token whose revocation cannot be checked is
    /// never honoured.
    #[error("access token revocation lookup failed: {0}")]
    Unavailable(#[from] StoreError),
}

impl From<BearerRefusal> for OAuthError {
    fn from(refusal: BearerRefusal) -> Self {
        match refusal {
            BearerRefusal::Invalid(_) | BearerRefusal::Revoked => OAuthError::InvalidToken,
            BearerRefusal::Unavailable(error) => {
                tracing::error!(%error, "access token revocation lookup failed");
                OAuthError::TemporarilyUnavailable
            }
        }
    }
}

/// The token of an `Authorization: Bearer` header.
pub fn from_authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// The claims of one of this provider's access tokens, checked without the database:
/// signature, issuer, token type, expiry, and the audience when one is named.
pub fn signed_claims(
    state: &AppState,
    token: &str,
    audience: Option<&str>,
) -> Result<AccessTokenClaims, KeyError> {
    let mut expected = Expectations::new(state.issuer()).token_type(ACCESS_TOKEN_TYPE);
    if let Some(audience) = audience {
        expected = expected.audience(audience);
    }
    state.keys().verify(token, &expected)
}

/// [`signed_claims`], and not revoked: the one check before an access token is honoured.
pub async fn verify(
    state: &AppState,
    token: &str,
    audience: Option<&str>,
) -> Result<AccessTokenClaims, BearerRefusal> {
    let claims = signed_claims(state, token, audience)?;
    let revoked = state
        .flows()
        .access_token_revoked(&claims.jti, claims.grant_id.as_deref())
        .await?;
    if revoked {
        return Err(BearerRefusal::Revoked);
    }
    Ok(claims)
}
