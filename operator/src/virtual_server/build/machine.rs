//! The KubeVirt VirtualMachine of a server, with its disks as DataVolume templates.

use super::*;

/// The KubeVirt VirtualMachine of a server, named like it, with its disks as
/// `dataVolumeTemplates`: `<server>-system` from the image (`system_disk_size`, which the
/// caller has already reconciled with the image's `minDiskSize`) and one blank `<server>-<disk>`
/// per data disk.
pub fn virtual_machine(
    server: &VirtualServer,
    image: &ServerImage,
    system_disk_size: &Quantity,
) -> Result<VirtualMachine, BuildError> {
    let name = server_name(server)?;
    let image_name = image.metadata.name.clone().unwrap_or_default();
    if image_name != server.spec.image {
        return Err(BuildError::ImageMismatch {
            expected: server.spec.image.clone(),
            actual: image_name,
        });
    }
    let cores = u32::try_from(server.spec.cpu)
        .ok()
        .filter(|cores| *cores > 0)
        .ok_or(BuildError::InvalidCpu {
            cpu: server.spec.cpu,
        })?;
    let labels = labels(server);
    let disks = &server.spec.disks;

    let system_dv = system_disk_name(name);
    check_dns_label("DataVolume", &system_dv, "")?;
    let mut templates = vec![data_volume_template(
        server,
        system_dv.clone(),
        image_source(image)?,
        system_disk_size,
        disks.storage_class.as_deref(),
    )];
    let mut vm_disks = vec![Disk {
        name: SYSTEM_VOLUME.to_string(),
        disk: Some(virtio()),
        // Only the system disk boots: a blank data disk must never be tried first.
        boot_order: Some(1),
        ..Disk::default()
    }];
    let mut volumes = vec![Volume {
        name: SYSTEM_VOLUME.to_string(),
        data_volume: Some(DataVolumeSource { name: system_dv }),
        ..Volume::default()
    }];

    let mut seen = BTreeSet::new();
    for (index, disk) in disks.data.iter().enumerate() {
        if disk.name == RESERVED_DISK_NAME {
            return Err(BuildError::ReservedDiskName {
                index,
                name: disk.name.clone(),
            });
        }
        if !seen.insert(disk.name.as_str()) {
            return Err(BuildError::DuplicateDiskName {
                index,
                name: disk.name.clone(),
            });
        }
        let dv_name = data_disk_name(name, &disk.name);
        check_dns_label(
            "DataVolume",
            &dv_name,
            &format!(" or data disk name (spec.disks.data[{index}].name)"),
        )?;
        // `data-` keeps the volume names apart from `system` and `cloudinit` whatever the
        // disk is called.
        let volume = format!("data-{}", disk.name);
        templates.push(data_volume_template(
            server,
            dv_name.clone(),
            DiskContent::Blank,
            &disk.size,
            disk.storage_class.as_deref(),
        ));
        vm_disks.push(Disk {
            name: volume.clone(),
            disk: Some(virtio()),
            // The guest finds the disk as /dev/disk/by-id/virtio-<name> whatever order the
            // kernel enumerates it in (virtio serials hold 20 bytes; disk names are at most 20).
            serial: Some(disk.name.clone()),
            ..Disk::default()
        });
        volumes.push(Volume {
            name: volume,
            data_volume: Some(DataVolumeSource { name: dv_name }),
            ..Volume::default()
        });
    }

    let secret = cloud_init_secret_name(name);
    check_length("Secret", &secret, DNS_SUBDOMAIN_MAX, "")?;
    vm_disks.push(Disk {
        name: CLOUD_INIT_VOLUME.to_string(),
        disk: Some(virtio()),
        ..Disk::default()
    });
    volumes.push(Volume {
        name: CLOUD_INIT_VOLUME.to_string(),
        cloud_init_no_cloud: Some(CloudInitNoCloud {
            secret_ref: Some(LocalObjectReference { name: secret }),
            ..CloudInitNoCloud::default()
        }),
        ..Volume::default()
    });

    // Requests = limits, in whole CPUs and exactly the guest's memory: the namespace's quota
    // counts both requests and limits, and the LimitRange's container defaults (1 CPU, 1Gi)
    // must not apply to a server. KubeVirt adds its launcher overhead to both, which the quota
    // sizing allows for (docs/operator.md, Quota sizing); the pod gets Guaranteed QoS.
    let compute = BTreeMap::from([
        ("cpu".to_string(), Quantity(cores.to_string())),
        ("memory".to_string(), server.spec.memory.clone()),
    ]);

    let mut annotations = BTreeMap::new();
    annotations.insert(IMAGE_ANNOTATION.to_string(), server.spec.image.clone());
    let mut metadata = child_meta(server, name.to_string())?;
    metadata.annotations = Some(annotations);

    Ok(VirtualMachine {
        metadata,
        spec: VirtualMachineSpec {
            run_strategy: Some(server.spec.run_strategy.kubevirt().to_string()),
            template: VirtualMachineInstanceTemplateSpec {
                // The labels reach the VMI and its virt-launcher pod, which the Service and the
                // NetworkPolicy select.
                metadata: Some(TemplateMetadata {
                    labels: labels.clone(),
                    ..TemplateMetadata::default()
                }),
                spec: Some(VirtualMachineInstanceSpec {
                    domain: DomainSpec {
                        // One socket of N cores: what guests license and schedule best, and
                        // what Windows Server editions count.
                        cpu: Some(Cpu {
                            cores: Some(cores),
                            sockets: Some(1),
                            threads: Some(1),
                        }),
                        memory: Some(Memory {
                            guest: Some(server.spec.memory.clone()),
                        }),
                        resources: Some(ResourceRequirements {
                            requests: compute.clone(),
                            limits: compute,
                        }),
                        devices: Devices {
                            disks: vm_disks,
                            // Masquerade (NAT behind the pod's address) is the binding that
                            // works on every CNI, keeps NetworkPolicies effective on the pod,
                            // and allows live migration.
                            interfaces: vec![Interface {
                                name: POD_NETWORK.to_string(),
                                masquerade: Some(Empty {}),
                                ..Interface::default()
                            }],
                            // virtio-rng: entropy at first boot, when the guest generates its
                            // SSH host keys.
                            rng: Some(Empty {}),
                            ..Devices::default()
                        },
                        // Firmware is left to KubeVirt's default (BIOS on x86_64, UEFI on
                        // arm64): it boots the cloud images the platform approves, and which
                        // firmware an installed disk needs is a property of the image, not of
                        // the server — switching it under an installed disk can leave it
                        // unbootable. The QEMU guest agent needs no setting either: KubeVirt
                        // always attaches its virtio-serial channel, and images are expected to
                        // ship qemu-guest-agent (status.guestOS and the addresses come from it).
                        ..DomainSpec::default()
                    },
                    networks: vec![Network {
                        name: POD_NETWORK.to_string(),
                        pod: Some(Empty {}),
                    }],
                    volumes,
                    termination_grace_period_seconds: Some(TERMINATION_GRACE_PERIOD_SECONDS),
                    // Node drains move servers instead of shutting them down. A server on
                    // storage that cannot be shared (ReadWriteOnce) is not migratable, and
                    // KubeVirt then blocks the drain rather than stopping it: the platform's
                    // storage classes must offer ReadWriteMany block volumes.
                    eviction_strategy: Some("LiveMigrate".to_string()),
                    ..VirtualMachineInstanceSpec::default()
                }),
            },
            data_volume_templates: templates,
        },
        status: None,
    })
}

/// Where a DataVolume's content comes from.
enum DiskContent {
    DataSource { name: String, namespace: String },
    Http(String),
    Registry(String),
    Blank,
}

fn image_source(image: &ServerImage) -> Result<DiskContent, BuildError> {
    let source = &image.spec.source;
    let mut sources = Vec::new();
    if let Some(reference) = &source.data_source {
        sources.push(DiskContent::DataSource {
            name: reference.name.clone(),
            namespace: reference.namespace.clone(),
        });
    }
    if let Some(url) = &source.http {
        sources.push(DiskContent::Http(url.clone()));
    }
    if let Some(url) = &source.registry {
        sources.push(DiskContent::Registry(url.clone()));
    }
    let count = sources.len();
    match (sources.pop(), count) {
        (Some(source), 1) => Ok(source),
        _ => Err(BuildError::ImageSource {
            image: image.metadata.name.clone().unwrap_or_default(),
            count,
        }),
    }
}

fn data_volume_template(
    server: &VirtualServer,
    name: String,
    source: DiskContent,
    size: &Quantity,
    storage_class: Option<&str>,
) -> DataVolumeTemplateSpec {
    let (source, source_ref) = match source {
        // A CDI DataSource (golden image) is cloned, often as a cheap CSI clone.
        DiskContent::DataSource { name, namespace } => (
            None,
            Some(DataVolumeSourceRef {
                kind: "DataSource".to_string(),
                name,
                namespace: Some(namespace),
            }),
        ),
        DiskContent::Http(url) => (
            Some(DataVolumeSourceSpec {
                http: Some(UrlSource { url }),
                ..DataVolumeSourceSpec::default()
            }),
            None,
        ),
        DiskContent::Registry(url) => (
            Some(DataVolumeSourceSpec {
                registry: Some(UrlSource { url }),
                ..DataVolumeSourceSpec::default()
            }),
            None,
        ),
        DiskContent::Blank => (
            Some(DataVolumeSourceSpec {
                blank: Some(Empty {}),
                ..DataVolumeSourceSpec::default()
            }),
            None,
        ),
    };
    DataVolumeTemplateSpec {
        // The labels reach the DataVolume and its PVC, so a server's disks can be listed.
        // No owner reference: KubeVirt makes the VM own the DataVolumes it creates.
        metadata: ObjectMeta {
            name: Some(name),
            labels: Some(labels(server)),
            ..ObjectMeta::default()
        },
        spec: DataVolumeSpec {
            source,
            source_ref,
            storage: Some(StorageSpec {
                resources: Some(StorageResources {
                    requests: BTreeMap::from([("storage".to_string(), size.clone())]),
                }),
                storage_class_name: storage_class.map(str::to_string),
                // Access and volume mode come from CDI's StorageProfile of the class, which
                // knows whether it can share volumes (needed for live migration).
                ..StorageSpec::default()
            }),
        },
    }
}

fn virtio() -> DiskTarget {
    DiskTarget {
        bus: Some("virtio".to_string()),
    }
}
