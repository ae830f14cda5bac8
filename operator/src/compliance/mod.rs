//! Cluster facts for the security monitor (`novads-monitor`): what the Municipalities,
//! VirtualServers and the objects around them say, as the monitor's typed facts. Pure: the
//! objects come from the operator's caches or, for `novads policies eval -f`, from YAML
//! ([`ClusterObjects::from_yaml`]).
//!
//! Subjects: one Municipality per Municipality object, one VirtualServer per VirtualServer,
//! one Realm per realm a Municipality names (its facts come from the federation) and the
//! Platform. Only the cluster source is marked collected here; whoever adds federation facts
//! marks that source.

mod objects;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, Utc};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use novads_crds::{Municipality, SecurityExemption, SecurityProfile, ServiceType, VirtualServer};
use novads_monitor::Exemption;
use novads_monitor::facts::{
    AdminGroups, FactsDocument, MunicipalityFacts, MunicipalityInfo, PlatformFacts, Profile,
    PublicPort, RealmFacts, Source, SourceState, Subject, VirtualServerFacts,
};

pub use objects::{ClusterObjects, ObjectsError};

use crate::virtual_server::build::SERVER_LABEL;
use crate::virtual_server::schedule::{BackupDecision, next_backup, parse_backup_schedule};
use crate::virtual_server::status::snapshot_infos;

/// Name of the one Platform subject.
pub const PLATFORM_SUBJECT: &str = "novads";

/// Networks that reach a port from anywhere.
const ANYWHERE: [&str; 2] = ["0.0.0.0/0", "::/0"];

/// The cluster facts of `objects` at `now`.
pub fn cluster_facts(objects: &ClusterObjects, now: DateTime<Utc>) -> FactsDocument {
    let mut document = FactsDocument {
        sources: BTreeMap::from([(Source::Cluster, SourceState::Collected)]),
        ..FactsDocument::default()
    };
    let mut realms: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for municipality in &objects.municipalities {
        let name = municipality.name_any();
        document.municipalities.push(MunicipalityInfo {
            name: name.clone(),
            namespace: municipality.namespace_name(),
            profile: match municipality.spec.security_profile {
                SecurityProfile::Standard => Profile::Standard,
                SecurityProfile::Elevated => Profile::Elevated,
            },
        });
        realms
            .entry(municipality.spec.realm.clone())
            .or_default()
            .push(name.clone());
        let mut subject = Subject::new(
            name.clone(),
            &municipality_facts(municipality, objects, now),
        );
        subject.municipalities = vec![name];
        document.subjects.push(subject);
    }
    for server in &objects.virtual_servers {
        let namespace = server.namespace().unwrap_or_default();
        let owner = objects
            .municipalities
            .iter()
            .find(|m| m.namespace_name() == namespace)
            .map(ResourceExt::name_any)
            // A server outside any municipality's namespace is reported against its namespace,
            // whose results then say that no municipality describes it.
            .unwrap_or_else(|| namespace.clone());
        let mut subject = Subject::new(server.name_any(), &server_facts(server, objects, now));
        subject.namespace = Some(namespace);
        subject.municipalities = vec![owner];
        document.subjects.push(subject);
    }
    for (realm, municipalities) in realms {
        let mut subject = Subject::new(realm, &RealmFacts::default());
        subject.municipalities = municipalities;
        document.subjects.push(subject);
    }
    document
        .subjects
        .push(Subject::new(PLATFORM_SUBJECT, &PlatformFacts::default()));
    document
}

/// Each Municipality's realm and admin groups, for the federation collector to count their
/// members in the realm's directory.
pub fn admin_groups(objects: &ClusterObjects) -> Vec<AdminGroups> {
    objects
        .municipalities
        .iter()
        .map(|municipality| AdminGroups {
            municipality: municipality.name_any(),
            realm: municipality.spec.realm.clone(),
            groups: municipality.spec.admin_groups.clone(),
        })
        .collect()
}

/// The exemptions of `objects`, for [`novads_monitor::evaluate`]. One whose expiry is not a
/// valid time is returned as an error naming it.
pub fn exemptions(objects: &ClusterObjects) -> Result<Vec<Exemption>, String> {
    objects.exemptions.iter().map(exemption).collect()
}

/// One SecurityExemption as the monitor applies it; an expiry that is not an RFC 3339 time is
/// an error naming the object.
pub fn exemption(object: &SecurityExemption) -> Result<Exemption, String> {
    let name = object.name_any();
    let namespace = object.namespace().unwrap_or_default();
    let expires = DateTime::parse_from_rfc3339(&object.spec.expires)
        .map_err(|e| {
            format!(
                "SecurityExemption {namespace}/{name}: expires {:?} is not an RFC 3339 time: {e}",
                object.spec.expires
            )
        })?
        .with_timezone(&Utc);
    Ok(Exemption {
        name,
        namespace,
        check: object.spec.check.clone(),
        subjects: object.spec.subjects.clone(),
        reason: object.spec.reason.clone(),
        approver: object.spec.approver.clone(),
        expires,
        granted: object
            .metadata
            .creation_timestamp
            .as_ref()
            .and_then(time_to_chrono),
    })
}

fn municipality_facts(
    municipality: &Municipality,
    objects: &ClusterObjects,
    now: DateTime<Utc>,
) -> MunicipalityFacts {
    let namespace = municipality.namespace_name();
    let in_namespace = |ns: Option<&String>| ns.map(String::as_str) == Some(namespace.as_str());
    let ready = municipality.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    });
    let policies: Vec<&NetworkPolicy> = objects
        .network_policies
        .iter()
        .filter(|p| in_namespace(p.metadata.namespace.as_ref()))
        .collect();
    let default_deny_ingress = policies.iter().any(|p| isolates(p, "Ingress"));
    let mut public_ports = Vec::new();
    // With ingress isolated, NetworkPolicies decide who reaches a Service's pods (the operator
    // restricts exposed ports that way); without it, a load balancer lets anyone in.
    if !default_deny_ingress {
        for service in objects
            .services
            .iter()
            .filter(|s| in_namespace(s.metadata.namespace.as_ref()))
        {
            public_ports.extend(public_service_ports(service));
        }
    }
    for policy in &policies {
        public_ports.extend(public_policy_ports(policy));
    }
    for server in objects
        .virtual_servers
        .iter()
        .filter(|s| in_namespace(s.metadata.namespace.as_ref()))
    {
        for port in server.spec.expose.iter().flat_map(|e| &e.ports) {
            if port
                .allowed_sources
                .iter()
                .any(|s| ANYWHERE.contains(&s.as_str()))
            {
                public_ports.push(PublicPort {
                    object: format!("VirtualServer/{}", server.name_any()),
                    port: i64::from(port.port),
                    protocol: format!("{:?}", port.protocol).to_uppercase(),
                });
            }
        }
    }
    MunicipalityFacts {
        ready: Some(ready),
        admin_groups: Some(municipality.spec.admin_groups.len() as i64),
        resource_quota_present: Some(objects.resource_quotas.iter().any(|q| {
            in_namespace(q.metadata.namespace.as_ref())
                && q.spec
                    .as_ref()
                    .and_then(|s| s.hard.as_ref())
                    .is_some_and(|hard| !hard.is_empty())
        })),
        max_virtual_servers: Some(i64::from(municipality.spec.quotas.max_virtual_servers)),
        virtual_servers: Some(
            objects
                .virtual_servers
                .iter()
                .filter(|s| in_namespace(s.metadata.namespace.as_ref()))
                .count() as i64,
        ),
        default_deny_ingress: Some(default_deny_ingress),
        default_deny_egress: Some(policies.iter().any(|p| isolates(p, "Egress"))),
        public_ports: Some(public_ports),
        public_allowed_ranges: Some(
            municipality
                .spec
                .allowed_network_ranges
                .iter()
                .filter(|range| !is_private(range))
                .cloned()
                .collect(),
        ),
        user_role_bindings: Some(
            objects
                .role_bindings
                .iter()
                .filter(|b| in_namespace(b.metadata.namespace.as_ref()))
                .filter(|b| {
                    b.subjects
                        .iter()
                        .flatten()
                        .any(|subject| subject.kind == "User")
                })
                .count() as i64,
        ),
        expired_exemptions: Some(
            objects
                .exemptions
                .iter()
                .filter(|e| in_namespace(e.metadata.namespace.as_ref()))
                .filter(|e| {
                    DateTime::parse_from_rfc3339(&e.spec.expires)
                        .is_ok_and(|expires| expires.with_timezone(&Utc) <= now)
                })
                .count() as i64,
        ),
        ..MunicipalityFacts::default()
    }
}

/// Whether a NetworkPolicy selects every pod and isolates it for `direction` (`Ingress` or
/// `Egress`): then only what other policies allow gets through.
fn isolates(policy: &NetworkPolicy, direction: &str) -> bool {
    let Some(spec) = &policy.spec else {
        return false;
    };
    let selects_all = spec.pod_selector.as_ref().is_none_or(|selector| {
        selector
            .match_labels
            .as_ref()
            .is_none_or(BTreeMap::is_empty)
            && selector
                .match_expressions
                .as_ref()
                .is_none_or(Vec::is_empty)
    });
    let types = spec.policy_types.clone().unwrap_or_else(|| {
        // Kubernetes' default: Ingress always, Egress when egress rules are given.
        let mut types = vec!["Ingress".to_string()];
        if spec.egress.is_some() {
            types.push("Egress".to_string());
        }
        types
    });
    selects_all && types.iter().any(|t| t == direction)
}

/// Ports of a LoadBalancer or NodePort Service that anyone may reach: without source ranges,
/// or with a range that is everything.
fn public_service_ports(service: &Service) -> Vec<PublicPort> {
    let Some(spec) = &service.spec else {
        return Vec::new();
    };
    let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
    if kind != "LoadBalancer" && kind != "NodePort" {
        return Vec::new();
    }
    let ranges = spec.load_balancer_source_ranges.clone().unwrap_or_default();
    let open = kind == "NodePort"
        || ranges.is_empty()
        || ranges.iter().any(|r| ANYWHERE.contains(&r.trim()));
    if !open {
        return Vec::new();
    }
    let object = format!("Service/{}", service.name_any());
    let mut ports = Vec::new();
    for port in spec.ports.iter().flatten() {
        let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".into());
        let mut numbers = BTreeSet::from([i64::from(port.port)]);
        if let Some(IntOrString::Int(target)) = &port.target_port {
            // What the server listens on is what an attacker reaches.
            numbers.insert(i64::from(*target));
        }
        if let Some(node_port) = port.node_port {
            numbers.insert(i64::from(node_port));
        }
        ports.extend(numbers.into_iter().map(|number| PublicPort {
            object: object.clone(),
            port: number,
            protocol: protocol.clone(),
        }));
    }
    ports
}

/// Ports a NetworkPolicy opens to `0.0.0.0/0` or `::/0`, or to every source (a rule without
/// `from`). A rule without ports opens every
/// port, reported as port 0; a port range is listed port by port up to 64 ports, else as 0.
fn public_policy_ports(policy: &NetworkPolicy) -> Vec<PublicPort> {
    let object = format!("NetworkPolicy/{}", policy.name_any());
    let mut ports = Vec::new();
    for rule in policy.spec.iter().flat_map(|s| s.ingress.iter().flatten()) {
        // A rule without peers admits every source, the internet included.
        let from_anywhere = rule.from.as_ref().is_none_or(|peers| peers.is_empty())
            || rule.from.iter().flatten().any(|peer| {
                peer.ip_block
                    .as_ref()
                    .is_some_and(|block| ANYWHERE.contains(&block.cidr.trim()))
            });
        if !from_anywhere {
            continue;
        }
        let rule_ports = rule.ports.clone().unwrap_or_default();
        if rule_ports.is_empty() {
            ports.push(PublicPort {
                object: object.clone(),
                port: 0,
                protocol: "TCP".into(),
            });
        }
        for port in rule_ports {
            let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".into());
            let first = match &port.port {
                Some(IntOrString::Int(number)) => i64::from(*number),
                // A named port or none: every port it might be.
                _ => 0,
            };
            let last = port.end_port.map_or(first, i64::from);
            let numbers: Vec<i64> = if first == 0 || last - first >= 64 {
                vec![0]
            } else {
                (first..=last).collect()
            };
            ports.extend(numbers.into_iter().map(|number| PublicPort {
                object: object.clone(),
                port: number,
                protocol: protocol.clone(),
            }));
        }
    }
    ports
}

/// RFC 1918 and RFC 4193 ranges (and unparseable text, which admission already refuses) do
/// not count as public.
fn is_private(range: &str) -> bool {
    const PRIVATE: [&str; 4] = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"];
    let Ok(net) = range.trim().parse::<IpNet>() else {
        return true;
    };
    PRIVATE
        .iter()
        .filter_map(|p| p.parse::<IpNet>().ok())
        .any(|private| private.contains(&net))
}

fn server_facts(
    server: &VirtualServer,
    objects: &ClusterObjects,
    now: DateTime<Utc>,
) -> VirtualServerFacts {
    let image = objects
        .server_images
        .iter()
        .find(|image| image.name_any() == server.spec.image);
    let today = now.date_naive();
    let days_until = |date: &str| {
        NaiveDate::parse_from_str(date, "%Y-%m-%d")
            .ok()
            .map(|d| (d - today).num_days())
    };
    let namespace = server.namespace();
    let snapshots: Vec<_> = objects
        .snapshots
        .iter()
        .filter(|s| s.metadata.namespace == namespace)
        .filter(|s| {
            s.metadata
                .labels
                .as_ref()
                .and_then(|labels| labels.get(SERVER_LABEL))
                .is_some_and(|label| *label == server.name_any())
        })
        .cloned()
        .collect();
    // The newest snapshot that completed, as the backup controller counts them.
    let last_backup = snapshot_infos(&snapshots)
        .into_iter()
        .filter(|s| s.ready && !s.failed)
        .filter_map(|s| s.created)
        .max()
        .and_then(|t| DateTime::from_timestamp(t.as_second(), 0))
        .into_iter()
        .chain(
            server
                .status
                .as_ref()
                .and_then(|s| s.last_backup_time.as_ref())
                .and_then(time_to_chrono),
        )
        .max();
    let backup = server.spec.backup.as_ref();
    VirtualServerFacts {
        image: Some(server.spec.image.clone()),
        image_found: Some(image.is_some()),
        image_approved: image.map(|i| i.spec.approved),
        image_support_days_left: image.and_then(|i| days_until(&i.spec.support_end)),
        image_patch_age_days: image.and_then(|i| days_until(&i.spec.last_patched).map(|d| -d)),
        backup_configured: Some(backup.is_some()),
        backup_interval_hours: backup.and_then(|b| longest_interval_hours(&b.schedule, now)),
        backup_retention: backup.map(|b| i64::from(b.retention)),
        last_backup_age_hours: last_backup.map(|t| (now - t).num_hours()),
        externally_exposed_ports: Some(
            server
                .spec
                .expose
                .iter()
                .filter(|e| e.service_type == ServiceType::LoadBalancer)
                .flat_map(|e| e.ports.iter().map(|p| i64::from(p.port)))
                .collect(),
        ),
    }
}

/// The longest gap between two runs of a backup schedule over the coming ten weeks, in hours
/// (rounded up); none for a schedule that does not parse.
fn longest_interval_hours(schedule: &str, now: DateTime<Utc>) -> Option<i64> {
    let schedule = parse_backup_schedule(schedule).ok()?;
    let start = Timestamp::from_second(now.timestamp()).ok()?;
    let horizon = start.as_second() + 70 * 24 * 3600;
    let mut at = start;
    let mut previous: Option<Timestamp> = None;
    let mut longest = 0;
    for _ in 0..200 {
        let BackupDecision::Wait { until } = next_backup(&schedule, Some(at), at, at) else {
            break;
        };
        if until <= at {
            break;
        }
        if let Some(previous) = previous {
            longest = longest.max(until.as_second() - previous.as_second());
        }
        previous = Some(until);
        at = until;
        if at.as_second() > horizon {
            break;
        }
    }
    (longest > 0).then(|| (longest + 3599) / 3600)
}

fn time_to_chrono(time: &Time) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(time.0.as_second(), 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-12-01T10:30:00Z".parse().expect("time")
    }

    fn objects(yaml: &str) -> ClusterObjects {
        let municipality = "apiVersion: novads.io/v1alpha1\nkind: Municipality\nmetadata: {name: talsi}\nspec: {code: talsi, displayName: Talsi, realm: talsi, quotas: {cpu: 1, memory: 1Gi, storage: 1Gi, maxVirtualServers: 2}, allowedNetworkRanges: [10.20.0.0/16, 195.2.96.0/24]}\n---\n";
        ClusterObjects::from_yaml(&format!("{municipality}{yaml}")).expect("objects")
    }

    fn municipality_fact(document: &FactsDocument, fact: &str) -> serde_json::Value {
        document
            .subjects
            .iter()
            .find(|s| s.kind == novads_monitor::SubjectKind::Municipality)
            .and_then(|s| s.facts.get(fact).cloned())
            .unwrap_or_default()
    }

    const OPEN_SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: rdp, namespace: muni-talsi}\nspec: {type: LoadBalancer, ports: [{port: 3389, targetPort: 3389}]}\n";

    #[test]
    fn a_load_balancer_is_public_only_without_ingress_isolation() {
        let open = cluster_facts(&objects(OPEN_SERVICE), now());
        assert_eq!(
            municipality_fact(&open, "public_ports"),
            serde_json::json!([{"object": "Service/rdp", "port": 3389, "protocol": "TCP"}])
        );
        assert_eq!(municipality_fact(&open, "default_deny_ingress"), false);
        let isolated = format!(
            "{OPEN_SERVICE}---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: deny, namespace: muni-talsi}}\nspec: {{podSelector: {{}}, policyTypes: [Ingress]}}\n"
        );
        let isolated = cluster_facts(&objects(&isolated), now());
        assert_eq!(
            municipality_fact(&isolated, "public_ports"),
            serde_json::json!([])
        );
        assert_eq!(municipality_fact(&isolated, "default_deny_ingress"), true);
        assert_eq!(municipality_fact(&isolated, "default_deny_egress"), false);
    }

    #[test]
    fn network_policies_open_to_everyone_are_public() {
        let policy = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: wide, namespace: muni-talsi}\nspec:\n  podSelector: {}\n  ingress:\n    - from: [{ipBlock: {cidr: 0.0.0.0/0}}]\n      ports: [{port: 22}, {port: 5985, endPort: 5986}]\n    - from: [{ipBlock: {cidr: '::/0'}}]\n";
        let document = cluster_facts(&objects(policy), now());
        let ports: Vec<i64> = municipality_fact(&document, "public_ports")
            .as_array()
            .expect("list")
            .iter()
            .filter_map(|p| p["port"].as_i64())
            .collect();
        assert_eq!(ports, [22, 5985, 5986, 0]);
        assert_eq!(
            municipality_fact(&document, "public_allowed_ranges"),
            serde_json::json!(["195.2.96.0/24"])
        );
    }

    #[test]
    fn a_rule_without_peers_is_open_to_everyone() {
        let policy = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: any-source, namespace: muni-talsi}\nspec:\n  podSelector: {}\n  ingress:\n    - ports: [{port: 3389}]\n    - from: []\n      ports: [{port: 23}]\n    - from: [{podSelector: {}}]\n      ports: [{port: 5900}]\n";
        let document = cluster_facts(&objects(policy), now());
        let ports: Vec<i64> = municipality_fact(&document, "public_ports")
            .as_array()
            .expect("list")
            .iter()
            .filter_map(|p| p["port"].as_i64())
            .collect();
        // RDP and Telnet reach every source; VNC only the namespace's own pods.
        assert_eq!(ports, [3389, 23]);
    }

    #[test]
    fn backup_intervals_follow_the_schedule() {
        assert_eq!(longest_interval_hours("0 2 * * *", now()), Some(24));
        assert_eq!(longest_interval_hours("@weekly", now()), Some(168));
        assert_eq!(longest_interval_hours("0 2 * * 1-5", now()), Some(72));
        assert_eq!(longest_interval_hours("not a schedule", now()), None);
    }

    #[test]
    fn every_subject_kind_is_present_and_only_the_cluster_is_collected() {
        let document = cluster_facts(&objects(""), now());
        let kinds: Vec<_> = document.subjects.iter().map(|s| s.kind).collect();
        use novads_monitor::SubjectKind::*;
        assert_eq!(kinds, [Municipality, Realm, Platform]);
        assert_eq!(
            document.sources,
            BTreeMap::from([(Source::Cluster, SourceState::Collected)])
        );
        assert!(document.problems().is_empty(), "{:?}", document.problems());
    }
}
