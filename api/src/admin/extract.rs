//! axum's JSON, query and path extractors with their rejections worded as problem documents,
//! so that a wrong type or an unknown field is a precise `invalid-request`, never plain text.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::MAX_BODY_BYTES;
use super::problem::AdminError;

/// A JSON request body.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = AdminError;

    async fn from_request(request: Request, state: &S) -> Result<Self, AdminError> {
        axum::Json::<T>::from_request(request, state)
            .await
            .map(|axum::Json(value)| Json(value))
            .map_err(|rejection| match rejection.status() {
                StatusCode::PAYLOAD_TOO_LARGE => AdminError::PayloadTooLarge(MAX_BODY_BYTES),
                StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                    AdminError::UnsupportedMediaType(rejection.body_text())
                }
                _ => AdminError::InvalidRequest(rejection.body_text()),
            })
    }
}

/// Query parameters.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AdminError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Query(value))
            .map_err(|rejection| AdminError::InvalidRequest(rejection.body_text()))
    }
}

/// Path parameters.
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AdminError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(|rejection| AdminError::InvalidRequest(rejection.body_text()))
    }
}

/// A JSON body left unread, for handlers that check it themselves and record the refusal
/// (bad input after authentication is an audited outcome): `application/json` or another
/// `+json` type (`application/merge-patch+json`), within the body limit.
pub struct JsonBody(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = AdminError;

    async fn from_request(request: Request, state: &S) -> Result<Self, AdminError> {
        let content_type = request
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if essence != "application/json" && !essence.ends_with("+json") {
            return Err(AdminError::UnsupportedMediaType(format!(
                "expected a JSON body (`Content-Type: application/json`), got {content_type:?}"
            )));
        }
        axum::body::Bytes::from_request(request, state)
            .await
            .map(JsonBody)
            .map_err(|rejection| match rejection.status() {
                StatusCode::PAYLOAD_TOO_LARGE => AdminError::PayloadTooLarge(MAX_BODY_BYTES),
                _ => AdminError::InvalidRequest(rejection.body_text()),
            })
    }
}
