//! Checking an authorization request (OIDC Core 3.1.2.1, RFC 7636, OAuth 2.0 Security BCP):
//! pure functions, no I/O.
//!
//! Until the client and its redirect URI are known to be genuine, an error is shown on our own
//! page — redirecting to an unverified URI would make novads an open redirector. After that,
//! errors go back to the client by redirect, as the protocol expects.

use std::collections::HashMap;

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use url::Url;

use crate::config::ClientConfig;

/// Longest value accepted for any parameter.
pub const MAX_PARAMETER_CHARS: usize = 2048;

/// The parameters of an authorization request, from the query (GET) or form (POST).
/// Unknown parameters are ignored, as OIDC Core requires.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AuthorizeParams {
    pub response_type: Option<String>,
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub prompt: Option<String>,
    pub max_age: Option<String>,
    pub login_hint: Option<String>,
    pub ui_locales: Option<String>,
    pub acr_values: Option<String>,
}

/// A checked request, ready for the login page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidRequest {
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: String,
    pub state: Option<String>,
    pub nonce: Option<String>,
    /// S256 challenge; required for public clients.
    pub code_challenge: Option<String>,
    pub login_hint: Option<String>,
    /// `prompt=none`: answer without showing anything (a session or `login_required`).
    pub prompt_none: bool,
    /// `prompt=login`: ask for the password even with a session.
    pub prompt_login: bool,
    /// Seconds since the password sign-in after which it must be asked again.
    pub max_age: Option<u64>,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// The client or redirect URI cannot be trusted: say so on our own page.
    Page(String),
    /// Tell the client, by redirect to its (verified) redirect URI.
    Redirect(ErrorRedirect),
}

/// An OAuth error returned to the client by redirect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorRedirect {
    pub redirect_uri: String,
    pub error: &'static str,
    pub description: String,
    pub state: Option<String>,
}

impl ErrorRedirect {
    /// The redirect location, with `iss` (RFC 9207) so clients can detect mix-up attacks.
    pub fn location(&self, issuer: &str) -> String {
        let mut params = vec![
            ("error", self.error.to_owned()),
            ("error_description", self.description.clone()),
        ];
        if let Some(state) = &self.state {
            params.push(("state", state.clone()));
        }
        params.push(("iss", issuer.to_owned()));
        append_query(&self.redirect_uri, &params)
    }
}

/// `uri` with `params` appended to its query.
pub fn append_query(uri: &str, params: &[(&str, String)]) -> String {
    match Url::parse(uri) {
        Ok(mut url) => {
            {
                let mut query = url.query_pairs_mut();
                for (key, value) in params {
                    query.append_pair(key, value);
                }
            }
            url.to_string()
        }
        // Registered redirect URIs were validated at load; keep the original if not.
        Err(_) => uri.to_owned(),
    }
}

/// The registered applications, by client id.
#[derive(Debug, Clone, Default)]
pub struct Clients {
    by_id: HashMap<String, ClientConfig>,
    /// Secrets that verified, so that a confidential client pays argon2 once, not per request.
    secrets: super::secrets::SecretCache,
}

impl Clients {
    pub fn new(clients: &[ClientConfig]) -> Self {
        Self {
            by_id: clients
                .iter()
                .map(|c| (c.client_id.clone(), c.clone()))
                .collect(),
            secrets: super::secrets::SecretCache::default(),
        }
    }

    /// Whether `secret` is the secret of the client `client_id` whose configured hash is
    /// `hash` (see [`super::secrets`]).
    pub async fn verify_secret(
        &self,
        client_id: &str,
        hash: &str,
        secret: String,
    ) -> super::secrets::Verified {
        self.secrets.verify(client_id, hash, secret).await
    }

    pub fn get(&self, client_id: &str) -> Option<&ClientConfig> {
        self.by_id.get(client_id)
    }
}

/// Exact match against the registered URIs; for loopback `http` URIs (native apps, RFC 8252
/// 7.3) the port may differ. No prefix, substring or wildcard matching.
pub fn redirect_uri_registered(client: &ClientConfig, requested: &str) -> bool {
    if client.redirect_uris.iter().any(|r| r == requested) {
        return true;
    }
    let Ok(requested) = Url::parse(requested) else {
        return false;
    };
    if requested.scheme() != "http" || !is_loopback(&requested) {
        return false;
    }
    client.redirect_uris.iter().any(|registered| {
        Url::parse(registered).is_ok_and(|registered| {
            registered.scheme() == "http"
                && is_loopback(&registered)
                && registered.host() == requested.host()
                && registered.path() == requested.path()
                && registered.query() == requested.query()
                && requested.fragment().is_none()
                && requested.username().is_empty()
                && requested.password().is_none()
        })
    })
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        _ => false,
    }
}

/// Checks an authorization request against the registered clients.
pub fn validate(params: &AuthorizeParams, clients: &Clients) -> Result<ValidRequest, RequestError> {
    let Some(client_id) = params.client_id.as_deref().filter(|c| !c.is_empty()) else {
        return Err(RequestError::Page(
            "The request names no application (client_id).".into(),
        ));
    };
    let Some(client) = (client_id.len() <= 128)
        .then(|| clients.get(client_id))
        .flatten()
    else {
        return Err(RequestError::Page(
            "The application is not registered here.".into(),
        ));
    };
    let Some(redirect_uri) = params.redirect_uri.as_deref() else {
        return Err(RequestError::Page(
            "The request has no redirect_uri.".into(),
        ));
    };
    if redirect_uri.len() > MAX_PARAMETER_CHARS || !redirect_uri_registered(client, redirect_uri) {
        return Err(RequestError::Page(
            "The redirect_uri is not registered for this application.".into(),
        ));
    }
    let state = params.state.clone();
    let refuse = |error: &'static str, description: &str| {
        Err(RequestError::Redirect(ErrorRedirect {
            redirect_uri: redirect_uri.to_owned(),
            error,
            description: description.to_owned(),
            state: state.clone().filter(|s| s.len() <= MAX_PARAMETER_CHARS),
        }))
    };
    let all = [
        &params.response_type,
        &params.scope,
        &params.state,
        &params.nonce,
        &params.code_challenge,
        &params.code_challenge_method,
        &params.prompt,
        &params.max_age,
        &params.login_hint,
        &params.ui_locales,
        &params.acr_values,
    ];
    if all
        .iter()
        .any(|v| v.as_ref().is_some_and(|v| v.len() > MAX_PARAMETER_CHARS))
    {
        return refuse("invalid_request", "a parameter is too long");
    }
    match params.response_type.as_deref() {
        Some("code") => {}
        None => return refuse("invalid_request", "response_type is missing"),
        Some(_) => {
            return refuse(
                "unsupported_response_type",
                "only the authorization code flow (response_type=code) is supported",
            );
        }
    }
    let scope = params.scope.clone().unwrap_or_default();
    if !scope.split_whitespace().any(|s| s == "openid") {
        return refuse("invalid_scope", "the openid scope is required");
    }
    let code_challenge = match (
        params.code_challenge.as_deref(),
        params.code_challenge_method.as_deref(),
    ) {
        (None, None) if client.public => {
            return refuse("invalid_request", "public clients must use PKCE (S256)");
        }
        (None, None) => None,
        (None, Some(_)) => return refuse("invalid_request", "code_challenge is missing"),
        (Some(_), None | Some("plain")) => {
            return refuse(
                "invalid_request",
                "code_challenge_method must be S256 (plain is not accepted)",
            );
        }
        (Some(challenge), Some("S256")) => {
            if !is_pkce_value(challenge) {
                return refuse("invalid_request", "code_challenge is malformed");
            }
            Some(challenge.to_owned())
        }
        (Some(_), Some(_)) => {
            return refuse("invalid_request", "unsupported code_challenge_method");
        }
    };
    if params
        .max_age
        .as_deref()
        .is_some_and(|v| v.parse::<u64>().is_err())
    {
        return refuse("invalid_request", "max_age must be a number of seconds");
    }
    if let Some(prompt) = params.prompt.as_deref() {
        let values: Vec<&str> = prompt.split_whitespace().collect();
        if values
            .iter()
            .any(|v| !matches!(*v, "none" | "login" | "consent" | "select_account"))
        {
            return refuse("invalid_request", "unknown prompt value");
        }
        if values.contains(&"none") && values.len() > 1 {
            return refuse("invalid_request", "prompt=none cannot be combined");
        }
    }
    let prompt = |value: &str| {
        params
            .prompt
            .as_deref()
            .is_some_and(|p| p.split_whitespace().any(|v| v == value))
    };
    Ok(ValidRequest {
        client_id: client_id.to_owned(),
        redirect_uri: redirect_uri.to_owned(),
        scope,
        state: params.state.clone(),
        nonce: params.nonce.clone(),
        code_challenge,
        login_hint: params.login_hint.clone(),
        prompt_none: prompt("none"),
        prompt_login: prompt("login"),
        max_age: params.max_age.as_deref().and_then(|v| v.parse().ok()),
    })
}

/// RFC 7636 4.1: 43 to 128 characters of `[A-Za-z0-9-._~]`.
pub fn is_pkce_value(value: &str) -> bool {
    (43..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// Does `verifier` answer `challenge` (S256)?
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    if !is_pkce_value(verifier) {
        return false;
    }
    // Both values are public once the code is used; constant time is not needed here.
    s256(verifier) == challenge
}

/// The S256 challenge of a verifier: base64url(SHA-256(verifier)).
pub fn s256(verifier: &str) -> String {
    let digest = digest::digest(&digest::SHA256, verifier.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clients() -> Clients {
        Clients::new(&[
            ClientConfig {
                client_id: "portal".into(),
                realm: "talsi".into(),
                redirect_uris: vec!["https://portal.talsi.lv/cb".into()],
                post_logout_redirect_uris: vec![],
                secret_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()),
                public: false,
                id_token_signed_response_alg: Default::default(),
            },
            ClientConfig {
                client_id: "cli".into(),
                realm: "talsi".into(),
                redirect_uris: vec!["http://127.0.0.1/callback".into()],
                post_logout_redirect_uris: vec![],
                secret_hash: None,
                public: true,
                id_token_signed_response_alg: Default::default(),
            },
        ])
    }

    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn params(client: &str, redirect: &str) -> AuthorizeParams {
        AuthorizeParams {
            response_type: Some("code".into()),
            client_id: Some(client.into()),
            redirect_uri: Some(redirect.into()),
            scope: Some("openid email".into()),
            state: Some("xyz".into()),
            nonce: Some("n-0S6_WzA2Mj".into()),
            code_challenge: Some(CHALLENGE.into()),
            code_challenge_method: Some("S256".into()),
            ..AuthorizeParams::default()
        }
    }

    #[test]
    fn a_good_request_passes() {
        let request =
            validate(&params("portal", "https://portal.talsi.lv/cb"), &clients()).expect("valid");
        assert_eq!(request.code_challenge.as_deref(), Some(CHALLENGE));
        assert_eq!(request.state.as_deref(), Some("xyz"));
    }

    #[test]
    fn unknown_clients_and_redirects_never_redirect() {
        for (client, redirect) in [
            ("nobody", "https://portal.talsi.lv/cb"),
            ("portal", "https://evil.example/cb"),
            ("portal", "https://portal.talsi.lv/cb/../evil"),
            (
                "portal",
                "https://portal.talsi.lv/cb?next=https://evil.example",
            ),
            ("portal", "https://portal.talsi.lv/cbx"),
            ("portal", "https://portal.talsi.lv.evil.example/cb"),
            ("portal", "https://portal.talsi.lv@evil.example/cb"),
            ("portal", "https://portal.talsi.lv/cb#frag"),
            ("portal", "http://portal.talsi.lv/cb"),
            ("cli", "http://127.0.0.1.evil.example/callback"),
            ("cli", "http://127.0.0.1:8000/other"),
        ] {
            let result = validate(&params(client, redirect), &clients());
            assert!(
                matches!(result, Err(RequestError::Page(_))),
                "{client} {redirect}: {result:?}"
            );
        }
        let mut no_redirect = params("portal", "x");
        no_redirect.redirect_uri = None;
        assert!(matches!(
            validate(&no_redirect, &clients()),
            Err(RequestError::Page(_))
        ));
    }

    #[test]
    fn loopback_port_may_vary_for_native_clients() {
        let request = validate(
            &params("cli", "http://127.0.0.1:53127/callback"),
            &clients(),
        );
        assert!(request.is_ok(), "{request:?}");
    }

    #[test]
    fn protocol_errors_go_back_to_the_client() {
        let redirect = |p: AuthorizeParams| match validate(&p, &clients()) {
            Err(RequestError::Redirect(r)) => r.error,
            other => panic!("expected an error redirect, got {other:?}"),
        };
        let good = || params("cli", "http://127.0.0.1/callback");
        assert_eq!(
            redirect(AuthorizeParams {
                response_type: Some("token".into()),
                ..good()
            }),
            "unsupported_response_type"
        );
        assert_eq!(
            redirect(AuthorizeParams {
                scope: Some("email".into()),
                ..good()
            }),
            "invalid_scope"
        );
        // PKCE downgrade attempts.
        assert_eq!(
            redirect(AuthorizeParams {
                code_challenge: None,
                code_challenge_method: None,
                ..good()
            }),
            "invalid_request"
        );
        assert_eq!(
            redirect(AuthorizeParams {
                code_challenge_method: Some("plain".into()),
                ..good()
            }),
            "invalid_request"
        );
        assert_eq!(
            redirect(AuthorizeParams {
                code_challenge_method: None,
                ..good()
            }),
            "invalid_request"
        );
        assert_eq!(
            redirect(AuthorizeParams {
                code_challenge: Some("short".into()),
                ..good()
            }),
            "invalid_request"
        );
        assert_eq!(
            redirect(AuthorizeParams {
                prompt: Some("none login".into()),
                ..good()
            }),
            "invalid_request"
        );
        assert_eq!(
            redirect(AuthorizeParams {
                state: Some("s".repeat(10_000)),
                ..good()
            }),
            "invalid_request"
        );
    }

    #[test]
    fn error_redirect_carries_state_and_issuer() {
        let location = ErrorRedirect {
            redirect_uri: "https://portal.talsi.lv/cb?x=1".into(),
            error: "access_denied",
            description: "no & yes".into(),
            state: Some("a b".into()),
        }
        .location("https://sso.novads.lv");
        assert_eq!(
            location,
            "https://portal.talsi.lv/cb?x=1&error=access_denied&error_description=no+%26+yes&state=a+b&iss=https%3A%2F%2Fsso.novads.lv"
        );
    }

    #[test]
    fn pkce_s256() {
        // RFC 7636 Appendix B.
        assert!(pkce_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
            CHALLENGE
        ));
        assert!(!pkce_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXj",
            CHALLENGE
        ));
        assert!(!pkce_matches("short", CHALLENGE));
    }
}
