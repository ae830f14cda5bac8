//! The admin API at `/api/v1` over HTTP, with tokens from the real sign-in flow: the
//! authorisation code flow with PKCE for people, `client_credentials` for services.

use novads_api::config::{AdminApiConfig, ClientConfig, Config, PlatformRole, ServiceClientConfig};
use novads_api::dev;
use reqwest::header::{HeaderMap, WWW_AUTHENTICATE};
use serde_json::Value;

mod support;
use support::{Running, start_dev};

/// `demo-client-secret`, argon2id.
const ROBOT_SECRET_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$0zRucgKNwySQRxoit2ER+w$iDkVZbdhJA9fQrzaNsG0gIjqer7wb69X+sWub423aug";
const ROBOT_SECRET: &str = "demo-client-secret";
/// The public client portals sign in through.
const CONSOLE: &str = "console";
const CONSOLE_REDIRECT: &str = "http://127.0.0.1:9/callback";
/// RFC 7636 Appendix B.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

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

/// Signs `login` in through `client`'s login page and exchanges the code: an access token.
async fn user_token(
    base: &str,
    client: &str,
    redirect: &str,
    login: &str,
    password: &str,
) -> String {
    let redirect_encoded: String =
        url::form_urlencoded::byte_serialize(redirect.as_bytes()).collect();
    let authorize = format!(
        "{base}/oidc/authorize?response_type=code&client_id={client}&scope=openid&\
         redirect_uri={redirect_encoded}&code_challenge={CHALLENGE}&code_challenge_method=S256"
    );
    let page = browser().get(authorize).send().await.expect("authorize");
    assert_eq!(page.status(), 200, "login page");
    let cookie = page.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .split(';')
        .next()
        .expect("cookie")
        .to_owned();
    let html = page.text().await.expect("html");
    let response = browser()
        .post(format!("{base}/oidc/login"))
        .header("cookie", cookie)
        .form(&[
            ("request", hidden(&html, "request")),
            ("csrf", hidden(&html, "csrf")),
            ("username", login.to_owned()),
            ("password", password.to_owned()),
        ])
        .send()
        .await
        .expect("login post");
    assert_eq!(response.status(), 303, "{login} signs in");
    let location = response.headers()["location"].to_str().expect("ascii");
    let code = url::Url::parse(location)
        .expect("url")
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .expect("code");
    let response = browser()
        .post(format!("{base}/oidc/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", redirect),
            ("client_id", client),
            ("code_verifier", VERIFIER),
        ])
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
    let other = user_token(
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

    let admin = user_token(base, CONSOLE, CONSOLE_REDIRECT, "anna@demo", anna.password).await;
    let answer = get(base, "/me", Some(&admin)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["roles"], serde_json::json!(["platform-admin"]));
    assert_eq!(answer.body["realm"], "demo");

    let staff = user_token(
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
