//! A KubeVirt VirtualMachineRestore of a server from one of its backups, and the disk names a
//! restored VirtualMachine keeps.

use novads_crds::Restore;

use super::*;
use crate::kubevirt::{VirtualMachineRestore, VirtualMachineRestoreSpec};

/// Name of the VirtualMachineRestore carrying out `request` for server `server_name`:
/// `<server>-restore-<16 hex digits>`, derived from the request alone, so that a reconcile
/// that dies between creating it and recording it finds it again instead of restoring twice.
pub fn restore_name(server_name: &str, request: &Restore) -> String {
    // FNV-1a (64 bit): a fixed, documented function, so the name stays the same across
    // operator versions (std's hasher makes no such promise).
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let parts = [
        request.backup.as_str(),
        request.from_server.as_deref().unwrap_or(""),
        request.token.as_deref().unwrap_or(""),
    ];
    for part in parts {
        // A separator that no part contains keeps ("a", "bc") apart from ("ab", "c").
        for byte in part.bytes().chain([0]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{server_name}-restore-{hash:016x}")
}

/// The VirtualMachineRestore of `request` into the server's VM (named like the server).
///
/// When the VM does not exist (a new server made from a backup), KubeVirt creates it from the
/// snapshot; `patches` then relabel it and its instances as this server's, so that the
/// Service and NetworkPolicy select it and its snapshots are found as this server's. Owned by
/// the server: it goes with the server and tells which server it restored.
pub fn virtual_machine_restore(
    server: &VirtualServer,
    request: &Restore,
) -> Result<VirtualMachineRestore, BuildError> {
    let name = server_name(server)?;
    let restore = restore_name(name, request);
    check_length("VirtualMachineRestore", &restore, DNS_SUBDOMAIN_MAX, "")?;
    // JSON Pointer escapes `/` in the label key as `~1` (RFC 6901).
    let key = SERVER_LABEL.replace('~', "~0").replace('/', "~1");
    let patches = ["/metadata/labels", "/spec/template/metadata/labels"]
        .iter()
        .map(|labels| {
            serde_json::json!({ "op": "add", "path": format!("{labels}/{key}"), "value": name })
                .to_string()
        })
        .collect();
    Ok(VirtualMachineRestore {
        metadata: child_meta(server, restore)?,
        spec: VirtualMachineRestoreSpec {
            target: TypedLocalObjectReference {
                api_group: Some(VirtualMachine::group(&()).to_string()),
                kind: VirtualMachine::kind(&()).to_string(),
                name: name.to_string(),
            },
            virtual_machine_snapshot_name: request.backup.clone(),
            patches,
        },
        status: None,
    })
}

/// Keeps the disks a restore gave the live VM. KubeVirt restores each disk into a new
/// DataVolume (`restore-<uid>-<volume>`) and points the VM's volume at it; the desired VM
/// names its disks `<server>-<disk>`, and applying that would point the volume back at the
/// old (deleted) DataVolume, which KubeVirt would then create afresh from the image or
/// blank — the restored data lost. So each volume that the live VM backs with another
/// DataVolume of its own templates keeps that DataVolume's name.
pub fn keep_restored_disks(desired: &mut VirtualMachine, live: &VirtualMachine) {
    let live_volumes = live.spec.volumes();
    let live_templates: BTreeSet<&str> = live
        .spec
        .data_volume_templates
        .iter()
        .filter_map(|t| t.metadata.name.as_deref())
        .collect();
    let Some(spec) = desired.spec.template.spec.as_mut() else {
        return;
    };
    for volume in &mut spec.volumes {
        let Some(source) = volume.data_volume.as_mut() else {
            continue;
        };
        let kept = live_volumes
            .iter()
            .filter(|v| v.name == volume.name)
            .find_map(|v| v.data_volume.as_ref())
            .map(|v| v.name.as_str())
            .filter(|live| *live != source.name && live_templates.contains(live));
        let Some(kept) = kept else {
            continue;
        };
        for template in &mut desired.spec.data_volume_templates {
            if template.metadata.name.as_deref() == Some(source.name.as_str()) {
                template.metadata.name = Some(kept.to_string());
            }
        }
        source.name = kept.to_string();
    }
}
