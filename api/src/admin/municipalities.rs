//! Municipalities, read from the cluster (the source of truth; the operator reconciles them).
//! Without a cluster these endpoints answer `cluster-unavailable`.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Extension, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kube::ResourceExt;
use novads_crds::Municipality;
use serde::Serialize;
use utoipa::ToSchema;

use super::authz::{Action, Principal};
use super::extract::Path;
use super::openapi::ProblemDoc;
use super::principal::Tenancy;
use super::problem::AdminError;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/municipalities", get(list_municipalities))
        .route("/municipalities/{code}", get(get_municipality))
}

/// A Municipality as the API shows it: its desired state and what the platform observed.
#[derive(Debug, Serialize, ToSchema)]
pub struct MunicipalityView {
    pub code: String,
    /// The custom resource's `resourceVersion`, also sent as the `ETag`.
    pub resource_version: Option<String>,
    /// The `spec` of the custom resource (docs/operator.md).
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
    /// The `status` the operator and the monitor wrote.
    #[schema(value_type = Option<Object>)]
    pub status: Option<serde_json::Value>,
}

impl MunicipalityView {
    fn of(municipality: &Municipality) -> Self {
        Self {
            code: municipality.spec.code.clone(),
            resource_version: municipality.resource_version(),
            spec: serde_json::to_value(&municipality.spec).unwrap_or_default(),
            status: municipality
                .status
                .as_ref()
                .and_then(|s| serde_json::to_value(s).ok()),
        }
    }
}

/// The Municipalities authorisation read, or why there are none to show.
fn listed(tenancy: Option<Extension<Tenancy>>) -> Result<Arc<Vec<Municipality>>, AdminError> {
    match tenancy {
        None => Err(AdminError::ClusterUnavailable("municipalities")),
        Some(Extension(Tenancy(Ok(municipalities)))) => Ok(municipalities),
        Some(Extension(Tenancy(Err(())))) => Err(AdminError::ClusterUnreachable),
    }
}

/// Codes are DNS labels (the Municipality CRD's rule); anything else is refused unread.
pub(super) fn check_code(code: &str) -> Result<(), AdminError> {
    let label = (2..=40).contains(&code.len())
        && code.starts_with(|c: char| c.is_ascii_lowercase())
        && !code.ends_with('-')
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if label {
        Ok(())
    } else {
        Err(AdminError::InvalidRequest(format!(
            "{code:?} is not a municipality code: 2 to 40 lowercase letters, digits and inner \
             hyphens, starting with a letter"
        )))
    }
}

/// The Municipalities the caller may read.
#[utoipa::path(
    get,
    path = "/api/v1/municipalities",
    tag = "municipalities",
    responses(
        (status = 200, description = "Every Municipality the caller holds a role in (all for platform admins and auditors)", body = Vec<MunicipalityView>),
        (status = 401, description = "No token, or one that is forged, expired, revoked or for another client", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The token holds no role", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "No cluster, or it did not answer", body = ProblemDoc, content_type = "application/problem+json")
    )
)]
pub(crate) async fn list_municipalities(
    principal: Principal,
    State(_): State<AppState>,
    tenancy: Option<Extension<Tenancy>>,
) -> Result<Json<Vec<MunicipalityView>>, AdminError> {
    let municipalities = listed(tenancy)?;
    if principal.roles().is_empty() {
        return Err(AdminError::Forbidden(
            "listing municipalities needs a role".to_owned(),
        ));
    }
    Ok(Json(
        municipalities
            .iter()
            .filter(|m| {
                principal
                    .may(Action::ReadMunicipality(&m.spec.code))
                    .is_ok()
            })
            .map(MunicipalityView::of)
            .collect(),
    ))
}

/// One Municipality, with its `resourceVersion` as the `ETag`.
#[utoipa::path(
    get,
    path = "/api/v1/municipalities/{code}",
    tag = "municipalities",
    params(("code" = String, Path, description = "Municipality code")),
    responses(
        (status = 200, description = "The Municipality", body = MunicipalityView),
        (status = 400, description = "The code is not a DNS label", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "No token, or one that is forged, expired, revoked or for another client", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "Not a municipality the caller holds a role in", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such municipality", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "No cluster, or it did not answer", body = ProblemDoc, content_type = "application/problem+json")
    )
)]
pub(crate) async fn get_municipality(
    principal: Principal,
    State(_): State<AppState>,
    tenancy: Option<Extension<Tenancy>>,
    Path(code): Path<String>,
) -> Result<Response, AdminError> {
    check_code(&code)?;
    let municipalities = listed(tenancy)?;
    principal.may(Action::ReadMunicipality(&code))?;
    let municipality = municipalities
        .iter()
        .find(|m| m.spec.code == code)
        .ok_or_else(|| AdminError::NotFound(format!("no municipality {code:?}")))?;
    let view = MunicipalityView::of(municipality);
    let etag = view
        .resource_version
        .as_ref()
        .and_then(|v| HeaderValue::from_str(&format!("\"{v}\"")).ok());
    let mut response = Json(view).into_response();
    if let Some(etag) = etag {
        response.headers_mut().insert(header::ETAG, etag);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_dns_labels() {
        for good in ["talsi", "ab", "dienvidkurzeme-2"] {
            assert!(check_code(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "a",
            "Talsi",
            "-talsi",
            "talsi-",
            "2talsi",
            "tal si",
            "t\u{e4}lsi",
        ] {
            assert!(check_code(bad).is_err(), "{bad}");
        }
    }
}
