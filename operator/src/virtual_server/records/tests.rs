//! The children's records read back as the reconcile reads the watched objects: the same
//! status, the same "unchanged" verdicts, the same disk growth and restored disks.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::Resource;
use novads_crds::{ServerImage, VirtualServer};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::*;
use crate::kubevirt::{VirtualMachineInstance, VirtualMachineSnapshot};
use crate::virtual_server::build;
use crate::virtual_server::controller::{disk_growth, unchanged};
use crate::virtual_server::status::{self, Observed};

const NS: &str = "muni-talsi";

fn server() -> VirtualServer {
    from(json!({
        "apiVersion": "novads.io/v1alpha1", "kind": "VirtualServer",
        "metadata": { "name": "web", "namespace": NS, "uid": "uid-web", "generation": 3,
                      "creationTimestamp": "2025-01-01T00:00:00Z" },
        "spec": { "image": "debian-12", "cpu": 2, "memory": "4Gi",
                  "disks": { "systemSize": "40Gi", "data": [{ "name": "data0", "size": "50Gi" }] },
                  "expose": { "serviceType": "LoadBalancer", "ports": [{ "port": 443, "allowedSources": ["10.0.0.0/24"] }] },
                  "backup": { "schedule": "0 2 * * *", "retention": 7 } }
    }))
}

fn from<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("object")
}

/// `desired` as the API server holds it after the operator applied it, with `status`, as the
/// runtime's watch hands it to the cache (`record`).
fn live<K: Serialize + DeserializeOwned>(desired: &K, status: Value, record: fn(&mut K)) -> K {
    let mut live = serde_json::to_value(desired).expect("JSON");
    live["metadata"]["uid"] = json!("uid-child");
    live["metadata"]["resourceVersion"] = json!("4711");
    live["metadata"]["managedFields"] = json!([{
        "manager": crate::reconcile::FIELD_MANAGER, "operation": "Apply", "fieldsType": "FieldsV1",
        "fieldsV1": unchanged::applied_field_set(&serde_json::to_value(desired).expect("JSON"))
    }]);
    if !status.is_null() {
        live["status"] = status;
    }
    let mut live = from(live);
    record(&mut live);
    live
}

/// What the cache reads back of `object`.
fn read<R: Record>(object: &R::Object) -> R::Object {
    let meta = object.meta();
    let (namespace, name) = (meta.namespace.as_deref(), meta.name.as_deref());
    R::record(object)
        .expect("kept")
        .object(namespace.expect("namespace"), name.expect("name"))
}

fn instance(status: Value) -> VirtualMachineInstance {
    from(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": { "name": "web", "namespace": NS, "uid": "3f2c9a1e-7b4d-4e2a-9c1f-0a1b2c3d4e5f",
                      "labels": { build::SERVER_LABEL: "web", "kubevirt.io/nodeName": "node-a" },
                      "annotations": { "kubevirt.io/latest-observed-api-version": "v1" },
                      "ownerReferences": [{ "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": "web", "uid": "uid-vm" }] },
        "spec": { "domain": { "cpu": { "cores": 1, "sockets": 1, "threads": 1 }, "memory": { "guest": "4096Mi" },
                              "devices": { "disks": [{ "name": "system" }] } },
                  "volumes": [{ "name": "system", "dataVolume": { "name": "web-system" } }],
                  "networks": [{ "name": "default", "pod": {} }] },
        "status": status
    }))
}

#[test]
fn children_read_back_from_their_records_as_the_reconcile_reads_them() {
    let server = server();
    let image: ServerImage = from(json!({
        "apiVersion": "novads.io/v1alpha1", "kind": "ServerImage",
        "metadata": { "name": "debian-12" },
        "spec": { "source": { "dataSource": { "name": "debian-12", "namespace": "novads-images" } },
                  "osFamily": "Linux", "version": "12", "supportEnd": "2028-06-30",
                  "lastPatched": "2025-05-01", "minDiskSize": "20Gi", "approved": true }
    }));
    let size = Quantity("40Gi".into());
    let desired_vm = unchanged::stamped(
        build::virtual_machine(&server, &image, &size).expect("VM builds"),
        &[],
    );
    let desired_service = unchanged::stamped(
        build::service(&server).expect("builds").expect("exposed"),
        &[],
    );
    let desired_policy = unchanged::stamped(
        build::network_policy(&server)
            .expect("builds")
            .expect("exposed"),
        &[],
    );
    let vm_states = [
        json!({ "printableStatus": "Running", "ready": true, "created": true }),
        json!({ "printableStatus": "CrashLoopBackOff", "ready": false,
                "conditions": [{ "type": "Failure", "status": "True", "reason": "Crash",
                                 "message": "the guest crashed", "lastTransitionTime": "2025-06-01T00:00:00Z" }],
                "volumeSnapshotStatuses": [{ "name": "system", "enabled": true }] }),
        json!({ "printableStatus": "Stopped" }),
        Value::Null,
    ];
    let vmi_states = [
        json!({ "phase": "Running", "nodeName": "node-a", "reason": "",
                "interfaces": [{ "name": "default", "ipAddress": "10.244.1.17",
                                 "ipAddresses": ["10.244.1.17", "fd00::17", "fe80::1"], "mac": "02:00:00:00:00:01" }],
                "guestOSInfo": { "name": "Debian GNU/Linux", "version": "12", "kernelRelease": "6.1.0-21", "id": "debian" },
                "conditions": [{ "type": "Ready", "status": "True" },
                               { "type": "AgentConnected", "status": "True", "lastProbeTime": "2025-06-01T00:00:00Z" }] }),
        json!({ "phase": "Failed", "reason": "PodFailed",
                "conditions": [{ "type": "Ready", "status": "False", "message": "virt-launcher failed" }] }),
        json!({ "phase": "Scheduling" }),
        Value::Null,
    ];
    let service_states = [
        json!({ "loadBalancer": { "ingress": [{ "ip": "192.0.2.10" }] } }),
        json!({ "loadBalancer": {} }),
        Value::Null,
    ];
    let snapshots: Vec<VirtualMachineSnapshot> = (0..3)
        .map(|day| {
            let time = format!("2025-06-0{}T02:00:00Z", day + 1);
            from(json!({
                "apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot",
                "metadata": { "name": format!("web-2025060{}-0200", day + 1), "namespace": NS,
                              "creationTimestamp": time,
                              "labels": { build::SERVER_LABEL: "web", build::BACKUP_LABEL: build::BACKUP_SCHEDULED } },
                "spec": { "source": { "apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "web" } },
                "status": { "readyToUse": day != 1, "creationTime": time,
                            "phase": if day == 1 { "Failed" } else { "Succeeded" } }
            }))
        })
        .collect();
    let read_snapshots: Vec<VirtualMachineSnapshot> =
        snapshots.iter().map(read::<SnapshotRecord>).collect();
    let now = "2025-06-02T10:00:00Z".parse().expect("time");
    for (n, vm_state) in vm_states.into_iter().enumerate() {
        let mut full_vm = live(&desired_vm, vm_state, unchanged::record_live);
        let deleted = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now);
        if n == 2 {
            full_vm.metadata.deletion_timestamp = Some(deleted.clone());
        }
        let read_vm = read::<VmRecord>(&full_vm);
        assert_eq!(
            unchanged::is_current(Some(&read_vm), &desired_vm),
            unchanged::is_current(Some(&full_vm), &desired_vm)
        );
        assert!(unchanged::is_current(Some(&read_vm), &desired_vm));
        assert_eq!(read_vm.metadata.uid, full_vm.metadata.uid);
        assert_eq!(read_vm.spec.run_strategy, full_vm.spec.run_strategy);
        let mut grown = desired_vm.clone();
        for template in &mut grown.spec.data_volume_templates {
            if let Some(resources) = template
                .spec
                .storage
                .as_mut()
                .and_then(|s| s.resources.as_mut())
            {
                resources
                    .requests
                    .insert("storage".into(), Quantity("99Gi".into()));
            }
        }
        assert_eq!(
            disk_growth(Some(&read_vm), &grown),
            disk_growth(Some(&full_vm), &grown)
        );
        let (mut from_read, mut from_full) = (desired_vm.clone(), desired_vm.clone());
        build::keep_restored_disks(&mut from_read, &read_vm);
        build::keep_restored_disks(&mut from_full, &full_vm);
        assert_eq!(from_read, from_full);

        let vmi_state = vmi_states[n % vmi_states.len()].clone();
        let mut full_vmi = instance(vmi_state);
        if n == 1 {
            full_vmi.metadata.deletion_timestamp = Some(deleted);
        }
        let read_vmi = read::<VmiRecord>(&full_vmi);
        assert_eq!(read_vmi.metadata.uid, full_vmi.metadata.uid);
        assert_eq!(
            status::restart_required(&server, Some(&read_vmi)),
            status::restart_required(&server, Some(&full_vmi))
        );
        assert_eq!(
            status::restart_required(&server, Some(&read_vmi)).is_some(),
            n != 1
        );

        let full_service: Service = live(
            &desired_service,
            service_states[n % service_states.len()].clone(),
            unchanged::record_live,
        );
        let read_service = read::<ServiceRecord>(&full_service);
        assert!(unchanged::is_current(Some(&read_service), &desired_service));
        let full_policy: NetworkPolicy = live(&desired_policy, Value::Null, unchanged::record_live);
        let read_policy = read::<NetworkPolicyRecord>(&full_policy);
        assert!(unchanged::is_current(Some(&read_policy), &desired_policy));
        let mut other = desired_policy.clone();
        other.spec = None;
        assert!(!unchanged::is_current(Some(&read_policy), &other));

        let status_from = |vm, vmi, snapshots, service| {
            let observed = Observed {
                vm: Some(vm),
                vmi: Some(vmi),
                snapshots,
                service: Some(service),
            };
            status::next_status(&server, &observed, &[], now)
        };
        assert_eq!(
            status_from(&read_vm, &read_vmi, &read_snapshots, &read_service),
            status_from(&full_vm, &full_vmi, &snapshots, &full_service),
            "VM state {n}"
        );
    }
}

#[test]
fn volumes_outside_the_templates_read_back_too() {
    let vm: crate::kubevirt::VirtualMachine = from(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": { "name": "web", "namespace": NS, "uid": "uid-vm" },
        "spec": {
            "template": { "spec": { "domain": { "devices": {} }, "volumes": [
                { "name": "system", "dataVolume": { "name": "web-system" } },
                { "name": "data-data0", "dataVolume": { "name": "web-data0-restored" } },
                { "name": "data-data1", "dataVolume": { "name": "web-system" } },
                { "name": "cloudinit", "cloudInitNoCloud": { "secretRef": { "name": "web-cloud-init" } } }
            ] } },
            "dataVolumeTemplates": [
                { "metadata": { "name": "web-system" }, "spec": { "storage": { "resources": { "requests": { "storage": "40Gi" } } } } },
                { "metadata": { "name": "web-data0-restored" }, "spec": {} },
                { "metadata": { "name": "web-data1" }, "spec": { "storage": {} } }
            ]
        }
    }));
    let read = read::<VmRecord>(&vm);
    let volumes = |vm: &crate::kubevirt::VirtualMachine| {
        let mut volumes: Vec<(String, String)> = vm
            .spec
            .template
            .spec
            .iter()
            .flat_map(|spec| &spec.volumes)
            .filter_map(|v| Some((v.name.clone(), v.data_volume.as_ref()?.name.clone())))
            .collect();
        volumes.sort();
        volumes
    };
    assert_eq!(volumes(&read), volumes(&vm));
    let mut desired = vm.clone();
    if let Some(spec) = desired.spec.template.spec.as_mut() {
        for volume in &mut spec.volumes {
            if let Some(source) = volume.data_volume.as_mut() {
                source.name = format!("web-{}", volume.name);
            }
        }
    }
    let (mut from_read, mut from_full) = (desired.clone(), desired);
    build::keep_restored_disks(&mut from_read, &read);
    build::keep_restored_disks(&mut from_full, &vm);
    assert_eq!(from_read, from_full);
    assert_eq!(disk_growth(Some(&read), &vm), disk_growth(Some(&vm), &vm));
}
