//! A stand-in application for `novads dev`: it signs in through the provider exactly as a real
//! public client would (code flow with PKCE against `/oidc/authorize`, the token endpoint's own
//! code, ID token verified with the published keys) and shows who signed in.

use askama::Template;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Deserialize;

use super::DEMO_CLIENT;
use crate::oidc::endpoints::cookies::{cookie, set_cookie};
use crate::oidc::endpoints::token::{CodeRedemption, exchange_code};
use crate::oidc::jwt::IdTokenClaims;
use crate::oidc::keys::Expectations;
use crate::oidc::pages::{self, CSS_PATH, Locale};
use crate::oidc::request::{append_query, s256};
use crate::oidc::store::random_token;
use crate::state::AppState;

const FLOW_COOKIE: &str = "novads_demo_flow";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/demo/", get(home))
        .route("/demo/login", get(login))
        .route("/demo/callback", get(callback))
}

struct SignedIn {
    username: String,
    subject: String,
    realm: String,
    groups: String,
    logout_href: String,
    /// Shown so that a developer can call the admin API as this user (`novads dev` accepts
    /// the demo application's tokens there).
    access_token: String,
}

#[derive(Template)]
#[template(path = "demo.html")]
struct DemoPage<'a> {
    css_path: &'a str,
    user: Option<SignedIn>,
}

async fn home() -> Response {
    pages::html(
        StatusCode::OK,
        &DemoPage {
            css_path: CSS_PATH,
            user: None,
        },
    )
}

/// Starts a sign-in: a fresh `state` and PKCE verifier, kept in a cookie of this application.
async fn login(State(state): State<AppState>) -> Response {
    let (Ok(flow_state), Ok(verifier)) = (random_token(), random_token()) else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let challenge = s256(&verifier);
    let iss = state.issuer();
    let location = append_query(
        &format!("{iss}/oidc/authorize"),
        &[
            ("response_type", "code".to_owned()),
            ("client_id", DEMO_CLIENT.to_owned()),
            ("redirect_uri", format!("{iss}/demo/callback")),
            ("scope", "openid profile email".to_owned()),
            ("state", flow_state.clone()),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256".to_owned()),
        ],
    );
    let mut response = Redirect::to(&location).into_response();
    set_cookie(
        iss,
        &mut response,
        FLOW_COOKIE,
        &format!("{flow_state}.{verifier}"),
        "Path=/demo; HttpOnly; SameSite=Lax; Max-Age=600",
    );
    response
}

#[derive(Debug, Deserialize)]
struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(callback): Query<Callback>,
) -> Response {
    let refused = |message: &str| pages::error_page(StatusCode::BAD_REQUEST, Locale::En, message);
    if let Some(error) = callback.error {
        return refused(&format!("The sign-in ended with: {error}"));
    }
    let Some((expected_state, verifier)) =
        cookie(&headers, FLOW_COOKIE).and_then(|v| v.split_once('.'))
    else {
        return refused("No sign-in was started from this browser.");
    };
    if callback.state.as_deref() != Some(expected_state) {
        return refused("The sign-in answer does not belong to this browser (state mismatch).");
    }
    let Some(code) = callback.code else {
        return refused("The sign-in answer has no code.");
    };
    let iss = state.issuer();
    // The token endpoint's own code, for a public client without a secret.
    let redirect_uri = format!("{iss}/demo/callback");
    let redemption = CodeRedemption {
        client_id: DEMO_CLIENT.to_owned(),
        code: Some(&code),
        redirect_uri: Some(&redirect_uri),
        code_verifier: Some(verifier),
        source_ip: None,
        user_agent: None,
    };
    let Some((id_token, access_token)) = exchange_code(&state, redemption)
        .await
        .ok()
        .and_then(|tokens| Some((tokens.id_token?, tokens.access_token)))
    else {
        return refused("The code could not be exchanged for tokens.");
    };
    let expected = Expectations::new(iss).audience(DEMO_CLIENT);
    let Ok(claims) = state.keys().verify::<IdTokenClaims>(&id_token, &expected) else {
        return refused("The ID token did not verify.");
    };
    let logout_href = append_query(
        &format!("{iss}/oidc/logout"),
        &[
            ("id_token_hint", id_token.clone()),
            ("post_logout_redirect_uri", format!("{iss}/demo/")),
        ],
    );
    let user = SignedIn {
        username: claims.preferred_username.unwrap_or_default(),
        subject: claims.sub,
        realm: claims.realm,
        groups: claims.groups.unwrap_or_default().join(", "),
        logout_href,
        access_token,
    };
    pages::html(
        StatusCode::OK,
        &DemoPage {
            css_path: CSS_PATH,
            user: Some(user),
        },
    )
}
