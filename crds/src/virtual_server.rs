//! `VirtualServer`: a municipality's virtual server. Part 1 defines the shape only; the
//! controller that turns it into a KubeVirt VirtualMachine comes with part 2.

// kube-derive's `printcolumn(type_ = ...)` repeats the same key in every column, which clippy
// mistakes for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A virtual server of a municipality, installed from an approved `ServerImage`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "novads.io",
    version = "v1alpha1",
    kind = "VirtualServer",
    plural = "virtualservers",
    shortname = "vs",
    category = "novads",
    namespaced,
    status = "VirtualServerStatus",
    derive = "PartialEq",
    doc = "A virtual server of a municipality, installed from an approved ServerImage.",
    printcolumn(name = "Image", type_ = "string", json_path = ".spec.image"),
    printcolumn(name = "CPU", type_ = "integer", json_path = ".spec.cpu"),
    printcolumn(name = "Memory", type_ = "string", json_path = ".spec.memory"),
    printcolumn(name = "Run", type_ = "string", json_path = ".spec.runStrategy"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct VirtualServerSpec {
    /// Name of the `ServerImage` to install from.
    #[schemars(length(min = 1, max = 253))]
    pub image: String,

    /// Virtual CPUs.
    #[schemars(range(min = 1, max = 64))]
    pub cpu: i32,

    /// Guest memory, e.g. `4Gi`.
    #[x_kube(validation = kube::core::Rule::new("isQuantity(string(self)) && quantity(string(self)).sign() > 0").message("memory must be a positive quantity such as 4Gi"))]
    pub memory: Quantity,

    /// Whether the server should run: `Always` (restart when it stops), `RerunOnFailure`,
    /// `Manual` (started and stopped by an admin) or `Halted` (stopped).
    #[serde(default)]
    pub run_strategy: RunStrategy,
}

/// Whether and when a virtual server runs (the KubeVirt run strategies).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RunStrategy {
    /// Keep it running; restart it when it stops.
    #[default]
    Always,
    /// Restart it only when it fails.
    RerunOnFailure,
    /// Started and stopped by an admin.
    Manual,
    /// Keep it stopped.
    Halted,
}

/// Observed state of a virtual server.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VirtualServerStatus {
    /// Lifecycle phase, e.g. `Provisioning`, `Running`, `Stopped`, `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,

    /// Current state (`Ready`, `Progressing`, `Degraded`), with reason and message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` of the spec that the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
