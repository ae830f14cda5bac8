//! Why the admin API refuses a request, answered as an RFC 9457 problem document whose `type`
//! is a stable URI a client can branch on (listed in docs/admin-api.md). Handlers return
//! `Result<_, AdminError>` and refuse with `?`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::Problem;

/// Where the problem types live; each type is this plus its slug.
pub const PROBLEM_BASE: &str = "https://novads.io/problems/";

/// A refusal of the admin API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// No `Authorization: Bearer` header.
    #[error("an access token is required: send `Authorization: Bearer <token>`")]
    MissingToken,
    /// Forged, expired, revoked, or issued to a client the admin API does not accept.
    #[error("{0}")]
    InvalidToken(String),
    /// A valid token whose roles do not allow this request.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The resource exists already; nothing was changed.
    #[error("{0}")]
    Conflict(String),
    #[error("this method is not allowed on this resource")]
    MethodNotAllowed,
    /// The request itself is wrong: a parameter, the body, a name.
    #[error("{0}")]
    InvalidRequest(String),
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The answer took longer than the admin API's request timeout.
    #[error("the request took longer than {0} seconds")]
    Timeout(u64),
    /// The API runs without a Kubernetes cluster, and the resource lives there.
    #[error("no Kubernetes cluster is configured: {0} live in the cluster")]
    ClusterUnavailable(&'static str),
    /// The cluster did not answer; nothing was read or changed.
    #[error("the Kubernetes cluster did not answer; try again")]
    ClusterUnreachable,
    /// The audit trail could not take the row that must precede the answer; nothing was done.
    #[error("the audit trail is unavailable; nothing was changed")]
    AuditUnavailable,
    /// The database did not answer; the cause is logged.
    #[error("storage is unavailable; try again")]
    StorageUnavailable,
}

impl AdminError {
    /// The slug of the `type` URI and the status.
    fn kind(&self) -> (&'static str, StatusCode) {
        match self {
            Self::MissingToken => ("unauthenticated", StatusCode::UNAUTHORIZED),
            Self::InvalidToken(_) => ("invalid-token", StatusCode::UNAUTHORIZED),
            Self::Forbidden(_) => ("forbidden", StatusCode::FORBIDDEN),
            Self::NotFound(_) => ("not-found", StatusCode::NOT_FOUND),
            Self::Conflict(_) => ("conflict", StatusCode::CONFLICT),
            Self::MethodNotAllowed => ("method-not-allowed", StatusCode::METHOD_NOT_ALLOWED),
            Self::InvalidRequest(_) => ("invalid-request", StatusCode::BAD_REQUEST),
            Self::PayloadTooLarge(_) => ("payload-too-large", StatusCode::PAYLOAD_TOO_LARGE),
            Self::UnsupportedMediaType(_) => {
                ("unsupported-media-type", StatusCode::UNSUPPORTED_MEDIA_TYPE)
            }
            Self::Timeout(_) => ("timeout", StatusCode::SERVICE_UNAVAILABLE),
            Self::ClusterUnavailable(_) => ("cluster-unavailable", StatusCode::SERVICE_UNAVAILABLE),
            Self::ClusterUnreachable => ("cluster-unreachable", StatusCode::SERVICE_UNAVAILABLE),
            Self::AuditUnavailable => ("audit-unavailable", StatusCode::SERVICE_UNAVAILABLE),
            Self::StorageUnavailable => ("storage-unavailable", StatusCode::SERVICE_UNAVAILABLE),
        }
    }

    /// The RFC 6750 challenge a refusal of the token carries.
    fn challenge(&self) -> Option<&'static str> {
        match self {
            Self::MissingToken => Some("Bearer realm=\"novads\""),
            Self::InvalidToken(_) => Some("Bearer realm=\"novads\", error=\"invalid_token\""),
            Self::Forbidden(_) => Some("Bearer realm=\"novads\", error=\"insufficient_scope\""),
            _ => None,
        }
    }

    /// The problem document, as the OpenAPI document and the answer carry it.
    pub fn problem(&self) -> Problem {
        let (slug, status) = self.kind();
        let mut problem = Problem::status(status).with_detail(self.to_string());
        problem.kind = format!("{PROBLEM_BASE}{slug}");
        problem
    }

    /// Logs `error` and answers [`AdminError::StorageUnavailable`]: the client learns only
    /// that it may try again.
    pub fn storage(what: &str, error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "{what}");
        Self::StorageUnavailable
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let mut response = self.problem().into_response();
        let headers = response.headers_mut();
        if let Some(challenge) = self.challenge() {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::PROBLEM_CONTENT_TYPE;

    async fn body(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        serde_json::from_slice(&bytes).expect("json")
    }

    #[tokio::test]
    async fn token_refusals_carry_their_challenge_and_a_stable_type() {
        let response = AdminError::InvalidToken("the access token expired".into()).into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"novads\", error=\"invalid_token\""
        );
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            PROBLEM_CONTENT_TYPE
        );
        let body = body(response).await;
        assert_eq!(body["type"], "https://novads.io/problems/invalid-token");
        assert_eq!(body["status"], 401);
        assert_eq!(body["detail"], "the access token expired");

        let response = AdminError::Forbidden("auditors change nothing".into()).into_response();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(
            response.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .expect("ascii")
                .contains("insufficient_scope")
        );
    }

    #[tokio::test]
    async fn other_refusals_have_no_challenge() {
        let response = AdminError::ClusterUnavailable("municipalities").into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().get(header::WWW_AUTHENTICATE).is_none());
        let body = body(response).await;
        assert_eq!(
            body["type"],
            "https://novads.io/problems/cluster-unavailable"
        );
        assert!(
            body["detail"]
                .as_str()
                .expect("detail")
                .contains("municipalities")
        );
    }
}
