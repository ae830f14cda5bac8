//! Carrying the plan out: applies, status, Events, disk growth, backups.

use super::*;

pub(super) async fn apply(server: &VirtualServer, ctx: &Context) -> Result<Action, Error> {
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
pub(super) async fn carry_out(
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
    let (vm, service) = apply_children(ctx, &ns, seen, &desired).await?;
    for growth in &desired.grow {
        grow_disk(server, ctx, &ns, growth).await;
    }
    if desired.unexpose {
        // The policy first, so that after a failure the Service still marks the work left.
        reconcile::delete_namespaced::<NetworkPolicy>(client, &ns, &network_policy_name(server))
            .await?;
        reconcile::delete_namespaced::<Service>(client, &ns, &service_name(server)).await?;
    }
    if let (None, Some(vm)) = (&seen.vm, &vm)
        && ctx.note_created(&key, vm.metadata.uid.as_deref())
    {
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
            restart_vm(ctx, &ns, &server.name_any()).await?;
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
            restart_vm(ctx, &ns, &server.name_any()).await?;
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

    // The status tells of the snapshot just taken and forgets the pruned ones at once, rather
    // than in one more status write when their watch events arrive.
    let mut snapshots = seen.snapshots.clone();
    if let Some(backup) = &desired.backup {
        let taken = take_backups(server, ctx, backup).await?;
        snapshots.retain(|s| !backup.prune.contains(&s.name_any()));
        if let Some(snapshot) = taken
            && !snapshots
                .iter()
                .any(|s| s.name_any() == snapshot.name_any())
        {
            snapshots.push(snapshot);
        }
    }
    if let Some(RestoreStep::Create(_, restore)) = &desired.restore {
        start_restore(ctx, &ns, restore).await?;
    }

    let current = server.status.clone().unwrap_or_default();
    let observed = Observed {
        vm: vm.as_ref(),
        vmi: seen.vmi.as_ref(),
        snapshots: &snapshots,
        service: service.as_ref(),
    };
    let mut next = status::next_status(server, &observed, &[], now);
    if let Some(token) = restarted_token.or_else(|| remembered(server, &memo)) {
        next.restart_handled = Some(token);
    }
    if let Some(step) = &desired.restore {
        restoring::record_step(&mut next, &current, server, step, now);
    }
    write_status(server, ctx, &next).await?;
    if let Some((warning, reason, note)) = restoring::restore_event(&current, &next) {
        let type_ = if warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        publish(ctx, server, type_, &reason, "Restore", note).await;
    }
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

/// Applies the cloud-init Secret, the VM, the Service and the NetworkPolicy; returns the VM
/// and the Service as the API server holds them. With the caches, each applied object carries
/// the digest of its body ([`unchanged`]) and an apply that would change nothing is skipped:
/// the cached object stands for the answer. The cloud-init Secret is not cached (Secrets are
/// never listed), so its body is in the VM's digest and it is applied whenever the VM is.
async fn apply_children(
    ctx: &Context,
    ns: &str,
    seen: &Observations,
    desired: &Desired,
) -> Result<(Option<VirtualMachine>, Option<Service>), Error> {
    let client = &ctx.client;
    let compare = ctx.caches.is_some();
    let vm = if desired.apply_vm {
        let wanted = if compare {
            unchanged::stamped(desired.vm.clone(), &[&desired.cloud_init])
        } else {
            desired.vm.clone()
        };
        if compare && unchanged::is_current(seen.vm.as_ref(), &wanted) {
            seen.vm.clone()
        } else {
            reconcile::apply_namespaced(client, ns, &desired.cloud_init).await?;
            Some(reconcile::apply_namespaced(client, ns, &wanted).await?)
        }
    } else {
        // KubeVirt restores the VM; the Secret it boots from is kept as specified.
        reconcile::apply_namespaced(client, ns, &desired.cloud_init).await?;
        seen.vm.clone()
    };
    let service = match &desired.service {
        Some(service) => {
            let wanted = stamp_if(compare, service.clone());
            if compare && unchanged::is_current(seen.service.as_ref(), &wanted) {
                seen.service.clone()
            } else {
                Some(reconcile::apply_namespaced(client, ns, &wanted).await?)
            }
        }
        None => None,
    };
    if let Some(policy) = &desired.network_policy {
        let wanted = stamp_if(compare, policy.clone());
        if !(compare && unchanged::is_current(seen.network_policy.as_ref(), &wanted)) {
            reconcile::apply_namespaced(client, ns, &wanted).await?;
        }
    }
    Ok((vm, service))
}

fn stamp_if<K: ResourceExt + serde::Serialize>(compare: bool, object: K) -> K {
    if compare {
        unchanged::stamped(object, &[])
    } else {
        object
    }
}

/// Asks for a larger claim. A storage class without expansion refuses; that is the platform's
/// choice, so it is told in an Event rather than retried.
pub(super) async fn grow_disk(
    server: &VirtualServer,
    ctx: &Context,
    ns: &str,
    growth: &DiskGrowth,
) {
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

/// Takes the due snapshot and prunes beyond retention; returns the snapshot taken (as the API
/// server answered), if one was.
pub(super) async fn take_backups(
    server: &VirtualServer,
    ctx: &Context,
    backup: &BackupPlan,
) -> Result<Option<VirtualMachineSnapshot>, Error> {
    let ns = namespace(server)?;
    let mut taken = None;
    if let Some(snapshot) = &backup.snapshot {
        let api = Api::<VirtualMachineSnapshot>::namespaced(ctx.client.clone(), &ns);
        match api.create(&PostParams::default(), snapshot).await {
            Ok(created) => {
                taken = Some(created);
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
    Ok(taken)
}

/// Asks KubeVirt to restore. Its name comes from the request, so an earlier reconcile that
/// created it and failed before recording it finds a 409 here and follows it from then on.
pub(super) async fn start_restore(
    ctx: &Context,
    ns: &str,
    restore: &VirtualMachineRestore,
) -> Result<(), Error> {
    let api = Api::<VirtualMachineRestore>::namespaced(ctx.client.clone(), ns);
    match api.create(&PostParams::default(), restore).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// The token this replica restarted for, while the cached status still lacks it (so that a
/// stale status is not written back over the newer one).
pub(super) fn remembered(server: &VirtualServer, memo: &RestartMemo) -> Option<String> {
    let token = memo.token.as_ref()?;
    (server.spec.restart.as_ref() == Some(token)).then(|| token.clone())
}

/// PUT on KubeVirt's `restart` subresource (what `virtctl restart` does). kube has no typed
/// call for an aggregated API's subresource, so the request is built by hand.
pub(super) async fn restart_vm(ctx: &Context, ns: &str, name: &str) -> Result<(), Error> {
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
pub(super) async fn refuse(
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

pub(super) fn already_reported(status: &VirtualServerStatus, message: &str) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == status::DEGRADED && c.status == "True" && c.message.contains(message))
}

/// Writes the status (see [`reconcile::apply_status`]) when it changed; an unchanged status
/// is not written, so status writes never retrigger the controller.
pub(super) async fn write_status(
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

pub(super) async fn publish(
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
pub(super) fn service_name(server: &VirtualServer) -> String {
    server.name_any()
}

pub(super) fn network_policy_name(server: &VirtualServer) -> String {
    build::network_policy_name(&server.name_any())
}

pub(super) fn cloud_init_secret_name(server: &VirtualServer) -> String {
    build::cloud_init_secret_name(&server.name_any())
}
