//! Exemptions: a municipality's documented decision to accept a failing check for a while.
//!
//! An exemption lives in the municipality's namespace (the `SecurityExemption` resource) and
//! only ever covers that municipality's results; platform checks cannot be exempted. It turns a
//! `fail` or `warn` into a visible `skip` that names it; an `error` stays an error, because
//! nobody can accept a risk nobody could measure. Past its expiry, or when it was granted for
//! longer than [`MAX_VALIDITY_DAYS`], it stops applying and is reported.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The longest an exemption may be granted for: one year, leap day included.
pub const MAX_VALIDITY_DAYS: i64 = 366;

/// One exemption, as read from a `SecurityExemption`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Exemption {
    pub name: String,
    /// Namespace of the municipality it belongs to.
    pub namespace: String,
    /// The check it covers.
    pub check: String,
    /// Names of the subjects it covers; empty covers every subject of the municipality.
    #[serde(default)]
    pub subjects: Vec<String>,
    pub reason: String,
    /// Who approved it (a person, for the audit).
    pub approver: String,
    pub expires: DateTime<Utc>,
    /// When it was granted (`metadata.creationTimestamp`); without it, validity is counted
    /// from the evaluation time.
    #[serde(default)]
    pub granted: Option<DateTime<Utc>>,
}

/// Whether an exemption applies at a given time.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub enum ExemptionState {
    Active,
    Expired,
    /// Granted for more than [`MAX_VALIDITY_DAYS`]; never applies.
    TooLong,
}

impl Exemption {
    pub fn state(&self, now: DateTime<Utc>) -> ExemptionState {
        let granted = self.granted.unwrap_or(now);
        if (self.expires - granted).num_days() > MAX_VALIDITY_DAYS {
            ExemptionState::TooLong
        } else if self.expires <= now {
            ExemptionState::Expired
        } else {
            ExemptionState::Active
        }
    }

    /// Whether it covers `check` on subject `subject` of the municipality in `namespace`.
    pub fn covers(&self, check: &str, subject: &str, namespace: &str) -> bool {
        self.check == check
            && self.namespace == namespace
            && (self.subjects.is_empty() || self.subjects.iter().any(|s| s == subject))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exemption(granted: &str, expires: &str) -> Exemption {
        Exemption {
            name: "legacy-web".into(),
            namespace: "muni-talsi".into(),
            check: "image.in-support".into(),
            subjects: vec!["web".into()],
            reason: "migration planned".into(),
            approver: "anna@talsi".into(),
            expires: expires.parse().expect("time"),
            granted: Some(granted.parse().expect("time")),
        }
    }

    #[test]
    fn state_follows_expiry_and_the_one_year_limit() {
        let now: DateTime<Utc> = "2026-12-01T00:00:00Z".parse().expect("time");
        let active = exemption("2026-11-01T00:00:00Z", "2027-06-01T00:00:00Z");
        assert_eq!(active.state(now), ExemptionState::Active);
        let expired = exemption("2026-01-01T00:00:00Z", "2026-11-30T00:00:00Z");
        assert_eq!(expired.state(now), ExemptionState::Expired);
        let too_long = exemption("2026-11-01T00:00:00Z", "2028-01-01T00:00:00Z");
        assert_eq!(too_long.state(now), ExemptionState::TooLong);
    }

    #[test]
    fn covers_only_its_check_subjects_and_namespace() {
        let e = exemption("2026-11-01T00:00:00Z", "2027-06-01T00:00:00Z");
        assert!(e.covers("image.in-support", "web", "muni-talsi"));
        assert!(!e.covers("image.patched", "web", "muni-talsi"));
        assert!(!e.covers("image.in-support", "db", "muni-talsi"));
        assert!(!e.covers("image.in-support", "web", "muni-riga"));
    }
}
