//! Entity tags of cluster resources: their `resourceVersion`, quoted, as the `ETag` of an
//! answer.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// `view` as JSON with `status`, carrying `resource_version` as its `ETag` when there is one.
pub fn tagged(
    status: StatusCode,
    view: impl Serialize,
    resource_version: Option<&str>,
) -> Response {
    let etag = resource_version.and_then(|v| HeaderValue::from_str(&format!("\"{v}\"")).ok());
    let mut response = (status, axum::Json(view)).into_response();
    if let Some(etag) = etag {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}
