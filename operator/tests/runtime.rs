//! The whole operator runtime ([`novads_operator::run_with_client`]) against a fake API server
//! (tower-test): it takes the Lease before it watches anything, watches Municipalities and
//! (metadata only, by label) the five child kinds, reconciles with metrics, reports
//! ready, runs the security monitor, and on shutdown stops and releases the Lease.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Response;
use kube::client::Body;
use novads_operator::municipality::controller::FINALIZER;
use novads_operator::{OperatorOptions, run_with_client};
use serde_json::{Value, json};
use tower_test::mock;

mod support;
use support::{FakeApi, eventually, fake_client, free_port};

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/novads/leases/novads-operator";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/novads/leases?";
const SELECTOR: &str = "labelSelector=app.kubernetes.io%2Fmanaged-by%3Dnovads-operator";

#[derive(Default)]
struct Fake {
    lease: Option<Value>,
    /// (method, uri, accept header, body) of every request, in order.
    log: Vec<(String, String, String, Value)>,
    /// Watch requests are held open (never answered) until the client drops them.
    open_watches: Vec<mock::SendResponse<Response<Body>>>,
}

fn status(code: u16, reason: &str) -> Value {
    json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code, "message": reason })
}

fn municipality() -> Value {
    json!({
        "apiVersion": "novads.io/v1alpha1", "kind": "Municipality",
        "metadata": {
            "name": "talsi", "uid": "uid-talsi", "generation": 1, "resourceVersion": "100",
            "finalizers": [FINALIZER],
            "managedFields": [{ "manager": "kubectl", "operation": "Apply", "apiVersion": "novads.io/v1alpha1" }]
        },
        "spec": {
            "code": "talsi", "displayName": "Talsu novads", "realm": "talsi",
            "quotas": { "cpu": 4, "memory": "8Gi", "storage": "100Gi", "maxVirtualServers": 2 }
        }
    })
}

impl Fake {
    fn answer(&mut self, method: &str, uri: &str, body: Value) -> Option<(u16, Value)> {
        let path = uri.split('?').next().unwrap_or_default();
        Some(match (method, path) {
            ("GET", LEASE) => match &self.lease {
                Some(lease) => (200, lease.clone()),
                None => (404, status(404, "NotFound")),
            },
            ("POST", _) if uri == LEASES => {
                let mut lease = body;
                lease["metadata"]["resourceVersion"] = json!("1");
                self.lease = Some(lease.clone());
                (201, lease)
            }
            ("PUT", LEASE) => {
                let mut lease = body;
                let version: u64 = lease["metadata"]["resourceVersion"]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                lease["metadata"]["resourceVersion"] = json!((version + 1).to_string());
                self.lease = Some(lease.clone());
                (200, lease)
            }
            _ if uri.contains("watch=true") => return None,
            ("GET", "/apis/novads.io/v1alpha1/municipalities") => (
                200,
                json!({
                    "apiVersion": "novads.io/v1alpha1", "kind": "MunicipalityList",
                    "metadata": { "resourceVersion": "200" }, "items": [municipality()]
                }),
            ),
            // The tenancy's first request fails: the reconcile error shows in the metrics.
            ("GET", "/api/v1/namespaces/muni-talsi") => (500, status(500, "InternalError")),
            ("POST", "/apis/events.k8s.io/v1/namespaces/default/events") => (201, body),
            // The security monitor's Reports and status.compliance.
            ("PATCH", _) if path.starts_with("/apis/openreports.io/") => (200, body),
            ("PATCH", "/apis/novads.io/v1alpha1/municipalities/talsi/status") => {
                let mut object = municipality();
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

#[tokio::test]
async fn leads_watches_reconciles_with_metrics_and_releases_on_shutdown() {
    let fake = Arc::new(Mutex::new(Fake::default()));
    let addr = free_port();
    let options = OperatorOptions {
        metrics_listen: addr,
        lease_namespace: "novads".into(),
        identity: Some("operator-0".into()),
        ..OperatorOptions::default()
    };
    let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let operator = tokio::spawn(run_with_client(fake_client(&fake), options, async {
        let _ = shutdown_rx.await;
    }));

    assert_eq!(
        eventually(addr, "/healthz", |code, _| code == 200).await,
        "ok"
    );
    assert_eq!(
        eventually(addr, "/readyz", |code, body| code == 200 && body == "ready").await,
        "ready"
    );
    let metrics = eventually(addr, "/metrics", |_, body| {
        body.contains(
            "novads_operator_reconcile_errors_total{controller=\"municipality\",error=\"api\"}",
        ) && body.contains("novads_compliance_ratio{municipality=\"talsi\"}")
    })
    .await;
    assert!(metrics.contains("novads_operator_leader 1"), "{metrics}");

    shutdown_tx.send(()).expect("operator running");
    tokio::time::timeout(Duration::from_secs(15), operator)
        .await
        .expect("stops in time")
        .expect("task")
        .expect("run succeeds");

    let fake = fake.lock().expect("fake");
    let log = &fake.log;
    let first_watch = log
        .iter()
        .position(|(_, uri, _, _)| !uri.contains("/leases"))
        .expect("watched something");
    let created = log
        .iter()
        .position(|(method, uri, _, _)| method == "POST" && uri == LEASES)
        .expect("lease created");
    assert!(created < first_watch, "the lease comes before any watch");
    assert_eq!(
        log[created].3["spec"]["holderIdentity"], "operator-0",
        "{:?}",
        log[created]
    );

    for kind in [
        "/api/v1/namespaces?",
        "/api/v1/resourcequotas?",
        "/api/v1/limitranges?",
        "/apis/networking.k8s.io/v1/networkpolicies?",
        "/apis/rbac.authorization.k8s.io/v1/rolebindings?",
    ] {
        // The tenancy controller's watch (the security monitor watches some kinds in full).
        assert!(
            log.iter().any(|(_, uri, accept, _)| uri.starts_with(kind)
                && uri.contains(SELECTOR)
                && accept.contains("as=PartialObjectMetadata")),
            "no metadata-only watch of {kind} by label"
        );
    }
    assert!(
        log.iter()
            .any(|(_, uri, _, _)| uri.starts_with("/apis/novads.io/v1alpha1/municipalities?")),
        "watches municipalities"
    );

    // The security monitor evaluated and applied its outputs as novads-monitor.
    for path in [
        "/apis/openreports.io/v1alpha1/namespaces/muni-talsi/reports/novads-compliance?",
        "/apis/openreports.io/v1alpha1/clusterreports/novads-compliance?",
        "/apis/novads.io/v1alpha1/municipalities/talsi/status?",
    ] {
        assert!(
            log.iter().any(|(method, uri, _, _)| method == "PATCH"
                && uri.starts_with(path)
                && uri.contains("fieldManager=novads-monitor")),
            "no apply of {path}"
        );
    }

    // Released: no holder, so another replica takes over at once.
    let last_lease_write = log
        .iter()
        .rev()
        .find(|(method, uri, _, _)| method == "PUT" && uri.starts_with(LEASE))
        .expect("lease released");
    assert_eq!(last_lease_write.3["spec"]["holderIdentity"], Value::Null);
    assert_eq!(last_lease_write.3["spec"]["leaseDurationSeconds"], 1);
    assert!(
        fake.lease
            .as_ref()
            .is_some_and(|l| l["spec"]["holderIdentity"].is_null()),
        "{:?}",
        fake.lease
    );
}
