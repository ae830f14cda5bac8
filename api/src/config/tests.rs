use std::io::Write;

use super::*;

const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$8YpaIqm2JnNn1wr8LaHp9Q$4RMXTTuhAlX2GjosOfvTsrijV6vzMpG7rgMtFPqISCs";

/// A complete, valid production configuration; each test breaks one thing in it.
fn valid_yaml() -> String {
    format!(
        r#"
server: {{ listen: "127.0.0.1:8080", issuer: "https://sso.novads.lv", key_encryption_key_env: NOVADS_TEST_KEK }}
database: "postgres://novads@db.internal/novads"
realms:
  - name: talsi
    display_name: "Talsu novads"
    ldap:
      urls: ["ldaps://ldap1.talsi.lv", "ldaps://ldap2.talsi.lv"]
      bind_dn: "cn=novads,ou=services,dc=talsi,dc=lv"
      bind_password_env: NOVADS_TEST_NEVER_SET
      user_base: "ou=people,dc=talsi,dc=lv"
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

fn errors_of(yaml: &str, mode: Mode) -> Vec<String> {
    match parse(yaml) {
        Err(e) => vec![e.to_string()],
        Ok(config) => config
            .validate(mode)
            .iter()
            .map(ToString::to_string)
            .collect(),
    }
}

/// Asserts that exactly one error is reported and that it contains every fragment.
#[track_caller]
fn assert_one_error(yaml: &str, fragments: &[&str]) {
    let errors = errors_of(yaml, Mode::Production);
    assert_eq!(errors.len(), 1, "expected one error, got {errors:#?}");
    for fragment in fragments {
        assert!(
            errors[0].contains(fragment),
            "error {:?} lacks {fragment:?}",
            errors[0]
        );
    }
    assert!(
        !errors[0].contains('\n'),
        "error is not one line: {errors:?}"
    );
}

#[test]
fn the_reference_configuration_is_valid() {
    let config = parse(&valid_yaml()).expect("parses");
    assert_eq!(config.validate(Mode::Production), vec![]);
    assert_eq!(config.realms.len(), 3);
    let ventspils = config.realm("ventspils").expect("realm");
    let ldap = ventspils.ldap.as_ref().expect("ldap");
    assert_eq!(ldap.attributes.id, "objectGUID");
    assert_eq!(
        ldap.attributes.username, "uid",
        "unset attributes keep defaults"
    );
    assert_eq!(ldap.user_filter, default_user_filter());
    assert_eq!(config.server.shutdown_grace_seconds, 20);
}

#[test]
fn the_design_document_example_parses() {
    // The example of docs/configuration.md, with files replaced by environment references.
    let yaml = valid_yaml().replace(
        "bind_password_env: NOVADS_TEST_NEVER_SET",
        "bind_password_file: /run/secrets/talsi\n      ca_file: /etc/novads/talsi-ca.pem",
    );
    let config = parse(&yaml).expect("parses");
    assert_eq!(config.validate(Mode::Production), vec![]);
}

#[test]
fn unknown_key_is_named_with_its_path() {
    let yaml = valid_yaml().replace(
        "user_base: \"ou=people,dc=talsi",
        "user_bse: \"ou=people,dc=talsi",
    );
    assert_one_error(&yaml, &["realms[0].ldap", "unknown key `user_bse`"]);
    let yaml = valid_yaml().replace("database:", "colour: blue\ndatabase:");
    assert_one_error(&yaml, &["unknown key `colour`"]);
}

#[test]
fn missing_key_is_named() {
    let yaml = valid_yaml().replace("database: \"postgres://novads@db.internal/novads\"\n", "");
    assert_one_error(&yaml, &["required key `database` is missing"]);
}

#[test]
fn wrong_type_is_named_with_its_path() {
    let yaml = valid_yaml().replace("start_tls: true", "start_tls: [yes]");
    assert_one_error(&yaml, &["realms[1].ldap.start_tls"]);
    let yaml = valid_yaml().replace("\"127.0.0.1:8080\"", "\"localhost-8080\"");
    assert_one_error(&yaml, &["server.listen"]);
}

#[test]
fn malformed_yaml_is_one_line() {
    assert_one_error("server: [unclosed", &["invalid YAML"]);
    assert_one_error("", &["empty"]);
    assert_one_error("- a\n- b\n", &["invalid type"]);
}

#[test]
fn duplicate_yaml_keys_are_refused() {
    let yaml = valid_yaml().replace("database:", "database: \"sqlite://a.db\"\ndatabase:");
    assert_one_error(&yaml, &["invalid YAML", "database"]);
}

#[test]
fn duplicate_realm_names_the_first() {
    let yaml = valid_yaml().replace("name: demo", "name: talsi");
    assert_one_error(
        &yaml,
        &["realms[2].name", "duplicate realm \"talsi\"", "realms[0]"],
    );
}

#[test]
fn trust_naming_an_unknown_realm() {
    let yaml = valid_yaml().replace("trusted: talsi", "trusted: kuldiga");
    assert_one_error(&yaml, &["trusts[0].trusted", "unknown realm \"kuldiga\""]);
}

#[test]
fn trust_rules() {
    let yaml = valid_yaml().replace("trusted: talsi", "trusted: ventspils");
    assert_one_error(&yaml, &["trusts[0]", "cannot trust itself"]);
    let yaml = valid_yaml().replace(
        "roles: { vpvkac-staff: operator }",
        "roles: { it-admins: operator }",
    );
    assert_one_error(&yaml, &["trusts[0].roles.it-admins", "does not admit"]);
    let yaml = valid_yaml().replace("groups: [vpvkac-staff]", "groups: [\"talsi:vpvkac-staff\"]");
    let errors = errors_of(&yaml, Mode::Production);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("trusts[0].groups[0]") && e.contains("':'")),
        "{errors:?}"
    );
}

#[test]
fn trust_clients_must_be_applications_of_the_trusting_realm() {
    let scoped = |clients: &str| {
        valid_yaml().replace(
            "roles: { vpvkac-staff: operator } }",
            &format!("roles: {{ vpvkac-staff: operator }}, clients: [{clients}] }}"),
        )
    };
    assert_eq!(
        errors_of(&scoped("vpvkac"), Mode::Production),
        Vec::<String>::new()
    );
    assert_eq!(
        errors_of(&scoped(""), Mode::Production),
        Vec::<String>::new()
    );
    assert_one_error(
        &scoped("vpvkac, redmine"),
        &["trusts[0].clients[1]", "unknown client id \"redmine\""],
    );
    assert_one_error(
        &scoped("cli"),
        &[
            "trusts[0].clients[0]",
            "belongs to realm \"talsi\"",
            "trusting realm \"ventspils\"",
        ],
    );
}

/// Anyone can make the service verify a configured hash (a wrong secret or password), so a
/// hash whose argon2 cost exceeds the cap is refused, with one line naming where it is.
#[test]
fn argon2_cost_above_the_cap_is_refused() {
    // The static user's hash comes first in the file, the client's second.
    let yaml = valid_yaml().replacen("m=19456", "m=1048576", 1);
    assert_one_error(
        &yaml,
        &[
            "realms[2].static.users[0].password_hash",
            "m=1048576,t=2,p=1",
            "above the cap m=65536,t=4,p=4",
        ],
    );
    let yaml = valid_yaml()
        .replacen("m=19456,t=2", "m=19456,t=2000", 2)
        .replacen("m=19456,t=2000", "m=19456,t=2", 1);
    assert_one_error(&yaml, &["clients[0].secret_hash", "t=2000"]);
    let yaml = valid_yaml().replacen("p=1$", "p=16$", 1);
    assert_one_error(&yaml, &["password_hash", "p=16"]);
    // At the cap is accepted.
    let yaml = valid_yaml().replace("m=19456,t=2,p=1", "m=65536,t=4,p=4");
    assert_eq!(errors_of(&yaml, Mode::Production), Vec::<String>::new());
}

#[test]
fn redirect_uri_must_be_absolute() {
    let yaml = valid_yaml().replace("https://vpvkac.example/cb", "/cb");
    assert_one_error(
        &yaml,
        &["clients[0].redirect_uris[0]", "not an absolute URI"],
    );
    let yaml = valid_yaml().replace(
        "https://vpvkac.example/cb",
        "https://vpvkac.example/cb#frag",
    );
    assert_one_error(&yaml, &["clients[0].redirect_uris[0]", "fragment"]);
    let yaml = valid_yaml().replace("https://vpvkac.example/cb", "http://vpvkac.example/cb");
    assert_one_error(&yaml, &["clients[0].redirect_uris[0]", "https"]);
    let yaml = valid_yaml().replace("https://vpvkac.example/cb", "javascript:alert(1)");
    assert_one_error(&yaml, &["clients[0].redirect_uris[0]"]);
}

#[test]
fn inline_secret_is_refused_outside_dev() {
    let yaml = valid_yaml().replace(
        "bind_password_env: NOVADS_TEST_NEVER_SET",
        "bind_password: hunter2",
    );
    assert_one_error(
        &yaml,
        &[
            "realms[0].ldap.bind_password",
            "inline secrets",
            "novads dev",
        ],
    );
    assert_eq!(errors_of(&yaml, Mode::Dev), Vec::<String>::new());

    let yaml = valid_yaml().replace("postgres://novads@db", "postgres://novads:hunter2@db");
    assert_one_error(&yaml, &["database", "inline password"]);
    let errors = errors_of(&yaml, Mode::Production).join("");
    assert!(
        !errors.contains("hunter2"),
        "a secret leaked into an error: {errors}"
    );
}

#[test]
fn ldap_rules() {
    let yaml = valid_yaml().replace("start_tls: true", "start_tls: false");
    assert_one_error(
        &yaml,
        &["realms[1].ldap.urls[0]", "unencrypted", "insecure: true"],
    );
    let yaml = valid_yaml().replace("start_tls: true", "insecure: true");
    assert_eq!(errors_of(&yaml, Mode::Production), Vec::<String>::new());
    let yaml = valid_yaml().replace("ldaps://ldap2.talsi.lv", "https://ldap2.talsi.lv");
    assert_one_error(&yaml, &["realms[0].ldap.urls[1]", "ldaps://"]);
    let yaml = valid_yaml().replace("      bind_password_env: NOVADS_TEST_NEVER_SET\n", "");
    assert_one_error(&yaml, &["realms[0].ldap", "bind_dn needs a password"]);
    let yaml = valid_yaml().replace(
        "user_base: \"ou=people,dc=ventspils,dc=lv\"",
        "user_base: \"ou=people,dc=ventspils,dc=lv\"\n      user_filter: \"(uid=jana)\"",
    );
    assert_one_error(&yaml, &["realms[1].ldap.user_filter", "{username}"]);
    let yaml = valid_yaml().replace(
        "user_base: \"ou=people,dc=ventspils,dc=lv\"",
        "user_base: \"ou=people,dc=ventspils,dc=lv\"\n      user_filter: \"(uid={username}\"",
    );
    assert_one_error(&yaml, &["realms[1].ldap.user_filter", "parenthesised"]);
}

#[test]
fn realm_needs_exactly_one_directory() {
    let yaml = valid_yaml().replace(
        "  - name: demo\n    static:",
        "  - name: demo\n    ldap: { urls: [\"ldaps://x.lv\"], user_base: \"dc=x\" }\n    static:",
    );
    assert_one_error(&yaml, &["realms[2]", "exactly one directory"]);
}

#[test]
fn realm_names_are_dns_labels() {
    let yaml = valid_yaml().replace("name: demo", "name: \"Demo Realm\"");
    assert_one_error(&yaml, &["realms[2].name", "DNS label"]);
}

#[test]
fn static_users_need_argon2id_hashes() {
    let yaml = valid_yaml().replace(
        &format!("password_hash: \"{HASH}\""),
        "password_hash: \"plaintext\"",
    );
    assert_one_error(
        &yaml,
        &["realms[2].static.users[0].password_hash", "argon2id"],
    );
}

#[test]
fn client_rules() {
    let yaml = valid_yaml().replace("realm: ventspils,", "realm: riga,");
    assert_one_error(&yaml, &["clients[0].realm", "unknown realm \"riga\""]);
    let yaml = valid_yaml().replace("client_id: cli,", "client_id: vpvkac,");
    assert_one_error(&yaml, &["clients[1].client_id", "duplicate client"]);
    let yaml = valid_yaml().replace(", public: true", "");
    assert_one_error(&yaml, &["clients[1].secret_hash", "confidential client"]);
}

#[test]
fn clients_choose_es256_or_rs256() {
    let config = parse(&valid_yaml()).expect("parses");
    assert_eq!(
        config.clients[0].id_token_signed_response_alg,
        SigningAlgorithm::Es256,
        "ES256 unless a client asks"
    );
    let yaml = valid_yaml().replace(
        "public: true }",
        "public: true, id_token_signed_response_alg: RS256 }",
    );
    let config = parse(&yaml).expect("parses");
    assert_eq!(config.validate(Mode::Production), vec![]);
    assert_eq!(
        config.clients[1].id_token_signed_response_alg,
        SigningAlgorithm::Rs256
    );
    // Anything the provider cannot sign with is refused, naming the key and the choices:
    // HMAC and `none` never, names in the wrong case neither (JOSE names are case-sensitive).
    for bad in ["HS256", "none", "PS256", "rs256", "\"\""] {
        let yaml = valid_yaml().replace(
            "public: true }",
            &format!("public: true, id_token_signed_response_alg: {bad} }}"),
        );
        assert_one_error(
            &yaml,
            &[
                "clients[1].id_token_signed_response_alg: ",
                "is not a supported signing algorithm",
                "ES256 (the default) or RS256",
            ],
        );
    }
    let yaml = valid_yaml().replace(
        "public: true }",
        "public: true, id_token_signed_response_alg: [RS256] }",
    );
    assert_one_error(&yaml, &["clients[1].id_token_signed_response_alg"]);
}

#[test]
fn issuer_must_be_absolute_https() {
    let yaml = valid_yaml().replace("https://sso.novads.lv", "sso.novads.lv");
    assert_one_error(&yaml, &["server.issuer", "absolute"]);
    let yaml = valid_yaml().replace("https://sso.novads.lv", "http://sso.novads.lv");
    assert_one_error(&yaml, &["server.issuer", "https"]);
}

#[test]
fn key_encryption_key_is_required_once() {
    let yaml = valid_yaml().replace(", key_encryption_key_env: NOVADS_TEST_KEK", "");
    assert_one_error(&yaml, &["server.key_encryption_key_file", "required"]);
    let yaml = valid_yaml().replace(
        "key_encryption_key_env: NOVADS_TEST_KEK",
        "key_encryption_key_env: NOVADS_TEST_KEK, key_encryption_key_file: /k",
    );
    assert_one_error(&yaml, &["server", "once"]);
}

#[test]
fn database_url_scheme_is_checked() {
    let yaml = valid_yaml().replace("postgres://novads@db.internal/novads", "mysql://db/novads");
    assert_one_error(&yaml, &["database", "not a database URL"]);
}

#[test]
fn every_error_is_reported_at_once() {
    let yaml = valid_yaml()
        .replace("name: demo", "name: talsi")
        .replace("trusted: talsi", "trusted: riga")
        .replace("https://vpvkac.example/cb", "cb");
    let errors = errors_of(&yaml, Mode::Production);
    assert_eq!(errors.len(), 3, "{errors:#?}");
}

#[test]
fn environment_overrides_listen_and_database() {
    let mut config = parse(&valid_yaml()).expect("parses");
    let env = |name: &str| match name {
        ENV_LISTEN => Some("0.0.0.0:9000".to_owned()),
        ENV_DATABASE_URL => Some("sqlite://override.db".to_owned()),
        _ => None,
    };
    config.apply_env(&env).expect("applies");
    assert_eq!(config.server.listen.to_string(), "0.0.0.0:9000");
    assert_eq!(config.database, "sqlite://override.db");

    let bad = |name: &str| (name == ENV_LISTEN).then(|| "nonsense".to_owned());
    let err = config.apply_env(&bad).expect_err("refuses");
    assert_eq!(err.path, ENV_LISTEN);
}

#[test]
fn load_reports_unreadable_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("absent.yaml");
    let err = load(&missing, Mode::Production).expect_err("missing file");
    assert_eq!(err.errors.len(), 1);
    assert!(err.to_string().starts_with(&missing.display().to_string()));
    assert!(err.to_string().contains("cannot read file"));

    let err = load(dir.path(), Mode::Production).expect_err("directory");
    assert!(err.to_string().contains("not a regular file"));

    // A valid file whose referenced files are missing: each one is named.
    let kek = dir.path().join("kek");
    std::fs::write(&kek, [1u8; 32]).expect("key");
    let yaml = valid_yaml()
        .replace(
            "bind_password_env: NOVADS_TEST_NEVER_SET",
            "bind_password_file: /nonexistent/talsi\n      ca_file: /nonexistent/ca.pem",
        )
        .replace(
            "key_encryption_key_env: NOVADS_TEST_KEK",
            &format!("key_encryption_key_file: {}", kek.display()),
        );
    let path = dir.path().join("novads.yaml");
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(yaml.as_bytes()))
        .expect("write");
    let err = load(&path, Mode::Production).expect_err("unreadable references");
    let text = err.to_string();
    assert_eq!(err.errors.len(), 2, "{text}");
    assert!(
        text.contains("realms[0].ldap.ca_file: cannot read /nonexistent/ca.pem"),
        "{text}"
    );
    assert!(text.contains("realms[0].ldap.bind_password_file"), "{text}");
}

#[test]
fn load_refuses_unset_environment_reference() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("novads.yaml");
    std::fs::write(&path, valid_yaml()).expect("write");
    let err = load(&path, Mode::Production).expect_err("env var unset");
    assert!(
        err.to_string().contains("NOVADS_TEST_NEVER_SET is not set"),
        "{err}"
    );
}

#[test]
fn load_refuses_oversize_and_binary_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let big = dir.path().join("big.yaml");
    let file = std::fs::File::create(&big).expect("create");
    file.set_len(MAX_CONFIG_BYTES + 1).expect("grow");
    assert!(
        load(&big, Mode::Production)
            .expect_err("too big")
            .to_string()
            .contains("limit")
    );

    let binary = dir.path().join("binary.yaml");
    std::fs::write(&binary, [0xff, 0xfe, 0x00, 0x41]).expect("write");
    assert!(
        load(&binary, Mode::Production)
            .expect_err("binary")
            .to_string()
            .contains("UTF-8")
    );
}

#[test]
fn redaction_hides_passwords() {
    assert_eq!(
        redact_url("postgres://u:secret@h/db"),
        "postgres://u:REDACTED@h/db"
    );
    assert_eq!(redact_url("sqlite://a.db"), "sqlite://a.db");
}

#[test]
fn lockout_and_audit_sections() {
    let config = parse(&valid_yaml()).expect("parses");
    assert_eq!(config.lockout, LockoutConfig::default());
    assert_eq!(config.lockout.max_failures, 5);
    assert_eq!(config.audit.retention_days, None);

    let yaml = format!("{}lockout: {{ max_failures: 0 }}\n", valid_yaml());
    assert_one_error(&yaml, &["lockout.max_failures", "between 1 and 1000"]);
    let yaml = format!("{}lockout: {{ lock_seconds: 0 }}\n", valid_yaml());
    assert_one_error(&yaml, &["lockout.lock_seconds"]);
    let yaml = format!("{}audit: {{ retention_days: 0 }}\n", valid_yaml());
    assert_one_error(&yaml, &["audit.retention_days"]);
    let yaml = format!("{}audit: {{ retention: 30 }}\n", valid_yaml());
    assert_one_error(&yaml, &["audit.retention", "unknown key"]);
    let yaml = format!("{}lockout: {{ max_failures: -1 }}\n", valid_yaml());
    assert_one_error(&yaml, &["lockout.max_failures"]);
}

#[test]
fn group_search_and_disabled_filter_rules() {
    let with = |extra: &str| {
        valid_yaml().replace(
            "user_base: \"ou=people,dc=ventspils,dc=lv\"",
            &format!("user_base: \"ou=people,dc=ventspils,dc=lv\"\n      {extra}"),
        )
    };
    let ok = with("group_search: { base: \"ou=groups,dc=ventspils,dc=lv\", nested_depth: 2 }");
    let config = parse(&ok).expect("parses");
    assert_eq!(config.validate(Mode::Production), vec![]);
    let search = config.realms[1]
        .ldap
        .as_ref()
        .and_then(|l| l.group_search.as_ref())
        .expect("group search");
    assert_eq!(search.filter, "(|(member={dn})(uniqueMember={dn}))");
    assert_eq!(search.name_attribute, "cn");

    assert_one_error(
        &with("group_search: { base: \"ou=g\", filter: \"(member=x)\" }"),
        &["realms[1].ldap.group_search.filter", "{dn}"],
    );
    assert_one_error(
        &with("group_search: { base: \"ou=g\", nested_depth: 9 }"),
        &["realms[1].ldap.group_search.nested_depth"],
    );
    assert_one_error(
        &with("disabled_filter: \"userAccountControl=2\""),
        &["realms[1].ldap.disabled_filter", "parenthesised"],
    );
    assert_one_error(&with("pool_size: 0"), &["realms[1].ldap.pool_size"]);
}

#[test]
fn trusted_proxies_are_cidrs() {
    let with = |proxies: &str| {
        valid_yaml().replace(
            "key_encryption_key_env: NOVADS_TEST_KEK }",
            &format!("key_encryption_key_env: NOVADS_TEST_KEK, trusted_proxies: {proxies} }}"),
        )
    };
    let config = parse(&with(r#"["10.0.0.0/8", "2001:db8::/32"]"#)).expect("parses");
    assert_eq!(config.server.trusted_proxies.len(), 2);
    assert!(
        parse(&valid_yaml())
            .expect("parses")
            .server
            .trusted_proxies
            .is_empty()
    );
    assert_one_error(&with(r#"["10.0.0.0/33"]"#), &["server.trusted_proxies"]);
    assert_one_error(&with(r#"["proxy.internal"]"#), &["server.trusted_proxies"]);
}

#[test]
fn connection_limits_and_the_management_listener_are_checked() {
    let with = |extra: &str| {
        valid_yaml().replace(
            "key_encryption_key_env: NOVADS_TEST_KEK }",
            &format!("key_encryption_key_env: NOVADS_TEST_KEK, {extra} }}"),
        )
    };
    let config = parse(&valid_yaml()).expect("parses");
    assert_eq!(config.server.header_read_timeout_seconds, 10);
    assert_eq!(config.server.max_connections, 1024);
    assert_eq!(config.server.management_listen, None);
    let config = parse(&with(r#"management_listen: "0.0.0.0:9090""#)).expect("parses");
    assert_eq!(
        config.server.management_listen,
        Some("0.0.0.0:9090".parse().expect("addr"))
    );
    assert_one_error(
        &with("header_read_timeout_seconds: 0"),
        &["server.header_read_timeout_seconds", "at least 1"],
    );
    assert_one_error(&with("max_connections: 0"), &["server.max_connections"]);
    assert_one_error(
        &with(r#"management_listen: "127.0.0.1:8080""#),
        &["server.management_listen", "differ"],
    );
}
