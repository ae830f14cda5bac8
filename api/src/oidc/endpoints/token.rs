//! The token endpoint (RFC 6749 §3.2): the `authorization_code`, `refresh_token` and
//! `client_credentials` grants, and the signing of the tokens they issue.

use std::net::{IpAddr, SocketAddr};

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Serialize;

use super::client_auth::{TokenForm, TokenRequest, authenticate_client};
use super::http::{MAX_FIELD_CHARS, user_agent};
use crate::federation::Identity;
use crate::federation::audit::{AuditEvent, AuditEventKind, AuditReason};
use crate::lifetimes::{TOKEN_LIFETIME, seconds};
use crate::oidc::error::{OAuthError, OrUnavailable};
use crate::oidc::jwt::{ACCESS_TOKEN_TYPE, AccessTokenClaims, IdTokenClaims, at_hash};
use crate::oidc::request::pkce_matches;
use crate::oidc::store::{
    Exchange, RedeemedCode, RefreshUse, ReplayedCode, Rotation, random_token,
};
use crate::state::AppState;

/// Codes and refresh tokens are 43 characters; anything much longer is not one.
const MAX_HANDLE_CHARS: usize = 128;

/// A successful token response (RFC 6749 5.1).
#[derive(Debug, Clone, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    pub scope: String,
}

impl IntoResponse for TokenResponse {
    fn into_response(self) -> Response {
        let mut response = Json(self).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        response
    }
}

pub(super) async fn token(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    TokenRequest(form): TokenRequest,
) -> Result<TokenResponse, OAuthError> {
    let grant = form.grant_type.as_deref();
    if !matches!(
        grant,
        Some("authorization_code" | "refresh_token" | "client_credentials")
    ) {
        return Err(OAuthError::UnsupportedGrantType);
    }
    let client_id = authenticate_client(&state, &headers, &form).await?;
    match grant {
        Some("refresh_token") => refresh(&state, &form, client_id, peer, &headers).await,
        Some("client_credentials") => service_token(&state, &form, &client_id),
        _ => {
            let redemption = CodeRedemption {
                client_id,
                code: form.code.as_deref(),
                redirect_uri: form.redirect_uri.as_deref(),
                code_verifier: form.code_verifier.as_deref(),
                source_ip: Some(peer.ip()),
                user_agent: user_agent(&headers),
            };
            exchange_code(&state, redemption).await
        }
    }
}

/// An `authorization_code` token request of an authenticated client.
pub struct CodeRedemption<'a> {
    pub client_id: String,
    pub code: Option<&'a str>,
    pub redirect_uri: Option<&'a str>,
    pub code_verifier: Option<&'a str>,
    pub source_ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

/// `authorization_code` grant: redeems the code once and issues the grant's tokens.
pub async fn exchange_code(
    state: &AppState,
    redemption: CodeRedemption<'_>,
) -> Result<TokenResponse, OAuthError> {
    let CodeRedemption {
        client_id,
        code,
        redirect_uri,
        code_verifier,
        source_ip,
        user_agent,
    } = redemption;
    let code = code
        .filter(|c| c.len() <= MAX_HANDLE_CHARS)
        .ok_or(OAuthError::InvalidRequest("code is missing"))?;
    // Checked inside the redemption's transaction, so that an accepted code and its refresh
    // token commit together; a refused code stays used.
    let check = |redeemed: &RedeemedCode| -> Result<(), &'static str> {
        if redeemed.client_id != client_id {
            return Err("the code was issued to another client");
        }
        if redirect_uri != Some(redeemed.redirect_uri.as_str()) {
            return Err("redirect_uri does not match");
        }
        match (&redeemed.code_challenge, code_verifier) {
            (Some(challenge), Some(verifier)) if pkce_matches(verifier, challenge) => Ok(()),
            (None, None) => Ok(()),
            (None, Some(_)) => Err("code_verifier sent but no code_challenge was"),
            _ => Err("PKCE verification failed"),
        }
    };
    let exchange = state
        .flows()
        .exchange_code(code, check)
        .await
        .or_unavailable("code redemption failed")?;
    let (redeemed, refresh_token) = match exchange {
        Exchange::Issued {
            redeemed,
            refresh_token,
        } => (redeemed, refresh_token),
        Exchange::Refused(description) => return Err(OAuthError::InvalidGrant(description)),
        Exchange::AlreadyUsed(replayed) => {
            // The store has already revoked every token issued from the code: whoever
            // presented it first may have been the thief (RFC 6749 4.1.2, 10.5).
            tracing::warn!(client_id = %client_id,
                issued_to = replayed.client_id.as_deref().unwrap_or("(not authenticated)"),
                "an authorization code was presented twice; its tokens are revoked");
            audit_code_replay(state, &client_id, &replayed, source_ip, user_agent).await;
            return Err(OAuthError::InvalidGrant("the code was already used"));
        }
        Exchange::Tampered => {
            audit_tampered(
                state,
                AuditEventKind::LoginFailed,
                &client_id,
                source_ip,
                user_agent,
            )
            .await;
            return Err(OAuthError::InvalidGrant("the code is invalid or expired"));
        }
        Exchange::Expired | Exchange::Unknown => {
            return Err(OAuthError::InvalidGrant("the code is invalid or expired"));
        }
    };
    let grant = Grant {
        client_id: &client_id,
        identity: &redeemed.identity,
        scope: &redeemed.scope,
        nonce: redeemed.nonce.clone(),
        auth_time: redeemed.auth_time,
        grant_id: &redeemed.grant_id,
    };
    issue_tokens(state, grant, refresh_token).await
}

/// A replayed code is a refusal in the audit trail: `login_failed` with reason
/// `invalid_request`, naming the user the code was issued for and the client presenting it.
/// The answer is a refusal whether or not the row could be written.
async fn audit_code_replay(
    state: &AppState,
    presenting_client: &str,
    replayed: &ReplayedCode,
    source_ip: Option<IpAddr>,
    user_agent: Option<String>,
) {
    let mut event = AuditEvent::new(AuditEventKind::LoginFailed);
    event.reason = Some(AuditReason::InvalidRequest);
    event.client_id = Some(presenting_client.to_owned());
    if let Some(identity) = &replayed.identity {
        event.realm = Some(identity.realm.clone());
        event.username = Some(identity.username.clone());
        event.subject = Some(identity.subject.clone());
    }
    event.source_ip = source_ip.map(|ip| ip.to_string());
    event.user_agent = user_agent;
    if let Err(e) = state.federation().audit().append(event).await {
        tracing::error!(error = %e, "could not audit a replayed authorization code");
    }
}

/// A code or refresh token whose row does not authenticate (changed in the database) is a
/// refusal in the audit trail with reason `tampered`, naming the client presenting it and no
/// user: whom the row names is exactly what cannot be believed.
async fn audit_tampered(
    state: &AppState,
    kind: AuditEventKind,
    presenting_client: &str,
    source_ip: Option<IpAddr>,
    user_agent: Option<String>,
) {
    let mut event = AuditEvent::new(kind);
    event.reason = Some(AuditReason::Tampered);
    event.client_id = Some(presenting_client.to_owned());
    event.source_ip = source_ip.map(|ip| ip.to_string());
    event.user_agent = user_agent;
    if let Err(e) = state.federation().audit().append(event).await {
        tracing::error!(error = %e, "could not audit a changed code or refresh token");
    }
}

/// `refresh_token` grant: rotate the token, re-check the user in their directory, issue new
/// tokens. A rotated token presented again revokes its family.
async fn refresh(
    state: &AppState,
    form: &TokenForm,
    client_id: String,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<TokenResponse, OAuthError> {
    let token = form
        .refresh_token
        .as_deref()
        .filter(|t| t.len() <= MAX_HANDLE_CHARS)
        .ok_or(OAuthError::InvalidRequest("refresh_token is missing"))?;
    let store = state.flows();
    // Looked at first and used up only after the directory re-check, so that the rotation is
    // one short write transaction that never waits for the directory.
    let usable = match store
        .refresh_token_usable(token)
        .await
        .or_unavailable("refresh token lookup failed")?
    {
        RefreshUse::Usable(usable) => usable,
        RefreshUse::Reused { family_id } => {
            tracing::warn!(client_id = %client_id, family = %family_id,
                "a rotated refresh token was presented again; its family is revoked");
            return Err(OAuthError::InvalidGrant(
                "the refresh token was already used",
            ));
        }
        RefreshUse::Invalid => {
            return Err(OAuthError::InvalidGrant(
                "the refresh token is invalid, expired or revoked",
            ));
        }
        RefreshUse::Tampered => {
            audit_tampered(
                state,
                AuditEventKind::RefreshDenied,
                &client_id,
                Some(peer.ip()),
                user_agent(headers),
            )
            .await;
            return Err(OAuthError::InvalidGrant(
                "the refresh token is invalid, expired or revoked",
            ));
        }
    };
    if usable.client_id != client_id {
        return Err(OAuthError::InvalidGrant(
            "the refresh token was issued to another client",
        ));
    }
    // The token is used up and its successor stored while the refresh's audit row is
    // committed; neither is answered before both are.
    let rotate = |identity: Identity| {
        let (store, usable) = (&store, &usable);
        async move { store.rotate_refresh_token(token, usable, &identity).await }
    };
    let (identity, rotation) = match state
        .federation()
        .refresh_then(
            &usable.identity,
            &client_id,
            Some(peer.ip()),
            user_agent(headers),
            rotate,
        )
        .await
    {
        Ok(refreshed) => refreshed,
        Err(refused) => {
            // The directory no longer vouches for the user (left, disabled, moved out of the
            // trusted group): no token of this sign-in stays usable.
            if let Err(e) = store.revoke_grant(&usable.family_id).await {
                tracing::error!(error = %e, "could not revoke a refresh token family");
            }
            tracing::info!(reason = %refused.reason, "refresh refused");
            return Err(OAuthError::InvalidGrant(
                "the user may no longer use this application",
            ));
        }
    };
    let rotation = rotation.or_unavailable("rotating a refresh token failed")?;
    let refresh_token = match rotation {
        Rotation::Rotated(successor) => successor,
        Rotation::Reused { family_id } => {
            tracing::warn!(client_id = %client_id, family = %family_id,
                "a refresh token was presented twice at once; its family is revoked");
            audit_refresh_reuse(state, &identity, &client_id, peer).await;
            return Err(OAuthError::InvalidGrant(
                "the refresh token was already used",
            ));
        }
        Rotation::Invalid => {
            return Err(OAuthError::InvalidGrant(
                "the refresh token is invalid, expired or revoked",
            ));
        }
    };
    let grant = Grant {
        client_id: &client_id,
        identity: &identity,
        scope: &usable.scope,
        nonce: None,
        auth_time: usable.auth_time,
        grant_id: &usable.family_id,
    };
    issue_tokens(state, grant, refresh_token).await
}

/// The directory re-check of a refresh was audited as a refresh; when the rotation then finds
/// the token already used, the trail must also show that this one was refused.
async fn audit_refresh_reuse(
    state: &AppState,
    identity: &Identity,
    client_id: &str,
    peer: SocketAddr,
) {
    let mut event = AuditEvent::new(AuditEventKind::RefreshDenied);
    event.reason = Some(AuditReason::InvalidRequest);
    event.realm = Some(identity.realm.clone());
    event.username = Some(identity.username.clone());
    event.subject = Some(identity.subject.clone());
    event.client_id = Some(client_id.to_owned());
    event.source_ip = Some(peer.ip().to_string());
    if let Err(e) = state.federation().audit().append(event).await {
        tracing::error!(error = %e, "could not audit a reused refresh token");
    }
}

/// `client_credentials`: a confidential client acting for itself (a service), never for a
/// user. Only an access token; its subject is `client:<id>` in the client's realm.
fn service_token(
    state: &AppState,
    form: &TokenForm,
    client_id: &str,
) -> Result<TokenResponse, OAuthError> {
    let client = state
        .clients()
        .get(client_id)
        .ok_or(OAuthError::InvalidClient)?;
    if client.public {
        return Err(OAuthError::UnauthorizedClient(
            "public clients cannot use client_credentials",
        ));
    }
    let scope = form
        .scope
        .as_deref()
        .filter(|s| s.len() <= MAX_FIELD_CHARS)
        .unwrap_or_default()
        .to_owned();
    let now = Utc::now().timestamp();
    let jti = random_token().or_unavailable("no randomness for a token id")?;
    let claims = AccessTokenClaims {
        iss: state.issuer().to_owned(),
        sub: format!("client:{client_id}"),
        aud: client_id.to_owned(),
        exp: now + seconds(TOKEN_LIFETIME),
        iat: now,
        jti,
        grant_id: None,
        client_id: client_id.to_owned(),
        scope: scope.clone(),
        realm: client.realm.clone(),
        groups: None,
        roles: None,
        ..AccessTokenClaims::default()
    };
    let access_token = state
        .keys()
        .sign_with_type(
            client.id_token_signed_response_alg,
            ACCESS_TOKEN_TYPE,
            &claims,
        )
        .or_unavailable("signing a service token failed")?;
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: TOKEN_LIFETIME.as_secs(),
        id_token: None,
        refresh_token: None,
        scope,
    })
}

/// What a set of tokens is issued for.
struct Grant<'a> {
    client_id: &'a str,
    identity: &'a Identity,
    scope: &'a str,
    /// Echoed into the ID token (code flow only).
    nonce: Option<String>,
    /// Unix seconds of the password sign-in.
    auth_time: i64,
    /// The grant of the authorization code: the refresh-token family, and the access token's
    /// `grant_id` claim.
    grant_id: &'a str,
}

/// Signs the access and ID tokens with the client's algorithm and answers with them and
/// `refresh_token`, the grant's refresh token already stored — unless the grant was revoked
/// meanwhile.
async fn issue_tokens(
    state: &AppState,
    grant: Grant<'_>,
    refresh_token: String,
) -> Result<TokenResponse, OAuthError> {
    let Grant {
        client_id,
        identity,
        scope,
        nonce,
        auth_time,
        grant_id,
    } = grant;
    // A replay of the code (or of a refresh token), or a revocation, may have revoked the
    // grant since the refresh token was stored; then no token leaves the provider. This read
    // comes after that commit: see [`FlowStore::revoke_grant`] for why the order is safe.
    //
    // [`FlowStore::revoke_grant`]: crate::oidc::store::FlowStore::revoke_grant
    let usable = state
        .flows()
        .grant_usable(grant_id)
        .await
        .or_unavailable("checking a grant failed")?;
    if !usable {
        tracing::warn!(client_id = %client_id, "the grant was revoked while tokens were issued");
        return Err(OAuthError::InvalidGrant("the grant was revoked"));
    }
    let client = state
        .clients()
        .get(client_id)
        .ok_or(OAuthError::InvalidClient)?;
    let algorithm = client.id_token_signed_response_alg;
    let now = Utc::now().timestamp();
    let exp = now + seconds(TOKEN_LIFETIME);
    let jti = random_token().or_unavailable("no randomness for a token id")?;
    let scopes: Vec<&str> = scope.split_whitespace().collect();
    // OIDC Core 5.4: `profile` grants the name claims, `email` the address.
    let profile = scopes.contains(&"profile");
    let email = scopes
        .contains(&"email")
        .then(|| identity.email.clone())
        .flatten();
    let name = profile.then(|| identity.name.clone()).flatten();
    let access_claims = AccessTokenClaims {
        iss: state.issuer().to_owned(),
        sub: identity.subject.clone(),
        aud: client_id.to_owned(),
        exp,
        iat: now,
        jti,
        grant_id: Some(grant_id.to_owned()),
        client_id: client_id.to_owned(),
        scope: scope.to_owned(),
        realm: identity.realm.clone(),
        groups: Some(identity.groups.clone()),
        roles: Some(identity.roles.clone()),
        preferred_username: profile.then(|| identity.username.clone()),
        name: name.clone(),
        email: email.clone(),
    };
    let access_token = state
        .keys()
        .sign_with_type(algorithm, ACCESS_TOKEN_TYPE, &access_claims)
        .or_unavailable("signing an access token failed")?;
    let id_claims = IdTokenClaims {
        iss: state.issuer().to_owned(),
        sub: identity.subject.clone(),
        aud: client_id.to_owned(),
        exp,
        iat: now,
        auth_time: Some(auth_time),
        nonce,
        azp: Some(client_id.to_owned()),
        at_hash: Some(at_hash(&access_token, algorithm)),
        amr: Some(vec!["pwd".to_owned()]),
        preferred_username: Some(identity.username.clone()),
        realm: identity.realm.clone(),
        groups: Some(identity.groups.clone()),
        roles: Some(identity.roles.clone()),
        email,
        name,
        ..IdTokenClaims::default()
    };
    let id_token = state
        .keys()
        .sign(algorithm, &id_claims)
        .or_unavailable("signing an ID token failed")?;
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: TOKEN_LIFETIME.as_secs(),
        id_token: Some(id_token),
        refresh_token: Some(refresh_token),
        scope: scope.to_owned(),
    })
}
