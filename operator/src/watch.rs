//! What both controllers' watches share: every stream drops managedFields (and kubectl's
//! last-applied copy) before anything is cached and marks its [`Cache`] synced after its first
//! complete listing; children are cached whole or watched as metadata only, by label; plus the
//! controllers' common run-time plumbing (the stop signal, reconciles run on the runtime's
//! worker threads and recorded in the metrics, results logged).

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

/// The watch events of every `K` in the cluster, trimmed (see [`trim`]).
pub fn object_events<K>(
    client: &Client,
    health: &Arc<Health>,
    cache: Cache,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + use<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    selected_events(client, health, cache, watcher::Config::default())
}

/// The watch events of the `K`s that `config` selects (a controller's children, by label),
/// trimmed (see [`trim`]), for a cache of the whole objects.
pub fn selected_events<K>(
    client: &Client,
    health: &Arc<Health>,
    cache: Cache,
    config: watcher::Config,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + use<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    recorded_events(client, health, cache, config, |_| {})
}

/// [`selected_events`], with `record` run on each object first, while it still has its
/// managedFields (the VirtualServer controller notes what its field manager owns, then keeps
/// only a small part of the object).
pub fn recorded_events<K>(
    client: &Client,
    health: &Arc<Health>,
    cache: Cache,
    config: watcher::Config,
    record: fn(&mut K),
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + use<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    watcher(Api::<K>::all(client.clone()), config)
        .default_backoff()
        .modify(record)
        .modify(trim)
        .inspect_ok(synced(health, cache))
}

/// The watch events of the metadata of the `K`s that `config` selects, trimmed (see [`trim`]).
pub fn metadata_events<K>(
    client: &Client,
    health: &Arc<Health>,
    cache: Cache,
    config: watcher::Config,
) -> impl Stream<Item = Result<watcher::Event<PartialObjectMeta<K>>, watcher::Error>> + Send + use<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let api = Api::<PartialObjectMeta<K>>::all(client.clone());
    watcher(api, config)
        .default_backoff()
        .modify(trim)
        .inspect_ok(synced(health, cache))
}

/// A metadata-only watch of `K` (trimmed, nothing cached): enough to trigger.
pub fn metadata_stream<K>(
    client: &Client,
    health: &Arc<Health>,
    cache: Cache,
    config: watcher::Config,
) -> impl Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + use<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    metadata_events(client, health, cache, config).touched_objects()
}

/// Drops what nothing reads before an object is cached: managedFields and kubectl's
/// last-applied copy of the object, often much of its size.
fn trim<K: Resource>(object: &mut K) {
    object.managed_fields_mut().clear();
    if let Some(annotations) = object.meta_mut().annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// The annotation `kubectl apply` keeps a copy of the applied object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A reconcile that did not finish on its worker thread: it panicked, or the runtime shut down
/// under it. Counted and backed off as any other failure.
#[derive(Debug, thiserror::Error)]
#[error("the reconcile task ended without a result: {0}")]
pub struct TaskFailed(String);

/// Runs `reconcile` as a task of its own. The controller runtime polls every reconcile inside
/// its one stream, so without this all of a controller's reconciles share one thread however
/// many cores the runtime has: decoding answers and building objects would use one core. The
/// task is aborted if the caller stops waiting (the controller is dropped), so no reconcile
/// outlives its controller.
pub async fn on_worker<E>(
    reconcile: impl Future<Output = Result<Action, E>> + Send + 'static,
) -> Result<Action, E>
where
    E: From<TaskFailed> + Send + 'static,
{
    /// Aborts the task when dropped; after the task finished this does nothing.
    struct AbortOnDrop(tokio::task::AbortHandle);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let task = tokio::spawn(reconcile);
    let _abort = AbortOnDrop(task.abort_handle());
    match task.await {
        Ok(result) => result,
        Err(ended) => Err(TaskFailed(ended.to_string()).into()),
    }
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error(transparent)]
    struct Failed(#[from] TaskFailed);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reconcile_on_a_worker_answers_as_it_would_inline() {
        let action = on_worker(async { Ok::<_, Failed>(Action::await_change()) }).await;
        assert_eq!(action.expect("reconciled"), Action::await_change());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_reconcile_is_a_failure_not_a_crash() {
        let result = on_worker(async {
            if std::hint::black_box(true) {
                panic!("a bug in a reconcile");
            }
            Ok::<_, Failed>(Action::await_change())
        })
        .await;
        let error = result.expect_err("the panic is reported as an error");
        assert!(error.to_string().contains("panic"), "{error}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reconcile_whose_caller_stops_waiting_is_aborted() {
        let finished = Arc::new(AtomicBool::new(false));
        let reconcile = {
            let finished = finished.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                finished.store(true, Ordering::SeqCst);
                Ok::<_, Failed>(Action::await_change())
            }
        };
        let waited = tokio::time::timeout(Duration::from_millis(20), on_worker(reconcile)).await;
        assert!(waited.is_err(), "the caller gave up first");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(
            !finished.load(Ordering::SeqCst),
            "the task did not outlive its caller"
        );
    }
}
