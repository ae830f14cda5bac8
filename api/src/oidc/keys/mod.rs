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
use std::sync::{Arc, PoisonError, RwLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

pub use super::algorithm::SigningAlgorithm;
use crate::db::{Database, Write, WriteScope};

/// The JOSE header of the tokens the provider signs (RFC 7515 §4). Its members are in the
/// order the header was always written in.
#[derive(Serialize)]
struct JoseHeader<'a> {
    alg: &'a str,
    kid: &'a str,
    typ: &'a str,
}

mod error;
mod identity_mac;
mod jwk;
mod kek;
mod rotation;
mod row_mac;
mod snapshot;
mod state;
mod store;
#[cfg(test)]
mod tests;
mod verify;

pub use error::{KeyError, TokenError};
pub use identity_mac::{StoredIdentityKey, StoredRow, StoredRowKind};
pub use kek::{KeyEncryptionKey, MacPurpose, SealPurpose};
use rotation::plan_rotation;
pub use rotation::{KeyPolicy, Postponed, Rotated, RotationReport};
use row_mac::RowKey;
use snapshot::Snapshot;
pub use state::KeyState;
use store::{
    NewKey, apply_postgres, apply_sqlite, authentic, delete_expired_postgres,
    delete_expired_sqlite, ensure_keys, fetch_postgres, fetch_rows, fetch_sqlite, format_time,
};
pub use verify::Expectations;
use verify::verify_at;

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
        let row_key = RowKey::new(kek)?;
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
            Write::Sqlite(write) => {
                let tx = write.connection();
                // The clock is read under the lock: a rotation that waited for another must
                // not date its retirement before that one.
                let now = Utc::now();
                let now_text = format_time(now);
                let (rows, _) = authentic(fetch_sqlite(tx).await?, &row_key);
                (changes, report) = plan_rotation(&rows, now, policy, kek, &row_key, &mut fresh)?;
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
                let (rows, _) = authentic(fetch_postgres(conn).await?, &row_key);
                (changes, report) = plan_rotation(&rows, now, policy, kek, &row_key, &mut fresh)?;
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

    /// Kids of rows the last load refused because their MAC did not authenticate them
    /// (planted or altered by a database writer), or because they claimed to be published
    /// for longer than any rotation allows.
    pub fn rejected_rows(&self) -> Vec<String> {
        self.current().rejected.clone()
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
        // Straight to JSON, without a `serde_json::Value` in between (this runs twice per
        // token response). The members come in the claims type's order.
        let payload = serde_json::to_vec(claims).map_err(|e| KeyError::Claims(e.to_string()))?;
        if payload.first() != Some(&b'{') {
            return Err(KeyError::Claims(
                "got a JSON value that is not an object".into(),
            ));
        }
        let header = serde_json::to_vec(&JoseHeader {
            alg: algorithm.as_str(),
            kid,
            typ: token_type,
        })
        .map_err(|e| KeyError::Claims(e.to_string()))?;
        // The three parts, base64url, into one buffer; 86 characters of ES256 signature (342
        // of RS256) and its dot follow.
        let mut token = String::with_capacity((header.len() + payload.len()) * 4 / 3 + 352);
        URL_SAFE_NO_PAD.encode_string(header, &mut token);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(payload, &mut token);
        let signature = signer.sign(token.as_bytes())?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut token);
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
