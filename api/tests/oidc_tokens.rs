//! Tokens against a running novads: each client's signing algorithm (RS256 for relying parties
//! that accept nothing else, ES256 by default), checked by an independent verifier (the
//! `openidconnect` crate); and revocation — a replayed authorization code revokes every token
//! issued from it, and RFC 7009 revokes single access tokens — on SQLite and PostgreSQL.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use novads_api::config::ClientConfig;
use novads_api::db::Database;
use novads_api::dev;
use novads_api::oidc::keys::{KeyEncryptionKey, KeyPolicy, SigningAlgorithm, SigningKeys};
use novads_testkit::Postgres;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::{
    AccessTokenHash, AuthorizationCode, ClientId, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, RedirectUrl, Scope, TokenResponse,
};
use serde_json::{Value, json};

mod support;
use support::{Running, start_dev};

/// `demo-client-secret`, argon2id.
const SECRET_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$0zRucgKNwySQRxoit2ER+w$iDkVZbdhJA9fQrzaNsG0gIjqer7wb69X+sWub423aug";
/// A public client configured for RS256, as kube-apiserver's `--oidc-signing-algs=RS256`
/// needs.
const RS256_CLIENT: &str = "kubectl";
const RS256_REDIRECT: &str = "http://127.0.0.1:8000/callback";
/// A confidential client (ES256), for client_credentials and cross-client revocation.
const PORTAL: &str = "portal";
const PORTAL_SECRET: &str = "demo-client-secret";
/// RFC 7636 Appendix B.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

/// `novads` on the dev configuration (demo realm, public ES256 client `demo-app`) plus the
/// RS256 client and `portal`; on `database` when given (PostgreSQL), else SQLite.
async fn start(database: Option<String>) -> Running {
    start_dev(|config, _| {
        if let Some(url) = database {
            config.database = url;
        }
        config.clients.push(ClientConfig {
            client_id: RS256_CLIENT.into(),
            realm: dev::DEMO_REALM.into(),
            redirect_uris: vec![RS256_REDIRECT.into()],
            post_logout_redirect_uris: vec![],
            secret_hash: None,
            public: true,
            id_token_signed_response_alg: SigningAlgorithm::Rs256,
        });
        config.clients.push(ClientConfig {
            client_id: PORTAL.into(),
            realm: dev::DEMO_REALM.into(),
            redirect_uris: vec!["https://portal.demo.lv/cb".into()],
            post_logout_redirect_uris: vec![],
            secret_hash: Some(SECRET_HASH.into()),
            public: false,
            id_token_signed_response_alg: SigningAlgorithm::Es256,
        });
    })
    .await
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// The HTTP client the OIDC library talks through (no redirects followed).
async fn http(
    request: openidconnect::HttpRequest,
) -> Result<openidconnect::HttpResponse, std::io::Error> {
    let (parts, body) = request.into_parts();
    let response = browser()
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

/// The value of `<input name="NAME" value="...">` in a page.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).expect("field present") + marker.len();
    let end = html[start..].find('"').expect("value closed") + start;
    html[start..end].to_owned()
}

fn query_param(location: &str, name: &str) -> Option<String> {
    url::Url::parse(location)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn urlencode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// Opens the login page of an authorization URL, signs in as the first demo user and returns
/// the code from the redirect.
async fn sign_in(base: &str, authorize_url: &str) -> String {
    sign_in_with_session(base, authorize_url).await.0
}

/// Like [`sign_in`], also returning the `novads_session=...` cookie pair the sign-in set.
async fn sign_in_with_session(base: &str, authorize_url: &str) -> (String, String) {
    let page = browser()
        .get(authorize_url)
        .send()
        .await
        .expect("authorize");
    assert_eq!(page.status(), 200, "login page");
    let cookie = page
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .expect("CSRF cookie")
        .to_owned();
    let html = page.text().await.expect("html");
    let demo = &dev::DEMO_USERS[0];
    let response = browser()
        .post(format!("{base}/oidc/login"))
        .header("cookie", cookie)
        .form(&[
            ("request", hidden(&html, "request")),
            ("csrf", hidden(&html, "csrf")),
            ("username", format!("{}@demo", demo.username)),
            ("password", demo.password.to_owned()),
        ])
        .send()
        .await
        .expect("login post");
    assert_eq!(response.status(), 303);
    let session = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|pair| pair.starts_with("novads_session="))
        .expect("session cookie")
        .to_owned();
    let location = response.headers()["location"].to_str().expect("ascii");
    (query_param(location, "code").expect("code"), session)
}

/// POSTs a form (optionally with Basic client credentials); the status and the JSON answer.
async fn post_form(
    url: String,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> (u16, Value) {
    let mut request = browser().post(url).form(form);
    if let Some((id, secret)) = basic {
        request = request.basic_auth(id, Some(secret));
    }
    let response = request.send().await.expect("post");
    let status = response.status().as_u16();
    (status, response.json::<Value>().await.unwrap_or_default())
}

/// The decoded JOSE header of a compact JWS.
fn header_of(token: &str) -> Value {
    let header = token.split('.').next().expect("header");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).expect("base64url")).expect("json")
}

/// What an ID token from the independent client came with.
struct Signed {
    id_token: String,
    access_token: String,
}

/// The whole code flow with PKCE driven by `openidconnect`, which verifies the ID token (and
/// its `at_hash`) against the JWKS accepting only `allowed`.
async fn openidconnect_flow(
    base: &str,
    client_id: &str,
    redirect: &str,
    allowed: CoreJwsSigningAlgorithm,
) -> Signed {
    let metadata = CoreProviderMetadata::discover_async(
        IssuerUrl::new(base.to_owned()).expect("issuer"),
        &http,
    )
    .await
    .expect("discovery");
    let client =
        CoreClient::from_provider_metadata(metadata, ClientId::new(client_id.into()), None)
            .set_redirect_uri(RedirectUrl::new(redirect.to_owned()).expect("redirect"));
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (authorize_url, _state, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("profile".into()))
        .set_pkce_challenge(challenge)
        .url();
    let code = sign_in(base, authorize_url.as_str()).await;
    let tokens = client
        .exchange_code(AuthorizationCode::new(code))
        .expect("token endpoint known")
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .expect("token exchange");
    let id_token = tokens.id_token().expect("ID token");
    let wanted = format!("{allowed:?}");
    let id_verifier = client.id_token_verifier().set_allowed_algs([allowed]);
    let claims = id_token
        .claims(&id_verifier, &nonce)
        .unwrap_or_else(|e| panic!("{wanted}: the ID token does not verify: {e:?}"));
    assert_eq!(claims.subject().as_str(), "demo:anna");
    let expected_hash = AccessTokenHash::from_token(
        tokens.access_token(),
        id_token.signing_alg().expect("alg"),
        id_token.signing_key(&id_verifier).expect("key"),
    )
    .expect("hash");
    assert_eq!(claims.access_token_hash(), Some(&expected_hash));
    Signed {
        id_token: id_token.to_string(),
        access_token: tokens.access_token().secret().clone(),
    }
}

/// Whether the independent library accepts the ID token when it allows only `allowed`.
async fn accepted_with(
    base: &str,
    client_id: &str,
    id_token: &str,
    allowed: CoreJwsSigningAlgorithm,
) -> bool {
    use std::str::FromStr as _;
    let metadata = CoreProviderMetadata::discover_async(
        IssuerUrl::new(base.to_owned()).expect("issuer"),
        &http,
    )
    .await
    .expect("discovery");
    let client =
        CoreClient::from_provider_metadata(metadata, ClientId::new(client_id.into()), None);
    let verifier = client.id_token_verifier().set_allowed_algs([allowed]);
    let token = openidconnect::core::CoreIdToken::from_str(id_token).expect("parses");
    // The nonce was checked in the flow; here only the signature and algorithm matter.
    token.claims(&verifier, |_: Option<&Nonce>| Ok(())).is_ok()
}

async fn userinfo(base: &str, access_token: &str) -> reqwest::Response {
    browser()
        .get(format!("{base}/oidc/userinfo"))
        .bearer_auth(access_token)
        .send()
        .await
        .expect("userinfo")
}

// ---------------------------------------------------------------------------------------------
// Signing algorithm per client
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn each_client_gets_tokens_signed_with_its_algorithm() {
    let server = start(None).await;
    let base = server.base.clone();

    // Discovery lists both, and the JWKS publishes an active and a next key of each.
    let discovery: Value = browser()
        .get(format!("{base}/.well-known/openid-configuration"))
        .send()
        .await
        .expect("discovery")
        .json()
        .await
        .expect("json");
    assert_eq!(
        discovery["id_token_signing_alg_values_supported"],
        json!(["ES256", "RS256"])
    );
    let jwks: Value = browser()
        .get(format!("{base}/oidc/jwks"))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("json");
    let algs: Vec<&str> = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["alg"].as_str())
        .collect();
    assert_eq!(algs.iter().filter(|a| **a == "ES256").count(), 2, "{jwks}");
    assert_eq!(algs.iter().filter(|a| **a == "RS256").count(), 2, "{jwks}");

    // The RS256 client: ID and access token signed with the active RS256 key.
    let rs = openidconnect_flow(
        &base,
        RS256_CLIENT,
        RS256_REDIRECT,
        CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    )
    .await;
    let rs_kid = server
        .state
        .keys()
        .active_kid(SigningAlgorithm::Rs256)
        .expect("RS256 key");
    assert_eq!(header_of(&rs.id_token)["alg"], "RS256");
    assert_eq!(header_of(&rs.id_token)["kid"], rs_kid.as_str());
    assert_eq!(header_of(&rs.access_token)["alg"], "RS256");
    assert_eq!(header_of(&rs.access_token)["typ"], "at+jwt");
    assert!(
        !accepted_with(
            &base,
            RS256_CLIENT,
            &rs.id_token,
            CoreJwsSigningAlgorithm::EcdsaP256Sha256
        )
        .await,
        "a verifier that allows only ES256 must refuse it: it really is RS256"
    );
    assert_eq!(userinfo(&base, &rs.access_token).await.status(), 200);

    // The default client still gets ES256.
    let demo_redirect = format!("{base}/demo/callback");
    let es = openidconnect_flow(
        &base,
        dev::DEMO_CLIENT,
        &demo_redirect,
        CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    )
    .await;
    assert_eq!(header_of(&es.id_token)["alg"], "ES256");
    assert_eq!(header_of(&es.access_token)["alg"], "ES256");
    assert!(
        !accepted_with(
            &base,
            dev::DEMO_CLIENT,
            &es.id_token,
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256
        )
        .await
    );

    // Service tokens follow the client's algorithm as well.
    let (status, body) = post_form(
        format!("{base}/oidc/token"),
        &[("grant_type", "client_credentials")],
        Some((PORTAL, PORTAL_SECRET)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        header_of(body["access_token"].as_str().expect("token"))["alg"],
        "ES256"
    );

    // `novads keys rotate` rotates both algorithms at once; after the reload the RS256 client
    // signs with the former next key, and tokens of the retired keys keep working.
    let kek = KeyEncryptionKey::configured(&server.config.server).expect("kek");
    let policy = KeyPolicy {
        min_next_age: Duration::ZERO,
        ..KeyPolicy::default()
    };
    let report = SigningKeys::rotate(server.state.db(), &kek, &policy)
        .await
        .expect("rotate");
    let mut rotated: Vec<SigningAlgorithm> = report.rotated.iter().map(|r| r.algorithm).collect();
    rotated.sort();
    assert_eq!(
        rotated,
        vec![SigningAlgorithm::Es256, SigningAlgorithm::Rs256]
    );
    server
        .state
        .keys()
        .reload(server.state.db(), &kek)
        .await
        .expect("reload");
    let new_rs_kid = server
        .state
        .keys()
        .active_kid(SigningAlgorithm::Rs256)
        .expect("RS256 key");
    assert_ne!(new_rs_kid, rs_kid);
    let after = openidconnect_flow(
        &base,
        RS256_CLIENT,
        RS256_REDIRECT,
        CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    )
    .await;
    assert_eq!(header_of(&after.id_token)["kid"], new_rs_kid.as_str());
    assert!(
        accepted_with(
            &base,
            RS256_CLIENT,
            &rs.id_token,
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256
        )
        .await,
        "an ID token of the retired RS256 key still verifies against the JWKS"
    );
    assert_eq!(userinfo(&base, &rs.access_token).await.status(), 200);
    assert_eq!(userinfo(&base, &es.access_token).await.status(), 200);
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Revocation
// ---------------------------------------------------------------------------------------------

/// What the demo application holds after a code exchange.
struct Tokens {
    code: String,
    access: String,
    refresh: String,
}

fn demo_authorize_url(base: &str) -> String {
    format!(
        "{base}/oidc/authorize?response_type=code&client_id={}&scope=openid&redirect_uri={}&code_challenge={CHALLENGE}&code_challenge_method=S256",
        dev::DEMO_CLIENT,
        urlencode(&format!("{base}/demo/callback"))
    )
}

fn exchange_form(base: &str, code: &str) -> Vec<(&'static str, String)> {
    vec![
        ("grant_type", "authorization_code".into()),
        ("code", code.into()),
        ("redirect_uri", format!("{base}/demo/callback")),
        ("client_id", dev::DEMO_CLIENT.into()),
        ("code_verifier", VERIFIER.into()),
    ]
}

async fn token_request(base: &str, form: &[(&str, String)]) -> (u16, Value) {
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    post_form(format!("{base}/oidc/token"), &form, None).await
}

async fn demo_tokens(base: &str) -> Tokens {
    let code = sign_in(base, &demo_authorize_url(base)).await;
    let (status, body) = token_request(base, &exchange_form(base, &code)).await;
    assert_eq!(status, 200, "{body}");
    Tokens {
        code,
        access: body["access_token"].as_str().expect("access").to_owned(),
        refresh: body["refresh_token"].as_str().expect("refresh").to_owned(),
    }
}

async fn refresh(base: &str, refresh_token: &str) -> (u16, Value) {
    token_request(
        base,
        &[
            ("grant_type", "refresh_token".into()),
            ("refresh_token", refresh_token.into()),
            ("client_id", dev::DEMO_CLIENT.into()),
        ],
    )
    .await
}

/// Introspection by the confidential portal: whether the token is active.
async fn active(base: &str, token: &str) -> bool {
    let (status, body) = post_form(
        format!("{base}/oidc/introspect"),
        &[("token", token)],
        Some((PORTAL, PORTAL_SECRET)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["active"].as_bool().expect("active")
}

#[track_caller]
fn assert_refused(response: &reqwest::Response) {
    assert_eq!(response.status(), 401);
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .expect("ascii");
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
}

async fn audit_events(db_url: &str) -> Vec<Value> {
    let db = Database::open(db_url, None).await.expect("db");
    let mut out = Vec::new();
    novads_api::federation::audit::export(
        &db,
        &Default::default(),
        novads_api::federation::audit::ExportFormat::Jsonl,
        &mut out,
    )
    .await
    .expect("export");
    db.close().await;
    String::from_utf8(out)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect()
}

/// RFC 6749 4.1.2: a code used twice is refused and every token issued from it — including
/// the access tokens of later refreshes — is revoked; the replay is audited as a refusal.
async fn replayed_code_revokes_its_tokens(server: &Running) {
    let base = server.base.as_str();
    let tokens = demo_tokens(base).await;
    assert_eq!(userinfo(base, &tokens.access).await.status(), 200);
    assert!(active(base, &tokens.access).await);
    // A refresh before the replay: its access token is issued from the same code.
    let (status, refreshed) = refresh(base, &tokens.refresh).await;
    assert_eq!(status, 200, "{refreshed}");
    let refreshed_access = refreshed["access_token"].as_str().expect("access");
    let refreshed_refresh = refreshed["refresh_token"].as_str().expect("refresh");
    assert_eq!(userinfo(base, refreshed_access).await.status(), 200);
    // Another sign-in of the same user, which the replay must leave alone.
    let bystander = demo_tokens(base).await;

    let (status, body) = token_request(base, &exchange_form(base, &tokens.code)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );

    for access in [tokens.access.as_str(), refreshed_access] {
        assert_refused(&userinfo(base, access).await);
        assert!(!active(base, access).await, "introspection says inactive");
    }
    let (status, body) = refresh(base, refreshed_refresh).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "the refresh token is dead: {body}"
    );
    assert_eq!(userinfo(base, &bystander.access).await.status(), 200);
    assert!(active(base, &bystander.access).await);

    let events = audit_events(&server.config.database).await;
    let replay = events.last().expect("audited");
    assert_eq!(replay["event"], "login_failed", "{replay}");
    assert_eq!(replay["reason"], "invalid_request", "{replay}");
    assert_eq!(replay["username"], "anna@demo", "{replay}");
    assert_eq!(replay["subject"], "demo:anna", "{replay}");
    assert_eq!(replay["client_id"], dev::DEMO_CLIENT, "{replay}");
    assert_eq!(replay["source_ip"], "127.0.0.1", "{replay}");
}

/// RFC 7009: an access token revoked by the client it was issued to is refused at once; its
/// grant lives on. Revoking a refresh token takes the grant's access tokens with it.
async fn revocation_reaches_access_tokens(server: &Running) {
    let base = server.base.as_str();
    let revoke = |token: String, basic: Option<(&'static str, &'static str)>| {
        let url = format!("{base}/oidc/revoke");
        async move {
            let form: Vec<(&str, &str)> = match basic {
                Some(_) => vec![("token", token.as_str())],
                None => vec![("token", token.as_str()), ("client_id", dev::DEMO_CLIENT)],
            };
            post_form(url, &form, basic).await.0
        }
    };
    let tokens = demo_tokens(base).await;
    assert_eq!(userinfo(base, &tokens.access).await.status(), 200);

    // Another client cannot revoke it (and learns nothing: 200 either way).
    assert_eq!(
        revoke(tokens.access.clone(), Some((PORTAL, PORTAL_SECRET))).await,
        200
    );
    assert_eq!(userinfo(base, &tokens.access).await.status(), 200);

    assert_eq!(revoke(tokens.access.clone(), None).await, 200);
    assert_refused(&userinfo(base, &tokens.access).await);
    assert!(!active(base, &tokens.access).await);
    // Only that token: the refresh token still works and brings a usable access token.
    let (status, refreshed) = refresh(base, &tokens.refresh).await;
    assert_eq!(status, 200, "{refreshed}");
    let access = refreshed["access_token"]
        .as_str()
        .expect("access")
        .to_owned();
    let refresh_token = refreshed["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    assert_eq!(userinfo(base, &access).await.status(), 200);

    // Revoking the refresh token revokes the grant, access tokens included (RFC 7009 2.1).
    assert_eq!(revoke(refresh_token.clone(), None).await, 200);
    assert_refused(&userinfo(base, &access).await);
    assert!(!active(base, &access).await);

    // A service token (no grant) is revoked by its jti.
    let (status, body) = post_form(
        format!("{base}/oidc/token"),
        &[("grant_type", "client_credentials")],
        Some((PORTAL, PORTAL_SECRET)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let service = body["access_token"].as_str().expect("token").to_owned();
    assert_eq!(userinfo(base, &service).await.status(), 200);
    assert_eq!(
        revoke(service.clone(), Some((PORTAL, PORTAL_SECRET))).await,
        200
    );
    assert_refused(&userinfo(base, &service).await);
}

/// A database writer cannot change whom a code, a single sign-on session or a refresh token
/// names (the demo user Anna, an IT administrator, made into Pēteris or the other way round
/// would sign in as someone else): against the running server, a refresh token whose subject
/// and groups were changed is refused (`invalid_grant`), audited as `refresh_denied` /
/// `tampered` naming no user; a code whose subject was changed
/// is refused at the exchange and audited as `login_failed` / `tampered`; a session whose
/// identity was changed gives no single sign-on (the login page instead). The untouched
/// flow — exchange, refresh, single sign-on — works, and every refusal is counted in
/// `novads_stored_identity_rows_rejected_total{kind}`.
async fn stored_identities_cannot_be_changed_in_the_database(server: &Running) {
    let base = server.base.as_str();
    let db = server.state.db();
    let audited_last = || async {
        let events = audit_events(&server.config.database).await;
        events.last().cloned().expect("audited")
    };

    // Untouched: the code is exchanged, the refresh token refreshes, the session signs in.
    let (code, session) = sign_in_with_session(base, &demo_authorize_url(base)).await;
    let (status, body) = token_request(base, &exchange_form(base, &code)).await;
    assert_eq!(status, 200, "{body}");
    let (status, refreshed) = refresh(base, body["refresh_token"].as_str().expect("refresh")).await;
    assert_eq!(status, 200, "{refreshed}");
    let live_refresh = refreshed["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    let single_sign_on = |session: String| async move {
        browser()
            .get(demo_authorize_url(base))
            .header("cookie", session)
            .send()
            .await
            .expect("authorize")
    };
    let answer = single_sign_on(session.clone()).await;
    assert_eq!(answer.status(), 303, "single sign-on answers with a code");

    // The writer makes the live refresh token name Pēteris with Anna's groups swapped.
    let changed = db
        .execute(
            "UPDATE oidc_refresh_tokens SET identity = \
             REPLACE(REPLACE(identity, 'demo:anna', 'demo:peteris'), 'demo:it-admins', 'demo:staff') \
             WHERE used_at IS NULL AND revoked_at IS NULL",
        )
        .await
        .expect("the writer changes the refresh token");
    assert!(changed >= 1);
    let (status, body) = refresh(base, &live_refresh).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    let row = audited_last().await;
    assert_eq!(
        (row["event"].as_str(), row["reason"].as_str()),
        (Some("refresh_denied"), Some("tampered")),
        "{row}"
    );
    assert_eq!(row["client_id"], dev::DEMO_CLIENT, "{row}");
    assert!(
        row["username"].is_null() && row["subject"].is_null(),
        "{row}"
    );

    // A code whose subject was changed between the sign-in and the exchange.
    let code = sign_in(base, &demo_authorize_url(base)).await;
    let changed = db
        .execute(
            "UPDATE oidc_codes SET identity = REPLACE(identity, 'demo:anna', 'demo:peteris') \
             WHERE used_at IS NULL",
        )
        .await
        .expect("the writer changes the code");
    assert!(changed >= 1);
    let (status, body) = token_request(base, &exchange_form(base, &code)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    let row = audited_last().await;
    assert_eq!(
        (row["event"].as_str(), row["reason"].as_str()),
        (Some("login_failed"), Some("tampered")),
        "{row}"
    );

    // A session whose identity was changed: no single sign-on, the login page instead.
    let changed = db
        .execute(
            "UPDATE oidc_sessions SET identity = REPLACE(identity, 'demo:anna', 'demo:peteris')",
        )
        .await
        .expect("the writer changes the session");
    assert!(changed >= 1);
    let answer = single_sign_on(session).await;
    assert_eq!(answer.status(), 200, "the login page, not a code");
    assert!(
        answer
            .text()
            .await
            .expect("page")
            .contains("name=\"password\"")
    );

    let metrics = browser()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for kind in ["code", "session", "refresh_token"] {
        let line = format!("novads_stored_identity_rows_rejected_total{{kind=\"{kind}\"}} ");
        let count = metrics
            .lines()
            .find_map(|l| l.strip_prefix(line.as_str()))
            .unwrap_or_else(|| panic!("{line} in {metrics}"));
        assert_ne!(count, "0", "{kind}: {metrics}");
    }
    assert!(
        metrics.contains("\nnovads_signing_key_rows_rejected 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn sqlite_stored_identities_cannot_be_changed_in_the_database() {
    let server = start(None).await;
    stored_identities_cannot_be_changed_in_the_database(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn postgres_stored_identities_cannot_be_changed_in_the_database() {
    let Some(pg) = Postgres::start().await else {
        return;
    };
    let server = start(Some(pg.create_database("stored_identities").await)).await;
    stored_identities_cannot_be_changed_in_the_database(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn sqlite_replayed_code_revokes_every_token_issued_from_it() {
    let server = start(None).await;
    replayed_code_revokes_its_tokens(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn sqlite_revoked_access_tokens_are_refused() {
    let server = start(None).await;
    revocation_reaches_access_tokens(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn postgres_replay_and_revocation() {
    let Some(pg) = Postgres::start().await else {
        return;
    };
    let server = start(Some(pg.create_database("oidc_replay").await)).await;
    replayed_code_revokes_its_tokens(&server).await;
    revocation_reaches_access_tokens(&server).await;
    server.stop().await;
}

/// A revocation check that cannot reach the database refuses the token (fails closed), and
/// revocations are swept once no token they name can still be valid.
#[tokio::test]
async fn revocation_checks_fail_closed_and_are_swept() {
    let server = start(None).await;
    let base = server.base.as_str();
    let tokens = demo_tokens(base).await;
    let (status, _) = post_form(
        format!("{base}/oidc/revoke"),
        &[
            ("token", tokens.access.as_str()),
            ("client_id", dev::DEMO_CLIENT),
        ],
        None,
    )
    .await;
    assert_eq!(status, 200);
    let db = server.state.db();
    // Pretend the token and its revocation have expired: the sweep removes the row.
    assert_eq!(
        db.execute("UPDATE oidc_revocations SET expires_at = 0")
            .await
            .expect("update"),
        1
    );
    let store = server.state.flows().clone();
    store.sweep().await.expect("sweep");
    assert_eq!(
        db.execute("DELETE FROM oidc_revocations")
            .await
            .expect("count"),
        0,
        "swept"
    );

    // Without the table the lookup fails: userinfo and introspection refuse, never serve.
    let fresh = demo_tokens(base).await;
    db.execute("DROP TABLE oidc_revocations")
        .await
        .expect("drop");
    let response = userinfo(base, &fresh.access).await;
    assert_eq!(response.status(), 503);
    let (status, body) = post_form(
        format!("{base}/oidc/introspect"),
        &[("token", fresh.access.as_str())],
        Some((PORTAL, PORTAL_SECRET)),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_ne!(body["active"], true);
    server.stop().await;
}
