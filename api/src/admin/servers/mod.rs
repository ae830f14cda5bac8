//! The virtual servers of a Municipality, in its namespace of the cluster: read, created,
//! replaced, patched, deleted, started, stopped and restarted. The VirtualServer is the one
//! source of truth, power state included (docs/operator.md); every write is a server-side apply
//! of the whole spec by field manager `novads-api`, guarded by the `resourceVersion` read
//! before it, and answers the object the API server stored, status included. [`document`]
//! decides what would be applied; this module reads, authorises, applies and records.

pub mod document;

use axum::Router;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use novads_crds::{VirtualServer, VirtualServerSpec};
use serde::Serialize;
use utoipa::ToSchema;

use self::document::{PowerAction, ServerDocument};
use super::authz::{Action, Principal, Role};
use super::cluster::{self, FIELD_MANAGER};
use super::etag::{IfMatch, tagged};
use super::extract::{JsonBody, Path};
use super::idempotency;
use super::municipalities::{check_code, listed};
use super::openapi::ProblemDoc;
use super::openapi::Refusals;
use super::principal::Tenancy;
use super::problem::AdminError;
use super::record::{self, AdminAct, Peer};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/municipalities/{code}/servers",
            get(list_servers).post(create_server),
        )
        .route(
            "/municipalities/{code}/servers/{name}",
            get(get_server)
                .put(replace_server)
                .patch(patch_server)
                .delete(delete_server),
        )
        .route(
            "/municipalities/{code}/servers/{name}/{action}",
            post(power_server),
        )
}

/// A virtual server as the API shows it: what was asked for and what the platform observed.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServerView {
    pub name: String,
    /// The code of the Municipality the server belongs to.
    pub municipality: String,
    /// The custom resource's `resourceVersion`, also sent as the `ETag`.
    pub resource_version: Option<String>,
    /// The VirtualServer's `spec` (docs/operator.md).
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
    /// The `status` the operator wrote; absent until it has seen the server.
    #[schema(value_type = Option<Object>)]
    pub status: Option<serde_json::Value>,
}

impl ServerView {
    fn of(server: &VirtualServer, code: &str) -> Self {
        Self {
            name: server.name_any(),
            municipality: code.to_owned(),
            resource_version: server.resource_version(),
            spec: serde_json::to_value(&server.spec).unwrap_or_default(),
            status: server
                .status
                .as_ref()
                .and_then(|s| serde_json::to_value(s).ok()),
        }
    }

    fn answer(server: &VirtualServer, code: &str, status: StatusCode) -> Response {
        let view = Self::of(server, code);
        let version = view.resource_version.clone();
        tagged(status, view, version.as_deref())
    }
}

/// The servers of Municipality `code`, once the caller may `action` them and it exists.
fn servers_of(
    state: &AppState,
    principal: &Principal,
    tenancy: Option<&Extension<Tenancy>>,
    code: &str,
    action: Action<'_>,
) -> Result<(Role, Api<VirtualServer>), AdminError> {
    check_code(code)?;
    let municipalities = listed(tenancy.cloned())?;
    let allowed = principal.may(action)?;
    if !municipalities.iter().any(|m| m.spec.code == code) {
        return Err(AdminError::NotFound(format!("no municipality {code:?}")));
    }
    let client = state
        .cluster()
        .ok_or(AdminError::ClusterUnavailable("servers"))?;
    Ok((
        allowed.role,
        Api::namespaced(client.clone(), &cluster::namespace_of(code)),
    ))
}

/// The audit row of a write on Municipality `code`'s servers, before its outcome is known.
fn act<'a>(
    principal: &'a Principal,
    peer: Peer,
    tenancy: Option<&Extension<Tenancy>>,
    action: &'static str,
    code: &str,
    name: Option<&str>,
) -> AdminAct<'a> {
    let realm = tenancy.and_then(|Extension(Tenancy(listed))| {
        listed
            .as_ref()
            .ok()?
            .iter()
            .find(|m| m.spec.code == code)
            .map(|m| m.spec.realm.clone())
    });
    AdminAct {
        principal,
        peer,
        role: None,
        action,
        target: match name {
            Some(name) => format!("municipality/{code}/server/{name}"),
            None => format!("municipality/{code}/server"),
        },
        realm,
        outcome: String::new(),
    }
}

/// Reads server `name`: it must exist.
async fn current(api: &Api<VirtualServer>, name: &str) -> Result<VirtualServer, AdminError> {
    api.get(name)
        .await
        .map_err(|e| cluster::refusal(&format!("server {name:?}"), e))
}

/// Applies `spec` as server `name`, guarded by `resource_version`; `force` takes over fields
/// another manager owns (power actions only, docs/admin-api.md).
async fn apply(
    api: &Api<VirtualServer>,
    code: &str,
    name: &str,
    spec: VirtualServerSpec,
    resource_version: Option<String>,
    force: bool,
) -> Result<VirtualServer, AdminError> {
    let object = document::applied(&cluster::namespace_of(code), name, spec, resource_version);
    let mut params = PatchParams::apply(FIELD_MANAGER);
    if force {
        params = params.force();
    }
    api.patch(name, &params, &Patch::Apply(&object))
        .await
        .map_err(|e| cluster::refusal(&format!("server {name:?}"), e))
}

/// The servers of a Municipality.
#[utoipa::path(
    get,
    path = "/api/v1/municipalities/{code}/servers",
    tag = "servers",
    params(("code" = String, Path, description = "Municipality code")),
    responses(
        (status = 200, description = "The Municipality's virtual servers", body = Vec<ServerView>),
        (status = 400, description = "The code is not a DNS label", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such municipality", body = ProblemDoc, content_type = "application/problem+json"),
        Refusals
    )
)]
pub(crate) async fn list_servers(
    principal: Principal,
    State(state): State<AppState>,
    tenancy: Option<Extension<Tenancy>>,
    Path(code): Path<String>,
) -> Result<axum::Json<Vec<ServerView>>, AdminError> {
    let (_, api) = servers_of(
        &state,
        &principal,
        tenancy.as_ref(),
        &code,
        Action::ReadServers(&code),
    )?;
    let servers = api
        .list(&ListParams::default())
        .await
        .map_err(|e| cluster::refusal("the servers", e))?;
    Ok(axum::Json(
        servers.iter().map(|s| ServerView::of(s, &code)).collect(),
    ))
}

/// One server, with its `resourceVersion` as the `ETag`.
#[utoipa::path(
    get,
    path = "/api/v1/municipalities/{code}/servers/{name}",
    tag = "servers",
    params(
        ("code" = String, Path, description = "Municipality code"),
        ("name" = String, Path, description = "Server name")
    ),
    responses(
        (status = 200, description = "The server", body = ServerView),
        (status = 400, description = "The code or name is not a DNS label", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such municipality or server", body = ProblemDoc, content_type = "application/problem+json"),
        Refusals
    )
)]
pub(crate) async fn get_server(
    principal: Principal,
    State(state): State<AppState>,
    tenancy: Option<Extension<Tenancy>>,
    Path((code, name)): Path<(String, String)>,
) -> Result<Response, AdminError> {
    let (_, api) = servers_of(
        &state,
        &principal,
        tenancy.as_ref(),
        &code,
        Action::ReadServers(&code),
    )?;
    document::check_name(&name)?;
    let server = current(&api, &name).await?;
    Ok(ServerView::answer(&server, &code, StatusCode::OK))
}

/// Creates a server from `{"name", "spec"}`.
#[utoipa::path(
    post,
    path = "/api/v1/municipalities/{code}/servers",
    tag = "servers",
    params(
        ("code" = String, Path, description = "Municipality code"),
        ("Idempotency-Key" = Option<String>, Header, description = "A key of the caller's choice (e.g. a UUID): the same request with the same key within 24 hours gets the first answer, without a second write")
    ),
    request_body = ServerDocument,
    responses(
        (status = 201, description = "Created: the server as stored, its address in `Location`", body = ServerView),
        (status = 422, description = "The Idempotency-Key was used for another request", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 400, description = "Unknown fields, wrong types, a name that is not a DNS label, or a body that names another municipality", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such municipality", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "A server of that name exists", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "The body is not JSON", body = ProblemDoc, content_type = "application/problem+json"),
        Refusals
    )
)]
pub(crate) async fn create_server(
    principal: Principal,
    peer: Peer,
    State(state): State<AppState>,
    tenancy: Option<Extension<Tenancy>>,
    Path(code): Path<String>,
    headers: HeaderMap,
    // Taken as a `Result` so that a body of another type is an audited refusal too.
    body: Result<JsonBody, AdminError>,
) -> Result<Response, AdminError> {
    let tenancy = tenancy.as_ref();
    let key = match idempotency::key_of(&headers) {
        Ok(key) => key,
        Err(bad) => {
            let act = act(&principal, peer, tenancy, "server.create", &code, None);
            return Err(record::refuse(&state, act, bad).await);
        }
    };
    let fingerprint = idempotency::fingerprint(
        "POST",
        &format!("/api/v1/municipalities/{code}/servers"),
        body.as_ref()
            .map(|JsonBody(b)| b.as_ref())
            .unwrap_or_default(),
    );
    let create = create_server_once(&principal, peer, &state, tenancy, &code, body);
    idempotency::once(state.db(), &principal.subject, key, &fingerprint, create).await
}

/// [`create_server`] once its `Idempotency-Key` allows it to run.
async fn create_server_once(
    principal: &Principal,
    peer: Peer,
    state: &AppState,
    tenancy: Option<&Extension<Tenancy>>,
    code: &str,
    body: Result<JsonBody, AdminError>,
) -> Result<Response, AdminError> {
    let act = act(principal, peer, tenancy, "server.create", code, None);
    let result = async {
        let (role, api) = servers_of(state, principal, tenancy, code, Action::WriteServers(code))?;
        let JsonBody(body) = body?;
        let written = document::parse(&body)?;
        let name = document::target(&written, code, None)?;
        let spec = document::spec(&written.spec)?;
        match api.get_opt(&name).await {
            Ok(None) => {}
            Ok(Some(_)) => {
                return Err(AdminError::Conflict(format!(
                    "server {name:?} exists already"
                )));
            }
            Err(e) => return Err(cluster::refusal(&format!("server {name:?}"), e)),
        }
        let stored = apply(&api, code, &name, spec, None, false).await?;
        Ok((role, "created", stored))
    }
    .await;
    let act = AdminAct {
        target: match &result {
            Ok((_, _, stored)) => format!("municipality/{code}/server/{}", stored.name_any()),
            Err(_) => act.target.clone(),
        },
        ..act
    };
    let stored = record::settle(state, act, result).await?;
    let mut response = ServerView::answer(&stored, code, StatusCode::CREATED);
    if let Ok(location) = HeaderValue::from_str(&format!(
        "/api/v1/municipalities/{code}/servers/{}",
        stored.name_any()
    )) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Replaces a server's spec with `{"spec"}`.
#[utoipa::path(
    put,
    path = "/api/v1/municipalities/{code}/servers/{name}",
    tag = "servers",
    params(
        ("code" = String, Path, description = "Municipality code"),
        ("name" = String, Path, description = "Server name"),
        ("If-Match" = Option<String>, Header, description = "The server's `ETag`: refused with 412 if it changed since")
    ),
    request_body = ServerDocument,
    responses(
        (status = 200, description = "The server as stored", body = ServerView),
        (status = 412, description = "If-Match names another version; nothing was written", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 400, description = "Unknown fields, wrong types, a bad name, or a body that names another server or municipality", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such municipality or server", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "The server changed meanwhile, or another manager owns a field", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "The body is not JSON", body = ProblemDoc, content_type = "application/problem+json"),
        Refusals
    )
)]
pub(crate) async fn replace_server(
    principal: Principal,
    peer: Peer,
    State(state): State<AppState>,
    tenancy: Option<Extension<Tenancy>>,
    Path((code, name)): Path<(String, String)>,
    headers: HeaderMap,
    // Taken as a `Result` so that a body of another type is an audited refusal too.
    body: Result<JsonBody, AdminError>,
) -> Result<Response, AdminError> {
    change(
        &principal,
        peer,
        &state,
        tenancy.as_ref(),
        &code,
        &name,
        &headers,
        body,
        false,
    )
    .await
}

/// Changes part of a server's spec: `{"spec": <JSON merge patch>}`.
#[utoipa::path(
    patch,
    path = "/api/v1/municipalities/{code}/servers/{name}",
    tag = "servers",
    params(
        ("code" = String, Path, description = "Municipality code"),
        ("name" = String, Path, description = "Server name"),
        ("If-Match" = Option<String>, Header, description = "The server's `ETag`: refused with 412 if it changed since")
    ),
    request_body(content = ServerDocument, description = "`spec` is a JSON merge patch (RFC 7386) of the current spec", content_type = "application/merge-patch+json"),
    responses(
        (status = 200, description = "The server as stored", body = ServerView),
        (status = 412, description = "If-Match names another version; nothing was written", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 400, description = "Unknown fields, wrong types, a bad name, or a body that names another server or municipality", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such municipality or server", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "The server changed meanwhile, or another manager owns a field", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "The body is not JSON", body = ProblemDoc, content_type = "application/problem+json"),
        Refusals
    )
)]
pub(crate) async fn patch_server(
    principal: Principal,
    peer: Peer,
    State(state): State<AppState>,
    tenancy: Option<Extension<Tenancy>>,
    Path((code, name)): Path<(String, String)>,
    headers: HeaderMap,
    // Taken as a `Result` so that a body of another type is an audited refusal too.
    body: Result<JsonBody, AdminError>,
) -> Result<Response, AdminError> {
    change(
        &principal,
        peer,
        &state,
        tenancy.as_ref(),
        &code,
        &name,
        &headers,
        body,
        true,
    )
    .await
}

/// Replaces or patches server `name`: the write both share. A replacement's spec is checked
/// before the server is read; a patch needs the current spec first.
#[allow(clippy::too_many_arguments)]
async fn change(
    principal: &Principal,
    peer: Peer,
    state: &AppState,
    tenancy: Option<&Extension<Tenancy>>,
    code: &str,
    name: &str,
    headers: &HeaderMap,
    body: Result<JsonBody, AdminError>,
    patch: bool,
) -> Result<Response, AdminError> {
    let action = if patch {
        "server.patch"
    } else {
        "server.replace"
    };
    let act = act(principal, peer, tenancy, action, code, Some(name));
    let result = async {
        let (role, api) = servers_of(state, principal, tenancy, code, Action::WriteServers(code))?;
        let JsonBody(body) = body?;
        let written = document::parse(&body)?;
        document::target(&written, code, Some(name))?;
        let replacement = if patch {
            None
        } else {
            Some(document::spec(&written.spec)?)
        };
        let precondition = IfMatch::of(headers)?;
        let before = current(&api, name).await?;
        if let Some(precondition) = &precondition {
            precondition.check(before.resource_version().as_deref())?;
        }
        let spec = match replacement {
            Some(spec) => spec,
            None => document::patched(&before.spec, &written.spec)?,
        };
        let stored = apply(&api, code, name, spec, before.resource_version(), false).await?;
        Ok((role, if patch { "patched" } else { "replaced" }, stored))
    }
    .await;
    let stored = record::settle(state, act, result).await?;
    Ok(ServerView::answer(&stored, code, StatusCode::OK))
}

/// Deletes a server; the operator removes its VirtualMachine and disks.
#[utoipa::path(
    delete,
    path = "/api/v1/municipalities/{code}/servers/{name}",
    tag = "servers",
    params(
        ("code" = String, Path, description = "Municipality code"),
        ("name" = String, Path, description = "Server name"),
        ("If-Match" = Option<String>, Header, description = "The server's `ETag`: refused with 412 if it changed since")
    ),
    responses(
        (status = 204, description = "Deleted (the operator removes what it made for the server)"),
        (status = 412, description = "If-Match names another version; nothing was deleted", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 400, description = "The code or name is not a DNS label", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such municipality or server", body = ProblemDoc, content_type = "application/problem+json"),
        Refusals
    )
)]
pub(crate) async fn delete_server(
    principal: Principal,
    peer: Peer,
    State(state): State<AppState>,
    tenancy: Option<Extension<Tenancy>>,
    Path((code, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, AdminError> {
    let tenancy = tenancy.as_ref();
    let act = act(
        &principal,
        peer,
        tenancy,
        "server.delete",
        &code,
        Some(&name),
    );
    let result = async {
        let (role, api) = servers_of(
            &state,
            &principal,
            tenancy,
            &code,
            Action::WriteServers(&code),
        )?;
        document::check_name(&name)?;
        cluster::delete_if_match(&api, &name, &format!("server {name:?}"), &headers).await?;
        Ok((role, "deleted", ()))
    }
    .await;
    record::settle(&state, act, result).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Starts, stops or restarts a server: sets `runStrategy` (`Running`, `Halted`) or a new
/// restart token on the VirtualServer, which alone decides power (docs/operator.md).
#[utoipa::path(
    post,
    path = "/api/v1/municipalities/{code}/servers/{name}/{action}",
    tag = "servers",
    params(
        ("code" = String, Path, description = "Municipality code"),
        ("name" = String, Path, description = "Server name"),
        ("action" = PowerAction, Path, description = "`start`, `stop` or `restart`")
    ),
    responses(
        (status = 200, description = "The server as stored; the operator carries the action out", body = ServerView),
        (status = 400, description = "The code, name or action is wrong", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such municipality or server", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "The server changed meanwhile", body = ProblemDoc, content_type = "application/problem+json"),
        Refusals
    )
)]
pub(crate) async fn power_server(
    principal: Principal,
    peer: Peer,
    State(state): State<AppState>,
    tenancy: Option<Extension<Tenancy>>,
    Path((code, name, action)): Path<(String, String, String)>,
) -> Result<Response, AdminError> {
    let tenancy = tenancy.as_ref();
    let power = match action.as_str() {
        "start" => Some(PowerAction::Start),
        "stop" => Some(PowerAction::Stop),
        "restart" => Some(PowerAction::Restart),
        _ => None,
    };
    let audited = match power {
        Some(PowerAction::Start) => "server.start",
        Some(PowerAction::Stop) => "server.stop",
        Some(PowerAction::Restart) => "server.restart",
        None => "server.power",
    };
    let act = act(&principal, peer, tenancy, audited, &code, Some(&name));
    let result = async {
        let (role, api) = servers_of(
            &state,
            &principal,
            tenancy,
            &code,
            Action::WriteServers(&code),
        )?;
        document::check_name(&name)?;
        let power = power.ok_or_else(|| {
            AdminError::InvalidRequest(format!(
                "{action:?} is not a server action: start, stop or restart"
            ))
        })?;
        let before = current(&api, &name).await?;
        let token = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let spec = power.applied_to(before.spec.clone(), token);
        // Forced: power is the admin's to switch, whoever set it last (docs/admin-api.md).
        let stored = apply(&api, &code, &name, spec, before.resource_version(), true).await?;
        Ok((role, power.as_str(), stored))
    }
    .await;
    let stored = record::settle(&state, act, result).await?;
    Ok(ServerView::answer(&stored, &code, StatusCode::OK))
}
