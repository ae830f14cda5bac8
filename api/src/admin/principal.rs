//! The I/O shell around [`super::authz`]: reads the `Authorization: Bearer` header, checks the
//! token with the provider's one bearer check (oidc/bearer.rs: signature, issuer, expiry,
//! revocation) and hands the claims to the pure decision.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::authz::{self, Action, Allowed, MunicipalityGroups, Principal};
use super::problem::AdminError;
use crate::oidc::bearer::{self, BearerRefusal};
use crate::oidc::keys::KeyError;
use crate::state::AppState;

impl FromRequestParts<AppState> for Principal {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AdminError> {
        let token = bearer::from_authorization(&parts.headers).ok_or(AdminError::MissingToken)?;
        let claims = bearer::verify(state, token, None)
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
        let municipalities = municipalities(state);
        authz::principal(&claims, &state.config().admin_api, &municipalities)
            .map_err(|other| AdminError::InvalidToken(other.to_string()))
    }
}

/// The Municipalities whose groups earn roles. Without a Kubernetes cluster there are none,
/// so only platform roles exist.
fn municipalities(_state: &AppState) -> Vec<MunicipalityGroups> {
    Vec::new()
}

impl Principal {
    /// [`Principal::authorise`], refused as a problem document.
    pub fn may(&self, action: Action<'_>) -> Result<Allowed, AdminError> {
        self.authorise(action)
            .map_err(|denied| AdminError::Forbidden(denied.0))
    }
}
