//! The desired state of a municipality's tenancy: pure functions from a `Municipality` (and the
//! operator's settings) to the exact objects the operator applies. No I/O happens here; the
//! [controller](super::controller) applies these objects and [`render`](crate::render) prints
//! them.

use std::collections::BTreeMap;
use std::fmt;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{
    LimitRange, LimitRangeItem, LimitRangeSpec, Namespace, ResourceQuota, ResourceQuotaSpec,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use novads_crds::Municipality;

use crate::quantity::{Amount, QuantityError};
use crate::reconcile::{MUNICIPALITY_LABEL, managed_labels};

/// ClusterRole (shipped by the chart) bound to a municipality's admin groups.
pub const ADMIN_CLUSTER_ROLE: &str = "novads-municipality-admin";
/// ClusterRole (shipped by the chart) bound to a municipality's viewer groups.
pub const VIEWER_CLUSTER_ROLE: &str = "novads-municipality-viewer";
/// ClusterRole (shipped by the chart) bound to a municipality's security officer groups: it
/// reads the namespace and manages SecurityExemptions, which the admin role cannot.
pub const SECURITY_OFFICER_CLUSTER_ROLE: &str = "novads-municipality-security-officer";
/// Label carrying the municipality's security profile on its namespace.
pub const SECURITY_PROFILE_LABEL: &str = "novads.io/security-profile";

/// Memory each virtual server's virt-launcher pod needs beyond the guest's memory. KubeVirt's
/// overhead is ~300–400 MiB depending on devices; the upper end keeps a server that fits the
/// municipality's guest-memory budget from being refused by the quota.
pub const LAUNCHER_MEMORY_OVERHEAD: Amount = Amount::mebibytes(400);
/// CPU each virt-launcher pod requests beyond the guest's vCPUs (launcher and helpers).
pub const LAUNCHER_CPU_OVERHEAD: Amount = Amount::milli(100);
/// Room for one transient helper pod at a time (a CDI importer, uploader or clone pod; CDI's
/// defaults limit those to 750m / 600M).
pub const HELPER_CPU_HEADROOM: Amount = Amount::units(1);
/// See [`HELPER_CPU_HEADROOM`].
pub const HELPER_MEMORY_HEADROOM: Amount = Amount::mebibytes(1024);

/// Names of the objects in a municipality's namespace.
pub const RESOURCE_QUOTA_NAME: &str = "novads-quota";
pub const LIMIT_RANGE_NAME: &str = "novads-defaults";
pub const ADMIN_ROLE_BINDING_NAME: &str = "novads-municipality-admins";
pub const VIEWER_ROLE_BINDING_NAME: &str = "novads-municipality-viewers";
pub const SECURITY_OFFICER_ROLE_BINDING_NAME: &str = "novads-municipality-security-officers";
/// Prefix of the per-municipality ClusterRole and ClusterRoleBinding that let its admin,
/// viewer and security officer groups read the ServerImages and their own Municipality (cluster-scoped, so no
/// RoleBinding in the namespace can grant them).
pub const READER_NAME_PREFIX: &str = "novads-municipality-reader-";
pub const POLICY_DEFAULT_DENY: &str = "novads-default-deny";
pub const POLICY_SAME_NAMESPACE: &str = "novads-allow-same-namespace";
pub const POLICY_DNS: &str = "novads-allow-dns";
pub const POLICY_MUNICIPAL_NETWORKS: &str = "novads-allow-municipal-networks";
/// NetworkPolicies earlier versions applied and the controller deletes: the platform ingress
/// namespace reached every port of every server, which no server declares.
pub const RETIRED_NETWORK_POLICIES: &[&str] = &["novads-allow-platform-ingress"];

/// What the operator is configured with, beyond each Municipality's spec.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TenancySettings {
    /// Prefix the kube-apiserver puts before OIDC group names (its `--oidc-groups-prefix`,
    /// e.g. `oidc:`); empty when it adds none.
    pub group_prefix: String,
}

/// A problem in a Municipality spec that CRD validation cannot catch. Each one makes the
/// municipality `Ready=False` with [`SpecProblem::reason`] and the message for its admins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpecProblem {
    /// An entry of `allowedNetworkRanges` is not a usable network.
    InvalidNetworkRange { range: String, why: String },
    /// A quota is not a quantity the operator can size a ResourceQuota with.
    InvalidQuota {
        field: &'static str,
        error: QuantityError,
    },
    /// The namespace `muni-<code>` already belongs to something else.
    CodeConflict { namespace: String, owner: String },
    /// The object lacks what the API server always sets (name, uid).
    IncompleteObject { missing: &'static str },
    /// The name is too long to name the municipality's reader ClusterRole after.
    NameTooLong { length: usize, max: usize },
}

impl SpecProblem {
    /// The condition / event reason, CamelCase as API conventions require.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidNetworkRange { .. } => "InvalidNetworkRange",
            Self::InvalidQuota { .. } => "InvalidQuota",
            Self::CodeConflict { .. } => "CodeConflict",
            Self::IncompleteObject { .. } => "IncompleteObject",
            Self::NameTooLong { .. } => "NameTooLong",
        }
    }
}

impl fmt::Display for SpecProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidNetworkRange { range, why } => {
                write!(f, "spec.allowedNetworkRanges: {range}: {why}")
            }
            Self::InvalidQuota { field, error } => write!(f, "spec.quotas.{field}: {error}"),
            Self::CodeConflict { namespace, owner } => write!(
                f,
                "spec.code: namespace {namespace} already belongs to {owner}; choose another code"
            ),
            Self::IncompleteObject { missing } => write!(f, "metadata.{missing} is missing"),
            Self::NameTooLong { length, max } => write!(
                f,
                "metadata.name has {length} characters; at most {max} fit the name of its \
                 reader ClusterRole"
            ),
        }
    }
}

/// Every problem of a spec, joined for a condition message.
pub fn describe_problems(problems: &[SpecProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Quota figures after parsing and adding the virtualisation overhead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaPlan {
    pub cpu: Amount,
    pub memory: Amount,
    pub storage: Amount,
    pub max_virtual_servers: i64,
}

impl QuotaPlan {
    /// Hard CPU of the ResourceQuota: guest vCPUs + per-server launcher overhead + helper room.
    pub fn hard_cpu(&self) -> Amount {
        self.cpu
            .plus(LAUNCHER_CPU_OVERHEAD.times(self.max_virtual_servers))
            .plus(HELPER_CPU_HEADROOM)
    }

    /// Hard memory of the ResourceQuota: guest memory + per-server launcher overhead + helper room.
    pub fn hard_memory(&self) -> Amount {
        self.memory
            .plus(LAUNCHER_MEMORY_OVERHEAD.times(self.max_virtual_servers))
            .plus(HELPER_MEMORY_HEADROOM)
    }
}

/// Every object of a municipality's tenancy, in apply order (namespace first).
#[derive(Clone, Debug, PartialEq)]
pub struct Tenancy {
    pub namespace: Namespace,
    pub resource_quota: ResourceQuota,
    pub limit_range: LimitRange,
    pub network_policies: Vec<NetworkPolicy>,
    pub role_bindings: Vec<RoleBinding>,
    /// Read access to the ServerImages and to this Municipality only.
    pub reader_role: ClusterRole,
    /// Binds the admin and viewer groups to [`Tenancy::reader_role`].
    pub reader_binding: ClusterRoleBinding,
}

impl Tenancy {
    /// Every object as JSON, in apply order (for rendering and tests).
    pub fn to_values(&self) -> Result<Vec<serde_json::Value>, serde_json::Error> {
        let mut values = vec![
            serde_json::to_value(&self.namespace)?,
            serde_json::to_value(&self.resource_quota)?,
            serde_json::to_value(&self.limit_range)?,
        ];
        for policy in &self.network_policies {
            values.push(serde_json::to_value(policy)?);
        }
        for binding in &self.role_bindings {
            values.push(serde_json::to_value(binding)?);
        }
        values.push(serde_json::to_value(&self.reader_role)?);
        values.push(serde_json::to_value(&self.reader_binding)?);
        Ok(values)
    }
}

/// Checks what CRD validation cannot and plans the tenancy; every problem is reported at once
/// so an admin fixes them in one go.
pub fn plan_tenancy(
    municipality: &Municipality,
    settings: &TenancySettings,
) -> Result<Tenancy, Vec<SpecProblem>> {
    let mut problems = Vec::new();
    let owner = owner_reference(municipality).map_err(|p| vec![p])?;
    // Object names are at most 253 characters; the reader ClusterRole's carries a prefix.
    let max = 253 - READER_NAME_PREFIX.len();
    let length = municipality.name_any().len();
    if length > max {
        problems.push(SpecProblem::NameTooLong { length, max });
    }
    let quota = plan_quota(municipality).map_err(|mut p| problems.append(&mut p));
    let ranges = parse_network_ranges(&municipality.spec.allowed_network_ranges)
        .map_err(|mut p| problems.append(&mut p));
    let (Ok(quota), Ok(ranges), true) = (quota, ranges, problems.is_empty()) else {
        return Err(problems);
    };
    Ok(Tenancy {
        namespace: build_namespace(municipality, &owner),
        resource_quota: build_resource_quota(municipality, &owner, &quota),
        limit_range: build_limit_range(municipality, &owner, &quota),
        network_policies: build_network_policies(municipality, &owner, &ranges),
        role_bindings: build_role_bindings(municipality, &owner, settings),
        reader_role: build_reader_role(municipality, &owner),
        reader_binding: build_reader_binding(municipality, &owner, settings),
    })
}

/// The controller owner reference every child carries, so that Kubernetes garbage-collects the
/// tenancy with the Municipality and the controller hears about changes to it.
pub fn owner_reference(municipality: &Municipality) -> Result<OwnerReference, SpecProblem> {
    if municipality.metadata.name.is_none() {
        return Err(SpecProblem::IncompleteObject { missing: "name" });
    }
    let mut reference = municipality
        .controller_owner_ref(&())
        .ok_or(SpecProblem::IncompleteObject { missing: "uid" })?;
    // Foreground deletion of the Municipality waits for its children.
    reference.block_owner_deletion = Some(true);
    Ok(reference)
}

/// Parses the quotas (CRD validation guarantees only their shape).
pub fn plan_quota(municipality: &Municipality) -> Result<QuotaPlan, Vec<SpecProblem>> {
    let quotas = &municipality.spec.quotas;
    let parse = |field: &'static str, quantity: &Quantity| {
        Amount::parse(&quantity.0).map_err(|error| SpecProblem::InvalidQuota { field, error })
    };
    let results = [
        parse("cpu", &quotas.cpu),
        parse("memory", &quotas.memory),
        parse("storage", &quotas.storage),
    ];
    let problems: Vec<SpecProblem> = results
        .iter()
        .filter_map(|r| r.as_ref().err().cloned())
        .collect();
    match results {
        [Ok(cpu), Ok(memory), Ok(storage)] if problems.is_empty() => Ok(QuotaPlan {
            cpu,
            memory,
            storage,
            max_virtual_servers: i64::from(quotas.max_virtual_servers.max(0)),
        }),
        _ => Err(problems),
    }
}

/// Parses `allowedNetworkRanges`, refusing host addresses with a mask (`10.0.0.1/24`, which
/// usually hides a typo) and ranges that open the tenancy to the whole internet.
pub fn parse_network_ranges(ranges: &[String]) -> Result<Vec<IpNet>, Vec<SpecProblem>> {
    let mut networks = Vec::new();
    let mut problems = Vec::new();
    for range in ranges {
        let problem = |why: String| SpecProblem::InvalidNetworkRange {
            range: range.clone(),
            why,
        };
        match range.parse::<IpNet>() {
            Err(_) => problems.push(problem(
                "not a CIDR network; write it like 10.20.0.0/16 or 2001:db8::/48".into(),
            )),
            Ok(network) if network.prefix_len() == 0 => problems.push(problem(
                "would open the municipality to the whole internet; list the VPN ranges instead"
                    .into(),
            )),
            Ok(network) if network.trunc() != network => problems.push(problem(format!(
                "has host bits set; did you mean {}?",
                network.trunc()
            ))),
            Ok(network) => networks.push(network),
        }
    }
    if problems.is_empty() {
        Ok(networks)
    } else {
        Err(problems)
    }
}

fn labels(municipality: &Municipality) -> BTreeMap<String, String> {
    let mut labels = managed_labels();
    labels.insert(
        MUNICIPALITY_LABEL.to_string(),
        municipality.spec.code.clone(),
    );
    labels
}

fn child_meta(municipality: &Municipality, owner: &OwnerReference, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(municipality.namespace_name()),
        labels: Some(labels(municipality)),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// Namespace `muni-<code>`. Pod Security admission enforces `baseline`, because KubeVirt's
/// virt-launcher pods cannot meet `restricted`; `restricted` is still warned about and audited
/// so that any other workload that falls short is visible (docs/operator.md).
pub fn build_namespace(municipality: &Municipality, owner: &OwnerReference) -> Namespace {
    let mut labels = labels(municipality);
    labels.extend(
        [
            ("pod-security.kubernetes.io/enforce", "baseline"),
            ("pod-security.kubernetes.io/enforce-version", "latest"),
            ("pod-security.kubernetes.io/warn", "restricted"),
            ("pod-security.kubernetes.io/warn-version", "latest"),
            ("pod-security.kubernetes.io/audit", "restricted"),
            ("pod-security.kubernetes.io/audit-version", "latest"),
            (
                SECURITY_PROFILE_LABEL,
                municipality.spec.security_profile.as_str(),
            ),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let annotations = BTreeMap::from([(
        "novads.io/display-name".to_string(),
        municipality.spec.display_name.clone(),
    )]);
    Namespace {
        metadata: ObjectMeta {
            name: Some(municipality.namespace_name()),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![owner.clone()]),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

/// ResourceQuota sized from the spec plus the per-server overhead (see [`QuotaPlan`]).
/// One load balancer per virtual server at most (an exposed server's Service, reached from the
/// municipality's VPN ranges and fenced by its NetworkPolicy); node ports are forbidden, since
/// they would open a port on every node to every network.
pub fn build_resource_quota(
    municipality: &Municipality,
    owner: &OwnerReference,
    quota: &QuotaPlan,
) -> ResourceQuota {
    let cpu = quota.hard_cpu().to_cpu_string();
    let memory = quota.hard_memory().to_string();
    let servers = quota.max_virtual_servers.to_string();
    // A live migration briefly runs a second launcher pod; helper pods come and go.
    let pods = (quota.max_virtual_servers * 2 + 4).to_string();
    let hard = BTreeMap::from(
        [
            ("requests.cpu", cpu.clone()),
            ("limits.cpu", cpu),
            ("requests.memory", memory.clone()),
            ("limits.memory", memory),
            ("requests.storage", quota.storage.to_string()),
            ("count/virtualmachines.kubevirt.io", servers.clone()),
            ("count/virtualservers.novads.io", servers.clone()),
            ("pods", pods),
            ("services.loadbalancers", servers),
            ("services.nodeports", "0".to_string()),
        ]
        .map(|(k, v)| (k.to_string(), Quantity(v))),
    );
    ResourceQuota {
        metadata: child_meta(municipality, owner, RESOURCE_QUOTA_NAME),
        spec: Some(ResourceQuotaSpec {
            hard: Some(hard),
            ..ResourceQuotaSpec::default()
        }),
        ..ResourceQuota::default()
    }
}

/// LimitRange with defaults for containers that set none (helper pods; virtual servers set
/// their own requests and limits), and a per-disk ceiling of the whole storage quota.
pub fn build_limit_range(
    municipality: &Municipality,
    owner: &OwnerReference,
    quota: &QuotaPlan,
) -> LimitRange {
    let quantities = |pairs: [(&str, &str); 2]| {
        Some(BTreeMap::from(
            pairs.map(|(k, v)| (k.to_string(), Quantity(v.to_string()))),
        ))
    };
    LimitRange {
        metadata: child_meta(municipality, owner, LIMIT_RANGE_NAME),
        spec: Some(LimitRangeSpec {
            limits: vec![
                LimitRangeItem {
                    type_: "Container".to_string(),
                    default: quantities([("cpu", "1"), ("memory", "1Gi")]),
                    default_request: quantities([("cpu", "100m"), ("memory", "256Mi")]),
                    ..LimitRangeItem::default()
                },
                LimitRangeItem {
                    type_: "PersistentVolumeClaim".to_string(),
                    max: Some(BTreeMap::from([(
                        "storage".to_string(),
                        Quantity(quota.storage.to_string()),
                    )])),
                    ..LimitRangeItem::default()
                },
            ],
        }),
    }
}

fn all_pods() -> LabelSelector {
    LabelSelector::default()
}

fn namespace_selector(name: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(
            "kubernetes.io/metadata.name".to_string(),
            name.to_string(),
        )])),
        ..LabelSelector::default()
    }
}

fn policy(
    municipality: &Municipality,
    owner: &OwnerReference,
    name: &str,
    ingress: Option<Vec<NetworkPolicyIngressRule>>,
    egress: Option<Vec<NetworkPolicyEgressRule>>,
) -> NetworkPolicy {
    let mut policy_types = Vec::new();
    if ingress.is_some() {
        policy_types.push("Ingress".to_string());
    }
    if egress.is_some() {
        policy_types.push("Egress".to_string());
    }
    NetworkPolicy {
        metadata: child_meta(municipality, owner, name),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(all_pods()),
            policy_types: Some(policy_types),
            ingress,
            egress,
        }),
    }
}

/// NetworkPolicies: deny everything, then allow traffic within the namespace, DNS to
/// kube-system, and egress to the municipality's own networks. Ingress from outside the
/// namespace is admitted by no tenancy policy: each server's `<server>-expose` policy admits
/// its declared ports from their declared sources alone (docs/operator.md), so a port declared
/// open to part of the municipal range is not reachable from the rest of it, and the
/// platform's ingress controller reaches nothing the CRD cannot declare.
pub fn build_network_policies(
    municipality: &Municipality,
    owner: &OwnerReference,
    ranges: &[IpNet],
) -> Vec<NetworkPolicy> {
    let same_namespace = || {
        vec![NetworkPolicyPeer {
            pod_selector: Some(all_pods()),
            ..Default::default()
        }]
    };
    let dns_port = |protocol: &str| NetworkPolicyPort {
        port: Some(IntOrString::Int(53)),
        protocol: Some(protocol.to_string()),
        ..NetworkPolicyPort::default()
    };
    let dns_peer = NetworkPolicyPeer {
        namespace_selector: Some(namespace_selector("kube-system")),
        pod_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "k8s-app".to_string(),
                "kube-dns".to_string(),
            )])),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    };
    let ip_peers: Vec<NetworkPolicyPeer> = ranges
        .iter()
        .map(|network| NetworkPolicyPeer {
            ip_block: Some(IPBlock {
                cidr: network.to_string(),
                except: None,
            }),
            ..NetworkPolicyPeer::default()
        })
        .collect();
    // With no ranges the policy selects pods but allows nothing, which adds nothing to the
    // default deny; keeping it avoids having to delete it when the last range goes.
    let range_egress = if ip_peers.is_empty() {
        vec![]
    } else {
        vec![NetworkPolicyEgressRule {
            to: Some(ip_peers),
            ports: None,
        }]
    };
    vec![
        policy(
            municipality,
            owner,
            POLICY_DEFAULT_DENY,
            Some(vec![]),
            Some(vec![]),
        ),
        policy(
            municipality,
            owner,
            POLICY_SAME_NAMESPACE,
            Some(vec![NetworkPolicyIngressRule {
                from: Some(same_namespace()),
                ports: None,
            }]),
            Some(vec![NetworkPolicyEgressRule {
                to: Some(same_namespace()),
                ports: None,
            }]),
        ),
        policy(
            municipality,
            owner,
            POLICY_DNS,
            None,
            Some(vec![NetworkPolicyEgressRule {
                to: Some(vec![dns_peer]),
                ports: Some(vec![dns_port("UDP"), dns_port("TCP")]),
            }]),
        ),
        policy(
            municipality,
            owner,
            POLICY_MUNICIPAL_NETWORKS,
            None,
            Some(range_egress),
        ),
    ]
}

/// OIDC group name as the kube-apiserver sees it: `<prefix><realm>:<group>`.
pub fn qualified_group(settings: &TenancySettings, realm: &str, group: &str) -> String {
    format!("{}{realm}:{group}", settings.group_prefix)
}

/// One RoleBinding per role, listing every group as a subject; a group removed from the spec
/// disappears from the subjects on the next apply (the list is replaced as a whole).
pub fn build_role_bindings(
    municipality: &Municipality,
    owner: &OwnerReference,
    settings: &TenancySettings,
) -> Vec<RoleBinding> {
    let binding = |name: &str, cluster_role: &str, groups: &[String]| {
        let mut names: Vec<String> = groups
            .iter()
            .map(|group| qualified_group(settings, &municipality.spec.realm, group))
            .collect();
        names.sort();
        names.dedup();
        RoleBinding {
            metadata: child_meta(municipality, owner, name),
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".to_string()),
                kind: "ClusterRole".to_string(),
                name: cluster_role.to_string(),
            },
            subjects: Some(
                names
                    .into_iter()
                    .map(|name| Subject {
                        api_group: Some("rbac.authorization.k8s.io".to_string()),
                        kind: "Group".to_string(),
                        name,
                        namespace: None,
                    })
                    .collect(),
            ),
        }
    };
    vec![
        binding(
            ADMIN_ROLE_BINDING_NAME,
            ADMIN_CLUSTER_ROLE,
            &municipality.spec.admin_groups,
        ),
        binding(
            VIEWER_ROLE_BINDING_NAME,
            VIEWER_CLUSTER_ROLE,
            &municipality.spec.viewer_groups,
        ),
        binding(
            SECURITY_OFFICER_ROLE_BINDING_NAME,
            SECURITY_OFFICER_CLUSTER_ROLE,
            &municipality.spec.security_officer_groups,
        ),
    ]
}

/// Metadata of a cluster-scoped child: no namespace, owned by the (cluster-scoped)
/// Municipality, so the garbage collector removes it with the Municipality.
fn cluster_child_meta(municipality: &Municipality, owner: &OwnerReference) -> ObjectMeta {
    ObjectMeta {
        name: Some(format!("{READER_NAME_PREFIX}{}", municipality.name_any())),
        labels: Some(labels(municipality)),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// ClusterRole `novads-municipality-reader-<name>`: `get/list/watch` on ServerImages (the
/// catalogue every municipality chooses from) and `get` on this Municipality alone
/// (`resourceNames`), so its people see their quota, usage and compliance but no other
/// municipality's. The operator may create it because it holds these permissions itself.
pub fn build_reader_role(municipality: &Municipality, owner: &OwnerReference) -> ClusterRole {
    let rule = |resources: &str, verbs: &[&str], names: Option<Vec<String>>| PolicyRule {
        api_groups: Some(vec![novads_crds::GROUP.to_string()]),
        resources: Some(vec![resources.to_string()]),
        verbs: verbs.iter().map(|verb| (*verb).to_string()).collect(),
        resource_names: names,
        ..PolicyRule::default()
    };
    ClusterRole {
        metadata: cluster_child_meta(municipality, owner),
        rules: Some(vec![
            rule("serverimages", &["get", "list", "watch"], None),
            rule(
                "municipalities",
                &["get"],
                Some(vec![municipality.name_any()]),
            ),
        ]),
        ..ClusterRole::default()
    }
}

/// ClusterRoleBinding `novads-municipality-reader-<name>`: every admin, viewer and security
/// officer group of the municipality → its reader ClusterRole (the subject list is replaced as
/// a whole).
pub fn build_reader_binding(
    municipality: &Municipality,
    owner: &OwnerReference,
    settings: &TenancySettings,
) -> ClusterRoleBinding {
    let mut names: Vec<String> = municipality
        .spec
        .admin_groups
        .iter()
        .chain(&municipality.spec.viewer_groups)
        .chain(&municipality.spec.security_officer_groups)
        .map(|group| qualified_group(settings, &municipality.spec.realm, group))
        .collect();
    names.sort();
    names.dedup();
    let metadata = cluster_child_meta(municipality, owner);
    ClusterRoleBinding {
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".to_string()),
            kind: "ClusterRole".to_string(),
            name: metadata.name.clone().unwrap_or_default(),
        },
        metadata,
        subjects: Some(
            names
                .into_iter()
                .map(|name| Subject {
                    api_group: Some("rbac.authorization.k8s.io".to_string()),
                    kind: "Group".to_string(),
                    name,
                    namespace: None,
                })
                .collect(),
        ),
    }
}

/// Whether the namespace `muni-<code>` already belongs to another owner (another Municipality
/// with the same code, or something created by hand).
pub fn namespace_conflict(
    municipality: &Municipality,
    existing: Option<&Namespace>,
) -> Option<SpecProblem> {
    let existing = existing?;
    let ours = municipality.metadata.uid.as_deref();
    let controller = existing
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|reference| reference.controller == Some(true));
    let owner = match controller {
        Some(reference) if Some(reference.uid.as_str()) == ours => return None,
        Some(reference) => format!("{} {}", reference.kind, reference.name),
        // A namespace without a controller that we labelled ourselves is a tenancy whose
        // owner reference was stripped (orphaned); adopt it. Anything else is not ours.
        None if existing
            .metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get(MUNICIPALITY_LABEL))
            == Some(&municipality.spec.code) =>
        {
            return None;
        }
        None => "another owner (it was not created by novads)".to_string(),
    };
    Some(SpecProblem::CodeConflict {
        namespace: municipality.namespace_name(),
        owner,
    })
}
