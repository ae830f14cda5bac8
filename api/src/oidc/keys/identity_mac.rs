//! Authentication of the identities stored with sign-in state: a MAC over each authorization
//! code, single sign-on session and refresh token row — whom it names (subject, realm, groups,
//! the whole identity as stored) and what it grants (client, scope, redirect URI, lifetime) —
//! under a key derived from the key-encryption key. A database writer cannot compute it, so a
//! row they change or insert names nobody: the code is refused, the session is no session, the
//! refresh token is refused.
//!
//! Each MAC also covers the row's key (the hash of the code, session id or refresh token), so
//! that an authentic identity and its MAC cannot be copied onto a handle the writer holds.
//! What may change in a row's life (`used_at`, `revoked_at`, `last_seen`, `ended_at`) is not
//! covered: changing it only ever refuses or ends something, or replays a state the row had.

use std::fmt;

use aws_lc_rs::hmac;

use super::error::KeyError;
use super::kek::{KeyEncryptionKey, MacPurpose, decode_hex, encode_hex};

/// Which table a stored identity row belongs to; the `kind` label of
/// `novads_stored_identity_rows_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredRowKind {
    Code,
    Session,
    RefreshToken,
}

impl StoredRowKind {
    pub const ALL: [Self; 3] = [Self::Code, Self::Session, Self::RefreshToken];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Code => "code",
            Self::Session => "session",
            Self::RefreshToken => "refresh_token",
        }
    }
}

impl fmt::Display for StoredRowKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The authenticated columns of one row, as stored (the identity is its JSON text, exactly as
/// in the database, so that nothing is lost or reordered between writing and checking).
#[derive(Debug, Clone, Copy)]
pub enum StoredRow<'a> {
    /// `oidc_codes`.
    Code {
        code_hash: &'a str,
        client_id: &'a str,
        redirect_uri: &'a str,
        scope: &'a str,
        nonce: Option<&'a str>,
        code_challenge: Option<&'a str>,
        identity: &'a str,
        auth_time: i64,
        expires_at: i64,
        grant_id: Option<&'a str>,
    },
    /// `oidc_sessions`.
    Session {
        id_hash: &'a str,
        identity: &'a str,
        auth_time: i64,
        expires_at: i64,
    },
    /// `oidc_refresh_tokens`.
    RefreshToken {
        token_hash: &'a str,
        family_id: &'a str,
        client_id: &'a str,
        scope: &'a str,
        identity: &'a str,
        auth_time: i64,
        expires_at: i64,
    },
}

impl StoredRow<'_> {
    pub fn kind(&self) -> StoredRowKind {
        match self {
            Self::Code { .. } => StoredRowKind::Code,
            Self::Session { .. } => StoredRowKind::Session,
            Self::RefreshToken { .. } => StoredRowKind::RefreshToken,
        }
    }

    /// The one MAC input of a row: a JSON array led by the kind, so that no row of one table
    /// authenticates as a row of another. Serialised straight from the values (no
    /// `serde_json::Value` in between); the bytes are those of the `json!` array the rows were
    /// always sealed with, so stored MACs stay valid (see the test).
    fn mac_input(&self) -> Vec<u8> {
        let encoded = match *self {
            Self::Code {
                code_hash,
                client_id,
                redirect_uri,
                scope,
                nonce,
                code_challenge,
                identity,
                auth_time,
                expires_at,
                grant_id,
            } => serde_json::to_vec(&(
                "code",
                code_hash,
                client_id,
                redirect_uri,
                scope,
                nonce,
                code_challenge,
                identity,
                auth_time,
                expires_at,
                grant_id,
            )),
            Self::Session {
                id_hash,
                identity,
                auth_time,
                expires_at,
            } => serde_json::to_vec(&("session", id_hash, identity, auth_time, expires_at)),
            Self::RefreshToken {
                token_hash,
                family_id,
                client_id,
                scope,
                identity,
                auth_time,
                expires_at,
            } => serde_json::to_vec(&(
                "refresh token",
                token_hash,
                family_id,
                client_id,
                scope,
                identity,
                auth_time,
                expires_at,
            )),
        };
        // Invariant: serde_json fails only on a writer error (a `Vec` has none), on a map key
        // that is not a string (there is no map) or on a value whose `Serialize` fails (`str`,
        // `Option<&str>` and `i64` never do).
        encoded.expect("a tuple of strings and integers serialises")
    }
}

/// The key that authenticates stored identities, derived from the key-encryption key with its
/// own label ([`MacPurpose::StoredIdentities`]).
#[derive(Clone)]
pub struct StoredIdentityKey {
    key: hmac::Key,
}

impl StoredIdentityKey {
    pub fn from_kek(kek: &KeyEncryptionKey) -> Result<Self, KeyError> {
        Ok(Self {
            key: kek.derive_mac_key(MacPurpose::StoredIdentities)?,
        })
    }

    /// The MAC (hex) a row with these values carries.
    pub fn seal(&self, row: &StoredRow<'_>) -> String {
        encode_hex(hmac::sign(&self.key, &row.mac_input()).as_ref())
    }

    /// Whether `mac` authenticates the row (constant time). A row without a MAC — written
    /// before stored identities were authenticated, or by a database writer — never does.
    pub fn authenticates(&self, row: &StoredRow<'_>, mac: Option<&str>) -> bool {
        mac.and_then(decode_hex)
            .is_some_and(|tag| hmac::verify(&self.key, &row.mac_input(), &tag).is_ok())
    }
}

impl fmt::Debug for StoredIdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoredIdentityKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> StoredIdentityKey {
        StoredIdentityKey::from_kek(&KeyEncryptionKey::from_bytes([byte; 32])).expect("key")
    }

    fn refresh<'a>(identity: &'a str, family_id: &'a str) -> StoredRow<'a> {
        StoredRow::RefreshToken {
            token_hash: "th",
            family_id,
            client_id: "app",
            scope: "openid",
            identity,
            auth_time: 1,
            expires_at: 2,
        }
    }

    #[test]
    fn a_sealed_row_authenticates_and_any_change_does_not() {
        let key = key(1);
        let row = refresh(r#"{"subject":"talsi:jana"}"#, "f");
        let mac = key.seal(&row);
        assert!(key.authenticates(&row, Some(&mac)));
        assert!(!key.authenticates(&refresh(r#"{"subject":"talsi:anna"}"#, "f"), Some(&mac)));
        assert!(!key.authenticates(&refresh(r#"{"subject":"talsi:jana"}"#, "g"), Some(&mac)));
        assert!(!key.authenticates(&row, None), "a row without a MAC");
        assert!(!key.authenticates(&row, Some("not hex")));
        assert!(
            !self::key(2).authenticates(&row, Some(&mac)),
            "another key-encryption key"
        );
    }

    #[test]
    fn rows_of_one_table_never_authenticate_as_another() {
        let key = key(1);
        let session = StoredRow::Session {
            id_hash: "h",
            identity: "{}",
            auth_time: 1,
            expires_at: 2,
        };
        let mac = key.seal(&session);
        let code = StoredRow::Code {
            code_hash: "h",
            client_id: "{}",
            redirect_uri: "",
            scope: "",
            nonce: None,
            code_challenge: None,
            identity: "{}",
            auth_time: 1,
            expires_at: 2,
            grant_id: None,
        };
        assert!(!key.authenticates(&code, Some(&mac)));
        assert_eq!(session.kind(), StoredRowKind::Session);
    }

    /// Rows stored before are sealed over `json!([...]).to_string()`: the input must stay
    /// byte for byte what that gave, escapes and `null`s included.
    #[test]
    fn the_mac_input_is_the_json_array_rows_were_sealed_with() {
        let identity = r#"{"subject":"talsi:j\u00e4na","name":"Jāna \"J\""}"#;
        let code = StoredRow::Code {
            code_hash: "h\u{7f}\n",
            client_id: "app",
            redirect_uri: "https://app.example/cb?a=1&b=ä",
            scope: "openid profile",
            nonce: None,
            code_challenge: Some("c/ha+llenge"),
            identity,
            auth_time: -1,
            expires_at: i64::MAX,
            grant_id: Some("g"),
        };
        assert_eq!(
            code.mac_input(),
            serde_json::json!([
                "code",
                "h\u{7f}\n",
                "app",
                "https://app.example/cb?a=1&b=ä",
                "openid profile",
                None::<&str>,
                Some("c/ha+llenge"),
                identity,
                -1,
                i64::MAX,
                Some("g")
            ])
            .to_string()
            .into_bytes()
        );
        let session = StoredRow::Session {
            id_hash: "s",
            identity,
            auth_time: 1,
            expires_at: 2,
        };
        assert_eq!(
            session.mac_input(),
            serde_json::json!(["session", "s", identity, 1, 2])
                .to_string()
                .into_bytes()
        );
        assert_eq!(
            refresh(identity, "f").mac_input(),
            serde_json::json!(["refresh token", "th", "f", "app", "openid", identity, 1, 2])
                .to_string()
                .into_bytes()
        );
    }

    #[test]
    fn the_key_is_not_the_signing_key_rows_key() {
        let kek = KeyEncryptionKey::from_bytes([1; 32]);
        let rows = kek.derive_mac_key(MacPurpose::SigningKeyRows).expect("key");
        let row = refresh("{}", "f");
        let other = encode_hex(hmac::sign(&rows, &row.mac_input()).as_ref());
        assert!(!key(1).authenticates(&row, Some(&other)));
    }
}
