use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use novads_crds::MaintenanceWindow;
use serde_json::{Value, json};

use super::*;
use crate::virtual_server::admission::reason;

fn at(text: &str) -> Timestamp {
    text.parse().expect("test timestamp")
}

fn now() -> Timestamp {
    at("2025-03-10T12:00:00Z")
}

fn server(spec: Value) -> VirtualServer {
    let mut full = json!({"image": "debian-12", "cpu": 2, "memory": "4Gi"});
    if let (Value::Object(full), Value::Object(spec)) = (&mut full, spec) {
        full.extend(spec);
    }
    serde_json::from_value(json!({
        "apiVersion": "novads.io/v1alpha1",
        "kind": "VirtualServer",
        "metadata": {
            "name": "web",
            "namespace": "muni-talsi",
            "generation": 3,
            "creationTimestamp": "2025-03-01T09:00:00Z",
        },
        "spec": full,
    }))
    .expect("test server")
}

fn vm(status: Value) -> VirtualMachine {
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": "web", "namespace": "muni-talsi"},
        "spec": {"template": {"spec": {"domain": {"devices": {}}}}},
        "status": status,
    }))
    .expect("test VM")
}

fn printable(status: &str) -> VirtualMachine {
    vm(json!({ "printableStatus": status }))
}

/// A VMI with 2 cores of 4Gi, in `phase`, plus `status` fields.
fn vmi_with(domain: Value, status: Value) -> VirtualMachineInstance {
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": "web", "namespace": "muni-talsi"},
        "spec": {"domain": domain},
        "status": status,
    }))
    .expect("test VMI")
}

fn vmi(status: Value) -> VirtualMachineInstance {
    vmi_with(
        json!({"cpu": {"cores": 2, "sockets": 1, "threads": 1}, "memory": {"guest": "4Gi"}, "devices": {}}),
        status,
    )
}

fn running_vmi() -> VirtualMachineInstance {
    vmi(json!({
        "phase": "Running",
        "nodeName": "node-2",
        "conditions": [{"type": "Ready", "status": "True"}],
        "interfaces": [
            {"name": "default", "ipAddress": "10.244.1.17", "ipAddresses": ["10.244.1.17", "fd10:244::17", "fe80::1"]},
            {"name": "second", "ipAddress": "10.0.5.4/24"},
        ],
        "guestOSInfo": {"name": "Debian GNU/Linux", "version": "12 (bookworm)", "kernelRelease": "6.1.0-18-amd64", "id": "debian"},
    }))
}

fn snapshot(name: &str, created: &str, status: Value) -> VirtualMachineSnapshot {
    serde_json::from_value(json!({
        "apiVersion": "snapshot.kubevirt.io/v1beta1",
        "kind": "VirtualMachineSnapshot",
        "metadata": {"name": name, "namespace": "muni-talsi", "creationTimestamp": created},
        "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "web"}},
        "status": status,
    }))
    .expect("test snapshot")
}

fn service(value: Value) -> Service {
    let mut full = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}});
    if let (Value::Object(full), Value::Object(value)) = (&mut full, value) {
        full.extend(value);
    }
    serde_json::from_value(full).expect("test service")
}

fn observe<'a>(
    vm: Option<&'a VirtualMachine>,
    vmi: Option<&'a VirtualMachineInstance>,
) -> Observed<'a> {
    Observed {
        vm,
        vmi,
        snapshots: &[],
        service: None,
    }
}

fn find<'a>(status: &'a VirtualServerStatus, type_: &str) -> &'a Condition {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status:#?}"))
}

/// `(status, reason)` of a condition.
fn state(status: &VirtualServerStatus, type_: &str) -> (String, String) {
    let condition = find(status, type_);
    (condition.status.clone(), condition.reason.clone())
}

fn pair(status: &str, reason: &str) -> (String, String) {
    (status.to_string(), reason.to_string())
}

fn refusal(reason: &'static str, message: &str) -> Refusal {
    Refusal {
        reason,
        message: message.to_string(),
    }
}

#[test]
fn maps_kubevirts_printable_status_to_a_phase() {
    let server = server(json!({}));
    let table = [
        ("Provisioning", Phase::Provisioning),
        ("WaitingForVolumeBinding", Phase::Provisioning),
        ("DataVolumeError", Phase::Provisioning),
        ("Starting", Phase::Starting),
        ("Running", Phase::Running),
        ("Migrating", Phase::Running),
        ("Stopping", Phase::Stopping),
        ("Terminating", Phase::Stopping),
        ("Stopped", Phase::Stopped),
        ("Halted", Phase::Stopped),
        ("Paused", Phase::Stopped),
        ("ErrorUnschedulable", Phase::Failed),
        ("ErrImagePull", Phase::Failed),
        ("ImagePullBackOff", Phase::Failed),
        ("ErrorPvcNotFound", Phase::Failed),
        ("ErrorDataVolumeNotFound", Phase::Failed),
        ("CrashLoopBackOff", Phase::Failed),
        ("Unknown", Phase::Failed),
        ("ErrSomethingNew", Phase::Failed),
    ];
    for (printable_status, phase) in table {
        let vm = printable(printable_status);
        let status = next_status(&server, &observe(Some(&vm), None), &[], now());
        assert_eq!(status.phase, Some(phase), "{printable_status}");
    }
}

#[test]
fn without_a_printable_status_the_instance_decides() {
    let server = server(json!({}));
    let vm = vm(json!({}));
    let table = [
        ("Pending", Phase::Starting),
        ("Scheduling", Phase::Starting),
        ("Scheduled", Phase::Starting),
        ("Running", Phase::Running),
        ("Succeeded", Phase::Stopped),
        ("Failed", Phase::Failed),
        ("SomethingNew", Phase::Starting),
    ];
    for (vmi_phase, phase) in table {
        let vmi = vmi(json!({ "phase": vmi_phase }));
        let status = next_status(&server, &observe(Some(&vm), Some(&vmi)), &[], now());
        assert_eq!(status.phase, Some(phase), "{vmi_phase}");
    }
    // No instance: pending when it should run, stopped when it should not.
    let status = next_status(&server, &observe(Some(&vm), None), &[], now());
    assert_eq!(status.phase, Some(Phase::Pending));
    let halted = super::tests::server(json!({"runStrategy": "Halted"}));
    let status = next_status(&halted, &observe(Some(&vm), None), &[], now());
    assert_eq!(status.phase, Some(Phase::Stopped));
    assert_eq!(
        find(&status, READY).message,
        "the server is stopped (spec.runStrategy is Halted)"
    );
}

#[test]
fn a_server_refused_before_its_vm_exists_is_pending_and_degraded() {
    let server = server(json!({}));
    let refusals = [
        refusal(
            reason::IMAGE_NOT_FOUND,
            "spec.image: ServerImage debian-13 does not exist",
        ),
        refusal(
            reason::QUOTA_EXCEEDED,
            "memory: 68Gi requested of 64Gi allowed",
        ),
    ];
    let status = next_status(&server, &observe(None, None), &refusals, now());
    assert_eq!(status.phase, Some(Phase::Pending));
    assert_eq!(state(&status, READY), pair("False", "ImageNotFound"));
    assert_eq!(state(&status, PROGRESSING), pair("False", "Refused"));
    assert_eq!(state(&status, DEGRADED), pair("True", "ImageNotFound"));
    assert_eq!(
        find(&status, DEGRADED).message,
        "spec.image: ServerImage debian-13 does not exist; memory: 68Gi requested of 64Gi allowed"
    );
    assert_eq!(
        state(&status, RESTART_REQUIRED),
        pair("False", "NotRunning")
    );
    assert_eq!(status.observed_generation, Some(3));
    assert!(
        status
            .conditions
            .iter()
            .all(|c| c.observed_generation == Some(3))
    );
    assert_eq!(
        status
            .conditions
            .iter()
            .map(|c| c.type_.as_str())
            .collect::<Vec<_>>(),
        [READY, PROGRESSING, DEGRADED, RESTART_REQUIRED]
    );
}

#[test]
fn a_new_server_without_a_vm_yet_is_progressing() {
    let status = next_status(&server(json!({})), &observe(None, None), &[], now());
    assert_eq!(status.phase, Some(Phase::Pending));
    assert_eq!(state(&status, READY), pair("False", "Creating"));
    assert_eq!(state(&status, PROGRESSING), pair("True", "Creating"));
    assert_eq!(state(&status, DEGRADED), pair("False", "AsExpected"));
}

#[test]
fn a_running_server_reports_addresses_node_and_guest_os() {
    let server = server(json!({}));
    let vm = vm(json!({"printableStatus": "Running", "ready": true}));
    let vmi = running_vmi();
    let status = next_status(&server, &observe(Some(&vm), Some(&vmi)), &[], now());
    assert_eq!(status.phase, Some(Phase::Running));
    assert_eq!(status.ip.as_deref(), Some("10.244.1.17"));
    assert_eq!(
        status.addresses,
        ["10.244.1.17", "fd10:244::17", "10.0.5.4"]
    );
    assert_eq!(status.node.as_deref(), Some("node-2"));
    assert_eq!(
        status.guest_os,
        Some(GuestOs {
            name: Some("Debian GNU/Linux".into()),
            version: Some("12 (bookworm)".into()),
            kernel: Some("6.1.0-18-amd64".into()),
        })
    );
    assert_eq!(state(&status, READY), pair("True", "Running"));
    assert_eq!(
        find(&status, READY).message,
        "the server runs on node node-2"
    );
    assert_eq!(state(&status, PROGRESSING), pair("False", "Stable"));
    assert_eq!(state(&status, DEGRADED), pair("False", "AsExpected"));
    assert_eq!(state(&status, RESTART_REQUIRED), pair("False", "UpToDate"));
}

#[test]
fn a_booting_server_is_running_but_not_ready() {
    let server = server(json!({}));
    let vm = vm(json!({"printableStatus": "Running", "ready": false}));
    let vmi =
        vmi(json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]}));
    let status = next_status(&server, &observe(Some(&vm), Some(&vmi)), &[], now());
    assert_eq!(status.phase, Some(Phase::Running));
    assert_eq!(state(&status, READY), pair("False", "NotReady"));
    assert_eq!(state(&status, PROGRESSING), pair("True", "NotReady"));
    assert_eq!(status.ip, None, "no interfaces reported yet");
    assert_eq!(status.guest_os, None, "no guest agent yet");
}

#[test]
fn a_failure_carries_kubevirts_message() {
    let server = server(json!({}));
    let vm = vm(json!({
        "printableStatus": "ErrorUnschedulable",
        "conditions": [
            {"type": "Ready", "status": "False", "reason": "PodNotExists", "message": ""},
            {"type": "Failure", "status": "True", "message": "0/3 nodes are available: 3 Insufficient memory."},
        ],
    }));
    let status = next_status(&server, &observe(Some(&vm), None), &[], now());
    assert_eq!(status.phase, Some(Phase::Failed));
    assert_eq!(state(&status, READY), pair("False", "ErrorUnschedulable"));
    assert_eq!(state(&status, DEGRADED), pair("True", "ErrorUnschedulable"));
    assert_eq!(
        find(&status, DEGRADED).message,
        "ErrorUnschedulable: 0/3 nodes are available: 3 Insufficient memory."
    );
    assert_eq!(state(&status, PROGRESSING), pair("False", "Stable"));

    let silent = printable("CrashLoopBackOff");
    let status = next_status(&server, &observe(Some(&silent), None), &[], now());
    assert_eq!(
        find(&status, DEGRADED).message,
        "CrashLoopBackOff: KubeVirt gives no details"
    );
}

#[test]
fn a_disk_error_is_degraded_while_provisioning_goes_on() {
    let server = server(json!({}));
    let vm = vm(json!({
        "printableStatus": "DataVolumeError",
        "conditions": [{"type": "DataVolumesReady", "status": "False", "message": "Unable to connect to http data source: 404"}],
    }));
    let status = next_status(&server, &observe(Some(&vm), None), &[], now());
    assert_eq!(status.phase, Some(Phase::Provisioning));
    assert_eq!(state(&status, PROGRESSING), pair("True", "DataVolumeError"));
    assert_eq!(state(&status, DEGRADED), pair("True", "DataVolumeError"));
    assert_eq!(
        find(&status, DEGRADED).message,
        "DataVolumeError: Unable to connect to http data source: 404"
    );
}

#[test]
fn a_refused_change_leaves_the_running_server_reported_as_it_is() {
    let server = server(json!({"memory": "80Gi"}));
    let vm = vm(json!({"printableStatus": "Running", "ready": true}));
    let vmi = running_vmi();
    let refusals = [refusal(
        reason::QUOTA_EXCEEDED,
        "memory: 80Gi requested of 64Gi allowed, 16Gi over (servers: web 80Gi)",
    )];
    let status = next_status(&server, &observe(Some(&vm), Some(&vmi)), &refusals, now());
    assert_eq!(status.phase, Some(Phase::Running));
    assert_eq!(state(&status, READY), pair("True", "Running"));
    assert_eq!(state(&status, PROGRESSING), pair("False", "Refused"));
    assert_eq!(state(&status, DEGRADED), pair("True", "QuotaExceeded"));
    assert!(find(&status, DEGRADED).message.contains("16Gi over"));
    assert_eq!(status.ip.as_deref(), Some("10.244.1.17"));
}

#[test]
fn transition_times_move_only_when_a_condition_flips() {
    let mut server = server(json!({}));
    let vm = vm(json!({"printableStatus": "Running", "ready": true}));
    let vmi = running_vmi();
    let first = next_status(&server, &observe(Some(&vm), Some(&vmi)), &[], now());
    server.status = Some(first.clone());

    // Same observation later: the very same status, so nothing is written.
    let later = at("2025-03-10T12:30:00Z");
    let again = next_status(&server, &observe(Some(&vm), Some(&vmi)), &[], later);
    assert_eq!(again, first);

    // The server stops: Ready flips (new time), Degraded does not (old time kept).
    let stopped = printable("Stopped");
    let next = next_status(&server, &observe(Some(&stopped), None), &[], later);
    assert_eq!(find(&next, READY).last_transition_time, Time(later));
    assert_eq!(find(&next, DEGRADED).last_transition_time, Time(now()));
    assert_eq!(next.ip, None);
    assert_eq!(next.node, None);
    assert_eq!(next.guest_os, None);
}

#[test]
fn addresses_are_cleaned_and_bounded() {
    let many: Vec<String> = (0..40).map(|i| format!("10.0.0.{i}")).collect();
    let vmi = vmi(json!({
        "phase": "Running",
        "interfaces": [
            {"ipAddress": "not-an-ip", "ipAddresses": ["", " 10.1.1.1 ", "10.1.1.1", "fe80::abcd", "300.1.1.1", "2001:db8::5/64"]},
            {"ipAddresses": many},
        ],
    }));
    let found = addresses(Some(&vmi));
    assert_eq!(found.len(), MAX_ADDRESSES);
    assert_eq!(found[..2], ["10.1.1.1", "2001:db8::5"]);
    // The first interface's ipAddress is garbage: the first good address stands in.
    let server = server(json!({}));
    let vm = printable("Running");
    let status = next_status(&server, &observe(Some(&vm), Some(&vmi)), &[], now());
    assert_eq!(status.ip.as_deref(), Some("10.1.1.1"));
    assert!(addresses(None).is_empty());
}

#[test]
fn the_external_address_comes_from_the_service() {
    let cases = [
        (
            json!({"spec": {"clusterIP": "10.96.0.10"}, "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}}),
            Some("192.0.2.10"),
        ),
        (
            json!({"spec": {"clusterIP": "10.96.0.10"}, "status": {"loadBalancer": {"ingress": [{"ip": ""}, {"hostname": "web.talsi.example"}]}}}),
            Some("web.talsi.example"),
        ),
        (
            json!({"spec": {"clusterIP": "10.96.0.10"}, "status": {"loadBalancer": {}}}),
            Some("10.96.0.10"),
        ),
        (json!({"spec": {"clusterIP": "None"}}), None),
        (json!({}), None),
    ];
    for (value, expected) in cases {
        let service = service(value.clone());
        assert_eq!(
            external_address(Some(&service)).as_deref(),
            expected,
            "{value}"
        );
    }
    assert_eq!(external_address(None), None);
}

#[test]
fn the_last_backup_is_the_newest_ready_snapshot_of_this_server() {
    let mut server = server(json!({}));
    let snapshots = [
        snapshot(
            "web-1",
            "2025-03-08T02:00:01Z",
            json!({"readyToUse": true, "creationTime": "2025-03-08T02:00:03Z"}),
        ),
        snapshot(
            "web-2",
            "2025-03-09T02:00:01Z",
            json!({"readyToUse": true, "creationTime": "2025-03-09T02:00:04Z"}),
        ),
        snapshot(
            "web-3",
            "2025-03-10T02:00:01Z",
            json!({"readyToUse": false, "phase": "InProgress"}),
        ),
        // An earlier server's, kept by Retain: not this server's backup.
        snapshot(
            "web-old",
            "2025-02-01T02:00:01Z",
            json!({"readyToUse": true, "creationTime": "2025-02-01T02:00:02Z"}),
        ),
    ];
    let observed = Observed {
        vm: None,
        vmi: None,
        snapshots: &snapshots,
        service: None,
    };
    let status = next_status(&server, &observed, &[], now());
    assert_eq!(
        status.last_backup_time,
        Some(Time(at("2025-03-09T02:00:04Z")))
    );

    // Without any ready snapshot in view, the last known time stays.
    server.status = Some(status);
    let status = next_status(&server, &observe(None, None), &[], now());
    assert_eq!(
        status.last_backup_time,
        Some(Time(at("2025-03-09T02:00:04Z")))
    );
    assert_eq!(newest_backup(&server, &snapshots[3..]), None);
}

#[test]
fn snapshot_infos_read_state_and_time() {
    let mut deleting = snapshot("d", "2025-03-01T02:00:00Z", json!({"readyToUse": true}));
    deleting.metadata.deletion_timestamp = Some(Time(at("2025-03-10T00:00:00Z")));
    let mut unnamed = snapshot("x", "2025-03-01T02:00:00Z", json!({}));
    unnamed.metadata.name = None;
    let mut untimed = snapshot(
        "u",
        "2025-03-01T02:00:00Z",
        json!({"creationTime": "2025-03-02T02:00:00Z"}),
    );
    untimed.metadata.creation_timestamp = None;
    let infos = snapshot_infos(&[
        snapshot(
            "ok",
            "2025-03-03T02:00:00Z",
            json!({"readyToUse": true, "phase": "Succeeded"}),
        ),
        snapshot(
            "bad",
            "2025-03-04T02:00:00Z",
            json!({"readyToUse": false, "phase": "Failed"}),
        ),
        snapshot(
            "busy",
            "2025-03-05T02:00:00Z",
            json!({"phase": "InProgress", "error": {"message": "retrying"}}),
        ),
        deleting,
        unnamed,
        untimed,
    ]);
    let expected = [
        ("ok", Some("2025-03-03T02:00:00Z"), true, false),
        ("bad", Some("2025-03-04T02:00:00Z"), false, true),
        ("busy", Some("2025-03-05T02:00:00Z"), false, false),
        ("d", Some("2025-03-01T02:00:00Z"), false, false),
        ("u", Some("2025-03-02T02:00:00Z"), false, false),
    ]
    .map(|(name, created, ready, failed)| SnapshotInfo {
        name: name.into(),
        created: created.map(at),
        ready,
        failed,
    });
    assert_eq!(infos, expected);
}

#[test]
fn restart_is_required_when_cpu_or_memory_differ() {
    let vmi = running_vmi();
    assert_eq!(restart_required(&server(json!({})), Some(&vmi)), None);
    assert_eq!(
        restart_required(&server(json!({"memory": "4096Mi"})), Some(&vmi)),
        None,
        "4096Mi is 4Gi"
    );
    assert_eq!(
        restart_required(&server(json!({"cpu": 4, "memory": "8Gi"})), Some(&vmi)).as_deref(),
        Some("cpu 2 → 4, memory 4Gi → 8Gi take effect at the next restart")
    );
    assert_eq!(
        restart_required(&server(json!({"memory": "6144Mi"})), Some(&vmi)).as_deref(),
        Some("memory 4Gi → 6Gi take effect at the next restart")
    );
    assert_eq!(restart_required(&server(json!({"cpu": 4})), None), None);
}

#[test]
fn vcpus_are_cores_times_sockets_times_threads() {
    // KubeVirt's CPU hotplug adds sockets: 2 sockets × 2 cores is the 4 CPUs asked for.
    let hotplugged = vmi_with(
        json!({"cpu": {"cores": 2, "sockets": 2}, "memory": {"guest": "4Gi"}, "devices": {}}),
        json!({"phase": "Running"}),
    );
    assert_eq!(
        restart_required(&server(json!({"cpu": 4})), Some(&hotplugged)),
        None
    );
    // An instance that states nothing is no reason to restart.
    let silent = vmi_with(json!({"devices": {}}), json!({"phase": "Running"}));
    assert_eq!(
        restart_required(&server(json!({"cpu": 8, "memory": "1Ti"})), Some(&silent)),
        None
    );
    // Garbage memory on the instance is skipped, zero cores count as one.
    let odd = vmi_with(
        json!({"cpu": {"cores": 0}, "memory": {"guest": "lots"}, "devices": {}}),
        json!({"phase": "Running"}),
    );
    assert_eq!(
        restart_required(&server(json!({"cpu": 1})), Some(&odd)),
        None
    );
    // A terminating instance is on its way out: nothing to compare.
    let mut going = running_vmi();
    going.metadata.deletion_timestamp = Some(Time(now()));
    assert_eq!(
        restart_required(&server(json!({"cpu": 4})), Some(&going)),
        None
    );
}

#[test]
fn the_restart_required_condition_says_how_it_will_happen() {
    let vm = vm(json!({"printableStatus": "Running", "ready": true}));
    let vmi = running_vmi();
    let plain = server(json!({"cpu": 4}));
    let status = next_status(&plain, &observe(Some(&vm), Some(&vmi)), &[], now());
    assert_eq!(
        state(&status, RESTART_REQUIRED),
        pair("True", "ResourcesChanged")
    );
    assert_eq!(
        find(&status, RESTART_REQUIRED).message,
        "cpu 2 → 4 take effect at the next restart; set spec.restart to a new value to restart it"
    );
    let windowed =
        server(json!({"cpu": 4, "maintenanceWindow": {"start": "02:00", "durationMinutes": 60}}));
    let status = next_status(&windowed, &observe(Some(&vm), Some(&vmi)), &[], now());
    assert!(
        find(&status, RESTART_REQUIRED)
            .message
            .contains("in its next maintenance window"),
    );
}

fn with_handled(mut server: VirtualServer, handled: Option<&str>) -> VirtualServer {
    server.status = Some(VirtualServerStatus {
        restart_handled: handled.map(str::to_string),
        ..VirtualServerStatus::default()
    });
    server
}

#[test]
fn a_new_restart_token_asks_for_one_restart() {
    let server = with_handled(
        server(json!({"restart": "2025-03-10T11:59"})),
        Some("earlier"),
    );
    let status = server.status.clone();
    assert_eq!(
        restart_decision(&server, status.as_ref(), None, true, now()),
        RestartDecision::Requested {
            token: "2025-03-10T11:59".into()
        }
    );
    // The status type itself is accepted too.
    let current = status.clone().unwrap_or_default();
    assert_eq!(
        restart_decision(&server, &current, None, true, now()),
        RestartDecision::Requested {
            token: "2025-03-10T11:59".into()
        }
    );
    // Handled already: nothing.
    let done = with_handled(server.clone(), Some("2025-03-10T11:59"));
    assert_eq!(
        restart_decision(&done, done.status.as_ref(), None, true, now()),
        RestartDecision::None
    );
    // No status yet, a token present: it was never handled.
    let fresh = self::server(json!({"restart": "1"}));
    assert_eq!(
        restart_decision(&fresh, None, None, true, now()),
        RestartDecision::Requested { token: "1".into() }
    );
    // Not running: nothing to restart.
    assert_eq!(
        restart_decision(&server, status.as_ref(), None, false, now()),
        RestartDecision::None
    );
}

#[test]
fn a_token_set_while_stopped_is_marked_handled_not_owed() {
    let server = with_handled(server(json!({"restart": "two"})), Some("one"));
    let stopped = printable("Stopped");
    let status = next_status(&server, &observe(Some(&stopped), None), &[], now());
    assert_eq!(status.restart_handled.as_deref(), Some("two"));

    // While it runs, the token stays unhandled until the controller restarts it.
    let vm = printable("Running");
    let vmi = running_vmi();
    let status = next_status(&server, &observe(Some(&vm), Some(&vmi)), &[], now());
    assert_eq!(status.restart_handled.as_deref(), Some("one"));
}

#[test]
fn pending_changes_restart_only_inside_the_window() {
    let window = MaintenanceWindow {
        days: vec![],
        start: "11:30".into(),
        duration_minutes: 60,
    };
    let server = server(json!({"cpu": 4}));
    let mut windowed = server.clone();
    windowed.spec.maintenance_window = Some(window);
    let pending = Some("cpu 2 → 4 take effect at the next restart");
    assert_eq!(
        restart_decision(&windowed, None, pending, true, now()),
        RestartDecision::MaintenanceWindow
    );
    assert_eq!(
        restart_decision(&windowed, None, pending, true, at("2025-03-10T13:00:00Z")),
        RestartDecision::None,
        "window closed"
    );
    assert_eq!(
        restart_decision(&windowed, None, None, true, now()),
        RestartDecision::None,
        "nothing pending"
    );
    assert_eq!(
        restart_decision(&server, None, pending, true, now()),
        RestartDecision::None,
        "no window"
    );
    assert_eq!(
        restart_decision(&windowed, None, pending, false, now()),
        RestartDecision::None,
        "not running"
    );
    // An admin's token wins over the window.
    windowed.spec.restart = Some("now".into());
    assert_eq!(
        restart_decision(&windowed, None, pending, true, now()),
        RestartDecision::Requested {
            token: "now".into()
        }
    );
}

#[test]
fn vm_running_means_a_running_instance_not_being_deleted() {
    assert!(vm_running(Some(&running_vmi())));
    assert!(!vm_running(None));
    assert!(!vm_running(Some(&vmi(json!({"phase": "Scheduling"})))));
    let mut going = running_vmi();
    going.metadata.deletion_timestamp = Some(Time(now()));
    assert!(!vm_running(Some(&going)));
}

#[test]
fn garbage_in_observed_objects_yields_a_status() {
    let server = server(json!({}));
    let huge = "x".repeat(100_000);
    let vm = vm(json!({
        "printableStatus": "Err: weird status!",
        "conditions": [{"type": "Failure", "status": "True", "message": huge}],
    }));
    let vmi = vmi_with(
        json!({"cpu": {"cores": u32::MAX, "sockets": u32::MAX, "threads": u32::MAX}, "devices": {}}),
        json!({
            "phase": "Running",
            "nodeName": "  ",
            "interfaces": [{"ipAddress": "::::"}],
            "guestOSInfo": {"name": "", "prettyName": "y".repeat(10_000)},
        }),
    );
    let status = next_status(&server, &observe(Some(&vm), Some(&vmi)), &[], now());
    assert_eq!(status.phase, Some(Phase::Failed));
    assert_eq!(
        state(&status, READY),
        pair("False", "Unknown"),
        "reason sanitised"
    );
    assert!(find(&status, DEGRADED).message.len() <= MAX_KUBEVIRT_MESSAGE + 64);
    assert_eq!(status.node, None);
    assert_eq!(status.ip, None);
    let os = status.guest_os.expect("pretty name stands in");
    assert!(os.name.is_some_and(|n| n.len() <= MAX_OBSERVED_TEXT));
    assert!(restart_required(&server, Some(&vmi)).is_some());

    // A bare VM without any status, and objects without metadata at all.
    let bare = VirtualMachine::default();
    let empty = VirtualMachineInstance::default();
    let snapshots = [VirtualMachineSnapshot::default()];
    let observed = Observed {
        vm: Some(&bare),
        vmi: Some(&empty),
        snapshots: &snapshots,
        service: Some(&Service::default()),
    };
    let status = next_status(
        &VirtualServer::new("x", server.spec.clone()),
        &observed,
        &[],
        now(),
    );
    assert_eq!(status.phase, Some(Phase::Starting));
    assert!(snapshot_infos(&snapshots).is_empty());
    let _ = restart_required(&server, Some(&empty));
}
