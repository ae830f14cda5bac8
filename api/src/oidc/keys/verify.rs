//! JWT verification against the published keys: what is expected of a token and the whole
//! check, at a given time.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::error::{TokenError, quoted};
use super::snapshot::Snapshot;
use crate::lifetimes::VERIFY_LEEWAY;
use crate::oidc::algorithm::SigningAlgorithm;

/// Tokens longer than this are refused before any parsing (ours are well under 4 KiB).
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// What [`SigningKeys::verify`](super::SigningKeys::verify) checks besides the signature.
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

/// Compares media types as RFC 7515 §4.1.9 asks.
pub(super) fn same_media_type(a: &str, b: &str) -> bool {
    pub(super) fn normal(s: &str) -> String {
        let lower = s.to_ascii_lowercase();
        match lower.strip_prefix("application/") {
            Some(rest) => rest.to_owned(),
            None => lower,
        }
    }
    normal(a) == normal(b)
}

pub(super) fn numeric_date(
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

/// The whole check of [`SigningKeys::verify`](super::SigningKeys::verify) at a given time; returns the claims.
pub(super) fn verify_at(
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
