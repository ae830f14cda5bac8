//! What the tenancy controller watches and how it runs: every Municipality (cached), and the
//! five child kinds as metadata only, by the operator's label, each mapped back to the
//! Municipality that controls it.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use novads_crds::Municipality;
use serde::de::DeserializeOwned;

use super::build::TenancySettings;
use super::controller::{self, Context, Error};
use crate::health::{Cache, Health, MUNICIPALITY_CONTROLLER, Metrics};
use crate::reconcile::managed_selector;
use crate::watch::{Stop, log_result, measured, metadata_stream, object_events, on_worker};

/// The Municipalities that own `child` (controller owner references of kind Municipality),
/// as cluster-scoped references. (kube's `owns` would put the child's namespace into the
/// reference, making one Municipality two different queue entries.)
pub fn owning_municipalities(child: &ObjectMeta) -> Vec<ObjectRef<Municipality>> {
    let api_version = Municipality::api_version(&());
    let kind = Municipality::kind(&());
    child
        .owner_references
        .iter()
        .flatten()
        .filter(|owner| {
            owner.controller == Some(true) && owner.api_version == api_version && owner.kind == kind
        })
        .map(|owner| ObjectRef::new(&owner.name))
        .collect()
}

/// A watch of the tenancy's children of kind `K`: labelled ones only, metadata only (owner
/// references are all the trigger needs), nothing cached.
fn child_stream<K>(
    client: &Client,
    health: &Arc<Health>,
    cache: Cache,
) -> impl futures::Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + use<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    metadata_stream(
        client,
        health,
        cache,
        watcher::Config::default().labels(&managed_selector()),
    )
}

/// Runs the tenancy controller until `stop`.
pub async fn run(
    client: Client,
    settings: TenancySettings,
    concurrency: u16,
    reporter: Reporter,
    metrics: Metrics,
    health: Arc<Health>,
    stop: Stop,
) {
    let (reader, writer) = reflector::store::<Municipality>();
    let municipalities = object_events::<Municipality>(&client, &health, Cache::Municipalities)
        .reflect(writer)
        .applied_objects();
    let namespaces = child_stream::<Namespace>(&client, &health, Cache::Namespaces);
    let quotas = child_stream::<ResourceQuota>(&client, &health, Cache::ResourceQuotas);
    let limit_ranges = child_stream::<LimitRange>(&client, &health, Cache::LimitRanges);
    let policies = child_stream::<NetworkPolicy>(&client, &health, Cache::NetworkPolicies);
    let bindings = child_stream::<RoleBinding>(&client, &health, Cache::RoleBindings);

    let context = Arc::new(Context::new(client, settings, reporter));
    Controller::for_stream(municipalities, reader)
        .watches_stream(namespaces, |child| owning_municipalities(child.meta()))
        .watches_stream(quotas, |child| owning_municipalities(child.meta()))
        .watches_stream(limit_ranges, |child| owning_municipalities(child.meta()))
        .watches_stream(policies, |child| owning_municipalities(child.meta()))
        .watches_stream(bindings, |child| owning_municipalities(child.meta()))
        .with_config(ControllerConfig::default().concurrency(concurrency))
        .graceful_shutdown_on(stop)
        .run(
            move |object, context| {
                let metrics = metrics.clone();
                async move {
                    let reconcile = on_worker(controller::reconcile(object, context));
                    measured(
                        &metrics,
                        MUNICIPALITY_CONTROLLER,
                        Error::metric_label,
                        reconcile,
                    )
                    .await
                }
            },
            controller::error_policy,
            context,
        )
        .for_each(log_result)
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    #[test]
    fn children_map_to_their_controlling_municipality_cluster_wide() {
        let owner = |kind: &str, controller: bool| OwnerReference {
            api_version: "novads.io/v1alpha1".into(),
            kind: kind.into(),
            name: "talsi".into(),
            uid: "uid-talsi".into(),
            controller: Some(controller),
            block_owner_deletion: Some(true),
        };
        let meta = ObjectMeta {
            name: Some("novads-quota".into()),
            namespace: Some("muni-talsi".into()),
            owner_references: Some(vec![
                owner("Municipality", true),
                owner("Municipality", false),
                owner("VirtualServer", true),
            ]),
            ..ObjectMeta::default()
        };
        let refs = owning_municipalities(&meta);
        assert_eq!(refs, vec![ObjectRef::<Municipality>::new("talsi")]);
        assert_eq!(refs[0].namespace, None);
        assert!(owning_municipalities(&ObjectMeta::default()).is_empty());
    }
}
