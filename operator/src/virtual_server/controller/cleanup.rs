//! Deleting: what the server made goes, then the finalizer.

use super::*;

/// Deletes what the server made, then releases the finalizer. Snapshots stay unless
/// `backup.onDelete` is `Delete`: a deleted server's backups are how it is restored.
pub(super) async fn cleanup(server: &VirtualServer, ctx: &Context) -> Result<Action, Error> {
    let ns = namespace(server)?;
    let name = server.name_any();
    // A restore still running is called off first, so KubeVirt does not go on restoring
    // into a VM that is being deleted (finished ones go with the server: it owns them).
    if let Some(restore) = server
        .status
        .as_ref()
        .and_then(|s| s.restore.as_ref())
        .filter(|r| matches!(r.phase, RestorePhase::Stopping | RestorePhase::Restoring))
        .and_then(|r| r.virtual_machine_restore.as_deref())
    {
        reconcile::delete_namespaced::<VirtualMachineRestore>(&ctx.client, &ns, restore).await?;
    }
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
