//! Every state-changing call of the admin API in the audit trail, appended before the answer:
//! who (subject, client, role), what (action, target) and how it ended (outcome). The rows go
//! into the same chain as the sign-ins, as `admin_action` events whose `detail` holds the rest.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use serde_json::json;

use super::authz::{Principal, Role};
use super::problem::AdminError;
use crate::federation::audit::{AuditEvent, AuditEventKind};
use crate::state::AppState;

/// The address the request came from, when the server knows it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Peer(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip()),
        ))
    }
}

/// One administrative act, as the trail records it.
#[derive(Debug, Clone)]
pub struct AdminAct<'a> {
    pub principal: &'a Principal,
    pub peer: Peer,
    /// The role that allowed the act; `None` for a refusal.
    pub role: Option<Role>,
    /// What was asked, e.g. `realm.test`.
    pub action: &'static str,
    /// What it was done to, e.g. `realm/talsi`.
    pub target: String,
    /// The realm the act concerns, so that the realm's security officers see it.
    pub realm: Option<String>,
    /// How it ended, e.g. `signed_in`, `refused`, `denied`.
    pub outcome: String,
}

/// The trail's row for `act`. Pure.
pub fn event(act: &AdminAct<'_>) -> AuditEvent {
    let mut event = AuditEvent::new(AuditEventKind::AdminAction);
    event.subject = Some(act.principal.subject.clone());
    event.client_id = Some(act.principal.client_id.clone());
    event.realm = act.realm.clone();
    event.source_ip = act.peer.0.map(|ip| ip.to_string());
    event.detail = Some(
        json!({
            "role": act.role.map(Role::as_str),
            "action": act.action,
            "target": act.target,
            "outcome": act.outcome,
        })
        .to_string(),
    );
    event
}

/// Appends `act` and waits for its commit; the caller answers only after this returns `Ok`.
pub async fn record(state: &AppState, act: &AdminAct<'_>) -> Result<i64, AdminError> {
    state
        .federation()
        .audit()
        .append(event(act))
        .await
        .map_err(|error| {
            tracing::error!(%error, action = act.action, "could not audit an admin action");
            AdminError::AuditUnavailable
        })
}

/// Records a refused act before the refusal is answered. A refusal stays a refusal even when
/// the trail cannot take its row; that failure is logged.
pub async fn refused(state: &AppState, act: AdminAct<'_>, refusal: AdminError) -> AdminError {
    let _ = record(state, &act).await;
    refusal
}

/// Records how a state-changing call ended and passes its result on: done (`Ok` with the role
/// that allowed it and the outcome, e.g. `created`), or refused with the problem's slug as the
/// outcome (`denied` for a 403, whose row names no role). A success whose row cannot be
/// written is answered `audit-unavailable`.
pub async fn settle<T>(
    state: &AppState,
    mut act: AdminAct<'_>,
    result: Result<(Role, &'static str, T), AdminError>,
) -> Result<T, AdminError> {
    match result {
        Ok((role, outcome, value)) => {
            act.role = Some(role);
            act.outcome = outcome.to_owned();
            record(state, &act).await?;
            Ok(value)
        }
        Err(refusal) => Err(refuse(state, act, refusal).await),
    }
}

/// Records a refusal of a state-changing call with the problem's slug as its outcome
/// (`denied` for a 403) and returns it for the answer.
pub async fn refuse(state: &AppState, mut act: AdminAct<'_>, refusal: AdminError) -> AdminError {
    act.outcome = match refusal {
        AdminError::Forbidden(_) => "denied".to_owned(),
        _ => refusal.slug().to_owned(),
    };
    refused(state, act, refusal).await
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn an_act_becomes_an_admin_action_row_naming_who_what_and_how() {
        let principal = Principal {
            subject: "talsi:4f1c".into(),
            client_id: "console".into(),
            realm: "talsi".into(),
            platform_admin: true,
            auditor: false,
            municipalities: BTreeMap::new(),
        };
        let act = AdminAct {
            principal: &principal,
            peer: Peer(Some("192.0.2.7".parse().expect("ip"))),
            role: Some(Role::PlatformAdmin),
            action: "realm.test",
            target: "realm/talsi".into(),
            realm: Some("talsi".into()),
            outcome: "signed_in".into(),
        };
        let event = event(&act);
        assert_eq!(event.event, AuditEventKind::AdminAction);
        assert_eq!(event.subject.as_deref(), Some("talsi:4f1c"));
        assert_eq!(event.client_id.as_deref(), Some("console"));
        assert_eq!(event.source_ip.as_deref(), Some("192.0.2.7"));
        let detail: serde_json::Value =
            serde_json::from_str(event.detail.as_deref().expect("detail")).expect("json");
        assert_eq!(
            detail,
            json!({
                "role": "platform-admin",
                "action": "realm.test",
                "target": "realm/talsi",
                "outcome": "signed_in",
            })
        );
        let refused = event_for_refusal(&principal);
        assert!(refused.detail.expect("detail").contains("\"role\":null"));
    }

    /// Rows written before `detail` existed must keep their hashes: the field joins the hashed
    /// array only when present.
    #[test]
    fn detail_is_hashed_only_when_present() {
        use crate::federation::audit::{AuditRecord, GENESIS_HASH};
        let mut record = AuditRecord {
            id: 1,
            at: "2026-12-04T22:00:00.000000Z".into(),
            event: "login_succeeded".into(),
            realm: Some("talsi".into()),
            username: Some("jana@talsi".into()),
            subject: None,
            client_id: None,
            source_ip: None,
            user_agent: None,
            reason: None,
            directory: None,
            latency_ms: 3,
            prev_hash: GENESIS_HASH.into(),
            hash: String::new(),
            detail: None,
        };
        let before_detail = json!([
            1,
            record.at,
            "login_succeeded",
            "talsi",
            "jana@talsi",
            null,
            null,
            null,
            null,
            null,
            null,
            3,
            GENESIS_HASH
        ]);
        assert_eq!(record.mac_input(), before_detail.to_string().into_bytes());
        record.detail = Some("{\"action\":\"realm.test\"}".into());
        let mut with_detail = before_detail;
        with_detail
            .as_array_mut()
            .expect("array")
            .push(json!("{\"action\":\"realm.test\"}"));
        assert_eq!(record.mac_input(), with_detail.to_string().into_bytes());
    }

    fn event_for_refusal(principal: &Principal) -> AuditEvent {
        event(&AdminAct {
            principal,
            peer: Peer::default(),
            role: None,
            action: "realm.test",
            target: "realm/talsi".into(),
            realm: Some("talsi".into()),
            outcome: "denied".into(),
        })
    }
}
