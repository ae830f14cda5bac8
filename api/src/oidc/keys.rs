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
//! [`KEY_RELOAD_INTERVAL`]; the retirement grace covers a replica that signs with a key that
//! was retired a moment ago.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use aws_lc_rs::digest::{self, SHA256};
use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _,
    RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256, RsaKeyPair, RsaPublicKeyComponents,
    UnparsedPublicKey,
};
use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

pub use super::algorithm::SigningAlgorithm;
use crate::config::ServerConfig;
use crate::db::Database;
use crate::lifetimes::{KEY_RELOAD_INTERVAL, MAX_TOKEN_LIFETIME, VERIFY_LEEWAY};

/// RS256 modulus size. 2048 bits is what every relying party accepts and is rated adequate
/// until 2030; raising it later only affects keys created after the change.
const RSA_KEY_SIZE: KeySize = KeySize::Rsa2048;

/// First byte of a sealed private key; a new format gets a new number.
const SEALED_VERSION: u8 = 1;
const AES_GCM_TAG_LEN: usize = 16;

/// Tokens longer than this are refused before any parsing (ours are well under 4 KiB).
const MAX_TOKEN_LEN: usize = 16 * 1024;

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

// ---------------------------------------------------------------------------------------------
// Key-encryption key
// ---------------------------------------------------------------------------------------------

/// Base64 decoders that accept padded and unpadded text alike.
const BASE64_STANDARD_ANY: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const BASE64_URL_ANY: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The 256-bit AES key that seals the signing keys' private halves in the database.
///
/// It lives outside the database — in a file (a Kubernetes Secret mounted read-only), an
/// environment variable, or for `novads dev` a generated file in the data directory — so that
/// a database backup alone cannot sign tokens.
///
/// Accepted encodings, in a file or a variable:
/// - a file of exactly 32 bytes: the raw key;
/// - otherwise text, surrounding whitespace ignored: 64 hex digits, or base64 (standard or
///   URL-safe alphabet, padding optional) of 32 bytes. `openssl rand -base64 32` makes one.
///
/// Files created by [`KeyEncryptionKey::load_or_create_file`] hold padded standard base64 and
/// a newline.
pub struct KeyEncryptionKey {
    bytes: Zeroizing<[u8; 32]>,
}

impl KeyEncryptionKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self {
            bytes: Zeroizing::new(bytes),
        }
    }

    /// A fresh random key.
    pub fn generate() -> Result<Self, KeyError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        SystemRandom::new()
            .fill(&mut bytes[..])
            .map_err(|_| KeyError::Crypto("generating a key-encryption key"))?;
        Ok(Self { bytes })
    }

    /// Decodes a key in one of the accepted encodings; `origin` names it in the error.
    pub fn parse(input: &[u8], origin: &str) -> Result<Self, KeyError> {
        let bad = || KeyError::KekFormat {
            origin: origin.to_owned(),
        };
        if let Ok(raw) = <[u8; 32]>::try_from(input) {
            return Ok(Self::from_bytes(raw));
        }
        let text = std::str::from_utf8(input).map_err(|_| bad())?.trim();
        let decoded: Zeroizing<Vec<u8>> = if text.len() == 64 {
            Zeroizing::new(decode_hex(text).ok_or_else(bad)?)
        } else {
            Zeroizing::new(
                BASE64_STANDARD_ANY
                    .decode(text)
                    .or_else(|_| BASE64_URL_ANY.decode(text))
                    .map_err(|_| bad())?,
            )
        };
        let mut bytes = Zeroizing::new([0u8; 32]);
        if decoded.len() != bytes.len() {
            return Err(bad());
        }
        bytes.copy_from_slice(&decoded);
        Ok(Self { bytes })
    }

    /// Reads a key from a file.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let contents = Zeroizing::new(std::fs::read(path).map_err(|source| KeyError::KekRead {
            path: path.to_owned(),
            source,
        })?);
        Self::parse(&contents, &path.display().to_string())
    }

    /// Reads a key from an environment variable (text encodings only).
    pub fn from_env(var: &str) -> Result<Self, KeyError> {
        let value = Zeroizing::new(std::env::var(var).map_err(|_| KeyError::KekEnvMissing {
            var: var.to_owned(),
        })?);
        Self::parse(
            value.trim().as_bytes(),
            &format!("environment variable {var}"),
        )
    }

    /// The key the server configuration names: a file, or an environment variable
    /// (`NOVADS_KEY_ENCRYPTION_KEY` unless another is named).
    pub fn configured(server: &ServerConfig) -> Result<Self, KeyError> {
        match (
            &server.key_encryption_key_file,
            &server.key_encryption_key_env,
        ) {
            (Some(path), _) => Self::from_file(path),
            (None, Some(var)) => Self::from_env(var),
            (None, None) => Self::from_env("NOVADS_KEY_ENCRYPTION_KEY"),
        }
    }

    /// Reads the key at `path`, or creates it there (mode 0600) when the file does not exist —
    /// for `novads dev`, which keeps it in its data directory. Two processes racing to create
    /// it end up with the same key: the file appears atomically, complete, or not at all.
    pub fn load_or_create_file(path: &Path) -> Result<Self, KeyError> {
        match std::fs::symlink_metadata(path) {
            Ok(_) => {
                warn_if_readable_by_others(path);
                return Self::from_file(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(KeyError::KekRead {
                    path: path.to_owned(),
                    source,
                });
            }
        }
        let key = Self::generate()?;
        let create_err = |source| KeyError::KekCreate {
            path: path.to_owned(),
            source,
        };
        // Write a private temporary file completely, then link it into place: linking fails
        // when the name exists, so a concurrent creator's key is never overwritten.
        let mut suffix = [0u8; 8];
        SystemRandom::new()
            .fill(&mut suffix)
            .map_err(|_| KeyError::Crypto("naming a temporary file"))?;
        let mut tmp_name = path.as_os_str().to_owned();
        tmp_name.push(format!(".tmp-{}", encode_hex(&suffix)));
        let tmp = PathBuf::from(tmp_name);
        let written = write_private_file(&tmp, key.to_base64_line().as_bytes())
            .and_then(|()| std::fs::hard_link(&tmp, path));
        // Best effort: the temporary name must not linger, whatever happened.
        let _ = std::fs::remove_file(&tmp);
        match written {
            Ok(()) => {
                tracing::info!(path = %path.display(), kek_id = %key.id(), "created a key-encryption key");
                Ok(key)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::from_file(path),
            Err(e) => Err(create_err(e)),
        }
    }

    /// A short public fingerprint of the key (16 hex digits), recorded beside every private key
    /// it seals so that a mismatch can be named. It reveals nothing usable about the key.
    pub fn id(&self) -> String {
        let mut ctx = digest::Context::new(&SHA256);
        ctx.update(b"novads key-encryption key id\0");
        ctx.update(&self.bytes[..]);
        encode_hex(&ctx.finish().as_ref()[..8])
    }

    fn to_base64_line(&self) -> Zeroizing<String> {
        let mut line =
            Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&self.bytes[..]));
        line.push('\n');
        line
    }

    fn aead(&self) -> Result<RandomizedNonceKey, KeyError> {
        RandomizedNonceKey::new(&AES_256_GCM, &self.bytes[..])
            .map_err(|_| KeyError::Crypto("setting up AES-256-GCM"))
    }

    /// Seals a private key; `kid` is authenticated with it.
    fn seal(&self, kid: &str, plaintext: &[u8]) -> Result<Vec<u8>, KeyError> {
        let mut in_out = plaintext.to_vec();
        let nonce = self
            .aead()?
            .seal_in_place_append_tag(Aad::from(kid.as_bytes()), &mut in_out)
            .map_err(|_| KeyError::Crypto("encrypting a private key"))?;
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + in_out.len());
        sealed.push(SEALED_VERSION);
        sealed.extend_from_slice(nonce.as_ref());
        sealed.extend_from_slice(&in_out);
        Ok(sealed)
    }

    /// Opens what [`Self::seal`] sealed for the same `kid`.
    fn open(&self, kid: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let corrupt = |reason: &str| KeyError::CorruptKey {
            kid: kid.to_owned(),
            reason: reason.to_owned(),
        };
        let Some((&version, rest)) = sealed.split_first() else {
            return Err(corrupt("the encrypted private key is empty"));
        };
        if version != SEALED_VERSION {
            return Err(corrupt(
                "the encrypted private key has an unknown format version",
            ));
        }
        if rest.len() < NONCE_LEN + AES_GCM_TAG_LEN {
            return Err(corrupt("the encrypted private key is truncated"));
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| corrupt("the encrypted private key has a bad nonce"))?;
        let mut buf = Zeroizing::new(ciphertext.to_vec());
        let len = self
            .aead()?
            .open_in_place(nonce, Aad::from(kid.as_bytes()), &mut buf)
            .map_err(|_| KeyError::Decrypt {
                kid: kid.to_owned(),
                kek_id: self.id(),
            })?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

impl fmt::Debug for KeyEncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyEncryptionKey")
            .field("id", &self.id())
            .finish_non_exhaustive()
    }
}

fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// A key file others can read defeats the point of keeping it out of the database.
fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", meta.permissions().mode() & 0o777),
                "the key-encryption key file is accessible to other users; chmod 600 it"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Key material
// ---------------------------------------------------------------------------------------------

/// The public half of a signing key, as published.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PublicKey {
    /// P-256 point coordinates, 32 bytes each.
    Ec { x: Vec<u8>, y: Vec<u8> },
    /// RSA modulus and exponent, big-endian without leading zeros.
    Rsa { n: Vec<u8>, e: Vec<u8> },
}

impl PublicKey {
    fn algorithm(&self) -> SigningAlgorithm {
        match self {
            Self::Ec { .. } => SigningAlgorithm::Es256,
            Self::Rsa { .. } => SigningAlgorithm::Rs256,
        }
    }

    fn from_ec_point(point: &[u8]) -> Option<Self> {
        // SEC 1 uncompressed: 0x04 || x || y.
        match point {
            [0x04, xy @ ..] if xy.len() == 64 => Some(Self::Ec {
                x: xy[..32].to_vec(),
                y: xy[32..].to_vec(),
            }),
            _ => None,
        }
    }

    fn from_rsa(key: &RsaKeyPair) -> Self {
        let components = RsaPublicKeyComponents::<Vec<u8>>::from(key.public_key());
        Self::Rsa {
            n: components.n,
            e: components.e,
        }
    }

    /// The RFC 7638 thumbprint, used as the kid: stable, derived from the key itself, and
    /// checkable by anyone holding the JWK.
    fn thumbprint(&self) -> String {
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        // Required members only, in lexicographic order, no whitespace (RFC 7638 §3.2).
        let canonical = match self {
            Self::Ec { x, y } => format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                b64(x),
                b64(y)
            ),
            Self::Rsa { n, e } => format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, b64(e), b64(n)),
        };
        URL_SAFE_NO_PAD.encode(digest::digest(&SHA256, canonical.as_bytes()))
    }

    /// The RFC 7517 JWK with `kid`, `alg` and `use`.
    fn to_jwk(&self, kid: &str) -> Value {
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        let alg = self.algorithm().as_str();
        match self {
            Self::Ec { x, y } => json!({
                "kty": "EC", "crv": "P-256", "x": b64(x), "y": b64(y),
                "kid": kid, "alg": alg, "use": "sig",
            }),
            Self::Rsa { n, e } => json!({
                "kty": "RSA", "n": b64(n), "e": b64(e),
                "kid": kid, "alg": alg, "use": "sig",
            }),
        }
    }

    /// Reads back what [`Self::to_jwk`] wrote.
    fn from_jwk(jwk: &Value) -> Option<Self> {
        let member = |name: &str| {
            jwk.get(name)
                .and_then(Value::as_str)
                .and_then(|s| URL_SAFE_NO_PAD.decode(s).ok())
        };
        match jwk.get("kty").and_then(Value::as_str)? {
            "EC" if jwk.get("crv").and_then(Value::as_str) == Some("P-256") => {
                let (x, y) = (member("x")?, member("y")?);
                (x.len() == 32 && y.len() == 32).then_some(Self::Ec { x, y })
            }
            "RSA" => Some(Self::Rsa {
                n: member("n")?,
                e: member("e")?,
            }),
            _ => None,
        }
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            Self::Ec { x, y } => {
                let mut point = Vec::with_capacity(65);
                point.push(0x04);
                point.extend_from_slice(x);
                point.extend_from_slice(y);
                UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, signature)
                    .is_ok()
            }
            Self::Rsa { n, e } => RsaPublicKeyComponents { n, e }
                .verify(&RSA_PKCS1_2048_8192_SHA256, message, signature)
                .is_ok(),
        }
    }
}

/// A private key that signs.
enum Signer {
    Ecdsa(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

impl Signer {
    fn generate(algorithm: SigningAlgorithm) -> Result<Self, KeyError> {
        let failed = |_| KeyError::Crypto("generating a signing key");
        Ok(match algorithm {
            SigningAlgorithm::Es256 => Self::Ecdsa(
                EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(failed)?,
            ),
            SigningAlgorithm::Rs256 => {
                Self::Rsa(RsaKeyPair::generate(RSA_KEY_SIZE).map_err(failed)?)
            }
        })
    }

    fn from_pkcs8(algorithm: SigningAlgorithm, pkcs8: &[u8]) -> Result<Self, String> {
        match algorithm {
            SigningAlgorithm::Es256 => {
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8).map(Self::Ecdsa)
            }
            SigningAlgorithm::Rs256 => RsaKeyPair::from_pkcs8(pkcs8).map(Self::Rsa),
        }
        .map_err(|e| format!("the private key is not a valid {algorithm} PKCS#8 key ({e})"))
    }

    fn pkcs8(&self) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let failed = |_| KeyError::Crypto("encoding a private key");
        Ok(Zeroizing::new(match self {
            Self::Ecdsa(key) => key.to_pkcs8v1().map_err(failed)?.as_ref().to_vec(),
            Self::Rsa(key) => AsDer::<Pkcs8V1Der>::as_der(key)
                .map_err(failed)?
                .as_ref()
                .to_vec(),
        }))
    }

    fn public_key(&self) -> Option<PublicKey> {
        match self {
            Self::Ecdsa(key) => PublicKey::from_ec_point(key.public_key().as_ref()),
            Self::Rsa(key) => Some(PublicKey::from_rsa(key)),
        }
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let rng = SystemRandom::new();
        let failed = |_| KeyError::Crypto("signing a token");
        match self {
            // FIXED: the JWS encoding is R || S, not ASN.1 (RFC 7518 §3.4).
            Self::Ecdsa(key) => Ok(key.sign(&rng, message).map_err(failed)?.as_ref().to_vec()),
            Self::Rsa(key) => {
                let mut signature = vec![0; key.public_modulus_len()];
                key.sign(&RSA_PKCS1_SHA256, &rng, message, &mut signature)
                    .map_err(failed)?;
                Ok(signature)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Storage
// ---------------------------------------------------------------------------------------------

/// A row of `oidc_signing_keys`.
#[derive(Debug, Clone)]
struct KeyRow {
    kid: String,
    algorithm: String,
    state: String,
    created_at: String,
    not_after: Option<String>,
    kek_id: String,
    private_key: Vec<u8>,
    public_jwk: String,
}

type RowTuple = (
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    Vec<u8>,
    String,
);

impl From<RowTuple> for KeyRow {
    fn from(
        (kid, algorithm, state, created_at, not_after, kek_id, private_key, public_jwk): RowTuple,
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
        }
    }
}

impl KeyRow {
    fn corrupt(&self, reason: impl Into<String>) -> KeyError {
        KeyError::CorruptKey {
            kid: self.kid.clone(),
            reason: reason.into(),
        }
    }

    fn algorithm(&self) -> Result<SigningAlgorithm, KeyError> {
        SigningAlgorithm::from_jose(&self.algorithm)
            .ok_or_else(|| self.corrupt(format!("unknown algorithm {:?}", self.algorithm)))
    }

    fn state(&self) -> Result<KeyState, KeyError> {
        KeyState::parse(&self.state)
            .ok_or_else(|| self.corrupt(format!("unknown state {:?}", self.state)))
    }

    fn check_kek(&self, kek: &KeyEncryptionKey) -> Result<(), KeyError> {
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
struct NewKey {
    kid: String,
    algorithm: SigningAlgorithm,
    kek_id: String,
    private_key: Vec<u8>,
    public_jwk: String,
}

impl NewKey {
    fn generate(algorithm: SigningAlgorithm, kek: &KeyEncryptionKey) -> Result<Self, KeyError> {
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

/// One step of a rotation, applied inside its transaction.
enum Change {
    Retire {
        kid: String,
        at: String,
        not_after: String,
    },
    Activate {
        kid: String,
        at: String,
    },
    InsertNext(NewKey),
}

/// Fixed-width UTC text, so that times compare correctly as strings in SQL.
fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_time(row: &KeyRow, text: &str) -> Result<DateTime<Utc>, KeyError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| row.corrupt(format!("bad timestamp {text:?}")))
}

fn chrono_duration(d: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX)
}

/// The same SQL for both backends (sqlx binds `$N` on SQLite too); this macro instantiates the
/// queries for each backend's connection type, because the two pools are different types.
macro_rules! key_store {
    ($module:ident, $conn:ty) => {
        mod $module {
            use super::{Change, KeyRow, KeyState, NewKey, RowTuple};

            pub(super) async fn fetch(conn: &mut $conn) -> Result<Vec<KeyRow>, sqlx::Error> {
                let rows: Vec<RowTuple> = sqlx::query_as(
                    "SELECT kid, algorithm, state, created_at, not_after, kek_id, private_key, \
                     public_jwk FROM oidc_signing_keys ORDER BY created_at, kid",
                )
                .fetch_all(&mut *conn)
                .await?;
                Ok(rows.into_iter().map(KeyRow::from).collect())
            }

            /// Inserts unless the algorithm already has a key in that state (the partial unique
            /// indexes); returns whether the row went in.
            pub(super) async fn insert(
                conn: &mut $conn,
                key: &NewKey,
                state: KeyState,
                now: &str,
            ) -> Result<bool, sqlx::Error> {
                let activated_at = (state == KeyState::Active).then_some(now);
                let done = sqlx::query(
                    "INSERT INTO oidc_signing_keys (kid, algorithm, state, created_at, \
                     activated_at, kek_id, private_key, public_jwk) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                )
                .bind(&key.kid)
                .bind(key.algorithm.as_str())
                .bind(state.as_str())
                .bind(now)
                .bind(activated_at)
                .bind(&key.kek_id)
                .bind(&key.private_key)
                .bind(&key.public_jwk)
                .execute(&mut *conn)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            pub(super) async fn apply(
                conn: &mut $conn,
                change: &Change,
                now: &str,
            ) -> Result<(), sqlx::Error> {
                match change {
                    Change::Retire { kid, at, not_after } => {
                        sqlx::query(
                            "UPDATE oidc_signing_keys SET state = 'retired', retired_at = $2, \
                             not_after = $3 WHERE kid = $1 AND state = 'active'",
                        )
                        .bind(kid)
                        .bind(at)
                        .bind(not_after)
                        .execute(&mut *conn)
                        .await?;
                    }
                    Change::Activate { kid, at } => {
                        sqlx::query(
                            "UPDATE oidc_signing_keys SET state = 'active', activated_at = $2 \
                             WHERE kid = $1 AND state = 'next'",
                        )
                        .bind(kid)
                        .bind(at)
                        .execute(&mut *conn)
                        .await?;
                    }
                    Change::InsertNext(key) => {
                        insert(conn, key, KeyState::Next, now).await?;
                    }
                }
                Ok(())
            }

            /// Deletes retired keys that are no longer published; returns their kids.
            pub(super) async fn delete_expired(
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
        }
    };
}

key_store!(sqlite_store, sqlx::SqliteConnection);
key_store!(postgres_store, sqlx::PgConnection);

async fn fetch_rows(db: &Database) -> Result<Vec<KeyRow>, sqlx::Error> {
    match db {
        Database::Sqlite(pool) => sqlite_store::fetch(&mut *pool.acquire().await?).await,
        Database::Postgres(pool) => postgres_store::fetch(&mut *pool.acquire().await?).await,
    }
}

async fn insert_if_absent(
    db: &Database,
    key: &NewKey,
    state: KeyState,
    now: &str,
) -> Result<bool, sqlx::Error> {
    match db {
        Database::Sqlite(pool) => {
            sqlite_store::insert(&mut *pool.acquire().await?, key, state, now).await
        }
        Database::Postgres(pool) => {
            postgres_store::insert(&mut *pool.acquire().await?, key, state, now).await
        }
    }
}

/// Creates whatever active or next key is missing. Concurrent callers each try to insert;
/// the partial unique indexes let exactly one key per (algorithm, state) in, and the losers'
/// keys are simply dropped.
async fn ensure_keys(db: &Database, kek: &KeyEncryptionKey) -> Result<(), KeyError> {
    let rows = fetch_rows(db).await?;
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
            if insert_if_absent(db, &key, state, &now).await? {
                tracing::info!(kid = %key.kid, %algorithm, %state, "created a signing key");
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Rotation
// ---------------------------------------------------------------------------------------------

/// Timing of rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPolicy {
    /// Longest lifetime of a JWT signed with these keys: a retired key stays published this
    /// long (plus the grace) so that the last token it signed verifies until it expires.
    pub max_token_lifetime: Duration,
    /// Extra publication time for a retired key: covers replicas that have not reloaded since
    /// the rotation and still sign with it, and clock skew.
    pub retirement_grace: Duration,
    /// How long a next key must have been published before a rotation may activate it, so
    /// that relying parties caching the JWKS know it before it signs. A rotation that comes
    /// too early leaves that algorithm alone (see [`RotationReport::postponed`]); set it to
    /// zero to rotate at once, e.g. after a suspected key compromise.
    pub min_next_age: Duration,
}

impl Default for KeyPolicy {
    fn default() -> Self {
        Self {
            max_token_lifetime: MAX_TOKEN_LIFETIME,
            retirement_grace: KEY_RELOAD_INTERVAL * 10,
            min_next_age: Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// What [`SigningKeys::rotate`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RotationReport {
    pub rotated: Vec<Rotated>,
    pub postponed: Vec<Postponed>,
    /// Retired keys past `not_after` that were deleted.
    pub deleted: Vec<String>,
}

/// One algorithm's rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    pub algorithm: SigningAlgorithm,
    /// The formerly active key, now retired and published until `retired_until`.
    pub retired: String,
    pub retired_until: DateTime<Utc>,
    /// The formerly next key, now signing.
    pub activated: String,
    /// The new next key, published from now on.
    pub next: String,
}

/// An algorithm whose next key has not been published for [`KeyPolicy::min_next_age`] yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Postponed {
    pub algorithm: SigningAlgorithm,
    pub next: String,
    /// When a rotation may activate it.
    pub eligible_at: DateTime<Utc>,
}

/// Decides a rotation from the rows as read under the lock. Pure apart from the keys in
/// `fresh`, one newly generated next key per algorithm, taken when used.
fn plan_rotation(
    rows: &[KeyRow],
    now: DateTime<Utc>,
    policy: &KeyPolicy,
    kek: &KeyEncryptionKey,
    fresh: &mut BTreeMap<SigningAlgorithm, NewKey>,
) -> Result<(Vec<Change>, RotationReport), KeyError> {
    let mut changes = Vec::new();
    let mut report = RotationReport::default();
    let at = format_time(now);
    for algorithm in SigningAlgorithm::ALL {
        let mut active = None;
        let mut next = None;
        for row in rows {
            if row.algorithm()? != algorithm {
                continue;
            }
            match row.state()? {
                KeyState::Active => active = Some(row),
                KeyState::Next => next = Some(row),
                KeyState::Retired => {}
            }
        }
        let active = active.ok_or(KeyError::MissingKey {
            algorithm,
            state: KeyState::Active,
        })?;
        let next = next.ok_or(KeyError::MissingKey {
            algorithm,
            state: KeyState::Next,
        })?;
        active.check_kek(kek)?;
        next.check_kek(kek)?;
        let eligible_at =
            parse_time(next, &next.created_at)? + chrono_duration(policy.min_next_age);
        if eligible_at > now {
            report.postponed.push(Postponed {
                algorithm,
                next: next.kid.clone(),
                eligible_at,
            });
            continue;
        }
        let new_next = fresh
            .remove(&algorithm)
            .ok_or(KeyError::Crypto("preparing the new next key"))?;
        let retired_until = now
            + chrono_duration(policy.max_token_lifetime)
            + chrono_duration(policy.retirement_grace);
        report.rotated.push(Rotated {
            algorithm,
            retired: active.kid.clone(),
            retired_until,
            activated: next.kid.clone(),
            next: new_next.kid.clone(),
        });
        // Order matters for the unique indexes: retire, then activate, then add the next key.
        changes.push(Change::Retire {
            kid: active.kid.clone(),
            at: at.clone(),
            not_after: format_time(retired_until),
        });
        changes.push(Change::Activate {
            kid: next.kid.clone(),
            at: at.clone(),
        });
        changes.push(Change::InsertNext(new_next));
    }
    Ok((changes, report))
}

// ---------------------------------------------------------------------------------------------
// The loaded keys
// ---------------------------------------------------------------------------------------------

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

/// What [`SigningKeys::verify`] checks besides the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectations {
    /// Required `iss`.
    pub issuer: String,
    /// When set, `aud` (a string or an array) must contain it.
    pub audience: Option<String>,
    /// When set, the header's `typ` must be this media type (compared as RFC 7515 §4.1.9 says:
    /// case-insensitively, `application/` optional). Defaults to `JWT`, so that an access
    /// token (`at+jwt`) is never accepted where an ID token is expected, and vice versa.
    pub token_type: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
}

impl Expectations {
    pub fn new(issuer: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: None,
            token_type: Some("JWT".to_owned()),
            leeway: VERIFY_LEEWAY,
        }
    }

    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Requires this `typ` header, e.g. `at+jwt` for RFC 9068 access tokens.
    pub fn token_type(mut self, token_type: impl Into<String>) -> Self {
        self.token_type = Some(token_type.into());
        self
    }

    /// Accepts any `typ` header (or none).
    pub fn any_token_type(mut self) -> Self {
        self.token_type = None;
        self
    }

    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }
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
        match db {
            Database::Sqlite(pool) => {
                // IMMEDIATE takes the write lock before reading, so rotations do not interleave.
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                // The clock is read under the lock: a rotation that waited for another must
                // not date its retirement before that one.
                let now = Utc::now();
                let now_text = format_time(now);
                let rows = sqlite_store::fetch(&mut tx).await?;
                (changes, report) = plan_rotation(&rows, now, policy, kek, &mut fresh)?;
                for change in &changes {
                    sqlite_store::apply(&mut tx, change, &now_text).await?;
                }
                report.deleted = sqlite_store::delete_expired(&mut tx, &now_text).await?;
                tx.commit().await?;
            }
            Database::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                // Blocks other rotations and key creation (not readers) until commit, so the
                // rows read next are the ones the changes apply to.
                sqlx::query("LOCK TABLE oidc_signing_keys IN SHARE ROW EXCLUSIVE MODE")
                    .execute(&mut *tx)
                    .await?;
                let now = Utc::now();
                let now_text = format_time(now);
                let rows = postgres_store::fetch(&mut tx).await?;
                (changes, report) = plan_rotation(&rows, now, policy, kek, &mut fresh)?;
                for change in &changes {
                    postgres_store::apply(&mut tx, change, &now_text).await?;
                }
                report.deleted = postgres_store::delete_expired(&mut tx, &now_text).await?;
                tx.commit().await?;
            }
        }
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

/// Compares media types as RFC 7515 §4.1.9 asks.
fn same_media_type(a: &str, b: &str) -> bool {
    fn normal(s: &str) -> String {
        let lower = s.to_ascii_lowercase();
        match lower.strip_prefix("application/") {
            Some(rest) => rest.to_owned(),
            None => lower,
        }
    }
    normal(a) == normal(b)
}

fn numeric_date(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<i64>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(value) => value
            .as_i64()
            // NumericDate may be fractional; whole seconds are precise enough here.
            .or_else(|| value.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .map(Some)
            .ok_or(TokenError::MissingClaim(name)),
    }
}

/// The whole check of [`SigningKeys::verify`] at a given time; returns the claims.
fn verify_at(
    snapshot: &Snapshot,
    token: &str,
    expected: &Expectations,
    now: DateTime<Utc>,
) -> Result<Value, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed("too long"));
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("not three dot-separated parts"));
    };
    let decode = |part: &str, what: &'static str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| TokenError::Malformed(what))
    };
    let header: Map<String, Value> =
        serde_json::from_slice(&decode(header_b64, "header is not base64url")?)
            .map_err(|_| TokenError::Malformed("header is not a JSON object"))?;

    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(TokenError::Malformed("header has no alg"))?;
    let algorithm = SigningAlgorithm::from_jose(alg)
        .ok_or_else(|| TokenError::UnsupportedAlgorithm(quoted(alg)))?;
    if header.contains_key("crit") {
        return Err(TokenError::CriticalHeader);
    }
    if let Some(expected_type) = &expected.token_type {
        let found = header.get("typ").and_then(Value::as_str);
        if !found.is_some_and(|typ| same_media_type(typ, expected_type)) {
            return Err(TokenError::WrongType {
                expected: expected_type.clone(),
                found: found.map(quoted),
            });
        }
    }
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .ok_or(TokenError::MissingKeyId)?;
    let key = snapshot
        .keys
        .iter()
        .find(|key| key.kid == kid && key.is_published_at(now))
        .ok_or_else(|| TokenError::UnknownKey(quoted(kid)))?;
    if key.public.algorithm() != algorithm {
        return Err(TokenError::AlgorithmMismatch {
            kid: key.kid.clone(),
            token: algorithm,
            key: key.public.algorithm(),
        });
    }
    let signature = decode(signature_b64, "signature is not base64url")?;
    // The JWS signing input: the header and payload exactly as received.
    let signing_input = format!("{header_b64}.{payload_b64}");
    if !key.public.verify(signing_input.as_bytes(), &signature) {
        return Err(TokenError::BadSignature);
    }

    let payload = decode(payload_b64, "payload is not base64url")?;
    let claims: Map<String, Value> = serde_json::from_slice(&payload)
        .map_err(|_| TokenError::Malformed("payload is not a JSON object"))?;
    let iss = claims
        .get("iss")
        .and_then(Value::as_str)
        .ok_or(TokenError::MissingClaim("iss"))?;
    if iss != expected.issuer {
        return Err(TokenError::WrongIssuer(quoted(iss)));
    }
    if let Some(audience) = &expected.audience {
        let matches = match claims.get("aud") {
            Some(Value::String(aud)) => aud == audience,
            Some(Value::Array(auds)) => auds.iter().any(|aud| aud.as_str() == Some(audience)),
            _ => false,
        };
        if !matches {
            return Err(TokenError::WrongAudience(quoted(audience)));
        }
    }
    let leeway = i64::try_from(expected.leeway.as_secs()).unwrap_or(i64::MAX);
    let now = now.timestamp();
    let exp = numeric_date(&claims, "exp")?.ok_or(TokenError::MissingClaim("exp"))?;
    if now >= exp.saturating_add(leeway) {
        return Err(TokenError::Expired);
    }
    if let Some(nbf) = numeric_date(&claims, "nbf")?
        && now.saturating_add(leeway) < nbf
    {
        return Err(TokenError::NotYetValid);
    }
    Ok(Value::Object(claims))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kek(byte: u8) -> KeyEncryptionKey {
        KeyEncryptionKey::from_bytes([byte; 32])
    }

    #[test]
    fn kek_accepts_raw_hex_and_base64() {
        let raw: [u8; 32] = std::array::from_fn(|i| i as u8 * 7);
        let id = KeyEncryptionKey::from_bytes(raw).id();
        let hex = encode_hex(&raw);
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        let b64url = URL_SAFE_NO_PAD.encode(raw);
        for input in [
            raw.to_vec(),
            hex.clone().into_bytes(),
            format!("  {}\n", hex.to_uppercase()).into_bytes(),
            format!("{b64}\n").into_bytes(),
            b64.trim_end_matches('=').as_bytes().to_vec(),
            b64url.into_bytes(),
        ] {
            let parsed = KeyEncryptionKey::parse(&input, "test").expect("parses");
            assert_eq!(parsed.id(), id, "{:?}", String::from_utf8_lossy(&input));
        }
    }

    #[test]
    fn kek_refuses_wrong_lengths_with_a_clear_message() {
        for input in [
            &b""[..],
            b"short",
            &[0u8; 31],
            &[0u8; 33],
            b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeg",
            // base64 of 16 bytes
            b"AAAAAAAAAAAAAAAAAAAAAA==",
        ] {
            let err = KeyEncryptionKey::parse(input, "file /etc/kek").expect_err("refused");
            let text = err.to_string();
            assert!(text.contains("file /etc/kek"), "{text}");
            assert!(text.contains("32 raw bytes"), "{text}");
        }
    }

    #[test]
    fn kek_debug_does_not_show_the_key() {
        let key = kek(0xAB);
        let shown = format!("{key:?}");
        assert_eq!(
            shown,
            format!("KeyEncryptionKey {{ id: {:?}, .. }}", key.id())
        );
    }

    #[test]
    fn kek_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kek");
        let first = KeyEncryptionKey::load_or_create_file(&path).expect("created");
        let second = KeyEncryptionKey::load_or_create_file(&path).expect("reused");
        assert_eq!(first.id(), second.id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).expect("dir").collect();
        assert_eq!(leftovers.len(), 1, "temporary file left behind");
    }

    #[test]
    fn sealing_binds_the_kid_and_the_key() {
        let sealed = kek(1).seal("kid-a", b"secret pkcs8").expect("sealed");
        assert_eq!(sealed[0], SEALED_VERSION);
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(
            &kek(1).open("kid-a", &sealed).expect("opens")[..],
            b"secret pkcs8"
        );
        assert!(matches!(
            kek(2).open("kid-a", &sealed),
            Err(KeyError::Decrypt { .. })
        ));
        assert!(matches!(
            kek(1).open("kid-b", &sealed),
            Err(KeyError::Decrypt { .. })
        ));
        let mut tampered = sealed.clone();
        *tampered.last_mut().expect("non-empty") ^= 1;
        assert!(matches!(
            kek(1).open("kid-a", &tampered),
            Err(KeyError::Decrypt { .. })
        ));
        assert!(matches!(
            kek(1).open("kid-a", &sealed[..10]),
            Err(KeyError::CorruptKey { .. })
        ));
    }

    #[test]
    fn thumbprint_matches_rfc_7638_example() {
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSo\
                 c_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGj\
                 QR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-\
                 bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let key = PublicKey::Rsa {
            n: URL_SAFE_NO_PAD.decode(n).expect("n"),
            e: URL_SAFE_NO_PAD.decode("AQAB").expect("e"),
        };
        assert_eq!(
            key.thumbprint(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn jwk_round_trips_and_verifies() {
        for algorithm in SigningAlgorithm::ALL {
            let signer = Signer::generate(algorithm).expect("key");
            let public = signer.public_key().expect("public");
            let jwk = public.to_jwk("k");
            assert_eq!(PublicKey::from_jwk(&jwk).as_ref(), Some(&public));
            let signature = signer.sign(b"message").expect("signed");
            assert!(public.verify(b"message", &signature));
            assert!(!public.verify(b"messagE", &signature));
            let pkcs8 = signer.pkcs8().expect("pkcs8");
            let again = Signer::from_pkcs8(algorithm, &pkcs8).expect("parses");
            assert_eq!(again.public_key(), Some(public));
        }
    }

    fn snapshot_with(algorithm: SigningAlgorithm) -> (Snapshot, String) {
        let signer = Signer::generate(algorithm).expect("key");
        let public = signer.public_key().expect("public");
        let kid = public.thumbprint();
        let mut snapshot = Snapshot::default();
        snapshot.keys.push(Published {
            kid: kid.clone(),
            state: KeyState::Active,
            not_after: None,
            public,
        });
        snapshot.signers.insert(algorithm, (kid.clone(), signer));
        (snapshot, kid)
    }

    #[test]
    fn time_claims_are_checked_with_leeway() {
        let (snapshot, _) = snapshot_with(SigningAlgorithm::Es256);
        let keys = SigningKeys {
            snapshot: Arc::new(RwLock::new(Arc::new(snapshot))),
        };
        let now = Utc::now();
        let t = now.timestamp();
        let expected = Expectations::new("https://iss");
        let check = |claims: Value| {
            let token = keys.sign(SigningAlgorithm::Es256, &claims).expect("signed");
            verify_at(&keys.current(), &token, &expected, now)
        };
        assert!(check(json!({"iss": "https://iss", "exp": t + 60})).is_ok());
        assert!(
            check(json!({"iss": "https://iss", "exp": t - 10})).is_ok(),
            "within leeway"
        );
        assert_eq!(
            check(json!({"iss": "https://iss", "exp": t - 31})),
            Err(TokenError::Expired)
        );
        assert_eq!(
            check(json!({"iss": "https://iss"})),
            Err(TokenError::MissingClaim("exp"))
        );
        assert_eq!(
            check(json!({"iss": "https://iss", "exp": "soon"})),
            Err(TokenError::MissingClaim("exp"))
        );
        assert_eq!(
            check(json!({"iss": "https://iss", "exp": t + 600, "nbf": t + 120})),
            Err(TokenError::NotYetValid)
        );
        assert!(check(json!({"iss": "https://iss", "exp": t + 600, "nbf": t + 20})).is_ok());
    }

    #[test]
    fn retired_keys_stop_verifying_at_not_after() {
        let (mut snapshot, kid) = snapshot_with(SigningAlgorithm::Rs256);
        let until = Utc::now() + chrono::TimeDelta::seconds(100);
        snapshot.keys[0].state = KeyState::Retired;
        snapshot.keys[0].not_after = Some(until);
        let keys = SigningKeys {
            snapshot: Arc::new(RwLock::new(Arc::new(snapshot))),
        };
        let t = Utc::now().timestamp();
        let token = keys
            .sign(
                SigningAlgorithm::Rs256,
                &json!({"iss": "i", "exp": t + 3600}),
            )
            .expect("signed");
        let expected = Expectations::new("i");
        assert!(
            verify_at(
                &keys.current(),
                &token,
                &expected,
                until - chrono::TimeDelta::seconds(1)
            )
            .is_ok()
        );
        assert_eq!(
            verify_at(&keys.current(), &token, &expected, until),
            Err(TokenError::UnknownKey(kid))
        );
    }

    #[test]
    fn media_types_compare_as_rfc_7515_says() {
        assert!(same_media_type("JWT", "jwt"));
        assert!(same_media_type("application/at+jwt", "at+JWT"));
        assert!(!same_media_type("at+jwt", "JWT"));
    }

    #[test]
    fn sign_refuses_non_object_claims() {
        let (snapshot, _) = snapshot_with(SigningAlgorithm::Es256);
        let keys = SigningKeys {
            snapshot: Arc::new(RwLock::new(Arc::new(snapshot))),
        };
        assert!(matches!(
            keys.sign(SigningAlgorithm::Es256, &"just a string"),
            Err(KeyError::Claims(_))
        ));
        assert!(matches!(
            keys.sign(SigningAlgorithm::Rs256, &json!({})),
            Err(KeyError::NoActiveKey {
                algorithm: SigningAlgorithm::Rs256
            })
        ));
    }
}
