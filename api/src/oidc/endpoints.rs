//! The HTTP endpoints of the provider: discovery, authorization with the login page, token,
//! userinfo and the public keys. OAuth endpoints answer errors in the OAuth format (RFC 6749
//! 5.2, RFC 6750 3) that clients expect, not as problem documents.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::extract::{ConnectInfo, Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;

use super::jwt::{ACCESS_TOKEN_TYPE, AccessTokenClaims, IdTokenClaims, at_hash};
use super::keys::{Expectations, KeyError, SigningAlgorithm};
use super::pages::{self, CSS_PATH, Locale, LoginPage};
use super::request::{AuthorizeParams, ErrorRedirect, RequestError, append_query, validate};
use super::store::{
    Exchange, FlowStore, PendingRequest, RedeemedCode, RefreshUse, ReplayedCode, Rotation,
    random_token,
};
use crate::federation::LoginRequest;
use crate::federation::audit::{AuditEvent, AuditEventKind, AuditReason};
use crate::server::AppState;

/// Lifetime of access and ID tokens.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// Name of the cookie that carries the login form's CSRF token (double submit).
const CSRF_COOKIE: &str = "novads_csrf";
/// Name of the single sign-on session cookie.
const SESSION_COOKIE: &str = "novads_session";
/// Fields longer than this are refused before any work is done.
const MAX_FIELD_CHARS: usize = 4096;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/oidc/authorize", get(authorize_get).post(authorize_post))
        .route("/oidc/login", get(login_get).post(login_post))
        .route("/oidc/token", axum::routing::post(token))
        .route("/oidc/userinfo", get(userinfo).post(userinfo))
        .route("/oidc/jwks", get(jwks))
        .route("/oidc/logout", get(logout_get).post(logout_post))
        .route("/oidc/revoke", axum::routing::post(revoke))
        .route("/oidc/introspect", axum::routing::post(introspect))
        .route(CSS_PATH, get(stylesheet))
}

fn issuer(state: &AppState) -> &str {
    state.config().server.issuer.trim_end_matches('/')
}

/// OpenID Provider metadata (OIDC Discovery 1.0 §3): only what is implemented is listed.
async fn discovery(State(state): State<AppState>) -> Response {
    let iss = issuer(&state);
    let mut response = Json(json!({
        "issuer": iss,
        "authorization_endpoint": format!("{iss}/oidc/authorize"),
        "token_endpoint": format!("{iss}/oidc/token"),
        "userinfo_endpoint": format!("{iss}/oidc/userinfo"),
        "jwks_uri": format!("{iss}/oidc/jwks"),
        "end_session_endpoint": format!("{iss}/oidc/logout"),
        "revocation_endpoint": format!("{iss}/oidc/revoke"),
        "introspection_endpoint": format!("{iss}/oidc/introspect"),
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "scopes_supported": ["openid", "profile", "email", "groups"],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "subject_types_supported": ["public"],
        // Every algorithm always has an active key, and clients choose among them
        // (`id_token_signed_response_alg`), so every one is listed.
        "id_token_signing_alg_values_supported": SigningAlgorithm::ALL,
        "userinfo_signing_alg_values_supported": ["none"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "claims_supported": [
            "iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "azp", "at_hash", "amr",
            "preferred_username", "realm", "groups", "roles", "email", "name"
        ],
        "ui_locales_supported": ["lv", "en"],
        "claims_parameter_supported": false,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "authorization_response_iss_parameter_supported": true,
    }))
    .into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

async fn jwks(State(state): State<AppState>) -> Response {
    let mut response = Json(state.keys().jwks()).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

/// Marks an answer that carries tokens or token state as never cacheable.
fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The client and the `token` parameter of a revocation or introspection request.
async fn client_and_token(
    state: &AppState,
    headers: &HeaderMap,
    form: &TokenForm,
) -> Result<(String, String), Response> {
    let client_id = authenticate_client(state, headers, form).await?;
    match form.token.as_deref().filter(|t| t.len() <= MAX_FIELD_CHARS) {
        Some(token) => Ok((client_id, token.to_owned())),
        None => Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "token is missing",
        )),
    }
}

/// Revocation (RFC 7009). A refresh token revokes its whole grant: every refresh and access
/// token of that sign-in (RFC 7009 2.1 asks for the access tokens too). An access token is
/// revoked alone, by its `jti`, until it would have expired. Only the client a token was
/// issued to can revoke it. The answer is 200 whether or not the token was known, as the RFC
/// requires.
async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Response {
    let (client_id, token) = match client_and_token(&state, &headers, &form).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let token = token.as_str();
    let store = FlowStore::new(state.db().clone());
    // An access token is recognised by its signature alone, without a database lookup.
    if let Ok(claims) = verify_access_token(&state, token) {
        if claims.client_id == client_id
            && let Err(e) = store.revoke_access_token(&claims.jti, claims.exp).await
        {
            tracing::error!(error = %e, "revoking an access token failed");
            return unavailable_token();
        }
        return no_store(StatusCode::OK.into_response());
    }
    match store.refresh_info(token).await {
        Ok(Some(info)) if info.client_id == client_id => {
            if let Err(e) = store.revoke_grant(&info.family_id).await {
                tracing::error!(error = %e, "revocation failed");
                return unavailable_token();
            }
        }
        Ok(_) => {}
        Err(e) => {
            tracing::error!(error = %e, "revocation lookup failed");
            return unavailable_token();
        }
    }
    no_store(StatusCode::OK.into_response())
}

/// Introspection (RFC 7662) for authenticated clients: access tokens by signature, expiry and
/// revocation, refresh tokens by their stored state (and only to the client they were issued
/// to).
async fn introspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Response {
    let (client_id, token) = match client_and_token(&state, &headers, &form).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let token = token.as_str();
    let body = if let Ok(claims) = verify_access_token(&state, token) {
        match access_token_revoked(&state, &claims).await {
            Ok(false) => {}
            Ok(true) => return no_store(Json(json!({ "active": false })).into_response()),
            Err(response) => return response,
        }
        json!({
            "active": true,
            "token_type": "Bearer",
            "scope": claims.scope,
            "client_id": claims.client_id,
            "sub": claims.sub,
            "aud": claims.aud,
            "iss": claims.iss,
            "exp": claims.exp,
            "iat": claims.iat,
            "jti": claims.jti,
            "realm": claims.realm,
            "groups": claims.groups.unwrap_or_default(),
            "roles": claims.roles.unwrap_or_default(),
        })
    } else {
        let store = FlowStore::new(state.db().clone());
        match store.refresh_info(token).await {
            Ok(Some(info)) if info.active && info.client_id == client_id => json!({
                "active": true,
                "token_type": "refresh_token",
                "scope": info.scope,
                "client_id": info.client_id,
                "sub": info.subject,
                "username": info.username,
                "exp": info.expires_at_ms / 1000,
                "iss": issuer(&state),
            }),
            Ok(_) => json!({ "active": false }),
            Err(e) => {
                tracing::error!(error = %e, "introspection lookup failed");
                return unavailable_token();
            }
        }
    };
    no_store(Json(body).into_response())
}

/// RP-initiated logout parameters (OpenID Connect RP-Initiated Logout 1.0 §2).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct LogoutParams {
    id_token_hint: Option<String>,
    client_id: Option<String>,
    post_logout_redirect_uri: Option<String>,
    state: Option<String>,
    ui_locales: Option<String>,
}

async fn logout_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<LogoutParams>,
) -> Response {
    logout(state, headers, params).await
}

async fn logout_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(params): Form<LogoutParams>,
) -> Response {
    logout(state, headers, params).await
}

/// Ends the browser's single sign-on session — for every application at once — and returns
/// to the application when it named a registered `post_logout_redirect_uri`.
async fn logout(state: AppState, headers: HeaderMap, params: LogoutParams) -> Response {
    let locale = Locale::negotiate(
        params.ui_locales.as_deref(),
        header_str(&headers, header::ACCEPT_LANGUAGE),
    );
    let store = FlowStore::new(state.db().clone());
    if let Some(session_id) = cookie(&headers, SESSION_COOKIE) {
        match store.session(session_id).await {
            Ok(Some(session)) => {
                let mut event = AuditEvent::new(AuditEventKind::Logout);
                event.realm = Some(session.identity.realm.clone());
                event.username = Some(session.identity.username.clone());
                event.subject = Some(session.identity.subject.clone());
                event.client_id = params.client_id.clone();
                event.user_agent = header_str(&headers, header::USER_AGENT)
                    .map(|ua| ua.chars().take(512).collect());
                if let Err(e) = state.federation().audit().append(event).await {
                    tracing::error!(error = %e, "could not audit a logout");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "could not read a session at logout"),
        }
        if let Err(e) = store.end_session(session_id).await {
            return unavailable(locale, &e);
        }
    }
    // The client is named by the ID token it issued us (expired tokens are fine here: they
    // only identify the client) or by client_id; both must agree.
    let hinted_client = params.id_token_hint.as_deref().and_then(|token| {
        let expected = Expectations::new(issuer(&state)).leeway(LOGOUT_HINT_LEEWAY);
        state
            .keys()
            .verify::<IdTokenClaims>(token, &expected)
            .ok()
            .map(|claims| claims.aud)
    });
    let client_id = match (hinted_client, params.client_id) {
        (Some(hinted), Some(named)) if hinted != named => None,
        (hinted, named) => hinted.or(named),
    };
    let redirect = client_id
        .as_deref()
        .and_then(|id| state.clients().get(id))
        .zip(params.post_logout_redirect_uri.as_deref())
        .filter(|(client, uri)| client.post_logout_redirect_uris.iter().any(|r| r == uri))
        .map(|(_, uri)| uri.to_owned());
    let mut response = match redirect {
        Some(uri) => {
            let params: Vec<(&str, String)> =
                params.state.into_iter().map(|s| ("state", s)).collect();
            Redirect::to(&append_query(&uri, &params)).into_response()
        }
        None => pages::message_page(
            StatusCode::OK,
            locale,
            locale.text().signed_out_title,
            locale.text().signed_out,
        ),
    };
    set_cookie(
        &state,
        &mut response,
        SESSION_COOKIE,
        "",
        "Path=/oidc; HttpOnly; SameSite=Lax; Max-Age=0",
    );
    response
}

/// How old an `id_token_hint` may be at logout: it only identifies the client.
const LOGOUT_HINT_LEEWAY: Duration = Duration::from_secs(24 * 60 * 60);

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        pages::STYLESHEET,
    )
        .into_response()
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn authorize_get(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(params): Query<AuthorizeParams>,
) -> Response {
    authorize(state, peer, headers, params).await
}

async fn authorize_post(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(params): Form<AuthorizeParams>,
) -> Response {
    authorize(state, peer, headers, params).await
}

async fn authorize(
    state: AppState,
    peer: SocketAddr,
    headers: HeaderMap,
    params: AuthorizeParams,
) -> Response {
    let locale = Locale::negotiate(
        params.ui_locales.as_deref(),
        header_str(&headers, header::ACCEPT_LANGUAGE),
    );
    let request = match validate(&params, state.clients()) {
        Ok(request) => request,
        Err(RequestError::Page(message)) => {
            return pages::error_page(StatusCode::BAD_REQUEST, locale, &message);
        }
        Err(RequestError::Redirect(redirect)) => {
            return Redirect::to(&redirect.location(issuer(&state))).into_response();
        }
    };
    let store = FlowStore::new(state.db().clone());
    let error_to_client = |error: &'static str, description: &str| {
        let redirect = ErrorRedirect {
            redirect_uri: request.redirect_uri.clone(),
            error,
            description: description.to_owned(),
            state: request.state.clone(),
        };
        Redirect::to(&redirect.location(issuer(&state))).into_response()
    };
    // Single sign-on: a live session answers without the password, unless the client asks
    // for a fresh one (`prompt=login`, or `max_age` passed).
    if !request.prompt_login
        && let Some(session_id) = cookie(&headers, SESSION_COOKIE)
    {
        let session = match store.session(session_id).await {
            Ok(session) => session,
            Err(e) => return unavailable(locale, &e),
        };
        let fresh_enough = |auth_time: i64| {
            request.max_age.is_none_or(|max_age| {
                let age = Utc::now().timestamp().saturating_sub(auth_time);
                u64::try_from(age).unwrap_or(0) <= max_age
            })
        };
        if let Some(session) = session.filter(|s| fresh_enough(s.auth_time)) {
            let user_agent =
                header_str(&headers, header::USER_AGENT).map(|ua| ua.chars().take(512).collect());
            match state
                .federation()
                .resume_session(
                    &session.identity,
                    &request.client_id,
                    Some(peer.ip()),
                    user_agent,
                )
                .await
            {
                Ok(identity) => {
                    let pending = PendingRequest::from_valid(&request, locale.as_str());
                    return match store
                        .create_code_at(&pending, &identity, session.auth_time)
                        .await
                    {
                        Ok(code) => redirect_with_code(&state, &pending, &code),
                        Err(e) => unavailable(locale, &e),
                    };
                }
                Err(refused) if refused.reason == AuditReason::TrustDenied => {
                    return error_to_client(
                        "access_denied",
                        "the user's municipality is not trusted by this application",
                    );
                }
                Err(_) => {
                    // The directory no longer vouches for the user: the session is over.
                    if let Err(e) = store.end_session(session_id).await {
                        tracing::warn!(error = %e, "could not end a session");
                    }
                }
            }
        }
    }
    if request.prompt_none {
        return error_to_client("login_required", "the user is not signed in");
    }
    match store.create_request(&request, locale.as_str()).await {
        Ok((id, csrf)) => login_page(
            &state,
            locale,
            &request.client_id,
            &id,
            &csrf,
            request.login_hint.as_deref().unwrap_or(""),
            None,
        ),
        Err(e) => {
            tracing::error!(error = %e, "cannot store an authorization request");
            pages::error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                locale,
                "Sign-in is temporarily unavailable.",
            )
        }
    }
}

/// The login form, with its CSRF cookie.
fn login_page(
    state: &AppState,
    locale: Locale,
    client_id: &str,
    request_id: &str,
    csrf: &str,
    username: &str,
    error: Option<&str>,
) -> Response {
    let other = match locale {
        Locale::Lv => Locale::En,
        Locale::En => Locale::Lv,
    };
    let switch_href = append_query(
        "http://x/oidc/login",
        &[
            ("request", request_id.to_owned()),
            ("lang", other.as_str().to_owned()),
        ],
    )
    .trim_start_matches("http://x")
    .to_owned();
    let mut response = pages::html(
        StatusCode::OK,
        &LoginPage {
            text: locale.text(),
            css_path: CSS_PATH,
            action: "/oidc/login",
            client_id,
            request_id,
            csrf,
            username,
            error,
            switch_href: &switch_href,
        },
    );
    set_cookie(
        state,
        &mut response,
        CSRF_COOKIE,
        csrf,
        "Path=/oidc; HttpOnly; SameSite=Strict; Max-Age=600",
    );
    response
}

/// Adds a cookie; `Secure` whenever the issuer is served over https.
fn set_cookie(
    state: &AppState,
    response: &mut Response,
    name: &str,
    value: &str,
    attributes: &str,
) {
    set_cookie_on(issuer(state), response, name, value, attributes);
}

/// [`set_cookie`] for code that has only the issuer.
pub(crate) fn set_cookie_on(
    issuer: &str,
    response: &mut Response,
    name: &str,
    value: &str,
    attributes: &str,
) {
    let secure = if issuer.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    if let Ok(header) = HeaderValue::from_str(&format!("{name}={value}; {attributes}{secure}")) {
        response.headers_mut().append(header::SET_COOKIE, header);
    }
}

/// The value of cookie `name` in the request.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

#[derive(Debug, Deserialize)]
struct LoginQuery {
    request: String,
    #[serde(default)]
    lang: Option<String>,
}

/// The login page again for a pending request (language switch, reload).
async fn login_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<LoginQuery>,
) -> Response {
    let store = FlowStore::new(state.db().clone());
    let locale = query
        .lang
        .as_deref()
        .and_then(Locale::parse)
        .unwrap_or(Locale::Lv);
    let pending = match store.request(&query.request).await {
        Ok(Some(pending)) => pending,
        Ok(None) => return expired(locale),
        Err(e) => return unavailable(locale, &e),
    };
    let locale = query
        .lang
        .as_deref()
        .and_then(Locale::parse)
        .or_else(|| Locale::parse(&pending.locale))
        .unwrap_or(Locale::Lv);
    // The browser's CSRF cookie still matches this request (a reload, a language switch): it
    // serves again without a write. Otherwise the request gets a new token.
    let current = cookie(&headers, CSRF_COOKIE)
        .filter(|csrf| csrf.len() <= 128 && super::store::hash(csrf) == pending.csrf_hash)
        .map(str::to_owned);
    let csrf = match current {
        Some(csrf) => Ok(csrf),
        None => store.renew_csrf(&query.request).await,
    };
    match csrf {
        Ok(csrf) => login_page(
            &state,
            locale,
            &pending.client_id,
            &query.request,
            &csrf,
            "",
            None,
        ),
        Err(e) => unavailable(locale, &e),
    }
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    request: String,
    csrf: String,
    username: String,
    password: String,
}

fn expired(locale: Locale) -> Response {
    pages::error_page(StatusCode::GONE, locale, locale.text().expired)
}

fn unavailable(locale: Locale, error: &dyn std::fmt::Display) -> Response {
    tracing::error!(%error, "sign-in storage unavailable");
    pages::error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        locale,
        "Sign-in is temporarily unavailable.",
    )
}

async fn login_post(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let store = FlowStore::new(state.db().clone());
    if form.request.len() > 128 || form.csrf.len() > 128 {
        return expired(Locale::Lv);
    }
    let pending = match store.request(&form.request).await {
        Ok(Some(pending)) => pending,
        Ok(None) => return expired(Locale::Lv),
        Err(e) => return unavailable(Locale::Lv, &e),
    };
    let locale = Locale::parse(&pending.locale).unwrap_or(Locale::Lv);
    // Double submit: the token in the form must be the one in our cookie and the one this
    // request was issued with, so another site cannot post a login of its choosing.
    let csrf_ok = cookie(&headers, CSRF_COOKIE) == Some(form.csrf.as_str())
        && super::store::hash(&form.csrf) == pending.csrf_hash;
    if !csrf_ok {
        return pages::error_page(StatusCode::FORBIDDEN, locale, locale.text().expired);
    }
    let too_long = form.username.len() > MAX_FIELD_CHARS || form.password.len() > MAX_FIELD_CHARS;
    let attempt = LoginRequest {
        username: form.username.chars().take(MAX_FIELD_CHARS).collect(),
        password: if too_long {
            String::new()
        } else {
            form.password.clone()
        },
        client_id: Some(pending.client_id.clone()),
        source_ip: Some(peer.ip()),
        user_agent: header_str(&headers, header::USER_AGENT)
            .map(|ua| ua.chars().take(512).collect()),
    };
    match state.federation().login(&attempt).await {
        Ok(identity) => {
            // One transaction: the request ends, the code and the single sign-on session
            // begin (a new session id at every password sign-in: a planted id is never
            // adopted).
            let completed = match store
                .complete_login(&form.request, &pending, &identity)
                .await
            {
                Ok(Some(completed)) => completed,
                // The same form was posted twice and the other post already got the code.
                Ok(None) => return expired(locale),
                Err(e) => return unavailable(locale, &e),
            };
            let mut response = redirect_with_code(&state, &pending, &completed.code);
            set_cookie(
                &state,
                &mut response,
                SESSION_COOKIE,
                &completed.session_id,
                "Path=/oidc; HttpOnly; SameSite=Lax",
            );
            response
        }
        Err(refused) if refused.reason == AuditReason::TrustDenied => {
            // The user is who they say, but this application's realm does not accept them:
            // the application is told, as OIDC Core 3.1.2.6 describes.
            let _ = store.finish_request(&form.request).await;
            let redirect = ErrorRedirect {
                redirect_uri: pending.redirect_uri.clone(),
                error: "access_denied",
                description: "the user's municipality is not trusted by this application".into(),
                state: pending.state.clone(),
            };
            Redirect::to(&redirect.location(issuer(&state))).into_response()
        }
        Err(_) => login_page(
            &state,
            locale,
            &pending.client_id,
            &form.request,
            &form.csrf,
            &attempt.username,
            Some(locale.text().wrong_credentials),
        ),
    }
}

fn redirect_with_code(state: &AppState, pending: &PendingRequest, code: &str) -> Response {
    let mut params = vec![("code", code.to_owned())];
    if let Some(s) = &pending.state {
        params.push(("state", s.clone()));
    }
    params.push(("iss", issuer(state).to_owned()));
    // 303: the browser follows with GET, never re-posting the password form.
    Redirect::to(&append_query(&pending.redirect_uri, &params)).into_response()
}

/// An OAuth error answer (RFC 6749 5.2).
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut response = (
        status,
        Json(json!({ "error": error, "error_description": description })),
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"novads\""),
        );
    }
    response
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TokenForm {
    grant_type: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token: Option<String>,
    /// `client_credentials`: the scope asked for.
    scope: Option<String>,
    /// Revocation and introspection: the token in question (`token_type_hint` is not
    /// needed: both kinds are recognised).
    token: Option<String>,
}

/// Client credentials from `Authorization: Basic` (RFC 6749 2.3.1: each part form-encoded).
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = header_str(headers, header::AUTHORIZATION)?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let decode = |s: &str| {
        url::form_urlencoded::parse(format!("v={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    };
    Some((decode(id)?, decode(secret)?))
}

async fn token(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Response {
    let grant = form.grant_type.as_deref();
    if !matches!(
        grant,
        Some("authorization_code" | "refresh_token" | "client_credentials")
    ) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "supported: authorization_code, refresh_token, client_credentials",
        );
    }
    let client_id = match authenticate_client(&state, &headers, &form).await {
        Ok(client_id) => client_id,
        Err(response) => return response,
    };
    match grant {
        Some("refresh_token") => refresh(&state, &form, client_id, peer, &headers).await,
        Some("client_credentials") => service_token(&state, &form, &client_id),
        _ => {
            let user_agent =
                header_str(&headers, header::USER_AGENT).map(|ua| ua.chars().take(512).collect());
            exchange_code(&state, &form, client_id, Some(peer.ip()), user_agent).await
        }
    }
}

/// `client_credentials`: a confidential client acting for itself (a service), never for a
/// user. Only an access token; its subject is `client:<id>` in the client's realm.
fn service_token(state: &AppState, form: &TokenForm, client_id: &str) -> Response {
    let Some(client) = state.clients().get(client_id) else {
        return client_failed();
    };
    if client.public {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "public clients cannot use client_credentials",
        );
    }
    let scope = form
        .scope
        .as_deref()
        .filter(|s| s.len() <= MAX_FIELD_CHARS)
        .unwrap_or_default()
        .to_owned();
    let now = Utc::now().timestamp();
    let Ok(jti) = random_token() else {
        return unavailable_token();
    };
    let claims = AccessTokenClaims {
        iss: issuer(state).to_owned(),
        sub: format!("client:{client_id}"),
        aud: client_id.to_owned(),
        exp: now + i64::try_from(TOKEN_LIFETIME.as_secs()).unwrap_or(600),
        iat: now,
        jti,
        grant_id: None,
        client_id: client_id.to_owned(),
        scope: scope.clone(),
        realm: client.realm.clone(),
        groups: None,
        roles: None,
    };
    match state.keys().sign_with_type(
        client.id_token_signed_response_alg,
        ACCESS_TOKEN_TYPE,
        &claims,
    ) {
        Ok(access_token) => no_store(
            Json(json!({
                "access_token": access_token,
                "token_type": "Bearer",
                "expires_in": TOKEN_LIFETIME.as_secs(),
                "scope": scope,
            }))
            .into_response(),
        ),
        Err(e) => {
            tracing::error!(error = %e, "signing a service token failed");
            unavailable_token()
        }
    }
}

/// The grant (code, refresh token) is not usable by this request.
fn invalid_grant(description: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", description)
}

fn client_failed() -> Response {
    oauth_error(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        "client authentication failed",
    )
}

fn unavailable_token() -> Response {
    oauth_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "try again",
    )
}

/// Client authentication: `client_secret_basic`, `client_secret_post`, or none for public
/// clients. Returns the authenticated client id.
async fn authenticate_client(
    state: &AppState,
    headers: &HeaderMap,
    form: &TokenForm,
) -> Result<String, Response> {
    let (client_id, secret) = match (basic_credentials(headers), &form.client_id) {
        (Some((id, secret)), body_id) => {
            if body_id.as_ref().is_some_and(|b| *b != id) {
                return Err(oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "client_id mismatch",
                ));
            }
            (id, Some(secret))
        }
        (None, Some(id)) => (id.clone(), form.client_secret.clone()),
        (None, None) => return Err(client_failed()),
    };
    let Some(client) = state.clients().get(&client_id) else {
        return Err(client_failed());
    };
    match (&client.secret_hash, secret) {
        (Some(hash), Some(secret)) if secret.len() <= MAX_FIELD_CHARS => {
            if !state
                .clients()
                .verify_secret(&client_id, hash, secret)
                .await
            {
                return Err(client_failed());
            }
        }
        (None, None) if client.public => {}
        _ => return Err(client_failed()),
    }
    Ok(client_id)
}

async fn exchange_code(
    state: &AppState,
    form: &TokenForm,
    client_id: String,
    source_ip: Option<IpAddr>,
    user_agent: Option<String>,
) -> Response {
    let Some(code) = form.code.as_deref().filter(|c| c.len() <= 128) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "code is missing",
        );
    };
    let store = FlowStore::new(state.db().clone());
    // Checked inside the redemption's transaction, so that an accepted code and its refresh
    // token commit together; a refused code stays used.
    let check = |redeemed: &RedeemedCode| -> Result<(), &'static str> {
        if redeemed.client_id != client_id {
            return Err("the code was issued to another client");
        }
        if form.redirect_uri.as_deref() != Some(redeemed.redirect_uri.as_str()) {
            return Err("redirect_uri does not match");
        }
        match (&redeemed.code_challenge, form.code_verifier.as_deref()) {
            (Some(challenge), Some(verifier))
                if super::request::pkce_matches(verifier, challenge) =>
            {
                Ok(())
            }
            (None, None) => Ok(()),
            (None, Some(_)) => Err("code_verifier sent but no code_challenge was"),
            _ => Err("PKCE verification failed"),
        }
    };
    let (redeemed, refresh_token) = match store.exchange_code(code, check).await {
        Ok(Exchange::Issued {
            redeemed,
            refresh_token,
        }) => (redeemed, refresh_token),
        Ok(Exchange::Refused(description)) => return invalid_grant(description),
        Ok(Exchange::AlreadyUsed(replayed)) => {
            // The store has already revoked every token issued from the code: whoever
            // presented it first may have been the thief (RFC 6749 4.1.2, 10.5).
            tracing::warn!(client_id = %client_id, issued_to = %replayed.client_id,
                "an authorization code was presented twice; its tokens are revoked");
            audit_code_replay(state, &client_id, &replayed, source_ip, user_agent).await;
            return invalid_grant("the code was already used");
        }
        Ok(Exchange::Expired | Exchange::Unknown) => {
            return invalid_grant("the code is invalid or expired");
        }
        Err(e) => {
            tracing::error!(error = %e, "code redemption failed");
            return unavailable_token();
        }
    };
    let grant = Grant {
        client_id: &client_id,
        identity: &redeemed.identity,
        scope: &redeemed.scope,
        nonce: redeemed.nonce.clone(),
        auth_time: redeemed.auth_time,
        grant_id: &redeemed.grant_id,
    };
    issue_tokens(state, &store, grant, refresh_token).await
}

/// A replayed code is a refusal in the audit trail: `login_failed` with reason
/// `invalid_request`, naming the user the code was issued for and the client presenting it.
/// The answer is a refusal whether or not the row could be written.
async fn audit_code_replay(
    state: &AppState,
    presenting_client: &str,
    replayed: &ReplayedCode,
    source_ip: Option<IpAddr>,
    user_agent: Option<String>,
) {
    let mut event = AuditEvent::new(AuditEventKind::LoginFailed);
    event.reason = Some(AuditReason::InvalidRequest);
    event.client_id = Some(presenting_client.to_owned());
    if let Some(identity) = &replayed.identity {
        event.realm = Some(identity.realm.clone());
        event.username = Some(identity.username.clone());
        event.subject = Some(identity.subject.clone());
    }
    event.source_ip = source_ip.map(|ip| ip.to_string());
    event.user_agent = user_agent;
    if let Err(e) = state.federation().audit().append(event).await {
        tracing::error!(error = %e, "could not audit a replayed authorization code");
    }
}

/// The demo application's token request, answered by the same code as `/oidc/token` for a
/// public client; returns the ID token.
pub(crate) async fn token_for_demo(
    state: &AppState,
    code: &str,
    redirect_uri: &str,
    verifier: &str,
) -> Option<String> {
    let form = TokenForm {
        grant_type: Some("authorization_code".to_owned()),
        code: Some(code.to_owned()),
        redirect_uri: Some(redirect_uri.to_owned()),
        code_verifier: Some(verifier.to_owned()),
        client_id: Some(crate::dev::DEMO_CLIENT.to_owned()),
        ..TokenForm::default()
    };
    let response =
        exchange_code(state, &form, crate::dev::DEMO_CLIENT.to_owned(), None, None).await;
    if !response.status().is_success() {
        return None;
    }
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .ok()?;
    let json: serde_json::Value = serde_json::from_slice(&body).ok()?;
    json["id_token"].as_str().map(str::to_owned)
}

/// `refresh_token` grant: rotate the token, re-check the user in their directory, issue new
/// tokens. A rotated token presented again revokes its family.
async fn refresh(
    state: &AppState,
    form: &TokenForm,
    client_id: String,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Response {
    let Some(token) = form.refresh_token.as_deref().filter(|t| t.len() <= 128) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "refresh_token is missing",
        );
    };
    let store = FlowStore::new(state.db().clone());
    // Looked at first and used up only after the directory re-check, so that the rotation is
    // one short write transaction that never waits for the directory.
    let usable = match store.refresh_token_usable(token).await {
        Ok(RefreshUse::Usable(usable)) => usable,
        Ok(RefreshUse::Reused { family_id }) => {
            tracing::warn!(client_id = %client_id, family = %family_id,
                "a rotated refresh token was presented again; its family is revoked");
            return invalid_grant("the refresh token was already used");
        }
        Ok(RefreshUse::Invalid) => {
            return invalid_grant("the refresh token is invalid, expired or revoked");
        }
        Err(e) => {
            tracing::error!(error = %e, "refresh token lookup failed");
            return unavailable_token();
        }
    };
    if usable.client_id != client_id {
        return invalid_grant("the refresh token was issued to another client");
    }
    let user_agent =
        header_str(headers, header::USER_AGENT).map(|ua| ua.chars().take(512).collect());
    let identity = match state
        .federation()
        .refresh(&usable.identity, &client_id, Some(peer.ip()), user_agent)
        .await
    {
        Ok(identity) => identity,
        Err(refused) => {
            // The directory no longer vouches for the user (left, disabled, moved out of the
            // trusted group): no token of this sign-in stays usable.
            if let Err(e) = store.revoke_grant(&usable.family_id).await {
                tracing::error!(error = %e, "could not revoke a refresh token family");
            }
            tracing::info!(reason = %refused.reason, "refresh refused");
            return invalid_grant("the user may no longer use this application");
        }
    };
    let refresh_token = match store.rotate_refresh_token(token, &usable, &identity).await {
        Ok(Rotation::Rotated(successor)) => successor,
        Ok(Rotation::Reused { family_id }) => {
            tracing::warn!(client_id = %client_id, family = %family_id,
                "a refresh token was presented twice at once; its family is revoked");
            // The directory re-check above was audited as a refresh; the trail must also
            // show that this one was refused.
            let mut event = AuditEvent::new(AuditEventKind::RefreshDenied);
            event.reason = Some(AuditReason::InvalidRequest);
            event.realm = Some(identity.realm.clone());
            event.username = Some(identity.username.clone());
            event.subject = Some(identity.subject.clone());
            event.client_id = Some(client_id.clone());
            event.source_ip = Some(peer.ip().to_string());
            if let Err(e) = state.federation().audit().append(event).await {
                tracing::error!(error = %e, "could not audit a reused refresh token");
            }
            return invalid_grant("the refresh token was already used");
        }
        Ok(Rotation::Invalid) => {
            return invalid_grant("the refresh token is invalid, expired or revoked");
        }
        Err(e) => {
            tracing::error!(error = %e, "rotating a refresh token failed");
            return unavailable_token();
        }
    };
    let grant = Grant {
        client_id: &client_id,
        identity: &identity,
        scope: &usable.scope,
        nonce: None,
        auth_time: usable.auth_time,
        grant_id: &usable.family_id,
    };
    issue_tokens(state, &store, grant, refresh_token).await
}

/// What a set of tokens is issued for.
struct Grant<'a> {
    client_id: &'a str,
    identity: &'a crate::federation::Identity,
    scope: &'a str,
    /// Echoed into the ID token (code flow only).
    nonce: Option<String>,
    /// Unix seconds of the password sign-in.
    auth_time: i64,
    /// The grant of the authorization code: the refresh-token family, and the access token's
    /// `grant_id` claim.
    grant_id: &'a str,
}

/// Signs the access and ID tokens with the client's algorithm and answers with them and
/// `refresh_token`, the grant's refresh token already stored — unless the grant was revoked
/// meanwhile.
async fn issue_tokens(
    state: &AppState,
    store: &FlowStore,
    grant: Grant<'_>,
    refresh_token: String,
) -> Response {
    let Grant {
        client_id,
        identity,
        scope,
        nonce,
        auth_time,
        grant_id,
    } = grant;
    // A replay of the code (or of a refresh token), or a revocation, may have revoked the
    // grant since the refresh token was stored; then no token leaves the provider. This read
    // comes after that commit: see [`FlowStore::revoke_grant`] for why the order is safe.
    match store.grant_usable(grant_id).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(client_id = %client_id, "the grant was revoked while tokens were issued");
            return invalid_grant("the grant was revoked");
        }
        Err(e) => {
            tracing::error!(error = %e, "checking a grant failed");
            return unavailable_token();
        }
    }
    let Some(client) = state.clients().get(client_id) else {
        return client_failed();
    };
    let algorithm = client.id_token_signed_response_alg;
    let now = Utc::now().timestamp();
    let exp = now + i64::try_from(TOKEN_LIFETIME.as_secs()).unwrap_or(600);
    let Ok(jti) = random_token() else {
        return unavailable_token();
    };
    let scopes: Vec<&str> = scope.split_whitespace().collect();
    let access_claims = AccessTokenClaims {
        iss: issuer(state).to_owned(),
        sub: identity.subject.clone(),
        aud: client_id.to_owned(),
        exp,
        iat: now,
        jti,
        grant_id: Some(grant_id.to_owned()),
        client_id: client_id.to_owned(),
        scope: scope.to_owned(),
        realm: identity.realm.clone(),
        groups: Some(identity.groups.clone()),
        roles: Some(identity.roles.clone()),
    };
    let access_token =
        match state
            .keys()
            .sign_with_type(algorithm, ACCESS_TOKEN_TYPE, &access_claims)
        {
            Ok(token) => token,
            Err(e) => {
                tracing::error!(error = %e, "signing an access token failed");
                return unavailable_token();
            }
        };
    let id_claims = IdTokenClaims {
        iss: issuer(state).to_owned(),
        sub: identity.subject.clone(),
        aud: client_id.to_owned(),
        exp,
        iat: now,
        auth_time: Some(auth_time),
        nonce,
        azp: Some(client_id.to_owned()),
        at_hash: Some(at_hash(&access_token, algorithm)),
        amr: Some(vec!["pwd".to_owned()]),
        preferred_username: Some(identity.username.clone()),
        realm: identity.realm.clone(),
        groups: Some(identity.groups.clone()),
        roles: Some(identity.roles.clone()),
        email: scopes
            .contains(&"email")
            .then(|| identity.email.clone())
            .flatten(),
        name: scopes
            .contains(&"profile")
            .then(|| identity.name.clone())
            .flatten(),
        ..IdTokenClaims::default()
    };
    let id_token = match state.keys().sign(algorithm, &id_claims) {
        Ok(token) => token,
        Err(e) => {
            tracing::error!(error = %e, "signing an ID token failed");
            return unavailable_token();
        }
    };
    let mut response = Json(json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": TOKEN_LIFETIME.as_secs(),
        "id_token": id_token,
        "refresh_token": refresh_token,
        "scope": scope,
    }))
    .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// The signed-in user's claims, for a valid access token (header, or form body on POST).
async fn userinfo(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let from_header = header_str(&headers, header::AUTHORIZATION)
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    // RFC 6750 2.2: a form-encoded body may carry the token instead.
    let from_body = url::form_urlencoded::parse(&body)
        .find(|(key, _)| key == "access_token")
        .map(|(_, value)| value.into_owned());
    let Some(token) = from_header.map(str::to_owned).or(from_body) else {
        return bearer_error(StatusCode::UNAUTHORIZED, None);
    };
    let claims = match verify_access_token(&state, &token) {
        Ok(claims) => claims,
        Err(e) => {
            tracing::info!(error = %e, "userinfo refused a token");
            return bearer_error(StatusCode::UNAUTHORIZED, Some("invalid_token"));
        }
    };
    match access_token_revoked(&state, &claims).await {
        Ok(false) => {}
        Ok(true) => {
            tracing::info!(jti = %claims.jti, "userinfo refused a revoked token");
            return bearer_error(StatusCode::UNAUTHORIZED, Some("invalid_token"));
        }
        Err(response) => return response,
    }
    no_store(
        Json(json!({
            "sub": claims.sub,
            "realm": claims.realm,
            "groups": claims.groups.unwrap_or_default(),
            "roles": claims.roles.unwrap_or_default(),
        }))
        .into_response(),
    )
}

/// The claims of one of this provider's access tokens: signature, issuer, type and expiry
/// checked (revocation is [`access_token_revoked`]'s question).
fn verify_access_token(state: &AppState, token: &str) -> Result<AccessTokenClaims, KeyError> {
    let expected = Expectations::new(issuer(state)).token_type(ACCESS_TOKEN_TYPE);
    state.keys().verify(token, &expected)
}

/// Whether a verified access token was revoked, alone or with its grant. A database error is
/// the 503 answer to send: a token whose revocation cannot be checked is never honoured.
async fn access_token_revoked(
    state: &AppState,
    claims: &AccessTokenClaims,
) -> Result<bool, Response> {
    FlowStore::new(state.db().clone())
        .access_token_revoked(&claims.jti, claims.grant_id.as_deref())
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "access token revocation lookup failed");
            unavailable_token()
        })
}

fn bearer_error(status: StatusCode, error: Option<&str>) -> Response {
    let challenge = match error {
        Some(error) => format!("Bearer realm=\"novads\", error=\"{error}\""),
        None => "Bearer realm=\"novads\"".to_owned(),
    };
    let mut response = status.into_response();
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}
