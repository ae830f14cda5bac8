//! Key material: public keys as JWKs (with RFC 7638 thumbprints) and the private keys that
//! sign, for each supported algorithm.

use super::error::KeyError;
use crate::oidc::algorithm::SigningAlgorithm;
use aws_lc_rs::digest::{self, SHA256};
use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _,
    RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256, RsaKeyPair, RsaPublicKeyComponents,
    UnparsedPublicKey,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use zeroize::Zeroizing;

/// RS256 modulus size. 2048 bits is what every relying party accepts and is rated adequate
/// until 2030; raising it later only affects keys created after the change.
const RSA_KEY_SIZE: KeySize = KeySize::Rsa2048;

/// The public half of a signing key, as published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PublicKey {
    /// P-256 point coordinates, 32 bytes each.
    Ec { x: Vec<u8>, y: Vec<u8> },
    /// RSA modulus and exponent, big-endian without leading zeros.
    Rsa { n: Vec<u8>, e: Vec<u8> },
}

impl PublicKey {
    pub(super) fn algorithm(&self) -> SigningAlgorithm {
        match self {
            Self::Ec { .. } => SigningAlgorithm::Es256,
            Self::Rsa { .. } => SigningAlgorithm::Rs256,
        }
    }

    pub(super) fn from_ec_point(point: &[u8]) -> Option<Self> {
        // SEC 1 uncompressed: 0x04 || x || y.
        match point {
            [0x04, xy @ ..] if xy.len() == 64 => Some(Self::Ec {
                x: xy[..32].to_vec(),
                y: xy[32..].to_vec(),
            }),
            _ => None,
        }
    }

    pub(super) fn from_rsa(key: &RsaKeyPair) -> Self {
        let components = RsaPublicKeyComponents::<Vec<u8>>::from(key.public_key());
        Self::Rsa {
            n: components.n,
            e: components.e,
        }
    }

    /// The RFC 7638 thumbprint, used as the kid: stable, derived from the key itself, and
    /// checkable by anyone holding the JWK.
    pub(super) fn thumbprint(&self) -> String {
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
    pub(super) fn to_jwk(&self, kid: &str) -> Value {
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
    pub(super) fn from_jwk(jwk: &Value) -> Option<Self> {
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

    pub(super) fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
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
pub(super) enum Signer {
    Ecdsa(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

impl Signer {
    pub(super) fn generate(algorithm: SigningAlgorithm) -> Result<Self, KeyError> {
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

    pub(super) fn from_pkcs8(algorithm: SigningAlgorithm, pkcs8: &[u8]) -> Result<Self, String> {
        match algorithm {
            SigningAlgorithm::Es256 => {
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8).map(Self::Ecdsa)
            }
            SigningAlgorithm::Rs256 => RsaKeyPair::from_pkcs8(pkcs8).map(Self::Rsa),
        }
        .map_err(|e| format!("the private key is not a valid {algorithm} PKCS#8 key ({e})"))
    }

    pub(super) fn pkcs8(&self) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let failed = |_| KeyError::Crypto("encoding a private key");
        Ok(Zeroizing::new(match self {
            Self::Ecdsa(key) => key.to_pkcs8v1().map_err(failed)?.as_ref().to_vec(),
            Self::Rsa(key) => AsDer::<Pkcs8V1Der>::as_der(key)
                .map_err(failed)?
                .as_ref()
                .to_vec(),
        }))
    }

    pub(super) fn public_key(&self) -> Option<PublicKey> {
        match self {
            Self::Ecdsa(key) => PublicKey::from_ec_point(key.public_key().as_ref()),
            Self::Rsa(key) => Some(PublicKey::from_rsa(key)),
        }
    }

    pub(super) fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
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
