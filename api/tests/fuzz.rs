//! Fuzz targets (proptest): the configuration parser, the sign-in name parser, the
//! authorization and token endpoints' parameters, and LDAP filter building. Each checks a
//! property beyond "does not panic": errors are one clear line, names round-trip, no request
//! redirects anywhere but to a registered redirect URI, every refused token request is an
//! RFC 6749 error, and a built filter parses back to equalities on exactly the input.
//!
//! `NOVADS_FUZZ_CASES` sets the cases per target (256 when unset, as CI runs them); a failing
//! case is shrunk and saved in `api/tests/fuzz.proptest-regressions`, which is replayed first
//! on every later run. docs/security.md "Fuzzing" has the commands.

mod support;

use std::collections::HashSet;
use std::sync::OnceLock;

use ldap3::asn1::{ASNTag as _, PL, StructureTag};
use novads_api::config::{self, ClientConfig, Mode};
use novads_api::federation::directory::ldap::filter::{group_filter, user_filter};
use novads_api::federation::username::{MAX_NAME_CHARS, parse_login_name};
use novads_api::oidc::request::{
    AuthorizeParams, Clients, RequestError, is_pkce_value, redirect_uri_registered, validate,
};
use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, TestRunner};

/// Cases per target: `NOVADS_FUZZ_CASES`, else 256.
fn cases() -> u32 {
    std::env::var("NOVADS_FUZZ_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(256)
}

fn fuzz_config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        // Relative to the package, where cargo runs tests.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/fuzz.proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

/// Text that is mostly what the parsers look for: their own metacharacters, look-alikes,
/// controls and non-ASCII, mixed with arbitrary characters.
fn tricky_text(max_pieces: usize) -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => any::<char>().prop_map(String::from),
        4 => "[a-zA-Z0-9]{1,8}",
        2 => Just("@".to_owned()),
        2 => Just("\\".to_owned()),
        1 => Just("*".to_owned()),
        1 => Just("(".to_owned()),
        1 => Just(")".to_owned()),
        1 => Just("\0".to_owned()),
        1 => Just("=".to_owned()),
        1 => Just("{username}".to_owned()),
        1 => Just("{dn}".to_owned()),
        1 => Just(" ".to_owned()),
        1 => Just("\t".to_owned()),
        1 => Just("\u{3000}".to_owned()),
        1 => Just("ā".to_owned()),
        1 => Just("İ".to_owned()),
        1 => Just("\u{212A}".to_owned()),
        1 => Just("ｊ".to_owned()),
        1 => Just("\u{0301}".to_owned()),
        1 => Just("😀".to_owned()),
        1 => Just(":".to_owned()),
        1 => Just("\n".to_owned()),
    ];
    prop::collection::vec(piece, 0..max_pieces).prop_map(|pieces| pieces.concat())
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$8YpaIqm2JnNn1wr8LaHp9Q$4RMXTTuhAlX2GjosOfvTsrijV6vzMpG7rgMtFPqISCs";

/// A complete, valid production configuration, which the fuzzer mutates.
fn valid_configuration() -> String {
    format!(
        r#"
server: {{ listen: "127.0.0.1:8080", issuer: "https://sso.novads.lv", key_encryption_key_env: NOVADS_FUZZ_KEK }}
database: "postgres://novads@db.internal/novads"
realms:
  - name: talsi
    display_name: "Talsu novads"
    ldap:
      urls: ["ldaps://ldap1.talsi.lv", "ldaps://ldap2.talsi.lv"]
      bind_dn: "cn=novads,ou=services,dc=talsi,dc=lv"
      bind_password_env: NOVADS_FUZZ_NEVER_SET
      user_base: "ou=people,dc=talsi,dc=lv"
      group_search: {{ base: "ou=groups,dc=talsi,dc=lv" }}
  - name: ventspils
    ldap:
      urls: ["ldap://ldap.ventspils.lv"]
      start_tls: true
      user_base: "ou=people,dc=ventspils,dc=lv"
      attributes: {{ id: objectGUID }}
  - name: demo
    static:
      users: [ {{ username: anna, password_hash: "{HASH}", groups: [admins] }} ]
trusts:
  - {{ trusting: ventspils, trusted: talsi, groups: [vpvkac-staff], roles: {{ vpvkac-staff: operator }} }}
clients:
  - {{ client_id: vpvkac, realm: ventspils, redirect_uris: ["https://vpvkac.example/cb"], secret_hash: "{HASH}" }}
  - {{ client_id: cli, realm: talsi, redirect_uris: ["http://127.0.0.1/cb", "lv.talsi.app:/cb"], public: true }}
"#
    )
}

/// One edit of a text: delete, insert or replace a stretch at a position (fractions of the
/// length, so that edits land everywhere in the document).
#[derive(Debug, Clone)]
enum Edit {
    Delete {
        at: f64,
        len: usize,
    },
    Insert {
        at: f64,
        text: String,
    },
    Replace {
        at: f64,
        len: usize,
        text: String,
    },
    /// Repeats a line (a duplicate key, a second list item).
    RepeatLine {
        at: f64,
    },
}

fn edit() -> impl Strategy<Value = Edit> {
    let yaml = prop_oneof![
        tricky_text(6),
        Just(": ".to_owned()),
        Just("\n  - ".to_owned()),
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just(", ".to_owned()),
        Just("\"".to_owned()),
        Just("'".to_owned()),
        Just("&a ".to_owned()),
        Just("*a".to_owned()),
        Just("!!str ".to_owned()),
        Just("~".to_owned()),
        Just("-1".to_owned()),
        Just("99999999999999999999".to_owned()),
        Just("\n---\n".to_owned()),
        Just("# ".to_owned()),
    ];
    prop_oneof![
        (0.0..1.0f64, 1usize..40).prop_map(|(at, len)| Edit::Delete { at, len }),
        (0.0..1.0f64, yaml.clone()).prop_map(|(at, text)| Edit::Insert { at, text }),
        (0.0..1.0f64, 1usize..20, yaml).prop_map(|(at, len, text)| Edit::Replace { at, len, text }),
        (0.0..1.0f64).prop_map(|at| Edit::RepeatLine { at }),
    ]
}

/// The char boundary nearest below `at` × the length.
fn position(text: &str, at: f64) -> usize {
    // `at` < 1, so this never exceeds the length.
    let mut i = (text.len() as f64 * at) as usize;
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn end_of(text: &str, start: usize, len: usize) -> usize {
    let mut end = (start + len).min(text.len());
    while !text.is_char_boundary(end) {
        end += 1;
    }
    end
}

fn apply(mut text: String, edit: &Edit) -> String {
    match edit {
        Edit::Delete { at, len } => {
            let start = position(&text, *at);
            let end = end_of(&text, start, *len);
            text.replace_range(start..end, "");
        }
        Edit::Insert { at, text: piece } => {
            let start = position(&text, *at);
            text.insert_str(start, piece);
        }
        Edit::Replace {
            at,
            len,
            text: piece,
        } => {
            let start = position(&text, *at);
            let end = end_of(&text, start, *len);
            text.replace_range(start..end, piece);
        }
        Edit::RepeatLine { at } => {
            let start = position(&text, *at);
            let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
            let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
            let line = format!("{}\n", &text[line_start..line_end]);
            text.insert_str(line_start, &line);
        }
    }
    text
}

/// Every message the configuration gives about `text`: the parse error, or the validation
/// errors of what parsed.
fn configuration_errors(text: &str) -> Vec<String> {
    match config::parse(text) {
        Err(e) => vec![e.to_string()],
        Ok(config) => config
            .validate(Mode::Production)
            .iter()
            .map(ToString::to_string)
            .collect(),
    }
}

/// A clear error is one non-empty line (the command line prints one per problem).
fn assert_clear(errors: &[String], text: &str) -> Result<(), TestCaseError> {
    for error in errors {
        prop_assert!(
            !error.trim().is_empty() && !error.contains('\n') && !error.contains('\r'),
            "unclear error {error:?} for {text:?}"
        );
    }
    Ok(())
}

#[test]
fn the_configuration_the_fuzzer_mutates_is_valid() {
    assert_eq!(
        configuration_errors(&valid_configuration()),
        Vec::<String>::new()
    );
}

proptest! {
    #![proptest_config(fuzz_config())]

    /// Any text: parsed and validated without a panic; every problem one clear line.
    #[test]
    fn configuration_text_gets_clear_errors(text in prop_oneof![any::<String>(), tricky_text(60)]) {
        assert_clear(&configuration_errors(&text), &text)?;
    }

    /// A valid configuration with up to four edits: the same.
    #[test]
    fn an_edited_configuration_gets_clear_errors(edits in prop::collection::vec(edit(), 1..5)) {
        let text = edits.iter().fold(valid_configuration(), apply);
        assert_clear(&configuration_errors(&text), &text)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Sign-in names
// ---------------------------------------------------------------------------------------------

fn realm_name() -> impl Strategy<Value = String> {
    "[a-z0-9-]{1,20}"
}

proptest! {
    #![proptest_config(fuzz_config())]

    /// Whatever is typed: a name that parses has a clean user part and a realm name, and its
    /// qualified form `user@realm` parses to the same name (what the audit trail records is
    /// what the directory was asked about).
    #[test]
    fn a_parsed_name_is_clean_and_round_trips(
        input in prop_oneof![any::<String>(), tricky_text(30)],
        default_realm in prop::option::of(realm_name()),
    ) {
        let Ok(name) = parse_login_name(&input, default_realm.as_deref()) else {
            return Ok(());
        };
        prop_assert!(!name.user.is_empty());
        prop_assert!(name.user.chars().count() <= MAX_NAME_CHARS);
        prop_assert!(!name.user.chars().any(char::is_control), "{name:?}");
        prop_assert!(!name.user.contains('@') && !name.user.contains('\\'), "{name:?}");
        prop_assert_eq!(name.user.trim(), name.user.as_str());
        prop_assert!(
            !name.realm.is_empty()
                && name.realm.len() <= 63
                && name.realm.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "{:?}", name
        );
        prop_assert_eq!(parse_login_name(&name.qualified(), None), Ok(name.clone()), "input {:?}", input);
        prop_assert_eq!(
            parse_login_name(&format!("{}\\{}", name.realm, name.user), None),
            Ok(name.clone())
        );
    }

    /// The three accepted forms of one name are one name.
    #[test]
    fn the_accepted_forms_agree(user in "[\\p{L}\\p{N}._ -]{1,30}", realm in realm_name()) {
        let at = parse_login_name(&format!("{user}@{realm}"), None);
        let upper = realm.to_uppercase();
        prop_assert_eq!(&at, &parse_login_name(&format!("{upper}\\{user}"), None));
        prop_assert_eq!(&at, &parse_login_name(&format!("  {user}@{upper}\t"), None));
        prop_assert_eq!(&at, &parse_login_name(&user, Some(&realm)));
    }
}

// ---------------------------------------------------------------------------------------------
// Authorization request parameters (pure)
// ---------------------------------------------------------------------------------------------

const REGISTERED: &str = "https://app.example/cb";
const NATIVE: &str = "http://127.0.0.1/cb";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

fn clients() -> &'static (Vec<ClientConfig>, Clients) {
    static CLIENTS: OnceLock<(Vec<ClientConfig>, Clients)> = OnceLock::new();
    CLIENTS.get_or_init(|| {
        let configs = vec![
            ClientConfig {
                client_id: "web".into(),
                realm: "talsi".into(),
                redirect_uris: vec![REGISTERED.into()],
                post_logout_redirect_uris: vec![],
                secret_hash: Some(HASH.into()),
                public: false,
                id_token_signed_response_alg: Default::default(),
            },
            ClientConfig {
                client_id: "cli".into(),
                realm: "talsi".into(),
                redirect_uris: vec![NATIVE.into()],
                post_logout_redirect_uris: vec![],
                secret_hash: None,
                public: true,
                id_token_signed_response_alg: Default::default(),
            },
        ];
        let clients = Clients::new(&configs);
        (configs, clients)
    })
}

/// A parameter: absent, a value that means something to the endpoint, or anything.
fn parameter(meaningful: &'static [&'static str]) -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        2 => Just(None),
        3 => prop::sample::select(meaningful).prop_map(|v| Some(v.to_owned())),
        2 => tricky_text(12).prop_map(Some),
        1 => "[ -~]{0,3000}".prop_map(Some),
    ]
}

fn authorize_params() -> impl Strategy<Value = AuthorizeParams> {
    let first = (
        parameter(&["code", "token", "code id_token", ""]),
        parameter(&["web", "cli", "other", ""]),
        parameter(&[
            REGISTERED,
            NATIVE,
            "http://127.0.0.1:53817/cb",
            "https://app.example/cb/../evil",
            "https://app.example/cb?x=1",
            "https://APP.example/cb",
            "https://evil.example/cb",
            "//evil.example",
            "javascript:alert(1)",
        ]),
        parameter(&["openid", "openid profile email", "profile", "openidx", ""]),
        parameter(&["xyz", ""]),
        parameter(&["n-0S6_WzA2Mj"]),
    );
    let second = (
        parameter(&[CHALLENGE, "short", ""]),
        parameter(&["S256", "plain", "s256"]),
        parameter(&["none", "login", "consent", "none login", "bogus"]),
        parameter(&["0", "3600", "-1", "18446744073709551616", "1e3"]),
        parameter(&["jana@talsi"]),
        parameter(&["lv", "en"]),
    );
    (first, second).prop_map(
        |(
            (response_type, client_id, redirect_uri, scope, state, nonce),
            (code_challenge, code_challenge_method, prompt, max_age, login_hint, ui_locales),
        )| AuthorizeParams {
            response_type,
            client_id,
            redirect_uri,
            scope,
            state,
            nonce,
            code_challenge,
            code_challenge_method,
            prompt,
            max_age,
            login_hint,
            ui_locales,
            acr_values: None,
        },
    )
}

fn registered_for(client_id: &str, uri: &str) -> bool {
    let (configs, _) = clients();
    configs
        .iter()
        .find(|c| c.client_id == client_id)
        .is_some_and(|c| redirect_uri_registered(c, uri))
}

proptest! {
    #![proptest_config(fuzz_config())]

    /// An accepted request names a registered client and one of its redirect URIs, asks for
    /// `openid`, and carries an S256 challenge when the client is public; a refusal is sent to
    /// a redirect URI only when that URI is registered for the client (never an open
    /// redirect), and the redirect goes exactly there.
    #[test]
    fn authorization_requests_are_accepted_or_refused_safely(params in authorize_params()) {
        let (configs, clients) = clients();
        match validate(&params, clients) {
            Ok(valid) => {
                let client = configs.iter().find(|c| c.client_id == valid.client_id);
                prop_assert!(client.is_some(), "{valid:?}");
                prop_assert!(registered_for(&valid.client_id, &valid.redirect_uri), "{valid:?}");
                prop_assert!(valid.scope.split_whitespace().any(|s| s == "openid"));
                if client.is_some_and(|c| c.public) {
                    prop_assert!(valid.code_challenge.as_deref().is_some_and(is_pkce_value));
                }
            }
            Err(RequestError::Redirect(refusal)) => {
                let client_id = params.client_id.as_deref().unwrap_or_default();
                prop_assert!(registered_for(client_id, &refusal.redirect_uri), "{refusal:?}");
                let location = url::Url::parse(&refusal.location("https://sso.novads.lv"));
                let mut location = location.map_err(|e| TestCaseError::fail(e.to_string()))?;
                location.set_query(None);
                let mut target = url::Url::parse(&refusal.redirect_uri)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                target.set_query(None);
                prop_assert_eq!(location, target);
            }
            Err(RequestError::Page(message)) => prop_assert!(!message.is_empty()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The authorization and token endpoints of the running server
// ---------------------------------------------------------------------------------------------

/// A raw query or form: pairs of the endpoints' parameter names (or others) and values, some
/// repeated, some not percent-encoded at all.
fn raw_pairs(names: &'static [&'static str]) -> impl Strategy<Value = String> {
    let name = prop_oneof![
        4 => prop::sample::select(names).prop_map(str::to_owned),
        1 => tricky_text(4),
    ];
    let value = prop_oneof![
        tricky_text(10),
        "[ -~]{0,40}",
        Just("demo-app".to_owned()),
        Just(CHALLENGE.to_owned()),
    ];
    let pair = (name, value, any::<bool>()).prop_map(|(name, value, encode)| {
        if encode {
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair(&name, &value)
                .finish()
        } else {
            format!("{name}={value}")
        }
    });
    prop::collection::vec(pair, 0..8).prop_map(|pairs| pairs.join("&"))
}

/// Any `Authorization` header value, or none.
fn authorization_header() -> impl Strategy<Value = Option<String>> {
    use base64::Engine as _;
    prop_oneof![
        Just(None),
        tricky_text(8).prop_map(|credentials| Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        ))),
        "[ -~]{0,40}".prop_map(|v| Some(format!("Basic {v}"))),
        "[ -~]{0,40}".prop_map(Some),
    ]
}

/// Errors RFC 6749 5.2 defines (and `temporarily_unavailable` under load).
const TOKEN_ERRORS: &[&str] = &[
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
];

/// The running dev server: any authorization request is answered below 500, and redirects
/// only to a registered redirect URI; any token request without valid credentials and a live
/// code or refresh token is a JSON RFC 6749 error (`401` exactly for `invalid_client`),
/// never a token, never a server error.
#[test]
fn the_running_server_answers_any_authorization_or_token_request_safely() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let server = runtime.block_on(support::start_dev(|config, _| {
        // The fuzzer is one address sending many requests.
        config.server.authorization_requests_per_minute = u32::MAX;
    }));
    let base = server.base.clone();
    let registered: HashSet<String> = server
        .config
        .clients
        .iter()
        .flat_map(|c| c.redirect_uris.iter().cloned())
        .collect();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");

    let authorize = raw_pairs(&[
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "nonce",
        "code_challenge",
        "code_challenge_method",
        "prompt",
        "max_age",
        "login_hint",
        "ui_locales",
    ]);
    let mut runner = TestRunner::new(fuzz_config());
    let outcome = runner.run(&authorize, |query| {
        let (status, location) = runtime.block_on(async {
            let response = http
                .get(format!("{base}/oidc/authorize?{query}"))
                .send()
                .await
                .expect("answered");
            let location = response
                .headers()
                .get("location")
                .map(|v| v.to_str().unwrap_or("(not text)").to_owned());
            (response.status().as_u16(), location)
        });
        prop_assert!(status < 500, "{status} for ?{query}");
        if let Some(location) = location {
            let mut target = url::Url::parse(&location)
                .map_err(|e| TestCaseError::fail(format!("{location}: {e}")))?;
            target.set_query(None);
            prop_assert!(
                registered.contains(target.as_str()),
                "?{query} redirected to {location}"
            );
        }
        Ok(())
    });
    if let Err(e) = outcome {
        panic!("authorization endpoint: {e}");
    }

    let token = (
        raw_pairs(&[
            "grant_type",
            "code",
            "redirect_uri",
            "code_verifier",
            "client_id",
            "client_secret",
            "refresh_token",
            "scope",
        ]),
        authorization_header(),
    );
    let mut runner = TestRunner::new(fuzz_config());
    let outcome = runner.run(&token, |(form, authorization)| {
        let (status, body) = runtime.block_on(async {
            let mut request = http
                .post(format!("{base}/oidc/token"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form.clone());
            if let Some(value) = &authorization {
                request = request.header("authorization", value.as_str());
            }
            let response = request.send().await.expect("answered");
            let status = response.status().as_u16();
            (status, response.text().await.unwrap_or_default())
        });
        let body: serde_json::Value = serde_json::from_str(&body).map_err(|e| {
            TestCaseError::fail(format!("{status} {body:?} is not JSON ({e}) for {form:?}"))
        })?;
        let error = body["error"].as_str().unwrap_or_default();
        prop_assert!(
            TOKEN_ERRORS.contains(&error),
            "{status} {body} for {form:?} {authorization:?}"
        );
        prop_assert_eq!(
            status,
            if error == "invalid_client" { 401 } else { 400 },
            "{} for {:?}",
            body,
            form
        );
        Ok(())
    });
    runtime.block_on(server.stop());
    if let Err(e) = outcome {
        panic!("token endpoint: {e}");
    }
}

// ---------------------------------------------------------------------------------------------
// LDAP filters
// ---------------------------------------------------------------------------------------------

/// The equality assertions of a parsed filter, in order, and whether anything but `&`, `|`
/// and equalities occurs (a wildcard, a presence test, a negation: what an injection adds).
fn equalities(tag: &StructureTag, found: &mut Vec<(Vec<u8>, Vec<u8>)>) -> bool {
    const AND: u64 = 0;
    const OR: u64 = 1;
    const EQUALITY: u64 = 3;
    match (tag.id, &tag.payload) {
        (AND | OR, PL::C(children)) => children.iter().all(|child| equalities(child, found)),
        (EQUALITY, PL::C(parts)) => match parts.as_slice() {
            [
                StructureTag {
                    payload: PL::P(attribute),
                    ..
                },
                StructureTag {
                    payload: PL::P(value),
                    ..
                },
            ] => {
                found.push((attribute.clone(), value.clone()));
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// `filter` parsed as ldap3 sends it: its equalities, or why it is not made of them alone.
fn parsed_equalities(filter: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
    let tag = ldap3::parse_filter(filter).map_err(|()| format!("{filter:?} does not parse"))?;
    let mut found = Vec::new();
    if !equalities(&tag.into_structure(), &mut found) {
        return Err(format!("{filter:?} has more than equalities"));
    }
    Ok(found
        .into_iter()
        .map(|(attribute, value)| (String::from_utf8_lossy(&attribute).into_owned(), value))
        .collect())
}

proptest! {
    #![proptest_config(fuzz_config())]

    /// Whatever the user name: the user search filter is the template's own structure with
    /// an equality on exactly that name; nothing in the name can add a wildcard or a clause.
    #[test]
    fn the_user_filter_is_an_equality_on_exactly_the_name(
        username in prop_oneof![any::<String>(), tricky_text(20)].prop_filter("sign-in names are never empty", |u| !u.is_empty()),
    ) {
        let filter = user_filter("(&(objectClass=inetOrgPerson)(uid={username}))", &username);
        let found = parsed_equalities(&filter).map_err(TestCaseError::fail)?;
        prop_assert_eq!(
            found,
            vec![
                ("objectClass".to_owned(), b"inetOrgPerson".to_vec()),
                ("uid".to_owned(), username.into_bytes()),
            ]
        );
    }

    /// The group search filter: an equality on exactly the member's DN and one on exactly the
    /// user name, whatever either contains (placeholders included).
    #[test]
    fn the_group_filter_is_equalities_on_exactly_the_dn_and_name(
        dn in prop_oneof![any::<String>(), tricky_text(20)].prop_filter("DNs are never empty", |d| !d.is_empty()),
        username in prop_oneof![any::<String>(), tricky_text(20)].prop_filter("names are never empty", |u| !u.is_empty()),
    ) {
        let filter = group_filter("(|(member={dn})(memberUid={username}))", &dn, &username);
        let found = parsed_equalities(&filter).map_err(TestCaseError::fail)?;
        prop_assert_eq!(
            found,
            vec![
                ("member".to_owned(), dn.into_bytes()),
                ("memberUid".to_owned(), username.into_bytes()),
            ]
        );
    }
}
