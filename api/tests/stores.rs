//! Every function of the sign-in, lockout and audit stores, on SQLite and on PostgreSQL.

mod support;

use novads_api::admin::audit::{Cursor, EventFilter, page};
use novads_api::db::Database;
use novads_api::federation::Identity;
use novads_api::federation::audit::{
    self, AuditEvent, AuditEventKind, AuditLog, ExportFilter, ExportFormat,
};
use novads_api::federation::lockout::{LockoutPolicy, LockoutStore};
use novads_api::oidc::keys::{KeyEncryptionKey, StoredIdentityKey, StoredRowKind};
use novads_api::oidc::request::ValidRequest;
use novads_api::oidc::sealed_request::PendingRequest;
use novads_api::oidc::store::{
    Exchange, FlowStore, REVOCATIONS_FRESH_FOR, RedeemedCode, RefreshUse, Rotation, hash,
};
use support::{each_backend, each_backend_with_owner, flow_store};

fn identity() -> Identity {
    Identity {
        subject: "talsi:jana".into(),
        realm: "talsi".into(),
        username: "jana@talsi".into(),
        email: None,
        name: None,
        groups: vec!["talsi:staff".into()],
        roles: Vec::new(),
        trust: None,
        directory: None,
        audit_id: 1,
    }
}

fn request() -> ValidRequest {
    ValidRequest {
        client_id: "app".into(),
        redirect_uri: "https://app.example/cb".into(),
        scope: "openid".into(),
        state: Some("s".into()),
        nonce: Some("n".into()),
        code_challenge: None,
        login_hint: None,
        prompt_none: false,
        prompt_login: false,
        max_age: None,
    }
}

fn accept(_: &RedeemedCode) -> Result<(), &'static str> {
    Ok(())
}

/// A code and the grant's first refresh token, through the same path as the login form.
async fn signed_in(store: &FlowStore) -> (String, String) {
    signed_in_as(store, &identity()).await
}

/// The session and the grant's first refresh token of `who`'s sign-in.
async fn signed_in_as(store: &FlowStore, who: &Identity) -> (String, String) {
    let completed = store
        .complete_login(&sealed_request(), who)
        .await
        .expect("complete")
        .expect("completes");
    let Ok(Exchange::Issued { refresh_token, .. }) =
        store.exchange_code(&completed.code, accept).await
    else {
        panic!("the code is exchanged");
    };
    (completed.session_id, refresh_token)
}

/// Talsi's IT administrator, whom a database writer would like to be.
fn admin() -> Identity {
    Identity {
        subject: "talsi:anna".into(),
        username: "anna@talsi".into(),
        groups: vec!["talsi:it-admins".into()],
        ..identity()
    }
}

/// Runs one statement as `db` (a database writer), returning the rows it changed.
async fn write(db: &Database, sql: &str) -> u64 {
    let sql = || sqlx::AssertSqlSafe(sql.to_owned());
    let done = match db {
        Database::Sqlite(pool) => sqlx::query(sql())
            .execute(pool)
            .await
            .map(|r| r.rows_affected()),
        Database::Postgres(pool) => sqlx::query(sql())
            .execute(pool)
            .await
            .map(|r| r.rows_affected()),
    };
    done.expect("the writer's statement runs")
}

/// A request of the login form, as `/oidc/authorize` seals it.
fn sealed_request() -> PendingRequest {
    let now = chrono::Utc::now().timestamp_millis();
    PendingRequest::begin(&request(), "lv", now)
        .expect("request")
        .0
}

async fn used_requests(db: &Database) -> i64 {
    let sql = "SELECT COUNT(*) FROM oidc_used_requests";
    match db {
        Database::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
        Database::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
    }
    .expect("count")
}

#[tokio::test]
async fn an_ended_request_is_recorded_once_and_swept_after_it_expires() {
    each_backend(|db| async move {
        let backend = db.backend();
        let store = flow_store(db.clone());
        let pending = sealed_request();
        assert!(
            store.end_request(&pending).await.expect("end"),
            "{backend:?}"
        );
        assert!(
            !store.end_request(&pending).await.expect("end again"),
            "{backend:?}: the second end finds it used"
        );
        assert!(
            store
                .complete_login(&pending, &identity())
                .await
                .expect("complete")
                .is_none(),
            "{backend:?}: an ended request completes no sign-in"
        );
        assert_eq!(used_requests(&db).await, 1, "{backend:?}");

        // Kept a while past its expiry (a replica whose clock lags still sees it used), then
        // swept.
        let now = chrono::Utc::now().timestamp_millis();
        let just_expired = PendingRequest {
            expires_at: now - 1_000,
            ..sealed_request()
        };
        let long_expired = PendingRequest {
            expires_at: 1,
            ..sealed_request()
        };
        store.end_request(&just_expired).await.expect("end");
        store.end_request(&long_expired).await.expect("end");
        store.sweep().await.expect("sweep");
        assert_eq!(used_requests(&db).await, 2, "{backend:?}");
        db.execute("UPDATE oidc_used_requests SET expires_at = 0")
            .await
            .expect("expire");
        store.sweep().await.expect("sweep");
        assert_eq!(used_requests(&db).await, 0, "{backend:?}");
    })
    .await;
}

#[tokio::test]
async fn a_sign_in_yields_one_code_and_a_session_until_it_ends() {
    each_backend(|db| async move {
        let backend = db.backend();
        let store = flow_store(db.clone());
        let pending = sealed_request();
        let completed = store
            .complete_login(&pending, &identity())
            .await
            .expect("complete")
            .expect("the first post completes");
        assert!(
            store
                .complete_login(&pending, &identity())
                .await
                .expect("complete again")
                .is_none(),
            "{backend:?}: a used request issues no second code"
        );
        // The same request sealed again with another CSRF token (a reload) is the same
        // request: used as well.
        let (resealed, _) = pending.with_new_csrf().expect("renew");
        assert!(
            store
                .complete_login(&resealed, &identity())
                .await
                .expect("complete again")
                .is_none(),
            "{backend:?}: a resealed request is still used"
        );
        let codes = match &db {
            Database::Sqlite(pool) => {
                sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM oidc_codes")
                    .fetch_one(pool)
                    .await
            }
            Database::Postgres(pool) => {
                sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM oidc_codes")
                    .fetch_one(pool)
                    .await
            }
        }
        .expect("count");
        assert_eq!(codes, 1, "{backend:?}: one code in all");
        let session = store
            .session(&completed.session_id)
            .await
            .expect("session")
            .expect("live");
        assert_eq!(session.identity.subject, "talsi:jana", "{backend:?}");
        assert!(store.session("unknown").await.expect("session").is_none());

        store.end_session(&completed.session_id).await.expect("end");
        assert!(
            store
                .session(&completed.session_id)
                .await
                .expect("session")
                .is_none(),
            "{backend:?}: an ended session answers nothing"
        );
    })
    .await;
}

#[tokio::test]
async fn a_code_is_redeemed_once_and_its_replay_revokes_the_grant() {
    each_backend(|db| async move {
        let backend = db.backend();
        let store = flow_store(db.clone());
        let pending = PendingRequest::from_valid(&request(), "lv");
        // A single sign-on answer: the password sign-in was a while ago.
        let auth_time = chrono::Utc::now().timestamp() - 600;
        let code = store
            .create_code_at(&pending, &identity(), auth_time)
            .await
            .expect("code");
        let Ok(Exchange::Issued {
            redeemed,
            refresh_token,
        }) = store.exchange_code(&code, accept).await
        else {
            panic!("{backend:?}: the first exchange issues");
        };
        assert_eq!(redeemed.auth_time, auth_time);
        assert_eq!(redeemed.nonce.as_deref(), Some("n"));
        assert!(matches!(
            store.refresh_token_usable(&refresh_token).await,
            Ok(RefreshUse::Usable(_))
        ));
        let Ok(Exchange::AlreadyUsed(replayed)) = store.exchange_code(&code, accept).await else {
            panic!("{backend:?}: the second exchange is a replay");
        };
        assert_eq!(
            replayed.grant_id.as_deref(),
            Some(redeemed.grant_id.as_str())
        );
        assert!(matches!(
            store.refresh_token_usable(&refresh_token).await,
            Ok(RefreshUse::Invalid)
        ));
        assert!(!store.grant_usable(&redeemed.grant_id).await.expect("grant"));

        // A refused code is used up and issues nothing.
        let refused = store
            .create_code_at(&pending, &identity(), auth_time)
            .await
            .expect("code");
        assert!(matches!(
            store.exchange_code(&refused, |_| Err("PKCE")).await,
            Ok(Exchange::Refused("PKCE"))
        ));
        assert!(matches!(
            store.exchange_code(&refused, accept).await,
            Ok(Exchange::AlreadyUsed(_))
        ));

        assert!(matches!(
            store.exchange_code("never-issued", accept).await,
            Ok(Exchange::Unknown)
        ));
        let expired = store
            .create_code_at(&pending, &identity(), auth_time)
            .await
            .expect("code");
        db.execute("UPDATE oidc_codes SET expires_at = 0 WHERE used_at IS NULL")
            .await
            .expect("expire");
        assert!(
            matches!(
                store.exchange_code(&expired, accept).await,
                Ok(Exchange::Expired)
            ),
            "{backend:?}"
        );
    })
    .await;
}

async fn count(db: &Database, sql: &'static str) -> i64 {
    match db {
        Database::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
        Database::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
    }
    .expect("count")
}

/// The same sign-in form posted 16 times at once: one code, one session, one grant link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_posts_of_one_request_issue_one_code() {
    each_backend(|db| async move {
        let backend = db.backend();
        let store = flow_store(db.clone());
        let pending = sealed_request();
        let posts: Vec<_> = (0..16)
            .map(|_| {
                let (store, pending) = (store.clone(), pending.clone());
                tokio::spawn(async move { store.complete_login(&pending, &identity()).await })
            })
            .collect();
        let mut completed = 0;
        for post in posts {
            if post.await.expect("task").expect("complete").is_some() {
                completed += 1;
            }
        }
        assert_eq!(completed, 1, "{backend:?}");
        for sql in [
            "SELECT COUNT(*) FROM oidc_codes",
            "SELECT COUNT(*) FROM oidc_sessions",
            "SELECT COUNT(*) FROM oidc_session_grants",
        ] {
            assert_eq!(count(&db, sql).await, 1, "{backend:?}: {sql}");
        }
    })
    .await;
}

/// One refresh token presented 16 times at once: one successor; the others are reuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_rotations_of_one_refresh_token_yield_one_successor() {
    each_backend(|db| async move {
        let backend = db.backend();
        let store = flow_store(db.clone());
        let (_, refresh_token) = signed_in(&store).await;
        let Ok(RefreshUse::Usable(usable)) = store.refresh_token_usable(&refresh_token).await
        else {
            panic!("{backend:?}: usable");
        };
        let rotations: Vec<_> = (0..16)
            .map(|_| {
                let (store, token, usable) = (store.clone(), refresh_token.clone(), usable.clone());
                tokio::spawn(async move {
                    store
                        .rotate_refresh_token(&token, &usable, &identity())
                        .await
                })
            })
            .collect();
        let mut rotated = 0;
        for rotation in rotations {
            match rotation.await.expect("task").expect("rotate") {
                Rotation::Rotated(_) => rotated += 1,
                Rotation::Reused { .. } => {}
                Rotation::Invalid => panic!("{backend:?}: a reuse, not an invalid token"),
            }
        }
        assert_eq!(rotated, 1, "{backend:?}");
        assert_eq!(
            count(&db, "SELECT COUNT(*) FROM oidc_refresh_tokens").await,
            2,
            "{backend:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_refresh_token_rotates_once_and_a_reuse_revokes_its_family() {
    each_backend(|db| async move {
        let backend = db.backend();
        let store = flow_store(db);
        let (_, refresh_token) = signed_in(&store).await;
        let info = store
            .refresh_info(&refresh_token)
            .await
            .expect("info")
            .expect("known");
        assert!(info.active, "{backend:?}");
        assert_eq!(
            (info.client_id.as_str(), info.username.as_str()),
            ("app", "jana@talsi")
        );
        assert!(store.refresh_info("unknown").await.expect("info").is_none());

        let Ok(RefreshUse::Usable(usable)) = store.refresh_token_usable(&refresh_token).await
        else {
            panic!("{backend:?}: usable");
        };
        let Ok(Rotation::Rotated(successor)) = store
            .rotate_refresh_token(&refresh_token, &usable, &identity())
            .await
        else {
            panic!("{backend:?}: the first rotation succeeds");
        };
        let rotated = store
            .refresh_info(&refresh_token)
            .await
            .expect("info")
            .expect("known");
        assert!(!rotated.active, "{backend:?}: a rotated token is inactive");
        // A second presentation that had looked before the first rotation (a race).
        assert!(matches!(
            store
                .rotate_refresh_token(&refresh_token, &usable, &identity())
                .await,
            Ok(Rotation::Reused { .. })
        ));
        assert!(
            matches!(
                store.refresh_token_usable(&successor).await,
                Ok(RefreshUse::Invalid)
            ),
            "{backend:?}: the reuse revoked the whole family"
        );
        // A rotated token presented again is recognised as a reuse.
        assert!(matches!(
            store.refresh_token_usable(&refresh_token).await,
            Ok(RefreshUse::Reused { .. })
        ));
    })
    .await;
}

#[tokio::test]
async fn revocations_name_tokens_and_grants_and_only_lengthen() {
    each_backend(|db| async move {
        let backend = db.backend();
        let store = flow_store(db.clone());
        assert!(
            !store
                .access_token_revoked("jti-1", None)
                .await
                .expect("probe")
        );
        let exp = chrono::Utc::now().timestamp() + 600;
        store
            .revoke_access_token("jti-1", exp)
            .await
            .expect("revoke");
        // Revoking again (even with an earlier expiry) keeps the revocation.
        store
            .revoke_access_token("jti-1", exp - 300)
            .await
            .expect("again");
        assert!(
            store
                .access_token_revoked("jti-1", None)
                .await
                .expect("probe"),
            "{backend:?}"
        );
        assert!(
            !store
                .access_token_revoked("jti-2", None)
                .await
                .expect("probe")
        );

        let (_, refresh_token) = signed_in(&store).await;
        let info = store
            .refresh_info(&refresh_token)
            .await
            .expect("info")
            .expect("known");
        assert!(store.grant_usable(&info.family_id).await.expect("grant"));
        store
            .revoke_grant(&info.family_id)
            .await
            .expect("revoke grant");
        store
            .revoke_grant(&info.family_id)
            .await
            .expect("revoke again");
        assert!(
            store
                .access_token_revoked("jti-3", Some(&info.family_id))
                .await
                .expect("probe"),
            "{backend:?}: a grant's revocation covers its access tokens"
        );
        assert!(!store.grant_usable(&info.family_id).await.expect("grant"));
        assert!(matches!(
            store.refresh_token_usable(&refresh_token).await,
            Ok(RefreshUse::Invalid)
        ));

        // Past their expiry, revocations are swept.
        db.execute("UPDATE oidc_revocations SET expires_at = 0")
            .await
            .expect("expire");
        assert!(store.sweep().await.expect("sweep") >= 2, "{backend:?}");
        assert!(
            !store
                .access_token_revoked("jti-1", None)
                .await
                .expect("probe")
        );
    })
    .await;
}

/// Polls `store`'s in-memory revocation check until it names the token; how long that took.
async fn until_revoked_in_memory(
    store: &FlowStore,
    jti: &str,
    grant_id: Option<&str>,
) -> std::time::Duration {
    let started = std::time::Instant::now();
    while !store
        .access_token_revoked_cached(jti, grant_id)
        .await
        .expect("probe")
    {
        assert!(
            started.elapsed() < REVOCATIONS_FRESH_FOR * 5,
            "the revocation never reached the other replica"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    started.elapsed()
}

/// The admin API's in-memory revocation check: a revocation made by this replica counts at
/// once, one made by another replica (another store on the same database) within
/// [`REVOCATIONS_FRESH_FOR`]; when the table cannot be read, the check fails (closed) once
/// the copy is older than the bound.
#[tokio::test]
async fn in_memory_revocations_follow_this_replica_at_once_and_others_within_the_bound() {
    each_backend_with_owner(|db, owner| async move {
        let backend = db.backend();
        let here = flow_store(db.clone());
        let there = flow_store(db.clone());
        for store in [&here, &there] {
            assert!(
                !store
                    .access_token_revoked_cached("jti-1", None)
                    .await
                    .expect("probe"),
                "{backend:?}"
            );
        }
        let exp = chrono::Utc::now().timestamp() + 600;
        here.revoke_access_token("jti-1", exp)
            .await
            .expect("revoke");
        assert!(
            here.access_token_revoked_cached("jti-1", None)
                .await
                .expect("probe"),
            "{backend:?}: this replica honours its own revocation at once"
        );
        let took = until_revoked_in_memory(&there, "jti-1", None).await;
        // The bound, with room for one reload on a loaded machine.
        let slack = std::time::Duration::from_millis(500);
        assert!(
            took <= REVOCATIONS_FRESH_FOR + slack,
            "{backend:?}: another replica took {took:?}"
        );

        // A grant revoked through another replica covers its access tokens too.
        let (_, refresh_token) = signed_in(&there).await;
        let info = there
            .refresh_info(&refresh_token)
            .await
            .expect("info")
            .expect("known");
        assert!(
            !here
                .access_token_revoked_cached("jti-2", Some(&info.family_id))
                .await
                .expect("probe")
        );
        there.revoke_grant(&info.family_id).await.expect("revoke");
        assert!(
            there
                .access_token_revoked_cached("jti-2", Some(&info.family_id))
                .await
                .expect("probe")
        );
        let took = until_revoked_in_memory(&here, "jti-2", Some(&info.family_id)).await;
        assert!(
            took <= REVOCATIONS_FRESH_FOR + slack,
            "{backend:?}: another replica took {took:?}"
        );

        // Without the table nothing can be checked: refused once the copy is too old.
        owner
            .execute("DROP TABLE oidc_revocations")
            .await
            .expect("drop");
        tokio::time::sleep(REVOCATIONS_FRESH_FOR).await;
        assert!(
            here.access_token_revoked_cached("jti-3", None)
                .await
                .is_err(),
            "{backend:?}: fails closed"
        );
    })
    .await;
}

#[tokio::test]
async fn lockout_counters_count_lock_and_clear() {
    each_backend(|db| async move {
        let backend = db.backend();
        let store = LockoutStore::new(db, LockoutPolicy::default());
        let now = chrono::Utc::now().timestamp_millis();
        assert!(
            store
                .get("account:talsi:jana")
                .await
                .expect("get")
                .is_none()
        );
        for expected in 1..=2 {
            let counter = store
                .record_failure("account:talsi:jana", now, Some(3))
                .await
                .expect("count");
            assert_eq!(counter.failures, expected, "{backend:?}");
            assert_eq!(counter.locked_until_ms, None);
        }
        let locked = store
            .record_failure("account:talsi:jana", now, Some(3))
            .await
            .expect("count");
        assert_eq!(locked.failures, 3);
        assert!(
            locked.locked_until_ms.is_some_and(|until| until > now),
            "{backend:?}"
        );
        // A source key never locks.
        let source = store
            .record_failure("source:192.0.2.1", now, None)
            .await
            .expect("count");
        assert_eq!(source.locked_until_ms, None);

        let read = store
            .get("account:talsi:jana")
            .await
            .expect("get")
            .expect("counted");
        assert_eq!(read.failures, 3);
        store.clear("account:talsi:jana").await.expect("clear");
        assert!(
            store
                .get("account:talsi:jana")
                .await
                .expect("get")
                .is_none(),
            "{backend:?}"
        );
    })
    .await;
}

/// Expired counters go (every address and name ever tried would otherwise keep a row);
/// counters that still decide something — live failures, a lock — stay.
#[tokio::test]
async fn expired_lockout_counters_are_swept() {
    each_backend(|db| async move {
        let backend = db.backend();
        // A lock that outlasts its window (30 minutes against 15).
        let policy = LockoutPolicy {
            lock_duration: std::time::Duration::from_secs(30 * 60),
            ..LockoutPolicy::default()
        };
        let window = i64::try_from(policy.window.as_millis()).expect("window");
        let lock = i64::try_from(policy.lock_duration.as_millis()).expect("lock");
        let store = LockoutStore::new(db, policy);
        let now = chrono::Utc::now().timestamp_millis();
        let long_ago = now - window - lock - 1;
        let count = |key: &'static str, at: i64, lock_at: Option<u32>| {
            let store = store.clone();
            async move { store.record_failure(key, at, lock_at).await.expect("count") }
        };
        // Window passed, never locked.
        count("source:192.0.2.1", long_ago, None).await;
        count("account:talsi:old", long_ago, Some(5)).await;
        // Window passed, lock expired.
        count("account:talsi:was-locked", long_ago, Some(1)).await;
        // Still deciding: a live window; a lock that outlasts its window.
        count("source:192.0.2.2", now, None).await;
        count("account:talsi:jana", now, Some(5)).await;
        count("account:talsi:locked", now - window - 1, Some(1)).await;

        let swept = store.sweep_expired(now).await.expect("sweep");
        assert_eq!(swept, 3, "{backend:?}");
        for gone in [
            "source:192.0.2.1",
            "account:talsi:old",
            "account:talsi:was-locked",
        ] {
            assert!(
                store.get(gone).await.expect("get").is_none(),
                "{gone} {backend:?}"
            );
        }
        for kept in ["source:192.0.2.2", "account:talsi:jana"] {
            assert!(
                store.get(kept).await.expect("get").is_some(),
                "{kept} {backend:?}"
            );
        }
        // Locked at `now - window - 1` for the lock duration: still locked now.
        let locked = store
            .get("account:talsi:locked")
            .await
            .expect("get")
            .expect("a live lock is kept");
        assert!(locked.locked_until_ms.is_some_and(|until| until > now));
        assert_eq!(store.sweep_expired(now).await.expect("sweep"), 0);
    })
    .await;
}

/// The audit trail of `db`, and the time the audit tests' events start from (2020-01-01).
fn audit_trail(db: &Database) -> (AuditLog, chrono::DateTime<chrono::Utc>) {
    let log = AuditLog::start(db.clone(), support::audit_key());
    let old = chrono::DateTime::parse_from_rfc3339("2020-01-01T00:00:00Z")
        .expect("time")
        .to_utc();
    (log, old)
}

/// An event of `kind` in `realm` that happened `at`.
fn event_at(kind: AuditEventKind, realm: &str, at: chrono::DateTime<chrono::Utc>) -> AuditEvent {
    let mut event = AuditEvent::new(kind);
    event.realm = Some(realm.to_owned());
    event.at = at;
    event
}

#[tokio::test]
async fn the_audit_trail_appends_exports_by_filter_and_verifies() {
    each_backend(|db| async move {
        let backend = db.backend();
        let (log, old) = audit_trail(&db);
        for (i, realm) in ["talsi", "ventspils", "talsi", "kuldiga"]
            .iter()
            .enumerate()
        {
            let at = old + chrono::Duration::days(i64::try_from(i).expect("small"));
            let event = event_at(AuditEventKind::LoginSucceeded, realm, at);
            log.append(event).await.expect("append");
        }
        let exported = |filter: ExportFilter| {
            let db = db.clone();
            async move {
                let mut out = Vec::new();
                audit::export(&db, &filter, ExportFormat::Jsonl, &mut out)
                    .await
                    .expect("export")
            }
        };
        assert_eq!(exported(ExportFilter::default()).await, 4, "{backend:?}");
        let talsi = ExportFilter {
            realm: Some("talsi".into()),
            ..ExportFilter::default()
        };
        assert_eq!(exported(talsi).await, 2, "{backend:?}");
        let window = ExportFilter {
            since: Some(old + chrono::Duration::days(1)),
            until: Some(old + chrono::Duration::days(3)),
            realm: None,
        };
        assert_eq!(exported(window).await, 2, "{backend:?}");
        let verification = audit::verify(&db, &support::audit_key())
            .await
            .expect("verify");
        assert_eq!(
            (verification.first_broken, verification.rows_checked),
            (None, 4),
            "{backend:?}"
        );
    })
    .await;
}

/// Audit pages filter by user (name or subject) and time, newest first, the same across
/// cursors. On both databases.
#[tokio::test]
async fn audit_pages_filter_by_user_and_time_newest_first_across_cursors() {
    each_backend(|db| async move {
        let backend = db.backend();
        let (log, old) = audit_trail(&db);
        // Rows 1..=6, a day apart: ilze by user name (1, 3), by subject (4), by both (5).
        let who = [
            (Some("ilze"), None),
            (Some("janis"), None),
            (Some("ilze"), Some("sub-janis")),
            (Some("ilze@talsi"), Some("ilze")),
            (Some("ilze"), Some("ilze")),
            (None, None),
        ];
        for (day, (username, subject)) in (0i64..).zip(who) {
            let at = old + chrono::Duration::days(day);
            let mut event = event_at(AuditEventKind::LoginSucceeded, "talsi", at);
            event.username = username.map(str::to_owned);
            event.subject = subject.map(str::to_owned);
            log.append(event).await.expect("append");
        }
        let ids = |filter: EventFilter| {
            let db = db.clone();
            async move {
                let mut ids = Vec::new();
                let mut filter = EventFilter { limit: 2, ..filter };
                loop {
                    let page = page(&db, &filter).await.expect("page");
                    ids.extend(page.events.iter().map(|e| e.id));
                    let Some(next) = page.next_cursor else {
                        return ids;
                    };
                    filter.cursor = Some(Cursor::decode(&next).expect("cursor"));
                }
            }
        };
        let ilze = EventFilter {
            user: Some("ilze".into()),
            ..EventFilter::default()
        };
        assert_eq!(ids(ilze).await, [5, 4, 3, 1], "{backend:?}");
        let days_1_to_4 = EventFilter {
            since: Some(old + chrono::Duration::days(1)),
            until: Some(old + chrono::Duration::days(4)),
            ..EventFilter::default()
        };
        assert_eq!(ids(days_1_to_4).await, [4, 3, 2], "{backend:?}");
        let ilze_from_day_3 = EventFilter {
            user: Some("ilze".into()),
            since: Some(old + chrono::Duration::days(3)),
            ..EventFilter::default()
        };
        assert_eq!(ids(ilze_from_day_3).await, [5, 4], "{backend:?}");
        assert_eq!(ids(EventFilter::default()).await, [6, 5, 4, 3, 2, 1]);
    })
    .await;
}

/// Pages stay stable while rows are appended between page reads, in both page orders: no row
/// twice and none skipped among the rows that existed when paging began. Times go up with ids
/// only roughly (an event's time is taken before the batching writer appends it), so rows are
/// written out of time order, and some appended midway fall inside the pages already read or
/// still ahead. A time-bounded export holds exactly the rows of its range, in id order. On both
/// databases.
#[tokio::test]
async fn audit_pages_are_stable_under_appends_between_reads() {
    each_backend(|db| async move {
        let backend = db.backend();
        let (log, old) = audit_trail(&db);
        let at = |minutes: i64| old + chrono::Duration::minutes(minutes);
        let append = |minutes: i64| {
            let log = log.clone();
            async move {
                let event = event_at(AuditEventKind::LoginFailed, "talsi", at(minutes));
                log.append(event).await.expect("append")
            }
        };
        // Minutes out of id order, with ties; 50 and 60 lie outside the range below.
        let mut existing = Vec::new();
        for minutes in [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 50, 5, 8, 9, 7, 9, 60, 3] {
            existing.push((minutes, append(minutes).await));
        }
        let range = EventFilter {
            since: Some(at(0)),
            until: Some(at(10)),
            limit: 3,
            ..EventFilter::default()
        };
        let all_rows = EventFilter {
            limit: 3,
            ..EventFilter::default()
        };
        for (filter, in_scope) in [(range, 0..10), (all_rows, 0..i64::MAX)] {
            let mut seen = Vec::new();
            let mut filter = filter;
            let mut late = 0;
            loop {
                let page = page(&db, &filter).await.expect("page");
                seen.extend(page.events.iter().map(|e| (e.at.clone(), e.id)));
                let Some(next) = page.next_cursor else { break };
                filter.cursor = Some(Cursor::decode(&next).expect("cursor"));
                // Late rows: one newer than everything, one inside pages already read, one
                // in pages still ahead.
                late += 1;
                append(9).await;
                append(late % 10).await;
                append(0).await;
            }
            let ids: Vec<i64> = seen.iter().map(|(_, id)| *id).collect();
            let mut unique = ids.clone();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(
                unique.len(),
                ids.len(),
                "{backend:?}: a row came twice: {ids:?}"
            );
            for (minutes, id) in existing.iter().filter(|(m, _)| in_scope.contains(m)) {
                assert!(
                    ids.contains(id),
                    "{backend:?}: row {id} at minute {minutes} was skipped: {ids:?}"
                );
            }
            if filter.since.is_some() {
                assert!(
                    seen.windows(2).all(|w| w[0] > w[1]),
                    "{backend:?}: newest first by time, then id: {seen:?}"
                );
            } else {
                assert!(ids.windows(2).all(|w| w[0] > w[1]), "{backend:?}: by id");
            }
        }

        // The export of the range: every row whose time lies in it (those appended meanwhile
        // included, as the export begins now), in id order.
        let window = ExportFilter {
            since: Some(at(2)),
            until: Some(at(6)),
            realm: Some("talsi".into()),
        };
        let mut out = Vec::new();
        audit::export(&db, &window, ExportFormat::Jsonl, &mut out)
            .await
            .expect("export");
        let exported: Vec<i64> = String::from_utf8(out)
            .expect("utf-8")
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("json"))
            .map(|row| row["id"].as_i64().expect("id"))
            .collect();
        let everything = page(
            &db,
            &EventFilter {
                limit: 1000,
                ..EventFilter::default()
            },
        )
        .await
        .expect("page");
        let (from, to) = (audit::format_time(at(2)), audit::format_time(at(6)));
        let mut expected: Vec<i64> = everything
            .events
            .iter()
            .filter(|e| e.at >= from && e.at < to)
            .map(|e| e.id)
            .collect();
        expected.sort_unstable();
        assert_eq!(exported, expected, "{backend:?}");
    })
    .await;
}

/// Logging out of a single sign-on session revokes every grant issued through it — the
/// password sign-in's and another application's single sign-on code, redeemed or not — and
/// leaves another session's grants alone. On both databases.
#[tokio::test]
async fn logging_out_revokes_every_grant_of_the_session() {
    each_backend(|db| async move {
        let backend = db.backend();
        let store = flow_store(db.clone());
        let (session_id, first_refresh) = signed_in(&store).await;
        let (other_session, bystander_refresh) = signed_in(&store).await;
        assert_ne!(session_id, other_session);

        // Another application through the same session.
        let pending = PendingRequest::from_valid(&request(), "lv");
        let auth_time = chrono::Utc::now().timestamp();
        let sso_code = store
            .create_session_code(&pending, &identity(), auth_time, &session_id)
            .await
            .expect("code");
        let Ok(Exchange::Issued {
            refresh_token: sso_refresh,
            redeemed,
        }) = store.exchange_code(&sso_code, accept).await
        else {
            panic!("{backend:?}: the single sign-on code is exchanged");
        };
        let sso_grant = redeemed.grant_id;
        // And a code not yet exchanged when the user logs out.
        let late_code = store
            .create_session_code(&pending, &identity(), auth_time, &session_id)
            .await
            .expect("code");

        store.log_out(&session_id).await.expect("log out");

        for refresh in [&first_refresh, &sso_refresh] {
            assert!(
                matches!(
                    store.refresh_token_usable(refresh).await,
                    Ok(RefreshUse::Invalid)
                ),
                "{backend:?}: a refresh token of the session survived logout"
            );
        }
        assert!(!store.grant_usable(&sso_grant).await.expect("grant"));
        let Ok(Exchange::Issued { redeemed, .. }) = store.exchange_code(&late_code, accept).await
        else {
            panic!("{backend:?}: the late code itself is still redeemable");
        };
        assert!(
            !store.grant_usable(&redeemed.grant_id).await.expect("grant"),
            "{backend:?}: but its grant is revoked, so no token is issued from it"
        );
        assert!(
            store.session(&session_id).await.expect("read").is_none(),
            "{backend:?}: the session is over"
        );
        assert!(
            matches!(
                store.refresh_token_usable(&bystander_refresh).await,
                Ok(RefreshUse::Usable(_))
            ),
            "{backend:?}: another session is untouched"
        );
    })
    .await;
}

/// A database writer cannot change whom a code, a single sign-on session or a refresh token
/// names: a row changed in place (subject, groups, scope), given another user's identity
/// together with that row's MAC, or stripped of its MAC is refused — the code is used up and
/// issues nothing, the session is no session, the refresh token is refused and introspects as
/// unknown — and counted by kind; untouched rows keep working, and under another
/// key-encryption key nothing authenticates. As the tables' owner, on both databases.
#[tokio::test]
async fn stored_identities_changed_by_a_database_writer_are_refused() {
    each_backend_with_owner(|db, owner| async move {
        let backend = db.backend();
        let store = flow_store(db.clone());
        let (jana_session, jana_refresh) = signed_in(&store).await;
        let (anna_session, anna_refresh) = signed_in_as(&store, &admin()).await;
        assert!(store.session(&jana_session).await.expect("read").is_some(), "{backend:?}");
        assert!(matches!(
            store.refresh_token_usable(&jana_refresh).await,
            Ok(RefreshUse::Usable(_))
        ));
        assert_eq!(store.rows_rejected(StoredRowKind::Session), 0);

        // Under another key-encryption key, nothing authenticates.
        let stranger = FlowStore::new(
            db.clone(),
            StoredIdentityKey::from_kek(&KeyEncryptionKey::from_bytes([7; 32])).expect("key"),
        );
        assert!(stranger.session(&jana_session).await.expect("read").is_none());
        assert!(matches!(
            stranger.refresh_token_usable(&jana_refresh).await,
            Ok(RefreshUse::Tampered)
        ));

        // Jana's session and refresh token given Anna's identity and MAC, copied from Anna's
        // authentic rows: the MAC covers the row's own handle, so it does not carry over.
        let (jana_hash, anna_hash) = (hash(&jana_session), hash(&anna_session));
        let copied = write(
            &owner,
            &format!(
                "UPDATE oidc_sessions SET \
                 identity = (SELECT a.identity FROM oidc_sessions a WHERE a.id_hash = '{anna_hash}'), \
                 mac = (SELECT a.mac FROM oidc_sessions a WHERE a.id_hash = '{anna_hash}') \
                 WHERE id_hash = '{jana_hash}'"
            ),
        )
        .await;
        assert_eq!(copied, 1);
        assert!(
            store.session(&jana_session).await.expect("read").is_none(),
            "{backend:?}: a session with a copied identity is no session"
        );
        let (jana_hash, anna_hash) = (hash(&jana_refresh), hash(&anna_refresh));
        write(
            &owner,
            &format!(
                "UPDATE oidc_refresh_tokens SET \
                 identity = (SELECT a.identity FROM oidc_refresh_tokens a WHERE a.token_hash = '{anna_hash}'), \
                 mac = (SELECT a.mac FROM oidc_refresh_tokens a WHERE a.token_hash = '{anna_hash}') \
                 WHERE token_hash = '{jana_hash}'"
            ),
        )
        .await;
        assert!(
            matches!(
                store.refresh_token_usable(&jana_refresh).await,
                Ok(RefreshUse::Tampered)
            ),
            "{backend:?}: a refresh token with a copied identity is refused"
        );
        assert!(store.refresh_info(&jana_refresh).await.expect("info").is_none());
        // Anna's own rows are untouched and still hers.
        let anna = store.session(&anna_session).await.expect("read").expect("Anna's session");
        assert_eq!(anna.identity.subject, "talsi:anna");
        let Ok(RefreshUse::Usable(usable)) = store.refresh_token_usable(&anna_refresh).await
        else {
            panic!("{backend:?}: Anna's refresh token still works");
        };
        let Ok(Rotation::Rotated(anna_successor)) = store
            .rotate_refresh_token(&anna_refresh, &usable, &admin())
            .await
        else {
            panic!("{backend:?}: and rotates");
        };
        assert!(matches!(
            store.refresh_token_usable(&anna_successor).await,
            Ok(RefreshUse::Usable(_))
        ));

        // Changed in place: subject and groups of a live refresh token and of a session.
        let (session, refresh) = signed_in(&store).await;
        let promoted = write(
            &owner,
            "UPDATE oidc_refresh_tokens SET identity = \
             REPLACE(REPLACE(identity, 'talsi:jana', 'talsi:anna'), 'talsi:staff', 'talsi:it-admins') \
             WHERE used_at IS NULL AND revoked_at IS NULL AND identity LIKE '%talsi:jana%'",
        )
        .await;
        assert_eq!(promoted, 1, "{backend:?}");
        assert!(matches!(
            store.refresh_token_usable(&refresh).await,
            Ok(RefreshUse::Tampered)
        ));
        write(
            &owner,
            "UPDATE oidc_sessions SET identity = REPLACE(identity, 'talsi:staff', 'talsi:it-admins') \
             WHERE identity LIKE '%talsi:jana%'",
        )
        .await;
        assert!(store.session(&session).await.expect("read").is_none(), "{backend:?}");
        // A wider scope is as much a change as another user.
        let (_, scoped) = signed_in(&store).await;
        write(
            &owner,
            &format!(
                "UPDATE oidc_refresh_tokens SET scope = 'openid profile email' \
                 WHERE token_hash = '{}'",
                hash(&scoped)
            ),
        )
        .await;
        assert!(matches!(
            store.refresh_token_usable(&scoped).await,
            Ok(RefreshUse::Tampered)
        ));

        // A code whose subject was changed before its exchange: used up, nothing issued, and
        // its replay names nobody.
        let pending = PendingRequest::from_valid(&request(), "lv");
        let code = store
            .create_code_at(&pending, &identity(), chrono::Utc::now().timestamp())
            .await
            .expect("code");
        write(
            &owner,
            "UPDATE oidc_codes SET identity = REPLACE(identity, 'talsi:jana', 'talsi:anna') \
             WHERE used_at IS NULL",
        )
        .await;
        let checked = std::sync::atomic::AtomicBool::new(false);
        let exchanged = store
            .exchange_code(&code, |_| {
                checked.store(true, std::sync::atomic::Ordering::Relaxed);
                Ok::<(), &str>(())
            })
            .await
            .expect("exchange");
        assert!(matches!(exchanged, Exchange::Tampered), "{backend:?}: {exchanged:?}");
        assert!(
            !checked.load(std::sync::atomic::Ordering::Relaxed),
            "the caller never sees a changed code"
        );
        let Ok(Exchange::AlreadyUsed(replayed)) = store.exchange_code(&code, accept).await else {
            panic!("{backend:?}: the changed code is used up");
        };
        assert!(replayed.identity.is_none() && replayed.client_id.is_none());
        // (PostgreSQL stores the grant's refresh token with the claim, unauthenticated; it is
        // revoked at once.)
        let live_unsealed = "SELECT COUNT(*) FROM oidc_refresh_tokens \
            WHERE mac IS NULL AND revoked_at IS NULL";
        let live_unsealed: i64 = match &db {
            Database::Sqlite(pool) => sqlx::query_scalar(live_unsealed).fetch_one(pool).await,
            Database::Postgres(pool) => sqlx::query_scalar(live_unsealed).fetch_one(pool).await,
        }
        .expect("count");
        assert_eq!(live_unsealed, 0, "{backend:?}");

        // A row stripped of its MAC (as if written before the upgrade) is refused too.
        let (session, refresh) = signed_in(&store).await;
        write(&owner, "UPDATE oidc_sessions SET mac = NULL").await;
        write(&owner, "UPDATE oidc_refresh_tokens SET mac = NULL").await;
        assert!(store.session(&session).await.expect("read").is_none());
        assert!(matches!(
            store.refresh_token_usable(&refresh).await,
            Ok(RefreshUse::Tampered)
        ));

        assert_eq!(store.rows_rejected(StoredRowKind::Code), 2, "{backend:?}");
        assert_eq!(store.rows_rejected(StoredRowKind::Session), 3, "{backend:?}");
        assert_eq!(store.rows_rejected(StoredRowKind::RefreshToken), 5, "{backend:?}");
    })
    .await;
}
