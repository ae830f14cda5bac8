//! What one evaluation writes, decided without I/O: the OpenReports objects, each
//! Municipality's `status.compliance` (only when it changed or has grown old), and the
//! exemptions to announce as no longer applying.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use novads_crds::ComplianceSummary;
use novads_monitor::evaluate::Tally;
use novads_monitor::report::{self, Report};
use novads_monitor::{Evaluation, ExemptionState, Lang};

/// Everything one evaluation writes.
#[derive(Clone, Debug, PartialEq)]
pub struct Outputs {
    /// A `Report` per municipality namespace, then the `ClusterReport`.
    pub reports: Vec<Report>,
    /// `status.compliance` of each Municipality (by name) that needs writing.
    pub statuses: Vec<(String, ComplianceSummary)>,
    /// Exemptions that stopped applying and have not been announced yet.
    pub lapsed: Vec<LapsedExemption>,
}

/// An exemption that no longer applies: past its expiry, or granted for too long.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LapsedExemption {
    pub namespace: String,
    pub name: String,
    pub check: String,
    pub state: ExemptionState,
    pub expires: DateTime<Utc>,
}

impl LapsedExemption {
    /// The Event's reason.
    pub fn reason(&self) -> &'static str {
        match self.state {
            ExemptionState::TooLong => "ExemptionTooLong",
            _ => "ExemptionExpired",
        }
    }

    /// The Event's note, for the municipality's security officer.
    pub fn note(&self) -> String {
        match self.state {
            ExemptionState::TooLong => format!(
                "exemption for {} is granted for more than a year (expires {}); it does not \
                 apply: shorten it or remove it",
                self.check,
                self.expires.to_rfc3339()
            ),
            _ => format!(
                "exemption for {} expired at {}; it no longer applies and \
                 governance.exemptions-expired fails until it is renewed or removed",
                self.check,
                self.expires.to_rfc3339()
            ),
        }
    }
}

/// The compliance summary of one municipality's tally.
pub fn compliance_summary(tally: &Tally, at: DateTime<Utc>) -> ComplianceSummary {
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    ComplianceSummary {
        passed: count(tally.pass),
        failed: count(tally.fail),
        warnings: count(tally.warn),
        last_evaluated: k8s_openapi::jiff::Timestamp::from_second(at.timestamp())
            .ok()
            .map(Time),
    }
}

/// Whether a status holding `current` must be written to say `next`: the counts changed, or
/// the last write is older than `refresh` (so `lastEvaluated` stays truthful without a write
/// per change-triggered evaluation).
pub fn status_due(
    current: Option<&ComplianceSummary>,
    next: &ComplianceSummary,
    refresh: Duration,
) -> bool {
    let Some(current) = current else {
        return true;
    };
    let same_counts = (current.passed, current.failed, current.warnings)
        == (next.passed, next.failed, next.warnings);
    let fresh = match (&current.last_evaluated, &next.last_evaluated) {
        (Some(then), Some(now)) => {
            let age = now.0.as_second() - then.0.as_second();
            (0..i64::try_from(refresh.as_secs()).unwrap_or(i64::MAX)).contains(&age)
        }
        _ => false,
    };
    !(same_counts && fresh)
}

/// The outputs of `evaluation`, the Reports in `language`. `current` holds each
/// Municipality's present `status.compliance`; `announced` the exemptions already announced
/// as lapsed (namespace, name, expiry), so each lapse is announced once.
pub fn plan(
    evaluation: &Evaluation,
    current: &BTreeMap<String, Option<ComplianceSummary>>,
    announced: &BTreeSet<(String, String, DateTime<Utc>)>,
    refresh: Duration,
    language: Lang,
) -> Outputs {
    let reports = report::reports(evaluation, language);
    let statuses = evaluation
        .summary()
        .into_iter()
        // Only Municipalities that exist get a status; a namespace without one has none.
        .filter_map(|(name, tally)| {
            let present = current.get(&name)?;
            let next = compliance_summary(&tally, evaluation.evaluated_at);
            status_due(present.as_ref(), &next, refresh).then_some((name, next))
        })
        .collect();
    let mut lapsed: Vec<LapsedExemption> = evaluation
        .exemptions
        .iter()
        .filter(|e| matches!(e.state, ExemptionState::Expired | ExemptionState::TooLong))
        .map(|e| LapsedExemption {
            namespace: e.exemption.namespace.clone(),
            name: e.exemption.name.clone(),
            check: e.exemption.check.clone(),
            state: e.state,
            expires: e.exemption.expires,
        })
        .filter(|l| !announced.contains(&(l.namespace.clone(), l.name.clone(), l.expires)))
        .collect();
    lapsed.sort();
    Outputs {
        reports,
        statuses,
        lapsed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(passed: i64, at: i64) -> ComplianceSummary {
        ComplianceSummary {
            passed,
            failed: 1,
            warnings: 0,
            last_evaluated: k8s_openapi::jiff::Timestamp::from_second(at).ok().map(Time),
        }
    }

    #[test]
    fn a_status_is_written_when_counts_change_or_it_grows_old() {
        let refresh = Duration::from_secs(300);
        assert!(status_due(None, &summary(3, 1000), refresh));
        assert!(!status_due(
            Some(&summary(3, 1000)),
            &summary(3, 1200),
            refresh
        ));
        assert!(status_due(
            Some(&summary(3, 1000)),
            &summary(4, 1010),
            refresh
        ));
        assert!(status_due(
            Some(&summary(3, 1000)),
            &summary(3, 1300),
            refresh
        ));
        // A clock that went backwards, or a status without a time, is rewritten.
        assert!(status_due(
            Some(&summary(3, 2000)),
            &summary(3, 1000),
            refresh
        ));
        let mut undated = summary(3, 1000);
        undated.last_evaluated = None;
        assert!(status_due(Some(&undated), &summary(3, 1000), refresh));
    }
}
