//! OpenID Provider metadata (OpenID Connect Discovery 1.0): the driver knows a provider only
//! through it.

use serde::Deserialize;
use url::Url;

use crate::error::LoadError;

/// The parts of the metadata the driver uses.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ProviderMetadata {
    pub issuer: String,
    pub authorization_endpoint: Url,
    pub token_endpoint: Url,
    #[serde(default)]
    pub code_challenge_methods_supported: Vec<String>,
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Vec<String>,
    #[serde(default)]
    pub grant_types_supported: Vec<String>,
}

impl ProviderMetadata {
    /// Whether the provider says it supports PKCE with `S256`.
    pub fn supports_s256(&self) -> bool {
        self.code_challenge_methods_supported
            .iter()
            .any(|m| m == "S256")
    }

    /// Whether the token endpoint accepts `method` (the default, when the provider lists none,
    /// is `client_secret_basic`).
    pub fn accepts_auth_method(&self, method: &str) -> bool {
        if self.token_endpoint_auth_methods_supported.is_empty() {
            return method == "client_secret_basic";
        }
        self.token_endpoint_auth_methods_supported
            .iter()
            .any(|m| m == method)
    }
}

/// `<issuer>/.well-known/openid-configuration`.
pub fn discovery_url(issuer: &str) -> Result<Url, LoadError> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    Url::parse(&url).map_err(|e| LoadError::Usage(format!("issuer {issuer:?}: {e}")))
}

/// Parses a discovery document and checks that it is the issuer's own (OIDC Discovery §4.3;
/// a trailing slash is tolerated).
pub fn parse(body: &str, issuer: &str, url: &Url) -> Result<ProviderMetadata, LoadError> {
    let metadata: ProviderMetadata =
        serde_json::from_str(body).map_err(|e| LoadError::Discovery {
            url: url.to_string(),
            message: format!("not a usable provider metadata document: {e}"),
        })?;
    if metadata.issuer.trim_end_matches('/') != issuer.trim_end_matches('/') {
        return Err(LoadError::Discovery {
            url: url.to_string(),
            message: format!(
                "the document names issuer {:?}, not {issuer:?}",
                metadata.issuer
            ),
        });
    }
    Ok(metadata)
}

/// Fetches and parses the issuer's discovery document.
pub async fn discover(http: &reqwest::Client, issuer: &str) -> Result<ProviderMetadata, LoadError> {
    let url = discovery_url(issuer)?;
    let failed = |message: String| LoadError::Discovery {
        url: url.to_string(),
        message,
    };
    let response = http
        .get(url.clone())
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| failed(e.to_string()))?;
    let status = response.status();
    let body = response.text().await.map_err(|e| failed(e.to_string()))?;
    if !status.is_success() {
        return Err(failed(format!("HTTP {status}")));
    }
    parse(&body, issuer, &url)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"{
        "issuer": "http://127.0.0.1:8080",
        "authorization_endpoint": "http://127.0.0.1:8080/oidc/authorize",
        "token_endpoint": "http://127.0.0.1:8080/oidc/token",
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_post"],
        "jwks_uri": "http://127.0.0.1:8080/oidc/jwks"
    }"#;

    #[test]
    fn parses_and_checks_the_issuer() {
        let url = discovery_url("http://127.0.0.1:8080/").expect("url");
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8080/.well-known/openid-configuration"
        );
        let metadata = parse(DOC, "http://127.0.0.1:8080/", &url).expect("metadata");
        assert_eq!(
            metadata.token_endpoint.as_str(),
            "http://127.0.0.1:8080/oidc/token"
        );
        assert!(metadata.supports_s256());
        assert!(metadata.accepts_auth_method("client_secret_post"));
        assert!(!metadata.accepts_auth_method("client_secret_basic"));
        assert!(matches!(
            parse(DOC, "http://127.0.0.1:9090", &url),
            Err(LoadError::Discovery { .. })
        ));
        assert!(matches!(
            parse("{}", "http://127.0.0.1:8080", &url),
            Err(LoadError::Discovery { .. })
        ));
    }

    #[test]
    fn basic_is_the_default_auth_method() {
        let doc = r#"{"issuer":"https://i","authorization_endpoint":"https://i/a","token_endpoint":"https://i/t"}"#;
        let url = discovery_url("https://i").expect("url");
        let metadata = parse(doc, "https://i", &url).expect("metadata");
        assert!(metadata.accepts_auth_method("client_secret_basic"));
        assert!(!metadata.accepts_auth_method("client_secret_post"));
        assert!(!metadata.supports_s256());
    }
}
