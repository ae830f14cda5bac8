//! The driver against a real novads (in-process, on the development configuration: a built-in
//! static realm, SQLite in a temp dir), through the library and through the `oidc-load` binary.

use std::net::SocketAddr;
use std::time::Duration;

use novads_api::config::Config;
use novads_api::dev;
use novads_api::server::Server;
use novads_oidc_load::{Credentials, Limit, LoadConfig, Mode, run};
use tokio::sync::oneshot;
use url::Url;

/// `demo-client-secret`, argon2id (the same as api/tests/oidc_flow.rs uses).
const SECRET: &str = "demo-client-secret";
const SECRET_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$0zRucgKNwySQRxoit2ER+w$iDkVZbdhJA9fQrzaNsG0gIjqer7wb69X+sWub423aug";
const CONFIDENTIAL: &str = "bench-confidential";
const CONFIDENTIAL_REDIRECT: &str = "http://127.0.0.1/cb";

struct Running {
    base: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), novads_api::server::ServeError>>,
    _dir: tempfile::TempDir,
}

impl Running {
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.task.await;
    }

    fn public_redirect(&self) -> Url {
        Url::parse(&format!("{}/demo/callback", self.base)).expect("redirect")
    }
}

/// novads on the development configuration plus a confidential client.
async fn start() -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dev::prepare_data_dir(dir.path()).expect("data dir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let mut config: Config = dev::config(&data, addr);
    let mut confidential = config.clients[0].clone();
    confidential.client_id = CONFIDENTIAL.into();
    confidential.redirect_uris = vec![CONFIDENTIAL_REDIRECT.into()];
    confidential.post_logout_redirect_uris = vec![];
    confidential.secret_hash = Some(SECRET_HASH.into());
    confidential.public = false;
    config.clients.push(confidential);
    let server = Server::from_listener(config, listener)
        .await
        .expect("server");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    Running {
        base: format!("http://{addr}"),
        stop: Some(stop),
        task,
        _dir: dir,
    }
}

fn demo_users() -> Vec<Credentials> {
    dev::DEMO_USERS
        .iter()
        .map(|u| Credentials::new(format!("{}@{}", u.username, dev::DEMO_REALM), u.password))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_complete_logins_with_a_public_client() {
    let server = start().await;
    let mut config = LoadConfig::new(
        server.base.clone(),
        dev::DEMO_CLIENT,
        server.public_redirect(),
        demo_users(),
    );
    config.concurrency = 4;
    config.limit = Limit::Requests(20);
    config.scope = "openid profile email".into();
    let report = run(&config).await.expect("run");
    assert_eq!(report.completed, 20, "{}", report.to_text());
    assert_eq!(report.failed, 0, "{}", report.to_text());
    assert!(report.pkce);
    assert_eq!(report.client_auth, "none");
    for step in ["authorize", "login", "token"] {
        assert_eq!(report.steps[step].count, 20, "{step}");
    }
    assert!(report.latency.p50_ms > 0.0 && report.throughput > 0.0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_refresh_grants_with_a_confidential_client() {
    let server = start().await;
    let mut config = LoadConfig::new(
        server.base.clone(),
        CONFIDENTIAL,
        Url::parse(CONFIDENTIAL_REDIRECT).expect("url"),
        demo_users(),
    );
    config.client_secret = Some(SECRET.into());
    config.concurrency = 2;
    config.limit = Limit::Requests(20);
    config.mode = Mode::Refresh;
    let report = run(&config).await.expect("run");
    assert_eq!(report.completed, 20, "{}", report.to_text());
    assert_eq!(report.failed, 0, "{}", report.to_text());
    assert_eq!(report.setup_logins, 2);
    assert_eq!(report.client_auth, "client_secret_basic");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_and_unregistered_redirects_are_categorised() {
    let server = start().await;
    let mut config = LoadConfig::new(
        server.base.clone(),
        dev::DEMO_CLIENT,
        server.public_redirect(),
        vec![Credentials::new("nobody@demo", "wrong")],
    );
    config.concurrency = 1;
    config.limit = Limit::Requests(2);
    let report = run(&config).await.expect("run");
    assert_eq!(report.completed, 0);
    assert_eq!(
        report.errors["login_rejected"].count,
        2,
        "{}",
        report.to_text()
    );

    config.users = demo_users();
    config.redirect_uri = Url::parse("http://127.0.0.1/not-registered").expect("url");
    let report = run(&config).await.expect("run");
    // novads shows its own error page for an unregistered redirect URI (never redirects).
    assert_eq!(report.completed, 0);
    assert_eq!(
        report.errors.keys().collect::<Vec<_>>(),
        vec!["http_400:authorize"],
        "{}",
        report.to_text()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_prints_json_and_sets_its_exit_status() {
    let server = start().await;
    let user = &dev::DEMO_USERS[0];
    let run_binary = |extra: &[&str]| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_oidc-load"));
        command
            .args(["--issuer", &server.base])
            .args(["--client-id", dev::DEMO_CLIENT])
            .args(["--redirect-uri", server.public_redirect().as_str()])
            .args(["--concurrency", "2", "--requests", "5", "--json"])
            .args(extra)
            .kill_on_drop(true);
        command
    };
    let login = format!("{}@{}:{}", user.username, dev::DEMO_REALM, user.password);
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        run_binary(&["--user", &login]).output(),
    )
    .await
    .expect("in time")
    .expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(report["completed"], 5);
    assert_eq!(report["mode"], "login");
    assert!(
        report["latency"]["p99_ms"]
            .as_f64()
            .is_some_and(|p| p > 0.0)
    );

    let output = tokio::time::timeout(
        Duration::from_secs(120),
        run_binary(&["--user", "nobody@demo:wrong"]).output(),
    )
    .await
    .expect("in time")
    .expect("runs");
    assert_eq!(
        output.status.code(),
        Some(1),
        "errors above --max-error-ratio"
    );
    server.stop().await;
}
