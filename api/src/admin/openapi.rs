//! The admin API's contract, generated from the handlers and types themselves: the OpenAPI 3.1
//! document at `/api/v1/openapi.json` and a readable page of it at `/api/v1/docs`, served from
//! this process alone (no script, font or style from elsewhere).

use askama::Template;
use axum::Json;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, PathItem};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};

use super::{
    audit, findings, identity, images, municipalities, municipality_writes, security, servers,
};
use crate::oidc::pages::{self, CSS_PATH};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "novads admin API",
        version = "1",
        description = "One authorised API over the platform's identity configuration, audit \
                       trail and resources (docs/admin-api.md)."
    ),
    paths(
        super::me,
        identity::list_realms,
        identity::get_realm,
        identity::test_realm,
        identity::list_trusts,
        identity::list_clients,
        identity::get_client,
        audit::events,
        audit::export,
        audit::verify,
        municipalities::list_municipalities,
        municipalities::get_municipality,
        municipality_writes::create_municipality,
        municipality_writes::replace_municipality,
        municipality_writes::patch_municipality,
        municipality_writes::delete_municipality,
        servers::list_servers,
        servers::get_server,
        servers::create_server,
        servers::replace_server,
        servers::patch_server,
        servers::delete_server,
        servers::power_server,
        images::list_images,
        images::get_image,
        images::create_image,
        images::replace_image,
        images::patch_image,
        images::delete_image,
        security::list_exemptions,
        security::grant_exemption,
        security::revoke_exemption,
        findings::results,
        findings::compliance,
    ),
    components(schemas(servers::document::PowerAction)),
    modifiers(&BearerTokens),
    security(("bearer" = []))
)]
pub struct AdminApiDoc;

/// Declares the bearer scheme every operation requires.
struct BearerTokens;

impl Modify for BearerTokens {
    fn modify(&self, document: &mut Document) {
        let components = document.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An access token of novads issued to a client in admin_api.clients",
                    ))
                    .build(),
            ),
        );
    }
}

/// An RFC 9457 problem document, as every refusal is answered.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProblemDoc {
    /// A stable URI naming the problem, e.g. `https://novads.io/problems/forbidden`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: Option<String>,
}

/// The refusals every authorised endpoint may answer, documented once for its `responses`.
#[derive(IntoResponses)]
pub enum Refusals {
    #[response(
        status = 401,
        description = "No token, or one that is forged, expired, revoked or for another client",
        content_type = "application/problem+json"
    )]
    Unauthorized(ProblemDoc),
    #[response(
        status = 403,
        description = "The token's roles do not allow this",
        content_type = "application/problem+json"
    )]
    Forbidden(ProblemDoc),
    #[response(
        status = 429,
        description = "The caller's rate limit is spent; `Retry-After` says when to come back",
        content_type = "application/problem+json"
    )]
    TooManyRequests(ProblemDoc),
    #[response(
        status = 503,
        description = "Storage, the audit trail or the time limit failed",
        content_type = "application/problem+json"
    )]
    Unavailable(ProblemDoc),
}

/// A row of the audit trail, as `federation/audit.rs` stores and hashes it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventDoc {
    pub id: i64,
    /// RFC 3339 UTC with microseconds.
    pub at: String,
    pub event: String,
    pub realm: Option<String>,
    pub username: Option<String>,
    pub subject: Option<String>,
    pub client_id: Option<String>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub reason: Option<String>,
    pub directory: Option<String>,
    pub latency_ms: i64,
    pub prev_hash: String,
    pub hash: String,
    /// A JSON object as text, on `admin_action` rows: role, action, target, outcome.
    pub detail: Option<String>,
}

/// `GET /api/v1/openapi.json`.
pub async fn document() -> Json<Document> {
    Json(AdminApiDoc::openapi())
}

/// One operation on the docs page.
struct OperationLine {
    method: &'static str,
    path: String,
    summary: String,
    description: String,
    /// Name, where it goes, description.
    parameters: Vec<(String, String, String)>,
    statuses: Vec<String>,
}

#[derive(Template)]
#[template(path = "admin_docs.html")]
struct DocsPage<'a> {
    css_path: &'a str,
    title: String,
    version: String,
    description: String,
    operations: Vec<OperationLine>,
}

/// `GET /api/v1/docs`: the document as a page.
pub async fn page() -> Response {
    let document = AdminApiDoc::openapi();
    let operations = document
        .paths
        .paths
        .iter()
        .flat_map(|(path, item)| operations_of(path, item))
        .collect();
    pages::html(
        StatusCode::OK,
        &DocsPage {
            css_path: CSS_PATH,
            title: document.info.title.clone(),
            version: document.info.version.clone(),
            description: document.info.description.clone().unwrap_or_default(),
            operations,
        },
    )
}

fn operations_of(path: &str, item: &PathItem) -> Vec<OperationLine> {
    [
        ("GET", &item.get),
        ("POST", &item.post),
        ("PUT", &item.put),
        ("PATCH", &item.patch),
        ("DELETE", &item.delete),
    ]
    .into_iter()
    .filter_map(|(method, operation)| {
        let operation = operation.as_ref()?;
        Some(OperationLine {
            method,
            path: path.to_owned(),
            summary: operation.summary.clone().unwrap_or_default(),
            description: operation.description.clone().unwrap_or_default(),
            parameters: operation
                .parameters
                .iter()
                .flatten()
                .map(|p| {
                    let place = serde_json::to_value(&p.parameter_in)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default();
                    (
                        p.name.clone(),
                        place,
                        p.description.clone().unwrap_or_default(),
                    )
                })
                .collect(),
            statuses: operation.responses.responses.keys().cloned().collect(),
        })
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_with_every_route_and_the_bearer_scheme() {
        let document = serde_json::to_value(AdminApiDoc::openapi()).expect("serialises");
        assert!(
            document["openapi"]
                .as_str()
                .expect("version")
                .starts_with("3.1")
        );
        let paths = document["paths"].as_object().expect("paths");
        for path in [
            "/api/v1/me",
            "/api/v1/realms",
            "/api/v1/realms/{name}",
            "/api/v1/realms/{name}/test",
            "/api/v1/trusts",
            "/api/v1/clients",
            "/api/v1/clients/{client_id}",
            "/api/v1/audit/events",
            "/api/v1/audit/export",
            "/api/v1/audit/verify",
            "/api/v1/municipalities",
            "/api/v1/municipalities/{code}",
            "/api/v1/municipalities/{code}/servers",
            "/api/v1/municipalities/{code}/servers/{name}",
            "/api/v1/municipalities/{code}/servers/{name}/{action}",
            "/api/v1/images",
            "/api/v1/images/{name}",
        ] {
            assert!(paths.contains_key(path), "{path} missing");
        }
        assert_eq!(
            document["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
    }
}
