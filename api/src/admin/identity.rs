//! Read views of the identity configuration (realms, trusts, clients) and the realm test.
//! Secrets never leave: no bind passwords, no password or client-secret hashes, no paths of
//! secret files; a view says only whether a secret is configured.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::authz::{Action, Principal};
use super::extract::{self, Path};
use super::openapi::{ProblemDoc, Refusals};
use super::problem::AdminError;
use super::record::{self, AdminAct, Peer};
use crate::config::{AdminApiConfig, ClientConfig, RealmConfig, TrustConfig};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/realms", get(list_realms))
        .route("/realms/{name}", get(get_realm))
        .route("/realms/{name}/test", post(test_realm))
        .route("/trusts", get(list_trusts))
        .route("/clients", get(list_clients))
        .route("/clients/{client_id}", get(get_client))
}

/// A realm as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RealmView {
    pub name: String,
    pub display_name: Option<String>,
    /// `ldap` or `static`.
    pub directory: &'static str,
    /// Whether the realm's directory answered the last probe.
    pub directory_up: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ldap: Option<LdapView>,
    /// How many users the built-in directory holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub static_users: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LdapView {
    pub urls: Vec<String>,
    pub start_tls: bool,
    pub insecure: bool,
    pub custom_ca: bool,
    pub bind_dn: Option<String>,
    /// Whether a bind password is configured (never the password).
    pub bind_password_set: bool,
    pub user_base: String,
    pub user_filter: String,
    pub disabled_filter: Option<String>,
    pub group_search_base: Option<String>,
    pub timeout_seconds: u64,
    pub entry_cache_seconds: u64,
}

impl RealmView {
    fn of(realm: &RealmConfig, directory_up: Option<bool>) -> Self {
        let ldap = realm.ldap.as_ref().map(|ldap| LdapView {
            urls: ldap.urls.clone(),
            start_tls: ldap.start_tls,
            insecure: ldap.insecure,
            custom_ca: ldap.ca_file.is_some(),
            bind_dn: ldap.bind_dn.clone(),
            bind_password_set: ldap.bind_password.is_some()
                || ldap.bind_password_file.is_some()
                || ldap.bind_password_env.is_some(),
            user_base: ldap.user_base.clone(),
            user_filter: ldap.user_filter.clone(),
            disabled_filter: ldap.disabled_filter.clone(),
            group_search_base: ldap.group_search.as_ref().map(|g| g.base.clone()),
            timeout_seconds: ldap.timeout_seconds,
            entry_cache_seconds: ldap.entry_cache_seconds,
        });
        Self {
            name: realm.name.clone(),
            display_name: realm.display_name.clone(),
            directory: if ldap.is_some() { "ldap" } else { "static" },
            directory_up,
            ldap,
            static_users: realm.static_directory.as_ref().map(|s| s.users.len()),
        }
    }
}

/// A trust as the API shows it (the configuration holds no secret here).
#[derive(Debug, Serialize, ToSchema)]
pub struct TrustView {
    pub trusting: String,
    pub trusted: String,
    pub groups: Vec<String>,
    pub roles: BTreeMap<String, String>,
    pub clients: Vec<String>,
}

impl From<&TrustConfig> for TrustView {
    fn from(trust: &TrustConfig) -> Self {
        Self {
            trusting: trust.trusting.clone(),
            trusted: trust.trusted.clone(),
            groups: trust.groups.clone(),
            roles: trust.roles.clone(),
            clients: trust.clients.clone(),
        }
    }
}

/// A client as the API shows it: whether it has a secret, never the secret's hash.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientView {
    pub client_id: String,
    pub realm: String,
    pub public: bool,
    pub secret_set: bool,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub id_token_signed_response_alg: &'static str,
    /// Whether the admin API accepts this client's access tokens.
    pub admin_api: bool,
}

impl ClientView {
    fn of(client: &ClientConfig, admin_api: &AdminApiConfig) -> Self {
        Self {
            client_id: client.client_id.clone(),
            realm: client.realm.clone(),
            public: client.public,
            secret_set: client.secret_hash.is_some(),
            redirect_uris: client.redirect_uris.clone(),
            post_logout_redirect_uris: client.post_logout_redirect_uris.clone(),
            id_token_signed_response_alg: client.id_token_signed_response_alg.as_str(),
            admin_api: admin_api.clients.contains(&client.client_id),
        }
    }
}

fn directory_up(state: &AppState, realm: &str) -> Option<bool> {
    up_in(&state.federation().directory_status(), realm)
}

/// Whether `realm`'s directory answered the last probe, in a status read once per request.
fn up_in(status: &[(String, bool)], realm: &str) -> Option<bool> {
    status
        .iter()
        .find_map(|(name, up)| (name == realm).then_some(*up))
}

fn outside(what: &str, name: &str) -> AdminError {
    AdminError::Forbidden(format!(
        "{what} {name:?} belongs to no municipality you hold a role in"
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/realms",
    tag = "identity",
    responses(
        (status = 200, description = "The realms the caller may see", body = Vec<RealmView>),
        Refusals
    )
)]
pub(crate) async fn list_realms(
    principal: Principal,
    State(state): State<AppState>,
) -> Result<Json<Vec<RealmView>>, AdminError> {
    let scope = principal.may(Action::ReadIdentity)?.scope;
    let status = state.federation().directory_status();
    Ok(Json(
        state
            .config()
            .realms
            .iter()
            .filter(|realm| scope.covers_realm(&realm.name))
            .map(|realm| RealmView::of(realm, up_in(&status, &realm.name)))
            .collect(),
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/realms/{name}",
    tag = "identity",
    params(("name" = String, Path, description = "Realm name")),
    responses(
        (status = 200, description = "The realm", body = RealmView),
        (status = 404, description = "No such resource", body = ProblemDoc, content_type = "application/problem+json"),
        Refusals
    )
)]
pub(crate) async fn get_realm(
    principal: Principal,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<RealmView>, AdminError> {
    let scope = principal.may(Action::ReadIdentity)?.scope;
    let realm = state
        .config()
        .realm(&name)
        .ok_or_else(|| AdminError::NotFound(format!("no realm {name:?}")))?;
    if !scope.covers_realm(&name) {
        return Err(outside("realm", &name));
    }
    Ok(Json(RealmView::of(realm, directory_up(&state, &name))))
}

#[utoipa::path(
    get,
    path = "/api/v1/trusts",
    tag = "identity",
    responses(
        (status = 200, description = "Trusts touching the realms the caller may see", body = Vec<TrustView>),
        Refusals
    )
)]
pub(crate) async fn list_trusts(
    principal: Principal,
    State(state): State<AppState>,
) -> Result<Json<Vec<TrustView>>, AdminError> {
    let scope = principal.may(Action::ReadIdentity)?.scope;
    Ok(Json(
        state
            .config()
            .trusts
            .iter()
            .filter(|t| scope.covers_realm(&t.trusting) || scope.covers_realm(&t.trusted))
            .map(TrustView::from)
            .collect(),
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/clients",
    tag = "identity",
    responses(
        (status = 200, description = "Clients of the realms the caller may see", body = Vec<ClientView>),
        Refusals
    )
)]
pub(crate) async fn list_clients(
    principal: Principal,
    State(state): State<AppState>,
) -> Result<Json<Vec<ClientView>>, AdminError> {
    let scope = principal.may(Action::ReadIdentity)?.scope;
    let config = state.config();
    Ok(Json(
        config
            .clients
            .iter()
            .filter(|c| scope.covers_realm(&c.realm))
            .map(|c| ClientView::of(c, &config.admin_api))
            .collect(),
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/clients/{client_id}",
    tag = "identity",
    params(("client_id" = String, Path, description = "Client id")),
    responses(
        (status = 200, description = "The client", body = ClientView),
        (status = 404, description = "No such resource", body = ProblemDoc, content_type = "application/problem+json"),
        Refusals
    )
)]
pub(crate) async fn get_client(
    principal: Principal,
    State(state): State<AppState>,
    Path(client_id): Path<String>,
) -> Result<Json<ClientView>, AdminError> {
    let scope = principal.may(Action::ReadIdentity)?.scope;
    let client = state
        .clients()
        .get(&client_id)
        .ok_or_else(|| AdminError::NotFound(format!("no client {client_id:?}")))?;
    if !scope.covers_realm(&client.realm) {
        return Err(outside("client", &client_id));
    }
    Ok(Json(ClientView::of(client, &state.config().admin_api)))
}

/// The body of `POST /realms/{name}/test`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RealmTest {
    /// `name` or `name@realm`; the realm, when written, must be the one in the path.
    pub username: String,
    pub password: String,
    /// Test the sign-in to this application, with its realm's trusts.
    #[serde(default)]
    pub client_id: Option<String>,
}

/// Longest user name or password a realm test takes (as the login form).
const MAX_CREDENTIAL_CHARS: usize = 1024;

/// `POST /realms/{name}/test`: one sign-in through the production path, as `novads realm test`
/// runs it; audited like any sign-in, and the test itself (or its refusal) as an admin action
/// before the answer.
#[utoipa::path(
    post,
    path = "/api/v1/realms/{name}/test",
    tag = "identity",
    params(("name" = String, Path, description = "Realm name")),
    request_body = RealmTest,
    responses(
        (status = 200, description = "The sign-in report of `novads realm test`: `result` is `signed_in` or `refused`", body = Object),
        (status = 400, description = "The body or a name is wrong", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such resource", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than 64 KiB", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "The body is not JSON", body = ProblemDoc, content_type = "application/problem+json"),
        Refusals
    )
)]
pub(crate) async fn test_realm(
    principal: Principal,
    peer: Peer,
    State(state): State<AppState>,
    Path(name): Path<String>,
    extract::Json(test): extract::Json<RealmTest>,
) -> Result<Json<serde_json::Value>, AdminError> {
    let act = |role, outcome: &str| AdminAct {
        principal: &principal,
        peer,
        role,
        action: "realm.test",
        target: format!("realm/{name}"),
        realm: Some(name.clone()),
        outcome: outcome.to_owned(),
    };
    let allowed = match principal.may(Action::TestRealm(&name)) {
        Ok(allowed) => allowed,
        Err(refusal) => return Err(record::refused(&state, act(None, "denied"), refusal).await),
    };
    if state.config().realm(&name).is_none() {
        return Err(AdminError::NotFound(format!("no realm {name:?}")));
    }
    let username = realm_test_username(&name, &test.username)?;
    if test.password.is_empty() || test.password.chars().count() > MAX_CREDENTIAL_CHARS {
        return Err(AdminError::InvalidRequest(format!(
            "password must be 1 to {MAX_CREDENTIAL_CHARS} characters"
        )));
    }
    if let Some(client_id) = &test.client_id
        && state.clients().get(client_id).is_none()
    {
        return Err(AdminError::InvalidRequest(format!(
            "no client {client_id:?}"
        )));
    }
    let user_agent = format!(
        "novads admin API realm test/{} by {}",
        env!("CARGO_PKG_VERSION"),
        principal.subject
    );
    let (report, signed_in) = crate::commands::test_sign_in(
        state.federation(),
        &username,
        test.client_id.as_deref(),
        &test.password,
        user_agent,
    )
    .await;
    let outcome = if signed_in { "signed_in" } else { "refused" };
    record::record(&state, &act(Some(allowed.role), outcome)).await?;
    Ok(Json(report))
}

/// The user name to sign in with: `user@realm`, the realm taken from the path.
fn realm_test_username(realm: &str, typed: &str) -> Result<String, AdminError> {
    let typed = typed.trim();
    if typed.is_empty() || typed.chars().count() > MAX_CREDENTIAL_CHARS {
        return Err(AdminError::InvalidRequest(format!(
            "username must be 1 to {MAX_CREDENTIAL_CHARS} characters"
        )));
    }
    match typed.rsplit_once('@') {
        None => Ok(format!("{typed}@{realm}")),
        Some((_, written)) if written == realm => Ok(typed.to_owned()),
        Some((_, written)) => Err(AdminError::InvalidRequest(format!(
            "username names realm {written:?} but the path names {realm:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_realm_of_a_test_comes_from_the_path() {
        assert_eq!(
            realm_test_username("talsi", "jana").as_deref(),
            Ok("jana@talsi")
        );
        assert_eq!(
            realm_test_username("talsi", " jana@talsi ").as_deref(),
            Ok("jana@talsi")
        );
        assert!(realm_test_username("talsi", "jana@ventspils").is_err());
        assert!(realm_test_username("talsi", "").is_err());
    }
}
