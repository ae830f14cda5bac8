// Each test binary uses its own part of this module.
#![allow(dead_code)]

//! Tokens from the real sign-in flow and calls of the admin API, for the tests of its cluster
//! resources: the authorisation code flow with PKCE at a public `console` client.

use novads_api::config::{AdminApiConfig, ClientConfig, Config, StaticUserConfig};
use novads_api::dev;
use reqwest::header::HeaderMap;
use serde_json::Value;

/// The public client portals sign in through.
pub const CONSOLE: &str = "console";
const CONSOLE_REDIRECT: &str = "http://127.0.0.1:9/callback";
/// RFC 7636 Appendix B.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

/// The dev configuration with the admin API open to `console` and these demo-realm users
/// besides anna and peteris, each `(name, groups)` with anna's password: the demo realm's
/// groups in `platform_admin_groups` and `auditor_groups` make platform roles.
pub fn admin_config(
    config: &mut Config,
    users: &[(&str, &[&str])],
    platform_admin_groups: &[&str],
    auditor_groups: &[&str],
) {
    config.clients.push(ClientConfig {
        client_id: CONSOLE.into(),
        realm: dev::DEMO_REALM.into(),
        redirect_uris: vec![CONSOLE_REDIRECT.into()],
        post_logout_redirect_uris: vec![],
        secret_hash: None,
        public: true,
        id_token_signed_response_alg: Default::default(),
    });
    config.admin_api = AdminApiConfig {
        clients: vec![CONSOLE.into()],
        platform_admin_groups: platform_admin_groups.iter().map(|g| (*g).into()).collect(),
        auditor_groups: auditor_groups.iter().map(|g| (*g).into()).collect(),
        service_clients: vec![],
        cors_origins: vec![],
        rate_limit: Default::default(),
    };
    let anna = &dev::DEMO_USERS[0];
    let realm = config
        .realms
        .iter_mut()
        .find(|r| r.name == dev::DEMO_REALM)
        .expect("demo realm");
    let directory = realm.static_directory.as_mut().expect("static users");
    for (name, groups) in users {
        directory.users.push(StaticUserConfig {
            username: (*name).to_owned(),
            password_hash: anna.password_hash.to_owned(),
            email: None,
            name: None,
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            disabled: false,
        });
    }
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

/// Signs `login` in at the console client and exchanges the code: an access token.
pub async fn token(base: &str, login: &str, password: &str) -> String {
    token_at(base, CONSOLE, CONSOLE_REDIRECT, login, password).await
}

/// Signs `login` in through `client`'s login page and exchanges the code: an access token.
pub async fn token_at(
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

/// An answer: status, headers and the JSON body (`Null` when not JSON).
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn problem_type(&self) -> &str {
        self.body["type"].as_str().unwrap_or("")
    }
}

/// `method` on `/api/v1{path}` with `token`, and a JSON `body` of `content_type` when given.
pub async fn call(
    base: &str,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<(&str, &Value)>,
) -> Answer {
    call_with(base, method, path, token, body, &[]).await
}

/// [`call`] with extra request headers.
pub async fn call_with(
    base: &str,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<(&str, &Value)>,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = browser()
        .request(method, format!("{base}/api/v1{path}"))
        .bearer_auth(token);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some((content_type, body)) = body {
        request = request
            .header("content-type", content_type)
            .body(serde_json::to_vec(body).expect("json"));
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or_default();
    Answer {
        status,
        headers,
        body,
    }
}
