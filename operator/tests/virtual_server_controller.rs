//! The VirtualServer reconciler against a mocked API server (the kit in `support/`): every
//! request is checked in order — method, path and query, body — and answered as the API
//! server would. Every request is also checked against the operator's RBAC in the chart
//! (charts/novads/templates/rbac-operator.yaml), so a grant the controller needs cannot be
//! forgotten there.
//!
//! At the end, the whole runtime against a fake API server without KubeVirt: the tenancy
//! controller keeps working, the VirtualServer controller says what is missing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Response};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::jiff::Timestamp;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use novads_crds::{ServerImage, VirtualServer};
use novads_operator::kubevirt::{VirtualMachine, VirtualMachineInstance, VirtualMachineSnapshot};
use novads_operator::virtual_server::build;
use novads_operator::virtual_server::controller::unchanged;
use novads_operator::virtual_server::controller::{
    self, Caches, Context, Error, FINALIZER, KUBEVIRT_RECHECK, REFUSED_RECHECK, RESYNC,
};
use novads_operator::virtual_server::namespace_index::ServersByNamespace;
use novads_operator::virtual_server::records::Records;
use novads_operator::virtual_server::restore;
use novads_operator::virtual_server::status::{self, Observed};
use novads_operator::{OperatorOptions, run_with_client};
use serde_json::{Value, json};
use tower_test::mock;

mod support;
use support::rbac::{assert_allowed, authorization};
use support::{
    Expect, FakeApi, Handle, api_error, api_server, condition, eventually, expect, fake_client,
    free_port, mocked_client, not_found,
};

// ---------------------------------------------------------------------------------------------
// The mocked API server
// ---------------------------------------------------------------------------------------------

/// 2025-06-02 (a Monday) 10:00 UTC.
const NOW: &str = "2025-06-02T10:00:00Z";

fn at(time: &str) -> Timestamp {
    time.parse().expect("timestamp")
}

/// A controller context on a mocked API, reused across reconciles like the real one.
struct Harness {
    ctx: Arc<Context>,
    handle: Option<Handle>,
}

impl Harness {
    fn new() -> Self {
        Self::at(NOW)
    }

    fn at(now: &str) -> Self {
        Self::with(|ctx| ctx, now)
    }

    fn with(configure: impl FnOnce(Context) -> Context, now: &str) -> Self {
        let (client, handle) = mocked_client();
        let reporter = Reporter {
            controller: "novads-operator".into(),
            instance: Some("test".into()),
        };
        let now = at(now);
        let ctx = configure(Context::new(client, reporter).with_clock(move || now));
        Self {
            ctx: Arc::new(ctx),
            handle: Some(handle),
        }
    }

    async fn run(&mut self, server: &VirtualServer, script: Vec<Expect>) -> Result<Action, Error> {
        let handle = self.handle.take().expect("handle");
        let api = api_server(handle, script);
        let result = tokio::time::timeout(
            Duration::from_secs(10),
            controller::reconcile(Arc::new(server.clone()), self.ctx.clone()),
        )
        .await
        .expect("reconcile finishes");
        self.handle = Some(api.await.expect("API server script passed"));
        result
    }
}

// ---------------------------------------------------------------------------------------------
// The chart's RBAC
// ---------------------------------------------------------------------------------------------

#[test]
fn the_rbac_check_catches_what_the_chart_does_not_grant() {
    let (group, resource, name, verbs) = authorization(
        &Method::PUT,
        "/apis/subresources.kubevirt.io/v1/namespaces/muni-talsi/virtualmachines/web/restart",
        "application/json",
    );
    assert_eq!(
        (group.as_str(), resource.as_str(), name.as_str(), verbs),
        (
            "subresources.kubevirt.io",
            "virtualmachines/restart",
            "web",
            vec!["update"]
        )
    );
    let result = std::panic::catch_unwind(|| {
        assert_allowed(&Method::GET, "/api/v1/namespaces/muni-talsi/secrets?", "");
    });
    assert!(result.is_err(), "the operator must not list Secrets");
    let result = std::panic::catch_unwind(|| {
        assert_allowed(
            &Method::DELETE,
            "/apis/kubevirt.io/v1/namespaces/x/virtualmachineinstances/web",
            "",
        );
    });
    assert!(result.is_err(), "the operator must not delete instances");
}

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

const NS: &str = "/api/v1/namespaces/muni-talsi";
const MUNICIPALITY: &str = "/apis/novads.io/v1alpha1/municipalities/talsi";
const IMAGE: &str = "/apis/novads.io/v1alpha1/serverimages/debian-12";
const SERVERS: &str = "/apis/novads.io/v1alpha1/namespaces/muni-talsi/virtualservers";
const SERVER: &str = "/apis/novads.io/v1alpha1/namespaces/muni-talsi/virtualservers/web";
const VM: &str = "/apis/kubevirt.io/v1/namespaces/muni-talsi/virtualmachines/web";
const VMI: &str = "/apis/kubevirt.io/v1/namespaces/muni-talsi/virtualmachineinstances/web";
const SNAPSHOTS: &str =
    "/apis/snapshot.kubevirt.io/v1beta1/namespaces/muni-talsi/virtualmachinesnapshots";
const SNAPSHOT_SELECTOR: &str =
    "labelSelector=novads.io%2Fvirtual-server%3Dweb%2Cnovads.io%2Fbackup%3Dscheduled";
const RESTORES: &str =
    "/apis/snapshot.kubevirt.io/v1beta1/namespaces/muni-talsi/virtualmachinerestores";
const SERVICE: &str = "/api/v1/namespaces/muni-talsi/services/web";
const CLAIMS: &str = "/api/v1/namespaces/muni-talsi/persistentvolumeclaims";
const CLOUD_INIT: &str = "/api/v1/namespaces/muni-talsi/secrets/web-cloud-init";
const POLICY: &str = "/apis/networking.k8s.io/v1/namespaces/muni-talsi/networkpolicies/web-expose";
const RESTART: &str =
    "/apis/subresources.kubevirt.io/v1/namespaces/muni-talsi/virtualmachines/web/restart";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/muni-talsi/events?";
const APPLY: &str = "?&force=true&fieldManager=novads-operator";

fn municipality(max_servers: i32) -> Value {
    json!({
        "apiVersion": "novads.io/v1alpha1", "kind": "Municipality",
        "metadata": { "name": "talsi", "uid": "uid-talsi", "generation": 1 },
        "spec": {
            "code": "talsi", "displayName": "Talsu novads", "realm": "talsi",
            "quotas": { "cpu": 16, "memory": "64Gi", "storage": "2Ti", "maxVirtualServers": max_servers },
            "allowedNetworkRanges": ["10.20.0.0/16"]
        }
    })
}

fn namespace() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {
            "name": "muni-talsi",
            "ownerReferences": [{ "apiVersion": "novads.io/v1alpha1", "kind": "Municipality", "name": "talsi", "uid": "uid-talsi", "controller": true }]
        }
    })
}

fn image() -> Value {
    json!({
        "apiVersion": "novads.io/v1alpha1", "kind": "ServerImage",
        "metadata": { "name": "debian-12", "uid": "uid-debian-12" },
        "spec": {
            "source": { "dataSource": { "name": "debian-12", "namespace": "novads-images" } },
            "osFamily": "Linux", "version": "12", "supportEnd": "2028-06-30",
            "lastPatched": "2025-05-01", "minDiskSize": "20Gi", "approved": true
        }
    })
}

fn image_object() -> ServerImage {
    serde_json::from_value(image()).expect("image")
}

/// Server `web`, created a month before [`NOW`], with the finalizer.
fn web(spec: Value) -> VirtualServer {
    serde_json::from_value(json!({
        "apiVersion": "novads.io/v1alpha1", "kind": "VirtualServer",
        "metadata": {
            "name": "web", "namespace": "muni-talsi", "uid": "uid-web", "generation": 3,
            "resourceVersion": "10", "creationTimestamp": "2025-05-01T00:00:00Z",
            "finalizers": [FINALIZER]
        },
        "spec": spec
    }))
    .expect("server fixture")
}

fn basic_spec() -> Value {
    json!({ "image": "debian-12", "cpu": 2, "memory": "4Gi" })
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({ "apiVersion": "v1", "kind": kind, "metadata": { "resourceVersion": "1" }, "items": items })
}

/// What the API server answers a successful DELETE with (no finalizers left to wait for).
fn deleted() -> (u16, Value) {
    (
        200,
        json!({ "kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {} }),
    )
}

/// `patch` merged into `target` (RFC 7386, without the removal of nulls).
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                merge(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

fn answer(value: Option<Value>) -> (u16, Value) {
    value.map_or_else(not_found, |v| (200, v))
}

/// What the API holds around the server.
#[derive(Clone)]
struct World {
    municipality: Option<Value>,
    image: Option<Value>,
    /// Other servers of the namespace.
    siblings: Vec<Value>,
    vm: Option<Value>,
    vmi: Option<Value>,
    snapshots: Vec<Value>,
    service: Option<Value>,
    /// The tenant's user-data Secret, when the server names one.
    tenant_secret: Option<Option<Value>>,
    /// The backup a restore names, KubeVirt's restore of it, and the namespace's restores.
    backup: Option<Value>,
    kubevirt_restore: Option<Value>,
    restores: Vec<Value>,
}

impl World {
    fn new() -> Self {
        Self {
            municipality: Some(municipality(10)),
            image: Some(image()),
            siblings: Vec::new(),
            vm: None,
            vmi: None,
            snapshots: Vec::new(),
            service: None,
            tenant_secret: None,
            backup: None,
            kubevirt_restore: None,
            restores: Vec::new(),
        }
    }

    /// The reads of one reconcile, in order.
    fn reads(&self, server: &VirtualServer) -> Vec<Expect> {
        let mut items = self.siblings.clone();
        items.push(serde_json::to_value(server).expect("server"));
        let municipality = self.municipality.clone();
        let image = self.image.clone();
        let vm = self.vm.clone();
        let mut script = vec![
            expect(Method::GET, NS, |_| (200, namespace())),
            expect(Method::GET, MUNICIPALITY, move |_| answer(municipality)),
            expect(Method::GET, IMAGE, move |_| answer(image)),
            expect(Method::GET, &format!("{SERVERS}?"), move |_| {
                (200, list("VirtualServerList", items))
            }),
            expect(Method::GET, VM, move |_| answer(vm)),
        ];
        if self.vm.is_some() {
            let vmi = self.vmi.clone();
            let snapshots = self.snapshots.clone();
            script.push(expect(Method::GET, VMI, move |_| answer(vmi)));
            script.push(expect(
                Method::GET,
                &format!("{SNAPSHOTS}?&{SNAPSHOT_SELECTOR}"),
                move |_| (200, list("VirtualMachineSnapshotList", snapshots)),
            ));
        }
        let service = self.service.clone();
        script.push(expect(Method::GET, SERVICE, move |_| answer(service)));
        if let Some(secret) = self.tenant_secret.clone() {
            script.push(expect(
                Method::GET,
                "/api/v1/namespaces/muni-talsi/secrets/web-user-data",
                move |_| answer(secret),
            ));
        }
        // Only while a restore is asked for or running.
        if let Some(active) = restore::active_restore(server) {
            let backup = self.backup.clone();
            script.push(expect(
                Method::GET,
                &format!("{SNAPSHOTS}/{}", active.request.backup),
                move |_| answer(backup),
            ));
            let ours = self.kubevirt_restore.clone();
            script.push(expect(
                Method::GET,
                &format!("{RESTORES}/{}", active.name),
                move |_| answer(ours.clone()),
            ));
            if self.kubevirt_restore.is_none() && !active.started {
                let restores = self.restores.clone();
                script.push(expect(Method::GET, &format!("{RESTORES}?"), move |_| {
                    (200, list("VirtualMachineRestoreList", restores))
                }));
            }
        }
        script
    }
}

/// The VM as KubeVirt shows it: what the operator builds, plus a status.
fn live_vm(server: &VirtualServer, printable: &str) -> Value {
    let vm = build::virtual_machine(server, &image_object(), &Quantity("20Gi".into()))
        .expect("VM builds");
    let mut vm = serde_json::to_value(vm).expect("VM JSON");
    vm["metadata"]["uid"] = json!("uid-vm");
    vm["status"] = json!({
        "printableStatus": printable,
        "ready": printable == "Running",
        "created": printable == "Running"
    });
    vm
}

/// A running instance with `cores` vCPUs and `memory` guest memory.
fn running_vmi(uid: &str, cores: u32, memory: &str) -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {
            "name": "web", "namespace": "muni-talsi", "uid": uid,
            "labels": { "novads.io/virtual-server": "web" }
        },
        "spec": { "domain": { "cpu": { "cores": cores, "sockets": 1, "threads": 1 }, "memory": { "guest": memory }, "devices": {} } },
        "status": {
            "phase": "Running", "nodeName": "node-a",
            "interfaces": [{ "name": "default", "ipAddress": "10.244.1.17", "ipAddresses": ["10.244.1.17"] }],
            "conditions": [{ "type": "Ready", "status": "True" }]
        }
    })
}

/// A scheduled snapshot taken at `time`, ready or failed.
fn snapshot(server: &VirtualServer, time: &str, ready: bool) -> Value {
    let mut snapshot =
        serde_json::to_value(build::snapshot(server, at(time)).expect("snapshot builds"))
            .expect("snapshot JSON");
    snapshot["metadata"]["creationTimestamp"] = json!(time);
    snapshot["status"] = json!({
        "readyToUse": ready, "creationTime": time,
        "phase": if ready { "Succeeded" } else { "InProgress" }
    });
    snapshot
}

/// The server with the status the controller computes for `world` — as after a converged
/// reconcile, so that the next one writes nothing.
fn converged(server: &VirtualServer, world: &World) -> VirtualServer {
    let vm: Option<VirtualMachine> = world
        .vm
        .clone()
        .map(|v| serde_json::from_value(v).expect("vm"));
    let vmi: Option<VirtualMachineInstance> = world
        .vmi
        .clone()
        .map(|v| serde_json::from_value(v).expect("vmi"));
    let snapshots: Vec<VirtualMachineSnapshot> = world
        .snapshots
        .iter()
        .map(|s| serde_json::from_value(s.clone()).expect("snapshot"))
        .collect();
    let service = world
        .service
        .clone()
        .map(|s| serde_json::from_value(s).expect("service"));
    let observed = Observed {
        vm: vm.as_ref(),
        vmi: vmi.as_ref(),
        snapshots: &snapshots,
        service: service.as_ref(),
    };
    let mut converged = server.clone();
    converged.status = Some(status::next_status(server, &observed, &[], at(NOW)));
    converged
}

/// Server-side apply of `expected` at `path`; answers with `live` (the object as the API
/// server holds it, status included) carrying the applied spec, else the body itself.
fn apply(path: &str, expected: Value, live: Option<Value>) -> Expect {
    expect(Method::PATCH, &format!("{path}{APPLY}"), move |body| {
        assert_eq!(body, expected, "apply body of {}", expected["kind"]);
        let mut response = live.unwrap_or_else(|| json!({}));
        merge(&mut response, &body);
        (200, response)
    })
}

fn cloud_init_apply(server: &VirtualServer, user_data: Option<&str>) -> Expect {
    let secret = build::cloud_init_secret(server, user_data).expect("secret builds");
    apply(
        CLOUD_INIT,
        serde_json::to_value(secret).expect("JSON"),
        None,
    )
}

fn vm_apply(
    server: &VirtualServer,
    live: Option<Value>,
    check: impl FnOnce(&Value) + Send + 'static,
) -> Expect {
    let vm = build::virtual_machine(server, &image_object(), &Quantity("20Gi".into()))
        .expect("VM builds");
    let expected = serde_json::to_value(vm).expect("JSON");
    check(&expected);
    apply(VM, expected, live)
}

fn event(reason: &'static str, type_: &'static str) -> Expect {
    expect(Method::POST, EVENTS, move |body| {
        assert_eq!(
            (body["reason"].as_str(), body["type"].as_str()),
            (Some(reason), Some(type_)),
            "{body}"
        );
        assert_eq!(body["regarding"]["kind"], "VirtualServer");
        assert_eq!(body["regarding"]["name"], "web");
        assert_eq!(body["regarding"]["namespace"], "muni-talsi");
        (201, body)
    })
}

/// The status apply; the API server answers with the object carrying the applied status
/// (the operator is its only writer, so the applied status is the whole status).
fn status_patch(server: &VirtualServer, check: impl FnOnce(&Value) + Send + 'static) -> Expect {
    let mut object = serde_json::to_value(server).expect("server JSON");
    expect(
        Method::PATCH,
        &format!("{SERVER}/status{APPLY}"),
        move |body| {
            assert_eq!(
                (body["apiVersion"].as_str(), body["kind"].as_str()),
                (Some("novads.io/v1alpha1"), Some("VirtualServer"))
            );
            check(&body["status"]);
            object["status"] = body["status"].clone();
            (200, object)
        },
    )
}

fn reason_of(status: &Value, type_: &str) -> (String, String) {
    let c = condition(status, type_);
    (
        c["status"].as_str().unwrap_or_default().to_string(),
        c["reason"].as_str().unwrap_or_default().to_string(),
    )
}

fn pair(status: &str, reason: &str) -> (String, String) {
    (status.to_string(), reason.to_string())
}

// ---------------------------------------------------------------------------------------------
// Lifecycle
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn adds_the_finalizer_first_guarded_by_resource_version_then_builds() {
    let with_finalizer = web(basic_spec());
    let mut server = with_finalizer.clone();
    server.metadata.finalizers = None;
    let mut script = vec![expect(Method::PATCH, &format!("{SERVER}?"), |body| {
        assert_eq!(
            body,
            json!({ "metadata": { "finalizers": [FINALIZER], "resourceVersion": "10" } })
        );
        let mut object = serde_json::to_value(web(basic_spec())).expect("JSON");
        object["metadata"]["finalizers"] = body["metadata"]["finalizers"].clone();
        (200, object)
    })];
    // The same reconcile goes on with the server as patched: nothing is built before the
    // finalizer is in place, and no extra reconcile is needed after it.
    let world = World::new();
    script.extend(world.reads(&with_finalizer));
    script.push(cloud_init_apply(&with_finalizer, None));
    script.push(vm_apply(&with_finalizer, None, |_| {}));
    script.push(event("Created", "Normal"));
    script.push(status_patch(&with_finalizer, |status| {
        assert_eq!(status["phase"], "Pending");
    }));
    let mut harness = Harness::new();
    let result = harness.run(&server, script).await;
    assert_eq!(result.expect("ok"), Action::requeue(RESYNC));

    // A conflicting change makes the patch fail: nothing else is done.
    let script = vec![expect(Method::PATCH, &format!("{SERVER}?"), |_| {
        api_error(409, "Conflict")
    })];
    let mut harness = Harness::new();
    assert!(harness.run(&server, script).await.is_err());
}

fn exposed_spec() -> Value {
    json!({
        "image": "debian-12", "cpu": 2, "memory": "4Gi",
        "expose": { "serviceType": "ClusterIP", "ports": [{ "port": 443, "allowedSources": ["10.20.0.0/16"] }] }
    })
}

#[tokio::test]
async fn a_new_server_gets_its_secret_vm_service_and_policy_then_provisions() {
    let server = web(exposed_spec());
    let world = World::new();
    let mut script = world.reads(&server);
    script.push(cloud_init_apply(&server, None));
    script.push(vm_apply(&server, None, |vm| {
        assert_eq!(vm["spec"]["runStrategy"], "Always");
        assert_eq!(vm["metadata"]["ownerReferences"][0]["uid"], "uid-web");
    }));
    let service = build::service(&server).expect("builds").expect("exposed");
    let mut live_service = serde_json::to_value(&service).expect("JSON");
    live_service["spec"]["clusterIP"] = json!("10.96.0.10");
    script.push(apply(
        SERVICE,
        serde_json::to_value(&service).expect("JSON"),
        Some(live_service.clone()),
    ));
    let policy = build::network_policy(&server)
        .expect("builds")
        .expect("exposed");
    script.push(apply(
        POLICY,
        serde_json::to_value(policy).expect("JSON"),
        None,
    ));
    script.push(event("Created", "Normal"));
    script.push(status_patch(&server, |status| {
        // KubeVirt has not looked at the new VM yet.
        assert_eq!(status["phase"], "Pending");
        assert_eq!(reason_of(status, "Progressing"), pair("True", "Creating"));
        assert_eq!(reason_of(status, "Degraded"), pair("False", "AsExpected"));
        assert_eq!(status["externalAddress"], "10.96.0.10");
        assert_eq!(status["observedGeneration"], 3);
    }));
    let mut harness = Harness::new();
    let result = harness.run(&server, script).await;
    assert_eq!(result.expect("ok"), Action::requeue(RESYNC));

    // KubeVirt starts provisioning the disks: the next reconcile reports it, without events.
    let mut world = World::new();
    world.vm = Some(live_vm(&server, "Provisioning"));
    world.service = Some(live_service);
    let mut script = world.reads(&server);
    script.push(cloud_init_apply(&server, None));
    script.push(vm_apply(&server, world.vm.clone(), |_| {}));
    script.push(apply(
        SERVICE,
        serde_json::to_value(&service).expect("JSON"),
        world.service.clone(),
    ));
    let policy = build::network_policy(&server)
        .expect("builds")
        .expect("exposed");
    script.push(apply(
        POLICY,
        serde_json::to_value(policy).expect("JSON"),
        None,
    ));
    script.push(status_patch(&server, |status| {
        assert_eq!(status["phase"], "Provisioning");
        assert_eq!(reason_of(status, "Ready"), pair("False", "Provisioning"));
    }));
    let result = harness.run(&server, script).await;
    assert_eq!(result.expect("ok"), Action::requeue(RESYNC));
}

/// The reads and applies of a converged, unexposed server, then `tail`.
fn steady(server: &VirtualServer, world: &World, tail: Vec<Expect>) -> Vec<Expect> {
    let mut script = world.reads(server);
    script.push(cloud_init_apply(server, None));
    script.push(vm_apply(server, world.vm.clone(), |_| {}));
    script.extend(tail);
    script
}

fn running_world(server: &VirtualServer) -> World {
    let mut world = World::new();
    world.vm = Some(live_vm(server, "Running"));
    world.vmi = Some(running_vmi("uid-vmi-1", 2, "4Gi"));
    world
}

#[tokio::test]
async fn a_converged_server_is_reapplied_without_status_write_or_event() {
    let server = web(basic_spec());
    let world = running_world(&server);
    let server = converged(&server, &world);
    assert_eq!(
        server.status.as_ref().and_then(|s| s.phase),
        Some(novads_crds::Phase::Running)
    );
    let mut harness = Harness::new();
    let result = harness.run(&server, steady(&server, &world, vec![])).await;
    assert_eq!(result.expect("ok"), Action::requeue(RESYNC));
}

#[tokio::test]
async fn stopping_and_starting_reach_the_vm_run_strategy() {
    let running = web(basic_spec());
    let world = running_world(&running);
    let running = converged(&running, &world);

    // Halted: the VM is told, the status follows what KubeVirt reports.
    let mut halted = running.clone();
    halted.spec.run_strategy = novads_crds::RunStrategy::Halted;
    let mut script = world.reads(&halted);
    script.push(cloud_init_apply(&halted, None));
    script.push(vm_apply(&halted, world.vm.clone(), |vm| {
        assert_eq!(vm["spec"]["runStrategy"], "Halted");
    }));
    let mut harness = Harness::new();
    harness.run(&halted, script).await.expect("ok");

    // KubeVirt stopped it: phase Stopped, with an event.
    let mut stopped_world = World::new();
    stopped_world.vm = Some(live_vm(&halted, "Stopped"));
    let mut script = stopped_world.reads(&halted);
    script.push(cloud_init_apply(&halted, None));
    script.push(vm_apply(&halted, stopped_world.vm.clone(), |_| {}));
    script.push(status_patch(&halted, |status| {
        assert_eq!(status["phase"], "Stopped");
        // Left out of the apply, so the API server removes the address and node the
        // operator applied before.
        assert_eq!(status.get("ip"), None, "the address is cleared: {status}");
        assert_eq!(status.get("node"), None);
    }));
    script.push(event("Stopped", "Normal"));
    harness.run(&halted, script).await.expect("ok");

    // Running again: `Always`.
    let stopped = converged(&halted, &stopped_world);
    let mut started = stopped.clone();
    started.spec.run_strategy = novads_crds::RunStrategy::Running;
    let mut script = stopped_world.reads(&started);
    script.push(cloud_init_apply(&started, None));
    script.push(vm_apply(&started, stopped_world.vm.clone(), |vm| {
        assert_eq!(vm["spec"]["runStrategy"], "Always");
    }));
    script.push(status_patch(&started, |status| {
        assert_eq!(status["phase"], "Stopped");
        let message = condition(status, "Ready")["message"]
            .as_str()
            .unwrap_or_default();
        assert!(message.contains("KubeVirt starts it again"), "{message}");
    }));
    harness.run(&started, script).await.expect("ok");
}

#[tokio::test]
async fn a_halted_server_stays_stopped_across_reconciles() {
    let mut halted = web(basic_spec());
    halted.spec.run_strategy = novads_crds::RunStrategy::Halted;
    let mut world = World::new();
    world.vm = Some(live_vm(&halted, "Stopped"));
    let halted = converged(&halted, &world);
    assert_eq!(
        halted.status.as_ref().and_then(|s| s.phase),
        Some(novads_crds::Phase::Stopped)
    );
    // A start made behind the VirtualServer's back (`virtctl start` rewrites the VM's
    // runStrategy to `Always`) is what the next apply overrules.
    let mut started_by_hand = world.clone();
    if let Some(vm) = started_by_hand.vm.as_mut() {
        vm["spec"]["runStrategy"] = json!("Always");
    }

    let mut harness = Harness::new();
    for world in [&world, &started_by_hand, &world] {
        // Every reconcile applies `Halted` and nothing else: no start or restart request
        // (the script fails on any request beyond it), no status write.
        let mut script = world.reads(&halted);
        script.push(cloud_init_apply(&halted, None));
        script.push(vm_apply(&halted, world.vm.clone(), |vm| {
            assert_eq!(vm["spec"]["runStrategy"], "Halted");
        }));
        let result = harness.run(&halted, script).await;
        assert_eq!(result.expect("ok"), Action::requeue(RESYNC));
    }

    // A restart token while halted is only marked handled: it does not start the server.
    let mut token = halted.clone();
    token.spec.restart = Some("2025-06-02T09:59".into());
    let mut script = world.reads(&token);
    script.push(cloud_init_apply(&token, None));
    script.push(vm_apply(&token, world.vm.clone(), |vm| {
        assert_eq!(vm["spec"]["runStrategy"], "Halted");
    }));
    script.push(status_patch(&token, |status| {
        assert_eq!(status["restartHandled"], "2025-06-02T09:59");
        assert_eq!(status["phase"], "Stopped");
    }));
    harness.run(&token, script).await.expect("ok");
}

#[test]
fn municipality_roles_leave_power_state_to_the_virtual_server() {
    use support::rbac::municipality_role_allows;
    let subresources = "subresources.kubevirt.io";
    for role in ["novads-municipality-admin", "novads-municipality-viewer"] {
        for power in [
            "virtualmachines/start",
            "virtualmachines/stop",
            "virtualmachines/restart",
            "virtualmachineinstances/pause",
            "virtualmachineinstances/unpause",
        ] {
            for verb in ["update", "patch", "create"] {
                assert!(
                    !municipality_role_allows(role, subresources, power, verb),
                    "{role} may {verb} {power}: two sources of truth for power state"
                );
            }
        }
        // Power goes through the VirtualServer, which the admin edits.
        assert_eq!(
            municipality_role_allows(role, "novads.io", "virtualservers", "patch"),
            role == "novads-municipality-admin"
        );
    }
    for access in [
        "virtualmachineinstances/console",
        "virtualmachineinstances/vnc",
    ] {
        assert!(municipality_role_allows(
            "novads-municipality-admin",
            subresources,
            access,
            "get"
        ));
    }
}

#[tokio::test]
async fn removing_expose_deletes_the_service_and_its_policy() {
    let server = web(basic_spec());
    let mut world = running_world(&server);
    let server = converged(&server, &world);
    let exposed = web(exposed_spec());
    world.service = Some(
        serde_json::to_value(build::service(&exposed).expect("builds").expect("exposed"))
            .expect("JSON"),
    );
    let script = steady(
        &server,
        &world,
        vec![delete(POLICY, false), delete(SERVICE, false)],
    );
    let mut harness = Harness::new();
    let result = harness.run(&server, script).await;
    assert_eq!(result.expect("ok"), Action::requeue(RESYNC));
}

// ---------------------------------------------------------------------------------------------
// Restarts
// ---------------------------------------------------------------------------------------------

fn restart_call() -> Expect {
    expect(Method::PUT, RESTART, |body| {
        assert_eq!(body, json!({}));
        (202, json!({}))
    })
}

#[tokio::test]
async fn a_restart_token_restarts_once_and_is_recorded() {
    let server = web(basic_spec());
    let world = running_world(&server);
    let mut server = converged(&server, &world);
    server.spec.restart = Some("2025-06-02T09:59".into());

    let script = steady(
        &server,
        &world,
        vec![
            restart_call(),
            event("Restarted", "Normal"),
            status_patch(&server, |status| {
                assert_eq!(status["restartHandled"], "2025-06-02T09:59");
            }),
        ],
    );
    let mut harness = Harness::new();
    harness.run(&server, script).await.expect("ok");

    // A watch event may bring the restart (the instance going away) before the cache has the
    // status: the same token must not restart again.
    let script = steady(
        &server,
        &world,
        vec![status_patch(&server, |status| {
            assert_eq!(status["restartHandled"], "2025-06-02T09:59");
        })],
    );
    harness.run(&server, script).await.expect("ok");

    // With the status recorded, the same token is a no-op even for a fresh replica.
    let mut handled = server.clone();
    if let Some(status) = handled.status.as_mut() {
        status.restart_handled = Some("2025-06-02T09:59".into());
    }
    let mut fresh = Harness::new();
    let result = fresh.run(&handled, steady(&handled, &world, vec![])).await;
    assert_eq!(result.expect("ok"), Action::requeue(RESYNC));
}

#[tokio::test]
async fn a_resize_waits_for_a_restart_without_token_or_window() {
    let mut server = web(basic_spec());
    let world = running_world(&server);
    server = converged(&server, &world);
    server.spec.cpu = 4;
    server.metadata.generation = Some(4);
    let script = steady(
        &server,
        &world,
        vec![status_patch(&server, |status| {
            assert_eq!(
                reason_of(status, "RestartRequired"),
                pair("True", "ResourcesChanged")
            );
            let message = condition(status, "RestartRequired")["message"]
                .as_str()
                .unwrap_or_default();
            assert!(message.contains("cpu 2 → 4"), "{message}");
            assert_eq!(status["phase"], "Running");
        })],
    );
    let mut harness = Harness::new();
    let result = harness.run(&server, script).await;
    assert_eq!(
        result.expect("ok"),
        Action::requeue(RESYNC),
        "no restart call"
    );
}

#[tokio::test]
async fn a_resize_restarts_in_the_maintenance_window_only() {
    let mut server = web(basic_spec());
    let world = running_world(&server);
    server = converged(&server, &world);
    server.spec.cpu = 4;
    // Opens at 10:05 (NOW is 10:00): wait for it.
    server.spec.maintenance_window = Some(novads_crds::MaintenanceWindow {
        days: vec![],
        start: "10:05".into(),
        duration_minutes: 60,
    });
    let script = steady(
        &server,
        &world,
        vec![status_patch(&server, |status| {
            assert_eq!(
                reason_of(status, "RestartRequired"),
                pair("True", "ResourcesChanged")
            );
        })],
    );
    let mut harness = Harness::new();
    let result = harness.run(&server, script).await;
    assert_eq!(
        result.expect("ok"),
        Action::requeue(Duration::from_secs(5 * 60))
    );

    // In the window: restarted once.
    let mut harness = Harness::at("2025-06-02T10:06:00Z");
    let script = steady(
        &server,
        &world,
        vec![
            restart_call(),
            event("Restarted", "Normal"),
            status_patch(&server, |_| {}),
        ],
    );
    harness.run(&server, script).await.expect("ok");
    // The old instance is still reported running: not restarted a second time.
    let script = steady(&server, &world, vec![status_patch(&server, |_| {})]);
    harness.run(&server, script).await.expect("ok");
}

// ---------------------------------------------------------------------------------------------
// Admission
// ---------------------------------------------------------------------------------------------

/// The reads of a refused new server, the status and one Warning per refusal.
async fn assert_refused(
    server: &VirtualServer,
    world: &World,
    reason: &'static str,
    message: &'static str,
) {
    let mut script = world.reads(server);
    script.push(status_patch(server, move |status| {
        assert_eq!(status["phase"], "Pending");
        assert_eq!(reason_of(status, "Degraded"), pair("True", reason));
        assert_eq!(reason_of(status, "Ready"), pair("False", reason));
        let text = condition(status, "Degraded")["message"]
            .as_str()
            .unwrap_or_default();
        assert!(text.contains(message), "{text}");
    }));
    script.push(event(reason, "Warning"));
    let mut harness = Harness::new();
    let result = harness.run(server, script).await;
    assert_eq!(result.expect("ok"), Action::requeue(REFUSED_RECHECK));
}

#[tokio::test]
async fn over_quota_is_refused_without_any_vm_request_and_warned_once() {
    let server = web(basic_spec());
    let mut world = World::new();
    world.municipality = Some(municipality(1));
    let mut older = serde_json::to_value(web(basic_spec())).expect("JSON");
    older["metadata"]["name"] = json!("db");
    older["metadata"]["uid"] = json!("uid-db");
    older["metadata"]["creationTimestamp"] = json!("2025-04-01T00:00:00Z");
    world.siblings = vec![older];
    assert_refused(
        &server,
        &world,
        "QuotaExceeded",
        "servers: 2 requested of 1 allowed",
    )
    .await;

    // Looked at again a few minutes later, with the refusal in its status: the same refusal
    // is neither written again nor warned about again.
    let (status_tx, status_rx) = std::sync::mpsc::channel();
    let mut first = world.reads(&server);
    first.push(status_patch(&server, move |status| {
        status_tx.send(status.clone()).expect("send");
    }));
    first.push(event("QuotaExceeded", "Warning"));
    let mut harness = Harness::new();
    harness.run(&server, first).await.expect("ok");
    let mut refused = server.clone();
    refused.status =
        Some(serde_json::from_value(status_rx.recv().expect("status")).expect("status"));
    let result = harness.run(&refused, world.reads(&refused)).await;
    assert_eq!(result.expect("ok"), Action::requeue(REFUSED_RECHECK));
}

#[tokio::test]
async fn an_unapproved_image_is_refused() {
    let server = web(basic_spec());
    let mut world = World::new();
    let mut unapproved = image();
    unapproved["spec"]["approved"] = json!(false);
    world.image = Some(unapproved);
    assert_refused(&server, &world, "ImageNotApproved", "is not approved").await;
}

#[tokio::test]
async fn an_image_out_of_support_is_refused() {
    let server = web(basic_spec());
    let mut world = World::new();
    let mut old = image();
    old["spec"]["supportEnd"] = json!("2024-06-30");
    world.image = Some(old);
    assert_refused(&server, &world, "ImageOutOfSupport", "ended on 2024-06-30").await;
}

#[tokio::test]
async fn a_missing_image_is_refused() {
    let server = web(basic_spec());
    let mut world = World::new();
    world.image = None;
    assert_refused(&server, &world, "ImageNotFound", "does not exist").await;
}

#[tokio::test]
async fn a_refused_change_leaves_the_existing_vm_alone() {
    let server = web(basic_spec());
    let world = running_world(&server);
    let mut server = converged(&server, &world);
    // Far beyond the municipality's 16 CPUs: refused, but the running VM is not touched.
    server.spec.cpu = 40;
    let mut script = world.reads(&server);
    script.push(status_patch(&server, |status| {
        assert_eq!(status["phase"], "Running");
        assert_eq!(reason_of(status, "Degraded"), pair("True", "QuotaExceeded"));
    }));
    script.push(event("QuotaExceeded", "Warning"));
    let mut harness = Harness::new();
    let result = harness.run(&server, script).await;
    assert_eq!(result.expect("ok"), Action::requeue(REFUSED_RECHECK));
}

#[tokio::test]
async fn a_deleted_image_freezes_a_running_server_without_touching_it() {
    let server = web(basic_spec());
    let mut world = running_world(&server);
    let mut server = converged(&server, &world);
    world.image = None;
    // A change arrives after the image is gone: it waits, the VM is not applied.
    server.spec.cpu = 4;
    let mut script = world.reads(&server);
    script.push(status_patch(&server, |status| {
        assert_eq!(status["phase"], "Running");
        assert_eq!(reason_of(status, "Degraded"), pair("True", "ImageNotFound"));
        let text = condition(status, "Degraded")["message"]
            .as_str()
            .unwrap_or_default();
        assert!(text.contains("no longer exists"), "{text}");
    }));
    script.push(event("ImageNotFound", "Warning"));
    let mut harness = Harness::new();
    let result = harness.run(&server, script).await;
    assert_eq!(result.expect("ok"), Action::requeue(REFUSED_RECHECK));
}

#[tokio::test]
async fn a_grown_disk_expands_its_claim() {
    let server = web(basic_spec());
    let world = running_world(&server);
    let mut grown = converged(&server, &world);
    grown.spec.disks.system_size = Some(Quantity("40Gi".into()));
    let mut script = world.reads(&grown);
    script.push(cloud_init_apply(&grown, None));
    let vm = build::virtual_machine(&grown, &image_object(), &Quantity("40Gi".into()))
        .expect("VM builds");
    script.push(apply(
        VM,
        serde_json::to_value(vm).expect("JSON"),
        world.vm.clone(),
    ));
    script.push(expect(
        Method::PATCH,
        &format!("{CLAIMS}/web-system?&fieldManager=novads-operator"),
        |body| {
            assert_eq!(
                body,
                json!({"spec": {"resources": {"requests": {"storage": "40Gi"}}}})
            );
            (200, body)
        },
    ));
    script.push(event("DiskGrown", "Normal"));
    let mut harness = Harness::new();
    harness.run(&grown, script).await.expect("ok");
}

#[tokio::test]
async fn a_claim_that_cannot_grow_is_warned_about_and_the_rest_goes_on() {
    let server = web(basic_spec());
    let world = running_world(&server);
    let mut grown = converged(&server, &world);
    grown.spec.disks.system_size = Some(Quantity("40Gi".into()));
    let mut script = world.reads(&grown);
    script.push(cloud_init_apply(&grown, None));
    let vm = build::virtual_machine(&grown, &image_object(), &Quantity("40Gi".into()))
        .expect("VM builds");
    script.push(apply(
        VM,
        serde_json::to_value(vm).expect("JSON"),
        world.vm.clone(),
    ));
    script.push(expect(
        Method::PATCH,
        &format!("{CLAIMS}/web-system?&fieldManager=novads-operator"),
        |_| api_error(403, "Forbidden"),
    ));
    script.push(event("DiskNotGrown", "Warning"));
    let mut harness = Harness::new();
    harness.run(&grown, script).await.expect("ok");
}

#[test]
fn only_disks_that_grew_are_expanded() {
    let server = web(basic_spec());
    let live: VirtualMachine =
        build::virtual_machine(&server, &image_object(), &Quantity("20Gi".into()))
            .expect("VM builds");
    let same = live.clone();
    assert_eq!(controller::disk_growth(Some(&live), &same), Vec::new());
    assert_eq!(controller::disk_growth(None, &same), Vec::new());
    let mut bigger = server.clone();
    bigger.spec.disks.system_size = Some(Quantity("21474836481".into()));
    let wanted = build::virtual_machine(&bigger, &image_object(), &Quantity("21474836481".into()))
        .expect("VM builds");
    let growth = controller::disk_growth(Some(&live), &wanted);
    assert_eq!(growth.len(), 1, "{growth:?}");
    assert_eq!(growth[0].claim, "web-system");
    // 20Gi written in bytes is the same size: nothing to do.
    let equal = build::virtual_machine(&bigger, &image_object(), &Quantity("21474836480".into()))
        .expect("VM builds");
    assert_eq!(controller::disk_growth(Some(&live), &equal), Vec::new());
}

#[tokio::test]
async fn a_refused_server_keeps_its_backups() {
    let server = web(backup_spec("Retain"));
    let mut world = running_world(&server);
    world.snapshots = vec![snapshot(&server, "2025-06-01T02:00:00Z", true)];
    let mut server = converged(&server, &world);
    server.spec.cpu = 40;
    let mut script = world.reads(&server);
    script.push(status_patch(&server, |status| {
        assert_eq!(reason_of(status, "Degraded"), pair("True", "QuotaExceeded"));
    }));
    script.push(event("QuotaExceeded", "Warning"));
    // The VM is not touched, but tonight's snapshot is taken all the same.
    script.push(expect(Method::POST, &format!("{SNAPSHOTS}?"), |body| {
        assert_eq!(body["metadata"]["name"], "web-20250602-0200");
        (201, body)
    }));
    script.push(event("BackupStarted", "Normal"));
    let mut harness = Harness::new();
    let result = harness.run(&server, script).await;
    assert_eq!(result.expect("ok"), Action::requeue(REFUSED_RECHECK));
}

#[tokio::test]
async fn a_cloud_init_secret_of_another_namespace_is_refused_unread() {
    let server = web(json!({
        "image": "debian-12", "cpu": 2, "memory": "4Gi",
        "cloudInit": { "secretRef": { "name": "stolen", "namespace": "muni-ventspils" } }
    }));
    // No GET of the foreign Secret appears in the reads.
    assert_refused(&server, &World::new(), "ForeignSecret", "muni-ventspils").await;
}

#[tokio::test]
async fn tenant_user_data_from_the_own_namespace_goes_into_the_cloud_init_secret() {
    let server = web(json!({
        "image": "debian-12", "cpu": 2, "memory": "4Gi",
        "cloudInit": { "secretRef": { "name": "web-user-data" } }
    }));
    let user_data = "#cloud-config\npackages: [nginx]\n";
    let tenant = Secret {
        data: Some(BTreeMap::from([(
            "userdata".to_string(),
            ByteString(user_data.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    };
    let mut world = World::new();
    world.tenant_secret = Some(Some(serde_json::to_value(tenant).expect("JSON")));
    let mut script = world.reads(&server);
    script.push(cloud_init_apply(&server, Some(user_data)));
    script.push(vm_apply(&server, None, |_| {}));
    script.push(event("Created", "Normal"));
    script.push(status_patch(&server, |_| {}));
    let mut harness = Harness::new();
    harness.run(&server, script).await.expect("ok");

    // A missing Secret is a refusal, not an error loop.
    let mut world = World::new();
    world.tenant_secret = Some(None);
    assert_refused(&server, &world, "CloudInitSecretMissing", "does not exist").await;

    // Bytes that are not text (gzip, say) are refused rather than mangled.
    let binary = Secret {
        data: Some(BTreeMap::from([(
            "userdata".to_string(),
            ByteString(vec![0x1f, 0x8b, 0x08, 0x00, 0xff]),
        )])),
        ..Secret::default()
    };
    let mut world = World::new();
    world.tenant_secret = Some(Some(serde_json::to_value(binary).expect("JSON")));
    assert_refused(&server, &world, "InvalidSpec", "not UTF-8 text").await;
}

#[tokio::test]
async fn a_spec_the_builders_refuse_is_degraded_and_backed_off() {
    // Admission lets a data disk named like the system disk through to the builder.
    let server = web(json!({
        "image": "debian-12", "cpu": 2, "memory": "4Gi",
        "disks": { "data": [{ "name": "system", "size": "10Gi" }] }
    }));
    let mut script = World::new().reads(&server);
    script.push(status_patch(&server, |status| {
        assert_eq!(reason_of(status, "Degraded"), pair("True", "InvalidSpec"));
    }));
    script.push(event("InvalidSpec", "Warning"));
    let mut harness = Harness::new();
    let error = harness.run(&server, script).await.expect_err("invalid");
    assert!(
        matches!(error, Error::InvalidSpec(ref m) if m.contains("reserved")),
        "{error}"
    );
    assert_eq!(error.metric_label(), "invalid_spec");
    let action = controller::error_policy(Arc::new(server), &error, harness.ctx.clone());
    assert_eq!(action, Action::requeue(Duration::from_secs(5)));
}

// ---------------------------------------------------------------------------------------------
// Backups
// ---------------------------------------------------------------------------------------------

fn backup_spec(on_delete: &str) -> Value {
    json!({
        "image": "debian-12", "cpu": 2, "memory": "4Gi",
        "backup": { "schedule": "0 2 * * *", "retention": 2, "onDelete": on_delete }
    })
}

#[tokio::test]
async fn a_due_backup_is_taken_and_the_oldest_beyond_retention_pruned() {
    let server = web(backup_spec("Retain"));
    let mut world = running_world(&server);
    world.snapshots = vec![
        snapshot(&server, "2025-05-30T02:00:00Z", true),
        snapshot(&server, "2025-05-31T02:00:00Z", true),
        snapshot(&server, "2025-06-01T02:00:00Z", true),
    ];
    let server = converged(&server, &world);
    let expected =
        serde_json::to_value(build::snapshot(&server, at("2025-06-02T02:00:00Z")).expect("builds"))
            .expect("JSON");
    let script = steady(
        &server,
        &world,
        vec![
            expect(Method::POST, &format!("{SNAPSHOTS}?"), move |body| {
                assert_eq!(body, expected);
                assert_eq!(body["metadata"]["name"], "web-20250602-0200");
                assert_eq!(body["metadata"].get("ownerReferences"), None, "retained");
                let mut created = body;
                created["metadata"]["creationTimestamp"] = json!(NOW);
                (201, created)
            }),
            event("BackupStarted", "Normal"),
            expect(
                Method::DELETE,
                &format!("{SNAPSHOTS}/web-20250530-0200?"),
                |body| {
                    assert_eq!(body["propagationPolicy"], "Background");
                    deleted()
                },
            ),
            event("BackupPruned", "Normal"),
            // The status lists the backup just taken and no longer the pruned one, without
            // waiting for their watch events.
            status_patch(&server, |status| {
                let names: Vec<&str> = status["backups"]
                    .as_array()
                    .expect("backups")
                    .iter()
                    .filter_map(|b| b["name"].as_str())
                    .collect();
                assert_eq!(
                    names,
                    [
                        "web-20250602-0200",
                        "web-20250601-0200",
                        "web-20250531-0200"
                    ]
                );
                assert_eq!(status["backups"][0]["ready"], false);
            }),
        ],
    );
    let mut harness = Harness::new();
    let result = harness.run(&server, script).await;
    // The next slot is tomorrow 02:00, beyond the resync.
    assert_eq!(result.expect("ok"), Action::requeue(RESYNC));
}

#[tokio::test]
async fn a_backup_taken_already_is_not_taken_again_and_the_next_slot_is_awaited() {
    let server = web(backup_spec("Retain"));
    let mut world = running_world(&server);
    world.snapshots = vec![snapshot(&server, "2025-06-01T02:00:00Z", true)];
    let server = converged(&server, &world);
    // 01:55: the 02:00 slot is five minutes away.
    let mut harness = Harness::at("2025-06-02T01:55:00Z");
    let mut early = server.clone();
    early.status = converged(&server, &world).status;
    let result = harness.run(&early, steady(&early, &world, vec![])).await;
    assert_eq!(
        result.expect("ok"),
        Action::requeue(Duration::from_secs(5 * 60))
    );

    // 02:00 passed; an earlier reconcile created the snapshot already (409): fine.
    let mut harness = Harness::at("2025-06-02T02:01:00Z");
    let script = steady(
        &server,
        &world,
        vec![expect(Method::POST, &format!("{SNAPSHOTS}?"), |_| {
            api_error(409, "AlreadyExists")
        })],
    );
    let result = harness.run(&server, script).await;
    assert_eq!(result.expect("ok"), Action::requeue(RESYNC));
}

// ---------------------------------------------------------------------------------------------
// Deletion
// ---------------------------------------------------------------------------------------------

fn deleting(mut server: VirtualServer) -> VirtualServer {
    server.metadata.deletion_timestamp = serde_json::from_value(json!("2025-06-02T09:00:00Z")).ok();
    server
}

fn delete(path: &str, gone: bool) -> Expect {
    expect(Method::DELETE, &format!("{path}?"), move |body| {
        assert_eq!(body["propagationPolicy"], "Background");
        if gone { not_found() } else { deleted() }
    })
}

fn release_finalizer() -> Expect {
    expect(Method::PATCH, &format!("{SERVER}?"), |body| {
        assert_eq!(
            body,
            json!({ "metadata": { "finalizers": [], "resourceVersion": "10" } })
        );
        let mut object = serde_json::to_value(web(basic_spec())).expect("JSON");
        object["metadata"]["finalizers"] = json!([]);
        (200, object)
    })
}

#[tokio::test]
async fn deleting_with_retain_removes_the_server_but_keeps_its_snapshots() {
    let server = deleting(web(backup_spec("Retain")));
    let script = vec![
        delete(VM, false),
        delete(SERVICE, true),
        delete(POLICY, true),
        delete(CLOUD_INIT, false),
        release_finalizer(),
    ];
    let mut harness = Harness::new();
    let result = harness.run(&server, script).await;
    assert_eq!(result.expect("ok"), Action::await_change());
}

#[tokio::test]
async fn deleting_with_delete_also_deletes_the_snapshots() {
    let server = deleting(web(backup_spec("Delete")));
    let snapshots = vec![
        snapshot(&server, "2025-05-31T02:00:00Z", true),
        snapshot(&server, "2025-06-01T02:00:00Z", true),
    ];
    let script = vec![
        delete(VM, false),
        delete(SERVICE, true),
        delete(POLICY, true),
        delete(CLOUD_INIT, false),
        expect(
            Method::GET,
            &format!("{SNAPSHOTS}?&{SNAPSHOT_SELECTOR}"),
            move |_| (200, list("VirtualMachineSnapshotList", snapshots)),
        ),
        delete(&format!("{SNAPSHOTS}/web-20250531-0200"), false),
        delete(&format!("{SNAPSHOTS}/web-20250601-0200"), false),
        event("BackupsDeleted", "Normal"),
        release_finalizer(),
    ];
    let mut harness = Harness::new();
    let result = harness.run(&server, script).await;
    assert_eq!(result.expect("ok"), Action::await_change());
}

// ---------------------------------------------------------------------------------------------
// Failures
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_server_error_fails_the_reconcile_into_back_off_and_nothing_else() {
    let server = web(basic_spec());
    let script = vec![expect(Method::GET, NS, |_| api_error(500, "InternalError"))];
    let mut harness = Harness::new();
    let error = harness
        .run(&server, script)
        .await
        .expect_err("server error");
    assert_eq!(error.metric_label(), "api");
    let shared = Arc::new(server.clone());
    let delays: Vec<Action> = (0..8)
        .map(|_| controller::error_policy(shared.clone(), &error, harness.ctx.clone()))
        .collect();
    assert_eq!(delays[0], Action::requeue(Duration::from_secs(5)));
    assert_eq!(delays[1], Action::requeue(Duration::from_secs(10)));
    assert_eq!(
        delays[7],
        Action::requeue(Duration::from_secs(300)),
        "capped at 5 minutes"
    );

    // The next reconcile works, and a success resets the back-off.
    let world = running_world(&server);
    let converged = converged(&server, &world);
    harness
        .run(&converged, steady(&converged, &world, vec![]))
        .await
        .expect("ok");
    let again = controller::error_policy(shared, &error, harness.ctx.clone());
    assert_eq!(again, Action::requeue(Duration::from_secs(5)));
}

#[tokio::test]
async fn a_failing_apply_is_reported_as_an_event_and_backed_off() {
    let server = web(basic_spec());
    let world = running_world(&server);
    let server = converged(&server, &world);
    let mut script = world.reads(&server);
    script.push(cloud_init_apply(&server, None));
    script.push(expect(Method::PATCH, &format!("{VM}{APPLY}"), |_| {
        api_error(500, "InternalError")
    }));
    script.push(event("ApplyFailed", "Warning"));
    let mut harness = Harness::new();
    let error = harness.run(&server, script).await.expect_err("apply fails");
    assert_eq!(error.metric_label(), "api");
}

#[tokio::test]
async fn without_kubevirt_servers_are_told_so_and_nothing_is_built() {
    let server = web(basic_spec());
    let mut harness = Harness::with(
        |ctx| {
            ctx.with_kubevirt_unavailable("the cluster does not serve virtualmachines.kubevirt.io")
        },
        NOW,
    );
    let script = vec![
        status_patch(&server, |status| {
            assert_eq!(status["phase"], "Pending");
            assert_eq!(
                reason_of(status, "Ready"),
                pair("False", "KubeVirtUnavailable")
            );
            let message = condition(status, "Degraded")["message"]
                .as_str()
                .unwrap_or_default();
            assert!(message.contains("virtualmachines.kubevirt.io"), "{message}");
        }),
        event("KubeVirtUnavailable", "Warning"),
    ];
    let result = harness.run(&server, script).await;
    assert_eq!(result.expect("ok"), Action::requeue(KUBEVIRT_RECHECK));
}

// ---------------------------------------------------------------------------------------------
// The runtime without KubeVirt
// ---------------------------------------------------------------------------------------------

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/novads/leases/novads-operator";

#[derive(Default)]
struct Fake {
    kubevirt: bool,
    lease: Option<Value>,
    /// (method, uri, accept header, body) of every request, in order.
    log: Vec<(String, String, String, Value)>,
    open_watches: Vec<mock::SendResponse<Response<Body>>>,
}

impl Fake {
    fn answer(&mut self, method: &str, uri: &str, body: Value) -> Option<(u16, Value)> {
        let path = uri.split('?').next().unwrap_or_default();
        let kubevirt_api = path.starts_with("/apis/kubevirt.io/")
            || path.starts_with("/apis/snapshot.kubevirt.io/");
        Some(match (method, path) {
            ("GET", LEASE) => self
                .lease
                .clone()
                .map_or_else(|| api_error(404, "NotFound"), |l| (200, l)),
            ("POST", "/apis/coordination.k8s.io/v1/namespaces/novads/leases") | ("PUT", LEASE) => {
                let mut lease = body;
                lease["metadata"]["resourceVersion"] = json!(format!("{}", self.log.len()));
                self.lease = Some(lease.clone());
                (200, lease)
            }
            // Without KubeVirt, its groups are simply not served.
            _ if kubevirt_api && !self.kubevirt => api_error(404, "NotFound"),
            _ if uri.contains("watch=true") => return None,
            ("GET", "/apis/novads.io/v1alpha1/virtualservers") => (
                200,
                list(
                    "VirtualServerList",
                    vec![serde_json::to_value(web(basic_spec())).expect("JSON")],
                ),
            ),
            ("GET", "/apis/novads.io/v1alpha1/municipalities") => {
                let mut talsi = municipality(10);
                talsi["metadata"]["finalizers"] = json!(["novads.io/tenancy"]);
                (200, list("MunicipalityList", vec![talsi]))
            }
            // The tenancy's first request fails: its reconcile error shows in the metrics.
            ("GET", NS) => api_error(500, "InternalError"),
            ("PATCH", _) if path == format!("{SERVER}/status") => {
                let mut object = serde_json::to_value(web(basic_spec())).expect("JSON");
                object["status"] = body["status"].clone();
                (200, object)
            }
            ("POST", "/apis/events.k8s.io/v1/namespaces/muni-talsi/events")
            | ("POST", "/apis/events.k8s.io/v1/namespaces/default/events") => (201, body),
            // The security monitor's Reports and status.compliance.
            ("PATCH", _) if path.starts_with("/apis/openreports.io/") => (200, body),
            ("PATCH", "/apis/novads.io/v1alpha1/municipalities/talsi/status") => {
                let mut object = municipality(10);
                object["status"] = body["status"].clone();
                (200, object)
            }
            ("GET", _) => (
                200,
                json!({
                    "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
                    "metadata": { "resourceVersion": "300" }, "items": []
                }),
            ),
            other => panic!("unexpected request {other:?}"),
        })
    }
}

impl FakeApi for Fake {
    fn request(
        &mut self,
        method: &str,
        uri: &str,
        accept: &str,
        body: Value,
    ) -> Option<(u16, Value)> {
        self.log
            .push((method.into(), uri.into(), accept.into(), body.clone()));
        self.answer(method, uri, body)
    }

    fn hold(&mut self, open: mock::SendResponse<Response<Body>>) {
        self.open_watches.push(open);
    }
}

/// Runs the operator against `fake` until `done` holds for its metrics, then shuts it down.
async fn run_operator(
    fake: &Arc<Mutex<Fake>>,
    ready: impl Fn(&str) -> bool,
    metrics: impl Fn(&str) -> bool,
) -> (String, String) {
    let addr = free_port();
    let options = OperatorOptions {
        metrics_listen: addr,
        lease_namespace: "novads".into(),
        identity: Some("operator-0".into()),
        ..OperatorOptions::default()
    };
    let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let operator = tokio::spawn(run_with_client(fake_client(fake), options, async {
        let _ = shutdown_rx.await;
    }));
    let readyz = eventually(addr, "/readyz", |code, body| code == 200 && ready(body)).await;
    let text = eventually(addr, "/metrics", |_, body| metrics(body)).await;
    shutdown_tx.send(()).expect("operator running");
    tokio::time::timeout(Duration::from_secs(15), operator)
        .await
        .expect("stops in time")
        .expect("task")
        .expect("run succeeds");
    (readyz, text)
}

#[tokio::test]
async fn without_kubevirt_the_tenancy_runs_and_the_gap_is_reported() {
    let fake = Arc::new(Mutex::new(Fake::default()));
    let (readyz, metrics) = run_operator(
        &fake,
        |body| body.starts_with("ready"),
        |body| {
            body.contains(
                "novads_operator_reconcile_errors_total{controller=\"municipality\",error=\"api\"}",
            ) && body.contains("novads_operator_reconciles_total{controller=\"virtualserver\"} 1")
        },
    )
    .await;
    assert!(
        readyz.contains("virtual servers are not run")
            && readyz.contains("virtualmachines.kubevirt.io"),
        "{readyz}"
    );
    assert!(
        metrics.contains("novads_operator_kubevirt_available 0"),
        "{metrics}"
    );

    let fake = fake.lock().expect("fake");
    // The server was told, through its status.
    let status = fake
        .log
        .iter()
        .find(|(method, uri, _, _)| {
            method == "PATCH" && uri.starts_with(&format!("{SERVER}/status"))
        })
        .map(|(_, _, _, body)| body["status"].clone())
        .expect("the server's status was written");
    assert_eq!(
        reason_of(&status, "Ready"),
        pair("False", "KubeVirtUnavailable")
    );
    // And nothing of KubeVirt's was watched or written (the security monitor probes too).
    for (method, uri, _, _) in &fake.log {
        let kubevirt = uri.contains("kubevirt.io/");
        assert!(
            !kubevirt || (method == "GET" && uri.contains("limit=1")),
            "only the probe touches KubeVirt: {method} {uri}"
        );
    }
}

#[tokio::test]
async fn with_kubevirt_the_children_are_cached_by_label_and_namespaces_as_metadata() {
    let fake = Arc::new(Mutex::new(Fake {
        kubevirt: true,
        ..Fake::default()
    }));
    let (readyz, metrics) = run_operator(
        &fake,
        |body| body == "ready",
        |body| body.contains("novads_operator_kubevirt_available 1"),
    )
    .await;
    assert_eq!(readyz, "ready");
    assert!(metrics.contains("novads_operator_leader 1"), "{metrics}");
    let fake = fake.lock().expect("fake");
    for kind in [
        "/apis/kubevirt.io/v1/virtualmachines?",
        "/apis/kubevirt.io/v1/virtualmachineinstances?",
        "/apis/snapshot.kubevirt.io/v1beta1/virtualmachinesnapshots?",
        "/api/v1/services?",
        "/apis/networking.k8s.io/v1/networkpolicies?",
    ] {
        // The controller's watch, whole objects (a reconcile reads them from its cache),
        // only the servers' children.
        assert!(
            fake.log
                .iter()
                .any(|(_, uri, accept, _)| uri.starts_with(kind)
                    && uri.contains("labelSelector=novads.io%2Fvirtual-server")
                    && !accept.contains("as=PartialObjectMetadata")),
            "no watch of {kind} by the server label"
        );
    }
    // Namespaces: every one, metadata only (the owner reference is all a reconcile reads).
    assert!(
        fake.log.iter().any(|(_, uri, accept, _)| {
            uri.starts_with("/api/v1/namespaces?")
                && !uri.contains("labelSelector")
                && accept.contains("as=PartialObjectMetadata")
        }),
        "no metadata-only watch of every namespace"
    );
    assert!(
        fake.log
            .iter()
            .any(|(_, uri, _, _)| uri.starts_with("/apis/novads.io/v1alpha1/virtualservers?")),
        "watches virtual servers"
    );
}

// ---------------------------------------------------------------------------------------------
// Restores
// ---------------------------------------------------------------------------------------------

const BACKUP: &str = "web-20250601-0200";

fn restore_spec(restore: Value) -> Value {
    json!({ "image": "debian-12", "cpu": 2, "memory": "4Gi", "restore": restore })
}

/// A scheduled, ready backup `name` of server `of`.
fn backup_of(of: &str, name: &str) -> Value {
    json!({
        "apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot",
        "metadata": { "name": name, "namespace": "muni-talsi", "creationTimestamp": "2025-06-01T02:00:00Z",
                      "labels": { "novads.io/virtual-server": of, "novads.io/backup": "scheduled" } },
        "spec": { "source": { "apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": of } },
        "status": { "readyToUse": true, "creationTime": "2025-06-01T02:00:00Z", "phase": "Succeeded" }
    })
}

/// KubeVirt's restore of the server's request, with `status`.
fn kubevirt_restore(server: &VirtualServer, status: Value) -> Value {
    let request = server.spec.restore.clone().expect("a restore is asked for");
    let built = build::virtual_machine_restore(server, &request).expect("restore builds");
    let mut restore = serde_json::to_value(built).expect("JSON");
    restore["status"] = status;
    restore
}

/// `server` with the status `status` as the previous reconcile wrote it.
fn with_status(server: &VirtualServer, status: Value) -> VirtualServer {
    let mut next = server.clone();
    next.status = Some(serde_json::from_value(status).expect("status"));
    next
}

/// A status apply that hands the written status to the test.
fn status_capture(
    server: &VirtualServer,
    check: impl FnOnce(&Value) + Send + 'static,
) -> (Expect, std::sync::mpsc::Receiver<Value>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let step = status_patch(server, move |status| {
        check(status);
        tx.send(status.clone()).expect("send");
    });
    (step, rx)
}

fn restore_condition(status: &Value) -> (String, String) {
    reason_of(status, restore::RESTORING)
}

#[tokio::test]
async fn a_restore_stops_the_server_restores_waits_and_starts_it_again() {
    let plain = web(basic_spec());
    let mut world = running_world(&plain);
    world.snapshots = vec![backup_of("web", BACKUP)];
    let running = converged(&plain, &world);
    let mut asked = running.clone();
    asked.spec.restore =
        Some(serde_json::from_value(json!({ "backup": BACKUP, "token": "t1" })).expect("restore"));
    world.backup = Some(backup_of("web", BACKUP));
    let mut harness = Harness::new();

    // 1. Stop: the VM is applied Halted; nothing is restored yet.
    let mut script = world.reads(&asked);
    script.push(cloud_init_apply(&asked, None));
    let mut halted = asked.clone();
    halted.spec.run_strategy = novads_crds::RunStrategy::Halted;
    script.push(vm_apply(&halted, world.vm.clone(), |_| {}));
    let (write, written) = status_capture(&asked, |status| {
        assert_eq!(restore_condition(status), pair("True", "Stopping"));
        assert_eq!(status["restore"]["phase"], "Stopping");
        assert_eq!(status["restore"]["backup"], BACKUP);
        assert_eq!(status["restore"]["token"], "t1");
        assert_eq!(status["restore"]["startTime"], NOW);
        // The backups an admin chooses from.
        assert_eq!(
            status["backups"],
            json!([{ "name": BACKUP, "time": "2025-06-01T02:00:00Z", "ready": true }])
        );
    });
    script.push(write);
    script.push(event("Stopping", "Normal"));
    let result = harness.run(&asked, script).await;
    assert_eq!(
        result.expect("ok"),
        Action::requeue(restore::RESTORE_RECHECK)
    );
    let stopping = with_status(&asked, written.recv().expect("status"));

    // 2. Stopped: KubeVirt is asked to restore into the VM, which stays Halted.
    world.vm = Some(live_vm(&halted, "Stopped"));
    world.vmi = None;
    let mut script = world.reads(&stopping);
    script.push(cloud_init_apply(&stopping, None));
    script.push(vm_apply(&halted, world.vm.clone(), |_| {}));
    let built = build::virtual_machine_restore(&asked, asked.spec.restore.as_ref().expect("asked"))
        .expect("restore builds");
    let expected = serde_json::to_value(&built).expect("JSON");
    script.push(expect(Method::POST, &format!("{RESTORES}?"), move |body| {
        assert_eq!(body, expected);
        assert_eq!(body["spec"]["virtualMachineSnapshotName"], BACKUP);
        assert_eq!(body["spec"]["target"]["name"], "web");
        (201, body)
    }));
    let name = built.metadata.name.clone().expect("name");
    let (write, written) = status_capture(&stopping, move |status| {
        assert_eq!(restore_condition(status), pair("True", "Restoring"));
        assert_eq!(status["restore"]["phase"], "Restoring");
        assert_eq!(status["restore"]["virtualMachineRestore"], name.as_str());
        assert_eq!(status["phase"], "Stopped");
    });
    script.push(write);
    script.push(event("Restoring", "Normal"));
    script.push(event("Stopped", "Normal"));
    let result = harness.run(&stopping, script).await;
    assert_eq!(
        result.expect("ok"),
        Action::requeue(restore::RESTORE_RECHECK)
    );
    let restoring = with_status(&stopping, written.recv().expect("status"));

    // 3. KubeVirt restores: the VM is left alone, nothing is written.
    world.kubevirt_restore = Some(kubevirt_restore(&asked, json!({ "complete": false })));
    let mut script = world.reads(&restoring);
    script.push(cloud_init_apply(&restoring, None));
    let result = harness.run(&restoring, script).await;
    assert_eq!(
        result.expect("ok"),
        Action::requeue(restore::RESTORE_RECHECK)
    );

    // 4. Complete: the VM keeps the restored disk and runs again per its run strategy.
    world.kubevirt_restore = Some(kubevirt_restore(
        &asked,
        json!({ "complete": true, "restoreTime": "2025-06-02T09:59:00Z" }),
    ));
    let mut restored_vm = live_vm(&halted, "Stopped");
    restored_vm["spec"]["dataVolumeTemplates"][0]["metadata"]["name"] = json!("restore-uid-system");
    restored_vm["spec"]["template"]["spec"]["volumes"][0]["dataVolume"]["name"] =
        json!("restore-uid-system");
    world.vm = Some(restored_vm);
    let mut script = world.reads(&restoring);
    script.push(cloud_init_apply(&restoring, None));
    script.push(vm_apply_with(&restoring, world.vm.clone(), |vm| {
        vm["spec"]["dataVolumeTemplates"][0]["metadata"]["name"] = json!("restore-uid-system");
        vm["spec"]["template"]["spec"]["volumes"][0]["dataVolume"]["name"] =
            json!("restore-uid-system");
    }));
    let (write, written) = status_capture(&restoring, |status| {
        assert_eq!(restore_condition(status), pair("False", "Restored"));
        assert_eq!(status["restore"]["phase"], "Succeeded");
        assert_eq!(status["restore"]["completionTime"], "2025-06-02T09:59:00Z");
    });
    script.push(write);
    script.push(event("Restored", "Normal"));
    let result = harness.run(&restoring, script).await;
    assert_eq!(result.expect("ok"), Action::requeue(RESYNC));
    let restored = with_status(&restoring, written.recv().expect("status"));

    // 5. Done: the request is not read about nor carried out again.
    world.kubevirt_restore = None;
    let mut script = world.reads(&restored);
    assert_eq!(script.len(), world_without_restore_reads(&world, &restored));
    script.push(cloud_init_apply(&restored, None));
    script.push(vm_apply_with(&restored, world.vm.clone(), |vm| {
        vm["spec"]["dataVolumeTemplates"][0]["metadata"]["name"] = json!("restore-uid-system");
        vm["spec"]["template"]["spec"]["volumes"][0]["dataVolume"]["name"] =
            json!("restore-uid-system");
    }));
    let result = harness.run(&restored, script).await;
    assert_eq!(result.expect("ok"), Action::requeue(RESYNC));
}

/// How many reads a reconcile of `server` makes without a restore.
fn world_without_restore_reads(world: &World, server: &VirtualServer) -> usize {
    let mut plain = server.clone();
    plain.spec.restore = None;
    plain.status = None;
    world.reads(&plain).len()
}

/// The VM apply of `server`, with `edit` made to what the builder gives.
fn vm_apply_with(
    server: &VirtualServer,
    live: Option<Value>,
    edit: impl FnOnce(&mut Value),
) -> Expect {
    let vm = build::virtual_machine(server, &image_object(), &Quantity("20Gi".into()))
        .expect("VM builds");
    let mut expected = serde_json::to_value(vm).expect("JSON");
    edit(&mut expected);
    apply(VM, expected, live)
}

/// A refused restore of a running server: the server is applied as ever (running), the
/// condition and one Warning say why, and no VirtualMachineRestore is made.
async fn assert_restore_refused(
    restore: Value,
    world: World,
    reason: &'static str,
    says: &'static str,
) {
    let plain = web(basic_spec());
    let running = converged(&plain, &world);
    let mut asked = running.clone();
    asked.spec.restore = Some(serde_json::from_value(restore).expect("restore"));
    let mut script = world.reads(&asked);
    script.push(cloud_init_apply(&asked, None));
    script.push(vm_apply(&asked, world.vm.clone(), |vm| {
        assert_eq!(vm["spec"]["runStrategy"], "Always");
    }));
    let previous = running.status.clone();
    let (write, _written) = status_capture(&asked, move |status| {
        assert_eq!(restore_condition(status), pair("False", reason));
        let text = condition(status, restore::RESTORING)["message"]
            .as_str()
            .unwrap_or_default();
        assert!(text.contains(says), "{text}");
        assert!(
            status.get("restore").is_none(),
            "nothing recorded: {status}"
        );
        assert_eq!(reason_of(status, "Ready"), pair("True", "Running"));
        assert_eq!(
            previous.map(|p| p.phase),
            Some(Some(novads_crds::Phase::Running))
        );
    });
    script.push(write);
    script.push(event(reason, "Warning"));
    let mut harness = Harness::new();
    let result = harness.run(&asked, script).await;
    assert_eq!(result.expect("ok"), Action::requeue(RESYNC));
}

#[tokio::test]
async fn an_unknown_backup_is_refused_and_nothing_touched() {
    let world = running_world(&web(basic_spec()));
    assert_restore_refused(
        json!({ "backup": "web-20250101-0200" }),
        world,
        "BackupNotFound",
        "there is no backup \"web-20250101-0200\"",
    )
    .await;
}

#[tokio::test]
async fn a_backup_of_another_server_is_refused_and_nothing_touched() {
    let mut world = running_world(&web(basic_spec()));
    world.backup = Some(backup_of("db", BACKUP));
    assert_restore_refused(
        json!({ "backup": BACKUP }),
        world.clone(),
        "BackupOfAnotherServer",
        "not of server web",
    )
    .await;
    // Naming the other server is no way around it for a server that exists.
    world.backup = Some(backup_of("db", "db-20250601-0200"));
    assert_restore_refused(
        json!({ "backup": "db-20250601-0200", "fromServer": "db" }),
        world,
        "BackupOfAnotherServer",
        "Create a new server",
    )
    .await;
}

#[tokio::test]
async fn a_restore_while_another_runs_is_refused_and_nothing_touched() {
    let mut world = running_world(&web(basic_spec()));
    world.backup = Some(backup_of("web", BACKUP));
    world.restores = vec![json!({
        "apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineRestore",
        "metadata": { "name": "by-hand", "namespace": "muni-talsi" },
        "spec": { "target": { "apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "web" },
                  "virtualMachineSnapshotName": BACKUP },
        "status": { "complete": false }
    })];
    assert_restore_refused(
        json!({ "backup": BACKUP }),
        world,
        "RestoreInProgress",
        "by-hand",
    )
    .await;
}

#[tokio::test]
async fn a_new_server_from_another_servers_backup_is_created_by_the_restore() {
    let server = web(restore_spec(
        json!({ "backup": "db-20250601-0200", "fromServer": "db" }),
    ));
    let mut world = World::new();
    world.backup = Some(backup_of("db", "db-20250601-0200"));
    let mut script = world.reads(&server);
    // The Secret, but no VM from the image: KubeVirt creates it from the backup.
    script.push(cloud_init_apply(&server, None));
    script.push(expect(Method::POST, &format!("{RESTORES}?"), |body| {
        assert_eq!(
            body["spec"]["virtualMachineSnapshotName"],
            "db-20250601-0200"
        );
        assert_eq!(body["spec"]["target"]["name"], "web");
        assert_eq!(body["metadata"]["ownerReferences"][0]["uid"], "uid-web");
        (201, body)
    }));
    script.push(status_patch(&server, |status| {
        assert_eq!(status["phase"], "Pending");
        assert_eq!(restore_condition(status), pair("True", "Restoring"));
        assert_eq!(status["restore"]["fromServer"], "db");
    }));
    script.push(event("Restoring", "Normal"));
    let mut harness = Harness::new();
    let result = harness.run(&server, script).await;
    assert_eq!(
        result.expect("ok"),
        Action::requeue(restore::RESTORE_RECHECK)
    );
}

#[tokio::test]
async fn a_new_server_from_a_backup_over_quota_is_refused_and_nothing_made() {
    let server = web(restore_spec(
        json!({ "backup": "db-20250601-0200", "fromServer": "db" }),
    ));
    let mut world = World::new();
    world.municipality = Some(municipality(1));
    let mut db = serde_json::to_value(web(basic_spec())).expect("JSON");
    db["metadata"]["name"] = json!("db");
    db["metadata"]["uid"] = json!("uid-db");
    db["metadata"]["creationTimestamp"] = json!("2025-04-01T00:00:00Z");
    world.siblings = vec![db];
    world.backup = Some(backup_of("db", "db-20250601-0200"));
    // The reads, the refusal, and neither a VM nor a restore.
    assert_refused(
        &server,
        &world,
        "QuotaExceeded",
        "servers: 2 requested of 1 allowed",
    )
    .await;

    // A new server whose backup does not exist is not installed from the image instead.
    let mut world = World::new();
    world.backup = None;
    assert_refused(&server, &world, "BackupNotFound", "db-20250601-0200").await;
}

#[tokio::test]
async fn a_restore_kubevirt_fails_is_reported_and_the_server_started_again() {
    let plain = web(basic_spec());
    let mut asked = plain.clone();
    asked.spec.restore =
        Some(serde_json::from_value(json!({ "backup": BACKUP })).expect("restore"));
    let name = build::virtual_machine_restore(&asked, asked.spec.restore.as_ref().expect("asked"))
        .expect("builds")
        .metadata
        .name
        .expect("name");
    let mut halted = asked.clone();
    halted.spec.run_strategy = novads_crds::RunStrategy::Halted;
    let mut world = World::new();
    world.vm = Some(live_vm(&halted, "Stopped"));
    world.backup = Some(backup_of("web", BACKUP));
    world.kubevirt_restore = Some(kubevirt_restore(
        &asked,
        json!({ "complete": false, "conditions": [
            { "type": "Failure", "status": "True", "reason": "Failed", "message": "volume snapshot web-system is not ready" }
        ] }),
    ));
    let restoring = with_status(
        &asked,
        json!({ "restore": { "backup": BACKUP, "phase": "Restoring", "virtualMachineRestore": name,
                             "startTime": "2025-06-02T09:50:00Z" } }),
    );
    let mut script = world.reads(&restoring);
    script.push(cloud_init_apply(&restoring, None));
    script.push(vm_apply(&restoring, world.vm.clone(), |vm| {
        assert_eq!(vm["spec"]["runStrategy"], "Always");
    }));
    script.push(status_patch(&restoring, |status| {
        assert_eq!(restore_condition(status), pair("False", "RestoreFailed"));
        let text = condition(status, restore::RESTORING)["message"]
            .as_str()
            .unwrap_or_default();
        assert!(
            text.contains("volume snapshot web-system is not ready"),
            "{text}"
        );
        assert_eq!(status["restore"]["phase"], "Failed");
        assert_eq!(status["restore"]["startTime"], "2025-06-02T09:50:00Z");
        assert_eq!(status["restore"]["completionTime"], NOW);
    }));
    script.push(event("RestoreFailed", "Warning"));
    script.push(event("Stopped", "Normal"));
    let mut harness = Harness::new();
    let result = harness.run(&restoring, script).await;
    assert_eq!(result.expect("ok"), Action::requeue(RESYNC));
}

#[tokio::test]
async fn deleting_a_server_during_a_restore_calls_the_restore_off_first() {
    let server = deleting(web(basic_spec()));
    let server = with_status(
        &server,
        json!({ "restore": { "backup": BACKUP, "phase": "Restoring",
                             "virtualMachineRestore": "web-restore-0123456789abcdef" } }),
    );
    let script = vec![
        delete(&format!("{RESTORES}/web-restore-0123456789abcdef"), false),
        delete(VM, false),
        delete(SERVICE, true),
        delete(POLICY, true),
        delete(CLOUD_INIT, false),
        release_finalizer(),
    ];
    let mut harness = Harness::new();
    let result = harness.run(&server, script).await;
    assert_eq!(result.expect("ok"), Action::await_change());
}

#[test]
fn municipal_admins_and_viewers_see_restores_but_only_admins_ask_for_them() {
    use support::rbac::municipality_role_allows;
    for role in ["novads-municipality-admin", "novads-municipality-viewer"] {
        for verb in ["get", "list", "watch"] {
            assert!(municipality_role_allows(
                role,
                "snapshot.kubevirt.io",
                "virtualmachinerestores",
                verb
            ));
        }
        // Restores go through the VirtualServer, never straight to KubeVirt.
        assert!(!municipality_role_allows(
            role,
            "snapshot.kubevirt.io",
            "virtualmachinerestores",
            "create"
        ));
    }
    assert!(municipality_role_allows(
        "novads-municipality-admin",
        "novads.io",
        "virtualservers",
        "patch"
    ));
    assert!(!municipality_role_allows(
        "novads-municipality-viewer",
        "novads.io",
        "virtualservers",
        "patch"
    ));
}

// ---------------------------------------------------------------------------------------------
// Reading from the caches
// ---------------------------------------------------------------------------------------------

/// A store holding `objects`, listed once (as the watcher's first listing leaves it).
fn store_of<K>(objects: Vec<K>) -> kube::runtime::reflector::Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    use kube::runtime::{reflector, watcher};
    let (store, mut writer) = reflector::store::<K>();
    writer.apply_watcher_event(&watcher::Event::Init);
    for object in objects {
        writer.apply_watcher_event(&watcher::Event::InitApply(object));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    store
}

/// The objects of `value` (none when it is `None`), typed.
fn typed<K: serde::de::DeserializeOwned>(values: impl IntoIterator<Item = Value>) -> Vec<K> {
    values
        .into_iter()
        .map(|v| serde_json::from_value(v).expect("typed object"))
        .collect()
}

/// The controller's caches as the watches fill them for `world` and `server`; the
/// NetworkPolicy is `policy` (the World has none: without caches it is never read).
fn caches_with(world: &World, server: &VirtualServer, policy: Option<Value>) -> Caches {
    let mut servers: Vec<VirtualServer> = typed(world.siblings.clone());
    servers.push(server.clone());
    let snapshots: Vec<VirtualMachineSnapshot> = typed(world.snapshots.clone());
    Caches {
        municipalities: store_of(typed(world.municipality.clone())),
        images: store_of(typed(world.image.clone())),
        servers_by_namespace: ServersByNamespace::of(&servers),
        servers: store_of(servers),
        namespaces: store_of(typed(Some(namespace()))),
        vms: Records::listed(&recorded(typed(world.vm.clone()), unchanged::record_live)),
        vmis: Records::listed(&typed::<VirtualMachineInstance>(world.vmi.clone())),
        snapshots: Records::listed(&snapshots),
        services: Records::listed(&recorded(
            typed(world.service.clone()),
            unchanged::record_live,
        )),
        network_policies: Records::listed(&recorded(typed(policy), unchanged::record_live)),
    }
}

/// `objects` as the runtime's watches cache them (`record` before managedFields are dropped).
fn recorded<K>(mut objects: Vec<K>, record: fn(&mut K)) -> Vec<K> {
    objects.iter_mut().for_each(record);
    objects
}

/// `body` as the API server holds it right after the operator applied it: with the
/// operator's `Apply` entry in managedFields, listing the fields of the body.
fn as_applied(mut body: Value) -> Value {
    body["metadata"]["managedFields"] = json!([{
        "manager": "novads-operator", "operation": "Apply", "fieldsType": "FieldsV1",
        "fieldsV1": unchanged::applied_field_set(&body)
    }]);
    body
}

fn caches(world: &World, server: &VirtualServer) -> Caches {
    caches_with(world, server, None)
}

/// The reads of one reconcile with the caches: only the tenant's Secret and a restore in
/// progress are read from the API.
fn cached_reads(world: &World, server: &VirtualServer) -> Vec<Expect> {
    let cached = [
        NS.to_string(),
        MUNICIPALITY.to_string(),
        IMAGE.to_string(),
        format!("{SERVERS}?"),
        VM.to_string(),
        VMI.to_string(),
        format!("{SNAPSHOTS}?&{SNAPSHOT_SELECTOR}"),
        SERVICE.to_string(),
    ];
    world
        .reads(server)
        .into_iter()
        .filter(|read| !cached.contains(&read.uri))
        .collect()
}

fn cached_harness(world: &World, server: &VirtualServer) -> Harness {
    let caches = caches(world, server);
    Harness::with(move |ctx| ctx.with_caches(caches), NOW)
}

/// What the operator applies with the caches: each child carries the digest of its body
/// (the VM also of the cloud-init Secret applied with it).
fn stamped_vm(server: &VirtualServer) -> Value {
    let vm = build::virtual_machine(server, &image_object(), &Quantity("20Gi".into()))
        .expect("VM builds");
    let secret = build::cloud_init_secret(server, None).expect("secret builds");
    serde_json::to_value(unchanged::stamped(vm, &[&secret])).expect("JSON")
}

fn stamped_service(server: &VirtualServer) -> Value {
    let service = build::service(server).expect("builds").expect("exposed");
    serde_json::to_value(unchanged::stamped(service, &[])).expect("JSON")
}

fn stamped_policy(server: &VirtualServer) -> Value {
    let policy = build::network_policy(server)
        .expect("builds")
        .expect("exposed");
    serde_json::to_value(unchanged::stamped(policy, &[])).expect("JSON")
}

/// An exposed, running server as the operator left it: every child applied by it (stamped),
/// with what the API server and KubeVirt added (status, clusterIP, defaults).
fn converged_exposed_world(server: &VirtualServer) -> (World, Value) {
    let mut world = World::new();
    let mut vm = as_applied(stamped_vm(server));
    vm["metadata"]["uid"] = json!("uid-vm");
    vm["status"] = json!({ "printableStatus": "Running", "ready": true, "created": true });
    world.vm = Some(vm);
    world.vmi = Some(running_vmi("uid-vmi-1", 2, "4Gi"));
    let mut service = as_applied(stamped_service(server));
    service["spec"]["clusterIP"] = json!("10.96.0.10");
    service["spec"]["ports"][0]["targetPort"] = json!(443);
    world.service = Some(service);
    let mut policy = as_applied(stamped_policy(server));
    policy["spec"]["policyTypes"] = json!(["Ingress"]);
    (world, policy)
}

#[tokio::test]
async fn with_caches_a_converged_server_makes_no_api_request() {
    let server = web(exposed_spec());
    let (world, policy) = converged_exposed_world(&server);
    let server = converged(&server, &world);
    let caches = caches_with(&world, &server, Some(policy));
    let mut harness = Harness::with(move |ctx| ctx.with_caches(caches), NOW);
    // The empty script fails on any request at all.
    for _ in 0..2 {
        let result = harness.run(&server, vec![]).await;
        assert_eq!(result.expect("ok"), Action::requeue(RESYNC));
    }
}

#[tokio::test]
async fn with_caches_a_drifted_or_missing_child_is_applied_again() {
    let server = web(exposed_spec());
    let (world, policy) = converged_exposed_world(&server);
    let server = converged(&server, &world);

    // `virtctl start` rewrote the VM's runStrategy behind the server's back: the VM is
    // applied again (with its cloud-init Secret), and nothing else.
    let mut drifted = world.clone();
    if let Some(vm) = drifted.vm.as_mut() {
        vm["spec"]["runStrategy"] = json!("Halted");
    }
    let caches = caches_with(&drifted, &server, Some(policy.clone()));
    let mut harness = Harness::with(move |ctx| ctx.with_caches(caches), NOW);
    let script = vec![
        cloud_init_apply(&server, None),
        apply(VM, stamped_vm(&server), world.vm.clone()),
    ];
    let result = harness.run(&server, script).await;
    assert_eq!(result.expect("ok"), Action::requeue(RESYNC));

    // The same, with the field taken over by KubeVirt's manager (it left the operator's set).
    if let Some(vm) = drifted.vm.as_mut() {
        let fields = &mut vm["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"];
        fields
            .as_object_mut()
            .expect("field set")
            .remove("f:runStrategy");
    }
    let caches = caches_with(&drifted, &server, Some(policy.clone()));
    let mut harness = Harness::with(move |ctx| ctx.with_caches(caches), NOW);
    let script = vec![
        cloud_init_apply(&server, None),
        apply(VM, stamped_vm(&server), world.vm.clone()),
    ];
    harness.run(&server, script).await.expect("ok");

    // The NetworkPolicy was deleted by hand: only it is applied.
    let caches = caches_with(&world, &server, None);
    let mut harness = Harness::with(move |ctx| ctx.with_caches(caches), NOW);
    let script = vec![apply(POLICY, stamped_policy(&server), None)];
    harness.run(&server, script).await.expect("ok");

    // A Service someone added a port to is applied again, its address kept in the status.
    let mut extra_port = world.clone();
    if let Some(service) = extra_port.service.as_mut() {
        service["spec"]["ports"]
            .as_array_mut()
            .expect("ports")
            .push(json!({ "name": "ssh", "port": 22, "protocol": "TCP" }));
    }
    let caches = caches_with(&extra_port, &server, Some(policy));
    let mut harness = Harness::with(move |ctx| ctx.with_caches(caches), NOW);
    let script = vec![apply(
        SERVICE,
        stamped_service(&server),
        world.service.clone(),
    )];
    harness.run(&server, script).await.expect("ok");
}

#[tokio::test]
async fn with_caches_a_cache_behind_the_last_apply_costs_one_redundant_apply() {
    let server = web(basic_spec());
    let world = running_world(&server);
    let server = converged(&server, &world);
    // The cache still holds the VM as it was before this operator stamped it (an earlier
    // version, or the watch event of the last apply not yet arrived): it is applied again,
    // which the API server takes as a no-op; the next event brings the cache up to date.
    let mut harness = cached_harness(&world, &server);
    let mut live = stamped_vm(&server);
    live["metadata"]["uid"] = json!("uid-vm");
    live["status"] = world.vm.clone().expect("vm")["status"].clone();
    let script = vec![
        cloud_init_apply(&server, None),
        apply(VM, stamped_vm(&server), Some(live)),
    ];
    let result = harness.run(&server, script).await;
    assert_eq!(result.expect("ok"), Action::requeue(RESYNC));
}

#[tokio::test]
async fn with_caches_a_new_vm_is_announced_once_while_the_cache_lags() {
    let server = web(basic_spec());
    let world = World::new();
    let mut harness = cached_harness(&world, &server);
    for first in [true, false] {
        // The VM store has not seen the VM yet either time; the second reconcile applies it
        // again but does not announce it again.
        let mut script = vec![
            cloud_init_apply(&server, None),
            apply(
                VM,
                stamped_vm(&server),
                Some(json!({ "metadata": { "uid": "uid-vm" } })),
            ),
        ];
        if first {
            script.push(event("Created", "Normal"));
        }
        script.push(status_patch(&server, |status| {
            assert_eq!(status["phase"], "Pending");
        }));
        harness.run(&server, script).await.expect("ok");
    }
}

#[tokio::test]
async fn with_caches_the_quota_counts_the_cached_servers_and_a_missing_image_refuses() {
    let server = web(basic_spec());
    let mut world = World::new();
    world.municipality = Some(municipality(1));
    let mut older = serde_json::to_value(web(basic_spec())).expect("JSON");
    older["metadata"]["name"] = json!("db");
    older["metadata"]["uid"] = json!("uid-db");
    older["metadata"]["creationTimestamp"] = json!("2025-04-01T00:00:00Z");
    world.siblings = vec![older];
    let mut script = cached_reads(&world, &server);
    script.push(status_patch(&server, |status| {
        assert_eq!(reason_of(status, "Degraded"), pair("True", "QuotaExceeded"));
    }));
    script.push(event("QuotaExceeded", "Warning"));
    let mut harness = cached_harness(&world, &server);
    let result = harness.run(&server, script).await;
    assert_eq!(result.expect("ok"), Action::requeue(REFUSED_RECHECK));

    let mut world = World::new();
    world.image = None;
    let mut script = cached_reads(&world, &server);
    script.push(status_patch(&server, |status| {
        assert_eq!(reason_of(status, "Degraded"), pair("True", "ImageNotFound"));
    }));
    script.push(event("ImageNotFound", "Warning"));
    let mut harness = cached_harness(&world, &server);
    let result = harness.run(&server, script).await;
    assert_eq!(result.expect("ok"), Action::requeue(REFUSED_RECHECK));
}
