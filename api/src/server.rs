//! The HTTP server of `novads serve`: routes, middleware and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};

use crate::config::{Config, redact_url};
use crate::connections::{self, ConnectionLimits};
use crate::db::{Database, DbError};
use crate::error::{ApiError, Problem};
use crate::federation::audit::{self, AuditKey};
use crate::federation::setup::{self, SetupError};
use crate::lifetimes::{KEY_RELOAD_INTERVAL, READINESS_TIMEOUT, REQUEST_TIMEOUT};
use crate::metrics::Metrics;
use crate::oidc::keys::{KeyEncryptionKey, KeyError, SigningKeys, StoredIdentityKey};
use crate::oidc::sealed_request::RequestSealKey;
use crate::proxy;
use crate::state::AppState;

/// Largest request body any endpoint accepts.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("server.listen: cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server.management_listen: cannot listen on {addr}: {source}")]
    ManagementListen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Federation(#[from] SetupError),
    #[error("signing keys: {0}")]
    Keys(#[from] KeyError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
}

/// Every route of the service, with the middleware every request passes through.
pub fn router(state: AppState) -> Router {
    router_with(state, Router::new())
}

/// The service's routes plus `extra` (tests and later subsystems), under the same middleware.
/// With `server.management_listen`, `/readyz` and `/metrics` are left to [`management_router`].
pub fn router_with(state: AppState, extra: Router<AppState>) -> Router {
    let public = Router::new().route("/healthz", get(healthz));
    let public = if state.config().server.management_listen.is_some() {
        public
    } else {
        public
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
    };
    let mut routes = public
        .merge(crate::oidc::endpoints::routes())
        .nest("/api/v1", crate::admin::routes(&state))
        .merge(extra)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_metrics,
        ));
    // Without trusted proxies the peer is the client: no layer, no per-request cost.
    if !state.config().server.trusted_proxies.is_empty() {
        routes = routes.layer(middleware::from_fn_with_state(
            state.clone(),
            real_client_address,
        ));
    }
    routes
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(problem_for_bare_errors))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ))
        .layer(CatchPanicLayer::custom(|_| {
            Problem::status(StatusCode::INTERNAL_SERVER_ERROR).into_response()
        }))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    let request_id = request
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!(
                        "http",
                        method = %request.method(),
                        path = %request.uri().path(),
                        request_id,
                    )
                })
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// The routes of `server.management_listen`: liveness, readiness with its details, metrics.
pub fn management_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ))
        .with_state(state)
}

/// Liveness: the process is up and serving. Deliberately checks nothing else, so a database
/// outage never makes the orchestrator restart healthy replicas.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: the database is reachable and migrated to the schema this build expects.
async fn readyz(State(state): State<AppState>) -> Response {
    let database = match tokio::time::timeout(READINESS_TIMEOUT, state.db().check_ready()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "database: no answer within {} ms",
            READINESS_TIMEOUT.as_millis()
        )),
    };
    // A realm whose directory is down does not make the replica unready: the other realms
    // still sign in through it. The body says which realm is down.
    let directories: serde_json::Map<String, serde_json::Value> = state
        .federation()
        .directory_status()
        .into_iter()
        .map(|(realm, up)| (realm, json!(if up { "ok" } else { "down" })))
        .collect();
    let degraded = directories.values().any(|v| v != "ok");
    match database {
        Ok(()) => Json(json!({
            "status": if degraded { "degraded" } else { "ready" },
            "checks": { "database": "ok", "directories": directories },
        }))
        .into_response(),
        Err(reason) => {
            tracing::warn!(%reason, "not ready");
            Problem::status(StatusCode::SERVICE_UNAVAILABLE)
                .with_detail("not ready")
                .with_extension(
                    "checks",
                    json!({ "database": reason, "directories": directories }),
                )
                .into_response()
        }
    }
}

async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = state
        .metrics()
        .render()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn method_not_allowed() -> Problem {
    Problem::status(StatusCode::METHOD_NOT_ALLOWED)
}

/// Behind trusted reverse proxies, replaces the peer address handlers see (`ConnectInfo`) by
/// the client's, so that the audit trail and throttling key on the client, not the proxy.
/// Installed only when `server.trusted_proxies` is set ([`router_with`]).
async fn real_client_address(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let trusted = &state.config().server.trusted_proxies;
    if let Some(ConnectInfo(peer)) = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .copied()
    {
        let client = proxy::client_address(peer.ip(), request.headers(), trusted);
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::new(client, peer.port())));
    }
    next.run(request).await
}

async fn record_metrics(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    // No string copies: a standard method is a plain value, the matched pattern is shared.
    let method = request.method().clone();
    // The router's pattern, not the raw path: label values stay bounded.
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    state.metrics().observe_request(
        method.as_str(),
        route.as_ref().map_or("unmatched", MatchedPath::as_str),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// Error answers produced below the handlers (body limits, extractor rejections, timeouts)
/// come as plain text or empty bodies; rewrite them into the one problem format.
async fn problem_for_bare_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // Only bare answers are rewritten: empty bodies and plain-text rejections. Bodies that
    // already have a format (problem documents, OAuth errors, HTML pages) are kept.
    if !content_type.is_empty() && !content_type.starts_with("text/plain") {
        return response;
    }
    let is_text = content_type.starts_with("text/plain");
    let (parts, body) = response.into_parts();
    let detail = if is_text {
        axum::body::to_bytes(body, 4096)
            .await
            .ok()
            .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
            .filter(|s| !s.is_empty())
    } else {
        None
    };
    let problem = Problem::status(status);
    let mut rewritten = match detail {
        Some(detail) => problem.with_detail(detail).into_response(),
        None => problem.into_response(),
    };
    // Keep what the handler said besides the body (WWW-Authenticate, Allow, ...).
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rewritten.headers_mut().append(name.clone(), value.clone());
        }
    }
    rewritten
}

/// A bound, ready-to-run server.
pub struct Server {
    listener: TcpListener,
    /// `server.management_listen`, bound, with its routes.
    management: Option<(TcpListener, Router)>,
    state: AppState,
    router: Router,
    grace: Duration,
    limits: ConnectionLimits,
    /// Directory probing, audit pruning and head records; stopped when the server stops.
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Opens the database (migrating it), then binds the configured address.
    pub async fn bind(config: Config) -> Result<Self, ServeError> {
        let addr = config.server.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Listen { addr, source })?;
        Self::from_listener(config, listener).await
    }

    /// Like [`Server::bind`] on a listener the caller already holds.
    pub async fn from_listener(config: Config, listener: TcpListener) -> Result<Self, ServeError> {
        tracing::info!(database = %redact_url(&config.database), "opening database");
        let db = Database::open_configured(&config).await?;
        let metrics = Metrics::new()?;
        let kek = KeyEncryptionKey::configured(&config.server)?;
        let audit_key = AuditKey::from_kek(&kek)?;
        let federation = setup::build_with_audit_key(
            &config,
            db.clone(),
            metrics.registry(),
            audit_key.clone(),
        )?;
        let keys = SigningKeys::load_or_init(&db, &kek).await?;
        // The registry adds the `novads_` prefix.
        let rejected_keys = prometheus::IntGauge::new(
            "signing_key_rows_rejected",
            "Signing-key rows left out at the last load: not authenticated by the \
             key-encryption key (planted or altered), or published for too long",
        )?;
        metrics
            .registry()
            .register(Box::new(rejected_keys.clone()))?;
        rejected_keys.set(i64::try_from(keys.rejected_rows().len()).unwrap_or(i64::MAX));
        let mut background = Vec::new();
        if let Some(days) = config.audit.retention_days {
            background.push(tokio::spawn(audit::prune_periodically(
                db.clone(),
                audit_key.clone(),
                days,
            )));
        }
        background.push(tokio::spawn(audit::record_head_periodically(
            db.clone(),
            audit_key,
        )));
        let grace = Duration::from_secs(config.server.shutdown_grace_seconds);
        let limits = ConnectionLimits {
            header_read_timeout: Duration::from_secs(config.server.header_read_timeout_seconds),
            max_connections: config.server.max_connections,
        };
        let management_listener = match config.server.management_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServeError::ManagementListen { addr, source })?,
            ),
            None => None,
        };
        let identities = StoredIdentityKey::from_kek(&kek)?;
        let request_key = RequestSealKey::from_kek(&kek)?;
        let state = AppState::new(
            config,
            db,
            metrics,
            federation,
            keys,
            identities,
            request_key,
        );
        state.flows().register_metrics(state.metrics().registry())?;
        background.push(tokio::spawn(probe_directories(state.clone())));
        background.push(tokio::spawn(reload_keys(state.clone(), kek, rejected_keys)));
        background.push(tokio::spawn(sweep_flows(state.clone())));
        Ok(Self {
            listener,
            management: management_listener
                .map(|listener| (listener, management_router(state.clone()))),
            router: router(state.clone()),
            state,
            grace,
            limits,
            background,
        })
    }

    /// Replaces the routes (see [`router_with`]).
    pub fn with_router(mut self, router: Router) -> Self {
        self.router = router;
        self
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn local_addr(&self) -> Result<SocketAddr, ServeError> {
        Ok(self.listener.local_addr()?)
    }

    /// The bound address of `server.management_listen`, if configured.
    pub fn management_addr(&self) -> Result<Option<SocketAddr>, ServeError> {
        Ok(match &self.management {
            Some((listener, _)) => Some(listener.local_addr()?),
            None => None,
        })
    }

    /// Serves until `shutdown` completes, then stops accepting connections and lets in-flight
    /// requests finish for up to the grace period.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServeError> {
        let addr = self.local_addr()?;
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let stopped = |mut stopping: tokio::sync::watch::Receiver<bool>| async move {
            // A dropped sender means the server is going away: stop as well.
            let _ = stopping.wait_for(|stop| *stop).await;
        };
        if let Some(management) = self.management_addr()? {
            tracing::info!(%management, "serving health, readiness and metrics");
        }
        let management = self.management.map(|(listener, router)| {
            tokio::spawn(connections::serve(
                listener,
                router,
                self.limits,
                stopped(stopping.clone()),
                self.grace,
            ))
        });
        let serve = connections::serve(
            self.listener,
            self.router,
            self.limits,
            stopped(stopping),
            self.grace,
        );
        let mut serve = std::pin::pin!(serve);
        tracing::info!(%addr, "serving");
        tokio::select! {
            () = &mut serve => {}
            () = shutdown => {
                tracing::info!(
                    grace_seconds = self.grace.as_secs(),
                    "shutting down: no new connections, finishing in-flight requests"
                );
                let _ = stop.send(true);
                serve.await;
            }
        }
        if let Some(management) = management {
            let _ = stop.send(true);
            let _ = management.await;
        }
        for task in &self.background {
            task.abort();
        }
        self.state.db().close().await;
        tracing::info!("shutdown complete");
        Ok(())
    }
}

/// Picks up rotations made by another replica or `novads keys rotate`.
async fn reload_keys(state: AppState, kek: KeyEncryptionKey, rejected: prometheus::IntGauge) {
    let mut tick = tokio::time::interval(KEY_RELOAD_INTERVAL);
    tick.tick().await;
    loop {
        tick.tick().await;
        match state.keys().reload(state.db(), &kek).await {
            Ok(()) => {
                rejected.set(i64::try_from(state.keys().rejected_rows().len()).unwrap_or(i64::MAX))
            }
            Err(e) => {
                tracing::error!(error = %e, "reloading signing keys failed; keeping the current ones")
            }
        }
    }
}

/// Removes expired authorization requests, codes and lockout counters every five minutes.
async fn sweep_flows(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(300));
    loop {
        tick.tick().await;
        if let Err(e) = state.flows().sweep().await {
            tracing::warn!(error = %e, "sweeping expired sign-in state failed");
        }
        if let Err(e) = state.federation().sweep_lockout_counters().await {
            tracing::warn!(error = %e, "sweeping expired lockout counters failed");
        }
    }
}

/// How often directory servers are probed in the background.
const DIRECTORY_PROBE_INTERVAL: Duration = Duration::from_secs(10);

/// Keeps directory health current between sign-ins, for `/readyz` and the metrics.
async fn probe_directories(state: AppState) {
    let mut tick = tokio::time::interval(DIRECTORY_PROBE_INTERVAL);
    loop {
        tick.tick().await;
        for (realm, up) in state.federation().probe_directories().await {
            if !up {
                tracing::warn!(%realm, "every directory server of the realm is down");
            }
        }
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM (what Kubernetes sends).
///
/// The handlers are installed when this function is called, not when the future is first
/// polled: a signal that arrives while the server is still starting is then a clean shutdown,
/// not the default action of killing the process. Call it first thing.
#[cfg(unix)]
pub fn shutdown_signal() -> impl Future<Output = ()> + Send {
    use tokio::signal::unix::{SignalKind, signal};
    let interrupt = signal(SignalKind::interrupt());
    let terminate = signal(SignalKind::terminate());
    async move {
        let (mut interrupt, mut terminate) = match (interrupt, terminate) {
            (Ok(interrupt), Ok(terminate)) => (interrupt, terminate),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "cannot listen for SIGINT/SIGTERM");
                return std::future::pending().await;
            }
        };
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("received SIGINT"),
            _ = terminate.recv() => tracing::info!("received SIGTERM"),
        }
    }
}

/// Completes on Ctrl-C.
#[cfg(not(unix))]
pub fn shutdown_signal() -> impl Future<Output = ()> + Send {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
