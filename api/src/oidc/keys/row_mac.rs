//! Authentication of `oidc_signing_keys` rows: a MAC over what decides whether a key is
//! published and trusted (kid, algorithm, state, not_after, public JWK), under a key derived
//! from the key-encryption key. A database writer cannot compute it, so a row they insert or
//! change is neither published nor trusted.

use aws_lc_rs::hmac;

use super::error::KeyError;
use super::kek::{KeyEncryptionKey, MacPurpose, decode_hex, encode_hex};
use super::state::KeyState;
use super::store::KeyRow;
use crate::oidc::algorithm::SigningAlgorithm;

/// The key that authenticates signing-key rows.
pub(super) struct RowKey {
    key: hmac::Key,
}

impl RowKey {
    pub(super) fn new(kek: &KeyEncryptionKey) -> Result<Self, KeyError> {
        Ok(Self {
            key: kek.derive_mac_key(MacPurpose::SigningKeyRows)?,
        })
    }

    /// The one MAC input of a row.
    fn input(
        kid: &str,
        algorithm: &str,
        state: &str,
        not_after: Option<&str>,
        public_jwk: &str,
    ) -> Vec<u8> {
        serde_json::json!(["signing key", kid, algorithm, state, not_after, public_jwk])
            .to_string()
            .into_bytes()
    }

    /// The MAC of a row with these values.
    pub(super) fn mac(
        &self,
        kid: &str,
        algorithm: SigningAlgorithm,
        state: KeyState,
        not_after: Option<&str>,
        public_jwk: &str,
    ) -> String {
        let input = Self::input(
            kid,
            algorithm.as_str(),
            state.as_str(),
            not_after,
            public_jwk,
        );
        encode_hex(hmac::sign(&self.key, &input).as_ref())
    }

    /// Whether the row's MAC authenticates its values (constant time).
    pub(super) fn authenticates(&self, row: &KeyRow) -> bool {
        let Some(tag) = row.mac.as_deref().and_then(decode_hex) else {
            return false;
        };
        let input = Self::input(
            &row.kid,
            &row.algorithm,
            &row.state,
            row.not_after.as_deref(),
            &row.public_jwk,
        );
        hmac::verify(&self.key, &input, &tag).is_ok()
    }
}
