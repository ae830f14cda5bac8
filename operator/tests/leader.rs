//! Leader election against a mocked API server (tower-test): the exact requests of one round
//! (create, renew with the observed resourceVersion, 409 → not leader), and whole replicas
//! racing for one Lease on a fake API server that enforces resourceVersion preconditions the
//! way the real one does — with the clock paused, so minutes of elections run in milliseconds.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response};
use kube::client::Body;
use novads_operator::leader::{self, Elector, LeaseConfig, LeaseLock, Round, StopSignal};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower_test::mock;

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/novads/leases/novads-operator";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/novads/leases?";

fn status(code: u16, reason: &str) -> Value {
    json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code, "message": reason })
}

async fn body_json(request: Request<Body>) -> Value {
    let bytes = request
        .into_body()
        .collect_bytes()
        .await
        .expect("request body");
    if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("request body is JSON")
    }
}

fn respond(status: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(Body::from(serde_json::to_vec(body).expect("JSON")))
        .expect("response")
}

type Step = (
    Method,
    &'static str,
    Box<dyn FnOnce(Value) -> (u16, Value) + Send>,
);

/// Answers exactly the scripted requests, in order.
fn scripted(script: Vec<Step>) -> (kube::Client, JoinHandle<()>) {
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        for (index, (method, uri, answer)) in script.into_iter().enumerate() {
            let (request, send) = handle
                .next_request()
                .await
                .unwrap_or_else(|| panic!("request {index} never came"));
            assert_eq!(request.method(), method, "request {index}");
            assert_eq!(request.uri().to_string(), uri, "request {index}");
            let (code, body) = answer(body_json(request).await);
            send.send_response(respond(code, &body));
        }
        if let Ok(Some((request, _))) =
            tokio::time::timeout(Duration::from_millis(50), handle.next_request()).await
        {
            panic!("unexpected request {} {}", request.method(), request.uri());
        }
    });
    (kube::Client::new(service, "novads"), server)
}

fn lease(holder: Option<&str>, rv: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": { "name": "novads-operator", "namespace": "novads", "resourceVersion": rv },
        "spec": {
            "holderIdentity": holder, "leaseDurationSeconds": 15, "leaseTransitions": 2,
            "acquireTime": "2025-06-01T11:00:00.000000Z", "renewTime": "2025-06-01T12:00:00.000000Z"
        }
    })
}

fn elector(identity: &str) -> Elector {
    Elector::new(LeaseConfig::new(identity, Duration::from_secs(15)))
}

#[tokio::test]
async fn an_absent_lease_is_created() {
    let (client, server) = scripted(vec![
        (
            Method::GET,
            LEASE,
            Box::new(|_| (404, status(404, "NotFound"))),
        ),
        (
            Method::POST,
            LEASES,
            Box::new(|body| {
                assert_eq!(body["metadata"]["name"], "novads-operator");
                assert_eq!(body["metadata"].get("resourceVersion"), None);
                assert_eq!(body["spec"]["holderIdentity"], "a");
                assert_eq!(body["spec"]["leaseDurationSeconds"], 15);
                assert_eq!(body["spec"]["leaseTransitions"], 0);
                let mut created = body;
                created["metadata"]["resourceVersion"] = json!("1");
                (201, created)
            }),
        ),
    ]);
    let lock = LeaseLock::new(client, "novads", "novads-operator");
    let mut elector = elector("a");
    let round = lock.round(&mut elector).await.expect("round");
    assert!(
        matches!(round, Round::Leading(l) if l.metadata.resource_version.as_deref() == Some("1"))
    );
    assert!(elector.is_leading(Instant::now()));
    server.await.expect("script");
}

#[tokio::test]
async fn our_lease_is_renewed_by_a_replace_carrying_the_observed_resource_version() {
    let (client, server) = scripted(vec![
        (
            Method::GET,
            LEASE,
            Box::new(|_| (200, lease(Some("a"), "7"))),
        ),
        (
            Method::PUT,
            "/apis/coordination.k8s.io/v1/namespaces/novads/leases/novads-operator?",
            Box::new(|body| {
                assert_eq!(body["metadata"]["resourceVersion"], "7", "the precondition");
                assert_eq!(body["spec"]["holderIdentity"], "a");
                assert_eq!(body["spec"]["leaseTransitions"], 2);
                assert_eq!(body["spec"]["acquireTime"], "2025-06-01T11:00:00.000000Z");
                assert_ne!(body["spec"]["renewTime"], "2025-06-01T12:00:00.000000Z");
                let mut stored = body;
                stored["metadata"]["resourceVersion"] = json!("8");
                (200, stored)
            }),
        ),
    ]);
    let lock = LeaseLock::new(client, "novads", "novads-operator");
    let mut elector = elector("a");
    assert!(matches!(
        lock.round(&mut elector).await.expect("round"),
        Round::Leading(_)
    ));
    server.await.expect("script");
}

#[tokio::test]
async fn a_conflict_on_taking_a_released_lease_means_not_leader() {
    let (client, server) = scripted(vec![
        (Method::GET, LEASE, Box::new(|_| (200, lease(None, "9")))),
        (
            Method::PUT,
            "/apis/coordination.k8s.io/v1/namespaces/novads/leases/novads-operator?",
            Box::new(|body| {
                assert_eq!(body["metadata"]["resourceVersion"], "9");
                assert_eq!(body["spec"]["holderIdentity"], "b");
                assert_eq!(body["spec"]["leaseTransitions"], 3);
                (409, status(409, "Conflict"))
            }),
        ),
    ]);
    let lock = LeaseLock::new(client, "novads", "novads-operator");
    let mut elector = elector("b");
    assert_eq!(
        lock.round(&mut elector).await.expect("round"),
        Round::Standby { holder: None }
    );
    assert!(!elector.is_leading(Instant::now()));
    server.await.expect("script");
}

#[tokio::test]
async fn losing_the_create_race_means_not_leader() {
    let (client, server) = scripted(vec![
        (
            Method::GET,
            LEASE,
            Box::new(|_| (404, status(404, "NotFound"))),
        ),
        (
            Method::POST,
            LEASES,
            Box::new(|_| (409, status(409, "AlreadyExists"))),
        ),
    ]);
    let lock = LeaseLock::new(client, "novads", "novads-operator");
    let mut elector = elector("b");
    assert!(matches!(
        lock.round(&mut elector).await.expect("round"),
        Round::Standby { .. }
    ));
    assert!(!elector.is_leading(Instant::now()));
    server.await.expect("script");
}

#[tokio::test]
async fn a_held_lease_is_not_written() {
    let (client, server) = scripted(vec![(
        Method::GET,
        LEASE,
        Box::new(|_| (200, lease(Some("a"), "5"))),
    )]);
    let lock = LeaseLock::new(client, "novads", "novads-operator");
    let mut elector = elector("b");
    assert_eq!(
        lock.round(&mut elector).await.expect("round"),
        Round::Standby {
            holder: Some("a".into())
        }
    );
    server.await.expect("script");
}

/// A fake API server holding one Lease, with the real server's optimistic concurrency:
/// a create of an existing Lease and a replace with a stale resourceVersion get 409.
#[derive(Default)]
struct FakeApi {
    lease: Option<Value>,
    version: u64,
    /// Replicas whose requests are never answered (a network partition).
    partitioned: HashSet<String>,
    /// Kept so the partitioned requests hang rather than fail.
    hung: Vec<mock::SendResponse<Response<Body>>>,
}

impl FakeApi {
    fn answer(&mut self, method: &Method, uri: &str, body: Value) -> (u16, Value) {
        match (method.as_str(), uri) {
            ("GET", LEASE) => match &self.lease {
                Some(lease) => (200, lease.clone()),
                None => (404, status(404, "NotFound")),
            },
            ("POST", LEASES) => {
                if self.lease.is_some() {
                    return (409, status(409, "AlreadyExists"));
                }
                (201, self.store(body))
            }
            ("PUT", uri) if uri.starts_with(LEASE) => {
                let current = self
                    .lease
                    .as_ref()
                    .map(|l| l["metadata"]["resourceVersion"].clone());
                if current != Some(body["metadata"]["resourceVersion"].clone()) {
                    return (409, status(409, "Conflict"));
                }
                (200, self.store(body))
            }
            other => panic!("unexpected request {other:?}"),
        }
    }

    fn store(&mut self, mut lease: Value) -> Value {
        self.version += 1;
        lease["metadata"]["resourceVersion"] = json!(self.version.to_string());
        self.lease = Some(lease.clone());
        lease
    }

    fn holder(&self) -> Option<String> {
        self.lease
            .as_ref()
            .and_then(|l| l["spec"]["holderIdentity"].as_str())
            .map(String::from)
    }
}

fn replica_client(api: &Arc<Mutex<FakeApi>>, identity: &str) -> kube::Client {
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let api = api.clone();
    let identity = identity.to_string();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let method = request.method().clone();
            let uri = request.uri().to_string();
            let body = body_json(request).await;
            let mut api = api.lock().expect("fake API");
            if api.partitioned.contains(&identity) {
                api.hung.push(send);
                continue;
            }
            let (code, response) = api.answer(&method, &uri, body);
            send.send_response(respond(code, &response));
        }
    });
    kube::Client::new(service, "novads")
}

/// Who acted when: +1 when a replica's work starts, -1 when it stops (or is dropped).
#[derive(Clone, Default)]
struct Timeline(Arc<Mutex<Vec<(Instant, String, i32)>>>);

impl Timeline {
    fn record(&self, who: &str, delta: i32) {
        self.0
            .lock()
            .expect("timeline")
            .push((Instant::now(), who.to_string(), delta));
    }

    /// The most replicas acting at once.
    fn max_active(&self) -> i32 {
        let mut active = 0;
        let mut max = 0;
        for (_, _, delta) in self.0.lock().expect("timeline").iter() {
            active += delta;
            max = max.max(active);
        }
        max
    }

    fn starts(&self) -> Vec<String> {
        self.0
            .lock()
            .expect("timeline")
            .iter()
            .filter(|(_, _, d)| *d > 0)
            .map(|(_, who, _)| who.clone())
            .collect()
    }

    fn last(&self, who: &str, delta: i32) -> Option<Instant> {
        self.0
            .lock()
            .expect("timeline")
            .iter()
            .rev()
            .find(|(_, w, d)| w == who && *d == delta)
            .map(|(at, _, _)| *at)
    }
}

struct Acting {
    timeline: Timeline,
    who: String,
}

impl Drop for Acting {
    fn drop(&mut self) {
        self.timeline.record(&self.who, -1);
    }
}

/// A replica running [`leader::lead`] whose work only records that it acts.
fn replica(
    api: &Arc<Mutex<FakeApi>>,
    identity: &str,
    timeline: &Timeline,
) -> (watch::Sender<bool>, JoinHandle<()>) {
    let client = replica_client(api, identity);
    let lock = LeaseLock::new(client, "novads", "novads-operator");
    let (stop_tx, stop_rx) = watch::channel(false);
    let timeline = timeline.clone();
    let who = identity.to_string();
    let elector = elector(identity);
    let task = tokio::spawn(async move {
        leader::lead(
            lock,
            elector,
            stop_rx,
            |_| {},
            |stop: StopSignal| {
                let timeline = timeline.clone();
                let who = who.clone();
                async move {
                    timeline.record(&who, 1);
                    let _acting = Acting { timeline, who };
                    stop.await;
                }
            },
        )
        .await
        .expect("lead");
    });
    (stop_tx, task)
}

#[tokio::test(start_paused = true)]
async fn of_two_replicas_only_one_acts_and_the_other_takes_over_on_release() {
    let api = Arc::new(Mutex::new(FakeApi::default()));
    let timeline = Timeline::default();
    let (stop_a, a) = replica(&api, "a", &timeline);
    let (stop_b, b) = replica(&api, "b", &timeline);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(timeline.max_active(), 1);
    let starts = timeline.starts();
    assert_eq!(starts.len(), 1, "one leader, kept for a minute: {starts:?}");
    let first = starts[0].clone();
    assert_eq!(api.lock().expect("api").holder(), Some(first.clone()));

    // The leader shuts down: it stops acting, releases, and the other acquires promptly.
    let released_at = Instant::now();
    let (stop_first, first_task, second) = if first == "a" {
        (stop_a, a, "b")
    } else {
        (stop_b, b, "a")
    };
    stop_first.send_replace(true);
    first_task.await.expect("first replica stops cleanly");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(timeline.starts(), vec![first.clone(), second.to_string()]);
    assert_eq!(timeline.max_active(), 1, "never two active leaders");
    let took_over = timeline.last(second, 1).expect("second acts");
    assert!(
        took_over - released_at <= Duration::from_secs(6),
        "a released lease is taken within one retry period, took {:?}",
        took_over - released_at
    );
    assert_eq!(api.lock().expect("api").holder().as_deref(), Some(second));
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_cannot_renew_stops_before_another_takes_over() {
    let api = Arc::new(Mutex::new(FakeApi::default()));
    let timeline = Timeline::default();
    let (_stop_a, _a) = replica(&api, "a", &timeline);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_stop_b, _b) = replica(&api, "b", &timeline);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(timeline.starts(), vec!["a".to_string()]);

    // Cut the leader off from the API server: its requests hang.
    let cut_at = Instant::now();
    api.lock().expect("api").partitioned.insert("a".into());
    tokio::time::sleep(Duration::from_secs(60)).await;

    assert_eq!(timeline.starts(), vec!["a".to_string(), "b".to_string()]);
    assert_eq!(timeline.max_active(), 1, "never two active leaders");
    let a_stopped = timeline.last("a", -1).expect("a stopped");
    let b_started = timeline.last("b", 1).expect("b started");
    assert!(
        a_stopped - cut_at <= Duration::from_secs(10),
        "the cut-off leader stops within the renew deadline, took {:?}",
        a_stopped - cut_at
    );
    assert!(
        b_started - a_stopped >= Duration::from_secs(4),
        "with a margin before the other takes over: {:?}",
        b_started - a_stopped
    );
    assert_eq!(api.lock().expect("api").holder().as_deref(), Some("b"));
}
