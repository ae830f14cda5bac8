//! The VirtualServer controller: reconciles each `VirtualServer` into its KubeVirt
//! VirtualMachine, cloud-init Secret, Service, NetworkPolicy and snapshots.
//!
//! The decisions come from the pure modules — [`admission`] (may the server run at all),
//! [`build`] (the objects), [`schedule`] (backups, maintenance windows) and [`status`] (phase,
//! conditions, restarts) — gathered by [`plan`], itself pure. The rest of this file reads what
//! they need from the API, carries the plan out and reports it (status, Events).
//!
//! One reconcile, read in four steps, one file each: [`observe`](self::observe) what the
//! decisions need, [`decide`](self::decide) (pure), [`carry_out`](self::carry_out) the plan and
//! [`cleanup`](self::cleanup) on deletion. This module holds what they share: the context, the
//! error type, the entry points and the finalizer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::events::{EventType, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use novads_crds::{
    Backup, Municipality, Phase, RestorePhase, RunStrategy, ServerImage, SnapshotDeletion,
    VirtualServer, VirtualServerStatus,
};
use serde_json::json;

use crate::kubevirt::{
    DataVolumeTemplateSpec, VirtualMachine, VirtualMachineInstance, VirtualMachineRestore,
    VirtualMachineSnapshot,
};
use crate::quantity::Amount;
use crate::reconcile::{self, EventRecorder, FIELD_MANAGER, FailureCounts, backoff};
use crate::virtual_server::admission::{self, AdmissionInput, Refusal};
use crate::virtual_server::build::{
    self, BACKUP_LABEL, BACKUP_SCHEDULED, BuildError, SERVER_LABEL, USER_DATA_KEY,
};
use crate::virtual_server::namespace_index::ServersByNamespace;
use crate::virtual_server::records::{
    NetworkPolicyRecord, Records, ServiceRecord, SnapshotRecord, VmRecord, VmiRecord,
};
use crate::virtual_server::restore::{
    self as restoring, ActiveRestore, RESTORE_RECHECK, RestoreInput, RestoreStep,
};
use crate::virtual_server::schedule::{self, BackupDecision};
use crate::virtual_server::status::{self, Observed, RestartDecision};

mod carry_out;
mod cleanup;
mod decide;
mod observe;
pub mod unchanged;

use carry_out::*;
use cleanup::*;
pub use decide::*;
pub use observe::*;

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
    #[error("the controller's caches stopped")]
    CachesGone,
    #[error(transparent)]
    Task(#[from] crate::watch::TaskFailed),
}

impl Error {
    /// Short label for metrics (bounded set).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(kube::Error::Api(status)) if status.code == 409 => "conflict",
            Self::Kube(_) => "api",
            Self::InvalidSpec(_) | Self::IncompleteObject(_) => "invalid_spec",
            Self::Request(_) | Self::CachesGone | Self::Task(_) => "internal",
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

/// The controller's caches: everything a converged reconcile reads, so that it makes no API
/// request at all (docs/operator.md, "Caches"). The runtime's watches fill them; a reconcile
/// reads them instead of asking the API server. Kubernetes objects in kube's reflector stores
/// for the servers and what they refer to, the controller's own records for the children.
#[derive(Clone)]
pub struct Caches {
    pub municipalities: Store<Municipality>,
    pub images: Store<ServerImage>,
    pub servers: Store<VirtualServer>,
    /// The names of the servers in each namespace, kept from the same events as `servers`.
    pub servers_by_namespace: ServersByNamespace,
    /// Every namespace, metadata only (its owner reference names the Municipality).
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    /// The children, each watched by the server label, as records of what a reconcile reads.
    pub vms: Records<VmRecord>,
    pub vmis: Records<VmiRecord>,
    /// The operator's scheduled snapshots only.
    pub snapshots: Records<SnapshotRecord>,
    pub services: Records<ServiceRecord>,
    pub network_policies: Records<NetworkPolicyRecord>,
}

impl Caches {
    /// Waits until every store has listed its kind once: a reconcile before that would take a
    /// Municipality or image not yet listed for a missing one and refuse the server, or a VM
    /// not yet listed for one to create.
    async fn ready(&self) -> Result<(), Error> {
        for ready in [
            self.municipalities.wait_until_ready().await,
            self.images.wait_until_ready().await,
            self.servers.wait_until_ready().await,
            self.namespaces.wait_until_ready().await,
        ] {
            ready.map_err(|_| Error::CachesGone)?;
        }
        for ready in [
            self.vms.wait_until_ready().await,
            self.vmis.wait_until_ready().await,
            self.snapshots.wait_until_ready().await,
            self.services.wait_until_ready().await,
            self.network_policies.wait_until_ready().await,
        ] {
            ready.map_err(|_| Error::CachesGone)?;
        }
        Ok(())
    }

    fn municipality(&self, name: &str) -> Option<Municipality> {
        self.municipalities
            .get(&ObjectRef::new(name))
            .map(|m| (*m).clone())
    }

    fn image(&self, name: &str) -> Option<ServerImage> {
        self.images.get(&ObjectRef::new(name)).map(|i| (*i).clone())
    }

    /// The namespace's servers. The store is the one the controller's trigger stream fills,
    /// so it holds every server whose event came before this reconcile's; admission counts
    /// older servers first, and a server created later is admitted in its own reconcile,
    /// counting this one.
    fn servers_in(&self, namespace: &str) -> Result<Vec<VirtualServer>, Error> {
        self.servers_by_namespace
            .servers_in(&self.servers, namespace)
            .ok_or(Error::CachesGone)
    }

    fn namespace(&self, name: &str) -> Option<Arc<PartialObjectMeta<Namespace>>> {
        self.namespaces.get(&ObjectRef::new(name))
    }

    /// The server's scheduled snapshots (see [`snapshot_selector`]), by name: a namespace
    /// holds the backups of a few servers only, so picking them out is cheap.
    fn snapshots_of(&self, ns: &str, server: &str) -> Vec<VirtualMachineSnapshot> {
        self.snapshots
            .filter(ns, |name, snapshot| snapshot.of_server(name, server))
    }
}

/// Shared by every reconcile of the controller.
pub struct Context {
    pub client: Client,
    pub recorder: EventRecorder,
    /// `Some(reason)` when KubeVirt's API is missing: servers are told so in their status
    /// instead of being built.
    kubevirt_unavailable: Option<String>,
    clock: Clock,
    /// Consecutive failures per server (`namespace/name`), for the error policy's back-off.
    failures: FailureCounts,
    restarts: Mutex<HashMap<String, RestartMemo>>,
    /// Per server, the uid of the VM this replica created: the cache may not show it yet, and
    /// the next reconcile must not announce it again.
    created: Mutex<HashMap<String, String>>,
    /// Read instead of the API when given (the runtime always gives them).
    caches: Option<Caches>,
}

impl Context {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self {
            recorder: EventRecorder::new(&client, &reporter),
            client,
            kubevirt_unavailable: None,
            clock: Arc::new(Timestamp::now),
            failures: FailureCounts::default(),
            restarts: Mutex::default(),
            created: Mutex::default(),
            caches: None,
        }
    }

    /// The same context reading Municipalities, ServerImages and servers from `caches`.
    #[must_use]
    pub fn with_caches(mut self, caches: Caches) -> Self {
        self.caches = Some(caches);
        self
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
        if let Ok(mut created) = self.created.lock() {
            created.remove(key);
        }
    }

    /// Records that the server's VM `uid` was created; whether it was not known yet (so the
    /// creation is worth an Event).
    fn note_created(&self, key: &str, uid: Option<&str>) -> bool {
        let (Some(uid), Ok(mut created)) = (uid, self.created.lock()) else {
            return true;
        };
        created.insert(key.to_string(), uid.to_string()).as_deref() != Some(uid)
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
        // The finalizer before any child exists; then on with the server as the patch left
        // it, in the same reconcile (the patch's own watch event finds the work done).
        match add_finalizer(&server, &ctx).await {
            Ok(server) => build_or_refuse(&server, &ctx).await,
            Err(error) => Err(error),
        }
    } else {
        build_or_refuse(&server, &ctx).await
    };
    if result.is_ok() {
        ctx.failures.record_success(&key(&server));
    }
    result
}

/// Reconciles a server that has the finalizer: builds it, or tells it that KubeVirt is missing.
async fn build_or_refuse(server: &VirtualServer, ctx: &Context) -> Result<Action, Error> {
    if let Some(reason) = ctx.kubevirt_unavailable() {
        let refusal = Refusal {
            reason: KUBEVIRT_UNAVAILABLE,
            message: format!("KubeVirt is not available: {reason}"),
        };
        refuse(server, ctx, &Observations::default(), &[refusal]).await?;
        Ok(Action::requeue(KUBEVIRT_RECHECK))
    } else {
        apply(server, ctx).await
    }
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

/// Adds the finalizer (see [`reconcile::patch_finalizers`]); returns the server as patched.
async fn add_finalizer(server: &VirtualServer, ctx: &Context) -> Result<VirtualServer, Error> {
    let mut finalizers = server.finalizers().to_vec();
    finalizers.push(FINALIZER.to_string());
    patch_finalizers(server, ctx, finalizers).await
}

async fn patch_finalizers(
    server: &VirtualServer,
    ctx: &Context,
    finalizers: Vec<String>,
) -> Result<VirtualServer, Error> {
    Ok(reconcile::patch_finalizers(&servers(ctx, &namespace(server)?), server, finalizers).await?)
}
