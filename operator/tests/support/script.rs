//! A mocked API server (tower-test) that answers a script: every request is checked in order
//! — method, path and query, and the chart's RBAC — and answered as the API server would.

use std::time::Duration;

use http::{Method, Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tower_test::mock;

use super::rbac;

/// The test's end of a mocked API.
pub type Handle = mock::Handle<Request<Body>, Response<Body>>;
type Respond = Box<dyn FnOnce(Value) -> (u16, Value) + Send>;

/// One expected request and how the fake API server answers it (given the request body).
pub struct Expect {
    pub method: Method,
    pub uri: String,
    pub respond: Respond,
}

pub fn expect(
    method: Method,
    uri: &str,
    respond: impl FnOnce(Value) -> (u16, Value) + Send + 'static,
) -> Expect {
    Expect {
        method,
        uri: uri.to_string(),
        respond: Box::new(respond),
    }
}

/// A kube client (default namespace `default`) whose requests `Handle` receives.
pub fn mocked_client() -> (kube::Client, Handle) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), handle)
}

/// Content type and JSON body of a request (`Null` when it has none).
pub async fn read(request: Request<Body>) -> (String, Value) {
    let content_type = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let bytes = request
        .into_body()
        .collect_bytes()
        .await
        .expect("request body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("request body is JSON")
    };
    (content_type, body)
}

/// An API server response with a JSON body.
pub fn response(status: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(Body::from(serde_json::to_vec(body).expect("response JSON")))
        .expect("response")
}

/// Answers the requests in order, asserting each (and that the chart's RBAC allows it);
/// fails on any request beyond the script. Returns the handle for the next round.
pub fn api_server(mut handle: Handle, script: Vec<Expect>) -> JoinHandle<Handle> {
    tokio::spawn(async move {
        for (index, step) in script.into_iter().enumerate() {
            let (request, send) =
                tokio::time::timeout(Duration::from_secs(5), handle.next_request())
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| {
                        panic!("request {index} ({} {}) never came", step.method, step.uri)
                    });
            let (method, uri) = (request.method().clone(), request.uri().to_string());
            assert_eq!(
                (&method, uri.as_str()),
                (&step.method, step.uri.as_str()),
                "request {index}"
            );
            let (content_type, body) = read(request).await;
            rbac::assert_allowed(&method, &uri, &content_type);
            let (status, answer) = (step.respond)(body);
            send.send_response(response(status, &answer));
        }
        if let Ok(Some((request, _))) =
            tokio::time::timeout(Duration::from_millis(50), handle.next_request()).await
        {
            panic!("unexpected request {} {}", request.method(), request.uri());
        }
        handle
    })
}

/// The API server's answer for a missing object.
pub fn not_found() -> (u16, Value) {
    api_error(404, "NotFound")
}

/// The API server's answer for a failed request.
pub fn api_error(code: u16, reason: &str) -> (u16, Value) {
    (
        code,
        json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code, "message": format!("{reason} from test") }),
    )
}

/// The condition of `type_` in a status, as JSON.
pub fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}
