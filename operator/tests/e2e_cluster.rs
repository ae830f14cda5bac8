//! End-to-end against a real cluster (kind/k3d with the CRDs installed: `novads crds |
//! kubectl apply -f -`). Runs only when KUBECONFIG is set and the cluster answers; otherwise
//! it says so and passes.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ResourceQuota};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::events::Reporter;
use novads_crds::Municipality;
use novads_operator::municipality::{self, Context};
use novads_operator::tenancy::TenancySettings;

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
