//! What every controller of the operator does the same way: who it says it is (field manager,
//! labels), how it writes (server-side apply, deletes that tolerate absence, finalizer and
//! status writes), back off per object after failures, publish Events that never fail a
//! reconcile, and keep conditions' transition times.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

/// Field manager of every server-side apply the operator makes, and the `managed-by` label
/// of everything it creates.
pub const FIELD_MANAGER: &str = "novads-operator";
/// Label naming who manages an object (value [`FIELD_MANAGER`] on the operator's objects).
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Label naming the application an object belongs to (value `novads`).
pub const PART_OF_LABEL: &str = "app.kubernetes.io/part-of";
/// Label naming the municipality (its code) on everything the operator creates for it.
pub const MUNICIPALITY_LABEL: &str = "novads.io/municipality";

/// The labels every object the operator creates carries.
pub fn managed_labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), FIELD_MANAGER.to_string()),
        (PART_OF_LABEL.to_string(), "novads".to_string()),
    ])
}

/// Label selector of every object the operator creates.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY_LABEL}={FIELD_MANAGER}")
}

/// Server-side applies a cluster-scoped `object`, forced: the operator owns these fields.
pub async fn apply<K>(client: &Client, object: &K) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
{
    Api::<K>::all(client.clone())
        .patch(&object.name_any(), &apply_params(), &Patch::Apply(object))
        .await
}

/// Server-side applies `object` in `namespace`, forced, and returns it as the API server
/// holds it (status included).
pub async fn apply_namespaced<K>(
    client: &Client,
    namespace: &str,
    object: &K,
) -> Result<K, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    Api::<K>::namespaced(client.clone(), namespace)
        .patch(&object.name_any(), &apply_params(), &Patch::Apply(object))
        .await
}

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Writes the status subresource of `object` with a server-side apply under [`FIELD_MANAGER`]
/// (forced): the one way both controllers write status.
///
/// Server-side apply rather than a merge patch, because a status can have more than one
/// writer: a Municipality's `status.compliance` belongs to the security monitor (field manager
/// `novads-monitor`). An apply names its writer; the API server keeps each manager's fields
/// apart, never touches a field the apply leaves out, and removes a field the operator stops
/// setting unless another manager owns it. A merge patch would need a diff against the cached
/// status (explicit `null`s for removed fields), which a stale cache gets wrong and which
/// would erase other writers' fields too. So callers leave out what is not theirs, and skip
/// the write when nothing changed (an unchanged status is never written, so status writes do
/// not retrigger the controller).
pub async fn apply_status<K, S>(api: &Api<K>, object: &K, status: &S) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned,
    S: Serialize,
{
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(&object.name_any(), &apply_params(), &Patch::Apply(&patch))
        .await?;
    Ok(())
}

/// Deletes an object in the background; one that is already gone is fine.
pub async fn delete_namespaced<K>(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<(), kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api = Api::<K>::namespaced(client.clone(), namespace);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error),
    }
}

/// Requeue delay after the `failures`-th consecutive failure: 5 s doubling to at most 5 min.
pub fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(6);
    Duration::from_secs(5 * 2u64.pow(exponent)).min(Duration::from_secs(300))
}

/// Consecutive failures per object, for a controller's error policy.
#[derive(Debug, Default)]
pub struct FailureCounts(Mutex<HashMap<String, u32>>);

impl FailureCounts {
    /// Forgets the failures of `key` after a successful reconcile.
    pub fn record_success(&self, key: &str) {
        if let Ok(mut failures) = self.0.lock() {
            failures.remove(key);
        }
    }

    /// Counts one more failure of `key` and returns how many there were in a row.
    pub fn record_failure(&self, key: &str) -> u32 {
        match self.0.lock() {
            Ok(mut failures) => {
                let count = failures.entry(key.to_string()).or_insert(0);
                *count = count.saturating_add(1);
                *count
            }
            // A poisoned lock only loses back-off history; fall back to a long wait.
            Err(_) => 8,
        }
    }
}

/// Shards of kube's [`Recorder`]. A `Recorder` drops its expired Events by scanning its whole
/// cache of recent Events under one lock on every publish: with one recorder for thousands of
/// objects, each publish scanned every recent Event of the fleet while all other publishes
/// waited (a quarter of the CPU of a cold start of 10,000 servers, and one lock every reconcile
/// passed through). Each object's Events always go to the same shard, so the recorder's
/// aggregation of repeated Events into a series still sees all of them.
pub struct EventRecorder {
    shards: Vec<Recorder>,
}

/// Recorders an [`EventRecorder`] spreads objects over.
const EVENT_SHARDS: usize = 64;

impl EventRecorder {
    pub fn new(client: &Client, reporter: &Reporter) -> Self {
        Self {
            shards: (0..EVENT_SHARDS)
                .map(|_| Recorder::new(client.clone(), reporter.clone()))
                .collect(),
        }
    }

    /// The recorder of `object`'s shard, chosen by its namespace and name.
    fn shard(&self, object: &ObjectReference) -> &Recorder {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        object.namespace.hash(&mut hasher);
        object.name.hash(&mut hasher);
        // The remainder is below the number of shards, which is not zero.
        let index = (hasher.finish() % self.shards.len() as u64) as usize;
        &self.shards[index]
    }
}

/// Publishes an Event about `object`.
pub async fn publish(
    recorder: &EventRecorder,
    object: &ObjectReference,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: action.to_string(),
        secondary: None,
    };
    // An event is a courtesy to the admin; failing to record one must not fail the reconcile.
    if let Err(error) = recorder.shard(object).publish(&event, object).await {
        tracing::warn!(%error, reason, "cannot publish event");
    }
}

/// A condition that keeps its `lastTransitionTime` from `previous` while its status stays.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    // The transition time moves only when the status does (API conventions); keeping it makes
    // an unchanged status an exact no-op, so status writes do not retrigger the controller.
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        last_transition_time,
        observed_generation: generation,
    }
}

/// Sets `object`'s finalizers with a merge patch carrying the observed resourceVersion, so a
/// concurrent change makes it fail (409) rather than overwrite other controllers' finalizers.
/// Returns the object as patched.
pub async fn patch_finalizers<K>(
    api: &Api<K>,
    object: &K,
    finalizers: Vec<String>,
) -> Result<K, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let patch = json!({
        "metadata": {
            "finalizers": finalizers,
            "resourceVersion": object.resource_version(),
        }
    });
    api.patch(
        &object.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
}
