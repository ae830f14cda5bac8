//! RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0): ends the browser's single
//! sign-on session — for every application at once — and returns to the application when it
//! named a registered `post_logout_redirect_uri`.
//!
//! A logout request without a valid `id_token_hint` may come from any page on the web (a link
//! or image on another site), so it ends nothing by itself: the user is asked on a page whose
//! form carries a CSRF token (double submit, as §2 of the specification suggests).

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::cookies::{LOGOUT_CSRF_COOKIE, SESSION_COOKIE, cookie, set_cookie};
use super::http::{header_str, user_agent};
use crate::federation::audit::{AuditEvent, AuditEventKind};
use crate::lifetimes::LOGOUT_HINT_LEEWAY;
use crate::oidc::jwt::IdTokenClaims;
use crate::oidc::keys::Expectations;
use crate::oidc::pages::{self, CSS_PATH, Locale, LogoutConfirmPage, PageError};
use crate::oidc::request::append_query;
use crate::oidc::store::random_token;
use crate::state::AppState;

/// RP-initiated logout parameters (§2).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct LogoutParams {
    id_token_hint: Option<String>,
    client_id: Option<String>,
    post_logout_redirect_uri: Option<String>,
    state: Option<String>,
    ui_locales: Option<String>,
    /// Present on the confirmation form only.
    csrf: Option<String>,
}

pub(super) async fn logout_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<LogoutParams>,
) -> Result<Response, PageError> {
    logout(state, headers, params).await
}

pub(super) async fn logout_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(params): Form<LogoutParams>,
) -> Result<Response, PageError> {
    logout(state, headers, params).await
}

async fn logout(
    state: AppState,
    headers: HeaderMap,
    params: LogoutParams,
) -> Result<Response, PageError> {
    let locale = Locale::negotiate(
        params.ui_locales.as_deref(),
        header_str(&headers, header::ACCEPT_LANGUAGE),
    );
    // The client is named by the ID token it issued us (expired tokens are fine here: they
    // only identify the client) or by client_id; both must agree.
    let hinted_client = params.id_token_hint.as_deref().and_then(|token| {
        let expected = Expectations::new(state.issuer()).leeway(LOGOUT_HINT_LEEWAY);
        state
            .keys()
            .verify::<IdTokenClaims>(token, &expected)
            .ok()
            .map(|claims| claims.aud)
    });
    let client_id = match (hinted_client.clone(), params.client_id) {
        (Some(hinted), Some(named)) if hinted != named => None,
        (hinted, named) => hinted.or(named),
    };
    // The audit trail names a client only when our own signature vouches for it: a bare
    // `client_id` is whatever the link's author typed.
    let verified_client = hinted_client.filter(|hinted| client_id.as_ref() == Some(hinted));
    let session = cookie(&headers, SESSION_COOKIE);
    let confirmed = params
        .csrf
        .as_deref()
        .is_some_and(|csrf| !csrf.is_empty() && cookie(&headers, LOGOUT_CSRF_COOKIE) == Some(csrf));
    if session.is_some() && verified_client.is_none() && !confirmed {
        return confirmation(
            &state,
            locale,
            client_id.as_deref(),
            params.post_logout_redirect_uri.as_deref(),
            params.state.as_deref(),
        );
    }
    if let Some(session_id) = session {
        end_session(&state, session_id, verified_client.as_deref(), &headers)
            .await
            .map_err(|e| PageError::unavailable(locale, &e))?;
    }
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
        state.issuer(),
        &mut response,
        SESSION_COOKIE,
        "",
        "Path=/oidc; HttpOnly; SameSite=Lax; Max-Age=0",
    );
    if confirmed {
        set_cookie(
            state.issuer(),
            &mut response,
            LOGOUT_CSRF_COOKIE,
            "",
            "Path=/oidc/logout; HttpOnly; SameSite=Strict; Max-Age=0",
        );
    }
    Ok(response)
}

/// The question, with a fresh CSRF token in the form and in a cookie only this form's post
/// carries back.
fn confirmation(
    state: &AppState,
    locale: Locale,
    client_id: Option<&str>,
    post_logout_redirect_uri: Option<&str>,
    state_param: Option<&str>,
) -> Result<Response, PageError> {
    let csrf = random_token().map_err(|e| PageError::unavailable(locale, &e))?;
    let text = locale.text();
    let mut response = pages::html(
        StatusCode::OK,
        &LogoutConfirmPage {
            lang: text.lang,
            css_path: CSS_PATH,
            title: text.signed_out_title,
            question: text.sign_out_question,
            button: text.sign_out_button,
            csrf: &csrf,
            client_id,
            post_logout_redirect_uri,
            state: state_param,
        },
    );
    set_cookie(
        state.issuer(),
        &mut response,
        LOGOUT_CSRF_COOKIE,
        &csrf,
        "Path=/oidc/logout; HttpOnly; SameSite=Strict",
    );
    Ok(response)
}

/// Records the logout of a live session in the audit trail and ends the session. Only ending
/// it can fail the logout: an audit or read failure is logged and the session ends anyway.
async fn end_session(
    state: &AppState,
    session_id: &str,
    client_id: Option<&str>,
    headers: &HeaderMap,
) -> Result<(), crate::oidc::store::StoreError> {
    let store = state.flows();
    match store.session(session_id).await {
        Ok(Some(session)) => {
            let mut event = AuditEvent::new(AuditEventKind::Logout);
            event.realm = Some(session.identity.realm.clone());
            event.username = Some(session.identity.username.clone());
            event.subject = Some(session.identity.subject.clone());
            event.client_id = client_id.map(str::to_owned);
            event.user_agent = user_agent(headers);
            if let Err(e) = state.federation().audit().append(event).await {
                tracing::error!(error = %e, "could not audit a logout");
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "could not read a session at logout"),
    }
    store.log_out(session_id).await
}
