//! Entity tags of cluster resources: their `resourceVersion`, quoted, as the `ETag` of an
//! answer, and the `If-Match` precondition a change or delete may carry (RFC 9110 13.1.1).

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::problem::AdminError;

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

/// What `If-Match` asks of the resource's current version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// `*`: any current version (the resource must exist).
    Any,
    /// One of these `resourceVersion`s.
    Versions(Vec<String>),
}

impl IfMatch {
    /// The precondition of a request; `None` without the header. A header that is not `*` or
    /// a list of strong entity tags is refused: a weak tag never matches (RFC 9110 13.1.1).
    pub fn of(headers: &HeaderMap) -> Result<Option<Self>, AdminError> {
        let mut values = headers.get_all(header::IF_MATCH).iter().peekable();
        if values.peek().is_none() {
            return Ok(None);
        }
        let mut versions = Vec::new();
        for value in values {
            let text = value.to_str().map_err(|_| malformed())?;
            for tag in text.split(',').map(str::trim) {
                if tag == "*" {
                    return Ok(Some(Self::Any));
                }
                let version = tag
                    .strip_prefix('"')
                    .and_then(|t| t.strip_suffix('"'))
                    .filter(|v| !v.is_empty() && !v.contains('"'))
                    .ok_or_else(malformed)?;
                versions.push(version.to_owned());
            }
        }
        Ok(Some(Self::Versions(versions)))
    }

    /// Whether the resource at `current` meets the precondition; otherwise `precondition-failed`
    /// and nothing is written.
    pub fn check(&self, current: Option<&str>) -> Result<(), AdminError> {
        match self {
            Self::Any => Ok(()),
            Self::Versions(versions)
                if current.is_some_and(|c| versions.iter().any(|v| v == c)) =>
            {
                Ok(())
            }
            Self::Versions(_) => Err(AdminError::PreconditionFailed(format!(
                "If-Match does not name the current version {}: it changed since it was read",
                current.map_or_else(|| "(none)".to_owned(), |c| format!("\"{c}\""))
            ))),
        }
    }

    /// The one version a delete can hand the API server as its precondition; `None` for `*`
    /// (which [`IfMatch::check`] alone decides).
    pub fn single_version(&self) -> Option<&str> {
        match self {
            Self::Versions(versions) if versions.len() == 1 => versions.first().map(String::as_str),
            _ => None,
        }
    }
}

fn malformed() -> AdminError {
    AdminError::InvalidRequest(
        "If-Match must be `*` or strong entity tags such as \"42\" (the ETag of a read)".to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                header::IF_MATCH,
                HeaderValue::from_str(value).expect("header"),
            );
        }
        headers
    }

    #[test]
    fn if_match_names_versions_or_anything() {
        assert_eq!(IfMatch::of(&headers(&[])), Ok(None));
        assert_eq!(IfMatch::of(&headers(&["*"])), Ok(Some(IfMatch::Any)));
        assert_eq!(
            IfMatch::of(&headers(&["\"7\", \"8\"", "\"9\""])),
            Ok(Some(IfMatch::Versions(vec![
                "7".into(),
                "8".into(),
                "9".into()
            ])))
        );
        for bad in ["7", "W/\"7\"", "\"\"", "\"7"] {
            assert!(IfMatch::of(&headers(&[bad])).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_the_current_version_passes() {
        let seven = IfMatch::Versions(vec!["7".into()]);
        assert_eq!(seven.check(Some("7")), Ok(()));
        assert!(matches!(
            seven.check(Some("8")),
            Err(AdminError::PreconditionFailed(_))
        ));
        assert!(seven.check(None).is_err());
        assert_eq!(IfMatch::Any.check(Some("8")), Ok(()));
        assert_eq!(seven.single_version(), Some("7"));
        assert_eq!(IfMatch::Any.single_version(), None);
    }
}
