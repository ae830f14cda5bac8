//! What every handler can reach: the configuration and the stores and services built from it,
//! once at start-up and shared by every request.

use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use crate::admin::rate_limit::AdminRateLimiter;
use crate::config::Config;
use crate::db::Database;
use crate::federation::Federation;
use crate::metrics::Metrics;
use crate::oidc::bearer::VerifiedTokens;
use crate::oidc::keys::{SigningKeys, StoredIdentityKey};
use crate::oidc::request::Clients;
use crate::oidc::sealed_request::RequestSealKey;
use crate::oidc::store::FlowStore;

/// The shared state of the server; cheap to clone (one reference count).
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

struct Shared {
    config: Config,
    /// The configured issuer without a trailing slash, as tokens and discovery carry it.
    issuer: String,
    db: Database,
    metrics: Metrics,
    federation: Federation,
    keys: SigningKeys,
    clients: Clients,
    flows: FlowStore,
    /// Seals pending authorization requests into the login form.
    request_key: RequestSealKey,
    /// The Kubernetes API, when `novads serve` runs with a cluster (set once at start).
    cluster: OnceLock<kube::Client>,
    /// The admin API's per-caller rate limit.
    admin_limiter: AdminRateLimiter,
    /// Access tokens the admin API verified recently (oidc/bearer.rs).
    verified_tokens: VerifiedTokens,
    /// The server's own latest security evaluation (`novads dev`, api/src/compliance/own.rs),
    /// which the admin API shows when there is no cluster.
    latest_evaluation: RwLock<Option<Arc<novads_monitor::Evaluation>>>,
}

impl AppState {
    pub fn new(
        config: Config,
        db: Database,
        metrics: Metrics,
        federation: Federation,
        keys: SigningKeys,
        identities: StoredIdentityKey,
        request_key: RequestSealKey,
    ) -> Self {
        Self {
            inner: Arc::new(Shared {
                issuer: config.server.issuer.trim_end_matches('/').to_owned(),
                clients: Clients::new(&config.clients),
                admin_limiter: AdminRateLimiter::new(&config.admin_api.rate_limit),
                verified_tokens: VerifiedTokens::default(),
                flows: FlowStore::new(db.clone(), identities)
                    .with_requests_per_source(config.server.authorization_requests_per_minute),
                request_key,
                config,
                db,
                metrics,
                federation,
                keys,
                cluster: OnceLock::new(),
                latest_evaluation: RwLock::new(None),
            }),
        }
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The issuer URL exactly as tokens and the discovery document carry it.
    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    pub fn db(&self) -> &Database {
        &self.inner.db
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Sign-in through the municipalities' directories, with lockout and audit.
    pub fn federation(&self) -> &Federation {
        &self.inner.federation
    }

    /// The token-signing keys.
    pub fn keys(&self) -> &SigningKeys {
        &self.inner.keys
    }

    /// The registered applications.
    pub fn clients(&self) -> &Clients {
        &self.inner.clients
    }

    /// The Kubernetes API the admin API's cluster resources live in; `None` without a cluster.
    pub fn cluster(&self) -> Option<&kube::Client> {
        self.inner.cluster.get()
    }

    /// The admin API's per-caller rate limit.
    pub fn admin_limiter(&self) -> &AdminRateLimiter {
        &self.inner.admin_limiter
    }

    /// Access tokens the admin API verified recently.
    pub fn verified_tokens(&self) -> &VerifiedTokens {
        &self.inner.verified_tokens
    }

    /// Connects the state to a cluster; only the first call counts (returns whether it did).
    pub fn set_cluster(&self, client: kube::Client) -> bool {
        self.inner.cluster.set(client).is_ok()
    }

    /// The server's own latest security evaluation, when it evaluates its federation checks.
    pub fn latest_evaluation(&self) -> Option<Arc<novads_monitor::Evaluation>> {
        self.inner
            .latest_evaluation
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the latest security evaluation.
    pub fn set_latest_evaluation(&self, evaluation: novads_monitor::Evaluation) {
        *self
            .inner
            .latest_evaluation
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(evaluation));
    }

    /// Sign-in state in the database: used requests, codes, sessions, refresh tokens,
    /// revocations.
    pub fn flows(&self) -> &FlowStore {
        &self.inner.flows
    }

    /// The key that seals and opens pending authorization requests.
    pub fn request_key(&self) -> &RequestSealKey {
        &self.inner.request_key
    }
}
