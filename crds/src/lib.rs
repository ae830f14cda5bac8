//! Custom resource types of novads (API group `novads.io`, version `v1alpha1`).

mod municipality;
mod security_exemption;
mod server_image;
mod virtual_server;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use municipality::*;
pub use security_exemption::*;
pub use server_image::*;
pub use virtual_server::*;

/// The API group of every novads custom resource.
pub const GROUP: &str = "novads.io";
/// The served and stored version.
pub const VERSION: &str = "v1alpha1";

/// Every CRD novads defines, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        Municipality::crd(),
        SecurityExemption::crd(),
        ServerImage::crd(),
        VirtualServer::crd(),
    ]
}

/// The file a CRD is checked in as: `<plural>.<group>.yaml`.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.clone().unwrap_or_default())
}

/// One CRD as a YAML document.
pub fn crd_yaml(crd: &CustomResourceDefinition) -> String {
    // Serialising a CRD (plain data) cannot fail.
    format!("---\n{}", serde_saphyr::to_string(crd).unwrap_or_default())
}

/// Every CRD as one multi-document YAML stream (what `novads crds` prints).
pub fn crds_yaml() -> String {
    crds().iter().map(crd_yaml).collect()
}
