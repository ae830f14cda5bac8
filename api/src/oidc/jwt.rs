//! JSON Web Tokens signed and verified with the provider's keys: the claims the provider puts
//! in ID tokens (OIDC Core §2) and access tokens (RFC 9068), and `at_hash`.
//!
//! Times are NumericDate: whole seconds since the Unix epoch. Optional claims are left out of
//! the token rather than sent as `null`, which several relying parties reject.

use aws_lc_rs::digest::{self, SHA256};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use super::algorithm::SigningAlgorithm;

/// The `typ` header of access tokens (RFC 9068 §2.1); ID tokens carry `JWT`.
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// Claims of an ID token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdTokenClaims {
    /// The issuer URL, exactly as in the discovery document.
    pub iss: String,
    /// Stable, never reassigned identifier of the user.
    pub sub: String,
    /// The client the token was issued to.
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    /// When the user last entered their password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
    /// Echo of the authorization request's `nonce`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// Authorized party: the client id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azp: Option<String>,
    /// Binds the ID token to the access token issued with it; see [`at_hash`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acr: Option<String>,
    /// Authentication methods, e.g. `["pwd"]` (RFC 8176).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amr: Option<Vec<String>>,
    /// `name@realm`, as the user types it on the login form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
    /// The municipality realm whose directory authenticated the user.
    pub realm: String,
    /// Directory groups, for clients that asked for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
    /// Platform roles granted through the realm's trust.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Claims of an access token in the RFC 9068 profile; sign with `typ` [`ACCESS_TOKEN_TYPE`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    pub iss: String,
    pub sub: String,
    /// The resource server the token is for.
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    /// Unique token id, for revocation and introspection.
    pub jti: String,
    /// The grant the token belongs to: every token issued from one authorization code (and
    /// the refreshes that follow it) shares it, so that a replayed code revokes them all.
    /// Absent on `client_credentials` tokens, which belong to no user's grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_id: Option<String>,
    /// The client the token was issued to.
    pub client_id: String,
    /// Granted scopes, space-separated.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
    pub realm: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
    /// The standard claims the grant's scopes allow (`profile`: `preferred_username`, `name`;
    /// `email`: `email`), carried so that userinfo answers from the token without a lookup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// The `at_hash` of an access token (OIDC Core §3.1.3.6): the left half of the hash of its
/// ASCII text, base64url without padding. The hash is the one of the ID token's `alg` —
/// SHA-256 for both ES256 and RS256.
pub fn at_hash(access_token: &str, algorithm: SigningAlgorithm) -> String {
    let hash = match algorithm {
        SigningAlgorithm::Es256 | SigningAlgorithm::Rs256 => &SHA256,
    };
    let digest = digest::digest(hash, access_token.as_bytes());
    let bytes = digest.as_ref();
    URL_SAFE_NO_PAD.encode(&bytes[..bytes.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_hash_matches_the_oidc_core_example() {
        // OIDC Core, Appendix A.3 (an RS256 ID token issued with this access token).
        assert_eq!(
            at_hash(
                "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y",
                SigningAlgorithm::Rs256
            ),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
        assert_eq!(
            at_hash(
                "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y",
                SigningAlgorithm::Es256
            ),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
    }

    #[test]
    fn optional_claims_are_omitted_not_null() {
        let claims = IdTokenClaims {
            iss: "https://sso.example".into(),
            sub: "s".into(),
            aud: "app".into(),
            exp: 2,
            iat: 1,
            realm: "talsi".into(),
            groups: Some(vec!["staff".into()]),
            ..Default::default()
        };
        let json = serde_json::to_value(&claims).expect("serialises");
        let object = json.as_object().expect("object");
        assert!(!object.contains_key("nonce"));
        assert!(!object.contains_key("roles"));
        assert_eq!(object["groups"], serde_json::json!(["staff"]));
        let back: IdTokenClaims = serde_json::from_value(json).expect("deserialises");
        assert_eq!(back, claims);

        let access = AccessTokenClaims {
            scope: String::new(),
            ..Default::default()
        };
        let json = serde_json::to_value(&access).expect("serialises");
        assert!(!json.as_object().expect("object").contains_key("scope"));
    }
}
