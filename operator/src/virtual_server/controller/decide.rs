//! Deciding, purely: the plan a reconcile carries out, from the observations alone.

use super::*;

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
    /// Whether to apply the VM: not while KubeVirt restores it, nor before a restore creates
    /// it.
    pub apply_vm: bool,
    /// The step of a restore in progress or asked for.
    pub restore: Option<RestoreStep>,
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
    let restore = seen.restore.active.as_ref().map(|active| {
        restoring::restore_step(&RestoreInput {
            server,
            active,
            backup: seen.restore.backup.as_ref(),
            ours: seen.restore.ours.as_ref(),
            restores: &seen.restore.restores,
            vm: seen.vm.as_ref(),
            instance: seen.vmi.is_some(),
            now,
        })
    });
    if let (Some(RestoreStep::Refused(refusal)), None) = (&restore, &seen.vm) {
        // A server to be made from a backup is never installed from the image instead.
        refusals.push(refusal.clone());
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
    let (cloud_init, mut vm, service, network_policy) =
        match build_objects(server, image, admitted, user_data) {
            Ok(built) => built,
            Err(error) => return Plan::Invalid(error),
        };
    if let Some(live) = &seen.vm {
        build::keep_restored_disks(&mut vm, live);
    }
    let holds_the_vm = restore.as_ref().is_some_and(RestoreStep::holds_the_vm);
    if holds_the_vm {
        vm.spec.run_strategy = Some(RunStrategy::Halted.kubevirt().to_string());
    }
    // While KubeVirt restores, the VM is its; a restore into a new server creates the VM.
    let apply_vm = match &restore {
        Some(RestoreStep::Wait(_)) => false,
        Some(RestoreStep::Create(..)) => seen.vm.is_some(),
        _ => true,
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
    let (restart, backup, grow) = if holds_the_vm {
        // A stopped VM under restore is neither restarted, grown nor snapshotted.
        wake = wake.min(later(now, RESTORE_RECHECK));
        (RestartDecision::None, None, Vec::new())
    } else {
        (restart, backup, disk_growth(seen.vm.as_ref(), &vm))
    };

    Plan::Apply(Box::new(Desired {
        grow,
        // The policy may be left over alone from a removal that failed halfway.
        unexpose: service.is_none() && (seen.service.is_some() || seen.network_policy.is_some()),
        cloud_init,
        vm,
        service,
        network_policy,
        restart_required,
        restart,
        backup,
        apply_vm,
        restore,
        wake,
    }))
}

type Objects = (
    Secret,
    VirtualMachine,
    Option<Service>,
    Option<NetworkPolicy>,
);

pub(super) fn build_objects(
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
pub(super) fn backups(
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
pub(super) fn later(now: Timestamp, duration: Duration) -> Timestamp {
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
