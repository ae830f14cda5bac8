//! Federation facts for the security monitor, collected from a real database on SQLite and
//! PostgreSQL and evaluated with the shipped policies.

mod support;

use std::path::Path;

use chrono::{Duration, Utc};
use novads_api::compliance::{self, PLATFORM_SUBJECT};
use novads_api::config;
use novads_api::db::Database;
use novads_api::federation::audit::{self, AuditEvent, AuditEventKind, AuditReason};
use novads_api::oidc::keys::{KeyEncryptionKey, SigningKeys};
use novads_monitor::{FactsDocument, Outcome, PolicySet, SourceState, SubjectKind};

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
    support::each_backend_with_owner(|db, owner| async move {
        let backend = db.backend();
        let mut config = config::parse(CONFIG).expect("config parses");
        let kek = support::test_kek_file();
        config.server.key_encryption_key_file = Some(kek.path().to_owned());
        let log = audit::AuditLog::start(db.clone(), support::audit_key());
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

        let now = Utc::now();
        let facts = compliance::collect(&config, &db, now)
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
        assert_eq!(platform["audit_rows_verified"], 7, "{backend:?}");
        assert_eq!(platform["audit_retention_days"], 400);
        assert_eq!(platform["audit_oldest_event_age_days"], 10, "{backend:?}");
        assert_eq!(platform["signing_key_age_days"], 0, "{backend:?}");
        assert_eq!(platform["next_signing_key_published"], true, "{backend:?}");
        assert!(!platform.contains_key("clock_offset_ms"));

        let talsi = subject(SubjectKind::Realm, "talsi");
        assert_eq!(talsi["directory_tls"], false);
        assert_eq!(talsi["directory_certificate_verified"], false);
        assert_eq!(talsi["lockout_threshold"], 5);
        assert_eq!(talsi["sign_ins_24h"], 3, "{backend:?}");
        assert_eq!(talsi["failed_sign_ins_24h"], 1, "{backend:?}");
        assert_eq!(talsi["lockouts_24h"], 1, "{backend:?}");
        assert_eq!(talsi["lockouts_daily_average_7d"], 1.0 / 7.0, "{backend:?}");
        // Nobody holds access in talsi; the other directory facts are not collected.
        assert_eq!(talsi["departed_with_access"], 0, "{backend:?}");
        assert!(!talsi.contains_key("enabled_accounts_days_since_sign_in"));
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
            Outcome::Error
        );

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
        let facts = compliance::collect(&config, &db, now)
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
    let facts: FactsDocument = compliance::collect_configured(&config, Utc::now()).await;
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
