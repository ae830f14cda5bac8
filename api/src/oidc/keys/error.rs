//! What can go wrong with the signing keys, and why a token is refused.

use std::path::PathBuf;

use super::state::KeyState;
use crate::oidc::algorithm::SigningAlgorithm;

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
    /// The token presented to [`SigningKeys::verify`](super::SigningKeys::verify) is not
    /// acceptable: answer the client `invalid_token`, never a server error.
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
pub(super) fn quoted(s: &str) -> String {
    s.chars().take(80).collect()
}
