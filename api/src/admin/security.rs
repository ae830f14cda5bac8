//! A municipality's `SecurityExemption`s through the admin API: list, grant, revoke.
//!
//! Separation of duties decides who may act ([`authorise`], pure): a platform admin or the
//! municipality's security officer grants and revokes; its admins and auditors read; a
//! municipality admin never exempts their own municipality. A grant is checked before anything
//! is written ([`ExemptionRequest::validate`], pure): a check novads knows that is not a
//! platform check, a reason, an expiry in the future and at most a year ahead; the approver is
//! the token's subject, never the body's word. Exemptions are written to the cluster by
//! server-side apply with field manager [`FIELD_MANAGER`]; every grant, revocation and refusal
//! is appended to the audit trail ([`super::record`]) before the answer; a grant the trail
//! cannot record is taken back, and a revocation is recorded before the deletion (and again
//! as `revocation_failed` when the cluster does not delete).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use chrono::{DateTime, Duration, Utc};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use novads_crds::{Municipality, SecurityExemption, SecurityExemptionSpec};
use novads_monitor::exemption::{Exemption, ExemptionState};
use novads_monitor::{PolicySet, SubjectKind};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::authz::{Denied, Principal, Role};
use super::extract::{Json, Path};
use super::openapi::ProblemDoc;
use super::principal::Tenancy;
use super::problem::AdminError;
use super::record::{self, AdminAct, Peer};
use crate::state::AppState;

/// The field manager of everything the admin API writes to the cluster.
pub const FIELD_MANAGER: &str = "novads-api";
/// The longest an exemption may be granted for, counted from the grant. The monitor stops
/// honouring one granted for longer (monitor/src/exemption.rs), so the API never grants one.
pub const MAX_VALIDITY: Duration = Duration::days(365);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/municipalities/{code}/exemptions",
            get(list_exemptions).post(grant_exemption),
        )
        .route(
            "/municipalities/{code}/exemptions/{name}",
            delete(revoke_exemption),
        )
}

/// What a caller asks to do with a municipality's exemptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExemptionAction<'a> {
    Read(&'a str),
    /// Grant or revoke.
    Manage(&'a str),
}

/// Who may read and manage a municipality's exemptions, and in which role.
pub fn authorise(principal: &Principal, action: ExemptionAction<'_>) -> Result<Role, Denied> {
    if principal.platform_admin {
        return Ok(Role::PlatformAdmin);
    }
    match action {
        ExemptionAction::Read(code) => {
            if principal.auditor {
                return Ok(Role::Auditor);
            }
            match principal.municipalities.get(code) {
                Some(roles) if roles.security_officer => Ok(Role::SecurityOfficer),
                Some(roles) if roles.admin => Ok(Role::MunicipalityAdmin),
                _ => Err(Denied(format!(
                    "reading the exemptions of {code:?} needs platform-admin, auditor or a role \
                     in that municipality"
                ))),
            }
        }
        ExemptionAction::Manage(code) => match principal.municipalities.get(code) {
            Some(roles) if roles.security_officer => Ok(Role::SecurityOfficer),
            _ => Err(Denied(format!(
                "granting or revoking exemptions of {code:?} needs platform-admin or that \
                 municipality's security-officer; its admins cannot exempt themselves"
            ))),
        },
    }
}

/// A grant as the caller asks for it.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExemptionRequest {
    /// The exemption's name in the municipality's namespace (a DNS label).
    pub name: String,
    /// The id of the check it covers, e.g. `image.in-support`.
    pub check: String,
    /// The subjects it covers (VirtualServer names, the realm's or the municipality's
    /// name); every subject of the check when empty.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// Why the risk is accepted and what will end it (10 to 1000 characters).
    pub reason: String,
    /// When it stops applying (RFC 3339), in the future and at most 365 days ahead.
    pub expires: String,
}

impl ExemptionRequest {
    /// The exemption's spec, with `approver` as its approver, or why it cannot be granted at
    /// `now` under `policies`.
    pub fn validate(
        &self,
        approver: &str,
        policies: &PolicySet,
        now: DateTime<Utc>,
    ) -> Result<SecurityExemptionSpec, String> {
        if !is_dns_label(&self.name) {
            return Err(format!(
                "name {:?} is not a DNS label: 1 to 63 lowercase letters, digits and inner \
                 hyphens",
                self.name
            ));
        }
        let check = policies
            .checks
            .iter()
            .find(|c| c.id == self.check)
            .ok_or_else(|| format!("check {:?} is not a check of novads", self.check))?;
        if check.subject == SubjectKind::Platform {
            return Err(format!(
                "check {:?} is a platform check: a municipality cannot exempt it",
                self.check
            ));
        }
        let reason = self.reason.trim();
        if !(10..=1000).contains(&reason.chars().count()) {
            return Err("reason must say in 10 to 1000 characters why the risk is accepted".into());
        }
        if self.subjects.len() > 64 {
            return Err("at most 64 subjects".into());
        }
        if let Some(bad) = self
            .subjects
            .iter()
            .find(|s| s.is_empty() || s.len() > 253 || s.chars().any(char::is_control))
        {
            return Err(format!("subject {bad:?} is not a subject name"));
        }
        let expires = DateTime::parse_from_rfc3339(&self.expires)
            .map_err(|e| format!("expires {:?} is not an RFC 3339 time: {e}", self.expires))?
            .with_timezone(&Utc);
        if expires <= now {
            return Err(format!("expires {} is not in the future", self.expires));
        }
        if expires - now > MAX_VALIDITY {
            return Err(format!(
                "expires {} is more than {} days ahead",
                self.expires,
                MAX_VALIDITY.num_days()
            ));
        }
        Ok(SecurityExemptionSpec {
            check: self.check.clone(),
            subjects: self.subjects.clone(),
            reason: reason.to_owned(),
            approver: approver.to_owned(),
            expires: expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        })
    }
}

fn is_dns_label(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// An exemption as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExemptionView {
    pub name: String,
    pub check: String,
    pub subjects: Vec<String>,
    pub reason: String,
    pub approver: String,
    pub expires: String,
    /// When it was granted (the object's creation).
    pub granted: Option<String>,
    /// `active`, `expired` or `tooLong` (granted for more than a year: not honoured).
    pub state: String,
}

impl ExemptionView {
    fn of(object: &SecurityExemption, now: DateTime<Utc>) -> Self {
        let granted = object
            .metadata
            .creation_timestamp
            .as_ref()
            .and_then(|t| DateTime::parse_from_rfc3339(&t.0.to_string()).ok())
            .map(|t| t.with_timezone(&Utc));
        // An expiry the monitor cannot read applies to nothing (operator/src/compliance/).
        let state = DateTime::parse_from_rfc3339(&object.spec.expires)
            .map(|expires| {
                Exemption {
                    name: object.name_any(),
                    namespace: object.namespace().unwrap_or_default(),
                    check: object.spec.check.clone(),
                    subjects: object.spec.subjects.clone(),
                    reason: object.spec.reason.clone(),
                    approver: object.spec.approver.clone(),
                    expires: expires.with_timezone(&Utc),
                    granted,
                }
                .state(now)
            })
            .unwrap_or(ExemptionState::Expired);
        Self {
            name: object.name_any(),
            check: object.spec.check.clone(),
            subjects: object.spec.subjects.clone(),
            reason: object.spec.reason.clone(),
            approver: object.spec.approver.clone(),
            expires: object.spec.expires.clone(),
            granted: granted.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            state: match state {
                ExemptionState::Active => "active",
                ExemptionState::Expired => "expired",
                ExemptionState::TooLong => "tooLong",
            }
            .to_owned(),
        }
    }
}

/// The Municipality named in the path, from those authorisation read; its namespace and realm.
fn municipality_of(
    tenancy: Option<Extension<Tenancy>>,
    code: &str,
) -> Result<Municipality, AdminError> {
    let listed: Arc<Vec<Municipality>> = match tenancy {
        None => return Err(AdminError::ClusterUnavailable("security exemptions")),
        Some(Extension(Tenancy(Ok(listed)))) => listed,
        Some(Extension(Tenancy(Err(())))) => return Err(AdminError::ClusterUnreachable),
    };
    listed
        .iter()
        .find(|m| m.spec.code == code)
        .cloned()
        .ok_or_else(|| AdminError::NotFound(format!("no municipality {code:?}")))
}

fn exemptions_api(
    state: &AppState,
    municipality: &Municipality,
) -> Result<Api<SecurityExemption>, AdminError> {
    let client = state
        .cluster()
        .ok_or(AdminError::ClusterUnavailable("security exemptions"))?;
    Ok(Api::namespaced(
        client.clone(),
        &municipality.namespace_name(),
    ))
}

/// A failed cluster call as a refusal: a missing object is `not-found`, anything else means
/// the cluster did not do it.
fn cluster_error(error: kube::Error, what: &str) -> AdminError {
    match error {
        kube::Error::Api(status) if status.code == 404 => {
            AdminError::NotFound(format!("no {what}"))
        }
        error => {
            tracing::warn!(%error, what, "cluster call failed");
            AdminError::ClusterUnreachable
        }
    }
}

/// The exemptions of a municipality, with the state the monitor gives them now.
#[utoipa::path(
    get,
    path = "/api/v1/municipalities/{code}/exemptions",
    tag = "security",
    params(("code" = String, Path, description = "Municipality code")),
    responses(
        (status = 200, description = "The municipality's exemptions", body = Vec<ExemptionView>),
        (status = 400, description = "The code is not a DNS label", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "No token, or one that is forged, expired, revoked or for another client", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "No role that reads this municipality's exemptions", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such municipality", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "No cluster, or it did not answer", body = ProblemDoc, content_type = "application/problem+json")
    )
)]
pub(crate) async fn list_exemptions(
    principal: Principal,
    State(state): State<AppState>,
    tenancy: Option<Extension<Tenancy>>,
    Path(code): Path<String>,
) -> Result<axum::Json<Vec<ExemptionView>>, AdminError> {
    super::municipalities::check_code(&code)?;
    let municipality = municipality_of(tenancy, &code)?;
    authorise(&principal, ExemptionAction::Read(&code)).map_err(|d| AdminError::Forbidden(d.0))?;
    let api = exemptions_api(&state, &municipality)?;
    let listed = api
        .list(&ListParams::default())
        .await
        .map_err(|e| cluster_error(e, "exemptions"))?;
    let now = Utc::now();
    let mut views: Vec<ExemptionView> = listed
        .items
        .iter()
        .map(|object| ExemptionView::of(object, now))
        .collect();
    views.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(axum::Json(views))
}

/// Grants an exemption: written by server-side apply as `novads-api`, approved by the caller.
#[utoipa::path(
    post,
    path = "/api/v1/municipalities/{code}/exemptions",
    tag = "security",
    params(("code" = String, Path, description = "Municipality code")),
    request_body = ExemptionRequest,
    responses(
        (status = 201, description = "Granted", body = ExemptionView),
        (status = 400, description = "The request is wrong: an unknown or platform check, no reason, an expiry in the past or more than a year ahead, unknown fields", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "No token, or one that is forged, expired, revoked or for another client", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "Neither platform-admin nor the municipality's security-officer", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such municipality", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "An exemption of that name exists", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "No cluster, it did not answer, or the audit trail is unavailable", body = ProblemDoc, content_type = "application/problem+json")
    )
)]
pub(crate) async fn grant_exemption(
    principal: Principal,
    peer: Peer,
    State(state): State<AppState>,
    tenancy: Option<Extension<Tenancy>>,
    Path(code): Path<String>,
    Json(request): Json<ExemptionRequest>,
) -> Result<Response, AdminError> {
    super::municipalities::check_code(&code)?;
    let municipality = municipality_of(tenancy, &code)?;
    let target = format!("municipality/{code}/exemption/{}", request.name);
    let act = |role, outcome: &str| AdminAct {
        principal: &principal,
        peer,
        role,
        action: "exemption.grant",
        target: target.clone(),
        realm: Some(municipality.spec.realm.clone()),
        outcome: outcome.to_owned(),
    };
    let role = match authorise(&principal, ExemptionAction::Manage(&code)) {
        Ok(role) => role,
        Err(denied) => {
            return Err(record::refused(
                &state,
                act(None, "denied"),
                AdminError::Forbidden(denied.0),
            )
            .await);
        }
    };
    let now = Utc::now();
    let spec = request
        .validate(
            &principal.subject,
            &novads_monitor::shipped::policies(),
            now,
        )
        .map_err(AdminError::InvalidRequest)?;
    let api = exemptions_api(&state, &municipality)?;
    // Server-side apply would take over an existing exemption: a grant creates a new one.
    match api.get_opt(&request.name).await {
        Ok(None) => {}
        Ok(Some(_)) => {
            return Err(AdminError::Conflict(format!(
                "exemption {:?} exists in {code}: revoke it or choose another name",
                request.name
            )));
        }
        Err(error) => return Err(cluster_error(error, "exemption")),
    }
    let object = json!({
        "apiVersion": SecurityExemption::api_version(&()),
        "kind": SecurityExemption::kind(&()),
        "metadata": { "name": request.name },
        "spec": spec,
    });
    let written = api
        .patch(
            &request.name,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(&object),
        )
        .await
        .map_err(|e| cluster_error(e, "exemption"))?;
    if let Err(refusal) = record::record(&state, &act(Some(role), "granted")).await {
        // Nothing the trail does not show stays granted.
        if let Err(error) = api.delete(&request.name, &DeleteParams::default()).await {
            tracing::error!(%error, name = %request.name, "an unaudited exemption could not be taken back");
        }
        return Err(refusal);
    }
    Ok((
        StatusCode::CREATED,
        axum::Json(ExemptionView::of(&written, now)),
    )
        .into_response())
}

/// Revokes an exemption: it is deleted, and the failure it covered counts again.
#[utoipa::path(
    delete,
    path = "/api/v1/municipalities/{code}/exemptions/{name}",
    tag = "security",
    params(
        ("code" = String, Path, description = "Municipality code"),
        ("name" = String, Path, description = "Exemption name")
    ),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, description = "The code or name is not a DNS label", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "No token, or one that is forged, expired, revoked or for another client", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "Neither platform-admin nor the municipality's security-officer", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such municipality or exemption", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "No cluster, it did not answer, or the audit trail is unavailable", body = ProblemDoc, content_type = "application/problem+json")
    )
)]
pub(crate) async fn revoke_exemption(
    principal: Principal,
    peer: Peer,
    State(state): State<AppState>,
    tenancy: Option<Extension<Tenancy>>,
    Path((code, name)): Path<(String, String)>,
) -> Result<StatusCode, AdminError> {
    super::municipalities::check_code(&code)?;
    if !is_dns_label(&name) {
        return Err(AdminError::InvalidRequest(format!(
            "{name:?} is not an exemption name"
        )));
    }
    let municipality = municipality_of(tenancy, &code)?;
    let act = |role, outcome: &str| AdminAct {
        principal: &principal,
        peer,
        role,
        action: "exemption.revoke",
        target: format!("municipality/{code}/exemption/{name}"),
        realm: Some(municipality.spec.realm.clone()),
        outcome: outcome.to_owned(),
    };
    let role = match authorise(&principal, ExemptionAction::Manage(&code)) {
        Ok(role) => role,
        Err(denied) => {
            return Err(record::refused(
                &state,
                act(None, "denied"),
                AdminError::Forbidden(denied.0),
            )
            .await);
        }
    };
    let api = exemptions_api(&state, &municipality)?;
    // Recorded first: a revocation the trail cannot show is not made.
    api.get(&name)
        .await
        .map_err(|e| cluster_error(e, "such exemption"))?;
    record::record(&state, &act(Some(role), "revoked")).await?;
    if let Err(error) = api.delete(&name, &DeleteParams::default()).await {
        // The trail already says revoked: it must also say that the deletion did not happen.
        let refusal = cluster_error(error, "such exemption");
        return Err(record::refused(&state, act(Some(role), "revocation_failed"), refusal).await);
    }
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::admin::authz::MunicipalityRoles;

    fn principal(platform_admin: bool, auditor: bool, talsi: Option<(bool, bool)>) -> Principal {
        Principal {
            subject: "talsi:anna".into(),
            client_id: "console".into(),
            realm: "talsi".into(),
            platform_admin,
            auditor,
            municipalities: talsi
                .map(|(admin, security_officer)| {
                    BTreeMap::from([(
                        "talsi".to_owned(),
                        MunicipalityRoles {
                            realm: "talsi".into(),
                            admin,
                            security_officer,
                        },
                    )])
                })
                .unwrap_or_default(),
        }
    }

    #[test]
    fn only_platform_admins_and_the_municipalitys_security_officers_manage_exemptions() {
        let manage = ExemptionAction::Manage("talsi");
        let read = ExemptionAction::Read("talsi");
        assert_eq!(
            authorise(&principal(true, false, None), manage),
            Ok(Role::PlatformAdmin)
        );
        assert_eq!(
            authorise(&principal(false, false, Some((false, true))), manage),
            Ok(Role::SecurityOfficer)
        );
        // A municipality admin reads its exemptions but cannot exempt itself.
        let admin = principal(false, false, Some((true, false)));
        assert_eq!(authorise(&admin, read), Ok(Role::MunicipalityAdmin));
        let denied = authorise(&admin, manage).expect_err("admins cannot exempt themselves");
        assert!(denied.0.contains("cannot exempt themselves"), "{denied}");
        // An auditor reads everything and changes nothing.
        let auditor = principal(false, true, None);
        assert_eq!(authorise(&auditor, read), Ok(Role::Auditor));
        assert!(authorise(&auditor, manage).is_err());
        // A security officer of Talsi is nobody in Ventspils.
        let officer = principal(false, false, Some((false, true)));
        assert!(authorise(&officer, ExemptionAction::Read("ventspils")).is_err());
        assert!(authorise(&officer, ExemptionAction::Manage("ventspils")).is_err());
    }

    fn request() -> ExemptionRequest {
        ExemptionRequest {
            name: "legacy-records".into(),
            check: "image.in-support".into(),
            subjects: vec!["records".into()],
            reason: "  The records system needs Debian 10 until May.  ".into(),
            expires: "2027-06-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn a_grant_is_checked_before_anything_is_written() {
        let policies = novads_monitor::shipped::policies();
        let now: DateTime<Utc> = "2026-12-05T00:00:00Z".parse().expect("time");
        let spec = request()
            .validate("talsi:officer", &policies, now)
            .expect("valid");
        assert_eq!(spec.approver, "talsi:officer");
        assert_eq!(spec.reason, "The records system needs Debian 10 until May.");
        assert_eq!(spec.expires, "2027-06-01T00:00:00Z");
        let refused = |change: fn(&mut ExemptionRequest), says: &str| {
            let mut request = request();
            change(&mut request);
            let error = request
                .validate("talsi:officer", &policies, now)
                .expect_err(says);
            assert!(error.contains(says), "{error}");
        };
        refused(|r| r.name = "Legacy_Records".into(), "not a DNS label");
        refused(
            |r| r.check = "image.no-such-check".into(),
            "not a check of novads",
        );
        refused(|r| r.check = "audit.chain-intact".into(), "platform check");
        refused(|r| r.reason = "because".into(), "10 to 1000 characters");
        refused(
            |r| r.expires = "2026-12-04T00:00:00Z".into(),
            "not in the future",
        );
        refused(
            |r| r.expires = "2027-12-06T00:00:00Z".into(),
            "more than 365 days",
        );
        refused(|r| r.expires = "next summer".into(), "not an RFC 3339 time");
        refused(|r| r.subjects = vec![String::new()], "not a subject name");
        refused(|r| r.subjects = vec!["x".into(); 65], "at most 64 subjects");
    }
}
