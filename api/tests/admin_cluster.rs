//! The admin API's cluster resources (Municipalities and their servers) over HTTP, with tokens
//! from the real sign-in flow and the cluster as a mocked Kubernetes API that asserts every
//! request (and the chart's RBAC for it).

use novads_api::dev;
use reqwest::Method as Verb;
use serde_json::{Value, json};

mod support;
use support::{Running, each_backend, start_dev};
#[path = "support/admin.rs"]
mod admin;
#[path = "support/cluster_api.rs"]
mod cluster_api;

use admin::{Answer, call};
use axum::http::Method;
use cluster_api::{Expect, api_error, api_server, expect, not_found};

const MUNICIPALITIES: &str = "/apis/novads.io/v1alpha1/municipalities?";
const SERVERS: &str = "/apis/novads.io/v1alpha1/namespaces/muni-demo-town/virtualservers";
const APPLY: &str = "?&fieldManager=novads-api";
const FORCED_APPLY: &str = "?&force=true&fieldManager=novads-api";
const JSON: &str = "application/json";
const MERGE_PATCH: &str = "application/merge-patch+json";

fn municipality(code: &str, realm: &str, admin_groups: &[&str]) -> Value {
    json!({
        "apiVersion": "novads.io/v1alpha1",
        "kind": "Municipality",
        "metadata": { "name": code, "resourceVersion": "40" },
        "spec": {
            "code": code,
            "displayName": format!("{code} novads"),
            "realm": realm,
            "adminGroups": admin_groups,
            "quotas": { "cpu": "8", "memory": "16Gi", "storage": "200Gi", "maxVirtualServers": 4 },
        },
    })
}

/// demo-town (realm demo, administered by demo's `staff`) and talsi.
fn municipality_list() -> Value {
    json!({
        "apiVersion": "novads.io/v1alpha1",
        "kind": "MunicipalityList",
        "metadata": { "resourceVersion": "50" },
        "items": [
            municipality("demo-town", "demo", &["staff"]),
            municipality("talsi", "talsi", &["it-admins"]),
        ],
    })
}

/// The list every authorised request starts with.
fn listing() -> Expect {
    let list = municipality_list();
    expect(Method::GET, MUNICIPALITIES, move |_| (200, list))
}

/// Server `web` of demo-town as the API server stores it: `spec`, `resourceVersion`, a status.
fn stored(spec: &Value, resource_version: &str) -> Value {
    json!({
        "apiVersion": "novads.io/v1alpha1",
        "kind": "VirtualServer",
        "metadata": { "name": "web", "namespace": "muni-demo-town", "resourceVersion": resource_version },
        "spec": spec,
        "status": { "phase": "Running", "ip": "10.0.0.7" },
    })
}

fn web_spec() -> Value {
    json!({ "image": "debian-12", "cpu": 2, "memory": "4Gi" })
}

/// The spec as the admin API applies it: every field the typed spec writes.
fn applied_spec(cpu: i32, run_strategy: &str) -> Value {
    json!({ "image": "debian-12", "cpu": cpu, "memory": "4Gi", "disks": {}, "runStrategy": run_strategy })
}

struct Demo {
    server: Running,
    handle: Option<cluster_api::Handle>,
    /// peteris: municipality-admin of demo-town only.
    staff: String,
    /// anna: platform-admin.
    admin: String,
}

impl Demo {
    async fn start() -> Self {
        let server = start_dev(|config, _| {
            admin::admin_config(config, &[], &["demo:it-admins"], &[]);
        })
        .await;
        let (client, handle) = cluster_api::mocked_client();
        assert!(server.state.set_cluster(client));
        let [anna, peteris] = [&dev::DEMO_USERS[0], &dev::DEMO_USERS[1]];
        let admin = admin::token(&server.base, "anna@demo", anna.password).await;
        let staff = admin::token(&server.base, "peteris@demo", peteris.password).await;
        Self {
            server,
            handle: Some(handle),
            staff,
            admin,
        }
    }

    /// Sends one request while the mocked API answers `script`, which it must see exactly.
    async fn call(
        &mut self,
        script: Vec<Expect>,
        method: Verb,
        path: &str,
        token: &str,
        body: Option<(&str, &Value)>,
    ) -> Answer {
        let api = api_server(self.handle.take().expect("handle"), script);
        let answer = call(&self.server.base, method, path, token, body).await;
        self.handle = Some(
            api.await
                .expect("the API saw exactly the expected requests"),
        );
        answer
    }

    /// [`Demo::call`] with extra request headers.
    async fn call_with(
        &mut self,
        script: Vec<Expect>,
        method: Verb,
        path: &str,
        token: &str,
        body: Option<(&str, &Value)>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let api = api_server(self.handle.take().expect("handle"), script);
        let answer = admin::call_with(&self.server.base, method, path, token, body, headers).await;
        self.handle = Some(
            api.await
                .expect("the API saw exactly the expected requests"),
        );
        answer
    }

    /// The admin actions in the audit trail, oldest first, as the platform admin reads them.
    async fn admin_actions(&mut self) -> Vec<Value> {
        let token = self.admin.clone();
        let answer = self
            .call(
                vec![listing()],
                Verb::GET,
                "/audit/events?event=admin_action&limit=1000",
                &token,
                None,
            )
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let mut details: Vec<Value> = answer.body["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| serde_json::from_str(e["detail"].as_str().expect("detail")).expect("json"))
            .collect();
        details.reverse();
        details
    }
}

/// A municipality admin creates, changes, powers and deletes a server of her municipality:
/// each a server-side apply by `novads-api` of the whole spec, guarded by the resourceVersion
/// read before it, answered with what the API server stored (status included), and audited.
#[tokio::test]
async fn a_municipality_admin_manages_the_servers_of_her_municipality() {
    let mut demo = Demo::start().await;
    let staff = demo.staff.clone();

    // Create: the name is free, then applied.
    let created = demo
        .call(
            vec![
                listing(),
                expect(Method::GET, &format!("{SERVERS}/web"), |_| not_found()),
                expect(Method::PATCH, &format!("{SERVERS}/web{APPLY}"), |body| {
                    assert_eq!(
                        body,
                        json!({
                            "apiVersion": "novads.io/v1alpha1",
                            "kind": "VirtualServer",
                            "metadata": { "name": "web", "namespace": "muni-demo-town" },
                            "spec": applied_spec(2, "Running"),
                        })
                    );
                    (201, stored(&body["spec"], "7"))
                }),
            ],
            Verb::POST,
            "/municipalities/demo-town/servers",
            &staff,
            Some((
                JSON,
                &json!({ "name": "web", "municipality": "demo-town", "spec": web_spec() }),
            )),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.headers["etag"], "\"7\"");
    assert_eq!(
        created.headers["location"],
        "/api/v1/municipalities/demo-town/servers/web"
    );
    assert_eq!(created.body["status"]["ip"], "10.0.0.7");
    assert_eq!(created.body["municipality"], "demo-town");

    // A second create of the same name is refused without a write.
    let again = demo
        .call(
            vec![
                listing(),
                expect(Method::GET, &format!("{SERVERS}/web"), |_| {
                    (200, stored(&applied_spec(2, "Running"), "7"))
                }),
            ],
            Verb::POST,
            "/municipalities/demo-town/servers",
            &staff,
            Some((JSON, &json!({ "name": "web", "spec": web_spec() }))),
        )
        .await;
    assert_eq!(again.status, 409);
    assert_eq!(again.problem_type(), "https://novads.io/problems/conflict");

    // Patch: merged into the current spec, applied with the resourceVersion read.
    let patched = demo
        .call(
            vec![
                listing(),
                expect(Method::GET, &format!("{SERVERS}/web"), |_| {
                    (200, stored(&applied_spec(2, "Running"), "7"))
                }),
                expect(Method::PATCH, &format!("{SERVERS}/web{APPLY}"), |body| {
                    assert_eq!(body["metadata"]["resourceVersion"], "7");
                    assert_eq!(body["spec"], applied_spec(4, "Running"));
                    (200, stored(&body["spec"], "8"))
                }),
            ],
            Verb::PATCH,
            "/municipalities/demo-town/servers/web",
            &staff,
            Some((MERGE_PATCH, &json!({ "spec": { "cpu": 4 } }))),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(patched.headers["etag"], "\"8\"");
    assert_eq!(patched.body["spec"]["cpu"], 4);

    // Replace: the whole spec; the cluster's refusal of a changed server is passed on.
    let replaced = demo
        .call(
            vec![
                listing(),
                expect(Method::GET, &format!("{SERVERS}/web"), |_| {
                    (200, stored(&applied_spec(4, "Running"), "8"))
                }),
                expect(Method::PATCH, &format!("{SERVERS}/web{APPLY}"), |body| {
                    assert_eq!(body["metadata"]["resourceVersion"], "8");
                    assert_eq!(body["spec"], applied_spec(2, "Running"));
                    api_error(409, "Conflict")
                }),
            ],
            Verb::PUT,
            "/municipalities/demo-town/servers/web",
            &staff,
            Some((JSON, &json!({ "spec": web_spec() }))),
        )
        .await;
    assert_eq!(replaced.status, 409);

    // Stop, then restart: power set on the VirtualServer, forced, status read back.
    let stopped = demo
        .call(
            vec![
                listing(),
                expect(Method::GET, &format!("{SERVERS}/web"), |_| {
                    (200, stored(&applied_spec(4, "Running"), "9"))
                }),
                expect(
                    Method::PATCH,
                    &format!("{SERVERS}/web{FORCED_APPLY}"),
                    |body| {
                        assert_eq!(body["metadata"]["resourceVersion"], "9");
                        assert_eq!(body["spec"], applied_spec(4, "Halted"));
                        (200, stored(&body["spec"], "10"))
                    },
                ),
            ],
            Verb::POST,
            "/municipalities/demo-town/servers/web/stop",
            &staff,
            None,
        )
        .await;
    assert_eq!(stopped.status, 200, "{}", stopped.body);
    assert_eq!(stopped.body["spec"]["runStrategy"], "Halted");
    let restarted = demo
        .call(
            vec![
                listing(),
                expect(Method::GET, &format!("{SERVERS}/web"), |_| {
                    (200, stored(&applied_spec(4, "Running"), "11"))
                }),
                expect(
                    Method::PATCH,
                    &format!("{SERVERS}/web{FORCED_APPLY}"),
                    |body| {
                        let token = body["spec"]["restart"].as_str().expect("a restart token");
                        assert!(
                            chrono::DateTime::parse_from_rfc3339(token).is_ok(),
                            "{token}"
                        );
                        (200, stored(&body["spec"], "12"))
                    },
                ),
            ],
            Verb::POST,
            "/municipalities/demo-town/servers/web/restart",
            &staff,
            None,
        )
        .await;
    assert_eq!(restarted.status, 200, "{}", restarted.body);

    // Read: the list and one server.
    let listed = demo
        .call(
            vec![
                listing(),
                expect(Method::GET, &format!("{SERVERS}?"), |_| {
                    (
                        200,
                        json!({
                            "apiVersion": "novads.io/v1alpha1",
                            "kind": "VirtualServerList",
                            "metadata": { "resourceVersion": "12" },
                            "items": [stored(&applied_spec(4, "Running"), "12")],
                        }),
                    )
                }),
            ],
            Verb::GET,
            "/municipalities/demo-town/servers",
            &staff,
            None,
        )
        .await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(listed.body[0]["name"], "web");

    // Delete.
    let deleted = demo
        .call(
            vec![
                listing(),
                expect(Method::DELETE, &format!("{SERVERS}/web?"), |_| {
                    (
                        200,
                        json!({ "kind": "Status", "apiVersion": "v1", "status": "Success", "code": 200 }),
                    )
                }),
            ],
            Verb::DELETE,
            "/municipalities/demo-town/servers/web",
            &staff,
            None,
        )
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.body);

    let actions = demo.admin_actions().await;
    let outcomes: Vec<(&str, &str, &str)> = actions
        .iter()
        .map(|a| {
            (
                a["action"].as_str().expect("action"),
                a["target"].as_str().expect("target"),
                a["outcome"].as_str().expect("outcome"),
            )
        })
        .collect();
    let web = "municipality/demo-town/server/web";
    assert_eq!(
        outcomes,
        [
            ("server.create", web, "created"),
            ("server.create", "municipality/demo-town/server", "conflict"),
            ("server.patch", web, "patched"),
            ("server.replace", web, "conflict"),
            ("server.stop", web, "stop"),
            ("server.restart", web, "restart"),
            ("server.delete", web, "deleted"),
        ]
    );
    assert_eq!(actions[0]["role"], "municipality-admin");
    demo.server.stop().await;
}

/// Bad input is refused with a precise problem before anything reaches the cluster (the
/// mocked API sees the Municipalities listed, and nothing else), and the refusal is audited.
#[tokio::test]
async fn bad_input_is_refused_precisely_and_nothing_is_written() {
    let mut demo = Demo::start().await;
    let staff = demo.staff.clone();
    let cases: Vec<(Verb, &str, Value, &str)> = vec![
        (
            Verb::POST,
            "/municipalities/demo-town/servers",
            json!({ "name": "web", "spec": web_spec(), "replicas": 2 }),
            "unknown field `replicas`",
        ),
        (
            Verb::POST,
            "/municipalities/demo-town/servers",
            json!({ "name": "web", "spec": { "image": "debian-12", "cpu": 2, "memory": "4Gi", "cpus": 4 } }),
            "unknown field spec.cpus",
        ),
        (
            Verb::POST,
            "/municipalities/demo-town/servers",
            json!({ "name": "web", "spec": { "image": "debian-12", "cpu": "two", "memory": "4Gi" } }),
            "spec.cpu: invalid type",
        ),
        (
            Verb::POST,
            "/municipalities/demo-town/servers",
            json!({ "name": "Web_1", "spec": web_spec() }),
            "\"Web_1\" is not a server name",
        ),
        (
            Verb::POST,
            "/municipalities/demo-town/servers",
            json!({ "name": "web", "municipality": "talsi", "spec": web_spec() }),
            "the body names municipality \"talsi\", the path \"demo-town\"",
        ),
        (
            Verb::PUT,
            "/municipalities/demo-town/servers/web",
            json!({ "name": "db", "spec": web_spec() }),
            "the body names server \"db\", the path \"web\"",
        ),
    ];
    for (method, path, body, says) in cases {
        let answer = demo
            .call(
                vec![listing()],
                method.clone(),
                path,
                &staff,
                Some((JSON, &body)),
            )
            .await;
        assert_eq!(
            answer.status, 400,
            "{method} {path} {body}: {}",
            answer.body
        );
        assert_eq!(
            answer.problem_type(),
            "https://novads.io/problems/invalid-request"
        );
        let detail = answer.body["detail"].as_str().expect("detail");
        assert!(detail.contains(says), "{detail:?} should say {says:?}");
    }
    let not_json = demo
        .call(
            vec![listing()],
            Verb::POST,
            "/municipalities/demo-town/servers",
            &staff,
            Some(("text/plain", &json!({ "name": "web" }))),
        )
        .await;
    assert_eq!(not_json.status, 415);
    let oversized = json!({ "name": "web", "spec": web_spec(), "pad": "x".repeat(70 * 1024) });
    let too_large = demo
        .call(
            vec![listing()],
            Verb::POST,
            "/municipalities/demo-town/servers",
            &staff,
            Some((JSON, &oversized)),
        )
        .await;
    assert_eq!(too_large.status, 413);
    assert_eq!(
        too_large.problem_type(),
        "https://novads.io/problems/payload-too-large"
    );
    let unknown_action = demo
        .call(
            vec![listing()],
            Verb::POST,
            "/municipalities/demo-town/servers/web/reboot",
            &staff,
            None,
        )
        .await;
    assert_eq!(unknown_action.status, 400);
    let actions = demo.admin_actions().await;
    assert_eq!(actions.len(), 9, "every refusal after sign-in is audited");
    assert!(
        actions
            .iter()
            .all(|a| a["outcome"] != "created" && a["role"].is_null())
    );
    demo.server.stop().await;
}

/// A municipality admin touches nothing of another municipality, and the refusal comes before
/// any read of its servers; the platform admin reaches every municipality.
#[tokio::test]
async fn servers_of_another_municipality_are_out_of_reach() {
    let mut demo = Demo::start().await;
    let (staff, admin) = (demo.staff.clone(), demo.admin.clone());
    let spec = json!({ "name": "web", "spec": web_spec() });
    for (method, path, body) in [
        (Verb::GET, "/municipalities/talsi/servers", None),
        (Verb::GET, "/municipalities/talsi/servers/web", None),
        (
            Verb::POST,
            "/municipalities/talsi/servers",
            Some((JSON, &spec)),
        ),
        (Verb::DELETE, "/municipalities/talsi/servers/web", None),
        (Verb::POST, "/municipalities/talsi/servers/web/stop", None),
    ] {
        let answer = demo
            .call(vec![listing()], method.clone(), path, &staff, body)
            .await;
        assert_eq!(answer.status, 403, "{method} {path}");
    }
    let talsi = "/apis/novads.io/v1alpha1/namespaces/muni-talsi/virtualservers";
    let answer = demo
        .call(
            vec![
                listing(),
                expect(Method::GET, &format!("{talsi}/web"), |_| not_found()),
            ],
            Verb::GET,
            "/municipalities/talsi/servers/web",
            &admin,
            None,
        )
        .await;
    assert_eq!(answer.status, 404);
    let nowhere = demo
        .call(
            vec![listing()],
            Verb::GET,
            "/municipalities/riga/servers",
            &admin,
            None,
        )
        .await;
    assert_eq!(nowhere.status, 404);
    demo.server.stop().await;
}

const MUNICIPALITY_API: &str = "/apis/novads.io/v1alpha1/municipalities";

/// Platform admins create, change and delete Municipalities, each a server-side apply of the
/// whole spec (guarded by the resourceVersion listed for the request) or a delete; nobody else
/// may, and bad input is refused before the cluster sees a write.
#[tokio::test]
async fn platform_admins_write_municipalities_and_nobody_else() {
    let mut demo = Demo::start().await;
    let (staff, admin) = (demo.staff.clone(), demo.admin.clone());
    let riga = json!({
        "code": "riga",
        "displayName": "Rīga",
        "realm": "riga",
        "adminGroups": ["admins"],
        "quotas": { "cpu": "16", "memory": "64Gi", "storage": "1Ti", "maxVirtualServers": 8 },
    });

    let created = demo
        .call(
            vec![
                listing(),
                expect(
                    Method::PATCH,
                    &format!("{MUNICIPALITY_API}/riga{APPLY}"),
                    |body| {
                        assert_eq!(body["kind"], "Municipality");
                        assert_eq!(body["metadata"], json!({ "name": "riga" }));
                        assert_eq!(body["spec"]["code"], "riga");
                        assert_eq!(body["spec"]["adminGroups"], json!(["admins"]));
                        let mut stored = body.clone();
                        stored["metadata"]["resourceVersion"] = json!("61");
                        (201, stored)
                    },
                ),
            ],
            Verb::POST,
            "/municipalities",
            &admin,
            Some((JSON, &json!({ "spec": riga }))),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.headers["location"], "/api/v1/municipalities/riga");
    assert_eq!(created.headers["etag"], "\"61\"");

    let exists = demo
        .call(
            vec![listing()],
            Verb::POST,
            "/municipalities",
            &admin,
            Some((
                JSON,
                &json!({ "spec": municipality("talsi", "talsi", &[])["spec"] }),
            )),
        )
        .await;
    assert_eq!(exists.status, 409);

    let patched = demo
        .call(
            vec![
                listing(),
                expect(
                    Method::PATCH,
                    &format!("{MUNICIPALITY_API}/talsi{APPLY}"),
                    |body| {
                        assert_eq!(body["metadata"]["resourceVersion"], "40");
                        assert_eq!(body["spec"]["displayName"], "Talsu novads");
                        assert_eq!(body["spec"]["adminGroups"], json!(["it-admins"]));
                        let mut stored = body.clone();
                        stored["metadata"]["resourceVersion"] = json!("62");
                        (200, stored)
                    },
                ),
            ],
            Verb::PATCH,
            "/municipalities/talsi",
            &admin,
            Some((
                MERGE_PATCH,
                &json!({ "spec": { "displayName": "Talsu novads" } }),
            )),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(patched.body["spec"]["displayName"], "Talsu novads");

    let mut renamed = municipality("talsi", "talsi", &[])["spec"].clone();
    renamed["code"] = json!("riga");
    for (body, says) in [
        (
            json!({ "spec": renamed }),
            "the body names municipality \"riga\", the path \"talsi\"",
        ),
        (
            json!({ "spec": municipality("talsi", "talsi", &[])["spec"], "status": {} }),
            "unknown field `status`",
        ),
    ] {
        let refused = demo
            .call(
                vec![listing()],
                Verb::PUT,
                "/municipalities/talsi",
                &admin,
                Some((JSON, &body)),
            )
            .await;
        assert_eq!(refused.status, 400, "{}", refused.body);
        let detail = refused.body["detail"].as_str().expect("detail");
        assert!(detail.contains(says), "{detail}");
    }

    // A municipality admin changes nothing about Municipalities, not even her own.
    for (method, path) in [
        (Verb::POST, "/municipalities"),
        (Verb::PATCH, "/municipalities/demo-town"),
        (Verb::PUT, "/municipalities/demo-town"),
        (Verb::DELETE, "/municipalities/demo-town"),
    ] {
        let body = json!({ "spec": riga });
        let answer = demo
            .call(
                vec![listing()],
                method.clone(),
                path,
                &staff,
                Some((JSON, &body)),
            )
            .await;
        assert_eq!(answer.status, 403, "{method} {path}");
    }

    let deleted = demo
        .call(
            vec![
                listing(),
                expect(Method::DELETE, &format!("{MUNICIPALITY_API}/talsi?"), |_| {
                    (
                        200,
                        json!({ "kind": "Status", "apiVersion": "v1", "status": "Success", "code": 200 }),
                    )
                }),
            ],
            Verb::DELETE,
            "/municipalities/talsi",
            &admin,
            None,
        )
        .await;
    assert_eq!(deleted.status, 204);

    let actions = demo.admin_actions().await;
    let outcomes: Vec<(&str, &str, &str)> = actions
        .iter()
        .map(|a| {
            (
                a["action"].as_str().expect("action"),
                a["target"].as_str().expect("target"),
                a["outcome"].as_str().expect("outcome"),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("municipality.create", "municipality/riga", "created"),
            ("municipality.create", "municipality", "conflict"),
            ("municipality.patch", "municipality/talsi", "patched"),
            (
                "municipality.replace",
                "municipality/talsi",
                "invalid-request"
            ),
            (
                "municipality.replace",
                "municipality/talsi",
                "invalid-request"
            ),
            ("municipality.create", "municipality", "denied"),
            ("municipality.patch", "municipality/demo-town", "denied"),
            ("municipality.replace", "municipality/demo-town", "denied"),
            ("municipality.delete", "municipality/demo-town", "denied"),
            ("municipality.delete", "municipality/talsi", "deleted"),
        ]
    );
    assert_eq!(actions[0]["role"], "platform-admin");
    demo.server.stop().await;
}

/// The kept answers of `Idempotency-Key`, on both databases: one per caller and key, replayed
/// only for the same request, released when the request failed, swept after 24 hours.
#[tokio::test]
async fn idempotency_keys_keep_the_first_answer_per_caller_on_both_databases() {
    use novads_api::admin::idempotency::{Claim, IdempotencyKeys, KEY_LIFETIME, KeptAnswer};
    each_backend(|db| async move {
        let keys = IdempotencyKeys { db: &db };
        let backend = db.backend();
        let now = 1_800_000_000_000_i64;
        let answer = KeptAnswer {
            status: 201,
            headers: vec![("etag".into(), "\"7\"".into())],
            body: "{\"name\":\"web\"}".into(),
        };
        let claim =
            |subject: &'static str, key: &'static str, fingerprint: &'static str, at: i64| {
                let keys = &keys;
                async move {
                    keys.claim(subject, key, fingerprint, at)
                        .await
                        .expect("claim")
                }
            };
        assert_eq!(
            claim("demo:anna", "k1", "f1", now).await,
            Claim::Fresh,
            "{backend:?}"
        );
        // In flight until its answer is kept.
        assert_eq!(
            claim("demo:anna", "k1", "f1", now + 1).await,
            Claim::InFlight
        );
        keys.keep("demo:anna", "k1", &answer).await.expect("keep");
        assert_eq!(
            claim("demo:anna", "k1", "f1", now + 2).await,
            Claim::Answered(answer.clone())
        );
        assert_eq!(claim("demo:anna", "k1", "f2", now + 3).await, Claim::Reused);
        // Another caller's key of the same name is another key.
        assert_eq!(
            claim("demo:peteris", "k1", "f2", now + 4).await,
            Claim::Fresh
        );
        // A failed request releases its key; a kept answer is never released.
        keys.release("demo:peteris", "k1").await.expect("release");
        assert_eq!(
            claim("demo:peteris", "k1", "f3", now + 5).await,
            Claim::Fresh
        );
        keys.release("demo:anna", "k1").await.expect("release");
        assert_eq!(
            claim("demo:anna", "k1", "f1", now + 6).await,
            Claim::Answered(answer.clone())
        );
        // After 24 hours the key is swept and free again.
        let later = now + KEY_LIFETIME.as_millis() as i64 + 1;
        assert_eq!(
            claim("demo:anna", "k1", "f2", later).await,
            Claim::Fresh,
            "{backend:?}"
        );
    })
    .await;
}

/// `If-Match` guards replace, patch and delete (412 and nothing written when it names another
/// version); `Idempotency-Key` replays a create's first answer without a second write and
/// refuses the key for another request.
#[tokio::test]
async fn preconditions_and_idempotency_keys_keep_writes_from_repeating_or_racing() {
    let mut demo = Demo::start().await;
    let (staff, admin) = (demo.staff.clone(), demo.admin.clone());
    let base = demo.server.base.clone();
    let create = |key: &str, body: &Value| {
        let request = reqwest::Client::new()
            .post(format!("{base}/api/v1/municipalities/demo-town/servers"))
            .bearer_auth(&staff)
            .header("idempotency-key", key)
            .json(body);
        async move { request.send().await.expect("request") }
    };
    let body = json!({ "name": "web", "spec": web_spec() });
    let api = api_server(
        demo.handle.take().expect("handle"),
        vec![
            listing(),
            expect(Method::GET, &format!("{SERVERS}/web"), |_| not_found()),
            expect(Method::PATCH, &format!("{SERVERS}/web{APPLY}"), |body| {
                (201, stored(&body["spec"], "7"))
            }),
        ],
    );
    let first = create("5f0c2a", &body).await;
    assert_eq!(first.status(), 201);
    let etag = first.headers()["etag"].clone();
    let first_body: Value = first.json().await.expect("json");
    demo.handle = Some(api.await.expect("one create"));
    // The same request again: the first answer, and the cluster sees no write.
    let api = api_server(demo.handle.take().expect("handle"), vec![listing()]);
    let again = create("5f0c2a", &body).await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["etag"], etag);
    assert_eq!(
        again.headers()["location"],
        "/api/v1/municipalities/demo-town/servers/web"
    );
    assert_eq!(again.json::<Value>().await.expect("json"), first_body);
    demo.handle = Some(api.await.expect("no second write"));
    // The same key for another request.
    let api = api_server(demo.handle.take().expect("handle"), vec![listing()]);
    let other = create("5f0c2a", &json!({ "name": "db", "spec": web_spec() })).await;
    assert_eq!(other.status(), 422);
    let problem: Value = other.json().await.expect("json");
    assert_eq!(
        problem["type"],
        "https://novads.io/problems/idempotency-key-reused"
    );
    demo.handle = Some(api.await.expect("nothing written"));

    // If-Match naming an older version: refused after the read, before any write.
    let staff = demo.staff.clone();
    let current = |version: &'static str| {
        expect(Method::GET, &format!("{SERVERS}/web"), move |_| {
            (200, stored(&applied_spec(2, "Running"), version))
        })
    };
    for method in [Verb::PUT, Verb::PATCH] {
        let answer = demo
            .call_with(
                vec![listing(), current("8")],
                method.clone(),
                "/municipalities/demo-town/servers/web",
                &staff,
                Some((JSON, &json!({ "spec": web_spec() }))),
                &[("if-match", "\"7\"")],
            )
            .await;
        assert_eq!(answer.status, 412, "{method}: {}", answer.body);
        assert_eq!(
            answer.problem_type(),
            "https://novads.io/problems/precondition-failed"
        );
    }
    // The current version passes and guards the apply.
    let patched = demo
        .call_with(
            vec![
                listing(),
                current("8"),
                expect(Method::PATCH, &format!("{SERVERS}/web{APPLY}"), |body| {
                    assert_eq!(body["metadata"]["resourceVersion"], "8");
                    (200, stored(&body["spec"], "9"))
                }),
            ],
            Verb::PATCH,
            "/municipalities/demo-town/servers/web",
            &staff,
            Some((MERGE_PATCH, &json!({ "spec": { "cpu": 3 } }))),
            &[("if-match", "\"8\"")],
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    // A delete hands the version to the API server, which checks it with the delete.
    let deleted = demo
        .call_with(
            vec![
                listing(),
                expect(Method::DELETE, &format!("{SERVERS}/web?"), |body| {
                    assert_eq!(body["preconditions"]["resourceVersion"], "8");
                    api_error(409, "Conflict")
                }),
            ],
            Verb::DELETE,
            "/municipalities/demo-town/servers/web",
            &staff,
            None,
            &[("if-match", "\"8\"")],
        )
        .await;
    assert_eq!(deleted.status, 412, "{}", deleted.body);
    let malformed = demo
        .call_with(
            vec![listing()],
            Verb::DELETE,
            "/municipalities/demo-town/servers/web",
            &staff,
            None,
            &[("if-match", "8")],
        )
        .await;
    assert_eq!(malformed.status, 400);
    // Municipalities: checked against the version listed for the request.
    let municipality = demo
        .call_with(
            vec![listing()],
            Verb::PATCH,
            "/municipalities/talsi",
            &admin,
            Some((MERGE_PATCH, &json!({ "spec": { "displayName": "Talsi" } }))),
            &[("if-match", "\"39\"")],
        )
        .await;
    assert_eq!(municipality.status, 412);

    let outcomes: Vec<String> = demo
        .admin_actions()
        .await
        .iter()
        .map(|a| {
            format!(
                "{} {}",
                a["action"].as_str().expect("action"),
                a["outcome"].as_str().expect("outcome")
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            "server.create created",
            "server.replace precondition-failed",
            "server.patch precondition-failed",
            "server.patch patched",
            "server.delete precondition-failed",
            "server.delete invalid-request",
            "municipality.patch precondition-failed",
        ],
        "a replay and a reused key change nothing and add no row"
    );
    demo.server.stop().await;
}

const IMAGES: &str = "/apis/novads.io/v1alpha1/serverimages";

fn debian_spec() -> Value {
    json!({
        "source": { "registry": "docker://quay.io/containerdisks/debian:12" },
        "osFamily": "Linux",
        "version": "12",
        "supportEnd": "2028-06-30",
        "lastPatched": "2026-11-20",
        "minDiskSize": "20Gi",
    })
}

fn stored_image(spec: &Value, resource_version: &str) -> Value {
    json!({
        "apiVersion": "novads.io/v1alpha1",
        "kind": "ServerImage",
        "metadata": { "name": "debian-12", "resourceVersion": resource_version },
        "spec": spec,
    })
}

/// Every role reads the images; platform admins alone add, change and remove them.
#[tokio::test]
async fn images_are_read_by_every_role_and_written_by_platform_admins() {
    let mut demo = Demo::start().await;
    let (staff, admin) = (demo.staff.clone(), demo.admin.clone());
    let listed = demo
        .call(
            vec![
                listing(),
                expect(Method::GET, &format!("{IMAGES}?"), |_| {
                    (
                        200,
                        json!({
                            "apiVersion": "novads.io/v1alpha1",
                            "kind": "ServerImageList",
                            "metadata": { "resourceVersion": "70" },
                            "items": [stored_image(&debian_spec(), "70")],
                        }),
                    )
                }),
            ],
            Verb::GET,
            "/images",
            &staff,
            None,
        )
        .await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(listed.body[0]["name"], "debian-12");
    let one = demo
        .call(
            vec![
                listing(),
                expect(Method::GET, &format!("{IMAGES}/debian-12"), |_| {
                    (200, stored_image(&debian_spec(), "70"))
                }),
            ],
            Verb::GET,
            "/images/debian-12",
            &staff,
            None,
        )
        .await;
    assert_eq!(one.status, 200);
    assert_eq!(one.headers["etag"], "\"70\"");

    // A municipality admin changes no image.
    for (method, path) in [
        (Verb::POST, "/images"),
        (Verb::PATCH, "/images/debian-12"),
        (Verb::DELETE, "/images/debian-12"),
    ] {
        let body = json!({ "name": "debian-12", "spec": debian_spec() });
        let answer = demo
            .call(
                vec![listing()],
                method.clone(),
                path,
                &staff,
                Some((JSON, &body)),
            )
            .await;
        assert_eq!(answer.status, 403, "{method} {path}");
    }

    let created = demo
        .call(
            vec![
                listing(),
                expect(Method::GET, &format!("{IMAGES}/debian-12"), |_| not_found()),
                expect(
                    Method::PATCH,
                    &format!("{IMAGES}/debian-12{APPLY}"),
                    |body| {
                        assert_eq!(body["metadata"], json!({ "name": "debian-12" }));
                        assert_eq!(body["spec"]["approved"], false);
                        (201, stored_image(&body["spec"], "71"))
                    },
                ),
            ],
            Verb::POST,
            "/images",
            &admin,
            Some((JSON, &json!({ "name": "debian-12", "spec": debian_spec() }))),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.headers["location"], "/api/v1/images/debian-12");

    let approved = demo
        .call(
            vec![
                listing(),
                expect(Method::GET, &format!("{IMAGES}/debian-12"), |_| {
                    (200, stored_image(&debian_spec(), "71"))
                }),
                expect(
                    Method::PATCH,
                    &format!("{IMAGES}/debian-12{APPLY}"),
                    |body| {
                        assert_eq!(body["metadata"]["resourceVersion"], "71");
                        assert_eq!(body["spec"]["approved"], true);
                        assert_eq!(body["spec"]["version"], "12");
                        (200, stored_image(&body["spec"], "72"))
                    },
                ),
            ],
            Verb::PATCH,
            "/images/debian-12",
            &admin,
            Some((MERGE_PATCH, &json!({ "spec": { "approved": true } }))),
        )
        .await;
    assert_eq!(approved.status, 200, "{}", approved.body);
    assert_eq!(approved.body["spec"]["approved"], true);

    let unknown = demo
        .call(
            vec![listing()],
            Verb::POST,
            "/images",
            &admin,
            Some((JSON, &json!({ "name": "Debian 12", "spec": debian_spec() }))),
        )
        .await;
    assert_eq!(unknown.status, 400);

    let deleted = demo
        .call(
            vec![
                listing(),
                expect(Method::DELETE, &format!("{IMAGES}/debian-12?"), |_| {
                    (
                        200,
                        json!({ "kind": "Status", "apiVersion": "v1", "status": "Success", "code": 200 }),
                    )
                }),
            ],
            Verb::DELETE,
            "/images/debian-12",
            &admin,
            None,
        )
        .await;
    assert_eq!(deleted.status, 204);

    let outcomes: Vec<String> = demo
        .admin_actions()
        .await
        .iter()
        .map(|a| {
            format!(
                "{} {} {}",
                a["action"].as_str().expect("action"),
                a["target"].as_str().expect("target"),
                a["outcome"].as_str().expect("outcome")
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            "image.create image denied",
            "image.patch image/debian-12 denied",
            "image.delete image/debian-12 denied",
            "image.create image/debian-12 created",
            "image.patch image/debian-12 patched",
            "image.create image invalid-request",
            "image.delete image/debian-12 deleted",
        ]
    );
    demo.server.stop().await;
}

/// Each caller (token subject) has its own budget: past it, `429 rate-limited` with
/// `Retry-After`, while others go on.
#[tokio::test]
async fn each_caller_is_held_to_its_own_rate_limit() {
    let server = start_dev(|config, _| {
        admin::admin_config(config, &[], &["demo:it-admins"], &[]);
        config.admin_api.rate_limit = novads_api::config::AdminRateLimitConfig {
            requests_per_minute: 1,
            burst: 3,
        };
    })
    .await;
    let [anna, peteris] = [&dev::DEMO_USERS[0], &dev::DEMO_USERS[1]];
    let admin = admin::token(&server.base, "anna@demo", anna.password).await;
    let staff = admin::token(&server.base, "peteris@demo", peteris.password).await;
    for _ in 0..3 {
        assert_eq!(
            call(&server.base, Verb::GET, "/me", &admin, None)
                .await
                .status,
            200
        );
    }
    let limited = call(&server.base, Verb::GET, "/me", &admin, None).await;
    assert_eq!(limited.status, 429);
    assert_eq!(
        limited.problem_type(),
        "https://novads.io/problems/rate-limited"
    );
    let retry_after: u64 = limited.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(
        call(&server.base, Verb::GET, "/me", &staff, None)
            .await
            .status,
        200
    );
    server.stop().await;
}

/// Who calls, in the tenant-isolation matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    PlatformAdmin,
    Auditor,
    /// municipality-admin of demo-town.
    AdminOfOwn,
    /// security-officer of demo-town.
    OfficerOfOwn,
    NoRole,
}

/// Which callers an endpoint admits, given whether the target is the caller's own
/// municipality (demo-town) or another (talsi).
#[derive(Debug, Clone, Copy)]
enum Admits {
    /// Platform admins alone.
    PlatformAdmins,
    /// Platform admins, and municipality admins of their own municipality.
    OwnAdmins,
    /// Platform admins, auditors, and municipality admins and security officers of their own.
    OwnReaders,
    /// Anyone with a role.
    AnyRole,
    /// Any accepted token, with a role or without.
    AnyToken,
    /// Platform admins and auditors.
    Auditors,
    /// Platform admins, auditors, and security officers (of their own realm's trail).
    Officers,
    /// Platform admins, auditors, and security officers of their own municipality.
    OwnOfficers,
}

impl Admits {
    fn admits(self, caller: Caller, own: bool) -> bool {
        use Caller::*;
        match self {
            Self::PlatformAdmins => caller == PlatformAdmin,
            Self::OwnAdmins => caller == PlatformAdmin || (caller == AdminOfOwn && own),
            Self::OwnReaders => {
                matches!(caller, PlatformAdmin | Auditor)
                    || (matches!(caller, AdminOfOwn | OfficerOfOwn) && own)
            }
            Self::AnyRole => caller != NoRole,
            Self::AnyToken => true,
            Self::Auditors => matches!(caller, PlatformAdmin | Auditor),
            Self::Officers => matches!(caller, PlatformAdmin | Auditor | OfficerOfOwn),
            Self::OwnOfficers => {
                matches!(caller, PlatformAdmin | Auditor) || (caller == OfficerOfOwn && own)
            }
        }
    }
}

/// One endpoint of the matrix: `{m}` in the path is the target municipality's code, `{r}` its
/// realm. New endpoints join by adding a row.
struct Endpoint {
    method: Verb,
    path: &'static str,
    body: Option<Value>,
    admits: Admits,
}

fn endpoints() -> Vec<Endpoint> {
    let row = |method: Verb, path: &'static str, body: Option<Value>, admits: Admits| Endpoint {
        method,
        path,
        body,
        admits,
    };
    let muni_spec = |code: &str| municipality(code, code, &["admins"])["spec"].clone();
    let server = json!({ "name": "web", "spec": web_spec() });
    let image = json!({ "name": "debian-12", "spec": debian_spec() });
    use Admits::*;
    vec![
        row(Verb::GET, "/me", None, AnyToken),
        row(Verb::GET, "/realms", None, AnyRole),
        row(Verb::GET, "/realms/{r}", None, OwnReaders),
        row(
            Verb::POST,
            "/realms/{r}/test",
            Some(json!({ "username": "nobody", "password": "wrong" })),
            OwnAdmins,
        ),
        row(Verb::GET, "/trusts", None, AnyRole),
        row(Verb::GET, "/clients", None, AnyRole),
        row(Verb::GET, "/audit/events", None, Officers),
        row(Verb::GET, "/audit/events?realm={r}", None, OwnOfficers),
        row(
            Verb::GET,
            "/audit/export?format=jsonl&realm={r}",
            None,
            OwnOfficers,
        ),
        row(Verb::GET, "/audit/verify", None, Auditors),
        row(Verb::GET, "/municipalities/{m}", None, OwnReaders),
        row(
            Verb::POST,
            "/municipalities",
            Some(json!({ "spec": muni_spec("newtown") })),
            PlatformAdmins,
        ),
        row(
            Verb::PUT,
            "/municipalities/{m}",
            Some(json!({ "spec": muni_spec("{m}") })),
            PlatformAdmins,
        ),
        row(
            Verb::PATCH,
            "/municipalities/{m}",
            Some(json!({ "spec": { "displayName": "X" } })),
            PlatformAdmins,
        ),
        row(Verb::DELETE, "/municipalities/{m}", None, PlatformAdmins),
        row(Verb::GET, "/municipalities/{m}/servers", None, OwnReaders),
        row(
            Verb::GET,
            "/municipalities/{m}/servers/web",
            None,
            OwnReaders,
        ),
        row(
            Verb::POST,
            "/municipalities/{m}/servers",
            Some(server.clone()),
            OwnAdmins,
        ),
        row(
            Verb::PUT,
            "/municipalities/{m}/servers/web",
            Some(server),
            OwnAdmins,
        ),
        row(
            Verb::PATCH,
            "/municipalities/{m}/servers/web",
            Some(json!({ "spec": { "cpu": 3 } })),
            OwnAdmins,
        ),
        row(
            Verb::POST,
            "/municipalities/{m}/servers/web/start",
            None,
            OwnAdmins,
        ),
        row(
            Verb::POST,
            "/municipalities/{m}/servers/web/stop",
            None,
            OwnAdmins,
        ),
        row(
            Verb::POST,
            "/municipalities/{m}/servers/web/restart",
            None,
            OwnAdmins,
        ),
        row(
            Verb::DELETE,
            "/municipalities/{m}/servers/web",
            None,
            OwnAdmins,
        ),
        row(Verb::GET, "/images", None, AnyRole),
        row(Verb::GET, "/images/debian-12", None, AnyRole),
        row(Verb::POST, "/images", Some(image.clone()), PlatformAdmins),
        row(Verb::PUT, "/images/debian-12", Some(image), PlatformAdmins),
        row(
            Verb::PATCH,
            "/images/debian-12",
            Some(json!({ "spec": { "approved": true } })),
            PlatformAdmins,
        ),
        row(Verb::DELETE, "/images/debian-12", None, PlatformAdmins),
    ]
}

/// Every endpoint (identity, audit and cluster) × every role × own and other municipality: a
/// refused cell answers 403 and the cluster sees no write; an admitted cell is not refused. Listing Municipalities shows
/// each caller only what it may read.
#[tokio::test]
async fn tenant_isolation_matrix_every_endpoint_every_role_own_and_other() {
    let mut demo_town = municipality("demo-town", "demo", &["staff"]);
    demo_town["spec"]["securityOfficerGroups"] = json!(["security"]);
    let list = json!({
        "apiVersion": "novads.io/v1alpha1",
        "kind": "MunicipalityList",
        "metadata": { "resourceVersion": "50" },
        "items": [demo_town, municipality("talsi", "talsi", &["it-admins"])],
    });
    let server = start_dev(|config, _| {
        admin::admin_config(
            config,
            &[
                ("ines", &["audit"]),
                ("sofija", &["security"]),
                ("nils", &[]),
            ],
            &["demo:it-admins"],
            &["demo:audit"],
        );
        // Talsi's realm, so that the other municipality's realm exists too.
        let mut talsi = config.realms[0].clone();
        talsi.name = "talsi".into();
        config.realms.push(talsi);
        // The matrix sends many requests per caller; the limit is tested on its own.
        config.admin_api.rate_limit.requests_per_minute = 0;
    })
    .await;
    let (client, writes) = cluster_api::fake_cluster_with_writes(list);
    assert!(server.state.set_cluster(client));
    let base = &server.base;
    let mut callers = Vec::new();
    for (caller, login) in [
        (Caller::PlatformAdmin, "anna@demo"),
        (Caller::Auditor, "ines@demo"),
        (Caller::AdminOfOwn, "peteris@demo"),
        (Caller::OfficerOfOwn, "sofija@demo"),
        (Caller::NoRole, "nils@demo"),
    ] {
        // The users added for the matrix share anna's password.
        let password = if login == "peteris@demo" {
            dev::DEMO_USERS[1].password
        } else {
            dev::DEMO_USERS[0].password
        };
        callers.push((caller, admin::token(base, login, password).await));
    }

    let mut leaks = Vec::new();
    for endpoint in endpoints() {
        for (caller, token) in &callers {
            for (own, code, realm) in [(true, "demo-town", "demo"), (false, "talsi", "talsi")] {
                let path = endpoint.path.replace("{m}", code).replace("{r}", realm);
                let body = endpoint.body.as_ref().map(|b| {
                    serde_json::from_str::<Value>(&b.to_string().replace("{m}", code))
                        .expect("json")
                });
                let content_type = if endpoint.method == Verb::PATCH {
                    MERGE_PATCH
                } else {
                    JSON
                };
                let before = writes.lock().expect("writes").len();
                let answer = call(
                    base,
                    endpoint.method.clone(),
                    &path,
                    token,
                    body.as_ref().map(|b| (content_type, b)),
                )
                .await;
                let written = writes.lock().expect("writes").len() - before;
                let cell = format!("{} {path} as {caller:?}", endpoint.method);
                if endpoint.admits.admits(*caller, own) {
                    if matches!(answer.status, 401 | 403) || answer.status >= 500 {
                        leaks.push(format!("{cell}: refused {} {}", answer.status, answer.body));
                    }
                } else if answer.status != 403 || written != 0 {
                    leaks.push(format!(
                        "{cell}: {} with {written} writes, expected 403 and none",
                        answer.status
                    ));
                }
            }
        }
    }
    assert!(leaks.is_empty(), "cells that leak:\n{}", leaks.join("\n"));

    // The list of Municipalities shows each caller what it may read, and no more.
    for (caller, token) in &callers {
        let listed = call(base, Verb::GET, "/municipalities", token, None).await;
        let codes: Vec<&str> = listed
            .body
            .as_array()
            .map(|a| a.iter().filter_map(|m| m["code"].as_str()).collect())
            .unwrap_or_default();
        match caller {
            Caller::PlatformAdmin | Caller::Auditor => assert_eq!(codes, ["demo-town", "talsi"]),
            Caller::AdminOfOwn | Caller::OfficerOfOwn => assert_eq!(codes, ["demo-town"]),
            Caller::NoRole => assert_eq!(listed.status, 403),
        }
    }
    server.stop().await;
}
