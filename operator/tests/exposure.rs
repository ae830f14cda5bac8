//! Effective exposure (`novads_operator::exposure`) on hand-written policies: except blocks,
//! empty selectors, several policies, peers, ports, load balancer ranges, bad input.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use novads_operator::exposure::{
    self, AddressSet, ExposureError, NamespaceScope, PortMatch, Protocol, ServerExposure, ServerPod,
};
use serde_json::{Value, json};

fn address(text: &str) -> IpAddr {
    text.parse().expect("address")
}

// ---------------------------------------------------------------------------------------------
// The function on hand-written policies
// ---------------------------------------------------------------------------------------------

fn policy(name: &str, spec: Value) -> NetworkPolicy {
    serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "muni-test"},
        "spec": spec
    }))
    .expect("NetworkPolicy")
}

fn service(name: &str, spec: Value) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "muni-test"},
        "spec": spec
    }))
    .expect("Service")
}

fn pod_labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("novads.io/virtual-server".to_string(), "app".to_string()),
        ("tier".to_string(), "web".to_string()),
    ])
}

fn compute(policies: &[NetworkPolicy], services: &[Service]) -> ServerExposure {
    try_compute(policies, services).expect("exposure")
}

fn try_compute(
    policies: &[NetworkPolicy],
    services: &[Service],
) -> Result<ServerExposure, ExposureError> {
    let labels = pod_labels();
    exposure::effective_exposure(
        ServerPod {
            server: "app",
            namespace: "muni-test",
            labels: &labels,
        },
        policies,
        services,
    )
}

fn set(networks: &[&str]) -> AddressSet {
    AddressSet::from_networks(networks.iter().map(|n| n.parse::<IpNet>().expect("CIDR")))
}

#[test]
fn a_pod_no_ingress_policy_selects_is_reached_by_everyone() {
    let egress_only = policy(
        "egress",
        json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": []}),
    );
    let elsewhere = serde_json::from_value::<NetworkPolicy>(json!({
        "metadata": {"name": "deny", "namespace": "muni-other"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}
    }))
    .expect("policy");
    let other_pods = policy(
        "other-pods",
        json!({"podSelector": {"matchLabels": {"tier": "db"}}, "policyTypes": ["Ingress"]}),
    );
    let exposure = compute(&[egress_only, elsewhere, other_pods], &[]);
    assert!(!exposure.isolated);
    assert_eq!(exposure.admissions.len(), 1);
    assert_eq!(exposure.admissions[0].ports, PortMatch::All);
    assert_eq!(
        exposure.admissions[0].from.networks,
        AddressSet::everywhere()
    );
    assert_eq!(
        exposure.networks_reaching(Protocol::Udp, 53),
        AddressSet::everywhere()
    );
}

#[test]
fn an_empty_pod_selector_selects_every_pod_and_a_policy_without_rules_admits_nothing() {
    // No policyTypes: Ingress is implied.
    let deny = policy("deny", json!({"podSelector": {}}));
    let exposure = compute(&[deny], &[]);
    assert!(exposure.isolated);
    assert!(exposure.admissions.is_empty());
    assert!(exposure.networks_reaching(Protocol::Tcp, 443).is_empty());
}

#[test]
fn except_blocks_are_cut_out_of_the_cidr() {
    let allow = policy(
        "allow",
        json!({
            "podSelector": {"matchLabels": {"tier": "web"}},
            "policyTypes": ["Ingress"],
            "ingress": [{
                "from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16", "10.200.3.0/24"]}}],
                "ports": [{"port": 443}]
            }]
        }),
    );
    let reach = compute(&[allow], &[]).networks_reaching(Protocol::Tcp, 443);
    assert!(reach.contains(address("10.2.0.1")));
    assert!(reach.contains(address("10.200.4.1")));
    assert!(!reach.contains(address("10.1.2.3")));
    assert!(!reach.contains(address("10.200.3.9")));
    assert!(!reach.contains(address("11.0.0.1")));
    // Exactly the difference, as the fewest CIDRs.
    assert_eq!(
        reach,
        set(&["10.0.0.0/8"]).difference(&set(&["10.1.0.0/16", "10.200.3.0/24"]))
    );
    // /9 to /16 beside 10.1.0.0/16, one of them (10.128.0.0/9) split again from /10 to /24.
    assert_eq!(reach.networks().len(), 7 + 15);
}

#[test]
fn several_policies_add_up_per_port() {
    let deny = policy(
        "deny",
        json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
    );
    let https_vpn = policy(
        "https-vpn",
        json!({
            "podSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web", "api"]}]},
            "ingress": [{"from": [{"ipBlock": {"cidr": "10.20.0.0/17"}}], "ports": [{"port": 443, "protocol": "TCP"}]}]
        }),
    );
    let https_office = policy(
        "https-office",
        json!({
            "podSelector": {"matchLabels": {"novads.io/virtual-server": "app"}},
            "ingress": [
                {"from": [{"ipBlock": {"cidr": "10.20.128.0/17"}}], "ports": [{"port": 443}]},
                {"from": [{"ipBlock": {"cidr": "2001:db8::/32"}}], "ports": [{"port": 8000, "endPort": 8010}]}
            ]
        }),
    );
    let not_us = policy(
        "not-us",
        json!({
            "podSelector": {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["web"]}]},
            "ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]
        }),
    );
    let exposure = compute(&[deny, https_vpn, https_office, not_us], &[]);
    assert!(exposure.isolated);
    // The two halves are one /16 as a set.
    assert_eq!(
        exposure.networks_reaching(Protocol::Tcp, 443),
        set(&["10.20.0.0/16"])
    );
    assert_eq!(
        exposure.networks_reaching(Protocol::Tcp, 8005),
        set(&["2001:db8::/32"])
    );
    assert!(exposure.networks_reaching(Protocol::Tcp, 8011).is_empty());
    assert!(exposure.networks_reaching(Protocol::Udp, 443).is_empty());
    assert_eq!(exposure.admissions.len(), 2);
}

#[test]
fn peers_name_pods_by_namespace_and_pod_selectors() {
    let allow = policy(
        "peers",
        json!({
            "podSelector": {},
            "ingress": [{
                "from": [
                    {"podSelector": {"matchLabels": {"role": "backup"}}},
                    {"namespaceSelector": {"matchLabels": {"team": "monitoring"}}},
                    {"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": "scanner"}}}
                ],
                "ports": [{"port": 9100}]
            }]
        }),
    );
    let exposure = compute(&[allow], &[]);
    let pods = &exposure.admissions[0].from.pods;
    assert_eq!(pods.len(), 3);
    assert!(pods[0].is_same_namespace());
    assert!(matches!(pods[1].namespaces, NamespaceScope::Matching(_)));
    assert!(exposure.networks_reaching(Protocol::Tcp, 9100).is_empty());
    let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    // Monitoring namespace: by its label; any namespace: through the scanner peer.
    let monitoring = labels(&[("team", "monitoring")]);
    assert_eq!(
        exposure.ports_reached_from_namespace("prometheus", &monitoring),
        vec![&PortMatch::port(Protocol::Tcp, 9100)]
    );
    assert!(!pods[0].may_come_from("muni-test", "prometheus", &monitoring));
    assert!(pods[0].may_come_from("muni-test", "muni-test", &labels(&[])));
    assert!(!pods[1].may_come_from("muni-test", "other", &labels(&[("team", "web")])));
    assert!(pods[2].may_come_from("muni-test", "other", &labels(&[])));
}

#[test]
fn ports_default_to_tcp_and_a_missing_number_means_every_port_of_the_protocol() {
    let allow = policy(
        "ports",
        json!({
            "podSelector": {},
            "ingress": [
                {"from": [{"ipBlock": {"cidr": "192.0.2.0/24"}}], "ports": [{"protocol": "UDP"}]},
                {"from": [{"ipBlock": {"cidr": "198.51.100.0/24"}}], "ports": [{"port": "https"}]},
                {"ports": [{"port": 8443}]}
            ]
        }),
    );
    let exposure = compute(&[allow], &[]);
    assert_eq!(
        exposure.networks_reaching(Protocol::Udp, 5353),
        set(&["192.0.2.0/24"])
    );
    assert!(exposure.networks_reaching(Protocol::Tcp, 5353).is_empty());
    // A named port is kept, not resolved.
    assert!(exposure.admissions.iter().any(|a| a.ports
        == PortMatch::Named {
            protocol: Protocol::Tcp,
            name: "https".into()
        }));
    // A rule without `from` admits everyone.
    assert_eq!(
        exposure.networks_reaching(Protocol::Tcp, 8443),
        AddressSet::everywhere()
    );
}

#[test]
fn a_load_balancer_admits_only_its_source_ranges_and_the_policy_still_narrows_each_port() {
    let allow = policy(
        "allow",
        json!({
            "podSelector": {},
            "ingress": [
                {"from": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [{"port": 443}]},
                {"from": [{"ipBlock": {"cidr": "10.20.8.0/24"}}], "ports": [{"port": 22}]}
            ]
        }),
    );
    let balancer = service(
        "app",
        json!({
            "type": "LoadBalancer",
            "selector": {"novads.io/virtual-server": "app"},
            "loadBalancerSourceRanges": ["10.20.0.0/17"],
            "ports": [{"port": 443, "targetPort": 443}, {"port": 2222, "targetPort": 22}]
        }),
    );
    let other = service(
        "other",
        json!({"selector": {"novads.io/virtual-server": "other"}, "ports": [{"port": 80}]}),
    );
    let exposure = compute(&[allow], &[balancer, other]);
    assert_eq!(exposure.publications.len(), 2);
    let https = &exposure.publications[0];
    assert_eq!((https.port, &*https.service_type), (443, "LoadBalancer"));
    assert_eq!(https.networks, set(&["10.20.0.0/17"]));
    let ssh = &exposure.publications[1];
    assert_eq!(ssh.target, exposure::PortTarget::Number(22));
    assert_eq!(ssh.networks, set(&["10.20.8.0/24"]));
}

#[test]
fn address_sets_compare_as_sets() {
    assert_eq!(
        set(&["10.0.0.0/25", "10.0.0.128/25"]),
        set(&["10.0.0.0/24"])
    );
    assert_eq!(set(&["10.0.0.0/24", "10.0.0.0/16"]), set(&["10.0.0.0/16"]));
    assert_eq!(
        set(&["10.0.0.0/16"]).intersection(&set(&["10.0.3.0/24", "192.0.2.0/24"])),
        set(&["10.0.3.0/24"])
    );
    assert_eq!(
        set(&["10.0.0.0/24"]).difference(&set(&["10.0.0.0/25"])),
        set(&["10.0.0.128/25"])
    );
    assert!(
        set(&["10.0.0.0/24"])
            .difference(&set(&["10.0.0.0/8"]))
            .is_empty()
    );
    assert_eq!(
        AddressSet::everywhere().difference(&set(&["::/0"])),
        set(&["0.0.0.0/0"])
    );
    assert_eq!(set(&["10.0.0.0/24"]).to_string(), "[10.0.0.0/24]");
}

#[test]
fn objects_the_api_server_would_refuse_are_errors_naming_them() {
    let bad_cidr = policy(
        "bad-cidr",
        json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]}),
    );
    assert!(matches!(
        try_compute(&[bad_cidr], &[]),
        Err(ExposureError::InvalidCidr { ref object, .. }) if object == "NetworkPolicy muni-test/bad-cidr"
    ));
    let bad_selector = policy(
        "bad-selector",
        json!({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}),
    );
    assert!(matches!(
        try_compute(&[bad_selector], &[]),
        Err(ExposureError::InvalidSelector { .. })
    ));
    let bad_peer = policy(
        "bad-peer",
        json!({"podSelector": {}, "ingress": [{"from": [{
            "ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}
        }]}]}),
    );
    assert!(matches!(
        try_compute(&[bad_peer], &[]),
        Err(ExposureError::InvalidPeer { .. })
    ));
    let bad_protocol = policy(
        "bad-protocol",
        json!({"podSelector": {}, "ingress": [{"ports": [{"protocol": "ICMP"}]}]}),
    );
    assert!(matches!(
        try_compute(&[bad_protocol], &[]),
        Err(ExposureError::InvalidProtocol { .. })
    ));
}
