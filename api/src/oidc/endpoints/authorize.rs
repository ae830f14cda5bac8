//! The authorization endpoint (OIDC Core §3.1.2): checks the request, answers at once from a
//! live single sign-on session, or seals the request into the login form (nothing stored).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;

use super::cookies::{SESSION_COOKIE, cookie};
use super::http::{header_str, user_agent};
use super::login::{login_page, redirect_with_code};
use crate::federation::audit::AuditReason;
use crate::oidc::pages::{Locale, PageError};
use crate::oidc::request::{AuthorizeParams, ErrorRedirect, RequestError, ValidRequest, validate};
use crate::oidc::sealed_request::PendingRequest;
use crate::state::AppState;

pub(super) async fn authorize_get(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(params): Query<AuthorizeParams>,
) -> Result<Response, PageError> {
    authorize(state, peer, headers, params).await
}

pub(super) async fn authorize_post(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(params): Form<AuthorizeParams>,
) -> Result<Response, PageError> {
    authorize(state, peer, headers, params).await
}

async fn authorize(
    state: AppState,
    peer: SocketAddr,
    headers: HeaderMap,
    params: AuthorizeParams,
) -> Result<Response, PageError> {
    let locale = Locale::negotiate(
        params.ui_locales.as_deref(),
        header_str(&headers, header::ACCEPT_LANGUAGE),
    );
    let request = match validate(&params, state.clients()) {
        Ok(request) => request,
        Err(RequestError::Page(message)) => return Err(PageError::BadRequest(locale, message)),
        Err(RequestError::Redirect(redirect)) => {
            return Ok(Redirect::to(&redirect.location(state.issuer())).into_response());
        }
    };
    // Single sign-on: a live session answers without the password, unless the client asks
    // for a fresh one (`prompt=login`, or `max_age` passed).
    if !request.prompt_login
        && let Some(session_id) = cookie(&headers, SESSION_COOKIE)
        && let Some(answer) =
            answer_from_session(&state, &request, session_id, locale, peer, &headers).await?
    {
        return Ok(answer);
    }
    if request.prompt_none {
        return Ok(error_to_client(
            &state,
            &request,
            "login_required",
            "the user is not signed in",
        ));
    }
    // Nothing is stored, but the login page is work done before anyone authenticated: an
    // address gets a bounded number a minute.
    if let Err(wait) = state.flows().admit_request_from(peer.ip()) {
        return Err(PageError::TryLater(
            locale,
            StatusCode::TOO_MANY_REQUESTS,
            wait.as_secs().max(1),
        ));
    }
    // The request travels sealed in the form: no write before the password is checked.
    let (pending, csrf) =
        PendingRequest::begin(&request, locale.as_str(), Utc::now().timestamp_millis())
            .map_err(|e| PageError::unavailable(locale, &e))?;
    let sealed = state
        .request_key()
        .seal(&pending)
        .map_err(|e| PageError::unavailable(locale, &e))?;
    Ok(login_page(
        &state,
        locale,
        &request.client_id,
        &sealed,
        &csrf,
        request.login_hint.as_deref().unwrap_or(""),
        None,
    ))
}

/// The answer of a live, fresh-enough session whose user the directory still vouches for:
/// a code, or `access_denied` when the client's realm does not trust the user's. `None` when
/// the password is needed.
async fn answer_from_session(
    state: &AppState,
    request: &ValidRequest,
    session_id: &str,
    locale: Locale,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<Option<Response>, PageError> {
    let store = state.flows();
    let session = store
        .session(session_id)
        .await
        .map_err(|e| PageError::unavailable(locale, &e))?;
    let fresh_enough = |auth_time: i64| {
        request.max_age.is_none_or(|max_age| {
            let age = Utc::now().timestamp().saturating_sub(auth_time);
            u64::try_from(age).unwrap_or(0) <= max_age
        })
    };
    let Some(session) = session.filter(|s| fresh_enough(s.auth_time)) else {
        return Ok(None);
    };
    let resumed = state
        .federation()
        .resume_session(
            &session.identity,
            &request.client_id,
            Some(peer.ip()),
            user_agent(headers),
        )
        .await;
    match resumed {
        Ok(identity) => {
            let pending = PendingRequest::from_valid(request, locale.as_str());
            let code = store
                .create_session_code(&pending, &identity, session.auth_time, session_id)
                .await
                .map_err(|e| PageError::unavailable(locale, &e))?;
            Ok(Some(redirect_with_code(state, &pending, &code)))
        }
        Err(refused) if refused.reason == AuditReason::TrustDenied => Ok(Some(error_to_client(
            state,
            request,
            "access_denied",
            "the user's municipality is not trusted by this application",
        ))),
        Err(_) => {
            // The directory no longer vouches for the user: the session is over.
            if let Err(e) = store.end_session(session_id).await {
                tracing::warn!(error = %e, "could not end a session");
            }
            Ok(None)
        }
    }
}

/// An error sent back to the client's redirect URI (OIDC Core 3.1.2.6).
fn error_to_client(
    state: &AppState,
    request: &ValidRequest,
    error: &'static str,
    description: &str,
) -> Response {
    let redirect = ErrorRedirect {
        redirect_uri: request.redirect_uri.clone(),
        error,
        description: description.to_owned(),
        state: request.state.clone(),
    };
    Redirect::to(&redirect.location(state.issuer())).into_response()
}
