//! What a client may ask about, or do to, the tokens it was issued: revocation (RFC 7009) and
//! introspection (RFC 7662).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::client_auth::{TokenRequest, client_and_token, confidential_client_and_token};
use super::http::no_store;
use crate::oidc::bearer::{self, BearerRefusal};
use crate::oidc::error::{OAuthError, OrUnavailable};
use crate::state::AppState;

/// Revocation (RFC 7009). A refresh token revokes its whole grant: every refresh and access
/// token of that sign-in (RFC 7009 2.1 asks for the access tokens too). An access token is
/// revoked alone, by its `jti`, until it would have expired. Only the client a token was
/// issued to can revoke it. The answer is 200 whether or not the token was known, as the RFC
/// requires.
pub(super) async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    TokenRequest(form): TokenRequest,
) -> Result<Response, OAuthError> {
    let (client_id, token) = client_and_token(&state, &headers, &form).await?;
    let store = state.flows();
    // An access token is recognised by its signature alone, without a database lookup.
    if let Ok(claims) = bearer::signed_claims(&state, token, None) {
        if claims.client_id == client_id {
            store
                .revoke_access_token(&claims.jti, claims.exp)
                .await
                .or_unavailable("revoking an access token failed")?;
        }
        return Ok(no_store(StatusCode::OK.into_response()));
    }
    let found = store
        .refresh_info(token)
        .await
        .or_unavailable("revocation lookup failed")?;
    if let Some(info) = found.filter(|info| info.client_id == client_id) {
        store
            .revoke_grant(&info.family_id)
            .await
            .or_unavailable("revocation failed")?;
    }
    Ok(no_store(StatusCode::OK.into_response()))
}

/// Introspection (RFC 7662) for authenticated confidential clients (a public client gets
/// `401 invalid_client`, RFC 7662 2.1 lets the server require this): access tokens by signature, expiry and
/// revocation, refresh tokens by their stored state (and only to the client they were issued
/// to).
pub(super) async fn introspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    TokenRequest(form): TokenRequest,
) -> Result<Response, OAuthError> {
    let (client_id, token) = confidential_client_and_token(&state, &headers, &form).await?;
    let body = match bearer::verify(&state, token, None).await {
        Ok(claims) => json!({
            "active": true,
            "token_type": "Bearer",
            "scope": claims.scope,
            "client_id": claims.client_id,
            "sub": claims.sub,
            "aud": claims.aud,
            "iss": claims.iss,
            "exp": claims.exp,
            "iat": claims.iat,
            "jti": claims.jti,
            "realm": claims.realm,
            "groups": claims.groups.unwrap_or_default(),
            "roles": claims.roles.unwrap_or_default(),
        }),
        Err(BearerRefusal::Revoked) => json!({ "active": false }),
        Err(refusal @ BearerRefusal::Unavailable(_)) => return Err(refusal.into()),
        // Not an access token of ours: perhaps a refresh token.
        Err(BearerRefusal::Invalid(_)) => {
            let found = state
                .flows()
                .refresh_info(token)
                .await
                .or_unavailable("introspection lookup failed")?;
            match found {
                Some(info) if info.active && info.client_id == client_id => json!({
                    "active": true,
                    "token_type": "refresh_token",
                    "scope": info.scope,
                    "client_id": info.client_id,
                    "sub": info.subject,
                    "username": info.username,
                    "exp": info.expires_at_ms / 1000,
                    "iss": state.issuer(),
                }),
                _ => json!({ "active": false }),
            }
        }
    };
    Ok(no_store(Json(body).into_response()))
}
