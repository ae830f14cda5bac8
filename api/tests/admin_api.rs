//! The admin API at `/api/v1` over HTTP, with tokens from the real sign-in flow: the
//! authorisation code flow with PKCE for people, `client_credentials` for services.

use novads_api::config::{
    AdminApiConfig, AdminRateLimitConfig, ClientConfig, Config, LdapConfig, PlatformRole,
    RealmConfig, ServiceClientConfig,
};
use novads_api::dev;
use novads_testkit::fixtures::talsi;
use novads_testkit::{Municipality, Postgres, Slapd, User};
use reqwest::header::{HeaderMap, WWW_AUTHENTICATE};
use serde_json::{Value, json};

mod support;
use support::{Running, start_dev};
#[path = "support/admin.rs"]
mod admin_support;
#[path = "support/cluster_api.rs"]
mod cluster_api;

/// `demo-client-secret`, argon2id.
const ROBOT_SECRET_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$0zRucgKNwySQRxoit2ER+w$iDkVZbdhJA9fQrzaNsG0gIjqer7wb69X+sWub423aug";
const ROBOT_SECRET: &str = "demo-client-secret";
/// The public client portals sign in through.
const CONSOLE: &str = "console";
const CONSOLE_REDIRECT: &str = "http://127.0.0.1:9/callback";

/// A public `console` client of `realm` and a confidential `robot` client of the demo realm.
fn add_clients(config: &mut Config, realm: &str) {
    config.clients.push(ClientConfig {
        client_id: CONSOLE.into(),
        realm: realm.into(),
        redirect_uris: vec![CONSOLE_REDIRECT.into()],
        post_logout_redirect_uris: vec![],
        secret_hash: None,
        public: true,
        id_token_signed_response_alg: Default::default(),
    });
    config.clients.push(ClientConfig {
        client_id: "robot".into(),
        realm: dev::DEMO_REALM.into(),
        redirect_uris: vec!["https://robot.example.lv/cb".into()],
        post_logout_redirect_uris: vec![],
        secret_hash: Some(ROBOT_SECRET_HASH.into()),
        public: false,
        id_token_signed_response_alg: Default::default(),
    });
}

/// The dev configuration with the admin API open to `console` and `robot` (an auditor);
/// the demo realm's `it-admins` are platform admins.
async fn start_demo(cors_origins: Vec<String>) -> Running {
    start_dev(|config, _| {
        add_clients(config, dev::DEMO_REALM);
        config.admin_api = AdminApiConfig {
            clients: vec![CONSOLE.into(), "robot".into()],
            platform_admin_groups: vec!["demo:it-admins".into()],
            auditor_groups: vec![],
            service_clients: vec![ServiceClientConfig {
                client_id: "robot".into(),
                role: PlatformRole::Auditor,
            }],
            cors_origins,
            // The contract test sends hundreds of requests with one token: they must reach the
            // handlers, not the rate limit (tested in admin_cluster.rs).
            rate_limit: AdminRateLimitConfig {
                requests_per_minute: 0,
                burst: 1,
            },
        };
    })
    .await
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).expect("field present") + marker.len();
    let end = html[start..].find('"').expect("value closed") + start;
    html[start..end].to_owned()
}

async fn robot_token(base: &str) -> String {
    let response = browser()
        .post(format!("{base}/oidc/token"))
        .basic_auth("robot", Some(ROBOT_SECRET))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("token");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    body["access_token"]
        .as_str()
        .expect("access token")
        .to_owned()
}

/// An answer: status, headers and the JSON body (`Null` when not JSON).
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    async fn from(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.json().await.unwrap_or_default();
        Self {
            status,
            headers,
            body,
        }
    }

    fn problem_type(&self) -> &str {
        self.body["type"].as_str().unwrap_or("")
    }
}

async fn get(base: &str, path: &str, token: Option<&str>) -> Answer {
    let mut request = browser().get(format!("{base}/api/v1{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    Answer::from(request.send().await.expect("get")).await
}

#[tokio::test]
async fn tokens_are_checked_and_roles_come_from_groups_and_service_clients() {
    let server = start_demo(vec![]).await;
    let base = &server.base;
    let [anna, peteris] = [&dev::DEMO_USERS[0], &dev::DEMO_USERS[1]];

    let answer = get(base, "/me", None).await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.headers[WWW_AUTHENTICATE], "Bearer realm=\"novads\"");
    assert_eq!(answer.headers["content-type"], "application/problem+json");
    assert_eq!(
        answer.problem_type(),
        "https://novads.io/problems/unauthenticated"
    );

    let answer = get(base, "/me", Some("not.a.token")).await;
    assert_eq!(answer.status, 401);
    assert_eq!(
        answer.problem_type(),
        "https://novads.io/problems/invalid-token"
    );
    assert!(
        answer.headers[WWW_AUTHENTICATE]
            .to_str()
            .expect("ascii")
            .contains("error=\"invalid_token\"")
    );

    // A valid token of the demo application: not a client the admin API accepts.
    let demo_redirect = format!("{base}/demo/callback");
    let other = admin_support::token_at(
        base,
        dev::DEMO_CLIENT,
        &demo_redirect,
        "anna@demo",
        anna.password,
    )
    .await;
    let answer = get(base, "/me", Some(&other)).await;
    assert_eq!(answer.status, 401);
    assert!(
        answer.body["detail"]
            .as_str()
            .expect("detail")
            .contains("\"demo-app\""),
        "{}",
        answer.body
    );

    let admin =
        admin_support::token_at(base, CONSOLE, CONSOLE_REDIRECT, "anna@demo", anna.password).await;
    let answer = get(base, "/me", Some(&admin)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["roles"], serde_json::json!(["platform-admin"]));
    assert_eq!(answer.body["realm"], "demo");

    let staff = admin_support::token_at(
        base,
        CONSOLE,
        CONSOLE_REDIRECT,
        "peteris@demo",
        peteris.password,
    )
    .await;
    let answer = get(base, "/me", Some(&staff)).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body["roles"], serde_json::json!([]));

    let robot = robot_token(base).await;
    let answer = get(base, "/me", Some(&robot)).await;
    assert_eq!(answer.body["roles"], serde_json::json!(["auditor"]));
    assert_eq!(answer.body["subject"], "client:robot");

    // With the token remembered as verified, a copy with a changed signature or with the
    // claims of another token is checked in full, and refused.
    let (signed, signature) = admin.rsplit_once('.').expect("a JWT");
    let flipped = if signature.starts_with('A') { 'B' } else { 'A' };
    let forged = format!("{signed}.{flipped}{}", &signature[1..]);
    let answer = get(base, "/me", Some(&forged)).await;
    assert_eq!(answer.status, 401, "{}", answer.body);
    let staff_claims = staff.split('.').nth(1).expect("claims");
    let [header, _, signature] =
        <[&str; 3]>::try_from(admin.split('.').collect::<Vec<_>>()).expect("three parts");
    let spliced = format!("{header}.{staff_claims}.{signature}");
    let answer = get(base, "/me", Some(&spliced)).await;
    assert_eq!(answer.status, 401, "{}", answer.body);
    assert_eq!(get(base, "/me", Some(&admin)).await.status, 200);

    // A revoked token is refused at once.
    let response = browser()
        .post(format!("{base}/oidc/revoke"))
        .form(&[("token", admin.as_str()), ("client_id", CONSOLE)])
        .send()
        .await
        .expect("revoke");
    assert_eq!(response.status(), 200);
    let answer = get(base, "/me", Some(&admin)).await;
    assert_eq!(answer.status, 401);
    assert!(
        answer.body["detail"]
            .as_str()
            .expect("detail")
            .contains("revoked")
    );

    let answer = get(base, "/nothing-here", Some(&robot)).await;
    assert_eq!(answer.status, 404);
    assert_eq!(
        answer.problem_type(),
        "https://novads.io/problems/not-found"
    );
    // Without configured origins there are no CORS headers at all.
    let response = browser()
        .get(format!("{base}/api/v1/me"))
        .header("origin", "https://evil.example")
        .bearer_auth(&robot)
        .send()
        .await
        .expect("get");
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    server.stop().await;
}

#[tokio::test]
async fn cors_answers_configured_origins_only() {
    let server = start_demo(vec!["https://portal.example.lv".into()]).await;
    let preflight = |origin: &'static str| {
        browser()
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/api/v1/me", server.base),
            )
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let allowed = preflight("https://portal.example.lv")
        .await
        .expect("options");
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://portal.example.lv"
    );
    let refused = preflight("https://evil.example").await.expect("options");
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    server.stop().await;
}

/// The dev configuration plus Talsi's directory, with `console` a client of Talsi: Talsi's
/// `it-admins` are platform admins, its `accounting` auditors; `robot` is an auditor.
async fn start_talsi(ldap: &Slapd, database: Option<String>) -> Running {
    let m = Municipality::Talsi;
    start_dev(|config, _| {
        if let Some(url) = database {
            config.database = url;
        }
        config.realms.push(RealmConfig {
            name: "talsi".into(),
            display_name: Some(m.display_name().into()),
            ldap: Some(LdapConfig {
                insecure: true,
                bind_dn: Some(m.service_dn().into()),
                bind_password: Some(m.service_password().into()),
                timeout_seconds: 2,
                pool_size: 2,
                ..LdapConfig::new(vec![ldap.url()], m.people_base())
            }),
            static_directory: None,
        });
        add_clients(config, "talsi");
        config.admin_api = AdminApiConfig {
            clients: vec![CONSOLE.into(), "robot".into()],
            platform_admin_groups: vec!["talsi:it-admins".into()],
            auditor_groups: vec!["talsi:accounting".into()],
            service_clients: vec![ServiceClientConfig {
                client_id: "robot".into(),
                role: PlatformRole::Auditor,
            }],
            cors_origins: vec![],
            rate_limit: Default::default(),
        };
    })
    .await
}

async fn talsi_token(base: &str, user: &User) -> String {
    admin_support::token_at(
        base,
        CONSOLE,
        CONSOLE_REDIRECT,
        &user.login(),
        user.password,
    )
    .await
}

async fn post_json(base: &str, path: &str, token: &str, body: &Value) -> Answer {
    let response = browser()
        .post(format!("{base}/api/v1{path}"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("post");
    Answer::from(response).await
}

async fn get_text(base: &str, path: &str, token: &str) -> (u16, String, String) {
    let response = browser()
        .get(format!("{base}/api/v1{path}"))
        .bearer_auth(token)
        .send()
        .await
        .expect("get");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().expect("ascii").to_owned())
        .unwrap_or_default();
    (status, content_type, response.text().await.expect("text"))
}

/// Every event id from `path` (a query without `cursor`), from `cursor` on, following
/// cursors to the end.
async fn all_ids(base: &str, path: &str, token: &str, mut cursor: Option<String>) -> Vec<i64> {
    let mut ids = Vec::new();
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}&cursor={c}"),
            None => path.to_owned(),
        };
        let answer = get(base, &url, Some(token)).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        ids.extend(
            answer.body["events"]
                .as_array()
                .expect("events")
                .iter()
                .map(|e| e["id"].as_i64().expect("id")),
        );
        match answer.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return ids,
        }
    }
}

/// Identity views, the realm test and the audit trail, against Talsi's real directory with
/// tokens from the real sign-in flow, on one database.
async fn identity_and_audit(ldap: &Slapd, database: Option<String>) {
    let server = start_talsi(ldap, database).await;
    let base = &server.base;
    let jana = talsi_token(base, &talsi::JANA).await; // platform admin
    let ilze = talsi_token(base, &talsi::ILZE).await; // auditor
    let janis = talsi_token(base, &talsi::JANIS_BERZINS).await; // no role
    let robot = robot_token(base).await;

    // Read views: everything visible to admins and auditors, no secret anywhere.
    let realms = get(base, "/realms", Some(&ilze)).await;
    assert_eq!(realms.status, 200, "{}", realms.body);
    let talsi_view = realms
        .body
        .as_array()
        .expect("array")
        .iter()
        .find(|r| r["name"] == "talsi")
        .expect("talsi listed")
        .clone();
    assert_eq!(talsi_view["directory"], "ldap");
    assert_eq!(talsi_view["ldap"]["bind_password_set"], true);
    assert_eq!(talsi_view["ldap"]["urls"][0], ldap.url());
    let realm = get(base, "/realms/talsi", Some(&robot)).await;
    assert_eq!(realm.body, talsi_view);
    let clients = get(base, "/clients", Some(&jana)).await;
    assert_eq!(clients.status, 200);
    let robot_view = get(base, "/clients/robot", Some(&jana)).await;
    assert_eq!(robot_view.body["secret_set"], true);
    assert_eq!(robot_view.body["admin_api"], true);
    assert_eq!(get(base, "/trusts", Some(&jana)).await.status, 200);
    for body in [&realms.body, &clients.body, &robot_view.body] {
        let text = body.to_string();
        assert!(
            !text.contains(Municipality::Talsi.service_password()),
            "{text}"
        );
        assert!(!text.contains("$argon2id"), "{text}");
    }
    assert_eq!(
        get(base, "/realms/nowhere", Some(&jana))
            .await
            .problem_type(),
        "https://novads.io/problems/not-found"
    );
    assert_eq!(get(base, "/clients/nobody", Some(&jana)).await.status, 404);
    let refused = get(base, "/realms", Some(&janis)).await;
    assert_eq!(refused.status, 403);
    assert_eq!(
        refused.problem_type(),
        "https://novads.io/problems/forbidden"
    );
    assert!(
        refused.headers[WWW_AUTHENTICATE]
            .to_str()
            .expect("ascii")
            .contains("insufficient_scope")
    );

    // The realm test signs in through the production path.
    let test =
        |username: &str, password: &str| json!({ "username": username, "password": password });
    let signed_in = post_json(
        base,
        "/realms/talsi/test",
        &jana,
        &test("ilze", talsi::ILZE.password),
    )
    .await;
    assert_eq!(signed_in.status, 200, "{}", signed_in.body);
    assert_eq!(signed_in.body["result"], "signed_in");
    assert_eq!(signed_in.body["groups"], json!(["talsi:accounting"]));
    let ilze_subject = signed_in.body["subject"]
        .as_str()
        .expect("subject")
        .to_owned();
    let refused = post_json(
        base,
        "/realms/talsi/test",
        &jana,
        &test("ilze@talsi", "wrong"),
    )
    .await;
    assert_eq!(refused.body["result"], "refused");
    assert_eq!(refused.body["reason"], "bad_credentials");
    // Auditors change nothing; bad input is named and does nothing.
    assert_eq!(
        post_json(base, "/realms/talsi/test", &ilze, &test("ilze", "x"))
            .await
            .status,
        403
    );
    for (path, body, status) in [
        ("/realms/talsi/test", test("ilze@ventspils", "x"), 400),
        (
            "/realms/talsi/test",
            json!({ "username": "ilze", "password": "x", "extra": 1 }),
            400,
        ),
        (
            "/realms/talsi/test",
            json!({ "username": 7, "password": "x" }),
            400,
        ),
        ("/realms/nowhere/test", test("ilze", "x"), 404),
        (
            "/realms/talsi/test",
            test("ilze", &"x".repeat(70 * 1024)),
            413,
        ),
    ] {
        let answer = post_json(base, path, &jana, &body).await;
        assert_eq!(answer.status, status, "{path} {}", answer.body);
        assert!(
            answer
                .problem_type()
                .starts_with("https://novads.io/problems/"),
            "{}",
            answer.body
        );
    }

    // Events, newest first, filtered.
    let failed = get(
        base,
        "/audit/events?realm=talsi&event=login_failed&reason=bad_credentials",
        Some(&ilze),
    )
    .await;
    assert_eq!(failed.status, 200, "{}", failed.body);
    let failed = failed.body["events"].as_array().expect("events").clone();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["username"], "ilze@talsi");
    let by_user = get(
        base,
        &format!("/audit/events?user={ilze_subject}"),
        Some(&ilze),
    )
    .await;
    assert!(
        by_user.body["events"]
            .as_array()
            .expect("events")
            .iter()
            .all(|e| e["subject"] == ilze_subject.as_str())
    );
    assert!(
        !by_user.body["events"]
            .as_array()
            .expect("events")
            .is_empty()
    );
    let by_client = get(
        base,
        &format!("/audit/events?client={CONSOLE}&event=login_succeeded"),
        Some(&ilze),
    )
    .await;
    assert_eq!(
        by_client.body["events"].as_array().expect("events").len(),
        3,
        "three sign-ins at the console"
    );
    let future = get(base, "/audit/events?since=2999-01-01", Some(&ilze)).await;
    assert_eq!(future.body["events"], json!([]));
    assert!(future.body["next_cursor"].is_null());
    for bad in [
        "?event=hacked",
        "?limit=0",
        "?limit=5000",
        "?cursor=forged",
        "?since=yesterday",
        "?colour=red",
    ] {
        let answer = get(base, &format!("/audit/events{bad}"), Some(&ilze)).await;
        assert_eq!(answer.status, 400, "{bad}: {}", answer.body);
        assert_eq!(
            answer.problem_type(),
            "https://novads.io/problems/invalid-request"
        );
    }
    assert_eq!(get(base, "/audit/events", Some(&janis)).await.status, 403);

    // Pages stay stable while rows are appended: follow the cursor after new sign-ins.
    let everything = all_ids(base, "/audit/events?limit=1000", &ilze, None).await;
    let first = get(base, "/audit/events?limit=2", Some(&ilze)).await;
    let cursor = first.body["next_cursor"]
        .as_str()
        .expect("more pages")
        .to_owned();
    let mut paged: Vec<i64> = first.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["id"].as_i64().expect("id"))
        .collect();
    for _ in 0..3 {
        post_json(base, "/realms/talsi/test", &jana, &test("ilze", "wrong")).await;
    }
    // A cursor of pages in id order does not continue pages of a time range, which are in
    // time order.
    let mixed = get(
        base,
        &format!("/audit/events?limit=2&since=2020-01-01&cursor={cursor}"),
        Some(&ilze),
    )
    .await;
    assert_eq!(mixed.status, 400, "{}", mixed.body);
    paged.extend(all_ids(base, "/audit/events?limit=2", &ilze, Some(cursor)).await);
    assert_eq!(paged, everything, "no row skipped or repeated across pages");
    assert!(paged.windows(2).all(|w| w[0] > w[1]), "newest first");

    // Every realm test, and the refused one, is an admin action in the same chain.
    let acts = get(
        base,
        "/audit/events?event=admin_action&realm=talsi",
        Some(&ilze),
    )
    .await;
    let acts: Vec<(Value, Value)> = acts.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            let detail = serde_json::from_str(e["detail"].as_str().expect("detail")).expect("json");
            (e["subject"].clone(), detail)
        })
        .collect();
    assert_eq!(acts.len(), 6, "{acts:?}");
    let (jana_subject, signed_in_act) = &acts[5];
    assert_eq!(
        signed_in_act,
        &json!({ "role": "platform-admin", "action": "realm.test", "target": "realm/talsi", "outcome": "signed_in" })
    );
    assert_eq!(acts[4].1["outcome"], "refused");
    assert_eq!(
        acts[3].1,
        json!({ "role": null, "action": "realm.test", "target": "realm/talsi", "outcome": "denied" })
    );
    assert_ne!(
        &acts[3].0, jana_subject,
        "the auditor's refusal names the auditor"
    );
    assert!(
        acts[..3]
            .iter()
            .all(|(subject, detail)| subject == jana_subject && detail["outcome"] == "refused")
    );

    // Exports stream every row of the trail; verification covers the same rows.
    let total = all_ids(base, "/audit/events?limit=1000", &ilze, None)
        .await
        .len();
    let (status, content_type, csv) = get_text(base, "/audit/export?format=csv", &ilze).await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "text/csv; charset=utf-8")
    );
    assert!(csv.starts_with("id,at,event,realm,"), "{csv}");
    assert_eq!(csv.lines().count(), total + 1);
    let (status, content_type, jsonl) = get_text(base, "/audit/export?realm=talsi", &robot).await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "application/x-ndjson")
    );
    assert!(
        jsonl
            .lines()
            .all(|l| serde_json::from_str::<Value>(l).expect("json")["realm"] == "talsi")
    );
    assert_eq!(
        get(base, "/audit/export?format=xml", Some(&ilze))
            .await
            .status,
        400
    );
    let verify = get(base, "/audit/verify", Some(&robot)).await;
    assert_eq!(verify.status, 200, "{}", verify.body);
    assert_eq!(verify.body["intact"], true);
    assert_eq!(verify.body["rows_checked"], json!(total));
    // Three sign-ins and three admin actions were appended since `everything` was read.
    assert_eq!(verify.body["head"]["id"], json!(everything[0] + 6));
    assert_eq!(get(base, "/audit/verify", Some(&janis)).await.status, 403);
    server.stop().await;
}

#[tokio::test]
async fn identity_and_audit_endpoints_against_a_real_realm_on_sqlite() {
    let Some(ldap) = Slapd::start(Municipality::Talsi).await else {
        return;
    };
    identity_and_audit(&ldap, None).await;
}

#[tokio::test]
async fn identity_and_audit_endpoints_against_a_real_realm_on_postgres() {
    let Some(ldap) = Slapd::start(Municipality::Talsi).await else {
        return;
    };
    let Some(pg) = Postgres::start().await else {
        return;
    };
    identity_and_audit(&ldap, Some(pg.fresh_database().await)).await;
}

#[tokio::test]
async fn the_contract_is_served_as_openapi_and_as_a_self_contained_page() {
    let server = start_demo(vec![]).await;
    let document = get(&server.base, "/openapi.json", None).await;
    assert_eq!(document.status, 200);
    assert!(
        document.body["openapi"]
            .as_str()
            .expect("version")
            .starts_with("3.1")
    );
    assert!(document.body["paths"]["/api/v1/audit/events"]["get"].is_object());
    let page = browser()
        .get(format!("{}/api/v1/docs", server.base))
        .send()
        .await
        .expect("docs");
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/html")
    );
    let html = page.text().await.expect("html");
    assert!(html.contains("GET /api/v1/audit/events"), "{html}");
    assert!(html.contains("POST /api/v1/realms/{name}/test"), "{html}");
    for external in ["src=\"http", "href=\"http", "<script"] {
        assert!(
            !html.contains(external),
            "the page loads nothing from elsewhere: {external}"
        );
    }
    server.stop().await;
}

/// Where scripts/test installed schemathesis (`NOVADS_SCHEMATHESIS`); without it the test is
/// skipped, unless services are required.
fn schemathesis() -> Option<std::path::PathBuf> {
    match std::env::var_os("NOVADS_SCHEMATHESIS") {
        Some(path) => Some(path.into()),
        None if novads_testkit::services_required() => {
            panic!("NOVADS_SCHEMATHESIS is not set: scripts/test installs schemathesis")
        }
        None => {
            eprintln!("skipping: NOVADS_SCHEMATHESIS is not set (scripts/test installs it)");
            None
        }
    }
}

/// schemathesis generates requests from the served document, a bounded number per operation,
/// with a platform admin's token: no answer may be a server error, and every documented answer
/// must match its schema.
#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_schema() {
    let Some(schemathesis) = schemathesis() else {
        return;
    };
    let server = start_demo(vec![]).await;
    // A cluster that lists two Municipalities and keeps the servers written to it.
    assert!(
        server
            .state
            .set_cluster(cluster_api::fake_cluster(municipality_list()))
    );
    let base = server.base.clone();
    let anna = &dev::DEMO_USERS[0];
    let token =
        admin_support::token_at(&base, CONSOLE, CONSOLE_REDIRECT, "anna@demo", anna.password).await;
    // schemathesis keeps state in its working directory; a throwaway one keeps the tree clean.
    let workdir = tempfile::tempdir().expect("tempdir");
    let output = tokio::process::Command::new(schemathesis)
        .current_dir(workdir.path())
        .arg("run")
        .arg(format!("{base}/api/v1/openapi.json"))
        .args(["--url", &base])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--checks", "not_a_server_error,response_schema_conformance"])
        .args(["--max-examples", "25", "--request-timeout", "20"])
        .arg("--generation-deterministic")
        .output()
        .await
        .expect("schemathesis runs");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{report}");
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{report}"
    );
    server.stop().await;
}

/// The test's end of a mocked Kubernetes API (tower-test).
type ApiHandle = tower_test::mock::Handle<
    axum::http::Request<kube::client::Body>,
    axum::http::Response<kube::client::Body>,
>;

fn municipality(code: &str, realm: &str, admin_groups: &[&str], resource_version: &str) -> Value {
    json!({
        "apiVersion": "novads.io/v1alpha1",
        "kind": "Municipality",
        "metadata": { "name": code, "resourceVersion": resource_version },
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
            municipality("demo-town", "demo", &["staff"], "42"),
            municipality("talsi", "talsi", &["it-admins"], "43"),
        ],
    })
}

/// Answers `answers.len()` requests in order, each of which must list the Municipalities;
/// fails on any request beyond them.
fn municipalities_api(
    mut handle: ApiHandle,
    answers: Vec<(u16, Value)>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for (index, (status, body)) in answers.into_iter().enumerate() {
            let (request, send) =
                tokio::time::timeout(std::time::Duration::from_secs(5), handle.next_request())
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| panic!("request {index} never came"));
            assert_eq!(request.method(), "GET", "request {index}");
            assert_eq!(
                request.uri().path(),
                "/apis/novads.io/v1alpha1/municipalities",
                "request {index}: {}",
                request.uri()
            );
            let body = serde_json::to_vec(&body).expect("json");
            send.send_response(
                axum::http::Response::builder()
                    .status(status)
                    .body(kube::client::Body::from(body))
                    .expect("response"),
            );
        }
        if let Ok(Some((request, _))) =
            tokio::time::timeout(std::time::Duration::from_millis(100), handle.next_request()).await
        {
            panic!("unexpected request {} {}", request.method(), request.uri());
        }
    })
}

/// Municipality roles come from the cluster's Municipalities, one list per request, and
/// reach their own municipality only; without a cluster the resources answer 503.
#[tokio::test]
async fn municipalities_come_from_the_cluster_and_roles_follow_their_groups() {
    let server = start_demo(vec![]).await;
    let base = &server.base;
    let [anna, peteris] = [&dev::DEMO_USERS[0], &dev::DEMO_USERS[1]];
    let admin =
        admin_support::token_at(base, CONSOLE, CONSOLE_REDIRECT, "anna@demo", anna.password).await;
    let staff = admin_support::token_at(
        base,
        CONSOLE,
        CONSOLE_REDIRECT,
        "peteris@demo",
        peteris.password,
    )
    .await;

    let answer = get(base, "/municipalities", Some(&admin)).await;
    assert_eq!(answer.status, 503);
    assert_eq!(
        answer.problem_type(),
        "https://novads.io/problems/cluster-unavailable"
    );

    let (service, handle) = tower_test::mock::pair();
    assert!(
        server
            .state
            .set_cluster(kube::Client::new(service, "default"))
    );
    let list = municipality_list();
    let down = (
        500,
        json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 500 }),
    );
    let api = municipalities_api(
        handle,
        vec![
            (200, list.clone()),
            (200, list.clone()),
            (200, list.clone()),
            (200, list.clone()),
            (200, list.clone()),
            (200, list.clone()),
            (200, list.clone()),
            (200, list.clone()),
            down.clone(),
            down,
        ],
    );

    // Peteris is in demo's `staff`, the adminGroups of demo-town: its admin, and no more.
    let me = get(base, "/me", Some(&staff)).await;
    assert_eq!(me.body["roles"], json!(["municipality-admin"]));
    assert_eq!(me.body["municipalities"]["demo-town"]["admin"], true);
    let listed = get(base, "/municipalities", Some(&staff)).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let codes: Vec<&str> = listed
        .body
        .as_array()
        .expect("array")
        .iter()
        .map(|m| m["code"].as_str().expect("code"))
        .collect();
    assert_eq!(codes, ["demo-town"]);
    let own = get(base, "/municipalities/demo-town", Some(&staff)).await;
    assert_eq!(own.status, 200);
    assert_eq!(own.headers["etag"], "\"42\"");
    assert_eq!(own.body["spec"]["realm"], "demo");
    let other = get(base, "/municipalities/talsi", Some(&staff)).await;
    assert_eq!(other.status, 403);
    assert_eq!(
        get(base, "/municipalities/Bad_Code", Some(&staff))
            .await
            .status,
        400
    );
    // A municipality admin reads the identity configuration of its realm, not the trail.
    let realms = get(base, "/realms", Some(&staff)).await;
    assert_eq!(realms.status, 200);
    assert_eq!(realms.body.as_array().expect("array").len(), 1);
    assert_eq!(get(base, "/audit/events", Some(&staff)).await.status, 403);
    // The platform admin sees every municipality.
    let all = get(base, "/municipalities", Some(&admin)).await;
    assert_eq!(all.body.as_array().expect("array").len(), 2);

    // The cluster does not answer: no municipality role is granted, and the resources say so.
    let unreachable = get(base, "/municipalities", Some(&staff)).await;
    assert_eq!(unreachable.status, 503);
    assert_eq!(
        unreachable.problem_type(),
        "https://novads.io/problems/cluster-unreachable"
    );
    let me = get(base, "/me", Some(&staff)).await;
    assert_eq!(me.body["roles"], json!([]));
    api.await
        .expect("the API saw exactly the expected requests");
    server.stop().await;
}

/// The first `name=value` of each `Set-Cookie` of a response, joined for a `Cookie` header.
fn cookies_of(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok()?.split(';').next().map(str::to_owned))
        .collect()
}

/// What `novads dev` prints: sign in at the demo application as the demo admin, take the
/// access token it shows, and list the realms with it.
#[tokio::test]
async fn the_dev_demo_admin_gets_a_token_from_the_demo_page_and_lists_realms() {
    let server = start_dev(|_, _| {}).await;
    let base = &server.base;
    let anna = &dev::DEMO_USERS[0];
    let start = browser()
        .get(format!("{base}/demo/login"))
        .send()
        .await
        .expect("demo login");
    let mut jar = cookies_of(&start);
    let authorize = start.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let page = browser().get(&authorize).send().await.expect("authorize");
    let login_cookie = cookies_of(&page).join("; ");
    let html = page.text().await.expect("html");
    let signed_in = browser()
        .post(format!("{base}/oidc/login"))
        .header("cookie", login_cookie)
        .form(&[
            ("request", hidden(&html, "request")),
            ("csrf", hidden(&html, "csrf")),
            ("username", "anna@demo".to_owned()),
            ("password", anna.password.to_owned()),
        ])
        .send()
        .await
        .expect("login");
    assert_eq!(signed_in.status(), 303);
    jar.extend(cookies_of(&signed_in));
    let callback = signed_in.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let demo = browser()
        .get(callback)
        .header("cookie", jar.join("; "))
        .send()
        .await
        .expect("callback");
    assert_eq!(demo.status(), 200);
    let html = demo.text().await.expect("html");
    let marker = "<code class=\"token\">";
    let start = html.find(marker).expect("the page shows the access token") + marker.len();
    let token = &html[start..start + html[start..].find('<').expect("closed")];
    let realms = get(base, "/realms", Some(token)).await;
    assert_eq!(realms.status, 200, "{}", realms.body);
    assert_eq!(realms.body[0]["name"], "demo");
    let me = get(base, "/me", Some(token)).await;
    assert_eq!(me.body["roles"], json!(["platform-admin"]));
    server.stop().await;
}

/// demo-town (its security officers: demo's `staff`; its admins: `it-admins`) and
/// demo-village (administered by `staff`), for the exemption endpoints.
fn security_municipalities() -> Value {
    let mut town = municipality("demo-town", "demo", &["it-admins"], "60");
    town["spec"]["securityOfficerGroups"] = json!(["staff"]);
    json!({
        "apiVersion": "novads.io/v1alpha1",
        "kind": "MunicipalityList",
        "metadata": { "resourceVersion": "70" },
        "items": [town, municipality("demo-village", "demo", &["staff"], "61")],
    })
}

/// One request the exemption test expects of the cluster, and the answer it gets.
struct Expected {
    method: &'static str,
    path: String,
    /// A part the query must contain.
    query: &'static str,
    check: Box<dyn FnOnce(&Value) + Send>,
    status: u16,
    body: Value,
}

fn expected(method: &'static str, path: &str, status: u16, body: Value) -> Expected {
    Expected {
        method,
        path: path.to_owned(),
        query: "",
        check: Box::new(|_| {}),
        status,
        body,
    }
}

/// Answers exactly `script`, in order, checking each request; fails on any other.
fn cluster_script(mut handle: ApiHandle, script: Vec<Expected>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for (index, step) in script.into_iter().enumerate() {
            let (request, send) =
                tokio::time::timeout(std::time::Duration::from_secs(5), handle.next_request())
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| {
                        panic!("request {index} ({} {}) never came", step.method, step.path)
                    });
            assert_eq!(
                request.method(),
                step.method,
                "request {index}: {}",
                request.uri()
            );
            assert_eq!(request.uri().path(), step.path, "request {index}");
            let query = request.uri().query().unwrap_or_default().to_owned();
            assert!(
                query.contains(step.query),
                "request {index}: query {query:?}"
            );
            let bytes = axum::body::to_bytes(axum::body::Body::new(request.into_body()), 1 << 20)
                .await
                .expect("body");
            let body: Value = serde_json::from_slice(&bytes).unwrap_or_default();
            (step.check)(&body);
            send.send_response(
                axum::http::Response::builder()
                    .status(step.status)
                    .body(kube::client::Body::from(
                        serde_json::to_vec(&step.body).expect("json"),
                    ))
                    .expect("response"),
            );
        }
        if let Ok(Some((request, _))) =
            tokio::time::timeout(std::time::Duration::from_millis(100), handle.next_request()).await
        {
            panic!("unexpected request {} {}", request.method(), request.uri());
        }
    })
}

/// Exemptions are granted by a platform admin or the municipality's security officer alone,
/// approved by the token's subject, written by server-side apply as `novads-api`, read by
/// auditors and the municipality's roles, revoked by deletion, and every grant, revocation
/// and refusal is in the audit trail.
#[tokio::test]
async fn exemptions_are_granted_and_revoked_by_security_officers_only_and_audited() {
    let server = start_demo(vec![]).await;
    let base = &server.base;
    let [anna, peteris] = [&dev::DEMO_USERS[0], &dev::DEMO_USERS[1]];
    let admin =
        admin_support::token_at(base, CONSOLE, CONSOLE_REDIRECT, "anna@demo", anna.password).await;
    let officer = admin_support::token_at(
        base,
        CONSOLE,
        CONSOLE_REDIRECT,
        "peteris@demo",
        peteris.password,
    )
    .await;
    let auditor = robot_token(base).await;
    let expires = (chrono::Utc::now() + chrono::Duration::days(180))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let grant = json!({
        "name": "legacy-records",
        "check": "image.in-support",
        "subjects": ["records"],
        "reason": "The records system needs Debian 10 until its migration in May.",
        "expires": expires,
    });
    let post = |path: &str, token: &str, body: &Value| {
        let request = browser()
            .post(format!("{base}/api/v1{path}"))
            .bearer_auth(token)
            .json(body);
        async move { Answer::from(request.send().await.expect("post")).await }
    };
    let delete = |path: &str, token: &str| {
        let request = browser()
            .delete(format!("{base}/api/v1{path}"))
            .bearer_auth(token);
        async move { Answer::from(request.send().await.expect("delete")).await }
    };
    const TOWN: &str = "/municipalities/demo-town/exemptions";

    // Without a cluster there is nowhere to write.
    let answer = post(TOWN, &officer, &grant).await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(
        answer.problem_type(),
        "https://novads.io/problems/cluster-unavailable"
    );

    // Asked before the cluster is there: the subject needs no cluster.
    let me = get(base, "/me", Some(&officer)).await;
    let officer_subject = me.body["subject"].as_str().unwrap_or_default().to_owned();
    let (service, handle) = tower_test::mock::pair();
    assert!(
        server
            .state
            .set_cluster(kube::Client::new(service, "default"))
    );
    let list = || {
        expected(
            "GET",
            "/apis/novads.io/v1alpha1/municipalities",
            200,
            security_municipalities(),
        )
    };
    let object_path =
        "/apis/novads.io/v1alpha1/namespaces/muni-demo-town/securityexemptions/legacy-records";
    let not_found = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404});
    let written = json!({
        "apiVersion": "novads.io/v1alpha1",
        "kind": "SecurityExemption",
        "metadata": {"name": "legacy-records", "namespace": "muni-demo-town",
                     "creationTimestamp": "2026-12-05T01:00:00Z", "resourceVersion": "80"},
        "spec": {"check": "image.in-support", "subjects": ["records"],
                 "reason": "The records system needs Debian 10 until its migration in May.",
                 "approver": officer_subject, "expires": expires},
    });
    let approver = officer_subject.clone();
    let script = vec![
        // 1. The security officer grants: looked for first, then applied as novads-api.
        list(),
        expected("GET", object_path, 404, not_found.clone()),
        Expected {
            query: "fieldManager=novads-api",
            check: Box::new(move |body: &Value| {
                assert_eq!(body["apiVersion"], "novads.io/v1alpha1");
                assert_eq!(body["kind"], "SecurityExemption");
                assert_eq!(
                    body["spec"]["approver"], approver,
                    "the token's subject approves"
                );
                assert_eq!(body["spec"]["check"], "image.in-support");
            }),
            ..expected("PATCH", object_path, 201, written.clone())
        },
        // 2. A name that exists is not taken over.
        list(),
        expected("GET", object_path, 200, written.clone()),
        // 3. demo-village's admin (the same person) cannot exempt demo-village.
        list(),
        // 4. The platform admin: an expiry two years ahead, a platform check, an unknown field.
        list(),
        list(),
        list(),
        // 5. The auditor reads and cannot grant.
        list(),
        expected(
            "GET",
            "/apis/novads.io/v1alpha1/namespaces/muni-demo-town/securityexemptions",
            200,
            json!({"apiVersion": "novads.io/v1alpha1", "kind": "SecurityExemptionList",
                   "metadata": {"resourceVersion": "81"}, "items": [written.clone()]}),
        ),
        list(),
        // 6. The cluster fails the deletion; then the officer revokes; a second revocation
        //    finds nothing.
        list(),
        expected("GET", object_path, 200, written.clone()),
        expected(
            "DELETE",
            object_path,
            500,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 500}),
        ),
        list(),
        expected("GET", object_path, 200, written.clone()),
        expected("DELETE", object_path, 200, written.clone()),
        list(),
        expected("GET", object_path, 404, not_found),
        // 7. The platform admin reads the trail.
        list(),
    ];
    let api = cluster_script(handle, script);

    let granted = post(TOWN, &officer, &grant).await;
    assert_eq!(granted.status, 201, "{}", granted.body);
    assert_eq!(granted.body["approver"], officer_subject.as_str());
    assert_eq!(granted.body["state"], "active");
    let again = post(TOWN, &officer, &grant).await;
    assert_eq!(again.status, 409, "{}", again.body);

    let village = post("/municipalities/demo-village/exemptions", &officer, &grant).await;
    assert_eq!(village.status, 403, "{}", village.body);
    assert!(
        village.body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot exempt themselves")
    );

    let mut too_long = grant.clone();
    too_long["expires"] = json!((chrono::Utc::now() + chrono::Duration::days(730)).to_rfc3339());
    let mut platform = grant.clone();
    platform["check"] = json!("audit.chain-intact");
    let mut unknown_field = grant.clone();
    unknown_field["approver"] = json!("someone-else");
    for (body, says) in [
        (&too_long, "more than 365 days ahead"),
        (&platform, "platform check"),
        (&unknown_field, "unknown field"),
    ] {
        let answer = post(TOWN, &admin, body).await;
        assert_eq!(answer.status, 400, "{}", answer.body);
        assert!(
            answer.body["detail"]
                .as_str()
                .unwrap_or_default()
                .contains(says),
            "{}",
            answer.body
        );
    }

    let listed = get(base, TOWN, Some(&auditor)).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(listed.body[0]["name"], "legacy-records");
    assert_eq!(listed.body[0]["state"], "active");
    assert_eq!(post(TOWN, &auditor, &grant).await.status, 403);

    let failed = delete(&format!("{TOWN}/legacy-records"), &officer).await;
    assert_eq!(failed.status, 503, "{}", failed.body);
    let revoked = delete(&format!("{TOWN}/legacy-records"), &officer).await;
    assert_eq!(revoked.status, 204, "{}", revoked.body);
    assert_eq!(
        delete(&format!("{TOWN}/legacy-records"), &officer)
            .await
            .status,
        404
    );

    let trail = get(base, "/audit/events?event=admin_action", Some(&admin)).await;
    assert_eq!(trail.status, 200, "{}", trail.body);
    let acts: Vec<(String, String)> = trail.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            let detail: Value =
                serde_json::from_str(e["detail"].as_str().unwrap_or("{}")).unwrap_or_default();
            (
                detail["action"].as_str().unwrap_or_default().to_owned(),
                detail["outcome"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    for act in [
        ("exemption.grant", "granted"),
        ("exemption.grant", "denied"),
        ("exemption.revoke", "revoked"),
        ("exemption.revoke", "revocation_failed"),
    ] {
        assert!(
            acts.iter().any(|(a, o)| (a.as_str(), o.as_str()) == act),
            "{act:?} not in {acts:?}"
        );
    }
    api.await
        .expect("the cluster saw exactly the expected requests");
    server.stop().await;
}

/// The security monitor's findings: without a cluster from the server's own evaluation (for
/// platform roles, the only ones there are), with one from the Municipalities' status and the
/// monitor's Reports, each municipality's shown to its own roles only.
#[tokio::test]
async fn security_findings_come_from_the_own_evaluation_or_from_the_clusters_reports() {
    let server = start_demo(vec![]).await;
    let base = &server.base;
    let [anna, peteris] = [&dev::DEMO_USERS[0], &dev::DEMO_USERS[1]];
    let admin =
        admin_support::token_at(base, CONSOLE, CONSOLE_REDIRECT, "anna@demo", anna.password).await;
    let officer = admin_support::token_at(
        base,
        CONSOLE,
        CONSOLE_REDIRECT,
        "peteris@demo",
        peteris.password,
    )
    .await;
    let auditor = robot_token(base).await;

    // Nothing evaluated yet: nothing to show.
    let none = get(base, "/security/results", Some(&admin)).await;
    assert_eq!((none.status, none.body.clone()), (200, json!([])));

    // The server's own evaluation of its federation checks (novads dev does this every 60 s).
    let now = chrono::Utc::now();
    let facts =
        novads_api::compliance::own::own_facts(server.state.config(), server.state.db(), now).await;
    let evaluation =
        novads_monitor::evaluate(&novads_monitor::shipped::policies(), &facts, &[], now);
    server.state.set_latest_evaluation(evaluation);
    let lockout = get(
        base,
        "/security/results?municipality=demo&check=auth.lockout",
        Some(&admin),
    )
    .await;
    assert_eq!(lockout.status, 200, "{}", lockout.body);
    assert_eq!(
        lockout.body.as_array().map(Vec::len),
        Some(1),
        "{}",
        lockout.body
    );
    assert_eq!(lockout.body[0]["result"], "pass");
    assert_eq!(lockout.body[0]["subject"], "Realm/demo");
    assert!(
        lockout.body[0]["legal_basis"]
            .as_array()
            .is_some_and(|b| !b.is_empty())
    );
    let warnings = get(base, "/security/results?result=warn", Some(&auditor)).await;
    let checks: Vec<&str> = warnings
        .body
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["check"].as_str().unwrap_or_default())
        .collect();
    assert!(checks.contains(&"auth.password-policy"), "{checks:?}");
    assert_eq!(
        get(base, "/security/results?result=bad", Some(&admin))
            .await
            .status,
        400
    );
    let compliance = get(base, "/security/compliance", Some(&admin)).await;
    assert_eq!(compliance.status, 200, "{}", compliance.body);
    assert_eq!(compliance.body[0]["municipality"], "demo");
    assert_eq!(
        (
            compliance.body[0]["passed"].clone(),
            compliance.body[0]["warnings"].clone()
        ),
        (json!(7), json!(3)),
        "{}",
        compliance.body
    );
    // Without a cluster nobody holds a municipality role.
    assert_eq!(
        get(base, "/security/compliance", Some(&officer))
            .await
            .status,
        403
    );

    // With a cluster: the Municipalities' status and the monitor's Reports.
    let (service, handle) = tower_test::mock::pair();
    assert!(
        server
            .state
            .set_cluster(kube::Client::new(service, "default"))
    );
    let mut municipalities = security_municipalities();
    municipalities["items"][0]["status"] = json!({
        "compliance": {"passed": 20, "failed": 2, "warnings": 1, "lastEvaluated": "2026-12-05T01:00:00Z"}
    });
    let list = || {
        expected(
            "GET",
            "/apis/novads.io/v1alpha1/municipalities",
            200,
            municipalities.clone(),
        )
    };
    let report = |namespace: &str| {
        json!({
            "apiVersion": "openreports.io/v1alpha1",
            "kind": "Report",
            "metadata": {"name": "novads-compliance", "namespace": namespace},
            "source": "novads-monitor",
            "summary": {"pass": 20, "fail": 2, "warn": 1, "error": 0, "skip": 1},
            "results": [
                {"source": "novads-monitor", "policy": "backup.recent", "category": "backup",
                 "result": "fail", "severity": "high", "message": "pēdējā rezerves kopija pirms 40 h",
                 "properties": {"subject": "VirtualServer/records", "legalBasis": "NIS2 Art. 21(2)(c); MK 397 (point not confirmed)"}},
                {"source": "novads-monitor", "policy": "image.in-support", "category": "image",
                 "result": "skip", "severity": "critical", "message": "izņēmums legacy-records",
                 "properties": {"subject": "VirtualServer/records", "legalBasis": "NIS2 Art. 21(2)(e)", "exemption": "legacy-records"}},
            ],
        })
    };
    let reports = json!({
        "apiVersion": "openreports.io/v1alpha1",
        "kind": "ReportList",
        "metadata": {"resourceVersion": "90"},
        // A namespace without a Municipality is nobody's.
        "items": [report("muni-demo-town"), report("muni-elsewhere")],
    });
    let reports_path = "/apis/openreports.io/v1alpha1/reports";
    let api = cluster_script(
        handle,
        vec![
            list(),
            list(),
            Expected {
                query: "labelSelector=app.kubernetes.io%2Fmanaged-by%3Dnovads-monitor",
                ..expected("GET", reports_path, 200, reports.clone())
            },
            list(),
            Expected {
                query: "labelSelector=",
                ..expected("GET", reports_path, 200, reports)
            },
        ],
    );
    // Peteris: security officer of demo-town, admin of demo-village; both are his to read.
    let summary = get(base, "/security/compliance", Some(&officer)).await;
    assert_eq!(summary.status, 200, "{}", summary.body);
    assert_eq!(
        summary.body,
        json!([
            {"municipality": "demo-town", "passed": 20, "failed": 2, "warnings": 1,
             "last_evaluated": "2026-12-05T01:00:00Z"},
            {"municipality": "demo-village", "passed": 0, "failed": 0, "warnings": 0,
             "last_evaluated": null},
        ])
    );
    let backups = get(
        base,
        "/security/results?check=backup.recent",
        Some(&officer),
    )
    .await;
    assert_eq!(backups.status, 200, "{}", backups.body);
    assert_eq!(
        backups.body,
        json!([{
            "municipality": "demo-town", "check": "backup.recent", "result": "fail",
            "severity": "high", "subject": "VirtualServer/records",
            "message": "pēdējā rezerves kopija pirms 40 h",
            "legal_basis": ["NIS2 Art. 21(2)(c)", "MK 397 (point not confirmed)"],
            "exemption": null,
        }])
    );
    let skipped = get(base, "/security/results?result=skip", Some(&admin)).await;
    assert_eq!(
        skipped.body.as_array().map(Vec::len),
        Some(1),
        "{}",
        skipped.body
    );
    assert_eq!(skipped.body[0]["exemption"], "legacy-records");
    api.await
        .expect("the cluster saw exactly the expected requests");
    server.stop().await;
}
