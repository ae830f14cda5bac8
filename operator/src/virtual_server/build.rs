//! Pure builders: the objects a `VirtualServer` should produce. No I/O happens here; the
//! controller applies these objects (server-side apply) and `novads render` prints them.
//!
//! Every builder checks the names it derives against Kubernetes' limits and refuses with a
//! [`BuildError`] rather than truncating: a silently shortened name could collide with another
//! server's objects.
//!
//! Longer than 800 lines on purpose: one short section per object a server becomes (the
//! cloud-init Secret, the VirtualMachine with its disks, the Service and NetworkPolicy, the
//! snapshot), all built on the same naming checks, labels and owner reference at the top.

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
    Protocol, ServerImage, ServiceType, SnapshotDeletion, VirtualServer, namespace_for_code,
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

// ---------------------------------------------------------------------------------------------
// cloud-init
// ---------------------------------------------------------------------------------------------

/// The cloud-init NoCloud Secret `<server>-cloud-init` (key `userdata`).
///
/// Without tenant user data it holds the platform's `#cloud-config` alone. With it, a MIME
/// multipart: the tenant's part first, exactly as given (cloud-init detects its type — cloud-
/// config, shell script, boothook, `#include`, or a MIME message of its own), and the
/// platform's cloud-config last with [`PLATFORM_MERGE_TYPE`], so the platform's keys win.
/// Scripts in the tenant's data still run as root in the tenant's own guest; what the
/// platform guarantees is its cloud-config, not what the tenant does with its server later.
pub fn cloud_init_secret(
    server: &VirtualServer,
    tenant_user_data: Option<&str>,
) -> Result<Secret, BuildError> {
    let name = server_name(server)?;
    let user_data = cloud_init_user_data(server, tenant_user_data)?;
    let secret_name = cloud_init_secret_name(name);
    check_length("Secret", &secret_name, DNS_SUBDOMAIN_MAX, "")?;
    Ok(Secret {
        metadata: child_meta(server, secret_name)?,
        type_: Some("Opaque".to_string()),
        // `data`, not `stringData`: it is what the API server stores and returns, so the
        // controller can compare the live Secret with this one byte for byte.
        data: Some(BTreeMap::from([(
            USER_DATA_KEY.to_string(),
            ByteString(user_data.into_bytes()),
        )])),
        ..Secret::default()
    })
}

/// The user data of [`cloud_init_secret`], as text.
pub fn cloud_init_user_data(
    server: &VirtualServer,
    tenant_user_data: Option<&str>,
) -> Result<String, BuildError> {
    let name = server_name(server)?;
    let keys = server
        .spec
        .ssh
        .as_ref()
        .map(|ssh| ssh.authorized_keys.as_slice())
        .unwrap_or_default();
    let platform = platform_cloud_config(name, keys)?;
    let Some(tenant) = tenant_user_data else {
        return Ok(platform);
    };
    if tenant.len() > MAX_TENANT_USER_DATA {
        return Err(BuildError::UserDataTooLarge {
            size: tenant.len(),
            limit: MAX_TENANT_USER_DATA,
        });
    }
    Ok(multipart(tenant, &platform))
}

/// The platform's own cloud-config, written line by line rather than by a YAML serialiser so
/// that every value has one obvious form: strings from the spec are JSON strings (valid YAML
/// double-quoted scalars, never folded or re-indented), and `ssh_pwauth: false` is the last
/// line, where a reviewer looks for it.
fn platform_cloud_config(hostname: &str, keys: &[String]) -> Result<String, BuildError> {
    let quote = |text: &str| {
        serde_json::to_string(text).map_err(|e| BuildError::CloudConfig(e.to_string()))
    };
    let mut config = String::from("#cloud-config\n");
    // The server's name (a DNS label, checked by the caller) is also the guest's hostname.
    config.push_str(&format!("hostname: {}\n", quote(hostname)?));
    // No root login over SSH (cloud-init puts a "log in as the default user" notice in root's
    // authorized_keys instead).
    config.push_str("disable_root: true\n");
    // Only the image's default user; with `dict(replace)` this also drops any users the
    // tenant's data would create (with passwords, say).
    config.push_str("users: [default]\n");
    // The default user's password is locked whatever the image's distro config says, so that
    // the account can only be reached with a key.
    config.push_str("system_info: {default_user: {lock_passwd: true}}\n");
    // Keys for the default user. Left out without keys, so that keys in the tenant's own
    // cloud-config still apply.
    if !keys.is_empty() {
        config.push_str("ssh_authorized_keys:\n");
        for key in keys {
            config.push_str(&format!("  - {}\n", quote(key)?));
        }
    }
    // Password login over SSH is always off (the CRD promises it).
    config.push_str("ssh_pwauth: false\n");
    Ok(config)
}

/// Whether cloud-init treats the data as a MIME message: its own test, `mime-version:` in the
/// first 4096 bytes.
fn is_mime(data: &str) -> bool {
    let head = data.as_bytes().get(..4096).unwrap_or(data.as_bytes());
    head.to_ascii_lowercase()
        .windows(b"mime-version:".len())
        .any(|window| window == b"mime-version:")
}

/// Tenant part first, platform part last.
fn multipart(tenant: &str, platform: &str) -> String {
    // A boundary that occurs in neither part (deterministic, so re-applying the Secret is a
    // no-op). Base64 bodies cannot contain `-`, so only verbatim bodies can collide.
    let mut boundary = "==novads-cloud-init==".to_string();
    let mut n = 0u32;
    while tenant.contains(&boundary) || platform.contains(&boundary) {
        n += 1;
        boundary = format!("==novads-cloud-init-{n}==");
    }
    let mut out =
        format!("Content-Type: multipart/mixed; boundary=\"{boundary}\"\nMIME-Version: 1.0\n\n");
    out.push_str(&format!("--{boundary}\n"));
    if is_mime(tenant) {
        // A MIME message of its own becomes a nested multipart: its headers are the part's
        // headers, and cloud-init walks into it.
        push_body(&mut out, tenant);
    } else {
        // `text/x-not-multipart` makes cloud-init detect the type from the content, exactly
        // as for user data that stands alone.
        push_text_part(
            &mut out,
            "text/x-not-multipart",
            &[(
                "Content-Disposition",
                "attachment; filename=\"tenant-user-data\"",
            )],
            tenant,
        );
    }
    out.push_str(&format!("--{boundary}\n"));
    push_text_part(
        &mut out,
        "text/cloud-config",
        &[
            ("Merge-Type", PLATFORM_MERGE_TYPE),
            (
                "Content-Disposition",
                "attachment; filename=\"novads-platform.cfg\"",
            ),
        ],
        platform,
    );
    out.push_str(&format!("--{boundary}--\n"));
    out
}

/// A text part: verbatim when ASCII; base64 otherwise, because cloud-init decodes an unencoded
/// part through Python's `get_payload(decode=True)`, which mangles non-ASCII characters.
fn push_text_part(out: &mut String, content_type: &str, headers: &[(&str, &str)], body: &str) {
    out.push_str(&format!(
        "Content-Type: {content_type}; charset=\"utf-8\"\n"
    ));
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\n"));
    }
    if body.is_ascii() {
        out.push_str("Content-Transfer-Encoding: 7bit\n\n");
        push_body(out, body);
    } else {
        out.push_str("Content-Transfer-Encoding: base64\n\n");
        let encoded = base64(body.as_bytes());
        // 76-character lines (RFC 2045); base64 is ASCII, so byte slicing is safe.
        for line in encoded.as_bytes().chunks(76) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
    }
}

fn push_body(out: &mut String, body: &str) {
    out.push_str(body);
    if !body.ends_with('\n') {
        out.push('\n');
    }
}

/// Standard base64 with padding (RFC 4648).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let sextet = |n: u32, shift: u32| char::from(ALPHABET[((n >> shift) & 63) as usize]);
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (b(0) << 16) | (b(1) << 8) | b(2);
        out.push(sextet(n, 18));
        out.push(sextet(n, 12));
        out.push(if chunk.len() > 1 { sextet(n, 6) } else { '=' });
        out.push(if chunk.len() > 2 { sextet(n, 0) } else { '=' });
    }
    out
}

// ---------------------------------------------------------------------------------------------
// VirtualMachine
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Service and NetworkPolicy
// ---------------------------------------------------------------------------------------------

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
/// guest, so `targetPort` is the port itself.
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
            ..ServiceSpec::default()
        },
    };
    Ok(Some(Service {
        metadata: child_meta(server, name.to_string())?,
        spec: Some(spec),
        ..Service::default()
    }))
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

// ---------------------------------------------------------------------------------------------
// Snapshots
// ---------------------------------------------------------------------------------------------

/// A scheduled VirtualMachineSnapshot `<server>-<YYYYMMDD-HHMM>` (UTC) of the server's VM.
///
/// Owned by the server only when `spec.backup.onDelete` is `Delete`: then Kubernetes' garbage
/// collector deletes the snapshots with the server. With `Retain` (the default, also without a
/// backup section) the snapshot has no owner, so it survives the server's deletion — an owner
/// reference would let the garbage collector delete it however the operator felt about it.
/// The operator still finds it by its labels (retention).
pub fn snapshot(
    server: &VirtualServer,
    at: jiff::Timestamp,
) -> Result<VirtualMachineSnapshot, BuildError> {
    let name = server_name(server)?;
    let snapshot_name = snapshot_name(name, at);
    check_length(
        "VirtualMachineSnapshot",
        &snapshot_name,
        DNS_SUBDOMAIN_MAX,
        "",
    )?;
    let mut metadata = child_meta(server, snapshot_name)?;
    if let Some(labels) = metadata.labels.as_mut() {
        labels.insert(BACKUP_LABEL.to_string(), BACKUP_SCHEDULED.to_string());
    }
    let on_delete = server
        .spec
        .backup
        .as_ref()
        .map(|backup| backup.on_delete)
        .unwrap_or_default();
    if on_delete == SnapshotDeletion::Retain {
        metadata.owner_references = None;
    }
    Ok(VirtualMachineSnapshot {
        metadata,
        spec: VirtualMachineSnapshotSpec {
            source: TypedLocalObjectReference {
                api_group: Some(VirtualMachine::group(&()).to_string()),
                kind: VirtualMachine::kind(&()).to_string(),
                name: name.to_string(),
            },
            ..VirtualMachineSnapshotSpec::default()
        },
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected, "{input:?}");
        }
    }

    #[test]
    fn mime_is_detected_like_cloud_init_does() {
        assert!(is_mime(
            "Content-Type: multipart/mixed\nMIME-Version: 1.0\n"
        ));
        assert!(is_mime("mime-version: 1.0\n"));
        assert!(!is_mime("#cloud-config\npackages: [nginx]\n"));
        let late = format!("{}\nMIME-Version: 1.0\n", "#".repeat(5000));
        assert!(!is_mime(&late));
    }
}
