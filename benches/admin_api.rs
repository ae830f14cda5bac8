//! Authorised `GET` requests per second on the admin API: every request checks its bearer
//! token (signature, issuer and expiry, verified once and then remembered; revocation against
//! the replica's copy of the revocation table, reloaded from the database when older than a
//! second) before `GET /api/v1/realms` answers. `novads` runs in this process on the `novads dev`
//! configuration (SQLite) with a confidential `bench-robot` client holding the platform-admin
//! role; the load comes from concurrent keep-alive HTTP clients in this process, sharing its
//! cores. `GET /healthz` under the same load first gives the floor: what HTTP, the clients and
//! the server-wide middleware cost without the admin API. Prints figures; asserts only that
//! every request succeeded.
//!
//! Run: `cargo bench --bench admin_api`. `NOVADS_BENCH_SECONDS` (default 8),
//! `NOVADS_BENCH_WARMUP` (default 2), `NOVADS_BENCH_CLIENTS` (default 32) and
//! `NOVADS_BENCH_DRIVER` (`hyper`, default, or `reqwest`) tune the run.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper_util::rt::TokioIo;
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
    let driver = Driver::from_env();

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
    let token = token["access_token"].as_str().expect("access token");
    let authorization = HeaderValue::from_str(&format!("Bearer {token}")).expect("header value");

    println!(
        "admin_api benchmark: {clients} keep-alive clients ({driver}), {} s warm-up + {} s \
         measured per line",
        warmup.as_secs(),
        seconds.as_secs(),
        driver = driver.name(),
    );
    let loads = [
        // The floor: no token, no admin API, the same server-wide middleware.
        Load {
            label: "GET /healthz (no token; HTTP and the shared middleware only)",
            path: "/healthz",
            authorization: None,
        },
        Load {
            label: "GET /api/v1/realms (token checked with its revocation on SQLite)",
            path: "/api/v1/realms",
            authorization: Some(authorization),
        },
    ];
    for load in &loads {
        let load = Arc::new(load.clone());
        drive(driver, clients, warmup, addr, &load).await;
        let (mut latencies, elapsed) = drive(driver, clients, seconds, addr, &load).await;
        latencies.sort_unstable();
        let percentile = |p: f64| {
            latencies
                .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        println!(
            "{}: {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms ({} requests)",
            load.label,
            latencies.len() as f64 / elapsed.as_secs_f64(),
            percentile(0.50),
            percentile(0.99),
            latencies.len()
        );
    }
    server.abort();
}

/// The HTTP client that sends the load, `NOVADS_BENCH_DRIVER`: `hyper` (default; one bare
/// HTTP/1.1 connection per client, the least client-side work per request) or `reqwest` (a
/// full client with its pool, as an integrator would use).
#[derive(Debug, Clone, Copy)]
enum Driver {
    Hyper,
    Reqwest,
}

impl Driver {
    fn from_env() -> Self {
        match std::env::var("NOVADS_BENCH_DRIVER").as_deref() {
            Ok("reqwest") => Self::Reqwest,
            Ok("hyper") | Err(_) => Self::Hyper,
            Ok(other) => panic!("NOVADS_BENCH_DRIVER: `hyper` or `reqwest`, not {other:?}"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Hyper => "hyper",
            Self::Reqwest => "reqwest",
        }
    }
}

/// One request sent over and over.
#[derive(Clone)]
struct Load {
    label: &'static str,
    path: &'static str,
    authorization: Option<HeaderValue>,
}

/// Runs `clients` tasks sending the request until `duration` passed; every answer must be 200.
async fn drive(
    driver: Driver,
    clients: usize,
    duration: Duration,
    addr: SocketAddr,
    load: &Arc<Load>,
) -> (Vec<Duration>, Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    // One reqwest client (one pool) for all tasks, as before; hyper connects per task.
    let http = reqwest::Client::new();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (load, stop) = (load.clone(), stop.clone());
            match driver {
                Driver::Hyper => tokio::spawn(send_hyper(addr, load, stop)),
                Driver::Reqwest => tokio::spawn(send_reqwest(http.clone(), addr, load, stop)),
            }
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

/// One keep-alive HTTP/1.1 connection sending the request until `stop`.
async fn send_hyper(addr: SocketAddr, load: Arc<Load>, stop: Arc<AtomicBool>) -> Vec<Duration> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let host = HeaderValue::from_str(&addr.to_string()).expect("host");
    let mut latencies = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let sent = Instant::now();
        sender.ready().await.expect("connection open");
        let mut request = hyper::Request::get(load.path).header(header::HOST, host.clone());
        if let Some(authorization) = &load.authorization {
            request = request.header(header::AUTHORIZATION, authorization.clone());
        }
        let request = request.body(Empty::<Bytes>::new()).expect("request");
        let response = sender.send_request(request).await.expect("response");
        assert_eq!(response.status(), 200, "every request is answered");
        response.into_body().collect().await.expect("body");
        latencies.push(sent.elapsed());
    }
    latencies
}

/// reqwest's pooled client sending the request until `stop`.
async fn send_reqwest(
    http: reqwest::Client,
    addr: SocketAddr,
    load: Arc<Load>,
    stop: Arc<AtomicBool>,
) -> Vec<Duration> {
    let url = format!("http://{addr}{}", load.path);
    let mut latencies = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let sent = Instant::now();
        let mut request = http.get(url.as_str());
        if let Some(authorization) = &load.authorization {
            request = request.header(header::AUTHORIZATION, authorization.clone());
        }
        let response = request.send().await.expect("request");
        assert_eq!(response.status(), 200, "every request is answered");
        response.bytes().await.expect("body");
        latencies.push(sent.elapsed());
    }
    latencies
}
