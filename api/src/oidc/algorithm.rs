//! The JWS algorithms the provider signs with: a value of the configuration
//! (`id_token_signed_response_alg`) and of the key store, so it depends on nothing else in the
//! crate.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// The JWS algorithms the provider signs with. Each client's tokens are signed with the one
/// its configuration names (`id_token_signed_response_alg`, ES256 when unset); every algorithm
/// always has an active key, so any client can be switched without a key ceremony.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum SigningAlgorithm {
    /// ECDSA with P-256 and SHA-256 (RFC 7518 §3.4): small, fast signatures. The default.
    #[default]
    #[serde(rename = "ES256")]
    Es256,
    /// RSASSA-PKCS1-v1_5 with SHA-256: the one algorithm every OpenID Connect client must
    /// support (OIDC Core §15.1).
    #[serde(rename = "RS256")]
    Rs256,
}

impl SigningAlgorithm {
    /// Every supported algorithm, e.g. for `id_token_signing_alg_values_supported`.
    pub const ALL: [Self; 2] = [Self::Es256, Self::Rs256];

    /// The JOSE name (`ES256`, `RS256`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::Rs256 => "RS256",
        }
    }

    /// Parses a JOSE name exactly (JOSE names are case-sensitive).
    pub fn from_jose(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|alg| alg.as_str() == name)
    }
}

/// Reads a JOSE name exactly, refusing anything else with a message that lists what is
/// supported (it ends up as one `clients[N].id_token_signed_response_alg: ...` line).
impl<'de> Deserialize<'de> for SigningAlgorithm {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Self::from_jose(&name).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{:?} is not a supported signing algorithm; use ES256 (the default) or RS256 \
                 (names are case-sensitive)",
                name.chars().take(80).collect::<String>()
            ))
        })
    }
}

impl fmt::Display for SigningAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
