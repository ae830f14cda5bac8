//! `ServerImage`: an operating-system image the platform offers for virtual servers.

// kube-derive's `printcolumn(type_ = ...)` repeats the same key in every column, which clippy
// mistakes for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An operating-system image that municipalities may install on virtual servers. Only
/// `approved` images whose support has not ended can be used.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "novads.io",
    version = "v1alpha1",
    kind = "ServerImage",
    plural = "serverimages",
    shortname = "simg",
    category = "novads",
    derive = "PartialEq",
    doc = "An operating-system image that municipalities may install on virtual servers, with its support end and last patch dates.",
    printcolumn(name = "OS", type_ = "string", json_path = ".spec.osFamily"),
    printcolumn(name = "Version", type_ = "string", json_path = ".spec.version"),
    printcolumn(name = "Approved", type_ = "boolean", json_path = ".spec.approved"),
    printcolumn(name = "Support-End", type_ = "date", json_path = ".spec.supportEnd"),
    printcolumn(name = "Patched", type_ = "date", json_path = ".spec.lastPatched"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ServerImageSpec {
    /// Where the image comes from.
    pub source: ServerImageSource,

    /// Operating-system family.
    pub os_family: OsFamily,

    /// Operating-system version, e.g. `12` for Debian 12 or `2022` for Windows Server 2022.
    #[schemars(length(min = 1, max = 64))]
    pub version: String,

    /// Date (YYYY-MM-DD) after which the vendor no longer ships security updates. Servers on
    /// the image are reported as non-compliant after it.
    #[schemars(extend("format" = "date"))]
    pub support_end: String,

    /// Date (YYYY-MM-DD) of the newest security patches included in the image.
    #[schemars(extend("format" = "date"))]
    pub last_patched: String,

    /// Smallest root disk the image fits on, e.g. `20Gi`.
    #[x_kube(validation = kube::core::Rule::new("isQuantity(string(self)) && quantity(string(self)).sign() > 0").message("minDiskSize must be a positive quantity such as 20Gi"))]
    #[schemars(extend("maxLength" = crate::QUANTITY_MAX_LENGTH))]
    pub min_disk_size: Quantity,

    /// Whether the platform team approved the image for municipal use.
    #[serde(default)]
    pub approved: bool,
}

/// Where an image comes from: exactly one of `dataSource`, `http` or `registry`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("[has(self.dataSource), has(self.http), has(self.registry)].filter(x, x).size() == 1").message("set exactly one of dataSource, http or registry"))]
pub struct ServerImageSource {
    /// A CDI `DataSource` (golden image) that already holds the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_source: Option<DataSourceReference>,

    /// An `https://` URL of a disk image (qcow2 or raw, optionally compressed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 9, max = 2048), regex(pattern = r"^https?://"))]
    pub http: Option<String>,

    /// A container-disk image reference, e.g. `docker://quay.io/containerdisks/debian:12`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 10, max = 2048),
        regex(pattern = r"^(docker|oci-archive)://")
    )]
    pub registry: Option<String>,
}

/// Reference to a CDI `DataSource` (`cdi.kubevirt.io/v1beta1`).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DataSourceReference {
    /// Name of the DataSource.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of the DataSource, e.g. `novads-images`.
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
}

/// Operating-system family of an image.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OsFamily {
    /// A Linux distribution.
    Linux,
    /// Microsoft Windows Server.
    Windows,
    /// Anything else (BSD, appliances).
    Other,
}
