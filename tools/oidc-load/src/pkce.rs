//! Random protocol values and PKCE (RFC 7636) with the `S256` method.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::error::LoadError;

/// `bytes` random bytes from the operating system, base64url without padding: for `state`,
/// `nonce` and the PKCE code verifier.
pub fn random_token(bytes: usize) -> Result<String, LoadError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| LoadError::Random(e.to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(&buf))
}

/// The `S256` code challenge of a verifier: `BASE64URL(SHA256(ASCII(verifier)))`.
pub fn challenge_s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// A code verifier and its challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkce {
    /// Sent to the token endpoint (`code_verifier`).
    pub verifier: String,
    /// Sent to the authorization endpoint (`code_challenge`, method `S256`).
    pub challenge: String,
}

impl Pkce {
    /// A fresh verifier of 43 characters (32 random bytes), the RFC's recommendation.
    pub fn generate() -> Result<Self, LoadError> {
        let verifier = random_token(32)?;
        let challenge = challenge_s256(&verifier);
        Ok(Self {
            verifier,
            challenge,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_7636_appendix_b_example() {
        assert_eq!(
            challenge_s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn verifiers_are_fresh_and_well_formed() {
        let a = Pkce::generate().expect("random");
        let b = Pkce::generate().expect("random");
        assert_ne!(a.verifier, b.verifier);
        // RFC 7636 4.1: 43 to 128 characters of [A-Za-z0-9-._~].
        assert_eq!(a.verifier.len(), 43);
        assert!(
            a.verifier
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_eq!(a.challenge, challenge_s256(&a.verifier));
    }
}
