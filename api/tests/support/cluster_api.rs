#![allow(dead_code)]

//! A mocked Kubernetes API (tower-test) for the admin API's cluster resources, after the
//! operator's kit (operator/tests/support/script.rs): it answers a script, asserting each
//! request's method, path and query in order, and checks every request against the ClusterRole
//! the chart grants `novads serve` (charts/novads/templates/rbac-serve.yaml), so a grant the
//! admin API needs cannot be forgotten there.

use std::sync::OnceLock;
use std::time::Duration;

use axum::http::{Method, Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tower_test::mock;

/// The test's end of a mocked API.
pub type Handle = mock::Handle<Request<Body>, Response<Body>>;
type Respond = Box<dyn FnOnce(Value) -> (u16, Value) + Send>;

/// One expected request and how the API server answers it (given the request body).
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
        uri: uri.to_owned(),
        respond: Box::new(respond),
    }
}

/// A kube client whose requests `Handle` receives.
pub fn mocked_client() -> (kube::Client, Handle) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), handle)
}

/// Content type and JSON body of a request (`Null` when it has none).
async fn read(request: Request<Body>) -> (String, Value) {
    let content_type = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
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

fn response(status: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(Body::from(serde_json::to_vec(body).expect("response JSON")))
        .expect("response")
}

/// Answers the requests in order, asserting each (and that the chart's RBAC allows it); fails
/// on any request beyond the script. Returns the handle for the next round.
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
            assert_allowed(&method, &uri, &content_type);
            let (status, answer) = (step.respond)(body);
            send.send_response(response(status, &answer));
        }
        if let Ok(Some((request, _))) =
            tokio::time::timeout(Duration::from_millis(100), handle.next_request()).await
        {
            panic!("unexpected request {} {}", request.method(), request.uri());
        }
        handle
    })
}

/// The API server's answer for a failed request.
pub fn api_error(code: u16, reason: &str) -> (u16, Value) {
    (
        code,
        json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code, "message": format!("{reason} from test") }),
    )
}

/// The API server's answer for a missing object.
pub fn not_found() -> (u16, Value) {
    api_error(404, "NotFound")
}

struct Rule {
    groups: Vec<String>,
    resources: Vec<String>,
    verbs: Vec<String>,
}

/// The rules of the ClusterRole the chart binds to `novads serve`.
fn serve_rules() -> &'static [Rule] {
    static RULES: OnceLock<Vec<Rule>> = OnceLock::new();
    RULES.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../charts/novads/templates/rbac-serve.yaml"
        );
        let text = std::fs::read_to_string(path).expect("read the chart's rbac-serve.yaml");
        let role: Value = serde_saphyr::from_str(&text).expect("RBAC YAML");
        assert_eq!(role["kind"], "ClusterRole", "{path}");
        let strings = |value: &Value| -> Vec<String> {
            value
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        };
        role["rules"]
            .as_array()
            .expect("rules")
            .iter()
            .map(|rule| Rule {
                groups: strings(&rule["apiGroups"]),
                resources: strings(&rule["resources"]),
                verbs: strings(&rule["verbs"]),
            })
            .collect()
    })
}

/// Panics when the chart does not grant `novads serve` what the request needs.
pub fn assert_allowed(method: &Method, uri: &str, content_type: &str) {
    let path = uri.split_once('?').map_or(uri, |(path, _)| path);
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] => (String::new(), rest.to_vec()),
        ["apis", group, _version, rest @ ..] => ((*group).to_owned(), rest.to_vec()),
        _ => panic!("not an API path: {uri}"),
    };
    let rest = match rest.as_slice() {
        ["namespaces", _namespace, rest @ ..] if !rest.is_empty() => rest.to_vec(),
        other => other.to_vec(),
    };
    let (resource, named) = match rest.as_slice() {
        [resource] => ((*resource).to_owned(), false),
        [resource, _name] => ((*resource).to_owned(), true),
        _ => panic!("unexpected API path {uri}"),
    };
    let verbs: &[&str] = match *method {
        Method::GET if named => &["get"],
        Method::GET => &["list"],
        Method::POST => &["create"],
        Method::PUT => &["update"],
        // Server-side apply creates what does not exist yet, which needs `create` too.
        Method::PATCH if content_type.contains("apply-patch") => &["patch", "create"],
        Method::PATCH => &["patch"],
        Method::DELETE => &["delete"],
        _ => panic!("unexpected method {method}"),
    };
    for verb in verbs {
        let allowed = serve_rules().iter().any(|rule| {
            rule.groups.contains(&group)
                && rule.resources.contains(&resource)
                && rule.verbs.iter().any(|v| v == verb)
        });
        assert!(
            allowed,
            "the chart's rbac-serve.yaml does not allow {verb} on {resource} in group {group:?} \
             ({method} {uri})"
        );
    }
}

/// A cluster that lists the Municipalities of `municipality_list` and keeps the novads
/// objects written to it (servers, images), answering every request as the API server would
/// (each checked against the chart's RBAC): for tests that do not script the requests, such as
/// the contract test.
pub fn fake_cluster(municipality_list: Value) -> kube::Client {
    fake_cluster_with_writes(municipality_list).0
}

/// Every write a fake cluster saw, as `METHOD URI`.
pub type Writes = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// [`fake_cluster`], also recording every write it is sent.
pub fn fake_cluster_with_writes(municipality_list: Value) -> (kube::Client, Writes) {
    let (client, mut handle) = mocked_client();
    let writes = Writes::default();
    let seen = writes.clone();
    tokio::spawn(async move {
        // (resource, namespace, name) → object.
        let mut objects = std::collections::BTreeMap::<(String, String, String), Value>::new();
        let mut version = 100_u64;
        while let Some((request, send)) = handle.next_request().await {
            let method = request.method().clone();
            let uri = request.uri().to_string();
            let (content_type, body) = read(request).await;
            assert_allowed(&method, &uri, &content_type);
            if method != Method::GET {
                seen.lock().expect("writes").push(format!("{method} {uri}"));
            }
            let path = uri.split_once('?').map_or(uri.as_str(), |(path, _)| path);
            let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            let (namespace, rest) = match segments.as_slice() {
                [
                    "apis",
                    "novads.io",
                    "v1alpha1",
                    "namespaces",
                    namespace,
                    rest @ ..,
                ] => ((*namespace).to_owned(), rest.to_vec()),
                ["apis", "novads.io", "v1alpha1", rest @ ..] => (String::new(), rest.to_vec()),
                _ => (String::new(), Vec::new()),
            };
            let (status, answer) = match (&method, rest.as_slice()) {
                (&Method::GET, ["municipalities"]) => (200, municipality_list.clone()),
                (&Method::GET, [resource]) => (
                    200,
                    json!({
                        "apiVersion": "novads.io/v1alpha1",
                        "kind": "List",
                        "metadata": { "resourceVersion": version.to_string() },
                        "items": objects
                            .iter()
                            .filter(|((r, ns, _), _)| r == resource && *ns == namespace)
                            .map(|(_, object)| object.clone())
                            .collect::<Vec<_>>(),
                    }),
                ),
                (_, [resource, name]) => {
                    let key = (
                        (*resource).to_owned(),
                        namespace.clone(),
                        (*name).to_owned(),
                    );
                    match method {
                        Method::GET => objects
                            .get(&key)
                            .map_or_else(not_found, |object| (200, object.clone())),
                        Method::DELETE => match objects.remove(&key) {
                            Some(_) => (
                                200,
                                json!({ "kind": "Status", "apiVersion": "v1", "status": "Success", "code": 200 }),
                            ),
                            None => not_found(),
                        },
                        Method::PATCH => {
                            let stored = objects
                                .get(&key)
                                .map(|o| o["metadata"]["resourceVersion"].clone());
                            let asked = &body["metadata"]["resourceVersion"];
                            if !asked.is_null() && stored.as_ref() != Some(asked) {
                                api_error(409, "Conflict")
                            } else {
                                version += 1;
                                let mut object = body.clone();
                                object["metadata"]["resourceVersion"] = json!(version.to_string());
                                objects.insert(key, object.clone());
                                (if stored.is_some() { 200 } else { 201 }, object)
                            }
                        }
                        _ => api_error(405, "MethodNotAllowed"),
                    }
                }
                _ => not_found(),
            };
            send.send_response(response(status, &answer));
        }
    });
    (client, writes)
}
