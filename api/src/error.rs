//! One error type for every HTTP answer that is not a success, rendered as RFC 9457
//! `application/problem+json`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};

pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// URI naming the problem type; `about:blank` means "see the status code".
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Extension members, flattened into the document.
    #[serde(flatten)]
    pub extensions: Map<String, Value>,
}

impl Problem {
    /// A problem that says no more than its status code.
    pub fn status(status: StatusCode) -> Self {
        Self {
            kind: "about:blank".to_owned(),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: None,
            extensions: Map::new(),
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_extension(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extensions.insert(key.to_owned(), value.into());
        self
    }

    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let body = serde_json::to_vec(&self).unwrap_or_else(|_| {
            // Serialising strings and JSON values cannot fail; keep a valid body regardless.
            br#"{"type":"about:blank","title":"Internal Server Error","status":500}"#.to_vec()
        });
        let mut response = (status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
        );
        response
    }
}

/// Errors a request handler can end with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    BadRequest(String),
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// The cause is logged, never shown to the client.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<&ApiError> for Problem {
    fn from(error: &ApiError) -> Self {
        match error {
            ApiError::NotFound => Problem::status(StatusCode::NOT_FOUND),
            ApiError::BadRequest(detail) => {
                Problem::status(StatusCode::BAD_REQUEST).with_detail(detail.clone())
            }
            ApiError::Unavailable(detail) => {
                Problem::status(StatusCode::SERVICE_UNAVAILABLE).with_detail(detail.clone())
            }
            ApiError::Internal(_) => Problem::status(StatusCode::INTERNAL_SERVER_ERROR),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(cause) = &self {
            tracing::error!(%cause, "request failed");
        }
        Problem::from(&self).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_json(response: Response) -> Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        serde_json::from_slice(&bytes).expect("json")
    }

    #[tokio::test]
    async fn renders_rfc9457() {
        let response = ApiError::BadRequest("missing field `name`".into()).into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            PROBLEM_CONTENT_TYPE
        );
        let body = body_json(response).await;
        assert_eq!(body["type"], "about:blank");
        assert_eq!(body["title"], "Bad Request");
        assert_eq!(body["status"], 400);
        assert_eq!(body["detail"], "missing field `name`");
    }

    #[tokio::test]
    async fn internal_errors_hide_their_cause() {
        let response = ApiError::Internal("password=hunter2 in query".into()).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = body_json(response).await;
        assert!(!body.to_string().contains("hunter2"));
        assert!(body.get("detail").is_none());
    }

    #[tokio::test]
    async fn extensions_are_flattened() {
        let response = Problem::status(StatusCode::SERVICE_UNAVAILABLE)
            .with_extension("checks", serde_json::json!({"database": "down"}))
            .into_response();
        let body = body_json(response).await;
        assert_eq!(body["checks"]["database"], "down");
    }
}
