//! Effective exposure: who reaches which port of a virtual server, computed from the
//! NetworkPolicies of its namespace and the Services that select it. Pure (no I/O), so the
//! operator's tests prove with it that what the builders generate admits exactly what a server
//! declares, and the security monitor can ask the same question of what is in a cluster.
//!
//! # Semantics (as Kubernetes defines them for `networking.k8s.io/v1` NetworkPolicies)
//!
//! - Only policies in the server's namespace count, and of those only the ones whose
//!   `podSelector` matches the labels of the server's virt-launcher pod (an empty selector
//!   matches every pod) and that govern ingress: `policyTypes` names `Ingress`, or is absent
//!   (then every policy governs ingress).
//! - A pod that no such policy selects is not isolated: every source reaches every port
//!   ([`ServerExposure::isolated`] is `false` and one [`Admission`] says so).
//! - A selected pod admits the union of the ingress rules of every policy that selects it; a
//!   policy with no rules (a default deny) isolates and admits nothing.
//! - In a rule, absent or empty `from` means every source and absent or empty `ports` every
//!   port. A port without a number is every port of its protocol, `endPort` makes a range, the
//!   protocol defaults to TCP. A named port is kept as written ([`PortMatch::Named`]): names are
//!   resolved against the pod's container ports, which the operator's servers do not name, so
//!   on them it admits nothing; [`drift`] still reports one as undeclared.
//! - A peer is an `ipBlock` (its `cidr` without the `except` blocks: [`Sources::networks`]) or
//!   pods ([`PodSource`]): `podSelector` alone means pods of the policy's own namespace,
//!   `namespaceSelector` alone every pod of the matching namespaces, both together the matching
//!   pods of the matching namespaces.
//! - A Service publishes the server when its `selector` matches the pod's labels (a Service
//!   without a selector publishes nothing by itself). Traffic through it is still filtered by
//!   the pod's policies on the target port; a `LoadBalancer` additionally admits only its
//!   `loadBalancerSourceRanges`, when set ([`Publication::networks`]).
//!
//! Addresses are sets, not lists ([`AddressSet`]): `10.20.0.0/17` and `10.20.128.0/17` equal
//! `10.20.0.0/16`, so comparisons do not depend on how a policy happens to spell a range.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};
use novads_crds::VirtualServer;

/// Why the exposure could not be computed: an object that the API server would not have
/// accepted, named so it can be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExposureError {
    #[error("{object}: {field}: {value:?} is not a CIDR")]
    InvalidCidr {
        object: String,
        field: &'static str,
        value: String,
    },
    #[error("{object}: label selector: {why}")]
    InvalidSelector { object: String, why: String },
    #[error("{object}: protocol {value:?} is not TCP, UDP or SCTP")]
    InvalidProtocol { object: String, value: String },
    #[error("{object}: port {value} is not a port number (1-65535)")]
    InvalidPort { object: String, value: i32 },
    #[error("{object}: a peer must set ipBlock, or podSelector and/or namespaceSelector")]
    InvalidPeer { object: String },
}

// ---------------------------------------------------------------------------------------------
// Address sets
// ---------------------------------------------------------------------------------------------

/// A set of IPv4 and IPv6 addresses, kept as the fewest CIDRs that cover exactly it; two sets
/// are equal exactly when their lists are.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct AddressSet(Vec<IpNet>);

impl AddressSet {
    /// No address.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Every IPv4 and IPv6 address.
    pub fn everywhere() -> Self {
        Self::from_networks([
            IpNet::V4(ipnet::Ipv4Net::default()),
            IpNet::V6(ipnet::Ipv6Net::default()),
        ])
    }

    /// The addresses of all the networks (host bits are ignored: `10.0.0.1/24` is `10.0.0.0/24`).
    pub fn from_networks(networks: impl IntoIterator<Item = IpNet>) -> Self {
        let networks: Vec<IpNet> = networks.into_iter().map(|n| n.trunc()).collect();
        Self(IpNet::aggregate(&networks))
    }

    /// Parses CIDRs (`field` and `object` name them in the error).
    pub fn parse<'a>(
        values: impl IntoIterator<Item = &'a String>,
        object: &str,
        field: &'static str,
    ) -> Result<Self, ExposureError> {
        let networks = values
            .into_iter()
            .map(|value| {
                value
                    .parse::<IpNet>()
                    .map_err(|_| ExposureError::InvalidCidr {
                        object: object.to_string(),
                        field,
                        value: value.clone(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::from_networks(networks))
    }

    /// The CIDRs, fewest possible, IPv4 before IPv6, in address order.
    pub fn networks(&self) -> &[IpNet] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        self.0.iter().any(|network| network.contains(&address))
    }

    pub fn union(&self, other: &Self) -> Self {
        Self::from_networks(self.0.iter().chain(&other.0).copied())
    }

    pub fn intersection(&self, other: &Self) -> Self {
        // Two CIDRs either nest or are disjoint, so the intersection is the smaller of each
        // nested pair.
        let mut common = Vec::new();
        for a in &self.0 {
            for b in &other.0 {
                if a.contains(b) {
                    common.push(*b);
                } else if b.contains(a) {
                    common.push(*a);
                }
            }
        }
        Self::from_networks(common)
    }

    /// The addresses of `self` that are not in `other`.
    pub fn difference(&self, other: &Self) -> Self {
        let mut remaining = self.0.clone();
        for hole in &other.0 {
            remaining = remaining
                .into_iter()
                .flat_map(|network| subtract(network, *hole))
                .collect();
        }
        Self::from_networks(remaining)
    }
}

impl fmt::Display for AddressSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let networks: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        write!(f, "[{}]", networks.join(", "))
    }
}

/// `network` without `hole`, as CIDRs: the halves beside the hole at each level down to it.
fn subtract(network: IpNet, hole: IpNet) -> Vec<IpNet> {
    if hole.contains(&network) {
        return Vec::new();
    }
    if !network.contains(&hole) {
        return vec![network];
    }
    let mut rest = Vec::new();
    let mut current = network;
    while current != hole {
        let Ok(halves) = current.subnets(current.prefix_len() + 1) else {
            // Unreachable: `current` strictly contains `hole`, so it has a longer prefix left.
            break;
        };
        let mut next = current;
        for half in halves {
            if half.contains(&hole) {
                next = half;
            } else {
                rest.push(half);
            }
        }
        current = next;
    }
    rest
}

// ---------------------------------------------------------------------------------------------
// Ports and sources
// ---------------------------------------------------------------------------------------------

/// Transport protocol of a NetworkPolicy port or Service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// The protocol of a Kubernetes object (TCP when absent).
    fn parse(value: Option<&str>, object: &str) -> Result<Self, ExposureError> {
        match value.unwrap_or("TCP") {
            "TCP" => Ok(Self::Tcp),
            "UDP" => Ok(Self::Udp),
            "SCTP" => Ok(Self::Sctp),
            other => Err(ExposureError::InvalidProtocol {
                object: object.to_string(),
                value: other.to_string(),
            }),
        }
    }
}

impl From<novads_crds::Protocol> for Protocol {
    fn from(protocol: novads_crds::Protocol) -> Self {
        match protocol {
            novads_crds::Protocol::Tcp => Self::Tcp,
            novads_crds::Protocol::Udp => Self::Udp,
        }
    }
}

/// The ports an ingress rule admits.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PortMatch {
    /// Every port of every protocol (a rule without `ports`).
    All,
    /// Ports `first..=last` of one protocol.
    Range {
        protocol: Protocol,
        first: u16,
        last: u16,
    },
    /// A named container port, kept as written (see the module's semantics).
    Named { protocol: Protocol, name: String },
}

impl PortMatch {
    /// One port.
    pub fn port(protocol: Protocol, port: u16) -> Self {
        Self::Range {
            protocol,
            first: port,
            last: port,
        }
    }

    /// Whether it admits `port` of `protocol`.
    pub fn covers(&self, protocol: Protocol, port: u16) -> bool {
        match self {
            Self::All => true,
            Self::Range {
                protocol: p,
                first,
                last,
            } => *p == protocol && (*first..=*last).contains(&port),
            Self::Named { .. } => false,
        }
    }
}

/// Which namespaces a [`PodSource`] admits pods from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamespaceScope {
    /// The server's own namespace (a peer with only `podSelector`).
    Same,
    /// Namespaces whose labels match (a peer's `namespaceSelector`; empty: every namespace).
    Matching(Selector),
}

/// Pods a rule admits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSource {
    pub namespaces: NamespaceScope,
    /// Pods whose labels match (empty: every pod of those namespaces).
    pub pods: Selector,
}

impl PodSource {
    /// Whether some pod of namespace `namespace` (labelled `namespace_labels`) may be admitted,
    /// from the server's namespace `own`. The pods' labels are not known, so a pod selector
    /// is assumed to match one of them.
    pub fn may_come_from(
        &self,
        own: &str,
        namespace: &str,
        namespace_labels: &BTreeMap<String, String>,
    ) -> bool {
        match &self.namespaces {
            NamespaceScope::Same => namespace == own,
            NamespaceScope::Matching(selector) => selector.matches(namespace_labels),
        }
    }

    /// Whether it admits only pods of the server's own namespace.
    pub fn is_same_namespace(&self) -> bool {
        self.namespaces == NamespaceScope::Same
    }
}

/// Everything one set of rules admits: addresses and pods.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sources {
    /// Addresses (`ipBlock` peers, `except` removed).
    pub networks: AddressSet,
    /// Pods (`podSelector` / `namespaceSelector` peers).
    pub pods: Vec<PodSource>,
}

impl Sources {
    /// Every address and every pod of every namespace.
    pub fn everyone() -> Self {
        Self {
            networks: AddressSet::everywhere(),
            pods: vec![PodSource {
                namespaces: NamespaceScope::Matching(Selector::default()),
                pods: Selector::default(),
            }],
        }
    }

    fn add(&mut self, other: Sources) {
        self.networks = self.networks.union(&other.networks);
        for pods in other.pods {
            if !self.pods.contains(&pods) {
                self.pods.push(pods);
            }
        }
    }
}

/// Sources admitted to some ports of the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admission {
    pub ports: PortMatch,
    pub from: Sources,
}

/// How a Service publishes one port of the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publication {
    pub service: String,
    /// `ClusterIP`, `LoadBalancer`, `NodePort`, as the Service says.
    pub service_type: String,
    pub protocol: Protocol,
    /// The Service's port.
    pub port: u16,
    /// The pod's port it forwards to.
    pub target: PortTarget,
    /// Addresses that reach the server through it: what the pod admits on the target port,
    /// within the `loadBalancerSourceRanges` of a LoadBalancer that sets them.
    pub networks: AddressSet,
}

/// The pod port a Service port forwards to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortTarget {
    Number(u16),
    Named(String),
}

/// The effective exposure of one server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerExposure {
    pub server: String,
    pub namespace: String,
    /// Whether some ingress policy selects the server's pod. If not, every source reaches
    /// every port.
    pub isolated: bool,
    /// What reaches the pod, one entry per distinct [`PortMatch`], in port order.
    pub admissions: Vec<Admission>,
    /// The Services that publish it, one entry per Service port.
    pub publications: Vec<Publication>,
}

impl ServerExposure {
    /// The addresses that reach `port` of `protocol` on the pod.
    pub fn networks_reaching(&self, protocol: Protocol, port: u16) -> AddressSet {
        self.admissions
            .iter()
            .filter(|admission| admission.ports.covers(protocol, port))
            .fold(AddressSet::empty(), |networks, admission| {
                networks.union(&admission.from.networks)
            })
    }

    /// The ports that some pod of `namespace` may reach.
    pub fn ports_reached_from_namespace(
        &self,
        namespace: &str,
        namespace_labels: &BTreeMap<String, String>,
    ) -> Vec<&PortMatch> {
        self.admissions
            .iter()
            .filter(|admission| {
                admission
                    .from
                    .pods
                    .iter()
                    .any(|pods| pods.may_come_from(&self.namespace, namespace, namespace_labels))
            })
            .map(|admission| &admission.ports)
            .collect()
    }
}

/// The server's virt-launcher pod, as far as policies and Services see it.
#[derive(Clone, Copy, Debug)]
pub struct ServerPod<'a> {
    pub server: &'a str,
    pub namespace: &'a str,
    /// The labels of the pod: the VirtualMachine's template labels, which for a server the
    /// operator builds are [`crate::virtual_server::build::labels`].
    pub labels: &'a BTreeMap<String, String>,
}

/// Computes the effective exposure of a server's pod from `policies` and `services` (those of
/// other namespaces are ignored); see the module's documentation for the semantics.
pub fn effective_exposure(
    pod: ServerPod<'_>,
    policies: &[NetworkPolicy],
    services: &[Service],
) -> Result<ServerExposure, ExposureError> {
    let in_namespace =
        |namespace: Option<&String>| namespace.map(String::as_str) == Some(pod.namespace);
    let mut isolated = false;
    let mut admitted: BTreeMap<PortMatch, Sources> = BTreeMap::new();
    for policy in policies
        .iter()
        .filter(|p| in_namespace(p.metadata.namespace.as_ref()))
    {
        let object = format!("NetworkPolicy {}/{}", pod.namespace, policy.name_any());
        let Some(spec) = &policy.spec else { continue };
        // The API server fills in absent policyTypes (always with Ingress); treat them alike.
        let governs_ingress = spec
            .policy_types
            .as_ref()
            .is_none_or(|types| types.is_empty() || types.iter().any(|t| t == "Ingress"));
        let selector = selector(spec.pod_selector.as_ref(), &object)?;
        if !governs_ingress || !selector.matches(pod.labels) {
            continue;
        }
        isolated = true;
        for rule in spec.ingress.iter().flatten() {
            let (ports, from) = rule_parts(rule, &object)?;
            for port in ports {
                admitted.entry(port).or_default().add(from.clone());
            }
        }
    }
    if !isolated {
        admitted = BTreeMap::from([(PortMatch::All, Sources::everyone())]);
    }
    let mut exposure = ServerExposure {
        server: pod.server.to_string(),
        namespace: pod.namespace.to_string(),
        isolated,
        admissions: admitted
            .into_iter()
            .map(|(ports, from)| Admission { ports, from })
            .collect(),
        publications: Vec::new(),
    };
    for service in services
        .iter()
        .filter(|s| in_namespace(s.metadata.namespace.as_ref()))
    {
        exposure
            .publications
            .extend(publications(service, pod, &exposure)?);
    }
    Ok(exposure)
}

fn selector(selector: Option<&LabelSelector>, object: &str) -> Result<Selector, ExposureError> {
    Selector::try_from(selector.cloned().unwrap_or_default()).map_err(|e| {
        ExposureError::InvalidSelector {
            object: object.to_string(),
            why: e.to_string(),
        }
    })
}

fn port_number(value: i32, object: &str) -> Result<u16, ExposureError> {
    u16::try_from(value)
        .ok()
        .filter(|port| *port > 0)
        .ok_or(ExposureError::InvalidPort {
            object: object.to_string(),
            value,
        })
}

/// The ports and sources of one ingress rule.
fn rule_parts(
    rule: &NetworkPolicyIngressRule,
    object: &str,
) -> Result<(Vec<PortMatch>, Sources), ExposureError> {
    let ports = match rule.ports.as_deref() {
        None | Some([]) => vec![PortMatch::All],
        Some(ports) => ports
            .iter()
            .map(|port| port_match(port, object))
            .collect::<Result<_, _>>()?,
    };
    let from = match rule.from.as_deref() {
        None | Some([]) => Sources::everyone(),
        Some(peers) => {
            let mut sources = Sources::default();
            for peer in peers {
                sources.add(peer_sources(peer, object)?);
            }
            sources
        }
    };
    Ok((ports, from))
}

fn port_match(port: &NetworkPolicyPort, object: &str) -> Result<PortMatch, ExposureError> {
    let protocol = Protocol::parse(port.protocol.as_deref(), object)?;
    Ok(match &port.port {
        None => PortMatch::Range {
            protocol,
            first: 1,
            last: u16::MAX,
        },
        Some(IntOrString::Int(first)) => PortMatch::Range {
            protocol,
            first: port_number(*first, object)?,
            last: port_number(port.end_port.unwrap_or(*first), object)?,
        },
        Some(IntOrString::String(name)) => PortMatch::Named {
            protocol,
            name: name.clone(),
        },
    })
}

fn peer_sources(peer: &NetworkPolicyPeer, object: &str) -> Result<Sources, ExposureError> {
    match (&peer.ip_block, &peer.namespace_selector, &peer.pod_selector) {
        (Some(block), None, None) => {
            let cidr = AddressSet::parse([&block.cidr], object, "ipBlock.cidr")?;
            let except =
                AddressSet::parse(block.except.iter().flatten(), object, "ipBlock.except")?;
            Ok(Sources {
                networks: cidr.difference(&except),
                pods: Vec::new(),
            })
        }
        (None, namespaces, pods) if namespaces.is_some() || pods.is_some() => Ok(Sources {
            networks: AddressSet::empty(),
            pods: vec![PodSource {
                namespaces: match namespaces {
                    None => NamespaceScope::Same,
                    Some(namespaces) => {
                        NamespaceScope::Matching(selector(Some(namespaces), object)?)
                    }
                },
                pods: selector(pods.as_ref(), object)?,
            }],
        }),
        _ => Err(ExposureError::InvalidPeer {
            object: object.to_string(),
        }),
    }
}

/// The ports `service` publishes of the pod, if its selector matches the pod.
fn publications(
    service: &Service,
    pod: ServerPod<'_>,
    exposure: &ServerExposure,
) -> Result<Vec<Publication>, ExposureError> {
    let object = format!("Service {}/{}", pod.namespace, service.name_any());
    let Some(spec) = &service.spec else {
        return Ok(Vec::new());
    };
    let selects = spec.selector.as_ref().is_some_and(|selector| {
        !selector.is_empty() && selector.iter().all(|(k, v)| pod.labels.get(k) == Some(v))
    });
    if !selects {
        return Ok(Vec::new());
    }
    let service_type = spec
        .type_
        .clone()
        .unwrap_or_else(|| "ClusterIP".to_string());
    let balancer_ranges = match spec.load_balancer_source_ranges.as_deref() {
        Some(ranges) if service_type == "LoadBalancer" && !ranges.is_empty() => Some(
            AddressSet::parse(ranges, &object, "spec.loadBalancerSourceRanges")?,
        ),
        _ => None,
    };
    let mut publications = Vec::new();
    for port in spec.ports.iter().flatten() {
        let protocol = Protocol::parse(port.protocol.as_deref(), &object)?;
        let number = port_number(port.port, &object)?;
        let target = match &port.target_port {
            None => PortTarget::Number(number),
            Some(IntOrString::Int(target)) => PortTarget::Number(port_number(*target, &object)?),
            Some(IntOrString::String(name)) => PortTarget::Named(name.clone()),
        };
        let admitted = match &target {
            PortTarget::Number(target) => exposure.networks_reaching(protocol, *target),
            // A named target resolves to a container port; count whatever admits that name
            // or every port.
            PortTarget::Named(name) => exposure
                .admissions
                .iter()
                .filter(|a| match &a.ports {
                    PortMatch::All => true,
                    PortMatch::Named {
                        protocol: p,
                        name: n,
                    } => *p == protocol && n == name,
                    PortMatch::Range { .. } => false,
                })
                .fold(AddressSet::empty(), |all, a| all.union(&a.from.networks)),
        };
        publications.push(Publication {
            service: service.name_any(),
            service_type: service_type.clone(),
            protocol,
            port: number,
            target,
            networks: match &balancer_ranges {
                Some(ranges) => admitted.intersection(ranges),
                None => admitted,
            },
        });
    }
    Ok(publications)
}

// ---------------------------------------------------------------------------------------------
// Declared against effective
// ---------------------------------------------------------------------------------------------

/// A way in which a server's effective exposure differs from its declared `spec.expose`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Drift {
    /// No ingress policy selects the server's pod: everything reaches every port.
    NotIsolated,
    /// A declared port is reached from addresses it does not list (`undeclared`), or not from
    /// addresses it lists (`missing`).
    Sources {
        protocol: Protocol,
        port: u16,
        undeclared: AddressSet,
        missing: AddressSet,
    },
    /// Addresses reach ports that are not declared.
    UndeclaredPorts {
        ports: PortMatch,
        networks: AddressSet,
    },
    /// Pods of other namespaces reach the server.
    OtherNamespaces { ports: PortMatch, pods: PodSource },
    /// A Service publishes a port that is not declared, or forwards it elsewhere.
    UndeclaredPublication {
        service: String,
        protocol: Protocol,
        port: u16,
    },
    /// What reaches a declared port through a Service differs from the declared sources.
    PublishedSources {
        service: String,
        protocol: Protocol,
        port: u16,
        undeclared: AddressSet,
        missing: AddressSet,
    },
    /// A declared port is not published by any Service.
    Unpublished { protocol: Protocol, port: u16 },
}

/// How `exposure` differs from what `server` declares: empty exactly when addresses reach the
/// server on its declared ports from their declared `allowedSources` and nowhere else, each
/// declared port is published by a Service under its own number and reached through it from
/// the same sources, and no pod outside the server's namespace reaches it. Pods of the
/// server's own namespace (the municipality's other servers) are not a difference: the
/// tenancy lets them talk to each other.
pub fn drift(
    server: &VirtualServer,
    exposure: &ServerExposure,
) -> Result<Vec<Drift>, ExposureError> {
    let object = format!("VirtualServer {}/{}", exposure.namespace, exposure.server);
    let mut declared: BTreeMap<(Protocol, u16), AddressSet> = BTreeMap::new();
    for exposed in server.spec.expose.iter().flat_map(|e| &e.ports) {
        let sources = AddressSet::parse(
            &exposed.allowed_sources,
            &object,
            "spec.expose.ports[].allowedSources",
        )?;
        let port = port_number(exposed.port, &object)?;
        let entry = declared.entry((exposed.protocol.into(), port)).or_default();
        *entry = entry.union(&sources);
    }
    let mut drifts = Vec::new();
    if !exposure.isolated {
        drifts.push(Drift::NotIsolated);
    }
    for ((protocol, port), sources) in &declared {
        let effective = exposure.networks_reaching(*protocol, *port);
        let (undeclared, missing) = (
            effective.difference(sources),
            sources.difference(&effective),
        );
        if !undeclared.is_empty() || !missing.is_empty() {
            drifts.push(Drift::Sources {
                protocol: *protocol,
                port: *port,
                undeclared,
                missing,
            });
        }
    }
    for admission in &exposure.admissions {
        let declared_port = match &admission.ports {
            PortMatch::Range {
                protocol,
                first,
                last,
            } if first == last => declared.contains_key(&(*protocol, *first)),
            _ => false,
        };
        if !declared_port && !admission.from.networks.is_empty() {
            drifts.push(Drift::UndeclaredPorts {
                ports: admission.ports.clone(),
                networks: admission.from.networks.clone(),
            });
        }
        for pods in admission
            .from
            .pods
            .iter()
            .filter(|p| !p.is_same_namespace())
        {
            drifts.push(Drift::OtherNamespaces {
                ports: admission.ports.clone(),
                pods: pods.clone(),
            });
        }
    }
    for publication in &exposure.publications {
        let key = (publication.protocol, publication.port);
        match declared.get(&key) {
            Some(sources) if publication.target == PortTarget::Number(publication.port) => {
                let undeclared = publication.networks.difference(sources);
                let missing = sources.difference(&publication.networks);
                if !undeclared.is_empty() || !missing.is_empty() {
                    drifts.push(Drift::PublishedSources {
                        service: publication.service.clone(),
                        protocol: publication.protocol,
                        port: publication.port,
                        undeclared,
                        missing,
                    });
                }
            }
            _ => drifts.push(Drift::UndeclaredPublication {
                service: publication.service.clone(),
                protocol: publication.protocol,
                port: publication.port,
            }),
        }
    }
    for (protocol, port) in declared.keys() {
        let published = exposure
            .publications
            .iter()
            .any(|p| (p.protocol, p.port) == (*protocol, *port));
        if !published {
            drifts.push(Drift::Unpublished {
                protocol: *protocol,
                port: *port,
            });
        }
    }
    Ok(drifts)
}
