//! The signed-in user's claims, for a valid access token (OIDC Core §5.3): always `sub`,
//! `realm`, `groups` and `roles`; `preferred_username` and `name` when the grant has the
//! `profile` scope and `email` with the `email` scope, as relying parties such as Grafana read
//! them. They come from the access token, which was minted with exactly those claims.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::http::no_store;
use crate::oidc::bearer::{self, BearerRefusal};
use crate::oidc::error::OAuthError;
use crate::state::AppState;

/// The token comes in the `Authorization` header, or in a form body on POST.
pub(super) async fn userinfo(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let from_header = bearer::from_authorization(&headers);
    // RFC 6750 2.2: a form-encoded body may carry the token instead.
    let from_body = || {
        url::form_urlencoded::parse(&body)
            .find(|(key, _)| key == "access_token")
            .map(|(_, value)| value.into_owned())
    };
    let token = from_header
        .map(str::to_owned)
        .or_else(from_body)
        .ok_or(OAuthError::MissingToken)?;
    let claims =
        bearer::verify(&state, &token, None)
            .await
            .inspect_err(|refusal| match refusal {
                BearerRefusal::Invalid(error) => tracing::info!(%error, "userinfo refused a token"),
                BearerRefusal::Revoked => tracing::info!("userinfo refused a revoked token"),
                BearerRefusal::Unavailable(_) => {}
            })?;
    let mut body = json!({
        "sub": claims.sub,
        "realm": claims.realm,
        "groups": claims.groups.unwrap_or_default(),
        "roles": claims.roles.unwrap_or_default(),
    });
    // Absent rather than null: several relying parties reject a null string claim.
    let standard = [
        ("preferred_username", claims.preferred_username),
        ("name", claims.name),
        ("email", claims.email),
    ];
    for (key, value) in standard {
        if let (Some(value), Some(object)) = (value, body.as_object_mut()) {
            object.insert(key.to_owned(), value.into());
        }
    }
    Ok(no_store(Json(body).into_response()))
}
