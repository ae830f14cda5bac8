//! Municipalities written by platform admins: created, replaced, patched and deleted in the
//! cluster, where the operator turns each into its tenancy (docs/operator.md). Every write is
//! a server-side apply of the whole spec by field manager `novads-api`, guarded by the
//! `resourceVersion` of the Municipality as listed for this request, and answers the object the
//! API server stored.

use axum::Router;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use novads_crds::{Municipality, MunicipalitySpec};
use serde::Deserialize;
use serde_json::Value;
use std::sync::{Arc, OnceLock};
use utoipa::ToSchema;

use super::authz::{Action, Principal, Role};
use super::cluster::{self, FIELD_MANAGER};
use super::document::{self, BadDocument};
use super::etag::{IfMatch, tagged};
use super::extract::{JsonBody, Path};
use super::idempotency;
use super::municipalities::{MunicipalityView, check_code, listed};
use super::openapi::{ProblemDoc, Refusals};
use super::principal::Tenancy;
use super::problem::AdminError;
use super::record::{self, AdminAct, Peer};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/municipalities", post(create_municipality))
        .route(
            "/municipalities/{code}",
            axum::routing::put(replace_municipality)
                .patch(patch_municipality)
                .delete(delete_municipality),
        )
}

/// A Municipality as a client writes it; in a `PATCH`, `spec` is a JSON merge patch
/// (RFC 7386) of the current spec.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MunicipalityDocument {
    /// The Municipality's `spec` (docs/operator.md). Its `code` names the Municipality (and
    /// its namespace `muni-<code>`): in a replace or patch it must be the code in the path.
    #[schema(value_type = Object)]
    pub spec: Value,
}

/// The spec schema of the Municipality CRD (crds/src/municipality.rs), read once.
fn spec_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(document::spec_schema::<Municipality>)
}

/// The spec of a body, checked, and speaking of the Municipality `path_code` when given. Pure.
pub fn written_spec(
    written: &Value,
    current: Option<&MunicipalitySpec>,
    path_code: Option<&str>,
) -> Result<MunicipalitySpec, AdminError> {
    let spec: MunicipalitySpec = match current {
        Some(current) => document::patched(current, written, spec_schema())?,
        None => document::spec(written, spec_schema())?,
    };
    if let Some(path) = path_code
        && spec.code != path
    {
        return Err(BadDocument::Mismatch {
            what: "municipality",
            body: spec.code,
            path: path.to_owned(),
        }
        .into());
    }
    check_code(&spec.code)?;
    Ok(spec)
}

/// The object the admin API applies: the whole spec, named by its code.
fn applied(spec: MunicipalitySpec, resource_version: Option<String>) -> Municipality {
    let mut municipality = Municipality::new(&spec.code.clone(), spec);
    municipality.metadata.resource_version = resource_version;
    municipality
}

/// The Municipalities of the cluster, once the caller may write them.
struct Writable {
    /// The role that allows the write.
    role: Role,
    api: Api<Municipality>,
    /// The Municipalities as listed for this request.
    listed: Arc<Vec<Municipality>>,
}

impl Writable {
    fn of(
        state: &AppState,
        principal: &Principal,
        tenancy: Option<&Extension<Tenancy>>,
    ) -> Result<Self, AdminError> {
        let listed = listed(tenancy.cloned())?;
        let allowed = principal.may(Action::WriteMunicipalities)?;
        let client = state
            .cluster()
            .ok_or(AdminError::ClusterUnavailable("municipalities"))?;
        Ok(Self {
            role: allowed.role,
            api: Api::all(client.clone()),
            listed,
        })
    }

    /// Municipality `code` as listed; it must exist.
    fn current(&self, code: &str) -> Result<&Municipality, AdminError> {
        self.listed
            .iter()
            .find(|m| m.spec.code == code)
            .ok_or_else(|| AdminError::NotFound(format!("no municipality {code:?}")))
    }
}

fn act<'a>(principal: &'a Principal, peer: Peer, action: &'static str, code: &str) -> AdminAct<'a> {
    AdminAct {
        principal,
        peer,
        role: None,
        action,
        target: format!("municipality/{code}"),
        realm: None,
        outcome: String::new(),
    }
}

async fn apply(
    api: &Api<Municipality>,
    municipality: Municipality,
) -> Result<Municipality, AdminError> {
    let code = municipality.spec.code.clone();
    api.patch(
        &code,
        &PatchParams::apply(FIELD_MANAGER),
        &Patch::Apply(&municipality),
    )
    .await
    .map_err(|e| cluster::refusal(&format!("municipality {code:?}"), e))
}

fn answer(municipality: &Municipality, status: StatusCode) -> Response {
    let view = MunicipalityView::of(municipality);
    let version = view.resource_version.clone();
    tagged(status, view, version.as_deref())
}

/// Creates a Municipality from `{"spec"}`; the operator makes its tenancy.
#[utoipa::path(
    post,
    path = "/api/v1/municipalities",
    tag = "municipalities",
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "A key of the caller's choice (e.g. a UUID): the same request with the same key within 24 hours gets the first answer, without a second write")
    ),
    request_body = MunicipalityDocument,
    responses(
        (status = 422, description = "The Idempotency-Key was used for another request", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 201, description = "Created: the Municipality as stored, its address in `Location`", body = MunicipalityView),
        (status = 400, description = "Unknown fields, wrong types or a code that is not a DNS label", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "A Municipality of that code exists", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "The body is not JSON", body = ProblemDoc, content_type = "application/problem+json"),
        Refusals
    )
)]
pub(crate) async fn create_municipality(
    principal: Principal,
    peer: Peer,
    State(state): State<AppState>,
    tenancy: Option<Extension<Tenancy>>,
    headers: HeaderMap,
    // Taken as a `Result` so that a body of another type is an audited refusal too.
    body: Result<JsonBody, AdminError>,
) -> Result<Response, AdminError> {
    let caller = Caller {
        state: &state,
        principal: &principal,
        peer,
        tenancy: tenancy.as_ref(),
    };
    let key = match idempotency::key_of(&headers) {
        Ok(key) => key,
        Err(bad) => {
            let mut act = act(&principal, peer, "municipality.create", "");
            act.target = "municipality".to_owned();
            return Err(record::refuse(&state, act, bad).await);
        }
    };
    let fingerprint = idempotency::fingerprint(
        "POST",
        "/api/v1/municipalities",
        body.as_ref()
            .map(|JsonBody(b)| b.as_ref())
            .unwrap_or_default(),
    );
    let create = create_once(caller, body);
    idempotency::once(state.db(), &principal.subject, key, &fingerprint, create).await
}

/// [`create_municipality`] once its `Idempotency-Key` allows it to run.
async fn create_once(
    caller: Caller<'_>,
    body: Result<JsonBody, AdminError>,
) -> Result<Response, AdminError> {
    let Caller {
        state,
        principal,
        peer,
        tenancy,
    } = caller;
    let mut act = act(principal, peer, "municipality.create", "");
    act.target = "municipality".to_owned();
    let result = async {
        let writable = Writable::of(state, principal, tenancy)?;
        let JsonBody(body) = body?;
        let written: MunicipalityDocument = document::parse("municipality", &body)?;
        let spec = written_spec(&written.spec, None, None)?;
        if writable.current(&spec.code).is_ok() {
            return Err(AdminError::Conflict(format!(
                "municipality {:?} exists already",
                spec.code
            )));
        }
        let stored = apply(&writable.api, applied(spec, None)).await?;
        Ok((writable.role, "created", stored))
    }
    .await;
    if let Ok((_, _, stored)) = &result {
        act.target = format!("municipality/{}", stored.spec.code);
        act.realm = Some(stored.spec.realm.clone());
    }
    let stored = record::settle(state, act, result).await?;
    let mut response = answer(&stored, StatusCode::CREATED);
    if let Ok(location) =
        HeaderValue::from_str(&format!("/api/v1/municipalities/{}", stored.spec.code))
    {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Who asks for a change, as the handlers extracted it.
struct Caller<'a> {
    state: &'a AppState,
    principal: &'a Principal,
    peer: Peer,
    tenancy: Option<&'a Extension<Tenancy>>,
}

/// Replaces or patches Municipality `code`: the write both share.
async fn change(
    caller: Caller<'_>,
    code: &str,
    headers: &HeaderMap,
    body: Result<JsonBody, AdminError>,
    patch: bool,
) -> Result<Response, AdminError> {
    let Caller {
        state,
        principal,
        peer,
        tenancy,
    } = caller;
    let action = if patch {
        "municipality.patch"
    } else {
        "municipality.replace"
    };
    let mut act = act(principal, peer, action, code);
    let result = async {
        check_code(code)?;
        let writable = Writable::of(state, principal, tenancy)?;
        let current = writable.current(code)?;
        if let Some(precondition) = IfMatch::of(headers)? {
            precondition.check(current.metadata.resource_version.as_deref())?;
        }
        let JsonBody(body) = body?;
        let written: MunicipalityDocument = document::parse("municipality", &body)?;
        let spec = written_spec(&written.spec, patch.then_some(&current.spec), Some(code))?;
        let resource_version = current.metadata.resource_version.clone();
        let stored = apply(&writable.api, applied(spec, resource_version)).await?;
        let outcome = if patch { "patched" } else { "replaced" };
        Ok((writable.role, outcome, stored))
    }
    .await;
    if let Ok((_, _, stored)) = &result {
        act.realm = Some(stored.spec.realm.clone());
    }
    let stored = record::settle(state, act, result).await?;
    Ok(answer(&stored, StatusCode::OK))
}

/// Replaces a Municipality's spec with `{"spec"}`.
#[utoipa::path(
    put,
    path = "/api/v1/municipalities/{code}",
    tag = "municipalities",
    params(
        ("code" = String, Path, description = "Municipality code"),
        ("If-Match" = Option<String>, Header, description = "The Municipality's `ETag`: refused with 412 if it changed since")
    ),
    request_body = MunicipalityDocument,
    responses(
        (status = 200, description = "The Municipality as stored", body = MunicipalityView),
        (status = 412, description = "If-Match names another version; nothing was written", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 400, description = "Unknown fields, wrong types, or a spec whose code is not the path's", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such municipality", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "The Municipality changed meanwhile, or another manager owns a field", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "The body is not JSON", body = ProblemDoc, content_type = "application/problem+json"),
        Refusals
    )
)]
pub(crate) async fn replace_municipality(
    principal: Principal,
    peer: Peer,
    State(state): State<AppState>,
    tenancy: Option<Extension<Tenancy>>,
    Path(code): Path<String>,
    headers: HeaderMap,
    body: Result<JsonBody, AdminError>,
) -> Result<Response, AdminError> {
    change(
        Caller {
            state: &state,
            principal: &principal,
            peer,
            tenancy: tenancy.as_ref(),
        },
        &code,
        &headers,
        body,
        false,
    )
    .await
}

/// Changes part of a Municipality's spec: `{"spec": <JSON merge patch>}`.
#[utoipa::path(
    patch,
    path = "/api/v1/municipalities/{code}",
    tag = "municipalities",
    params(
        ("code" = String, Path, description = "Municipality code"),
        ("If-Match" = Option<String>, Header, description = "The Municipality's `ETag`: refused with 412 if it changed since")
    ),
    request_body(content = MunicipalityDocument, description = "`spec` is a JSON merge patch (RFC 7386) of the current spec", content_type = "application/merge-patch+json"),
    responses(
        (status = 200, description = "The Municipality as stored", body = MunicipalityView),
        (status = 412, description = "If-Match names another version; nothing was written", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 400, description = "Unknown fields, wrong types, or a spec whose code is not the path's", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such municipality", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "The Municipality changed meanwhile, or another manager owns a field", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "The body is not JSON", body = ProblemDoc, content_type = "application/problem+json"),
        Refusals
    )
)]
pub(crate) async fn patch_municipality(
    principal: Principal,
    peer: Peer,
    State(state): State<AppState>,
    tenancy: Option<Extension<Tenancy>>,
    Path(code): Path<String>,
    headers: HeaderMap,
    body: Result<JsonBody, AdminError>,
) -> Result<Response, AdminError> {
    change(
        Caller {
            state: &state,
            principal: &principal,
            peer,
            tenancy: tenancy.as_ref(),
        },
        &code,
        &headers,
        body,
        true,
    )
    .await
}

/// Deletes a Municipality; its `deletionPolicy` decides what happens to its servers.
#[utoipa::path(
    delete,
    path = "/api/v1/municipalities/{code}",
    tag = "municipalities",
    params(
        ("code" = String, Path, description = "Municipality code"),
        ("If-Match" = Option<String>, Header, description = "The Municipality's `ETag`: refused with 412 if it changed since")
    ),
    responses(
        (status = 204, description = "Deleted (the operator follows the Municipality's `deletionPolicy`)"),
        (status = 412, description = "If-Match names another version; nothing was deleted", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 400, description = "The code is not a DNS label", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such municipality", body = ProblemDoc, content_type = "application/problem+json"),
        Refusals
    )
)]
pub(crate) async fn delete_municipality(
    principal: Principal,
    peer: Peer,
    State(state): State<AppState>,
    tenancy: Option<Extension<Tenancy>>,
    Path(code): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AdminError> {
    let tenancy = tenancy.as_ref();
    let mut act = act(&principal, peer, "municipality.delete", &code);
    let result = async {
        check_code(&code)?;
        let writable = Writable::of(&state, &principal, tenancy)?;
        let current = writable.current(&code)?;
        let mut params = DeleteParams::default();
        if let Some(precondition) = IfMatch::of(&headers)? {
            precondition.check(current.metadata.resource_version.as_deref())?;
            // Checked again by the API server, atomically with the delete.
            params.preconditions = Some(Preconditions {
                resource_version: current.metadata.resource_version.clone(),
                uid: None,
            });
        }
        let realm = current.spec.realm.clone();
        writable.api.delete(&code, &params).await.map_err(|e| {
            match cluster::refusal(&format!("municipality {code:?}"), e) {
                AdminError::Conflict(why) if params.preconditions.is_some() => {
                    AdminError::PreconditionFailed(why)
                }
                other => other,
            }
        })?;
        Ok((writable.role, "deleted", realm))
    }
    .await;
    if let Ok((_, _, realm)) = &result {
        act.realm = Some(realm.clone());
    }
    record::settle(&state, act, result).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn talsi() -> Value {
        json!({
            "code": "talsi",
            "displayName": "Talsu novads",
            "realm": "talsi",
            "adminGroups": ["it-admins"],
            "quotas": { "cpu": "8", "memory": "16Gi", "storage": "200Gi", "maxVirtualServers": 4 },
        })
    }

    #[test]
    fn a_written_spec_is_checked_and_speaks_of_the_path() {
        let spec = written_spec(&talsi(), None, None).expect("valid");
        assert_eq!(spec.realm, "talsi");
        assert!(written_spec(&talsi(), None, Some("talsi")).is_ok());
        let other = written_spec(&talsi(), None, Some("ventspils")).expect_err("mismatch");
        assert!(
            other
                .to_string()
                .contains("the body names municipality \"talsi\", the path \"ventspils\"")
        );
        let mut typo = talsi();
        typo["quotas"]["gpus"] = json!(1);
        let refusal = written_spec(&typo, None, None).expect_err("unknown");
        assert!(
            refusal.to_string().contains("spec.quotas.gpus"),
            "{refusal}"
        );
        let mut bad = talsi();
        bad["code"] = json!("Talsi");
        assert!(written_spec(&bad, None, None).is_err());
    }

    #[test]
    fn a_patch_merges_into_the_current_spec() {
        let current = written_spec(&talsi(), None, None).expect("valid");
        let patched = written_spec(
            &json!({ "displayName": "Talsi", "adminGroups": ["admins"] }),
            Some(&current),
            Some("talsi"),
        )
        .expect("merges");
        assert_eq!(patched.display_name, "Talsi");
        assert_eq!(patched.admin_groups, ["admins"]);
        assert_eq!(patched.realm, "talsi");
        // The code cannot be patched away from the path.
        assert!(written_spec(&json!({ "code": "riga" }), Some(&current), Some("talsi")).is_err());
    }

    #[test]
    fn the_applied_object_is_named_by_its_code() {
        let spec = written_spec(&talsi(), None, None).expect("valid");
        let object = serde_json::to_value(applied(spec, Some("5".into()))).expect("json");
        assert_eq!(object["metadata"]["name"], "talsi");
        assert_eq!(object["metadata"]["resourceVersion"], "5");
        assert_eq!(object["kind"], "Municipality");
    }
}
