//! The keys as one replica holds them: decrypted signers of the active keys and the published
//! public keys, built whole from the table's rows.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::error::KeyError;
use super::jwk::{PublicKey, Signer};
use super::kek::KeyEncryptionKey;
use super::rotation::KeyPolicy;
use super::row_mac::RowKey;
use super::state::KeyState;
use super::store::{KeyRow, chrono_duration, parse_time, refuse_wrong_kek};
use crate::oidc::algorithm::SigningAlgorithm;

/// A published key, as a replica holds it.
pub(super) struct Published {
    pub(super) kid: String,
    pub(super) state: KeyState,
    pub(super) not_after: Option<DateTime<Utc>>,
    pub(super) public: PublicKey,
}

impl Published {
    pub(super) fn is_published_at(&self, now: DateTime<Utc>) -> bool {
        self.not_after.is_none_or(|until| now < until)
    }
}

/// What one load of the table produced; replaced whole by [`SigningKeys::reload`](super::SigningKeys::reload).
#[derive(Default)]
pub(super) struct Snapshot {
    pub(super) keys: Vec<Published>,
    pub(super) signers: BTreeMap<SigningAlgorithm, (String, Signer)>,
    /// Kids of rows refused: not authenticated by their MAC, or published for too long.
    pub(super) rejected: Vec<String>,
}

impl Snapshot {
    /// Leaves out every row its MAC does not authenticate (a database writer's), then
    /// decrypts the active and next keys (next too, so a damaged one is noticed before it is
    /// due to sign) and checks every row's kid and JWK. Retired keys' private halves are never
    /// decrypted: they no longer sign. A retired key claiming publication beyond what any
    /// rotation sets (now + the longest token lifetime + the grace) is left out too.
    pub(super) fn build(
        rows: &[KeyRow],
        kek: &KeyEncryptionKey,
        now: DateTime<Utc>,
    ) -> Result<Self, KeyError> {
        let mut snapshot = Self::default();
        let row_key = RowKey::new(kek)?;
        refuse_wrong_kek(rows, &row_key, kek)?;
        let policy = KeyPolicy::default();
        let longest = now
            + chrono_duration(policy.max_token_lifetime)
            + chrono_duration(policy.retirement_grace);
        for row in rows {
            if !row_key.authenticates(row) {
                tracing::error!(kid = %row.kid, state = %row.state, "a signing key row is not authenticated by the key-encryption key (planted or altered); it is neither published nor trusted");
                snapshot.rejected.push(row.kid.clone());
                continue;
            }
            let algorithm = row.algorithm()?;
            let state = row.state()?;
            let not_after = match (&row.not_after, state) {
                (Some(text), KeyState::Retired) => Some(parse_time(row, text)?),
                (None, KeyState::Retired) => return Err(row.corrupt("retired without not_after")),
                _ => None,
            };
            if not_after.is_some_and(|until| until > longest) {
                tracing::error!(kid = %row.kid, "a retired signing key claims publication beyond any rotation's; it is neither published nor trusted");
                snapshot.rejected.push(row.kid.clone());
                continue;
            }
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
