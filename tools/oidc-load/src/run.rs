//! A load run: discovery, then `concurrency` workers that each loop over logins (or refresh
//! grants) until the duration or the request count is reached.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use url::Url;

use crate::discovery::{ProviderMetadata, discover};
use crate::error::LoadError;
use crate::flow::{self, ClientAuth, Target};
use crate::outcome::{Category, FlowError};
use crate::stats::{Recorder, Report};
use crate::users::Credentials;

/// What each iteration does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// A complete code-flow login with a fresh cookie jar: authorize, login form, token.
    Login,
    /// One refresh-token grant with the newest refresh token of the worker's sign-in.
    Refresh,
}

impl Mode {
    pub const fn as_str(self) -> &'static str {
        match self {
            Mode::Login => "login",
            Mode::Refresh => "refresh",
        }
    }
}

/// When the measurement ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Iterations started within this time after the warm-up are measured.
    Duration(Duration),
    /// This many iterations after the warm-up, over all workers.
    Requests(u64),
}

/// Client authentication at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ClientAuthChoice {
    /// `client_secret_basic` if a secret is given and the provider lists it (or lists
    /// nothing), else `client_secret_post`; `none` without a secret.
    #[default]
    Auto,
    Basic,
    Post,
    None,
}

/// Whether to use PKCE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PkceChoice {
    /// S256 when the provider advertises it or the client is public.
    #[default]
    Auto,
    On,
    Off,
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub client_auth: ClientAuthChoice,
    pub redirect_uri: Url,
    pub scope: String,
    pub username_field: String,
    pub password_field: String,
    pub form_fields: Vec<(String, String)>,
    pub authorize_params: Vec<(String, String)>,
    pub users: Vec<Credentials>,
    pub concurrency: usize,
    pub limit: Limit,
    pub warmup: Duration,
    pub mode: Mode,
    pub pkce: PkceChoice,
    /// Per HTTP request.
    pub timeout: Duration,
    /// Accept any TLS certificate (a local test provider with a self-signed one).
    pub insecure: bool,
    /// Trust this PEM CA in addition to the system's.
    pub ca_file: Option<PathBuf>,
    /// Host names answered with fixed addresses instead of DNS (the port is the URL's), so a
    /// provider's configured name can be measured on a loopback address.
    pub resolve: Vec<(String, SocketAddr)>,
    pub user_agent: String,
}

impl LoadConfig {
    /// A configuration with the driver's defaults: 32 concurrent, 10 s, `openid` scope, form
    /// fields `username` and `password`, login mode.
    pub fn new(
        issuer: impl Into<String>,
        client_id: impl Into<String>,
        redirect_uri: Url,
        users: Vec<Credentials>,
    ) -> Self {
        Self {
            issuer: issuer.into(),
            client_id: client_id.into(),
            client_secret: None,
            client_auth: ClientAuthChoice::Auto,
            redirect_uri,
            scope: "openid".into(),
            username_field: "username".into(),
            password_field: "password".into(),
            form_fields: Vec::new(),
            authorize_params: Vec::new(),
            users,
            concurrency: 32,
            limit: Limit::Duration(Duration::from_secs(10)),
            warmup: Duration::ZERO,
            mode: Mode::Login,
            pkce: PkceChoice::Auto,
            timeout: Duration::from_secs(30),
            insecure: false,
            ca_file: None,
            resolve: Vec::new(),
            user_agent: concat!("novads-oidc-load/", env!("CARGO_PKG_VERSION")).into(),
        }
    }
}

/// An HTTP client as the driver uses it: no automatic redirects (the flow follows them
/// itself), no cookie store (one jar per login), the configured timeout and TLS trust.
pub fn http_client(config: &LoadConfig) -> Result<reqwest::Client, LoadError> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(config.timeout)
        .user_agent(&config.user_agent)
        .tcp_nodelay(true);
    if config.insecure {
        builder = builder.tls_danger_accept_invalid_certs(true);
    }
    for (host, addr) in &config.resolve {
        builder = builder.resolve(host, *addr);
    }
    if let Some(path) = &config.ca_file {
        let pem = std::fs::read(path).map_err(|e| LoadError::CaFile {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| LoadError::CaFile {
            path: path.clone(),
            message: e.to_string(),
        })?;
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|e| LoadError::HttpClient(e.to_string()))
}

/// Picks client authentication and PKCE from the options and the provider's metadata.
pub fn target(config: &LoadConfig, metadata: ProviderMetadata) -> Result<Target, LoadError> {
    let client_auth = match (config.client_auth, config.client_secret.is_some()) {
        (ClientAuthChoice::None, _) | (ClientAuthChoice::Auto, false) => ClientAuth::None,
        (ClientAuthChoice::Basic | ClientAuthChoice::Post, false) => {
            return Err(LoadError::Usage(
                "--client-auth basic and post need --client-secret".into(),
            ));
        }
        (ClientAuthChoice::Basic, true) => ClientAuth::Basic,
        (ClientAuthChoice::Post, true) => ClientAuth::Post,
        (ClientAuthChoice::Auto, true) => {
            if metadata.accepts_auth_method("client_secret_basic") {
                ClientAuth::Basic
            } else {
                ClientAuth::Post
            }
        }
    };
    let pkce = match config.pkce {
        PkceChoice::On => true,
        PkceChoice::Off => false,
        PkceChoice::Auto => metadata.supports_s256() || client_auth == ClientAuth::None,
    };
    Ok(Target {
        metadata,
        client_id: config.client_id.clone(),
        client_secret: config.client_secret.clone(),
        client_auth,
        redirect_uri: config.redirect_uri.clone(),
        scope: config.scope.clone(),
        username_field: config.username_field.clone(),
        password_field: config.password_field.clone(),
        form_fields: config.form_fields.clone(),
        authorize_params: config.authorize_params.clone(),
        pkce,
    })
}

/// Shared by the workers.
struct Shared {
    target: Target,
    users: Vec<Credentials>,
    next_user: AtomicUsize,
    /// Requests mode: iterations still to start after the warm-up.
    remaining: AtomicI64,
    measure_from: Instant,
    limit: Limit,
}

impl Shared {
    fn next_user(&self) -> &Credentials {
        let i = self.next_user.fetch_add(1, Ordering::Relaxed) % self.users.len();
        // `run` refuses an empty user list, so the index is always in range.
        &self.users[i]
    }

    /// Whether an iteration starting now is measured (`Some(true)`), warm-up (`Some(false)`),
    /// or should not start (`None`).
    fn admit(&self) -> Option<bool> {
        let now = Instant::now();
        if now < self.measure_from {
            return Some(false);
        }
        match self.limit {
            Limit::Duration(d) => (now < self.measure_from + d).then_some(true),
            Limit::Requests(_) => {
                (self.remaining.fetch_sub(1, Ordering::Relaxed) > 0).then_some(true)
            }
        }
    }
}

/// What a worker hands back.
struct WorkerResult {
    recorder: Recorder,
    warmup: u64,
    setup_logins: u64,
    last_end: Option<Instant>,
}

/// Runs the load and reports. Failed iterations are counted, not returned as errors.
pub async fn run(config: &LoadConfig) -> Result<Report, LoadError> {
    if config.users.is_empty() {
        return Err(LoadError::Usage(
            "no users: give --user, --users-file or --user-pattern".into(),
        ));
    }
    if config.concurrency == 0 {
        return Err(LoadError::Usage("--concurrency must be at least 1".into()));
    }
    match config.limit {
        Limit::Duration(d) if d.is_zero() => {
            return Err(LoadError::Usage("--duration must be more than 0".into()));
        }
        Limit::Requests(0) => {
            return Err(LoadError::Usage("--requests must be at least 1".into()));
        }
        _ => {}
    }
    let discovery_client = http_client(config)?;
    let metadata = discover(&discovery_client, &config.issuer).await?;
    let target = target(config, metadata)?;
    let mut clients = Vec::with_capacity(config.concurrency);
    for _ in 0..config.concurrency {
        // One client per simulated browser: its own connections, as separate browsers have.
        clients.push(http_client(config)?);
    }
    let requests = match config.limit {
        Limit::Requests(n) => i64::try_from(n).unwrap_or(i64::MAX),
        Limit::Duration(_) => 0,
    };
    let mut shared = Shared {
        target,
        users: config.users.clone(),
        next_user: AtomicUsize::new(0),
        remaining: AtomicI64::new(requests),
        measure_from: Instant::now(),
        limit: config.limit,
    };

    // Refresh mode: every worker signs in once before the clock starts.
    let mut tokens: Vec<Option<String>> = vec![None; config.concurrency];
    let mut setup_logins = 0;
    if config.mode == Mode::Refresh {
        let shared_setup = Arc::new(shared);
        let mut tasks = Vec::new();
        for client in &clients {
            let client = client.clone();
            let shared = shared_setup.clone();
            tasks.push(tokio::spawn(async move {
                let user = shared.next_user().clone();
                obtain_refresh_token(&client, &shared.target, &user).await
            }));
        }
        let mut first_error = None;
        for (slot, task) in tokens.iter_mut().zip(tasks) {
            match task.await.map_err(|e| LoadError::Worker(e.to_string()))? {
                Ok(token) => {
                    setup_logins += 1;
                    *slot = Some(token);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if setup_logins == 0 {
            let error = first_error.map(|e| e.to_string()).unwrap_or_default();
            return Err(LoadError::Setup(error));
        }
        shared = Arc::into_inner(shared_setup)
            .ok_or_else(|| LoadError::Worker("set-up tasks still hold the shared state".into()))?;
    }

    shared.measure_from = Instant::now() + config.warmup;
    let shared = Arc::new(shared);
    let mut tasks = Vec::with_capacity(config.concurrency);
    for (client, token) in clients.into_iter().zip(tokens) {
        let shared = shared.clone();
        let recorder = Recorder::new()?;
        let mode = config.mode;
        tasks.push(tokio::spawn(async move {
            match mode {
                Mode::Login => login_worker(client, shared, recorder).await,
                Mode::Refresh => refresh_worker(client, shared, recorder, token).await,
            }
        }));
    }
    let mut total = Recorder::new()?;
    let mut warmup_iterations = 0;
    let mut last_end: Option<Instant> = None;
    for task in tasks {
        let result = task.await.map_err(|e| LoadError::Worker(e.to_string()))?;
        total.merge(&result.recorder);
        warmup_iterations += result.warmup;
        setup_logins += result.setup_logins;
        last_end = last_end.max(result.last_end);
    }
    let elapsed = last_end
        .map(|end| end.saturating_duration_since(shared.measure_from))
        .unwrap_or_default()
        .as_secs_f64();
    let completed = total.ok();
    let failed = total.failed();
    let attempts = completed + failed;
    Ok(Report {
        mode: config.mode.as_str().into(),
        issuer: shared.target.metadata.issuer.clone(),
        client_id: config.client_id.clone(),
        client_auth: shared.target.client_auth.as_str().into(),
        pkce: shared.target.pkce,
        concurrency: config.concurrency,
        warmup_seconds: config.warmup.as_secs_f64(),
        warmup_iterations,
        setup_logins,
        elapsed_seconds: elapsed,
        completed,
        failed,
        error_ratio: if attempts == 0 {
            0.0
        } else {
            failed as f64 / attempts as f64
        },
        throughput: if elapsed > 0.0 {
            completed as f64 / elapsed
        } else {
            0.0
        },
        latency: total.latency(),
        steps: total.step_latencies(),
        errors: total.errors().clone(),
    })
}

async fn login_worker(
    client: reqwest::Client,
    shared: Arc<Shared>,
    mut recorder: Recorder,
) -> WorkerResult {
    let mut warmup = 0;
    let mut last_end = None;
    while let Some(measured) = shared.admit() {
        let user = shared.next_user();
        let started = Instant::now();
        let result = flow::login(&client, &shared.target, user).await;
        let ended = Instant::now();
        if !measured {
            warmup += 1;
            continue;
        }
        last_end = Some(ended);
        match result {
            Ok((_, times)) => recorder.record_ok(
                ended - started,
                &[
                    ("authorize", times.authorize),
                    ("login", times.login),
                    ("token", times.token),
                ],
            ),
            Err(error) => recorder.record_error(&error),
        }
    }
    WorkerResult {
        recorder,
        warmup,
        setup_logins: 0,
        last_end,
    }
}

/// Signs `user` in and returns the refresh token.
async fn obtain_refresh_token(
    client: &reqwest::Client,
    target: &Target,
    user: &Credentials,
) -> Result<String, FlowError> {
    let (tokens, _) = flow::login(client, target, user).await?;
    tokens.refresh_token.ok_or_else(|| {
        FlowError::new(
            Category::RefreshTokenMissing,
            "the token response has no refresh_token (is the refresh_token grant or offline_access enabled for the client?)",
        )
    })
}

async fn refresh_worker(
    client: reqwest::Client,
    shared: Arc<Shared>,
    mut recorder: Recorder,
    mut token: Option<String>,
) -> WorkerResult {
    let mut warmup = 0;
    let mut setup_logins = 0;
    let mut last_end = None;
    while let Some(measured) = shared.admit() {
        // A worker without a usable refresh token signs in again first (not timed).
        let current = match token.take() {
            Some(current) => current,
            None => {
                let user = shared.next_user();
                match obtain_refresh_token(&client, &shared.target, user).await {
                    Ok(fresh) => {
                        setup_logins += 1;
                        fresh
                    }
                    Err(error) => {
                        if measured {
                            last_end = Some(Instant::now());
                            recorder.record_error(&FlowError::new(
                                Category::SetupLogin(Box::new(error.category)),
                                error.detail,
                            ));
                        }
                        // Do not spin against a provider that refuses logins.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                }
            }
        };
        let started = Instant::now();
        let result = flow::refresh(&client, &shared.target, &current).await;
        let ended = Instant::now();
        // Rotation: the newest refresh token replaces the one just used; a provider that does
        // not rotate keeps the old one valid.
        token = match &result {
            Ok(tokens) => Some(tokens.refresh_token.clone().unwrap_or(current)),
            Err(_) => None,
        };
        if !measured {
            warmup += 1;
            continue;
        }
        last_end = Some(ended);
        match result {
            Ok(_) => recorder.record_ok(ended - started, &[]),
            Err(error) => recorder.record_error(&error),
        }
    }
    WorkerResult {
        recorder,
        warmup,
        setup_logins,
        last_end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(auth_methods: &[&str], pkce: &[&str]) -> ProviderMetadata {
        ProviderMetadata {
            issuer: "https://i".into(),
            authorization_endpoint: Url::parse("https://i/a").expect("url"),
            token_endpoint: Url::parse("https://i/t").expect("url"),
            code_challenge_methods_supported: pkce.iter().map(|s| (*s).to_owned()).collect(),
            token_endpoint_auth_methods_supported: auth_methods
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            grant_types_supported: vec![],
        }
    }

    fn config(secret: Option<&str>) -> LoadConfig {
        let mut c = LoadConfig::new(
            "https://i",
            "c",
            Url::parse("http://127.0.0.1/cb").expect("url"),
            vec![Credentials::new("u", "p")],
        );
        c.client_secret = secret.map(str::to_owned);
        c
    }

    #[test]
    fn client_auth_and_pkce_follow_the_metadata() {
        let t = target(&config(None), metadata(&[], &[])).expect("target");
        assert_eq!(t.client_auth, ClientAuth::None);
        assert!(t.pkce, "public clients always use PKCE");

        let t = target(&config(Some("s")), metadata(&[], &[])).expect("target");
        assert_eq!(t.client_auth, ClientAuth::Basic);
        assert!(!t.pkce);

        let t = target(
            &config(Some("s")),
            metadata(&["client_secret_post"], &["plain", "S256"]),
        )
        .expect("target");
        assert_eq!(t.client_auth, ClientAuth::Post);
        assert!(t.pkce);

        let mut c = config(None);
        c.client_auth = ClientAuthChoice::Basic;
        assert!(target(&c, metadata(&[], &[])).is_err());
        c.client_auth = ClientAuthChoice::None;
        c.pkce = PkceChoice::Off;
        let t = target(&c, metadata(&[], &["S256"])).expect("target");
        assert!(!t.pkce);
    }

    #[test]
    fn admission_follows_warmup_and_limits() {
        let base = |limit, measure_from| Shared {
            target: target(&config(None), metadata(&[], &[])).expect("target"),
            users: vec![Credentials::new("a", "1"), Credentials::new("b", "2")],
            next_user: AtomicUsize::new(0),
            remaining: AtomicI64::new(match limit {
                Limit::Requests(n) => n as i64,
                Limit::Duration(_) => 0,
            }),
            measure_from,
            limit,
        };
        let warm = base(
            Limit::Requests(2),
            Instant::now() + Duration::from_secs(3600),
        );
        assert_eq!(warm.admit(), Some(false));
        let counted = base(Limit::Requests(2), Instant::now());
        assert_eq!(counted.admit(), Some(true));
        assert_eq!(counted.admit(), Some(true));
        assert_eq!(counted.admit(), None);
        let timed = base(
            Limit::Duration(Duration::from_millis(1)),
            Instant::now() - Duration::from_secs(1),
        );
        assert_eq!(timed.admit(), None);
        assert_eq!(counted.next_user().username, "a");
        assert_eq!(counted.next_user().username, "b");
        assert_eq!(counted.next_user().username, "a");
    }
}
