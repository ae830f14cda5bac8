//! End-to-end against a real cluster (kind/k3d with the CRDs installed: `novads crds |
//! kubectl apply -f -`). Runs only when KUBECONFIG is set and the cluster answers; otherwise
//! it says so and passes. The VirtualServer scenario also needs KubeVirt and CDI in the
//! cluster; without KubeVirt it says so and passes. The restore scenario also needs snapshot
//! support of the storage (a VolumeSnapshotClass); without it, it says so and passes.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ResourceQuota, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::events::Reporter;
use novads_crds::{Municipality, RestorePhase, ServerImage, VirtualServer};
use novads_operator::kubevirt::{VirtualMachine, VirtualMachineSnapshot};
use novads_operator::municipality::build::TenancySettings;
use novads_operator::municipality::controller::{self as municipality, Context};
use novads_operator::virtual_server::controller as virtual_server;
use novads_operator::virtual_server::watch::probe_kubevirt;

async fn cluster() -> Option<kube::Client> {
    std::env::var_os("KUBECONFIG")?;
    let client = kube::Client::try_default().await.ok()?;
    client.apiserver_version().await.ok()?;
    Some(client)
}

/// Reconciles like the controller would, until `done` holds or 30 rounds pass.
async fn reconcile_until(
    api: &Api<Municipality>,
    ctx: &Arc<Context>,
    name: &str,
    done: impl Fn(Option<&Municipality>) -> bool,
) {
    for _ in 0..30 {
        let current = api.get_opt(name).await.expect("get municipality");
        if done(current.as_ref()) {
            return;
        }
        if let Some(current) = current {
            let _ = municipality::reconcile(Arc::new(current), ctx.clone()).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("municipality {name} did not converge");
}

#[tokio::test]
async fn a_municipality_becomes_a_tenancy_and_goes_away_with_it() {
    let Some(client) = cluster().await else {
        println!("skipped: no cluster (set KUBECONFIG to a kind/k3d cluster)");
        return;
    };
    let reporter = Reporter {
        controller: "novads-operator-e2e".into(),
        instance: None,
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        TenancySettings::default(),
        reporter,
    ));
    let api: Api<Municipality> = Api::all(client.clone());
    let municipality: Municipality = serde_json::from_value(serde_json::json!({
        "apiVersion": "novads.io/v1alpha1", "kind": "Municipality",
        "metadata": { "name": "e2e-talsi" },
        "spec": {
            "code": "e2e-talsi", "displayName": "E2E Talsi", "realm": "talsi",
            "adminGroups": ["it-admins"],
            "quotas": { "cpu": 4, "memory": "8Gi", "storage": "100Gi", "maxVirtualServers": 2 }
        }
    }))
    .expect("fixture");
    api.create(&PostParams::default(), &municipality)
        .await
        .expect("create municipality");

    reconcile_until(&api, &ctx, "e2e-talsi", |m| {
        m.and_then(|m| m.status.as_ref()).is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
    })
    .await;
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), "muni-e2e-talsi");
    let quota = quotas.get("novads-quota").await.expect("quota exists");
    let hard = quota.spec.and_then(|s| s.hard).unwrap_or_default();
    assert_eq!(
        hard.get("requests.memory").map(|q| q.0.as_str()),
        Some("10016Mi")
    );

    api.delete("e2e-talsi", &DeleteParams::default())
        .await
        .expect("delete municipality");
    reconcile_until(&api, &ctx, "e2e-talsi", |m| m.is_none()).await;
    let namespaces: Api<Namespace> = Api::all(client);
    let namespace = namespaces
        .get_opt("muni-e2e-talsi")
        .await
        .expect("get namespace");
    assert!(namespace.is_none_or(|ns| ns.metadata.deletion_timestamp.is_some()));
}

/// Reconciles a VirtualServer like its controller would, until `done` holds or 60 rounds pass.
async fn reconcile_server_until(
    api: &Api<VirtualServer>,
    ctx: &Arc<virtual_server::Context>,
    name: &str,
    done: impl Fn(Option<&VirtualServer>) -> bool,
) {
    for _ in 0..60 {
        let current = api.get_opt(name).await.expect("get virtual server");
        if done(current.as_ref()) {
            return;
        }
        if let Some(current) = current {
            let _ = virtual_server::reconcile(Arc::new(current), ctx.clone()).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    panic!("virtual server {name} did not converge");
}

/// A Ready tenancy `code` (deletion policy Delete, room for two small servers) and an approved
/// cirros image `image` to install servers from: where both VirtualServer scenarios start.
async fn ready_tenancy_and_image(
    client: &kube::Client,
    tenancy: &Arc<Context>,
    code: &str,
    allowed_network_ranges: &[&str],
    image: &str,
) {
    let municipalities: Api<Municipality> = Api::all(client.clone());
    let municipality: Municipality = serde_json::from_value(serde_json::json!({
        "apiVersion": "novads.io/v1alpha1", "kind": "Municipality",
        "metadata": { "name": code },
        "spec": {
            "code": code, "displayName": format!("E2E {code}"), "realm": "e2e",
            "quotas": { "cpu": 4, "memory": "8Gi", "storage": "20Gi", "maxVirtualServers": 2 },
            "allowedNetworkRanges": allowed_network_ranges,
            "deletionPolicy": "Delete"
        }
    }))
    .expect("fixture");
    municipalities
        .create(&PostParams::default(), &municipality)
        .await
        .expect("create municipality");
    reconcile_until(&municipalities, tenancy, code, |m| {
        m.and_then(|m| m.status.as_ref()).is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
    })
    .await;
    let images: Api<ServerImage> = Api::all(client.clone());
    let image: ServerImage = serde_json::from_value(serde_json::json!({
        "apiVersion": "novads.io/v1alpha1", "kind": "ServerImage",
        "metadata": { "name": image },
        "spec": {
            "source": { "registry": "docker://quay.io/kubevirt/cirros-container-disk-demo:latest" },
            "osFamily": "Linux", "version": "0.6", "supportEnd": "2099-12-31",
            "lastPatched": "2024-01-01", "minDiskSize": "1Gi", "approved": true
        }
    }))
    .expect("fixture");
    images
        .create(&PostParams::default(), &image)
        .await
        .expect("create image");
}

#[tokio::test]
async fn a_virtual_server_becomes_a_kubevirt_vm_and_goes_away_with_it() {
    let Some(client) = cluster().await else {
        println!("skipped: no cluster (set KUBECONFIG to a kind/k3d cluster)");
        return;
    };
    if let Err(reason) = probe_kubevirt(&client).await {
        println!(
            "skipped: the cluster has no KubeVirt ({reason}); install KubeVirt and CDI to run \
             the VirtualServer scenario"
        );
        return;
    }
    let reporter = Reporter {
        controller: "novads-operator-e2e".into(),
        instance: None,
    };
    let tenancy = Arc::new(Context::new(
        client.clone(),
        TenancySettings::default(),
        reporter.clone(),
    ));
    let servers_ctx = Arc::new(virtual_server::Context::new(client.clone(), reporter));

    // A tenancy to put the server in, and an image to install it from.
    let municipalities: Api<Municipality> = Api::all(client.clone());
    ready_tenancy_and_image(&client, &tenancy, "e2e-vs", &["10.99.0.0/16"], "e2e-cirros").await;
    let images: Api<ServerImage> = Api::all(client.clone());

    // A halted server: its VM and disk are created, nothing has to boot.
    let servers: Api<VirtualServer> = Api::namespaced(client.clone(), "muni-e2e-vs");
    let server: VirtualServer = serde_json::from_value(serde_json::json!({
        "apiVersion": "novads.io/v1alpha1", "kind": "VirtualServer",
        "metadata": { "name": "web" },
        "spec": {
            "image": "e2e-cirros", "cpu": 1, "memory": "256Mi", "runStrategy": "Halted",
            "expose": { "serviceType": "ClusterIP", "ports": [{ "port": 22, "allowedSources": ["10.99.1.0/24"] }] }
        }
    }))
    .expect("fixture");
    servers
        .create(&PostParams::default(), &server)
        .await
        .expect("create virtual server");
    reconcile_server_until(&servers, &servers_ctx, "web", |s| {
        s.and_then(|s| s.status.as_ref())
            .is_some_and(|s| s.phase.is_some() && s.observed_generation.is_some())
    })
    .await;
    let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), "muni-e2e-vs");
    let vm = vms.get("web").await.expect("the VM exists");
    assert_eq!(vm.spec.run_strategy.as_deref(), Some("Halted"));
    assert!(
        vm.metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.kind == "VirtualServer" && o.name == "web"),
        "the VM is owned by its server"
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "muni-e2e-vs");
    assert!(
        secrets
            .get_opt("web-cloud-init")
            .await
            .expect("get secret")
            .is_some()
    );

    // Deleting the server deletes its VM before the finalizer lets it go.
    servers
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete virtual server");
    reconcile_server_until(&servers, &servers_ctx, "web", |s| s.is_none()).await;
    let vm = vms.get_opt("web").await.expect("get VM");
    assert!(vm.is_none_or(|vm| vm.metadata.deletion_timestamp.is_some()));

    images
        .delete("e2e-cirros", &DeleteParams::default())
        .await
        .expect("delete image");
    municipalities
        .delete("e2e-vs", &DeleteParams::default())
        .await
        .expect("delete municipality");
    reconcile_until(&municipalities, &tenancy, "e2e-vs", |m| m.is_none()).await;
}

/// A server restored from a snapshot of its own: it is stopped, KubeVirt restores, and it
/// reports the outcome. Needs a storage class with CSI snapshots (a VolumeSnapshotClass);
/// without one the snapshot never becomes ready and the scenario says so and passes.
#[tokio::test]
async fn a_virtual_server_is_restored_from_its_backup() {
    let Some(client) = cluster().await else {
        println!("skipped: no cluster (set KUBECONFIG to a kind/k3d cluster)");
        return;
    };
    if let Err(reason) = probe_kubevirt(&client).await {
        println!("skipped: the cluster has no KubeVirt ({reason})");
        return;
    }
    let reporter = Reporter {
        controller: "novads-operator-e2e".into(),
        instance: None,
    };
    let tenancy = Arc::new(Context::new(
        client.clone(),
        TenancySettings::default(),
        reporter.clone(),
    ));
    let servers_ctx = Arc::new(virtual_server::Context::new(client.clone(), reporter));
    let municipalities: Api<Municipality> = Api::all(client.clone());
    ready_tenancy_and_image(&client, &tenancy, "e2e-restore", &[], "e2e-restore-cirros").await;
    let images: Api<ServerImage> = Api::all(client.clone());

    let namespace = "muni-e2e-restore";
    let servers: Api<VirtualServer> = Api::namespaced(client.clone(), namespace);
    let server: VirtualServer = serde_json::from_value(serde_json::json!({
        "apiVersion": "novads.io/v1alpha1", "kind": "VirtualServer",
        "metadata": { "name": "web" },
        "spec": { "image": "e2e-restore-cirros", "cpu": 1, "memory": "256Mi", "runStrategy": "Halted" }
    }))
    .expect("fixture");
    servers
        .create(&PostParams::default(), &server)
        .await
        .expect("create virtual server");
    reconcile_server_until(&servers, &servers_ctx, "web", |s| {
        s.and_then(|s| s.status.as_ref())
            .is_some_and(|s| s.phase.is_some() && s.observed_generation.is_some())
    })
    .await;

    // A backup as the schedule takes it (the builder's snapshot, labelled scheduled).
    let current = servers.get("web").await.expect("get server");
    let snapshot = novads_operator::virtual_server::build::snapshot(
        &current,
        k8s_openapi::jiff::Timestamp::now(),
    )
    .expect("snapshot builds");
    let backup = snapshot.metadata.name.clone().expect("name");
    let snapshots: Api<VirtualMachineSnapshot> = Api::namespaced(client.clone(), namespace);
    snapshots
        .create(&PostParams::default(), &snapshot)
        .await
        .expect("create snapshot");
    let mut ready = false;
    for _ in 0..60 {
        let seen = snapshots.get(&backup).await.expect("get snapshot");
        if seen.status.and_then(|s| s.ready_to_use) == Some(true) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    if ready {
        let patch =
            serde_json::json!({ "spec": { "restore": { "backup": backup, "token": "e2e" } } });
        servers
            .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("ask for the restore");
        reconcile_server_until(&servers, &servers_ctx, "web", |s| {
            s.and_then(|s| s.status.as_ref())
                .and_then(|s| s.restore.as_ref())
                .is_some_and(|r| matches!(r.phase, RestorePhase::Succeeded | RestorePhase::Failed))
        })
        .await;
        let restored = servers.get("web").await.expect("get server");
        let record = restored
            .status
            .and_then(|s| s.restore)
            .expect("restore recorded");
        assert_eq!(record.phase, RestorePhase::Succeeded, "{record:?}");
        let vm: VirtualMachine = Api::namespaced(client.clone(), namespace)
            .get("web")
            .await
            .expect("the VM exists");
        assert_eq!(vm.spec.run_strategy.as_deref(), Some("Halted"));
    } else {
        println!(
            "skipped the restore: snapshot {backup} never became ready (the cluster's storage \
             needs a VolumeSnapshotClass)"
        );
    }

    servers
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete virtual server");
    reconcile_server_until(&servers, &servers_ctx, "web", |s| s.is_none()).await;
    let _ = snapshots.delete(&backup, &DeleteParams::default()).await;
    images
        .delete("e2e-restore-cirros", &DeleteParams::default())
        .await
        .expect("delete image");
    municipalities
        .delete("e2e-restore", &DeleteParams::default())
        .await
        .expect("delete municipality");
    reconcile_until(&municipalities, &tenancy, "e2e-restore", |m| m.is_none()).await;
}
