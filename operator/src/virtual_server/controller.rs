//! The VirtualServer controller: reconciles each `VirtualServer` into its KubeVirt
//! VirtualMachine, cloud-init Secret, Service, NetworkPolicy and snapshots.
//!
//! The decisions come from the pure modules — [`admission`] (may the server run at all),
//! [`build`] (the objects), [`schedule`] (backups, maintenance windows) and [`status`] (phase,
//! conditions, restarts) — gathered by [`plan`], itself pure. The rest of this file reads what
//! they need from the API, carries the plan out and reports it (status, Events).
//!
//! Longer than 800 lines on purpose: it is one reconcile, read top-down in four sections —
//! observing, deciding (pure), carrying the plan out, deleting — and each section only makes
//! sense next to the others; the pure decisions themselves live in the modules above.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use novads_crds::{
    Backup, Municipality, Phase, ServerImage, SnapshotDeletion, VirtualServer, VirtualServerStatus,
};
use serde_json::json;

use crate::kubevirt::{
    DataVolumeTemplateSpec, VirtualMachine, VirtualMachineInstance, VirtualMachineSnapshot,
};
use crate::quantity::Amount;
use crate::reconcile::{self, FIELD_MANAGER, FailureCounts, backoff};
use crate::virtual_server::admission::{self, AdmissionInput, Refusal};
use crate::virtual_server::build::{
    self, BACKUP_LABEL, BACKUP_SCHEDULED, BuildError, SERVER_LABEL, USER_DATA_KEY,
};
use crate::virtual_server::schedule::{self, BackupDecision};
use crate::virtual_server::status::{self, Observed, RestartDecision};

/// Finalizer that keeps a VirtualServer until its VM and the rest of its objects are deleted
/// (and, with `backup.onDelete: Delete`, its snapshots).
pub const FINALIZER: &str = "novads.io/virtual-server";
/// How often a server is reconciled without any change (status refresh, drift repair).
pub const RESYNC: Duration = Duration::from_secs(10 * 60);
/// How often a refused server is checked again: the refusal may go away without any watched
/// object changing (a date passes, another server's quota share frees up).
pub const REFUSED_RECHECK: Duration = Duration::from_secs(3 * 60);
/// How often a server is looked at while KubeVirt is missing (the runtime restarts the
/// controller as soon as KubeVirt appears; this is the safety net).
pub const KUBEVIRT_RECHECK: Duration = Duration::from_secs(5 * 60);
/// Shortest requeue for a due time that already passed: soon, but never a hot loop.
pub const MIN_REQUEUE: Duration = Duration::from_secs(1);

/// The condition / event reason while KubeVirt's API is missing from the cluster.
pub const KUBEVIRT_UNAVAILABLE: &str = "KubeVirtUnavailable";
/// The reason of a `cloudInit.secretRef` whose Secret (or its `userdata` key) is missing.
pub const CLOUD_INIT_SECRET_MISSING: &str = "CloudInitSecretMissing";

/// What a reconcile can fail with; each one ends in the error policy's back-off.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("the spec is invalid: {0}")]
    InvalidSpec(String),
    #[error("cannot build the restart request: {0}")]
    Request(#[from] http::Error),
    #[error("the object lacks {0}")]
    IncompleteObject(&'static str),
}

impl Error {
    /// Short label for metrics (bounded set).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(kube::Error::Api(status)) if status.code == 409 => "conflict",
            Self::Kube(_) => "api",
            Self::InvalidSpec(_) | Self::IncompleteObject(_) => "invalid_spec",
            Self::Request(_) => "internal",
        }
    }
}

/// Where the controller gets the current time: the wall clock, or a fixed one in tests.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Restarts this replica carried out, per server: the status in the cache can lag behind the
/// restart that a watch event already reports, and must not make the controller restart twice.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct RestartMemo {
    /// The `spec.restart` token acted on.
    token: Option<String>,
    /// The instance that was restarted (a window restart is owed once per instance).
    instance: Option<String>,
}

/// Shared by every reconcile of the controller.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    /// `Some(reason)` when KubeVirt's API is missing: servers are told so in their status
    /// instead of being built.
    kubevirt_unavailable: Option<String>,
    clock: Clock,
    /// Consecutive failures per server (`namespace/name`), for the error policy's back-off.
    failures: FailureCounts,
    restarts: Mutex<HashMap<String, RestartMemo>>,
}

impl Context {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            kubevirt_unavailable: None,
            clock: Arc::new(Timestamp::now),
            failures: FailureCounts::default(),
            restarts: Mutex::default(),
        }
    }

    /// The same context reading time from `clock` (tests and benchmarks pin it).
    #[must_use]
    pub fn with_clock(mut self, clock: impl Fn() -> Timestamp + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The same context for a cluster without KubeVirt: servers get a status saying `reason`.
    #[must_use]
    pub fn with_kubevirt_unavailable(mut self, reason: impl Into<String>) -> Self {
        self.kubevirt_unavailable = Some(reason.into());
        self
    }

    /// Why KubeVirt cannot be used, when it cannot.
    pub fn kubevirt_unavailable(&self) -> Option<&str> {
        self.kubevirt_unavailable.as_deref()
    }

    fn now(&self) -> Timestamp {
        (self.clock)()
    }

    fn restart_memo(&self, key: &str) -> RestartMemo {
        self.restarts
            .lock()
            .ok()
            .and_then(|memos| memos.get(key).cloned())
            .unwrap_or_default()
    }

    fn remember_restart(&self, key: &str, memo: RestartMemo) {
        if let Ok(mut memos) = self.restarts.lock() {
            memos.insert(key.to_string(), memo);
        }
    }

    fn forget(&self, key: &str) {
        if let Ok(mut memos) = self.restarts.lock() {
            memos.remove(key);
        }
    }
}

fn key(server: &VirtualServer) -> String {
    format!(
        "{}/{}",
        server.namespace().unwrap_or_default(),
        server.name_any()
    )
}

/// The controller's error policy: back off per server (5 s doubling to 5 min), never a hot
/// loop.
pub fn error_policy(server: Arc<VirtualServer>, error: &Error, ctx: Arc<Context>) -> Action {
    let failures = ctx.failures.record_failure(&key(&server));
    let delay = backoff(failures);
    tracing::warn!(server = %key(&server), %error, failures, ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Reconciles one VirtualServer: finalizer, admission, children, restart, backups, status.
pub async fn reconcile(server: Arc<VirtualServer>, ctx: Arc<Context>) -> Result<Action, Error> {
    let result = if server.metadata.deletion_timestamp.is_some() {
        if has_finalizer(&server) {
            cleanup(&server, &ctx).await
        } else {
            Ok(Action::await_change())
        }
    } else if !has_finalizer(&server) {
        add_finalizer(&server, &ctx).await
    } else if let Some(reason) = ctx.kubevirt_unavailable() {
        let refusal = Refusal {
            reason: KUBEVIRT_UNAVAILABLE,
            message: format!("KubeVirt is not available: {reason}"),
        };
        refuse(&server, &ctx, &Observations::default(), &[refusal]).await?;
        Ok(Action::requeue(KUBEVIRT_RECHECK))
    } else {
        apply(&server, &ctx).await
    };
    if result.is_ok() {
        ctx.failures.record_success(&key(&server));
    }
    result
}

fn has_finalizer(server: &VirtualServer) -> bool {
    server.finalizers().iter().any(|f| f == FINALIZER)
}

fn namespace(server: &VirtualServer) -> Result<String, Error> {
    server
        .namespace()
        .ok_or(Error::IncompleteObject("metadata.namespace"))
}

fn servers(ctx: &Context, namespace: &str) -> Api<VirtualServer> {
    Api::namespaced(ctx.client.clone(), namespace)
}

/// Adds the finalizer (see [`reconcile::patch_finalizers`]).
async fn add_finalizer(server: &VirtualServer, ctx: &Context) -> Result<Action, Error> {
    let mut finalizers = server.finalizers().to_vec();
    finalizers.push(FINALIZER.to_string());
    patch_finalizers(server, ctx, finalizers).await?;
    // The patch triggers a watch event, which reconciles again with the finalizer in place.
    Ok(Action::await_change())
}

async fn patch_finalizers(
    server: &VirtualServer,
    ctx: &Context,
    finalizers: Vec<String>,
) -> Result<(), Error> {
    reconcile::patch_finalizers(&servers(ctx, &namespace(server)?), server, finalizers).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Observing
// ---------------------------------------------------------------------------------------------

/// Everything a reconcile reads before it decides.
#[derive(Clone, Debug, Default)]
pub struct Observations {
    /// The Municipality owning the server's namespace.
    pub municipality: Option<Municipality>,
    /// The ServerImage of `spec.image`.
    pub image: Option<ServerImage>,
    /// Every VirtualServer of the namespace (the server itself included).
    pub siblings: Vec<VirtualServer>,
    pub vm: Option<VirtualMachine>,
    pub vmi: Option<VirtualMachineInstance>,
    /// The operator's scheduled snapshots of the server, in any state.
    pub snapshots: Vec<VirtualMachineSnapshot>,
    /// The Service of exposed ports, when it exists.
    pub service: Option<Service>,
    /// The tenant's cloud-init user data.
    pub user_data: UserData,
}

/// The tenant's extra cloud-init user data (`spec.cloudInit.secretRef`).
#[derive(Clone, Debug, Default, PartialEq)]
pub enum UserData {
    /// None asked for (or asked for from another namespace, which admission refuses).
    #[default]
    None,
    /// Read from the tenant's Secret.
    Found(String),
    /// Asked for, but the Secret or its key is missing, or it is not text.
    Unusable(Refusal),
}

/// Reads what admission, the builders and the status need. Missing objects are `None`, not
/// errors: admission and the status say what is missing.
async fn observe(server: &VirtualServer, ctx: &Context) -> Result<Observations, Error> {
    let ns = namespace(server)?;
    let name = server.name_any();
    let municipality = find_municipality(ctx, &ns).await?;
    let image = Api::<ServerImage>::all(ctx.client.clone())
        .get_opt(&server.spec.image)
        .await?;
    // Listed, not taken from the cache: a sibling created a moment ago must count against
    // the quota too.
    let siblings = servers(ctx, &ns).list(&ListParams::default()).await?.items;
    let vm = Api::<VirtualMachine>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&name)
        .await?;
    // Without a VM there is neither an instance nor a snapshot of this server to read.
    let (vmi, snapshots) = if vm.is_some() {
        let vmi = Api::<VirtualMachineInstance>::namespaced(ctx.client.clone(), &ns)
            .get_opt(&name)
            .await?;
        (vmi, list_snapshots(ctx, &ns, &name).await?)
    } else {
        (None, Vec::new())
    };
    let service = Api::<Service>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&service_name(server))
        .await?;
    let user_data = tenant_user_data(server, ctx, &ns).await?;
    Ok(Observations {
        municipality,
        image,
        siblings,
        vm,
        vmi,
        snapshots,
        service,
        user_data,
    })
}

/// The Municipality that owns the server's namespace (the namespace's owner reference, as
/// the tenancy controller sets it), if it still exists with that uid.
async fn find_municipality(ctx: &Context, ns: &str) -> Result<Option<Municipality>, Error> {
    let Some(namespace) = Api::<Namespace>::all(ctx.client.clone())
        .get_opt(ns)
        .await?
    else {
        return Ok(None);
    };
    let api_version = Municipality::api_version(&());
    let kind = Municipality::kind(&());
    let Some(owner) = namespace
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.api_version == api_version && o.kind == kind)
    else {
        return Ok(None);
    };
    let municipality = Api::<Municipality>::all(ctx.client.clone())
        .get_opt(&owner.name)
        .await?;
    // A re-created Municipality of the same name does not own the old namespace.
    Ok(municipality.filter(|m| m.metadata.uid.as_deref() == Some(owner.uid.as_str())))
}

/// The label selector of a server's scheduled snapshots. Only the operator's own: a snapshot
/// an admin took by hand is never pruned nor deleted with the server.
pub fn snapshot_selector(server_name: &str) -> String {
    format!("{SERVER_LABEL}={server_name},{BACKUP_LABEL}={BACKUP_SCHEDULED}")
}

async fn list_snapshots(
    ctx: &Context,
    ns: &str,
    name: &str,
) -> Result<Vec<VirtualMachineSnapshot>, Error> {
    let params = ListParams::default().labels(&snapshot_selector(name));
    Ok(
        Api::<VirtualMachineSnapshot>::namespaced(ctx.client.clone(), ns)
            .list(&params)
            .await?
            .items,
    )
}

/// The tenant's extra cloud-init user data. A Secret in another namespace is never read:
/// tenants must not reach each other's Secrets through the operator (admission refuses such
/// a reference as `ForeignSecret`).
async fn tenant_user_data(
    server: &VirtualServer,
    ctx: &Context,
    ns: &str,
) -> Result<UserData, Error> {
    let Some(cloud_init) = &server.spec.cloud_init else {
        return Ok(UserData::None);
    };
    let reference = &cloud_init.secret_ref;
    if reference
        .namespace
        .as_deref()
        .is_some_and(|other| other != ns)
    {
        return Ok(UserData::None);
    }
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), ns)
        .get_opt(&reference.name)
        .await?;
    let user_data = secret
        .as_ref()
        .and_then(|s| s.data.as_ref())
        .and_then(|d| d.get(USER_DATA_KEY));
    Ok(match (user_data, &secret) {
        (Some(bytes), _) => match String::from_utf8(bytes.0.clone()) {
            Ok(text) => UserData::Found(text),
            // Mangling it into text would hand the guest something else than was written.
            Err(_) => UserData::Unusable(Refusal {
                reason: admission::reason::INVALID_SPEC,
                message: format!(
                    "spec.cloudInit.secretRef: the `{USER_DATA_KEY}` key of Secret {ns}/{} is \
                     not UTF-8 text (compressed user data is not supported)",
                    reference.name
                ),
            }),
        },
        (None, secret) => UserData::Unusable(Refusal {
            reason: CLOUD_INIT_SECRET_MISSING,
            message: match secret {
                None => format!(
                    "spec.cloudInit.secretRef: Secret {ns}/{} does not exist",
                    reference.name
                ),
                Some(_) => format!(
                    "spec.cloudInit.secretRef: Secret {ns}/{} has no `{USER_DATA_KEY}` key",
                    reference.name
                ),
            },
        }),
    })
}

// ---------------------------------------------------------------------------------------------
// Deciding (pure)
// ---------------------------------------------------------------------------------------------

/// What a reconcile does, decided from the observations alone.
#[derive(Clone, Debug)]
pub enum Plan {
    /// The server may not run as specified; nothing is applied and an existing VM is left
    /// exactly as it is. Its backups go on: a snapshot does not change the VM, and a refused
    /// change (say, more memory than the quota allows) must not cost the server its backups.
    Refused {
        refusals: Vec<Refusal>,
        backup: Option<Box<BackupPlan>>,
    },
    /// Admitted, but the builders cannot turn the spec into objects.
    Invalid(BuildError),
    /// Admitted and built.
    Apply(Box<Desired>),
}

/// The objects to apply and the actions to take for an admitted server. Everything is built
/// before anything is applied, so a build error never leaves half a server behind.
#[derive(Clone, Debug)]
pub struct Desired {
    pub cloud_init: Secret,
    pub vm: VirtualMachine,
    pub service: Option<Service>,
    pub network_policy: Option<NetworkPolicy>,
    /// `expose` was removed while its Service exists: delete the Service and NetworkPolicy.
    pub unexpose: bool,
    /// Disks whose spec size grew past the size they were created with.
    pub grow: Vec<DiskGrowth>,
    /// Why the running instance differs from the spec, if it does.
    pub restart_required: Option<String>,
    pub restart: RestartDecision,
    /// Backups, when the server has a schedule and a VM.
    pub backup: Option<BackupPlan>,
    /// When the server needs looking at again without any change: the next backup, the next
    /// maintenance window opening for a pending restart, or the resync.
    pub wake: Timestamp,
}

/// A disk to grow in place: its PersistentVolumeClaim (CDI names it after the DataVolume)
/// and the size it should now request.
#[derive(Clone, Debug, PartialEq)]
pub struct DiskGrowth {
    pub claim: String,
    pub size: Quantity,
}

/// The disks of the live VM whose desired size is larger than their template's. KubeVirt never
/// resizes a DataVolume created from a template, so a grown disk is expanded through its
/// claim; comparing templates (not claims) needs no extra read in the steady state.
pub fn disk_growth(live: Option<&VirtualMachine>, desired: &VirtualMachine) -> Vec<DiskGrowth> {
    fn size(template: &DataVolumeTemplateSpec) -> Option<&Quantity> {
        template
            .spec
            .storage
            .as_ref()?
            .resources
            .as_ref()?
            .requests
            .get("storage")
    }
    let Some(live) = live else {
        return Vec::new();
    };
    desired
        .spec
        .data_volume_templates
        .iter()
        .filter_map(|wanted| {
            let name = wanted.metadata.name.as_deref()?;
            let had = live
                .spec
                .data_volume_templates
                .iter()
                .find(|t| t.metadata.name.as_deref() == Some(name))
                .and_then(size)?;
            let want = size(wanted)?;
            let grows = match (Amount::parse(&want.0), Amount::parse(&had.0)) {
                (Ok(want), Ok(had)) => want > had,
                _ => false,
            };
            grows.then(|| DiskGrowth {
                claim: name.to_string(),
                size: want.clone(),
            })
        })
        .collect()
}

/// The backup work of a reconcile.
#[derive(Clone, Debug, PartialEq)]
pub struct BackupPlan {
    /// The snapshot to take now (a scheduled slot passed).
    pub snapshot: Option<VirtualMachineSnapshot>,
    /// Snapshots beyond retention, oldest first.
    pub prune: Vec<String>,
    /// When the next snapshot is due.
    pub next: Timestamp,
}

/// Decides a reconcile from what was observed: admission, then the objects, the restart,
/// and the backup. `restart_handled` is the `spec.restart` token last acted on (the status's,
/// or a newer one this replica remembers).
pub fn plan(
    server: &VirtualServer,
    seen: &Observations,
    restart_handled: Option<&str>,
    now: Timestamp,
) -> Plan {
    let admitted = admission::admit(&AdmissionInput {
        server,
        image: seen.image.as_ref(),
        municipality: seen.municipality.as_ref(),
        siblings: &seen.siblings,
        vm_exists: seen.vm.is_some(),
        today: now.to_zoned(TimeZone::UTC).date(),
    });
    let mut refusals = match &admitted {
        Ok(_) => Vec::new(),
        Err(refusals) => refusals.clone(),
    };
    let user_data = match &seen.user_data {
        UserData::None => None,
        UserData::Found(data) => Some(data.as_str()),
        UserData::Unusable(refusal) => {
            refusals.push(refusal.clone());
            None
        }
    };
    if admitted.is_ok() && seen.image.is_none() {
        // Admission does not look at the image of a server that already runs, but changing
        // its VirtualMachine needs the image's source; the running server is left alone.
        refusals.push(Refusal {
            reason: admission::reason::IMAGE_NOT_FOUND,
            message: format!(
                "ServerImage {:?} no longer exists: the running server is kept as it is, but \
                 changes wait until the image is restored",
                server.spec.image
            ),
        });
    }
    let backup = match (&server.spec.backup, &seen.vm) {
        // Only a VM that already exists has disks to snapshot.
        (Some(backup), Some(_)) => Some(backups(server, backup, &seen.snapshots, now)),
        _ => None,
    };
    let (Ok(admitted), Some(image), true) = (&admitted, &seen.image, refusals.is_empty()) else {
        // A snapshot that cannot be built waits for the spec to be fixed like everything else.
        let backup = backup.and_then(Result::ok).map(Box::new);
        return Plan::Refused { refusals, backup };
    };
    let (cloud_init, vm, service, network_policy) =
        match build_objects(server, image, admitted, user_data) {
            Ok(built) => built,
            Err(error) => return Plan::Invalid(error),
        };

    let mut wake = later(now, RESYNC);
    let restart_required = status::restart_required(server, seen.vmi.as_ref());
    let mut current = server.status.clone().unwrap_or_default();
    current.restart_handled = restart_handled.map(str::to_string);
    let restart = status::restart_decision(
        server,
        &current,
        restart_required.as_deref(),
        status::vm_running(seen.vmi.as_ref()),
        now,
    );
    if let (RestartDecision::None, Some(_), Some(window)) =
        (&restart, &restart_required, &server.spec.maintenance_window)
    {
        wake = wake.min(schedule::next_window_opening(window, now));
    }

    let backup = match backup.transpose() {
        Ok(backup) => backup,
        Err(error) => return Plan::Invalid(error),
    };
    if let Some(backup) = &backup {
        wake = wake.min(backup.next);
    }

    Plan::Apply(Box::new(Desired {
        grow: disk_growth(seen.vm.as_ref(), &vm),
        unexpose: service.is_none() && seen.service.is_some(),
        cloud_init,
        vm,
        service,
        network_policy,
        restart_required,
        restart,
        backup,
        wake,
    }))
}

type Objects = (
    Secret,
    VirtualMachine,
    Option<Service>,
    Option<NetworkPolicy>,
);

fn build_objects(
    server: &VirtualServer,
    image: &ServerImage,
    admitted: &admission::Admitted,
    user_data: Option<&str>,
) -> Result<Objects, BuildError> {
    Ok((
        build::cloud_init_secret(server, user_data)?,
        build::virtual_machine(server, image, &admitted.system_disk_size)?,
        build::service(server)?,
        build::network_policy(server)?,
    ))
}

/// The snapshot due now (if any), the snapshots to prune, and when the next one is due.
fn backups(
    server: &VirtualServer,
    backup: &Backup,
    snapshots: &[VirtualMachineSnapshot],
    now: Timestamp,
) -> Result<BackupPlan, BuildError> {
    // Admission refuses an unparsable schedule; until it is fixed, nothing is taken or pruned.
    let Ok(schedule) = schedule::parse_backup_schedule(&backup.schedule) else {
        return Ok(BackupPlan {
            snapshot: None,
            prune: Vec::new(),
            next: later(now, RESYNC),
        });
    };
    let infos = status::snapshot_infos(snapshots);
    let created = server
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(now, |t| t.0);
    let last = schedule::latest_snapshot_time(&infos);
    let (snapshot, next) = match schedule::next_backup(&schedule, last, created, now) {
        BackupDecision::Wait { until } => (None, until),
        BackupDecision::TakeNow { due } => {
            // With the slot taken, the next decision is to wait for the following one.
            let next = match schedule::next_backup(&schedule, Some(due), created, now) {
                BackupDecision::Wait { until } => until,
                BackupDecision::TakeNow { .. } => later(now, MIN_REQUEUE),
            };
            (Some(build::snapshot(server, due)?), next)
        }
    };
    let retention = usize::try_from(backup.retention).unwrap_or(1);
    Ok(BackupPlan {
        snapshot,
        prune: schedule::snapshots_to_prune(&infos, retention),
        next,
    })
}

/// `now + duration`, saturating.
fn later(now: Timestamp, duration: Duration) -> Timestamp {
    SignedDuration::try_from(duration)
        .ok()
        .and_then(|d| now.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

/// The requeue delay from `now` to `at`, at least [`MIN_REQUEUE`] and at most [`RESYNC`].
pub fn requeue_after(now: Timestamp, at: Timestamp) -> Duration {
    let delay = Duration::try_from(at.duration_since(now)).unwrap_or(MIN_REQUEUE);
    delay.clamp(MIN_REQUEUE, RESYNC)
}

/// The Event worth telling the admin about a phase change, if any: `(warning, reason, note)`.
pub fn phase_event(
    current: &VirtualServerStatus,
    next: &VirtualServerStatus,
) -> Option<(bool, &'static str, String)> {
    if current.phase == next.phase {
        return None;
    }
    match next.phase? {
        Phase::Running => Some((
            false,
            "Running",
            match &next.node {
                Some(node) => format!("The server runs on node {node}"),
                None => "The server runs".to_string(),
            },
        )),
        Phase::Stopped => Some((false, "Stopped", "The server stopped".to_string())),
        Phase::Failed => Some((
            true,
            "Failed",
            next.conditions
                .iter()
                .find(|c| c.type_ == status::DEGRADED && c.status == "True")
                .map_or_else(|| "The server failed".to_string(), |c| c.message.clone()),
        )),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Carrying the plan out
// ---------------------------------------------------------------------------------------------

async fn apply(server: &VirtualServer, ctx: &Context) -> Result<Action, Error> {
    let now = ctx.now();
    let key = key(server);
    let seen = observe(server, ctx).await?;
    let memo = ctx.restart_memo(&key);
    let status_token = server
        .status
        .as_ref()
        .and_then(|s| s.restart_handled.as_deref());
    // The token this replica acted on counts while the cached status has not caught up.
    let handled = match (&memo.token, &server.spec.restart) {
        (Some(token), Some(wanted)) if token == wanted => Some(token.as_str()),
        _ => status_token,
    };
    match plan(server, &seen, handled, now) {
        Plan::Refused { refusals, backup } => {
            refuse(server, ctx, &seen, &refusals).await?;
            let mut wake = later(now, REFUSED_RECHECK);
            if let Some(backup) = backup {
                take_backups(server, ctx, &backup).await?;
                wake = wake.min(backup.next);
            }
            Ok(Action::requeue(requeue_after(now, wake)))
        }
        Plan::Invalid(error) => {
            let message = error.to_string();
            let refusal = Refusal {
                reason: admission::reason::INVALID_SPEC,
                message: message.clone(),
            };
            refuse(server, ctx, &seen, &[refusal]).await?;
            // An error, so the back-off spaces the retries; the refusal's Event is published
            // only once (see `refuse`).
            Err(Error::InvalidSpec(message))
        }
        Plan::Apply(desired) => match carry_out(server, ctx, &seen, *desired, memo, now).await {
            Ok(action) => Ok(action),
            Err(error) => {
                publish(
                    ctx,
                    server,
                    EventType::Warning,
                    "ApplyFailed",
                    "Apply",
                    error.to_string(),
                )
                .await;
                Err(error)
            }
        },
    }
}

/// Applies the children, restarts, takes and prunes backups, writes the status.
async fn carry_out(
    server: &VirtualServer,
    ctx: &Context,
    seen: &Observations,
    desired: Desired,
    memo: RestartMemo,
    now: Timestamp,
) -> Result<Action, Error> {
    let ns = namespace(server)?;
    let key = key(server);
    let client = &ctx.client;
    reconcile::apply_namespaced(client, &ns, &desired.cloud_init).await?;
    let vm = reconcile::apply_namespaced(client, &ns, &desired.vm).await?;
    for growth in &desired.grow {
        grow_disk(server, ctx, &ns, growth).await;
    }
    let service = match &desired.service {
        Some(service) => Some(reconcile::apply_namespaced(client, &ns, service).await?),
        None => None,
    };
    if let Some(policy) = &desired.network_policy {
        reconcile::apply_namespaced(client, &ns, policy).await?;
    }
    if desired.unexpose {
        // The policy first, so that after a failure the Service still marks the work left.
        reconcile::delete_namespaced::<NetworkPolicy>(
            &ctx.client,
            &ns,
            &network_policy_name(server),
        )
        .await?;
        reconcile::delete_namespaced::<Service>(&ctx.client, &ns, &service_name(server)).await?;
    }
    if seen.vm.is_none() {
        let note = format!(
            "Created VirtualMachine {} from ServerImage {}",
            vm.name_any(),
            server.spec.image
        );
        publish(ctx, server, EventType::Normal, "Created", "Create", note).await;
    }

    // A window restart is owed once per instance; the cache may not show the restart yet.
    let instance = seen.vmi.as_ref().and_then(|vmi| vmi.metadata.uid.clone());
    let restart = match desired.restart {
        RestartDecision::MaintenanceWindow if instance.is_some() && memo.instance == instance => {
            RestartDecision::None
        }
        other => other,
    };
    let mut restarted_token = None;
    match &restart {
        RestartDecision::None => {}
        RestartDecision::Requested { token } => {
            restart_vm(ctx, &ns, &vm.name_any()).await?;
            ctx.remember_restart(
                &key,
                RestartMemo {
                    token: Some(token.clone()),
                    instance: instance.clone(),
                },
            );
            let note = format!("Restarted as requested (spec.restart {token:?})");
            publish(ctx, server, EventType::Normal, "Restarted", "Restart", note).await;
            restarted_token = Some(token.clone());
        }
        RestartDecision::MaintenanceWindow => {
            restart_vm(ctx, &ns, &vm.name_any()).await?;
            ctx.remember_restart(
                &key,
                RestartMemo {
                    token: memo.token.clone(),
                    instance: instance.clone(),
                },
            );
            let note = format!(
                "Restarted in the maintenance window: {}",
                desired
                    .restart_required
                    .as_deref()
                    .unwrap_or("pending changes take effect")
            );
            publish(ctx, server, EventType::Normal, "Restarted", "Restart", note).await;
        }
    }

    if let Some(backup) = &desired.backup {
        take_backups(server, ctx, backup).await?;
    }

    let current = server.status.clone().unwrap_or_default();
    let observed = Observed {
        vm: Some(&vm),
        vmi: seen.vmi.as_ref(),
        snapshots: &seen.snapshots,
        service: service.as_ref(),
    };
    let mut next = status::next_status(server, &observed, &[], now);
    if let Some(token) = restarted_token.or_else(|| remembered(server, &memo)) {
        next.restart_handled = Some(token);
    }
    write_status(server, ctx, &next).await?;
    if let Some((warning, reason, note)) = phase_event(&current, &next) {
        let type_ = if warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        publish(ctx, server, type_, reason, "Observe", note).await;
    }
    Ok(Action::requeue(requeue_after(now, desired.wake)))
}

/// Asks for a larger claim. A storage class without expansion refuses; that is the platform's
/// choice, so it is told in an Event rather than retried.
async fn grow_disk(server: &VirtualServer, ctx: &Context, ns: &str, growth: &DiskGrowth) {
    let patch = json!({ "spec": { "resources": { "requests": { "storage": growth.size } } } });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    };
    let result = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), ns)
        .patch(&growth.claim, &params, &Patch::Merge(&patch))
        .await;
    let (type_, reason, note) = match result {
        Ok(_) => (
            EventType::Normal,
            "DiskGrown",
            format!("Expanding disk {} to {}", growth.claim, growth.size.0),
        ),
        Err(error) => (
            EventType::Warning,
            "DiskNotGrown",
            format!(
                "Cannot expand disk {} to {}: {error} (the storage class may not allow \
                 expansion)",
                growth.claim, growth.size.0
            ),
        ),
    };
    publish(ctx, server, type_, reason, "Resize", note).await;
}

/// Takes the due snapshot and prunes beyond retention.
async fn take_backups(
    server: &VirtualServer,
    ctx: &Context,
    backup: &BackupPlan,
) -> Result<(), Error> {
    let ns = namespace(server)?;
    if let Some(snapshot) = &backup.snapshot {
        let api = Api::<VirtualMachineSnapshot>::namespaced(ctx.client.clone(), &ns);
        match api.create(&PostParams::default(), snapshot).await {
            Ok(_) => {
                let note = format!("Taking snapshot {}", snapshot.name_any());
                publish(
                    ctx,
                    server,
                    EventType::Normal,
                    "BackupStarted",
                    "Backup",
                    note,
                )
                .await;
            }
            // The name comes from the slot, so an earlier reconcile already took this one.
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => return Err(error.into()),
        }
    }
    for name in &backup.prune {
        reconcile::delete_namespaced::<VirtualMachineSnapshot>(&ctx.client, &ns, name).await?;
    }
    if !backup.prune.is_empty() {
        let note = format!(
            "Deleted snapshot(s) beyond the retention of {}: {}",
            server.spec.backup.as_ref().map_or(0, |b| b.retention),
            backup.prune.join(", ")
        );
        publish(
            ctx,
            server,
            EventType::Normal,
            "BackupPruned",
            "Backup",
            note,
        )
        .await;
    }
    Ok(())
}

/// The token this replica restarted for, while the cached status still lacks it (so that a
/// stale status is not written back over the newer one).
fn remembered(server: &VirtualServer, memo: &RestartMemo) -> Option<String> {
    let token = memo.token.as_ref()?;
    (server.spec.restart.as_ref() == Some(token)).then(|| token.clone())
}

/// PUT on KubeVirt's `restart` subresource (what `virtctl restart` does). kube has no typed
/// call for an aggregated API's subresource, so the request is built by hand.
async fn restart_vm(ctx: &Context, ns: &str, name: &str) -> Result<(), Error> {
    let uri =
        format!("/apis/subresources.kubevirt.io/v1/namespaces/{ns}/virtualmachines/{name}/restart");
    let request = http::Request::put(uri)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(b"{}".to_vec())?;
    ctx.client.request_text(request).await?;
    Ok(())
}

/// Writes the status (and publishes one Warning per new refusal) for a server that may not
/// run as specified. An existing VM is not touched.
async fn refuse(
    server: &VirtualServer,
    ctx: &Context,
    seen: &Observations,
    refusals: &[Refusal],
) -> Result<(), Error> {
    let now = ctx.now();
    let current = server.status.clone().unwrap_or_default();
    let observed = Observed {
        vm: seen.vm.as_ref(),
        vmi: seen.vmi.as_ref(),
        snapshots: &seen.snapshots,
        service: seen.service.as_ref(),
    };
    let next = status::next_status(server, &observed, refusals, now);
    write_status(server, ctx, &next).await?;
    // One Event per refusal the status did not report yet, so that a requeue every few
    // minutes does not repeat the same warning.
    for refusal in refusals
        .iter()
        .filter(|r| !already_reported(&current, &r.message))
    {
        publish(
            ctx,
            server,
            EventType::Warning,
            refusal.reason,
            "Admit",
            refusal.message.clone(),
        )
        .await;
    }
    Ok(())
}

fn already_reported(status: &VirtualServerStatus, message: &str) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == status::DEGRADED && c.status == "True" && c.message.contains(message))
}

/// Writes the status (see [`reconcile::apply_status`]) when it changed; an unchanged status
/// is not written, so status writes never retrigger the controller.
async fn write_status(
    server: &VirtualServer,
    ctx: &Context,
    next: &VirtualServerStatus,
) -> Result<(), Error> {
    if server.status.as_ref() == Some(next) {
        return Ok(());
    }
    reconcile::apply_status(&servers(ctx, &namespace(server)?), server, next).await?;
    Ok(())
}

async fn publish(
    ctx: &Context,
    server: &VirtualServer,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let object = server.object_ref(&());
    reconcile::publish(&ctx.recorder, &object, type_, reason, action, note).await;
}

/// The Service of an exposed server is named like the server (see [`build::service`]).
fn service_name(server: &VirtualServer) -> String {
    server.name_any()
}

fn network_policy_name(server: &VirtualServer) -> String {
    build::network_policy_name(&server.name_any())
}

fn cloud_init_secret_name(server: &VirtualServer) -> String {
    build::cloud_init_secret_name(&server.name_any())
}

// ---------------------------------------------------------------------------------------------
// Deleting
// ---------------------------------------------------------------------------------------------

/// Deletes what the server made, then releases the finalizer. Snapshots stay unless
/// `backup.onDelete` is `Delete`: a deleted server's backups are how it is restored.
async fn cleanup(server: &VirtualServer, ctx: &Context) -> Result<Action, Error> {
    let ns = namespace(server)?;
    let name = server.name_any();
    // The VM takes its DataVolumes with it (they are owned by the VM). Without KubeVirt the
    // delete answers 404, which counts as gone.
    reconcile::delete_namespaced::<VirtualMachine>(&ctx.client, &ns, &name).await?;
    reconcile::delete_namespaced::<Service>(&ctx.client, &ns, &service_name(server)).await?;
    reconcile::delete_namespaced::<NetworkPolicy>(&ctx.client, &ns, &network_policy_name(server))
        .await?;
    reconcile::delete_namespaced::<Secret>(&ctx.client, &ns, &cloud_init_secret_name(server))
        .await?;
    let delete_snapshots = server
        .spec
        .backup
        .as_ref()
        .is_some_and(|b| b.on_delete == SnapshotDeletion::Delete);
    if delete_snapshots {
        let snapshots = match list_snapshots(ctx, &ns, &name).await {
            Ok(snapshots) => snapshots,
            // Without KubeVirt's snapshot API there are no snapshots to delete.
            Err(Error::Kube(kube::Error::Api(status))) if status.code == 404 => Vec::new(),
            Err(error) => return Err(error),
        };
        for snapshot in &snapshots {
            reconcile::delete_namespaced::<VirtualMachineSnapshot>(
                &ctx.client,
                &ns,
                &snapshot.name_any(),
            )
            .await?;
        }
        if !snapshots.is_empty() {
            let note = format!("Deleted {} snapshot(s) with the server", snapshots.len());
            publish(
                ctx,
                server,
                EventType::Normal,
                "BackupsDeleted",
                "Delete",
                note,
            )
            .await;
        }
    }
    let finalizers = server
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    patch_finalizers(server, ctx, finalizers).await?;
    ctx.forget(&key(server));
    Ok(Action::await_change())
}
