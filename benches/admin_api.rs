//! Authorised `GET` requests per second on the admin API: every request checks its bearer
//! token (signature, issuer and expiry, verified once and then remembered; revocation against
//! the replica's copy of the revocation table, reloaded from the database when older than a
//! second) before `GET /api/v1/realms` answers. `novads` runs in this process on the `novads dev`
//! configuration (SQLite) with a confidential `bench-robot` client holding the platform-admin
//! role; the load comes from concurrent keep-alive HTTP clients. Prints figures; asserts only
//! that every request succeeded.
//!
//! Run: `cargo bench --bench admin_api`. `NOVADS_BENCH_SECONDS` (default 8),
//! `NOVADS_BENCH_WARMUP` (default 2) and `NOVADS_BENCH_CLIENTS` (default 32) tune the run.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use novads_api::config::{AdminRateLimitConfig, ClientConfig, PlatformRole, ServiceClientConfig};
use novads_api::dev;
use novads_api::server::Server;

/// `demo-client-secret`, argon2id.
const SECRET: &str = "demo-client-secret";
const SECRET_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$0zRucgKNwySQRxoit2ER+w$iDkVZbdhJA9fQrzaNsG0gIjqer7wb69X+sWub423aug";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let seconds = Duration::from_secs(env_number("NOVADS_BENCH_SECONDS", 8).max(1));
    let warmup = Duration::from_secs(env_number("NOVADS_BENCH_WARMUP", 2));
    let clients = env_number("NOVADS_BENCH_CLIENTS", 32).max(1) as usize;

    let dir = tempfile::tempdir().expect("tempdir");
    let data = dev::prepare_data_dir(dir.path()).expect("data dir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let mut config = dev::config(&data, addr);
    config.clients.push(ClientConfig {
        client_id: "bench-robot".into(),
        realm: dev::DEMO_REALM.into(),
        redirect_uris: vec!["https://robot.example.lv/cb".into()],
        post_logout_redirect_uris: vec![],
        secret_hash: Some(SECRET_HASH.into()),
        public: false,
        id_token_signed_response_alg: Default::default(),
    });
    config.admin_api.clients.push("bench-robot".into());
    config.admin_api.service_clients.push(ServiceClientConfig {
        client_id: "bench-robot".into(),
        role: PlatformRole::PlatformAdmin,
    });
    // One caller sends all the load: its rate limit is still checked on every request, set
    // far above what the machine can send so that it never refuses one.
    config.admin_api.rate_limit = AdminRateLimitConfig {
        requests_per_minute: 60_000_000,
        burst: 1_000_000,
    };
    let server = Server::from_listener(config, listener)
        .await
        .expect("server");
    let server = tokio::spawn(server.run(std::future::pending()));
    let base = format!("http://{addr}");

    let http = reqwest::Client::new();
    let token: serde_json::Value = http
        .post(format!("{base}/oidc/token"))
        .basic_auth("bench-robot", Some(SECRET))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials")
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    let token = Arc::new(
        token["access_token"]
            .as_str()
            .expect("access token")
            .to_owned(),
    );
    let url = Arc::new(format!("{base}/api/v1/realms"));

    println!(
        "admin_api benchmark: authorised GET /api/v1/realms (token checked with its revocation \
         on SQLite), {clients} keep-alive clients, {} s warm-up + {} s measured",
        warmup.as_secs(),
        seconds.as_secs()
    );
    drive(clients, warmup, &http, &url, &token).await;
    let (latencies, elapsed) = drive(clients, seconds, &http, &url, &token).await;
    let mut latencies = latencies;
    latencies.sort_unstable();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "GET /api/v1/realms: {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms ({} requests)",
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(0.50),
        percentile(0.99),
        latencies.len()
    );
    server.abort();
}

/// Runs `clients` tasks sending the request until `duration` passed; every answer must be 200.
async fn drive(
    clients: usize,
    duration: Duration,
    http: &reqwest::Client,
    url: &Arc<String>,
    token: &Arc<String>,
) -> (Vec<Duration>, Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (http, url, token, stop) = (http.clone(), url.clone(), token.clone(), stop.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    let response = http
                        .get(url.as_str())
                        .bearer_auth(token.as_str())
                        .send()
                        .await
                        .expect("request");
                    assert_eq!(response.status(), 200, "every request is authorised");
                    response.bytes().await.expect("body");
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("client task"));
    }
    (all, started.elapsed())
}
