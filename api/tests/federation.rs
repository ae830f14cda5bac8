//! The federation engine against real directories: three municipalities' slapd instances
//! (LDAPS, StartTLS, and failover from a dead URL), trusts between them, lockout counted in a
//! real database, and the audit trail on SQLite and PostgreSQL.

mod support;

use std::net::IpAddr;
use std::time::Duration;

use novads_api::config::{
    AuditConfig, ClientConfig, Config, GroupSearchConfig, LdapConfig, LockoutConfig, Mode,
    RealmConfig, ServerConfig, TrustConfig,
};
use novads_api::db::Database;
use novads_api::federation::audit::{self, AuditReason};
use novads_api::federation::lockout::account_key;
use novads_api::federation::{Federation, LoginRefused, LoginRequest, setup};
use novads_testkit::fixtures::{kuldiga, talsi, ventspils};
use novads_testkit::{Municipality, Postgres, Slapd, User};
use support::each_backend;

/// Three directories, configured as docs/configuration.md describes them.
struct World {
    talsi: Slapd,
    ventspils: Slapd,
    kuldiga: Slapd,
    kek: tempfile::NamedTempFile,
}

impl World {
    async fn start() -> Option<World> {
        let (talsi, ventspils, kuldiga) = tokio::join!(
            Slapd::start_tls(Municipality::Talsi),
            Slapd::start_tls(Municipality::Ventspils),
            Slapd::start(Municipality::Kuldiga),
        );
        Some(World {
            talsi: talsi?,
            ventspils: ventspils?,
            kuldiga: kuldiga?,
            kek: support::test_kek_file(),
        })
    }

    /// talsi over LDAPS, ventspils over StartTLS, kuldiga over plain LDAP with a dead first
    /// URL. Ventspils trusts Talsi's vpvkac-staff (as operators); Talsi trusts Ventspils's
    /// it-admins.
    fn config(&self, database: &str) -> Config {
        let talsi = LdapConfig {
            urls: vec![self.talsi.ldaps_url().expect("TLS instance")],
            ca_file: self.talsi.ca_pem_path().map(ToOwned::to_owned),
            ..ldap_base(&self.talsi)
        };
        let ventspils = LdapConfig {
            urls: vec![self.ventspils.url()],
            start_tls: true,
            ca_file: self.ventspils.ca_pem_path().map(ToOwned::to_owned),
            ..ldap_base(&self.ventspils)
        };
        let kuldiga = LdapConfig {
            urls: vec![self.kuldiga.down_url(), self.kuldiga.url()],
            insecure: true,
            ..ldap_base(&self.kuldiga)
        };
        let realm = |name: &str, ldap| RealmConfig {
            name: name.to_owned(),
            display_name: None,
            ldap: Some(ldap),
            static_directory: None,
        };
        let client = |id: &str, realm: &str| ClientConfig {
            client_id: id.to_owned(),
            realm: realm.to_owned(),
            redirect_uris: vec![format!("https://{id}.example/cb")],
            post_logout_redirect_uris: vec![],
            secret_hash: None,
            public: true,
            id_token_signed_response_alg: Default::default(),
        };
        let config = Config {
            server: ServerConfig {
                listen: "127.0.0.1:0".parse().expect("addr"),
                issuer: "http://127.0.0.1:8080".into(),
                shutdown_grace_seconds: 1,
                key_encryption_key_file: Some(self.kek.path().to_owned()),
                key_encryption_key_env: None,
                trusted_proxies: vec![],
                management_listen: None,
                header_read_timeout_seconds: 10,
                max_connections: 1024,
                authorization_requests_per_minute: 120,
            },
            database: database.to_owned(),
            database_password_file: None,
            realms: vec![
                realm("talsi", talsi),
                realm("ventspils", ventspils),
                realm("kuldiga", kuldiga),
            ],
            trusts: vec![
                TrustConfig {
                    trusting: "ventspils".into(),
                    trusted: "talsi".into(),
                    groups: vec!["vpvkac-staff".into()],
                    roles: [("vpvkac-staff".to_owned(), "operator".to_owned())].into(),
                    clients: vec![],
                },
                TrustConfig {
                    trusting: "talsi".into(),
                    trusted: "ventspils".into(),
                    groups: vec!["it-admins".into()],
                    roles: Default::default(),
                    clients: vec![],
                },
            ],
            clients: vec![
                client("vpvkac", "ventspils"),
                client("talsi-portal", "talsi"),
            ],
            lockout: LockoutConfig::default(),
            audit: AuditConfig::default(),
            admin_api: Default::default(),
        };
        assert_eq!(
            config.validate(Mode::Dev),
            vec![],
            "test configuration is valid"
        );
        config
    }
}

fn ldap_base(slapd: &Slapd) -> LdapConfig {
    let m = slapd.municipality();
    LdapConfig {
        bind_dn: Some(m.service_dn().to_owned()),
        bind_password: Some(m.service_password().to_owned()),
        timeout_seconds: 2,
        pool_size: 4,
        ..LdapConfig::new(vec![], m.people_base())
    }
}

async fn open(config: &Config) -> (Federation, Database) {
    let db = Database::open(&config.database, None)
        .await
        .expect("database");
    let registry = prometheus::Registry::new();
    let federation = setup::build(config, db.clone(), &registry).expect("federation");
    (federation, db)
}

fn attempt(username: &str, password: &str, client: Option<&str>) -> LoginRequest {
    LoginRequest {
        username: username.to_owned(),
        password: password.to_owned(),
        client_id: client.map(str::to_owned),
        source_ip: Some("192.0.2.10".parse::<IpAddr>().expect("ip")),
        user_agent: Some("novads-tests".into()),
    }
}

fn login_as(user: &User, client: Option<&str>) -> LoginRequest {
    attempt(&user.login(), user.password, client)
}

#[track_caller]
fn assert_refused(
    result: Result<novads_api::federation::Identity, LoginRefused>,
    reason: AuditReason,
) -> LoginRefused {
    match result {
        Ok(identity) => panic!("expected refusal ({reason}), signed in as {identity:?}"),
        Err(refused) => {
            assert_eq!(refused.reason, reason, "{refused:?}");
            assert_eq!(refused.to_string(), "wrong username or password");
            assert!(refused.audit_id.is_some(), "every attempt is audited");
            refused
        }
    }
}

async fn audit_rows(db: &Database) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    audit::export(
        db,
        &Default::default(),
        audit::ExportFormat::Jsonl,
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

/// The whole story on one database backend.
async fn signs_in_across_realms(database: &str) {
    let Some(world) = World::start().await else {
        return;
    };
    let config = world.config(database);
    let (federation, db) = open(&config).await;

    // Own realm, over LDAPS with the realm's CA.
    let jana = federation
        .login(&login_as(&talsi::JANA, Some("talsi-portal")))
        .await
        .expect("jana signs in");
    assert_eq!(jana.username, "jana@talsi");
    assert_eq!(jana.groups, vec!["talsi:it-admins", "talsi:vpvkac-staff"]);
    assert!(jana.subject.starts_with("talsi:") && jana.subject.len() > "talsi:".len() + 30);
    assert!(jana.roles.is_empty() && jana.trust.is_none());
    assert_eq!(jana.directory, world.talsi.ldaps_url());

    // The subject is stable and never the username.
    let again = federation
        .login(&login_as(&talsi::JANA, None))
        .await
        .expect("again");
    assert_eq!(again.subject, jana.subject);
    assert!(!jana.subject.contains("jana"));

    // StartTLS realm.
    let peteris = federation
        .login(&login_as(&ventspils::PETERIS, Some("vpvkac")))
        .await
        .expect("peteris signs in over StartTLS");
    assert_eq!(peteris.groups, vec!["ventspils:vpvkac-staff"]);

    // Failover: kuldiga's first URL is dead; the second answers.
    let edgars = federation
        .login(&login_as(&kuldiga::EDGARS, None))
        .await
        .expect("edgars signs in through the second URL");
    assert_eq!(edgars.directory, Some(world.kuldiga.url()));

    // Trust: Ventspils accepts Talsi's vpvkac-staff, as operators.
    let jana_at_ventspils = federation
        .login(&login_as(&talsi::JANA, Some("vpvkac")))
        .await
        .expect("trusted group admitted");
    assert_eq!(jana_at_ventspils.roles, vec!["operator"]);
    let trust = jana_at_ventspils.trust.expect("a trust was used");
    assert_eq!(
        (trust.trusting.as_str(), trust.trusted.as_str()),
        ("ventspils", "talsi")
    );
    // ... but not Talsi's accountant.
    assert_refused(
        federation
            .login(&login_as(&talsi::ILZE, Some("vpvkac")))
            .await,
        AuditReason::TrustDenied,
    );
    // The other direction has its own filter: Talsi accepts Ventspils's it-admins only.
    federation
        .login(&login_as(&ventspils::AGNESE, Some("talsi-portal")))
        .await
        .expect("ventspils admin admitted by talsi");
    assert_refused(
        federation
            .login(&login_as(&ventspils::PETERIS, Some("talsi-portal")))
            .await,
        AuditReason::TrustDenied,
    );
    // Non-transitive, undeclared: Kuldīga is trusted by nobody.
    assert_refused(
        federation
            .login(&login_as(&kuldiga::LIGA, Some("vpvkac")))
            .await,
        AuditReason::TrustDenied,
    );

    // Every attempt above is one row, with its true reason, and the chain verifies.
    let rows = audit_rows(&db).await;
    assert_eq!(rows.len(), 9);
    let reasons: Vec<&str> = rows.iter().filter_map(|r| r["reason"].as_str()).collect();
    assert_eq!(reasons, vec!["trust_denied"; 3]);
    assert!(rows.iter().all(|r| r["source_ip"] == "192.0.2.10"));
    let verification = audit::verify(&db, &support::audit_key())
        .await
        .expect("verify");
    assert_eq!(verification.first_broken, None);
    assert_eq!(verification.rows_checked, 9);
}

#[tokio::test]
async fn signs_in_across_realms_with_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    signs_in_across_realms(&format!("sqlite://{}/novads.db", dir.path().display())).await;
}

#[tokio::test]
async fn signs_in_across_realms_with_postgres() {
    let Some(pg) = Postgres::start().await else {
        return;
    };
    signs_in_across_realms(&pg.create_database("federation").await).await;
}

/// Ventspils trusts Talsi's client-service staff for its client-service system (`vpvkac`)
/// alone: Jana reaches it, but not Ventspils's Redmine — neither by password, nor through the
/// single sign-on session, nor by refreshing the tokens she got for `vpvkac`.
#[tokio::test]
async fn a_trust_scoped_to_applications_admits_to_those_alone() {
    let Some(world) = World::start().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = world.config(&format!("sqlite://{}/novads.db", dir.path().display()));
    config.clients.push(ClientConfig {
        client_id: "redmine".into(),
        realm: "ventspils".into(),
        redirect_uris: vec!["https://redmine.ventspils.example/cb".into()],
        post_logout_redirect_uris: vec![],
        secret_hash: None,
        public: true,
        id_token_signed_response_alg: Default::default(),
    });
    config.trusts[0].clients = vec!["vpvkac".into()];
    assert_eq!(config.validate(Mode::Dev), vec![], "valid configuration");
    let (federation, db) = open(&config).await;

    let jana = federation
        .login(&login_as(&talsi::JANA, Some("vpvkac")))
        .await
        .expect("the listed application admits Talsi's client-service staff");
    assert_eq!(jana.roles, vec!["operator"]);
    let refused = assert_refused(
        federation
            .login(&login_as(&talsi::JANA, Some("redmine")))
            .await,
        AuditReason::TrustDenied,
    );
    assert!(refused.detail.contains("redmine"), "{refused:?}");
    assert_refused(
        federation
            .resume_session(&jana, "redmine", None, None)
            .await,
        AuditReason::TrustDenied,
    );
    let refreshed = federation.refresh(&jana, "redmine", None, None).await;
    assert!(
        matches!(&refreshed, Err(r) if r.reason == AuditReason::TrustDenied),
        "{refreshed:?}"
    );
    // Ventspils's own people are not affected by a trust.
    federation
        .login(&login_as(&ventspils::PETERIS, Some("redmine")))
        .await
        .expect("own realm");

    let rows = audit_rows(&db).await;
    let reasons: Vec<&str> = rows
        .iter()
        .map(|r| r["reason"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(
        reasons,
        vec!["-", "trust_denied", "trust_denied", "trust_denied", "-"]
    );
    assert_eq!(rows[1]["client_id"], "redmine");
}

#[tokio::test]
async fn bad_input_and_attacks_get_the_generic_answer_and_the_true_audit_reason() {
    let Some(world) = World::start().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = world.config(&format!("sqlite://{}/novads.db", dir.path().display()));
    let (federation, db) = open(&config).await;
    let login = |u: &str, p: &str| {
        let request = attempt(u, p, None);
        let federation = &federation;
        async move { federation.login(&request).await }
    };

    assert_refused(
        login("jana@talsi", "wrong").await,
        AuditReason::BadCredentials,
    );
    assert_refused(login("nobody@talsi", "x").await, AuditReason::UnknownUser);
    assert_refused(
        login(&talsi::DISABLED.login(), talsi::DISABLED.password).await,
        AuditReason::AccountDisabled,
    );
    assert_refused(login("jana@riga", "x").await, AuditReason::UnknownUser);

    // An empty password never reaches the directory (it would be an unauthenticated bind).
    let refused = assert_refused(login("jana@talsi", "").await, AuditReason::BadCredentials);
    let rows = audit_rows(&db).await;
    let row = rows
        .iter()
        .find(|r| r["id"] == refused.audit_id.expect("row"))
        .expect("row");
    assert!(row["directory"].is_null(), "no server was asked: {row}");

    // LDAP filter injection: metacharacters are escaped, so these match nobody.
    for name in [
        "*@talsi",
        "jana)(uid=*@talsi",
        "*)(|(uid=*@talsi",
        "j*@talsi",
    ] {
        assert_refused(
            login(name, talsi::JANA.password).await,
            AuditReason::UnknownUser,
        );
    }
    assert_refused(
        login("ja\u{0}na@talsi", "x").await,
        AuditReason::InvalidRequest,
    );

    // DN special characters in the user's own entry are no obstacle.
    federation
        .login(&login_as(&talsi::JANIS_BERZINS, None))
        .await
        .expect("user whose DN has a comma, quotes and Latvian letters");

    // Unicode: full-width letters fold to the same name; Cyrillic look-alikes do not.
    federation
        .login(&attempt("ｊａｎａ@talsi", talsi::JANA.password, None))
        .await
        .expect("NFKC folds full-width letters");
    assert_refused(
        login("\u{0458}ana@talsi", talsi::JANA.password).await,
        AuditReason::UnknownUser,
    );

    // Oversize input.
    assert_refused(
        login(&"a".repeat(10 * 1024), "x").await,
        AuditReason::InvalidRequest,
    );
    assert_refused(
        login("jana@talsi", &"p".repeat(10 * 1024)).await,
        AuditReason::BadCredentials,
    );
    assert_refused(
        federation
            .login(&attempt(
                "jana@talsi",
                talsi::JANA.password,
                Some("no-such-app"),
            ))
            .await,
        AuditReason::InvalidRequest,
    );
    assert_eq!(
        audit::verify(&db, &support::audit_key())
            .await
            .expect("verify")
            .first_broken,
        None
    );
}

#[tokio::test]
async fn accounts_lock_after_repeated_failures_and_unlock_after_expiry() {
    let Some(world) = World::start().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = world.config(&format!("sqlite://{}/novads.db", dir.path().display()));
    // Lock before slapd's own ppolicy (5) would, and briefly.
    config.lockout = LockoutConfig {
        max_failures: 3,
        window_seconds: 60,
        lock_seconds: 2,
    };
    let (federation, db) = open(&config).await;
    let user = &talsi::LOCKOUT;
    for _ in 0..3 {
        assert_refused(
            federation
                .login(&attempt(&user.login(), "wrong", None))
                .await,
            AuditReason::BadCredentials,
        );
    }
    // Locked: even the right password is refused, without asking the directory.
    let refused = assert_refused(
        federation.login(&login_as(user, None)).await,
        AuditReason::LockedOut,
    );
    let rows = audit_rows(&db).await;
    let row = rows
        .iter()
        .find(|r| r["id"] == refused.audit_id.expect("row"))
        .expect("row");
    assert_eq!(row["event"], "locked_out");
    assert!(row["directory"].is_null());

    tokio::time::sleep(Duration::from_millis(2100)).await;
    federation
        .login(&login_as(user, None))
        .await
        .expect("the real user signs in after the lock expires");
}

#[tokio::test]
async fn directory_ppolicy_lock_is_reported_as_locked_out() {
    let Some(world) = World::start().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = world.config(&format!("sqlite://{}/novads.db", dir.path().display()));
    // novads's own lock is set high so that slapd's ppolicy (5 failures) locks first.
    config.lockout.max_failures = 50;
    let (federation, _db) = open(&config).await;
    let user = &talsi::LOCKOUT;
    for _ in 0..5 {
        let _ = federation
            .login(&attempt(&user.login(), "wrong", None))
            .await;
    }
    assert_refused(
        federation.login(&login_as(user, None)).await,
        AuditReason::LockedOut,
    );
}

#[tokio::test]
async fn directory_outages_never_lock_anyone() {
    let Some(world) = World::start().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = world.config(&format!("sqlite://{}/novads.db", dir.path().display()));
    config.lockout.max_failures = 2;
    let (federation, db) = open(&config).await;

    world.kuldiga.stop();
    for _ in 0..5 {
        let refused = assert_refused(
            federation.login(&login_as(&kuldiga::EDGARS, None)).await,
            AuditReason::DirectoryUnavailable,
        );
        assert!(refused.detail.contains("unavailable"), "{refused:?}");
    }
    let store = novads_api::federation::lockout::LockoutStore::new(
        db.clone(),
        setup::lockout_policy(&config.lockout),
    );
    assert_eq!(
        store
            .get(&account_key("kuldiga", "edgars"))
            .await
            .expect("read"),
        None,
        "outages are not the user's failures"
    );

    // Sign-ins resume by themselves once the directory is back.
    world.kuldiga.restart().await;
    let mut signed_in = false;
    for _ in 0..40 {
        if federation
            .login(&login_as(&kuldiga::EDGARS, None))
            .await
            .is_ok()
        {
            signed_in = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        signed_in,
        "sign-ins did not resume after the directory came back"
    );
}

#[tokio::test]
async fn a_directory_that_hangs_times_out() {
    let Some(world) = World::start().await else {
        return;
    };
    // Accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let silent_url = format!("ldap://{}", silent.local_addr().expect("addr"));
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = world.config(&format!("sqlite://{}/novads.db", dir.path().display()));
    let kuldiga = config.realms[2].ldap.as_mut().expect("ldap");
    kuldiga.urls = vec![silent_url];
    kuldiga.timeout_seconds = 1;
    let (federation, _db) = open(&config).await;
    let started = std::time::Instant::now();
    assert_refused(
        federation.login(&login_as(&kuldiga::EDGARS, None)).await,
        AuditReason::DirectoryUnavailable,
    );
    // Bounded by the timeout, not hanging: generous margin, this is not a speed target.
    assert!(started.elapsed() < Duration::from_secs(10));
    hold.abort();
}

#[tokio::test]
async fn audit_unavailable_fails_closed() {
    let Some(world) = World::start().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = world.config(&format!("sqlite://{}/novads.db", dir.path().display()));
    let (federation, db) = open(&config).await;
    federation
        .login(&login_as(&talsi::JANA, None))
        .await
        .expect("works while the database does");
    db.close().await;
    let refused = federation
        .login(&login_as(&talsi::JANA, None))
        .await
        .expect_err("no audit row, no sign-in");
    assert_eq!(refused.audit_id, None);
    assert_eq!(refused.to_string(), "wrong username or password");

    // Nothing half-written: the one committed row is still the whole, intact chain.
    let reopened = Database::open(&config.database, None)
        .await
        .expect("reopen");
    assert_eq!(audit_rows(&reopened).await.len(), 1);
    assert_eq!(
        audit::verify(&reopened, &support::audit_key())
            .await
            .expect("verify")
            .first_broken,
        None
    );
}

/// `login_then` runs the caller's write only for a success, overlapped with the audit row's
/// commit, and hands out its result only when the row is committed.
#[tokio::test]
async fn login_then_answers_only_with_the_row_committed() {
    let Some(world) = World::start().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = world.config(&format!("sqlite://{}/novads.db", dir.path().display()));
    let (federation, db) = open(&config).await;

    let (identity, seen) = federation
        .login_then(&login_as(&talsi::JANA, None), |identity| async move {
            identity.audit_id
        })
        .await
        .expect("signed in");
    assert_eq!(seen, 0, "the row's id is not known before its commit");
    let rows = audit_rows(&db).await;
    assert_eq!(rows.len(), 1);
    assert!(
        identity.audit_id > 0,
        "the answer carries the committed row"
    );

    // A refusal never runs the caller's write.
    let ran = std::sync::atomic::AtomicBool::new(false);
    let wrong = LoginRequest {
        password: "not-her-password".into(),
        ..login_as(&talsi::JANA, None)
    };
    let refused = federation
        .login_then(&wrong, |_| async {
            ran.store(true, std::sync::atomic::Ordering::SeqCst);
        })
        .await
        .expect_err("wrong password");
    assert_eq!(refused.reason, AuditReason::BadCredentials);
    assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));

    // Without the audit row, what the caller produced is not handed out.
    db.close().await;
    let refused = federation
        .login_then(&login_as(&talsi::JANA, None), |_| async { "a code" })
        .await
        .expect_err("no audit row, no sign-in");
    assert_eq!(refused.audit_id, None);
}

#[tokio::test]
async fn refresh_lookup_sees_leavers_and_group_changes() {
    let Some(world) = World::start().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = world.config(&format!("sqlite://{}/novads.db", dir.path().display()));
    let (federation, _db) = open(&config).await;
    let realm = federation.realm("talsi").expect("realm");
    let found = realm
        .directory
        .lookup("jana")
        .await
        .result
        .expect("jana is there");
    assert_eq!(found.groups, vec!["it-admins", "vpvkac-staff"]);

    world
        .talsi
        .ldapmodify(&format!("dn: {}\nchangetype: delete\n", talsi::ILZE.dn))
        .await
        .expect("delete the leaver");
    assert_eq!(
        realm.directory.lookup("ilze").await.result,
        Err(novads_api::federation::directory::DirectoryFailure::UnknownUser)
    );
    assert!(matches!(
        realm.directory.lookup("disabled").await.result,
        Err(novads_api::federation::directory::DirectoryFailure::AccountDisabled(_))
    ));
}

#[tokio::test]
async fn groups_by_search_and_disabled_filter() {
    let Some(world) = World::start().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = world.config(&format!("sqlite://{}/novads.db", dir.path().display()));
    let kuldiga = config.realms[2].ldap.as_mut().expect("ldap");
    // Ignore memberOf; find groups by searching for group entries that list the user.
    kuldiga.attributes.groups = "novadsNoSuchAttribute".into();
    kuldiga.group_search = Some(GroupSearchConfig {
        base: Municipality::Kuldiga.groups_base().into(),
        filter: "(member={dn})".into(),
        name_attribute: "cn".into(),
        nested_depth: 2,
    });
    // Treat everyone in the library as disabled, to prove the filter is consulted.
    kuldiga.disabled_filter = Some("(mail=liga@*)".into());
    let (federation, _db) = open(&config).await;
    let edgars = federation
        .login(&login_as(&kuldiga::EDGARS, None))
        .await
        .expect("edgars");
    let mut expected: Vec<String> = kuldiga::EDGARS
        .groups
        .iter()
        .map(|g| format!("kuldiga:{g}"))
        .collect();
    expected.sort();
    assert_eq!(edgars.groups, expected);
    assert_refused(
        federation.login(&login_as(&kuldiga::LIGA, None)).await,
        AuditReason::AccountDisabled,
    );
}

/// Runs SQL as a database writer would: any text, several statements at once.
async fn write_raw(db: &Database, sql: String) -> Result<u64, sqlx::Error> {
    let sql = sqlx::raw_sql(sqlx::AssertSqlSafe(sql));
    Ok(match db {
        Database::Sqlite(pool) => sql.execute(pool).await?.rows_affected(),
        Database::Postgres(pool) => sql.execute(pool).await?.rows_affected(),
    })
}

/// Every row of the trail, in id order, as a database writer reads it.
async fn rows(db: &Database) -> Vec<audit::AuditRecord> {
    let mut out = Vec::new();
    audit::export(
        db,
        &audit::ExportFilter::default(),
        audit::ExportFormat::Jsonl,
        &mut out,
    )
    .await
    .expect("export");
    String::from_utf8(out)
        .expect("utf-8")
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("json");
            let text = |k: &str| v[k].as_str().map(str::to_owned);
            audit::AuditRecord {
                id: v["id"].as_i64().expect("id"),
                at: text("at").expect("at"),
                event: text("event").expect("event"),
                realm: text("realm"),
                username: text("username"),
                subject: text("subject"),
                client_id: text("client_id"),
                source_ip: text("source_ip"),
                user_agent: text("user_agent"),
                reason: text("reason"),
                directory: text("directory"),
                latency_ms: v["latency_ms"].as_i64().expect("latency"),
                prev_hash: text("prev_hash").expect("prev_hash"),
                hash: text("hash").expect("hash"),
                detail: text("detail"),
            }
        })
        .collect()
}

fn sha256_hex(input: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, input)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Takes the guards off the trail, as the owner of the tables (or of the SQLite file) can.
async fn drop_guards(owner: &Database) {
    let sql = match owner {
        Database::Sqlite(_) => {
            "DROP TRIGGER audit_events_no_update; DROP TRIGGER audit_events_no_delete; \
             DROP TRIGGER audit_checkpoints_no_update; DROP TRIGGER audit_checkpoints_no_delete; \
             DROP TRIGGER audit_chain_keying_no_update; DROP TRIGGER audit_chain_keying_no_delete"
        }
        Database::Postgres(_) => {
            "ALTER TABLE audit_events DISABLE TRIGGER USER; \
             ALTER TABLE audit_checkpoints DISABLE TRIGGER USER; \
             ALTER TABLE audit_chain_keying DISABLE TRIGGER USER"
        }
    };
    write_raw(owner, sql.into()).await.expect("drop guards");
}

/// Rewrites the trail from row `from` on as someone without the key would: plain SHA-256 over
/// each row's content, chained, and the head moved to match.
async fn rechain_without_the_key(owner: &Database, from: i64) {
    let mut prev = Some(audit::GENESIS_HASH.to_owned());
    for mut row in rows(owner).await {
        if row.id < from {
            prev = Some(row.hash);
            continue;
        }
        row.prev_hash = prev.take().expect("a row before");
        row.hash = sha256_hex(&row.mac_input());
        write_raw(
            owner,
            format!(
                "UPDATE audit_events SET reason = {}, prev_hash = '{}', hash = '{}' WHERE id = {}",
                row.reason
                    .as_deref()
                    .map_or("NULL".to_owned(), |r| format!("'{r}'")),
                row.prev_hash,
                row.hash,
                row.id
            ),
        )
        .await
        .expect("rewrite row");
        write_raw(
            owner,
            format!(
                "UPDATE audit_chain_head SET last_id = {}, last_hash = '{}' WHERE id = 1",
                row.id, row.hash
            ),
        )
        .await
        .expect("move head");
        prev = Some(row.hash);
    }
}

fn refused(result: Result<u64, sqlx::Error>, what: &str) {
    let error = result.expect_err(what).to_string();
    assert!(
        error.contains("append-only")
            || error.contains("permission denied")
            || error.contains("is fixed"),
        "{what}: {error}"
    );
}

/// A database writer can no longer rewrite the trail and recompute the chain: rows are keyed
/// with a key that never enters the database. The application's own connection cannot change,
/// delete or truncate rows, move the keying mark or prune recent rows; the owner who takes
/// the guards off and rewrites rows, plants a checkpoint or moves the mark is named by
/// `verify`; rows cut off the end with the head are shown by the head recorded earlier.
#[tokio::test]
async fn a_database_writer_cannot_rewrite_the_audit_trail() {
    support::each_backend_with_owner(|db, owner| async move {
        let backend = db.backend();
        let key = support::audit_key();
        let log = audit::AuditLog::start(db.clone(), key.clone());
        for i in 0..20 {
            let mut event = audit::AuditEvent::new(audit::AuditEventKind::LoginFailed);
            event.username = Some(format!("user{i}@talsi"));
            event.reason = Some(AuditReason::BadCredentials);
            log.append(event).await.expect("append");
        }
        let intact = audit::verify(&db, &key).await.expect("verify");
        assert_eq!(intact.first_broken, None, "{backend:?}");
        let head = intact.head.expect("head of an intact chain");
        assert_eq!(head.id, 20);
        assert_eq!(
            audit::verify(&db, &support::audit_key_of([9; 32]))
                .await
                .expect("verify")
                .first_broken
                .map(|b| b.id),
            Some(1),
            "{backend:?}: another key-encryption key does not verify the trail"
        );

        // The application's connection (SQL injection) changes, deletes and truncates nothing.
        for sql in [
            "UPDATE audit_events SET reason = 'trust_denied' WHERE id = 7",
            "DELETE FROM audit_events WHERE id > 18",
            "DELETE FROM audit_events",
            "UPDATE audit_chain_keying SET keyed_from = 1000",
            "DELETE FROM audit_chain_keying",
        ] {
            refused(
                write_raw(&db, sql.into()).await,
                &format!("{backend:?}: {sql}"),
            );
        }
        if backend == novads_api::db::Backend::Postgres {
            refused(
                write_raw(&db, "TRUNCATE audit_events".into()).await,
                "TRUNCATE",
            );
            // The old escape hatch, a session setting, opens nothing.
            refused(
                write_raw(
                    &db,
                    "SET novads.audit_prune = 'on'; DELETE FROM audit_events WHERE id > 18".into(),
                )
                .await,
                "setting novads.audit_prune",
            );
            // Pruning through the owner's function refuses rows younger than a day.
            let prune = write_raw(
                &db,
                format!(
                    "SELECT novads_audit_prune(20, '{}', 'now', 'forged')",
                    head.hash
                ),
            )
            .await
            .expect_err("recent rows cannot be pruned")
            .to_string();
            assert!(prune.contains("younger than a day"), "{prune}");
        }
        assert_eq!(
            audit::verify(&db, &key).await.expect("verify").head,
            Some(head.clone()),
            "{backend:?}: nothing changed"
        );

        // The owner takes the guards off, edits row 7 and recomputes the chain and the head
        // as the unkeyed chain allowed: row 7 is named.
        drop_guards(&owner).await;
        write_raw(
            &owner,
            "UPDATE audit_events SET reason = 'trust_denied' WHERE id = 7".into(),
        )
        .await
        .expect("tamper");
        rechain_without_the_key(&owner, 7).await;
        let verification = audit::verify(&db, &key).await.expect("verify");
        let broken = verification.first_broken.expect("tampering detected");
        assert_eq!(broken.id, 7, "{backend:?}: {broken:?}");
        assert_eq!(verification.rows_checked, 6);
        assert!(broken.problem.contains("changed"), "{broken:?}");
        assert_eq!(verification.head, None);

        // Moving the mark so that every row counts as written before the key, and rechaining
        // everything, leaves a chain that checks by itself, like one cut off entirely; the
        // head recorded earlier (the server's log) names the rewrite.
        write_raw(
            &owner,
            "UPDATE audit_chain_keying SET keyed_from = 1000".into(),
        )
        .await
        .expect("move the mark");
        rechain_without_the_key(&owner, 1).await;
        let broken = audit::verify_expecting(&db, &key, Some(head))
            .await
            .expect("verify")
            .first_broken
            .expect("the recorded head names the rewrite");
        assert_eq!(broken.id, 20, "{backend:?}: {broken:?}");
        assert!(broken.problem.contains("rewritten"), "{broken:?}");
    })
    .await;
}

/// Rows cut off the end together with the head leave a shorter chain that is intact in
/// itself; the head recorded earlier (`--expect-head`) shows the cut. A planted checkpoint,
/// the database's licence to delete, carries no valid MAC and is named.
#[tokio::test]
async fn cut_off_rows_and_planted_checkpoints_are_shown() {
    support::each_backend_with_owner(|db, owner| async move {
        let backend = db.backend();
        let key = support::audit_key();
        let log = audit::AuditLog::start(db.clone(), key.clone());
        for _ in 0..12 {
            log.append(audit::AuditEvent::new(
                audit::AuditEventKind::LoginSucceeded,
            ))
            .await
            .expect("append");
        }
        let recorded = audit::verify(&db, &key)
            .await
            .expect("verify")
            .head
            .expect("head");
        for _ in 0..3 {
            log.append(audit::AuditEvent::new(audit::AuditEventKind::Logout))
                .await
                .expect("append");
        }
        let later = audit::verify_expecting(&db, &key, Some(recorded.clone()))
            .await
            .expect("verify");
        assert_eq!(
            later.first_broken, None,
            "{backend:?}: a later head extends it"
        );
        assert_eq!(later.head.as_ref().map(|h| h.id), Some(15));

        // The owner deletes rows 11 to 15 and moves the head back to row 10.
        drop_guards(&owner).await;
        let ten = rows(&owner)
            .await
            .into_iter()
            .find(|r| r.id == 10)
            .expect("row 10");
        write_raw(&owner, "DELETE FROM audit_events WHERE id > 10".into())
            .await
            .expect("delete");
        write_raw(
            &owner,
            format!(
                "UPDATE audit_chain_head SET last_id = 10, last_hash = '{}' WHERE id = 1",
                ten.hash
            ),
        )
        .await
        .expect("move head");
        assert_eq!(
            audit::verify(&db, &key).await.expect("verify").first_broken,
            None,
            "{backend:?}: without a head kept elsewhere a cut at a row boundary looks intact"
        );
        let broken = audit::verify_expecting(&db, &key, Some(recorded))
            .await
            .expect("verify")
            .first_broken
            .expect("the recorded head shows the cut");
        assert_eq!(broken.id, 10, "{backend:?}: {broken:?}");
        assert!(broken.problem.contains("expected head"), "{broken:?}");

        // A checkpoint planted to delete rows 1 to 5 without the key.
        let five = rows(&owner)
            .await
            .into_iter()
            .find(|r| r.id == 5)
            .expect("row 5");
        write_raw(
            &owner,
            format!(
                "INSERT INTO audit_checkpoints (pruned_at, through_id, through_hash, mac) \
                 VALUES ('2026-01-01T00:00:00.000000Z', 5, '{}', '{}')",
                five.hash,
                "0".repeat(64)
            ),
        )
        .await
        .expect("plant a checkpoint");
        let broken = audit::verify(&db, &key)
            .await
            .expect("verify")
            .first_broken
            .expect("planted checkpoint named");
        assert_eq!(broken.id, 5, "{backend:?}: {broken:?}");
        assert!(broken.problem.contains("checkpoint"), "{broken:?}");
    })
    .await;
}

/// A trail written before the chain was keyed stays verifiable after the upgrade: its rows
/// are checked as plain SHA-256, as before, and rows from the mark on are keyed.
#[tokio::test]
async fn an_upgraded_trail_verifies_old_rows_as_before_and_keys_new_ones() {
    support::each_backend_with_owner(|db, owner| async move {
        let backend = db.backend();
        let key = support::audit_key();
        // Five rows as novads wrote them before the upgrade, and the mark migration 0010 sets
        // after them.
        drop_guards(&owner).await;
        let mut prev = audit::GENESIS_HASH.to_owned();
        for id in 1..=5 {
            let mut row = audit::AuditRecord {
                id,
                at: format!("2025-01-0{id}T00:00:00.000000Z"),
                event: "login_succeeded".into(),
                realm: Some("talsi".into()),
                username: Some(format!("user{id}@talsi")),
                subject: None,
                client_id: None,
                source_ip: None,
                user_agent: None,
                reason: None,
                directory: None,
                latency_ms: 3,
                prev_hash: prev.clone(),
                hash: String::new(),
                detail: None,
            };
            row.hash = sha256_hex(&row.mac_input());
            write_raw(
                &owner,
                format!(
                    "INSERT INTO audit_events (id, at, event, realm, username, latency_ms, prev_hash, hash) \
                     VALUES ({id}, '{}', 'login_succeeded', 'talsi', '{}', 3, '{}', '{}')",
                    row.at,
                    row.username.as_deref().unwrap_or_default(),
                    row.prev_hash,
                    row.hash
                ),
            )
            .await
            .expect("legacy row");
            prev = row.hash;
        }
        write_raw(
            &owner,
            format!(
                "UPDATE audit_chain_head SET last_id = 5, last_hash = '{prev}' WHERE id = 1; \
                 UPDATE audit_chain_keying SET keyed_from = 6 WHERE id = 1"
            ),
        )
        .await
        .expect("mark");
        let log = audit::AuditLog::start(db.clone(), key.clone());
        for _ in 0..3 {
            log.append(audit::AuditEvent::new(audit::AuditEventKind::Logout))
                .await
                .expect("append");
        }
        let verification = audit::verify(&db, &key).await.expect("verify");
        assert_eq!(
            (verification.first_broken, verification.rows_checked),
            (None, 8),
            "{backend:?}"
        );
        let keyed = rows(&db).await;
        assert_eq!(keyed[5].prev_hash, prev, "the keyed chain continues the old one");
        assert_ne!(keyed[5].hash, sha256_hex(&keyed[5].mac_input()), "row 6 is keyed");

        // An old row edited without rechaining is still named, as before the upgrade.
        write_raw(
            &owner,
            "UPDATE audit_events SET latency_ms = 4 WHERE id = 2".into(),
        )
        .await
        .expect("tamper");
        let broken = audit::verify(&db, &key)
            .await
            .expect("verify")
            .first_broken
            .expect("edit detected");
        assert_eq!(broken.id, 2, "{backend:?}: {broken:?}");
    })
    .await;
}

#[tokio::test]
async fn replicas_share_lockout_counters_and_one_audit_chain() {
    let Some(world) = World::start().await else {
        return;
    };
    let Some(pg) = Postgres::start().await else {
        return;
    };
    let config = world.config(&pg.create_database("replicas").await);
    // Two replicas: separate pools, separate audit writers, one database.
    let (first, db) = open(&config).await;
    let (second, _) = open(&config).await;
    let user = &talsi::LOCKOUT;
    let wrong = attempt(&user.login(), "wrong", None);
    let (a, b, c, d) = tokio::join!(
        first.login(&wrong),
        second.login(&wrong),
        first.login(&wrong),
        second.login(&wrong),
    );
    for result in [a, b, c, d] {
        assert_refused(result, AuditReason::BadCredentials);
    }
    let store = novads_api::federation::lockout::LockoutStore::new(
        db.clone(),
        setup::lockout_policy(&config.lockout),
    );
    let counter = store
        .get(&account_key("talsi", "lockout"))
        .await
        .expect("read")
        .expect("counted");
    assert_eq!(counter.failures, 4, "no failure lost between replicas");
    assert_refused(first.login(&wrong).await, AuditReason::BadCredentials);
    // The fifth failure, on either replica, locks the account for both.
    assert_refused(
        second.login(&login_as(user, None)).await,
        AuditReason::LockedOut,
    );
    assert_refused(
        first.login(&login_as(user, None)).await,
        AuditReason::LockedOut,
    );

    let verification = audit::verify(&db, &support::audit_key())
        .await
        .expect("verify");
    assert_eq!(verification.first_broken, None);
    assert_eq!(verification.rows_checked, 7);
}

#[tokio::test]
async fn pruning_keeps_the_chain_verifiable() {
    each_backend(|db| async move {
        let backend = db.backend();
        let log = audit::AuditLog::start(db.clone(), support::audit_key());
        let old = chrono::DateTime::parse_from_rfc3339("2020-01-01T00:00:00Z")
            .expect("time")
            .to_utc();
        for i in 0..10 {
            let mut event = audit::AuditEvent::new(audit::AuditEventKind::LoginSucceeded);
            if i < 6 {
                event.at = old + chrono::Duration::minutes(i);
            }
            log.append(event).await.expect("append");
        }
        let cutoff = chrono::DateTime::parse_from_rfc3339("2021-01-01T00:00:00Z")
            .expect("time")
            .to_utc();
        let pruned = audit::prune(&db, &support::audit_key(), cutoff)
            .await
            .expect("prune");
        assert_eq!(pruned.rows, 6, "{backend:?}");
        assert_eq!(pruned.through_id, Some(6));
        let verification = audit::verify(&db, &support::audit_key())
            .await
            .expect("verify");
        assert_eq!(verification.first_broken, None, "{backend:?}");
        assert_eq!(verification.rows_checked, 4);
        // Appending continues the same chain.
        log.append(audit::AuditEvent::new(audit::AuditEventKind::Logout))
            .await
            .expect("append after prune");
        let verification = audit::verify(&db, &support::audit_key())
            .await
            .expect("verify");
        assert_eq!(
            (verification.first_broken, verification.rows_checked),
            (None, 5)
        );
        // Nothing older remains; pruning again is a no-op.
        assert_eq!(
            audit::prune(&db, &support::audit_key(), cutoff)
                .await
                .expect("prune")
                .rows,
            0
        );
    })
    .await;
}

#[tokio::test]
async fn entry_cache_skips_only_the_search() {
    let Some(world) = World::start().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = world.config(&format!("sqlite://{}/novads.db", dir.path().display()));
    config.realms[0]
        .ldap
        .as_mut()
        .expect("ldap")
        .entry_cache_seconds = 60;
    config.lockout.max_failures = 100;
    let (federation, _db) = open(&config).await;
    for user in [&talsi::JANA, &talsi::ILZE, &talsi::LOCKOUT] {
        federation
            .login(&login_as(user, None))
            .await
            .expect("fills the cache");
    }

    // A wrong password still goes to the directory, and counts there exactly once.
    for _ in 0..2 {
        assert_refused(
            federation
                .login(&attempt(&talsi::LOCKOUT.login(), "wrong", None))
                .await,
            AuditReason::BadCredentials,
        );
    }
    let entry = world
        .talsi
        .ldapsearch(talsi::LOCKOUT.dn, "(objectClass=*)", &["pwdFailureTime"])
        .await
        .expect("search");
    assert_eq!(entry.matches("pwdFailureTime:").count(), 2, "{entry}");

    // A leaver deleted after being cached cannot sign in, with the true reason.
    world
        .talsi
        .ldapmodify(&format!("dn: {}\nchangetype: delete\n", talsi::ILZE.dn))
        .await
        .expect("delete");
    assert_refused(
        federation.login(&login_as(&talsi::ILZE, None)).await,
        AuditReason::UnknownUser,
    );

    // An account disabled after being cached is refused by the directory at bind time.
    world
        .talsi
        .ldapmodify(&format!(
            "dn: {}\nchangetype: modify\nadd: pwdAccountLockedTime\npwdAccountLockedTime: 000001010000Z\n",
            talsi::JANA.dn
        ))
        .await
        .expect("disable");
    assert_refused(
        federation.login(&login_as(&talsi::JANA, None)).await,
        AuditReason::AccountDisabled,
    );
}

/// Forty wrong passwords for one account posted at once: only `max_failures` of them reach the
/// directory; the rest are refused as locked out without asking it. On both databases.
#[tokio::test]
async fn parallel_wrong_passwords_reach_the_directory_at_most_max_failures_times() {
    each_backend(|db| async move {
        let backend = db.backend();
        // A directory per backend: slapd's own ppolicy must not have counted earlier runs.
        let Some(world) = World::start().await else {
            return;
        };
        let mut config = world.config("sqlite://unused.db");
        // Below slapd's ppolicy (5), so that every lock seen here is novads's own.
        config.lockout.max_failures = 3;
        let registry = prometheus::Registry::new();
        let federation =
            std::sync::Arc::new(setup::build(&config, db.clone(), &registry).expect("federation"));
        let attempts: Vec<_> = (0..40)
            .map(|_| {
                let federation = federation.clone();
                tokio::spawn(async move {
                    federation
                        .login(&attempt(&talsi::JANA.login(), "wrong", None))
                        .await
                })
            })
            .collect();
        for attempt in attempts {
            let refused = attempt
                .await
                .expect("attempt ran")
                .expect_err("a wrong password never signs in");
            assert!(
                matches!(
                    refused.reason,
                    AuditReason::BadCredentials | AuditReason::LockedOut
                ),
                "{backend:?}: {refused:?}"
            );
        }

        let rows = audit_rows(&db).await;
        assert_eq!(rows.len(), 40, "{backend:?}: every attempt is audited");
        let reached: Vec<_> = rows.iter().filter(|r| !r["directory"].is_null()).collect();
        assert_eq!(
            reached.len(),
            3,
            "{backend:?}: attempts that reached the directory: {reached:#?}"
        );
        assert!(
            reached.iter().all(|r| r["reason"] == "bad_credentials"),
            "{backend:?}: {reached:#?}"
        );
        let locked = rows.iter().filter(|r| r["event"] == "locked_out").count();
        assert_eq!(
            locked, 37,
            "{backend:?}: the rest are refused as locked out"
        );
    })
    .await;
}

/// A source that keeps failing is told to wait (`throttled`, with the time to wait) instead of
/// being held inside the request, and its attempts meanwhile never reach the directory.
#[tokio::test]
async fn a_failing_source_is_told_to_wait() {
    each_backend(|db| async move {
        let backend = db.backend();
        let Some(world) = World::start().await else {
            return;
        };
        let config = world.config("sqlite://unused.db");
        let registry = prometheus::Registry::new();
        let federation = setup::build(&config, db.clone(), &registry).expect("federation");
        // Ten failures are free (default `source_free_failures`); one account each, so no
        // account locks.
        for i in 0..11 {
            let refused = federation
                .login(&attempt(&format!("ghost{i}@talsi"), "wrong", None))
                .await
                .expect_err("unknown user");
            assert_eq!(refused.retry_after, None, "{backend:?}: attempt {i}");
        }
        let started = std::time::Instant::now();
        let refused = federation
            .login(&login_as(&talsi::JANA, None))
            .await
            .expect_err("the source must wait first");
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "{backend:?}: answered at once, not held"
        );
        assert_eq!(refused.reason, AuditReason::Throttled, "{backend:?}");
        let wait = refused.retry_after.expect("told how long");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(250),
            "{backend:?}: {wait:?}"
        );
        let rows = audit_rows(&db).await;
        let row = rows
            .iter()
            .find(|r| r["id"] == refused.audit_id.expect("row"))
            .expect("row");
        assert_eq!(row["reason"], "throttled");
        assert!(row["directory"].is_null(), "the directory was not asked");

        // After the wait the owner signs in from the same address.
        tokio::time::sleep(wait + Duration::from_millis(20)).await;
        federation
            .login(&login_as(&talsi::JANA, None))
            .await
            .expect("signs in after waiting");
    })
    .await;
}
