//! The I/O shell around [`super::authz`]: reads the `Authorization: Bearer` header, checks the
//! token with the provider's bearer check (oidc/bearer.rs: signature, issuer, expiry,
//! revocation; remembered verifications and this replica's copy of the revocations), reads the cluster's Municipalities when there is a cluster, and hands both to
//! the pure decision.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use std::sync::Arc;

use novads_crds::Municipality;

use super::authz::{self, Action, Allowed, MunicipalityGroups, Principal};
use super::cluster;
use super::problem::AdminError;
use crate::oidc::bearer::{self, BearerRefusal};
use crate::oidc::keys::KeyError;
use crate::state::AppState;

impl FromRequestParts<AppState> for Principal {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AdminError> {
        let token = bearer::from_authorization(&parts.headers).ok_or(AdminError::MissingToken)?;
        let claims =
            bearer::verify_cached(state, token)
                .await
                .map_err(|refusal| match refusal {
                    BearerRefusal::Invalid(KeyError::InvalidToken(why)) => {
                        AdminError::InvalidToken(format!("the access token is not valid: {why}"))
                    }
                    BearerRefusal::Invalid(fault) => {
                        AdminError::storage("checking an access token failed", fault)
                    }
                    BearerRefusal::Revoked => {
                        AdminError::InvalidToken("the access token was revoked".to_owned())
                    }
                    BearerRefusal::Unavailable(fault) => {
                        AdminError::storage("access token revocation lookup failed", fault)
                    }
                })?;
        // Before anything is read for the caller: a flood reaches neither database nor cluster.
        state.admin_limiter().check(&claims.sub)?;
        let listed = match state.cluster() {
            None => None,
            Some(client) => Some(cluster::municipalities(client).await.map(Arc::new)),
        };
        let groups: Vec<MunicipalityGroups> = match &listed {
            Some(Ok(municipalities)) => municipalities
                .iter()
                .filter_map(cluster::groups_of)
                .collect(),
            Some(Err(error)) => {
                // Fail closed: without the Municipalities no municipality role is granted.
                tracing::warn!(%error, "listing Municipalities failed; municipality roles withheld");
                Vec::new()
            }
            None => Vec::new(),
        };
        if let Some(listed) = listed {
            parts.extensions.insert(Tenancy(listed.map_err(|_| ())));
        }
        authz::principal(&claims, &state.config().admin_api, &groups)
            .map_err(|other| AdminError::InvalidToken(other.to_string()))
    }
}

/// The Municipalities read while authorising the request, for handlers that need them too
/// (one list per request); `Err` when the cluster did not answer. Absent without a cluster.
#[derive(Clone)]
pub struct Tenancy(pub Result<Arc<Vec<Municipality>>, ()>);

impl Principal {
    /// [`Principal::authorise`], refused as a problem document.
    pub fn may(&self, action: Action<'_>) -> Result<Allowed, AdminError> {
        self.authorise(action)
            .map_err(|denied| AdminError::Forbidden(denied.0))
    }
}
