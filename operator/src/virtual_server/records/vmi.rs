//! What the cache keeps of a server's VirtualMachineInstance: its uid and deletion, the CPU and
//! memory it runs with (a restart is required when they differ from the spec), and of KubeVirt's
//! status what the server's status is made from: phase, node, addresses, guest OS, the type,
//! status and message of each condition, and the reason. There is one per running server.

use compact_str::CompactString;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

use super::{ConditionRecord, Record, Text, Uid};
use crate::kubevirt::{
    Cpu, DomainSpec, GuestOsInfo, InterfaceStatus, Memory, VirtualMachineInstance,
    VirtualMachineInstanceSpec, VirtualMachineInstanceStatus,
};

#[derive(Clone, Debug, PartialEq)]
pub struct VmiRecord {
    uid: Option<Uid>,
    /// `metadata.deletionTimestamp`, boxed: nearly always absent.
    deleting: Option<Box<Timestamp>>,
    cpu: Option<Cpu>,
    memory: Option<Memory>,
    status: Option<VmiState>,
}

#[derive(Clone, Debug, PartialEq)]
struct VmiState {
    phase: Option<Text>,
    node: Option<CompactString>,
    interfaces: Box<[InterfaceAddresses]>,
    guest_os: Option<Box<GuestOsInfo>>,
    conditions: Box<[ConditionRecord]>,
    reason: Option<Text>,
}

/// An interface's `ipAddress` and `ipAddresses`.
type InterfaceAddresses = (Option<CompactString>, Box<[CompactString]>);

fn compact(text: &Option<String>) -> Option<CompactString> {
    text.as_deref().map(Into::into)
}

fn owned(text: &Option<impl AsRef<str>>) -> Option<String> {
    text.as_ref().map(|text| text.as_ref().to_string())
}

impl Record for VmiRecord {
    type Object = VirtualMachineInstance;

    fn record(vmi: &VirtualMachineInstance) -> Option<Self> {
        Some(Self {
            uid: vmi.metadata.uid.as_deref().map(Uid::from),
            deleting: vmi
                .metadata
                .deletion_timestamp
                .as_ref()
                .map(|t| Box::new(t.0)),
            cpu: vmi.spec.domain.cpu.clone(),
            memory: vmi.spec.domain.memory.clone(),
            status: vmi.status.as_ref().map(|status| VmiState {
                phase: status.phase.as_deref().map(Text::from),
                node: compact(&status.node_name),
                interfaces: status
                    .interfaces
                    .iter()
                    .map(|interface| {
                        (
                            compact(&interface.ip_address),
                            interface
                                .ip_addresses
                                .iter()
                                .map(|ip| ip.as_str().into())
                                .collect(),
                        )
                    })
                    .collect(),
                guest_os: status.guest_os_info.clone().map(Box::new),
                conditions: status.conditions.iter().map(ConditionRecord::of).collect(),
                reason: status.reason.as_deref().map(Text::from),
            }),
        })
    }

    fn object(&self, namespace: &str, name: &str) -> VirtualMachineInstance {
        VirtualMachineInstance {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(namespace.to_string()),
                uid: self.uid.as_ref().map(Uid::text),
                deletion_timestamp: self.deleting.as_deref().copied().map(Time),
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
            status: self
                .status
                .as_ref()
                .map(|state| VirtualMachineInstanceStatus {
                    phase: owned(&state.phase.as_deref()),
                    node_name: owned(&state.node),
                    interfaces: state
                        .interfaces
                        .iter()
                        .map(|(ip_address, ip_addresses)| InterfaceStatus {
                            ip_address: owned(ip_address),
                            ip_addresses: ip_addresses.iter().map(|ip| ip.to_string()).collect(),
                            ..InterfaceStatus::default()
                        })
                        .collect(),
                    guest_os_info: state.guest_os.as_deref().cloned(),
                    conditions: state
                        .conditions
                        .iter()
                        .map(ConditionRecord::condition)
                        .collect(),
                    reason: owned(&state.reason.as_deref()),
                }),
        }
    }
}
