//! Federation facts for the security monitor, collected from a real database on SQLite and
//! PostgreSQL and a real directory (slapd), and evaluated with the shipped policies.

mod support;

use std::path::Path;

use chrono::{Duration, Utc};
use novads_api::compliance::{self, PLATFORM_SUBJECT};
use novads_api::config;
use novads_api::db::Database;
use novads_api::federation::audit::{self, AuditEvent, AuditEventKind, AuditReason};
use novads_api::federation::directory::ldap::LdapDirectory;
use novads_api::oidc::keys::{KeyEncryptionKey, SigningKeys};
use novads_monitor::facts::{AdminGroups, MunicipalityInfo, Profile};
use novads_monitor::{FactsDocument, Outcome, PolicySet, SourceState, SubjectKind};
use novads_testkit::{Municipality, Slapd};

const CONFIG: &str = r#"
server: {listen: "127.0.0.1:0", issuer: "https://sso.example.lv"}
database: "sqlite::memory:"
audit: {retention_days: 400}
realms:
  - name: talsi
    ldap:
      urls: ["ldap://ldap.talsi.lv"]
      insecure: true
      user_base: "ou=people,dc=talsi,dc=lv"
  - name: kuldiga
    ldap:
      urls: ["ldaps://ldap.kuldiga.lv"]
      user_base: "ou=people,dc=kuldiga,dc=lv"
"#;

fn event(kind: AuditEventKind, realm: &str, hours_ago: i64) -> AuditEvent {
    let mut event = AuditEvent::new(kind);
    event.at = Utc::now() - Duration::hours(hours_ago);
    event.realm = Some(realm.into());
    event.username = Some(format!("anna@{realm}"));
    if kind == AuditEventKind::LoginFailed {
        event.reason = Some(AuditReason::BadCredentials);
    }
    event
}

/// A shared account `admin` in Talsi's `accounting` group, beside the fixture's people.
const SHARED_ADMIN: &str = "dn: uid=admin,ou=people,dc=talsi,dc=lv
objectClass: inetOrgPerson
uid: admin
cn: Talsu administrators
sn: Administrators
userPassword: Shared-Admin-1
";
const SHARED_ADMIN_IN_ACCOUNTING: &str = "dn: cn=accounting,ou=groups,dc=talsi,dc=lv
changetype: modify
add: member
member: uid=admin,ou=people,dc=talsi,dc=lv
";

/// Talsi's fixture directory with the shared account added.
async fn talsi_directory() -> Option<Slapd> {
    let slapd = Slapd::start(Municipality::Talsi).await?;
    slapd.ldapadd(SHARED_ADMIN).await.expect("add admin");
    slapd
        .ldapmodify(SHARED_ADMIN_IN_ACCOUNTING)
        .await
        .expect("add member");
    Some(slapd)
}

fn talsi_ldap(slapd: &Slapd) -> config::LdapConfig {
    let m = slapd.municipality();
    let mut ldap = config::LdapConfig::new(vec![slapd.url()], m.people_base());
    ldap.insecure = true;
    ldap.bind_dn = Some(m.service_dn().to_owned());
    ldap.bind_password = Some(m.service_password().to_owned());
    ldap.timeout_seconds = 2;
    ldap
}

fn admin_groups(municipality: &str, realm: &str, groups: &[&str]) -> AdminGroups {
    AdminGroups {
        municipality: municipality.into(),
        realm: realm.into(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    }
}

fn outcome(evaluation: &novads_monitor::Evaluation, check: &str, subject: &str) -> Outcome {
    evaluation
        .results
        .iter()
        .find(|r| r.check == check && r.subject.name == subject)
        .map(|r| r.outcome)
        .unwrap_or_else(|| panic!("no result of {check} on {subject}"))
}

fn policies() -> PolicySet {
    let set = PolicySet::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies"))
        .expect("policies load");
    assert!(set.problems.is_empty(), "{:?}", set.problems);
    set
}

#[tokio::test]
async fn federation_facts_from_the_database_and_the_configuration() {
    let Some(slapd) = talsi_directory().await else {
        return;
    };
    let talsi_ldap = talsi_ldap(&slapd);
    let talsi_ldap = &talsi_ldap;
    support::each_backend_with_owner(|db, owner| async move {
        let backend = db.backend();
        let mut config = config::parse(CONFIG).expect("config parses");
        config.realms[0].ldap = Some(talsi_ldap.clone());
        let kek = support::test_kek_file();
        config.server.key_encryption_key_file = Some(kek.path().to_owned());
        let log = audit::AuditLog::start(db.clone(), support::audit_key());
        // ilze last signed in 100 days ago; jana an hour ago.
        let mut ilze = event(AuditEventKind::LoginSucceeded, "talsi", 24 * 100);
        ilze.username = Some("ilze@talsi".into());
        ilze.subject = Some("talsi:ilze-entry".into());
        log.append(ilze).await.expect("append");
        // Ten days ago a lockout; today three attempts in talsi, one failed, one lockout.
        log.append(event(AuditEventKind::LockedOut, "talsi", 24 * 10))
            .await
            .expect("append");
        log.append(event(AuditEventKind::LockedOut, "talsi", 48))
            .await
            .expect("append");
        for kind in [
            AuditEventKind::LoginSucceeded,
            AuditEventKind::LoginSucceeded,
            AuditEventKind::LoginFailed,
            AuditEventKind::LockedOut,
        ] {
            log.append(event(kind, "talsi", 1)).await.expect("append");
        }
        log.append(event(AuditEventKind::LoginSucceeded, "kuldiga", 2))
            .await
            .expect("append");
        SigningKeys::load_or_init(&db, &KeyEncryptionKey::generate().expect("kek"))
            .await
            .expect("signing keys");
        // anna@kuldiga holds a live session; kuldiga's directory does not answer.
        let identity = serde_json::json!({
            "subject": "kuldiga:1", "realm": "kuldiga", "username": "anna@kuldiga",
            "email": null, "name": null, "groups": [], "roles": [], "trust": null,
            "directory": null, "audit_id": 1,
        });
        let expires = (Utc::now() + Duration::hours(8)).timestamp_millis();
        let insert = "INSERT INTO oidc_sessions (id_hash, identity, auth_time, last_seen, expires_at) \
                      VALUES ('h1', $1, 0, 0, $2)";
        match &db {
            Database::Sqlite(pool) => sqlx::query(insert)
                .bind(identity.to_string())
                .bind(expires)
                .execute(pool)
                .await
                .map(drop),
            Database::Postgres(pool) => sqlx::query(insert)
                .bind(identity.to_string())
                .bind(expires)
                .execute(pool)
                .await
                .map(drop),
        }
        .expect("session");

        let mut jana = event(AuditEventKind::LoginSucceeded, "talsi", 1);
        jana.username = Some("jana@talsi".into());
        log.append(jana).await.expect("append");

        let now = Utc::now();
        let municipalities = [
            // Talsi: it-admins is jana alone.
            admin_groups("talsi", "talsi", &["it-admins"]),
            // Another tenancy of the same realm: jana, janis.berzins, ilze, disabled and the
            // shared admin.
            admin_groups("talsi-services", "talsi", &["vpvkac-staff", "accounting"]),
            admin_groups("kuldiga", "kuldiga", &["it-admins"]),
            admin_groups("riga", "riga", &["it-admins"]),
        ];
        let facts = compliance::collect(&config, &db, now, &municipalities)
            .await
            .unwrap_or_else(|e| panic!("{backend:?}: {e}"));
        assert_eq!(
            facts.sources[&novads_monitor::Source::Federation],
            SourceState::Collected
        );
        let subject = |kind: SubjectKind, name: &str| {
            facts
                .subjects
                .iter()
                .find(|s| s.kind == kind && s.name == name)
                .unwrap_or_else(|| panic!("{backend:?}: no {kind} {name}"))
                .facts
                .clone()
        };
        let platform = subject(SubjectKind::Platform, PLATFORM_SUBJECT);
        assert_eq!(platform["audit_chain_intact"], true, "{backend:?}");
        assert_eq!(platform["audit_rows_verified"], 9, "{backend:?}");
        assert_eq!(platform["audit_retention_days"], 400);
        assert_eq!(platform["audit_oldest_event_age_days"], 100, "{backend:?}");
        assert_eq!(platform["signing_key_age_days"], 0, "{backend:?}");
        assert_eq!(platform["next_signing_key_published"], true, "{backend:?}");
        assert!(!platform.contains_key("clock_offset_ms"));

        let talsi = subject(SubjectKind::Realm, "talsi");
        assert_eq!(talsi["directory_tls"], false);
        assert_eq!(talsi["directory_certificate_verified"], false);
        assert_eq!(talsi["lockout_threshold"], 5);
        assert_eq!(talsi["sign_ins_24h"], 4, "{backend:?}");
        assert_eq!(talsi["failed_sign_ins_24h"], 1, "{backend:?}");
        assert_eq!(talsi["lockouts_24h"], 1, "{backend:?}");
        assert_eq!(talsi["lockouts_daily_average_7d"], 1.0 / 7.0, "{backend:?}");
        // Nobody holds access in talsi.
        assert_eq!(talsi["departed_with_access"], 0, "{backend:?}");
        // Six accounts, five enabled (`disabled` is locked by an administrator): ilze 100
        // days without a sign-in, jana signed in today, the others were created today.
        assert_eq!(talsi["directory_accounts"], 6, "{backend:?}");
        assert_eq!(talsi["directory_listing_truncated"], false);
        let mut days: Vec<i64> = serde_json::from_value(
            talsi["enabled_accounts_days_since_sign_in"].clone(),
        )
        .expect("a list of days");
        days.sort_unstable();
        assert_eq!(days, [0, 0, 0, 0, 100], "{backend:?}");
        // The fixture's default policy (pwdCheckQuality 0, so pwdMinLength is not enforced;
        // pwdLockout with pwdMaxFailure 5; no expiry, no history), read by the service account.
        assert_eq!(
            talsi["password_policies"],
            serde_json::json!(["cn=default,ou=policies,dc=talsi,dc=lv"])
        );
        assert_eq!(talsi["password_min_length"], 0);
        assert_eq!(talsi["directory_lockout_failures"], 5);
        assert_eq!(talsi["password_max_age_days"], 0);
        assert_eq!(talsi["password_history"], 0);
        let municipality = |name: &str| {
            facts
                .subjects
                .iter()
                .find(|s| s.kind == SubjectKind::Municipality && s.name == name)
                .unwrap_or_else(|| panic!("{backend:?}: no municipality {name}"))
        };
        let talsi_admins = &municipality("talsi").facts;
        assert_eq!(talsi_admins["admin_members"], 1);
        assert_eq!(talsi_admins["generic_admin_accounts"], 0);
        let services = &municipality("talsi-services").facts;
        assert_eq!(services["admin_members"], 5);
        assert_eq!(services["generic_admin_accounts"], 1);
        for (name, reason) in [
            ("kuldiga", "directory of realm kuldiga"),
            ("riga", "realm riga of municipality riga is not configured"),
        ] {
            let SourceState::Failed(failed) =
                &municipality(name).sources[&novads_monitor::Source::Federation]
            else {
                panic!("{backend:?}: {name}'s admins cannot be counted");
            };
            assert!(failed.contains(reason), "{failed}");
        }
        let kuldiga = subject(SubjectKind::Realm, "kuldiga");
        assert_eq!(kuldiga["directory_tls"], true);
        assert_eq!(kuldiga["sign_ins_24h"], 1, "{backend:?}");
        let kuldiga_source = &facts
            .subjects
            .iter()
            .find(|s| s.name == "kuldiga")
            .expect("kuldiga")
            .sources[&novads_monitor::Source::Federation];
        let SourceState::Failed(reason) = kuldiga_source else {
            panic!("{backend:?}: kuldiga's directory is down: {kuldiga_source:?}");
        };
        assert!(reason.contains("directory of realm kuldiga"), "{reason}");

        let set = policies();
        // The cluster's facts describe the municipalities (namespace, profile).
        let mut facts = facts;
        for m in &municipalities {
            facts.municipalities.push(MunicipalityInfo {
                name: m.municipality.clone(),
                namespace: format!("muni-{}", m.municipality),
                profile: Profile::Standard,
            });
        }
        let evaluation = novads_monitor::evaluate(&set, &facts, &[], now);
        assert_eq!(
            outcome(&evaluation, "audit.chain-intact", PLATFORM_SUBJECT),
            Outcome::Pass
        );
        assert_eq!(
            outcome(&evaluation, "auth.directory-tls", "talsi"),
            Outcome::Fail
        );
        // A directory that does not answer makes the realm's checks errors, never passes.
        assert_eq!(
            outcome(&evaluation, "auth.directory-tls", "kuldiga"),
            Outcome::Error
        );
        assert_eq!(
            outcome(&evaluation, "accounts.departed-with-access", "talsi"),
            Outcome::Pass
        );
        assert_eq!(
            outcome(&evaluation, "accounts.stale", "talsi"),
            Outcome::Fail
        );
        for (check, subject, expected) in [
            ("accounts.admins-per-municipality", "talsi", Outcome::Pass),
            ("accounts.shared-admin", "talsi", Outcome::Pass),
            ("accounts.admins-per-municipality", "talsi-services", Outcome::Fail),
            ("accounts.shared-admin", "talsi-services", Outcome::Fail),
            // A directory that does not answer, a realm that is not configured: errors.
            ("accounts.admins-per-municipality", "kuldiga", Outcome::Error),
            ("accounts.shared-admin", "riga", Outcome::Error),
            // novads offers no second factor: the check fails honestly, never passes.
            ("auth.mfa-privileged", "talsi", Outcome::Fail),
            // The directory's own policy: it locks after 5 failures, but enforces no length,
            // expiry or history.
            ("auth.directory-lockout", "talsi", Outcome::Pass),
            ("auth.password-policy", "talsi", Outcome::Warn),
            ("auth.password-max-age", "talsi", Outcome::Warn),
            ("auth.password-history", "talsi", Outcome::Warn),
            ("auth.password-policy", "kuldiga", Outcome::Error),
            ("auth.mfa-privileged", "kuldiga", Outcome::Error),
        ] {
            let result = evaluation
                .results
                .iter()
                .find(|r| r.check == check && r.subject.name == subject)
                .unwrap_or_else(|| panic!("no result of {check} on {subject}"));
            assert_eq!(
                result.outcome, expected,
                "{backend:?}: {check} on {subject}: {}",
                result.message.en
            );
        }

        // Someone with direct database access edits a row.
        let disable_trigger = match &owner {
            Database::Sqlite(_) => "DROP TRIGGER audit_events_no_update",
            Database::Postgres(_) => {
                "ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only"
            }
        };
        owner.execute(disable_trigger).await.expect("disable trigger");
        owner
            .execute("UPDATE audit_events SET reason = 'trust_denied' WHERE id = 3")
            .await
            .expect("tamper");
        let facts = compliance::collect(&config, &db, now, &[])
            .await
            .expect("collect");
        let evaluation = novads_monitor::evaluate(&set, &facts, &[], now);
        assert_eq!(
            outcome(&evaluation, "audit.chain-intact", PLATFORM_SUBJECT),
            Outcome::Fail,
            "{backend:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_database_gives_errors_never_passes() {
    let mut config = config::parse(CONFIG).expect("config parses");
    let dir = tempfile::tempdir().expect("tempdir");
    config.database = format!("sqlite://{}", dir.path().join("missing.db").display());
    let facts: FactsDocument = compliance::collect_configured(&config, Utc::now(), &[]).await;
    let SourceState::Failed(reason) = &facts.sources[&novads_monitor::Source::Federation] else {
        panic!("the federation source failed: {:?}", facts.sources);
    };
    assert!(reason.contains("missing.db"), "{reason}");
    assert!(
        !dir.path().join("missing.db").exists(),
        "reading never creates a database"
    );

    // The platform and every configured realm are still there: their checks are errors.
    let evaluation = novads_monitor::evaluate(&policies(), &facts, &[], Utc::now());
    for check in [
        "audit.chain-intact",
        "auth.directory-tls",
        "keys.rotation",
        "accounts.stale",
    ] {
        let result = evaluation
            .results
            .iter()
            .find(|r| r.check == check)
            .expect("result");
        assert_eq!(result.outcome, Outcome::Error, "{check}");
        assert!(
            result.message.en.contains("missing.db"),
            "{:?}",
            result.message
        );
    }
    assert!(
        evaluation
            .results
            .iter()
            .any(|r| r.subject.name == "kuldiga")
    );
    assert!(
        evaluation
            .results
            .iter()
            .all(|r| r.outcome != Outcome::Pass)
    );
}

#[tokio::test]
async fn directory_listings_are_bounded_and_fail_with_the_reason() {
    let Some(slapd) = talsi_directory().await else {
        return;
    };
    let ldap = talsi_ldap(&slapd);
    let password = ldap.bind_password.clone();
    let directory = LdapDirectory::new(&ldap, password.clone(), None);

    let listing = directory.accounts(100).await.expect("listing");
    assert!(!listing.truncated);
    let mut names: Vec<&str> = listing
        .accounts
        .iter()
        .map(|a| a.username.as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "admin",
            "disabled",
            "ilze",
            "jana",
            "janis.berzins",
            "lockout"
        ]
    );
    let account = |name: &str| {
        listing
            .accounts
            .iter()
            .find(|a| a.username == name)
            .expect("listed")
    };
    assert_eq!(account("jana").groups, ["it-admins", "vpvkac-staff"]);
    assert_eq!(account("admin").groups, ["accounting"]);
    assert!(!account("disabled").enabled, "locked by an administrator");
    assert!(account("jana").enabled && account("jana").person);
    assert!(account("jana").created.is_some(), "createTimestamp is read");
    assert_ne!(account("jana").id, "uid=jana,ou=people,dc=talsi,dc=lv");

    // Groups from the group entries (`group_search`) when the user entry carries none.
    let mut searched = ldap.clone();
    searched.attributes.groups = "novadsNoSuchAttribute".into();
    searched.group_search = Some(config::GroupSearchConfig {
        base: slapd.municipality().groups_base().into(),
        filter: "(member={dn})".into(),
        name_attribute: "cn".into(),
        nested_depth: 1,
    });
    let by_search = LdapDirectory::new(&searched, password.clone(), None)
        .accounts(100)
        .await
        .expect("listing");
    let groups_of = |name: &str| {
        by_search
            .accounts
            .iter()
            .find(|a| a.username == name)
            .map(|a| a.groups.clone())
            .expect("listed")
    };
    assert_eq!(groups_of("jana"), ["it-admins", "vpvkac-staff"]);
    assert_eq!(groups_of("janis.berzins"), ["vpvkac-staff"]);
    assert_eq!(groups_of("admin"), ["accounting"]);
    assert!(groups_of("lockout").is_empty());

    // Paged in pages smaller than the directory, stopped at the limit.
    let listing = directory.accounts(2).await.expect("listing");
    assert_eq!(listing.accounts.len(), 2);
    assert!(listing.truncated);

    // A directory that does not answer names itself.
    let mut down = ldap.clone();
    down.urls = vec![slapd.down_url()];
    let error = LdapDirectory::new(&down, password, None)
        .accounts(100)
        .await
        .expect_err("the directory is down");
    assert!(error.contains(&slapd.down_url()), "{error}");
}

/// The fixture's default policy made strict: 12 characters with quality always checked, a
/// 90-day expiry and a history of 5.
const STRICT_POLICY: &str = "dn: cn=default,ou=policies,dc=talsi,dc=lv
changetype: modify
replace: pwdMinLength
pwdMinLength: 12
-
replace: pwdCheckQuality
pwdCheckQuality: 2
-
replace: pwdMaxAge
pwdMaxAge: 7776000
-
replace: pwdInHistory
pwdInHistory: 5
";

/// A second, weaker policy for service accounts.
const SERVICES_POLICY: &str = "dn: cn=services,ou=policies,dc=talsi,dc=lv
objectClass: organizationalRole
objectClass: pwdPolicy
cn: services
pwdAttribute: userPassword
pwdMinLength: 8
pwdCheckQuality: 2
pwdInHistory: 5
pwdMaxAge: 7776000
";

#[tokio::test]
async fn password_policies_from_a_directory_with_the_ppolicy_overlay() {
    let Some(slapd) = talsi_directory().await else {
        return;
    };
    slapd
        .ldapmodify(STRICT_POLICY)
        .await
        .expect("strict policy");
    let ldap = talsi_ldap(&slapd);
    let password = ldap.bind_password.clone();
    let read = |ldap: config::LdapConfig| {
        let password = password.clone();
        async move {
            LdapDirectory::new(&ldap, password, None)
                .password_policies()
                .await
        }
    };

    // Found in the naming context of user_base, read as written.
    let stated = read(ldap.clone()).await.expect("policies");
    assert_eq!(stated.len(), 1, "{stated:?}");
    let default = &stated[0];
    assert_eq!(default.dn, "cn=default,ou=policies,dc=talsi,dc=lv");
    assert_eq!(
        (default.min_length, default.check_quality, default.lockout),
        (12, 2, true)
    );
    assert_eq!(
        (
            default.max_failure,
            default.max_age_seconds,
            default.in_history
        ),
        (5, 7_776_000, 5)
    );

    // Through the collector on both databases: every password check passes on the strict
    // policy; a configured DN that does not exist is an error naming it, never a pass.
    let talsi_ldap = &ldap;
    support::each_backend(|db| async move {
        let backend = db.backend();
        let mut config = config::parse(CONFIG).expect("config parses");
        config.realms[0].ldap = Some(talsi_ldap.clone());
        config.realms.truncate(1);
        let kek = support::test_kek_file();
        config.server.key_encryption_key_file = Some(kek.path().to_owned());
        let now = Utc::now();
        let municipalities = [admin_groups("talsi", "talsi", &["it-admins"])];
        let mut facts = compliance::collect(&config, &db, now, &municipalities)
            .await
            .unwrap_or_else(|e| panic!("{backend:?}: {e}"));
        facts.municipalities.push(MunicipalityInfo {
            name: "talsi".into(),
            namespace: "muni-talsi".into(),
            profile: Profile::Standard,
        });
        let realm = facts
            .subjects
            .iter_mut()
            .find(|s| s.kind == SubjectKind::Realm)
            .expect("realm");
        realm.municipalities = vec!["talsi".into()];
        let evaluation = novads_monitor::evaluate(&policies(), &facts, &[], now);
        for check in [
            "auth.password-policy",
            "auth.directory-lockout",
            "auth.password-max-age",
            "auth.password-history",
        ] {
            let result = evaluation
                .results
                .iter()
                .find(|r| r.check == check)
                .expect("result");
            assert_eq!(
                result.outcome,
                Outcome::Pass,
                "{backend:?}: {check}: {}",
                result.message.en
            );
        }

        let mut missing = talsi_ldap.clone();
        missing.password_policy_dn = Some("cn=nothing,ou=policies,dc=talsi,dc=lv".into());
        config.realms[0].ldap = Some(missing);
        let facts = compliance::collect(&config, &db, now, &[])
            .await
            .unwrap_or_else(|e| panic!("{backend:?}: {e}"));
        let realm = facts
            .subjects
            .iter()
            .find(|s| s.kind == SubjectKind::Realm)
            .expect("realm");
        assert!(!realm.facts.contains_key("password_min_length"));
        let evaluation = novads_monitor::evaluate(&policies(), &facts, &[], now);
        let result = evaluation
            .results
            .iter()
            .find(|r| r.check == "auth.password-policy")
            .expect("result");
        assert_eq!(result.outcome, Outcome::Error, "{backend:?}");
        assert!(
            result
                .message
                .en
                .contains("password policy of realm talsi: the password policy entry cn=nothing"),
            "{}",
            result.message.en
        );
        // The realm's other checks still run.
        assert_eq!(
            evaluation
                .results
                .iter()
                .find(|r| r.check == "accounts.departed-with-access")
                .map(|r| r.outcome),
            Some(Outcome::Pass)
        );
    })
    .await;

    // A weaker second policy is read too; the configured DN reads that one alone.
    slapd
        .ldapadd(SERVICES_POLICY)
        .await
        .expect("services policy");
    let mut found = read(ldap.clone()).await.expect("policies");
    found.sort_by(|a, b| a.dn.cmp(&b.dn));
    let dns: Vec<&str> = found.iter().map(|p| p.dn.as_str()).collect();
    assert_eq!(
        dns,
        [
            "cn=default,ou=policies,dc=talsi,dc=lv",
            "cn=services,ou=policies,dc=talsi,dc=lv"
        ]
    );
    let mut facts = novads_monitor::facts::RealmFacts::default();
    compliance::realm::password_facts(&found, &mut facts);
    assert_eq!(facts.password_min_length, Some(8), "the weakest policy");
    assert_eq!(
        facts.directory_lockout_failures,
        Some(0),
        "services never lock"
    );
    let mut configured = ldap.clone();
    configured.password_policy_dn = Some("cn=default,ou=policies,dc=talsi,dc=lv".into());
    assert_eq!(read(configured.clone()).await.expect("policy").len(), 1);

    // An entry that is not a policy; a directory without any policy; one that is down.
    configured.password_policy_dn = Some(slapd.municipality().people_base().into());
    let error = read(configured).await.expect_err("not a policy");
    assert!(error.contains("is not a password policy"), "{error}");
    slapd
        .ldapmodify(
            "dn: cn=services,ou=policies,dc=talsi,dc=lv\nchangetype: delete\n\n\
             dn: cn=default,ou=policies,dc=talsi,dc=lv\nchangetype: delete\n",
        )
        .await
        .expect("delete policies");
    let error = read(ldap.clone()).await.expect_err("no policy");
    assert!(
        error.contains("no password policy (objectClass pwdPolicy)")
            && error.contains("under dc=talsi,dc=lv"),
        "{error}"
    );
    let mut down = ldap.clone();
    down.urls = vec![slapd.down_url()];
    let error = read(down).await.expect_err("down");
    assert!(error.contains(&slapd.down_url()), "{error}");
}
