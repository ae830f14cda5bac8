//! The admin API's view of the Kubernetes cluster, the source of truth for Municipalities:
//! connecting (in-cluster or `KUBECONFIG`) and reading what authorisation needs.

use kube::Api;
use kube::api::ListParams;
use novads_crds::Municipality;

use super::authz::MunicipalityGroups;

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
