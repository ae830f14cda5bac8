//! Pending authorization requests, sealed for the browser instead of stored: `/oidc/authorize`
//! encrypts the checked request (with a random request id and the hash of the login form's
//! CSRF token) under a key derived from the key-encryption key, and the login form carries the
//! sealed value back. Nothing is written before anyone has authenticated; the browser can
//! neither read nor change what the client asked for, and a value sealed by another
//! installation does not open here.
//!
//! A sealed request stays valid until it expires, however often it is opened; single use is
//! the database's part: finishing a sign-in records the request id in `oidc_used_requests` in
//! the same transaction that issues the code (`store/used_requests.rs`).
//!
//! Format (version 1): `r1.` then base64url (unpadded) of `nonce (12 bytes, random) ||
//! ciphertext || tag (16 bytes)`, AES-256-GCM with the prefix as associated data. The
//! plaintext is the request's fields, each as a presence byte, a 16-bit big-endian length and
//! its UTF-8 bytes, after the expiry (unix milliseconds, 64-bit big-endian).

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::aead::{Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::lifetimes::{AUTHORIZATION_REQUEST_LIFETIME, millis};
use crate::oidc::keys::{KeyEncryptionKey, KeyError, SealPurpose};
use crate::oidc::request::ValidRequest;
use crate::oidc::store::{StoreError, hash, random_token};

/// What every sealed request starts with; a new format gets a new prefix.
pub const SEALED_PREFIX: &str = "r1.";
/// The longest sealed request opened. The longest request `validate` accepts (four
/// parameters of `MAX_PARAMETER_CHARS`, a 128-character client id and code challenge) seals
/// to about 11,500 characters; anything longer is refused before it is decoded or decrypted.
pub const MAX_SEALED_CHARS: usize = 12_000;
const TAG_LEN: usize = 16;

/// A checked authorization request waiting for the person to sign in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRequest {
    /// Random, unique per request (43 characters); its hash marks the request used. Empty
    /// for a request answered at once from a session, which is never sealed.
    pub id: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: String,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    /// SHA-256 (hex) of the CSRF token the login form and its cookie carry.
    pub csrf_hash: String,
    pub locale: String,
    /// Unix milliseconds.
    pub expires_at: i64,
}

impl PendingRequest {
    /// A checked request answered at once (single sign-on), never shown as a login page.
    pub fn from_valid(request: &ValidRequest, locale: &str) -> Self {
        Self {
            id: String::new(),
            client_id: request.client_id.clone(),
            redirect_uri: request.redirect_uri.clone(),
            scope: request.scope.clone(),
            state: request.state.clone(),
            nonce: request.nonce.clone(),
            code_challenge: request.code_challenge.clone(),
            csrf_hash: String::new(),
            locale: locale.to_owned(),
            expires_at: 0,
        }
    }

    /// A checked request for the login form, made at `now_ms`: a fresh id and CSRF token,
    /// expiring one request lifetime later. Returns it and the CSRF token.
    pub fn begin(
        request: &ValidRequest,
        locale: &str,
        now_ms: i64,
    ) -> Result<(Self, String), StoreError> {
        let csrf = random_token()?;
        let pending = Self {
            id: random_token()?,
            csrf_hash: hash(&csrf),
            expires_at: now_ms + millis(AUTHORIZATION_REQUEST_LIFETIME),
            ..Self::from_valid(request, locale)
        };
        Ok((pending, csrf))
    }

    /// The same request (same id, same expiry) bound to a new CSRF token, for a browser that
    /// lost the old one. Returns it and the token.
    pub fn with_new_csrf(&self) -> Result<(Self, String), StoreError> {
        let csrf = random_token()?;
        let renewed = Self {
            csrf_hash: hash(&csrf),
            ..self.clone()
        };
        Ok((renewed, csrf))
    }

    /// Whether `csrf` is the token this request was issued with.
    pub fn issued_with(&self, csrf: &str) -> bool {
        hash(csrf) == self.csrf_hash
    }
}

/// Why a sealed request was refused. Every case is answered as an unknown or expired
/// request: the person starts again from the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the sealed request is longer than {MAX_SEALED_CHARS} characters")]
    TooLong,
    #[error("the sealed request is not in a known format")]
    Malformed,
    #[error(
        "the sealed request does not open with this server's key (changed, truncated or \
         sealed elsewhere)"
    )]
    NotAuthentic,
    #[error("the authorization request has expired")]
    Expired,
    #[error("the cryptographic library failed while sealing a request")]
    Crypto,
}

/// The key that seals pending authorization requests, derived from the key-encryption key
/// with its own label ([`SealPurpose::AuthorizationRequests`]). Cheap to clone.
#[derive(Clone)]
pub struct RequestSealKey {
    key: Arc<RandomizedNonceKey>,
}

impl RequestSealKey {
    pub fn from_kek(kek: &KeyEncryptionKey) -> Result<Self, KeyError> {
        Ok(Self {
            key: Arc::new(kek.derive_sealing_key(SealPurpose::AuthorizationRequests)?),
        })
    }

    /// The request sealed for the login form (URL-safe text).
    pub fn seal(&self, request: &PendingRequest) -> Result<String, SealError> {
        let mut in_out = encode(request).ok_or(SealError::TooLong)?;
        let nonce = self
            .key
            .seal_in_place_append_tag(Aad::from(SEALED_PREFIX.as_bytes()), &mut in_out)
            .map_err(|_| SealError::Crypto)?;
        let mut sealed = Vec::with_capacity(NONCE_LEN + in_out.len());
        sealed.extend_from_slice(nonce.as_ref());
        sealed.extend_from_slice(&in_out);
        let text = format!("{SEALED_PREFIX}{}", URL_SAFE_NO_PAD.encode(&sealed));
        if text.len() > MAX_SEALED_CHARS {
            return Err(SealError::TooLong);
        }
        Ok(text)
    }

    /// The request `sealed` holds, if this key sealed it and it has not expired at `now_ms`.
    pub fn open(&self, sealed: &str, now_ms: i64) -> Result<PendingRequest, SealError> {
        // Bounded before any decoding, so that oversize input costs nothing.
        if sealed.len() > MAX_SEALED_CHARS {
            return Err(SealError::TooLong);
        }
        let encoded = sealed
            .strip_prefix(SEALED_PREFIX)
            .ok_or(SealError::Malformed)?;
        let mut bytes = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| SealError::Malformed)?;
        if bytes.len() < NONCE_LEN + TAG_LEN {
            return Err(SealError::NotAuthentic);
        }
        let mut ciphertext = bytes.split_off(NONCE_LEN);
        let nonce =
            Nonce::try_assume_unique_for_key(&bytes).map_err(|_| SealError::NotAuthentic)?;
        let plaintext = self
            .key
            .open_in_place(nonce, Aad::from(SEALED_PREFIX.as_bytes()), &mut ciphertext)
            .map_err(|_| SealError::NotAuthentic)?;
        let request = decode(plaintext).ok_or(SealError::Malformed)?;
        if request.expires_at <= now_ms {
            return Err(SealError::Expired);
        }
        Ok(request)
    }
}

impl fmt::Debug for RequestSealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RequestSealKey(..)")
    }
}

/// The plaintext of a request; `None` when a field is longer than a 16-bit length says.
fn encode(request: &PendingRequest) -> Option<Vec<u8>> {
    let fields = [
        Some(&request.id),
        Some(&request.client_id),
        Some(&request.redirect_uri),
        Some(&request.scope),
        request.state.as_ref(),
        request.nonce.as_ref(),
        request.code_challenge.as_ref(),
        Some(&request.csrf_hash),
        Some(&request.locale),
    ];
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&request.expires_at.to_be_bytes());
    for field in fields {
        match field {
            None => out.push(0),
            Some(text) => {
                out.push(1);
                out.extend_from_slice(&u16::try_from(text.len()).ok()?.to_be_bytes());
                out.extend_from_slice(text.as_bytes());
            }
        }
    }
    Some(out)
}

/// The request [`encode`] wrote; `None` for anything else.
fn decode(plaintext: &[u8]) -> Option<PendingRequest> {
    let mut reader = Reader(plaintext);
    let expires_at = i64::from_be_bytes(reader.take(8)?.try_into().ok()?);
    let id = reader.field()??;
    let client_id = reader.field()??;
    let redirect_uri = reader.field()??;
    let scope = reader.field()??;
    let state = reader.field()?;
    let nonce = reader.field()?;
    let code_challenge = reader.field()?;
    let csrf_hash = reader.field()??;
    let locale = reader.field()??;
    reader.0.is_empty().then_some(PendingRequest {
        id,
        client_id,
        redirect_uri,
        scope,
        state,
        nonce,
        code_challenge,
        csrf_hash,
        locale,
        expires_at,
    })
}

/// Reads [`encode`]'s fields front to back.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    /// `None`: malformed; `Some(None)`: an absent field.
    fn field(&mut self) -> Option<Option<String>> {
        match self.take(1)? {
            [0] => Some(None),
            [1] => {
                let len = u16::from_be_bytes(self.take(2)?.try_into().ok()?);
                let text = std::str::from_utf8(self.take(usize::from(len))?).ok()?;
                Some(Some(text.to_owned()))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc::request::MAX_PARAMETER_CHARS;

    const NOW: i64 = 1_800_000_000_000;

    fn key(byte: u8) -> RequestSealKey {
        RequestSealKey::from_kek(&KeyEncryptionKey::from_bytes([byte; 32])).expect("key")
    }

    fn valid() -> ValidRequest {
        ValidRequest {
            client_id: "app".into(),
            redirect_uri: "https://app.example/cb".into(),
            scope: "openid profile".into(),
            state: Some("st".into()),
            nonce: None,
            code_challenge: Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into()),
            login_hint: None,
            prompt_none: false,
            prompt_login: false,
            max_age: None,
        }
    }

    fn pending() -> (PendingRequest, String) {
        PendingRequest::begin(&valid(), "en", NOW).expect("begin")
    }

    #[test]
    fn a_sealed_request_opens_to_what_was_sealed() {
        let (request, csrf) = pending();
        let sealed = key(1).seal(&request).expect("seal");
        assert!(sealed.starts_with(SEALED_PREFIX), "{sealed}");
        assert!(
            sealed[SEALED_PREFIX.len()..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "URL-safe: {sealed}"
        );
        let opened = key(1).open(&sealed, NOW).expect("open");
        assert_eq!(opened, request);
        assert!(opened.issued_with(&csrf));
        assert_eq!(opened.id.len(), 43);
        assert_eq!(
            opened.expires_at,
            NOW + millis(AUTHORIZATION_REQUEST_LIFETIME)
        );
        // Each seal has its own nonce: two seals of one request differ.
        assert_ne!(key(1).seal(&request).expect("seal"), sealed);
    }

    #[test]
    fn a_renewed_csrf_token_keeps_the_request_and_its_id() {
        let (request, old) = pending();
        let (renewed, new) = request.with_new_csrf().expect("renew");
        assert_eq!(renewed.id, request.id);
        assert_eq!(renewed.expires_at, request.expires_at);
        assert!(renewed.issued_with(&new) && !renewed.issued_with(&old));
    }

    #[test]
    fn any_changed_byte_or_truncation_is_refused() {
        let (request, _) = pending();
        let sealed = key(1).seal(&request).expect("seal");
        let bytes = URL_SAFE_NO_PAD
            .decode(&sealed[SEALED_PREFIX.len()..])
            .expect("base64");
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x01;
            let forged = format!("{SEALED_PREFIX}{}", URL_SAFE_NO_PAD.encode(&flipped));
            assert_eq!(
                key(1).open(&forged, NOW),
                Err(SealError::NotAuthentic),
                "byte {i}"
            );
        }
        for len in [0, 1, NONCE_LEN, NONCE_LEN + TAG_LEN, bytes.len() - 1] {
            let truncated = format!("{SEALED_PREFIX}{}", URL_SAFE_NO_PAD.encode(&bytes[..len]));
            assert_eq!(
                key(1).open(&truncated, NOW),
                Err(SealError::NotAuthentic),
                "{len} bytes"
            );
        }
        // Cut in the text: either no longer base64 or no longer authentic.
        for cut in 1..=4 {
            assert!(matches!(
                key(1).open(&sealed[..sealed.len() - cut], NOW),
                Err(SealError::NotAuthentic | SealError::Malformed)
            ));
        }
        // Another version, no prefix, not base64, an id from the old stored format.
        for other in [
            sealed.replacen("r1.", "r2.", 1),
            sealed[SEALED_PREFIX.len()..].to_owned(),
            format!("{SEALED_PREFIX}!!!"),
            "x".repeat(43),
            String::new(),
        ] {
            assert_eq!(
                key(1).open(&other, NOW),
                Err(SealError::Malformed),
                "{other}"
            );
        }
    }

    #[test]
    fn another_key_cannot_open_it() {
        let (request, _) = pending();
        let sealed = key(1).seal(&request).expect("seal");
        assert_eq!(key(2).open(&sealed, NOW), Err(SealError::NotAuthentic));
        // Nor does a key derived for another purpose from the same key-encryption key
        // produce what this one opens: the key-encryption key itself does not open it.
        let kek = KeyEncryptionKey::from_bytes([1; 32]);
        let raw = RandomizedNonceKey::new(&aws_lc_rs::aead::AES_256_GCM, &[1; 32]).expect("key");
        let mut in_out = encode(&request).expect("encode");
        let nonce = raw
            .seal_in_place_append_tag(Aad::from(SEALED_PREFIX.as_bytes()), &mut in_out)
            .expect("seal");
        let under_kek = format!(
            "{SEALED_PREFIX}{}",
            URL_SAFE_NO_PAD.encode([nonce.as_ref(), &in_out[..]].concat())
        );
        let sealing_key = RequestSealKey::from_kek(&kek).expect("key");
        assert_eq!(
            sealing_key.open(&under_kek, NOW),
            Err(SealError::NotAuthentic)
        );
    }

    #[test]
    fn an_expired_request_is_refused() {
        let (request, _) = pending();
        let sealed = key(1).seal(&request).expect("seal");
        assert!(key(1).open(&sealed, request.expires_at - 1).is_ok());
        assert_eq!(
            key(1).open(&sealed, request.expires_at),
            Err(SealError::Expired)
        );
    }

    #[test]
    fn the_longest_accepted_request_fits_and_oversize_input_is_refused_unread() {
        let long = "\u{1}".repeat(MAX_PARAMETER_CHARS);
        let request = ValidRequest {
            client_id: "c".repeat(128),
            redirect_uri: long.clone(),
            scope: long.clone(),
            state: Some(long.clone()),
            nonce: Some(long),
            code_challenge: Some("a".repeat(128)),
            ..valid()
        };
        let (request, _) = PendingRequest::begin(&request, "lv", NOW).expect("begin");
        let sealed = key(1).seal(&request).expect("the longest request seals");
        assert!(sealed.len() <= MAX_SEALED_CHARS, "{}", sealed.len());
        assert_eq!(key(1).open(&sealed, NOW), Ok(request));
        let oversize = format!("{SEALED_PREFIX}{}", "A".repeat(MAX_SEALED_CHARS));
        assert_eq!(key(1).open(&oversize, NOW), Err(SealError::TooLong));
        // A field too long for its length prefix is never sealed.
        let (mut huge, _) = pending();
        huge.scope = "s".repeat(usize::from(u16::MAX) + 1);
        assert_eq!(key(1).seal(&huge), Err(SealError::TooLong));
    }

    #[test]
    fn a_request_without_optional_fields_round_trips() {
        let request = ValidRequest {
            state: None,
            nonce: None,
            code_challenge: None,
            ..valid()
        };
        let (request, _) = PendingRequest::begin(&request, "lv", NOW).expect("begin");
        let sealed = key(3).seal(&request).expect("seal");
        assert_eq!(key(3).open(&sealed, NOW), Ok(request));
    }
}
