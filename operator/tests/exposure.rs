//! Effective exposure (`novads_operator::exposure`):
//!
//! - for every example in examples/ and every tenancy golden file in tests/golden/ (with the
//!   fixture it was rendered from), what the generated NetworkPolicies and Services let reach
//!   each virtual server is exactly what the server declares in `spec.expose`: no wider, no
//!   narrower (the virtual-server golden files are proven in tests/virtual_server_build.rs);
//! - the attacks: a port declared open to 10.20.8.0/24 is not reachable from the rest of the
//!   municipal range, the platform ingress namespace reaches no port, a server without
//!   `expose` is reached from nothing outside its namespace;
//! - the function itself on hand-written policies (except blocks, empty selectors, several
//!   policies, peers, ports, load balancer ranges, bad input).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use novads_crds::VirtualServer;
use novads_operator::exposure::{
    self, AddressSet, Drift, ExposureError, NamespaceScope, PortMatch, Protocol, ServerExposure,
    ServerPod,
};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Generated objects
// ---------------------------------------------------------------------------------------------

/// The objects of a rendering, sorted by what the exposure needs.
#[derive(Default)]
struct Objects {
    policies: Vec<NetworkPolicy>,
    services: Vec<Service>,
    /// `(namespace, server) -> labels of its virt-launcher pod` (the VM's template labels).
    pods: BTreeMap<(String, String), BTreeMap<String, String>>,
}

fn objects(yaml: &str) -> Objects {
    let documents: Vec<Value> = serde_saphyr::from_multiple(yaml).expect("YAML");
    let mut objects = Objects::default();
    for document in documents.into_iter().filter(|d| !d.is_null()) {
        match document["kind"].as_str() {
            Some("NetworkPolicy") => objects
                .policies
                .push(serde_json::from_value(document).expect("NetworkPolicy")),
            Some("Service") => objects
                .services
                .push(serde_json::from_value(document).expect("Service")),
            Some("VirtualMachine") => {
                let key = (
                    document["metadata"]["namespace"]
                        .as_str()
                        .expect("namespace")
                        .to_string(),
                    document["metadata"]["name"]
                        .as_str()
                        .expect("name")
                        .to_string(),
                );
                let labels = serde_json::from_value(
                    document["spec"]["template"]["metadata"]["labels"].clone(),
                )
                .expect("template labels");
                objects.pods.insert(key, labels);
            }
            _ => {}
        }
    }
    objects
}

fn virtual_servers(yaml: &str) -> Vec<VirtualServer> {
    let documents: Vec<Value> = serde_saphyr::from_multiple(yaml).expect("YAML");
    documents
        .into_iter()
        .filter(|d| d["kind"] == "VirtualServer")
        .map(|d| serde_json::from_value(d).expect("VirtualServer"))
        .collect()
}

fn exposure_of(objects: &Objects, namespace: &str, server: &str) -> ServerExposure {
    let labels = objects
        .pods
        .get(&(namespace.to_string(), server.to_string()))
        .unwrap_or_else(|| panic!("no VirtualMachine {namespace}/{server}"));
    exposure::effective_exposure(
        ServerPod {
            server,
            namespace,
            labels,
        },
        &objects.policies,
        &objects.services,
    )
    .expect("exposure")
}

/// Proves every server of `servers` is exposed exactly as declared; returns how many.
fn assert_exposed_as_declared(what: &str, objects: &Objects, servers: &[VirtualServer]) -> usize {
    for server in servers {
        let namespace = server.metadata.namespace.as_deref().expect("namespace");
        let name = server.metadata.name.as_deref().expect("name");
        let exposure = exposure_of(objects, namespace, name);
        let drift = exposure::drift(server, &exposure).expect("drift");
        assert!(
            drift.is_empty(),
            "{what}: {namespace}/{name} is not exposed as declared: {drift:#?}"
        );
    }
    servers.len()
}

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

fn yaml_files(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .map(|path| {
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read_to_string(&path).expect("read"))
        })
        .collect();
    files.sort();
    files
}

/// Every example, rendered together as `novads render examples/*.yaml` does.
fn examples() -> (String, String) {
    let input: String = yaml_files(&repository().join("examples"))
        .into_iter()
        .map(|(_, text)| format!("---\n{text}\n"))
        .collect();
    let rendered = novads_operator::render(&input).expect("examples render");
    (input, rendered)
}

#[test]
fn every_example_is_exposed_exactly_as_declared() {
    let (input, rendered) = examples();
    let servers = virtual_servers(&input);
    let proven = assert_exposed_as_declared("examples", &objects(&rendered), &servers);
    // The web example exposes two ports; an empty set would prove nothing.
    assert!(
        servers.iter().any(|s| s.spec.expose.is_some()),
        "no example exposes a port"
    );
    assert!(proven > 0);
}

#[test]
fn every_tenancy_golden_file_is_exposed_exactly_as_declared() {
    let operator = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fixtures = yaml_files(&operator.join("tests/fixtures"));
    assert!(!fixtures.is_empty());
    for (name, fixture) in fixtures {
        let golden = std::fs::read_to_string(operator.join("tests/golden").join(&name))
            .unwrap_or_else(|e| panic!("golden {name}: {e}"));
        let mut cluster = objects(&golden);
        let mut servers = virtual_servers(&fixture);
        // Every tenancy also gets a server that declares nothing, whose pod carries the labels
        // every server's pod carries.
        let namespace = cluster.policies[0]
            .metadata
            .namespace
            .clone()
            .expect("namespace");
        let quiet: VirtualServer = serde_json::from_value(json!({
            "apiVersion": "novads.io/v1alpha1", "kind": "VirtualServer",
            "metadata": {"name": "quiet", "namespace": namespace},
            "spec": {"image": "debian-12", "cpu": 1, "memory": "1Gi"}
        }))
        .expect("VirtualServer");
        cluster.pods.insert(
            (namespace.clone(), "quiet".to_string()),
            novads_operator::virtual_server::build::labels(&quiet),
        );
        servers.push(quiet);
        assert_exposed_as_declared(&name, &cluster, &servers);
    }
}

// ---------------------------------------------------------------------------------------------
// Attacks, on the rendered examples (Talsi: 10.20.0.0/16; web: 443 from the whole range,
// 22 from 10.20.8.0/24 only)
// ---------------------------------------------------------------------------------------------

fn address(text: &str) -> IpAddr {
    text.parse().expect("address")
}

fn example_web() -> ServerExposure {
    let (_, rendered) = examples();
    exposure_of(&objects(&rendered), "muni-talsi", "web")
}

#[test]
fn a_port_open_to_one_subnet_is_not_reachable_from_the_rest_of_the_municipal_range() {
    let web = example_web();
    let ssh = web.networks_reaching(Protocol::Tcp, 22);
    assert_eq!(
        ssh,
        AddressSet::from_networks(["10.20.8.0/24".parse().unwrap()])
    );
    assert!(ssh.contains(address("10.20.8.17")));
    for outside in ["10.20.9.17", "10.20.0.1", "10.20.255.254", "10.21.8.17"] {
        assert!(!ssh.contains(address(outside)), "{outside} reaches port 22");
    }
    // Nor through the load balancer.
    let published = web
        .publications
        .iter()
        .find(|p| p.port == 22)
        .expect("port 22 published");
    assert_eq!(published.service_type, "LoadBalancer");
    assert!(!published.networks.contains(address("10.20.9.17")));
    // The range as a whole reaches 443 only, and no undeclared port at all.
    assert!(
        web.networks_reaching(Protocol::Tcp, 443)
            .contains(address("10.20.9.17"))
    );
    for (protocol, port) in [
        (Protocol::Tcp, 80),
        (Protocol::Tcp, 5900),
        (Protocol::Udp, 443),
    ] {
        assert!(
            web.networks_reaching(protocol, port).is_empty(),
            "{protocol:?}/{port} is reachable"
        );
    }
}

#[test]
fn the_platform_ingress_namespace_reaches_no_port() {
    let web = example_web();
    for namespace in [
        "novads-ingress",
        "ingress-nginx",
        "muni-ventspils",
        "kube-system",
    ] {
        let labels = BTreeMap::from([(
            "kubernetes.io/metadata.name".to_string(),
            namespace.to_string(),
        )]);
        assert_eq!(
            web.ports_reached_from_namespace(namespace, &labels),
            Vec::<&PortMatch>::new(),
            "{namespace} reaches web"
        );
    }
    // Its own namespace does: the municipality's servers talk to each other.
    let own = BTreeMap::from([(
        "kubernetes.io/metadata.name".to_string(),
        "muni-talsi".to_string(),
    )]);
    assert_eq!(
        web.ports_reached_from_namespace("muni-talsi", &own),
        vec![&PortMatch::All]
    );
}

#[test]
fn a_server_without_expose_is_reachable_from_nothing_outside_its_namespace() {
    // tests/fixtures/talsi.yaml has a `web` without `expose`.
    let operator = Path::new(env!("CARGO_MANIFEST_DIR"));
    let golden = std::fs::read_to_string(operator.join("tests/golden/talsi.yaml")).expect("golden");
    let web = exposure_of(&objects(&golden), "muni-talsi", "web");
    assert!(web.isolated);
    assert!(web.publications.is_empty());
    for admission in &web.admissions {
        assert!(
            admission.from.networks.is_empty(),
            "{:?} reached from {}",
            admission.ports,
            admission.from.networks
        );
        assert!(admission.from.pods.iter().all(|p| p.is_same_namespace()));
    }
    for port in [22, 80, 443, 3389, 5432] {
        assert!(web.networks_reaching(Protocol::Tcp, port).is_empty());
    }
}

#[test]
fn the_municipal_range_reaches_nothing_through_the_tenancy_policies_alone() {
    let operator = Path::new(env!("CARGO_MANIFEST_DIR"));
    let golden = std::fs::read_to_string(operator.join("tests/golden/talsi.yaml")).expect("golden");
    let policies = objects(&golden).policies;
    let labels = BTreeMap::from([("novads.io/virtual-server".to_string(), "any".to_string())]);
    let pod = ServerPod {
        server: "any",
        namespace: "muni-talsi",
        labels: &labels,
    };
    let exposure = exposure::effective_exposure(pod, &policies, &[]).expect("exposure");
    let everything = exposure
        .admissions
        .iter()
        .fold(AddressSet::empty(), |all, a| all.union(&a.from.networks));
    assert!(everything.is_empty(), "tenancy admits {everything}");
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

// ---------------------------------------------------------------------------------------------
// Drift: what the proofs above rely on to fail
// ---------------------------------------------------------------------------------------------

#[test]
fn drift_reports_every_way_exposure_can_be_wider_or_narrower() {
    let (input, rendered) = examples();
    let server = virtual_servers(&input)
        .into_iter()
        .find(|s| s.metadata.name.as_deref() == Some("web"))
        .expect("web example");
    let mut cluster = objects(&rendered);
    // The namespace-wide policy earlier versions applied, and the platform ingress.
    cluster.policies.push(
        serde_json::from_value(json!({
            "metadata": {"name": "old-municipal-networks", "namespace": "muni-talsi"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"],
                     "ingress": [{"from": [{"ipBlock": {"cidr": "10.20.0.0/16"}}]}]}
        }))
        .expect("policy"),
    );
    cluster.policies.push(serde_json::from_value(json!({
        "metadata": {"name": "old-platform-ingress", "namespace": "muni-talsi"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"],
                 "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "novads-ingress"}}}]}]}
    })).expect("policy"));
    let exposure = exposure_of(&cluster, "muni-talsi", "web");
    let drift = exposure::drift(&server, &exposure).expect("drift");
    assert!(drift.contains(&Drift::Sources {
        protocol: Protocol::Tcp,
        port: 22,
        undeclared: set(&["10.20.0.0/16"]).difference(&set(&["10.20.8.0/24"])),
        missing: AddressSet::empty(),
    }));
    assert!(drift.contains(&Drift::UndeclaredPorts {
        ports: PortMatch::All,
        networks: set(&["10.20.0.0/16"]),
    }));
    assert!(
        drift.iter().any(|d| matches!(
            d,
            Drift::OtherNamespaces {
                ports: PortMatch::All,
                ..
            }
        )),
        "{drift:#?}"
    );

    // Narrower: the server's own policy and Service gone.
    let (_, rendered) = examples();
    let mut cluster = objects(&rendered);
    cluster
        .policies
        .retain(|p| p.metadata.name.as_deref() != Some("web-expose"));
    cluster.services.clear();
    let exposure = exposure_of(&cluster, "muni-talsi", "web");
    let drift = exposure::drift(&server, &exposure).expect("drift");
    assert!(drift.contains(&Drift::Sources {
        protocol: Protocol::Tcp,
        port: 443,
        undeclared: AddressSet::empty(),
        missing: set(&["10.20.0.0/16"]),
    }));
    assert!(drift.contains(&Drift::Unpublished {
        protocol: Protocol::Tcp,
        port: 22
    }));

    // No policy at all: not isolated.
    let exposure = exposure_of(
        &Objects {
            policies: Vec::new(),
            ..objects(&rendered)
        },
        "muni-talsi",
        "web",
    );
    let drift = exposure::drift(&server, &exposure).expect("drift");
    assert!(drift.contains(&Drift::NotIsolated));
}
