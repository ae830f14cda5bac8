//! The sign-in decision: who is this, may they use this application, and the audit row that
//! records the attempt either way.
//!
//! The order matters and is fixed: parse the name, find the realm, take the account's turn
//! (one attempt per account at a time, so the counters read next include every earlier
//! failure), consult the lockout counters (a locked account or a throttled source never
//! reaches the directory), ask the directory, count a failure before the turn passes on,
//! decide the trust, then write the audit row — and only after the row is committed does the caller get an
//! answer. Every failure looks the same from outside ([`LoginRefused`]'s `Display`), except an
//! unreachable directory, which is the same for every account of the realm
//! ([`LoginRefused::unreachable_directory`]); the audit row carries the true reason.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;

use super::audit::{
    AuditError, AuditEvent, AuditEventKind, AuditLog, AuditReason, MAX_FIELD_CHARS,
};
use super::directory::{Directory, DirectoryAnswer, DirectoryFailure, DirectoryUser};
use super::lockout::{AccountTurns, Gate, LockoutStore, account_key, source_key};
use super::metrics::FederationMetrics;
use super::trust::{Access, TrustPolicy, qualify};
use super::username::{LoginName, parse_login_name};

/// A realm ready for sign-ins.
pub struct Realm {
    pub name: String,
    pub display_name: Option<String>,
    pub directory: Directory,
}

/// An application and the realm that owns it.
#[derive(Debug, Clone)]
pub struct Application {
    pub client_id: String,
    pub realm: String,
}

/// One sign-in attempt as it arrives.
#[derive(Debug, Clone, Default)]
pub struct LoginRequest {
    /// What was typed: `jana@talsi`, `TALSI\jana`, or a bare name with a default realm.
    pub username: String,
    pub password: String,
    /// The application the user signs in to; `None` for realm-only checks.
    pub client_id: Option<String>,
    pub source_ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

impl LoginRequest {
    /// A signed-in user checked again without a password (a refresh, a single sign-on).
    fn recheck_of(
        identity: &Identity,
        client_id: &str,
        source_ip: Option<IpAddr>,
        user_agent: Option<String>,
    ) -> Self {
        Self {
            username: identity.username.clone(),
            password: String::new(),
            client_id: Some(client_id.to_owned()),
            source_ip,
            user_agent,
        }
    }
}

/// Which trust let a foreign user in.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TrustUsed {
    pub trusting: String,
    pub trusted: String,
}

/// A signed-in user, as tokens will describe them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    /// Stable per realm: `realm:immutable-id`, never the username.
    pub subject: String,
    pub realm: String,
    /// `name@realm`.
    pub username: String,
    pub email: Option<String>,
    pub name: Option<String>,
    /// Qualified `realm:group` names.
    pub groups: Vec<String>,
    /// Roles granted by the trust that admitted the user (empty for own-realm access).
    pub roles: Vec<String>,
    pub trust: Option<TrustUsed>,
    /// The directory server that vouched for the user.
    pub directory: Option<String>,
    /// The audit row of this sign-in.
    pub audit_id: i64,
}

/// A refused sign-in. Shown to the user only as "wrong username or password" (or, when the
/// realm's directory cannot be reached, as that outage); the reason and detail are for the
/// audit trail, logs and `novads realm test`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("wrong username or password")]
pub struct LoginRefused {
    pub reason: AuditReason,
    pub detail: String,
    /// The audit row, or `None` when it could not be written (then nothing else happened
    /// either: the attempt failed closed).
    pub audit_id: Option<i64>,
    /// Set when the source must wait before trying again (HTTP `429` with `Retry-After`).
    pub retry_after: Option<Duration>,
    /// The display name of the realm whose directory could not be reached, when that is why
    /// the attempt failed: an outage, told to the person as one (it says nothing about the
    /// account), so that they wait instead of resetting a password that is not wrong.
    pub unreachable_directory: Option<String>,
}

/// Realms, trusts, applications, lockout counters and the audit trail, together.
pub struct Federation {
    realms: HashMap<String, Realm>,
    applications: HashMap<String, Application>,
    trusts: TrustPolicy,
    lockout: LockoutStore,
    turns: AccountTurns,
    audit: AuditLog,
    metrics: FederationMetrics,
    default_realm: Option<String>,
}

/// Why a signed-in user is checked again without a password.
#[derive(Debug, Clone, Copy)]
enum Recheck {
    Refresh,
    SingleSignOn,
}

/// What a directory-level check produced, before the audit row is written.
struct Outcome {
    event: AuditEventKind,
    result: Result<Identity, (AuditReason, String)>,
    name: Option<LoginName>,
    directory: Option<String>,
    retry_after: Option<Duration>,
    /// See [`LoginRefused::unreachable_directory`].
    unreachable_directory: Option<String>,
}

impl Federation {
    pub fn new(
        realms: Vec<Realm>,
        applications: Vec<Application>,
        trusts: TrustPolicy,
        lockout: LockoutStore,
        audit: AuditLog,
        metrics: FederationMetrics,
    ) -> Self {
        // A bare username is accepted only when there is exactly one realm to mean.
        let default_realm = (realms.len() == 1).then(|| realms[0].name.clone());
        Self {
            realms: realms.into_iter().map(|r| (r.name.clone(), r)).collect(),
            applications: applications
                .into_iter()
                .map(|a| (a.client_id.clone(), a))
                .collect(),
            trusts,
            lockout,
            turns: AccountTurns::default(),
            audit,
            metrics,
            default_realm,
        }
    }

    pub fn realm(&self, name: &str) -> Option<&Realm> {
        self.realms.get(name)
    }

    pub fn realms(&self) -> impl Iterator<Item = &Realm> {
        self.realms.values()
    }

    /// Probes every realm's directory and publishes its health. Returns, per realm with a
    /// directory server, whether at least one of its servers is up.
    pub async fn probe_directories(&self) -> Vec<(String, bool)> {
        let mut realms = Vec::new();
        for realm in self.realms.values() {
            realm.directory.probe().await;
            let health = realm.directory.health();
            self.metrics.directory_health(&realm.name, &health);
            if !health.is_empty() {
                realms.push((realm.name.clone(), health.iter().any(|s| s.up)));
            }
        }
        realms.sort();
        realms
    }

    /// Per realm with directory servers: whether one of them is up, as last observed.
    pub fn directory_status(&self) -> Vec<(String, bool)> {
        let mut realms: Vec<(String, bool)> = self
            .realms
            .values()
            .filter_map(|realm| {
                let health = realm.directory.health();
                (!health.is_empty()).then(|| (realm.name.clone(), health.iter().any(|s| s.up)))
            })
            .collect();
        realms.sort();
        realms
    }

    /// Deletes the lockout counters that have expired (see [`LockoutStore::sweep_expired`]).
    pub async fn sweep_lockout_counters(&self) -> Result<u64, sqlx::Error> {
        self.lockout
            .sweep_expired(Utc::now().timestamp_millis())
            .await
    }

    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// Decides a sign-in and records it. Returns only after the audit row is committed.
    pub async fn login(&self, request: &LoginRequest) -> Result<Identity, LoginRefused> {
        let started = Instant::now();
        let outcome = self.decide(request).await;
        self.finish(request, outcome, started).await
    }

    /// As [`Self::login`], but a successful sign-in runs `then` with the identity while its
    /// audit row is being committed, instead of after: the caller's own write (the code and
    /// session of a sign-in) shares the wait. The answer is `then`'s only once the row is
    /// committed too; if it cannot be, the sign-in is refused as `login` refuses it, and
    /// whatever `then` produced must not be handed out. The identity `then` sees has no audit
    /// id yet (0): a row's id is known only at its commit.
    pub async fn login_then<T, Fut>(
        &self,
        request: &LoginRequest,
        then: impl FnOnce(Identity) -> Fut,
    ) -> Result<(Identity, T), LoginRefused>
    where
        Fut: Future<Output = T>,
    {
        let started = Instant::now();
        let outcome = self.decide(request).await;
        self.finish_then(request, outcome, started, then).await
    }

    /// As [`Self::refresh`], with `then` run while the audit row is committed, as in
    /// [`Self::login_then`] (the rotation of the refresh token shares the wait).
    pub async fn refresh_then<T, Fut>(
        &self,
        identity: &Identity,
        client_id: &str,
        source_ip: Option<IpAddr>,
        user_agent: Option<String>,
        then: impl FnOnce(Identity) -> Fut,
    ) -> Result<(Identity, T), LoginRefused>
    where
        Fut: Future<Output = T>,
    {
        let started = Instant::now();
        let request = LoginRequest::recheck_of(identity, client_id, source_ip, user_agent);
        let outcome = self.recheck(identity, client_id, Recheck::Refresh).await;
        self.finish_then(&request, outcome, started, then).await
    }

    /// Re-checks a signed-in user in their directory before tokens are refreshed: still there,
    /// still enabled, same immutable id, groups re-read and the application's trust decided
    /// again. Audited as `token_refreshed` or `refresh_denied`, like a sign-in.
    pub async fn refresh(
        &self,
        identity: &Identity,
        client_id: &str,
        source_ip: Option<IpAddr>,
        user_agent: Option<String>,
    ) -> Result<Identity, LoginRefused> {
        let nothing = |_| std::future::ready(());
        self.refresh_then(identity, client_id, source_ip, user_agent, nothing)
            .await
            .map(|(identity, ())| identity)
    }

    /// A sign-in to another application through a single sign-on session: no password, but
    /// the same directory re-check and trust decision as a refresh. Audited as
    /// `login_succeeded` or `login_failed`.
    pub async fn resume_session(
        &self,
        identity: &Identity,
        client_id: &str,
        source_ip: Option<IpAddr>,
        user_agent: Option<String>,
    ) -> Result<Identity, LoginRefused> {
        let started = Instant::now();
        let request = LoginRequest::recheck_of(identity, client_id, source_ip, user_agent);
        let outcome = self
            .recheck(identity, client_id, Recheck::SingleSignOn)
            .await;
        self.finish(&request, outcome, started).await
    }

    async fn recheck(&self, identity: &Identity, client_id: &str, kind: Recheck) -> Outcome {
        let (success, failure) = match kind {
            Recheck::Refresh => (
                AuditEventKind::TokenRefreshed,
                AuditEventKind::RefreshDenied,
            ),
            Recheck::SingleSignOn => (AuditEventKind::LoginSucceeded, AuditEventKind::LoginFailed),
        };
        let name = parse_login_name(&identity.username, None).ok();
        let denied = |reason, detail: String, directory: Option<String>| Outcome {
            event: failure,
            result: Err((reason, detail)),
            name: name.clone(),
            directory,
            retry_after: None,
            unreachable_directory: None,
        };
        let (Some(login), Some(realm)) = (name.as_ref(), self.realms.get(&identity.realm)) else {
            return denied(
                AuditReason::UnknownUser,
                "realm no longer configured".into(),
                None,
            );
        };
        let Some(application) = self.applications.get(client_id) else {
            return denied(
                AuditReason::InvalidRequest,
                "application no longer registered".into(),
                None,
            );
        };
        let DirectoryAnswer { result, server } = realm.directory.lookup(&login.user).await;
        self.metrics
            .directory_health(&realm.name, &realm.directory.health());
        let user = match result {
            Ok(user) => user,
            Err(failure) => return denied(failure.audit_reason(), failure.to_string(), server),
        };
        if format!("{}:{}", realm.name, user.id) != identity.subject {
            return denied(
                AuditReason::UnknownUser,
                "the name now belongs to another directory entry".into(),
                server,
            );
        }
        let access = match self.trusts.decide(
            &realm.name,
            &user.groups,
            &application.realm,
            &application.client_id,
        ) {
            Ok(access) => access,
            Err(e) => return denied(AuditReason::TrustDenied, e.to_string(), server),
        };
        Outcome {
            event: success,
            result: Ok(identity_of(&realm.name, user, access, server.clone())),
            name,
            directory: server,
            retry_after: None,
            unreachable_directory: None,
        }
    }

    async fn decide(&self, request: &LoginRequest) -> Outcome {
        let refuse = |reason, detail: String, name: Option<LoginName>| Outcome {
            event: AuditEventKind::LoginFailed,
            result: Err((reason, detail)),
            name,
            directory: None,
            retry_after: None,
            unreachable_directory: None,
        };
        let name = match parse_login_name(&request.username, self.default_realm.as_deref()) {
            Ok(name) => name,
            Err(e) => return refuse(AuditReason::InvalidRequest, e.to_string(), None),
        };
        let Some(realm) = self.realms.get(&name.realm) else {
            let detail = format!("no realm named {:?}", name.realm);
            return refuse(AuditReason::UnknownUser, detail, Some(name));
        };
        let application = match &request.client_id {
            None => None,
            Some(id) => match self.applications.get(id) {
                Some(app) => Some(app),
                None => {
                    let detail = format!("no application with client id {id:?}");
                    return refuse(AuditReason::InvalidRequest, detail, Some(name));
                }
            },
        };

        let now_ms = Utc::now().timestamp_millis();
        let account = account_key(&name.realm, &name.user);
        let source = request.source_ip.map(|ip| source_key(&ip.to_string()));
        // Held until this attempt's failure is counted or its success has cleared the counter.
        let _turn = self.turns.take(&account).await;
        let (gate, had_failures) = match self.gate(&account, source.as_deref(), now_ms).await {
            Ok(gate) => gate,
            // Without the counters we cannot know whether the account is locked: fail closed.
            Err(e) => {
                let detail = format!("lockout counters unavailable: {e}");
                return refuse(AuditReason::DirectoryUnavailable, detail, Some(name));
            }
        };
        match gate {
            Gate::Locked { until_ms } => {
                return Outcome {
                    event: AuditEventKind::LockedOut,
                    result: Err((
                        AuditReason::LockedOut,
                        format!("account locked until {until_ms} (unix ms)"),
                    )),
                    name: Some(name),
                    directory: None,
                    retry_after: None,
                    // While the directory is down, a locked account is told what every
                    // other account of the realm is told: the page reveals no lock.
                    unreachable_directory: directory_down(realm).then(|| realm_label_of(realm)),
                };
            }
            Gate::Throttled { retry_after } => {
                return Outcome {
                    event: AuditEventKind::LoginFailed,
                    result: Err((
                        AuditReason::Throttled,
                        format!(
                            "too many failures from this source; retry after {} ms",
                            retry_after.as_millis()
                        ),
                    )),
                    name: Some(name),
                    directory: None,
                    retry_after: Some(retry_after),
                    unreachable_directory: None,
                };
            }
            Gate::Open => {}
        }

        let DirectoryAnswer { result, server } = realm
            .directory
            .authenticate(&name.user, &request.password)
            .await;
        self.metrics
            .directory_health(&realm.name, &realm.directory.health());
        let user = match result {
            Ok(user) => user,
            Err(failure) => {
                if failure.counts_against_user() {
                    self.count_failure(&realm.name, &account, source.as_deref(), now_ms)
                        .await;
                }
                return Outcome {
                    event: AuditEventKind::LoginFailed,
                    result: Err((failure.audit_reason(), failure.to_string())),
                    name: Some(name),
                    directory: server,
                    retry_after: None,
                    unreachable_directory: matches!(failure, DirectoryFailure::Unavailable(_))
                        .then(|| realm_label_of(realm)),
                };
            }
        };

        let access = match application {
            None => Ok(Access::OwnRealm),
            Some(app) => self
                .trusts
                .decide(&realm.name, &user.groups, &app.realm, &app.client_id),
        };
        let access = match access {
            Ok(access) => access,
            Err(denied) => {
                return Outcome {
                    event: AuditEventKind::LoginFailed,
                    result: Err((AuditReason::TrustDenied, denied.to_string())),
                    name: Some(name),
                    directory: server,
                    retry_after: None,
                    unreachable_directory: None,
                };
            }
        };
        if had_failures && let Err(e) = self.lockout.clear(&account).await {
            tracing::warn!(error = %e, "could not reset the failure counter");
        }
        Outcome {
            event: AuditEventKind::LoginSucceeded,
            result: Ok(identity_of(&realm.name, user, access, server.clone())),
            name: Some(name),
            directory: server,
            retry_after: None,
            unreachable_directory: None,
        }
    }

    /// The lockout decision, and whether the account has a failure counter to reset on
    /// success (most sign-ins have none, and then need no write). Costs the success path no
    /// more than before: the same two reads (account, source) and no write.
    async fn gate(
        &self,
        account: &str,
        source: Option<&str>,
        now_ms: i64,
    ) -> Result<(Gate, bool), sqlx::Error> {
        let account = self.lockout.get(account).await?;
        let source = match source {
            Some(key) => self.lockout.get(key).await?,
            None => None,
        };
        let gate = self
            .lockout
            .policy()
            .gate(account.as_ref(), source.as_ref(), now_ms);
        Ok((gate, account.is_some()))
    }

    async fn count_failure(&self, realm: &str, account: &str, source: Option<&str>, now_ms: i64) {
        let max = self.lockout.policy().max_failures;
        match self
            .lockout
            .record_failure(account, now_ms, Some(max))
            .await
        {
            Ok(counter) if counter.failures == max => self.metrics.lockout(realm),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "could not count a failed sign-in"),
        }
        if let Some(source) = source
            && let Err(e) = self.lockout.record_failure(source, now_ms, None).await
        {
            tracing::error!(error = %e, "could not count a failed sign-in by source");
        }
    }

    /// Writes the audit row, then answers.
    async fn finish(
        &self,
        request: &LoginRequest,
        outcome: Outcome,
        started: Instant,
    ) -> Result<Identity, LoginRefused> {
        self.finish_then(request, outcome, started, |_| std::future::ready(()))
            .await
            .map(|(identity, ())| identity)
    }

    /// Writes the audit row and answers once it is committed; a success runs `then` while the
    /// row is being committed and answers once both are done.
    async fn finish_then<T, Fut>(
        &self,
        request: &LoginRequest,
        outcome: Outcome,
        started: Instant,
        then: impl FnOnce(Identity) -> Fut,
    ) -> Result<(Identity, T), LoginRefused>
    where
        Fut: Future<Output = T>,
    {
        let event = self.record(request, &outcome, started);
        let mut identity = match outcome.result {
            Ok(identity) => identity,
            Err((reason, detail)) => {
                let audit_id = self
                    .audit
                    .append(event)
                    .await
                    .map_err(|e| self.unaudited(e))?;
                return Err(LoginRefused {
                    reason,
                    detail,
                    audit_id: Some(audit_id),
                    retry_after: outcome.retry_after,
                    unreachable_directory: outcome.unreachable_directory,
                });
            }
        };
        let pending = self
            .audit
            .submit(event)
            .await
            .map_err(|e| self.unaudited(e))?;
        let (committed, value) = tokio::join!(pending.committed(), then(identity.clone()));
        // Without the row, `then`'s work is never handed out: the attempt fails closed.
        identity.audit_id = committed.map_err(|e| self.unaudited(e))?;
        Ok((identity, value))
    }

    /// The audit row of an attempt, and the attempt counted in the metrics.
    fn record(&self, request: &LoginRequest, outcome: &Outcome, started: Instant) -> AuditEvent {
        let elapsed = started.elapsed();
        let realm_label = outcome
            .name
            .as_ref()
            .filter(|n| self.realms.contains_key(&n.realm))
            .map_or("unknown", |n| n.realm.as_str());
        let mut event = AuditEvent::new(outcome.event);
        event.realm = outcome.name.as_ref().map(|n| n.realm.clone());
        event.username = Some(match &outcome.name {
            Some(name) => name.qualified(),
            None => request.username.chars().take(MAX_FIELD_CHARS).collect(),
        });
        event.client_id = request.client_id.clone();
        event.source_ip = request.source_ip.map(|ip| ip.to_string());
        event.user_agent = request.user_agent.clone();
        event.directory = outcome.directory.clone();
        event.latency_ms = i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX);
        match &outcome.result {
            Ok(identity) => event.subject = Some(identity.subject.clone()),
            Err((reason, _)) => event.reason = Some(*reason),
        }
        let outcome_label = match &outcome.result {
            Ok(_) => "succeeded",
            Err((reason, _)) => reason.as_str(),
        };
        self.metrics.attempt(realm_label, outcome_label, elapsed);
        event
    }

    /// The answer to an attempt whose audit row could not be written: refused, whatever was
    /// decided (fail closed).
    fn unaudited(&self, error: AuditError) -> LoginRefused {
        tracing::error!(error = %error, "sign-in refused: the audit row could not be written");
        self.metrics.audit_failure();
        LoginRefused {
            reason: AuditReason::DirectoryUnavailable,
            detail: error.to_string(),
            audit_id: None,
            retry_after: None,
            unreachable_directory: None,
        }
    }
}

/// Whether every server of the realm's directory was down when last tried (a realm without
/// servers, such as a static one, is never down).
fn directory_down(realm: &Realm) -> bool {
    let health = realm.directory.health();
    !health.is_empty() && health.iter().all(|server| !server.up)
}

/// How the person knows the realm: its display name, or its name.
fn realm_label_of(realm: &Realm) -> String {
    realm
        .display_name
        .clone()
        .unwrap_or_else(|| realm.name.clone())
}

fn identity_of(
    realm: &str,
    user: DirectoryUser,
    access: Access,
    directory: Option<String>,
) -> Identity {
    let (roles, trust) = match access {
        Access::OwnRealm => (Vec::new(), None),
        Access::Trusted {
            trusting,
            trusted,
            roles,
        } => (roles, Some(TrustUsed { trusting, trusted })),
    };
    let username = if user.username.is_empty() {
        user.id.clone()
    } else {
        user.username.to_lowercase()
    };
    Identity {
        subject: format!("{realm}:{}", user.id),
        realm: realm.to_owned(),
        username: format!("{username}@{realm}"),
        email: user.email,
        name: user.name,
        groups: user.groups.iter().map(|g| qualify(realm, g)).collect(),
        roles,
        trust,
        directory,
        audit_id: 0,
    }
}

/// Shared handle used by the HTTP layer and the CLI.
pub type SharedFederation = Arc<Federation>;
