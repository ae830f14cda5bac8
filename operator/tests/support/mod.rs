//! Helpers shared by the operator's integration tests that run the whole operator against a
//! fake API server and poll its HTTP endpoints over a real socket.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower_test::mock;

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

/// A kube client whose every request `fake` answers.
pub fn fake_client<F: FakeApi>(fake: &Arc<Mutex<F>>) -> kube::Client {
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let fake = fake.clone();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let method = request.method().to_string();
            let uri = request.uri().to_string();
            let accept = request
                .headers()
                .get(http::header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let bytes = request.into_body().collect_bytes().await.expect("body");
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let mut fake = fake.lock().expect("fake");
            match fake.request(&method, &uri, &accept, body) {
                Some((code, body)) => send.send_response(
                    Response::builder()
                        .status(code)
                        .body(Body::from(serde_json::to_vec(&body).expect("JSON")))
                        .expect("response"),
                ),
                None => fake.hold(send),
            }
        }
    });
    kube::Client::new(service, "default")
}
