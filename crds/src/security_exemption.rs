//! `SecurityExemption`: a municipality's documented, time-limited acceptance of a failing
//! minimum-security check.

// kube-derive's `printcolumn(type_ = ...)` repeats the same key in every column, which clippy
// mistakes for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Accepts the risk of one failing security check for some of the municipality's subjects,
/// with a reason, an approver and an expiry at most one year after it is created. It lives in
/// the municipality's namespace and covers only that municipality. The security monitor shows
/// exempted results as `skip` with the reason; past the expiry the exemption stops applying and
/// is reported.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "novads.io",
    version = "v1alpha1",
    kind = "SecurityExemption",
    plural = "securityexemptions",
    shortname = "sexm",
    category = "novads",
    namespaced,
    derive = "PartialEq",
    doc = "A municipality's documented, time-limited acceptance of a failing minimum-security check (reason, approver, expiry at most one year ahead).",
    printcolumn(name = "Check", type_ = "string", json_path = ".spec.check"),
    printcolumn(name = "Expires", type_ = "date", json_path = ".spec.expires"),
    printcolumn(name = "Approver", type_ = "string", json_path = ".spec.approver"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SecurityExemptionSpec {
    /// Id of the check it covers, e.g. `image.in-support`. Immutable: another check needs
    /// another exemption.
    #[schemars(
        length(min = 3, max = 127),
        regex(pattern = r"^[a-z][a-z0-9-]*\.[a-z][a-z0-9-]*$")
    )]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("check is immutable: create another exemption for another check"))]
    pub check: String,

    /// Names of the subjects it covers within the municipality (VirtualServer names, the
    /// realm's name, the Municipality's name); every subject of the check when omitted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 253)))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub subjects: Vec<String>,

    /// Why the risk is accepted and what will end it, for the auditor.
    #[schemars(length(min = 10, max = 1000))]
    pub reason: String,

    /// The person who approved it, e.g. `anna@talsi` (the municipality's security officer).
    #[schemars(length(min = 1, max = 253))]
    pub approver: String,

    /// When it stops applying (RFC 3339, e.g. `2027-06-30T00:00:00Z`), at most one year after
    /// its creation; the monitor ignores and reports a longer one.
    #[schemars(length(min = 20, max = 64), extend("format" = "date-time"))]
    pub expires: String,
}
