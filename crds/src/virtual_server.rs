//! `VirtualServer`: a municipality's virtual server, run by KubeVirt from an approved
//! `ServerImage`. The operator turns it into a VirtualMachine with its disks, a cloud-init
//! Secret, a Service and NetworkPolicy for exposed ports, and scheduled snapshots.

// kube-derive's `printcolumn(type_ = ...)` repeats the same key in every column, which clippy
// mistakes for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A virtual server of a municipality, installed from an approved `ServerImage`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "novads.io",
    version = "v1alpha1",
    kind = "VirtualServer",
    plural = "virtualservers",
    shortname = "vs",
    category = "novads",
    namespaced,
    status = "VirtualServerStatus",
    derive = "PartialEq",
    doc = "A virtual server of a municipality, installed from an approved ServerImage and run by KubeVirt.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Image", type_ = "string", json_path = ".spec.image"),
    printcolumn(name = "CPU", type_ = "integer", json_path = ".spec.cpu"),
    printcolumn(name = "Memory", type_ = "string", json_path = ".spec.memory"),
    printcolumn(name = "IP", type_ = "string", json_path = ".status.ip"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        priority = 1
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    ),
    printcolumn(
        name = "Node",
        type_ = "string",
        json_path = ".status.node",
        priority = 1
    ),
    printcolumn(
        name = "Last-Backup",
        type_ = "date",
        json_path = ".status.lastBackupTime",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct VirtualServerSpec {
    /// Name of the `ServerImage` to install from. It must be approved and in support when the
    /// server is created; changing it later does not reinstall a running server.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub image: String,

    /// Virtual CPUs, 1–64. Changing it takes effect at the next restart.
    #[schemars(range(min = 1, max = 64))]
    pub cpu: i32,

    /// Guest memory between 256Mi and 1Ti, e.g. `4Gi`. Changing it takes effect at the next
    /// restart (the status then shows `RestartRequired`).
    #[x_kube(validation = kube::core::Rule::new(MEMORY_RANGE).message("memory must be a quantity between 256Mi and 1Ti, such as 4Gi"))]
    #[schemars(extend("maxLength" = crate::QUANTITY_MAX_LENGTH))]
    pub memory: Quantity,

    /// Disks: the system disk installed from the image and empty data disks.
    #[serde(default)]
    pub disks: ServerDisks,

    /// Whether the server runs: `Running` (default; started again when it stops),
    /// `RerunOnFailure` (started again only after a failure), `Manual` (left as it is: neither
    /// started nor stopped on its own) or `Halted` (stopped). The only switch of power state.
    #[serde(default)]
    pub run_strategy: RunStrategy,

    /// Restart request: set it to a new value (e.g. the current time) to restart the server
    /// once. The operator records the value it acted on in `status.restartHandled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub restart: Option<String>,

    /// SSH access for the default user of the image. Password login is always disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshAccess>,

    /// Extra cloud-init user data from a Secret in the server's own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_init: Option<CloudInit>,

    /// Ports reachable from outside the municipality's namespace and who may reach them.
    /// Without it the server is reachable only from within the municipality.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose: Option<Expose>,

    /// Scheduled snapshots of all the server's disks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<Backup>,

    /// When the operator may restart the server by itself to apply a change that needs a
    /// restart (CPU or memory). Without it, such changes wait for a `restart` request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_window: Option<MaintenanceWindow>,

    /// Restore the server's disks from one of its backups (listed in `status.backups`), or
    /// create this new server from another server's backup (`fromServer`). The operator stops
    /// the server, restores every disk, and starts it again per `runStrategy`; progress and
    /// outcome are in the `Restoring` condition and `status.restore`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<Restore>,
}

/// A restore request: carried out once per (`backup`, `fromServer`, `token`).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Restore {
    /// Name of the backup (a VirtualMachineSnapshot in the namespace), as `status.backups`
    /// lists it, e.g. `web-20261203-0200`.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub backup: String,

    /// The server the backup belongs to, when it is another one. Only a new server (one whose
    /// VirtualMachine does not exist yet) is made from another server's backup: its disks are
    /// then the backup's instead of the image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub from_server: Option<String>,

    /// Set it to a new value (e.g. the current time) to restore the same backup once more;
    /// the value acted on is recorded in `status.restore.token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub token: Option<String>,
}

/// CEL rule bounding guest memory (Kubernetes ≥ 1.29 quantity library).
const MEMORY_RANGE: &str = "isQuantity(string(self)) && quantity(string(self)).compareTo(quantity('256Mi')) >= 0 && quantity(string(self)).compareTo(quantity('1Ti')) <= 0";

/// CEL rule bounding a disk size.
const DISK_RANGE: &str = "isQuantity(string(self)) && quantity(string(self)).compareTo(quantity('1Gi')) >= 0 && quantity(string(self)).compareTo(quantity('64Ti')) <= 0";

/// CEL transition rule: a disk may grow, never shrink (checked only on updates).
const NO_SHRINK: &str = "!isQuantity(string(oldSelf)) || !isQuantity(string(self)) || quantity(string(self)).compareTo(quantity(string(oldSelf))) >= 0";

/// Whether and when a virtual server runs; mapped to the KubeVirt run strategies
/// (`Running` is KubeVirt's `Always`).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RunStrategy {
    /// Keep it running; start it again whenever it stops.
    #[default]
    Running,
    /// Start it again only when it fails.
    RerunOnFailure,
    /// Left as it is: KubeVirt neither starts nor stops it on its own (a server shut down from
    /// inside stays off until the strategy is set to `Running`).
    Manual,
    /// Keep it stopped.
    Halted,
}

impl RunStrategy {
    /// The KubeVirt `spec.runStrategy` value.
    pub fn kubevirt(self) -> &'static str {
        match self {
            Self::Running => "Always",
            Self::RerunOnFailure => "RerunOnFailure",
            Self::Manual => "Manual",
            Self::Halted => "Halted",
        }
    }
}

/// The disks of a virtual server.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServerDisks {
    /// Size of the system disk, at least the image's `minDiskSize` (the default). It can grow:
    /// the operator expands the disk's PersistentVolumeClaim (the storage class must allow
    /// expansion; the guest then grows its file system, as cloud images do at boot). Shrinking
    /// is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(
        validation = kube::core::Rule::new(DISK_RANGE).message("systemSize must be a quantity between 1Gi and 64Ti, such as 40Gi"),
        validation = kube::core::Rule::new(NO_SHRINK).message("systemSize can grow but not shrink: a disk's data cannot be cut")
    )]
    #[schemars(extend("maxLength" = crate::QUANTITY_MAX_LENGTH))]
    pub system_size: Option<Quantity>,

    /// Storage class of the system disk; the cluster's default when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub storage_class: Option<String>,

    /// Empty data disks, at most 8, each with a unique name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    pub data: Vec<DataDisk>,
}

/// An empty data disk.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DataDisk {
    /// Disk name, unique within the server, e.g. `data` (lowercase letters, digits, `-`).
    #[schemars(
        length(min = 1, max = 20),
        regex(pattern = r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,

    /// Size between 1Gi and 64Ti, e.g. `100Gi`. It can grow (see `systemSize`), never shrink.
    #[x_kube(
        validation = kube::core::Rule::new(DISK_RANGE).message("size must be a quantity between 1Gi and 64Ti, such as 100Gi"),
        validation = kube::core::Rule::new(NO_SHRINK).message("size can grow but not shrink: a disk's data cannot be cut")
    )]
    #[schemars(extend("maxLength" = crate::QUANTITY_MAX_LENGTH))]
    pub size: Quantity,

    /// Storage class; the cluster's default when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub storage_class: Option<String>,
}

/// SSH access to a server.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SshAccess {
    /// Public keys in OpenSSH `authorized_keys` form, e.g. `ssh-ed25519 AAAA… jana@talsi`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        inner(
            length(min = 16, max = 16384),
            regex(
                pattern = r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]+={0,3}( [^\r\n]*)?$"
            )
        )
    )]
    pub authorized_keys: Vec<String>,
}

/// Extra cloud-init configuration.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CloudInit {
    /// Secret whose `userdata` key holds cloud-init user data. It is combined with the
    /// platform's own settings, which take precedence (password login stays disabled). Must be
    /// in the server's namespace.
    pub secret_ref: SecretReference,
}

/// Reference to a Secret. Tenants never read each other's Secrets: a namespace other than the
/// server's own is refused.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretReference {
    /// Name of the Secret.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,

    /// Namespace of the Secret; only the server's own namespace is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
}

/// How a server's ports are exposed.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Expose {
    /// `LoadBalancer` (default) gives the server an address outside the cluster; `ClusterIP`
    /// keeps it inside (reached from the declared sources through a VPN gateway that keeps their
    /// addresses).
    #[serde(default)]
    pub service_type: ServiceType,

    /// Ports to expose, at most 16, each port once per protocol.
    #[schemars(length(min = 1, max = 16))]
    pub ports: Vec<ExposedPort>,
}

/// Kind of Service that exposes a server.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServiceType {
    /// An address reachable from outside the cluster.
    #[default]
    LoadBalancer,
    /// An address inside the cluster only.
    ClusterIP,
}

/// One exposed port.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExposedPort {
    /// Port number on the server, e.g. `443`.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// `TCP` (default) or `UDP`.
    #[serde(default)]
    pub protocol: Protocol,

    /// Networks (CIDRs) that may connect, e.g. `10.20.0.0/16`; each must lie within the
    /// municipality's `allowedNetworkRanges`.
    #[schemars(
        length(min = 1, max = 32),
        inner(
            length(min = 3, max = 43),
            regex(pattern = r"^[0-9a-fA-F:.]+/[0-9]{1,3}$")
        )
    )]
    pub allowed_sources: Vec<String>,
}

/// Transport protocol of an exposed port.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// TCP.
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    /// UDP.
    #[serde(rename = "UDP")]
    Udp,
}

/// Scheduled snapshots of a server.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Backup {
    /// When to take a snapshot, in cron form (five fields, UTC), e.g. `0 2 * * *`, or one of
    /// `@hourly`, `@daily`, `@weekly`, `@monthly`.
    #[schemars(
        length(min = 6, max = 128),
        regex(pattern = r"^(@(hourly|daily|weekly|monthly)|\S+( \S+){4})$")
    )]
    pub schedule: String,

    /// How many successful snapshots to keep, 1–100; older ones are deleted.
    #[serde(default = "default_retention")]
    #[schemars(range(min = 1, max = 100))]
    pub retention: i32,

    /// What happens to the snapshots when the server is deleted: `Retain` (default) keeps
    /// them, `Delete` deletes them with the server.
    #[serde(default)]
    pub on_delete: SnapshotDeletion,
}

fn default_retention() -> i32 {
    7
}

/// What happens to a server's snapshots when the server is deleted.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SnapshotDeletion {
    /// Keep the snapshots.
    #[default]
    Retain,
    /// Delete them with the server.
    Delete,
}

/// A weekly window in which the operator may restart a server by itself.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceWindow {
    /// Days of the week, e.g. `[Sat, Sun]`; every day when omitted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 7))]
    pub days: Vec<Weekday>,

    /// Start time, `HH:MM` in UTC, e.g. `02:00`.
    #[schemars(regex(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    pub start: String,

    /// Length of the window in minutes, 30–720.
    #[schemars(range(min = 30, max = 720))]
    pub duration_minutes: i32,
}

/// A day of the week.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

/// Lifecycle phase of a virtual server.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Accepted; waiting for the image, quota or scheduling.
    Pending,
    /// Disks are being created from the image.
    Provisioning,
    /// The virtual machine is booting.
    Starting,
    /// The virtual machine runs.
    Running,
    /// The virtual machine is shutting down.
    Stopping,
    /// The virtual machine is stopped.
    Stopped,
    /// The server cannot run; see the `Degraded` condition.
    Failed,
}

/// Observed state of a virtual server.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VirtualServerStatus {
    /// Lifecycle phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// Primary IP address of the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,

    /// Every IP address the server reports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,

    /// Address of the Service for exposed ports (the load balancer's when there is one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_address: Option<String>,

    /// Node the server runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,

    /// Operating system as reported by the guest agent, when it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_os: Option<GuestOs>,

    /// When the newest successful snapshot was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_time: Option<Time>,

    /// The `spec.restart` value the operator last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_handled: Option<String>,

    /// The server's scheduled backups, newest first: what `spec.restore.backup` can name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backups: Vec<BackupStatus>,

    /// The latest restore through `spec.restore`: which backup, how far it got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreStatus>,

    /// Current state: `Ready`, `Progressing`, `Degraded` and `RestartRequired` (and
    /// `Restoring` once a restore was asked for), with reason and message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` of the spec that the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Operating system as reported by the guest agent.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GuestOs {
    /// Distribution or product name, e.g. `Debian GNU/Linux`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Version, e.g. `12 (bookworm)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Kernel release, e.g. `6.1.0-18-amd64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
}

/// One backup of a server, as listed in its status.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// Name of the VirtualMachineSnapshot, for `spec.restore.backup`.
    pub name: String,
    /// When it was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
    /// Whether it can be restored from.
    pub ready: bool,
}

/// The latest restore of a server.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatus {
    /// The backup restored.
    pub backup: String,
    /// The server the backup belongs to, when another one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_server: Option<String>,
    /// The `spec.restore.token` acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// How far it got.
    pub phase: RestorePhase,
    /// The KubeVirt VirtualMachineRestore doing the work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_machine_restore: Option<String>,
    /// When the restore began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When it ended, restored or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
}

/// How far a restore got.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestorePhase {
    /// The server is being stopped; nothing is restored yet.
    Stopping,
    /// KubeVirt restores the disks.
    Restoring,
    /// The disks hold the backup; the server runs again per its run strategy.
    Succeeded,
    /// KubeVirt could not restore; the server runs again per its run strategy.
    Failed,
}
