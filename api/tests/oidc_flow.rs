//! The authorization code flow with PKCE, driven by an independent OpenID Connect client
//! library (the `openidconnect` crate) against a running novads, plus the attacks a provider
//! must withstand.

use novads_api::config::ClientConfig;
use novads_api::dev;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm, CoreProviderMetadata,
    CoreUserInfoClaims,
};
use openidconnect::{
    AccessTokenHash, AuthorizationCode, ClientId, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, RedirectUrl, Scope, TokenResponse,
};

mod support;
use support::{Running, start_dev};

/// `demo-client-secret`, argon2id.
const SECRET_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$0zRucgKNwySQRxoit2ER+w$iDkVZbdhJA9fQrzaNsG0gIjqer7wb69X+sWub423aug";
const CONFIDENTIAL_REDIRECT: &str = "https://portal.demo.lv/cb";

/// `novads` on the dev configuration (demo realm, public client `demo-app`, demo application)
/// plus a confidential client `portal`.
async fn start() -> Running {
    start_dev(|config, _| {
        config.clients.push(ClientConfig {
            client_id: "portal".into(),
            realm: dev::DEMO_REALM.into(),
            redirect_uris: vec![CONFIDENTIAL_REDIRECT.into()],
            post_logout_redirect_uris: vec![],
            secret_hash: Some(SECRET_HASH.into()),
            public: false,
            id_token_signed_response_alg: Default::default(),
        });
    })
    .await
}

/// The HTTP client the OIDC library talks through (no redirects followed).
async fn http(
    request: openidconnect::HttpRequest,
) -> Result<openidconnect::HttpResponse, std::io::Error> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(std::io::Error::other)?;
    let (parts, body) = request.into_parts();
    let response = client
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await
        .map_err(std::io::Error::other)?;
    let mut builder = openidconnect::http::Response::builder().status(response.status());
    for (name, value) in response.headers() {
        builder = builder.header(name, value);
    }
    let bytes = response.bytes().await.map_err(std::io::Error::other)?;
    builder.body(bytes.to_vec()).map_err(std::io::Error::other)
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// The value of `<input name="NAME" value="...">` in a page.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).expect("field present") + marker.len();
    let end = html[start..].find('"').expect("value closed") + start;
    html[start..end].to_owned()
}

/// What the login page gave the browser.
struct LoginForm {
    request: String,
    csrf: String,
    cookie: String,
}

async fn open_login_page(url: &str) -> (LoginForm, String) {
    let response = browser().get(url).send().await.expect("authorize");
    assert_eq!(response.status(), 200, "login page");
    let cookie = response
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .expect("CSRF cookie")
        .to_owned();
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let html = response.text().await.expect("html");
    (
        LoginForm {
            request: hidden(&html, "request"),
            csrf: hidden(&html, "csrf"),
            cookie,
        },
        html,
    )
}

async fn submit(base: &str, form: &LoginForm, username: &str, password: &str) -> reqwest::Response {
    browser()
        .post(format!("{base}/oidc/login"))
        .header("cookie", &form.cookie)
        .form(&[
            ("request", form.request.as_str()),
            ("csrf", form.csrf.as_str()),
            ("username", username),
            ("password", password),
        ])
        .send()
        .await
        .expect("login post")
}

fn query_param(location: &str, name: &str) -> Option<String> {
    url::Url::parse(location)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[tokio::test]
async fn authorization_code_flow_with_pkce_through_an_independent_client() {
    let server = start().await;
    let demo = &dev::DEMO_USERS[0];
    let metadata = CoreProviderMetadata::discover_async(
        IssuerUrl::new(server.base.clone()).expect("issuer"),
        &http,
    )
    .await
    .expect("discovery");
    let redirect = format!("{}/demo/callback", server.base);
    let client =
        CoreClient::from_provider_metadata(metadata, ClientId::new(dev::DEMO_CLIENT.into()), None)
            .set_redirect_uri(RedirectUrl::new(redirect.clone()).expect("redirect"));
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (authorize_url, state, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("email".into()))
        .add_scope(Scope::new("profile".into()))
        .set_pkce_challenge(challenge)
        .url();

    let (form, html) = open_login_page(authorize_url.as_str()).await;
    assert!(html.contains("lang=\"lv\""), "Latvian by default");

    // A wrong password: the same generic message, and no code.
    let wrong = submit(&server.base, &form, "anna@demo", "wrong").await;
    assert_eq!(wrong.status(), 200);
    let page = wrong.text().await.expect("html");
    assert!(
        page.contains("Nepareizs lietotājvārds vai parole."),
        "{page}"
    );

    let response = submit(
        &server.base,
        &form,
        &format!("{}@demo", demo.username),
        demo.password,
    )
    .await;
    assert_eq!(response.status(), 303);
    let location = response.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(location.starts_with(&redirect), "{location}");
    assert_eq!(
        query_param(&location, "state").as_deref(),
        Some(state.secret().as_str())
    );
    assert_eq!(
        query_param(&location, "iss").as_deref(),
        Some(server.base.as_str())
    );
    let code = query_param(&location, "code").expect("code");

    let tokens = client
        .exchange_code(AuthorizationCode::new(code.clone()))
        .expect("token endpoint known")
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .expect("token exchange");
    let id_token = tokens.id_token().expect("ID token");
    let verifier = client
        .id_token_verifier()
        .set_allowed_algs([CoreJwsSigningAlgorithm::EcdsaP256Sha256]);
    let claims = id_token
        .claims(&verifier, &nonce)
        .expect("ID token verifies against JWKS");
    assert_eq!(claims.subject().as_str(), "demo:anna");
    assert_eq!(
        claims.preferred_username().map(|u| u.as_str()),
        Some("anna@demo")
    );
    assert_eq!(
        claims.email().map(|e| e.as_str()),
        Some("anna@demo.novads.lv")
    );
    assert_eq!(
        claims.name().and_then(|n| n.get(None)).map(|n| n.as_str()),
        Some(demo.name)
    );
    let expected_hash = AccessTokenHash::from_token(
        tokens.access_token(),
        id_token.signing_alg().expect("alg"),
        id_token.signing_key(&verifier).expect("key"),
    )
    .expect("hash");
    assert_eq!(claims.access_token_hash(), Some(&expected_hash));

    let userinfo: CoreUserInfoClaims = client
        .user_info(
            tokens.access_token().clone(),
            Some(claims.subject().clone()),
        )
        .expect("userinfo endpoint known")
        .request_async(&http)
        .await
        .expect("userinfo");
    assert_eq!(userinfo.subject().as_str(), "demo:anna");
    // The standard claims the `profile` and `email` scopes grant, as Grafana reads them.
    assert_eq!(
        userinfo.preferred_username().map(|u| u.as_str()),
        Some("anna@demo")
    );
    assert_eq!(
        userinfo
            .name()
            .and_then(|n| n.get(None))
            .map(|n| n.as_str()),
        Some(demo.name)
    );
    assert_eq!(
        userinfo.email().map(|e| e.as_str()),
        Some("anna@demo.novads.lv")
    );

    // The code is single-use.
    let replay = client
        .exchange_code(AuthorizationCode::new(code))
        .expect("token endpoint known")
        .set_pkce_verifier(openidconnect::PkceCodeVerifier::new("x".repeat(50)))
        .request_async(&http)
        .await;
    let error = format!("{replay:?}");
    assert!(error.contains("invalid_grant"), "{error}");
    server.stop().await;
}

/// Signs in through the login page and returns the code.
async fn code_for(server: &Running, query: &str) -> String {
    let (form, _) = open_login_page(&format!("{}/oidc/authorize?{query}", server.base)).await;
    let demo = &dev::DEMO_USERS[0];
    let response = submit(
        &server.base,
        &form,
        &format!("{}@demo", demo.username),
        demo.password,
    )
    .await;
    assert_eq!(response.status(), 303);
    let location = response.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    query_param(&location, "code").expect("code")
}

#[tokio::test]
async fn confidential_client_authenticates_and_pkce_is_enforced() {
    let server = start().await;
    let token = |form: Vec<(&'static str, String)>, basic: Option<(&'static str, &'static str)>| {
        let url = format!("{}/oidc/token", server.base);
        async move { post_form(url, form, basic).await }
    };
    let redirect = urlencode(CONFIDENTIAL_REDIRECT);
    // Without PKCE: allowed for a confidential client, which must authenticate.
    let code = code_for(
        &server,
        &format!(
            "response_type=code&client_id=portal&scope=openid&redirect_uri={redirect}&state=s1"
        ),
    )
    .await;
    let base = vec![
        ("grant_type", "authorization_code".to_owned()),
        ("code", code.clone()),
        ("redirect_uri", CONFIDENTIAL_REDIRECT.to_owned()),
    ];
    let (status, body) = token(base.clone(), Some(("portal", "wrong-secret"))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    // A verifier where no challenge was sent is refused (PKCE downgrade).
    let mut with_verifier = base.clone();
    with_verifier.push(("code_verifier", "a".repeat(43)));
    let (status, body) = token(with_verifier, Some(("portal", "demo-client-secret"))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    // The failed exchange spent the code: it is single use whatever happened.
    let (status, body) = token(base, Some(("portal", "demo-client-secret"))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );

    // client_secret_post works too.
    let code = code_for(
        &server,
        &format!("response_type=code&client_id=portal&scope=openid&redirect_uri={redirect}"),
    )
    .await;
    let (status, body) = token(
        vec![
            ("grant_type", "authorization_code".into()),
            ("code", code),
            ("redirect_uri", CONFIDENTIAL_REDIRECT.into()),
            ("client_id", "portal".into()),
            ("client_secret", "demo-client-secret".into()),
        ],
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");

    // Public client: a wrong verifier fails.
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    let demo_redirect = format!("{}/demo/callback", server.base);
    let code = code_for(
        &server,
        &format!(
            "response_type=code&client_id=demo-app&scope=openid&redirect_uri={}&code_challenge={challenge}&code_challenge_method=S256",
            urlencode(&demo_redirect)
        ),
    )
    .await;
    let (status, body) = token(
        vec![
            ("grant_type", "authorization_code".into()),
            ("code", code),
            ("redirect_uri", demo_redirect),
            ("client_id", "demo-app".into()),
            (
                "code_verifier",
                "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXj".into(),
            ),
        ],
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    server.stop().await;
}

fn urlencode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

#[tokio::test]
async fn attacks_on_the_authorization_and_login_endpoints() {
    let server = start().await;
    let demo_redirect = format!("{}/demo/callback", server.base);
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    let authorize = |redirect: &str, extra: &str| {
        format!(
            "{}/oidc/authorize?response_type=code&client_id=demo-app&scope=openid&redirect_uri={}&code_challenge={challenge}&code_challenge_method=S256{extra}",
            server.base,
            urlencode(redirect)
        )
    };

    // Open redirect: an unregistered redirect URI gets our error page, never a redirect.
    for evil in [
        "https://evil.example/cb".to_owned(),
        format!("{demo_redirect}.evil.example"),
        format!("{demo_redirect}/../../evil"),
    ] {
        let response = browser()
            .get(authorize(&evil, ""))
            .send()
            .await
            .expect("get");
        assert_eq!(response.status(), 400, "{evil}");
        assert!(response.headers().get("location").is_none());
    }

    // Protocol errors go back to the (verified) client with state.
    let response = browser()
        .get(authorize(&demo_redirect, "&state=abc&prompt=none"))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 303);
    let location = response.headers()["location"].to_str().expect("ascii");
    assert_eq!(
        query_param(location, "error").as_deref(),
        Some("login_required")
    );
    assert_eq!(query_param(location, "state").as_deref(), Some("abc"));

    // Reflected values are escaped.
    let (_, html) = open_login_page(&authorize(
        &demo_redirect,
        "&login_hint=%22%3E%3Cscript%3Ealert(1)%3C%2Fscript%3E",
    ))
    .await;
    assert!(!html.contains("<script>alert(1)</script>"));
    assert!(html.contains("&#34;&#62;&#60;script&#62;"), "{html}");

    // CSRF: without the cookie, or with another page's token, the form is refused.
    let (form, _) = open_login_page(&authorize(&demo_redirect, "")).await;
    let forged = LoginForm {
        request: form.request.clone(),
        csrf: form.csrf.clone(),
        cookie: "novads_csrf=forged".into(),
    };
    let demo = &dev::DEMO_USERS[0];
    let response = submit(&server.base, &forged, "anna@demo", demo.password).await;
    assert_eq!(response.status(), 403);
    // An unknown or expired request.
    let stale = LoginForm {
        request: "x".repeat(43),
        csrf: form.csrf.clone(),
        cookie: form.cookie.clone(),
    };
    let response = submit(&server.base, &stale, "anna@demo", demo.password).await;
    assert_eq!(response.status(), 410);
    // The genuine form still works after the forgeries.
    let response = submit(&server.base, &form, "anna@demo", demo.password).await;
    assert_eq!(response.status(), 303);

    // English on request.
    let (_, html) = open_login_page(&authorize(&demo_redirect, "&ui_locales=en")).await;
    assert!(html.contains("lang=\"en\"") && html.contains("Sign in"));

    // Tokens that were not signed by us are refused by userinfo.
    let none_token = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"at+jwt"}"#),
        b64(&format!(
            r#"{{"iss":"{}","sub":"demo:anna","exp":9999999999}}"#,
            server.base
        ))
    );
    let response = browser()
        .get(format!("{}/oidc/userinfo", server.base))
        .bearer_auth(none_token)
        .send()
        .await
        .expect("userinfo");
    assert_eq!(response.status(), 401);
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .expect("ascii")
            .contains("invalid_token")
    );
    server.stop().await;
}

fn b64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

/// Journey 3: a Talsi colleague in `vpvkac-staff` signs in to Ventspils's client-service
/// application because Ventspils trusts Talsi for that group; a Talsi accountant is refused
/// with `access_denied`, and the audit trail says `trust_denied`.
#[tokio::test]
async fn trusted_realm_users_reach_a_trusting_realms_application() {
    use novads_testkit::fixtures::talsi;
    use novads_testkit::{Municipality, Slapd};
    let Some(ldap) = Slapd::start(Municipality::Talsi).await else {
        return;
    };
    let (server, db_url) = start_with_talsi(&ldap).await;
    let base = server.base.clone();
    let redirect = format!("{base}/demo/callback");
    let authorize = format!(
        "{base}/oidc/authorize?response_type=code&client_id=demo-app&scope=openid&state=st&redirect_uri={}&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256",
        urlencode(&redirect)
    );
    let (form, _) = open_login_page(&authorize).await;
    let admitted = submit(&base, &form, &talsi::JANA.login(), talsi::JANA.password).await;
    assert_eq!(admitted.status(), 303);
    let location = admitted.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(query_param(&location, "code").is_some(), "{location}");

    let (form, _) = open_login_page(&authorize).await;
    let refused = submit(&base, &form, &talsi::ILZE.login(), talsi::ILZE.password).await;
    assert_eq!(refused.status(), 303);
    let location = refused.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(location.starts_with(&redirect), "{location}");
    assert_eq!(
        query_param(&location, "error").as_deref(),
        Some("access_denied")
    );
    assert_eq!(query_param(&location, "state").as_deref(), Some("st"));

    let rows = audit_events(&db_url).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["event"], "login_succeeded");
    assert_eq!(rows[0]["client_id"], "demo-app");
    assert_eq!(rows[1]["reason"], "trust_denied");
    assert_eq!(rows[1]["username"], "ilze@talsi");
    server.stop().await;
}

/// With Talsi's directory down, the login page says so, in the person's language, with the
/// same words for every account (right or wrong password, unknown name, locked account), and
/// never "wrong username or password"; the attempts are audited as `directory_unavailable`
/// and lock nobody out.
#[tokio::test]
async fn a_directory_outage_is_told_as_an_outage_not_a_wrong_password() {
    use novads_testkit::fixtures::talsi;
    use novads_testkit::{Municipality, Slapd};
    let Some(ldap) = Slapd::start(Municipality::Talsi).await else {
        return;
    };
    let (server, db_url) = start_with_talsi(&ldap).await;
    let base = server.base.clone();
    let redirect = format!("{base}/demo/callback");
    let authorize = |lang: &str| {
        format!(
            "{base}/oidc/authorize?response_type=code&client_id=demo-app&scope=openid&state=st&redirect_uri={}&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256&ui_locales={lang}",
            urlencode(&redirect)
        )
    };
    // Ilze's account is locked (`lockout.max_failures` is 5) before the outage.
    for _ in 0..5 {
        let (form, _) = open_login_page(&authorize("en")).await;
        let answer = submit(&base, &form, &talsi::ILZE.login(), "not-her-password").await;
        assert_eq!(answer.status(), 200);
    }
    ldap.stop();

    let attempts = [
        (talsi::JANA.login(), talsi::JANA.password.to_owned()),
        (talsi::JANA.login(), "not-her-password".to_owned()),
        ("nobody@talsi".to_owned(), "whatever".to_owned()),
        (talsi::ILZE.login(), talsi::ILZE.password.to_owned()),
    ];
    let mut pages = Vec::new();
    for (lang, outage, wrong) in [
        ("en", "cannot be reached", "Wrong username or password"),
        (
            "lv",
            "nav sasniedzams",
            "Nepareizs lietotājvārds vai parole",
        ),
    ] {
        // More attempts than `lockout.max_failures` (5): an outage must lock nobody out.
        for round in 0..2 {
            for (username, password) in &attempts {
                let (form, _) = open_login_page(&authorize(lang)).await;
                let answer = submit(&base, &form, username, password).await;
                assert_eq!(answer.status(), 503, "{lang} {username} round {round}");
                assert_eq!(answer.headers()["retry-after"], "30");
                let html = answer.text().await.expect("html");
                assert!(html.contains(outage), "{lang}: {html}");
                assert!(html.contains("Talsu novads"), "{lang}: {html}");
                assert!(!html.contains(wrong), "{lang}: {html}");
                // The form is there to try again.
                assert!(html.contains("name=\"password\""), "{html}");
                let message = html
                    .split("id=\"login-error\"")
                    .nth(1)
                    .and_then(|rest| rest.split("</p>").next())
                    .expect("the message")
                    .to_owned();
                pages.push((lang, message));
            }
        }
    }
    // Every account is told exactly the same in one language: nothing about the account.
    for lang in ["en", "lv"] {
        let messages: std::collections::BTreeSet<_> = pages
            .iter()
            .filter(|(l, _)| *l == lang)
            .map(|(_, m)| m)
            .collect();
        assert_eq!(messages.len(), 1, "{lang}: {messages:?}");
    }

    let rows = audit_events(&db_url).await;
    assert_eq!(rows.len(), 5 + 16, "{rows:?}");
    for row in &rows[5..] {
        let reason = if row["username"] == "ilze@talsi" {
            "locked_out"
        } else {
            "directory_unavailable"
        };
        assert_eq!(row["reason"], reason, "{row}");
    }

    // The directory is back: Jana signs in at once, never locked by the outage.
    ldap.restart().await;
    let mut signed_in = false;
    for _ in 0..40 {
        let (form, _) = open_login_page(&authorize("en")).await;
        let answer = submit(&base, &form, &talsi::JANA.login(), talsi::JANA.password).await;
        if answer.status() == 303 {
            signed_in = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(signed_in, "the outage locked Jana out");
    server.stop().await;
}

/// The dev configuration plus Talsi's directory; the demo realm's applications trust Talsi's
/// client-service staff (as operators). Returns the server and its database URL.
async fn start_with_talsi(ldap: &novads_testkit::Slapd) -> (Running, String) {
    let m = novads_testkit::Municipality::Talsi;
    let server = start_dev(|config, _| {
        config.realms.push(novads_api::config::RealmConfig {
            name: "talsi".into(),
            display_name: Some(m.display_name().into()),
            ldap: Some(novads_api::config::LdapConfig {
                insecure: true,
                bind_dn: Some(m.service_dn().into()),
                bind_password: Some(m.service_password().into()),
                timeout_seconds: 2,
                pool_size: 2,
                ..novads_api::config::LdapConfig::new(vec![ldap.url()], m.people_base())
            }),
            static_directory: None,
        });
        config.trusts.push(novads_api::config::TrustConfig {
            trusting: dev::DEMO_REALM.into(),
            trusted: "talsi".into(),
            groups: vec!["vpvkac-staff".into()],
            roles: [("vpvkac-staff".to_owned(), "operator".to_owned())].into(),
            clients: vec![],
        });
    })
    .await;
    let db_url = server.config.database.clone();
    (server, db_url)
}

async fn audit_events(db_url: &str) -> Vec<serde_json::Value> {
    let db = novads_api::db::Database::open(db_url, None)
        .await
        .expect("db");
    let mut out = Vec::new();
    novads_api::federation::audit::export(
        &db,
        &Default::default(),
        novads_api::federation::audit::ExportFormat::Jsonl,
        &mut out,
    )
    .await
    .expect("export");
    String::from_utf8(out)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect()
}

/// Journey 4: someone leaves. Every refresh re-checks the directory; rotation catches a
/// copied refresh token.
#[tokio::test]
async fn refresh_rotates_detects_reuse_and_cuts_off_leavers() {
    use novads_testkit::fixtures::talsi;
    use novads_testkit::{Municipality, Slapd, User};
    let Some(ldap) = Slapd::start(Municipality::Talsi).await else {
        return;
    };
    let (server, db_url) = start_with_talsi(&ldap).await;
    let base = server.base.clone();
    let redirect = format!("{base}/demo/callback");
    let authorize = format!(
        "{base}/oidc/authorize?response_type=code&client_id=demo-app&scope=openid&redirect_uri={}&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256",
        urlencode(&redirect)
    );
    let token = |form: Vec<(&'static str, String)>| {
        let url = format!("{base}/oidc/token");
        async move { post_form(url, form, None).await }
    };
    let sign_in = |user: &'static User| {
        let (authorize, base, redirect) = (authorize.clone(), base.clone(), redirect.clone());
        async move {
            let (form, _) = open_login_page(&authorize).await;
            let response = submit(&base, &form, &user.login(), user.password).await;
            let location = response.headers()["location"]
                .to_str()
                .expect("ascii")
                .to_owned();
            vec![
                ("grant_type", "authorization_code".to_owned()),
                ("code", query_param(&location, "code").expect("code")),
                ("redirect_uri", redirect),
                ("client_id", "demo-app".to_owned()),
                (
                    "code_verifier",
                    "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".to_owned(),
                ),
            ]
        }
    };
    let refresh_with = |token: &str| {
        vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", token.to_owned()),
            ("client_id", "demo-app".to_owned()),
        ]
    };

    // Jana signs in and refreshes: a new refresh token each time.
    let (status, first) = token(sign_in(&talsi::JANA).await).await;
    assert_eq!(status, 200, "{first}");
    let first_refresh = first["refresh_token"].as_str().expect("refresh").to_owned();
    let (status, second) = token(refresh_with(&first_refresh)).await;
    assert_eq!(status, 200, "{second}");
    let second_refresh = second["refresh_token"]
        .as_str()
        .expect("rotated")
        .to_owned();
    assert_ne!(first_refresh, second_refresh);
    assert!(second["id_token"].is_string() && second["access_token"].is_string());

    // The rotated token presented again: refused, and its whole family with it.
    let (status, body) = token(refresh_with(&first_refresh)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, body) = token(refresh_with(&second_refresh)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "the family is revoked"
    );

    // Jānis signs in; then Talsi deletes him from its directory and tells nobody.
    let (status, janis) = token(sign_in(&talsi::JANIS_BERZINS).await).await;
    assert_eq!(status, 200, "{janis}");
    let janis_refresh = janis["refresh_token"].as_str().expect("refresh").to_owned();
    ldap.ldapmodify(&format!(
        "dn: {}\nchangetype: delete\n",
        talsi::JANIS_BERZINS.dn
    ))
    .await
    .expect("delete the leaver");
    let (status, body) = token(refresh_with(&janis_refresh)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );

    let rows = audit_events(&db_url).await;
    let events: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["event"].as_str().unwrap_or_default(),
                r["reason"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert_eq!(
        events,
        vec![
            ("login_succeeded", "-"),
            ("token_refreshed", "-"),
            ("login_succeeded", "-"),
            ("refresh_denied", "unknown_user"),
        ]
    );
    assert_eq!(rows[3]["username"], "janis.berzins@talsi");
    server.stop().await;
}

/// The `novads_session=...` pair a response sets, if any.
fn session_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|pair| pair.starts_with("novads_session="))
        .map(str::to_owned)
}

/// Journey 3, second half: signed in once, the next application needs no password.
#[tokio::test]
async fn single_sign_on_session_serves_the_next_application() {
    let server = start().await;
    let demo = &dev::DEMO_USERS[0];
    let demo_redirect = format!("{}/demo/callback", server.base);
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    let demo_app = format!(
        "{}/oidc/authorize?response_type=code&client_id=demo-app&scope=openid&redirect_uri={}&code_challenge={challenge}&code_challenge_method=S256",
        server.base,
        urlencode(&demo_redirect)
    );
    let portal = |extra: &str| {
        format!(
            "{}/oidc/authorize?response_type=code&client_id=portal&scope=openid&state=p&redirect_uri={}{extra}",
            server.base,
            urlencode(CONFIDENTIAL_REDIRECT)
        )
    };

    // Without a session, prompt=none cannot be answered.
    let response = browser()
        .get(portal("&prompt=none"))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 303);
    let location = response.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(
        query_param(&location, "error").as_deref(),
        Some("login_required")
    );

    // The password once, for the first application.
    let (form, _) = open_login_page(&demo_app).await;
    let response = submit(&server.base, &form, "anna@demo", demo.password).await;
    assert_eq!(response.status(), 303);
    let session = session_cookie(&response).expect("session cookie set");
    let set_cookie = response.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Lax"),
        "{set_cookie}"
    );

    // The second application: straight back with a code, no login page.
    for extra in ["", "&prompt=none"] {
        let response = browser()
            .get(portal(extra))
            .header("cookie", &session)
            .send()
            .await
            .expect("get");
        assert_eq!(response.status(), 303, "{extra}");
        let location = response.headers()["location"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(location.starts_with(CONFIDENTIAL_REDIRECT), "{location}");
        let code = query_param(&location, "code").expect("code without a password");
        let token = browser()
            .post(format!("{}/oidc/token", server.base))
            .basic_auth("portal", Some("demo-client-secret"))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", CONFIDENTIAL_REDIRECT),
            ])
            .send()
            .await
            .expect("token");
        assert_eq!(token.status(), 200);
    }

    // prompt=login insists on the password even with a session.
    let response = browser()
        .get(portal("&prompt=login"))
        .header("cookie", &session)
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 200, "the login page");

    // Every password sign-in gets a new session id (no fixation).
    let (form, _) = open_login_page(&demo_app).await;
    let response = browser()
        .post(format!("{}/oidc/login", server.base))
        .header("cookie", format!("{}; {session}", form.cookie))
        .form(&[
            ("request", form.request.as_str()),
            ("csrf", form.csrf.as_str()),
            ("username", "anna@demo"),
            ("password", demo.password),
        ])
        .send()
        .await
        .expect("login");
    let renewed = session_cookie(&response).expect("new session cookie");
    assert_ne!(renewed, session);

    // A forged session id is just no session.
    let response = browser()
        .get(portal("&prompt=none"))
        .header("cookie", "novads_session=forged")
        .send()
        .await
        .expect("get");
    let location = response.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(
        query_param(&location, "error").as_deref(),
        Some("login_required")
    );
    server.stop().await;
}

/// RP-initiated logout ends the session for every application of the browser.
#[tokio::test]
async fn logout_ends_the_session_for_every_application() {
    let server = start().await;
    let demo = &dev::DEMO_USERS[0];
    let demo_redirect = format!("{}/demo/callback", server.base);
    let after_logout = format!("{}/demo/", server.base);
    let authorize = |extra: &str| {
        format!(
            "{}/oidc/authorize?response_type=code&client_id=demo-app&scope=openid&redirect_uri={}&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256{extra}",
            server.base,
            urlencode(&demo_redirect)
        )
    };
    let (form, _) = open_login_page(&authorize("")).await;
    let response = submit(&server.base, &form, "anna@demo", demo.password).await;
    let session = session_cookie(&response).expect("session");
    let location = response.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let tokens: serde_json::Value = browser()
        .post(format!("{}/oidc/token", server.base))
        .form(&[
            ("grant_type", "authorization_code"),
            (
                "code",
                query_param(&location, "code").expect("code").as_str(),
            ),
            ("redirect_uri", demo_redirect.as_str()),
            ("client_id", "demo-app"),
            (
                "code_verifier",
                "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
            ),
        ])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    let id_token = tokens["id_token"].as_str().expect("id token");

    // An unregistered destination: signed out, but no redirect to it.
    let response = browser()
        .get(format!(
            "{}/oidc/logout?id_token_hint={id_token}&post_logout_redirect_uri={}",
            server.base,
            urlencode("https://evil.example/")
        ))
        .header("cookie", &session)
        .send()
        .await
        .expect("logout");
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("location").is_none());

    // Logging out revoked what the session issued: the refresh token and the access token.
    let refreshed = browser()
        .post(format!("{}/oidc/token", server.base))
        .form(&[
            ("grant_type", "refresh_token"),
            (
                "refresh_token",
                tokens["refresh_token"].as_str().expect("refresh"),
            ),
            ("client_id", "demo-app"),
        ])
        .send()
        .await
        .expect("refresh");
    assert_eq!(
        refreshed.status(),
        400,
        "the refresh token died with the session"
    );
    let userinfo = browser()
        .get(format!("{}/oidc/userinfo", server.base))
        .bearer_auth(tokens["access_token"].as_str().expect("access"))
        .send()
        .await
        .expect("userinfo");
    assert_eq!(
        userinfo.status(),
        401,
        "the access token died with the session"
    );

    // Sign in again, then log out properly: back to the registered page with state.
    let (form, _) = open_login_page(&authorize("")).await;
    let response = submit(&server.base, &form, "anna@demo", demo.password).await;
    let session = session_cookie(&response).expect("session");
    let response = browser()
        .get(format!(
            "{}/oidc/logout?id_token_hint={id_token}&post_logout_redirect_uri={}&state=bye",
            server.base,
            urlencode(&after_logout)
        ))
        .header("cookie", &session)
        .send()
        .await
        .expect("logout");
    assert_eq!(response.status(), 303);
    let location = response.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(location.starts_with(&after_logout), "{location}");
    assert_eq!(query_param(&location, "state").as_deref(), Some("bye"));
    let cleared = response.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        cleared.starts_with("novads_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );

    // The old session cookie no longer signs anyone in.
    let response = browser()
        .get(authorize("&prompt=none"))
        .header("cookie", &session)
        .send()
        .await
        .expect("get");
    let location = response.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(
        query_param(&location, "error").as_deref(),
        Some("login_required")
    );

    // A logout link that only names a client (no ID token of ours): the audit row does not
    // take the link's word for which application it was.
    let (form, _) = open_login_page(&authorize("")).await;
    let response = submit(&server.base, &form, "anna@demo", demo.password).await;
    let session = session_cookie(&response).expect("session");
    // Such a link (from any web page) ends nothing by itself: it asks, with a CSRF token.
    let response = browser()
        .get(format!("{}/oidc/logout?client_id=portal", server.base))
        .header("cookie", &session)
        .send()
        .await
        .expect("logout");
    assert_eq!(response.status(), 200);
    let csrf_cookie = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("novads_logout_csrf="))
        .and_then(|v| v.split(';').next())
        .expect("CSRF cookie")
        .to_owned();
    assert!(
        response
            .headers()
            .get_all("set-cookie")
            .iter()
            .all(|v| !v.to_str().is_ok_and(|v| v.starts_with("novads_session="))),
        "the session cookie is kept"
    );
    let page = response.text().await.expect("html");
    assert!(
        page.contains("Vai izrakstīties no visām lietotnēm?"),
        "{page}"
    );
    let csrf = hidden(&page, "csrf");
    let still_signed_in = |session: String| {
        let url = authorize("&prompt=none");
        async move {
            let response = browser()
                .get(url)
                .header("cookie", session)
                .send()
                .await
                .expect("get");
            let location = response.headers()["location"]
                .to_str()
                .expect("ascii")
                .to_owned();
            query_param(&location, "code").is_some()
        }
    };
    assert!(still_signed_in(session.clone()).await);
    // Another site posting the form cannot send our CSRF cookie along: asked again.
    let response = browser()
        .post(format!("{}/oidc/logout", server.base))
        .header("cookie", &session)
        .form(&[("csrf", csrf.as_str()), ("client_id", "portal")])
        .send()
        .await
        .expect("logout");
    assert_eq!(response.status(), 200);
    assert!(
        response
            .text()
            .await
            .expect("html")
            .contains("Vai izrakstīties")
    );
    assert!(still_signed_in(session.clone()).await);
    // The user confirms.
    let response = browser()
        .post(format!("{}/oidc/logout", server.base))
        .header("cookie", format!("{session}; {csrf_cookie}"))
        .form(&[("csrf", csrf.as_str()), ("client_id", "portal")])
        .send()
        .await
        .expect("logout");
    assert_eq!(response.status(), 200);
    assert!(
        response
            .text()
            .await
            .expect("html")
            .contains("Jūs esat izrakstījies")
    );
    assert!(!still_signed_in(session.clone()).await);

    // Every logout is in the audit trail, with a client only where an ID token named it.
    let rows = audit_events(&server.config.database).await;
    let logouts: Vec<&serde_json::Value> = rows.iter().filter(|r| r["event"] == "logout").collect();
    assert_eq!(logouts.len(), 3, "{rows:?}");
    assert_eq!(logouts[0]["username"], "anna@demo");
    assert_eq!(logouts[0]["client_id"], "demo-app", "{:?}", logouts[0]);
    assert_eq!(logouts[1]["client_id"], "demo-app", "{:?}", logouts[1]);
    assert!(logouts[2]["client_id"].is_null(), "{:?}", logouts[2]);
    server.stop().await;
}

#[tokio::test]
async fn introspection_and_revocation() {
    let server = start().await;
    let demo = &dev::DEMO_USERS[0];
    let redirect = format!("{}/demo/callback", server.base);
    let (form, _) = open_login_page(&format!(
        "{}/oidc/authorize?response_type=code&client_id=demo-app&scope=openid&redirect_uri={}&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256",
        server.base,
        urlencode(&redirect)
    ))
    .await;
    let response = submit(&server.base, &form, "anna@demo", demo.password).await;
    let location = response.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let post = |path: &'static str, form: Vec<(&'static str, String)>| {
        let url = format!("{}{path}", server.base);
        async move { post_form(url, form, None).await }
    };
    let (_, tokens) = post(
        "/oidc/token",
        vec![
            ("grant_type", "authorization_code".into()),
            ("code", query_param(&location, "code").expect("code")),
            ("redirect_uri", redirect.clone()),
            ("client_id", "demo-app".into()),
            (
                "code_verifier",
                "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into(),
            ),
        ],
    )
    .await;
    let access = tokens["access_token"].as_str().expect("access").to_owned();
    let refresh = tokens["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    let ask = |token: String| vec![("token", token), ("client_id", "demo-app".to_owned())];
    let introspect = |token: String| {
        let url = format!("{}/oidc/introspect", server.base);
        async move {
            post_form(
                url,
                vec![("token", token)],
                Some(("portal", "demo-client-secret")),
            )
            .await
        }
    };

    // Only `openid` was granted: userinfo keeps the profile and address to itself.
    let userinfo: serde_json::Value = browser()
        .get(format!("{}/oidc/userinfo", server.base))
        .bearer_auth(&access)
        .send()
        .await
        .expect("userinfo")
        .json()
        .await
        .expect("json");
    assert_eq!(userinfo["sub"], "demo:anna");
    for claim in ["preferred_username", "name", "email"] {
        assert!(userinfo.get(claim).is_none(), "{claim} in {userinfo}");
    }

    // A public client cannot introspect, not even its own tokens: its id is no secret.
    let (status, body) = post("/oidc/introspect", ask(access.clone())).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let (status, body) = post("/oidc/introspect", ask(refresh.clone())).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    // A confidential client that proved its secret (a resource server) can.
    let (status, body) = introspect(access.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(
        (body["active"].as_bool(), body["sub"].as_str()),
        (Some(true), Some("demo:anna"))
    );
    // Refresh tokens are described only to the client they were issued to.
    let (_, body) = introspect(refresh.clone()).await;
    assert_eq!(body, serde_json::json!({ "active": false }));
    let (_, body) = introspect("garbage".into()).await;
    assert_eq!(body, serde_json::json!({ "active": false }));
    // Unauthenticated callers and wrong secrets learn nothing.
    let (status, body) = post("/oidc/introspect", vec![("token", access.clone())]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let (status, _) = post_form(
        format!("{}/oidc/introspect", server.base),
        vec![("token", access.clone())],
        Some(("portal", "wrong-secret")),
    )
    .await;
    assert_eq!(status, 401);

    // Revoking the refresh token revokes the grant, its access token included.
    let (status, _) = post("/oidc/revoke", ask(refresh.clone())).await;
    assert_eq!(status, 200);
    let (_, body) = introspect(access.clone()).await;
    assert_eq!(body["active"], false);
    let (status, body) = post(
        "/oidc/token",
        vec![
            ("grant_type", "refresh_token".into()),
            ("refresh_token", refresh),
            ("client_id", "demo-app".into()),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    // Revoking something unknown is not an error (RFC 7009 2.2).
    let (status, _) = post("/oidc/revoke", ask("unknown".into())).await;
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test]
async fn client_credentials_for_services_only() {
    let server = start().await;
    let post = |form: Vec<(&'static str, &'static str)>,
                basic: Option<(&'static str, &'static str)>| {
        let url = format!("{}/oidc/token", server.base);
        async move { post_form(url, form, basic).await }
    };
    let (status, body) = post(
        vec![
            ("grant_type", "client_credentials"),
            ("scope", "audit:read"),
        ],
        Some(("portal", "demo-client-secret")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("id_token").is_none() && body.get("refresh_token").is_none());
    let introspected: serde_json::Value = browser()
        .post(format!("{}/oidc/introspect", server.base))
        .basic_auth("portal", Some("demo-client-secret"))
        .form(&[("token", body["access_token"].as_str().expect("token"))])
        .send()
        .await
        .expect("introspect")
        .json()
        .await
        .expect("json");
    assert_eq!(introspected["sub"], "client:portal");
    assert_eq!(introspected["scope"], "audit:read");

    // Public clients have no credentials to present; wrong secrets fail.
    let (status, body) = post(
        vec![
            ("grant_type", "client_credentials"),
            ("client_id", "demo-app"),
        ],
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unauthorized_client"))
    );
    let (status, body) = post(
        vec![("grant_type", "client_credentials")],
        Some(("portal", "wrong")),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let (status, body) = post(vec![("grant_type", "password")], None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
    server.stop().await;
}

/// The same flow driven by Authlib (Python), a client library nobody here wrote.
#[tokio::test]
async fn authlib_completes_the_flow_refresh_and_revocation() {
    let available = std::process::Command::new("python3")
        .args(["-c", "import authlib, requests"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        let hint = "python3 -m pip install authlib requests";
        assert!(
            !novads_testkit::services_required(),
            "Authlib is required (NOVADS_REQUIRE_SERVICES=1): {hint}"
        );
        eprintln!("skipped: Authlib is not installed (install: {hint})");
        return;
    }
    let server = start().await;
    let demo = &dev::DEMO_USERS[0];
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/oidc_authlib.py");
    let output = tokio::process::Command::new("python3")
        .arg(script)
        .args([
            server.base.as_str(),
            dev::DEMO_CLIENT,
            &format!("{}/demo/callback", server.base),
            &format!("{}@demo", demo.username),
            demo.password,
        ])
        .output()
        .await
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("ID token verified against JWKS"),
        "{stdout}"
    );
    assert!(stdout.contains("revocation ok"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "userinfo ok, name='{}' email={}@demo.novads.lv",
            demo.name, demo.username
        )),
        "{stdout}"
    );
    server.stop().await;
}

/// Issue 4's promise for `novads dev`: a person signs in to the demo application in a browser.
#[tokio::test]
async fn the_demo_application_signs_in_through_the_provider() {
    let server = start().await;
    let demo = &dev::DEMO_USERS[0];
    let home = browser()
        .get(format!("{}/demo/", server.base))
        .send()
        .await
        .expect("home");
    assert_eq!(home.status(), 200);
    assert!(
        home.text()
            .await
            .expect("html")
            .contains("Sign in with novads")
    );

    let start_login = browser()
        .get(format!("{}/demo/login", server.base))
        .send()
        .await
        .expect("login");
    assert_eq!(start_login.status(), 303);
    let flow_cookie = start_login.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .split(';')
        .next()
        .expect("cookie")
        .to_owned();
    let authorize = start_login.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let (form, _) = open_login_page(&authorize).await;
    let response = submit(&server.base, &form, "anna@demo", demo.password).await;
    assert_eq!(response.status(), 303);
    let callback = response.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(callback.starts_with(&format!("{}/demo/callback", server.base)));

    let page = browser()
        .get(&callback)
        .header("cookie", &flow_cookie)
        .send()
        .await
        .expect("callback");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("html");
    assert!(
        html.contains("anna@demo") && html.contains("demo:it-admins"),
        "{html}"
    );
    assert!(html.contains("/oidc/logout?id_token_hint="), "{html}");

    // Without the browser's flow cookie the answer is not accepted.
    let forged = browser().get(&callback).send().await.expect("callback");
    assert_eq!(forged.status(), 400);
    server.stop().await;
}

/// POSTs a form (optionally with Basic client credentials); the status and the JSON answer.
async fn post_form<K: serde::Serialize, V: serde::Serialize>(
    url: String,
    form: Vec<(K, V)>,
    basic: Option<(&str, &str)>,
) -> (u16, serde_json::Value) {
    let mut request = browser().post(url).form(&form);
    if let Some((id, secret)) = basic {
        request = request.basic_auth(id, Some(secret));
    }
    let response = request.send().await.expect("post");
    let status = response.status().as_u16();
    (
        status,
        response
            .json::<serde_json::Value>()
            .await
            .unwrap_or_default(),
    )
}

/// The brute-force attack against the running server: forty wrong passwords for one account
/// posted to the login form at once reach the directory at most `lockout.max_failures` times;
/// a source that keeps failing gets `429` with `Retry-After` at once instead of a held request.
#[tokio::test]
async fn parallel_password_guessing_is_bounded_and_throttled_with_429() {
    use novads_testkit::fixtures::talsi;
    use novads_testkit::{Municipality, Slapd};
    let Some(ldap) = Slapd::start(Municipality::Talsi).await else {
        return;
    };
    let (server, db_url) = start_with_talsi(&ldap).await;
    let max_failures = server.config.lockout.max_failures;
    let base = server.base.clone();
    let authorize = format!(
        "{base}/oidc/authorize?response_type=code&client_id=demo-app&scope=openid&state=st&redirect_uri={}&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256",
        urlencode(&format!("{base}/demo/callback"))
    );
    let (form, _) = open_login_page(&authorize).await;
    let form = std::sync::Arc::new(form);
    let posts: Vec<_> = (0..40)
        .map(|_| {
            let (base, form) = (base.clone(), form.clone());
            tokio::spawn(async move {
                submit(&base, &form, &talsi::ILZE.login(), "wrong")
                    .await
                    .status()
            })
        })
        .collect();
    for post in posts {
        assert_eq!(post.await.expect("post ran"), 200, "the form again");
    }
    let rows = audit_events(&db_url).await;
    assert_eq!(rows.len(), 40);
    let reached = rows.iter().filter(|r| !r["directory"].is_null()).count();
    assert_eq!(
        reached,
        usize::try_from(max_failures).expect("small"),
        "wrong passwords that reached the directory"
    );
    let locked = rows.iter().filter(|r| r["event"] == "locked_out").count();
    assert_eq!(locked, 40 - reached);

    // The same address keeps guessing, now across accounts: after its free failures it is
    // told to wait, immediately.
    let mut throttled = None;
    for i in 0..20 {
        let started = std::time::Instant::now();
        let response = submit(&base, &form, &format!("ghost{i}@talsi"), "wrong").await;
        if response.status() == 429 {
            assert!(started.elapsed() < std::time::Duration::from_millis(200));
            throttled = Some(response);
            break;
        }
        assert_eq!(response.status(), 200);
    }
    let throttled = throttled.expect("a failing source is throttled");
    let retry_after: u64 = throttled.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=3).contains(&retry_after), "{retry_after}");
    let html = throttled.text().await.expect("html");
    assert!(
        html.contains("Pārāk daudz neveiksmīgu mēģinājumu"),
        "{html}"
    );
    let rows = audit_events(&db_url).await;
    assert_eq!(rows.last().expect("row")["reason"], "throttled");
    server.stop().await;
}

/// argon2 work anyone can cause — here wrong client secrets, each an argon2 verification —
/// runs at most twice-the-cores at a time; a flood beyond that is answered at once with `503`
/// and `Retry-After` instead of queueing CPU work, and the right secret works as soon as the
/// flood is over.
#[tokio::test]
async fn a_flood_of_wrong_client_secrets_is_refused_with_503_and_retry_after() {
    let server = start().await;
    let url = format!("{}/oidc/token", server.base);
    let client = browser();
    let mut guesses = tokio::task::JoinSet::new();
    for i in 0..120 {
        let request = client
            .post(&url)
            .basic_auth("portal", Some(format!("guess-{i}")))
            .form(&[
                ("grant_type", "client_credentials"),
                ("scope", "audit:read"),
            ]);
        guesses.spawn(async move {
            let response = request.send().await.expect("token request");
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body: serde_json::Value = response.json().await.expect("json");
            (status, retry_after, body)
        });
    }
    let answers = guesses.join_all().await;
    let busy: Vec<_> = answers.iter().filter(|(s, _, _)| *s == 503).collect();
    let refused = answers.iter().filter(|(s, _, _)| *s == 401).count();
    assert_eq!(
        busy.len() + refused,
        answers.len(),
        "only 401 or 503: {answers:?}"
    );
    assert!(!busy.is_empty(), "no 503 under a flood of argon2 work");
    assert!(refused > 0, "some guesses were verified (and refused)");
    for (_, retry_after, body) in &busy {
        assert_eq!(retry_after.as_deref(), Some("1"));
        assert_eq!(body["error"], "temporarily_unavailable");
    }

    let (status, body) = post_form(
        url.clone(),
        vec![
            ("grant_type", "client_credentials"),
            ("scope", "audit:read"),
        ],
        Some(("portal", "demo-client-secret")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    server.stop().await;
}

/// The same limit guards a static realm's passwords: a flood of sign-ins to the login form
/// (each an argon2 verification, unknown names included) is answered in part with `503` and a
/// page saying the directory cannot be reached, never with more argon2 work at once; those
/// refusals are audited as `directory_unavailable`.
#[tokio::test]
async fn a_flood_of_static_realm_sign_ins_is_refused_with_503() {
    let server = start().await;
    let base = server.base.clone();
    let redirect = format!("{base}/demo/callback");
    let authorize = format!(
        "{base}/oidc/authorize?response_type=code&client_id=demo-app&scope=openid&state=st&redirect_uri={}&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256&ui_locales=en",
        urlencode(&redirect)
    );
    let mut forms = Vec::new();
    for _ in 0..80 {
        forms.push(open_login_page(&authorize).await.0);
    }
    let mut posts = tokio::task::JoinSet::new();
    for (i, form) in forms.into_iter().enumerate() {
        let base = base.clone();
        posts.spawn(async move {
            let answer = submit(&base, &form, &format!("guess{i}@demo"), "wrong").await;
            let status = answer.status().as_u16();
            (status, answer.text().await.expect("html"))
        });
    }
    let answers = posts.join_all().await;
    let busy: Vec<_> = answers.iter().filter(|(s, _)| *s == 503).collect();
    assert!(
        answers.iter().all(|(s, _)| [200, 429, 503].contains(s)),
        "{:?}",
        answers.iter().map(|(s, _)| s).collect::<Vec<_>>()
    );
    assert!(!busy.is_empty(), "no 503 under a flood of argon2 work");
    for (_, html) in &busy {
        assert!(html.contains("Demo municipality") && html.contains("cannot be reached"));
    }
    let rows = audit_events(&server.config.database).await;
    let unavailable = rows
        .iter()
        .filter(|r| r["reason"] == "directory_unavailable")
        .count();
    assert_eq!(unavailable, busy.len(), "each refusal is audited as such");
    server.stop().await;
}

/// Behind a reverse proxy (`server.trusted_proxies`): the audit trail records the client's
/// address from `X-Forwarded-For`, throttling keys on it — one client's burst of failures does
/// not make another client wait — and an address a client writes into the header itself is
/// never believed. Without the setting the header is ignored.
#[tokio::test]
async fn behind_a_trusted_proxy_the_client_address_is_audited_and_throttled() {
    let server = start_dev(|config, _| {
        config.server.trusted_proxies = vec!["127.0.0.0/8".parse().expect("cidr")];
    })
    .await;
    let base = server.base.clone();
    let authorize = format!(
        "{base}/oidc/authorize?response_type=code&client_id=demo-app&scope=openid&state=st&redirect_uri={}&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256",
        urlencode(&format!("{base}/demo/callback"))
    );
    let (form, _) = open_login_page(&authorize).await;
    let post = |forwarded_for: &'static str, username: String| {
        let (base, request, csrf, cookie) = (
            base.clone(),
            form.request.clone(),
            form.csrf.clone(),
            form.cookie.clone(),
        );
        async move {
            browser()
                .post(format!("{base}/oidc/login"))
                .header("cookie", cookie)
                .header("x-forwarded-for", forwarded_for)
                .form(&[
                    ("request", request.as_str()),
                    ("csrf", csrf.as_str()),
                    ("username", username.as_str()),
                    ("password", "wrong"),
                ])
                .send()
                .await
                .expect("login post")
                .status()
        }
    };
    // One client keeps failing until it is told to wait.
    let mut throttled = false;
    for i in 0..40 {
        let status = post("203.0.113.7", format!("ghost{i}@{}", dev::DEMO_REALM)).await;
        if status == 429 {
            throttled = true;
            break;
        }
        assert_eq!(status, 200);
    }
    assert!(throttled, "the failing client is throttled");
    // Writing another address in front does not get it out: the proxy appended the real one.
    assert_eq!(
        post(
            "198.51.100.9, 203.0.113.7",
            format!("ghost@{}", dev::DEMO_REALM)
        )
        .await,
        429
    );
    // Everyone else behind the same proxy is not made to wait.
    assert_eq!(
        post("198.51.100.20", format!("other@{}", dev::DEMO_REALM)).await,
        200,
        "another client is answered at once"
    );
    let rows = audit_events(&server.config.database).await;
    assert_eq!(
        rows.first().expect("rows")["source_ip"],
        "203.0.113.7",
        "the audit trail records the client, not the proxy"
    );
    assert_eq!(rows.last().expect("rows")["source_ip"], "198.51.100.20");
    assert!(rows.iter().all(|r| r["source_ip"] != "127.0.0.1"));
    server.stop().await;

    // Without trusted proxies the header is anyone's to write and is ignored.
    let server = start().await;
    let base = server.base.clone();
    let authorize = format!(
        "{base}/oidc/authorize?response_type=code&client_id=demo-app&scope=openid&state=st&redirect_uri={}&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256",
        urlencode(&format!("{base}/demo/callback"))
    );
    let (form, _) = open_login_page(&authorize).await;
    let status = browser()
        .post(format!("{base}/oidc/login"))
        .header("cookie", &form.cookie)
        .header("x-forwarded-for", "203.0.113.7")
        .header("forwarded", "for=203.0.113.7")
        .form(&[
            ("request", form.request.as_str()),
            ("csrf", form.csrf.as_str()),
            ("username", &format!("ghost@{}", dev::DEMO_REALM)),
            ("password", "wrong"),
        ])
        .send()
        .await
        .expect("login post")
        .status();
    assert_eq!(status, 200);
    let rows = audit_events(&server.config.database).await;
    assert_eq!(rows.last().expect("row")["source_ip"], "127.0.0.1");
    server.stop().await;
}

/// One address starting sign-ins in a loop (each stores a pending request before anyone
/// authenticated) is told to wait after its share, with `429` and `Retry-After`; another
/// address is still shown the login form.
#[tokio::test]
async fn one_address_cannot_flood_pending_authorization_requests() {
    let server = start_dev(|config, _| {
        config.server.trusted_proxies = vec!["127.0.0.0/8".parse().expect("cidr")];
    })
    .await;
    let base = server.base.clone();
    let authorize = format!(
        "{base}/oidc/authorize?response_type=code&client_id=demo-app&scope=openid&state=st&redirect_uri={}&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256",
        urlencode(&format!("{base}/demo/callback"))
    );
    let from = |address: &'static str| {
        let authorize = authorize.clone();
        async move {
            browser()
                .get(&authorize)
                .header("x-forwarded-for", address)
                .send()
                .await
                .expect("authorize")
        }
    };
    let share = novads_api::oidc::store::REQUESTS_PER_SOURCE;
    for _ in 0..share {
        assert_eq!(from("203.0.113.7").await.status(), 200);
    }
    let refused = from("203.0.113.7").await;
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(from("198.51.100.9").await.status(), 200, "another address");
    assert_eq!(
        flow_rows(&server).await,
        0,
        "starting sign-ins, admitted or refused, stores nothing"
    );
    server.stop().await;
}

/// Rows of every table a sign-in writes: what `/oidc/authorize` and showing the form again
/// must leave alone.
async fn flow_rows(server: &Running) -> i64 {
    let sql = "SELECT (SELECT COUNT(*) FROM oidc_authorization_requests) \
               + (SELECT COUNT(*) FROM oidc_used_requests) \
               + (SELECT COUNT(*) FROM oidc_codes) \
               + (SELECT COUNT(*) FROM oidc_sessions)";
    match server.state.db() {
        novads_api::db::Database::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
        novads_api::db::Database::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
    }
    .expect("count")
}

/// The login page again at `/oidc/login?request=...&lang=...`, with `cookie` when given.
async fn reopen(base: &str, request: &str, lang: &str, cookie: Option<&str>) -> reqwest::Response {
    let mut get = browser().get(format!(
        "{base}/oidc/login?request={}&lang={lang}",
        urlencode(request)
    ));
    if let Some(cookie) = cookie {
        get = get.header("cookie", cookie);
    }
    get.send().await.expect("login page")
}

/// The pending request travels sealed in the form and stores nothing until the sign-in
/// succeeds; reloads and language switches write nothing; one sealed request yields one code,
/// however it is replayed; a changed or foreign sealed value is refused like an expired one.
async fn sealed_requests_are_used_once(server: &Running) {
    use novads_api::oidc::keys::KeyEncryptionKey;
    use novads_api::oidc::request::ValidRequest;
    use novads_api::oidc::sealed_request::{PendingRequest, RequestSealKey};

    let base = server.base.as_str();
    let demo = &dev::DEMO_USERS[0];
    let authorize = format!(
        "{base}/oidc/authorize?response_type=code&client_id=demo-app&scope=openid&state=st&redirect_uri={}&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256",
        urlencode(&format!("{base}/demo/callback"))
    );
    let before = flow_rows(server).await;
    let (form, _) = open_login_page(&authorize).await;
    assert!(form.request.starts_with("r1."), "{}", form.request);
    assert_eq!(flow_rows(server).await, before, "authorize writes nothing");

    // A reload with the cookie: the same form, in the language asked for.
    let reload = reopen(base, &form.request, "en", Some(&form.cookie)).await;
    assert_eq!(reload.status(), 200);
    let html = reload.text().await.expect("html");
    assert!(html.contains("lang=\"en\""), "{html}");
    assert_eq!(hidden(&html, "request"), form.request);
    assert_eq!(hidden(&html, "csrf"), form.csrf);
    // A browser that lost the cookie: a new token, sealed into a new value.
    let switched = reopen(base, &form.request, "lv", None).await;
    assert_eq!(switched.status(), 200);
    let cookie = switched.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .split(';')
        .next()
        .expect("pair")
        .to_owned();
    let html = switched.text().await.expect("html");
    let renewed = LoginForm {
        request: hidden(&html, "request"),
        csrf: hidden(&html, "csrf"),
        cookie,
    };
    assert_ne!(renewed.request, form.request);
    assert_ne!(renewed.csrf, form.csrf);
    assert_eq!(
        flow_rows(server).await,
        before,
        "reloads and switches write nothing"
    );
    // Tokens do not mix: the old cookie with the new value is refused.
    let mixed = LoginForm {
        request: renewed.request.clone(),
        csrf: form.csrf.clone(),
        cookie: form.cookie.clone(),
    };
    let response = submit(base, &mixed, "anna@demo", demo.password).await;
    assert_eq!(response.status(), 403);

    // A changed character anywhere in the sealed value, a truncated value, a value sealed
    // under another key-encryption key (naming the attacker's redirect URI), an oversize one:
    // refused as an unknown request, nothing written.
    let mut tampered = Vec::new();
    for at in [3, form.request.len() / 2, form.request.len() - 1] {
        let mut bytes = form.request.clone().into_bytes();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        tampered.push(String::from_utf8(bytes).expect("ascii"));
    }
    tampered.push(form.request[..form.request.len() - 10].to_owned());
    let forged_request = ValidRequest {
        client_id: "demo-app".into(),
        redirect_uri: "https://evil.example/cb".into(),
        scope: "openid".into(),
        state: None,
        nonce: None,
        code_challenge: None,
        login_hint: None,
        prompt_none: false,
        prompt_login: false,
        max_age: None,
    };
    let now = chrono::Utc::now().timestamp_millis();
    let (forged, forged_csrf) = PendingRequest::begin(&forged_request, "lv", now).expect("request");
    let foreign = RequestSealKey::from_kek(&KeyEncryptionKey::from_bytes([0x42; 32]))
        .expect("key")
        .seal(&forged)
        .expect("seal");
    tampered.push(foreign.clone());
    tampered.push(format!("r1.{}", "A".repeat(20_000)));
    for request in &tampered {
        let attempt = LoginForm {
            request: request.clone(),
            csrf: form.csrf.clone(),
            cookie: form.cookie.clone(),
        };
        let response = submit(base, &attempt, "anna@demo", demo.password).await;
        assert_eq!(response.status(), 410, "{request}");
        assert_eq!(reopen(base, request, "lv", None).await.status(), 410);
    }
    let forged_form = LoginForm {
        request: foreign,
        cookie: format!("novads_csrf={forged_csrf}"),
        csrf: forged_csrf,
    };
    let response = submit(base, &forged_form, "anna@demo", demo.password).await;
    assert_eq!(response.status(), 410, "a foreign sealed request");
    assert_eq!(flow_rows(server).await, before, "refusals write nothing");

    // A wrong password does not use the request up.
    let response = submit(base, &form, "anna@demo", "wrong").await;
    assert_eq!(response.status(), 200);
    // The renewed value signs in.
    let response = submit(base, &renewed, "anna@demo", demo.password).await;
    assert_eq!(response.status(), 303);
    let location = response.headers()["location"].to_str().expect("ascii");
    assert!(query_param(location, "code").is_some(), "{location}");

    // The same request again — the exact post, the older value with its own pair, or a fresh
    // pair fetched for it — yields no second code.
    let response = submit(base, &renewed, "anna@demo", demo.password).await;
    assert_eq!(response.status(), 410, "the same post replayed");
    let response = submit(base, &form, "anna@demo", demo.password).await;
    assert_eq!(
        response.status(),
        410,
        "another sealing of the used request"
    );
    assert_eq!(
        reopen(base, &form.request, "lv", None).await.status(),
        410,
        "a used request's form is not shown again"
    );
    let (codes, used) = {
        let codes = "SELECT COUNT(*) FROM oidc_codes";
        let used = "SELECT COUNT(*) FROM oidc_used_requests";
        match server.state.db() {
            novads_api::db::Database::Sqlite(pool) => (
                sqlx::query_scalar::<_, i64>(codes).fetch_one(pool).await,
                sqlx::query_scalar::<_, i64>(used).fetch_one(pool).await,
            ),
            novads_api::db::Database::Postgres(pool) => (
                sqlx::query_scalar::<_, i64>(codes).fetch_one(pool).await,
                sqlx::query_scalar::<_, i64>(used).fetch_one(pool).await,
            ),
        }
    };
    assert_eq!(codes.expect("codes"), 1, "one code for one request");
    assert_eq!(used.expect("used"), 1, "the request is recorded used");
}

#[tokio::test]
async fn sqlite_sealed_requests_are_used_once() {
    let server = start().await;
    sealed_requests_are_used_once(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn postgres_sealed_requests_are_used_once() {
    let Some(pg) = novads_testkit::Postgres::start().await else {
        return;
    };
    let url = pg.create_database("sealed_requests").await;
    let server = start_dev(|config, _| config.database = url).await;
    sealed_requests_are_used_once(&server).await;
    server.stop().await;
}
