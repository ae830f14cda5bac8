//! The ServerImages the platform offers (cluster-wide): read by every role, written by platform
//! admins, the same way as Municipalities and servers: server-side apply of the whole spec by
//! `novads-api`, guarded by the `resourceVersion` just read (and `If-Match`), creates with an
//! optional `Idempotency-Key`, every write in the audit trail.

use std::sync::OnceLock;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use novads_crds::{ServerImage, ServerImageSpec};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::authz::{Action, Principal, Role};
use super::cluster::{self, FIELD_MANAGER};
use super::document::{self, BadDocument};
use super::etag::{IfMatch, tagged};
use super::extract::{JsonBody, Path};
use super::idempotency;
use super::openapi::{ProblemDoc, Refusals};
use super::problem::AdminError;
use super::record::{self, AdminAct, Peer};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/images", get(list_images).post(create_image))
        .route(
            "/images/{name}",
            get(get_image)
                .put(replace_image)
                .patch(patch_image)
                .delete(delete_image),
        )
}

/// A ServerImage as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImageView {
    pub name: String,
    /// The custom resource's `resourceVersion`, also sent as the `ETag`.
    pub resource_version: Option<String>,
    /// The ServerImage's `spec` (docs/operator.md).
    #[schema(value_type = Object)]
    pub spec: Value,
}

impl ImageView {
    fn of(image: &ServerImage) -> Self {
        Self {
            name: image.name_any(),
            resource_version: image.resource_version(),
            spec: serde_json::to_value(&image.spec).unwrap_or_default(),
        }
    }

    fn answer(image: &ServerImage, status: StatusCode) -> Response {
        let view = Self::of(image);
        let version = view.resource_version.clone();
        tagged(status, view, version.as_deref())
    }
}

/// A ServerImage as a client writes it; in a `PATCH`, `spec` is a JSON merge patch (RFC 7386)
/// of the current spec.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageDocument {
    /// The image's name (a DNS subdomain, e.g. `debian-12`), which servers name in
    /// `spec.image`. Required to create; elsewhere, when given, it must be the name in the path.
    #[serde(default)]
    pub name: Option<String>,
    /// The ServerImage's `spec` (docs/operator.md).
    #[schema(value_type = Object)]
    pub spec: Value,
}

/// The spec schema of the ServerImage CRD (crds/src/server_image.rs), read once.
fn spec_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(document::spec_schema::<ServerImage>)
}

/// The image a document speaks of, checked against the path's name when there is one. Pure.
pub fn target(written: &ImageDocument, path_name: Option<&str>) -> Result<String, BadDocument> {
    let name = match (&written.name, path_name) {
        (Some(body), Some(path)) if body != path => {
            return Err(BadDocument::Mismatch {
                what: "image",
                body: body.clone(),
                path: path.to_owned(),
            });
        }
        (_, Some(path)) => path.to_owned(),
        (Some(body), None) => body.clone(),
        (None, None) => return Err(BadDocument::Missing("image", "name")),
    };
    document::check_subdomain("image", &name)?;
    Ok(name)
}

/// The ServerImages, once the caller may `action` them and there is a cluster.
fn images(
    state: &AppState,
    principal: &Principal,
    action: Action<'_>,
) -> Result<(Role, Api<ServerImage>), AdminError> {
    let allowed = principal.may(action)?;
    let client = state
        .cluster()
        .ok_or(AdminError::ClusterUnavailable("images"))?;
    Ok((allowed.role, Api::all(client.clone())))
}

fn act<'a>(principal: &'a Principal, peer: Peer, action: &'static str, name: &str) -> AdminAct<'a> {
    AdminAct {
        principal,
        peer,
        role: None,
        action,
        target: if name.is_empty() {
            "image".to_owned()
        } else {
            format!("image/{name}")
        },
        realm: None,
        outcome: String::new(),
    }
}

async fn current(api: &Api<ServerImage>, name: &str) -> Result<ServerImage, AdminError> {
    api.get(name)
        .await
        .map_err(|e| cluster::refusal(&format!("image {name:?}"), e))
}

async fn apply(
    api: &Api<ServerImage>,
    name: &str,
    spec: ServerImageSpec,
    resource_version: Option<String>,
) -> Result<ServerImage, AdminError> {
    let mut image = ServerImage::new(name, spec);
    image.metadata.resource_version = resource_version;
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER),
        &Patch::Apply(&image),
    )
    .await
    .map_err(|e| cluster::refusal(&format!("image {name:?}"), e))
}

/// The images the platform offers.
#[utoipa::path(
    get,
    path = "/api/v1/images",
    tag = "images",
    responses(
        (status = 200, description = "Every ServerImage", body = Vec<ImageView>),
        Refusals
    )
)]
pub(crate) async fn list_images(
    principal: Principal,
    State(state): State<AppState>,
) -> Result<axum::Json<Vec<ImageView>>, AdminError> {
    let (_, api) = images(&state, &principal, Action::ReadImages)?;
    let listed = api
        .list(&ListParams::default())
        .await
        .map_err(|e| cluster::refusal("the images", e))?;
    Ok(axum::Json(listed.iter().map(ImageView::of).collect()))
}

/// One image, with its `resourceVersion` as the `ETag`.
#[utoipa::path(
    get,
    path = "/api/v1/images/{name}",
    tag = "images",
    params(("name" = String, Path, description = "Image name")),
    responses(
        (status = 200, description = "The image", body = ImageView),
        (status = 400, description = "The name is not a DNS subdomain", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such image", body = ProblemDoc, content_type = "application/problem+json"),
        Refusals
    )
)]
pub(crate) async fn get_image(
    principal: Principal,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, AdminError> {
    let (_, api) = images(&state, &principal, Action::ReadImages)?;
    document::check_subdomain("image", &name)?;
    Ok(ImageView::answer(
        &current(&api, &name).await?,
        StatusCode::OK,
    ))
}

/// Adds an image from `{"name", "spec"}`.
#[utoipa::path(
    post,
    path = "/api/v1/images",
    tag = "images",
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "A key of the caller's choice (e.g. a UUID): the same request with the same key within 24 hours gets the first answer, without a second write")
    ),
    request_body = ImageDocument,
    responses(
        (status = 201, description = "Created: the image as stored, its address in `Location`", body = ImageView),
        (status = 400, description = "Unknown fields, wrong types or a name that is not a DNS subdomain", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "An image of that name exists", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "The body is not JSON", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "The Idempotency-Key was used for another request", body = ProblemDoc, content_type = "application/problem+json"),
        Refusals
    )
)]
pub(crate) async fn create_image(
    principal: Principal,
    peer: Peer,
    State(state): State<AppState>,
    headers: HeaderMap,
    // Taken as a `Result` so that a body of another type is an audited refusal too.
    body: Result<JsonBody, AdminError>,
) -> Result<Response, AdminError> {
    let key = match idempotency::key_of(&headers) {
        Ok(key) => key,
        Err(bad) => {
            let act = act(&principal, peer, "image.create", "");
            return Err(record::refuse(&state, act, bad).await);
        }
    };
    let fingerprint = idempotency::fingerprint(
        "POST",
        "/api/v1/images",
        body.as_ref()
            .map(|JsonBody(b)| b.as_ref())
            .unwrap_or_default(),
    );
    let create = create_once(&principal, peer, &state, body);
    idempotency::once(state.db(), &principal.subject, key, &fingerprint, create).await
}

/// [`create_image`] once its `Idempotency-Key` allows it to run.
async fn create_once(
    principal: &Principal,
    peer: Peer,
    state: &AppState,
    body: Result<JsonBody, AdminError>,
) -> Result<Response, AdminError> {
    let mut act = act(principal, peer, "image.create", "");
    let result = async {
        let (role, api) = images(state, principal, Action::WriteImages)?;
        let JsonBody(body) = body?;
        let written: ImageDocument = document::parse("image", &body)?;
        let name = target(&written, None)?;
        let spec = document::spec(&written.spec, spec_schema())?;
        match api.get_opt(&name).await {
            Ok(None) => {}
            Ok(Some(_)) => {
                return Err(AdminError::Conflict(format!(
                    "image {name:?} exists already"
                )));
            }
            Err(e) => return Err(cluster::refusal(&format!("image {name:?}"), e)),
        }
        let stored = apply(&api, &name, spec, None).await?;
        Ok((role, "created", stored))
    }
    .await;
    if let Ok((_, _, stored)) = &result {
        act.target = format!("image/{}", stored.name_any());
    }
    let stored = record::settle(state, act, result).await?;
    let mut response = ImageView::answer(&stored, StatusCode::CREATED);
    if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/images/{}", stored.name_any())) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Replaces or patches image `name`: the write both share.
async fn change(
    principal: &Principal,
    peer: Peer,
    state: &AppState,
    name: &str,
    headers: &HeaderMap,
    body: Result<JsonBody, AdminError>,
    patch: bool,
) -> Result<Response, AdminError> {
    let action = if patch {
        "image.patch"
    } else {
        "image.replace"
    };
    let act = act(principal, peer, action, name);
    let result = async {
        let (role, api) = images(state, principal, Action::WriteImages)?;
        let JsonBody(body) = body?;
        let written: ImageDocument = document::parse("image", &body)?;
        target(&written, Some(name))?;
        let precondition = IfMatch::of(headers)?;
        let before = current(&api, name).await?;
        if let Some(precondition) = &precondition {
            precondition.check(before.resource_version().as_deref())?;
        }
        let spec: ServerImageSpec = if patch {
            document::patched(&before.spec, &written.spec, spec_schema())?
        } else {
            document::spec(&written.spec, spec_schema())?
        };
        let stored = apply(&api, name, spec, before.resource_version()).await?;
        Ok((role, if patch { "patched" } else { "replaced" }, stored))
    }
    .await;
    let stored = record::settle(state, act, result).await?;
    Ok(ImageView::answer(&stored, StatusCode::OK))
}

/// Replaces an image's spec with `{"spec"}`.
#[utoipa::path(
    put,
    path = "/api/v1/images/{name}",
    tag = "images",
    params(
        ("name" = String, Path, description = "Image name"),
        ("If-Match" = Option<String>, Header, description = "The image's `ETag`: refused with 412 if it changed since")
    ),
    request_body = ImageDocument,
    responses(
        (status = 200, description = "The image as stored", body = ImageView),
        (status = 400, description = "Unknown fields, wrong types, or a body that names another image", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such image", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "The image changed meanwhile, or another manager owns a field", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 412, description = "If-Match names another version; nothing was written", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "The body is not JSON", body = ProblemDoc, content_type = "application/problem+json"),
        Refusals
    )
)]
pub(crate) async fn replace_image(
    principal: Principal,
    peer: Peer,
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<JsonBody, AdminError>,
) -> Result<Response, AdminError> {
    change(&principal, peer, &state, &name, &headers, body, false).await
}

/// Changes part of an image's spec: `{"spec": <JSON merge patch>}`, e.g. `approved` or
/// `supportEnd`.
#[utoipa::path(
    patch,
    path = "/api/v1/images/{name}",
    tag = "images",
    params(
        ("name" = String, Path, description = "Image name"),
        ("If-Match" = Option<String>, Header, description = "The image's `ETag`: refused with 412 if it changed since")
    ),
    request_body(content = ImageDocument, description = "`spec` is a JSON merge patch (RFC 7386) of the current spec", content_type = "application/merge-patch+json"),
    responses(
        (status = 200, description = "The image as stored", body = ImageView),
        (status = 400, description = "Unknown fields, wrong types, or a body that names another image", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such image", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "The image changed meanwhile, or another manager owns a field", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 412, description = "If-Match names another version; nothing was written", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "The body is not JSON", body = ProblemDoc, content_type = "application/problem+json"),
        Refusals
    )
)]
pub(crate) async fn patch_image(
    principal: Principal,
    peer: Peer,
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<JsonBody, AdminError>,
) -> Result<Response, AdminError> {
    change(&principal, peer, &state, &name, &headers, body, true).await
}

/// Removes an image; servers made from it keep their disks.
#[utoipa::path(
    delete,
    path = "/api/v1/images/{name}",
    tag = "images",
    params(
        ("name" = String, Path, description = "Image name"),
        ("If-Match" = Option<String>, Header, description = "The image's `ETag`: refused with 412 if it changed since")
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "The name is not a DNS subdomain", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such image", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 412, description = "If-Match names another version; nothing was deleted", body = ProblemDoc, content_type = "application/problem+json"),
        Refusals
    )
)]
pub(crate) async fn delete_image(
    principal: Principal,
    peer: Peer,
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AdminError> {
    let act = act(&principal, peer, "image.delete", &name);
    let result = async {
        let (role, api) = images(&state, &principal, Action::WriteImages)?;
        document::check_subdomain("image", &name)?;
        cluster::delete_if_match(&api, &name, &format!("image {name:?}"), &headers).await?;
        Ok((role, "deleted", ()))
    }
    .await;
    record::settle(&state, act, result).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_image_document_names_its_image_as_the_path_does() {
        let document = |name: Option<&str>| ImageDocument {
            name: name.map(str::to_owned),
            spec: json!({}),
        };
        assert_eq!(
            target(&document(Some("debian-12")), None),
            Ok("debian-12".into())
        );
        assert_eq!(
            target(&document(None), Some("ubuntu-24.04")),
            Ok("ubuntu-24.04".into())
        );
        assert!(target(&document(None), None).is_err());
        assert!(target(&document(Some("a")), Some("b")).is_err());
        assert!(target(&document(Some("Debian")), None).is_err());
    }

    #[test]
    fn an_image_spec_is_checked_against_the_server_image_schema() {
        let spec = json!({
            "source": { "registry": "docker://quay.io/containerdisks/debian:12" },
            "osFamily": "Linux",
            "version": "12",
            "supportEnd": "2028-06-30",
            "lastPatched": "2026-11-20",
            "minDiskSize": "20Gi",
        });
        let checked: ServerImageSpec = document::spec(&spec, spec_schema()).expect("valid");
        assert!(!checked.approved);
        let mut typo = spec.clone();
        typo["source"]["regsitry"] = json!("docker://x");
        let refusal = document::spec::<ServerImageSpec>(&typo, spec_schema())
            .expect_err("unknown")
            .to_string();
        assert!(refusal.contains("spec.source.regsitry"), "{refusal}");
    }
}
