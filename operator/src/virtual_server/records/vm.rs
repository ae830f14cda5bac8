//! What the cache keeps of a server's VirtualMachine: the digests of what the operator owns
//! (`watch::record_vm` computes them from the watched VM), its uid and deletion, run strategy,
//! the names and sizes of its DataVolume templates and which DataVolume each volume uses (disk
//! growth, a restore's disks), and KubeVirt's status. The template, most of a VM, is not kept.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

use super::{Record, Stamp};
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
    uid: Option<Box<str>>,
    deleting: Option<Timestamp>,
    run_strategy: Option<Box<str>>,
    disks: Box<[DiskRecord]>,
    volumes: Box<[VolumeRecord]>,
    status: Option<Box<VirtualMachineStatus>>,
}

/// A DataVolume template: its name and storage request.
#[derive(Clone, Debug, PartialEq)]
struct DiskRecord {
    name: Option<Box<str>>,
    size: Option<Quantity>,
}

/// A volume backed by a DataVolume.
#[derive(Clone, Debug, PartialEq)]
struct VolumeRecord {
    name: Box<str>,
    data_volume: Box<str>,
}

impl Record for VmRecord {
    type Object = VirtualMachine;

    fn record(vm: &VirtualMachine) -> Option<Self> {
        let volumes = vm
            .spec
            .template
            .spec
            .as_ref()
            .map(|spec| spec.volumes.as_slice())
            .unwrap_or_default();
        Some(Self {
            stamp: Stamp::of(&vm.metadata),
            uid: vm.metadata.uid.as_deref().map(Into::into),
            deleting: vm.metadata.deletion_timestamp.as_ref().map(|t| t.0),
            run_strategy: vm.spec.run_strategy.as_deref().map(Into::into),
            disks: vm
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
                        .cloned(),
                })
                .collect(),
            volumes: volumes
                .iter()
                .filter_map(|volume| {
                    Some(VolumeRecord {
                        name: volume.name.as_str().into(),
                        data_volume: volume.data_volume.as_ref()?.name.as_str().into(),
                    })
                })
                .collect(),
            status: vm.status.clone().map(Box::new),
        })
    }

    fn object(&self, namespace: &str, name: &str) -> VirtualMachine {
        let volumes = self
            .volumes
            .iter()
            .map(|volume| Volume {
                name: volume.name.to_string(),
                data_volume: Some(DataVolumeSource {
                    name: volume.data_volume.to_string(),
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
                    storage: disk.size.clone().map(|size| StorageSpec {
                        resources: Some(StorageResources {
                            requests: BTreeMap::from([(STORAGE.to_string(), size)]),
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
                uid: self.uid.as_deref().map(str::to_string),
                deletion_timestamp: self.deleting.map(Time),
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
            status: self.status.as_deref().cloned(),
        }
    }
}
