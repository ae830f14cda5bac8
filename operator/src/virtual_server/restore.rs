//! Restores from a backup, decided purely: from the request in `spec.restore`, the record in
//! `status.restore` and what KubeVirt shows, the one step a reconcile takes — refuse, stop
//! the server, create KubeVirt's VirtualMachineRestore, wait for it, or finish — and the
//! `Restoring` condition that tells the admin.
//!
//! A request is checked before anything is touched: an unknown backup, another server's
//! backup, a backup that is not ready or a restore already running is refused, and the server
//! goes on as it was.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use novads_crds::{Restore, RestorePhase, RestoreStatus, VirtualServer, VirtualServerStatus};

use super::admission::{self, Refusal};
use super::build;
use crate::kubevirt::{VirtualMachine, VirtualMachineRestore, VirtualMachineSnapshot};
use crate::reconcile::condition;

/// The condition type telling how a restore goes.
pub const RESTORING: &str = "Restoring";
/// How often a server under restore is looked at again: KubeVirt's restores are not watched.
pub const RESTORE_RECHECK: Duration = Duration::from_secs(10);

/// Reasons of the `Restoring` condition and of the restore Events.
pub mod reason {
    /// `spec.restore.backup` names no snapshot in the namespace.
    pub const BACKUP_NOT_FOUND: &str = "BackupNotFound";
    /// The snapshot is of another server than the request says, or another server's backup
    /// is asked for a server that already exists.
    pub const BACKUP_OF_ANOTHER_SERVER: &str = "BackupOfAnotherServer";
    /// The snapshot cannot be restored from (yet): not ready, failed or being deleted.
    pub const BACKUP_NOT_READY: &str = "BackupNotReady";
    /// Another VirtualMachineRestore is restoring the server's VM.
    pub const RESTORE_IN_PROGRESS: &str = "RestoreInProgress";
    /// The server is being stopped for the restore.
    pub const STOPPING: &str = "Stopping";
    /// KubeVirt restores the disks.
    pub const RESTORING: &str = "Restoring";
    /// The restore completed.
    pub const RESTORED: &str = "Restored";
    /// KubeVirt reported the restore failed, or its VirtualMachineRestore vanished.
    pub const RESTORE_FAILED: &str = "RestoreFailed";
}

/// The restore a reconcile works on.
#[derive(Clone, Debug, PartialEq)]
pub struct ActiveRestore {
    pub request: Restore,
    /// Name of its VirtualMachineRestore.
    pub name: String,
    /// KubeVirt was already asked to restore (recorded `Restoring`): it is seen through
    /// whatever `spec.restore` says now.
    pub started: bool,
}

/// The request a record was made for.
fn request_of(record: &RestoreStatus) -> Restore {
    Restore {
        backup: record.backup.clone(),
        from_server: record.from_server.clone(),
        token: record.token.clone(),
    }
}

fn is_for(record: &RestoreStatus, request: &Restore) -> bool {
    request_of(record) == *request
}

/// The restore to work on, if any: a started one until it ends, else a request in
/// `spec.restore` that has not ended yet. `None` in the steady state, so a converged server
/// reads nothing about restores.
pub fn active_restore(server: &VirtualServer) -> Option<ActiveRestore> {
    let name = server.metadata.name.as_deref()?;
    let record = server.status.as_ref().and_then(|s| s.restore.as_ref());
    if let Some(record) = record.filter(|r| r.phase == RestorePhase::Restoring) {
        let request = request_of(record);
        return Some(ActiveRestore {
            name: record
                .virtual_machine_restore
                .clone()
                .unwrap_or_else(|| build::restore_name(name, &request)),
            request,
            started: true,
        });
    }
    let request = server.spec.restore.as_ref()?;
    let ended = record.is_some_and(|r| {
        is_for(r, request) && matches!(r.phase, RestorePhase::Succeeded | RestorePhase::Failed)
    });
    (!ended).then(|| ActiveRestore {
        request: request.clone(),
        name: build::restore_name(name, request),
        started: false,
    })
}

/// What the restore step is decided from.
pub struct RestoreInput<'a> {
    pub server: &'a VirtualServer,
    pub active: &'a ActiveRestore,
    /// The snapshot `request.backup` names, if it exists.
    pub backup: Option<&'a VirtualMachineSnapshot>,
    /// The VirtualMachineRestore of this request, if it exists.
    pub ours: Option<&'a VirtualMachineRestore>,
    /// Every VirtualMachineRestore of the namespace.
    pub restores: &'a [VirtualMachineRestore],
    pub vm: Option<&'a VirtualMachine>,
    /// An instance of the VM exists (running, starting or stopping).
    pub instance: bool,
    pub now: Timestamp,
}

/// The one step of a restore a reconcile takes; each but `Refused` carries the record to
/// write into `status.restore`.
#[derive(Clone, Debug, PartialEq)]
pub enum RestoreStep {
    /// The request may not be carried out; nothing is touched.
    Refused(Refusal),
    /// Stop the server (its VM applied `Halted`) and wait until no instance is left.
    Stop(RestoreStatus),
    /// Ask KubeVirt to restore (the VM, if it exists, stays `Halted`).
    Create(RestoreStatus, Box<VirtualMachineRestore>),
    /// KubeVirt restores; the VM is left alone.
    Wait(RestoreStatus),
    /// Ended (`Err` with KubeVirt's reason when it failed); the server is started again per
    /// its run strategy.
    Finished(RestoreStatus, Result<(), String>),
}

impl RestoreStep {
    /// Whether the VM must be kept stopped and unchanged by anything else this reconcile
    /// (restarts, disk growth, new snapshots).
    pub fn holds_the_vm(&self) -> bool {
        matches!(self, Self::Stop(_) | Self::Create(..) | Self::Wait(_))
    }
}

/// Decides the step. Checks come before anything is touched, and a started restore is
/// followed to its end.
pub fn restore_step(input: &RestoreInput) -> RestoreStep {
    let active = input.active;
    let request = &active.request;
    let server_name = input.server.metadata.name.as_deref().unwrap_or_default();
    let namespace = input
        .server
        .metadata
        .namespace
        .as_deref()
        .unwrap_or_default();
    let previous = input
        .server
        .status
        .as_ref()
        .and_then(|s| s.restore.as_ref())
        .filter(|r| is_for(r, request));
    let record = |phase: RestorePhase| RestoreStatus {
        backup: request.backup.clone(),
        from_server: request.from_server.clone(),
        token: request.token.clone(),
        phase,
        virtual_machine_restore: Some(active.name.clone()),
        start_time: previous
            .and_then(|r| r.start_time.clone())
            .or(Some(Time(input.now))),
        completion_time: None,
    };
    let finished = |phase: RestorePhase, at: Option<Time>, outcome: Result<(), String>| {
        let mut record = record(phase);
        record.completion_time = at.or(Some(Time(input.now)));
        RestoreStep::Finished(record, outcome)
    };

    // KubeVirt's restore of this request exists: follow it.
    if let Some(ours) = input.ours {
        let status = ours.status.clone().unwrap_or_default();
        if status.complete == Some(true) {
            return finished(RestorePhase::Succeeded, status.restore_time, Ok(()));
        }
        if let Some(failure) = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Failure" && c.status == "True")
        {
            let why = failure
                .message
                .clone()
                .or_else(|| failure.reason.clone())
                .unwrap_or_else(|| "KubeVirt gives no reason".to_string());
            return finished(RestorePhase::Failed, None, Err(why));
        }
        return RestoreStep::Wait(record(RestorePhase::Restoring));
    }
    if active.started {
        return finished(
            RestorePhase::Failed,
            None,
            Err(format!(
                "VirtualMachineRestore {} was deleted before it completed",
                active.name
            )),
        );
    }

    // A request not yet started: check it before anything is touched.
    let refuse =
        |reason: &'static str, message: String| RestoreStep::Refused(Refusal { reason, message });
    let source = request.from_server.as_deref().unwrap_or(server_name);
    let backup_name = &request.backup;
    let Some(backup) = input.backup else {
        return refuse(
            reason::BACKUP_NOT_FOUND,
            format!(
                "spec.restore.backup: there is no backup {backup_name:?} in namespace \
                 {namespace}; status.backups of server {source} lists its backups"
            ),
        );
    };
    let of = &backup.spec.source;
    if of.kind != VirtualMachine::kind(&()) || of.name != source {
        return refuse(
            reason::BACKUP_OF_ANOTHER_SERVER,
            format!(
                "spec.restore.backup: backup {backup_name} is of {} {:?}, not of server \
                 {source}",
                of.kind, of.name
            ),
        );
    }
    if source != server_name && input.vm.is_some() {
        return refuse(
            reason::BACKUP_OF_ANOTHER_SERVER,
            format!(
                "spec.restore: backup {backup_name} is of server {source}; an existing \
                 server is only restored from its own backups. Create a new server with \
                 spec.restore.fromServer: {source} instead"
            ),
        );
    }
    let ready = backup.status.as_ref().and_then(|s| s.ready_to_use) == Some(true);
    if !ready || backup.metadata.deletion_timestamp.is_some() {
        return refuse(
            reason::BACKUP_NOT_READY,
            format!("spec.restore.backup: backup {backup_name} is not ready to restore from"),
        );
    }
    if let Some(other) = input.restores.iter().find(|r| {
        is_running_into(r, server_name) && r.metadata.name.as_deref() != Some(&active.name)
    }) {
        return refuse(
            reason::RESTORE_IN_PROGRESS,
            format!(
                "VirtualMachineRestore {} is already restoring server {server_name}; ask \
                 again when it has finished",
                other.metadata.name.as_deref().unwrap_or_default()
            ),
        );
    }

    // KubeVirt restores only a stopped VM.
    if let Some(vm) = input.vm {
        let halted = vm.spec.run_strategy.as_deref() == Some("Halted");
        if !halted || input.instance {
            return RestoreStep::Stop(record(RestorePhase::Stopping));
        }
    }
    match build::virtual_machine_restore(input.server, request) {
        Ok(restore) => RestoreStep::Create(record(RestorePhase::Restoring), Box::new(restore)),
        Err(error) => refuse(admission::reason::INVALID_SPEC, error.to_string()),
    }
}

/// Whether `restore` is restoring into VM `vm` and has not ended.
fn is_running_into(restore: &VirtualMachineRestore, vm: &str) -> bool {
    let status = restore.status.clone().unwrap_or_default();
    let failed = status
        .conditions
        .iter()
        .any(|c| c.type_ == "Failure" && c.status == "True");
    restore.spec.target.name == vm
        && restore.metadata.deletion_timestamp.is_none()
        && status.complete != Some(true)
        && !failed
}

/// Writes the step into the next status: the record (unchanged on a refusal: nothing was
/// touched) and the `Restoring` condition. Without a step the current ones stay as they are.
pub fn record_step(
    next: &mut VirtualServerStatus,
    previous: &VirtualServerStatus,
    server: &VirtualServer,
    step: &RestoreStep,
    now: Timestamp,
) {
    let (status, reason, message) = match step {
        RestoreStep::Refused(refusal) => ("False", refusal.reason, refusal.message.clone()),
        RestoreStep::Stop(record) => (
            "True",
            reason::STOPPING,
            format!("stopping the server to restore backup {}", record.backup),
        ),
        RestoreStep::Create(record, _) | RestoreStep::Wait(record) => {
            let mut message = format!(
                "KubeVirt restores backup {} (VirtualMachineRestore {})",
                record.backup,
                record
                    .virtual_machine_restore
                    .as_deref()
                    .unwrap_or_default()
            );
            if let Some(next) = server.spec.restore.as_ref().filter(|r| !is_for(record, r)) {
                message.push_str(&format!(
                    "; the restore of backup {} asked for since starts when it has ended",
                    next.backup
                ));
            }
            ("True", reason::RESTORING, message)
        }
        RestoreStep::Finished(record, Ok(())) => (
            "False",
            reason::RESTORED,
            format!(
                "restored backup {}; the server starts per its run strategy",
                record.backup
            ),
        ),
        RestoreStep::Finished(record, Err(why)) => (
            "False",
            reason::RESTORE_FAILED,
            format!(
                "restoring backup {} failed: {why}; the server starts per its run strategy",
                record.backup
            ),
        ),
    };
    match step {
        RestoreStep::Refused(_) => {}
        RestoreStep::Stop(record)
        | RestoreStep::Create(record, _)
        | RestoreStep::Wait(record)
        | RestoreStep::Finished(record, _) => next.restore = Some(record.clone()),
    }
    let made = condition(
        &previous.conditions,
        RESTORING,
        status,
        reason,
        message,
        server.metadata.generation,
        &Time(now),
    );
    next.conditions.retain(|c| c.type_ != RESTORING);
    next.conditions.push(made);
}

/// The Event worth telling about the `Restoring` condition, when it changed:
/// `(warning, reason, note)`.
pub fn restore_event(
    previous: &VirtualServerStatus,
    next: &VirtualServerStatus,
) -> Option<(bool, String, String)> {
    let find = |status: &VirtualServerStatus| -> Option<Condition> {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == RESTORING)
            .cloned()
    };
    let now = find(next)?;
    let before = find(previous);
    if before.is_some_and(|b| b.reason == now.reason && b.message == now.message) {
        return None;
    }
    let warning = !matches!(
        now.reason.as_str(),
        reason::STOPPING | reason::RESTORING | reason::RESTORED
    );
    Some((warning, now.reason, now.message))
}

#[cfg(test)]
mod tests;
