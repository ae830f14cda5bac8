//! What `novads operator` runs: health and metrics endpoints, leader election, and — while
//! this replica leads — the Municipality and VirtualServer controllers.
//!
//! The VirtualServer controller needs KubeVirt's APIs. Without them (a cluster where KubeVirt
//! is not installed, or not yet) the tenancy controller runs as usual, and the VirtualServer
//! controller only tells each server so in its status; `/readyz`, the
//! `novads_operator_kubevirt_available` gauge and the log say it too, and the operator keeps
//! looking, starting the full controller as soon as KubeVirt appears.

use std::fmt::Debug;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use futures::future::Shared;
use futures::{FutureExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Client, Resource, ResourceExt};
use novads_crds::{Municipality, ServerImage, VirtualServer};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::kubevirt::{VirtualMachine, VirtualMachineInstance, VirtualMachineSnapshot};
use crate::leader::{self, Elector, LeaderError, LeaseConfig, LeaseLock, StopSignal};
use crate::municipality::{self, Context};
use crate::tenancy::{FIELD_MANAGER, TenancySettings};
use crate::virtual_server::build::SERVER_LABEL;
use crate::virtual_server::controller as virtual_server;

/// The `controller` label of the Municipality controller's metrics.
pub const MUNICIPALITY_CONTROLLER: &str = "municipality";
/// The `controller` label of the VirtualServer controller's metrics.
pub const VIRTUAL_SERVER_CONTROLLER: &str = "virtualserver";
/// How often a leader without KubeVirt looks again whether it has been installed.
pub const KUBEVIRT_PROBE_INTERVAL: Duration = Duration::from_secs(60);

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
    /// How many Municipalities, and separately how many VirtualServers, are reconciled at once.
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
    kubevirt: IntGauge,
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
    synced: Vec<AtomicBool>,
    kubevirt_missing: Mutex<Option<String>>,
}

impl Health {
    /// Health of a replica with `caches` watch streams.
    pub fn new(caches: usize) -> Self {
        Self {
            leading: AtomicBool::new(false),
            synced: (0..caches).map(|_| AtomicBool::new(false)).collect(),
            kubevirt_missing: Mutex::new(None),
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

    fn mark_unsynced(&self, cache: usize) {
        if let Some(flag) = self.synced.get(cache) {
            flag.store(false, Ordering::SeqCst);
        }
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
/// five child kinds (0–5) for the tenancy controller; VirtualServers, ServerImages,
/// Municipalities, Services, VirtualMachines, VirtualMachineInstances and
/// VirtualMachineSnapshots (6–12) for the VirtualServer controller.
const CACHES: usize = 13;
const SERVER_CACHE: usize = 6;
const IMAGE_CACHE: usize = 7;
const SERVER_MUNICIPALITY_CACHE: usize = 8;
const SERVICE_CACHE: usize = 9;
/// The watches of KubeVirt's kinds, absent (and so counted as synced) without KubeVirt.
const KUBEVIRT_CACHES: [usize; 3] = [10, 11, 12];

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
    metadata_stream(
        client,
        health,
        index,
        watcher::Config::default().labels(&child_selector()),
    )
}

/// A metadata-only watch of `K` (managedFields dropped, nothing cached): enough to trigger.
fn metadata_stream<K>(
    client: &Client,
    health: &Arc<Health>,
    index: usize,
    config: watcher::Config,
) -> impl futures::Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + use<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let api = Api::<PartialObjectMeta<K>>::all(client.clone());
    watcher(api, config)
        .default_backoff()
        .modify(|child: &mut PartialObjectMeta<K>| child.managed_fields_mut().clear())
        .inspect_ok(synced(health, index))
        .touched_objects()
}

type Stop = Shared<StopSignal>;

async fn run_controllers(
    client: Client,
    settings: TenancySettings,
    concurrency: u16,
    identity: String,
    metrics: Metrics,
    health: Arc<Health>,
    stop: StopSignal,
) {
    let stop = stop.shared();
    let reporter = Reporter {
        controller: FIELD_MANAGER.to_string(),
        instance: Some(identity),
    };
    // Side by side: a failing or absent KubeVirt never holds up the tenancies.
    tokio::join!(
        run_tenancy_controller(
            client.clone(),
            settings,
            concurrency,
            reporter.clone(),
            metrics.clone(),
            health.clone(),
            stop.clone(),
        ),
        run_virtual_server_controller(client, concurrency, reporter, metrics, health, stop),
    );
    tracing::info!("controllers stopped");
}

async fn run_tenancy_controller(
    client: Client,
    settings: TenancySettings,
    concurrency: u16,
    reporter: Reporter,
    metrics: Metrics,
    health: Arc<Health>,
    stop: Stop,
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
        .for_each(log_result)
        .await;
}

fn log_result<K: Resource, E: std::error::Error>(
    result: Result<(ObjectRef<K>, Action), kube::runtime::controller::Error<E, watcher::Error>>,
) -> std::future::Ready<()> {
    match result {
        Ok((object, action)) => tracing::debug!(%object, ?action, "reconciled"),
        Err(error) => tracing::warn!(%error, "controller error"),
    }
    std::future::ready(())
}

/// Whether KubeVirt's APIs are served: `Err(reason)` when VirtualMachines or
/// VirtualMachineSnapshots are missing (404) or forbidden (403). Any other failure counts as
/// available: the controller's watches and back-off ride out a flaky API server, whereas
/// calling KubeVirt missing would rewrite every server's status.
pub async fn probe_kubevirt(client: &Client) -> Result<(), String> {
    probe::<VirtualMachine>(client).await?;
    probe::<VirtualMachineSnapshot>(client).await
}

async fn probe<K>(client: &Client) -> Result<(), String>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let api = Api::<K>::all(client.clone());
    let what = format!(
        "{}.{} ({})",
        K::plural(&()),
        K::group(&()),
        K::api_version(&())
    );
    match api.list_metadata(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Err(format!(
            "the cluster does not serve {what}; install KubeVirt (with its snapshot API)"
        )),
        Err(kube::Error::Api(status)) if status.code == 403 => Err(format!(
            "the operator may not list {what}; its ClusterRole (charts/novads) lacks the KubeVirt rules"
        )),
        Err(error) => {
            tracing::warn!(%error, what, "cannot tell whether KubeVirt is installed; assuming it is");
            Ok(())
        }
    }
}

/// Runs the VirtualServer controller until `stop`. Without KubeVirt it runs in a reduced
/// form that only reports the fact on each server, and looks for KubeVirt every
/// [`KUBEVIRT_PROBE_INTERVAL`]; when it appears, the full controller replaces the reduced one.
async fn run_virtual_server_controller(
    client: Client,
    concurrency: u16,
    reporter: Reporter,
    metrics: Metrics,
    health: Arc<Health>,
    stop: Stop,
) {
    loop {
        let missing = probe_kubevirt(&client).await.err();
        metrics.set_kubevirt_available(missing.is_none());
        health.set_kubevirt_missing(missing.clone());
        let Some(reason) = missing else {
            tracing::info!("KubeVirt found; running the VirtualServer controller");
            virtual_server_controller(
                &client,
                concurrency,
                &reporter,
                &metrics,
                &health,
                None,
                stop,
            )
            .await;
            return;
        };
        tracing::error!(
            %reason,
            "KubeVirt is not available: VirtualServers are not built, only marked \
             KubeVirtUnavailable; Municipalities are reconciled as usual"
        );
        for cache in KUBEVIRT_CACHES {
            health.mark_synced(cache);
        }
        let reduced = virtual_server_controller(
            &client,
            concurrency,
            &reporter,
            &metrics,
            &health,
            Some(reason),
            stop.clone(),
        );
        let appeared = async {
            loop {
                tokio::time::sleep(KUBEVIRT_PROBE_INTERVAL).await;
                if probe_kubevirt(&client).await.is_ok() {
                    return;
                }
            }
        };
        tokio::select! {
            () = reduced => return,
            () = appeared => tracing::info!("KubeVirt appeared; restarting the VirtualServer controller"),
        }
        for cache in [
            SERVER_CACHE,
            IMAGE_CACHE,
            SERVER_MUNICIPALITY_CACHE,
            SERVICE_CACHE,
        ]
        .into_iter()
        .chain(KUBEVIRT_CACHES)
        {
            health.mark_unsynced(cache);
        }
    }
}

/// The server of a child that carries the server label (VMIs, snapshots, Services).
pub fn labelled_server(meta: &ObjectMeta) -> Option<ObjectRef<VirtualServer>> {
    let name = meta.labels.as_ref()?.get(SERVER_LABEL)?;
    Some(ObjectRef::new(name).within(meta.namespace.as_deref()?))
}

/// The servers in `namespace`, from the controller's cache.
pub fn servers_in_namespace(
    store: &reflector::Store<VirtualServer>,
    namespace: &str,
) -> Vec<ObjectRef<VirtualServer>> {
    store
        .state_filter(|s| s.metadata.namespace.as_deref() == Some(namespace))
        .iter()
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

/// The servers installed from ServerImage `image`, from the controller's cache.
pub fn servers_using_image(
    store: &reflector::Store<VirtualServer>,
    image: &str,
) -> Vec<ObjectRef<VirtualServer>> {
    store
        .state_filter(|s| s.spec.image == image)
        .iter()
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

/// One run of the VirtualServer controller; `kubevirt_missing` selects the reduced form.
async fn virtual_server_controller(
    client: &Client,
    concurrency: u16,
    reporter: &Reporter,
    metrics: &Metrics,
    health: &Arc<Health>,
    kubevirt_missing: Option<String>,
    stop: Stop,
) {
    let (reader, writer) = reflector::store::<VirtualServer>();
    let servers = watcher(
        Api::<VirtualServer>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(|s: &mut VirtualServer| s.managed_fields_mut().clear())
    .inspect_ok(synced(health, SERVER_CACHE))
    .reflect(writer)
    .applied_objects();
    // Only spec changes of images and municipalities matter (admission reads the spec);
    // a municipality's status changes with every VM that starts.
    let images =
        metadata_stream::<ServerImage>(client, health, IMAGE_CACHE, watcher::Config::default())
            .predicate_filter(predicates::generation, Default::default());
    let municipalities = watcher(
        Api::<Municipality>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(|m: &mut Municipality| m.managed_fields_mut().clear())
    .inspect_ok(synced(health, SERVER_MUNICIPALITY_CACHE))
    .touched_objects()
    .predicate_filter(predicates::generation, Default::default());
    let with_label = watcher::Config::default().labels(SERVER_LABEL);
    let services = metadata_stream::<Service>(client, health, SERVICE_CACHE, with_label.clone());

    let mut context = virtual_server::Context::new(client.clone(), reporter.clone());
    if let Some(reason) = &kubevirt_missing {
        context = context.with_kubevirt_unavailable(reason.clone());
    }
    let by_image = reader.clone();
    let by_namespace = reader.clone();
    let mut controller = Controller::for_stream(servers, reader)
        .watches_stream(images, move |image| {
            servers_using_image(&by_image, &image.name_any())
        })
        .watches_stream(municipalities, move |municipality| {
            servers_in_namespace(&by_namespace, &municipality.namespace_name())
        })
        .watches_stream(services, |service| labelled_server(service.meta()));
    if kubevirt_missing.is_none() {
        let [vms, vmis, snapshots] = KUBEVIRT_CACHES;
        // VMs carry the server as controller owner; instances and snapshots only its label
        // (KubeVirt owns instances; retained snapshots have no owner at all).
        controller = controller
            .owns_stream(metadata_stream::<VirtualMachine>(
                client,
                health,
                vms,
                with_label.clone(),
            ))
            .watches_stream(
                metadata_stream::<VirtualMachineInstance>(client, health, vmis, with_label.clone()),
                |vmi| labelled_server(vmi.meta()),
            )
            .watches_stream(
                metadata_stream::<VirtualMachineSnapshot>(client, health, snapshots, with_label),
                |snapshot| labelled_server(snapshot.meta()),
            );
    }
    let metrics = metrics.clone();
    controller
        .with_config(ControllerConfig::default().concurrency(concurrency))
        .graceful_shutdown_on(stop)
        .run(
            move |object, context| {
                let metrics = metrics.clone();
                async move { measured_server(&metrics, object, context).await }
            },
            virtual_server::error_policy,
            Arc::new(context),
        )
        .for_each(log_result)
        .await;
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

/// [`virtual_server::reconcile`], recorded in the metrics.
async fn measured_server(
    metrics: &Metrics,
    object: Arc<VirtualServer>,
    context: Arc<virtual_server::Context>,
) -> Result<Action, virtual_server::Error> {
    let started = Instant::now();
    let result = virtual_server::reconcile(object, context).await;
    metrics.observe(
        VIRTUAL_SERVER_CONTROLLER,
        started.elapsed(),
        result
            .as_ref()
            .err()
            .map(virtual_server::Error::metric_label),
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

    #[tokio::test]
    async fn readiness_names_what_keeps_virtual_servers_from_running() {
        let health = Arc::new(Health::new(1));
        let app = || router(Metrics::new().expect("metrics"), health.clone());
        health.set_leading(true);
        health.mark_synced(0);
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

    fn server(namespace: &str, name: &str, image: &str) -> VirtualServer {
        let mut server = VirtualServer::new(
            name,
            serde_json::from_value(serde_json::json!({
                "image": image, "cpu": 1, "memory": "1Gi"
            }))
            .expect("spec"),
        );
        server.metadata.namespace = Some(namespace.into());
        server
    }

    #[test]
    fn children_images_and_municipalities_map_to_their_servers() {
        let (store, mut writer) = reflector::store::<VirtualServer>();
        writer.apply_watcher_event(&watcher::Event::Init);
        for object in [
            server("muni-talsi", "web", "debian-12"),
            server("muni-talsi", "db", "rocky-9"),
            server("muni-ventspils", "web", "debian-12"),
        ] {
            writer.apply_watcher_event(&watcher::Event::InitApply(object));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        let sorted = |mut refs: Vec<ObjectRef<VirtualServer>>| {
            refs.sort_by_key(|r| (r.namespace.clone(), r.name.clone()));
            refs.into_iter()
                .map(|r| format!("{}/{}", r.namespace.unwrap_or_default(), r.name))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            sorted(servers_using_image(&store, "debian-12")),
            ["muni-talsi/web", "muni-ventspils/web"]
        );
        assert_eq!(
            sorted(servers_in_namespace(&store, "muni-talsi")),
            ["muni-talsi/db", "muni-talsi/web"]
        );

        let labelled = ObjectMeta {
            name: Some("web-20250602-0200".into()),
            namespace: Some("muni-talsi".into()),
            labels: Some([(SERVER_LABEL.to_string(), "web".to_string())].into()),
            ..ObjectMeta::default()
        };
        assert_eq!(
            labelled_server(&labelled),
            Some(ObjectRef::new("web").within("muni-talsi"))
        );
        assert_eq!(labelled_server(&ObjectMeta::default()), None);
    }
}
