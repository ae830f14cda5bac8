//! The Kubernetes objects the security monitor reads, gathered in one place: from the
//! operator's caches, or parsed from multi-document YAML for `novads policies eval -f`.

use k8s_openapi::api::core::v1::{ResourceQuota, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use novads_crds::{Municipality, SecurityExemption, ServerImage, VirtualServer};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::kubevirt::VirtualMachineSnapshot;
use crate::render::split_documents;

/// Everything the cluster collector looks at.
#[derive(Clone, Debug, Default)]
pub struct ClusterObjects {
    pub municipalities: Vec<Municipality>,
    pub virtual_servers: Vec<VirtualServer>,
    pub server_images: Vec<ServerImage>,
    pub network_policies: Vec<NetworkPolicy>,
    pub services: Vec<Service>,
    pub role_bindings: Vec<RoleBinding>,
    pub resource_quotas: Vec<ResourceQuota>,
    pub snapshots: Vec<VirtualMachineSnapshot>,
    pub exemptions: Vec<SecurityExemption>,
}

/// Why a document could not be read; `document` counts from 1 in input order.
#[derive(Debug, thiserror::Error)]
pub enum ObjectsError {
    #[error("document {document}: not valid YAML: {message}")]
    Yaml { document: usize, message: String },
    #[error("document {document}: {kind} {name}: {message}")]
    Invalid {
        document: usize,
        kind: String,
        name: String,
        message: String,
    },
    #[error("document {document}: has no kind")]
    NoKind { document: usize },
}

impl ClusterObjects {
    /// Parses a multi-document YAML stream (a `List` is unpacked). Kinds the monitor does not
    /// read are ignored, so that a whole namespace dump can be given.
    pub fn from_yaml(stream: &str) -> Result<Self, ObjectsError> {
        let mut objects = Self::default();
        for (index, text) in split_documents(stream).into_iter().enumerate() {
            let document = index + 1;
            let value: Value =
                serde_saphyr::from_str(text).map_err(|error| ObjectsError::Yaml {
                    document,
                    message: error
                        .without_snippet()
                        .to_string()
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" "),
                })?;
            if value.is_null() {
                continue;
            }
            objects.add(value, document)?;
        }
        Ok(objects)
    }

    fn add(&mut self, value: Value, document: usize) -> Result<(), ObjectsError> {
        let Some(kind) = value
            .get("kind")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            return Err(ObjectsError::NoKind { document });
        };
        match kind.as_str() {
            "List" => {
                let items = value
                    .get("items")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for item in items {
                    self.add(item, document)?;
                }
            }
            "Municipality" => self.municipalities.push(parse(value, document, &kind)?),
            "VirtualServer" => self.virtual_servers.push(parse(value, document, &kind)?),
            "ServerImage" => self.server_images.push(parse(value, document, &kind)?),
            "NetworkPolicy" => self.network_policies.push(parse(value, document, &kind)?),
            "Service" => self.services.push(parse(value, document, &kind)?),
            "RoleBinding" => self.role_bindings.push(parse(value, document, &kind)?),
            "ResourceQuota" => self.resource_quotas.push(parse(value, document, &kind)?),
            "VirtualMachineSnapshot" => self.snapshots.push(parse(value, document, &kind)?),
            "SecurityExemption" => self.exemptions.push(parse(value, document, &kind)?),
            _ => {}
        }
        Ok(())
    }
}

fn parse<T: DeserializeOwned>(
    value: Value,
    document: usize,
    kind: &str,
) -> Result<T, ObjectsError> {
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("(unnamed)")
        .to_string();
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        ObjectsError::Invalid {
            document,
            kind: kind.to_string(),
            name,
            message: format!("{path}: {}", error.into_inner()),
        }
    })
}
