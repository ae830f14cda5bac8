//! Pure builders: the objects a `VirtualServer` should produce. No I/O happens here; the
//! controller applies these objects (server-side apply) and `novads render` prints them.
//!
//! Every builder checks the names it derives against Kubernetes' limits and refuses with a
//! [`BuildError`] rather than truncating: a silently shortened name could collide with another
//! server's objects.
//!
//! One file per object a server becomes — [`cloud_init`] (the cloud-init Secret), [`machine`]
//! (the VirtualMachine with its disks), [`exposure`] (the Service and NetworkPolicy) and
//! [`backup`] (the snapshots), [`restore`] (a restore from one of them) — all built on the naming checks, labels and owner reference of
//! this module.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff;
use kube::Resource;
use novads_crds::{
    Expose, Protocol, ServerImage, ServiceType, SnapshotDeletion, VirtualServer, namespace_for_code,
};

use crate::kubevirt::{
    CloudInitNoCloud, Cpu, DataVolumeSource, DataVolumeSourceRef, DataVolumeSourceSpec,
    DataVolumeSpec, DataVolumeTemplateSpec, Devices, Disk, DiskTarget, DomainSpec, Empty,
    Interface, LocalObjectReference, Memory, Network, ResourceRequirements, StorageResources,
    StorageSpec, TemplateMetadata, TypedLocalObjectReference, UrlSource, VirtualMachine,
    VirtualMachineInstanceSpec, VirtualMachineInstanceTemplateSpec, VirtualMachineSnapshot,
    VirtualMachineSnapshotSpec, VirtualMachineSpec, Volume,
};
use crate::reconcile::{MUNICIPALITY_LABEL, managed_labels};

mod backup;
mod cloud_init;
mod exposure;
mod machine;
mod restore;

pub use backup::*;
pub use cloud_init::*;
pub use exposure::*;
pub use machine::*;
pub use restore::*;

/// Label naming the server on everything the operator creates for it. The Service and the
/// NetworkPolicy select the virt-launcher pod by it.
pub const SERVER_LABEL: &str = "novads.io/virtual-server";
/// Label marking snapshots the operator takes on schedule (value [`BACKUP_SCHEDULED`]).
pub const BACKUP_LABEL: &str = "novads.io/backup";
/// Value of [`BACKUP_LABEL`] on scheduled snapshots.
pub const BACKUP_SCHEDULED: &str = "scheduled";
/// Annotation on the VirtualMachine naming the `ServerImage` its system disk came from.
pub const IMAGE_ANNOTATION: &str = "novads.io/server-image";
/// Key of the cloud-init Secret that KubeVirt's NoCloud `secretRef` reads.
pub const USER_DATA_KEY: &str = "userdata";
/// Largest tenant cloud-init user data accepted, in bytes (64 KiB). NoCloud seeds are small;
/// anything larger is almost certainly a mistake (a disk image pasted into a Secret), and the
/// combined Secret must stay far below the API server's 1 MiB object limit.
pub const MAX_TENANT_USER_DATA: usize = 64 * 1024;
/// Merge rule of the platform's cloud-config part. cloud-init merges cloud-config parts in
/// order, each into what the earlier ones produced, using the *later* part's merge rule:
/// `dict(replace)` makes every top-level key of the platform part replace the tenant's value
/// outright (no recursion, so nothing of a tenant's `users` or `ssh_pwauth` survives), while
/// the tenant's other keys (`packages`, `runcmd`, `write_files`, ...) are kept. The rule is
/// spelled out rather than left to cloud-init's default, so that neither a default changed in
/// a future cloud-init nor a `merge_how` in the tenant's data can weaken it: a part's rule only
/// governs how that part is merged.
pub const PLATFORM_MERGE_TYPE: &str = "dict(replace)+list(replace)+str()";

/// Kubernetes' limit for label values, DNS labels (Service names) and, enforced by CDI's
/// webhook, DataVolume names.
pub const DNS_LABEL_MAX: usize = 63;
/// Kubernetes' limit for object names that are DNS subdomains (Secrets, NetworkPolicies,
/// VirtualMachineSnapshots).
pub const DNS_SUBDOMAIN_MAX: usize = 253;

/// The interface and network every server has: the pod network.
const POD_NETWORK: &str = "default";
/// Volume (and disk) names inside the VirtualMachine.
const SYSTEM_VOLUME: &str = "system";
const CLOUD_INIT_VOLUME: &str = "cloudinit";
/// Data disk name that would collide with the system disk's DataVolume `<server>-system`.
const RESERVED_DISK_NAME: &str = "system";
/// Time the guest gets to shut down cleanly before KubeVirt kills it. KubeVirt's VM default is
/// also 180 s; it is set explicitly because servers run databases that need it, and Windows
/// installs pending updates at shutdown.
const TERMINATION_GRACE_PERIOD_SECONDS: i64 = 180;

/// Why the objects of a VirtualServer could not be built. Each message names the field or the
/// limit, so it can go into the server's `Degraded` condition as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The object lacks what the API server always sets (name, namespace, uid).
    #[error("metadata.{missing} is missing")]
    IncompleteObject {
        /// The missing field under `metadata`.
        missing: &'static str,
    },
    /// The server is not in a municipality's namespace (`muni-<code>`).
    #[error(
        "namespace {namespace:?} is not a municipality's namespace (muni-<code>); virtual servers belong in their municipality's namespace"
    )]
    NotInMunicipalityNamespace {
        /// The server's namespace.
        namespace: String,
    },
    /// A derived name exceeds a Kubernetes limit.
    #[error(
        "{kind} name {name:?} would be {length} characters long, but Kubernetes allows at most {limit}; choose a shorter server name{hint}"
    )]
    NameTooLong {
        /// Kind of object whose name is too long.
        kind: &'static str,
        /// The name.
        name: String,
        /// Its length.
        length: usize,
        /// The limit.
        limit: usize,
        /// What else could be shortened (a disk name), or nothing.
        hint: String,
    },
    /// A derived name has characters Kubernetes does not allow there.
    #[error("{kind} name {name:?} is invalid: {why}")]
    InvalidName {
        /// Kind of object whose name is invalid.
        kind: &'static str,
        /// The name.
        name: String,
        /// What the name must look like.
        why: &'static str,
    },
    /// The image passed in is not the one the server names.
    #[error("spec.image is {expected:?}, but ServerImage {actual:?} was given")]
    ImageMismatch {
        /// `spec.image`.
        expected: String,
        /// Name of the ServerImage given.
        actual: String,
    },
    /// The image has no source, or more than one.
    #[error(
        "ServerImage {image:?} must set exactly one of spec.source.dataSource, http or registry; it sets {count}"
    )]
    ImageSource {
        /// Name of the image.
        image: String,
        /// How many sources it sets.
        count: usize,
    },
    /// `spec.cpu` is not a positive number.
    #[error("spec.cpu: {cpu} is not a positive number of virtual CPUs")]
    InvalidCpu {
        /// The value.
        cpu: i32,
    },
    /// A data disk is named like the system disk.
    #[error("spec.disks.data[{index}].name: {name:?} is reserved for the system disk")]
    ReservedDiskName {
        /// Index in `spec.disks.data`.
        index: usize,
        /// The name.
        name: String,
    },
    /// Two data disks share a name.
    #[error("spec.disks.data[{index}].name: {name:?} is used by an earlier data disk")]
    DuplicateDiskName {
        /// Index of the second disk in `spec.disks.data`.
        index: usize,
        /// The name.
        name: String,
    },
    /// An exposed port is out of range.
    #[error("spec.expose.ports[{index}].port: {port} is not a port number (1-65535)")]
    InvalidPort {
        /// Index in `spec.expose.ports`.
        index: usize,
        /// The value.
        port: i32,
    },
    /// The same port and protocol are exposed twice.
    #[error("spec.expose.ports[{index}]: {port}/{protocol} is listed twice")]
    DuplicatePort {
        /// Index of the second entry in `spec.expose.ports`.
        index: usize,
        /// The port.
        port: i32,
        /// `TCP` or `UDP`.
        protocol: &'static str,
    },
    /// An allowed source is not a CIDR.
    #[error("{field}: {value:?} is not a CIDR; write it like 10.20.0.0/16 or 2001:db8::/48")]
    InvalidCidr {
        /// Path of the field, e.g. `spec.expose.ports[0].allowedSources[1]`.
        field: String,
        /// The value.
        value: String,
    },
    /// An allowed source has host bits set (`10.0.0.1/24`), which usually hides a typo.
    #[error("{field}: {value:?} has host bits set; did you mean {network}?")]
    CidrHostBits {
        /// Path of the field.
        field: String,
        /// The value.
        value: String,
        /// The network it lies in.
        network: String,
    },
    /// The tenant's cloud-init user data is larger than [`MAX_TENANT_USER_DATA`].
    #[error(
        "cloud-init user data from spec.cloudInit.secretRef is {size} bytes; at most {limit} bytes (64 KiB) are accepted"
    )]
    UserDataTooLarge {
        /// Its size in bytes.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The platform's cloud-config could not be written.
    #[error("cannot write the cloud-config: {0}")]
    CloudConfig(String),
}

// ---------------------------------------------------------------------------------------------
// Names, labels, owner
// ---------------------------------------------------------------------------------------------

/// The municipality code of the server's namespace `muni-<code>`.
pub fn municipality_code(server: &VirtualServer) -> Result<&str, BuildError> {
    let namespace = server
        .metadata
        .namespace
        .as_deref()
        .ok_or(BuildError::IncompleteObject {
            missing: "namespace",
        })?;
    match namespace.strip_prefix("muni-") {
        // Round-trip through the one definition of the namespace name, so the two cannot drift.
        Some(code) if !code.is_empty() && namespace_for_code(code) == namespace => Ok(code),
        _ => Err(BuildError::NotInMunicipalityNamespace {
            namespace: namespace.to_string(),
        }),
    }
}

/// Labels on everything the operator creates for a server (and on its virt-launcher pod).
/// Without a municipality namespace the municipality label is left out; every builder refuses
/// such a server anyway.
pub fn labels(server: &VirtualServer) -> BTreeMap<String, String> {
    let mut labels = managed_labels();
    labels.insert(
        SERVER_LABEL.to_string(),
        server.metadata.name.clone().unwrap_or_default(),
    );
    if let Ok(code) = municipality_code(server) {
        labels.insert(MUNICIPALITY_LABEL.to_string(), code.to_string());
    }
    labels
}

/// The controller owner reference of the server's children, so that Kubernetes garbage-collects
/// them with the server and the controller hears about changes to them.
pub fn owner_reference(server: &VirtualServer) -> Result<OwnerReference, BuildError> {
    if server.metadata.name.is_none() {
        return Err(BuildError::IncompleteObject { missing: "name" });
    }
    let mut reference = server
        .controller_owner_ref(&())
        .ok_or(BuildError::IncompleteObject { missing: "uid" })?;
    // Foreground deletion of the server waits for its children (the VM shuts down first).
    reference.block_owner_deletion = Some(true);
    Ok(reference)
}

/// Name of the cloud-init Secret: `<server>-cloud-init`.
pub fn cloud_init_secret_name(server_name: &str) -> String {
    format!("{server_name}-cloud-init")
}

/// Name of the system disk's DataVolume (and PVC): `<server>-system`.
pub fn system_disk_name(server_name: &str) -> String {
    format!("{server_name}-{RESERVED_DISK_NAME}")
}

/// Name of a data disk's DataVolume (and PVC): `<server>-<disk>`.
pub fn data_disk_name(server_name: &str, disk: &str) -> String {
    format!("{server_name}-{disk}")
}

/// Name of the NetworkPolicy for exposed ports: `<server>-expose`.
pub fn network_policy_name(server_name: &str) -> String {
    format!("{server_name}-expose")
}

/// Name of a scheduled snapshot: `<server>-<YYYYMMDD-HHMM>` in UTC.
pub fn snapshot_name(server_name: &str, at: jiff::Timestamp) -> String {
    format!("{server_name}-{}", at.strftime("%Y%m%d-%H%M"))
}

/// The server's name, checked to be a DNS label: it becomes a label value (≤ 63 characters),
/// the VirtualMachine's name and the guest's hostname.
fn server_name(server: &VirtualServer) -> Result<&str, BuildError> {
    let name = server
        .metadata
        .name
        .as_deref()
        .ok_or(BuildError::IncompleteObject { missing: "name" })?;
    check_dns_label("VirtualServer", name, "")?;
    Ok(name)
}

/// Checks a DNS-1123 label: at most 63 characters of `a-z`, `0-9` and `-`, starting and ending
/// with a letter or digit.
fn check_dns_label(kind: &'static str, name: &str, hint: &str) -> Result<(), BuildError> {
    check_length(kind, name, DNS_LABEL_MAX, hint)?;
    let valid_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    let alphanumeric =
        |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if name.chars().all(valid_char)
        && alphanumeric(name.chars().next())
        && alphanumeric(name.chars().last())
    {
        Ok(())
    } else {
        Err(BuildError::InvalidName {
            kind,
            name: name.to_string(),
            why: "it must consist of lowercase letters, digits and '-', and start and end with a letter or digit",
        })
    }
}

fn check_length(
    kind: &'static str,
    name: &str,
    limit: usize,
    hint: &str,
) -> Result<(), BuildError> {
    if name.len() > limit {
        return Err(BuildError::NameTooLong {
            kind,
            name: name.to_string(),
            length: name.len(),
            limit,
            hint: hint.to_string(),
        });
    }
    Ok(())
}

/// Name, namespace, labels and owner of a child object; checks everything the children share.
fn child_meta(server: &VirtualServer, name: String) -> Result<ObjectMeta, BuildError> {
    server_name(server)?;
    let namespace = server
        .metadata
        .namespace
        .clone()
        .ok_or(BuildError::IncompleteObject {
            missing: "namespace",
        })?;
    municipality_code(server)?;
    Ok(ObjectMeta {
        name: Some(name),
        namespace: Some(namespace),
        labels: Some(labels(server)),
        owner_references: Some(vec![owner_reference(server)?]),
        ..ObjectMeta::default()
    })
}
