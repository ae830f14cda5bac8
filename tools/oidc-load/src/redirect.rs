//! Recognising the redirect back to the client and reading the authorization response from it
//! (OAuth 2.0 §4.1.2, RFC 9207 `iss`). The driver never fetches the redirect URI: the browser
//! journey ends where the application would take over.

use url::Url;

use crate::outcome::{Category, FlowError, error_code};

/// Whether `location` goes to the registered `redirect_uri`: same scheme, host, port and path
/// (the query carries the response, so it is not compared).
pub fn is_redirect_target(location: &Url, redirect_uri: &Url) -> bool {
    location.scheme() == redirect_uri.scheme()
        && location.host_str() == redirect_uri.host_str()
        && location.port_or_known_default() == redirect_uri.port_or_known_default()
        && location.path() == redirect_uri.path()
}

/// Resolves a `Location` header against the URL that answered with it.
pub fn resolve_location(base: &Url, location: &str) -> Option<Url> {
    base.join(location.trim()).ok()
}

/// The authorization code of a redirect to the client, after checking `state` and, when the
/// provider sends it, `iss`. An `error` parameter becomes its own category.
pub fn authorization_code(
    location: &Url,
    expected_state: &str,
    issuer: &str,
) -> Result<String, FlowError> {
    let param = |name: &str| {
        location
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    if let Some(error) = param("error") {
        let description = param("error_description").unwrap_or_default();
        return Err(FlowError::new(
            Category::AuthorizationError(error_code(&error)),
            format!("redirect to the client with error={error}: {description}"),
        ));
    }
    if param("state").as_deref() != Some(expected_state) {
        return Err(FlowError::new(
            Category::StateMismatch,
            format!("expected state {expected_state:?} in {location}"),
        ));
    }
    if let Some(iss) = param("iss")
        && iss.trim_end_matches('/') != issuer.trim_end_matches('/')
    {
        return Err(FlowError::new(
            Category::IssuerMismatch,
            format!("iss {iss:?} is not the issuer {issuer:?}"),
        ));
    }
    match param("code").filter(|c| !c.is_empty()) {
        Some(code) => Ok(code),
        None => Err(FlowError::new(
            Category::CodeMissing,
            format!("no code in {location}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).expect("url")
    }

    #[test]
    fn redirect_targets_match_on_origin_and_path() {
        let registered = url("http://127.0.0.1/cb");
        assert!(is_redirect_target(
            &url("http://127.0.0.1:80/cb?code=x&state=y"),
            &registered
        ));
        assert!(!is_redirect_target(
            &url("http://127.0.0.1:8080/cb"),
            &registered
        ));
        assert!(!is_redirect_target(
            &url("https://127.0.0.1/cb"),
            &registered
        ));
        assert!(!is_redirect_target(
            &url("http://127.0.0.1/cb/x"),
            &registered
        ));
        assert!(!is_redirect_target(
            &url("http://127.0.0.1/oidc/login"),
            &registered
        ));
        let custom = url("lv.talsi.app:/cb");
        assert!(is_redirect_target(&url("lv.talsi.app:/cb?code=1"), &custom));
    }

    #[test]
    fn relative_locations_resolve() {
        let base = url("https://sso.example/oidc/login");
        assert_eq!(
            resolve_location(&base, "/oidc/authorize?x=1").map(String::from),
            Some("https://sso.example/oidc/authorize?x=1".to_owned())
        );
        assert_eq!(
            resolve_location(&base, "https://app.example/cb?code=c").map(String::from),
            Some("https://app.example/cb?code=c".to_owned())
        );
    }

    #[test]
    fn extracts_the_code_and_checks_state_and_issuer() {
        let issuer = "http://127.0.0.1:8080";
        let ok = url("https://app/cb?code=abc%2B1&state=s1&iss=http%3A%2F%2F127.0.0.1%3A8080");
        assert_eq!(
            authorization_code(&ok, "s1", issuer),
            Ok("abc+1".to_owned())
        );
        let no_iss = url("https://app/cb?state=s1&code=c");
        assert_eq!(
            authorization_code(&no_iss, "s1", issuer),
            Ok("c".to_owned())
        );

        let category = |u: &str, state: &str| {
            authorization_code(&url(u), state, issuer).map_err(|e| e.category)
        };
        assert_eq!(
            category("https://app/cb?code=c&state=other", "s1"),
            Err(Category::StateMismatch)
        );
        assert_eq!(
            category("https://app/cb?code=c", "s1"),
            Err(Category::StateMismatch)
        );
        assert_eq!(
            category("https://app/cb?code=c&state=s1&iss=https://evil", "s1"),
            Err(Category::IssuerMismatch)
        );
        assert_eq!(
            category("https://app/cb?state=s1", "s1"),
            Err(Category::CodeMissing)
        );
        assert_eq!(
            category("https://app/cb?state=s1&code=", "s1"),
            Err(Category::CodeMissing)
        );
        assert_eq!(
            category(
                "https://app/cb?error=access_denied&error_description=no&state=s1",
                "s1"
            ),
            Err(Category::AuthorizationError("access_denied".into()))
        );
    }
}
