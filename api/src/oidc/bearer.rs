//! Access tokens presented by their bearer (RFC 6750): is this one of ours, still valid, meant
//! for the caller, and not revoked? Userinfo, introspection and revocation ask here, and so
//! does any API that accepts this provider's access tokens.
//!
//! [`verify`] asks the database about revocation every time. The admin API, which answers many
//! requests with one token, uses [`verify_cached`]: a token whose signature and claims were
//! checked is remembered ([`VerifiedTokens`]) and revocation is read from this replica's copy
//! of the revocation table (oidc/store/revocations.rs). docs/security.md states the bounds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aws_lc_rs::digest;
use axum::http::{HeaderMap, header};
use chrono::Utc;

use super::error::OAuthError;
use super::jwt::{ACCESS_TOKEN_TYPE, AccessTokenClaims};
use super::keys::{Expectations, KeyError};
use super::store::StoreError;
use crate::state::AppState;

/// Why a presented access token is not honoured.
#[derive(Debug, thiserror::Error)]
pub enum BearerRefusal {
    /// Not signed by this provider's keys, for another issuer or audience, or expired.
    #[error("{0}")]
    Invalid(#[from] KeyError),
    /// Revoked alone or with its grant.
    #[error("the access token was revoked")]
    Revoked,
    /// The revocation list could not be read: a token whose revocation cannot be checked is
    /// never honoured.
    #[error("access token revocation lookup failed: {0}")]
    Unavailable(#[from] StoreError),
}

impl From<BearerRefusal> for OAuthError {
    fn from(refusal: BearerRefusal) -> Self {
        match refusal {
            BearerRefusal::Invalid(_) | BearerRefusal::Revoked => OAuthError::InvalidToken,
            BearerRefusal::Unavailable(error) => {
                tracing::error!(%error, "access token revocation lookup failed");
                OAuthError::TemporarilyUnavailable
            }
        }
    }
}

/// The token of an `Authorization: Bearer` header.
pub fn from_authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// The claims of one of this provider's access tokens, checked without the database:
/// signature, issuer, token type, expiry, and the audience when one is named.
pub fn signed_claims(
    state: &AppState,
    token: &str,
    audience: Option<&str>,
) -> Result<AccessTokenClaims, KeyError> {
    let mut expected = Expectations::new(state.issuer()).token_type(ACCESS_TOKEN_TYPE);
    if let Some(audience) = audience {
        expected = expected.audience(audience);
    }
    state.keys().verify(token, &expected)
}

/// [`signed_claims`], and not revoked: the one check before an access token is honoured.
pub async fn verify(
    state: &AppState,
    token: &str,
    audience: Option<&str>,
) -> Result<AccessTokenClaims, BearerRefusal> {
    let claims = signed_claims(state, token, audience)?;
    let revoked = state
        .flows()
        .access_token_revoked(&claims.jti, claims.grant_id.as_deref())
        .await?;
    if revoked {
        return Err(BearerRefusal::Revoked);
    }
    Ok(claims)
}

/// [`verify`] for the admin API: the signature and claims of a token are checked once and
/// remembered for [`VERIFIED_TOKEN_TTL`] (never past its `exp`); revocation is checked on
/// every call, against this replica's copy of the revocation table, which is never older than
/// [`REVOCATIONS_FRESH_FOR`](super::store::REVOCATIONS_FRESH_FOR).
pub async fn verify_cached(
    state: &AppState,
    token: &str,
) -> Result<Arc<AccessTokenClaims>, BearerRefusal> {
    let key = TokenKey::of(token);
    let now_ms = Utc::now().timestamp_millis();
    let claims = match state.verified_tokens().get(&key, now_ms) {
        Some(claims) => claims,
        None => {
            let claims = Arc::new(signed_claims(state, token, None)?);
            state.verified_tokens().insert(key, claims.clone(), now_ms);
            claims
        }
    };
    let revoked = state
        .flows()
        .access_token_revoked_cached(&claims.jti, claims.grant_id.as_deref())
        .await?;
    if revoked {
        return Err(BearerRefusal::Revoked);
    }
    Ok(claims)
}

/// How long a verified token is remembered at most: a signing key withdrawn from the key set
/// stops being honoured for remembered tokens within this.
pub const VERIFIED_TOKEN_TTL: Duration = Duration::from_secs(30);

/// How many verified tokens are remembered at most; beyond, the expired ones are dropped, and
/// all of them if that is not enough (they are verified again on their next use).
const VERIFIED_TOKENS_MAX: usize = 10_000;

/// SHA-256 of the whole token: a token that differs in any byte (a forged signature, changed
/// claims) is another key and goes through the full check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenKey([u8; 32]);

impl TokenKey {
    pub fn of(token: &str) -> Self {
        let mut key = [0u8; 32];
        key.copy_from_slice(digest::digest(&digest::SHA256, token.as_bytes()).as_ref());
        Self(key)
    }
}

/// Access tokens whose signature, issuer, type and expiry were checked, with their claims,
/// each until the earlier of its `exp` and [`VERIFIED_TOKEN_TTL`] after the check.
#[derive(Debug, Default)]
pub struct VerifiedTokens {
    entries: Mutex<HashMap<TokenKey, Remembered>>,
}

#[derive(Debug)]
struct Remembered {
    claims: Arc<AccessTokenClaims>,
    /// Milliseconds since the epoch from which the token is checked in full again.
    until_ms: i64,
}

impl VerifiedTokens {
    /// The claims of a token verified before, while it is still remembered at `now_ms`.
    pub fn get(&self, key: &TokenKey, now_ms: i64) -> Option<Arc<AccessTokenClaims>> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(key)
            .filter(|remembered| now_ms < remembered.until_ms)
            .map(|remembered| remembered.claims.clone())
    }

    /// Remembers a token verified at `now_ms`. Past its `exp` (inside the verification's
    /// leeway) a token is not remembered: each use is checked in full until it is refused.
    pub fn insert(&self, key: TokenKey, claims: Arc<AccessTokenClaims>, now_ms: i64) {
        let ttl_ms = i64::try_from(VERIFIED_TOKEN_TTL.as_millis()).unwrap_or(i64::MAX);
        let until_ms = claims
            .exp
            .saturating_mul(1000)
            .min(now_ms.saturating_add(ttl_ms));
        if until_ms <= now_ms {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= VERIFIED_TOKENS_MAX {
            entries.retain(|_, remembered| now_ms < remembered.until_ms);
            if entries.len() >= VERIFIED_TOKENS_MAX {
                entries.clear();
            }
        }
        entries.insert(key, Remembered { claims, until_ms });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Arc<AccessTokenClaims> {
        Arc::new(AccessTokenClaims {
            exp,
            jti: "jti".into(),
            ..Default::default()
        })
    }

    #[test]
    fn a_remembered_token_is_forgotten_at_its_exp_or_after_the_ttl() {
        let tokens = VerifiedTokens::default();
        let now_ms = 1_000_000_000;
        let soon = TokenKey::of("a.b.c");
        tokens.insert(soon, claims(now_ms / 1000 + 5), now_ms);
        assert!(tokens.get(&soon, now_ms + 4_999).is_some());
        assert!(tokens.get(&soon, now_ms + 5_000).is_none(), "at exp");

        let long = TokenKey::of("a.b.d");
        tokens.insert(long, claims(now_ms / 1000 + 3_600), now_ms);
        let ttl = i64::try_from(VERIFIED_TOKEN_TTL.as_millis()).expect("small");
        assert!(tokens.get(&long, now_ms + ttl - 1).is_some());
        assert!(tokens.get(&long, now_ms + ttl).is_none(), "after the TTL");

        // Another token (one byte differs) is not the remembered one.
        assert!(tokens.get(&TokenKey::of("a.b.e"), now_ms).is_none());
        // Expired already (accepted inside the leeway): not remembered.
        let late = TokenKey::of("a.b.f");
        tokens.insert(late, claims(now_ms / 1000 - 1), now_ms);
        assert!(tokens.get(&late, now_ms).is_none());
    }

    #[test]
    fn the_memory_is_bounded() {
        let tokens = VerifiedTokens::default();
        let now_ms = 1_000_000_000;
        for n in 0..VERIFIED_TOKENS_MAX + 10 {
            tokens.insert(
                TokenKey::of(&n.to_string()),
                claims(now_ms / 1000 + 60),
                now_ms,
            );
        }
        let held = tokens.entries.lock().expect("not poisoned").len();
        assert!(held <= VERIFIED_TOKENS_MAX, "{held}");
    }
}
