//! What the cache keeps of a server's Service and NetworkPolicy: the digests of what the
//! operator owns (noted by the watch, `unchanged::record_live`) and, of a Service,
//! the addresses the server's status reports (cluster IP, load balancer ingress).

use compact_str::CompactString;
use k8s_openapi::api::core::v1::{Service, ServiceSpec, ServiceStatus};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{Record, Stamp};

#[derive(Clone, Debug, PartialEq)]
pub struct ServiceRecord {
    stamp: Stamp,
    /// `None` when the Service had no spec at all.
    cluster_ip: Option<Option<CompactString>>,
    status: Option<Box<ServiceStatus>>,
}

impl Record for ServiceRecord {
    type Object = Service;

    fn record(service: &Service) -> Option<Self> {
        Some(Self {
            stamp: Stamp::of(&service.metadata),
            cluster_ip: service
                .spec
                .as_ref()
                .map(|spec| spec.cluster_ip.as_deref().map(Into::into)),
            status: service.status.clone().map(Box::new),
        })
    }

    fn object(&self, namespace: &str, name: &str) -> Service {
        Service {
            metadata: metadata(&self.stamp, namespace, name),
            spec: self.cluster_ip.as_ref().map(|cluster_ip| ServiceSpec {
                cluster_ip: cluster_ip.as_deref().map(str::to_string),
                ..ServiceSpec::default()
            }),
            status: self.status.as_deref().cloned(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct NetworkPolicyRecord {
    stamp: Stamp,
}

impl Record for NetworkPolicyRecord {
    type Object = NetworkPolicy;

    fn record(policy: &NetworkPolicy) -> Option<Self> {
        Some(Self {
            stamp: Stamp::of(&policy.metadata),
        })
    }

    fn object(&self, namespace: &str, name: &str) -> NetworkPolicy {
        NetworkPolicy {
            metadata: metadata(&self.stamp, namespace, name),
            ..NetworkPolicy::default()
        }
    }
}

fn metadata(stamp: &Stamp, namespace: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()),
        annotations: stamp.annotations(),
        ..ObjectMeta::default()
    }
}
