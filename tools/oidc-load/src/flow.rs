//! One simulated browser and application: the authorization code flow from the authorization
//! endpoint through the login form to the token endpoint, and the refresh-token grant.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cookie_store::CookieStore;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method as HttpMethod, StatusCode};
use url::Url;

use crate::discovery::ProviderMetadata;
use crate::form::{self, FormError, Method, encode_pairs};
use crate::outcome::{Category, FlowError, Step};
use crate::pkce::{Pkce, random_token};
use crate::redirect::{authorization_code, is_redirect_target, resolve_location};
use crate::tokens::{IdTokenExpectations, Tokens, parse_token_response};
use crate::users::Credentials;

/// Redirects a browser follows before giving up (Chromium and Firefox stop at 20).
pub const MAX_REDIRECTS: usize = 20;
const ACCEPT_HTML: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `client_secret_basic`: HTTP Basic with the form-encoded id and secret.
    Basic,
    /// `client_secret_post`: id and secret in the form body.
    Post,
    /// `none`: a public client sends only its id (and PKCE proves possession).
    None,
}

impl ClientAuth {
    pub const fn as_str(self) -> &'static str {
        match self {
            ClientAuth::Basic => "client_secret_basic",
            ClientAuth::Post => "client_secret_post",
            ClientAuth::None => "none",
        }
    }
}

/// Everything about the provider and the client that every iteration shares.
#[derive(Debug, Clone)]
pub struct Target {
    pub metadata: ProviderMetadata,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub client_auth: ClientAuth,
    pub redirect_uri: Url,
    pub scope: String,
    pub username_field: String,
    pub password_field: String,
    /// Set in the login form in addition to the credentials (e.g. a realm chooser).
    pub form_fields: Vec<(String, String)>,
    /// Added to the authorization request (e.g. `ui_locales`, `acr_values`).
    pub authorize_params: Vec<(String, String)>,
    pub pkce: bool,
}

impl Target {
    fn requires_id_token(&self) -> bool {
        self.scope.split_whitespace().any(|s| s == "openid")
    }
}

/// How long each part of a complete login took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoginTimes {
    /// Authorization request to parsed login form.
    pub authorize: Duration,
    /// Form submission to the redirect carrying the code.
    pub login: Duration,
    /// Code exchange at the token endpoint.
    pub token: Duration,
}

/// Where a chain of redirects ended.
enum Landing {
    /// A redirect to the client's redirect URI (not fetched).
    Client(Url),
    /// A page that is not a redirect.
    Page { url: Url, status: u16, body: String },
}

/// One browser: a cookie jar that lives for a single login (so no single sign-on session is
/// ever reused) on top of the worker's HTTP connections.
struct Browser<'a> {
    http: &'a reqwest::Client,
    target: &'a Target,
    jar: CookieStore,
}

fn transport(step: Step, url: &Url, error: &reqwest::Error) -> FlowError {
    let category = if error.is_timeout() {
        Category::Timeout(step)
    } else {
        Category::Transport(step)
    };
    // The source chain says what actually failed (refused, reset, TLS).
    let mut detail = format!("{url}: {error}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        detail.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    FlowError::new(category, detail)
}

impl Browser<'_> {
    async fn send(
        &mut self,
        step: Step,
        method: HttpMethod,
        url: &Url,
        body: Option<&str>,
        origin: Option<&Url>,
    ) -> Result<(StatusCode, HeaderMap, String), FlowError> {
        let mut request = self
            .http
            .request(method, url.clone())
            .header(header::ACCEPT, ACCEPT_HTML);
        let cookies: Vec<String> = self
            .jar
            .get_request_values(url)
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        if !cookies.is_empty() {
            request = request.header(header::COOKIE, cookies.join("; "));
        }
        if let Some(body) = body {
            request = request
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(body.to_owned());
            if let Some(origin) = origin {
                request = request.header(header::ORIGIN, origin.origin().ascii_serialization());
            }
        }
        let response = request.send().await.map_err(|e| transport(step, url, &e))?;
        let status = response.status();
        let headers = response.headers().clone();
        for value in headers.get_all(header::SET_COOKIE) {
            if let Ok(value) = value.to_str() {
                // A cookie the jar refuses (bad domain, malformed) is dropped, as browsers do.
                let _ = self.jar.parse(value, url);
            }
        }
        // The body is read in full so that the connection can be reused.
        let body = response
            .text()
            .await
            .map_err(|e| transport(step, url, &e))?;
        Ok((status, headers, body))
    }

    /// Requests `url` and follows redirects until a page, or a redirect to the client.
    async fn follow(
        &mut self,
        step: Step,
        mut method: HttpMethod,
        mut url: Url,
        mut body: Option<String>,
        origin: Option<&Url>,
    ) -> Result<Landing, FlowError> {
        for _ in 0..=MAX_REDIRECTS {
            let (status, headers, text) = self
                .send(step, method.clone(), &url, body.as_deref(), origin)
                .await?;
            if !status.is_redirection() {
                return Ok(Landing::Page {
                    url,
                    status: status.as_u16(),
                    body: text,
                });
            }
            let location = headers
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| resolve_location(&url, l));
            let Some(location) = location else {
                return Err(FlowError::new(
                    Category::BadLocation(step),
                    format!("HTTP {status} from {url} without a usable Location"),
                ));
            };
            if is_redirect_target(&location, &self.target.redirect_uri) {
                return Ok(Landing::Client(location));
            }
            // 307 and 308 repeat the request; the others turn it into a GET.
            if !matches!(
                status,
                StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT
            ) {
                method = HttpMethod::GET;
                body = None;
            }
            url = location;
        }
        Err(FlowError::new(
            Category::TooManyRedirects(step),
            format!("more than {MAX_REDIRECTS} redirects, last to {url}"),
        ))
    }
}

/// The authorization request URL for `state`, `nonce` and the PKCE challenge.
pub fn authorization_url(target: &Target, state: &str, nonce: &str, pkce: Option<&Pkce>) -> Url {
    let mut url = target.metadata.authorization_endpoint.clone();
    {
        let mut query = url.query_pairs_mut();
        query
            .append_pair("response_type", "code")
            .append_pair("client_id", &target.client_id)
            .append_pair("redirect_uri", target.redirect_uri.as_str())
            .append_pair("scope", &target.scope)
            .append_pair("state", state)
            .append_pair("nonce", nonce);
        if let Some(pkce) = pkce {
            query
                .append_pair("code_challenge", &pkce.challenge)
                .append_pair("code_challenge_method", "S256");
        }
        for (name, value) in &target.authorize_params {
            query.append_pair(name, value);
        }
    }
    url
}

/// `Authorization: Basic` for a client (RFC 6749 2.3.1: each part form-encoded first).
pub fn basic_authorization(client_id: &str, secret: &str) -> String {
    let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", encode(client_id), encode(secret)))
    )
}

/// Posts a grant to the token endpoint with the client's authentication.
async fn token_request(
    http: &reqwest::Client,
    target: &Target,
    step: Step,
    mut params: Vec<(&str, &str)>,
) -> Result<(u16, String), FlowError> {
    let url = &target.metadata.token_endpoint;
    let mut request = http
        .post(url.clone())
        .header(header::ACCEPT, "application/json");
    match (target.client_auth, target.client_secret.as_deref()) {
        (ClientAuth::Basic, Some(secret)) => {
            let value = HeaderValue::from_str(&basic_authorization(&target.client_id, secret))
                .map_err(|e| {
                    FlowError::new(
                        Category::Transport(step),
                        format!("client credentials unusable in a header: {e}"),
                    )
                })?;
            request = request.header(header::AUTHORIZATION, value);
        }
        (ClientAuth::Post, Some(secret)) => {
            params.push(("client_id", &target.client_id));
            params.push(("client_secret", secret));
        }
        _ => params.push(("client_id", &target.client_id)),
    }
    let response = request
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(encode_pairs(params))
        .send()
        .await
        .map_err(|e| transport(step, url, &e))?;
    let status = response.status().as_u16();
    let body = response
        .text()
        .await
        .map_err(|e| transport(step, url, &e))?;
    Ok((status, body))
}

/// A complete login of `user`, like a browser without cookies, then the code exchange.
pub async fn login(
    http: &reqwest::Client,
    target: &Target,
    user: &Credentials,
) -> Result<(Tokens, LoginTimes), FlowError> {
    let random = |e: crate::error::LoadError| {
        FlowError::new(Category::Transport(Step::Authorize), e.to_string())
    };
    let state = random_token(16).map_err(random)?;
    let nonce = random_token(16).map_err(random)?;
    let pkce = if target.pkce {
        Some(Pkce::generate().map_err(random)?)
    } else {
        None
    };
    let issuer = target.metadata.issuer.as_str();
    let mut browser = Browser {
        http,
        target,
        jar: CookieStore::default(),
    };
    let started = Instant::now();

    let authorize = authorization_url(target, &state, &nonce, pkce.as_ref());
    let (page_url, html) = match browser
        .follow(Step::Authorize, HttpMethod::GET, authorize, None, None)
        .await?
    {
        Landing::Client(location) => {
            return Err(match authorization_code(&location, &state, issuer) {
                Ok(_) => FlowError::new(
                    Category::NoLoginAsked,
                    format!("a code came back without a login form: {location}"),
                ),
                Err(e) => e,
            });
        }
        Landing::Page {
            url,
            status: 200,
            body,
        } => (url, body),
        Landing::Page { url, status, body } => {
            return Err(FlowError::new(
                Category::Status(Step::Authorize, status),
                format!("HTTP {status} at {url}: {}", form::page_text(&body, 300)),
            ));
        }
    };
    let mut login_form = form::find_login_form(&html, &page_url, &target.password_field).map_err(
        |e: FormError| {
            FlowError::new(
                Category::LoginFormMissing,
                format!("{e} at {page_url}: {}", form::page_text(&html, 300)),
            )
        },
    )?;
    let authorized = Instant::now();

    login_form.set(&target.username_field, &user.username);
    login_form.set(&target.password_field, &user.password);
    for (name, value) in &target.form_fields {
        login_form.set(name, value);
    }
    let landing = match login_form.method {
        Method::Post => {
            let body = login_form.encoded();
            browser
                .follow(
                    Step::Login,
                    HttpMethod::POST,
                    login_form.action.clone(),
                    Some(body),
                    Some(&page_url),
                )
                .await?
        }
        Method::Get => {
            browser
                .follow(
                    Step::Login,
                    HttpMethod::GET,
                    login_form.get_url(),
                    None,
                    None,
                )
                .await?
        }
    };
    let code = match landing {
        Landing::Client(location) => authorization_code(&location, &state, issuer)?,
        Landing::Page { url, status, body } => {
            let category = if form::has_password_field(&body) {
                Category::LoginRejected
            } else if status == 200 {
                Category::UnexpectedPage(Step::Login)
            } else {
                Category::Status(Step::Login, status)
            };
            return Err(FlowError::new(
                category,
                format!("HTTP {status} at {url}: {}", form::page_text(&body, 300)),
            ));
        }
    };
    let logged_in = Instant::now();

    let mut params = vec![
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", target.redirect_uri.as_str()),
    ];
    if let Some(pkce) = &pkce {
        params.push(("code_verifier", pkce.verifier.as_str()));
    }
    let (status, body) = token_request(http, target, Step::Token, params).await?;
    let expect = IdTokenExpectations {
        issuer,
        client_id: &target.client_id,
        nonce: Some(&nonce),
        required: target.requires_id_token(),
    };
    let tokens = parse_token_response(Step::Token, status, &body, &expect)?;
    let finished = Instant::now();
    Ok((
        tokens,
        LoginTimes {
            authorize: authorized - started,
            login: logged_in - authorized,
            token: finished - logged_in,
        },
    ))
}

/// One refresh-token grant.
pub async fn refresh(
    http: &reqwest::Client,
    target: &Target,
    refresh_token: &str,
) -> Result<Tokens, FlowError> {
    let params = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
    ];
    let (status, body) = token_request(http, target, Step::Refresh, params).await?;
    let expect = IdTokenExpectations {
        issuer: &target.metadata.issuer,
        client_id: &target.client_id,
        nonce: None,
        required: false,
    };
    parse_token_response(Step::Refresh, status, &body, &expect)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            metadata: ProviderMetadata {
                issuer: "https://sso.example".into(),
                authorization_endpoint: Url::parse("https://sso.example/oidc/authorize?tenant=t")
                    .expect("url"),
                token_endpoint: Url::parse("https://sso.example/oidc/token").expect("url"),
                code_challenge_methods_supported: vec!["S256".into()],
                token_endpoint_auth_methods_supported: vec![],
                grant_types_supported: vec![],
            },
            client_id: "bench app".into(),
            client_secret: None,
            client_auth: ClientAuth::None,
            redirect_uri: Url::parse("http://127.0.0.1/cb").expect("url"),
            scope: "openid profile".into(),
            username_field: "username".into(),
            password_field: "password".into(),
            form_fields: vec![],
            authorize_params: vec![("ui_locales".into(), "en".into())],
            pkce: true,
        }
    }

    #[test]
    fn authorization_url_carries_the_request() {
        let pkce = Pkce {
            verifier: "v".into(),
            challenge: "c".into(),
        };
        let url = authorization_url(&target(), "s", "n", Some(&pkce));
        assert_eq!(
            url.as_str(),
            "https://sso.example/oidc/authorize?tenant=t&response_type=code&client_id=bench+app\
             &redirect_uri=http%3A%2F%2F127.0.0.1%2Fcb&scope=openid+profile&state=s&nonce=n\
             &code_challenge=c&code_challenge_method=S256&ui_locales=en"
        );
        let url = authorization_url(&target(), "s", "n", None);
        assert!(!url.as_str().contains("code_challenge"));
    }

    #[test]
    fn basic_authorization_form_encodes_both_parts() {
        // RFC 6749 2.3.1 example shape: "s6BhdRkqt3:gX1fBat3bV" → base64.
        assert_eq!(
            basic_authorization("s6BhdRkqt3", "gX1fBat3bV"),
            "Basic czZCaGRSa3F0MzpnWDFmQmF0M2JW"
        );
        let decoded = STANDARD
            .decode(basic_authorization("a:b", "p w&").trim_start_matches("Basic "))
            .expect("base64");
        assert_eq!(String::from_utf8(decoded).expect("utf8"), "a%3Ab:p+w%26");
    }

    #[test]
    fn the_id_token_is_required_only_with_openid() {
        let mut t = target();
        assert!(t.requires_id_token());
        t.scope = "profile".into();
        assert!(!t.requires_id_token());
    }
}
