//! Who is calling the token, revocation and introspection endpoints: `client_secret_basic`,
//! `client_secret_post`, or no secret for public clients; and the form those endpoints share.

use axum::extract::{Form, FromRequest, Request};
use axum::http::{HeaderMap, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use super::http::{MAX_FIELD_CHARS, header_str};
use crate::oidc::error::OAuthError;
use crate::oidc::secrets::Verified;
use crate::state::AppState;

/// The form of the token, revocation and introspection endpoints.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct TokenForm {
    pub grant_type: Option<String>,
    pub code: Option<String>,
    pub redirect_uri: Option<String>,
    pub code_verifier: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub refresh_token: Option<String>,
    /// `client_credentials`: the scope asked for.
    pub scope: Option<String>,
    /// Revocation and introspection: the token in question (`token_type_hint` is not
    /// needed: both kinds are recognised).
    pub token: Option<String>,
}

/// A [`TokenForm`] read from the body, refused in the OAuth error format — `400
/// invalid_request` (RFC 6749 5.2) — when it cannot be read: a parameter given twice (RFC 6749
/// 3.2 forbids it), a body that is not form-encoded. (axum's own refusal would be a `422` or
/// `415` problem document that OAuth clients do not understand.)
pub(super) struct TokenRequest(pub TokenForm);

impl<S: Send + Sync> FromRequest<S> for TokenRequest {
    type Rejection = OAuthError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Form::<TokenForm>::from_request(request, state).await {
            Ok(Form(form)) => Ok(Self(form)),
            Err(_) => Err(OAuthError::InvalidRequest(
                "the body is not a form, or repeats a parameter",
            )),
        }
    }
}

/// Client credentials from `Authorization: Basic` (RFC 6749 2.3.1: each part form-encoded).
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = header_str(headers, header::AUTHORIZATION)?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let decode = |s: &str| {
        url::form_urlencoded::parse(format!("v={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    };
    Some((decode(id)?, decode(secret)?))
}

/// Client authentication: `client_secret_basic`, `client_secret_post`, or none for public
/// clients. Returns the authenticated client id.
pub(super) async fn authenticate_client(
    state: &AppState,
    headers: &HeaderMap,
    form: &TokenForm,
) -> Result<String, OAuthError> {
    let (client_id, secret) = match (basic_credentials(headers), &form.client_id) {
        (Some((id, secret)), body_id) => {
            if body_id.as_ref().is_some_and(|b| *b != id) {
                return Err(OAuthError::InvalidRequest("client_id mismatch"));
            }
            (id, Some(secret))
        }
        (None, Some(id)) => (id.clone(), form.client_secret.clone()),
        (None, None) => return Err(OAuthError::InvalidClient),
    };
    let client = state
        .clients()
        .get(&client_id)
        .ok_or(OAuthError::InvalidClient)?;
    match (&client.secret_hash, secret) {
        (Some(hash), Some(secret)) if secret.len() <= MAX_FIELD_CHARS => {
            match state
                .clients()
                .verify_secret(&client_id, hash, secret)
                .await
            {
                Verified::Cached | Verified::Hashed => {}
                Verified::Refused => return Err(OAuthError::InvalidClient),
                Verified::Busy => return Err(OAuthError::Busy),
            }
        }
        (None, None) if client.public => {}
        _ => return Err(OAuthError::InvalidClient),
    }
    Ok(client_id)
}

/// The authenticated client and the `token` parameter of a revocation request.
pub(super) async fn client_and_token<'f>(
    state: &AppState,
    headers: &HeaderMap,
    form: &'f TokenForm,
) -> Result<(String, &'f str), OAuthError> {
    let client_id = authenticate_client(state, headers, form).await?;
    let token = form
        .token
        .as_deref()
        .filter(|t| t.len() <= MAX_FIELD_CHARS)
        .ok_or(OAuthError::InvalidRequest("token is missing"))?;
    Ok((client_id, token))
}

/// Like [`client_and_token`], but only for a confidential client that proved its secret:
/// introspection tells whether any token is live and whose it is, which a public client (anyone
/// who read the application's source knows its id) must not be able to ask.
pub(super) async fn confidential_client_and_token<'f>(
    state: &AppState,
    headers: &HeaderMap,
    form: &'f TokenForm,
) -> Result<(String, &'f str), OAuthError> {
    let (client_id, token) = client_and_token(state, headers, form).await?;
    let confidential = state
        .clients()
        .get(&client_id)
        .is_some_and(|client| !client.public && client.secret_hash.is_some());
    if !confidential {
        return Err(OAuthError::InvalidClient);
    }
    Ok((client_id, token))
}
