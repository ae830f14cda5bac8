//! The security monitor's findings through the admin API: the latest results per
//! municipality and check, and each municipality's compliance summary.
//!
//! Where they come from: with a cluster, from what the monitor in the operator publishes
//! there (operator/src/monitor/): the summary from each Municipality's `status.compliance`,
//! the results from its OpenReports `Report` `novads-compliance`, which lists the results that
//! are not a pass (fail, warn, error, skip; passes are only counted). Without a cluster
//! (`novads dev`), from the server's own evaluation of the federation checks
//! (api/src/compliance/own.rs), every result included. Each municipality's findings are shown
//! to platform admins and auditors, and to the municipality's own admins and security
//! officers.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{Extension, State};
use axum::routing::get;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use novads_crds::Municipality;
use novads_monitor::Evaluation;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::authz::{Action, Principal};
use super::extract::Query;
use super::openapi::ProblemDoc;
use super::principal::Tenancy;
use super::problem::AdminError;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/security/results", get(results))
        .route("/security/compliance", get(compliance))
}

/// One check's latest result on one subject, for one municipality.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ResultView {
    pub municipality: String,
    pub check: String,
    /// `pass`, `fail`, `warn`, `error` or `skip`.
    pub result: String,
    pub severity: String,
    /// `KIND/NAME`, e.g. `VirtualServer/records`.
    pub subject: String,
    /// What was measured, or why nothing was.
    pub message: String,
    pub legal_basis: Vec<String>,
    /// The exemption that turned a failure into this skip.
    pub exemption: Option<String>,
}

/// A municipality's compliance summary.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ComplianceView {
    pub municipality: String,
    pub passed: i64,
    pub failed: i64,
    pub warnings: i64,
    /// When the monitor last evaluated it (RFC 3339); absent before the first evaluation.
    pub last_evaluated: Option<String>,
}

/// Filters of `GET /security/results`, combined with AND.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ResultQuery {
    /// A municipality code.
    pub municipality: Option<String>,
    /// A check id, e.g. `backup.recent`.
    pub check: Option<String>,
    /// `pass`, `fail`, `warn`, `error` or `skip`.
    pub result: Option<String>,
}

impl ResultQuery {
    fn checked(self) -> Result<Self, AdminError> {
        if let Some(result) = &self.result
            && !["pass", "fail", "warn", "error", "skip"].contains(&result.as_str())
        {
            return Err(AdminError::InvalidRequest(format!(
                "result {result:?} is not one of pass, fail, warn, error, skip"
            )));
        }
        Ok(self)
    }

    fn keeps(&self, view: &ResultView) -> bool {
        self.municipality
            .as_ref()
            .is_none_or(|m| *m == view.municipality)
            && self.check.as_ref().is_none_or(|c| *c == view.check)
            && self.result.as_ref().is_none_or(|r| *r == view.result)
    }
}

/// The results of the dev server's own evaluation. Pure.
pub fn results_of_evaluation(evaluation: &Evaluation) -> Vec<ResultView> {
    evaluation
        .results
        .iter()
        .filter_map(|result| {
            let municipality = result.municipality.clone()?;
            let info = evaluation.checks.get(&result.check);
            Some(ResultView {
                municipality,
                check: result.check.clone(),
                result: result.outcome.as_str().to_owned(),
                severity: result.severity.as_str().to_owned(),
                subject: format!("{}/{}", result.subject.kind, result.subject.name),
                message: result.message.en.clone(),
                legal_basis: info.map(|i| i.legal_basis.clone()).unwrap_or_default(),
                exemption: result.exemption.clone(),
            })
        })
        .collect()
}

/// The results an OpenReports `Report` of the monitor lists, for `municipality`. Pure; a
/// field the Report lacks is left empty rather than guessed.
pub fn results_of_report(municipality: &str, report: &Value) -> Vec<ResultView> {
    let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
    report["results"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|result| {
            let properties = &result["properties"];
            ResultView {
                municipality: municipality.to_owned(),
                check: text(&result["policy"]),
                result: text(&result["result"]),
                severity: text(&result["severity"]),
                subject: text(&properties["subject"]),
                message: text(&result["message"]),
                legal_basis: properties["legalBasis"]
                    .as_str()
                    .map(|basis| basis.split("; ").map(str::to_owned).collect())
                    .unwrap_or_default(),
                exemption: properties["exemption"].as_str().map(str::to_owned),
            }
        })
        .collect()
}

/// The summaries of the dev server's own evaluation. Pure.
pub fn compliance_of_evaluation(evaluation: &Evaluation) -> Vec<ComplianceView> {
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    evaluation
        .summary()
        .into_iter()
        .map(|(municipality, tally)| ComplianceView {
            municipality,
            passed: count(tally.pass),
            failed: count(tally.fail),
            warnings: count(tally.warn),
            last_evaluated: Some(evaluation.evaluated_at.to_rfc3339()),
        })
        .collect()
}

fn compliance_of_municipality(municipality: &Municipality) -> ComplianceView {
    let compliance = municipality
        .status
        .as_ref()
        .and_then(|s| s.compliance.as_ref());
    ComplianceView {
        municipality: municipality.spec.code.clone(),
        passed: compliance.map_or(0, |c| c.passed),
        failed: compliance.map_or(0, |c| c.failed),
        warnings: compliance.map_or(0, |c| c.warnings),
        last_evaluated: compliance
            .and_then(|c| c.last_evaluated.as_ref())
            .map(|t| t.0.to_string()),
    }
}

/// Whether the caller may see `municipality`'s findings.
fn may_read(principal: &Principal, municipality: &str) -> bool {
    principal
        .may(Action::ReadMunicipality(municipality))
        .is_ok()
}

fn refuse_without_role(principal: &Principal) -> Result<(), AdminError> {
    if principal.roles().is_empty() {
        return Err(AdminError::Forbidden(
            "reading security findings needs a role".to_owned(),
        ));
    }
    Ok(())
}

/// The latest results per municipality and check.
#[utoipa::path(
    get,
    path = "/api/v1/security/results",
    tag = "security",
    params(ResultQuery),
    responses(
        (status = 200, description = "The latest results of the municipalities the caller may read; with a cluster only those that are not a pass", body = Vec<ResultView>),
        (status = 400, description = "An unknown filter or result", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "No token, or one that is forged, expired, revoked or for another client", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The token holds no role", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The cluster did not answer", body = ProblemDoc, content_type = "application/problem+json")
    )
)]
pub(crate) async fn results(
    principal: Principal,
    State(state): State<AppState>,
    tenancy: Option<Extension<Tenancy>>,
    Query(query): Query<ResultQuery>,
) -> Result<axum::Json<Vec<ResultView>>, AdminError> {
    let query = query.checked()?;
    refuse_without_role(&principal)?;
    let views = match (tenancy, state.cluster()) {
        (Some(Extension(Tenancy(Ok(municipalities)))), Some(client)) => {
            let namespaces: BTreeMap<String, String> = municipalities
                .iter()
                .filter(|m| may_read(&principal, &m.spec.code))
                .filter(|m| {
                    query
                        .municipality
                        .as_ref()
                        .is_none_or(|c| *c == m.spec.code)
                })
                .map(|m| (m.namespace_name(), m.spec.code.clone()))
                .collect();
            let resource = ApiResource {
                group: "openreports.io".into(),
                version: "v1alpha1".into(),
                api_version: novads_monitor::report::API_VERSION.into(),
                kind: "Report".into(),
                plural: "reports".into(),
            };
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
            let reports = api
                .list(&ListParams::default().labels(&format!(
                    "app.kubernetes.io/managed-by={}",
                    novads_monitor::report::SOURCE
                )))
                .await
                .map_err(|error| match error {
                    // No OpenReports CRDs: nothing is published there yet.
                    kube::Error::Api(status) if status.code == 404 => None,
                    error => {
                        tracing::warn!(%error, "listing the monitor's Reports failed");
                        Some(AdminError::ClusterUnreachable)
                    }
                });
            let reports = match reports {
                Ok(list) => list.items,
                Err(None) => Vec::new(),
                Err(Some(refusal)) => return Err(refusal),
            };
            reports
                .iter()
                .filter(|r| r.metadata.name.as_deref() == Some(novads_monitor::report::REPORT_NAME))
                .filter_map(|report| {
                    let code = namespaces.get(report.metadata.namespace.as_deref()?)?;
                    Some(results_of_report(code, &report.data))
                })
                .flatten()
                .collect::<Vec<_>>()
        }
        (Some(Extension(Tenancy(Err(())))), _) => return Err(AdminError::ClusterUnreachable),
        _ => match state.latest_evaluation() {
            Some(evaluation) => results_of_evaluation(&evaluation)
                .into_iter()
                .filter(|v| may_read(&principal, &v.municipality))
                .collect(),
            None => Vec::new(),
        },
    };
    Ok(axum::Json(
        views.into_iter().filter(|v| query.keeps(v)).collect(),
    ))
}

/// Each municipality's compliance summary.
#[utoipa::path(
    get,
    path = "/api/v1/security/compliance",
    tag = "security",
    responses(
        (status = 200, description = "The summary of each municipality the caller may read", body = Vec<ComplianceView>),
        (status = 401, description = "No token, or one that is forged, expired, revoked or for another client", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The token holds no role", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The cluster did not answer", body = ProblemDoc, content_type = "application/problem+json")
    )
)]
pub(crate) async fn compliance(
    principal: Principal,
    State(state): State<AppState>,
    tenancy: Option<Extension<Tenancy>>,
) -> Result<axum::Json<Vec<ComplianceView>>, AdminError> {
    refuse_without_role(&principal)?;
    let views = match tenancy {
        Some(Extension(Tenancy(Ok(municipalities)))) => municipalities
            .iter()
            .filter(|m| may_read(&principal, &m.spec.code))
            .map(compliance_of_municipality)
            .collect(),
        Some(Extension(Tenancy(Err(())))) => return Err(AdminError::ClusterUnreachable),
        None => match state.latest_evaluation() {
            Some(evaluation) => compliance_of_evaluation(&evaluation)
                .into_iter()
                .filter(|v| may_read(&principal, &v.municipality))
                .collect(),
            None => Vec::new(),
        },
    };
    Ok(axum::Json(views))
}
