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
use k8s_openapi::api::core::v1::{Namespace, Service};
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
use crate::kubevirt::{VirtualMachine, VirtualMachineInstance, VirtualMachineSnapshot};
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
    // The children are watched by the server label and trigger their server; the watch notes
    // the digest of what the operator owns (`unchanged::record_live`, while the managedFields
    // are there) and the cache keeps a record of it and of what a reconcile reads (`records`),
    // so that a reconcile applies only what differs (docs/operator.md, "Caches").
    let with_label = watcher::Config::default().labels(SERVER_LABEL);
    let (service_reader, mut service_writer) = records::records::<ServiceRecord>();
    let services = recorded_events::<Service>(
        client,
        health,
        Cache::Services,
        with_label.clone(),
        unchanged::record_live,
    )
    .inspect_ok(move |event| service_writer.apply(event))
    .touched_objects();
    let (policy_reader, mut policy_writer) = records::records::<NetworkPolicyRecord>();
    let policies = recorded_events::<NetworkPolicy>(
        client,
        health,
        Cache::ServerNetworkPolicies,
        with_label.clone(),
        unchanged::record_live,
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
                    unchanged::record_live,
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
}
