//! What reaches a server: its Service for the declared ports and the NetworkPolicy that admits
//! only the declared sources.

use super::*;

/// The protocol's name in Kubernetes objects.
fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
    }
}

/// Checks the exposed ports (range, duplicates); returns them with their protocol names.
fn exposed_ports(server: &VirtualServer) -> Result<Vec<(i32, &'static str)>, BuildError> {
    let Some(expose) = &server.spec.expose else {
        return Ok(Vec::new());
    };
    let mut seen = BTreeSet::new();
    let mut ports = Vec::new();
    for (index, exposed) in expose.ports.iter().enumerate() {
        let protocol = protocol_name(exposed.protocol);
        if !(1..=65535).contains(&exposed.port) {
            return Err(BuildError::InvalidPort {
                index,
                port: exposed.port,
            });
        }
        if !seen.insert((exposed.port, protocol)) {
            return Err(BuildError::DuplicatePort {
                index,
                port: exposed.port,
                protocol,
            });
        }
        ports.push((exposed.port, protocol));
    }
    Ok(ports)
}

/// The Service `<server>` for exposed ports, or `None` without `spec.expose`. It selects the
/// server's virt-launcher pod; with the masquerade binding the pod forwards every port to the
/// guest, so `targetPort` is the port itself. A LoadBalancer admits only the union of the
/// ports' `allowedSources` (`loadBalancerSourceRanges`), so the load balancer already drops
/// what the NetworkPolicy would; the policy still narrows each port to its own sources.
pub fn service(server: &VirtualServer) -> Result<Option<Service>, BuildError> {
    let Some(expose) = &server.spec.expose else {
        return Ok(None);
    };
    let name = server_name(server)?;
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        // Service names are DNS-1035 labels.
        return Err(BuildError::InvalidName {
            kind: "Service",
            name: name.to_string(),
            why: "a Service name must start with a letter",
        });
    }
    let ports = exposed_ports(server)?
        .into_iter()
        .map(|(port, protocol)| ServicePort {
            name: Some(format!("{}-{port}", protocol.to_ascii_lowercase())),
            port,
            protocol: Some(protocol.to_string()),
            target_port: Some(IntOrString::Int(port)),
            ..ServicePort::default()
        })
        .collect();
    let selector = BTreeMap::from([(SERVER_LABEL.to_string(), name.to_string())]);
    let spec = match expose.service_type {
        ServiceType::ClusterIP => ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            selector: Some(selector),
            ports: Some(ports),
            ..ServiceSpec::default()
        },
        ServiceType::LoadBalancer => ServiceSpec {
            type_: Some("LoadBalancer".to_string()),
            selector: Some(selector),
            ports: Some(ports),
            // `Local`: the load balancer delivers traffic only to the node running the server
            // and kube-proxy does not SNAT it, so the client's source address reaches the pod.
            // With `Cluster`, a second hop would replace it with a node address and the
            // NetworkPolicy's allowedSources CIDRs would be checked against the wrong address
            // (and then either block everyone or, if node ranges were allowed, everyone in).
            external_traffic_policy: Some("Local".to_string()),
            // No node ports: the municipality's quota allows none (`services.nodeports: 0`),
            // and load balancers that route to pods or nodes directly (MetalLB, Cilium, kube-
            // vip) do not need them.
            allocate_load_balancer_node_ports: Some(false),
            load_balancer_source_ranges: Some(source_ranges(expose)?),
            ..ServiceSpec::default()
        },
    };
    Ok(Some(Service {
        metadata: child_meta(server, name.to_string())?,
        spec: Some(spec),
        ..Service::default()
    }))
}

/// Every port's `allowedSources` together, as the fewest networks that cover them (a network
/// inside another is left out), in address order.
fn source_ranges(expose: &Expose) -> Result<Vec<String>, BuildError> {
    let mut networks = Vec::new();
    for (index, exposed) in expose.ports.iter().enumerate() {
        networks.extend(allowed_blocks(index, &exposed.allowed_sources)?);
    }
    Ok(IpNet::aggregate(&networks)
        .iter()
        .map(ToString::to_string)
        .collect())
}

/// Parses `allowedSources` of one port, naming the field of any bad entry.
fn allowed_blocks(port_index: usize, sources: &[String]) -> Result<Vec<IpNet>, BuildError> {
    sources
        .iter()
        .enumerate()
        .map(|(index, value)| {
            let field = format!("spec.expose.ports[{port_index}].allowedSources[{index}]");
            let network = value
                .parse::<IpNet>()
                .map_err(|_| BuildError::InvalidCidr {
                    field: field.clone(),
                    value: value.clone(),
                })?;
            if network.trunc() != network {
                return Err(BuildError::CidrHostBits {
                    field,
                    value: value.clone(),
                    network: network.trunc().to_string(),
                });
            }
            Ok(network)
        })
        .collect()
}

/// The NetworkPolicy `<server>-expose`, or `None` without `spec.expose`: ingress to each
/// exposed port from exactly its `allowedSources`. (Whether those lie within the
/// municipality's ranges is checked at admission.) It adds to the namespace's default-deny and
/// same-namespace policies; NetworkPolicies only ever add allowances.
pub fn network_policy(server: &VirtualServer) -> Result<Option<NetworkPolicy>, BuildError> {
    let Some(expose) = &server.spec.expose else {
        return Ok(None);
    };
    let name = server_name(server)?;
    let policy_name = network_policy_name(name);
    check_length("NetworkPolicy", &policy_name, DNS_SUBDOMAIN_MAX, "")?;
    exposed_ports(server)?;
    let rules = expose
        .ports
        .iter()
        .enumerate()
        .map(|(index, exposed)| {
            let from = allowed_blocks(index, &exposed.allowed_sources)?
                .into_iter()
                .map(|network| NetworkPolicyPeer {
                    ip_block: Some(IPBlock {
                        cidr: network.to_string(),
                        except: None,
                    }),
                    ..NetworkPolicyPeer::default()
                })
                .collect();
            Ok(NetworkPolicyIngressRule {
                from: Some(from),
                ports: Some(vec![NetworkPolicyPort {
                    port: Some(IntOrString::Int(exposed.port)),
                    protocol: Some(protocol_name(exposed.protocol).to_string()),
                    ..NetworkPolicyPort::default()
                }]),
            })
        })
        .collect::<Result<Vec<_>, BuildError>>()?;
    Ok(Some(NetworkPolicy {
        metadata: child_meta(server, policy_name)?,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    SERVER_LABEL.to_string(),
                    name.to_string(),
                )])),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".to_string()]),
            ingress: Some(rules),
            ..NetworkPolicySpec::default()
        }),
    }))
}
