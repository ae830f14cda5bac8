//! The `oidc_signing_keys` table: rows as stored, new keys, and the statements that read,
//! insert and change them (one SQL text for both backends).

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

use super::error::KeyError;
use super::jwk::{PublicKey, Signer};
use super::kek::KeyEncryptionKey;
use super::row_mac::RowKey;
use super::state::KeyState;
use crate::db::{Database, Write, WriteScope};
use crate::oidc::algorithm::SigningAlgorithm;

/// A row of `oidc_signing_keys`.
#[derive(Debug, Clone)]
pub(super) struct KeyRow {
    pub(super) kid: String,
    pub(super) algorithm: String,
    pub(super) state: String,
    pub(super) created_at: String,
    pub(super) not_after: Option<String>,
    pub(super) kek_id: String,
    pub(super) private_key: Vec<u8>,
    pub(super) public_jwk: String,
    /// See `row_mac.rs`; absent on rows written before migration 0011 until they are sealed.
    pub(super) mac: Option<String>,
}

pub(super) type RowTuple = (
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    Vec<u8>,
    String,
    Option<String>,
);

impl From<RowTuple> for KeyRow {
    fn from(
        (kid, algorithm, state, created_at, not_after, kek_id, private_key, public_jwk, mac): RowTuple,
    ) -> Self {
        Self {
            kid,
            algorithm,
            state,
            created_at,
            not_after,
            kek_id,
            private_key,
            public_jwk,
            mac,
        }
    }
}

impl KeyRow {
    pub(super) fn corrupt(&self, reason: impl Into<String>) -> KeyError {
        KeyError::CorruptKey {
            kid: self.kid.clone(),
            reason: reason.into(),
        }
    }

    pub(super) fn algorithm(&self) -> Result<SigningAlgorithm, KeyError> {
        SigningAlgorithm::from_jose(&self.algorithm)
            .ok_or_else(|| self.corrupt(format!("unknown algorithm {:?}", self.algorithm)))
    }

    pub(super) fn state(&self) -> Result<KeyState, KeyError> {
        KeyState::parse(&self.state)
            .ok_or_else(|| self.corrupt(format!("unknown state {:?}", self.state)))
    }

    /// Whether the sealed private key opens under `kek` and matches the public JWK.
    pub(super) fn check_private_key(&self, kek: &KeyEncryptionKey) -> Result<(), KeyError> {
        self.check_kek(kek)?;
        let algorithm = self.algorithm()?;
        let jwk: serde_json::Value = serde_json::from_str(&self.public_jwk)
            .map_err(|e| self.corrupt(format!("the public JWK is not JSON ({e})")))?;
        let public = PublicKey::from_jwk(&jwk)
            .ok_or_else(|| self.corrupt("the public JWK is not a supported key"))?;
        let pkcs8 = kek.open(&self.kid, &self.private_key)?;
        let signer = Signer::from_pkcs8(algorithm, &pkcs8).map_err(|e| self.corrupt(e))?;
        if signer.public_key().as_ref() != Some(&public) || public.thumbprint() != self.kid {
            return Err(self.corrupt("the private key does not match the public JWK and kid"));
        }
        Ok(())
    }

    pub(super) fn check_kek(&self, kek: &KeyEncryptionKey) -> Result<(), KeyError> {
        let configured = kek.id();
        if self.kek_id == configured {
            Ok(())
        } else {
            Err(KeyError::WrongKek {
                kid: self.kid.clone(),
                stored: self.kek_id.clone(),
                configured,
            })
        }
    }
}

/// A freshly generated key, sealed and ready to insert.
pub(super) struct NewKey {
    pub(super) kid: String,
    pub(super) algorithm: SigningAlgorithm,
    pub(super) kek_id: String,
    pub(super) private_key: Vec<u8>,
    pub(super) public_jwk: String,
}

impl NewKey {
    pub(super) fn generate(
        algorithm: SigningAlgorithm,
        kek: &KeyEncryptionKey,
    ) -> Result<Self, KeyError> {
        let signer = Signer::generate(algorithm)?;
        let public = signer
            .public_key()
            .ok_or(KeyError::Crypto("reading a generated public key"))?;
        let kid = public.thumbprint();
        let private_key = kek.seal(&kid, &signer.pkcs8()?)?;
        Ok(Self {
            public_jwk: public.to_jwk(&kid).to_string(),
            kid,
            algorithm,
            kek_id: kek.id(),
            private_key,
        })
    }
}

/// One step of a rotation, applied inside its transaction; each carries the row's new MAC.
pub(super) enum Change {
    Retire {
        kid: String,
        at: String,
        not_after: String,
        mac: String,
    },
    Activate {
        kid: String,
        at: String,
        mac: String,
    },
    InsertNext {
        key: NewKey,
        mac: String,
    },
}

/// Fixed-width UTC text, so that times compare correctly as strings in SQL.
pub(super) fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub(super) fn parse_time(row: &KeyRow, text: &str) -> Result<DateTime<Utc>, KeyError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| row.corrupt(format!("bad timestamp {text:?}")))
}

pub(super) fn chrono_duration(d: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX)
}

/// The same SQL for both backends (sqlx binds `$N` on SQLite too); this macro instantiates the
/// queries for each backend's connection type, because the two pools are different types.
macro_rules! key_store {
    ($module:ident, $conn:ty) => {
        mod $module {
            use super::{Change, KeyRow, KeyState, NewKey, RowTuple};

            pub(in crate::oidc::keys) async fn fetch(
                conn: &mut $conn,
            ) -> Result<Vec<KeyRow>, sqlx::Error> {
                let rows: Vec<RowTuple> = sqlx::query_as(
                    "SELECT kid, algorithm, state, created_at, not_after, kek_id, private_key, \
                     public_jwk, mac FROM oidc_signing_keys ORDER BY created_at, kid",
                )
                .fetch_all(&mut *conn)
                .await?;
                Ok(rows.into_iter().map(KeyRow::from).collect())
            }

            /// Inserts unless the algorithm already has a key in that state (the partial unique
            /// indexes); returns whether the row went in.
            pub(in crate::oidc::keys) async fn insert(
                conn: &mut $conn,
                key: &NewKey,
                state: KeyState,
                now: &str,
                mac: &str,
            ) -> Result<bool, sqlx::Error> {
                let activated_at = (state == KeyState::Active).then_some(now);
                let done = sqlx::query(
                    "INSERT INTO oidc_signing_keys (kid, algorithm, state, created_at, \
                     activated_at, kek_id, private_key, public_jwk, mac) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
                )
                .bind(&key.kid)
                .bind(key.algorithm.as_str())
                .bind(state.as_str())
                .bind(now)
                .bind(activated_at)
                .bind(&key.kek_id)
                .bind(&key.private_key)
                .bind(&key.public_jwk)
                .bind(mac)
                .execute(&mut *conn)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            pub(in crate::oidc::keys) async fn apply(
                conn: &mut $conn,
                change: &Change,
                now: &str,
            ) -> Result<(), sqlx::Error> {
                match change {
                    Change::Retire {
                        kid,
                        at,
                        not_after,
                        mac,
                    } => {
                        sqlx::query(
                            "UPDATE oidc_signing_keys SET state = 'retired', retired_at = $2, \
                             not_after = $3, mac = $4 WHERE kid = $1 AND state = 'active'",
                        )
                        .bind(kid)
                        .bind(at)
                        .bind(not_after)
                        .bind(mac)
                        .execute(&mut *conn)
                        .await?;
                    }
                    Change::Activate { kid, at, mac } => {
                        sqlx::query(
                            "UPDATE oidc_signing_keys SET state = 'active', activated_at = $2, \
                             mac = $3 WHERE kid = $1 AND state = 'next'",
                        )
                        .bind(kid)
                        .bind(at)
                        .bind(mac)
                        .execute(&mut *conn)
                        .await?;
                    }
                    Change::InsertNext { key, mac } => {
                        insert(conn, key, KeyState::Next, now, mac).await?;
                    }
                }
                Ok(())
            }

            /// Deletes retired keys that are no longer published; returns their kids.
            pub(in crate::oidc::keys) async fn delete_expired(
                conn: &mut $conn,
                now: &str,
            ) -> Result<Vec<String>, sqlx::Error> {
                sqlx::query_scalar(
                    "DELETE FROM oidc_signing_keys WHERE state = 'retired' AND not_after <= $1 \
                     RETURNING kid",
                )
                .bind(now)
                .fetch_all(&mut *conn)
                .await
            }

            /// Records the MAC of a row written before migration 0011.
            pub(in crate::oidc::keys) async fn seal(
                conn: &mut $conn,
                kid: &str,
                mac: &str,
            ) -> Result<(), sqlx::Error> {
                sqlx::query("UPDATE oidc_signing_keys SET mac = $2 WHERE kid = $1 AND mac IS NULL")
                    .bind(kid)
                    .bind(mac)
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            }
        }
    };
}

key_store!(sqlite_store, sqlx::SqliteConnection);
key_store!(postgres_store, sqlx::PgConnection);
pub(super) use postgres_store::{
    apply as apply_postgres, delete_expired as delete_expired_postgres, fetch as fetch_postgres,
};
pub(super) use sqlite_store::{
    apply as apply_sqlite, delete_expired as delete_expired_sqlite, fetch as fetch_sqlite,
};

pub(super) async fn fetch_rows(db: &Database) -> Result<Vec<KeyRow>, sqlx::Error> {
    match db {
        Database::Sqlite(pool) => sqlite_store::fetch(&mut *pool.acquire().await?).await,
        Database::Postgres(pool) => postgres_store::fetch(&mut *pool.acquire().await?).await,
    }
}

pub(super) async fn insert_if_absent(
    db: &Database,
    key: &NewKey,
    state: KeyState,
    now: &str,
    mac: &str,
) -> Result<bool, sqlx::Error> {
    let mut write = db.begin_write(WriteScope::Statement).await?;
    let inserted = match &mut write {
        Write::Sqlite(write) => {
            sqlite_store::insert(write.connection(), key, state, now, mac).await?
        }
        Write::Postgres(pg) => {
            postgres_store::insert(pg.connection(), key, state, now, mac).await?
        }
    };
    write.commit().await?;
    Ok(inserted)
}

/// Gives rows written before migration 0011 their MAC, each only after its sealed private key
/// opened under `kek` and matched its public JWK: what a database writer plants does not.
async fn seal_legacy_rows(
    db: &Database,
    kek: &KeyEncryptionKey,
    row_key: &RowKey,
) -> Result<(), KeyError> {
    for row in fetch_rows(db).await? {
        if row.mac.is_some() {
            continue;
        }
        if let Err(e) = row.check_private_key(kek) {
            tracing::error!(kid = %row.kid, error = %e, "a signing key row without a MAC does not open under the key-encryption key; it is not trusted");
            continue;
        }
        let mac = row_key.mac(
            &row.kid,
            row.algorithm()?,
            row.state()?,
            row.not_after.as_deref(),
            &row.public_jwk,
        );
        let mut write = db.begin_write(WriteScope::Statement).await?;
        match &mut write {
            Write::Sqlite(write) => sqlite_store::seal(write.connection(), &row.kid, &mac).await?,
            Write::Postgres(pg) => postgres_store::seal(pg.connection(), &row.kid, &mac).await?,
        }
        write.commit().await?;
        tracing::info!(kid = %row.kid, "sealed a signing key row written before row MACs");
    }
    Ok(())
}

/// When rows exist but none is authenticated, the likeliest cause is another key-encryption
/// key than the one the keys were made with: name it (or the row that does not decrypt)
/// rather than carry on without keys.
pub(super) fn refuse_wrong_kek(
    rows: &[KeyRow],
    row_key: &RowKey,
    kek: &KeyEncryptionKey,
) -> Result<(), KeyError> {
    if rows.iter().any(|row| row_key.authenticates(row)) {
        return Ok(());
    }
    for row in rows {
        row.check_kek(kek)?;
        if row.state()? != KeyState::Retired {
            row.check_private_key(kek)?;
        }
    }
    Ok(())
}

/// The rows whose MAC authenticates them, and the kids of the others (which loading the
/// snapshot reports).
pub(super) fn authentic(rows: Vec<KeyRow>, row_key: &RowKey) -> (Vec<KeyRow>, Vec<String>) {
    let (good, bad): (Vec<KeyRow>, Vec<KeyRow>) =
        rows.into_iter().partition(|row| row_key.authenticates(row));
    (good, bad.into_iter().map(|row| row.kid).collect())
}

/// Creates whatever active or next key is missing. Concurrent callers each try to insert;
/// the partial unique indexes let exactly one key per (algorithm, state) in, and the losers'
/// keys are simply dropped.
pub(super) async fn ensure_keys(db: &Database, kek: &KeyEncryptionKey) -> Result<(), KeyError> {
    let row_key = RowKey::new(kek)?;
    seal_legacy_rows(db, kek, &row_key).await?;
    let all = fetch_rows(db).await?;
    refuse_wrong_kek(&all, &row_key, kek)?;
    let (rows, _) = authentic(all, &row_key);
    let mut present = Vec::new();
    for row in &rows {
        let state = row.state()?;
        if state != KeyState::Retired {
            // Never add keys sealed with a different key-encryption key beside existing ones.
            row.check_kek(kek)?;
            present.push((row.algorithm()?, state));
        }
    }
    let now = format_time(Utc::now());
    for algorithm in SigningAlgorithm::ALL {
        for state in [KeyState::Active, KeyState::Next] {
            if present.contains(&(algorithm, state)) {
                continue;
            }
            let key = NewKey::generate(algorithm, kek)?;
            let mac = row_key.mac(&key.kid, algorithm, state, None, &key.public_jwk);
            if insert_if_absent(db, &key, state, &now, &mac).await? {
                tracing::info!(kid = %key.kid, %algorithm, %state, "created a signing key");
            }
        }
    }
    Ok(())
}
