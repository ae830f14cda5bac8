//! The security monitor's evaluation in the operator against a mocked API server (the kit in
//! `support/`): Reports and `status.compliance` applied with field manager `novads-monitor`,
//! each request checked against the chart's RBAC, the Reports valid against the OpenReports
//! schemas, exemptions honoured, an expired one announced once, an unchanged status not
//! rewritten, a failed write kept out of the time of last success, and each Municipality's
//! admin groups handed to the federation collector.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use http::Method;
use novads_monitor::facts::{AdminGroups, MunicipalityFacts};
use novads_monitor::metrics::MonitorMetrics;
use novads_monitor::{FactsDocument, Source, SourceState, Subject};
use novads_operator::compliance::ClusterObjects;
use novads_operator::monitor::{
    CollectFederation, FederationCollector, Monitor, MonitorOptions, NO_FEDERATION,
};
use prometheus::{Encoder, Registry, TextEncoder};
use serde_json::{Value, json};

mod support;
use support::{Expect, api_error, api_server, expect, mocked_client};

const APPLY: &str = "?&force=true&fieldManager=novads-monitor";
const REPORT: &str =
    "/apis/openreports.io/v1alpha1/namespaces/muni-talsi/reports/novads-compliance";
const CLUSTER_REPORT: &str = "/apis/openreports.io/v1alpha1/clusterreports/novads-compliance";
const STATUS: &str = "/apis/novads.io/v1alpha1/municipalities/talsi/status";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/muni-talsi/events?";

fn now() -> DateTime<Utc> {
    "2026-12-01T12:00:00Z".parse().expect("time")
}

/// Talsi without a ResourceQuota or NetworkPolicy (so `tenancy.quota` and
/// `network.default-deny` fail), an active exemption for the quota and an expired one for the
/// network.
const OBJECTS: &str = r#"
apiVersion: novads.io/v1alpha1
kind: Municipality
metadata: {name: talsi}
spec: {code: talsi, displayName: Talsi, realm: talsi, adminGroups: [it-admins], quotas: {cpu: 4, memory: 8Gi, storage: 100Gi, maxVirtualServers: 2}}
---
apiVersion: novads.io/v1alpha1
kind: SecurityExemption
metadata: {name: quota-waiver, namespace: muni-talsi, creationTimestamp: "2026-11-01T00:00:00Z"}
spec: {check: tenancy.quota, reason: The quota is being resized with the finance office., approver: anna@talsi, expires: "2027-03-01T00:00:00Z"}
---
apiVersion: novads.io/v1alpha1
kind: SecurityExemption
metadata: {name: network-waiver, namespace: muni-talsi, creationTimestamp: "2026-06-01T00:00:00Z"}
spec: {check: network.default-deny, reason: Migration of the records system to the new network., approver: anna@talsi, expires: "2026-11-30T00:00:00Z"}
"#;

fn objects() -> ClusterObjects {
    ClusterObjects::from_yaml(OBJECTS).expect("objects")
}

fn validate(schema_file: &str, object: &Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../monitor/tests/schemas")
        .join(schema_file);
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("schema")).expect("JSON");
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(object)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{schema_file}: {errors:#?}");
}

fn result<'a>(report: &'a Value, policy: &str) -> &'a Value {
    report["results"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["policy"] == policy))
        .unwrap_or_else(|| panic!("no {policy} in {report}"))
}

fn report_apply(check: impl FnOnce(&Value) + Send + 'static) -> Expect {
    expect(Method::PATCH, &format!("{REPORT}{APPLY}"), move |body| {
        validate("report_v1alpha1.json", &body);
        check(&body);
        (200, body)
    })
}

fn cluster_report_apply() -> Expect {
    expect(Method::PATCH, &format!("{CLUSTER_REPORT}{APPLY}"), |body| {
        validate("clusterreport_v1alpha1.json", &body);
        assert_eq!(body["kind"], "ClusterReport");
        (200, body)
    })
}

/// The API server's answer to a status apply: the Municipality with the applied status.
fn applied_status(body: Value) -> (u16, Value) {
    let mut object = serde_json::to_value(&objects().municipalities[0]).expect("JSON");
    object["status"] = body["status"].clone();
    (200, object)
}

fn monitor() -> (Monitor, support::Handle, Registry) {
    let (client, handle) = mocked_client();
    let registry = Registry::new();
    let metrics = MonitorMetrics::register(&registry, false).expect("metrics");
    let monitor = Monitor::new(
        client,
        MonitorOptions::default(),
        Some("operator-0".into()),
        metrics,
    );
    (monitor, handle, registry)
}

fn exposition(registry: &Registry) -> String {
    let mut text = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut text)
        .expect("encode");
    String::from_utf8(text).expect("utf-8")
}

#[tokio::test]
async fn reports_status_and_events_are_applied_by_the_monitor() {
    let (mut monitor, handle, registry) = monitor();
    let written = Arc::new(std::sync::Mutex::new(Value::Null));
    let status_seen = written.clone();
    let script = vec![
        report_apply(|report| {
            assert_eq!(report["metadata"]["namespace"], "muni-talsi");
            assert_eq!(report["source"], "novads-monitor");
            assert_eq!(report["scope"]["kind"], "Namespace");
            // The active exemption turns the failure into a skip naming it.
            let quota = result(report, "tenancy.quota");
            assert_eq!(quota["result"], "skip", "{quota}");
            assert_eq!(quota["properties"]["exemption"], "quota-waiver", "{quota}");
            // The expired one no longer applies.
            let network = result(report, "network.default-deny");
            assert_eq!(network["result"], "fail");
            // In Latvian unless told otherwise: title, measurement and exemption.
            assert_eq!(
                network["properties"]["title"],
                "Tīkla politika pēc noklusējuma aizliedz"
            );
            assert!(
                network["message"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("ienākošā aizliegta: false"),
                "{network}"
            );
            assert!(
                quota["message"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("izņēmums quota-waiver līdz 2027-03-01"),
                "{quota}"
            );
            // Without --config, federation checks are skipped with the reason.
            let tls = result(report, "auth.directory-tls");
            assert_eq!(tls["result"], "skip");
            assert!(
                tls["message"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with(&format!("nav savākts: {NO_FEDERATION}")),
                "{tls}"
            );
        }),
        cluster_report_apply(),
        expect(Method::PATCH, &format!("{STATUS}{APPLY}"), move |body| {
            assert_eq!(body["apiVersion"], "novads.io/v1alpha1");
            assert_eq!(body["kind"], "Municipality");
            let compliance = &body["status"]["compliance"];
            assert_eq!(compliance["lastEvaluated"], "2026-12-01T12:00:00Z");
            // Nothing but the monitor's own field is in the apply.
            assert_eq!(
                body["status"].as_object().map(|s| s.len()),
                Some(1),
                "{body}"
            );
            *status_seen.lock().expect("status") = compliance.clone();
            applied_status(body)
        }),
        expect(Method::POST, EVENTS, |body| {
            assert_eq!(body["reason"], "ExemptionExpired", "{body}");
            assert_eq!(body["type"], "Warning");
            assert_eq!(body["regarding"]["kind"], "SecurityExemption");
            assert_eq!(body["regarding"]["name"], "network-waiver");
            assert_eq!(body["reportingController"], "novads-monitor");
            (201, body)
        }),
    ];
    let server = api_server(handle, script);
    let outputs = monitor.evaluate(objects(), now()).await.expect("written");
    let handle = server.await.expect("API server script passed");
    let compliance = written.lock().expect("status").clone();
    assert_eq!(
        compliance["failed"].as_i64(),
        Some(outputs.statuses[0].1.failed)
    );
    assert!(compliance["failed"].as_i64() > Some(0), "{compliance}");
    let metrics = exposition(&registry);
    assert!(
        metrics.contains("novads_compliance_ratio{municipality=\"talsi\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "novads_monitor_last_success_timestamp_seconds {}",
            now().timestamp()
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("novads_monitor_subjects_failing{check=\"network.default-deny\",municipality=\"talsi\",severity=\"high\"} 1"),
        "{metrics}"
    );

    // A minute later, with the status as written: the Reports again, but neither the
    // unchanged status nor the exemption already announced.
    let mut objects = objects();
    objects.municipalities[0].status =
        Some(serde_json::from_value(json!({ "compliance": compliance })).expect("status"));
    let server = api_server(handle, vec![report_apply(|_| {}), cluster_report_apply()]);
    let later = now() + chrono::Duration::seconds(60);
    let outputs = monitor.evaluate(objects, later).await.expect("written");
    assert!(outputs.statuses.is_empty() && outputs.lapsed.is_empty());
    server.await.expect("API server script passed");
}

#[tokio::test]
async fn a_failed_write_is_an_error_and_not_a_success() {
    let (mut monitor, handle, registry) = monitor();
    let script = vec![
        expect(Method::PATCH, &format!("{REPORT}{APPLY}"), |_| {
            api_error(500, "InternalError")
        }),
        // The other outputs are still written.
        cluster_report_apply(),
        expect(Method::PATCH, &format!("{STATUS}{APPLY}"), applied_status),
        expect(Method::POST, EVENTS, |body| (201, body)),
    ];
    let server = api_server(handle, script);
    let error = monitor
        .evaluate(objects(), now())
        .await
        .expect_err("a report was not written");
    assert!(
        error
            .to_string()
            .contains("Report muni-talsi/novads-compliance"),
        "{error}"
    );
    server.await.expect("API server script passed");
    let metrics = exposition(&registry);
    assert!(
        metrics.contains("novads_monitor_last_success_timestamp_seconds 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("novads_monitor_evaluation_duration_seconds_count 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn without_the_openreports_crds_the_status_is_still_written() {
    let (mut monitor, handle, _registry) = monitor();
    let missing = || api_error(404, "NotFound");
    let script = vec![
        expect(Method::PATCH, &format!("{REPORT}{APPLY}"), move |_| {
            missing()
        }),
        expect(
            Method::PATCH,
            &format!("{CLUSTER_REPORT}{APPLY}"),
            move |_| missing(),
        ),
        expect(Method::PATCH, &format!("{STATUS}{APPLY}"), applied_status),
        expect(Method::POST, EVENTS, |body| (201, body)),
    ];
    let server = api_server(handle, script);
    tokio::time::timeout(Duration::from_secs(10), monitor.evaluate(objects(), now()))
        .await
        .expect("finishes")
        .expect("a cluster without OpenReports is not a failure");
    server.await.expect("API server script passed");
}

/// A federation collector standing in for `novads operator --config`: it keeps the admin
/// groups the monitor hands it and answers as a directory with five members in them would.
struct FiveAdmins(Arc<std::sync::Mutex<Vec<AdminGroups>>>);

impl CollectFederation for FiveAdmins {
    fn collect(
        &self,
        _now: DateTime<Utc>,
        admin_groups: Vec<AdminGroups>,
    ) -> futures::future::BoxFuture<'_, FactsDocument> {
        let subjects = admin_groups
            .iter()
            .map(|m| {
                let facts = MunicipalityFacts {
                    admin_members: Some(5),
                    generic_admin_accounts: Some(0),
                    directory_listing_truncated: Some(false),
                    ..MunicipalityFacts::default()
                };
                let mut subject = Subject::new(m.municipality.clone(), &facts);
                subject.municipalities = vec![m.municipality.clone()];
                subject
            })
            .collect();
        *self.0.lock().expect("admin groups") = admin_groups;
        Box::pin(async move {
            FactsDocument {
                sources: [(Source::Federation, SourceState::Collected)].into(),
                municipalities: Vec::new(),
                subjects,
            }
        })
    }
}

#[tokio::test]
async fn the_collector_counts_the_admins_of_each_municipalitys_admin_groups() {
    let (client, handle) = mocked_client();
    let metrics = MonitorMetrics::register(&Registry::new(), false).expect("metrics");
    let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let options = MonitorOptions {
        federation: Some(FederationCollector(Arc::new(FiveAdmins(asked.clone())))),
        language: novads_monitor::Lang::En,
        ..MonitorOptions::default()
    };
    let mut monitor = Monitor::new(client, options, Some("operator-0".into()), metrics);
    let script = vec![
        report_apply(|report| {
            // In English when told so.
            let admins = result(report, "accounts.admins-per-municipality");
            assert_eq!(admins["result"], "fail", "{admins}");
            assert_eq!(
                admins["properties"]["title"],
                "Few people administer the municipality"
            );
            assert!(
                admins["message"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("5 people hold the admin role (at most 3)"),
                "{admins}"
            );
        }),
        cluster_report_apply(),
        expect(Method::PATCH, &format!("{STATUS}{APPLY}"), applied_status),
        expect(Method::POST, EVENTS, |body| (201, body)),
    ];
    let server = api_server(handle, script);
    monitor.evaluate(objects(), now()).await.expect("written");
    server.await.expect("API server script passed");
    assert_eq!(
        *asked.lock().expect("admin groups"),
        [AdminGroups {
            municipality: "talsi".into(),
            realm: "talsi".into(),
            groups: vec!["it-admins".into()],
        }]
    );
}

/// The evaluation schedule on a paused clock: at once, `debounce` after a change (a burst
/// taken in by one evaluation), and `interval` after the last evaluation without changes.
#[tokio::test(start_paused = true)]
async fn evaluations_follow_changes_after_the_debounce_and_the_schedule_without_them() {
    use novads_operator::monitor::{DEFAULT_DEBOUNCE, DEFAULT_INTERVAL, EvaluationSchedule};
    use tokio::sync::Notify;
    use tokio::time::{Instant, advance, sleep};

    let start = Instant::now();
    let changed = Arc::new(Notify::new());
    let (sender, mut evaluations) = tokio::sync::mpsc::unbounded_channel();
    let schedule = {
        let changed = changed.clone();
        tokio::spawn(async move {
            let mut schedule =
                EvaluationSchedule::new(DEFAULT_INTERVAL, DEFAULT_DEBOUNCE, &changed);
            loop {
                schedule.due().await;
                let _ = sender.send(start.elapsed().as_secs());
            }
        })
    };
    let seconds = |n: u64| Duration::from_secs(n);
    // Lets the spawned loop run up to its next wait without moving the clock.
    let settle = || async {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    };
    let taken = |evaluations: &mut tokio::sync::mpsc::UnboundedReceiver<u64>| {
        let mut at = Vec::new();
        while let Ok(second) = evaluations.try_recv() {
            at.push(second);
        }
        at
    };

    settle().await;
    assert_eq!(taken(&mut evaluations), [0], "at once");

    // One change at 20 s: nothing until the debounce has passed, then one evaluation.
    advance(seconds(20)).await;
    changed.notify_one();
    settle().await;
    advance(seconds(9)).await;
    settle().await;
    assert_eq!(
        taken(&mut evaluations),
        Vec::<u64>::new(),
        "still debouncing"
    );
    advance(seconds(1)).await;
    settle().await;
    assert_eq!(taken(&mut evaluations), [30]);

    // A burst of five changes within the debounce: one evaluation, 10 s after the first.
    advance(seconds(70)).await;
    for _ in 0..5 {
        changed.notify_one();
        settle().await;
        advance(seconds(1)).await;
    }
    sleep(seconds(30)).await;
    settle().await;
    assert_eq!(taken(&mut evaluations), [110], "a burst is evaluated once");

    // No changes: the schedule evaluates 300 s after the last evaluation, and again.
    sleep(seconds(720 - 135)).await;
    settle().await;
    assert_eq!(taken(&mut evaluations), [410, 710]);

    // A change just before the schedule is due: evaluated after the debounce, and the
    // schedule then counts from that evaluation instead of evaluating again at once.
    sleep(seconds(1005 - 720)).await;
    changed.notify_one();
    settle().await;
    sleep(seconds(30)).await;
    settle().await;
    assert_eq!(taken(&mut evaluations), [1015]);
    sleep(seconds(300)).await;
    settle().await;
    assert_eq!(taken(&mut evaluations), [1315]);
    schedule.abort();
}
