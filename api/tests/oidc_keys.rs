//! The provider's signing keys against real databases (SQLite in a temporary directory and a
//! throwaway PostgreSQL): encryption at rest, reload, rotation with overlap, concurrent
//! replicas, tokens checked by an independent verifier (the `openidconnect` crate), and
//! tokens forged the ways JWT libraries have been fooled before.

use std::str::FromStr as _;
use std::time::Duration;

use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _, RsaKeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use novads_api::db::Database;
use novads_api::oidc::jwt::{ACCESS_TOKEN_TYPE, AccessTokenClaims, IdTokenClaims, at_hash};
use novads_api::oidc::keys::{
    Expectations, KeyEncryptionKey, KeyError, KeyPolicy, KeyState, SigningAlgorithm, SigningKeys,
    TokenError,
};
use novads_testkit::Postgres;
use openidconnect::core::{
    CoreIdToken, CoreIdTokenVerifier, CoreJsonWebKey, CoreJsonWebKeySet, CoreJwsSigningAlgorithm,
};
use openidconnect::{AccessToken, AccessTokenHash, ClientId, IssuerUrl, Nonce as OidcNonce};
use serde_json::{Value, json};

const ISSUER: &str = "https://sso.novads.test";
const CLIENT: &str = "payroll";

const KEK_BYTES: [u8; 32] = [0x5a; 32];

fn kek() -> KeyEncryptionKey {
    KeyEncryptionKey::from_bytes(KEK_BYTES)
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A policy that rotates at once and lets retired keys expire after two seconds.
fn fast_policy() -> KeyPolicy {
    KeyPolicy {
        max_token_lifetime: Duration::from_secs(2),
        retirement_grace: Duration::ZERO,
        min_next_age: Duration::ZERO,
    }
}

async fn sqlite(dir: &tempfile::TempDir) -> (String, Database) {
    let url = format!("sqlite://{}", dir.path().join("novads.db").display());
    let db = Database::open(&url, None).await.expect("sqlite opens");
    (url, db)
}

async fn postgres(pg: &Postgres, name: &str) -> (String, Database) {
    let url = pg.create_database(name).await;
    let db = Database::open(&url, None).await.expect("postgres opens");
    (url, db)
}

fn id_claims(subject: &str) -> IdTokenClaims {
    let t = now();
    IdTokenClaims {
        iss: ISSUER.into(),
        sub: subject.into(),
        aud: CLIENT.into(),
        exp: t + 300,
        iat: t,
        auth_time: Some(t - 5),
        nonce: Some("n-0S6_WzA2Mj".into()),
        azp: Some(CLIENT.into()),
        amr: Some(vec!["pwd".into()]),
        preferred_username: Some("jana@talsi".into()),
        realm: "talsi".into(),
        groups: Some(vec!["staff".into()]),
        roles: Some(vec!["vm-operator".into()]),
        ..Default::default()
    }
}

fn expect_id() -> Expectations {
    Expectations::new(ISSUER).audience(CLIENT)
}

fn header_of(token: &str) -> Value {
    let header = token.split('.').next().expect("header");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).expect("b64")).expect("json")
}

fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_owned())
        .collect()
}

fn kid_in_state(keys: &SigningKeys, algorithm: SigningAlgorithm, state: KeyState) -> String {
    keys.keys()
        .into_iter()
        .find(|k| k.algorithm == algorithm && k.state == state)
        .map(|k| k.kid)
        .unwrap_or_else(|| panic!("no {state} {algorithm} key"))
}

/// (kid, algorithm, state, kek_id, private_key, public_jwk) of every row, straight from SQL.
type Row = (String, String, String, String, Vec<u8>, String);

async fn rows(db: &Database) -> Vec<Row> {
    let sql = "SELECT kid, algorithm, state, kek_id, private_key, public_jwk \
               FROM oidc_signing_keys ORDER BY kid";
    match db {
        Database::Sqlite(pool) => sqlx::query_as(sql).fetch_all(pool).await,
        Database::Postgres(pool) => sqlx::query_as(sql).fetch_all(pool).await,
    }
    .expect("rows")
}

fn count(rows: &[Row], algorithm: &str, state: &str) -> usize {
    rows.iter()
        .filter(|r| r.1 == algorithm && r.2 == state)
        .count()
}

/// Opens a sealed private key following the documented format, independently of the module.
fn unseal(kid: &str, sealed: &[u8]) -> Vec<u8> {
    assert_eq!(sealed[0], 1, "format version");
    let (nonce, ciphertext) = sealed[1..].split_at(NONCE_LEN);
    let key = RandomizedNonceKey::new(&AES_256_GCM, &KEK_BYTES).expect("aes key");
    let mut buf = ciphertext.to_vec();
    let plain = key
        .open_in_place(
            Nonce::try_assume_unique_for_key(nonce).expect("nonce"),
            Aad::from(kid.as_bytes()),
            &mut buf,
        )
        .expect("decrypts with the KEK and the kid as associated data");
    plain.to_vec()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

// ---------------------------------------------------------------------------------------------
// Scenarios, run against both backends
// ---------------------------------------------------------------------------------------------

async fn keys_survive_reload_and_are_sealed(url: &str, db: &Database) {
    let keys = SigningKeys::load_or_init(db, &kek()).await.expect("init");
    let token = keys
        .sign(SigningAlgorithm::Es256, &id_claims("s-1"))
        .expect("signed");

    // A restart: a new connection pool and a new instance find the same keys.
    let reopened = Database::open(url, None).await.expect("reopen");
    let again = SigningKeys::load_or_init(&reopened, &kek())
        .await
        .expect("load");
    assert_eq!(again.jwks(), keys.jwks());
    for algorithm in SigningAlgorithm::ALL {
        assert_eq!(again.active_kid(algorithm), keys.active_kid(algorithm));
    }
    let claims: IdTokenClaims = again.verify(&token, &expect_id()).expect("verifies");
    assert_eq!(claims, id_claims("s-1").with_times_of(&claims));
    again.reload(&reopened, &kek()).await.expect("reload");
    assert_eq!(again.jwks(), keys.jwks());

    let rows = rows(db).await;
    assert_eq!(rows.len(), 4, "active and next for ES256 and RS256");
    for (kid, algorithm, state, kek_id, sealed, jwk) in &rows {
        assert_eq!(kek_id, &kek().id());
        let pkcs8 = unseal(kid, sealed);
        // The stored column holds no run of 16 plaintext bytes, let alone the PKCS#8 document.
        assert!(
            !pkcs8
                .windows(16)
                .any(|w| sealed.windows(16).any(|s| s == w)),
            "{kid}: private key stored in plaintext"
        );
        let jwk: Value = serde_json::from_str(jwk).expect("jwk json");
        match algorithm.as_str() {
            "ES256" => {
                let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8)
                    .expect("ec pkcs8");
                let point = pair.public_key().as_ref();
                assert_eq!(jwk["x"], b64(&point[1..33]));
                assert_eq!(jwk["y"], b64(&point[33..]));
            }
            "RS256" => {
                let pair = RsaKeyPair::from_pkcs8(&pkcs8).expect("rsa pkcs8");
                assert_eq!(pair.public_modulus_len(), 256, "2048-bit modulus");
            }
            other => panic!("unexpected algorithm {other}"),
        }
        assert!(["active", "next"].contains(&state.as_str()));
    }
}

async fn wrong_kek_fails_clearly(db: &Database) {
    let keys = SigningKeys::load_or_init(db, &kek()).await.expect("init");
    let other = KeyEncryptionKey::from_bytes([7; 32]);

    let err = SigningKeys::load_or_init(db, &other)
        .await
        .expect_err("wrong KEK refused");
    assert!(matches!(err, KeyError::WrongKek { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&kek().id()) && text.contains(&other.id()),
        "{text}"
    );
    assert!(text.contains("key-encryption key"), "{text}");
    // Nothing was created with the wrong key beside the existing ones.
    assert_eq!(rows(db).await.len(), 4);

    let err = SigningKeys::rotate(db, &other, &fast_policy())
        .await
        .expect_err("rotation with the wrong KEK refused");
    assert!(matches!(err, KeyError::WrongKek { .. }), "{err:?}");

    // A failed reload keeps the keys loaded before.
    let err = keys.reload(db, &other).await.expect_err("reload refused");
    assert!(matches!(err, KeyError::WrongKek { .. }), "{err:?}");
    keys.sign(SigningAlgorithm::Rs256, &id_claims("s"))
        .expect("still signs");

    // A row whose fingerprint was forged to match still does not decrypt: named, no panic.
    match db {
        Database::Sqlite(pool) => sqlx::query("UPDATE oidc_signing_keys SET kek_id = $1")
            .bind(other.id())
            .execute(pool)
            .await
            .map(drop),
        Database::Postgres(pool) => sqlx::query("UPDATE oidc_signing_keys SET kek_id = $1")
            .bind(other.id())
            .execute(pool)
            .await
            .map(drop),
    }
    .expect("update");
    let err = SigningKeys::load_or_init(db, &other)
        .await
        .expect_err("refused");
    assert!(matches!(err, KeyError::Decrypt { .. }), "{err:?}");
    assert!(err.to_string().contains("does not decrypt"), "{err}");
}

async fn rotation_with_overlap(db: &Database) {
    let keys = SigningKeys::load_or_init(db, &kek()).await.expect("init");
    let replica = SigningKeys::load_or_init(db, &kek())
        .await
        .expect("replica");
    let before = keys.jwks();
    let mut old_active = Vec::new();
    let mut tokens = Vec::new();
    for algorithm in SigningAlgorithm::ALL {
        let next = kid_in_state(&keys, algorithm, KeyState::Next);
        // The next key is published before it signs anything.
        assert!(kids(&before).contains(&next));
        old_active.push((algorithm, keys.active_kid(algorithm).expect("active"), next));
        tokens.push(keys.sign(algorithm, &id_claims("before")).expect("signed"));
    }

    // Too early by the default policy: nothing changes.
    let report = SigningKeys::rotate(db, &kek(), &KeyPolicy::default())
        .await
        .expect("rotate");
    assert!(report.rotated.is_empty(), "{report:?}");
    assert_eq!(report.postponed.len(), 2);

    let report = SigningKeys::rotate(db, &kek(), &fast_policy())
        .await
        .expect("rotate");
    assert_eq!(report.rotated.len(), 2, "{report:?}");
    for (algorithm, active, next) in &old_active {
        let r = report
            .rotated
            .iter()
            .find(|r| r.algorithm == *algorithm)
            .expect("rotated");
        assert_eq!(&r.retired, active);
        assert_eq!(&r.activated, next);
    }

    // Other replicas pick the rotation up on reload.
    replica.reload(db, &kek()).await.expect("reload");
    let after = replica.jwks();
    assert_eq!(
        kids(&after).len(),
        6,
        "retired, active and next per algorithm"
    );
    for ((algorithm, active, next), token) in old_active.iter().zip(&tokens) {
        assert_eq!(replica.active_kid(*algorithm).as_ref(), Some(next));
        assert!(kids(&after).contains(active), "retired key still published");
        let _: IdTokenClaims = replica
            .verify(token, &expect_id())
            .expect("token signed before rotation verifies");
        let fresh = replica
            .sign(*algorithm, &id_claims("after"))
            .expect("signed");
        assert_eq!(header_of(&fresh)["kid"], next.as_str());
        // The replica that has not reloaded yet still verifies tokens of the new key: it
        // published that key as `next`.
        let _: IdTokenClaims = keys.verify(&fresh, &expect_id()).expect("verifies");
    }

    // Past not_after the retired keys vanish from the JWKS and from verification, and the
    // next rotation deletes them.
    let retired_until = report
        .rotated
        .iter()
        .map(|r| r.retired_until)
        .max()
        .expect("rotated");
    let wait = (retired_until - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(100)).await;
    let now_published = kids(&replica.jwks());
    for ((_, active, _), token) in old_active.iter().zip(&tokens) {
        assert!(
            !now_published.contains(active),
            "expired retired key published"
        );
        let err = replica
            .verify::<IdTokenClaims>(token, &expect_id())
            .expect_err("old key gone");
        assert!(
            matches!(err, KeyError::InvalidToken(TokenError::UnknownKey(_))),
            "{err:?}"
        );
    }
    let report = SigningKeys::rotate(db, &kek(), &fast_policy())
        .await
        .expect("rotate again");
    let mut deleted = report.deleted.clone();
    deleted.sort();
    let mut expected: Vec<String> = old_active.iter().map(|(_, a, _)| a.clone()).collect();
    expected.sort();
    assert_eq!(deleted, expected);
    let rows = rows(db).await;
    assert_eq!(rows.len(), 6);
    for algorithm in ["ES256", "RS256"] {
        assert_eq!(count(&rows, algorithm, "active"), 1);
        assert_eq!(count(&rows, algorithm, "next"), 1);
        assert_eq!(count(&rows, algorithm, "retired"), 1);
    }
}

/// A database that holds keys of one algorithm only (made before the provider kept both, or
/// with the RS256 rows removed by hand) gains the missing algorithm's active and next keys at
/// the next start, keeps its ES256 keys untouched, and then rotates both.
async fn missing_algorithm_is_added_at_start(db: &Database) {
    let keys = SigningKeys::load_or_init(db, &kek()).await.expect("init");
    let es_active = keys.active_kid(SigningAlgorithm::Es256).expect("active");
    let es_next = kid_in_state(&keys, SigningAlgorithm::Es256, KeyState::Next);
    let es_token = keys
        .sign(SigningAlgorithm::Es256, &id_claims("before"))
        .expect("signed");
    assert_eq!(
        db.execute("DELETE FROM oidc_signing_keys WHERE algorithm = 'RS256'")
            .await
            .expect("delete"),
        2
    );
    // A replica that merely reloads has no RS256 key to sign with, and says so.
    keys.reload(db, &kek()).await.expect("reload");
    assert!(matches!(
        keys.sign(SigningAlgorithm::Rs256, &id_claims("s")),
        Err(KeyError::NoActiveKey {
            algorithm: SigningAlgorithm::Rs256
        })
    ));

    // The next start creates them.
    let restarted = SigningKeys::load_or_init(db, &kek())
        .await
        .expect("restart");
    let rows = rows(db).await;
    assert_eq!(rows.len(), 4, "active and next for ES256 and RS256");
    for algorithm in ["ES256", "RS256"] {
        assert_eq!(count(&rows, algorithm, "active"), 1);
        assert_eq!(count(&rows, algorithm, "next"), 1);
    }
    assert_eq!(
        restarted.active_kid(SigningAlgorithm::Es256).as_ref(),
        Some(&es_active),
        "the ES256 keys are kept"
    );
    assert_eq!(
        kid_in_state(&restarted, SigningAlgorithm::Es256, KeyState::Next),
        es_next
    );
    let _: IdTokenClaims = restarted
        .verify(&es_token, &expect_id())
        .expect("tokens of the kept key verify");
    let rs_token = restarted
        .sign(SigningAlgorithm::Rs256, &id_claims("after"))
        .expect("RS256 signs");
    assert_eq!(header_of(&rs_token)["alg"], "RS256");
    let _: IdTokenClaims = restarted.verify(&rs_token, &expect_id()).expect("verifies");
    let jwks = restarted.jwks();
    let algs: Vec<&str> = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["alg"].as_str())
        .collect();
    assert_eq!(algs.len(), 4, "{jwks}");
    assert_eq!(algs.iter().filter(|a| **a == "RS256").count(), 2, "{jwks}");

    // From then on `novads keys rotate` rotates both algorithms together.
    let report = SigningKeys::rotate(db, &kek(), &fast_policy())
        .await
        .expect("rotate");
    let mut rotated: Vec<SigningAlgorithm> = report.rotated.iter().map(|r| r.algorithm).collect();
    rotated.sort();
    assert_eq!(rotated, SigningAlgorithm::ALL.to_vec());
}

#[tokio::test]
async fn sqlite_missing_algorithm_is_added_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, db) = sqlite(&dir).await;
    missing_algorithm_is_added_at_start(&db).await;
}

/// Replicas starting at once, then rotating at once, against one database.
async fn concurrent_replicas(url: &str) {
    let mut starts = Vec::new();
    for _ in 0..4 {
        let url = url.to_owned();
        starts.push(tokio::spawn(async move {
            let db = Database::open(&url, None).await.expect("open");
            SigningKeys::load_or_init(&db, &kek()).await.expect("init")
        }));
    }
    let mut replicas = Vec::new();
    for start in starts {
        replicas.push(start.await.expect("task"));
    }
    let db = Database::open(url, None).await.expect("open");
    let table = rows(&db).await;
    assert_eq!(table.len(), 4, "{table:?}");
    for algorithm in ["ES256", "RS256"] {
        assert_eq!(count(&table, algorithm, "active"), 1, "{algorithm}");
        assert_eq!(count(&table, algorithm, "next"), 1, "{algorithm}");
    }
    for replica in &replicas[1..] {
        assert_eq!(replica.jwks(), replicas[0].jwks());
    }
    // The database itself refuses a second active key, whatever the code does.
    let next_es = kid_in_state(&replicas[0], SigningAlgorithm::Es256, KeyState::Next);
    let promote = "UPDATE oidc_signing_keys SET state = 'active', activated_at = created_at \
                   WHERE kid = $1";
    let refused = match &db {
        Database::Sqlite(pool) => sqlx::query(promote)
            .bind(&next_es)
            .execute(pool)
            .await
            .map(drop),
        Database::Postgres(pool) => sqlx::query(promote)
            .bind(&next_es)
            .execute(pool)
            .await
            .map(drop),
    };
    assert!(refused.is_err(), "second active key accepted");

    let mut rotations = Vec::new();
    for _ in 0..3 {
        let url = url.to_owned();
        rotations.push(tokio::spawn(async move {
            let db = Database::open(&url, None).await.expect("open");
            let policy = KeyPolicy {
                min_next_age: Duration::ZERO,
                ..KeyPolicy::default()
            };
            SigningKeys::rotate(&db, &kek(), &policy)
                .await
                .expect("rotate")
        }));
    }
    for rotation in rotations {
        rotation.await.expect("task");
    }
    let table = rows(&db).await;
    for algorithm in ["ES256", "RS256"] {
        assert_eq!(count(&table, algorithm, "active"), 1, "{algorithm}");
        assert_eq!(count(&table, algorithm, "next"), 1, "{algorithm}");
        // Each rotation ran after the previous one: three retired keys, none lost.
        assert_eq!(count(&table, algorithm, "retired"), 3, "{algorithm}");
    }
}

// ---------------------------------------------------------------------------------------------
// SQLite
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn sqlite_keys_survive_reload_and_are_encrypted_at_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, db) = sqlite(&dir).await;
    keys_survive_reload_and_are_sealed(&url, &db).await;
}

#[tokio::test]
async fn sqlite_wrong_kek_fails_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, db) = sqlite(&dir).await;
    wrong_kek_fails_clearly(&db).await;
}

#[tokio::test]
async fn sqlite_rotation_keeps_old_tokens_valid_until_not_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, db) = sqlite(&dir).await;
    rotation_with_overlap(&db).await;
}

#[tokio::test]
async fn sqlite_concurrent_replicas_create_one_active_key_per_algorithm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, _db) = sqlite(&dir).await;
    concurrent_replicas(&url).await;
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn postgres_signing_keys() {
    let Some(pg) = Postgres::start().await else {
        return;
    };
    let (url, db) = postgres(&pg, "keys_reload").await;
    keys_survive_reload_and_are_sealed(&url, &db).await;
    let (_, db) = postgres(&pg, "keys_wrong_kek").await;
    wrong_kek_fails_clearly(&db).await;
    let (_, db) = postgres(&pg, "keys_rotation").await;
    rotation_with_overlap(&db).await;
    let (_, db) = postgres(&pg, "keys_missing_algorithm").await;
    missing_algorithm_is_added_at_start(&db).await;
}

#[tokio::test]
async fn postgres_concurrent_replicas_create_one_active_key_per_algorithm() {
    let Some(pg) = Postgres::start().await else {
        return;
    };
    let url = pg.create_database("keys_concurrent").await;
    concurrent_replicas(&url).await;
}

// ---------------------------------------------------------------------------------------------
// Tokens, independently verified and attacked
// ---------------------------------------------------------------------------------------------

async fn fresh_keys() -> (tempfile::TempDir, SigningKeys) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, db) = sqlite(&dir).await;
    let keys = SigningKeys::load_or_init(&db, &kek()).await.expect("init");
    (dir, keys)
}

#[tokio::test]
async fn jwks_has_the_rfc_7517_shape() {
    let (_dir, keys) = fresh_keys().await;
    let jwks = keys.jwks();
    let set = jwks["keys"].as_array().expect("keys array");
    assert_eq!(set.len(), 4);
    let mut seen = kids(&jwks);
    seen.dedup();
    assert_eq!(seen.len(), 4, "kids are unique");
    for key in set {
        assert_eq!(key["use"], "sig");
        assert!(key["kid"].as_str().is_some_and(|k| !k.is_empty()));
        for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            assert!(
                key.get(private).is_none(),
                "private member {private} published"
            );
        }
        match key["alg"].as_str() {
            Some("ES256") => {
                assert_eq!(key["kty"], "EC");
                assert_eq!(key["crv"], "P-256");
                for c in ["x", "y"] {
                    let bytes = URL_SAFE_NO_PAD
                        .decode(key[c].as_str().expect(c))
                        .expect("base64url");
                    assert_eq!(bytes.len(), 32);
                }
            }
            Some("RS256") => {
                assert_eq!(key["kty"], "RSA");
                assert_eq!(key["e"], "AQAB");
                let n = URL_SAFE_NO_PAD
                    .decode(key["n"].as_str().expect("n"))
                    .expect("base64url");
                assert_eq!(n.len(), 256);
            }
            other => panic!("unexpected alg {other:?}"),
        }
    }
    // The independent library reads it as a key set too.
    let parsed: CoreJsonWebKeySet = serde_json::from_value(jwks).expect("openidconnect parses");
    assert_eq!(parsed.keys().len(), 4);
}

#[tokio::test]
async fn openidconnect_verifies_id_tokens_for_both_algorithms() {
    let (_dir, keys) = fresh_keys().await;
    let jwks: CoreJsonWebKeySet = serde_json::from_value(keys.jwks()).expect("jwks");
    let verifier = CoreIdTokenVerifier::new_public_client(
        ClientId::new(CLIENT.into()),
        IssuerUrl::new(ISSUER.into()).expect("issuer"),
        jwks,
    )
    .set_allowed_algs([
        CoreJwsSigningAlgorithm::EcdsaP256Sha256,
        CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    ]);
    let access_token = "an-opaque-or-jwt-access-token";
    for algorithm in SigningAlgorithm::ALL {
        let mut claims = id_claims("subject-42");
        claims.at_hash = Some(at_hash(access_token, algorithm));
        let token = keys.sign(algorithm, &claims).expect("signed");

        let id_token = CoreIdToken::from_str(&token).expect("parses");
        let verified = id_token
            .claims(&verifier, &OidcNonce::new("n-0S6_WzA2Mj".into()))
            .unwrap_or_else(|e| panic!("{algorithm}: openidconnect rejects: {e:?}"));
        assert_eq!(verified.subject().as_str(), "subject-42");
        // at_hash as the independent library computes it.
        let key: &CoreJsonWebKey = id_token.signing_key(&verifier).expect("key");
        let alg = id_token.signing_alg().expect("alg");
        let expected =
            AccessTokenHash::from_token(&AccessToken::new(access_token.into()), alg, key)
                .expect("hash");
        assert_eq!(verified.access_token_hash(), Some(&expected));

        // And it is really checking: a changed payload fails there too.
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1] = b64(serde_json::to_string(&IdTokenClaims {
            sub: "someone-else".into(),
            ..claims.clone()
        })
        .expect("json")
        .as_bytes());
        let forged = CoreIdToken::from_str(&parts.join(".")).expect("parses");
        assert!(
            forged
                .claims(&verifier, &OidcNonce::new("n-0S6_WzA2Mj".into()))
                .is_err()
        );
    }
}

#[tokio::test]
async fn access_tokens_round_trip_with_their_own_type() {
    let (_dir, keys) = fresh_keys().await;
    let t = now();
    let claims = AccessTokenClaims {
        iss: ISSUER.into(),
        sub: "subject-42".into(),
        aud: "https://api.novads.test".into(),
        exp: t + 300,
        iat: t,
        jti: "a1b2c3".into(),
        grant_id: Some("g-1".into()),
        client_id: CLIENT.into(),
        scope: "openid groups".into(),
        realm: "talsi".into(),
        groups: Some(vec!["staff".into()]),
        roles: None,
        ..AccessTokenClaims::default()
    };
    let token = keys
        .sign_with_type(SigningAlgorithm::Es256, ACCESS_TOKEN_TYPE, &claims)
        .expect("signed");
    assert_eq!(header_of(&token)["typ"], "at+jwt");
    let expected = Expectations::new(ISSUER)
        .audience("https://api.novads.test")
        .token_type(ACCESS_TOKEN_TYPE);
    let back: AccessTokenClaims = keys.verify(&token, &expected).expect("verifies");
    assert_eq!(back, claims);

    // Neither kind passes for the other.
    let err = keys
        .verify::<IdTokenClaims>(&token, &Expectations::new(ISSUER))
        .expect_err("access token is no ID token");
    assert!(
        matches!(err, KeyError::InvalidToken(TokenError::WrongType { .. })),
        "{err:?}"
    );
    let id_token = keys
        .sign(SigningAlgorithm::Es256, &id_claims("s"))
        .expect("signed");
    let err = keys
        .verify::<AccessTokenClaims>(
            &id_token,
            &Expectations::new(ISSUER).token_type(ACCESS_TOKEN_TYPE),
        )
        .expect_err("ID token is no access token");
    assert!(
        matches!(err, KeyError::InvalidToken(TokenError::WrongType { .. })),
        "{err:?}"
    );
}

/// Builds a token from raw JSON parts and a raw signature.
fn forge(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        b64(signature)
    )
}

fn hs256(secret: &[u8], header: &Value, claims: &Value) -> String {
    let unsigned = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let tag = aws_lc_rs::hmac::sign(&key, unsigned.as_bytes());
    format!("{unsigned}.{}", b64(tag.as_ref()))
}

fn assert_refused(
    keys: &SigningKeys,
    token: &str,
    expected: &Expectations,
    what: &str,
) -> TokenError {
    match keys.verify::<Value>(token, expected) {
        Ok(claims) => panic!("{what}: accepted {claims}"),
        Err(KeyError::InvalidToken(e)) => e,
        Err(other) => panic!("{what}: refused as a server fault: {other:?}"),
    }
}

#[tokio::test]
async fn forged_and_invalid_tokens_are_refused() {
    let (_dir, keys) = fresh_keys().await;
    let claims = serde_json::to_value(id_claims("victim")).expect("json");
    let rs_kid = keys.active_kid(SigningAlgorithm::Rs256).expect("rs kid");
    let es_kid = keys.active_kid(SigningAlgorithm::Es256).expect("es kid");
    let expected = expect_id();
    let genuine = keys.sign(SigningAlgorithm::Rs256, &claims).expect("signed");
    let _: Value = keys
        .verify(&genuine, &expected)
        .expect("the genuine token verifies");

    // alg "none", with and without a signature, in any spelling.
    for alg in ["none", "None", "NONE"] {
        let header = json!({"alg": alg, "kid": rs_kid, "typ": "JWT"});
        for signature in [&b""[..], b"x"] {
            let e = assert_refused(
                &keys,
                &forge(&header, &claims, signature),
                &expected,
                "none",
            );
            assert!(matches!(e, TokenError::UnsupportedAlgorithm(_)), "{e:?}");
        }
    }

    // HS256 keyed with the public key, in every form an attacker might guess.
    let jwks = keys.jwks();
    let rsa_jwk = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["kid"] == rs_kid.as_str())
        .expect("rs jwk")
        .clone();
    let n = URL_SAFE_NO_PAD
        .decode(rsa_jwk["n"].as_str().expect("n"))
        .expect("n");
    let secrets: Vec<Vec<u8>> = vec![
        rsa_jwk.to_string().into_bytes(),
        jwks.to_string().into_bytes(),
        n,
        rsa_jwk["n"].as_str().expect("n").as_bytes().to_vec(),
    ];
    for alg in ["HS256", "HS384", "HS512"] {
        for secret in &secrets {
            let header = json!({"alg": alg, "kid": rs_kid, "typ": "JWT"});
            let e = assert_refused(&keys, &hs256(secret, &header, &claims), &expected, alg);
            assert!(matches!(e, TokenError::UnsupportedAlgorithm(_)), "{e:?}");
        }
    }

    // Algorithm substitution: an RS256 signature presented as ES256 for the same kid, and
    // the ES256 key named in an RS256 header.
    let parts: Vec<&str> = genuine.split('.').collect();
    let relabelled = forge(
        &json!({"alg": "ES256", "kid": rs_kid, "typ": "JWT"}),
        &claims,
        &URL_SAFE_NO_PAD.decode(parts[2]).expect("sig"),
    );
    let e = assert_refused(&keys, &relabelled, &expected, "ES256 on RSA key");
    assert!(matches!(e, TokenError::AlgorithmMismatch { .. }), "{e:?}");
    let e = assert_refused(
        &keys,
        &forge(
            &json!({"alg": "RS256", "kid": es_kid, "typ": "JWT"}),
            &claims,
            b"sig",
        ),
        &expected,
        "RS256 on EC key",
    );
    assert!(matches!(e, TokenError::AlgorithmMismatch { .. }), "{e:?}");

    // Keys that are not ours, or none named.
    let e = assert_refused(
        &keys,
        &forge(
            &json!({"alg": "RS256", "kid": "attacker-key", "typ": "JWT"}),
            &claims,
            b"sig",
        ),
        &expected,
        "unknown kid",
    );
    assert!(matches!(e, TokenError::UnknownKey(_)), "{e:?}");
    let e = assert_refused(
        &keys,
        &forge(&json!({"alg": "RS256", "typ": "JWT"}), &claims, b"sig"),
        &expected,
        "no kid",
    );
    assert_eq!(e, TokenError::MissingKeyId);
    // An embedded key is ignored: only published keys count.
    let e = assert_refused(
        &keys,
        &forge(
            &json!({"alg": "RS256", "kid": "mine", "typ": "JWT", "jwk": rsa_jwk, "jku": "https://evil.test/jwks"}),
            &claims,
            b"sig",
        ),
        &expected,
        "embedded jwk",
    );
    assert!(matches!(e, TokenError::UnknownKey(_)), "{e:?}");

    // A changed payload under the genuine header and signature.
    let mut tampered = claims.clone();
    tampered["sub"] = json!("attacker");
    let tampered_token = format!(
        "{}.{}.{}",
        parts[0],
        b64(tampered.to_string().as_bytes()),
        parts[2]
    );
    let e = assert_refused(&keys, &tampered_token, &expected, "tampered payload");
    assert_eq!(e, TokenError::BadSignature);
    // A flipped signature bit.
    let mut signature = URL_SAFE_NO_PAD.decode(parts[2]).expect("sig");
    signature[10] ^= 1;
    let flipped = format!("{}.{}.{}", parts[0], parts[1], b64(&signature));
    assert_eq!(
        assert_refused(&keys, &flipped, &expected, "flipped"),
        TokenError::BadSignature
    );
    // An ES256 signature in DER instead of R || S is not a JWS signature.
    let es = keys.sign(SigningAlgorithm::Es256, &claims).expect("signed");
    let es_parts: Vec<&str> = es.split('.').collect();
    let truncated = format!(
        "{}.{}.{}",
        es_parts[0],
        es_parts[1],
        b64(&[0x30, 0x44, 0x02])
    );
    assert_eq!(
        assert_refused(&keys, &truncated, &expected, "short ES sig"),
        TokenError::BadSignature
    );

    // Expired, wrong issuer, wrong audience — each with a valid signature.
    let mut expired = id_claims("s");
    expired.exp = now() - 3600;
    expired.iat = now() - 7200;
    let token = keys
        .sign(SigningAlgorithm::Es256, &expired)
        .expect("signed");
    assert_eq!(
        assert_refused(&keys, &token, &expected, "expired"),
        TokenError::Expired
    );

    let mut foreign = id_claims("s");
    foreign.iss = "https://evil.test".into();
    let token = keys
        .sign(SigningAlgorithm::Es256, &foreign)
        .expect("signed");
    let e = assert_refused(&keys, &token, &expected, "issuer");
    assert!(matches!(e, TokenError::WrongIssuer(_)), "{e:?}");

    let token = keys
        .sign(SigningAlgorithm::Es256, &id_claims("s"))
        .expect("signed");
    let e = assert_refused(
        &keys,
        &token,
        &Expectations::new(ISSUER).audience("another-client"),
        "audience",
    );
    assert!(matches!(e, TokenError::WrongAudience(_)), "{e:?}");
    // An audience list containing us is fine.
    let mut many = claims.clone();
    many["aud"] = json!(["other", CLIENT]);
    let token = keys.sign(SigningAlgorithm::Es256, &many).expect("signed");
    let _: Value = keys.verify(&token, &expected).expect("aud array");

    // Critical header parameters we do not understand, and plain garbage.
    let e = assert_refused(
        &keys,
        &forge(
            &json!({"alg": "ES256", "kid": es_kid, "typ": "JWT", "crit": ["exp"]}),
            &claims,
            b"s",
        ),
        &expected,
        "crit",
    );
    assert_eq!(e, TokenError::CriticalHeader);
    for garbage in ["", "a.b", "a.b.c.d", "!!!.???.###", &format!("{genuine}.")] {
        let e = assert_refused(&keys, garbage, &expected, garbage);
        assert!(matches!(e, TokenError::Malformed(_)), "{garbage:?}: {e:?}");
    }
}

/// Test helper: the same claims with another token's times, for comparing after a round trip.
trait WithTimes {
    fn with_times_of(self, other: &Self) -> Self;
}

impl WithTimes for IdTokenClaims {
    fn with_times_of(mut self, other: &Self) -> Self {
        self.exp = other.exp;
        self.iat = other.iat;
        self.auth_time = other.auth_time;
        self
    }
}

/// Copies the attacker's active `algorithm` key row from `theirs` into `ours` as a retired key
/// published for another hour: `mac` is the row's own MAC (under the attacker's key-encryption
/// key) or none.
async fn plant(theirs: &Database, ours: &Database, kid: &str, with_mac: bool) {
    type Planted = (String, String, String, Vec<u8>, String, Option<String>);
    let read = "SELECT kid, algorithm, kek_id, private_key, public_jwk, mac \
                FROM oidc_signing_keys WHERE kid = $1";
    let row: Planted = match theirs {
        Database::Sqlite(pool) => sqlx::query_as(read).bind(kid).fetch_one(pool).await,
        Database::Postgres(pool) => sqlx::query_as(read).bind(kid).fetch_one(pool).await,
    }
    .expect("their row");
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let until = (chrono::Utc::now() + chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let mac = if with_mac { row.5.clone() } else { None };
    let insert = "INSERT INTO oidc_signing_keys (kid, algorithm, state, created_at, activated_at, \
                  retired_at, not_after, kek_id, private_key, public_jwk, mac) \
                  VALUES ($1, $2, 'retired', $3, $3, $3, $4, $5, $6, $7, $8)";
    macro_rules! run {
        ($pool:expr) => {
            sqlx::query(insert)
                .bind(&row.0)
                .bind(&row.1)
                .bind(&at)
                .bind(&until)
                .bind(&row.2)
                .bind(&row.3)
                .bind(&row.4)
                .bind(&mac)
                .execute($pool)
                .await
                .map(drop)
        };
    }
    match ours {
        Database::Sqlite(pool) => run!(pool),
        Database::Postgres(pool) => run!(pool),
    }
    .expect("plant the row");
}

/// A database writer who inserts a signing-key row — a retired key with their own public key,
/// whose private half they hold — can no longer mint tokens the provider accepts: the row is
/// neither in the JWKS nor trusted when a token is verified, before or after a restart, and it
/// is reported. Tried with the row's MAC from the attacker's own installation and with none.
#[tokio::test]
async fn a_planted_signing_key_is_neither_published_nor_trusted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, attacker_db) = sqlite(&dir).await;
    let attacker_kek = KeyEncryptionKey::from_bytes([0x13; 32]);
    let attacker = SigningKeys::load_or_init(&attacker_db, &attacker_kek)
        .await
        .expect("the attacker's own keys");
    let es = attacker.active_kid(SigningAlgorithm::Es256).expect("ES256");
    let rs = attacker.active_kid(SigningAlgorithm::Rs256).expect("RS256");
    let forged = attacker
        .sign(SigningAlgorithm::Es256, &id_claims("talsi:mallory"))
        .expect("sign");
    let forged_rs = attacker
        .sign(SigningAlgorithm::Rs256, &id_claims("talsi:mallory"))
        .expect("sign");

    let ours_dir = tempfile::tempdir().expect("tempdir");
    let (_, sqlite_db) = sqlite(&ours_dir).await;
    let pg = Postgres::start().await;
    let mut databases = vec![sqlite_db];
    if let Some(pg) = &pg {
        databases.push(postgres(pg, "planted").await.1);
    }
    for db in databases {
        let backend = db.backend();
        let keys = SigningKeys::load_or_init(&db, &kek()).await.expect("keys");
        let genuine = keys
            .sign(SigningAlgorithm::Es256, &id_claims("talsi:jana"))
            .expect("sign");
        plant(&attacker_db, &db, &es, true).await;
        plant(&attacker_db, &db, &rs, false).await;
        keys.reload(&db, &kek())
            .await
            .expect("reload keeps serving");
        let restarted = SigningKeys::load_or_init(&db, &kek())
            .await
            .expect("a restart keeps serving");
        for (when, keys) in [("after reload", &keys), ("after restart", &restarted)] {
            let published = kids(&keys.jwks());
            assert!(
                !published.contains(&es) && !published.contains(&rs),
                "{backend:?} {when}: planted keys published: {published:?}"
            );
            for token in [&forged, &forged_rs] {
                let refused = keys.verify::<Value>(token, &expect_id());
                assert!(
                    refused.is_err(),
                    "{backend:?} {when}: a forged token was trusted"
                );
            }
            keys.verify::<Value>(&genuine, &expect_id())
                .unwrap_or_else(|e| panic!("{backend:?} {when}: genuine token refused: {e}"));
            let mut rejected = keys.rejected_rows();
            rejected.sort();
            let mut planted = vec![es.clone(), rs.clone()];
            planted.sort();
            assert_eq!(rejected, planted, "{backend:?} {when}");
        }
    }
}

/// Rows written before signing-key rows carried a MAC are sealed at the next start, because
/// their private halves open under the key-encryption key: an upgrade loses no key.
#[tokio::test]
async fn rows_from_before_row_macs_are_sealed_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, sqlite_db) = sqlite(&dir).await;
    let pg = Postgres::start().await;
    let mut databases = vec![sqlite_db];
    if let Some(pg) = &pg {
        databases.push(postgres(pg, "legacy_rows").await.1);
    }
    for db in databases {
        let backend = db.backend();
        let before = kids(
            &SigningKeys::load_or_init(&db, &kek())
                .await
                .expect("keys")
                .jwks(),
        );
        db.execute("UPDATE oidc_signing_keys SET mac = NULL")
            .await
            .expect("rows as before migration 0011");
        let keys = SigningKeys::load_or_init(&db, &kek()).await.expect("keys");
        assert_eq!(kids(&keys.jwks()), before, "{backend:?}");
        assert!(keys.rejected_rows().is_empty(), "{backend:?}");
        let unsealed = db
            .execute("UPDATE oidc_signing_keys SET kek_id = kek_id WHERE mac IS NULL")
            .await
            .expect("count");
        assert_eq!(unsealed, 0, "{backend:?}: every row sealed");
    }
}
