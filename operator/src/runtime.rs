//! What `novads operator` runs: the health and metrics endpoints ([`health`](crate::health)),
//! leader election ([`leader`](crate::leader)), and — while this replica leads — the
//! Municipality and VirtualServer controllers side by side
//! ([`municipality::watch`](crate::municipality::watch),
//! [`virtual_server::watch`](crate::virtual_server::watch)) with the security monitor
//! ([`monitor`](crate::monitor)).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use kube::Client;
use kube::runtime::events::Reporter;
use tokio::sync::watch;

use crate::health::{Health, Metrics, router};
use crate::leader::{self, Elector, LeaderError, LeaseConfig, LeaseLock, StopSignal};
use crate::monitor::{self, MonitorOptions};
use crate::municipality;
use crate::municipality::build::TenancySettings;
use crate::reconcile::FIELD_MANAGER;
use crate::virtual_server;

/// How `novads operator` runs.
#[derive(Clone, Debug)]
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
    /// How the security monitor evaluates (schedule, policies, federation facts).
    pub monitor: MonitorOptions,
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
            monitor: MonitorOptions::default(),
        }
    }
}

/// Why the operator stopped with a failure.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("cannot configure the Kubernetes client (in-cluster config or KUBECONFIG): {0}")]
    Client(#[source] kube::Error),
    #[error("cannot use the kubeconfig {path}: {source}")]
    Kubeconfig {
        path: std::path::PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
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

/// Runs the operator until `shutdown` completes: builds a client (in-cluster config or
/// `KUBECONFIG`), then [`run_with_client`].
pub async fn run(
    options: OperatorOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), OperatorError> {
    let client = Client::try_default().await.map_err(OperatorError::Client)?;
    run_with_client(client, options, shutdown).await
}

/// The cluster a kubeconfig file names, for telling a person which cluster they are about to
/// change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterTarget {
    /// The kubeconfig's current context, if it names one.
    pub context: Option<String>,
    /// The API server's URL.
    pub server: String,
}

/// A client for the current context of the kubeconfig at `path` (only that file: `novads dev`
/// must never pick up a cluster the person did not name), and the cluster it reaches.
pub async fn client_from_kubeconfig(
    path: &std::path::Path,
) -> Result<(Client, ClusterTarget), OperatorError> {
    let failed = |source| OperatorError::Kubeconfig {
        path: path.to_owned(),
        source,
    };
    let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(failed)?;
    let context = kubeconfig.current_context.clone();
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .map_err(failed)?;
    let server = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(OperatorError::Client)?;
    Ok((client, ClusterTarget { context, server }))
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
    let health = Arc::new(Health::new());
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
            options.monitor.clone(),
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

/// Both controllers and the security monitor for one term as leader, until `stop`.
#[allow(clippy::too_many_arguments)]
async fn run_controllers(
    client: Client,
    settings: TenancySettings,
    monitor_options: MonitorOptions,
    concurrency: u16,
    identity: String,
    metrics: Metrics,
    health: Arc<Health>,
    stop: StopSignal,
) {
    let stop = stop.shared();
    let reporter = Reporter {
        controller: FIELD_MANAGER.to_string(),
        instance: Some(identity.clone()),
    };
    // Side by side: a failing or absent KubeVirt never holds up the tenancies.
    tokio::join!(
        municipality::watch::run(
            client.clone(),
            settings,
            concurrency,
            reporter.clone(),
            metrics.clone(),
            health.clone(),
            stop.clone(),
        ),
        virtual_server::watch::run(
            client.clone(),
            concurrency,
            reporter,
            metrics.clone(),
            health,
            stop.clone()
        ),
        monitor::run(
            client,
            monitor_options,
            Some(identity),
            metrics.monitor().clone(),
            stop
        ),
    );
    tracing::info!("controllers stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documentation() {
        let options = OperatorOptions::default();
        assert_eq!(options.metrics_listen.to_string(), "0.0.0.0:8081");
        assert_eq!(options.lease_name, "novads-operator");
        assert_eq!(options.lease_duration, Duration::from_secs(15));
        assert_eq!(options.concurrency, 8);
        assert_eq!(options.identity, None);
        assert_eq!(options.lease_namespace, "");
        assert_eq!(options.monitor.interval, Duration::from_secs(300));
        assert!(options.monitor.federation.is_none());
    }
}
