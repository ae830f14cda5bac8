//! The tenancy controller: reconciles each `Municipality` into its tenancy. Decisions are pure
//! functions ([`build`](super::build) for the objects, [`next_status`], [`status_changed`],
//! [`decide_cleanup`], [`backoff`]); the async functions only carry them out against the API.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{EventType, Reporter};
use kube::{Client, Resource, ResourceExt};
use novads_crds::{
    DeletionPolicy, Municipality, MunicipalityStatus, MunicipalityUsage, VirtualServer,
};

use super::build::{self, SpecProblem, Tenancy, TenancySettings};
use crate::reconcile::{self, EventRecorder, FailureCounts, backoff, condition};

/// Finalizer that keeps a Municipality until its tenancy is gone (or refuses, see
/// [`decide_cleanup`]).
pub const FINALIZER: &str = "novads.io/tenancy";
/// How often a healthy tenancy is re-applied even without a change (repairs drift that no
/// watch event reported).
pub const RESYNC: Duration = Duration::from_secs(30 * 60);
/// How often a blocked deletion is checked again.
pub const BLOCKED_RECHECK: Duration = Duration::from_secs(60);
/// How often a deleting namespace is checked again.
pub const DELETING_RECHECK: Duration = Duration::from_secs(10);

/// What a reconcile can fail with; each one ends in the error policy's back-off.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("the spec is invalid: {0}")]
    InvalidSpec(String),
    #[error(transparent)]
    Task(#[from] crate::watch::TaskFailed),
}

impl Error {
    /// Short label for metrics (bounded set).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(kube::Error::Api(status)) if status.code == 409 => "conflict",
            Self::Kube(_) => "api",
            Self::InvalidSpec(_) => "invalid_spec",
            Self::Task(_) => "internal",
        }
    }
}

/// Shared by every reconcile of the controller.
pub struct Context {
    pub client: Client,
    pub settings: TenancySettings,
    pub recorder: EventRecorder,
    /// Consecutive failures per Municipality, for the error policy's back-off.
    failures: FailureCounts,
}

impl Context {
    pub fn new(client: Client, settings: TenancySettings, reporter: Reporter) -> Self {
        Self {
            recorder: EventRecorder::new(&client, &reporter),
            client,
            settings,
            failures: FailureCounts::default(),
        }
    }
}

/// The controller's error policy: back off per object, never a hot loop.
pub fn error_policy(municipality: Arc<Municipality>, error: &Error, ctx: Arc<Context>) -> Action {
    let failures = ctx.failures.record_failure(&municipality.name_any());
    let delay = backoff(failures);
    tracing::warn!(municipality = %municipality.name_any(), %error, failures, ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Reconciles one Municipality: finalizer, tenancy, status, events.
pub async fn reconcile(
    municipality: Arc<Municipality>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let name = municipality.name_any();
    let result = if municipality.metadata.deletion_timestamp.is_some() {
        if has_finalizer(&municipality) {
            cleanup(&municipality, &ctx).await
        } else {
            Ok(Action::await_change())
        }
    } else if !has_finalizer(&municipality) {
        add_finalizer(&municipality, &ctx).await
    } else {
        apply(&municipality, &ctx).await
    };
    if result.is_ok() {
        ctx.failures.record_success(&name);
    }
    result
}

fn has_finalizer(municipality: &Municipality) -> bool {
    municipality.finalizers().iter().any(|f| f == FINALIZER)
}

fn municipalities(ctx: &Context) -> Api<Municipality> {
    Api::all(ctx.client.clone())
}

/// Adds the finalizer (see [`reconcile::patch_finalizers`]).
async fn add_finalizer(municipality: &Municipality, ctx: &Context) -> Result<Action, Error> {
    let mut finalizers = municipality.finalizers().to_vec();
    finalizers.push(FINALIZER.to_string());
    patch_finalizers(municipality, ctx, finalizers).await?;
    // The patch triggers a watch event, which reconciles again with the finalizer in place.
    Ok(Action::await_change())
}

async fn patch_finalizers(
    municipality: &Municipality,
    ctx: &Context,
    finalizers: Vec<String>,
) -> Result<(), Error> {
    reconcile::patch_finalizers(&municipalities(ctx), municipality, finalizers).await?;
    Ok(())
}

/// What a reconcile found, for the status and events.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Every child is applied.
    Ready { usage: Option<MunicipalityUsage> },
    /// The spec has problems CRD validation cannot catch.
    InvalidSpec {
        reason: &'static str,
        message: String,
    },
    /// An API request failed while applying.
    ApplyFailed { message: String },
    /// Deletion waits for virtual servers to be removed.
    DeletionBlocked { virtual_servers: usize },
    /// The namespace is being deleted.
    Deleting,
}

impl Outcome {
    /// `(Ready status, reason, message)` of the outcome.
    fn ready(&self, namespace: &str) -> (&'static str, &'static str, String) {
        match self {
            Self::Ready { .. } => (
                "True",
                "TenancyReady",
                format!("namespace {namespace} matches the spec"),
            ),
            Self::InvalidSpec { reason, message } => ("False", reason, message.clone()),
            Self::ApplyFailed { message } => ("False", "ApplyFailed", message.clone()),
            Self::DeletionBlocked { virtual_servers } => (
                "False",
                "DeletionBlocked",
                format!(
                    "{virtual_servers} virtual server(s) remain in {namespace}; delete them first, \
                     or set spec.deletionPolicy: Delete to delete them with the municipality"
                ),
            ),
            Self::Deleting => (
                "False",
                "Deleting",
                format!("namespace {namespace} is being deleted"),
            ),
        }
    }
}

/// The status a reconcile outcome leads to: the part the operator writes. `compliance` is
/// left out (always `None`): the security monitor writes it under its own field manager, and
/// the operator's status apply must neither overwrite it with a cached copy nor take it over.
pub fn next_status(
    municipality: &Municipality,
    outcome: &Outcome,
    now: &Time,
) -> MunicipalityStatus {
    let previous = municipality.status.clone().unwrap_or_default();
    let generation = municipality.metadata.generation;
    let namespace = municipality.namespace_name();
    let (ready, reason, message) = outcome.ready(&namespace);
    let (degraded, degraded_reason, degraded_message) = match outcome {
        Outcome::ApplyFailed { message } => ("True", "ApplyFailed", message.clone()),
        _ => ("False", "AsExpected", "nothing is failing".to_string()),
    };
    let usage = match outcome {
        Outcome::Ready { usage } => usage.clone(),
        _ => previous.usage.clone(),
    };
    MunicipalityStatus {
        namespace: Some(namespace),
        usage,
        compliance: None,
        conditions: vec![
            condition(
                &previous.conditions,
                "Ready",
                ready,
                reason,
                message,
                generation,
                now,
            ),
            condition(
                &previous.conditions,
                "Degraded",
                degraded,
                degraded_reason,
                degraded_message,
                generation,
                now,
            ),
        ],
        observed_generation: generation,
    }
}

fn is_ready(municipality: &Municipality) -> bool {
    municipality
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// Whether `next` differs from the operator's part of `current` (everything but the
/// monitor's `compliance`), i.e. whether the status must be written.
pub fn status_changed(current: Option<&MunicipalityStatus>, next: &MunicipalityStatus) -> bool {
    let Some(current) = current else {
        return true;
    };
    // Destructured, so that a field added to the status cannot be forgotten here.
    let MunicipalityStatus {
        namespace,
        usage,
        compliance: _,
        conditions,
        observed_generation,
    } = current;
    *namespace != next.namespace
        || *usage != next.usage
        || *conditions != next.conditions
        || *observed_generation != next.observed_generation
}

/// Writes the status an outcome leads to (see [`reconcile::apply_status`]), unless it is
/// unchanged: no write, no watch event.
async fn patch_status(
    municipality: &Municipality,
    ctx: &Context,
    outcome: &Outcome,
) -> Result<(), Error> {
    let status = next_status(municipality, outcome, &Time(Timestamp::now()));
    if !status_changed(municipality.status.as_ref(), &status) {
        return Ok(());
    }
    reconcile::apply_status(&municipalities(ctx), municipality, &status).await?;
    Ok(())
}

async fn publish(
    ctx: &Context,
    municipality: &Municipality,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let object = municipality.object_ref(&());
    reconcile::publish(&ctx.recorder, &object, type_, reason, action, note).await;
}

async fn apply(municipality: &Municipality, ctx: &Context) -> Result<Action, Error> {
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    let existing = namespaces.get_opt(&municipality.namespace_name()).await?;
    let plan = build::plan_tenancy(municipality, &ctx.settings).and_then(|tenancy| {
        match build::namespace_conflict(municipality, existing.as_ref()) {
            Some(conflict) => Err(vec![conflict]),
            None => Ok(tenancy),
        }
    });
    let tenancy = match plan {
        Ok(tenancy) => tenancy,
        Err(problems) => return refuse_spec(municipality, ctx, &problems).await,
    };
    match apply_tenancy(ctx, &tenancy).await {
        Ok(quota) => {
            let usage = usage_from_quota(&quota);
            let changed = municipality
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                != municipality.metadata.generation
                || !is_ready(municipality);
            patch_status(municipality, ctx, &Outcome::Ready { usage }).await?;
            if changed {
                let note = format!(
                    "Applied generation {} to namespace {}",
                    municipality.metadata.generation.unwrap_or_default(),
                    municipality.namespace_name()
                );
                publish(
                    ctx,
                    municipality,
                    EventType::Normal,
                    "TenancyApplied",
                    "Apply",
                    note,
                )
                .await;
            }
            Ok(Action::requeue(RESYNC))
        }
        Err(error) => {
            let message = error.to_string();
            let outcome = Outcome::ApplyFailed {
                message: message.clone(),
            };
            // Report the apply error, not a follow-up failure to write the status.
            if let Err(status_error) = patch_status(municipality, ctx, &outcome).await {
                tracing::warn!(%status_error, "cannot record ApplyFailed in status");
            }
            publish(
                ctx,
                municipality,
                EventType::Warning,
                "ApplyFailed",
                "Apply",
                message,
            )
            .await;
            Err(error)
        }
    }
}

async fn refuse_spec(
    municipality: &Municipality,
    ctx: &Context,
    problems: &[SpecProblem],
) -> Result<Action, Error> {
    let reason = problems.first().map_or("InvalidSpec", SpecProblem::reason);
    let message = build::describe_problems(problems);
    let outcome = Outcome::InvalidSpec {
        reason,
        message: message.clone(),
    };
    patch_status(municipality, ctx, &outcome).await?;
    publish(
        ctx,
        municipality,
        EventType::Warning,
        reason,
        "Validate",
        message.clone(),
    )
    .await;
    Err(Error::InvalidSpec(message))
}

/// Applies every child with server-side apply (force: the operator owns these fields) and
/// returns the ResourceQuota as the API server sees it (its status holds the usage).
async fn apply_tenancy(ctx: &Context, tenancy: &Tenancy) -> Result<ResourceQuota, Error> {
    let client = &ctx.client;
    let namespace = tenancy.namespace.name_any();
    reconcile::apply(client, &tenancy.namespace).await?;
    let quota = reconcile::apply_namespaced(client, &namespace, &tenancy.resource_quota).await?;
    reconcile::apply_namespaced(client, &namespace, &tenancy.limit_range).await?;
    for policy in &tenancy.network_policies {
        reconcile::apply_namespaced(client, &namespace, policy).await?;
    }
    for retired in build::RETIRED_NETWORK_POLICIES {
        reconcile::delete_namespaced::<NetworkPolicy>(client, &namespace, retired).await?;
    }
    for binding in &tenancy.role_bindings {
        reconcile::apply_namespaced(client, &namespace, binding).await?;
    }
    reconcile::apply(client, &tenancy.reader_role).await?;
    reconcile::apply(client, &tenancy.reader_binding).await?;
    Ok(quota)
}

/// Usage as the ResourceQuota counts it.
pub fn usage_from_quota(quota: &ResourceQuota) -> Option<MunicipalityUsage> {
    let used = quota.status.as_ref()?.used.as_ref()?;
    Some(MunicipalityUsage {
        virtual_servers: used
            .get("count/virtualmachines.kubevirt.io")
            .and_then(|q| q.0.parse().ok()),
        cpu: used.get("requests.cpu").cloned(),
        memory: used.get("requests.memory").cloned(),
        storage: used.get("requests.storage").cloned(),
    })
}

/// The next step of deleting a municipality.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CleanupStep {
    /// Virtual servers remain and the policy is `Retain`: keep everything.
    Blocked { virtual_servers: usize },
    /// Delete the namespace (and so every server, disk and child in it).
    DeleteNamespace,
    /// The namespace is terminating; wait for it.
    WaitForNamespace,
    /// Nothing of ours is left: release the finalizer.
    Release,
}

/// Decides the next cleanup step. `namespace` is `None` when the namespace is gone or is not
/// ours (a conflicting owner's namespace is never deleted).
pub fn decide_cleanup(
    policy: DeletionPolicy,
    namespace: Option<&Namespace>,
    virtual_servers: usize,
) -> CleanupStep {
    match namespace {
        None => CleanupStep::Release,
        Some(ns) if ns.metadata.deletion_timestamp.is_some() => CleanupStep::WaitForNamespace,
        Some(_) if virtual_servers > 0 && policy == DeletionPolicy::Retain => {
            CleanupStep::Blocked { virtual_servers }
        }
        Some(_) => CleanupStep::DeleteNamespace,
    }
}

async fn cleanup(municipality: &Municipality, ctx: &Context) -> Result<Action, Error> {
    let namespace_name = municipality.namespace_name();
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    let existing = namespaces
        .get_opt(&namespace_name)
        .await?
        .filter(|ns| build::namespace_conflict(municipality, Some(ns)).is_none());
    let virtual_servers = match &existing {
        Some(ns) if ns.metadata.deletion_timestamp.is_none() => {
            let servers: Api<VirtualServer> = Api::namespaced(ctx.client.clone(), &namespace_name);
            servers
                .list_metadata(&ListParams::default())
                .await?
                .items
                .len()
        }
        _ => 0,
    };
    match decide_cleanup(
        municipality.spec.deletion_policy,
        existing.as_ref(),
        virtual_servers,
    ) {
        CleanupStep::Blocked { virtual_servers } => {
            let outcome = Outcome::DeletionBlocked { virtual_servers };
            patch_status(municipality, ctx, &outcome).await?;
            let (_, reason, message) = outcome.ready(&namespace_name);
            publish(
                ctx,
                municipality,
                EventType::Warning,
                reason,
                "Delete",
                message,
            )
            .await;
            Ok(Action::requeue(BLOCKED_RECHECK))
        }
        CleanupStep::DeleteNamespace => {
            namespaces
                .delete(&namespace_name, &DeleteParams::background())
                .await?;
            patch_status(municipality, ctx, &Outcome::Deleting).await?;
            let note = format!(
                "Deleting namespace {namespace_name} ({virtual_servers} virtual server(s))"
            );
            publish(
                ctx,
                municipality,
                EventType::Normal,
                "Deleting",
                "Delete",
                note,
            )
            .await;
            Ok(Action::requeue(DELETING_RECHECK))
        }
        CleanupStep::WaitForNamespace => Ok(Action::requeue(DELETING_RECHECK)),
        CleanupStep::Release => {
            let finalizers = municipality
                .finalizers()
                .iter()
                .filter(|f| *f != FINALIZER)
                .cloned()
                .collect();
            patch_finalizers(municipality, ctx, finalizers).await?;
            Ok(Action::await_change())
        }
    }
}
