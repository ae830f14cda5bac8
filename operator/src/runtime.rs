//! What `novads operator` runs: health and metrics endpoints, leader election, and — while
//! this replica leads — the Municipality controller.

use std::fmt::Debug;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use novads_crds::Municipality;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::leader::{self, Elector, LeaderError, LeaseConfig, LeaseLock, StopSignal};
use crate::municipality::{self, Context};
use crate::tenancy::{FIELD_MANAGER, TenancySettings};

/// The `controller` label of the Municipality controller's metrics.
pub const MUNICIPALITY_CONTROLLER: &str = "municipality";

/// How `novads operator` runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorOptions {
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub metrics_listen: SocketAddr,
    /// Namespace of the leader-election Lease; empty means the client's default namespace
    /// (in a pod: its own namespace, from the service account).
    pub lease_namespace: String,
    /// Name of the leader-election Lease.
    pub lease_name: String,
    /// How long a Lease lasts without renewal; renewed every third of it.
    pub lease_duration: Duration,
    /// Leader-election identity; `None` means the pod name (`POD_NAME`) or host name plus a
    /// random suffix.
    pub identity: Option<String>,
    /// How many Municipalities are reconciled at once.
    pub concurrency: u16,
    /// What every tenancy is built with.
    pub tenancy: TenancySettings,
}

impl Default for OperatorOptions {
    fn default() -> Self {
        Self {
            metrics_listen: SocketAddr::from(([0, 0, 0, 0], 8081)),
            lease_namespace: String::new(),
            lease_name: "novads-operator".to_string(),
            lease_duration: leader::DEFAULT_LEASE_DURATION,
            identity: None,
            concurrency: 8,
            tenancy: TenancySettings::default(),
        }
    }
}

/// Why the operator stopped with a failure.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("cannot configure the Kubernetes client (in-cluster config or KUBECONFIG): {0}")]
    Client(#[source] kube::Error),
    #[error("cannot listen on {addr} for health and metrics: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the health and metrics server failed: {0}")]
    Serve(#[source] std::io::Error),
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("leader election failed: {0}")]
    Leader(#[from] LeaderError),
}

/// The operator's Prometheus metrics (prefix `novads_operator_`, bounded labels).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    reconciles: IntCounterVec,
    errors: IntCounterVec,
    duration: HistogramVec,
    leader: IntGauge,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(
                "novads_operator_reconciles_total",
                "Reconciles started, per controller.",
            ),
            &["controller"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "novads_operator_reconcile_errors_total",
                "Reconciles that failed, per controller and kind of error.",
            ),
            &["controller", "error"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "novads_operator_reconcile_duration_seconds",
                "How long reconciles take, per controller.",
            )
            .buckets(vec![
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["controller"],
        )?;
        let leader = IntGauge::new(
            "novads_operator_leader",
            "1 while this replica holds the leader Lease and runs the controllers.",
        )?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        // Present from the start, so dashboards and rate() see zeros rather than nothing.
        reconciles.with_label_values(&[MUNICIPALITY_CONTROLLER]);
        duration.with_label_values(&[MUNICIPALITY_CONTROLLER]);
        Ok(Self {
            registry,
            reconciles,
            errors,
            duration,
            leader,
        })
    }

    /// Records one reconcile of `controller`, failed with `error` (a bounded label such as
    /// [`municipality::Error::metric_label`]) or not.
    pub fn observe(&self, controller: &str, elapsed: Duration, error: Option<&str>) {
        self.reconciles.with_label_values(&[controller]).inc();
        self.duration
            .with_label_values(&[controller])
            .observe(elapsed.as_secs_f64());
        if let Some(error) = error {
            self.errors.with_label_values(&[controller, error]).inc();
        }
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::warn!(%error, "cannot encode metrics");
        }
        String::from_utf8_lossy(&buffer).into_owned()
    }
}

/// Whether this replica leads and whether each of its watch caches has listed once.
#[derive(Debug)]
pub struct Health {
    leading: AtomicBool,
    synced: Vec<AtomicBool>,
}

impl Health {
    /// Health of a replica with `caches` watch streams.
    pub fn new(caches: usize) -> Self {
        Self {
            leading: AtomicBool::new(false),
            synced: (0..caches).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    fn set_leading(&self, leading: bool) {
        self.leading.store(leading, Ordering::SeqCst);
        if leading {
            for cache in &self.synced {
                cache.store(false, Ordering::SeqCst);
            }
        }
    }

    fn mark_synced(&self, cache: usize) {
        if let Some(flag) = self.synced.get(cache) {
            flag.store(true, Ordering::SeqCst);
        }
    }

    /// Ready: standing by as a non-leader, or leading with every cache listed.
    pub fn ready(&self) -> Result<&'static str, &'static str> {
        if !self.leading.load(Ordering::SeqCst) {
            Ok("standby")
        } else if self.synced.iter().all(|c| c.load(Ordering::SeqCst)) {
            Ok("ready")
        } else {
            Err("leading, caches not synced yet")
        }
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Metrics,
    health: Arc<Health>,
}

/// `/healthz`, `/readyz` and `/metrics`.
pub fn router(metrics: Metrics, health: Arc<Health>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AppState { metrics, health })
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.health.ready() {
        Ok(what) => (StatusCode::OK, what),
        Err(what) => (StatusCode::SERVICE_UNAVAILABLE, what),
    }
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// Runs the operator until `shutdown` completes: builds a client (in-cluster config or
/// `KUBECONFIG`), then [`run_with_client`].
pub async fn run(
    options: OperatorOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), OperatorError> {
    let client = Client::try_default().await.map_err(OperatorError::Client)?;
    run_with_client(client, options, shutdown).await
}

/// [`run`] with a given client: serves health and metrics, campaigns for the Lease, runs the
/// controllers while leading; on `shutdown` stops the controllers, releases the Lease and
/// stops serving.
pub async fn run_with_client(
    client: Client,
    options: OperatorOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), OperatorError> {
    let metrics = Metrics::new()?;
    let health = Arc::new(Health::new(CACHES));
    let listener = tokio::net::TcpListener::bind(options.metrics_listen)
        .await
        .map_err(|source| OperatorError::Listen {
            addr: options.metrics_listen,
            source,
        })?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut server_stop = stop_rx.clone();
    let server = tokio::spawn(
        axum::serve(listener, router(metrics.clone(), health.clone()))
            .with_graceful_shutdown(async move {
                let _ = server_stop.wait_for(|stopped| *stopped).await;
            })
            .into_future(),
    );
    tracing::info!(listen = %options.metrics_listen, "serving /healthz, /readyz and /metrics");

    let identity = options
        .identity
        .clone()
        .unwrap_or_else(leader::default_identity);
    let lease_namespace = if options.lease_namespace.is_empty() {
        client.default_namespace().to_string()
    } else {
        options.lease_namespace.clone()
    };
    tracing::info!(%identity, lease = %format!("{lease_namespace}/{}", options.lease_name), "campaigning for leadership");
    let lock = LeaseLock::new(client.clone(), &lease_namespace, &options.lease_name);
    let elector = Elector::new(LeaseConfig::new(identity.clone(), options.lease_duration));
    let on_change = {
        let metrics = metrics.clone();
        let health = health.clone();
        move |leading: bool| {
            metrics.set_leader(leading);
            health.set_leading(leading);
        }
    };
    let work = leader::lead(lock, elector, stop_rx, on_change, |stop| {
        run_controllers(
            client.clone(),
            options.tenancy.clone(),
            options.concurrency,
            identity.clone(),
            metrics.clone(),
            health.clone(),
            stop,
        )
    });
    tokio::pin!(work);
    let elected = tokio::select! {
        result = &mut work => result,
        () = shutdown => {
            tracing::info!("shutting down");
            stop_tx.send_replace(true);
            (&mut work).await
        }
    };
    stop_tx.send_replace(true);
    let served = match server.await {
        Ok(result) => result.map_err(OperatorError::Serve),
        Err(join) => Err(OperatorError::Serve(std::io::Error::other(join))),
    };
    elected?;
    served
}

/// Watch streams whose first complete listing makes a leader ready: Municipalities and the
/// five child kinds.
const CACHES: usize = 6;

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

/// Label selector of every child the tenancy creates.
fn child_selector() -> String {
    format!("app.kubernetes.io/managed-by={FIELD_MANAGER}")
}

/// Marks cache `index` synced when its watch stream has listed everything once.
fn synced<K>(health: &Arc<Health>, index: usize) -> impl Fn(&watcher::Event<K>) + use<K> {
    let health = health.clone();
    move |event| {
        if matches!(event, watcher::Event::InitDone) {
            health.mark_synced(index);
        }
    }
}

/// A watch of the operator's children of kind `K`: labelled ones only, metadata only (owner
/// references are all the trigger needs), managedFields dropped, nothing cached.
fn child_stream<K>(
    client: &Client,
    health: &Arc<Health>,
    index: usize,
) -> impl futures::Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + use<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let api = Api::<PartialObjectMeta<K>>::all(client.clone());
    watcher(api, watcher::Config::default().labels(&child_selector()))
        .default_backoff()
        .modify(|child: &mut PartialObjectMeta<K>| child.managed_fields_mut().clear())
        .inspect_ok(synced(health, index))
        .touched_objects()
}

async fn run_controllers(
    client: Client,
    settings: TenancySettings,
    concurrency: u16,
    identity: String,
    metrics: Metrics,
    health: Arc<Health>,
    stop: StopSignal,
) {
    let (reader, writer) = reflector::store::<Municipality>();
    let municipalities = watcher(
        Api::<Municipality>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(|m: &mut Municipality| m.managed_fields_mut().clear())
    .inspect_ok(synced(&health, 0))
    .reflect(writer)
    .applied_objects();
    let namespaces = child_stream::<Namespace>(&client, &health, 1);
    let quotas = child_stream::<ResourceQuota>(&client, &health, 2);
    let limit_ranges = child_stream::<LimitRange>(&client, &health, 3);
    let policies = child_stream::<NetworkPolicy>(&client, &health, 4);
    let bindings = child_stream::<RoleBinding>(&client, &health, 5);

    let reporter = Reporter {
        controller: FIELD_MANAGER.to_string(),
        instance: Some(identity),
    };
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
                async move { measured(&metrics, object, context).await }
            },
            municipality::error_policy,
            context,
        )
        .for_each(|result| {
            match result {
                Ok((object, action)) => tracing::debug!(%object, ?action, "reconciled"),
                Err(error) => tracing::warn!(%error, "controller error"),
            }
            std::future::ready(())
        })
        .await;
    tracing::info!("controllers stopped");
}

/// [`municipality::reconcile`], recorded in the metrics.
async fn measured(
    metrics: &Metrics,
    object: Arc<Municipality>,
    context: Arc<Context>,
) -> Result<Action, municipality::Error> {
    let started = Instant::now();
    let result = municipality::reconcile(object, context).await;
    metrics.observe(
        MUNICIPALITY_CONTROLLER,
        started.elapsed(),
        result.as_ref().err().map(municipality::Error::metric_label),
    );
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use tower::ServiceExt;

    async fn get_text(router: Router, path: &str) -> (StatusCode, String) {
        let response = router
            .oneshot(
                Request::builder()
                    .uri(path)
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("response");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[test]
    fn defaults_match_the_documentation() {
        let options = OperatorOptions::default();
        assert_eq!(options.metrics_listen.to_string(), "0.0.0.0:8081");
        assert_eq!(options.lease_name, "novads-operator");
        assert_eq!(options.lease_duration, Duration::from_secs(15));
        assert_eq!(options.concurrency, 8);
        assert_eq!(options.identity, None);
        assert_eq!(options.lease_namespace, "");
    }

    #[tokio::test]
    async fn metrics_count_reconciles_errors_and_leadership() {
        let metrics = Metrics::new().expect("metrics");
        let conflict = municipality::Error::Kube(kube::Error::Api(Box::new(
            serde_json::from_value(serde_json::json!({
                "status": "Failure", "message": "conflict", "reason": "Conflict", "code": 409
            }))
            .expect("status"),
        )));
        let invalid = municipality::Error::InvalidSpec("x".into());
        metrics.observe(MUNICIPALITY_CONTROLLER, Duration::from_millis(30), None);
        metrics.observe(
            MUNICIPALITY_CONTROLLER,
            Duration::from_millis(70),
            Some(conflict.metric_label()),
        );
        metrics.observe(
            MUNICIPALITY_CONTROLLER,
            Duration::from_millis(1),
            Some(invalid.metric_label()),
        );
        metrics.set_leader(true);
        let (status, text) = get_text(
            router(metrics.clone(), Arc::new(Health::new(1))),
            "/metrics",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        for line in [
            "novads_operator_reconciles_total{controller=\"municipality\"} 3",
            "novads_operator_reconcile_errors_total{controller=\"municipality\",error=\"conflict\"} 1",
            "novads_operator_reconcile_errors_total{controller=\"municipality\",error=\"invalid_spec\"} 1",
            "novads_operator_reconcile_duration_seconds_count{controller=\"municipality\"} 3",
            "novads_operator_reconcile_duration_seconds_bucket{controller=\"municipality\",le=\"0.05\"} 2",
            "novads_operator_leader 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
    }

    #[tokio::test]
    async fn metrics_exist_before_the_first_reconcile() {
        let text = Metrics::new().expect("metrics").render();
        assert!(text.contains("novads_operator_reconciles_total{controller=\"municipality\"} 0"));
        assert!(text.contains("novads_operator_leader 0"));
    }

    #[tokio::test]
    async fn readiness_follows_leadership_and_cache_sync() {
        let health = Arc::new(Health::new(2));
        let app = || router(Metrics::new().expect("metrics"), health.clone());
        assert_eq!(
            get_text(app(), "/healthz").await,
            (StatusCode::OK, "ok".into())
        );
        assert_eq!(
            get_text(app(), "/readyz").await,
            (StatusCode::OK, "standby".into())
        );
        health.set_leading(true);
        health.mark_synced(0);
        assert_eq!(
            get_text(app(), "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        health.mark_synced(1);
        assert_eq!(
            get_text(app(), "/readyz").await,
            (StatusCode::OK, "ready".into())
        );
        // A new term starts with caches to list again.
        health.set_leading(false);
        health.set_leading(true);
        assert_eq!(
            get_text(app(), "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

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
