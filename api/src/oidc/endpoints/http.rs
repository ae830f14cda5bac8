//! Small helpers over requests and answers that several endpoints share.

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;

/// Fields longer than this are refused before any work is done.
pub(super) const MAX_FIELD_CHARS: usize = 4096;
/// At most this much of a `User-Agent` goes into the audit trail.
const MAX_USER_AGENT_CHARS: usize = 512;

pub(super) fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The `User-Agent` as the audit trail records it.
pub(super) fn user_agent(headers: &HeaderMap) -> Option<String> {
    header_str(headers, header::USER_AGENT)
        .map(|ua| ua.chars().take(MAX_USER_AGENT_CHARS).collect())
}

/// Marks an answer that carries tokens or token state as never cacheable.
pub(super) fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
