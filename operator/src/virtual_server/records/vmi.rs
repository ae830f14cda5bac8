//! What the cache keeps of a server's VirtualMachineInstance: its uid and deletion, the CPU and
//! memory it runs with (a restart is required when they differ from the spec) and KubeVirt's
//! status (phase, node, addresses, guest OS, conditions). There is one per running server.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

use super::Record;
use crate::kubevirt::{
    Cpu, DomainSpec, Memory, VirtualMachineInstance, VirtualMachineInstanceSpec,
    VirtualMachineInstanceStatus,
};

#[derive(Clone, Debug, PartialEq)]
pub struct VmiRecord {
    uid: Option<Box<str>>,
    deleting: Option<Timestamp>,
    cpu: Option<Cpu>,
    memory: Option<Memory>,
    status: Option<Box<VirtualMachineInstanceStatus>>,
}

impl Record for VmiRecord {
    type Object = VirtualMachineInstance;

    fn record(vmi: &VirtualMachineInstance) -> Option<Self> {
        Some(Self {
            uid: vmi.metadata.uid.as_deref().map(Into::into),
            deleting: vmi.metadata.deletion_timestamp.as_ref().map(|t| t.0),
            cpu: vmi.spec.domain.cpu.clone(),
            memory: vmi.spec.domain.memory.clone(),
            status: vmi.status.clone().map(Box::new),
        })
    }

    fn object(&self, namespace: &str, name: &str) -> VirtualMachineInstance {
        VirtualMachineInstance {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(namespace.to_string()),
                uid: self.uid.as_deref().map(str::to_string),
                deletion_timestamp: self.deleting.map(Time),
                ..ObjectMeta::default()
            },
            spec: VirtualMachineInstanceSpec {
                domain: DomainSpec {
                    cpu: self.cpu.clone(),
                    memory: self.memory.clone(),
                    ..DomainSpec::default()
                },
                ..VirtualMachineInstanceSpec::default()
            },
            status: self.status.as_deref().cloned(),
        }
    }
}
