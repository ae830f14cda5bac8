//! Rotation planning: which key retires, which activates, which is created, decided from the
//! rows and a policy without I/O.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::error::KeyError;
use super::kek::KeyEncryptionKey;
use super::row_mac::RowKey;
use super::state::KeyState;
use super::store::{Change, KeyRow, NewKey, chrono_duration, format_time, parse_time};
use crate::lifetimes::{KEY_RELOAD_INTERVAL, MAX_TOKEN_LIFETIME};
use crate::oidc::algorithm::SigningAlgorithm;

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

/// What [`SigningKeys::rotate`](super::SigningKeys::rotate) did.
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
pub(super) fn plan_rotation(
    rows: &[KeyRow],
    now: DateTime<Utc>,
    policy: &KeyPolicy,
    kek: &KeyEncryptionKey,
    row_key: &RowKey,
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
        let not_after = format_time(retired_until);
        changes.push(Change::Retire {
            mac: row_key.mac(
                &active.kid,
                algorithm,
                KeyState::Retired,
                Some(&not_after),
                &active.public_jwk,
            ),
            kid: active.kid.clone(),
            at: at.clone(),
            not_after,
        });
        changes.push(Change::Activate {
            mac: row_key.mac(
                &next.kid,
                algorithm,
                KeyState::Active,
                None,
                &next.public_jwk,
            ),
            kid: next.kid.clone(),
            at: at.clone(),
        });
        changes.push(Change::InsertNext {
            mac: row_key.mac(
                &new_next.kid,
                algorithm,
                KeyState::Next,
                None,
                &new_next.public_jwk,
            ),
            key: new_next,
        });
    }
    Ok((changes, report))
}
