//! `Municipality`: one municipality's isolated, quota-bounded share of the platform.

// kube-derive's `printcolumn(type_ = ...)` repeats the same key in every column, which clippy
// mistakes for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired tenancy of a municipality (pašvaldība): namespace `muni-<code>` with a resource quota,
/// default limits, network isolation and role bindings for the municipality's directory groups.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "novads.io",
    version = "v1alpha1",
    kind = "Municipality",
    plural = "municipalities",
    shortname = "muni",
    category = "novads",
    status = "MunicipalityStatus",
    derive = "PartialEq",
    doc = "A municipality that uses the platform; the operator turns it into an isolated, quota-bounded tenancy (namespace muni-<code>) administered by the municipality's own directory groups.",
    printcolumn(name = "Code", type_ = "string", json_path = ".spec.code"),
    printcolumn(name = "Realm", type_ = "string", json_path = ".spec.realm"),
    printcolumn(name = "Namespace", type_ = "string", json_path = ".status.namespace"),
    printcolumn(
        name = "Servers",
        type_ = "integer",
        json_path = ".status.usage.virtualServers"
    ),
    printcolumn(
        name = "Max",
        type_ = "integer",
        json_path = ".spec.quotas.maxVirtualServers"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct MunicipalitySpec {
    /// Short, stable identifier of the municipality, e.g. `talsi`. Names its namespace
    /// (`muni-<code>`) and labels everything the platform creates for it. Lowercase letters,
    /// digits and `-`, 2–40 characters, starting with a letter. Immutable.
    #[schemars(
        length(min = 2, max = 40),
        regex(pattern = r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
    )]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("code is immutable: it names the municipality's namespace"))]
    pub code: String,

    /// Name shown to people, e.g. `Talsu novads`.
    #[schemars(length(min = 1, max = 128))]
    pub display_name: String,

    /// novads sign-on realm whose directory holds the municipality's employees, e.g. `talsi`
    /// (users sign in as `name@talsi`; their groups arrive as `talsi:<group>`). Immutable.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("realm is immutable: it decides who administers the municipality"))]
    pub realm: String,

    /// Directory groups of the realm whose members administer the municipality's servers,
    /// written without the realm, e.g. `it-admins` (bound as `<realm>:it-admins`). Keep the
    /// group small: at most three administrators per institution is the recommended practice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        inner(length(min = 1, max = 128), regex(pattern = r"^[^:\s]([^:]*[^:\s])?$"))
    )]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub admin_groups: Vec<String>,

    /// Directory groups of the realm whose members may see, but not change, the municipality's
    /// servers, quota and events. Written without the realm, like `adminGroups`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        inner(length(min = 1, max = 128), regex(pattern = r"^[^:\s]([^:]*[^:\s])?$"))
    )]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub viewer_groups: Vec<String>,

    /// Directory groups of the realm whose members are the municipality's security officers:
    /// they read everything in its namespace and its compliance Reports, and manage its
    /// SecurityExemptions, which its admins cannot (nobody exempts their own servers).
    /// Written without the realm, like `adminGroups`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        inner(length(min = 1, max = 128), regex(pattern = r"^[^:\s]([^:]*[^:\s])?$"))
    )]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub security_officer_groups: Vec<String>,

    /// Resources the municipality may use in total.
    pub quotas: MunicipalityQuotas,

    /// Networks (CIDRs) that the municipality's servers may reach and that their exposed ports
    /// may admit (each port only from its own `allowedSources`, which must lie within these),
    /// typically the municipality's VPN ranges, e.g. `10.20.0.0/16`. Everything else is denied,
    /// except traffic within the municipality and DNS. `0.0.0.0/0` and `::/0` are refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(
            length(min = 3, max = 43),
            regex(pattern = r"^[0-9a-fA-F:.]+/[0-9]{1,3}$")
        )
    )]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub allowed_network_ranges: Vec<String>,

    /// Minimum-security profile the platform checks the municipality against: `Standard`
    /// (Cabinet Regulation No. 442 minimum requirements) or `Elevated` (additional checks for
    /// systems that hold sensitive personal data).
    #[serde(default)]
    pub security_profile: SecurityProfile,

    /// What deleting this Municipality does while it still has virtual servers: `Retain`
    /// (default) refuses and keeps everything until the servers are removed; `Delete` deletes
    /// the namespace with all its servers and disks.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// Resources a municipality may use in total. The operator adds the per-server virtualisation
/// overhead on top when it sizes the namespace's ResourceQuota (see docs/operator.md).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MunicipalityQuotas {
    /// Virtual CPUs for all virtual servers together, e.g. `16` or `7500m`.
    #[x_kube(validation = kube::core::Rule::new(NON_NEGATIVE_QUANTITY).message("cpu must be a non-negative quantity such as 16 or 7500m"))]
    #[schemars(extend("maxLength" = crate::QUANTITY_MAX_LENGTH))]
    pub cpu: Quantity,

    /// Guest memory for all virtual servers together, e.g. `64Gi`.
    #[x_kube(validation = kube::core::Rule::new(NON_NEGATIVE_QUANTITY).message("memory must be a non-negative quantity such as 64Gi"))]
    #[schemars(extend("maxLength" = crate::QUANTITY_MAX_LENGTH))]
    pub memory: Quantity,

    /// Disk space for all virtual servers together, e.g. `2Ti`.
    #[x_kube(validation = kube::core::Rule::new(NON_NEGATIVE_QUANTITY).message("storage must be a non-negative quantity such as 2Ti"))]
    #[schemars(extend("maxLength" = crate::QUANTITY_MAX_LENGTH))]
    pub storage: Quantity,

    /// How many virtual servers the municipality may have at once.
    #[schemars(range(min = 0, max = 1000))]
    pub max_virtual_servers: i32,
}

/// Longest quantity string a CRD accepts (`maxLength` of every quantity field). The API server
/// estimates the cost of a CEL rule from its inputs' bounds; 64 characters hold any quantity
/// a municipality needs (`1Ti`, `7500m`, `1.5e12`) many times over.
pub const QUANTITY_MAX_LENGTH: u32 = 64;

/// CEL rule for a non-negative `int-or-string` quantity (Kubernetes ≥ 1.29 quantity library).
const NON_NEGATIVE_QUANTITY: &str =
    "isQuantity(string(self)) && quantity(string(self)).sign() >= 0";

/// Minimum-security profile a municipality is checked against.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SecurityProfile {
    /// The minimum security requirements every municipality must meet.
    #[default]
    Standard,
    /// Standard plus checks for systems that hold sensitive personal data.
    Elevated,
}

impl SecurityProfile {
    /// The value as written in the spec and in labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standard => "Standard",
            Self::Elevated => "Elevated",
        }
    }
}

/// What deleting a Municipality does to its virtual servers.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// Refuse to delete while virtual servers exist.
    #[default]
    Retain,
    /// Delete the namespace with all virtual servers and disks.
    Delete,
}

/// Observed state of a municipality's tenancy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MunicipalityStatus {
    /// Namespace that holds the municipality's servers (`muni-<code>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,

    /// Resources in use, as counted by the namespace's ResourceQuota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<MunicipalityUsage>,

    /// Summary of the latest minimum-security evaluation (written by the security monitor;
    /// details in the OpenReports `Report` of the namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compliance: Option<ComplianceSummary>,

    /// Current state: `Ready` (the tenancy matches the spec) and `Degraded` (something the
    /// operator must fix is failing), with a reason and a message for people.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` of the spec that the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Resources in use, from the ResourceQuota of the municipality's namespace. Includes the
/// virtualisation overhead of each server.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MunicipalityUsage {
    /// Virtual servers (KubeVirt VirtualMachines) that exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_servers: Option<i64>,
    /// CPU requested by running servers, including overhead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    /// Memory requested by running servers, including overhead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
    /// Disk space claimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<Quantity>,
}

/// Summary of the latest minimum-security evaluation of a municipality.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ComplianceSummary {
    /// Checks that passed.
    #[serde(default)]
    pub passed: i64,
    /// Checks that failed.
    #[serde(default)]
    pub failed: i64,
    /// Checks that only warned.
    #[serde(default)]
    pub warnings: i64,
    /// When the evaluation ran (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_evaluated: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

impl Municipality {
    /// Name of the namespace that holds this municipality's servers.
    pub fn namespace_name(&self) -> String {
        namespace_for_code(&self.spec.code)
    }
}

/// Namespace of the municipality with the given code: `muni-<code>`.
pub fn namespace_for_code(code: &str) -> String {
    format!("muni-{code}")
}
