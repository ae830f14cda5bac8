//! A fake API server for running the whole operator against (every request checked against
//! the chart's RBAC too), and polling the operator's HTTP endpoints over a real socket.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Response;
use kube::client::Body;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower_test::mock;

use super::rbac;
use super::script::{mocked_client, read, response};

/// One HTTP/1.1 GET; `None` while nothing listens or the answer is not HTTP.
async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let code = response.get(9..12)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_string();
    Some((code, body))
}

/// Polls `path` until `check` accepts the answer, for at most 10 s.
pub async fn eventually(addr: SocketAddr, path: &str, check: impl Fn(u16, &str) -> bool) -> String {
    for _ in 0..200 {
        if let Some((code, body)) = http_get(addr, path).await
            && check(code, &body)
        {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} never got there: {:?}", http_get(addr, path).await);
}

/// A loopback address with a port that was free a moment ago.
pub fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// A fake API server that runs the whole operator against itself.
pub trait FakeApi: Send + 'static {
    /// Records one request and answers it, or returns `None` to keep it open (a watch).
    fn request(
        &mut self,
        method: &str,
        uri: &str,
        accept: &str,
        body: Value,
    ) -> Option<(u16, Value)>;
    /// Keeps an unanswered request open until the fake is dropped.
    fn hold(&mut self, open: mock::SendResponse<Response<Body>>);
}

/// A kube client whose every request `fake` answers, once the chart's RBAC allows it.
pub fn fake_client<F: FakeApi>(fake: &Arc<Mutex<F>>) -> kube::Client {
    let (client, mut handle) = mocked_client();
    let fake = fake.clone();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let method = request.method().clone();
            let uri = request.uri().to_string();
            let accept = request
                .headers()
                .get(http::header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let (content_type, body) = read(request).await;
            rbac::assert_allowed(&method, &uri, &content_type);
            let mut fake = fake.lock().expect("fake");
            match fake.request(method.as_str(), &uri, &accept, body) {
                Some((code, body)) => send.send_response(response(code, &body)),
                None => fake.hold(send),
            }
        }
    });
    client
}
