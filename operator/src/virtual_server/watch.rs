//! What the VirtualServer controller watches and how it runs: every VirtualServer, ServerImage
//! and Municipality (images and municipalities trigger on spec changes only, mapped to the
//! servers that use them), every namespace (metadata only), and the servers' Services,
//! NetworkPolicies and KubeVirt's VirtualMachines, instances and snapshots by the server
//! label. All of them are cached: a reconcile reads them from the stores, not the API.
//!
//! The controller needs KubeVirt's APIs. Without them (a cluster where KubeVirt is not
//! installed, or not yet) it runs in a reduced form that only tells each server so in its
//! status; `/readyz`, the `novads_operator_kubevirt_available` gauge and the log say it too,
//! and it keeps looking, starting the full controller as soon as KubeVirt appears.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceSpec};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Client, Resource, ResourceExt};
use novads_crds::{Municipality, ServerImage, VirtualServer};
use serde::de::DeserializeOwned;

use super::build::SERVER_LABEL;
use super::controller::{self, Caches, Context, Error, unchanged};
use super::namespace_index::ServersByNamespace;
use super::records::{
    self, NetworkPolicyRecord, ServiceRecord, SnapshotRecord, VmRecord, VmiRecord,
};
use crate::health::{Cache, Health, Metrics, VIRTUAL_SERVER_CONTROLLER};
use crate::kubevirt::{
    VirtualMachine, VirtualMachineInstance, VirtualMachineInstanceSpec,
    VirtualMachineInstanceTemplateSpec, VirtualMachineSnapshot, Volume,
};
use crate::watch::{
    Stop, log_result, measured, metadata_events, object_events, on_worker, recorded_events,
    selected_events,
};

/// How often a leader without KubeVirt looks again whether it has been installed.
pub const KUBEVIRT_PROBE_INTERVAL: Duration = Duration::from_secs(60);

/// Whether KubeVirt's APIs are served: `Err(reason)` when VirtualMachines or
/// VirtualMachineSnapshots are missing (404) or forbidden (403). Any other failure counts as
/// available: the controller's watches and back-off ride out a flaky API server, whereas
/// calling KubeVirt missing would rewrite every server's status.
pub async fn probe_kubevirt(client: &Client) -> Result<(), String> {
    probe::<VirtualMachine>(client).await?;
    probe::<VirtualMachineSnapshot>(client).await
}

async fn probe<K>(client: &Client) -> Result<(), String>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let api = Api::<K>::all(client.clone());
    let what = format!(
        "{}.{} ({})",
        K::plural(&()),
        K::group(&()),
        K::api_version(&())
    );
    match api.list_metadata(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Err(format!(
            "the cluster does not serve {what}; install KubeVirt (with its snapshot API)"
        )),
        Err(kube::Error::Api(status)) if status.code == 403 => Err(format!(
            "the operator may not list {what}; its ClusterRole (charts/novads) lacks the KubeVirt rules"
        )),
        Err(error) => {
            tracing::warn!(%error, what, "cannot tell whether KubeVirt is installed; assuming it is");
            Ok(())
        }
    }
}

/// Runs the VirtualServer controller until `stop`. Without KubeVirt it runs in a reduced
/// form that only reports the fact on each server, and looks for KubeVirt every
/// [`KUBEVIRT_PROBE_INTERVAL`]; when it appears, the full controller replaces the reduced one.
pub async fn run(
    client: Client,
    concurrency: u16,
    reporter: Reporter,
    metrics: Metrics,
    health: Arc<Health>,
    stop: Stop,
) {
    loop {
        let missing = probe_kubevirt(&client).await.err();
        metrics.set_kubevirt_available(missing.is_none());
        health.set_kubevirt_missing(missing.clone());
        let Some(reason) = missing else {
            tracing::info!("KubeVirt found; running the VirtualServer controller");
            run_once(
                &client,
                concurrency,
                &reporter,
                &metrics,
                &health,
                None,
                stop,
            )
            .await;
            return;
        };
        tracing::error!(
            %reason,
            "KubeVirt is not available: VirtualServers are not built, only marked \
             KubeVirtUnavailable; Municipalities are reconciled as usual"
        );
        for cache in Cache::KUBEVIRT {
            health.mark_synced(cache);
        }
        let reduced = run_once(
            &client,
            concurrency,
            &reporter,
            &metrics,
            &health,
            Some(reason),
            stop.clone(),
        );
        let appeared = async {
            loop {
                tokio::time::sleep(KUBEVIRT_PROBE_INTERVAL).await;
                if probe_kubevirt(&client).await.is_ok() {
                    return;
                }
            }
        };
        tokio::select! {
            () = reduced => return,
            () = appeared => tracing::info!("KubeVirt appeared; restarting the VirtualServer controller"),
        }
        for cache in Cache::VIRTUAL_SERVER {
            health.mark_unsynced(cache);
        }
    }
}

/// The server of a child that carries the server label (VMIs, snapshots, Services).
pub fn labelled_server(meta: &ObjectMeta) -> Option<ObjectRef<VirtualServer>> {
    let name = meta.labels.as_ref()?.get(SERVER_LABEL)?;
    Some(ObjectRef::new(name).within(meta.namespace.as_deref()?))
}

/// What the cache keeps of a VirtualMachine: the digest of the fields the operator owns
/// ([`unchanged::record_live`]), then what a reconcile reads — its uid, controller owner,
/// server label and the operator's annotations; its run strategy, the names and sizes of its
/// DataVolume templates and which DataVolume each volume uses (disk growth, a restore's
/// disks); its status. The template is most of a VM and only the digest needs it.
pub fn record_vm(vm: &mut VirtualMachine) {
    unchanged::record_live(vm);
    keep_only_annotations(&mut vm.metadata, &[SERVER_LABEL]);
    let spec = &mut vm.spec;
    let volumes = spec
        .template
        .spec
        .take()
        .map(|template| template.volumes)
        .unwrap_or_default()
        .into_iter()
        .filter(|volume| volume.data_volume.is_some())
        .map(|volume| Volume {
            name: volume.name,
            data_volume: volume.data_volume,
            cloud_init_no_cloud: None,
        })
        .collect();
    spec.template = VirtualMachineInstanceTemplateSpec {
        metadata: None,
        spec: Some(VirtualMachineInstanceSpec {
            volumes,
            ..VirtualMachineInstanceSpec::default()
        }),
    };
    for template in &mut spec.data_volume_templates {
        template.metadata = ObjectMeta {
            name: template.metadata.name.take(),
            ..ObjectMeta::default()
        };
        template.spec.source = None;
        template.spec.source_ref = None;
        if let Some(storage) = template.spec.storage.as_mut() {
            storage.storage_class_name = None;
            storage.access_modes.clear();
        }
    }
}

/// What the cache keeps of a server's Service: the digest of the fields the operator owns,
/// then its name, server label, the operator's annotations, cluster IP and status (the
/// server's address).
pub fn record_service(service: &mut Service) {
    unchanged::record_live(service);
    keep_only_annotations(&mut service.metadata, &[SERVER_LABEL]);
    service.metadata.owner_references = None;
    service.spec = service.spec.take().map(|spec| ServiceSpec {
        cluster_ip: spec.cluster_ip,
        ..ServiceSpec::default()
    });
}

/// What the cache keeps of a server's NetworkPolicy: the digest of the fields the operator
/// owns, its name, server label and the operator's annotations (a reconcile reads nothing
/// else of it).
pub fn record_network_policy(policy: &mut NetworkPolicy) {
    unchanged::record_live(policy);
    keep_only_annotations(&mut policy.metadata, &[SERVER_LABEL]);
    policy.metadata.owner_references = None;
    policy.spec = None;
}

/// Keeps the operator's annotations and the `keep` labels, and drops the rest of the
/// metadata nothing reads (the owner references stay: they map a VM to its server).
fn keep_only_annotations(meta: &mut ObjectMeta, keep: &[&str]) {
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|key, _| {
            key == unchanged::APPLIED_ANNOTATION || key == unchanged::LIVE_ANNOTATION
        });
    }
    meta.managed_fields = None;
    meta.finalizers = None;
    if let Some(labels) = meta.labels.as_mut() {
        labels.retain(|key, _| keep.contains(&key.as_str()));
    }
}

/// Drops what the controller's cache of servers need not keep: their labels and annotations,
/// which no reconcile, trigger mapping or metric reads (managedFields and kubectl's
/// last-applied copy are gone already, see `watch::object_events`). The spec, status and the
/// rest of the metadata are all read.
pub fn trim_server(server: &mut VirtualServer) {
    server.metadata.labels = None;
    server.metadata.annotations = None;
}

/// The servers in `namespace`, from the controller's cache.
pub fn servers_in_namespace(
    store: &reflector::Store<VirtualServer>,
    namespace: &str,
) -> Vec<ObjectRef<VirtualServer>> {
    store
        .state_filter(|s| s.metadata.namespace.as_deref() == Some(namespace))
        .iter()
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

/// The servers installed from ServerImage `image`, from the controller's cache.
pub fn servers_using_image(
    store: &reflector::Store<VirtualServer>,
    image: &str,
) -> Vec<ObjectRef<VirtualServer>> {
    store
        .state_filter(|s| s.spec.image == image)
        .iter()
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

/// One run of the VirtualServer controller; `kubevirt_missing` selects the reduced form.
async fn run_once(
    client: &Client,
    concurrency: u16,
    reporter: &Reporter,
    metrics: &Metrics,
    health: &Arc<Health>,
    kubevirt_missing: Option<String>,
    stop: Stop,
) {
    let (reader, writer) = reflector::store::<VirtualServer>();
    metrics.watch_virtual_servers(reader.clone());
    let by_namespace = ServersByNamespace::default();
    let index = by_namespace.clone();
    let servers = object_events::<VirtualServer>(client, health, Cache::VirtualServers)
        .modify(trim_server)
        .reflect(writer)
        .inspect_ok(move |event| index.apply(event))
        .applied_objects();
    // Images and municipalities are cached whole (a reconcile reads them from the stores);
    // only their spec changes trigger (admission reads the spec), as a municipality's status
    // changes with every VM that starts.
    let (image_reader, image_writer) = reflector::store::<ServerImage>();
    let images = object_events::<ServerImage>(client, health, Cache::ServerImages)
        .reflect(image_writer)
        .touched_objects()
        .predicate_filter(predicates::generation, Default::default());
    let (municipality_reader, municipality_writer) = reflector::store::<Municipality>();
    let municipalities = object_events::<Municipality>(client, health, Cache::ServerMunicipalities)
        .reflect(municipality_writer)
        .touched_objects()
        .predicate_filter(predicates::generation, Default::default());
    // The children are watched by the server label and trigger their server; the cache keeps
    // of each the digest of what the operator owns and what a reconcile reads (`record_*`),
    // so that a reconcile applies only what differs (docs/operator.md, "Caches").
    let with_label = watcher::Config::default().labels(SERVER_LABEL);
    let (service_reader, mut service_writer) = records::records::<ServiceRecord>();
    let services = recorded_events::<Service>(
        client,
        health,
        Cache::Services,
        with_label.clone(),
        record_service,
    )
    .inspect_ok(move |event| service_writer.apply(event))
    .touched_objects();
    let (policy_reader, mut policy_writer) = records::records::<NetworkPolicyRecord>();
    let policies = recorded_events::<NetworkPolicy>(
        client,
        health,
        Cache::ServerNetworkPolicies,
        with_label.clone(),
        record_network_policy,
    )
    .inspect_ok(move |event| policy_writer.apply(event))
    .touched_objects();
    // Namespaces as metadata only: their owner reference names the Municipality.
    let (namespace_reader, namespace_writer) = reflector::store::<PartialObjectMeta<Namespace>>();
    let namespaces = metadata_events::<Namespace>(
        client,
        health,
        Cache::ServerNamespaces,
        watcher::Config::default(),
    )
    .reflect(namespace_writer)
    .touched_objects();
    let (vm_reader, mut vm_writer) = records::records::<VmRecord>();
    let (vmi_reader, mut vmi_writer) = records::records::<VmiRecord>();
    let (snapshot_reader, mut snapshot_writer) = records::records::<SnapshotRecord>();

    let mut context = Context::new(client.clone(), reporter.clone()).with_caches(Caches {
        municipalities: municipality_reader,
        images: image_reader,
        servers: reader.clone(),
        servers_by_namespace: by_namespace,
        namespaces: namespace_reader,
        vms: vm_reader,
        vmis: vmi_reader,
        snapshots: snapshot_reader,
        services: service_reader,
        network_policies: policy_reader,
    });
    if let Some(reason) = &kubevirt_missing {
        context = context.with_kubevirt_unavailable(reason.clone());
    }
    let by_image = reader.clone();
    let by_namespace = reader.clone();
    let in_namespace = reader.clone();
    let mut controller = Controller::for_stream(servers, reader)
        .watches_stream(images, move |image| {
            servers_using_image(&by_image, &image.name_any())
        })
        .watches_stream(municipalities, move |municipality| {
            servers_in_namespace(&by_namespace, &municipality.namespace_name())
        })
        .watches_stream(namespaces, move |namespace| {
            servers_in_namespace(&in_namespace, &namespace.name_any())
        })
        .watches_stream(services, |service| labelled_server(service.meta()))
        .watches_stream(policies, |policy| labelled_server(policy.meta()));
    if kubevirt_missing.is_none() {
        let [vms, vmis, snapshots] = Cache::KUBEVIRT;
        // VMs carry the server as controller owner; instances and snapshots only its label
        // (KubeVirt owns instances; retained snapshots have no owner at all).
        controller = controller
            .owns_stream(
                recorded_events::<VirtualMachine>(
                    client,
                    health,
                    vms,
                    with_label.clone(),
                    record_vm,
                )
                .inspect_ok(move |event| vm_writer.apply(event))
                .touched_objects(),
            )
            .watches_stream(
                selected_events::<VirtualMachineInstance>(client, health, vmis, with_label.clone())
                    .inspect_ok(move |event| vmi_writer.apply(event))
                    .touched_objects(),
                |vmi| labelled_server(vmi.meta()),
            )
            .watches_stream(
                selected_events::<VirtualMachineSnapshot>(client, health, snapshots, with_label)
                    .inspect_ok(move |event| snapshot_writer.apply(event))
                    .touched_objects(),
                |snapshot| labelled_server(snapshot.meta()),
            );
    }
    let metrics = metrics.clone();
    controller
        .with_config(ControllerConfig::default().concurrency(concurrency))
        .graceful_shutdown_on(stop)
        .run(
            move |object, context| {
                let metrics = metrics.clone();
                async move {
                    let reconcile = on_worker(controller::reconcile(object, context));
                    measured(
                        &metrics,
                        VIRTUAL_SERVER_CONTROLLER,
                        Error::metric_label,
                        reconcile,
                    )
                    .await
                }
            },
            controller::error_policy,
            Arc::new(context),
        )
        .for_each(log_result)
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(namespace: &str, name: &str, image: &str) -> VirtualServer {
        let mut server = VirtualServer::new(
            name,
            serde_json::from_value(serde_json::json!({
                "image": image, "cpu": 1, "memory": "1Gi"
            }))
            .expect("spec"),
        );
        server.metadata.namespace = Some(namespace.into());
        server
    }

    #[test]
    fn children_images_and_municipalities_map_to_their_servers() {
        let (store, mut writer) = reflector::store::<VirtualServer>();
        writer.apply_watcher_event(&watcher::Event::Init);
        for object in [
            server("muni-talsi", "web", "debian-12"),
            server("muni-talsi", "db", "rocky-9"),
            server("muni-ventspils", "web", "debian-12"),
        ] {
            writer.apply_watcher_event(&watcher::Event::InitApply(object));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        let sorted = |mut refs: Vec<ObjectRef<VirtualServer>>| {
            refs.sort_by_key(|r| (r.namespace.clone(), r.name.clone()));
            refs.into_iter()
                .map(|r| format!("{}/{}", r.namespace.unwrap_or_default(), r.name))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            sorted(servers_using_image(&store, "debian-12")),
            ["muni-talsi/web", "muni-ventspils/web"]
        );
        assert_eq!(
            sorted(servers_in_namespace(&store, "muni-talsi")),
            ["muni-talsi/db", "muni-talsi/web"]
        );

        let labelled = ObjectMeta {
            name: Some("web-20250602-0200".into()),
            namespace: Some("muni-talsi".into()),
            labels: Some([(SERVER_LABEL.to_string(), "web".to_string())].into()),
            ..ObjectMeta::default()
        };
        assert_eq!(
            labelled_server(&labelled),
            Some(ObjectRef::new("web").within("muni-talsi"))
        );
        assert_eq!(labelled_server(&ObjectMeta::default()), None);
    }

    #[test]
    fn a_recorded_vm_keeps_what_a_reconcile_reads_and_its_owned_fields_digest() {
        use crate::virtual_server::build;
        use crate::virtual_server::controller::disk_growth;
        let server: VirtualServer = serde_json::from_value(serde_json::json!({
            "apiVersion": "novads.io/v1alpha1", "kind": "VirtualServer",
            "metadata": { "name": "web", "namespace": "muni-talsi", "uid": "uid-web" },
            "spec": { "image": "debian-12", "cpu": 2, "memory": "4Gi",
                      "disks": { "systemSize": "40Gi", "data": [{ "name": "data0", "size": "50Gi" }] } }
        }))
        .expect("server");
        let image: ServerImage = serde_json::from_value(serde_json::json!({
            "apiVersion": "novads.io/v1alpha1", "kind": "ServerImage",
            "metadata": { "name": "debian-12" },
            "spec": { "source": { "dataSource": { "name": "debian-12", "namespace": "novads-images" } },
                      "osFamily": "Linux", "version": "12", "supportEnd": "2028-06-30",
                      "lastPatched": "2025-05-01", "minDiskSize": "20Gi", "approved": true }
        }))
        .expect("image");
        let size = k8s_openapi::apimachinery::pkg::api::resource::Quantity("40Gi".into());
        let desired = unchanged::stamped(
            build::virtual_machine(&server, &image, &size).expect("VM builds"),
            &[],
        );
        let mut live = serde_json::to_value(&desired).expect("JSON");
        live["metadata"]["uid"] = serde_json::json!("uid-vm");
        live["metadata"]["managedFields"] = serde_json::json!([{
            "manager": crate::reconcile::FIELD_MANAGER, "operation": "Apply",
            "fieldsType": "FieldsV1",
            "fieldsV1": unchanged::applied_field_set(&serde_json::to_value(&desired).expect("JSON"))
        }]);
        live["status"] = serde_json::json!({ "printableStatus": "Running", "ready": true });
        let full: VirtualMachine = serde_json::from_value(live).expect("VM");
        let mut recorded = full.clone();
        record_vm(&mut recorded);

        assert!(unchanged::is_current(Some(&recorded), &desired));
        assert_eq!(recorded.status, full.status);
        assert_eq!(recorded.spec.run_strategy, full.spec.run_strategy);
        assert_eq!(recorded.metadata.uid, full.metadata.uid);
        assert_eq!(
            recorded.metadata.owner_references,
            full.metadata.owner_references
        );
        assert_eq!(
            labelled_server(&recorded.metadata),
            labelled_server(&full.metadata)
        );
        assert!(recorded.metadata.managed_fields.is_none());
        // Disk growth and a restore's disks are decided alike from the record.
        let mut grown = desired.clone();
        for template in &mut grown.spec.data_volume_templates {
            if let Some(storage) = template.spec.storage.as_mut()
                && let Some(resources) = storage.resources.as_mut()
            {
                resources.requests.insert(
                    "storage".into(),
                    k8s_openapi::apimachinery::pkg::api::resource::Quantity("99Gi".into()),
                );
            }
        }
        assert_eq!(
            disk_growth(Some(&recorded), &grown),
            disk_growth(Some(&full), &grown)
        );
        assert_eq!(disk_growth(Some(&recorded), &grown).len(), 2);
        let (mut from_record, mut from_full) = (desired.clone(), desired.clone());
        build::keep_restored_disks(&mut from_record, &recorded);
        build::keep_restored_disks(&mut from_full, &full);
        assert_eq!(from_record, from_full);
        // Most of the VM is gone.
        assert!(recorded.spec.template.metadata.is_none());
        let size = |vm: &VirtualMachine| serde_json::to_vec(vm).expect("JSON").len();
        assert!(
            size(&recorded) * 2 < size(&full),
            "{} of {}",
            size(&recorded),
            size(&full)
        );
    }
}
