//! What the cache keeps of a server's VirtualMachine: the digests of what the operator owns
//! (the watch notes them, `unchanged::record_live`), its uid and deletion, run strategy,
//! the names and sizes of its DataVolume templates and which DataVolume each volume uses (disk
//! growth, a restore's disks), and of KubeVirt's status the printable status, readiness and
//! conditions. The template, most of a VM, is not kept.

use std::collections::BTreeMap;

use compact_str::CompactString;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

use super::{ConditionRecord, Record, Stamp, Text, Uid};
use crate::kubevirt::{
    DataVolumeSource, DataVolumeSpec, DataVolumeTemplateSpec, StorageResources, StorageSpec,
    VirtualMachine, VirtualMachineInstanceSpec, VirtualMachineInstanceTemplateSpec,
    VirtualMachineSpec, VirtualMachineStatus, Volume,
};

/// The storage request's key in a DataVolume template.
const STORAGE: &str = "storage";

#[derive(Clone, Debug, PartialEq)]
pub struct VmRecord {
    stamp: Stamp,
    uid: Option<Uid>,
    /// `metadata.deletionTimestamp`, boxed: nearly always absent.
    deleting: Option<Box<Timestamp>>,
    run_strategy: Option<Text>,
    disks: Box<[DiskRecord]>,
    /// The volumes backed by a DataVolume that no template's `volume` names (none, nearly
    /// always: each template backs one volume).
    other_volumes: Box<[(Text, CompactString)]>,
    status: Option<VmState>,
}

/// A DataVolume template: its name, storage request and the volume it backs. A reconcile
/// looks volumes up by name, so they are read back in the templates' order, then the others.
#[derive(Clone, Debug, PartialEq)]
struct DiskRecord {
    name: Option<CompactString>,
    size: Option<CompactString>,
    volume: Option<Text>,
}

#[derive(Clone, Debug, PartialEq)]
struct VmState {
    printable: Option<Text>,
    ready: Option<bool>,
    created: Option<bool>,
    conditions: Box<[ConditionRecord]>,
}

impl Record for VmRecord {
    type Object = VirtualMachine;

    fn record(vm: &VirtualMachine) -> Option<Self> {
        let mut disks: Box<[DiskRecord]> = vm
            .spec
            .data_volume_templates
            .iter()
            .map(|template| DiskRecord {
                name: template.metadata.name.as_deref().map(Into::into),
                size: template
                    .spec
                    .storage
                    .as_ref()
                    .and_then(|storage| storage.resources.as_ref())
                    .and_then(|resources| resources.requests.get(STORAGE))
                    .map(|size| size.0.as_str().into()),
                volume: None,
            })
            .collect();
        let mut other_volumes = Vec::new();
        for volume in vm.spec.volumes() {
            let Some(source) = &volume.data_volume else {
                continue;
            };
            let template = disks.iter_mut().find(|disk| {
                disk.volume.is_none() && disk.name.as_deref() == Some(source.name.as_str())
            });
            match template {
                Some(disk) => disk.volume = Some(volume.name.as_str().into()),
                None => {
                    other_volumes.push((volume.name.as_str().into(), source.name.as_str().into()))
                }
            }
        }
        Some(Self {
            stamp: Stamp::of(&vm.metadata),
            uid: vm.metadata.uid.as_deref().map(Into::into),
            deleting: vm
                .metadata
                .deletion_timestamp
                .as_ref()
                .map(|t| Box::new(t.0)),
            run_strategy: vm.spec.run_strategy.as_deref().map(Text::from),
            disks,
            other_volumes: other_volumes.into(),
            status: vm.status.as_ref().map(|status| VmState {
                printable: status.printable_status.as_deref().map(Text::from),
                ready: status.ready,
                created: status.created,
                conditions: status.conditions.iter().map(ConditionRecord::of).collect(),
            }),
        })
    }

    fn object(&self, namespace: &str, name: &str) -> VirtualMachine {
        let backed = self.disks.iter().filter_map(|disk| {
            Some((
                disk.volume.as_deref()?,
                disk.name.as_deref().unwrap_or_default(),
            ))
        });
        let others = self
            .other_volumes
            .iter()
            .map(|(name, data_volume)| (&**name, data_volume.as_str()));
        let volumes = backed
            .chain(others)
            .map(|(name, data_volume)| Volume {
                name: name.to_string(),
                data_volume: Some(DataVolumeSource {
                    name: data_volume.to_string(),
                }),
                cloud_init_no_cloud: None,
            })
            .collect();
        let data_volume_templates = self
            .disks
            .iter()
            .map(|disk| DataVolumeTemplateSpec {
                metadata: ObjectMeta {
                    name: disk.name.as_deref().map(str::to_string),
                    ..ObjectMeta::default()
                },
                spec: DataVolumeSpec {
                    storage: disk.size.as_deref().map(|size| StorageSpec {
                        resources: Some(StorageResources {
                            requests: BTreeMap::from([(
                                STORAGE.to_string(),
                                Quantity(size.to_string()),
                            )]),
                        }),
                        ..StorageSpec::default()
                    }),
                    ..DataVolumeSpec::default()
                },
            })
            .collect();
        VirtualMachine {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(namespace.to_string()),
                uid: self.uid.as_ref().map(Uid::text),
                deletion_timestamp: self.deleting.as_deref().copied().map(Time),
                annotations: self.stamp.annotations(),
                ..ObjectMeta::default()
            },
            spec: VirtualMachineSpec {
                run_strategy: self.run_strategy.as_deref().map(str::to_string),
                template: VirtualMachineInstanceTemplateSpec {
                    metadata: None,
                    spec: Some(VirtualMachineInstanceSpec {
                        volumes,
                        ..VirtualMachineInstanceSpec::default()
                    }),
                },
                data_volume_templates,
            },
            status: self.status.as_ref().map(|state| VirtualMachineStatus {
                printable_status: state.printable.as_deref().map(str::to_string),
                ready: state.ready,
                created: state.created,
                conditions: state
                    .conditions
                    .iter()
                    .map(ConditionRecord::condition)
                    .collect(),
                ..VirtualMachineStatus::default()
            }),
        }
    }
}
