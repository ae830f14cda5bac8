//! The admin API at `/api/v1`: one versioned, token-authorised HTTP API over the platform
//! (docs/admin-api.md).
//!
//! Read it top-down: [`authz`] decides who may do what (pure), [`principal`] turns a bearer
//! token into an authorised caller, [`problem`] words every refusal, [`rate_limit`] bounds each
//! caller, [`extract`] words bad input; the endpoint modules are thin handlers over the
//! provider's stores: [`identity`] (realms, trusts, clients, the realm test) and [`audit`] (the
//! trail: events, export, verification), and over the cluster ([`cluster`]): [`municipalities`]
//! (written by [`municipality_writes`]) and their [`servers`], the [`images`] servers are made
//! from, and [`security`] (a municipality's SecurityExemptions); [`document`] checks what
//! clients write; [`findings`] shows the security monitor's results. [`openapi`] generates the
//! contract from the handlers. Every state-changing call goes into the audit trail through
//! [`record`] before it is answered.

pub mod audit;
pub mod authz;
pub mod cluster;
pub mod document;
pub mod etag;
pub mod extract;
pub mod findings;
pub mod idempotency;
pub mod identity;
pub mod images;
pub mod municipalities;
pub mod municipality_writes;
pub mod openapi;
pub mod principal;
pub mod problem;
pub mod rate_limit;
pub mod record;
pub mod security;
pub mod servers;

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa::ToSchema;

use self::authz::{MunicipalityRoles, Principal, Role};
use self::openapi::ProblemDoc;
use self::problem::AdminError;
use crate::state::AppState;

/// Largest request body the admin API reads: its documents are small; anything bigger is a
/// mistake or an attack.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// How long one admin request may take before it is answered with a `timeout` problem.
/// Streamed exports are not cut: the limit applies until the answer starts.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// The routes under `/api/v1`, with the admin API's body limit, timeout and CORS.
pub fn routes(state: &AppState) -> Router<AppState> {
    let mut router = Router::new()
        .route("/me", get(me))
        .route("/openapi.json", get(openapi::document))
        .route("/docs", get(openapi::page))
        .merge(identity::routes())
        .merge(audit::routes())
        .merge(municipalities::routes())
        .merge(servers::routes())
        .merge(municipality_writes::routes())
        .merge(images::routes())
        .merge(security::routes())
        .merge(findings::routes())
        .fallback(not_found)
        // Set here, before the layers, so that CORS also wraps the method fallback (a
        // preflight `OPTIONS` reaches it) and the server's own fallback does not replace it.
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(time_limit))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    if let Some(cors) = cors(&state.config().admin_api.cors_origins) {
        router = router.layer(cors);
    }
    router
}

/// CORS for the configured origins only; `None` (no headers at all) when none are configured.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|origin| HeaderValue::from_str(origin).ok())
        .collect();
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::IF_MATCH,
                header::HeaderName::from_static("idempotency-key"),
            ])
            .expose_headers([header::ETAG, header::WWW_AUTHENTICATE])
            .max_age(Duration::from_secs(600)),
    )
}

async fn time_limit(request: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => AdminError::Timeout(REQUEST_TIMEOUT.as_secs()).into_response(),
    }
}

async fn not_found() -> AdminError {
    AdminError::NotFound("no such admin API resource".to_owned())
}

async fn method_not_allowed() -> AdminError {
    AdminError::MethodNotAllowed
}

/// Who the token speaks for.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeView {
    pub subject: String,
    pub client_id: String,
    pub realm: String,
    pub roles: Vec<Role>,
    /// Municipality code → the roles held there.
    pub municipalities: BTreeMap<String, MunicipalityRoles>,
}

/// Who the token speaks for and which roles it holds where.
#[utoipa::path(
    get,
    path = "/api/v1/me",
    tag = "identity",
    responses(
        (status = 200, description = "The caller", body = MeView),
        (status = 401, description = "No token, or one that is forged, expired, revoked or for another client", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Storage, the audit trail or the time limit failed", body = ProblemDoc, content_type = "application/problem+json")
    )
)]
pub(crate) async fn me(principal: Principal) -> Json<MeView> {
    Json(MeView {
        roles: principal.roles().into_iter().collect(),
        subject: principal.subject,
        client_id: principal.client_id,
        realm: principal.realm,
        municipalities: principal.municipalities,
    })
}
