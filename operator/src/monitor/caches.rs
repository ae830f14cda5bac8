//! The monitor's own watch caches: every object the cluster facts are collected from, kept in
//! reflector stores (managedFields dropped), and a signal whenever one of them changes.
//! Municipalities signal only spec changes: the monitor writes their `status.compliance`
//! itself, and a signal on its own write would evaluate again and again.

use std::fmt::Debug;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{ResourceQuota, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use novads_crds::{Municipality, SecurityExemption, ServerImage, VirtualServer};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use crate::compliance::ClusterObjects;
use crate::kubevirt::VirtualMachineSnapshot;

/// The stores the cluster facts are read from.
#[derive(Clone)]
pub struct Caches {
    pub municipalities: Store<Municipality>,
    pub virtual_servers: Store<VirtualServer>,
    pub server_images: Store<ServerImage>,
    pub network_policies: Store<NetworkPolicy>,
    pub services: Store<Service>,
    pub role_bindings: Store<RoleBinding>,
    pub resource_quotas: Store<ResourceQuota>,
    pub exemptions: Store<SecurityExemption>,
    /// KubeVirt's; without KubeVirt it stays empty, and the facts go without snapshots.
    pub snapshots: Store<VirtualMachineSnapshot>,
}

impl Caches {
    /// Starts a watch per kind: the stores, and the futures that fill them (they run until
    /// dropped), each notifying `changed` on every change. Snapshots are watched only
    /// `with_snapshots` (KubeVirt serves them); otherwise their store stays empty.
    pub fn watch(
        client: &Client,
        changed: &Arc<Notify>,
        with_snapshots: bool,
    ) -> (Self, Vec<BoxFuture<'static, ()>>) {
        let mut drivers = Vec::new();
        let municipalities = {
            let (reader, writer) = reflector::store::<Municipality>();
            let stream = events::<Municipality>(client)
                .reflect(writer)
                .touched_objects()
                .predicate_filter(predicates::generation, Default::default());
            drivers.push(drive(stream, changed.clone()));
            reader
        };
        let (virtual_servers, d) = cached::<VirtualServer>(client, changed);
        drivers.push(d);
        let (server_images, d) = cached::<ServerImage>(client, changed);
        drivers.push(d);
        let (network_policies, d) = cached::<NetworkPolicy>(client, changed);
        drivers.push(d);
        let (services, d) = cached::<Service>(client, changed);
        drivers.push(d);
        let (role_bindings, d) = cached::<RoleBinding>(client, changed);
        drivers.push(d);
        let (resource_quotas, d) = cached::<ResourceQuota>(client, changed);
        drivers.push(d);
        let (exemptions, d) = cached::<SecurityExemption>(client, changed);
        drivers.push(d);
        let snapshots = if with_snapshots {
            let (snapshots, d) = cached::<VirtualMachineSnapshot>(client, changed);
            drivers.push(d);
            snapshots
        } else {
            reflector::store::<VirtualMachineSnapshot>().0
        };
        let caches = Self {
            municipalities,
            virtual_servers,
            server_images,
            network_policies,
            services,
            role_bindings,
            resource_quotas,
            exemptions,
            snapshots,
        };
        (caches, drivers)
    }

    /// Waits until every store but the snapshots' has listed once.
    pub async fn wait_until_ready(&self) -> Result<(), reflector::store::WriterDropped> {
        self.municipalities.wait_until_ready().await?;
        self.virtual_servers.wait_until_ready().await?;
        self.server_images.wait_until_ready().await?;
        self.network_policies.wait_until_ready().await?;
        self.services.wait_until_ready().await?;
        self.role_bindings.wait_until_ready().await?;
        self.resource_quotas.wait_until_ready().await?;
        self.exemptions.wait_until_ready().await
    }

    /// What the stores hold now.
    pub fn objects(&self) -> ClusterObjects {
        fn all<K: Resource + Clone>(store: &Store<K>) -> Vec<K>
        where
            K::DynamicType: Eq + std::hash::Hash + Clone,
        {
            store.state().iter().map(|o| o.as_ref().clone()).collect()
        }
        ClusterObjects {
            municipalities: all(&self.municipalities),
            virtual_servers: all(&self.virtual_servers),
            server_images: all(&self.server_images),
            network_policies: all(&self.network_policies),
            services: all(&self.services),
            role_bindings: all(&self.role_bindings),
            resource_quotas: all(&self.resource_quotas),
            snapshots: all(&self.snapshots),
            exemptions: all(&self.exemptions),
        }
    }
}

/// Every `K` in the cluster, managedFields dropped.
fn events<K>(
    client: &Client,
) -> impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + use<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    watcher(Api::<K>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .modify(|object: &mut K| object.managed_fields_mut().clear())
}

/// A store of every `K`, and the future that fills it and signals each change.
fn cached<K>(client: &Client, changed: &Arc<Notify>) -> (Store<K>, BoxFuture<'static, ()>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store::<K>();
    let stream = events::<K>(client).reflect(writer).touched_objects();
    (reader, drive(stream, changed.clone()))
}

/// Runs a watch stream, signalling each object it yields and logging its errors.
fn drive<K, S>(stream: S, changed: Arc<Notify>) -> BoxFuture<'static, ()>
where
    K: Resource<DynamicType = ()> + 'static,
    S: futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
{
    stream
        .for_each(move |event| {
            match event {
                Ok(_) => changed.notify_one(),
                Err(error) => tracing::warn!(%error, kind = %K::kind(&()), "monitor watch failed"),
            }
            std::future::ready(())
        })
        .boxed()
}
