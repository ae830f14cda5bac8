//! Scheduled VirtualMachineSnapshots of a server.

use super::*;

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
