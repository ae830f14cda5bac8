//! The Municipality reconciler against a mocked API server (the kit in `support/`): every
//! request is checked in order — method, path and query, body, and the chart's RBAC — and
//! answered as the API server would.

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use novads_crds::Municipality;
use novads_operator::municipality::build::{self as tenancy, TenancySettings};
use novads_operator::municipality::controller::{self as municipality, Context, Error, FINALIZER};
use serde_json::{Value, json};

mod support;
use support::{Expect, Handle, api_error, api_server, condition, expect, mocked_client, not_found};

fn context() -> (Arc<Context>, Handle) {
    let (client, handle) = mocked_client();
    let reporter = Reporter {
        controller: "novads-operator".into(),
        instance: Some("test".into()),
    };
    (
        Arc::new(Context::new(client, TenancySettings::default(), reporter)),
        handle,
    )
}

async fn run(
    municipality: &Municipality,
    script: Vec<Expect>,
) -> (Result<Action, Error>, Arc<Context>) {
    let (ctx, handle) = context();
    let server = api_server(handle, script);
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        municipality::reconcile(Arc::new(municipality.clone()), ctx.clone()),
    )
    .await
    .expect("reconcile finishes");
    server.await.expect("API server script passed");
    (result, ctx)
}

fn talsi() -> Municipality {
    serde_json::from_value(json!({
        "apiVersion": "novads.io/v1alpha1",
        "kind": "Municipality",
        "metadata": {
            "name": "talsi", "uid": "uid-talsi", "generation": 2, "resourceVersion": "100",
            "finalizers": [FINALIZER]
        },
        "spec": {
            "code": "talsi", "displayName": "Talsu novads", "realm": "talsi",
            "adminGroups": ["it-admins"],
            "quotas": { "cpu": 16, "memory": "64Gi", "storage": "2Ti", "maxVirtualServers": 10 },
            "allowedNetworkRanges": ["10.20.0.0/16"]
        }
    }))
    .expect("fixture")
}

fn deleting(mut municipality: Municipality) -> Municipality {
    municipality.metadata.deletion_timestamp =
        serde_json::from_value(json!("2025-01-01T00:00:00Z")).ok();
    municipality
}

const MUNICIPALITY: &str = "/apis/novads.io/v1alpha1/municipalities/talsi";
const APPLY: &str = "?&force=true&fieldManager=novads-operator";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events?";
const NAMESPACE: &str = "/api/v1/namespaces/muni-talsi";

fn our_namespace(labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {
            "name": "muni-talsi", "labels": labels,
            "ownerReferences": [{ "apiVersion": "novads.io/v1alpha1", "kind": "Municipality", "name": "talsi", "uid": "uid-talsi", "controller": true }]
        }
    })
}

/// Server-side applies of every child, each body equal to what the pure builders produce, and
/// after the NetworkPolicies the deletion of the retired ones (already gone here).
fn applies(municipality: &Municipality, quota_used: Value) -> Vec<Expect> {
    let tenancy = tenancy::plan_tenancy(municipality, &TenancySettings::default()).expect("valid");
    let objects = tenancy.to_values().expect("values");
    let after_policies = objects
        .iter()
        .rposition(|object| object["kind"] == "NetworkPolicy")
        .expect("the tenancy has NetworkPolicies")
        + 1;
    let mut script: Vec<Expect> = objects
        .into_iter()
        .map(|object| {
            let kind = object["kind"].as_str().unwrap_or_default().to_string();
            let name = object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let path = match kind.as_str() {
                "Namespace" => format!("/api/v1/namespaces/{name}"),
                "ResourceQuota" => format!("/api/v1/namespaces/muni-talsi/resourcequotas/{name}"),
                "LimitRange" => format!("/api/v1/namespaces/muni-talsi/limitranges/{name}"),
                "NetworkPolicy" => format!(
                    "/apis/networking.k8s.io/v1/namespaces/muni-talsi/networkpolicies/{name}"
                ),
                "RoleBinding" => format!(
                    "/apis/rbac.authorization.k8s.io/v1/namespaces/muni-talsi/rolebindings/{name}"
                ),
                "ClusterRole" => {
                    format!("/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}")
                }
                "ClusterRoleBinding" => {
                    format!("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{name}")
                }
                other => panic!("unexpected kind {other}"),
            };
            let used = quota_used.clone();
            expect(Method::PATCH, &format!("{path}{APPLY}"), move |body| {
                assert_eq!(body, object, "apply body of {kind} {name}");
                let mut response = body;
                if kind == "ResourceQuota" {
                    response["status"] = json!({ "used": used });
                }
                (200, response)
            })
        })
        .collect();
    for (offset, retired) in tenancy::RETIRED_NETWORK_POLICIES.iter().enumerate() {
        let path =
            format!("/apis/networking.k8s.io/v1/namespaces/muni-talsi/networkpolicies/{retired}?");
        script.insert(
            after_policies + offset,
            expect(Method::DELETE, &path, |_| not_found()),
        );
    }
    script
}

fn event(reason: &'static str, type_: &'static str) -> Expect {
    expect(Method::POST, EVENTS, move |body| {
        assert_eq!(body["reason"], reason, "{body}");
        assert_eq!(body["type"], type_, "{body}");
        assert_eq!(body["regarding"]["kind"], "Municipality");
        assert_eq!(body["regarding"]["name"], "talsi");
        (200, body)
    })
}

fn status_patch(check: impl FnOnce(&Value) + Send + 'static) -> Expect {
    expect(
        Method::PATCH,
        &format!("{MUNICIPALITY}/status{APPLY}"),
        move |body| {
            assert_eq!(body["apiVersion"], "novads.io/v1alpha1");
            assert_eq!(body["kind"], "Municipality");
            // The monitor's field: never in the operator's apply, so never the operator's.
            assert_eq!(body["status"].get("compliance"), None, "{body}");
            check(&body["status"]);
            // The API server answers with the whole object.
            let mut object = serde_json::to_value(talsi()).expect("object");
            object["status"] = body["status"].clone();
            (200, object)
        },
    )
}

/// The Municipality as the API server returns it after a finalizer patch.
fn with_finalizers(patch: &Value) -> Value {
    let mut object = serde_json::to_value(talsi()).expect("object");
    object["metadata"]["finalizers"] = patch["metadata"]["finalizers"].clone();
    object
}

#[tokio::test]
async fn adds_the_finalizer_first_guarded_by_resource_version() {
    let mut municipality = talsi();
    municipality.metadata.finalizers = None;
    let (result, _) = run(
        &municipality,
        vec![expect(Method::PATCH, &format!("{MUNICIPALITY}?"), |body| {
            assert_eq!(
                body,
                json!({ "metadata": { "finalizers": [FINALIZER], "resourceVersion": "100" } })
            );
            (200, with_finalizers(&body))
        })],
    )
    .await;
    assert_eq!(result.expect("ok"), Action::await_change());
}

#[tokio::test]
async fn creates_the_tenancy_then_reports_ready_with_an_event() {
    let municipality = talsi();
    let mut script = vec![expect(Method::GET, NAMESPACE, |_| not_found())];
    script.extend(applies(
        &municipality,
        json!({ "count/virtualmachines.kubevirt.io": "0", "requests.cpu": "0" }),
    ));
    script.push(status_patch(|status| {
        assert_eq!(status["namespace"], "muni-talsi");
        assert_eq!(status["observedGeneration"], 2);
        assert_eq!(status["usage"]["virtualServers"], 0);
        let ready = condition(status, "Ready");
        assert_eq!(
            (ready["status"].as_str(), ready["reason"].as_str()),
            (Some("True"), Some("TenancyReady"))
        );
        assert_eq!(ready["observedGeneration"], 2);
        assert_eq!(condition(status, "Degraded")["status"], "False");
    }));
    script.push(event("TenancyApplied", "Normal"));
    let (result, _) = run(&municipality, script).await;
    assert_eq!(result.expect("ok"), Action::requeue(municipality::RESYNC));
}

fn converged(municipality: &Municipality, usage: Value) -> Municipality {
    let mut converged = municipality.clone();
    let usage = municipality::usage_from_quota(
        &serde_json::from_value(json!({ "status": { "used": usage } })).expect("quota"),
    );
    let now = serde_json::from_value(json!("2025-01-01T00:00:00Z")).expect("time");
    converged.status = Some(municipality::next_status(
        municipality,
        &municipality::Outcome::Ready { usage },
        &now,
    ));
    converged
}

#[tokio::test]
async fn a_converged_municipality_is_reapplied_without_status_write_or_event() {
    let used = json!({ "count/virtualmachines.kubevirt.io": "3" });
    let municipality = converged(&talsi(), used.clone());
    let mut script = vec![expect(Method::GET, NAMESPACE, |_| {
        (200, our_namespace(json!({})))
    })];
    script.extend(applies(&municipality, used));
    let (result, _) = run(&municipality, script).await;
    assert_eq!(result.expect("ok"), Action::requeue(municipality::RESYNC));
}

/// What the security monitor last wrote into the status (under its own field manager).
fn with_compliance(mut municipality: Municipality) -> Municipality {
    let compliance = serde_json::from_value(json!({
        "passed": 41, "failed": 2, "warnings": 3, "lastEvaluated": "2025-01-01T06:00:00Z"
    }))
    .expect("compliance");
    if let Some(status) = municipality.status.as_mut() {
        status.compliance = Some(compliance);
    }
    municipality
}

#[tokio::test]
async fn the_status_apply_leaves_the_monitors_compliance_alone() {
    let used = json!({ "count/virtualmachines.kubevirt.io": "3" });
    // A new generation: the status must be written, the monitor's summary is in it.
    let mut municipality = with_compliance(converged(&talsi(), used.clone()));
    municipality.metadata.generation = Some(3);
    let mut script = vec![expect(Method::GET, NAMESPACE, |_| {
        (200, our_namespace(json!({})))
    })];
    script.extend(applies(&municipality, used));
    script.push(status_patch(|status| {
        assert_eq!(status["observedGeneration"], 3);
        assert_eq!(status.get("compliance"), None, "{status}");
    }));
    script.push(event("TenancyApplied", "Normal"));
    let (result, _) = run(&municipality, script).await;
    assert_eq!(result.expect("ok"), Action::requeue(municipality::RESYNC));
}

#[tokio::test]
async fn the_monitors_compliance_does_not_make_a_converged_status_differ() {
    let used = json!({ "count/virtualmachines.kubevirt.io": "3" });
    let municipality = with_compliance(converged(&talsi(), used.clone()));
    let mut script = vec![expect(Method::GET, NAMESPACE, |_| {
        (200, our_namespace(json!({})))
    })];
    script.extend(applies(&municipality, used));
    // No status write, no event.
    let (result, _) = run(&municipality, script).await;
    assert_eq!(result.expect("ok"), Action::requeue(municipality::RESYNC));
}

#[tokio::test]
async fn drift_is_repaired_by_reapplying_the_desired_labels() {
    let used = json!({ "count/virtualmachines.kubevirt.io": "3" });
    let municipality = converged(&talsi(), used.clone());
    // Someone relaxed Pod Security by hand; the next reconcile forces it back.
    let drifted = our_namespace(json!({ "pod-security.kubernetes.io/enforce": "privileged" }));
    let mut script = vec![expect(Method::GET, NAMESPACE, move |_| (200, drifted))];
    let mut rest = applies(&municipality, used);
    let namespace_apply = rest.remove(0);
    script.push(expect(
        Method::PATCH,
        &namespace_apply.uri.clone(),
        move |body| {
            assert_eq!(
                body["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
                "baseline"
            );
            (namespace_apply.respond)(body)
        },
    ));
    script.extend(rest);
    let (result, _) = run(&municipality, script).await;
    assert!(result.is_ok());
}

#[tokio::test]
async fn an_invalid_spec_is_reported_and_backed_off_without_applying() {
    let mut municipality = talsi();
    municipality.spec.allowed_network_ranges = vec!["10.20.0.1/16".into()];
    let script = vec![
        expect(Method::GET, NAMESPACE, |_| not_found()),
        status_patch(|status| {
            let ready = condition(status, "Ready");
            assert_eq!(ready["status"], "False");
            assert_eq!(ready["reason"], "InvalidNetworkRange");
            assert!(
                ready["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("did you mean 10.20.0.0/16?"))
            );
        }),
        event("InvalidNetworkRange", "Warning"),
    ];
    let (result, ctx) = run(&municipality, script).await;
    let error = result.expect_err("invalid spec");
    assert!(matches!(error, Error::InvalidSpec(_)));
    let shared = Arc::new(municipality);
    let first = municipality::error_policy(shared.clone(), &error, ctx.clone());
    let second = municipality::error_policy(shared, &error, ctx);
    assert_eq!(first, Action::requeue(Duration::from_secs(5)));
    assert_eq!(second, Action::requeue(Duration::from_secs(10)));
}

#[tokio::test]
async fn a_namespace_owned_by_another_municipality_is_a_code_conflict() {
    let mut other = our_namespace(json!({}));
    other["metadata"]["ownerReferences"][0]["uid"] = json!("uid-other");
    other["metadata"]["ownerReferences"][0]["name"] = json!("talsi-old");
    let script = vec![
        expect(Method::GET, NAMESPACE, move |_| (200, other)),
        status_patch(|status| assert_eq!(condition(status, "Ready")["reason"], "CodeConflict")),
        event("CodeConflict", "Warning"),
    ];
    let (result, _) = run(&talsi(), script).await;
    assert!(
        matches!(result, Err(Error::InvalidSpec(message)) if message.contains("Municipality talsi-old"))
    );
}

#[tokio::test]
async fn a_conflict_while_applying_marks_degraded_and_backs_off() {
    let municipality = talsi();
    let script = vec![
        expect(Method::GET, NAMESPACE, |_| not_found()),
        expect(Method::PATCH, &format!("{NAMESPACE}{APPLY}"), |_| {
            api_error(409, "Conflict")
        }),
        status_patch(|status| {
            assert_eq!(condition(status, "Ready")["reason"], "ApplyFailed");
            let degraded = condition(status, "Degraded");
            assert_eq!(degraded["status"], "True");
            assert!(
                degraded["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("Conflict from test"))
            );
        }),
        event("ApplyFailed", "Warning"),
    ];
    let (result, ctx) = run(&municipality, script).await;
    let error = result.expect_err("conflict");
    assert_eq!(error.metric_label(), "conflict");
    let action = municipality::error_policy(Arc::new(municipality), &error, ctx);
    assert_eq!(action, Action::requeue(Duration::from_secs(5)));
}

#[tokio::test]
async fn a_server_error_fails_the_reconcile_into_back_off() {
    let municipality = talsi();
    let script = vec![expect(Method::GET, NAMESPACE, |_| {
        api_error(500, "InternalError")
    })];
    let (result, ctx) = run(&municipality, script).await;
    let error = result.expect_err("server error");
    assert_eq!(error.metric_label(), "api");
    let shared = Arc::new(municipality);
    let delays: Vec<Action> = (0..8)
        .map(|_| municipality::error_policy(shared.clone(), &error, ctx.clone()))
        .collect();
    assert_eq!(delays[0], Action::requeue(Duration::from_secs(5)));
    assert_eq!(
        delays[7],
        Action::requeue(Duration::from_secs(300)),
        "capped at 5 minutes"
    );
}

fn server_list(names: &[&str]) -> Value {
    json!({
        "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": {},
        "items": names.iter().map(|n| json!({ "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": { "name": n, "namespace": "muni-talsi" } })).collect::<Vec<_>>()
    })
}

const SERVERS: &str = "/apis/novads.io/v1alpha1/namespaces/muni-talsi/virtualservers?";

#[tokio::test]
async fn deletion_is_refused_while_virtual_servers_remain_under_retain() {
    let municipality = deleting(talsi());
    let script = vec![
        expect(Method::GET, NAMESPACE, |_| (200, our_namespace(json!({})))),
        expect(Method::GET, SERVERS, |_| (200, server_list(&["web", "db"]))),
        status_patch(|status| {
            let ready = condition(status, "Ready");
            assert_eq!(ready["reason"], "DeletionBlocked");
            assert!(
                ready["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("2 virtual server(s) remain"))
            );
        }),
        event("DeletionBlocked", "Warning"),
    ];
    let (result, _) = run(&municipality, script).await;
    assert_eq!(
        result.expect("ok"),
        Action::requeue(municipality::BLOCKED_RECHECK)
    );
}

fn deletes_namespace() -> Expect {
    expect(Method::DELETE, &format!("{NAMESPACE}?"), |body| {
        assert_eq!(body["propagationPolicy"], "Background");
        (200, our_namespace(json!({})))
    })
}

#[tokio::test]
async fn deletion_without_servers_deletes_the_namespace_then_releases_the_finalizer() {
    let municipality = deleting(talsi());
    let script = vec![
        expect(Method::GET, NAMESPACE, |_| (200, our_namespace(json!({})))),
        expect(Method::GET, SERVERS, |_| (200, server_list(&[]))),
        deletes_namespace(),
        status_patch(|status| assert_eq!(condition(status, "Ready")["reason"], "Deleting")),
        event("Deleting", "Normal"),
    ];
    let (result, _) = run(&municipality, script).await;
    assert_eq!(
        result.expect("ok"),
        Action::requeue(municipality::DELETING_RECHECK)
    );

    // Next round: the namespace is gone, so the finalizer goes.
    let script = vec![
        expect(Method::GET, NAMESPACE, |_| not_found()),
        expect(Method::PATCH, &format!("{MUNICIPALITY}?"), |body| {
            assert_eq!(
                body,
                json!({ "metadata": { "finalizers": [], "resourceVersion": "100" } })
            );
            (200, with_finalizers(&body))
        }),
    ];
    let (result, _) = run(&municipality, script).await;
    assert_eq!(result.expect("ok"), Action::await_change());
}

#[tokio::test]
async fn deletion_policy_delete_removes_servers_with_the_namespace() {
    let mut municipality = deleting(talsi());
    municipality.spec.deletion_policy = novads_crds::DeletionPolicy::Delete;
    let script = vec![
        expect(Method::GET, NAMESPACE, |_| (200, our_namespace(json!({})))),
        expect(Method::GET, SERVERS, |_| (200, server_list(&["web"]))),
        deletes_namespace(),
        status_patch(|status| assert_eq!(condition(status, "Ready")["reason"], "Deleting")),
        event("Deleting", "Normal"),
    ];
    let (result, _) = run(&municipality, script).await;
    assert_eq!(
        result.expect("ok"),
        Action::requeue(municipality::DELETING_RECHECK)
    );
}

#[tokio::test]
async fn a_namespace_of_another_owner_is_never_deleted() {
    let municipality = deleting(talsi());
    let mut other = our_namespace(json!({}));
    other["metadata"]["ownerReferences"][0]["uid"] = json!("uid-other");
    let script = vec![
        expect(Method::GET, NAMESPACE, move |_| (200, other)),
        expect(Method::PATCH, &format!("{MUNICIPALITY}?"), |body| {
            assert_eq!(body["metadata"]["finalizers"], json!([]));
            (200, with_finalizers(&body))
        }),
    ];
    let (result, _) = run(&municipality, script).await;
    assert_eq!(result.expect("ok"), Action::await_change());
}

#[test]
fn the_reader_role_shows_images_and_the_own_municipality_only_and_the_operator_may_grant_it() {
    use support::rbac::assert_allowed;
    let municipality = talsi();
    let tenancy = tenancy::plan_tenancy(&municipality, &TenancySettings::default()).expect("valid");
    let role = serde_json::to_value(&tenancy.reader_role).expect("role");
    assert_eq!(role["metadata"]["name"], "novads-municipality-reader-talsi");
    assert_eq!(role["metadata"].get("namespace"), None, "cluster-scoped");
    assert_eq!(
        role["rules"],
        json!([
            { "apiGroups": ["novads.io"], "resources": ["serverimages"], "verbs": ["get", "list", "watch"] },
            { "apiGroups": ["novads.io"], "resources": ["municipalities"], "resourceNames": ["talsi"], "verbs": ["get"] }
        ])
    );
    // Every admin, viewer and security officer group, realm-qualified, bound once.
    let binding = serde_json::to_value(&tenancy.reader_binding).expect("binding");
    assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
    assert_eq!(
        binding["roleRef"]["name"],
        "novads-municipality-reader-talsi"
    );
    let mut groups: Vec<String> = municipality
        .spec
        .admin_groups
        .iter()
        .chain(&municipality.spec.viewer_groups)
        .chain(&municipality.spec.security_officer_groups)
        .map(|g| format!("talsi:{g}"))
        .collect();
    groups.sort();
    groups.dedup();
    let subjects: Vec<&str> = binding["subjects"]
        .as_array()
        .expect("subjects")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(subjects, groups);
    assert!(!subjects.is_empty());
    // Escalation prevention: the API server lets the operator create this role (and bind it)
    // only if the operator holds every permission in it, which the chart's ClusterRole does.
    for (method, uri) in [
        (
            Method::GET,
            "/apis/novads.io/v1alpha1/serverimages/debian-12",
        ),
        (Method::GET, "/apis/novads.io/v1alpha1/serverimages"),
        (
            Method::GET,
            "/apis/novads.io/v1alpha1/serverimages?watch=true",
        ),
        (Method::GET, "/apis/novads.io/v1alpha1/municipalities/talsi"),
    ] {
        assert_allowed(&method, uri, "");
    }
}

#[test]
fn a_name_too_long_for_the_reader_role_is_a_spec_problem() {
    let mut municipality = talsi();
    municipality.metadata.name = Some("m".repeat(226));
    assert!(tenancy::plan_tenancy(&municipality, &TenancySettings::default()).is_ok());
    municipality.metadata.name = Some("m".repeat(227));
    let problems =
        tenancy::plan_tenancy(&municipality, &TenancySettings::default()).expect_err("too long");
    assert_eq!(
        problems,
        [tenancy::SpecProblem::NameTooLong {
            length: 227,
            max: 226
        }]
    );
}

#[test]
fn only_security_officers_manage_exemptions() {
    use support::rbac::municipality_role_allows;
    let officer = "novads-municipality-security-officer";
    for verb in [
        "get", "list", "watch", "create", "update", "patch", "delete",
    ] {
        assert!(
            municipality_role_allows(officer, "novads.io", "securityexemptions", verb),
            "officers {verb} exemptions"
        );
    }
    // Separation of duties: those who run the servers cannot accept their risks.
    for role in ["novads-municipality-admin", "novads-municipality-viewer"] {
        for verb in ["create", "update", "patch", "delete"] {
            assert!(
                !municipality_role_allows(role, "novads.io", "securityexemptions", verb),
                "{role} must not {verb} exemptions"
            );
        }
    }
    // Officers read the namespace and its Reports, but change nothing else.
    for (group, resource) in [
        ("openreports.io", "reports"),
        ("novads.io", "virtualservers"),
        ("networking.k8s.io", "networkpolicies"),
        ("rbac.authorization.k8s.io", "rolebindings"),
        ("", "services"),
        ("", "events"),
    ] {
        assert!(
            municipality_role_allows(officer, group, resource, "list"),
            "officers read {resource}"
        );
        assert!(
            !municipality_role_allows(officer, group, resource, "delete"),
            "officers do not delete {resource}"
        );
    }
    assert!(!municipality_role_allows(officer, "", "secrets", "get"));
    assert!(!municipality_role_allows(
        officer,
        "novads.io",
        "virtualservers",
        "create"
    ));
}
