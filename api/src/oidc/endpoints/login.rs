//! The login form of a sealed authorization request: shown again (reload, language switch)
//! and posted, which signs the person in through the federation and answers with a code.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Form, Query, State};
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use serde::Deserialize;

use super::cookies::{CSRF_COOKIE, SESSION_COOKIE, cookie, set_cookie};
use super::http::MAX_FIELD_CHARS;
use super::http::user_agent;
use crate::federation::audit::AuditReason;
use crate::federation::{Identity, LoginRefused, LoginRequest};
use crate::lifetimes::AUTHORIZATION_REQUEST_LIFETIME;
use crate::oidc::pages::{self, CSS_PATH, Locale, LoginPage, PageError};
use crate::oidc::request::{ErrorRedirect, append_query};
use crate::oidc::sealed_request::{MAX_SEALED_CHARS, PendingRequest};
use crate::state::AppState;

/// CSRF tokens are 43 characters; anything much longer is not one. (The sealed request has
/// its own, larger bound, [`MAX_SEALED_CHARS`].)
const MAX_HANDLE_CHARS: usize = 128;

/// The login form of the sealed request `sealed_request`, with its CSRF cookie.
pub(super) fn login_page(
    state: &AppState,
    locale: Locale,
    client_id: &str,
    sealed_request: &str,
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
            ("request", sealed_request.to_owned()),
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
            sealed_request,
            csrf,
            username,
            error,
            switch_href: &switch_href,
        },
    );
    set_cookie(
        state.issuer(),
        &mut response,
        CSRF_COOKIE,
        csrf,
        &format!(
            "Path=/oidc; HttpOnly; SameSite=Strict; Max-Age={}",
            AUTHORIZATION_REQUEST_LIFETIME.as_secs()
        ),
    );
    response
}

#[derive(Debug, Deserialize)]
pub(super) struct LoginQuery {
    request: String,
    #[serde(default)]
    lang: Option<String>,
}

/// The request a login form or page address carries. One that does not open — changed,
/// truncated, sealed by another installation, expired, or longer than any sealed request —
/// is answered as an unknown or expired request: the person starts again.
fn open_request(
    state: &AppState,
    sealed: &str,
    locale: Locale,
) -> Result<PendingRequest, PageError> {
    state
        .request_key()
        .open(sealed, Utc::now().timestamp_millis())
        .map_err(|refused| {
            tracing::debug!(%refused, "a sealed authorization request was refused");
            PageError::Expired(locale)
        })
}

/// The login page again for a pending request (language switch, reload). Nothing is written.
pub(super) async fn login_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<LoginQuery>,
) -> Result<Response, PageError> {
    let asked = query.lang.as_deref().and_then(Locale::parse);
    let pending = open_request(&state, &query.request, asked.unwrap_or(Locale::Lv))?;
    let locale = asked
        .or_else(|| Locale::parse(&pending.locale))
        .unwrap_or(Locale::Lv);
    // A request that already led to a code (the back button after signing in) is over; the
    // post would be refused, so the form is not shown.
    if state
        .flows()
        .request_used(&pending)
        .await
        .map_err(|e| PageError::unavailable(locale, &e))?
    {
        return Err(PageError::Expired(locale));
    }
    // The browser's CSRF cookie still matches this request (a reload, a language switch): the
    // same sealed value serves again. Otherwise the request (same id, same expiry) is sealed
    // anew with a new token.
    let current = cookie(&headers, CSRF_COOKIE)
        .filter(|csrf| csrf.len() <= MAX_HANDLE_CHARS && pending.issued_with(csrf))
        .map(str::to_owned);
    let (sealed, csrf) = match current {
        Some(csrf) => (query.request, csrf),
        None => {
            let (renewed, csrf) = pending
                .with_new_csrf()
                .map_err(|e| PageError::unavailable(locale, &e))?;
            let sealed = state
                .request_key()
                .seal(&renewed)
                .map_err(|e| PageError::unavailable(locale, &e))?;
            (sealed, csrf)
        }
    };
    Ok(login_page(
        &state,
        locale,
        &pending.client_id,
        &sealed,
        &csrf,
        "",
        None,
    ))
}

#[derive(Debug, Deserialize)]
pub(super) struct LoginForm {
    request: String,
    csrf: String,
    username: String,
    password: String,
}

pub(super) async fn login_post(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, PageError> {
    let store = state.flows();
    if form.request.len() > MAX_SEALED_CHARS || form.csrf.len() > MAX_HANDLE_CHARS {
        return Err(PageError::Expired(Locale::Lv));
    }
    let pending = open_request(&state, &form.request, Locale::Lv)?;
    let locale = Locale::parse(&pending.locale).unwrap_or(Locale::Lv);
    // Double submit: the token in the form must be the one in our cookie and the one this
    // request was sealed with, so another site cannot post a login of its choosing.
    let csrf_ok = cookie(&headers, CSRF_COOKIE) == Some(form.csrf.as_str())
        && pending.issued_with(&form.csrf);
    if !csrf_ok {
        return Err(PageError::Forbidden(locale));
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
        user_agent: user_agent(&headers),
    };
    // One transaction: the request is marked used, the code and the single sign-on session
    // begin (a new session id at every password sign-in: a planted id is never adopted). It
    // runs while the sign-in's audit row is committed; neither is answered before both are.
    let complete = |identity: Identity| {
        let (store, pending) = (&store, &pending);
        async move { store.complete_login(pending, &identity).await }
    };
    match state.federation().login_then(&attempt, complete).await {
        Ok((_, completed)) => {
            // `None`: the same request was posted twice (or replayed) and the other post
            // already got the code.
            let completed = completed
                .map_err(|e| PageError::unavailable(locale, &e))?
                .ok_or_else(|| {
                    // The audit trail has this sign-in as successful; the log says why it
                    // yielded nothing.
                    tracing::info!(
                        client_id = %pending.client_id,
                        "an authorization request that was already used was posted again; \
                         no code issued"
                    );
                    PageError::Expired(locale)
                })?;
            let mut response = redirect_with_code(&state, &pending, &completed.code);
            set_cookie(
                state.issuer(),
                &mut response,
                SESSION_COOKIE,
                &completed.session_id,
                "Path=/oidc; HttpOnly; SameSite=Lax",
            );
            Ok(response)
        }
        Err(refused) if refused.reason == AuditReason::TrustDenied => {
            // The user is who they say, but this application's realm does not accept them:
            // the application is told, as OIDC Core 3.1.2.6 describes.
            // The request has had its answer; if marking it fails, a repost only hears the
            // same refusal again.
            if let Err(e) = store.end_request(&pending).await {
                tracing::warn!(error = %e, "could not mark an authorization request used");
            }
            let redirect = ErrorRedirect {
                redirect_uri: pending.redirect_uri.clone(),
                error: "access_denied",
                description: "the user's municipality is not trusted by this application".into(),
                state: pending.state.clone(),
            };
            Ok(Redirect::to(&redirect.location(state.issuer())).into_response())
        }
        Err(LoginRefused {
            unreachable_directory: Some(realm),
            ..
        }) => {
            // An outage, not a wrong password: said as one, so that people wait rather than
            // reset passwords. `503`: the form stays, to try again.
            let message = locale.text().directory_unreachable_for(&realm);
            let mut response = login_page(
                &state,
                locale,
                &pending.client_id,
                &form.request,
                &form.csrf,
                &attempt.username,
                Some(&message),
            );
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("30"));
            Ok(response)
        }
        Err(refused) => {
            let Some(retry_after) = refused.retry_after else {
                return Ok(login_page(
                    &state,
                    locale,
                    &pending.client_id,
                    &form.request,
                    &form.csrf,
                    &attempt.username,
                    Some(locale.text().wrong_credentials),
                ));
            };
            // The source must wait: say so now rather than hold the request open.
            let mut response = login_page(
                &state,
                locale,
                &pending.client_id,
                &form.request,
                &form.csrf,
                &attempt.username,
                Some(locale.text().too_many_attempts),
            );
            *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
            let seconds = retry_after.as_millis().div_ceil(1000).max(1);
            response.headers_mut().insert(
                RETRY_AFTER,
                HeaderValue::from(u64::try_from(seconds).unwrap_or(u64::MAX)),
            );
            Ok(response)
        }
    }
}

/// The successful answer: back to the client with the code.
pub(super) fn redirect_with_code(
    state: &AppState,
    pending: &PendingRequest,
    code: &str,
) -> Response {
    let mut params = vec![("code", code.to_owned())];
    if let Some(s) = &pending.state {
        params.push(("state", s.clone()));
    }
    params.push(("iss", state.issuer().to_owned()));
    // 303: the browser follows with GET, never re-posting the password form.
    Redirect::to(&append_query(&pending.redirect_uri, &params)).into_response()
}
