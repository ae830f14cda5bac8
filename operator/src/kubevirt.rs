//! Typed KubeVirt, CDI and snapshot objects: the fields novads sets and reads.
//!
//! No Rust types are published for KubeVirt, so these model only what novads needs:
//!
//! - on write (server-side apply), every optional field is skipped when unset, so the operator
//!   claims ownership of exactly the fields it sets and nothing else;
//! - on read, every struct is `#[serde(default)]` and unknown fields are ignored, so the far
//!   richer objects the API returns (and fields a newer KubeVirt adds) never fail
//!   deserialisation.
//!
//! `schema = "disabled"`: these are someone else's CRDs; novads never generates their
//! CustomResourceDefinitions, so no JSON schema derive is needed. The objects are validated
//! against the published upstream schemas in the tests instead.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::CustomResource;
use serde::{Deserialize, Serialize};

/// An empty object (`{}`), for KubeVirt's "presence means on" fields such as
/// `interfaces[].masquerade`, `devices.rng` and `source.blank`. A braced struct without fields
/// serialises as `{}` (a unit struct would serialise as `null`, which the API rejects).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Empty {}

// ---------------------------------------------------------------------------------------------
// VirtualMachine (kubevirt.io/v1)
// ---------------------------------------------------------------------------------------------

/// Desired state of a KubeVirt `VirtualMachine` (`kubevirt.io/v1`).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "kubevirt.io",
    version = "v1",
    kind = "VirtualMachine",
    plural = "virtualmachines",
    namespaced,
    status = "VirtualMachineStatus",
    schema = "disabled",
    derive = "Default",
    derive = "PartialEq"
)]
#[serde(default, rename_all = "camelCase")]
pub struct VirtualMachineSpec {
    /// `Always`, `RerunOnFailure`, `Manual`, `Halted` (or `Once`); see
    /// [`novads_crds::RunStrategy::kubevirt`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_strategy: Option<String>,

    /// The virtual machine instance to create when the VM runs.
    pub template: VirtualMachineInstanceTemplateSpec,

    /// DataVolumes created (and owned) by the VM: its disks, populated by CDI.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub data_volume_templates: Vec<DataVolumeTemplateSpec>,
}

impl VirtualMachineSpec {
    /// The instance template's volumes (none without a template spec).
    pub fn volumes(&self) -> &[Volume] {
        self.template
            .spec
            .as_ref()
            .map(|spec| spec.volumes.as_slice())
            .unwrap_or_default()
    }
}

/// `spec.template` of a VirtualMachine.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct VirtualMachineInstanceTemplateSpec {
    /// Labels and annotations of the instance; they also reach its virt-launcher pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TemplateMetadata>,

    /// Specification of the instance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec: Option<VirtualMachineInstanceSpec>,
}

/// The part of `ObjectMeta` a template may carry. (`ObjectMeta` itself would also do, but this
/// keeps templates to what KubeVirt actually propagates.)
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct TemplateMetadata {
    /// Labels of the instance and its virt-launcher pod.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations of the instance and its virt-launcher pod.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Observed state of a VirtualMachine, as read.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct VirtualMachineStatus {
    /// Human-readable state: `Stopped`, `Provisioning`, `Starting`, `Running`, `Paused`,
    /// `Stopping`, `Terminating`, `Migrating`, `Unknown`, `ErrorUnschedulable`,
    /// `ErrImagePull`, `ImagePullBackOff`, `ErrorPvcNotFound`, `DataVolumeError`,
    /// `CrashLoopBackOff`, `WaitingForVolumeBinding`, ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub printable_status: Option<String>,

    /// Whether the instance runs and is ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,

    /// Whether an instance exists for the VM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<bool>,

    /// Conditions (`Ready`, `Paused`, `Failure`, `RestartRequired`, `LiveMigratable`, ...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<KubeVirtCondition>,

    /// Per volume, whether it supports snapshots (and why not).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volume_snapshot_statuses: Vec<VolumeSnapshotStatus>,

    /// Generation of the VM spec that KubeVirt last acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Generation of the VM spec KubeVirt should act on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desired_generation: Option<i64>,

    /// Present while KubeVirt backs off after failed starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_failure: Option<StartFailure>,
}

/// A condition of a KubeVirt object (VM, VMI, snapshot). Unlike the core `Condition`, reason,
/// message and times are optional and the times may be `null`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct KubeVirtCondition {
    /// Condition type, e.g. `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// CamelCase reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the status last changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// When the condition was last probed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<Time>,
}

/// Whether one volume of a VM supports snapshots.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct VolumeSnapshotStatus {
    /// Volume name.
    pub name: String,
    /// True when the volume can be snapshotted.
    pub enabled: bool,
    /// Why not, when it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Start back-off information of a VM.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct StartFailure {
    /// How many starts failed in a row.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consecutive_fail_count: Option<i64>,
    /// When the next start is attempted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_timestamp: Option<Time>,
}

// ---------------------------------------------------------------------------------------------
// VirtualMachineInstance (kubevirt.io/v1); its spec is also the VM template's spec
// ---------------------------------------------------------------------------------------------

/// Specification of a `VirtualMachineInstance` (`kubevirt.io/v1`) — the running instance of a
/// VM — and of a VM's `spec.template.spec`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "kubevirt.io",
    version = "v1",
    kind = "VirtualMachineInstance",
    plural = "virtualmachineinstances",
    namespaced,
    status = "VirtualMachineInstanceStatus",
    schema = "disabled",
    derive = "Default",
    derive = "PartialEq"
)]
#[serde(default, rename_all = "camelCase")]
pub struct VirtualMachineInstanceSpec {
    /// The virtual hardware.
    pub domain: DomainSpec,

    /// Networks the interfaces connect to (by name).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<Network>,

    /// Volumes the disks are backed by (by name).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,

    /// How long the guest gets to shut down cleanly before it is killed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<i64>,

    /// What happens on node drain: `LiveMigrate`, `LiveMigrateIfPossible`, `None`, `External`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eviction_strategy: Option<String>,

    /// Hostname of the guest (defaults to the VMI name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

/// `domain`: the virtual hardware.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct DomainSpec {
    /// CPU topology.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,

    /// Memory visible to the guest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,

    /// Compute resources of the virt-launcher pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Devices (required by the schema, hence not skipped).
    pub devices: Devices,

    /// Firmware and bootloader.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firmware: Option<Firmware>,

    /// Hypervisor features (ACPI, SMM, Hyper-V enlightenments).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub features: Option<Features>,
}

/// CPU topology of a guest.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default, rename_all = "camelCase")]
pub struct Cpu {
    /// Cores per socket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    /// Sockets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sockets: Option<u32>,
    /// Threads per core.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<u32>,
}

/// Memory of a guest.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Memory {
    /// Memory the guest OS sees, e.g. `4Gi`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest: Option<Quantity>,
}

/// Compute resources of the virt-launcher pod (`domain.resources`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct ResourceRequirements {
    /// Requests, e.g. `cpu`, `memory`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, Quantity>,
    /// Limits, e.g. `cpu`, `memory`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, Quantity>,
}

/// Devices of a guest.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Devices {
    /// Disks, each backed by the volume of the same name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<Disk>,

    /// Network interfaces, each connected to the network of the same name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,

    /// A virtio random-number generator (`{}` to attach one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rng: Option<Empty>,

    /// Whether a serial console is attached (KubeVirt's default: yes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autoattach_serial_console: Option<bool>,

    /// Whether a graphics device (VNC) is attached (KubeVirt's default: yes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autoattach_graphics_device: Option<bool>,
}

/// A disk of a guest.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Disk {
    /// Name, equal to the backing volume's.
    pub name: String,
    /// Attach as a disk (rather than a CD-ROM or LUN).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskTarget>,
    /// Boot order, lowest first; disks without one are not booted from when any has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_order: Option<u32>,
    /// Serial number the guest sees (e.g. for `/dev/disk/by-id/`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
}

/// How a disk is attached.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default, rename_all = "camelCase")]
pub struct DiskTarget {
    /// Bus: `virtio`, `sata`, `scsi`, `usb`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bus: Option<String>,
}

/// A network interface of a guest.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Interface {
    /// Name, equal to the network's.
    pub name: String,
    /// NAT behind the pod's address (`{}`): the only binding that works with every CNI and
    /// with live migration on the pod network.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub masquerade: Option<Empty>,
    /// Bridge binding (`{}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bridge: Option<Empty>,
    /// NIC model, e.g. `virtio` (default) or `e1000e`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// Firmware of a guest.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Firmware {
    /// BIOS or EFI.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootloader: Option<Bootloader>,
    /// SMBIOS serial number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
}

/// Bootloader: exactly one of `bios` or `efi`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Bootloader {
    /// Legacy BIOS (SeaBIOS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bios: Option<Bios>,
    /// UEFI (OVMF).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub efi: Option<Efi>,
}

/// BIOS settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default, rename_all = "camelCase")]
pub struct Bios {
    /// Send BIOS output to the serial console.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_serial: Option<bool>,
}

/// UEFI settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default, rename_all = "camelCase")]
pub struct Efi {
    /// Secure Boot (needs `features.smm`; KubeVirt's default: on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secure_boot: Option<bool>,
    /// Keep the EFI NVRAM across reboots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persistent: Option<bool>,
}

/// Hypervisor features.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Features {
    /// System Management Mode (needed by Secure Boot).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smm: Option<FeatureState>,
}

/// An on/off hypervisor feature.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default, rename_all = "camelCase")]
pub struct FeatureState {
    /// On (KubeVirt's default when the feature is present) or off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// A network of a guest.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Network {
    /// Name, referenced by an interface.
    pub name: String,
    /// The pod network (`{}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<Empty>,
}

/// A volume of a guest: exactly one source.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Volume {
    /// Name, referenced by a disk.
    pub name: String,
    /// A DataVolume (normally one of the VM's `dataVolumeTemplates`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_volume: Option<DataVolumeSource>,
    /// A cloud-init NoCloud seed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud_init_no_cloud: Option<CloudInitNoCloud>,
}

/// A volume backed by a DataVolume.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default, rename_all = "camelCase")]
pub struct DataVolumeSource {
    /// Name of the DataVolume (and its PVC).
    pub name: String,
}

/// A cloud-init NoCloud seed volume.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default, rename_all = "camelCase")]
pub struct CloudInitNoCloud {
    /// Secret whose `userdata` (or `userData`) key holds the user data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
    /// Secret whose `networkdata` (or `networkData`) key holds the network config.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_data_secret_ref: Option<LocalObjectReference>,
}

/// Reference to an object in the same namespace, by name.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default, rename_all = "camelCase")]
pub struct LocalObjectReference {
    /// Name of the object.
    pub name: String,
}

/// Observed state of a VirtualMachineInstance, as read.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct VirtualMachineInstanceStatus {
    /// `Pending`, `Scheduling`, `Scheduled`, `Running`, `Succeeded`, `Failed`, `Unknown`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,

    /// Node the instance runs on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,

    /// Network interfaces with their addresses (from the guest agent when it runs).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<InterfaceStatus>,

    /// Operating system as the guest agent reports it.
    #[serde(rename = "guestOSInfo", skip_serializing_if = "Option::is_none")]
    pub guest_os_info: Option<GuestOsInfo>,

    /// Conditions (`Ready`, `LiveMigratable`, `AgentConnected`, ...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<KubeVirtCondition>,

    /// Why the instance is in its phase, when KubeVirt says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A network interface of a running instance.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct InterfaceStatus {
    /// Name of the interface in the VM spec.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Primary address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    /// Every address.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ip_addresses: Vec<String>,
    /// MAC address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Name of the interface inside the guest, e.g. `enp1s0`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface_name: Option<String>,
}

/// Operating system of a running guest, from the guest agent.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default, rename_all = "camelCase")]
pub struct GuestOsInfo {
    /// e.g. `Debian GNU/Linux`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// e.g. `12 (bookworm)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// e.g. `6.1.0-18-amd64`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_release: Option<String>,
    /// e.g. `Debian GNU/Linux 12 (bookworm)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pretty_name: Option<String>,
    /// e.g. `debian`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// CDI DataVolume (cdi.kubevirt.io/v1beta1), as used in dataVolumeTemplates
// ---------------------------------------------------------------------------------------------

/// An entry of a VM's `dataVolumeTemplates`: a DataVolume the VM creates and owns.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct DataVolumeTemplateSpec {
    /// Name (and labels) of the DataVolume.
    pub metadata: ObjectMeta,
    /// What the DataVolume holds and where it is stored.
    pub spec: DataVolumeSpec,
}

/// Specification of a CDI `DataVolume` (`cdi.kubevirt.io/v1beta1`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct DataVolumeSpec {
    /// Where the content comes from (one of its fields); alternative to `sourceRef`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<DataVolumeSourceSpec>,
    /// Indirect source: a CDI `DataSource` (golden image); alternative to `source`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_ref: Option<DataVolumeSourceRef>,
    /// Storage to provision; CDI fills in what is left out from the storage profile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSpec>,
}

/// Direct source of a DataVolume: exactly one field set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct DataVolumeSourceSpec {
    /// Download from an http(s) URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<UrlSource>,
    /// Import a container disk from a registry (`docker://` or `oci-archive://`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry: Option<UrlSource>,
    /// An empty disk (`{}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blank: Option<Empty>,
}

/// A source given by URL (`http.url`, `registry.url`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default, rename_all = "camelCase")]
pub struct UrlSource {
    /// The URL.
    pub url: String,
}

/// `sourceRef` of a DataVolume.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default, rename_all = "camelCase")]
pub struct DataVolumeSourceRef {
    /// Only `DataSource` is supported by CDI.
    pub kind: String,
    /// Name of the DataSource.
    pub name: String,
    /// Namespace of the DataSource (the DataVolume's own when omitted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// `storage` of a DataVolume.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size request (`resources.requests.storage`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<StorageResources>,
    /// Storage class; the cluster's default when omitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Access modes; from the storage profile when omitted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub access_modes: Vec<String>,
}

/// Resource requests of a DataVolume's storage.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct StorageResources {
    /// Requests, normally just `storage`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, Quantity>,
}

// ---------------------------------------------------------------------------------------------
// VirtualMachineSnapshot (snapshot.kubevirt.io/v1beta1)
// ---------------------------------------------------------------------------------------------

/// Specification of a `VirtualMachineSnapshot` (`snapshot.kubevirt.io/v1beta1`): a snapshot of
/// every snapshot-capable disk of a VM.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "snapshot.kubevirt.io",
    version = "v1beta1",
    kind = "VirtualMachineSnapshot",
    plural = "virtualmachinesnapshots",
    namespaced,
    status = "VirtualMachineSnapshotStatus",
    schema = "disabled",
    derive = "Default",
    derive = "PartialEq"
)]
#[serde(default, rename_all = "camelCase")]
pub struct VirtualMachineSnapshotSpec {
    /// The VM to snapshot.
    pub source: TypedLocalObjectReference,
    /// `Delete` (default) or `Retain`: what happens to the snapshot content when this object
    /// is deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<String>,
    /// How long the snapshot may take before it fails, e.g. `5m0s`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_deadline: Option<String>,
}

/// Reference to an object of a given kind in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default, rename_all = "camelCase")]
pub struct TypedLocalObjectReference {
    /// API group, e.g. `kubevirt.io`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_group: Option<String>,
    /// Kind, e.g. `VirtualMachine`.
    pub kind: String,
    /// Name.
    pub name: String,
}

/// Observed state of a VirtualMachineSnapshot, as read.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct VirtualMachineSnapshotStatus {
    /// True once the snapshot can be restored from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_to_use: Option<bool>,
    /// When the snapshot was taken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<Time>,
    /// `InProgress`, `Succeeded`, `Failed`, `Unknown`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The last error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<SnapshotError>,
    /// Conditions (`Ready`, `Progressing`, `Failure`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<KubeVirtCondition>,
}

/// An error of a snapshot.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct SnapshotError {
    /// What went wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
}

// ---------------------------------------------------------------------------------------------
// VirtualMachineRestore (snapshot.kubevirt.io/v1beta1)
// ---------------------------------------------------------------------------------------------

/// Specification of a `VirtualMachineRestore` (`snapshot.kubevirt.io/v1beta1`): restores a
/// VM's disks from a VirtualMachineSnapshot, into the VM it was taken of or into a new VM
/// (which KubeVirt then creates from the snapshot, with `patches` applied).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "snapshot.kubevirt.io",
    version = "v1beta1",
    kind = "VirtualMachineRestore",
    plural = "virtualmachinerestores",
    namespaced,
    status = "VirtualMachineRestoreStatus",
    schema = "disabled",
    derive = "Default",
    derive = "PartialEq"
)]
#[serde(default, rename_all = "camelCase")]
pub struct VirtualMachineRestoreSpec {
    /// The VM to restore into.
    pub target: TypedLocalObjectReference,
    /// The snapshot to restore from.
    pub virtual_machine_snapshot_name: String,
    /// JSON patches (as strings) applied to a new target VM before KubeVirt creates it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub patches: Vec<String>,
}

/// Observed state of a VirtualMachineRestore, as read.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct VirtualMachineRestoreStatus {
    /// True once every disk is restored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub complete: Option<bool>,
    /// When the restore completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_time: Option<Time>,
    /// Conditions (`Progressing`, `Ready`, `Failure`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<KubeVirtCondition>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_tolerates_unknown_and_missing_fields() {
        let vm: VirtualMachine = serde_json::from_value(serde_json::json!({
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachine",
            "metadata": {"name": "web", "namespace": "muni-talsi"},
            "spec": {
                "runStrategy": "Always",
                "instancetype": {"name": "u1.small"},
                "template": {"spec": {"domain": {"devices": {}, "machine": {"type": "q35"}}}}
            },
            "status": {
                "printableStatus": "Running",
                "ready": true,
                "conditions": [{"type": "Ready", "status": "True", "lastProbeTime": null}],
                "volumeSnapshotStatuses": [{"name": "rootdisk", "enabled": true}],
                "somethingNew": {"x": 1}
            }
        }))
        .expect("a VM with unknown fields deserialises");
        let status = vm.status.expect("status");
        assert_eq!(status.printable_status.as_deref(), Some("Running"));
        assert_eq!(status.conditions[0].last_probe_time, None);

        let snapshot: VirtualMachineSnapshot = serde_json::from_value(serde_json::json!({
            "apiVersion": "snapshot.kubevirt.io/v1beta1",
            "kind": "VirtualMachineSnapshot",
            "metadata": {"name": "s"},
            "spec": {},
            "status": {"readyToUse": false, "error": {"message": "boom"}}
        }))
        .expect("a sparse snapshot deserialises");
        assert_eq!(
            snapshot
                .status
                .and_then(|s| s.error)
                .and_then(|e| e.message),
            Some("boom".to_string())
        );
    }

    #[test]
    fn empty_markers_serialise_as_empty_objects() {
        let interface = Interface {
            name: "default".into(),
            masquerade: Some(Empty {}),
            ..Interface::default()
        };
        assert_eq!(
            serde_json::to_value(&interface).expect("serialises"),
            serde_json::json!({"name": "default", "masquerade": {}})
        );
    }
}
