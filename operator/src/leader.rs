//! Leader election on a `coordination.k8s.io/v1` Lease, so that of the operator's replicas
//! exactly one runs the controllers.
//!
//! [`Elector`] is the pure state machine: given the Lease as read, the time, and its own
//! memory of what it saw before, it decides ([`Decision`]) to acquire, renew, wait or step
//! down, and produces the Lease to write. [`LeaseLock`] carries a decision out: it creates the
//! Lease, or *replaces* it with the observed `resourceVersion` as precondition, so when two
//! replicas race the API server answers one of them 409 Conflict. [`lead`] runs the election
//! loop and the leader's work, and stops the work the moment leadership is in doubt.
//!
//! Timing, as client-go does it (with `lease` = 15 s by default):
//! - the leader renews every `lease / 3`;
//! - it considers itself leader only until `renew_deadline = 2 × lease / 3` after the start of
//!   its last successful round, measured on its own monotonic clock, and stops its work then;
//! - a candidate takes over a Lease held by someone else only after it has seen the Lease
//!   *unchanged* for the Lease's full duration on its own monotonic clock. The holder's
//!   timestamps are never compared with the local wall clock, so clock skew between nodes
//!   cannot make two leaders. The gap between `renew_deadline` and `lease` is the margin in
//!   which a deposed leader's work stops.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

/// Default Lease duration (client-go's default).
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);

/// Who competes for which lease, and how long a lease lasts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    /// This replica's identity, written as `holderIdentity` (see [`default_identity`]).
    pub identity: String,
    /// How long a Lease is valid without renewal (`leaseDurationSeconds`); whole seconds,
    /// at least 3.
    pub lease_duration: Duration,
}

impl LeaseConfig {
    pub fn new(identity: impl Into<String>, lease_duration: Duration) -> Self {
        Self {
            identity: identity.into(),
            lease_duration: lease_duration.max(Duration::from_secs(3)),
        }
    }

    /// How often the leader renews, and a candidate looks again.
    pub fn retry_period(&self) -> Duration {
        self.lease_duration / 3
    }

    /// How long after the start of its last successful renewal a leader keeps acting.
    pub fn renew_deadline(&self) -> Duration {
        self.lease_duration * 2 / 3
    }

    fn lease_duration_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }
}

/// What to do after reading the Lease.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// The Lease is absent, released or expired: write this object to take it (create when
    /// none was read, otherwise replace; it carries the observed `resourceVersion`).
    Acquire(Lease),
    /// The Lease is ours: write this object to renew it.
    Renew(Lease),
    /// Someone else holds a valid Lease; it expires in `expires_in` unless renewed.
    Wait {
        holder: String,
        expires_in: Duration,
    },
    /// We believed we led, but the Lease says otherwise: stop acting now.
    StepDown { holder: Option<String> },
}

/// A record of someone else's Lease and when (locally) it last changed.
#[derive(Clone, Debug)]
struct Observation {
    resource_version: Option<String>,
    spec: LeaseSpec,
    since: Instant,
}

/// The pure leader-election state machine of one replica.
#[derive(Clone, Debug)]
pub struct Elector {
    config: LeaseConfig,
    observed: Option<Observation>,
    /// While leading: the local instant at which leadership lapses unless renewed.
    leading_until: Option<Instant>,
}

impl Elector {
    pub fn new(config: LeaseConfig) -> Self {
        Self {
            config,
            observed: None,
            leading_until: None,
        }
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// Whether this replica may act at `now`.
    pub fn is_leading(&self, now: Instant) -> bool {
        self.leading_until.is_some_and(|until| now < until)
    }

    /// When leadership lapses unless renewed (`None` when not leading).
    pub fn leading_until(&self) -> Option<Instant> {
        self.leading_until
    }

    /// Forgets leadership that has lapsed at `now`; true when it just did.
    pub fn expire(&mut self, now: Instant) -> bool {
        match self.leading_until {
            Some(until) if now >= until => {
                self.leading_until = None;
                true
            }
            _ => false,
        }
    }

    /// Decides what to do about `lease` (as read at `now`; `wall` is only written, never
    /// compared with the holder's timestamps).
    pub fn decide(&mut self, lease: Option<&Lease>, now: Instant, wall: Timestamp) -> Decision {
        let Some(lease) = lease else {
            self.observed = None;
            if self.leading_until.take().is_some() {
                // Someone deleted the Lease under us: stop first, compete next round.
                return Decision::StepDown { holder: None };
            }
            return Decision::Acquire(self.new_lease(wall));
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        if holder.as_deref() == Some(self.config.identity.as_str()) {
            self.observed = None;
            return Decision::Renew(self.renewed(lease, spec, wall));
        }
        if self.leading_until.take().is_some() {
            self.observed = None;
            return Decision::StepDown { holder };
        }
        let Some(holder) = holder else {
            // Released (or never held): nobody is acting.
            self.observed = None;
            return Decision::Acquire(self.taken_over(lease, spec, wall));
        };
        let resource_version = lease.metadata.resource_version.clone();
        let since = match &self.observed {
            Some(seen) if seen.resource_version == resource_version && seen.spec == spec => {
                seen.since
            }
            _ => {
                self.observed = Some(Observation {
                    resource_version,
                    spec: spec.clone(),
                    since: now,
                });
                now
            }
        };
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .filter(|s| *s > 0)
            .map_or(self.config.lease_duration, Duration::from_secs);
        let unchanged_for = now.saturating_duration_since(since);
        if unchanged_for >= duration {
            self.observed = None;
            Decision::Acquire(self.taken_over(lease, spec, wall))
        } else {
            Decision::Wait {
                holder,
                expires_in: duration - unchanged_for,
            }
        }
    }

    /// The write of an [`Decision::Acquire`] or [`Decision::Renew`] succeeded; `started` is
    /// when the round began (before the Lease was read), so leadership never outlasts what
    /// any other replica can have observed.
    pub fn written(&mut self, started: Instant) {
        self.observed = None;
        self.leading_until = Some(started + self.config.renew_deadline());
    }

    /// Stops leading (a write was refused or the work must stop).
    pub fn step_down(&mut self) {
        self.leading_until = None;
    }

    /// The Lease to write on shutdown so others acquire at once: no holder, a one-second
    /// duration, renewed now. `None` when `lease` is not ours.
    pub fn release(&mut self, lease: &Lease, wall: Timestamp) -> Option<Lease> {
        self.leading_until = None;
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return None;
        }
        let mut released = lease.clone();
        released.spec = Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            acquire_time: None,
            renew_time: Some(MicroTime(wall)),
            ..spec
        });
        Some(released)
    }

    fn new_lease(&self, wall: Timestamp) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: Some(self.config.identity.clone()),
                lease_duration_seconds: Some(self.config.lease_duration_seconds()),
                acquire_time: Some(MicroTime(wall)),
                renew_time: Some(MicroTime(wall)),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        }
    }

    fn taken_over(&self, lease: &Lease, spec: LeaseSpec, wall: Timestamp) -> Lease {
        let mut taken = lease.clone();
        taken.spec = Some(LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(self.config.lease_duration_seconds()),
            acquire_time: Some(MicroTime(wall)),
            renew_time: Some(MicroTime(wall)),
            lease_transitions: Some(spec.lease_transitions.unwrap_or(0).saturating_add(1)),
            ..spec
        });
        taken
    }

    fn renewed(&self, lease: &Lease, spec: LeaseSpec, wall: Timestamp) -> Lease {
        let mut renewed = lease.clone();
        renewed.spec = Some(LeaseSpec {
            lease_duration_seconds: Some(self.config.lease_duration_seconds()),
            acquire_time: spec.acquire_time.clone().or(Some(MicroTime(wall))),
            renew_time: Some(MicroTime(wall)),
            ..spec
        });
        renewed
    }
}

/// This replica's identity: the pod name when known (stable across container restarts, so a
/// restarted container renews its own Lease at once), else the host name with a random suffix.
pub fn identity(pod_name: Option<&str>, hostname: Option<&str>, suffix: u64) -> String {
    match pod_name.map(str::trim).filter(|p| !p.is_empty()) {
        Some(pod) => pod.to_string(),
        None => {
            let host = hostname
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .unwrap_or("novads-operator");
            format!("{host}-{:08x}", suffix & 0xffff_ffff)
        }
    }
}

/// [`identity`] from `POD_NAME`, the host name and a random suffix.
pub fn default_identity() -> String {
    use std::hash::{BuildHasher, Hasher};
    let pod_name = std::env::var("POD_NAME").ok();
    let hostname = std::env::var("HOSTNAME").ok().or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .ok()
    });
    // RandomState is seeded from the OS's randomness per process: enough for a suffix that
    // only has to differ between replicas.
    let suffix = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    identity(pod_name.as_deref(), hostname.as_deref(), suffix)
}

/// What leader election can fail with.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("Lease request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("Lease request timed out")]
    Timeout,
    #[error("the leader-election loop ended unexpectedly")]
    ElectionEnded,
}

/// The outcome of one election round.
#[derive(Clone, Debug, PartialEq)]
pub enum Round {
    /// We hold the Lease; this is it as the API server stored it.
    Leading(Box<Lease>),
    /// Someone else holds it (or took it first: the write was answered 409 Conflict).
    Standby { holder: Option<String> },
    /// We were leading and must stop.
    SteppedDown { holder: Option<String> },
}

/// The Lease object the election is about, and the I/O on it.
#[derive(Clone)]
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
}

impl LeaseLock {
    pub fn new(client: Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
        }
    }

    /// Reads the Lease, decides, and writes: create when absent, otherwise replace with the
    /// observed `resourceVersion`, so a concurrent writer makes this one fail with 409.
    pub async fn round(&self, elector: &mut Elector) -> Result<Round, LeaderError> {
        let started = Instant::now();
        let observed = self.api.get_opt(&self.name).await?;
        let decision = elector.decide(observed.as_ref(), Instant::now(), Timestamp::now());
        let mut lease = match decision {
            Decision::Acquire(lease) | Decision::Renew(lease) => lease,
            Decision::Wait { holder, .. } => {
                return Ok(Round::Standby {
                    holder: Some(holder),
                });
            }
            Decision::StepDown { holder } => return Ok(Round::SteppedDown { holder }),
        };
        let params = PostParams::default();
        let written = if observed.is_some() {
            self.api.replace(&self.name, &params, &lease).await
        } else {
            lease.metadata.name = Some(self.name.clone());
            self.api.create(&params, &lease).await
        };
        match written {
            Ok(lease) => {
                elector.written(started);
                Ok(Round::Leading(Box::new(lease)))
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                // Another replica wrote first (or created it first): it leads.
                let was_leading = elector.is_leading(Instant::now());
                elector.step_down();
                let holder = None;
                Ok(if was_leading {
                    Round::SteppedDown { holder }
                } else {
                    Round::Standby { holder }
                })
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Gives up `lease` (as last written by us), guarded by its `resourceVersion`.
    pub async fn release(&self, elector: &mut Elector, lease: &Lease) -> Result<(), LeaderError> {
        match elector.release(lease, Timestamp::now()) {
            Some(released) => {
                self.api
                    .replace(&lease.name_any(), &PostParams::default(), &released)
                    .await?;
                Ok(())
            }
            None => Ok(()),
        }
    }
}

/// Leadership as published by the election loop: `term` grows with every acquisition, so a
/// lost-and-regained leadership is never mistaken for an uninterrupted one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaderState {
    pub leading: bool,
    pub term: u64,
}

/// A future that resolves when the work should stop gracefully (shutdown).
pub type StopSignal = Pin<Box<dyn Future<Output = ()> + Send + Sync + 'static>>;

fn stop_signal(mut stop: watch::Receiver<bool>) -> StopSignal {
    Box::pin(async move {
        // An error means the sender is gone, which also means stop.
        let _ = stop.wait_for(|stopped| *stopped).await;
    })
}

/// How long the work may take to finish gracefully after shutdown, while still leading.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Campaigns for `lock` and runs `act` while (and only while) this replica leads, until
/// `stop` becomes true; then stops the work (gracefully, through the [`StopSignal`] it was
/// given, for at most [`SHUTDOWN_GRACE`]) and releases the Lease. When leadership is lost,
/// the work's future is dropped at once (kube's controller aborts its running reconciles
/// on drop) and the replica campaigns again. `on_change` hears every change of leadership.
pub async fn lead<F, Fut>(
    lock: LeaseLock,
    elector: Elector,
    mut stop: watch::Receiver<bool>,
    on_change: impl Fn(bool) + Send + Sync + 'static,
    mut act: F,
) -> Result<(), LeaderError>
where
    F: FnMut(StopSignal) -> Fut,
    Fut: Future<Output = ()>,
{
    let (state_tx, mut state) = watch::channel(LeaderState::default());
    let (release_tx, release_rx) = oneshot::channel();
    let election = tokio::spawn(election_loop(
        lock,
        elector,
        state_tx,
        release_rx,
        Arc::new(on_change),
    ));
    let result = loop {
        let term = tokio::select! {
            biased;
            // (Each watch::Ref is dropped inside its branch, so this future stays Send.)
            _ = async { stop.wait_for(|stopped| *stopped).await.is_ok() } => break Ok(()),
            term = async { state.wait_for(|s| s.leading).await.map(|s| s.term) } => match term {
                Ok(term) => term,
                Err(_) => break Err(LeaderError::ElectionEnded),
            },
        };
        tracing::info!(term, "became leader: starting the controllers");
        let work = act(stop_signal(stop.clone()));
        let stopped_for_too_long = async {
            let _ = stop.clone().wait_for(|stopped| *stopped).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        tokio::select! {
            () = work => {
                if *stop.borrow() {
                    break Ok(());
                }
                tracing::warn!("the controllers ended on their own; restarting them");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            () = stopped_for_too_long => {
                tracing::warn!("the controllers did not stop within {SHUTDOWN_GRACE:?}; abandoning them");
                break Ok(());
            }
            _ = async { state.wait_for(|s| !s.leading || s.term != term).await.is_ok() } => {
                tracing::warn!(term, "lost leadership: stopped the controllers");
            }
        }
    };
    // The work is stopped (its future dropped) before the Lease is given up.
    let _ = release_tx.send(());
    match election.await {
        Ok(()) => result,
        Err(join) => {
            tracing::error!(%join, "the leader-election loop failed");
            result.and(Err(LeaderError::ElectionEnded))
        }
    }
}

async fn election_loop(
    lock: LeaseLock,
    mut elector: Elector,
    state: watch::Sender<LeaderState>,
    mut release: oneshot::Receiver<()>,
    on_change: Arc<dyn Fn(bool) + Send + Sync>,
) {
    let retry = elector.config().retry_period();
    let mut term = 0u64;
    let mut ours: Option<Lease> = None;
    let publish = |leading: bool, term: u64| {
        let next = LeaderState { leading, term };
        if *state.borrow() != next {
            // Observers first (they reset readiness for a new term), then the work is started
            // or stopped.
            on_change(leading);
            state.send_replace(next);
        }
    };
    loop {
        let started = Instant::now();
        // A round never outlasts our leadership: at the deadline we stop, whatever the API does.
        let limit = elector
            .leading_until()
            .map_or(started + retry, |until| until.min(started + retry));
        let was_leading = elector.is_leading(started);
        match tokio::time::timeout_at(limit, lock.round(&mut elector)).await {
            Ok(Ok(Round::Leading(lease))) => {
                ours = Some(*lease);
                if !was_leading {
                    term += 1;
                    tracing::info!(identity = %elector.config().identity, "acquired the lease");
                }
            }
            Ok(Ok(Round::Standby { holder })) => {
                tracing::debug!(?holder, "standing by");
            }
            Ok(Ok(Round::SteppedDown { holder })) => {
                tracing::warn!(?holder, "the lease was taken over: stepping down");
            }
            Ok(Err(error)) => tracing::warn!(%error, "leader election round failed"),
            Err(_) => tracing::warn!(error = %LeaderError::Timeout, "leader election round failed"),
        }
        let now = Instant::now();
        if elector.expire(now) {
            tracing::warn!("could not renew the lease in time: stepping down");
        }
        let leading = elector.is_leading(now);
        if !leading {
            ours = None;
        }
        publish(leading, term);
        let next = elector
            .leading_until()
            .map_or(now + retry, |until| until.min(now + retry));
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            _ = &mut release => break,
        }
    }
    let was_leading = elector.is_leading(Instant::now());
    publish(false, term);
    if let (true, Some(lease)) = (was_leading, ours) {
        match tokio::time::timeout(retry, lock.release(&mut elector, &lease)).await {
            Ok(Ok(())) => tracing::info!("released the lease"),
            Ok(Err(error)) => tracing::warn!(%error, "could not release the lease"),
            Err(_) => tracing::warn!("releasing the lease timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(identity: &str) -> LeaseConfig {
        LeaseConfig::new(identity, Duration::from_secs(15))
    }

    fn wall() -> Timestamp {
        "2025-06-01T12:00:00Z".parse().expect("timestamp")
    }

    fn lease(holder: Option<&str>, renew: &str, rv: &str) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some("novads-operator".into()),
                namespace: Some("novads".into()),
                resource_version: Some(rv.into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(String::from),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(renew.parse().expect("timestamp"))),
                acquire_time: Some(MicroTime(renew.parse().expect("timestamp"))),
                lease_transitions: Some(3),
                ..LeaseSpec::default()
            }),
        }
    }

    fn spec(decision: &Decision) -> &LeaseSpec {
        match decision {
            Decision::Acquire(l) | Decision::Renew(l) => l.spec.as_ref().expect("spec"),
            other => panic!("expected a write, got {other:?}"),
        }
    }

    #[test]
    fn timing_follows_client_go() {
        let c = config("a");
        assert_eq!(c.retry_period(), Duration::from_secs(5));
        assert_eq!(c.renew_deadline(), Duration::from_secs(10));
        assert_eq!(
            LeaseConfig::new("a", Duration::from_secs(1)).lease_duration,
            Duration::from_secs(3)
        );
    }

    #[test]
    fn an_absent_lease_is_created() {
        let mut elector = Elector::new(config("a"));
        let decision = elector.decide(None, Instant::now(), wall());
        assert!(matches!(decision, Decision::Acquire(_)));
        let spec = spec(&decision);
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.lease_transitions, Some(0));
        assert_eq!(spec.renew_time, Some(MicroTime(wall())));
    }

    #[test]
    fn a_held_lease_is_respected_until_unchanged_for_its_duration() {
        let mut elector = Elector::new(config("b"));
        let t0 = Instant::now();
        let held = lease(Some("a"), "2025-06-01T12:00:00Z", "10");
        assert_eq!(
            elector.decide(Some(&held), t0, wall()),
            Decision::Wait {
                holder: "a".into(),
                expires_in: Duration::from_secs(15)
            }
        );
        let later = t0 + Duration::from_secs(14);
        assert!(matches!(
            elector.decide(Some(&held), later, wall()),
            Decision::Wait { expires_in, .. } if expires_in == Duration::from_secs(1)
        ));
        // Renewed by its holder: the clock starts again.
        let renewed = lease(Some("a"), "2025-06-01T12:00:05Z", "11");
        assert!(matches!(
            elector.decide(Some(&renewed), later, wall()),
            Decision::Wait { expires_in, .. } if expires_in == Duration::from_secs(15)
        ));
        assert!(!elector.is_leading(later));
    }

    #[test]
    fn an_expired_lease_is_acquired_with_a_transition() {
        let mut elector = Elector::new(config("b"));
        let t0 = Instant::now();
        let held = lease(Some("a"), "2025-06-01T12:00:00Z", "10");
        elector.decide(Some(&held), t0, wall());
        let decision = elector.decide(Some(&held), t0 + Duration::from_secs(15), wall());
        let Decision::Acquire(taken) = &decision else {
            panic!("expected acquire, got {decision:?}");
        };
        assert_eq!(
            taken.metadata.resource_version.as_deref(),
            Some("10"),
            "precondition"
        );
        let spec = spec(&decision);
        assert_eq!(spec.holder_identity.as_deref(), Some("b"));
        assert_eq!(spec.lease_transitions, Some(4));
        assert_eq!(spec.acquire_time, Some(MicroTime(wall())));
    }

    #[test]
    fn clock_skew_never_shortens_or_extends_the_wait() {
        // The holder's clock is an hour behind ours: its renewTime looks long expired, yet a
        // newcomer waits a full lease duration of its own clock before taking over.
        let t0 = Instant::now();
        let mut newcomer = Elector::new(config("b"));
        let behind = lease(Some("a"), "2025-06-01T11:00:00Z", "10");
        assert!(matches!(
            newcomer.decide(Some(&behind), t0, wall()),
            Decision::Wait { .. }
        ));
        // The holder's clock is an hour ahead: its renewTime looks valid for an hour, yet once
        // it stops renewing it expires after the lease duration.
        let mut other = Elector::new(config("c"));
        let ahead = lease(Some("a"), "2025-06-01T13:00:00Z", "10");
        assert!(matches!(
            other.decide(Some(&ahead), t0, wall()),
            Decision::Wait { .. }
        ));
        assert!(matches!(
            other.decide(Some(&ahead), t0 + Duration::from_secs(15), wall()),
            Decision::Acquire(_)
        ));
    }

    #[test]
    fn a_released_lease_is_acquired_at_once() {
        let mut elector = Elector::new(config("b"));
        let released = lease(None, "2025-06-01T12:00:00Z", "12");
        assert!(matches!(
            elector.decide(Some(&released), Instant::now(), wall()),
            Decision::Acquire(_)
        ));
        let mut empty = lease(Some(""), "2025-06-01T12:00:00Z", "12");
        empty.spec.as_mut().expect("spec").lease_duration_seconds = Some(1);
        assert!(matches!(
            elector.decide(Some(&empty), Instant::now(), wall()),
            Decision::Acquire(_)
        ));
    }

    #[test]
    fn our_own_lease_is_renewed_and_leadership_lapses_without_renewal() {
        let mut elector = Elector::new(config("a"));
        let t0 = Instant::now();
        let ours = lease(Some("a"), "2025-06-01T11:59:55Z", "20");
        let decision = elector.decide(Some(&ours), t0, wall());
        let Decision::Renew(renewed) = &decision else {
            panic!("expected renew, got {decision:?}");
        };
        assert_eq!(renewed.metadata.resource_version.as_deref(), Some("20"));
        let spec = spec(&decision);
        assert_eq!(spec.renew_time, Some(MicroTime(wall())));
        assert_eq!(
            spec.acquire_time,
            ours.spec.as_ref().and_then(|s| s.acquire_time.clone()),
            "acquireTime is kept"
        );
        assert_eq!(spec.lease_transitions, Some(3), "no transition on renewal");

        elector.written(t0);
        assert!(elector.is_leading(t0 + Duration::from_secs(9)));
        assert!(!elector.is_leading(t0 + Duration::from_secs(10)));
        assert!(!elector.expire(t0 + Duration::from_secs(9)));
        assert!(elector.expire(t0 + Duration::from_secs(10)));
        assert_eq!(elector.leading_until(), None);
    }

    #[test]
    fn a_leader_whose_lease_was_taken_steps_down() {
        let mut elector = Elector::new(config("a"));
        let t0 = Instant::now();
        elector.written(t0);
        let taken = lease(Some("b"), "2025-06-01T12:00:00Z", "30");
        assert_eq!(
            elector.decide(Some(&taken), t0 + Duration::from_secs(5), wall()),
            Decision::StepDown {
                holder: Some("b".into())
            }
        );
        assert!(!elector.is_leading(t0 + Duration::from_secs(5)));
        // Deleted under us: step down too, then compete again.
        elector.written(t0);
        assert_eq!(
            elector.decide(None, t0, wall()),
            Decision::StepDown { holder: None }
        );
        assert!(matches!(
            elector.decide(None, t0, wall()),
            Decision::Acquire(_)
        ));
    }

    #[test]
    fn release_clears_the_holder_only_of_our_lease() {
        let mut elector = Elector::new(config("a"));
        elector.written(Instant::now());
        let ours = lease(Some("a"), "2025-06-01T11:59:55Z", "20");
        let released = elector.release(&ours, wall()).expect("ours");
        let spec = released.spec.as_ref().expect("spec");
        assert_eq!(spec.holder_identity, None);
        assert_eq!(spec.lease_duration_seconds, Some(1));
        assert_eq!(spec.renew_time, Some(MicroTime(wall())));
        assert_eq!(spec.lease_transitions, Some(3));
        assert_eq!(released.metadata.resource_version.as_deref(), Some("20"));
        assert!(!elector.is_leading(Instant::now()));
        let theirs = lease(Some("b"), "2025-06-01T11:59:55Z", "21");
        assert_eq!(elector.release(&theirs, wall()), None);
    }

    #[test]
    fn identity_prefers_the_pod_name() {
        assert_eq!(
            identity(Some("novads-operator-7d9f-x2"), Some("node"), 1),
            "novads-operator-7d9f-x2"
        );
        assert_eq!(identity(None, Some("laptop\n"), 0xab), "laptop-000000ab");
        assert_eq!(
            identity(Some(" "), None, 0x1_0000_0001),
            "novads-operator-00000001"
        );
    }
}
