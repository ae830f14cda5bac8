//! The admin API's view of the Kubernetes cluster, the source of truth for Municipalities and
//! their servers: connecting (in-cluster or `KUBECONFIG`), reading what authorisation needs,
//! and wording the API server's refusals of a write.

use axum::http::HeaderMap;
use kube::api::{DeleteParams, ListParams, Preconditions};
use kube::{Api, ResourceExt};
use novads_crds::Municipality;

use super::authz::MunicipalityGroups;
use super::etag::IfMatch;
use super::problem::AdminError;

/// The field manager of everything the admin API applies (server-side apply).
pub const FIELD_MANAGER: &str = "novads-api";

/// The namespace of a Municipality's tenancy, where its servers live: `muni-<code>`, as the
/// operator makes it (operator/src/municipality/build.rs).
pub fn namespace_of(code: &str) -> String {
    format!("muni-{code}")
}

/// The API server's answer to a request, as the admin API words it. Refusals of the object
/// itself (invalid, conflicting, missing) pass on the API server's message: nothing was
/// written. Anything else means the cluster did not answer usefully, and is logged.
pub fn refusal(what: &str, error: kube::Error) -> AdminError {
    match &error {
        kube::Error::Api(status) => match status.code {
            404 => AdminError::NotFound(format!("no {what}")),
            409 => AdminError::Conflict(format!(
                "{what} changed or exists already: {}",
                status.message
            )),
            400 | 422 => AdminError::InvalidRequest(format!(
                "the cluster refused {what}: {}",
                status.message
            )),
            _ => unreachable_cluster(what, &error),
        },
        _ => unreachable_cluster(what, &error),
    }
}

/// Deletes `name`, honouring `If-Match`: a single version is handed to the API server as the
/// delete's precondition, so the check and the delete are one step; `*` or several versions
/// are checked against a read first. `what` names the object in refusals (`server "web"`).
pub async fn delete_if_match<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    headers: &HeaderMap,
) -> Result<(), AdminError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut params = DeleteParams::default();
    match IfMatch::of(headers)? {
        Some(precondition) if precondition.single_version().is_some() => {
            params.preconditions = Some(Preconditions {
                resource_version: precondition.single_version().map(str::to_owned),
                uid: None,
            });
        }
        Some(precondition) => {
            let current = api.get(name).await.map_err(|e| refusal(what, e))?;
            precondition.check(current.resource_version().as_deref())?;
        }
        None => {}
    }
    api.delete(name, &params)
        .await
        .map_err(|e| match refusal(what, e) {
            AdminError::Conflict(why) if params.preconditions.is_some() => {
                AdminError::PreconditionFailed(why)
            }
            other => other,
        })?;
    Ok(())
}

fn unreachable_cluster(what: &str, error: &kube::Error) -> AdminError {
    tracing::warn!(%error, "the Kubernetes API failed on {what}");
    AdminError::ClusterUnreachable
}

/// Why `novads serve` could not connect to the cluster it was pointed at.
#[derive(Debug, thiserror::Error)]
#[error("kubernetes: {0}")]
pub struct ClusterError(String);

/// A client when the environment names a cluster: inside a Pod (`KUBERNETES_SERVICE_HOST`) or
/// with `KUBECONFIG` set; `None` otherwise, and the cluster-backed endpoints answer 503.
pub async fn client_from_environment() -> Result<Option<kube::Client>, ClusterError> {
    let named = std::env::var_os("KUBECONFIG").is_some()
        || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    if !named {
        return Ok(None);
    }
    let config = kube::Config::infer()
        .await
        .map_err(|e| ClusterError(e.to_string()))?;
    kube::Client::try_from(config)
        .map(Some)
        .map_err(|e| ClusterError(e.to_string()))
}

/// Every Municipality of the cluster.
pub async fn municipalities(client: &kube::Client) -> Result<Vec<Municipality>, kube::Error> {
    let api: Api<Municipality> = Api::all(client.clone());
    Ok(api.list(&ListParams::default()).await?.items)
}

/// What authorisation reads of a Municipality. Read through its JSON so that groups the
/// custom resource gains (`securityOfficerGroups`) are honoured as soon as they are written.
pub fn groups_of(municipality: &Municipality) -> Option<MunicipalityGroups> {
    serde_json::to_value(&municipality.spec)
        .ok()
        .and_then(|spec| serde_json::from_value(spec).ok())
}
