//! Slow and idle clients against the running server: a client sending its header one line a
//! second (slowloris), one that connects and says nothing, and an idle keep-alive connection
//! are each closed after the header-read timeout, and while they try, other people still sign
//! in. The connection cap holds. And the management listener: `/metrics` and the detailed
//! `/readyz` leave the public address.

mod support;

use std::time::{Duration, Instant};

use novads_api::dev;
use support::{Running, start_dev};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the test servers give a client to send its header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);

async fn start(max_connections: u32) -> Running {
    start_dev(|config, _| {
        config.server.header_read_timeout_seconds = HEADER_TIMEOUT.as_secs();
        config.server.max_connections = max_connections;
    })
    .await
}

fn addr(base: &str) -> String {
    base.trim_start_matches("http://").to_owned()
}

/// Writes `lines` one a second until the server closes the connection; returns how long the
/// connection lived, or `None` if it was still open when the lines ran out.
async fn drip(base: String, lines: usize) -> Option<Duration> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr(&base)).await.expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: novads\r\n")
        .await
        .ok()?;
    for i in 0..lines {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let line = format!("X-Slow-{i}: still typing\r\n");
        if stream.write_all(line.as_bytes()).await.is_err() {
            return Some(started.elapsed());
        }
        // A closed connection shows as end of file (or an error) on read.
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(10), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => return Some(started.elapsed()),
            Err(_) => {}
        }
    }
    None
}

/// Signs the demo user in through the login form; returns the status of the login post.
async fn sign_in(base: &str) -> u16 {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let redirect = format!("{base}/demo/callback");
    let authorize = format!(
        "{base}/oidc/authorize?response_type=code&client_id={}&scope=openid&state=st&redirect_uri={}&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256",
        dev::DEMO_CLIENT,
        url::form_urlencoded::byte_serialize(redirect.as_bytes()).collect::<String>()
    );
    let page = client.get(&authorize).send().await.expect("authorize");
    assert_eq!(page.status(), 200);
    let cookie = page.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .split(';')
        .next()
        .expect("cookie")
        .to_owned();
    let html = page.text().await.expect("html");
    let hidden = |name: &str| {
        let marker = format!("name=\"{name}\" value=\"");
        let start = html.find(&marker).expect("field") + marker.len();
        html[start..][..html[start..].find('"').expect("end")].to_owned()
    };
    let user = &dev::DEMO_USERS[0];
    client
        .post(format!("{base}/oidc/login"))
        .header("cookie", cookie)
        .form(&[
            ("request", hidden("request")),
            ("csrf", hidden("csrf")),
            ("username", format!("{}@{}", user.username, dev::DEMO_REALM)),
            ("password", user.password.to_owned()),
        ])
        .send()
        .await
        .expect("login")
        .status()
        .as_u16()
}

#[tokio::test]
async fn slow_clients_are_cut_off_and_others_still_sign_in() {
    let server = start(1024).await;
    // Twenty clients each sending one header line a second, for up to ten seconds.
    let slow: Vec<_> = (0..20)
        .map(|_| tokio::spawn(drip(server.base.clone(), 10)))
        .collect();
    // One that connects and says nothing.
    let mut silent = TcpStream::connect(addr(&server.base))
        .await
        .expect("connect");
    // Meanwhile people sign in, at once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    assert_eq!(
        sign_in(&server.base).await,
        303,
        "signed in while under attack"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "sign-in waited {:?}",
        started.elapsed()
    );
    for client in slow {
        let lived = client
            .await
            .expect("slow client ran")
            .expect("the server closed the slow connection");
        assert!(
            lived < HEADER_TIMEOUT + Duration::from_secs(2),
            "a slow client held its connection for {lived:?}"
        );
    }
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(HEADER_TIMEOUT * 2, silent.read(&mut buf))
        .await
        .expect("the silent connection is closed within the timeout");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    server.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let server = start(1024).await;
    let mut stream = TcpStream::connect(addr(&server.base))
        .await
        .expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: novads\r\n\r\n")
        .await
        .expect("request");
    let mut buf = vec![0u8; 4096];
    let read = stream.read(&mut buf).await.expect("response");
    assert!(
        String::from_utf8_lossy(&buf[..read]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..read])
    );
    let started = Instant::now();
    let closed = tokio::time::timeout(HEADER_TIMEOUT * 3, stream.read(&mut buf))
        .await
        .expect("the idle connection is closed");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    assert!(started.elapsed() >= HEADER_TIMEOUT - Duration::from_millis(500));
    server.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_free_one() {
    let server = start(4).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(
            TcpStream::connect(addr(&server.base))
                .await
                .expect("connect"),
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let client = reqwest::Client::new();
    let health = format!("{}/healthz", server.base);
    assert!(
        client
            .get(&health)
            .timeout(Duration::from_millis(800))
            .send()
            .await
            .is_err(),
        "a fifth connection is not served while four are open"
    );
    // The silent four are closed after the header timeout, and the next client is served.
    let response = client
        .get(&health)
        .timeout(HEADER_TIMEOUT * 3)
        .send()
        .await
        .expect("served once a connection is free");
    assert_eq!(response.status(), 200);
    drop(held);
    server.stop().await;
}

#[tokio::test]
async fn metrics_and_readiness_move_to_the_management_listener() {
    let server = start_dev(|config, _| {
        config.server.management_listen = Some("127.0.0.1:0".parse().expect("addr"));
    })
    .await;
    let management = server.management.clone().expect("management listener");
    let status =
        |url: String| async move { reqwest::get(&url).await.expect("get").status().as_u16() };
    assert_eq!(status(format!("{}/metrics", server.base)).await, 404);
    assert_eq!(status(format!("{}/readyz", server.base)).await, 404);
    assert_eq!(status(format!("{}/healthz", server.base)).await, 200);
    assert_eq!(status(format!("{management}/healthz")).await, 200);
    assert_eq!(status(format!("{management}/readyz")).await, 200);
    let metrics = reqwest::get(format!("{management}/metrics"))
        .await
        .expect("metrics");
    assert_eq!(metrics.status(), 200);
    assert!(
        metrics
            .text()
            .await
            .expect("text")
            .contains("novads_build_info")
    );
    // The sign-in endpoints are not on the management listener.
    assert_eq!(
        status(format!("{management}/.well-known/openid-configuration")).await,
        404
    );
    server.stop().await;

    // Without the setting everything stays on the one listener.
    let server = start(1024).await;
    assert!(server.management.is_none());
    assert_eq!(
        reqwest::get(format!("{}/metrics", server.base))
            .await
            .expect("get")
            .status(),
        200
    );
    server.stop().await;
}
