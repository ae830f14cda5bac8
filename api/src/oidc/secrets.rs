//! Client secret verification with a cache of the last secret that verified.
//!
//! Secrets are configured as argon2id hashes, which cost about 23 ms of CPU to check: far too
//! much to pay on every token request of a confidential client. The configuration is fixed for
//! the process lifetime, so once a presented secret has verified against a client's hash, the
//! SHA-256 digest of that secret is kept in memory and later presentations are compared to it
//! in constant time. Anything else — a first presentation, a wrong secret, a different right
//! one — takes the full argon2 verification: wrong secrets keep costing an attacker argon2 time,
//! and failures are never cached. Only a digest is kept, never the secret itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_lc_rs::{constant_time, digest};

use crate::federation::hash_work;

/// SHA-256 of a secret as presented.
type Digest = [u8; 32];

/// Per client id, the digest of the last secret that verified against its hash.
#[derive(Clone, Default)]
pub struct SecretCache {
    verified: Arc<Mutex<HashMap<String, Digest>>>,
}

impl std::fmt::Debug for SecretCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The digests stay out of logs and debug output.
        f.debug_struct("SecretCache").finish_non_exhaustive()
    }
}

/// How a secret was verified, for tests and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    /// Matched the digest of the secret that verified before; no argon2.
    Cached,
    /// Verified against the argon2 hash (and now cached).
    Hashed,
    /// Refused after the full argon2 verification.
    Refused,
    /// Not verified: too many argon2 verifications were under way ([`hash_work`]).
    Busy,
}

impl Verified {
    pub fn ok(self) -> bool {
        matches!(self, Self::Cached | Self::Hashed)
    }
}

fn sha256(secret: &str) -> Digest {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, secret.as_bytes()).as_ref());
    out
}

/// Why a client secret could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum HashSecretError {
    #[error("the secret is empty")]
    Empty,
    #[error("no randomness for the salt")]
    Random,
    #[error("argon2: {0}")]
    Argon2(String),
}

/// The argon2id PHC string of a client secret, for `clients[].secret_hash` (`novads
/// hash-secret`). The parameters are argon2's defaults (m=19456, t=2, p=1, OWASP's
/// recommendation), the ones the demo realm's hashes use and well under the configuration's
/// cost cap; the salt is 16 random bytes.
pub fn hash_secret(secret: &str) -> Result<String, HashSecretError> {
    use argon2::PasswordHasher as _;
    if secret.is_empty() {
        return Err(HashSecretError::Empty);
    }
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt).map_err(|_| HashSecretError::Random)?;
    let salt = argon2::password_hash::SaltString::encode_b64(&salt)
        .map_err(|e| HashSecretError::Argon2(e.to_string()))?;
    argon2::Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| HashSecretError::Argon2(e.to_string()))
}

impl SecretCache {
    /// Verifies `secret` for `client_id`, whose configured hash is `hash`.
    pub async fn verify(&self, client_id: &str, hash: &str, secret: String) -> Verified {
        let presented = sha256(&secret);
        if self.matches_cached(client_id, &presented) {
            return Verified::Cached;
        }
        // argon2 is CPU-bound for tens of milliseconds: off the async workers, under the
        // process-wide limit.
        let ok = match hash_work::verify(hash.to_owned(), secret).await {
            Ok(ok) => ok,
            Err(hash_work::Busy) => return Verified::Busy,
        };
        if !ok {
            // Never cached: the next wrong guess pays argon2 again.
            return Verified::Refused;
        }
        // A poisoned lock only loses the cache; the verification itself stands.
        if let Ok(mut verified) = self.verified.lock() {
            verified.insert(client_id.to_owned(), presented);
        }
        Verified::Hashed
    }

    fn matches_cached(&self, client_id: &str, presented: &Digest) -> bool {
        // Copied out so that the comparison runs without the lock held.
        let cached = match self.verified.lock() {
            Ok(verified) => verified.get(client_id).copied(),
            Err(_) => None,
        };
        cached.is_some_and(|cached| {
            constant_time::verify_slices_are_equal(&cached, presented).is_ok()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::PasswordHasher;
    use argon2::password_hash::SaltString;

    fn hash_of(secret: &str) -> String {
        // Small parameters: the tests check the cache, not argon2's cost.
        let params = argon2::Params::new(1024, 1, 1, None).expect("parameters");
        let argon2 =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let salt = SaltString::encode_b64(b"novads-test-salt").expect("salt");
        argon2
            .hash_password(secret.as_bytes(), &salt)
            .expect("hash")
            .to_string()
    }

    #[tokio::test]
    async fn a_hashed_secret_verifies_and_fits_the_configuration_cap() {
        let hash = hash_secret("s3cret").expect("hash");
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert_ne!(
            hash,
            hash_secret("s3cret").expect("hash"),
            "a fresh salt each time"
        );
        let cache = SecretCache::default();
        assert_eq!(
            cache.verify("app", &hash, "s3cret".into()).await,
            Verified::Hashed
        );
        assert_eq!(
            cache.verify("other", &hash, "wrong".into()).await,
            Verified::Refused
        );
        assert!(matches!(hash_secret(""), Err(HashSecretError::Empty)));
    }

    #[tokio::test]
    async fn a_correct_secret_is_hashed_once_then_cached() {
        let cache = SecretCache::default();
        let hash = hash_of("right-secret");
        let first = cache.verify("app", &hash, "right-secret".into()).await;
        assert_eq!(first, Verified::Hashed);
        let second = cache.verify("app", &hash, "right-secret".into()).await;
        assert_eq!(second, Verified::Cached);
        assert!(second.ok());
    }

    #[tokio::test]
    async fn a_wrong_secret_is_never_cached() {
        let cache = SecretCache::default();
        let hash = hash_of("right-secret");
        for _ in 0..2 {
            let wrong = cache.verify("app", &hash, "wrong-secret".into()).await;
            assert_eq!(wrong, Verified::Refused);
        }
        // The right secret still takes the full verification first.
        let right = cache.verify("app", &hash, "right-secret".into()).await;
        assert_eq!(right, Verified::Hashed);
    }

    #[tokio::test]
    async fn a_wrong_secret_after_a_right_one_is_refused_and_the_right_one_still_works() {
        let cache = SecretCache::default();
        let hash = hash_of("right-secret");
        assert_eq!(
            cache.verify("app", &hash, "right-secret".into()).await,
            Verified::Hashed
        );
        assert_eq!(
            cache.verify("app", &hash, "wrong-secret".into()).await,
            Verified::Refused
        );
        assert_eq!(
            cache.verify("app", &hash, "right-secret".into()).await,
            Verified::Cached
        );
    }

    #[tokio::test]
    async fn the_cache_is_per_client() {
        let cache = SecretCache::default();
        let hash_a = hash_of("secret-a");
        let hash_b = hash_of("secret-b");
        assert_eq!(
            cache.verify("a", &hash_a, "secret-a".into()).await,
            Verified::Hashed
        );
        // Client b's hash is not a's: a's cached secret means nothing for b.
        assert_eq!(
            cache.verify("b", &hash_b, "secret-a".into()).await,
            Verified::Refused
        );
        assert_eq!(
            cache.verify("b", &hash_b, "secret-b".into()).await,
            Verified::Hashed
        );
    }
}
