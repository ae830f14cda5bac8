//! What the operator tells about itself over HTTP: `/healthz` (the process answers),
//! `/readyz` (standing by, or leading with every watch cache listed — and what keeps virtual
//! servers from running, if anything) and `/metrics` (Prometheus).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use novads_monitor::metrics::MonitorMetrics;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// The `controller` label of the Municipality controller's metrics.
pub const MUNICIPALITY_CONTROLLER: &str = "municipality";
/// The `controller` label of the VirtualServer controller's metrics.
pub const VIRTUAL_SERVER_CONTROLLER: &str = "virtualserver";

/// The watch streams whose first complete listing makes a leader ready, one per watched kind
/// and controller (both controllers watch Municipalities, each through its own stream).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cache {
    /// The tenancy controller's: Municipalities and the five child kinds.
    Municipalities,
    Namespaces,
    ResourceQuotas,
    LimitRanges,
    NetworkPolicies,
    RoleBindings,
    /// The VirtualServer controller's.
    VirtualServers,
    ServerImages,
    ServerMunicipalities,
    Services,
    VirtualMachines,
    VirtualMachineInstances,
    VirtualMachineSnapshots,
}

impl Cache {
    /// Every cache, in declaration order (the order [`Health`] keeps their flags in).
    pub const ALL: [Self; 13] = [
        Self::Municipalities,
        Self::Namespaces,
        Self::ResourceQuotas,
        Self::LimitRanges,
        Self::NetworkPolicies,
        Self::RoleBindings,
        Self::VirtualServers,
        Self::ServerImages,
        Self::ServerMunicipalities,
        Self::Services,
        Self::VirtualMachines,
        Self::VirtualMachineInstances,
        Self::VirtualMachineSnapshots,
    ];
    /// The VirtualServer controller's caches, to list again whenever it restarts.
    pub const VIRTUAL_SERVER: [Self; 7] = [
        Self::VirtualServers,
        Self::ServerImages,
        Self::ServerMunicipalities,
        Self::Services,
        Self::VirtualMachines,
        Self::VirtualMachineInstances,
        Self::VirtualMachineSnapshots,
    ];
    /// The watches of KubeVirt's kinds, absent (and so counted as synced) without KubeVirt.
    pub const KUBEVIRT: [Self; 3] = [
        Self::VirtualMachines,
        Self::VirtualMachineInstances,
        Self::VirtualMachineSnapshots,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// The operator's Prometheus metrics (prefix `novads_operator_`, bounded labels), and the
/// security monitor's (see [`novads_monitor::metrics`]).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    reconciles: IntCounterVec,
    errors: IntCounterVec,
    duration: HistogramVec,
    leader: IntGauge,
    kubevirt: IntGauge,
    monitor: MonitorMetrics,
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
        let kubevirt = IntGauge::new(
            "novads_operator_kubevirt_available",
            "1 while the leader finds KubeVirt's APIs (VirtualMachines, VirtualMachineSnapshots) \
             and runs the VirtualServer controller on them; 0 when they are missing (or before \
             this replica led).",
        )?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        registry.register(Box::new(kubevirt.clone()))?;
        let monitor = MonitorMetrics::register(&registry, false)?;
        // Present from the start, so dashboards and rate() see zeros rather than nothing.
        for controller in [MUNICIPALITY_CONTROLLER, VIRTUAL_SERVER_CONTROLLER] {
            reconciles.with_label_values(&[controller]);
            duration.with_label_values(&[controller]);
        }
        Ok(Self {
            registry,
            reconciles,
            errors,
            duration,
            leader,
            kubevirt,
            monitor,
        })
    }

    /// The security monitor's metrics (`novads_compliance_ratio`, `novads_monitor_*`).
    pub fn monitor(&self) -> &MonitorMetrics {
        &self.monitor
    }

    /// Records one reconcile of `controller`, failed with `error` (a bounded label such as
    /// [`Error::metric_label`](crate::municipality::controller::Error::metric_label)) or not.
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

    pub fn set_kubevirt_available(&self, available: bool) {
        self.kubevirt.set(i64::from(available));
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

/// Whether this replica leads, whether each of its watch caches has listed once, and why
/// KubeVirt cannot be used, when it cannot.
#[derive(Debug)]
pub struct Health {
    leading: AtomicBool,
    /// Per [`Cache`], indexed by [`Cache::index`].
    synced: [AtomicBool; Cache::ALL.len()],
    kubevirt_missing: Mutex<Option<String>>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    /// A replica standing by, no cache listed.
    pub fn new() -> Self {
        Self {
            leading: AtomicBool::new(false),
            synced: std::array::from_fn(|_| AtomicBool::new(false)),
            kubevirt_missing: Mutex::new(None),
        }
    }

    /// Records a change of leadership; a new term starts with every cache to list again.
    pub fn set_leading(&self, leading: bool) {
        self.leading.store(leading, Ordering::SeqCst);
        if leading {
            for cache in &self.synced {
                cache.store(false, Ordering::SeqCst);
            }
        }
    }

    /// Records that `cache` has listed everything once.
    pub fn mark_synced(&self, cache: Cache) {
        self.synced[cache.index()].store(true, Ordering::SeqCst);
    }

    /// Records that `cache` must list again (its controller restarts).
    pub fn mark_unsynced(&self, cache: Cache) {
        self.synced[cache.index()].store(false, Ordering::SeqCst);
    }

    /// Records why KubeVirt cannot be used (`None`: it can).
    pub fn set_kubevirt_missing(&self, reason: Option<String>) {
        if let Ok(mut missing) = self.kubevirt_missing.lock() {
            *missing = reason;
        }
    }

    /// Ready: standing by as a non-leader, or leading with every cache listed. A leader
    /// without KubeVirt is ready — its tenancy controller works — and says what is missing.
    pub fn ready(&self) -> Result<String, String> {
        if !self.leading.load(Ordering::SeqCst) {
            return Ok("standby".to_string());
        }
        if !self.synced.iter().all(|c| c.load(Ordering::SeqCst)) {
            return Err("leading, caches not synced yet".to_string());
        }
        let missing = self.kubevirt_missing.lock().ok().and_then(|m| m.clone());
        Ok(match missing {
            None => "ready".to_string(),
            Some(reason) => format!("ready; virtual servers are not run: {reason}"),
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
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
    fn every_cache_has_its_own_flag() {
        for (index, cache) in Cache::ALL.into_iter().enumerate() {
            assert_eq!(cache.index(), index, "{cache:?}");
        }
    }

    #[tokio::test]
    async fn metrics_count_reconciles_errors_and_leadership() {
        let metrics = Metrics::new().expect("metrics");
        metrics.observe(MUNICIPALITY_CONTROLLER, Duration::from_millis(30), None);
        metrics.observe(
            MUNICIPALITY_CONTROLLER,
            Duration::from_millis(70),
            Some("conflict"),
        );
        metrics.observe(
            MUNICIPALITY_CONTROLLER,
            Duration::from_millis(1),
            Some("invalid_spec"),
        );
        metrics.set_leader(true);
        let (status, text) =
            get_text(router(metrics.clone(), Arc::new(Health::new())), "/metrics").await;
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
        let health = Arc::new(Health::new());
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
        let (last, rest) = Cache::ALL.split_last().expect("caches");
        for cache in rest {
            health.mark_synced(*cache);
        }
        assert_eq!(
            get_text(app(), "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        health.mark_synced(*last);
        assert_eq!(
            get_text(app(), "/readyz").await,
            (StatusCode::OK, "ready".into())
        );
        // A cache whose controller restarts must list again.
        health.mark_unsynced(Cache::VirtualServers);
        assert_eq!(
            get_text(app(), "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        health.mark_synced(Cache::VirtualServers);
        // A new term starts with caches to list again.
        health.set_leading(false);
        health.set_leading(true);
        assert_eq!(
            get_text(app(), "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[tokio::test]
    async fn readiness_names_what_keeps_virtual_servers_from_running() {
        let health = Arc::new(Health::new());
        let app = || router(Metrics::new().expect("metrics"), health.clone());
        health.set_leading(true);
        for cache in Cache::ALL {
            health.mark_synced(cache);
        }
        health.set_kubevirt_missing(Some("no virtualmachines.kubevirt.io".into()));
        // Still ready: the tenancies are reconciled; the body says what is missing.
        assert_eq!(
            get_text(app(), "/readyz").await,
            (
                StatusCode::OK,
                "ready; virtual servers are not run: no virtualmachines.kubevirt.io".into()
            )
        );
        health.set_kubevirt_missing(None);
        assert_eq!(
            get_text(app(), "/readyz").await,
            (StatusCode::OK, "ready".into())
        );
    }

    #[tokio::test]
    async fn virtual_server_metrics_exist_from_the_start() {
        let metrics = Metrics::new().expect("metrics");
        let text = metrics.render();
        assert!(text.contains("novads_operator_reconciles_total{controller=\"virtualserver\"} 0"));
        assert!(text.contains("novads_operator_kubevirt_available 0"));
        metrics.set_kubevirt_available(true);
        assert!(
            metrics
                .render()
                .contains("novads_operator_kubevirt_available 1")
        );
    }
}
