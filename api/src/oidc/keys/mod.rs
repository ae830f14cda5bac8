//! Signing keys: generated, encrypted at rest, rotated with overlap, published as JWKS.
//!
//! # Life of a key
//!
//! Per algorithm (ES256 and RS256) the `oidc_signing_keys` table holds exactly one `active` key,
//! which signs, and one `next` key, which is already published in the JWKS but signs nothing
//! yet: relying parties that cache the JWKS hold it before the first token it signs reaches
//! them. [`SigningKeys::rotate`] retires the active key, activates the next one and creates a
//! new next key. A `retired` key stays published until its `not_after` (retirement + the longest
//! token lifetime + a grace period), so every token it signed can be verified until that token
//! expires; the rotation after that deletes it. Partial unique indexes make "one active, one
//! next per algorithm" hold even when replicas start or rotate at the same moment.
//!
//! # Encryption at rest
//!
//! Private keys (PKCS#8) are sealed with AES-256-GCM under a [`KeyEncryptionKey`] that never
//! enters the database, with the key's `kid` as associated data so that a sealed key cannot be
//! moved to another row. A database dump alone therefore signs nothing. Each row records the
//! fingerprint of the key-encryption key that sealed it ([`KeyEncryptionKey::id`]), so that a
//! wrong key-encryption key is reported as such instead of as corruption.
//!
//! Sealed format (version 1): `0x01 || nonce (12 bytes, random) || ciphertext || tag (16 bytes)`.
//!
//! # Replicas
//!
//! Each replica holds an in-memory snapshot of the keys. After a rotation by any replica the
//! others pick it up with [`SigningKeys::reload`], which the server calls every
//! [`KEY_RELOAD_INTERVAL`](crate::lifetimes::KEY_RELOAD_INTERVAL); the retirement grace
//! covers a replica that signs with a key that was retired a moment ago.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

pub use super::algorithm::SigningAlgorithm;
use crate::db::{Database, Write, WriteScope};

mod jwk;
mod kek;
mod rotation;
mod store;
#[cfg(test)]
mod tests;
mod verify;

use jwk::{PublicKey, Signer};
pub use kek::KeyEncryptionKey;
use rotation::plan_rotation;
pub use rotation::{KeyPolicy, Postponed, Rotated, RotationReport};
use store::{
    KeyRow, NewKey, apply_postgres, apply_sqlite, delete_expired_postgres, delete_expired_sqlite,
    ensure_keys, fetch_postgres, fetch_rows, fetch_sqlite, format_time, parse_time,
};
pub use verify::Expectations;
use verify::verify_at;

/// Where a key is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyState {
    /// Published, not yet signing.
    Next,
    /// Published and signing.
    Active,
    /// Published until `not_after` so that tokens it signed still verify.
    Retired,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Next => "next",
            Self::Active => "active",
            Self::Retired => "retired",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Self::Next, Self::Active, Self::Retired]
            .into_iter()
            .find(|state| state.as_str() == s)
    }
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something wrong with the signing keys, their storage or their key-encryption key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key-encryption key: cannot read {path}: {source}")]
    KekRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key-encryption key: cannot create {path}: {source}")]
    KekCreate {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key-encryption key: environment variable {var} is not set (or not UTF-8)")]
    KekEnvMissing { var: String },
    #[error(
        "key-encryption key from {origin} is not a 256-bit key: expected exactly 32 raw bytes, \
         64 hex digits, or base64 of 32 bytes"
    )]
    KekFormat { origin: String },
    #[error(
        "signing key {kid} was encrypted with key-encryption key {stored}, but the configured \
         key-encryption key is {configured}; configure the key-encryption key the signing keys \
         were created with"
    )]
    WrongKek {
        kid: String,
        stored: String,
        configured: String,
    },
    #[error(
        "signing key {kid}: the private key does not decrypt with key-encryption key {kek_id}; \
         either the key-encryption key is wrong or the database row was altered"
    )]
    Decrypt { kid: String, kek_id: String },
    #[error("signing key {kid} in the database is unusable: {reason}")]
    CorruptKey { kid: String, reason: String },
    #[error(
        "signing keys: no active {algorithm} key is loaded; novads creates it when it starts \
         against this database"
    )]
    NoActiveKey { algorithm: SigningAlgorithm },
    #[error(
        "signing keys: {algorithm} has no {state} key although novads created one; the \
         oidc_signing_keys table was changed by hand"
    )]
    MissingKey {
        algorithm: SigningAlgorithm,
        state: KeyState,
    },
    #[error("signing keys: the cryptographic library failed while {0}")]
    Crypto(&'static str),
    #[error("signing keys: token claims must serialise to a JSON object ({0})")]
    Claims(String),
    #[error("signing keys: database: {0}")]
    Database(#[from] sqlx::Error),
    /// The token presented to [`SigningKeys::verify`] is not acceptable: answer the client
    /// `invalid_token`, never a server error.
    #[error("invalid token: {0}")]
    InvalidToken(#[from] TokenError),
}

impl KeyError {
    /// Whether this is the caller's bad token rather than a fault of the provider.
    pub fn is_invalid_token(&self) -> bool {
        matches!(self, Self::InvalidToken(_))
    }
}

/// Why a token was refused. Texts quoting the token are truncated: they come from the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("token algorithm {0:?} is not accepted (only ES256 and RS256 are)")]
    UnsupportedAlgorithm(String),
    #[error("token names no signing key (kid)")]
    MissingKeyId,
    #[error("token names signing key {0:?}, which this provider does not publish")]
    UnknownKey(String),
    #[error("token says {token} but signing key {kid} is an {key} key")]
    AlgorithmMismatch {
        kid: String,
        token: SigningAlgorithm,
        key: SigningAlgorithm,
    },
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token type is {found:?}, expected {expected:?}")]
    WrongType {
        expected: String,
        found: Option<String>,
    },
    #[error("token has critical header parameters this provider does not understand")]
    CriticalHeader,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token lacks the {0} claim or it has the wrong type")]
    MissingClaim(&'static str),
    #[error("token was issued by {0:?}, not by this provider")]
    WrongIssuer(String),
    #[error("token is not meant for {0:?}")]
    WrongAudience(String),
    #[error("token claims do not have the expected shape: {0}")]
    Claims(String),
}

/// At most this much of a client-supplied string goes into an error message.
fn quoted(s: &str) -> String {
    s.chars().take(80).collect()
}

/// A published key, as a replica holds it.
struct Published {
    kid: String,
    state: KeyState,
    not_after: Option<DateTime<Utc>>,
    public: PublicKey,
}

impl Published {
    fn is_published_at(&self, now: DateTime<Utc>) -> bool {
        self.not_after.is_none_or(|until| now < until)
    }
}

/// What one load of the table produced; replaced whole by [`SigningKeys::reload`].
#[derive(Default)]
struct Snapshot {
    keys: Vec<Published>,
    signers: BTreeMap<SigningAlgorithm, (String, Signer)>,
}

impl Snapshot {
    /// Decrypts the active and next keys (next too, so a damaged one is noticed before it is
    /// due to sign) and checks every row's kid and JWK. Retired keys' private halves are never
    /// decrypted: they no longer sign.
    fn build(
        rows: &[KeyRow],
        kek: &KeyEncryptionKey,
        now: DateTime<Utc>,
    ) -> Result<Self, KeyError> {
        let mut snapshot = Self::default();
        for row in rows {
            let algorithm = row.algorithm()?;
            let state = row.state()?;
            let not_after = match (&row.not_after, state) {
                (Some(text), KeyState::Retired) => Some(parse_time(row, text)?),
                (None, KeyState::Retired) => return Err(row.corrupt("retired without not_after")),
                _ => None,
            };
            let jwk: Value = serde_json::from_str(&row.public_jwk)
                .map_err(|e| row.corrupt(format!("the public JWK is not JSON ({e})")))?;
            let public = PublicKey::from_jwk(&jwk)
                .filter(|public| public.algorithm() == algorithm)
                .ok_or_else(|| row.corrupt(format!("the public JWK is not an {algorithm} key")))?;
            if public.thumbprint() != row.kid {
                return Err(row.corrupt("the kid is not the thumbprint of the public JWK"));
            }
            if state != KeyState::Retired {
                row.check_kek(kek)?;
                let pkcs8 = kek.open(&row.kid, &row.private_key)?;
                let signer = Signer::from_pkcs8(algorithm, &pkcs8).map_err(|e| row.corrupt(e))?;
                if signer.public_key().as_ref() != Some(&public) {
                    return Err(row.corrupt("the private key does not match the public JWK"));
                }
                if state == KeyState::Active {
                    snapshot
                        .signers
                        .insert(algorithm, (row.kid.clone(), signer));
                }
            }
            let published = Published {
                kid: row.kid.clone(),
                state,
                not_after,
                public,
            };
            if published.is_published_at(now) {
                snapshot.keys.push(published);
            }
        }
        Ok(snapshot)
    }
}

/// A key as [`SigningKeys::keys`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub kid: String,
    pub algorithm: SigningAlgorithm,
    pub state: KeyState,
    /// For retired keys: when they stop being published.
    pub not_after: Option<DateTime<Utc>>,
}

/// The provider's signing keys as this replica knows them. Cloning is cheap and clones share
/// the snapshot, so a [`SigningKeys::reload`] through one is seen by all.
#[derive(Clone)]
pub struct SigningKeys {
    snapshot: Arc<RwLock<Arc<Snapshot>>>,
}

impl fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKeys")
            .field("keys", &self.keys())
            .finish()
    }
}

impl SigningKeys {
    /// Loads the keys, first creating the active and next key of each algorithm that lacks
    /// them (on the first start). Safe when several replicas start at once.
    pub async fn load_or_init(db: &Database, kek: &KeyEncryptionKey) -> Result<Self, KeyError> {
        ensure_keys(db, kek).await?;
        let rows = fetch_rows(db).await?;
        let snapshot = Snapshot::build(&rows, kek, Utc::now())?;
        Ok(Self {
            snapshot: Arc::new(RwLock::new(Arc::new(snapshot))),
        })
    }

    /// Re-reads the table, picking up rotations by other replicas. On error the keys loaded
    /// before stay in use.
    pub async fn reload(&self, db: &Database, kek: &KeyEncryptionKey) -> Result<(), KeyError> {
        let rows = fetch_rows(db).await?;
        let snapshot = Arc::new(Snapshot::build(&rows, kek, Utc::now())?);
        for algorithm in SigningAlgorithm::ALL {
            if !snapshot.signers.contains_key(&algorithm) {
                tracing::warn!(%algorithm, "no active signing key after reload");
            }
        }
        *self
            .snapshot
            .write()
            .unwrap_or_else(PoisonError::into_inner) = snapshot;
        Ok(())
    }

    /// Rotates every algorithm whose next key is old enough (see [`KeyPolicy::min_next_age`]):
    /// active → retired (published until now + max token lifetime + grace), next → active, and
    /// a new next key; then deletes retired keys past their `not_after`. Rotations by several
    /// replicas run one after another. This replica's snapshot is not changed: call
    /// [`SigningKeys::reload`].
    pub async fn rotate(
        db: &Database,
        kek: &KeyEncryptionKey,
        policy: &KeyPolicy,
    ) -> Result<RotationReport, KeyError> {
        ensure_keys(db, kek).await?;
        // Key generation (RSA takes a while) happens before the lock is taken.
        let mut fresh = BTreeMap::new();
        for algorithm in SigningAlgorithm::ALL {
            fresh.insert(algorithm, NewKey::generate(algorithm, kek)?);
        }
        let (changes, mut report);
        // The write takes the lock before reading (on SQLite `BEGIN IMMEDIATE`), so
        // rotations do not interleave.
        let mut write = db.begin_write(WriteScope::Transaction).await?;
        match &mut write {
            Write::Sqlite { tx, .. } => {
                // The clock is read under the lock: a rotation that waited for another must
                // not date its retirement before that one.
                let now = Utc::now();
                let now_text = format_time(now);
                let rows = fetch_sqlite(tx).await?;
                (changes, report) = plan_rotation(&rows, now, policy, kek, &mut fresh)?;
                for change in &changes {
                    apply_sqlite(tx, change, &now_text).await?;
                }
                report.deleted = delete_expired_sqlite(tx, &now_text).await?;
            }
            Write::Postgres(pg) => {
                let conn = pg.connection();
                // Blocks other rotations and key creation (not readers) until commit, so the
                // rows read next are the ones the changes apply to.
                sqlx::query("LOCK TABLE oidc_signing_keys IN SHARE ROW EXCLUSIVE MODE")
                    .execute(&mut *conn)
                    .await?;
                let now = Utc::now();
                let now_text = format_time(now);
                let rows = fetch_postgres(conn).await?;
                (changes, report) = plan_rotation(&rows, now, policy, kek, &mut fresh)?;
                for change in &changes {
                    apply_postgres(conn, change, &now_text).await?;
                }
                report.deleted = delete_expired_postgres(conn, &now_text).await?;
            }
        }
        write.commit().await?;
        for r in &report.rotated {
            tracing::info!(
                algorithm = %r.algorithm, retired = %r.retired, activated = %r.activated,
                next = %r.next, retired_until = %r.retired_until, "rotated signing keys"
            );
        }
        for p in &report.postponed {
            tracing::info!(
                algorithm = %p.algorithm, next = %p.next, eligible_at = %p.eligible_at,
                "signing key rotation postponed: the next key has not been published long enough"
            );
        }
        for kid in &report.deleted {
            tracing::info!(%kid, "deleted an expired retired signing key");
        }
        Ok(report)
    }

    fn current(&self) -> Arc<Snapshot> {
        // Poisoning cannot leave a half-written snapshot: writers only swap an Arc.
        Arc::clone(&self.snapshot.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The published keys: every next, active and not yet expired retired key.
    pub fn keys(&self) -> Vec<KeyInfo> {
        let snapshot = self.current();
        let now = Utc::now();
        snapshot
            .keys
            .iter()
            .filter(|key| key.is_published_at(now))
            .map(|key| KeyInfo {
                kid: key.kid.clone(),
                algorithm: key.public.algorithm(),
                state: key.state,
                not_after: key.not_after,
            })
            .collect()
    }

    /// The kid that currently signs for `algorithm`.
    pub fn active_kid(&self, algorithm: SigningAlgorithm) -> Option<String> {
        self.current()
            .signers
            .get(&algorithm)
            .map(|(kid, _)| kid.clone())
    }

    /// The JWK Set (RFC 7517 §5) served at the `jwks_uri`.
    pub fn jwks(&self) -> Value {
        let snapshot = self.current();
        let now = Utc::now();
        let keys: Vec<Value> = snapshot
            .keys
            .iter()
            .filter(|key| key.is_published_at(now))
            .map(|key| key.public.to_jwk(&key.kid))
            .collect();
        json!({ "keys": keys })
    }

    /// Signs `claims` as a JWS compact serialisation with header `typ: JWT` (ID tokens).
    pub fn sign(
        &self,
        algorithm: SigningAlgorithm,
        claims: &impl Serialize,
    ) -> Result<String, KeyError> {
        self.sign_with_type(algorithm, "JWT", claims)
    }

    /// Signs `claims` with the given `typ` header, e.g. `at+jwt` for RFC 9068 access tokens.
    pub fn sign_with_type(
        &self,
        algorithm: SigningAlgorithm,
        token_type: &str,
        claims: &impl Serialize,
    ) -> Result<String, KeyError> {
        let snapshot = self.current();
        let (kid, signer) = snapshot
            .signers
            .get(&algorithm)
            .ok_or(KeyError::NoActiveKey { algorithm })?;
        let payload = serde_json::to_value(claims).map_err(|e| KeyError::Claims(e.to_string()))?;
        if !payload.is_object() {
            return Err(KeyError::Claims(
                "got a JSON value that is not an object".into(),
            ));
        }
        let header = json!({ "alg": algorithm.as_str(), "kid": kid, "typ": token_type });
        let mut token = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(payload.to_string())
        );
        let signature = signer.sign(token.as_bytes())?;
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature));
        Ok(token)
    }

    /// Verifies a token signed by one of the published keys and returns its claims.
    ///
    /// The key is the published key named by `kid`; the header's `alg` must be that key's
    /// algorithm, so `none`, HMAC (including HMAC keyed with a public key) and algorithm
    /// substitution are refused before any signature check. Then `iss`, `aud` (when expected),
    /// `exp` (required) and `nbf` (when present) are checked with the leeway.
    pub fn verify<T: DeserializeOwned>(
        &self,
        token: &str,
        expected: &Expectations,
    ) -> Result<T, KeyError> {
        let claims = verify_at(&self.current(), token, expected, Utc::now())?;
        serde_json::from_value(claims)
            .map_err(|e| KeyError::InvalidToken(TokenError::Claims(e.to_string())))
    }
}
