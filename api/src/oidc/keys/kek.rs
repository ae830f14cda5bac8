//! The key-encryption key: the AES-256 key outside the database that seals the signing
//! keys' private halves, read from a file or variable or created owner-only for `novads dev`.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use aws_lc_rs::digest::{self, SHA256};
use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use aws_lc_rs::{hkdf, hmac};
use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use zeroize::Zeroizing;

use super::error::KeyError;
use crate::config::ServerConfig;

/// First byte of a sealed private key; a new format gets a new number.
pub(super) const SEALED_VERSION: u8 = 1;
const AES_GCM_TAG_LEN: usize = 16;

/// Base64 decoders that accept padded and unpadded text alike.
pub(super) const BASE64_STANDARD_ANY: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
pub(super) const BASE64_URL_ANY: GeneralPurpose = GeneralPurpose::new(
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
    pub(super) bytes: Zeroizing<[u8; 32]>,
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

    /// An HMAC-SHA256 key for one `purpose`, derived with HKDF from this key. Keys for
    /// different purposes are independent, and none of them lets anyone recover this key, so
    /// the database can hold what they authenticate without holding anything that forges it.
    pub fn derive_mac_key(&self, purpose: MacPurpose) -> Result<hmac::Key, KeyError> {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"novads key-encryption key derivation");
        let info = [purpose.label()];
        let prk = salt.extract(&self.bytes[..]);
        let okm = prk
            .expand(&info, hmac::HMAC_SHA256)
            .map_err(|_| KeyError::Crypto("deriving a MAC key"))?;
        Ok(hmac::Key::from(okm))
    }

    /// An AES-256-GCM key (random nonces) for one `purpose`, derived with HKDF from this key
    /// like [`Self::derive_mac_key`] but with a label of its own, so that it is independent of
    /// every MAC key and of this key itself.
    pub fn derive_sealing_key(&self, purpose: SealPurpose) -> Result<RandomizedNonceKey, KeyError> {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"novads key-encryption key derivation");
        let info = [purpose.label()];
        let prk = salt.extract(&self.bytes[..]);
        let mut bytes = Zeroizing::new([0u8; 32]);
        prk.expand(&info, &AES_256_GCM)
            .and_then(|okm| okm.fill(&mut bytes[..]))
            .map_err(|_| KeyError::Crypto("deriving a sealing key"))?;
        RandomizedNonceKey::new(&AES_256_GCM, &bytes[..])
            .map_err(|_| KeyError::Crypto("setting up AES-256-GCM"))
    }

    pub(super) fn to_base64_line(&self) -> Zeroizing<String> {
        let mut line =
            Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&self.bytes[..]));
        line.push('\n');
        line
    }

    pub(super) fn aead(&self) -> Result<RandomizedNonceKey, KeyError> {
        RandomizedNonceKey::new(&AES_256_GCM, &self.bytes[..])
            .map_err(|_| KeyError::Crypto("setting up AES-256-GCM"))
    }

    /// Seals a private key; `kid` is authenticated with it.
    pub(super) fn seal(&self, kid: &str, plaintext: &[u8]) -> Result<Vec<u8>, KeyError> {
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
    pub(super) fn open(&self, kid: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
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

/// What a key derived from the key-encryption key authenticates; each gets its own key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacPurpose {
    /// The audit trail's chain, checkpoints and head records.
    AuditChain,
    /// Rows of `oidc_signing_keys`.
    SigningKeyRows,
    /// Identities stored with codes, sessions and refresh tokens.
    StoredIdentities,
}

impl MacPurpose {
    fn label(self) -> &'static [u8] {
        match self {
            Self::AuditChain => b"novads audit chain v1",
            Self::SigningKeyRows => b"novads signing key rows v1",
            Self::StoredIdentities => b"novads stored identities v1",
        }
    }
}

/// What a sealing key derived from the key-encryption key encrypts; each gets its own key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealPurpose {
    /// Pending authorization requests, carried by the browser through the login form.
    AuthorizationRequests,
}

impl SealPurpose {
    fn label(self) -> &'static [u8] {
        match self {
            Self::AuthorizationRequests => b"novads sealed authorization requests v1",
        }
    }
}

impl fmt::Debug for KeyEncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyEncryptionKey")
            .field("id", &self.id())
            .finish_non_exhaustive()
    }
}

pub(super) fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// A key file others can read defeats the point of keeping it out of the database.
pub(super) fn warn_if_readable_by_others(path: &Path) {
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

/// Lower-case hex. Every stored MAC is written and read through here, on every flow request:
/// no per-byte formatting.
pub(super) fn encode_hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// `None` unless `text` is whole bytes of hex digits.
pub(super) fn decode_hex(text: &str) -> Option<Vec<u8>> {
    hex::decode(text).ok()
}
