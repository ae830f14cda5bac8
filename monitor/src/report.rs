//! OpenReports objects (`openreports.io/v1alpha1`): a `Report` per municipality namespace and a
//! `ClusterReport` for the platform checks.
//!
//! A report must fit in one API object, so it holds the summary of every result but the
//! details of the failing, warning, erroneous and skipped ones only (passes are counted, not
//! listed), at most [`MAX_REPORT_RESULTS`] of them, the most severe first, each message cut at
//! [`MAX_MESSAGE_LEN`] characters. A cut report says so in its `novads.io/truncated` annotation.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::evaluate::{CheckResult, Evaluation, Outcome};
use crate::facts::SubjectKind;
use crate::policy::Lang;

pub const API_VERSION: &str = "openreports.io/v1alpha1";
/// The `source` of every result and the field manager reports are applied with.
pub const SOURCE: &str = "novads-monitor";
/// Name of the Report in each municipality namespace and of the ClusterReport.
pub const REPORT_NAME: &str = "novads-compliance";
pub const MAX_REPORT_RESULTS: usize = 500;
pub const MAX_MESSAGE_LEN: usize = 1024;

/// A `Report` (namespaced) or `ClusterReport`.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub api_version: String,
    pub kind: String,
    pub metadata: ReportMetadata,
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<ObjectReference>,
    pub summary: ReportSummary,
    pub results: Vec<ReportResult>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct ReportMetadata {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Serialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ReportSummary {
    pub pass: u64,
    pub fail: u64,
    pub warn: u64,
    pub error: u64,
    pub skip: u64,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct ReportResult {
    pub source: String,
    pub policy: String,
    pub category: String,
    pub result: Outcome,
    pub severity: String,
    pub scored: bool,
    pub message: String,
    pub timestamp: Timestamp,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<ObjectReference>,
    pub properties: BTreeMap<String, String>,
}

#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timestamp {
    pub seconds: i64,
    pub nanos: i64,
}

/// The reports of an evaluation: one `Report` per described municipality (in its namespace),
/// then the `ClusterReport`.
pub fn reports(evaluation: &Evaluation, lang: Lang) -> Vec<Report> {
    // Grouped once: filtering every result for each municipality costs their product.
    let mut by_municipality: BTreeMap<&str, Vec<&CheckResult>> = BTreeMap::new();
    for result in &evaluation.results {
        if let Some(municipality) = &result.municipality {
            by_municipality
                .entry(municipality.as_str())
                .or_default()
                .push(result);
        }
    }
    let mut reports: Vec<Report> = evaluation
        .municipalities
        .iter()
        .map(|municipality| {
            let results = by_municipality
                .get(municipality.name.as_str())
                .into_iter()
                .flatten()
                .copied();
            let scope = ObjectReference {
                api_version: "v1".into(),
                kind: "Namespace".into(),
                name: municipality.namespace.clone(),
                namespace: None,
            };
            build(
                evaluation,
                lang,
                "Report",
                Some(municipality.namespace.clone()),
                Some(scope),
                results,
            )
        })
        .collect();
    let platform = evaluation
        .results
        .iter()
        .filter(|r| r.municipality.is_none());
    reports.push(build(
        evaluation,
        lang,
        "ClusterReport",
        None,
        None,
        platform,
    ));
    reports
}

fn build<'a>(
    evaluation: &Evaluation,
    lang: Lang,
    kind: &str,
    namespace: Option<String>,
    scope: Option<ObjectReference>,
    results: impl Iterator<Item = &'a CheckResult>,
) -> Report {
    let mut summary = ReportSummary::default();
    let mut details: Vec<&CheckResult> = Vec::new();
    for result in results {
        match result.outcome {
            Outcome::Pass => summary.pass += 1,
            Outcome::Fail => summary.fail += 1,
            Outcome::Warn => summary.warn += 1,
            Outcome::Error => summary.error += 1,
            Outcome::Skip => summary.skip += 1,
        }
        if result.outcome != Outcome::Pass {
            details.push(result);
        }
    }
    // Most severe first; among equals, failures before errors, warnings and skips.
    details.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(a.outcome.cmp(&b.outcome))
            .then(a.check.cmp(&b.check))
            .then(a.subject.name.cmp(&b.subject.name))
    });
    let mut annotations = BTreeMap::new();
    if details.len() > MAX_REPORT_RESULTS {
        annotations.insert(
            "novads.io/truncated".to_string(),
            format!("{} of {} results listed", MAX_REPORT_RESULTS, details.len()),
        );
        details.truncate(MAX_REPORT_RESULTS);
    }
    let timestamp = Timestamp {
        seconds: evaluation.evaluated_at.timestamp(),
        nanos: i64::from(evaluation.evaluated_at.timestamp_subsec_nanos()),
    };
    let results = details
        .into_iter()
        .map(|result| {
            let info = evaluation.checks.get(&result.check);
            let mut properties = BTreeMap::new();
            properties.insert(
                "subject".to_string(),
                format!("{}/{}", result.subject.kind, result.subject.name),
            );
            if let Some(info) = info {
                properties.insert("legalBasis".to_string(), info.legal_basis.join("; "));
                properties.insert("title".to_string(), info.title.get(lang).to_string());
            }
            if let Some(exemption) = &result.exemption {
                properties.insert("exemption".to_string(), exemption.clone());
            }
            ReportResult {
                source: SOURCE.into(),
                policy: result.check.clone(),
                category: info.map(|i| i.area.clone()).unwrap_or_default(),
                result: result.outcome,
                severity: result.severity.as_str().into(),
                scored: true,
                message: truncate(result.message.get(lang), MAX_MESSAGE_LEN),
                timestamp,
                resources: resource(result).into_iter().collect(),
                properties,
            }
        })
        .collect();
    let labels = BTreeMap::from([(
        "app.kubernetes.io/managed-by".to_string(),
        SOURCE.to_string(),
    )]);
    Report {
        api_version: API_VERSION.into(),
        kind: kind.into(),
        metadata: ReportMetadata {
            name: REPORT_NAME.into(),
            namespace,
            labels,
            annotations,
        },
        source: SOURCE.into(),
        scope,
        summary,
        results,
    }
}

/// The Kubernetes object a result is about, when it is one.
fn resource(result: &CheckResult) -> Option<ObjectReference> {
    let (api_version, kind) = match result.subject.kind {
        SubjectKind::Municipality => ("novads.io/v1alpha1", "Municipality"),
        SubjectKind::VirtualServer => ("novads.io/v1alpha1", "VirtualServer"),
        SubjectKind::Platform | SubjectKind::Realm => return None,
    };
    Some(ObjectReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: result.subject.name.clone(),
        namespace: result.subject.namespace.clone(),
    })
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}
