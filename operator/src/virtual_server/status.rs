//! The status of a `VirtualServer`, derived purely from what the controller observed — its
//! KubeVirt VirtualMachine and instance, snapshots and Service — and from admission's verdict;
//! plus the restart decisions that follow from comparing the running instance with the spec.
//! Every function is total: whatever an observed object holds, the answer is a status.

use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use novads_crds::{BackupStatus, GuestOs, Phase, RunStrategy, VirtualServer, VirtualServerStatus};

use super::admission::{Refusal, describe_refusals};
use super::restore::RESTORING;
use super::schedule::{self, SnapshotInfo};
use crate::kubevirt::{
    KubeVirtCondition, VirtualMachine, VirtualMachineInstance, VirtualMachineSnapshot,
};
use crate::quantity::Amount;
use crate::reconcile::condition;

/// Condition types of a VirtualServer.
pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
pub const RESTART_REQUIRED: &str = "RestartRequired";

/// What the controller observed of a server's objects.
pub struct Observed<'a> {
    pub vm: Option<&'a VirtualMachine>,
    pub vmi: Option<&'a VirtualMachineInstance>,
    /// The server's snapshots (any state).
    pub snapshots: &'a [VirtualMachineSnapshot],
    /// The Service of exposed ports, when there is one.
    pub service: Option<&'a Service>,
}

/// Longest text taken over from an observed object into the status (a guest reports its OS,
/// KubeVirt relays messages): the status stays small whatever a guest or a controller says.
const MAX_OBSERVED_TEXT: usize = 256;
/// Longest condition message derived from KubeVirt's messages.
const MAX_KUBEVIRT_MESSAGE: usize = 1024;
/// Most addresses listed in the status.
const MAX_ADDRESSES: usize = 16;

/// The phase and why, before it is turned into conditions.
struct Lifecycle {
    phase: Phase,
    /// CamelCase reason for the `Ready` condition when not ready (KubeVirt's printable status
    /// where there is one).
    reason: String,
    /// What is going on, for people.
    message: String,
    /// Something KubeVirt reports as failing, even if the phase is not `Failed`.
    trouble: Option<String>,
    /// The instance runs and reports ready.
    ready: bool,
}

/// Derives the phase from KubeVirt's objects:
///
/// | observed | phase |
/// | --- | --- |
/// | no VM, refused | `Pending` (`Degraded=True` with the refusal) |
/// | no VM, not refused | `Pending` (the VM is being created) |
/// | VM being deleted | `Stopping` |
/// | printableStatus `Provisioning`, `WaitingForVolumeBinding` | `Provisioning` |
/// | printableStatus `DataVolumeError` | `Provisioning`, `Degraded=True` (CDI retries imports) |
/// | printableStatus `Starting`; VMI `Pending`, `Scheduling`, `Scheduled` | `Starting` |
/// | printableStatus `Running`, `Migrating`; VMI `Running` | `Running` |
/// | printableStatus `Stopping`, `Terminating`; VMI being deleted | `Stopping` |
/// | printableStatus `Stopped`, `Halted`, `Paused`; VMI `Succeeded`; no VMI and not meant to run | `Stopped` |
/// | printableStatus `ErrorUnschedulable`, `ErrImagePull`, `ImagePullBackOff`, `ErrorPvcNotFound`, `ErrorDataVolumeNotFound`, `CrashLoopBackOff`, `Unknown`, any other `Err…`; VMI `Failed` | `Failed`, `Degraded=True` |
/// | any other printableStatus | from the VMI phase as above; without a VMI `Pending` |
///
/// `Paused` counts as stopped: the guest does not run, though KubeVirt keeps its memory.
fn lifecycle(server: &VirtualServer, observed: &Observed) -> Lifecycle {
    let vmi = observed.vmi;
    let Some(vm) = observed.vm else {
        return Lifecycle::new(
            Phase::Pending,
            "Creating",
            "the VirtualMachine is being created",
        );
    };
    if vm.metadata.deletion_timestamp.is_some() {
        return Lifecycle::new(
            Phase::Stopping,
            "Deleting",
            "the VirtualMachine is being deleted",
        );
    }
    let vm_status = vm.status.as_ref();
    let printable = vm_status
        .and_then(|s| s.printable_status.as_deref())
        .unwrap_or("")
        .trim();
    let kubevirt_says = || kubevirt_message(vm, vmi);
    match printable {
        "Provisioning" | "WaitingForVolumeBinding" => Lifecycle::new(
            Phase::Provisioning,
            printable,
            "the disks are being created from the image",
        ),
        "DataVolumeError" => {
            let detail = kubevirt_says().unwrap_or_else(|| "a disk reports an error".into());
            let mut lifecycle = Lifecycle::new(
                Phase::Provisioning,
                printable,
                "creating the disks runs into an error; CDI keeps retrying",
            );
            lifecycle.trouble = Some(format!("DataVolumeError: {detail}"));
            lifecycle
        }
        "Starting" => Lifecycle::new(Phase::Starting, printable, "the server is booting"),
        "Running" | "Migrating" => running(vm, vmi, printable),
        "Stopping" | "Terminating" => {
            Lifecycle::new(Phase::Stopping, printable, "the server is shutting down")
        }
        "Stopped" | "Halted" => stopped(server, printable),
        "Paused" => Lifecycle::new(
            Phase::Stopped,
            "Paused",
            "the server is paused; `virtctl unpause` resumes it",
        ),
        failure if is_failure(failure) => {
            let detail = kubevirt_says().unwrap_or_else(|| "KubeVirt gives no details".into());
            let mut lifecycle =
                Lifecycle::new(Phase::Failed, failure, format!("{failure}: {detail}"));
            lifecycle.trouble = Some(lifecycle.message.clone());
            lifecycle
        }
        _ => from_instance(server, vm, vmi),
    }
}

/// KubeVirt's printable statuses that mean the server cannot run as it is.
fn is_failure(printable: &str) -> bool {
    matches!(
        printable,
        "ErrorUnschedulable"
            | "ErrImagePull"
            | "ImagePullBackOff"
            | "ErrorPvcNotFound"
            | "ErrorDataVolumeNotFound"
            | "CrashLoopBackOff"
            | "Unknown"
    ) || printable.starts_with("Err")
}

/// The phase from the instance alone (KubeVirt gave no printable status we know).
fn from_instance(
    server: &VirtualServer,
    vm: &VirtualMachine,
    vmi: Option<&VirtualMachineInstance>,
) -> Lifecycle {
    let Some(vmi) = vmi else {
        return if meant_to_run(server) {
            Lifecycle::new(
                Phase::Pending,
                "Creating",
                "waiting for KubeVirt to start the server",
            )
        } else {
            stopped(server, "Stopped")
        };
    };
    if vmi.metadata.deletion_timestamp.is_some() {
        return Lifecycle::new(Phase::Stopping, "Stopping", "the server is shutting down");
    }
    match vmi.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Running") => running(vm, Some(vmi), "Running"),
        Some("Succeeded") => stopped(server, "Stopped"),
        Some("Failed") => {
            let detail =
                kubevirt_message(vm, Some(vmi)).unwrap_or_else(|| "the instance failed".into());
            let mut lifecycle = Lifecycle::new(
                Phase::Failed,
                "InstanceFailed",
                format!("InstanceFailed: {detail}"),
            );
            lifecycle.trouble = Some(lifecycle.message.clone());
            lifecycle
        }
        _ => Lifecycle::new(Phase::Starting, "Starting", "the server is booting"),
    }
}

fn running(
    vm: &VirtualMachine,
    vmi: Option<&VirtualMachineInstance>,
    printable: &str,
) -> Lifecycle {
    let vm_ready = vm.status.as_ref().and_then(|s| s.ready) == Some(true);
    let vmi_ready = vmi.is_some_and(|vmi| {
        vmi.status
            .as_ref()
            .is_some_and(|s| is_true(&s.conditions, "Ready"))
    });
    let mut lifecycle = if printable == "Migrating" {
        Lifecycle::new(
            Phase::Running,
            "Migrating",
            "the server runs and is moving to another node",
        )
    } else {
        Lifecycle::new(
            Phase::Running,
            "NotReady",
            "the server runs but does not report ready yet",
        )
    };
    lifecycle.ready = vm_ready || vmi_ready;
    lifecycle
}

fn stopped(server: &VirtualServer, printable: &str) -> Lifecycle {
    let message = match server.spec.run_strategy {
        RunStrategy::Halted => "the server is stopped (spec.runStrategy is Halted)",
        RunStrategy::Manual => "the server is stopped; set spec.runStrategy to Running to start it",
        RunStrategy::RerunOnFailure => {
            "the server stopped; it is started again only after a failure"
        }
        RunStrategy::Running => "the server is stopped; KubeVirt starts it again",
    };
    Lifecycle::new(Phase::Stopped, printable, message)
}

fn meant_to_run(server: &VirtualServer) -> bool {
    matches!(
        server.spec.run_strategy,
        RunStrategy::Running | RunStrategy::RerunOnFailure
    )
}

impl Lifecycle {
    fn new(phase: Phase, reason: &str, message: impl Into<String>) -> Self {
        Self {
            phase,
            reason: reason_text(reason),
            message: message.into(),
            trouble: None,
            ready: false,
        }
    }
}

/// A condition reason must be CamelCase letters (API conventions); KubeVirt's statuses are,
/// but a garbage one is replaced rather than copied into our status.
fn reason_text(reason: &str) -> String {
    let valid = !reason.is_empty()
        && reason.len() <= 64
        && reason.starts_with(|c: char| c.is_ascii_alphabetic())
        && reason.chars().all(|c| c.is_ascii_alphanumeric());
    if valid {
        reason.to_string()
    } else {
        "Unknown".to_string()
    }
}

fn is_true(conditions: &[KubeVirtCondition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// What KubeVirt says is wrong: a `Failure` condition, or a failing `Ready` /
/// `DataVolumesReady` condition of the VM or its instance, or the instance's reason.
fn kubevirt_message(vm: &VirtualMachine, vmi: Option<&VirtualMachineInstance>) -> Option<String> {
    let telling = |c: &&KubeVirtCondition| {
        (c.type_ == "Failure" && c.status == "True")
            || (matches!(c.type_.as_str(), "Ready" | "DataVolumesReady") && c.status == "False")
    };
    let message_of = |conditions: &[KubeVirtCondition]| {
        conditions
            .iter()
            .filter(telling)
            .find_map(|c| c.message.as_deref().filter(|m| !m.trim().is_empty()))
            .map(str::to_string)
    };
    let vm_conditions = vm
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let vmi_status = vmi.and_then(|vmi| vmi.status.as_ref());
    message_of(vm_conditions)
        .or_else(|| vmi_status.and_then(|s| message_of(&s.conditions)))
        .or_else(|| {
            vmi_status
                .and_then(|s| s.reason.clone())
                .filter(|r| !r.trim().is_empty())
        })
        .map(|message| bounded(message.trim(), MAX_KUBEVIRT_MESSAGE))
}

/// At most `max` bytes of `text`, cut on a character boundary.
fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut cut = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &text[..cut])
}

/// Whether the instance runs now. A terminating instance does not: restarting it again would
/// restart the fresh one.
pub fn vm_running(vmi: Option<&VirtualMachineInstance>) -> bool {
    vmi.is_some_and(|vmi| {
        vmi.metadata.deletion_timestamp.is_none()
            && vmi.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    })
}

/// Addresses of the instance: the first interface's `ipAddress` first (the primary), then
/// every other reported address once. Text that is no IP address is dropped (a `/prefix` is
/// taken off), and so are link-local IPv6 addresses, which nobody outside the node can use.
fn addresses(vmi: Option<&VirtualMachineInstance>) -> Vec<String> {
    let Some(status) = vmi.and_then(|vmi| vmi.status.as_ref()) else {
        return Vec::new();
    };
    let mut found: Vec<IpAddr> = Vec::new();
    let reported = status.interfaces.iter().flat_map(|interface| {
        interface
            .ip_address
            .iter()
            .chain(interface.ip_addresses.iter())
    });
    for text in reported {
        let text = text.trim();
        let address = text
            .parse::<IpAddr>()
            .ok()
            .or_else(|| text.parse::<IpNet>().ok().map(|net| net.addr()));
        let Some(address) = address else { continue };
        let link_local = matches!(address, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80);
        if !link_local && !found.contains(&address) {
            found.push(address);
        }
        if found.len() == MAX_ADDRESSES {
            break;
        }
    }
    found.iter().map(ToString::to_string).collect()
}

/// The primary address: the first interface's `ipAddress`, when it is one.
fn primary_address(vmi: Option<&VirtualMachineInstance>, addresses: &[String]) -> Option<String> {
    let first = vmi
        .and_then(|vmi| vmi.status.as_ref())
        .and_then(|s| s.interfaces.first())
        .and_then(|interface| interface.ip_address.as_deref())?;
    let first = first.trim();
    let address = first
        .parse::<IpAddr>()
        .ok()
        .or_else(|| first.parse::<IpNet>().ok().map(|net| net.addr()))?
        .to_string();
    addresses.contains(&address).then_some(address)
}

fn node(vmi: Option<&VirtualMachineInstance>) -> Option<String> {
    vmi.and_then(|vmi| vmi.status.as_ref())
        .and_then(|s| s.node_name.as_deref())
        .map(str::trim)
        .filter(|node| !node.is_empty())
        .map(|node| bounded(node, MAX_OBSERVED_TEXT))
}

fn guest_os(vmi: Option<&VirtualMachineInstance>) -> Option<GuestOs> {
    let info = vmi
        .and_then(|vmi| vmi.status.as_ref())
        .and_then(|s| s.guest_os_info.as_ref())?;
    let text = |value: &Option<String>| {
        value
            .as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(|v| bounded(v, MAX_OBSERVED_TEXT))
    };
    let os = GuestOs {
        name: text(&info.name).or_else(|| text(&info.pretty_name)),
        version: text(&info.version),
        kernel: text(&info.kernel_release),
    };
    (os != GuestOs::default()).then_some(os)
}

/// The load balancer's address (IP, else host name) or, without one, the cluster IP.
fn external_address(service: Option<&Service>) -> Option<String> {
    let service = service?;
    let non_empty = |value: Option<&String>| {
        value
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(|v| bounded(v, MAX_OBSERVED_TEXT))
    };
    let ingress = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .find_map(|ingress| {
            non_empty(ingress.ip.as_ref()).or_else(|| non_empty(ingress.hostname.as_ref()))
        });
    ingress.or_else(|| {
        non_empty(service.spec.as_ref().and_then(|s| s.cluster_ip.as_ref()))
            // A headless Service has no address of its own.
            .filter(|ip| ip != "None")
    })
}

/// What retention and backup scheduling need to know of each snapshot. The creation time is
/// the API server's `metadata.creationTimestamp` — the clock the server's own creation time
/// comes from — else KubeVirt's `status.creationTime`. A snapshot being deleted is neither
/// ready nor failed: it is on its way out and must not be counted or deleted again. A snapshot
/// without a name cannot be addressed and is left out.
pub fn snapshot_infos(snapshots: &[VirtualMachineSnapshot]) -> Vec<SnapshotInfo> {
    snapshots
        .iter()
        .filter_map(|snapshot| {
            let name = snapshot.metadata.name.clone().filter(|n| !n.is_empty())?;
            let status = snapshot.status.as_ref();
            let deleting = snapshot.metadata.deletion_timestamp.is_some();
            let created = snapshot
                .metadata
                .creation_timestamp
                .as_ref()
                .or_else(|| status.and_then(|s| s.creation_time.as_ref()))
                .map(|time| time.0);
            let failed = status
                .and_then(|s| s.phase.as_deref())
                .is_some_and(|phase| phase.eq_ignore_ascii_case("Failed"));
            let ready = status.and_then(|s| s.ready_to_use) == Some(true);
            Some(SnapshotInfo {
                name,
                created,
                ready: ready && !deleting,
                failed: failed && !deleting,
            })
        })
        .collect()
}

/// The server's backups for its status, newest first (at most [`MAX_BACKUPS`]): what an
/// admin chooses from for `spec.restore.backup`. A snapshot being deleted is left out.
pub fn backups(snapshots: &[VirtualMachineSnapshot]) -> Vec<BackupStatus> {
    let mut backups: Vec<BackupStatus> = snapshots
        .iter()
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .filter_map(|snapshot| {
            let status = snapshot.status.as_ref();
            Some(BackupStatus {
                name: snapshot.metadata.name.clone().filter(|n| !n.is_empty())?,
                time: status
                    .and_then(|s| s.creation_time.clone())
                    .or_else(|| snapshot.metadata.creation_timestamp.clone()),
                ready: status.and_then(|s| s.ready_to_use) == Some(true),
            })
        })
        .collect();
    backups.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| a.name.cmp(&b.name)));
    backups.truncate(MAX_BACKUPS);
    backups
}

/// Most backups listed in the status: retention keeps at most 100, plus those in progress.
pub const MAX_BACKUPS: usize = 128;

/// When the newest successful snapshot of *this* server was taken (`status.creationTime`,
/// else its creation): snapshots older than the server are an earlier server's of the same
/// name, kept by a `Retain` policy.
fn newest_backup(server: &VirtualServer, snapshots: &[VirtualMachineSnapshot]) -> Option<Time> {
    let server_created = server.metadata.creation_timestamp.as_ref().map(|t| t.0);
    snapshots
        .iter()
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .filter_map(|s| {
            let status = s.status.as_ref()?;
            if status.ready_to_use != Some(true) {
                return None;
            }
            let taken = status
                .creation_time
                .as_ref()
                .or(s.metadata.creation_timestamp.as_ref())?;
            Some(taken.0)
        })
        .filter(|taken| server_created.is_none_or(|created| *taken >= created))
        .max()
        .map(Time)
}

/// Why the running instance needs a restart to match the spec: its vCPUs (cores × sockets ×
/// threads) or guest memory differ from `spec.cpu` / `spec.memory`, compared as numbers
/// (`4096Mi` is `4Gi`). `None` when they match, when nothing runs, or when the instance does
/// not say (nothing to compare is no reason to restart).
pub fn restart_required(
    server: &VirtualServer,
    vmi: Option<&VirtualMachineInstance>,
) -> Option<String> {
    let vmi = vmi.filter(|vmi| vmi.metadata.deletion_timestamp.is_none())?;
    let domain = &vmi.spec.domain;
    let mut changes = Vec::new();
    if let Some(cpu) = &domain.cpu {
        let count = |value: Option<u32>| u64::from(value.unwrap_or(1).max(1));
        let running = count(cpu.cores)
            .saturating_mul(count(cpu.sockets))
            .saturating_mul(count(cpu.threads));
        let wanted = u64::try_from(server.spec.cpu).unwrap_or(0);
        if wanted > 0 && running != wanted {
            changes.push(format!("cpu {running} → {wanted}"));
        }
    }
    let running_memory = domain
        .memory
        .as_ref()
        .and_then(|m| m.guest.as_ref())
        .and_then(|q| Amount::parse(&q.0).ok());
    if let (Some(running), Ok(wanted)) = (running_memory, Amount::parse(&server.spec.memory.0))
        && running != wanted
    {
        changes.push(format!("memory {running} → {wanted}"));
    }
    if changes.is_empty() {
        return None;
    }
    Some(format!(
        "{} take effect at the next restart",
        changes.join(", ")
    ))
}

/// What to do about restarting the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestartDecision {
    /// Nothing.
    None,
    /// An admin asked for a restart with a new `spec.restart` value; record `token` in
    /// `status.restartHandled` once it is done.
    Requested { token: String },
    /// A CPU or memory change waits for a restart and the maintenance window is open.
    MaintenanceWindow,
}

/// Decides whether to restart the server now.
///
/// - A `spec.restart` value other than `status.restartHandled` asks for one restart — when the
///   server runs. When it does not run there is nothing to restart: the next start boots
///   afresh anyway, so the token is only marked handled ([`next_status`] does that), and no
///   restart is owed later.
/// - Otherwise a pending CPU/memory change (`restart_required`, see [`restart_required`]) is
///   applied by a restart while the maintenance window is open; without a window it waits for
///   an admin's `spec.restart`.
pub fn restart_decision<'s>(
    server: &VirtualServer,
    status: impl Into<Option<&'s VirtualServerStatus>>,
    restart_required: Option<&str>,
    vm_running: bool,
    now: Timestamp,
) -> RestartDecision {
    if !vm_running {
        return RestartDecision::None;
    }
    if let Some(token) = new_restart_token(server, status.into()) {
        return RestartDecision::Requested {
            token: token.to_string(),
        };
    }
    let window_open = server
        .spec
        .maintenance_window
        .as_ref()
        .is_some_and(|window| schedule::window_open(window, now));
    if restart_required.is_some() && window_open {
        return RestartDecision::MaintenanceWindow;
    }
    RestartDecision::None
}

/// `spec.restart` when it differs from what the status says was handled.
fn new_restart_token<'a>(
    server: &'a VirtualServer,
    status: Option<&VirtualServerStatus>,
) -> Option<&'a str> {
    let token = server.spec.restart.as_deref()?;
    let handled = status.and_then(|s| s.restart_handled.as_deref());
    (handled != Some(token)).then_some(token)
}

/// The status that describes what was observed. `refusals` is admission's verdict (empty when
/// admitted). Conditions keep their `lastTransitionTime` while their status does not change,
/// so an unchanged server yields an identical status and no write.
///
/// `restartHandled` is carried over from the current status, except that a new `spec.restart`
/// value is marked handled while nothing runs (see [`restart_decision`]); the controller sets
/// it when it carries out a requested restart.
pub fn next_status(
    server: &VirtualServer,
    observed: &Observed,
    refusals: &[Refusal],
    now: Timestamp,
) -> VirtualServerStatus {
    let previous = server.status.clone().unwrap_or_default();
    let generation = server.metadata.generation;
    let now = Time(now);
    let lifecycle = lifecycle(server, observed);
    let refused = refusals
        .first()
        .map(|first| (first.reason, describe_refusals(refusals)));
    let vmi = observed
        .vmi
        .filter(|vmi| vmi.metadata.deletion_timestamp.is_none());

    let (ready, ready_reason, ready_message) = match (&refused, observed.vm) {
        // Refused before anything was built: that is the whole story.
        (Some((reason, message)), None) => ("False", reason_text(reason), message.clone()),
        _ if lifecycle.ready => ("True", "Running".to_string(), running_message(vmi)),
        _ => ("False", lifecycle.reason.clone(), lifecycle.message.clone()),
    };
    let (progressing, progressing_reason, progressing_message) = match (&refused, lifecycle.phase) {
        (Some(_), _) => (
            "False",
            "Refused".to_string(),
            "the spec is refused; see the Degraded condition".to_string(),
        ),
        (None, Phase::Pending | Phase::Provisioning | Phase::Starting | Phase::Stopping) => {
            ("True", lifecycle.reason.clone(), lifecycle.message.clone())
        }
        (None, Phase::Running) if !lifecycle.ready => {
            ("True", lifecycle.reason.clone(), lifecycle.message.clone())
        }
        (None, _) => (
            "False",
            "Stable".to_string(),
            "nothing is changing".to_string(),
        ),
    };
    let (degraded, degraded_reason, degraded_message) = match (&refused, &lifecycle.trouble) {
        (Some((reason, message)), _) => ("True", reason_text(reason), message.clone()),
        (None, Some(trouble)) => ("True", lifecycle.reason.clone(), trouble.clone()),
        (None, None) => (
            "False",
            "AsExpected".to_string(),
            "nothing is failing".to_string(),
        ),
    };
    let restart = restart_required(server, vmi);
    let (restart_status, restart_reason, restart_message) = match &restart {
        Some(changes) => {
            let how = if server.spec.maintenance_window.is_some() {
                "the operator restarts the server in its next maintenance window, or set spec.restart to a new value to restart it now"
            } else {
                "set spec.restart to a new value to restart it"
            };
            ("True", "ResourcesChanged", format!("{changes}; {how}"))
        }
        None if vmi.is_some() => (
            "False",
            "UpToDate",
            "the running server matches the spec".to_string(),
        ),
        None => (
            "False",
            "NotRunning",
            "nothing runs; the next start uses the spec".to_string(),
        ),
    };

    let make = |type_: &str, status: &str, reason: &str, message: String| {
        condition(
            &previous.conditions,
            type_,
            status,
            reason,
            message,
            generation,
            &now,
        )
    };
    let addresses = addresses(vmi);
    let ip = primary_address(vmi, &addresses).or_else(|| addresses.first().cloned());
    let last_backup_time = match (
        previous.last_backup_time.clone(),
        newest_backup(server, observed.snapshots),
    ) {
        (Some(before), Some(seen)) => Some(before.max(seen)),
        (before, seen) => seen.or(before),
    };
    let restart_handled = match new_restart_token(server, Some(&previous)) {
        Some(token) if !vm_running(observed.vmi) => Some(token.to_string()),
        _ => previous.restart_handled.clone(),
    };
    let mut conditions = vec![
        make(READY, ready, &ready_reason, ready_message),
        make(
            PROGRESSING,
            progressing,
            &progressing_reason,
            progressing_message,
        ),
        make(DEGRADED, degraded, &degraded_reason, degraded_message),
        make(
            RESTART_REQUIRED,
            restart_status,
            restart_reason,
            restart_message,
        ),
    ];
    // The restore's condition and record change only with a restore step (see
    // `restore::record_step`); every other reconcile carries them over.
    conditions.extend(
        previous
            .conditions
            .iter()
            .filter(|c| c.type_ == RESTORING)
            .cloned(),
    );
    VirtualServerStatus {
        phase: Some(match (&refused, observed.vm) {
            (Some(_), None) => Phase::Pending,
            _ => lifecycle.phase,
        }),
        ip,
        addresses,
        external_address: external_address(observed.service),
        node: node(vmi),
        guest_os: guest_os(vmi),
        last_backup_time,
        restart_handled,
        backups: backups(observed.snapshots),
        restore: previous.restore,
        conditions,
        observed_generation: generation,
    }
}

fn running_message(vmi: Option<&VirtualMachineInstance>) -> String {
    match node(vmi) {
        Some(node) => format!("the server runs on node {node}"),
        None => "the server runs".to_string(),
    }
}

#[cfg(test)]
mod tests;
