use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

use super::*;
use crate::kubevirt::VirtualMachineSnapshot;

const NOW: &str = "2026-12-04T10:00:00Z";

fn now() -> Timestamp {
    NOW.parse().expect("timestamp")
}

fn server(restore: Option<serde_json::Value>, status: Option<serde_json::Value>) -> VirtualServer {
    let mut spec = json!({ "image": "debian-12", "cpu": 2, "memory": "4Gi" });
    if let Some(restore) = restore {
        spec["restore"] = restore;
    }
    let mut server = json!({
        "apiVersion": "novads.io/v1alpha1", "kind": "VirtualServer",
        "metadata": { "name": "web", "namespace": "muni-talsi", "uid": "uid-web", "generation": 4 },
        "spec": spec
    });
    if let Some(status) = status {
        server["status"] = status;
    }
    serde_json::from_value(server).expect("server")
}

fn request(backup: &str) -> serde_json::Value {
    json!({ "backup": backup, "token": "t1" })
}

fn backup(name: &str, of: &str, ready: bool) -> VirtualMachineSnapshot {
    serde_json::from_value(json!({
        "apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot",
        "metadata": { "name": name, "namespace": "muni-talsi" },
        "spec": { "source": { "apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": of } },
        "status": { "readyToUse": ready, "creationTime": "2026-12-03T02:00:00Z" }
    }))
    .expect("snapshot")
}

fn vm(run_strategy: &str) -> VirtualMachine {
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": { "name": "web", "namespace": "muni-talsi" },
        "spec": { "runStrategy": run_strategy, "template": {} }
    }))
    .expect("vm")
}

fn kubevirt_restore(name: &str, target: &str, status: serde_json::Value) -> VirtualMachineRestore {
    serde_json::from_value(json!({
        "apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineRestore",
        "metadata": { "name": name, "namespace": "muni-talsi" },
        "spec": { "target": { "apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": target }, "virtualMachineSnapshotName": "x" },
        "status": status
    }))
    .expect("restore")
}

/// The step for `server` with the given observations.
fn step(
    server: &VirtualServer,
    backup: Option<&VirtualMachineSnapshot>,
    ours: Option<&VirtualMachineRestore>,
    restores: &[VirtualMachineRestore],
    vm: Option<&VirtualMachine>,
    instance: bool,
) -> RestoreStep {
    let active = active_restore(server).expect("a restore is active");
    restore_step(&RestoreInput {
        server,
        active: &active,
        backup,
        ours,
        restores,
        vm,
        instance,
        now: now(),
    })
}

fn refused_reason(step: &RestoreStep) -> &'static str {
    match step {
        RestoreStep::Refused(refusal) => refusal.reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_request_is_active_until_it_has_ended_and_a_started_one_until_its_end() {
    assert_eq!(active_restore(&server(None, None)), None);
    let asked = server(Some(request("web-20261203-0200")), None);
    let active = active_restore(&asked).expect("active");
    assert!(!active.started);
    assert!(active.name.starts_with("web-restore-"), "{}", active.name);

    let record = |phase: &str| {
        json!({ "restore": { "backup": "web-20261203-0200", "token": "t1", "phase": phase,
                             "virtualMachineRestore": "web-restore-x" } })
    };
    // Ended: nothing more to read or do, whatever the outcome.
    for phase in ["Succeeded", "Failed"] {
        let done = server(Some(request("web-20261203-0200")), Some(record(phase)));
        assert_eq!(active_restore(&done), None, "{phase}");
    }
    // A new token asks again.
    let again = server(
        Some(json!({ "backup": "web-20261203-0200", "token": "t2" })),
        Some(record("Succeeded")),
    );
    assert!(active_restore(&again).is_some());
    // Started: followed even after spec.restore was removed, under the recorded name.
    let started = server(None, Some(record("Restoring")));
    let active = active_restore(&started).expect("active");
    assert!(active.started);
    assert_eq!(active.name, "web-restore-x");
    // Only stopping: nothing was restored yet, so removing the request calls it off.
    assert_eq!(
        active_restore(&server(None, Some(record("Stopping")))),
        None
    );
}

#[test]
fn restore_names_come_from_the_request_alone() {
    let request = |backup: &str, token: Option<&str>| Restore {
        backup: backup.into(),
        from_server: None,
        token: token.map(str::to_string),
    };
    let a = build::restore_name("web", &request("web-20261203-0200", Some("t1")));
    assert_eq!(
        a,
        build::restore_name("web", &request("web-20261203-0200", Some("t1")))
    );
    assert_eq!(a.len(), "web-restore-".len() + 16);
    assert_ne!(
        a,
        build::restore_name("web", &request("web-20261203-0200", Some("t2")))
    );
    assert_ne!(
        a,
        build::restore_name("web", &request("web-20261203-0200", None))
    );
}

#[test]
fn refusals_are_checked_before_anything_is_touched() {
    let asked = server(Some(request("web-20261203-0200")), None);
    let running = vm("Always");

    let missing = step(&asked, None, None, &[], Some(&running), true);
    assert_eq!(refused_reason(&missing), reason::BACKUP_NOT_FOUND);

    let foreign = backup("web-20261203-0200", "db", true);
    let of_db = step(&asked, Some(&foreign), None, &[], Some(&running), true);
    assert_eq!(refused_reason(&of_db), reason::BACKUP_OF_ANOTHER_SERVER);

    let pending = backup("web-20261203-0200", "web", false);
    let not_ready = step(&asked, Some(&pending), None, &[], Some(&running), true);
    assert_eq!(refused_reason(&not_ready), reason::BACKUP_NOT_READY);

    let ready = backup("web-20261203-0200", "web", true);
    let other = kubevirt_restore("by-hand", "web", json!({ "complete": false }));
    let busy = step(&asked, Some(&ready), None, &[other], Some(&running), true);
    assert_eq!(refused_reason(&busy), reason::RESTORE_IN_PROGRESS);
    // Restores that ended, or of other VMs, are no obstacle.
    let ended = [
        kubevirt_restore("old", "web", json!({ "complete": true })),
        kubevirt_restore(
            "failed",
            "web",
            json!({ "complete": false, "conditions": [{ "type": "Failure", "status": "True" }] }),
        ),
        kubevirt_restore("db", "db", json!({ "complete": false })),
    ];
    let go = step(&asked, Some(&ready), None, &ended, Some(&running), true);
    assert!(matches!(go, RestoreStep::Stop(_)), "{go:?}");

    // Another server's backup never replaces an existing server's disks.
    let from_db = server(
        Some(json!({ "backup": "db-20261203-0200", "fromServer": "db" })),
        None,
    );
    let db_backup = backup("db-20261203-0200", "db", true);
    let onto_existing = step(&from_db, Some(&db_backup), None, &[], Some(&running), false);
    assert_eq!(
        refused_reason(&onto_existing),
        reason::BACKUP_OF_ANOTHER_SERVER
    );
}

#[test]
fn a_running_server_is_stopped_first_then_restored_then_followed_to_the_end() {
    let asked = server(Some(request("web-20261203-0200")), None);
    let ready = backup("web-20261203-0200", "web", true);

    let RestoreStep::Stop(stopping) =
        step(&asked, Some(&ready), None, &[], Some(&vm("Always")), true)
    else {
        panic!("a running server is stopped first");
    };
    assert_eq!(stopping.phase, RestorePhase::Stopping);
    assert_eq!(stopping.start_time, Some(Time(now())));
    // Halted but the instance still shutting down: keep stopping.
    assert!(matches!(
        step(&asked, Some(&ready), None, &[], Some(&vm("Halted")), true),
        RestoreStep::Stop(_)
    ));

    // Stopped: KubeVirt is asked, and the start time is the one recorded when stopping began.
    let mut record = serde_json::to_value(&stopping).expect("record");
    record["startTime"] = json!("2026-12-04T09:58:00Z");
    let stopped = server(
        Some(request("web-20261203-0200")),
        Some(json!({ "restore": record })),
    );
    let RestoreStep::Create(restoring, restore) = step(
        &stopped,
        Some(&ready),
        None,
        &[],
        Some(&vm("Halted")),
        false,
    ) else {
        panic!("a stopped server is restored");
    };
    assert_eq!(restoring.phase, RestorePhase::Restoring);
    assert_eq!(
        restoring.start_time,
        Some(Time("2026-12-04T09:58:00Z".parse().expect("time")))
    );
    assert_eq!(
        restore.spec.virtual_machine_snapshot_name,
        "web-20261203-0200"
    );
    assert_eq!(restore.spec.target.name, "web");
    assert_eq!(restore.spec.target.kind, "VirtualMachine");
    assert_eq!(
        restore.metadata.name.as_deref(),
        restoring.virtual_machine_restore.as_deref()
    );
    let owner = &restore.metadata.owner_references.as_ref().expect("owned")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("VirtualServer", "uid-web")
    );

    // KubeVirt restores, then completes or fails.
    let name = restoring.virtual_machine_restore.clone().expect("name");
    let progressing = kubevirt_restore(&name, "web", json!({ "complete": false }));
    assert!(matches!(
        step(
            &stopped,
            Some(&ready),
            Some(&progressing),
            &[],
            Some(&vm("Halted")),
            false
        ),
        RestoreStep::Wait(_)
    ));
    let complete = kubevirt_restore(
        &name,
        "web",
        json!({ "complete": true, "restoreTime": "2026-12-04T10:03:00Z" }),
    );
    let RestoreStep::Finished(done, Ok(())) = step(
        &stopped,
        Some(&ready),
        Some(&complete),
        &[],
        Some(&vm("Halted")),
        false,
    ) else {
        panic!("a complete restore finishes");
    };
    assert_eq!(done.phase, RestorePhase::Succeeded);
    assert_eq!(
        done.completion_time,
        Some(Time("2026-12-04T10:03:00Z".parse().expect("time")))
    );
    let failed = kubevirt_restore(
        &name,
        "web",
        json!({ "complete": false, "conditions": [
            { "type": "Failure", "status": "True", "reason": "VolumeRestoreFailed", "message": "snapshot content is gone" }
        ] }),
    );
    let RestoreStep::Finished(record, Err(why)) = step(
        &stopped,
        Some(&ready),
        Some(&failed),
        &[],
        Some(&vm("Halted")),
        false,
    ) else {
        panic!("a failed restore finishes");
    };
    assert_eq!(record.phase, RestorePhase::Failed);
    assert_eq!(why, "snapshot content is gone");
}

#[test]
fn a_started_restore_whose_kubevirt_restore_vanished_has_failed() {
    let started = server(
        None,
        Some(
            json!({ "restore": { "backup": "web-20261203-0200", "phase": "Restoring",
                                  "virtualMachineRestore": "web-restore-x" } }),
        ),
    );
    let RestoreStep::Finished(record, Err(why)) =
        step(&started, None, None, &[], Some(&vm("Halted")), false)
    else {
        panic!("finished");
    };
    assert_eq!(record.phase, RestorePhase::Failed);
    assert!(why.contains("web-restore-x"), "{why}");
}

#[test]
fn a_new_server_from_another_servers_backup_is_created_by_the_restore() {
    let new = server(
        Some(json!({ "backup": "db-20261203-0200", "fromServer": "db" })),
        None,
    );
    let db_backup = backup("db-20261203-0200", "db", true);
    let RestoreStep::Create(_, restore) = step(&new, Some(&db_backup), None, &[], None, false)
    else {
        panic!("a new server is restored at once: there is nothing to stop");
    };
    assert_eq!(restore.spec.target.name, "web");
    assert_eq!(
        restore.spec.patches,
        [
            r#"{"op":"add","path":"/metadata/labels/novads.io~1virtual-server","value":"web"}"#,
            r#"{"op":"add","path":"/spec/template/metadata/labels/novads.io~1virtual-server","value":"web"}"#,
        ]
    );
}

#[test]
fn the_condition_tells_each_step_and_a_refusal_leaves_the_record_alone() {
    let earlier = json!({ "backup": "web-20261101-0200", "token": "t0", "phase": "Succeeded" });
    let asked = server(
        Some(request("web-20261203-0200")),
        Some(json!({ "restore": earlier })),
    );
    let previous = asked.status.clone().expect("status");
    let refusal = step(&asked, None, None, &[], Some(&vm("Always")), true);
    let mut next = previous.clone();
    record_step(&mut next, &previous, &asked, &refusal, now());
    assert_eq!(next.restore, previous.restore, "a refusal touches nothing");
    let condition = next
        .conditions
        .iter()
        .find(|c| c.type_ == RESTORING)
        .expect("condition");
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("False", reason::BACKUP_NOT_FOUND)
    );
    let (warning, event_reason, _) = restore_event(&previous, &next).expect("an event");
    assert!(warning);
    assert_eq!(event_reason, reason::BACKUP_NOT_FOUND);
    // The same refusal again: no second Event.
    let mut again = next.clone();
    record_step(&mut again, &next, &asked, &refusal, now());
    assert_eq!(again, next);
    assert_eq!(restore_event(&next, &again), None);

    let ready = backup("web-20261203-0200", "web", true);
    let stop = step(&asked, Some(&ready), None, &[], Some(&vm("Always")), true);
    let mut stopping = next.clone();
    record_step(&mut stopping, &next, &asked, &stop, now());
    assert_eq!(
        stopping.restore.as_ref().map(|r| r.phase),
        Some(RestorePhase::Stopping)
    );
    let (warning, event_reason, note) = restore_event(&next, &stopping).expect("an event");
    assert_eq!((warning, event_reason.as_str()), (false, reason::STOPPING));
    assert!(note.contains("web-20261203-0200"), "{note}");
}
