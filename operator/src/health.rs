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
use kube::runtime::reflector;
use novads_crds::{Phase, RunStrategy, VirtualServer};
use novads_monitor::metrics::MonitorMetrics;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
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
    ServerNamespaces,
    ServerNetworkPolicies,
    Services,
    VirtualMachines,
    VirtualMachineInstances,
    VirtualMachineSnapshots,
}

impl Cache {
    /// Every cache, in declaration order (the order [`Health`] keeps their flags in).
    pub const ALL: [Self; 15] = [
        Self::Municipalities,
        Self::Namespaces,
        Self::ResourceQuotas,
        Self::LimitRanges,
        Self::NetworkPolicies,
        Self::RoleBindings,
        Self::VirtualServers,
        Self::ServerImages,
        Self::ServerMunicipalities,
        Self::ServerNamespaces,
        Self::ServerNetworkPolicies,
        Self::Services,
        Self::VirtualMachines,
        Self::VirtualMachineInstances,
        Self::VirtualMachineSnapshots,
    ];
    /// The VirtualServer controller's caches, to list again whenever it restarts.
    pub const VIRTUAL_SERVER: [Self; 9] = [
        Self::VirtualServers,
        Self::ServerImages,
        Self::ServerMunicipalities,
        Self::ServerNamespaces,
        Self::ServerNetworkPolicies,
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
    inventory: InventoryGauges,
    /// The leader's VirtualServer cache, read at every scrape; `None` on a standby replica.
    servers: Arc<Mutex<Option<reflector::Store<VirtualServer>>>>,
}

/// The VirtualServers the leader knows, as bounded gauges: one series per municipality and
/// phase, and one per server (bounded by the number of servers, which each municipality's
/// `maxVirtualServers` caps). Labels `namespace` and `name` are the VirtualMachine's, so the
/// series join KubeVirt's `kubevirt_vmi_*` metrics (docs/operations.md).
#[derive(Clone)]
struct InventoryGauges {
    by_phase: IntGaugeVec,
    ready: IntGaugeVec,
    declared_running: IntGaugeVec,
    last_backup: IntGaugeVec,
}

impl InventoryGauges {
    fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let by_phase = IntGaugeVec::new(
            Opts::new(
                "novads_operator_virtual_servers",
                "VirtualServers per municipality and phase (on the leader).",
            ),
            &["municipality", "phase"],
        )?;
        let ready = IntGaugeVec::new(
            Opts::new(
                "novads_operator_virtual_server_ready",
                "1 while the VirtualServer's Ready condition is True, per server (on the leader).",
            ),
            &["municipality", "namespace", "name"],
        )?;
        let declared_running = IntGaugeVec::new(
            Opts::new(
                "novads_operator_virtual_server_declared_running",
                "1 when the VirtualServer's spec.runStrategy is Running, per server (on the \
                 leader).",
            ),
            &["namespace", "name"],
        )?;
        let last_backup = IntGaugeVec::new(
            Opts::new(
                "novads_operator_virtual_server_last_backup_timestamp_seconds",
                "When the VirtualServer's newest snapshot was taken, per server with a backup \
                 (on the leader).",
            ),
            &["namespace", "name"],
        )?;
        registry.register(Box::new(by_phase.clone()))?;
        registry.register(Box::new(ready.clone()))?;
        registry.register(Box::new(declared_running.clone()))?;
        registry.register(Box::new(last_backup.clone()))?;
        Ok(Self {
            by_phase,
            ready,
            declared_running,
            last_backup,
        })
    }

    /// Replaces every series with those of `inventory`: deleted servers disappear.
    fn set(&self, inventory: &Inventory) {
        self.by_phase.reset();
        self.ready.reset();
        self.declared_running.reset();
        self.last_backup.reset();
        for ((municipality, phase), count) in &inventory.by_phase {
            self.by_phase
                .with_label_values(&[municipality.as_str(), phase])
                .set(*count);
        }
        for server in &inventory.servers {
            let (namespace, name) = (server.namespace.as_str(), server.name.as_str());
            self.ready
                .with_label_values(&[server.municipality.as_str(), namespace, name])
                .set(i64::from(server.ready));
            self.declared_running
                .with_label_values(&[namespace, name])
                .set(i64::from(server.declared_running));
            if let Some(at) = server.last_backup {
                self.last_backup
                    .with_label_values(&[namespace, name])
                    .set(at);
            }
        }
    }
}

/// What the inventory gauges say, computed from the cached VirtualServers. Pure.
#[derive(Debug, Default, PartialEq)]
pub struct Inventory {
    /// Servers per (municipality, phase); a server without a phase yet counts as `Pending`.
    pub by_phase: std::collections::BTreeMap<(String, &'static str), i64>,
    pub servers: Vec<ServerGauges>,
}

/// One server's gauges.
#[derive(Debug, PartialEq)]
pub struct ServerGauges {
    pub municipality: String,
    pub namespace: String,
    pub name: String,
    pub ready: bool,
    pub declared_running: bool,
    /// Unix seconds of the newest snapshot.
    pub last_backup: Option<i64>,
}

/// The `phase` label of a VirtualServer phase.
fn phase_label(phase: Phase) -> &'static str {
    match phase {
        Phase::Pending => "Pending",
        Phase::Provisioning => "Provisioning",
        Phase::Starting => "Starting",
        Phase::Running => "Running",
        Phase::Stopping => "Stopping",
        Phase::Stopped => "Stopped",
        Phase::Failed => "Failed",
    }
}

/// The inventory of `servers`. The municipality is the code of the `muni-<code>` namespace (a
/// server elsewhere, which the operator refuses, is reported under its namespace).
pub fn inventory<'a>(servers: impl IntoIterator<Item = &'a VirtualServer>) -> Inventory {
    let mut inventory = Inventory::default();
    for server in servers {
        let namespace = server.metadata.namespace.clone().unwrap_or_default();
        let municipality = namespace
            .strip_prefix("muni-")
            .filter(|code| !code.is_empty())
            .unwrap_or(&namespace)
            .to_string();
        let status = server.status.as_ref();
        let phase = status.and_then(|s| s.phase).unwrap_or(Phase::Pending);
        *inventory
            .by_phase
            .entry((municipality.clone(), phase_label(phase)))
            .or_default() += 1;
        inventory.servers.push(ServerGauges {
            municipality,
            namespace,
            name: server.metadata.name.clone().unwrap_or_default(),
            ready: status.is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == crate::virtual_server::status::READY && c.status == "True")
            }),
            declared_running: server.spec.run_strategy == RunStrategy::Running,
            last_backup: status
                .and_then(|s| s.last_backup_time.as_ref())
                .map(|t| t.0.as_second()),
        });
    }
    inventory
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
        let inventory = InventoryGauges::new(&registry)?;
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
            inventory,
            servers: Arc::new(Mutex::new(None)),
        })
    }

    /// The security monitor's metrics (`novads_compliance_ratio`, `novads_monitor_*`).
    pub fn monitor(&self) -> &MonitorMetrics {
        &self.monitor
    }

    /// The VirtualServer cache the inventory gauges are computed from at each scrape (the
    /// leader's VirtualServer controller hands it over when it starts).
    pub fn watch_virtual_servers(&self, store: reflector::Store<VirtualServer>) {
        if let Ok(mut servers) = self.servers.lock() {
            *servers = Some(store);
        }
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
        if !leading {
            // Only the leader reports servers: its cache is the one kept current.
            if let Ok(mut servers) = self.servers.lock() {
                *servers = None;
            }
        }
    }

    pub fn set_kubevirt_available(&self, available: bool) {
        self.kubevirt.set(i64::from(available));
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let servers = self
            .servers
            .lock()
            .ok()
            .and_then(|store| store.as_ref().map(reflector::Store::state))
            .unwrap_or_default();
        self.inventory
            .set(&inventory(servers.iter().map(AsRef::as_ref)));
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

    fn server(namespace: &str, name: &str, run: &str, status: serde_json::Value) -> VirtualServer {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "novads.io/v1alpha1",
            "kind": "VirtualServer",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"image": "debian-12", "cpu": 1, "memory": "1Gi", "runStrategy": run},
            "status": status,
        }))
        .expect("a VirtualServer")
    }

    fn servers() -> Vec<VirtualServer> {
        let ready = serde_json::json!({
            "phase": "Running",
            "lastBackupTime": "2026-12-01T02:00:00Z",
            "conditions": [{"type": "Ready", "status": "True", "reason": "Running",
                "message": "", "lastTransitionTime": "2026-12-01T00:00:00Z"}],
        });
        vec![
            server("muni-talsi", "web", "Running", ready.clone()),
            server(
                "muni-talsi",
                "db",
                "Running",
                serde_json::json!({"phase": "Failed"}),
            ),
            server(
                "muni-talsi",
                "old",
                "Halted",
                serde_json::json!({"phase": "Stopped"}),
            ),
            server("muni-ventspils", "web", "Running", ready),
            server("muni-ventspils", "new", "Running", serde_json::json!(null)),
        ]
    }

    #[test]
    fn the_inventory_counts_servers_by_municipality_and_phase() {
        let inventory = inventory(&servers());
        let counts: Vec<_> = inventory
            .by_phase
            .iter()
            .map(|((m, p), n)| format!("{m} {p} {n}"))
            .collect();
        assert_eq!(
            counts,
            [
                "talsi Failed 1",
                "talsi Running 1",
                "talsi Stopped 1",
                "ventspils Pending 1",
                "ventspils Running 1"
            ]
        );
        let web = &inventory.servers[0];
        assert_eq!(
            (
                web.municipality.as_str(),
                web.namespace.as_str(),
                web.name.as_str()
            ),
            ("talsi", "muni-talsi", "web")
        );
        assert!(web.ready && web.declared_running);
        assert_eq!(web.last_backup, Some(1_796_090_400));
        let db = &inventory.servers[1];
        assert!(!db.ready && db.declared_running && db.last_backup.is_none());
        assert!(!inventory.servers[2].declared_running, "Halted");
    }

    #[test]
    fn the_leader_exports_the_inventory_and_a_standby_nothing() {
        let metrics = Metrics::new().expect("metrics");
        let (store, mut writer) = reflector::store::<VirtualServer>();
        for server in servers() {
            writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(server));
        }
        metrics.set_leader(true);
        metrics.watch_virtual_servers(store);
        let text = metrics.render();
        for line in [
            "novads_operator_virtual_servers{municipality=\"talsi\",phase=\"Running\"} 1",
            "novads_operator_virtual_server_ready{municipality=\"talsi\",name=\"db\",namespace=\"muni-talsi\"} 0",
            "novads_operator_virtual_server_ready{municipality=\"talsi\",name=\"web\",namespace=\"muni-talsi\"} 1",
            "novads_operator_virtual_server_declared_running{name=\"old\",namespace=\"muni-talsi\"} 0",
            "novads_operator_virtual_server_last_backup_timestamp_seconds{name=\"web\",namespace=\"muni-ventspils\"} 1796090400",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        metrics.set_leader(false);
        let text = metrics.render();
        assert!(!text.contains("novads_operator_virtual_server"), "{text}");
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
