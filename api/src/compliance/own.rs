//! The federation checks over a running server's own configuration and database, on a
//! schedule, into its metrics: what `novads dev` shows on `/metrics` without a cluster. Each
//! realm stands for the municipality of the same name (in a cluster, the Municipalities say
//! which realm each signs in through); cluster checks are skipped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use novads_monitor::facts::{MunicipalityInfo, Profile};
use novads_monitor::metrics::MonitorMetrics;
use novads_monitor::{Evaluation, FactsDocument, PolicySet, Source, SourceState};

use super::{collect, failed};
use crate::config::Config;
use crate::db::Database;
use crate::state::AppState;

/// Why cluster checks are skipped here.
pub const NO_CLUSTER: &str = "cluster facts not collected (no cluster: novads dev)";

/// The facts of `config` and `db` at `now`, each realm counting towards a municipality of its
/// name (namespace `muni-REALM`).
pub async fn own_facts(config: &Config, db: &Database, now: DateTime<Utc>) -> FactsDocument {
    // Without a cluster no Municipality names admin groups to count.
    let mut facts = collect(config, db, now, &[])
        .await
        .unwrap_or_else(|error| failed(config, error.to_string()));
    for realm in &config.realms {
        facts.municipalities.push(MunicipalityInfo {
            name: realm.name.clone(),
            namespace: format!("muni-{}", realm.name),
            profile: Profile::Standard,
        });
    }
    for subject in &mut facts.subjects {
        if subject.kind == novads_monitor::SubjectKind::Realm {
            subject.municipalities = vec![subject.name.clone()];
        }
    }
    facts.sources.insert(
        Source::Cluster,
        SourceState::NotCollected(NO_CLUSTER.into()),
    );
    facts
}

/// Evaluates `policies` over [`own_facts`] once and records the metrics.
pub async fn evaluate_once(
    config: &Config,
    db: &Database,
    policies: &PolicySet,
    metrics: &MonitorMetrics,
) -> Evaluation {
    let started = Instant::now();
    let now = Utc::now();
    let facts = own_facts(config, db, now).await;
    let evaluation = novads_monitor::evaluate(policies, &facts, &[], now);
    metrics.record(&evaluation);
    metrics.observe_duration(started.elapsed());
    metrics.mark_success(now);
    evaluation
}

/// Evaluates at once and then every `interval`, forever; each evaluation becomes `state`'s
/// latest, which the admin API's security endpoints show without a cluster.
pub async fn evaluate_periodically(
    state: AppState,
    policies: Arc<PolicySet>,
    metrics: MonitorMetrics,
    interval: Duration,
) {
    let (config, db) = (state.config(), state.db());
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let evaluation = evaluate_once(config, db, &policies, &metrics).await;
        tracing::debug!(
            results = evaluation.results.len(),
            "security monitor evaluated the federation"
        );
        state.set_latest_evaluation(evaluation);
    }
}
