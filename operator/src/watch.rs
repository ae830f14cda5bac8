//! What both controllers' watches share: every stream drops managedFields before anything is
//! cached, marks its [`Cache`] synced after its first complete listing, and children are
//! watched as metadata only; plus the controllers' common run-time plumbing (the stop signal,
//! reconciles recorded in the metrics, results logged).

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use futures::future::Shared;
use futures::{Stream, TryStreamExt};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::health::{Cache, Health, Metrics};
use crate::leader::StopSignal;

/// Ends a controller: the end of this replica's term as leader, or shutdown.
pub type Stop = Shared<StopSignal>;

/// Marks `cache` synced when its watch stream has listed everything once.
fn synced<K>(health: &Arc<Health>, cache: Cache) -> impl Fn(&watcher::Event<K>) + use<K> {
    let health = health.clone();
    move |event| {
        if matches!(event, watcher::Event::InitDone) {
            health.mark_synced(cache);
        }
    }
}

/// The watch events of every `K` in the cluster, managedFields dropped (nothing reads them,
/// and they are much of an object's size in a cache).
pub fn object_events<K>(
    client: &Client,
    health: &Arc<Health>,
    cache: Cache,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + use<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    watcher(Api::<K>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .modify(|object: &mut K| object.managed_fields_mut().clear())
        .inspect_ok(synced(health, cache))
}

/// A metadata-only watch of `K` (managedFields dropped, nothing cached): enough to trigger.
pub fn metadata_stream<K>(
    client: &Client,
    health: &Arc<Health>,
    cache: Cache,
    config: watcher::Config,
) -> impl Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + use<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let api = Api::<PartialObjectMeta<K>>::all(client.clone());
    watcher(api, config)
        .default_backoff()
        .modify(|child: &mut PartialObjectMeta<K>| child.managed_fields_mut().clear())
        .inspect_ok(synced(health, cache))
        .touched_objects()
}

/// Runs `reconcile` and records it in the metrics under `controller`, failed or not (`label`
/// names the kind of error, from a bounded set).
pub async fn measured<E>(
    metrics: &Metrics,
    controller: &str,
    label: fn(&E) -> &'static str,
    reconcile: impl Future<Output = Result<Action, E>>,
) -> Result<Action, E> {
    let started = Instant::now();
    let result = reconcile.await;
    metrics.observe(
        controller,
        started.elapsed(),
        result.as_ref().err().map(label),
    );
    result
}

/// Logs what a controller did with one object.
pub fn log_result<K: Resource, E: std::error::Error>(
    result: Result<(ObjectRef<K>, Action), kube::runtime::controller::Error<E, watcher::Error>>,
) -> std::future::Ready<()> {
    match result {
        Ok((object, action)) => tracing::debug!(%object, ?action, "reconciled"),
        Err(error) => tracing::warn!(%error, "controller error"),
    }
    std::future::ready(())
}
